package driver

import (
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// Snapshot transfer, as a state machine over SnapshotChunk messages (the wire protocol is in
// docs/PROTOCOL.md and doc.go):
//
//   - a request is a SnapshotChunk with no Data and Offset == Total == the byte offset to
//     resume from; Slot names the snapshot (0: the sender's newest);
//   - the sender answers with up to ChunkWindow chunks from that offset, each with Slot,
//     Offset, Total (the file's bytes), Checksum (CRC-32C of the whole file) and Data;
//   - the receiver writes the chunks in order, asks for the next window once the current
//     one is written, asks again after RetryTicks without a chunk, and gives up after
//     RetryLimit silent intervals in a row;
//   - once every byte is written, the file is verified and made durable (FinishSnapshot), and
//     only then is core handed the final chunk.

// snapshotState is the driver's snapshot transfers: the one it receives, the ones it serves.
type snapshotState struct {
	receiving    *transfer
	transferNext uint64 // the last transfer's number
	// handed: the snapshot slot whose final chunk core was given, until a Ready installs it.
	handed uint64

	serves    []serve // at most ServesMax, one per peer
	serveNext uint64  // the last request's number
	// operations: ReadSnapshot, WriteSnapshot and FinishSnapshot calls whose completion has
	// not been reported. Invariant: operations <= Config.SnapshotOperationsMax().
	operations int
}

// transfer is one snapshot being received.
type transfer struct {
	id        uint64
	from      uint32
	slot      uint64 // 0 until the first chunk names it
	total     uint64
	checksum  uint32
	received  uint64 // bytes accepted and handed to WriteSnapshot, in order
	written   uint64 // bytes the effects reported written
	writes    int    // WriteSnapshot calls in flight
	windowEnd uint64 // the offset the window last asked for ends at
	finishing bool   // FinishSnapshot in flight

	ticks    int  // ticks into the current retry interval
	silent   int  // retry intervals in a row without a chunk
	progress bool // a chunk arrived in the current retry interval
	// abandoned: the reason it ends without a snapshot, once decided; it is discarded once no
	// operation of it is in flight.
	abandoned error
}

// serve is one peer being sent a window of a local snapshot, one read at a time.
type serve struct {
	request uint64 // the request being served (a newer request from the peer replaces it)
	peer    uint32
	slot    uint64 // 0: the newest, until the first read names it
	offset  uint64 // the next byte to read
	end     uint64 // the window ends here
	reading bool   // a ReadSnapshot is in flight
}

// onSnapshotChunk takes a chunk (part of a snapshot this replica receives) or a request (a
// peer asks this replica for its snapshot). Neither reaches core.
func (d *Driver) onSnapshotChunk(m *codec.Message) error {
	if m.To != d.id || m.From == d.id || m.From == 0 {
		return fmt.Errorf("%w: snapshot chunk from %d to %d at replica %d", core.ErrInvalidMessage, m.From, m.To, d.id)
	}
	if len(m.Data) == 0 {
		d.serveRequest(m)
		return nil
	}
	if m.Slot == 0 || m.Offset > m.Total || uint64(len(m.Data)) > m.Total-m.Offset {
		return fmt.Errorf("%w: snapshot chunk from %d: slot %d, %d bytes at offset %d of %d",
			core.ErrInvalidMessage, m.From, m.Slot, len(m.Data), m.Offset, m.Total)
	}
	d.receiveChunk(m)
	return nil
}

// maybeFetchSnapshot: peer from told core it compacted below a slot core has not reached
// (core.SnapshotWanted); fetch its newest snapshot unless a transfer is under way.
func (d *Driver) maybeFetchSnapshot(from uint32) {
	s := &d.snapshots
	wanted := d.r.SnapshotWanted()
	if s.receiving != nil || s.handed != 0 || wanted == 0 || wanted <= d.r.Status().Commit {
		return
	}
	s.transferNext++
	s.receiving = &transfer{id: s.transferNext, from: from}
	d.requestWindow()
}

// requestWindow asks the sender for the window from the bytes received so far.
func (d *Driver) requestWindow() {
	t := d.snapshots.receiving
	t.windowEnd = t.received + uint64(d.cfg.ChunkWindow)*uint64(d.cfg.ChunkBytes)
	d.effects.Send(&codec.Message{Type: codec.TypeSnapshotChunk, From: d.id, To: t.from,
		Slot: t.slot, Offset: t.received, Total: t.received})
}

// receiveChunk writes the next chunk of the transfer in progress. Anything else (another
// sender, another snapshot, a duplicate, a chunk out of order, a chunk while the disk is a
// window behind) is dropped: the retry asks again from the bytes received.
func (d *Driver) receiveChunk(m *codec.Message) {
	s := &d.snapshots
	t := s.receiving
	if t == nil || t.abandoned != nil || t.finishing || m.From != t.from {
		return
	}
	if t.slot == 0 {
		if m.Offset != 0 {
			return
		}
		t.slot, t.total, t.checksum = m.Slot, m.Total, m.Checksum
	}
	if m.Slot != t.slot || m.Total != t.total || m.Checksum != t.checksum || m.Offset != t.received ||
		t.writes >= d.cfg.ChunkWindow {
		return
	}
	t.writes++
	s.operations++
	t.received += uint64(len(m.Data))
	t.progress = true
	d.assertOperations()
	d.effects.WriteSnapshot(SnapshotWrite{Transfer: t.id, Slot: t.slot, Offset: m.Offset, Data: m.Data})
}

// SnapshotWritten reports a WriteSnapshot's completion (err: it failed, and the transfer is
// abandoned).
func (d *Driver) SnapshotWritten(write SnapshotWrite, err error) {
	t := d.completeTransferOperation(write.Transfer, "write")
	if t.writes == 0 {
		panic(fmt.Sprintf("driver: replica %d: transfer %d: a write completed with none in flight", d.id, t.id))
	}
	t.writes--
	switch {
	case t.abandoned != nil:
	case err != nil:
		t.abandoned = fmt.Errorf("%w: %w", ErrTransferWrite, err)
	default:
		t.written += uint64(len(write.Data))
		if t.written > t.received {
			panic(fmt.Sprintf("driver: replica %d: transfer %d: %d bytes written of %d received", d.id, t.id, t.written, t.received))
		}
		switch {
		case t.written == t.total && t.writes == 0:
			t.finishing = true
			d.snapshots.operations++
			d.effects.FinishSnapshot(SnapshotFinish{Transfer: t.id, From: t.from, Slot: t.slot, Total: t.total, Checksum: t.checksum})
		case t.written >= t.windowEnd && t.writes == 0:
			d.requestWindow()
		}
	}
	d.maybeDiscard()
}

// SnapshotFinished reports a FinishSnapshot's completion. Without err the file is durable
// under its final name, and core is handed the final chunk: it jumps its commit point to the
// snapshot's slot and asks for the install in a later Ready.
func (d *Driver) SnapshotFinished(finish SnapshotFinish, err error) {
	t := d.completeTransferOperation(finish.Transfer, "finish")
	if !t.finishing {
		panic(fmt.Sprintf("driver: replica %d: transfer %d: a finish completed that was not asked for", d.id, t.id))
	}
	t.finishing = false
	switch {
	case t.abandoned != nil:
	case err != nil:
		t.abandoned = fmt.Errorf("%w: %w", ErrTransferFinish, err)
	default:
		d.snapshots.receiving = nil
		d.handToCore(t)
		return
	}
	d.maybeDiscard()
}

// handToCore feeds core the final chunk of a durable snapshot. It carries no data (core keeps
// no snapshot bytes): Offset == Total makes it final. If core has meanwhile passed the slot
// through the log, it ignores the chunk and the file is just a newer snapshot on disk.
func (d *Driver) handToCore(t *transfer) {
	final := codec.Message{Type: codec.TypeSnapshotChunk, From: t.from, To: d.id, Slot: t.slot,
		Offset: t.total, Total: t.total, Checksum: t.checksum}
	behind := d.r.Status().Commit < t.slot // core takes the chunk exactly then
	if err := d.r.Step(final); err != nil {
		// The sender was accepted by core when its CatchUpReply started the transfer.
		panic(fmt.Sprintf("driver: replica %d: core refused the final chunk of snapshot %d from %d: %v", d.id, t.slot, t.from, err))
	}
	if behind {
		d.snapshots.handed = t.slot
	}
}

// completeTransferOperation counts one operation of the transfer in progress as complete.
func (d *Driver) completeTransferOperation(id uint64, what string) *transfer {
	t := d.snapshots.receiving
	if t == nil || t.id != id {
		panic(fmt.Sprintf("driver: replica %d: a snapshot %s of transfer %d completed, but it is not in progress", d.id, what, id))
	}
	d.snapshots.operations--
	d.assertOperations()
	return t
}

// maybeDiscard ends an abandoned transfer once no operation of it is in flight, so its
// completions always find it and the next transfer's file never meets this one's writes.
func (d *Driver) maybeDiscard() {
	t := d.snapshots.receiving
	if t == nil || t.abandoned == nil || t.writes > 0 || t.finishing {
		return
	}
	d.snapshots.receiving = nil
	d.effects.DiscardSnapshot(SnapshotDiscard{Transfer: t.id, From: t.from, Slot: t.slot,
		Bytes: t.received, Total: t.total, Reason: t.abandoned})
}

// tickTransfer runs the receiver's retry timer: every RetryTicks, a transfer that got no chunk
// asks again, and after RetryLimit silent intervals in a row it is abandoned. The timer stops
// while writes or the finish are in flight: then the disk, not the sender, is behind.
func (d *Driver) tickTransfer() {
	t := d.snapshots.receiving
	if t == nil || t.abandoned != nil || t.writes > 0 || t.finishing {
		return
	}
	if t.ticks++; t.ticks < d.cfg.RetryTicks {
		return
	}
	t.ticks = 0
	if t.progress {
		t.progress, t.silent = false, 0
		return
	}
	if t.silent++; t.silent > d.cfg.RetryLimit {
		t.abandoned = ErrTransferSilent
		d.maybeDiscard()
		return
	}
	d.requestWindow()
}

// serveRequest starts (or restarts) sending peer m.From a window of a snapshot from m.Offset.
func (d *Driver) serveRequest(m *codec.Message) {
	s := &d.snapshots
	i := d.serveOf(m.From)
	if i < 0 {
		if len(s.serves) >= d.cfg.ServesMax {
			return // the peer asks again
		}
		s.serves = append(s.serves, serve{peer: m.From})
		i = len(s.serves) - 1
	}
	sv := &s.serves[i]
	s.serveNext++
	sv.request, sv.slot, sv.offset = s.serveNext, m.Slot, m.Offset
	sv.end = m.Offset + uint64(d.cfg.ChunkWindow)*uint64(d.cfg.ChunkBytes)
	if !sv.reading {
		d.readNext(sv)
	}
}

func (d *Driver) serveOf(peer uint32) int {
	for i := range d.snapshots.serves {
		if d.snapshots.serves[i].peer == peer {
			return i
		}
	}
	return -1
}

func (d *Driver) readNext(sv *serve) {
	sv.reading = true
	d.snapshots.operations++
	d.assertOperations()
	d.effects.ReadSnapshot(SnapshotRead{Serve: sv.request, Peer: sv.peer, Slot: sv.slot,
		Offset: sv.offset, BytesMax: d.cfg.ChunkBytes})
}

// SnapshotReadDone reports a ReadSnapshot's completion: the chunk is sent, and the next read
// of the window started. A failed or empty read ends the serve (the snapshot was deleted
// meanwhile: the receiver's retries give up and it starts over with the newest).
func (d *Driver) SnapshotReadDone(read SnapshotRead, chunk SnapshotChunk, err error) {
	s := &d.snapshots
	i := d.serveOf(read.Peer)
	if i < 0 || !s.serves[i].reading {
		panic(fmt.Sprintf("driver: replica %d: a snapshot read for peer %d completed that was not asked for", d.id, read.Peer))
	}
	s.operations--
	sv := &s.serves[i]
	sv.reading = false
	if read.Serve != sv.request {
		d.readNext(sv) // a newer request replaced the one this read was for
		return
	}
	size := uint64(len(chunk.Data))
	if err != nil || size == 0 || chunk.Slot == 0 || read.Offset > chunk.Total || size > chunk.Total-read.Offset {
		d.endServe(i)
		return
	}
	d.effects.Send(&codec.Message{Type: codec.TypeSnapshotChunk, From: d.id, To: sv.peer, Slot: chunk.Slot,
		Offset: read.Offset, Total: chunk.Total, Checksum: chunk.Checksum, Data: chunk.Data})
	sv.slot, sv.offset = chunk.Slot, read.Offset+size
	if sv.offset < chunk.Total && sv.offset < sv.end {
		d.readNext(sv)
		return
	}
	d.endServe(i)
}

func (d *Driver) endServe(i int) {
	s := &d.snapshots
	last := len(s.serves) - 1
	s.serves[i] = s.serves[last]
	s.serves[last] = serve{}
	s.serves = s.serves[:last]
}

func (d *Driver) assertOperations() {
	if s := &d.snapshots; s.operations < 0 || s.operations > d.cfg.SnapshotOperationsMax() {
		panic(fmt.Sprintf("driver: replica %d: %d snapshot operations in flight, bound %d",
			d.id, s.operations, d.cfg.SnapshotOperationsMax()))
	}
}
