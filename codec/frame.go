package codec

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Frame format constants. These constants are part of the format: changing one breaks every
// peer and client already deployed.
const (
	// Version is the frame format version carried in every header.
	Version = 1
	// FrameHeaderSize is the fixed size of a frame header:
	// body length (uint32 LE), version, type, flags, reserved (zero).
	FrameHeaderSize = 8

	// FlagCompressed marks a body that is one S2 block (github.com/klauspost/compress/s2)
	// whose decoding is the plain body. Allowed on Promise, Accept and CatchUpReply only.
	FlagCompressed uint8 = 1 << 0

	// flagsKnown is every flag bit this version defines; any other bit is corruption.
	flagsKnown = FlagCompressed
)

// Offsets of the header fields.
const (
	headerLength   = 0
	headerVersion  = 4
	headerType     = 5
	headerFlags    = 6
	headerReserved = 7
)

// String names the type as in this package's identifiers ("Accept"), or "MsgType(N)".
func (t MsgType) String() string {
	switch t {
	case TypeChallenge:
		return "Challenge"
	case TypeHello:
		return "Hello"
	case TypeWelcome:
		return "Welcome"
	case TypeRequest:
		return "Request"
	case TypeResponse:
		return "Response"
	case TypeRedirect:
		return "Redirect"
	case TypeRead:
		return "Read"
	case TypeReadReply:
		return "ReadReply"
	case TypePrepare:
		return "Prepare"
	case TypePromise:
		return "Promise"
	case TypeAccept:
		return "Accept"
	case TypeAccepted:
		return "Accepted"
	case TypeNack:
		return "Nack"
	case TypeHeartbeat:
		return "Heartbeat"
	case TypeHeartbeatReply:
		return "HeartbeatReply"
	case TypeCatchUpRequest:
		return "CatchUpRequest"
	case TypeCatchUpReply:
		return "CatchUpReply"
	case TypeSnapshotChunk:
		return "SnapshotChunk"
	case TypePreVote:
		return "PreVote"
	case TypePreVoteReply:
		return "PreVoteReply"
	}
	return "MsgType(" + strconv.Itoa(int(t)) + ")"
}

// IsPeer reports whether t is carried by Message (peer-to-peer protocol traffic).
func (t MsgType) IsPeer() bool { return t >= TypePrepare && t <= TypePreVoteReply }

// Known reports whether t is a frame type of this version.
func (t MsgType) Known() bool {
	switch t {
	case TypeChallenge, TypeHello, TypeWelcome, TypeRequest, TypeResponse, TypeRedirect, TypeRead, TypeReadReply:
		return true
	}
	return t.IsPeer()
}

// compressible reports whether a body of type t may carry FlagCompressed: only the types whose
// bodies hold slot values grow large enough to gain from it.
func (t MsgType) compressible() bool {
	return t == TypePromise || t == TypeAccept || t == TypeCatchUpReply
}

// PeekFrame inspects the start of buf and reports the type and the total length (header
// included) of the first frame. It returns ErrIncomplete, and nothing else, while buf holds
// less than a whole frame whose header is valid; any other error means the header is bad and
// the stream must be closed. A nil lim means DefaultLimits. It never reads past the header, so
// a valid PeekFrame does not mean the body is valid: the DecodeX functions check that.
func PeekFrame(buf []byte, lim *Limits) (typ MsgType, frameLen int, err error) {
	if len(buf) < FrameHeaderSize {
		return TypeInvalid, 0, ErrIncomplete
	}
	typ, frameLen, _, err = parseHeader(buf, limitsOrDefault(lim))
	if err != nil {
		return typ, 0, err
	}
	if len(buf) < frameLen {
		return typ, frameLen, ErrIncomplete
	}
	return typ, frameLen, nil
}

