// Package perf captures pprof profiles from running replicas while a benchmark measures
// them, so a profile shows the system under the load the numbers describe.
//
// Capture asks every replica's admin address (which serves net/http/pprof under
// /debug/pprof/) for the chosen kinds at once, starting when it is called — mpaxos-bench calls
// it when the warm-up ends:
//
//   - cpu:       /debug/pprof/profile?seconds=S, S = the measured window in whole seconds
//   - mutex:     /debug/pprof/mutex?seconds=S, a delta profile over the window
//   - block:     /debug/pprof/block?seconds=S, a delta profile over the window
//   - heap:      /debug/pprof/heap, a snapshot half-way through the window
//   - goroutine: /debug/pprof/goroutine, a snapshot half-way through the window
//
// (mutex and block are empty unless the replica enabled their sampling.) Each profile is
// saved as DIR/replica-<id>-<kind>.pb.gz, written to a temporary name and renamed, so a file
// with that name is always a whole profile. One failed fetch does not stop the others; every
// Profile carries its own error. Commands lists the `go tool pprof` invocations that open them.
package perf
