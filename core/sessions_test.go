package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// sessionStep is one command given to ApplyCommand and the result expected.
type sessionStep struct {
	why                  string
	client, seq, floor   uint64
	slot                 uint64
	index                uint32
	offset               uint64
	want                 SessionOutcome
	origSlot, origOffset uint64
	origIndex            uint32
}

func runSessionSteps(t *testing.T, s *Sessions, steps []sessionStep) {
	t.Helper()
	for i, st := range steps {
		got := s.ApplyCommand(st.client, st.seq, st.floor, st.slot, st.index, st.offset)
		want := SessionResult{Outcome: st.want}
		if st.want == SessionDuplicate {
			want.Slot, want.Index, want.Offset = st.origSlot, st.origIndex, st.origOffset
		}
		if got != want {
			t.Fatalf("step %d (%s): client %d seq %d floor %d: got %+v (%v), want %+v (%v)",
				i, st.why, st.client, st.seq, st.floor, got, got.Outcome, want, want.Outcome)
		}
	}
}

func TestSessionsRules(t *testing.T) {
	tests := []struct {
		name  string
		steps []sessionStep
	}{
		{"first command of a client is applied", []sessionStep{
			{why: "new client", client: 7, seq: 1, floor: 1, slot: 10, offset: 0, want: SessionApplied},
		}},
		{"retry of an applied seq is a duplicate with the original position", []sessionStep{
			{why: "apply", client: 7, seq: 1, floor: 1, slot: 10, index: 3, offset: 40, want: SessionApplied},
			{why: "retry in a later slot", client: 7, seq: 1, floor: 1, slot: 12, want: SessionDuplicate, origSlot: 10, origIndex: 3, origOffset: 40},
		}},
		{"lost lower seq is applied after higher ones", []sessionStep{
			// Seqs 5, 6, 7 in flight with floor 5; 5 was lost with a crashed leader.
			{why: "6 chosen", client: 1, seq: 6, floor: 5, slot: 20, index: 0, offset: 100, want: SessionApplied},
			{why: "7 chosen", client: 1, seq: 7, floor: 5, slot: 20, index: 1, offset: 101, want: SessionApplied},
			{why: "5 retried", client: 1, seq: 5, floor: 5, slot: 21, index: 0, offset: 102, want: SessionApplied},
			{why: "5 retried again", client: 1, seq: 5, floor: 5, slot: 22, want: SessionDuplicate, origSlot: 21, origOffset: 102},
			{why: "6 retried", client: 1, seq: 6, floor: 5, slot: 22, want: SessionDuplicate, origSlot: 20, origOffset: 100},
			{why: "7 retried", client: 1, seq: 7, floor: 5, slot: 22, want: SessionDuplicate, origSlot: 20, origIndex: 1, origOffset: 101},
		}},
		{"seq below the floor is abandoned", []sessionStep{
			{why: "apply 3", client: 2, seq: 3, floor: 3, slot: 1, want: SessionApplied},
			{why: "floor rises to 8 with seq 8", client: 2, seq: 8, floor: 8, slot: 2, want: SessionApplied},
			{why: "late copy of 3 (answered)", client: 2, seq: 3, floor: 3, slot: 3, want: SessionAbandoned},
			{why: "4 never applied, given up by the client", client: 2, seq: 4, floor: 4, slot: 3, want: SessionAbandoned},
		}},
		{"the floor never falls", []sessionStep{
			{why: "floor 10", client: 3, seq: 10, floor: 10, slot: 1, want: SessionApplied},
			{why: "an older request carries floor 2", client: 3, seq: 9, floor: 2, slot: 2, want: SessionAbandoned},
			{why: "10 is still remembered", client: 3, seq: 10, floor: 2, slot: 3, want: SessionDuplicate, origSlot: 1},
		}},
		{"raising the floor forgets the seqs below it", []sessionStep{
			{why: "apply 1", client: 4, seq: 1, floor: 1, slot: 1, want: SessionApplied},
			{why: "apply 2", client: 4, seq: 2, floor: 1, slot: 1, index: 1, want: SessionApplied},
			{why: "floor 2 forgets 1", client: 4, seq: 3, floor: 2, slot: 2, want: SessionApplied},
			{why: "1 is below the floor", client: 4, seq: 1, floor: 1, slot: 3, want: SessionAbandoned},
			{why: "2 is still a duplicate", client: 4, seq: 2, floor: 2, slot: 3, want: SessionDuplicate, origSlot: 1, origIndex: 1},
		}},
		{"seq too far above the floor is refused and changes nothing", []sessionStep{
			{why: "apply 0", client: 5, seq: 0, floor: 0, slot: 1, want: SessionApplied},
			{why: "seq 4 with floor 0 and seqsMax 4", client: 5, seq: 4, floor: 0, slot: 2, want: SessionRefused},
			{why: "the same seq with floor 1 fits (4-1 < 4)", client: 5, seq: 4, floor: 1, slot: 3, want: SessionApplied},
			{why: "seq 9 with floor 5 is refused", client: 5, seq: 9, floor: 5, slot: 4, want: SessionRefused},
			{why: "refused command did not raise the floor to 5", client: 5, seq: 4, floor: 1, slot: 5, want: SessionDuplicate, origSlot: 3},
		}},
		{"new client whose first seq is too far above its floor is refused", []sessionStep{
			{why: "seq 100 floor 0", client: 6, seq: 100, floor: 0, slot: 1, want: SessionRefused},
			{why: "then a valid one is applied", client: 6, seq: 100, floor: 97, slot: 2, want: SessionApplied},
		}},
		{"clients are independent", []sessionStep{
			{client: 8, seq: 1, floor: 1, slot: 1, want: SessionApplied},
			{client: 9, seq: 1, floor: 1, slot: 1, index: 1, want: SessionApplied},
			{client: 8, seq: 2, floor: 2, slot: 2, want: SessionApplied},
			{client: 9, seq: 1, floor: 1, slot: 3, want: SessionDuplicate, origSlot: 1, origIndex: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSessionSteps(t, NewSessionsBounded(10, 4), tt.steps)
		})
	}
}

// Issue 15, defect 7: a flood of new client ids evicted a live session, and its retry applied
// twice. A full table refuses new clients until its least recently active session has been
// idle for idleSlotsMax slots; only then does that one (ties: the lower client id) make room.
func TestSessionsFullTableRefusesNewClientsUntilOneIsIdle(t *testing.T) {
	s := NewSessionsLimited(3, 16, 10)
	runSessionSteps(t, s, []sessionStep{
		{client: 30, seq: 1, floor: 1, slot: 5, want: SessionApplied},
		{client: 20, seq: 1, floor: 1, slot: 5, index: 1, want: SessionApplied},
		{client: 10, seq: 1, floor: 1, slot: 9, want: SessionApplied},
		{why: "client 30 is now recent", client: 30, seq: 2, floor: 2, slot: 12, want: SessionApplied},
		{why: "full, and (5, client 20) is idle for 9 < 10 slots", client: 40, seq: 1, floor: 1, slot: 14, want: SessionFull},
		{why: "a refused command changed nothing: 20's retry is a duplicate", client: 20, seq: 1, floor: 1, slot: 14, want: SessionDuplicate, origSlot: 5, origIndex: 1},
		{why: "full, and (9, client 10) is idle for 9 < 10 slots", client: 40, seq: 1, floor: 1, slot: 18, want: SessionFull},
		{why: "client 10 idle for 10 slots makes room", client: 40, seq: 1, floor: 1, slot: 19, want: SessionApplied},
	})
	if s.Len() != 3 {
		t.Fatalf("Len %d, want 3", s.Len())
	}
	runSessionSteps(t, s, []sessionStep{
		{why: "client 10 was the one that went; now (12, client 30), idle 18, makes room", client: 10, seq: 1, floor: 1, slot: 30, want: SessionApplied},
		{why: "30, retried past the idle bound, is new again (the documented limit); 20 makes room", client: 30, seq: 2, floor: 2, slot: 31, want: SessionApplied},
		{why: "40 (slot 19) was kept", client: 40, seq: 1, floor: 1, slot: 32, want: SessionDuplicate, origSlot: 19},
		{why: "full: 40 (slot 32), 10 (30), 30 (31) are all within the bound", client: 50, seq: 1, floor: 1, slot: 33, want: SessionFull},
	})
}

func TestSessionsSnapshotRoundTrip(t *testing.T) {
	s := NewSessionsBounded(100, 64)
	for c := uint64(1); c <= 50; c++ {
		for seq := c; seq < c+c%5+1; seq++ {
			s.ApplyCommand(c, seq, c, c*10, uint32(seq), c*100+seq)
		}
	}
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r := NewSessionsBounded(100, 64)
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	b2, _ := r.MarshalBinary()
	if !bytes.Equal(b, b2) || r.Len() != 50 || r.Seqs() != s.Seqs() {
		t.Fatalf("round trip changed the table (%d clients, %d seqs)", r.Len(), r.Seqs())
	}
	want := SessionResult{Outcome: SessionDuplicate, Slot: 170, Index: 18, Offset: 1718}
	if got := r.ApplyCommand(17, 18, 17, 500, 0, 0); got != want {
		t.Fatalf("restored table lost client 17 seq 18: %+v, want %+v", got, want)
	}
	if got := r.ApplyCommand(17, 16, 17, 500, 0, 0); got.Outcome != SessionAbandoned {
		t.Fatalf("restored table lost client 17's floor: %+v", got)
	}
	small := NewSessionsBounded(10, 64)
	if err := small.UnmarshalBinary(b); err != nil || small.Len() != 10 {
		t.Fatalf("restore into a smaller table: %v, %d clients", err, small.Len())
	}
	if err := NewSessionsBounded(100, 2).UnmarshalBinary(b); !errors.Is(err, ErrSessionsFormat) {
		t.Fatalf("restore into a table with a smaller seqs limit: %v", err)
	}
}

func TestSessionsUnmarshalRejectsMalformed(t *testing.T) {
	s := NewSessionsBounded(10, 8)
	s.ApplyCommand(1, 5, 4, 1, 0, 0)
	s.ApplyCommand(1, 6, 4, 1, 1, 1)
	s.ApplyCommand(2, 1, 1, 2, 0, 2)
	good, _ := s.MarshalBinary()
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	// Offsets: header 5; client 1 at 5 (28 bytes header, seqs at 33 and 61); client 2 at 89.
	tests := map[string][]byte{
		"empty":            nil,
		"old format":       mutate(func(b []byte) []byte { b[0] = 1; return b }),
		"cut":              good[:len(good)-1],
		"trailing":         append(append([]byte(nil), good...), 0),
		"count too large":  mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[1:], 1<<31); return b }),
		"ids not sorted":   mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[89:], 1); return b }),
		"seqs count huge":  mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[5+24:], 1<<30); return b }),
		"seq below floor":  mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[33:], 3); return b }),
		"seqs not sorted":  mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[61:], 5); return b }),
		"seq beyond limit": mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[61:], 12); return b }),
	}
	for name, bad := range tests {
		r := NewSessionsBounded(10, 8)
		r.ApplyCommand(99, 1, 1, 1, 0, 0)
		if err := r.UnmarshalBinary(bad); !errors.Is(err, ErrSessionsFormat) {
			t.Errorf("%s: err = %v, want ErrSessionsFormat", name, err)
		}
		if r.Len() != 1 {
			t.Errorf("%s: a failed restore changed the table (%d clients)", name, r.Len())
		}
	}
	if err := NewSessionsBounded(10, 8).UnmarshalBinary(good); err != nil {
		t.Fatalf("the unmutated snapshot: %v", err)
	}
}

