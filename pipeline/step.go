package pipeline

import (
	"bytes"
	"errors"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/wal"
)

// commitSaveInterval bounds how often a commit-point-only change of the hard state is made
// durable. The commit point is not needed for safety (it is re-learned), only to restart
// without re-fetching what was chosen; saving it on every Ready would add an fsync per Ready.
// A new promise is always saved at once.
const commitSaveInterval = 50 * time.Millisecond

// peerBurstMax bounds the peer messages stepped before the loop looks at its other inputs.
const peerBurstMax = 512

// persistJob is one Ready's durable part: the step loop queues its entries into the WAL
// itself and hands its hard state, if any, to the hard-state saver.
type persistJob struct {
	seq       uint64 // the Ready's place in the FIFO of persists
	hardState []byte // nil: nothing to save
	entries   []codec.Entry
	start     time.Time
}

type persistResult struct {
	seq uint64
	err error
}

// pendingReady is a Ready handed out by core whose persist is in flight (or, if durable, one
// that waits for an earlier persist: Readies finish in the order core handed them out).
type pendingReady struct {
	rd      core.Ready
	seq     uint64
	parts   int  // parts of its persist not yet durable: the entries, the hard state
	applied bool // Chosen already went to the apply stage when the Ready was taken
}

// applyJob is work for the apply goroutine: chosen entries in slot order, or (failAll) an
// answer with status for every waiting request.
type applyJob struct {
	entries []codec.Entry
	handed  time.Time
	failAll bool
	status  codec.Status
}

// stepper is the state of the one goroutine that owns core.Replica.
type stepper struct {
	n *Node
	r *core.Replica

	held       []byte // a batch core refused with ErrWindowFull, proposed first next time
	heldOpened time.Time
	heldCount  int

	// pending: Readies whose persist is in flight, oldest first (at most PersistInflightMax).
	// core allows several outstanding; they are finished and advanced strictly in order.
	pending   []pendingReady
	nextSeq   uint64
	unapplied int // pending Readies whose Chosen waits for their persist (order: later ones wait too)

	leading        bool
	ballot         codec.Ballot
	leader         uint32
	savedPromised  codec.Ballot
	lastCommitSave time.Time

	// proposedSlot/proposedAt: when each in-flight slot was proposed, indexed by slot modulo
	// the length (at least twice the window, so in-flight slots never collide).
	proposedSlot []uint64
	proposedAt   []time.Time

	// appendEntries' buffers, reused Ready after Ready (the WAL copies what it queues).
	arena   []byte
	recs    []wal.Record
	offsets []int
}

func (n *Node) runStep() {
	defer close(n.stepDone)
	size := 2 * n.cfg.Window
	s := &stepper{n: n, r: n.replica, proposedSlot: make([]uint64, size), proposedAt: make([]time.Time, size)}
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case m := <-n.peerCh:
			s.step(&m)
			for i := 0; i < peerBurstMax; i++ {
				select {
				case m := <-n.peerCh:
					s.step(&m)
					continue
				default:
				}
				break
			}
		case <-ticker.C:
			s.r.Tick()
		case <-n.kick:
		case res := <-n.persistDone:
			if res.err != nil {
				s.fail(res.err)
				return
			}
			s.persisted(res.seq)
		case <-n.stop:
			s.shutdown()
			return
		}
		s.observeLeadership()
		s.propose()
		s.ready()
	}
}

func (s *stepper) step(m *codec.Message) {
	if err := s.r.Step(*m); err != nil {
		s.n.log.Debug("pipeline: peer message refused", "from", m.From, "type", m.Type, "err", err)
	}
}

// propose hands batches to core while the window has room. A batch core refuses stays held
// and goes first next time, so commands keep their arrival order.
func (s *stepper) propose() {
	if !s.leading {
		return
	}
	n := s.n
	took := false
	for {
		if s.held == nil {
			bt := n.batcher.Next()
			if bt == nil {
				break
			}
			took = true
			// core retains proposed values for catch-up, so it gets its own exact-size copy
			// and the pooled buffer goes straight back (one allocation per batch).
			s.held = bytes.Clone(bt.Bytes())
			s.heldOpened, s.heldCount = bt.Opened(), bt.Count()
			n.batcher.Release(bt)
		}
		slot, err := s.r.Propose(s.held)
		if err != nil {
			if !errors.Is(err, core.ErrWindowFull) && !errors.Is(err, core.ErrNotLeader) {
				n.log.Error("pipeline: proposal refused", "bytes", len(s.held), "err", err)
				s.held = nil // cannot happen with a validated Config; its requests time out
				continue
			}
			// The window is full: the open batch keeps growing (up to the batch bounds)
			// until a slot frees. By default (Linger 0) it is not closed at a linger:
			// closed batches queue one per slot, so a linger shorter than the round trip
			// (mostly the fsync) caps throughput at Window x (commands per linger) per
			// round trip and lets an open-loop backlog grow (see docs/BENCHMARKS.md). A
			// positive Linger bounds a batch's age at that cost.
			if n.cfg.Batching.Linger > 0 {
				n.batcher.CloseExpired(time.Now())
			}
			break
		}
		now := time.Now()
		n.latency.batchWait.record(now.Sub(s.heldOpened))
		n.metrics.batchCommands.Observe(float64(s.heldCount))
		n.metrics.batchBytes.Observe(float64(len(s.held)))
		i := slot % uint64(len(s.proposedSlot))
		s.proposedSlot[i], s.proposedAt[i] = slot, now
		s.held = nil
	}
	if took {
		n.resumePaused()
	}
}

