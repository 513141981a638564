package sim

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/core/driver"
)

// Each simulated replica's Ready handling is core/driver's, the component the server's step
// loop runs; this file is the driver's Effects for a simulated replica: a network send, a
// simulated disk, a state machine. The disk is three queues, each completing in order after a
// latency drawn per operation, like the pipeline's goroutines:
//
//   - entry writes (the WAL writer): a FIFO; a crash keeps a prefix of the writes in flight,
//     possibly torn at a record boundary;
//   - hard-state saves (the hard-state saver): a FIFO apart from the entries, so a Ready's
//     hard state may become durable before an earlier Ready's entries; a crash keeps a
//     prefix, the latest of which is on disk;
//   - snapshot file operations (the snapshot transfer goroutine): reads of the local
//     snapshots, writes into the transfer's temporary file, finishes that verify it and make
//     it durable.
//
// Each tick, once per replica, due operations complete in a random order across the queues
// (each queue in its own order), each reported to the driver and followed by Drive. A crash
// decided inside an effect (during a snapshot install) makes every later effect of that call a
// no-op, and is carried out once the driver returns.

// completionsPerTickMax bounds the disk operations one replica completes per world tick.
const completionsPerTickMax = 16

// snapshotFilesMax: a disk keeps its newest snapshot files, as the pipeline keeps the two
// newest (the older one is still served to a peer that is fetching it).
const snapshotFilesMax = 2

// persistWrite is one persist part in flight: a Ready's entries or its hard state.
type persistWrite struct {
	seq       uint64
	doneAt    int // completes at this tick (never before the write ahead of it)
	entries   []codec.Entry
	hardState core.HardState
	reported  bool // a planted early report told the driver already
}

// persistReport is a persist part a planted lying disk reports before it holds it.
type persistReport struct {
	seq  uint64
	part driver.Part
}

type snapshotOperationKind uint8

const (
	snapshotRead snapshotOperationKind = iota
	snapshotWrite
	snapshotFinish
)

// snapshotOperation is one snapshot file operation in flight.
type snapshotOperation struct {
	kind   snapshotOperationKind
	doneAt int
	read   driver.SnapshotRead
	write  driver.SnapshotWrite // Data is the disk's own copy
	finish driver.SnapshotFinish
}

// tempFile is the temporary file of the transfer being received; a crash loses it.
type tempFile struct {
	transfer uint64
	slot     uint64
	data     []byte
}

// effects is a replica's driver.Effects.
type effects struct {
	w *world
	n *node
}

var _ driver.Effects = effects{}

// newDriver starts n's driver over its replica (a start or a restart).
func (w *world) newDriver(n *node) {
	d, err := driver.New(n.driverCfg, n.r, effects{w: w, n: n})
	if err != nil {
		w.fail("restart from persisted state", "replica %d: %v", n.id, err)
	}
	n.driver = d
}

// driverConfig draws n's driver policy and disk from the seed.
func (w *world) driverConfig(n *node) {
	o := &w.opts
	n.driverCfg = driver.Config{
		PersistInflightMax: 1 + w.rng.IntN(o.PersistsInflightMax),
		CommitSaveTicks:    o.CommitSaveTicks,
		ChunkBytes:         o.ChunkBytes,
		ChunkWindow:        o.ChunkWindow,
		RetryTicks:         o.SnapshotRetryTicks,
		RetryLimit:         o.SnapshotRetryLimit,
		ServesMax:          max(1, o.Replicas-1),
	}
	if o.Driver != nil {
		o.Driver(&n.driverCfg)
	}
	// A slow disk takes [PersistTicksMax/2, PersistTicksMax] per synced write, a fast one
	// [0, PersistTicksMax/4]: a candidate's peers may promise before its own promise is durable.
	if p := o.PersistTicksMax; w.rng.IntN(2) == 0 {
		n.persistTicksMin, n.persistTicksMax = p/2, p
	} else {
		n.persistTicksMin, n.persistTicksMax = 0, p/4
	}
}

// syncTicks draws a synced write's latency; fileTicks an unsynced read or write's.
func (w *world) syncTicks(n *node) int {
	return n.persistTicksMin + w.rng.IntN(n.persistTicksMax-n.persistTicksMin+1)
}

