package wal

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fixedRecord has the same encoded size for every key, so a recycled segment's new life lays
// its batches at exactly the offsets of its previous life.
func fixedRecord(key uint64) Record {
	return Record{Type: 7, Key: key, Payload: bytes.Repeat([]byte{byte(key)}, 150)}
}

// segmentNames returns the segment and spare base names in testDir.
func segmentNames(t *testing.T, fs *memFS) (segments, spares []string) {
	t.Helper()
	names, err := fs.ReadDir(testDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, segmentSuffix):
			segments = append(segments, name)
		case strings.HasSuffix(name, spareSuffix):
			spares = append(spares, name)
		}
	}
	return segments, spares
}

// appendUntil appends fixedRecord or testRecord keys from *key on, one per Append, until done
// holds; it fails the test after limit appends.
func appendUntil(t *testing.T, w *WAL, key *uint64, record func(uint64) Record, limit int,
	done func(Stats) bool) {
	t.Helper()
	for range limit {
		if done(w.Stats()) {
			return
		}
		if err := w.Append(record(*key)); err != nil {
			t.Fatal(err)
		}
		*key++
	}
	t.Fatalf("condition not reached after %d appends: %+v", limit, w.Stats())
}

// TestRecycledSegmentStaleRecordsAreNeverReplayed reuses a truncated segment and then tears
// the new life's final batch so that its header landed but its record did not: the bytes
// under it are the previous life's record at the same offset, with a checksum that was
// valid then. Only the salt tells them apart; without it, Open would replay key 2 again.
func TestRecycledSegmentStaleRecordsAreNeverReplayed(t *testing.T) {
	fs := newMemFS()
	options := memOptions(fs, 4096)
	options.RecycledSegmentsMax = 1
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	key := uint64(1)
	appendUntil(t, w, &key, fixedRecord, 1000, func(s Stats) bool { return s.Segments == 3 })
	segments, _ := segmentNames(t, fs)
	previousLife := fs.Bytes(filepath.Join(testDir, segments[0]))
	secondFirstKey := uint64(0)
	w.segmentsMu.Lock()
	secondFirstKey = w.segments[1].minKey
	w.segmentsMu.Unlock()
	if err := w.TruncateBefore(secondFirstKey); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.SpareSegments != 1 || st.Segments != 2 {
		t.Fatalf("after TruncateBefore: %d spares, %d segments, want 1 and 2", st.SpareSegments,
			st.Segments)
	}
	appendUntil(t, w, &key, fixedRecord, 1000, func(s Stats) bool { return s.SegmentsRecycled == 1 })
	if err := w.Append(fixedRecord(key)); err != nil { // the second batch of the new life
		t.Fatal(err)
	}
	lastKey := key
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segments, spares := segmentNames(t, fs)
	if len(spares) != 0 {
		t.Fatalf("spares left: %v", spares)
	}
	last := filepath.Join(testDir, segments[len(segments)-1])
	data := fs.Bytes(last)
	batchBytes := int64(batchHeaderSize + encodedSize(&Record{Payload: make([]byte, 150)}))
	second := segmentHeaderSize + batchBytes
	oldHeader, reason := parseBatchHeader(previousLife[second:])
	newHeader, newReason := parseBatchHeader(data[second:])
	if reason != "" || newReason != "" || oldHeader.bodyBytes != newHeader.bodyBytes ||
		oldHeader.firstIndex >= newHeader.firstIndex {
		t.Fatalf("layouts differ: previous life %+v (%s), new life %+v (%s)", oldHeader, reason,
			newHeader, newReason)
	}
	// The torn write: new header, previous life's record.
	body := second + batchHeaderSize
	copy(data[body:second+batchBytes], previousLife[body:second+batchBytes])
	fs.SetBytes(last, data)

	logs := &logBuffer{}
	options.Logger = logs.logger()
	if w, err = Open(options); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer w.Close()
	var keys []uint64
	err = w.Replay(func(r Record) error {
		if want := fixedRecord(r.Key); !bytes.Equal(r.Payload, want.Payload) || r.Key < secondFirstKey {
			return fmt.Errorf("replayed key %d with payload byte %#x: a stale record", r.Key,
				r.Payload[0])
		}
		keys = append(keys, r.Key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 || keys[len(keys)-1] != lastKey-1 {
		t.Fatalf("replayed keys end at %v, want the torn batch (key %d) cut", keys[len(keys)-1:],
			lastKey)
	}
	if !strings.Contains(logs.String(), "torn tail") {
		t.Fatalf("torn batch not reported: %q", logs.String())
	}
}

// TestTruncatedSegmentsBecomeSparesAndAreReused: TruncateBefore keeps the newest removed
// segments up to RecycledSegmentsMax, rotations reuse them, and a log whose last segment is
// recycled (its previous life still lying after the end marker) reopens cleanly.
func TestTruncatedSegmentsBecomeSparesAndAreReused(t *testing.T) {
	fs := newMemFS()
	options := memOptions(fs, 16<<10)
	options.RecycledSegmentsMax = 2
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	key := uint64(1)
	appendUntil(t, w, &key, testRecord, 10000, func(s Stats) bool { return s.Segments == 6 })
	before, _ := segmentNames(t, fs)
	floor := key - 1 // the first record of the active segment
	if err := w.TruncateBefore(floor); err != nil {
		t.Fatal(err)
	}
	segments, spares := segmentNames(t, fs)
	wantSpares := []string{before[3] + spareSuffix, before[4] + spareSuffix}
	if len(segments) != 1 || !slices.Equal(spares, wantSpares) {
		t.Fatalf("after TruncateBefore: segments %v spares %v, want 1 segment and spares %v",
			segments, spares, wantSpares)
	}
	appendUntil(t, w, &key, testRecord, 10000, func(s Stats) bool { return s.SegmentsRecycled == 2 })
	if st := w.Stats(); st.SpareSegments != 0 {
		t.Fatalf("%d spares left after two recycled rotations", st.SpareSegments)
	}
	for range 10 { // into the recycled segment, short of its first page's end
		if err := w.Append(testRecord(key)); err != nil {
			t.Fatal(err)
		}
		key++
	}
	w.segmentsMu.Lock()
	end := w.segments[len(w.segments)-1].end
	w.segmentsMu.Unlock()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segments, spares = segmentNames(t, fs)
	data := fs.Bytes(filepath.Join(testDir, segments[len(segments)-1]))
	if len(spares) != 0 || isZero(data[end+batchHeaderSize:]) {
		t.Fatalf("spares %v; the recycled segment's tail is all zeros, the test needs stale data",
			spares)
	}
	logs := &logBuffer{}
	options.Logger = logs.logger()
	for range 2 { // reopen, append, reopen
		if w, err = Open(options); err != nil {
			t.Fatal(err)
		}
		got := replayKeys(t, w)
		want := make([]uint64, 0, key-floor)
		for k := floor; k < key; k++ {
			want = append(want, k)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("replayed %d keys from %v, want %d from %d", len(got), got[:1], len(want), floor)
		}
		if err := w.Append(testRecord(key)); err != nil {
			t.Fatal(err)
		}
		key++
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if logs.String() != "" {
		t.Fatalf("a clean reopen logged %q", logs.String())
	}
}

// TestOpenKeepsAtMostRecycledSegmentsMaxSpares: spares found by Open beyond the limit are
// deleted, the oldest first; with 0 every spare goes and truncation deletes.
func TestOpenKeepsAtMostRecycledSegmentsMaxSpares(t *testing.T) {
	fs := newMemFS()
	options := memOptions(fs, 4096)
	options.RecycledSegmentsMax = 4
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	key := uint64(1)
	appendUntil(t, w, &key, testRecord, 10000, func(s Stats) bool { return s.Segments == 6 })
	if err := w.TruncateBefore(key); err != nil {
		t.Fatal(err)
	}
	w.Close()
	_, spares := segmentNames(t, fs)
	if len(spares) != 4 {
		t.Fatalf("spares %v, want 4", spares)
	}
	for _, limit := range []int{1, 0} {
		options.RecycledSegmentsMax = limit
		if w, err = Open(options); err != nil {
			t.Fatal(err)
		}
		_, kept := segmentNames(t, fs)
		if st := w.Stats(); st.SpareSegments != limit || !slices.Equal(kept, spares[len(spares)-limit:]) {
			t.Fatalf("limit %d: kept %v (%d in Stats), want %v", limit, kept, st.SpareSegments,
				spares[len(spares)-limit:])
		}
		w.Close()
	}
}

// TestCrashWithRecycledSegmentsKeepsEverySyncedRecord is TestCrashKeepsEverySyncedRecord with
// a truncation running beside the appenders, so segments are recycled (and crashes hit
// renames into the pool, the reuse of spares and writes over a previous life).
func TestCrashWithRecycledSegmentsKeepsEverySyncedRecord(t *testing.T) {
	recycled := uint64(0)
	crashRounds{
		seed: 11,
		options: func(fs *memFS) Options {
			o := memOptions(fs, 8192)
			o.RecycledSegmentsMax = 2
			return o
		},
		targetMin: 100, targetSpan: 400,
		// Truncation 100 keys behind the appenders, so segments retire into the pool.
		side: func(w *WAL, l *ledger, nextKey *atomic.Uint64, stop <-chan struct{}) {
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Microsecond):
				}
				floor := nextKey.Load()
				if floor < 100 {
					continue
				}
				floor -= 100
				l.mu.Lock()
				l.truncatedBelow = max(l.truncatedBelow, floor)
				l.mu.Unlock()
				if w.TruncateBefore(floor) != nil {
					return
				}
			}
		},
		afterRound: func(w *WAL) { recycled += w.Stats().SegmentsRecycled },
	}.run(t)
	if recycled == 0 {
		t.Fatal("no rotation reused a spare: the test did not exercise recycling")
	}
	t.Logf("%d rotations into recycled segments", recycled)
}
