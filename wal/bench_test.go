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
	var group sync.WaitGroup
	before := w.Stats()
	b.ResetTimer()
	began := time.Now()
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
