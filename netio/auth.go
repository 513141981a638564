package netio

import (
	"crypto/rand"

	"github.com/mpaxos/mpaxos/codec"
)

// The handshake proves, in both directions, that the other end of a peer link knows the
// cluster secret, without the secret ever crossing the wire (codec.HelloMAC/WelcomeMAC define
// the exact MAC inputs):
//
//	server    -> connector  Challenge{Version, ClusterID, Nonce_s}
//	connector -> server     Hello{Role, ClusterID, ReplicaID, Features, Nonce_c,
//	                              MAC = HelloMAC(secret, Nonce_s, cluster, connector id, features)}
//	server    -> connector  Welcome{ReplicaID, agreed Features, LeaderID,
//	                              MAC = WelcomeMAC(secret, Nonce_c, cluster, server id, agreed)}
//
// Each side binds its proof to the other side's fresh nonce, so a recorded exchange cannot be
// replayed, and the distinct labels keep a Hello proof from passing as a Welcome proof.
// Clients send RoleClient with a zero MAC and get a Welcome with a zero MAC.

// newNonce draws a fresh nonce from the operating system's CSPRNG.
func newNonce() [codec.NonceSize]byte {
	var n [codec.NonceSize]byte
	// crypto/rand.Read does not fail on supported platforms (since Go 1.24 it aborts the
	// program internally instead of returning an error), so there is nothing to handle.
	_, _ = rand.Read(n[:])
	return n
}
