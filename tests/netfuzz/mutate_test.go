package netfuzz

import (
	"encoding/binary"

	"github.com/klauspost/compress/s2"

	"github.com/mpaxos/mpaxos/codec"
)

// mutation names one way of damaging a well-formed frame.
type mutation int

const (
	mutateFlipBits  mutation = iota // flip a few random bits anywhere
	mutateTruncate                  // cut the frame short (the header still claims the full body)
	mutateExtend                    // append bytes the header does not count
	mutateLength                    // rewrite the header's body length
	mutateHeader                    // rewrite the version, type, flags or reserved byte
	mutateOverwrite                 // write an edge value over a random field-sized span of the body
	mutateCount                     // write a huge u32 where a count or length could sit
	mutateSplice                    // the head of the frame with the tail of another
	mutateRepeat                    // repeat a span of the body (the header still claims the old length)
	mutateCompress                  // set the compressed flag over garbage, or over a decompression bomb
	mutationCount
)

var mutationNames = [mutationCount]string{"flip-bits", "truncate", "extend", "length", "header",
	"overwrite", "count", "splice", "repeat", "compress"}

func (m mutation) String() string { return mutationNames[m] }

// Lengths a rewritten header may claim: around the body's true size, zero, the limits of
// each kind of connection and one past them, and the largest a u32 can say.
func (g *generator) claimedLength(body int) uint32 {
	claims := []uint32{0, 1, uint32(body) - 1, uint32(body) + 1, uint32(body) * 2,
		codec.DefaultFrameBytesMax - codec.FrameHeaderSize, codec.DefaultFrameBytesMax - codec.FrameHeaderSize + 1,
		codec.DefaultPayloadBytesMax + 28, codec.DefaultPayloadBytesMax + 29, 4096, 4097, 1<<32 - 1}
	if g.chance(20) {
		return g.u32()
	}
	return claims[g.rng.IntN(len(claims))]
}

// mutate returns a damaged copy of frame (which it does not modify) and how it was damaged;
// other is a second well-formed frame for splicing.
func (g *generator) mutate(frame, other []byte) ([]byte, mutation) {
	out := append([]byte(nil), frame...)
	how := mutation(g.rng.IntN(int(mutationCount)))
	body := len(out) - codec.FrameHeaderSize
	switch how {
	case mutateFlipBits:
		for range 1 + g.rng.IntN(8) {
			i := g.rng.IntN(len(out))
			out[i] ^= 1 << g.rng.IntN(8)
		}
	case mutateTruncate:
		out = out[:g.rng.IntN(len(out))]
	case mutateExtend:
		out = append(out, g.bytes(1+g.rng.IntN(smallBytesMax))...)
	case mutateLength:
		binary.LittleEndian.PutUint32(out, g.claimedLength(body))
	case mutateHeader:
		switch g.rng.IntN(4) {
		case 0:
			out[4] = byte(g.u32()) // version
		case 1:
			out[5] = byte(g.rng.IntN(256)) // type: known or not, right for the connection or not
		case 2:
			out[6] = byte(1 << g.rng.IntN(8)) // a flag, defined or not
		default:
			out[7] = byte(1 + g.rng.IntN(255)) // reserved
		}
	case mutateOverwrite:
		g.overwrite(out[codec.FrameHeaderSize:])
	case mutateCount:
		if body >= 4 {
			at := codec.FrameHeaderSize + g.rng.IntN(body-3)
			binary.LittleEndian.PutUint32(out[at:], edgesU32[len(edgesU32)-1-g.rng.IntN(6)])
		}
	case mutateSplice:
		cut, from := g.rng.IntN(len(out)+1), g.rng.IntN(len(other)+1)
		out = append(out[:cut], other[from:]...)
	case mutateRepeat:
		if body > 0 {
			start := codec.FrameHeaderSize + g.rng.IntN(body)
			end := start + 1 + g.rng.IntN(len(out)-start)
			out = append(out[:end], append(append([]byte(nil), out[start:end]...), out[end:]...)...)
		}
	case mutateCompress:
		out = g.compressed(out)
	}
	return out, how
}

// overwrite writes an edge value of 1, 2, 4 or 8 bytes at a random offset of body.
func (g *generator) overwrite(body []byte) {
	width := 1 << g.rng.IntN(4)
	if len(body) < width {
		return
	}
	var v [8]byte
	binary.LittleEndian.PutUint64(v[:], g.u64())
	copy(body[g.rng.IntN(len(body)-width+1):], v[:width])
}

// compressed sets the compressed flag and replaces the body with one of: garbage, a valid S2
// block of the body (legal only on three types), or a block that declares a decoded size far
// beyond the frame limit (a decompression bomb, which must be refused before any allocation).
func (g *generator) compressed(frame []byte) []byte {
	if len(frame) < codec.FrameHeaderSize {
		return frame
	}
	var body []byte
	switch g.rng.IntN(3) {
	case 0:
		body = g.bytes(g.length())
	case 1:
		body = s2.Encode(nil, frame[codec.FrameHeaderSize:])
	default:
		body = binary.AppendUvarint(nil, uint64(g.u32())|1<<31)
		body = append(body, g.bytes(g.rng.IntN(smallBytesMax))...)
	}
	out := append([]byte(nil), frame[:codec.FrameHeaderSize]...)
	out[6] |= codec.FlagCompressed
	binary.LittleEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...)
}
