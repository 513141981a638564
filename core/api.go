package core

// This file is the contract between core/ and its drivers (pipeline/ and the simulator).
// Names and meanings here are shared with other packages: add, do not change.

import (
	"errors"
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
)

// Errors returned by Replica. Each is a sentinel; callers compare with errors.Is.
var (
	// ErrNotLeader: the replica does not lead; nothing was proposed. Status().Leader is a hint.
	ErrNotLeader = errors.New("core: not the leader")
	// ErrWindowFull: the Phase-2 window has Config.Window slots outstanding; nothing was
	// proposed. Retry after the next Ready/Advance cycle frees a slot.
	ErrWindowFull = errors.New("core: phase-2 window full")
	// ErrValueTooLarge: the value exceeds Config.ValueBytesMax; nothing was proposed.
	ErrValueTooLarge = errors.New("core: value too large")
	// ErrInvalidConfig wraps every configuration error; the message names the field.
	ErrInvalidConfig = errors.New("core: invalid config")
)

// Rand is the only source of randomness core uses (election timeouts, backoff). The simulator
// passes a seeded generator so a seed replays a run exactly. *math/rand/v2.Rand satisfies it.
type Rand interface {
	IntN(n int) int
}

// Config holds one replica's protocol parameters. Time is counted in ticks: the driver calls
// Tick at a fixed interval (pipeline: Config.TickInterval, default 10 ms).
type Config struct {
	ID    uint32   // this replica, non-zero, one of Peers
	Peers []uint32 // every replica of the cluster, this one included; odd sizes recommended

	// ElectionTicks: a follower that hears nothing from a leader for a random number of ticks in
	// [ElectionTicks, 2*ElectionTicks) starts phase 1. Must exceed HeartbeatTicks by a margin.
	ElectionTicks  int
	HeartbeatTicks int // a leader sends a heartbeat after this many ticks without an Accept
	// RetransmitTicks: an Accept (or Prepare) unacknowledged for this many ticks is sent again.
	RetransmitTicks int

	// Window is the most slots a leader keeps proposed but not yet chosen. Larger hides more
	// round trips but leaves less to batch per slot (see docs/BENCHMARKS.md for the curve).
	Window int
	// ValueBytesMax bounds one slot value (an encoded batch).
	ValueBytesMax int
	// InflightBytesMax bounds the bytes of values proposed but not yet chosen; Propose beyond it
	// returns ErrWindowFull. Bounds memory the way etcd's MaxInflightBytes does.
	InflightBytesMax int
	// StepValuesOwned: the driver never reuses or modifies the byte slices of a message it
	// passes to Step (the pipeline copies every peer message into fresh memory), so core may
	// keep accepted values without copying them again. Off by default: core copies.
	StepValuesOwned bool
	// AcceptValuesMax bounds the values in one Accept (codec.Limits.ValuesMax: a peer refuses
	// a frame with more). Accepts are otherwise bounded by CatchUpBytesMax.
	AcceptValuesMax int
	// CatchUpSlotsMax / CatchUpBytesMax bound one CatchUpReply.
	CatchUpSlotsMax int
	CatchUpBytesMax int
	// RetainSlots: how many applied slots core keeps in memory to serve catch-up before asking
	// Storage. 0 means core asks Storage for everything already applied.
	RetainSlots int
	// RetainBytesMax also bounds those applied slots, by the bytes of their values (0: no byte
	// bound): RetainSlots of large batches would otherwise hold up to RetainSlots x
	// ValueBytesMax in memory. The slots dropped stay servable through Storage.
	RetainBytesMax int

	Rand Rand
}

// DefaultConfig returns a Config with sane defaults for id among peers. Rand must still be set.
func DefaultConfig(id uint32, peers []uint32) Config {
	return Config{
		ID:               id,
		Peers:            append([]uint32(nil), peers...),
		ElectionTicks:    30,
		HeartbeatTicks:   3,
		RetransmitTicks:  20,
		Window:           16,
		ValueBytesMax:    4 << 20,
		InflightBytesMax: 64 << 20,
		AcceptValuesMax:  codec.DefaultLimits().ValuesMax,
		CatchUpSlotsMax:  256,
		CatchUpBytesMax:  4 << 20,
		RetainSlots:      1024,
		RetainBytesMax:   64 << 20,
	}
}

// HardState is what a replica must never forget besides its accepted entries: the highest
// ballot it promised, and its commit point (every slot < Commit is chosen).
type HardState struct {
	Promised codec.Ballot
	Commit   uint64
}

// Persisted is everything a replica recovers from durable storage on restart.
type Persisted struct {
	HardState HardState
	// Entries: the accepted entries, at most one per slot (the latest ballot wins), any order.
	Entries []codec.Entry
	// SnapshotSlot: every slot below it is covered by an application snapshot and compacted;
	// Applied starts there. 0 when there is no snapshot.
	SnapshotSlot uint64
	// Applied: every slot below it was already applied by the state machine (may be 0: the
	// driver re-applies from SnapshotSlot).
	Applied uint64
}

