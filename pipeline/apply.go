package pipeline

import (
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/netio"
)

// The applied-log digest: FNV-1a 64 over every chosen slot number and, for each command of its
// batch, (index, client id, seq, payload). Replicas that applied the same log have the same
// digest; tests and tools (tests/chaos/replicalog) recompute it through these functions.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// DigestStart is the digest of the empty applied log.
const DigestStart uint64 = fnvOffset

// DigestSlot folds a chosen slot into digest h (before its commands, no-ops included).
func DigestSlot(h, slot uint64) uint64 { return fnvUint64(h, slot) }

// DigestCommand folds the command at index of a slot's batch into digest h; every command
// counts, duplicates and abandoned ones included, since all replicas see the same batches.
func DigestCommand(h uint64, index uint32, cmd *codec.Command) uint64 {
	h = fnvUint64(fnvUint64(fnvUint64(h, uint64(index)), cmd.ClientID), cmd.Seq)
	return fnvBytes(h, cmd.Payload)
}

func fnvUint64(h, v uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= fnvPrime
		v >>= 8
	}
	return h
}

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// replies groups the responses of one apply round per connection, so each connection gets
// one Respond (one coalesced write) per round. Its slices are reused across rounds.
type replies struct {
	index map[*netio.ClientConn]int
	conns []*netio.ClientConn
	resps [][]codec.Response
	used  int
}

func (r *replies) add(c *netio.ClientConn, resp codec.Response) {
	i, ok := r.index[c]
	if !ok {
		i = r.used
		r.used++
		if i == len(r.conns) {
			r.conns = append(r.conns, nil)
			r.resps = append(r.resps, nil)
		}
		r.conns[i], r.resps[i] = c, r.resps[i][:0]
		r.index[c] = i
	}
	r.resps[i] = append(r.resps[i], resp)
}

func (r *replies) flush() {
	for i := 0; i < r.used; i++ {
		r.conns[i].Respond(r.resps[i])
		r.conns[i] = nil
	}
	r.used = 0
	clear(r.index)
}

// runApply is the apply goroutine: it walks chosen batches in slot order, decides each
// command with the exactly-once table (core.Sessions), gives every applied command the next
// dense offset, and answers the client waiting for it (on this replica: the one whose ingest
// took it) with its position (slot, index, offset) — for a duplicate, the position of its one
// application.
//
// The offset counts commands applied in slot order, skipping no-op slots, duplicates,
// abandoned and refused commands, and empty-payload markers (embed.go): every replica that
// applies the same log computes the same offsets. A restart replays the log from slot 0, or
// from a snapshot that stores the next offset, so offsets survive restarts.
func (n *Node) runApply() {
	defer close(n.applyDone)
	sessions := core.NewSessionsBounded(n.cfg.SessionsMax, n.cfg.SessionSeqsMax)
	state := AppliedState{Digest: DigestStart}
	embed := n.newEmbedApply(sessions, &state)
	state.Offset = embed.nextOffset()
	initial := state
	n.applied.Store(&initial)
	out := replies{index: make(map[*netio.ClientConn]int)}
	lim := n.cfg.Network.Limits
	var it codec.BatchIter
	var answers []codec.Response // one batch's answers, reused
	for job := range n.applyCh {
		if job.failAll {
			n.waitMu.Lock()
			n.waiters.drain(func(key cmdKey, c *netio.ClientConn) {
				out.add(c, codec.Response{ClientID: key.client, Seq: key.seq, Status: job.status})
			})
			n.waitMu.Unlock()
			out.flush()
			n.resumePaused()
			continue
		}
		if len(job.entries) == 0 {
			embed.install(sessions, &state) // a snapshot install marker (snapshot.go)
		}
		slots, commands, duplicates := 0, 0, 0
		for _, e := range job.entries {
			slots++
			state.Slot = e.Slot + 1
			state.Digest = DigestSlot(state.Digest, e.Slot)
			if len(e.Value) == 0 {
				continue // a no-op filling a gap
			}
			if err := it.Reset(e.Value, &lim); err != nil {
				n.log.Error("pipeline: chosen value is not a batch; skipped", "slot", e.Slot, "err", err)
				continue
			}
			n.waitMu.Lock()
			waiting := n.waiters.len() > 0
			n.waitMu.Unlock()
			answers = answers[:0]
			for it.Next() {
				cmd := it.Command()
				index := uint32(it.Index())
				offset := embed.nextOffset()
				r := sessions.ApplyCommand(cmd.ClientID, cmd.Seq, cmd.SeqFloor, e.Slot, index, offset)
				embed.command(e.Slot, index, cmd, r.Outcome != core.SessionApplied)
				state.Digest = DigestCommand(state.Digest, index, &cmd)
				commands++
				if r.Outcome == core.SessionDuplicate {
					duplicates++
				}
				if waiting {
					answers = append(answers, answerOf(cmd, e.Slot, index, offset, r))
				}
			}
			if err := it.Err(); err != nil {
				n.log.Error("pipeline: chosen batch is malformed", "slot", e.Slot, "err", err)
			}
			if len(answers) > 0 {
				n.waitMu.Lock()
				for _, resp := range answers {
					if c := n.waiters.take(cmdKey{resp.ClientID, resp.Seq}); c != nil {
						out.add(c, resp)
					}
				}
				n.waitMu.Unlock()
			}
		}
		state.Commands += uint64(commands)
		state.Duplicates += uint64(duplicates)
		state.Offset = embed.nextOffset()
		embed.endRound(sessions, &state)
		snapshot := state
		n.applied.Store(&snapshot)
		// Answer only after the round is published: a client that got its answer finds its
		// command in Applied, Read and Subscribe on this replica.
		out.flush()
		n.metrics.slotsChosen.Add(float64(slots))
		n.metrics.commandsChosen.Add(float64(commands))
		n.latency.applyToReply.record(time.Since(job.handed))
		n.resumePaused()
	}
	// Closed by the step loop after its final failAll: nothing waits any more.
}

// answerOf is the Response for a command the table decided r for, applied (if it was) at
// (slot, index, offset).
func answerOf(cmd codec.Command, slot uint64, index uint32, offset uint64, r core.SessionResult) codec.Response {
	resp := codec.Response{ClientID: cmd.ClientID, Seq: cmd.Seq, Status: codec.StatusOK}
	switch r.Outcome {
	case core.SessionApplied:
		resp.Slot, resp.Index, resp.Offset = slot, index, offset
	case core.SessionDuplicate:
		resp.Slot, resp.Index, resp.Offset = r.Slot, r.Index, r.Offset
	case core.SessionAbandoned:
		resp.Status = codec.StatusAbandoned
	default: // core.SessionRefused: seq too far above the client's floor
		resp.Status = codec.StatusInvalid
	}
	return resp
}
