package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/tests/chaos/history"
)

// runScenario: a cluster under load, the given faults one after another with pauses between,
// heal, check everything.
func runScenario(t *testing.T, seed uint64, opts options, schedule []fault) summary {
	h := newHarness(t, seed, opts)
	w := h.startWorkload(defaultWorkload())
	sleep(time.Second)
	for i, f := range schedule {
		if t.Failed() {
			break
		}
		if f.needProxy && h.net == nil {
			t.Fatalf("fault %s needs the fault proxy", f.name)
		}
		if f.needNetns && h.topo == nil {
			t.Fatalf("fault %s needs network namespaces", f.name)
		}
		f.run(h, w)
		if i < len(schedule)-1 {
			sleep(time.Duration(300+h.rng.IntN(700)) * time.Millisecond)
		}
	}
	sleep(time.Second) // the workload runs on the healed cluster too
	s := h.finishAndCheck(w)
	s.faults = len(schedule)
	t.Logf("summary: %d faults, %d ops (%d acknowledged, %d indeterminate), %d slots, %d commands, verdict %s",
		s.faults, s.ops, s.acknowledged, s.indeterminate, s.slots, s.commands, s.verdict)
	return s
}

func runFault(t *testing.T, name string) {
	runScenario(t, testSeed(t), options{proxy: true}, []fault{faultByName(name)})
}

// TestChaosSmoke is the one real-process test of the default run (make test): a healthy
// cluster through the fault proxies under the workload, then every end-of-run check. It
// keeps the harness honest against the real server in seconds.
func TestChaosSmoke(t *testing.T) {
	runScenario(t, testSeed(t), options{proxy: true, always: true}, nil)
}

func TestChaosKillFollower(t *testing.T)         { runFault(t, "kill-follower") }
func TestChaosKillLeader(t *testing.T)           { runFault(t, "kill-leader") }
func TestChaosKillMajority(t *testing.T)         { runFault(t, "kill-majority") }
func TestChaosPauseLeader(t *testing.T)          { runFault(t, "pause-leader") }
func TestChaosIsolateLeader(t *testing.T)        { runFault(t, "isolate-leader") }
func TestChaosPartitionMinority(t *testing.T)    { runFault(t, "partition-minority") }
func TestChaosAsymmetricLeader(t *testing.T)     { runFault(t, "asymmetric-leader") }
func TestChaosLossyNetwork(t *testing.T)         { runFault(t, "lossy-network") }
func TestChaosSlowNetwork(t *testing.T)          { runFault(t, "slow-network") }
func TestChaosTornWALTail(t *testing.T)          { runFault(t, "torn-wal-tail") }
func TestChaosCorruptWALWipeRejoin(t *testing.T) { runFault(t, "corrupt-wal-wipe-rejoin") }
func TestChaosHostileClients(t *testing.T)       { runFault(t, "hostile-clients") }

// Liveness under a fault that stays (liveness_test.go): acknowledged appends must resume, under
// a new leader, while the fault is still in place.
func TestChaosOneWayPartitionLeader(t *testing.T) { runFault(t, "one-way-partition-leader") }
func TestChaosStallLeaderDisk(t *testing.T)       { runFault(t, "stall-leader-disk") }

// Replicas in network namespaces: a link taken down cuts a replica from peers and clients
// alike; netem shapes real packets: tc netem where the kernel has it, else the userspace
// packet emulator (tests/chaos/netns) with the same knobs.
func TestChaosNetnsDisconnectLeader(t *testing.T) {
	runScenario(t, testSeed(t), options{netns: true}, []fault{faultByName("netns-disconnect-leader")})
}

func TestChaosNetnsNetem(t *testing.T) {
	requireChaos(t)
	runScenario(t, testSeed(t), options{netns: true}, []fault{faultByName("netns-netem")})
}

