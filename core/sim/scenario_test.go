package sim

import (
	"testing"

	"github.com/mpaxos/mpaxos/core/driver"
)

// Liveness under one fault held for long, on an otherwise quiet cluster (QuietOptions: no
// random faults, a steady load). These need check-quorum, pre-vote and the stalled-disk
// step-down in core (issue 14, "Liveness"); without them they fail.

// scenarioSeeds: each scenario runs on this many seeds of each cluster size.
const scenarioSeeds = 10

// scenarioBoundElectionTimeouts: progress must resume within this many election timeouts.
const scenarioBoundElectionTimeouts = 20

// forEachScenarioSeed runs f on a fresh quiet world per seed and cluster size (adjust, if set,
// changes its options first).
func forEachScenarioSeed(t *testing.T, adjust func(*Options), f func(t *testing.T, w *world)) {
	for _, replicas := range []int{3, 5} {
		for seed := uint64(1); seed <= scenarioSeeds; seed++ {
			opts := QuietOptions(seed, replicas)
			if adjust != nil {
				adjust(&opts)
			}
			w := newWorld(opts)
			if err := w.guard(func() { f(t, w) }); err != nil {
				t.Fatalf("seed %d, %d replicas: %v", seed, replicas, err)
			}
		}
	}
}

// run moves the world k ticks with client load on.
func (w *world) run(k int) {
	for end := w.now + k; w.now < end; w.now++ {
		w.tick(true)
	}
}

// settle runs until one replica has led in the same ballot for two election timeouts and
// returns it (0 if none within bound ticks).
func (w *world) settle(bound int) uint32 {
	stable, last := 0, uint32(0)
	for end := w.now + bound; w.now < end; w.now++ {
		w.tick(true)
		l := w.leaderOf()
		if l != 0 && l == last {
			stable++
		} else {
			stable = 0
		}
		last = l
		if stable >= 2*w.opts.ElectionTicks {
			return l
		}
	}
	return 0
}

// runUntilProgress runs up to bound ticks and returns how many it took until want more
// commands were answered, with a leader other than not (0 for any) in place; -1 if never.
func (w *world) runUntilProgress(bound, want int, not uint32) int {
	start, applied := w.now, w.res.Applied
	for end := w.now + bound; w.now < end; w.now++ {
		w.tick(true)
		if l := w.leaderOf(); w.res.Applied-applied >= want && l != 0 && l != not {
			return w.now - start
		}
	}
	return -1
}

// A leader whose followers cannot reach it (leader -> followers works, followers -> leader is
// cut) must not stall the cluster: it hears no majority and steps down (check-quorum), and the
// followers elect one of themselves while the cut is still in place.
func TestSimLeaderCutOneWayProgressResumes(t *testing.T) {
	worst := 0
	forEachScenarioSeed(t, nil, func(t *testing.T, w *world) {
		leader := w.settle(50 * w.opts.ElectionTicks)
		if leader == 0 {
			t.Fatalf("no stable leader: %v", w.statuses())
		}
		for _, n := range w.nodes {
			if n.id != leader {
				w.cut[n.id-1][leader-1] = true
			}
		}
		bound := scenarioBoundElectionTimeouts * w.opts.ElectionTicks
		took := w.runUntilProgress(bound, 5, leader)
		if took < 0 {
			t.Fatalf("seed %d, %d replicas: followers cut from leader %d: no progress under another leader within %d ticks (applied %d); status %v",
				w.opts.Seed, w.opts.Replicas, leader, bound, w.res.Applied, w.statuses())
		}
		worst = max(worst, took)
	})
	t.Logf("progress resumed within %d ticks of the cut at worst (bound %d election timeouts)", worst, scenarioBoundElectionTimeouts)
}

// A follower isolated for long, rejoining a healthy cluster, must not depose its leader: it
// did not raise its ballot while alone (pre-vote), so nothing changes when it comes back.
func TestSimRejoinAfterIsolationChangesNoLeader(t *testing.T) {
	changes := 0
	forEachScenarioSeed(t, nil, func(t *testing.T, w *world) {
		leader := w.settle(50 * w.opts.ElectionTicks)
		if leader == 0 {
			t.Fatalf("no stable leader: %v", w.statuses())
		}
		follower := leader%uint32(len(w.nodes)) + 1
		for _, n := range w.nodes {
			if n.id != follower {
				w.cut[n.id-1][follower-1], w.cut[follower-1][n.id-1] = true, true
			}
		}
		w.run(20 * w.opts.ElectionTicks)
		if w.leaderOf() != leader {
			t.Fatalf("seed %d, %d replicas: leader changed from %d to %d while only follower %d was isolated",
				w.opts.Seed, w.opts.Replicas, leader, w.leaderOf(), follower)
		}
		w.heal()
		before := w.res.LeaderChanges
		w.run(10 * w.opts.ElectionTicks)
		if got := w.res.LeaderChanges - before; got > 0 {
			changes += got
			t.Errorf("seed %d, %d replicas: follower %d rejoining after %d ticks alone caused %d leader changes (leader was %d, now %d)",
				w.opts.Seed, w.opts.Replicas, follower, 20*w.opts.ElectionTicks, got, leader, w.leaderOf())
		}
	})
	t.Logf("leader changes caused by rejoins: %d (target 0)", changes)
}

// A leader whose disk stops completing persists for longer than an election timeout must not
// stall the cluster: it steps down (or is deposed) and another leader makes progress while the
// disk is still stalled. Every replica's driver keeps the pipeline's default persist queue, so
// the stalled one keeps sending (heartbeats included) until 64 Readies are stuck.
func TestSimStalledLeaderDiskProgressResumes(t *testing.T) {
	worst := 0
	pipelineQueue := func(o *Options) {
		o.Driver = func(c *driver.Config) { c.PersistInflightMax = driver.DefaultPersistInflightMax }
	}
	forEachScenarioSeed(t, pipelineQueue, func(t *testing.T, w *world) {
		leader := w.settle(50 * w.opts.ElectionTicks)
		if leader == 0 {
			t.Fatalf("no stable leader: %v", w.statuses())
		}
		n := w.nodes[leader-1]
		bound := stallBoundElectionTimeouts * w.opts.ElectionTicks
		n.stalledTill = w.now + 4*bound
		took := w.runUntilProgress(bound, 5, leader)
		if took < 0 {
			t.Fatalf("seed %d, %d replicas: leader %d's disk stalled: no progress under another leader within %d ticks; status %v",
				w.opts.Seed, w.opts.Replicas, leader, bound, w.statuses())
		}
		worst = max(worst, took)
	})
	t.Logf("progress under a new leader resumed within %d ticks of the stall at worst (bound %d election timeouts)", worst, stallBoundElectionTimeouts)
}

// stallBoundElectionTimeouts: a stalled leader steps down after one election timeout, an
// election takes up to two more; then commands commit. (Without the step-down, the stalled
// leader goes silent only once driver.DefaultPersistInflightMax Readies are stuck, and
// progress takes up to 12 election timeouts.)
const stallBoundElectionTimeouts = 6
