package client

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

const testCluster = 42

// fakeReplica speaks the client side of the protocol: Challenge, Hello, Welcome, then
// answers each Request with whatever answer returns (nil: no answer; closeConn: hang up).
type fakeReplica struct {
	t        *testing.T
	ln       net.Listener
	answer   func(conn int, req codec.Request) []byte
	conns    atomic.Int32
	mu       sync.Mutex
	requests []codec.Request // every request seen, payload copied
	wg       sync.WaitGroup
}

var closeConn = []byte("close")

func newFake(t *testing.T, answer func(conn int, req codec.Request) []byte) *fakeReplica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeReplica{t: t, ln: ln, answer: answer}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() { _ = ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeReplica) addr() string { return f.ln.Addr().String() }

func (f *fakeReplica) seen() []codec.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]codec.Request(nil), f.requests...)
}

func (f *fakeReplica) accept() {
	defer f.wg.Done()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		conns = append(conns, nc)
		n := int(f.conns.Add(1))
		f.wg.Add(1)
		go f.serve(nc, n)
	}
}

func (f *fakeReplica) serve(nc net.Conn, n int) {
	defer f.wg.Done()
	defer nc.Close()
	lim := codec.DefaultLimits()
	_, _ = nc.Write(codec.AppendChallenge(nil, &codec.Challenge{Version: codec.Version, ClusterID: testCluster}))
	br := bufio.NewReader(nc)
	var buf []byte
	frame, err := readFrame(br, &buf, &lim)
	if err != nil {
		return
	}
	var hello codec.Hello
	if codec.DecodeHello(frame, &hello, &lim) != nil || hello.Role != codec.RoleClient {
		return
	}
	_, _ = nc.Write(codec.AppendWelcome(nil, &codec.Welcome{ReplicaID: 1}))
	for {
		frame, err := readFrame(br, &buf, &lim)
		if err != nil {
			return
		}
		var req codec.Request
		if err := codec.DecodeRequest(frame, &req, &lim); err != nil {
			f.t.Errorf("fake replica: bad request: %v", err)
			return
		}
		req.Payload = append([]byte(nil), req.Payload...)
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.mu.Unlock()
		out := f.answer(n, req)
		if string(out) == string(closeConn) {
			return
		}
		if out != nil {
			if _, err := nc.Write(out); err != nil {
				return
			}
		}
	}
}

func ok(req codec.Request, slot uint64) []byte {
	return codec.AppendResponse(nil, &codec.Response{ClientID: req.ClientID, Seq: req.Seq, Status: codec.StatusOK, Slot: slot, Index: uint32(req.Seq % 7)})
}

func status(req codec.Request, st codec.Status) []byte {
	return codec.AppendResponse(nil, &codec.Response{ClientID: req.ClientID, Seq: req.Seq, Status: st})
}

func dial(t *testing.T, mutate func(*Config), endpoints ...string) *Client {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.ClusterID = testCluster
	cfg.RetryBackoff = 5 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestManyPipelinedRequestsGetTheirOwnPositions(t *testing.T) {
	f := newFake(t, func(_ int, req codec.Request) []byte { return ok(req, req.Seq*10) })
	c := dial(t, func(c *Config) { c.InflightMax = 16 }, f.addr())
	const n = 200
	var wg sync.WaitGroup
	results := make([]Result, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.Append(context.Background(), []byte{byte(i)})
		}()
	}
	wg.Wait()
	slots := map[uint64]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		if results[i].Slot%10 != 0 || slots[results[i].Slot] {
			t.Fatalf("append %d: result %+v is not a distinct answer", i, results[i])
		}
		slots[results[i].Slot] = true
	}
	if got := len(f.seen()); got != n {
		t.Fatalf("fake saw %d requests, want %d (no retries expected)", got, n)
	}
}

func TestRedirectIsFollowedToTheLeader(t *testing.T) {
	leader := newFake(t, func(_ int, req codec.Request) []byte { return ok(req, 5) })
	follower := newFake(t, func(_ int, req codec.Request) []byte {
		return codec.AppendRedirect(nil, &codec.Redirect{ClientID: req.ClientID, Seq: req.Seq, LeaderID: 2, LeaderAddr: leader.addr()})
	})
	c := dial(t, nil, follower.addr())
	r, err := c.Append(context.Background(), []byte("x"))
	if err != nil || r.Slot != 5 {
		t.Fatalf("Append = %+v, %v; want slot 5 from the leader", r, err)
	}
	if len(leader.seen()) != 1 || leader.seen()[0].Seq != follower.seen()[0].Seq {
		t.Fatalf("leader saw %+v, follower %+v: want the same seq resent", leader.seen(), follower.seen())
	}
}

func TestUnavailableIsRetriedWithTheSameSeq(t *testing.T) {
	var answered atomic.Int32
	f := newFake(t, func(_ int, req codec.Request) []byte {
		if answered.Add(1) <= 2 {
			return status(req, codec.StatusUnavailable)
		}
		return ok(req, 9)
	})
	c := dial(t, nil, f.addr())
	if r, err := c.Append(context.Background(), []byte("x")); err != nil || r.Slot != 9 {
		t.Fatalf("Append = %+v, %v", r, err)
	}
	seen := f.seen()
	if len(seen) != 3 || seen[0].Seq != seen[1].Seq || seen[1].Seq != seen[2].Seq || seen[0].ClientID != c.ID() {
		t.Fatalf("requests %+v: want three sends of one (client, seq)", seen)
	}
}

