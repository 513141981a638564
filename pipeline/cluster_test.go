package pipeline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/internal/testnet"
)

const (
	testCluster = 7
	testSecret  = "0123456789abcdef-test-secret"
)

type cluster struct {
	t     *testing.T
	peers map[uint32]string
	nodes map[uint32]*Node
	cfgs  map[uint32]Config
}

func testConfig(t *testing.T, id uint32, peers map[uint32]string) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.Peers = peers
	cfg.ClusterID = testCluster
	cfg.Secret = []byte(testSecret)
	cfg.DataDir = t.TempDir()
	cfg.NoSync = true // the process test runs with fsync on
	cfg.TickInterval = 5 * time.Millisecond
	cfg.ElectionTicks = 20
	cfg.HeartbeatTicks = 2
	cfg.RetransmitTicks = 10
	cfg.Logger = slog.New(slog.NewTextHandler(logSink(), nil))
	return cfg
}

// startCluster starts n replicas in this process; mutate adjusts each config before start.
func startCluster(t *testing.T, n int, mutate func(*Config)) *cluster {
	t.Helper()
	addrs := testnet.FreeAddrs(t, n)
	c := &cluster{t: t, peers: map[uint32]string{}, nodes: map[uint32]*Node{}, cfgs: map[uint32]Config{}}
	for i, a := range addrs {
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

func (c *cluster) start(id uint32) {
	c.t.Helper()
	node, err := Start(c.cfgs[id])
	if err != nil {
		c.t.Fatalf("start replica %d: %v", id, err)
	}
	c.nodes[id] = node
}

func (c *cluster) stop(id uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[id].Stop(ctx); err != nil {
		c.t.Errorf("stop replica %d: %v", id, err)
	}
	delete(c.nodes, id)
}

func (c *cluster) endpoints() []string {
	var e []string
	for id := uint32(1); id <= uint32(len(c.peers)); id++ {
		e = append(e, c.peers[id])
	}
	return e
}

// waitLeader waits until some running replica leads and every running one knows it.
func (c *cluster) waitLeader(timeout time.Duration) uint32 {
	c.t.Helper()
	var ids []uint32
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return c.waitLeaderAmong(timeout, ids...)
}

// waitLeaderAmong waits until one of ids leads and all of ids know it.
func (c *cluster) waitLeaderAmong(timeout time.Duration, ids ...uint32) uint32 {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var leader uint32
		agreed := true
		for _, id := range ids {
			st := c.nodes[id].Status()
			if st.IsLeader {
				leader = st.ID
			}
		}
		for _, id := range ids {
			if c.nodes[id].Status().Leader != leader {
				agreed = false
			}
		}
		if leader != 0 && agreed {
			return leader
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("no leader within %v", timeout)
	return 0
}

// waitConverged waits until every running replica applied the same log holding at least
// commands commands, and returns it.
func (c *cluster) waitConverged(commands uint64, timeout time.Duration) AppliedState {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last []AppliedState
	for time.Now().Before(deadline) {
		last = last[:0]
		same := true
		for _, n := range c.nodes {
			a := n.Applied()
			if len(last) > 0 && a != last[0] {
				same = false
			}
			last = append(last, a)
		}
		if same && last[0].Commands >= commands {
			return last[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("replicas did not converge on %d commands within %v: %+v", commands, timeout, last)
	return AppliedState{}
}

func dialClient(t *testing.T, endpoints []string, mutate func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.ClusterID = testCluster
	cfg.RequestTimeout = 20 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	cl, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("client dial: %v", err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// load runs clients x perClient appends concurrently and returns every result.
func load(t *testing.T, endpoints []string, clients, perClient int) []client.Result {
	t.Helper()
	var mu sync.Mutex
	var results []client.Result
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		cl := dialClient(t, endpoints, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var inner sync.WaitGroup
			for j := 0; j < perClient; j++ {
				inner.Add(1)
				err := cl.AppendAsync([]byte(fmt.Sprintf("c%d-%d", i, j)), func(r client.Result, err error) {
					defer inner.Done()
					if err != nil {
						t.Errorf("client %d append %d: %v", i, j, err)
						return
					}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				})
				if err != nil {
					inner.Done()
					t.Errorf("AppendAsync: %v", err)
				}
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	return results
}

func checkDistinct(t *testing.T, results []client.Result) {
	t.Helper()
	seen := make(map[client.Result]bool, len(results))
	for _, r := range results {
		if seen[r] {
			t.Fatalf("two commands answered with the same position %+v", r)
		}
		seen[r] = true
	}
}

func TestClusterChoosesEveryCommandOnceInOneOrder(t *testing.T) {
	c := startCluster(t, 3, nil)
	c.waitLeader(5 * time.Second)
	const clients, perClient = 6, 300
	results := load(t, c.endpoints(), clients, perClient)
	if len(results) != clients*perClient {
		t.Fatalf("%d commands answered, want %d", len(results), clients*perClient)
	}
	checkDistinct(t, results)
	applied := c.waitConverged(clients*perClient, 10*time.Second)
	if applied.Commands != clients*perClient || applied.Duplicates != 0 {
		t.Fatalf("applied %+v, want exactly %d commands and no duplicates", applied, clients*perClient)
	}
	lat := c.nodes[c.waitLeader(time.Second)].Latencies()
	if lat.Phase2.Count == 0 || lat.Persist.Count == 0 || lat.BatchWait.Count == 0 {
		t.Fatalf("leader latency histograms are empty: %+v", lat)
	}
}

func TestLeaderStopFailsOverAndLogsAgree(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	first := load(t, c.endpoints(), 3, 100)
	c.stop(leader)
	second := load(t, c.endpoints(), 3, 100)
	all := append(first, second...)
	checkDistinct(t, all)
	c.waitLeader(5 * time.Second)
	applied := c.waitConverged(uint64(len(all)), 10*time.Second)
	if applied.Commands-applied.Duplicates != uint64(len(all)) {
		t.Fatalf("applied %+v, want %d distinct commands", applied, len(all))
	}
	// The stopped replica restarts from its WAL and catches up with the same log.
	c.start(leader)
	more := load(t, c.endpoints(), 2, 50)
	c.waitConverged(uint64(len(all)+len(more)), 10*time.Second)
}

// rawConn is a hand-driven client connection for protocol-level tests.
type rawConn struct {
	t   *testing.T
	nc  net.Conn
	br  *bufio.Reader
	buf []byte
}

func dialRaw(t *testing.T, addr string, clientID uint64) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	var ch codec.Challenge
	if err := codec.DecodeChallenge(rc.frame(), &ch, nil); err != nil {
		t.Fatal(err)
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: testCluster, ClientID: clientID}
	rc.write(codec.AppendHello(nil, &hello))
	var w codec.Welcome
	if err := codec.DecodeWelcome(rc.frame(), &w, nil); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawConn) write(b []byte) {
	if _, err := rc.nc.Write(b); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) frame() []byte {
	rc.t.Helper()
	head, err := rc.br.Peek(codec.FrameHeaderSize)
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	_, n, err := codec.PeekFrame(head, nil)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		rc.t.Fatal(err)
	}
	rc.buf = make([]byte, n)
	if _, err := io.ReadFull(rc.br, rc.buf); err != nil {
		rc.t.Fatal(err)
	}
	return rc.buf
}

func (rc *rawConn) request(clientID, seq uint64, payload string) codec.Response {
	rc.t.Helper()
	rc.write(codec.AppendRequest(nil, &codec.Request{ClientID: clientID, Seq: seq, Payload: []byte(payload)}))
	var resp codec.Response
	if err := codec.DecodeResponse(rc.frame(), &resp, nil); err != nil {
		rc.t.Fatalf("want a Response: %v", err)
	}
	return resp
}

func TestRetriedCommandIsAppliedOnce(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	rc := dialRaw(t, c.peers[leader], 99)
	first := rc.request(99, 1, "once")
	if first.Status != codec.StatusOK {
		t.Fatalf("first send: %+v", first)
	}
	again := rc.request(99, 1, "once")
	if again.Status != codec.StatusOK || again.Slot != first.Slot || again.Index != first.Index {
		t.Fatalf("retry answered %+v, want the original position %+v", again, first)
	}
	next := rc.request(99, 2, "twice")
	if next.Status != codec.StatusOK || next.Slot <= first.Slot && next.Index <= first.Index {
		t.Fatalf("next command %+v not after %+v", next, first)
	}
	applied := c.waitConverged(3, 5*time.Second)
	if applied.Commands != 3 || applied.Duplicates != 1 {
		t.Fatalf("applied %+v, want 3 commands of which 1 duplicate", applied)
	}
}

func TestFollowerRedirectsToTheLeader(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	follower := leader%3 + 1
	rc := dialRaw(t, c.peers[follower], 5)
	rc.write(codec.AppendRequest(nil, &codec.Request{ClientID: 5, Seq: 1, Payload: []byte("x")}))
	var r codec.Redirect
	if err := codec.DecodeRedirect(rc.frame(), &r, nil); err != nil {
		t.Fatalf("want a Redirect: %v", err)
	}
	if r.LeaderID != leader || r.LeaderAddr != c.peers[leader] || r.Seq != 1 {
		t.Fatalf("redirect %+v, want leader %d at %s", r, leader, c.peers[leader])
	}
}

func TestGarbageClientIsDisconnectedAndOthersAreServed(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	rc := dialRaw(t, c.peers[leader], 11)
	rc.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(rc.br); err != nil {
		t.Fatalf("connection not closed after garbage: %v", err)
	}
	results := load(t, c.endpoints(), 2, 50)
	if len(results) != 100 {
		t.Fatalf("%d answered, want 100", len(results))
	}
}

func TestPeerWithTheWrongSecretIsRefused(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		if cfg.ID == 3 {
			cfg.Secret = []byte("not-the-cluster-secret!!")
		}
	})
	leader := c.waitLeaderAmong(5*time.Second, 1, 2)
	if leader == 3 {
		t.Fatal("the replica with the wrong secret became leader")
	}
	results := load(t, []string{c.peers[1], c.peers[2]}, 2, 50)
	checkDistinct(t, results)
	time.Sleep(200 * time.Millisecond)
	if a := c.nodes[3].Applied(); a.Commands != 0 {
		t.Fatalf("replica 3 (wrong secret) applied %+v: it was let in", a)
	}
	if c.nodes[1].net.Stats().HandshakeFailures == 0 && c.nodes[2].net.Stats().HandshakeFailures == 0 {
		t.Fatal("no handshake was refused")
	}
}

func TestStartErrorsNameTheProblem(t *testing.T) {
	addrs := testnet.FreeAddrs(t, 1)
	peers := map[uint32]string{1: addrs[0]}
	cfg := testConfig(t, 1, peers)
	cfg.Window = 0
	if _, err := Start(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config.Window") {
		t.Fatalf("Window 0: %v", err)
	}
	// Port in use.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg = testConfig(t, 1, map[uint32]string{1: ln.Addr().String()})
	if _, err := Start(cfg); !errors.Is(err, ErrListen) {
		t.Fatalf("port in use: %v, want ErrListen", err)
	}
	// The data dir is held by a running replica (the WAL lock).
	cfg = testConfig(t, 1, peers)
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	cfg2 := cfg
	cfg2.Peers = map[uint32]string{1: testnet.FreeAddrs(t, 1)[0]}
	if _, err := Start(cfg2); !errors.Is(err, ErrWAL) {
		t.Fatalf("data dir in use: %v, want ErrWAL", err)
	}
}

func TestSingleReplicaRestartKeepsItsLog(t *testing.T) {
	addrs := testnet.FreeAddrs(t, 1)
	cfg := testConfig(t, 1, map[uint32]string{1: addrs[0]})
	cfg.NoSync = false
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := dialClient(t, []string{addrs[0]}, nil)
	for i := 0; i < 20; i++ {
		if _, err := cl.Append(context.Background(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	before := n.Applied()
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err = Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for n.Applied().Slot < before.Slot && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if after := n.Applied(); after.Commands != before.Commands || after.Digest != before.Digest {
		t.Fatalf("after restart applied %+v, before %+v", after, before)
	}
}

// A follower that misses more slots than core retains in memory catches up from the
// leader's chosen-value ring (core.Storage) after a restart.
func TestRestartedFollowerCatchesUpFromTheRing(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.RetainSlots = 8
		cfg.Batching.BatchCommandsMax = 4
		cfg.Window = 4
	})
	leader := c.waitLeader(5 * time.Second)
	follower := leader%3 + 1
	first := load(t, c.endpoints(), 2, 20)
	c.stop(follower)
	second := load(t, c.endpoints(), 4, 100) // at least 100 slots: far past RetainSlots
	c.start(follower)
	all := append(first, second...)
	checkDistinct(t, all)
	applied := c.waitConverged(uint64(len(all)), 15*time.Second)
	if applied.Slot < 100 || applied.Commands != uint64(len(all)) {
		t.Fatalf("applied %+v: want >= 100 slots and %d commands", applied, len(all))
	}
}

// logSink is where test replicas log: stderr with MPAXOS_TEST_LOG=1, else nowhere.
func logSink() io.Writer {
	if os.Getenv("MPAXOS_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