// Storage lets core read chosen values it no longer holds in memory (for catch-up replies).
// The pipeline backs it with the slot cache and the WAL; the simulator with a map. It must
// return only values that core earlier handed out as chosen.
type Storage interface {
	// Chosen appends to dst the chosen values of consecutive slots starting at from, stopping
	// at maxSlots, maxBytes (at least one value is returned if any exists) or the first slot it
	// does not hold. ErrCompacted if from is below the compaction point.
	Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error)
}

// ErrCompacted: the requested slot is below the snapshot point.
var ErrCompacted = errors.New("core: slot compacted")

// Ready is a batch of work for the driver, in the order it must be done:
//
//  1. Persist HardState (if MustSaveHardState) and Entries, durably (fsync) if MustSync.
//  2. Send Messages at once: they vouch for nothing not yet durable. They may be sent in
//     parallel with step 1 (the leader's Accepts go out while its own WAL syncs).
//  3. After step 1 is durable, send MessagesAfterPersist (Promises and Accepteds).
//  4. Apply Chosen in order (they are contiguous, starting at the previous Ready's end).
//  5. Call Advance(rd).
//
// Asynchronous persistence (added; the one-at-a-time use above stays valid): the driver may
// take further Readies before advancing earlier ones, as long as
//
//   - their persists become durable in the order the Readies were handed out (a FIFO of
//     in-flight writes, such as one WAL queue that group-commits them; a crash may lose any
//     suffix of them, possibly torn);
//   - each Ready's MessagesAfterPersist leave only after its own persist (and so every earlier
//     one) is durable, and Advance is called for every Ready, once, in that same order.
//
// Then a leader keeps proposing and sending Accepts while its earlier entries sync, and a
// follower keeps accepting while its previous batch syncs. Core learns that something is
// durable only from Advance: the leader's own vote for a slot, and its own promise, count
// from the Advance of the Ready that persisted them, never earlier.
type Ready struct {
	HardState         HardState
	MustSaveHardState bool
	Entries           []codec.Entry
	MustSync          bool

	Messages             []codec.Message
	MessagesAfterPersist []codec.Message

	Chosen []codec.Entry

	// Snapshot, if non-zero, asks the driver to install the snapshot received from a peer up to
	// SnapshotSlot before applying Chosen (the driver reassembles SnapshotChunk messages).
	SnapshotSlot uint64
	// commit: the replica's commit point when this Ready was made. Every chosen slot below
	// it is in this Ready's Entries or an earlier Ready's, so it is durable once this Ready is
	// advanced (and then may be saved in a later HardState).
	commit uint64
}

// Status is a read-only view for metrics, redirects and tests.
type Status struct {
	ID       uint32
	Leader   uint32 // 0 if unknown
	IsLeader bool   // true only once phase 1 completed and this replica runs phase 2
	Ballot   codec.Ballot
	Promised codec.Ballot
	Commit   uint64 // every slot < Commit is chosen
	Applied  uint64 // every slot < Applied was handed out in Ready.Chosen and advanced
	NextSlot uint64 // leader: the next slot Propose will use
	Inflight int    // leader: slots proposed, not yet chosen
}

// Replica is one replica's protocol: proposer, acceptor and learner together. It is not safe for
// concurrent use: exactly one goroutine (the pipeline's step loop) owns it.
//
// Methods (implemented in replica.go):
//
//	func New(cfg Config, p Persisted, s Storage) (*Replica, error)
//	func (r *Replica) Step(m codec.Message) error   // a message from a peer (m.To == cfg.ID)
//	func (r *Replica) Tick()                         // one unit of logical time
//	func (r *Replica) Propose(value []byte) (slot uint64, err error)  // leader only; value is retained, caller must not modify it
//	func (r *Replica) Campaign()                     // start phase 1 now (tests, leadership transfer)
//	func (r *Replica) HasReady() bool
//	func (r *Replica) Ready() Ready
//	func (r *Replica) Advance(rd Ready)
//	func (r *Replica) Status() Status
//	func (r *Replica) Compact(slot uint64)           // the application snapshotted every slot < slot

// PersistedStateError is New's refusal of a persisted state no correct replica writes. Slot
// names the entry it concerns, so the driver can say where that entry lies on disk.
type PersistedStateError struct {
	Slot   uint64
	Reason string
}

func (e *PersistedStateError) Error() string { return "core: " + e.Reason }

func persistedError(slot uint64, format string, args ...any) error {
	return &PersistedStateError{Slot: slot, Reason: fmt.Sprintf(format, args...)}
}

// ErrInvalidMessage wraps every rejection of a malformed peer message; the message says which
// field was wrong. The replica's state is unchanged when Step returns it.
var ErrInvalidMessage = errors.New("core: invalid message")

// ChosenBallot marks an entry whose value this replica learned as chosen (through catch-up)
// rather than accepted in a ballot. It orders above every real ballot, so a Promise that reports
// it makes the new leader re-propose exactly that value (it is the chosen one), and it never
// equals a leader's ballot, so it never counts as a vote. It is never promised: New ignores it
// when it recovers the promised ballot from the accepted entries.
var ChosenBallot = codec.Ballot{Round: 1<<64 - 1, Replica: 1<<32 - 1}
