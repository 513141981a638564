// Package client is the Go client of an mpaxos cluster.
//
// A Client holds one TCP connection at a time, to any replica; it follows Redirects to the
// leader (at most Config.RedirectsMax per request that name a new leader) and pipelines many
// requests on that connection: up to Config.InflightMax requests are outstanding, written in
// batches (many frames per write) by one writer goroutine, answered through one reader
// goroutine per connection that dispatches responses by sequence number.
//
// # Exactly once
//
// Every command carries (client id, seq). The seq is fixed when the command is first
// submitted and never changes: after a timeout of the connection, a lost connection, a
// leader change (StatusUnavailable, StatusShutdown, StatusNotLeader, Redirect) or
// StatusOverloaded the client resends it with the same pair, until it is answered or its
// deadline (the context's, or Config.RequestTimeout) passes. Every Request also carries a
// seq floor: the lowest seq still outstanding (the next seq when none is). The replicas
// remember, per client, every applied seq at or above the floor (RIFL; Raft thesis §6.3), so a
// resent command is applied at most once and its answer is the position where it was first
// applied — also when a lower seq was lost and is resent after higher ones were applied. A
// seq below the floor is one the client no longer waits for: it is never applied afterwards.
// The floor never lags the newest seq by InflightMax or more: submitting blocks until it
// rises (the replicas refuse larger gaps).
//
// The replicas remember a client while it is active. Their table holds a bounded number of
// clients (pipeline.Config.SessionsMax); when it is full, a new client's command is answered
// StatusOverloaded (and resent) rather than evict a client that may still retry. A client
// idle for SessionIdleSlotsMax slots (default 2^24, over two hours at the highest slot rate
// measured) may make room for a new one: a command resent after that long may apply twice.
// Calls time out long before (Config.RequestTimeout).
//
// # Outcomes
//
//   - nil error: the command was chosen at Result (Slot, Index), a total order, and took
//     Result.Offset, a dense one (0, 1, 2, ... with no gaps).
//   - ErrTimeout / context errors: AMBIGUOUS, the command may or may not have been applied;
//     retrying it through a new Append gives it a new seq and may apply it twice.
//   - ErrRejected (as *RejectedError): the cluster refused the command as it is
//     (StatusTooLarge, StatusInvalid, StatusAbandoned): it was not applied, do not retry it
//     unchanged.
//   - ErrRedirectsExhausted: replicas kept naming different leaders; the command may or may
//     not have been applied.
//   - ErrClosed: Close was called; outstanding commands may or may not have been applied.
package client
