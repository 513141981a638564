package replicalog

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/wal"
)

// writeReplica writes a data dir in the pipeline's format: entries (slot -> ballot, batch)
// appended in order, then the hard state.
func writeReplica(t *testing.T, dir string, entries []codec.Entry, commit uint64) {
	t.Helper()
	opts := wal.DefaultOptions(filepath.Join(dir, "wal"))
	opts.NoSync = true
	w, err := wal.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := binary.LittleEndian.AppendUint64(nil, e.Ballot.Round)
		p = binary.LittleEndian.AppendUint32(p, e.Ballot.Replica)
		p = append(p, e.Value...)
		if err := w.Append(wal.Record{Type: recordEntry, Key: e.Slot, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	hs := binary.LittleEndian.AppendUint64(nil, 3)
	hs = binary.LittleEndian.AppendUint32(hs, 1)
	hs = binary.LittleEndian.AppendUint64(hs, commit)
	if err := w.SaveHardState(hs); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func batch(cmds ...codec.Command) []byte { return codec.AppendBatch(nil, cmds) }

func TestReadFollowsCommitLatestRecordsAndDuplicates(t *testing.T) {
	dir := t.TempDir()
	b1 := codec.Ballot{Round: 1, Replica: 1}
	b2 := codec.Ballot{Round: 2, Replica: 2}
	writeReplica(t, dir, []codec.Entry{
		{Slot: 0, Ballot: b1, Value: batch(codec.Command{ClientID: 7, Seq: 1, Payload: []byte("a")})},
		{Slot: 1, Ballot: b1, Value: batch(codec.Command{ClientID: 7, Seq: 2, Payload: []byte("stale")})},
		{Slot: 1, Ballot: b2, Value: batch(codec.Command{ClientID: 7, Seq: 2, Payload: []byte("b")}, codec.Command{ClientID: 8, Seq: 1, Payload: []byte("c")})},
		{Slot: 2, Ballot: b2, Value: nil}, // no-op
		{Slot: 3, Ballot: b2, Value: batch(codec.Command{ClientID: 7, Seq: 2, Payload: []byte("b")})}, // a retry
		{Slot: 4, Ballot: core.ChosenBallot, Value: batch(codec.Command{ClientID: 9, Seq: 1, Payload: []byte("d")})},
		{Slot: 5, Ballot: b2, Value: batch(codec.Command{ClientID: 9, Seq: 2, Payload: []byte("not chosen")})},
	}, 4)
	l, err := Read(dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if l.Slots != 5 || l.Commit != 4 || len(l.Points) != 5 {
		t.Fatalf("slots %d commit %d points %d; want 5, 4, 5", l.Slots, l.Commit, len(l.Points))
	}
	var got []string
	for _, c := range l.Applied() {
		got = append(got, string(c.Payload))
	}
	if want := []string{"a", "b", "c", "d"}; len(got) != len(want) || got[0] != "a" || got[1] != "b" || got[2] != "c" || got[3] != "d" {
		t.Fatalf("applied %q, want %q", got, want)
	}
	if len(l.Commands) != 5 || !l.Commands[3].Duplicate || l.Commands[3].Slot != 3 {
		t.Fatalf("commands %+v: want the retry at slot 3 marked duplicate", l.Commands)
	}
	if l.Commands[2].Slot != 1 || l.Commands[2].Index != 1 {
		t.Fatalf("command c at %d.%d, want 1.1", l.Commands[2].Slot, l.Commands[2].Index)
	}
	p2, _ := l.At(2)
	p5, _ := l.At(5)
	if p2.Digest == p5.Digest || p5.Commands != 5 || p5.Duplicates != 1 || p2.Duplicates != 0 {
		t.Fatalf("points %+v %+v", p2, p5)
	}
	if _, ok := l.At(6); ok {
		t.Fatal("At beyond the log succeeded")
	}
}

func TestReadRefusesAGapBelowCommit(t *testing.T) {
	dir := t.TempDir()
	b := codec.Ballot{Round: 1, Replica: 1}
	writeReplica(t, dir, []codec.Entry{{Slot: 0, Ballot: b}, {Slot: 2, Ballot: b}}, 3)
	if _, err := Read(dir, t.TempDir()); !errors.Is(err, ErrFormat) {
		t.Fatalf("gap below commit: %v, want ErrFormat", err)
	}
}

func TestReadEmptyDataDir(t *testing.T) {
	l, err := Read(t.TempDir(), t.TempDir())
	if err != nil || l.Slots != 0 || len(l.Commands) != 0 {
		t.Fatalf("empty dir: %+v, %v", l, err)
	}
}

func TestReadUpToTakesStoredEntriesBeyondTheCommitPoint(t *testing.T) {
	dir := t.TempDir()
	b := codec.Ballot{Round: 1, Replica: 1}
	writeReplica(t, dir, []codec.Entry{
		{Slot: 0, Ballot: b, Value: batch(codec.Command{ClientID: 1, Seq: 1, Payload: []byte("a")})},
		{Slot: 1, Ballot: b, Value: batch(codec.Command{ClientID: 1, Seq: 2, Payload: []byte("b")})},
		{Slot: 2, Ballot: b, Value: batch(codec.Command{ClientID: 1, Seq: 3, Payload: []byte("c")})},
	}, 1)
	l, err := ReadUpTo(dir, t.TempDir(), 3)
	if err != nil || l.Slots != 3 || len(l.Commands) != 3 {
		t.Fatalf("ReadUpTo 3 with commit 1: %+v, %v", l, err)
	}
	short, err := Read(dir, t.TempDir())
	if err != nil || short.Slots != 1 {
		t.Fatalf("Read with commit 1: %+v, %v", short, err)
	}
	p1, _ := l.At(1)
	q1, _ := short.At(1)
	if p1 != q1 {
		t.Fatalf("the common prefix differs: %+v vs %+v", p1, q1)
	}
	if _, err := ReadUpTo(dir, t.TempDir(), 4); !errors.Is(err, ErrFormat) {
		t.Fatalf("ReadUpTo past the stored entries: %v", err)
	}
}
