package pipeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
)

// checkReads checks ReadLatest and every ReadAt against want (the log's payloads in order).
func checkReads(t *testing.T, cl *client.Client, want []string) {
	t.Helper()
	ctx := context.Background()
	latest, err := cl.ReadLatest(ctx)
	if err != nil {
		t.Fatalf("ReadLatest: %v", err)
	}
	n := uint64(len(want))
	if latest.Length != n || latest.Found != (n > 0) {
		t.Fatalf("ReadLatest = %+v, want length %d", latest, n)
	}
	if n > 0 && (latest.Offset != n-1 || string(latest.Payload) != want[n-1]) {
		t.Fatalf("ReadLatest = offset %d %q, want offset %d %q", latest.Offset, latest.Payload, n-1, want[n-1])
	}
	for i, w := range want {
		r, err := cl.ReadAt(ctx, uint64(i))
		if err != nil {
			t.Fatalf("ReadAt(%d): %v", i, err)
		}
		if !r.Found || r.Offset != uint64(i) || string(r.Payload) != w || r.Length <= uint64(i) {
			t.Fatalf("ReadAt(%d) = %+v (payload %q), want %q", i, r, r.Payload, w)
		}
	}
	past, err := cl.ReadAt(ctx, n+3)
	if err != nil {
		t.Fatalf("ReadAt(%d): %v", n+3, err)
	}
	if past.Found || past.Length != n || past.Payload != nil {
		t.Fatalf("ReadAt(%d) past the end = %+v, want not found at length %d", n+3, past, n)
	}
}

// Reads through a follower (redirected to the leader) see exactly the acknowledged log: on an
// empty log, after appends, and for offsets past the end.
func TestReadsSeeTheLog(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	follower := uint32(1)
	if follower == leader {
		follower = 2
	}
	cl := dialClient(t, []string{c.peers[follower]}, nil)
	checkReads(t, cl, nil)
	var want []string
	for i := range 40 {
		p := fmt.Sprintf("value-%d", i)
		r, err := cl.Append(context.Background(), []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		if r.Offset != uint64(i) {
			t.Fatalf("append %d got offset %d", i, r.Offset)
		}
		want = append(want, p)
	}
	checkReads(t, cl, want)
}

// With caches too small to hold old slots, ReadAt of an old offset goes through the log and
// the WAL, and still returns the right command.
func TestReadAtOfAnEvictedSlotReadsTheWAL(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.CacheBytesMax = 1 // the ring keeps one value
		cfg.CacheColdBytesMax = 0
	})
	c.waitLeader(5 * time.Second)
	cl := dialClient(t, c.endpoints(), nil)
	var want []string
	for i := range 30 {
		p := fmt.Sprintf("old-%d", i)
		if _, err := cl.Append(context.Background(), []byte(p)); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	leader := c.nodes[c.waitLeader(time.Second)]
	if _, ok := leader.cachedChosen(1); ok {
		t.Fatal("slot 1 is still cached: the test would not reach the WAL")
	}
	checkReads(t, cl, want)
}

