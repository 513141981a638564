package pipeline

import (
	"hash/crc32"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/netio"
)

// The applied-log digest: a 64-bit chain over every chosen slot, folding in the slot number, the
// length of its value and the value's CRC-32C (the whole encoded batch: every command's client
// id, seq, seq floor and payload, duplicates and markers included, since all replicas see the
// same batches; an empty value is a no-op). Replicas that applied the same log have the same
// digest; tests and tools (tests/chaos/replicalog) recompute it through DigestSlot.
//
// It is a consistency check, not a cryptographic one. It was FNV-1a over every command's
// fields byte by byte, which cost followers 15-19% of their CPU at saturation; CRC-32C runs in
// hardware over the whole value at once.
const (
	digestOffset = 14695981039346656037
	digestPrime  = 0x9E3779B97F4A7C15
)

// DigestStart is the digest of the empty applied log.
const DigestStart uint64 = digestOffset

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DigestSlot folds chosen slot and its value into digest h.
func DigestSlot(h, slot uint64, value []byte) uint64 {
	h = digestMix(h, slot)
	return digestMix(h, uint64(len(value))<<32|uint64(crc32.Checksum(value, castagnoli)))
}

func digestMix(h, v uint64) uint64 {
	h = (h ^ v) * digestPrime
	return h ^ h>>29
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
	defer close(n.diskReads) // the apply goroutine is the disk reader's only sender
	sessions := core.NewSessionsLimited(n.cfg.SessionsMax, n.cfg.SessionSeqsMax, n.cfg.SessionIdleSlotsMax)
	state := AppliedState{Digest: DigestStart}
	embed := n.newEmbedApply(sessions, &state)
	state.Offset = embed.nextOffset()
	initial := state
	n.applied.Store(&initial)
	out := replies{index: make(map[*netio.ClientConn]int)}
	lim := n.cfg.Network.Limits
	var it codec.BatchIter
	var answers []codec.Response // one batch's answers, reused
	var reads []pendingRead      // one round's reads, answered after it is published
	held := 0                    // jobs applied since the answers were last written
	for job := range n.applyCh {
		if job.failAll {
			n.waitMu.Lock()
			n.waiters.drain(func(key cmdKey, c *netio.ClientConn, q readQuery) {
				out.add(c, codec.Response{ClientID: key.client, Seq: key.seq, Status: job.status, Read: q.mode})
			})
			n.waitMu.Unlock()
			out.flush()
			held = 0
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
			state.Digest = DigestSlot(state.Digest, e.Slot, e.Value)
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
				if r.Outcome == core.SessionFull && IsMarker(cmd.Payload) {
					// A read's (or Barrier's) marker changes nothing and takes no offset, so it
					// needs no session: a full table must not refuse reads. Every replica decides
					// the same, and a resent marker running twice is harmless.
					r = core.SessionResult{Outcome: core.SessionApplied}
				}
				embed.command(e.Slot, index, cmd, r.Outcome != core.SessionApplied)
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
					c, q := n.waiters.take(cmdKey{resp.ClientID, resp.Seq})
					switch {
					case c == nil:
					case q.mode != codec.ReadNone:
						// A read's marker: its offset is the log's length here. The payload
						// is looked up once the round is published (below).
						reads = append(reads, pendingRead{conn: c, query: q, resp: resp})
					default:
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
		for i := range reads {
			// A slot the cache holds is answered here; one only on disk goes to the disk
			// reader, so no read ever holds up the acknowledgements behind it.
			if resp, needDisk := n.answerRead(&reads[i], true); !needDisk {
				out.add(reads[i].conn, resp)
			} else if resp, queued := n.queueDiskRead(reads[i]); !queued {
				out.add(reads[i].conn, resp)
			}
			reads[i] = pendingRead{}
		}
		reads = reads[:0]
		n.metrics.slotsChosen.Add(float64(slots))
		n.metrics.commandsChosen.Add(float64(commands))
		n.latency.applyToReply.record(time.Since(job.handed))
		// When more chosen slots are already queued, apply them before answering: each
		// connection then gets one write for the whole burst rather than one per job. At
		// saturation with 64 connections the per-job writes cost the leader about 15% of its
		// CPU in write syscalls. The answers wait only for work that is already here.
		// At most one queue's worth of jobs (Config.ApplyQueueMax) per burst, so answers are
		// never held back indefinitely; the answers held are bounded by PendingRequestsMax.
		if held++; len(n.applyCh) > 0 && held < cap(n.applyCh) {
			continue
		}
		held = 0
		// Answer only after the round is published: a client that got its answer finds its
		// command in Applied, Read and Subscribe on this replica.
		out.flush()
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
	case core.SessionFull:
		resp.Status = codec.StatusOverloaded // a new client in a full table: not applied, retry later
	default: // core.SessionRefused: seq too far above the client's floor
		resp.Status = codec.StatusInvalid
	}
	return resp
}
