// Command mpaxos-bench drives an mpaxos cluster with load and reports throughput and
// HdrHistogram latency percentiles. See `mpaxos-bench --help` and docs/BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaxos/mpaxos/bench"
	"github.com/mpaxos/mpaxos/perf"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command; deferred teardown runs before it returns (and while a panic
// unwinds), so spawned replicas never outlive it.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "mpaxos-bench: %v (see mpaxos-bench --help)\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cluster atomic.Pointer[bench.Cluster]
	release := bench.OnInterrupt(cancel, func() {
		if c := cluster.Load(); c != nil {
			c.Kill()
		}
	})
	defer release()

	endpoints, admin, clusterID := o.endpoints, o.adminEndpoints, o.clusterID
	replicas := len(endpoints)
	if o.spawn > 0 {
		c, err := spawn(ctx, &o, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "mpaxos-bench: %v\n", err)
			return exitFailed
		}
		cluster.Store(c)
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintf(stderr, "mpaxos-bench: teardown: %v\n", err)
			}
			if o.keep {
				fmt.Fprintf(stderr, "mpaxos-bench: kept data and logs in %s\n", c.Dir())
			}
		}()
		endpoints, clusterID, replicas = c.Endpoints(), c.ClusterID(), o.spawn
		admin = nil
		for _, r := range c.Replicas() {
			admin = append(admin, perf.Endpoint{ReplicaID: r.ID, AdminAddr: r.AdminAddr})
		}
	}

	cfg := bench.DefaultConfig()
	cfg.Clients, cfg.Inflight, cfg.PayloadBytes = o.clients, o.inflight, o.payload
	cfg.Warmup, cfg.Duration, cfg.Rate, cfg.OpenLoopTick = o.warmup, o.duration, o.rate, o.tick
	cfg.DrainTimeout = o.timeout
	cfg.LatencyMax = max(cfg.LatencyMax, 2*o.timeout)
	cfg.Progress = stderr
	cfg.ErrorKind = clientErrorKind
	capture := newProfileCapture(ctx, &o, admin)
	if capture != nil {
		cfg.OnMeasureStart = capture.start
	}
	dial := clientDialer(endpoints, clusterID, o.inflight, o.timeout)

	var results []*bench.Result
	if o.sweep {
		results, err = bench.Sweep(ctx, cfg, dial, func(r *bench.Result) {
			fmt.Fprintf(stderr, "mpaxos-bench: sweep step: %d clients, %.1f ops/s, p99 %s\n",
				r.Clients, r.OpsPerSec(), bench.FormatLatency(r.Percentile(99)))
		})
	} else {
		var res *bench.Result
		res, err = bench.Run(ctx, cfg, dial)
		if res != nil {
			results = []*bench.Result{res}
		}
	}
	for _, r := range results {
		r.Replicas, r.Fsync = replicas, o.fsync
	}
	status := exitOK
	if len(results) > 0 {
		if werr := writeOutputs(&o, results, stdout, stderr); werr != nil {
			fmt.Fprintf(stderr, "mpaxos-bench: %v\n", werr)
			status = exitFailed
		}
	}
	if capture != nil {
		capture.finish(stderr)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintf(stderr, "mpaxos-bench: interrupted: %v\n", err)
		return exitInterrupted
	case err != nil:
		fmt.Fprintf(stderr, "mpaxos-bench: %v\n", err)
		return exitFailed
	}
	return status
}

func spawn(ctx context.Context, o *options, stderr io.Writer) (*bench.Cluster, error) {
	bin, err := findMpaxos(o.mpaxosBin)
	if err != nil {
		return nil, err
	}
	ccfg := bench.DefaultClusterConfig(bin)
	ccfg.Replicas, ccfg.Fsync, ccfg.Keep = o.spawn, o.fsync, o.keep
	ccfg.ReadyTimeout = o.readyTimeout
	ccfg.ExtraArgs = o.replicaArgs()
	started := time.Now()
	c, err := bench.StartCluster(ctx, ccfg)
	if err != nil {
		return nil, err
	}
	fsync := "on"
	if !o.fsync {
		fsync = "off"
	}
	fmt.Fprintf(stderr, "mpaxos-bench: %d replicas ready in %v (fsync %s, data in %s): %v\n",
		o.spawn, time.Since(started).Round(time.Millisecond), fsync, c.Dir(), c.Endpoints())
	return c, nil
}

// writeOutputs prints the table (stdout, or stderr with --json), the JSON line(s), the
// .hgrm file and the HTML report.
func writeOutputs(o *options, results []*bench.Result, stdout, stderr io.Writer) error {
	table := stdout
	if o.json {
		table = stderr
	}
	last := results[len(results)-1]
	if o.sweep {
		if err := bench.WriteSweepTable(table, results); err != nil {
			return err
		}
	} else if err := last.WriteTable(table); err != nil {
		return err
	}
	if o.json {
		for _, r := range results {
			line, err := r.JSON()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", line)
		}
	}
	if o.hist != "" {
		if err := writeFile(o.hist, last.WriteHgrm); err != nil {
			return fmt.Errorf("--hist: %w", err)
		}
		fmt.Fprintf(stderr, "mpaxos-bench: latency distribution written to %s\n", o.hist)
	}
	if o.report != "" {
		if err := writeFile(o.report, func(w io.Writer) error { return bench.WriteReport(w, results) }); err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		fmt.Fprintf(stderr, "mpaxos-bench: HTML report written to %s\n", o.report)
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileCapture runs perf.Capture once, when the measured window starts.
type profileCapture struct {
	ctx       context.Context
	cfg       perf.Config
	endpoints []perf.Endpoint

	mu       sync.Mutex
	closed   bool // the run is over: a late start does nothing
	wg       sync.WaitGroup
	profiles []perf.Profile
	err      error
	selfPath string // the load generator's own CPU profile, once written
	selfErr  error
}

func newProfileCapture(ctx context.Context, o *options, endpoints []perf.Endpoint) *profileCapture {
	if len(o.profileKinds) == 0 {
		return nil
	}
	cfg := perf.DefaultConfig(o.profileDir, o.duration)
	cfg.Kinds = o.profileKinds
	return &profileCapture{ctx: ctx, cfg: cfg, endpoints: endpoints}
}

func (p *profileCapture) start(window time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true // one capture per run
	p.cfg.Window = window
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.profiles, p.err = perf.Capture(p.ctx, p.cfg, p.endpoints)
	}()
	if slices.Contains(p.cfg.Kinds, perf.CPU) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.selfErr = p.profileSelf(window)
		}()
	}
}

// profileSelf writes the load generator's own CPU profile for the window
// (loadgen-cpu.pb.gz): at saturation the generator shares the machine with the replicas,
// and its cost per request is part of what bounds the figures.
func (p *profileCapture) profileSelf(window time.Duration) error {
	path := filepath.Join(p.cfg.Dir, "loadgen-cpu.pb.gz")
	if err := os.MkdirAll(p.cfg.Dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("load generator CPU profile: %w", err)
	}
	select {
	case <-time.After(window):
	case <-p.ctx.Done():
	}
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		return err
	}
	p.selfPath = path
	return nil
}

// finish waits for a capture in progress and prints what it saved.
func (p *profileCapture) finish(stderr io.Writer) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	switch {
	case p.err != nil:
		fmt.Fprintf(stderr, "mpaxos-bench: profiles: %v\n", p.err)
	case p.profiles == nil:
		fmt.Fprintln(stderr, "mpaxos-bench: profiles: none captured (the run ended before its measured window)")
	default:
		_ = perf.WriteSummary(stderr, p.profiles)
	}
	switch {
	case p.selfErr != nil:
		fmt.Fprintf(stderr, "mpaxos-bench: load generator profile: %v\n", p.selfErr)
	case p.selfPath != "":
		fmt.Fprintf(stderr, "  go tool pprof -http=127.0.0.1:0 %s   (the load generator itself)\n", p.selfPath)
	}
}
