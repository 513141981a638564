package netio

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// smallClientLimits makes the client bounds small enough for a test to reach: 16 KiB payloads.
func smallClientLimits(c *Config) {
	c.Limits.PayloadBytesMax = 16 << 10
	c.InboundBytesMax = 64 << 10
	c.ClientOutboundBytesMax = 256 << 10
}

// requestHeader is the first bytes of a Request frame declaring a payload of payloadBytes:
// header, client id, seq, seq floor, payload length.
func requestHeader(clientID, seq uint64, payloadBytes int) []byte {
	frame := codec.AppendRequest(nil, &codec.Request{ClientID: clientID, Seq: seq, SeqFloor: seq})
	binary.LittleEndian.PutUint32(frame[0:], uint32(len(frame)-codec.FrameHeaderSize+payloadBytes))
	binary.LittleEndian.PutUint32(frame[len(frame)-4:], uint32(payloadBytes))
	return frame
}

func TestRequestHeaderHelperMatchesTheEncoder(t *testing.T) {
	payload := bytes.Repeat([]byte{7}, 100)
	want := codec.AppendRequest(nil, &codec.Request{ClientID: 5, Seq: 9, SeqFloor: 9, Payload: payload})
	if got := append(requestHeader(5, 9, 100), payload...); !bytes.Equal(got, want) {
		t.Fatalf("requestHeader:\n got %x\nwant %x", got, want)
	}
	// netio reads the ids of an oversized Request at fixed offsets: they must be where the
	// encoder puts them.
	if binary.LittleEndian.Uint64(want[requestClientIDOffset:]) != 5 || binary.LittleEndian.Uint64(want[requestSeqOffset:]) != 9 {
		t.Fatal("requestClientIDOffset/requestSeqOffset do not match codec's Request layout")
	}
	if requestFrameOverhead+100 != len(want) {
		t.Fatalf("requestFrameOverhead %d + 100 != %d", requestFrameOverhead, len(want))
	}
}

// Issue 15, defect 8: a payload over PayloadBytesMax is answered TooLarge; the connection stays
// open and the next request is served.
func TestOversizedRequestIsAnsweredTooLargeAndTheConnectionStays(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	smallClientLimits(&cfg)
	h := &testHandler{}
	s := startServer(t, cfg, h)
	c, _ := dialClient(t, s.Addr(), 1)

	// Whole, in one write.
	c.sendRequests(1, 1, 1, make([]byte, cfg.Limits.PayloadBytesMax+1))
	c.sendRequests(1, 2, 1, []byte("ok"))
	// In pieces: the header, then the body over several turns, then a good request.
	const oversized = 200 << 10
	if err := c.write(requestHeader(1, 3, oversized)); err != nil {
		t.Fatal(err)
	}
	for sent := 0; sent < oversized; sent += 50 << 10 {
		time.Sleep(5 * time.Millisecond)
		if err := c.write(make([]byte, 50<<10)); err != nil {
			t.Fatal(err)
		}
	}
	c.sendRequests(1, 4, 1, []byte("ok"))

	want := []struct {
		seq    uint64
		status codec.Status
	}{{1, codec.StatusTooLarge}, {2, codec.StatusOK}, {3, codec.StatusTooLarge}, {4, codec.StatusOK}}
	for _, w := range want {
		resp, err := c.readResponse(5 * time.Second)
		if err != nil || resp.Seq != w.seq || resp.Status != w.status || resp.ClientID != 1 {
			t.Fatalf("want seq %d %v, got %+v, %v", w.seq, w.status, resp, err)
		}
	}
	st := s.Stats()
	if st.RequestsTooLarge != 2 || st.ProtocolErrors != 0 || st.ClientConnections != 1 {
		t.Fatalf("stats %+v, want 2 TooLarge, no protocol error, the client still connected", st)
	}
	if got := h.offered.Load(); got != 2 {
		t.Fatalf("the Handler was offered %d requests, want the 2 legal ones", got)
	}
}

