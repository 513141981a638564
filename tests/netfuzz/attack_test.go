package netfuzz

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// kind is one attacker of the six the fuzzer runs side by side.
type kind int

const (
	kindRandomBytes  kind = iota // bytes with no structure, before or after a handshake
	kindRandomBodies             // valid headers of every type over random bodies
	kindMutated                  // well-formed frames damaged by one mutation each
	kindForgedHello              // peer Hellos with forged proofs: none may be welcomed
	kindPeer                     // an authenticated peer (it knows the secret) sending hostile messages
	kindClient                   // a client sending hostile Requests and Reads
	kindCount
)

var kindNames = [kindCount]string{"random-bytes", "random-bodies", "mutated-frames", "forged-hello",
	"authenticated-peer", "client-session"}

func (k kind) String() string { return kindNames[k] }

// kindWeights: how often each attacker is picked for a new connection (percent). The
// authenticated peer is further limited by its gate (peerGate).
var kindWeights = [kindCount]int{12, 14, 20, 10, 14, 30}

// Timing of one connection.
const (
	dialTimeout      = time.Second
	handshakeTimeout = 5 * time.Second // the replicas' default netio HandshakeTimeout
	writeTimeout     = 2 * time.Second // a replica that stops reading us ends the connection
	// closeTimeout: how long a replica may take to close a connection after a frame it must
	// refuse at its header (docs/PROTOCOL.md §1). Generous: the machine is loaded.
	closeTimeout = 5 * time.Second
	// holdMax: how long a silent or partial connection is held open.
	holdMax = 2 * time.Second
	// answerBytesMax bounds one frame the fuzzer reads back (a ReadReply of the largest payload).
	answerBytesMax = codec.DefaultPayloadBytesMax + 1024
)

// framesPerConnectionMax bounds the frames one connection sends.
const framesPerConnectionMax = 64

// kindStats are one attacker's figures.
type kindStats struct {
	connections    atomic.Uint64 // accepted by TCP
	dialFailures   atomic.Uint64
	frames         atomic.Uint64 // frames written (for random bytes: chunks)
	bytes          atomic.Uint64
	handshakes     atomic.Uint64 // handshakes completed (client, or authenticated peer)
	answers        atomic.Uint64 // frames the replica sent after its Challenge
	closedByServer atomic.Uint64 // connections the replica closed before the fuzzer did
}

// fuzzConfig is what the attackers need to know of the cluster.
type fuzzConfig struct {
	seed      uint64
	clusterID uint64
	secret    []byte
	addrs     []string // addrs[i] is replica i+1's listen address
	// connections is the number of attacker goroutines, each holding one connection at a time.
	connections int
	// frameRate bounds the frames all attackers together send per second.
	frameRate int
	// peerSessionInterval: the least time between two authenticated sessions to one replica.
	// Each session displaces the real peer's inbound connection (netio keeps one per peer),
	// so this bounds the link churn the fuzzer causes, not what it tests.
	peerSessionInterval time.Duration
	// forge lets the authenticated peer send well-formed messages a real peer could send (see
	// doc.go): only crashes and hangs are then asserted.
	forge bool
	// writerClientID is the well-behaved client's id, which attackers never claim.
	writerClientID uint64
	acknowledged   func() uint64
	// kinds: the attackers that run.
	kinds [kindCount]bool
}

// fuzzer runs the attackers and collects their figures and the violations they observe.
type fuzzer struct {
	cfg       fuzzConfig
	stats     [kindCount]kindStats
	mutations [mutationCount]atomic.Uint64
	forged    [forgeryCount]atomic.Uint64 // forged Hellos sent, by forgery
	peerMix   [peerClassCount]atomic.Uint64
	statuses  [statusesCounted]atomic.Uint64 // answers to the attackers' requests, by codec.Status
	redirects atomic.Uint64
	pace      *pacer
	gates     []peerGate
	recent    []*frameLog // per replica: the last frames sent to it
	// slots: per replica, the slot it last said it applied up to (the monitor sets them).
	slots []atomic.Uint64

	mu         sync.Mutex
	violations []string
}

