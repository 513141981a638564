package codec

import (
	"fmt"

	"github.com/klauspost/compress/s2"
)

// Which optional fields a peer message type carries on the wire, in this order after From and
// To: Ballot, Slot, Commit, Count, then Offset+Total+Checksum, then one of Values, Entries or
// Data. Fields a type does not carry are not sent and decode as zero. This table is part of the
// format.
const (
	fieldBallot uint16 = 1 << iota
	fieldSlot
	fieldCommit
	fieldCount
	fieldSnapshot // Offset, Total, Checksum
	fieldValues
	fieldEntries
	fieldData
)

// peerFields is indexed by MsgType - TypePrepare.
var peerFields = [...]uint16{
	TypePrepare - TypePrepare:        fieldBallot | fieldSlot,
	TypePromise - TypePrepare:        fieldBallot | fieldSlot | fieldCommit | fieldEntries,
	TypeAccept - TypePrepare:         fieldBallot | fieldSlot | fieldCommit | fieldValues,
	TypeAccepted - TypePrepare:       fieldBallot | fieldSlot,
	TypeNack - TypePrepare:           fieldBallot | fieldSlot,
	TypeHeartbeat - TypePrepare:      fieldBallot | fieldCommit,
	TypeHeartbeatReply - TypePrepare: fieldBallot | fieldSlot | fieldCommit,
	TypeCatchUpRequest - TypePrepare: fieldSlot | fieldCount,
	TypeCatchUpReply - TypePrepare:   fieldSlot | fieldCommit | fieldCount | fieldValues,
	TypeSnapshotChunk - TypePrepare:  fieldSlot | fieldSnapshot | fieldData,
	TypePreVote - TypePrepare:        fieldBallot | fieldSlot,
	TypePreVoteReply - TypePrepare:   fieldBallot | fieldCount,
}

// Smallest encodings of one element, used to bound counts by the bytes that remain before
// anything is allocated. These constants are part of the format.
const (
	valueBytesMin = 4             // length
	entryBytesMin = 8 + 8 + 4 + 4 // slot, ballot round, ballot replica, value length
)

func fieldsOf(t MsgType) uint16 { return peerFields[t-TypePrepare] }

// AppendMessage appends m as one uncompressed frame to dst. Only the fields m.Type carries (see
// the Message doc and docs/PROTOCOL.md) are written; the others are dropped. m.Type must be a
// peer type: anything else is a caller bug and panics.
func AppendMessage(dst []byte, m *Message) []byte {
	if !m.Type.IsPeer() {
		panic(fmt.Sprintf("codec: AppendMessage: %s is not a peer message type", m.Type))
	}
	start := len(dst)
	dst = appendHeader(dst, m.Type, 0)
	dst = appendMessageBody(dst, m)
	return finishFrame(dst, start)
}

func appendMessageBody(dst []byte, m *Message) []byte {
	f := fieldsOf(m.Type)
	dst = appendU32(dst, m.From)
	dst = appendU32(dst, m.To)
	if f&fieldBallot != 0 {
		dst = appendBallot(dst, m.Ballot)
	}
	if f&fieldSlot != 0 {
		dst = appendU64(dst, m.Slot)
	}
	if f&fieldCommit != 0 {
		dst = appendU64(dst, m.Commit)
	}
	if f&fieldCount != 0 {
		dst = appendU64(dst, m.Count)
	}
	if f&fieldSnapshot != 0 {
		dst = appendU64(dst, m.Offset)
		dst = appendU64(dst, m.Total)
		dst = appendU32(dst, m.Checksum)
	}
	switch {
	case f&fieldValues != 0:
		dst = appendU32(dst, uint32(len(m.Values)))
		for _, v := range m.Values {
			dst = appendBytes(dst, v)
		}
	case f&fieldEntries != 0:
		dst = appendU32(dst, uint32(len(m.Entries)))
		for i := range m.Entries {
			e := &m.Entries[i]
			dst = appendU64(dst, e.Slot)
			dst = appendBallot(dst, e.Ballot)
			dst = appendBytes(dst, e.Value)
		}
	case f&fieldData != 0:
		dst = appendBytes(dst, m.Data)
	}
	return dst
}

