package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// An Encoder that meets incompressible bodies stops trying S2 on each one (it backs off), yet
// compresses again once compressible bodies come back; every frame still decodes to the same
// message.
func TestEncoderBacksOffOnIncompressibleBodies(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 8192)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	zeros := make([]byte, 8192)
	enc := NewEncoder(true, DefaultCompressThreshold)
	dec := NewDecoder(DefaultLimits())
	lim := DefaultLimits()
	send := func(v []byte) bool {
		t.Helper()
		m := Message{Type: TypeAccept, From: 1, To: 2, Ballot: Ballot{Round: 1, Replica: 1}, Values: [][]byte{v}}
		frame := enc.AppendMessage(nil, &m)
		if _, n, err := PeekFrame(frame, &lim); err != nil || n != len(frame) {
			t.Fatalf("PeekFrame: %d of %d bytes, %v", n, len(frame), err)
		}
		var got Message
		if err := dec.DecodeMessage(frame, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Values) != 1 || !bytes.Equal(got.Values[0], v) {
			t.Fatal("the frame does not decode to the value sent")
		}
		return frame[headerFlags]&FlagCompressed != 0
	}
	for i := range 10 {
		if send(random) {
			t.Fatalf("random body %d was sent compressed", i)
		}
	}
	if enc.skip == 0 || enc.misses == 0 {
		t.Fatalf("after 10 incompressible bodies: skip %d, misses %d; want a back-off", enc.skip, enc.misses)
	}
	compressed := 0
	for range 2 * compressSkipMax {
		if send(zeros) {
			compressed++
		}
	}
	if compressed < compressSkipMax {
		t.Fatalf("%d of %d compressible bodies compressed after the back-off, want most", compressed, 2*compressSkipMax)
	}
}

// The back-off bounds S2's work on a stream of incompressible bodies.
func BenchmarkEncoderIncompressibleStream(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	v := make([]byte, 64<<10)
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	m := Message{Type: TypeAccept, From: 1, To: 2, Ballot: Ballot{Round: 1, Replica: 1}, Values: [][]byte{v}}
	for _, compress := range []bool{false, true} {
		b.Run("s2="+map[bool]string{false: "off", true: "on"}[compress], func(b *testing.B) {
			enc := NewEncoder(compress, DefaultCompressThreshold)
			dst := enc.AppendMessage(nil, &m)
			b.SetBytes(int64(len(v)))
			b.ReportAllocs()
			for b.Loop() {
				dst = enc.AppendMessage(dst[:0], &m)
			}
		})
	}
}
