package core

import (
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// A value accepted by just one acceptor before its leader died survives: the next leader's
// phase 1 finds it and proposes it again.
func TestAcceptedValueSurvivesNewLeader(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	c.propose(1, "X")
	// The Accept reaches replica 2 only; then replica 1 crashes.
	c.deliver(func(m codec.Message) bool { return m.Type == codec.TypeAccept && m.To == 2 })
	c.nodes[1].down = true
	if got := c.nodes[2].entries[0]; string(got.Value) != "X" {
		t.Fatalf("replica 2 persisted %+v, want X", got)
	}
	c.elect(3, nil)
	c.deliverAll()
	c.heartbeat(3, nil)
	c.wantApplied(3, "X")
	c.wantApplied(2, "X")
}

// A value accepted in an old ballot next to a gap is kept; the gap becomes a no-op, and a
// later leader changes nothing that was chosen.
func TestChosenValueSurvivesLeaderChangesAndGaps(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	c.propose(1, "a")
	c.flush()
	c.propose(1, "b")
	c.flush()
	// Slot 0's Accept reaches nobody; slot 1's reaches replica 2 (which cannot acknowledge it
	// cumulatively without slot 0). Then the leader dies.
	c.deliver(func(m codec.Message) bool { return m.Type != codec.TypeAccept || m.To == 2 && m.Slot == 1 })
	c.nodes[1].down = true
	c.elect(2, nil)
	c.deliverAll()
	c.heartbeat(2, nil)
	// Slot 0 was lost (only the dead leader had it): a no-op fills it.
	c.wantApplied(2, "", "b")
	c.restart(1)
	// Replica 1's first ballot (2,1) is below the promised (2,2): the Nack makes it step down
	// and catch up; its next campaign outbids.
	c.nodes[1].r.Campaign()
	c.deliverAll()
	c.wantApplied(1, "", "b")
	c.elect(1, nil)
	c.deliverAll()
	c.heartbeat(1, nil)
	for id := uint32(1); id <= 3; id++ {
		c.wantApplied(id, "", "b")
	}
}

// Durable before send: a Promise and an Accepted leave only after the persist; the leader's
// Accepts leave at once, but its own vote counts only after Advance.
func TestDurableBeforeSendAndLeaderVoteAfterAdvance(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	leader := c.nodes[1].r
	c.propose(1, "v")
	rd := leader.Ready()
	if len(rd.Entries) != 1 || !rd.MustSync {
		t.Fatalf("leader's own acceptance not persisted durably: %+v", rd)
	}
	for _, m := range rd.Messages {
		if m.Type == codec.TypePromise || m.Type == codec.TypeAccepted {
			t.Fatalf("%v in Messages: it must wait for the persist", m.Type)
		}
	}
	// Replica 2's Accepted arrives before the leader's own persist finished.
	follower := c.nodes[2].r
	if err := follower.Step(rd.Messages[0]); err != nil {
		t.Fatal(err)
	}
	frd := follower.Ready()
	if len(frd.Messages) != 0 {
		t.Fatalf("follower sent %+v before its persist", frd.Messages)
	}
	ack := wantOne(t, frd.MessagesAfterPersist, codec.TypeAccepted, leader.Status().Ballot)
	follower.Advance(frd)
	if err := leader.Step(ack); err != nil {
		t.Fatal(err)
	}
	if st := leader.Status(); st.Commit != 0 {
		t.Fatalf("commit %d with one durable vote of the two needed", st.Commit)
	}
	leader.Advance(rd) // the leader's own entry is durable now: 2 of 3
	if st := leader.Status(); st.Commit != 1 {
		t.Fatalf("commit %d after the leader's own persist, want 1", st.Commit)
	}
}
