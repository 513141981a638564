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
//   - Disks: a persist takes up to PersistTicksMax (up to 8 network delays) on a slow disk
//     (at least half of it) and up to a quarter of it on a fast one, drawn per replica; up to
//     PersistsInflightMax Readies persist at once, completing in order. A disk stall stops a
//     replica's persists from completing for up to 3 election timeouts.
//   - Crashes (up to 3% per replica per tick) lose everything volatile; the persists in flight
//     leave some prefix of their entries (torn at a record boundary) and maybe the hard state
//     of some prefix of them. A crashed replica restarts from its disk alone after up to
//     DownTicksMax ticks, or (QuickRestartPercent) within 1-2 ticks.
//   - Pauses: a paused replica neither ticks, steps nor persists, then resumes with stale
//     state; messages to it wait.
//   - Clocks: each replica ticks at its own rate ([100-skew, 100+skew]% of the world's, skew
//     up to 40%) with per-tick jitter; replicas never tick in lockstep.
//   - Unprompted campaigns (up to 2% per replica per tick: duels), compactions, snapshot
//     transfers to lagging replicas.
//   - Election timeouts are drawn to fit a round trip plus the slowest persist.
//
// After FaultTicks every fault stops (partitions heal, crashed replicas restart, pauses and
// stalls end, nothing is lost or held any more) and within QuietTicks (30 election timeouts
// plus the long-delay tail) every pending command must be chosen and every replica must have
// applied the whole chosen log (liveness).
//
// # What runs
//
// Each world tick: every running replica's clock moves; due messages are decoded and stepped
// in random order (a replica that does not own its messages, StepValuesOwned off, gets them
// scribbled over after Step); clients submit and retry; each replica's Ready cycle moves on
// (driver.go: Messages leave at once, the persist takes its ticks, then MessagesAfterPersist
// leave, Chosen is applied, possibly before the own persist as the pipeline does, and the
// Ready is advanced). Every message is encoded with the sender's codec.Encoder (S2 on for some
// replicas, with a small threshold) and decoded with codec.Decoder or codec.DecodeMessage.
//
// Clients are (client id, seq, seq floor) as in codec.Command: at most ClientInflightMax seqs
// from the floor (the lowest unanswered seq), batched up to 4 commands per slot value,
// retried unanswered with the same seq to whichever replica leads. Each replica's state
// machine applies chosen batches through core.Sessions as the pipeline's apply stage does;
// snapshots carry the sessions table.
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
//   - durable before send: Messages vouch for nothing (no Promise, Accepted or acknowledging
//     HeartbeatReply); MessagesAfterPersist vouch only for what the disk holds;
//   - when any commit point first passes a slot, a majority of disks hold it;
//   - promised never goes down, within a life and across restarts (a restarted replica
//     promises at least what it ever vouched for);
//   - apply in slot order without gaps; every replica's applied log is a prefix of the one
//     chosen log (snapshots included); only values clients proposed (or no-ops) are chosen;
//   - exactly once: a command is applied at most once per replica, a duplicate is answered
//     with the position (slot, index, offset) of that one application, the answers agree
//     across replicas, and no command a client still waits for is abandoned;
//   - the codec round-trips every message: decoded and encoded again it is the frame the
//     sender's message made;
//   - core's own panics (and its -tags invariants assertions);
//   - liveness after the faults stop, as above.
//
// Planted faults (Options.Plant, LyingDisk) break the simulator's own driver, disk or state
// machine, never core, to show each check catches what it is for (teeth_test.go). Scenario
// tests (scenario_test.go) check liveness under one fault held for long: a one-way cut of the
// leader, a follower rejoining after a long isolation, a stalled disk.
//
//	go test ./core/sim                                   # 1000 seeds each of 3 and 5 replicas
//	go test ./core/sim -run TestSimLong -seeds 20000     # make sim-long SEEDS=20000
//	go test ./core/sim -run '^TestSim$' -seed 17 -replicas 5   # replay one seed
//	go test ./core/sim -run '^TestSim$' -seed 17 -replicas 5 -set "CrashPerMille=0"  # pin part of its mix
//	go test ./core/sim -run '^TestSim$' -seeds 5000 -all  # count failures by invariant
package sim
