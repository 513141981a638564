package netfuzz

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/pipeline"
	"github.com/mpaxos/mpaxos/tests/chaos/cluster"
)

var (
	flagDuration    = flag.Duration("duration", 15*time.Second, "how long the attackers run (make netfuzz: DURATION, default 10m)")
	flagSeed        = flag.Uint64("seed", 0, "seed of every attacker's PRNG; 0 picks one (logged, for a replay)")
	flagConnections = flag.Int("connections", 48, "attacker goroutines, each holding one connection at a time")
	flagFrameRate   = flag.Int("frame-rate", 4000, "frames per second all attackers together send at most")
	flagWriters     = flag.Int("writers", 4, "goroutines of the well-behaved client appending")
	flagWriteRate   = flag.Int("write-rate", 1000, "appends per second the well-behaved client makes at most (each is kept, and read back at the end)")
	flagStallMax    = flag.Duration("stall-max", 3*time.Second,
		"longest time without an acknowledged append, or without a replica applying, that is not a stall: 10 election timeouts of 300 ms (a healthy run under attack: 0.15-0.4 s)")
	flagPeerInterval = flag.Duration("peer-session-interval", 3*time.Second,
		"least time between two authenticated peer sessions to one replica: each displaces the real peer's link, and one displaced "+
			"again within 2 s backs off further (findings_test.go, finding 1)")
	flagForge = flag.Bool("forge", false,
		"let the authenticated peer send well-formed forgeries a real peer could send; only crashes and hangs are then asserted (doc.go)")
	flagAttackers  = flag.String("attackers", "", "comma-separated attackers to run (default: all): "+strings.Join(kindNames[:], ", "))
	flagLogLevel   = flag.String("replica-log-level", "warn", "the replicas' --log-level")
	flagFsync      = flag.Bool("fsync", false, "run the replicas with fsync on")
	flagRaceServer = flag.Bool("race-server", false, "build the replicas with -race (a race report then exits them: a crash)")
	flagBinary     = flag.String("mpaxos-bin", "", "attack this mpaxos binary instead of building ./cmd/mpaxos")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(m.Run())
}

// Cluster under attack.
const (
	replicas       = 3
	clusterID      = 15
	clusterSecret  = "netfuzz-cluster-secret-0123456789"
	checkInterval  = time.Second
	probeTimeout   = 2 * time.Second  // an admin request or a handshake probe
	convergeWithin = 60 * time.Second // the replicas' applied logs agree once quiet
	verifyWithin   = 5 * time.Minute  // every acknowledged append read back (~10 k reads/s)
	verifyReaders  = 16
)

// TestNetworkFuzz runs every attacker (attack_test.go) against a live 3-replica cluster of
// real processes for -duration while a well-behaved client appends, and checks every second
// that no replica exited, every replica answers, acknowledgements keep coming and every
// replica keeps applying; at the end, that every acknowledged append reads back and the
// replicas' applied logs agree. See doc.go.
func TestNetworkFuzz(t *testing.T) {
	if testing.Short() {
		t.Skip("network fuzzer: real processes under attack; not in -short")
	}
	seed := *flagSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("netfuzz: seed %d (replay: go test ./tests/netfuzz -run TestNetworkFuzz -seed %d -duration %v)", seed, seed, *flagDuration)
	env := startCluster(t)

	writerClient := dialClient(t, env.cluster.Endpoints(), *flagWriters)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWriter(ctx, writerClient, *flagWriters, *flagWriteRate)
	f := newFuzzer(fuzzConfig{seed: seed, clusterID: clusterID, secret: []byte(clusterSecret),
		addrs: env.cluster.Endpoints(), connections: *flagConnections, frameRate: *flagFrameRate,
		peerSessionInterval: *flagPeerInterval, forge: *flagForge, writerClientID: writerClient.ID(),
		acknowledged: w.acknowledged, kinds: attackersFlag(t)})
	leaderChangesBefore := env.leaderChanges()

	fuzzCtx, stopFuzz := context.WithCancel(ctx)
	fuzzDone := make(chan struct{})
	go func() { f.run(fuzzCtx); close(fuzzDone) }()
	started := time.Now()
	m := newMonitor(env, w, f, dialClient(t, env.cluster.Endpoints(), 1))
	problems := m.watch(*flagDuration)
	stopFuzz()
	<-fuzzDone
	fuzzed := time.Since(started)
	problems = append(problems, m.check()...)
	cancel()
	w.wait()

	r := report{seed: seed, fuzzed: fuzzed, f: f, w: w, leaderChanges: env.leaderChanges() - leaderChangesBefore}
	if len(problems) == 0 || *flagForge {
		r.checked = true
		r.converged, r.convergeErr = env.converged(w, convergeWithin)
		if r.convergeErr == nil {
			vctx, vcancel := context.WithTimeout(context.Background(), verifyWithin)
			r.mismatches, r.verified = verifyAll(vctx, dialClient(t, env.cluster.Endpoints(), verifyReaders), w.snapshot(), verifyReaders)
			vcancel()
		}
	}
	problems = append(problems, m.exits()...)
	t.Log(r.String())
	if r.checked && !*flagForge {
		problems = append(problems, r.problems()...)
	}
	if len(problems) > 0 {
		dir := env.keep(f)
		t.Fatalf("netfuzz (seed %d): %d problems:\n  %s\nreplica logs and the last frames sent to each replica: %s",
			seed, len(problems), strings.Join(problems, "\n  "), dir)
	}
}

