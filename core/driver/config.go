package driver

import (
	"errors"
	"fmt"
)

// Errors of the driver. Each is a sentinel; callers compare with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration error; the message names the field.
	ErrInvalidConfig = errors.New("driver: invalid config")
	// ErrTransferSilent: a snapshot transfer got no chunk for RetryLimit retry intervals in a
	// row and was abandoned; the next snapshot hint starts a new one.
	ErrTransferSilent = errors.New("driver: snapshot transfer: the sender went silent")
	// ErrTransferWrite wraps the error the effects reported for a snapshot write.
	ErrTransferWrite = errors.New("driver: snapshot transfer: write failed")
	// ErrTransferFinish wraps the error the effects reported when verifying the received file
	// or making it durable (a checksum that does not match is a partial or damaged transfer).
	ErrTransferFinish = errors.New("driver: snapshot transfer: verify or sync failed")
)

// Config holds the driver's policy. Time is counted in ticks (Driver.Tick).
type Config struct {
	// PersistInflightMax bounds the Readies taken from core whose persist is in flight (1: one
	// Ready at a time). Deeper lets a leader keep proposing, and a follower keep accepting,
	// while earlier entries sync; each in-flight Ready holds its entries in memory.
	PersistInflightMax int
	// CommitSaveTicks: a hard state that changes only the commit point is saved at most once
	// per this many ticks (0: every time). The commit point is not needed for safety (it is
	// learned again after a restart), so saving it on every Ready would cost an fsync per Ready
	// for nothing but a shorter catch-up. A new promise is always saved.
	CommitSaveTicks int

	// ChunkBytes bounds the data of one SnapshotChunk this replica serves, and with
	// ChunkWindow sets the window a receiver asks for.
	ChunkBytes int
	// ChunkWindow: chunks a sender sends per request; the receiver asks for the next window once
	// it has written the current one. It also bounds the receiver's writes in flight.
	ChunkWindow int
	// RetryTicks: a receiver that got no chunk for this many ticks asks again.
	RetryTicks int
	// RetryLimit: silent retry intervals in a row after which a transfer is abandoned.
	RetryLimit int
	// ServesMax bounds the peers served a snapshot at once (one read in flight each); a request
	// beyond it is dropped and its sender asks again.
	ServesMax int
}

// Defaults of Config (with a 10 ms tick: commit-only saves every 50 ms, a retry after 500 ms).
const (
	DefaultPersistInflightMax = 64
	DefaultCommitSaveTicks    = 5
	DefaultChunkBytes         = 1 << 20
	DefaultChunkWindow        = 4
	DefaultRetryTicks         = 50
	DefaultRetryLimit         = 8
	DefaultServesMax          = 4
)

// DefaultConfig returns a Config with every field at its default.
func DefaultConfig() Config {
	return Config{
		PersistInflightMax: DefaultPersistInflightMax,
		CommitSaveTicks:    DefaultCommitSaveTicks,
		ChunkBytes:         DefaultChunkBytes,
		ChunkWindow:        DefaultChunkWindow,
		RetryTicks:         DefaultRetryTicks,
		RetryLimit:         DefaultRetryLimit,
		ServesMax:          DefaultServesMax,
	}
}

// Validate reports the first field out of range, wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	bad := func(field string, value int, want string) error {
		return fmt.Errorf("%w: %s %d: must be %s", ErrInvalidConfig, field, value, want)
	}
	switch {
	case c.PersistInflightMax < 1:
		return bad("PersistInflightMax", c.PersistInflightMax, ">= 1")
	case c.CommitSaveTicks < 0:
		return bad("CommitSaveTicks", c.CommitSaveTicks, ">= 0")
	case c.ChunkBytes < 1:
		return bad("ChunkBytes", c.ChunkBytes, ">= 1")
	case c.ChunkWindow < 1:
		return bad("ChunkWindow", c.ChunkWindow, ">= 1")
	case c.RetryTicks < 1:
		return bad("RetryTicks", c.RetryTicks, ">= 1")
	case c.RetryLimit < 0:
		return bad("RetryLimit", c.RetryLimit, ">= 0")
	case c.ServesMax < 1:
		return bad("ServesMax", c.ServesMax, ">= 1")
	}
	return nil
}

// SnapshotOperationsMax bounds the snapshot file operations (ReadSnapshot, WriteSnapshot,
// FinishSnapshot) whose completion has not been reported yet: one read per peer served, a
// window of writes, one finish. A caller that queues them to a goroutine sizes its queues
// with it (plus one for a DiscardSnapshot, which has no completion) and never blocks.
func (c *Config) SnapshotOperationsMax() int {
	return c.ServesMax + c.ChunkWindow + 1
}