func (w *world) fileTicks() int { return w.rng.IntN(w.opts.PersistTicksMax/4 + 1) }

// drive moves one replica's disk and driver for this tick: due disk operations complete (each
// reported, then Drive), then Drive takes what the tick's inputs made ready. A paused replica
// does nothing; a stalled disk completes nothing.
func (w *world) drive(n *node) {
	for range completionsPerTickMax {
		if !n.running(w.now) || !w.completeOne(n) {
			break
		}
		if w.crashIfDecided(n) {
			return
		}
		n.driver.Drive()
		if w.crashIfDecided(n) {
			return
		}
	}
	if !n.running(w.now) {
		return
	}
	n.driver.Drive()
	if !w.crashIfDecided(n) {
		w.checkPromised(n)
	}
}

// crashIfDecided carries out a crash an effect decided during the driver call that just
// returned.
func (w *world) crashIfDecided(n *node) bool {
	if !n.crashing {
		return false
	}
	w.crash(n)
	return true
}

// completeOne completes one due disk operation, picked at random among the heads of the
// queues, and reports it to the driver. It returns false if none is due.
func (w *world) completeOne(n *node) bool {
	if len(n.earlyReports) > 0 {
		r := n.earlyReports[0]
		n.earlyReports = n.earlyReports[1:]
		n.driver.Persisted(r.seq, r.part)
		return true
	}
	if w.now < n.stalledTill {
		return false
	}
	var due [3]int
	k := 0
	if len(n.entryWrites) > 0 && n.entryWrites[0].doneAt <= w.now {
		due[k], k = 0, k+1
	}
	if len(n.hardStateWrites) > 0 && n.hardStateWrites[0].doneAt <= w.now {
		due[k], k = 1, k+1
	}
	if len(n.snapshotOps) > 0 && n.snapshotOps[0].doneAt <= w.now {
		due[k], k = 2, k+1
	}
	if k == 0 {
		return false
	}
	switch due[w.rng.IntN(k)] {
	case 0:
		write := n.entryWrites[0]
		n.entryWrites = n.entryWrites[1:]
		w.syncing(n)
		for _, e := range write.entries {
			w.writeEntry(n, e)
		}
		if !write.reported {
			n.driver.Persisted(write.seq, driver.PartEntries)
		}
	case 1:
		write := n.hardStateWrites[0]
		n.hardStateWrites = n.hardStateWrites[1:]
		w.syncing(n)
		w.writeHardState(n, write.hardState)
		if !write.reported {
			n.driver.Persisted(write.seq, driver.PartHardState)
		}
	case 2:
		op := n.snapshotOps[0]
		n.snapshotOps = n.snapshotOps[1:]
		w.completeSnapshotOperation(n, &op)
	}
	return true
}

// syncing: LyingDisk remembers the disk before each synced write, and a crash goes back to it.
func (w *world) syncing(n *node) {
	if w.opts.LyingDisk {
		n.lastSync = n.disk.clone()
	}
}

// ---- driver.Effects ----

// Send checks what the message vouches for against the disk, then puts it on the network.
func (e effects) Send(m *codec.Message) {
	if e.n.crashing {
		return
	}
	e.w.sendChecked(e.n, m)
}

// PersistEntries queues the entries behind every earlier entry write.
func (e effects) PersistEntries(seq uint64, entries []codec.Entry) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	w.countOverlap(n, seq)
	write := persistWrite{seq: seq, doneAt: w.now + w.syncTicks(n), entries: entries}
	if k := len(n.entryWrites); k > 0 {
		write.doneAt = max(write.doneAt, n.entryWrites[k-1].doneAt)
	}
	if w.opts.Plant == PlantPersistReportedEarly || w.opts.Plant == PlantLeaderPersistReportedEarly && n.r.Status().IsLeader {
		write.reported = true
		n.earlyReports = append(n.earlyReports, persistReport{seq: seq, part: driver.PartEntries})
	}
	n.entryWrites = append(n.entryWrites, write)
}

