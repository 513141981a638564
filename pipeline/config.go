package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mpaxos/mpaxos/batching"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/netio"
	"github.com/mpaxos/mpaxos/wal"
)

// ErrInvalidConfig wraps every configuration error; the message names the field.
var ErrInvalidConfig = errors.New("pipeline: invalid config")

// Config is one replica's runtime configuration. Start from DefaultConfig and set the identity
// fields (ID, Peers, ClusterID, Secret, DataDir). Every queue has a bound here.
type Config struct {
	// ID is this replica's id: non-zero and a key of Peers.
	ID uint32
	// Peers maps every replica of the cluster, this one included, to the address it serves
	// clients and peers on. Redirects name the leader's address from here.
	Peers map[uint32]string
	// ListenAddr is the address to bind; empty means Peers[ID].
	ListenAddr string
	// AdminAddr, if set, serves /debug/pprof/, /metrics, /debug/latency, /debug/applied and
	// /debug/status. The process's command line is never served (it may hold --secret).
	AdminAddr string
	// AdminToken, if set, is required on every admin request as "Authorization: Bearer
	// <token>"; others get 401. Without it, anyone who reaches AdminAddr reads the metrics and
	// profiles: bind it to loopback or set a token.
	AdminToken string
	// AdminNoPprof leaves /debug/pprof/ out of the admin server (heap, goroutine and trace
	// dumps show request payloads).
	AdminNoPprof bool
	// ClusterID must match on every connection; Secret (>= 16 bytes) authenticates peers.
	ClusterID uint64
	Secret    []byte
	// DataDir holds the write-ahead log.
	DataDir string
	// NoSync turns fsync off: acknowledged commands can be lost on a machine crash. For
	// benchmarks and tests only.
	NoSync bool

	// TickInterval is one unit of core's logical time.
	TickInterval time.Duration
	// ElectionTicks, HeartbeatTicks, RetransmitTicks: see core.Config.
	ElectionTicks   int
	HeartbeatTicks  int
	RetransmitTicks int
	// Window is the most slots in Phase 2 at once (core.Config.Window).
	Window int
	// InflightBytesMax bounds the bytes of proposed, not yet chosen values.
	InflightBytesMax int
	// RetainSlots: applied slots core keeps in memory for catch-up (core.Config.RetainSlots).
	RetainSlots int
	// RetainBytesMax bounds those slots by the bytes of their values (core.Config.RetainBytesMax;
	// 0: by count only). Older slots are served from the chosen-value cache.
	RetainBytesMax int
	// CatchUpSlotsMax / CatchUpBytesMax bound one catch-up reply.
	CatchUpSlotsMax int
	CatchUpBytesMax int

	// Batching bounds the batcher (batch size, linger, pending commands and bytes).
	Batching batching.Config
	// PeerQueueMax bounds peer messages waiting for the step loop; beyond it they are dropped
	// (Paxos retransmits) and counted.
	PeerQueueMax int
	// ApplyQueueMax bounds the Ready results waiting for the apply stage; the step loop waits
	// when it is full.
	ApplyQueueMax int
	// DiskReadQueueMax bounds the reads waiting for the disk reader (reads over the wire of
	// slots the chosen-value cache no longer holds); beyond it a read is answered
	// StatusOverloaded at once. Disk reads never run on the apply goroutine, so a flood of
	// them cannot hold up acknowledgements.
	DiskReadQueueMax int
	// PendingRequestsMax bounds the requests taken from all clients and not yet answered;
	// beyond it ingest stops reading client connections until answers free room.
	PendingRequestsMax int
	// SessionsMax bounds the exactly-once table (clients remembered).
	SessionsMax int
	// SessionSeqsMax bounds, per client, how far a command's seq may run ahead of its seq
	// floor (the seqs remembered per client); beyond it the command is answered StatusInvalid
	// and never applied. Every replica of a cluster must use the same value.
	SessionSeqsMax int
	// SessionIdleSlotsMax: in a full exactly-once table, a client idle for this many slots
	// may make room for a new one; before that a new client is answered StatusOverloaded
	// (core.Sessions). Every replica of a cluster must use the same value.
	SessionIdleSlotsMax uint64
	// CacheBytesMax bounds the in-memory ring of recent chosen values that serves catch-up
	// below core's retained slots.
	CacheBytesMax int

	// CacheColdBytesMax bounds the second tier of that cache: a ristretto cache of values that
	// fell out of the ring, serving older catch-up and reads without the WAL. 0 turns it off.
	CacheColdBytesMax int
	// PersistInflightMax bounds the Readies whose WAL writes are in flight at once. Above 1
	// the step loop goes on proposing, sending Accepts and accepting while earlier writes
	// sync (the WAL group-commits them, completes them in order); 1 is one Ready at a time.
	PersistInflightMax int

	// WALSegmentBytes / WALQueueBytesMax: see wal.Options.
	WALSegmentBytes  int64
	WALQueueBytesMax int
	// WALFS is the WAL's file system (wal.Options.FS); nil is the operating system's.
	// mpaxos serve sets it only for its fault hook, --fault-disk-stall-file (wal.StallFS).
	WALFS wal.FS

	// Network holds netio's limits. Its identity fields (ListenAddr, ReplicaID, ClusterID,
	// Secret, Peers, Logger) are filled in from the fields above.
	Network netio.Config

	// Snapshot bounds snapshots, compaction and snapshot transfer (see snapshot.go).
	Snapshot SnapshotConfig
	// Application, if set, is the replicated state machine the apply stage drives and
	// snapshots (see embed.go); nil for a pure sequencer.
	Application Application

	// Logger receives the replica's events; nil means slog.Default().
	Logger *slog.Logger
	// Rand drives core's randomised timeouts; nil means a generator seeded at random.
	Rand core.Rand
}

