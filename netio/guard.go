package netio

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The guards: what keeps connections that are hostile, broken or merely slow from holding a
// replica's memory, descriptors or connection slots. Each bound is a Config field; each
// closure is counted in Stats and logged through the rate-limited warn.
//
//   - A connection in its handshake is in guard.handshakes (oldest first). HandshakeTimeout
//     closes it if no valid Hello arrives. At HandshakesMax a new connection displaces the
//     oldest once that one has had handshakeGrace, and is refused before: silent connections
//     age out of the way of a peer, and a burst of legitimate ones does not evict itself.
//   - A client is in guard.clients. The sweep closes it when a frame has been arriving for
//     longer than FrameTimeout, or when it has been idle for IdleTimeout; every loop turn
//     accounts the bytes it holds in gnet against BufferedBytesMax.
//   - A peer is in guard.peers, one inbound connection per replica id: a newer authenticated
//     connection from the same peer replaces the older one, so peers need no slot budget and
//     clients cannot take theirs.

// connGuard is the registry of inbound connections the sweep and the limits act on.
type connGuard struct {
	mu         sync.Mutex
	handshakes list.List // of *connState in phaseHello, oldest first
	clients    map[*connState]struct{}
	peers      map[uint32]*connState
	// clientIDs: the connection each client id is live on. A client id is one client's
	// exactly-once session: two live connections under one id would answer each other's
	// requests, so a second one is refused while the first is open.
	clientIDs map[uint64]*connState
}

// guardState is the part of connState the guards use.
type guardState struct {
	handshakeElem *list.Element // its place in connGuard.handshakes, nil once out of it
	openedAt      time.Duration // clock() when accepted
	// frameSince is clock() (as int64 ns) when the client frame now arriving began, 0 when no
	// partial frame is buffered; activeAt is clock() of the connection's last loop turn. Both
	// are written by the connection's loop and read by the sweep.
	frameSince atomic.Int64
	activeAt   atomic.Int64
	closing    atomic.Bool // a guard asked gnet to close it: count and log it once
	heldBytes  int         // bytes held in gnet at the end of the last turn (loop-owned)
}

// clock is the Server's monotonic time since NewServer, never zero.
func (s *Server) clock() time.Duration { return time.Since(s.epoch) + 1 }

// handshakeGrace is how long a connection in its handshake is safe from eviction: a fraction
// of HandshakeTimeout, many round trips. Without it, a burst of connections larger than
// HandshakesMax (clients reconnecting at once) evicts itself in a loop and none completes;
// with it, the burst beyond the pool is refused and retries while the pool completes.
func (s *Server) handshakeGrace() time.Duration { return s.cfg.HandshakeTimeout / 8 }

// admitHandshake registers a connection just accepted. With HandshakesMax in their handshake
// already, the oldest is displaced if it has had its grace (evicted is returned), else the new
// one is refused (admitted false).
func (s *Server) admitHandshake(cs *connState) (admitted bool, evicted *connState) {
	g := &s.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	now := s.clock()
	if g.handshakes.Len() >= s.cfg.HandshakesMax {
		oldest := g.handshakes.Front().Value.(*connState)
		if now-oldest.openedAt < s.handshakeGrace() {
			return false, nil
		}
		g.handshakes.Remove(g.handshakes.Front())
		oldest.handshakeElem = nil
		evicted = oldest
	}
	cs.openedAt = now
	cs.handshakeElem = g.handshakes.PushBack(cs)
	if g.handshakes.Len() > s.cfg.HandshakesMax {
		panic(fmt.Sprintf("netio: %d connections in their handshake, HandshakesMax %d", g.handshakes.Len(), s.cfg.HandshakesMax))
	}
	return true, evicted
}

// leaveHandshake takes cs out of the handshake registry (authenticated, refused or closed).
func (s *Server) leaveHandshake(cs *connState) {
	g := &s.guard
	g.mu.Lock()
	if cs.handshakeElem != nil {
		g.handshakes.Remove(cs.handshakeElem)
		cs.handshakeElem = nil
	}
	g.mu.Unlock()
}

