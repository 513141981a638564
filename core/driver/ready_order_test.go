package driver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// A follower accepts two batches; the second's persist completes first, then the first's
// entries, then its hard state. Nothing vouches before its own persist and every earlier one
// are durable, and the Accepteds leave in the order the Readies were taken.
func TestReadiesFinishInTheOrderTakenWhenPersistsCompleteOutOfOrder(t *testing.T) {
	n := newNode(t, 3, []uint32{1, 2, 3}, DefaultConfig())
	n.step(t, accept(3, 0, 0, "a"))
	n.step(t, accept(3, 1, 0, "b"))
	want := []persistCall{{0, PartHardState}, {0, PartEntries}, {1, PartEntries}}
	if !slices.Equal(n.fx.persists, want) {
		t.Fatalf("persists asked: %v, want %v", n.fx.persists, want)
	}
	if n.d.Inflight() != 2 {
		t.Fatalf("inflight %d, want 2", n.d.Inflight())
	}
	n.persist(t, 1, PartEntries)
	n.persist(t, 0, PartEntries)
	if len(n.fx.outbox) != 0 {
		t.Fatalf("sent %v before the first Ready's hard state was durable", n.fx.outbox)
	}
	n.persist(t, 0, PartHardState)
	var acked []uint64
	for _, m := range n.fx.outbox {
		if m.Type != codec.TypeAccepted {
			t.Fatalf("unexpected %v", m.Type)
		}
		acked = append(acked, m.Slot)
	}
	if !slices.Equal(acked, []uint64{0, 1}) || n.d.Inflight() != 0 {
		t.Fatalf("Accepted for slots %v with %d inflight; want [0 1], 0", acked, n.d.Inflight())
	}
}

// PersistInflightMax Readies in flight: core's further work waits in core until one finishes.
func TestNoMoreThanPersistInflightMaxReadiesAreTaken(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PersistInflightMax = 2
	n := newNode(t, 3, []uint32{1, 2, 3}, cfg)
	for slot := range uint64(4) {
		n.step(t, accept(3, slot, 0, "v"))
	}
	if n.d.Inflight() != 2 || !n.r.HasReady() {
		t.Fatalf("inflight %d, core has more: %v; want 2 taken and the rest waiting", n.d.Inflight(), n.r.HasReady())
	}
	n.persistAll()
	if n.d.Inflight() != 0 || n.r.HasReady() {
		t.Fatalf("after every persist: inflight %d, core has more: %v", n.d.Inflight(), n.r.HasReady())
	}
}

// countHardStates counts the hard-state saves asked for so far.
func countHardStates(fx *fakeEffects) int {
	count := 0
	for _, e := range fx.events {
		if strings.Contains(e, "hard state") {
			count++
		}
	}
	return count
}

// The commit point advances on every Accept; a hard state that changes only it is saved at
// most once per CommitSaveTicks ticks, while a new promise is saved at once.
func TestCommitOnlyHardStateIsThrottledAndANewPromiseIsNot(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CommitSaveTicks = 5
	n := newNode(t, 3, []uint32{1, 2, 3}, cfg)
	n.step(t, accept(3, 0, 0, "a"))
	n.persistAll()
	if countHardStates(n.fx) != 1 {
		t.Fatalf("the first promise: %d hard states saved, want 1", countHardStates(n.fx))
	}
	slot := uint64(1)
	acceptNext := func() {
		n.step(t, accept(3, slot, slot, "v"))
		n.persistAll()
		slot++
	}
	for range 4 {
		acceptNext()
	}
	if got := countHardStates(n.fx); got != 1 {
		t.Fatalf("commit-only changes within the interval: %d hard states saved, want 1", got)
	}
	for range cfg.CommitSaveTicks {
		n.d.Tick()
		n.d.Drive()
		n.persistAll()
	}
	acceptNext()
	acceptNext()
	if got := countHardStates(n.fx); got != 2 {
		t.Fatalf("after %d ticks: %d hard states saved, want 2 (one commit-only save)", cfg.CommitSaveTicks, got)
	}
	// A higher ballot from replica 2, within the throttle interval: saved at once.
	higher := codec.Message{Type: codec.TypeAccept, From: 2, To: 3, Ballot: codec.Ballot{Round: 2, Replica: 2},
		Slot: slot, Values: [][]byte{[]byte("w")}}
	n.step(t, higher)
	if got := countHardStates(n.fx); got != 3 {
		t.Fatalf("a new promise within the interval: %d hard states saved, want 3", got)
	}
	saved := "hard state promised " + fmt.Sprint(higher.Ballot)
	if !slices.ContainsFunc(n.fx.events, func(e string) bool { return strings.Contains(e, saved) }) {
		t.Fatalf("the new promise was not saved: %v", n.fx.events)
	}
}

// A Ready's Chosen goes to Apply when it is taken, before this replica's own persist of it
// is durable: chosen values are durable on a majority already.
func TestChosenIsAppliedBeforeTheOwnPersist(t *testing.T) {
	n := newNode(t, 3, []uint32{1, 2, 3}, DefaultConfig())
	n.step(t, accept(3, 0, 0, "a"))
	n.persistAll()
	n.step(t, accept(3, 1, 1, "b")) // slot 0 chosen; slot 1 to persist
	if !slices.Equal(n.fx.applied, []uint64{0}) || len(n.fx.persists) == 0 {
		t.Fatalf("applied %v with %d persists in flight; want [0] applied while slot 1 persists",
			n.fx.applied, len(n.fx.persists))
	}
	if n.fx.index("apply 0-0") > n.fx.index("persist 1 entries 1-1") {
		t.Fatalf("applied after the persist was asked: %v", n.fx.events)
	}
}