// A frame over FrameBytesMax is not worth discarding byte by byte: the connection is closed.
func TestRequestOverFrameBytesMaxCloses(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	smallClientLimits(&cfg)
	s := startServer(t, cfg, &testHandler{})
	c, _ := dialClient(t, s.Addr(), 1)
	if err := c.write(requestHeader(1, 1, cfg.Limits.FrameBytesMax)); err != nil {
		t.Fatal(err)
	}
	c.expectClosed(5 * time.Second)
	if st := s.Stats(); st.ProtocolErrors != 1 || st.RequestsTooLarge != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Issue 15, defect 5 (slowloris): a frame whose body trickles in is cut off after FrameTimeout;
// a client that sends whole frames slowly is not.
func TestTricklingFrameIsCutOffAfterFrameTimeout(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	smallClientLimits(&cfg)
	cfg.FrameTimeout = 300 * time.Millisecond
	s := startServer(t, cfg, &testHandler{})
	slow, _ := dialClient(t, s.Addr(), 1)
	steady, _ := dialClient(t, s.Addr(), 2)

	if err := slow.write(requestHeader(1, 1, 8<<10)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		for slow.write([]byte{0}) == nil && time.Since(start) < 5*time.Second {
			time.Sleep(20 * time.Millisecond)
		}
		closed <- time.Since(start)
	}()
	// Meanwhile a whole request every 100 ms, for three FrameTimeouts.
	for seq := uint64(1); seq <= 9; seq++ {
		steady.sendRequests(2, seq, 1, []byte("x"))
		if resp, err := steady.readResponse(5 * time.Second); err != nil || resp.Seq != seq {
			t.Fatalf("steady client, seq %d: %+v, %v", seq, resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	slow.expectClosed(5 * time.Second)
	if took := <-closed; took > 2*time.Second {
		t.Fatalf("trickling client cut off after %v, FrameTimeout %v", took, cfg.FrameTimeout)
	}
	if st := s.Stats(); st.FrameTimeouts != 1 || st.ClientConnections != 1 {
		t.Fatalf("stats %+v, want one FrameTimeout and the steady client still connected", st)
	}
}

// Issue 15, defect 5: an idle client is closed after IdleTimeout; one with a request pending
// (the Handler has not answered yet) is not idle.
func TestIdleClientIsClosedButNotOneWaitingForAnAnswer(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.IdleTimeout = 300 * time.Millisecond
	var mu sync.Mutex
	var held *ClientConn
	h := &testHandler{onRequests: func(c *ClientConn, reqs []codec.Request) int {
		mu.Lock()
		defer mu.Unlock()
		held = c // taken, answered only at the end of the test
		return len(reqs)
	}}
	s := startServer(t, cfg, h)
	idle, _ := dialClient(t, s.Addr(), 1)
	waiting, _ := dialClient(t, s.Addr(), 2)
	waiting.sendRequests(2, 1, 1, nil)
	idle.expectClosed(3 * time.Second)
	time.Sleep(3 * cfg.IdleTimeout)
	if st := s.Stats(); st.IdleTimeouts != 1 || st.ClientConnections != 1 {
		t.Fatalf("stats %+v, want one idle closure and the waiting client connected", st)
	}
	mu.Lock()
	held.Respond([]codec.Response{{ClientID: 2, Seq: 1}})
	mu.Unlock()
	if resp, err := waiting.readResponse(5 * time.Second); err != nil || resp.Seq != 1 {
		t.Fatalf("answer after a long wait: %+v, %v", resp, err)
	}
}

// Issue 15, defect 5: the bytes all clients hold in gnet are bounded. Clients each holding most
// of a frame push the total past BufferedBytesMax: the ones that grow past their share are cut,
// and a client with small requests keeps being served.
func TestBufferedBytesMaxCutsTheLargestHolders(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.Limits.PayloadBytesMax = 64 << 10
	cfg.InboundBytesMax = 128 << 10
	cfg.ClientOutboundBytesMax = 256 << 10
	cfg.BufferedBytesMax = 512 << 10
	s := startServer(t, cfg, &testHandler{})
	small, _ := dialClient(t, s.Addr(), 100)

	const holders = 16 // 16 x 60 KiB = 960 KiB > 512 KiB
	conns := make([]*rawConn, holders)
	for i := range conns {
		conns[i], _ = dialClient(t, s.Addr(), uint64(i+1))
		_ = conns[i].write(requestHeader(uint64(i+1), 1, 64<<10))
	}
	for range 60 {
		for _, c := range conns {
			_ = c.write(make([]byte, 1<<10))
		}
	}
	waitFor(t, 5*time.Second, "cutoffs", func() bool { return s.Stats().BufferedCutoffs > 0 })
	small.sendRequests(100, 1, 1, []byte("x"))
	if resp, err := small.readResponse(5 * time.Second); err != nil || resp.Seq != 1 {
		t.Fatalf("small client: %+v, %v", resp, err)
	}
	// The total may pass the bound by what one turn of one connection adds, never by more.
	if st := s.Stats(); st.BufferedBytes > int64(cfg.BufferedBytesMax+readBufferBytes) {
		t.Fatalf("BufferedBytes %d over BufferedBytesMax %d", st.BufferedBytes, cfg.BufferedBytesMax)
	}
	for _, c := range conns {
		c.conn.Close()
	}
	small.conn.Close()
	waitFor(t, 5*time.Second, "every byte released", func() bool {
		st := s.Stats()
		return st.Connections == 0 && st.BufferedBytes == 0
	})
}

// Issue 15, defect 6: connections that never say Hello cannot crowd out a peer: past
// HandshakesMax the oldest silent one is closed once it has had its grace, and the peer's
// handshake goes through.
func TestSilentConnectionsDoNotCrowdOutAPeer(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1"})
	cfg.HandshakesMax = 8
	cfg.HandshakeTimeout = 800 * time.Millisecond // grace 100 ms
	s := startServer(t, cfg, &testHandler{})
	for range 8 {
		dialRaw(t, s.Addr())
	}
	waitFor(t, 5*time.Second, "the pool full", func() bool { return s.Stats().Connections == 8 })
	young := dialRaw(t, s.Addr()) // every silent one is within its grace: refused
	young.expectClosed(5 * time.Second)
	time.Sleep(2 * s.handshakeGrace())
	for range 42 { // the first 8 displace the old ones; the rest are refused
		dialRaw(t, s.Addr())
	}
	time.Sleep(2 * s.handshakeGrace())
	dialPeer(t, s.Addr(), 2, testSecret)
	st := s.Stats()
	if st.PeerConnections != 1 || st.HandshakesRefused < 1 || st.HandshakesEvicted < 8 {
		t.Fatalf("stats %+v", st)
	}
}

// A burst of clients larger than HandshakesMax, all retrying at once, all get through: the
// grace keeps the burst from evicting itself in a loop.
func TestBurstOverHandshakesMaxCompletes(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], nil)
	cfg.HandshakesMax = 4
	s := startServer(t, cfg, &testHandler{})
	const burst = 64
	conns := make([]net.Conn, burst) // held: a dropped net.Conn is closed by its finalizer
	var wg sync.WaitGroup
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
				if conns[i] = clientHandshake(s.Addr(), uint64(i+1)); conns[i] != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
			t.Errorf("client %d never got through", i+1)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if st := s.Stats(); st.ClientConnections != burst {
		t.Fatalf("stats %+v, want %d clients", st, burst)
	}
}

// clientHandshake dials and completes a client handshake; nil if the server closed it first.
func clientHandshake(addr string, clientID uint64) net.Conn {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil
	}
	r := &rawConn{conn: conn}
	if typ, _, err := r.readFrame(2 * time.Second); err != nil || typ != codec.TypeChallenge {
		conn.Close()
		return nil
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: testClusterID, ClientID: clientID}
	if r.write(codec.AppendHello(nil, &hello)) != nil {
		conn.Close()
		return nil
	}
	if typ, _, err := r.readFrame(2 * time.Second); err != nil || typ != codec.TypeWelcome {
		conn.Close()
		return nil
	}
	return conn
}

// Issue 15, defect 6: clients at ClientConnectionsMax do not keep a peer out.
func TestClientsAtTheirLimitDoNotLockAPeerOut(t *testing.T) {
	addrs := freeAddrs(t, 1)
	cfg := testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1"})
	cfg.ClientConnectionsMax = 4
	s := startServer(t, cfg, &testHandler{})
	for i := range 4 {
		dialClient(t, s.Addr(), uint64(i+1))
	}
	dialPeer(t, s.Addr(), 2, testSecret)
	if st := s.Stats(); st.ClientConnections != 4 || st.PeerConnections != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A peer that connects again replaces its older inbound connection (dead, or half-open after
// a crash), so peers need no connection budget.
func TestPeerConnectingAgainReplacesItsOlderConnection(t *testing.T) {
	addrs := freeAddrs(t, 1)
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1"}), &testHandler{})
	old, _ := dialPeer(t, s.Addr(), 2, testSecret)
	dialPeer(t, s.Addr(), 2, testSecret)
	old.expectClosed(5 * time.Second)
	waitFor(t, 5*time.Second, "one peer connection", func() bool { return s.Stats().PeerConnections == 1 })
	if got := s.Stats().PeersReplaced; got != 1 {
		t.Fatalf("PeersReplaced = %d", got)
	}
}

// The version-1 peer proof could be relayed: a peer Hello of version 1 is refused, whatever
// its MAC; a client Hello of version 1 (no proof) is still welcome.
func TestPeerHelloOfVersionOneIsRefused(t *testing.T) {
	addrs := freeAddrs(t, 1)
	s := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: "127.0.0.1:1"}), &testHandler{})
	r := dialRaw(t, s.Addr())
	r.readChallenge()
	if r.challenge.Version != codec.HandshakeVersion {
		t.Fatalf("Challenge version %d, want %d", r.challenge.Version, codec.HandshakeVersion)
	}
	hello := codec.Hello{Version: 1, Role: codec.RolePeer, ClusterID: testClusterID, ReplicaID: 2}
	transcript := codec.Transcript{ClusterID: testClusterID, Initiator: 2, Responder: 1, ServerNonce: r.challenge.Nonce}
	hello.MAC = codec.InitiatorMAC(testSecret, &transcript)
	if err := r.write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	r.expectClosed(5 * time.Second)
	dialClient(t, s.Addr(), 1) // sends version 1
}

