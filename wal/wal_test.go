package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestAppendReplayReopenOnDisk(t *testing.T) {
	options := DefaultOptions(t.TempDir())
	options.SegmentBytes = 16 << 10 // several rotations
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for key := uint64(1); key <= 200; key++ {
		if err := w.Append(testRecord(key)); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
	}
	// One call with several records, and async calls.
	if err := w.Append(testRecord(201), testRecord(202), testRecord(203)); err != nil {
		t.Fatal(err)
	}
	want = append(want, 201, 202, 203)
	done := make(chan error, 10)
	for key := uint64(204); key < 214; key++ {
		if err := w.AppendAsync([]Record{testRecord(key)}, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
	}
	for range 10 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SaveHardState([]byte("promised=7")); err != nil {
		t.Fatal(err)
	}
	if got := replayKeys(t, w); !slices.Equal(got, want) {
		t.Fatalf("replay before reopen: %d keys, want %d", len(got), len(want))
	}
	st := w.Stats()
	if st.Records != uint64(len(want)) || st.Fsyncs == 0 || st.Segments < 3 ||
		st.FsyncLatencyP50 <= 0 || st.FsyncLatencyMax < st.FsyncLatencyP50 {
		t.Fatalf("stats %+v", st)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(testRecord(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	// Sealed segments are exactly as long as their data and named by their first index.
	names, _ := filepath.Glob(filepath.Join(options.Dir, "*.wal"))
	for i, name := range names[:len(names)-1] {
		info, _ := os.Stat(name)
		if info.Size() >= options.SegmentBytes {
			t.Errorf("sealed segment %d not truncated: %d bytes", i, info.Size())
		}
	}
	if filepath.Base(names[0]) != "00000000000000000001.wal" {
		t.Errorf("first segment %s", names[0])
	}

	w, err = Open(options)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := replayKeys(t, w); !slices.Equal(got, want) {
		t.Fatalf("replay after reopen: %d keys, want %d", len(got), len(want))
	}
	if got := string(w.HardState()); got != "promised=7" {
		t.Fatalf("HardState = %q", got)
	}
	if err := w.Append(testRecord(500)); err != nil {
		t.Fatal(err)
	}
	latest, err := w.LatestByKey()
	if err != nil || len(latest) != len(want)+1 || checkRecord(latest[500]) != nil {
		t.Fatalf("LatestByKey: %d records, err %v", len(latest), err)
	}
}

func TestLatestRecordForAKeyWins(t *testing.T) {
	w, err := Open(memOptions(newMemFS(), 8192))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, payload := range []string{"a", "b", "c"} {
		if err := w.Append(Record{Type: uint8(i), Key: 9, Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	latest, err := w.LatestByKey()
	if err != nil || string(latest[9].Payload) != "c" || latest[9].Type != 2 {
		t.Fatalf("latest = %+v, %v", latest[9], err)
	}
}

func TestOptionsValidationNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		field  string
		change func(*Options)
	}{
		{"Options.Dir", func(o *Options) { o.Dir = "" }},
		{"Options.SegmentBytes", func(o *Options) { o.SegmentBytes = 100 }},
		{"Options.SegmentBytes", func(o *Options) { o.SegmentBytes = 2 << 30 }},
		{"Options.RecycledSegmentsMax", func(o *Options) { o.RecycledSegmentsMax = -1 }},
		{"Options.RecycledSegmentsMax", func(o *Options) { o.RecycledSegmentsMax = RecycledSegmentsLimit + 1 }},
		{"Options.QueueRecordsMax", func(o *Options) { o.QueueRecordsMax = 0 }},
		{"Options.QueueBytesMax", func(o *Options) { o.QueueBytesMax = 3 }},
	} {
		o := DefaultOptions("/x")
		tc.change(&o)
		_, err := Open(o)
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v", tc.field, err)
		}
	}
	o := DefaultOptions("/x")
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestTooLargeIsRejectedBeforeQueueing(t *testing.T) {
	o := memOptions(newMemFS(), 8192)
	o.QueueBytesMax = 4096
	o.QueueRecordsMax = 4
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Append(Record{Payload: make([]byte, 5000)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("5000-byte record: %v", err)
	}
	if err := w.Append(make([]Record, 5)...); !errors.Is(err, ErrTooLarge) {
		t.Errorf("5 records over QueueRecordsMax 4: %v", err)
	}
	if err := w.SaveHardState(make([]byte, HardStateBytesMax+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("hard state: %v", err)
	}
	if st := w.Stats(); st.Records != 0 {
		t.Errorf("%d records written", st.Records)
	}
}

func TestSecondOpenOfDirectoryIsLocked(t *testing.T) {
	options := DefaultOptions(t.TempDir())
	options.SegmentBytes = 64 << 10
	w, err := Open(options)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := Open(options); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

// blockingSyncs holds every fdatasync of a segment until release is closed (the segment
// preparer's syncs of its temporary files pass).
func blockingSyncs(fs *memFS) (entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}, 1000), make(chan struct{})
	fs.mu.Lock()
	fs.failSync = func(name string, _ int) error {
		if !strings.HasSuffix(name, segmentSuffix) {
			return nil
		}
		entered <- struct{}{}
		<-release
		return nil
	}
	fs.mu.Unlock()
	return entered, release
}

func TestGroupCommitSyncsEverythingQueuedOnce(t *testing.T) {
	fs := newMemFS()
	w, err := Open(memOptions(fs, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	entered, release := blockingSyncs(fs)
	var completed atomic.Int64
	if err := w.AppendAsync([]Record{testRecord(1)}, func(error) { completed.Add(1) }); err != nil {
		t.Fatal(err)
	}
	<-entered // the writer is inside the first fdatasync; the rest must queue behind it
	var appenders sync.WaitGroup
	for key := uint64(2); key <= 101; key++ {
		appenders.Go(func() {
			if err := w.Append(testRecord(key)); err != nil {
				t.Error(err)
			}
			completed.Add(1)
		})
	}
	for w.Stats().QueuedRecords < 101 {
		time.Sleep(time.Millisecond)
	}
	if completed.Load() != 0 {
		t.Fatal("an append completed before its fdatasync")
	}
	close(release)
	appenders.Wait()
	st := w.Stats()
	if st.Fsyncs != 2 || st.Records != 101 || st.RecordsPerFsync != 50.5 {
		t.Fatalf("stats %+v, want 2 fsyncs for 101 records", st)
	}
}

func TestNoGroupCommitBaselineSyncsEachAppend(t *testing.T) {
	fs := newMemFS()
	o := memOptions(fs, 1<<20)
	o.syncEachAppend = true
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	entered, release := blockingSyncs(fs)
	if err := w.AppendAsync([]Record{testRecord(1)}, nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	done := make(chan error, 20)
	for key := uint64(2); key <= 21; key++ {
		if err := w.AppendAsync([]Record{testRecord(key), testRecord(key + 100)},
			func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	for range 20 {
		<-done
	}
	if st := w.Stats(); st.Fsyncs != 21 || st.Records != 41 {
		t.Fatalf("stats %+v, want 21 fsyncs", st)
	}
}

func TestFullQueueBlocksAppendersUntilTheWriterCatchesUp(t *testing.T) {
	fs := newMemFS()
	o := memOptions(fs, 1<<20)
	o.QueueRecordsMax = 10
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	entered, release := blockingSyncs(fs)
	for key := uint64(1); key <= 10; key++ {
		if err := w.AppendAsync([]Record{testRecord(key)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	returned := make(chan error)
	go func() { returned <- w.AppendAsync([]Record{testRecord(11)}, nil) }()
	select {
	case err := <-returned:
		t.Fatalf("AppendAsync returned %v with the queue full", err)
	case <-time.After(50 * time.Millisecond):
	}
	if st := w.Stats(); st.QueuedRecords != 10 {
		t.Fatalf("queued %d records, limit 10", st.QueuedRecords)
	}
	close(release)
	if err := <-returned; err != nil {
		t.Fatal(err)
	}
}

func TestCloseUnblocksAppendersWaitingForSpace(t *testing.T) {
	fs := newMemFS()
	o := memOptions(fs, 1<<20)
	o.QueueRecordsMax = 1
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := blockingSyncs(fs)
	if err := w.AppendAsync([]Record{testRecord(1)}, nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	returned := make(chan error)
	go func() { returned <- w.Append(testRecord(2)) }()
	time.Sleep(10 * time.Millisecond)
	closed := make(chan error)
	go func() { closed <- w.Close() }()
	if err := <-returned; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Append = %v, want ErrClosed", err)
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

func TestFailedSyncFailsTheLogForGood(t *testing.T) {
	fs := newMemFS()
	w, err := Open(memOptions(fs, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(testRecord(1)); err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	fs.failSync = func(name string, _ int) error {
		if strings.HasSuffix(name, segmentSuffix) {
			return errors.New("EIO")
		}
		return nil
	}
	fs.mu.Unlock()
	if err := w.Append(testRecord(2)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append with failing fdatasync = %v, want ErrFailed", err)
	}
	fs.mu.Lock()
	fs.failSync = nil
	fs.mu.Unlock()
	if err := w.Append(testRecord(3)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after a failure = %v, want ErrFailed", err)
	}
	if err := w.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close = %v, want ErrFailed", err)
	}
}

func TestEmptyAsyncAppendIsABarrier(t *testing.T) {
	w, err := Open(memOptions(newMemFS(), 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var order []int
	var mu sync.Mutex
	finished := make(chan struct{})
	note := func(i int) func(error) {
		return func(error) {
			mu.Lock()
			order = append(order, i)
			if len(order) == 2 {
				close(finished)
			}
			mu.Unlock()
		}
	}
	if err := w.AppendAsync([]Record{testRecord(1)}, note(1)); err != nil {
		t.Fatal(err)
	}
	if err := w.AppendAsync(nil, note(2)); err != nil {
		t.Fatal(err)
	}
	<-finished
	if !slices.Equal(order, []int{1, 2}) {
		t.Fatalf("completion order %v", order)
	}
}

func TestTruncateBeforeRemovesOnlyAWholeOldPrefix(t *testing.T) {
	fs := newMemFS()
	w, err := Open(memOptions(fs, 4096))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Keys mostly rise, but segment 3 also holds a far higher key (keys need not be
	// monotonic): it must pin segment 3 and everything after it.
	key := uint64(0)
	for w.Stats().Segments < 6 {
		key++
		if err := w.Append(Record{Key: key, Payload: make([]byte, 200)}); err != nil {
			t.Fatal(err)
		}
		if w.Stats().Segments == 3 && key%5 == 0 {
			if err := w.Append(Record{Key: 1 << 40, Payload: []byte("early")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	segments := func() []segmentInfo {
		w.segmentsMu.Lock()
		defer w.segmentsMu.Unlock()
		var s []segmentInfo
		for _, info := range w.segments {
			s = append(s, *info)
		}
		return s
	}
	before := segments()
	if err := w.TruncateBefore(key + 1); err != nil {
		t.Fatal(err)
	}
	after := segments()
	// Segments 1 and 2 go; segment 3 (max key 1<<40) blocks the rest, though 4 and 5 are
	// entirely below the key.
	if len(after) != len(before)-2 || after[0].name != before[2].name {
		t.Fatalf("after TruncateBefore: first %s of %d, before %d", after[0].name, len(after), len(before))
	}
	for _, s := range before[:2] {
		if fs.Bytes(filepath.Join(testDir, s.name)) != nil {
			t.Fatalf("%s still exists", s.name)
		}
	}
	// A key no segment is entirely below removes nothing; the active one never goes.
	if err := w.TruncateBefore(1); err != nil || len(segments()) != len(after) {
		t.Fatalf("TruncateBefore(1) removed segments: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = Open(memOptions(fs, 4096))
	if err != nil {
		t.Fatalf("reopen after truncation: %v", err)
	}
	defer w.Close()
	if got := w.Stats().Segments; got != len(after) {
		t.Fatalf("%d segments after reopen, want %d", got, len(after))
	}
}

func TestHardStateSurvivesATornSlot(t *testing.T) {
	fs := newMemFS()
	o := memOptions(fs, 8192)
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if w.HardState() != nil {
		t.Fatal("fresh log has a hard state")
	}
	for i := range 5 {
		if err := w.SaveHardState([]byte(fmt.Sprintf("state-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	name := filepath.Join(testDir, hardStateFileName)
	pristine := fs.Bytes(name)
	// Sequence 5 sits in slot 1. Tearing it must bring back state-3 from slot 0.
	torn := slices.Clone(pristine)
	torn[hardStateSlotBytes+20] ^= 0xff
	fs.SetBytes(name, torn)
	if w, err = Open(o); err != nil {
		t.Fatal(err)
	}
	if got := string(w.HardState()); got != "state-3" {
		t.Fatalf("after torn slot: %q, want state-3", got)
	}
	w.Close()
	both := slices.Clone(torn)
	both[20] ^= 0xff
	fs.SetBytes(name, both)
	var corrupt *CorruptionError
	if _, err = Open(o); !errors.As(err, &corrupt) || corrupt.File != hardStateFileName {
		t.Fatalf("both slots bad: %v", err)
	}
}

func TestReplayStopsAtTheCallbacksErrorAndRunsBesideAppends(t *testing.T) {
	w, err := Open(memOptions(newMemFS(), 4096))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for key := uint64(1); key <= 50; key++ {
		if err := w.Append(testRecord(key)); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("enough")
	seen := 0
	if err := w.Replay(func(Record) error {
		seen++
		if seen == 10 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || seen != 10 {
		t.Fatalf("Replay = %v after %d records", err, seen)
	}
	var appenders sync.WaitGroup
	appenders.Go(func() {
		for key := uint64(51); key <= 150; key++ {
			if err := w.Append(testRecord(key)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 5 {
		keys := replayKeys(t, w) // checks every record; sees a durable prefix
		for i, k := range keys {
			if k != uint64(i+1) {
				t.Fatalf("replay during appends: key %d at position %d", k, i)
			}
		}
	}
	appenders.Wait()
	if err := w.AppendAsync([]Record{testRecord(1)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.AppendAsync([]Record{testRecord(1)}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendAsync after Close = %v", err)
	}
	if err := w.SaveHardState([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("SaveHardState after Close = %v", err)
	}
}

func TestRotationUsesZeroFilledSegmentsWhenReady(t *testing.T) {
	fs := newMemFS()
	w, err := Open(memOptions(fs, 4096))
	if err != nil {
		t.Fatal(err)
	}
	for key := uint64(1); key <= 200; key++ {
		if err := w.Append(testRecord(key)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond) // give the preparer time between rotations
	}
	st := w.Stats()
	if st.SegmentsPrepared == 0 || st.Segments < 10 {
		t.Fatalf("%d segments, %d from the preparer", st.Segments, st.SegmentsPrepared)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := fs.ReadDir(testDir)
	for _, name := range names {
		if strings.HasSuffix(name, temporarySuffix) {
			t.Fatalf("Close left %s behind", name)
		}
	}
	if w, err = Open(memOptions(fs, 4096)); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := replayKeys(t, w); len(got) != 200 {
		t.Fatalf("%d records after reopen", len(got))
	}
}
