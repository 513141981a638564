// Package replicalog reads the log a stopped mpaxos replica has applied, straight from its
// data directory, so a fault test can compare every replica's log command by command.
//
// It mirrors what a replica does on restart (pipeline.recoverPersisted and core's restore):
// the latest WAL record per slot wins; every slot below the hard state's commit point is
// chosen, and so is each following slot stored with core.ChosenBallot (learned through
// catch-up before the commit point reached the disk). Chosen values are batches of commands.
// A command whose (client id, seq) pair was applied earlier in the log is a duplicate: the
// exactly-once rule itself, deliberately not the server's bounded table, so a server that
// skips a command it never applied (or applies a retry twice) shows up as a different
// duplicate count from the one it reports. Digests are computed as
// pipeline.AppliedState.Digest is, so a log read here can be matched against a replica's
// /debug/applied taken before it stopped.
//
// The data-dir format comes from pipeline/storage.go (record type 1: Key = slot, payload =
// ballot round u64 LE, ballot replica u32 LE, value; hard state: promised round u64, promised
// replica u32, commit u64, all LE). If the pipeline changes it, Read fails with an error that
// names the record; update the constants here.
package replicalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/pipeline"
	"github.com/mpaxos/mpaxos/wal"
)

// The pipeline's data-dir format (pipeline/storage.go).
const (
	recordEntry     uint8 = 1
	entryHeaderSize       = 8 + 4
	hardStateSize         = 8 + 4 + 8
)

// ErrFormat: the data directory holds something this reader does not understand.
var ErrFormat = errors.New("replicalog: unexpected data-dir format")

// Command is one command of the chosen log, in log order.
type Command struct {
	Slot      uint64
	Index     uint32
	ClientID  uint64
	Seq       uint64
	Payload   []byte
	Duplicate bool // a retry of a command applied earlier: not applied again
}

// Point is the log's position and digest after one slot: equal to pipeline.AppliedState's
// Slot and Digest when the replica had applied exactly that far.
type Point struct {
	Slot       uint64 // every slot below it is included
	Commands   uint64 // duplicates included, as pipeline.AppliedState counts them
	Duplicates uint64
	Digest     uint64
}

// Log is a replica's chosen log.
type Log struct {
	Commands []Command
	Slots    uint64  // every slot below it is chosen
	Points   []Point // one per slot, in order (Points[i].Slot == i+1)
	Commit   uint64  // the hard state's commit point
}

// Applied returns the commands that took effect, in offset order: duplicates and empty
// markers (reads, barriers) left out, as they take no offset. This is the logical log.
func (l *Log) Applied() []Command {
	var out []Command
	for _, c := range l.Commands {
		if !c.Duplicate && !pipeline.IsMarker(c.Payload) {
			out = append(out, c)
		}
	}
	return out
}

// At returns the point after the slots below slot, if the log reaches it.
func (l *Log) At(slot uint64) (Point, bool) {
	if slot == 0 {
		return Point{Digest: pipeline.DigestStart}, true
	}
	if slot > uint64(len(l.Points)) {
		return Point{}, false
	}
	return l.Points[slot-1], true
}

// Read reads the chosen log of the replica whose data directory is dataDir. The replica must
// be stopped. The directory is copied to scratch first (a fresh directory the caller owns),
// because opening a WAL may cut a torn tail and the evidence should stay as the replica left
// it.
func Read(dataDir, scratch string) (*Log, error) {
	return ReadUpTo(dataDir, scratch, 0)
}

