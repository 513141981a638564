package netio

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// startCluster starts n replicas (ids 1..n) that know each other, all with cfgFn applied.
func startCluster(t *testing.T, n int, cfgFn func(*Config)) ([]*Server, []*testHandler) {
	t.Helper()
	addrs := freeAddrs(t, n)
	servers := make([]*Server, n)
	handlers := make([]*testHandler, n)
	for i := range n {
		peers := map[uint32]string{}
		for j := range n {
			if j != i {
				peers[uint32(j+1)] = addrs[j]
			}
		}
		cfg := testConfig(uint32(i+1), addrs[i], peers)
		if cfgFn != nil {
			cfgFn(&cfg)
		}
		handlers[i] = &testHandler{}
		servers[i] = startServer(t, cfg, handlers[i])
	}
	return servers, handlers
}

func waitLinksUp(t *testing.T, servers []*Server) {
	t.Helper()
	for _, s := range servers {
		waitFor(t, 5*time.Second, fmt.Sprintf("replica %d links up", s.cfg.ReplicaID), func() bool {
			return s.Stats().PeersConnected == int64(len(s.cfg.Peers))
		})
	}
}

func TestThreeReplicasExchangeMessagesInAllDirections(t *testing.T) {
	const perLink = 200
	servers, handlers := startCluster(t, 3, func(c *Config) {
		// Replica 3 does not offer S2: its links run uncompressed, the others compressed.
		if c.ReplicaID == 3 {
			c.Features = 0
		}
		c.Limits.CompressThreshold = 64
	})
	waitLinksUp(t, servers)

	value := bytes.Repeat([]byte("compressible value "), 50) // ~1 KiB, compresses well
	// One goroutine per directed link, all at once: Send is called concurrently.
	var senders sync.WaitGroup
	for _, from := range servers {
		for to := range from.cfg.Peers {
			senders.Add(1)
			go func() {
				defer senders.Done()
				for i := range perLink {
					from.Send(&codec.Message{
						Type: codec.TypeAccept, To: to, Slot: uint64(i),
						Ballot: codec.Ballot{Round: 7, Replica: from.cfg.ReplicaID},
						Values: [][]byte{value, {byte(i)}},
					})
				}
			}()
		}
	}
	senders.Wait()
	for i, h := range handlers {
		waitFor(t, 10*time.Second, fmt.Sprintf("replica %d receives all", i+1), func() bool {
			return len(h.received()) == perLink*2
		})
	}
	for i, h := range handlers {
		me := uint32(i + 1)
		next := map[uint32]uint64{} // per sender, messages arrive in order
		for _, m := range h.received() {
			if m.To != me || m.From == me || m.Ballot.Replica != m.From {
				t.Fatalf("replica %d got From %d To %d ballot %v", me, m.From, m.To, m.Ballot)
			}
			if m.Slot != next[m.From] {
				t.Fatalf("replica %d: from %d slot %d, want %d (lost or reordered)", me, m.From, m.Slot, next[m.From])
			}
			next[m.From]++
			if len(m.Values) != 2 || !bytes.Equal(m.Values[0], value) || m.Values[1][0] != byte(m.Slot) {
				t.Fatalf("replica %d: value from %d slot %d corrupted", me, m.From, m.Slot)
			}
		}
		if len(next) != 2 {
			t.Fatalf("replica %d heard from %d peers, want 2", me, len(next))
		}
	}
	for _, s := range servers {
		st := s.Stats()
		if st.Drops != 0 || st.HandshakeFailures != 0 || st.ProtocolErrors != 0 {
			t.Errorf("replica %d stats: %+v", s.cfg.ReplicaID, st)
		}
		if st.FramesIn < perLink*2 {
			t.Errorf("replica %d counted %d frames in", s.cfg.ReplicaID, st.FramesIn)
		}
	}
	// 1 and 2 both offer S2, so their link compresses: fewer bytes than the raw values.
	raw := uint64(perLink * 2 * len(value))
	if got := servers[0].Stats().BytesIn; got >= raw {
		t.Errorf("replica 1 read %d bytes for %d bytes of values: compression not in use", got, raw)
	}
}