// attackersFlag parses -attackers into the set of attackers to run.
func attackersFlag(t *testing.T) [kindCount]bool {
	var on [kindCount]bool
	if *flagAttackers == "" {
		for k := range on {
			on[k] = true
		}
		return on
	}
	for _, name := range strings.Split(*flagAttackers, ",") {
		found := false
		for k := range kindCount {
			if kindNames[k] == strings.TrimSpace(name) {
				on[k], found = true, true
			}
		}
		if !found {
			t.Fatalf("-attackers: %q is none of %s", name, strings.Join(kindNames[:], ", "))
		}
	}
	return on
}

// env is the live cluster.
type env struct {
	t       *testing.T
	cluster *cluster.Cluster
	base    string
	kept    bool
}

func startCluster(t *testing.T) *env {
	t.Helper()
	bin := *flagBinary
	if bin == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var err error
		if bin, err = cluster.Build(ctx, t.TempDir(), *flagRaceServer); err != nil {
			t.Fatalf("build mpaxos: %v", err)
		}
	}
	base, err := os.MkdirTemp("", "netfuzz-")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--log-level", *flagLogLevel, "--fsync=" + strconv.FormatBool(*flagFsync)}
	c, err := cluster.New(cluster.Config{Binary: bin, Replicas: replicas, BaseDir: base,
		ClusterID: clusterID, Secret: clusterSecret, Args: args, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cluster: c, base: base}
	t.Cleanup(func() {
		c.Close() // kills every replica by PID and waits for it
		if !e.kept {
			os.RemoveAll(base)
		}
	})
	if *flagRaceServer {
		os.Setenv("GORACE", "halt_on_error=1 exitcode=66") // inherited by the replicas
	}
	if err := c.StartAll(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	if e.leader(10*time.Second) == 0 {
		t.Fatal("no leader within 10 s")
	}
	return e
}

// keep leaves the cluster's directory in place and writes the last frames sent to each
// replica beside the replica logs; it returns the directory.
func (e *env) keep(f *fuzzer) string {
	e.kept = true
	for i, l := range f.recent {
		path := filepath.Join(e.base, "logs", fmt.Sprintf("frames-to-replica-%d.txt", i+1))
		_ = os.WriteFile(path, []byte(l.dump()), 0o644)
	}
	return filepath.Join(e.base, "logs")
}

var httpClient = &http.Client{Timeout: probeTimeout}

func getJSON(addr, path string, v any) error {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

func (e *env) leader(timeout time.Duration) int {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, n := range e.cluster.Nodes() {
			var s pipeline.Status
			if getJSON(n.AdminAddr, "/debug/status", &s) == nil && s.IsLeader {
				return n.ID
			}
		}
	}
	return 0
}

// leaderChanges sums mpaxos_leader_changes_total over the replicas.
func (e *env) leaderChanges() int {
	total := 0
	for _, n := range e.cluster.Nodes() {
		total += int(metric(n.AdminAddr, "mpaxos_leader_changes_total"))
	}
	return total
}

// metric reads one unlabelled sample of /metrics (0 if absent).
func metric(addr, name string) float64 {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

// converged waits until every replica reports the same applied log, holding at least every
// acknowledged offset.
func (e *env) converged(w *writer, timeout time.Duration) (pipeline.AppliedState, error) {
	w.mu.Lock()
	want := w.offsetHi
	w.mu.Unlock()
	var states []pipeline.AppliedState
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		states = states[:0]
		same := true
		for _, n := range e.cluster.Nodes() {
			var a pipeline.AppliedState
			if err := getJSON(n.AdminAddr, "/debug/applied", &a); err != nil {
				same = false
				break
			}
			same = same && (len(states) == 0 || a == states[0])
			states = append(states, a)
		}
		if same && len(states) == replicas && states[0].Offset >= want {
			return states[0], nil
		}
	}
	return pipeline.AppliedState{}, fmt.Errorf("the replicas' applied logs did not agree within %v (acknowledged offsets up to %d): %+v", timeout, want, states)
}

func dialClient(t *testing.T, endpoints []string, inflight int) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.ClusterID = clusterID
	cfg.InflightMax = inflight
	cfg.RequestTimeout = appendTimeout
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// monitor checks the cluster every checkInterval while the attackers run.
type monitor struct {
	env    *env
	w      *writer
	f      *fuzzer
	reader *client.Client
	rng    *rand.Rand

	applied      []uint64    // per replica: its applied offset at its last progress
	progressAt   []time.Time // per replica: when its applied offset last grew (or it was level)
	unresponsive []time.Time // per replica: when its admin port first failed to answer (zero: it answers)
}

func newMonitor(e *env, w *writer, f *fuzzer, reader *client.Client) *monitor {
	m := &monitor{env: e, w: w, f: f, reader: reader, rng: rand.New(rand.NewPCG(1, 2)),
		applied: make([]uint64, replicas), progressAt: make([]time.Time, replicas), unresponsive: make([]time.Time, replicas)}
	for i := range m.progressAt {
		m.progressAt[i] = time.Now()
	}
	return m
}

// watch checks every checkInterval for d and returns the problems found (it stops early at
// the first check that finds any).
func (m *monitor) watch(d time.Duration) []string {
	tick := time.NewTicker(checkInterval)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-tick.C
		if problems := m.check(); len(problems) > 0 {
			return problems
		}
	}
	return nil
}

