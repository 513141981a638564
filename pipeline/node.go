package pipeline

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaxos/mpaxos/batching"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/netio"
	"github.com/mpaxos/mpaxos/wal"
)

// Errors returned by Start and Stop.
var (
	// ErrWAL wraps failures to open, recover or write the write-ahead log (an unreadable data
	// dir, a corrupt log, a directory locked by another replica).
	ErrWAL = errors.New("pipeline: write-ahead log")
	// ErrListen wraps failures to bind the replica's or the admin address.
	ErrListen = errors.New("pipeline: cannot listen")
	// ErrStopped: Stop was called twice, or the node stopped after a fatal error.
	ErrStopped = errors.New("pipeline: stopped")
)

// cmdKey identifies a client command for exactly-once and for finding who waits for it.
type cmdKey struct{ client, seq uint64 }

// Node is one running replica: see the package doc for its stages.
type Node struct {
	cfg     Config
	log     *slog.Logger
	wal     *wal.WAL
	net     *netio.Server
	replica *core.Replica // owned by the step goroutine
	stepper *stepper      // the step goroutine's state: core's driver and its effects
	batcher *batching.Batcher
	ring    *chosenRing
	admin   *http.Server
	adminLn net.Listener

	peerCh      chan codec.Message
	kick        chan struct{} // ingest -> step: the batcher has work
	persistCh   chan hardStateJob
	persistDone chan persistResult
	applyCh     chan applyJob
	stop        chan struct{}
	stepDone    chan struct{}
	applyDone   chan struct{}
	persistExit chan struct{}
	// diskReads: reads over the wire whose slot only the WAL holds, for the disk reader
	// (reads.go); sent by the apply goroutine only, which closes it when it ends.
	diskReads           chan pendingRead
	diskReadsDone       chan struct{}
	diskReadsOverloaded atomic.Uint64 // answered StatusOverloaded: the queue was full
	fatal               chan error    // a stage failed (the WAL): the node must stop
	stopOnce            sync.Once

	// Shared between the step loop (writer) and ingest (readers).
	isLeader atomic.Bool
	leaderID atomic.Uint32
	stopping atomic.Bool
	inflight atomic.Int64

	// waitMu guards who waits for which command, and the client connections paused for
	// backpressure. Lock order: waitMu before the batcher's lock.
	waitMu      sync.Mutex
	waiters     *waiterTable
	paused      []*netio.ClientConn
	pausedCount atomic.Int32

	applied atomic.Pointer[AppliedState]

	latency stageLatencies
	metrics *metrics

	embedState // embed_apply.go: offset index, snapshots, snapshot transfer
}

