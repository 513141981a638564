// Package chaos runs real `mpaxos serve` processes under faults and checks what clients saw.
//
// Each test starts a local cluster (tests/chaos/cluster) whose peer traffic passes through a
// fault proxy per ordered pair of replicas (tests/chaos/faultproxy), drives it with a workload,
// injects faults, heals, and then checks the end state. The workload: pinned clients (one
// endpoint) and roaming clients (every endpoint), several lanes each, appending unique values
// and reading — ReadLatest (the log's length and last value) and ReadAt (the value at a dense
// offset, mostly near the tail, some past it) — with one reader-only lane per client, plus
// redial lanes that replace their client (random endpoint order) after any unanswered
// operation and every 20, so during a partition some work reaches each side. Every operation
// is recorded with call and return times; unanswered appends are indeterminate, unanswered
// reads are left out. The end-of-run checks:
//
//   - a final append succeeds;
//   - every replica converges to the same applied log (/debug/applied slot and digest);
//   - read offline after the replicas stop (tests/chaos/replicalog), every replica holds the
//     same log, whose digest matches what the replica reported live;
//   - every acknowledged append is in that log exactly once, at the position it was
//     acknowledged with, and the history (appends and reads) is linearizable for the
//     append-only log model (tests/chaos/history, porcupine); failures save porcupine's HTML visualisation, the
//     history and the replicas' output under tests/chaos/artifacts/;
//   - no replica exited that the test did not kill.
//
// The default run (make test) has one real-process test, TestChaosSmoke: a healthy cluster
// through the proxies, every end-of-run check, a few seconds once the binary is built. The
// fault tests take 5-20 s each, so they run only with -chaos (or MPAXOS_CHAOS=1); without it
// they skip, saying so. TestChaosLong runs rounds of random faults on fresh clusters for
// -duration (make chaos-long DURATION=1h) and writes its summary to
// tests/chaos/artifacts/chaos-long-*/summary.txt (go test shows a passing test's log only
// with -v). Other flags: -seed N, -race-server (build the server with -race), -mpaxos-bin
// PATH (use a prebuilt binary).
//
// Faults (faults_test.go): kill -9 of a follower, of the leader, of a majority, then restart;
// SIGSTOP of the leader past the election timeout, then SIGCONT; through the proxies: the
// leader isolated from its peers (refused or black-holed), a minority partition holding the
// leader, asymmetric links (the leader cannot send, or cannot hear), loss (connections reset
// at random) with delay, a 50 ms peer round trip; a torn WAL tail, which the replica must cut
// and start; a corrupt WAL batch, which it must refuse naming the file, then wiped and
// rejoined; hostile clients (random bytes, 4 GiB length fields before and after the
// handshake, truncated frames, idle connections).
//
// Liveness faults (liveness_test.go) must be survived while they last, not only after they
// heal. Each holds its fault for 12 election timeouts (3.6 s at the server's default of 300
// ms) and fails unless, with the fault still in place, another replica led, the faulted leader
// stopped claiming leadership (polled on /debug/status every 50 ms), and at least 20 appends
// issued in the fault's second half were acknowledged before it was lifted; the end-of-run
// checks follow. one-way-partition-leader (TestChaosOneWayPartitionLeader) cuts every
// follower's messages to the leader, refused or black-holed, and leaves the leader's to them:
// the followers keep hearing heartbeats, so only check-quorum (the leader steps down) and
// pre-vote bring a new leader. asymmetric-leader is not that test: it holds its cut for less
// and checks progress only after healing. stall-leader-disk (TestChaosStallLeaderDisk) stops
// the leader's WAL fsyncs through the WAL's fault hook (wal.StallFS; the harness starts every
// replica with --fault-disk-stall-file, cluster.StallDisk creates the control file), so the
// leader must step down for another to be elected; released, it catches up, and every
// acknowledged append must be in the log. Only the second half of the hold counts because a
// leader whose disk stalls goes on committing for a few milliseconds with its followers' votes
// (it answers before its own fsync). Both faults are in the random schedules too. With replicas in network namespaces
// (tests/chaos/netns): a replica's link taken down, and delay with jitter, loss and
// reordering of real packets — tc netem on veth where the kernel has sch_netem, else the
// package's userspace packet emulator (TUN devices; the same four knobs), which the harness
// then uses for every namespace scenario. Every failure prints the seed and the command that
// replays its fault schedule (timing on real processes differs between
// runs; the schedule and the workload's choices do not):
//
//	go test ./tests/chaos -run '^TestChaosKillLeader$' -chaos -seed 12345 -v
package chaos
