package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake `mpaxos serve` that prints the ready line, records its
// PID and sleeps; it cannot speak the client protocol.
func TestMain(m *testing.M) {
	if os.Getenv("MPAXOS_BENCH_CMD_ROLE") == "fake-server" {
		id := "0"
		for i, a := range os.Args {
			if a == "--id" && i+1 < len(os.Args) {
				id = os.Args[i+1]
			}
		}
		_ = os.WriteFile(filepath.Join(os.Getenv("MPAXOS_BENCH_PIDDIR"), strconv.Itoa(os.Getpid())), nil, 0o644)
		fmt.Printf("mpaxos: replica %s serving on 127.0.0.1:1\n", id)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	code := m.Run()
	if builtMpaxos.Load() {
		if bin, err := buildMpaxos(); err == nil && bin != "" {
			_ = os.RemoveAll(filepath.Dir(bin)) // the temporary build directory
		}
	}
	os.Exit(code)
}

func runCommand(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBadFlagsExitTwoWithOneClearLine(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--nonsense"}, "flag provided but not defined: -nonsense"},
		{[]string{"--clients", "4"}, "give --spawn N to start a local cluster, or --endpoints"},
		{[]string{"--spawn", "3", "--endpoints", "127.0.0.1:1"}, "not both"},
		{[]string{"--spawn", "12"}, "--spawn 12: want 1..9"},
		{[]string{"--spawn", "3", "--clients", "0"}, "--clients 0"},
		{[]string{"--spawn", "3", "--duration", "0s"}, "--duration 0s"},
		{[]string{"--spawn", "3", "--duration", "soon"}, "invalid value \"soon\" for flag -duration"},
		{[]string{"--spawn", "3", "--rate", "-1"}, "--rate -1"},
		{[]string{"--spawn", "3", "--profile", "cpu,trace"}, "unknown profile kind \"trace\""},
		{[]string{"--spawn", "3", "--profile", "cpu", "--sweep"}, "cannot be combined with --sweep"},
		{[]string{"--endpoints", "127.0.0.1:1", "--profile", "cpu"}, "needs --admin-endpoints"},
		{[]string{"--endpoints", "nohost"}, "\"nohost\" is not HOST:PORT"},
		{[]string{"--endpoints", "127.0.0.1:1", "--admin-endpoints", "x=1:2"}, "want ID=HOST:PORT"},
		{[]string{"--spawn", "3", "extra"}, "unexpected argument \"extra\""},
	}
	for _, tc := range cases {
		code, stdout, stderr := runCommand(tc.args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tc.args, code, exitUsage)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "mpaxos-bench: ") || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q, want one line containing %q", tc.args, stderr, tc.want)
		}
		if stdout != "" {
			t.Errorf("%v: stdout %q, want nothing", tc.args, stdout)
		}
	}
}

func TestHelpPrintsEveryFlag(t *testing.T) {
	code, stdout, _ := runCommand("--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, flag := range []string{"-spawn", "-endpoints", "-clients", "-inflight", "-payload", "-duration",
		"-warmup", "-rate", "-json", "-hist", "-report", "-sweep", "-profile", "-profile-dir",
		"-mpaxos-bin", "-fsync", "-keep", "-timeout", "-window", "-batch-bytes-max", "-admin-endpoints"} {
		if !strings.Contains(stdout, "  "+flag+" ") && !strings.Contains(stdout, "  "+flag+"\n") {
			t.Errorf("--help lacks %s", flag)
		}
	}
}

func TestParseKeepsPassThroughFlags(t *testing.T) {
	o, err := parseFlags([]string{"--spawn", "5", "--window", "8", "--batch-bytes-max", "65536", "--linger", "200us", "--event-loops", "3",
		"--endpoints", ""})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.replicaArgs(), " "); got != "--window 8 --batch-bytes-max 65536 --linger 200µs --event-loops 3" {
		t.Errorf("replica args %q", got)
	}
	o, err = parseFlags([]string{"--endpoints", "a:1,b:2", "--admin-endpoints", "2=b:9,3=c:9", "--profile", "heap"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.endpoints) != 2 || len(o.adminEndpoints) != 2 || o.adminEndpoints[1].ReplicaID != 3 || o.adminEndpoints[1].AdminAddr != "c:9" {
		t.Errorf("endpoints %v admin %v", o.endpoints, o.adminEndpoints)
	}
}

