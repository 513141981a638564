package chaos

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mpaxos/mpaxos/tests/chaos/cluster"
	"github.com/mpaxos/mpaxos/tests/chaos/faultproxy"
	"github.com/mpaxos/mpaxos/tests/chaos/netns"
)

// A fault injects one failure, holds it, and undoes it (or leaves healing to healAll).
type fault struct {
	name      string
	needProxy bool
	run       func(h *harness, w *workload)
	needNetns bool
}

var faults = []fault{
	{"kill-follower", false, faultKillFollower, false},
	{"kill-leader", false, faultKillLeader, false},
	{"kill-majority", false, faultKillMajority, false},
	{"pause-leader", false, faultPauseLeader, false},
	{"isolate-leader", true, faultIsolateLeader, false},
	{"partition-minority", true, faultPartitionMinority, false},
	{"asymmetric-leader", true, faultAsymmetricLeader, false},
	{"lossy-network", true, faultLossyNetwork, false},
	{"slow-network", true, faultSlowNetwork, false},
	{"torn-wal-tail", false, faultTornWALTail, false},
	{"corrupt-wal-wipe-rejoin", false, faultCorruptWAL, false},
	{"hostile-clients", false, faultHostileClients, false},
	{"one-way-partition-leader", true, faultOneWayLeader, false},
	{"stall-leader-disk", false, faultStallLeaderDisk, false},
}

// namespaceFaults need replicas in network namespaces (options.netns).
var namespaceFaults = []fault{
	{"netns-disconnect-leader", false, faultNetnsDisconnectLeader, true},
	{"netns-netem", false, faultNetem, true},
}

func faultByName(name string) fault {
	for _, f := range append(append([]fault(nil), faults...), namespaceFaults...) {
		if f.name == name {
			return f
		}
	}
	panic("no fault " + name)
}

// hold is how long a fault stays: past the election timeout (30 ticks of 10 ms, randomised
// up to twice that) so leadership changes do happen.
func (h *harness) hold() time.Duration {
	return 1500*time.Millisecond + time.Duration(h.rng.IntN(1500))*time.Millisecond
}

func (h *harness) must(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Errorf("%v", err)
	}
}

func (h *harness) restart(id int) {
	h.t.Helper()
	if err := h.cluster.Start(id); err != nil {
		h.t.Errorf("restart replica %d: %v", id, err)
	}
}

func (h *harness) follower() int {
	return h.randomRunning(h.leader(3 * time.Second))
}

func faultKillFollower(h *harness, w *workload) {
	id := h.follower()
	h.fault("kill -9 follower %d", id)
	h.must(h.cluster.Kill(id))
	sleep(h.hold())
	h.fault("restart replica %d", id)
	h.restart(id)
}

func faultKillLeader(h *harness, w *workload) {
	id := h.leaderOrAny()
	h.fault("kill -9 leader %d", id)
	h.must(h.cluster.Kill(id))
	sleep(h.hold())
	h.fault("restart replica %d", id)
	h.restart(id)
}

func faultKillMajority(h *harness, w *workload) {
	n := len(h.cluster.Nodes())
	victims := []int{h.leaderOrAny()}
	for attempt := 0; len(victims) < n/2+1 && attempt < 1000; attempt++ {
		id := h.randomRunning(0)
		dup := false
		for _, v := range victims {
			dup = dup || v == id
		}
		if !dup {
			victims = append(victims, id)
		}
	}
	h.fault("kill -9 majority %v (leader first)", victims)
	for _, id := range victims {
		h.must(h.cluster.Kill(id))
	}
	sleep(h.hold())
	for _, id := range victims {
		h.fault("restart replica %d", id)
		h.restart(id)
	}
}

func faultPauseLeader(h *harness, w *workload) {
	id := h.leaderOrAny()
	d := h.hold() + time.Second
	h.fault("SIGSTOP leader %d for %v", id, d)
	h.must(h.cluster.Pause(id))
	sleep(d)
	h.fault("SIGCONT replica %d", id)
	h.must(h.cluster.Resume(id))
}

