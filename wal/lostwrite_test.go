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

// crashRounds is the harness of the crash tests: rounds times it opens the log on fs (after
// the previous round's crash), checks every acknowledged record is there, runs four
// appenders and the test's side worker until a random number of appends in
// [targetMin, targetMin+targetSpan) is acknowledged, crashes fs under them, and lets
// afterRound look at the log before it is closed. Then it opens and checks once more and
// returns the ledger.
type crashRounds struct {
	seed                  uint64
	options               func(fs *memFS) Options
	targetMin, targetSpan int
	// side runs beside the appenders; it must return once stop is closed or the log fails.
	side       func(w *WAL, l *ledger, nextKey *atomic.Uint64, stop <-chan struct{})
	afterRound func(w *WAL)
}

func (c crashRounds) run(t *testing.T) *ledger {
	t.Helper()
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	rng := rand.New(rand.NewPCG(c.seed, uint64(time.Now().UnixNano())))
	fs := newMemFS()
	l := newLedger()
	var nextKey atomic.Uint64
	for round := range rounds {
		w, err := Open(c.options(fs))
		if err != nil {
			t.Fatalf("round %d: Open after crash: %v", round, err)
		}
		if err := l.verify(w); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var acknowledgedThisRound atomic.Int64
		var workers sync.WaitGroup
		stop := make(chan struct{})
		for worker := range 4 {
			workers.Go(func() { appendUntilFailure(w, l, worker, &nextKey, &acknowledgedThisRound) })
		}
		workers.Go(func() { c.side(w, l, &nextKey, stop) })
		target := int64(c.targetMin + rng.IntN(c.targetSpan))
		for acknowledgedThisRound.Load() < target {
			time.Sleep(100 * time.Microsecond)
		}
		fs = fs.Crash(rng)
		close(stop)
		workers.Wait()
		if c.afterRound != nil {
			c.afterRound(w)
		}
		w.Close()
	}
	w, err := Open(c.options(fs))
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
	return l
}

// TestCrashKeepsEverySyncedRecord crashes a memFS under concurrent appends again and again:
// unsynced writes are dropped, torn at a random byte or kept sector by sector, and
// directory changes not yet synced are forgotten. Every acknowledged record must survive.
func TestCrashKeepsEverySyncedRecord(t *testing.T) {
	crashRounds{
		seed:      7,
		options:   func(fs *memFS) Options { return memOptions(fs, 8192) },
		targetMin: 1, targetSpan: 150,
		// Hard-state saves beside the appends, until the crash fails them.
		side: func(w *WAL, l *ledger, _ *atomic.Uint64, _ <-chan struct{}) {
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
		},
	}.run(t)
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
