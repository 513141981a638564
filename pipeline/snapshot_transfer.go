package pipeline

import (
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mpaxos/mpaxos/core/driver"
)

// Snapshot transfer: the protocol and every decision (what to ask for, what to accept, when to
// retry and give up, when core hears of the snapshot) are core/driver's, run on the step loop.
// This file is only the driver's snapshot file operations, done on a goroutine of their own so
// a disk read, write or fsync never stalls the step loop:
//
//   - read: a chunk of a local snapshot to serve a peer (the file's CRC-32C is computed once
//     per snapshot and cached);
//   - write: received bytes into DataDir/snapshots/snap-<slot>.snap.recv.tmp, in order, with a
//     running CRC-32C;
//   - finish: check the size and the sender's checksum, fsync, check the file's own header
//     and checksum and its slot, rename it to its final name and fsync the directory; only
//     after this reports success does the driver hand core the final chunk, so a crash at any
//     point leaves either no snapshot or a durable one the replica restarts from;
//   - discard: remove the temporary file of an abandoned transfer.
//
// The driver bounds the operations in flight (driver.Config.SnapshotOperationsMax), so the
// queues here are sized never to block the step loop. Completions go back to the step loop on
// results.

// snapshotRetryLimit: silent retry intervals (Snapshot.RetryInterval) before a transfer is
// abandoned, to start over at the next snapshot hint.
const snapshotRetryLimit = 8

type transferOperation uint8

const (
	transferRead transferOperation = iota
	transferWrite
	transferFinish
	transferDiscard
)

// transferJob is one driver snapshot operation for the transfer goroutine (op says which
// field is set); transferResult is its completion.
type transferJob struct {
	op      transferOperation
	read    driver.SnapshotRead
	write   driver.SnapshotWrite
	finish  driver.SnapshotFinish
	discard driver.SnapshotDiscard
}

type transferResult struct {
	op     transferOperation
	read   driver.SnapshotRead
	chunk  driver.SnapshotChunk
	write  driver.SnapshotWrite
	finish driver.SnapshotFinish
	err    error
}

type snapshotTransfer struct {
	n       *Node
	jobs    chan transferJob
	results chan transferResult
	// buffers recycles read buffers: the step loop hands one back once the driver has sent
	// its chunk (netio encodes a message before Send returns).
	buffers chan []byte
	quit    chan struct{}
	done    chan struct{}

	// The transfer goroutine's own state.
	crcs      map[uint64]uint32 // whole-file checksums of local snapshots, by slot
	receiving receivedFile
}

// receivedFile is the temporary file of the transfer being received.
type receivedFile struct {
	transfer uint64
	slot     uint64
	file     *os.File
	path     string
	size     uint64
	crc      uint32
}

func newSnapshotTransfer(n *Node, operationsMax int) *snapshotTransfer {
	return &snapshotTransfer{
		n:       n,
		jobs:    make(chan transferJob, operationsMax+1), // + one discard
		results: make(chan transferResult, operationsMax),
		buffers: make(chan []byte, operationsMax),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		crcs:    make(map[uint64]uint32),
	}
}

// queue hands an operation to the transfer goroutine, on the step loop. The driver keeps at
// most operationsMax in flight and one discard besides, which the channel holds: a full
// channel is a broken invariant, not backpressure.
func (x *snapshotTransfer) queue(job transferJob) {
	select {
	case x.jobs <- job:
	default:
		panic(fmt.Sprintf("pipeline: replica %d: snapshot operations beyond the driver's bound %d", x.n.cfg.ID, cap(x.jobs)))
	}
}

// recycle takes back a read buffer, on the step loop.
func (x *snapshotTransfer) recycle(b []byte) {
	if cap(b) == 0 {
		return
	}
	select {
	case x.buffers <- b[:0]:
	default:
	}
}

func (x *snapshotTransfer) stop() {
	close(x.quit)
	<-x.done
}

