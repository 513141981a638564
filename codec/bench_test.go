package codec

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchShapes sweeps the batch shape; the first is the headline case: one Accept carrying one
// batch of 1,000 commands of 16 bytes.
var benchShapes = []struct{ commands, payloadBytes int }{
	{1000, 16},
	{100, 256},
	{10, 4096},
}

func benchCommands(commands, payloadBytes int) []Command {
	r := rand.New(rand.NewPCG(1, 1))
	cmds := make([]Command, commands)
	for i := range cmds {
		p := make([]byte, payloadBytes)
		for j := range p {
			p[j] = byte(r.Uint32())
		}
		// Sixteen clients with dense sequence numbers, as under a load generator: the ids
		// repeat (S2 finds them), the random payloads do not.
		cmds[i] = Command{ClientID: 1<<40 + uint64(i%16), Seq: uint64(1000 + i/16), SeqFloor: uint64(1000 + i/16 - 8), Payload: p}
	}
	return cmds
}

func benchAccept(commands, payloadBytes int) Message {
	return Message{Type: TypeAccept, From: 1, To: 2, Ballot: Ballot{Round: 7, Replica: 1},
		Slot: 123456, Commit: 123450, Values: [][]byte{AppendBatch(nil, benchCommands(commands, payloadBytes))}}
}

func BenchmarkAcceptEncode(b *testing.B) {
	for _, s := range benchShapes {
		m := benchAccept(s.commands, s.payloadBytes)
		for _, compress := range []bool{false, true} {
			b.Run(fmt.Sprintf("s2=%t/commands=%d/payload=%d", compress, s.commands, s.payloadBytes), func(b *testing.B) {
				enc := NewEncoder(compress, DefaultCompressThreshold)
				dst := enc.AppendMessage(nil, &m)
				b.SetBytes(int64(len(dst)))
				b.ReportAllocs()
				for b.Loop() {
					dst = enc.AppendMessage(dst[:0], &m)
				}
			})
		}
	}
}

func BenchmarkAcceptDecode(b *testing.B) {
	for _, s := range benchShapes {
		m := benchAccept(s.commands, s.payloadBytes)
		for _, compress := range []bool{false, true} {
			b.Run(fmt.Sprintf("s2=%t/commands=%d/payload=%d", compress, s.commands, s.payloadBytes), func(b *testing.B) {
				frame := NewEncoder(compress, DefaultCompressThreshold).AppendMessage(nil, &m)
				if compress && frame[headerFlags]&FlagCompressed == 0 {
					b.Skip("S2 does not shrink this body, so the Encoder sends it plain")
				}
				dec := NewDecoder(DefaultLimits())
				var got Message
				if err := dec.DecodeMessage(frame, &got); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				for b.Loop() {
					if err := dec.DecodeMessage(frame, &got); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(AppendMessage(nil, &m)))/float64(len(frame)), "ratio")
			})
		}
	}
}

// BenchmarkResponseStream encodes a run of Responses into one buffer, as a connection's reply
// path coalesces them, then splits and decodes them as a client's reader does.
func BenchmarkResponseStream(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("responses=%d", n), func(b *testing.B) {
			resps := make([]Response, n)
			for i := range resps {
				resps[i] = Response{ClientID: 42, Seq: uint64(i), Slot: 1 << 20, Index: uint32(i)}
			}
			buf := make([]byte, 0, n*(FrameHeaderSize+responseBodySize))
			b.SetBytes(int64(cap(buf)))
			b.ReportAllocs()
			var got Response
			for b.Loop() {
				buf = buf[:0]
				for i := range resps {
					buf = AppendResponse(buf, &resps[i])
				}
				for rest := buf; len(rest) > 0; {
					_, size, err := PeekFrame(rest, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := DecodeResponse(rest[:size], &got, nil); err != nil {
						b.Fatal(err)
					}
					rest = rest[size:]
				}
			}
		})
	}
}

func BenchmarkBatchBuild(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("commands=%d/payload=%d", s.commands, s.payloadBytes), func(b *testing.B) {
			cmds := benchCommands(s.commands, s.payloadBytes)
			var bb BatchBuilder
			buf := AppendBatch(nil, cmds)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				bb.Reset(buf)
				for i := range cmds {
					bb.Add(cmds[i].ClientID, cmds[i].Seq, cmds[i].SeqFloor, cmds[i].Payload)
				}
				buf = bb.Bytes()
			}
		})
	}
}

func BenchmarkBatchIter(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("commands=%d/payload=%d", s.commands, s.payloadBytes), func(b *testing.B) {
			value := AppendBatch(nil, benchCommands(s.commands, s.payloadBytes))
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			var it BatchIter
			var sum uint64
			for b.Loop() {
				if err := it.Reset(value, nil); err != nil {
					b.Fatal(err)
				}
				for it.Next() {
					sum += it.Command().Seq
				}
				if it.Err() != nil {
					b.Fatal(it.Err())
				}
			}
			if sum == 0 {
				b.Fatal("iterated nothing")
			}
		})
	}
}
