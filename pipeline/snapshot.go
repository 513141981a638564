package pipeline

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mpaxos/mpaxos/core"
)

// Snapshots and compaction.
//
// The apply stage takes a snapshot every SnapshotConfig.EveryCommands commands or EveryBytes
// payload bytes: at a slot boundary it captures the node state (the exactly-once sessions,
// the dense offset counter, the applied digest) and asks the Application for its own
// snapshot reader; a background goroutine writes both into one file in DataDir/snapshots
// (temporary name, fsync, rename, fsync of the directory), then compacts to the snapshot
// before it: the WAL drops whole segments below that slot, the offset index forgets it, and
// core answers catch-up below it with a snapshot hint. Compacting to the previous snapshot
// rather than the new one keeps at least one interval of history readable (Read, Subscribe)
// and servable by catch-up, so a replica briefly behind catches up from the log, not a
// snapshot.
//
// Snapshot file format (integers little-endian; these constants are part of the data-dir
// format):
//
//	magic "mpsnap1\n" | crc32c u32 of everything after it | slot u64 | next offset u64 |
//	commands u64 | duplicates u64 | digest u64 | sessions length u32 | sessions |
//	application snapshot (to the end of the file)
//
// On restart the newest snapshot is loaded (a damaged one stops the replica: it was renamed
// into place only once durable, so damage is corruption, not a crash), core starts at its
// slot, and only the WAL records after it are applied.

// SnapshotConfig bounds snapshots and their transfer.
type SnapshotConfig struct {
	// EveryCommands: take a snapshot once this many commands were applied since the last one.
	EveryCommands int
	// EveryBytes: ... or once their payloads total this many bytes.
	EveryBytes int64
	// ChunkBytes bounds one SnapshotChunk message's data (at most Network.Limits.ValueBytesMax).
	ChunkBytes int
	// ChunkWindow: chunks a sender sends per request; the receiver asks for the next window
	// once it has them all. ChunkWindow*ChunkBytes must fit Network.OutboundBytesMax.
	ChunkWindow int
	// RetryInterval: a receiver that got no chunk for this long asks again.
	RetryInterval time.Duration
}

// Defaults of SnapshotConfig.
const (
	DefaultSnapshotEveryCommands = 1 << 20
	DefaultSnapshotEveryBytes    = 256 << 20
	DefaultSnapshotChunkBytes    = 1 << 20
	DefaultSnapshotChunkWindow   = 4
	DefaultSnapshotRetryInterval = 500 * time.Millisecond
)

// DefaultSnapshotConfig returns the defaults.
func DefaultSnapshotConfig() SnapshotConfig {
	return SnapshotConfig{
		EveryCommands: DefaultSnapshotEveryCommands,
		EveryBytes:    DefaultSnapshotEveryBytes,
		ChunkBytes:    DefaultSnapshotChunkBytes,
		ChunkWindow:   DefaultSnapshotChunkWindow,
		RetryInterval: DefaultSnapshotRetryInterval,
	}
}

func (c *SnapshotConfig) validate(valueBytesMax, outboundBytesMax int) error {
	switch {
	case c.EveryCommands <= 0:
		return invalid("Snapshot.EveryCommands", "%d: must be positive", c.EveryCommands)
	case c.EveryBytes <= 0:
		return invalid("Snapshot.EveryBytes", "%d: must be positive", c.EveryBytes)
	case c.ChunkBytes <= 0 || c.ChunkBytes > valueBytesMax:
		return invalid("Snapshot.ChunkBytes", "%d: must be in [1, Network.Limits.ValueBytesMax %d]", c.ChunkBytes, valueBytesMax)
	case c.ChunkWindow <= 0:
		return invalid("Snapshot.ChunkWindow", "%d: must be positive", c.ChunkWindow)
	case outboundBytesMax > 0 && c.ChunkWindow*c.ChunkBytes > outboundBytesMax:
		return invalid("Snapshot.ChunkWindow", "%d chunks of %d bytes exceed Network.OutboundBytesMax %d",
			c.ChunkWindow, c.ChunkBytes, outboundBytesMax)
	case c.RetryInterval < time.Millisecond:
		return invalid("Snapshot.RetryInterval", "%v: must be at least 1ms", c.RetryInterval)
	}
	return nil
}

