package core

import (
	"fmt"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
)

type role uint8

const (
	roleFollower     role = iota // acceptor and learner only
	rolePreCandidate             // asking peers whether a leader is alive; no ballot raised
	roleCandidate                // running phase 1 in r.ballot
	roleLeader                   // phase 1 done for r.ballot; running phase 2
)

func (ro role) String() string {
	return [...]string{"follower", "pre-candidate", "candidate", "leader"}[ro]
}

// slotState is one slot of the in-memory log.
type slotState struct {
	// ballot: the ballot value was accepted in (ChosenBallot if learned as chosen).
	// Invariant: ballot <= promised unless ballot == ChosenBallot.
	ballot codec.Ballot
	// value is owned by core and never modified once stored (messages alias it).
	value []byte
	// durable: the ballot of the latest version of this slot known to be persisted (zero if
	// none). The leader counts its own vote for a slot only once durable == its ballot.
	durable codec.Ballot
}

// peerProgress is the leader's view of one other replica during phase 2.
type peerProgress struct {
	id uint32
	// ackNext: the peer has accepted, in the leader's ballot, every slot in [commit, ackNext).
	ackNext uint64
	// sendNext: Accepts for slots below sendNext were sent; reset to ackNext on retransmit.
	sendNext  uint64
	idleTicks int // ticks without ack progress while slots are outstanding
	// heard: the peer answered us (Accepted or HeartbeatReply) since the last check-quorum
	// round; a leader that hears fewer than a majority in a round steps down.
	heard bool
}

// Replica is defined in api.go's contract; the fields are grouped by Paxos role.
type Replica struct {
	cfg     Config
	id      uint32
	others  []uint32 // every peer but this replica, in Config order
	quorum  int      // a strict majority of len(cfg.Peers)
	storage Storage  // may be nil: catch-up then serves only from memory

	// Acceptor. Invariant: promised never decreases, and is >= every accepted ballot in log
	// (ChosenBallot aside). durablePromised <= promised is what the last Advance persisted.
	promised        codec.Ballot
	durablePromised codec.Ballot
	log             map[uint64]*slotState
	logStart        uint64 // every slot < logStart is chosen, applied and dropped from memory
	logEnd          uint64 // every slot in log is < logEnd
	run             ackRun // the acceptor's current cumulative-ack run

	// Learner. Invariant: applied <= handedNext <= commit, logStart <= handedNext (a snapshot
	// install moves logStart before Advance moves applied), and every slot in
	// [logStart, commit) is in log holding its chosen value.
	commit     uint64
	handedNext uint64 // Ready.Chosen handed out every slot < handedNext
	applied    uint64 // Advance acknowledged every slot < applied
	// retainedBytes: the bytes of the values of the slots in [logStart, applied) still in log
	// (kept for catch-up; bounded by RetainSlots and RetainBytesMax).
	retainedBytes int
	snapshotSlot  uint64 // every slot < snapshotSlot is covered by an application snapshot
	catchUp       catchUpState

	// Proposer.
	role        role
	leader      uint32       // leader hint, 0 if unknown
	ballot      codec.Ballot // the ballot of our campaign or leadership (zero if never)
	highestSeen codec.Ballot // highest ballot seen in any message; a new ballot exceeds it
	phase1      phase1State  // valid while role == roleCandidate
	preVote     preVoteState // valid while role == rolePreCandidate
	next        uint64       // leader: next slot Propose uses; commit <= next
	inflightSum int          // leader: bytes of values in [commit, next)
	progress    []peerProgress
	selfAckNext uint64 // leader: own durable votes in ballot cover [commit, selfAckNext)
	flushNeeded bool   // leader: Accepts may be pending for some peer

	// Timers, in ticks.
	electionElapsed  int
	electionTimeout  int // randomised in [ElectionTicks, 2*ElectionTicks)
	heartbeatElapsed int
	quorumElapsed    int // leader: ticks into the current check-quorum round
	// syncWaitTicks: ticks since the last Advance while some Ready is outstanding. A disk
	// that does not return an fsync for ElectionTicks makes a leader step down and keeps this
	// replica from campaigning on its own timer (it could never count its own promise).
	syncWaitTicks int

	// Output awaiting Ready.
	unstable       []codec.Entry
	msgs           []codec.Message
	msgsAfter      []codec.Message
	savableCommit  uint64 // every slot below it is chosen and durably stored
	savedCommit    uint64 // the commit last handed out in Ready.HardState
	savedPromised  codec.Ballot
	readyOut       int    // Readies handed out and not yet advanced (advanced in order)
	pendingInstall uint64 // snapshot slot to hand out in the next Ready
}

