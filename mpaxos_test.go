package mpaxos

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mpaxos/mpaxos/internal/testnet"
)

// Close must end every goroutine a Node started. gnet's package-level worker pool (ants)
// lives for the whole process and is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}

const testSecret = "0123456789abcdef-embed-test"

// digestMachine is a test StateMachine: it counts the commands it applied and hashes them
// in order, so two machines that applied the same log agree exactly.
type digestMachine struct {
	mu     sync.Mutex
	count  uint64
	digest uint64
	last   uint64 // offset of the last applied command + 1
	gaps   int    // applies whose offset was not the next one
}

func newDigestMachine() *digestMachine { return &digestMachine{digest: 14695981039346656037} }

func (m *digestMachine) Apply(e Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Offset != m.last {
		m.gaps++
	}
	m.last = e.Offset + 1
	h := fnv.New64a()
	_ = binary.Write(h, binary.LittleEndian, m.digest)
	_, _ = h.Write(e.Payload)
	m.digest = h.Sum64()
	m.count++
}

func (m *digestMachine) Snapshot() (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := binary.LittleEndian.AppendUint64(nil, m.count)
	b = binary.LittleEndian.AppendUint64(b, m.digest)
	b = binary.LittleEndian.AppendUint64(b, m.last)
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *digestMachine) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(b) != 24 {
		return fmt.Errorf("digestMachine: snapshot of %d bytes", len(b))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count, m.digest, m.last = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])
	return nil
}

func (m *digestMachine) state() (count, digest uint64, gaps int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count, m.digest, m.gaps
}

type testCluster struct {
	t        testing.TB
	peers    map[uint32]string
	cfgs     map[uint32]Config
	nodes    map[uint32]*Node
	machines map[uint32]*digestMachine
}

func testConfig(t testing.TB, id uint32, peers map[uint32]string) Config {
	cfg := DefaultConfig()
	cfg.ID, cfg.Peers = id, peers
	cfg.ClusterID = 11
	cfg.Secret = []byte(testSecret)
	cfg.DataDir = t.TempDir()
	cfg.NoSync = true
	cfg.ProposeTimeout = 20 * time.Second
	cfg.Runtime.TickInterval = 5 * time.Millisecond
	cfg.Runtime.WALSegmentBytes = 1 << 20 // a new WAL zero-fills its first segment: keep starts fast
	cfg.Runtime.ElectionTicks = 20
	cfg.Runtime.HeartbeatTicks = 2
	cfg.Runtime.RetransmitTicks = 10
	cfg.Runtime.Snapshot.RetryInterval = 50 * time.Millisecond
	switch os.Getenv("MPAXOS_TEST_LOG") {
	case "":
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	case "debug":
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

func startCluster(t testing.TB, mutate func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, peers: map[uint32]string{}, cfgs: map[uint32]Config{},
		nodes: map[uint32]*Node{}, machines: map[uint32]*digestMachine{}}
	for i, a := range testnet.FreeAddrs(t, 3) {
		c.peers[uint32(i+1)] = a
	}
	for id := range c.peers {
		cfg := testConfig(t, id, c.peers)
		if mutate != nil {
			mutate(&cfg)
		}
		c.cfgs[id] = cfg
		c.start(id)
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

func (c *testCluster) start(id uint32) {
	c.t.Helper()
	cfg := c.cfgs[id]
	m := newDigestMachine()
	cfg.StateMachine = m
	n, err := Start(cfg)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id], c.machines[id] = n, m
}

func (c *testCluster) stop(id uint32) {
	if err := c.nodes[id].Close(); err != nil {
		c.t.Errorf("close node %d: %v", id, err)
	}
	delete(c.nodes, id)
}

// waitLeader waits until every running node names the same running leader.
func (c *testCluster) waitLeader() uint32 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var leader uint32
		agreed := true
		for _, n := range c.nodes {
			id, _ := n.Leader()
			if leader == 0 {
				leader = id
			}
			agreed = agreed && id == leader
		}
		if _, running := c.nodes[leader]; agreed && running {
			return leader
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatal("no leader within 10s")
	return 0
}

// waitPosition waits until every running node applied offsets below next.
func (c *testCluster) waitPosition(next uint64) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, n := range c.nodes {
			done = done && n.Position().Next >= next
		}
		if done {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	for id, n := range c.nodes {
		c.t.Logf("node %d position %+v", id, n.Position())
	}
	c.t.Fatalf("nodes did not apply %d commands within 20s", next)
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// proposeMany proposes perNode commands through every node concurrently and returns the
// payload acknowledged at each offset.
func proposeMany(t *testing.T, nodes []*Node, perNode int, tag string) map[uint64]string {
	t.Helper()
	var mu sync.Mutex
	got := map[uint64]string{}
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perNode; j++ {
				p := fmt.Sprintf("%s/%d/%d", tag, i, j)
				off, err := n.Propose(ctxTimeout(t, 20*time.Second), []byte(p))
				if err != nil {
					t.Errorf("propose %s: %v", p, err)
					return
				}
				mu.Lock()
				if old, dup := got[off]; dup {
					t.Errorf("offset %d acknowledged twice: %q and %q", off, old, p)
				}
				got[off] = p
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

func (c *testCluster) running() []*Node {
	var ns []*Node
	for id := uint32(1); id <= 3; id++ {
		if n, ok := c.nodes[id]; ok {
			ns = append(ns, n)
		}
	}
	return ns
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	good := testConfig(t, 1, map[uint32]string{1: "127.0.0.1:1", 2: "127.0.0.1:2"})
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"Config.ID", func(c *Config) { c.ID = 0 }},
		{"Config.Peers", func(c *Config) { c.ID = 9 }},
		{"Config.Secret", func(c *Config) { c.Secret = []byte("short") }},
		{"Config.DataDir", func(c *Config) { c.DataDir = "" }},
		{"Config.ProposeTimeout", func(c *Config) { c.ProposeTimeout = 0 }},
		{"Config.ProposeInflightMax", func(c *Config) { c.ProposeInflightMax = -1 }},
		{"Config.SubscribeBytesMax", func(c *Config) { c.SubscribeBytesMax = 0 }},
		{"Config.SnapshotEveryCommands", func(c *Config) { c.SnapshotEveryCommands = 0 }},
		{"Config.SnapshotEveryBytes", func(c *Config) { c.SnapshotEveryBytes = 0 }},
		{"Config.SnapshotChunkBytes", func(c *Config) { c.SnapshotChunkBytes = 1 << 30 }},
		{"Config.Runtime", func(c *Config) { c.Runtime.Window = 0 }},
	}
	for _, tc := range cases {
		cfg := good
		tc.mutate(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !bytes.Contains([]byte(err.Error()), []byte(tc.field)) {
			t.Errorf("%s: got %v, want an ErrInvalidConfig naming %s", tc.field, err, tc.field)
		}
		if _, err := Start(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Start returned %v, want ErrInvalidConfig", tc.field, err)
		}
	}
}

func TestProposeOnEveryNodeGivesDenseOffsetsThatEveryNodeReads(t *testing.T) {
	c := startCluster(t, nil)
	c.waitLeader()
	got := proposeMany(t, c.running(), 40, "p")
	if len(got) != 120 {
		t.Fatalf("%d offsets acknowledged, want 120", len(got))
	}
	for off := uint64(0); off < 120; off++ {
		if _, ok := got[off]; !ok {
			t.Fatalf("offset %d missing: offsets are not dense", off)
		}
	}
	c.waitPosition(120)
	for id, n := range c.nodes {
		for off, want := range got {
			e, err := n.Read(off)
			if err != nil || string(e.Payload) != want || e.Offset != off {
				t.Fatalf("node %d Read(%d) = %+v, %v; want %q", id, off, e, err, want)
			}
		}
		if _, err := n.Read(10_000); !errors.Is(err, ErrNotApplied) {
			t.Errorf("node %d Read beyond the end: %v, want ErrNotApplied", id, err)
		}
	}
	counts := map[uint64]bool{}
	for _, m := range c.machines {
		count, digest, gaps := m.state()
		if count != 120 || gaps != 0 {
			t.Errorf("state machine applied %d commands with %d gaps, want 120 and 0", count, gaps)
		}
		counts[digest] = true
	}
	if len(counts) != 1 {
		t.Errorf("state machines disagree: %d distinct digests", len(counts))
	}
	if _, err := c.nodes[1].Propose(context.Background(), nil); !errors.Is(err, ErrEmptyCommand) {
		t.Errorf("empty Propose: %v, want ErrEmptyCommand", err)
	}
	huge := make([]byte, c.cfgs[1].Runtime.Network.Limits.PayloadBytesMax+1)
	if _, err := c.nodes[1].Propose(context.Background(), huge); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized Propose: %v, want ErrTooLarge", err)
	}
}

func TestProposeBatchReturnsOffsetsInOrder(t *testing.T) {
	c := startCluster(t, nil)
	c.waitLeader()
	var cmds [][]byte
	for i := 0; i < 50; i++ {
		cmds = append(cmds, []byte(fmt.Sprintf("batch-%d", i)))
	}
	n := c.nodes[2]
	offs, err := n.ProposeBatch(ctxTimeout(t, 20*time.Second), cmds)
	if err != nil {
		t.Fatal(err)
	}
	for i, off := range offs {
		e, err := n.Read(off)
		if err != nil || !bytes.Equal(e.Payload, cmds[i]) {
			t.Fatalf("command %d at offset %d reads %q, %v", i, off, e.Payload, err)
		}
	}
}

// Proposals keep going through a follower while the leader is closed: every acknowledged one
// is in the log at its offset, and no command is in the log twice (the node resent some with
// the same client id and seq).
func TestProposeSurvivesLeaderLoss(t *testing.T) {
	c := startCluster(t, nil)
	leader := c.waitLeader()
	var follower uint32 = 1
	if follower == leader {
		follower = 2
	}
	n := c.nodes[follower]
	var mu sync.Mutex
	acked := map[uint64]string{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 60; j++ {
				p := fmt.Sprintf("w%d-%d", w, j)
				off, err := n.Propose(ctxTimeout(t, 20*time.Second), []byte(p))
				if err != nil {
					t.Errorf("propose %s: %v", p, err)
					return
				}
				mu.Lock()
				acked[off] = p
				mu.Unlock()
			}
		}()
	}
	time.Sleep(30 * time.Millisecond)
	c.stop(leader)
	wg.Wait()
	if t.Failed() {
		return
	}
	end, err := n.Barrier(ctxTimeout(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]uint64{}
	for off := uint64(0); off < end; off++ {
		e, err := n.Read(off)
		if err != nil {
			t.Fatalf("Read(%d): %v", off, err)
		}
		if prev, dup := seen[string(e.Payload)]; dup {
			t.Fatalf("%q applied twice, at %d and %d", e.Payload, prev, off)
		}
		seen[string(e.Payload)] = off
	}
	for off, p := range acked {
		if seen[p] != off {
			t.Fatalf("%q acknowledged at %d but found at %d", p, off, seen[p])
		}
	}
	if len(acked) != 240 {
		t.Fatalf("%d acknowledged, want 240", len(acked))
	}
}

// Barrier on a node that lags still covers every acknowledged command, and the node can read
// all of them afterwards.
func TestBarrierCoversAcknowledgedProposals(t *testing.T) {
	c := startCluster(t, nil)
	leader := c.waitLeader()
	got := proposeMany(t, []*Node{c.nodes[leader]}, 30, "b")
	for id, n := range c.nodes {
		end, err := n.Barrier(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Fatalf("node %d Barrier: %v", id, err)
		}
		if end < uint64(len(got)) {
			t.Fatalf("node %d Barrier = %d, below the %d acknowledged", id, end, len(got))
		}
		for off, want := range got {
			if e, err := n.Read(off); err != nil || string(e.Payload) != want {
				t.Fatalf("node %d after Barrier: Read(%d) = %q, %v", id, off, e.Payload, err)
			}
		}
	}
	// Markers take no offset: the next command follows the last acknowledged one directly.
	off, err := c.nodes[leader].Propose(ctxTimeout(t, 10*time.Second), []byte("after"))
	if err != nil || off != uint64(len(got)) {
		t.Fatalf("Propose after barriers = %d, %v; want %d", off, err, len(got))
	}
}

func TestLeaderAndLeaderCh(t *testing.T) {
	c := startCluster(t, nil)
	leader := c.waitLeader()
	var other uint32 = 1
	if other == leader {
		other = 2
	}
	ch := c.nodes[other].LeaderCh()
	// The channel holds the latest change; an early election may still be settling, so read
	// until it names the leader everyone agrees on.
	deadline := time.After(5 * time.Second)
	for settled := false; !settled; {
		select {
		case lc := <-ch:
			if lc.ID == leader {
				if lc.Addr != c.peers[leader] || lc.Self != (leader == other) {
					t.Fatalf("LeaderCh gave %+v, want leader %d at %s", lc, leader, c.peers[leader])
				}
				settled = true
			}
		case <-deadline:
			t.Fatalf("LeaderCh never named leader %d", leader)
		}
		if !settled {
			leader = c.waitLeader()
		}
	}
	if id, addr := c.nodes[other].Leader(); id != leader || addr != c.peers[leader] {
		t.Fatalf("Leader() = %d %s, want %d", id, addr, leader)
	}
	if leader == other {
		return // the watched node itself won a late election: nothing left to watch it lose
	}
	c.stop(leader)
	deadline = time.After(10 * time.Second)
	for {
		select {
		case lc := <-ch:
			if lc.ID != 0 && lc.ID != leader {
				return
			}
		case <-deadline:
			t.Fatal("no new leader announced after the leader stopped")
		}
	}
}

// A subscriber from offset 0 reads every command exactly once and in order while snapshots
// are taken and the log is compacted under it; one that opens below the compaction point is
// told where to resume.
func TestSubscribeAcrossSnapshotBoundary(t *testing.T) {
	c := startCluster(t, func(cfg *Config) { cfg.SnapshotEveryCommands = 100 })
	c.waitLeader()
	n := c.nodes[1]
	sub, err := n.Subscribe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const total = 300
	done := make(chan map[uint64]string, 1)
	go func() { done <- proposeMany(t, c.running(), total/3, "s") }()
	ctx := ctxTimeout(t, 30*time.Second)
	for off := uint64(0); off < total; off++ {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("Next at %d: %v", off, err)
		}
		if e.Offset != off {
			t.Fatalf("Next gave offset %d, want %d", e.Offset, off)
		}
	}
	got := <-done
	if len(got) != total {
		t.Fatalf("%d acknowledged", len(got))
	}
	c.waitPosition(total)
	deadline := time.Now().Add(10 * time.Second)
	for n.Position().First == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	first := n.Position().First
	if first == 0 {
		t.Fatal("no compaction after 300 commands with a snapshot every 100")
	}
	_, err = n.Subscribe(0)
	var fb *FellBehindError
	if !errors.As(err, &fb) || fb.Resume != first || !errors.Is(err, ErrCompacted) {
		t.Fatalf("Subscribe(0) after compaction: %v, want FellBehindError resuming at %d", err, first)
	}
	if _, err := n.Read(0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Read(0) after compaction: %v, want ErrCompacted", err)
	}
	// The subscription blocks at the end and wakes for a new command.
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = n.Propose(ctxTimeout(t, 10*time.Second), []byte("late"))
	}()
	e, err := sub.Next(ctx)
	if err != nil || string(e.Payload) != "late" || e.Offset != total {
		t.Fatalf("Next after the end = %+v, %v", e, err)
	}
	_ = sub.Close()
	if _, err := sub.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// A node whose data directory is wiped rejoins a cluster that compacted its log: it receives
// a snapshot in chunks, restores the state machine from it, and catches up with the log after.
func TestWipedNodeRestoresFromSnapshot(t *testing.T) {
	c := startCluster(t, func(cfg *Config) {
		cfg.SnapshotEveryCommands = 50
		cfg.SnapshotChunkBytes = 64 // many chunks, several windows
		cfg.Runtime.RetainSlots = 8
		cfg.Runtime.CacheBytesMax = 1 << 10
		cfg.Runtime.Batching.BatchCommandsMax = 4 // many slots
	})
	leader := c.waitLeader()
	var victim uint32 = 1
	if victim == leader {
		victim = 2
	}
	proposeMany(t, c.running(), 100, "before")
	c.waitPosition(300)
	c.stop(victim)
	if err := os.RemoveAll(c.cfgs[victim].DataDir); err != nil {
		t.Fatal(err)
	}
	proposeMany(t, c.running(), 100, "during")
	c.start(victim)
	proposeMany(t, c.running(), 20, "after")
	const total = 300 + 200 + 60
	c.waitPosition(total)
	want := c.nodes[leader]
	got := c.nodes[victim]
	if got.Position().First == 0 {
		t.Fatalf("wiped node holds offset 0: it replayed the log instead of installing a snapshot")
	}
	for off := max(got.Position().First, want.Position().First); off < total; off++ {
		a, errA := want.Read(off)
		b, errB := got.Read(off)
		if errA != nil || errB != nil || !bytes.Equal(a.Payload, b.Payload) {
			t.Fatalf("offset %d: leader %q %v, restored node %q %v", off, a.Payload, errA, b.Payload, errB)
		}
	}
	cw, dw, _ := c.machines[leader].state()
	cg, dg, _ := c.machines[victim].state()
	if cw != cg || dw != dg || cw != total {
		t.Fatalf("state machines: leader %d commands digest %x, restored %d digest %x (want %d)", cw, dw, cg, dg, total)
	}
}

// A node restarted with its data directory starts from its newest snapshot and replays only
// the log after it; its state machine ends where the others are.
func TestRestartLoadsSnapshotThenLog(t *testing.T) {
	c := startCluster(t, func(cfg *Config) { cfg.SnapshotEveryCommands = 30 })
	c.waitLeader()
	proposeMany(t, c.running(), 50, "r")
	c.waitPosition(150)
	c.stop(3)
	c.start(3)
	c.waitPosition(150)
	if c.nodes[3].Position().First == 0 {
		t.Fatal("restarted node did not start from a snapshot")
	}
	proposeMany(t, c.running(), 5, "r2")
	c.waitPosition(165)
	c1, d1, _ := c.machines[1].state()
	c3, d3, _ := c.machines[3].state()
	if c1 != 165 || c1 != c3 || d1 != d3 {
		t.Fatalf("node 1 %d/%x, restarted node 3 %d/%x", c1, d1, c3, d3)
	}
}

func TestCloseIsIdempotentAndEndsWaiters(t *testing.T) {
	c := startCluster(t, nil)
	c.waitLeader()
	n := c.nodes[3]
	sub, err := n.Subscribe(0)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := sub.Next(context.Background())
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.stop(3)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next on a closed node: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
	if err := n.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.Propose(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Propose after Close: %v", err)
	}
}

// With ProposeNoLocalWait a follower's Propose returns once the leader answered; the offsets
// are the same dense ones, and the follower applies them shortly after.
func TestProposeNoLocalWaitReturnsTheLeadersOffsets(t *testing.T) {
	c := startCluster(t, func(cfg *Config) { cfg.ProposeNoLocalWait = true })
	leader := c.waitLeader()
	follower := c.nodes[leader%3+1]
	var offs []uint64
	for i := 0; i < 20; i++ {
		off, err := follower.Propose(ctxTimeout(t, 10*time.Second), []byte(fmt.Sprintf("nw-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	c.waitPosition(20)
	for i, off := range offs {
		if off != uint64(i) {
			t.Fatalf("proposal %d got offset %d", i, off)
		}
		if e, err := follower.Read(off); err != nil || string(e.Payload) != fmt.Sprintf("nw-%d", i) {
			t.Fatalf("Read(%d) = %q, %v", off, e.Payload, err)
		}
	}
}
