package netfuzz

import (
	"math/rand/v2"

	"github.com/mpaxos/mpaxos/codec"
)

// This file builds well-formed frames of every known type with codec's own encoders, their
// fields drawn from the values a decoder or a state machine is most likely to mishandle: the
// edges of each integer width, ballots at and past the highest usable round, slots that
// overflow when counted on, counts that promise more than the frame holds.

// Edge values of each width, drawn about half the time (see generator.u64).
var (
	edgesU64 = []uint64{0, 1, 2, 3, 7, 127, 128, 255, 256, 4095, 4096, 65535, 65536, 1 << 20,
		1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, 1<<32 + 1, 1 << 53, 1 << 62,
		1<<63 - 2, 1<<63 - 1, 1 << 63, 1<<63 + 1, 1<<64 - 2, 1<<64 - 1}
	edgesU32 = []uint32{0, 1, 2, 3, 4, 127, 128, 255, 256, 4095, 4096, 65535, 65536, 1 << 20,
		1 << 24, 1<<31 - 1, 1 << 31, 1<<32 - 2, 1<<32 - 1}
)

// roundUsableMax is the highest ballot round a replica accepts from the wire (core refuses
// anything above it but the chosen marker; see core/election.go). The fuzzer needs it to
// build messages that a correct replica must refuse: a round above it can never be a real
// peer's.
const roundUsableMax = 1<<63 - 1

// chosenBallot is the all-ones ballot an entry learned as chosen carries (docs/PROTOCOL.md §4).
var chosenBallot = codec.Ballot{Round: 1<<64 - 1, Replica: 1<<32 - 1}

// Sizes of generated bodies. Most frames are small so that many go by per second; a few are
// large enough to cross the compression threshold and the buffer sizes of the receiver.
const (
	smallBytesMax  = 64
	mediumBytesMax = 4096
	largeBytesMax  = 256 << 10
	valuesMax      = 8 // values or entries in one generated peer message
	commandsMax    = 4 // commands in one generated batch
)

// knownTypes lists every frame type this codec version knows, found by asking codec, so a
// type added later is fuzzed without a change here.
func knownTypes() []codec.MsgType {
	var types []codec.MsgType
	for t := 0; t < 256; t++ {
		if codec.MsgType(t).Known() {
			types = append(types, codec.MsgType(t))
		}
	}
	return types
}

// peerTypes lists the peer message types (codec.MsgType.IsPeer).
func peerTypes() []codec.MsgType {
	var types []codec.MsgType
	for _, t := range knownTypes() {
		if t.IsPeer() {
			types = append(types, t)
		}
	}
	return types
}

// generator draws frames and field values from one seeded PRNG. Not safe for concurrent use:
// each attacker goroutine has its own.
type generator struct {
	rng       *rand.Rand
	clusterID uint64
	replicas  uint32 // replica ids are 1..replicas
	// acknowledged returns how many appends the well-behaved client has had acknowledged,
	// so reads can ask for offsets that exist (old ones live only in the WAL).
	acknowledged func() uint64
	// slotHint returns the slot the attacked replica last said it applied up to (0: not
	// known), so peer messages can name slots where its log is live.
	slotHint func() uint64
}

func newGenerator(seed, stream uint64, clusterID uint64, replicas uint32, acknowledged func() uint64) *generator {
	return &generator{rng: rand.New(rand.NewPCG(seed, stream)), clusterID: clusterID,
		replicas: replicas, acknowledged: acknowledged}
}

// chance reports true with probability percent/100.
func (g *generator) chance(percent int) bool { return g.rng.IntN(100) < percent }

func (g *generator) u64() uint64 {
	switch g.rng.IntN(4) {
	case 0, 1:
		return edgesU64[g.rng.IntN(len(edgesU64))]
	case 2:
		return uint64(g.rng.IntN(1000))
	}
	return g.rng.Uint64()
}

func (g *generator) u32() uint32 {
	switch g.rng.IntN(4) {
	case 0, 1:
		return edgesU32[g.rng.IntN(len(edgesU32))]
	case 2:
		return uint32(g.rng.IntN(1000))
	}
	return g.rng.Uint32()
}

// replicaID is mostly a member's id, sometimes one that is not.
func (g *generator) replicaID() uint32 {
	if g.chance(80) {
		return 1 + uint32(g.rng.IntN(int(g.replicas)))
	}
	return g.u32()
}

