package netio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/mpaxos/mpaxos/codec"
)

// phase is where an inbound connection stands in the handshake.
type phase uint8

const (
	phaseHello  phase = iota // Challenge sent, waiting for Hello
	phaseClient              // authenticated as a client: Requests only
	phasePeer                // authenticated as peer peerID: peer Messages only
)

// connState is the per-connection state of an inbound connection, kept in gnet's connection
// context. Every field is owned by the connection's event loop, except where noted.
type connState struct {
	id     uint64
	gc     gnet.Conn // concurrency-safe methods only (Wake, Close) outside the loop
	remote string
	phase  phase
	nonce  [codec.NonceSize]byte // our Challenge nonce

	// Peer connections.
	peerID  uint32
	decoder *codec.Decoder // set only when S2 was agreed: it accepts compressed frames
	message codec.Message  // reused for every peer frame

	// Client connections.
	client   *ClientConn
	requests []codec.Request // reused each turn
	ends     []int           // ends[i] = buffer offset just past requests[i]'s frame
	spare    []byte          // the write buffer not currently being filled by Respond
	stalled  bool            // complete frames were left unread this turn (pause or limit)
	rerun    bool            // complete frames were left for the next turn (not a pause)
	// completed: a whole frame was consumed this turn (restarts FrameTimeout).
	completed bool
	// skipBytes is what remains of an oversized Request's body, answered TooLarge already:
	// discarded as it arrives, never buffered.
	skipBytes int

	guardState
}

// ClientConn is an authenticated client connection. Its methods are safe from any goroutine.
type ClientConn struct {
	id       uint64
	clientID uint64
	server   *Server
	gc       gnet.Conn

	mu            sync.Mutex
	pending       []byte // encoded Responses/Redirects waiting for the loop's next write
	pendingFrames int
	inflight      int  // requests taken by the Handler, not yet answered
	inLoop        bool // the event loop is in OnTraffic for this conn and will flush at its end
	wakeQueued    bool // a Wake is on its way: no need for another
	paused        bool // the Handler took fewer than offered and has not called Resume
	resumes       uint64
	closed        bool
}

// ID is netio's id for this connection, unique within the Server's lifetime.
func (c *ClientConn) ID() uint64 { return c.id }

// ClientID is the client id the client announced in its Hello (clients are not authenticated).
func (c *ClientConn) ClientID() uint64 { return c.clientID }

// Respond queues responses to requests taken earlier. They are written, together with
// everything else queued for this connection, in one write on the event loop's next turn.
// A client that lets more than Config.ClientOutboundBytesMax pile up is disconnected.
func (c *ClientConn) Respond(rs []codec.Response) {
	if len(rs) == 0 {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	for i := range rs {
		c.pending = codec.AppendResponse(c.pending, &rs[i])
	}
	c.answeredLocked(len(rs))
}

// Redirect queues a Redirect answering one request taken earlier (see Respond).
func (c *ClientConn) Redirect(r *codec.Redirect) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.pending = codec.AppendRedirect(c.pending, r)
	c.answeredLocked(1)
}

// answeredLocked accounts for n answers just appended to pending, makes sure the loop will
// write them, and unlocks c.mu.
func (c *ClientConn) answeredLocked(n int) {
	c.pendingFrames += n
	c.inflight = max(c.inflight-n, 0)
	if len(c.pending) > c.server.cfg.ClientOutboundBytesMax {
		c.closed = true
		size := len(c.pending)
		c.pending = nil
		c.mu.Unlock()
		s := c.server
		s.stats.slowReaders.Add(1)
		s.warn(warnSlowReader, "netio: closing client connection: responses not read",
			"conn", c.id, "client", c.clientID, "pendingBytes", size,
			"ClientOutboundBytesMax", s.cfg.ClientOutboundBytesMax)
		_ = c.gc.Close()
		return
	}
	// On the loop (inside HandleRequests) the end of the turn flushes; elsewhere one Wake
	// covers any number of answers until the loop runs.
	wake := !c.inLoop && !c.wakeQueued
	if wake {
		c.wakeQueued = true
	}
	c.mu.Unlock()
	if wake {
		_ = c.gc.Wake(nil)
	}
}

