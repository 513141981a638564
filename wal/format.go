package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// These constants are part of the on-disk format (see doc.go).
const (
	segmentMagic            = "mpwalseg"
	formatVersion           = 2 // version 1: no salt (record checksums unmasked), no end marker
	formatVersionMin        = 1 // the oldest version this build still reads
	segmentHeaderSize       = 32
	batchHeaderSize         = 20
	recordHeaderSize        = 17
	firstRecordIndex        = 1
	segmentSuffix           = ".wal"
	temporarySuffix         = ".tmp"
	spareSuffix             = ".spare"
	segmentNameDigits       = 20
	hardStateFileName       = "hardstate"
	lockFileName            = "LOCK"
	hardStateSlotBytes      = 4096
	hardStateSlotHeaderSize = 16
	// pageBytes is the unit the writer pads each write to (with zeros after the end marker),
	// so a write never covers part of a page: the kernel then never reads a page of a
	// recycled segment from disk just to merge the write into it.
	pageBytes = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Record is one log entry. For the same Key a later record supersedes an earlier one.
type Record struct {
	Type    uint8
	Key     uint64
	Payload []byte
}

// encodedSize is the number of bytes r takes inside a batch.
func encodedSize(r *Record) int { return recordHeaderSize + len(r.Payload) }

// appendRecord encodes r at the end of dst. The checksum is computed over the bytes already
// in place, so one pass covers length, type, key and payload. It is stored unmasked; the
// writer XORs in the salt of the segment the record lands in (maskRecordChecksums), which
// is not known until then.
func appendRecord(dst []byte, r *Record) []byte {
	start := len(dst)
	var header [recordHeaderSize]byte
	binary.LittleEndian.PutUint32(header[4:], uint32(len(r.Payload)))
	header[8] = r.Type
	binary.LittleEndian.PutUint64(header[9:], r.Key)
	dst = append(dst, header[:]...)
	dst = append(dst, r.Payload...)
	binary.LittleEndian.PutUint32(dst[start:], checksum(dst[start+4:]))
	return dst
}

// maskRecordChecksums XORs salt into the checksum of every record in body (whole records,
// as appendRecord encoded them). A record left in a recycled file by its previous life was
// masked with that life's salt and so fails the check under the new one.
func maskRecordChecksums(body []byte, salt uint32) {
	if salt == 0 {
		return
	}
	for offset := 0; offset < len(body); {
		length := binary.LittleEndian.Uint32(body[offset+4:])
		binary.LittleEndian.PutUint32(body[offset:], binary.LittleEndian.Uint32(body[offset:])^salt)
		offset += recordHeaderSize + int(length)
	}
}

// decodeRecord reads the record at the start of buf, whose checksum was masked with salt.
// The payload aliases buf. On failure it returns the reason; n is then meaningless.
func decodeRecord(buf []byte, salt uint32) (r Record, n int, reason string) {
	if len(buf) < recordHeaderSize {
		return r, 0, fmt.Sprintf("record header needs %d bytes, batch has %d left",
			recordHeaderSize, len(buf))
	}
	length := binary.LittleEndian.Uint32(buf[4:])
	if uint64(length) > uint64(len(buf)-recordHeaderSize) {
		return r, 0, fmt.Sprintf("record length %d runs past the batch end", length)
	}
	n = recordHeaderSize + int(length)
	if checksum(buf[4:n])^salt != binary.LittleEndian.Uint32(buf) {
		return r, 0, "record checksum mismatch"
	}
	r.Type = buf[8]
	r.Key = binary.LittleEndian.Uint64(buf[9:])
	r.Payload = buf[recordHeaderSize:n:n]
	return r, n, ""
}

type batchHeader struct {
	bodyBytes  uint32
	records    uint32
	firstIndex uint64
}

func putBatchHeader(dst []byte, h batchHeader) {
	binary.LittleEndian.PutUint32(dst[4:], h.bodyBytes)
	binary.LittleEndian.PutUint32(dst[8:], h.records)
	binary.LittleEndian.PutUint64(dst[12:], h.firstIndex)
	binary.LittleEndian.PutUint32(dst, checksum(dst[4:batchHeaderSize]))
}

// isEndMarker reports whether h is the end marker the writer puts after every batch: no
// body, no records.
func (h batchHeader) isEndMarker() bool { return h.bodyBytes == 0 && h.records == 0 }

// parseBatchHeader checks the header's own consistency; the caller checks it against the
// file (length, expected index). An end marker parses with reason endMarkerReason.
func parseBatchHeader(b []byte) (h batchHeader, reason string) {
	if isZero(b[:batchHeaderSize]) {
		return h, "zero batch header (end of written data)"
	}
	if checksum(b[4:batchHeaderSize]) != binary.LittleEndian.Uint32(b) {
		return h, "batch header checksum mismatch"
	}
	h.bodyBytes = binary.LittleEndian.Uint32(b[4:])
	h.records = binary.LittleEndian.Uint32(b[8:])
	h.firstIndex = binary.LittleEndian.Uint64(b[12:])
	if h.isEndMarker() {
		return h, endMarkerReason
	}
	if h.bodyBytes == 0 || h.records == 0 {
		return h, "batch header with zero length or zero records"
	}
	if uint64(h.records)*recordHeaderSize > uint64(h.bodyBytes) {
		return h, fmt.Sprintf("batch of %d records cannot fit in %d bytes", h.records, h.bodyBytes)
	}
	return h, ""
}

// endMarkerReason is why a scan stops at an end marker.
const endMarkerReason = "end marker (end of written data)"

// batchSummary is what a verified batch body contributes to its segment.
type batchSummary struct {
	minKey, maxKey uint64
}

// verifyBatchBody checks that body holds exactly records valid records (checksums masked
// with salt) and calls visit for each (visit may be nil). badOffset is the offset within
// body of the failing record.
func verifyBatchBody(body []byte, records uint32, salt uint32, visit func(Record) error) (
	s batchSummary, badOffset int, reason string, err error) {
	s.minKey = ^uint64(0)
	offset := 0
	for i := uint32(0); i < records; i++ {
		r, n, why := decodeRecord(body[offset:], salt)
		if why != "" {
			return s, offset, why, nil
		}
		s.minKey = min(s.minKey, r.Key)
		s.maxKey = max(s.maxKey, r.Key)
		if visit != nil {
			if err := visit(r); err != nil {
				return s, offset, "", err
			}
		}
		offset += n
	}
	if offset != len(body) {
		return s, offset, fmt.Sprintf("%d bytes after the batch's %d records", len(body)-offset,
			records), nil
	}
	return s, 0, "", nil
}

// encodeSegmentHeader returns a version-2 header followed by an end marker at the segment's
// first batch position, so that a new segment (recycled or not) reads as empty.
func encodeSegmentHeader(firstIndex uint64, salt uint32) []byte {
	b := make([]byte, segmentHeaderSize+batchHeaderSize)
	copy(b, segmentMagic)
	binary.LittleEndian.PutUint32(b[12:], formatVersion)
	binary.LittleEndian.PutUint64(b[16:], firstIndex)
	binary.LittleEndian.PutUint32(b[24:], salt)
	binary.LittleEndian.PutUint32(b[8:], checksum(b[12:segmentHeaderSize]))
	putBatchHeader(b[segmentHeaderSize:], batchHeader{firstIndex: firstIndex})
	return b
}

// parseSegmentHeader returns the header's first index and salt (zero for version 1).
func parseSegmentHeader(b []byte) (firstIndex uint64, salt uint32, reason string) {
	if len(b) < segmentHeaderSize {
		return 0, 0, fmt.Sprintf("file of %d bytes is shorter than the segment header", len(b))
	}
	if string(b[:8]) != segmentMagic {
		return 0, 0, "bad segment magic"
	}
	if checksum(b[12:segmentHeaderSize]) != binary.LittleEndian.Uint32(b[8:]) {
		return 0, 0, "segment header checksum mismatch"
	}
	v := binary.LittleEndian.Uint32(b[12:])
	if v < formatVersionMin || v > formatVersion {
		return 0, 0, fmt.Sprintf("segment format version %d, this build reads %d..%d", v,
			formatVersionMin, formatVersion)
	}
	if v >= 2 {
		salt = binary.LittleEndian.Uint32(b[24:])
	}
	return binary.LittleEndian.Uint64(b[16:]), salt, ""
}

func segmentName(firstIndex uint64) string {
	return fmt.Sprintf("%0*d%s", segmentNameDigits, firstIndex, segmentSuffix)
}

// parseSegmentName returns ok=false for names that are not segments at all.
func parseSegmentName(name string) (firstIndex uint64, ok bool) {
	digits, found := strings.CutSuffix(name, segmentSuffix)
	if !found || len(digits) != segmentNameDigits {
		return 0, false
	}
	index, err := strconv.ParseUint(digits, 10, 64)
	return index, err == nil
}

var zeroPage [4096]byte

// isZero compares page-sized pieces with bytes.Equal, which is vectorised: recovery checks
// whole preallocated tails.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
