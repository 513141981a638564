package bench

import (
	"context"
	"testing"
	"time"
)

func sleepers() map[string]func() sleeper {
	return map[string]func() sleeper{
		"timer":    func() sleeper { return newTimerSleeper() },
		"platform": newSleeper,
	}
}

func TestSleeperWaitsAtLeastTheDuration(t *testing.T) {
	for name, mk := range sleepers() {
		s := mk()
		for _, d := range []time.Duration{0, 50 * time.Microsecond, 3 * time.Millisecond} {
			t0 := time.Now()
			if !s.sleep(context.Background(), d) {
				t.Fatalf("%s: sleep(%v) reported a done context", name, d)
			}
			if got := time.Since(t0); got < d {
				t.Errorf("%s: sleep(%v) returned after %v", name, d, got)
			}
		}
		s.close()
	}
}

func TestSleeperEndsWithItsContext(t *testing.T) {
	for name, mk := range sleepers() {
		s := mk()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		t0 := time.Now()
		if s.sleep(ctx, time.Minute) {
			t.Errorf("%s: a sleep cut short by its context reported true", name)
		}
		if got := time.Since(t0); got > 10*time.Second {
			t.Errorf("%s: the sleep ended %v after it was asked to, not with its context", name, got)
		}
		if s.sleep(ctx, time.Minute) {
			t.Errorf("%s: a sleep on a done context reported true", name)
		}
		s.close()
	}
}

// BenchmarkSleep200us shows what a 200 µs pacer tick really sleeps in a process with nothing
// else to do: about 1.08 ms with a Go timer (the poller waits in whole milliseconds) and
// about 0.23 ms with the Linux timerfd sleeper.
func BenchmarkSleep200us(b *testing.B) {
	for name, mk := range sleepers() {
		b.Run(name, func(b *testing.B) {
			s := mk()
			defer s.close()
			for b.Loop() {
				s.sleep(context.Background(), 200*time.Microsecond)
			}
		})
	}
}
