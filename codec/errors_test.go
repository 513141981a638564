package codec

import (
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
)

// setBodyLen rewrites a frame's length field so it matches len(frame) again after an edit.
func setBodyLen(frame []byte) []byte {
	binary.LittleEndian.PutUint32(frame[headerLength:], uint32(len(frame)-FrameHeaderSize))
	return frame
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func TestPeekFrameErrors(t *testing.T) {
	valid := AppendResponse(nil, &Response{ClientID: 1})
	huge := clone(valid)
	binary.LittleEndian.PutUint32(huge, 1<<31)
	tests := []struct {
		name string
		edit func(b []byte) []byte
		want error
	}{
		{"empty buffer", func(b []byte) []byte { return nil }, ErrIncomplete},
		{"partial header", func(b []byte) []byte { return b[:FrameHeaderSize-1] }, ErrIncomplete},
		{"partial body", func(b []byte) []byte { return b[:len(b)-1] }, ErrIncomplete},
		{"bad version", func(b []byte) []byte { b[headerVersion] = 2; return b }, ErrBadVersion},
		{"version zero", func(b []byte) []byte { b[headerVersion] = 0; return b }, ErrBadVersion},
		{"unknown type", func(b []byte) []byte { b[headerType] = 99; return b }, ErrUnknownType},
		{"invalid type zero", func(b []byte) []byte { b[headerType] = 0; return b }, ErrUnknownType},
		{"undefined flag", func(b []byte) []byte { b[headerFlags] = 0x80; return b }, ErrCorrupt},
		{"compressed flag on a Response", func(b []byte) []byte { b[headerFlags] = FlagCompressed; return b }, ErrCorrupt},
		{"reserved byte set", func(b []byte) []byte { b[headerReserved] = 1; return b }, ErrCorrupt},
		{"length over FrameBytesMax", func(b []byte) []byte { return huge[:FrameHeaderSize] }, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := PeekFrame(tt.edit(clone(valid)), nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("PeekFrame err = %v, want %v", err, tt.want)
			}
		})
	}
	if typ, n, err := PeekFrame(append(clone(valid), 0xff), nil); err != nil || typ != TypeResponse || n != len(valid) {
		t.Fatalf("PeekFrame with the next frame's first byte behind = %v, %d, %v", typ, n, err)
	}
}

