package bench

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fdSleeper sleeps on a non-blocking timerfd read through Go's poller: the poller's epoll
// wakes when the timer fires, not at its next whole millisecond.
type fdSleeper struct {
	f   *os.File
	fd  int
	buf [8]byte
}

// newSleeper returns a timerfd sleeper, or the portable one if the kernel refuses.
func newSleeper() sleeper {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return newTimerSleeper()
	}
	// A non-blocking descriptor is registered with the poller: Read parks the goroutine.
	return &fdSleeper{f: os.NewFile(uintptr(fd), "open-loop-timerfd"), fd: fd}
}

func (s *fdSleeper) arm(d time.Duration) error {
	d = max(d, time.Nanosecond) // zero would disarm it
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	return unix.TimerfdSettime(s.fd, 0, &spec, nil)
}

func (s *fdSleeper) sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	if err := s.arm(d); err != nil {
		return sleepContextOK(ctx, d)
	}
	// ctx ending fires the timer at once; the read then returns and ctx is checked.
	stop := context.AfterFunc(ctx, func() { _ = s.arm(time.Nanosecond) })
	_, err := s.f.Read(s.buf[:])
	stop()
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return sleepContextOK(ctx, d)
	}
	return ctx.Err() == nil
}

func (s *fdSleeper) close() { _ = s.f.Close() }

// sleepContextOK is sleepContext reporting whether ctx is still live.
func sleepContextOK(ctx context.Context, d time.Duration) bool {
	sleepContext(ctx, d)
	return ctx.Err() == nil
}
