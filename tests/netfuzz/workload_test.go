package netfuzz

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaxos/mpaxos/client"
)

// writer is the well-behaved client: a few goroutines appending unique payloads through the
// Go client for the whole run, recording every acknowledgement and the longest time the
// cluster went without one.
type writer struct {
	client *client.Client
	start  time.Time

	mu       sync.Mutex
	acked    map[uint64][]byte // dense offset -> payload
	lastAck  time.Time
	gapMax   time.Duration // longest time without an acknowledgement
	gapAt    time.Time     // when that gap ended
	doubles  []string      // offsets acknowledged for two different payloads
	offsetHi uint64        // highest acknowledged offset + 1

	errors    atomic.Uint64 // appends that failed (timeouts and the like; ambiguous, not recorded)
	ackedLoad atomic.Uint64 // len(acked), readable without the lock
	wg        sync.WaitGroup
}

// appendTimeout bounds one append, retries included: a write this slow is a stall anyway.
const appendTimeout = 30 * time.Second

// startWriter starts goroutines appending at most rate appends per second together (0: as
// fast as the cluster acknowledges). Every acknowledgement is kept until the end, so a long
// run needs a rate.
func startWriter(ctx context.Context, c *client.Client, goroutines, rate int) *writer {
	w := &writer{client: c, start: time.Now(), acked: make(map[uint64][]byte), lastAck: time.Now()}
	pace := newPacer(rate)
	if rate <= 0 {
		pace = nil
	}
	for id := range goroutines {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.loop(ctx, id, pace)
		}()
	}
	return w
}

func (w *writer) loop(ctx context.Context, id int, pace *pacer) {
	for n := 0; ctx.Err() == nil; n++ {
		if pace != nil && pace.wait(ctx) != nil {
			return
		}
		payload := fmt.Appendf(nil, "netfuzz writer %d append %d", id, n)
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		r, err := w.client.Append(actx, payload)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.errors.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		w.record(r.Offset, payload)
	}
}

func (w *writer) record(offset uint64, payload []byte) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if gap := now.Sub(w.lastAck); gap > w.gapMax {
		w.gapMax, w.gapAt = gap, now
	}
	w.lastAck = now
	if old, ok := w.acked[offset]; ok && !bytes.Equal(old, payload) {
		w.doubles = append(w.doubles, fmt.Sprintf("offset %d acknowledged for %q and for %q", offset, old, payload))
		return
	}
	w.acked[offset] = payload
	w.offsetHi = max(w.offsetHi, offset+1)
	w.ackedLoad.Store(uint64(len(w.acked)))
}

// sinceAck is how long the cluster has gone without acknowledging anything.
func (w *writer) sinceAck() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Since(w.lastAck)
}

// acknowledged is the number of distinct acknowledged appends.
func (w *writer) acknowledged() uint64 { return w.ackedLoad.Load() }

// sample returns an acknowledged offset and its payload (ok false before the first ack).
func (w *writer) sample(pick func(n uint64) uint64) (uint64, []byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acked) == 0 {
		return 0, nil, false
	}
	for tries := 0; tries < 64; tries++ {
		offset := pick(w.offsetHi)
		if p, ok := w.acked[offset]; ok {
			return offset, p, true
		}
	}
	for offset, p := range w.acked {
		return offset, p, true
	}
	return 0, nil, false
}

// figures returns the acknowledgements, the longest gap, and the doubly acknowledged offsets.
func (w *writer) figures() (acked int, gapMax time.Duration, gapAt time.Time, doubles []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked), w.gapMax, w.gapAt, append([]string(nil), w.doubles...)
}

// snapshot copies the acknowledged appends.
func (w *writer) snapshot() map[uint64][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[uint64][]byte, len(w.acked))
	for k, v := range w.acked {
		out[k] = v
	}
	return out
}

// wait returns once every writer goroutine stopped; a gap still open then counts.
func (w *writer) wait() {
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if gap := time.Since(w.lastAck); gap > w.gapMax {
		w.gapMax, w.gapAt = gap, time.Now()
	}
}

// verifyAll reads every acknowledged offset back with ReadAt (readers goroutines) and returns
// the first mismatches (at most mismatchesMax) and the number of offsets read.
func verifyAll(ctx context.Context, c *client.Client, acked map[uint64][]byte, readers int) (mismatches []string, read int) {
	offsets := make(chan uint64, readers)
	var mu sync.Mutex
	var done atomic.Int64
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for offset := range offsets {
				problem := verifyOne(ctx, c, offset, acked[offset])
				done.Add(1)
				if problem != "" {
					mu.Lock()
					if len(mismatches) < mismatchesMax {
						mismatches = append(mismatches, problem)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for offset := range acked {
		if ctx.Err() != nil {
			break
		}
		offsets <- offset
	}
	close(offsets)
	wg.Wait()
	return mismatches, int(done.Load())
}

const mismatchesMax = 20

// verifyOne reads offset back and compares it with the acknowledged payload ("" if equal).
func verifyOne(ctx context.Context, c *client.Client, offset uint64, payload []byte) string {
	rctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	r, err := c.ReadAt(rctx, offset)
	switch {
	case err != nil:
		return fmt.Sprintf("ReadAt(%d): %v", offset, err)
	case !r.Found:
		return fmt.Sprintf("ReadAt(%d): not found (log length %d), acknowledged %q", offset, r.Length, payload)
	case !bytes.Equal(r.Payload, payload):
		return fmt.Sprintf("ReadAt(%d) = %q, acknowledged %q", offset, r.Payload, payload)
	}
	return ""
}
