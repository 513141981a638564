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

// HandshakeVersion is the revision of the handshake, carried in Challenge.Version and
// Hello.Version (the frame header's Version is a different number and stays 1).
//
//   - 1: each proof covered one nonce and one replica id. Nothing named the replica the proof
//     was meant for, so a process at a stopped replica's address could relay a connector's
//     proof to another replica and be welcomed in the connector's name (issue 15, defect 3).
//     Withdrawn for peers; a client Hello, which carries no proof, may still say 1.
//   - 2: both proofs cover the whole transcript (Transcript: cluster id, both replica ids,
//     both nonces, the features of the frame carrying the proof) and the direction.
//
// This constant is part of the format.
const HandshakeVersion = 2

// Labels that open the HMAC inputs, one per direction, so the initiator's proof can never pass
// for the responder's (a reflection). Equal in length, so no input of one direction is a
// prefix-shifted input of the other. These constants are part of the format.
const (
	initiatorMACLabel = "mpaxos-v2-initiator"
	responderMACLabel = "mpaxos-v2-responder"
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

// Transcript is what both peer proofs of one handshake cover. Every field is known to both
// ends by the time the proof is checked; binding all of them means a proof is good for one
// connection, between two named replicas, in one direction, and nowhere else.
type Transcript struct {
	ClusterID uint64
	// Initiator is the connector's replica id (Hello.ReplicaID).
	Initiator uint32
	// Responder is the server's replica id: the one the connector meant to reach (the
	// connector uses the id it dialled, the server its own id).
	Responder uint32
	// ServerNonce is Challenge.Nonce; ConnectorNonce is Hello.Nonce.
	ServerNonce    [NonceSize]byte
	ConnectorNonce [NonceSize]byte
	// Features is the features field of the frame carrying the proof: Hello.Features
	// (offered) in the initiator's proof, Welcome.Features (agreed) in the responder's.
	Features uint32
}

// InitiatorMAC computes the proof a connecting peer puts in Hello.MAC:
//
//	HMAC-SHA256(secret, "mpaxos-v2-initiator" || cluster_id u64 LE || initiator u32 LE ||
//	            responder u32 LE || server_nonce[32] || connector_nonce[32] || features u32 LE)
//
// with features = Hello.Features. Compare proofs with VerifyMAC (constant time).
func InitiatorMAC(secret []byte, t *Transcript) [MACSize]byte {
	return transcriptMAC(secret, initiatorMACLabel, t)
}

// ResponderMAC computes the proof a server puts in Welcome.MAC for a peer: the same input as
// InitiatorMAC under the label "mpaxos-v2-responder", with features = Welcome.Features.
func ResponderMAC(secret []byte, t *Transcript) [MACSize]byte {
	return transcriptMAC(secret, responderMACLabel, t)
}

// VerifyMAC reports whether got equals want, in constant time.
func VerifyMAC(got, want [MACSize]byte) bool { return hmac.Equal(got[:], want[:]) }

// transcriptInputBytes is the size of a proof's input after its label.
const transcriptInputBytes = 8 + 4 + 4 + NonceSize + NonceSize + 4

func transcriptMAC(secret []byte, label string, t *Transcript) [MACSize]byte {
	var input [transcriptInputBytes]byte
	binary.LittleEndian.PutUint64(input[0:], t.ClusterID)
	binary.LittleEndian.PutUint32(input[8:], t.Initiator)
	binary.LittleEndian.PutUint32(input[12:], t.Responder)
	copy(input[16:], t.ServerNonce[:])
	copy(input[16+NonceSize:], t.ConnectorNonce[:])
	binary.LittleEndian.PutUint32(input[16+2*NonceSize:], t.Features)
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write(input[:])
	var mac [MACSize]byte
	h.Sum(mac[:0])
	return mac
}
