package sim

import (
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// This file is the simulator's Ready handling, all of it: taking Readies, the persist queue,
// releasing MessagesAfterPersist, applying Chosen, Advance, snapshot transfer and install, and
// what a crash does to the persists in flight. A shared deterministic component (core/driver)
// will replace this file; the seam is small on purpose:
//
//	the rest of the simulator calls:  newDriver, (*driver).drive, crash, reset,
//	                                  storageChosen (core.Storage), (*world).transferSnapshots
//	this file calls on the world:     w.now, w.rng, w.opts (Plant, LyingDisk),
//	                                  w.handOut (a Ready was taken: check Chosen),
//	                                  w.sendNow, w.sendAfterPersist (checks + network),
//	                                  w.writeEntry, w.writeHardState (the disk + the checker),
//	                                  w.apply (the state machine), w.installSnapshot,
//	                                  w.checkPromised, and n.r, n.disk, n.lastSync,
//	                                  n.stalledTill, n.running.

// driveRoundsMax bounds the Ready cycles one replica runs per world tick.
const driveRoundsMax = 8

// persistJob is one Ready whose persist is in flight.
type persistJob struct {
	rd       core.Ready
	doneAt   int  // the persist completes at this tick (FIFO: never before an earlier one)
	applied  bool // Chosen was applied when the Ready was taken
	advanced bool // PlantAdvanceBeforePersist: Advance already ran
	acked    bool // PlantAckBeforePersist: MessagesAfterPersist already left
}

// driver handles one replica's Readies as the pipeline would: Messages leave at once, the
// persist takes [persistTicksMin, persistTicksMax] ticks, and only then do MessagesAfterPersist leave,
// Chosen get applied (or earlier: applyEarly) and Advance run.
type driver struct {
	w           *world
	n           *node
	jobs        []*persistJob // persists in flight, completed in order
	persistsMax int           // most persists in flight at once (1 = one Ready at a time)
	// A persist takes [persistTicksMin, persistTicksMax] ticks: a slow disk takes
	// [PersistTicksMax/2, PersistTicksMax], a fast one [0, PersistTicksMax/4]. Each replica's
	// is drawn, so a candidate's peers may promise before its own promise is durable.
	persistTicksMin int
	persistTicksMax int
	applyEarly      bool      // apply Chosen when the Ready is taken, not after its persist
	incoming        *snapshot // a snapshot fetched from a peer, until Ready.SnapshotSlot installs it
}

func newDriver(w *world, n *node) driver {
	d := driver{w: w, n: n, persistsMax: 1 + w.rng.IntN(w.opts.PersistsInflightMax), applyEarly: w.rng.IntN(2) == 0}
	if p := w.opts.PersistTicksMax; w.rng.IntN(2) == 0 {
		d.persistTicksMin, d.persistTicksMax = p/2, p // a slow disk
	} else {
		d.persistTicksMax = p / 4
	}
	return d
}

// reset forgets everything volatile (a restart).
func (d *driver) reset() { d.jobs, d.incoming = nil, nil }

// drive moves one replica's Ready cycle: a finished persist (the oldest in flight: they
// complete in order) releases MessagesAfterPersist, applies Chosen and advances; while fewer
// than persistsMax persists are in flight a new Ready sends Messages at once and starts
// persisting behind the others. A paused replica does nothing; a stalled disk completes
// nothing.
func (d *driver) drive() {
	w, n := d.w, d.n
	for range driveRoundsMax {
		if !n.running(w.now) {
			return
		}
		if len(d.jobs) > 0 && d.jobs[0].doneAt <= w.now && w.now >= n.stalledTill {
			d.finishPersist()
			continue
		}
		if len(d.jobs) >= d.persistsMax || !n.r.HasReady() {
			return
		}
		rd := n.r.Ready()
		w.handOut(n, &rd)
		for _, m := range rd.Messages {
			w.sendNow(n, m)
		}
		job := &persistJob{rd: rd, doneAt: w.now + d.persistTicksMin + w.rng.IntN(d.persistTicksMax-d.persistTicksMin+1)}
		if k := len(d.jobs); k > 0 {
			job.doneAt = max(job.doneAt, d.jobs[k-1].doneAt) // FIFO: never before an earlier persist
			w.res.Overlapped++
		}
		if w.opts.Plant == PlantAckBeforePersist {
			for _, m := range rd.MessagesAfterPersist {
				w.sendAfterPersist(n, m)
			}
			job.acked = true
		}
		if (d.applyEarly || w.opts.Plant == PlantAdvanceBeforePersist) && d.mayApplyEarly(rd) {
			// Like the pipeline: chosen values are durable on a majority, so they may be
			// applied before this replica's own persist, in order.
			for _, e := range rd.Chosen {
				w.apply(n, e)
			}
			job.applied = true
		}
		if w.opts.Plant == PlantAdvanceBeforePersist && job.applied && len(d.jobs) == 0 {
			n.r.Advance(rd)
			job.advanced = true
		}
		d.jobs = append(d.jobs, job)
	}
}

// mayApplyEarly: rd's Chosen may be applied now if it installs no snapshot (that waits for
// the persist) and every Ready still persisting was applied already (order).
func (d *driver) mayApplyEarly(rd core.Ready) bool {
	if rd.SnapshotSlot != 0 {
		return false
	}
	for _, j := range d.jobs {
		if !j.applied {
			return false
		}
	}
	return true
}

// finishPersist completes the oldest persist: its entries and hard state reach the disk, a
// snapshot it carries is installed, its MessagesAfterPersist leave, Chosen is applied in order
// and the Ready advanced.
func (d *driver) finishPersist() {
	w, n := d.w, d.n
	job := d.jobs[0]
	d.jobs[0] = nil
	d.jobs = d.jobs[1:]
	rd := job.rd
	if w.opts.LyingDisk && (len(rd.Entries) > 0 || rd.MustSaveHardState) {
		n.lastSync = n.disk.clone()
	}
	for _, e := range rd.Entries {
		w.writeEntry(n, e)
	}
	if rd.MustSaveHardState {
		w.writeHardState(n, rd.HardState)
	}
	if rd.SnapshotSlot > 0 {
		if d.incoming == nil || d.incoming.slot() != rd.SnapshotSlot {
			w.fail("snapshot install", "replica %d asked to install %d, fetched %v", n.id, rd.SnapshotSlot, d.incoming)
		}
		w.installSnapshot(n, *d.incoming)
		d.incoming = nil
	}
	if !job.acked {
		for _, m := range rd.MessagesAfterPersist {
			w.sendAfterPersist(n, m)
		}
	}
	if !job.applied {
		for _, e := range rd.Chosen {
			w.apply(n, e)
		}
	}
	if !job.advanced {
		n.r.Advance(rd)
	}
	w.checkPromised(n)
}

// crash decides what the persists in flight left on the disk. They are one FIFO of writes: a
// crash keeps some prefix of their entries, in order, torn at a record boundary. The hard
// state is saved apart from the entries (its own file), so the latest hard state of some
// prefix of the in-flight persists may have reached the disk, ahead of their entries.
func (d *driver) crash() {
	w, n := d.w, d.n
	if len(d.jobs) > 0 && w.rng.IntN(2) == 0 {
		var entries []codec.Entry
		for _, j := range d.jobs {
			entries = append(entries, j.rd.Entries...)
		}
		kept := w.rng.IntN(len(entries) + 1)
		for _, e := range entries[:kept] {
			w.writeEntry(n, e)
		}
		if w.opts.Plant == PlantTornRecordReadWhole && kept < len(entries) && len(entries[kept].Value) > 1 {
			torn := entries[kept]
			torn.Value = torn.Value[:len(torn.Value)/2]
			w.writeEntry(n, torn)
		}
		for _, j := range d.jobs[:w.rng.IntN(len(d.jobs)+1)] {
			if j.rd.MustSaveHardState {
				w.writeHardState(n, j.rd.HardState)
			}
		}
	}
	switch {
	case w.opts.LyingDisk:
		n.disk = n.lastSync.clone()
	case w.opts.Plant == PlantForgetOwnPromise && n.disk.hardState.Promised.Replica == n.id:
		n.disk.hardState.Promised = n.vouched // the own campaign's promise never reached the disk
	case w.opts.Plant == PlantForgetAcceptedOnCrash:
		for _, s := range sortedSlots(n.disk.entries) {
			if e := n.disk.entries[s]; s >= n.disk.hardState.Commit && e.Ballot != core.ChosenBallot && w.rng.IntN(2) == 0 {
				delete(n.disk.entries, s)
				break
			}
		}
	}
	d.reset()
}

// storageChosen serves catch-up from the state machine's applied values (they were handed out
// as chosen), like the pipeline's slot cache.
func (d *driver) storageChosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	values := d.n.state.values
	if d.w.opts.Plant == PlantStorageOffByOne {
		from++
	}
	size := 0
	for s := from; s < uint64(len(values)) && maxSlots > 0; s++ {
		v := values[s]
		if len(dst) > 0 && size+len(v) > maxBytes {
			break
		}
		dst = append(dst, v)
		size += len(v)
		maxSlots--
	}
	return dst, nil
}

// transferSnapshots serves every replica that asked for a snapshot from a connected peer
// holding one recent enough; core gets only the final chunk, as the pipeline would.
func (w *world) transferSnapshots() {
	for _, n := range w.nodes {
		if !n.running(w.now) {
			continue
		}
		wanted := n.r.SnapshotWanted()
		if wanted == 0 || wanted <= n.r.Status().Commit {
			continue
		}
		for _, p := range w.nodes {
			if p == n || !p.running(w.now) || !w.connected(p.id, n.id) || p.disk.snapshot.slot() < wanted {
				continue
			}
			if n.driver.incoming == nil { // fixed until installed: a Ready may be installing it
				s := p.disk.snapshot
				n.driver.incoming = &s
			}
			err := n.r.Step(codec.Message{Type: codec.TypeSnapshotChunk, From: p.id, To: n.id,
				Slot: n.driver.incoming.slot(), Total: 1, Data: []byte{1}})
			if err != nil {
				w.fail("well-formed messages are accepted", "replica %d: %v", n.id, err)
			}
			w.res.Snapshots++
			break
		}
	}
}
