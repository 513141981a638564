package wal

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ledger records what the appenders attempted and what was acknowledged, across crashes.
type ledger struct {
	mu             sync.Mutex
	acknowledged   map[uint64]bool
	attempted      map[uint64]bool
	groups         map[uint64][]uint64 // first key of a multi-record call -> all its keys
	hardStateAcked int
	hardStateTried int
	truncatedBelow uint64 // TruncateBefore was called with this key: lower ones may be gone
}

func newLedger() *ledger {
	return &ledger{acknowledged: map[uint64]bool{}, attempted: map[uint64]bool{},
		groups: map[uint64][]uint64{}}
}

// verify checks a recovered log against the ledger: every acknowledged record present,
// nothing that was never attempted, nothing twice, multi-record calls all or nothing, and
// the hard state no older than the last acknowledged save.
func (l *ledger) verify(w *WAL) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[uint64]bool{}
	err := w.Replay(func(r Record) error {
		if err := checkRecord(r); err != nil {
			return err
		}
		if !l.attempted[r.Key] {
			return fmt.Errorf("record key %d was never appended", r.Key)
		}
		if seen[r.Key] {
			return fmt.Errorf("record key %d appears twice", r.Key)
		}
		seen[r.Key] = true
		return nil
	})
	if err != nil {
		return err
	}
	for key := range l.acknowledged {
		if !seen[key] && key >= l.truncatedBelow {
			return fmt.Errorf("acknowledged record key %d lost", key)
		}
	}
	for first, keys := range l.groups {
		for _, k := range keys {
			if seen[k] != seen[first] {
				return fmt.Errorf("call with keys %v survived in part", keys)
			}
		}
	}
	hardState := 0
	if b := w.HardState(); b != nil {
		n, err := strconv.Atoi(strings.TrimPrefix(string(b), "hs-"))
		if err != nil {
			return fmt.Errorf("hard state %q: %v", b, err)
		}
		hardState = n
	}
	if hardState < l.hardStateAcked || hardState > l.hardStateTried {
		return fmt.Errorf("hard state %d, acknowledged %d, tried %d", hardState,
			l.hardStateAcked, l.hardStateTried)
	}
	return nil
}

// TestCrashKeepsEverySyncedRecord crashes a memFS under concurrent appends again and again:
// unsynced writes are dropped, torn at a random byte or kept sector by sector, and
// directory changes not yet synced are forgotten. Every acknowledged record must survive.
func TestCrashKeepsEverySyncedRecord(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	fs := newMemFS()
	l := newLedger()
	var nextKey atomic.Uint64
	for round := range rounds {
		w, err := Open(memOptions(fs, 8192))
		if err != nil {
			t.Fatalf("round %d: Open after crash: %v", round, err)
		}
		if err := l.verify(w); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var acknowledgedThisRound atomic.Int64
		var workers sync.WaitGroup
		for worker := range 4 {
			workers.Go(func() { appendUntilFailure(w, l, worker, &nextKey, &acknowledgedThisRound) })
		}
		workers.Go(func() {
			for {
				l.mu.Lock()
				l.hardStateTried++
				n := l.hardStateTried
				l.mu.Unlock()
				if w.SaveHardState([]byte(fmt.Sprintf("hs-%d", n))) != nil {
					return
				}
				l.mu.Lock()
				l.hardStateAcked = max(l.hardStateAcked, n)
				l.mu.Unlock()
			}
		})
		target := int64(1 + rng.IntN(150))
		for acknowledgedThisRound.Load() < target {
			time.Sleep(100 * time.Microsecond)
		}
		fs = fs.Crash(rng)
		workers.Wait()
		w.Close()
	}
	w, err := Open(memOptions(fs, 8192))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := l.verify(w); err != nil {
		t.Fatal(err)
	}
	if len(l.acknowledged) < rounds {
		t.Fatalf("only %d records acknowledged in %d rounds", len(l.acknowledged), rounds)
	}
}

func appendUntilFailure(w *WAL, l *ledger, worker int, nextKey *atomic.Uint64,
	acknowledged *atomic.Int64) {
	for i := 0; ; i++ {
		count := 1
		if (i+worker)%5 == 0 {
			count = 3
		}
		first := nextKey.Add(uint64(count)) - uint64(count) + 1
		records := make([]Record, count)
		keys := make([]uint64, count)
		l.mu.Lock()
		for j := range records {
			keys[j] = first + uint64(j)
			records[j] = testRecord(keys[j])
			l.attempted[keys[j]] = true
		}
		if count > 1 {
			l.groups[first] = keys
		}
		l.mu.Unlock()
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
			return
		}
		l.mu.Lock()
		for _, k := range keys {
			l.acknowledged[k] = true
		}
		l.mu.Unlock()
		acknowledged.Add(1)
	}
}