const (
	snapshotMagic      = "mpsnap1\n"
	snapshotHeaderSize = 8 + 4 + 5*8 + 4
	snapshotDirName    = "snapshots"
	snapshotSuffix     = ".snap"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrSnapshot wraps failures to write, read or install a snapshot.
var ErrSnapshot = errors.New("pipeline: snapshot")

// snapshotMeta is the node state a snapshot holds besides the application's bytes.
type snapshotMeta struct {
	slot       uint64 // covers every slot < slot
	nextOffset uint64
	applied    AppliedState // applied.Slot == slot
	sessions   []byte
}

func snapshotName(slot uint64) string { return fmt.Sprintf("snap-%020d%s", slot, snapshotSuffix) }

func parseSnapshotName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, "snap-") || !strings.HasSuffix(name, snapshotSuffix) {
		return 0, false
	}
	slot, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "snap-"), snapshotSuffix), 10, 64)
	return slot, err == nil
}

func (n *Node) snapshotDir() string { return filepath.Join(n.cfg.DataDir, snapshotDirName) }

// listSnapshots returns the slots of the snapshot files, ascending. With cleanup (at Start
// only: later a transfer may be writing one) it removes temporary files left by a crash.
func listSnapshots(dir string, cleanup bool) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var slots []uint64
	for _, e := range entries {
		if slot, ok := parseSnapshotName(e.Name()); ok {
			slots = append(slots, slot)
		} else if cleanup && strings.HasSuffix(e.Name(), ".tmp") {
			_ = os.Remove(filepath.Join(dir, e.Name())) // an interrupted write or transfer
		}
	}
	slices.Sort(slots)
	return slots, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeSnapshot writes meta and the application's bytes into dir as the snapshot of