// ackRun: the acceptor accepted in ballot every slot in [from, next).
type ackRun struct {
	ballot codec.Ballot
	from   uint64
	next   uint64
}

type catchUpState struct {
	inflight bool
	ticks    int
	wanted   uint64 // snapshot slot a peer told us to install (0 if none)
}

type phase1State struct {
	from         uint64 // first slot phase 1 covers (our commit when it began)
	promised     []bool // by index in others
	count        int    // promises counted, own included
	selfCounted  bool
	recovered    map[uint64]codec.Entry // highest-ballot entry reported per slot
	recoveredEnd uint64                 // every recovered slot is < recoveredEnd
	elapsed      int                    // ticks since the last Prepare broadcast
}

// New creates a replica from its persisted state. It never breaks a promise: the promised
// ballot is the highest of the saved one and every persisted accepted ballot.
func New(cfg Config, p Persisted, s Storage) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Replica{
		cfg:     cfg,
		id:      cfg.ID,
		quorum:  len(cfg.Peers)/2 + 1,
		storage: s,
		log:     make(map[uint64]*slotState, len(p.Entries)),
	}
	r.cfg.Peers = slices.Clone(cfg.Peers)
	for _, id := range cfg.Peers {
		if id != cfg.ID {
			r.others = append(r.others, id)
		}
	}
	if err := r.restore(p); err != nil {
		return nil, err
	}
	r.resetElectionTimer()
	return r, nil
}

func (r *Replica) restore(p Persisted) error {
	if p.HardState.Promised.Round > roundMax {
		return fmt.Errorf("core: persisted promise %v is above the highest usable round %d: "+
			"the hard state is corrupt or was written by a forged message; refusing to start", p.HardState.Promised, uint64(roundMax))
	}
	r.promised = p.HardState.Promised
	r.snapshotSlot = p.SnapshotSlot
	r.logStart = p.SnapshotSlot
	r.logEnd = p.SnapshotSlot
	for _, e := range p.Entries {
		if e.Ballot.IsZero() {
			return persistedError(e.Slot, "persisted entry for slot %d has the zero ballot", e.Slot)
		}
		if e.Ballot.Round > roundMax && e.Ballot != ChosenBallot {
			return persistedError(e.Slot, "persisted entry for slot %d has ballot %v, above the highest usable round %d; refusing to start",
				e.Slot, e.Ballot, uint64(roundMax))
		}
		if e.Ballot != ChosenBallot && r.promised.Less(e.Ballot) {
			r.promised = e.Ballot
		}
		if e.Slot < r.logStart {
			continue
		}
		if _, dup := r.log[e.Slot]; dup {
			return persistedError(e.Slot, "persisted entries hold slot %d twice", e.Slot)
		}
		r.log[e.Slot] = &slotState{ballot: e.Ballot, value: e.Value, durable: e.Ballot}
		r.logEnd = max(r.logEnd, e.Slot+1)
	}
	// Only the hard state keeps a promise for good: entries whose ballot raised promised above
	// it (their hard state was lost in a crash) go once a snapshot covers them. So the promise
	// counts as saved and durable at the hard state's, and the first Ready saves the rest
	// before any message vouching for it leaves.
	r.durablePromised, r.savedPromised = p.HardState.Promised, p.HardState.Promised
	r.highestSeen = r.promised
	r.applied = max(p.Applied, p.SnapshotSlot)
	r.commit = max(p.HardState.Commit, r.applied)
	for s := r.applied; s < r.commit; s++ {
		if r.log[s] == nil {
			return persistedError(s, "persisted commit %d but no entry for slot %d", r.commit, s)
		}
	}
	for st := r.log[r.commit]; st != nil && st.ballot == ChosenBallot; st = r.log[r.commit] {
		r.commit++ // learned as chosen before the commit point reached the disk
	}
	r.handedNext = r.applied
	r.retainedBytes = r.bytesIn(r.logStart, r.applied)
	r.savableCommit, r.savedCommit = r.commit, p.HardState.Commit
	return nil
}