// admitClient counts cs as a client: errClientRefused at ClientConnectionsMax,
// errClientIDInUse while another connection of the same client id is open.
func (s *Server) admitClient(cs *connState) error {
	g := &s.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	if other, live := g.clientIDs[cs.client.clientID]; live {
		return fmt.Errorf("%w: client id %d is connected on connection %d", errClientIDInUse, cs.client.clientID, other.id)
	}
	if s.stats.clientConnections.Add(1) > int64(s.cfg.ClientConnectionsMax) {
		s.stats.clientConnections.Add(-1)
		return fmt.Errorf("%w: %d clients connected", errClientRefused, s.cfg.ClientConnectionsMax)
	}
	cs.activeAt.Store(int64(s.clock()))
	g.clients[cs] = struct{}{}
	g.clientIDs[cs.client.clientID] = cs
	return nil
}

// admitPeer records cs as peer id's inbound connection and returns the one it replaces.
func (s *Server) admitPeer(cs *connState, id uint32) (replaced *connState) {
	g := &s.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	replaced = g.peers[id]
	g.peers[id] = cs
	return replaced
}

// forget removes a closing connection from every registry and returns the bytes it held.
func (s *Server) forget(cs *connState) {
	g := &s.guard
	g.mu.Lock()
	if cs.handshakeElem != nil {
		g.handshakes.Remove(cs.handshakeElem)
		cs.handshakeElem = nil
	}
	delete(g.clients, cs)
	if cs.client != nil && g.clientIDs[cs.client.clientID] == cs {
		delete(g.clientIDs, cs.client.clientID)
	}
	if cs.phase == phasePeer && g.peers[cs.peerID] == cs {
		delete(g.peers, cs.peerID)
	}
	g.mu.Unlock()
	if cs.heldBytes != 0 {
		s.stats.bufferedBytes.Add(-int64(cs.heldBytes))
		cs.heldBytes = 0
	}
}

// closeGuarded closes cs for a guard's reason, once: counter, rate-limited warning, close.
func (s *Server) closeGuarded(cs *connState, counter *atomic.Uint64, reason, msg string, attrs ...any) {
	if !cs.closing.CompareAndSwap(false, true) {
		return
	}
	counter.Add(1)
	s.warn(reason, msg, append([]any{"conn", cs.id, "remote", cs.remote}, attrs...)...)
	_ = cs.gc.Close()
}

// sweep runs on every engine tick: it closes connections past HandshakeTimeout, and client
// connections past FrameTimeout or IdleTimeout.
func (s *Server) sweep() {
	now := s.clock()
	var overdue, slow, idle []*connState
	g := &s.guard
	g.mu.Lock()
	for e := g.handshakes.Front(); e != nil; {
		cs := e.Value.(*connState)
		if now-cs.openedAt <= s.cfg.HandshakeTimeout {
			break // the list is in order of opening: the rest are younger
		}
		next := e.Next()
		g.handshakes.Remove(e)
		cs.handshakeElem = nil
		overdue = append(overdue, cs)
		e = next
	}
	for cs := range g.clients {
		if since := cs.frameSince.Load(); since != 0 && now-time.Duration(since) > s.cfg.FrameTimeout {
			slow = append(slow, cs)
		} else if now-time.Duration(cs.activeAt.Load()) > s.cfg.IdleTimeout {
			idle = append(idle, cs)
		}
	}
	g.mu.Unlock()

	for _, cs := range overdue {
		s.stats.handshakeFailures.Add(1)
		s.closeGuarded(cs, &s.stats.handshakeTimeouts, warnHandshakeTimeout,
			"netio: closing connection: no valid Hello within HandshakeTimeout", "HandshakeTimeout", s.cfg.HandshakeTimeout)
	}
	for _, cs := range slow {
		s.closeGuarded(cs, &s.stats.frameTimeouts, warnFrameTimeout,
			"netio: closing client connection: a frame did not arrive whole within FrameTimeout",
			"client", cs.client.clientID, "FrameTimeout", s.cfg.FrameTimeout)
	}
	for _, cs := range idle {
		if !cs.client.idle() || !cs.closing.CompareAndSwap(false, true) {
			continue
		}
		s.stats.idleTimeouts.Add(1)
		s.log.Debug("netio: closing idle client connection", "conn", cs.id, "client", cs.client.clientID,
			"IdleTimeout", s.cfg.IdleTimeout)
		_ = cs.gc.Close()
	}
}

