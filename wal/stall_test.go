package wal

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// stallHeldFor is how long the stall tests check that nothing completes: many times the
// poll interval and a real fdatasync, so a hook that lets a sync through would show.
const stallHeldFor = 300 * time.Millisecond

// TestStallFSHoldsSyncsWhileControlFileExists: with the control file present, neither an
// append nor a hard-state save completes; once it is removed both complete, nothing is lost,
// and the log reopens with every record.
func TestStallFSHoldsSyncsWhileControlFileExists(t *testing.T) {
	dir := t.TempDir()
	control := filepath.Join(t.TempDir(), "stall")
	stall := NewStallFS(OSFS(), control, nil)
	options := DefaultOptions(dir)
	options.SegmentBytes = 64 << 10
	options.FS = stall
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Append(testRecord(1)); err != nil {
		t.Fatal(err) // no control file: the hook is transparent
	}
	if stall.Stalls() != 0 {
		t.Fatalf("%d syncs stalled without a control file", stall.Stalls())
	}

	if err := os.WriteFile(control, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	appended := make(chan error, 1)
	if err := w.AppendAsync([]Record{testRecord(2)}, func(err error) { appended <- err }); err != nil {
		t.Fatal(err)
	}
	saved := make(chan error, 1)
	go func() { saved <- w.SaveHardState([]byte("promised=3")) }()
	select {
	case err := <-appended:
		t.Fatalf("append completed (err %v) while the disk was stalled", err)
	case err := <-saved:
		t.Fatalf("hard-state save completed (err %v) while the disk was stalled", err)
	case <-time.After(stallHeldFor):
	}
	if stall.Stalls() == 0 {
		t.Fatal("nothing completed, yet no sync counts as stalled")
	}

	if err := os.Remove(control); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"append": appended, "hard-state save": saved} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s after release: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still waiting 10 s after the control file was removed", name)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	options.FS = nil
	reopened, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if got := replayKeys(t, reopened); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("after release and reopen: keys %v, want [1 2]", got)
	}
	if got := string(reopened.HardState()); got != "promised=3" {
		t.Fatalf("hard state %q, want %q", got, "promised=3")
	}
}

// TestStallFSFailsOpen: a control path that cannot be examined (here, under a regular file)
// never stalls the disk; the hook only acts on a file that exists.
func TestStallFSFailsOpen(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stall := NewStallFS(OSFS(), filepath.Join(notDir, "stall"), nil)
	options := DefaultOptions(t.TempDir())
	options.SegmentBytes = 64 << 10
	options.FS = stall
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	done := make(chan error, 1)
	go func() { done <- w.Append(testRecord(1)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("append stalled on a control path that cannot exist")
	}
	if stall.Stalls() != 0 {
		t.Fatalf("%d syncs stalled", stall.Stalls())
	}
}
