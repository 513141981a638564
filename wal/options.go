package wal

import (
	"errors"
	"fmt"
	"log/slog"
)

// Limits on Options, checked by Validate.
const (
	// SegmentBytesMin keeps room for a header and a useful number of records per segment.
	SegmentBytesMin = 4096
	// SegmentBytesMax keeps every batch length inside the u32 bodyBytes field.
	SegmentBytesMax = 1 << 30
	// HardStateBytesMax is the largest value SaveHardState accepts (one 4 KiB slot).
	HardStateBytesMax = hardStateSlotBytes - hardStateSlotHeaderSize
	// RecycledSegmentsLimit bounds Options.RecycledSegmentsMax (disk held by spares).
	RecycledSegmentsLimit = 1024
)

// Options configures a WAL. Start from DefaultOptions.
type Options struct {
	// Dir holds the segments, the hard-state file and the lock file; created if missing.
	Dir string
	// SegmentBytes is the size a segment is preallocated to and rotated at. Larger segments
	// mean fewer files and rotations; TruncateBefore frees space only in whole segments.
	SegmentBytes int64
	// QueueRecordsMax bounds the records queued or being written; appenders block beyond it.
	QueueRecordsMax int
	// QueueBytesMax bounds the encoded bytes queued or being written (memory is about twice
	// this, as two buffers alternate). One Append larger than this is rejected (ErrTooLarge).
	QueueBytesMax int
	// RecycledSegmentsMax is how many segment files TruncateBefore keeps, renamed to
	// <segment>.spare, for reuse as later segments instead of deleting them. A spare's
	// blocks are already written, so reusing it costs neither zero-filling a new file nor
	// the extent conversions of a fallocate'd one; it holds up to this many SegmentBytes of
	// disk. 0 deletes every truncated segment.
	RecycledSegmentsMax int
	// NoSync skips fdatasync: records are written but not durable. For tests and benchmarks:
	// after a machine crash many batches may be torn at once, which recovery can only report
	// as corruption.
	NoSync bool
	// Logger receives the one line a torn-tail repair writes. nil discards.
	Logger *slog.Logger
	// FS is the file system; nil means the operating system's. Tests inject faults here.
	FS FS
	// IndexKeys keeps, in memory, where the latest record of every key lies, so ReadKey
	// costs one positioned read (about 50 bytes per live key; Replay does not need it).
	IndexKeys bool

	// syncEachAppend makes the writer issue one write and one fdatasync per Append call
	// instead of one per round: the baseline the group-commit benchmarks compare against.
	syncEachAppend bool
}

// DefaultOptions returns the defaults for a log in dir: 64 MiB segments, at most 1<<20 records
// and 256 MiB queued, up to 2 truncated segments kept for reuse.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:                 dir,
		SegmentBytes:        64 << 20,
		QueueRecordsMax:     1 << 20,
		QueueBytesMax:       256 << 20,
		RecycledSegmentsMax: 2,
	}
}

// Validate reports the first field that is out of range.
func (o *Options) Validate() error {
	switch {
	case o.Dir == "":
		return fmt.Errorf("%w: Options.Dir is empty", ErrInvalidOptions)
	case o.SegmentBytes < SegmentBytesMin || o.SegmentBytes > SegmentBytesMax:
		return fmt.Errorf("%w: Options.SegmentBytes = %d, want %d..%d", ErrInvalidOptions,
			o.SegmentBytes, SegmentBytesMin, SegmentBytesMax)
	case o.QueueRecordsMax < 1:
		return fmt.Errorf("%w: Options.QueueRecordsMax = %d, want >= 1", ErrInvalidOptions,
			o.QueueRecordsMax)
	case o.QueueBytesMax < recordHeaderSize:
		return fmt.Errorf("%w: Options.QueueBytesMax = %d, want >= %d", ErrInvalidOptions,
			o.QueueBytesMax, recordHeaderSize)
	case o.RecycledSegmentsMax < 0 || o.RecycledSegmentsMax > RecycledSegmentsLimit:
		return fmt.Errorf("%w: Options.RecycledSegmentsMax = %d, want 0..%d", ErrInvalidOptions,
			o.RecycledSegmentsMax, RecycledSegmentsLimit)
	}
	return nil
}

// Errors returned by the package. Corruption found on disk is a *CorruptionError wrapping
// ErrCorrupt.
var (
	// ErrClosed: the WAL was closed; nothing was queued.
	ErrClosed = errors.New("wal: closed")
	// ErrCorrupt: the files hold damage that is not a torn tail; see CorruptionError.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrTooLarge: one call's records exceed QueueBytesMax, QueueRecordsMax or what fits in
	// one segment, or a hard state exceeds HardStateBytesMax. Nothing was queued.
	ErrTooLarge = errors.New("wal: too large")
	// ErrFailed: an earlier write or fdatasync failed. Records whose append returned this
	// error may or may not be on disk; reopen the WAL to find out.
	ErrFailed = errors.New("wal: failed after an I/O error")
	// ErrInvalidOptions: an Options field is out of range; the message names it.
	ErrInvalidOptions = errors.New("wal: invalid options")
	// ErrLocked: another WAL (in this or another process) holds the directory.
	ErrLocked = errors.New("wal: directory locked by another WAL")
)

// CorruptionError names where the log is damaged. Open returns it instead of dropping
// records that may have been acknowledged.
type CorruptionError struct {
	File   string // base name of the damaged file
	Offset int64  // byte offset of the damaged header or record
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: corrupt log: %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }
