package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Errors returned by the Client. Each is a sentinel; compare with errors.Is.
var (
	// ErrTimeout: the request's deadline passed before an answer. Ambiguous: the command may
	// or may not have been applied.
	ErrTimeout = errors.New("client: request timed out")
	// ErrClosed: the Client is closed. Commands outstanding at Close may or may not have been
	// applied.
	ErrClosed = errors.New("client: closed")
	// ErrRedirectsExhausted: more than Config.RedirectsMax redirects to a new leader for one
	// request. Ambiguous like ErrTimeout.
	ErrRedirectsExhausted = errors.New("client: too many redirects")
	// ErrRejected: the cluster refused the command as it is; it was not applied. The error is
	// a *RejectedError carrying the Status.
	ErrRejected = errors.New("client: request rejected")
	// ErrInvalidConfig wraps every configuration error; the message names the field.
	ErrInvalidConfig = errors.New("client: invalid config")
	// ErrHandshake: a replica refused or broke the connection handshake (wrong cluster id,
	// not an mpaxos replica, protocol version).
	ErrHandshake = errors.New("client: handshake failed")
	// ErrTooLarge: the payload exceeds Config.Limits.PayloadBytesMax; nothing was sent.
	ErrTooLarge = errors.New("client: payload too large")
	// ErrProtocol: a replica answered with something that does not fit the request (a
	// Response to a read); the request's outcome is unknown.
	ErrProtocol = errors.New("client: protocol error")
)

// RejectedError is the error of a command the cluster refused (StatusTooLarge,
// StatusInvalid, StatusAbandoned; for a read also StatusCompacted). errors.Is(err,
// ErrRejected) holds.
type RejectedError struct{ Status codec.Status }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("client: request rejected with status %d", e.Status)
}

// Unwrap makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Unwrap() error { return ErrRejected }

// Config configures a Client. DefaultConfig gives sane values; Dial validates.
type Config struct {
	// Endpoints: replica addresses (host:port) to connect to, tried in turn.
	Endpoints []string
	// ClusterID must match the cluster's, or the handshake fails.
	ClusterID uint64
	// ClientID identifies this client for exactly-once application; 0 picks a random one. Two
	// live clients must never share one.
	ClientID uint64
	// InflightMax bounds the requests outstanding at once, and how far the newest seq may run
	// ahead of the oldest one still outstanding (the replicas refuse a seq SessionSeqsMax or
	// more above the client's seq floor); AppendAsync blocks beyond it. At most
	// InflightMaxLimit.
	InflightMax int
	// RequestTimeout bounds each request from submission to answer, retries included.
	RequestTimeout time.Duration
	// DialTimeout bounds one connection attempt, handshake included.
	DialTimeout time.Duration
	// RedirectsMax bounds, per request, the redirects that name a new leader.
	RedirectsMax int
	// RetryBackoff is the pause before resending a request the cluster could not take yet
	// (unknown leader, overload, leadership change) and between reconnect attempts.
	RetryBackoff time.Duration
	// WriteBytesMax bounds one batched write of request frames.
	WriteBytesMax int
	// Limits bound the frames the client decodes and the payloads it sends.
	Limits codec.Limits
}

// InflightMaxLimit is the largest Config.InflightMax: the replicas' default per-client bound
// on seqs above the floor (pipeline.Config.SessionSeqsMax, core.DefaultSessionSeqsMax). A
// cluster configured with a lower SessionSeqsMax needs InflightMax at most that.
const InflightMaxLimit = 4096

// Defaults of Config.
const (
	DefaultInflightMax    = 1024
	DefaultRequestTimeout = 10 * time.Second
	DefaultDialTimeout    = 2 * time.Second
	DefaultRedirectsMax   = 8
	DefaultRetryBackoff   = 20 * time.Millisecond
	DefaultWriteBytesMax  = 1 << 20
)

