package batching

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Errors returned by the Batcher. Each is a sentinel; compare with errors.Is.
var (
	// ErrFull: the pending commands or bytes limit is reached; the command was not taken.
	// Retry after Next has handed batches out (backpressure).
	ErrFull = errors.New("batching: pending limit reached")
	// ErrTooLarge: one command does not fit an empty batch of Config.BatchBytesMax; it never
	// will, so the caller must refuse it rather than retry.
	ErrTooLarge = errors.New("batching: command larger than a batch")
	// ErrInvalid: the command's seq floor is above its seq (see codec.Request.SeqFloor); it
	// was not taken and never will be.
	ErrInvalid = errors.New("batching: seq floor above seq")
	// ErrInvalidConfig wraps every configuration error; the message names the field.
	ErrInvalidConfig = errors.New("batching: invalid config")
)

// Encoding overheads assumed when checking sizes before appending, so a batch never exceeds
// BatchBytesMax. They are upper bounds of codec's batch format (a fixed 8-byte client id and
// three uvarints, seq, seq - seq floor and payload length, of at most 10 bytes each; the batch
// header), so the check is conservative by a few bytes per command.
const (
	CommandOverheadBytes = 8 + 10 + 10 + 10
	BatchOverheadBytes   = codec.BatchHeaderSize
)

// Config bounds one Batcher. DefaultConfig gives sane values; Validate names the bad field.
type Config struct {
	// BatchBytesMax closes a batch before it would exceed this many encoded bytes. Larger
	// batches amortise per-slot costs (one WAL record, one Accept) but cost latency and
	// in-flight memory; it must stay below core.Config.ValueBytesMax.
	BatchBytesMax int
	// CommandBytesMax is the largest payload one command may carry. A command too large for
	// a batch of BatchBytesMax gets a batch of its own, so the two limits are independent:
	// batches stay small for latency while the documented payload limit is reachable. The
	// encoded value is then up to CommandBytesMax + CommandOverheadBytes +
	// BatchOverheadBytes, which must stay below core.Config.ValueBytesMax.
	CommandBytesMax int
	// BatchCommandsMax closes a batch at this many commands (at most
	// codec.Limits.BatchCommandsMax, or receivers reject the value).
	BatchCommandsMax int
	// Linger closes the open batch once it has been open this long while no slot is free,
	// bounding a batch's age during a stall. 0 (the default) never closes by age: batches
	// then grow until a slot frees, which measured faster (docs/BENCHMARKS.md), since a
	// linger shorter than the round trip leaves each slot a linger's worth of commands.
	Linger time.Duration
	// PendingCommandsMax and PendingBytesMax bound what the Batcher holds (open and closed
	// batches not yet handed out by Next). At the bound Add reports ErrFull.
	PendingCommandsMax int
	PendingBytesMax    int
	// BatchesPooledMax bounds the free list of batch buffers kept for reuse.
	BatchesPooledMax int
}

// Defaults of Config.
const (
	DefaultBatchBytesMax      = 512 << 10
	DefaultCommandBytesMax    = codec.DefaultPayloadBytesMax
	DefaultBatchCommandsMax   = 8192
	DefaultLinger             = 0
	DefaultPendingCommandsMax = 1 << 18
	DefaultPendingBytesMax    = 64 << 20
	DefaultBatchesPooledMax   = 64
)