// lineCounter is a slog handler that counts records by message.
type lineCounter struct {
	mu    sync.Mutex
	lines map[string]int
}

// countingHandler is a slog.Handler feeding a lineCounter.
type countingHandler struct{ c *lineCounter }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h countingHandler) WithGroup(string) slog.Handler            { return h }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.c.mu.Lock()
	h.c.lines[r.Message]++
	h.c.mu.Unlock()
	return nil
}

func (l *lineCounter) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for msg, c := range l.lines {
		if strings.HasPrefix(msg, prefix) {
			n += c
		}
	}
	return n
}

// Issue 15, defect 8: refusal warnings are rate-limited and counted.
func TestRefusalWarningsAreRateLimited(t *testing.T) {
	addrs := freeAddrs(t, 1)
	counter := &lineCounter{lines: map[string]int{}}
	cfg := testConfig(1, addrs[0], nil)
	cfg.Logger = slog.New(countingHandler{counter})
	cfg.ClientConnectionsMax = 1
	cfg.WarnInterval = time.Hour
	s := startServer(t, cfg, &testHandler{})
	dialClient(t, s.Addr(), 1)
	for i := range 20 {
		r := dialRaw(t, s.Addr())
		r.readChallenge()
		hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: testClusterID, ClientID: uint64(i + 2)}
		_ = r.write(codec.AppendHello(nil, &hello))
		r.expectClosed(5 * time.Second)
	}
	waitFor(t, 5*time.Second, "refusals counted", func() bool { return s.Stats().ClientsRefused == 20 })
	if got := counter.count("netio: refusing client"); got != 1 {
		t.Fatalf("%d refusal lines for 20 refusals, want 1", got)
	}
	if got := s.Stats().WarningsSuppressed; got != 19 {
		t.Fatalf("WarningsSuppressed = %d, want 19", got)
	}
}

