package codec

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// testTranscript is the transcript of the MAC examples in docs/PROTOCOL.md §8.
func testTranscript() Transcript {
	t := Transcript{ClusterID: 0x0102030405060708, Initiator: 1, Responder: 2, Features: FeatureS2}
	for i := range NonceSize {
		t.ServerNonce[i] = byte(i)
		t.ConnectorNonce[i] = byte(0x80 + i)
	}
	return t
}

// TestHandshakeMACsFollowTheDocumentedLayout recomputes both proofs from the byte layout
// docs/PROTOCOL.md §2 gives, and pins them to the example values of §8.
func TestHandshakeMACsFollowTheDocumentedLayout(t *testing.T) {
	secret := []byte("cluster secret")
	tr := testTranscript()
	manual := func(label string) [MACSize]byte {
		msg := []byte(label)
		msg = append(msg, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01) // cluster id
		msg = append(msg, 1, 0, 0, 0)                                     // initiator 1
		msg = append(msg, 2, 0, 0, 0)                                     // responder 2
		msg = append(msg, tr.ServerNonce[:]...)
		msg = append(msg, tr.ConnectorNonce[:]...)
		msg = append(msg, 1, 0, 0, 0) // FeatureS2
		h := hmac.New(sha256.New, secret)
		h.Write(msg)
		var mac [MACSize]byte
		copy(mac[:], h.Sum(nil))
		return mac
	}
	initiator := InitiatorMAC(secret, &tr)
	responder := ResponderMAC(secret, &tr)
	if !VerifyMAC(initiator, manual("mpaxos-v2-initiator")) {
		t.Fatal("InitiatorMAC does not match the documented input layout")
	}
	if !VerifyMAC(responder, manual("mpaxos-v2-responder")) {
		t.Fatal("ResponderMAC does not match the documented input layout")
	}
	// The example values quoted in docs/PROTOCOL.md §8.
	golden := map[string]struct {
		got  [MACSize]byte
		want string
	}{
		"initiator": {initiator, "6f924ce078848e8083ae59ae9bc884fbb7f882fb2ed83b5a066e4ab899165081"},
		"responder": {responder, "dce1aa572886bc41bc2a3665a7712c01d50956b878c3ef2de074e408c8b68d51"},
	}
	for name, g := range golden {
		if hex.EncodeToString(g.got[:]) != g.want {
			t.Errorf("%s proof of the §8 example: %x, want %s", name, g.got, g.want)
		}
	}
}

// TestHandshakeProofsBindEveryTranscriptField: changing any one field — the secret, the
// cluster, either replica id, either nonce, the features — or the direction changes the proof.
// A proof made for one replica therefore fails at another (a relay), and an initiator's proof
// fails as a responder's (a reflection).
func TestHandshakeProofsBindEveryTranscriptField(t *testing.T) {
	secret := []byte("cluster secret")
	base := testTranscript()
	proof := InitiatorMAC(secret, &base)
	edits := map[string]func(*Transcript){
		"cluster id":                     func(t *Transcript) { t.ClusterID++ },
		"initiator":                      func(t *Transcript) { t.Initiator = 3 },
		"responder (relay to replica 3)": func(t *Transcript) { t.Responder = 3 },
		"ids swapped":                    func(t *Transcript) { t.Initiator, t.Responder = t.Responder, t.Initiator },
		"server nonce":                   func(t *Transcript) { t.ServerNonce[31] ^= 1 },
		"connector nonce":                func(t *Transcript) { t.ConnectorNonce[0] ^= 1 },
		"nonces swapped":                 func(t *Transcript) { t.ServerNonce, t.ConnectorNonce = t.ConnectorNonce, t.ServerNonce },
		"features":                       func(t *Transcript) { t.Features = 0 },
	}
	for name, edit := range edits {
		tr := base
		edit(&tr)
		if VerifyMAC(proof, InitiatorMAC(secret, &tr)) {
			t.Errorf("the initiator's proof does not cover the %s", name)
		}
	}
	if VerifyMAC(proof, ResponderMAC(secret, &base)) {
		t.Error("the initiator's proof passes as the responder's (reflection)")
	}
	if VerifyMAC(proof, InitiatorMAC([]byte("other secret"), &base)) {
		t.Error("the proof does not depend on the secret")
	}
}
