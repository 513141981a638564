package core

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
)

// learnCommit applies a leader's commit point: a slot below it is chosen here when our entry
// for it was accepted in the leader's ballot (the leader proposes one value per slot per
// ballot, and only the chosen one once any is chosen). Anything else needs catch-up.
func (r *Replica) learnCommit(from uint32, b codec.Ballot, leaderCommit uint64) {
	for r.commit < leaderCommit {
		st := r.log[r.commit]
		if st == nil || st.ballot != b && st.ballot != ChosenBallot {
			break
		}
		r.commit++
	}
	if r.commit < leaderCommit {
		r.requestCatchUp(from)
	}
}

// requestCatchUp asks peer for chosen slots from our commit point, one request at a time.
func (r *Replica) requestCatchUp(peer uint32) {
	if r.catchUp.inflight {
		return
	}
	r.catchUp.inflight, r.catchUp.ticks = true, 0
	r.msgs = append(r.msgs, codec.Message{Type: codec.TypeCatchUpRequest, From: r.id, To: peer,
		Slot: r.commit, Count: uint64(r.cfg.CatchUpSlotsMax)})
}

// onCatchUpRequest serves chosen values from memory, else from Storage; below our snapshot
// it answers with the snapshot slot in Count.
func (r *Replica) onCatchUpRequest(m *codec.Message) {
	reply := codec.Message{Type: codec.TypeCatchUpReply, From: r.id, To: m.From, Slot: m.Slot, Commit: r.commit}
	if m.Slot < r.snapshotSlot {
		reply.Count = r.snapshotSlot
		r.msgs = append(r.msgs, reply)
		return
	}
	count := min(m.Count, uint64(r.cfg.CatchUpSlotsMax))
	end := r.commit
	if m.Slot < end && end-m.Slot > count {
		end = m.Slot + count
	}
	s, bytesSum := m.Slot, 0
	if s < r.logStart && s < end && r.storage != nil {
		var err error
		reply.Values, err = r.storage.Chosen(s, int(min(end, r.logStart)-s), r.cfg.CatchUpBytesMax, nil)
		if errors.Is(err, ErrCompacted) {
			reply.Values, reply.Count = nil, r.snapshotSlot
		}
		for _, v := range reply.Values {
			bytesSum += len(v)
		}
		s += uint64(len(reply.Values))
	}
	for ; s >= r.logStart && s < end; s++ {
		v := r.log[s].value
		if len(reply.Values) > 0 && bytesSum+len(v) > r.cfg.CatchUpBytesMax {
			break
		}
		reply.Values = append(reply.Values, v)
		bytesSum += len(v)
	}
	r.msgs = append(r.msgs, reply)
}

// onCatchUpReply installs chosen values contiguously from our commit point.
func (r *Replica) onCatchUpReply(m *codec.Message) {
	r.catchUp.inflight = false
	if m.Count > r.commit {
		r.catchUp.wanted = max(r.catchUp.wanted, m.Count)
	}
	for i, v := range m.Values {
		slot := m.Slot + uint64(i)
		if slot >= m.Commit || slot > r.commit {
			break // not chosen at the sender, or a gap
		}
		if slot == r.commit {
			r.installChosen(slot, v)
		}
	}
	if m.Commit > r.commit && len(m.Values) > 0 {
		r.requestCatchUp(m.From) // more to fetch
	}
}

// installChosen stores v as slot's chosen value and advances the commit point past it.
func (r *Replica) installChosen(slot uint64, v []byte) {
	if slot != r.commit {
		panic(fmt.Sprintf("core: replica %d: install slot %d at commit %d", r.id, slot, r.commit))
	}
	st := r.log[slot]
	if r.role == roleLeader && (st == nil || st.ballot != r.ballot || !bytes.Equal(st.value, v)) {
		// Chosen in a higher ballot than ours (a peer caught up from a newer leader): we are
		// stale, so stop leading rather than keep proposing here.
		r.stepDown()
	}
	switch {
	case r.role == roleLeader:
		// A leader lags when its phase 1 started below slots others chose and then dropped
		// from memory (so they cannot acknowledge them). It re-proposed the chosen value.
		r.inflightSum -= len(st.value)
		r.flushNeeded = true
	case st == nil || !bytes.Equal(st.value, v):
		// Our accepted value (if any) lost; it was never chosen, so nothing depends on it.
		r.storeSlot(slot, ChosenBallot, bytes.Clone(v))
	}
	r.commit++
}

