package netio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/mpaxos/mpaxos/codec"
)

// Handler receives everything netio decodes. HandlePeer and HandleRequests run on an
// event-loop goroutine: they must not block (hand work to another stage and return), and every
// slice they are given aliases gnet's inbound buffer, valid only during the call — copy what
// you keep.
type Handler interface {
	// HandlePeer receives one peer message. m.From is the authenticated peer id (a message
	// claiming another sender closes the connection before it gets here). m and its slices
	// are reused after the call returns.
	HandlePeer(m *codec.Message)
	// HandleRequests receives every complete Request of one loop turn on c, in order, and
	// returns how many it took (a prefix). If it takes fewer than offered, netio stops reading
	// c — the rest stays unread in gnet's inbound buffer — until c.Resume(). Every request
	// taken must eventually be answered with Respond or Redirect: the answers free room under
	// Config.PendingRequestsMax.
	HandleRequests(c *ClientConn, reqs []codec.Request) int
	// ClientClosed reports that c is closed (by the client, for a protocol error, or by Stop);
	// Respond/Redirect/Resume on it are now no-ops. Runs on the event loop: do not block.
	ClientClosed(c *ClientConn)
}

// Server is one replica's network endpoint: a gnet engine for every inbound connection
// (clients and peers) plus one outbound link per peer. See doc.go.
type Server struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	stats   counters

	leaderID   atomic.Uint32
	leaderAddr atomic.Pointer[string]
	nextConnID atomic.Uint64

	peers map[uint32]*peerLink // fixed at NewServer; links are safe for concurrent use

	mu      sync.Mutex
	started bool
	stopped bool
	engine  gnet.Engine
	addr    string
	booted  chan struct{}
	runDone chan struct{}
	runErr  error // set before runDone closes
	// stopPeers cancels every peer link goroutine; peersDone waits for them.
	stopPeers context.CancelFunc
	peersDone sync.WaitGroup

	// epoch starts clock(); guard registers inbound connections for the limits and the sweep
	// (guard.go); warnings rate-limits the warnings about them (warn.go).
	epoch    time.Time
	guard    connGuard
	warnings *warnLimiter
	// clientLimits are Limits with FrameBytesMax lowered to the largest legal Request
	// (clientFrameBytesMax): what client connections are decoded with.
	clientLimits codec.Limits
}