// TestDecodeFrameErrors covers the classes of bad frame every decoder shares.
func TestDecodeFrameErrors(t *testing.T) {
	lim := smallLimits()
	decoders := []struct {
		name   string
		frame  []byte
		decode func(frame []byte) error
	}{
		{"Challenge", AppendChallenge(nil, &Challenge{Version: 1, ClusterID: 7}), func(f []byte) error { return DecodeChallenge(f, new(Challenge), &lim) }},
		{"Hello", AppendHello(nil, &Hello{Version: 1, Role: RolePeer, ReplicaID: 2}), func(f []byte) error { return DecodeHello(f, new(Hello), &lim) }},
		{"Welcome", AppendWelcome(nil, &Welcome{ReplicaID: 2}), func(f []byte) error { return DecodeWelcome(f, new(Welcome), &lim) }},
		{"Request", AppendRequest(nil, &Request{ClientID: 1, Payload: []byte("abc")}), func(f []byte) error { return DecodeRequest(f, new(Request), &lim) }},
		{"Response", AppendResponse(nil, &Response{ClientID: 1}), func(f []byte) error { return DecodeResponse(f, new(Response), &lim) }},
		{"Redirect", AppendRedirect(nil, &Redirect{LeaderAddr: "127.0.0.1:7001"}), func(f []byte) error { return DecodeRedirect(f, new(Redirect), &lim) }},
		{"Message", AppendMessage(nil, &Message{Type: TypeAccept, Ballot: Ballot{1, 1}, Values: [][]byte{[]byte("v")}}),
			func(f []byte) error { return DecodeMessage(f, new(Message), &lim) }},
		{"Decoder", AppendMessage(nil, &Message{Type: TypeHeartbeat, Ballot: Ballot{1, 1}, Commit: 4}),
			func(f []byte) error { return NewDecoder(lim).DecodeMessage(f, new(Message)) }},
	}
	classes := []struct {
		name string
		edit func(f []byte) []byte
		want error
	}{
		{"shorter than header", func(f []byte) []byte { return f[:FrameHeaderSize-1] }, ErrTruncated},
		{"body cut short", func(f []byte) []byte { return f[:len(f)-1] }, ErrTruncated},
		{"body and length cut short", func(f []byte) []byte { return setBodyLen(f[:len(f)-1]) }, ErrTruncated},
		{"trailing garbage after frame", func(f []byte) []byte { return append(f, 0) }, ErrCorrupt},
		{"trailing garbage inside frame", func(f []byte) []byte { return setBodyLen(append(f, 0)) }, ErrCorrupt},
		{"bad version", func(f []byte) []byte { f[headerVersion] = 7; return f }, ErrBadVersion},
		{"unknown type", func(f []byte) []byte { f[headerType] = 200; return f }, ErrUnknownType},
		{"other type", func(f []byte) []byte {
			if f[headerType] == byte(TypeSnapshotChunk) {
				f[headerType] = byte(TypeRequest)
			} else if f[headerType] == byte(TypeResponse) {
				f[headerType] = byte(TypeRequest)
			} else {
				f[headerType] = byte(TypeResponse)
			}
			return f
		}, ErrUnknownType},
		{"reserved byte", func(f []byte) []byte { f[headerReserved] = 3; return f }, ErrCorrupt},
		{"frame over FrameBytesMax", func(f []byte) []byte {
			binary.LittleEndian.PutUint32(f, uint32(lim.FrameBytesMax))
			return f
		}, ErrFrameTooLarge},
	}
	for _, d := range decoders {
		if err := d.decode(clone(d.frame)); err != nil {
			t.Fatalf("%s: the valid frame does not decode: %v", d.name, err)
		}
		for _, c := range classes {
			t.Run(d.name+"/"+c.name, func(t *testing.T) {
				err := d.decode(c.edit(clone(d.frame)))
				if !errors.Is(err, c.want) {
					t.Fatalf("err = %v, want %v", err, c.want)
				}
				if !strings.HasPrefix(err.Error(), "codec: ") {
					t.Fatalf("error %q lacks the package prefix", err)
				}
			})
		}
	}
}

// acceptFrame encodes an Accept and returns the frame and the offset of its values count.
func acceptFrame(values ...[]byte) ([]byte, int) {
	m := Message{Type: TypeAccept, Ballot: Ballot{Round: 1, Replica: 1}, Slot: 10, Values: values}
	return AppendMessage(nil, &m), FrameHeaderSize + 4 + 4 + 12 + 8 + 8
}

