package wal

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used: benchmarks report CPU
// per record, which wall-clock ns/op hides when the writer mostly waits for the disk.
func processCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