// parseHeader checks the fixed header at buf[:FrameHeaderSize] (the caller ensures it is
// there) and returns the frame's type, total length and flags.
func parseHeader(buf []byte, lim *Limits) (typ MsgType, frameLen int, flags uint8, err error) {
	typ = MsgType(buf[headerType])
	if v := buf[headerVersion]; v != Version {
		return typ, 0, 0, fmt.Errorf("codec: frame header: version %d, want %d: %w", v, Version, ErrBadVersion)
	}
	if !typ.Known() {
		return typ, 0, 0, fmt.Errorf("codec: frame header: type %d: %w", uint8(typ), ErrUnknownType)
	}
	flags = buf[headerFlags]
	if flags&^flagsKnown != 0 {
		return typ, 0, 0, fmt.Errorf("codec: %s: header flags %#x: undefined bits set: %w", typ, flags, ErrCorrupt)
	}
	if flags&FlagCompressed != 0 && !typ.compressible() {
		return typ, 0, 0, fmt.Errorf("codec: %s: header flags: compression not allowed on this type: %w", typ, ErrCorrupt)
	}
	if r := buf[headerReserved]; r != 0 {
		return typ, 0, 0, fmt.Errorf("codec: %s: header reserved byte %#x: must be zero: %w", typ, r, ErrCorrupt)
	}
	bodyLen := uint64(binary.LittleEndian.Uint32(buf[headerLength:]))
	if FrameHeaderSize+bodyLen > uint64(lim.FrameBytesMax) {
		return typ, 0, 0, fmt.Errorf("codec: %s: frame length %d exceeds FrameBytesMax %d: %w",
			typ, FrameHeaderSize+bodyLen, lim.FrameBytesMax, ErrFrameTooLarge)
	}
	return typ, FrameHeaderSize + int(bodyLen), flags, nil
}

// checkFrame validates the header of a whole frame of type want and returns its body. The frame
// must be exactly one frame long: bytes after it are trailing garbage.
func checkFrame(frame []byte, want MsgType, lim *Limits) (body []byte, flags uint8, err error) {
	if len(frame) < FrameHeaderSize {
		return nil, 0, fmt.Errorf("codec: %s: frame of %d bytes is shorter than the %d-byte header: %w",
			want, len(frame), FrameHeaderSize, ErrTruncated)
	}
	typ, frameLen, flags, err := parseHeader(frame, lim)
	if err != nil {
		return nil, 0, err
	}
	if typ != want {
		return nil, 0, fmt.Errorf("codec: %s: frame has type %s: %w", want, typ, ErrUnknownType)
	}
	if len(frame) < frameLen {
		return nil, 0, fmt.Errorf("codec: %s: frame of %d bytes, header declares %d: %w", want, len(frame), frameLen, ErrTruncated)
	}
	if len(frame) > frameLen {
		return nil, 0, fmt.Errorf("codec: %s: %d bytes of trailing garbage after the frame: %w", want, len(frame)-frameLen, ErrCorrupt)
	}
	return frame[FrameHeaderSize:], flags, nil
}

// appendHeader appends a header with a zero body length; finishFrame fills it in.
func appendHeader(dst []byte, typ MsgType, flags uint8) []byte {
	return append(dst, 0, 0, 0, 0, Version, byte(typ), flags, 0)
}

// finishFrame writes the body length of the frame that starts at dst[start:].
func finishFrame(dst []byte, start int) []byte {
	bodyLen := len(dst) - start - FrameHeaderSize
	if uint64(bodyLen) > 1<<32-1 {
		// Only a caller bug gets here: no limit allows a 4 GiB frame.
		panic(fmt.Sprintf("codec: frame body of %d bytes does not fit the uint32 length field", bodyLen))
	}
	binary.LittleEndian.PutUint32(dst[start+headerLength:], uint32(bodyLen))
	return dst
}

// reader decodes fixed-width little-endian fields from a body. The first failure sticks: later
// reads return zero values, so a decoder checks err once at the end or before acting on a
// count. The error names the message and the field.
type reader struct {
	buf   []byte
	off   int
	msg   MsgType
	err   error
	index int // element being read, substituted for "[]" in field names; set by the caller
}

