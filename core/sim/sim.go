package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/core/check"
	"github.com/mpaxos/mpaxos/core/driver"
)

// Violation is a broken invariant: which one, when, and what was seen.
type Violation struct {
	Invariant string
	Tick      int
	Detail    string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("sim: tick %d: invariant %q broken: %s", v.Tick, v.Invariant, v.Detail)
}

// Result summarises a run that kept every invariant.
type Result struct {
	Chosen        int // slots chosen
	Proposed      int // distinct client commands submitted
	Applied       int // commands applied (first application anywhere)
	Duplicates    int // commands the sessions table answered as retries
	Crashes       int
	QuickRestarts int // crashes restarted within two ticks
	Snapshots     int // snapshots received from a peer and installed
	// TransfersAbandoned: snapshot transfers the driver gave up (silence, a failed write or
	// finish); SnapshotFaults: writes and finishes the disk failed or damaged; InstallCrashes:
	// crashes during an install or between a received snapshot's finish and its install.
	TransfersAbandoned int
	SnapshotFaults     int
	InstallCrashes     int
	Partitions         int
	Pauses             int
	Stalls             int // disk stalls
	Messages           int // messages delivered
	LongDelays         int // messages held in the long-delay tail
	Compressed         int // frames that crossed the network S2-compressed
	LivenessTicks      int // ticks after faults stopped until everything pending was chosen everywhere
	Overlapped         int // Readies taken while an earlier one was still persisting
	LeaderChanges      int // times the set of (leader, ballot) pairs changed
}

// node is one simulated replica: its core and the driver that handles its Readies, its disk,
// its state machine and its clock.
type node struct {
	id        uint32
	cfg       core.Config
	driverCfg driver.Config
	r         *core.Replica  // nil while crashed
	driver    *driver.Driver // drives r; nil while crashed

	disk     disk
	lastSync disk         // LyingDisk: the disk before the last synced write
	state    stateMachine // volatile: rebuilt from the disk's newest snapshot on restart

	// The disk's operations in flight (effects.go), lost in a crash but for what crashDisk
	// keeps. A synced write takes [persistTicksMin, persistTicksMax] ticks.
	entryWrites     []persistWrite
	hardStateWrites []persistWrite
	snapshotOps     []snapshotOperation
	earlyReports    []persistReport // planted: reported before the disk holds them
	temp            *tempFile       // the received transfer's temporary file
	persistSeq      uint64          // the last Ready a persist was asked for (Result.Overlapped)
	persistTicksMin int
	persistTicksMax int
	// crashing: an effect decided that the replica crashes inside the driver call under way;
	// every later effect of it is a no-op, and the crash is carried out once it returns.
	crashing bool

	plantStorageOffByOne bool

	encoder  *codec.Encoder // this replica's outgoing frames
	compress bool           // its encoder S2-compresses (drawn per replica)
	decoder  *codec.Decoder // this replica's incoming frames

	lives       int // restarts + 1
	downTill    int // crashed: restarts at this tick
	pausedTill  int // paused (no tick, no step, no persist) until this tick
	stalledTill int // disk stalled (no persist completes) until this tick
	clockRate   int // percent of world ticks this replica's clock runs at
	clock       int // accumulated clock, in percent of a tick

	vouched  codec.Ballot // highest ballot a sent Promise or Accepted vouched for
	promised codec.Ballot // last promised ballot seen in this life
}

func (n *node) live() bool { return n.r != nil }

// running: live and not paused, so it ticks, steps and persists.
func (n *node) running(now int) bool { return n.r != nil && now >= n.pausedTill }

type world struct {
	opts    Options
	rng     *rand.Rand
	now     int
	nodes   []*node
	history *check.History

	network []envelope
	// chunkAt[from-1][to-1]: the delivery tick of the last snapshot chunk sent on the link
	// (chunks keep their order per link); chunkSeq numbers them; chunkPlaces and chunks are
	// deliver's scratch.
	chunkAt     [][]int
	chunkSeq    uint64
	chunkPlaces []int
	chunks      []envelope
	cut         [][]bool // cut[from-1][to-1]: messages from -> to are lost (a partition)
	healAt      int      // the current partition heals at this tick (0: none)

	global   [][]byte        // the chosen log, as first applied anywhere
	proposed map[string]bool // every slot value (batch) a client handed to a leader
	clients  []*client
	answers  map[commandKey]position // the position every applied command was answered with
	leaders  []codec.Ballot          // the (leader, ballot) pairs of the previous tick
	frame    []byte                  // scratch for round-trip checks
	res      Result
}

// Run simulates one cluster for opts.FaultTicks ticks of faults, then without faults until it
// converges within the liveness bound (runQuiet), checking every invariant after every step. It returns a *Violation for the first one broken.
func Run(opts Options) (res Result, err error) {
	w := newWorld(opts)
	err = w.guard(func() {
		for w.now = 0; w.now < opts.FaultTicks; w.now++ {
			w.faults()
			w.tick(true)
		}
		w.runQuiet()
	})
	w.res.Chosen = len(w.global)
	return w.res, err
}