// DefaultConfig returns a Config with every limit at its default; the caller sets
// Endpoints and ClusterID.
func DefaultConfig() Config {
	return Config{
		InflightMax:    DefaultInflightMax,
		RequestTimeout: DefaultRequestTimeout,
		DialTimeout:    DefaultDialTimeout,
		RedirectsMax:   DefaultRedirectsMax,
		RetryBackoff:   DefaultRetryBackoff,
		WriteBytesMax:  DefaultWriteBytesMax,
		Limits:         codec.DefaultLimits(),
	}
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("client: Config.%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidConfig)
}

// Validate reports the first field out of range, wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return invalid("Endpoints", "empty: need at least one replica address")
	}
	for _, e := range c.Endpoints {
		if _, _, err := net.SplitHostPort(e); err != nil {
			return invalid("Endpoints", "%q is not host:port: %v", e, err)
		}
	}
	switch {
	case c.InflightMax <= 0:
		return invalid("InflightMax", "%d: must be positive", c.InflightMax)
	case c.InflightMax > InflightMaxLimit:
		return invalid("InflightMax", "%d: must be at most %d (the replicas' SessionSeqsMax)", c.InflightMax, InflightMaxLimit)
	case c.RequestTimeout <= 0:
		return invalid("RequestTimeout", "%v: must be positive", c.RequestTimeout)
	case c.DialTimeout <= 0:
		return invalid("DialTimeout", "%v: must be positive", c.DialTimeout)
	case c.RedirectsMax < 0:
		return invalid("RedirectsMax", "%d: must not be negative", c.RedirectsMax)
	case c.RetryBackoff <= 0:
		return invalid("RetryBackoff", "%v: must be positive", c.RetryBackoff)
	case c.WriteBytesMax < 4096:
		return invalid("WriteBytesMax", "%d: must be at least 4096", c.WriteBytesMax)
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("client: Config.Limits: %w: %w", err, ErrInvalidConfig)
	}
	return nil
}

// Result is where a command was chosen: (Slot, Index) is its position in the total order;
// Offset is its dense position among applied commands (0, 1, 2, ... without gaps; see
// codec.Response). A resent command gets the position of its one application.
type Result struct {
	Slot   uint64
	Index  uint32
	Offset uint64
}

// ReadResult is what a read saw. Length is the log's length (commands applied) at the read's
// point in the order — for ReadAt answered from a replica's memory, a lower bound of it.
// Found says whether the command asked for exists (for ReadLatest: whether the log is
// non-empty); when it does, (Slot, Index, Offset) is its position and Payload its payload (a
// copy owned by the caller).
type ReadResult struct {
	Length  uint64
	Found   bool
	Slot    uint64
	Index   uint32
	Offset  uint64
	Payload []byte
}

// call is one outstanding command or read.
type call struct {
	seq       uint64
	payload   []byte // owned copy
	done      func(Result, error)
	read      codec.ReadMode // ReadNone for an append
	offset    uint64         // ReadAt: the offset asked for
	readDone  func(ReadResult, error)
	deadline  time.Time
	redirects int
	// lastRedirect is the leader address the last counted redirect named.
	lastRedirect string
	queued       bool      // in Client.sendq
	retryAt      time.Time // non-zero: in Client.delayed until then
}

type completion struct {
	call   *call
	result Result
	read   ReadResult
	err    error
}

// Client is a connection to a cluster; see the package doc. Safe for concurrent use.
type Client struct {
	cfg      Config
	clientID uint64
	sem      chan struct{} // one token per outstanding call
	spanFree chan struct{} // the seq floor rose: a submitter waiting for seq room may go on
	wake     chan struct{} // the writer has work
	stop     chan struct{}
	wg       sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	nextSeq    uint64
	seqFloor   uint64 // the lowest outstanding seq, nextSeq if none: every Request's SeqFloor
	calls      callTable
	sendq      []*call
	delayed    []*call
	conn       *conn  // nil while reconnecting
	target     string // next address to dial; "" = rotate through Endpoints
	endpoint   int
	lastRotate time.Time
}

// conn is one established connection.
type conn struct {
	addr string
	nc   net.Conn
	br   *bufio.Reader
	dead chan struct{}
	once sync.Once
}

func (cn *conn) close() {
	cn.once.Do(func() {
		close(cn.dead)
		_ = cn.nc.Close()
	})
}

