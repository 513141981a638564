package codec

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Batch format constants. A batch is stored in the WAL and replayed on restart, so these
// constants are part of the format: a new layout needs a new batchFormat byte.
const (
	// batchFormat is the first byte of every non-empty batch. Format 2 added each command's
	// seq floor (format 1 never shipped in a release and is not read).
	batchFormat = 2
	// BatchHeaderSize is the size of a non-empty batch's header: format byte, uint32 LE count.
	BatchHeaderSize = 1 + 4
	// commandBytesMin is the smallest encoded command: client id, one-byte seq, one-byte
	// seq - seq floor, one-byte length.
	commandBytesMin = 8 + 1 + 1 + 1
)

// batchMsg names batches in errors the way a MsgType names frames.
const batchMsg = "batch"

// AppendBatch appends cmds encoded as one batch (one slot value) to dst. No commands append
// nothing: the empty value is a no-op.
func AppendBatch(dst []byte, cmds []Command) []byte {
	if len(cmds) == 0 {
		return dst
	}
	if uint64(len(cmds)) > 1<<32-1 {
		panic("codec: AppendBatch: more commands than the uint32 count can hold")
	}
	dst = append(dst, batchFormat)
	dst = appendU32(dst, uint32(len(cmds)))
	for i := range cmds {
		dst = appendCommand(dst, cmds[i].ClientID, cmds[i].Seq, cmds[i].SeqFloor, cmds[i].Payload)
	}
	return dst
}

// appendCommand encodes the floor as its distance below seq, usually one byte. A floor above
// seq (which DecodeRequest and batching reject) is encoded as seq: a lower floor only makes
// replicas remember more, never forget a seq the client may retry.
func appendCommand(dst []byte, clientID, seq, seqFloor uint64, payload []byte) []byte {
	dst = appendU64(dst, clientID)
	dst = binary.AppendUvarint(dst, seq)
	dst = binary.AppendUvarint(dst, seq-min(seqFloor, seq))
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	return append(dst, payload...)
}

// BatchBuilder encodes a batch one command at a time into a caller's buffer, so the batching
// stage copies each payload exactly once. It does not enforce limits: the caller stops adding
// when Count or Len reach its own maxima. The zero value is ready to use.
type BatchBuilder struct {
	buf   []byte
	count int
}

// Reset starts a new batch that reuses dst's capacity (dst's contents are overwritten).
func (b *BatchBuilder) Reset(dst []byte) {
	b.buf = append(dst[:0], batchFormat, 0, 0, 0, 0)
	b.count = 0
}

// Add appends one command, copying payload. seqFloor must be <= seq (see Request.SeqFloor); a
// larger one is encoded as seq.
func (b *BatchBuilder) Add(clientID, seq, seqFloor uint64, payload []byte) {
	if len(b.buf) == 0 {
		b.buf = append(b.buf, batchFormat, 0, 0, 0, 0)
	}
	b.buf = appendCommand(b.buf, clientID, seq, seqFloor, payload)
	b.count++
}

// Count returns the number of commands added since Reset.
func (b *BatchBuilder) Count() int { return b.count }

// Len returns len(b.Bytes()): the encoded size in bytes, 0 while the batch is empty.
func (b *BatchBuilder) Len() int {
	if b.count == 0 {
		return 0
	}
	return len(b.buf)
}

// Bytes returns the encoded batch. It aliases the builder's buffer: it is valid until the next
// Add or Reset. An empty batch encodes as the empty value (a no-op).
func (b *BatchBuilder) Bytes() []byte {
	if b.count == 0 {
		return b.buf[:0]
	}
	if uint64(b.count) > 1<<32-1 {
		panic("codec: BatchBuilder: more commands than the uint32 count can hold")
	}
	binary.LittleEndian.PutUint32(b.buf[1:], uint32(b.count))
	return b.buf
}

// BatchCount returns the number of commands a batch declares, after checking its header and
// that so many commands could fit in its bytes. It does not walk the commands (BatchIter does).
func BatchCount(value []byte) (int, error) {
	if len(value) == 0 {
		return 0, nil
	}
	count, err := batchHeader(value)
	if err != nil {
		return 0, err
	}
	return count, nil
}

func batchHeader(value []byte) (int, error) {
	if len(value) < BatchHeaderSize {
		return 0, fmt.Errorf("codec: %s: %d bytes is shorter than the %d-byte header: %w", batchMsg, len(value), BatchHeaderSize, ErrTruncated)
	}
	if value[0] != batchFormat {
		return 0, fmt.Errorf("codec: %s: format byte %d, want %d: %w", batchMsg, value[0], batchFormat, ErrBadVersion)
	}
	count := uint64(binary.LittleEndian.Uint32(value[1:]))
	if count == 0 {
		return 0, fmt.Errorf("codec: %s: count 0 in a non-empty value (a no-op is the empty value): %w", batchMsg, ErrCorrupt)
	}
	if rest := uint64(len(value) - BatchHeaderSize); count*commandBytesMin > rest {
		return 0, fmt.Errorf("codec: %s: count %d commands of at least %d bytes exceed %d remaining bytes: %w",
			batchMsg, count, commandBytesMin, rest, ErrTruncated)
	}
	return int(count), nil
}

