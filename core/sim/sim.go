package sim

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// Options shape one simulated run. Every random choice derives from Seed.
type Options struct {
	Seed     uint64
	Replicas int

	FaultTicks int // ticks with faults and client load
	QuietTicks int // then: faults stop; every pending proposal must be chosen within this bound

	DropPercent      int // a message is lost
	DuplicatePercent int // a message is delivered twice
	DelayTicksMax    int // a message takes [0, DelayTicksMax] ticks (reordering follows)
	PersistTicksMax  int // a Ready's persist takes [0, PersistTicksMax] ticks
	// PersistsInflightMax: each replica keeps up to [1, PersistsInflightMax] (drawn per replica)
	// Readies persisting at once, completed in order (the pipeline's asynchronous WAL writes).
	PersistsInflightMax int
	CrashPerMille       int // per replica per tick
	DownTicksMax        int // a crashed replica restarts after [1, DownTicksMax] ticks
	PartitionPerMille   int // per tick, a new random partition (heals after [1, PartitionTicksMax])
	PartitionTicksMax   int
	CampaignPerMille    int // per replica per tick, a replica starts phase 1 unprompted (duels)
	CompactPerMille     int // per replica per tick, the application snapshots and compacts
	ProposePercent      int // per tick, a client submits a new value
	PendingMax          int // clients stop submitting while this many values are unanswered

	// LyingDisk makes a crash also lose the last persisted Ready that wrote anything (a disk
	// that acknowledged a sync it did not do). Only for testing that the simulator catches broken durability.
	LyingDisk bool

	// Config adjusts each replica's core.Config (after the simulator's defaults).
	Config func(*core.Config)
}

// DefaultOptions returns the fault mix the default test runs use.
func DefaultOptions(seed uint64, replicas int) Options {
	return Options{
		Seed: seed, Replicas: replicas,
		FaultTicks: 300, QuietTicks: 400, // liveness bound: 40 election timeouts
		DropPercent: 5, DuplicatePercent: 3, DelayTicksMax: 3, PersistTicksMax: 2,
		PersistsInflightMax: 4,
		CrashPerMille:       4, DownTicksMax: 30,
		PartitionPerMille: 8, PartitionTicksMax: 40,
		CampaignPerMille: 3, CompactPerMille: 5,
		ProposePercent: 40, PendingMax: 16,
	}
}

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
	Proposed      int // distinct values submitted
	Crashes       int
	Snapshots     int // snapshots transferred to lagging replicas
	Partitions    int
	Messages      int // messages delivered
	LivenessTicks int // ticks after faults stopped until everything pending was chosen everywhere
	Overlapped    int // Readies taken while an earlier one was still persisting
}

type envelope struct {
	m  codec.Message
	at int
}

type disk struct {
	hardState core.HardState
	entries   map[uint64]codec.Entry
	snapshot  [][]byte // the application's snapshot: the values of every slot < len(snapshot)
}

type persistJob struct {
	rd      core.Ready
	doneAt  int
	applied bool // Chosen was applied when the Ready was taken
}

type node struct {
	id          uint32
	lastSync    disk // LyingDisk: the disk before the last persist
	cfg         core.Config
	r           *core.Replica // nil while crashed
	disk        disk
	jobs        []*persistJob // persists in flight, completed in order
	persistsMax int           // most persists in flight at once (1 = one Ready at a time)
	applyEarly  bool          // apply Chosen when the Ready is taken, not after its persist
	applied     [][]byte      // the state machine: values applied in slot order (volatile)
	downTill    int
	incoming    [][]byte     // a snapshot fetched from a peer, until Ready.SnapshotSlot installs it
	vouched     codec.Ballot // highest ballot a sent Promise or Accepted vouched for
	promised    codec.Ballot // last promised ballot seen in this life
}

// Chosen serves catch-up from the state machine's applied values (they were handed out as
// chosen), like the pipeline's slot cache.
func (n *node) Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	size := 0
	for s := from; s < uint64(len(n.applied)) && maxSlots > 0; s++ {
		v := n.applied[s]
		if len(dst) > 0 && size+len(v) > maxBytes {
			break
		}
		dst = append(dst, v)
		size += len(v)
		maxSlots--
	}
	return dst, nil
}

type world struct {
	opts          Options
	rng           *rand.Rand
	now           int
	nodes         []*node
	network       []envelope
	group         map[uint32]int // partition group per replica; equal groups can talk
	healAt        int
	global        [][]byte        // the chosen log, as first applied anywhere
	proposed      map[string]bool // every value any client submitted
	pending       []pendingValue  // submitted, not yet seen chosen
	clientSeq     uint64
	commitChecked uint64 // every slot below it was durable on a majority when first committed
	res           Result
}

