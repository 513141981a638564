package sim

import (
	"bytes"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// The simulator's own checks, and the feed of core/check. Every message sent, every entry
// that reaches a disk, every restart, every value handed out as chosen, and who leads each
// tick go to w.history (core/check), which watches values and ballots across every replica and
// every life; the checks here watch what only the simulator sees (its disks, its state
// machines, the promise a replica holds in memory).

// sendChecked: a message may vouch only for what the disk holds when it leaves. A Promise, an
// Accepted and an acknowledging HeartbeatReply vouch for their ballot (promised, or accepted
// at some slot); an Accepted or acknowledging HeartbeatReply also for its slot in that ballot.
// The driver sends Messages at once and MessagesAfterPersist once their persist is durable;
// the first must vouch for nothing new, the second only for what the disk now holds, and one
// check against the disk covers both. The ballot must be in the hard state: entries accepted
// in it do not keep a promise for good, since a snapshot covering them removes them (seed
// 39326/3: a restart recovered promise (3,3) from an entry alone, acked in it, compacted the
// entry away, and the next restart promised only (2,3)).
func (w *world) sendChecked(n *node, m *codec.Message) {
	if vouches(m) {
		if durable := n.disk.hardState.Promised; durable.Less(m.Ballot) {
			w.fail("durable before send", "replica %d sent %v for %v with only %v in its hard state",
				n.id, m.Type, m.Ballot, durable)
		}
		if n.vouched.Less(m.Ballot) {
			n.vouched = m.Ballot
		}
	}
	if m.Type == codec.TypeAccepted || m.Type == codec.TypeHeartbeatReply && !m.Ballot.IsZero() {
		// The acknowledged slot is on disk in the ballot (or a later one), unless a snapshot
		// covers it (chosen, its entry compacted away).
		if e, ok := n.disk.entries[m.Slot]; m.Slot >= n.disk.newestSnapshotSlot() && (!ok || e.Ballot.Less(m.Ballot)) {
			w.fail("durable before send", "replica %d acked slot %d in %v, disk holds %+v", n.id, m.Slot, m.Ballot, e)
		}
	}
	w.send(n, *m)
}

func vouches(m *codec.Message) bool {
	return m.Type == codec.TypePromise || m.Type == codec.TypeAccepted ||
		m.Type == codec.TypeHeartbeatReply && !m.Ballot.IsZero()
}

// writeEntry: e reached n's disk (the latest record for its slot wins).
func (w *world) writeEntry(n *node, e codec.Entry) {
	n.disk.entries[e.Slot] = e
	w.must(w.history.Durable(n.id, e))
}

func (w *world) writeHardState(n *node, hs core.HardState) {
	n.disk.hardState = hs
}

// restoreSnapshot replaces the state machine with a durable snapshot file (a restart, or an
// install), which must be intact and agree with the chosen log like any applied value, and
// truncates the log it covers.
func (w *world) restoreSnapshot(n *node, file *snapshotFile) {
	s, err := decodeSnapshot(file.data)
	if err != nil || s.slot() != file.slot {
		w.fail("snapshot intact", "replica %d's snapshot file of slot %d (%d bytes): %v", n.id, file.slot, len(file.data), err)
	}
	for i, v := range s.values {
		if i < len(w.global) && !bytes.Equal(w.global[i], v) {
			w.fail("one value per slot", "replica %d snapshot holds %x at slot %d, chosen was %x", n.id, v, i, w.global[i])
		}
	}
	n.state.restore(s)
	w.truncateBelow(n, file.slot)
}

// truncateBelow drops the disk's entries below slot, which a durable snapshot covers.
func (w *world) truncateBelow(n *node, slot uint64) {
	for k := range n.disk.entries {
		if k < slot {
			delete(n.disk.entries, k)
		}
	}
	w.history.Compacted(n.id, slot)
}

// checkPromised: a replica's promise never goes down within a life (across lives, restart
// checks it against what the replica vouched for). (The simulator's old check that a commit
// point passes a slot only when a majority of disks hold some entry there is gone: core/check's
// Chosen demands a majority holding that very value.)
func (w *world) checkPromised(n *node) {
	st := n.r.Status()
	if st.Promised.Less(n.promised) {
		w.fail("promised never goes down", "replica %d: promised went from %v to %v", n.id, n.promised, st.Promised)
	}
	n.promised = st.Promised
}

// checkLeaders tells the checker who leads (a ballot led in one life is never used again) and
// counts leader changes: a (leader, ballot) pair not leading in the previous tick.
func (w *world) checkLeaders() {
	var now []codec.Ballot
	for _, n := range w.nodes {
		if !n.live() {
			continue
		}
		if st := n.r.Status(); st.IsLeader {
			w.must(w.history.Led(n.id, st.Ballot))
			now = append(now, st.Ballot)
			if !slices.Contains(w.leaders, st.Ballot) {
				w.res.LeaderChanges++
			}
		}
	}
	w.leaders = now
}
