package netio

import "sync/atomic"

// Stats is a snapshot of a Server's counters. Counters only grow, except the gauges
// (Connections*, PeersConnected, BufferedBytes).
type Stats struct {
	Connections       int64 // inbound connections open now (any phase)
	ClientConnections int64 // of which completed the handshake as clients
	PeerConnections   int64 // of which completed the handshake as peers
	PeersConnected    int64 // outbound peer links up now
	BufferedBytes     int64 // bytes client connections hold in gnet's buffers (see BufferedBytesMax)

	// ConnectionsRefused counts connections closed for a capacity limit: ClientsRefused,
	// HandshakesEvicted and HandshakesRefused.
	ConnectionsRefused uint64
	ClientsRefused     uint64 // client Hellos refused at ClientConnectionsMax
	HandshakesEvicted  uint64 // connections closed in their handshake to admit a newer one (HandshakesMax)
	HandshakesRefused  uint64 // connections closed at accept: HandshakesMax, none past its grace
	PeersReplaced      uint64 // older inbound connections of a peer closed when it connected again
	HandshakeFailures  uint64 // handshakes refused or timed out, inbound and outbound
	HandshakeTimeouts  uint64 // of HandshakeFailures: no valid Hello within HandshakeTimeout
	ProtocolErrors     uint64 // established connections closed for what they sent
	FrameTimeouts      uint64 // client connections closed: a frame not whole within FrameTimeout
	IdleTimeouts       uint64 // client connections closed after IdleTimeout with nothing pending
	BufferedCutoffs    uint64 // client connections closed at BufferedBytesMax
	SlowReaders        uint64 // client connections closed: responses queued past ClientOutboundBytesMax
	RequestsTooLarge   uint64 // Requests over Limits.PayloadBytesMax answered TooLarge (body discarded)
	WarningsSuppressed uint64 // warnings not logged because of WarnInterval (see Config)

	FramesIn        uint64 // frames decoded on inbound connections
	BytesIn         uint64
	FramesOut       uint64 // frames written (responses, redirects, peer messages)
	BytesOut        uint64
	Drops           uint64 // peer messages dropped (link down, buffer full, unknown peer)
	Reconnects      uint64 // outbound peer links (re)established
	RequestsOffered uint64 // client requests offered to Handler.HandleRequests
	Pauses          uint64 // times a client connection was paused by the Handler or PendingRequestsMax
}

// counters is the live form of Stats, updated with atomics from any goroutine.
type counters struct {
	connections        atomic.Int64
	clientConnections  atomic.Int64
	peerConnections    atomic.Int64
	peersConnected     atomic.Int64
	bufferedBytes      atomic.Int64
	clientsRefused     atomic.Uint64
	handshakesEvicted  atomic.Uint64
	handshakesRefused  atomic.Uint64
	peersReplaced      atomic.Uint64
	handshakeFailures  atomic.Uint64
	handshakeTimeouts  atomic.Uint64
	protocolErrors     atomic.Uint64
	frameTimeouts      atomic.Uint64
	idleTimeouts       atomic.Uint64
	bufferedCutoffs    atomic.Uint64
	slowReaders        atomic.Uint64
	requestsTooLarge   atomic.Uint64
	warningsSuppressed atomic.Uint64
	framesIn           atomic.Uint64
	bytesIn            atomic.Uint64
	framesOut          atomic.Uint64
	bytesOut           atomic.Uint64
	drops              atomic.Uint64
	reconnects         atomic.Uint64
	requestsOffered    atomic.Uint64
	pauses             atomic.Uint64
}

func (c *counters) snapshot() Stats {
	clientsRefused, handshakesEvicted, handshakesRefused := c.clientsRefused.Load(), c.handshakesEvicted.Load(), c.handshakesRefused.Load()
	return Stats{
		Connections:        c.connections.Load(),
		ClientConnections:  c.clientConnections.Load(),
		PeerConnections:    c.peerConnections.Load(),
		PeersConnected:     c.peersConnected.Load(),
		BufferedBytes:      c.bufferedBytes.Load(),
		ConnectionsRefused: clientsRefused + handshakesEvicted + handshakesRefused,
		ClientsRefused:     clientsRefused,
		HandshakesEvicted:  handshakesEvicted,
		HandshakesRefused:  handshakesRefused,
		PeersReplaced:      c.peersReplaced.Load(),
		HandshakeFailures:  c.handshakeFailures.Load(),
		HandshakeTimeouts:  c.handshakeTimeouts.Load(),
		ProtocolErrors:     c.protocolErrors.Load(),
		FrameTimeouts:      c.frameTimeouts.Load(),
		IdleTimeouts:       c.idleTimeouts.Load(),
		BufferedCutoffs:    c.bufferedCutoffs.Load(),
		SlowReaders:        c.slowReaders.Load(),
		RequestsTooLarge:   c.requestsTooLarge.Load(),
		WarningsSuppressed: c.warningsSuppressed.Load(),
		FramesIn:           c.framesIn.Load(),
		BytesIn:            c.bytesIn.Load(),
		FramesOut:          c.framesOut.Load(),
		BytesOut:           c.bytesOut.Load(),
		Drops:              c.drops.Load(),
		Reconnects:         c.reconnects.Load(),
		RequestsOffered:    c.requestsOffered.Load(),
		Pauses:             c.pauses.Load(),
	}
}
