package faultproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(Config{Target: target, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within timeout.
func roundTrip(c net.Conn, msg []byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyForwardsBothWays(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	msg := bytes.Repeat([]byte("mpaxos"), 20000) // several chunks
	if err := roundTrip(c, msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s := p.Stats()
	if s.Accepted != 1 || s.BytesForward != uint64(len(msg)) || s.BytesBackward != uint64(len(msg)) {
		t.Fatalf("stats %+v after one %d-byte round trip", s, len(msg))
	}
}

func TestProxyCutResetsAndRefusesThenHeals(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if err := roundTrip(c, []byte("before"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.SetFaults(Faults{Cut: true}); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, []byte("during"), time.Second); err == nil || isTimeout(err) {
		t.Fatalf("existing connection across a cut: %v, want a reset or EOF", err)
	}
	// The reset may even beat connect(2) to the caller: either way, refused at once.
	if fresh, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		defer fresh.Close()
		if err := roundTrip(fresh, []byte("during"), time.Second); err == nil || isTimeout(err) {
			t.Fatalf("new connection across a cut: %v, want it closed at once", err)
		}
	}
	p.Heal()
	if err := roundTrip(dial(t, p.Addr()), []byte("after"), time.Second); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	if s := p.Stats(); s.Killed == 0 || s.Refused == 0 {
		t.Fatalf("stats %+v: want killed and refused counted", s)
	}
}

func TestProxyBlackholeIsSilentAndResetsOnHeal(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if err := roundTrip(c, []byte("before"), time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetFaults(Faults{Blackhole: true})
	if err := roundTrip(c, []byte("lost"), 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("across a black hole: %v, want silence (timeout)", err)
	}
	p.Heal()
	// The stream lost bytes: it must not resume, or framing would be corrupt.
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("black-holed connection after heal: %v, want it reset", err)
	}
	if err := roundTrip(dial(t, p.Addr()), []byte("after"), time.Second); err != nil {
		t.Fatalf("new connection after heal: %v", err)
	}
	if s := p.Stats(); s.BytesDropped != 4 {
		t.Fatalf("dropped %d bytes, want 4", s.BytesDropped)
	}
}

func TestProxyDelayKeepsOrder(t *testing.T) {
	p := newProxy(t, echoServer(t))
	p.SetFaults(Faults{Delay: 40 * time.Millisecond, Jitter: 30 * time.Millisecond})
	c := dial(t, p.Addr())
	start := time.Now()
	if err := roundTrip(c, []byte("x"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 10*time.Millisecond {
		t.Fatalf("round trip %v through a 40±30 ms delay", rtt)
	}
	// Many small writes, each its own chunk with its own jitter: order must hold.
	const count = 200
	go func() {
		for i := 0; i < count; i++ {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(i))
			c.Write(b[:])
			time.Sleep(100 * time.Microsecond)
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4*count)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < count; i++ {
		if v := binary.BigEndian.Uint32(got[4*i:]); v != uint32(i) {
			t.Fatalf("position %d holds %d: delayed chunks reordered", i, v)
		}
	}
}

func TestProxyLossKillsConnections(t *testing.T) {
	p := newProxy(t, echoServer(t))
	p.SetFaults(Faults{KillProbability: 1})
	if err := roundTrip(dial(t, p.Addr()), []byte("x"), time.Second); err == nil || isTimeout(err) {
		t.Fatalf("with certain loss: %v, want a reset", err)
	}
	p.SetFaults(Faults{KillProbability: 0.5})
	killed := 0
	const tries = 40
	for i := 0; i < tries; i++ {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c, []byte("x"), time.Second); err != nil {
			killed++
		}
		c.Close()
	}
	if killed < 5 || killed > tries-5 {
		t.Fatalf("50%% loss killed %d of %d connections", killed, tries)
	}
}

func TestProxyRefusesOverConnectionsMax(t *testing.T) {
	p, err := New(Config{Target: echoServer(t), ConnectionsMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := dial(t, p.Addr()), dial(t, p.Addr())
	for _, c := range []net.Conn{a, b} {
		if err := roundTrip(c, []byte("ok"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if third, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		defer third.Close()
		if err := roundTrip(third, []byte("third"), time.Second); err == nil || isTimeout(err) {
			t.Fatalf("third connection over ConnectionsMax=2: %v, want it closed", err)
		}
	}
}

func TestFaultsValidation(t *testing.T) {
	for _, tc := range []struct {
		f     Faults
		field string
	}{
		{Faults{KillProbability: 1.5}, "KillProbability"},
		{Faults{KillProbability: -0.1}, "KillProbability"},
		{Faults{Delay: -time.Second}, "Delay"},
		{Faults{Jitter: 2 * time.Minute}, "Jitter"},
	} {
		err := tc.f.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Fatalf("%+v: %v, want an error naming %s", tc.f, err, tc.field)
		}
	}
	if _, err := New(Config{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Target") {
		t.Fatalf("New without a target: %v", err)
	}
}

func TestNetworkPartitionIsolateBlock(t *testing.T) {
	targets := map[int]string{1: echoServer(t), 2: echoServer(t), 3: echoServer(t)}
	n, err := NewNetwork([]int{1, 2, 3}, func(id int) string { return targets[id] }, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	reachable := func(from, to int) bool {
		c, err := net.DialTimeout("tcp", n.Addr(from, to), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		return roundTrip(c, []byte("hi"), 500*time.Millisecond) == nil
	}
	check := func(what string, want map[[2]int]bool) {
		t.Helper()
		for from := 1; from <= 3; from++ {
			for to := 1; to <= 3; to++ {
				if from == to {
					continue
				}
				if got := reachable(from, to); got != want[[2]int{from, to}] {
					t.Fatalf("%s (%s): %d->%d reachable=%v", what, n.Describe(), from, to, got)
				}
			}
		}
	}
	all := map[[2]int]bool{{1, 2}: true, {1, 3}: true, {2, 1}: true, {2, 3}: true, {3, 1}: true, {3, 2}: true}
	check("healthy", all)

	n.Partition(false, []int{1, 2}, []int{3})
	check("partition 12|3", map[[2]int]bool{{1, 2}: true, {2, 1}: true})

	n.Heal()
	n.Isolate(2, false)
	check("isolate 2", map[[2]int]bool{{1, 3}: true, {3, 1}: true})

	n.Heal()
	n.Block(1, 3, false)
	check("block 1->3", map[[2]int]bool{{1, 2}: true, {2, 1}: true, {2, 3}: true, {3, 1}: true, {3, 2}: true})
	if d := n.Describe(); d != "1->3 cut" {
		t.Fatalf("Describe: %q", d)
	}
	n.Heal()
	check("healed", all)
	if n.Describe() != "healthy" {
		t.Fatalf("Describe after heal: %q", n.Describe())
	}
}