func (x *snapshotTransfer) run() {
	defer close(x.done)
	defer x.removeReceived()
	for {
		select {
		case <-x.quit:
			return
		case job := <-x.jobs:
			switch job.op {
			case transferRead:
				chunk, err := x.read(job.read)
				x.report(transferResult{op: job.op, read: job.read, chunk: chunk, err: err})
			case transferWrite:
				err := x.write(job.write)
				x.report(transferResult{op: job.op, write: job.write, err: err})
			case transferFinish:
				err := x.finish(job.finish)
				x.report(transferResult{op: job.op, finish: job.finish, err: err})
			case transferDiscard:
				if x.receiving.transfer == job.discard.Transfer {
					x.removeReceived()
				}
			}
		}
	}
}

// report hands a completion to the step loop; results holds one per operation in flight.
func (x *snapshotTransfer) report(res transferResult) {
	select {
	case x.results <- res:
	default:
		panic(fmt.Sprintf("pipeline: replica %d: snapshot completions beyond the driver's bound %d", x.n.cfg.ID, cap(x.results)))
	}
}

// read reads a chunk of a local snapshot for a peer.
func (x *snapshotTransfer) read(read driver.SnapshotRead) (driver.SnapshotChunk, error) {
	n := x.n
	slot := read.Slot
	if slot == 0 {
		n.snaps.mu.Lock()
		slot = n.snaps.latest
		n.snaps.mu.Unlock()
	}
	if slot == 0 {
		return driver.SnapshotChunk{}, fmt.Errorf("%w: no snapshot to serve", ErrSnapshot)
	}
	path := filepath.Join(n.snapshotDir(), snapshotName(slot))
	f, err := os.Open(path)
	if err != nil {
		return driver.SnapshotChunk{}, err // deleted meanwhile: the receiver starts over with the newest
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return driver.SnapshotChunk{}, err
	}
	total := uint64(info.Size())
	crc, ok := x.crcs[slot]
	if !ok {
		h := crc32.New(crcTable)
		if _, err := io.Copy(h, f); err != nil {
			n.log.Warn("pipeline: reading snapshot to serve", "path", path, "err", err)
			return driver.SnapshotChunk{}, err
		}
		crc = h.Sum32()
		clear(x.crcs) // only the newest few are ever served
		x.crcs[slot] = crc
	}
	if read.Offset >= total {
		return driver.SnapshotChunk{}, fmt.Errorf("%w: offset %d is past snapshot %d's %d bytes", ErrSnapshot, read.Offset, slot, total)
	}
	var buf []byte
	select {
	case buf = <-x.buffers:
	default:
	}
	size := min(uint64(read.BytesMax), total-read.Offset)
	if uint64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	data := buf[:size]
	if _, err := f.ReadAt(data, int64(read.Offset)); err != nil {
		n.log.Warn("pipeline: reading snapshot to serve", "path", path, "err", err)
		return driver.SnapshotChunk{}, err
	}
	return driver.SnapshotChunk{Slot: slot, Total: total, Checksum: crc, Data: data}, nil
}

// write writes received bytes in order into the transfer's temporary file.
func (x *snapshotTransfer) write(w driver.SnapshotWrite) error {
	r := &x.receiving
	if w.Offset == 0 {
		if err := x.create(w); err != nil {
			return err
		}
	}
	if r.file == nil || r.transfer != w.Transfer || r.size != w.Offset {
		return fmt.Errorf("%w: write of transfer %d at %d, the file holds transfer %d up to %d",
			ErrSnapshot, w.Transfer, w.Offset, r.transfer, r.size)
	}
	if _, err := r.file.Write(w.Data); err != nil {
		return err
	}
	r.crc = crc32.Update(r.crc, crcTable, w.Data)
	r.size += uint64(len(w.Data))
	return nil
}