// observeLeadership publishes role changes to ingest and fails what a lost leadership left
// pending.
func (s *stepper) observeLeadership() {
	n := s.n
	st := s.r.Status()
	n.inflight.Store(int64(st.Inflight))
	if st.Leader != s.leader {
		s.leader = st.Leader
		n.leaderID.Store(st.Leader)
		n.net.SetLeader(st.Leader, n.cfg.Peers[st.Leader])
		n.metrics.leaderChanges.Inc()
		if st.Leader != 0 {
			n.log.Info("pipeline: leader", "leader", st.Leader, "promised", st.Promised)
		}
	}
	lost := s.leading && (!st.IsLeader || st.Ballot != s.ballot)
	if st.IsLeader != s.leading {
		n.isLeader.Store(st.IsLeader)
	}
	s.leading, s.ballot = st.IsLeader, st.Ballot
	if lost || (!s.leading && (s.held != nil || !n.batcher.Empty())) {
		// Proposed commands may still be chosen (by the next leader): their waiters get the
		// ambiguous StatusUnavailable and retry with the same seq.
		s.dropPending(codec.StatusUnavailable)
	}
}

// dropPending discards the batched, unproposed commands and answers every waiting request
// with status (in order after the chosen entries already queued for apply).
func (s *stepper) dropPending(status codec.Status) {
	n := s.n
	s.held = nil
	for bt := n.batcher.Next(); bt != nil; bt = n.batcher.Next() {
		n.batcher.Release(bt)
	}
	n.applyCh <- applyJob{failAll: true, status: status}
}

// ready drains core's Readies while fewer than PersistInflightMax persists are in flight:
// Messages leave at once, the durable part queues behind the earlier persists (the WAL
// group-commits them), and the rest waits for it (finish). So the leader keeps proposing and
// sending Accepts while earlier entries sync, and a follower keeps accepting while its
// previous batch syncs.
func (s *stepper) ready() {
	for len(s.pending) < s.n.cfg.PersistInflightMax && s.r.HasReady() {
		s.readyOne()
	}
}

func (s *stepper) readyOne() {
	rd := s.r.Ready()
	n := s.n
	for i := range rd.Messages {
		n.send(&rd.Messages[i])
	}
	p := pendingReady{rd: rd, seq: s.nextSeq}
	s.nextSeq++
	if rd.SnapshotSlot == 0 && s.unapplied == 0 {
		// Chosen values are durable on a majority already: the answers need not wait for
		// this replica's own fsync. A snapshot install waits for its persist, and whatever
		// is chosen after it waits behind it (the apply stage takes everything in order).
		s.apply(rd.Chosen)
		p.applied = true
	}
	job := persistJob{seq: p.seq, entries: rd.Entries, start: time.Now()}
	if rd.MustSaveHardState && (rd.HardState.Promised != s.savedPromised ||
		job.start.Sub(s.lastCommitSave) >= commitSaveInterval) {
		job.hardState = encodeHardState(rd.HardState)
		s.savedPromised, s.lastCommitSave = rd.HardState.Promised, job.start
	}
	if len(job.entries) > 0 {
		p.parts++
	}
	if job.hardState != nil {
		p.parts++
	}
	if p.parts == 0 && len(s.pending) == 0 {
		s.finish(p)
		return
	}
	// With nothing to write it still waits its turn: it may vouch for what earlier Readies write.
	if job.hardState != nil {
		n.persistCh <- job // capacity PersistInflightMax, and at most that many pending: never blocks
	}
	if len(job.entries) > 0 {
		s.appendEntries(job)
	}
	if !p.applied {
		s.unapplied++
	}
	s.pending = append(s.pending, p)
}

// persisted records that one part of the persist of the Ready with sequence seq is durable
// and finishes, in order, every pending Ready that is wholly durable and has no earlier one
// still in flight.
func (s *stepper) persisted(seq uint64) {
	for i := range s.pending {
		if s.pending[i].seq == seq {
			s.pending[i].parts--
			break
		}
	}
	done := 0
	for done < len(s.pending) && s.pending[done].parts == 0 {
		p := s.pending[done]
		s.pending[done] = pendingReady{}
		done++
		if !p.applied {
			s.unapplied--
		}
		s.finish(p)
	}
	s.pending = s.pending[:copy(s.pending, s.pending[done:])]
}

