package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"
)

// WAL is an open log. All methods are safe for concurrent use.
type WAL struct {
	options Options
	fs      FS
	logger  *slog.Logger
	lock    io.Closer

	// mu guards the queue: pending, the accounting and the closing and failure flags.
	mu              sync.Mutex
	writerWake      sync.Cond // the writer waits here for requests or Close
	spaceFreed      sync.Cond // appenders wait here while the queue is full
	pending         *batchBuffer
	queuedRecords   int // records in pending plus those being written
	queuedBytes     int // encoded bytes in pending plus those being written
	closing         bool
	failure         error // sticky: set once a write or sync fails
	writerDone      chan struct{}
	requestBytesMax int // largest single call: fits the queue and one segment

	// Owned by the writer goroutine (and by Open before it starts).
	spare      *batchBuffer
	active     File   // the last segment, open for writing
	activeSalt uint32 // masks the record checksums written into active
	nextIndex  uint64
	// tailSaved holds the bytes of the next batch that a batch's end marker and padding
	// cover while it is written (only when one round spans two segments).
	tailSaved []byte

	// spareMu guards spares: base names of segment files that TruncateBefore kept for reuse
	// (at most Options.RecycledSegmentsMax), oldest first. The preparer takes the newest.
	spareMu sync.Mutex
	spares  []string

	// segmentsMu guards segments and the active segment's counters, which TruncateBefore,
	// Replay and Stats read while the writer runs.
	segmentsMu sync.Mutex
	segments   []*segmentInfo
	// truncateMu keeps TruncateBefore from removing files that Replay is reading.
	truncateMu sync.RWMutex

	hardState hardStateFile
	stats     statistics
	index     *keyIndex        // nil unless Options.IndexKeys
	preparer  *segmentPreparer // nil until Open succeeds
}

// batchBuffer is one round of the writer: the encoded records of many calls, with room for
// the batch header in front. Two alternate, so appenders fill one while the other is written.
type batchBuffer struct {
	data     []byte // batchHeaderSize reserved bytes, then records
	requests []request
	records  int
	round    *round
}

func newBatchBuffer() *batchBuffer {
	return &batchBuffer{data: make([]byte, batchHeaderSize), round: newRound()}
}

func (b *batchBuffer) reset() {
	clear(b.requests) // drop callbacks so they can be collected
	b.data = b.data[:batchHeaderSize]
	b.requests = b.requests[:0]
	b.records = 0
	b.round = newRound()
}

// round is how Append callers learn that their round is durable: every call in a round
// gets the same outcome, so one close wakes them all, cheaper than a send to each. It is
// the one allocation per round (not per record).
type round struct {
	done chan struct{} // closed once err is set
	err  error
}

func newRound() *round { return &round{done: make(chan struct{})} }

// request is one Append or AppendAsync call: its records end at data[end]. done is nil for
// Append, which waits on the round instead.
type request struct {
	end            int
	records        int
	minKey, maxKey uint64
	done           func(error)
}

// appenderCatchUpYieldsMax bounds the yields of letAppendersCatchUp per round.
const appenderCatchUpYieldsMax = 8

// batchTailBytesMax is the most a write adds after a batch: the end marker and the zero
// padding to the end of its page.
const batchTailBytesMax = batchHeaderSize + pageBytes

