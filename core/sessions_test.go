package core

import (
	"errors"
	"testing"
)

func TestSessionsDetectsRetries(t *testing.T) {
	s := NewSessions(10)
	if dup, _, _ := s.Apply(7, 1, 100, 3); dup {
		t.Fatal("first command reported as duplicate")
	}
	if dup, slot, index := s.Apply(7, 1, 105, 0); !dup || slot != 100 || index != 3 {
		t.Fatalf("retry of the last seq: dup %v at (%d,%d), want original (100,3)", dup, slot, index)
	}
	if dup, _, _ := s.Apply(7, 2, 106, 1); dup {
		t.Fatal("next seq reported as duplicate")
	}
	if dup, slot, _ := s.Apply(7, 1, 107, 0); !dup || slot != 0 {
		t.Fatalf("older seq: dup %v slot %d, want dup with unknown position", dup, slot)
	}
}

func TestSessionsEvictsOldestSlotThenLowestClient(t *testing.T) {
	s := NewSessions(3)
	s.Apply(30, 1, 5, 0)
	s.Apply(20, 1, 5, 1)
	s.Apply(10, 1, 9, 0)
	s.Apply(30, 2, 12, 0) // client 30 is now recent
	s.Apply(40, 1, 13, 0) // over max: (5, client 20) is the oldest
	if s.Len() != 3 {
		t.Fatalf("Len %d, want 3", s.Len())
	}
	if dup, _, _ := s.Apply(20, 1, 14, 0); dup {
		t.Fatal("client 20 should have been evicted (oldest slot)")
	}
	// That re-added 20 at slot 14 and evicted the next oldest: client 10 (slot 9).
	if dup, _, _ := s.Apply(30, 2, 15, 0); !dup {
		t.Fatal("client 30 (slot 12) was evicted instead of client 10 (slot 9)")
	}
}

func TestSessionsSnapshotRoundTrip(t *testing.T) {
	s := NewSessions(100)
	for c := uint64(1); c <= 50; c++ {
		s.Apply(c, c*3, c*10, uint32(c))
	}
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r := NewSessions(100)
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	b2, _ := r.MarshalBinary()
	if string(b) != string(b2) || r.Len() != 50 {
		t.Fatalf("round trip changed the table (%d clients)", r.Len())
	}
	if dup, slot, index := r.Apply(17, 51, 1, 0); !dup || slot != 170 || index != 17 {
		t.Fatalf("restored table lost client 17: %v %d %d", dup, slot, index)
	}
	small := NewSessions(10)
	if err := small.UnmarshalBinary(b); err != nil || small.Len() != 10 {
		t.Fatalf("restore into a smaller table: %v, %d clients", err, small.Len())
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, append(b[:4:4], b[4:4+28]...)} {
		if err := NewSessions(10).UnmarshalBinary(bad); !errors.Is(err, ErrSessionsFormat) {
			t.Errorf("malformed %x: %v", bad, err)
		}
	}
}
