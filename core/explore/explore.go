package explore

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/core/check"
)

// Options bound and shape one exploration. The zero value of a field means its default.
type Options struct {
	Replicas     int // cluster size (default 3, at most replicasMax)
	DepthMax     int // events on a path (default 12)
	ProposalsMax int // client values proposed at leaders, over the whole path (default 2)
	CrashesMax   int // crash-and-restarts over the whole path (default 2)
	CampaignsMax int // Campaign calls over the whole path (default 2)
	TicksMax     int // Ticks per replica (default 2)
	// Events is a bit set of the kinds of events allowed (1<<Deliver | ...; default
	// DefaultEvents, every kind but Drop).
	Events int

	// Protocol timing, in ticks (defaults 2, 1, 2): short, so that a few ticks reach the
	// timeouts, heartbeats, retransmits and check-quorum rounds.
	ElectionTicks, HeartbeatTicks, RetransmitTicks int
	Window                                         int // core Config.Window (default 2)

	// StatesMax and TimeMax stop the search early (defaults statesMaxDefault, no time
	// limit); Result.Stopped says whether they did.
	StatesMax int
	TimeMax   time.Duration
	// Progress, if set, is called after each depth is fully explored.
	Progress func(Result)

	// PlantAdvanceBeforePersist plants a driver bug for tests: each Ready is advanced as soon as
	// it is handed out, while its write still waits in the FIFO (a crash can lose it). Core
	// then counts its own promise and votes before they are durable: the old code path of the
	// ballot-reuse bug (issue 14), reached through the driver.
	PlantAdvanceBeforePersist bool
	// PlantRestartWithoutHardState plants a disk bug for tests: a restart reads the accepted
	// entries but not the hard state, so the replica forgets its promise and commit point.
	PlantRestartWithoutHardState bool
}

func (o *Options) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Replicas, 3)
	def(&o.DepthMax, 12)
	def(&o.ProposalsMax, 2)
	def(&o.CrashesMax, 2)
	def(&o.CampaignsMax, 2)
	def(&o.TicksMax, 2)
	def(&o.Events, DefaultEvents)
	def(&o.ElectionTicks, 2)
	def(&o.HeartbeatTicks, 1)
	def(&o.RetransmitTicks, 2)
	def(&o.Window, 2)
	def(&o.StatesMax, statesMaxDefault)
	if o.Replicas < 1 || o.Replicas > replicasMax {
		panic(fmt.Sprintf("explore: %d replicas, want 1..%d", o.Replicas, replicasMax))
	}
}

// statesMaxDefault bounds memory: a world found costs a node of 20 bytes (in a slice that may
// be doubling) and 21 to 43 bytes of the visited table (which doubles past 3/4 load); with the
// garbage of the search, the process measured 1.2 GB at 9.5 million worlds, so 20 million
// stay under about 2.5 GiB.
const statesMaxDefault = 20_000_000

// Result is what an exploration found.
type Result struct {
	States      int           // distinct worlds reached (the initial one included)
	Transitions int           // events applied while expanding, duplicates included
	Depth       int           // every world within this many events was expanded
	Stopped     bool          // StatesMax or TimeMax ended the search before DepthMax
	Complete    bool          // no violation, and the whole space within DepthMax was explored
	Elapsed     time.Duration // wall time
	// Violation is the first broken invariant found, on a shortest path (nil if none).
	Violation *Violation
}

func (r Result) String() string {
	s := fmt.Sprintf("%d states, %d transitions, every path of %d events explored, %v", r.States,
		r.Transitions, r.Depth, r.Elapsed.Round(time.Millisecond))
	if r.Stopped {
		s += " (stopped early by StatesMax or TimeMax)"
	}
	if r.Violation != nil {
		s += fmt.Sprintf(", violation at depth %d", len(r.Violation.Trace))
	}
	return s
}

// Violation is a broken invariant and the shortest sequence of events found that breaks it.
type Violation struct {
	Invariant, Detail string
	Trace             []string // one line per event, with the state of the replica it touched
}