// Open recovers the log in options.Dir (creating it if empty) and starts the writer.
// Damage other than a torn tail is a *CorruptionError and nothing is started.
func Open(options Options) (*WAL, error) {
	if err := options.Validate(); err != nil {
		return nil, err
	}
	w := &WAL{options: options, fs: options.FS, logger: options.Logger}
	if options.IndexKeys {
		w.index = newKeyIndex()
	}
	if w.fs == nil {
		w.fs = OSFS()
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}
	// One call must fit an empty segment with its batch header and the end marker after it.
	w.requestBytesMax = min(options.QueueBytesMax,
		int(options.SegmentBytes)-segmentHeaderSize-2*batchHeaderSize)
	w.writerWake.L = &w.mu
	w.spaceFreed.L = &w.mu
	w.pending = newBatchBuffer()
	w.spare = newBatchBuffer()
	w.stats.init()
	if err := w.fs.MkdirAll(options.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: creating %s: %w", options.Dir, err)
	}
	lock, err := w.fs.Lock(w.path(lockFileName))
	if err != nil {
		return nil, fmt.Errorf("wal: locking %s: %w", options.Dir, err)
	}
	w.lock = lock
	if err := w.recover(); err != nil {
		if w.active != nil {
			w.active.Close()
		}
		w.hardState.close()
		lock.Close()
		return nil, err
	}
	w.startPreparer()
	w.requestIfHalfFull(w.segments[len(w.segments)-1].end)
	w.writerDone = make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("wal", "writer"), func(context.Context) {
		w.runWriter()
	})
	return w, nil
}

func (w *WAL) recover() error {
	if err := w.recoverSegments(); err != nil {
		return err
	}
	size, err := w.active.Size()
	if err != nil {
		return fmt.Errorf("wal: size of the last segment: %w", err)
	}
	if size < w.options.SegmentBytes {
		if err := w.active.Preallocate(w.options.SegmentBytes); err != nil {
			return fmt.Errorf("wal: preallocating the last segment: %w", err)
		}
		if err := w.active.Sync(); err != nil {
			return fmt.Errorf("wal: syncing the last segment: %w", err)
		}
	}
	return w.hardState.open(w.fs, w.options.Dir)
}

func (w *WAL) path(name string) string { return joinPath(w.options.Dir, name) }

// Append queues recs and returns once they are durable (or the log failed). The records of
// one call are written in one batch: after a crash all of them survive or none does.
func (w *WAL) Append(recs ...Record) error {
	r, err := w.enqueue(recs, nil)
	if err != nil {
		return err
	}
	<-r.done
	return r.err
}

// AppendAsync copies recs into the queue and returns; done(err) runs on the writer goroutine
// once they are durable (err == nil) or the log failed. It blocks while the queue is full.
// done must not block and must not call Append or AppendAsync (the writer would wait for
// itself). With no records, done runs once everything queued before is durable.
func (w *WAL) AppendAsync(recs []Record, done func(error)) error {
	if done == nil {
		done = func(error) {}
	}
	_, err := w.enqueue(recs, done)
	return err
}

// enqueue copies recs into the pending buffer and returns the round they joined.
func (w *WAL) enqueue(recs []Record, done func(error)) (*round, error) {
	bytes := 0
	minKey, maxKey := ^uint64(0), uint64(0)
	for i := range recs {
		bytes += encodedSize(&recs[i])
		minKey = min(minKey, recs[i].Key)
		maxKey = max(maxKey, recs[i].Key)
	}
	if bytes > w.requestBytesMax || len(recs) > w.options.QueueRecordsMax {
		return nil, fmt.Errorf("%w: %d records of %d bytes; one call may take %d records and %d bytes",
			ErrTooLarge, len(recs), bytes, w.options.QueueRecordsMax, w.requestBytesMax)
	}
	w.mu.Lock()
	for {
		if w.closing {
			w.mu.Unlock()
			return nil, ErrClosed
		}
		if w.failure != nil {
			err := w.failure
			w.mu.Unlock()
			return nil, err
		}
		if w.queuedRecords+len(recs) <= w.options.QueueRecordsMax &&
			w.queuedBytes+bytes <= w.options.QueueBytesMax {
			break
		}
		w.spaceFreed.Wait()
	}
	buffer := w.pending
	for i := range recs {
		buffer.data = appendRecord(buffer.data, &recs[i])
	}
	buffer.requests = append(buffer.requests, request{end: len(buffer.data), records: len(recs),
		minKey: minKey, maxKey: maxKey, done: done})
	buffer.records += len(recs)
	w.queuedRecords += len(recs)
	w.queuedBytes += bytes
	first := len(buffer.requests) == 1
	r := buffer.round
	w.mu.Unlock()
	if first {
		w.writerWake.Signal()
	}
	return r, nil
}

