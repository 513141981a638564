package netio

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Errors returned by netio. Each is a sentinel: compare with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration error; the message names the field.
	ErrInvalidConfig = errors.New("netio: invalid config")
	// ErrListen: Start could not bind Config.ListenAddr (typically: the port is in use).
	ErrListen = errors.New("netio: cannot listen")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("netio: already started")
	// ErrNotStarted: Stop was called before a successful Start.
	ErrNotStarted = errors.New("netio: not started")
	// ErrHandshake wraps every reason a handshake was refused (wrong secret, cluster id,
	// protocol version, role, unknown replica); the message says which.
	ErrHandshake = errors.New("netio: handshake refused")
	// ErrProtocol wraps every reason an established connection was closed for what it sent.
	ErrProtocol = errors.New("netio: protocol violation")
)

// Config configures one replica's network endpoint. Every buffer and count is bounded by a
// field here; DefaultConfig gives sane values and Validate names the first bad field.
type Config struct {
	// ListenAddr is host:port for the one listener that takes both clients and peers.
	// Port 0 picks a free port (see Server.Addr). Default 127.0.0.1:0.
	ListenAddr string
	// ReplicaID is this replica's id: non-zero, and not a key of Peers.
	ReplicaID uint32
	// ClusterID must match on both ends of every connection (guards against cross-talk
	// between clusters on one host).
	ClusterID uint64
	// Secret is the shared cluster secret peers prove with HMAC-SHA256. Never sent, never
	// logged. At least 16 bytes.
	Secret []byte
	// Peers maps every other replica's id to its ListenAddr. This replica dials each of them
	// and sends everything addressed to that peer on that one connection.
	Peers map[uint32]string

	// ClientConnectionsMax bounds the client connections past their handshake. A client Hello
	// beyond it is refused (the connection closed, Stats.ClientsRefused). Peers never count
	// against it: at most one inbound connection per configured peer is kept (a newer
	// authenticated one replaces the older), so clients cannot lock peers out.
	ClientConnectionsMax int
	// HandshakesMax bounds the connections accepted and not yet past their handshake (nothing
	// is known of them yet). A connection accepted beyond it closes the oldest of them once
	// that one has been waiting an eighth of HandshakeTimeout (Stats.HandshakesEvicted), and
	// is refused while none has (Stats.HandshakesRefused). A peer answers its Challenge within
	// a round trip, so silent connections cannot crowd it out unless they are opened faster
	// than HandshakesMax per eighth of HandshakeTimeout (8,192 a second at the defaults).
	HandshakesMax int
	// PendingRequestsMax bounds the requests one client connection has handed to the Handler
	// but not yet answered (Respond/Redirect). At the bound netio stops reading that
	// connection, so a client's pipelining depth cannot grow server memory.
	PendingRequestsMax int
	// OutboundBytesMax bounds the encoded bytes queued for one peer link: Send drops (and
	// counts) messages beyond it.
	OutboundBytesMax int
	// ClientOutboundBytesMax bounds the responses queued for one client connection (not yet
	// taken by its socket). A client that does not read its replies is disconnected once
	// they pass it (Stats.SlowReaders). At least two of the largest ReadReply.
	ClientOutboundBytesMax int
	// InboundBytesMax bounds what a paused client connection (Handler took fewer requests than
	// offered) may buffer inside gnet before it is closed. gnet cannot stop reading a socket,
	// so a client that ignores backpressure is cut off here instead of growing memory.
	InboundBytesMax int
	// BufferedBytesMax bounds the bytes all client connections together hold in gnet's
	// buffers (partial requests in, responses out). Past it, a connection that grows beyond
	// its fair share (BufferedBytesMax / client connections) is closed
	// (Stats.BufferedCutoffs). Handshakes hold at most 4 KiB each; peers are bounded by
	// Limits.FrameBytesMax per peer.
	BufferedBytesMax int
	// FrameTimeout bounds how long a client frame may take to arrive once its first byte has:
	// a header followed by a trickle is closed after it (Stats.FrameTimeouts), so a slow
	// sender cannot hold a buffer open. Whole frames reset it; a paused connection is not
	// timed (it waits on us).
	FrameTimeout time.Duration
	// IdleTimeout closes a client connection that has sent nothing for this long and has no
	// request pending and no response queued (Stats.IdleTimeouts).
	IdleTimeout time.Duration
	// WarnInterval rate-limits the warnings about refused and closed connections: at most one
	// line per reason per interval; the rest are counted (Stats.WarningsSuppressed) and their
	// number is given on the next line. A flood must not become a flood of log lines.
	WarnInterval time.Duration

	// ReconnectBackoffMin/Max bound the capped exponential backoff (with full jitter) between
	// attempts to (re)connect to a peer.
	ReconnectBackoffMin time.Duration
	ReconnectBackoffMax time.Duration
	// HandshakeTimeout bounds how long any connection may take to complete the handshake: an
	// inbound connection that has not sent a valid Hello by then is closed, and an outbound
	// dial plus handshake is abandoned.
	HandshakeTimeout time.Duration

	// EventLoops is the number of gnet event loops (0 = DefaultEventLoops: one per two CPUs).
	EventLoops int
	// Features this replica offers (codec.Feature*). A feature is used on a link only if both
	// ends offer it.
	Features uint32
	// Limits bound every frame decoded on any connection.
	Limits codec.Limits
	// Logger receives connection-level events (refusals, protocol errors, reconnects).
	// Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultListenAddr             = "127.0.0.1:0"
	DefaultClientConnectionsMax   = 4096
	DefaultHandshakesMax          = 1024
	DefaultPendingRequestsMax     = 16384
	DefaultOutboundBytesMax       = 64 << 20
	DefaultClientOutboundBytesMax = 8 << 20
	DefaultInboundBytesMax        = 16 << 20
	DefaultBufferedBytesMax       = 256 << 20
	DefaultFrameTimeout           = 10 * time.Second
	DefaultIdleTimeout            = 2 * time.Minute
	DefaultWarnInterval           = time.Second
	DefaultReconnectBackoffMin    = 20 * time.Millisecond
	DefaultReconnectBackoffMax    = 2 * time.Second
	DefaultHandshakeTimeout       = 5 * time.Second
	secretBytesMin                = 16
)

