package wal

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
)

// Segments are zero-filled ahead of time by a background goroutine (see doc.go). On ext4 an fdatasync
// after writing into fallocate'd (unwritten) extents must also journal the extents' change
// to "written"; into blocks that already hold zeros it need not, and measured here a small
// write plus fdatasync took about 0.6-0.8x as long. Zero-filling 64 MiB is too slow to do at
// rotation, so the next segment is prepared while the current one fills; if it is not ready
// in time the writer falls back to a fallocate'd segment.

// zeroFillChunkBytes is written per call, and the file is synced every zeroFillSyncBytes so
// the preparer never holds much dirty data that writeback would push between our syncs.
const (
	zeroFillChunkBytes = 1 << 20
	zeroFillSyncBytes  = 8 << 20
)

// preparedSegment is a zero-filled, synced file under a temporary name, not yet a segment.
type preparedSegment struct {
	file File
	path string
}

// segmentPreparer fills one segment each time the writer asks, and keeps it until taken.
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
		select {
		case p.ready <- preparedSegment{file: f, path: path}:
		case <-p.stop:
			f.Close()
			w.fs.Remove(path)
			return
		}
	}
}

// fillSegment writes SegmentBytes of zeros to a new file at path and syncs it. It returns a
// nil file if asked to stop part way.
func (w *WAL) fillSegment(path string, zeros []byte, stop chan struct{}) (File, error) {
	f, err := w.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	sinceSync := 0
	for offset := int64(0); offset < w.options.SegmentBytes; offset += int64(len(zeros)) {
		select {
		case <-stop:
			f.Close()
			w.fs.Remove(path)
			return nil, nil
		default:
		}
		chunk := zeros[:min(int64(len(zeros)), w.options.SegmentBytes-offset)]
		if _, err := f.WriteAt(chunk, offset); err != nil {
			f.Close()
			return nil, err
		}
		if sinceSync += len(chunk); sinceSync >= zeroFillSyncBytes {
			if err := f.Sync(); err != nil {
				f.Close()
				return nil, err
			}
			sinceSync = 0
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
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
		p.file.Close()
		w.fs.Remove(p.path)
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
	return w.installSegment(f, path, firstRecordIndex, false)
}
