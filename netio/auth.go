package netio

import (
	"crypto/rand"

	"github.com/mpaxos/mpaxos/codec"
)

// The handshake proves, in both directions, that the other end of a peer link knows the
// cluster secret, without the secret ever crossing the wire (codec.InitiatorMAC/ResponderMAC
// define the exact MAC inputs):
//
//	server    -> connector  Challenge{HandshakeVersion, ClusterID, Nonce_s}
//	connector -> server     Hello{Role, ClusterID, ReplicaID, Features, Nonce_c,
//	                              MAC = InitiatorMAC(secret, T with Features = offered)}
//	server    -> connector  Welcome{ReplicaID, agreed Features, LeaderID,
//	                              MAC = ResponderMAC(secret, T with Features = agreed)}
//
//	T = {ClusterID, Initiator: connector id, Responder: the id the connector dialled (its own
//	     id, for the server), Nonce_s, Nonce_c}
//
// Fresh nonces on both sides keep a recorded exchange from being replayed; naming both ends
// keeps a proof made for one replica from being relayed to another; a label per direction
// keeps the initiator's proof from being reflected as the responder's. Clients send
// RoleClient with a zero MAC and get a Welcome with a zero MAC.

// newNonce draws a fresh nonce from the operating system's CSPRNG.
func newNonce() [codec.NonceSize]byte {
	var n [codec.NonceSize]byte
	// crypto/rand.Read does not fail on supported platforms (since Go 1.24 it aborts the
	// program internally instead of returning an error), so there is nothing to handle.
	_, _ = rand.Read(n[:])
	return n
}
