package core

import (
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

func ballot(round uint64, id uint32) codec.Ballot { return codec.Ballot{Round: round, Replica: id} }

// heartbeat makes leader id broadcast its commit point (as its timer would) and delivers.
func (c *testCluster) heartbeat(id uint32, keep func(m codec.Message) bool) {
	for range c.nodes[id].cfg.HeartbeatTicks {
		c.nodes[id].r.Tick()
	}
	c.deliver(keep)
}

// Happy path: one leader, three acceptors, values chosen in order and applied everywhere.
func TestHappyPathThreeReplicas(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	for i, v := range []string{"a", "b", "c"} {
		if slot := c.propose(1, v); slot != uint64(i) {
			t.Fatalf("propose %q got slot %d, want %d", v, slot, i)
		}
	}
	c.deliverAll()
	c.wantApplied(1, "a", "b", "c")
	c.heartbeat(1, nil) // the commit point reaches the followers
	c.wantApplied(2, "a", "b", "c")
	c.wantApplied(3, "a", "b", "c")
	if st := c.nodes[2].r.Status(); st.Leader != 1 || st.Commit != 3 || st.IsLeader {
		t.Fatalf("follower status %+v", st)
	}
}

// A one-replica cluster chooses on its own durable vote.
func TestSingleReplicaCluster(t *testing.T) {
	c := newTestCluster(t, 1)
	c.elect(1, nil)
	c.propose(1, "solo")
	c.deliverAll()
	c.wantApplied(1, "solo")
}

// The acceptor rules as a transcript, single-decree on slot 0: Proposer 1 Prepare(1),
// Proposer 2 Prepare(2), Accept(1, X) is refused with the higher ballot, Accept(2, Y) is
// accepted.
func TestAcceptorTranscriptTwoProposers(t *testing.T) {
	c := newTestCluster(t, 3)
	acc := c.nodes[3].r
	step := func(m codec.Message) Ready {
		t.Helper()
		m.To = 3
		if err := acc.Step(m); err != nil {
			t.Fatal(err)
		}
		rd := acc.Ready()
		acc.Advance(rd)
		return rd
	}
	rd := step(codec.Message{Type: codec.TypePrepare, From: 1, Ballot: ballot(1, 1)})
	wantOne(t, rd.MessagesAfterPersist, codec.TypePromise, ballot(1, 1))
	if !rd.MustSaveHardState || !rd.MustSync || rd.HardState.Promised != ballot(1, 1) {
		t.Fatalf("promise not persisted durably first: %+v", rd)
	}
	rd = step(codec.Message{Type: codec.TypePrepare, From: 2, Ballot: ballot(1, 2)})
	wantOne(t, rd.MessagesAfterPersist, codec.TypePromise, ballot(1, 2))

	// Accept(1, X): below the promise of ballot 2, refused; the Nack carries ballot 2.
	rd = step(codec.Message{Type: codec.TypeAccept, From: 1, Ballot: ballot(1, 1), Values: [][]byte{[]byte("X")}})
	wantOne(t, rd.Messages, codec.TypeNack, ballot(1, 2))
	if len(rd.Entries) != 0 || len(rd.MessagesAfterPersist) != 0 {
		t.Fatalf("refused Accept stored or acknowledged something: %+v", rd)
	}
	// Accept(2, Y): accepted, stored durably, acknowledged only after the persist.
	rd = step(codec.Message{Type: codec.TypeAccept, From: 2, Ballot: ballot(1, 2), Values: [][]byte{[]byte("Y")}})
	ack := wantOne(t, rd.MessagesAfterPersist, codec.TypeAccepted, ballot(1, 2))
	if ack.Slot != 0 || len(rd.Entries) != 1 || string(rd.Entries[0].Value) != "Y" || !rd.MustSync {
		t.Fatalf("Accept(2, Y): ack %+v, ready %+v", ack, rd)
	}
	// A later Prepare(3) learns Y in ballot 2.
	rd = step(codec.Message{Type: codec.TypePrepare, From: 1, Ballot: ballot(2, 1)})
	p := wantOne(t, rd.MessagesAfterPersist, codec.TypePromise, ballot(2, 1))
	if len(p.Entries) != 1 || p.Entries[0].Ballot != ballot(1, 2) || string(p.Entries[0].Value) != "Y" {
		t.Fatalf("promise reports %+v, want Y accepted in ballot 2", p.Entries)
	}
}

// Single decree with two proposers: both campaign for slot 0 at once, each with its own value;
// whichever interleaving, exactly one value is chosen and every replica applies it.
func TestSingleDecreeTwoProposersOneValue(t *testing.T) {
	for order := range 4 {
		c := newTestCluster(t, 3)
		c.nodes[1].r.Campaign()
		c.nodes[2].r.Campaign() // the same round: ballot (1,2) beats (1,1)
		c.flush()
		// Deliver in one of several orders: reversed or not, and replica 1's Prepare first or not.
		msgs := c.net
		c.net = nil
		if order&1 == 1 {
			for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
				msgs[i], msgs[j] = msgs[j], msgs[i]
			}
		}
		c.net = msgs
		c.deliverAll()
		for id := uint32(1); id <= 2; id++ {
			if c.nodes[id].r.Status().IsLeader {
				c.propose(id, map[uint32]string{1: "X", 2: "Y"}[id])
			}
		}
		if order&2 == 2 {
			c.nodes[1].r.Campaign() // a third phase 1 races the Accepts
		}
		c.deliverAll()
		leader := uint32(0)
		for id := uint32(1); id <= 2; id++ {
			if c.nodes[id].r.Status().IsLeader {
				if leader != 0 {
					t.Fatalf("order %d: replicas %d and %d both lead after delivering everything", order, leader, id)
				}
				leader = id
			}
		}
		if leader == 0 {
			t.Fatalf("order %d: no leader", order)
		}
		if c.nodes[leader].r.Status().NextSlot == 0 {
			c.propose(leader, "Z") // the racing phase 1 found nothing accepted: slot 0 is free
			c.deliverAll()
		}
		c.heartbeat(leader, nil)
		want := string(c.nodes[leader].applied[0])
		if want != "X" && want != "Y" && want != "Z" {
			t.Fatalf("order %d: slot 0 chose %q, never proposed", order, want)
		}
		for id := uint32(1); id <= 3; id++ {
			c.wantApplied(id, want)
		}
	}
}

func wantOne(t *testing.T, msgs []codec.Message, typ codec.MsgType, b codec.Ballot) codec.Message {
	t.Helper()
	if len(msgs) != 1 || msgs[0].Type != typ || msgs[0].Ballot != b {
		t.Fatalf("got %+v, want one %v for %v", msgs, typ, b)
	}
	return msgs[0]
}
