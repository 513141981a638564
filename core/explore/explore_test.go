package explore

import (
	"flag"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/core/check"
)

// Flags of the deep run (make explore-deep); TestExploreDeep is skipped unless -depth is set.
var (
	depthFlag     = flag.Int("depth", 0, "TestExploreDeep: events on a path (0 skips the deep run)")
	ticksFlag     = flag.Int("ticks", 0, "TestExploreDeep: ticks per replica (0: default)")
	crashesFlag   = flag.Int("crashes", 0, "TestExploreDeep: crash-and-restarts (0: default)")
	proposalsFlag = flag.Int("proposals", 0, "TestExploreDeep: client proposals (0: default)")
	campaignsFlag = flag.Int("campaigns", 0, "TestExploreDeep: Campaign calls (0: default)")
	dropsFlag     = flag.Bool("drops", false, "TestExploreDeep: enumerate message drops too")
	eventsFlag    = flag.String("events", "", "TestExploreDeep: the kinds of events, comma-separated (deliver,drop,persist,crash,campaign,propose,tick; default all but drop)")
	statesFlag    = flag.Int("states", 0, "TestExploreDeep: stop after this many states (0: default)")
	timeFlag      = flag.Duration("time", 0, "TestExploreDeep: stop after this long (0: no limit)")
)

// boundedDepth is make test's bound: every interleaving of 9 events, about 2.8 million worlds,
// 25 s on the 2-core test machine with -tags invariants. The ballot-reuse bug of issue 14
// needs 9 events (campaign, two Prepares, two promise persists, two Promises, crash,
// campaign again), so this bound reaches it when the fix is reverted.
const boundedDepth = 9

func logProgress(t *testing.T) func(Result) {
	return func(r Result) { t.Logf("%v", r) }
}

// TestExploreBounded is the explorer's pass in make test: default budgets (3 replicas, 2
// proposals, 2 crashes, 2 campaigns, 2 ticks a replica), every interleaving up to
// boundedDepth events, no violation.
func TestExploreBounded(t *testing.T) {
	r := Explore(Options{DepthMax: boundedDepth, Progress: logProgress(t)})
	t.Logf("bounded run: %v", r)
	if r.Violation != nil {
		t.Fatal(r.Violation)
	}
	if !r.Complete || r.Depth != boundedDepth {
		t.Fatalf("explored every path of %d events, want %d: %v", r.Depth, boundedDepth, r)
	}
}

// TestExploreWithDrops enumerates message drops as well (left out by default, see
// DefaultEvents), to a smaller depth.
func TestExploreWithDrops(t *testing.T) {
	r := Explore(Options{DepthMax: 6, Events: AllEvents})
	t.Logf("with drops: %v", r)
	if r.Violation != nil {
		t.Fatal(r.Violation)
	}
	if without := Explore(Options{DepthMax: 6}); without.States >= r.States {
		t.Fatalf("drops added no worlds: %d with, %d without", r.States, without.States)
	}
}

// TestExploreFindsAdvanceBeforePersist: the driver advances each Ready before its write is
// durable, so a candidate counts its own promise early, leads, crashes with the promise lost
// and campaigns in the same ballot again: issue 14's bug, through the driver.
func TestExploreFindsAdvanceBeforePersist(t *testing.T) {
	r := Explore(Options{DepthMax: boundedDepth, PlantAdvanceBeforePersist: true})
	t.Logf("%v", r)
	expectViolation(t, r, check.InvariantBallotOneLife, 6)
}

// TestExploreFindsRestartWithoutHardState: a disk that loses the hard state on restart makes
// a replica forget the promise of the ballot it led, and reuse that ballot.
func TestExploreFindsRestartWithoutHardState(t *testing.T) {
	r := Explore(Options{DepthMax: boundedDepth, PlantRestartWithoutHardState: true})
	t.Logf("%v", r)
	expectViolation(t, r, check.InvariantBallotOneLife, 7)
}

func expectViolation(t *testing.T, r Result, invariant string, depth int) {
	t.Helper()
	if r.Violation == nil {
		t.Fatalf("the planted bug was not found: %v", r)
	}
	t.Log(r.Violation)
	// A bug planted in core (tests/planted) may break something on a shorter path first.
	switch n := len(r.Violation.Trace); {
	case n > depth:
		t.Fatalf("the trace has %d events; the shortest has %d", n, depth)
	case n == depth && r.Violation.Invariant != invariant:
		t.Fatalf("found %q, want %q", r.Violation.Invariant, invariant)
	}
}

// TestExploreIsDeterministic: two runs count the same worlds and transitions.
func TestExploreIsDeterministic(t *testing.T) {
	a, b := Explore(Options{DepthMax: 5}), Explore(Options{DepthMax: 5})
	if a.States != b.States || a.Transitions != b.Transitions {
		t.Fatalf("two runs differ: %v; %v", a, b)
	}
}

// TestExploreDeep is the long run behind make explore-deep:
//
//	go test ./core/explore -run TestExploreDeep -v -timeout 0 -depth 11 [-drops] [-ticks 3] ...
func TestExploreDeep(t *testing.T) {
	if *depthFlag == 0 {
		t.Skip("deep run: set -depth N (make explore-deep)")
	}
	opts := Options{DepthMax: *depthFlag, TicksMax: *ticksFlag, CrashesMax: *crashesFlag,
		ProposalsMax: *proposalsFlag, CampaignsMax: *campaignsFlag, StatesMax: *statesFlag,
		TimeMax: *timeFlag, Progress: logProgress(t)}
	if *eventsFlag != "" {
		for _, name := range strings.Split(*eventsFlag, ",") {
			k := slices.IndexFunc(allKinds(), func(k EventKind) bool { return k.String() == name })
			if k < 0 {
				t.Fatalf("-events: unknown kind %q", name)
			}
			opts.Events |= 1 << k
		}
	}
	if *dropsFlag {
		opts.Events |= DefaultEvents | 1<<Drop
	}
	start := time.Now()
	r := Explore(opts)
	t.Logf("deep run: %v (%v)", r, time.Since(start).Round(time.Second))
	if r.Violation != nil {
		t.Fatal(r.Violation)
	}
}

func TestVisitedSet(t *testing.T) {
	var v visitedSet
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][2]uint64, 200_000)
	for i := range keys {
		keys[i] = [2]uint64{rng.Uint64(), rng.Uint64()}
	}
	keys[7] = [2]uint64{} // the zero key is stored too
	for _, k := range keys {
		if !v.add(k) {
			t.Fatalf("%v reported as present before it was added", k)
		}
	}
	for _, k := range keys {
		if v.add(k) || !v.contains(k) {
			t.Fatalf("%v lost", k)
		}
	}
	if v.contains([2]uint64{1, 2}) || v.count != len(keys) {
		t.Fatalf("count %d, want %d", v.count, len(keys))
	}
}

func allKinds() []EventKind {
	var kinds []EventKind
	for k := range eventKinds {
		kinds = append(kinds, k)
	}
	return kinds
}