// ReadUpTo is Read, but it also takes every slot below slots as chosen: the latest entry the
// replica stored for it. The commit point on disk may lag what the replica applied (the
// pipeline saves a commit-only change lazily and re-learns it after a restart), so a caller
// that knows how far the replica applied (its /debug/applied slot) reads that far and must
// then compare Log.At(slots).Digest with the digest the replica reported: equal digests
// prove the stored entries are the values it applied.
func ReadUpTo(dataDir, scratch string, slots uint64) (*Log, error) {
	walDir, err := findWAL(dataDir)
	if err != nil {
		return nil, err
	}
	if walDir == "" {
		return &Log{}, nil // never wrote anything
	}
	copyDir := filepath.Join(scratch, "wal")
	if err := copyFiles(walDir, copyDir); err != nil {
		return nil, err
	}
	opts := wal.DefaultOptions(copyDir)
	opts.NoSync = true
	w, err := wal.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("replicalog: open WAL copied from %s: %w", walDir, err)
	}
	defer w.Close()
	var hs core.HardState
	if b := w.HardState(); b != nil {
		if len(b) != hardStateSize {
			return nil, fmt.Errorf("replicalog: hard state of %d bytes, want %d: %w", len(b), hardStateSize, ErrFormat)
		}
		hs.Promised = codec.Ballot{Round: binary.LittleEndian.Uint64(b), Replica: binary.LittleEndian.Uint32(b[8:])}
		hs.Commit = binary.LittleEndian.Uint64(b[12:])
	}
	latest := make(map[uint64]codec.Entry)
	err = w.Replay(func(r wal.Record) error {
		if r.Type != recordEntry {
			return fmt.Errorf("replicalog: record for key %d has type %d: %w", r.Key, r.Type, ErrFormat)
		}
		if len(r.Payload) < entryHeaderSize {
			return fmt.Errorf("replicalog: entry for slot %d is %d bytes: %w", r.Key, len(r.Payload), ErrFormat)
		}
		latest[r.Key] = codec.Entry{
			Slot:   r.Key,
			Ballot: codec.Ballot{Round: binary.LittleEndian.Uint64(r.Payload), Replica: binary.LittleEndian.Uint32(r.Payload[8:])},
			Value:  append([]byte(nil), r.Payload[entryHeaderSize:]...),
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replicalog: replay %s: %w", walDir, err)
	}
	return build(latest, hs.Commit, slots)
}

// build walks the chosen slots from 0 and decodes their batches.
func build(latest map[uint64]codec.Entry, commit uint64, upTo uint64) (*Log, error) {
	l := &Log{Commit: commit}
	// The same exactly-once table the replicas apply with (same limits), so "duplicate" means
	// here exactly what it means in the pipeline's apply stage.
	defaults := pipeline.DefaultConfig()
	sessions := core.NewSessionsBounded(defaults.SessionsMax, defaults.SessionSeqsMax)
	lim := codec.DefaultLimits()
	var it codec.BatchIter
	digest := pipeline.DigestStart
	var commands, duplicates uint64
	for slot := uint64(0); ; slot++ {
		e, ok := latest[slot]
		if slot >= commit && slot >= upTo && (!ok || e.Ballot != core.ChosenBallot) {
			break
		}
		if !ok {
			return nil, fmt.Errorf("replicalog: commit point %d, reading up to slot %d, but no entry for slot %d: %w", commit, upTo, slot, ErrFormat)
		}
		digest = pipeline.DigestSlot(digest, slot, e.Value)
		if len(e.Value) > 0 {
			if err := it.Reset(e.Value, &lim); err != nil {
				return nil, fmt.Errorf("replicalog: slot %d: %w", slot, err)
			}
			for it.Next() {
				cmd := it.Command()
				index := uint32(it.Index())
				r := sessions.ApplyCommand(cmd.ClientID, cmd.Seq, cmd.SeqFloor, slot, index, commands)
				dup := r.Outcome == core.SessionDuplicate
				if dup {
					duplicates++
				}
				commands++
				l.Commands = append(l.Commands, Command{Slot: slot, Index: index, ClientID: cmd.ClientID,
					Seq: cmd.Seq, Payload: append([]byte(nil), cmd.Payload...), Duplicate: dup})
			}
			if err := it.Err(); err != nil {
				return nil, fmt.Errorf("replicalog: slot %d: %w", slot, err)
			}
		}
		l.Slots = slot + 1
		l.Points = append(l.Points, Point{Slot: slot + 1, Commands: commands, Duplicates: duplicates, Digest: digest})
	}
	return l, nil
}

// findWAL returns the directory under dataDir that holds WAL segments, "" if none.
func findWAL(dataDir string) (string, error) {
	found := ""
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(d.Name(), ".wal") || d.Name() == "hardstate") {
			dir := filepath.Dir(path)
			if found != "" && found != dir {
				return fmt.Errorf("replicalog: WAL files in both %s and %s: %w", found, dir, ErrFormat)
			}
			found = dir
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("replicalog: find WAL under %s: %w", dataDir, err)
	}
	return found, nil
}

// copyFiles copies the regular files of src (not subdirectories, not the lock) into dst.
func copyFiles(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
