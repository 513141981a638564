package chaos

import (
	"fmt"
	"sync"
	"time"

	"github.com/mpaxos/mpaxos/pipeline"
	"github.com/mpaxos/mpaxos/tests/chaos/history"
)

// Liveness faults: the cluster must make progress while the fault is still in place, not
// only after it heals. Each holds its fault for livenessHold and fails the run unless, with
// the fault in force, another replica took over as leader, the faulted leader stopped
// claiming leadership, and at least progressAppendsMin appends issued in the fault's second
// half (after progressSettle) were acknowledged before it was lifted. Only the second half
// counts because a leader whose disk stalls still commits for a few milliseconds with its
// followers' votes (it answers before its own fsync) until its in-flight Readies fill up.
const (
	// electionTimeout is the servers' (mpaxos serve's default: the harness does not set
	// --election-timeout). A follower campaigns after a random time in [T, 2T).
	electionTimeout = time.Duration(pipeline.DefaultElectionTicks) * pipeline.DefaultTickInterval
	// livenessHold is how long a liveness fault stays: the leader needs about one election
	// timeout to notice, the followers up to two more to campaign, then a round trip or two
	// to elect; the rest is steady progress to measure.
	livenessHold = 12 * electionTimeout
	// progressSettle is when, after the fault began, the progress count starts: six
	// election timeouts, twice what the hand-over needs, so a slow but correct election
	// passes, and the old leader's last commits before it went quiet do not count.
	progressSettle = livenessHold / 2
	// progressAppendsMin is how many appends, issued and acknowledged while the fault held,
	// count as progress: well under what a healthy cluster acknowledges in one election
	// timeout under the workload (hundreds), well above a lucky straggler.
	progressAppendsMin = 20
	// leaderWaitBefore bounds the wait for a leader before a liveness fault: after a
	// restart of a majority (random schedules) an election can take a few seconds.
	leaderWaitBefore = 10 * time.Second
	// leadershipPollInterval is how often the watch asks every replica whether it leads.
	leadershipPollInterval = 50 * time.Millisecond
)

// faultOneWayLeader cuts every follower's messages to the leader and leaves the leader's
// messages to them alone: the followers keep hearing heartbeats, the leader hears no
// Accepted, no Promise, no reply at all. Check-quorum must depose it (it has not heard a
// majority within an election timeout) and pre-vote must let the followers elect one of
// themselves. The asymmetric-leader fault cuts one direction too, but holds it for less and
// checks progress only after healing; this one asserts progress during the cut.
func faultOneWayLeader(h *harness, w *workload) {
	leader := h.leader(leaderWaitBefore)
	if leader == 0 {
		h.t.Errorf("one-way partition: no replica led within %v before the fault", leaderWaitBefore)
		return
	}
	blackhole := h.rng.IntN(2) == 0
	watch := h.watchLeadership(leader)
	from := h.rec.Now()
	for _, id := range allIDs(h.cluster) {
		if id != leader {
			h.must(h.net.Block(id, leader, blackhole))
		}
	}
	h.fault("one-way partition: followers cannot reach leader %d (blackhole=%v), it still reaches them; hold %v (%d election timeouts)",
		leader, blackhole, livenessHold, livenessHold/electionTimeout)
	sleep(livenessHold)
	to := h.rec.Now()
	watch.finish()
	h.fault("heal network")
	h.net.Heal()
	h.checkProgress("one-way partition", leader, watch, from, to)
}

// faultStallLeaderDisk stops the leader's fsyncs (cluster.StallDisk: the WAL's stall hook)
// while its process, network and clients stay up. A leader whose fsync has not returned for
// an election timeout must step down so another is elected; released, it must catch up, and
// nothing acknowledged may be lost (the end-of-run checks).
func faultStallLeaderDisk(h *harness, w *workload) {
	leader := h.leader(leaderWaitBefore)
	if leader == 0 {
		h.t.Errorf("stalled disk: no replica led within %v before the fault", leaderWaitBefore)
		return
	}
	watch := h.watchLeadership(leader)
	from := h.rec.Now()
	h.must(h.cluster.StallDisk(leader))
	h.fault("stall leader %d's disk (its WAL fsyncs wait); hold %v (%d election timeouts)",
		leader, livenessHold, livenessHold/electionTimeout)
	sleep(livenessHold)
	to := h.rec.Now()
	watch.finish()
	h.fault("release replica %d's disk", leader)
	h.must(h.cluster.ReleaseDisk(leader))
	h.checkProgress("stalled disk", leader, watch, from, to)
}