// SaveHardState queues the hard state behind every earlier save (not behind the entries).
func (e effects) SaveHardState(seq uint64, hs core.HardState) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	w.countOverlap(n, seq)
	write := persistWrite{seq: seq, doneAt: w.now + w.syncTicks(n), hardState: hs}
	if k := len(n.hardStateWrites); k > 0 {
		write.doneAt = max(write.doneAt, n.hardStateWrites[k-1].doneAt)
	}
	if w.opts.Plant == PlantPersistReportedEarly {
		write.reported = true
		n.earlyReports = append(n.earlyReports, persistReport{seq: seq, part: driver.PartHardState})
	}
	n.hardStateWrites = append(n.hardStateWrites, write)
}

// countOverlap counts a Ready whose persist starts while an earlier Ready's is in flight.
func (w *world) countOverlap(n *node, seq uint64) {
	if seq != n.persistSeq && len(n.entryWrites)+len(n.hardStateWrites) > 0 {
		w.res.Overlapped++
	}
	n.persistSeq = seq
}

// Apply hands chosen entries to the state machine; each must agree with every replica's and
// be durable on a majority with that value (core/check).
func (e effects) Apply(chosen []codec.Entry) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	for _, c := range chosen {
		w.must(w.history.Chosen(n.id, c))
		w.apply(n, c)
	}
}

// InstallSnapshot restores the state machine from the durable file of slot and truncates the
// log below it. With InstallCrashPercent the replica crashes during it instead, having
// truncated some prefix of that log: the restart finds the durable file.
func (e effects) InstallSnapshot(slot uint64) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	file := n.disk.snapshotAt(slot)
	if file == nil {
		w.fail("snapshot install", "replica %d asked to install snapshot %d, its disk holds %v", n.id, slot, n.disk.snapshotSlots())
	}
	if w.rng.IntN(100) < w.opts.InstallCrashPercent {
		n.crashing = true
		w.res.InstallCrashes++
		w.truncateBelow(n, uint64(w.rng.IntN(int(slot)+1)))
		return
	}
	w.restoreSnapshot(n, file)
	w.res.Snapshots++
}

// ReadSnapshot queues a read of a local snapshot file.
func (e effects) ReadSnapshot(read driver.SnapshotRead) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	w.queueSnapshotOperation(n, snapshotOperation{kind: snapshotRead, doneAt: w.now + w.fileTicks(), read: read})
}

// WriteSnapshot queues a write into the transfer's temporary file, of a copy of the chunk's
// bytes (the message they came in is scribbled over after Step when StepValuesOwned is off).
func (e effects) WriteSnapshot(write driver.SnapshotWrite) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	write.Data = bytes.Clone(write.Data)
	w.queueSnapshotOperation(n, snapshotOperation{kind: snapshotWrite, doneAt: w.now + w.fileTicks(), write: write})
}

// FinishSnapshot queues the verification and sync of the transfer's file.
func (e effects) FinishSnapshot(finish driver.SnapshotFinish) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	w.queueSnapshotOperation(n, snapshotOperation{kind: snapshotFinish, doneAt: w.now + w.syncTicks(n), finish: finish})
}

// DiscardSnapshot removes an abandoned transfer's temporary file.
func (e effects) DiscardSnapshot(discard driver.SnapshotDiscard) {
	w, n := e.w, e.n
	if n.crashing {
		return
	}
	if n.temp != nil && n.temp.transfer == discard.Transfer {
		n.temp = nil
	}
	w.res.TransfersAbandoned++
}

func (w *world) queueSnapshotOperation(n *node, op snapshotOperation) {
	if k := len(n.snapshotOps); k > 0 {
		op.doneAt = max(op.doneAt, n.snapshotOps[k-1].doneAt)
	}
	if len(n.snapshotOps) >= n.driverCfg.SnapshotOperationsMax() {
		w.fail("driver bounds", "replica %d: %d snapshot operations in flight, the driver's bound is %d",
			n.id, len(n.snapshotOps)+1, n.driverCfg.SnapshotOperationsMax())
	}
	n.snapshotOps = append(n.snapshotOps, op)
}

