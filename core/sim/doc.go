// Package sim is the deterministic simulator of core: N replicas over a simulated network and
// simulated disks, every random choice drawn from one seed (math/rand/v2 PCG), so a failing
// seed replays exactly.
//
// Each tick every live replica is ticked; due messages are delivered in random order (each a
// fresh copy, scribbled over after Step, so core must copy what it keeps, unless the replica
// runs with StepValuesOwned, as the pipeline does); a message may be
// lost, duplicated, delayed and so reordered, or cut by a partition that later heals. Each
// replica's Ready is driven as the pipeline would: Messages leave at once, the persist takes
// [0, PersistTicksMax] ticks, and only then do MessagesAfterPersist leave, Chosen get applied
// and Advance run. A crash loses every persist not finished (a torn persist may keep a prefix
// of its entries and maybe the hard state); the replica restarts from its disk alone.
// Replicas also campaign unprompted (duels) and compact; a replica told to fetch a snapshot
// gets a peer's. Clients submit unique batches to whichever replica leads and retry.
//
// Checked after every step: one value per slot, ever, across all replicas; every replica's
// applied log is a prefix of the one chosen log (so nothing acknowledged is lost); only
// proposed values or no-ops are chosen; nothing that vouches (Promise, Accepted) leaves before
// the disk holds it; when a replica's commit point first passes a slot, a majority of disks
// hold it (a leader counting its own vote before its persist is caught at once, not only after
// an unlucky crash); a replica's promise never goes down, across restarts too. After the fault phase
// everything heals and every pending value must be chosen and applied everywhere within
// QuietTicks (liveness).
//
//	go test ./core/sim                                   # 1000 seeds each of 3 and 5 replicas
//	go test ./core/sim -run TestSimLong -seeds 20000     # make sim-long SEEDS=20000
//	go test ./core/sim -run '^TestSim$' -seed 17 -replicas 5   # replay one seed
package sim
