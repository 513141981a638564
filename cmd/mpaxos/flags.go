package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mpaxos/mpaxos/pipeline"
	"github.com/mpaxos/mpaxos/wal"
)

// serveOptions are the flags of `mpaxos serve`.
type serveOptions struct {
	cfg             pipeline.Config
	id              uint
	fsync           bool
	secret          string
	secretFile      string
	adminTokenFile  string
	adminPprof      bool
	configFile      string
	peers           string
	electionTimeout time.Duration
	logLevel        string
	// faultDiskStallFile arms the WAL's fault hook (wal.StallFS); "" leaves it out.
	faultDiskStallFile string
}

// usageError is a command-line mistake: reported in one line, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// eventLoopsMax bounds --event-loops: each loop is a goroutine with its own poller.
const eventLoopsMax = 256

const serveUsage = `usage: mpaxos serve --id N --peers 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT --data DIR --secret S [flags]

Runs one replica. Flags (each also a key of the --config JSON file; flags given on the
command line win over the file):
`

func newServeFlags(o *serveOptions) *flag.FlagSet {
	d := pipeline.DefaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.UintVar(&o.id, "id", 0, "this replica's id (non-zero, one of --peers)")
	fs.StringVar(&o.peers, "peers", "", "every replica of the cluster: ID=HOST:PORT,... (this one included)")
	fs.StringVar(&o.cfg.ListenAddr, "listen", "", "address to serve clients and peers on (default: this replica's --peers address)")
	fs.StringVar(&o.cfg.AdminAddr, "admin", "", "address for /metrics, /debug/pprof/, /debug/latency (default: none)")
	fs.StringVar(&o.cfg.DataDir, "data", "", "data directory (write-ahead log)")
	fs.StringVar(&o.secret, "secret", "", "cluster secret, at least 16 bytes (or MPAXOS_SECRET, or --secret-file)")
	fs.StringVar(&o.secretFile, "secret-file", "", "file holding the cluster secret")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "",
		"file holding a token every admin request must carry as 'Authorization: Bearer TOKEN' (or MPAXOS_ADMIN_TOKEN; default: none)")
	fs.BoolVar(&o.adminPprof, "admin-pprof", true, "serve /debug/pprof/ on the admin address (the command line is never served)")
	fs.Uint64Var(&o.cfg.ClusterID, "cluster-id", 1, "cluster id; every replica and client must agree")
	fs.IntVar(&o.cfg.Window, "window", d.Window, "Phase-2 window: most slots in flight")
	fs.IntVar(&o.cfg.SessionsMax, "sessions-max", d.SessionsMax,
		"clients the exactly-once table remembers; a new client beyond it is answered Overloaded (same on every replica)")
	fs.IntVar(&o.cfg.Batching.BatchBytesMax, "batch-bytes-max", d.Batching.BatchBytesMax, "largest batch (slot value) in bytes")
	fs.IntVar(&o.cfg.Batching.BatchCommandsMax, "batch-commands-max", d.Batching.BatchCommandsMax, "most commands in one batch")
	fs.DurationVar(&o.cfg.Batching.Linger, "linger", d.Batching.Linger, "close an open batch after this long while the window is full (0: never; batches grow until a slot frees)")
	fs.IntVar(&o.cfg.Network.EventLoops, "event-loops", d.Network.EventLoops, "network event loops (0: one per two CPUs, at least one)")
	fs.IntVar(&o.cfg.Network.ClientConnectionsMax, "client-connections-max", d.Network.ClientConnectionsMax,
		"most client connections; peers never count against it")
	fs.IntVar(&o.cfg.Network.HandshakesMax, "handshakes-max", d.Network.HandshakesMax,
		"most connections still in their handshake; past it the oldest (once it has waited an eighth of the handshake timeout) is closed")
	fs.IntVar(&o.cfg.Network.ClientOutboundBytesMax, "client-outbound-bytes-max", d.Network.ClientOutboundBytesMax,
		"responses queued for one client that does not read them before it is disconnected")
	fs.IntVar(&o.cfg.Network.BufferedBytesMax, "buffered-bytes-max", d.Network.BufferedBytesMax,
		"bytes all client connections together may hold in the network buffers")
	fs.DurationVar(&o.cfg.Network.FrameTimeout, "frame-timeout", d.Network.FrameTimeout,
		"a client frame must arrive whole within this once its first byte has (slow senders are cut off)")
	fs.DurationVar(&o.cfg.Network.IdleTimeout, "idle-timeout", d.Network.IdleTimeout,
		"close a client connection that sent nothing for this long with nothing pending")
	fs.BoolVar(&o.fsync, "fsync", true, "fsync the write-ahead log (off: acknowledged commands can be lost on a crash)")
	fs.DurationVar(&o.cfg.TickInterval, "tick", d.TickInterval, "protocol tick")
	fs.DurationVar(&o.electionTimeout, "election-timeout", time.Duration(d.ElectionTicks)*d.TickInterval,
		"a follower campaigns after hearing no leader for a random time in [T, 2T)")
	fs.StringVar(&o.configFile, "config", "", "JSON file with any of these flags as keys")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.faultDiskStallFile, "fault-disk-stall-file", "",
		"fault hook for tests: while this file exists, the write-ahead log's fsyncs wait, as on a stalled disk (default: no hook)")
	return fs
}

