package netns

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func newEmulated(t *testing.T, hosts int, cfg EmulatorConfig) *Topology {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("network namespace tests need iproute2 and root: %v", err)
	}
	topo, err := CreateWith(hosts, Options{Emulated: true, Emulator: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return topo
}

// in runs fn inside host i, or in the root namespace for i = 0.
func in(topo *Topology, i int, fn func() error) error {
	if i == 0 {
		return fn()
	}
	return topo.InNamespace(i, fn)
}

// echoIn serves a TCP echo on host i's address until the test ends.
func echoIn(t *testing.T, topo *Topology, i int) string {
	t.Helper()
	var l net.Listener
	err := topo.InNamespace(i, func() (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(topo.Hosts[i-1].Addr, "7000"))
		return err
	})
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
			go func() { defer wg.Done(); io.Copy(c, c) }()
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

func dialFrom(topo *Topology, i int, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := in(topo, i, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// pingPong returns the smallest of rounds round trips of a 4-byte message over c.
func pingPong(c net.Conn, rounds int) (time.Duration, error) {
	best := time.Hour
	buf := make([]byte, 4)
	for i := 0; i < rounds; i++ {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
		best = min(best, time.Since(start))
	}
	return best, nil
}

func TestEmulatedTCPBetweenHostsAndRoot(t *testing.T) {
	topo := newEmulated(t, 3, EmulatorConfig{})
	addr := echoIn(t, topo, 1)
	for _, from := range []int{0, 2, 3} {
		c, err := dialFrom(topo, from, addr, 2*time.Second)
		if err != nil {
			t.Fatalf("host %d -> host 1: %v", from, err)
		}
		d, err := pingPong(c, 5)
		c.Close()
		if err != nil {
			t.Fatalf("host %d -> host 1: %v", from, err)
		}
		if d > 20*time.Millisecond {
			t.Fatalf("host %d -> host 1: round trip %v through the unshaped emulator", from, d)
		}
	}
	// A bulk transfer crosses in MTU-sized packets and arrives intact.
	c, err := dialFrom(topo, 2, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 4<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo of 4 MiB: %v", err)
	}
	if string(got) != string(payload) {
		t.Fatal("echo of 4 MiB came back different")
	}
	// Nothing but the subnet is routed inside a host.
	if out, err := run(append(topo.Exec(2), "ip", "-4", "route", "get", "192.0.2.1")...); err == nil {
		t.Fatalf("namespace routes a foreign address: %s", out)
	}
	s, err := topo.Stats(2)
	if err != nil {
		t.Fatal(err)
	}
	if s.Forwarded < 64 || s.Lost+s.DroppedQueueFull+s.DroppedDisconnected+s.WriteErrors != 0 {
		t.Fatalf("host 2 stats after an unshaped 4 MiB transfer: %+v", s)
	}
}

func TestEmulatedDelayShowsAsRoundTrip(t *testing.T) {
	topo := newEmulated(t, 2, EmulatorConfig{})
	addr := echoIn(t, topo, 1)
	const delay = 15 * time.Millisecond
	for _, i := range []int{1, 2} {
		if err := topo.SetNetem(i, Netem{Delay: delay}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := dialFrom(topo, 2, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := pingPong(c, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip with %v on both hosts: %v", delay, d)
	if d < 2*delay || d >= 2*delay+50*time.Millisecond {
		t.Fatalf("round trip %v with %v egress delay on both hosts: want [%v, %v)", d, delay, 2*delay, 2*delay+50*time.Millisecond)
	}
	// Only host 1 delayed: the root namespace sees one delay per round trip.
	if err := topo.ClearNetem(2); err != nil {
		t.Fatal(err)
	}
	root, err := dialFrom(topo, 0, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if d, err = pingPong(root, 5); err != nil || d < delay || d >= delay+50*time.Millisecond {
		t.Fatalf("root -> host 1 round trip %v (%v) with %v on host 1 only", d, err, delay)
	}
	if err := topo.ClearNetem(1); err != nil {
		t.Fatal(err)
	}
	if d, err = pingPong(c, 5); err != nil || d >= delay {
		t.Fatalf("round trip %v (%v) after clearing the delay", d, err)
	}
}

// udpFlow sends count datagrams numbered 0.. from host from to host to, pausing a little every
// burst datagrams, and returns the sequence numbers in arrival order.
func udpFlow(t *testing.T, topo *Topology, from, to, count, burst int) []uint32 {
	t.Helper()
	var rx, tx net.PacketConn
	if err := in(topo, to, func() (err error) {
		rx, err = net.ListenPacket("udp4", net.JoinHostPort(topo.Hosts[to-1].Addr, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := in(topo, from, func() (err error) {
		tx, err = net.ListenPacket("udp4", net.JoinHostPort(topo.Hosts[from-1].Addr, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	var got []uint32
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, _, err := rx.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 4 {
				got = append(got, binary.BigEndian.Uint32(buf))
			}
		}
	}()
	msg := make([]byte, 4)
	for i := 0; i < count; i++ {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := tx.WriteTo(msg, rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if (i+1)%burst == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	<-done
	return got
}

// outOfOrder counts datagrams that arrived after one with a higher sequence number.
func outOfOrder(seqs []uint32) int {
	late, highest := 0, -1
	for _, s := range seqs {
		if int(s) < highest {
			late++
		}
		highest = max(highest, int(s))
	}
	return late
}

func TestEmulatedLoss(t *testing.T) {
	topo := newEmulated(t, 2, EmulatorConfig{})
	addr := echoIn(t, topo, 1)
	if err := topo.SetNetem(1, Netem{LossPercent: 100}); err != nil {
		t.Fatal(err)
	}
	if c, err := dialFrom(topo, 2, addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("dialled host 1 while it loses every packet it sends")
	}
	if got := udpFlow(t, topo, 1, 2, 200, 20); len(got) != 0 {
		t.Fatalf("%d of 200 datagrams arrived at 100%% loss", len(got))
	}
	if err := topo.SetNetem(1, Netem{LossPercent: 30}); err != nil {
		t.Fatal(err)
	}
	got := udpFlow(t, topo, 1, 2, 1000, 20)
	t.Logf("30%% loss: %d of 1000 datagrams arrived", len(got))
	if len(got) < 550 || len(got) > 850 {
		t.Fatalf("%d of 1000 datagrams arrived at 30%% loss: want about 700", len(got))
	}
	if err := topo.ClearNetem(1); err != nil {
		t.Fatal(err)
	}
	if got := udpFlow(t, topo, 1, 2, 200, 20); len(got) != 200 {
		t.Fatalf("%d of 200 datagrams arrived after clearing the loss", len(got))
	}
	c, err := dialFrom(topo, 2, addr, 2*time.Second)
	if err != nil {
		t.Fatalf("host 1 unreachable after clearing the loss: %v", err)
	}
	c.Close()
	if s, _ := topo.Stats(1); s.Lost < 200 {
		t.Fatalf("host 1 stats: %+v: want at least the 200 datagrams lost", s)
	}
}

func TestEmulatedReorder(t *testing.T) {
	topo := newEmulated(t, 2, EmulatorConfig{})
	// A fixed delay alone keeps order.
	if err := topo.SetNetem(1, Netem{Delay: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	got := udpFlow(t, topo, 1, 2, 500, 10)
	if len(got) < 490 || outOfOrder(got) != 0 {
		t.Fatalf("delay only: %d of 500 arrived, %d out of order", len(got), outOfOrder(got))
	}
	if err := topo.SetNetem(1, Netem{Delay: 10 * time.Millisecond, ReorderPercent: 25}); err != nil {
		t.Fatal(err)
	}
	got = udpFlow(t, topo, 1, 2, 500, 10)
	late := outOfOrder(got)
	t.Logf("25%% reordering: %d of 500 arrived, %d out of order", len(got), late)
	if len(got) < 490 || late < 50 {
		t.Fatalf("25%% reordering: %d of 500 arrived, %d out of order: want most of the ~375 delayed ones overtaken", len(got), late)
	}
	if s, _ := topo.Stats(1); s.Reordered < 60 || s.Reordered > 200 {
		t.Fatalf("host 1 stats: %+v: want about 125 reordered", s)
	}
}

func TestEmulatedQueueLimitDrops(t *testing.T) {
	topo := newEmulated(t, 2, EmulatorConfig{QueuePacketsMax: 16})
	if err := topo.SetNetem(1, Netem{Delay: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	got := udpFlow(t, topo, 1, 2, 100, 100)
	s, _ := topo.Stats(1)
	if len(got) > 16 || s.DroppedQueueFull < 84 {
		t.Fatalf("100 datagrams into a 16-packet queue: %d arrived, stats %+v", len(got), s)
	}
}

func TestEmulatedDisconnectReconnect(t *testing.T) {
	topo := newEmulated(t, 2, EmulatorConfig{})
	addr := echoIn(t, topo, 1)
	c, err := dialFrom(topo, 2, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := topo.Disconnect(1); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write([]byte("ping"))
	if _, err := io.ReadFull(c, make([]byte, 4)); err == nil {
		t.Fatal("echo answered across a disconnected link")
	}
	for _, from := range []int{0, 2} {
		if c, err := dialFrom(topo, from, addr, 300*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("host %d dialled a disconnected host", from)
		}
	}
	if err := topo.Reconnect(1); err != nil {
		t.Fatal(err)
	}
	c2, err := dialFrom(topo, 2, addr, 2*time.Second)
	if err != nil {
		t.Fatalf("host 1 unreachable after reconnect: %v", err)
	}
	defer c2.Close()
	if _, err := pingPong(c2, 1); err != nil {
		t.Fatal(err)
	}
	if s, _ := topo.Stats(2); s.DroppedDisconnected == 0 {
		t.Fatalf("host 2 stats: %+v: nothing dropped while host 1 was disconnected", s)
	}
}

func TestEmulatedCloseRemovesEverything(t *testing.T) {
	if err := Available(); err != nil {
		t.Fatalf("network namespace tests need iproute2 and root: %v", err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fds := openFiles(t)
	topo, err := CreateEmulated(3)
	if err != nil {
		t.Fatal(err)
	}
	if links, _ := run("ip", "link", "show", topo.Bridge); !strings.Contains(links, topo.Bridge) {
		t.Fatalf("no gateway device %s: %s", topo.Bridge, links)
	}
	// Traffic through it first, so its goroutines are busy when it closes.
	var l net.Listener
	if err := topo.InNamespace(1, func() (err error) {
		l, err = net.Listen("tcp4", topo.Hosts[0].Addr+":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c, err := dialFrom(topo, 0, l.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	l.Close()
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	out, _ := run("ip", "netns", "list")
	links, _ := run("ip", "link", "show")
	if strings.Contains(out, topo.Run) || strings.Contains(links, topo.Run) {
		t.Fatalf("leftovers of %s:\n%s\n%s", topo.Run, out, links)
	}
	if o, _ := run("ip", "-4", "route", "show", topo.Subnet); strings.TrimSpace(o) != "" {
		t.Fatalf("subnet still routed: %s", o)
	}
	if after := openFiles(t); after != fds {
		t.Fatalf("%d open files before Create, %d after Close", fds, after)
	}
}

func openFiles(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestEmulatedNetemValidation(t *testing.T) {
	topo := newEmulated(t, 1, EmulatorConfig{})
	for _, n := range []Netem{{LossPercent: -1}, {ReorderPercent: 5}, {Delay: -time.Millisecond}, {Delay: time.Millisecond, Jitter: -1}} {
		if err := topo.SetNetem(1, n); err == nil || !strings.Contains(err.Error(), "netem") {
			t.Fatalf("SetNetem(%+v): %v", n, err)
		}
	}
	if _, err := (&Topology{}).Stats(1); err == nil {
		t.Fatal("Stats on a bridge topology did not fail")
	}
}

func TestEmulatorConfigValidate(t *testing.T) {
	if err := DefaultEmulatorConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for field, c := range map[string]EmulatorConfig{
		"MTU":             {MTU: 100, QueuePacketsMax: 1, QueueBytesMax: 1 << 20},
		"QueuePacketsMax": {MTU: 1500, QueuePacketsMax: -1, QueueBytesMax: 1 << 20},
		"QueueBytesMax":   {MTU: 1500, QueuePacketsMax: 1, QueueBytesMax: 10},
	} {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Fatalf("%+v: %v: want an error naming %s", c, err, field)
		}
	}
	if _, err := CreateWith(1, Options{Emulated: true, Emulator: EmulatorConfig{MTU: 70000}}); err == nil || !strings.Contains(err.Error(), "MTU") {
		t.Fatalf("CreateWith MTU 70000: %v", err)
	}
}

func TestHeapOrdersByDueThenArrival(t *testing.T) {
	var h []packet
	for i, due := range []int64{5, 3, 9, 3, 1, 5, 0} {
		h = append(h, packet{due: due, seq: uint64(i)})
		siftUp(h, len(h)-1)
	}
	var got []int64
	var seqs []uint64
	for len(h) > 0 {
		p := popMin(&h)
		got = append(got, p.due)
		seqs = append(seqs, p.seq)
	}
	want := []int64{0, 1, 3, 3, 5, 5, 9}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("popped %v, want %v", got, want)
		}
	}
	if seqs[2] != 1 || seqs[3] != 3 || seqs[4] != 0 || seqs[5] != 5 {
		t.Fatalf("equal due times out of arrival order: seqs %v", seqs)
	}
}

// BenchmarkEmulatedTCP: bulk TCP from the root namespace to host 1 through the emulator.
func BenchmarkEmulatedTCP(b *testing.B) {
	if err := Available(); err != nil {
		b.Fatal(err)
	}
	topo, err := CreateEmulated(1)
	if err != nil {
		b.Fatal(err)
	}
	defer topo.Close()
	var l net.Listener
	if err := topo.InNamespace(1, func() (err error) {
		l, err = net.Listen("tcp4", topo.Hosts[0].Addr+":7000")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			received <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		received <- n
	}()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if n := <-received; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("received %d of %d bytes", n, int64(b.N)*int64(len(chunk)))
	}
	s, err := topo.Stats(0)
	if err != nil || s.Forwarded == 0 {
		b.Fatalf("gateway stats %+v (%v): the transfer bypassed the emulator", s, err)
	}
	b.ReportMetric(float64(s.Forwarded)/float64(b.N), "packets/op")
}