func faultIsolateLeader(h *harness, w *workload) {
	id := h.leaderOrAny()
	blackhole := h.rng.IntN(2) == 0
	h.fault("isolate leader %d from its peers (blackhole=%v); clients still reach it", id, blackhole)
	h.must(h.net.Isolate(id, blackhole))
	sleep(h.hold())
	h.fault("heal network")
	h.net.Heal()
}

func faultPartitionMinority(h *harness, w *workload) {
	leader := h.leaderOrAny()
	ids := allIDs(h.cluster)
	minority := []int{leader}
	var majority []int
	for _, id := range ids {
		if id != leader {
			if len(minority) < (len(ids)-1)/2 && h.rng.IntN(2) == 0 {
				minority = append(minority, id)
			} else {
				majority = append(majority, id)
			}
		}
	}
	h.fault("partition %v | %v (leader in the minority)", minority, majority)
	h.must(h.net.Partition(h.rng.IntN(2) == 0, minority, majority))
	sleep(h.hold())
	h.fault("heal network")
	h.net.Heal()
}

func faultAsymmetricLeader(h *harness, w *workload) {
	leader := h.leaderOrAny()
	outbound := h.rng.IntN(2) == 0
	for _, id := range allIDs(h.cluster) {
		if id == leader {
			continue
		}
		if outbound {
			h.must(h.net.Block(leader, id, false))
		} else {
			h.must(h.net.Block(id, leader, false))
		}
	}
	if outbound {
		h.fault("asymmetric: leader %d cannot send to its peers, hears them", leader)
	} else {
		h.fault("asymmetric: leader %d sends to its peers, hears nothing back", leader)
	}
	sleep(h.hold())
	h.fault("heal network")
	h.net.Heal()
}

func faultLossyNetwork(h *harness, w *workload) {
	f := faultproxy.Faults{
		KillProbability: 0.05 + 0.3*h.rng.Float64(),
		Delay:           time.Duration(1+h.rng.IntN(10)) * time.Millisecond,
		Jitter:          time.Duration(h.rng.IntN(3)) * time.Millisecond,
	}
	h.fault("lossy network on every link: %s", f)
	h.must(h.net.SetAll(f))
	sleep(h.hold() + time.Second)
	h.fault("heal network")
	h.net.Heal()
}

func faultSlowNetwork(h *harness, w *workload) {
	// 25 ms each way between replicas: a 50 ms peer round trip (WAN-like).
	f := faultproxy.Faults{Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond}
	h.fault("slow network on every link: %s", f)
	h.must(h.net.SetAll(f))
	sleep(h.hold() + time.Second)
	h.fault("heal network")
	h.net.Heal()
}

func faultTornWALTail(h *harness, w *workload) {
	id := h.randomRunning(0)
	h.fault("kill -9 replica %d, tear its WAL tail", id)
	h.must(h.cluster.Kill(id))
	what, err := h.cluster.TearWAL(id, h.rng)
	if errors.Is(err, cluster.ErrNoWAL) {
		h.fault("replica %d has no WAL yet: %v", id, err)
	} else {
		h.must(err)
		h.fault("replica %d: %s", id, what)
	}
	sleep(h.hold() / 2)
	h.fault("restart replica %d on the torn WAL (must recover)", id)
	h.restart(id)
}

