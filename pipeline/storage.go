package pipeline

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/wal"
)

// chosenRing is core's Storage and the node's cache of chosen values, in two tiers, each
// bounded by bytes:
//
//   - the ring: the most recent chosen values, contiguous by slot (Config.CacheBytesMax). The
//     values are the immutable slices core handed out in Ready.Chosen, so keeping one costs a
//     reference, not a copy, and a put allocates nothing. Catch-up of a replica a little behind
//     asks for exactly these.
//   - the cold tier: a ristretto cache (TinyLFU admission, Config.CacheColdBytesMax) of values
//     that fell out of the ring, so catch-up of a replica further behind, and reads of older
//     slots, are served without scanning the WAL. It may drop or refuse a value (ristretto's
//     sets are asynchronous and admission is by frequency): a lookup then misses. It is made on
//     the first eviction, so a node that never fills the ring starts no ristretto goroutines.
//
// A slot in neither is not served (Chosen returns what it holds from `from`, which is nothing);
// the WAL holds those values, but reading a slot there means scanning segments, which the
// step loop cannot afford.
type chosenRing struct {
	mu       sync.Mutex
	values   [][]byte // values[i] is slot first+i; a circular buffer from head
	head     int
	count    int
	first    uint64
	bytes    int
	bytesMax int

	coldBytesMax int // 0: no cold tier
	cold         *ristretto.Cache[uint64, []byte]
	closed       bool

	hits, misses atomic.Uint64 // slots looked up: served from either tier, or not
}

// chosenOverheadBytes is what one cached value costs besides its bytes (the slice header):
// no-ops are not free.
const chosenOverheadBytes = 24

func newChosenRing(bytesMax, coldBytesMax int) *chosenRing {
	return &chosenRing{values: make([][]byte, 1024), bytesMax: bytesMax, coldBytesMax: coldBytesMax}
}

// put records slot's chosen value. Slots arrive in order; a jump (after a snapshot install)
// restarts the ring (the cold tier keeps what it has: those slots' values do not change).
func (r *chosenRing) put(slot uint64, value []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count > 0 && slot != r.first+uint64(r.count) {
		if slot >= r.first && slot < r.first+uint64(r.count) {
			return // already held
		}
		r.head, r.count, r.bytes = 0, 0, 0
		clear(r.values)
	}
	if r.count == 0 {
		r.first = slot
	}
	if r.count == len(r.values) {
		r.grow()
	}
	r.values[(r.head+r.count)%len(r.values)] = value
	r.count++
	r.bytes += len(value) + chosenOverheadBytes
	for r.bytes > r.bytesMax && r.count > 1 {
		v := r.values[r.head]
		r.values[r.head] = nil
		r.demote(r.first, v)
		r.head = (r.head + 1) % len(r.values)
		r.count--
		r.first++
		r.bytes -= len(v) + chosenOverheadBytes
	}
}

// demote offers a value leaving the ring to the cold tier.
func (r *chosenRing) demote(slot uint64, v []byte) {
	if r.coldBytesMax <= 0 || r.closed || len(v)+chosenOverheadBytes > r.coldBytesMax {
		return
	}
	if r.cold == nil {
		cold, err := ristretto.NewCache(&ristretto.Config[uint64, []byte]{
			// ristretto sizes its admission counters at ~10 per item it may hold.
			NumCounters: max(int64(r.coldBytesMax)/1024*10, 10_000),
			MaxCost:     int64(r.coldBytesMax),
			BufferItems: 64,
			// The cost we pass is the value's bytes plus its header; ristretto's own per-item
			// bookkeeping is small next to a batch.
			IgnoreInternalCost: true,
		})
		if err != nil {
			panic(fmt.Sprintf("pipeline: cold chosen cache of %d bytes: %v", r.coldBytesMax, err)) // validated config
		}
		r.cold = cold
	}
	r.cold.Set(slot, v, int64(len(v)+chosenOverheadBytes))
}

func (r *chosenRing) grow() {
	bigger := make([][]byte, 2*len(r.values))
	for i := 0; i < r.count; i++ {
		bigger[i] = r.values[(r.head+i)%len(r.values)]
	}
	r.values, r.head = bigger, 0
}

// Chosen implements core.Storage: consecutive slots from `from`, from the ring, else the cold
// tier, stopping at the first slot neither holds.
func (r *chosenRing) Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := 0
	for s := from; maxSlots > 0; s++ {
		v, ok := r.lookupLocked(s)
		if !ok {
			r.misses.Add(1)
			break
		}
		if sum > 0 && sum+len(v) > maxBytes {
			break
		}
		r.hits.Add(1)
		dst = append(dst, v)
		sum += len(v)
		maxSlots--
	}
	return dst, nil
}