// Dial connects to the first reachable endpoint and returns a running Client.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		clientID: cfg.ClientID,
		sem:      make(chan struct{}, cfg.InflightMax),
		spanFree: make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		nextSeq:  1,
		seqFloor: 1,
		calls:    newCallTable(cfg.InflightMax),
	}
	for c.clientID == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.clientID = binary.LittleEndian.Uint64(b[:])
	}
	var errs []error
	for i, addr := range cfg.Endpoints {
		cn, err := c.connect(ctx, addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.endpoint = i
		c.install(cn)
		c.wg.Add(1)
		go c.run(cn)
		return c, nil
	}
	return nil, fmt.Errorf("client: no endpoint reachable: %w", errors.Join(errs...))
}

// ID is the client id every command carries.
func (c *Client) ID() uint64 { return c.clientID }

// connect dials addr and runs the handshake.
func (c *Client) connect(ctx context.Context, addr string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	cn := &conn{addr: addr, nc: nc, br: bufio.NewReaderSize(nc, 64<<10), dead: make(chan struct{})}
	if err := c.handshake(cn); err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return cn, nil
}

func (c *Client) handshake(cn *conn) error {
	var buf []byte
	frame, err := readFrame(cn.br, &buf, &c.cfg.Limits)
	if err != nil {
		return fmt.Errorf("client: %s: reading Challenge: %w: %w", cn.addr, err, ErrHandshake)
	}
	var ch codec.Challenge
	if err := codec.DecodeChallenge(frame, &ch, &c.cfg.Limits); err != nil {
		return fmt.Errorf("client: %s: %w: %w", cn.addr, err, ErrHandshake)
	}
	if ch.ClusterID != c.cfg.ClusterID {
		return fmt.Errorf("client: %s: cluster id %d, want %d: %w", cn.addr, ch.ClusterID, c.cfg.ClusterID, ErrHandshake)
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: c.cfg.ClusterID, ClientID: c.clientID}
	_, _ = rand.Read(hello.Nonce[:])
	if _, err := cn.nc.Write(codec.AppendHello(nil, &hello)); err != nil {
		return fmt.Errorf("client: %s: writing Hello: %w: %w", cn.addr, err, ErrHandshake)
	}
	frame, err = readFrame(cn.br, &buf, &c.cfg.Limits)
	if err != nil {
		return fmt.Errorf("client: %s: refused (reading Welcome: %w): %w", cn.addr, err, ErrHandshake)
	}
	var w codec.Welcome
	if err := codec.DecodeWelcome(frame, &w, &c.cfg.Limits); err != nil {
		return fmt.Errorf("client: %s: %w: %w", cn.addr, err, ErrHandshake)
	}
	return nil
}

// readFrame reads one whole frame into *buf (reused) and returns it.
func readFrame(br *bufio.Reader, buf *[]byte, lim *codec.Limits) ([]byte, error) {
	head, err := br.Peek(codec.FrameHeaderSize)
	if err != nil {
		return nil, err
	}
	_, frameLen, err := codec.PeekFrame(head, lim)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		return nil, err
	}
	if cap(*buf) < frameLen {
		*buf = make([]byte, frameLen)
	}
	b := (*buf)[:frameLen]
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, err
	}
	return b, nil
}

// install makes cn the current connection and queues every outstanding call on it, in seq
// order, so a new leader sees each client's commands in the order they were submitted.
func (c *Client) install(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = cn
	c.sendq = c.sendq[:0]
	c.delayed = c.delayed[:0]
	for seq := c.seqFloor; seq < c.nextSeq; seq++ { // in seq order
		if cl := c.calls.get(seq); cl != nil {
			cl.queued = true
			cl.retryAt = time.Time{}
			c.sendq = append(c.sendq, cl)
		}
	}
	c.signal()
	c.wg.Add(1)
	go c.read(cn)
}

// callTable holds the outstanding calls by seq. Outstanding seqs always lie in [seqFloor,
// nextSeq), a span shorter than Config.InflightMax (waitSeqRoom), so a ring of at least
// InflightMax entries indexed by seq never has two of them in one place: lookups are one
// index, with none of a map's hashing and probing on the per-request path.
type callTable struct {
	ring []*call
	mask uint64
	n    int
}

func newCallTable(inflightMax int) callTable {
	size := 1
	for size < inflightMax {
		size *= 2
	}
	return callTable{ring: make([]*call, size), mask: uint64(size - 1)}
}

