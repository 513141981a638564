package codec

import (
	"encoding/binary"
	"fmt"
)

// Body sizes of the client frames. These constants are part of the format.
const (
	responseBodySize = 8 + 8 + 1 + 8 + 4 + 8
	statusKnownMax   = StatusCompacted
)

// AppendRequest appends m as one frame to dst: a Request frame, or a Read frame when m.Read
// is set (m.Payload is then not sent).
func AppendRequest(dst []byte, m *Request) []byte {
	if m.Read != ReadNone {
		return appendRead(dst, m)
	}
	start := len(dst)
	dst = appendHeader(dst, TypeRequest, 0)
	dst = appendU64(dst, m.ClientID)
	dst = appendU64(dst, m.Seq)
	dst = appendU64(dst, m.SeqFloor)
	dst = appendBytes(dst, m.Payload)
	return finishFrame(dst, start)
}

// DecodeRequest decodes one whole Request frame into m. m.Payload aliases frame (nil when
// empty); it is bounded by lim.PayloadBytesMax (ErrLimit). A SeqFloor above Seq is ErrCorrupt.
func DecodeRequest(frame []byte, m *Request, lim *Limits) error {
	lim = limitsOrDefault(lim)
	body, _, err := checkFrame(frame, TypeRequest, lim)
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeRequest}
	m.ClientID = r.u64("client_id")
	m.Seq = r.u64("seq")
	m.SeqFloor = r.u64("seq_floor")
	m.Payload = r.bytes("payload", lim.PayloadBytesMax, "PayloadBytesMax")
	if err := r.end(); err != nil {
		return err
	}
	if m.SeqFloor > m.Seq {
		return fmt.Errorf("codec: Request: seq_floor %d is above seq %d: %w", m.SeqFloor, m.Seq, ErrCorrupt)
	}
	m.Read, m.Offset = ReadNone, 0
	return nil
}

func appendRead(dst []byte, m *Request) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeRead, 0)
	dst = appendU64(dst, m.ClientID)
	dst = appendU64(dst, m.Seq)
	dst = appendU64(dst, m.SeqFloor)
	dst = append(dst, byte(m.Read))
	dst = appendU64(dst, m.Offset)
	return finishFrame(dst, start)
}

// DecodeRead decodes one whole Read frame into m (m.Payload is nil). An unknown read mode, or
// a SeqFloor above Seq, is ErrCorrupt.
func DecodeRead(frame []byte, m *Request, lim *Limits) error {
	body, _, err := checkFrame(frame, TypeRead, limitsOrDefault(lim))
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeRead}
	m.ClientID = r.u64("client_id")
	m.Seq = r.u64("seq")
	m.SeqFloor = r.u64("seq_floor")
	mode := ReadMode(r.u8("mode"))
	m.Offset = r.u64("offset")
	if err := r.end(); err != nil {
		return err
	}
	if mode == ReadNone || mode > readModeMax {
		return fmt.Errorf("codec: Read: mode: %d is unknown: %w", mode, ErrCorrupt)
	}
	if mode == ReadLatest && m.Offset != 0 {
		return fmt.Errorf("codec: Read: offset %d given with mode latest (must be 0): %w", m.Offset, ErrCorrupt)
	}
	if m.SeqFloor > m.Seq {
		return fmt.Errorf("codec: Read: seq_floor %d is above seq %d: %w", m.SeqFloor, m.Seq, ErrCorrupt)
	}
	m.Read, m.Payload = mode, nil
	return nil
}

// AppendResponse appends m as one frame to dst: a Response frame, or a ReadReply frame when
// m.Read is set.
func AppendResponse(dst []byte, m *Response) []byte {
	if m.Read != ReadNone {
		return appendReadReply(dst, m)
	}
	start := len(dst)
	dst = appendHeader(dst, TypeResponse, 0)
	dst = appendU64(dst, m.ClientID)
	dst = appendU64(dst, m.Seq)
	dst = append(dst, byte(m.Status))
	dst = appendU64(dst, m.Slot)
	dst = appendU32(dst, m.Index)
	dst = appendU64(dst, m.Offset)
	return finishFrame(dst, start)
}