// sessionsModel is the reference: maps instead of sorted slices, a scan instead of a heap.
type sessionsModel struct {
	clientsMax   int
	seqsMax      uint64
	idleSlotsMax uint64
	clients      map[uint64]*modelClient
}

type modelClient struct {
	floor, slot uint64
	applied     map[uint64]SessionResult
}

func (m *sessionsModel) apply(client, seq, floor, slot uint64, index uint32, offset uint64) SessionResult {
	c, known := m.clients[client]
	newFloor := floor
	if known && c.floor > newFloor {
		newFloor = c.floor
	}
	if seq >= newFloor && seq-newFloor >= m.seqsMax {
		return SessionResult{Outcome: SessionRefused}
	}
	if !known {
		if len(m.clients) >= m.clientsMax {
			var oldID uint64
			var old *modelClient
			for id, o := range m.clients {
				if old == nil || o.slot < old.slot || (o.slot == old.slot && id < oldID) {
					oldID, old = id, o
				}
			}
			if slot-old.slot < m.idleSlotsMax {
				return SessionResult{Outcome: SessionFull}
			}
			delete(m.clients, oldID)
		}
		c = &modelClient{floor: floor, slot: slot, applied: map[uint64]SessionResult{}}
		m.clients[client] = c
	}
	c.slot = slot
	c.floor = newFloor
	for s := range c.applied {
		if s < c.floor {
			delete(c.applied, s)
		}
	}
	if seq < c.floor {
		return SessionResult{Outcome: SessionAbandoned}
	}
	if r, ok := c.applied[seq]; ok {
		return r
	}
	c.applied[seq] = SessionResult{Outcome: SessionDuplicate, Slot: slot, Index: index, Offset: offset}
	return SessionResult{Outcome: SessionApplied}
}

