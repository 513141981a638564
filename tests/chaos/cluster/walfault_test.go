package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpaxos/mpaxos/wal"
)

// These tests damage a real WAL the way the chaos test damages a replica's, and check that
// wal.Open reacts as its contract says: cut a torn tail, refuse corruption naming the file.

func writeWAL(t *testing.T, dir string, segmentBytes int64, batches int) {
	t.Helper()
	opts := wal.DefaultOptions(dir)
	opts.SegmentBytes = segmentBytes
	opts.NoSync = true
	w, err := wal.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < batches; i++ {
		rec := wal.Record{Type: 1, Key: uint64(i), Payload: []byte(fmt.Sprintf("record %04d %s", i, strings.Repeat("x", 100)))}
		if err := w.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func replayKeys(t *testing.T, dir string) ([]uint64, error) {
	t.Helper()
	w, err := wal.Open(wal.DefaultOptions(dir))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	var keys []uint64
	err = w.Replay(func(r wal.Record) error { keys = append(keys, r.Key); return nil })
	return keys, err
}

func walCluster(t *testing.T) *Cluster {
	c, err := New(Config{Binary: "unused", Replicas: 1, BaseDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTearWALIsCutAndKeepsEveryRecord(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		c := walCluster(t)
		dir := filepath.Join(c.Node(1).DataDir, "wal")
		writeWAL(t, dir, 1<<20, 20)
		what, err := c.TearWAL(1, rand.New(rand.NewPCG(seed, 1)))
		if err != nil {
			t.Fatal(err)
		}
		keys, err := replayKeys(t, dir)
		if err != nil {
			t.Fatalf("seed %d: %s: Open refused a torn tail: %v", seed, what, err)
		}
		if len(keys) != 20 {
			t.Fatalf("seed %d: %s: %d records survive, want 20", seed, what, len(keys))
		}
	}
}

func TestCorruptWALIsRefusedNamingTheFile(t *testing.T) {
	for _, tc := range []struct {
		name         string
		segmentBytes int64
	}{
		{"last segment", 1 << 20},
		{"several segments", 4096},
	} {
		for seed := uint64(1); seed <= 4; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", tc.name, seed), func(t *testing.T) {
				c := walCluster(t)
				dir := filepath.Join(c.Node(1).DataDir, "wal")
				writeWAL(t, dir, tc.segmentBytes, 60)
				file, offset, what, err := c.CorruptWAL(1, rand.New(rand.NewPCG(seed, 2)))
				if err != nil {
					t.Fatal(err)
				}
				_, err = replayKeys(t, dir)
				var corruption *wal.CorruptionError
				if !errors.Is(err, wal.ErrCorrupt) || !errors.As(err, &corruption) {
					t.Fatalf("%s: Open: %v, want a corruption error", what, err)
				}
				if corruption.File != filepath.Base(file) {
					t.Fatalf("%s: error names %s, damage is in %s (offset %d)", what, corruption.File, filepath.Base(file), offset)
				}
			})
		}
	}
}

func TestWALDamageNeedsAStoppedReplicaAndData(t *testing.T) {
	c := walCluster(t)
	rng := rand.New(rand.NewPCG(1, 1))
	if _, err := c.TearWAL(1, rng); !errors.Is(err, ErrNoWAL) {
		t.Fatalf("tear of an empty dir: %v", err)
	}
	writeWAL(t, filepath.Join(c.Node(1).DataDir, "wal"), 1<<20, 1)
	if _, _, _, err := c.CorruptWAL(1, rng); !errors.Is(err, ErrNoWAL) {
		t.Fatalf("corrupting a single-batch WAL: %v", err)
	}
	c.Node(1).state = Running
	if _, err := c.TearWAL(1, rng); !errors.Is(err, ErrState) {
		t.Fatalf("tear of a running replica: %v", err)
	}
	c.Node(1).state = Stopped
}