// Resume lets netio read this connection again after HandleRequests took fewer requests than
// offered. The requests left unread are offered again on the next loop turn.
func (c *ClientConn) Resume() {
	c.mu.Lock()
	c.resumes++
	c.paused = false
	wake := !c.closed && !c.inLoop && !c.wakeQueued
	if wake {
		c.wakeQueued = true
	}
	c.mu.Unlock()
	if wake {
		_ = c.gc.Wake(nil)
	}
}

// refuseOnLoop queues the answer to a request netio refused itself (never offered to the
// Handler, so it takes no room under PendingRequestsMax). Only on the connection's loop,
// which writes it at the end of the turn.
func (c *ClientConn) refuseOnLoop(r *codec.Response) {
	c.mu.Lock()
	if !c.inLoop {
		c.mu.Unlock()
		panic("netio: refuseOnLoop outside the connection's loop turn")
	}
	c.pending = codec.AppendResponse(c.pending, r)
	c.pendingFrames++
	c.mu.Unlock()
}

// spareBytesMax is the largest write buffer kept for reuse after a write.
const spareBytesMax = 4 << 20

// engineHandler adapts gnet's callbacks to the Server, keeping them out of Server's API.
type engineHandler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *engineHandler) OnBoot(eng gnet.Engine) gnet.Action {
	s := h.s
	addr, err := listenerAddr(eng)
	if err != nil {
		// Fall back to the configured address; only port 0 makes this matter.
		s.log.Warn("netio: cannot read the bound address", "err", err)
		addr = s.cfg.ListenAddr
	}
	s.engine = eng
	s.addr = addr
	close(s.booted)
	return gnet.None
}

func (h *engineHandler) OnTick() (time.Duration, gnet.Action) {
	h.s.sweep()
	return h.s.tickInterval(), gnet.None
}

// OnOpen admits a connection into the handshake: nothing is known of it yet. At HandshakesMax
// it displaces the oldest, or is refused while all are within their grace (guard.go).
func (h *engineHandler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	s := h.s
	s.stats.connections.Add(1)
	cs := &connState{id: s.nextConnID.Add(1), gc: gc, remote: gc.RemoteAddr().String()}
	admitted, evicted := s.admitHandshake(cs) // publishes cs to the sweep: fields set before
	if evicted != nil {
		s.stats.handshakeFailures.Add(1)
		s.closeGuarded(evicted, &s.stats.handshakesEvicted, warnHandshakeEvicted,
			"netio: closing the oldest connection still in its handshake to admit a new one: HandshakesMax reached",
			"HandshakesMax", s.cfg.HandshakesMax)
	}
	if !admitted {
		// Refused before any work (no nonce, no Challenge): a connection rate costs little
		// more than the kernel's accept and close.
		s.stats.handshakesRefused.Add(1)
		s.warn(warnHandshakeRefusedFull, "netio: refusing connection: HandshakesMax connections in their handshake, none older than its grace",
			"remote", cs.remote, "HandshakesMax", s.cfg.HandshakesMax, "grace", s.handshakeGrace())
		return nil, gnet.Close
	}
	cs.nonce = newNonce()
	gc.SetContext(cs)
	challenge := codec.Challenge{Version: codec.HandshakeVersion, ClusterID: s.cfg.ClusterID, Nonce: cs.nonce}
	out := codec.AppendChallenge(nil, &challenge)
	s.stats.framesOut.Add(1)
	s.stats.bytesOut.Add(uint64(len(out)))
	return out, gnet.None
}

func (h *engineHandler) OnClose(gc gnet.Conn, _ error) gnet.Action {
	s := h.s
	s.stats.connections.Add(-1)
	cs, _ := gc.Context().(*connState)
	if cs == nil {
		return gnet.None
	}
	s.forget(cs)
	switch cs.phase {
	case phasePeer:
		s.stats.peerConnections.Add(-1)
	case phaseClient:
		s.stats.clientConnections.Add(-1)
		c := cs.client
		c.mu.Lock()
		c.closed = true
		c.pending = nil
		c.mu.Unlock()
		s.handler.ClientClosed(c)
	}
	return gnet.None
}

