package sim

import (
	"errors"
	"reflect"
	"testing"

	"github.com/mpaxos/mpaxos/core"
)

func sampleSnapshot(t *testing.T) snapshot {
	t.Helper()
	sessions := core.NewSessionsBounded(4, 8)
	sessions.ApplyCommand(1, 1, 1, 0, 0, 0)
	b, err := sessions.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{
		values:    [][]byte{[]byte("first"), {}, []byte("third value")},
		sessions:  b,
		offset:    7,
		appliedAt: map[commandKey]position{{1, 1}: {slot: 0, index: 0, offset: 0}, {2, 5}: {slot: 2, index: 3, offset: 6}},
	}
}

// A snapshot file decodes to the state it was encoded from, and a state encodes to one file
// whatever its map's order.
func TestSnapshotFileRoundTrips(t *testing.T) {
	s := sampleSnapshot(t)
	data := encodeSnapshot(&s)
	back, err := decodeSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.slot() != 3 || back.offset != 7 || !reflect.DeepEqual(back.appliedAt, s.appliedAt) ||
		string(back.sessions) != string(s.sessions) || string(back.values[2]) != "third value" || len(back.values[1]) != 0 {
		t.Fatalf("decoded %+v, want %+v", back, s)
	}
	if again := encodeSnapshot(&back); string(again) != string(data) {
		t.Fatal("the same state encoded to two files")
	}
	if f := newSnapshotFile(data); f.slot != 3 {
		t.Fatalf("file slot %d, want 3", f.slot)
	}
}

// Every flipped bit and every truncation is refused: a damaged file is never restored from.
func TestSnapshotFileRefusesDamage(t *testing.T) {
	s := sampleSnapshot(t)
	data := encodeSnapshot(&s)
	for i := range data {
		damaged := append([]byte(nil), data...)
		damaged[i] ^= 1 << (i % 8)
		if _, err := decodeSnapshot(damaged); !errors.Is(err, errSnapshotFile) {
			t.Fatalf("bit flipped in byte %d of %d: %v", i, len(data), err)
		}
	}
	for n := range len(data) {
		if _, err := decodeSnapshot(data[:n]); !errors.Is(err, errSnapshotFile) {
			t.Fatalf("cut to %d of %d bytes: %v", n, len(data), err)
		}
	}
}
