package driver

import (
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// Driver handles one core.Replica's Readies and its snapshot transfers (see doc.go). It is not
// safe for concurrent use: the goroutine that owns the Replica owns the Driver.
type Driver struct {
	cfg     Config
	r       *core.Replica
	effects Effects
	id      uint32

	// ticks counts Tick calls: the driver's only clock.
	ticks uint64

	// pending: Readies taken whose persist is in flight, oldest first, at most
	// PersistInflightMax; pending[i].seq == pending[0].seq + i. They finish strictly in order.
	pending []pendingReady
	nextSeq uint64
	// unapplied: pending Readies whose Chosen waits for their own persist. While one does,
	// every later Ready's Chosen waits too (the state machine applies in slot order).
	unapplied int

	// The hard state asked to be saved: savedPromised is the highest promise handed to
	// SaveHardState (it is durable once the Ready that saved it is finished); commitSavedTick
	// is when the last hard state was saved (commitSaved: one was).
	savedPromised   codec.Ballot
	commitSavedTick uint64
	commitSaved     bool

	snapshots snapshotState // transfer.go
}

// pendingReady is a Ready taken from core whose persist is in flight, or durable and waiting
// for an earlier one.
type pendingReady struct {
	rd      core.Ready
	seq     uint64
	parts   Part // parts of its persist not yet durable
	applied bool // Chosen went to Apply when the Ready was taken
}

// New returns a Driver for r. The caller keeps using r directly for Propose, Campaign,
// Status and Compact, and goes through the Driver for Step and Tick.
func New(cfg Config, r *core.Replica, effects Effects) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r == nil || effects == nil {
		return nil, fmt.Errorf("%w: the replica and the effects must be set", ErrInvalidConfig)
	}
	d := &Driver{cfg: cfg, r: r, effects: effects, id: r.Status().ID,
		pending: make([]pendingReady, 0, cfg.PersistInflightMax)}
	d.snapshots.serves = make([]serve, 0, cfg.ServesMax)
	return d, nil
}

// Replica returns the replica the driver drives.
func (d *Driver) Replica() *core.Replica { return d.r }

// Step feeds a peer message: SnapshotChunk messages are the driver's (transfer.go) and never
// reach core, a CatchUpReply naming a snapshot may start a transfer, every other message goes
// to core unchanged. The error is core's (ErrInvalidMessage) or a malformed chunk's.
func (d *Driver) Step(m *codec.Message) error {
	switch m.Type {
	case codec.TypeSnapshotChunk:
		return d.onSnapshotChunk(m)
	case codec.TypeCatchUpReply:
		if err := d.r.Step(*m); err != nil {
			return err
		}
		if m.Count > 0 {
			d.maybeFetchSnapshot(m.From)
		}
		return nil
	}
	return d.r.Step(*m)
}

// Tick advances logical time by one unit, for core and the driver.
func (d *Driver) Tick() {
	d.ticks++
	d.r.Tick()
	d.tickTransfer()
}

// Drive takes Readies from core while fewer than PersistInflightMax persists are in flight.
// Call it after every input (Step, Tick, Propose, Campaign, a completion).
func (d *Driver) Drive() {
	for len(d.pending) < d.cfg.PersistInflightMax && d.r.HasReady() {
		d.take()
	}
}

// take handles one Ready: Messages leave at once; Chosen is applied at once when nothing
// before it waits; the durable part is queued behind the earlier persists; the rest waits for
// it (finish).
func (d *Driver) take() {
	rd := d.r.Ready()
	if rd.SnapshotSlot != 0 && rd.SnapshotSlot != d.snapshots.handed {
		panic(fmt.Sprintf("driver: replica %d: Ready installs snapshot %d, but the snapshot handed to core is %d",
			d.id, rd.SnapshotSlot, d.snapshots.handed))
	}
	for i := range rd.Messages {
		d.effects.Send(&rd.Messages[i])
	}
	p := pendingReady{rd: rd, seq: d.nextSeq}
	d.nextSeq++
	if rd.SnapshotSlot == 0 && d.unapplied == 0 {
		// Chosen values are durable on a majority already: the answers need not wait for this
		// replica's own fsync. A snapshot install waits for its persist, and whatever is
		// chosen after it waits behind it (the state machine applies in order).
		d.apply(rd.Chosen)
		p.applied = true
	}
	saveHardState := rd.MustSaveHardState && (rd.HardState.Promised != d.savedPromised || d.commitSaveDue())
	if saveHardState {
		p.parts |= PartHardState
		d.savedPromised = rd.HardState.Promised
		d.commitSavedTick, d.commitSaved = d.ticks, true
	}
	if len(rd.Entries) > 0 {
		p.parts |= PartEntries
	}
	if p.parts == 0 && len(d.pending) == 0 {
		d.finish(&p)
		return
	}
	// With nothing to write it still waits its turn: it may vouch for what earlier Readies
	// write (its MessagesAfterPersist, its Advance).
	if !p.applied {
		d.unapplied++
	}
	d.pending = append(d.pending, p)
	if saveHardState {
		d.effects.SaveHardState(p.seq, rd.HardState)
	}
	if len(rd.Entries) > 0 {
		d.effects.PersistEntries(p.seq, rd.Entries)
	}
}

