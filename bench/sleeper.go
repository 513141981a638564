package bench

import (
	"context"
	"time"
)

// sleeper is what the open-loop pacer sleeps on. Go's timers wake a process that is
// otherwise idle no sooner than a millisecond after they are due when they are set for less
// than one (the runtime's poller waits in whole milliseconds), so a pacer ticking every
// 200 µs on a quiet generator slept up to 1 ms and counted it as latency (send lag p99
// 0.7-0.9 ms at 100k req/s). On Linux a timerfd in the poller wakes within microseconds.
type sleeper interface {
	// sleep waits for d or until ctx is done; it reports false when ctx is done.
	sleep(ctx context.Context, d time.Duration) bool
	close()
}

// timerSleeper is the portable sleeper: a time.Timer.
type timerSleeper struct{ t *time.Timer }

func newTimerSleeper() *timerSleeper {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerSleeper{t: t}
}

func (s *timerSleeper) sleep(ctx context.Context, d time.Duration) bool {
	s.t.Reset(d)
	select {
	case <-s.t.C:
		return true
	case <-ctx.Done():
		s.t.Stop()
		return false
	}
}

func (s *timerSleeper) close() { s.t.Stop() }