// checkProgress fails the run unless the cluster made progress between from and to
// (recorder times) with the fault in place.
func (h *harness) checkProgress(what string, faulted int, watch *leadershipWatch, from, to int64) {
	h.t.Helper()
	settled := from + int64(progressSettle)
	acknowledged, _ := h.appendsAcknowledged(settled, to)
	whole, first := h.appendsAcknowledged(from, to)
	firstText := "none"
	if whole > 0 {
		firstText = fmt.Sprintf("the first %v after the fault began", time.Duration(first-from).Round(time.Millisecond))
	}
	h.fault("%s, while it held (%v): %d appends issued and acknowledged in its second half, %d in all (%s); %s",
		what, time.Duration(to-from).Round(time.Millisecond), acknowledged, whole, firstText, watch.describe())
	if acknowledged < progressAppendsMin {
		h.t.Errorf("%s: no progress while the fault held: %d appends issued and acknowledged in its last %v, want at least %d (%s)",
			what, acknowledged, time.Duration(to-settled).Round(time.Millisecond), progressAppendsMin, watch.describe())
	}
	if leader, _ := watch.successor(); leader == 0 {
		h.t.Errorf("%s: no replica but the faulted leader %d led while the fault held", what, faulted)
	}
	if watch.stillLeading() {
		h.t.Errorf("%s: replica %d claimed leadership through the whole fault (it never stepped down)", what, faulted)
	}
}

// appendsAcknowledged counts the appends called at or after from that were acknowledged
// before to, and returns the earliest acknowledgement. An append called earlier could have
// been chosen before the fault, so it proves nothing about progress under it.
func (h *harness) appendsAcknowledged(from, to int64) (count int, first int64) {
	for _, op := range h.rec.Ops() {
		if op.Kind != history.KindAppend || op.Outcome != history.OutcomeOK || op.Call < from || op.Return >= to {
			continue
		}
		count++
		if first == 0 || op.Return < first {
			first = op.Return
		}
	}
	return count, first
}

// leadershipWatch polls every running replica's /debug/status during a fault: when a replica
// other than the faulted leader first claimed leadership, and when the faulted one stopped.
type leadershipWatch struct {
	h       *harness
	faulted int
	start   time.Time
	stop    chan struct{}
	done    chan struct{}

	mu          sync.Mutex
	successorID int           // first replica other than faulted to claim leadership
	successorAt time.Duration // since start
	steppedDown time.Duration // since start, when faulted first did not claim it; -1: never
}

func (h *harness) watchLeadership(faulted int) *leadershipWatch {
	watch := &leadershipWatch{h: h, faulted: faulted, start: time.Now(), stop: make(chan struct{}),
		done: make(chan struct{}), steppedDown: -1}
	go watch.run()
	return watch
}

func (watch *leadershipWatch) run() {
	defer close(watch.done)
	ticker := time.NewTicker(leadershipPollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-watch.stop:
			return
		case <-ticker.C:
		}
		for _, n := range watch.h.cluster.Nodes() {
			if !watch.h.running(n.ID) {
				continue
			}
			var s replicaStatus
			if getJSON(n.AdminAddr, "/debug/status", &s) != nil {
				continue // a replica that does not answer claims nothing
			}
			watch.observe(n.ID, s.IsLeader)
		}
	}
}

func (watch *leadershipWatch) observe(id int, leading bool) {
	at := time.Since(watch.start)
	watch.mu.Lock()
	defer watch.mu.Unlock()
	switch {
	case id == watch.faulted && !leading && watch.steppedDown < 0:
		watch.steppedDown = at
	case id != watch.faulted && leading && watch.successorID == 0:
		watch.successorID, watch.successorAt = id, at
	}
}

// finish stops the polling and waits for it.
func (watch *leadershipWatch) finish() {
	close(watch.stop)
	<-watch.done
}

func (watch *leadershipWatch) successor() (int, time.Duration) {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	return watch.successorID, watch.successorAt
}

func (watch *leadershipWatch) stillLeading() bool {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	return watch.steppedDown < 0
}

func (watch *leadershipWatch) describe() string {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	s := fmt.Sprintf("leader %d never stepped down", watch.faulted)
	if watch.steppedDown >= 0 {
		s = fmt.Sprintf("leader %d stepped down after %v", watch.faulted, watch.steppedDown.Round(time.Millisecond))
	}
	if watch.successorID == 0 {
		return s + ", no other replica led"
	}
	return s + fmt.Sprintf(", replica %d led after %v", watch.successorID, watch.successorAt.Round(time.Millisecond))
}
