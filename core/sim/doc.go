// Package sim is the deterministic simulator of core: N replicas over a simulated network and
// simulated disks, every random choice drawn from one seed (math/rand/v2 PCG), so a failing
// seed replays exactly. It drives the real core.Replica, sends every message through the real
// codec, and runs exactly-once sessions (core.Sessions) in its state machines.
//
// # Fault model, drawn per seed
//
// DrawOptions draws each seed's own mix (a third of the seeds run each fault off), so seeds
// differ in kind, not only in luck. Options.String prints a mix; -set pins any part of it.
//
//   - Network: delays of [0, DelayTicksMax] ticks (1..4), so reordering; drops (up to 15%);
//     duplicates (up to 10%); a long-delay tail (0.5-2% of messages held up to 100 ticks, so
//     stale messages of earlier ballots and of a replica's earlier lives arrive).
//   - Partitions, one at a time, healing after up to PartitionTicksMax: two groups, three
//     groups, or one-way (a set of replicas whose messages to the others are lost while the
//     others' messages still reach it).
//   - Disks: each replica's disk is three queues, each completing in order, after a latency
//     drawn per operation: entry writes (the WAL writer), hard-state saves (the hard-state
//     saver) and snapshot file operations. A synced write takes up to PersistTicksMax (up to
//     8 network delays) on a slow disk (at least half of it) and up to a quarter of it on a
//     fast one, drawn per replica; reads and unsynced writes up to a quarter of it. The
//     queues complete independently, so a Ready's hard state may be durable before an earlier
//     Ready's entries, as in the server. A disk stall stops a replica's disk from completing
//     anything for up to 3 election timeouts.
//   - Crashes (up to 3% per replica per tick) lose everything volatile: core, its driver, the
//     state machine, the transfer's temporary file. Half the time the operations in flight
//     leave nothing; else a prefix of the entry writes (torn at a record boundary), a prefix
//     of the hard-state saves (the latest of them on disk), and a finish in flight may have
//     made its verified file durable. A crashed replica restarts from its disk alone, as
//     pipeline.Start does (the newest snapshot file, a received one not yet installed
//     included, then the WAL and the hard state), after up to DownTicksMax ticks or
//     (QuickRestartPercent) within 1-2 ticks.
//   - Pauses: a paused replica neither ticks, steps nor completes disk operations, then
//     resumes with stale state; messages to it wait.
//   - Clocks: each replica ticks at its own rate ([100-skew, 100+skew]% of the world's, skew
//     up to 40%) with per-tick jitter; replicas never tick in lockstep.
//   - Unprompted campaigns (up to 2% per replica per tick: duels) and compactions (a snapshot
//     file, the log below it truncated).
//   - The driver's policy: up to PersistsInflightMax Readies in flight (1-8, drawn per
//     replica below it), commit-only hard states saved at most every CommitSaveTicks (0-10),
//     so the commit point on disk lags.
//   - Snapshot transfers, run by the driver between snapshot files held as bytes (applied
//     values, sessions table, offsets, a CRC-32C trailer): chunks of ChunkBytes (128-4096) in
//     windows of ChunkWindow (1-4), retried after SnapshotRetryTicks, given up after
//     SnapshotRetryLimit (0-4) silent intervals. Chunks are lost, duplicated and held up like
//     every message but keep their order per link (netio's peer links do); writes fail (maybe
//     short) or flip a bit, finishes fail; verification must reject every damaged file. A
//     replica crashes during an install (InstallCrashPercent, having truncated part of its log)
//     or between a finish and its install (FinishCrashPercent), and restarts from the file.
//   - Election timeouts are drawn to fit a round trip plus the slowest persist.
//
// After FaultTicks every fault stops (partitions heal, crashed replicas restart, pauses and
// stalls end, nothing is lost or held any more, snapshot files no longer fail) and within
// QuietTicks (30 election timeouts plus the long-delay tail), plus the time two transfers of
// the largest snapshot file take at the drawn chunk size and window (a round trip per window:
// with one 128-byte chunk per window, a snapshot of tens of KiB takes far longer than 30
// election timeouts), every pending command must be chosen and every replica must have
// applied the whole chosen log (liveness).
//
// # What runs
//
// Each replica is a core.Replica driven by a core/driver.Driver, the Ready handling the
// server's step loop runs: persist order, the hard-state throttle, applying Chosen before the
// own fsync, snapshot transfer and install. The simulator implements driver.Effects
// (effects.go) with its network, disks and state machines; it has no Ready handling of its
// own. Each world tick: every running replica's clock moves (Driver.Tick); due messages are
// decoded and stepped through the driver in random order (a replica that does not own its
// messages, StepValuesOwned off, gets them scribbled over after Step); clients submit and
// retry; then each replica's due disk operations complete in random order across its queues,
// each reported to the driver and followed by Drive, and a last Drive takes what the tick's
// inputs made ready. A crash decided inside an effect (an install) turns the rest of that
// driver call into no-ops and is carried out when it returns. Every message is encoded with
// the sender's codec.Encoder (S2 on for some replicas, with a small threshold) and decoded
// with codec.Decoder or codec.DecodeMessage.
//
// Clients are (client id, seq, seq floor) as in codec.Command: at most ClientInflightMax seqs
// from the floor (the lowest unanswered seq), batched up to 4 commands per slot value,
// retried unanswered with the same seq to whichever replica leads. Each replica's state
// machine applies chosen batches through core.Sessions as the pipeline's apply stage does;
// snapshot files carry the sessions table.
//
// # Invariants
//
// core/check sees every message sent, every entry that reaches a disk, every restart, every
// value handed out as chosen and who leads each tick, over every replica and every life:
//   - one value per (slot, ballot);
//   - once a majority durably accepted a value in a ballot, every durable acceptance at that
//     slot in a higher ballot carries it;
//   - one chosen value per slot, and a value handed out as chosen is durable on a majority
//     with that value;
//   - a ballot a replica led (or sent Accepts in) in one life is never used by it again.
//
// The simulator's own checks:
//   - durable before send: a message that vouches (a Promise, an Accepted, an acknowledging
//     HeartbeatReply) vouches only for what the disk holds when it leaves, whether the driver
//     sent it with Messages or MessagesAfterPersist: its ballot in the hard state (entries
//     accepted in it do not count, a snapshot covering them removes them), its slot in the log;
//   - promised never goes down, within a life and across restarts (a restarted replica
//     promises at least what it ever vouched for);
//   - apply in slot order without gaps; every replica's applied log is a prefix of the one
//     chosen log (snapshots included); only values clients proposed (or no-ops) are chosen;
//   - a snapshot file restarted from or installed is intact (its own checksum, its slot) and
//     agrees with the chosen log; the install names a durable file;
//   - exactly once: a command is applied at most once per replica, a duplicate is answered
//     with the position (slot, index, offset) of that one application, the answers agree
//     across replicas, and no command a client still waits for is abandoned;
//   - the codec round-trips every message: decoded and encoded again it is the frame the
//     sender's message made;
//   - core's and the driver's own panics (and core's -tags invariants assertions); the
//     driver's bound on snapshot operations in flight;
//   - liveness after the faults stop, as above.
//
// Planted faults (Options.Plant, LyingDisk) break the simulator's own disks, network or state
// machine, never core or core/driver (tests/planted plants bugs there through go -overlay), to
// show each check catches what it is for (teeth_test.go): a disk that reports a write durable
// before it holds it stands in for a driver that acks or advances too early. Scenario tests
// (scenario_test.go) check liveness under one fault held for long: a one-way cut of the
// leader, a follower rejoining after a long isolation, a stalled disk.
//
//	go test ./core/sim                                   # 1000 seeds each of 3 and 5 replicas
//	go test ./core/sim -run TestSimLong -seeds 20000     # make sim-long SEEDS=20000
//	go test ./core/sim -run '^TestSim$' -seed 17 -replicas 5   # replay one seed
//	go test ./core/sim -run '^TestSim$' -seed 17 -replicas 5 -set "CrashPerMille=0"  # pin part of its mix
//	go test ./core/sim -run '^TestSim$' -seeds 5000 -all  # count failures by invariant
package sim
