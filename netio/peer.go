package netio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/mpaxos/mpaxos/codec"
)

// peerLink is this replica's outbound connection to one peer: every message Send addresses
// to that peer goes out on it. One goroutine dials, handshakes and writes; a second one only
// reads, to notice at once when the peer closes (a peer never sends on this connection after
// its Welcome). Send never blocks on the network: it encodes into pending under mu and
// signals the writer, which swaps the buffer out and writes it in one call. Whatever piles up
// while a write is in progress goes out in the next one, so writes coalesce naturally as
// load rises.
type peerLink struct {
	s    *Server
	id   uint32
	addr string

	mu            sync.Mutex
	up            bool           // handshake done, writer running
	encoder       *codec.Encoder // per connection: compression as agreed
	pending       []byte         // encoded frames not yet handed to the writer
	pendingFrames int
	ready         chan struct{} // capacity 1: "pending is non-empty"
}

func newPeerLink(s *Server, id uint32, addr string) *peerLink {
	return &peerLink{s: s, id: id, addr: addr, ready: make(chan struct{}, 1)}
}

// Send encodes m into the outbound buffer of peer m.To and returns at once; the peer link's
// writer sends it with everything else queued. Safe from any goroutine; m is not retained.
// The message is dropped (and counted in Stats.Drops) when m.To is not a configured peer,
// the link is down, the encoded frame exceeds Limits.FrameBytesMax, or the link already holds
// OutboundBytesMax bytes: Paxos retransmits what matters. From is set to this replica's id.
func (s *Server) Send(m *codec.Message) {
	link := s.peers[m.To]
	if link == nil {
		s.stats.drops.Add(1)
		return
	}
	link.send(m)
}

func (l *peerLink) send(m *codec.Message) {
	s := l.s
	l.mu.Lock()
	if !l.up || len(l.pending) >= s.cfg.OutboundBytesMax {
		l.mu.Unlock()
		s.stats.drops.Add(1)
		return
	}
	if m.From != s.cfg.ReplicaID {
		// Copy rather than write the caller's message: it may be shared.
		stamped := *m
		stamped.From = s.cfg.ReplicaID
		m = &stamped
	}
	start := len(l.pending)
	l.pending = l.encoder.AppendMessage(l.pending, m)
	if len(l.pending) > s.cfg.OutboundBytesMax || !frameWithinLimit(l.pending[start:], s.cfg.Limits.FrameBytesMax) {
		l.pending = l.pending[:start]
		l.mu.Unlock()
		s.stats.drops.Add(1)
		return
	}
	l.pendingFrames++
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default: // the writer is already signalled
	}
}

// frameWithinLimit reports whether the receiver will accept frame's size: FrameBytesMax bounds
// the frame and, for a compressed frame, the header plus the decompressed body. A frame over
// it would make the peer close the link (and lose everything queued behind it), so Send drops
// it instead.
func frameWithinLimit(frame []byte, frameBytesMax int) bool {
	if len(frame) > frameBytesMax {
		return false
	}
	if frame[frameFlagsOffset]&codec.FlagCompressed == 0 {
		return true
	}
	bodyBytes, err := s2.DecodedLen(frame[codec.FrameHeaderSize:])
	return err == nil && codec.FrameHeaderSize+bodyBytes <= frameBytesMax
}

// frameFlagsOffset is where the flags byte sits in a frame header (codec/frame.go: body
// length u32, version, type, flags, reserved; part of the wire format).
const frameFlagsOffset = 6

// run keeps the link connected until ctx is done: dial, handshake, write until the connection
// fails, back off, repeat.
func (l *peerLink) run(ctx context.Context) {
	s := l.s
	backoff := s.cfg.ReconnectBackoffMin
	for ctx.Err() == nil {
		conn, features, err := l.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrHandshake) {
				s.stats.handshakeFailures.Add(1)
				s.log.Warn("netio: peer refused", "peer", l.id, "addr", l.addr, "err", err)
			} else {
				s.log.Debug("netio: cannot reach peer", "peer", l.id, "addr", l.addr, "err", err, "retryIn", backoff)
			}
			if !sleepContext(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, s.cfg.ReconnectBackoffMax)
			continue
		}
		upSince := time.Now()
		err = l.serve(ctx, conn, features)
		if ctx.Err() != nil {
			return
		}
		s.log.Info("netio: peer link down", "peer", l.id, "addr", l.addr, "err", err)
		if time.Since(upSince) > s.cfg.ReconnectBackoffMax {
			backoff = s.cfg.ReconnectBackoffMin // it was healthy: retry at once
			continue
		}
		// A link that fails soon after its handshake is flapping: keep backing off.
		if !sleepContext(ctx, jitter(backoff)) {
			return
		}
		backoff = min(backoff*2, s.cfg.ReconnectBackoffMax)
	}
}

