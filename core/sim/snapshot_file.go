package sim

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// A snapshot file is the simulated application's snapshot as bytes, what the driver's
// effects read, write, verify and install (the pipeline's own snapshot files play this part in
// the server). Little-endian:
//
//	slot      u64  the snapshot covers every slot below it: one value per slot follows
//	offset    u64  the next dense offset
//	sessions  u32 length, then core.Sessions.MarshalBinary
//	applied   u32 count, then per command: client u64, seq u64, slot u64, index u32, offset u64
//	values    per slot below slot: u32 length, then the value
//	checksum  u32  CRC-32C (Castagnoli) of every byte before it
//
// The trailing checksum is the file's own format check (a transfer is verified against the
// sender's whole-file checksum too); a file that fails it is never restored from.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errSnapshotFile: a snapshot file that does not parse or fails its checksum.
var errSnapshotFile = errors.New("sim: damaged snapshot file")

// snapshotAppliedBytes is one applied command's record in the file.
const snapshotAppliedBytes = 8 + 8 + 8 + 4 + 8

// snapshotFile is a durable snapshot on a simulated disk: its bytes and their CRC-32C (what a
// sender puts in every chunk).
type snapshotFile struct {
	slot     uint64
	data     []byte
	checksum uint32
}

func newSnapshotFile(data []byte) snapshotFile {
	return snapshotFile{slot: binary.LittleEndian.Uint64(data), data: data, checksum: crc32.Checksum(data, castagnoli)}
}

// encodeSnapshot serialises s; the applied commands in key order, so a state encodes to one
// file whatever the map's order.
func encodeSnapshot(s *snapshot) []byte {
	size := 8 + 8 + 4 + len(s.sessions) + 4 + len(s.appliedAt)*snapshotAppliedBytes + 4
	for _, v := range s.values {
		size += 4 + len(v)
	}
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint64(b, s.slot())
	b = binary.LittleEndian.AppendUint64(b, s.offset)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.sessions)))
	b = append(b, s.sessions...)
	keys := make([]commandKey, 0, len(s.appliedAt))
	for k := range s.appliedAt {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b commandKey) int { return cmp.Or(cmp.Compare(a.client, b.client), cmp.Compare(a.seq, b.seq)) })
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		p := s.appliedAt[k]
		b = binary.LittleEndian.AppendUint64(b, k.client)
		b = binary.LittleEndian.AppendUint64(b, k.seq)
		b = binary.LittleEndian.AppendUint64(b, p.slot)
		b = binary.LittleEndian.AppendUint32(b, p.index)
		b = binary.LittleEndian.AppendUint64(b, p.offset)
	}
	for _, v := range s.values {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if len(b) != size {
		panic(fmt.Sprintf("sim: snapshot of slot %d encoded to %d bytes, sized %d", s.slot(), len(b), size))
	}
	return b
}

// snapshotReader reads a file's fields in order; the first short read sets err.
type snapshotReader struct {
	b   []byte
	err error
}

func (r *snapshotReader) take(n uint64) []byte {
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errSnapshotFile
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *snapshotReader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (r *snapshotReader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

// decodeSnapshot parses a file encodeSnapshot wrote, checking its checksum and every length.
func decodeSnapshot(data []byte) (snapshot, error) {
	var s snapshot
	if len(data) < 4 {
		return s, fmt.Errorf("%w: %d bytes", errSnapshotFile, len(data))
	}
	body := data[:len(data)-4]
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(data[len(body):]); got != want {
		return s, fmt.Errorf("%w: checksum %08x, trailer says %08x", errSnapshotFile, got, want)
	}
	r := snapshotReader{b: body}
	slot := r.u64()
	s.offset = r.u64()
	if sessions := r.take(uint64(r.u32())); len(sessions) > 0 {
		s.sessions = slices.Clone(sessions)
	}
	count := r.u32()
	if r.err == nil && uint64(count)*snapshotAppliedBytes > uint64(len(r.b)) {
		r.err = errSnapshotFile
	}
	if r.err == nil {
		s.appliedAt = make(map[commandKey]position, count)
	}
	for range count {
		if r.err != nil {
			break
		}
		k := commandKey{client: r.u64(), seq: r.u64()}
		s.appliedAt[k] = position{slot: r.u64(), index: r.u32(), offset: r.u64()}
	}
	if r.err == nil && slot > uint64(len(r.b))/4 {
		r.err = errSnapshotFile // every value takes at least its length
	}
	if r.err == nil {
		s.values = make([][]byte, 0, slot)
	}
	for i := uint64(0); r.err == nil && i < slot; i++ {
		s.values = append(s.values, slices.Clone(r.take(uint64(r.u32()))))
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d bytes after the last value", errSnapshotFile, len(r.b))
	}
	if r.err != nil {
		return snapshot{}, r.err
	}
	return s, nil
}
