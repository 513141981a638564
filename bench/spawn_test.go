package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // the fake server's admin address serves the default mux
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake `mpaxos serve` and as a fake benchmark parent,
// selected by this environment variable, so spawning and teardown are tested on real
// processes without the real server.
const roleEnv = "MPAXOS_BENCH_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "fake-server":
		os.Exit(fakeServer(os.Args[1:]))
	case "parent", "parent-panic", "parent-killed", "parent-stubborn":
		os.Exit(fakeParent(os.Getenv(roleEnv)))
	}
	os.Exit(m.Run())
}

// fakeServer checks its command line the way `mpaxos serve` would be called, prints the ready
// line and serves pprof on the admin address until killed. MPAXOS_FAKE selects misbehaviour:
// "exit" fails before ready, "silent" never gets ready, "ignore-term" ignores SIGTERM.
func fakeServer(args []string) int {
	mode := os.Getenv("MPAXOS_FAKE")
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(os.Stderr, "fake: want the serve subcommand")
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	id := fs.Uint("id", 0, "")
	peers := fs.String("peers", "", "")
	listen := fs.String("listen", "", "")
	admin := fs.String("admin", "", "")
	data := fs.String("data", "", "")
	clusterID := fs.Uint64("cluster-id", 0, "")
	fsync := fs.Bool("fsync", false, "")
	window := fs.Int("window", 0, "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	self := fmt.Sprintf("%d=%s", *id, *listen)
	switch {
	case *id == 0 || *clusterID == 0 || *admin == "":
		fmt.Fprintln(os.Stderr, "fake: missing --id, --cluster-id or --admin")
		return 2
	case !strings.Contains(","+*peers+",", ","+self+","):
		fmt.Fprintf(os.Stderr, "fake: --peers %q lacks %q\n", *peers, self)
		return 2
	case os.Getenv("MPAXOS_SECRET") == "":
		fmt.Fprintln(os.Stderr, "fake: no MPAXOS_SECRET")
		return 2
	case !*fsync:
		fmt.Fprintln(os.Stderr, "fake: want --fsync=true")
		return 2
	case os.Getenv("MPAXOS_FAKE_WANT_WINDOW") != "" && strconv.Itoa(*window) != os.Getenv("MPAXOS_FAKE_WANT_WINDOW"):
		fmt.Fprintf(os.Stderr, "fake: --window %d\n", *window)
		return 2
	}
	if st, err := os.Stat(*data); err != nil || !st.IsDir() {
		fmt.Fprintf(os.Stderr, "fake: data dir %q: %v\n", *data, err)
		return 2
	}
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "fake: refusing to start: disk on fire")
		return 3
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	}
	l, err := net.Listen("tcp", *admin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake: admin: %v\n", err)
		return 1
	}
	go func() { _ = http.Serve(l, nil) }()
	fmt.Println("some startup chatter")
	if mode != "silent" {
		fmt.Fprintf(os.Stderr, "mpaxos: replica %d serving on %s\n", *id, *listen)
	}
	select {}
}

// fakeParent starts a fake cluster, prints "PIDS p1 p2 p3" and then, by role: waits for a
// signal and tears down the way mpaxos-bench does; panics with a deferred Stop; just sleeps
// (the test SIGKILLs it); or ignores the first signal (the second must kill and exit 130).
func fakeParent(role string) int {
	self, err := os.Executable()
	if err != nil {
		return 1
	}
	cfg := DefaultClusterConfig(self)
	cfg.Env = []string{roleEnv + "=fake-server"}
	cfg.StopGrace = time.Second
	cluster, err := StartCluster(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = cluster.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	interrupt := cancel
	if role == "parent-stubborn" {
		interrupt = func() {} // a run that does not stop on the first signal
	}
	release := cluster.StopOnSignal(interrupt)
	defer release()
	var pids []string
	for _, r := range cluster.Replicas() {
		pids = append(pids, strconv.Itoa(r.PID))
	}
	fmt.Println("PIDS " + strings.Join(pids, " "))
	switch role {
	case "parent-panic":
		// Wait for the test to see the children running, then panic.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		panic("fake parent: deliberate panic")
	case "parent-killed":
		time.Sleep(time.Minute)
	}
	<-ctx.Done()
	return 0
}

// processGone reports whether pid no longer runs (a zombie waiting to be reaped counts as gone).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return os.IsNotExist(err)
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func waitGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for !processGone(pid) {
			if time.Now().After(deadline) {
				for _, p := range pids {
					_ = syscall.Kill(p, syscall.SIGKILL) // do not leave them behind
				}
				t.Fatalf("child pid %d still running %v after teardown", pid, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func fakeClusterConfig(t *testing.T, n int, mode string) ClusterConfig {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultClusterConfig(self)
	cfg.Replicas = n
	cfg.BaseDir = t.TempDir()
	cfg.Env = []string{roleEnv + "=fake-server", "MPAXOS_FAKE=" + mode}
	cfg.ReadyTimeout = 15 * time.Second
	cfg.StopGrace = 2 * time.Second
	return cfg
}

func pidsOf(c *Cluster) []int {
	var pids []int
	for _, r := range c.Replicas() {
		pids = append(pids, r.PID)
	}
	return pids
}

func TestSpawnStartsReadyReplicasAndStopRemovesThem(t *testing.T) {
	cfg := fakeClusterConfig(t, 3, "")
	cfg.ExtraArgs = []string{"--window", "7"}
	cfg.Env = append(cfg.Env, "MPAXOS_FAKE_WANT_WINDOW=7")
	c, err := StartCluster(context.Background(), cfg)
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	pids := pidsOf(c)
	defer func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if len(c.Endpoints()) != 3 || c.ClusterID() == 0 || len(c.Secret()) < 32 {
		t.Fatalf("endpoints %v, cluster id %d, secret of %d chars", c.Endpoints(), c.ClusterID(), len(c.Secret()))
	}
	seen := map[string]bool{}
	for _, r := range c.Replicas() {
		for _, addr := range []string{r.Addr, r.AdminAddr} {
			if !strings.HasPrefix(addr, "127.0.0.1:") || seen[addr] {
				t.Errorf("address %q is not a fresh 127.0.0.1 port", addr)
			}
			seen[addr] = true
		}
		if processGone(r.PID) {
			t.Errorf("replica %d (pid %d) is not running after a successful start", r.ID, r.PID)
		}
		// The fake serves pprof on the admin address: the cluster is really up.
		resp, err := http.Get("http://" + r.AdminAddr + "/debug/pprof/")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("replica %d admin %s: %v", r.ID, r.AdminAddr, err)
		} else {
			resp.Body.Close()
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	waitGone(t, pids, 5*time.Second)
	if _, err := os.Stat(c.Dir()); !os.IsNotExist(err) {
		t.Errorf("data dir %s still there after Stop without Keep (%v)", c.Dir(), err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestSpawnKeepLeavesDataAndLogs(t *testing.T) {
	cfg := fakeClusterConfig(t, 1, "")
	cfg.Keep = true
	c, err := StartCluster(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pidsOf(c), 5*time.Second)
	log, err := os.ReadFile(filepath.Join(c.Dir(), "replica-1.log"))
	if err != nil || !strings.Contains(string(log), "mpaxos: replica 1 serving on") || !strings.Contains(string(log), "startup chatter") {
		t.Errorf("kept log: %v\n%s", err, log)
	}
}

func TestSpawnFailureShowsTheChildsOutput(t *testing.T) {
	cfg := fakeClusterConfig(t, 3, "exit")
	_, err := StartCluster(context.Background(), cfg)
	if !errors.Is(err, ErrSpawn) || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("err = %v, want ErrSpawn with the child's last output", err)
	}
	entries, _ := os.ReadDir(cfg.BaseDir)
	if len(entries) != 0 {
		t.Errorf("failed start left %d entries in %s", len(entries), cfg.BaseDir)
	}
}

func TestSpawnReadyTimeoutKillsTheChildren(t *testing.T) {
	cfg := fakeClusterConfig(t, 2, "silent")
	cfg.ReadyTimeout = 500 * time.Millisecond
	cfg.StopGrace = 200 * time.Millisecond
	started := time.Now()
	_, err := StartCluster(context.Background(), cfg)
	if !errors.Is(err, ErrSpawn) || !strings.Contains(err.Error(), "printed no") || !strings.Contains(err.Error(), "startup chatter") {
		t.Fatalf("err = %v, want a ready timeout showing the output", err)
	}
	if took := time.Since(started); took > 10*time.Second {
		t.Errorf("ready timeout took %v", took)
	}
	pid := 0
	if _, after, ok := strings.Cut(err.Error(), "(pid "); ok {
		pid, _ = strconv.Atoi(strings.SplitN(after, ")", 2)[0])
	}
	if pid == 0 {
		t.Fatalf("error names no pid: %v", err)
	}
	waitGone(t, []int{pid}, 5*time.Second)
}

func TestSpawnMissingBinaryIsAClearError(t *testing.T) {
	cfg := fakeClusterConfig(t, 1, "")
	cfg.Binary = filepath.Join(t.TempDir(), "no-such-mpaxos")
	_, err := StartCluster(context.Background(), cfg)
	if !errors.Is(err, ErrSpawn) || !strings.Contains(err.Error(), "no-such-mpaxos") {
		t.Fatalf("err = %v", err)
	}
	bad := DefaultClusterConfig("x")
	bad.Replicas = 0
	if _, err := StartCluster(context.Background(), bad); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "Replicas") {
		t.Errorf("Replicas = 0: %v", err)
	}
}

func TestStopKillsReplicasThatIgnoreSIGTERM(t *testing.T) {
	cfg := fakeClusterConfig(t, 2, "ignore-term")
	cfg.StopGrace = 300 * time.Millisecond
	c, err := StartCluster(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Stop()
	if err == nil || !strings.Contains(err.Error(), "ignored SIGTERM") {
		t.Errorf("Stop = %v, want it to say replicas were killed", err)
	}
	waitGone(t, pidsOf(c), 5*time.Second)
}

// runParent starts the test binary as a fake mpaxos-bench with a spawned cluster and returns
// it with the children's PIDs.
func runParent(t *testing.T, role string) (*exec.Cmd, []int, io.WriteCloser, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "PIDS ") {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	var pids []int
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatalf("parent printed no PIDS line; stderr:\n%s", stderr.String())
		}
		for _, f := range strings.Fields(line)[1:] {
			pid, _ := strconv.Atoi(f)
			pids = append(pids, pid)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("parent never started its cluster; stderr:\n%s", stderr.String())
	}
	for _, pid := range pids {
		if processGone(pid) {
			t.Fatalf("child %d not running before the parent was interrupted", pid)
		}
	}
	return cmd, pids, stdin, tmp
}

// requireTornDown checks the parent's own teardown ran: Stop removes the data directory, which
// the kernel's parent-death signal would not.
func requireTornDown(t *testing.T, tmp string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(tmp, "mpaxos-bench-*"))
	if len(left) != 0 {
		t.Errorf("data directory %v left: the parent's Stop did not run", left)
	}
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(within):
		t.Fatalf("parent did not exit within %v", within)
	}
}

func TestInterruptedParentTearsDownItsChildren(t *testing.T) {
	parent, pids, _, tmp := runParent(t, "parent")
	if err := parent.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitExit(t, parent, 10*time.Second)
	if parent.ProcessState.ExitCode() != 0 {
		t.Errorf("parent exit code %d, want 0 after an orderly teardown", parent.ProcessState.ExitCode())
	}
	waitGone(t, pids, 5*time.Second)
	requireTornDown(t, tmp)
}

// A parent whose run ignores the first interrupt still goes, with its children, on the second.
func TestSecondInterruptKillsAndExits130(t *testing.T) {
	parent, pids, _, _ := runParent(t, "parent-stubborn")
	for range 2 {
		if err := parent.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitExit(t, parent, 10*time.Second)
	if code := parent.ProcessState.ExitCode(); code != 130 {
		t.Errorf("parent exit code %d, want 130", code)
	}
	waitGone(t, pids, 5*time.Second)
}

func TestPanickingParentTearsDownItsChildren(t *testing.T) {
	parent, pids, stdin, tmp := runParent(t, "parent-panic")
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	waitExit(t, parent, 10*time.Second)
	if code := parent.ProcessState.ExitCode(); code != 2 {
		t.Errorf("parent exit code %d, want 2 (a panic)", code)
	}
	waitGone(t, pids, 5*time.Second)
	requireTornDown(t, tmp)
}

func TestKilledParentTakesItsChildrenAlong(t *testing.T) {
	parent, pids, _, _ := runParent(t, "parent-killed")
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, parent, 10*time.Second)
	waitGone(t, pids, 5*time.Second) // PR_SET_PDEATHSIG
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: repeated or invalid", ports)
		}
		seen[p] = true
	}
}
