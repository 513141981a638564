// Package rtt measures mpaxos throughput over an emulated network with a round-trip time
// between every two machines, as a WAN or cross-zone deployment would see (issue 9).
//
// TestThroughputAtRTT runs only with MPAXOS_RTT=1 (`make bench-rtt`). It builds cmd/mpaxos and
// cmd/mpaxos-bench, creates four network namespaces joined by the userspace emulator of
// tests/chaos/netns (netns.CreateEmulated; no kernel netem needed), runs `mpaxos serve`
// (fsync on) in hosts 1..3 and `mpaxos-bench --endpoints` (closed loop, 16 B commands) in
// host 4, and shapes every host's egress with a delay of RTT/2, so any two hosts — the client
// and the leader, the leader and each follower — are RTT apart. It prints a markdown table:
// RTT, load, window, cmds/s, the closed loop's bound (in flight / 2 RTT: a command waits a
// round trip to the leader and one from the leader to a follower quorum), p50, p99, MB/s,
// errors, and what the emulator dropped (full queues: a shaping artefact).
//
// Everything runs on this machine: three replicas, the load generator and the emulator (in the
// test process) share its cores, so at RTT 0 the figures are lower than loopback ones in
// docs/BENCHMARKS.md. Environment knobs: MPAXOS_RTT_DURATION (measured window per point,
// default 10s), MPAXOS_RTT_WARMUP (default 2s).
package rtt
