package pipeline

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSnapshotFileRoundTripsAndRejectsDamage(t *testing.T) {
	dir := t.TempDir()
	meta := &snapshotMeta{slot: 77, nextOffset: 1234, sessions: []byte("sessions-bytes"),
		applied: AppliedState{Slot: 77, Offset: 1234, Commands: 1300, Duplicates: 66, Digest: 0xfeed}}
	app := bytes.Repeat([]byte("application state "), 1000)
	if err := writeSnapshot(dir, meta, bytes.NewReader(app), false); err != nil {
		t.Fatal(err)
	}
	got, f, size, err := readSnapshotMeta(filepath.Join(dir, snapshotName(77)))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(f)
	_ = f.Close()
	if got.slot != 77 || got.nextOffset != 1234 || got.applied != meta.applied ||
		!bytes.Equal(got.sessions, meta.sessions) || !bytes.Equal(rest, app) || size != int64(len(app)) {
		t.Fatalf("read back %+v with %d application bytes", got, len(rest))
	}
	latest, err := loadLatestSnapshot(dir)
	if err != nil || latest == nil || latest.slot != 77 {
		t.Fatalf("loadLatestSnapshot = %+v, %v", latest, err)
	}

	// One flipped byte anywhere is caught and named.
	path := filepath.Join(dir, snapshotName(77))
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := readSnapshotMeta(path); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("damaged snapshot: %v, want ErrSnapshot", err)
	}
	if _, err := loadLatestSnapshot(dir); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("start from a damaged snapshot: %v, want ErrSnapshot", err)
	}
}

func TestListSnapshotsSortsAndRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{snapshotName(30), snapshotName(4), "snap-x.snap", snapshotName(9) + ".tmp"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slots, err := listSnapshots(dir, true)
	if err != nil || len(slots) != 2 || slots[0] != 4 || slots[1] != 30 {
		t.Fatalf("listSnapshots = %v, %v", slots, err)
	}
	if _, err := os.Stat(filepath.Join(dir, snapshotName(9)+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("leftover temporary file not removed: %v", err)
	}
}

func TestLogIndexMapsOffsetsToSlotsSkippingDuplicatesAndMarkers(t *testing.T) {
	x := newLogIndex()
	// Slot 3: indexes 0, 2 take offsets 0, 1 (index 1 is a duplicate); slot 4 is a no-op;
	// slot 5: index 0 is a marker, index 1 takes offset 2.
	x.publish([]slotOffsets{{slot: 3, first: 0, count: 2, skip: []uint32{1}}, {slot: 5, first: 2, count: 1, skip: []uint32{0}}}, 3, 6)
	cases := []struct {
		slot   uint64
		index  uint32
		offset uint64
		ok     bool
	}{{3, 0, 0, true}, {3, 1, 0, false}, {3, 2, 1, true}, {5, 0, 0, false}, {5, 1, 2, true}, {6, 0, 0, false}}
	for _, c := range cases {
		off, err := x.offsetAt(c.slot, c.index)
		if (err == nil) != c.ok || c.ok && off != c.offset {
			t.Errorf("offsetAt(%d, %d) = %d, %v; want %d ok=%v", c.slot, c.index, off, err, c.offset, c.ok)
		}
	}
	if through, err := x.offsetsThrough(5, 0); err != nil || through != 2 {
		t.Errorf("offsetsThrough(5, 0) = %d, %v; want 2 (a marker takes none)", through, err)
	}
	if p, err := x.find(2); err != nil || p.slot != 5 {
		t.Errorf("find(2) = %+v, %v", p, err)
	}
	if _, err := x.find(3); !errors.Is(err, ErrNotApplied) {
		t.Errorf("find(3) beyond the end: %v", err)
	}
	if first := x.trimBelow(4); first != 2 {
		t.Errorf("trimBelow(4) = %d, want 2", first)
	}
	if _, err := x.find(1); !errors.Is(err, ErrCompacted) {
		t.Errorf("find(1) after trim: %v, want ErrCompacted", err)
	}
}

func TestSnapshotConfigValidateNamesTheField(t *testing.T) {
	cases := map[string]func(*SnapshotConfig){
		"Snapshot.EveryCommands": func(c *SnapshotConfig) { c.EveryCommands = 0 },
		"Snapshot.EveryBytes":    func(c *SnapshotConfig) { c.EveryBytes = -1 },
		"Snapshot.ChunkBytes":    func(c *SnapshotConfig) { c.ChunkBytes = 1 << 30 },
		"Snapshot.ChunkWindow":   func(c *SnapshotConfig) { c.ChunkWindow = 1 << 20 },
		"Snapshot.RetryInterval": func(c *SnapshotConfig) { c.RetryInterval = 0 },
	}
	for field, mutate := range cases {
		c := DefaultSnapshotConfig()
		mutate(&c)
		err := c.validate(16<<20, 64<<20)
		if !errors.Is(err, ErrInvalidConfig) || !bytes.Contains([]byte(err.Error()), []byte(field)) {
			t.Errorf("%s: %v", field, err)
		}
	}
}