// create starts a transfer's temporary file, removing any left by an earlier one.
func (x *snapshotTransfer) create(w driver.SnapshotWrite) error {
	x.removeReceived()
	dir := x.n.snapshotDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, snapshotName(w.Slot)+".recv.tmp")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	x.receiving = receivedFile{transfer: w.Transfer, slot: w.Slot, file: f, path: path}
	return nil
}

// finish verifies the received file and makes it durable under its final name.
func (x *snapshotTransfer) finish(f driver.SnapshotFinish) error {
	n := x.n
	r := &x.receiving
	if r.file == nil || r.transfer != f.Transfer {
		return fmt.Errorf("%w: finish of transfer %d, the file holds transfer %d", ErrSnapshot, f.Transfer, r.transfer)
	}
	if r.size != f.Total || r.crc != f.Checksum {
		return fmt.Errorf("%w: received snapshot %d has %d bytes with checksum %08x, sender said %d with %08x",
			ErrSnapshot, f.Slot, r.size, r.crc, f.Total, f.Checksum)
	}
	if !n.cfg.NoSync {
		if err := r.file.Sync(); err != nil {
			return err
		}
	}
	err := r.file.Close()
	r.file = nil
	if err != nil {
		return err
	}
	meta, file, _, err := readSnapshotMeta(r.path)
	if err != nil {
		return err
	}
	_ = file.Close()
	if meta.slot != f.Slot {
		return fmt.Errorf("%w: received snapshot says slot %d, chunks said %d", ErrSnapshot, meta.slot, f.Slot)
	}
	if err := os.Rename(r.path, filepath.Join(n.snapshotDir(), snapshotName(f.Slot))); err != nil {
		return err
	}
	r.path = ""
	if !n.cfg.NoSync {
		if err := syncDir(n.snapshotDir()); err != nil {
			return err
		}
	}
	n.log.Info("pipeline: received snapshot", "from", f.From, "slot", f.Slot, "bytes", f.Total)
	*r = receivedFile{}
	return nil
}

// removeReceived closes and removes the temporary file of the transfer being received, if any.
func (x *snapshotTransfer) removeReceived() {
	r := &x.receiving
	if r.file != nil {
		_ = r.file.Close()
	}
	if r.path != "" {
		_ = os.Remove(r.path)
	}
	*r = receivedFile{}
}

// ---- driver.Effects' snapshot operations, on the step loop ----

func (s *stepper) ReadSnapshot(read driver.SnapshotRead) {
	s.n.xfer.queue(transferJob{op: transferRead, read: read})
}

func (s *stepper) WriteSnapshot(write driver.SnapshotWrite) {
	s.n.xfer.queue(transferJob{op: transferWrite, write: write})
}

func (s *stepper) FinishSnapshot(finish driver.SnapshotFinish) {
	s.n.xfer.queue(transferJob{op: transferFinish, finish: finish})
}

func (s *stepper) DiscardSnapshot(discard driver.SnapshotDiscard) {
	s.n.log.Warn("pipeline: snapshot transfer abandoned", "from", discard.From, "slot", discard.Slot,
		"bytes", discard.Bytes, "total", discard.Total, "reason", discard.Reason)
	if discard.Bytes > 0 {
		s.n.xfer.queue(transferJob{op: transferDiscard, discard: discard})
	}
}

// transferDone hands a snapshot operation's completion to the driver.
func (s *stepper) transferDone(res *transferResult) {
	switch res.op {
	case transferRead:
		s.d.SnapshotReadDone(res.read, res.chunk, res.err)
		s.n.xfer.recycle(res.chunk.Data) // the driver sent it: netio encoded it already
	case transferWrite:
		if res.err != nil {
			s.n.log.Warn("pipeline: writing a received snapshot", "slot", res.write.Slot, "err", res.err)
		}
		s.d.SnapshotWritten(res.write, res.err)
	case transferFinish:
		s.d.SnapshotFinished(res.finish, res.err)
	}
}

// ticksOf converts a duration to whole ticks of interval, at least one.
func ticksOf(d, interval time.Duration) int {
	return max(1, int((d+interval-1)/interval))
}
