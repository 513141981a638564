// Package batching turns a stream of client commands into slot values: encoded batches
// (codec.BatchBuilder) that the leader proposes, one batch per Paxos slot.
//
// # When a batch closes
//
// A Batcher keeps one open batch that Add appends to, and a FIFO of closed batches waiting
// for a slot. A batch closes when
//
//   - the Phase-2 window has a free slot and the proposer asks for work (Next): whatever is
//     open goes out at once. Under light load batches are small and latency is one round
//     trip; under heavy load the window is full, commands pile up, and batches grow by
//     themselves ("natural batching");
//   - it reaches Config.BatchBytesMax or Config.BatchCommandsMax;
//   - optionally (Config.Linger > 0; off by default) it has been open for Config.Linger while
//     the window stays full (CloseExpired), bounding a batch's age during a long stall.
//
// # Bounds and backpressure
//
// The commands and bytes held by the Batcher (open plus closed batches not yet handed out)
// are bounded by Config.PendingCommandsMax and Config.PendingBytesMax. When a limit is
// reached, Add takes nothing more and reports ErrFull: the caller stops reading the client
// connection until Next frees room (backpressure, not growth).
//
// # Allocation
//
// Commands are appended straight into the buffer of a pooled batch; nothing is allocated
// per command. Batches come from a free list of at most Config.BatchesPooledMax; Release
// returns one. Handing a batch to someone who keeps its bytes (core.Propose retains the
// value) requires a copy first, or simply not releasing it.
//
// A Batcher is safe for concurrent use: ingest goroutines call Add while the proposer calls
// Next, CloseExpired and Release.
package batching
