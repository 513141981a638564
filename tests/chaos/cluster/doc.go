// Package cluster runs a local mpaxos cluster of real `mpaxos serve` processes for fault tests.
//
// New allocates addresses (127.0.0.1, free ports found by binding port 0) and directories
// (data/N and logs/replica-N.log under Config.BaseDir); StartAll starts every replica and waits
// for each to print its ready line "mpaxos: replica N serving on ADDR". Faults act on one
// replica by id: Kill (SIGKILL), Pause/Resume (SIGSTOP/SIGCONT), Start again from the same
// data directory, Wipe its data, and damage its write-ahead log the two ways a disk can
// (walfault.go): TearWAL leaves a torn final batch, as a crash during a write does, which
// recovery must cut; CorruptWAL flips bytes inside a batch that a later batch vouches for,
// which recovery must refuse with an error naming the file and offset. With
// Config.FaultHooks every replica is started with --fault-disk-stall-file Node.DiskStallFile
// (wal.StallFS), and StallDisk / ReleaseDisk (diskstall.go) create and remove that file: the
// replica's WAL fsyncs wait while it exists, a stalled disk under a live process. A replica
// restarted while its disk is stalled waits in WAL recovery until the release.
//
// Every process is started with Pdeathsig=SIGKILL and is killed by PID in Close (tests call
// it from t.Cleanup), so no replica outlives its test. Waits are bounded by
// Config.ReadyTimeout; the output of every replica is kept in its log file (appended across
// restarts) and the last lines of it are quoted in errors.
//
// Peer traffic can be routed through a fault proxy: Config.PeerAddr(from, to) gives the
// address replica `from` dials to reach replica `to` (see tests/chaos/faultproxy). Replicas can
// be started inside network namespaces with Config.CommandPrefix (see tests/chaos/netns).
package cluster
