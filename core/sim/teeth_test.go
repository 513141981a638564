package sim

import (
	"errors"
	"testing"
)

// The checks have teeth: a fault planted in the simulator's own driver, disk or state machine
// (never in core) must be caught by the invariant named, within a bounded number of seeds.
// Each test logs the seed that caught it and how many seeds it took.

// catches runs seeds 1..seedsMax (3 replicas, each seed's drawn mix, adjusted by tune) until
// one fails; the first failure must name want.
func catches(t *testing.T, seedsMax int, want string, tune func(*Options)) {
	t.Helper()
	for seed := uint64(1); seed <= uint64(seedsMax); seed++ {
		opts := DrawOptions(seed, 3)
		tune(&opts)
		_, err := Run(opts)
		if err == nil {
			continue
		}
		var v *Violation
		if !errors.As(err, &v) || v.Invariant != want {
			t.Fatalf("seed %d: caught by another check than %q: %v\n  options: %v", seed, want, err, opts)
		}
		t.Logf("caught after %d seeds (seed %d): %v", seed, seed, err)
		return
	}
	t.Fatalf("%d seeds: %q never caught the planted fault", seedsMax, want)
}

// A disk that forgets what it acknowledged as synced.
func TestSimCatchesALyingDisk(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		opts := DrawOptions(seed, 3)
		opts.LyingDisk = true
		if _, err := Run(opts); err != nil {
			t.Logf("caught after %d seeds (seed %d): %v", seed, seed, err)
			return
		}
	}
	t.Fatal("200 seeds with a lying disk broke no invariant")
}
