package sim

// faults draws this tick's faults: unprompted campaigns, compactions, crashes and restarts,
// pauses, disk stalls, and partitions that start and heal.
func (w *world) faults() {
	o := &w.opts
	for _, n := range w.nodes {
		if n.live() && w.rng.IntN(1000) < o.CampaignPerMille && n.running(w.now) {
			n.r.Campaign()
		}
		if n.live() && w.rng.IntN(1000) < o.CompactPerMille && n.running(w.now) {
			w.compact(n)
		}
		switch {
		case n.live() && w.rng.IntN(1000) < o.CrashPerMille:
			w.crash(n)
		case !n.live() && w.now >= n.downTill:
			w.restart(n)
		}
		if n.running(w.now) && w.rng.IntN(1000) < o.PausePerMille {
			n.pausedTill = w.now + 1 + w.rng.IntN(o.PauseTicksMax)
			w.res.Pauses++
		}
		if n.live() && w.now >= n.stalledTill && w.rng.IntN(1000) < o.StallPerMille {
			n.stalledTill = w.now + 1 + w.rng.IntN(o.StallTicksMax)
			w.res.Stalls++
		}
	}
	if w.healAt > 0 && w.now >= w.healAt {
		w.heal()
	}
	if w.healAt == 0 && w.rng.IntN(1000) < o.PartitionPerMille {
		w.partition()
		w.healAt = w.now + 1 + w.rng.IntN(o.PartitionTicksMax)
		w.res.Partitions++
	}
}

// crash loses everything volatile: core, its driver, the state machine, the disk operations
// in flight (some of which may reach the disk, see crashDisk).
func (w *world) crash(n *node) {
	w.crashDisk(n)
	n.r, n.driver = nil, nil
	n.pausedTill, n.stalledTill = 0, 0
	down := 1 + w.rng.IntN(w.opts.DownTicksMax)
	if w.rng.IntN(100) < w.opts.QuickRestartPercent {
		down = 1 + w.rng.IntN(2)
		w.res.QuickRestarts++
	}
	n.downTill = w.now + down
	w.res.Crashes++
}

// compact snapshots the application's state and lets core and the disk drop what it covers.
func (w *world) compact(n *node) {
	slot := n.r.Status().Applied
	if slot > uint64(len(n.state.values)) {
		w.fail("apply in slot order without gaps", "replica %d: core applied %d, state machine %d", n.id, slot, len(n.state.values))
	}
	if slot < uint64(len(n.state.values)) || slot <= n.disk.newestSnapshotSlot() {
		return // applied ahead of core's Advance: snapshot later, at a point core knows
	}
	s := n.state.snapshot(w.opts.Plant == PlantSnapshotWithoutSessions)
	n.disk.addSnapshot(newSnapshotFile(encodeSnapshot(&s)))
	w.truncateBelow(n, slot)
	n.r.Compact(slot)
}

// partition starts a new partition: two groups, three groups, or a one-way cut (a set of
// replicas whose messages to the others are lost, while the others' messages still reach it).
func (w *world) partition() {
	k := len(w.nodes)
	group := make([]int, k)
	switch {
	case w.rng.IntN(100) < w.opts.OneWayPercent:
		for i := range group {
			group[i] = w.rng.IntN(2)
		}
		for from := range k {
			for to := range k {
				w.cut[from][to] = group[from] == 1 && group[to] == 0
			}
		}
		return
	case k >= 3 && w.rng.IntN(100) < w.opts.ThreeWayPercent:
		for i := range group {
			group[i] = w.rng.IntN(3)
		}
	default:
		for i := range group {
			group[i] = w.rng.IntN(2)
		}
	}
	for from := range k {
		for to := range k {
			w.cut[from][to] = group[from] != group[to]
		}
	}
}

func (w *world) heal() {
	for _, row := range w.cut {
		clear(row)
	}
	w.healAt = 0
}

func (w *world) connected(from, to uint32) bool {
	return !w.cut[from-1][to-1]
}
