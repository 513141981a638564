package core

import (
	"fmt"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
)

// Campaign starts phase 1 now (skipping pre-vote) in a ballot above every ballot this replica
// has seen. Phase 1 covers every slot from this replica's commit point. Our own promise counts
// once the Ready that saves it is advanced. A replica that has seen a ballot at roundMax does
// not campaign (it could not go higher without wrapping).
func (r *Replica) Campaign() {
	b, ok := r.nextBallot()
	if !ok {
		return
	}
	r.promise(b)
	r.role, r.ballot, r.leader = roleCandidate, b, 0
	r.progress, r.preVote = nil, preVoteState{}
	r.phase1 = phase1State{
		from:      r.commit,
		promised:  make([]bool, len(r.others)),
		recovered: make(map[uint64]codec.Entry),
	}
	r.resetElectionTimer()
	r.broadcastPrepare()
	r.maybeCountSelfPromise() // a promise already durable (never in practice) counts now
}

// broadcastPrepare sends Prepare to every peer that has not promised yet.
func (r *Replica) broadcastPrepare() {
	r.phase1.elapsed = 0
	for i, id := range r.others {
		if !r.phase1.promised[i] {
			r.msgs = append(r.msgs, codec.Message{Type: codec.TypePrepare, From: r.id, To: id,
				Ballot: r.ballot, Slot: r.phase1.from})
		}
	}
}

// maybeCountSelfPromise counts our own promise once it is durable.
func (r *Replica) maybeCountSelfPromise() {
	if r.role != roleCandidate || r.phase1.selfCounted || r.durablePromised != r.ballot {
		return
	}
	r.phase1.selfCounted = true
	r.phase1.count++
	for s := r.phase1.from; s < r.logEnd; s++ {
		if st := r.log[s]; st != nil {
			r.recoverEntry(codec.Entry{Slot: s, Ballot: st.ballot, Value: st.value})
		}
	}
	r.maybeBecomeLeader()
}

// onPromise counts one peer's promise for our ballot and merges the entries it reports.
func (r *Replica) onPromise(m *codec.Message) {
	if r.role != roleCandidate || m.Ballot != r.ballot || m.Slot != r.phase1.from {
		return // stale: another campaign, or we already lead
	}
	i := slices.Index(r.others, m.From)
	if r.phase1.promised[i] {
		return // duplicate
	}
	r.phase1.promised[i] = true
	r.phase1.count++
	for _, e := range m.Entries {
		if e.Slot >= r.phase1.from {
			e.Value = append([]byte(nil), e.Value...) // the message buffer is reused
			r.recoverEntry(e)
		}
	}
	r.maybeBecomeLeader()
}

// recoverEntry keeps, per slot, the entry with the highest ballot reported in phase 1.
func (r *Replica) recoverEntry(e codec.Entry) {
	if cur, ok := r.phase1.recovered[e.Slot]; ok && !cur.Ballot.Less(e.Ballot) {
		return
	}
	r.phase1.recovered[e.Slot] = e
	r.phase1.recoveredEnd = max(r.phase1.recoveredEnd, e.Slot+1)
}

