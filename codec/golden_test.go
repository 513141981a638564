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
	// The peer handshake of docs/PROTOCOL.md §8: replica 1 connects to replica 2 (the proofs'
	// transcript is testTranscript's, secret "cluster secret").
	secret := []byte("cluster secret")
	tr := testTranscript()
	peerHello := Hello{Version: HandshakeVersion, Role: RolePeer, ClusterID: tr.ClusterID, ReplicaID: 1,
		Features: FeatureS2, Nonce: tr.ConnectorNonce, MAC: InitiatorMAC(secret, &tr)}
	peerWelcome := Welcome{ReplicaID: 2, Features: FeatureS2, MAC: ResponderMAC(secret, &tr)}
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
		{"Challenge", AppendChallenge(nil, &Challenge{Version: HandshakeVersion, ClusterID: tr.ClusterID, Nonce: tr.ServerNonce}),
			"2a000000 01 01 00 00  0200 0807060504030201" +
				" 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
		{"Hello", AppendHello(nil, &peerHello),
			"5b000000 01 02 00 00  0200 02 0807060504030201 01000000 0000000000000000 01000000" +
				" 808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f" +
				" 6f924ce078848e8083ae59ae9bc884fbb7f882fb2ed83b5a066e4ab899165081"},
		{"Welcome", AppendWelcome(nil, &peerWelcome),
			"2c000000 01 03 00 00  02000000 01000000 00000000" +
				" dce1aa572886bc41bc2a3665a7712c01d50956b878c3ef2de074e408c8b68d51"},
	}
	for _, tt := range tests {
		if want := unhex(tt.want); !bytes.Equal(tt.got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, tt.got, want)
		}
	}
}