// completeSnapshotOperation does a snapshot file operation and reports it.
func (w *world) completeSnapshotOperation(n *node, op *snapshotOperation) {
	switch op.kind {
	case snapshotRead:
		chunk, err := n.disk.readSnapshot(op.read)
		n.driver.SnapshotReadDone(op.read, chunk, err)
	case snapshotWrite:
		n.driver.SnapshotWritten(op.write, w.writeTemp(n, op.write))
	case snapshotFinish:
		err := w.finishTemp(n, op.finish)
		n.driver.SnapshotFinished(op.finish, err)
		if err == nil && w.rng.IntN(100) < w.opts.FinishCrashPercent {
			n.crashing = true // durable, not yet installed: the restart starts from it
			w.res.InstallCrashes++
		}
	}
}

// errSimulatedDisk is a failure the simulated disk injects.
var errSimulatedDisk = errors.New("sim: injected disk failure")

// writeTemp writes received bytes into the transfer's temporary file (offset 0 creates it).
func (w *world) writeTemp(n *node, write driver.SnapshotWrite) error {
	if write.Offset == 0 {
		n.temp = &tempFile{transfer: write.Transfer, slot: write.Slot}
	}
	t := n.temp
	if t == nil || t.transfer != write.Transfer || uint64(len(t.data)) != write.Offset {
		return fmt.Errorf("sim: write of transfer %d at %d does not follow the file's bytes", write.Transfer, write.Offset)
	}
	if w.rng.IntN(100) < w.opts.SnapshotWriteFailPercent {
		w.res.SnapshotFaults++
		t.data = append(t.data, write.Data[:w.rng.IntN(len(write.Data)+1)]...) // maybe a short write
		return errSimulatedDisk
	}
	start := len(t.data)
	t.data = append(t.data, write.Data...)
	if w.rng.IntN(100) < w.opts.SnapshotCorruptPercent && len(write.Data) > 0 {
		w.res.SnapshotFaults++
		t.data[start+w.rng.IntN(len(write.Data))] ^= 1 << w.rng.IntN(8)
	}
	return nil
}

// finishTemp verifies the transfer's file (its size and checksum against the sender's, its
// own format and slot) and makes it durable among the disk's snapshot files.
func (w *world) finishTemp(n *node, finish driver.SnapshotFinish) error {
	t := n.temp
	if t == nil || t.transfer != finish.Transfer {
		return fmt.Errorf("sim: finish of transfer %d, no such file", finish.Transfer)
	}
	if w.rng.IntN(100) < w.opts.SnapshotFinishFailPercent {
		w.res.SnapshotFaults++
		n.temp = nil
		return errSimulatedDisk
	}
	if w.opts.Plant != PlantSnapshotUnverified {
		if err := verifyTemp(t, finish); err != nil {
			n.temp = nil
			return err
		}
	}
	n.temp = nil
	n.disk.addSnapshot(snapshotFile{slot: finish.Slot, data: t.data, checksum: crc32.Checksum(t.data, castagnoli)})
	return nil
}

// verifyTemp: Total bytes with the sender's checksum, and a file of finish.Slot that parses.
func verifyTemp(t *tempFile, finish driver.SnapshotFinish) error {
	if uint64(len(t.data)) != finish.Total || crc32.Checksum(t.data, castagnoli) != finish.Checksum {
		return fmt.Errorf("sim: received snapshot %d: %d bytes, the sender said %d with checksum %08x",
			finish.Slot, len(t.data), finish.Total, finish.Checksum)
	}
	s, err := decodeSnapshot(t.data)
	if err != nil {
		return err
	}
	if s.slot() != finish.Slot {
		return fmt.Errorf("sim: received snapshot says slot %d, the chunks said %d", s.slot(), finish.Slot)
	}
	return nil
}

