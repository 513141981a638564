package bench

import (
	"fmt"
	"io"
	"time"
)

// Config describes one load run. Every count and size has a maximum, checked by Validate.
type Config struct {
	// Clients is the number of targets dialed, each driven by its own goroutine.
	Clients int
	// Inflight bounds each client's outstanding requests, in both loop modes. The engine
	// allocates Clients*Inflight payload buffers of PayloadBytes up front.
	Inflight int
	// PayloadBytes is the size of every request's payload. The first 16 bytes (when there
	// are that many) carry the client index and a per-client sequence, so payloads differ.
	PayloadBytes int
	// Warmup runs load that is not counted; Duration is the measured window.
	Warmup   time.Duration
	Duration time.Duration
	// Rate in requests per second over all clients selects the open loop; 0 = closed loop.
	Rate float64
	// LatencyMax is the highest latency the histograms track; larger ones are recorded as
	// LatencyMax (and still counted). Memory per client grows with log2(LatencyMax).
	LatencyMax time.Duration
	// DrainTimeout bounds the wait for outstanding requests after the window ends; what is
	// still outstanding then counts as KindUnfinished.
	DrainTimeout time.Duration
	// ProgressInterval is how often a progress Sample is taken (and printed to Progress).
	ProgressInterval time.Duration
	// Progress receives one line per sample; nil prints nothing.
	Progress io.Writer
	// ErrorKind names the kind of a failed request; nil or "" falls back to DefaultErrorKind.
	ErrorKind func(error) string
	// ErrorKindsMax bounds the distinct kinds kept; later new kinds are folded into KindOther.
	ErrorKindsMax int
	// TimelineSamplesMax bounds the samples kept for the report (older ones are thinned).
	TimelineSamplesMax int
	// DialConcurrencyMax bounds the dials in progress at once.
	DialConcurrencyMax int
	// OpenLoopTick: in the open loop the pacing goroutine (one per 400k req/s of Rate,
	// each pacing a group of clients) wakes at most once per tick and sends every request
	// due by then, each stamped with its own due time, so the wait for the tick is part of
	// the measured latency (Result.SendLag shows it). Waking for every request separately
	// made the generator write one request per syscall and saturate the CPU it shares with
	// the replicas (at 500k req/s it used 0.75 of a core, 41% of it in write). 0 wakes for
	// every request.
	OpenLoopTick time.Duration
	// OnMeasureStart, if set, runs once on its own goroutine when the warm-up ends, with
	// the measured window's length (profile capture hooks in here).
	OnMeasureStart func(window time.Duration)
}

// Limits on Config fields.
const (
	ClientsMax            = 1024
	InflightMax           = 1 << 16
	PayloadBytesMax       = 1 << 20 // codec.DefaultLimits().PayloadBytesMax
	OutstandingBytesMax   = 1 << 30 // Clients*Inflight*PayloadBytes preallocated
	ErrorKindsMaxLimit    = 1024
	TimelineSamplesLimit  = 1 << 20
	DialConcurrencyLimit  = 1024
	latencyMaxLimit       = time.Hour
	progressIntervalFloor = 10 * time.Millisecond
)

// DefaultConfig returns a small closed-loop run: 4 clients x 16 in flight, 16-byte payloads,
// 2 s warm-up, 10 s measured.
func DefaultConfig() Config {
	return Config{
		Clients:            4,
		Inflight:           16,
		PayloadBytes:       16,
		Warmup:             2 * time.Second,
		Duration:           10 * time.Second,
		LatencyMax:         60 * time.Second,
		DrainTimeout:       10 * time.Second,
		ProgressInterval:   time.Second,
		ErrorKindsMax:      32,
		TimelineSamplesMax: 3600,
		DialConcurrencyMax: 16,
		OpenLoopTick:       DefaultOpenLoopTick,
	}
}