// DefaultConfig returns a Config with every limit at its default. The caller still sets
// ReplicaID, ClusterID, Secret and Peers.
func DefaultConfig() Config {
	return Config{
		ListenAddr:             DefaultListenAddr,
		ClientConnectionsMax:   DefaultClientConnectionsMax,
		HandshakesMax:          DefaultHandshakesMax,
		PendingRequestsMax:     DefaultPendingRequestsMax,
		OutboundBytesMax:       DefaultOutboundBytesMax,
		ClientOutboundBytesMax: DefaultClientOutboundBytesMax,
		InboundBytesMax:        DefaultInboundBytesMax,
		BufferedBytesMax:       DefaultBufferedBytesMax,
		FrameTimeout:           DefaultFrameTimeout,
		IdleTimeout:            DefaultIdleTimeout,
		WarnInterval:           DefaultWarnInterval,
		ReconnectBackoffMin:    DefaultReconnectBackoffMin,
		ReconnectBackoffMax:    DefaultReconnectBackoffMax,
		HandshakeTimeout:       DefaultHandshakeTimeout,
		Features:               codec.FeatureS2,
		Limits:                 codec.DefaultLimits(),
	}
}

func invalid(field string, format string, args ...any) error {
	return fmt.Errorf("netio: Config.%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidConfig)
}

// Validate reports the first field that is out of range, wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return invalid("ListenAddr", "%q is not host:port: %v", c.ListenAddr, err)
	}
	if c.ReplicaID == 0 {
		return invalid("ReplicaID", "must be non-zero")
	}
	if len(c.Secret) < secretBytesMin {
		return invalid("Secret", "%d bytes, need at least %d", len(c.Secret), secretBytesMin)
	}
	for id, addr := range c.Peers {
		if id == 0 {
			return invalid("Peers", "replica id 0 is reserved")
		}
		if id == c.ReplicaID {
			return invalid("Peers", "contains this replica's own id %d", id)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return invalid("Peers", "address of replica %d %q is not host:port: %v", id, addr, err)
		}
	}
	positive := []struct {
		name  string
		value int
	}{
		{"ClientConnectionsMax", c.ClientConnectionsMax},
		{"HandshakesMax", c.HandshakesMax},
		{"PendingRequestsMax", c.PendingRequestsMax},
		{"OutboundBytesMax", c.OutboundBytesMax},
		{"ClientOutboundBytesMax", c.ClientOutboundBytesMax},
		{"InboundBytesMax", c.InboundBytesMax},
		{"BufferedBytesMax", c.BufferedBytesMax},
	}
	for _, f := range positive {
		if f.value <= 0 {
			return invalid(f.name, "%d: must be positive", f.value)
		}
	}
	if c.EventLoops < 0 {
		return invalid("EventLoops", "%d: must be >= 0", c.EventLoops)
	}
	if c.ReconnectBackoffMin <= 0 {
		return invalid("ReconnectBackoffMin", "%v: must be positive", c.ReconnectBackoffMin)
	}
	if c.ReconnectBackoffMax < c.ReconnectBackoffMin {
		return invalid("ReconnectBackoffMax", "%v: below ReconnectBackoffMin %v",
			c.ReconnectBackoffMax, c.ReconnectBackoffMin)
	}
	durations := []struct {
		name  string
		value time.Duration
	}{
		{"HandshakeTimeout", c.HandshakeTimeout},
		{"FrameTimeout", c.FrameTimeout},
		{"IdleTimeout", c.IdleTimeout},
		{"WarnInterval", c.WarnInterval},
	}
	for _, f := range durations {
		if f.value <= 0 {
			return invalid(f.name, "%v: must be positive", f.value)
		}
	}
	if c.Features&^codec.FeatureS2 != 0 {
		return invalid("Features", "%#x has unknown bits", c.Features)
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("netio: Config.Limits: %w: %w", err, ErrInvalidConfig)
	}
	return c.validateClientLimits()
}

