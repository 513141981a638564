package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// segmentInfo describes one segment file. The writer updates the active segment's fields
// under WAL.segmentsMu; the others never change.
type segmentInfo struct {
	name       string // base name
	firstIndex uint64
	salt       uint32 // masks the record checksums; 0 in version-1 segments
	records    uint64
	minKey     uint64 // meaningful only when records > 0
	maxKey     uint64
	end        int64 // offset after the last durable batch
}

func (s *segmentInfo) addKeys(minKey, maxKey uint64, records uint64) {
	if s.records == 0 {
		s.minKey, s.maxKey = minKey, maxKey
	} else {
		s.minKey = min(s.minKey, minKey)
		s.maxKey = max(s.maxKey, maxKey)
	}
	s.records += records
}

// scanStop says why scanning a segment ended before the end of the file.
type scanStop struct {
	batchOffset int64 // start of the batch that is not whole and valid
	offset      int64 // offset of the failing header or record
	reason      string
	endMarker   bool // stopped at a valid end marker carrying the expected index
}

// scanSegment verifies every batch of a segment from just after its header up to size,
// calling visit (may be nil) for each record of each valid batch, in order. A batch is
// visited only once it is known to be whole, so visit never sees records of a torn batch.
// It returns the summary of the valid prefix and, if that prefix ends before size, why.
func scanSegment(f File, info *segmentInfo, size int64, buffer *[]byte,
	visit func(Record) error, keys *keyIndex) (*scanStop, error) {
	position := int64(segmentHeaderSize)
	index := info.firstIndex
	var header [batchHeaderSize]byte
	for position < size {
		if size-position < batchHeaderSize {
			return &scanStop{position, position, "file ends inside a batch header", false}, nil
		}
		if err := readFull(f, header[:], position); err != nil {
			return nil, err
		}
		h, reason := parseBatchHeader(header[:])
		if reason == endMarkerReason {
			if h.firstIndex == index {
				return &scanStop{position, position, reason, true}, nil
			}
			reason = fmt.Sprintf("end marker at record %d, want %d", h.firstIndex, index)
		}
		if reason == "" && h.firstIndex != index {
			reason = fmt.Sprintf("batch starts at record %d, want %d", h.firstIndex, index)
		}
		if reason == "" && int64(h.bodyBytes) > size-position-batchHeaderSize {
			reason = fmt.Sprintf("batch of %d bytes runs past the end of the file", h.bodyBytes)
		}
		if reason != "" {
			return &scanStop{position, position, reason, false}, nil
		}
		body := grow(buffer, int(h.bodyBytes))
		if err := readFull(f, body, position+batchHeaderSize); err != nil {
			return nil, err
		}
		summary, bad, reason, err := verifyBatchBody(body, h.records, info.salt, nil)
		if err != nil {
			return nil, err
		}
		if reason != "" {
			return &scanStop{position, position + batchHeaderSize + int64(bad), reason, false}, nil
		}
		if visit != nil {
			if _, _, _, err := verifyBatchBody(body, h.records, info.salt, visit); err != nil {
				return nil, err
			}
		}
		if keys != nil {
			keys.addBatch(body, position+batchHeaderSize, info.firstIndex)
		}
		info.addKeys(summary.minKey, summary.maxKey, uint64(h.records))
		index += uint64(h.records)
		position += batchHeaderSize + int64(h.bodyBytes)
		info.end = position
	}
	return nil, nil
}