type pendingValue struct {
	value   []byte
	retryAt int
}

// Run simulates one cluster for opts.FaultTicks + opts.QuietTicks ticks, checking every
// invariant after every step. It returns a *Violation for the first one broken.
func Run(opts Options) (res Result, err error) {
	w := &world{
		opts:     opts,
		rng:      rand.New(rand.NewPCG(opts.Seed, 0x6d706178)),
		group:    map[uint32]int{},
		proposed: map[string]bool{},
	}
	defer func() {
		if p := recover(); p != nil {
			if v, ok := p.(*Violation); ok {
				err = v
				return
			}
			err = &Violation{Invariant: "core panicked", Tick: w.now, Detail: fmt.Sprint(p)}
		}
	}()
	w.start()
	for w.now = 0; w.now < opts.FaultTicks; w.now++ {
		w.faults()
		w.step(true)
	}
	w.quiet()
	for ; w.now < opts.FaultTicks+opts.QuietTicks; w.now++ {
		w.step(false)
		if debugHook != nil {
			debugHook(w)
		}
		if w.converged() {
			w.res.LivenessTicks = w.now - opts.FaultTicks
			w.res.Chosen = len(w.global)
			return w.res, nil
		}
	}
	w.fail("liveness", "%d ticks after faults stopped: %d values pending, applied %v of %d chosen, status %v",
		opts.QuietTicks, len(w.pending), w.appliedLens(), len(w.global), w.statuses())
	return w.res, nil
}

func (w *world) fail(invariant, format string, args ...any) {
	panic(&Violation{Invariant: invariant, Tick: w.now, Detail: fmt.Sprintf(format, args...)})
}

func (w *world) start() {
	peers := make([]uint32, w.opts.Replicas)
	for i := range peers {
		peers[i] = uint32(i + 1)
	}
	for _, id := range peers {
		cfg := core.DefaultConfig(id, peers)
		cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.RetransmitTicks = 10, 2, 5
		cfg.Window = 1 + w.rng.IntN(6)
		cfg.ValueBytesMax, cfg.InflightBytesMax = 256, 256*cfg.Window
		cfg.CatchUpSlotsMax, cfg.CatchUpBytesMax = 1+w.rng.IntN(8), 512
		cfg.RetainSlots = w.rng.IntN(8)
		cfg.RetainBytesMax = w.rng.IntN(1024) // 0: slots only
		cfg.Rand = rand.New(rand.NewPCG(w.opts.Seed, uint64(id)))
		cfg.StepValuesOwned = w.rng.IntN(2) == 0 // then deliver does not scribble over its messages
		if w.opts.Config != nil {
			w.opts.Config(&cfg)
		}
		n := &node{id: id, cfg: cfg, disk: disk{entries: map[uint64]codec.Entry{}}, lastSync: disk{entries: map[uint64]codec.Entry{}}}
		n.persistsMax = 1 + w.rng.IntN(max(w.opts.PersistsInflightMax, 1))
		n.applyEarly = w.rng.IntN(2) == 0
		w.nodes = append(w.nodes, n)
		w.restart(n)
	}
}

func (w *world) restart(n *node) {
	snap := uint64(len(n.disk.snapshot))
	p := core.Persisted{HardState: n.disk.hardState, SnapshotSlot: snap, Applied: snap}
	for _, s := range sortedSlots(n.disk.entries) {
		p.Entries = append(p.Entries, n.disk.entries[s])
	}
	n.applied, n.jobs, n.incoming = slices.Clone(n.disk.snapshot), nil, nil
	r, err := core.New(n.cfg, p, n)
	if err != nil {
		w.fail("restart from persisted state", "replica %d: %v", n.id, err)
	}
	n.r = r
	if st := r.Status(); st.Promised.Less(n.vouched) {
		w.fail("promised never goes down", "replica %d restarted with promised %v below %v it vouched for",
			n.id, st.Promised, n.vouched)
	}
	n.promised = r.Status().Promised
}

