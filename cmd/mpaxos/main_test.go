package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/internal/testnet"
	"github.com/mpaxos/mpaxos/pipeline"
)

const (
	testSecret      = "process-test-secret-0123456789"
	testCluster     = 3
	electionTimeout = 300 * time.Millisecond
)

// binary is the mpaxos executable built once for this test run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mpaxos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mpaxos")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building mpaxos:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// replica is one `mpaxos serve` child process.
type replica struct {
	t      *testing.T
	id     uint32
	args   []string
	addr   string
	admin  string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	ready  chan struct{}
	exited chan struct{}
}

func (r *replica) start() {
	r.t.Helper()
	r.cmd = exec.Command(binary, r.args...)
	r.stderr = &lockedBuffer{}
	r.cmd.Stderr = r.stderr
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	r.ready, r.exited = make(chan struct{}), make(chan struct{})
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	cmd, ready, exited := r.cmd, r.ready, r.exited
	r.t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; harmless if it already exited
		<-exited
	})
	want := fmt.Sprintf("mpaxos: replica %d serving on ", r.id)
	go func() {
		sc := bufio.NewScanner(stdout)
		once := false
		for sc.Scan() {
			if !once && strings.HasPrefix(sc.Text(), want) {
				once = true
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-ready:
	case <-exited:
		r.t.Fatalf("replica %d exited before it was ready: %s", r.id, r.stderr.String())
	case <-time.After(20 * time.Second):
		r.t.Fatalf("replica %d not ready after 20s: %s", r.id, r.stderr.String())
	}
}

func (r *replica) signal(sig syscall.Signal) {
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		r.t.Fatalf("replica %d did not exit after %v", r.id, sig)
	}
}

func (r *replica) getJSON(path string, v any) error {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + r.admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func startReplicas(t *testing.T, n int, extra ...string) []*replica {
	t.Helper()
	addrs := testnet.FreeAddrs(t, 2*n)
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, addrs[i]))
	}
	var rs []*replica
	for i := 0; i < n; i++ {
		r := &replica{t: t, id: uint32(i + 1), addr: addrs[i], admin: addrs[n+i]}
		r.args = append([]string{"serve", "--id", fmt.Sprint(i + 1), "--peers", strings.Join(peers, ","),
			"--admin", r.admin, "--data", t.TempDir(), "--secret", testSecret,
			"--cluster-id", fmt.Sprint(testCluster), "--election-timeout", electionTimeout.String(), "--tick", "10ms",
			"--log-level", "warn"}, extra...)
		rs = append(rs, r)
	}
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); r.start() }()
	}
	wg.Wait()
	return rs
}

func endpoints(rs []*replica) []string {
	var e []string
	for _, r := range rs {
		e = append(e, r.addr)
	}
	return e
}

