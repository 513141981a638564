package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/wal"
)

// This file is the pipeline's side of the embedding API (package mpaxos at the module root):
// the application state machine hook, the index from dense offsets to slots, reads of applied
// commands by offset, and waiting for the apply stage to reach a position.

// Errors of the embedding reads.
var (
	// ErrCompacted: the offset is below the oldest one this replica still holds (its log was
	// compacted into a snapshot). Resume from LogIndex.First.
	ErrCompacted = errors.New("pipeline: offset compacted")
	// ErrNotApplied: the offset or slot is not applied on this replica yet.
	ErrNotApplied = errors.New("pipeline: not applied yet")
)

// Application is the replicated state machine the apply stage drives (optional). Every
// replica calls Apply with the same commands in the same order.
type Application interface {
	// Apply is called on the apply goroutine for every command that takes an offset, in
	// offset order. c.Payload is valid only during the call. A slow Apply slows the replica.
	Apply(c AppliedCommand)
	// Snapshot is called on the apply goroutine at a slot boundary: it must capture the state
	// as of the last Apply (cheaply: a copy, or a copy-on-write view) and return a reader of
	// it, which is read and closed later on another goroutine while Apply continues.
	Snapshot() (io.ReadCloser, error)
	// Restore replaces the state with a snapshot's (at start from the newest local snapshot,
	// or when a snapshot is installed from a peer); on the apply goroutine.
	Restore(r io.Reader) error
}

// AppliedCommand is one command in the applied log.
type AppliedCommand struct {
	Offset   uint64 // dense position: commands applied before it
	Slot     uint64 // the Paxos slot whose batch holds it
	Index    uint32 // its position in that batch
	ClientID uint64
	Seq      uint64
	Payload  []byte
}

// IsMarker reports whether a command payload is a barrier marker: empty commands take no
// offset, are not given to the Application and are never read back. Barrier proposes one to
// learn a position confirmed by a quorum.
func IsMarker(payload []byte) bool { return len(payload) == 0 }

// slotOffsets says which offsets one applied slot's batch took.
type slotOffsets struct {
	slot  uint64
	first uint64   // offset of the first offset-taking command
	count uint32   // offset-taking commands
	skip  []uint32 // batch indexes that took no offset (duplicates, markers), ascending
}

// logIndex maps dense offsets to slots for the applied log that is still retained. The apply
// goroutine appends; readers look up. Bounded: compaction trims it with the WAL.
type logIndex struct {
	mu      sync.Mutex
	slots   []slotOffsets // ascending slot; only slots that took or skipped commands
	first   uint64        // offsets below it are compacted
	next    uint64        // offsets below it are applied
	slot    uint64        // slots below it are applied
	changed chan struct{} // closed and replaced whenever next or slot advances
}

func newLogIndex() *logIndex { return &logIndex{changed: make(chan struct{})} }

// publish appends the slots of one apply round and wakes every waiter.
func (x *logIndex) publish(slots []slotOffsets, nextOffset, nextSlot uint64) {
	x.mu.Lock()
	x.slots = append(x.slots, slots...)
	x.next, x.slot = nextOffset, nextSlot
	close(x.changed)
	x.changed = make(chan struct{})
	x.mu.Unlock()
}

// reset restarts the index at a snapshot: offsets below nextOffset are gone.
func (x *logIndex) reset(nextOffset, nextSlot uint64) {
	x.mu.Lock()
	x.slots = nil
	x.first, x.next, x.slot = nextOffset, nextOffset, nextSlot
	close(x.changed)
	x.changed = make(chan struct{})
	x.mu.Unlock()
}

// trimBelow forgets the slots below slot (compacted) and returns the new first offset.
func (x *logIndex) trimBelow(slot uint64) uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	i := sort.Search(len(x.slots), func(i int) bool { return x.slots[i].slot >= slot })
	if i == len(x.slots) && slot <= x.slot {
		// Every indexed slot is below slot: so is every applied offset.
		x.first = max(x.first, x.next)
	}
	if i > 0 {
		last := x.slots[i-1]
		x.first = max(x.first, last.first+uint64(last.count))
		x.slots = append(x.slots[:0:0], x.slots[i:]...)
	}
	return x.first
}

// position is where an offset lives.
type position struct {
	slotOffsets
	want uint64
}

