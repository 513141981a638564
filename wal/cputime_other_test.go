//go:build !linux

package wal

import "time"

// processCPU is not measured off Linux; the CPU metrics then read zero.
func processCPU() time.Duration { return 0 }
