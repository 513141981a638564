//go:build !linux

package bench

func newSleeper() sleeper { return newTimerSleeper() }