// DefaultConfig returns the default limits.
func DefaultConfig() Config {
	return Config{
		BatchBytesMax:      DefaultBatchBytesMax,
		CommandBytesMax:    DefaultCommandBytesMax,
		BatchCommandsMax:   DefaultBatchCommandsMax,
		Linger:             DefaultLinger,
		PendingCommandsMax: DefaultPendingCommandsMax,
		PendingBytesMax:    DefaultPendingBytesMax,
		BatchesPooledMax:   DefaultBatchesPooledMax,
	}
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("batching: Config.%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidConfig)
}

// Validate reports the first field out of range, wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	if c.BatchBytesMax < BatchOverheadBytes+CommandOverheadBytes+1 {
		return invalid("BatchBytesMax", "%d: must hold at least one command (>= %d)",
			c.BatchBytesMax, BatchOverheadBytes+CommandOverheadBytes+1)
	}
	if c.CommandBytesMax < 1 {
		return invalid("CommandBytesMax", "%d: must be positive", c.CommandBytesMax)
	}
	if c.BatchCommandsMax <= 0 || c.BatchCommandsMax > codec.DefaultBatchCommandsMax {
		return invalid("BatchCommandsMax", "%d: must be in [1, %d]", c.BatchCommandsMax, codec.DefaultBatchCommandsMax)
	}
	if c.Linger < 0 {
		return invalid("Linger", "%v: must not be negative", c.Linger)
	}
	if c.PendingCommandsMax < c.BatchCommandsMax {
		return invalid("PendingCommandsMax", "%d: must be at least BatchCommandsMax %d", c.PendingCommandsMax, c.BatchCommandsMax)
	}
	if c.PendingBytesMax < c.BatchBytesMax {
		return invalid("PendingBytesMax", "%d: must be at least BatchBytesMax %d", c.PendingBytesMax, c.BatchBytesMax)
	}
	if c.PendingBytesMax < c.CommandBytesMax+CommandOverheadBytes {
		return invalid("PendingBytesMax", "%d: must hold one command of CommandBytesMax %d", c.PendingBytesMax, c.CommandBytesMax)
	}
	if c.BatchesPooledMax < 0 {
		return invalid("BatchesPooledMax", "%d: must not be negative", c.BatchesPooledMax)
	}
	return nil
}

// Batch is one slot value under construction or ready to propose.
type Batch struct {
	builder codec.BatchBuilder
	buf     []byte
	opened  time.Time // when the first command arrived: the start of its batch wait
	counted int       // pending bytes this batch accounts for (payload + CommandOverheadBytes each)
}

// Bytes is the encoded batch (a slot value). It aliases the Batch's buffer: valid until
// Release.
func (b *Batch) Bytes() []byte { return b.builder.Bytes() }

// Count is the number of commands in the batch.
func (b *Batch) Count() int { return b.builder.Count() }

// Len is the encoded size in bytes.
func (b *Batch) Len() int { return b.builder.Len() }

// Opened is when the batch's first command was added.
func (b *Batch) Opened() time.Time { return b.opened }

// Stats counts what a Batcher did, for metrics.
type Stats struct {
	Commands        uint64 // commands taken by Add
	Batches         uint64 // batches handed out by Next
	ClosedBySize    uint64 // batches closed at BatchBytesMax or BatchCommandsMax
	ClosedByLinger  uint64 // batches closed by CloseExpired
	Full            uint64 // Add calls refused with ErrFull
	PendingCommands int
	PendingBytes    int
}

// Batcher accumulates commands into batches; see the package doc.
type Batcher struct {
	cfg Config
	now func() time.Time

	mu     sync.Mutex
	open   *Batch   // nil when nothing is open
	closed []*Batch // FIFO; closed[0] is the oldest
	free   []*Batch // at most cfg.BatchesPooledMax

	pendingCommands int
	pendingBytes    int
	stats           Stats
}

// New returns a Batcher with cfg (validated).
func New(cfg Config) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Batcher{
		cfg:    cfg,
		now:    time.Now,
		closed: make([]*Batch, 0, 64),
		free:   make([]*Batch, 0, cfg.BatchesPooledMax),
	}, nil
}

// Config returns the Batcher's configuration.
func (b *Batcher) Config() Config { return b.cfg }

// Add appends one command; seqFloor is its codec.Request.SeqFloor. It returns ErrFull when
// the pending limits are reached, ErrTooLarge when the payload can never fit a batch and
// ErrInvalid when seqFloor > seq; in every case nothing was taken.
func (b *Batcher) Add(clientID, seq, seqFloor uint64, payload []byte) error {
	b.mu.Lock()
	err := b.addLocked(clientID, seq, seqFloor, payload)
	b.mu.Unlock()
	return err
}

// AddRequests appends reqs in order under one lock and returns how many it took. It stops at
// the first request it cannot take and returns that request's error (ErrFull, ErrTooLarge or
// ErrInvalid); taken < len(reqs) only then.
func (b *Batcher) AddRequests(reqs []codec.Request) (taken int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range reqs {
		r := &reqs[i]
		if err := b.addLocked(r.ClientID, r.Seq, r.SeqFloor, r.Payload); err != nil {
			return i, err
		}
	}
	return len(reqs), nil
}

// Fits reports whether a payload of n bytes can ever be batched: n <= CommandBytesMax (a
// payload too large for a shared batch gets a batch of its own).
func (b *Batcher) Fits(n int) bool {
	return n <= b.cfg.CommandBytesMax
}

