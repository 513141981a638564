package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// ErrHistoryFull: the Recorder already holds OpsMax operations; the op was not recorded.
var ErrHistoryFull = errors.New("history: recorder full")

// Infinity is the return time of an operation whose outcome is unknown: porcupine treats it as
// concurrent with everything called after it.
const Infinity int64 = math.MaxInt64

// Kind is what an operation asked.
type Kind uint8

const (
	KindAppend     Kind = 1 // append Value; on success the log position comes back
	KindRead       Kind = 2 // read the value at dense Offset
	KindReadLatest Kind = 3 // read the log's length and its last value
)

func (k Kind) String() string {
	switch k {
	case KindAppend:
		return "append"
	case KindRead:
		return "read"
	case KindReadLatest:
		return "readLatest"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Outcome is what is known about an operation's effect.
type Outcome uint8

const (
	// OutcomeOK: acknowledged; the output fields hold what the server said.
	OutcomeOK Outcome = 1
	// OutcomeFailed: definitely had no effect (never sent, or refused before it was proposed).
	OutcomeFailed Outcome = 2
	// OutcomeIndeterminate: may or may not have taken effect (timeout, connection lost,
	// leadership lost while pending). Its Return is Infinity for the checker.
	OutcomeIndeterminate Outcome = 3
)

func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeFailed:
		return "failed"
	case OutcomeIndeterminate:
		return "indeterminate"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Op is one client call.
type Op struct {
	Client  int // worker number, zero-based (porcupine draws one row per client)
	Kind    Kind
	Outcome Outcome
	Call    int64 // ns since the recorder started, taken just before the request was sent
	Return  int64 // ns since the recorder started, taken when the answer arrived; Infinity if unknown

	// Append: Value is the unique value appended. Read: Value is the value read (if Found).
	Value uint64
	// Append: the dense offset acknowledged, when HasOffset. Read: the offset asked for.
	Offset    uint64
	HasOffset bool
	// Append: the (Slot, Index) the server acknowledged.
	Slot  uint64
	Index uint32
	// Read: whether the position held a value. ReadLatest: Length is the log length seen;
	// Found (the log was not empty) and Value are its last value.
	Found  bool
	Length uint64

	Err string // the error, for indeterminate and failed operations
}

func (op Op) String() string {
	switch op.Kind {
	case KindAppend:
		s := fmt.Sprintf("c%d append(%d)", op.Client, op.Value)
		if op.Outcome != OutcomeOK {
			return s + " -> " + op.Outcome.String()
		}
		if op.HasOffset {
			return fmt.Sprintf("%s -> offset %d (slot %d.%d)", s, op.Offset, op.Slot, op.Index)
		}
		return fmt.Sprintf("%s -> slot %d.%d", s, op.Slot, op.Index)
	case KindRead:
		if op.Outcome != OutcomeOK {
			return fmt.Sprintf("c%d read(%d) -> %s", op.Client, op.Offset, op.Outcome)
		}
		if !op.Found {
			return fmt.Sprintf("c%d read(%d) -> not found", op.Client, op.Offset)
		}
		return fmt.Sprintf("c%d read(%d) -> %d", op.Client, op.Offset, op.Value)
	case KindReadLatest:
		if op.Outcome != OutcomeOK {
			return fmt.Sprintf("c%d readLatest() -> %s", op.Client, op.Outcome)
		}
		if !op.Found {
			return fmt.Sprintf("c%d readLatest() -> length %d, empty", op.Client, op.Length)
		}
		return fmt.Sprintf("c%d readLatest() -> length %d, last %d", op.Client, op.Length, op.Value)
	}
	return fmt.Sprintf("c%d %s", op.Client, op.Kind)
}

// Recorder collects operations from many goroutines. Times come from one monotonic clock.
type Recorder struct {
	start  time.Time
	opsMax int

	mu      sync.Mutex
	ops     []Op
	dropped int
}

// DefaultOpsMax bounds a Recorder created with opsMax <= 0: about 100 bytes an op, so 100 MB.
const DefaultOpsMax = 1 << 20

// NewRecorder returns a Recorder holding at most opsMax operations (DefaultOpsMax if <= 0).
func NewRecorder(opsMax int) *Recorder {
	if opsMax <= 0 {
		opsMax = DefaultOpsMax
	}
	return &Recorder{start: time.Now(), opsMax: opsMax}
}

// Now returns nanoseconds since the recorder started, from the monotonic clock. Never 0 or
// negative for a call made after NewRecorder, so it can serve as a call time directly.
func (r *Recorder) Now() int64 {
	return int64(time.Since(r.start)) + 1
}

// Add records op. It returns ErrHistoryFull (and counts the op as dropped) when OpsMax
// operations are already held: the caller should stop its workload, a truncated history
// cannot be checked soundly.
func (r *Recorder) Add(op Op) error {
	if op.Outcome == OutcomeIndeterminate {
		op.Return = Infinity
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ops) >= r.opsMax {
		r.dropped++
		return fmt.Errorf("history: %d ops held (OpsMax): %w", r.opsMax, ErrHistoryFull)
	}
	r.ops = append(r.ops, op)
	return nil
}

// Ops returns a copy of the operations recorded so far, in the order they were added.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Dropped is how many ops Add refused because the recorder was full.
func (r *Recorder) Dropped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Payloads: each appended value is a unique 64-bit number carried in a fixed-size payload, so a
// command found in a replica's log maps back to exactly one client call.

// payloadMagic marks chaos payloads, so foreign commands in a log are reported, not misread.
var payloadMagic = [8]byte{'m', 'p', 'x', 'c', 'h', 'a', 'o', 's'}

// PayloadBytes is the size of an encoded value.
const PayloadBytes = 16

// EncodePayload returns the payload that carries value.
func EncodePayload(value uint64) []byte {
	b := make([]byte, PayloadBytes)
	copy(b, payloadMagic[:])
	binary.BigEndian.PutUint64(b[8:], value)
	return b
}

// DecodePayload returns the value a payload carries; an error names what is wrong with it.
func DecodePayload(payload []byte) (uint64, error) {
	if len(payload) != PayloadBytes {
		return 0, fmt.Errorf("history: payload is %d bytes, want %d", len(payload), PayloadBytes)
	}
	if [8]byte(payload[:8]) != payloadMagic {
		return 0, fmt.Errorf("history: payload %x lacks the chaos magic", payload)
	}
	return binary.BigEndian.Uint64(payload[8:]), nil
}