func TestSendToUnknownOrDownPeerDrops(t *testing.T) {
	addrs := freeAddrs(t, 2)
	h := &testHandler{}
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: addrs[1]}), h) // 2 is not running
	s.Send(&codec.Message{Type: codec.TypeHeartbeat, To: 2})
	s.Send(&codec.Message{Type: codec.TypeHeartbeat, To: 9})
	if got := s.Stats().Drops; got != 2 {
		t.Fatalf("Drops = %d, want 2", got)
	}
}

func TestWrongSecretIsRefusedBothWays(t *testing.T) {
	servers, _ := startCluster(t, 2, func(c *Config) {
		if c.ReplicaID == 2 {
			c.Secret = []byte("another-secret-of-enough-length")
		}
	})
	for _, s := range servers {
		waitFor(t, 5*time.Second, "handshake failures on both", func() bool {
			return s.Stats().HandshakeFailures >= 2 // its inbound refusal + its outbound refused
		})
	}
	for _, s := range servers {
		if st := s.Stats(); st.PeersConnected != 0 || st.PeerConnections != 0 {
			t.Fatalf("replica %d authenticated a peer with the wrong secret: %+v", s.cfg.ReplicaID, st)
		}
	}
}

// A server that does not know the secret cannot fake a Welcome: the connector checks the
// server's MAC, not just that it was let in.
func TestConnectorRejectsServerWithoutSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	helloOK := make(chan bool, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := &rawConn{t: t, conn: conn}
		ch := codec.Challenge{Version: codec.HandshakeVersion, ClusterID: testClusterID, Nonce: [32]byte{9}}
		if r.write(codec.AppendChallenge(nil, &ch)) != nil {
			return
		}
		typ, frame, err := r.readFrame(5 * time.Second)
		var hello codec.Hello
		if err != nil || typ != codec.TypeHello || codec.DecodeHello(frame, &hello, nil) != nil {
			helloOK <- false
			return
		}
		// The impostor cannot check the MAC, and answers with a MAC under a guessed secret.
		transcript := codec.Transcript{ClusterID: testClusterID, Initiator: 1, Responder: 2,
			ServerNonce: ch.Nonce, ConnectorNonce: hello.Nonce, Features: hello.Features}
		helloOK <- codec.VerifyMAC(hello.MAC, codec.InitiatorMAC(testSecret, &transcript))
		transcript.Features = 0
		w := codec.Welcome{ReplicaID: 2, MAC: codec.ResponderMAC([]byte("guessed-secret-guessed"), &transcript)}
		_ = r.write(codec.AppendWelcome(nil, &w))
		time.Sleep(200 * time.Millisecond)
	}()
	addrs := freeAddrs(t, 1)
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: ln.Addr().String()}), &testHandler{})
	if !<-helloOK {
		t.Fatal("connector's Hello did not carry a valid MAC")
	}
	waitFor(t, 5*time.Second, "connector refuses the impostor", func() bool {
		return s.Stats().HandshakeFailures >= 1
	})
	if st := s.Stats(); st.PeersConnected != 0 {
		t.Fatalf("link up to an impostor: %+v", st)
	}
}

func TestWrongClusterIDIsRefused(t *testing.T) {
	servers, _ := startCluster(t, 2, func(c *Config) {
		if c.ReplicaID == 2 {
			c.ClusterID = testClusterID + 1
		}
	})
	waitFor(t, 5*time.Second, "handshake failures", func() bool {
		return servers[0].Stats().HandshakeFailures >= 1 && servers[1].Stats().HandshakeFailures >= 1
	})
	for _, s := range servers {
		if st := s.Stats(); st.PeersConnected != 0 || st.PeerConnections != 0 {
			t.Fatalf("replica %d linked across clusters: %+v", s.cfg.ReplicaID, st)
		}
	}
	// A client of the wrong cluster is refused too.
	r := dialRaw(t, servers[0].Addr())
	r.readChallenge()
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: 7}
	if err := r.write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	r.expectClosed(5 * time.Second)
}