func TestConnectionLossResendsTheSameSeqElsewhere(t *testing.T) {
	dropper := newFake(t, func(_ int, req codec.Request) []byte { return closeConn })
	good := newFake(t, func(_ int, req codec.Request) []byte { return ok(req, 3) })
	c := dial(t, nil, dropper.addr(), good.addr())
	if r, err := c.Append(context.Background(), []byte("x")); err != nil || r.Slot != 3 {
		t.Fatalf("Append = %+v, %v", r, err)
	}
	if dropper.seen()[0].Seq != good.seen()[0].Seq {
		t.Fatalf("seq changed across the retry: %d then %d", dropper.seen()[0].Seq, good.seen()[0].Seq)
	}
}

func TestNoAnswerTimesOut(t *testing.T) {
	f := newFake(t, func(int, codec.Request) []byte { return nil })
	c := dial(t, func(c *Config) { c.RequestTimeout = 100 * time.Millisecond }, f.addr())
	start := time.Now()
	_, err := c.Append(context.Background(), []byte("x"))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > 2*time.Second {
		t.Fatalf("timed out after %v, want about 100ms", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := c.Append(ctx, []byte("y")); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ctx deadline: err = %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}
}

func TestRejectedCarriesTheStatus(t *testing.T) {
	f := newFake(t, func(_ int, req codec.Request) []byte { return status(req, codec.StatusTooLarge) })
	c := dial(t, nil, f.addr())
	_, err := c.Append(context.Background(), []byte("x"))
	var rej *RejectedError
	if !errors.Is(err, ErrRejected) || !errors.As(err, &rej) || rej.Status != codec.StatusTooLarge {
		t.Fatalf("err = %v, want RejectedError{StatusTooLarge}", err)
	}
	if len(f.seen()) != 1 {
		t.Fatalf("a rejected request was resent: %d sends", len(f.seen()))
	}
}

func TestRedirectLoopIsBounded(t *testing.T) {
	var a, b *fakeReplica
	a = newFake(t, func(_ int, req codec.Request) []byte {
		return codec.AppendRedirect(nil, &codec.Redirect{ClientID: req.ClientID, Seq: req.Seq, LeaderID: 2, LeaderAddr: b.addr()})
	})
	b = newFake(t, func(_ int, req codec.Request) []byte {
		return codec.AppendRedirect(nil, &codec.Redirect{ClientID: req.ClientID, Seq: req.Seq, LeaderID: 1, LeaderAddr: a.addr()})
	})
	c := dial(t, func(c *Config) { c.RedirectsMax = 3 }, a.addr())
	if _, err := c.Append(context.Background(), []byte("x")); !errors.Is(err, ErrRedirectsExhausted) {
		t.Fatalf("err = %v, want ErrRedirectsExhausted", err)
	}
	if n := len(a.seen()) + len(b.seen()); n != 4 {
		t.Fatalf("%d sends, want 1 + RedirectsMax", n)
	}
}

func TestWrongClusterIDFailsTheHandshake(t *testing.T) {
	f := newFake(t, func(_ int, req codec.Request) []byte { return ok(req, 1) })
	cfg := DefaultConfig()
	cfg.Endpoints = []string{f.addr()}
	cfg.ClusterID = testCluster + 1
	_, err := Dial(context.Background(), cfg)
	if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "cluster id") {
		t.Fatalf("err = %v, want ErrHandshake naming the cluster id", err)
	}
}

func TestCloseFailsOutstandingRequests(t *testing.T) {
	f := newFake(t, func(int, codec.Request) []byte { return nil })
	c := dial(t, nil, f.addr())
	errc := make(chan error, 1)
	if err := c.AppendAsync([]byte("x"), func(_ Result, err error) { errc <- err }); err != nil {
		t.Fatal(err)
	}
	for len(f.seen()) == 0 {
		time.Sleep(time.Millisecond)
	}
	_ = c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("outstanding request: %v, want ErrClosed", err)
	}
	if err := c.AppendAsync([]byte("y"), func(Result, error) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendAsync after Close: %v, want ErrClosed", err)
	}
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"Endpoints", func(c *Config) { c.Endpoints = nil }},
		{"Endpoints", func(c *Config) { c.Endpoints = []string{"nocolon"} }},
		{"InflightMax", func(c *Config) { c.InflightMax = 0 }},
		{"InflightMax", func(c *Config) { c.InflightMax = InflightMaxLimit + 1 }},
		{"RequestTimeout", func(c *Config) { c.RequestTimeout = 0 }},
		{"DialTimeout", func(c *Config) { c.DialTimeout = -1 }},
		{"RedirectsMax", func(c *Config) { c.RedirectsMax = -1 }},
		{"RetryBackoff", func(c *Config) { c.RetryBackoff = 0 }},
		{"WriteBytesMax", func(c *Config) { c.WriteBytesMax = 10 }},
	}
	for _, tc := range cases {
		cfg := DefaultConfig()
		cfg.Endpoints = []string{"127.0.0.1:1"}
		tc.mutate(&cfg)
		_, err := Dial(context.Background(), cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%s: err = %v", tc.field, err)
		}
	}
}

func TestUnreachableEndpointsFailDial(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg := DefaultConfig()
	cfg.Endpoints = []string{addr}
	cfg.DialTimeout = 200 * time.Millisecond
	if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want an error naming %s", err, addr)
	}
}