// runQuiet stops every fault and runs until every pending command is chosen and applied
// everywhere, within the liveness bound: QuietTicks, plus the time the snapshot transfers
// still needed take at the drawn chunk size and window (transferTicks), which no number of
// election timeouts covers (a transfer of 128-byte chunks one at a time is a round trip per
// chunk).
func (w *world) runQuiet() {
	w.quiet()
	start := w.now
	transfers := w.transferTicks() + w.catchUpTicks()
	for ; w.now < start+w.opts.QuietTicks+transfers; w.now++ {
		w.tick(false)
		if w.converged() {
			w.res.LivenessTicks = w.now - start
			return
		}
	}
	w.fail("liveness", "%d ticks after faults stopped (QuietTicks %d + %d for snapshot transfers and catch-up): %d commands pending, applied %v of %d chosen, status %v, drivers %v",
		w.now-start, w.opts.QuietTicks, transfers, w.pendingCount(), w.appliedLens(), len(w.global), w.statuses(), w.driverStatuses())
}

// guard runs f, turning a Violation panic (or any panic from core) into an error.
func (w *world) guard(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if v, ok := p.(*Violation); ok {
				err = v
				return
			}
			err = &Violation{Invariant: "core panicked", Tick: w.now, Detail: fmt.Sprint(p)}
		}
	}()
	f()
	return nil
}

func (w *world) fail(invariant, format string, args ...any) {
	panic(&Violation{Invariant: invariant, Tick: w.now, Detail: fmt.Sprintf(format, args...)})
}

// must turns a check.Violation into the run's failure.
func (w *world) must(err error) {
	if err == nil {
		return
	}
	if v, ok := err.(*check.Violation); ok {
		panic(&Violation{Invariant: v.Invariant, Tick: w.now, Detail: v.Detail})
	}
	w.fail("checker", "%v", err)
}

func newWorld(opts Options) *world {
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	w := &world{
		opts:     opts,
		rng:      rand.New(rand.NewPCG(opts.Seed, 0x6d706178)),
		history:  check.New(opts.Replicas),
		proposed: map[string]bool{},
		answers:  map[commandKey]position{},
	}
	w.cut = make([][]bool, opts.Replicas)
	w.chunkAt = make([][]int, opts.Replicas)
	for i := range w.cut {
		w.cut[i] = make([]bool, opts.Replicas)
		w.chunkAt[i] = make([]int, opts.Replicas)
	}
	peers := make([]uint32, opts.Replicas)
	for i := range peers {
		peers[i] = uint32(i + 1)
	}
	sessionSeqsMax := opts.ClientInflightMax + 1 + w.rng.IntN(64)
	for _, id := range peers {
		cfg := core.DefaultConfig(id, peers)
		cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.RetransmitTicks = opts.ElectionTicks, opts.HeartbeatTicks, opts.RetransmitTicks
		cfg.Window = 1 + w.rng.IntN(6)
		cfg.ValueBytesMax, cfg.InflightBytesMax = valueBytesMax, valueBytesMax*cfg.Window
		cfg.CatchUpSlotsMax, cfg.CatchUpBytesMax = 1+w.rng.IntN(8), 2*valueBytesMax
		cfg.RetainSlots = w.rng.IntN(8)
		cfg.RetainBytesMax = w.rng.IntN(4 * valueBytesMax) // 0: slots only
		cfg.Rand = rand.New(rand.NewPCG(opts.Seed, uint64(id)))
		cfg.StepValuesOwned = w.rng.IntN(2) == 0 // then deliver does not scribble over its messages
		if opts.Config != nil {
			opts.Config(&cfg)
		}
		n := &node{id: id, cfg: cfg, plantStorageOffByOne: opts.Plant == PlantStorageOffByOne}
		n.disk = newDisk()
		n.lastSync = newDisk()
		w.driverConfig(n)
		n.state.sessionsClientsMax = opts.Clients + 1 // no eviction: a retry is never applied twice
		n.state.sessionSeqsMax = sessionSeqsMax
		n.compress = w.rng.IntN(100) < opts.CompressPercent
		n.encoder = codec.NewEncoder(n.compress, compressThresholdMin+w.rng.IntN(compressThresholdMin))
		n.decoder = codec.NewDecoder(codec.DefaultLimits())
		skew := opts.TickSkewPercent
		n.clockRate = 100 - skew + w.rng.IntN(2*skew+1)
		w.nodes = append(w.nodes, n)
		w.restart(n)
	}
	for i := range opts.Clients {
		w.clients = append(w.clients, &client{id: uint64(i + 1), next: 1})
	}
	return w
}

// valueBytesMax bounds one slot value in the simulator: a batch of a few commands.
const valueBytesMax = 512

// compressThresholdMin: a replica that compresses does so from a body of
// [compressThresholdMin, 2*compressThresholdMin) bytes, so small Accepts get compressed too.
const compressThresholdMin = 48

// disk is what survives a crash: the hard-state file, the WAL's latest entry per slot, and
// the snapshot files (ordered by slot, at most snapshotFilesMax).
type disk struct {
	hardState core.HardState
	entries   map[uint64]codec.Entry
	snapshots []snapshotFile
}