// name renders a field name for an error, "values[]" becoming "values[3]".
func (r *reader) name(field string) string {
	if i := strings.Index(field, "[]"); i >= 0 {
		return field[:i] + "[" + strconv.Itoa(r.index) + "]" + field[i+2:]
	}
	return field
}

func (r *reader) remaining() int { return len(r.buf) - r.off }

func (r *reader) fail(field string, need int) {
	if r.err == nil {
		r.err = fmt.Errorf("codec: %s: %s: needs %d bytes, %d remain: %w", r.msg, r.name(field), need, r.remaining(), ErrTruncated)
	}
}

func (r *reader) take(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > r.remaining() {
		r.fail(field, n)
		return nil
	}
	b := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

func (r *reader) u8(field string) uint8 {
	if b := r.take(field, 1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(field string) uint16 {
	if b := r.take(field, 2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(field string) uint32 {
	if b := r.take(field, 4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(field string) uint64 {
	if b := r.take(field, 8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) ballot(field string) Ballot {
	return Ballot{Round: r.u64(field), Replica: r.u32(field)}
}

// bytes reads a uint32 length then that many bytes, checking the length against max (a Limits
// field named limitName) after checking it against the bytes that remain. The result aliases
// the body. A zero length yields nil, so decoded empty values compare equal to unset ones.
func (r *reader) bytes(field string, max int, limitName string) []byte {
	n := r.u32(field)
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(r.remaining()) {
		r.err = fmt.Errorf("codec: %s: %s: length %d exceeds %d remaining bytes: %w", r.msg, r.name(field), n, r.remaining(), ErrTruncated)
		return nil
	}
	if uint64(n) > uint64(max) {
		r.err = fmt.Errorf("codec: %s: %s: length %d exceeds %s %d: %w", r.msg, r.name(field), n, limitName, max, ErrLimit)
		return nil
	}
	if n == 0 {
		return nil
	}
	return r.take(field, int(n))
}

// count reads a uint32 element count and checks it, before anything is allocated for it,
// against the bytes that remain (each element takes at least minBytes) and against max.
func (r *reader) count(field string, minBytes, max int, limitName string) int {
	n := r.u32(field)
	if r.err != nil {
		return 0
	}
	if uint64(n)*uint64(minBytes) > uint64(r.remaining()) {
		r.err = fmt.Errorf("codec: %s: %s: %d elements of at least %d bytes exceed %d remaining bytes: %w",
			r.msg, field, n, minBytes, r.remaining(), ErrTruncated)
		return 0
	}
	if uint64(n) > uint64(max) {
		r.err = fmt.Errorf("codec: %s: %s: %d exceeds %s %d: %w", r.msg, field, n, limitName, max, ErrLimit)
		return 0
	}
	return int(n)
}

// end reports the sticky error, or trailing garbage if bytes remain after the last field.
func (r *reader) end() error {
	if r.err != nil {
		return r.err
	}
	if r.off != len(r.buf) {
		return fmt.Errorf("codec: %s: %d bytes of trailing garbage after the last field: %w", r.msg, r.remaining(), ErrCorrupt)
	}
	return nil
}

// corrupt records a consistency failure unless an earlier error already stuck.
func (r *reader) corrupt(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("codec: %s: %s: %w", r.msg, fmt.Sprintf(format, args...), ErrCorrupt)
	}
}

func appendU16(dst []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(dst, v) }
func appendU32(dst []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(dst, v) }
func appendU64(dst []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(dst, v) }

func appendBallot(dst []byte, b Ballot) []byte {
	return appendU32(appendU64(dst, b.Round), b.Replica)
}

// appendBytes appends a uint32 length and b.
func appendBytes(dst []byte, b []byte) []byte {
	if uint64(len(b)) > 1<<32-1 {
		panic(fmt.Sprintf("codec: byte string of %d bytes does not fit the uint32 length field", len(b)))
	}
	return append(appendU32(dst, uint32(len(b))), b...)
}
