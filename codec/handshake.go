package codec

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// Body sizes of the fixed-size handshake frames. These constants are part of the format.
const (
	challengeBodySize = 2 + 8 + NonceSize
	helloBodySize     = 2 + 1 + 8 + 4 + 8 + 4 + NonceSize + MACSize
	welcomeBodySize   = 4 + 4 + 4 + MACSize
)

// Labels that open the HMAC inputs, so a Hello proof can never be replayed as a Welcome proof.
// These constants are part of the format.
const (
	helloMACLabel   = "mpaxos-hello"
	welcomeMACLabel = "mpaxos-welcome"
)

// AppendChallenge appends m as one frame to dst.
func AppendChallenge(dst []byte, m *Challenge) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeChallenge, 0)
	dst = appendU16(dst, m.Version)
	dst = appendU64(dst, m.ClusterID)
	dst = append(dst, m.Nonce[:]...)
	return finishFrame(dst, start)
}

// DecodeChallenge decodes one whole Challenge frame into m. A nil lim means DefaultLimits.
func DecodeChallenge(frame []byte, m *Challenge, lim *Limits) error {
	body, _, err := checkFrame(frame, TypeChallenge, limitsOrDefault(lim))
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeChallenge}
	m.Version = r.u16("version")
	m.ClusterID = r.u64("cluster_id")
	copy(m.Nonce[:], r.take("nonce", NonceSize))
	if r.err == nil && m.Version == 0 {
		r.corrupt("version 0")
	}
	return r.end()
}

// AppendHello appends m as one frame to dst.
func AppendHello(dst []byte, m *Hello) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeHello, 0)
	dst = appendU16(dst, m.Version)
	dst = append(dst, byte(m.Role))
	dst = appendU64(dst, m.ClusterID)
	dst = appendU32(dst, m.ReplicaID)
	dst = appendU64(dst, m.ClientID)
	dst = appendU32(dst, m.Features)
	dst = append(dst, m.Nonce[:]...)
	dst = append(dst, m.MAC[:]...)
	return finishFrame(dst, start)
}

// DecodeHello decodes one whole Hello frame into m. It checks that the role is known and that
// the ids fit it (a peer names a non-zero ReplicaID and no ClientID; a client no ReplicaID). It
// does not check the MAC: that needs the secret (see HelloMAC).
func DecodeHello(frame []byte, m *Hello, lim *Limits) error {
	body, _, err := checkFrame(frame, TypeHello, limitsOrDefault(lim))
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeHello}
	m.Version = r.u16("version")
	m.Role = Role(r.u8("role"))
	m.ClusterID = r.u64("cluster_id")
	m.ReplicaID = r.u32("replica_id")
	m.ClientID = r.u64("client_id")
	m.Features = r.u32("features")
	copy(m.Nonce[:], r.take("nonce", NonceSize))
	copy(m.MAC[:], r.take("mac", MACSize))
	if r.err == nil {
		switch {
		case m.Version == 0:
			r.corrupt("version 0")
		case m.Role != RoleClient && m.Role != RolePeer:
			r.corrupt("role %d is neither client (1) nor peer (2)", m.Role)
		case m.Role == RolePeer && (m.ReplicaID == 0 || m.ClientID != 0):
			r.corrupt("peer role needs replica_id != 0 and client_id == 0 (got %d, %d)", m.ReplicaID, m.ClientID)
		case m.Role == RoleClient && m.ReplicaID != 0:
			r.corrupt("client role needs replica_id == 0 (got %d)", m.ReplicaID)
		}
	}
	return r.end()
}

// AppendWelcome appends m as one frame to dst.
func AppendWelcome(dst []byte, m *Welcome) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeWelcome, 0)
	dst = appendU32(dst, m.ReplicaID)
	dst = appendU32(dst, m.Features)
	dst = appendU32(dst, m.LeaderID)
	dst = append(dst, m.MAC[:]...)
	return finishFrame(dst, start)
}

// DecodeWelcome decodes one whole Welcome frame into m. It does not check the MAC.
func DecodeWelcome(frame []byte, m *Welcome, lim *Limits) error {
	body, _, err := checkFrame(frame, TypeWelcome, limitsOrDefault(lim))
	if err != nil {
		return err
	}
	r := reader{buf: body, msg: TypeWelcome}
	m.ReplicaID = r.u32("replica_id")
	m.Features = r.u32("features")
	m.LeaderID = r.u32("leader_id")
	copy(m.MAC[:], r.take("mac", MACSize))
	return r.end()
}

// HelloMAC computes the proof a peer puts in Hello.MAC:
//
//	HMAC-SHA256(secret, "mpaxos-hello" || serverNonce[32] || clusterID u64 LE ||
//	            replicaID u32 LE || features u32 LE)
//
// serverNonce is Challenge.Nonce; replicaID and features are the connector's own (Hello.ReplicaID,
// Hello.Features). Compare proofs with VerifyMAC (constant time).
func HelloMAC(secret []byte, serverNonce [NonceSize]byte, clusterID uint64, replicaID, features uint32) [MACSize]byte {
	return handshakeMAC(secret, helloMACLabel, serverNonce, clusterID, replicaID, features)
}

// WelcomeMAC computes the proof a server puts in Welcome.MAC for a peer:
//
//	HMAC-SHA256(secret, "mpaxos-welcome" || connectorNonce[32] || clusterID u64 LE ||
//	            replicaID u32 LE || features u32 LE)
//
// connectorNonce is Hello.Nonce; replicaID is the server's (Welcome.ReplicaID) and features the
// agreed set (Welcome.Features).
func WelcomeMAC(secret []byte, connectorNonce [NonceSize]byte, clusterID uint64, replicaID, features uint32) [MACSize]byte {
	return handshakeMAC(secret, welcomeMACLabel, connectorNonce, clusterID, replicaID, features)
}

// VerifyMAC reports whether got equals want, in constant time.
func VerifyMAC(got, want [MACSize]byte) bool { return hmac.Equal(got[:], want[:]) }

func handshakeMAC(secret []byte, label string, nonce [NonceSize]byte, clusterID uint64, replicaID, features uint32) [MACSize]byte {
	var fixed [8 + 4 + 4]byte
	binary.LittleEndian.PutUint64(fixed[0:], clusterID)
	binary.LittleEndian.PutUint32(fixed[8:], replicaID)
	binary.LittleEndian.PutUint32(fixed[12:], features)
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write(nonce[:])
	h.Write(fixed[:])
	var mac [MACSize]byte
	h.Sum(mac[:0])
	return mac
}