func TestMissingBinaryExitsOneWithTheReason(t *testing.T) {
	code, _, stderr := runCommand("--spawn", "3", "--mpaxos-bin", filepath.Join(t.TempDir(), "missing"))
	if code != exitFailed || !strings.Contains(stderr, "--mpaxos-bin") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestUnreachableClusterExitsOne(t *testing.T) {
	code, stdout, stderr := runCommand("--endpoints", "127.0.0.1:1", "--duration", "1s", "--warmup", "0s", "--timeout", "1s", "--clients", "1")
	if code != exitFailed || !strings.Contains(stderr, "dial client 0") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// fakeMpaxos writes a script that runs this test binary as the fake server, and the
// directory where the fakes record their PIDs.
func fakeMpaxos(t *testing.T) (bin, pidDir string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pidDir = filepath.Join(dir, "pids")
	if err := os.Mkdir(pidDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "mpaxos")
	script := fmt.Sprintf("#!/bin/sh\nMPAXOS_BENCH_CMD_ROLE=fake-server MPAXOS_BENCH_PIDDIR=%q exec %q \"$@\"\n", pidDir, self)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, pidDir
}

func pidsIn(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, _ := strconv.Atoi(e.Name())
		pids = append(pids, pid)
	}
	return pids
}

func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func requireGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				for _, p := range pids {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
				t.Fatalf("replica pid %d outlived mpaxos-bench", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// With replicas that come up but do not speak the protocol, the run fails at dial and the
// command still tears every child down.
func TestFailedRunStillTearsDownSpawnedReplicas(t *testing.T) {
	bin, pidDir := fakeMpaxos(t)
	code, _, stderr := runCommand("--spawn", "3", "--mpaxos-bin", bin, "--duration", "1s", "--timeout", "1s", "--clients", "2")
	if code != exitFailed || !strings.Contains(stderr, "3 replicas ready") || !strings.Contains(stderr, "dial client") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
	pids := pidsIn(t, pidDir)
	if len(pids) != 3 {
		t.Fatalf("%d fakes started, want 3", len(pids))
	}
	requireGone(t, pids)
}

// buildMpaxos builds the real server once for the end-to-end tests.
var builtMpaxos atomic.Bool

var buildMpaxos = sync.OnceValues(func() (string, error) {
	builtMpaxos.Store(true)
	dir, err := os.MkdirTemp("", "mpaxos-bench-e2e-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "mpaxos")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/mpaxos/mpaxos/cmd/mpaxos").CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("go build ./cmd/mpaxos: %v\n%s", err, out)
	}
	return bin, nil
})

func realMpaxos(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end against real replicas: not in -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build cmd/mpaxos")
	}
	bin, err := buildMpaxos()
	if err != nil {
		// cmd/mpaxos's own tests report a broken server; this package tests the bench.
		t.Skipf("the real server does not build, skipping the end-to-end run: %v", err)
	}
	return bin
}

func TestEndToEndAgainstSpawnedReplicas(t *testing.T) {
	bin := realMpaxos(t)
	dir := t.TempDir()
	hist, report := filepath.Join(dir, "out.hgrm"), filepath.Join(dir, "report.html")
	code, stdout, stderr := runCommand("--spawn", "3", "--mpaxos-bin", bin, "--clients", "2", "--inflight", "8",
		"--payload", "64", "--warmup", "500ms", "--duration", "1500ms", "--json", "--hist", hist, "--report", report)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &got); err != nil {
		t.Fatalf("stdout is not one JSON line: %v\n%s", err, stdout)
	}
	if got["ops"].(float64) <= 0 || got["replicas"] != 3.0 || got["fsync"] != true || got["payload_bytes"] != 64.0 {
		t.Errorf("result %v", got)
	}
	if !regexp.MustCompile(`(?m)^\[\s*\d+\.\ds\] ops/s`).MatchString(stderr) || !strings.Contains(stderr, "p99.9") {
		t.Errorf("stderr lacks progress lines or the table:\n%s", stderr)
	}
	for _, f := range []string{hist, report} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// An interrupt in the middle of a run ends it early with a partial result, exit 130, and no
// replica left behind.
func TestInterruptDuringARunTearsDown(t *testing.T) {
	bin := realMpaxos(t)
	pr, pw := io.Pipe()
	var stdout bytes.Buffer
	codes := make(chan int, 1)
	go func() {
		codes <- run([]string{"--spawn", "3", "--mpaxos-bin", bin, "--clients", "1", "--inflight", "4",
			"--warmup", "0s", "--duration", "30s"}, &stdout, pw)
		pw.Close()
	}()
	var stderr strings.Builder // written by the scanner until scanned is closed
	dataDir := ""
	progress := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			stderr.WriteString(line + "\n")
			if m := regexp.MustCompile(`data in (\S+)\)`).FindStringSubmatch(line); m != nil {
				dataDir = m[1]
			}
			if strings.Contains(line, "ops/s") && !signalled {
				signalled = true
				close(progress)
			}
		}
	}()
	select {
	case <-progress:
	case code := <-codes:
		<-scanned
		t.Fatalf("run ended (exit %d) before its first progress line:\n%s", code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("no progress line within 30s")
	}
	pids := replicaPIDs(dataDir)
	if len(pids) != 3 {
		t.Fatalf("found replica pids %v for data dir %q, want 3", pids, dataDir)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-codes:
		if code != exitInterrupted {
			t.Errorf("exit %d, want %d", code, exitInterrupted)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not end within 15s of SIGINT")
	}
	requireGone(t, pids)
	if !strings.Contains(stdout.String(), "ops/s") {
		t.Errorf("no partial table on stdout: %q", stdout.String())
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir %s left behind", dataDir)
	}
}

// replicaPIDs finds the processes whose command line mentions dataDir.
func replicaPIDs(dataDir string) []int {
	if dataDir == "" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dataDir)) && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}