func TestDecodeMessageErrors(t *testing.T) {
	lim := smallLimits()
	accept, countAt := acceptFrame([]byte("abc"))
	tests := []struct {
		name  string
		frame func() []byte
		want  error
		field string // must appear in the error text
	}{
		{"values count beyond remaining bytes", func() []byte {
			f := clone(accept)
			binary.LittleEndian.PutUint32(f[countAt:], 0xffffffff)
			return f
		}, ErrTruncated, "values.count"},
		{"values count over ValuesMax", func() []byte {
			vs := make([][]byte, lim.ValuesMax+1)
			f, _ := acceptFrame(vs...)
			return f
		}, ErrLimit, "ValuesMax"},
		{"value length beyond remaining bytes", func() []byte {
			f := clone(accept)
			binary.LittleEndian.PutUint32(f[countAt+4:], 4)
			return f
		}, ErrTruncated, "values[0]"},
		{"value over ValueBytesMax", func() []byte {
			f, _ := acceptFrame(make([]byte, lim.ValueBytesMax+1))
			return f
		}, ErrLimit, "ValueBytesMax"},
		{"Accept without values", func() []byte { f, _ := acceptFrame(); return f }, ErrCorrupt, "no values"},
		{"Accept with zero ballot", func() []byte {
			return AppendMessage(nil, &Message{Type: TypeAccept, Values: [][]byte{nil}})
		}, ErrCorrupt, "ballot"},
		{"Accept slot overflow", func() []byte {
			return AppendMessage(nil, &Message{Type: TypeAccept, Ballot: Ballot{1, 1}, Slot: ^uint64(0), Values: [][]byte{nil, nil}})
		}, ErrCorrupt, "overflows"},
		{"Prepare with zero ballot", func() []byte {
			return AppendMessage(nil, &Message{Type: TypePrepare, Slot: 5})
		}, ErrCorrupt, "ballot"},
		{"entries count over EntriesMax", func() []byte {
			m := Message{Type: TypePromise, Ballot: Ballot{9, 1}}
			for i := range lim.EntriesMax + 1 {
				m.Entries = append(m.Entries, Entry{Slot: uint64(i), Ballot: Ballot{1, 1}})
			}
			return AppendMessage(nil, &m)
		}, ErrLimit, "EntriesMax"},
		{"entries out of order", func() []byte {
			return AppendMessage(nil, &Message{Type: TypePromise, Ballot: Ballot{9, 1},
				Entries: []Entry{{Slot: 5, Ballot: Ballot{1, 1}}, {Slot: 5, Ballot: Ballot{1, 1}}}})
		}, ErrCorrupt, "entries[1]"},
		{"entry below requested slot", func() []byte {
			return AppendMessage(nil, &Message{Type: TypePromise, Ballot: Ballot{9, 1}, Slot: 10,
				Entries: []Entry{{Slot: 9, Ballot: Ballot{1, 1}}}})
		}, ErrCorrupt, "entries[0]"},
		{"entry with zero ballot", func() []byte {
			return AppendMessage(nil, &Message{Type: TypePromise, Ballot: Ballot{9, 1}, Entries: []Entry{{Slot: 1}}})
		}, ErrCorrupt, "ballot is zero"},
		{"snapshot chunk past total", func() []byte {
			return AppendMessage(nil, &Message{Type: TypeSnapshotChunk, Offset: 10, Total: 12, Data: []byte("abc")})
		}, ErrCorrupt, "exceeds total"},
		{"snapshot data over ValueBytesMax", func() []byte {
			return AppendMessage(nil, &Message{Type: TypeSnapshotChunk, Total: 1 << 30, Data: make([]byte, lim.ValueBytesMax+1)})
		}, ErrLimit, "data"},
		{"client frame", func() []byte { return AppendResponse(nil, &Response{}) }, ErrUnknownType, "not a peer type"},
		{"compressed frame without a Decoder", func() []byte {
			f := NewEncoder(true, 1).AppendMessage(nil, &Message{Type: TypeAccept, Ballot: Ballot{1, 1}, Values: [][]byte{make([]byte, 1000)}})
			if f[headerFlags]&FlagCompressed == 0 {
				panic("test frame did not compress")
			}
			return f
		}, ErrCompressed, "compressed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := DecodeMessage(tt.frame(), &m, &lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %q", err, tt.field)
			}
		})
	}
}