// jitter spreads reconnect attempts over [d/2, d) so replicas that lost a peer together do not
// redial in lockstep.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}

func sleepContext(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect dials the peer and runs the connector's side of the handshake.
func (l *peerLink) connect(ctx context.Context) (net.Conn, uint32, error) {
	s := l.s
	dialer := net.Dialer{Timeout: s.cfg.HandshakeTimeout}
	conn, err := dialer.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return nil, 0, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	features, err := l.handshake(conn)
	stop()
	if err != nil || ctx.Err() != nil {
		_ = conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, 0, err
	}
	return conn, features, nil
}

func (l *peerLink) handshake(conn net.Conn) (uint32, error) {
	s := l.s
	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var buf []byte
	frame, buf, err := readFrame(conn, buf, &s.cfg.Limits)
	if err != nil {
		return 0, fmt.Errorf("reading Challenge: %w", err)
	}
	var challenge codec.Challenge
	if err := codec.DecodeChallenge(frame, &challenge, &s.cfg.Limits); err != nil {
		return 0, fmt.Errorf("%w: peer %d: %w", ErrHandshake, l.id, err)
	}
	if challenge.Version < codec.HandshakeVersion {
		return 0, fmt.Errorf("%w: peer %d speaks handshake version %d, this replica requires %d (a version-1 proof can be relayed: upgrade every replica)",
			ErrHandshake, l.id, challenge.Version, codec.HandshakeVersion)
	}
	if challenge.ClusterID != s.cfg.ClusterID {
		return 0, fmt.Errorf("%w: peer %d is in cluster %d, this replica in %d",
			ErrHandshake, l.id, challenge.ClusterID, s.cfg.ClusterID)
	}
	hello := codec.Hello{
		Version:   codec.HandshakeVersion,
		Role:      codec.RolePeer,
		ClusterID: s.cfg.ClusterID,
		ReplicaID: s.cfg.ReplicaID,
		Features:  s.cfg.Features,
		Nonce:     newNonce(),
	}
	// The proof names the replica this link is for: relayed to any other, it fails.
	transcript := codec.Transcript{
		ClusterID:      s.cfg.ClusterID,
		Initiator:      s.cfg.ReplicaID,
		Responder:      l.id,
		ServerNonce:    challenge.Nonce,
		ConnectorNonce: hello.Nonce,
		Features:       hello.Features,
	}
	hello.MAC = codec.InitiatorMAC(s.cfg.Secret, &transcript)
	if _, err := conn.Write(codec.AppendHello(nil, &hello)); err != nil {
		return 0, fmt.Errorf("writing Hello: %w", err)
	}
	frame, _, err = readFrame(conn, buf, &s.cfg.Limits)
	if err != nil {
		// The server closes without a word when it refuses our Hello.
		return 0, fmt.Errorf("%w: peer %d closed the connection instead of a Welcome (wrong secret or cluster id?): %w",
			ErrHandshake, l.id, err)
	}
	var welcome codec.Welcome
	if err := codec.DecodeWelcome(frame, &welcome, &s.cfg.Limits); err != nil {
		return 0, fmt.Errorf("%w: peer %d: %w", ErrHandshake, l.id, err)
	}
	if welcome.ReplicaID != l.id {
		return 0, fmt.Errorf("%w: %s answered as replica %d, expected %d", ErrHandshake, l.addr, welcome.ReplicaID, l.id)
	}
	if welcome.Features&^s.cfg.Features != 0 {
		return 0, fmt.Errorf("%w: peer %d agreed to features %#x this replica did not offer", ErrHandshake, l.id, welcome.Features)
	}
	transcript.Features = welcome.Features
	if !codec.VerifyMAC(welcome.MAC, codec.ResponderMAC(s.cfg.Secret, &transcript)) {
		return 0, fmt.Errorf("%w: peer %d: Welcome MAC does not verify (wrong secret?)", ErrHandshake, l.id)
	}
	_ = conn.SetDeadline(time.Time{})
	return welcome.Features, nil
}

// peerSpareBytesMax is the largest write buffer a peer link keeps for reuse. Links carry
// large batches, so it is larger than for clients; it pins at most this much per peer.
const peerSpareBytesMax = 16 << 20

// handshakeBytesMax bounds what the connector buffers while reading handshake frames (each is
// well under 200 bytes).
const handshakeBytesMax = 4096

// readFrame reads one whole frame from r. buf holds bytes already read; the returned rest holds
// bytes read past the frame.
func readFrame(r io.Reader, buf []byte, lim *codec.Limits) (frame, rest []byte, err error) {
	for {
		_, n, err := codec.PeekFrame(buf, lim)
		if err == nil {
			return buf[:n], buf[n:], nil
		}
		if !errors.Is(err, codec.ErrIncomplete) {
			return nil, nil, err
		}
		if len(buf) >= handshakeBytesMax || n > handshakeBytesMax {
			return nil, nil, fmt.Errorf("%w: handshake frame over %d bytes", ErrHandshake, handshakeBytesMax)
		}
		chunk := make([]byte, handshakeBytesMax-len(buf))
		m, err := r.Read(chunk)
		buf = append(buf, chunk[:m]...)
		if err != nil && m == 0 {
			return nil, nil, err
		}
	}
}

// serve runs a connected link: it writes whatever Send queues until the connection fails or
// ctx is done, then takes the link down and drops what was still queued.
func (l *peerLink) serve(ctx context.Context, conn net.Conn, features uint32) error {
	s := l.s
	l.mu.Lock()
	l.up = true
	l.encoder = codec.NewEncoder(features&codec.FeatureS2 != 0, s.cfg.Limits.CompressThreshold)
	l.pending, l.pendingFrames = l.pending[:0], 0
	l.mu.Unlock()
	s.stats.peersConnected.Add(1)
	s.stats.reconnects.Add(1)
	s.log.Info("netio: peer link up", "peer", l.id, "addr", l.addr, "features", features)

	// The reader: the peer sends nothing after Welcome, so any read result means the
	// connection is over; closing it also wakes a writer blocked in Write.
	readerDone := make(chan error, 1)
	go func() {
		var one [1]byte
		_, err := conn.Read(one[:])
		if err == nil {
			err = fmt.Errorf("%w: peer %d sent data on an outbound link", ErrProtocol, l.id)
		}
		_ = conn.Close()
		readerDone <- err
	}()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })

	err := l.writeLoop(ctx, conn, readerDone)

	stop()
	_ = conn.Close()
	if readErr := <-readerDone; err == nil {
		err = readErr
	}
	l.mu.Lock()
	l.up = false
	s.stats.drops.Add(uint64(l.pendingFrames))
	l.pending, l.pendingFrames = l.pending[:0], 0
	l.mu.Unlock()
	s.stats.peersConnected.Add(-1)
	return err
}

func (l *peerLink) writeLoop(ctx context.Context, conn net.Conn, readerDone chan error) error {
	s := l.s
	var spare []byte
	for {
		select {
		case <-l.ready:
		case err := <-readerDone:
			readerDone <- err // serve reads it again
			return nil
		case <-ctx.Done():
			return nil
		}
		l.mu.Lock()
		out, frames := l.pending, l.pendingFrames
		l.pending, l.pendingFrames = spare[:0], 0
		l.mu.Unlock()
		if len(out) == 0 {
			spare = out
			continue
		}
		if _, err := conn.Write(out); err != nil {
			s.stats.drops.Add(uint64(frames))
			return err
		}
		s.countOut(frames, len(out))
		if cap(out) <= peerSpareBytesMax {
			spare = out[:0]
		} else {
			spare = nil // do not pin a burst's buffer forever
		}
	}
}
