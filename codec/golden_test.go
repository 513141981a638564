package codec

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// TestGoldenFrames pins the exact bytes of the examples in docs/PROTOCOL.md §8. If this test
// fails, the wire format changed: that breaks every deployed peer and client and every WAL.
func TestGoldenFrames(t *testing.T) {
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := AppendBatch(nil, []Command{{ClientID: 42, Seq: 7, SeqFloor: 5, Payload: []byte("hi")}, {ClientID: 43, Seq: 300, SeqFloor: 300}})
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"Response", AppendResponse(nil, &Response{ClientID: 42, Seq: 7, Status: StatusOK, Slot: 1000, Index: 3, Offset: 5000}),
			"25000000 01 0b 00 00  2a00000000000000 0700000000000000 00 e803000000000000 03000000 8813000000000000"},
		{"Request", AppendRequest(nil, &Request{ClientID: 42, Seq: 7, SeqFloor: 5, Payload: []byte("hi")}),
			"1e000000 01 0a 00 00  2a00000000000000 0700000000000000 0500000000000000 02000000 6869"},
		{"Read", AppendRequest(nil, &Request{ClientID: 42, Seq: 8, SeqFloor: 5, Read: ReadAt, Offset: 4999}),
			"21000000 01 0d 00 00  2a00000000000000 0800000000000000 0500000000000000 02 8713000000000000"},
		{"ReadReply", AppendResponse(nil, &Response{ClientID: 42, Seq: 8, Status: StatusOK, Read: ReadAt, Found: true,
			Length: 5001, Slot: 1000, Index: 2, Offset: 4999, Payload: []byte("hi")}),
			"35000000 01 0e 00 00  2a00000000000000 0800000000000000 00 02 01 8913000000000000 e803000000000000" +
				" 02000000 8713000000000000 02000000 6869"},
		{"Batch", batch,
			"02 02000000  2a00000000000000 07 02 02 6869  2b00000000000000 ac02 00 00"},
		{"Accept", AppendMessage(nil, &Message{Type: TypeAccept, From: 1, To: 2, Ballot: Ballot{Round: 5, Replica: 1},
			Slot: 100, Commit: 99, Values: [][]byte{batch, nil}}),
			"4e000000 01 16 00 00  01000000 02000000  0500000000000000 01000000  6400000000000000 6300000000000000" +
				" 02000000 1e000000 02020000002a0000000000000007020268692b00000000000000ac020000 00000000"},
		{"PreVote", AppendMessage(nil, &Message{Type: TypePreVote, From: 1, To: 2, Ballot: Ballot{Round: 6, Replica: 1}, Slot: 100}),
			"1c000000 01 1e 00 00  01000000 02000000  0600000000000000 01000000  6400000000000000"},
		{"PreVoteReply", AppendMessage(nil, &Message{Type: TypePreVoteReply, From: 2, To: 1, Ballot: Ballot{Round: 6, Replica: 1}, Count: 1}),
			"1c000000 01 1f 00 00  02000000 01000000  0600000000000000 01000000  0100000000000000"},
		{"Challenge", AppendChallenge(nil, &Challenge{Version: 1, ClusterID: 9}),
			"2a000000 01 01 00 00  0100 0900000000000000" + strings.Repeat("00", NonceSize)},
	}
	for _, tt := range tests {
		if want := unhex(tt.want); !bytes.Equal(tt.got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, tt.got, want)
		}
	}
}
