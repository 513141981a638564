package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mpaxos/mpaxos/bench"
	"github.com/mpaxos/mpaxos/perf"
)

// options are mpaxos-bench's flags.
type options struct {
	spawn          int
	endpoints      []string
	adminEndpoints []perf.Endpoint
	clusterID      uint64

	clients  int
	inflight int
	payload  int
	duration time.Duration
	warmup   time.Duration
	rate     float64
	tick     time.Duration
	timeout  time.Duration
	sweep    bool

	json   bool
	hist   string
	report string

	profileKinds []perf.Kind
	profileDir   string

	mpaxosBin        string
	fsync            bool
	keep             bool
	readyTimeout     time.Duration
	window           int
	batchBytesMax    int
	batchCommandsMax int
	linger           time.Duration
	eventLoops       int
}

// usageError is a command-line mistake: one line on stderr, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const usageHeader = `usage: mpaxos-bench (--spawn N | --endpoints HOST:PORT,...) [flags]

Drives an mpaxos cluster with load and reports throughput and latency percentiles.
--spawn starts N local replicas (real mpaxos serve processes, fsync on by default) and tears
them down afterwards; --endpoints drives a cluster that is already running.

Flags:
`

func newFlagSet(o *options, raw *rawFlags) *flag.FlagSet {
	d := bench.DefaultConfig()
	fs := flag.NewFlagSet("mpaxos-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&o.spawn, "spawn", 0, "start this many local replicas (1..9; 3 or 5 make sense)")
	fs.StringVar(&raw.endpoints, "endpoints", "", "drive an existing cluster: client addresses HOST:PORT,...")
	fs.StringVar(&raw.adminEndpoints, "admin-endpoints", "", "with --endpoints and --profile: admin addresses, HOST:PORT,... in replica id order, or ID=HOST:PORT,...")
	fs.Uint64Var(&o.clusterID, "cluster-id", 1, "with --endpoints: the cluster's --cluster-id")
	fs.IntVar(&o.clients, "clients", d.Clients, "client connections, each with its own goroutine")
	fs.IntVar(&o.inflight, "inflight", d.Inflight, "requests outstanding per client (closed loop; the cap per client in the open loop)")
	fs.IntVar(&o.payload, "payload", d.PayloadBytes, "payload bytes per request")
	fs.DurationVar(&o.duration, "duration", d.Duration, "measured window")
	fs.DurationVar(&o.warmup, "warmup", d.Warmup, "load before the measured window, not counted")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: total requests per second (latency from each request's intended send time); 0 = closed loop")
	fs.DurationVar(&o.tick, "open-loop-tick", bench.DefaultOpenLoopTick, "open loop: the pacer wakes at most this often and sends every request due by then (the wait counts as latency; \"send lag\" shows it); 0 = wake for every request")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout (also the end-of-run drain limit)")
	fs.BoolVar(&o.sweep, "sweep", false, "run with 1, 2, 4, ... up to --clients clients and print the throughput/latency curve")
	fs.BoolVar(&o.json, "json", false, "print one JSON line with the result on stdout (the table goes to stderr)")
	fs.StringVar(&o.hist, "hist", "", "write the latency percentile distribution (.hgrm, milliseconds) to this file")
	fs.StringVar(&o.report, "report", "", "write a self-contained HTML report to this file")
	fs.StringVar(&raw.profile, "profile", "", "capture these pprof profiles from every replica during the measured window: cpu,heap,mutex,block,goroutine")
	fs.StringVar(&o.profileDir, "profile-dir", "perf-out", "directory for --profile files (replica-<id>-<kind>.pb.gz)")
	fs.StringVar(&o.mpaxosBin, "mpaxos-bin", "", "mpaxos binary for --spawn (default: next to mpaxos-bench, then $PATH)")
	fs.BoolVar(&o.fsync, "fsync", true, "spawned replicas fsync their log (with --endpoints: what the report claims)")
	fs.BoolVar(&o.keep, "keep", false, "keep the spawned replicas' data directory and logs")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long spawned replicas may take to print their ready line")
	fs.IntVar(&o.window, "window", 0, "passed to spawned replicas as --window (0 = their default)")
	fs.IntVar(&o.batchBytesMax, "batch-bytes-max", 0, "passed to spawned replicas (0 = their default)")
	fs.IntVar(&o.batchCommandsMax, "batch-commands-max", 0, "passed to spawned replicas (0 = their default)")
	fs.DurationVar(&o.linger, "linger", 0, "passed to spawned replicas (0 = their default)")
	fs.IntVar(&o.eventLoops, "event-loops", 0, "passed to spawned replicas (0 = their default)")
	return fs
}

// rawFlags are flags parsed further after flag.Parse.
type rawFlags struct {
	endpoints, adminEndpoints, profile string
}

func usage(w io.Writer) {
	var o options
	var raw rawFlags
	fs := newFlagSet(&o, &raw)
	fs.SetOutput(w)
	fmt.Fprint(w, usageHeader)
	fs.PrintDefaults()
}

// parseFlags returns the options or a *usageError (or flag.ErrHelp).
func parseFlags(args []string) (options, error) {
	var o options
	var raw rawFlags
	fs := newFlagSet(&o, &raw)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return o, usagef("unexpected argument %q (every setting is a --flag)", fs.Arg(0))
	}
	o.endpoints = splitList(raw.endpoints)
	if err := o.check(); err != nil {
		return o, err
	}
	if raw.adminEndpoints != "" {
		eps, err := parseAdminEndpoints(raw.adminEndpoints)
		if err != nil {
			return o, err
		}
		o.adminEndpoints = eps
	}
	if raw.profile != "" {
		kinds, err := perf.ParseKinds(raw.profile)
		if err != nil {
			return o, usagef("--profile: %v", strings.TrimPrefix(err.Error(), perf.ErrConfig.Error()+": "))
		}
		o.profileKinds = kinds
		switch {
		case o.sweep:
			return o, usagef("--profile profiles one load; it cannot be combined with --sweep")
		case o.spawn == 0 && len(o.adminEndpoints) == 0:
			return o, usagef("--profile with --endpoints needs --admin-endpoints (the replicas' admin addresses)")
		case o.profileDir == "":
			return o, usagef("--profile-dir is empty")
		}
	}
	return o, nil
}

func (o *options) check() error {
	switch {
	case o.spawn == 0 && len(o.endpoints) == 0:
		return usagef("give --spawn N to start a local cluster, or --endpoints HOST:PORT,... to drive a running one")
	case o.spawn != 0 && len(o.endpoints) != 0:
		return usagef("give --spawn or --endpoints, not both")
	case o.spawn < 0 || o.spawn > bench.ReplicasMax:
		return usagef("--spawn %d: want 1..%d replicas", o.spawn, bench.ReplicasMax)
	case o.clients < 1 || o.clients > bench.ClientsMax:
		return usagef("--clients %d: want 1..%d", o.clients, bench.ClientsMax)
	case o.inflight < 1 || o.inflight > bench.InflightMax:
		return usagef("--inflight %d: want 1..%d", o.inflight, bench.InflightMax)
	case o.payload < 0 || o.payload > bench.PayloadBytesMax:
		return usagef("--payload %d: want 0..%d bytes", o.payload, bench.PayloadBytesMax)
	case o.duration <= 0:
		return usagef("--duration %v: want > 0", o.duration)
	case o.warmup < 0:
		return usagef("--warmup %v: want >= 0", o.warmup)
	case o.rate < 0 || o.rate != o.rate || o.rate > 1e9:
		return usagef("--rate %v: want 0 (closed loop) or a rate up to 1e9 per second", o.rate)
	case o.tick < 0 || o.tick > time.Second:
		return usagef("--open-loop-tick %v: want 0..1s", o.tick)
	case o.timeout <= 0:
		return usagef("--timeout %v: want > 0", o.timeout)
	case o.readyTimeout <= 0:
		return usagef("--ready-timeout %v: want > 0", o.readyTimeout)
	case o.window < 0 || o.batchBytesMax < 0 || o.batchCommandsMax < 0 || o.linger < 0 || o.eventLoops < 0:
		return usagef("--window, --batch-bytes-max, --batch-commands-max, --linger and --event-loops must not be negative")
	}
	for _, e := range o.endpoints {
		if !strings.Contains(e, ":") {
			return usagef("--endpoints: %q is not HOST:PORT", e)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// parseAdminEndpoints reads "a,b,c" (ids 1, 2, 3) or "1=a,3=c".
func parseAdminEndpoints(s string) ([]perf.Endpoint, error) {
	var eps []perf.Endpoint
	for i, part := range splitList(s) {
		id, addr := uint64(i+1), part
		if before, after, ok := strings.Cut(part, "="); ok {
			n, err := strconv.ParseUint(before, 10, 32)
			if err != nil || n == 0 {
				return nil, usagef("--admin-endpoints: %q: want ID=HOST:PORT with a non-zero id", part)
			}
			id, addr = n, after
		}
		if !strings.Contains(addr, ":") {
			return nil, usagef("--admin-endpoints: %q is not HOST:PORT", addr)
		}
		eps = append(eps, perf.Endpoint{ReplicaID: uint32(id), AdminAddr: addr})
	}
	if len(eps) == 0 {
		return nil, usagef("--admin-endpoints is empty")
	}
	return eps, nil
}

// findMpaxos resolves --mpaxos-bin: the flag, else mpaxos next to this executable, else $PATH.
func findMpaxos(flagValue string) (string, error) {
	if flagValue != "" {
		if st, err := os.Stat(flagValue); err != nil || st.IsDir() {
			return "", fmt.Errorf("--mpaxos-bin %s: not an executable file (%v)", flagValue, err)
		}
		return flagValue, nil
	}
	var beside string
	if self, err := os.Executable(); err == nil {
		beside = filepath.Join(filepath.Dir(self), "mpaxos")
		if st, err := os.Stat(beside); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return beside, nil
		}
	}
	if path, err := exec.LookPath("mpaxos"); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("cannot find the mpaxos binary (looked at %s and in $PATH): build it (make build) or give --mpaxos-bin", beside)
}

// replicaArgs are the pass-through flags for spawned replicas.
func (o *options) replicaArgs() []string {
	var args []string
	if o.window > 0 {
		args = append(args, "--window", strconv.Itoa(o.window))
	}
	if o.batchBytesMax > 0 {
		args = append(args, "--batch-bytes-max", strconv.Itoa(o.batchBytesMax))
	}
	if o.batchCommandsMax > 0 {
		args = append(args, "--batch-commands-max", strconv.Itoa(o.batchCommandsMax))
	}
	if o.linger > 0 {
		args = append(args, "--linger", o.linger.String())
	}
	if o.eventLoops > 0 {
		args = append(args, "--event-loops", strconv.Itoa(o.eventLoops))
	}
	return args
}
