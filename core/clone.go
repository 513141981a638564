package core

import (
	"encoding/binary"
	"maps"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
)

// Clone and AppendFingerprint exist for the exhaustive explorer (core/explore), which branches
// a replica at every event and dedupes the states it reaches. clone_test.go lists every field of
// Replica (and of the structs inside it) and fails when one is added that this file does not
// know: a field missed here would make two different states look the same, and the explorer
// would silently skip part of the state space.

// Clone returns a deep copy of r that shares no mutable memory with it; the copy draws its
// randomness from rand. Stored values (slot values, message payloads, entries) are never
// modified once stored, so they are shared, and so are cfg.Peers and others, which New builds
// and nothing changes after; every map, slice and struct that core changes in place is
// copied. The Storage is the driver's and is shared.
func (r *Replica) Clone(rand Rand) *Replica {
	c := *r
	c.cfg.Rand = rand
	c.log = make(map[uint64]*slotState, len(r.log))
	for slot, st := range r.log {
		copied := *st
		c.log[slot] = &copied
	}
	c.phase1.promised = slices.Clone(r.phase1.promised)
	c.phase1.recovered = maps.Clone(r.phase1.recovered)
	c.preVote.granted = slices.Clone(r.preVote.granted)
	c.progress = slices.Clone(r.progress)
	c.unstable = slices.Clone(r.unstable)
	c.msgs = slices.Clone(r.msgs)
	c.msgsAfter = slices.Clone(r.msgsAfter)
	return &c
}

// AppendFingerprint appends to dst a canonical encoding of r's state: every field that can
// differ between two replicas of one configuration, maps in slot order. Two replicas with equal
// fingerprints behave identically on every input. The configuration (cfg, and others and
// quorum, which are derived from it) and the Storage are not state and are left out.
func (r *Replica) AppendFingerprint(dst []byte) []byte {
	dst = appendUint(dst, uint64(r.id))
	// Acceptor.
	dst = appendBallot(dst, r.promised)
	dst = appendBallot(dst, r.durablePromised)
	dst = appendUint(dst, uint64(len(r.log)))
	for _, slot := range slotsInOrder(r.log, r.logStart, r.logEnd) {
		st := r.log[slot]
		dst = appendUint(dst, slot)
		dst = appendBallot(dst, st.ballot)
		dst = appendValue(dst, st.value)
		dst = appendBallot(dst, st.durable)
	}
	dst = appendUint(dst, r.logStart, r.logEnd)
	dst = appendBallot(dst, r.run.ballot)
	dst = appendUint(dst, r.run.from, r.run.next)
	// Learner.
	dst = appendUint(dst, r.commit, r.handedNext, r.applied, uint64(r.retainedBytes), r.snapshotSlot)
	dst = appendBool(dst, r.catchUp.inflight)
	dst = appendUint(dst, uint64(r.catchUp.ticks), r.catchUp.wanted)
	// Proposer.
	dst = appendUint(dst, uint64(r.role), uint64(r.leader))
	dst = appendBallot(dst, r.ballot)
	dst = appendBallot(dst, r.highestSeen)
	dst = r.phase1.appendFingerprint(dst)
	dst = appendBallot(dst, r.preVote.ballot)
	dst = appendBools(dst, r.preVote.granted)
	dst = appendUint(dst, uint64(r.preVote.count))
	dst = appendUint(dst, r.next, uint64(r.inflightSum), uint64(len(r.progress)))
	for i := range r.progress {
		pr := &r.progress[i]
		dst = appendUint(dst, uint64(pr.id), pr.ackNext, pr.sendNext, uint64(pr.idleTicks))
		dst = appendBool(dst, pr.heard)
	}
	dst = appendUint(dst, r.selfAckNext)
	dst = appendBool(dst, r.flushNeeded)
	// Timers.
	dst = appendUint(dst, uint64(r.electionElapsed), uint64(r.electionTimeout), uint64(r.heartbeatElapsed),
		uint64(r.quorumElapsed), uint64(r.syncWaitTicks))
	// Output awaiting Ready.
	dst = appendEntries(dst, r.unstable)
	dst = appendMessages(dst, r.msgs)
	dst = appendMessages(dst, r.msgsAfter)
	dst = appendUint(dst, r.savableCommit, r.savedCommit)
	dst = appendBallot(dst, r.savedPromised)
	return appendUint(dst, uint64(r.readyOut), r.pendingInstall)
}

