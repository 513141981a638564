package wal

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures durable appends (one record per Append, fdatasync on) from many
// goroutines on the real disk: records/s, MB/s, fsyncs/s and records per fsync.
func BenchmarkAppend(b *testing.B) { benchmarkAppendSweep(b, false) }

// BenchmarkAppendNoGroupCommit is the baseline: the same load with one fdatasync per Append.
func BenchmarkAppendNoGroupCommit(b *testing.B) { benchmarkAppendSweep(b, true) }

func benchmarkAppendSweep(b *testing.B, syncEachAppend bool) {
	for _, appenders := range []int{1, 16, 256} {
		for _, size := range []int{16, 128, 4096} {
			b.Run(fmt.Sprintf("appenders=%d/size=%d", appenders, size), func(b *testing.B) {
				benchmarkAppend(b, appenders, size, syncEachAppend)
			})
		}
	}
}

func benchmarkAppend(b *testing.B, appenders, size int, syncEachAppend bool) {
	options := DefaultOptions(b.TempDir())
	options.syncEachAppend = syncEachAppend
	w, err := Open(options)
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var next atomic.Int64
	var group sync.WaitGroup
	before := w.Stats()
	b.ResetTimer()
	began := time.Now()
	for range appenders {
		group.Go(func() {
			record := Record{Type: 1, Payload: payload}
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				record.Key = uint64(n)
				if err := w.Append(record); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	group.Wait()
	elapsed := time.Since(began)
	b.StopTimer()
	after := w.Stats()
	fsyncs := float64(after.Fsyncs - before.Fsyncs)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(fsyncs/elapsed.Seconds(), "fsyncs/s")
	if fsyncs > 0 {
		b.ReportMetric(float64(after.Records-before.Records)/fsyncs, "records/fsync")
	}
	b.ReportMetric(float64(after.FsyncLatencyP50.Microseconds()), "fsync-p50-µs")
	b.ReportMetric(float64(after.FsyncLatencyP99.Microseconds()), "fsync-p99-µs")
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendAsync is the pipeline's pattern: appenders keep up to 64 AppendAsync calls
// in flight each, so a round is bounded by the queue, not by the number of goroutines.
func BenchmarkAppendAsync(b *testing.B) {
	for _, appenders := range []int{1, 16} {
		for _, size := range []int{128, 4096} {
			b.Run(fmt.Sprintf("appenders=%d/size=%d", appenders, size), func(b *testing.B) {
				benchmarkAppendAsync(b, appenders, size, 64)
			})
		}
	}
}

func benchmarkAppendAsync(b *testing.B, appenders, size, inflightMax int) {
	w, err := Open(DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var next atomic.Int64
	before := w.Stats()
	b.ResetTimer()
	began := time.Now()
	driveAppenders(b, w, appenders, inflightMax, payload, &next)
	elapsed := time.Since(began)
	b.StopTimer()
	after := w.Stats()
	fsyncs := float64(after.Fsyncs - before.Fsyncs)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(fsyncs/elapsed.Seconds(), "fsyncs/s")
	if fsyncs > 0 {
		b.ReportMetric(float64(after.Records-before.Records)/fsyncs, "records/fsync")
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendRotating is the pipeline's pattern over many segment rotations, with and
// without a truncation that keeps about two segments behind the writer (what snapshots do
// in a long run). It reports process CPU per record and per byte (cpu-ns/op, cpu-ns/B), the
// figures segment preparation changes, beside the wall-clock ones.
func BenchmarkAppendRotating(b *testing.B) {
	for _, truncate := range []bool{false, true} {
		for _, size := range []int{128, 4096} {
			b.Run(fmt.Sprintf("truncate=%v/size=%d", truncate, size), func(b *testing.B) {
				benchmarkAppendRotating(b, 16, size, truncate)
			})
		}
	}
}

func benchmarkAppendRotating(b *testing.B, appenders, size int, truncate bool) {
	const segmentBytes = 16 << 20
	options := DefaultOptions(b.TempDir())
	options.SegmentBytes = segmentBytes
	w, err := Open(options)
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var next atomic.Int64
	stop := make(chan struct{})
	truncated := make(chan struct{})
	recordsPerSegment := int64(segmentBytes / (size + recordHeaderSize))
	go func() {
		defer close(truncated)
		for truncate {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if keep := next.Load() - 2*recordsPerSegment; keep > 0 {
				if err := w.TruncateBefore(uint64(keep)); err != nil {
					b.Error(err)
					return
				}
			}
		}
	}()
	before := w.Stats()
	b.ResetTimer()
	began, cpuBegan := time.Now(), processCPU()
	driveAppenders(b, w, appenders, 64, payload, &next)
	elapsed, cpu := time.Since(began), processCPU()-cpuBegan
	b.StopTimer()
	close(stop)
	<-truncated
	after := w.Stats()
	reportRotation(b, before, after, elapsed, cpu)
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

func reportRotation(b *testing.B, before, after Stats, elapsed, cpu time.Duration) {
	fsyncs := float64(after.Fsyncs - before.Fsyncs)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(fsyncs/elapsed.Seconds(), "fsyncs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if written := after.Bytes - before.Bytes; written > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(written), "cpu-ns/B")
	}
	b.ReportMetric(float64(after.SegmentsPrepared-before.SegmentsPrepared), "prepared")
}

// driveAppenders runs appenders goroutines that each keep up to inflightMax AppendAsync calls
// of payload in flight, with keys drawn from next, until b.N records are appended, and waits
// for all of them to be durable.
func driveAppenders(b *testing.B, w *WAL, appenders, inflightMax int, payload []byte, next *atomic.Int64) {
	var group sync.WaitGroup
	for range appenders {
		group.Go(func() {
			tokens := make(chan struct{}, inflightMax)
			done := func(err error) {
				if err != nil {
					b.Error(err)
				}
				<-tokens
			}
			records := []Record{{Type: 1, Payload: payload}}
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					break
				}
				tokens <- struct{}{}
				records[0].Key = uint64(n)
				if err := w.AppendAsync(records, done); err != nil {
					b.Error(err)
					return
				}
			}
			for range inflightMax {
				tokens <- struct{}{}
			}
		})
	}
	group.Wait()
}
