package pipeline

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Snapshot transfer: a replica that asks a peer for chosen slots the peer has compacted gets
// a CatchUpReply whose Count is the peer's snapshot slot (core.SnapshotWanted). This replica
// then fetches the snapshot file from that peer in SnapshotChunk messages:
//
//   - a request is a SnapshotChunk with no Data and Offset == Total == the byte offset to
//     resume from; Slot names the snapshot being fetched (0: the sender's newest);
//   - the sender answers with up to SnapshotConfig.ChunkWindow chunks from that offset: Slot,
//     Offset, Total (the file's bytes), Checksum (CRC-32C of the whole file), Data (at most
//     ChunkBytes);
//   - the receiver writes chunks in order into a temporary file, asks for the next window once
//     it has the current one, asks again after RetryInterval without progress, and gives up
//     (to start over at the next hint) after retryLimit silent intervals.
//
// Once the whole file is held and its checksum (and the file's own) verify, it is made
// durable under its final name, and only then is the final chunk handed to core, which jumps
// its commit point and hands Ready.SnapshotSlot back to the step loop (installSnapshot). The
// snapshot is durable before core acts on it, so a crash right after leaves a replica that
// restarts from it. SnapshotChunk messages never reach core otherwise: core would take a
// request (Offset+len(Data) == Total) for a complete snapshot.

// retryLimit: silent RetryIntervals before a transfer is abandoned.
const retryLimit = 8

type snapshotTransfer struct {
	n      *Node
	events chan codec.Message // chunks and snapshot hints, copied off the event loops
	quit   chan struct{}
	done   chan struct{}

	recv *receiving        // the transfer in progress (run goroutine only)
	crcs map[uint64]uint32 // whole-file checksums of local snapshots, by slot (run goroutine only)
	buf  []byte
}

// receiving is one incoming snapshot.
type receiving struct {
	from      uint32
	slot      uint64 // 0 until the first chunk names it
	total     uint64
	checksum  uint32
	offset    uint64 // bytes written
	windowEnd uint64 // the offset the current request's window ends at
	crc       uint32
	file      *os.File
	path      string
	silent    int // retry intervals without progress
	progress  bool
	lastChunk []byte
}

func newSnapshotTransfer(n *Node) *snapshotTransfer {
	return &snapshotTransfer{
		n:      n,
		events: make(chan codec.Message, 2*n.cfg.Snapshot.ChunkWindow+16),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		crcs:   make(map[uint64]uint32),
	}
}

// interceptSnapshot runs on an event loop for every peer message: snapshot chunks go to the
// transfer goroutine instead of core, snapshot hints go to both. It reports whether m was
// consumed.
func (n *Node) interceptSnapshot(m *codec.Message) bool {
	switch {
	case m.Type == codec.TypeSnapshotChunk:
		n.xfer.offer(copyMessage(m))
		return true
	case m.Type == codec.TypeCatchUpReply && m.Count > 0:
		n.xfer.offer(codec.Message{Type: m.Type, From: m.From, To: m.To, Count: m.Count})
	}
	return false
}

func (x *snapshotTransfer) offer(m codec.Message) {
	select {
	case x.events <- m:
	default: // full: the requester retries
	}
}

func (x *snapshotTransfer) stop() {
	close(x.quit)
	<-x.done
}

func (x *snapshotTransfer) run() {
	defer close(x.done)
	defer x.abandon("stopping")
	ticker := time.NewTicker(x.n.cfg.Snapshot.RetryInterval)
	defer ticker.Stop()
	for {
		select {
		case <-x.quit:
			return
		case <-ticker.C:
			x.tick()
		case m := <-x.events:
			switch {
			case m.Type == codec.TypeCatchUpReply:
				x.hint(m.From, m.Count)
			case len(m.Data) == 0:
				x.serve(&m)
			default:
				x.receive(&m)
			}
		}
	}
}

// hint: peer from has compacted below slot; fetch its snapshot unless one is coming.
func (x *snapshotTransfer) hint(from uint32, slot uint64) {
	if x.recv != nil || x.n.Position().Slot >= slot {
		return
	}
	x.recv = &receiving{from: from}
	x.request()
}

func (x *snapshotTransfer) request() {
	r := x.recv
	r.windowEnd = r.offset + uint64(x.n.cfg.Snapshot.ChunkWindow*x.n.cfg.Snapshot.ChunkBytes)
	x.n.send(&codec.Message{Type: codec.TypeSnapshotChunk, From: x.n.cfg.ID, To: r.from,
		Slot: r.slot, Offset: r.offset, Total: r.offset})
}

func (x *snapshotTransfer) tick() {
	r := x.recv
	if r == nil {
		return
	}
	if r.progress {
		r.progress, r.silent = false, 0
		return
	}
	r.silent++
	if r.silent > retryLimit {
		x.abandon("no progress")
		return
	}
	x.request()
}

func (x *snapshotTransfer) abandon(reason string) {
	r := x.recv
	if r == nil {
		return
	}
	if r.file != nil {
		_ = r.file.Close()
		_ = os.Remove(r.path)
	}
	if reason != "stopping" && reason != "done" {
		x.n.log.Warn("pipeline: snapshot transfer abandoned", "from", r.from, "slot", r.slot,
			"bytes", r.offset, "total", r.total, "reason", reason)
	}
	x.recv = nil
}