func newFuzzer(cfg fuzzConfig) *fuzzer {
	f := &fuzzer{cfg: cfg, pace: newPacer(cfg.frameRate), gates: make([]peerGate, len(cfg.addrs)),
		slots: make([]atomic.Uint64, len(cfg.addrs))}
	for range cfg.addrs {
		f.recent = append(f.recent, newFrameLog(recentFramesMax))
	}
	return f
}

// violation records something a correct replica never does (welcoming a forged Hello,
// sending an undecodable frame, keeping a connection open after a bad header).
func (f *fuzzer) violation(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.violations) < violationsMax {
		f.violations = append(f.violations, fmt.Sprintf(format, args...))
	}
}

const violationsMax = 100

// statusesCounted: codec's statuses 0..8 and one slot for any later one.
const statusesCounted = 10

func (f *fuzzer) takeViolations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.violations...)
}

// run starts cfg.connections attackers and returns when ctx ends and every one has stopped.
func (f *fuzzer) run(ctx context.Context) {
	var wg sync.WaitGroup
	for worker := range f.cfg.connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.worker(ctx, uint64(worker))
		}()
	}
	wg.Wait()
}

// worker attacks one connection after another. Its generator is seeded from the run's seed
// and the worker's index, so each worker's byte stream is the same on a replay (the
// interleaving of workers and the replicas' answers are not).
func (f *fuzzer) worker(ctx context.Context, worker uint64) {
	g := newGenerator(f.cfg.seed, worker, f.cfg.clusterID, uint32(len(f.cfg.addrs)), f.cfg.acknowledged)
	for ctx.Err() == nil {
		k := f.pick(g)
		target := g.rng.IntN(len(f.cfg.addrs))
		if k == kindPeer && !f.gates[target].enter(f.cfg.peerSessionInterval) {
			if k = f.fallback(); k == kindPeer {
				time.Sleep(f.cfg.peerSessionInterval / 4)
				continue
			}
		}
		f.attack(ctx, g, k, target)
		if k == kindPeer {
			f.gates[target].leave()
		}
	}
}

// pick draws an attacker among those that run, by kindWeights. The fallback for a gated
// authenticated peer is the client session, or the first attacker that runs.
func (f *fuzzer) pick(g *generator) kind {
	total := 0
	for k := range kindCount {
		if f.cfg.kinds[k] {
			total += kindWeights[k]
		}
	}
	n := g.rng.IntN(total)
	for k := range kindCount {
		if !f.cfg.kinds[k] {
			continue
		}
		if n < kindWeights[k] {
			return k
		}
		n -= kindWeights[k]
	}
	panic("netfuzz: pick: weights do not add up")
}

// fallback is the attacker run instead of a gated authenticated peer.
func (f *fuzzer) fallback() kind {
	if f.cfg.kinds[kindClient] {
		return kindClient
	}
	for k := range kindCount {
		if f.cfg.kinds[k] && k != kindPeer {
			return k
		}
	}
	return kindPeer // the only one: wait at its gate
}

func (f *fuzzer) attack(ctx context.Context, g *generator, k kind, target int) {
	g.slotHint = f.slots[target].Load
	c, err := f.dial(ctx, g, k, target)
	if err != nil {
		f.stats[k].dialFailures.Add(1)
		select { // a replica that refuses connections: do not spin
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
		return
	}
	defer c.close()
	switch k {
	case kindRandomBytes:
		c.randomBytes()
	case kindRandomBodies:
		c.randomBodies()
	case kindMutated:
		c.mutated()
	case kindForgedHello:
		c.forgedHello()
	case kindPeer:
		c.peerSession()
	case kindClient:
		c.clientSession()
	}
}

// peerGate lets one authenticated session at a time reach a replica, at most one per interval.
type peerGate struct {
	mu     sync.Mutex
	busy   bool
	lastAt time.Time
}

func (p *peerGate) enter(interval time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy || time.Since(p.lastAt) < interval {
		return false
	}
	p.busy = true
	return true
}

func (p *peerGate) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy, p.lastAt = false, time.Now()
}