// leaderOf polls the admin servers until one of the live replicas leads.
func leaderOf(t *testing.T, rs []*replica, timeout time.Duration) *replica {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, r := range rs {
			var st pipeline.Status
			if r.getJSON("/debug/status", &st) == nil && st.IsLeader {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader within %v", timeout)
	return nil
}

// converged waits until every replica in rs reports the same applied log with at least
// commands distinct commands.
func converged(t *testing.T, rs []*replica, commands uint64, timeout time.Duration) pipeline.AppliedState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var states []pipeline.AppliedState
	for time.Now().Before(deadline) {
		states = states[:0]
		same := true
		for _, r := range rs {
			var a pipeline.AppliedState
			if err := r.getJSON("/debug/applied", &a); err != nil {
				same = false
				break
			}
			if len(states) > 0 && a != states[0] {
				same = false
			}
			states = append(states, a)
		}
		if same && len(states) == len(rs) && states[0].Commands-states[0].Duplicates >= commands {
			return states[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("replicas did not converge on %d commands: %+v", commands, states)
	return pipeline.AppliedState{}
}

func dial(t *testing.T, eps []string, inflight int) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = eps
	cfg.ClusterID = testCluster
	cfg.InflightMax = inflight
	cfg.RequestTimeout = 30 * time.Second
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// appendAll runs every client's n appends concurrently and returns the positions.
func appendAll(t *testing.T, clients []*client.Client, n int) []client.Result {
	t.Helper()
	var mu sync.Mutex
	var out []client.Result
	var wg sync.WaitGroup
	for ci, c := range clients {
		for j := 0; j < n; j++ {
			wg.Add(1)
			err := c.AppendAsync([]byte(fmt.Sprintf("%d/%d", ci, j)), func(r client.Result, err error) {
				defer wg.Done()
				if err != nil {
					t.Errorf("client %d append %d: %v", ci, j, err)
					return
				}
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			})
			if err != nil {
				wg.Done()
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	return out
}

func distinct(t *testing.T, rs []client.Result) {
	t.Helper()
	seen := map[client.Result]bool{}
	for _, r := range rs {
		if seen[r] {
			t.Fatalf("position %+v answered twice", r)
		}
		seen[r] = true
	}
}

func TestProcessClusterSurvivesLeaderKillAndRestart(t *testing.T) {
	rs := startReplicas(t, 3)
	leader := leaderOf(t, rs, 10*time.Second)
	var clients []*client.Client
	for i := 0; i < 6; i++ {
		clients = append(clients, dial(t, endpoints(rs), 64))
	}
	results := appendAll(t, clients, 300)
	total := len(results)

	// Keep load running across the kill and measure how long the clients stall.
	var stop atomic.Bool
	var background sync.WaitGroup
	var bgResults []client.Result
	var bgMu sync.Mutex
	for _, c := range clients {
		background.Add(1)
		go func() {
			defer background.Done()
			for !stop.Load() {
				r, err := c.Append(context.Background(), []byte("during-failover"))
				if err != nil {
					t.Errorf("append during failover: %v", err)
					return
				}
				bgMu.Lock()
				bgResults = append(bgResults, r)
				bgMu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	leader.signal(syscall.SIGKILL)
	var live []*replica
	for _, r := range rs {
		if r != leader {
			live = append(live, r)
		}
	}
	// A command submitted right after the kill must be chosen within the (randomised, up
	// to twice the configured) election timeout plus 2 s.
	limit := 2*electionTimeout + 2*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	probe := dial(t, endpoints(rs), 1)
	if _, err := probe.Append(ctx, []byte("after-kill")); err != nil {
		t.Fatalf("a command submitted after killing leader %d was not chosen within %v: %v", leader.id, limit, err)
	}
	stalled := time.Since(killed)
	probes := 1 // acknowledged, position not kept
	newLeader := leaderOf(t, live, 10*time.Second)
	t.Logf("leader %d killed; replica %d leads; a new command was chosen %v after the kill", leader.id, newLeader.id, stalled)
	stop.Store(true)
	background.Wait()
	results = append(results, bgResults...)
	results = append(results, appendAll(t, clients, 100)...)

	// The killed replica restarts from its WAL and catches up to the same log.
	leader.start()
	results = append(results, appendAll(t, clients, 100)...)
	distinct(t, results)
	total = len(results) + probes
	applied := converged(t, rs, uint64(total), 20*time.Second)
	if got := applied.Commands - applied.Duplicates; got != uint64(total) {
		t.Fatalf("applied %d distinct commands, %d were acknowledged", got, total)
	}
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	rs := startReplicas(t, 1)
	c := dial(t, endpoints(rs), 16)
	appendAll(t, []*client.Client{c}, 50)
	// The admin endpoints answer while it runs.
	for path, want := range map[string]string{
		"/metrics":       "mpaxos_commands_chosen_total 50",
		"/debug/latency": `"phase2_round_trip"`,
		"/debug/pprof/":  "goroutine",
		"/debug/applied": `"commands": 50`,
		"/debug/status":  `"is_leader": true`,
	} {
		resp, err := http.Get("http://" + rs[0].admin + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: status %d, body lacks %q:\n%.500s", path, resp.StatusCode, want, body)
		}
	}
	rs[0].signal(syscall.SIGTERM)
	if code := rs[0].cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0; stderr: %s", code, rs[0].stderr.String())
	}
}

func TestCorruptWALRefusesToStart(t *testing.T) {
	rs := startReplicas(t, 1)
	c := dial(t, endpoints(rs), 1)
	for i := 0; i < 20; i++ { // one at a time: each is its own WAL batch
		if _, err := c.Append(context.Background(), []byte("0123456789abcdef")); err != nil {
			t.Fatal(err)
		}
	}
	rs[0].signal(syscall.SIGTERM)
	var data string
	for i, a := range rs[0].args {
		if a == "--data" {
			data = rs[0].args[i+1]
		}
	}
	segments, _ := filepath.Glob(filepath.Join(data, "*.wal"))
	if len(segments) == 0 {
		t.Fatalf("no WAL segment in %s", data)
	}
	f, err := os.OpenFile(segments[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a payload byte of the first record (segment header 32, batch header 20, record
	// header 17): later batches vouch that this is corruption, not a torn tail.
	b := make([]byte, 1)
	_, _ = f.ReadAt(b, 32+20+17+4)
	b[0] ^= 0xff
	_, _ = f.WriteAt(b, 32+20+17+4)
	_ = f.Close()
	out, code := runBinary(t, rs[0].args...)
	if code == 0 || !strings.Contains(out, "corrupt") || strings.Count(out, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q: want one line naming the corruption", code, out)
	}
}

// runBinary runs the binary to completion (10 s at most) and returns stderr and the exit code.
func runBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "MPAXOS_SECRET=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	return stderr.String(), cmd.ProcessState.ExitCode()
}

func TestBadFlagsExitWithOneClearLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := testnet.FreeAddrs(t, 2)
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	_ = os.WriteFile(notADir, []byte("x"), 0o600)
	badConfig := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(badConfig, []byte(`{"windoww": 4}`), 0o600)
	base := func(extra ...string) []string {
		return append([]string{"serve", "--id", "1", "--peers", "1=" + free[0], "--data", filepath.Join(dir, "d"),
			"--secret", testSecret}, extra...)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"launch"}, "unknown command"},
		{"unknown flag", base("--bogus"), "-bogus"},
		{"missing id", []string{"serve", "--peers", "1=" + free[0], "--data", dir, "--secret", testSecret}, "--id"},
		{"bad peers", base("--peers", "1=nocolon"), "--peers"},
		{"self not in peers", base("--peers", "2="+free[0]), "--peers"},
		{"zero window", base("--window", "0"), "--window"},
		{"negative linger", base("--linger", "-1s"), "--linger"},
		{"bad window value", base("--window", "many"), "-window"},
		{"short secret", base("--secret", "short"), "--secret"},
		{"no secret", []string{"serve", "--id", "1", "--peers", "1=" + free[0], "--data", dir}, "--secret"},
		{"no data dir", []string{"serve", "--id", "1", "--peers", "1=" + free[0], "--secret", testSecret}, "--data"},
		{"tiny election timeout", base("--election-timeout", "20ms"), "--election-timeout"},
		{"negative event loops", base("--event-loops", "-1"), "--event-loops"},
		{"too many event loops", base("--event-loops", "100000"), "--event-loops"},
		{"zero client connections", base("--client-connections-max", "0"), "--client-connections-max"},
		{"zero handshakes", base("--handshakes-max", "0"), "--handshakes-max"},
		{"client outbound under two replies", base("--client-outbound-bytes-max", "1024"), "--client-outbound-bytes-max"},
		{"buffered bytes under one client", base("--buffered-bytes-max", "1048576"), "--buffered-bytes-max"},
		{"zero frame timeout", base("--frame-timeout", "0s"), "--frame-timeout"},
		{"negative idle timeout", base("--idle-timeout", "-1s"), "--idle-timeout"},
		{"data dir is a file", base("--data", notADir), notADir},
		{"port in use", base("--listen", busy.Addr().String()), "cannot listen"},
		{"admin port in use", base("--admin", busy.Addr().String()), "admin"},
		{"missing config file", base("--config", filepath.Join(dir, "none.json")), "--config"},
		{"unknown config key", base("--config", badConfig), "windoww"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runBinary(t, tc.args...)
			if code == 0 {
				t.Fatalf("exit status 0, want non-zero; stderr %q", out)
			}
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "mpaxos: ") || !strings.Contains(out, tc.want) {
				t.Fatalf("stderr %q: want one line starting 'mpaxos: ' naming %q", out, tc.want)
			}
		})
	}
}

func TestConfigFileSetsFlagsAndCommandLineWins(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	_ = os.WriteFile(path, []byte(`{"id": 2, "peers": {"1": "127.0.0.1:7001", "2": "127.0.0.1:7002"},
		"data": "/tmp/x", "window": 4, "fsync": false, "linger": "2ms"}`), 0o600)
	o, err := parseServe([]string{"--config", path, "--window", "6", "--event-loops", "1", "--secret", testSecret,
		"--client-connections-max", "100", "--frame-timeout", "3s", "--idle-timeout", "1m"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.ID != 2 || len(o.cfg.Peers) != 2 || o.cfg.Window != 6 || !o.cfg.NoSync || o.cfg.Batching.Linger != 2*time.Millisecond ||
		o.cfg.Network.EventLoops != 1 || o.cfg.Network.ClientConnectionsMax != 100 ||
		o.cfg.Network.FrameTimeout != 3*time.Second || o.cfg.Network.IdleTimeout != time.Minute {
		t.Fatalf("config %+v", o.cfg)
	}
	o, err = parseServe([]string{"--id", "1", "--peers", "1=127.0.0.1:1", "--data", dir},
		func(k string) string {
			if k == "MPAXOS_SECRET" {
				return testSecret
			}
			return ""
		})
	if err != nil || string(o.cfg.Secret) != testSecret {
		t.Fatalf("secret from MPAXOS_SECRET: %v %q", err, o.cfg.Secret)
	}
}

// Issue 15, defect 4: /debug/pprof/cmdline served --secret, and the admin port had no
// authentication. The command line is never served; with a token, every admin path needs it;
// pprof can be switched off.
func TestAdminNeverServesTheSecret(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("admin-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(r *replica, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+r.admin+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	paths := []string{"/debug/pprof/cmdline", "/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/metrics",
		"/debug/status", "/debug/latency", "/debug/applied"}

	open := startReplicas(t, 1)[0]
	for _, path := range paths {
		code, body := get(open, path, "")
		if strings.Contains(body, testSecret) {
			t.Errorf("%s (status %d) serves the secret", path, code)
		}
		if path == "/debug/pprof/cmdline" && code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", path, code)
		}
	}

	locked := startReplicas(t, 1, "--admin-token-file", tokenFile, "--admin-pprof=false")[0]
	for _, path := range paths {
		if code, _ := get(locked, path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without the token: status %d, want 401", path, code)
		}
		if code, _ := get(locked, path, "wrong-token"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: status %d, want 401", path, code)
		}
	}
	if code, body := get(locked, "/metrics", "admin-token-0123456789"); code != 200 || !strings.Contains(body, "mpaxos_") {
		t.Errorf("/metrics with the token: status %d", code)
	}
	if code, _ := get(locked, "/debug/pprof/", "admin-token-0123456789"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ with --admin-pprof=false: status %d, want 404", code)
	}
}