// NewServer validates cfg and returns a stopped Server. Start binds.
func NewServer(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, fmt.Errorf("netio: NewServer: nil Handler: %w", ErrInvalidConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Own copies: the caller may reuse its map and slice.
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	peers := make(map[uint32]string, len(cfg.Peers))
	for id, addr := range cfg.Peers {
		peers[id] = addr
	}
	cfg.Peers = peers
	s := &Server{
		cfg:          cfg,
		handler:      h,
		log:          cfg.Logger.With("component", "netio", "replica", cfg.ReplicaID),
		peers:        make(map[uint32]*peerLink, len(peers)),
		epoch:        time.Now(),
		warnings:     newWarnLimiter(cfg.WarnInterval),
		clientLimits: cfg.Limits,
	}
	s.clientLimits.FrameBytesMax = clientFrameBytesMax(&cfg.Limits)
	s.guard.clients = make(map[*connState]struct{})
	s.guard.clientIDs = make(map[uint64]*connState)
	s.guard.peers = make(map[uint32]*connState, len(peers))
	empty := ""
	s.leaderAddr.Store(&empty)
	for id, addr := range peers {
		s.peers[id] = newPeerLink(s, id, addr)
	}
	return s, nil
}

// Start binds Config.ListenAddr, starts the event loops and the peer links, and returns once
// the listener accepts. A bind failure (port in use, bad address) returns an error wrapping
// ErrListen, and Start may be tried again. A Server runs once: after Stop, make a new one.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return ErrStarted
	}
	s.started = true
	s.booted = make(chan struct{})
	s.runDone = make(chan struct{})

	s.fitDescriptors()
	loops := s.cfg.EventLoops
	if loops == 0 {
		loops = DefaultEventLoops()
	}
	options := []gnet.Option{
		gnet.WithMulticore(loops > 1),
		gnet.WithNumEventLoop(loops),
		// SO_REUSEADDR only lets a restarted replica bind over TIME_WAIT sockets; unlike
		// SO_REUSEPORT it does not let a second live listener share the port.
		gnet.WithReuseAddr(true),
		gnet.WithReusePort(false),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithTicker(true),
		// One read per loop turn takes up to this much from a socket (per loop, not per
		// connection): large enough that a 16 KiB Accept stream needs few turns.
		gnet.WithReadBufferCap(readBufferBytes),
		gnet.WithLogger(gnetLogger{s.log}),
	}
	protoAddr := "tcp://" + s.cfg.ListenAddr
	handler := &engineHandler{s: s}
	labels := pprof.Labels("netio", "event-loop", "replica", strconv.FormatUint(uint64(s.cfg.ReplicaID), 10))
	go pprof.Do(context.Background(), labels, func(context.Context) {
		// gnet.Run blocks until the engine stops; every event-loop goroutine it starts
		// inherits these pprof labels.
		err := gnet.Run(handler, protoAddr, options...)
		s.runErr = err
		if s.engineStoppedUnasked() {
			// gnet stops the whole engine on some accept errors (see fitDescriptors): the
			// replica no longer takes connections, and must say so.
			s.log.Error("netio: event loops stopped unasked: no longer accepting connections", "err", err)
		}
		close(s.runDone)
	})
	select {
	case <-s.booted:
	case <-s.runDone:
		if s.runErr == nil {
			s.runErr = errors.New("engine stopped before boot")
		}
		s.started = false // nothing is running: Start may be retried
		return fmt.Errorf("netio: listen on %s: %w: %w", s.cfg.ListenAddr, ErrListen, s.runErr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	s.stopPeers = cancel
	for _, link := range s.peers {
		s.peersDone.Add(1)
		go func() {
			defer s.peersDone.Done()
			peerLabels := pprof.Labels("netio", "peer-link",
				"replica", strconv.FormatUint(uint64(s.cfg.ReplicaID), 10),
				"peer", strconv.FormatUint(uint64(link.id), 10))
			pprof.Do(ctx, peerLabels, link.run)
		}()
	}
	s.log.Info("netio: listening", "addr", s.addr, "peers", len(s.peers))
	return nil
}

// Addr is the bound listen address (host:port, with the real port when ListenAddr used
// port 0). Empty before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// SetLeader records the current leader hint that Welcome frames carry to clients
// (id 0 = unknown). LeaderAddr is kept for the owner's Redirects via Leader.
func (s *Server) SetLeader(id uint32, addr string) {
	s.leaderID.Store(id)
	s.leaderAddr.Store(&addr)
}

// Leader returns the hint last given to SetLeader.
func (s *Server) Leader() (id uint32, addr string) {
	return s.leaderID.Load(), *s.leaderAddr.Load()
}

// engineStoppedUnasked reports whether the engine stopped after it booted without Stop.
func (s *Server) engineStoppedUnasked() bool {
	select {
	case <-s.booted:
	default:
		return false // a bind failure: Start reports it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.stopped
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Stop stops accepting, closes every connection (ClientClosed runs for each client), stops the
// peer links and returns once every goroutine netio started has exited, or ctx is done.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		if s.stopped {
			return nil
		}
		return ErrNotStarted
	}
	s.stopped = true
	engine := s.engine
	s.mu.Unlock()

	s.stopPeers()
	peersDone := make(chan struct{})
	go func() { s.peersDone.Wait(); close(peersDone) }()

	// Engine.Stop polls for completion every 500 ms; we wait on Run's return instead and
	// cancel Stop's polling as soon as the engine is down.
	stopCtx, cancelStop := context.WithCancel(ctx)
	stopReturned := make(chan error, 1)
	go func() { stopReturned <- engine.Stop(stopCtx) }()
	var err error
	select {
	case <-s.runDone:
	case <-ctx.Done():
		err = fmt.Errorf("netio: stop: event loops still running: %w", ctx.Err())
	}
	cancelStop()
	<-stopReturned
	select {
	case <-peersDone:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("netio: stop: peer links still running: %w", ctx.Err())
		}
	}
	return err
}

// readBufferBytes is gnet's per-event-loop read buffer.
const readBufferBytes = 256 << 10

// tickInterval is how often the engine's ticker runs the sweep (guard.go): a quarter of the
// shortest timeout it enforces, within [10 ms, 250 ms].
func (s *Server) tickInterval() time.Duration {
	d := min(s.cfg.HandshakeTimeout, s.cfg.FrameTimeout, s.cfg.IdleTimeout) / 4
	return min(max(d, 10*time.Millisecond), 250*time.Millisecond)
}

// listenerAddr reads the bound address from a duplicate of the listening socket.
func listenerAddr(eng gnet.Engine) (string, error) {
	fd, err := eng.Dup()
	if err != nil {
		return "", err
	}
	defer syscall.Close(fd)
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return "", err
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port)), nil
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port)), nil
	}
	return "", fmt.Errorf("unexpected socket address %T", sa)
}

// gnetLogger routes gnet's own logging into slog. gnet keeps one process-wide default logger,
// so with several Servers in one process gnet's lines may carry another Server's attributes.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) logf(level slog.Level, format string, args ...any) {
	if g.l.Enabled(context.Background(), level) {
		g.l.Log(context.Background(), level, "gnet: "+fmt.Sprintf(format, args...))
	}
}

func (g gnetLogger) Debugf(format string, args ...any) { g.logf(slog.LevelDebug, format, args...) }
func (g gnetLogger) Infof(format string, args ...any)  { g.logf(slog.LevelDebug, format, args...) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.logf(slog.LevelWarn, format, args...) }
func (g gnetLogger) Errorf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
