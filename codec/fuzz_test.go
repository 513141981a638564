package codec

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// The fuzz targets decode arbitrary bytes with small limits (so every limit is reachable) and
// check two properties: no panic, and a frame that decodes re-encodes to exactly the same
// bytes (the format has one encoding per message, so a decoder that accepts anything else is
// lenient somewhere). Seeds live in testdata/fuzz/<FuzzName>/; regenerate the generated ones
// with CODEC_WRITE_CORPUS=1 go test ./codec -run TestWriteFuzzCorpus.

// checkSentinel fails unless err wraps one of the decoder sentinels.
func checkSentinel(t *testing.T, err error) {
	t.Helper()
	for _, s := range []error{ErrTruncated, ErrLimit, ErrCorrupt, ErrFrameTooLarge, ErrBadVersion, ErrUnknownType, ErrCompressed, ErrIncomplete} {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error wraps no sentinel: %v", err)
}

func FuzzPeekFrame(f *testing.F) {
	lim := smallLimits()
	f.Fuzz(func(t *testing.T, buf []byte) {
		typ, n, err := PeekFrame(buf, &lim)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if n < FrameHeaderSize || n > len(buf) || n > lim.FrameBytesMax || !typ.Known() {
			t.Fatalf("PeekFrame accepted type %v length %d of a %d-byte buffer", typ, n, len(buf))
		}
		// Whatever the header promised, the body decoder must cope.
		frame := buf[:n]
		switch {
		case typ.IsPeer():
			err = NewDecoder(lim).DecodeMessage(frame, new(Message))
		case typ == TypeChallenge:
			err = DecodeChallenge(frame, new(Challenge), &lim)
		case typ == TypeHello:
			err = DecodeHello(frame, new(Hello), &lim)
		case typ == TypeWelcome:
			err = DecodeWelcome(frame, new(Welcome), &lim)
		case typ == TypeRequest:
			err = DecodeRequest(frame, new(Request), &lim)
		case typ == TypeResponse:
			err = DecodeResponse(frame, new(Response), &lim)
		case typ == TypeRedirect:
			err = DecodeRedirect(frame, new(Redirect), &lim)
		case typ == TypeRead:
			err = DecodeRead(frame, new(Request), &lim)
		case typ == TypeReadReply:
			err = DecodeReadReply(frame, new(Response), &lim)
		}
		if err != nil {
			checkSentinel(t, err)
		}
	})
}

// fuzzFixed is the body of the fuzz targets of the client and handshake frames.
func fuzzFixed[M any](f *testing.F, decode func([]byte, *M, *Limits) error, encode func([]byte, *M) []byte) {
	lim := smallLimits()
	f.Fuzz(func(t *testing.T, frame []byte) {
		var m M
		if err := decode(frame, &m, &lim); err != nil {
			checkSentinel(t, err)
			return
		}
		if again := encode(nil, &m); !bytes.Equal(again, frame) {
			t.Fatalf("decoded %+v re-encodes differently:\nin  %x\nout %x", m, frame, again)
		}
	})
}

func FuzzDecodeChallenge(f *testing.F) { fuzzFixed(f, DecodeChallenge, AppendChallenge) }
func FuzzDecodeHello(f *testing.F)     { fuzzFixed(f, DecodeHello, AppendHello) }
func FuzzDecodeWelcome(f *testing.F)   { fuzzFixed(f, DecodeWelcome, AppendWelcome) }
func FuzzDecodeRequest(f *testing.F)   { fuzzFixed(f, DecodeRequest, AppendRequest) }
func FuzzDecodeResponse(f *testing.F)  { fuzzFixed(f, DecodeResponse, AppendResponse) }
func FuzzDecodeRedirect(f *testing.F)  { fuzzFixed(f, DecodeRedirect, AppendRedirect) }
func FuzzDecodeRead(f *testing.F)      { fuzzFixed(f, DecodeRead, AppendRequest) }
func FuzzDecodeReadReply(f *testing.F) { fuzzFixed(f, DecodeReadReply, AppendResponse) }

func FuzzDecodeMessage(f *testing.F) {
	lim := smallLimits()
	var reused Message
	f.Fuzz(func(t *testing.T, frame []byte) {
		var m Message
		err := DecodeMessage(frame, &m, &lim)
		errReused := DecodeMessage(frame, &reused, &lim)
		if (err == nil) != (errReused == nil) {
			t.Fatalf("fresh and reused Message disagree: %v vs %v", err, errReused)
		}
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if d := diffMessage(&m, &reused); d != "" {
			t.Fatalf("reused Message decodes differently: %s", d)
		}
		if again := AppendMessage(nil, &m); !bytes.Equal(again, frame) {
			t.Fatalf("decoded %+v re-encodes differently:\nin  %x\nout %x", m, frame, again)
		}
	})
}

// FuzzDecoderCompressed drives Decoder, whose seeds are mostly compressed frames, so the fuzzer
// spends its time in S2 blocks and the decompression-size checks.
func FuzzDecoderCompressed(f *testing.F) {
	lim := smallLimits()
	dec := NewDecoder(lim)
	f.Fuzz(func(t *testing.T, frame []byte) {
		var m Message
		if err := dec.DecodeMessage(frame, &m); err != nil {
			checkSentinel(t, err)
			return
		}
		// Whatever decoded must survive a plain and a compressed round trip unchanged.
		var plain, packed Message
		if err := DecodeMessage(AppendMessage(nil, &m), &plain, &lim); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if d := diffMessage(&m, &plain); d != "" {
			t.Fatalf("plain round trip: %s", d)
		}
		if err := NewDecoder(lim).DecodeMessage(NewEncoder(true, 1).AppendMessage(nil, &m), &packed); err != nil {
			t.Fatalf("re-compressed message does not decode: %v", err)
		}
		if d := diffMessage(&m, &packed); d != "" {
			t.Fatalf("compressed round trip: %s", d)
		}
	})
}

func FuzzBatchIter(f *testing.F) {
	lim := smallLimits()
	f.Fuzz(func(t *testing.T, value []byte) {
		var it BatchIter
		err := it.Reset(value, &lim)
		var cmds []Command
		for err == nil && it.Next() {
			if it.Index() != len(cmds) {
				t.Fatalf("Index %d at command %d", it.Index(), len(cmds))
			}
			cmds = append(cmds, it.Command())
		}
		if err == nil {
			err = it.Err()
		}
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if n, err := BatchCount(value); err != nil || n != len(cmds) {
			t.Fatalf("BatchCount = %d, %v after iterating %d commands", n, err, len(cmds))
		}
		if again := AppendBatch(nil, cmds); !bytes.Equal(again, value) {
			t.Fatalf("batch re-encodes differently:\nin  %x\nout %x", value, again)
		}
	})
}

func FuzzBatchCount(f *testing.F) {
	f.Fuzz(func(t *testing.T, value []byte) {
		n, err := BatchCount(value)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if n < 0 || n*commandBytesMin > len(value) {
			t.Fatalf("BatchCount = %d for %d bytes", n, len(value))
		}
	})
}

// seedCorpus returns, per fuzz target, valid inputs and a few broken ones.
func seedCorpus() map[string][][]byte {
	r := rand.New(rand.NewPCG(42, 43))
	var peer [][]byte
	var compressed [][]byte
	enc := NewEncoder(true, 32)
	for _, typ := range peerTypes {
		m := randMessage(r, typ)
		peer = append(peer, AppendMessage(nil, &m))
		if typ.compressible() {
			m.Values = [][]byte{bytes.Repeat([]byte("mpaxos"), 40)}
			if typ == TypePromise {
				m.Values = nil
				m.Entries = []Entry{{Slot: m.Slot, Ballot: m.Ballot, Value: bytes.Repeat([]byte("abcd"), 64)}}
			}
			compressed = append(compressed, enc.AppendMessage(nil, &m))
		}
	}
	broken := func(frames [][]byte) [][]byte {
		out := append([][]byte(nil), frames...)
		for _, f := range frames[:min(3, len(frames))] {
			out = append(out, f[:len(f)-1], append(clone(f), 0), f[:FrameHeaderSize])
		}
		return out
	}
	accept := Message{Type: TypeAccept, Ballot: Ballot{3, 1}, Slot: 100, Commit: 99,
		Values: [][]byte{AppendBatch(nil, []Command{{ClientID: 7, Seq: 1, SeqFloor: 1, Payload: []byte("hello")}})}}
	peer = append(peer, AppendMessage(nil, &accept))
	batches := [][]byte{
		nil,
		AppendBatch(nil, []Command{{ClientID: 1, Seq: 1, Payload: []byte("x")}}),
		AppendBatch(nil, []Command{{ClientID: 2, Seq: 300, SeqFloor: 290}, {ClientID: 3, Seq: 5, SeqFloor: 5, Payload: []byte("y")}}),
		AppendBatch(nil, randCommands(r, 8)),
		{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0, 0},
		{batchFormat, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 4, 0}, // floor distance 4 > seq 3
		{batchFormat, 0xff, 0xff, 0xff, 0xff},
	}
	all := [][]byte{
		AppendChallenge(nil, &Challenge{Version: 1, ClusterID: 9}),
		AppendHello(nil, &Hello{Version: 1, Role: RolePeer, ReplicaID: 2, Features: FeatureS2}),
		AppendWelcome(nil, &Welcome{ReplicaID: 1, Features: FeatureS2, LeaderID: 1}),
		AppendRequest(nil, &Request{ClientID: 5, Seq: 6, SeqFloor: 4, Payload: []byte("payload")}),
		AppendResponse(nil, &Response{ClientID: 5, Seq: 6, Slot: 7, Index: 8}),
		AppendRedirect(nil, &Redirect{ClientID: 5, Seq: 6, LeaderID: 2, LeaderAddr: "127.0.0.1:7002"}),
		AppendRequest(nil, &Request{ClientID: 5, Seq: 9, SeqFloor: 4, Read: ReadAt, Offset: 77}),
		AppendResponse(nil, &Response{ClientID: 5, Seq: 9, Read: ReadAt, Found: true, Length: 80, Slot: 7, Index: 2, Offset: 77, Payload: []byte("value")}),
	}
	return map[string][][]byte{
		"FuzzPeekFrame":         broken(append(append([][]byte(nil), all...), peer[:3]...)),
		"FuzzDecodeChallenge":   broken(all[0:1]),
		"FuzzDecodeHello":       broken(append(all[1:2:2], AppendHello(nil, &Hello{Version: 1, Role: RoleClient, ClientID: 77}))),
		"FuzzDecodeWelcome":     broken(all[2:3]),
		"FuzzDecodeRequest":     broken(append(all[3:4:4], AppendRequest(nil, &Request{ClientID: 1}))),
		"FuzzDecodeResponse":    broken(all[4:5]),
		"FuzzDecodeRedirect":    broken(append(all[5:6:6], AppendRedirect(nil, &Redirect{}))),
		"FuzzDecodeRead":        broken(append(all[6:7:7], AppendRequest(nil, &Request{ClientID: 1, Seq: 2, Read: ReadLatest}))),
		"FuzzDecodeReadReply":   broken(append(all[7:8:8], AppendResponse(nil, &Response{ClientID: 1, Seq: 2, Read: ReadLatest, Status: StatusNotLeader}))),
		"FuzzDecodeMessage":     broken(peer),
		"FuzzDecoderCompressed": broken(append(compressed[:len(compressed):len(compressed)], peer[:4]...)),
		"FuzzBatchIter":         batches,
		"FuzzBatchCount":        batches,
	}
}

// TestWriteFuzzCorpus regenerates the generated seeds under testdata/fuzz. It runs only when
// CODEC_WRITE_CORPUS=1; files it did not write (crashers found by fuzzing) are left alone.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CODEC_WRITE_CORPUS") != "1" {
		t.Skip("set CODEC_WRITE_CORPUS=1 to regenerate testdata/fuzz seeds")
	}
	for name, seeds := range seedCorpus() {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestFuzzCorpusPresent keeps the checked-in corpus from silently disappearing.
func TestFuzzCorpusPresent(t *testing.T) {
	for name := range seedCorpus() {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", name))
		if err != nil || len(entries) == 0 {
			t.Errorf("%s: no seed corpus in testdata/fuzz (%v)", name, err)
		}
	}
}
