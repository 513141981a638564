package core

import (
	"math/rand/v2"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// testNode is a replica with an in-memory disk that persists instantly.
type testNode struct {
	r       *Replica
	cfg     Config
	hard    HardState
	entries map[uint64]codec.Entry
	applied [][]byte
	down    bool
}

// testCluster routes messages by hand so each test script decides what arrives when.
type testCluster struct {
	t     *testing.T
	nodes map[uint32]*testNode
	net   []codec.Message // sent, not yet delivered
}

func testConfig(id uint32, peers []uint32) Config {
	cfg := DefaultConfig(id, peers)
	cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.RetransmitTicks = 10, 2, 5
	cfg.Rand = rand.New(rand.NewPCG(uint64(id), 7))
	return cfg
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	var peers []uint32
	for i := 1; i <= n; i++ {
		peers = append(peers, uint32(i))
	}
	c := &testCluster{t: t, nodes: map[uint32]*testNode{}}
	for _, id := range peers {
		nd := &testNode{cfg: testConfig(id, peers), entries: map[uint64]codec.Entry{}}
		c.nodes[id] = nd
		c.restart(id)
	}
	return c
}

func (c *testCluster) persisted(id uint32) Persisted {
	nd := c.nodes[id]
	p := Persisted{HardState: nd.hard}
	for s := uint64(0); len(p.Entries) < len(nd.entries); s++ {
		if e, ok := nd.entries[s]; ok {
			p.Entries = append(p.Entries, e)
		}
	}
	return p
}

// restart rebuilds replica id from its disk alone (a crash loses nothing persisted).
func (c *testCluster) restart(id uint32) {
	c.t.Helper()
	nd := c.nodes[id]
	r, err := New(nd.cfg, c.persisted(id), nil)
	if err != nil {
		c.t.Fatalf("restart %d: %v", id, err)
	}
	nd.r, nd.applied, nd.down = r, nil, false
}

// flush runs every replica's Ready cycle until quiet: persist, send, apply, advance.
func (c *testCluster) flush() {
	for again := true; again; {
		again = false
		for id := uint32(1); int(id) <= len(c.nodes); id++ {
			if nd := c.nodes[id]; !nd.down && nd.r.HasReady() {
				again = true
				c.flushNodes(id)
			}
		}
	}
}

// flushNodes runs the Ready cycle of the given replicas only (persist, send, apply, advance)
// until each has nothing ready.
func (c *testCluster) flushNodes(ids ...uint32) {
	c.t.Helper()
	for _, id := range ids {
		nd := c.nodes[id]
		for nd.r.HasReady() {
			rd := nd.r.Ready()
			for _, e := range rd.Entries {
				nd.entries[e.Slot] = e
			}
			if rd.MustSaveHardState {
				nd.hard = rd.HardState
			}
			c.net = append(c.net, rd.Messages...)
			c.net = append(c.net, rd.MessagesAfterPersist...)
			for _, e := range rd.Chosen {
				if e.Slot != uint64(len(nd.applied)) {
					c.t.Fatalf("replica %d applied slot %d after %d", id, e.Slot, len(nd.applied))
				}
				nd.applied = append(nd.applied, e.Value)
			}
			nd.r.Advance(rd)
		}
	}
}

// deliver hands every queued message matching keep to its replica (others are dropped) and
// flushes, until nothing is left.
func (c *testCluster) deliver(keep func(m codec.Message) bool) {
	c.t.Helper()
	for c.flush(); len(c.net) > 0; c.flush() {
		msgs := c.net
		c.net = nil
		for _, m := range msgs {
			nd := c.nodes[m.To]
			if nd.down || keep != nil && !keep(m) {
				continue
			}
			if err := nd.r.Step(m); err != nil {
				c.t.Fatalf("step %v at %d: %v", m.Type, m.To, err)
			}
		}
	}
}

func (c *testCluster) deliverAll() { c.deliver(nil) }

// isolate returns a filter that drops every message to or from the given replicas.
func isolate(ids ...uint32) func(m codec.Message) bool {
	return func(m codec.Message) bool {
		for _, id := range ids {
			if m.From == id || m.To == id {
				return false
			}
		}
		return true
	}
}

func (c *testCluster) propose(id uint32, v string) uint64 {
	c.t.Helper()
	slot, err := c.nodes[id].r.Propose([]byte(v))
	if err != nil {
		c.t.Fatalf("propose %q at %d: %v", v, id, err)
	}
	return slot
}

func (c *testCluster) wantApplied(id uint32, want ...string) {
	c.t.Helper()
	got := c.nodes[id].applied
	if len(got) != len(want) {
		c.t.Fatalf("replica %d applied %q, want %q", id, got, want)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			c.t.Fatalf("replica %d applied %q, want %q", id, got, want)
		}
	}
}

// elect makes id the leader over every reachable replica.
func (c *testCluster) elect(id uint32, keep func(m codec.Message) bool) {
	c.t.Helper()
	c.nodes[id].r.Campaign()
	c.deliver(keep)
	if !c.nodes[id].r.Status().IsLeader {
		c.t.Fatalf("replica %d did not become leader: %+v", id, c.nodes[id].r.Status())
	}
}
