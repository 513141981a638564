package core

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Sessions is the exactly-once table of the replicated state (RIFL; Raft thesis §6.3). Per
// client it keeps a seq floor — every seq below it was answered to the client, which promised
// never to retry it — and every applied seq at or above the floor with the position it was
// applied at. A client may thus have many commands in flight and lose a lower one (sent to a
// leader that crashed) while higher ones are applied: its retry is still applied, once.
//
// It is deterministic: every replica that applies the same commands in the same order, with
// the same limits, holds the same table (so every replica of a cluster must use the same
// clientsMax and seqsMax). It is bounded: at most clientsMax clients, and per client the
// recorded seqs lie in [floor, floor+seqsMax). It is snapshot-able (MarshalBinary,
// UnmarshalBinary).
//
// A full table never evicts a live session: evicting one would let its retry apply twice (a
// flood of new client ids did exactly that). When a new client would exceed clientsMax, the
// client whose last activity is oldest (lowest slot; ties broken by the lower client id) goes
// only if it has been idle for at least idleSlotsMax slots; otherwise the new client's
// command is refused (SessionFull: not applied, retry later). The bound is in slots so that
// every replica decides alike; clients are told it (client package doc): a command retried
// after idleSlotsMax slots were chosen since its client's last activity may apply twice. At
// the highest slot rate measured here (about 2,000 slots a second) the default, 2^24 slots, is
// over two hours; client calls time out in seconds.
type Sessions struct {
	clientsMax   int
	seqsMax      uint64
	idleSlotsMax uint64
	clients      map[uint64]*session
	byAge        sessionHeap // every session, oldest (slot, clientID) first
}

type session struct {
	clientID uint64
	floor    uint64 // every seq below floor is forgotten: answered, never retried
	// seqs[head:] are the applied seqs >= floor, strictly increasing by seq. seqs[:head] are
	// forgotten (below the floor) and reused by compaction when an insert would otherwise
	// grow the array: raising the floor is O(1) amortised and steady state allocates nothing.
	seqs   []appliedSeq
	head   int
	slot   uint64 // slot of the client's last activity: the eviction order
	heapAt int    // position in byAge
}

// appliedSeq is where one seq was applied.
type appliedSeq struct {
	seq    uint64
	slot   uint64
	offset uint64
	index  uint32
}

// SessionOutcome says what Sessions.ApplyCommand decided for one command.
type SessionOutcome uint8

const (
	// SessionApplied: a new command; the caller applies it at the position it passed.
	SessionApplied SessionOutcome = iota
	// SessionDuplicate: the seq was applied before; SessionResult holds that position.
	SessionDuplicate
	// SessionAbandoned: the seq is below the client's floor. The client promised it would not
	// wait for it (it was answered, or given up); it is not applied and nobody is answered.
	SessionAbandoned
	// SessionRefused: seq - floor >= the table's seqsMax. Not applied, the table is left
	// untouched; the replica answers StatusInvalid (a correct client never gets there).
	SessionRefused
	// SessionFull: a new client, and the table holds clientsMax clients none of which has
	// been idle for idleSlotsMax slots. Not applied, the table is left untouched; the replica
	// answers StatusOverloaded (retry later).
	SessionFull
)

func (o SessionOutcome) String() string {
	switch o {
	case SessionApplied:
		return "applied"
	case SessionDuplicate:
		return "duplicate"
	case SessionAbandoned:
		return "abandoned"
	case SessionRefused:
		return "refused"
	case SessionFull:
		return "full"
	}
	return fmt.Sprintf("SessionOutcome(%d)", uint8(o))
}

// SessionResult is ApplyCommand's answer. Slot, Index and Offset are the command's original
// position when Outcome is SessionDuplicate, zero otherwise.
type SessionResult struct {
	Outcome SessionOutcome
	Slot    uint64
	Index   uint32
	Offset  uint64
}

// DefaultSessionSeqsMax bounds, per client, how far a seq may run ahead of the client's floor:
// the commands a client may have in flight (client.Config.InflightMax must not exceed it).
const DefaultSessionSeqsMax = 4096

// DefaultSessionIdleSlotsMax: a session idle for this many slots may make room for a new
// client in a full table (see Sessions).
const DefaultSessionIdleSlotsMax = 1 << 24

// ErrSessionsFormat: UnmarshalBinary was given bytes that are not a Sessions snapshot.
var ErrSessionsFormat = errors.New("core: malformed sessions snapshot")

// NewSessions returns an empty table holding at most clientsMax clients (< 1 means 1), with
// DefaultSessionSeqsMax seqs per client.
func NewSessions(clientsMax int) *Sessions {
	return NewSessionsBounded(clientsMax, DefaultSessionSeqsMax)
}

// NewSessionsBounded returns an empty table holding at most clientsMax clients and refusing a
// command whose seq is seqsMax or more above its client's floor (< 1 means 1 for both), with
// DefaultSessionIdleSlotsMax.
func NewSessionsBounded(clientsMax, seqsMax int) *Sessions {
	return NewSessionsLimited(clientsMax, seqsMax, DefaultSessionIdleSlotsMax)
}