// runWriter is the one goroutine that writes: each round takes everything queued, writes it
// and syncs it, then completes every request of the round.
func (w *WAL) runWriter() {
	defer close(w.writerDone)
	for {
		w.mu.Lock()
		for len(w.pending.requests) == 0 && !w.closing {
			w.writerWake.Wait()
		}
		if len(w.pending.requests) == 0 {
			w.mu.Unlock()
			return
		}
		batch := w.pending
		w.pending = w.spare
		err := w.failure
		w.mu.Unlock()

		if err == nil {
			if err = w.writeRound(batch); err != nil {
				err = fmt.Errorf("%w: %w", ErrFailed, err)
				w.logger.Error("wal: write failed; the log accepts no more records", "err", err)
			}
		}
		w.mu.Lock()
		if err != nil && w.failure == nil {
			w.failure = err
		}
		w.queuedRecords -= batch.records
		w.queuedBytes -= len(batch.data) - batchHeaderSize
		w.mu.Unlock()
		w.spaceFreed.Broadcast()
		// Space is released first so a done callback never waits on its own round.
		for i := range batch.requests {
			if done := batch.requests[i].done; done != nil {
				done(err)
			}
		}
		batch.round.err = err
		close(batch.round.done)
		batch.reset()
		w.spare = batch
		w.letAppendersCatchUp()
	}
}

// letAppendersCatchUp yields while the queue keeps growing, a few times at most. Appenders
// that were just completed are runnable but have not yet re-queued; taking the queue at once
// would sync a handful of records and leave the rest for the next round, so rounds would
// alternate between small and large. Yielding costs about a microsecond when nobody comes.
func (w *WAL) letAppendersCatchUp() {
	previous := -1
	for range appenderCatchUpYieldsMax {
		w.mu.Lock()
		queued := len(w.pending.requests)
		w.mu.Unlock()
		if queued == previous {
			return
		}
		previous = queued
		runtime.Gosched()
	}
}

// writeRound writes one round's records: one batch (one write, one fdatasync) per segment it
// touches, or one per request in the syncEachAppend baseline. Each batch header goes into the
// bytes just before its first record: for the first batch that is the reserved room, for a
// later one the tail of the previous batch, which write has already copied to the kernel.
func (w *WAL) writeRound(batch *batchBuffer) error {
	// Room after the records for the last batch's end marker and padding.
	batch.data = slices.Grow(batch.data, batchTailBytesMax)
	data := batch.data
	requests := batch.requests
	start := batchHeaderSize
	for len(requests) > 0 {
		w.segmentsMu.Lock()
		info := w.segments[len(w.segments)-1]
		offset, activeRecords := info.end, info.records
		w.segmentsMu.Unlock()
		room := int(w.options.SegmentBytes-offset) - 2*batchHeaderSize // header, end marker
		taken, end, records := 0, start, 0
		minKey, maxKey := ^uint64(0), uint64(0)
		for taken < len(requests) && requests[taken].end-start <= room {
			r := &requests[taken]
			end, records = r.end, records+r.records
			if r.records > 0 {
				minKey, maxKey = min(minKey, r.minKey), max(maxKey, r.maxKey)
			}
			taken++
			if w.options.syncEachAppend && records > 0 {
				break
			}
		}
		if taken == 0 {
			if activeRecords == 0 {
				panic(fmt.Sprintf("wal: request of %d bytes does not fit an empty segment",
					requests[0].end-start)) // enqueue bounds requests by requestBytesMax
			}
			if err := w.rotate(); err != nil {
				return err
			}
			continue
		}
		if records > 0 {
			if err := w.writeBatch(data, start, end, offset, records, minKey, maxKey); err != nil {
				return err
			}
		}
		requests, start = requests[taken:], end
	}
	return nil
}

