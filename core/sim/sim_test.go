package sim

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	seedsFlag    = flag.Int("seeds", 0, "seeds per cluster size (default 1000, env SIM_SEEDS)")
	seedFlag     = flag.Uint64("seed", 0, "replay this one seed (with -replicas)")
	replicasFlag = flag.Int("replicas", 0, "cluster size for -seed (3 or 5; 0 = both)")
	firstFlag    = flag.Uint64("first", 1, "first seed of a run")
	setFlag      = flag.String("set", "", `pin options over the drawn ones, e.g. -set "CrashPerMille=0 PausePerMille=3"`)
	allFlag      = flag.Bool("all", false, "run every seed even after a failure, and count the failures by invariant")
)

func seedCount(def int) int {
	if *seedsFlag > 0 {
		return *seedsFlag
	}
	if v, err := strconv.Atoi(os.Getenv("SIM_SEEDS")); err == nil && v > 0 {
		return v
	}
	return def
}

// failuresShownMax bounds the failures a -all run prints in full.
const failuresShownMax = 5

// optionsFor draws seed's options and applies -set.
func optionsFor(t testing.TB, seed uint64, replicas int) Options {
	o := DrawOptions(seed, replicas)
	if err := o.Set(*setFlag); err != nil {
		t.Fatal(err)
	}
	return o
}

// replayCommand is the one command that replays a seed.
func replayCommand(seed uint64, replicas int) string {
	cmd := fmt.Sprintf("go test ./core/sim -run '^TestSim$' -seed %d -replicas %d", seed, replicas)
	if *setFlag != "" {
		cmd += fmt.Sprintf(" -set %q", *setFlag)
	}
	return cmd
}

// totals sums the Results of many runs.
type totals struct {
	mu    sync.Mutex
	sum   Result
	max   int // slowest recovery after the faults stopped
	runs  int
	start time.Time
}

func (s *totals) add(r Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := reflect.ValueOf(&s.sum).Elem(), reflect.ValueOf(r)
	for i := range a.NumField() {
		a.Field(i).SetInt(a.Field(i).Int() + b.Field(i).Int())
	}
	s.max = max(s.max, r.LivenessTicks)
	s.runs++
}

func (s *totals) done() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs
}

// runSeeds runs count seeds per cluster size on every CPU and reports every failure with the
// options it drew and the one command that replays it.
func runSeeds(t *testing.T, count int) {
	sizes := []int{3, 5}
	if *replicasFlag > 0 {
		sizes = []int{*replicasFlag}
	}
	if *seedFlag != 0 {
		for _, n := range sizes {
			opts := optionsFor(t, *seedFlag, n)
			res, err := Run(opts)
			if err != nil {
				t.Fatalf("seed %d, %d replicas: %v\n  options: %v", *seedFlag, n, err, opts)
			}
			t.Logf("seed %d, %d replicas: %+v\n  options: %v", *seedFlag, n, res, opts)
		}
		return
	}
	type job struct {
		seed     uint64
		replicas int
	}
	jobs := make(chan job)
	var failed atomic.Bool
	var mu sync.Mutex
	type failure struct {
		seed     uint64
		replicas int
		text     string
	}
	var failures []failure
	stats := totals{start: time.Now()}
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				opts := optionsFor(t, j.seed, j.replicas)
				res, err := Run(opts)
				if err != nil {
					failed.Store(true)
					mu.Lock()
					failures = append(failures, failure{j.seed, j.replicas, fmt.Sprintf("seed %d, %d replicas: %v\n  options: %v\n  replay: %s",
						j.seed, j.replicas, err, opts, replayCommand(j.seed, j.replicas))})
					mu.Unlock()
					continue
				}
				stats.add(res)
			}
		})
	}
	for i := range uint64(count) {
		if failed.Load() && !*allFlag {
			break
		}
		for _, n := range sizes {
			jobs <- job{seed: *firstFlag + i, replicas: n}
		}
		if (i+1)%progressSeeds == 0 && count > progressSeeds {
			// Long runs (make sim-long) say how far they got: with -v these lines stream.
			t.Logf("%d of %d seeds handed out after %v, %d runs done, failures so far: %v",
				i+1, count, time.Since(stats.start).Round(time.Second), stats.done(), failed.Load())
		}
	}
	close(jobs)
	wg.Wait()
	slices.SortFunc(failures, func(a, b failure) int {
		return cmp.Or(cmp.Compare(a.seed, b.seed), cmp.Compare(a.replicas, b.replicas))
	})
	byInvariant := map[string]int{}
	for i, f := range failures {
		if i < failuresShownMax {
			t.Error(f.text)
		}
		byInvariant[f.text[strings.Index(f.text, "invariant"):strings.Index(f.text, " broken")]]++
	}
	if len(failures) > 0 {
		t.Errorf("%d runs failed: %v", len(failures), byInvariant)
	}
	elapsed := time.Since(stats.start)
	t.Logf("%d seeds x %v replicas in %v (%.0f runs/s on %d CPUs): slowest recovery %d ticks after faults stopped; totals %+v",
		count, sizes, elapsed.Round(time.Millisecond), float64(stats.runs)/elapsed.Seconds(), runtime.GOMAXPROCS(0), stats.max, stats.sum)
}