// meta.slot, durably: temporary file, fsync, rename, fsync of the directory.
func writeSnapshot(dir string, meta *snapshotMeta, app io.Reader, noSync bool) (err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	final := filepath.Join(dir, snapshotName(meta.slot))
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	header := make([]byte, snapshotHeaderSize, snapshotHeaderSize+len(meta.sessions))
	copy(header, snapshotMagic)
	binary.LittleEndian.PutUint64(header[12:], meta.slot)
	binary.LittleEndian.PutUint64(header[20:], meta.nextOffset)
	binary.LittleEndian.PutUint64(header[28:], meta.applied.Commands)
	binary.LittleEndian.PutUint64(header[36:], meta.applied.Duplicates)
	binary.LittleEndian.PutUint64(header[44:], meta.applied.Digest)
	binary.LittleEndian.PutUint32(header[52:], uint32(len(meta.sessions)))
	header = append(header, meta.sessions...)
	h := crc32.New(crcTable)
	_, _ = h.Write(header[12:])
	w := bufio.NewWriterSize(f, 256<<10)
	if _, err := w.Write(header); err != nil {
		return err
	}
	if app != nil {
		if _, err := io.Copy(io.MultiWriter(w, h), app); err != nil {
			return fmt.Errorf("reading the application snapshot: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	crc := h.Sum32()
	var crcBytes [4]byte
	binary.LittleEndian.PutUint32(crcBytes[:], crc)
	if _, err := f.WriteAt(crcBytes[:], 8); err != nil {
		return err
	}
	if !noSync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		f = nil
		return err
	}
	f = nil
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if noSync {
		return nil
	}
	return syncDir(dir)
}

// readSnapshotMeta opens a snapshot file, verifies its checksum and returns its node state
// and the open file positioned at the application's bytes.
func readSnapshotMeta(path string) (*snapshotMeta, *os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, err
	}
	fail := func(format string, args ...any) (*snapshotMeta, *os.File, int64, error) {
		_ = f.Close()
		return nil, nil, 0, fmt.Errorf("%w: %s: %s", ErrSnapshot, path, fmt.Sprintf(format, args...))
	}
	info, err := f.Stat()
	if err != nil {
		return fail("%v", err)
	}
	header := make([]byte, snapshotHeaderSize)
	if _, err := io.ReadFull(f, header); err != nil {
		return fail("header: %v", err)
	}
	if string(header[:8]) != snapshotMagic {
		return fail("not a snapshot file (bad magic)")
	}
	sessionsLen := int64(binary.LittleEndian.Uint32(header[52:]))
	if snapshotHeaderSize+sessionsLen > info.Size() {
		return fail("sessions of %d bytes run past the end of the %d-byte file", sessionsLen, info.Size())
	}
	h := crc32.New(crcTable)
	_, _ = h.Write(header[12:])
	if _, err := io.Copy(h, bufio.NewReaderSize(f, 256<<10)); err != nil {
		return fail("%v", err)
	}
	if want := binary.LittleEndian.Uint32(header[8:]); h.Sum32() != want {
		return fail("checksum %08x, header says %08x", h.Sum32(), want)
	}
	meta := &snapshotMeta{
		slot:       binary.LittleEndian.Uint64(header[12:]),
		nextOffset: binary.LittleEndian.Uint64(header[20:]),
		sessions:   make([]byte, sessionsLen),
	}
	meta.applied = AppliedState{Slot: meta.slot, Offset: meta.nextOffset, Commands: binary.LittleEndian.Uint64(header[28:]),
		Duplicates: binary.LittleEndian.Uint64(header[36:]), Digest: binary.LittleEndian.Uint64(header[44:])}
	if _, err := f.ReadAt(meta.sessions, snapshotHeaderSize); err != nil {
		return fail("sessions: %v", err)
	}
	appStart := snapshotHeaderSize + sessionsLen
	if _, err := f.Seek(appStart, io.SeekStart); err != nil {
		return fail("%v", err)
	}
	return meta, f, info.Size() - appStart, nil
}

// loadLatestSnapshot returns the newest snapshot's node state (nil if none); its file is
// closed again, the apply stage reopens it to restore the application.
func loadLatestSnapshot(dir string) (*snapshotMeta, error) {
	slots, err := listSnapshots(dir, true)
	if err != nil || len(slots) == 0 {
		return nil, err
	}
	meta, f, _, err := readSnapshotMeta(filepath.Join(dir, snapshotName(slots[len(slots)-1])))
	if err != nil {
		return nil, err
	}
	_ = f.Close()
	return meta, nil
}

// snapshotJob is one snapshot the apply stage captured, for the snapshot writer.
type snapshotJob struct {
	meta snapshotMeta
	app  io.ReadCloser // nil without an Application
}

// snapshots is the node's snapshot state shared between stages.
type snapshots struct {
	mu        sync.Mutex
	latest    uint64   // newest durable snapshot slot (0 if none)
	installs  []uint64 // snapshot slots installSnapshot queued for the apply stage
	jobs      chan snapshotJob
	writerEnd chan struct{}
}

// compactSlot is read on the step goroutine by compactingStorage: every slot below it is
// covered by a durable snapshot that is no longer the newest (see the file comment).
func (n *Node) compactSlot() uint64 { return n.compactTo.Load() }

// runSnapshotWriter writes the snapshots the apply stage captures, then compacts.
func (n *Node) runSnapshotWriter() {
	defer close(n.snaps.writerEnd)
	for job := range n.snaps.jobs {
		start := time.Now()
		var app io.Reader
		if job.app != nil {
			app = job.app
		}
		err := writeSnapshot(n.snapshotDir(), &job.meta, app, n.cfg.NoSync)
		if job.app != nil {
			_ = job.app.Close()
		}
		if err != nil {
			n.log.Error("pipeline: snapshot failed; will retry at the next interval", "slot", job.meta.slot, "err", err)
			continue
		}
		n.log.Info("pipeline: snapshot", "slot", job.meta.slot, "offset", job.meta.nextOffset,
			"duration", time.Since(start))
		n.snapshotTaken(job.meta.slot)
	}
}

// snapshotTaken records a new durable snapshot at slot and compacts to the one before it.
func (n *Node) snapshotTaken(slot uint64) {
	n.snaps.mu.Lock()
	previous := n.snaps.latest
	n.snaps.latest = max(n.snaps.latest, slot)
	n.snaps.mu.Unlock()
	if previous == 0 || previous >= slot {
		return
	}
	n.compact(previous)
	// Keep the two newest files: the one compacted to (still served to peers behind it) and
	// the newest.
	slots, err := listSnapshots(n.snapshotDir(), false)
	if err != nil {
		n.log.Warn("pipeline: listing snapshots", "err", err)
		return
	}
	for _, s := range slots {
		if s < previous {
			_ = os.Remove(filepath.Join(n.snapshotDir(), snapshotName(s)))
		}
	}
}

// compact drops history below slot: the WAL's whole segments, the offset index, and (lazily,
// see compactingStorage) core's memory.
func (n *Node) compact(slot uint64) {
	if slot <= n.compactTo.Load() {
		return
	}
	n.compactTo.Store(slot)
	n.index.trimBelow(slot)
	if err := n.wal.TruncateBefore(slot); err != nil {
		n.log.Warn("pipeline: WAL truncation failed", "slot", slot, "err", err)
	}
}

// compactingStorage is core's Storage: it serves catch-up from the cache of chosen values,
// and answers a request it cannot serve with core.ErrCompacted, so that core replies with a
// snapshot hint: below the compaction point, and also between the newest snapshot's slot and
// the oldest slot the cache holds (the WAL holds those, but reading it would stall the step
// loop). If no snapshot covers such a request yet, the apply stage is asked to take one now.
//
// core.Compact must run on the step goroutine, which belongs to another file; this adapter
// runs there (core calls Storage from Step) and calls Compact just before it answers
// ErrCompacted, so core's snapshot slot is set exactly when a peer first needs it. Between
// compactions core's memory is bounded by RetainSlots anyway; Compact only moves the hint.
type compactingStorage struct {
	n    *Node
	next core.Storage
}

func (s compactingStorage) Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	n := s.n
	if c := n.compactSlot(); c != 0 && from < c {
		n.replica.Compact(c)
		return dst, core.ErrCompacted
	}
	before := len(dst)
	dst, err := s.next.Chosen(from, maxSlots, maxBytes, dst)
	if err != nil || len(dst) > before {
		return dst, err
	}
	n.snaps.mu.Lock()
	latest := n.snaps.latest
	n.snaps.mu.Unlock()
	if latest > from {
		n.replica.Compact(latest)
		return dst, core.ErrCompacted
	}
	if n.snapshotSoon.CompareAndSwap(false, true) {
		n.wakeApply() // the apply stage may be idle: a snapshot is taken at the end of a round
	}
	return dst, nil
}