// writeBatch writes the records data[start:end] as one batch at offset of the active
// segment, with one write and one fdatasync. The batch header goes into the batchHeaderSize
// bytes before start; after end come an end marker and zeros up to the end of the page (or
// segment), in the same write. Those bytes may belong to the round's next batch: they are
// saved and put back. The record checksums are masked with the segment's salt in place.
func (w *WAL) writeBatch(data []byte, start, end int, offset int64, records int,
	minKey, maxKey uint64) error {
	b := data[start-batchHeaderSize : end]
	maskRecordChecksums(data[start:end], w.activeSalt)
	putBatchHeader(b, batchHeader{bodyBytes: uint32(len(b) - batchHeaderSize),
		records: uint32(records), firstIndex: w.nextIndex})
	batchEnd := offset + int64(len(b))
	writeEnd := min((batchEnd+batchHeaderSize+pageBytes-1)/pageBytes*pageBytes,
		w.options.SegmentBytes)
	tail := data[end : end+int(writeEnd-batchEnd)] // within cap: see writeRound
	w.tailSaved = append(w.tailSaved[:0], tail...)
	clear(tail)
	putBatchHeader(tail, batchHeader{firstIndex: w.nextIndex + uint64(records)})
	_, err := w.active.WriteAt(data[start-batchHeaderSize:end+len(tail)], offset)
	copy(tail, w.tailSaved)
	if err != nil {
		return fmt.Errorf("writing %d bytes at offset %d: %w", len(b)+len(tail), offset, err)
	}
	if !w.options.NoSync {
		began := time.Now()
		if err := w.active.Sync(); err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
		w.stats.recordSync(time.Since(began))
	}
	w.stats.recordBatch(records, len(b))
	w.nextIndex += uint64(records)
	w.segmentsMu.Lock()
	info := w.segments[len(w.segments)-1]
	info.addKeys(minKey, maxKey, uint64(records))
	info.end = offset + int64(len(b))
	segment := info.firstIndex
	w.segmentsMu.Unlock()
	if w.index != nil { // only durable records are indexed: ReadKey never sees a lost write
		w.index.addBatch(data[start:end], offset+batchHeaderSize, segment)
	}
	w.requestIfHalfFull(offset + int64(len(b)))
	return nil
}

// rotate seals the full active segment at its exact length and starts the next one.
func (w *WAL) rotate() error {
	w.segmentsMu.Lock()
	end := w.segments[len(w.segments)-1].end
	w.segmentsMu.Unlock()
	if err := w.active.Truncate(end); err != nil {
		return fmt.Errorf("sealing segment: %w", err)
	}
	if err := w.active.Sync(); err != nil {
		return fmt.Errorf("sealing segment: %w", err)
	}
	if err := w.active.Close(); err != nil {
		return fmt.Errorf("closing sealed segment: %w", err)
	}
	w.active = nil
	if prepared, ok := w.takePrepared(); ok {
		w.stats.mu.Lock()
		w.stats.prepared++
		if prepared.recycled {
			w.stats.recycled++
		}
		w.stats.mu.Unlock()
		return w.installSegment(prepared.file, prepared.path, w.nextIndex, false,
			prepared.previousSalt)
	}
	return w.createSegment(w.nextIndex)
}

// createSegment makes the segment whose first record is firstIndex the active one, with a
// fallocate'd file.
func (w *WAL) createSegment(firstIndex uint64) error {
	temporary := w.path(segmentName(firstIndex) + temporarySuffix)
	f, err := w.fs.OpenFile(temporary, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating segment %s: %w", segmentName(firstIndex), err)
	}
	return w.installSegment(f, temporary, firstIndex, true, 0)
}