// Start opens the WAL, recovers, starts the network, the admin server and the stages, and
// returns the running Node. Errors name what failed (ErrWAL, ErrListen, ErrInvalidConfig).
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	netLogger := logger // netio labels its lines with the replica itself
	logger = logger.With("replica", cfg.ID)
	r := cfg.Rand
	if r == nil {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		r = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:]), binary.LittleEndian.Uint64(seed[8:])))
	}
	batcher, err := batching.New(cfg.Batching)
	if err != nil {
		return nil, fmt.Errorf("pipeline: Config.Batching: %w: %w", err, ErrInvalidConfig)
	}
	n := &Node{
		cfg:           cfg,
		log:           logger,
		batcher:       batcher,
		ring:          newChosenRing(cfg.CacheBytesMax, cfg.CacheColdBytesMax),
		peerCh:        make(chan codec.Message, cfg.PeerQueueMax),
		kick:          make(chan struct{}, 1),
		persistCh:     make(chan hardStateJob, cfg.PersistInflightMax),
		persistDone:   make(chan persistResult, 2*cfg.PersistInflightMax), // entries + hard state per Ready
		applyCh:       make(chan applyJob, cfg.ApplyQueueMax),
		stop:          make(chan struct{}),
		stepDone:      make(chan struct{}),
		applyDone:     make(chan struct{}),
		persistExit:   make(chan struct{}),
		diskReads:     make(chan pendingRead, cfg.DiskReadQueueMax),
		diskReadsDone: make(chan struct{}),
		fatal:         make(chan error, 1),
		waiters:       newWaiterTable(1024),
		latency:       newStageLatencies(),
	}
	n.applied.Store(&AppliedState{})

	opts := cfg.walOptions(logger)
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline: %w: %w", err, ErrInvalidConfig)
	}
	if n.wal, err = wal.Open(opts); err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrWAL, cfg.DataDir, err)
	}
	persisted, err := recoverPersisted(n.wal)
	if err != nil {
		_ = n.wal.Close()
		return nil, fmt.Errorf("%w: recover %s: %w", ErrWAL, cfg.DataDir, err)
	}
	if err := n.startEmbed(&persisted); err != nil {
		_ = n.wal.Close()
		return nil, fmt.Errorf("pipeline: load snapshot from %s: %w", cfg.DataDir, err)
	}
	if n.replica, err = core.New(cfg.coreConfig(r), persisted, n.coreStorage(n.ring)); err != nil {
		_ = n.wal.Close()
		var refused *core.PersistedStateError
		if errors.As(err, &refused) {
			if where, ok := n.wal.Locate(refused.Slot); ok {
				err = fmt.Errorf("%w (slot %d's latest record: %s)", err, refused.Slot, where)
			}
		}
		return nil, fmt.Errorf("pipeline: start core from %s: %w", cfg.DataDir, err)
	}
	if n.stepper, err = newStepper(n); err != nil {
		_ = n.wal.Close()
		return nil, err
	}
	if n.net, err = netio.NewServer(cfg.networkConfig(netLogger), n); err != nil {
		_ = n.wal.Close()
		return nil, fmt.Errorf("pipeline: Config.Network: %w", err)
	}
	n.metrics = newMetrics(n)
	if cfg.AdminAddr != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			_ = n.wal.Close()
			return nil, fmt.Errorf("%w: admin address %s: %w", ErrListen, cfg.AdminAddr, err)
		}
	}
	if err := n.net.Start(); err != nil {
		_ = n.wal.Close()
		if n.adminLn != nil {
			_ = n.adminLn.Close()
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrListen, cfg.listenAddr(), err)
	}
	if n.adminLn != nil {
		n.admin = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = n.admin.Serve(n.adminLn) }()
	}
	n.log.Info("pipeline: recovered", "entries", len(persisted.Entries),
		"commit", persisted.HardState.Commit, "promised", persisted.HardState.Promised)
	go pprof.Do(context.Background(), pprof.Labels("stage", "hardstate"), func(context.Context) { n.runPersist() })
	go pprof.Do(context.Background(), pprof.Labels("stage", "apply"), func(context.Context) { n.runApply() })
	go pprof.Do(context.Background(), pprof.Labels("stage", "disk-reads"), func(context.Context) { n.runDiskReads() })
	go pprof.Do(context.Background(), pprof.Labels("stage", "step"), func(context.Context) { n.runStep() })
	n.startEmbedStages()
	return n, nil
}

// Addr is the address the replica serves on (resolved if it was bound to port 0).
func (n *Node) Addr() string { return n.net.Addr() }

// AdminAddr is the admin server's address, "" if none.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// ID is the replica's id.
func (n *Node) ID() uint32 { return n.cfg.ID }

// Status is a snapshot for tests and the admin server.
type Status struct {
	ID       uint32 `json:"id"`
	Leader   uint32 `json:"leader"`
	IsLeader bool   `json:"is_leader"`
	Inflight int64  `json:"inflight"`
	Pending  int    `json:"pending_requests"`
}

// Status returns what the step loop last published.
func (n *Node) Status() Status {
	return Status{ID: n.cfg.ID, Leader: n.leaderID.Load(), IsLeader: n.isLeader.Load(),
		Inflight: n.inflight.Load(), Pending: n.pendingRequests()}
}

