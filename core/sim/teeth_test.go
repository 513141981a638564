package sim

import (
	"errors"
	"testing"

	"github.com/mpaxos/mpaxos/core/check"
)

// The checks have teeth: a fault planted in the simulator's own driver, disk or state machine
// (never in core) must be caught by the invariant named, within a bounded number of seeds.
// Each test logs the seed that caught it and how many seeds it took.

// catches runs seeds 1..seedsMax (3 replicas, each seed's drawn mix, with plant) until one
// fails with the invariant want, and logs how many seeds it took (and what else caught the
// plant on the seeds before: a planted bug often breaks several invariants).
func catches(t *testing.T, plant Plant, want string, seedsMax int) {
	t.Helper()
	others := map[string]int{}
	for seed := uint64(1); seed <= uint64(seedsMax); seed++ {
		opts := DrawOptions(seed, 3)
		opts.Plant = plant
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

// A leader advanced before its persist counts its own vote before its disk holds it.
func TestSimCatchesAnAdvanceBeforePersist(t *testing.T) {
	catches(t, PlantAdvanceBeforePersist, check.InvariantChosenDurable, 100)
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

// Acks that leave before the persist vouch for what the disk does not hold.
func TestSimCatchesAnAckBeforePersist(t *testing.T) {
	catches(t, PlantAckBeforePersist, "durable before send", 10)
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
