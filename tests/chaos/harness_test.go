package chaos

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/tests/chaos/cluster"
	"github.com/mpaxos/mpaxos/tests/chaos/faultproxy"
	"github.com/mpaxos/mpaxos/tests/chaos/history"
	"github.com/mpaxos/mpaxos/tests/chaos/netns"
)

var (
	flagChaos      = flag.Bool("chaos", false, "run the real-process fault tests (also MPAXOS_CHAOS=1)")
	flagSeed       = flag.Uint64("seed", 0, "seed of the fault schedule and workload; 0 picks one")
	flagDuration   = flag.Duration("duration", 0, "TestChaosLong: how long to run rounds of random faults")
	flagRaceServer = flag.Bool("race-server", false, "build the server with -race")
	flagBinary     = flag.String("mpaxos-bin", "", "use this mpaxos binary instead of building ./cmd/mpaxos")
)

func chaosEnabled() bool {
	return *flagChaos || os.Getenv("MPAXOS_CHAOS") == "1" || *flagDuration > 0
}

// requireChaos skips a real-process test unless enabled, saying how to enable it.
func requireChaos(t *testing.T) {
	t.Helper()
	if !chaosEnabled() {
		t.Skip("real-process chaos test: run with -chaos or MPAXOS_CHAOS=1 (see tests/chaos/doc.go)")
	}
}

// serverBinary builds ./cmd/mpaxos once per test process (or returns -mpaxos-bin).
func serverBinary(t *testing.T) string {
	t.Helper()
	if *flagBinary != "" {
		return *flagBinary
	}
	bin, err := cluster.BuildOnce(*flagRaceServer)
	if err != nil {
		t.Fatalf("build mpaxos: %v", err)
	}
	return bin
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	cluster.RemoveBuilds()
	os.Exit(code)
}

// options of one harness.
type options struct {
	replicas int
	proxy    bool     // route peer traffic through faultproxy
	netns    bool     // run each replica in its own network namespace (no proxy then)
	always   bool     // part of the default run: no -chaos needed
	replayAs string   // the test that replays this run (TestChaosLong rounds), if not this one
	args     []string // extra server flags
}

// harness is one test's cluster, network, history and fault log.
type harness struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	opts    options
	cluster *cluster.Cluster
	net     *faultproxy.Network
	topo    *netns.Topology
	rec     *history.Recorder
	start   time.Time

	mu     sync.Mutex
	faults []string
}

func testSeed(t *testing.T) uint64 {
	if *flagSeed != 0 {
		return *flagSeed
	}
	return uint64(time.Now().UnixNano()) % 1_000_000_007
}

func replayCommand(t *testing.T, seed uint64, replayAs string) string {
	top := strings.SplitN(t.Name(), "/", 2)[0]
	if replayAs != "" {
		top = replayAs
	}
	return fmt.Sprintf("go test ./tests/chaos -run '^%s$' -chaos -seed %d -v", top, seed)
}