// pacer spaces frames evenly so that all attackers together send at most rate per second.
type pacer struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

func newPacer(rate int) *pacer {
	return &pacer{interval: time.Second / time.Duration(max(rate, 1))}
}

func (p *pacer) wait(ctx context.Context) error { return p.waitN(ctx, 1) }

// waitN reserves n frames' worth of time and waits until the reservation starts.
func (p *pacer) waitN(ctx context.Context, n int) error {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(n) * p.interval)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
	return nil
}

// attackConn is one attacker's connection to one replica.
type attackConn struct {
	f      *fuzzer
	ctx    context.Context
	g      *generator
	kind   kind
	target int // index into cfg.addrs: replica target+1
	conn   net.Conn
	reader *bufio.Reader
	stage  string // what the replica should take the connection for: "handshake", "client", "peer"
	// clientID is the id of the client Hello (0 before one): requests carry it, but for a few.
	clientID uint64

	closing  atomic.Bool   // the fuzzer is closing it
	drained  chan struct{} // closed when the drain goroutine ended
	draining bool
}

func (f *fuzzer) dial(ctx context.Context, g *generator, k kind, target int) (*attackConn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", f.cfg.addrs[target])
	if err != nil {
		return nil, err
	}
	f.stats[k].connections.Add(1)
	return &attackConn{f: f, ctx: ctx, g: g, kind: k, target: target, conn: conn,
		reader: bufio.NewReaderSize(conn, 4096), stage: "handshake", drained: make(chan struct{})}, nil
}

func (c *attackConn) stats() *kindStats { return &c.f.stats[c.kind] }

func (c *attackConn) close() {
	c.closing.Store(true)
	_ = c.conn.Close()
	if c.draining {
		<-c.drained
	}
}

// write sends one frame (or chunk), paced. An error means the replica closed the connection
// or stopped reading it; the attack then ends.
func (c *attackConn) write(b []byte, what string) error {
	if err := c.f.pace.wait(c.ctx); err != nil {
		return err
	}
	c.f.recent[c.target].add(c.kind, c.stage, what, b)
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := c.conn.Write(b)
	c.stats().bytes.Add(uint64(n))
	if err != nil {
		return err
	}
	c.stats().frames.Add(1)
	return nil
}

// writeBurst sends frames in one write (the replica takes them in one read), paced as
// len(frames) frames.
func (c *attackConn) writeBurst(frames [][]byte, whats []string) error {
	if err := c.f.pace.waitN(c.ctx, len(frames)); err != nil {
		return err
	}
	var b []byte
	for i, frame := range frames {
		c.f.recent[c.target].add(c.kind, c.stage, whats[i], frame)
		b = append(b, frame...)
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := c.conn.Write(b)
	c.stats().bytes.Add(uint64(n))
	if err != nil {
		return err
	}
	c.stats().frames.Add(uint64(len(frames)))
	return nil
}

// readFrame reads one whole frame synchronously (handshake only).
func (c *attackConn) readFrame() (codec.MsgType, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer c.conn.SetReadDeadline(time.Time{})
	head, err := c.reader.Peek(codec.FrameHeaderSize)
	if err != nil {
		return 0, nil, err
	}
	typ, n, err := codec.PeekFrame(head, nil)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		return typ, nil, fmt.Errorf("replica %d sent a bad header % x: %w", c.target+1, head, err)
	}
	if n > answerBytesMax {
		return typ, nil, fmt.Errorf("replica %d sent a %s frame of %d bytes", c.target+1, typ, n)
	}
	frame := make([]byte, n)
	_, err = io.ReadFull(c.reader, frame)
	return typ, frame, err
}

