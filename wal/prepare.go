package wal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
)

// Segments are readied ahead of time by a background goroutine (see doc.go): a recycled
// spare, or else a zero-filled new file. On ext4 an fdatasync after writing into
// fallocate'd (unwritten) extents must also journal the extents' change to "written"; into
// blocks that are already written it need not, and measured here a small write plus
// fdatasync took about half as long. Zero-filling 64 MiB is too slow to do at rotation, so
// the next segment is prepared while the current one fills; if it is not ready in time the
// writer falls back to a fallocate'd segment.

// zeroFillChunkBytes is written per call, and the file is synced every zeroFillSyncBytes, so
// the zeros reach the device in small flushes between the log's own fdatasyncs rather than
// as one large flush that the log's syncs queue behind. Measured with 3 replicas on one disk
// at 400k cmds/s (open loop, 16 x 256): syncing every 8 MiB gave p99 47-62 ms and stalls
// at each segment rotation; every 1 MiB 9-24 ms; every 256 KiB 8.9-11 ms, with saturation
// throughput unchanged within run-to-run noise (docs/BENCHMARKS.md).
const (
	zeroFillChunkBytes = 256 << 10
	zeroFillSyncBytes  = 256 << 10
)

// preparedSegment is a synced file of SegmentBytes, not yet a segment: either zero-filled
// under a temporary name, or a recycled spare (its blocks already written by a previous
// life whose salt was previousSalt).
type preparedSegment struct {
	file         File
	path         string
	recycled     bool
	previousSalt uint32
}

// discard closes a prepared file nobody will take: a zero-filled one is deleted, a spare
// goes back to the pool.
func (w *WAL) discard(p preparedSegment) {
	p.file.Close()
	if p.recycled {
		w.returnSpare(filepath.Base(p.path))
		return
	}
	w.fs.Remove(p.path)
}

// segmentPreparer readies one segment each time the writer asks, and keeps it until taken:
// a spare from the pool if TruncateBefore left one (no zeros to write), else a new file
// filled with zeros.
// The writer asks once the active segment is half full, so a log that never rotates never
// pays for a second segment, and the fill has half a segment's time to finish.
type segmentPreparer struct {
	wanted    chan struct{}        // capacity 1: the writer asks for the next segment
	ready     chan preparedSegment // capacity 1
	stop      chan struct{}
	stopped   sync.WaitGroup
	requested bool // writer-owned: asked since the last rotation
}

// requestIfHalfFull asks for the next segment once the active one is half full.
func (w *WAL) requestIfHalfFull(end int64) {
	p := w.preparer
	if p == nil || p.requested || end < w.options.SegmentBytes/2 {
		return
	}
	p.requested = true
	select {
	case p.wanted <- struct{}{}:
	default:
	}
}

func (w *WAL) startPreparer() {
	p := &segmentPreparer{wanted: make(chan struct{}, 1), ready: make(chan preparedSegment, 1),
		stop: make(chan struct{})}
	w.preparer = p
	p.stopped.Go(func() {
		pprof.Do(context.Background(), pprof.Labels("wal", "segment-preparer"),
			func(context.Context) { w.runPreparer(p) })
	})
}

func (w *WAL) runPreparer(p *segmentPreparer) {
	zeros := make([]byte, min(zeroFillChunkBytes, w.options.SegmentBytes))
	for sequence := 0; ; sequence++ {
		select {
		case <-p.wanted:
		case <-p.stop:
			return
		}
		prepared, ok := w.prepareSpare(zeros, p.stop)
		if !ok {
			path := w.path(fmt.Sprintf("prepared-%d%s", sequence, temporarySuffix))
			f, err := w.fillSegment(path, zeros, p.stop)
			if err != nil {
				// Rotation falls back to fallocate; nothing is lost but speed.
				w.logger.Warn("wal: preparing a zero-filled segment failed", "err", err)
				return
			}
			if f == nil {
				return // stopping
			}
			prepared = preparedSegment{file: f, path: path}
		}
		select {
		case p.ready <- prepared:
		case <-p.stop:
			w.discard(prepared)
			return
		}
	}
}