func TestDecodeClientAndHandshakeErrors(t *testing.T) {
	lim := smallLimits()
	tests := []struct {
		name   string
		decode func() error
		want   error
	}{
		{"payload over PayloadBytesMax", func() error {
			return DecodeRequest(AppendRequest(nil, &Request{Payload: make([]byte, lim.PayloadBytesMax+1)}), new(Request), &lim)
		}, ErrLimit},
		{"payload length beyond frame", func() error {
			f := AppendRequest(nil, &Request{Payload: []byte("abc")})
			binary.LittleEndian.PutUint32(f[FrameHeaderSize+24:], 1000)
			return DecodeRequest(f, new(Request), &lim)
		}, ErrTruncated},
		{"seq floor above seq", func() error {
			f := AppendRequest(nil, &Request{Seq: 5, SeqFloor: 5})
			binary.LittleEndian.PutUint64(f[FrameHeaderSize+16:], 6)
			return DecodeRequest(f, new(Request), &lim)
		}, ErrCorrupt},
		{"unknown status", func() error {
			return DecodeResponse(AppendResponse(nil, &Response{Status: StatusCompacted + 1}), new(Response), &lim)
		}, ErrCorrupt},
		{"read: unknown mode", func() error {
			f := AppendRequest(nil, &Request{ClientID: 1, Seq: 2, Read: ReadAt, Offset: 3})
			f[FrameHeaderSize+24] = 3
			return DecodeRead(f, new(Request), &lim)
		}, ErrCorrupt},
		{"read: offset with mode latest", func() error {
			return DecodeRead(AppendRequest(nil, &Request{ClientID: 1, Seq: 2, Read: ReadLatest, Offset: 3}), new(Request), &lim)
		}, ErrCorrupt},
		{"read: seq floor above seq", func() error {
			return DecodeRead(AppendRequest(nil, &Request{Seq: 2, SeqFloor: 3, Read: ReadLatest}), new(Request), &lim)
		}, ErrCorrupt},
		{"read: a Request frame", func() error {
			return DecodeRead(AppendRequest(nil, &Request{Seq: 2}), new(Request), &lim)
		}, ErrUnknownType},
		{"read reply: unknown status", func() error {
			return DecodeReadReply(AppendResponse(nil, &Response{Read: ReadLatest, Status: StatusCompacted + 1}), new(Response), &lim)
		}, ErrCorrupt},
		{"read reply: mode none", func() error {
			f := AppendResponse(nil, &Response{Read: ReadLatest})
			f[FrameHeaderSize+17] = 0
			return DecodeReadReply(f, new(Response), &lim)
		}, ErrCorrupt},
		{"read reply: found flag 2", func() error {
			f := AppendResponse(nil, &Response{Read: ReadLatest, Found: true})
			f[FrameHeaderSize+18] = 2
			return DecodeReadReply(f, new(Response), &lim)
		}, ErrCorrupt},
		{"read reply: payload without found", func() error {
			return DecodeReadReply(AppendResponse(nil, &Response{Read: ReadAt, Payload: []byte("x")}), new(Response), &lim)
		}, ErrCorrupt},
		{"read reply: payload over PayloadBytesMax", func() error {
			return DecodeReadReply(AppendResponse(nil, &Response{Read: ReadAt, Found: true, Payload: make([]byte, lim.PayloadBytesMax+1)}), new(Response), &lim)
		}, ErrLimit},
		{"redirect address over PayloadBytesMax", func() error {
			return DecodeRedirect(AppendRedirect(nil, &Redirect{LeaderAddr: strings.Repeat("a", lim.PayloadBytesMax+1)}), new(Redirect), &lim)
		}, ErrLimit},
		{"unknown role", func() error {
			return DecodeHello(AppendHello(nil, &Hello{Version: 1, Role: 3}), new(Hello), &lim)
		}, ErrCorrupt},
		{"peer without replica id", func() error {
			return DecodeHello(AppendHello(nil, &Hello{Version: 1, Role: RolePeer}), new(Hello), &lim)
		}, ErrCorrupt},
		{"client claiming a replica id", func() error {
			return DecodeHello(AppendHello(nil, &Hello{Version: 1, Role: RoleClient, ReplicaID: 3}), new(Hello), &lim)
		}, ErrCorrupt},
		{"hello version zero", func() error {
			return DecodeHello(AppendHello(nil, &Hello{Role: RoleClient}), new(Hello), &lim)
		}, ErrCorrupt},
		{"challenge version zero", func() error {
			return DecodeChallenge(AppendChallenge(nil, &Challenge{}), new(Challenge), &lim)
		}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.decode(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// compressedFrame builds a frame of type typ whose body is the given bytes, flagged compressed.
func compressedFrame(typ MsgType, body []byte) []byte {
	f := appendHeader(nil, typ, FlagCompressed)
	return finishFrame(append(f, body...), 0)
}

func TestDecoderCompressionErrors(t *testing.T) {
	lim := smallLimits()
	dec := NewDecoder(lim)
	var m Message

	// A decompression bomb: a few bytes declaring a body far over FrameBytesMax must be refused
	// before the decoder allocates anything of that size.
	bomb := compressedFrame(TypeAccept, binary.AppendUvarint(nil, 1<<31))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := dec.DecodeMessage(bomb, &m)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("bomb: err = %v, want ErrFrameTooLarge", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("bomb: decoder allocated %d bytes before refusing", grew)
	}

	// Just over the limit, with a real S2 block behind it.
	big := s2.Encode(nil, make([]byte, lim.FrameBytesMax))
	if err := dec.DecodeMessage(compressedFrame(TypeAccept, big), &m); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("over-limit block: err = %v, want ErrFrameTooLarge", err)
	}

	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"bad varint header", compressedFrame(TypeAccept, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), ErrCorrupt},
		{"empty compressed body", compressedFrame(TypeAccept, nil), ErrCorrupt},
		{"garbage block", compressedFrame(TypeCatchUpReply, []byte{20, 0xfe, 0xfe, 0xfe}), ErrCorrupt},
		{"block that decodes to a truncated body", compressedFrame(TypePromise, s2.Encode(nil, []byte{1, 2, 3})), ErrTruncated},
		{"compressed Prepare", func() []byte {
			f := AppendMessage(nil, &Message{Type: TypePrepare, Ballot: Ballot{1, 1}})
			f[headerFlags] = FlagCompressed
			return f
		}(), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := dec.DecodeMessage(tt.frame, &m); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBatchErrors(t *testing.T) {
	lim := smallLimits()
	valid := AppendBatch(nil, []Command{{ClientID: 1, Seq: 2, Payload: []byte("abc")}, {ClientID: 3, Seq: 300, Payload: []byte("de")}})
	tests := []struct {
		name  string
		value func() []byte
		want  error
	}{
		{"short header", func() []byte { return valid[:3] }, ErrTruncated},
		{"unknown format", func() []byte { v := clone(valid); v[0] = 1; return v }, ErrBadVersion},
		{"count zero", func() []byte { v := clone(valid); binary.LittleEndian.PutUint32(v[1:], 0); return v }, ErrCorrupt},
		{"count beyond bytes", func() []byte { v := clone(valid); binary.LittleEndian.PutUint32(v[1:], 1<<30); return v }, ErrTruncated},
		{"count over BatchCommandsMax", func() []byte {
			cmds := make([]Command, lim.BatchCommandsMax+1)
			return AppendBatch(nil, cmds)
		}, ErrLimit},
		{"value over ValueBytesMax", func() []byte {
			return AppendBatch(nil, []Command{{Payload: make([]byte, lim.ValueBytesMax)}})
		}, ErrLimit},
		{"payload over PayloadBytesMax", func() []byte {
			return AppendBatch(nil, []Command{{Payload: make([]byte, lim.PayloadBytesMax+1)}})
		}, ErrLimit},
		{"payload cut short", func() []byte { return valid[:len(valid)-1] }, ErrTruncated},
		{"trailing garbage", func() []byte { return append(clone(valid), 0) }, ErrCorrupt},
		{"count larger than commands", func() []byte {
			v := append(clone(valid), make([]byte, commandBytesMin)...)
			binary.LittleEndian.PutUint32(v[1:], 3)
			v[len(v)-1] = 0x80 // the third command's length varint runs off the end
			return v
		}, ErrTruncated},
		{"non-minimal varint", func() []byte {
			// One command: client id, seq 0 written as 0x80 0x00, length 0.
			v := []byte{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0, 0}
			return v
		}, ErrCorrupt},
		{"non-minimal seq floor distance", func() []byte {
			return []byte{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0x81, 0x00, 0}
		}, ErrCorrupt},
		{"seq floor distance beyond seq", func() []byte {
			// seq 3, distance 4: the floor would be below zero.
			return []byte{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 4, 0}
		}, ErrCorrupt},
		{"seq floor distance cut short", func() []byte {
			return []byte{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x01, 0x80}
		}, ErrTruncated},
		{"overlong varint", func() []byte {
			v := []byte{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}
			v = append(v, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0)
			return v
		}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var it BatchIter
			err := it.Reset(tt.value(), &lim)
			for err == nil && it.Next() {
			}
			if err == nil {
				err = it.Err()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if it.Next() {
				t.Fatal("Next returned true after an error")
			}
		})
	}
	if _, err := BatchCount(valid[:2]); !errors.Is(err, ErrTruncated) {
		t.Fatalf("BatchCount of a cut header: err = %v", err)
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("DefaultLimits: %v", err)
	}
	if err := smallLimits().Validate(); err != nil {
		t.Fatalf("smallLimits: %v", err)
	}
	tests := []struct {
		field string
		edit  func(l *Limits)
	}{
		{"FrameBytesMax", func(l *Limits) { l.FrameBytesMax = 0 }},
		{"FrameBytesMax", func(l *Limits) { l.FrameBytesMax = 1 << 40 }},
		{"PayloadBytesMax", func(l *Limits) { l.PayloadBytesMax = -1 }},
		{"PayloadBytesMax", func(l *Limits) { l.PayloadBytesMax = l.ValueBytesMax + 1 }},
		{"BatchCommandsMax", func(l *Limits) { l.BatchCommandsMax = 0 }},
		{"ValuesMax", func(l *Limits) { l.ValuesMax = 0 }},
		{"EntriesMax", func(l *Limits) { l.EntriesMax = 0 }},
		{"ValueBytesMax", func(l *Limits) { l.ValueBytesMax = 0 }},
		{"ValueBytesMax", func(l *Limits) { l.ValueBytesMax = l.FrameBytesMax + 1 }},
		{"CompressThreshold", func(l *Limits) { l.CompressThreshold = 0 }},
	}
	for _, tt := range tests {
		l := DefaultLimits()
		tt.edit(&l)
		err := l.Validate()
		if !errors.Is(err, ErrInvalidLimits) || !strings.Contains(err.Error(), "Limits."+tt.field) {
			t.Fatalf("%s: Validate = %v, want ErrInvalidLimits naming the field", tt.field, err)
		}
	}
}

// TestPromiseMayCarryChosenEntries: core/ reports values it learned as chosen with the all-ones
// ballot, above any promise; the decoder must let them through.
func TestPromiseMayCarryChosenEntries(t *testing.T) {
	chosen := Ballot{Round: 1<<64 - 1, Replica: 1<<32 - 1}
	m := Message{Type: TypePromise, Ballot: Ballot{Round: 3, Replica: 1}, Slot: 5,
		Entries: []Entry{{Slot: 5, Ballot: chosen, Value: []byte("v")}, {Slot: 6, Ballot: Ballot{Round: 2, Replica: 2}}}}
	var got Message
	if err := DecodeMessage(AppendMessage(nil, &m), &got, nil); err != nil {
		t.Fatalf("Promise with a chosen entry: %v", err)
	}
	if d := diffMessage(&m, &got); d != "" {
		t.Fatal(d)
	}
}
