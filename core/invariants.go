package core

import "fmt"

// assertDeepInvariants checks, after every input, the invariants that cost a walk over the
// in-memory log or the peers. Off unless built with -tags invariants (make test's simulator
// and explorer passes build with it). A failure is a bug in core: it panics with the state.
func (r *Replica) assertDeepInvariants() {
	if !invariantsOn {
		return
	}
	fail := func(format string, args ...any) {
		panic(fmt.Sprintf("core: replica %d (%s, ballot %v, promised %v): ", r.id, r.role, r.ballot, r.promised) +
			fmt.Sprintf(format, args...))
	}
	for slot, st := range r.log {
		switch {
		case slot < r.logStart || slot >= r.logEnd:
			fail("slot %d held outside [logStart %d, logEnd %d)", slot, r.logStart, r.logEnd)
		case st.ballot != ChosenBallot && r.promised.Less(st.ballot):
			fail("slot %d accepted in %v above the promise", slot, st.ballot)
		case st.ballot.IsZero():
			fail("slot %d held with the zero ballot", slot)
		case st.durable != ChosenBallot && st.ballot.Less(st.durable) && st.ballot != ChosenBallot:
			// (A slot learned as chosen and then accepted again, with the same value, in a
			// leader's ballot keeps its durable ChosenBallot copy.)
			fail("slot %d durable in %v above its ballot %v", slot, st.durable, st.ballot)
		}
	}
	for s := max(r.logStart, r.applied); s < r.commit; s++ {
		if r.log[s] == nil {
			fail("chosen slot %d (commit %d) missing from the log", s, r.commit)
		}
	}
	if got := r.bytesIn(r.logStart, r.applied); got != r.retainedBytes {
		fail("retained bytes %d, the log holds %d in [%d, %d)", r.retainedBytes, got, r.logStart, r.applied)
	}
	switch r.role {
	case roleLeader:
		r.assertLeaderInvariants(fail)
	case roleCandidate:
		count := 0
		for _, p := range r.phase1.promised {
			if p {
				count++
			}
		}
		if r.phase1.selfCounted {
			count++
		}
		if count != r.phase1.count || r.promised != r.ballot {
			fail("phase 1 counts %d promises, %d recorded; promised %v", r.phase1.count, count, r.promised)
		}
	case rolePreCandidate:
		count := 1
		for _, g := range r.preVote.granted {
			if g {
				count++
			}
		}
		if count != r.preVote.count || r.preVote.count >= r.quorum {
			fail("pre-vote counts %d grants, %d recorded, quorum %d", r.preVote.count, count, r.quorum)
		}
	}
}

// assertLeaderInvariants: every slot in [commit, next) is held in our ballot, the inflight
// bytes are exactly theirs, and no ack or own vote reaches past next.
func (r *Replica) assertLeaderInvariants(fail func(string, ...any)) {
	sum := 0
	for s := r.commit; s < r.next; s++ {
		st := r.log[s]
		if st == nil || st.ballot != r.ballot {
			fail("proposed slot %d holds %+v, not a value in our ballot", s, st)
		}
		sum += len(st.value)
	}
	if sum != r.inflightSum {
		fail("inflight bytes %d, slots [%d, %d) hold %d", r.inflightSum, r.commit, r.next, sum)
	}
	if r.selfAckNext > r.next || r.durablePromised != r.ballot {
		fail("own votes reach %d past next %d, or the promise %v is not durable", r.selfAckNext, r.next, r.durablePromised)
	}
	for _, pr := range r.progress {
		if pr.ackNext > r.next {
			fail("peer %d acked through %d, past next %d", pr.id, pr.ackNext, r.next)
		}
	}
}
