package rtt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/pipeline"
	"github.com/mpaxos/mpaxos/tests/chaos/cluster"
	"github.com/mpaxos/mpaxos/tests/chaos/netns"
)

// point is one measured configuration.
type point struct {
	rtt      time.Duration
	clients  int
	inflight int
	window   int // --window of the replicas; 0: their default
}

// result is mpaxos-bench's --json line (bench.Result.JSON).
type result struct {
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50       int64   `json:"p50_us"`
	P99       int64   `json:"p99_us"`
	Errors    int64   `json:"errors"`
	Payload   int     `json:"payload_bytes"`
}

const (
	replicas     = 3
	clientHost   = 4
	payloadBytes = 16
)

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration like 10s", name, v)
	}
	return d
}

func TestThroughputAtRTT(t *testing.T) {
	if os.Getenv("MPAXOS_RTT") != "1" {
		t.Skip("RTT throughput run (~3 min): make bench-rtt, or MPAXOS_RTT=1 go test ./tests/rtt -run . -v -timeout 20m")
	}
	duration := envDuration(t, "MPAXOS_RTT_DURATION", 10*time.Second)
	warmup := envDuration(t, "MPAXOS_RTT_WARMUP", 2*time.Second)
	if err := netns.Available(); err != nil {
		t.Fatalf("the RTT benchmark runs replicas in network namespaces: %v", err)
	}
	dir := t.TempDir()
	serverBin, benchBin := buildBinaries(t, dir)
	topo, err := netns.CreateEmulated(clientHost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})

	// One cluster per window; each runs its points in order. The 25 ms window points ask
	// whether more slots in flight fill a longer pipe.
	plans := []struct {
		window int
		points []point
	}{
		{0, []point{
			{0, 64, 64, 0}, {0, 64, 256, 0},
			{5 * time.Millisecond, 64, 64, 0}, {5 * time.Millisecond, 64, 256, 0},
			{25 * time.Millisecond, 64, 64, 0}, {25 * time.Millisecond, 64, 256, 0}, {25 * time.Millisecond, 64, 1024, 0},
		}},
		{64, []point{{25 * time.Millisecond, 64, 64, 64}, {25 * time.Millisecond, 64, 256, 64}, {25 * time.Millisecond, 64, 1024, 64}}},
	}
	var rows []string
	for i, plan := range plans {
		args := []string{"--fsync=true"}
		if plan.window > 0 {
			args = append(args, "--window", fmt.Sprint(plan.window))
		}
		c := startCluster(t, topo, serverBin, filepath.Join(dir, fmt.Sprintf("cluster-%d", i)), args)
		for _, p := range plan.points {
			shape(t, topo, p.rtt)
			before := emulatorDrops(t, topo)
			r := runBench(t, topo, benchBin, c, p, duration, warmup)
			drops := emulatorDrops(t, topo) - before
			rows = append(rows, row(p, r, drops))
			t.Logf("%s", rows[len(rows)-1])
		}
		if err := c.Close(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	}
	shape(t, topo, 0)
	t.Logf("fsync on, %d replicas, %d B commands, closed loop, %v measured after %v warm-up each; "+
		"every host's egress delayed by RTT/2 (netns.CreateEmulated)\n\n%s\n%s\n%s",
		replicas, payloadBytes, duration, warmup,
		"| RTT | clients × in flight | window | cmds/s | closed-loop bound | p50 | p99 | MB/s | errors | emulator drops |",
		"|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
		strings.Join(rows, "\n"))
}

func buildBinaries(t *testing.T, dir string) (server, bench string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	server, err := cluster.Build(ctx, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	bench = filepath.Join(dir, "mpaxos-bench")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bench, "./cmd/mpaxos-bench")
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/mpaxos-bench: %v\n%s", err, out)
	}
	return server, bench
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v (%q)", err, out)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func startCluster(t *testing.T, topo *netns.Topology, bin, base string, args []string) *cluster.Cluster {
	t.Helper()
	cfg := cluster.Config{
		Binary: bin, Replicas: replicas, BaseDir: base, ClusterID: 9,
		Secret: "rtt-benchmark-secret-0123456789", Args: args,
		CommandPrefix: topo.Exec, ReadyTimeout: 30 * time.Second, Logf: t.Logf,
	}
	for i := 1; i <= replicas; i++ {
		cfg.ListenHosts = append(cfg.ListenHosts, topo.Hosts[i-1].Addr)
	}
	c, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // every replica killed by PID, whatever happens
	if err := c.StartAll(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	return c
}

// shape delays every host's egress by rtt/2: any two hosts are rtt apart.
func shape(t *testing.T, topo *netns.Topology, rtt time.Duration) {
	t.Helper()
	for _, h := range topo.Hosts {
		var err error
		if rtt == 0 {
			err = topo.ClearNetem(h.Index)
		} else {
			err = topo.SetNetem(h.Index, netns.Netem{Delay: rtt / 2})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// emulatorDrops sums the packets the emulator dropped for full queues or write errors (a
// shaping artefact that would distort the figures; loss is not configured here).
func emulatorDrops(t *testing.T, topo *netns.Topology) uint64 {
	t.Helper()
	var n uint64
	for _, h := range topo.Hosts {
		s, err := topo.Stats(h.Index)
		if err != nil {
			t.Fatal(err)
		}
		n += s.DroppedQueueFull + s.WriteErrors
	}
	return n
}

// runBench runs mpaxos-bench in the client host; it is killed by PID if it overstays.
func runBench(t *testing.T, topo *netns.Topology, bin string, c *cluster.Cluster, p point, duration, warmup time.Duration) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), duration+warmup+time.Minute)
	defer cancel()
	argv := append(topo.Exec(clientHost), bin,
		"--endpoints", strings.Join(c.Endpoints(), ","),
		"--cluster-id", fmt.Sprint(c.ClusterID()),
		"--clients", fmt.Sprint(p.clients), "--inflight", fmt.Sprint(p.inflight),
		"--payload", fmt.Sprint(payloadBytes),
		"--duration", duration.String(), "--warmup", warmup.String(), "--json")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mpaxos-bench at RTT %v: %v\n%s", p.rtt, err, stderr.String())
	}
	var r result
	line := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("mpaxos-bench output %q: %v\n%s", stdout.String(), err, stderr.String())
	}
	if r.Ops == 0 {
		t.Errorf("mpaxos-bench at RTT %v: no command acknowledged\n%s", p.rtt, stderr.String())
	}
	return r
}

func row(p point, r result, drops uint64) string {
	window := fmt.Sprintf("%d (default)", pipeline.DefaultWindow)
	if p.window > 0 {
		window = fmt.Sprint(p.window)
	}
	mb := r.OpsPerSec * float64(payloadBytes) / 1e6
	// A command waits at least two round trips (client to leader, leader to a follower
	// quorum), so a closed loop of N in flight cannot exceed N / (2 RTT).
	bound := "—"
	if p.rtt > 0 {
		bound = fmt.Sprintf("%.0f", float64(p.clients*p.inflight)/(2*p.rtt.Seconds()))
	}
	return fmt.Sprintf("| %v | %d × %d | %s | %.0f | %s | %s | %s | %.2f | %d | %d |",
		p.rtt, p.clients, p.inflight, window, r.OpsPerSec, bound, micros(r.P50), micros(r.P99), mb, r.Errors, drops)
}

func micros(us int64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.1f ms", float64(us)/1000)
	}
	return fmt.Sprintf("%d µs", us)
}
