package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/core/driver"
	"github.com/mpaxos/mpaxos/wal"
)

// commitSaveInterval bounds how often a commit-point-only change of the hard state is made
// durable (driver.Config.CommitSaveTicks, in ticks of Config.TickInterval). The commit point
// is not needed for safety (it is re-learned), only to restart without re-fetching what was
// chosen; saving it on every Ready would add an fsync per Ready. A new promise is always saved.
const commitSaveInterval = 50 * time.Millisecond

// peerBurstMax bounds the peer messages stepped before the loop looks at its other inputs.
const peerBurstMax = 512

// hardStateJob is one Ready's hard state for the hard-state saver.
type hardStateJob struct {
	seq       uint64 // the Ready's place in the driver's FIFO of persists
	hardState []byte
}

// persistResult reports one durable part of a Ready's persist to the step loop.
type persistResult struct {
	seq  uint64
	part driver.Part
	err  error
}

// applyJob is work for the apply goroutine: chosen entries in slot order, or (failAll) an
// answer with status for every waiting request.
type applyJob struct {
	entries []codec.Entry
	handed  time.Time
	failAll bool
	status  codec.Status
}

// driverConfig is the Ready-handling policy of core/driver for c.
func driverConfig(c *Config) driver.Config {
	return driver.Config{
		PersistInflightMax: c.PersistInflightMax,
		CommitSaveTicks:    ticksOf(commitSaveInterval, c.TickInterval),
		ChunkBytes:         c.Snapshot.ChunkBytes,
		ChunkWindow:        c.Snapshot.ChunkWindow,
		RetryTicks:         ticksOf(c.Snapshot.RetryInterval, c.TickInterval),
		RetryLimit:         snapshotRetryLimit,
		ServesMax:          max(1, len(c.Peers)-1),
	}
}

// stepper is the state of the one goroutine that owns core.Replica and its driver. It is the
// driver's Effects: the driver decides what to send, persist, apply and install, and when; the
// stepper does it (queues into the WAL, hands to the hard-state saver, netio, the apply stage
// and the snapshot transfer goroutine) and reports completions back.
type stepper struct {
	n *Node
	r *core.Replica
	d *driver.Driver

	held       []byte // a batch core refused with ErrWindowFull, proposed first next time
	heldOpened time.Time
	heldCount  int

	leading bool
	ballot  codec.Ballot
	leader  uint32

	// proposedSlot/proposedAt: when each in-flight slot was proposed, indexed by slot modulo
	// the length (at least twice the window, so in-flight slots never collide).
	proposedSlot []uint64
	proposedAt   []time.Time

	// appendEntries' buffers, reused Ready after Ready (the WAL copies what it queues).
	arena   []byte
	recs    []wal.Record
	offsets []int
}

func newStepper(n *Node) (*stepper, error) {
	size := 2 * n.cfg.Window
	s := &stepper{n: n, r: n.replica, proposedSlot: make([]uint64, size), proposedAt: make([]time.Time, size)}
	var err error
	if s.d, err = driver.New(driverConfig(&n.cfg), n.replica, s); err != nil {
		return nil, fmt.Errorf("pipeline: %w: %w", err, ErrInvalidConfig)
	}
	return s, nil
}

func (n *Node) runStep() {
	defer close(n.stepDone)
	s := n.stepper
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
			s.d.Tick()
		case <-n.kick:
		case res := <-n.persistDone:
			if res.err != nil {
				s.fail(res.err)
				return
			}
			s.d.Persisted(res.seq, res.part)
		case res := <-n.xfer.results:
			s.transferDone(&res)
		case <-n.stop:
			s.shutdown()
			return
		}
		s.observeLeadership()
		s.propose()
		// The driver takes core's Readies while fewer than PersistInflightMax persists are in
		// flight: Messages leave at once, the durable part queues behind the earlier persists
		// (the WAL group-commits them), and the rest waits for it. So the leader keeps
		// proposing and sending Accepts while earlier entries sync, and a follower keeps
		// accepting while its previous batch syncs.
		s.d.Drive()
	}
}

