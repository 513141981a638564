package sim

import (
	"errors"
	"testing"

	"github.com/mpaxos/mpaxos/core/check"
)

// The checks have teeth: a fault planted in the simulator's own disks, network or state
// machine (never in core or core/driver: tests/planted plants those) must be caught by the
// invariant named, within a bounded number of seeds. Each test logs the seed that caught it
// and how many seeds it took.

// catches runs seeds 1..seedsMax (3 replicas, each seed's drawn mix, with plant) until one
// fails with the invariant want, and logs how many seeds it took (and what else caught the
// plant on the seeds before: a planted bug often breaks several invariants).
func catches(t *testing.T, plant Plant, want string, seedsMax int) {
	t.Helper()
	catchesWith(t, plant, nil, want, seedsMax)
}

// catchesWith is catches with each seed's options adjusted (a plant that needs a fault on).
func catchesWith(t *testing.T, plant Plant, adjust func(*Options), want string, seedsMax int) {
	t.Helper()
	others := map[string]int{}
	for seed := uint64(1); seed <= uint64(seedsMax); seed++ {
		opts := DrawOptions(seed, 3)
		opts.Plant = plant
		if adjust != nil {
			adjust(&opts)
		}
		_, err := Run(opts)
		if err == nil {
			continue
		}
		var v *Violation
		if !errors.As(err, &v) {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if v.Invariant != want {
			others[v.Invariant]++
			continue
		}
		t.Logf("caught after %d seeds (seed %d; earlier seeds caught by %v): %v", seed, seed, others, err)
		return
	}
	t.Fatalf("%d seeds: %q never caught the planted fault (others did: %v)", seedsMax, want, others)
}

// A torn record read back as whole is a second value in the ballot of the entry it tore.
func TestSimCatchesATornRecordReadAsWhole(t *testing.T) {
	catches(t, PlantTornRecordReadWhole, check.InvariantOneValuePerBallot, 100)
}

// A candidate's own promise lost in a crash lets its next life campaign in the same ballot
// (issue 14's bug, planted in the disk instead of core).
func TestSimCatchesAForgottenOwnPromise(t *testing.T) {
	catches(t, PlantForgetOwnPromise, check.InvariantBallotOneLife, 2000)
}

// A leader whose disk reports its entries durable before it holds them counts its own vote
// too early: a value is handed out as chosen that a majority does not hold.
func TestSimCatchesALeaderDiskReportingEarly(t *testing.T) {
	catches(t, PlantLeaderPersistReportedEarly, check.InvariantChosenDurable, 100)
}

// An acceptor that forgets a durable acceptance lets a later ballot choose another value.
func TestSimCatchesAForgottenAcceptance(t *testing.T) {
	catches(t, PlantForgetAcceptedOnCrash, check.InvariantMajorityKept, 100)
}

// Catch-up served one slot late installs another value as chosen.
func TestSimCatchesAnOffByOneStorage(t *testing.T) {
	catches(t, PlantStorageOffByOne, check.InvariantChosenAgree, 100)
}

// A snapshot without the sessions table lets a restored replica apply a retry again.
func TestSimCatchesASnapshotWithoutSessions(t *testing.T) {
	catches(t, PlantSnapshotWithoutSessions, "exactly once", 500)
}

// A disk that reports writes durable before it holds them makes the driver send acks that
// vouch for what the disk does not hold.
func TestSimCatchesADiskReportingEarly(t *testing.T) {
	catches(t, PlantPersistReportedEarly, "durable before send", 10)
}

// A received snapshot made durable without verification installs a damaged transfer.
func TestSimCatchesAnUnverifiedSnapshot(t *testing.T) {
	corrupt := func(o *Options) { o.SnapshotCorruptPercent = 50 }
	catchesWith(t, PlantSnapshotUnverified, corrupt, "snapshot intact", 300)
}

// A frame damaged on the wire does not decode to what was sent.
func TestSimCatchesACorruptFrame(t *testing.T) {
	catches(t, PlantCorruptFrame, "codec round trip", 10)
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
