package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDiskStallSwitchesTheControlFileEachReplicaWasGiven: with FaultHooks every replica gets
// its own control file on its command line; StallDisk creates it, ReleaseDisk removes it.
// Without FaultHooks both refuse.
func TestDiskStallSwitchesTheControlFileEachReplicaWasGiven(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAOS_FAKE_SERVE", "1")
	c, err := New(Config{Binary: self, Replicas: 2, BaseDir: t.TempDir(), FaultHooks: true,
		ReadyTimeout: 10 * time.Second, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, n := range c.Nodes() {
		got, err := os.ReadFile(filepath.Join(n.DataDir, "stall-hook"))
		if err != nil || string(got) != n.DiskStallFile || n.DiskStallFile == "" {
			t.Fatalf("replica %d was given --fault-disk-stall-file %q (%v), want %q", n.ID, got, err, n.DiskStallFile)
		}
		files[n.DiskStallFile] = true
	}
	if len(files) != 2 {
		t.Fatalf("replicas share a control file: %v", files)
	}
	if err := c.StallDisk(2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Node(2).DiskStallFile); err != nil {
		t.Fatalf("stalled, yet no control file: %v", err)
	}
	if _, err := os.Stat(c.Node(1).DiskStallFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replica 1's control file: %v, want none", err)
	}
	if err := c.ReleaseDisk(2); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseDisk(2); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if _, err := os.Stat(c.Node(2).DiskStallFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released, yet the control file is there: %v", err)
	}

	plain := newFakeCluster(t, 1)
	if err := plain.StallDisk(1); !errors.Is(err, ErrNoFaultHooks) {
		t.Fatalf("StallDisk without fault hooks: %v, want ErrNoFaultHooks", err)
	}
}