// finish completes a Ready whose durable part (and every earlier Ready's) is durable.
func (s *stepper) finish(p pendingReady) {
	n := s.n
	rd := p.rd
	for i := range rd.MessagesAfterPersist {
		n.send(&rd.MessagesAfterPersist[i])
	}
	if rd.SnapshotSlot != 0 {
		n.installSnapshot(rd.SnapshotSlot)
	}
	if !p.applied {
		s.apply(rd.Chosen)
	}
	s.r.Advance(rd)
}

// apply hands chosen entries to the apply stage (in slot order) and to the chosen-value cache.
func (s *stepper) apply(chosen []codec.Entry) {
	if len(chosen) == 0 {
		return
	}
	n := s.n
	now := time.Now()
	for _, e := range chosen {
		n.ring.put(e.Slot, e.Value)
		i := e.Slot % uint64(len(s.proposedSlot))
		if s.proposedSlot[i] == e.Slot && !s.proposedAt[i].IsZero() {
			n.latency.phase2.record(now.Sub(s.proposedAt[i]))
			s.proposedAt[i] = time.Time{}
		}
	}
	n.applyCh <- applyJob{entries: chosen, handed: now}
}

func (n *Node) send(m *codec.Message) {
	if m.To == n.cfg.ID {
		return // core never addresses itself; nothing to deliver
	}
	n.net.Send(m)
}

// shutdown ends the step loop on Stop: the Readies being persisted complete (their chosen
// entries are applied and answered), every other waiting request gets StatusShutdown.
func (s *stepper) shutdown() {
	n := s.n
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for len(s.pending) > 0 {
		select {
		case res := <-n.persistDone:
			if res.err != nil {
				s.pending, s.unapplied = nil, 0
				break
			}
			s.persisted(res.seq)
		case <-timeout.C:
			n.log.Error("pipeline: stop: WAL writes still running after 10s", "readies", len(s.pending))
			s.pending, s.unapplied = nil, 0
		}
	}
	s.dropPending(codec.StatusShutdown)
	close(n.applyCh)
	close(n.persistCh)
}

// fail stops the node after a fatal error (the WAL failed: nothing more can be promised).
func (s *stepper) fail(err error) {
	n := s.n
	n.log.Error("pipeline: fatal: the write-ahead log failed; stopping", "err", err)
	n.stopping.Store(true)
	n.isLeader.Store(false)
	select {
	case n.fatal <- errors.Join(ErrWAL, err):
	default:
	}
	s.pending, s.unapplied = nil, 0
	s.dropPending(codec.StatusUnavailable)
	close(n.applyCh)
	close(n.persistCh)
}

// appendEntries queues a Ready's entries into the WAL as records keyed by slot. AppendAsync
// returns once they are queued (the WAL group-commits everything queued into one fsync and
// completes appends in order), so the step loop goes on at once; it hears of the entries'
// durability on persistDone and restores the order of Readies itself. Queuing here rather than
// on a goroutine of its own saves a hand-off (a thread wake-up) per Ready on the path every
// Accepted waits for; AppendAsync blocks only while the WAL's queue is full, and the WAL
// writer never waits for this loop (persistDone holds two results per Ready in flight).
func (s *stepper) appendEntries(job persistJob) {
	n := s.n
	s.arena, s.recs, s.offsets = s.arena[:0], s.recs[:0], s.offsets[:0]
	for i := range job.entries {
		s.offsets = append(s.offsets, len(s.arena))
		s.arena = appendEntryPayload(s.arena, &job.entries[i])
	}
	s.offsets = append(s.offsets, len(s.arena))
	for i := range job.entries {
		s.recs = append(s.recs, wal.Record{Type: recordEntry, Key: job.entries[i].Slot,
			Payload: s.arena[s.offsets[i]:s.offsets[i+1]]})
	}
	seq, start := job.seq, job.start
	// done runs on the WAL writer goroutine.
	err := n.wal.AppendAsync(s.recs, func(err error) {
		d := time.Since(start)
		n.latency.persist.record(d)
		n.metrics.persistSeconds.Observe(d.Seconds())
		n.persistDone <- persistResult{seq: seq, err: err}
	})
	if err != nil {
		n.persistDone <- persistResult{seq: seq, err: err}
	}
}

// runPersist is the hard-state saver: the hard state (rare: a new promise, or the commit
// point every commitSaveInterval) is saved here, in order, so its fsync does not hold up the
// entries of the Readies behind it; saving a Ready's hard state before an earlier Ready's
// entries are durable is safe (the promise only rises, and the commit point covers only
// entries already durable). The step loop hears of each part of each Ready once it is
// durable; it restores the order itself.
func (n *Node) runPersist() {
	defer close(n.persistExit)
	for job := range n.persistCh {
		// persistDone holds two results per Ready in flight: never blocks.
		n.persistDone <- persistResult{seq: job.seq, err: n.wal.SaveHardState(job.hardState)}
	}
}
