package wal

import (
	"errors"
	"strings"
	"testing"
)

// ReadKey finds the latest record of a key with one positioned read: after appends that
// overwrite keys, across segments, after a restart (the index is rebuilt by recovery), and
// not after TruncateBefore removed the key's segment.
func TestReadKeyFindsTheLatestRecord(t *testing.T) {
	fs := newMemFS()
	o := memOptions(fs, SegmentBytesMin)
	o.IndexKeys = true
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 400
	for k := uint64(0); k < keys; k++ {
		if err := w.Append(testRecord(k)); err != nil {
			t.Fatal(err)
		}
	}
	// Key 7 is written again: the later record wins.
	later := Record{Type: 1, Key: 7, Payload: []byte("second version of key 7")}
	if err := w.Append(later); err != nil {
		t.Fatal(err)
	}
	check := func(w *WAL) {
		t.Helper()
		for k := uint64(0); k < keys; k++ {
			r, err := w.ReadKey(k)
			if err != nil {
				t.Fatalf("ReadKey(%d): %v", k, err)
			}
			if k == 7 {
				if string(r.Payload) != string(later.Payload) {
					t.Fatalf("ReadKey(7) = %q, want the later record", r.Payload)
				}
				continue
			}
			if err := checkRecord(r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.ReadKey(keys + 1); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("ReadKey of a key never written: %v", err)
		}
	}
	check(w)
	if where, ok := w.Locate(7); !ok || !strings.Contains(where, ".wal at offset ") {
		t.Fatalf("Locate(7) = %q, %v", where, ok)
	}
	if _, ok := w.Locate(keys + 1); ok {
		t.Fatal("Locate found a key never written")
	}
	if len(w.segments) < 3 {
		t.Fatalf("only %d segments: the test wants several", len(w.segments))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	check(w)
	if err := w.TruncateBefore(keys / 2); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadKey(0); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("ReadKey of a truncated key: %v", err)
	}
	if r, err := w.ReadKey(keys - 1); err != nil || checkRecord(r) != nil {
		t.Fatalf("ReadKey after truncation: %v", err)
	}
}

// A record damaged on disk after it was indexed is reported as corruption, never returned.
func TestReadKeyReportsDamage(t *testing.T) {
	fs := newMemFS()
	o := memOptions(fs, SegmentBytesMin)
	o.IndexKeys = true
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := Record{Type: 2, Key: 42, Payload: []byte("payload that will be damaged")}
	if err := w.Append(r); err != nil {
		t.Fatal(err)
	}
	loc, _ := w.index.lookup(42)
	name := w.segments[len(w.segments)-1].name
	fs.mu.Lock()
	fs.files[w.path(name)].data[loc.offset+int64(loc.size)-1] ^= 0xff
	fs.mu.Unlock()
	var corrupt *CorruptionError
	if _, err := w.ReadKey(42); !errors.As(err, &corrupt) || corrupt.File != name {
		t.Fatalf("ReadKey of a damaged record: %v", err)
	}
}