// Issue 15, defect 7: requests were not tied to their connection's client. Two connections
// under one client id answered each other's requests, and a request naming another client id
// acted on that client's exactly-once session. A second live connection under a client id is
// refused (until the first closes), and a request naming another client closes its connection.
func TestClientIDIsBoundToOneConnection(t *testing.T) {
	addrs := freeAddrs(t, 1)
	h := &testHandler{}
	s := startServer(t, testConfig(1, addrs[0], nil), h)
	first, _ := dialClient(t, s.Addr(), 77)

	second := dialRaw(t, s.Addr())
	second.readChallenge()
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: testClusterID, ClientID: 77}
	if err := second.write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	second.expectClosed(5 * time.Second)

	spoofer, _ := dialClient(t, s.Addr(), 78)
	spoofer.sendRequests(77, 1, 1, []byte("in client 77's name"))
	spoofer.expectClosed(5 * time.Second)
	if got := h.offered.Load(); got != 0 {
		t.Fatalf("the handler was offered %d requests, want none (the spoofed one is refused)", got)
	}

	// The first connection is unaffected and still served; once it closes, the id is free.
	first.sendRequests(77, 1, 1, []byte("mine"))
	if resp, err := first.readResponse(5 * time.Second); err != nil || resp.ClientID != 77 || resp.Seq != 1 {
		t.Fatalf("first connection: %+v, %v", resp, err)
	}
	first.conn.Close()
	waitFor(t, 5*time.Second, "client 77 gone", func() bool { return s.Stats().ClientConnections == 0 })
	again, _ := dialClient(t, s.Addr(), 77)
	again.sendRequests(77, 2, 1, []byte("reconnected"))
	if _, err := again.readResponse(5 * time.Second); err != nil {
		t.Fatalf("reconnected client 77: %v", err)
	}
}
