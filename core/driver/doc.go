// Package driver is the Ready-handling policy of a replica, shared by the pipeline (the server)
// and the simulator (core/sim), so that what the simulator proves is what runs. It is pure and
// deterministic like core: no goroutines, no clock (time is Tick calls), no I/O (every effect
// goes through the Effects interface its caller implements, and every completion comes back as
// a method call). The same inputs give the same effects in the same order.
//
// # Driving
//
// The caller owns a core.Replica and a Driver on one goroutine. Peer messages go through
// Driver.Step and logical time through Driver.Tick (which ticks core); Propose, Campaign,
// Compact and Status go to the Replica directly. After every input, and after every
// completion, the caller calls Drive.
//
// Drive takes Readies from core while fewer than Config.PersistInflightMax persists are in
// flight. For each Ready, in this order:
//
//  1. Messages are sent at once (Effects.Send): they vouch for nothing not yet durable.
//  2. Chosen is applied at once (Effects.Apply) if the Ready installs no snapshot and no
//     earlier Ready's Chosen still waits: chosen values are durable on a majority already, so
//     the answers need not wait for this replica's own fsync. Otherwise it waits (step 6).
//  3. The hard state is saved (Effects.SaveHardState) if core asks and the policy allows: a
//     new promise always; a change of the commit point alone at most once per
//     Config.CommitSaveTicks ticks (the commit point is learned again after a restart).
//  4. The entries are persisted (Effects.PersistEntries), behind every earlier Ready's.
//
// Each persist part is reported back with Persisted(seq, part). A Ready is finished once all
// its parts are durable and every earlier Ready is finished — strictly in the order core
// handed them out:
//
//  5. MessagesAfterPersist are sent (Promises, Accepteds: they vouch for the persist);
//  6. the snapshot is installed if the Ready carries SnapshotSlot (Effects.InstallSnapshot),
//     then Chosen is applied if step 2 did not;
//  7. core.Advance.
//
// A Ready with nothing to persist still waits its turn: it may vouch for what earlier Readies
// write. The effects must make entries durable in the order asked (a FIFO of writes; a crash
// may lose any suffix, possibly torn) and hard states in the order asked (the latest
// supersedes); a hard state may become durable ahead of earlier entries (the promise only
// rises, and the commit point covers only entries durable when core made the Ready). A
// throttled commit-only save is simply not made: core counts the Ready's promise as durable at
// Advance, which holds because that promise was saved by this or an earlier Ready.
//
// # Snapshot transfer
//
// SnapshotChunk messages never reach core; the driver runs the transfer:
//
//   - A CatchUpReply whose Count names a snapshot core has not reached (core.SnapshotWanted
//     above its commit point) starts a transfer from its sender, unless one is under way or a
//     received snapshot still waits to be installed.
//   - Request: a SnapshotChunk with no Data and Offset == Total == the byte offset to resume
//     from; Slot names the snapshot (0: the sender's newest). The sender reads up to
//     ChunkWindow chunks of ChunkBytes (Effects.ReadSnapshot, one read in flight per peer, at
//     most ServesMax peers) and sends each as a chunk: Slot, Offset, Total, Checksum (CRC-32C
//     of the whole file), Data.
//   - The receiver accepts only the next chunk in order from its sender, of the same snapshot,
//     with fewer than ChunkWindow writes in flight, and writes it (Effects.WriteSnapshot). Once
//     a window is written it asks for the next; a retry interval (RetryTicks) without a chunk
//     asks again from the bytes received; RetryLimit silent intervals in a row abandon the
//     transfer (ErrTransferSilent). The retry timer stops while writes are in flight: then the
//     disk is behind, not the sender.
//   - Once every byte is written, Effects.FinishSnapshot verifies the file (size, checksum, its
//     own format) and makes it durable under its final name. Only after it succeeds is core
//     handed the final chunk (no Data, Offset == Total); core jumps its commit point and asks
//     for the install in a later Ready (step 6). A crash at any point leaves either no
//     snapshot or a durable one the replica restarts from.
//   - A failed write or finish abandons the transfer (ErrTransferWrite, ErrTransferFinish: a
//     partial or damaged file). An abandoned transfer ends once none of its operations is in
//     flight, with Effects.DiscardSnapshot; the next hint starts over with the newest snapshot.
//
// # Bounds
//
// At most PersistInflightMax Readies are in flight, and so at most that many PersistEntries
// and SaveHardState calls await Persisted. At most Config.SnapshotOperationsMax snapshot
// operations (reads, writes, finishes) await completion, and at most one DiscardSnapshot
// follows them; a caller that queues effects to goroutines sizes its queues with these and
// never blocks.
//
// # Faults the simulator injects through the effects
//
// Persist completions late, in any order across parts (entries and hard state of one Ready
// are independent), or never (a crash between parts: the caller drops the Driver and the
// Replica, and starts both again from its disk); messages lost, duplicated or reordered,
// including chunks (a partial transfer: retries, then give-up); a failed or short write, a
// file that fails verification (a failed transfer); a crash inside InstallSnapshot (the file
// is durable: the replica restarts from it).
//
// # Assertions
//
// Always on, with the replica's id in the message: a persist reported that is not in flight or
// twice; a Ready installing a snapshot other than the one handed to core; a snapshot
// completion for an operation not in flight; the snapshot operations above their bound.
package driver