func TestClientRequestsAreAnsweredInOrder(t *testing.T) {
	addrs := freeAddrs(t, 1)
	h := &testHandler{}
	s := startServer(t, testConfig(1, addrs[0], nil), h)
	s.SetLeader(1, addrs[0])
	c, welcome := dialClient(t, s.Addr(), 77)
	if welcome.ReplicaID != 1 || welcome.LeaderID != 1 || welcome.MAC != ([32]byte{}) {
		t.Fatalf("client Welcome = %+v", welcome)
	}
	const n = 1000
	c.sendRequests(77, 1, n, []byte("abc"))
	for seq := uint64(1); seq <= n; seq++ {
		resp, err := c.readResponse(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Seq != seq || resp.ClientID != 77 || resp.Index != 3 {
			t.Fatalf("response %+v, want seq %d", resp, seq)
		}
	}
	if h.offers.Load() >= n {
		t.Errorf("%d HandleRequests calls for %d pipelined requests: no batching per loop turn", h.offers.Load(), n)
	}
}

func TestBadClientIsDisconnectedOthersServed(t *testing.T) {
	addrs := freeAddrs(t, 1)
	h := &testHandler{}
	s := startServer(t, testConfig(1, addrs[0], nil), h)
	good, _ := dialClient(t, s.Addr(), 1)

	request := codec.AppendRequest(nil, &codec.Request{ClientID: 2, Seq: 1, Payload: []byte("payload")})
	truncated := append([]byte(nil), request[:len(request)-3]...)
	binary.LittleEndian.PutUint32(truncated, uint32(len(truncated)-codec.FrameHeaderSize)) // header agrees, body short
	huge := append([]byte(nil), request[:codec.FrameHeaderSize]...)
	binary.LittleEndian.PutUint32(huge, 1<<32-1) // a 4 GiB length field
	accept := codec.AppendMessage(nil, &codec.Message{Type: codec.TypeAccept, From: 2, To: 1})

	cases := []struct {
		name      string
		handshake bool // complete the client handshake first
		send      []byte
	}{
		{"garbage", true, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"truncated frame", true, truncated},
		{"4 GiB length header", true, huge},
		{"peer message from a client", true, accept},
		{"request before Hello", false, request},
		{"garbage before Hello", false, bytes.Repeat([]byte{0xff}, 64)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var bad *rawConn
			if tc.handshake {
				bad, _ = dialClient(t, s.Addr(), uint64(100+i))
			} else {
				bad = dialRaw(t, s.Addr())
				bad.readChallenge()
			}
			if err := bad.write(tc.send); err != nil {
				t.Fatal(err)
			}
			bad.expectClosed(5 * time.Second)
			// The good client is still served.
			good.sendRequests(1, uint64(i+1), 1, nil)
			resp, err := good.readResponse(5 * time.Second)
			if err != nil || resp.Seq != uint64(i+1) {
				t.Fatalf("good client after %s: %+v, %v", tc.name, resp, err)
			}
		})
	}
	st := s.Stats()
	if st.ProtocolErrors+st.HandshakeFailures != uint64(len(cases)) {
		t.Errorf("protocol errors %d + handshake failures %d, want %d in all", st.ProtocolErrors, st.HandshakeFailures, len(cases))
	}
}

func TestHandshakeTimeoutClosesIdleConnection(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.HandshakeTimeout = 100 * time.Millisecond
	s := startServer(t, cfg, &testHandler{})
	idle := dialRaw(t, s.Addr())
	idle.readChallenge()
	start := time.Now()
	idle.expectClosed(3 * time.Second)
	if waited := time.Since(start); waited < 80*time.Millisecond {
		t.Fatalf("closed after %v, before the handshake timeout", waited)
	}
	waitFor(t, time.Second, "failure counted", func() bool { return s.Stats().HandshakeFailures == 1 })
	// A completed handshake is not subject to the timeout.
	c, _ := dialClient(t, s.Addr(), 5)
	time.Sleep(300 * time.Millisecond)
	c.sendRequests(5, 1, 1, nil)
	if _, err := c.readResponse(5 * time.Second); err != nil {
		t.Fatalf("client closed after completing the handshake: %v", err)
	}
}