func (p *phase1State) appendFingerprint(dst []byte) []byte {
	dst = appendUint(dst, p.from)
	dst = appendBools(dst, p.promised)
	dst = appendUint(dst, uint64(p.count))
	dst = appendBool(dst, p.selfCounted)
	dst = appendUint(dst, uint64(len(p.recovered)))
	for _, slot := range slotsInOrder(p.recovered, p.from, p.recoveredEnd) {
		dst = appendEntry(dst, p.recovered[slot])
	}
	return appendUint(dst, p.recoveredEnd, uint64(p.elapsed))
}

// AppendFingerprint appends to dst a canonical encoding of every field of rd, the unexported
// commit point included: a driver holding Readies in flight (the explorer) must tell apart two
// that Advance would treat differently.
func (rd *Ready) AppendFingerprint(dst []byte) []byte {
	dst = appendBallot(dst, rd.HardState.Promised)
	dst = appendUint(dst, rd.HardState.Commit)
	dst = appendBool(dst, rd.MustSaveHardState)
	dst = appendEntries(dst, rd.Entries)
	dst = appendBool(dst, rd.MustSync)
	dst = appendMessages(dst, rd.Messages)
	dst = appendMessages(dst, rd.MessagesAfterPersist)
	dst = appendEntries(dst, rd.Chosen)
	return appendUint(dst, rd.SnapshotSlot, rd.commit)
}

// slotsInOrder returns m's keys in order. Every key is expected in [from, end), a range a few
// times the map's size at most, so scanning it beats sorting; any key outside it (a broken
// invariant) falls back to a sort, so the encoding stays complete.
func slotsInOrder[V any](m map[uint64]V, from, end uint64) []uint64 {
	if len(m) == 0 {
		return nil
	}
	keys := make([]uint64, 0, len(m))
	if end >= from && end-from <= 4*uint64(len(m)) {
		for slot := from; slot < end; slot++ {
			if _, ok := m[slot]; ok {
				keys = append(keys, slot)
			}
		}
		if len(keys) == len(m) {
			return keys
		}
	}
	return slices.Sorted(maps.Keys(m))
}

func appendUint(dst []byte, values ...uint64) []byte {
	for _, v := range values {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func appendBools(dst []byte, bs []bool) []byte {
	dst = appendUint(dst, uint64(len(bs)))
	for _, b := range bs {
		dst = appendBool(dst, b)
	}
	return dst
}

func appendBallot(dst []byte, b codec.Ballot) []byte {
	return appendUint(dst, b.Round, uint64(b.Replica))
}

// appendValue is length-prefixed, so a nil and an empty value (both no-ops) encode alike.
func appendValue(dst, v []byte) []byte {
	dst = appendUint(dst, uint64(len(v)))
	return append(dst, v...)
}

func appendEntry(dst []byte, e codec.Entry) []byte {
	dst = appendUint(dst, e.Slot)
	dst = appendBallot(dst, e.Ballot)
	return appendValue(dst, e.Value)
}

func appendEntries(dst []byte, es []codec.Entry) []byte {
	dst = appendUint(dst, uint64(len(es)))
	for _, e := range es {
		dst = appendEntry(dst, e)
	}
	return dst
}

// appendMessages encodes every field of each message, whether or not its type carries it on
// the wire: core reads what it wrote.
func appendMessages(dst []byte, ms []codec.Message) []byte {
	dst = appendUint(dst, uint64(len(ms)))
	for i := range ms {
		m := &ms[i]
		dst = appendUint(dst, uint64(m.Type), uint64(m.From), uint64(m.To))
		dst = appendBallot(dst, m.Ballot)
		dst = appendUint(dst, m.Slot, m.Commit, m.Count, uint64(len(m.Values)))
		for _, v := range m.Values {
			dst = appendValue(dst, v)
		}
		dst = appendEntries(dst, m.Entries)
		dst = appendUint(dst, m.Offset, m.Total, uint64(m.Checksum))
		dst = appendValue(dst, m.Data)
	}
	return dst
}