// onSnapshotChunk: core keeps no snapshot bytes. The driver reassembles and verifies chunks
// and passes only the final one (Offset+len(Data) == Total) once the whole snapshot is held;
// core then jumps its commit and applied points to m.Slot and hands the install to the driver
// in Ready.SnapshotSlot.
func (r *Replica) onSnapshotChunk(m *codec.Message) {
	if m.Offset+uint64(len(m.Data)) != m.Total || m.Slot <= r.commit {
		return
	}
	if r.role != roleFollower {
		r.stepDown() // too far behind to lead: others compacted past our commit point
	}
	for s := r.logStart; s < m.Slot && s < r.logEnd; s++ {
		delete(r.log, s)
	}
	r.retainedBytes = 0 // every applied slot (applied <= commit < m.Slot) was just dropped
	// applied moves at Advance, once the driver installed the snapshot.
	r.logStart, r.commit, r.handedNext = m.Slot, m.Slot, m.Slot
	r.snapshotSlot, r.pendingInstall = m.Slot, m.Slot
	r.logEnd = max(r.logEnd, m.Slot)
	r.catchUp.wanted = 0
	if r.run.next < m.Slot {
		r.run = ackRun{}
	}
}

// HasReady reports whether Ready would return anything.
func (r *Replica) HasReady() bool {
	if r.flushNeeded {
		r.flushAccepts()
	}
	return len(r.unstable) > 0 || len(r.msgs) > 0 || len(r.msgsAfter) > 0 ||
		r.handedNext < r.commit || r.promised != r.savedPromised ||
		r.savableCommit != r.savedCommit || r.pendingInstall != 0
}

// Ready hands out the pending work (see the Ready type for the order the driver follows).
// Several Readies may be outstanding; Advance them in the order they were handed out.
func (r *Replica) Ready() Ready {
	if r.flushNeeded {
		r.flushAccepts()
	}
	rd := Ready{
		HardState:            HardState{Promised: r.promised, Commit: r.savableCommit},
		MustSaveHardState:    r.promised != r.savedPromised || r.savableCommit != r.savedCommit,
		Entries:              r.unstable,
		Messages:             r.msgs,
		MessagesAfterPersist: r.msgsAfter,
		SnapshotSlot:         r.pendingInstall,
		commit:               r.commit,
	}
	rd.MustSync = len(rd.Entries) > 0 || r.promised != r.savedPromised
	for s := r.handedNext; s < r.commit; s++ {
		st := r.log[s]
		rd.Chosen = append(rd.Chosen, codec.Entry{Slot: s, Ballot: st.ballot, Value: st.value})
	}
	r.savedPromised, r.savedCommit = r.promised, r.savableCommit
	r.handedNext = r.commit
	r.unstable, r.msgs, r.msgsAfter, r.pendingInstall = nil, nil, nil, 0
	r.readyOut++
	return rd
}

// Advance acknowledges that rd was persisted, sent and applied. Readies are advanced in the
// order Ready handed them out.
func (r *Replica) Advance(rd Ready) {
	if r.readyOut == 0 {
		panic(fmt.Sprintf("core: replica %d: Advance without an outstanding Ready", r.id))
	}
	r.readyOut--
	r.syncWaitTicks = 0 // the disk moves
	for _, e := range rd.Entries {
		if st := r.log[e.Slot]; st != nil && st.ballot == e.Ballot {
			st.durable = e.Ballot
		}
	}
	if rd.MustSaveHardState && r.durablePromised.Less(rd.HardState.Promised) {
		r.durablePromised = rd.HardState.Promised
	}
	if n := len(rd.Chosen); n > 0 && rd.Chosen[n-1].Slot >= r.applied {
		r.retainedBytes += r.bytesIn(max(r.applied, r.logStart), rd.Chosen[n-1].Slot+1)
		r.applied = rd.Chosen[n-1].Slot + 1
	}
	if rd.SnapshotSlot > r.applied {
		r.applied = rd.SnapshotSlot // onSnapshotChunk dropped every slot below it
	}
	// Every chosen slot below rd.commit was in rd.Entries or an earlier Ready: durable now.
	r.savableCommit = max(r.savableCommit, rd.commit)
	r.trimRetained()
	r.maybeCountSelfPromise()
	if r.role == roleLeader {
		r.maybeCommit()
	}
	r.assertInvariants()
}