func newDisk() disk { return disk{entries: map[uint64]codec.Entry{}} }

func (d *disk) clone() disk {
	c := *d
	c.entries = make(map[uint64]codec.Entry, len(d.entries))
	for s, e := range d.entries {
		c.entries[s] = e
	}
	c.snapshots = slices.Clone(d.snapshots) // a file's bytes never change once durable
	return c
}

// restart brings n up from its disk alone, as pipeline.Start does: the state machine from the
// newest snapshot file (a received one not yet installed included), core from it, the WAL's
// entries and the hard state, and a new driver.
func (w *world) restart(n *node) {
	if n.lives++; n.lives > 1 {
		w.history.Restart(n.id)
	}
	n.state.restore(snapshot{})
	var snap uint64
	if file := n.disk.newestSnapshot(); file != nil {
		snap = file.slot
		w.restoreSnapshot(n, file)
	}
	p := core.Persisted{HardState: n.disk.hardState, SnapshotSlot: snap, Applied: snap}
	p.HardState.Commit = max(p.HardState.Commit, snap)
	for _, s := range sortedSlots(n.disk.entries) {
		p.Entries = append(p.Entries, n.disk.entries[s])
	}
	r, err := core.New(n.cfg, p, n)
	if err != nil {
		w.fail("restart from persisted state", "replica %d: %v", n.id, err)
	}
	n.r = r
	w.newDriver(n)
	if st := r.Status(); st.Promised.Less(n.vouched) {
		w.fail("promised never goes down", "replica %d restarted with promised %v below %v it vouched for",
			n.id, st.Promised, n.vouched)
	}
	n.promised = r.Status().Promised
	n.pausedTill = 0
}

func sortedSlots(m map[uint64]codec.Entry) []uint64 {
	slots := make([]uint64, 0, len(m))
	for s := range m {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots
}

// tick runs one world tick: every running replica's clock moves (by its own rate, ticking
// core and the driver), due messages arrive in random order, clients submit and retry, and
// every replica's disk and driver move on. Then the checks that look at the whole cluster.
func (w *world) tick(load bool) {
	for _, n := range w.nodes {
		if !n.running(w.now) {
			continue
		}
		jitter := 0
		if j := w.opts.TickJitterPercent; j > 0 {
			jitter = w.rng.IntN(2*j+1) - j
		}
		n.clock += max(n.clockRate+jitter, 0)
		for ; n.clock >= 100; n.clock -= 100 {
			n.driver.Tick()
			w.checkPromised(n)
		}
	}
	w.deliver()
	w.submit(load)
	for _, n := range w.nodes {
		w.drive(n)
	}
	w.checkLeaders()
}

// quiet ends every fault: partitions heal, crashed replicas restart, paused ones resume,
// stalled disks complete, the network stops losing, duplicating and holding messages, and
// snapshot files are written, verified and installed without failing.
func (w *world) quiet() {
	w.opts.SnapshotWriteFailPercent, w.opts.SnapshotCorruptPercent, w.opts.SnapshotFinishFailPercent = 0, 0, 0
	w.opts.InstallCrashPercent, w.opts.FinishCrashPercent = 0, 0
	w.heal()
	for _, n := range w.nodes {
		if !n.live() {
			w.restart(n)
		}
		n.pausedTill, n.stalledTill = 0, 0
	}
	w.opts.DropPercent, w.opts.DuplicatePercent, w.opts.LongDelayPerMille = 0, 0, 0
	for _, c := range w.clients {
		for _, cmd := range c.pending {
			cmd.retryAt = w.now
		}
	}
}

func (w *world) converged() bool {
	if w.pendingCount() > 0 {
		return false
	}
	for _, n := range w.nodes {
		if len(n.state.values) != len(w.global) {
			return false
		}
	}
	return true
}

func (w *world) appliedLens() []int {
	var l []int
	for _, n := range w.nodes {
		l = append(l, len(n.state.values))
	}
	return l
}

func (w *world) statuses() []core.Status {
	var s []core.Status
	for _, n := range w.nodes {
		if n.live() {
			s = append(s, n.r.Status())
		}
	}
	return s
}

// driverStatuses describes every live replica's driver and snapshot files, for a Violation.
func (w *world) driverStatuses() []string {
	var s []string
	for _, n := range w.nodes {
		if n.live() {
			s = append(s, fmt.Sprintf("%d: %+v wanted %d files %v; disk queues: %s", n.id, n.driver.Status(),
				n.r.SnapshotWanted(), n.disk.snapshotSlots(), n.queues()))
		}
	}
	return s
}

// leaderOf returns the replica that leads in the highest ballot now (0 if none).
func (w *world) leaderOf() uint32 {
	var best codec.Ballot
	var id uint32
	for _, n := range w.nodes {
		if n.live() {
			if st := n.r.Status(); st.IsLeader && best.Less(st.Ballot) {
				best, id = st.Ballot, n.id
			}
		}
	}
	return id
}