// crashDisk decides what the operations in flight left on n's disk. Half the time nothing of
// them; else a prefix of the entry writes (the last kept one maybe torn at a record boundary:
// a WAL drops a torn record), a prefix of the hard-state saves (the latest of them is on
// disk), and a finish in flight may have renamed its verified file into place.
func (w *world) crashDisk(n *node) {
	if w.rng.IntN(2) == 0 {
		var entries []codec.Entry
		for _, write := range n.entryWrites {
			entries = append(entries, write.entries...)
		}
		kept := w.rng.IntN(len(entries) + 1)
		for _, e := range entries[:kept] {
			w.writeEntry(n, e)
		}
		if w.opts.Plant == PlantTornRecordReadWhole && kept < len(entries) && len(entries[kept].Value) > 1 {
			torn := entries[kept]
			torn.Value = torn.Value[:len(torn.Value)/2]
			w.writeEntry(n, torn)
		}
		for _, write := range n.hardStateWrites[:w.rng.IntN(len(n.hardStateWrites)+1)] {
			w.writeHardState(n, write.hardState)
		}
		for _, op := range n.snapshotOps {
			if op.kind == snapshotFinish && n.temp != nil && verifyTemp(n.temp, op.finish) == nil && w.rng.IntN(2) == 0 {
				n.disk.addSnapshot(snapshotFile{slot: op.finish.Slot, data: n.temp.data, checksum: op.finish.Checksum})
			}
		}
	}
	switch {
	case w.opts.LyingDisk:
		n.disk = n.lastSync.clone()
	case w.opts.Plant == PlantForgetOwnPromise && n.disk.hardState.Promised.Replica == n.id:
		n.disk.hardState.Promised = n.vouched // the own campaign's promise never reached the disk
	case w.opts.Plant == PlantForgetAcceptedOnCrash:
		for _, s := range sortedSlots(n.disk.entries) {
			if e := n.disk.entries[s]; s >= n.disk.hardState.Commit && e.Ballot != core.ChosenBallot && w.rng.IntN(2) == 0 {
				delete(n.disk.entries, s)
				break
			}
		}
	}
	n.entryWrites, n.hardStateWrites, n.snapshotOps, n.earlyReports = nil, nil, nil, nil
	n.temp, n.crashing = nil, false
}

// quietTransfersMax: the snapshot transfers a replica may need one after another once the
// faults stop. Nothing compacts any more, but a transfer under way may be of an older file
// than the newest (its sender compacted again meanwhile), and once it is installed the
// replica still needs the newest.
const quietTransfersMax = 2

// transferTicks bounds, in world ticks, quietTransfersMax transfers of the largest snapshot
// file on any disk when nothing fails: the liveness bound adds it to QuietTicks, since a
// transfer takes a round trip per window and a window may be one chunk of ChunkBytes.
//
// One window's round trip: the request's delay, the sender's reads one after another (each
// completes within fileTicks of being queued), the last chunk's delay, and its write; each
// hop may wait one more tick for the next delivery. Once every byte is written, the finish
// syncs and the install goes through a Ready's persist.
// catchUpTicks: the time a replica that missed the whole log takes to fetch it once the
// faults stop, at the smallest drawn CatchUpSlotsMax: one request at a time, each a round trip
// plus the persist of its entries and then of the commit point (two FIFOs of a slow disk).
// Seed 28353 (5 replicas, 15-tick disk, 1-slot catch-up replies) needed more than 30 election
// timeouts for that alone.
func (w *world) catchUpTicks() int {
	slots := len(w.global) + w.pendingCount()
	perRequest := 1 << 30
	for _, n := range w.nodes {
		perRequest = min(perRequest, n.cfg.CatchUpSlotsMax)
	}
	o := &w.opts
	rounds := (slots + perRequest - 1) / perRequest
	return rounds * (2*(o.DelayTicksMax+1) + 2*o.PersistTicksMax)
}

func (w *world) transferTicks() int {
	largest := 0
	for _, n := range w.nodes {
		for _, f := range n.disk.snapshots {
			largest = max(largest, len(f.data))
		}
	}
	if largest == 0 {
		return 0
	}
	windowBytes, readsMax := 0, 0
	for i, n := range w.nodes {
		c := &n.driverCfg
		if bytes := c.ChunkBytes * c.ChunkWindow; i == 0 || bytes < windowBytes {
			windowBytes = bytes
		}
		readsMax = max(readsMax, c.ChunkWindow)
	}
	o := &w.opts
	fileTicksMax := o.PersistTicksMax / 4
	windowTicks := 2*(o.DelayTicksMax+1) + (readsMax+1)*fileTicksMax
	windows := (largest + windowBytes - 1) / windowBytes
	return quietTransfersMax * (windows*windowTicks + 2*o.PersistTicksMax)
}

