package bench

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ClusterConfig describes a local cluster of `mpaxos serve` processes.
type ClusterConfig struct {
	// Replicas is the cluster size, 1..ReplicasMax (3 or 5 for anything meaningful).
	Replicas int
	// Binary is the mpaxos executable.
	Binary string
	// Fsync is passed as --fsync; the benchmark's durability claim rests on it.
	Fsync bool
	// Keep leaves the data directory (and the replicas' logs) behind after Stop.
	Keep bool
	// BaseDir is where the temporary data directory is created; "" = os.TempDir().
	BaseDir string
	// Secret is the cluster secret; "" draws a random one.
	Secret string
	// ClusterID is passed as --cluster-id; 0 draws a random one.
	ClusterID uint64
	// ReadyTimeout bounds the wait for every replica's ready line.
	ReadyTimeout time.Duration
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	StopGrace time.Duration
	// ExtraArgs are appended to every replica's command line (e.g. "--window", "8").
	ExtraArgs []string
	// Env is added to the replicas' environment (after the inherited one).
	Env []string
	// OutputTailLines is how many of a replica's last output lines an error shows.
	OutputTailLines int
}

// Limits on ClusterConfig fields.
const (
	ReplicasMax        = 9
	outputTailLinesMax = 1000
	outputLineBytesMax = 4096 // longer output lines are cut; only the tail and ready line matter
	waitDelay          = 2 * time.Second
)

// DefaultClusterConfig returns a 3-replica, fsync-on configuration for binary.
func DefaultClusterConfig(binary string) ClusterConfig {
	return ClusterConfig{
		Replicas:        3,
		Binary:          binary,
		Fsync:           true,
		ReadyTimeout:    20 * time.Second,
		StopGrace:       5 * time.Second,
		OutputTailLines: 20,
	}
}

// Validate reports the first field out of range.
func (c *ClusterConfig) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > ReplicasMax:
		return fmt.Errorf("%w: Replicas = %d, want 1..%d", ErrConfig, c.Replicas, ReplicasMax)
	case c.Binary == "":
		return fmt.Errorf("%w: Binary is empty", ErrConfig)
	case c.ReadyTimeout <= 0:
		return fmt.Errorf("%w: ReadyTimeout = %v, want > 0", ErrConfig, c.ReadyTimeout)
	case c.StopGrace <= 0:
		return fmt.Errorf("%w: StopGrace = %v, want > 0", ErrConfig, c.StopGrace)
	case c.OutputTailLines < 1 || c.OutputTailLines > outputTailLinesMax:
		return fmt.Errorf("%w: OutputTailLines = %d, want 1..%d", ErrConfig, c.OutputTailLines, outputTailLinesMax)
	}
	return nil
}

// Replica describes one spawned replica.
type Replica struct {
	ID        uint32
	Addr      string // client and peer address
	AdminAddr string // /debug/pprof/, /metrics
	DataDir   string
	LogPath   string // the replica's stdout and stderr
	PID       int
}

// Cluster is a running set of spawned replicas. Stop is safe to call more than once and
// from several goroutines.
type Cluster struct {
	cfg       ClusterConfig
	dir       string
	secret    string
	clusterID uint64
	replicas  []*process

	stopOnce sync.Once
	stopErr  error
}

// process is one child and the watcher of its output.
type process struct {
	Replica
	cmd    *exec.Cmd
	output *outputWatcher
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result, valid after exited
}

var readyLine = regexp.MustCompile(`mpaxos: replica (\d+) serving on (\S+)`)

// outputWatcher receives a child's stdout and stderr: it appends them to the log file,
// keeps the last lines for error messages and spots the ready line.
type outputWatcher struct {
	id    uint32
	mu    sync.Mutex
	log   *os.File
	line  []byte
	tail  []string
	limit int
	ready chan struct{}
	seen  bool
}

func (w *outputWatcher) Write(p []byte) (int, error) {
	written := len(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.log != nil {
		_, _ = w.log.Write(p) // a full disk must not stop the replica; the tail still works
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := outputLineBytesMax - len(w.line)
			w.line = append(w.line, p[:min(room, len(p))]...)
			break
		}
		room := outputLineBytesMax - len(w.line)
		w.line = append(w.line, p[:min(room, i)]...)
		w.finishLineLocked()
		p = p[i+1:]
	}
	return written, nil
}

