package wal

import (
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// stallPollInterval is how often a stalled sync looks at its control file again: a release
// is noticed within about this long, and a stalled sync costs one stat per interval.
const stallPollInterval = 5 * time.Millisecond

// StallFS is a fault hook for tests of real processes (see doc.go, "Fault hook"): an FS
// whose syncs (File.Sync and SyncDir) do not start while the file at its control path
// exists, as if the disk had stopped completing writes. Writes still reach the page cache;
// only their durability waits, so every Append, AppendAsync and SaveHardState waits with it.
// Removing the control file lets every waiting sync go on to the real one. A log opened on
// a stalled StallFS waits in Open, whose recovery syncs too.
type StallFS struct {
	FS
	control string
	logger  *slog.Logger
	// stalls counts syncs that found the control file and waited.
	stalls atomic.Uint64
}

// NewStallFS wraps inner; its syncs wait while controlPath exists. logger (nil discards)
// receives a line when a sync starts waiting and when it is released.
func NewStallFS(inner FS, controlPath string, logger *slog.Logger) *StallFS {
	if inner == nil || controlPath == "" {
		panic("wal: NewStallFS needs a file system and a control path")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &StallFS{FS: inner, control: controlPath, logger: logger}
}

// Stalls returns how many syncs have waited for the control file to go.
func (s *StallFS) Stalls() uint64 { return s.stalls.Load() }

// OpenFile opens the file in the inner FS; its Sync waits while the control file exists.
func (s *StallFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := s.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &stallFile{File: f, fs: s, name: name}, nil
}

// SyncDir waits while the control file exists, then syncs dir in the inner FS.
func (s *StallFS) SyncDir(dir string) error {
	s.waitWhileStalled(dir)
	return s.FS.SyncDir(dir)
}

// stalled reports whether the control file exists. An error other than "does not exist"
// (permissions, a bad path) also counts as absent: the hook fails open, never stalling a
// disk by accident.
func (s *StallFS) stalled() bool {
	_, err := os.Stat(s.control)
	return err == nil
}

// waitWhileStalled returns once the control file is absent; name is the file whose sync
// waits, for the log.
func (s *StallFS) waitWhileStalled(name string) {
	if !s.stalled() {
		return
	}
	s.stalls.Add(1)
	began := time.Now()
	s.logger.Warn("wal: fault hook: sync stalled while the control file exists", "file", name,
		"control", s.control)
	for s.stalled() {
		time.Sleep(stallPollInterval)
	}
	s.logger.Warn("wal: fault hook: sync released", "file", name, "stalled", time.Since(began))
}

type stallFile struct {
	File
	fs   *StallFS
	name string
}

func (f *stallFile) Sync() error {
	f.fs.waitWhileStalled(f.name)
	return f.File.Sync()
}