// DecodeMessage decodes one whole uncompressed peer frame into m; a compressed one returns
// ErrCompressed (use a Decoder). A nil lim means DefaultLimits. It reuses the capacity of
// m.Values and m.Entries and allocates only when they must grow. Every []byte in m aliases
// frame. m.From is what the sender wrote: the transport should overwrite it with the
// authenticated peer id.
func DecodeMessage(frame []byte, m *Message, lim *Limits) error {
	lim = limitsOrDefault(lim)
	typ, body, flags, err := checkMessageFrame(frame, lim)
	if err != nil {
		return err
	}
	if flags&FlagCompressed != 0 {
		return fmt.Errorf("codec: %s: frame is compressed: %w", typ, ErrCompressed)
	}
	return decodeMessageBody(typ, body, m, lim)
}

// checkMessageFrame validates the header of a peer frame of any peer type.
func checkMessageFrame(frame []byte, lim *Limits) (MsgType, []byte, uint8, error) {
	if len(frame) < FrameHeaderSize {
		return TypeInvalid, nil, 0, fmt.Errorf("codec: Message: frame of %d bytes is shorter than the %d-byte header: %w",
			len(frame), FrameHeaderSize, ErrTruncated)
	}
	typ := MsgType(frame[headerType])
	if !typ.IsPeer() {
		if frame[headerVersion] != Version {
			return typ, nil, 0, fmt.Errorf("codec: Message: frame header: version %d, want %d: %w", frame[headerVersion], Version, ErrBadVersion)
		}
		return typ, nil, 0, fmt.Errorf("codec: Message: frame type %s is not a peer type: %w", typ, ErrUnknownType)
	}
	body, flags, err := checkFrame(frame, typ, lim)
	return typ, body, flags, err
}

func decodeMessageBody(typ MsgType, body []byte, m *Message, lim *Limits) error {
	f := fieldsOf(typ)
	r := reader{buf: body, msg: typ}
	m.Type = typ
	m.From = r.u32("from")
	m.To = r.u32("to")
	m.Ballot, m.Slot, m.Commit, m.Count = Ballot{}, 0, 0, 0
	m.Offset, m.Total, m.Checksum, m.Data = 0, 0, 0, nil
	m.Values = m.Values[:0]
	m.Entries = m.Entries[:0]
	if f&fieldBallot != 0 {
		m.Ballot = r.ballot("ballot")
	}
	if f&fieldSlot != 0 {
		m.Slot = r.u64("slot")
	}
	if f&fieldCommit != 0 {
		m.Commit = r.u64("commit")
	}
	if f&fieldCount != 0 {
		m.Count = r.u64("count")
	}
	if f&fieldSnapshot != 0 {
		m.Offset = r.u64("offset")
		m.Total = r.u64("total")
		m.Checksum = r.u32("checksum")
	}
	switch {
	case f&fieldValues != 0:
		decodeValues(&r, m, lim)
	case f&fieldEntries != 0:
		decodeEntries(&r, m, lim)
	case f&fieldData != 0:
		m.Data = r.bytes("data", lim.ValueBytesMax, "ValueBytesMax")
	}
	if err := r.end(); err != nil {
		return err
	}
	return checkMessage(&r, m)
}

func decodeValues(r *reader, m *Message, lim *Limits) {
	n := r.count("values.count", valueBytesMin, lim.ValuesMax, "ValuesMax")
	if r.err != nil {
		return
	}
	if cap(m.Values) < n {
		m.Values = make([][]byte, n)
	}
	m.Values = m.Values[:n]
	for i := range m.Values {
		r.index = i
		m.Values[i] = r.bytes("values[]", lim.ValueBytesMax, "ValueBytesMax")
		if r.err != nil {
			m.Values = m.Values[:0]
			return
		}
	}
}

