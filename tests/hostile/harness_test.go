package hostile

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/pipeline"
	"github.com/mpaxos/mpaxos/tests/chaos/cluster"
)

var (
	flagHostile = flag.Bool("hostile", false, "run the hostile suite (also MPAXOS_HOSTILE=1)")
	flagBinary  = flag.String("mpaxos-bin", "", "attack this mpaxos binary instead of building ./cmd/mpaxos (e.g. an older commit's, for the before figures)")
)

// requireHostile skips unless the suite is enabled: it starts real processes and floods them.
func requireHostile(t *testing.T) {
	t.Helper()
	if !*flagHostile && os.Getenv("MPAXOS_HOSTILE") != "1" {
		t.Skip("hostile suite: run with -hostile or MPAXOS_HOSTILE=1 (make test-hostile)")
	}
}

// serverBinary builds ./cmd/mpaxos once per test process (or returns -mpaxos-bin).
func serverBinary(t *testing.T) string {
	t.Helper()
	if *flagBinary != "" {
		return *flagBinary
	}
	bin, err := cluster.BuildOnce(false)
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

// env is one live 3-replica cluster of real processes under a steady load.
type env struct {
	t       *testing.T
	cluster *cluster.Cluster
	load    *load
}

// startEnv starts the cluster with every limit at its default (the attacks target the
// defaults a deployment gets), waits for a leader and starts the load.
func startEnv(t *testing.T, args ...string) *env {
	t.Helper()
	e := startCluster(t, args...)
	e.load = startLoad(t, e.cluster.Endpoints(), e.cluster.ClusterID())
	return e
}

// startCluster starts 3 replicas (args: extra flags for each) with no load.
func startCluster(t *testing.T, args ...string) *env {
	t.Helper()
	requireHostile(t)
	c, err := cluster.New(cluster.Config{
		Binary:   serverBinary(t),
		Replicas: 3,
		BaseDir:  t.TempDir(),
		Logf:     t.Logf,
		Args:     args,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cluster: c}
	t.Cleanup(func() {
		if e.load != nil {
			e.load.stop()
		}
		c.Close() // kills every replica by PID and waits for it
		if t.Failed() {
			for _, n := range c.Nodes() {
				t.Logf("replica %d, last output:\n%s", n.ID, c.Output(n.ID))
			}
		}
	})
	if err := c.StartAll(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	if e.leader(10*time.Second) == 0 {
		t.Fatal("no leader within 10 s")
	}
	return e
}

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

// leader returns the replica that says it leads, 0 if none does within timeout.
func (e *env) leader(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range e.cluster.Nodes() {
			if e.cluster.State(n.ID) != cluster.Running {
				continue
			}
			var s pipeline.Status
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

// applied returns replica id's apply position (ok false if its admin port does not answer).
func (e *env) applied(id int) (pipeline.AppliedState, bool) {
	var a pipeline.AppliedState
	err := getJSON(e.cluster.Node(id).AdminAddr, "/debug/applied", &a)
	return a, err == nil
}

// rssBytes is the resident set of process pid (VmRSS), 0 if it cannot be read.
func rssBytes(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kib << 10
		}
	}
	return 0
}

// rssSampler records the peak RSS of one process until stopped.
type rssSampler struct {
	peak atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
}

func sampleRSS(pid int) *rssSampler {
	r := &rssSampler{done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			if rss := rssBytes(pid); rss > r.peak.Load() {
				r.peak.Store(rss)
			}
			select {
			case <-r.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return r
}

func (r *rssSampler) stop() int64 {
	close(r.done)
	r.wg.Wait()
	return r.peak.Load()
}

// Load: loadClients clients, each with loadWorkers goroutines appending 16-byte commands in a
// loop through the Go client (which follows the leader).
const (
	loadClients = 4
	loadWorkers = 16
)

type load struct {
	acks    atomic.Uint64
	errs    atomic.Uint64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	clients []*client.Client
}

func startLoad(t *testing.T, endpoints []string, clusterID uint64) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for range loadClients {
		cfg := client.DefaultConfig()
		cfg.Endpoints = endpoints
		cfg.ClusterID = clusterID
		cfg.InflightMax = loadWorkers
		cfg.RequestTimeout = 5 * time.Second
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			cancel()
			t.Fatalf("load client: %v", err)
		}
		l.clients = append(l.clients, c)
		for range loadWorkers {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				payload := []byte("hostile-suite-16")
				for ctx.Err() == nil {
					if _, err := c.Append(ctx, payload); err == nil {
						l.acks.Add(1)
					} else if ctx.Err() == nil {
						l.errs.Add(1)
						time.Sleep(10 * time.Millisecond)
					}
				}
			}()
		}
	}
	return l
}

func (l *load) stop() {
	l.cancel()
	for _, c := range l.clients {
		c.Close()
	}
	l.wg.Wait()
}

// rate is the acknowledged commands per second over d.
func (l *load) rate(d time.Duration) float64 {
	before := l.acks.Load()
	time.Sleep(d)
	return float64(l.acks.Load()-before) / d.Seconds()
}

// rateSampler records acks per interval until stopped.
type rateSampler struct {
	l       *load
	mu      sync.Mutex
	samples []float64 // acks/s per interval
	done    chan struct{}
	wg      sync.WaitGroup
}

func (l *load) sample(interval time.Duration) *rateSampler {
	r := &rateSampler{l: l, done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		last := l.acks.Load()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-r.done:
				return
			case <-tick.C:
				now := l.acks.Load()
				r.mu.Lock()
				r.samples = append(r.samples, float64(now-last)/interval.Seconds())
				r.mu.Unlock()
				last = now
			}
		}
	}()
	return r
}

