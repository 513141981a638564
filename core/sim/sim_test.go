package sim

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
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

// runSeeds runs count seeds per cluster size on every CPU and reports the first failure with
// the one command that replays it.
func runSeeds(t *testing.T, count int) {
	sizes := []int{3, 5}
	if *replicasFlag > 0 {
		sizes = []int{*replicasFlag}
	}
	if *seedFlag != 0 {
		for _, n := range sizes {
			res, err := Run(DefaultOptions(*seedFlag, n))
			if err != nil {
				t.Fatalf("seed %d, %d replicas: %v", *seedFlag, n, err)
			}
			t.Logf("seed %d, %d replicas: %+v", *seedFlag, n, res)
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
	var failures []string
	var livenessMax, chosen atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				res, err := Run(DefaultOptions(j.seed, j.replicas))
				if err != nil {
					failed.Store(true)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("seed %d, %d replicas: %v\n  replay: go test ./core/sim -run '^TestSim$' -seed %d -replicas %d",
						j.seed, j.replicas, err, j.seed, j.replicas))
					mu.Unlock()
					continue
				}
				chosen.Add(int64(res.Chosen))
				for l := livenessMax.Load(); int64(res.LivenessTicks) > l && !livenessMax.CompareAndSwap(l, int64(res.LivenessTicks)); l = livenessMax.Load() {
				}
			}
		})
	}
	for i := range uint64(count) {
		if failed.Load() {
			break
		}
		for _, n := range sizes {
			jobs <- job{seed: *firstFlag + i, replicas: n}
		}
	}
	close(jobs)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d seeds x %v replicas in %v: %d slots chosen, slowest recovery %d ticks after faults stopped",
		count, sizes, time.Since(start).Round(time.Millisecond), chosen.Load(), livenessMax.Load())
}

// TestSim is the default run: 1000 seeds each of 3 and 5 replicas.
func TestSim(t *testing.T) {
	runSeeds(t, seedCount(1000))
}

// TestSimLong is for make sim-long: go test ./core/sim -run TestSimLong -seeds N.
func TestSimLong(t *testing.T) {
	if *seedsFlag == 0 && os.Getenv("SIM_SEEDS") == "" {
		t.Skip("set -seeds N or SIM_SEEDS")
	}
	runSeeds(t, seedCount(0))
}

// A seed replays exactly: the same options give the same run.
func TestSimReplaysSeedExactly(t *testing.T) {
	for _, n := range []int{3, 5} {
		a, errA := Run(DefaultOptions(42, n))
		b, errB := Run(DefaultOptions(42, n))
		if errA != nil || errB != nil {
			t.Fatalf("seed 42: %v / %v", errA, errB)
		}
		if a != b {
			t.Fatalf("seed 42, %d replicas ran differently twice: %+v vs %+v", n, a, b)
		}
		if a.Chosen == 0 || a.Crashes+a.Partitions == 0 || a.Overlapped == 0 {
			t.Fatalf("seed 42 exercised nothing: %+v", a)
		}
	}
}

// The checks have teeth: a disk that forgets what it acknowledged as synced (the sim's own
// fault, not core's) must be caught by some invariant within a few seeds.
func TestSimCatchesALyingDisk(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		opts := DefaultOptions(seed, 3)
		opts.LyingDisk = true
		if _, err := Run(opts); err != nil {
			t.Logf("seed %d caught it: %v", seed, err)
			return
		}
	}
	t.Fatal("200 seeds with a lying disk broke no invariant")
}