// validateClientLimits checks that the per-client bounds leave room for what a well-behaved
// client may send and receive under Limits, so no bound cuts off a legal request or reply.
func (c *Config) validateClientLimits() error {
	request := clientFrameBytesMax(&c.Limits)
	reply := replyFrameBytesMax(&c.Limits)
	if c.InboundBytesMax < request {
		return invalid("InboundBytesMax", "%d is below the largest Request frame %d (Limits.PayloadBytesMax %d)",
			c.InboundBytesMax, request, c.Limits.PayloadBytesMax)
	}
	if c.ClientOutboundBytesMax < 2*reply {
		return invalid("ClientOutboundBytesMax", "%d is below two of the largest ReadReply frame %d (Limits.PayloadBytesMax %d)",
			c.ClientOutboundBytesMax, reply, c.Limits.PayloadBytesMax)
	}
	if c.BufferedBytesMax < request+c.ClientOutboundBytesMax {
		return invalid("BufferedBytesMax", "%d cannot hold one client at its bounds: the largest Request %d plus ClientOutboundBytesMax %d",
			c.BufferedBytesMax, request, c.ClientOutboundBytesMax)
	}
	return nil
}

// requestFrameOverhead is the size of a Request frame with an empty payload, and
// readReplyFrameOverhead that of a ReadReply: taken from the encoder, not restated.
var (
	requestFrameOverhead   = len(codec.AppendRequest(nil, &codec.Request{}))
	readReplyFrameOverhead = len(codec.AppendResponse(nil, &codec.Response{Read: codec.ReadAt}))
)

// clientFrameBytesMax is the largest frame a client may send: a Request carrying a payload of
// Limits.PayloadBytesMax (a Read frame is smaller). Client connections are decoded with this
// as FrameBytesMax, so a client can make a replica buffer at most one legal request, not
// Limits.FrameBytesMax; a Request beyond it is answered TooLarge and its body discarded.
func clientFrameBytesMax(l *codec.Limits) int {
	return min(requestFrameOverhead+l.PayloadBytesMax, l.FrameBytesMax)
}

// replyFrameBytesMax is the largest frame a replica sends a client: a ReadReply carrying a
// payload of Limits.PayloadBytesMax.
func replyFrameBytesMax(l *codec.Limits) int {
	return readReplyFrameOverhead + l.PayloadBytesMax
}

// DefaultEventLoops is the number of event loops when Config.EventLoops is 0: one per two
// CPUs, at least one. The loops share the CPUs with the step loop, the apply stage, the WAL
// writer and the peer links, and every extra loop is another thread to wake. On the 2-core
// reference machine (docs/BENCHMARKS.md, session 3) one loop instead of two gave a lower p99
// at 500k/s open loop in 10 of 13 interleaved pairs (e.g. 4.30 vs 7.85 ms) and more
// closed-loop throughput (1.31-1.38 M vs 1.18-1.29 M cmds/s).
func DefaultEventLoops() int {
	return max(1, runtime.NumCPU()/2)
}