// progressSeeds: a long run logs its progress every this many seeds.
const progressSeeds = 20000

// TestSim is the default run: 1000 seeds each of 3 and 5 replicas (make test: SIM_SEEDS),
// each seed its own fault mix.
func TestSim(t *testing.T) {
	runSeeds(t, seedCount(1000))
}

// TestSimLong is for make sim-long: go test ./core/sim -run TestSimLong -seeds N.
func TestSimLong(t *testing.T) {
	if *seedsFlag == 0 {
		t.Skip("set -seeds N")
	}
	runSeeds(t, *seedsFlag)
}

// A seed replays exactly: the same options give the same run.
func TestSimReplaysSeedExactly(t *testing.T) {
	for _, n := range []int{3, 5} {
		a, errA := Run(DrawOptions(42, n))
		b, errB := Run(DrawOptions(42, n))
		if errA != nil || errB != nil {
			t.Fatalf("seed 42: %v / %v", errA, errB)
		}
		if a != b {
			t.Fatalf("seed 42, %d replicas ran differently twice: %+v vs %+v", n, a, b)
		}
		if a.Chosen == 0 || a.Messages == 0 {
			t.Fatalf("seed 42 exercised nothing: %+v", a)
		}
	}
}

// Options print as Name=value and -set reads them back: a failing seed's options can be
// pinned and varied for a replay.
func TestOptionsStringRoundTrips(t *testing.T) {
	o := DrawOptions(7, 5)
	o.LyingDisk, o.Plant = true, PlantStorageOffByOne
	var back Options
	if err := back.Set(o.String()); err != nil {
		t.Fatal(err)
	}
	if back.String() != o.String() {
		t.Fatalf("Set(String()) = %v, want %v", back, o)
	}
	if err := back.Set("NoSuchOption=1"); err == nil {
		t.Fatal("Set took an unknown option")
	}
}

// Each seed draws its own mix: over a few seeds every fault is both on and off somewhere.
func TestDrawOptionsVaries(t *testing.T) {
	on, off := map[string]bool{}, map[string]bool{}
	for seed := uint64(1); seed <= 50; seed++ {
		o := reflect.ValueOf(DrawOptions(seed, 3))
		for i := range o.NumField() {
			name := o.Type().Field(i).Name
			if o.Field(i).Kind() == reflect.Int && o.Field(i).Int() > 0 {
				on[name] = true
			} else {
				off[name] = true
			}
		}
	}
	for _, name := range []string{"DropPercent", "DuplicatePercent", "LongDelayPerMille", "PartitionPerMille",
		"CrashPerMille", "PausePerMille", "TickSkewPercent", "CampaignPerMille", "StallPerMille", "CommitSaveTicks",
		"SnapshotWriteFailPercent", "SnapshotCorruptPercent", "SnapshotFinishFailPercent", "InstallCrashPercent", "FinishCrashPercent"} {
		if !on[name] || !off[name] {
			t.Errorf("%s: on in some seed %v, off in some seed %v", name, on[name], off[name])
		}
	}
}

// Seed 39326 of 3 replicas: replica 2 crashed with an entry accepted in (3,3) durable and the
// hard state raising its promise to (3,3) still queued. The restart recovered (3,3) from the
// entry, core counted it as saved, and the replica acked in (3,3) while its hard state held
// (2,3); a compaction then removed the entry and the next restart promised only (2,3). Core now
// saves a promise recovered from entries in the first Ready, before anything vouches for it.
func TestSimSeed39326PromiseRecoveredFromEntriesIsSaved(t *testing.T) {
	const seed, replicas = 39326, 3
	opts := DrawOptions(seed, replicas)
	if _, err := Run(opts); err != nil {
		t.Fatalf("seed %d, %d replicas: %v\n  options: %v", seed, replicas, err, opts)
	}
}
