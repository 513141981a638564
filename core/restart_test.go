package core

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// Restart keeps promises: the promised ballot comes back from the hard state, and from the
// highest accepted ballot when the hard state write was lost.
func TestRestartKeepsPromise(t *testing.T) {
	c := newTestCluster(t, 3)
	acc := c.nodes[3]
	if err := acc.r.Step(codec.Message{Type: codec.TypePrepare, From: 2, To: 3, Ballot: ballot(5, 2)}); err != nil {
		t.Fatal(err)
	}
	c.flush()
	c.net = nil
	c.restart(3)
	if got := acc.r.Status().Promised; got != ballot(5, 2) {
		t.Fatalf("promised %v after restart, want (5,2)", got)
	}
	if err := acc.r.Step(codec.Message{Type: codec.TypeAccept, From: 1, To: 3, Ballot: ballot(4, 1), Values: [][]byte{[]byte("old")}}); err != nil {
		t.Fatal(err)
	}
	rd := acc.r.Ready()
	acc.r.Advance(rd)
	wantOne(t, rd.Messages, codec.TypeNack, ballot(5, 2))

	// Lose the hard state but keep an entry accepted in (7,1): the promise is at least (7,1).
	p := Persisted{Entries: []codec.Entry{{Slot: 0, Ballot: ballot(7, 1), Value: []byte("x")}}}
	r, err := New(testConfig(3, []uint32{1, 2, 3}), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Status().Promised; got != ballot(7, 1) {
		t.Fatalf("promised %v, want the accepted ballot (7,1)", got)
	}
}

// A promise recovered from an entry alone (its hard state was lost in the crash) is saved in
// the hard state by the first Ready, before any message vouching for it leaves: a snapshot
// covering the entry removes it, and with it the only durable trace of the promise (seed
// 39326/3 in core/sim: replica 2 acked in (3,3), compacted the entry, restarted with (2,3)).
func TestRestartSavesPromiseRecoveredFromEntries(t *testing.T) {
	p := Persisted{HardState: HardState{Promised: ballot(2, 3)},
		Entries: []codec.Entry{{Slot: 0, Ballot: ballot(3, 3), Value: []byte("x")}}}
	r, err := New(testConfig(2, []uint32{1, 2, 3}), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Status().Promised; got != ballot(3, 3) {
		t.Fatalf("promised %v, want the accepted ballot (3,3)", got)
	}
	if err := r.Step(codec.Message{Type: codec.TypeHeartbeat, From: 3, To: 2, Ballot: ballot(3, 3)}); err != nil {
		t.Fatal(err)
	}
	rd := r.Ready()
	if !rd.MustSaveHardState || !rd.MustSync || rd.HardState.Promised != ballot(3, 3) {
		t.Fatalf("first Ready after restart: save %v sync %v hard state %+v, want (3,3) saved and synced",
			rd.MustSaveHardState, rd.MustSync, rd.HardState)
	}
	if len(rd.Messages) != 0 {
		t.Fatalf("messages leave before the promise is durable: %+v", rd.Messages)
	}
	wantOne(t, rd.MessagesAfterPersist, codec.TypeHeartbeatReply, ballot(3, 3))
	r.Advance(rd)
	if r.HasReady() {
		if rd := r.Ready(); rd.MustSaveHardState && rd.HardState.Promised != ballot(3, 3) {
			t.Fatalf("a later Ready saves promise %v", rd.HardState.Promised)
		}
	}
}

// Restart resumes the learner from the persisted commit point and re-hands out chosen slots.
func TestRestartReappliesChosenFromPersistedState(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	c.propose(1, "a")
	c.propose(1, "b")
	c.deliverAll()
	c.heartbeat(1, nil)
	c.heartbeat(1, nil) // a second Ready cycle persists the commit point
	c.restart(2)
	c.flush()
	c.wantApplied(2, "a", "b")
	if got := c.nodes[2].hard.Commit; got != 2 {
		t.Fatalf("persisted commit %d, want 2", got)
	}
}

func TestNewRejectsInconsistentPersistedState(t *testing.T) {
	cfg := testConfig(1, []uint32{1, 2, 3})
	_, err := New(cfg, Persisted{HardState: HardState{Commit: 2}, Entries: []codec.Entry{{Slot: 0, Ballot: ballot(1, 1)}}}, nil)
	var refused *PersistedStateError
	if !errors.As(err, &refused) || refused.Slot != 1 {
		t.Fatalf("commit 2 with slot 1 missing: %v, want a PersistedStateError naming slot 1", err)
	}
	_, err = New(cfg, Persisted{Entries: []codec.Entry{{Slot: 0, Ballot: ballot(1, 1)}, {Slot: 0, Ballot: ballot(2, 1)}}}, nil)
	if err == nil {
		t.Fatal("duplicate slot was accepted")
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	base := func() Config { return testConfig(1, []uint32{1, 2, 3}) }
	cases := []struct {
		field string
		edit  func(*Config)
	}{
		{"ID", func(c *Config) { c.ID = 0 }},
		{"Peers", func(c *Config) { c.Peers = []uint32{2, 3} }},
		{"Peers", func(c *Config) { c.Peers = []uint32{1, 1} }},
		{"HeartbeatTicks", func(c *Config) { c.HeartbeatTicks = 0 }},
		{"ElectionTicks", func(c *Config) { c.ElectionTicks = c.HeartbeatTicks }},
		{"RetransmitTicks", func(c *Config) { c.RetransmitTicks = 0 }},
		{"Window", func(c *Config) { c.Window = 0 }},
		{"ValueBytesMax", func(c *Config) { c.ValueBytesMax = 0 }},
		{"InflightBytesMax", func(c *Config) { c.InflightBytesMax = c.ValueBytesMax - 1 }},
		{"CatchUpSlotsMax", func(c *Config) { c.CatchUpSlotsMax = 0 }},
		{"CatchUpBytesMax", func(c *Config) { c.CatchUpBytesMax = 0 }},
		{"RetainSlots", func(c *Config) { c.RetainSlots = -1 }},
		{"Rand", func(c *Config) { c.Rand = nil }},
	}
	for _, tc := range cases {
		cfg := base()
		tc.edit(&cfg)
		_, err := New(cfg, Persisted{}, nil)
		if !errors.Is(err, ErrInvalidConfig) || !containsWord(err.Error(), tc.field) {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
	cfg := base()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w {
			return true
		}
	}
	return false
}

// Bad input gets an error naming what was wrong, never a panic, and changes nothing.
func TestStepRejectsMalformedMessages(t *testing.T) {
	c := newTestCluster(t, 3)
	r := c.nodes[1].r
	big := make([]byte, c.nodes[1].cfg.ValueBytesMax+1)
	cases := []codec.Message{
		{Type: codec.TypePrepare, From: 2, To: 9, Ballot: ballot(1, 2)},
		{Type: codec.TypePrepare, From: 7, To: 1, Ballot: ballot(1, 7)},
		{Type: codec.TypePrepare, From: 1, To: 1, Ballot: ballot(1, 1)},
		{Type: codec.TypePrepare, From: 2, To: 1, Ballot: ballot(1, 3)},
		{Type: codec.TypeAccept, From: 2, To: 1, Ballot: ballot(0, 2)},
		{Type: codec.TypeAccept, From: 2, To: 1, Ballot: ballot(1, 2), Values: [][]byte{big}},
		{Type: codec.TypeAccept, From: 2, To: 1, Ballot: ballot(1, 2), Slot: 1<<64 - 1, Values: [][]byte{{1}, {2}}},
		{Type: codec.TypePromise, From: 2, To: 1, Ballot: ballot(1, 1), Entries: []codec.Entry{{Ballot: ballot(2, 3)}}},
		{Type: codec.MsgType(99), From: 2, To: 1},
	}
	before := r.Status()
	for i, m := range cases {
		if err := r.Step(m); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("case %d (%v): got %v, want ErrInvalidMessage", i, m.Type, err)
		}
	}
	if r.HasReady() || r.Status() != before {
		t.Fatalf("rejected messages changed state: %+v", r.Status())
	}
}

func TestProposeLimits(t *testing.T) {
	c := newTestCluster(t, 3)
	if _, err := c.nodes[1].r.Propose([]byte("x")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower propose: %v", err)
	}
	c.nodes[1].cfg.Window = 2
	c.restart(1)
	c.elect(1, nil)
	r := c.nodes[1].r
	if _, err := r.Propose(make([]byte, c.nodes[1].cfg.ValueBytesMax+1)); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("oversized value: %v", err)
	}
	c.propose(1, "a")
	c.propose(1, "b")
	if _, err := r.Propose([]byte("c")); !errors.Is(err, ErrWindowFull) {
		t.Fatalf("third proposal in a window of 2: %v", err)
	}
	c.deliverAll()
	c.propose(1, "c") // the window moved once a and b were chosen
}

// Catch-up: a replica cut off while slots were chosen fetches them, from memory and (below
// the retained slots) from Storage, in several bounded replies.
func TestCatchUpAfterPartition(t *testing.T) {
	c := newTestCluster(t, 3)
	for id := range c.nodes {
		c.nodes[id].cfg.RetainSlots = 0
		c.nodes[id].cfg.CatchUpSlotsMax = 2
	}
	c.restart(1)
	c.elect(1, nil)
	var want []string
	for i := range 5 {
		v := string(rune('a' + i))
		want = append(want, v)
		c.propose(1, v)
		c.deliver(isolate(3))
	}
	c.heartbeat(1, isolate(3))
	c.nodes[1].r.storage = appliedStorage{c.nodes[1]}
	c.heartbeat(1, nil)
	c.deliverAll()
	c.wantApplied(3, want...)
}

type appliedStorage struct{ nd *testNode }

func (s appliedStorage) Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	for i := from; i < uint64(len(s.nd.applied)) && maxSlots > 0; i, maxSlots = i+1, maxSlots-1 {
		dst = append(dst, s.nd.applied[i])
	}
	return dst, nil
}

// Below the compaction point a catch-up request is answered with the snapshot slot.
func TestCatchUpBelowCompactionSignalsSnapshot(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1, nil)
	for _, v := range []string{"a", "b", "c"} {
		c.propose(1, v)
		c.deliver(isolate(3))
	}
	c.nodes[1].r.Compact(2)
	c.heartbeat(1, func(m codec.Message) bool { return m.From != 2 && m.To != 2 })
	if got := c.nodes[3].r.SnapshotWanted(); got != 2 {
		t.Fatalf("SnapshotWanted %d, want 2", got)
	}
	// The driver fetched the snapshot and hands core its final chunk.
	if err := c.nodes[3].r.Step(codec.Message{Type: codec.TypeSnapshotChunk, From: 1, To: 3, Slot: 2, Total: 4, Data: []byte("snap")}); err != nil {
		t.Fatal(err)
	}
	rd := c.nodes[3].r.Ready()
	if rd.SnapshotSlot != 2 {
		t.Fatalf("Ready.SnapshotSlot %d, want 2", rd.SnapshotSlot)
	}
	c.nodes[3].r.Advance(rd)
	c.nodes[3].applied = [][]byte{[]byte("a"), []byte("b")} // what the snapshot restored
	c.heartbeat(1, nil)
	c.wantApplied(3, "a", "b", "c")
}

