// Package bench is the load generator behind mpaxos-bench: it drives any system that can
// append a payload asynchronously, measures every request's latency into HdrHistograms, and
// reports throughput and percentiles as a table, one JSON line, an .hgrm percentile file or a
// self-contained HTML page. It can also start a local cluster of real `mpaxos serve`
// processes and tear it down again, whatever happens to the run.
//
// # What is measured
//
// A run is Warmup followed by Duration. A request counts when its intended send time falls
// inside the measured window [start+Warmup, start+Warmup+Duration); its latency is the time
// from that intended send time to the moment its completion callback runs, recorded in
// microseconds. Throughput is successes counted that way divided by Duration.
//
//   - Closed loop (Rate == 0): Clients targets, each with at most Inflight requests
//     outstanding; a new request is sent the moment an old one completes, so the intended
//     send time is the actual one.
//   - Open loop (Rate > 0): requests are scheduled at a fixed total rate, spread evenly over
//     the clients. The intended send time is the schedule, not the moment the request really
//     left: when the target stalls, the requests that should have been sent during the stall
//     carry the stall in their latency. This is what avoids coordinated omission (a stalled
//     system otherwise looks fast because the load generator politely stopped asking).
//     Inflight still bounds each client's outstanding requests; waiting for a free slot is
//     latency too.
//
// Each client owns its histograms and counters behind its own mutex. The completion callback
// of a target normally runs on one reader goroutine per connection, so that mutex is
// uncontended; nothing is shared between clients per request. Per-second progress merges the
// clients' interval histograms.
//
// # The system under test
//
// The engine sees only Target and Dialer, so it is tested against fakes; cmd/mpaxos-bench
// adapts client.Client to Target.
//
// # Local clusters
//
// StartCluster runs N `mpaxos serve` children on 127.0.0.1 with free ports, a fresh data
// directory per replica under one temporary directory, a random shared secret (handed over in
// the MPAXOS_SECRET environment variable, so it never shows in ps) and fsync as configured.
// Stop sends SIGTERM, then SIGKILL by PID after a grace period; on Linux the children also
// receive SIGKILL if this process dies without running Stop (PR_SET_PDEATHSIG).
package bench