// stop returns the mean and the lowest acks/s over the intervals.
func (r *rateSampler) stop() (mean, low float64) {
	close(r.done)
	r.wg.Wait()
	if len(r.samples) == 0 {
		return 0, 0
	}
	low = r.samples[0]
	for _, s := range r.samples {
		mean += s
		low = min(low, s)
	}
	return mean / float64(len(r.samples)), low
}

// rawClient is a client connection speaking the wire protocol directly, as an attacker does.
type rawClient struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRawClient connects and completes a client handshake (version 1, as every client may).
func dialRawClient(addr string, clusterID, clientID uint64) (*rawClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rawClient{conn: conn, r: newReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.readFrame(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading Challenge: %w", err)
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: clusterID, ClientID: clientID}
	if _, err := conn.Write(codec.AppendHello(nil, &hello)); err != nil {
		conn.Close()
		return nil, err
	}
	if typ, _, err := c.readFrame(); err != nil || typ != codec.TypeWelcome {
		conn.Close()
		return nil, fmt.Errorf("no Welcome (%v, %v)", typ, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

func newReader(conn net.Conn) *bufio.Reader { return bufio.NewReaderSize(conn, 4096) }

// readFrame reads one frame of at most 4 MiB.
func (c *rawClient) readFrame() (codec.MsgType, []byte, error) {
	header, err := c.r.Peek(codec.FrameHeaderSize)
	if err != nil {
		return 0, nil, err
	}
	typ, n, err := codec.PeekFrame(header, nil)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		return 0, nil, err
	}
	if n > 4<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	frame := make([]byte, n)
	_, err = io.ReadFull(c.r, frame)
	return typ, frame, err
}

// closedWithin reports whether the server closes c within d (reads until EOF or an error).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// countLines counts the lines of path containing substr.
func countLines(path, substr string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}

// warnSummary counts replica id's WARN lines by message (its log accumulates across restarts).
func (e *env) warnSummary(id int) map[string]int {
	out := map[string]int{}
	f, err := os.Open(e.cluster.Node(id).LogPath)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "level=WARN") {
			continue
		}
		msg := line
		if i := strings.Index(line, `msg="`); i >= 0 {
			msg = line[i+5:]
			if j := strings.IndexByte(msg, '"'); j >= 0 {
				msg = msg[:j]
			}
		}
		out[msg]++
	}
	return out
}

// metric reads one unlabelled sample of replica id's /metrics (ok false if absent).
func (e *env) metric(id int, name string) (float64, bool) {
	resp, err := httpClient.Get("http://" + e.cluster.Node(id).AdminAddr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// leaderChanges sums mpaxos_leader_changes_total over the given replicas.
func (e *env) leaderChanges(ids []int) float64 {
	total := 0.0
	for _, id := range ids {
		v, _ := e.metric(id, "mpaxos_leader_changes_total")
		total += v
	}
	return total
}