func TestBackpressurePausesReadingUntilResume(t *testing.T) {
	addrs := freeAddrs(t, 1)
	var accepting atomic.Bool
	var paused atomic.Pointer[ClientConn]
	h := &testHandler{}
	h.onRequests = func(c *ClientConn, reqs []codec.Request) int {
		if !accepting.Load() {
			paused.Store(c)
			return 0
		}
		respondOK(c, reqs)
		return len(reqs)
	}
	s := startServer(t, testConfig(1, addrs[0], nil), h)
	c, _ := dialClient(t, s.Addr(), 9)
	const n = 50
	c.sendRequests(9, 1, n, []byte("x"))
	waitFor(t, 5*time.Second, "first offer", func() bool { return h.offers.Load() >= 1 })
	offers := h.offers.Load()
	// More traffic arrives while paused: it must not be offered.
	c.sendRequests(9, n+1, n, []byte("y"))
	time.Sleep(200 * time.Millisecond)
	if got := h.offers.Load(); got != offers {
		t.Fatalf("HandleRequests called %d more times while paused", got-offers)
	}
	if _, err := c.readResponse(50 * time.Millisecond); err == nil {
		t.Fatal("got a response while nothing was taken")
	}
	accepting.Store(true)
	paused.Load().Resume()
	for seq := uint64(1); seq <= 2*n; seq++ {
		resp, err := c.readResponse(5 * time.Second)
		if err != nil || resp.Seq != seq {
			t.Fatalf("after Resume: %+v, %v (want seq %d)", resp, err, seq)
		}
	}
	if s.Stats().Pauses == 0 {
		t.Error("pause not counted")
	}
}

func TestPendingRequestsMaxBoundsUnansweredRequests(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.PendingRequestsMax = 4
	taken := make(chan codec.Request, 100)
	var conn atomic.Pointer[ClientConn]
	h := &testHandler{}
	h.onRequests = func(c *ClientConn, reqs []codec.Request) int {
		conn.Store(c)
		for _, r := range reqs {
			taken <- r
		}
		return len(reqs) // take all, answer later
	}
	s := startServer(t, cfg, h)
	c, _ := dialClient(t, s.Addr(), 3)
	c.sendRequests(3, 1, 10, nil)
	waitFor(t, 5*time.Second, "4 taken", func() bool { return h.offered.Load() == 4 })
	time.Sleep(100 * time.Millisecond)
	if got := h.offered.Load(); got != 4 {
		t.Fatalf("%d requests offered with PendingRequestsMax 4 and none answered", got)
	}
	// Answer from another goroutine, as a pipeline would; the rest flow.
	for answered := 0; answered < 10; answered++ {
		r := <-taken
		conn.Load().Respond([]codec.Response{{ClientID: r.ClientID, Seq: r.Seq}})
		resp, err := c.readResponse(5 * time.Second)
		if err != nil || resp.Seq != r.Seq {
			t.Fatalf("response %+v, %v, want seq %d", resp, err, r.Seq)
		}
	}
	if got := h.offered.Load(); got != 10 {
		t.Fatalf("offered %d, want 10", got)
	}
}