func (b *Batcher) addLocked(clientID, seq, seqFloor uint64, payload []byte) error {
	size := len(payload) + CommandOverheadBytes
	if !b.Fits(len(payload)) {
		return ErrTooLarge
	}
	if seqFloor > seq {
		return ErrInvalid
	}
	if b.pendingCommands+1 > b.cfg.PendingCommandsMax || b.pendingBytes+size > b.cfg.PendingBytesMax {
		b.stats.Full++
		return ErrFull
	}
	if b.open != nil && b.open.Len()+size > b.cfg.BatchBytesMax-BatchOverheadBytes {
		b.closeOpenLocked()
		b.stats.ClosedBySize++
	}
	if b.open == nil {
		b.open = b.getLocked()
		b.open.opened = b.now()
	}
	b.open.builder.Add(clientID, seq, seqFloor, payload)
	b.pendingCommands++
	b.pendingBytes += size
	b.open.counted += size
	b.stats.Commands++
	// A command larger than a batch has a batch of its own (its buffer grew past the
	// pooled size and is dropped at Release); it closes at once.
	if b.open.Count() >= b.cfg.BatchCommandsMax || b.open.Len() > b.cfg.BatchBytesMax-BatchOverheadBytes {
		b.closeOpenLocked()
		b.stats.ClosedBySize++
	}
	return nil
}

func (b *Batcher) closeOpenLocked() {
	b.closed = append(b.closed, b.open)
	b.open = nil
}

// getLocked returns a reset batch from the free list, or a new one.
func (b *Batcher) getLocked() *Batch {
	var bt *Batch
	if n := len(b.free); n > 0 {
		bt = b.free[n-1]
		b.free[n-1] = nil
		b.free = b.free[:n-1]
	} else {
		bt = &Batch{buf: make([]byte, 0, b.cfg.BatchBytesMax)}
	}
	bt.builder.Reset(bt.buf[:0])
	bt.counted = 0
	return bt
}

// Next hands out the oldest closed batch, or closes and hands out the open one; nil when
// the Batcher is empty. Call it when the Phase-2 window has a free slot. The caller owns the
// batch until Release.
func (b *Batcher) Next() *Batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bt *Batch
	if len(b.closed) > 0 {
		bt = b.closed[0]
		copy(b.closed, b.closed[1:])
		b.closed[len(b.closed)-1] = nil
		b.closed = b.closed[:len(b.closed)-1]
	} else if b.open != nil {
		bt = b.open
		b.open = nil
	} else {
		return nil
	}
	b.pendingCommands -= bt.Count()
	b.pendingBytes -= bt.counted
	b.stats.Batches++
	return bt
}

// CloseExpired closes the open batch if it has been open for at least Config.Linger, and
// reports whether it did. Call it while the window is full, so the next free slot gets a
// batch of bounded age and later commands start a new one.
func (b *Batcher) CloseExpired(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open == nil || b.cfg.Linger <= 0 || now.Sub(b.open.opened) < b.cfg.Linger {
		return false
	}
	b.closeOpenLocked()
	b.stats.ClosedByLinger++
	return true
}

// Release returns a batch handed out by Next to the free list (dropped if the list is full).
// The batch's bytes must no longer be used.
func (b *Batcher) Release(bt *Batch) {
	if bt == nil {
		return
	}
	b.mu.Lock()
	if len(b.free) < b.cfg.BatchesPooledMax && cap(bt.buf) >= b.cfg.BatchBytesMax {
		bt.builder.Reset(bt.buf[:0])
		b.free = append(b.free, bt)
	}
	b.mu.Unlock()
}

// Empty reports whether the Batcher holds no command.
func (b *Batcher) Empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pendingCommands == 0
}

// Room reports whether Add would take a command of n payload bytes now (ignoring races with
// other callers): the pending limits are not reached.
func (b *Batcher) Room(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pendingCommands+1 <= b.cfg.PendingCommandsMax &&
		b.pendingBytes+n+CommandOverheadBytes <= b.cfg.PendingBytesMax
}

// OldestOpened reports when the open batch started (zero time when none is open), so the
// proposer can arm a linger timer.
func (b *Batcher) OldestOpened() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open == nil {
		return time.Time{}
	}
	return b.open.opened
}

// Stats returns the counters.
func (b *Batcher) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.PendingCommands = b.pendingCommands
	s.PendingBytes = b.pendingBytes
	return s
}