// Two proposers that keep preempting each other still converge: driven only by ticks over a
// lossy, reordering network, a value proposed by whoever leads gets chosen everywhere.
func TestDuellingProposersConverge(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		c := newTestCluster(t, 3)
		c.nodes[1].r.Campaign()
		c.nodes[2].r.Campaign()
		proposed := false
		for tick := 0; tick < 2000; tick++ {
			for id := uint32(1); id <= 3; id++ {
				c.nodes[id].r.Tick()
			}
			c.flush()
			msgs := c.net
			c.net = nil
			rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
			for _, m := range msgs {
				if rng.IntN(10) == 0 {
					continue // lost
				}
				if err := c.nodes[m.To].r.Step(m); err != nil {
					t.Fatal(err)
				}
			}
			// The client retries every 50 ticks until "v" is chosen: a proposal made by a
			// leader that is preempted before its Accepts land is lost, as Paxos allows.
			for id := uint32(1); id <= 3 && (!proposed || tick%50 == 0 && len(c.nodes[id].applied) == 0); id++ {
				if c.nodes[id].r.Status().IsLeader {
					c.propose(id, "v")
					proposed = true
				}
			}
			if proposed && len(c.nodes[1].applied) > 0 && len(c.nodes[2].applied) > 0 && len(c.nodes[3].applied) > 0 {
				break
			}
		}
		for id := uint32(1); id <= 3; id++ {
			got := c.nodes[id].applied
			if len(got) == 0 {
				t.Fatalf("seed %d: replica %d applied nothing: %+v %+v %+v", seed, id, c.nodes[1].r.Status(), c.nodes[2].r.Status(), c.nodes[3].r.Status())
			}
			if string(got[len(got)-1]) != "v" {
				t.Fatalf("seed %d: replica %d applied %q", seed, id, got)
			}
		}
	}
}

