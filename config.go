package mpaxos

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mpaxos/mpaxos/pipeline"
)

// ErrInvalidConfig wraps every configuration error; the message names the field.
var ErrInvalidConfig = errors.New("mpaxos: invalid config")

// Config configures one Node. Start from DefaultConfig and set the identity fields (ID,
// Peers, ClusterID, Secret, DataDir).
type Config struct {
	// ID is this node's replica id: non-zero and a key of Peers.
	ID uint32
	// Peers maps every replica of the cluster, this one included, to the host:port it serves
	// peers (and mpaxos clients) on.
	Peers map[uint32]string
	// ListenAddr is the address to bind; empty means Peers[ID].
	ListenAddr string
	// ClusterID must be the same on every replica; Secret (at least 16 bytes) authenticates
	// replicas to each other.
	ClusterID uint64
	Secret    []byte
	// DataDir holds the write-ahead log and the snapshots. One node per directory.
	DataDir string
	// NoSync turns fsync off: acknowledged commands can be lost if the machine crashes. For
	// tests and benchmarks only.
	NoSync bool

	// StateMachine, if set, receives every command in offset order and is snapshotted and
	// restored with the node (see StateMachine). nil for a pure sequencer.
	StateMachine StateMachine

	// ProposeTimeout bounds a Propose, ProposeBatch or Barrier whose context has no earlier
	// deadline (resends included).
	ProposeTimeout time.Duration
	// ProposeInflightMax bounds the proposals outstanding at once from this node; Propose
	// blocks beyond it (backpressure).
	ProposeInflightMax int
	// ProposeNoLocalWait makes Propose, ProposeBatch and Barrier return as soon as the
	// leader answered, without waiting for this node to apply the command. On a follower that
	// saves the wait for the commit point to arrive (up to Runtime.HeartbeatTicks ticks when
	// the cluster is idle; it rides on the next Accept under load), but a Read of the returned
	// offset on this node may then give ErrNotApplied until it catches up.
	ProposeNoLocalWait bool
	// SubscribeBytesMax bounds what a Subscription holds in memory at once (payload bytes of
	// one read-ahead); at least one command is always held.
	SubscribeBytesMax int

	// SnapshotEveryCommands / SnapshotEveryBytes: take a snapshot after this many applied
	// commands or payload bytes since the last one.
	SnapshotEveryCommands int
	SnapshotEveryBytes    int64
	// SnapshotChunkBytes bounds one chunk of a snapshot sent to a replica that is behind.
	SnapshotChunkBytes int

	// Logger receives the node's events; nil means slog.Default().
	Logger *slog.Logger

	// Runtime holds the replica runtime's tuning: Phase-2 window, batching, queue bounds,
	// timeouts, network limits. Its identity, snapshot and logger fields are set from the
	// fields above.
	Runtime pipeline.Config
}

// Defaults of Config.
const (
	DefaultProposeTimeout     = 10 * time.Second
	DefaultProposeInflightMax = 1024
	DefaultSubscribeBytesMax  = 4 << 20
)

// DefaultConfig returns a Config with every limit at its default and fsync on.
func DefaultConfig() Config {
	rt := pipeline.DefaultConfig()
	return Config{
		ProposeTimeout:        DefaultProposeTimeout,
		ProposeInflightMax:    DefaultProposeInflightMax,
		SubscribeBytesMax:     DefaultSubscribeBytesMax,
		SnapshotEveryCommands: rt.Snapshot.EveryCommands,
		SnapshotEveryBytes:    rt.Snapshot.EveryBytes,
		SnapshotChunkBytes:    rt.Snapshot.ChunkBytes,
		Runtime:               rt,
	}
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("mpaxos: Config.%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidConfig)
}

// Validate reports the first field out of range, wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return invalid("ID", "must be non-zero")
	}
	if _, ok := c.Peers[c.ID]; !ok {
		return invalid("Peers", "does not contain this node's id %d", c.ID)
	}
	for id, addr := range c.Peers {
		if id == 0 {
			return invalid("Peers", "replica id 0 is reserved")
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return invalid("Peers", "address of replica %d %q is not host:port", id, addr)
		}
	}
	if len(c.Secret) < 16 {
		return invalid("Secret", "%d bytes, need at least 16", len(c.Secret))
	}
	if c.DataDir == "" {
		return invalid("DataDir", "empty")
	}
	if c.ProposeTimeout <= 0 {
		return invalid("ProposeTimeout", "%v: must be positive", c.ProposeTimeout)
	}
	if c.ProposeInflightMax <= 0 {
		return invalid("ProposeInflightMax", "%d: must be positive", c.ProposeInflightMax)
	}
	if c.SubscribeBytesMax <= 0 {
		return invalid("SubscribeBytesMax", "%d: must be positive", c.SubscribeBytesMax)
	}
	if c.SnapshotEveryCommands <= 0 {
		return invalid("SnapshotEveryCommands", "%d: must be positive", c.SnapshotEveryCommands)
	}
	if c.SnapshotEveryBytes <= 0 {
		return invalid("SnapshotEveryBytes", "%d: must be positive", c.SnapshotEveryBytes)
	}
	if c.SnapshotChunkBytes <= 0 || c.SnapshotChunkBytes > c.Runtime.Network.Limits.ValueBytesMax {
		return invalid("SnapshotChunkBytes", "%d: must be in [1, Runtime.Network.Limits.ValueBytesMax %d]",
			c.SnapshotChunkBytes, c.Runtime.Network.Limits.ValueBytesMax)
	}
	rt := c.runtime()
	if err := rt.Validate(); err != nil {
		return fmt.Errorf("mpaxos: Config.Runtime: %w: %w", err, ErrInvalidConfig)
	}
	return nil
}

// runtime derives the pipeline's configuration.
func (c *Config) runtime() pipeline.Config {
	rt := c.Runtime
	rt.ID, rt.Peers, rt.ListenAddr = c.ID, c.Peers, c.ListenAddr
	rt.ClusterID, rt.Secret, rt.DataDir, rt.NoSync = c.ClusterID, c.Secret, c.DataDir, c.NoSync
	rt.Snapshot.EveryCommands = c.SnapshotEveryCommands
	rt.Snapshot.EveryBytes = c.SnapshotEveryBytes
	rt.Snapshot.ChunkBytes = c.SnapshotChunkBytes
	rt.Logger = c.Logger
	if c.StateMachine != nil {
		rt.Application = stateMachineAdapter{c.StateMachine}
	}
	return rt
}