func (t *callTable) get(seq uint64) *call {
	if cl := t.ring[seq&t.mask]; cl != nil && cl.seq == seq {
		return cl
	}
	return nil
}

func (t *callTable) put(cl *call) {
	if t.ring[cl.seq&t.mask] != nil {
		panic("client: two outstanding calls share a slot of the call table") // the span invariant broke
	}
	t.ring[cl.seq&t.mask] = cl
	t.n++
}

func (t *callTable) remove(seq uint64) {
	if t.get(seq) != nil {
		t.ring[seq&t.mask] = nil
		t.n--
	}
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run owns the connection lifecycle and the writes: it flushes queued requests, retries
// delayed ones, expires deadlines, and reconnects when the connection dies or a redirect
// names another replica.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	tick := time.NewTicker(c.tickInterval())
	defer tick.Stop()
	var wbuf []byte
	for {
		if cn == nil {
			next, err := c.reconnect()
			if err != nil {
				c.expire(time.Now())
				select {
				case <-c.stop:
					return
				case <-time.After(c.cfg.RetryBackoff):
				}
				continue
			}
			cn = next
			c.install(cn)
		}
		select {
		case <-c.stop:
			cn.close()
			return
		case <-cn.dead:
			c.mu.Lock()
			if c.conn == cn {
				c.conn = nil
			}
			c.mu.Unlock()
			cn = nil
		case <-c.wake:
			wbuf = c.flush(cn, wbuf)
		case now := <-tick.C:
			c.expire(now)
			c.promote(now)
			wbuf = c.flush(cn, wbuf)
		}
	}
}

func (c *Client) tickInterval() time.Duration {
	d := c.cfg.RetryBackoff / 2
	if d > 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	return max(d, time.Millisecond)
}

// reconnect dials the redirect target if there is one, else the next endpoint.
func (c *Client) reconnect() (*conn, error) {
	c.mu.Lock()
	addr := c.target
	c.target = ""
	if addr == "" {
		c.endpoint = (c.endpoint + 1) % len(c.cfg.Endpoints)
		addr = c.cfg.Endpoints[c.endpoint]
	}
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return c.connect(ctx, addr)
}

// flush writes every queued request on cn, many frames per write.
func (c *Client) flush(cn *conn, wbuf []byte) []byte {
	for {
		wbuf = wbuf[:0]
		c.mu.Lock()
		n := 0
		for _, cl := range c.sendq {
			if len(wbuf) >= c.cfg.WriteBytesMax {
				break
			}
			n++
			cl.queued = false
			if c.calls.get(cl.seq) != cl {
				continue // answered or expired meanwhile
			}
			req := codec.Request{ClientID: c.clientID, Seq: cl.seq, SeqFloor: c.seqFloor, Payload: cl.payload,
				Read: cl.read, Offset: cl.offset}
			wbuf = codec.AppendRequest(wbuf, &req)
		}
		rest := copy(c.sendq, c.sendq[n:])
		clear(c.sendq[rest:])
		c.sendq = c.sendq[:rest]
		c.mu.Unlock()
		if len(wbuf) == 0 {
			return wbuf
		}
		_ = cn.nc.SetWriteDeadline(time.Now().Add(c.cfg.RequestTimeout))
		if _, err := cn.nc.Write(wbuf); err != nil {
			cn.close()
			return wbuf
		}
		if rest == 0 {
			return wbuf
		}
	}
}

// expire fails every call whose deadline has passed.
func (c *Client) expire(now time.Time) {
	var done []completion
	c.mu.Lock()
	for seq, end := c.seqFloor, c.nextSeq; seq < end; seq++ {
		if cl := c.calls.get(seq); cl != nil && now.After(cl.deadline) {
			c.forget(seq)
			done = append(done, completion{call: cl, err: ErrTimeout})
		}
	}
	c.mu.Unlock()
	c.complete(done)
}

// promote queues the delayed calls whose retry time has come.
func (c *Client) promote(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return // install requeues everything
	}
	kept := c.delayed[:0]
	for _, cl := range c.delayed {
		switch {
		case c.calls.get(cl.seq) != cl:
		case now.Before(cl.retryAt):
			kept = append(kept, cl)
		default:
			cl.retryAt = time.Time{}
			if !cl.queued {
				cl.queued = true
				c.sendq = append(c.sendq, cl)
			}
		}
	}
	clear(c.delayed[len(kept):])
	c.delayed = kept
}