// Step feeds one message from a peer. It returns an error wrapping ErrInvalidMessage for a
// malformed message (and changes nothing); stale messages are ignored without error.
func (r *Replica) Step(m codec.Message) error {
	if err := r.validate(&m); err != nil {
		return err
	}
	if r.highestSeen.Less(m.Ballot) && m.Ballot != ChosenBallot &&
		m.Type != codec.TypePreVote && m.Type != codec.TypePreVoteReply { // pre-votes raise nothing
		r.highestSeen = m.Ballot
	}
	switch m.Type {
	case codec.TypePrepare:
		r.onPrepare(&m)
	case codec.TypePromise:
		r.onPromise(&m)
	case codec.TypeAccept:
		r.onAccept(&m)
	case codec.TypeAccepted:
		r.onAccepted(&m)
	case codec.TypeNack:
		r.onNack(&m)
	case codec.TypeHeartbeat:
		r.onHeartbeat(&m)
	case codec.TypeHeartbeatReply:
		r.onHeartbeatReply(&m)
	case codec.TypeCatchUpRequest:
		r.onCatchUpRequest(&m)
	case codec.TypeCatchUpReply:
		r.onCatchUpReply(&m)
	case codec.TypeSnapshotChunk:
		r.onSnapshotChunk(&m)
	case codec.TypePreVote:
		r.onPreVote(&m)
	case codec.TypePreVoteReply:
		r.onPreVoteReply(&m)
	}
	r.assertInvariants()
	return nil
}

func (r *Replica) validate(m *codec.Message) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %v from %d: %s", ErrInvalidMessage, m.Type, m.From, fmt.Sprintf(format, args...))
	}
	if m.To != r.id {
		return bad("addressed to replica %d, this is %d", m.To, r.id)
	}
	if m.From == r.id || !slices.Contains(r.others, m.From) {
		return bad("sender %d is not another member of %v", m.From, r.cfg.Peers)
	}
	if m.Ballot.Round > roundMax && m.Ballot != ChosenBallot {
		return bad("ballot round %d is above the highest usable round %d", m.Ballot.Round, uint64(roundMax))
	}
	switch m.Type {
	case codec.TypePrepare, codec.TypeAccept, codec.TypeHeartbeat, codec.TypePreVote:
		if m.Ballot.Replica != m.From || m.Ballot.Round == 0 || m.Ballot == ChosenBallot {
			return bad("ballot %v is not a ballot of the sender", m.Ballot)
		}
	case codec.TypePreVoteReply:
		if m.Ballot.Replica != r.id || m.Count > 1 {
			return bad("ballot %v, count %d: not a reply to a pre-vote of ours", m.Ballot, m.Count)
		}
	case codec.TypePromise, codec.TypeAccepted, codec.TypeNack, codec.TypeHeartbeatReply,
		codec.TypeCatchUpRequest, codec.TypeCatchUpReply, codec.TypeSnapshotChunk:
	default:
		return bad("unknown message type %d", m.Type)
	}
	if len(m.Values) > 0 && m.Slot+uint64(len(m.Values)) < m.Slot {
		return bad("slot %d + %d values overflows", m.Slot, len(m.Values))
	}
	for i, v := range m.Values {
		if len(v) > r.cfg.ValueBytesMax {
			return bad("value %d is %d bytes, over ValueBytesMax %d", i, len(v), r.cfg.ValueBytesMax)
		}
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if len(e.Value) > r.cfg.ValueBytesMax {
			return bad("entry for slot %d is %d bytes, over ValueBytesMax %d", e.Slot, len(e.Value), r.cfg.ValueBytesMax)
		}
		if e.Ballot.IsZero() || (m.Ballot.Less(e.Ballot) && e.Ballot != ChosenBallot) ||
			e.Ballot.Round > roundMax && e.Ballot != ChosenBallot {
			return bad("entry for slot %d has ballot %v, not in (0, %v]", e.Slot, e.Ballot, m.Ballot)
		}
	}
	return nil
}