// ballot is mostly a plausible ballot, sometimes one at or past the edges.
func (g *generator) ballot() codec.Ballot {
	switch g.rng.IntN(6) {
	case 0:
		return chosenBallot
	case 1:
		return codec.Ballot{Round: g.u64(), Replica: g.u32()}
	case 2:
		return codec.Ballot{Round: roundUsableMax - uint64(g.rng.IntN(2)), Replica: g.replicaID()}
	}
	return codec.Ballot{Round: uint64(1 + g.rng.IntN(64)), Replica: g.replicaID()}
}

// near draws a slot around live: just below it (chosen, maybe compacted), at it, or in the
// window above it.
func (g *generator) near(live uint64) uint64 {
	const below, above = 16, 64
	return max(live, below) - below + uint64(g.rng.IntN(below+above))
}

// length draws a body length, mostly small.
func (g *generator) length() int {
	switch n := g.rng.IntN(100); {
	case n < 70:
		return g.rng.IntN(smallBytesMax + 1)
	case n < 97:
		return g.rng.IntN(mediumBytesMax + 1)
	default:
		return g.rng.IntN(largeBytesMax + 1)
	}
}

func (g *generator) bytes(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := g.rng.Uint64()
		for j := i; j < n && j < i+8; j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	return b
}

// seqs draws a command's seq and seq floor; the floor is at most the seq unless broken is set.
func (g *generator) seqs(broken bool) (seq, floor uint64) {
	seq, floor = g.u64(), g.u64()
	if floor > seq && !broken {
		floor = seq - min(seq, uint64(g.rng.IntN(5000)))
	}
	return seq, floor
}

// batch is a slot value: a valid batch, the empty no-op, or bytes that are no batch at all.
func (g *generator) batch() []byte {
	switch g.rng.IntN(5) {
	case 0:
		return nil
	case 1:
		return g.bytes(g.length())
	}
	cmds := make([]codec.Command, 1+g.rng.IntN(commandsMax))
	for i := range cmds {
		seq, floor := g.seqs(false)
		cmds[i] = codec.Command{ClientID: g.u64(), Seq: seq, SeqFloor: floor, Payload: g.bytes(g.rng.IntN(smallBytesMax))}
	}
	return codec.AppendBatch(nil, cmds)
}

// message is a peer message of type typ from from to to whose every field the type carries is
// drawn (codec writes only those).
func (g *generator) message(typ codec.MsgType, from, to uint32) codec.Message {
	m := codec.Message{Type: typ, From: from, To: to, Ballot: g.ballot(), Slot: g.u64(),
		Commit: g.u64(), Count: g.u64(), Offset: g.u64(), Total: g.u64(), Checksum: g.u32()}
	if g.chance(50) {
		m.Ballot.Replica = from // a ballot of the sender, as Prepare, Accept, Heartbeat and PreVote need
	}
	switch n := g.rng.IntN(10); {
	case n < 4 && g.slotHint != nil:
		live := g.slotHint()
		m.Slot, m.Commit = g.near(live), g.near(live)
	case n < 7:
		m.Slot, m.Commit = uint64(g.rng.IntN(100000)), uint64(g.rng.IntN(100000))
	}
	switch typ {
	case codec.TypeAccept, codec.TypeCatchUpReply:
		m.Values = make([][]byte, g.rng.IntN(valuesMax+1))
		for i := range m.Values {
			m.Values[i] = g.batch()
		}
	case codec.TypePromise:
		m.Entries = make([]codec.Entry, g.rng.IntN(valuesMax+1))
		slot := m.Slot
		for i := range m.Entries {
			slot += uint64(g.rng.IntN(3)) // strictly increasing unless the draw repeats
			m.Entries[i] = codec.Entry{Slot: slot, Ballot: g.ballot(), Value: g.batch()}
			slot++
		}
	case codec.TypeSnapshotChunk:
		m.Data = g.bytes(g.length())
		if g.chance(50) {
			m.Offset = uint64(g.rng.IntN(1 << 20))
			m.Total = m.Offset + uint64(len(m.Data)) + uint64(g.rng.IntN(2))*uint64(g.rng.IntN(1<<20))
		}
	case codec.TypePreVoteReply:
		m.Count = uint64(g.rng.IntN(3))
	}
	return m
}

