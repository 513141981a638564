// Package pipeline is the replica runtime: it wires core (the protocol), batching, the WAL
// and netio into stages joined by bounded queues.
//
//	netio event loops ──HandleRequests──▶ batcher ─┐            (ingest: copies commands into
//	        │                                      │             pooled batches; backpressure
//	        └──HandlePeer (copy)──▶ peer queue ──▶ step loop      pauses the connection)
//	                                               │  owns core.Replica and its core/driver:
//	                                               │  Step, Tick, Propose while the Phase-2
//	                                               │  window has room; the driver takes Readies
//	              netio.Send ◀── Messages ─────────┤
//	              WAL AppendAsync ◀── Entries (queued by the step loop; group commit)
//	              hard-state saver ◀── hard state (wal.SaveHardState)
//	              netio.Send ◀── MessagesAfterPersist, once durable
//	              apply goroutine ◀── Chosen (in slot order): exactly-once sessions, answers
//	                                    each waiting client with (slot, index)
//	              snapshot transfer goroutine ◀── snapshot file reads, writes, verify + fsync
//
// # Rules the stages keep
//
//   - One goroutine (the step loop) owns core.Replica and the core/driver.Driver that handles
//     its Readies: every rule below about order, the hard-state throttle, applying early and
//     snapshot transfer is the driver's (the simulator drives the same code); the step loop
//     implements its effects and reports completions back. Persistence is asynchronous: up to
//     Config.PersistInflightMax Readies are in flight at once, queued into the WAL (which
//     group-commits them and completes them in order), so the leader keeps proposing and
//     sending Accepts, and followers keep accepting, while earlier entries sync. Readies are
//     finished (and advanced in core) strictly in the order core handed them out.
//   - Messages leave before the persist (the leader's Accepts go out while its own WAL
//     syncs); MessagesAfterPersist (Promises, Accepteds) only after it, and every earlier
//     persist, is durable. The leader's own vote counts from that Advance, never earlier.
//   - Chosen entries go to the apply stage when the Ready is taken (they are durable on a
//     majority already), unless a snapshot install precedes them: then in order, after it.
//   - A WAL record is one Entry: Key = slot, payload = ballot + value; the latest record for a
//     slot supersedes earlier ones. The hard state (promise, commit point) is saved through
//     wal.SaveHardState: at once when the promise changes, at most every 50 ms for a
//     commit-point-only change (the commit point is re-learned after a restart).
//   - A leader that proposes gets its requests answered by the apply stage when the batch is
//     chosen. If it loses leadership, every request it holds is answered StatusUnavailable:
//     ambiguous, the client retries with the same (client id, seq) and exactly-once makes
//     that safe. Non-leaders answer requests with a Redirect naming the leader.
//   - Every queue is bounded by a Config field: peer messages (dropped when full, Paxos
//     retransmits), the batcher (pending commands and bytes), requests awaiting an answer,
//     Ready results awaiting apply, the chosen-value ring (bytes).
//
// # Restart
//
// Start loads the newest snapshot, if any (snapshot.go: exactly-once sessions, the offset
// counter, the application's state), opens the WAL, replays it into core.Persisted (latest
// record per slot; the promise from the hard state), starts core with SnapshotSlot = Applied
// = the snapshot's slot so only the chosen slots after it are applied again, and catches up
// with the leader. Without a snapshot that is every chosen slot from 0.
//
// # Catch-up storage
//
// core serves catch-up from the slots it retains (RetainSlots, RetainBytesMax); below them
// it asks Storage, which here is a two-tier in-memory cache of chosen values: a byte-bounded
// ring of the most recent ones (Config.CacheBytesMax) and a ristretto cache of older ones
// (Config.CacheColdBytesMax). Hits and misses are in /metrics (mpaxos_chosen_cache_*).
package pipeline
