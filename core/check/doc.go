// Package check is the invariant checker shared by the simulator (core/sim) and the explorer
// (core/explore). It watches what replicas do across all their lives — every message sent,
// every entry that reaches a disk, every restart, every value handed out as chosen, who leads —
// and returns a *Violation naming the first safety invariant broken. It is pure and
// deterministic: no goroutines, no clock, no randomness; the same calls give the same answer.
//
// Replica ids are 1..n. The caller reports facts as they happen:
//
//	Restart(id)        replica id starts a new life: its volatile state is gone, its disk stays
//	Sent(id, m)        id sent m (Messages and MessagesAfterPersist alike)
//	Durable(id, e)     e reached id's disk (an acceptance unless e.Ballot == core.ChosenBallot)
//	Compacted(id, s)   id's disk dropped every entry below s (a snapshot covers them)
//	Chosen(id, e)      id handed out e as chosen (core Ready.Chosen)
//	Led(id, b)         id leads in ballot b now (Status().IsLeader)
//
// # Invariants
//
// InvariantOneValuePerBallot — at most one value per (slot, ballot), over every Accept sent,
// every accepted entry a Promise reports, and every durable acceptance, on every replica and
// in every life.
//
// InvariantMajorityKept — once a value is durably accepted by a majority of distinct acceptors
// in ballot b at a slot, every durable acceptance at that slot in a ballot above b carries the
// same value. Checked both ways: a later acceptance above a majority, and a majority forming
// below an earlier acceptance in a higher ballot that carries another value.
//
// InvariantChosenAgree — every value handed out as chosen at a slot, by any replica, is the
// same; a durable entry marked core.ChosenBallot agrees with it too.
//
// InvariantChosenDurable — a value handed out as chosen is durable on a majority with that
// value: disks whose latest entry at the slot (the WAL's latest-record-wins rule) has an equal
// value, or whose snapshot covers the slot, count; an entry with another value does not.
//
// InvariantBallotOneLife — a ballot a replica led in one life (Led, or an Accept sent in it)
// is never used by it again in a later life: a Prepare or Accept in it, or leading it again,
// is a violation. A ballot reused after a crash lets a new life propose a second value in a
// ballot where acceptors already hold the first (issue 14).
//
// Memory grows with what a run produces: per slot every (ballot, value) seen and a bitmask of
// its acceptors, per replica the latest durable entry per slot and the ballots it led. That is
// fine for simulator and explorer runs of a few thousand ticks; it is not meant for a
// long-running server.
package check
