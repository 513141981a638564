// Package core is every Paxos rule of mpaxos — proposer, acceptor and learner of one replica —
// as a deterministic state machine: no goroutines, no clock, no randomness of its own
// (Config.Rand), no I/O. The same inputs give the same outputs, so the simulator in core/sim
// replays any run from its seed.
//
// # Driving a replica
//
// Inputs: Step (a peer message), Tick (one unit of logical time), Propose (leader only),
// Campaign. Output: Ready, handled in this order, then Advance:
//
//  1. persist HardState (if MustSaveHardState) and Entries, fsync if MustSync;
//  2. send Messages at once (they vouch for nothing: Prepare, Accept, Nack, Heartbeat, ...);
//  3. once step 1 is durable, send MessagesAfterPersist (every Promise, Accepted and
//     HeartbeatReply: each vouches for a promise or acceptance);
//  4. install SnapshotSlot if set, then apply Chosen (contiguous, in slot order);
//  5. Advance(rd). Step/Tick/Propose may be called between Ready and Advance.
//
// Persistence may be asynchronous: the driver may take the next Ready before advancing the
// previous ones, provided their persists complete in order (a FIFO of writes, which the WAL
// group-commits), each Ready's MessagesAfterPersist leave only once its persist is durable, and
// the Readies are advanced in the order they were handed out. A leader then keeps sending
// Accepts for new proposals while its earlier entries sync, and a follower keeps accepting
// while its previous batch syncs.
//
// The leader's Accepts leave in step 2, in parallel with its own fsync; its own vote for a
// slot counts only after the Advance of the Ready that persisted it. Persisted entries for one
// slot supersede earlier ones in append order (the WAL's Key rule).
//
// # Protocol
//
// Ballot = (round, replica id). Acceptor: Prepare(b, from) with b above the promise is
// promised durably and answered with every accepted entry at or above from; otherwise Nack
// carrying the promise (and our commit point as a catch-up hint). Accept(b, slot, values) with b
// at or above the promise is stored durably and acknowledged cumulatively (Accepted.Slot = the
// highest S such that every slot from the leader's commit point through S was accepted in b);
// otherwise Nack. A replica never forgets a promise or an acceptance: New takes the promised
// ballot as the highest of the saved one and every persisted accepted ballot.
//
// Leader: one phase 1 covers every slot from its commit point. From a majority of promises it
// proposes again, per slot, the value with the highest reported ballot, and a no-op (empty
// value) in gaps, then runs phase 2 with at most Config.Window slots and InflightBytesMax bytes
// outstanding. It steps down when any message shows a higher ballot.
//
// Learner: a slot is chosen when a majority accepted it in one ballot. The leader's commit
// point rides on Accepts and Heartbeats; a follower marks a slot below it chosen only if its
// own entry there was accepted in the leader's ballot, and otherwise fetches chosen values
// with CatchUpRequest (served from memory, then Storage). Values learned that way are stored
// with ChosenBallot, which outranks every ballot in a Promise and never counts as a vote. The
// persisted commit point lags one Ready, so every slot below it is durable on this replica.
// An acceptor refuses a Prepare from below its in-memory log (it could not report those
// slots); the candidate catches up first.
//
// A ballot is used at most once, ever: a candidate leads only once its own promise of its
// ballot is durable, even when the peers' promises alone are a majority. Otherwise a crash
// before that promise reached the disk would let it campaign in the same ballot in its next
// life and propose a second value where an acceptor already holds the first one in that
// ballot (issue 14; testdata/ballot_reuse_after_crash.txt).
//
// Liveness: a leader heartbeats every HeartbeatTicks; a follower that hears no leader for a
// random timeout in [ElectionTicks, 2*ElectionTicks) first asks for pre-votes (PreVote: no
// ballot is raised; a peer grants unless it leads or heard a leader within ElectionTicks) and
// campaigns only with a majority of grants, so a replica that was cut off cannot depose a
// healthy leader when it returns; a preempted proposer steps down and waits a fresh random
// timeout, which ends duels. A leader that heard no Accepted or HeartbeatReply from a majority
// within a round of ElectionTicks steps down (check-quorum: a one-way partition does not stall
// the cluster), and so does a leader whose oldest outstanding Ready has not been advanced for
// ElectionTicks (its disk stalled); a replica with a stalled disk does not campaign on its own
// timer. Unacknowledged Accepts and Prepares are retransmitted after RetransmitTicks; a lost
// Accepted is recovered by the next HeartbeatReply (a cumulative ack when its Ballot is set).
// Ballots from the wire above round 2^63-1 are refused, so ballot arithmetic never wraps.
//
// # Testing
//
// Transcripts in testdata/*.txt script multi-step scenarios (go test -run TestTranscripts
// -rewrite regenerates them). Building with -tags invariants turns on the expensive
// assertions of invariants.go after every input; make test runs core and the simulator so.
//
// # Snapshots (minimal)
//
// Compact(slot) records that the application snapshotted every slot < slot and drops memory
// below it. A catch-up request below that point is answered with Count = snapshot slot; the
// asking replica exposes it in SnapshotWanted. The driver transfers the snapshot (core holds no
// snapshot bytes), then feeds core the final SnapshotChunk (Offset+len(Data) == Total); core
// jumps its commit point and hands Ready.SnapshotSlot to the driver to install.
//
// # Exactly-once
//
// Sessions is the exactly-once table the apply stage keeps in its replicated state (and
// snapshots). Every command carries (client id, seq, seq floor), the floor being the client's
// lowest outstanding seq: every seq below it was answered and will never be retried. Per
// client the table keeps the floor and the applied seqs at or above it with their positions,
// so a retry is answered with its original position, a lower seq lost while higher ones were
// chosen is still applied when it comes back, and a seq below the floor is abandoned, never
// applied. Deterministic and bounded: at most SessionSeqsMax seqs above a client's floor, and
// at most clientsMax clients, evicting the one whose last command is oldest.
package core
