package cluster

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake `mpaxos serve` so the process control is tested without
// the real server: with CHAOS_FAKE_SERVE=1 it listens, prints the ready line and echoes.
func TestMain(m *testing.M) {
	if os.Getenv("CHAOS_FAKE_SERVE") == "1" {
		fakeServe(os.Args[1:])
		return
	}
	os.Exit(m.Run())
}

func fakeServe(args []string) {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(os.Stderr, "fake: want serve")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	id := fs.Int("id", 0, "")
	listen := fs.String("listen", "", "")
	data := fs.String("data", "", "")
	fs.String("peers", "", "")
	fs.String("admin", "", "")
	fs.String("cluster-id", "", "")
	stallFile := fs.String("fault-disk-stall-file", "", "")
	fs.Parse(args[1:])
	if *stallFile != "" {
		os.WriteFile(filepath.Join(*data, "stall-hook"), []byte(*stallFile), 0o644)
	}
	if _, err := os.Stat(filepath.Join(*data, "REFUSE")); err == nil {
		fmt.Fprintf(os.Stderr, "mpaxos: replica %d: wal: corrupt log in %s\n", *id, *data)
		os.Exit(1)
	}
	f, _ := os.OpenFile(filepath.Join(*data, "starts"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	f.Write([]byte("x"))
	f.Close()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("mpaxos: replica %d serving on %s\n", *id, l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		go io.Copy(c, c)
	}
}

func newFakeCluster(t *testing.T, replicas int) *Cluster {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAOS_FAKE_SERVE", "1")
	c, err := New(Config{Binary: self, Replicas: replicas, BaseDir: t.TempDir(), ReadyTimeout: 10 * time.Second, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echo(t *testing.T, addr string, timeout time.Duration) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	return err
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func TestClusterStartKillRestartPauseResume(t *testing.T) {
	c := newFakeCluster(t, 3)
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		if err := echo(t, n.ListenAddr, 2*time.Second); err != nil {
			t.Fatalf("replica %d: %v", n.ID, err)
		}
	}

	pid := c.PID(2)
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	if c.State(2) != Stopped || processAlive(pid) {
		t.Fatalf("after Kill: state %s, pid %d alive %v", c.State(2), pid, processAlive(pid))
	}
	if err := echo(t, c.Node(2).ListenAddr, time.Second); err == nil {
		t.Fatal("killed replica still answers")
	}
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	if err := echo(t, c.Node(2).ListenAddr, 2*time.Second); err != nil {
		t.Fatalf("restarted replica: %v", err)
	}
	starts, _ := os.ReadFile(filepath.Join(c.Node(2).DataDir, "starts"))
	if string(starts) != "xx" {
		t.Fatalf("restart did not reuse the data dir: starts=%q", starts)
	}

	if err := c.Pause(3); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(3); !errors.Is(err, ErrState) {
		t.Fatalf("second Pause: %v, want ErrState", err)
	}
	if err := echo(t, c.Node(3).ListenAddr, 300*time.Millisecond); err == nil {
		t.Fatal("paused replica answered")
	}
	if err := c.Resume(3); err != nil {
		t.Fatal(err)
	}
	if err := echo(t, c.Node(3).ListenAddr, 2*time.Second); err != nil {
		t.Fatalf("resumed replica: %v", err)
	}

	if err := c.Pause(1); err != nil {
		t.Fatal(err)
	}
	pids := []int{c.PID(1), c.PID(2), c.PID(3)}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i, pid := range pids {
		if processAlive(pid) {
			t.Fatalf("replica %d (pid %d) survived Close", i+1, pid)
		}
	}
	if exits := c.UnexpectedExits(); len(exits) != 0 {
		t.Fatalf("kills counted as crashes: %q", exits)
	}
	log, _ := os.ReadFile(c.Node(2).LogPath)
	if strings.Count(string(log), "serving on") != 2 {
		t.Fatalf("replica 2 log should hold two ready lines:\n%s", log)
	}
}

func TestClusterStartReportsRefusalWithOutput(t *testing.T) {
	c := newFakeCluster(t, 1)
	os.WriteFile(filepath.Join(c.Node(1).DataDir, "REFUSE"), nil, 0o644)
	err := c.Start(1)
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "wal: corrupt log") {
		t.Fatalf("Start of a refusing replica: %v", err)
	}
	if exits := c.UnexpectedExits(); len(exits) != 1 || !strings.Contains(exits[0], "exited by itself") {
		t.Fatalf("refusal not recorded as an unexpected exit: %q", exits)
	}
	c.ForgetExits()
	if err := c.Wipe(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(1); err != nil {
		t.Fatalf("start after wipe: %v", err)
	}
	if err := c.Wipe(1); !errors.Is(err, ErrState) {
		t.Fatalf("wipe of a running replica: %v", err)
	}
}

func TestClusterNotReadyTimesOutAndKills(t *testing.T) {
	c, err := New(Config{Binary: "/bin/sleep", Replicas: 1, BaseDir: t.TempDir(), ReadyTimeout: 300 * time.Millisecond,
		CommandPrefix: func(int) []string { return []string{"/bin/sh", "-c", "exec /bin/sleep 30", "sh"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start := time.Now()
	err = c.Start(1)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("Start: %v, want ErrNotReady", err)
	}
	if time.Since(start) > 5*time.Second || c.State(1) != Stopped {
		t.Fatalf("not-ready replica left %s after %v", c.State(1), time.Since(start))
	}
}

func TestClusterConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Replicas: 3, BaseDir: "x"}, "Binary"},
		{Config{Binary: "b", Replicas: 0, BaseDir: "x"}, "Replicas"},
		{Config{Binary: "b", Replicas: 3}, "BaseDir"},
		{Config{Binary: "b", Replicas: 3, BaseDir: "x", ListenHosts: []string{"a"}}, "ListenHosts"},
	} {
		_, err := New(tc.cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Fatalf("config %+v: %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}

// Every replica address of a run must be distinct: freeAddr releases the port it probed, so
// without its memory of handed-out ports two replicas of one cluster could be given the same
// port. 2,000 draws from the 12,000-port pool repeat with near certainty if nothing prevents it.
func TestFreeAddrNeverRepeatsAPortWithinTheReuseWindow(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		addr, err := freeAddr("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("draw %d: %s handed out twice", i, addr)
		}
		seen[addr] = true
	}
}
