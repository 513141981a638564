//go:build !linux

package wal

import "os"

func dataSync(f *os.File, _ int) error { return f.Sync() }

func preallocate(f *os.File, _ int, size int64) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.Size() >= size {
		return nil
	}
	return f.Truncate(size)
}

// lockFile is a no-op where flock is not wired up; a second opener is not detected.
func lockFile(*os.File) error { return nil }
