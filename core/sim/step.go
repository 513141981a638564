package sim

import (
	"bytes"
	"maps"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// step runs one tick: time passes on every live replica, due messages arrive in random order,
// clients submit, and every replica's Ready cycle moves on.
func (w *world) step(load bool) {
	for _, n := range w.nodes {
		if n.r != nil {
			n.r.Tick()
			w.checkPromised(n)
		}
	}
	w.deliver()
	w.transferSnapshots()
	w.clients(load)
	for _, n := range w.nodes {
		w.drive(n)
	}
}

func (w *world) checkPromised(n *node) {
	st := n.r.Status()
	if st.Promised.Less(n.promised) {
		w.fail("promised never goes down", "replica %d: promised went from %v to %v", n.id, n.promised, st.Promised)
	}
	n.promised = st.Promised
	w.checkCommitDurable(n, st.Commit)
}

// checkCommitDurable: the first time any replica's commit point passes a slot, a majority of
// the disks hold an entry for it (or a snapshot covering it): every vote that made it chosen,
// the leader's own included, was durable when it was counted. A leader counting its own vote
// before its persist is caught at once, not only after an unlucky crash.
func (w *world) checkCommitDurable(n *node, commit uint64) {
	for ; w.commitChecked < commit; w.commitChecked++ {
		s, holders := w.commitChecked, 0
		for _, m := range w.nodes {
			if _, ok := m.disk.entries[s]; ok || s < uint64(len(m.disk.snapshot)) {
				holders++
			}
		}
		if holders < len(w.nodes)/2+1 {
			w.fail("chosen only when durable on a majority", "replica %d committed slot %d with only %d of %d disks holding it",
				n.id, s, holders, len(w.nodes))
		}
	}
}

func (w *world) connected(from, to uint32) bool {
	return w.group[from] == w.group[to]
}

func (w *world) send(m codec.Message) {
	if !w.connected(m.From, m.To) || w.rng.IntN(100) < w.opts.DropPercent {
		return
	}
	copies := 1
	if w.rng.IntN(100) < w.opts.DuplicatePercent {
		copies = 2
	}
	for range copies {
		w.network = append(w.network, envelope{m: m, at: w.now + w.rng.IntN(w.opts.DelayTicksMax+1)})
	}
}

// deliver hands every due message to its replica, in random order. Each delivery gets a fresh
// copy of the message's bytes, scribbled over after Step returns: core must copy what it keeps.
func (w *world) deliver() {
	var due []envelope
	kept := w.network[:0]
	for _, e := range w.network {
		if e.at <= w.now {
			due = append(due, e)
		} else {
			kept = append(kept, e)
		}
	}
	w.network = kept
	w.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, e := range due {
		n := w.nodes[e.m.To-1]
		if n.r == nil || !w.connected(e.m.From, e.m.To) {
			continue
		}
		m := cloneMessage(e.m)
		if err := n.r.Step(m); err != nil {
			w.fail("well-formed messages are accepted", "replica %d: %v", n.id, err)
		}
		if !n.cfg.StepValuesOwned {
			scribble(m)
		}
		w.checkPromised(n)
		w.res.Messages++
	}
}

func cloneMessage(m codec.Message) codec.Message {
	c := m
	c.Values = make([][]byte, len(m.Values))
	for i, v := range m.Values {
		c.Values[i] = bytes.Clone(v)
	}
	c.Entries = slices.Clone(m.Entries)
	for i := range c.Entries {
		c.Entries[i].Value = bytes.Clone(c.Entries[i].Value)
	}
	return c
}

func scribble(m codec.Message) {
	for _, v := range m.Values {
		for i := range v {
			v[i] = 0xEE
		}
	}
	for _, e := range m.Entries {
		for i := range e.Value {
			e.Value[i] = 0xEE
		}
	}
}

// clients submit new values (while load is on) and retry pending ones at some leader.
func (w *world) clients(load bool) {
	// Clients hold at most PendingMax values unanswered (backpressure), so the backlog left
	// when faults stop is bounded and so is the liveness bound.
	if load && len(w.pending) < w.opts.PendingMax && w.rng.IntN(100) < w.opts.ProposePercent {
		v := w.value()
		w.proposed[string(v)] = true
		w.pending = append(w.pending, pendingValue{value: v, retryAt: w.now})
		w.res.Proposed++
	}
	var leaders []*node
	for _, n := range w.nodes {
		if n.r != nil && n.r.Status().IsLeader {
			leaders = append(leaders, n)
		}
	}
	if len(leaders) == 0 {
		return
	}
	for i := range w.pending {
		p := &w.pending[i]
		if p.retryAt > w.now {
			continue
		}
		n := leaders[w.rng.IntN(len(leaders))]
		if _, err := n.r.Propose(p.value); err != nil {
			return // window full: try again next tick
		}
		// A value proposed by a leader that loses leadership may never be chosen: retry later.
		p.retryAt = w.now + 4*n.cfg.ElectionTicks
	}
}

// drive moves one replica's Ready cycle: a finished persist (the oldest in flight: they
// complete in order) releases MessagesAfterPersist, applies Chosen and advances; while fewer
// than persistsMax persists are in flight a new Ready sends Messages at once and starts
// persisting behind the others.
func (w *world) drive(n *node) {
	for range 8 {
		if n.r == nil {
			return
		}
		if len(n.jobs) > 0 && n.jobs[0].doneAt <= w.now {
			w.finishPersist(n)
			continue
		}
		if len(n.jobs) >= n.persistsMax || !n.r.HasReady() {
			return
		}
		rd := n.r.Ready()
		for _, m := range rd.Messages {
			w.checkNotVouching(n, m)
			w.send(m)
		}
		job := &persistJob{rd: rd, doneAt: w.now + w.rng.IntN(w.opts.PersistTicksMax+1)}
		if k := len(n.jobs); k > 0 {
			job.doneAt = max(job.doneAt, n.jobs[k-1].doneAt) // FIFO: never before an earlier persist
			w.res.Overlapped++
		}
		if n.applyEarly && w.mayApplyEarly(n, rd) {
			// Like the pipeline: chosen values are durable on a majority, so they may be
			// applied before this replica's own persist, in order.
			for _, e := range rd.Chosen {
				w.apply(n, e)
			}
			job.applied = true
		}
		n.jobs = append(n.jobs, job)
	}
}

// mayApplyEarly: rd's Chosen may be applied now if it installs no snapshot (that waits for
// the persist) and every Ready still persisting was applied already (order).
func (w *world) mayApplyEarly(n *node, rd core.Ready) bool {
	if rd.SnapshotSlot != 0 {
		return false
	}
	for _, j := range n.jobs {
		if !j.applied {
			return false
		}
	}
	return true
}

// checkNotVouching: a message sent before the persist must not vouch for anything.
func (w *world) checkNotVouching(n *node, m codec.Message) {
	if m.Type == codec.TypePromise || m.Type == codec.TypeAccepted {
		w.fail("durable before send", "replica %d sent %v for %v before persisting", n.id, m.Type, m.Ballot)
	}
}

func (w *world) finishPersist(n *node) {
	rd, applied := n.jobs[0].rd, n.jobs[0].applied
	n.jobs[0] = nil
	n.jobs = n.jobs[1:]
	if w.opts.LyingDisk && (len(rd.Entries) > 0 || rd.MustSaveHardState) {
		n.lastSync = disk{hardState: n.disk.hardState, entries: maps.Clone(n.disk.entries), snapshot: n.disk.snapshot}
	}
	for _, e := range rd.Entries {
		n.disk.entries[e.Slot] = e
	}
	if rd.MustSaveHardState {
		n.disk.hardState = rd.HardState
	}
	if rd.SnapshotSlot > 0 {
		w.installSnapshot(n, rd.SnapshotSlot)
	}
	for _, m := range rd.MessagesAfterPersist {
		w.checkDurable(n, m)
		w.send(m)
	}
	if !applied {
		for _, e := range rd.Chosen {
			w.apply(n, e)
		}
	}
	n.r.Advance(rd)
	w.checkPromised(n)
}

// installSnapshot replaces the state machine with a fetched snapshot, which must agree with
// the chosen log like any applied value.
func (w *world) installSnapshot(n *node, slot uint64) {
	if n.incoming == nil || uint64(len(n.incoming)) != slot {
		w.fail("snapshot install", "replica %d asked to install %d, fetched %d slots", n.id, slot, len(n.incoming))
	}
	for s, v := range n.incoming {
		if s < len(w.global) && !bytes.Equal(w.global[s], v) {
			w.fail("one value per slot", "replica %d snapshot holds %x at slot %d, chosen was %x", n.id, v, s, w.global[s])
		}
	}
	n.applied, n.disk.snapshot, n.incoming = slices.Clone(n.incoming), n.incoming, nil
	for s := range n.disk.entries {
		if s < slot {
			delete(n.disk.entries, s)
		}
	}
}

// checkDurable: a Promise or Accepted vouches only for what the disk holds.
func (w *world) checkDurable(n *node, m codec.Message) {
	durable := n.disk.hardState.Promised
	for _, e := range n.disk.entries {
		if e.Ballot != core.ChosenBallot && durable.Less(e.Ballot) {
			durable = e.Ballot
		}
	}
	switch m.Type {
	case codec.TypePromise, codec.TypeAccepted:
		if durable.Less(m.Ballot) {
			w.fail("durable before send", "replica %d sent %v for %v with only %v on disk", n.id, m.Type, m.Ballot, durable)
		}
		if n.vouched.Less(m.Ballot) {
			n.vouched = m.Ballot
		}
	}
	if m.Type == codec.TypeAccepted {
		// Below the snapshot the slot is chosen and its entry compacted away.
		if e, ok := n.disk.entries[m.Slot]; m.Slot >= uint64(len(n.disk.snapshot)) && (!ok || e.Ballot.Less(m.Ballot)) {
			w.fail("durable before send", "replica %d acked slot %d in %v, disk holds %+v", n.id, m.Slot, m.Ballot, e)
		}
	}
}

// apply is the state machine: strictly in slot order, and every replica's log a prefix of the
// one chosen log.
func (w *world) apply(n *node, e codec.Entry) {
	if e.Slot != uint64(len(n.applied)) {
		w.fail("apply in slot order without gaps", "replica %d applied slot %d after %d slots", n.id, e.Slot, len(n.applied))
	}
	if len(e.Value) > 0 && !w.proposed[string(e.Value)] {
		w.fail("only proposed values are chosen", "replica %d slot %d holds %x", n.id, e.Slot, e.Value)
	}
	switch {
	case e.Slot < uint64(len(w.global)):
		if !bytes.Equal(w.global[e.Slot], e.Value) {
			w.fail("one value per slot", "replica %d applied %x at slot %d, chosen was %x", n.id, e.Value, e.Slot, w.global[e.Slot])
		}
	default:
		w.global = append(w.global, bytes.Clone(e.Value))
		w.ack(e.Value)
	}
	n.applied = append(n.applied, bytes.Clone(e.Value))
}

// ack reports a value chosen to its client: it leaves the pending list.
func (w *world) ack(v []byte) {
	if len(v) == 0 {
		return
	}
	for i := range w.pending {
		if bytes.Equal(w.pending[i].value, v) {
			w.pending = slices.Delete(w.pending, i, i+1)
			return
		}
	}
}
