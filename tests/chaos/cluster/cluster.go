package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors. Each wraps context naming the replica.
var (
	// ErrNotReady: the replica did not print its ready line within ReadyTimeout.
	ErrNotReady = errors.New("cluster: replica not ready in time")
	// ErrExited: the replica exited before it was ready (its output tail is in the error).
	ErrExited = errors.New("cluster: replica exited before it was ready")
	// ErrState: the operation does not fit the replica's state (e.g. Pause on a stopped one).
	ErrState = errors.New("cluster: wrong replica state")
	// ErrInvalidConfig wraps every Config error; the message names the field.
	ErrInvalidConfig = errors.New("cluster: invalid config")
)

// Config describes the cluster to run.
type Config struct {
	Binary    string // path of the mpaxos binary (see Build)
	Replicas  int    // number of replicas, 1..9
	BaseDir   string // holds data/N and logs/; a fresh temporary directory per test
	ClusterID uint64
	Secret    string

	// ListenHost is the host replicas listen on (client and peer traffic): 127.0.0.1 unless
	// replicas run in network namespaces. ListenHosts, if set, gives one per replica.
	ListenHost  string
	ListenHosts []string
	// PeerAddr, if set, is the address replica from dials to reach replica to (a fault proxy
	// in between). Nil: replicas dial each other's listen address directly.
	PeerAddr func(from, to int) string
	// CommandPrefix, if set, returns the argv that runs before the binary for replica id,
	// e.g. {"ip", "netns", "exec", "mpx1"}. That program must exec the binary (keep the PID).
	CommandPrefix func(id int) []string
	// Args are extra flags for `mpaxos serve` (e.g. --fsync=false, --window 8).
	Args []string
	// FaultHooks starts every replica with its disk-stall hook armed (--fault-disk-stall-file
	// Node.DiskStallFile), so StallDisk and ReleaseDisk can switch it (diskstall.go).
	FaultHooks bool

	ReadyTimeout time.Duration // default 30 s
	StopTimeout  time.Duration // how long Kill waits for the exit; default 10 s
	// OutputLinesMax: how many of a replica's last output lines are kept for error messages.
	OutputLinesMax int // default 40
	Logf           func(format string, args ...any)
}

func (cfg *Config) setDefaults() error {
	if cfg.Binary == "" {
		return fmt.Errorf("cluster: Config.Binary is empty: %w", ErrInvalidConfig)
	}
	if cfg.Replicas < 1 || cfg.Replicas > 9 {
		return fmt.Errorf("cluster: Config.Replicas = %d: want 1..9: %w", cfg.Replicas, ErrInvalidConfig)
	}
	if cfg.BaseDir == "" {
		return fmt.Errorf("cluster: Config.BaseDir is empty: %w", ErrInvalidConfig)
	}
	if cfg.ListenHosts != nil && len(cfg.ListenHosts) != cfg.Replicas {
		return fmt.Errorf("cluster: Config.ListenHosts has %d hosts for %d replicas: %w", len(cfg.ListenHosts), cfg.Replicas, ErrInvalidConfig)
	}
	if cfg.ListenHost == "" {
		cfg.ListenHost = "127.0.0.1"
	}
	if cfg.ClusterID == 0 {
		cfg.ClusterID = 1
	}
	if cfg.Secret == "" {
		cfg.Secret = "chaos-cluster-secret-0123456789"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.OutputLinesMax <= 0 {
		cfg.OutputLinesMax = 40
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return nil
}

// State of a replica process.
type State int

const (
	Stopped State = iota // not running (never started, killed, or exited)
	Running
	Paused // SIGSTOPped
)

func (s State) String() string {
	return [...]string{"stopped", "running", "paused"}[s]
}

// Node is one replica.
type Node struct {
	ID         int
	ListenAddr string // client and peer address
	AdminAddr  string // pprof, metrics
	DataDir    string
	LogPath    string
	// DiskStallFile is the control file of the replica's disk-stall hook: while it exists
	// the replica's WAL fsyncs wait. "" without Config.FaultHooks.
	DiskStallFile string

	mu     sync.Mutex
	state  State
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current process has exited
	exit   error         // its Wait result
	output *lineLog
	starts int
	// killing: Kill sent the signal, so the exit that follows is expected.
	killing bool
}

// Cluster is a set of replicas started from one binary.
type Cluster struct {
	cfg   Config
	nodes []*Node

	exitsMu sync.Mutex
	exits   []string // replicas that exited without being killed: crashes
}

// New allocates addresses and directories; it starts nothing.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	logs := filepath.Join(cfg.BaseDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	for id := 1; id <= cfg.Replicas; id++ {
		host := cfg.ListenHost
		if cfg.ListenHosts != nil {
			host = cfg.ListenHosts[id-1]
		}
		listen, err := freeAddr(host)
		if !strings.HasPrefix(host, "127.") {
			// A namespace's address: its port space is its own, any fixed port is free.
			listen, err = net.JoinHostPort(host, strconv.Itoa(namespacePort)), nil
		}
		if err != nil {
			return nil, err
		}
		admin, err := freeAddr("127.0.0.1")
		if !strings.HasPrefix(host, "127.") {
			// Inside a namespace the admin port must be on the namespace's address too, or
			// the test (in the root namespace) could not reach it.
			admin, err = net.JoinHostPort(host, strconv.Itoa(namespaceAdminPort)), nil
		}
		if err != nil {
			return nil, err
		}
		n := &Node{
			ID: id, ListenAddr: listen, AdminAddr: admin,
			DataDir: filepath.Join(cfg.BaseDir, "data", strconv.Itoa(id)),
			LogPath: filepath.Join(logs, fmt.Sprintf("replica-%d.log", id)),
			output:  newLineLog(cfg.OutputLinesMax),
		}
		if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if cfg.FaultHooks {
			// Beside the data directory, not in it: Wipe must not release a stalled disk.
			n.DiskStallFile = filepath.Join(cfg.BaseDir, "data", fmt.Sprintf("%d.disk-stall", id))
		}
		c.nodes = append(c.nodes, n)
	}
	return c, nil
}