// complete runs the done callbacks of finished calls and frees their inflight tokens.
func (c *Client) complete(done []completion) {
	for _, d := range done {
		<-c.sem
		if d.call.readDone != nil {
			d.call.readDone(d.read, d.err)
			continue
		}
		d.call.done(d.result, d.err)
	}
}

// read dispatches the responses arriving on cn until it fails.
func (c *Client) read(cn *conn) {
	defer c.wg.Done()
	defer cn.close()
	var buf []byte
	var resp codec.Response
	var redirect codec.Redirect
	var done []completion
	for {
		frame, err := readFrame(cn.br, &buf, &c.cfg.Limits)
		if err != nil {
			return
		}
		done = done[:0]
		reconnect := false
		c.mu.Lock()
		for {
			if c.conn != cn {
				c.mu.Unlock()
				return // replaced: answers on a stale connection are not ours to act on
			}
			typ := codec.MsgType(0)
			if len(frame) >= codec.FrameHeaderSize {
				typ, _, _ = codec.PeekFrame(frame, &c.cfg.Limits)
			}
			switch typ {
			case codec.TypeResponse:
				if err = codec.DecodeResponse(frame, &resp, &c.cfg.Limits); err == nil {
					done = c.onResponse(&resp, done)
				}
			case codec.TypeReadReply:
				if err = codec.DecodeReadReply(frame, &resp, &c.cfg.Limits); err == nil {
					done = c.onResponse(&resp, done)
				}
			case codec.TypeRedirect:
				if err = codec.DecodeRedirect(frame, &redirect, &c.cfg.Limits); err == nil {
					var again bool
					done, again = c.onRedirect(cn, &redirect, done)
					reconnect = reconnect || again
				}
			default:
				err = fmt.Errorf("client: %s: unexpected %s frame", cn.addr, typ)
			}
			if err != nil || !frameBuffered(cn.br, &c.cfg.Limits) {
				break
			}
			if frame, err = readFrame(cn.br, &buf, &c.cfg.Limits); err != nil {
				break
			}
		}
		c.mu.Unlock()
		c.complete(done)
		if err != nil || reconnect {
			return
		}
	}
}

// frameBuffered reports whether br already holds a whole frame, so reading it cannot block.
func frameBuffered(br *bufio.Reader, lim *codec.Limits) bool {
	n := br.Buffered()
	if n < codec.FrameHeaderSize {
		return false
	}
	head, _ := br.Peek(n)
	_, _, err := codec.PeekFrame(head, lim)
	return err == nil
}

// onResponse handles one Response; c.mu is held.
func (c *Client) onResponse(r *codec.Response, done []completion) []completion {
	cl := c.calls.get(r.Seq)
	if cl == nil || r.ClientID != c.clientID {
		return done // already answered, expired, or not ours
	}
	switch r.Status {
	case codec.StatusOK:
		c.forget(r.Seq)
		if cl.read != codec.ReadNone || r.Read != codec.ReadNone {
			return append(done, readCompletion(cl, r))
		}
		return append(done, completion{call: cl, result: Result{Slot: r.Slot, Index: r.Index, Offset: r.Offset}})
	case codec.StatusTooLarge, codec.StatusInvalid, codec.StatusAbandoned, codec.StatusCompacted:
		c.forget(r.Seq)
		return append(done, completion{call: cl, err: &RejectedError{Status: r.Status}})
	default: // NotLeader, Overloaded, Unavailable, Shutdown, or newer: retry with the same seq
		c.delay(cl)
		return done
	}
}

// readCompletion completes a read call answered StatusOK; an answer of the wrong kind (a
// Response to a read, a ReadReply to an append) fails the call rather than passing on
// fields that mean something else.
func readCompletion(cl *call, r *codec.Response) completion {
	if cl.read == codec.ReadNone || r.Read != cl.read {
		return completion{call: cl, err: fmt.Errorf("%w: a %v read answered as read mode %v", ErrProtocol, cl.read, r.Read)}
	}
	res := ReadResult{Length: r.Length, Found: r.Found}
	if r.Found {
		res.Slot, res.Index, res.Offset = r.Slot, r.Index, r.Offset
		res.Payload = append([]byte{}, r.Payload...)
	}
	return completion{call: cl, read: res}
}