func TestRedirectReachesClient(t *testing.T) {
	addrs := freeAddrs(t, 1)
	h := &testHandler{}
	h.onRequests = func(c *ClientConn, reqs []codec.Request) int {
		for _, r := range reqs {
			c.Redirect(&codec.Redirect{ClientID: r.ClientID, Seq: r.Seq, LeaderID: 2, LeaderAddr: "127.0.0.1:7002"})
		}
		return len(reqs)
	}
	s := startServer(t, testConfig(1, addrs[0], nil), h)
	c, _ := dialClient(t, s.Addr(), 4)
	c.sendRequests(4, 1, 1, nil)
	frame := c.mustRead(codec.TypeRedirect)
	var r codec.Redirect
	if err := codec.DecodeRedirect(frame, &r, nil); err != nil || r.LeaderID != 2 || r.LeaderAddr != "127.0.0.1:7002" || r.Seq != 1 {
		t.Fatalf("redirect %+v, %v", r, err)
	}
}

func TestPeerClaimingAnotherSenderIsDisconnected(t *testing.T) {
	addrs := freeAddrs(t, 1)
	h := &testHandler{}
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1", 3: "127.0.0.1:1"}), h)
	p, w := dialPeer(t, s.Addr(), 2, testSecret)
	if w.ReplicaID != 1 {
		t.Fatalf("Welcome from replica %d", w.ReplicaID)
	}
	if err := p.write(codec.AppendMessage(nil, &codec.Message{Type: codec.TypeHeartbeat, From: 2, To: 1, Commit: 5, Ballot: codec.Ballot{Round: 1, Replica: 2}})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "heartbeat delivered", func() bool { return len(h.received()) == 1 })
	if err := p.write(codec.AppendMessage(nil, &codec.Message{Type: codec.TypeHeartbeat, From: 3, To: 1, Ballot: codec.Ballot{Round: 1, Replica: 3}})); err != nil {
		t.Fatal(err)
	}
	p.expectClosed(5 * time.Second)
	if got := h.received(); len(got) != 1 || got[0].From != 2 || got[0].Commit != 5 {
		t.Fatalf("delivered %+v", got)
	}
}