// challenge reads the replica's Challenge. A replica that sends anything else, or a Challenge
// that does not decode, is a violation; one that sends nothing in time is only counted.
func (c *attackConn) challenge() (codec.Challenge, error) {
	var ch codec.Challenge
	typ, frame, err := c.readFrame()
	if err != nil {
		return ch, err
	}
	if typ != codec.TypeChallenge {
		c.f.violation("replica %d opened a connection with a %s frame, not a Challenge", c.target+1, typ)
		return ch, errors.New("no Challenge")
	}
	if err := codec.DecodeChallenge(frame, &ch, nil); err != nil {
		c.f.violation("replica %d sent a Challenge that does not decode: %v", c.target+1, err)
		return ch, err
	}
	return ch, nil
}

// clientHello completes a client handshake with a random client id (never the writer's).
func (c *attackConn) clientHello() error {
	if _, err := c.challenge(); err != nil {
		return err
	}
	id := c.g.rng.Uint64()
	if id == c.f.cfg.writerClientID {
		id++
	}
	hello := codec.Hello{Version: uint16(1 + c.g.rng.IntN(codec.HandshakeVersion)), Role: codec.RoleClient,
		ClusterID: c.f.cfg.clusterID, ClientID: id, Features: c.g.u32()}
	if err := c.write(codec.AppendHello(nil, &hello), "client Hello"); err != nil {
		return err
	}
	typ, frame, err := c.readFrame()
	if err != nil {
		return err // refused (ClientConnectionsMax) or closed
	}
	var w codec.Welcome
	if typ != codec.TypeWelcome || codec.DecodeWelcome(frame, &w, nil) != nil {
		c.f.violation("replica %d answered a client Hello with a %s frame that is no Welcome", c.target+1, typ)
		return errors.New("no Welcome")
	}
	c.stats().handshakes.Add(1)
	c.stage, c.clientID = "client", id
	return nil
}

// drain reads and checks whatever the replica sends from now on, in the background: every
// frame must decode as what a replica may send on this connection. When the replica closes
// first it is counted.
func (c *attackConn) drain() {
	c.draining = true
	go func() {
		defer close(c.drained)
		for {
			typ, frame, err := c.readAnswer()
			if err != nil {
				if !c.closing.Load() {
					c.stats().closedByServer.Add(1)
				}
				return
			}
			c.stats().answers.Add(1)
			if typ == codec.TypeChallenge && c.stage == "handshake" {
				var ch codec.Challenge
				err = codec.DecodeChallenge(frame, &ch, nil) // the attacker did not wait for it
			} else {
				err = c.f.countAnswer(typ, frame)
			}
			if err != nil {
				c.f.violation("replica %d sent an undecodable %s frame on a %s connection: %v", c.target+1, typ, c.stage, err)
			}
		}
	}()
}

// readAnswer reads one frame with no deadline (close ends it).
func (c *attackConn) readAnswer() (codec.MsgType, []byte, error) {
	head, err := c.reader.Peek(codec.FrameHeaderSize)
	if err != nil {
		return 0, nil, err
	}
	typ, n, err := codec.PeekFrame(head, nil)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		if !c.closing.Load() {
			c.f.violation("replica %d sent a bad frame header % x: %v", c.target+1, head, err)
		}
		return typ, nil, err
	}
	if n > answerBytesMax {
		c.f.violation("replica %d sent a %s frame of %d bytes to a client", c.target+1, typ, n)
		return typ, nil, errors.New("answer too large")
	}
	frame := make([]byte, n)
	_, err = io.ReadFull(c.reader, frame)
	return typ, frame, err
}

// countAnswer decodes a frame a replica sent after its Challenge and counts the answers to
// requests by status.
func (f *fuzzer) countAnswer(typ codec.MsgType, frame []byte) error {
	var r codec.Response
	var err error
	switch typ {
	case codec.TypeResponse:
		err = codec.DecodeResponse(frame, &r, nil)
	case codec.TypeReadReply:
		err = codec.DecodeReadReply(frame, &r, nil)
	case codec.TypeRedirect:
		f.redirects.Add(1)
		return decodeAnswer(typ, frame)
	default:
		return decodeAnswer(typ, frame)
	}
	if err == nil {
		f.statuses[min(int(r.Status), len(f.statuses)-1)].Add(1)
	}
	return err
}