func (v *Violation) Error() string {
	return fmt.Sprintf("explore: violation at depth %d: invariant %q broken: %s\n%s", len(v.Trace),
		v.Invariant, v.Detail, strings.Join(v.Trace, "\n"))
}

// node is one distinct world found, stored as the event that first reached it from its parent
// (worlds themselves are recomputed from the root when needed; a node costs ~24 bytes).
type node struct {
	parent     int32 // index in the previous depth
	childStart int32 // children: [childStart, childEnd) in the next depth, set when expanded
	childEnd   int32
	ev         event
}

type explorer struct {
	opts    Options
	configs []core.Config
	seeds   [2]maphash.Seed
	visited visitedSet
	levels  [][]node
	buffer  []byte
	result  Result
	start   time.Time
	// frames: the observations of each event on the path being walked, by depth.
	frames [][]observation
	found  *Violation
	stop   bool // StatesMax or TimeMax reached
	root   *world
	// eventBuffer holds the events of the world being expanded (expand does not recurse).
	eventBuffer []event
}

// Explore runs a breadth-first search over every interleaving of events within the bounds,
// deduplicating worlds by fingerprint, and returns the first violation on a shortest path.
func Explore(opts Options) Result {
	opts.setDefaults()
	x := newExplorer(opts)
	for depth := 0; depth < opts.DepthMax; depth++ {
		x.levels = append(x.levels, nil)
		x.walk(0, 0, x.root, depth)
		if x.found != nil || x.stop {
			break
		}
		x.result.Depth = depth + 1
		if opts.Progress != nil {
			x.result.Elapsed = time.Since(x.start)
			opts.Progress(x.result)
		}
		if len(x.levels[depth+1]) == 0 {
			break // nothing new beyond: the whole reachable space is explored
		}
	}
	x.result.Stopped = x.stop
	x.result.Complete = x.found == nil && !x.stop
	x.result.Violation = x.found
	x.result.Elapsed = time.Since(x.start)
	return x.result
}

