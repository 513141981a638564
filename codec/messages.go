package codec

// This file is the shared vocabulary of mpaxos: the Go form of every message that crosses a
// connection. core/ reasons about these types, netio/ moves them, and the encoders and
// decoders in this package turn them into frames (see doc.go and docs/PROTOCOL.md).
//
// Field names and meanings here are a contract between packages: add fields if you must, but do
// not change what an existing field means.

// Ballot orders proposals. Round is compared first, then Replica, so two replicas never use the
// same ballot and each can always find a larger one. The zero Ballot is below every real one.
type Ballot struct {
	Round   uint64
	Replica uint32
}

// Less reports whether b orders strictly before o.
func (b Ballot) Less(o Ballot) bool {
	if b.Round != o.Round {
		return b.Round < o.Round
	}
	return b.Replica < o.Replica
}

// IsZero reports whether b is the zero ballot (no promise, no acceptance).
func (b Ballot) IsZero() bool { return b.Round == 0 && b.Replica == 0 }

// MsgType is the type byte of a frame.
type MsgType uint8

// Frame types. These constants are part of the wire format: never renumber one.
const (
	TypeInvalid MsgType = 0

	// Handshake (any connection).
	TypeChallenge MsgType = 1 // server -> connector: a fresh nonce to authenticate against
	TypeHello     MsgType = 2 // connector -> server: who I am, what I speak, proof of secret
	TypeWelcome   MsgType = 3 // server -> connector: accepted, agreed features, server's proof

	// Client traffic.
	TypeRequest   MsgType = 10
	TypeResponse  MsgType = 11
	TypeRedirect  MsgType = 12
	TypeRead      MsgType = 13 // client -> replica: a linearizable read (a Request with Read set)
	TypeReadReply MsgType = 14 // replica -> client: a read's answer (a Response with Read set)

	// Peer traffic: every one of these is carried by Message.
	TypePrepare        MsgType = 20
	TypePromise        MsgType = 21
	TypeAccept         MsgType = 22
	TypeAccepted       MsgType = 23
	TypeNack           MsgType = 24
	TypeHeartbeat      MsgType = 25
	TypeHeartbeatReply MsgType = 26
	TypeCatchUpRequest MsgType = 27
	TypeCatchUpReply   MsgType = 28
	TypeSnapshotChunk  MsgType = 29
	// Pre-vote (added in protocol revision 2 of the peer types; frame Version unchanged): a
	// follower whose election timer fired asks whether its peers still hear a leader before it
	// raises any ballot, so a replica cut off for a while cannot depose a healthy leader when
	// it comes back.
	TypePreVote      MsgType = 30
	TypePreVoteReply MsgType = 31
)

// Role says what kind of party opened a connection.
type Role uint8

const (
	RoleClient Role = 1
	RolePeer   Role = 2
)

// Feature bits negotiated in Hello/Welcome: a feature is used only if both ends set it.
const (
	FeatureS2 uint32 = 1 << 0 // batch payloads above the threshold may be S2-compressed
)

// NonceSize is the length of handshake nonces; MACSize of HMAC-SHA256 proofs.
const (
	NonceSize = 32
	MACSize   = 32
)

// Challenge is the first frame a server writes on every accepted connection.
type Challenge struct {
	Version   uint16 // highest handshake version the server speaks (HandshakeVersion)
	ClusterID uint64
	Nonce     [NonceSize]byte
}

// Hello is the connector's first frame. A peer proves it knows the cluster secret with
// MAC = InitiatorMAC over the handshake's Transcript (both replica ids, both nonces, the
// cluster id, its features) and sends its own Nonce so the server can prove itself back in
// Welcome. Clients send RoleClient and a zero MAC.
type Hello struct {
	Version   uint16 // handshake version to use, at most Challenge.Version; peers: HandshakeVersion
	Role      Role
	ClusterID uint64
	ReplicaID uint32 // the sender's replica id (peers); 0 for clients
	ClientID  uint64 // the sender's client id (clients); 0 for peers
	Features  uint32
	Nonce     [NonceSize]byte
	MAC       [MACSize]byte
}

// Welcome accepts a Hello. MAC = ResponderMAC over the handshake's Transcript (with the agreed
// Features) for peers; zero for clients.
type Welcome struct {
	ReplicaID uint32 // the server's replica id
	Features  uint32 // the features both ends will use
	LeaderID  uint32 // the server's current leader hint, 0 if unknown
	MAC       [MACSize]byte
}

// Request is one client command. (ClientID, Seq) identifies it for exactly-once application:
// a retry carries the same pair and is applied at most once.
type Request struct {
	ClientID uint64
	Seq      uint64
	// SeqFloor: every seq below SeqFloor has been answered to the client, which will never
	// retry it, so replicas may forget those seqs. SeqFloor <= Seq (else ErrCorrupt).
	SeqFloor uint64
	Payload  []byte // aliases the frame after decoding; always empty for a read

	// Read, when not ReadNone, makes this a read (a TypeRead frame) instead of an append:
	// ReadLatest asks for the last command of the log, ReadAt for the command at dense
	// offset Offset. A read takes a seq from the client's sequence like an append.
	Read   ReadMode
	Offset uint64 // ReadAt: the dense offset asked for
}