// parseServe turns the arguments of `mpaxos serve` (and the environment) into a Config.
func parseServe(args []string, getenv func(string) string) (serveOptions, error) {
	o := serveOptions{cfg: pipeline.DefaultConfig()}
	fs := newServeFlags(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return o, usagef("unexpected argument %q", fs.Arg(0))
	}
	if o.configFile != "" {
		if err := applyConfigFile(fs, o.configFile); err != nil {
			return o, err
		}
		if err := fs.Parse(args); err != nil { // the command line wins over the file
			return o, usagef("%v", err)
		}
	}
	return o, o.finish(fs, getenv)
}

// applyConfigFile sets every key of the JSON object in path as the flag of that name.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usagef("--config: %v", err)
	}
	var values map[string]any
	if err := json.Unmarshal(b, &values); err != nil {
		return usagef("--config %s: not a JSON object: %v", path, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return usagef("--config %s: unknown key %q", path, k)
		}
		var s string
		switch v := values[k].(type) {
		case string:
			s = v
		case bool:
			s = strconv.FormatBool(v)
		case float64:
			s = strconv.FormatFloat(v, 'f', -1, 64)
		case map[string]any: // "peers": {"1": "127.0.0.1:7001", ...}
			var parts []string
			for id, addr := range v {
				parts = append(parts, fmt.Sprintf("%s=%v", id, addr))
			}
			sort.Strings(parts)
			s = strings.Join(parts, ",")
		default:
			return usagef("--config %s: key %q: unsupported value %v", path, k, v)
		}
		if err := fs.Set(k, s); err != nil {
			return usagef("--config %s: key %q: %v", path, k, err)
		}
	}
	return nil
}

// finish checks the flags that need more than their type and fills the Config.
func (o *serveOptions) finish(fs *flag.FlagSet, getenv func(string) string) error {
	if o.id == 0 || o.id > 1<<32-1 {
		return usagef("--id: required, a non-zero 32-bit replica id")
	}
	o.cfg.ID = uint32(o.id)
	if o.peers == "" {
		return usagef("--peers: required, e.g. 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003")
	}
	peers, err := parsePeers(o.peers)
	if err != nil {
		return err
	}
	if _, ok := peers[o.cfg.ID]; !ok {
		return usagef("--peers: does not list this replica's --id %d", o.cfg.ID)
	}
	o.cfg.Peers = peers
	if o.cfg.DataDir == "" {
		return usagef("--data: required, the data directory")
	}
	secret, err := o.readSecret(getenv)
	if err != nil {
		return err
	}
	if len(secret) < 16 {
		return usagef("--secret: %d bytes, need at least 16", len(secret))
	}
	o.cfg.Secret = secret
	if o.cfg.AdminToken, err = o.readAdminToken(getenv); err != nil {
		return err
	}
	o.cfg.AdminNoPprof = !o.adminPprof
	o.cfg.NoSync = !o.fsync
	switch {
	case o.cfg.Window <= 0:
		return usagef("--window: %d, must be positive", o.cfg.Window)
	case o.cfg.Batching.Linger < 0:
		return usagef("--linger: %v, must not be negative", o.cfg.Batching.Linger)
	case o.cfg.TickInterval < time.Millisecond:
		return usagef("--tick: %v, must be at least 1ms", o.cfg.TickInterval)
	case o.cfg.Network.EventLoops < 0 || o.cfg.Network.EventLoops > eventLoopsMax:
		return usagef("--event-loops: %d, want 0 (one per two CPUs) to %d", o.cfg.Network.EventLoops, eventLoopsMax)
	}
	o.cfg.ElectionTicks = int((o.electionTimeout + o.cfg.TickInterval - 1) / o.cfg.TickInterval)
	if o.cfg.ElectionTicks <= 2*o.cfg.HeartbeatTicks {
		return usagef("--election-timeout: %v is under %d ticks of %v: heartbeats every %d ticks need room",
			o.electionTimeout, 2*o.cfg.HeartbeatTicks+1, o.cfg.TickInterval, o.cfg.HeartbeatTicks)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usagef("--log-level: %q is not debug, info, warn or error", o.logLevel)
	}
	o.cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if o.faultDiskStallFile != "" {
		o.cfg.WALFS = wal.NewStallFS(wal.OSFS(), o.faultDiskStallFile, o.cfg.Logger)
	}
	if err := o.cfg.Validate(); err != nil {
		return usagef("%s", flagNames(err.Error()))
	}
	// The network limits are checked here too, not only when the replica starts: with the
	// identity filled in as pipeline will, so only the limits can fail.
	network := o.cfg.Network
	network.ReplicaID, network.Secret, network.ListenAddr = o.cfg.ID, o.cfg.Secret, o.cfg.Peers[o.cfg.ID]
	if err := network.Validate(); err != nil {
		return usagef("%s", flagNames(err.Error()))
	}
	return nil
}

