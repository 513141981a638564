package core

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Sessions is the exactly-once table of the replicated state: per client, the last applied
// sequence number and where it was applied. It is deterministic (every replica that applies
// the same commands in the same order holds the same table), bounded (at most max clients),
// and snapshot-able (MarshalBinary/UnmarshalBinary).
//
// Eviction when a new client would exceed max: the client whose last application is oldest
// (lowest slot) goes, ties broken by the lower client id. An evicted client that retries an
// old command gets it applied again: size max for the number of clients that may retry.
type Sessions struct {
	max     int
	clients map[uint64]*session
	byAge   sessionHeap // every session, oldest (slot, clientID) first
}

type session struct {
	clientID uint64
	seq      uint64 // last applied sequence
	slot     uint64 // where seq was applied
	index    uint32
	heapAt   int // position in byAge
}

// ErrSessionsFormat: UnmarshalBinary was given bytes that are not a Sessions snapshot.
var ErrSessionsFormat = errors.New("core: malformed sessions snapshot")

// NewSessions returns an empty table holding at most clientsMax clients (< 1 means 1).
func NewSessions(clientsMax int) *Sessions {
	return &Sessions{max: max(clientsMax, 1), clients: make(map[uint64]*session)}
}

// Apply records that command (clientID, seq) is being applied at (slot, index), unless it is
// a duplicate: dup is true when seq <= the client's last applied seq. For seq equal to the
// last one, origSlot/origIndex say where it was applied; for an older seq the position is no
// longer remembered and both are zero (the caller answers that command as already applied).
func (s *Sessions) Apply(clientID, seq, slot uint64, index uint32) (dup bool, origSlot uint64, origIndex uint32) {
	if c, ok := s.clients[clientID]; ok {
		if seq == c.seq {
			return true, c.slot, c.index
		}
		if seq < c.seq {
			return true, 0, 0
		}
		c.seq, c.slot, c.index = seq, slot, index
		heap.Fix(&s.byAge, c.heapAt)
		return false, 0, 0
	}
	c := &session{clientID: clientID, seq: seq, slot: slot, index: index}
	s.clients[clientID] = c
	heap.Push(&s.byAge, c)
	for len(s.clients) > s.max {
		old := heap.Pop(&s.byAge).(*session)
		delete(s.clients, old.clientID)
	}
	return false, 0, 0
}

// Len returns how many clients the table holds.
func (s *Sessions) Len() int { return len(s.clients) }

const sessionRecordBytes = 8 + 8 + 8 + 4

// MarshalBinary encodes the table: uint32 count, then per client in client-id order
// clientID, seq, slot (uint64 each) and index (uint32), all little-endian.
func (s *Sessions) MarshalBinary() ([]byte, error) {
	ids := make([]uint64, 0, len(s.clients))
	for id := range s.clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(ids)*sessionRecordBytes), uint32(len(ids)))
	for _, id := range ids {
		c := s.clients[id]
		b = binary.LittleEndian.AppendUint64(b, c.clientID)
		b = binary.LittleEndian.AppendUint64(b, c.seq)
		b = binary.LittleEndian.AppendUint64(b, c.slot)
		b = binary.LittleEndian.AppendUint32(b, c.index)
	}
	return b, nil
}

// UnmarshalBinary replaces the table's contents with a MarshalBinary encoding. It keeps the
// table's max; a snapshot holding more clients than max evicts down to max as Apply would.
func (s *Sessions) UnmarshalBinary(b []byte) error {
	if len(b) < 4 {
		return fmt.Errorf("%w: %d bytes, want at least 4", ErrSessionsFormat, len(b))
	}
	n := int(binary.LittleEndian.Uint32(b))
	if len(b)-4 != n*sessionRecordBytes {
		return fmt.Errorf("%w: count %d needs %d bytes, have %d", ErrSessionsFormat, n, 4+n*sessionRecordBytes, len(b))
	}
	clients := make(map[uint64]*session, n)
	var byAge sessionHeap
	for i, p := 0, b[4:]; i < n; i, p = i+1, p[sessionRecordBytes:] {
		c := &session{
			clientID: binary.LittleEndian.Uint64(p),
			seq:      binary.LittleEndian.Uint64(p[8:]),
			slot:     binary.LittleEndian.Uint64(p[16:]),
			index:    binary.LittleEndian.Uint32(p[24:]),
		}
		if _, dup := clients[c.clientID]; dup {
			return fmt.Errorf("%w: client %d listed twice", ErrSessionsFormat, c.clientID)
		}
		clients[c.clientID] = c
		heap.Push(&byAge, c)
	}
	s.clients, s.byAge = clients, byAge
	for len(s.clients) > s.max {
		old := heap.Pop(&s.byAge).(*session)
		delete(s.clients, old.clientID)
	}
	return nil
}

// sessionHeap orders sessions by (slot, clientID): the eviction order.
type sessionHeap []*session

func (h sessionHeap) Len() int { return len(h) }
func (h sessionHeap) Less(i, j int) bool {
	if h[i].slot != h[j].slot {
		return h[i].slot < h[j].slot
	}
	return h[i].clientID < h[j].clientID
}
func (h sessionHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapAt, h[j].heapAt = i, j
}
func (h *sessionHeap) Push(x any) {
	c := x.(*session)
	c.heapAt = len(*h)
	*h = append(*h, c)
}
func (h *sessionHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