func (r *chosenRing) lookupLocked(slot uint64) ([]byte, bool) {
	if r.count > 0 && slot >= r.first && slot < r.first+uint64(r.count) {
		return r.values[(r.head+int(slot-r.first))%len(r.values)], true
	}
	if r.cold != nil && !r.closed {
		return r.cold.Get(slot)
	}
	return nil, false
}

// get returns slot's chosen value if either tier holds it, counting the hit or miss.
func (r *chosenRing) get(slot uint64) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.lookupLocked(slot)
	if ok {
		r.hits.Add(1)
	} else {
		r.misses.Add(1)
	}
	return v, ok
}

// close stops the cold tier's goroutines; later lookups see the ring only.
func (r *chosenRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.cold != nil {
		r.cold.Close()
		r.cold = nil
	}
}

// cachedBytes is what the ring and the cold tier hold, in cost bytes.
func (r *chosenRing) cachedBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := int64(r.bytes)
	if r.cold != nil {
		b += int64(r.cold.MaxCost() - r.cold.RemainingCost())
	}
	return b
}

// cachedChosen returns slot's chosen value from the in-memory cache (either tier), without
// touching the disk. The slice is shared and immutable: the caller must not modify it.
func (n *Node) cachedChosen(slot uint64) ([]byte, bool) { return n.ring.get(slot) }

var _ core.Storage = (*chosenRing)(nil)

// WAL record types written by the pipeline. These constants are part of the data-dir format.
const (
	recordEntry uint8 = 1 // Key = slot; Payload = ballot round u64 LE, replica u32 LE, value
)

const entryHeaderSize = 8 + 4

// appendEntryPayload encodes e as a WAL record payload.
func appendEntryPayload(dst []byte, e *codec.Entry) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, e.Ballot.Round)
	dst = binary.LittleEndian.AppendUint32(dst, e.Ballot.Replica)
	return append(dst, e.Value...)
}

// Hard state layout: promised round u64 LE, promised replica u32 LE, commit u64 LE.
const hardStateSize = 8 + 4 + 8

func encodeHardState(hs core.HardState) []byte {
	b := make([]byte, 0, hardStateSize)
	b = binary.LittleEndian.AppendUint64(b, hs.Promised.Round)
	b = binary.LittleEndian.AppendUint32(b, hs.Promised.Replica)
	return binary.LittleEndian.AppendUint64(b, hs.Commit)
}

func decodeHardState(b []byte) (core.HardState, error) {
	if len(b) != hardStateSize {
		return core.HardState{}, fmt.Errorf("pipeline: hard state of %d bytes, want %d", len(b), hardStateSize)
	}
	return core.HardState{
		Promised: codec.Ballot{Round: binary.LittleEndian.Uint64(b), Replica: binary.LittleEndian.Uint32(b[8:])},
		Commit:   binary.LittleEndian.Uint64(b[12:]),
	}, nil
}

// recoverPersisted replays w into what core needs to restart: the latest record per slot
// wins, the promise comes from the hard state.
func recoverPersisted(w *wal.WAL) (core.Persisted, error) {
	var p core.Persisted
	if hs := w.HardState(); hs != nil {
		var err error
		if p.HardState, err = decodeHardState(hs); err != nil {
			return p, err
		}
	}
	latest := make(map[uint64]codec.Entry)
	err := w.Replay(func(r wal.Record) error {
		if r.Type != recordEntry {
			return fmt.Errorf("pipeline: WAL record for key %d has unknown type %d", r.Key, r.Type)
		}
		if len(r.Payload) < entryHeaderSize {
			return fmt.Errorf("pipeline: WAL entry for slot %d is %d bytes, shorter than its %d-byte header",
				r.Key, len(r.Payload), entryHeaderSize)
		}
		latest[r.Key] = codec.Entry{
			Slot: r.Key,
			Ballot: codec.Ballot{
				Round:   binary.LittleEndian.Uint64(r.Payload),
				Replica: binary.LittleEndian.Uint32(r.Payload[8:]),
			},
			Value: append([]byte(nil), r.Payload[entryHeaderSize:]...),
		}
		return nil
	})
	if err != nil {
		return p, err
	}
	p.Entries = make([]codec.Entry, 0, len(latest))
	for _, e := range latest {
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}