func (c *Client) delay(cl *call) {
	if cl.retryAt.IsZero() {
		cl.retryAt = time.Now().Add(c.cfg.RetryBackoff)
		c.delayed = append(c.delayed, cl)
	}
}

// onRedirect handles one Redirect; c.mu is held. It reports whether the connection must be
// replaced (the redirect names another replica, or none and it is time to try another).
func (c *Client) onRedirect(cn *conn, r *codec.Redirect, done []completion) ([]completion, bool) {
	cl := c.calls.get(r.Seq)
	if cl == nil || r.ClientID != c.clientID {
		return done, false
	}
	if r.LeaderAddr == "" || r.LeaderAddr == cn.addr {
		// Leader unknown (an election is running) or the replica is confused: retry after a
		// pause, and now and then try another replica in case this one is cut off.
		c.delay(cl)
		if now := time.Now(); now.Sub(c.lastRotate) > 10*c.cfg.RetryBackoff {
			c.lastRotate = now
			return done, true
		}
		return done, false
	}
	if c.target == r.LeaderAddr {
		return done, true // already switching there; install resends cl
	}
	if cl.lastRedirect == r.LeaderAddr {
		// Sent to the same leader again: it was unreachable or is gone, and the replicas
		// have not elected another yet. Not a redirect loop: wait, as for an unknown leader.
		c.delay(cl)
		if now := time.Now(); now.Sub(c.lastRotate) > 10*c.cfg.RetryBackoff {
			c.lastRotate = now
			c.target = r.LeaderAddr
			return done, true
		}
		return done, false
	}
	cl.lastRedirect = r.LeaderAddr
	cl.redirects++
	if cl.redirects > c.cfg.RedirectsMax {
		c.forget(r.Seq)
		return append(done, completion{call: cl, err: fmt.Errorf("%w: last to %s", ErrRedirectsExhausted, r.LeaderAddr)}), false
	}
	c.target = r.LeaderAddr
	return done, true
}

// AppendAsync submits payload and returns once it is queued; done receives the outcome on
// the client's reader goroutine (or the caller of Close) and must not block. It blocks while
// Config.InflightMax requests are outstanding. payload is copied.
func (c *Client) AppendAsync(payload []byte, done func(Result, error)) error {
	cl, err := c.appendCall(payload, done)
	if err != nil {
		return err
	}
	_, err = c.submit(context.Background(), cl, time.Now().Add(c.cfg.RequestTimeout))
	return err
}

// appendCall checks payload's size and returns a call that owns a copy of it.
func (c *Client) appendCall(payload []byte, done func(Result, error)) (*call, error) {
	if len(payload) > c.cfg.Limits.PayloadBytesMax {
		return nil, fmt.Errorf("%w: %d bytes, PayloadBytesMax %d", ErrTooLarge, len(payload), c.cfg.Limits.PayloadBytesMax)
	}
	return &call{payload: append([]byte(nil), payload...), done: done}, nil
}

// submit gives cl the next seq and deadline and queues it.
func (c *Client) submit(ctx context.Context, cl *call, deadline time.Time) (uint64, error) {
	select {
	case c.sem <- struct{}{}: // the common case, without a three-way select
	default:
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-c.stop:
			return 0, ErrClosed
		}
	}
	if err := c.waitSeqRoom(ctx); err != nil {
		<-c.sem
		return 0, err
	}
	// c.mu is held.
	cl.seq, cl.deadline = c.nextSeq, deadline
	c.nextSeq++
	c.calls.put(cl)
	if c.nextSeq-c.seqFloor < uint64(c.cfg.InflightMax) {
		c.signalSpan() // room for another waiting submitter too
	}
	if c.conn != nil {
		cl.queued = true
		c.sendq = append(c.sendq, cl)
	}
	c.mu.Unlock()
	c.signal()
	return cl.seq, nil
}

