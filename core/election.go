package core

import (
	"fmt"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
)

// Leader stability: pre-vote, check-quorum and the disk-stall watch. None of these is needed
// for safety (Paxos is safe with any number of proposers); they keep one healthy leader in
// place and replace an unhealthy one.
//
//   - Pre-vote. A follower whose election timer fires does not raise any ballot: it first asks
//     every peer, in PreVote, whether it still hears a leader. A peer grants unless it leads or
//     heard a leader within ElectionTicks. Only with a majority of grants (its own included)
//     does it run phase 1. A replica cut off for a while therefore comes back with the ballot
//     it left with, and its Nacks cannot depose a leader the others still follow.
//   - Check-quorum. A leader that has not heard an Accepted or HeartbeatReply from a majority
//     (itself included) within a round of ElectionTicks steps down. Under a one-way partition
//     (leader to followers works, followers to leader does not) the followers keep resetting
//     their timers on its heartbeats; without this the cluster would stall until the link heals.
//   - Disk stall. A leader whose oldest outstanding Ready has not been advanced for
//     ElectionTicks (its fsync has not returned) steps down, and while the stall lasts the
//     replica does not campaign on its own timer: it could not count its own promise.

// preVoteState is the pre-candidate's tally.
type preVoteState struct {
	ballot  codec.Ballot // the ballot phase 1 would use; identifies the replies
	granted []bool       // by index in others
	count   int          // grants, our own included
}

// roundMax: no campaign goes above it, so ballot arithmetic never wraps. A ballot this high
// can only come from a forged message (2^63 campaigns at one per microsecond take ~300,000
// years); a replica that has seen one stops campaigning instead of wrapping to round 0.
const roundMax = 1<<63 - 1

// nextBallot is the ballot a campaign of ours would use now: above every ballot we promised or
// saw. ok is false when that would pass roundMax.
func (r *Replica) nextBallot() (codec.Ballot, bool) {
	round := max(r.promised.Round, r.highestSeen.Round)
	if round >= roundMax {
		return codec.Ballot{}, false
	}
	return codec.Ballot{Round: round + 1, Replica: r.id}, true
}

// timeoutElection runs when the election timer fires on a follower, pre-candidate or
// candidate: ask for pre-votes, unless our own disk is stalled.
func (r *Replica) timeoutElection() {
	if r.diskStalled() {
		r.resetElectionTimer()
		return
	}
	r.preCampaign()
}

// diskStalled: some Ready has been outstanding, with no Advance, for ElectionTicks.
func (r *Replica) diskStalled() bool {
	return r.readyOut > 0 && r.syncWaitTicks >= r.cfg.ElectionTicks
}

// preCampaign asks every peer whether it would follow a campaign of ours. It changes no
// ballot: a replica that cannot reach a majority never raises its promise.
func (r *Replica) preCampaign() {
	b, ok := r.nextBallot()
	if !ok {
		r.resetElectionTimer()
		return
	}
	r.role, r.leader = rolePreCandidate, 0
	r.progress, r.phase1 = nil, phase1State{}
	r.inflightSum = 0
	r.preVote = preVoteState{ballot: b, granted: make([]bool, len(r.others)), count: 1}
	r.resetElectionTimer()
	if r.preVote.count >= r.quorum {
		r.Campaign() // a one-replica cluster
		return
	}
	for _, id := range r.others {
		r.msgs = append(r.msgs, codec.Message{Type: codec.TypePreVote, From: r.id, To: id,
			Ballot: b, Slot: r.commit})
	}
}

// onPreVote grants unless we lead or heard a live leader within ElectionTicks. It changes
// no state but the reply.
func (r *Replica) onPreVote(m *codec.Message) {
	heardLeader := r.role == roleLeader || r.leader != 0 && r.electionElapsed < r.cfg.ElectionTicks
	reply := codec.Message{Type: codec.TypePreVoteReply, From: r.id, To: m.From, Ballot: m.Ballot}
	if !heardLeader {
		reply.Count = 1
	}
	r.msgs = append(r.msgs, reply)
}

// onPreVoteReply counts one grant for our current pre-vote; a majority starts phase 1.
func (r *Replica) onPreVoteReply(m *codec.Message) {
	if r.role != rolePreCandidate || m.Ballot != r.preVote.ballot || m.Count == 0 {
		return // stale, refused, or we moved on
	}
	i := slices.Index(r.others, m.From)
	if r.preVote.granted[i] {
		return // duplicate
	}
	r.preVote.granted[i] = true
	r.preVote.count++
	if r.preVote.count > len(r.cfg.Peers) {
		panic(fmt.Sprintf("core: replica %d: %d pre-vote grants among %d replicas", r.id, r.preVote.count, len(r.cfg.Peers)))
	}
	if r.preVote.count >= r.quorum {
		r.Campaign()
	}
}

// checkQuorum ends a check-quorum round: a leader that heard fewer than a majority (itself
// included) in it steps down. Called from tickLeader every ElectionTicks.
func (r *Replica) checkQuorum() {
	r.quorumElapsed = 0
	heard := 1
	for i := range r.progress {
		if r.progress[i].heard {
			heard++
		}
		r.progress[i].heard = false
	}
	if heard < r.quorum {
		r.stepDown()
	}
}