// maybeBecomeLeader finishes phase 1 once a majority promised, our own durable promise
// among them: every slot from our commit point to the highest reported is proposed again in
// our ballot, with the value of the highest ballot reported for it, or a no-op where none was.
//
// Our own promise must be durable before we lead, even when the peers' promises alone are a
// majority: a ballot is used at most once, ever. Leading on peer promises alone, a crash
// before our promise reaches the disk would restart us below our ballot; we would campaign in
// the same ballot again and propose a second value at a slot where an acceptor already holds
// the first one in that ballot (it takes the second Accept for a retransmission), so two
// replicas would apply different values at one slot. Once the promise is durable, a restart
// recovers it and the next campaign picks a higher round. The Prepares still leave at once,
// so the own fsync runs in parallel with the peers' and costs no extra round trip.
func (r *Replica) maybeBecomeLeader() {
	if r.phase1.count < r.quorum || !r.phase1.selfCounted {
		return
	}
	if r.promised != r.ballot || r.durablePromised != r.ballot {
		panic(fmt.Sprintf("core: replica %d: phase 1 of %v done with promised %v, durable %v",
			r.id, r.ballot, r.promised, r.durablePromised))
	}
	r.role, r.leader = roleLeader, r.id
	r.next = max(r.commit, r.phase1.recoveredEnd)
	r.inflightSum = 0
	for s := r.commit; s < r.next; s++ {
		var v []byte // no-op unless some acceptor reported a value
		if e, ok := r.phase1.recovered[s]; ok {
			v = e.Value
		}
		r.storeSlot(s, r.ballot, v)
		r.inflightSum += len(v)
	}
	r.phase1 = phase1State{}
	r.progress = make([]peerProgress, len(r.others))
	for i, id := range r.others {
		r.progress[i] = peerProgress{id: id, ackNext: r.commit, sendNext: r.commit}
	}
	r.selfAckNext = r.commit
	r.quorumElapsed = 0
	r.flushNeeded = true
	r.broadcastHeartbeat()
}

// Propose appends value at the next slot in our ballot. Leader only; value is retained.
func (r *Replica) Propose(value []byte) (uint64, error) {
	if r.role != roleLeader {
		return 0, ErrNotLeader
	}
	if len(value) > r.cfg.ValueBytesMax {
		return 0, fmt.Errorf("%w: %d bytes, ValueBytesMax is %d", ErrValueTooLarge, len(value), r.cfg.ValueBytesMax)
	}
	if r.next-r.commit >= uint64(r.cfg.Window) ||
		r.next > r.commit && r.inflightSum+len(value) > r.cfg.InflightBytesMax {
		return 0, ErrWindowFull
	}
	slot := r.next
	r.next++
	r.inflightSum += len(value)
	r.storeSlot(slot, r.ballot, value)
	r.flushNeeded = true
	return slot, nil
}

// flushAccepts sends every peer the Accepts it has not been sent, within the window.
func (r *Replica) flushAccepts() {
	r.flushNeeded = false
	if r.role != roleLeader {
		return
	}
	limit := min(r.next, r.commit+uint64(r.cfg.Window))
	for i := range r.progress {
		pr := &r.progress[i]
		for start := max(pr.sendNext, r.commit); start < limit; {
			m := codec.Message{Type: codec.TypeAccept, From: r.id, To: pr.id, Ballot: r.ballot,
				Slot: start, Commit: r.commit}
			bytesSum := 0
			for s := start; s < limit && len(m.Values) < r.cfg.AcceptValuesMax &&
				(len(m.Values) == 0 || bytesSum+len(r.log[s].value) <= r.cfg.CatchUpBytesMax); s++ {
				m.Values = append(m.Values, r.log[s].value)
				bytesSum += len(r.log[s].value)
			}
			r.msgs = append(r.msgs, m)
			start += uint64(len(m.Values))
			pr.sendNext = start
		}
	}
}

// onAccepted records a peer's cumulative ack in our ballot and advances the commit point.
func (r *Replica) onAccepted(m *codec.Message) {
	if r.role != roleLeader || m.Ballot != r.ballot {
		return
	}
	r.recordAck(m.From, m.Slot)
}

func (r *Replica) recordAck(from uint32, last uint64) {
	if last >= r.next {
		return // cannot be: nothing at or above next was proposed in our ballot
	}
	pr := &r.progress[slices.Index(r.others, from)]
	pr.heard = true
	if last+1 <= pr.ackNext {
		return // stale or duplicate
	}
	pr.ackNext, pr.idleTicks = last+1, 0
	pr.sendNext = max(pr.sendNext, pr.ackNext)
	r.maybeCommit()
}

