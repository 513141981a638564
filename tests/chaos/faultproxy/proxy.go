package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Errors.
var (
	// ErrClosed: the proxy was closed.
	ErrClosed = errors.New("faultproxy: closed")
	// ErrInvalidConfig wraps every Config or Faults error; the message names the field.
	ErrInvalidConfig = errors.New("faultproxy: invalid config")
)

// Config of one proxy.
type Config struct {
	ListenAddr string // default 127.0.0.1:0
	Target     string // where connections are forwarded
	// DialTimeout bounds the dial to Target (default 2 s).
	DialTimeout time.Duration
	// ChunkBytesMax is the read size (default 32 KiB).
	ChunkBytesMax int
	// ChunksQueuedMax bounds the chunks waiting out a delay per direction (default 1024).
	ChunksQueuedMax int
	// ConnectionsMax bounds concurrent connections; more are accepted and closed (default 64).
	ConnectionsMax int
	// Seed seeds the loss and jitter draws.
	Seed uint64
}

func (c *Config) setDefaults() error {
	if c.Target == "" {
		return fmt.Errorf("faultproxy: Config.Target is empty: %w", ErrInvalidConfig)
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:0"
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.ChunkBytesMax <= 0 {
		c.ChunkBytesMax = 32 << 10
	}
	if c.ChunksQueuedMax <= 0 {
		c.ChunksQueuedMax = 1024
	}
	if c.ConnectionsMax <= 0 {
		c.ConnectionsMax = 64
	}
	return nil
}

// Faults are the faults a proxy injects now. The zero value forwards faithfully.
type Faults struct {
	Cut             bool          // reset every connection and refuse new ones
	Blackhole       bool          // discard forward bytes silently; reset the connection when lifted
	KillProbability float64       // per forwarded chunk: reset the connection instead, 0..1
	Delay           time.Duration // forward direction, added to every chunk
	Jitter          time.Duration // uniform in [-Jitter, +Jitter], never below zero delay
}

// Validate names the first field out of range.
func (f Faults) Validate() error {
	switch {
	case f.KillProbability < 0 || f.KillProbability > 1:
		return fmt.Errorf("faultproxy: Faults.KillProbability = %v: want 0..1: %w", f.KillProbability, ErrInvalidConfig)
	case f.Delay < 0 || f.Delay > time.Minute:
		return fmt.Errorf("faultproxy: Faults.Delay = %v: want 0..1m: %w", f.Delay, ErrInvalidConfig)
	case f.Jitter < 0 || f.Jitter > time.Minute:
		return fmt.Errorf("faultproxy: Faults.Jitter = %v: want 0..1m: %w", f.Jitter, ErrInvalidConfig)
	}
	return nil
}

func (f Faults) String() string {
	switch {
	case f.Cut:
		return "cut"
	case f.Blackhole:
		return "blackhole"
	}
	s := "ok"
	if f.KillProbability > 0 {
		s = fmt.Sprintf("loss %.0f%%", f.KillProbability*100)
	}
	if f.Delay > 0 || f.Jitter > 0 {
		s += fmt.Sprintf(" delay %v±%v", f.Delay, f.Jitter)
	}
	return s
}

// Stats counts what a proxy did.
type Stats struct {
	Accepted      uint64 // connections forwarded
	Refused       uint64 // connections closed at once (cut, over ConnectionsMax, dial failed)
	Killed        uint64 // connections reset by a fault
	BytesForward  uint64 // delivered to the target
	BytesBackward uint64 // delivered back to the connector
	BytesDropped  uint64 // discarded by a black hole or with a killed chunk
}

// Proxy forwards TCP connections from its listen address to Config.Target, injecting Faults.
type Proxy struct {
	cfg      Config
	listener net.Listener

	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
	links  map[*link]struct{}
	closed bool

	wg sync.WaitGroup

	accepted, refused, killed   atomic.Uint64
	bytesForward, bytesBackward atomic.Uint64
	bytesDropped                atomic.Uint64
}

// New listens and starts forwarding.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen %s: %w", cfg.ListenAddr, err)
	}
	p := &Proxy{cfg: cfg, listener: l, links: make(map[*link]struct{}),
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x70726f7879))}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Target is where the proxy forwards.
func (p *Proxy) Target() string { return p.cfg.Target }

// Faults returns the faults in force.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// SetFaults replaces the faults in force. Cutting resets every open connection; lifting a
// black hole resets every connection that lost bytes to it.
func (p *Proxy) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.faults = f
	var reset []*link
	for l := range p.links {
		if f.Cut || (!f.Blackhole && l.tainted.Load()) {
			reset = append(reset, l)
		}
	}
	p.mu.Unlock()
	for _, l := range reset {
		p.kill(l)
	}
	return nil
}