// check runs every check once.
func (m *monitor) check() []string {
	problems := m.exits()
	problems = append(problems, m.f.takeViolations()...)
	if gap := m.w.sinceAck(); gap > *flagStallMax {
		problems = append(problems, fmt.Sprintf("STALL: no append acknowledged for %v", gap.Round(time.Millisecond)))
	}
	for i, n := range m.env.cluster.Nodes() {
		problems = append(problems, m.checkReplica(i, n)...)
	}
	problems = append(problems, m.spotRead()...)
	if *flagForge {
		// Forgeries may stall the cluster or fork it (doc.go): only crashes, hangs and
		// protocol violations count.
		problems = slices.DeleteFunc(problems, func(p string) bool {
			return strings.HasPrefix(p, "STALL") || strings.HasPrefix(p, "READ")
		})
	}
	return problems
}

// exits reports every replica exit the test did not cause (a crash, a fatal error).
func (m *monitor) exits() []string {
	var problems []string
	for _, e := range m.env.cluster.UnexpectedExits() {
		problems = append(problems, "CRASH: "+e)
	}
	return problems
}

// checkReplica: replica i answers its admin port, completes a client handshake, and applies.
func (m *monitor) checkReplica(i int, n *cluster.Node) []string {
	now := time.Now()
	var a pipeline.AppliedState
	err := getJSON(n.AdminAddr, "/debug/applied", &a)
	if err == nil {
		err = handshakeProbe(n.ListenAddr)
	}
	if err != nil {
		if m.unresponsive[i].IsZero() {
			m.unresponsive[i] = now
		}
		if since := now.Sub(m.unresponsive[i]); since > *flagStallMax {
			return []string{fmt.Sprintf("HANG: replica %d has not answered for %v: %v", n.ID, since.Round(time.Millisecond), err)}
		}
		return nil
	}
	m.unresponsive[i] = time.Time{}
	m.f.slots[i].Store(a.Slot)
	m.w.mu.Lock()
	acknowledged := m.w.offsetHi
	m.w.mu.Unlock()
	if a.Offset > m.applied[i] || a.Offset >= acknowledged {
		m.applied[i], m.progressAt[i] = a.Offset, now
		return nil
	}
	if since := now.Sub(m.progressAt[i]); since > *flagStallMax {
		return []string{fmt.Sprintf("STALL: replica %d applied nothing for %v (applied offset %d, acknowledged up to %d)",
			n.ID, since.Round(time.Millisecond), a.Offset, acknowledged)}
	}
	return nil
}

// spotRead reads one acknowledged append back while the attack goes on.
func (m *monitor) spotRead() []string {
	offset, payload, ok := m.w.sample(func(n uint64) uint64 { return m.rng.Uint64N(n) })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), *flagStallMax)
	defer cancel()
	if problem := verifyOne(ctx, m.reader, offset, payload); problem != "" {
		return []string{"READ: " + problem}
	}
	return nil
}

// handshakeProbe completes a client handshake with addr: the replica still accepts
// connections and answers them.
func handshakeProbe(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(probeTimeout))
	r := bufio.NewReader(conn)
	if _, err := readFrameFrom(r); err != nil {
		return fmt.Errorf("no Challenge: %w", err)
	}
	hello := codec.Hello{Version: codec.HandshakeVersion, Role: codec.RoleClient, ClusterID: clusterID, ClientID: rand.Uint64()}
	if _, err := conn.Write(codec.AppendHello(nil, &hello)); err != nil {
		return err
	}
	frame, err := readFrameFrom(r)
	if err != nil {
		return fmt.Errorf("no Welcome: %w", err)
	}
	var w codec.Welcome
	return codec.DecodeWelcome(frame, &w, nil)
}