func (x *logIndex) find(offset uint64) (position, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if offset < x.first {
		return position{}, fmt.Errorf("%w: offset %d, oldest retained is %d", ErrCompacted, offset, x.first)
	}
	if offset >= x.next {
		return position{}, fmt.Errorf("%w: offset %d, next is %d", ErrNotApplied, offset, x.next)
	}
	i := sort.Search(len(x.slots), func(i int) bool {
		s := &x.slots[i]
		return s.first+uint64(s.count) > offset
	})
	if i == len(x.slots) || x.slots[i].first > offset {
		return position{}, fmt.Errorf("%w: offset %d is not indexed", ErrCompacted, offset)
	}
	return position{slotOffsets: x.slots[i], want: offset}, nil
}

// offsetAt returns the offset of the command at (slot, index), if it took one.
func (x *logIndex) offsetAt(slot uint64, index uint32) (uint64, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if slot >= x.slot {
		return 0, fmt.Errorf("%w: slot %d, next is %d", ErrNotApplied, slot, x.slot)
	}
	i := sort.Search(len(x.slots), func(i int) bool { return x.slots[i].slot >= slot })
	if i == len(x.slots) || x.slots[i].slot != slot {
		return 0, fmt.Errorf("%w: slot %d is not indexed", ErrCompacted, slot)
	}
	s := &x.slots[i]
	skipped := uint32(0)
	for _, k := range s.skip {
		if k == index {
			return 0, fmt.Errorf("pipeline: slot %d index %d took no offset (a duplicate or a marker)", slot, index)
		}
		if k < index {
			skipped++
		}
	}
	if index-skipped >= s.count {
		return 0, fmt.Errorf("pipeline: slot %d has no command at index %d", slot, index)
	}
	return s.first + uint64(index-skipped), nil
}

// offsetsThrough returns how many offsets the commands at or before (slot, index) took.
func (x *logIndex) offsetsThrough(slot uint64, index uint32) (uint64, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if slot >= x.slot {
		return 0, fmt.Errorf("%w: slot %d, next is %d", ErrNotApplied, slot, x.slot)
	}
	i := sort.Search(len(x.slots), func(i int) bool { return x.slots[i].slot >= slot })
	if i == len(x.slots) || x.slots[i].slot != slot {
		if i == len(x.slots) {
			return x.next, nil
		}
		return x.slots[i].first, nil
	}
	s := &x.slots[i]
	took := uint64(0)
	for k := uint32(0); k <= index && took < uint64(s.count); k++ {
		if !contains(s.skip, k) {
			took++
		}
	}
	return s.first + took, nil
}

func contains(xs []uint32, v uint32) bool {
	for _, x := range xs {
		if x == v {
			return true
		}
	}
	return false
}

// LogPosition is the apply stage's published position.
type LogPosition struct {
	First uint64 // oldest offset still readable (older ones are compacted)
	Next  uint64 // offsets below it are applied
	Slot  uint64 // slots below it are applied
}

// Position returns the applied log's bounds.
func (n *Node) Position() LogPosition {
	x := n.index
	x.mu.Lock()
	defer x.mu.Unlock()
	return LogPosition{First: x.first, Next: x.next, Slot: x.slot}
}

// WaitApplied blocks until the apply stage has applied every offset below offset and every
// slot below slot (either may be 0), ctx ends, or the node stops.
func (n *Node) WaitApplied(ctx context.Context, offset, slot uint64) error {
	for {
		x := n.index
		x.mu.Lock()
		done := x.next >= offset && x.slot >= slot
		ch := x.changed
		x.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.applyDone:
			return ErrStopped
		}
	}
}

// OffsetAt returns the offset taken by the command applied at (slot, index).
func (n *Node) OffsetAt(slot uint64, index uint32) (uint64, error) {
	return n.index.offsetAt(slot, index)
}

// OffsetsThrough returns how many offsets were taken by commands at or before (slot, index):
// every command ordered before that position has an offset below the result.
func (n *Node) OffsetsThrough(slot uint64, index uint32) (uint64, error) {
	return n.index.offsetsThrough(slot, index)
}