// Heal removes every fault.
func (p *Proxy) Heal() { _ = p.SetFaults(Faults{}) }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted: p.accepted.Load(), Refused: p.refused.Load(), Killed: p.killed.Load(),
		BytesForward: p.bytesForward.Load(), BytesBackward: p.bytesBackward.Load(),
		BytesDropped: p.bytesDropped.Load(),
	}
}

// Close stops listening, resets every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.listener.Close()
	for _, l := range links {
		l.close(true)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		refuse := p.closed || p.faults.Cut || len(p.links) >= p.cfg.ConnectionsMax
		p.mu.Unlock()
		if refuse {
			p.refused.Add(1)
			resetConn(conn)
			continue
		}
		p.wg.Add(1)
		go p.serve(conn)
	}
}

// link is one proxied connection: the connector's side and the target's side.
type link struct {
	client, server net.Conn
	tainted        atomic.Bool // lost bytes to a black hole: must not be resumed
	once           sync.Once
}

func (l *link) close(reset bool) {
	l.once.Do(func() {
		if reset {
			resetConn(l.client)
			if l.server != nil {
				resetConn(l.server)
			}
			return
		}
		l.client.Close()
		if l.server != nil {
			l.server.Close()
		}
	})
}

// resetConn closes with SO_LINGER 0 so the peer sees a reset, not an orderly end of stream.
func resetConn(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	c.Close()
}

func (p *Proxy) kill(l *link) {
	p.killed.Add(1)
	l.close(true)
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.cfg.Target, p.cfg.DialTimeout)
	if err != nil {
		p.refused.Add(1)
		resetConn(client)
		return
	}
	l := &link{client: client, server: server}
	p.mu.Lock()
	if p.closed || p.faults.Cut {
		p.mu.Unlock()
		p.refused.Add(1)
		l.close(true)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	p.accepted.Add(1)

	done := make(chan struct{}, 2)
	go func() { p.pump(l, client, server, true); done <- struct{}{} }()
	go func() { p.pump(l, server, client, false); done <- struct{}{} }()
	<-done
	l.close(false)
	<-done
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst in one direction. Forward chunks pass through the faults; a writer
// goroutine delivers them at their due time, in order.
func (p *Proxy) pump(l *link, src, dst net.Conn, forward bool) {
	queue := make(chan chunk, p.cfg.ChunksQueuedMax)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for c := range queue {
			if wait := time.Until(c.due); wait > 0 {
				time.Sleep(wait)
			}
			if _, err := dst.Write(c.data); err != nil {
				l.close(false)
				for range queue { // drain so the reader never blocks on a dead writer
				}
				return
			}
			if forward {
				p.bytesForward.Add(uint64(len(c.data)))
			} else {
				p.bytesBackward.Add(uint64(len(c.data)))
			}
		}
	}()
	defer func() {
		close(queue)
		<-writerDone
		if tcp, ok := dst.(*net.TCPConn); ok {
			_ = tcp.CloseWrite() // pass the end of stream on
		}
	}()

	var lastDue time.Time
	buf := make([]byte, p.cfg.ChunkBytesMax)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			due, deliver, kill := p.decide(l, forward, n)
			if kill {
				p.kill(l)
				return
			}
			if deliver {
				if due.Before(lastDue) {
					due = lastDue
				}
				lastDue = due
				queue <- chunk{data: append([]byte(nil), buf[:n]...), due: due}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.close(false)
			}
			return
		}
	}
}

// decide applies the faults in force to one chunk of n bytes.
func (p *Proxy) decide(l *link, forward bool, n int) (due time.Time, deliver, kill bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.faults
	now := time.Now()
	if f.Cut {
		p.bytesDropped.Add(uint64(n))
		return now, false, true
	}
	if !forward {
		return now, true, false
	}
	if f.Blackhole {
		l.tainted.Store(true)
		p.bytesDropped.Add(uint64(n))
		return now, false, false
	}
	if l.tainted.Load() {
		p.bytesDropped.Add(uint64(n))
		return now, false, true
	}
	if f.KillProbability > 0 && p.rng.Float64() < f.KillProbability {
		p.bytesDropped.Add(uint64(n))
		return now, false, true
	}
	delay := f.Delay
	if f.Jitter > 0 {
		delay += time.Duration(p.rng.Int64N(int64(2*f.Jitter)+1)) - f.Jitter
	}
	if delay < 0 {
		delay = 0
	}
	return now.Add(delay), true, false
}
