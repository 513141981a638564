package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

const fuzzSegmentName = "00000000000000000001.wal"

// fuzzSeeds builds genuine segments (keys rising, payloads from testRecord) and damaged
// variants of them.
func fuzzSeeds(t testing.TB) [][]byte {
	fs := newMemFS()
	w, err := Open(memOptions(fs, 4096))
	if err != nil {
		t.Fatal(err)
	}
	empty := bytes.TrimRight(fs.Bytes(filepath.Join(testDir, fuzzSegmentName)), "\x00")
	for key := uint64(1); key < 40; key += 3 {
		records := []Record{testRecord(key)}
		if key%2 == 0 {
			records = append(records, testRecord(key+1))
		}
		if err := w.Append(records...); err != nil {
			t.Fatal(err)
		}
		if w.Stats().Segments > 1 {
			break
		}
	}
	w.Close()
	full := bytes.TrimRight(fs.Bytes(filepath.Join(testDir, fuzzSegmentName)), "\x00")
	flipped := bytes.Clone(full)
	flipped[len(flipped)/2] ^= 0x10
	zeroedMiddle := bytes.Clone(full)
	clear(zeroedMiddle[200:260])
	return [][]byte{empty, full, full[:len(full)-9], full[:len(full)/3], flipped, zeroedMiddle,
		append(bytes.Clone(full), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21),
		[]byte("mpwalseg"), nil}
}

// FuzzRecover opens a log whose only segment holds arbitrary bytes. Open must not panic; it
// either refuses with ErrCorrupt or recovers records that are exactly ones the seeds wrote,
// in order; and the recovered log must accept an append and reopen to the same records.
func FuzzRecover(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := newMemFS()
		fs.SetBytes(filepath.Join(testDir, fuzzSegmentName), data)
		options := memOptions(fs, 4096)
		w, err := Open(options)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open failed without ErrCorrupt: %v", err)
			}
			return
		}
		first, err := replayRising(w)
		if err != nil {
			w.Close()
			t.Fatal(err)
		}
		if err := w.Append(testRecord(1 << 50)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if w, err = Open(options); err != nil {
			t.Fatalf("reopen after recovery and one append: %v", err)
		}
		defer w.Close()
		second, err := replayRising(w)
		if err != nil {
			t.Fatal(err)
		}
		if len(second) != len(first)+1 || second[len(first)] != 1<<50 {
			t.Fatalf("reopen: %d records, want %d plus the new one", len(second), len(first))
		}
	})
}

func replayRising(w *WAL) ([]uint64, error) {
	var keys []uint64
	err := w.Replay(func(r Record) error {
		if err := checkRecord(r); err != nil {
			return err
		}
		if len(keys) > 0 && r.Key <= keys[len(keys)-1] {
			return fmt.Errorf("key %d after %d: not in the order written", r.Key, keys[len(keys)-1])
		}
		keys = append(keys, r.Key)
		return nil
	})
	return keys, err
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzRecover when WAL_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WAL_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set WAL_WRITE_FUZZ_SEEDS=1 to regenerate the checked-in seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRecover")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, seed := range fuzzSeeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