// ReadMode says what a read asks for. These constants are part of the wire format.
type ReadMode uint8

const (
	ReadNone   ReadMode = 0 // not a read: an append
	ReadLatest ReadMode = 1 // the log's length and its last command
	ReadAt     ReadMode = 2 // the command at a dense offset, if the log is that long yet

	readModeMax = ReadAt
)

// Status codes of a Response. These constants are part of the wire format.
type Status uint8

const (
	StatusOK          Status = 0
	StatusNotLeader   Status = 1 // see Redirect; not applied
	StatusOverloaded  Status = 2 // backpressure; not applied, retry later
	StatusTooLarge    Status = 3 // payload over the limit; never retry as is
	StatusInvalid     Status = 4 // malformed request; never retry as is
	StatusUnavailable Status = 5 // leadership lost while pending: may or may not be chosen; retry with the same Seq
	StatusShutdown    Status = 6 // replica shutting down: may or may not be chosen; retry with the same Seq
	StatusAbandoned   Status = 7 // Seq is below the SeqFloor its client already sent: not applied now (it may have been before); never retry
	StatusCompacted   Status = 8 // a read asked for an offset below the oldest one this replica keeps (snapshot compaction)
)

// Response answers one Request. Slot is the log position the command was chosen at when
// Status is StatusOK; Index is the command's position within that slot's batch, so (Slot,
// Index) is a total order of commands. Offset is the command's dense position in the log of
// applied commands: the number of commands applied before it (no-ops and duplicate retries
// take no offset), so offsets run 0, 1, 2, ... with no gaps on every replica.
//
// A read's answer is a Response with Read set (a TypeReadReply frame): Length is the log's
// length (commands applied) at the read's point in the order; Found says whether the command
// asked for exists (for ReadLatest: whether the log is non-empty); when Found, (Slot, Index,
// Offset) is that command's position and Payload its payload.
type Response struct {
	ClientID uint64
	Seq      uint64
	Status   Status
	Slot     uint64
	Index    uint32
	Offset   uint64

	Read    ReadMode // ReadNone: the answer to an append
	Found   bool
	Length  uint64
	Payload []byte // aliases the frame after decoding
}

// Redirect tells a client which replica leads. LeaderAddr may be empty when unknown.
type Redirect struct {
	ClientID   uint64
	Seq        uint64
	LeaderID   uint32
	LeaderAddr string
}

// Entry is one slot of the log as an acceptor holds it: the value accepted in Ballot. Value is
// an encoded batch (see batch.go); an empty Value is a no-op that fills a gap.
type Entry struct {
	Slot   uint64
	Ballot Ballot
	Value  []byte
}

// Message is every peer-to-peer protocol message, one struct for all types in the style of
// etcd's raftpb.Message, so core/ handles one type and nothing is boxed on the hot path.
// Which fields mean something depends on Type:
//
//	Prepare:        Ballot; Slot = first slot the phase 1 covers (the leader's first unchosen)
//	Promise:        Ballot (the promised one); Slot = the requested first slot; Commit;
//	                Entries = every accepted entry at or above Slot (Entry.Ballot = accepted in)
//	Accept:         Ballot; Slot = first slot; Values = consecutive slot values from Slot;
//	                Commit = leader's commit point (every slot < Commit is chosen)
//	Accepted:       Ballot; Slot = highest slot S such that the sender has accepted, in Ballot,
//	                every slot from the leader's phase-1 start through S (cumulative ack)
//	Nack:           Ballot = the sender's promised ballot, higher than the one refused;
//	                Slot = the sender's commit point (a hint for catch-up)
//	Heartbeat:      Ballot; Commit
//	HeartbeatReply: Ballot; Slot = sender's highest contiguous accepted slot; Commit = sender's
//	                commit point
//	CatchUpRequest: Slot = first chosen slot wanted; Count = at most this many slots
//	CatchUpReply:   Slot = first slot of Values; Values = chosen values; Commit = sender's
//	                commit point; Count = 0, or the snapshot slot if Slot is below compaction
//	SnapshotChunk:  Slot = the snapshot covers every slot < Slot; Offset, Total, Checksum
//	                (CRC-32C of the whole snapshot), Data = this chunk's bytes
//	PreVote:        Ballot = the ballot the sender would campaign in (its Replica is the
//	                sender); Slot = the sender's commit point. Changes nothing at the receiver.
//	PreVoteReply:   Ballot = the PreVote's Ballot (echoed); Count = 1 granted (the sender heard
//	                no live leader for an election timeout), 0 refused
//
// Every []byte decoded from a frame aliases the frame buffer: copy before the buffer is reused.
type Message struct {
	Type     MsgType
	From     uint32
	To       uint32
	Ballot   Ballot
	Slot     uint64
	Commit   uint64
	Count    uint64
	Values   [][]byte
	Entries  []Entry
	Offset   uint64
	Total    uint64
	Checksum uint32
	Data     []byte
}

// Command is one client command inside a batch.
type Command struct {
	ClientID uint64
	Seq      uint64
	SeqFloor uint64 // the Request's SeqFloor: <= Seq
	Payload  []byte
}