func sortedSlots(m map[uint64]codec.Entry) []uint64 {
	slots := make([]uint64, 0, len(m))
	for s := range m {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots
}

// faults crashes and restarts replicas and starts and heals partitions.
func (w *world) faults() {
	for _, n := range w.nodes {
		if n.r != nil && w.rng.IntN(1000) < w.opts.CampaignPerMille {
			n.r.Campaign()
		}
		if n.r != nil && w.rng.IntN(1000) < w.opts.CompactPerMille {
			w.compact(n)
		}
		switch {
		case n.r != nil && w.rng.IntN(1000) < w.opts.CrashPerMille:
			w.crash(n)
		case n.r == nil && w.now >= n.downTill:
			w.restart(n)
		}
	}
	if w.healAt > 0 && w.now >= w.healAt {
		clear(w.group)
		w.healAt = 0
	}
	if w.healAt == 0 && w.rng.IntN(1000) < w.opts.PartitionPerMille {
		for _, n := range w.nodes {
			w.group[n.id] = w.rng.IntN(2)
		}
		w.healAt = w.now + 1 + w.rng.IntN(w.opts.PartitionTicksMax)
		w.res.Partitions++
	}
}

// compact snapshots the application's state and lets core and the WAL drop what it covers.
func (w *world) compact(n *node) {
	slot := n.r.Status().Applied
	if slot > uint64(len(n.applied)) {
		w.fail("apply in slot order without gaps", "replica %d: core applied %d, state machine %d", n.id, slot, len(n.applied))
	}
	n.disk.snapshot = slices.Clone(n.applied[:slot])
	for s := range n.disk.entries {
		if s < slot {
			delete(n.disk.entries, s)
		}
	}
	n.r.Compact(slot)
}

// transferSnapshots serves every replica that asked for a snapshot from a connected peer
// holding one that recent enough; core gets only the final chunk, as the pipeline would.
func (w *world) transferSnapshots() {
	for _, n := range w.nodes {
		if n.r == nil {
			continue
		}
		wanted := n.r.SnapshotWanted()
		if wanted == 0 || wanted <= n.r.Status().Commit {
			continue
		}
		for _, p := range w.nodes {
			if p == n || p.r == nil || !w.connected(p.id, n.id) || uint64(len(p.disk.snapshot)) < wanted {
				continue
			}
			if n.incoming == nil { // fixed until installed: a Ready may be installing it
				n.incoming = p.disk.snapshot
			}
			err := n.r.Step(codec.Message{Type: codec.TypeSnapshotChunk, From: p.id, To: n.id,
				Slot: uint64(len(n.incoming)), Total: 1, Data: []byte{1}})
			if err != nil {
				w.fail("well-formed messages are accepted", "replica %d: %v", n.id, err)
			}
			w.res.Snapshots++
			break
		}
	}
}

// crash loses everything not yet persisted. The persists in flight are one FIFO of writes:
// a crash keeps some prefix of their entries, in order, torn at a record boundary. The hard
// state is saved apart from the entries (its own file), so the latest hard state of some
// prefix of the in-flight persists may have reached the disk, ahead of their entries.
func (w *world) crash(n *node) {
	if len(n.jobs) > 0 && w.rng.IntN(2) == 0 {
		var entries []codec.Entry
		for _, j := range n.jobs {
			entries = append(entries, j.rd.Entries...)
		}
		for _, e := range entries[:w.rng.IntN(len(entries)+1)] {
			n.disk.entries[e.Slot] = e
		}
		for _, j := range n.jobs[:w.rng.IntN(len(n.jobs)+1)] {
			if j.rd.MustSaveHardState {
				n.disk.hardState = j.rd.HardState
			}
		}
	}
	if w.opts.LyingDisk {
		n.disk = n.lastSync
	}
	n.r, n.jobs, n.incoming = nil, nil, nil
	n.downTill = w.now + 1 + w.rng.IntN(w.opts.DownTicksMax)
	w.res.Crashes++
}

// quiet ends every fault: partitions heal, crashed replicas restart, the network stops losing.
func (w *world) quiet() {
	clear(w.group)
	w.healAt = 0
	for _, n := range w.nodes {
		if n.r == nil {
			w.restart(n)
		}
	}
	w.opts.DropPercent, w.opts.DuplicatePercent = 0, 0
	for i := range w.pending {
		w.pending[i].retryAt = w.now
	}
}

func (w *world) converged() bool {
	if len(w.pending) > 0 {
		return false
	}
	for _, n := range w.nodes {
		if len(n.applied) != len(w.global) {
			return false
		}
	}
	return true
}

func (w *world) appliedLens() []int {
	var l []int
	for _, n := range w.nodes {
		l = append(l, len(n.applied))
	}
	return l
}

func (w *world) statuses() []core.Status {
	var s []core.Status
	for _, n := range w.nodes {
		if n.r != nil {
			s = append(s, n.r.Status())
		}
	}
	return s
}

// value makes a unique batch of one command; its identity is its bytes.
func (w *world) value() []byte {
	w.clientSeq++
	var payload [8]byte
	binary.LittleEndian.PutUint64(payload[:], w.rng.Uint64())
	return codec.AppendBatch(nil, []codec.Command{{ClientID: 1 + w.clientSeq%7, Seq: w.clientSeq, Payload: payload[:]}})
}

var debugHook func(*world) // tests only