// NewSessionsLimited is NewSessionsBounded with the idle bound after which a session may make
// room for a new client (< 1 means 1).
func NewSessionsLimited(clientsMax, seqsMax int, idleSlotsMax uint64) *Sessions {
	return &Sessions{
		clientsMax:   max(clientsMax, 1),
		seqsMax:      uint64(max(seqsMax, 1)),
		idleSlotsMax: max(idleSlotsMax, 1),
		clients:      make(map[uint64]*session),
	}
}

// ApplyCommand decides command (clientID, seq, seqFloor), about to be applied at (slot, index)
// with dense offset, and records it when it is new. In order:
//
//   - the client's floor rises to seqFloor (it never falls), forgetting the seqs below it;
//   - seq below the floor: SessionAbandoned (not applied);
//   - seq - floor >= seqsMax: SessionRefused (not applied; the table is left as it was);
//   - seq already recorded: SessionDuplicate with its original position;
//   - otherwise SessionApplied, and the seq is recorded at (slot, index, offset).
//
// A client not in the table starts with floor seqFloor; adding it may evict another.
func (s *Sessions) ApplyCommand(clientID, seq, seqFloor, slot uint64, index uint32, offset uint64) SessionResult {
	c, known := s.clients[clientID]
	floor := seqFloor
	if known {
		floor = max(c.floor, seqFloor)
	}
	if seq >= floor && seq-floor >= s.seqsMax {
		return SessionResult{Outcome: SessionRefused}
	}
	if !known {
		if len(s.clients) >= s.clientsMax && !s.evictIdle(slot) {
			return SessionResult{Outcome: SessionFull}
		}
		// seqFloor <= seq here (codec enforces it; a violating caller lands in Abandoned).
		c = &session{clientID: clientID, floor: seqFloor, slot: slot}
		s.clients[clientID] = c
		heap.Push(&s.byAge, c)
		if len(s.clients) > s.clientsMax {
			panic(fmt.Sprintf("core: sessions: %d clients in a table of %d", len(s.clients), s.clientsMax))
		}
	} else {
		s.touch(c, slot)
	}
	c.raiseFloor(floor)
	if seq < c.floor {
		return SessionResult{Outcome: SessionAbandoned}
	}
	applied := c.applied()
	at, found := slices.BinarySearchFunc(applied, seq, func(a appliedSeq, seq uint64) int {
		switch {
		case a.seq < seq:
			return -1
		case a.seq > seq:
			return 1
		}
		return 0
	})
	if found {
		a := applied[at]
		return SessionResult{Outcome: SessionDuplicate, Slot: a.slot, Index: a.index, Offset: a.offset}
	}
	c.insert(at, appliedSeq{seq: seq, slot: slot, offset: offset, index: index})
	return SessionResult{Outcome: SessionApplied}
}

// raiseFloor moves the floor up to floor (never down) and forgets the seqs below it.
func (c *session) raiseFloor(floor uint64) {
	if floor <= c.floor {
		return
	}
	c.floor = floor
	for c.head < len(c.seqs) && c.seqs[c.head].seq < floor {
		c.head++
	}
	if c.head == len(c.seqs) {
		c.seqs, c.head = c.seqs[:0], 0
	}
}

// applied returns the remembered seqs, increasing.
func (c *session) applied() []appliedSeq { return c.seqs[c.head:] }

// insert puts a at position at of applied(). When the array is full but has forgotten entries
// in front, the live ones move down first instead of growing it.
func (c *session) insert(at int, a appliedSeq) {
	if len(c.seqs) == cap(c.seqs) && c.head > 0 {
		n := copy(c.seqs, c.seqs[c.head:])
		c.seqs = c.seqs[:n]
		c.head = 0
	}
	c.seqs = slices.Insert(c.seqs, c.head+at, a)
}

// touch records activity of c at slot (the eviction order).
func (s *Sessions) touch(c *session, slot uint64) {
	if slot != c.slot {
		c.slot = slot
		heap.Fix(&s.byAge, c.heapAt)
	}
}

// evictIdle makes room for a new client at slot by dropping the least recently active
// session, if it has been idle for idleSlotsMax slots; it reports whether it did.
func (s *Sessions) evictIdle(slot uint64) bool {
	oldest := s.byAge[0]
	if slot < oldest.slot || slot-oldest.slot < s.idleSlotsMax {
		return false
	}
	heap.Pop(&s.byAge)
	delete(s.clients, oldest.clientID)
	return true
}

// evict drops the least recently active sessions down to clientsMax (a snapshot taken with a
// larger table; replicas of one cluster share the limit, so this is for tools and tests).
func (s *Sessions) evict() {
	for len(s.clients) > s.clientsMax {
		old := heap.Pop(&s.byAge).(*session)
		delete(s.clients, old.clientID)
	}
}

// Len returns how many clients the table holds.
func (s *Sessions) Len() int { return len(s.clients) }

// Seqs returns how many applied seqs the table remembers over all clients.
func (s *Sessions) Seqs() int {
	n := 0
	for _, c := range s.clients {
		n += len(c.applied())
	}
	return n
}