// decodeAnswer decodes a frame a replica sent after its Challenge.
func decodeAnswer(typ codec.MsgType, frame []byte) error {
	switch typ {
	case codec.TypeWelcome:
		var w codec.Welcome
		return codec.DecodeWelcome(frame, &w, nil)
	case codec.TypeResponse:
		var r codec.Response
		return codec.DecodeResponse(frame, &r, nil)
	case codec.TypeReadReply:
		var r codec.Response
		return codec.DecodeReadReply(frame, &r, nil)
	case codec.TypeRedirect:
		var r codec.Redirect
		return codec.DecodeRedirect(frame, &r, nil)
	}
	return fmt.Errorf("a replica never sends %s here", typ)
}

// expectClose checks that the replica closes the connection after a frame it must refuse
// (mustClose). The drain goroutine must be running.
func (c *attackConn) expectClose(what string) {
	select {
	case <-c.drained:
	case <-c.ctx.Done():
	case <-time.After(closeTimeout):
		c.f.violation("replica %d kept a %s connection open %v after %s", c.target+1, c.stage, closeTimeout, what)
	}
}

// mustClose reports whether a replica must close the connection once it has frame, given the
// connection's stage: a header codec refuses (checked before the body is awaited), or a whole
// frame of a type the stage never takes. (A frame of such a type whose body has not all
// arrived is awaited, bounded by the replica's FrameTimeout: it is not checked here.)
func mustClose(frame []byte, stage string) bool {
	if len(frame) < codec.FrameHeaderSize {
		return false
	}
	typ, n, err := codec.PeekFrame(frame, nil)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		return true
	}
	if n > len(frame) {
		return false
	}
	switch stage {
	case "handshake":
		return typ != codec.TypeHello
	case "client":
		return typ != codec.TypeRequest && typ != codec.TypeRead
	case "peer":
		return !typ.IsPeer()
	}
	return false
}

// hold keeps the connection open, silent, for a random while (slowloris-like).
func (c *attackConn) hold() {
	select {
	case <-c.ctx.Done():
	case <-c.drained:
	case <-time.After(time.Duration(c.g.rng.Int64N(int64(holdMax)))):
	}
}

// sendChecked writes frame and, when it is the first frame of its stage and the replica must
// close the connection on it (mustClose), checks that it does. It reports whether to go on.
func (c *attackConn) sendChecked(frame []byte, what string, first bool) bool {
	if err := c.write(frame, what); err != nil {
		return false
	}
	if first && c.draining && mustClose(frame, c.stage) {
		c.expectClose(what)
		return false
	}
	return true
}

// frameLog keeps the last frames sent to one replica, for the report of a crash.
type frameLog struct {
	mu      sync.Mutex
	entries []frameRecord
	next    int
}

type frameRecord struct {
	at    time.Time
	kind  kind
	stage string
	what  string
	bytes []byte
}

// Bounds of the crash report: frames kept per replica, bytes kept per frame.
const (
	recentFramesMax = 256
	recentBytesMax  = 2048
)

func newFrameLog(n int) *frameLog { return &frameLog{entries: make([]frameRecord, 0, n)} }

func (l *frameLog) add(k kind, stage, what string, b []byte) {
	r := frameRecord{at: time.Now(), kind: k, stage: stage, what: what, bytes: append([]byte(nil), b[:min(len(b), recentBytesMax)]...)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) < cap(l.entries) {
		l.entries = append(l.entries, r)
		return
	}
	l.entries[l.next] = r
	l.next = (l.next + 1) % len(l.entries)
}

// dump returns the frames oldest first, one line each (hex truncated to recentBytesMax).
func (l *frameLog) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []byte
	for i := range l.entries {
		r := l.entries[(l.next+i)%len(l.entries)]
		out = fmt.Appendf(out, "%s %-18s %-9s %-40s %x\n", r.at.Format("15:04:05.000000"), r.kind, r.stage, r.what, r.bytes)
	}
	return string(out)
}