// findLaterBatch looks for a whole, valid batch (record checksums masked with salt) starting
// anywhere after from whose first index is above afterIndex: proof that the batch at from
// was synced before it. End markers prove nothing and are skipped. It also reports whether
// anything after from is non-zero. The tail is read in one piece; this runs only when the
// last segment does not end in zeros.
func findLaterBatch(f File, size, from int64, afterIndex uint64, salt uint32) (found bool, at int64,
	nonZero bool, err error) {
	// The common case is the zero fill of a preallocated segment: check it in bounded
	// chunks before reading the tail whole.
	chunk := make([]byte, min(size-from, 1<<20))
	for offset := from; ; offset += int64(len(chunk)) {
		if offset >= size {
			return false, 0, false, nil
		}
		piece := chunk[:min(int64(len(chunk)), size-offset)]
		if err := readFull(f, piece, offset); err != nil {
			return false, 0, false, err
		}
		if !isZero(piece) {
			break
		}
	}
	tail := make([]byte, size-from)
	if err := readFull(f, tail, from); err != nil {
		return false, 0, false, err
	}
	for i := 1; i+batchHeaderSize <= len(tail); i++ {
		candidate := tail[i:]
		bodyBytes := binary.LittleEndian.Uint32(candidate[4:])
		records := binary.LittleEndian.Uint32(candidate[8:])
		firstIndex := binary.LittleEndian.Uint64(candidate[12:])
		if bodyBytes == 0 || records == 0 || firstIndex <= afterIndex ||
			uint64(bodyBytes) > uint64(len(candidate)-batchHeaderSize) {
			continue
		}
		if _, reason := parseBatchHeader(candidate); reason != "" {
			continue
		}
		body := candidate[batchHeaderSize : batchHeaderSize+int(bodyBytes)]
		if _, _, reason, _ := verifyBatchBody(body, records, salt, nil); reason == "" {
			return true, from + int64(i), true, nil
		}
	}
	return false, 0, true, nil
}

// zeroFrom reports whether every byte of f in [from, size) is zero, reading bounded chunks.
func zeroFrom(f File, from, size int64) (bool, error) {
	if from >= size {
		return true, nil
	}
	chunk := make([]byte, min(size-from, 1<<20))
	for offset := from; offset < size; offset += int64(len(chunk)) {
		piece := chunk[:min(int64(len(chunk)), size-offset)]
		if err := readFull(f, piece, offset); err != nil {
			return false, err
		}
		if !isZero(piece) {
			return false, nil
		}
	}
	return true, nil
}

// recoverSegments checks every segment in w.options.Dir, repairs a torn tail of the last one
// and leaves w.segments describing them and w.active open on the last one.
func (w *WAL) recoverSegments() error {
	names, err := w.fs.ReadDir(w.options.Dir)
	if err != nil {
		return fmt.Errorf("wal: reading %s: %w", w.options.Dir, err)
	}
	var segments []*segmentInfo
	removedTemporary := false
	for _, name := range names {
		if index, ok := parseSegmentName(name); ok {
			segments = append(segments, &segmentInfo{name: name, firstIndex: index})
			continue
		}
		if len(name) > len(temporarySuffix) && name[len(name)-len(temporarySuffix):] == temporarySuffix {
			if err := w.fs.Remove(w.path(name)); err != nil {
				return fmt.Errorf("wal: removing leftover %s: %w", name, err)
			}
			removedTemporary = true
		}
	}
	removedSpares, err := w.collectSpares(names)
	if err != nil {
		return err
	}
	if removedTemporary || removedSpares {
		if err := w.fs.SyncDir(w.options.Dir); err != nil {
			return fmt.Errorf("wal: syncing %s: %w", w.options.Dir, err)
		}
	}
	slices.SortFunc(segments, func(a, b *segmentInfo) int {
		return compareUint64(a.firstIndex, b.firstIndex)
	})
	if len(segments) == 0 {
		return w.createFirstSegment()
	}
	var buffer []byte
	for i, info := range segments {
		last := i == len(segments)-1
		if i > 0 {
			previous := segments[i-1]
			if want := previous.firstIndex + previous.records; info.firstIndex != want {
				return &CorruptionError{File: info.name, Offset: 0, Reason: fmt.Sprintf(
					"segment starts at record %d but %s ends before record %d "+
						"(missing or out-of-order segment)", info.firstIndex, previous.name, want)}
			}
		}
		f, err := w.openSegment(info, last)
		if err != nil {
			return err
		}
		if err := w.recoverSegment(f, info, last, &buffer); err != nil {
			f.Close()
			return err
		}
		if !last {
			if err := f.Close(); err != nil {
				return fmt.Errorf("wal: closing %s: %w", info.name, err)
			}
			continue
		}
		w.active = f
	}
	w.segments = segments
	lastInfo := segments[len(segments)-1]
	w.nextIndex = lastInfo.firstIndex + lastInfo.records
	w.activeSalt = lastInfo.salt
	return nil
}