// OnTraffic runs one loop turn for a connection: decode every complete frame, hand them to the
// Handler, then write everything queued for the connection in one write.
func (h *engineHandler) OnTraffic(gc gnet.Conn) gnet.Action {
	cs, _ := gc.Context().(*connState)
	if cs == nil {
		return gnet.None // a Wake that arrived after the connection closed
	}
	if cs.closing.Load() {
		return gnet.Close // a guard closed it (guard.go); nothing more is read from it
	}
	s := h.s
	if c := cs.client; c != nil {
		c.mu.Lock()
		c.inLoop = true
		c.wakeQueued = false
		c.mu.Unlock()
	}
	if err := s.readFrames(cs); err != nil {
		s.closeForError(cs, err)
		return gnet.Close
	}
	if cs.client != nil {
		err := s.flushClient(cs)
		s.trackFrame(cs)
		if err == nil {
			err = s.accountBuffered(cs)
		}
		if err != nil {
			s.closeForError(cs, err)
			return gnet.Close
		}
	}
	return gnet.None
}

// closeForError counts and logs (rate-limited) why a connection is being closed.
func (s *Server) closeForError(cs *connState, err error) {
	if !cs.closing.CompareAndSwap(false, true) {
		return // a guard got there first and counted it
	}
	attrs := []any{"conn", cs.id, "remote", cs.remote, "err", err}
	protocolWarning := warnClientProtocol
	switch cs.phase {
	case phasePeer:
		attrs = append(attrs, "peer", cs.peerID)
		protocolWarning = warnPeerProtocol
	case phaseClient:
		attrs = append(attrs, "client", cs.client.clientID)
	}
	switch {
	case errors.Is(err, errClientRefused):
		s.stats.clientsRefused.Add(1)
		s.warn(warnClientRefused, "netio: refusing client: ClientConnectionsMax reached", attrs...)
	case errors.Is(err, errClientIDInUse):
		s.stats.clientsRefused.Add(1)
		s.warn(warnClientRefused, "netio: refusing client: its client id is already connected", append(attrs, "err", err)...)
	case errors.Is(err, ErrHandshake):
		s.stats.handshakeFailures.Add(1)
		s.warn(warnHandshakeRefused, "netio: handshake refused, closing connection", attrs...)
	case errors.Is(err, errBufferedBytes):
		s.stats.bufferedCutoffs.Add(1)
		s.warn(warnBufferedBytes, "netio: closing client connection: BufferedBytesMax reached", attrs...)
	case errors.Is(err, errSlowReader):
		s.stats.slowReaders.Add(1)
		s.warn(warnSlowReader, "netio: closing client connection: responses not read", attrs...)
	default:
		s.stats.protocolErrors.Add(1)
		s.warn(protocolWarning, "netio: closing connection", attrs...)
	}
}

// readFrames decodes and dispatches every complete frame gnet holds for cs, and discards the
// bytes of the frames consumed. Frames the Handler did not take stay in gnet's buffer.
func (s *Server) readFrames(cs *connState) error {
	gc := cs.gc
	cs.stalled, cs.rerun, cs.completed = false, false, false
	if cs.skipBytes > 0 {
		// The rest of an oversized Request already answered TooLarge: drop it as it comes.
		n := min(cs.skipBytes, gc.InboundBuffered())
		_, _ = gc.Discard(n)
		cs.skipBytes -= n
		s.stats.bytesIn.Add(uint64(n))
		if cs.skipBytes > 0 {
			return nil
		}
		cs.completed = true
	}
	if c := cs.client; c != nil {
		c.mu.Lock()
		paused, full := c.paused, c.inflight >= s.cfg.PendingRequestsMax
		c.mu.Unlock()
		if paused || full {
			// Unread bytes wait in gnet; flushClient re-arms the loop once room appears.
			cs.stalled = gc.InboundBuffered() > 0
			if buffered := gc.InboundBuffered(); buffered > s.cfg.InboundBytesMax {
				return fmt.Errorf("%w: paused client kept sending: %d bytes buffered, InboundBytesMax %d",
					ErrProtocol, buffered, s.cfg.InboundBytesMax)
			}
			return nil
		}
	}
	if !s.firstFrameComplete(cs) {
		return nil // wait for more bytes (a bad header is reported below, from the full walk)
	}
	buf, _ := gc.Peek(-1) // everything buffered; valid until Discard
	offset := 0
	var err error
	if cs.phase == phaseHello {
		offset, err = s.readHello(cs, buf, offset)
	}
	if err == nil {
		switch cs.phase {
		case phasePeer:
			offset, err = s.readPeer(cs, buf, offset)
		case phaseClient:
			offset, err = s.readClient(cs, buf, offset)
		}
	}
	if offset > 0 {
		_, _ = gc.Discard(offset)
	}
	return err
}

