package core

import (
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// Asynchronous persistence: the leader takes a second Ready (and sends its Accepts) while the
// first is still persisting; its own vote for a slot counts only from the Advance of the Ready
// that persisted it, and Readies are advanced in order.
func TestLeaderOwnVoteCountsOnlyAfterItsReadyIsAdvanced(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	leader := c.nodes[1].r
	c.propose(1, "a")
	first := leader.Ready()
	c.propose(1, "b")
	if !leader.HasReady() {
		t.Fatal("no second Ready while the first persists: proposals would wait for the fsync")
	}
	second := leader.Ready()
	if len(first.Entries) != 1 || len(second.Entries) != 1 || second.Entries[0].Slot != first.Entries[0].Slot+1 {
		t.Fatalf("entries %+v then %+v, want one slot each, consecutive", first.Entries, second.Entries)
	}
	accepts := 0
	for _, m := range append(first.Messages, second.Messages...) {
		if m.Type == codec.TypeAccept {
			accepts++
		}
	}
	if accepts != 4 {
		t.Fatalf("%d Accepts sent before any persist finished, want 4 (2 slots x 2 peers)", accepts)
	}
	// Replica 2 accepts slot 0 only; with the leader's vote not yet durable nothing is chosen.
	if err := leader.Step(codec.Message{Type: codec.TypeAccepted, From: 2, To: 1, Ballot: leader.Status().Ballot, Slot: 0}); err != nil {
		t.Fatal(err)
	}
	if got := leader.Status().Commit; got != 0 {
		t.Fatalf("commit %d before the leader's own entry is durable, want 0", got)
	}
	leader.Advance(first)
	if got := leader.Status().Commit; got != 1 {
		t.Fatalf("commit %d after the first Ready is advanced, want 1 (leader + replica 2)", got)
	}
	leader.Advance(second)
	if got := leader.Status().Commit; got != 1 {
		t.Fatalf("commit %d: slot 1 has only the leader's vote, want 1", got)
	}
}

// A follower accepts the next Accept while its previous batch persists; each Accepted leaves
// in the MessagesAfterPersist of the Ready that persists what it vouches for.
func TestFollowerAcceptsWhileEarlierBatchPersists(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	f := c.nodes[2].r
	b := c.nodes[1].r.Status().Ballot
	step := func(slot uint64, v string) Ready {
		t.Helper()
		if err := f.Step(codec.Message{Type: codec.TypeAccept, From: 1, To: 2, Ballot: b, Slot: slot, Values: [][]byte{[]byte(v)}}); err != nil {
			t.Fatal(err)
		}
		return f.Ready()
	}
	first, second := step(0, "a"), step(1, "b")
	for i, rd := range []Ready{first, second} {
		if len(rd.Entries) != 1 || len(rd.MessagesAfterPersist) != 1 {
			t.Fatalf("Ready %d: %d entries, %d after-persist messages, want 1 and 1", i, len(rd.Entries), len(rd.MessagesAfterPersist))
		}
		if m := rd.MessagesAfterPersist[0]; m.Type != codec.TypeAccepted || m.Slot != uint64(i) {
			t.Fatalf("Ready %d vouches with %v for slot %d, want Accepted for slot %d", i, m.Type, m.Slot, i)
		}
	}
	f.Advance(first)
	f.Advance(second)
	if f.HasReady() {
		t.Fatalf("a Ready left after both were advanced: %+v", f.Ready())
	}
}

// An Accept never carries more than AcceptValuesMax values (a peer's codec refuses bigger).
func TestAcceptCarriesAtMostAcceptValuesMax(t *testing.T) {
	c := newTestCluster(t, 3)
	for _, nd := range c.nodes {
		nd.cfg.Window, nd.cfg.AcceptValuesMax = 10, 3
	}
	for id := range c.nodes {
		c.restart(id)
	}
	c.elect(1, nil)
	for i := range 10 {
		c.propose(1, string(rune('a'+i)))
	}
	rd := c.nodes[1].r.Ready()
	covered := map[uint32]int{}
	for _, m := range rd.Messages {
		if m.Type != codec.TypeAccept {
			continue
		}
		if len(m.Values) > 3 {
			t.Fatalf("Accept to %d carries %d values, over AcceptValuesMax 3", m.To, len(m.Values))
		}
		covered[m.To] += len(m.Values)
	}
	if covered[2] != 10 || covered[3] != 10 {
		t.Fatalf("Accepts cover %v values per peer, want 10 each", covered)
	}
}

// Applied slots kept for catch-up are bounded by bytes too, not only by count: RetainSlots of
// large batches would otherwise hold RetainSlots x ValueBytesMax.
func TestRetainedAppliedSlotsBoundedByBytes(t *testing.T) {
	c := newTestCluster(t, 3)
	for _, nd := range c.nodes {
		nd.cfg.RetainSlots, nd.cfg.RetainBytesMax = 1000, 250
	}
	for id := range c.nodes {
		c.restart(id)
	}
	c.elect(1, nil)
	value := string(make([]byte, 100))
	for range 10 {
		c.propose(1, value)
		c.deliverAll()
	}
	c.heartbeat(1, nil)
	for id, nd := range c.nodes {
		r := nd.r
		if r.applied != 10 {
			t.Fatalf("replica %d applied %d slots, want 10", id, r.applied)
		}
		if r.retainedBytes > 250 || r.applied-r.logStart > 2 || r.retainedBytes != r.bytesIn(r.logStart, r.applied) {
			t.Fatalf("replica %d keeps slots [%d, %d) = %d bytes (counted %d), want at most 2 slots, 250 bytes",
				id, r.logStart, r.applied, r.bytesIn(r.logStart, r.applied), r.retainedBytes)
		}
	}
}
