package core

import (
	"bytes"
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
)

// The acceptor's handlers. Every Promise and Accepted goes to msgsAfter: it vouches for state
// that must be durable before it leaves.

// onPrepare: promise a higher ballot and report every accepted entry from m.Slot, or refuse.
func (r *Replica) onPrepare(m *codec.Message) {
	if m.Ballot.Less(r.promised) {
		r.nack(m.From)
		return
	}
	if m.Slot < r.logStart {
		// Entries below logStart left memory: a promise could not report them, so the
		// candidate must catch up first. The Nack's Slot (our commit) says how far.
		r.nack(m.From)
		return
	}
	if m.Ballot != r.promised { // strictly higher: a new promise
		r.promise(m.Ballot)
		r.stepDownIfPreempted(m.Ballot)
	} // else a retransmitted Prepare of the ballot we promised: promise again
	r.leader = 0
	r.electionElapsed = 0 // give the candidate a full timeout to finish phase 1
	reply := codec.Message{Type: codec.TypePromise, From: r.id, To: m.From, Ballot: m.Ballot,
		Slot: m.Slot, Commit: r.commit}
	for s := m.Slot; s < r.logEnd; s++ {
		if st := r.log[s]; st != nil {
			reply.Entries = append(reply.Entries, codec.Entry{Slot: s, Ballot: st.ballot, Value: st.value})
		}
	}
	r.msgsAfter = append(r.msgsAfter, reply)
}

// promise raises the promised ballot; the next Ready saves it durably.
func (r *Replica) promise(b codec.Ballot) {
	if b.Less(r.promised) || b == ChosenBallot {
		panic(fmt.Sprintf("core: replica %d: promise %v would lower promised %v", r.id, b, r.promised))
	}
	r.promised = b
}

func (r *Replica) nack(to uint32) {
	r.msgs = append(r.msgs, codec.Message{Type: codec.TypeNack, From: r.id, To: to,
		Ballot: r.promised, Slot: r.commit})
}

// onAccept: accept consecutive values in m.Ballot if it is not below our promise, learn the
// sender's commit point, and acknowledge cumulatively.
func (r *Replica) onAccept(m *codec.Message) {
	if m.Ballot.Less(r.promised) {
		r.nack(m.From)
		return
	}
	if r.promised.Less(m.Ballot) {
		r.promise(m.Ballot)
	}
	r.stepDownIfPreempted(m.Ballot)
	r.leader, r.electionElapsed = m.From, 0
	for i, v := range m.Values {
		r.acceptSlot(m.Slot+uint64(i), m.Ballot, v)
	}
	r.learnCommit(m.From, m.Ballot, m.Commit)
	if last, ok := r.extendRun(m.Ballot, m.Commit); ok {
		r.msgsAfter = append(r.msgsAfter, codec.Message{Type: codec.TypeAccepted, From: r.id,
			To: m.From, Ballot: m.Ballot, Slot: last})
	}
}

// acceptSlot stores (slot, b, v) unless the slot is already chosen here with another value
// (then the sender is a stale leader and the slot is simply not acknowledged).
func (r *Replica) acceptSlot(slot uint64, b codec.Ballot, v []byte) {
	if slot < r.logStart {
		return // chosen, applied and dropped: nothing to vouch for
	}
	st := r.log[slot]
	if st != nil {
		if st.ballot == b {
			return // duplicate or retransmission
		}
		if b.Less(st.ballot) && st.ballot != ChosenBallot {
			panic(fmt.Sprintf("core: replica %d: slot %d accepted in %v above promise %v",
				r.id, slot, st.ballot, r.promised))
		}
		if slot < r.commit {
			if !bytes.Equal(st.value, v) {
				return // a different value for a chosen slot: never store it
			}
			v = st.value // same value, now accepted in b: keep our copy
		}
	}
	if (st == nil || slot >= r.commit) && !r.cfg.StepValuesOwned {
		v = bytes.Clone(v) // message buffers are reused by the driver
	}
	r.storeSlot(slot, b, v)
}

// storeSlot records (slot, b, v) in memory and queues it for the next Ready.
func (r *Replica) storeSlot(slot uint64, b codec.Ballot, v []byte) {
	st := r.log[slot]
	if st == nil {
		st = &slotState{}
		r.log[slot] = st
	}
	st.ballot, st.value = b, v
	r.logEnd = max(r.logEnd, slot+1)
	r.unstable = append(r.unstable, codec.Entry{Slot: slot, Ballot: b, Value: v})
}

// extendRun returns the highest slot S such that this replica has accepted, in b, every slot
// from from (the leader's commit point, at or below the leader's phase-2 start) through S.
func (r *Replica) extendRun(b codec.Ballot, from uint64) (uint64, bool) {
	if r.run.ballot != b || from < r.run.from || from > r.run.next {
		r.run = ackRun{ballot: b, from: from, next: from}
	}
	for st := r.log[r.run.next]; st != nil && st.ballot == b; st = r.log[r.run.next] {
		r.run.next++
	}
	if r.run.next == r.run.from {
		return 0, false
	}
	return r.run.next - 1, true
}

// onHeartbeat: a leader's keep-alive and commit point. Refuse it if we promised higher, so a
// stale leader learns it lost.
func (r *Replica) onHeartbeat(m *codec.Message) {
	if m.Ballot.Less(r.promised) {
		r.nack(m.From)
		return
	}
	r.stepDownIfPreempted(m.Ballot)
	r.leader, r.electionElapsed = m.From, 0
	r.learnCommit(m.From, m.Ballot, m.Commit)
	reply := codec.Message{Type: codec.TypeHeartbeatReply, From: r.id, To: m.From, Commit: r.commit}
	if last, ok := r.extendRun(m.Ballot, m.Commit); ok {
		// A non-zero Ballot makes the reply a cumulative ack (recovers lost Accepteds).
		reply.Ballot, reply.Slot = m.Ballot, last
	}
	r.msgsAfter = append(r.msgsAfter, reply)
}