// faultCorruptWAL damages a batch that a later batch vouches for: the replica must refuse to
// start, naming the file. It is then wiped and rejoins empty. An empty replica has forgotten
// its promises and acceptances, which is only safe if the others hold every chosen value:
// the workload is paused and the survivors must agree on their applied log before the wipe.
func faultCorruptWAL(h *harness, w *workload) {
	id := h.follower()
	w.pause()
	defer w.resume()
	h.fault("pause workload; kill -9 follower %d and corrupt its WAL", id)
	h.must(h.cluster.Kill(id))
	file, _, what, err := h.cluster.CorruptWAL(id, h.rng)
	if errors.Is(err, cluster.ErrNoWAL) {
		h.fault("replica %d: nothing to corrupt (%v); restart", id, err)
		h.restart(id)
		return
	}
	h.must(err)
	h.fault("replica %d: %s", id, what)
	err = h.cluster.Start(id)
	switch {
	case err == nil:
		h.t.Errorf("replica %d started on a corrupt WAL (%s)", id, what)
		h.must(h.cluster.Kill(id))
	case !errors.Is(err, cluster.ErrExited):
		h.t.Errorf("replica %d on a corrupt WAL: %v, want it to exit with an error", id, err)
	case !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), baseName(file)):
		h.t.Errorf("replica %d refused a corrupt WAL without naming the damage (want %q and %q): %v", id, "corrupt", baseName(file), err)
	default:
		h.fault("replica %d refused to start, naming %s", id, baseName(file))
	}
	h.cluster.ForgetExits()
	var survivors []int
	for _, other := range allIDs(h.cluster) {
		if other != id {
			survivors = append(survivors, other)
		}
	}
	if _, err := h.converge(survivors, 300*time.Millisecond, 30*time.Second); err != nil {
		h.t.Errorf("before wiping replica %d: %v", id, err)
		return
	}
	h.fault("wipe replica %d and restart it empty", id)
	h.must(h.cluster.Wipe(id))
	h.restart(id)
}

func baseName(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[i+1:]
	}
	return path
}

func faultHostileClients(h *harness, w *workload) {
	d := h.hold()
	h.fault("hostile clients for %v", d)
	problems := runHostileClients(h, d)
	for _, p := range problems {
		h.t.Errorf("hostile clients: %s", p)
	}
	h.fault("hostile clients done")
}

// describeFaults names the faults of a schedule.
func describeFaults(list []fault) string {
	var names []string
	for _, f := range list {
		names = append(names, f.name)
	}
	return fmt.Sprint(names)
}

func faultNetnsDisconnectLeader(h *harness, w *workload) {
	id := h.leaderOrAny()
	h.fault("take leader %d's link down (cut from peers and clients)", id)
	h.must(h.topo.Disconnect(id))
	sleep(h.hold())
	h.fault("bring replica %d's link up", id)
	h.must(h.topo.Reconnect(id))
}

// faultNetem shapes every replica's egress: a 5 ms round trip, then 25 ms with jitter, loss
// and reordering — with tc netem where the kernel has it, else with the userspace emulator
// (netns.CreateEmulated), whose counters must then show packets lost and reordered.
func faultNetem(h *harness, w *workload) {
	steps := []netns.Netem{
		{Delay: 2500 * time.Microsecond, Jitter: 500 * time.Microsecond},
		{Delay: 12500 * time.Microsecond, Jitter: 2 * time.Millisecond, LossPercent: 5, ReorderPercent: 10},
	}
	mode := "tc netem"
	if h.topo.Emulated {
		mode = "userspace emulator"
	}
	for _, n := range steps {
		for _, host := range h.topo.Hosts {
			h.must(h.topo.SetNetem(host.Index, n))
		}
		h.fault("%s on every replica's egress: %+v", mode, n)
		sleep(h.hold())
	}
	for _, host := range h.topo.Hosts {
		h.must(h.topo.ClearNetem(host.Index))
	}
	h.fault("netem cleared")
	if !h.topo.Emulated {
		return
	}
	var total netns.HostStats
	for _, host := range h.topo.Hosts {
		s, err := h.topo.Stats(host.Index)
		h.must(err)
		total.Forwarded += s.Forwarded
		total.Lost += s.Lost
		total.Reordered += s.Reordered
	}
	h.fault("emulator: replicas sent %d packets, %d lost, %d reordered", total.Forwarded, total.Lost, total.Reordered)
	if total.Lost == 0 || total.Reordered == 0 {
		h.t.Errorf("netem shaped nothing: replicas' packets %+v", total)
	}
}