// DecodeResponse decodes one whole Response frame into m. An unknown Status is ErrCorrupt.
func DecodeResponse(frame []byte, m *Response, lim *Limits) error {
	body, _, err := checkFrame(frame, TypeResponse, limitsOrDefault(lim))
	if err != nil {
		return err
	}
	// A Response is fixed-size and the hottest frame (one per command), so it skips reader.
	if len(body) < responseBodySize {
		return fmt.Errorf("codec: Response: body of %d bytes, want %d: %w", len(body), responseBodySize, ErrTruncated)
	}
	if len(body) > responseBodySize {
		return fmt.Errorf("codec: Response: %d bytes of trailing garbage after the last field: %w", len(body)-responseBodySize, ErrCorrupt)
	}
	status := Status(body[16])
	if status > statusKnownMax {
		return fmt.Errorf("codec: Response: status: %d is unknown: %w", status, ErrCorrupt)
	}
	m.ClientID = binary.LittleEndian.Uint64(body[0:])
	m.Seq = binary.LittleEndian.Uint64(body[8:])
	m.Status = status
	m.Slot = binary.LittleEndian.Uint64(body[17:])
	m.Index = binary.LittleEndian.Uint32(body[25:])
	m.Offset = binary.LittleEndian.Uint64(body[29:])
	m.Read, m.Found, m.Length, m.Payload = ReadNone, false, 0, nil
	return nil
}

func appendReadReply(dst []byte, m *Response) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeReadReply, 0)
	dst = appendU64(dst, m.ClientID)
	dst = appendU64(dst, m.Seq)
	dst = append(dst, byte(m.Status), byte(m.Read))
	found := byte(0)
	if m.Found {
		found = 1
	}
	dst = append(dst, found)
	dst = appendU64(dst, m.Length)
	dst = appendU64(dst, m.Slot)
	dst = appendU32(dst, m.Index)
	dst = appendU64(dst, m.Offset)
	dst = appendBytes(dst, m.Payload)
	return finishFrame(dst, start)
}

// DecodeReadReply decodes one whole ReadReply frame into m. m.Payload aliases frame (nil when
// empty) and is bounded by lim.PayloadBytesMax (ErrLimit). An unknown status or mode, a found
// flag other than 0 or 1, or a payload without Found is ErrCorrupt.
func DecodeReadReply(frame []byte, m *Response, lim *Limits) error {
	lim = limitsOrDefault(lim)
	body, _, err := checkFrame(frame, TypeReadReply, lim)
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeReadReply}
	m.ClientID = r.u64("client_id")
	m.Seq = r.u64("seq")
	status := Status(r.u8("status"))
	mode := ReadMode(r.u8("mode"))
	found := r.u8("found")
	m.Length = r.u64("length")
	m.Slot = r.u64("slot")
	m.Index = r.u32("index")
	m.Offset = r.u64("offset")
	m.Payload = r.bytes("payload", lim.PayloadBytesMax, "PayloadBytesMax")
	if err := r.end(); err != nil {
		return err
	}
	switch {
	case status > statusKnownMax:
		return fmt.Errorf("codec: ReadReply: status: %d is unknown: %w", status, ErrCorrupt)
	case mode == ReadNone || mode > readModeMax:
		return fmt.Errorf("codec: ReadReply: mode: %d is unknown: %w", mode, ErrCorrupt)
	case found > 1:
		return fmt.Errorf("codec: ReadReply: found: %d is not 0 or 1: %w", found, ErrCorrupt)
	case found == 0 && len(m.Payload) > 0:
		return fmt.Errorf("codec: ReadReply: %d payload bytes with found = 0: %w", len(m.Payload), ErrCorrupt)
	}
	m.Status, m.Read, m.Found = status, mode, found == 1
	return nil
}

// AppendRedirect appends m as one frame to dst.
func AppendRedirect(dst []byte, m *Redirect) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeRedirect, 0)
	dst = appendU64(dst, m.ClientID)
	dst = appendU64(dst, m.Seq)
	dst = appendU32(dst, m.LeaderID)
	if uint64(len(m.LeaderAddr)) > 1<<32-1 {
		panic("codec: Redirect.LeaderAddr does not fit the uint32 length field")
	}
	dst = appendU32(dst, uint32(len(m.LeaderAddr)))
	dst = append(dst, m.LeaderAddr...)
	return finishFrame(dst, start)
}

// DecodeRedirect decodes one whole Redirect frame into m. LeaderAddr is bounded by
// lim.PayloadBytesMax. Decoding allocates the LeaderAddr string only when it differs from the
// one already in m, so a connection that keeps a Redirect around decodes repeats for free.
func DecodeRedirect(frame []byte, m *Redirect, lim *Limits) error {
	lim = limitsOrDefault(lim)
	body, _, err := checkFrame(frame, TypeRedirect, lim)
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeRedirect}
	m.ClientID = r.u64("client_id")
	m.Seq = r.u64("seq")
	m.LeaderID = r.u32("leader_id")
	addr := r.bytes("leader_addr", lim.PayloadBytesMax, "PayloadBytesMax")
	if err := r.end(); err != nil {
		return err
	}
	if string(addr) != m.LeaderAddr {
		m.LeaderAddr = string(addr)
	}
	return nil
}
