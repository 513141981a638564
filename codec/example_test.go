package codec_test

import (
	"errors"
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
)

// A connection's read loop: split the buffered bytes into frames with PeekFrame, decode each,
// and keep the incomplete tail for the next read.
func ExamplePeekFrame() {
	var stream []byte
	for seq := uint64(1); seq <= 3; seq++ {
		stream = codec.AppendResponse(stream, &codec.Response{ClientID: 7, Seq: seq, Slot: 100, Index: uint32(seq - 1)})
	}
	stream = stream[:len(stream)-5] // the last frame has not fully arrived

	limits := codec.DefaultLimits()
	var resp codec.Response
	for {
		typ, frameLen, err := codec.PeekFrame(stream, &limits)
		if errors.Is(err, codec.ErrIncomplete) {
			fmt.Printf("waiting for more bytes (%d buffered)\n", len(stream))
			return
		}
		if err != nil {
			fmt.Println("close the connection:", err)
			return
		}
		if typ == codec.TypeResponse {
			if err := codec.DecodeResponse(stream[:frameLen], &resp, &limits); err != nil {
				fmt.Println("close the connection:", err)
				return
			}
			fmt.Printf("seq %d chosen at (%d, %d)\n", resp.Seq, resp.Slot, resp.Index)
		}
		stream = stream[frameLen:]
	}
	// Output:
	// seq 1 chosen at (100, 0)
	// seq 2 chosen at (100, 1)
	// waiting for more bytes (40 buffered)
}

// Building a slot value from commands and walking it back.
func ExampleBatchIter() {
	var b codec.BatchBuilder
	b.Reset(nil)
	b.Add(1, 10, 9, []byte("set x 1")) // client 1 has answers for every seq below 9
	b.Add(2, 20, 20, []byte("set y 2"))
	value := b.Bytes()

	var it codec.BatchIter
	if err := it.Reset(value, nil); err != nil {
		fmt.Println(err)
		return
	}
	for it.Next() {
		c := it.Command()
		fmt.Printf("index %d: client %d seq %d %q\n", it.Index(), c.ClientID, c.Seq, c.Payload)
	}
	if err := it.Err(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// index 0: client 1 seq 10 "set x 1"
	// index 1: client 2 seq 20 "set y 2"
}