// installSnapshot is called on the step goroutine when core's driver finishes a Ready that
// carries SnapshotSlot: the snapshot of slot was received from a peer and stored durably
// (snapshot_transfer.go) before core heard of it. It queues the install for the apply stage, in order: the apply
// stage installs it after every chosen entry handed out before, and before those after.
func (n *Node) installSnapshot(slot uint64) {
	n.queueMarker(slot)
}

// wakeApply queues an empty apply round (an install marker that installs nothing), on the
// step goroutine.
func (n *Node) wakeApply() { n.queueMarker(0) }

// queueMarker queues an apply job with no entries (an install marker) and its install slot
// (0: none). Markers and slots are queued in the same order on the one step goroutine, so
// the apply stage pairs each marker with its own slot.
func (n *Node) queueMarker(slot uint64) {
	n.snaps.mu.Lock()
	n.snaps.installs = append(n.snaps.installs, slot)
	n.snaps.mu.Unlock()
	n.applyCh <- applyJob{handed: time.Now()} // no entries, not failAll: a marker
}

// takeInstall returns the slot paired with the marker being applied (0: none).
func (n *Node) takeInstall() uint64 {
	n.snaps.mu.Lock()
	defer n.snaps.mu.Unlock()
	if len(n.snaps.installs) == 0 {
		return 0
	}
	slot := n.snaps.installs[0]
	n.snaps.installs = n.snaps.installs[1:]
	return slot
}
