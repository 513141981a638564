package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// ErrKeyNotFound: ReadKey found no record for the key (never written, or its segment was
// truncated away).
var ErrKeyNotFound = errors.New("wal: no record for key")

// keyLocation is where the latest record of one key lies.
type keyLocation struct {
	segment uint64 // the segment's first index: its name
	offset  int64  // the record's first byte in the segment file
	size    uint32 // the record's bytes: header and payload
}

// keyIndex maps every key to its latest durable record (Options.IndexKeys), so ReadKey costs
// one positioned read instead of a scan of the log. It costs about 50 bytes of memory per live
// key and a map update per record on the writer goroutine after each fdatasync.
type keyIndex struct {
	mu   sync.RWMutex
	keys map[uint64]keyLocation
}

func newKeyIndex() *keyIndex { return &keyIndex{keys: make(map[uint64]keyLocation)} }

// addBatch records the records of one durable batch body, which starts at bodyOffset in
// segment. The body was verified (recovery) or encoded by this process (the writer), so its
// records are well formed; a record that is not stops the walk rather than index garbage.
func (x *keyIndex) addBatch(body []byte, bodyOffset int64, segment uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for at := 0; at+recordHeaderSize <= len(body); {
		length := int(binary.LittleEndian.Uint32(body[at+4:]))
		size := recordHeaderSize + length
		if length > len(body)-at-recordHeaderSize {
			return
		}
		key := binary.LittleEndian.Uint64(body[at+9:])
		x.keys[key] = keyLocation{segment: segment, offset: bodyOffset + int64(at), size: uint32(size)}
		at += size
	}
}

// dropSegments forgets every key whose latest record lies in a removed segment.
func (x *keyIndex) dropSegments(removed map[uint64]bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for key, loc := range x.keys {
		if removed[loc.segment] {
			delete(x.keys, key)
		}
	}
}

func (x *keyIndex) lookup(key uint64) (keyLocation, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	loc, ok := x.keys[key]
	return loc, ok
}

// IndexedKeys returns how many keys the index holds (0 without Options.IndexKeys).
func (w *WAL) IndexedKeys() int {
	if w.index == nil {
		return 0
	}
	w.index.mu.RLock()
	defer w.index.mu.RUnlock()
	return len(w.index.keys)
}

// Locate names where the latest durable record of key lies ("<segment file> at offset N"),
// for error messages; ok is false without Options.IndexKeys or when no record of key is held.
func (w *WAL) Locate(key uint64) (where string, ok bool) {
	if w.index == nil {
		return "", false
	}
	loc, ok := w.index.lookup(key)
	if !ok {
		return "", false
	}
	w.segmentsMu.Lock()
	defer w.segmentsMu.Unlock()
	for _, s := range w.segments {
		if s.firstIndex == loc.segment {
			return fmt.Sprintf("%s at offset %d", w.path(s.name), loc.offset), true
		}
	}
	return "", false
}

// ReadKey returns the latest durable record for key with one positioned read of its segment,
// its checksum verified. It needs Options.IndexKeys; ErrKeyNotFound when no record for key is
// in the log. Safe for concurrent use with the writer, TruncateBefore and other readers; the
// payload is the caller's.
func (w *WAL) ReadKey(key uint64) (Record, error) {
	if w.index == nil {
		return Record{}, fmt.Errorf("wal: ReadKey needs Options.IndexKeys")
	}
	w.truncateMu.RLock() // the segment cannot be removed while it is read
	defer w.truncateMu.RUnlock()
	loc, ok := w.index.lookup(key)
	if !ok {
		return Record{}, fmt.Errorf("%w %d", ErrKeyNotFound, key)
	}
	w.segmentsMu.Lock()
	var info segmentInfo
	for _, s := range w.segments {
		if s.firstIndex == loc.segment {
			info = *s
		}
	}
	w.segmentsMu.Unlock()
	if info.name == "" {
		return Record{}, fmt.Errorf("%w %d (its segment is gone)", ErrKeyNotFound, key)
	}
	f, err := w.openSegment(&info, false)
	if err != nil {
		return Record{}, err
	}
	defer f.Close()
	buf := make([]byte, loc.size)
	if err := readFull(f, buf, loc.offset); err != nil {
		return Record{}, fmt.Errorf("wal: reading key %d in %s at %d: %w", key, info.name, loc.offset, err)
	}
	r, n, why := decodeRecord(buf, info.salt)
	if why != "" || n != len(buf) || r.Key != key {
		return Record{}, &CorruptionError{File: info.name, Offset: loc.offset,
			Reason: fmt.Sprintf("record of key %d read back: %s (key %d, %d of %d bytes)", key, why, r.Key, n, len(buf))}
	}
	return r, nil
}
