// Package netio moves mpaxos frames between replicas and between clients and replicas. It
// owns sockets, framing, authentication, reconnects and backpressure; it contains no Paxos
// rules (those are core/'s) and decodes nothing beyond what codec/ provides.
//
// # Shape
//
// One Server per replica:
//
//	            inbound (gnet engine, one listener)             outbound (one link per peer)
//	clients ──▶ Challenge/Hello/Welcome ─▶ Requests ─▶ Handler.HandleRequests
//	peers   ──▶ Challenge/Hello/Welcome ─▶ Messages ─▶ Handler.HandlePeer
//	                                              Server.Send(m) ─▶ peerLink[m.To] ─▶ peer m.To
//
// Both clients and peers connect to the same listener and are told apart by the Role of their
// Hello. Each peer link is one-way after its handshake: this replica sends everything for peer
// P on its own outbound connection to P, and receives everything from P on P's outbound
// connection to it (an inbound connection here). A replica pair therefore uses two TCP
// connections, and ordering holds per direction.
//
// # Handshake
//
// On accept the server writes a Challenge (handshake version, cluster id, a fresh 32-byte
// nonce from crypto/rand). A peer answers with a Hello carrying its own nonce and
// MAC = codec.InitiatorMAC over the transcript: the cluster id, its own replica id, the id of
// the replica it dialled, both nonces and its features. The server checks the MAC (constant
// time) with its own id as the responder, the cluster id and the version, and answers with a
// Welcome whose MAC = codec.ResponderMAC over the same transcript (with the agreed features),
// which the connector checks in turn. Both ends prove knowledge of the secret, the secret never
// crosses the wire, a recorded exchange cannot be replayed (fresh nonces), a proof relayed to a
// replica other than the one it was made for fails (issue 15: a process at a stopped
// replica's address was welcomed by another replica in the connector's name), and a proof
// reflected in the other direction fails (distinct labels). Peers require handshake version
// codec.HandshakeVersion (2); version 1 proofs are refused. A failed check closes the
// connection, logs why (slog, never the secret) and counts Stats.HandshakeFailures. Clients
// send RoleClient with no MAC (any version up to the Challenge's) and get a Welcome with the
// leader hint (SetLeader). Features are the intersection of both offers: S2 compression of
// large Accept/Promise/CatchUpReply bodies is used on a peer link only when both ends set
// codec.FeatureS2. Before authentication a Hello may not exceed 4 KiB.
//
// # Event loops (inbound)
//
// Per loop turn (gnet OnTraffic) a connection's complete frames are decoded
// (codec.PeekFrame with Config.Limits; for clients, with FrameBytesMax lowered to the largest
// legal Request) and dispatched: peer messages one by one to
// HandlePeer, client Requests (and Reads, as Requests with Read set) as one slice per turn to
// HandleRequests; then everything queued for the connection is written with one Write. Slices handed to the Handler alias gnet's
// inbound buffer and are valid only during the call: the Handler copies what it keeps.
//
// Responses come from other goroutines (the pipeline's apply stage). ClientConn.Respond and
// Redirect append the encoded frames to a mutex-protected per-connection buffer and call
// gnet's Conn.Wake once until the loop has run; the loop writes the whole buffer in one write.
// We do not use AsyncWrite per response: it goes through gnet's task queue per call and has
// shown large queueing delays under load (gnet #423). Respond from inside HandleRequests is
// written at the end of that same turn, without a Wake.
//
// # Backpressure and limits
//
// Every bound below is a Config field with a default; exceeding one closes (or refuses) that
// connection only, is counted in Stats, and is logged with the limit's name through a rate
// limit (Config.WarnInterval: one line per reason per interval, the rest counted in
// Stats.WarningsSuppressed), so a flood is not also a flood of log lines. guard.go holds the
// registry and the sweep (run on the engine's ticker) that enforce the timeouts.
//
//   - HandleRequests returns how many requests it took. If fewer than offered, netio stops
//     reading that connection: the rest stays in gnet's inbound buffer (not discarded) and is
//     offered again after ClientConn.Resume (which Wakes the loop). gnet has no way to stop
//     reading a socket, so a client that keeps sending while paused is closed once more than
//     Config.InboundBytesMax is buffered for it.
//   - Config.PendingRequestsMax bounds requests taken but not yet answered per connection;
//     at the bound netio stops reading that connection until answers arrive.
//   - Config.OutboundBytesMax bounds the bytes queued on one peer link: Send drops (and counts)
//     peer messages beyond it. Config.ClientOutboundBytesMax bounds the responses queued for
//     one client: a client that does not read its replies is closed past it (Stats.SlowReaders).
//   - A client's frames are bounded by what a client may legally send, not by
//     Limits.FrameBytesMax: the largest Request, one of Limits.PayloadBytesMax (about 1 MiB by
//     default, against 64 MiB for peers). A Request beyond it is answered StatusTooLarge as
//     soon as its ids arrive and its body is discarded as it comes, never buffered; the
//     connection stays open (Stats.RequestsTooLarge). One beyond Limits.FrameBytesMax closes it.
//   - Config.FrameTimeout: a client frame must be whole within it once its first byte has
//     arrived (a header and a trickle of bytes is closed: Stats.FrameTimeouts).
//     Config.IdleTimeout closes a client that sent nothing for that long with nothing owed to
//     it (Stats.IdleTimeouts).
//   - Config.BufferedBytesMax bounds what all clients together hold in gnet's buffers; past
//     it, a client that grows beyond its fair share is closed (Stats.BufferedCutoffs). Measured
//     with 48 clients each holding an unfinished 62 MiB frame: before these bounds the leader
//     went from 201 MB to 4.35 GB RSS (issue 15); with them, 48 such connections (half of
//     them trickling a legal 1 MiB frame) left the leader at 95-99 MB and were all cut within
//     12.5 s (tests/hostile).
//   - Connections are counted by what they are. Config.HandshakesMax bounds connections not yet
//     past their handshake; a new one beyond it closes the oldest once that one has waited an
//     eighth of HandshakeTimeout (Stats.HandshakesEvicted), and is refused at once, before any
//     work, while none has (Stats.HandshakesRefused). Silent connections thus age out of the
//     way of a peer that answers its Challenge within a round trip (HandshakeTimeout closes
//     them anyway), and a burst of reconnecting clients larger than the pool does not evict
//     itself in a loop (it did, without the grace: a flood test's clients never got through). Config.ClientConnectionsMax bounds
//     clients (Stats.ClientsRefused). Peers never count against either: one inbound connection
//     per configured peer is kept, a newer authenticated one replacing the older
//     (Stats.PeersReplaced). Before this split, 4,096 idle clients kept a restarted follower
//     out of its cluster for good.
//   - Start lowers ClientConnectionsMax, with a warning, until every bounded connection has a
//     file descriptor under RLIMIT_NOFILE: gnet v2.9.7 stops the whole engine on an accept
//     error such as EMFILE, which would otherwise be a switch anyone could pull.
//   - Limits.FrameBytesMax bounds every frame; a bad header, an unknown type, a 4 GiB length
//     field, a frame of the wrong kind for the connection's role, a peer message claiming a
//     sender other than the authenticated one: each closes that connection only, with a log
//     line saying why (Stats.ProtocolErrors).
//
// # Outbound peer links: net.Conn writer goroutines, not gnet's client
//
// Outbound links use one plain net.Conn per peer with a writer goroutine (plus a reader
// goroutine that only watches for the close, since peers never answer on this connection).
// Send encodes into the link's bounded buffer under a mutex and signals the writer; the writer
// swaps the buffer out and writes it with one call, so everything queued while the previous
// write was in the kernel leaves in the next write: coalescing grows with load. We read gnet's
// client (v2.9.7 client_unix.go): Client.Dial is a blocking net.Dial followed by dup'ing the
// fd into a gnet loop, so dialing, timeouts and reconnect backoff would still need a goroutine
// of ours, and writes from Send's goroutines would take an extra hop through Wake and the
// loop's task queue. With N-1 long-lived, write-mostly connections per replica the event-loop
// model buys nothing here. Measured (outbound_bench_test.go: the same mutex-protected buffer
// drained by a writer goroutine vs. by a gnet client loop woken with Wake, 16 KiB frames to a
// discarding sink, 2 shared and heavily loaded cores): both peak near 2.6 GB/s and both
// scatter widely run to run (0.4-2.6 GB/s vs 0.16-2.6 GB/s); no advantage for gnet's client
// that would pay for the extra machinery. End to end through a netio Server (bench_test.go):
// ~770 MB/s of 16 KiB Accept values uncompressed, ~1.3 GB/s with S2 on half-compressible
// values.
//
// Links reconnect with capped exponential backoff (Config.ReconnectBackoffMin..Max) with
// jitter in [d/2, d). While a link is down, Send drops (Paxos retransmits what matters); what
// was queued when a link fails is dropped and counted too.
//
// # Lifecycle
//
// Start binds (a port in use is an error wrapping ErrListen: gnet.Run reports bind failures
// before its OnBoot, and Start waits for one or the other), starts the event loops (which
// carry pprof labels netio=event-loop, inherited from the goroutine that runs gnet.Run) and
// the peer links (labelled netio=peer-link). Stop stops accepting, closes every connection
// (ClientClosed runs for each client) and returns once every goroutine netio started is gone.
// gnet keeps a process-wide worker pool created at its package init; that is not ours to stop.
package netio