// installSegment turns the file at temporary into the active segment starting at firstIndex:
// header (and preallocation) written and synced under the temporary name, then renamed and
// the directory synced, so the final name never shows a file without a durable header. The
// segment gets a fresh salt, different from previousSalt, the salt of the file's previous
// life if it is recycled.
func (w *WAL) installSegment(f File, temporary string, firstIndex uint64, allocate bool,
	previousSalt uint32) error {
	name := segmentName(firstIndex)
	salt := newSalt(previousSalt)
	err := w.initializeSegment(f, firstIndex, salt, allocate)
	if err == nil {
		err = w.fs.Rename(temporary, w.path(name))
	}
	if err == nil {
		err = w.fs.SyncDir(w.options.Dir)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("creating segment %s: %w", name, err)
	}
	w.active = f
	w.activeSalt = salt
	w.nextIndex = firstIndex
	w.segmentsMu.Lock()
	w.segments = append(w.segments, &segmentInfo{name: name, firstIndex: firstIndex,
		salt: salt, end: segmentHeaderSize})
	w.segmentsMu.Unlock()
	return nil
}

// newSalt returns a random non-zero salt other than previous.
func newSalt(previous uint32) uint32 {
	for {
		if salt := rand.Uint32(); salt != 0 && salt != previous {
			return salt
		}
	}
}

// initializeSegment writes the header, the end marker and zeros to the end of the first page
// (so a recycled file's first page is never read back to merge the write), and syncs.
func (w *WAL) initializeSegment(f File, firstIndex uint64, salt uint32, allocate bool) error {
	page := make([]byte, min(pageBytes, w.options.SegmentBytes))
	copy(page, encodeSegmentHeader(firstIndex, salt))
	if _, err := f.WriteAt(page, 0); err != nil {
		return err
	}
	if allocate {
		if err := f.Preallocate(w.options.SegmentBytes); err != nil {
			return err
		}
	}
	return f.Sync()
}

// TruncateBefore removes the longest prefix of segments, never the active one, whose
// records all have Key < key (see doc.go for why only a prefix). Up to
// Options.RecycledSegmentsMax of the removed files are kept, renamed, for reuse as later
// segments.
func (w *WAL) TruncateBefore(key uint64) error {
	w.truncateMu.Lock()
	defer w.truncateMu.Unlock()
	w.segmentsMu.Lock()
	count := 0
	for count < len(w.segments)-1 {
		s := w.segments[count]
		if s.records > 0 && s.maxKey >= key {
			break
		}
		count++
	}
	victims := append([]*segmentInfo(nil), w.segments[:count]...)
	w.segmentsMu.Unlock()
	// The newest victims (the likeliest to be still cached) become spares while the pool has
	// room. They join the pool only after the directory sync below, so until then the pool
	// can only shrink (the preparer takes) and stays within RecycledSegmentsMax.
	w.spareMu.Lock()
	recycleFrom := len(victims) - max(0, w.options.RecycledSegmentsMax-len(w.spares))
	w.spareMu.Unlock()
	removed := 0
	var spares []string
	var err error
	for i, s := range victims {
		if i >= recycleFrom {
			spare := s.name + spareSuffix
			if err = w.fs.Rename(w.path(s.name), w.path(spare)); err != nil {
				err = fmt.Errorf("wal: renaming %s to %s: %w", s.name, spare, err)
				break
			}
			spares = append(spares, spare)
		} else if err = w.fs.Remove(w.path(s.name)); err != nil {
			err = fmt.Errorf("wal: removing %s: %w", s.name, err)
			break
		}
		removed++
	}
	if removed > 0 {
		// Segments go oldest first, so a crash part way still leaves a contiguous log.
		w.segmentsMu.Lock()
		w.segments = append(w.segments[:0:0], w.segments[removed:]...)
		w.segmentsMu.Unlock()
		if w.index != nil {
			gone := make(map[uint64]bool, removed)
			for _, s := range victims[:removed] {
				gone[s.firstIndex] = true
			}
			w.index.dropSegments(gone)
		}
		if syncErr := w.fs.SyncDir(w.options.Dir); syncErr != nil {
			// The renames may not be durable: a spare reused now could, after a crash,
			// reappear under its segment name with its reuse's writes in it.
			return errors.Join(err, fmt.Errorf("wal: syncing %s: %w", w.options.Dir, syncErr))
		}
		// Only now may the preparer write into the spares.
		w.spareMu.Lock()
		w.spares = append(w.spares, spares...)
		w.spareMu.Unlock()
	}
	return err
}

