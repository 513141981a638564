package netns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// EmulatorConfig sizes the userspace link emulator of an emulated Topology.
type EmulatorConfig struct {
	// MTU of every TUN device. Large, so bulk TCP moves in few packets: the emulator's cost
	// is per packet, and without GSO the kernel hands it one packet per MTU.
	MTU int
	// QueuePacketsMax and QueueBytesMax bound each host's delivery queue (packets waiting for
	// their due time, like netem's limit). Past either, a packet is dropped and counted, as a
	// full link would.
	QueuePacketsMax int
	QueueBytesMax   int
	// Seed of the loss, jitter and reordering draws; 0 draws one.
	Seed uint64
}

// DefaultEmulatorConfig: MTU 65000, queues of 10000 packets / 64 MiB (25 ms of 100 MB/s is
// 2.5 MB, so a delayed bulk stream fits; netem's default limit is 1000 packets).
func DefaultEmulatorConfig() EmulatorConfig {
	return EmulatorConfig{MTU: 65000, QueuePacketsMax: 10000, QueueBytesMax: 64 << 20}
}

// withDefaults fills zero fields from DefaultEmulatorConfig.
func (c EmulatorConfig) withDefaults() EmulatorConfig {
	d := DefaultEmulatorConfig()
	if c.MTU == 0 {
		c.MTU = d.MTU
	}
	if c.QueuePacketsMax == 0 {
		c.QueuePacketsMax = d.QueuePacketsMax
	}
	if c.QueueBytesMax == 0 {
		c.QueueBytesMax = d.QueueBytesMax
	}
	return c
}

// Validate names the first field out of range.
func (c EmulatorConfig) Validate() error {
	switch {
	case c.MTU < 576 || c.MTU > packetBytesMax:
		return fmt.Errorf("netns: EmulatorConfig.MTU = %d: want 576..%d", c.MTU, packetBytesMax)
	case c.QueuePacketsMax < 1 || c.QueuePacketsMax > 1<<20:
		return fmt.Errorf("netns: EmulatorConfig.QueuePacketsMax = %d: want 1..%d", c.QueuePacketsMax, 1<<20)
	case c.QueueBytesMax < packetBytesMax || c.QueueBytesMax > 1<<30:
		return fmt.Errorf("netns: EmulatorConfig.QueueBytesMax = %d: want %d..%d", c.QueueBytesMax, packetBytesMax, 1<<30)
	}
	return nil
}

// packetBytesMax is the largest IPv4 packet; every read buffer holds one.
const packetBytesMax = 65535

// smallPacketBytes: packets up to this size (ACKs, small requests) are copied into small
// pooled buffers, so a queue of them does not pin 64 KiB each.
const smallPacketBytes = 2048

// HostStats counts what one host sent through the emulator (its egress).
type HostStats struct {
	Forwarded           uint64 // written to the destination's device
	Reordered           uint64 // sent without the delay (ReorderPercent)
	Lost                uint64 // dropped by LossPercent
	DroppedQueueFull    uint64 // dropped because the destination's queue was full
	DroppedDisconnected uint64 // dropped because sender or receiver was disconnected
	DroppedUnroutable   uint64 // not IPv4, or to an address that is no host of the topology
	WriteErrors         uint64 // the destination device refused the packet
}

type hostCounters struct {
	forwarded, reordered, lost, queueFull, disconnected, unroutable, writeErrors atomic.Uint64
}

// packet is one IPv4 packet waiting for its due time.
type packet struct {
	due  int64  // nanoseconds since the emulator started
	seq  uint64 // FIFO among equal due times
	from *endpoint
	buf  *[]byte // pooled; the packet is (*buf)[:size]
	size int
}

// endpoint is one TUN device: a host's (index >= 1) or the root namespace's gateway (0).
type endpoint struct {
	index        int
	file         *os.File
	netem        atomic.Pointer[Netem] // egress shaping; nil: none
	disconnected atomic.Bool
	counters     hostCounters
	rng          *rand.Rand // only the endpoint's reader goroutine draws from it

	mu       sync.Mutex
	queue    []packet // min-heap by (due, seq): packets to deliver to this endpoint
	queued   int      // bytes in queue
	sequence uint64
	wake     chan struct{} // capacity 1: the queue's earliest due time moved earlier
}

// emulator forwards packets between the endpoints' devices, shaping each sender's egress.
type emulator struct {
	cfg       EmulatorConfig
	prefix    [3]byte // the /24 every endpoint lives in
	gateway   *endpoint
	hosts     []*endpoint // hosts[i-1] is host i
	start     time.Time
	done      chan struct{}
	wg        sync.WaitGroup
	small     sync.Pool
	large     sync.Pool
	closeOnce sync.Once
}

func newEmulator(cfg EmulatorConfig, third int) *emulator {
	e := &emulator{cfg: cfg, prefix: [3]byte{198, 18, byte(third)}, start: time.Now(), done: make(chan struct{})}
	e.small.New = func() any { b := make([]byte, smallPacketBytes); return &b }
	e.large.New = func() any { b := make([]byte, packetBytesMax); return &b }
	return e
}

