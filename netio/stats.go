package netio

import "sync/atomic"

// Stats is a snapshot of a Server's counters. Counters only grow, except the Connections*
// and PeersConnected gauges.
type Stats struct {
	Connections        int64  // inbound connections open now (any phase)
	ClientConnections  int64  // of which completed the handshake as clients
	PeerConnections    int64  // of which completed the handshake as peers
	PeersConnected     int64  // outbound peer links up now
	ConnectionsRefused uint64 // inbound connections closed at accept (over ConnectionsMax)
	HandshakeFailures  uint64 // handshakes refused or timed out, inbound and outbound
	ProtocolErrors     uint64 // established connections closed for what they sent
	FramesIn           uint64 // frames decoded on inbound connections
	BytesIn            uint64
	FramesOut          uint64 // frames written (responses, redirects, peer messages)
	BytesOut           uint64
	Drops              uint64 // peer messages dropped (link down, buffer full, unknown peer)
	Reconnects         uint64 // outbound peer links (re)established
	RequestsOffered    uint64 // client requests offered to Handler.HandleRequests
	Pauses             uint64 // times a client connection was paused by the Handler or PendingRequestsMax
}

// counters is the live form of Stats, updated with atomics from any goroutine.
type counters struct {
	connections        atomic.Int64
	clientConnections  atomic.Int64
	peerConnections    atomic.Int64
	peersConnected     atomic.Int64
	connectionsRefused atomic.Uint64
	handshakeFailures  atomic.Uint64
	protocolErrors     atomic.Uint64
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
	return Stats{
		Connections:        c.connections.Load(),
		ClientConnections:  c.clientConnections.Load(),
		PeerConnections:    c.peerConnections.Load(),
		PeersConnected:     c.peersConnected.Load(),
		ConnectionsRefused: c.connectionsRefused.Load(),
		HandshakeFailures:  c.handshakeFailures.Load(),
		ProtocolErrors:     c.protocolErrors.Load(),
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