// firstFrameComplete reports whether gnet holds at least the first whole frame (or a bad
// header, or enough of an oversized Request to answer it). A large frame arrives over many
// reads; checking its header first keeps each of those turns from copying the partial frame
// out of gnet's ring buffer.
func (s *Server) firstFrameComplete(cs *connState) bool {
	buffered := cs.gc.InboundBuffered()
	if buffered < codec.FrameHeaderSize {
		return false
	}
	header, err := cs.gc.Peek(codec.FrameHeaderSize)
	if err != nil {
		return false
	}
	typ, frameLen, err := codec.PeekFrame(header, s.limitsFor(cs))
	switch {
	case cs.phase == phaseHello && frameLen > handshakeBytesMax:
		return true // readHello refuses it now rather than buffering it
	case cs.phase == phaseClient && typ == codec.TypeRequest && errors.Is(err, codec.ErrFrameTooLarge):
		// Answered TooLarge once its ids are here; over FrameBytesMax it closes at once.
		_, _, errFull := codec.PeekFrame(header, &s.cfg.Limits)
		return buffered >= oversizedIDBytes || !errors.Is(errFull, codec.ErrIncomplete)
	}
	return !errors.Is(err, codec.ErrIncomplete) || frameLen <= buffered
}

// limitsFor is what cs's frames are decoded with: a client may send no more than the largest
// legal Request (clientFrameBytesMax), peers and handshakes the full Limits.
func (s *Server) limitsFor(cs *connState) *codec.Limits {
	if cs.phase == phaseClient {
		return &s.clientLimits
	}
	return &s.cfg.Limits
}

// readHello handles the first frame of a connection, which must be a Hello.
func (s *Server) readHello(cs *connState, buf []byte, offset int) (int, error) {
	typ, n, err := codec.PeekFrame(buf[offset:], &s.cfg.Limits)
	if errors.Is(err, codec.ErrIncomplete) {
		if typ != codec.TypeInvalid && typ != codec.TypeHello {
			return offset, fmt.Errorf("%w: first frame is %s, want Hello", ErrHandshake, typ)
		}
		if n > handshakeBytesMax {
			// Before authentication nobody gets to make us buffer FrameBytesMax.
			return offset, fmt.Errorf("%w: Hello frame of %d bytes", ErrHandshake, n)
		}
		return offset, nil
	}
	if err != nil {
		return offset, fmt.Errorf("%w: first frame: %w", ErrHandshake, err)
	}
	if typ != codec.TypeHello {
		return offset, fmt.Errorf("%w: first frame is %s, want Hello", ErrHandshake, typ)
	}
	s.countIn(n)
	if err := s.acceptHello(cs, buf[offset:offset+n]); err != nil {
		return offset, err
	}
	return offset + n, nil
}