func (w *WAL) openSegment(info *segmentInfo, writable bool) (File, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := w.fs.OpenFile(w.path(info.name), flag, 0)
	if err != nil {
		return nil, fmt.Errorf("wal: opening %s: %w", info.name, err)
	}
	return f, nil
}

// recoverSegment verifies one segment; for the last one it decides between a torn tail (cut
// it) and corruption (refuse), as doc.go describes.
func (w *WAL) recoverSegment(f File, info *segmentInfo, last bool, buffer *[]byte) error {
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("wal: size of %s: %w", info.name, err)
	}
	header := make([]byte, min(size, segmentHeaderSize))
	if err := readFull(f, header, 0); err != nil {
		return fmt.Errorf("wal: reading %s: %w", info.name, err)
	}
	firstIndex, salt, reason := parseSegmentHeader(header)
	if reason == "" && firstIndex != info.firstIndex {
		reason = fmt.Sprintf("header says first record %d, name says %d", firstIndex, info.firstIndex)
	}
	if reason != "" {
		return &CorruptionError{File: info.name, Offset: 0, Reason: reason}
	}
	info.salt = salt
	info.end = segmentHeaderSize
	stop, err := scanSegment(f, info, size, buffer, nil, w.index)
	if err != nil {
		return fmt.Errorf("wal: reading %s: %w", info.name, err)
	}
	if stop == nil {
		return nil
	}
	if !last {
		return &CorruptionError{File: info.name, Offset: stop.offset,
			Reason: stop.reason + " (in a closed segment)"}
	}
	if stop.endMarker {
		// The writer's end marker followed only by zeros (a fresh or zero-filled segment) is
		// the normal end, decided without scanning the tail byte by byte (64 MiB of it took
		// seconds under the race detector on every restart and every offline read).
		zero, err := zeroFrom(f, stop.batchOffset+batchHeaderSize, size)
		if err != nil {
			return fmt.Errorf("wal: reading %s: %w", info.name, err)
		}
		if zero {
			return nil
		}
	}
	found, at, nonZero, err := findLaterBatch(f, size, stop.batchOffset,
		info.firstIndex+info.records, info.salt)
	if err != nil {
		return fmt.Errorf("wal: reading %s: %w", info.name, err)
	}
	if found {
		return &CorruptionError{File: info.name, Offset: stop.offset, Reason: fmt.Sprintf(
			"%s, and a valid later batch at offset %d shows this one was synced: not a torn write",
			stop.reason, at)}
	}
	if stop.endMarker || !nonZero {
		// The normal end of the log: the writer's end marker (what follows it in a recycled
		// segment is its previous life), or the zero fill of a version-1 segment.
		return nil
	}
	// Say exactly what goes: the torn batch's own claim (records and bytes, when its header
	// is readable), the first record index lost, and what this segment keeps.
	claimed := "unreadable header"
	var torn [batchHeaderSize]byte
	if size-stop.batchOffset >= batchHeaderSize && readFull(f, torn[:], stop.batchOffset) == nil {
		if h, why := parseBatchHeader(torn[:]); why == "" {
			claimed = fmt.Sprintf("%d records, %d bytes, from index %d", h.records, h.bodyBytes, h.firstIndex)
		} else {
			claimed = why
		}
	}
	w.logger.Warn("wal: cut torn tail of the last segment (a write the crash tore; nothing after it was synced)",
		"file", info.name, "offset", stop.batchOffset, "reason", stop.reason,
		"tornBatch", claimed, "firstLostIndex", info.firstIndex+info.records,
		"recordsKept", info.records, "bytesTruncated", size-stop.batchOffset)
	if err := f.Truncate(stop.batchOffset); err != nil {
		return fmt.Errorf("wal: truncating torn tail of %s: %w", info.name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: syncing %s: %w", info.name, err)
	}
	return nil
}

// readFull reads len(b) bytes at offset; a short file is io.ErrUnexpectedEOF.
func readFull(f File, b []byte, offset int64) error {
	n, err := f.ReadAt(b, offset)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// grow returns (*buffer)[:n], reallocating only when the buffer is too small.
func grow(buffer *[]byte, n int) []byte {
	if cap(*buffer) < n {
		*buffer = make([]byte, n)
	}
	return (*buffer)[:n]
}

func compareUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
