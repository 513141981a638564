package netfuzz

import (
	"fmt"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// This file holds what each attacker sends once connected (attack_test.go holds the
// connection, the pacing and the checks).

// randomBytes: chunks of random bytes before the Challenge is even read, after it, or after a
// client handshake; or a partial header (or nothing) held open.
func (c *attackConn) randomBytes() {
	switch c.g.rng.IntN(4) {
	case 0:
	case 1:
		if _, err := c.challenge(); err != nil {
			return
		}
	case 2:
		if c.clientHello() != nil {
			return
		}
	default:
		if _, err := c.challenge(); err != nil {
			return
		}
		if c.write(c.g.bytes(c.g.rng.IntN(codec.FrameHeaderSize)), "partial header") == nil {
			c.drain()
			c.hold()
		}
		return
	}
	c.drain()
	for range 1 + c.g.rng.IntN(16) {
		if c.write(c.g.bytes(1+c.g.rng.IntN(mediumBytesMax)), "random bytes") != nil {
			return
		}
	}
}

// randomBodies: valid headers of every known type (and now and then of an unknown one) over
// random bodies, as the first frame of a connection or after a client handshake.
func (c *attackConn) randomBodies() {
	if c.g.chance(50) && c.clientHello() != nil {
		return
	} else if c.stage == "handshake" {
		if _, err := c.challenge(); err != nil {
			return
		}
	}
	c.drain()
	types := knownTypes()
	for i := range 1 + c.g.rng.IntN(framesPerConnectionMax) {
		typ := types[c.g.rng.IntN(len(types))]
		switch n := c.g.rng.IntN(10); {
		case n < 5 && c.stage == "handshake":
			typ = codec.TypeHello
		case n < 6 && c.stage == "client":
			typ = codec.TypeRequest
		case n < 7 && c.stage == "client":
			typ = codec.TypeRead
		case n == 9:
			typ = codec.MsgType(c.g.rng.IntN(256))
		}
		if !c.sendChecked(c.g.randomBody(typ), fmt.Sprintf("random %s body", typ), i == 0) {
			return
		}
	}
}

// mutated: well-formed frames with one mutation each: Hellos (client and peer) as the first
// frame, then Requests and Reads (and any other type) after a client handshake.
func (c *attackConn) mutated() {
	if c.g.chance(60) && c.clientHello() != nil {
		return
	} else if c.stage == "handshake" {
		if _, err := c.challenge(); err != nil {
			return
		}
	}
	c.drain()
	types := knownTypes()
	for i := range 1 + c.g.rng.IntN(framesPerConnectionMax) {
		typ := types[c.g.rng.IntN(len(types))]
		switch n := c.g.rng.IntN(10); {
		case n < 7 && c.stage == "handshake":
			typ = codec.TypeHello
		case n < 5 && c.stage == "client":
			typ = codec.TypeRequest
		case n < 8 && c.stage == "client":
			typ = codec.TypeRead
		}
		from, to := c.g.replicaID(), uint32(c.target+1)
		frame, how := c.g.mutate(c.g.frame(typ, from, to), c.g.frame(types[c.g.rng.IntN(len(types))], from, to))
		c.f.mutations[how].Add(1)
		if !c.sendChecked(frame, fmt.Sprintf("%s %s", how, typ), i == 0) {
			return
		}
	}
}

// forgery is one way of faking a peer's proof without the secret, or with it but for another
// connection. A correct replica welcomes none of them.
type forgery int

const (
	forgeRandomMAC   forgery = iota // 32 random bytes
	forgeWrongSecret                // the right transcript under another secret
	forgeRelay                      // a proof made for another responder (docs/PROTOCOL.md: relay)
	forgeReflection                 // the responder's label instead of the initiator's
	forgeStaleNonce                 // a proof over another server nonce (a replayed Hello)
	forgeFeatures                   // features changed after the proof was made
	forgeVersionOne                 // handshake version 1 (whose proofs could be relayed)
	forgeSelf                       // the replica's own id, with a valid proof for it
	forgeUnknownID                  // an id that is not a member, with a valid proof for it
	forgeCluster                    // another cluster id, proof made over it
	forgeNonce                      // the connector nonce changed after the proof was made
	forgeInitiator                  // a proof made for another initiator than the Hello names
	forgeryCount
)

var forgeryNames = [forgeryCount]string{"random-mac", "wrong-secret", "relay", "reflection", "stale-nonce",
	"features", "version-1", "self-id", "unknown-id", "cluster", "nonce", "initiator"}

func (f forgery) String() string { return forgeryNames[f] }

// forgedHello sends a peer Hello with a forged proof, sometimes with peer messages pipelined
// behind it, and checks that the replica closes the connection without a Welcome.
func (c *attackConn) forgedHello() {
	ch, err := c.challenge()
	if err != nil {
		return
	}
	how := forgery(c.g.rng.IntN(int(forgeryCount)))
	c.f.forged[how].Add(1)
	hello := c.forge(how, ch)
	frames := codec.AppendHello(nil, &hello)
	if c.g.chance(50) {
		m := c.g.message(codec.TypePrepare, hello.ReplicaID, uint32(c.target+1))
		frames = codec.AppendMessage(frames, &m)
	}
	if c.write(frames, "forged Hello: "+how.String()) != nil {
		return
	}
	typ, _, err := c.readFrame()
	switch {
	case err == nil && typ == codec.TypeWelcome:
		c.f.violation("replica %d WELCOMED a forged peer Hello (%s, claimed replica %d)", c.target+1, how, hello.ReplicaID)
	case err == nil:
		c.f.violation("replica %d answered a forged peer Hello (%s) with a %s frame", c.target+1, how, typ)
	case isTimeout(err):
		c.f.violation("replica %d neither welcomed nor closed a forged peer Hello (%s) in %v", c.target+1, how, handshakeTimeout)
	default:
		c.stats().closedByServer.Add(1)
	}
}

// forge builds the Hello of forgery how for the Challenge ch.
func (c *attackConn) forge(how forgery, ch codec.Challenge) codec.Hello {
	target := uint32(c.target + 1)
	claimed := c.otherReplica()
	hello := codec.Hello{Version: codec.HandshakeVersion, Role: codec.RolePeer, ClusterID: c.f.cfg.clusterID,
		ReplicaID: claimed, Features: c.g.rng.Uint32() & codec.FeatureS2}
	copy(hello.Nonce[:], c.g.bytes(codec.NonceSize))
	t := codec.Transcript{ClusterID: hello.ClusterID, Initiator: claimed, Responder: target,
		ServerNonce: ch.Nonce, ConnectorNonce: hello.Nonce, Features: hello.Features}
	secret := c.f.cfg.secret
	switch how {
	case forgeRandomMAC:
		copy(hello.MAC[:], c.g.bytes(codec.MACSize))
		return hello
	case forgeWrongSecret:
		secret = append([]byte("not-"), secret...)
	case forgeRelay:
		t.Responder = c.otherReplica()
		if t.Responder == claimed {
			t.Responder = target + uint32(len(c.f.cfg.addrs)) // no member: still not the target
		}
	case forgeReflection:
		hello.MAC = codec.ResponderMAC(secret, &t)
		return hello
	case forgeStaleNonce:
		t.ServerNonce[c.g.rng.IntN(codec.NonceSize)] ^= 1 << c.g.rng.IntN(8)
	case forgeFeatures:
		hello.MAC = codec.InitiatorMAC(secret, &t)
		hello.Features ^= 1 << c.g.rng.IntN(32)
		return hello
	case forgeVersionOne:
		hello.Version = 1
	case forgeSelf:
		hello.ReplicaID, t.Initiator = target, target
	case forgeUnknownID:
		id := uint32(len(c.f.cfg.addrs)) + 1 + uint32(c.g.rng.IntN(1000))
		if c.g.chance(30) {
			id = 1<<32 - 1
		}
		hello.ReplicaID, t.Initiator = id, id
	case forgeCluster:
		hello.ClusterID = c.f.cfg.clusterID + 1 + c.g.rng.Uint64N(1000)
		t.ClusterID = hello.ClusterID
	case forgeNonce:
		hello.MAC = codec.InitiatorMAC(secret, &t)
		hello.Nonce[c.g.rng.IntN(codec.NonceSize)] ^= 1 << c.g.rng.IntN(8)
		return hello
	case forgeInitiator:
		t.Initiator = c.otherReplica()
		if t.Initiator == claimed {
			t.Initiator = target // the target's own id: still not the one the Hello names
		}
	}
	hello.MAC = codec.InitiatorMAC(secret, &t)
	return hello
}

// otherReplica is a member other than the target.
func (c *attackConn) otherReplica() uint32 {
	n := len(c.f.cfg.addrs)
	return uint32((c.target+1+c.g.rng.IntN(n-1))%n) + 1
}

// peerClass is what an authenticated peer's frame is meant to test.
type peerClass int

const (
	peerGarbage   peerClass = iota // random bytes, random bodies, mutated frames: refused by netio or codec
	peerRefusable                  // well-formed, made invalid in a way core must refuse (or netio closes on)
	peerBenign                     // well-formed, and harmless even when taken: catch-up and snapshot requests, pre-votes
	peerForged                     // (-forge only) well-formed with every field drawn: may be taken as a real peer's
	peerClassCount
)

var peerClassNames = [peerClassCount]string{"garbage", "refusable", "benign", "forged"}

func (p peerClass) String() string { return peerClassNames[p] }

// peerSession authenticates as another member (the real handshake, with the secret), then
// sends hostile peer messages on that link.
func (c *attackConn) peerSession() {
	ch, err := c.challenge()
	if err != nil {
		return
	}
	target, claimed := uint32(c.target+1), c.otherReplica()
	hello := codec.Hello{Version: codec.HandshakeVersion, Role: codec.RolePeer, ClusterID: c.f.cfg.clusterID,
		ReplicaID: claimed, Features: c.g.rng.Uint32() & codec.FeatureS2}
	copy(hello.Nonce[:], c.g.bytes(codec.NonceSize))
	t := codec.Transcript{ClusterID: hello.ClusterID, Initiator: claimed, Responder: target,
		ServerNonce: ch.Nonce, ConnectorNonce: hello.Nonce, Features: hello.Features}
	hello.MAC = codec.InitiatorMAC(c.f.cfg.secret, &t)
	if c.write(codec.AppendHello(nil, &hello), fmt.Sprintf("peer Hello as %d", claimed)) != nil {
		return
	}
	typ, frame, err := c.readFrame()
	if err != nil {
		return
	}
	var w codec.Welcome
	if typ != codec.TypeWelcome || codec.DecodeWelcome(frame, &w, nil) != nil {
		c.f.violation("replica %d answered an authenticated peer Hello with a %s frame that is no Welcome", target, typ)
		return
	}
	t.Features = w.Features
	if w.ReplicaID != target || !codec.VerifyMAC(w.MAC, codec.ResponderMAC(c.f.cfg.secret, &t)) {
		c.f.violation("replica %d's Welcome does not prove the secret (replica id %d)", target, w.ReplicaID)
		return
	}
	c.stats().handshakes.Add(1)
	c.stage = "peer"
	c.drain()
	encoder := codec.NewEncoder(w.Features&codec.FeatureS2 != 0, 1+c.g.rng.IntN(codec.DefaultCompressThreshold))
	bursts := 1 + c.g.rng.IntN(peerBurstsMax)
	for burst := range bursts {
		var frames [][]byte
		var whats []string
		for range 1 + c.g.rng.IntN(framesPerConnectionMax) {
			class, frame, what := c.keptFrame(encoder, claimed, target)
			c.f.peerMix[class].Add(1)
			frames, whats = append(frames, frame), append(whats, what)
		}
		if burst == bursts-1 && c.g.chance(70) {
			class, frame, what := c.closingFrame(encoder, claimed, target)
			c.f.peerMix[class].Add(1)
			frames, whats = append(frames, frame), append(whats, what)
		}
		if c.writeBurst(frames, whats) != nil {
			return
		}
	}
}

// peerBurstsMax bounds the writes of one authenticated session (each of up to
// framesPerConnectionMax frames). The real peer's link usually displaces the session within
// its reconnect backoff (tens of milliseconds), so frames go out in bursts that the replica
// takes in one read.
const peerBurstsMax = 8

// keptFrame draws a frame netio hands to the replica as the peer's (it decodes, and names the
// authenticated sender and the replica): one core must refuse, a benign one, or (-forge) a
// forgery. None closes the link.
func (c *attackConn) keptFrame(encoder *codec.Encoder, claimed, target uint32) (peerClass, []byte, string) {
	types := peerTypes()
	for {
		typ := types[c.g.rng.IntN(len(types))]
		switch n := c.g.rng.IntN(100); {
		case c.f.cfg.forge && n < 50:
			m := c.g.message(typ, claimed, target)
			return peerForged, encoder.AppendMessage(nil, &m), "forged " + typ.String()
		case n < 55:
			m, why := c.refusable(typ, claimed, target)
			frame := encoder.AppendMessage(nil, &m)
			if takenAsReal(frame, claimed, target) {
				return peerRefusable, frame, fmt.Sprintf("%s %s", why, typ)
			}
		default:
			m := c.benign(claimed, target)
			return peerBenign, encoder.AppendMessage(nil, &m), "benign " + m.Type.String()
		}
	}
}

// closingFrame draws a frame that ends the session: garbage (random bytes, a random body, a
// mutated frame) or a well-formed message codec or netio refuses (the wrong sender or
// addressee, an Accept with no values, a chunk past its total).
func (c *attackConn) closingFrame(encoder *codec.Encoder, claimed, target uint32) (peerClass, []byte, string) {
	types := peerTypes()
	for {
		typ := types[c.g.rng.IntN(len(types))]
		switch n := c.g.rng.IntN(100); {
		case n < 20:
			return peerGarbage, c.g.bytes(1 + c.g.rng.IntN(mediumBytesMax)), "random bytes"
		case n < 40:
			// A random body that decodes as a valid message is as unlikely as a forged MAC.
			return peerGarbage, c.g.randomBody(typ), fmt.Sprintf("random %s body", typ)
		case n < 75:
			frame, how := c.g.mutate(c.g.frame(typ, claimed, target), c.g.frame(types[c.g.rng.IntN(len(types))], claimed, target))
			c.f.mutations[how].Add(1)
			// A mutation that leaves a message a real peer could send (a flipped bit in a
			// slot) is a forgery, not garbage: drawn again unless -forge.
			if c.f.cfg.forge || !takenAsReal(frame, claimed, target) {
				return peerGarbage, frame, fmt.Sprintf("%s %s", how, typ)
			}
		default:
			m, why := c.refusable(typ, claimed, target)
			if frame := encoder.AppendMessage(nil, &m); !takenAsReal(frame, claimed, target) {
				return peerRefusable, frame, fmt.Sprintf("%s %s", why, typ)
			}
		}
	}
}

// takenAsReal reports whether the first frame in b decodes (with the default limits, as a
// replica's) into a message from claimed to target: one that netio hands on as the peer's.
// Bytes after it are not looked at: the replica reads them as the next frame.
func takenAsReal(b []byte, claimed, target uint32) bool {
	_, n, err := codec.PeekFrame(b, nil)
	if err != nil {
		return false
	}
	var m codec.Message
	if codec.NewDecoder(codec.DefaultLimits()).DecodeMessage(b[:n], &m) != nil {
		return false
	}
	return m.From == claimed && m.To == target
}

// refusable is a well-formed message of type typ with one defect that a correct receiver
// refuses: a ballot round above the highest usable one, a ballot that is not the sender's
// where it must be, a reply to a pre-vote never asked, the wrong sender or addressee (netio
// closes the link), or a defect codec refuses (an Accept with no values, a snapshot chunk
// past its total, values that overflow the slot). A refused message changes nothing.
func (c *attackConn) refusable(typ codec.MsgType, claimed, target uint32) (codec.Message, string) {
	m := c.g.message(typ, claimed, target)
	switch typ {
	case codec.TypeAccept:
		if c.g.chance(30) {
			m.Values = nil
			return m, "no values"
		}
	case codec.TypeCatchUpReply:
		m.Slot = 1<<64 - 1 - uint64(c.g.rng.IntN(len(m.Values)+1))
		m.Values = append(m.Values, c.g.batch())
		return m, "slot overflow"
	case codec.TypeSnapshotChunk:
		m.Data = append(m.Data, 0)
		m.Total = m.Offset + uint64(len(m.Data)) - 1 - min(m.Offset, uint64(c.g.rng.IntN(100)))
		if m.Offset+uint64(len(m.Data)) < m.Offset { // the sum wraps: codec refuses that too
			m.Total = 0
		}
		return m, "past total"
	case codec.TypeCatchUpRequest:
		m.To = target + 1 + uint32(c.g.rng.IntN(100))
		return m, "wrong addressee"
	}
	switch n := c.g.rng.IntN(20); {
	case n == 0:
		m.From = c.otherReplica()
		if m.From == claimed {
			m.From = target
		}
		return m, "wrong sender"
	case n == 1:
		m.To = c.otherReplica()
		return m, "wrong addressee"
	case n < 8 && (typ == codec.TypePrepare || typ == codec.TypeAccept || typ == codec.TypeHeartbeat || typ == codec.TypePreVote):
		m.Ballot.Replica = claimed + 1 + uint32(c.g.rng.IntN(100))
		return m, "ballot not the sender's"
	case n < 8 && typ == codec.TypePreVoteReply:
		m.Ballot.Replica = target + 1 + uint32(c.g.rng.IntN(100))
		m.Count = uint64(c.g.rng.IntN(2))
		return m, "pre-vote never asked"
	}
	m.Ballot.Round = roundUsableMax + 1 + c.g.rng.Uint64N(1<<63-1) // up to 2^64-1: never chosenBallot's replica
	if m.Ballot == chosenBallot {
		m.Ballot.Replica--
	}
	for i := range m.Entries {
		m.Entries[i].Ballot = m.Ballot
	}
	return m, "round above the usable"
}

// benign is a well-formed message a real peer sends whose every field is drawn and whose
// taking changes no promise and nothing chosen: a catch-up request (slots and counts at the
// edges: a replica serves what it has), a snapshot window request, a pre-vote (which raises
// nothing at the receiver) or a refused pre-vote reply.
func (c *attackConn) benign(claimed, target uint32) codec.Message {
	m := codec.Message{From: claimed, To: target}
	switch c.g.rng.IntN(4) {
	case 0:
		m.Type, m.Slot, m.Count = codec.TypeCatchUpRequest, c.g.u64(), c.g.u64()
		if acknowledged := c.f.cfg.acknowledged(); c.g.chance(50) {
			m.Slot = c.g.rng.Uint64N(acknowledged + 2)
		}
	case 1:
		m.Type, m.Slot = codec.TypeSnapshotChunk, c.g.u64()
		m.Offset = c.g.u64()
		m.Total = m.Offset
	case 2:
		m.Type, m.Slot = codec.TypePreVote, c.g.u64()
		m.Ballot = codec.Ballot{Round: max(1, c.g.u64()%(roundUsableMax+1)), Replica: claimed}
	default:
		m.Type, m.Count = codec.TypePreVoteReply, 0
		m.Ballot = codec.Ballot{Round: max(1, c.g.u64()%(roundUsableMax+1)), Replica: target}
	}
	return m
}

// clientSession completes a client handshake, then sends bursts of well-formed Requests and
// Reads with fields at the edges (g.request) and waits a little for their answers; the last
// burst may end with a frame that closes the connection (mutated, a random body, a type a
// client never sends, random bytes). Now and then it is a slow reader: it reads nothing back
// while asking, among others, for many old offsets.
func (c *attackConn) clientSession() {
	if c.clientHello() != nil {
		return
	}
	slow := c.g.chance(5)
	if !slow {
		c.drain()
	}
	bursts := 1 + c.g.rng.IntN(clientBurstsMax)
	for burst := range bursts {
		var frames [][]byte
		var whats []string
		for range 1 + c.g.rng.IntN(framesPerConnectionMax) {
			r := c.g.request(c.clientID)
			frames = append(frames, codec.AppendRequest(nil, &r))
			whats = append(whats, fmt.Sprintf("request read=%d seq=%d floor=%d offset=%d payload=%d", r.Read, r.Seq, r.SeqFloor, r.Offset, len(r.Payload)))
		}
		if burst == bursts-1 && !slow && c.g.chance(50) {
			frame, what := c.clientClosingFrame()
			frames, whats = append(frames, frame), append(whats, what)
		}
		if c.writeBurst(frames, whats) != nil {
			return
		}
		c.awaitAnswers()
	}
	if slow {
		c.hold()
	}
}

// clientBurstsMax bounds the writes of one client session; answerWaitMax how long it waits
// for answers after each.
const (
	clientBurstsMax = 4
	answerWaitMax   = 300 * time.Millisecond
)

func (c *attackConn) awaitAnswers() {
	select {
	case <-c.ctx.Done():
	case <-c.drained:
	case <-time.After(time.Duration(c.g.rng.Int64N(int64(answerWaitMax)))):
	}
}

// clientClosingFrame is a frame after which a replica closes a client connection (or, for
// some mutations, answers or waits for more bytes): a request in another client's name,
// a mutated one, a random body, a type a client never sends, random bytes.
func (c *attackConn) clientClosingFrame() ([]byte, string) {
	types := knownTypes()
	switch n := c.g.rng.IntN(100); {
	case n < 10:
		r := c.g.request(c.clientID + 1 + c.g.rng.Uint64N(1000))
		return codec.AppendRequest(nil, &r), "request naming another client than the Hello"
	case n < 55:
		typ := codec.TypeRequest
		if c.g.chance(40) {
			typ = codec.TypeRead
		}
		frame, how := c.g.mutate(c.g.frame(typ, 0, 0), c.g.frame(types[c.g.rng.IntN(len(types))], 0, 0))
		c.f.mutations[how].Add(1)
		return frame, fmt.Sprintf("%s %s", how, typ)
	case n < 75:
		typ := codec.TypeRequest + codec.MsgType(c.g.rng.IntN(4))
		return c.g.randomBody(typ), fmt.Sprintf("random %s body", typ)
	case n < 90:
		typ := types[c.g.rng.IntN(len(types))]
		return c.g.frame(typ, c.g.replicaID(), uint32(c.target+1)), "client sends " + typ.String()
	}
	return c.g.bytes(1 + c.g.rng.IntN(mediumBytesMax)), "random bytes"
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}