// Ports of a replica inside its own network namespace (its port space is its own).
const (
	namespacePort      = 7000
	namespaceAdminPort = 8000
)

// Ports are drawn below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and
// up by default): a port from that range, released by a killed replica, can be taken as the
// source port of any outgoing connection (a proxy's, a client's reconnect) before the replica
// restarts. Below it only explicit binds compete.
const (
	portLow  = 20000
	portHigh = 32000
)

// portReuseAfter: a port handed out is not handed out again by this process for this long.
// freeAddr releases the port it probed, so without this two draws for the same cluster (a
// replica's listen and another's admin address) could pick the same free port, and the
// second replica to start would fail with "address already in use".
const portReuseAfter = 10 * time.Minute

var ports = struct {
	sync.Mutex
	rand   *rand.Rand
	handed map[int]time.Time // port -> when freeAddr last returned it
}{
	rand:   rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid()))),
	handed: map[int]time.Time{},
}

// freeAddr finds a free TCP port on host outside the ephemeral range by binding it, never one
// it handed out in the last portReuseAfter. Another process may still take it before the
// replica binds it; Start then fails with the replica's "address in use" error.
func freeAddr(host string) (string, error) {
	ports.Lock()
	defer ports.Unlock()
	now := time.Now()
	var last error
	for attempt := 0; attempt < 200; attempt++ {
		port := portLow + ports.rand.IntN(portHigh-portLow)
		if at, ok := ports.handed[port]; ok && now.Sub(at) < portReuseAfter {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			last = err
			continue
		}
		addr := l.Addr().String()
		l.Close()
		ports.handed[port] = now
		return addr, nil
	}
	return "", fmt.Errorf("cluster: no free port on %s in [%d, %d) not handed out in the last %v: %w",
		host, portLow, portHigh, portReuseAfter, last)
}

// Nodes returns the replicas, index i holding replica i+1.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns replica id (1-based).
func (c *Cluster) Node(id int) *Node {
	if id < 1 || id > len(c.nodes) {
		panic(fmt.Sprintf("cluster: no replica %d (have %d)", id, len(c.nodes)))
	}
	return c.nodes[id-1]
}

// Endpoints are the client addresses of every replica.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.ListenAddr)
	}
	return out
}

// ClusterID and Secret as the replicas were started with.
func (c *Cluster) ClusterID() uint64 { return c.cfg.ClusterID }
func (c *Cluster) Secret() string    { return c.cfg.Secret }

func (c *Cluster) args(n *Node) []string {
	var peers []string
	for _, p := range c.nodes {
		addr := p.ListenAddr
		if c.cfg.PeerAddr != nil && p.ID != n.ID {
			addr = c.cfg.PeerAddr(n.ID, p.ID)
		}
		peers = append(peers, fmt.Sprintf("%d=%s", p.ID, addr))
	}
	args := []string{"serve",
		"--id", strconv.Itoa(n.ID),
		"--peers", strings.Join(peers, ","),
		"--listen", n.ListenAddr,
		"--admin", n.AdminAddr,
		"--data", n.DataDir,
		"--cluster-id", strconv.FormatUint(c.cfg.ClusterID, 10),
	}
	if n.DiskStallFile != "" {
		args = append(args, "--fault-disk-stall-file", n.DiskStallFile)
	}
	return append(args, c.cfg.Args...)
}