func TestReconnectAfterPeerRestart(t *testing.T) {
	addrs := freeAddrs(t, 2)
	peersOf := func(id uint32) map[uint32]string {
		if id == 1 {
			return map[uint32]string{2: addrs[1]}
		}
		return map[uint32]string{1: addrs[0]}
	}
	h1 := &testHandler{}
	s1 := startServer(t, testConfig(1, addrs[0], peersOf(1)), h1)
	s2, err := NewServer(testConfig(2, addrs[1], peersOf(2)), &testHandler{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	waitLinksUp(t, []*Server{s1, s2})
	stopServer(t, s2)
	waitFor(t, 5*time.Second, "link 1->2 down", func() bool { return s1.Stats().PeersConnected == 0 })

	h2 := &testHandler{}
	s2 = startServer(t, testConfig(2, addrs[1], peersOf(2)), h2)
	waitLinksUp(t, []*Server{s1, s2})
	s1.Send(&codec.Message{Type: codec.TypeHeartbeat, To: 2, Commit: 11, Ballot: codec.Ballot{Round: 1, Replica: 1}})
	waitFor(t, 5*time.Second, "delivery after restart", func() bool { return len(h2.received()) == 1 })
	if m := h2.received()[0]; m.From != 1 || m.Commit != 11 {
		t.Fatalf("got %+v", m)
	}
	if got := s1.Stats().Reconnects; got < 2 {
		t.Fatalf("Reconnects = %d, want >= 2", got)
	}
}

func TestClientConnectionsMaxIsEnforced(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.ClientConnectionsMax = 2
	h := &testHandler{}
	s := startServer(t, cfg, h)
	a, _ := dialClient(t, s.Addr(), 1)
	_, _ = dialClient(t, s.Addr(), 2)
	extra := dialRaw(t, s.Addr())
	extra.readChallenge()
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: testClusterID, ClientID: 3}
	if err := extra.write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := extra.readFrame(5 * time.Second); err == nil {
		t.Fatalf("client over ClientConnectionsMax got a %s frame", typ)
	}
	if st := s.Stats(); st.ClientsRefused != 1 || st.ConnectionsRefused != 1 {
		t.Fatalf("ClientsRefused = %d, ConnectionsRefused = %d, want 1, 1", st.ClientsRefused, st.ConnectionsRefused)
	}
	// Closing one makes room again.
	a.conn.Close()
	waitFor(t, 5*time.Second, "slot freed", func() bool { return s.Stats().ClientConnections == 1 })
	waitFor(t, 5*time.Second, "ClientClosed called", func() bool { return h.closed.Load() == 1 })
	_, _ = dialClient(t, s.Addr(), 3)
}

func TestStartFailsWhenPortInUse(t *testing.T) {
	addrs := freeAddrs(t, 1)
	first := startServer(t, testConfig(1, addrs[0], nil), &testHandler{})
	second, err := NewServer(testConfig(2, first.Addr(), nil), &testHandler{})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start()
	if !errors.Is(err, ErrListen) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a used port: %v", err)
	}
	if err := second.Stop(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
}

func TestStopClosesClientsAndReleasesGoroutines(t *testing.T) {
	servers, _ := startCluster(t, 2, nil)
	waitLinksUp(t, servers)
	h := servers[0].handler.(*testHandler)
	c, _ := dialClient(t, servers[0].Addr(), 1)
	stopServer(t, servers[0])
	c.expectClosed(5 * time.Second)
	if h.closed.Load() != 1 {
		t.Fatalf("ClientClosed called %d times", h.closed.Load())
	}
	if err := servers[0].Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// goleak in TestMain checks that every goroutine is gone once all servers stop.
}

func TestConfigValidateNamesTheField(t *testing.T) {
	base := testConfig(1, "127.0.0.1:0", map[uint32]string{2: "127.0.0.1:7002"})
	cases := []struct {
		field string
		edit  func(*Config)
	}{
		{"ListenAddr", func(c *Config) { c.ListenAddr = "nonsense" }},
		{"ReplicaID", func(c *Config) { c.ReplicaID = 0 }},
		{"Secret", func(c *Config) { c.Secret = []byte("short") }},
		{"Peers", func(c *Config) { c.Peers = map[uint32]string{1: "127.0.0.1:1"} }},
		{"Peers", func(c *Config) { c.Peers = map[uint32]string{2: "no-port"} }},
		{"ClientConnectionsMax", func(c *Config) { c.ClientConnectionsMax = 0 }},
		{"HandshakesMax", func(c *Config) { c.HandshakesMax = 0 }},
		{"PendingRequestsMax", func(c *Config) { c.PendingRequestsMax = -1 }},
		{"OutboundBytesMax", func(c *Config) { c.OutboundBytesMax = 0 }},
		{"ClientOutboundBytesMax", func(c *Config) { c.ClientOutboundBytesMax = 0 }},
		{"ClientOutboundBytesMax", func(c *Config) { c.ClientOutboundBytesMax = c.Limits.PayloadBytesMax }},
		{"InboundBytesMax", func(c *Config) { c.InboundBytesMax = 0 }},
		{"InboundBytesMax", func(c *Config) { c.InboundBytesMax = c.Limits.PayloadBytesMax }},
		{"BufferedBytesMax", func(c *Config) { c.BufferedBytesMax = 0 }},
		{"BufferedBytesMax", func(c *Config) { c.BufferedBytesMax = c.ClientOutboundBytesMax }},
		{"FrameTimeout", func(c *Config) { c.FrameTimeout = 0 }},
		{"IdleTimeout", func(c *Config) { c.IdleTimeout = -time.Second }},
		{"WarnInterval", func(c *Config) { c.WarnInterval = 0 }},
		{"EventLoops", func(c *Config) { c.EventLoops = -1 }},
		{"ReconnectBackoffMin", func(c *Config) { c.ReconnectBackoffMin = 0 }},
		{"ReconnectBackoffMax", func(c *Config) { c.ReconnectBackoffMax = time.Microsecond }},
		{"HandshakeTimeout", func(c *Config) { c.HandshakeTimeout = 0 }},
		{"Features", func(c *Config) { c.Features = 1 << 7 }},
		{"Limits", func(c *Config) { c.Limits.FrameBytesMax = 0 }},
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("base config invalid: %v", err)
	}
	for _, tc := range cases {
		cfg := base
		tc.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%s: got %v", tc.field, err)
		}
		if _, err := NewServer(cfg, &testHandler{}); err == nil {
			t.Errorf("%s: NewServer accepted an invalid config", tc.field)
		}
	}
	if _, err := NewServer(base, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil handler: %v", err)
	}
}

