// Package explore is an exhaustive, bounded explorer of core: it runs the real core.Replica
// of every replica of a small cluster and tries every interleaving of events within the
// bounds, checking the safety invariants of package check after every one. Where the
// simulator (core/sim) samples long runs, the explorer proves short ones: no sequence of at
// most DepthMax events within the budgets breaks an invariant, or it prints the shortest
// sequence that does.
//
// # What is enumerated
//
// A world is every replica's whole core state, each replica's disk (hard state and the latest
// durable entry per slot), each replica's FIFO of pending writes (Readies handed out, not yet
// durable), the network (the set of messages in flight, as codec frames) and the budgets left.
// From a world, every enabled event is tried:
//
//	Deliver   one message in flight reaches its replica (core.Replica.Step) and leaves the set
//	Drop      one message in flight is lost (only with AllEvents; see below)
//	Persist   a replica's oldest pending write becomes durable: its hard state and entries reach
//	          the disk, then its MessagesAfterPersist are sent, its Chosen applied, and Advance
//	          called, as the driver contract in core/api.go says (writes complete in FIFO order)
//	Crash     a replica crashes and restarts from its disk alone (core.New): it keeps any prefix
//	          of its pending writes' entries, and, independently (the hard state is a file of
//	          its own), either the disk's hard state or that of any pending Ready; the rest and
//	          its volatile state are lost. Its messages in flight stay in flight.
//	Campaign  a replica starts phase 1 (core.Replica.Campaign), whatever its role
//	Propose   a leader proposes the next client value ("v1", "v2", ...)
//	Tick      a replica's clock advances (election timeouts and pre-votes, heartbeats,
//	          retransmits, check-quorum, the disk-stall watch)
//
// After each event the touched replica's Readies are taken as the drivers take them: Messages
// go into the network at once, the write joins the FIFO; a Ready with nothing to write
// completes as soon as it is at the head of the FIFO. Crash and restart are one event: a
// replica that stays down is no different from one that is up and is given nothing to do.
//
// Drops are left out by default (DefaultEvents): the network is a set, and a message may stay
// in it forever, so a world that dropped a message can do nothing its twin that kept the
// message cannot. Drops add worlds but no reachable safety violation; AllEvents enumerates them.
//
// # Bounds
//
// Options: 3 replicas; at most DepthMax events on a path; ProposalsMax proposals (2),
// CrashesMax crashes (2) and CampaignsMax campaigns (2) over a whole path; TicksMax ticks per
// replica (2), with ElectionTicks 2, HeartbeatTicks 1 and RetransmitTicks 2 so that two ticks
// reach every timer; StatesMax and TimeMax stop a run early. core's randomness is always 0
// (every election timeout is exactly ElectionTicks), so a cloned replica behaves as its
// original.
//
// # Invariants
//
// Every fact is fed to a check.History: every message sent (Messages and
// MessagesAfterPersist), every entry that reaches a disk (at a Persist, or kept by a Crash),
// every restart, every value handed out as chosen (when the Ready carrying it is taken: core
// claims it chosen then, and a driver may apply it before its own persist), and every replica
// that leads after an event. So each path is checked for one value per (slot,
// ballot), a majority-accepted value kept by every higher ballot, one chosen value per slot,
// chosen only when durable on a majority with that value, and a ballot used in one life only
// (see package check). The explorer adds: core never panics (with -tags invariants its deep
// assertions run too), a replica accepts every message another sent, and a replica restarts
// from any disk a crash can leave.
//
// # Search
//
// Breadth-first, so the first violation found has a shortest trace. Worlds are deduplicated
// by a 128-bit hash of a canonical encoding: each replica's core.Replica.AppendFingerprint,
// its disk, its pending Readies (core.Ready.AppendFingerprint), its tick budget, the network
// set, the global budgets, and the checker's facts — which ballots each replica led in this
// life or an earlier one, every (slot, ballot, value) seen, its durable acceptors, and what
// was chosen — so two paths that reach one world with different histories stay apart. A
// world found is stored only as the event that first reached it (about 20 bytes, plus its
// hash); to expand a depth, the explorer walks the tree of first-found events from the
// initial world, recomputing each world from its parent (core.Replica.Clone, copy on write),
// and replays the path's facts into a fresh check.History for each new world.
//
// # Running
//
//	go test ./core/explore                       # make test: every path of 9 events (~25 s)
//	make explore-deep EXPLORE_DEPTH=11           # deeper: go test -run TestExploreDeep -depth 11
//	go test ./core/explore -run TestExploreDeep -v -timeout 0 -depth 10 -drops -ticks 3
//
// Options.PlantAdvanceBeforePersist and PlantRestartWithoutHardState plant driver and disk
// bugs for tests. With the fix of issue 14 reverted (core leading on peer promises before
// its own promise is durable), the bounded run finds the ballot reuse at depth 9.
package explore