// takeSpare returns the newest spare segment file (the likeliest to be still in the page
// cache), if any.
func (w *WAL) takeSpare() (string, bool) {
	w.spareMu.Lock()
	defer w.spareMu.Unlock()
	if len(w.spares) == 0 {
		return "", false
	}
	name := w.spares[len(w.spares)-1]
	w.spares = w.spares[:len(w.spares)-1]
	return name, true
}

// returnSpare puts back a spare the preparer took but did not hand over.
func (w *WAL) returnSpare(name string) {
	w.spareMu.Lock()
	defer w.spareMu.Unlock()
	w.spares = append(w.spares, name)
}

// collectSpares adopts the spare files found by Open, deleting any beyond
// RecycledSegmentsMax (the oldest first). It reports whether it deleted any.
func (w *WAL) collectSpares(names []string) (bool, error) {
	var spares []string
	for _, name := range names {
		if strings.HasSuffix(name, spareSuffix) {
			spares = append(spares, name)
		}
	}
	extra := max(0, len(spares)-w.options.RecycledSegmentsMax)
	for _, name := range spares[:extra] {
		if err := w.fs.Remove(w.path(name)); err != nil {
			return false, fmt.Errorf("wal: removing spare %s: %w", name, err)
		}
	}
	w.spares = spares[extra:]
	return extra > 0, nil
}

// Replay calls fn for every durable record, in append order; a later record with the same
// Key supersedes an earlier one. r.Payload is valid only during the call. It reads the files
// again, so it may run while appends continue (it sees what was durable when it started).
// An error from fn stops the replay and is returned.
func (w *WAL) Replay(fn func(r Record) error) error {
	w.truncateMu.RLock()
	defer w.truncateMu.RUnlock()
	w.segmentsMu.Lock()
	segments := make([]segmentInfo, len(w.segments))
	for i, s := range w.segments {
		segments[i] = *s
	}
	w.segmentsMu.Unlock()
	var buffer []byte
	for _, s := range segments {
		f, err := w.openSegment(&s, false)
		if err != nil {
			return err
		}
		scanned := segmentInfo{name: s.name, firstIndex: s.firstIndex, salt: s.salt}
		stop, err := scanSegment(f, &scanned, s.end, &buffer, fn, nil)
		f.Close()
		if err != nil {
			return err
		}
		if stop != nil {
			return &CorruptionError{File: s.name, Offset: stop.offset,
				Reason: stop.reason + " (changed since Open)"}
		}
	}
	return nil
}

// LatestByKey replays the log and returns the last record for each key, payloads copied.
// It holds the whole log in memory: for tools and tests, not for large logs.
func (w *WAL) LatestByKey() (map[uint64]Record, error) {
	latest := make(map[uint64]Record)
	err := w.Replay(func(r Record) error {
		r.Payload = append([]byte(nil), r.Payload...)
		latest[r.Key] = r
		return nil
	})
	return latest, err
}

// Close writes and syncs everything queued, stops the writer and closes the files. Calls
// after Close return ErrClosed. It returns the log's failure, if any.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return ErrClosed
	}
	w.closing = true
	w.mu.Unlock()
	w.writerWake.Broadcast()
	w.spaceFreed.Broadcast()
	<-w.writerDone
	w.stopPreparer()
	var errs []error
	w.mu.Lock()
	errs = append(errs, w.failure)
	w.mu.Unlock()
	if w.active != nil {
		errs = append(errs, w.active.Close())
	}
	errs = append(errs, w.hardState.close(), w.lock.Close())
	return errors.Join(errs...)
}
