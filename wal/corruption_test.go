package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// layoutBatch is where one batch of the test log lies, computed from what the test wrote and
// the sealed segments' lengths, not from the package's own parser.
type layoutBatch struct {
	segment    int
	start, end int64
	keys       []uint64
}

// corruptionFixture is a log on a memFS written one Append (one batch) at a time.
type corruptionFixture struct {
	fs       *memFS
	options  Options
	segments []string // base names in order
	batches  []layoutBatch
}

func newCorruptionFixture(t *testing.T, segmentCount int) *corruptionFixture {
	t.Helper()
	fs := newMemFS()
	options := memOptions(fs, 4096)
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	var batchKeys [][]uint64
	for key := uint64(1); w.Stats().Segments < segmentCount || len(batchKeys)%7 != 3; key += 3 {
		// Mostly one record per batch, some with three: one Append is one batch.
		keys := []uint64{key}
		if key%4 == 0 {
			keys = []uint64{key, key + 1, key + 2}
		}
		var records []Record
		for _, k := range keys {
			records = append(records, testRecord(k))
		}
		if err := w.Append(records...); err != nil {
			t.Fatal(err)
		}
		batchKeys = append(batchKeys, keys)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f := &corruptionFixture{fs: fs, options: options}
	names, _ := fs.ReadDir(testDir)
	for _, name := range names {
		if strings.HasSuffix(name, segmentSuffix) {
			f.segments = append(f.segments, name)
		}
	}
	segment, position := 0, int64(segmentHeaderSize)
	for _, keys := range batchKeys {
		size := int64(batchHeaderSize)
		for _, k := range keys {
			size += int64(encodedSize(&Record{Payload: testPayload(k, 300)}))
		}
		if segment < len(f.segments)-1 && position == int64(len(f.bytes(segment))) {
			segment, position = segment+1, segmentHeaderSize
		}
		f.batches = append(f.batches, layoutBatch{segment: segment, start: position,
			end: position + size, keys: keys})
		position += size
	}
	if segment != len(f.segments)-1 || len(f.segments) < segmentCount {
		t.Fatalf("layout ends in segment %d of %d", segment, len(f.segments))
	}
	return f
}

func (f *corruptionFixture) path(segment int) string {
	return filepath.Join(testDir, f.segments[segment])
}

func (f *corruptionFixture) bytes(segment int) []byte { return f.fs.Bytes(f.path(segment)) }

func (f *corruptionFixture) allKeys(except int) []uint64 {
	var keys []uint64
	for i, b := range f.batches {
		if i != except {
			keys = append(keys, b.keys...)
		}
	}
	return keys
}

// batchAt returns the index of the batch holding byte offset of segment, or -1.
func (f *corruptionFixture) batchAt(segment int, offset int64) int {
	for i, b := range f.batches {
		if b.segment == segment && offset >= b.start && offset < b.end {
			return i
		}
	}
	return -1
}

// openDamaged opens a copy of the log with data written over segment's bytes.
func (f *corruptionFixture) openDamaged(segment int, damage func([]byte)) (*WAL, *logBuffer, error) {
	fs := f.fs.Clone()
	data := fs.Bytes(f.path(segment))
	damage(data)
	fs.SetBytes(f.path(segment), data)
	logs := &logBuffer{}
	options := f.options
	options.FS = fs
	options.Logger = logs.logger()
	w, err := Open(options)
	return w, logs, err
}

// TestEveryBitFlipIsDetected flips single bits and xors single bytes at random offsets of
// every segment and asserts exactly what the recovery rules promise for that offset.
func TestEveryBitFlipIsDetected(t *testing.T) {
	f := newCorruptionFixture(t, 4)
	rng := rand.New(rand.NewPCG(1, 2))
	last := len(f.segments) - 1
	finalBatch := len(f.batches) - 1
	trials := 600
	if testing.Short() {
		trials = 150
	}
	counts := map[string]int{}
	for trial := range trials {
		segment := trial % len(f.segments)
		size := int64(len(f.bytes(segment)))
		var offset int64
		if segment == last && trial%3 == 0 {
			// Aim at the last segment's written middle, and at its final batch and end
			// marker, more often.
			offset = rng.Int64N(f.batches[finalBatch].end)
			if rng.IntN(2) == 0 {
				start := f.batches[finalBatch].start
				offset = start + rng.Int64N(f.batches[finalBatch].end+batchHeaderSize-start)
			}
		} else {
			offset = rng.Int64N(size)
		}
		mask := byte(1) << rng.IntN(8)
		if trial%2 == 1 {
			mask = byte(1 + rng.IntN(255))
		}
		w, logs, err := f.openDamaged(segment, func(b []byte) { b[offset] ^= mask })
		batch := f.batchAt(segment, offset)
		what := fmt.Sprintf("trial %d: %s offset %d mask %#x (batch %d)", trial,
			f.segments[segment], offset, mask, batch)
		markerEnd := f.batches[finalBatch].end + batchHeaderSize
		switch {
		case segment == last && batch == -1 && offset >= markerEnd:
			// Garbage after the end marker is never read (in a recycled segment that is
			// where the file's previous life lies): the log opens whole, nothing reported.
			if err != nil {
				t.Fatalf("%s: Open = %v, want the log whole", what, err)
			}
			if got := replayKeys(t, w); !slices.Equal(got, f.allKeys(-1)) {
				t.Fatalf("%s: %d records, want %d", what, len(got), len(f.allKeys(-1)))
			}
			if logs.String() != "" {
				t.Fatalf("%s: unexpected log %q", what, logs.String())
			}
			w.Close()
			counts["ignored"]++
		case segment == last && batch == finalBatch, segment == last && batch == -1 &&
			offset >= f.batches[finalBatch].end:
			// A damaged final batch or end marker: cut and reported.
			if err != nil {
				t.Fatalf("%s: Open = %v, want the tail cut", what, err)
			}
			want := f.allKeys(finalBatch)
			cut := f.batches[finalBatch].start
			if batch == -1 {
				want, cut = f.allKeys(-1), f.batches[finalBatch].end
			}
			if got := replayKeys(t, w); !slices.Equal(got, want) {
				t.Fatalf("%s: %d records after the cut, want %d", what, len(got), len(want))
			}
			if !strings.Contains(logs.String(), "torn tail") ||
				!strings.Contains(logs.String(), fmt.Sprintf("offset=%d", cut)) {
				t.Fatalf("%s: cut not reported at offset %d: %q", what, cut, logs.String())
			}
			// The cut says what it dropped: the first record lost and the records kept.
			if !strings.Contains(logs.String(), fmt.Sprintf("firstLostIndex=%d", uint64(len(want))+firstRecordIndex)) ||
				!strings.Contains(logs.String(), "recordsKept=") || !strings.Contains(logs.String(), "tornBatch=") {
				t.Fatalf("%s: the cut does not say what it dropped: %q", what, logs.String())
			}
			w.Close()
			counts["cut"]++
		default:
			var corrupt *CorruptionError
			if !errors.As(err, &corrupt) || !errors.Is(err, ErrCorrupt) {
				if w != nil {
					w.Close()
				}
				t.Fatalf("%s: Open = %v, want a CorruptionError", what, err)
			}
			low := int64(0)
			if batch >= 0 {
				low = f.batches[batch].start
			}
			if corrupt.File != f.segments[segment] || corrupt.Offset < low || corrupt.Offset > offset {
				t.Fatalf("%s: error names %s offset %d, want %s offset in [%d, %d]", what,
					corrupt.File, corrupt.Offset, f.segments[segment], low, offset)
			}
			counts["error"]++
		}
	}
	if counts["cut"] == 0 || counts["error"] < trials/2 {
		t.Fatalf("outcomes %v: the trials did not exercise both rules", counts)
	}
}

func TestMissingOrReorderedSegmentIsCorruption(t *testing.T) {
	f := newCorruptionFixture(t, 4)
	for _, tc := range []struct {
		name   string
		change func(fs *memFS)
		file   string
	}{
		{"middle segment removed", func(fs *memFS) { fs.Remove(f.path(1)) }, f.segments[2]},
		{"segment renamed past its successor", func(fs *memFS) {
			index, _ := parseSegmentName(f.segments[1])
			fs.Rename(f.path(1), filepath.Join(testDir, segmentName(index+1)))
		}, segmentName(mustIndex(f.segments[1]) + 1)},
		{"closed segment cut short", func(fs *memFS) {
			b := fs.Bytes(f.path(0))
			fs.SetBytes(f.path(0), b[:len(b)-5])
		}, f.segments[0]},
		{"zeros appended to a closed segment", func(fs *memFS) {
			b := fs.Bytes(f.path(0))
			fs.SetBytes(f.path(0), append(b, make([]byte, 100)...))
		}, f.segments[0]},
	} {
		fs := f.fs.Clone()
		tc.change(fs)
		options := f.options
		options.FS = fs
		w, err := Open(options)
		var corrupt *CorruptionError
		if !errors.As(err, &corrupt) || corrupt.File != tc.file {
			if w != nil {
				w.Close()
			}
			t.Errorf("%s: Open = %v, want corruption in %s", tc.name, err, tc.file)
		}
	}
}

func mustIndex(name string) uint64 {
	index, ok := parseSegmentName(name)
	if !ok {
		panic(name)
	}
	return index
}

// TestTornFinalBatchIsCutAndTheLogContinues covers the shapes a crash leaves: a partial batch,
// a batch whose header page was lost while later pages landed, and a valid-looking batch
// with a wrong index. Each is cut, reported once, and the log appends and reopens cleanly.
func TestTornFinalBatchIsCutAndTheLogContinues(t *testing.T) {
	f := newCorruptionFixture(t, 2)
	last := len(f.segments) - 1
	final := f.batches[len(f.batches)-1]
	for _, tc := range []struct {
		name   string
		damage func(b []byte)
	}{
		{"partial batch", func(b []byte) { clear(b[final.end-7 : final.end]) }},
		{"header lost, body landed", func(b []byte) { clear(b[final.start : final.start+batchHeaderSize]) }},
		{"only the header landed", func(b []byte) { clear(b[final.start+batchHeaderSize : final.end]) }},
		{"wrong index", func(b []byte) {
			binary.LittleEndian.PutUint64(b[final.start+12:], 999999)
			putBatchHeader(b[final.start:], batchHeader{
				bodyBytes: binary.LittleEndian.Uint32(b[final.start+4:]),
				records:   binary.LittleEndian.Uint32(b[final.start+8:]), firstIndex: 1})
		}},
	} {
		w, logs, err := f.openDamaged(last, tc.damage)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want := f.allKeys(len(f.batches) - 1)
		if got := replayKeys(t, w); !slices.Equal(got, want) {
			t.Fatalf("%s: %d records, want %d", tc.name, len(got), len(want))
		}
		if n := strings.Count(logs.String(), "torn tail"); n != 1 {
			t.Fatalf("%s: %d log lines: %q", tc.name, n, logs.String())
		}
		if err := w.Append(testRecord(1 << 30)); err != nil {
			t.Fatal(err)
		}
		fs := w.options.FS
		w.Close()
		options := f.options
		options.FS = fs
		if w, err = Open(options); err != nil {
			t.Fatalf("%s: reopen: %v", tc.name, err)
		}
		if got := replayKeys(t, w); !slices.Equal(got, append(want, 1<<30)) {
			t.Fatalf("%s: after reopen %d records", tc.name, len(got))
		}
		w.Close()
	}
}

// TestDamageFollowedByAValidBatchIsCorruption zeroes a whole synced batch in the middle of
// the last segment: it looks like the end of the data, but the batch after it proves that
// it was synced.
func TestDamageFollowedByAValidBatchIsCorruption(t *testing.T) {
	f := newCorruptionFixture(t, 1)
	middle := f.batches[len(f.batches)/2]
	w, _, err := f.openDamaged(0, func(b []byte) { clear(b[middle.start:middle.end]) })
	var corrupt *CorruptionError
	if !errors.As(err, &corrupt) || corrupt.Offset != middle.start {
		if w != nil {
			w.Close()
		}
		t.Fatalf("Open = %v, want corruption at offset %d", err, middle.start)
	}
}