func decodeEntries(r *reader, m *Message, lim *Limits) {
	n := r.count("entries.count", entryBytesMin, lim.EntriesMax, "EntriesMax")
	if r.err != nil {
		return
	}
	if cap(m.Entries) < n {
		m.Entries = make([]Entry, n)
	}
	m.Entries = m.Entries[:n]
	for i := range m.Entries {
		e := &m.Entries[i]
		r.index = i
		e.Slot = r.u64("entries[].slot")
		e.Ballot = r.ballot("entries[].ballot")
		e.Value = r.bytes("entries[].value", lim.ValueBytesMax, "ValueBytesMax")
		if r.err != nil {
			m.Entries = m.Entries[:0]
			return
		}
	}
}

// checkMessage checks what must hold between the fields of a decoded message, so core/ never
// sees a message no correct replica could have sent.
func checkMessage(r *reader, m *Message) error {
	switch m.Type {
	// Not Nack: a replica that never promised (say, one restored from a snapshot) refuses with
	// its zero promise.
	case TypePrepare, TypePromise, TypeAccept, TypeAccepted, TypeHeartbeat, TypePreVote, TypePreVoteReply:
		if m.Ballot.IsZero() {
			r.corrupt("ballot is zero")
		}
	}
	switch m.Type {
	case TypeAccept:
		if len(m.Values) == 0 {
			r.corrupt("carries no values (a commit alone travels in Heartbeat)")
		} else if m.Slot > ^uint64(0)-uint64(len(m.Values)) {
			r.corrupt("slot %d + %d values overflows", m.Slot, len(m.Values))
		}
	case TypeCatchUpReply:
		if m.Slot > ^uint64(0)-uint64(len(m.Values)) {
			r.corrupt("slot %d + %d values overflows", m.Slot, len(m.Values))
		}
	case TypePromise:
		checkEntries(r, m)
	case TypePreVoteReply:
		if m.Count > 1 {
			r.corrupt("count %d is neither 0 (refused) nor 1 (granted)", m.Count)
		}
	case TypeSnapshotChunk:
		if m.Offset > m.Total || uint64(len(m.Data)) > m.Total-m.Offset {
			r.corrupt("offset %d + %d data bytes exceeds total %d", m.Offset, len(m.Data), m.Total)
		}
	}
	if r.err != nil {
		m.Values = m.Values[:0]
		m.Entries = m.Entries[:0]
	}
	return r.err
}

// checkEntries: a Promise reports accepted entries in increasing slot order from the requested
// slot, each accepted in a real (non-zero) ballot. An entry's ballot may exceed the promised
// one: core/ marks values it learned as chosen with the highest ballot (core.ChosenBallot), so
// comparing ballots is left to core/.
func checkEntries(r *reader, m *Message) {
	for i := range m.Entries {
		e := &m.Entries[i]
		switch {
		case e.Slot < m.Slot:
			r.corrupt("entries[%d]: slot %d is below the requested slot %d", i, e.Slot, m.Slot)
		case i > 0 && e.Slot <= m.Entries[i-1].Slot:
			r.corrupt("entries[%d]: slot %d does not follow slot %d", i, e.Slot, m.Entries[i-1].Slot)
		case e.Ballot.IsZero():
			r.corrupt("entries[%d]: ballot is zero", i)
		}
		if r.err != nil {
			return
		}
	}
}

// Encoder appends peer frames, S2-compressing the bodies of Promise, Accept and CatchUpReply
// at or above a threshold. Use compression only when both ends negotiated FeatureS2 in the
// handshake: that choice is the caller's (pass compress = false otherwise). An Encoder keeps a
// scratch buffer, so it is not safe for concurrent use: keep one per connection or goroutine.
type Encoder struct {
	compress  bool
	threshold int
	scratch   []byte // compressed body; grows to the largest body compressed, then is reused
	// skip: eligible bodies still to send plain before S2 is tried again; misses: attempts in a
	// row that saved too little. An incompressible stream (random payloads) costs S2's CPU on
	// at most one body in compressSkipMax instead of on every one.
	skip   int
	misses int
}