// ReadOffsets appends to dst the applied commands from offset on, in order, stopping after
// the slot that brings their payload bytes to bytesMax (at least one command if any is
// applied), at commandsMax, or at the end of the applied log. Payloads are copies.
func (n *Node) ReadOffsets(offset uint64, commandsMax, bytesMax int, dst []AppliedCommand) ([]AppliedCommand, error) {
	sum := 0
	for len(dst) < commandsMax && sum < bytesMax {
		p, err := n.index.find(offset)
		if err != nil {
			if errors.Is(err, ErrNotApplied) && sum > 0 {
				return dst, nil
			}
			if errors.Is(err, ErrNotApplied) && len(dst) > 0 {
				return dst, nil
			}
			return dst, err
		}
		value, err := n.chosenValue(p.slot)
		if err != nil {
			return dst, err
		}
		before := len(dst)
		if dst, err = n.decodeSlot(p, value, commandsMax, dst); err != nil {
			return dst, err
		}
		for _, c := range dst[before:] {
			sum += len(c.Payload)
		}
		offset = p.first + uint64(p.count)
		if len(dst) > before {
			offset = dst[len(dst)-1].Offset + 1
		}
	}
	return dst, nil
}

// decodeSlot appends the commands of p's slot with offsets from p.want on.
func (n *Node) decodeSlot(p position, value []byte, commandsMax int, dst []AppliedCommand) ([]AppliedCommand, error) {
	lim := n.cfg.Network.Limits
	var it codec.BatchIter
	if err := it.Reset(value, &lim); err != nil {
		return dst, fmt.Errorf("pipeline: slot %d: %w", p.slot, err)
	}
	offset := p.first
	for it.Next() && len(dst) < commandsMax {
		index := uint32(it.Index())
		if contains(p.skip, index) {
			continue
		}
		if offset >= p.want {
			cmd := it.Command()
			dst = append(dst, AppliedCommand{Offset: offset, Slot: p.slot, Index: index,
				ClientID: cmd.ClientID, Seq: cmd.Seq, Payload: append([]byte(nil), cmd.Payload...)})
		}
		offset++
		if offset >= p.first+uint64(p.count) {
			break
		}
	}
	if err := it.Err(); err != nil {
		return dst, fmt.Errorf("pipeline: slot %d: %w", p.slot, err)
	}
	return dst, nil
}

// chosenValue returns slot's chosen value from the in-memory cache, else from the WAL.
func (n *Node) chosenValue(slot uint64) ([]byte, error) {
	if v, ok := n.cachedChosen(slot); ok {
		return v, nil
	}
	return n.walValue(slot)
}

// walValue reads slot's latest record from the WAL: one positioned read (wal.ReadKey), for
// slots older than the cache.
func (n *Node) walValue(slot uint64) ([]byte, error) {
	r, err := n.wal.ReadKey(slot)
	switch {
	case errors.Is(err, wal.ErrKeyNotFound):
		return nil, fmt.Errorf("%w: slot %d is in neither the cache nor the WAL", ErrCompacted, slot)
	case err != nil:
		return nil, fmt.Errorf("%w: read slot %d: %w", ErrWAL, slot, err)
	case r.Type != recordEntry || len(r.Payload) < entryHeaderSize:
		return nil, fmt.Errorf("%w: slot %d: record of type %d, %d bytes, is not an entry", ErrWAL, slot, r.Type, len(r.Payload))
	}
	return r.Payload[entryHeaderSize:], nil
}

// applyRound collects what one apply round did, for the index and the Application. It lives
// on the apply goroutine.
type applyRound struct {
	slots      []slotOffsets
	nextOffset uint64
	commands   uint64 // commands seen this round (for the snapshot trigger)
	bytes      int64  // their payload bytes
}

// command records the command at (slot, index); it takes an offset unless it is a duplicate
// or a marker. Slots must come in order.
func (a *applyRound) command(app Application, slot uint64, index uint32, cmd codec.Command, dup bool) (offset uint64, took bool) {
	if len(a.slots) == 0 || a.slots[len(a.slots)-1].slot != slot {
		a.slots = append(a.slots, slotOffsets{slot: slot, first: a.nextOffset})
	}
	s := &a.slots[len(a.slots)-1]
	a.commands++ // markers and duplicates too: they grow the index until the next snapshot
	if dup || IsMarker(cmd.Payload) {
		s.skip = append(s.skip, index)
		return 0, false
	}
	offset = a.nextOffset
	a.nextOffset++
	s.count++
	a.bytes += int64(len(cmd.Payload))
	if app != nil {
		app.Apply(AppliedCommand{Offset: offset, Slot: slot, Index: index,
			ClientID: cmd.ClientID, Seq: cmd.Seq, Payload: cmd.Payload})
	}
	return offset, true
}
