package sim

import (
	"bytes"
	"encoding/binary"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// Clients and the replicated state machine. A client is (client id, seq, seq floor) as in
// codec.Command: it numbers its commands 1, 2, 3, ..., keeps at most ClientInflightMax of
// them unanswered, and retries an unanswered one with the same seq after retryElectionTimeouts
// election timeouts, to whichever replica leads then (batched with other commands, so a
// command may be chosen several times). Its floor is its lowest unanswered seq, and it
// submits a new command only while the new seq stays within ClientInflightMax of it. Each replica's
// state machine applies chosen batches through core.Sessions the way the pipeline's apply
// stage does, giving every applied command the next dense offset.

// batchCommandsMax bounds the commands a client-side ingest puts in one slot value.
const batchCommandsMax = 4

// retryElectionTimeouts: an unanswered command is sent again after this many election
// timeouts (its leader may have lost leadership, or the value may have been lost).
const retryElectionTimeouts = 4

// payloadBytes: each command's payload, half random, half a repeated pattern (so S2 finds
// something to compress in an Accept of several batches).
const payloadBytes = 16

type commandKey struct {
	client uint64
	seq    uint64
}

// position is a command's answer: where it was applied.
type position struct {
	slot   uint64
	index  uint32
	offset uint64
}

type command struct {
	seq     uint64
	payload []byte
	retryAt int
}

type client struct {
	id      uint64
	next    uint64     // the next seq
	pending []*command // unanswered, by increasing seq
}

// floor: every seq below it was answered and will never be sent again.
func (c *client) floor() uint64 {
	if len(c.pending) > 0 {
		return c.pending[0].seq
	}
	return c.next
}

// snapshot is the application's snapshot: the state machine as of slot len(values). On a disk
// and on the wire it is a snapshot file (snapshot_file.go).
type snapshot struct {
	values    [][]byte // the chosen value of every slot below len(values)
	sessions  []byte   // core.Sessions.MarshalBinary
	offset    uint64   // the next dense offset
	appliedAt map[commandKey]position
}

func (s *snapshot) slot() uint64 { return uint64(len(s.values)) }

// stateMachine is one replica's application: the values applied in slot order, the
// exactly-once table, the dense offset, and where each command was applied (to check that
// none is applied twice).
type stateMachine struct {
	values    [][]byte
	sessions  *core.Sessions
	offset    uint64
	appliedAt map[commandKey]position

	sessionsClientsMax int
	sessionSeqsMax     int
}

// restore replaces the state machine with a snapshot (empty: a fresh one), taking over its
// memory (a snapshot decoded from a file is the state machine's alone).
func (sm *stateMachine) restore(s snapshot) {
	sm.values = s.values
	sm.sessions = core.NewSessionsBounded(sm.sessionsClientsMax, sm.sessionSeqsMax)
	if len(s.sessions) > 0 {
		if err := sm.sessions.UnmarshalBinary(s.sessions); err != nil {
			panic(&Violation{Invariant: "snapshot intact", Detail: err.Error()})
		}
	}
	sm.offset = s.offset
	sm.appliedAt = s.appliedAt
	if sm.appliedAt == nil {
		sm.appliedAt = map[commandKey]position{}
	}
}

// snapshot captures the state machine, sharing its memory (encode it before the state machine
// moves on); withoutSessions plants a snapshot that forgets the exactly-once table.
func (sm *stateMachine) snapshot(withoutSessions bool) snapshot {
	s := snapshot{values: sm.values, offset: sm.offset, appliedAt: sm.appliedAt}
	if !withoutSessions {
		b, err := sm.sessions.MarshalBinary()
		if err != nil {
			panic(err)
		}
		s.sessions = b
	}
	return s
}

func (w *world) pendingCount() int {
	sum := 0
	for _, c := range w.clients {
		sum += len(c.pending)
	}
	return sum
}

// submit: clients submit new commands (while load is on) and send every due one to some leader.
func (w *world) submit(load bool) {
	if load && w.rng.IntN(100) < w.opts.ProposePercent {
		c := w.clients[w.rng.IntN(len(w.clients))]
		// The seqs in flight span at most ClientInflightMax from the floor (the sessions
		// table refuses a seq too far above it).
		if c.next-c.floor() < uint64(w.opts.ClientInflightMax) {
			payload := make([]byte, payloadBytes)
			binary.LittleEndian.PutUint64(payload, w.rng.Uint64())
			c.pending = append(c.pending, &command{seq: c.next, payload: payload, retryAt: w.now})
			c.next++
			w.res.Proposed++
		}
	}
	var leaders []*node
	for _, n := range w.nodes {
		if n.running(w.now) && n.r.Status().IsLeader {
			leaders = append(leaders, n)
		}
	}
	if len(leaders) == 0 {
		return
	}
	var due []codec.Command
	var dueCommands []*command
	for _, c := range w.clients {
		for _, cmd := range c.pending {
			if cmd.retryAt <= w.now {
				due = append(due, codec.Command{ClientID: c.id, Seq: cmd.seq, SeqFloor: c.floor(), Payload: cmd.payload})
				dueCommands = append(dueCommands, cmd)
			}
		}
	}
	for len(due) > 0 {
		k := min(len(due), 1+w.rng.IntN(batchCommandsMax))
		v := codec.AppendBatch(nil, due[:k])
		n := leaders[w.rng.IntN(len(leaders))]
		w.proposed[string(v)] = true
		if _, err := n.r.Propose(v); err != nil {
			return // window full: try again next tick
		}
		for _, cmd := range dueCommands[:k] {
			cmd.retryAt = w.now + retryElectionTimeouts*n.cfg.ElectionTicks
		}
		due, dueCommands = due[k:], dueCommands[k:]
	}
}

// apply is the state machine: strictly in slot order, every replica's log a prefix of the one
// chosen log, and each command of the batch decided by the sessions table.
func (w *world) apply(n *node, e codec.Entry) {
	sm := &n.state
	if e.Slot != uint64(len(sm.values)) {
		w.fail("apply in slot order without gaps", "replica %d applied slot %d after %d slots", n.id, e.Slot, len(sm.values))
	}
	if len(e.Value) > 0 && !w.proposed[string(e.Value)] {
		w.fail("only proposed values are chosen", "replica %d slot %d holds %x", n.id, e.Slot, e.Value)
	}
	switch {
	case e.Slot < uint64(len(w.global)):
		if !bytes.Equal(w.global[e.Slot], e.Value) {
			w.fail("one value per slot", "replica %d applied %x at slot %d, chosen was %x", n.id, e.Value, e.Slot, w.global[e.Slot])
		}
	default:
		w.global = append(w.global, bytes.Clone(e.Value))
	}
	sm.values = append(sm.values, w.global[e.Slot])
	if len(e.Value) == 0 {
		return // a no-op filling a gap
	}
	lim := codec.DefaultLimits()
	var it codec.BatchIter
	if err := it.Reset(e.Value, &lim); err != nil {
		w.fail("only proposed values are chosen", "replica %d slot %d: not a batch: %v", n.id, e.Slot, err)
	}
	for it.Next() {
		cmd := it.Command()
		w.applyCommand(n, e.Slot, uint32(it.Index()), cmd)
	}
	if err := it.Err(); err != nil {
		w.fail("only proposed values are chosen", "replica %d slot %d: malformed batch: %v", n.id, e.Slot, err)
	}
}

// applyCommand decides one command with the sessions table, as the pipeline's apply stage
// does, and checks exactly-once: a command is applied at most once per replica, a duplicate is
// answered with the position of that one application, and every replica answers the same.
func (w *world) applyCommand(n *node, slot uint64, index uint32, cmd codec.Command) {
	sm := &n.state
	key := commandKey{cmd.ClientID, cmd.Seq}
	r := sm.sessions.ApplyCommand(cmd.ClientID, cmd.Seq, cmd.SeqFloor, slot, index, sm.offset)
	switch r.Outcome {
	case core.SessionApplied:
		if at, ok := sm.appliedAt[key]; ok {
			w.fail("exactly once", "replica %d applied client %d seq %d at slot %d, already applied at %+v",
				n.id, cmd.ClientID, cmd.Seq, slot, at)
		}
		pos := position{slot: slot, index: index, offset: sm.offset}
		sm.appliedAt[key] = pos
		sm.offset++
		w.answer(n, key, pos)
	case core.SessionDuplicate:
		pos := position{slot: r.Slot, index: r.Index, offset: r.Offset}
		if at, ok := sm.appliedAt[key]; !ok || at != pos {
			w.fail("exactly once", "replica %d answered client %d seq %d as a duplicate of %+v; it applied it at %+v (%v)",
				n.id, cmd.ClientID, cmd.Seq, pos, at, ok)
		}
		w.res.Duplicates++
		w.answer(n, key, pos)
	case core.SessionAbandoned:
		c := w.clients[cmd.ClientID-1]
		if i := slices.IndexFunc(c.pending, func(p *command) bool { return p.seq == cmd.Seq }); i >= 0 {
			w.fail("exactly once", "replica %d abandoned client %d seq %d, which the client still waits for (floor %d)",
				n.id, cmd.ClientID, cmd.Seq, c.floor())
		}
	default:
		w.fail("exactly once", "replica %d refused client %d seq %d (floor %d): %v", n.id, cmd.ClientID, cmd.Seq, cmd.SeqFloor, r.Outcome)
	}
}

// answer: the first replica to apply a command answers its client; every later answer, on
// any replica, must give the same position.
func (w *world) answer(n *node, key commandKey, pos position) {
	if at, ok := w.answers[key]; ok {
		if at != pos {
			w.fail("answers agree across replicas", "replica %d answers client %d seq %d with %+v; it was answered %+v",
				n.id, key.client, key.seq, pos, at)
		}
		return
	}
	w.answers[key] = pos
	w.res.Applied++
	c := w.clients[key.client-1]
	if i := slices.IndexFunc(c.pending, func(p *command) bool { return p.seq == key.seq }); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
}