func TestPausedClientThatKeepsSendingIsDisconnected(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.InboundBytesMax = 64 << 10
	cfg.Limits.PayloadBytesMax = 16 << 10
	h := &testHandler{}
	h.onRequests = func(*ClientConn, []codec.Request) int { return 0 } // never takes anything
	s := startServer(t, cfg, h)
	c, _ := dialClient(t, s.Addr(), 1)
	payload := make([]byte, 4<<10)
	go func() {
		// Ignores backpressure: 1 MiB more than the server may buffer for it.
		for seq := uint64(1); seq <= 256; seq++ {
			if c.write(codec.AppendRequest(nil, &codec.Request{ClientID: 1, Seq: seq, Payload: payload})) != nil {
				return
			}
		}
	}()
	c.expectClosed(5 * time.Second)
	if got := s.Stats().ProtocolErrors; got != 1 {
		t.Fatalf("ProtocolErrors = %d", got)
	}
}

func TestClientNotReadingResponsesIsDisconnected(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.Limits.PayloadBytesMax = 16 << 10
	cfg.ClientOutboundBytesMax = 256 << 10
	const perRequest = 2000 // responses per request: a test-only way to outrun the socket buffers
	h := &testHandler{}
	h.onRequests = func(c *ClientConn, reqs []codec.Request) int {
		rs := make([]codec.Response, perRequest)
		for i := range rs {
			rs[i] = codec.Response{ClientID: 1, Seq: reqs[0].Seq}
		}
		for range reqs {
			c.Respond(rs)
		}
		return len(reqs)
	}
	s := startServer(t, cfg, h)
	c, _ := dialClient(t, s.Addr(), 1)
	// 2000 requests x 2000 responses x 37 bytes is ~150 MB: far past the kernel's buffers.
	for seq := uint64(1); seq <= 2000 && s.Stats().SlowReaders == 0; seq += 100 {
		c.sendRequests(1, seq, 100, nil)
		time.Sleep(time.Millisecond)
	}
	waitFor(t, 10*time.Second, "non-reading client closed", func() bool { return s.Stats().SlowReaders == 1 })
	waitFor(t, 5*time.Second, "ClientClosed", func() bool { return h.closed.Load() == 1 })
}

func TestWrongProtocolVersionIsRefused(t *testing.T) {
	addrs := freeAddrs(t, 1)
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1"}), &testHandler{})
	for _, role := range []codec.Role{codec.RoleClient, codec.RolePeer} {
		r := dialRaw(t, s.Addr())
		r.readChallenge()
		hello := codec.Hello{Version: codec.HandshakeVersion + 1, Role: role, ClusterID: testClusterID, ClientID: 5}
		if role == codec.RolePeer {
			hello.ReplicaID, hello.ClientID = 2, 0
			transcript := codec.Transcript{ClusterID: testClusterID, Initiator: 2, Responder: 1, ServerNonce: r.challenge.Nonce}
			hello.MAC = codec.InitiatorMAC(testSecret, &transcript)
		}
		if err := r.write(codec.AppendHello(nil, &hello)); err != nil {
			t.Fatal(err)
		}
		r.expectClosed(5 * time.Second)
	}
	if got := s.Stats().HandshakeFailures; got != 2 {
		t.Fatalf("HandshakeFailures = %d, want 2", got)
	}
}

