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

// persistJob is one Ready's durable part, handed to the persist goroutine.
type persistJob struct {
	hardState []byte // nil: nothing to save
	entries   []codec.Entry
	start     time.Time
}

type persistResult struct {
	err   error
	start time.Time
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

	readyOut bool // a Ready is being persisted
	pending  core.Ready

	leading        bool
	ballot         codec.Ballot
	leader         uint32
	savedPromised  codec.Ballot
	lastCommitSave time.Time

	// proposedSlot/proposedAt: when each in-flight slot was proposed, indexed by slot modulo
	// the length (at least twice the window, so in-flight slots never collide).
	proposedSlot []uint64
	proposedAt   []time.Time
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
			s.finish(s.pending)
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
			// The window is full: let the open batch grow, but close it after the linger
			// so the next free slot gets a batch of bounded age.
			n.batcher.CloseExpired(time.Now())
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

// ready drains core's Ready: Messages leave at once, the durable part goes to the persist
// goroutine, and the rest waits for it (finish).
func (s *stepper) ready() {
	if s.readyOut || !s.r.HasReady() {
		return
	}
	rd := s.r.Ready()
	n := s.n
	for i := range rd.Messages {
		n.send(&rd.Messages[i])
	}
	job := persistJob{entries: rd.Entries, start: time.Now()}
	if rd.MustSaveHardState && (rd.HardState.Promised != s.savedPromised ||
		job.start.Sub(s.lastCommitSave) >= commitSaveInterval) {
		job.hardState = encodeHardState(rd.HardState)
		s.savedPromised, s.lastCommitSave = rd.HardState.Promised, job.start
	}
	if job.hardState == nil && len(job.entries) == 0 {
		s.finish(rd)
		return
	}
	s.readyOut, s.pending = true, rd
	n.persistCh <- job // capacity 1 and one Ready at a time: never blocks
}

// finish completes a Ready whose durable part is durable.
func (s *stepper) finish(rd core.Ready) {
	n := s.n
	for i := range rd.MessagesAfterPersist {
		n.send(&rd.MessagesAfterPersist[i])
	}
	if rd.SnapshotSlot != 0 {
		n.log.Warn("pipeline: snapshot install requested but snapshots are not implemented", "slot", rd.SnapshotSlot)
	}
	if len(rd.Chosen) > 0 {
		now := time.Now()
		for _, e := range rd.Chosen {
			n.ring.put(e.Slot, e.Value)
			i := e.Slot % uint64(len(s.proposedSlot))
			if s.proposedSlot[i] == e.Slot && !s.proposedAt[i].IsZero() {
				n.latency.phase2.record(now.Sub(s.proposedAt[i]))
				s.proposedAt[i] = time.Time{}
			}
		}
		n.applyCh <- applyJob{entries: rd.Chosen, handed: now}
	}
	s.r.Advance(rd)
	s.readyOut, s.pending = false, core.Ready{}
}

func (n *Node) send(m *codec.Message) {
	if m.To == n.cfg.ID {
		return // core never addresses itself; nothing to deliver
	}
	n.net.Send(m)
}

// shutdown ends the step loop on Stop: the Ready being persisted completes (its chosen
// entries are applied and answered), every other waiting request gets StatusShutdown.
func (s *stepper) shutdown() {
	n := s.n
	if s.readyOut {
		select {
		case res := <-n.persistDone:
			if res.err == nil {
				s.finish(s.pending)
			}
		case <-time.After(10 * time.Second):
			n.log.Error("pipeline: stop: WAL write still running after 10s")
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
	s.readyOut = false
	s.dropPending(codec.StatusUnavailable)
	close(n.applyCh)
	close(n.persistCh)
}

// runPersist is the persist goroutine: entries become WAL records keyed by slot (appended
// asynchronously: the WAL group-commits everything queued into one fsync), the hard state is
// saved alongside, and the step loop hears once both are durable.
func (n *Node) runPersist() {
	defer close(n.persistExit)
	var arena []byte
	var recs []wal.Record
	var offsets []int
	walDone := make(chan error, 1)
	for job := range n.persistCh {
		arena, recs, offsets = arena[:0], recs[:0], offsets[:0]
		for i := range job.entries {
			offsets = append(offsets, len(arena))
			arena = appendEntryPayload(arena, &job.entries[i])
		}
		offsets = append(offsets, len(arena))
		for i := range job.entries {
			recs = append(recs, wal.Record{Type: recordEntry, Key: job.entries[i].Slot, Payload: arena[offsets[i]:offsets[i+1]]})
		}
		var appendErr, hardStateErr error
		queued := false
		if len(recs) > 0 {
			appendErr = n.wal.AppendAsync(recs, func(err error) { walDone <- err })
			queued = appendErr == nil
		}
		if job.hardState != nil {
			// Saved while the WAL writer syncs the entries: two fsyncs in parallel.
			hardStateErr = n.wal.SaveHardState(job.hardState)
		}
		if queued {
			appendErr = <-walDone
		}
		err := errors.Join(appendErr, hardStateErr)
		d := time.Since(job.start)
		n.latency.persist.record(d)
		n.metrics.persistSeconds.Observe(d.Seconds())
		n.persistDone <- persistResult{err: err, start: job.start}
	}
}
