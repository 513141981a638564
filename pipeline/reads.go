package pipeline

import (
	"errors"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/netio"
)

// Reads (codec.Request with Read set) are linearizable and go through the log: the leader
// proposes an empty marker command for each, and the apply stage answers it when the marker
// is applied, with the log as it stands at the marker — every command chosen before it, none
// after. A deposed leader cannot answer: its marker is never chosen in its ballot. A marker
// takes no offset, so reads do not change the log they read.
//
// One shortcut: a ReadAt of an offset the leader has already applied, whose slot is still in
// the in-memory cache, is answered at once. Applied offsets never change, so this is safe
// (the read is ordered at its answer, after the command was chosen); a slot only on disk goes
// through the log like any other read, so no event loop ever waits for a disk read.
//
// Neither does the apply goroutine: once a read's marker is applied, a read whose slot the
// cache holds is answered there; one whose slot only the WAL holds is queued for the disk
// reader (runDiskReads), which costs it one positioned read of the WAL (wal.ReadKey). The
// queue holds Config.DiskReadQueueMax reads; beyond that a read is answered StatusOverloaded
// at once (the client retries later). A flood of old-offset reads thus costs bounded memory
// and one goroutine's disk time, and never delays an acknowledgement.

// pendingRead is a read whose marker was applied in the current apply round.
type pendingRead struct {
	conn  *netio.ClientConn
	query readQuery
	resp  codec.Response // the marker's answer: Offset is the log's length at the marker
}

// answerRead builds the ReadReply for a read whose marker was applied; the round that applied
// it is published, so every offset below the marker's is readable. With cachedOnly it reads
// nothing from disk: needDisk reports that the slot is only in the WAL (and resp is unset).
func (n *Node) answerRead(pr *pendingRead, cachedOnly bool) (resp codec.Response, needDisk bool) {
	resp = codec.Response{ClientID: pr.resp.ClientID, Seq: pr.resp.Seq, Status: pr.resp.Status, Read: pr.query.mode}
	if resp.Status != codec.StatusOK {
		return resp, false
	}
	resp.Length = pr.resp.Offset
	target := pr.query.offset
	if pr.query.mode == codec.ReadLatest {
		if resp.Length == 0 {
			return resp, false // the log is empty: not found
		}
		target = resp.Length - 1
	}
	if target >= resp.Length {
		return resp, false // not in the log yet: not found
	}
	if cachedOnly {
		if p, err := n.index.find(target); err == nil {
			if _, ok := n.cachedChosen(p.slot); !ok {
				return codec.Response{}, true
			}
		}
	}
	cmds, err := n.ReadOffsets(target, 1, 1, nil)
	switch {
	case errors.Is(err, ErrCompacted):
		resp.Status = codec.StatusCompacted
		return resp, false
	case err != nil || len(cmds) == 0 || cmds[0].Offset != target:
		n.log.Error("pipeline: read of an applied offset failed", "offset", target, "err", err)
		resp.Status = codec.StatusUnavailable // the client retries
		return resp, false
	}
	c := cmds[0]
	resp.Found, resp.Slot, resp.Index, resp.Offset, resp.Payload = true, c.Slot, c.Index, c.Offset, c.Payload
	return resp, false
}

// queueDiskRead hands pr to the disk reader; when its queue is full, queued is false and resp
// is the StatusOverloaded answer to send instead. Apply goroutine only.
func (n *Node) queueDiskRead(pr pendingRead) (resp codec.Response, queued bool) {
	select {
	case n.diskReads <- pr:
		return codec.Response{}, true
	default:
		n.diskReadsOverloaded.Add(1)
		return codec.Response{ClientID: pr.resp.ClientID, Seq: pr.resp.Seq, Status: codec.StatusOverloaded,
			Read: pr.query.mode}, false
	}
}

// runDiskReads is the disk reader: it answers, one at a time, the reads whose slot only the
// WAL holds (one positioned read each). It ends when the apply goroutine closes the queue.
func (n *Node) runDiskReads() {
	defer close(n.diskReadsDone)
	for pr := range n.diskReads {
		resp, _ := n.answerRead(&pr, false)
		pr.conn.Respond([]codec.Response{resp})
	}
}

// readAppliedNow answers a ReadAt at once when its offset is applied here and its slot is in
// memory (see the top of this file); ok is false when the read must go through the log.
// Compacted offsets are answered StatusCompacted. It runs on an event loop: no disk reads.
func (n *Node) readAppliedNow(r *codec.Request) (codec.Response, bool) {
	resp := codec.Response{ClientID: r.ClientID, Seq: r.Seq, Status: codec.StatusOK, Read: codec.ReadAt}
	p, err := n.index.find(r.Offset)
	switch {
	case errors.Is(err, ErrCompacted):
		resp.Status = codec.StatusCompacted
		return resp, true
	case err != nil:
		return resp, false // not applied yet (ErrNotApplied): the log decides
	}
	value, ok := n.cachedChosen(p.slot)
	if !ok {
		return resp, false
	}
	cmds, err := n.decodeSlot(p, value, 1, nil)
	if err != nil || len(cmds) == 0 || cmds[0].Offset != r.Offset {
		return resp, false
	}
	c := cmds[0]
	resp.Found, resp.Slot, resp.Index, resp.Offset, resp.Payload = true, c.Slot, c.Index, c.Offset, c.Payload
	resp.Length = n.Position().Next // a lower bound of the log's length now
	return resp, true
}
