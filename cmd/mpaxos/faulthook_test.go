package main

import (
	"path/filepath"
	"testing"

	"github.com/mpaxos/mpaxos/wal"
)

// TestFaultHookOnlyWithItsFlag: the WAL's stall hook is wired in only when
// --fault-disk-stall-file is given; without it the WAL runs on the plain file system.
func TestFaultHookOnlyWithItsFlag(t *testing.T) {
	base := []string{"--id", "1", "--peers", "1=127.0.0.1:1", "--data", t.TempDir(), "--secret", testSecret}
	noEnv := func(string) string { return "" }
	o, err := parseServe(base, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.WALFS != nil {
		t.Fatalf("no flag, yet the WAL file system is %T", o.cfg.WALFS)
	}
	control := filepath.Join(t.TempDir(), "stall")
	o, err = parseServe(append(base, "--fault-disk-stall-file", control), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := o.cfg.WALFS.(*wal.StallFS); !ok {
		t.Fatalf("--fault-disk-stall-file: WAL file system %T, want *wal.StallFS", o.cfg.WALFS)
	}
}