// ---- snapshot files on a disk ----

// snapshotAt returns the durable snapshot file of slot (nil if none).
func (d *disk) snapshotAt(slot uint64) *snapshotFile {
	for i := range d.snapshots {
		if d.snapshots[i].slot == slot {
			return &d.snapshots[i]
		}
	}
	return nil
}

// newestSnapshot returns the newest durable snapshot file (nil if none): a restart starts
// from it, and a peer asking for the newest is served it.
func (d *disk) newestSnapshot() *snapshotFile {
	if len(d.snapshots) == 0 {
		return nil
	}
	return &d.snapshots[len(d.snapshots)-1]
}

func (d *disk) newestSnapshotSlot() uint64 {
	if s := d.newestSnapshot(); s != nil {
		return s.slot
	}
	return 0
}

func (d *disk) snapshotSlots() []uint64 {
	var slots []uint64
	for _, s := range d.snapshots {
		slots = append(slots, s.slot)
	}
	return slots
}

// addSnapshot makes a file durable: the files stay ordered by slot, and only the newest
// snapshotFilesMax are kept. A file of a slot already held replaces it (the same chosen state).
func (d *disk) addSnapshot(f snapshotFile) {
	i := 0
	for i < len(d.snapshots) && d.snapshots[i].slot < f.slot {
		i++
	}
	if i < len(d.snapshots) && d.snapshots[i].slot == f.slot {
		d.snapshots[i] = f
		return
	}
	d.snapshots = append(d.snapshots[:i], append([]snapshotFile{f}, d.snapshots[i:]...)...)
	if k := len(d.snapshots); k > snapshotFilesMax {
		d.snapshots = append(d.snapshots[:0:0], d.snapshots[k-snapshotFilesMax:]...)
	}
}

// readSnapshot serves a chunk of a local file (Slot 0: the newest). A file pruned meanwhile
// fails the read: the serve ends, and the receiver starts over once it gives up.
func (d *disk) readSnapshot(read driver.SnapshotRead) (driver.SnapshotChunk, error) {
	f := d.newestSnapshot()
	if read.Slot != 0 {
		f = d.snapshotAt(read.Slot)
	}
	if f == nil || read.Offset >= uint64(len(f.data)) {
		return driver.SnapshotChunk{}, fmt.Errorf("sim: no snapshot %d to read at %d (disk holds %v)", read.Slot, read.Offset, d.snapshotSlots())
	}
	end := min(uint64(len(f.data)), read.Offset+uint64(read.BytesMax))
	return driver.SnapshotChunk{Slot: f.slot, Total: uint64(len(f.data)), Checksum: f.checksum, Data: f.data[read.Offset:end]}, nil
}

// ---- catch-up from the state machine ----

// Chosen is core.Storage: catch-up served from the state machine's applied values (they were
// handed out as chosen), like the pipeline's slot cache.
func (n *node) Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	values := n.state.values
	if n.plantStorageOffByOne {
		from++
	}
	size := 0
	for s := from; s < uint64(len(values)) && maxSlots > 0; s++ {
		v := values[s]
		if len(dst) > 0 && size+len(v) > maxBytes {
			break
		}
		dst = append(dst, v)
		size += len(v)
		maxSlots--
	}
	return dst, nil
}

// queues describes a replica's disk queues (for a Violation): what is waiting and when it is due.
func (n *node) queues() string {
	due := func(at []int) string {
		if len(at) == 0 {
			return "none"
		}
		return fmt.Sprintf("%d, head due at tick %d", len(at), at[0])
	}
	var e, h, s []int
	for _, x := range n.entryWrites {
		e = append(e, x.doneAt)
	}
	for _, x := range n.hardStateWrites {
		h = append(h, x.doneAt)
	}
	for _, x := range n.snapshotOps {
		s = append(s, x.doneAt)
	}
	return fmt.Sprintf("entries %s; hard states %s; snapshot ops %s; early reports %d; paused till %d, stalled till %d",
		due(e), due(h), due(s), len(n.earlyReports), n.pausedTill, n.stalledTill)
}