// Real-time order: a read that starts after an append was acknowledged sees it, and reads of
// one client never see the log shrink, under concurrent appends from other clients.
func TestReadsFollowAcknowledgedAppends(t *testing.T) {
	c := startCluster(t, 3, nil)
	c.waitLeader(5 * time.Second)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		cl := dialClient(t, c.endpoints(), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var seen uint64
			for i := range 60 {
				p := fmt.Sprintf("w%d-%d", w, i)
				a, err := cl.Append(ctx, []byte(p))
				if err != nil {
					errs <- err
					return
				}
				r, err := cl.ReadLatest(ctx)
				if err != nil {
					errs <- err
					return
				}
				if r.Length <= a.Offset || r.Length < seen || !r.Found {
					errs <- fmt.Errorf("worker %d: append got offset %d, then ReadLatest %+v (earlier length %d)", w, a.Offset, r, seen)
					return
				}
				seen = r.Length
				back, err := cl.ReadAt(ctx, a.Offset)
				if err != nil {
					errs <- err
					return
				}
				if !back.Found || string(back.Payload) != p {
					errs <- fmt.Errorf("worker %d: ReadAt(%d) = %+v, want %q", w, a.Offset, back, p)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A read whose seq is out of the session window is refused like an append, and answered as a
// read (a ReadReply frame), so the client can tell what it is.
func TestReadOutsideTheSessionWindowIsRefusedAsARead(t *testing.T) {
	c := startCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	rc := dialRaw(t, c.peers[leader], 77)
	seq := uint64(DefaultConfig().SessionSeqsMax) + 10
	rc.write(codec.AppendRequest(nil, &codec.Request{ClientID: 77, Seq: seq, Read: codec.ReadLatest}))
	var resp codec.Response
	if err := codec.DecodeReadReply(rc.frame(), &resp, nil); err != nil {
		t.Fatalf("want a ReadReply: %v", err)
	}
	if resp.Status != codec.StatusInvalid || resp.Seq != seq || resp.Read != codec.ReadLatest {
		t.Fatalf("got %+v, want StatusInvalid for seq %d", resp, seq)
	}
	// The connection still works for a proper read.
	rc.write(codec.AppendRequest(nil, &codec.Request{ClientID: 77, Seq: seq, SeqFloor: seq, Read: codec.ReadAt, Offset: 5}))
	if err := codec.DecodeReadReply(rc.frame(), &resp, nil); err != nil {
		t.Fatalf("want a ReadReply: %v", err)
	}
	if resp.Status != codec.StatusOK || resp.Found || resp.Length != 0 {
		t.Fatalf("got %+v, want not found on an empty log", resp)
	}
}

// Issue 15, defect 2: a few hundred ReadAts of old offsets stopped every acknowledgement (each
// replayed the whole WAL on the apply goroutine). Reads of slots only the WAL holds now cost
// one positioned read each, on the disk reader, behind a bounded queue: appends keep their
// latency while 400 such reads run, and every read still returns the right command.
func TestOldOffsetReadsDoNotStallAcknowledgements(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.CacheBytesMax = 1 // the ring keeps one value: old slots are only in the WAL
		cfg.CacheColdBytesMax = 0
		cfg.DiskReadQueueMax = 64
	})
	c.waitLeader(5 * time.Second)
	ctx := context.Background()
	payload := func(i int) []byte { return []byte(fmt.Sprintf("%06d-%s", i, make([]byte, 2000))) }
	// A log of about 8 MB, written by 8 clients at once (each append its own slot or few).
	const writers, perWriter = 8, 500
	var wg sync.WaitGroup
	offsets := make([]map[uint64]int, writers)
	for w := range writers {
		cl := dialClient(t, c.endpoints(), nil)
		offsets[w] = map[uint64]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				n := w*perWriter + i
				r, err := cl.Append(ctx, payload(n))
				if err != nil {
					t.Error(err)
					return
				}
				offsets[w][r.Offset] = n
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	written := map[uint64]int{}
	for _, m := range offsets {
		for o, n := range m {
			written[o] = n
		}
	}
	// 400 reads of old offsets from 8 clients, 50 in flight each, while one client appends.
	readErrs := make(chan error, 400)
	for r := range 8 {
		cl := dialClient(t, c.endpoints(), nil)
		for i := range 50 {
			offset := uint64((r*50 + i) * 7 % (writers * perWriter / 2))
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := cl.ReadAt(ctx, offset)
				switch {
				case err != nil:
					readErrs <- fmt.Errorf("ReadAt(%d): %v", offset, err)
				case !got.Found || string(got.Payload) != string(payload(written[offset])):
					readErrs <- fmt.Errorf("ReadAt(%d) = found %v, %.10q", offset, got.Found, got.Payload)
				}
			}()
		}
	}
	writer := dialClient(t, c.endpoints(), nil)
	var slowest time.Duration
	for range 100 {
		start := time.Now()
		if _, err := writer.Append(ctx, []byte("during the reads")); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	wg.Wait()
	close(readErrs)
	for err := range readErrs {
		t.Error(err)
	}
	t.Logf("slowest of 100 appends during 400 old-offset reads: %v", slowest)
	if slowest > 500*time.Millisecond {
		t.Fatalf("an append took %v while old offsets were read: reads hold up acknowledgements", slowest)
	}
}