// rngFor derives an endpoint's random stream from the configured seed.
func (e *emulator) rngFor(index int) *rand.Rand {
	return rand.New(rand.NewPCG(e.cfg.Seed, uint64(index)+0x6e6574656d))
}

// add registers a device; the gateway is index 0.
func (e *emulator) add(index int, file *os.File) {
	ep := &endpoint{index: index, file: file, rng: e.rngFor(index), wake: make(chan struct{}, 1)}
	if index == 0 {
		e.gateway = ep
	} else {
		e.hosts = append(e.hosts, ep)
	}
}

// run starts one reader and one writer goroutine per endpoint.
func (e *emulator) run() {
	for _, ep := range e.all() {
		e.wg.Add(2)
		go e.read(ep)
		go e.deliver(ep)
	}
}

func (e *emulator) all() []*endpoint {
	var all []*endpoint
	if e.gateway != nil {
		all = append(all, e.gateway)
	}
	return append(all, e.hosts...)
}

// close stops the goroutines and closes the devices (which deletes them: they are not
// persistent).
func (e *emulator) close() error {
	var errs []error
	e.closeOnce.Do(func() {
		close(e.done)
		for _, ep := range e.all() {
			if err := ep.file.Close(); err != nil {
				errs = append(errs, fmt.Errorf("netns: close TUN device of endpoint %d: %w", ep.index, err))
			}
		}
		e.wg.Wait()
	})
	return errors.Join(errs...)
}

func (e *emulator) now() int64 { return int64(time.Since(e.start)) }

// route maps a destination address to its endpoint: .254 is the gateway, .1..N the hosts.
func (e *emulator) route(dst []byte) *endpoint {
	if dst[0] != e.prefix[0] || dst[1] != e.prefix[1] || dst[2] != e.prefix[2] {
		return nil
	}
	switch last := int(dst[3]); {
	case last == 254:
		return e.gateway
	case last >= 1 && last <= len(e.hosts):
		return e.hosts[last-1]
	}
	return nil
}

// read forwards every packet the endpoint's device emits (what its namespace sends).
func (e *emulator) read(from *endpoint) {
	defer e.wg.Done()
	scratch := make([]byte, packetBytesMax)
	for {
		n, err := from.file.Read(scratch)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			select {
			case <-e.done:
				return
			case <-time.After(time.Millisecond): // a transient error must not spin
			}
			continue
		}
		e.forward(from, scratch[:n])
	}
}

// forward applies the sender's shaping to one packet and queues it for its destination.
func (e *emulator) forward(from *endpoint, p []byte) {
	if len(p) < 20 || p[0]>>4 != 4 {
		from.counters.unroutable.Add(1) // IPv6 router solicitations and the like
		return
	}
	to := e.route(p[16:20])
	if to == nil {
		from.counters.unroutable.Add(1)
		return
	}
	if from.disconnected.Load() || to.disconnected.Load() {
		from.counters.disconnected.Add(1)
		return
	}
	var delay time.Duration
	if n := from.netem.Load(); n != nil {
		if n.LossPercent > 0 && from.rng.Float64()*100 < n.LossPercent {
			from.counters.lost.Add(1)
			return
		}
		if n.ReorderPercent > 0 && from.rng.Float64()*100 < n.ReorderPercent {
			from.counters.reordered.Add(1) // as netem: this one goes now, ahead of the delayed
		} else {
			delay = n.Delay
			if n.Jitter > 0 {
				delay += time.Duration(from.rng.Int64N(int64(2*n.Jitter)+1)) - n.Jitter
			}
			delay = max(delay, 0)
		}
	}
	buf := e.buffer(len(p))
	copy(*buf, p)
	if !to.push(packet{due: e.now() + int64(delay), from: from, buf: buf, size: len(p)}, &e.cfg) {
		from.counters.queueFull.Add(1)
		e.release(buf)
	}
}

func (e *emulator) buffer(size int) *[]byte {
	if size <= smallPacketBytes {
		return e.small.Get().(*[]byte)
	}
	return e.large.Get().(*[]byte)
}

func (e *emulator) release(buf *[]byte) {
	if len(*buf) == smallPacketBytes {
		e.small.Put(buf)
	} else {
		e.large.Put(buf)
	}
}

