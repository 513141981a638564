package wal

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// mix is splitmix64: test payloads are a pure function of the key, so any record read back
// can be checked byte for byte without remembering what was written.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func testPayload(key uint64, lengthMax int) []byte {
	b := make([]byte, int(mix(key)%uint64(lengthMax+1)))
	for i := range b {
		b[i] = byte(mix(key+uint64(i/8)+1) >> (8 * (i % 8)))
	}
	return b
}

func testRecord(key uint64) Record {
	return Record{Type: uint8(key % 251), Key: key, Payload: testPayload(key, 300)}
}

// checkRecord reports whether r is exactly what testRecord(r.Key) wrote.
func checkRecord(r Record) error {
	want := testRecord(r.Key)
	if r.Type != want.Type || !bytes.Equal(r.Payload, want.Payload) {
		return fmt.Errorf("record key %d: type %d payload %d bytes, want type %d payload %d bytes",
			r.Key, r.Type, len(r.Payload), want.Type, len(want.Payload))
	}
	return nil
}

func replayKeys(t testing.TB, w *WAL) []uint64 {
	t.Helper()
	var keys []uint64
	err := w.Replay(func(r Record) error {
		if err := checkRecord(r); err != nil {
			return err
		}
		keys = append(keys, r.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return keys
}

const testDir = "/wal"

func memOptions(fs *memFS, segmentBytes int64) Options {
	o := DefaultOptions(testDir)
	o.FS = fs
	o.SegmentBytes = segmentBytes
	return o
}

// logBuffer captures log lines for asserting that a repair was reported.
type logBuffer struct {
	mu    sync.Mutex
	lines strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }
