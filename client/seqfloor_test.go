package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// checkFloors fails when a request carried a floor above its seq, or a seq InflightMax or more
// above its floor (the replicas would refuse it).
func checkFloors(t *testing.T, reqs []codec.Request, inflightMax int) {
	t.Helper()
	for _, r := range reqs {
		if r.SeqFloor > r.Seq || r.Seq-r.SeqFloor >= uint64(inflightMax) {
			t.Errorf("request seq %d carries floor %d (InflightMax %d)", r.Seq, r.SeqFloor, inflightMax)
		}
	}
}

func TestSeqFloorIsTheLowestOutstandingSeq(t *testing.T) {
	// Seq 1 is held back until seq 4 arrives; every other request is answered at once.
	f := newFake(t, func(_ int, req codec.Request) []byte {
		switch req.Seq {
		case 1:
			return nil
		case 4:
			return append(ok(codec.Request{ClientID: req.ClientID, Seq: 1}, 1), ok(req, 4)...)
		}
		return ok(req, req.Seq)
	})
	c := dial(t, nil, f.addr())
	first := make(chan error, 1)
	if err := c.AppendAsync([]byte("one"), func(_ Result, err error) { first <- err }); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ {
		if _, err := c.Append(context.Background(), []byte("more")); err != nil {
			t.Fatalf("seq %d: %v", i, err)
		}
	}
	if err := <-first; err != nil {
		t.Fatalf("seq 1: %v", err)
	}
	if _, err := c.Append(context.Background(), []byte("last")); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]uint64{1: 1, 2: 1, 3: 1, 4: 1, 5: 5} // seq -> floor
	seen := f.seen()
	if len(seen) != len(want) {
		t.Fatalf("fake saw %d requests, want %d: %+v", len(seen), len(want), seen)
	}
	for _, r := range seen {
		if r.SeqFloor != want[r.Seq] {
			t.Errorf("seq %d carried floor %d, want %d", r.Seq, r.SeqFloor, want[r.Seq])
		}
	}
	checkFloors(t, seen, DefaultInflightMax)
}

func TestStuckLowSeqBoundsHowFarSeqsRunAhead(t *testing.T) {
	// Seq 1 is never answered: with InflightMax 2, seq 3 may only go once seq 1 was given up
	// (its context ends), or it would sit 2 above the floor.
	f := newFake(t, func(_ int, req codec.Request) []byte {
		if req.Seq == 1 {
			return nil
		}
		return ok(req, req.Seq)
	})
	const giveUp = 200 * time.Millisecond
	c := dial(t, func(cfg *Config) { cfg.InflightMax = 2 }, f.addr())
	start := time.Now()
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), giveUp)
		defer cancel()
		_, err := c.Append(ctx, []byte("lost"))
		first <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.seen()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // seq 1 must be taken first
	}
	if _, err := c.Append(context.Background(), []byte("two")); err != nil {
		t.Fatalf("seq 2: %v", err)
	}
	if _, err := c.Append(context.Background(), []byte("three")); err != nil {
		t.Fatalf("seq 3: %v", err)
	}
	if waited := time.Since(start); waited < giveUp {
		t.Fatalf("seq 3 was answered after %v, before seq 1 was given up (%v)", waited, giveUp)
	}
	if err := <-first; !errors.Is(err, ErrTimeout) {
		t.Fatalf("seq 1: %v, want ErrTimeout", err)
	}
	seen := f.seen()
	checkFloors(t, seen, 2)
	for _, r := range seen {
		if r.Seq == 3 && r.SeqFloor != 3 {
			t.Errorf("seq 3 carried floor %d, want 3 (1 given up, 2 answered)", r.SeqFloor)
		}
	}
}

func TestSeqRoomWaitEndsWithTheContext(t *testing.T) {
	f := newFake(t, func(_ int, req codec.Request) []byte {
		if req.Seq == 1 {
			return nil
		}
		return ok(req, req.Seq)
	})
	c := dial(t, func(cfg *Config) { cfg.InflightMax = 2 }, f.addr())
	if err := c.AppendAsync([]byte("lost"), func(Result, error) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(context.Background(), []byte("two")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Append(ctx, []byte("three")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append while seq 1 holds the floor: %v, want the context's deadline", err)
	}
	for _, r := range f.seen() {
		if r.Seq == 3 {
			t.Fatalf("seq 3 was sent while seq 1 held the floor 2 below it")
		}
	}
}