// BatchIter walks the commands of a batch without copying or allocating:
//
//	var it codec.BatchIter
//	if err := it.Reset(value, &limits); err != nil { ... }
//	for it.Next() { cmd := it.Command(); ... }
//	if err := it.Err(); err != nil { ... }
//
// Commands are checked as they are reached, so a corrupt batch can yield some commands before
// Err reports the fault: apply a batch only after a full walk succeeded if that matters (core
// only ever sees batches that a correct leader encoded; replicas validate at proposal time).
type BatchIter struct {
	value           []byte
	off             int
	count           int
	index           int
	payloadBytesMax int
	cmd             Command
	err             error
}

// Reset starts iterating over value, checking its header against lim (nil means DefaultLimits):
// the format byte, BatchCommandsMax, ValueBytesMax, and that the count fits the bytes.
func (it *BatchIter) Reset(value []byte, lim *Limits) error {
	lim = limitsOrDefault(lim)
	*it = BatchIter{value: value, index: -1, payloadBytesMax: lim.PayloadBytesMax}
	if len(value) == 0 {
		return nil
	}
	if len(value) > lim.ValueBytesMax {
		it.err = fmt.Errorf("codec: %s: %d bytes exceed ValueBytesMax %d: %w", batchMsg, len(value), lim.ValueBytesMax, ErrLimit)
		return it.err
	}
	count, err := batchHeader(value)
	if err != nil {
		it.err = err
		return err
	}
	if count > lim.BatchCommandsMax {
		it.err = fmt.Errorf("codec: %s: count %d exceeds BatchCommandsMax %d: %w", batchMsg, count, lim.BatchCommandsMax, ErrLimit)
		return it.err
	}
	it.count = count
	it.off = BatchHeaderSize
	return nil
}

// Next advances to the next command and reports whether there is one. It returns false at the
// end of the batch or on the first malformed command (then Err says why).
func (it *BatchIter) Next() bool {
	if it.err != nil || it.index+1 >= it.count {
		if it.err == nil && it.off != len(it.value) && it.count > 0 {
			it.err = fmt.Errorf("codec: %s: %d bytes of trailing garbage after command %d: %w",
				batchMsg, len(it.value)-it.off, it.count-1, ErrCorrupt)
		}
		return false
	}
	it.index++
	rest := it.value[it.off:]
	if len(rest) < 8 {
		return it.fail("client_id", ErrTruncated, "needs 8 bytes, %d remain", len(rest))
	}
	clientID := binary.LittleEndian.Uint64(rest)
	n := 8
	// One-byte varints (most lengths and floor distances, many seqs) are decoded inline:
	// uvarint is a call.
	var seq, back, length uint64
	var k int
	if n < len(rest) && rest[n] < 0x80 {
		seq, k = uint64(rest[n]), 1
	} else if seq, k = uvarint(rest[n:]); k <= 0 {
		return it.fail("seq", errOfUvarint(k), "bad varint")
	}
	n += k
	if n < len(rest) && rest[n] < 0x80 {
		back, k = uint64(rest[n]), 1
	} else if back, k = uvarint(rest[n:]); k <= 0 {
		return it.fail("seq floor distance", errOfUvarint(k), "bad varint")
	}
	if back > seq {
		return it.fail("seq floor distance", ErrCorrupt, "%d puts the floor below zero (seq %d)", back, seq)
	}
	n += k
	if n < len(rest) && rest[n] < 0x80 {
		length, k = uint64(rest[n]), 1
	} else if length, k = uvarint(rest[n:]); k <= 0 {
		return it.fail("payload length", errOfUvarint(k), "bad varint")
	}
	n += k
	if length > uint64(len(rest)-n) {
		return it.fail("payload", ErrTruncated, "length %d exceeds %d remaining bytes", length, len(rest)-n)
	}
	if length > uint64(it.payloadBytesMax) {
		return it.fail("payload", ErrLimit, "length %d exceeds PayloadBytesMax %d", length, it.payloadBytesMax)
	}
	// Field by field: assigning a whole Command literal costs a temporary and a copy here.
	it.cmd.ClientID = clientID
	it.cmd.Seq = seq
	it.cmd.SeqFloor = seq - back
	if length == 0 {
		it.cmd.Payload = nil
	} else {
		it.cmd.Payload = rest[n : n+int(length) : n+int(length)]
	}
	it.off += n + int(length)
	return true
}

func (it *BatchIter) fail(field string, sentinel error, format string, args ...any) bool {
	it.err = fmt.Errorf("codec: %s: command %d: %s: %s: %w", batchMsg, it.index, field, fmt.Sprintf(format, args...), sentinel)
	it.cmd = Command{}
	return false
}

// Command returns the command Next moved to. Its Payload aliases the batch value.
func (it *BatchIter) Command() Command { return it.cmd }

// Index returns the position of the current command in the batch, from 0 (-1 before Next).
// (slot, Index) is the command's position in the total order.
func (it *BatchIter) Index() int { return it.index }

// Err returns the first error met, or nil if the batch was well formed so far.
func (it *BatchIter) Err() error { return it.err }

// uvarint decodes a minimal-length unsigned varint. It returns k == 0 when b ends inside the
// varint and k < 0 when the varint overflows 64 bits or is not in its shortest form (which
// keeps every batch's encoding unique).
func uvarint(b []byte) (v uint64, k int) {
	v, k = binary.Uvarint(b)
	if k > 0 && k != uvarintLen(v) {
		return 0, -1
	}
	return v, k
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func errOfUvarint(k int) error {
	if k == 0 {
		return ErrTruncated
	}
	return ErrCorrupt
}
