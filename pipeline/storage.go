package pipeline

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/wal"
)

// chosenRing is core's Storage: the most recent chosen values, contiguous by slot, bounded
// by bytes. Values are the immutable slices core handed out in Ready.Chosen, so keeping one
// costs a reference, not a copy. It serves catch-up below the slots core retains itself.
//
// A slot older than the ring is not served (Chosen returns what it holds from `from`, which
// is nothing): a replica that fell further behind than CacheBytesMax of history cannot catch
// up until snapshots exist. The WAL holds those values, but reading a slot there means
// scanning segments, which the step loop cannot afford.
type chosenRing struct {
	mu       sync.Mutex
	values   [][]byte // values[i] is slot first+i; a circular buffer from head
	head     int
	count    int
	first    uint64
	bytes    int
	bytesMax int
}

func newChosenRing(bytesMax int) *chosenRing {
	return &chosenRing{values: make([][]byte, 1024), bytesMax: bytesMax}
}

// put records slot's chosen value. Slots arrive in order; a jump (after a snapshot install)
// restarts the ring.
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
	r.bytes += len(value) + 24 // the slice header counts too: no-ops are not free
	for r.bytes > r.bytesMax && r.count > 1 {
		v := r.values[r.head]
		r.values[r.head] = nil
		r.head = (r.head + 1) % len(r.values)
		r.count--
		r.first++
		r.bytes -= len(v) + 24
	}
}

func (r *chosenRing) grow() {
	bigger := make([][]byte, 2*len(r.values))
	for i := 0; i < r.count; i++ {
		bigger[i] = r.values[(r.head+i)%len(r.values)]
	}
	r.values, r.head = bigger, 0
}

// Chosen implements core.Storage.
func (r *chosenRing) Chosen(from uint64, maxSlots, maxBytes int, dst [][]byte) ([][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count == 0 || from < r.first {
		return dst, nil
	}
	sum := 0
	for s := from; s < r.first+uint64(r.count) && maxSlots > 0; s++ {
		v := r.values[(r.head+int(s-r.first))%len(r.values)]
		if sum > 0 && sum+len(v) > maxBytes {
			break
		}
		dst = append(dst, v)
		sum += len(v)
		maxSlots--
	}
	return dst, nil
}

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