func (w *outputWatcher) finishLineLocked() {
	line := strings.TrimRight(string(w.line), "\r")
	w.line = w.line[:0]
	if len(w.tail) >= w.limit {
		copy(w.tail, w.tail[1:])
		w.tail = w.tail[:len(w.tail)-1]
	}
	w.tail = append(w.tail, line)
	if m := readyLine.FindStringSubmatch(line); m != nil && !w.seen {
		if id, err := strconv.ParseUint(m[1], 10, 32); err == nil && uint32(id) == w.id {
			w.seen = true
			close(w.ready)
		}
	}
}

// Tail returns the last output lines, including an unfinished one.
func (w *outputWatcher) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := append([]string(nil), w.tail...)
	if len(w.line) > 0 {
		lines = append(lines, string(w.line))
	}
	if len(lines) == 0 {
		return "(no output)"
	}
	return strings.Join(lines, "\n")
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1, found by binding port 0 and
// closing again. Another process may take one before it is used; a replica that cannot bind
// then fails to start with a clear error.
func FreePorts(n int) ([]int, error) {
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomSecret() (string, error) {
	var b [32]byte
	if _, err := crand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

func randomClusterID() (uint64, error) {
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]) | 1, nil // never 0
}

// StartCluster starts cfg.Replicas replicas and waits until each has printed its ready line
// ("mpaxos: replica N serving on ADDR"). On any failure it kills what it started, removes
// the data directory (unless Keep) and returns an error wrapping ErrSpawn with the failing
// replica's last output lines.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, secret: cfg.Secret, clusterID: cfg.ClusterID}
	var err error
	if c.secret == "" {
		if c.secret, err = randomSecret(); err != nil {
			return nil, fmt.Errorf("bench: drawing a secret: %w", err)
		}
	}
	if c.clusterID == 0 {
		if c.clusterID, err = randomClusterID(); err != nil {
			return nil, fmt.Errorf("bench: drawing a cluster id: %w", err)
		}
	}
	if c.dir, err = os.MkdirTemp(cfg.BaseDir, "mpaxos-bench-"); err != nil {
		return nil, fmt.Errorf("bench: creating the data directory: %w", err)
	}
	if err := c.start(); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start() error {
	ports, err := FreePorts(2 * c.cfg.Replicas)
	if err != nil {
		return err
	}
	peers := make([]string, c.cfg.Replicas)
	for i := range c.cfg.Replicas {
		peers[i] = fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[2*i])
	}
	for i := range c.cfg.Replicas {
		p := &process{exited: make(chan struct{})}
		p.ID = uint32(i + 1)
		p.Addr = fmt.Sprintf("127.0.0.1:%d", ports[2*i])
		p.AdminAddr = fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])
		p.DataDir = filepath.Join(c.dir, fmt.Sprintf("replica-%d", p.ID))
		p.LogPath = filepath.Join(c.dir, fmt.Sprintf("replica-%d.log", p.ID))
		if err := os.MkdirAll(p.DataDir, 0o700); err != nil {
			return fmt.Errorf("bench: creating %s: %w", p.DataDir, err)
		}
		if err := c.launch(p, strings.Join(peers, ",")); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) launch(p *process, peers string) error {
	log, err := os.Create(p.LogPath)
	if err != nil {
		return fmt.Errorf("bench: creating %s: %w", p.LogPath, err)
	}
	p.output = &outputWatcher{id: p.ID, log: log, limit: c.cfg.OutputTailLines, ready: make(chan struct{})}
	args := []string{"serve",
		"--id", strconv.FormatUint(uint64(p.ID), 10),
		"--peers", peers,
		"--listen", p.Addr,
		"--admin", p.AdminAddr,
		"--data", p.DataDir,
		"--cluster-id", strconv.FormatUint(c.clusterID, 10),
		"--fsync=" + strconv.FormatBool(c.cfg.Fsync),
	}
	args = append(args, c.cfg.ExtraArgs...)
	cmd := exec.Command(c.cfg.Binary, args...)
	cmd.Env = append(os.Environ(), "MPAXOS_SECRET="+c.secret)
	cmd.Env = append(cmd.Env, c.cfg.Env...)
	cmd.Stdout = p.output
	cmd.Stderr = p.output
	cmd.SysProcAttr = childProcAttr()
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("%w: replica %d: starting %s: %v", ErrSpawn, p.ID, c.cfg.Binary, err)
	}
	p.cmd = cmd
	p.PID = cmd.Process.Pid
	c.replicas = append(c.replicas, p)
	go func() {
		p.err = cmd.Wait()
		p.output.mu.Lock()
		_ = p.output.log.Close()
		p.output.log = nil
		p.output.mu.Unlock()
		close(p.exited)
	}()
	return nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	timer := time.NewTimer(c.cfg.ReadyTimeout)
	defer timer.Stop()
	for _, p := range c.replicas {
		select {
		case <-p.output.ready:
			continue
		case <-p.exited:
			return fmt.Errorf("%w: replica %d (pid %d) exited before it was ready (%v); log %s; last output:\n%s",
				ErrSpawn, p.ID, p.PID, p.err, p.LogPath, p.output.Tail())
		case <-timer.C:
			return fmt.Errorf("%w: replica %d (pid %d) printed no %q line within %v; log %s; last output:\n%s",
				ErrSpawn, p.ID, p.PID, "mpaxos: replica N serving on ADDR", c.cfg.ReadyTimeout, p.LogPath, p.output.Tail())
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for replica %d: %w", ErrSpawn, p.ID, ctx.Err())
		}
	}
	return nil
}