// The leader: two followers' votes choose a slot while the leader's own entry is still
// syncing; the answers (Apply) do not wait for the leader's fsync.
func TestLeaderAppliesChosenWhileItsOwnFsyncIsOutstanding(t *testing.T) {
	c := newCluster(t, 3, DefaultConfig())
	leader := c.elect()
	c.hold = func(id uint32) bool { return id == 1 }
	if _, err := leader.r.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.settle()
	if len(leader.fx.persists) == 0 {
		t.Fatal("the leader's persist completed: the test holds it")
	}
	if !slices.Contains(leader.fx.applied, 0) {
		t.Fatalf("slot 0 chosen by the followers is not applied at the leader: %v", leader.fx.events)
	}
	c.hold = nil
	c.settle()
	if leader.d.Inflight() != 0 {
		t.Fatalf("inflight %d after every persist", leader.d.Inflight())
	}
}

func TestPersistedPanicsOnAPartNotAskedFor(t *testing.T) {
	n := newNode(t, 3, []uint32{1, 2, 3}, DefaultConfig())
	n.step(t, accept(3, 0, 0, "a"))
	n.persist(t, 0, PartEntries)
	defer func() {
		if recover() == nil {
			t.Fatal("a part reported twice did not panic")
		}
	}()
	n.d.Persisted(0, PartEntries)
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		field  string
		change func(*Config)
	}{
		{"PersistInflightMax", func(c *Config) { c.PersistInflightMax = 0 }},
		{"CommitSaveTicks", func(c *Config) { c.CommitSaveTicks = -1 }},
		{"ChunkBytes", func(c *Config) { c.ChunkBytes = 0 }},
		{"ChunkWindow", func(c *Config) { c.ChunkWindow = 0 }},
		{"RetryTicks", func(c *Config) { c.RetryTicks = 0 }},
		{"RetryLimit", func(c *Config) { c.RetryLimit = -1 }},
		{"ServesMax", func(c *Config) { c.ServesMax = 0 }},
	} {
		cfg := DefaultConfig()
		c.change(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v", c.field, err)
		}
	}
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// quietEffects records persists into a reused slice and drops everything else: it allocates
// nothing, so what a Ready cycle through the driver allocates is core's and the driver's.
type quietEffects struct{ persists []persistCall }

func (q *quietEffects) Send(*codec.Message) {}
func (q *quietEffects) PersistEntries(seq uint64, _ []codec.Entry) {
	q.persists = append(q.persists, persistCall{seq, PartEntries})
}
func (q *quietEffects) SaveHardState(seq uint64, _ core.HardState) {
	q.persists = append(q.persists, persistCall{seq, PartHardState})
}
func (q *quietEffects) Apply([]codec.Entry)             {}
func (q *quietEffects) InstallSnapshot(uint64)          {}
func (q *quietEffects) ReadSnapshot(SnapshotRead)       {}
func (q *quietEffects) WriteSnapshot(SnapshotWrite)     {}
func (q *quietEffects) FinishSnapshot(SnapshotFinish)   {}
func (q *quietEffects) DiscardSnapshot(SnapshotDiscard) {}

// The hot path gains no allocation: a follower accepting one value per Ready allocates as much
// through the driver as it does driven by hand.
func TestDriverAddsNoAllocationPerReady(t *testing.T) {
	newFollower := func() *core.Replica {
		cc := core.DefaultConfig(3, []uint32{1, 2, 3})
		cc.Rand = rand.New(rand.NewPCG(3, 7))
		cc.StepValuesOwned = true
		r, err := core.New(cc, core.Persisted{}, emptyStorage{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	m := accept(3, 0, 0, "value")
	byHand := newFollower()
	handAllocs := testing.AllocsPerRun(1000, func() {
		m.Slot++
		if err := byHand.Step(m); err != nil {
			t.Fatal(err)
		}
		byHand.Advance(byHand.Ready())
	})
	fx := &quietEffects{persists: make([]persistCall, 0, 4)}
	d, err := New(DefaultConfig(), newFollower(), fx)
	if err != nil {
		t.Fatal(err)
	}
	m.Slot = 0
	driverAllocs := testing.AllocsPerRun(1000, func() {
		m.Slot++
		if err := d.Step(&m); err != nil {
			t.Fatal(err)
		}
		d.Drive()
		for _, p := range fx.persists {
			d.Persisted(p.seq, p.part)
		}
		fx.persists = fx.persists[:0]
	})
	t.Logf("allocations per Ready cycle: %.1f by hand, %.1f through the driver", handAllocs, driverAllocs)
	if driverAllocs > handAllocs {
		t.Fatalf("a Ready cycle allocates %.1f times through the driver, %.1f by hand", driverAllocs, handAllocs)
	}
	if d.Inflight() != 0 {
		t.Fatalf("inflight %d", d.Inflight())
	}
}
