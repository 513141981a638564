package wal

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	crashHelperDirEnv  = "WAL_CRASH_HELPER_DIR"
	crashHelperBaseEnv = "WAL_CRASH_HELPER_BASE"
	crashKeyStride     = 4 // call c of a child appends keys base+c*4 .. base+c*4+count-1
)

// crashCallRecords is how many records the call starting at key first appends: the parent
// recomputes it to check that calls survive whole.
func crashCallRecords(first uint64) int {
	if mix(first)%4 == 0 {
		return 3
	}
	return 1
}

// TestHelperAppender is the child process of TestKillNineKeepsAcknowledgedRecords: it
// appends from several goroutines until killed, printing every acknowledged call.
func TestHelperAppender(t *testing.T) {
	dir := os.Getenv(crashHelperDirEnv)
	if dir == "" {
		t.Skip("child process of TestKillNineKeepsAcknowledgedRecords")
	}
	base, err := strconv.ParseUint(os.Getenv(crashHelperBaseEnv), 10, 64)
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	options := DefaultOptions(dir)
	options.SegmentBytes = 128 << 10
	w, err := Open(options)
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	var stdout sync.Mutex
	say := func(format string, args ...any) {
		stdout.Lock()
		fmt.Fprintf(os.Stdout, format, args...) // one write per line: whole or absent
		stdout.Unlock()
	}
	say("ready\n")
	var calls atomic.Uint64
	for worker := range 8 {
		go func() {
			for {
				first := base + calls.Add(1)*crashKeyStride
				records := make([]Record, crashCallRecords(first))
				for j := range records {
					records[j] = testRecord(first + uint64(j))
				}
				var err error
				if worker%2 == 0 {
					err = w.Append(records...)
				} else {
					done := make(chan error, 1)
					if err = w.AppendAsync(records, func(err error) { done <- err }); err == nil {
						err = <-done
					}
				}
				if err != nil {
					say("error %v\n", err)
					return
				}
				say("ack %d\n", first)
			}
		}()
	}
	go func() {
		for n := base; ; n++ {
			if err := w.SaveHardState([]byte(fmt.Sprintf("hs-%d", n))); err != nil {
				say("error %v\n", err)
				return
			}
			say("hs %d\n", n)
		}
	}()
	select {}
}

// TestKillNineKeepsAcknowledgedRecords runs the appender in a child process, SIGKILLs it at a
// random moment and reopens the log, many times over the same directory. Every call the
// child saw acknowledged must be there, whole; nothing may be half there.
func TestKillNineKeepsAcknowledgedRecords(t *testing.T) {
	iterations := 20
	if testing.Short() {
		iterations = 5
	}
	if s := os.Getenv("WAL_CRASH_ITERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("WAL_CRASH_ITERS=%q: %v", s, err)
		}
		iterations = n
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	acknowledged := map[uint64]bool{} // first keys of acknowledged calls
	hardStateAcked := uint64(0)
	for iteration := range iterations {
		base := uint64(iteration+1) << 40
		acks, hardState := runCrashChild(t, dir, base, time.Duration(20+rng.IntN(180))*time.Millisecond)
		for _, first := range acks {
			acknowledged[first] = true
		}
		hardStateAcked = max(hardStateAcked, hardState)
		options := DefaultOptions(dir)
		options.SegmentBytes = 128 << 10
		w, err := Open(options)
		if err != nil {
			t.Fatalf("iteration %d: Open after SIGKILL: %v", iteration, err)
		}
		err = verifyCrashLog(w, acknowledged, hardStateAcked)
		w.Close()
		if err != nil {
			t.Fatalf("iteration %d: %v", iteration, err)
		}
		if len(acks) == 0 {
			t.Logf("iteration %d: child acknowledged nothing before the kill", iteration)
		}
	}
	if len(acknowledged) == 0 {
		t.Fatal("no child acknowledged anything")
	}
	t.Logf("%d kills, %d acknowledged calls, all recovered", iterations, len(acknowledged))
}

// runCrashChild starts the child, lets it append for runFor after it is ready, kills it by
// PID and returns the first keys of the calls it acknowledged and its last hard state.
func runCrashChild(t *testing.T, dir string, base uint64, runFor time.Duration) ([]uint64, uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAppender$")
	cmd.Env = append(os.Environ(), crashHelperDirEnv+"="+dir,
		crashHelperBaseEnv+"="+strconv.FormatUint(base, 10))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Kill() // SIGKILL to this PID only
			cmd.Wait()
		}
	}
	defer kill()
	ready := make(chan struct{})
	type result struct {
		acks      []uint64
		hardState uint64
		errors    []string
	}
	results := make(chan result, 1)
	go func() {
		var r result
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			fields := strings.Fields(scanner.Text())
			switch {
			case len(fields) == 1 && fields[0] == "ready":
				close(ready)
			case len(fields) == 2 && fields[0] == "ack":
				n, _ := strconv.ParseUint(fields[1], 10, 64)
				r.acks = append(r.acks, n)
			case len(fields) == 2 && fields[0] == "hs":
				n, _ := strconv.ParseUint(fields[1], 10, 64)
				r.hardState = max(r.hardState, n)
			case len(fields) > 0 && fields[0] == "error":
				r.errors = append(r.errors, scanner.Text())
			}
		}
		results <- r
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("child did not become ready")
	}
	time.Sleep(runFor)
	kill()
	r := <-results
	if len(r.errors) > 0 {
		t.Fatalf("child reported errors before the kill: %v", r.errors)
	}
	return r.acks, r.hardState
}

func verifyCrashLog(w *WAL, acknowledged map[uint64]bool, hardStateAcked uint64) error {
	present := map[uint64]bool{}
	err := w.Replay(func(r Record) error {
		if err := checkRecord(r); err != nil {
			return err
		}
		first := r.Key - r.Key%crashKeyStride
		if int(r.Key-first) >= crashCallRecords(first) {
			return fmt.Errorf("record key %d was never appended", r.Key)
		}
		if present[r.Key] {
			return fmt.Errorf("record key %d appears twice", r.Key)
		}
		present[r.Key] = true
		return nil
	})
	if err != nil {
		return err
	}
	for key := range present {
		first := key - key%crashKeyStride
		for j := range crashCallRecords(first) {
			if !present[first+uint64(j)] {
				return fmt.Errorf("call at key %d survived in part (key %d missing)", first, key)
			}
		}
	}
	for first := range acknowledged {
		if !present[first] {
			return fmt.Errorf("acknowledged call at key %d lost", first)
		}
	}
	hardState := w.HardState()
	if hardStateAcked > 0 {
		n, err := strconv.ParseUint(strings.TrimPrefix(string(hardState), "hs-"), 10, 64)
		if err != nil || n < hardStateAcked {
			return fmt.Errorf("hard state %q, acknowledged hs-%d", hardState, hardStateAcked)
		}
	}
	return nil
}