// waitSeqRoom returns with c.mu held once the next seq is less than InflightMax above the
// seq floor, so no Request ever carries seq - SeqFloor >= InflightMax (the replicas refuse
// those). It waits while an old request (lost, being retried) holds the floor down; that
// request ends by its answer or its deadline.
func (c *Client) waitSeqRoom(ctx context.Context) error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		if c.nextSeq-c.seqFloor < uint64(c.cfg.InflightMax) {
			return nil
		}
		c.mu.Unlock()
		select {
		case <-c.spanFree:
		case <-ctx.Done():
			c.signalSpan() // pass on a wake-up this caller may have taken
			return ctx.Err()
		case <-c.stop:
			return ErrClosed
		}
	}
}

func (c *Client) signalSpan() {
	select {
	case c.spanFree <- struct{}{}:
	default:
	}
}

// forget removes seq from the outstanding calls: it is never sent again. When it held the
// seq floor, the floor rises to the next outstanding seq (each seq is passed once: O(1)
// amortised). c.mu is held.
func (c *Client) forget(seq uint64) {
	c.calls.remove(seq)
	if seq != c.seqFloor {
		return
	}
	for c.seqFloor < c.nextSeq && c.calls.get(c.seqFloor) == nil {
		c.seqFloor++
	}
	c.signalSpan()
}

type outcome struct {
	result Result
	read   ReadResult
	err    error
}

// Append submits payload and waits for its outcome or ctx's end (see the package doc for
// which errors are ambiguous).
func (c *Client) Append(ctx context.Context, payload []byte) (Result, error) {
	ch := make(chan outcome, 1)
	cl, err := c.appendCall(payload, func(r Result, err error) { ch <- outcome{result: r, err: err} })
	if err != nil {
		return Result{}, err
	}
	o := c.wait(ctx, cl, ch)
	return o.result, o.err
}

// ReadLatest returns the log's length and its last command, linearizably: the answer
// reflects every command acknowledged before the call, and nothing that was not chosen.
// Like an append it is ordered through the log (see the package doc), so it costs a round of
// Phase 2. Errors are as for Append; a read has no effect, so every error may be retried.
func (c *Client) ReadLatest(ctx context.Context) (ReadResult, error) {
	return c.read1(ctx, codec.ReadLatest, 0)
}

// ReadAt returns the command at dense offset, linearizably; Found is false when the log is
// not that long yet. An offset below what the replicas keep (compacted by a snapshot) is
// refused with StatusCompacted (ErrRejected).
func (c *Client) ReadAt(ctx context.Context, offset uint64) (ReadResult, error) {
	return c.read1(ctx, codec.ReadAt, offset)
}

func (c *Client) read1(ctx context.Context, mode codec.ReadMode, offset uint64) (ReadResult, error) {
	ch := make(chan outcome, 1)
	cl := &call{read: mode, offset: offset, readDone: func(r ReadResult, err error) { ch <- outcome{read: r, err: err} }}
	o := c.wait(ctx, cl, ch)
	return o.read, o.err
}

// wait submits cl and waits for its outcome, which its done callback sends on ch.
func (c *Client) wait(ctx context.Context, cl *call, ch chan outcome) outcome {
	// The call expires at RequestTimeout; an earlier ctx deadline ends it below instead, so
	// the error says which (ErrTimeout wrapping context.DeadlineExceeded).
	deadline := time.Now().Add(c.cfg.RequestTimeout)
	seq, err := c.submit(ctx, cl, deadline)
	if err != nil {
		return outcome{err: err}
	}
	select {
	case o := <-ch:
		return o
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		c.abandon(seq, err)
		return <-ch
	}
}

// abandon completes seq with err unless it was answered meanwhile.
func (c *Client) abandon(seq uint64, err error) {
	c.mu.Lock()
	cl := c.calls.get(seq)
	if cl != nil {
		c.forget(seq)
	}
	c.mu.Unlock()
	if cl != nil {
		c.complete([]completion{{call: cl, err: err}})
	}
}

// Close fails every outstanding request with ErrClosed, closes the connection and waits for
// the client's goroutines.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	done := make([]completion, 0, c.calls.n)
	for seq, end := c.seqFloor, c.nextSeq; seq < end; seq++ {
		if cl := c.calls.get(seq); cl != nil {
			c.forget(seq)
			done = append(done, completion{call: cl, err: ErrClosed})
		}
	}
	c.mu.Unlock()
	close(c.stop)
	c.wg.Wait()
	c.complete(done)
	return nil
}
