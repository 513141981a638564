package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

const roundTripIterations = 2000

func TestRoundTripHandshake(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range roundTripIterations {
		c := Challenge{Version: uint16(1 + r.IntN(65535)), ClusterID: randUint64(r)}
		fillRandom(r, c.Nonce[:])
		var gotC Challenge
		if err := DecodeChallenge(AppendChallenge(nil, &c), &gotC, nil); err != nil || gotC != c {
			t.Fatalf("iteration %d: Challenge: err %v\nwant %+v\ngot  %+v", i, err, c, gotC)
		}

		h := Hello{Version: uint16(1 + r.IntN(65535)), ClusterID: randUint64(r), Features: randUint32(r)}
		if r.IntN(2) == 0 {
			h.Role, h.ReplicaID = RolePeer, 1+uint32(r.IntN(1000))
		} else {
			h.Role, h.ClientID = RoleClient, randUint64(r)
		}
		fillRandom(r, h.Nonce[:])
		fillRandom(r, h.MAC[:])
		var gotH Hello
		if err := DecodeHello(AppendHello(nil, &h), &gotH, nil); err != nil || gotH != h {
			t.Fatalf("iteration %d: Hello: err %v\nwant %+v\ngot  %+v", i, err, h, gotH)
		}

		w := Welcome{ReplicaID: randUint32(r), Features: randUint32(r), LeaderID: randUint32(r)}
		fillRandom(r, w.MAC[:])
		var gotW Welcome
		if err := DecodeWelcome(AppendWelcome(nil, &w), &gotW, nil); err != nil || gotW != w {
			t.Fatalf("iteration %d: Welcome: err %v\nwant %+v\ngot  %+v", i, err, w, gotW)
		}
	}
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func responsesEqual(a, b Response) bool {
	return a.ClientID == b.ClientID && a.Seq == b.Seq && a.Status == b.Status && a.Slot == b.Slot &&
		a.Index == b.Index && a.Offset == b.Offset && a.Read == b.Read && a.Found == b.Found &&
		a.Length == b.Length && bytes.Equal(a.Payload, b.Payload)
}

func TestRoundTripClientFrames(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var gotReq Request
	var gotResp Response
	var gotRedir Redirect
	for i := range roundTripIterations {
		seq := randUint64(r)
		req := Request{ClientID: randUint64(r), Seq: seq, SeqFloor: seq - min(seq, randUint64(r)), Payload: randBytes(r, 2000)}
		if err := DecodeRequest(AppendRequest(nil, &req), &gotReq, nil); err != nil ||
			gotReq.ClientID != req.ClientID || gotReq.Seq != req.Seq || gotReq.SeqFloor != req.SeqFloor ||
			!bytes.Equal(gotReq.Payload, req.Payload) {
			t.Fatalf("iteration %d: Request: err %v\nwant %+v\ngot  %+v", i, err, req, gotReq)
		}

		resp := Response{ClientID: randUint64(r), Seq: randUint64(r), Status: Status(r.IntN(int(StatusAbandoned) + 1)),
			Slot: randUint64(r), Index: randUint32(r), Offset: randUint64(r)}
		if err := DecodeResponse(AppendResponse(nil, &resp), &gotResp, nil); err != nil || !responsesEqual(gotResp, resp) {
			t.Fatalf("iteration %d: Response: err %v\nwant %+v\ngot  %+v", i, err, resp, gotResp)
		}

		read := Request{ClientID: randUint64(r), Seq: seq, SeqFloor: req.SeqFloor, Read: ReadLatest}
		if r.IntN(2) == 0 {
			read.Read, read.Offset = ReadAt, randUint64(r)
		}
		if err := DecodeRead(AppendRequest(nil, &read), &gotReq, nil); err != nil ||
			gotReq.ClientID != read.ClientID || gotReq.Seq != read.Seq || gotReq.SeqFloor != read.SeqFloor ||
			gotReq.Read != read.Read || gotReq.Offset != read.Offset || gotReq.Payload != nil {
			t.Fatalf("iteration %d: Read: err %v\nwant %+v\ngot  %+v", i, err, read, gotReq)
		}

		reply := Response{ClientID: randUint64(r), Seq: randUint64(r), Status: Status(r.IntN(int(StatusCompacted) + 1)),
			Read: ReadMode(1 + r.IntN(2)), Length: randUint64(r), Slot: randUint64(r), Index: randUint32(r), Offset: randUint64(r)}
		if r.IntN(3) > 0 {
			reply.Found, reply.Payload = true, randBytes(r, 300)
		}
		if err := DecodeReadReply(AppendResponse(nil, &reply), &gotResp, nil); err != nil || !responsesEqual(gotResp, reply) {
			t.Fatalf("iteration %d: ReadReply: err %v\nwant %+v\ngot  %+v", i, err, reply, gotResp)
		}

		redir := Redirect{ClientID: randUint64(r), Seq: randUint64(r), LeaderID: randUint32(r), LeaderAddr: string(randBytes(r, 40))}
		if err := DecodeRedirect(AppendRedirect(nil, &redir), &gotRedir, nil); err != nil || gotRedir != redir {
			t.Fatalf("iteration %d: Redirect: err %v\nwant %+v\ngot  %+v", i, err, redir, gotRedir)
		}
	}
}

// TestRoundTripMessages encodes random messages of every peer type plainly and through a
// compressing Encoder, and decodes them into a fresh and into a reused Message.
func TestRoundTripMessages(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	enc := NewEncoder(true, 64)
	dec := NewDecoder(DefaultLimits())
	var reused, reusedCompressed Message
	compressed := 0
	for _, typ := range peerTypes {
		t.Run(typ.String(), func(t *testing.T) {
			for i := range roundTripIterations / 4 {
				m := randMessage(r, typ)
				frame := AppendMessage(nil, &m)
				if got, n, err := PeekFrame(frame, nil); err != nil || got != typ || n != len(frame) {
					t.Fatalf("iteration %d: PeekFrame = %v, %d, %v; want %v, %d", i, got, n, err, typ, len(frame))
				}
				var fresh Message
				if err := DecodeMessage(frame, &fresh, nil); err != nil {
					t.Fatalf("iteration %d: DecodeMessage: %v", i, err)
				}
				if d := diffMessage(&m, &fresh); d != "" {
					t.Fatalf("iteration %d: fresh decode: %s", i, d)
				}
				if err := DecodeMessage(frame, &reused, nil); err != nil {
					t.Fatalf("iteration %d: DecodeMessage into reused: %v", i, err)
				}
				if d := diffMessage(&m, &reused); d != "" {
					t.Fatalf("iteration %d: reused decode: %s", i, d)
				}

				packed := enc.AppendMessage([]byte("prefix"), &m)
				if !bytes.Equal(packed[:6], []byte("prefix")) {
					t.Fatalf("iteration %d: Encoder overwrote dst's existing bytes", i)
				}
				packed = packed[6:]
				if packed[headerFlags]&FlagCompressed != 0 {
					compressed++
					if !typ.compressible() {
						t.Fatalf("iteration %d: Encoder compressed a %s", i, typ)
					}
				}
				if err := dec.DecodeMessage(packed, &reusedCompressed); err != nil {
					t.Fatalf("iteration %d: Decoder.DecodeMessage: %v", i, err)
				}
				if d := diffMessage(&m, &reusedCompressed); d != "" {
					t.Fatalf("iteration %d: Decoder decode: %s", i, d)
				}
			}
		})
	}
	if compressed == 0 {
		t.Fatal("no frame was compressed: the compression path went untested")
	}
}

// TestStreamOfFrames appends frames of every type into one buffer and reads them back with
// PeekFrame, as a connection would.
func TestStreamOfFrames(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var stream []byte
	var want []Message
	for range 500 {
		m := randMessage(r, peerTypes[r.IntN(len(peerTypes))])
		want = append(want, m)
		stream = AppendMessage(stream, &m)
	}
	var got Message
	for i := range want {
		// Every strict prefix of the next frame is incomplete, never an error.
		_, n, err := PeekFrame(stream, nil)
		if err != nil {
			t.Fatalf("frame %d: PeekFrame: %v", i, err)
		}
		for _, cut := range []int{0, 1, FrameHeaderSize - 1, FrameHeaderSize, n - 1} {
			if cut < 0 || cut >= n {
				continue
			}
			if _, _, err := PeekFrame(stream[:cut], nil); err != ErrIncomplete {
				t.Fatalf("frame %d cut at %d of %d: PeekFrame err %v, want ErrIncomplete", i, cut, n, err)
			}
		}
		if err := DecodeMessage(stream[:n], &got, nil); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if d := diffMessage(&want[i], &got); d != "" {
			t.Fatalf("frame %d: %s", i, d)
		}
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Fatalf("%d bytes left over", len(stream))
	}
}

func TestRoundTripBatch(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	var b BatchBuilder
	var it BatchIter
	buf := make([]byte, 0, 1024)
	for i := range roundTripIterations {
		cmds := randCommands(r, 50)
		value := AppendBatch(nil, cmds)
		b.Reset(buf)
		for _, c := range cmds {
			b.Add(c.ClientID, c.Seq, c.SeqFloor, c.Payload)
		}
		if b.Count() != len(cmds) || b.Len() != len(value) || !bytes.Equal(b.Bytes(), value) {
			t.Fatalf("iteration %d: BatchBuilder (count %d, len %d) disagrees with AppendBatch (count %d, len %d)",
				i, b.Count(), b.Len(), len(cmds), len(value))
		}
		if n, err := BatchCount(value); err != nil || n != len(cmds) {
			t.Fatalf("iteration %d: BatchCount = %d, %v; want %d", i, n, err, len(cmds))
		}
		if err := it.Reset(value, nil); err != nil {
			t.Fatalf("iteration %d: Reset: %v", i, err)
		}
		j := 0
		for it.Next() {
			c := it.Command()
			if it.Index() != j || c.ClientID != cmds[j].ClientID || c.Seq != cmds[j].Seq || c.SeqFloor != cmds[j].SeqFloor || !bytes.Equal(c.Payload, cmds[j].Payload) {
				t.Fatalf("iteration %d command %d (index %d): want %+v got %+v", i, j, it.Index(), cmds[j], c)
			}
			j++
		}
		if it.Err() != nil || j != len(cmds) {
			t.Fatalf("iteration %d: iterated %d of %d commands, err %v", i, j, len(cmds), it.Err())
		}
		buf = b.Bytes()
	}
}

func TestEmptyBatchIsNoOp(t *testing.T) {
	if v := AppendBatch(nil, nil); len(v) != 0 {
		t.Fatalf("AppendBatch of no commands = %x, want empty", v)
	}
	var b BatchBuilder
	b.Reset(make([]byte, 10))
	if b.Len() != 0 || len(b.Bytes()) != 0 || b.Count() != 0 {
		t.Fatalf("empty builder: Len %d, Bytes %x, Count %d", b.Len(), b.Bytes(), b.Count())
	}
	var zero BatchBuilder
	zero.Add(1, 2, 1, []byte("x"))
	if n, err := BatchCount(zero.Bytes()); err != nil || n != 1 {
		t.Fatalf("zero-value builder after one Add: BatchCount = %d, %v", n, err)
	}
	var it BatchIter
	if err := it.Reset(nil, nil); err != nil || it.Next() || it.Err() != nil || it.Index() != -1 {
		t.Fatalf("empty value: Reset err %v, Err %v, Index %d", err, it.Err(), it.Index())
	}
	if n, err := BatchCount(nil); err != nil || n != 0 {
		t.Fatalf("BatchCount(empty) = %d, %v", n, err)
	}
}

// TestEncodersReuseCapacity checks that encoders append without allocating when dst has room.
func TestEncodersReuseCapacity(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	accept := randMessage(r, TypeAccept)
	promise := randMessage(r, TypePromise)
	resp := Response{ClientID: 1, Seq: 2, Slot: 3}
	req := Request{ClientID: 1, Seq: 2, Payload: []byte("payload")}
	enc := NewEncoder(true, 16)
	dst := make([]byte, 0, 1<<20)
	enc.AppendMessage(dst, &accept) // warm the scratch buffer
	enc.AppendMessage(dst, &promise)
	allocs := testing.AllocsPerRun(100, func() {
		d := AppendMessage(dst, &accept)
		d = AppendMessage(d, &promise)
		d = enc.AppendMessage(d, &accept)
		d = enc.AppendMessage(d, &promise)
		d = AppendResponse(d, &resp)
		_ = AppendRequest(d, &req)
	})
	if allocs != 0 {
		t.Fatalf("encoders allocated %.1f times per run with a large enough dst", allocs)
	}
}

// TestDecodersDoNotAllocate checks the hot-path decoders once the Message has capacity.
func TestDecodersDoNotAllocate(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	var frames [][]byte
	enc := NewEncoder(true, 16)
	for _, typ := range peerTypes {
		m := randMessage(r, typ)
		frames = append(frames, AppendMessage(nil, &m), enc.AppendMessage(nil, &m))
	}
	resp := AppendResponse(nil, &Response{ClientID: 9})
	req := AppendRequest(nil, &Request{ClientID: 9, Payload: []byte("abc")})
	dec := NewDecoder(DefaultLimits())
	var m Message
	var gotResp Response
	var gotReq Request
	run := func() {
		for _, f := range frames {
			if err := dec.DecodeMessage(f, &m); err != nil {
				t.Fatal(err)
			}
		}
		if DecodeResponse(resp, &gotResp, nil) != nil || DecodeRequest(req, &gotReq, nil) != nil {
			t.Fatal("client frame decode failed")
		}
	}
	run() // grow m.Values, m.Entries and the decoder's scratch
	if allocs := testing.AllocsPerRun(50, run); allocs != 0 {
		t.Fatalf("decoders allocated %.1f times per run once warm", allocs)
	}
}