// AppliedState summarises the applied log: every slot below Slot is applied, Commands
// commands in it, and Digest is a rolling FNV-1a hash of every applied (slot, index,
// client id, seq, payload) in order. Two replicas with equal Slot and Digest applied the same
// log.
type AppliedState struct {
	Slot       uint64 `json:"slot"`
	Commands   uint64 `json:"commands"`
	Duplicates uint64 `json:"duplicates"` // commands whose (client id, seq) was applied before
	Digest     uint64 `json:"digest"`
	// Offset is the number of commands applied (the next dense offset): Commands without
	// duplicates, abandoned or refused commands and empty markers.
	Offset uint64 `json:"offset"`
}

// Applied returns the apply stage's position.
func (n *Node) Applied() AppliedState { return *n.applied.Load() }

func (n *Node) pendingRequests() int {
	n.waitMu.Lock()
	defer n.waitMu.Unlock()
	return n.waiters.len()
}

// Done is closed once the node stopped, by Stop or after a fatal error (see Err).
func (n *Node) Done() <-chan struct{} { return n.stepDone }

// Err returns the fatal error that stopped the node, if any.
func (n *Node) Err() error {
	select {
	case err := <-n.fatal:
		n.fatal <- err
		return err
	default:
		return nil
	}
}

// Stop shuts the replica down: it stops taking requests, answers every pending request with
// StatusShutdown (ambiguous: retry with the same seq), waits for the WAL write in progress,
// stops the network and closes the WAL. ctx bounds the wait.
func (n *Node) Stop(ctx context.Context) error {
	first := false
	n.stopOnce.Do(func() { first = true })
	if !first {
		return ErrStopped
	}
	n.stopping.Store(true)
	close(n.stop)
	var errs []error
	select {
	case <-n.stepDone:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("pipeline: stop: step loop: %w", ctx.Err()))
	}
	select {
	case <-n.applyDone:
	case <-ctx.Done():
	}
	select {
	case <-n.diskReadsDone:
	case <-ctx.Done():
	}
	n.stopEmbedStages()
	// Give the event loops a moment to write the shutdown answers before closing sockets.
	flush := time.NewTimer(50 * time.Millisecond)
	select {
	case <-flush.C:
	case <-ctx.Done():
	}
	flush.Stop()
	if err := n.net.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	select {
	case <-n.persistExit:
	case <-ctx.Done():
	}
	if err := n.wal.Close(); err != nil && !errors.Is(err, wal.ErrClosed) {
		errs = append(errs, fmt.Errorf("%w: close: %w", ErrWAL, err))
	}
	if n.admin != nil {
		_ = n.admin.Close()
	}
	n.ring.close()
	if err := n.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ---- ingest: netio.Handler, on the event-loop goroutines ----

// HandlePeer copies m (its slices alias netio's buffer) onto the step loop's queue; when
// the queue is full the message is dropped and counted (Paxos retransmits; a snapshot
// receiver asks again). Snapshot chunks go there too: core's driver, on the step loop, runs
// the transfer.
func (n *Node) HandlePeer(m *codec.Message) {
	cp := copyMessage(m)
	select {
	case n.peerCh <- cp:
	default:
		n.metrics.peerDrops.Inc()
	}
}