// notDrawn: faults that hold 12 election timeouts with the workload at full speed (the test
// asserts acks go on). Each runs once in its own test; drawn into random schedules, three of
// them made a history of ~49,000 operations that porcupine could not decide within its
// 2-minute budget (verdict Unknown, seed 218132153), so random schedules leave them out.
var notDrawn = map[string]bool{"one-way-partition-leader": true, "stall-leader-disk": true}

// randomSchedule draws 2..4 faults.
func randomSchedule(rng *rand.Rand) []fault {
	n := 2 + rng.IntN(3)
	var list []fault
	for len(list) < n {
		if f := faults[rng.IntN(len(faults))]; !notDrawn[f.name] {
			list = append(list, f)
		}
	}
	return list
}

func TestChaosRandom(t *testing.T) {
	requireChaos(t)
	seed := testSeed(t)
	schedule := randomSchedule(rand.New(rand.NewPCG(seed, 3)))
	t.Logf("schedule %s", describeFaults(schedule))
	runScenario(t, seed, options{proxy: true}, schedule)
}

func TestChaosFiveReplicas(t *testing.T) {
	requireChaos(t)
	seed := testSeed(t)
	schedule := randomSchedule(rand.New(rand.NewPCG(seed, 5)))
	t.Logf("schedule %s", describeFaults(schedule))
	runScenario(t, seed, options{replicas: 5, proxy: true}, schedule)
}

// TestChaosLong runs rounds of random faults on fresh clusters for -duration and prints a
// summary (make chaos-long DURATION=1h). Each round is TestChaosRandom with its own seed, so
// a failing round replays alone.
func TestChaosLong(t *testing.T) {
	if *flagDuration <= 0 {
		t.Skip("TestChaosLong needs -duration (make chaos-long DURATION=1h)")
	}
	base := testSeed(t)
	end := time.Now().Add(*flagDuration)
	var rounds, failed, faultsTotal, opsTotal, ackedTotal, indeterminateTotal int
	var failures []string
	for round := 0; time.Now().Before(end) && round < 100000; round++ {
		seed := base + uint64(round)
		replicas := 3
		if round%4 == 3 {
			replicas = 5
		}
		schedule := randomSchedule(rand.New(rand.NewPCG(seed, uint64(replicas))))
		replayAs := "TestChaosRandom"
		if replicas == 5 {
			replayAs = "TestChaosFiveReplicas"
		}
		var s summary
		ok := t.Run(fmt.Sprintf("round%d-seed%d", round, seed), func(t *testing.T) {
			t.Logf("schedule %s on %d replicas", describeFaults(schedule), replicas)
			s = runScenario(t, seed, options{replicas: replicas, proxy: true, replayAs: replayAs}, schedule)
		})
		rounds++
		faultsTotal += s.faults
		opsTotal += s.ops
		ackedTotal += s.acknowledged
		indeterminateTotal += s.indeterminate
		if !ok {
			failed++
			failures = append(failures, fmt.Sprintf("go test ./tests/chaos -run '^%s$' -chaos -seed %d -v", replayAs, seed))
		}
	}
	verdict := "Ok"
	if failed > 0 {
		verdict = "FAILED"
	}
	summary := fmt.Sprintf("chaos-long summary: %d rounds in %v (base seed %d), %d faults injected, %d operations checked (%d acknowledged, %d indeterminate), %d rounds failed; verdict %s\n",
		rounds, *flagDuration, base, faultsTotal, opsTotal, ackedTotal, indeterminateTotal, failed, verdict)
	if failed > 0 {
		summary += "failing rounds replay with:\n  " + strings.Join(failures, "\n  ") + "\n"
	}
	// go test shows a passing test's log only with -v: keep the summary in a file as well.
	if dir, err := history.ArtifactDir("chaos-long"); err == nil {
		path := filepath.Join(dir, "summary.txt")
		if os.WriteFile(path, []byte(summary), 0o644) == nil {
			summary += "summary saved in " + path + "\n"
		}
	}
	t.Log(summary)
	if failed > 0 {
		t.Errorf("%d of %d rounds failed", failed, rounds)
	}
}