// serve answers a request with up to ChunkWindow chunks of the requested snapshot.
func (x *snapshotTransfer) serve(m *codec.Message) {
	n := x.n
	slot := m.Slot
	if slot == 0 {
		n.snaps.mu.Lock()
		slot = n.snaps.latest
		n.snaps.mu.Unlock()
	}
	if slot == 0 {
		return
	}
	path := filepath.Join(n.snapshotDir(), snapshotName(slot))
	f, err := os.Open(path)
	if err != nil {
		return // deleted meanwhile: the receiver starts over with the newest
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return
	}
	total := uint64(info.Size())
	crc, ok := x.crcs[slot]
	if !ok {
		h := crc32.New(crcTable)
		if _, err := io.Copy(h, f); err != nil {
			n.log.Warn("pipeline: reading snapshot to serve", "path", path, "err", err)
			return
		}
		crc = h.Sum32()
		clear(x.crcs) // only the newest few are ever served
		x.crcs[slot] = crc
	}
	chunk := n.cfg.Snapshot.ChunkBytes
	if cap(x.buf) < chunk {
		x.buf = make([]byte, chunk)
	}
	offset := m.Offset
	for i := 0; i < n.cfg.Snapshot.ChunkWindow && offset < total; i++ {
		size := min(uint64(chunk), total-offset)
		data := x.buf[:size]
		if _, err := f.ReadAt(data, int64(offset)); err != nil {
			n.log.Warn("pipeline: reading snapshot to serve", "path", path, "err", err)
			return
		}
		n.send(&codec.Message{Type: codec.TypeSnapshotChunk, From: n.cfg.ID, To: m.From,
			Slot: slot, Offset: offset, Total: total, Checksum: crc, Data: data})
		offset += size
	}
}

// receive writes one chunk of the transfer in progress.
func (x *snapshotTransfer) receive(m *codec.Message) {
	r := x.recv
	if r == nil || m.From != r.from {
		return
	}
	if r.slot == 0 && m.Offset == 0 {
		if err := x.open(r, m); err != nil {
			x.abandon(err.Error())
			return
		}
	}
	if m.Slot != r.slot || m.Total != r.total || m.Checksum != r.checksum || m.Offset != r.offset {
		return // another snapshot, a duplicate, or out of order: the retry re-requests
	}
	if _, err := r.file.Write(m.Data); err != nil {
		x.abandon(err.Error())
		return
	}
	r.crc = crc32.Update(r.crc, crcTable, m.Data)
	r.offset += uint64(len(m.Data))
	r.progress = true
	r.lastChunk = append(r.lastChunk[:0], m.Data...)
	switch {
	case r.offset == r.total:
		if err := x.finish(r); err != nil {
			x.abandon(err.Error())
		}
	case r.offset >= r.windowEnd:
		x.request()
	}
}

func (x *snapshotTransfer) open(r *receiving, m *codec.Message) error {
	dir := x.n.snapshotDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.slot, r.total, r.checksum = m.Slot, m.Total, m.Checksum
	r.path = filepath.Join(dir, snapshotName(r.slot)+".recv.tmp")
	var err error
	r.file, err = os.OpenFile(r.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	return err
}

// finish verifies the received file, makes it durable under its final name and hands the
// final chunk to core.
func (x *snapshotTransfer) finish(r *receiving) error {
	n := x.n
	if r.crc != r.checksum {
		return fmt.Errorf("%w: received snapshot %d has checksum %08x, sender said %08x", ErrSnapshot, r.slot, r.crc, r.checksum)
	}
	if !n.cfg.NoSync {
		if err := r.file.Sync(); err != nil {
			return err
		}
	}
	if err := r.file.Close(); err != nil {
		return err
	}
	r.file = nil
	meta, f, _, err := readSnapshotMeta(r.path)
	if err != nil {
		_ = os.Remove(r.path)
		return err
	}
	_ = f.Close()
	if meta.slot != r.slot {
		_ = os.Remove(r.path)
		return fmt.Errorf("%w: received snapshot says slot %d, chunks said %d", ErrSnapshot, meta.slot, r.slot)
	}
	final := filepath.Join(n.snapshotDir(), snapshotName(r.slot))
	if err := os.Rename(r.path, final); err != nil {
		return err
	}
	if !n.cfg.NoSync {
		if err := syncDir(n.snapshotDir()); err != nil {
			return err
		}
	}
	n.log.Info("pipeline: received snapshot", "from", r.from, "slot", r.slot, "bytes", r.total)
	last := codec.Message{Type: codec.TypeSnapshotChunk, From: r.from, To: n.cfg.ID, Slot: r.slot,
		Offset: r.total - uint64(len(r.lastChunk)), Total: r.total, Checksum: r.checksum,
		Data: append([]byte(nil), r.lastChunk...)}
	x.recv = nil
	select {
	case n.peerCh <- last:
	case <-x.quit:
		return errors.New("stopping")
	}
	return nil
}