// Defaults of Config.
const (
	DefaultTickInterval       = 10 * time.Millisecond
	DefaultElectionTicks      = 30
	DefaultHeartbeatTicks     = 3
	DefaultRetransmitTicks    = 20
	DefaultWindow             = 16
	DefaultInflightBytesMax   = 64 << 20
	DefaultRetainSlots        = 1024
	DefaultRetainBytesMax     = 16 << 20
	DefaultCatchUpSlotsMax    = 256
	DefaultCatchUpBytesMax    = 4 << 20
	DefaultPeerQueueMax       = 16384
	DefaultApplyQueueMax      = 1024
	DefaultDiskReadQueueMax   = 256
	DefaultPendingRequestsMax = 1 << 18
	DefaultSessionsMax        = 1 << 16
	DefaultSessionSeqsMax     = core.DefaultSessionSeqsMax
	DefaultCacheBytesMax      = 32 << 20
	DefaultPersistInflightMax = 64
	DefaultCacheColdBytesMax  = 32 << 20
)

// DefaultConfig returns a Config with every limit at its default and fsync on.
func DefaultConfig() Config {
	w := wal.DefaultOptions("")
	return Config{
		TickInterval:        DefaultTickInterval,
		ElectionTicks:       DefaultElectionTicks,
		HeartbeatTicks:      DefaultHeartbeatTicks,
		RetransmitTicks:     DefaultRetransmitTicks,
		Window:              DefaultWindow,
		InflightBytesMax:    DefaultInflightBytesMax,
		RetainSlots:         DefaultRetainSlots,
		RetainBytesMax:      DefaultRetainBytesMax,
		CatchUpSlotsMax:     DefaultCatchUpSlotsMax,
		CatchUpBytesMax:     DefaultCatchUpBytesMax,
		Batching:            batching.DefaultConfig(),
		PeerQueueMax:        DefaultPeerQueueMax,
		ApplyQueueMax:       DefaultApplyQueueMax,
		DiskReadQueueMax:    DefaultDiskReadQueueMax,
		PendingRequestsMax:  DefaultPendingRequestsMax,
		SessionsMax:         DefaultSessionsMax,
		SessionSeqsMax:      DefaultSessionSeqsMax,
		SessionIdleSlotsMax: core.DefaultSessionIdleSlotsMax,
		CacheBytesMax:       DefaultCacheBytesMax,
		PersistInflightMax:  DefaultPersistInflightMax,
		CacheColdBytesMax:   DefaultCacheColdBytesMax,
		WALSegmentBytes:     w.SegmentBytes,
		WALQueueBytesMax:    w.QueueBytesMax,
		Network:             defaultNetwork(),
		Snapshot:            DefaultSnapshotConfig(),
	}
}