// push queues p for delivery; false when the queue is full.
func (ep *endpoint) push(p packet, cfg *EmulatorConfig) bool {
	ep.mu.Lock()
	if len(ep.queue) >= cfg.QueuePacketsMax || ep.queued+p.size > cfg.QueueBytesMax {
		ep.mu.Unlock()
		return false
	}
	ep.sequence++
	p.seq = ep.sequence
	ep.queue = append(ep.queue, p)
	ep.queued += p.size
	first := siftUp(ep.queue, len(ep.queue)-1) == 0
	ep.mu.Unlock()
	if first {
		select {
		case ep.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// deliver writes the endpoint's queued packets to its device as they come due.
func (e *emulator) deliver(to *endpoint) {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []packet
	for {
		to.mu.Lock()
		now := e.now()
		due = due[:0]
		for len(to.queue) > 0 && to.queue[0].due <= now {
			due = append(due, popMin(&to.queue))
			to.queued -= due[len(due)-1].size
		}
		wait := int64(-1)
		if len(to.queue) > 0 {
			wait = to.queue[0].due - now
		}
		to.mu.Unlock()
		for _, p := range due {
			e.write(to, p)
		}
		if len(due) > 0 {
			continue // time went by while writing: look again before sleeping
		}
		if wait < 0 {
			select {
			case <-to.wake:
			case <-e.done:
				return
			}
			continue
		}
		timer.Reset(time.Duration(wait))
		select {
		case <-timer.C:
		case <-to.wake:
		case <-e.done:
			return
		}
	}
}

func (e *emulator) write(to *endpoint, p packet) {
	defer e.release(p.buf)
	// A link that went down drops what was in flight on it too.
	if p.from.disconnected.Load() || to.disconnected.Load() {
		p.from.counters.disconnected.Add(1)
		return
	}
	if _, err := to.file.Write((*p.buf)[:p.size]); err != nil {
		p.from.counters.writeErrors.Add(1)
		return
	}
	p.from.counters.forwarded.Add(1)
}

func (p *packet) before(q *packet) bool {
	return p.due < q.due || p.due == q.due && p.seq < q.seq
}

// siftUp restores the heap after an append at i and returns the element's final index.
func siftUp(h []packet, i int) int {
	for i > 0 {
		parent := (i - 1) / 2
		if !h[i].before(&h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	return i
}

// popMin removes and returns the earliest packet.
func popMin(h *[]packet) packet {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = packet{}
	q = q[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(q) && q[l].before(&q[m]) {
			m = l
		}
		if r < len(q) && q[r].before(&q[m]) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}

func (c *hostCounters) snapshot() HostStats {
	return HostStats{
		Forwarded: c.forwarded.Load(), Reordered: c.reordered.Load(), Lost: c.lost.Load(),
		DroppedQueueFull: c.queueFull.Load(), DroppedDisconnected: c.disconnected.Load(),
		DroppedUnroutable: c.unroutable.Load(), WriteErrors: c.writeErrors.Load(),
	}
}

// inNamespace runs fn on an OS thread inside network namespace ns ("" = this process's own).
// Sockets and TUN devices fn creates stay in ns after it returns. If the thread cannot switch
// back, it stays locked and Go discards it when the goroutine ends.
func inNamespace(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- switchAndRun(ns, fn)
	}()
	return <-errc
}

func switchAndRun(ns string, fn func() error) error {
	own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: open own namespace: %w", err)
	}
	defer unix.Close(own)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: open namespace %s: %w", ns, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter namespace %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(own, unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// openTUN creates TUN device name (IPv4 packets, no packet-information header) in namespace
// ns and returns it as a non-blocking file served by Go's poller.
func openTUN(ns, name string) (*os.File, error) {
	var file *os.File
	err := inNamespace(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("netns: open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("netns: TUN device name %q: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("netns: create TUN device %s: %w", name, err)
		}
		file = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	return file, err
}

// buildEmulated makes the gateway device in the root namespace and one namespace with a TUN
// device per host, then starts the forwarding goroutines.
func (t *Topology) buildEmulated(hosts, third int) error {
	if out, _ := run("ip", "-4", "route", "show", t.Subnet); strings.TrimSpace(out) != "" {
		return fmt.Errorf("netns: subnet %s already routed here (%s): %w", t.Subnet, strings.TrimSpace(out), ErrRoute)
	}
	mtu := strconv.Itoa(t.emulator.cfg.MTU)
	gateway, err := openTUN("", t.Bridge)
	if err != nil {
		return err
	}
	t.emulator.add(0, gateway)
	steps := [][]string{
		{"ip", "addr", "add", t.Gateway + "/24", "dev", t.Bridge},
		{"ip", "link", "set", "dev", t.Bridge, "mtu", mtu, "up"},
	}
	for i := 1; i <= hosts; i++ {
		h := Host{
			Index:     i,
			Namespace: fmt.Sprintf("%s-%d", t.Run, i),
			Addr:      fmt.Sprintf("198.18.%d.%d", third, i),
			Device:    fmt.Sprintf("%st%d", t.Run, i),
		}
		if _, err := run("ip", "netns", "add", h.Namespace); err != nil {
			return err
		}
		t.namespaces = append(t.namespaces, h.Namespace)
		t.Hosts = append(t.Hosts, h)
		file, err := openTUN(h.Namespace, h.Device)
		if err != nil {
			return err
		}
		t.emulator.add(i, file)
		in := []string{"ip", "netns", "exec", h.Namespace}
		steps = append(steps,
			append(in, "ip", "link", "set", "lo", "up"),
			append(in, "ip", "addr", "add", h.Addr+"/24", "dev", h.Device),
			append(in, "ip", "link", "set", "dev", h.Device, "mtu", mtu, "up"),
		)
	}
	for _, s := range steps {
		if _, err := run(s...); err != nil {
			return err
		}
	}
	if err := t.checkRoutes(); err != nil {
		return err
	}
	t.emulator.run()
	return nil
}
