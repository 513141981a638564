package netio

import (
	"sync"
	"time"
)

// Reasons for the rate-limited warnings: each has its own budget of one line per
// Config.WarnInterval, so a flood of one kind cannot hide another kind.
const (
	warnHandshakeRefused     = "handshake refused"
	warnHandshakeTimeout     = "handshake timeout"
	warnHandshakeEvicted     = "handshake evicted"
	warnHandshakeRefusedFull = "handshakes full"
	warnClientRefused        = "client refused"
	warnClientProtocol       = "client protocol error"
	warnPeerProtocol         = "peer protocol error"
	warnFrameTimeout         = "frame timeout"
	warnBufferedBytes        = "buffered bytes"
	warnSlowReader           = "slow reader"
)

// warnLimiter lets through at most one warning per reason per interval and counts the rest.
// The issue it answers: a held connection flood once produced 15,924 identical lines.
type warnLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	reasons  map[string]*warnBudget
}

type warnBudget struct {
	last       time.Time
	suppressed uint64 // warnings withheld since last
}

func newWarnLimiter(interval time.Duration) *warnLimiter {
	return &warnLimiter{interval: interval, reasons: make(map[string]*warnBudget)}
}

// allow reports whether a warning for reason may be logged now, and how many were withheld
// since the last one that was.
func (w *warnLimiter) allow(reason string, now time.Time) (ok bool, suppressed uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.reasons[reason]
	if b == nil {
		b = &warnBudget{}
		w.reasons[reason] = b
	}
	if !b.last.IsZero() && now.Sub(b.last) < w.interval {
		b.suppressed++
		return false, 0
	}
	suppressed, b.suppressed, b.last = b.suppressed, 0, now
	return true, suppressed
}

// warn logs msg at warning level unless reason already had its line this interval; withheld
// lines are counted in Stats.WarningsSuppressed and reported by the next line of the reason.
func (s *Server) warn(reason, msg string, attrs ...any) {
	ok, suppressed := s.warnings.allow(reason, time.Now())
	if !ok {
		s.stats.warningsSuppressed.Add(1)
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressedSinceLast", suppressed)
	}
	s.log.Warn(msg, attrs...)
}