// commitSaveDue reports whether a commit-only change of the hard state may be saved now.
func (d *Driver) commitSaveDue() bool {
	return !d.commitSaved || d.ticks-d.commitSavedTick >= uint64(d.cfg.CommitSaveTicks)
}

// Persisted records that part of the persist of the Ready with sequence seq is durable, and
// finishes, in order, every Ready that is wholly durable with no earlier one in flight.
func (d *Driver) Persisted(seq uint64, part Part) {
	if len(d.pending) == 0 || seq < d.pending[0].seq || seq-d.pending[0].seq >= uint64(len(d.pending)) {
		panic(fmt.Sprintf("driver: replica %d: persist %d (%v) reported, but it is not in flight", d.id, seq, part))
	}
	p := &d.pending[seq-d.pending[0].seq]
	if p.parts&part == 0 || part == 0 {
		panic(fmt.Sprintf("driver: replica %d: persist %d reported %v twice, or never asked for it", d.id, seq, part))
	}
	p.parts &^= part
	done := 0
	for done < len(d.pending) && d.pending[done].parts == 0 {
		p := &d.pending[done]
		done++
		if !p.applied {
			d.unapplied--
		}
		d.finish(p)
		d.pending[done-1] = pendingReady{}
	}
	if done > 0 {
		d.pending = d.pending[:copy(d.pending, d.pending[done:])]
	}
	if d.unapplied < 0 || d.unapplied > len(d.pending) {
		panic(fmt.Sprintf("driver: replica %d: %d unapplied of %d pending Readies", d.id, d.unapplied, len(d.pending)))
	}
}

// finish completes a Ready whose persist (and every earlier Ready's) is durable, in the order
// core's Ready contract gives: MessagesAfterPersist, the snapshot install, Chosen, Advance.
func (d *Driver) finish(p *pendingReady) {
	rd := &p.rd
	for i := range rd.MessagesAfterPersist {
		d.effects.Send(&rd.MessagesAfterPersist[i])
	}
	if rd.SnapshotSlot != 0 {
		d.effects.InstallSnapshot(rd.SnapshotSlot)
		d.snapshots.handed = 0
	}
	if !p.applied {
		d.apply(rd.Chosen)
	}
	d.r.Advance(*rd)
}

func (d *Driver) apply(chosen []codec.Entry) {
	if len(chosen) > 0 {
		d.effects.Apply(chosen)
	}
}

// Inflight returns the Readies taken from core and not yet advanced.
func (d *Driver) Inflight() int { return len(d.pending) }

// Status is a read-only view for metrics and tests.
type Status struct {
	Ticks     uint64 // Tick calls so far
	Inflight  int    // Readies taken, not yet advanced
	Unapplied int    // of those, Readies whose Chosen waits for their persist

	// The snapshot transfer in progress (Transfer 0: none).
	Transfer      uint64
	TransferFrom  uint32
	TransferSlot  uint64 // 0 until the first chunk names it
	TransferBytes uint64 // received and handed to WriteSnapshot
	TransferTotal uint64
	// Serving: peers being served a snapshot window now.
	Serving int
	// SnapshotOperations: snapshot file operations whose completion has not been reported
	// (at most Config.SnapshotOperationsMax).
	SnapshotOperations int
}

// Status returns the driver's state.
func (d *Driver) Status() Status {
	st := Status{Ticks: d.ticks, Inflight: len(d.pending), Unapplied: d.unapplied,
		Serving: len(d.snapshots.serves), SnapshotOperations: d.snapshots.operations}
	if t := d.snapshots.receiving; t != nil {
		st.Transfer, st.TransferFrom, st.TransferSlot = t.id, t.from, t.slot
		st.TransferBytes, st.TransferTotal = t.received, t.total
	}
	return st
}