// HandleRequests takes requests into the batcher when this replica leads, and redirects
// them otherwise. It takes fewer than offered when the batcher or the pending-request bound
// is full; the connection is resumed once room frees (backpressure).
func (n *Node) HandleRequests(c *netio.ClientConn, reqs []codec.Request) int {
	if n.stopping.Load() {
		n.answerAll(c, reqs, codec.StatusShutdown)
		return len(reqs)
	}
	if !n.isLeader.Load() {
		n.redirectAll(c, reqs)
		return len(reqs)
	}
	var refused []codec.Response
	taken := 0
	n.waitMu.Lock()
	for i := range reqs {
		r := &reqs[i]
		if r.Read == codec.ReadAt {
			if resp, ok := n.readAppliedNow(r); ok {
				refused = append(refused, resp) // answered at once, from memory
				taken++
				continue
			}
		}
		if !n.batcher.Fits(len(r.Payload)) {
			refused = append(refused, codec.Response{ClientID: r.ClientID, Seq: r.Seq, Status: codec.StatusTooLarge})
			taken++
			continue
		}
		if n.waiters.len() >= n.cfg.PendingRequestsMax {
			break
		}
		if r.SeqFloor > r.Seq || r.Seq-r.SeqFloor >= uint64(n.cfg.SessionSeqsMax) {
			// The apply stage would refuse it (core.SessionRefused): answer now, spend no slot.
			refused = append(refused, codec.Response{ClientID: r.ClientID, Seq: r.Seq, Status: codec.StatusInvalid, Read: r.Read})
			taken++
			continue
		}
		// A read is proposed as an empty marker command (reads.go): its answer is the log as
		// it stands where the marker is chosen.
		if err := n.batcher.Add(r.ClientID, r.Seq, r.SeqFloor, r.Payload); err != nil {
			break // ErrFull: pause the connection
		}
		q := readQuery{mode: r.Read, offset: r.Offset}
		if old := n.waiters.put(cmdKey{r.ClientID, r.Seq}, c, q); old != nil {
			// The same command again while the first copy is pending (a retry on a new
			// connection): the old waiter gets an ambiguous answer, the new one the result.
			old.Respond([]codec.Response{{ClientID: r.ClientID, Seq: r.Seq, Status: codec.StatusUnavailable, Read: r.Read}})
		}
		taken++
	}
	if taken < len(reqs) {
		n.paused = append(n.paused, c)
		n.pausedCount.Store(int32(len(n.paused)))
	}
	n.waitMu.Unlock()
	if len(refused) > 0 {
		c.Respond(refused)
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
	return taken
}

// ClientClosed: answers to a closed connection are dropped by netio; its waiters are
// removed as their commands are applied or failed.
func (n *Node) ClientClosed(*netio.ClientConn) {}

func (n *Node) answerAll(c *netio.ClientConn, reqs []codec.Request, st codec.Status) {
	rs := make([]codec.Response, len(reqs))
	for i := range reqs {
		rs[i] = codec.Response{ClientID: reqs[i].ClientID, Seq: reqs[i].Seq, Status: st, Read: reqs[i].Read}
	}
	c.Respond(rs)
}

func (n *Node) redirectAll(c *netio.ClientConn, reqs []codec.Request) {
	leader := n.leaderID.Load()
	addr := ""
	if leader != 0 && leader != n.cfg.ID {
		addr = n.cfg.Peers[leader]
	}
	for i := range reqs {
		c.Redirect(&codec.Redirect{ClientID: reqs[i].ClientID, Seq: reqs[i].Seq, LeaderID: leader, LeaderAddr: addr})
	}
}

// resumePaused resumes the connections paused for backpressure once there is room again.
func (n *Node) resumePaused() {
	if n.pausedCount.Load() == 0 {
		return
	}
	n.waitMu.Lock()
	defer n.waitMu.Unlock()
	if n.waiters.len() >= n.cfg.PendingRequestsMax || !n.batcher.Room(0) {
		return
	}
	for i, c := range n.paused {
		c.Resume()
		n.paused[i] = nil
	}
	n.paused = n.paused[:0]
	n.pausedCount.Store(0)
}

// copyMessage deep-copies m into memory the step loop owns: one allocation for every byte
// slice, one for Values, one for Entries.
func copyMessage(m *codec.Message) codec.Message {
	cp := *m
	size := len(m.Data)
	for _, v := range m.Values {
		size += len(v)
	}
	for i := range m.Entries {
		size += len(m.Entries[i].Value)
	}
	var arena []byte
	if size > 0 {
		arena = make([]byte, 0, size)
	}
	take := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		start := len(arena)
		arena = append(arena, b...)
		return arena[start:len(arena):len(arena)]
	}
	cp.Data = take(m.Data)
	if m.Values != nil {
		cp.Values = make([][]byte, len(m.Values))
		for i, v := range m.Values {
			cp.Values[i] = take(v)
		}
	}
	if m.Entries != nil {
		cp.Entries = make([]codec.Entry, len(m.Entries))
		for i, e := range m.Entries {
			cp.Entries[i] = codec.Entry{Slot: e.Slot, Ballot: e.Ballot, Value: take(e.Value)}
		}
	}
	return cp
}
