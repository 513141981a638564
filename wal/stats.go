package wal

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Stats is a snapshot of the WAL's counters since Open.
type Stats struct {
	Fsyncs          uint64  // fdatasync calls on segments
	Records         uint64  // records written
	Bytes           uint64  // bytes written to segments, headers included
	Batches         uint64  // write calls
	RecordsPerFsync float64 // Records / Fsyncs: the group-commit factor
	// Fsync latency percentiles (fdatasync of segment batches only).
	FsyncLatencyP50  time.Duration
	FsyncLatencyP90  time.Duration
	FsyncLatencyP99  time.Duration
	FsyncLatencyP999 time.Duration
	FsyncLatencyMax  time.Duration
	Segments         int    // segment files, the active one included
	SegmentsPrepared uint64 // rotations that found a segment ready (zero-filled or recycled)
	SegmentsRecycled uint64 // of those, rotations that reused a spare (see RecycledSegmentsMax)
	SpareSegments    int    // spare files waiting for reuse right now
	QueuedRecords    int    // queued or being written right now
	QueuedBytes      int
}

// statistics is written by the writer goroutine and read by Stats.
type statistics struct {
	mu           sync.Mutex
	fsyncs       uint64
	records      uint64
	bytes        uint64
	batches      uint64
	prepared     uint64
	recycled     uint64
	fsyncLatency *hdrhistogram.Histogram // nanoseconds
}

func (s *statistics) init() {
	// 1 µs to 100 s at 3 significant digits.
	s.fsyncLatency = hdrhistogram.New(1_000, 100_000_000_000, 3)
}

func (s *statistics) recordSync(latency time.Duration) {
	s.mu.Lock()
	s.fsyncs++
	_ = s.fsyncLatency.RecordValue(max(latency.Nanoseconds(), 1_000)) // clamped into range
	s.mu.Unlock()
}

func (s *statistics) recordBatch(records, bytes int) {
	s.mu.Lock()
	s.records += uint64(records)
	s.bytes += uint64(bytes)
	s.batches++
	s.mu.Unlock()
}

// Stats returns the counters and fsync latency percentiles.
func (w *WAL) Stats() Stats {
	w.stats.mu.Lock()
	st := Stats{Fsyncs: w.stats.fsyncs, Records: w.stats.records, Bytes: w.stats.bytes,
		Batches: w.stats.batches, SegmentsPrepared: w.stats.prepared,
		SegmentsRecycled: w.stats.recycled}
	h := w.stats.fsyncLatency
	st.FsyncLatencyP50 = time.Duration(h.ValueAtQuantile(50))
	st.FsyncLatencyP90 = time.Duration(h.ValueAtQuantile(90))
	st.FsyncLatencyP99 = time.Duration(h.ValueAtQuantile(99))
	st.FsyncLatencyP999 = time.Duration(h.ValueAtQuantile(99.9))
	st.FsyncLatencyMax = time.Duration(h.Max())
	w.stats.mu.Unlock()
	if st.Fsyncs > 0 {
		st.RecordsPerFsync = float64(st.Records) / float64(st.Fsyncs)
	}
	w.segmentsMu.Lock()
	st.Segments = len(w.segments)
	w.segmentsMu.Unlock()
	w.spareMu.Lock()
	st.SpareSegments = len(w.spares)
	w.spareMu.Unlock()
	w.mu.Lock()
	st.QueuedRecords, st.QueuedBytes = w.queuedRecords, w.queuedBytes
	w.mu.Unlock()
	return st
}
