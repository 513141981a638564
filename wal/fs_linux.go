package wal

import (
	"errors"
	"os"
	"syscall"
)

// dataSync is fdatasync: it flushes the data and the metadata needed to read it back (the
// size), not timestamps, which saves a journal write per call.
func dataSync(_ *os.File, fd int) error {
	for {
		err := syscall.Fdatasync(fd)
		if err != syscall.EINTR {
			return err
		}
	}
}

// preallocate reserves blocks with fallocate so later writes do not allocate (no metadata
// journalling per fdatasync). File systems without fallocate get a sparse ftruncate.
func preallocate(f *os.File, fd int, size int64) error {
	for {
		err := syscall.Fallocate(fd, 0, 0, size)
		switch {
		case err == nil:
			return nil
		case err == syscall.EINTR:
			continue
		case errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS):
			info, statErr := f.Stat()
			if statErr != nil {
				return statErr
			}
			if info.Size() >= size {
				return nil
			}
			return f.Truncate(size)
		default:
			return err
		}
	}
}

func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