// prepareSpare readies the newest spare, if there is one: extended with zeros to
// SegmentBytes (a sealed segment was cut to its data) and synced. Its previous salt is read
// from its old header so the new life's salt can differ. ok is false when there is no spare,
// when asked to stop (the spare goes back), or when the spare fails (it is deleted, logged,
// and the caller zero-fills a new file instead).
func (w *WAL) prepareSpare(zeros []byte, stop chan struct{}) (preparedSegment, bool) {
	name, ok := w.takeSpare()
	if !ok {
		return preparedSegment{}, false
	}
	path := w.path(name)
	f, previousSalt, stopped, err := w.openSpare(path, zeros, stop)
	switch {
	case stopped:
		w.returnSpare(name)
		return preparedSegment{}, false
	case err != nil:
		w.logger.Warn("wal: reusing a spare segment failed; zero-filling a new one",
			"file", name, "err", err)
		w.fs.Remove(path)
		return preparedSegment{}, false
	}
	return preparedSegment{file: f, path: path, recycled: true, previousSalt: previousSalt}, true
}

func (w *WAL) openSpare(path string, zeros []byte, stop chan struct{}) (f File,
	previousSalt uint32, stopped bool, err error) {
	if f, err = w.fs.OpenFile(path, os.O_RDWR, 0); err != nil {
		return nil, 0, false, err
	}
	size, err := f.Size()
	if err == nil && size >= segmentHeaderSize {
		header := make([]byte, segmentHeaderSize)
		if err = readFull(f, header, 0); err == nil {
			_, previousSalt, _ = parseSegmentHeader(header) // unreadable: any new salt will do
		}
	}
	if err == nil && size > w.options.SegmentBytes {
		err = f.Truncate(w.options.SegmentBytes) // SegmentBytes was lowered since
	}
	if err == nil {
		stopped, err = w.fillZeros(f, size, zeros, stop)
	}
	if err == nil && !stopped {
		err = f.Sync()
	}
	if err != nil || stopped {
		f.Close()
		return nil, 0, stopped, err
	}
	return f, previousSalt, false, nil
}

// fillSegment writes SegmentBytes of zeros to a new file at path and syncs it. It returns a
// nil file if asked to stop part way.
func (w *WAL) fillSegment(path string, zeros []byte, stop chan struct{}) (File, error) {
	f, err := w.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	stopped, err := w.fillZeros(f, 0, zeros, stop)
	if err == nil && !stopped {
		err = f.Sync()
	}
	if err != nil || stopped {
		f.Close()
		w.fs.Remove(path)
		return nil, err
	}
	return f, nil
}

// fillZeros writes zeros from offset from up to SegmentBytes, syncing every
// zeroFillSyncBytes; stopped reports that stop closed part way.
func (w *WAL) fillZeros(f File, from int64, zeros []byte, stop chan struct{}) (stopped bool,
	err error) {
	sinceSync := 0
	for offset := from; offset < w.options.SegmentBytes; offset += int64(len(zeros)) {
		select {
		case <-stop:
			return true, nil
		default:
		}
		chunk := zeros[:min(int64(len(zeros)), w.options.SegmentBytes-offset)]
		if _, err := f.WriteAt(chunk, offset); err != nil {
			return false, err
		}
		if sinceSync += len(chunk); sinceSync >= zeroFillSyncBytes {
			if err := f.Sync(); err != nil {
				return false, err
			}
			sinceSync = 0
		}
	}
	return false, nil
}

// takePrepared returns a prepared file if one is waiting; either way the next request is
// for the segment after the one being created now.
func (w *WAL) takePrepared() (preparedSegment, bool) {
	if w.preparer == nil {
		return preparedSegment{}, false
	}
	w.preparer.requested = false
	select {
	case p := <-w.preparer.ready:
		return p, true
	default:
		return preparedSegment{}, false
	}
}

// stopPreparer stops the goroutine and removes a prepared file nobody took.
func (w *WAL) stopPreparer() {
	if w.preparer == nil {
		return
	}
	close(w.preparer.stop)
	w.preparer.stopped.Wait()
	select {
	case p := <-w.preparer.ready:
		w.discard(p)
	default:
	}
}

// createFirstSegment starts a new log with a zero-filled segment, written synchronously
// (Open of an empty directory writes SegmentBytes once), so that even a short-lived log
// appends at steady-state speed.
func (w *WAL) createFirstSegment() error {
	path := w.path(segmentName(firstRecordIndex) + temporarySuffix)
	f, err := w.fillSegment(path, make([]byte, min(zeroFillChunkBytes, w.options.SegmentBytes)), nil)
	if err != nil {
		return fmt.Errorf("wal: creating the first segment: %w", err)
	}
	return w.installSegment(f, path, firstRecordIndex, false, 0)
}