func (s *stepper) step(m *codec.Message) {
	if err := s.d.Step(m); err != nil {
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

// ---- driver.Effects, on the step loop (snapshot operations: snapshot_transfer.go) ----

// Send hands a message to netio, which encodes it before returning.
func (s *stepper) Send(m *codec.Message) { s.n.send(m) }

// SaveHardState hands the hard state to the hard-state saver.
func (s *stepper) SaveHardState(seq uint64, hs core.HardState) {
	// Capacity PersistInflightMax, and the driver keeps at most that many in flight: never blocks.
	s.n.persistCh <- hardStateJob{seq: seq, hardState: encodeHardState(hs)}
}

// Apply hands chosen entries to the apply stage.
func (s *stepper) Apply(chosen []codec.Entry) { s.apply(chosen) }

// InstallSnapshot queues the install of a received, durable snapshot for the apply stage.
func (s *stepper) InstallSnapshot(slot uint64) { s.n.installSnapshot(slot) }

// apply hands chosen entries to the apply stage (in slot order) and to the chosen-value cache.
func (s *stepper) apply(chosen []codec.Entry) {
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
wait:
	for s.d.Inflight() > 0 {
		select {
		case res := <-n.persistDone:
			if res.err != nil {
				break wait
			}
			s.d.Persisted(res.seq, res.part)
		case <-timeout.C:
			n.log.Error("pipeline: stop: WAL writes still running after 10s", "readies", s.d.Inflight())
			break wait
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
	s.dropPending(codec.StatusUnavailable)
	close(n.applyCh)
	close(n.persistCh)
}

// PersistEntries queues a Ready's entries into the WAL as records keyed by slot. AppendAsync
// returns once they are queued (the WAL group-commits everything queued into one fsync and
// completes appends in order), so the step loop goes on at once; it hears of the entries'
// durability on persistDone and the driver restores the order of Readies. Queuing here rather
// than on a goroutine of its own saves a hand-off (a thread wake-up) per Ready on the path
// every Accepted waits for; AppendAsync blocks only while the WAL's queue is full, and the WAL
// writer never waits for this loop (persistDone holds two results per Ready in flight).
func (s *stepper) PersistEntries(seq uint64, entries []codec.Entry) {
	n := s.n
	start := time.Now()
	s.arena, s.recs, s.offsets = s.arena[:0], s.recs[:0], s.offsets[:0]
	for i := range entries {
		s.offsets = append(s.offsets, len(s.arena))
		s.arena = appendEntryPayload(s.arena, &entries[i])
	}
	s.offsets = append(s.offsets, len(s.arena))
	for i := range entries {
		s.recs = append(s.recs, wal.Record{Type: recordEntry, Key: entries[i].Slot,
			Payload: s.arena[s.offsets[i]:s.offsets[i+1]]})
	}
	// done runs on the WAL writer goroutine.
	err := n.wal.AppendAsync(s.recs, func(err error) {
		d := time.Since(start)
		n.latency.persist.record(d)
		n.metrics.persistSeconds.Observe(d.Seconds())
		n.persistDone <- persistResult{seq: seq, part: driver.PartEntries, err: err}
	})
	if err != nil {
		n.persistDone <- persistResult{seq: seq, part: driver.PartEntries, err: err}
	}
}

// runPersist is the hard-state saver: the hard state (rare: a new promise, or the commit
// point every commitSaveInterval) is saved here, in order, so its fsync does not hold up the
// entries of the Readies behind it; saving a Ready's hard state before an earlier Ready's
// entries are durable is safe (the promise only rises, and the commit point covers only
// entries already durable). The step loop hears of each part of each Ready once it is
// durable; the driver restores the order.
func (n *Node) runPersist() {
	defer close(n.persistExit)
	for job := range n.persistCh {
		// persistDone holds two results per Ready in flight: never blocks.
		n.persistDone <- persistResult{seq: job.seq, part: driver.PartHardState, err: n.wal.SaveHardState(job.hardState)}
	}
}