// newHarness starts a cluster. Everything it starts is stopped in t.Cleanup; on failure the
// cleanup prints the seed and the replay command and saves the replicas' output.
func newHarness(t *testing.T, seed uint64, opts options) *harness {
	t.Helper()
	if !opts.always {
		requireChaos(t)
	}
	if opts.replicas == 0 {
		opts.replicas = 3
	}
	t.Logf("seed %d; replay: %s", seed, replayCommand(t, seed, opts.replayAs))
	bin := serverBinary(t)
	h := &harness{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x63686173)), opts: opts,
		rec: history.NewRecorder(0), start: time.Now()}
	base := t.TempDir()
	cfg := cluster.Config{
		Binary: bin, Replicas: opts.replicas, BaseDir: base,
		ClusterID: 1 + seed%1000, Secret: fmt.Sprintf("chaos-secret-%016d", seed),
		Args:         append([]string{"--fsync=true"}, opts.args...),
		ReadyTimeout: 30 * time.Second, Logf: t.Logf,
		// Armed in every run, off until a fault (stall-leader-disk) switches it.
		FaultHooks: true,
	}
	if opts.proxy && opts.netns {
		t.Fatal("the fault proxy listens on 127.0.0.1, unreachable from namespaces: choose one")
	}
	if opts.proxy {
		cfg.PeerAddr = func(from, to int) string { return h.net.Addr(from, to) }
	}
	if opts.netns {
		if err := netns.Available(); err != nil {
			t.Fatalf("this test runs replicas in network namespaces: %v", err)
		}
		// Without kernel netem the userspace emulator joins the namespaces, so netem faults
		// still shape real packets.
		create := netns.Create
		if netns.NetemSupported() != nil {
			create = netns.CreateEmulated
		}
		topo, err := create(opts.replicas)
		if err != nil {
			t.Fatal(err)
		}
		h.topo = topo
		// Registered before the cluster's cleanup, so it runs after the replicas are dead.
		t.Cleanup(func() {
			if err := topo.Close(); err != nil {
				t.Errorf("delete namespaces: %v", err)
			}
		})
		for _, host := range topo.Hosts {
			cfg.ListenHosts = append(cfg.ListenHosts, host.Addr)
		}
		cfg.CommandPrefix = topo.Exec
	}
	c, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.cluster = c
	t.Cleanup(h.cleanup)
	if opts.proxy {
		var ids []int
		for _, n := range c.Nodes() {
			ids = append(ids, n.ID)
		}
		h.net, err = faultproxy.NewNetwork(ids, func(id int) string { return c.Node(id).ListenAddr }, seed)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StartAll(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	return h
}

func (h *harness) cleanup() {
	t := h.t
	if h.cluster != nil {
		h.cluster.Close()
	}
	if h.net != nil {
		h.net.Close()
	}
	if !t.Failed() {
		return
	}
	t.Logf("FAILED with seed %d; replay: %s", h.seed, replayCommand(t, h.seed, h.opts.replayAs))
	t.Logf("faults injected:\n  %s", strings.Join(h.faultLog(), "\n  "))
	if h.cluster == nil {
		return
	}
	dir, err := h.artifactDir()
	if err != nil {
		t.Logf("no artifact dir: %v", err)
		return
	}
	os.MkdirAll(dir, 0o755) // an empty one is removed after a passing history check
	for _, n := range h.cluster.Nodes() {
		copyFile(n.LogPath, filepath.Join(dir, filepath.Base(n.LogPath)))
	}
	os.WriteFile(filepath.Join(dir, "faults.txt"), []byte(strings.Join(h.faultLog(), "\n")+"\n"), 0o644)
	t.Logf("replica output and fault log saved in %s", dir)
}

var artifactDirs sync.Map // test name -> dir, one per test

func (h *harness) artifactDir() (string, error) {
	if d, ok := artifactDirs.Load(h.t.Name()); ok {
		return d.(string), nil
	}
	d, err := history.ArtifactDir(fmt.Sprintf("%s-seed%d", h.t.Name(), h.seed))
	if err != nil {
		return "", err
	}
	artifactDirs.Store(h.t.Name(), d)
	return d, nil
}

func copyFile(src, dst string) {
	in, err := os.Open(src)
	if err != nil {
		return
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return
	}
	defer out.Close()
	io.Copy(out, in)
}

// fault records a fault in the log (printed on failure and in summaries).
func (h *harness) fault(format string, args ...any) {
	line := fmt.Sprintf("%8.3fs %s", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
	h.mu.Lock()
	h.faults = append(h.faults, line)
	h.mu.Unlock()
	h.t.Log("fault: " + line)
}

func (h *harness) faultLog() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.faults...)
}

// sleep waits d; tests are bounded by their own schedule, not by polling loops.
func sleep(d time.Duration) { time.Sleep(d) }

var httpClient = &http.Client{Timeout: 2 * time.Second}

