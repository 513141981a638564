// Package mpaxos embeds a replica of an mpaxos cluster — a durable, totally ordered,
// replicated log on batched Multi-Paxos — in your own Go service.
//
// Every instance of your service runs one Node; together they form the cluster, talking raw
// TCP to each other exactly like `mpaxos serve` replicas (and `mpaxos serve` replicas and
// embedded nodes can be mixed in one cluster).
//
//	cfg := mpaxos.DefaultConfig()
//	cfg.ID, cfg.Peers = 1, map[uint32]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}
//	cfg.ClusterID, cfg.Secret, cfg.DataDir = 42, secret, "/var/lib/myservice/mpaxos"
//	node, err := mpaxos.Start(cfg)
//	offset, err := node.Propose(ctx, []byte("hello"))
//
// # Positions
//
// Every command that is applied takes the next dense offset: 0, 1, 2, ... with no gaps, the
// same on every node. (Underneath, commands are batched into Paxos slots; Entry carries the
// slot and the index in its batch too.) Read, Subscribe and Barrier speak offsets.
//
// # Outcomes of Propose
//
// Propose returns nil only once the command is chosen — accepted durably by a majority — and
// applied on this node; it then applies exactly once on every node, even though the node
// resends it internally (with the same client id and sequence number) across leader changes
// and reconnects. The errors say whether the command may have been applied:
//
//   - ErrTimeout, ErrClosed: AMBIGUOUS. The command may or may not have been chosen. Retrying
//     it with a new Propose may apply it twice; make commands idempotent or check with Read.
//   - ErrRejected, ErrTooLarge, ErrEmptyCommand: the command was not applied and will not be.
//
// # Reads
//
// Read(offset) and Subscribe(offset) serve this node's applied log: from the in-memory cache
// of recent slots, else the write-ahead log; offsets below the node's compaction point give
// ErrCompacted (Subscribe: *FellBehindError naming where to resume). A node may lag the
// cluster: Barrier returns a position confirmed by a quorum (it sends a marker through the
// log), after which every command acknowledged before the call is readable on this node.
//
// # Snapshots
//
// A node snapshots its state every SnapshotEveryCommands commands (or SnapshotEveryBytes):
// the exactly-once sessions, the offset counter and, if Config.StateMachine is set, the
// application's StateMachine.Snapshot. It then compacts its write-ahead log below the
// snapshot before last, keeping memory and disk bounded. A node that restarts loads its newest
// snapshot and replays only the log after it; a node too far behind receives a peer's
// snapshot in checksummed chunks and continues from there.
package mpaxos
