package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// hardStateFile keeps the last SaveHardState value in two alternating slots (doc.go).
type hardStateFile struct {
	mu       sync.Mutex
	file     File
	sequence uint64 // of the value in value; the next save writes slot (sequence+1)%2
	value    []byte
	slot     []byte // reused encoding buffer
}

func (h *hardStateFile) open(fs FS, dir string) error {
	path := joinPath(dir, hardStateFileName)
	f, err := fs.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = createHardStateFile(fs, dir)
	}
	if err != nil {
		return fmt.Errorf("wal: opening %s: %w", hardStateFileName, err)
	}
	h.file = f
	h.slot = make([]byte, hardStateSlotBytes)
	contents := make([]byte, 2*hardStateSlotBytes)
	n, err := f.ReadAt(contents, 0)
	if n < len(contents) && err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("wal: reading %s: %w", hardStateFileName, err)
	}
	contents = contents[:n]
	var valid [2]bool
	var sequences [2]uint64
	var values [2][]byte
	for i := range 2 {
		start := min(i*hardStateSlotBytes, len(contents))
		end := min(start+hardStateSlotBytes, len(contents))
		sequences[i], values[i], valid[i] = decodeHardStateSlot(contents[start:end])
	}
	switch {
	case valid[0] && valid[1]:
		best := 0
		if sequences[1] > sequences[0] {
			best = 1
		}
		h.sequence, h.value = sequences[best], values[best]
	case valid[0] || valid[1]:
		best := 0
		if valid[1] {
			best = 1
		}
		h.sequence, h.value = sequences[best], values[best]
	default:
		// No valid slot. Only a torn first save (sequence 1 goes to slot 1) with slot 0 still
		// untouched is a crash; anything else lost an acknowledged value.
		if !isZero(contents[:min(hardStateSlotBytes, len(contents))]) {
			return &CorruptionError{File: hardStateFileName, Offset: 0,
				Reason: "no valid hard-state slot"}
		}
	}
	return nil
}

func createHardStateFile(fs FS, dir string) (File, error) {
	temporary := joinPath(dir, hardStateFileName+temporarySuffix)
	f, err := fs.OpenFile(temporary, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(2 * hardStateSlotBytes)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = fs.Rename(temporary, joinPath(dir, hardStateFileName))
	}
	if err == nil {
		err = fs.SyncDir(dir)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func decodeHardStateSlot(b []byte) (sequence uint64, value []byte, ok bool) {
	if len(b) < hardStateSlotHeaderSize {
		return 0, nil, false
	}
	sequence = binary.LittleEndian.Uint64(b[4:])
	length := binary.LittleEndian.Uint32(b[12:])
	if sequence == 0 || uint64(length) > uint64(len(b)-hardStateSlotHeaderSize) {
		return 0, nil, false
	}
	end := hardStateSlotHeaderSize + int(length)
	if checksum(b[4:end]) != binary.LittleEndian.Uint32(b) {
		return 0, nil, false
	}
	return sequence, append([]byte(nil), b[hardStateSlotHeaderSize:end]...), true
}

// SaveHardState durably replaces the hard state with b (at most HardStateBytesMax bytes).
// It is independent of the record queue: it neither waits for nor orders against appends.
func (w *WAL) SaveHardState(b []byte) error {
	if len(b) > HardStateBytesMax {
		return fmt.Errorf("%w: hard state of %d bytes, at most %d", ErrTooLarge, len(b),
			HardStateBytesMax)
	}
	w.mu.Lock()
	closing := w.closing
	w.mu.Unlock()
	if closing {
		return ErrClosed
	}
	return w.hardState.save(b)
}

func (h *hardStateFile) save(b []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file == nil {
		return ErrClosed
	}
	sequence := h.sequence + 1
	clear(h.slot)
	binary.LittleEndian.PutUint64(h.slot[4:], sequence)
	binary.LittleEndian.PutUint32(h.slot[12:], uint32(len(b)))
	copy(h.slot[hardStateSlotHeaderSize:], b)
	end := hardStateSlotHeaderSize + len(b)
	binary.LittleEndian.PutUint32(h.slot, checksum(h.slot[4:end]))
	offset := int64(sequence%2) * hardStateSlotBytes
	if _, err := h.file.WriteAt(h.slot, offset); err != nil {
		return fmt.Errorf("wal: writing hard state: %w", err)
	}
	if err := h.file.Sync(); err != nil {
		// The slot may be torn; the next save rewrites the same slot, the other stays intact.
		return fmt.Errorf("wal: syncing hard state: %w", err)
	}
	h.sequence = sequence
	h.value = append(h.value[:0:0], b...)
	return nil
}

// HardState returns a copy of the last saved (or recovered) hard state; nil if none.
func (w *WAL) HardState() []byte {
	w.hardState.mu.Lock()
	defer w.hardState.mu.Unlock()
	if w.hardState.sequence == 0 {
		return nil
	}
	return append([]byte{}, w.hardState.value...)
}

func (h *hardStateFile) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file == nil {
		return nil
	}
	err := h.file.Close()
	h.file = nil
	return err
}
