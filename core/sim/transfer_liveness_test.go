package sim

import "testing"

// Liveness of snapshot transfers once the faults stop. A transfer takes a round trip per
// window, and a window may be one chunk of chunkBytesMin bytes: fetching a snapshot of a few
// tens of KiB then takes longer than QuietTicks (election timeouts) allow, though nothing is
// stuck. The liveness bound adds transferTicks for it; a transfer that hangs still fails it.

// Seed 5027786 of 3 replicas (ChunkBytes 157, ChunkWindow 1) failed liveness at 760 ticks
// with replica 3 fetching its second snapshot in a row (12865 bytes, one 157-byte chunk per
// ~7 ticks, every operation completing): the first one, of slot 97, started before the
// faults stopped, and its sender compacted to 109 meanwhile. It converges after 999 ticks.
func TestSimSeed5027786SecondTransferWithinLivenessBound(t *testing.T) {
	const seed, replicas = 5027786, 3
	opts := DrawOptions(seed, replicas)
	res, err := Run(opts)
	if err != nil {
		t.Fatalf("seed %d, %d replicas: %v\n  options: %v", seed, replicas, err, opts)
	}
	t.Logf("converged %d ticks after the faults stopped (QuietTicks %d), %d snapshots installed",
		res.LivenessTicks, opts.QuietTicks, res.Snapshots)
}

// transferScenarioLoadTicks: the load the isolated follower misses, while the others compact,
// makes a snapshot of several hundred minimum-sized chunks.
const transferScenarioLoadTicks = 2000

// A follower cut off while the others compact must catch up by snapshot once the faults stop,
// one chunk of chunkBytesMin per round trip. The transfer alone outlasts QuietTicks, so this
// checks the liveness bound counts it (and that the transfer gets there).
func TestSimFollowerCatchesUpBySlowSnapshotTransfer(t *testing.T) {
	slowTransfer := func(o *Options) {
		o.ChunkBytes, o.ChunkWindow = chunkBytesMin, 1
		o.DelayTicksMax, o.PersistTicksMax = 3, 8
		o.ElectionTicks, o.HeartbeatTicks, o.RetransmitTicks = 20, 4, 15
		o.SnapshotRetryTicks = 40
	}
	slowest := 0
	forEachScenarioSeed(t, slowTransfer, func(t *testing.T, w *world) {
		leader := w.settle(50 * w.opts.ElectionTicks)
		if leader == 0 {
			t.Fatalf("no stable leader: %v", w.statuses())
		}
		follower := w.nodes[leader%uint32(len(w.nodes))]
		for _, n := range w.nodes {
			if n != follower {
				w.cut[n.id-1][follower.id-1], w.cut[follower.id-1][n.id-1] = true, true
			}
		}
		w.run(transferScenarioLoadTicks)
		// Compact every replica but the follower, each once core has advanced past what its
		// state machine applied (compact skips a replica that applied ahead of Advance).
		compacted := func() int {
			k := 0
			for _, n := range w.nodes {
				if n != follower && n.disk.newestSnapshotSlot() == 0 {
					w.compact(n)
				}
				if n != follower && n.disk.newestSnapshotSlot() > 0 {
					k++
				}
			}
			return k
		}
		for deadline := w.now + 10*w.opts.ElectionTicks; compacted() < len(w.nodes)-1; w.now++ {
			if w.now >= deadline {
				t.Fatalf("seed %d, %d replicas: only %d replicas compacted", w.opts.Seed, w.opts.Replicas, compacted())
			}
			w.tick(false)
		}
		before := w.res.Snapshots
		w.runQuiet()
		if w.res.Snapshots == before {
			t.Fatalf("seed %d, %d replicas: follower %d caught up without a snapshot: the scenario exercised nothing",
				w.opts.Seed, w.opts.Replicas, follower.id)
		}
		if w.res.LivenessTicks <= w.opts.QuietTicks {
			t.Fatalf("seed %d, %d replicas: converged %d ticks after the faults stopped, within QuietTicks %d: the transfer was not slow enough to test the bound",
				w.opts.Seed, w.opts.Replicas, w.res.LivenessTicks, w.opts.QuietTicks)
		}
		slowest = max(slowest, w.res.LivenessTicks)
	})
	t.Logf("slowest catch-up %d ticks after the faults stopped", slowest)
}