func readFrameFrom(r *bufio.Reader) ([]byte, error) {
	head, err := r.Peek(codec.FrameHeaderSize)
	if err != nil {
		return nil, err
	}
	_, n, err := codec.PeekFrame(head, nil)
	if err != nil && err != codec.ErrIncomplete {
		return nil, err
	}
	frame := make([]byte, min(n, answerBytesMax))
	_, err = io.ReadFull(r, frame)
	return frame, err
}

// report is the figures of one run.
type report struct {
	seed          uint64
	fuzzed        time.Duration
	f             *fuzzer
	w             *writer
	leaderChanges int
	checked       bool // the end-of-run checks ran (they are skipped after a problem)
	converged     pipeline.AppliedState
	convergeErr   error
	mismatches    []string
	verified      int
}

func (r *report) problems() []string {
	var problems []string
	_, _, _, doubles := r.w.figures()
	for _, d := range doubles {
		problems = append(problems, "FOOLED: "+d)
	}
	if r.convergeErr != nil {
		problems = append(problems, "DIVERGED: "+r.convergeErr.Error())
	}
	for _, m := range r.mismatches {
		problems = append(problems, "LOST: "+m)
	}
	if acked, _, _, _ := r.w.figures(); r.convergeErr == nil && r.verified != acked {
		problems = append(problems, fmt.Sprintf("LOST: read back %d of %d acknowledged appends", r.verified, acked))
	}
	return problems
}

func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "netfuzz: seed %d, attackers ran %v, %d connections at a time, at most %d frames/s, forge=%v\n",
		r.seed, r.fuzzed.Round(time.Millisecond), *flagConnections, *flagFrameRate, *flagForge)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "attacker\tconnections\tdial failures\tframes\tbytes\thandshakes\tanswers\tclosed by replica\t")
	var total kindStats
	for k := range kindCount {
		s := &r.f.stats[k]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", k, s.connections.Load(), s.dialFailures.Load(),
			s.frames.Load(), s.bytes.Load(), s.handshakes.Load(), s.answers.Load(), s.closedByServer.Load())
		total.connections.Add(s.connections.Load())
		total.frames.Add(s.frames.Load())
		total.bytes.Add(s.bytes.Load())
	}
	fmt.Fprintf(tw, "total\t%d\t\t%d\t%d\t\t\t\t\n", total.connections.Load(), total.frames.Load(), total.bytes.Load())
	tw.Flush()
	fmt.Fprintf(&b, "mutations:")
	for i := range mutationCount {
		fmt.Fprintf(&b, " %s=%d", i, r.f.mutations[i].Load())
	}
	fmt.Fprintf(&b, "\nforged peer Hellos (none may be welcomed):")
	for i := range forgeryCount {
		fmt.Fprintf(&b, " %s=%d", i, r.f.forged[i].Load())
	}
	fmt.Fprintf(&b, "\nanswers to the attackers' requests: redirects=%d", r.f.redirects.Load())
	for i := range r.f.statuses {
		if n := r.f.statuses[i].Load(); n > 0 {
			fmt.Fprintf(&b, " status%d=%d", i, n)
		}
	}
	fmt.Fprintf(&b, "\nauthenticated peer frames:")
	for i := range peerClassCount {
		fmt.Fprintf(&b, " %s=%d", i, r.f.peerMix[i].Load())
	}
	acked, gapMax, gapAt, _ := r.w.figures()
	fmt.Fprintf(&b, "\nwell-behaved client: %d appends acknowledged (%.0f/s), %d failed attempts, longest gap without an ack %v (ended %v into the run)",
		acked, float64(acked)/r.fuzzed.Seconds(), r.w.errors.Load(), gapMax.Round(time.Millisecond), gapAt.Sub(r.w.start).Round(time.Second))
	fmt.Fprintf(&b, "\nleader changes during the run: %d", r.leaderChanges)
	switch {
	case !r.checked:
		fmt.Fprintf(&b, "\nend-of-run checks skipped: the run already failed")
		return b.String()
	}
	fmt.Fprintf(&b, "\nread back with ReadAt: %d of %d acknowledged appends, %d mismatches", r.verified, acked, len(r.mismatches))
	if r.convergeErr == nil {
		fmt.Fprintf(&b, "\nreplicas agree once quiet: slot %d, offset %d, digest %#x", r.converged.Slot, r.converged.Offset, r.converged.Digest)
	} else {
		fmt.Fprintf(&b, "\nreplicas: %v", r.convergeErr)
	}
	return b.String()
}