// Snapshot format. These constants are part of the format.
const (
	sessionsFormat      = 2             // format 1 (no version byte, one seq per client) is not read
	sessionsHeaderBytes = 1 + 4         // format, client count
	sessionHeaderBytes  = 8 + 8 + 8 + 4 // client id, floor, slot, seq count
	sessionSeqBytes     = 8 + 8 + 4 + 8 // seq, slot, index, offset
)

// MarshalBinary encodes the table, all integers little-endian:
//
//	format u8 = 2 | client count u32 | per client, by increasing client id:
//	  client id u64 | floor u64 | last activity slot u64 | seq count u32 |
//	  per seq, increasing: seq u64 | slot u64 | index u32 | offset u64
func (s *Sessions) MarshalBinary() ([]byte, error) {
	ids := make([]uint64, 0, len(s.clients))
	size := sessionsHeaderBytes
	for id, c := range s.clients {
		ids = append(ids, id)
		size += sessionHeaderBytes + len(c.applied())*sessionSeqBytes
	}
	slices.Sort(ids)
	b := make([]byte, 0, size)
	b = append(b, sessionsFormat)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		c := s.clients[id]
		b = binary.LittleEndian.AppendUint64(b, c.clientID)
		b = binary.LittleEndian.AppendUint64(b, c.floor)
		b = binary.LittleEndian.AppendUint64(b, c.slot)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(c.applied())))
		for _, a := range c.applied() {
			b = binary.LittleEndian.AppendUint64(b, a.seq)
			b = binary.LittleEndian.AppendUint64(b, a.slot)
			b = binary.LittleEndian.AppendUint32(b, a.index)
			b = binary.LittleEndian.AppendUint64(b, a.offset)
		}
	}
	return b, nil
}

// UnmarshalBinary replaces the table's contents with a MarshalBinary encoding. It keeps the
// table's limits: a snapshot holding more clients than clientsMax evicts down to it as
// ApplyCommand would; a client whose seqs do not fit seqsMax is ErrSessionsFormat (replicas
// of one cluster must share the limit). Every count is checked against the bytes that remain
// before anything is allocated, so hostile input cannot make it allocate more than its own
// size's worth, nor panic. On error the table is unchanged.
func (s *Sessions) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrSessionsFormat, fmt.Sprintf(format, args...))
	}
	if len(b) < sessionsHeaderBytes {
		return bad("%d bytes, want at least %d", len(b), sessionsHeaderBytes)
	}
	if b[0] != sessionsFormat {
		return bad("format %d, want %d", b[0], sessionsFormat)
	}
	n := uint64(binary.LittleEndian.Uint32(b[1:]))
	p := b[sessionsHeaderBytes:]
	if n*sessionHeaderBytes > uint64(len(p)) {
		return bad("%d clients need at least %d bytes, have %d", n, n*sessionHeaderBytes, len(p))
	}
	clients := make(map[uint64]*session, n)
	byAge := make(sessionHeap, 0, n)
	var prevID uint64
	for i := uint64(0); i < n; i++ {
		if len(p) < sessionHeaderBytes {
			return bad("client %d of %d: %d bytes left, want %d", i, n, len(p), sessionHeaderBytes)
		}
		c := &session{
			clientID: binary.LittleEndian.Uint64(p),
			floor:    binary.LittleEndian.Uint64(p[8:]),
			slot:     binary.LittleEndian.Uint64(p[16:]),
		}
		seqs := uint64(binary.LittleEndian.Uint32(p[24:]))
		p = p[sessionHeaderBytes:]
		if i > 0 && c.clientID <= prevID {
			return bad("client %d follows client %d: ids must increase", c.clientID, prevID)
		}
		prevID = c.clientID
		if seqs > s.seqsMax {
			return bad("client %d: %d seqs exceed the table's seqs limit %d", c.clientID, seqs, s.seqsMax)
		}
		if seqs*sessionSeqBytes > uint64(len(p)) {
			return bad("client %d: %d seqs need %d bytes, have %d", c.clientID, seqs, seqs*sessionSeqBytes, len(p))
		}
		c.seqs = make([]appliedSeq, seqs)
		for j := range c.seqs {
			a := appliedSeq{
				seq:    binary.LittleEndian.Uint64(p),
				slot:   binary.LittleEndian.Uint64(p[8:]),
				index:  binary.LittleEndian.Uint32(p[16:]),
				offset: binary.LittleEndian.Uint64(p[20:]),
			}
			p = p[sessionSeqBytes:]
			if a.seq < c.floor || a.seq-c.floor >= s.seqsMax {
				return bad("client %d: seq %d outside [floor %d, floor + %d)", c.clientID, a.seq, c.floor, s.seqsMax)
			}
			if j > 0 && a.seq <= c.seqs[j-1].seq {
				return bad("client %d: seq %d follows seq %d: seqs must increase", c.clientID, a.seq, c.seqs[j-1].seq)
			}
			c.seqs[j] = a
		}
		clients[c.clientID] = c
		heap.Push(&byAge, c)
	}
	if len(p) != 0 {
		return bad("%d bytes of trailing garbage", len(p))
	}
	s.clients, s.byAge = clients, byAge
	s.evict()
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