// Issue 15's first defect: one Prepare with round 2^64-1 crashed every replica (the next
// campaign wrapped to round 0). A ballot above the usable range is refused on the wire, and a
// hard state holding one is refused at start with an error instead of a crash loop.
func TestHugeBallotIsRefusedNotWrapped(t *testing.T) {
	c := newTestCluster(t, 3)
	r := c.nodes[1].r
	for _, b := range []codec.Ballot{ballot(1<<64-1, 2), ballot(1<<63, 2)} {
		err := r.Step(codec.Message{Type: codec.TypePrepare, From: 2, To: 1, Ballot: b})
		if !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("Prepare in %v: %v, want ErrInvalidMessage", b, err)
		}
	}
	// The highest usable round is promised, and a campaign then refuses to wrap.
	if err := r.Step(codec.Message{Type: codec.TypePrepare, From: 2, To: 1, Ballot: ballot(roundMax, 2)}); err != nil {
		t.Fatal(err)
	}
	r.Campaign()
	for range 100 {
		r.Tick()
	}
	if st := r.Status(); st.Promised != ballot(roundMax, 2) || st.IsLeader {
		t.Fatalf("after campaigning at the top: %+v", st)
	}
	_, err := New(testConfig(1, []uint32{1, 2, 3}), Persisted{HardState: HardState{Promised: ballot(1<<64-1, 3)}}, nil)
	if err == nil || !containsWord(err.Error(), "refusing to start") {
		t.Fatalf("a hard state above the usable rounds: %v", err)
	}
}