// request is a client Request or Read from client clientID with hostile but well-formed
// fields: seqs at the edges, payloads of every size up to one past the limit, reads of
// offsets that exist only in the WAL and of offsets that never will.
func (g *generator) request(clientID uint64) codec.Request {
	seq, floor := g.seqs(false)
	r := codec.Request{ClientID: clientID, Seq: seq, SeqFloor: floor}
	switch g.rng.IntN(10) {
	case 0, 1, 2:
		r.Read = codec.ReadAt
		r.Offset = g.u64()
		if acknowledged := g.acknowledged(); acknowledged > 0 && g.chance(70) {
			r.Offset = g.rng.Uint64N(acknowledged + 2)
		}
	case 3:
		r.Read = codec.ReadLatest
	default:
		switch n := g.rng.IntN(1000); {
		case n == 0:
			r.Payload = g.bytes(codec.DefaultPayloadBytesMax)
		case n == 1:
			r.Payload = g.bytes(codec.DefaultPayloadBytesMax + 1) // answered TooLarge
		default:
			r.Payload = g.bytes(g.rng.IntN(smallBytesMax))
		}
	}
	return r
}

// hello is a well-formed Hello of either role, with no valid proof.
func (g *generator) hello() codec.Hello {
	h := codec.Hello{Version: uint16(1 + g.rng.IntN(3)), Role: codec.Role(1 + g.rng.IntN(2)),
		ClusterID: g.clusterID, Features: g.u32()}
	if g.chance(10) {
		h.ClusterID = g.u64()
	}
	if h.Role == codec.RolePeer {
		h.ReplicaID = max(1, g.replicaID())
	} else {
		h.ClientID = g.u64()
	}
	copy(h.Nonce[:], g.bytes(codec.NonceSize))
	copy(h.MAC[:], g.bytes(codec.MACSize))
	return h
}

// frame is one well-formed frame of type typ (any known type, including those only a
// replica should send). Peer messages are addressed from from to to.
func (g *generator) frame(typ codec.MsgType, from, to uint32) []byte {
	switch typ {
	case codec.TypeChallenge:
		c := codec.Challenge{Version: uint16(g.u32()), ClusterID: g.u64()}
		copy(c.Nonce[:], g.bytes(codec.NonceSize))
		return codec.AppendChallenge(nil, &c)
	case codec.TypeHello:
		h := g.hello()
		return codec.AppendHello(nil, &h)
	case codec.TypeWelcome:
		w := codec.Welcome{ReplicaID: g.replicaID(), Features: g.u32(), LeaderID: g.replicaID()}
		return codec.AppendWelcome(nil, &w)
	case codec.TypeRequest, codec.TypeRead:
		r := g.request(g.u64())
		if typ == codec.TypeRead && r.Read == codec.ReadNone {
			r.Read, r.Offset = codec.ReadAt, g.u64()
		}
		if typ == codec.TypeRequest {
			r.Read = codec.ReadNone
		}
		return codec.AppendRequest(nil, &r)
	case codec.TypeResponse, codec.TypeReadReply:
		r := codec.Response{ClientID: g.u64(), Seq: g.u64(), Status: codec.Status(g.rng.IntN(9)),
			Slot: g.u64(), Index: g.u32(), Offset: g.u64(), Length: g.u64()}
		if typ == codec.TypeReadReply {
			r.Read, r.Found = codec.ReadMode(1+g.rng.IntN(2)), true
			r.Payload = g.bytes(g.rng.IntN(smallBytesMax))
		}
		return codec.AppendResponse(nil, &r)
	case codec.TypeRedirect:
		r := codec.Redirect{ClientID: g.u64(), Seq: g.u64(), LeaderID: g.replicaID(), LeaderAddr: "127.0.0.1:1"}
		return codec.AppendRedirect(nil, &r)
	}
	m := g.message(typ, from, to)
	if g.chance(20) {
		return codec.NewEncoder(true, 1).AppendMessage(nil, &m) // S2 where the type allows it
	}
	return codec.AppendMessage(nil, &m)
}

// header is a valid frame header of type typ announcing a body of bodyBytes.
func header(typ codec.MsgType, flags uint8, bodyBytes uint32) []byte {
	h := make([]byte, codec.FrameHeaderSize)
	h[0], h[1], h[2], h[3] = byte(bodyBytes), byte(bodyBytes>>8), byte(bodyBytes>>16), byte(bodyBytes>>24)
	h[4], h[5], h[6] = codec.Version, byte(typ), flags
	return h
}

// randomBody is a valid header of type typ over random bytes of a plausible length.
func (g *generator) randomBody(typ codec.MsgType) []byte {
	body := g.bytes(g.length())
	flags := uint8(0)
	if g.chance(5) {
		flags = codec.FlagCompressed
	}
	return append(header(typ, flags, uint32(len(body))), body...)
}
