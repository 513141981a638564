package pipeline

import (
	"bytes"
	"testing"
)

// Values that fall out of the ring stay servable from the cold tier (ristretto), so catch-up
// and reads of older slots need no WAL scan; hits and misses are counted for /metrics.
func TestChosenCacheServesEvictedSlotsFromTheColdTier(t *testing.T) {
	r := newChosenRing(10*(100+chosenOverheadBytes), 1<<20)
	defer r.close()
	for s := uint64(0); s < 100; s++ {
		r.put(s, bytes.Repeat([]byte{byte(s)}, 100))
	}
	if r.cold == nil {
		t.Fatal("no cold tier after the ring evicted 90 slots")
	}
	r.cold.Wait() // ristretto applies sets asynchronously
	got, err := r.Chosen(0, 1000, 1<<20, nil)
	if err != nil || len(got) != 100 {
		t.Fatalf("served %d of 100 slots (90 from the cold tier), %v", len(got), err)
	}
	for s, v := range got {
		if len(v) != 100 || v[0] != byte(s) {
			t.Fatalf("slot %d holds %d bytes starting %d", s, len(v), v[0])
		}
	}
	if v, ok := r.get(3); !ok || v[0] != 3 {
		t.Fatalf("get(3) = %v, %v; want slot 3's value from the cold tier", v, ok)
	}
	if _, ok := r.get(500); ok {
		t.Fatal("a slot never chosen was served")
	}
	if h, m := r.hits.Load(), r.misses.Load(); h != 101 || m != 2 {
		t.Fatalf("hits %d, misses %d; want 101 and 2", h, m)
	}
	r.close()
	if _, ok := r.get(3); ok {
		t.Fatal("the cold tier served a value after close")
	}
	if v, ok := r.get(95); !ok || v[0] != 95 {
		t.Fatal("the ring stopped serving after close")
	}
}

// With the cold tier off, eviction drops values and starts no ristretto goroutines.
func TestChosenCacheWithoutColdTier(t *testing.T) {
	r := newChosenRing(10*(100+chosenOverheadBytes), 0)
	for s := uint64(0); s < 100; s++ {
		r.put(s, bytes.Repeat([]byte{byte(s)}, 100))
	}
	if r.cold != nil {
		t.Fatal("a cold tier was made with CacheColdBytesMax 0")
	}
	if _, ok := r.get(50); ok {
		t.Fatal("slot 50 served after it left a ring of 10")
	}
}