func getJSON(addr, path string, v any) error {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s%s: %s", addr, path, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// Admin endpoint shapes (pipeline.Status, pipeline.AppliedState).
type replicaStatus struct {
	ID       uint32 `json:"id"`
	Leader   uint32 `json:"leader"`
	IsLeader bool   `json:"is_leader"`
}

type appliedState struct {
	Slot       uint64 `json:"slot"`
	Commands   uint64 `json:"commands"`
	Duplicates uint64 `json:"duplicates"`
	Digest     uint64 `json:"digest"`
}

func (h *harness) running(id int) bool { return h.cluster.State(id) == cluster.Running }

// leader returns the replica that says it leads, 0 if none does within timeout.
func (h *harness) leader(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range h.cluster.Nodes() {
			if !h.running(n.ID) {
				continue
			}
			var s replicaStatus
			if getJSON(n.AdminAddr, "/debug/status", &s) == nil && s.IsLeader {
				return n.ID
			}
		}
		if time.Now().After(deadline) {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderOrAny returns the leader, or a random running replica when none is known.
func (h *harness) leaderOrAny() int {
	if id := h.leader(3 * time.Second); id != 0 {
		return id
	}
	return h.randomRunning(0)
}

// randomRunning picks a running replica other than except (0: none excluded).
func (h *harness) randomRunning(except int) int {
	var ids []int
	for _, n := range h.cluster.Nodes() {
		if n.ID != except && h.running(n.ID) {
			ids = append(ids, n.ID)
		}
	}
	if len(ids) == 0 {
		return 0
	}
	return ids[h.rng.IntN(len(ids))]
}

func (h *harness) applied(id int) (appliedState, error) {
	var a appliedState
	err := getJSON(h.cluster.Node(id).AdminAddr, "/debug/applied", &a)
	return a, err
}

// converge waits until every listed replica reports the same applied slot and digest, and
// that agreement has held for stable. It returns the agreed state.
func (h *harness) converge(ids []int, stable, timeout time.Duration) (appliedState, error) {
	deadline := time.Now().Add(timeout)
	var agreed appliedState
	var since time.Time
	var last []appliedState
	for {
		states := make([]appliedState, 0, len(ids))
		var err error
		for _, id := range ids {
			a, e := h.applied(id)
			if e != nil {
				err = fmt.Errorf("replica %d: %w", id, e)
				break
			}
			states = append(states, a)
		}
		same := err == nil
		for _, s := range states {
			same = same && s.Slot == states[0].Slot && s.Digest == states[0].Digest
		}
		switch {
		case same && since.IsZero() || same && states[0] != agreed:
			agreed, since = states[0], time.Now()
		case same && time.Since(since) >= stable:
			return agreed, nil
		case !same:
			since = time.Time{}
		}
		last = states
		if time.Now().After(deadline) {
			return appliedState{}, fmt.Errorf("replicas %v did not converge in %v: last states %+v (err %v)", ids, timeout, last, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healAll lifts every network fault and brings every replica back to running.
func (h *harness) healAll() {
	if h.net != nil {
		h.net.Heal()
	}
	if h.topo != nil {
		for _, host := range h.topo.Hosts {
			if err := h.topo.Reconnect(host.Index); err != nil {
				h.t.Errorf("heal: %v", err)
			}
			if err := h.topo.ClearNetem(host.Index); err != nil && !errors.Is(err, netns.ErrNetemUnsupported) {
				h.t.Errorf("heal: %v", err)
			}
		}
	}
	if err := h.cluster.ReleaseDisks(); err != nil {
		h.t.Errorf("heal: %v", err)
	}
	for _, n := range h.cluster.Nodes() {
		switch h.cluster.State(n.ID) {
		case cluster.Paused:
			if err := h.cluster.Resume(n.ID); err != nil {
				h.t.Errorf("heal: %v", err)
			}
		case cluster.Stopped:
			if err := h.cluster.Start(n.ID); err != nil {
				h.t.Errorf("heal: restart replica %d: %v", n.ID, err)
			}
		}
	}
}

func allIDs(c *cluster.Cluster) []int {
	var ids []int
	for _, n := range c.Nodes() {
		ids = append(ids, n.ID)
	}
	return ids
}