// acceptHello checks a Hello and answers it with a Welcome.
func (s *Server) acceptHello(cs *connState, frame []byte) error {
	var hello codec.Hello
	if err := codec.DecodeHello(frame, &hello, &s.cfg.Limits); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if hello.Version > codec.HandshakeVersion {
		return fmt.Errorf("%w: handshake version %d, this replica speaks at most %d", ErrHandshake, hello.Version, codec.HandshakeVersion)
	}
	if hello.ClusterID != s.cfg.ClusterID {
		return fmt.Errorf("%w: cluster id %d, this replica is in cluster %d", ErrHandshake, hello.ClusterID, s.cfg.ClusterID)
	}
	welcome := codec.Welcome{ReplicaID: s.cfg.ReplicaID, LeaderID: s.leaderID.Load()}
	switch hello.Role {
	case codec.RolePeer:
		if err := s.verifyPeerHello(cs, &hello, &welcome); err != nil {
			return err
		}
		cs.phase = phasePeer
		cs.peerID = hello.ReplicaID
		if welcome.Features&codec.FeatureS2 != 0 {
			cs.decoder = codec.NewDecoder(s.cfg.Limits)
		}
		s.stats.peerConnections.Add(1)
		s.replaceOlderPeerConn(cs)
	case codec.RoleClient:
		cs.client = &ClientConn{id: cs.id, clientID: hello.ClientID, server: s, gc: cs.gc}
		cs.client.inLoop = true // we are inside OnTraffic, which set inLoop for clients only
		if err := s.admitClient(cs); err != nil {
			return err
		}
		cs.phase = phaseClient
	default:
		return fmt.Errorf("%w: unknown role %d", ErrHandshake, hello.Role)
	}
	s.leaveHandshake(cs)
	out := codec.AppendWelcome(nil, &welcome)
	if _, err := cs.gc.Write(out); err != nil {
		return fmt.Errorf("%w: writing Welcome: %w", ErrProtocol, err)
	}
	s.countOut(1, len(out))
	return nil
}

// verifyPeerHello checks a peer's proof and fills in the Welcome that proves this replica back.
// Both proofs cover the whole transcript: the replica the connector meant to reach is part of
// it, so a proof relayed from a connection to another replica does not verify here.
func (s *Server) verifyPeerHello(cs *connState, hello *codec.Hello, welcome *codec.Welcome) error {
	if _, known := s.cfg.Peers[hello.ReplicaID]; !known {
		return fmt.Errorf("%w: replica id %d is not a configured peer", ErrHandshake, hello.ReplicaID)
	}
	if hello.Version != codec.HandshakeVersion {
		return fmt.Errorf("%w: replica %d: peer handshake version %d, this replica requires %d (a version-1 proof can be relayed: upgrade every replica)",
			ErrHandshake, hello.ReplicaID, hello.Version, codec.HandshakeVersion)
	}
	transcript := codec.Transcript{
		ClusterID:      s.cfg.ClusterID,
		Initiator:      hello.ReplicaID,
		Responder:      s.cfg.ReplicaID,
		ServerNonce:    cs.nonce,
		ConnectorNonce: hello.Nonce,
		Features:       hello.Features,
	}
	if !codec.VerifyMAC(hello.MAC, codec.InitiatorMAC(s.cfg.Secret, &transcript)) {
		return fmt.Errorf("%w: replica %d: Hello MAC does not verify (wrong secret, or a proof made for another replica)",
			ErrHandshake, hello.ReplicaID)
	}
	welcome.Features = hello.Features & s.cfg.Features
	transcript.Features = welcome.Features
	welcome.MAC = codec.ResponderMAC(s.cfg.Secret, &transcript)
	return nil
}

// replaceOlderPeerConn keeps one inbound connection per peer: a peer connects again only
// after its link failed, so an older connection from it is dead (or half-open) and is closed.
func (s *Server) replaceOlderPeerConn(cs *connState) {
	older := s.admitPeer(cs, cs.peerID)
	if older == nil || !older.closing.CompareAndSwap(false, true) {
		return
	}
	s.stats.peersReplaced.Add(1)
	s.log.Info("netio: peer connected again: closing its older inbound connection",
		"peer", cs.peerID, "conn", older.id, "newConn", cs.id)
	_ = older.gc.Close()
}

