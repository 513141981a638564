package netio

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mpaxos/mpaxos/codec"
)

func TestMain(m *testing.M) {
	// gnet's package init starts an ants worker pool (purge/ticktock goroutines) that lives for
	// the whole process; everything started after this point must be gone at the end.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

const testClusterID = 42

var testSecret = []byte("0123456789abcdef-test-secret")

// testLogger is quiet unless NETIO_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("NETIO_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// freeAddrs reserves n loopback addresses by binding port 0 and releasing them. Another
// process could grab one in between; on this test machine that has not been seen.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	return addrs
}

func testConfig(id uint32, listen string, peers map[uint32]string) Config {
	cfg := DefaultConfig()
	cfg.ListenAddr = listen
	cfg.ReplicaID = id
	cfg.ClusterID = testClusterID
	cfg.Secret = testSecret
	cfg.Peers = peers
	cfg.EventLoops = 1
	cfg.ReconnectBackoffMin = 5 * time.Millisecond
	cfg.ReconnectBackoffMax = 50 * time.Millisecond
	cfg.HandshakeTimeout = time.Second
	cfg.Logger = testLogger()
	return cfg
}

// startServer starts a server and stops it when the test ends.
func startServer(t testing.TB, cfg Config, h Handler) *Server {
	t.Helper()
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopServer(t, s) })
	return s
}

func stopServer(t testing.TB, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testHandler records peer messages (deep copies) and answers requests through onRequests
// (default: respond OK to all at once, Slot = Seq).
type testHandler struct {
	mu         sync.Mutex
	messages   []codec.Message
	onRequests func(c *ClientConn, reqs []codec.Request) int
	offers     atomic.Int64 // HandleRequests calls
	offered    atomic.Int64 // requests offered in total
	closed     atomic.Int64
}

func (h *testHandler) HandlePeer(m *codec.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.messages = append(h.messages, copyMessage(m))
}

func (h *testHandler) HandleRequests(c *ClientConn, reqs []codec.Request) int {
	h.offers.Add(1)
	h.offered.Add(int64(len(reqs)))
	if h.onRequests != nil {
		return h.onRequests(c, reqs)
	}
	respondOK(c, reqs)
	return len(reqs)
}

func (h *testHandler) ClientClosed(*ClientConn) { h.closed.Add(1) }

func (h *testHandler) received() []codec.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]codec.Message(nil), h.messages...)
}

func respondOK(c *ClientConn, reqs []codec.Request) {
	rs := make([]codec.Response, len(reqs))
	for i, r := range reqs {
		rs[i] = codec.Response{ClientID: r.ClientID, Seq: r.Seq, Status: codec.StatusOK, Slot: r.Seq, Index: uint32(len(r.Payload))}
	}
	c.Respond(rs)
}

func copyMessage(m *codec.Message) codec.Message {
	out := *m
	out.Values = nil
	for _, v := range m.Values {
		out.Values = append(out.Values, append([]byte(nil), v...))
	}
	out.Entries = nil
	for _, e := range m.Entries {
		e.Value = append([]byte(nil), e.Value...)
		out.Entries = append(out.Entries, e)
	}
	out.Data = append([]byte(nil), m.Data...)
	return out
}

// rawConn is the test's own client: raw TCP speaking Challenge/Hello/Welcome/Request/Response
// (and, for peer tests, Hello as a peer). It is deliberately independent of netio's code.
type rawConn struct {
	t         testing.TB
	conn      net.Conn
	buf       []byte
	challenge codec.Challenge
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn}
}

// readFrame returns the next whole frame, or an error (io.EOF when the server closed).
func (r *rawConn) readFrame(timeout time.Duration) (codec.MsgType, []byte, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		typ, n, err := codec.PeekFrame(r.buf, nil)
		if err == nil {
			frame := append([]byte(nil), r.buf[:n]...)
			r.buf = r.buf[n:]
			return typ, frame, nil
		}
		if !errors.Is(err, codec.ErrIncomplete) {
			return 0, nil, err
		}
		chunk := make([]byte, 64<<10)
		m, err := r.conn.Read(chunk)
		r.buf = append(r.buf, chunk[:m]...)
		if err != nil && m == 0 {
			return 0, nil, err
		}
	}
}

func (r *rawConn) mustRead(want codec.MsgType) []byte {
	r.t.Helper()
	typ, frame, err := r.readFrame(5 * time.Second)
	if err != nil {
		r.t.Fatalf("reading %s: %v", want, err)
	}
	if typ != want {
		r.t.Fatalf("got a %s frame, want %s", typ, want)
	}
	return frame
}

func (r *rawConn) write(b []byte) error {
	_ = r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := r.conn.Write(b)
	return err
}

func (r *rawConn) readChallenge() {
	r.t.Helper()
	if err := codec.DecodeChallenge(r.mustRead(codec.TypeChallenge), &r.challenge, nil); err != nil {
		r.t.Fatal(err)
	}
}

// dialClient connects and completes the client handshake.
func dialClient(t testing.TB, addr string, clientID uint64) (*rawConn, codec.Welcome) {
	t.Helper()
	r := dialRaw(t, addr)
	r.readChallenge()
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: testClusterID, ClientID: clientID}
	if err := r.write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	var w codec.Welcome
	if err := codec.DecodeWelcome(r.mustRead(codec.TypeWelcome), &w, nil); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// dialPeer connects as peer id with secret to replica 1 and completes the peer handshake.
func dialPeer(t testing.TB, addr string, id uint32, secret []byte) (*rawConn, codec.Welcome) {
	t.Helper()
	r := dialRaw(t, addr)
	r.readChallenge()
	hello := codec.Hello{Version: codec.HandshakeVersion, Role: codec.RolePeer, ClusterID: testClusterID, ReplicaID: id, Nonce: [32]byte{1, 2, 3}}
	transcript := codec.Transcript{ClusterID: testClusterID, Initiator: id, Responder: 1,
		ServerNonce: r.challenge.Nonce, ConnectorNonce: hello.Nonce}
	hello.MAC = codec.InitiatorMAC(secret, &transcript)
	if err := r.write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	var w codec.Welcome
	if err := codec.DecodeWelcome(r.mustRead(codec.TypeWelcome), &w, nil); err != nil {
		t.Fatal(err)
	}
	transcript.Features = w.Features
	if want := codec.ResponderMAC(secret, &transcript); w.ReplicaID != 1 || !codec.VerifyMAC(w.MAC, want) {
		t.Fatal("server's Welcome MAC does not verify")
	}
	return r, w
}

func (r *rawConn) sendRequests(clientID uint64, first, count uint64, payload []byte) {
	r.t.Helper()
	var out []byte
	for seq := first; seq < first+count; seq++ {
		out = codec.AppendRequest(out, &codec.Request{ClientID: clientID, Seq: seq, Payload: payload})
	}
	if err := r.write(out); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) readResponse(timeout time.Duration) (codec.Response, error) {
	typ, frame, err := r.readFrame(timeout)
	if err != nil {
		return codec.Response{}, err
	}
	if typ != codec.TypeResponse {
		return codec.Response{}, errors.New("not a Response: " + typ.String())
	}
	var resp codec.Response
	err = codec.DecodeResponse(frame, &resp, nil)
	return resp, err
}

// expectClosed asserts the server closes the connection (EOF or reset), skipping any frames.
func (r *rawConn) expectClosed(timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, _, err := r.readFrame(time.Until(deadline))
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatalf("connection still open after %v", timeout)
		}
		return // EOF, reset, or the frame error of a half-read frame after close
	}
}