// idle reports whether nothing is owed on c: no request taken and unanswered, no response
// waiting for the loop.
func (c *ClientConn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight == 0 && len(c.pending) == 0
}

// trackFrame ends a client's loop turn for FrameTimeout: a partial frame left in gnet starts
// (or keeps) the clock; a whole frame this turn restarts it; nothing buffered, or a pause
// (the connection waits on us), stops it.
func (s *Server) trackFrame(cs *connState) {
	now := int64(s.clock())
	cs.activeAt.Store(now)
	switch {
	case cs.stalled || (cs.skipBytes == 0 && cs.gc.InboundBuffered() == 0):
		cs.frameSince.Store(0)
	case cs.completed || cs.frameSince.Load() == 0:
		cs.frameSince.Store(now)
	}
}

// accountBuffered ends a client's loop turn for BufferedBytesMax: what the connection now
// holds in gnet (a partial request in, responses the socket did not take out) is added to the
// Server's total. Past the total, a connection that grew beyond its fair share is closed: the
// ones holding the most are the ones cut, a client with a few small requests in flight is not.
func (s *Server) accountBuffered(cs *connState) error {
	held := cs.gc.InboundBuffered() + cs.gc.OutboundBuffered()
	delta := held - cs.heldBytes
	cs.heldBytes = held
	total := s.stats.bufferedBytes.Add(int64(delta))
	if delta <= 0 || total <= int64(s.cfg.BufferedBytesMax) {
		return nil
	}
	share := int64(s.cfg.BufferedBytesMax) / max(s.stats.clientConnections.Load(), 1)
	if int64(held) <= share {
		return nil
	}
	return fmt.Errorf("%w: %d bytes buffered for all clients, BufferedBytesMax %d; this connection holds %d, its share %d",
		errBufferedBytes, total, s.cfg.BufferedBytesMax, held, share)
}

// errBufferedBytes, errSlowReader and errClientRefused mark closures that are limits, not protocol violations:
// closeForError counts them apart.
var (
	errBufferedBytes = errors.New("netio: BufferedBytesMax reached")
	errSlowReader    = errors.New("netio: client is not reading its responses")
	errClientRefused = errors.New("netio: ClientConnectionsMax reached")
	errClientIDInUse = errors.New("netio: client id already connected")
)

// fdReserve is the descriptors kept free for everything but inbound connections: outbound
// peer links, WAL segments, the admin server, logs, the process's own files.
const fdReserve = 256

// fitDescriptors lowers ClientConnectionsMax so that every bounded inbound connection has a
// descriptor. It matters beyond running out: gnet v2.9.7 stops the whole engine — the listener
// and every connection — on the first accept error other than EAGAIN/ECONNABORTED
// (acceptor_unix.go returns ErrAcceptSocket, reactor_default.go shuts down), so an EMFILE
// would let anyone who can open connections switch the replica's network off. Go raises the
// soft RLIMIT_NOFILE to the hard one at start; this reads the result.
func (s *Server) fitDescriptors() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return
	}
	room := int(rl.Cur) - fdReserve - s.cfg.HandshakesMax - len(s.cfg.Peers)
	if s.cfg.ClientConnectionsMax <= room {
		return
	}
	lowered := max(room, 1)
	s.log.Warn("netio: lowering ClientConnectionsMax to fit the open-file limit (raise ulimit -n to keep it)",
		"ClientConnectionsMax", s.cfg.ClientConnectionsMax, "lowered", lowered, "RLIMIT_NOFILE", rl.Cur,
		"HandshakesMax", s.cfg.HandshakesMax, "reserve", fdReserve)
	s.cfg.ClientConnectionsMax = lowered
}