// Endpoints returns the replicas' client addresses in id order.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.replicas))
	for i, p := range c.replicas {
		out[i] = p.Addr
	}
	return out
}

// Replicas describes every replica, in id order.
func (c *Cluster) Replicas() []Replica {
	out := make([]Replica, len(c.replicas))
	for i, p := range c.replicas {
		out[i] = p.Replica
	}
	return out
}

// ClusterID is the --cluster-id every replica got.
func (c *Cluster) ClusterID() uint64 { return c.clusterID }

// Secret is the shared secret every replica got.
func (c *Cluster) Secret() string { return c.secret }

// Dir is the temporary directory holding data and logs.
func (c *Cluster) Dir() string { return c.dir }

// Kill sends SIGKILL to every child still running, by PID, without waiting.
func (c *Cluster) Kill() {
	for _, p := range c.replicas {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
		}
	}
}

// Stop sends SIGTERM to every replica, SIGKILL by PID to any still running after StopGrace,
// waits for all of them, and removes the data directory unless Keep.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	for _, p := range c.replicas {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	grace := time.NewTimer(c.cfg.StopGrace)
	defer grace.Stop()
	var killed []string
	for _, p := range c.replicas {
		select {
		case <-p.exited:
		case <-grace.C:
			// Grace used up: everyone still running gets SIGKILL now.
			for _, q := range c.replicas {
				select {
				case <-q.exited:
				default:
					killed = append(killed, strconv.FormatUint(uint64(q.ID), 10))
					_ = q.cmd.Process.Kill()
				}
			}
			grace.Reset(time.Hour)
		}
	}
	for _, p := range c.replicas {
		<-p.exited // Kill always ends the process; WaitDelay bounds the pipe copying
	}
	var errs []error
	if len(killed) > 0 {
		errs = append(errs, fmt.Errorf("bench: replicas %s ignored SIGTERM for %v and were killed",
			strings.Join(killed, ","), c.cfg.StopGrace))
	}
	if !c.cfg.Keep && c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("bench: removing %s: %w", c.dir, err))
		}
	}
	return errors.Join(errs...)
}

// StopOnSignal ties the cluster to SIGINT and SIGTERM: see OnInterrupt, with Kill as the
// second-signal action.
func (c *Cluster) StopOnSignal(interrupt func()) (release func()) {
	return OnInterrupt(interrupt, c.Kill)
}

// OnInterrupt handles SIGINT and SIGTERM for a benchmark: the first signal calls interrupt
// (so the run ends and the caller's deferred teardown runs in order); a second signal calls
// kill (when not nil; it should SIGKILL every child by PID) and exits the process with
// status 130. The returned release undoes the handler.
func OnInterrupt(interrupt, kill func()) (release func()) {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-signals:
			interrupt()
		case <-done:
			return
		}
		select {
		case <-signals:
			if kill != nil {
				kill()
			}
			os.Exit(130)
		case <-done:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(signals)
			close(done)
		})
	}
}
