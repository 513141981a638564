package core

import (
	"errors"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// Issue 14's split log, step by step. A candidate's own promise is not durable yet when two
// peer promises arrive; it must not lead on them, or a crash lets it reuse its ballot in the
// next life and propose a second value at a slot where an acceptor holds the first one in the
// same ballot (that acceptor takes the second Accept for a retransmission and acks it).
//
// Scripted by hand: R1's Ready is taken (its Prepares leave) but never persisted before it
// crashes.
func TestBallotNotReusedAfterCrashBeforeOwnPromiseIsDurable(t *testing.T) {
	c := newTestCluster(t, 3)
	r1 := c.nodes[1]

	// 1. R1 campaigns in (1,1); its Prepares leave at once, its own promise is not durable.
	r1.r.Campaign()
	rd := r1.r.Ready()
	if rd.HardState.Promised != ballot(1, 1) {
		t.Fatalf("campaign ballot %v, want (1,1)", rd.HardState.Promised)
	}
	c.net = append(c.net, rd.Messages...) // the persist of rd never completes
	// 2. R2 and R3 promise; the promises reach R1.
	c.stepAll(c.takeNet())
	c.flushNodes(2, 3)
	c.stepAll(c.takeNet())
	slot, err := r1.r.Propose([]byte("X"))
	if err == nil {
		// Today's bug: R1 leads on two peer promises. X goes to R2 only, durably.
		if slot != 0 {
			t.Fatalf("X at slot %d, want 0", slot)
		}
		rdX := r1.r.Ready()
		c.stepAll(filter(rdX.Messages, func(m codec.Message) bool { return m.Type == codec.TypeAccept && m.To == 2 }))
		c.flushNodes(2)
		c.net = nil
	} else if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("propose X: %v", err)
	}
	// 3. R1 crashes before any of its own writes is durable.
	c.restart(1)
	c.net = nil
	if got := r1.r.Status().Promised; !got.IsZero() {
		t.Fatalf("R1 restarted with promised %v, want zero (nothing reached its disk)", got)
	}
	// 4. R1 campaigns again, now with R3 only; its promise is made durable this time.
	c.nodes[1].r.Campaign()
	c.deliver(isolate(2))
	if !r1.r.Status().IsLeader {
		t.Fatalf("R1 did not lead with R3: %+v", r1.r.Status())
	}
	// 5. Y at slot 0 reaches everyone; 6. the commit point too.
	c.propose(1, "Y")
	c.deliverAll()
	c.heartbeat(1, nil)
	c.heartbeat(1, nil)
	for id := uint32(1); id <= 3; id++ {
		c.wantApplied(id, "Y")
	}
}

// takeNet empties the network and returns what was in it.
func (c *testCluster) takeNet() []codec.Message {
	msgs := c.net
	c.net = nil
	return msgs
}

// stepAll hands each message to its replica (none is dropped).
func (c *testCluster) stepAll(msgs []codec.Message) {
	c.t.Helper()
	for _, m := range msgs {
		if err := c.nodes[m.To].r.Step(m); err != nil {
			c.t.Fatalf("step %v at %d: %v", m.Type, m.To, err)
		}
	}
}

func filter(msgs []codec.Message, keep func(codec.Message) bool) []codec.Message {
	var out []codec.Message
	for _, m := range msgs {
		if keep(m) {
			out = append(out, m)
		}
	}
	return out
}