// DefaultHandshakeTimeout is shorter than netio's default: a dial that lands in the backlog
// of a peer that is shutting down waits this long before the link retries, which delays that
// peer's rejoin after a restart by as much.
const DefaultHandshakeTimeout = time.Second

func defaultNetwork() netio.Config {
	nc := netio.DefaultConfig()
	nc.HandshakeTimeout = DefaultHandshakeTimeout
	// S2 off by default: on loopback and LAN links it costs the leader more CPU (one
	// compression per peer link per Accept) than the bytes it saves are worth; measured in
	// docs/BENCHMARKS.md ("Throughput"). Set Network.Features = codec.FeatureS2 for slow links.
	nc.Features = 0
	return nc
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("pipeline: Config.%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidConfig)
}

// Validate reports the first field out of range, wrapped in ErrInvalidConfig. The nested
// configurations (core, netio, wal, batching) are validated by Start when they are built.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return invalid("ID", "must be non-zero")
	}
	if _, ok := c.Peers[c.ID]; !ok {
		return invalid("Peers", "does not contain this replica's id %d", c.ID)
	}
	for id, addr := range c.Peers {
		if id == 0 {
			return invalid("Peers", "replica id 0 is reserved")
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return invalid("Peers", "address of replica %d %q is not host:port", id, addr)
		}
	}
	if c.ListenAddr != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			return invalid("ListenAddr", "%q is not host:port", c.ListenAddr)
		}
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return invalid("AdminAddr", "%q is not host:port", c.AdminAddr)
		}
	}
	if len(c.Secret) < 16 {
		return invalid("Secret", "%d bytes, need at least 16", len(c.Secret))
	}
	if c.DataDir == "" {
		return invalid("DataDir", "empty")
	}
	if c.TickInterval < time.Millisecond {
		return invalid("TickInterval", "%v: must be at least 1ms", c.TickInterval)
	}
	positive := []struct {
		name  string
		value int
	}{
		{"HeartbeatTicks", c.HeartbeatTicks},
		{"RetransmitTicks", c.RetransmitTicks},
		{"Window", c.Window},
		{"InflightBytesMax", c.InflightBytesMax},
		{"CatchUpSlotsMax", c.CatchUpSlotsMax},
		{"CatchUpBytesMax", c.CatchUpBytesMax},
		{"PeerQueueMax", c.PeerQueueMax},
		{"ApplyQueueMax", c.ApplyQueueMax},
		{"DiskReadQueueMax", c.DiskReadQueueMax},
		{"PendingRequestsMax", c.PendingRequestsMax},
		{"SessionsMax", c.SessionsMax},
		{"SessionSeqsMax", c.SessionSeqsMax},
		{"SessionIdleSlotsMax", int(min(c.SessionIdleSlotsMax, 1<<62))},
		{"CacheBytesMax", c.CacheBytesMax},
		{"PersistInflightMax", c.PersistInflightMax},
		{"WALQueueBytesMax", c.WALQueueBytesMax},
	}
	for _, f := range positive {
		if f.value <= 0 {
			return invalid(f.name, "%d: must be positive", f.value)
		}
	}
	if c.ElectionTicks <= c.HeartbeatTicks {
		return invalid("ElectionTicks", "%d: must exceed HeartbeatTicks %d", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.CacheColdBytesMax < 0 {
		return invalid("CacheColdBytesMax", "%d: must not be negative", c.CacheColdBytesMax)
	}
	if c.RetainBytesMax < 0 {
		return invalid("RetainBytesMax", "%d: must not be negative", c.RetainBytesMax)
	}
	if c.RetainSlots < 0 {
		return invalid("RetainSlots", "%d: must not be negative", c.RetainSlots)
	}
	if err := c.Batching.Validate(); err != nil {
		return fmt.Errorf("pipeline: Config.Batching: %w: %w", err, ErrInvalidConfig)
	}
	lim := c.Network.Limits
	if c.Batching.CommandBytesMax < lim.PayloadBytesMax {
		return invalid("Batching.CommandBytesMax", "%d is below Network.Limits.PayloadBytesMax %d: a request the network takes could never be batched",
			c.Batching.CommandBytesMax, lim.PayloadBytesMax)
	}
	if one := c.Batching.CommandBytesMax + batching.CommandOverheadBytes + batching.BatchOverheadBytes; one > lim.ValueBytesMax {
		return invalid("Batching.CommandBytesMax", "%d: a batch of one such command (%d bytes) exceeds Network.Limits.ValueBytesMax %d",
			c.Batching.CommandBytesMax, one, lim.ValueBytesMax)
	}
	if c.Batching.BatchBytesMax > lim.ValueBytesMax {
		return invalid("Batching.BatchBytesMax", "%d exceeds Network.Limits.ValueBytesMax %d", c.Batching.BatchBytesMax, lim.ValueBytesMax)
	}
	if c.Batching.BatchCommandsMax > lim.BatchCommandsMax {
		return invalid("Batching.BatchCommandsMax", "%d exceeds Network.Limits.BatchCommandsMax %d", c.Batching.BatchCommandsMax, lim.BatchCommandsMax)
	}
	if c.InflightBytesMax < lim.ValueBytesMax {
		return invalid("InflightBytesMax", "%d is below Network.Limits.ValueBytesMax %d", c.InflightBytesMax, lim.ValueBytesMax)
	}
	if c.CatchUpBytesMax > lim.FrameBytesMax/2 {
		return invalid("CatchUpBytesMax", "%d exceeds half of Network.Limits.FrameBytesMax %d", c.CatchUpBytesMax, lim.FrameBytesMax)
	}
	if err := c.Snapshot.validate(lim.ValueBytesMax, c.Network.OutboundBytesMax); err != nil {
		return err
	}
	return nil
}

// listenAddr is the address to bind.
func (c *Config) listenAddr() string {
	if c.ListenAddr != "" {
		return c.ListenAddr
	}
	return c.Peers[c.ID]
}

// coreConfig derives core's configuration.
func (c *Config) coreConfig(r core.Rand) core.Config {
	peers := make([]uint32, 0, len(c.Peers))
	for id := range c.Peers {
		peers = append(peers, id)
	}
	cc := core.DefaultConfig(c.ID, peers)
	cc.ElectionTicks = c.ElectionTicks
	cc.HeartbeatTicks = c.HeartbeatTicks
	cc.RetransmitTicks = c.RetransmitTicks
	cc.Window = c.Window
	cc.ValueBytesMax = c.Network.Limits.ValueBytesMax
	cc.AcceptValuesMax = c.Network.Limits.ValuesMax
	cc.StepValuesOwned = true // HandlePeer copies every message into fresh memory (copyMessage)
	cc.InflightBytesMax = c.InflightBytesMax
	cc.CatchUpSlotsMax = c.CatchUpSlotsMax
	cc.CatchUpBytesMax = c.CatchUpBytesMax
	cc.RetainSlots = c.RetainSlots
	cc.RetainBytesMax = c.RetainBytesMax
	cc.Rand = r
	return cc
}

// networkConfig derives netio's configuration.
func (c *Config) networkConfig(logger *slog.Logger) netio.Config {
	nc := c.Network
	nc.ListenAddr = c.listenAddr()
	nc.ReplicaID = c.ID
	nc.ClusterID = c.ClusterID
	nc.Secret = c.Secret
	nc.Peers = make(map[uint32]string, len(c.Peers)-1)
	for id, addr := range c.Peers {
		if id != c.ID {
			nc.Peers[id] = addr
		}
	}
	nc.Logger = logger
	return nc
}

// walOptions derives the WAL's options.
func (c *Config) walOptions(logger *slog.Logger) wal.Options {
	o := wal.DefaultOptions(c.DataDir)
	o.SegmentBytes = c.WALSegmentBytes
	o.QueueBytesMax = c.WALQueueBytesMax
	o.NoSync = c.NoSync
	o.Logger = logger
	o.FS = c.WALFS
	o.IndexKeys = true // reads of slots the cache no longer holds: one positioned read each
	return o
}