// StartAll starts every stopped replica and waits until all are ready.
func (c *Cluster) StartAll() error {
	errs := make(chan error, len(c.nodes))
	for _, n := range c.nodes {
		go func() { errs <- c.Start(n.ID) }()
	}
	var first error
	for range c.nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Start starts replica id from its data directory and waits for its ready line. If the
// process exits first, the error wraps ErrExited and quotes its last output lines (that is how
// a replica refusing a corrupt WAL shows up).
func (c *Cluster) Start(id int) error {
	n := c.Node(id)
	n.mu.Lock()
	if n.state != Stopped {
		n.mu.Unlock()
		return fmt.Errorf("cluster: start replica %d: it is %s: %w", id, n.state, ErrState)
	}
	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("cluster: replica %d log: %w", id, err)
	}
	argv := append([]string{c.cfg.Binary}, c.args(n)...)
	if c.cfg.CommandPrefix != nil {
		argv = append(c.cfg.CommandPrefix(id), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "MPAXOS_SECRET="+c.cfg.Secret)
	ready := make(chan struct{})
	n.starts++
	fmt.Fprintf(logFile, "=== chaos: start #%d at %s: %s\n", n.starts, time.Now().UTC().Format(time.RFC3339Nano), strings.Join(argv, " "))
	w := &outputWriter{file: logFile, lines: n.output, readyPrefix: fmt.Sprintf("mpaxos: replica %d serving on", id), ready: ready}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.output.reset()
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		logFile.Close()
		return fmt.Errorf("cluster: start replica %d: %w", id, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.state, n.exit = cmd, done, Running, nil
	n.mu.Unlock()
	c.cfg.Logf("cluster: replica %d started, pid %d", id, cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		logFile.Close()
		n.mu.Lock()
		n.exit = err
		expected := n.killing
		n.killing = false
		if n.cmd == cmd {
			n.state = Stopped
		}
		n.mu.Unlock()
		if !expected {
			c.exitsMu.Lock()
			c.exits = append(c.exits, fmt.Sprintf("replica %d (pid %d) exited by itself (%v); last output:\n%s",
				id, cmd.Process.Pid, err, n.output.tail()))
			c.exitsMu.Unlock()
		}
		close(done)
	}()

	timer := time.NewTimer(c.cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return nil
	case <-done:
		n.mu.Lock()
		exit := n.exit
		n.mu.Unlock()
		return fmt.Errorf("cluster: replica %d (%v): %w; last output:\n%s", id, exit, ErrExited, n.output.tail())
	case <-timer.C:
		_ = c.Kill(id)
		return fmt.Errorf("cluster: replica %d after %v: %w; last output:\n%s", id, c.cfg.ReadyTimeout, ErrNotReady, n.output.tail())
	}
}

// Kill sends SIGKILL to replica id and waits for it to exit. Killing a stopped replica is a
// no-op; a paused one dies too (SIGKILL needs no SIGCONT).
func (c *Cluster) Kill(id int) error {
	n := c.Node(id)
	n.mu.Lock()
	cmd, done, state := n.cmd, n.done, n.state
	if state != Stopped {
		n.killing = true
	}
	n.mu.Unlock()
	if state == Stopped || cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cluster: kill replica %d (pid %d): %w", id, cmd.Process.Pid, err)
	}
	select {
	case <-done:
	case <-time.After(c.cfg.StopTimeout):
		return fmt.Errorf("cluster: replica %d (pid %d) did not exit %v after SIGKILL", id, cmd.Process.Pid, c.cfg.StopTimeout)
	}
	c.cfg.Logf("cluster: replica %d killed", id)
	return nil
}

// Pause stops replica id with SIGSTOP: it keeps its sockets but does nothing, like a long GC
// pause or a VM freeze.
func (c *Cluster) Pause(id int) error { return c.signal(id, Running, Paused, syscall.SIGSTOP) }

// Resume continues a paused replica with SIGCONT.
func (c *Cluster) Resume(id int) error { return c.signal(id, Paused, Running, syscall.SIGCONT) }

func (c *Cluster) signal(id int, from, to State, sig syscall.Signal) error {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != from {
		return fmt.Errorf("cluster: %v replica %d: it is %s: %w", sig, id, n.state, ErrState)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("cluster: %v replica %d (pid %d): %w", sig, id, n.cmd.Process.Pid, err)
	}
	// A signal is delivered asynchronously: wait until the kernel shows the process stopped
	// (or running again), so the fault is in force when this returns.
	if err := waitStopped(n.cmd.Process.Pid, to == Paused, c.cfg.StopTimeout); err != nil {
		return fmt.Errorf("cluster: %v replica %d: %w", sig, id, err)
	}
	n.state = to
	c.cfg.Logf("cluster: replica %d %s", id, to)
	return nil
}

// waitStopped polls /proc/PID/stat until the process state is (or is not) 'T' (stopped).
func waitStopped(pid int, stopped bool, timeout time.Duration) error {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		// The state follows the command name in parentheses, which may itself hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i >= 0 && i+2 < len(b) {
			state := b[i+2]
			if (state == 'T' || state == 't') == stopped {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d: state in %s never became stopped=%v within %v", pid, path, stopped, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// State of replica id.
func (c *Cluster) State(id int) State {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// PID of replica id's current process, 0 if stopped.
func (c *Cluster) PID(id int) int {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == Stopped || n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Wipe deletes replica id's data directory contents; the replica must be stopped. Started
// again it rejoins as an empty replica (it must catch up, and it has forgotten its promises:
// only safe while the others hold a majority of every acceptance).
func (c *Cluster) Wipe(id int) error {
	n := c.Node(id)
	if c.State(id) != Stopped {
		return fmt.Errorf("cluster: wipe replica %d: it is %s: %w", id, c.State(id), ErrState)
	}
	if err := os.RemoveAll(n.DataDir); err != nil {
		return fmt.Errorf("cluster: wipe replica %d: %w", id, err)
	}
	return os.MkdirAll(n.DataDir, 0o755)
}

// UnexpectedExits describes every replica exit that Kill did not cause (crashes, fatal
// errors), including replicas that refused to start; a test that expected a refusal calls
// ForgetExits after checking it.
func (c *Cluster) UnexpectedExits() []string {
	c.exitsMu.Lock()
	defer c.exitsMu.Unlock()
	return append([]string(nil), c.exits...)
}

// ForgetExits clears the list of unexpected exits.
func (c *Cluster) ForgetExits() {
	c.exitsMu.Lock()
	defer c.exitsMu.Unlock()
	c.exits = nil
}

// Output returns the last lines replica id printed (current or last process).
func (c *Cluster) Output(id int) string { return c.Node(id).output.tail() }

// Close kills every replica by PID and waits for them. Safe to call more than once.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.nodes {
		if err := c.Kill(n.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Build compiles ./cmd/mpaxos of the module containing the working directory into outDir and
// returns the binary's path. race adds -race (slower replicas, but data races fail the run).
func Build(ctx context.Context, outDir string, race bool) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(outDir, "mpaxos")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/mpaxos")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cluster: go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cluster: no go.mod above the working directory")
		}
		dir = parent
	}
}

// outputWriter copies a replica's output to its log file, keeps the last lines and signals
// the ready line once.
type outputWriter struct {
	file        *os.File
	lines       *lineLog
	readyPrefix string
	ready       chan struct{}
	readyOnce   bool
	partial     []byte
}

const partialLineBytesMax = 64 << 10

func (w *outputWriter) Write(p []byte) (int, error) {
	w.file.Write(p) // best effort: a full disk must not block the replica
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		w.lines.add(line)
		if !w.readyOnce && strings.Contains(line, w.readyPrefix) {
			w.readyOnce = true
			close(w.ready)
		}
	}
	if len(w.partial) > partialLineBytesMax { // a line without end: keep memory bounded
		w.lines.add(string(w.partial))
		w.partial = w.partial[:0]
	}
	w.partial = append([]byte(nil), w.partial...)
	return len(p), nil
}

// lineLog keeps the last max lines.
type lineLog struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func newLineLog(max int) *lineLog { return &lineLog{max: max} }

func (l *lineLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == l.max {
		copy(l.lines, l.lines[1:])
		l.lines = l.lines[:l.max-1]
	}
	l.lines = append(l.lines, line)
}

func (l *lineLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = l.lines[:0]
}

func (l *lineLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return "  | " + strings.Join(l.lines, "\n  | ")
}

// built is the binary BuildOnce made, per race setting, in a temporary directory.
var built struct {
	mu   sync.Mutex
	dirs []string
	bins map[bool]string
}

// BuildOnce builds ./cmd/mpaxos once per process (per race setting) into a temporary directory
// and returns the binary; RemoveBuilds deletes what it built. For test packages' TestMain.
func BuildOnce(race bool) (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if bin, ok := built.bins[race]; ok {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "mpaxos-bin-")
	if err != nil {
		return "", err
	}
	built.dirs = append(built.dirs, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := Build(ctx, dir, race)
	if err != nil {
		return "", err
	}
	if built.bins == nil {
		built.bins = map[bool]string{}
	}
	built.bins[race] = bin
	return bin, nil
}

// RemoveBuilds deletes every binary BuildOnce made.
func RemoveBuilds() {
	built.mu.Lock()
	defer built.mu.Unlock()
	for _, dir := range built.dirs {
		os.RemoveAll(dir)
	}
	built.dirs, built.bins = nil, nil
}