// newExplorer builds the initial world: fresh replicas with empty disks, nothing in flight.
func newExplorer(opts Options) *explorer {
	x := &explorer{opts: opts, start: time.Now(), seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	var peers []uint32
	for id := 1; id <= opts.Replicas; id++ {
		peers = append(peers, uint32(id))
	}
	root := &world{n: opts.Replicas,
		budget: budget{proposals: opts.ProposalsMax, crashes: opts.CrashesMax, campaigns: opts.CampaignsMax}}
	for _, id := range peers {
		cfg := core.DefaultConfig(id, peers)
		cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.RetransmitTicks = opts.ElectionTicks, opts.HeartbeatTicks, opts.RetransmitTicks
		cfg.Window, cfg.Rand = opts.Window, zeroRand{}
		x.configs = append(x.configs, cfg)
		r, err := core.New(cfg, core.Persisted{}, nil)
		if err != nil {
			panic(fmt.Sprintf("explore: options make an invalid core config: %v", err))
		}
		root.replicas[id-1], root.disks[id-1] = r, &disk{entries: map[uint64]codec.Entry{}}
		root.budget.ticks[id-1] = opts.TicksMax
	}
	x.root = root
	x.visited.add(x.fingerprint(root, nil))
	x.levels = [][]node{{{parent: -1}}}
	x.result.States = 1
	return x
}

// walk recomputes the world of node index at depth k from its parent's world w (given) and
// descends along stored children until target, the depth being expanded.
func (x *explorer) walk(k int, index int32, w *world, target int) {
	if k == target {
		x.expand(k, index, w)
		return
	}
	n := x.levels[k][index]
	for c := n.childStart; c < n.childEnd && x.found == nil && !x.stop; c++ {
		child := x.levels[k+1][c]
		s, _, _ := x.apply(w, child.ev)
		// Refresh the touched replica's cached hash for the children; the world must be the one
		// first found (the search is deterministic).
		if !x.visited.contains(x.fingerprint(s.w, s)) {
			panic(fmt.Sprintf("explore: replaying %v at depth %d reached an unknown world", child.ev, k+1))
		}
		x.frames = append(x.frames[:k], s.observations)
		x.walk(k+1, c, s.w, target)
	}
}

// expand generates every successor of node index at depth k (world w), keeps the new ones as
// nodes of depth k+1, and checks each new one.
func (x *explorer) expand(k int, index int32, w *world) {
	level := &x.levels[k+1]
	x.levels[k][index].childStart = int32(len(*level))
	defer func() { x.levels[k][index].childEnd = int32(len(*level)) }()
	x.eventBuffer = x.events(w, x.eventBuffer[:0])
	for _, ev := range x.eventBuffer {
		s, ok, v := x.apply(w, ev)
		if !ok {
			continue
		}
		x.result.Transitions++
		if v != nil {
			x.report(k, index, ev, v.invariant, v.detail)
			return
		}
		if !x.visited.add(x.fingerprint(s.w, s)) {
			continue
		}
		x.result.States++
		if err := x.check(k, s.observations); err != nil {
			x.report(k, index, ev, err.Invariant, err.Detail)
			return
		}
		*level = append(*level, node{parent: index, ev: ev})
		if x.result.States >= x.opts.StatesMax || x.opts.TimeMax > 0 && x.result.States%1024 == 0 && time.Since(x.start) > x.opts.TimeMax {
			x.stop = true
			return
		}
	}
}

// check replays, into a fresh checker, every observation on the path to depth k and then the
// new world's own.
func (x *explorer) check(k int, last []observation) *check.Violation {
	h := check.New(x.opts.Replicas)
	for _, frame := range x.frames[:k] {
		for i := range frame {
			if err := feed(h, &frame[i]); err != nil {
				panic(fmt.Sprintf("explore: a violation on an already checked path: %v", err))
			}
		}
	}
	for i := range last {
		if err := feed(h, &last[i]); err != nil {
			return err
		}
	}
	return nil
}

func feed(h *check.History, o *observation) *check.Violation {
	var err error
	switch o.kind {
	case observeSent:
		err = h.Sent(o.id, o.msg)
	case observeDurable:
		err = h.Durable(o.id, o.entry)
	case observeChosen:
		err = h.Chosen(o.id, o.entry)
	case observeLed:
		err = h.Led(o.id, o.ballot)
	case observeRestart:
		h.Restart(o.id)
	}
	if err == nil {
		return nil
	}
	if v, ok := err.(*check.Violation); ok {
		return v
	}
	return &check.Violation{Invariant: "check", Detail: err.Error()}
}

// fingerprint is the 128-bit hash of the world's canonical encoding. It first refreshes the
// cached hashes of the replicas s touched (all of them for the root, s == nil).
func (x *explorer) fingerprint(w *world, s *step) [2]uint64 {
	for i := range w.n {
		if s == nil || s.touched(i) {
			w.replicaPrints[i] = x.hash(w.appendReplicaFingerprint(x.buffer[:0], i))
		}
	}
	return x.hash(w.appendFingerprint(x.buffer[:0]))
}

func (x *explorer) hash(b []byte) [2]uint64 {
	x.buffer = b
	return [2]uint64{maphash.Bytes(x.seeds[0], b), maphash.Bytes(x.seeds[1], b)}
}

// report records the violation found by applying last to node index at depth k: it rebuilds
// the path from the root and describes each event and its effect.
func (x *explorer) report(k int, index int32, last event, invariant, detail string) {
	path := []event{last}
	for d, i := k, index; d > 0; d-- {
		n := x.levels[d][i]
		path = append(path, n.ev)
		i = n.parent
	}
	slices.Reverse(path)
	v := &Violation{Invariant: invariant, Detail: detail}
	w := x.root
	for j, ev := range path {
		line, touched := x.describe(w, ev)
		s, _, _ := x.apply(w, ev)
		w = s.w
		v.Trace = append(v.Trace, fmt.Sprintf("%2d. %-64s => %s", j+1, line, describeReplica(w, touched)))
	}
	x.found = v
}