// compressSkipMax bounds the back-off after bodies S2 could not shrink by compressSaveMin.
const compressSkipMax = 64

// compressSaveMin: a compressed body must be at least 1/compressSaveMin smaller than the
// plain one to be sent (smaller gains do not pay the receiver's decode).
const compressSaveMin = 8

// NewEncoder returns an Encoder. threshold <= 0 means DefaultCompressThreshold.
func NewEncoder(compress bool, threshold int) *Encoder {
	if threshold <= 0 {
		threshold = DefaultCompressThreshold
	}
	return &Encoder{compress: compress, threshold: threshold}
}

// AppendMessage appends m as one frame to dst, compressed when compression is on, the type is
// Promise, Accept or CatchUpReply, the body is at least the threshold, and S2 makes it smaller.
// Otherwise the frame is exactly what the package-level AppendMessage writes.
func (e *Encoder) AppendMessage(dst []byte, m *Message) []byte {
	start := len(dst)
	dst = AppendMessage(dst, m)
	body := dst[start+FrameHeaderSize:]
	if !e.compress || !m.Type.compressible() || len(body) < e.threshold {
		return dst
	}
	if e.skip > 0 {
		e.skip--
		return dst
	}
	need := s2.MaxEncodedLen(len(body))
	if need < 0 {
		return dst // too large for one S2 block: send it plain
	}
	if cap(e.scratch) < need {
		e.scratch = make([]byte, need)
	}
	packed := s2.Encode(e.scratch[:need], body)
	if len(packed) > len(body)-len(body)/compressSaveMin {
		// Not worth it: back off exponentially, so a stream of incompressible bodies costs
		// S2's time on at most one in compressSkipMax.
		e.misses++
		e.skip = min(1<<min(e.misses, 6), compressSkipMax)
		return dst
	}
	e.misses = 0
	dst = append(dst[:start+FrameHeaderSize], packed...)
	dst[start+headerFlags] |= FlagCompressed
	return finishFrame(dst, start)
}

// Decoder decodes peer frames, compressed or not. A decompressed body lives in the Decoder's
// scratch buffer, so the slices of a Message it decoded stay valid only until the next call on
// the same Decoder (or until the frame buffer is reused, for an uncompressed frame). Not safe
// for concurrent use: keep one per connection.
type Decoder struct {
	limits  Limits
	scratch []byte // decompressed body; grows to the largest seen, at most FrameBytesMax
}

// NewDecoder returns a Decoder that enforces lim. Call lim.Validate first: NewDecoder trusts it.
func NewDecoder(lim Limits) *Decoder { return &Decoder{limits: lim} }

// DecodeMessage decodes one whole peer frame into m, decompressing it first if it is flagged.
// The declared decompressed size is checked against Limits.FrameBytesMax before any memory is
// allocated for it, so a small frame cannot claim a huge body (a decompression bomb).
func (d *Decoder) DecodeMessage(frame []byte, m *Message) error {
	lim := &d.limits
	typ, body, flags, err := checkMessageFrame(frame, lim)
	if err != nil {
		return err
	}
	if flags&FlagCompressed == 0 {
		return decodeMessageBody(typ, body, m, lim)
	}
	size, err := s2.DecodedLen(body)
	if err != nil {
		return fmt.Errorf("codec: %s: compressed body: %v: %w", typ, err, ErrCorrupt)
	}
	if uint64(size)+FrameHeaderSize > uint64(lim.FrameBytesMax) {
		return fmt.Errorf("codec: %s: compressed body declares %d bytes, over FrameBytesMax %d: %w",
			typ, size, lim.FrameBytesMax, ErrFrameTooLarge)
	}
	if cap(d.scratch) < size {
		d.scratch = make([]byte, size)
	}
	plain, err := s2.Decode(d.scratch[:size], body)
	if err != nil {
		return fmt.Errorf("codec: %s: compressed body: %v: %w", typ, err, ErrCorrupt)
	}
	return decodeMessageBody(typ, plain, m, lim)
}