// readPeer decodes every complete frame from offset and hands each to HandlePeer.
func (s *Server) readPeer(cs *connState, buf []byte, offset int) (int, error) {
	for offset < len(buf) {
		typ, n, err := codec.PeekFrame(buf[offset:], &s.cfg.Limits)
		if errors.Is(err, codec.ErrIncomplete) {
			return offset, nil
		}
		if err != nil {
			return offset, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if !typ.IsPeer() {
			return offset, fmt.Errorf("%w: peer sent a %s frame", ErrProtocol, typ)
		}
		frame := buf[offset : offset+n]
		m := &cs.message
		if cs.decoder != nil {
			err = cs.decoder.DecodeMessage(frame, m)
		} else {
			err = codec.DecodeMessage(frame, m, &s.cfg.Limits)
		}
		if err != nil {
			return offset, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if m.From != cs.peerID {
			return offset, fmt.Errorf("%w: %s claims From %d on a link authenticated as replica %d",
				ErrProtocol, typ, m.From, cs.peerID)
		}
		if m.To != s.cfg.ReplicaID {
			return offset, fmt.Errorf("%w: %s addressed To %d, this is replica %d", ErrProtocol, typ, m.To, s.cfg.ReplicaID)
		}
		s.countIn(n)
		offset += n
		s.handler.HandlePeer(m)
	}
	return offset, nil
}

// readClient decodes the complete Requests from offset (at most the room left under
// PendingRequestsMax), offers them to HandleRequests in one call and consumes those taken.
func (s *Server) readClient(cs *connState, buf []byte, offset int) (int, error) {
	c := cs.client
	c.mu.Lock()
	room := s.cfg.PendingRequestsMax - c.inflight
	resumes := c.resumes
	c.mu.Unlock()

	start := offset
	requests, ends := cs.requests[:0], cs.ends[:0]
	for offset < len(buf) {
		typ, n, err := codec.PeekFrame(buf[offset:], &s.clientLimits)
		if errors.Is(err, codec.ErrIncomplete) {
			break
		}
		if typ == codec.TypeRequest && errors.Is(err, codec.ErrFrameTooLarge) {
			if len(requests) > 0 {
				cs.rerun = true // offer the requests before it first; the next turn answers it
				break
			}
			consumed, whole, err := s.refuseOversized(cs, buf[offset:])
			if err != nil {
				return start, err
			}
			offset += consumed
			start = offset // nothing before it is left for the Handler
			if !whole {
				break // its ids have not arrived yet, or the rest of its body is to come
			}
			continue
		}
		if err != nil {
			return start, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if typ != codec.TypeRequest && typ != codec.TypeRead {
			return start, fmt.Errorf("%w: client sent a %s frame", ErrProtocol, typ)
		}
		if len(requests) == room {
			cs.stalled = true
			break
		}
		requests = append(requests, codec.Request{})
		decode := codec.DecodeRequest
		if typ == codec.TypeRead {
			decode = codec.DecodeRead
		}
		if err := decode(buf[offset:offset+n], &requests[len(requests)-1], &s.cfg.Limits); err != nil {
			return start, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if id := requests[len(requests)-1].ClientID; id != c.clientID {
			// A request is its connection's client's: one naming another client would act
			// on that client's exactly-once session (raise its floor, take its seqs).
			return start, fmt.Errorf("%w: %s names client %d, the connection's Hello named client %d",
				ErrProtocol, typ, id, c.clientID)
		}
		offset += n
		ends = append(ends, offset)
	}
	cs.requests, cs.ends = requests, ends
	cs.completed = cs.completed || len(requests) > 0
	if len(requests) == 0 {
		if cs.stalled {
			s.stats.pauses.Add(1)
		}
		return start, nil
	}

	s.stats.requestsOffered.Add(uint64(len(requests)))
	taken := s.handler.HandleRequests(c, requests)
	taken = min(max(taken, 0), len(requests))
	consumed := start
	if taken > 0 {
		consumed = ends[taken-1]
	}
	s.countInRange(ends, start, taken)
	clear(requests) // drop references into gnet's buffer
	c.mu.Lock()
	c.inflight += taken
	if taken < len(requests) {
		cs.stalled = true
		// A Resume that ran during HandleRequests cancels this pause.
		if c.resumes == resumes {
			c.paused = true
		}
	}
	if cs.stalled {
		s.stats.pauses.Add(1)
	}
	c.mu.Unlock()
	return consumed, nil
}

// Where a Request's ids sit (docs/PROTOCOL.md §3.1: client_id u64, then seq u64, open the
// body; part of the wire format): enough to answer an oversized Request without its body.
const (
	requestClientIDOffset = codec.FrameHeaderSize
	requestSeqOffset      = requestClientIDOffset + 8
	oversizedIDBytes      = requestSeqOffset + 8
)

// refuseOversized answers a Request over the client frame limit (its payload is over
// Limits.PayloadBytesMax) with StatusTooLarge as soon as its ids have arrived, and discards its
// body — what is buffered now and, through cs.skipBytes, what is still to come — so the
// connection stays open and nothing of the body is held. A frame over Limits.FrameBytesMax is
// not worth skipping: the connection is closed. It returns the bytes of buf consumed and
// whether the whole frame was.
func (s *Server) refuseOversized(cs *connState, buf []byte) (consumed int, whole bool, err error) {
	_, frameLen, err := codec.PeekFrame(buf, &s.cfg.Limits)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		return 0, false, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if len(buf) < oversizedIDBytes {
		return 0, false, nil
	}
	refusal := codec.Response{
		ClientID: binary.LittleEndian.Uint64(buf[requestClientIDOffset:]),
		Seq:      binary.LittleEndian.Uint64(buf[requestSeqOffset:]),
		Status:   codec.StatusTooLarge,
	}
	cs.client.refuseOnLoop(&refusal)
	s.stats.requestsTooLarge.Add(1)
	consumed = min(frameLen, len(buf))
	cs.skipBytes = frameLen - consumed
	s.countIn(consumed)
	cs.completed = cs.skipBytes == 0
	s.log.Debug("netio: Request over the payload limit answered TooLarge",
		"conn", cs.id, "client", refusal.ClientID, "seq", refusal.Seq, "frameBytes", frameLen,
		"PayloadBytesMax", s.cfg.Limits.PayloadBytesMax)
	return consumed, cs.skipBytes == 0, nil
}

// flushClient ends a client's loop turn: write everything Respond/Redirect queued in one
// write, and re-arm the loop if frames were left unread but the connection may now proceed.
func (s *Server) flushClient(cs *connState) error {
	c := cs.client
	c.mu.Lock()
	out, frames := c.pending, c.pendingFrames
	c.pending, c.pendingFrames = cs.spare[:0], 0
	c.inLoop = false
	wake := (cs.stalled || cs.rerun) && !c.paused && c.inflight < s.cfg.PendingRequestsMax && !c.wakeQueued && !c.closed
	if wake {
		c.wakeQueued = true
	}
	c.mu.Unlock()
	if len(out) > 0 {
		// gnet copies whatever the socket does not take at once into its outbound buffer,
		// so out can be reused right away.
		if _, err := cs.gc.Write(out); err != nil {
			return fmt.Errorf("%w: writing responses: %w", ErrProtocol, err)
		}
		s.countOut(frames, len(out))
	}
	if cap(out) <= spareBytesMax {
		cs.spare = out[:0]
	} else {
		cs.spare = nil // do not pin a burst's buffer forever
	}
	if queued := cs.gc.OutboundBuffered(); queued > s.cfg.ClientOutboundBytesMax {
		return fmt.Errorf("%w: %d bytes queued, ClientOutboundBytesMax %d",
			errSlowReader, queued, s.cfg.ClientOutboundBytesMax)
	}
	if wake {
		_ = cs.gc.Wake(nil)
	}
	return nil
}

func (s *Server) countIn(n int) {
	s.stats.framesIn.Add(1)
	s.stats.bytesIn.Add(uint64(n))
}

// countInRange counts the first taken request frames, whose ends are given, as read.
func (s *Server) countInRange(ends []int, start, taken int) {
	if taken == 0 {
		return
	}
	s.stats.framesIn.Add(uint64(taken))
	s.stats.bytesIn.Add(uint64(ends[taken-1] - start))
}

func (s *Server) countOut(frames, n int) {
	s.stats.framesOut.Add(uint64(frames))
	s.stats.bytesOut.Add(uint64(n))
}