func TestRandomJunkFromManyClientsNeverStopsTheServer(t *testing.T) {
	addrs := freeAddrs(t, 1)
	s := startServer(t, testConfig(1, addrs[0], nil), &testHandler{})
	good, _ := dialClient(t, s.Addr(), 1)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		var junk rawConn
		if i%2 == 0 {
			c, _ := dialClient(t, s.Addr(), uint64(10+i))
			junk = *c
		} else {
			junk = *dialRaw(t, s.Addr())
		}
		b := make([]byte, 1+rng.IntN(300))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%4 == 0 && len(b) > 8 {
			b[4], b[5] = codec.Version, byte(codec.TypeRequest) // a plausible header, junk body
		}
		_ = junk.write(b)
		junk.conn.Close()
		good.sendRequests(1, uint64(i+1), 1, nil)
		if resp, err := good.readResponse(5 * time.Second); err != nil || resp.Seq != uint64(i+1) {
			t.Fatalf("after junk %d: %+v, %v", i, resp, err)
		}
	}
	waitFor(t, 5*time.Second, "junk connections closed", func() bool { return s.Stats().Connections == 1 })
}

func TestGoroutinesCarryPprofLabels(t *testing.T) {
	servers, _ := startCluster(t, 2, nil)
	waitLinksUp(t, servers)
	var profile strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&profile, 1); err != nil {
		t.Fatal(err)
	}
	for _, label := range []string{`"netio":"event-loop"`, `"netio":"peer-link"`} {
		if !strings.Contains(profile.String(), label) {
			t.Errorf("no goroutine labelled %s", label)
		}
	}
}

func TestSendDropsFrameOverFrameBytesMaxAndKeepsTheLink(t *testing.T) {
	servers, handlers := startCluster(t, 2, func(c *Config) {
		c.Limits.FrameBytesMax = 64 << 10
		c.Limits.ValueBytesMax = 32 << 10
		c.Limits.PayloadBytesMax = 16 << 10
	})
	waitLinksUp(t, servers)
	ballot := codec.Ballot{Round: 1, Replica: 1}
	servers[0].Send(&codec.Message{Type: codec.TypeAccept, To: 2, Ballot: ballot, Values: [][]byte{make([]byte, 30<<10), make([]byte, 30<<10), make([]byte, 30<<10)}})
	servers[0].Send(&codec.Message{Type: codec.TypeHeartbeat, To: 2, Ballot: ballot, Commit: 3})
	waitFor(t, 5*time.Second, "heartbeat delivered", func() bool { return len(handlers[1].received()) == 1 })
	if m := handlers[1].received()[0]; m.Type != codec.TypeHeartbeat || m.Commit != 3 {
		t.Fatalf("delivered %+v", m)
	}
	if st := servers[0].Stats(); st.Drops != 1 || st.PeersConnected != 1 {
		t.Fatalf("sender stats %+v, want 1 drop and the link up", st)
	}
}

func TestCompressedFrameWithoutNegotiatedS2IsRefused(t *testing.T) {
	addrs := freeAddrs(t, 1)
	h := &testHandler{}
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1"}), h)
	p, w := dialPeer(t, s.Addr(), 2, testSecret) // offers no features
	if w.Features != 0 {
		t.Fatalf("agreed features %#x without offering any", w.Features)
	}
	m := &codec.Message{Type: codec.TypeAccept, From: 2, To: 1, Ballot: codec.Ballot{Round: 1, Replica: 2},
		Values: [][]byte{bytes.Repeat([]byte("z"), 8192)}}
	frame := codec.NewEncoder(true, 64).AppendMessage(nil, m)
	if plain := codec.AppendMessage(nil, m); len(frame) >= len(plain) {
		t.Fatal("test frame did not compress")
	}
	if err := p.write(frame); err != nil {
		t.Fatal(err)
	}
	p.expectClosed(5 * time.Second)
	if len(h.received()) != 0 || s.Stats().ProtocolErrors != 1 {
		t.Fatalf("compressed frame accepted on an uncompressed link: %d delivered, %+v", len(h.received()), s.Stats())
	}
}