// Tick advances logical time by one unit: election timeouts, heartbeats, retransmits,
// check-quorum and the disk-stall watch.
func (r *Replica) Tick() {
	if r.catchUp.inflight {
		r.catchUp.ticks++
		if r.catchUp.ticks >= r.cfg.RetransmitTicks {
			r.catchUp.inflight = false // the request or its reply was lost: allow another
		}
	}
	if r.readyOut > 0 {
		r.syncWaitTicks++
	}
	switch r.role {
	case roleLeader:
		r.tickLeader()
	case roleCandidate:
		r.phase1.elapsed++
		if r.phase1.elapsed >= r.cfg.RetransmitTicks {
			r.broadcastPrepare()
		}
		fallthrough
	case roleFollower, rolePreCandidate:
		r.electionElapsed++
		if r.electionElapsed >= r.electionTimeout {
			r.timeoutElection()
		}
	}
}

func (r *Replica) resetElectionTimer() {
	r.electionElapsed = 0
	r.electionTimeout = r.cfg.ElectionTicks + r.cfg.Rand.IntN(r.cfg.ElectionTicks)
}

// Status returns a read-only view of the replica.
func (r *Replica) Status() Status {
	st := Status{
		ID:       r.id,
		Leader:   r.leader,
		IsLeader: r.role == roleLeader,
		Ballot:   r.ballot,
		Promised: r.promised,
		Commit:   r.commit,
		Applied:  r.applied,
	}
	if r.role == roleLeader {
		st.NextSlot = r.next
		st.Inflight = int(r.next - r.commit)
	}
	return st
}

// SnapshotWanted returns the snapshot slot a peer reported when this replica asked it for
// slots it has compacted (0 if none): the driver should fetch that snapshot and feed its final
// SnapshotChunk to Step. See doc.go.
func (r *Replica) SnapshotWanted() uint64 { return r.catchUp.wanted }

// Compact records that the application snapshotted every slot < slot. Memory below it is
// dropped; catch-up requests below it are answered with a snapshot hint. A slot above Applied
// is clamped to Applied: the application cannot have snapshotted what it has not applied.
func (r *Replica) Compact(slot uint64) {
	slot = min(slot, r.applied)
	if slot <= r.snapshotSlot {
		return
	}
	r.snapshotSlot = slot
	r.trimBelow(slot)
}

func (r *Replica) trimBelow(slot uint64) {
	slot = min(slot, r.applied)
	for ; r.logStart < slot; r.logStart++ {
		if st := r.log[r.logStart]; st != nil {
			r.retainedBytes -= len(st.value)
		}
		delete(r.log, r.logStart)
	}
	r.logEnd = max(r.logEnd, r.logStart)
}

// trimRetained drops applied slots beyond RetainSlots, then beyond RetainBytesMax.
func (r *Replica) trimRetained() {
	if r.applied > uint64(r.cfg.RetainSlots) {
		r.trimBelow(r.applied - uint64(r.cfg.RetainSlots))
	}
	for r.cfg.RetainBytesMax > 0 && r.retainedBytes > r.cfg.RetainBytesMax && r.logStart < r.applied {
		r.trimBelow(r.logStart + 1)
	}
}

// bytesIn sums the values of the slots in [from, to) held in log.
func (r *Replica) bytesIn(from, to uint64) int {
	sum := 0
	for s := from; s < to; s++ {
		if st := r.log[s]; st != nil {
			sum += len(st.value)
		}
	}
	return sum
}

// assertInvariants checks the cheap invariants after every input; a failure is a bug in core.
func (r *Replica) assertInvariants() {
	if !(r.logStart <= r.handedNext && r.applied <= r.handedNext && r.handedNext <= r.commit) {
		panic(fmt.Sprintf("core: replica %d: want logStart %d, applied %d <= handedNext %d <= commit %d",
			r.id, r.logStart, r.applied, r.handedNext, r.commit))
	}
	if r.retainedBytes < 0 {
		panic(fmt.Sprintf("core: replica %d: retained bytes %d below zero", r.id, r.retainedBytes))
	}
	if r.promised.Less(r.durablePromised) {
		panic(fmt.Sprintf("core: replica %d: promised %v below durable promise %v", r.id, r.promised, r.durablePromised))
	}
	if r.role == roleLeader && (r.next < r.commit || r.promised != r.ballot) {
		panic(fmt.Sprintf("core: replica %d: leader in %v with next %d, commit %d, promised %v",
			r.id, r.ballot, r.next, r.commit, r.promised))
	}
	r.assertDeepInvariants()
}