// DefaultOpenLoopTick is Config.OpenLoopTick's default. The tick is the generator's
// client-side linger: a longer one means fewer, larger writes, so less CPU on every process
// of a shared machine, but a longer wait before each request leaves. Measured on the 2-core
// reference machine (docs/BENCHMARKS.md, session 3, the tick curve): at 100k req/s p50 was
// lowest at 500 µs (0.74-1.10 ms; 200 µs gave 0.87 ms, 1 ms 1.10-1.12 ms); at 500k req/s
// p99 was 6.0-6.5 ms at 200 µs, 5.1-8.4 ms at 500 µs and 4.7-5.4 ms at 1 ms.
const DefaultOpenLoopTick = 500 * time.Microsecond

// Validate reports the first field out of range.
func (c *Config) Validate() error {
	switch {
	case c.Clients < 1 || c.Clients > ClientsMax:
		return fmt.Errorf("%w: Clients = %d, want 1..%d", ErrConfig, c.Clients, ClientsMax)
	case c.Inflight < 1 || c.Inflight > InflightMax:
		return fmt.Errorf("%w: Inflight = %d, want 1..%d", ErrConfig, c.Inflight, InflightMax)
	case c.PayloadBytes < 0 || c.PayloadBytes > PayloadBytesMax:
		return fmt.Errorf("%w: PayloadBytes = %d, want 0..%d", ErrConfig, c.PayloadBytes, PayloadBytesMax)
	case int64(c.Clients)*int64(c.Inflight)*int64(c.PayloadBytes) > OutstandingBytesMax:
		return fmt.Errorf("%w: Clients*Inflight*PayloadBytes = %d bytes, want at most %d",
			ErrConfig, int64(c.Clients)*int64(c.Inflight)*int64(c.PayloadBytes), OutstandingBytesMax)
	case c.Warmup < 0:
		return fmt.Errorf("%w: Warmup = %v, want >= 0", ErrConfig, c.Warmup)
	case c.Duration <= 0:
		return fmt.Errorf("%w: Duration = %v, want > 0", ErrConfig, c.Duration)
	case c.Rate < 0 || c.Rate != c.Rate || c.Rate > 1e9:
		return fmt.Errorf("%w: Rate = %v, want 0 (closed loop) or 0 < rate <= 1e9", ErrConfig, c.Rate)
	case c.LatencyMax < time.Millisecond || c.LatencyMax > latencyMaxLimit:
		return fmt.Errorf("%w: LatencyMax = %v, want 1ms..%v", ErrConfig, c.LatencyMax, latencyMaxLimit)
	case c.DrainTimeout <= 0:
		return fmt.Errorf("%w: DrainTimeout = %v, want > 0", ErrConfig, c.DrainTimeout)
	case c.ProgressInterval < progressIntervalFloor:
		return fmt.Errorf("%w: ProgressInterval = %v, want >= %v", ErrConfig, c.ProgressInterval, progressIntervalFloor)
	case c.ErrorKindsMax < 1 || c.ErrorKindsMax > ErrorKindsMaxLimit:
		return fmt.Errorf("%w: ErrorKindsMax = %d, want 1..%d", ErrConfig, c.ErrorKindsMax, ErrorKindsMaxLimit)
	case c.TimelineSamplesMax < 2 || c.TimelineSamplesMax > TimelineSamplesLimit:
		return fmt.Errorf("%w: TimelineSamplesMax = %d, want 2..%d", ErrConfig, c.TimelineSamplesMax, TimelineSamplesLimit)
	case c.DialConcurrencyMax < 1 || c.DialConcurrencyMax > DialConcurrencyLimit:
		return fmt.Errorf("%w: DialConcurrencyMax = %d, want 1..%d", ErrConfig, c.DialConcurrencyMax, DialConcurrencyLimit)
	case c.OpenLoopTick < 0 || c.OpenLoopTick > time.Second:
		return fmt.Errorf("%w: OpenLoopTick = %v, want 0..1s", ErrConfig, c.OpenLoopTick)
	}
	return nil
}