// TestSessionsMatchesReferenceModel drives the table and the model with the same random
// commands (clients with several seqs in flight, losses, retries, stale copies, floor jumps)
// and compares every answer; every so often the table goes through a snapshot.
func TestSessionsMatchesReferenceModel(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 77))
		clientsMax, seqsMax, idle := 1+r.IntN(6), 1+r.IntN(12), uint64(1+r.IntN(30))
		s := NewSessionsLimited(clientsMax, seqsMax, idle)
		m := &sessionsModel{clientsMax: clientsMax, seqsMax: uint64(seqsMax), idleSlotsMax: idle, clients: map[uint64]*modelClient{}}
		next := map[uint64]uint64{} // per client: a moving base for seqs
		slot, offset := uint64(0), uint64(0)
		for step := 0; step < 3000; step++ {
			if r.IntN(4) == 0 {
				slot++
			}
			client := uint64(r.IntN(8))
			base := next[client]
			if r.IntN(5) == 0 {
				next[client] = base + uint64(r.IntN(4))
			}
			floor := base - min(base, uint64(r.IntN(3)))
			seq := floor + uint64(r.IntN(seqsMax+2))
			if r.IntN(10) == 0 {
				seq = floor - min(floor, uint64(r.IntN(4))) // a stale copy below the floor
			}
			index := uint32(r.IntN(100))
			got := s.ApplyCommand(client, seq, floor, slot, index, offset)
			want := m.apply(client, seq, floor, slot, index, offset)
			if got != want {
				t.Fatalf("seed %d step %d: client %d seq %d floor %d slot %d: got %+v, model %+v",
					seed, step, client, seq, floor, slot, got, want)
			}
			if got.Outcome == SessionApplied {
				offset++
			}
			if s.Len() != len(m.clients) {
				t.Fatalf("seed %d step %d: %d clients, model %d", seed, step, s.Len(), len(m.clients))
			}
			if step%500 == 499 {
				b, _ := s.MarshalBinary()
				s = NewSessionsLimited(clientsMax, seqsMax, idle)
				if err := s.UnmarshalBinary(b); err != nil {
					t.Fatalf("seed %d step %d: snapshot: %v", seed, step, err)
				}
			}
		}
	}
}

func FuzzSessionsUnmarshal(f *testing.F) {
	s := NewSessionsBounded(4, 8)
	s.ApplyCommand(1, 5, 4, 1, 0, 0)
	s.ApplyCommand(2, 1, 1, 2, 0, 1)
	good, _ := s.MarshalBinary()
	f.Add(good)
	f.Add([]byte{sessionsFormat, 0, 0, 0, 0})
	f.Add([]byte{sessionsFormat, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewSessionsBounded(4, 8)
		if err := r.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrSessionsFormat) {
				t.Fatalf("error without the sentinel: %v", err)
			}
			return
		}
		if r.Len() > 4 {
			t.Fatalf("%d clients in a table of 4", r.Len())
		}
		again, _ := r.MarshalBinary()
		r2 := NewSessionsBounded(4, 8)
		if err := r2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v", err)
		}
		r.ApplyCommand(3, 9, 9, 1, 0, 0) // must not panic
	})
}

func BenchmarkSessionsApplyCommand(b *testing.B) {
	for _, inflight := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			s := NewSessions(1024)
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				client := seq % 64
				floor := seq/64 - min(seq/64, uint64(inflight))
				s.ApplyCommand(client, seq/64, floor, seq, 0, seq)
				seq++
			}
		})
	}
}