func (o *serveOptions) readSecret(getenv func(string) string) ([]byte, error) {
	switch {
	case o.secret != "" && o.secretFile != "":
		return nil, usagef("--secret and --secret-file: give one")
	case o.secret != "":
		return []byte(o.secret), nil
	case o.secretFile != "":
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return nil, usagef("--secret-file: %v", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	case getenv("MPAXOS_SECRET") != "":
		return []byte(getenv("MPAXOS_SECRET")), nil
	}
	return nil, usagef("--secret: required (or MPAXOS_SECRET, or --secret-file)")
}

// readAdminToken reads the admin token from --admin-token-file, else MPAXOS_ADMIN_TOKEN
// ("" if neither: the admin server then needs no token). It is never taken from the command
// line, where ps would show it.
func (o *serveOptions) readAdminToken(getenv func(string) string) (string, error) {
	token := getenv("MPAXOS_ADMIN_TOKEN")
	if o.adminTokenFile != "" {
		b, err := os.ReadFile(o.adminTokenFile)
		if err != nil {
			return "", usagef("--admin-token-file: %v", err)
		}
		token = strings.TrimRight(string(b), "\r\n")
		if token == "" {
			return "", usagef("--admin-token-file %s: the file is empty", o.adminTokenFile)
		}
	}
	return token, nil
}

// parsePeers parses ID=HOST:PORT,... .
func parsePeers(s string) (map[uint32]string, error) {
	peers := map[uint32]string{}
	for _, part := range strings.Split(s, ",") {
		idText, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, usagef("--peers: %q is not ID=HOST:PORT", part)
		}
		id, err := strconv.ParseUint(idText, 10, 32)
		if err != nil || id == 0 {
			return nil, usagef("--peers: %q: the id must be a non-zero number", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usagef("--peers: %q: the address is not HOST:PORT", part)
		}
		if _, dup := peers[uint32(id)]; dup {
			return nil, usagef("--peers: replica %d listed twice", id)
		}
		peers[uint32(id)] = addr
	}
	return peers, nil
}

// flagNames rewrites the Config field names in a pipeline error into the flags that set them.
func flagNames(msg string) string {
	r := strings.NewReplacer(
		"Config.Batching.BatchBytesMax", "--batch-bytes-max",
		"Config.Batching.BatchCommandsMax", "--batch-commands-max",
		"Config.Batching: batching: Config.BatchBytesMax", "--batch-bytes-max",
		"Config.Batching: batching: Config.BatchCommandsMax", "--batch-commands-max",
		"Config.Batching: batching: Config.Linger", "--linger",
		"Config.ListenAddr", "--listen",
		"Config.AdminAddr", "--admin",
		"Config.Window", "--window",
		"Config.ClientConnectionsMax", "--client-connections-max",
		"Config.HandshakesMax", "--handshakes-max",
		"Config.ClientOutboundBytesMax", "--client-outbound-bytes-max",
		"Config.BufferedBytesMax", "--buffered-bytes-max",
		"Config.FrameTimeout", "--frame-timeout",
		"Config.IdleTimeout", "--idle-timeout",
	)
	return r.Replace(msg)
}