// onHeartbeatReply: a non-zero Ballot equal to ours makes it a cumulative ack.
func (r *Replica) onHeartbeatReply(m *codec.Message) {
	if r.role != roleLeader {
		return
	}
	r.progress[slices.Index(r.others, m.From)].heard = true
	if m.Commit > r.commit {
		// The peer chose slots we re-proposed but it can no longer acknowledge (dropped from
		// its memory): fetch them instead.
		r.requestCatchUp(m.From)
	}
	if m.Ballot == r.ballot {
		r.recordAck(m.From, m.Slot)
	}
}

// maybeCommit advances the commit point to the highest slot a majority accepted in our ballot,
// our own vote counting only where it is durable. Counted once per call, over every voter.
func (r *Replica) maybeCommit() {
	r.selfAckNext = max(r.selfAckNext, r.commit) // below commit every slot is chosen anyway
	for st := r.log[r.selfAckNext]; r.selfAckNext < r.next && st.durable == r.ballot; st = r.log[r.selfAckNext] {
		r.selfAckNext++
	}
	acks := make([]uint64, 0, len(r.cfg.Peers))
	acks = append(acks, r.selfAckNext)
	for i := range r.progress {
		acks = append(acks, r.progress[i].ackNext)
	}
	slices.Sort(acks)
	chosenEnd := acks[len(acks)-r.quorum] // a majority acked every slot below it
	if chosenEnd <= r.commit {
		return
	}
	for s := r.commit; s < chosenEnd; s++ {
		st := r.log[s]
		if st == nil || st.ballot != r.ballot {
			panic(fmt.Sprintf("core: replica %d: majority acked slot %d in %v but the log holds %+v", r.id, s, r.ballot, st))
		}
		r.inflightSum -= len(st.value)
	}
	r.commit = chosenEnd
	r.flushNeeded = true // the window moved
}

// onNack: a peer promised a higher ballot (or needs us to catch up first).
func (r *Replica) onNack(m *codec.Message) {
	if r.role != rolePreCandidate { // a pre-vote raises no ballot a Nack could answer
		r.stepDownIfPreempted(m.Ballot)
	}
	if m.Slot > r.commit {
		r.requestCatchUp(m.From)
	}
}

// stepDownIfPreempted makes a candidate or leader a follower once a higher ballot exists, and
// a pre-candidate a follower once a leader or candidate it accepts shows up. The randomised
// election timeout that follows is the backoff that ends duels.
func (r *Replica) stepDownIfPreempted(b codec.Ballot) {
	if r.role == roleFollower || r.role != rolePreCandidate && !r.ballot.Less(b) {
		return
	}
	r.stepDown()
}

func (r *Replica) stepDown() {
	r.role, r.leader = roleFollower, 0
	r.progress, r.phase1, r.preVote = nil, phase1State{}, preVoteState{}
	r.inflightSum = 0
	r.resetElectionTimer()
}

// tickLeader sends heartbeats and retransmits Accepts a peer has not acknowledged.
func (r *Replica) tickLeader() {
	if r.diskStalled() {
		r.stepDown() // our votes cannot count: let a replica with a working disk lead
		return
	}
	r.quorumElapsed++
	if r.quorumElapsed >= r.cfg.ElectionTicks {
		if r.checkQuorum(); r.role != roleLeader {
			return
		}
	}
	r.heartbeatElapsed++
	if r.heartbeatElapsed >= r.cfg.HeartbeatTicks {
		r.broadcastHeartbeat()
	}
	for i := range r.progress {
		pr := &r.progress[i]
		if pr.ackNext >= r.next {
			pr.idleTicks = 0
			continue
		}
		pr.idleTicks++
		if pr.idleTicks >= r.cfg.RetransmitTicks {
			pr.idleTicks = 0
			pr.sendNext = max(pr.ackNext, r.commit)
			r.flushNeeded = true
		}
	}
}

func (r *Replica) broadcastHeartbeat() {
	r.heartbeatElapsed = 0
	for _, id := range r.others {
		r.msgs = append(r.msgs, codec.Message{Type: codec.TypeHeartbeat, From: r.id, To: id,
			Ballot: r.ballot, Commit: r.commit})
	}
}
