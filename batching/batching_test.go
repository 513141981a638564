package batching

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

func newBatcher(t testing.TB, mutate func(*Config)) *Batcher {
	t.Helper()
	cfg := DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// decode returns the commands of an encoded batch, payloads copied.
func decode(t testing.TB, value []byte) []codec.Command {
	t.Helper()
	lim := codec.DefaultLimits()
	var it codec.BatchIter
	if err := it.Reset(value, &lim); err != nil {
		t.Fatalf("BatchIter.Reset: %v", err)
	}
	var cmds []codec.Command
	for it.Next() {
		c := it.Command()
		c.Payload = append([]byte(nil), c.Payload...)
		cmds = append(cmds, c)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("BatchIter: %v", err)
	}
	return cmds
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"BatchBytesMax", func(c *Config) { c.BatchBytesMax = 10 }},
		{"BatchCommandsMax", func(c *Config) { c.BatchCommandsMax = 0 }},
		{"BatchCommandsMax", func(c *Config) { c.BatchCommandsMax = codec.DefaultBatchCommandsMax + 1 }},
		{"Linger", func(c *Config) { c.Linger = -time.Second }},
		{"PendingCommandsMax", func(c *Config) { c.PendingCommandsMax = c.BatchCommandsMax - 1 }},
		{"PendingBytesMax", func(c *Config) { c.PendingBytesMax = c.BatchBytesMax - 1 }},
		{"BatchesPooledMax", func(c *Config) { c.BatchesPooledMax = -1 }},
	}
	for _, tc := range cases {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		_, err := New(cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%s: got %v, want ErrInvalidConfig naming the field", tc.field, err)
		}
	}
	if cfg := DefaultConfig(); cfg.Validate() != nil {
		t.Fatalf("default config invalid: %v", cfg.Validate())
	}
}

func TestNextHandsOutWhatIsOpenInOrder(t *testing.T) {
	b := newBatcher(t, nil)
	if b.Next() != nil {
		t.Fatal("Next on an empty batcher returned a batch")
	}
	for i := uint64(1); i <= 3; i++ {
		if err := b.Add(7, i, i, []byte(fmt.Sprintf("cmd-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	bt := b.Next()
	if bt == nil || bt.Count() != 3 {
		t.Fatalf("Next: got %v, want a batch of 3", bt)
	}
	cmds := decode(t, bt.Bytes())
	for i, c := range cmds {
		want := fmt.Sprintf("cmd-%d", i+1)
		if c.ClientID != 7 || c.Seq != uint64(i+1) || string(c.Payload) != want {
			t.Errorf("command %d = %+v, want client 7 seq %d %q", i, c, i+1, want)
		}
	}
	if b.Next() != nil || !b.Empty() {
		t.Fatal("batcher not empty after handing out everything")
	}
	b.Release(bt)
}

func TestBatchClosesAtCommandsMax(t *testing.T) {
	b := newBatcher(t, func(c *Config) { c.BatchCommandsMax = 4 })
	for i := uint64(0); i < 10; i++ {
		if err := b.Add(1, i, i, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	var counts []int
	var seq uint64
	for bt := b.Next(); bt != nil; bt = b.Next() {
		counts = append(counts, bt.Count())
		for _, c := range decode(t, bt.Bytes()) {
			if c.Seq != seq {
				t.Fatalf("seq %d, want %d: order across batches broken", c.Seq, seq)
			}
			seq++
		}
		b.Release(bt)
	}
	if fmt.Sprint(counts) != "[4 4 2]" {
		t.Fatalf("batch sizes %v, want [4 4 2]", counts)
	}
	if s := b.Stats(); s.ClosedBySize != 2 || s.Batches != 3 || s.Commands != 10 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBatchNeverExceedsBytesMax(t *testing.T) {
	const bytesMax = 1024
	b := newBatcher(t, func(c *Config) { c.BatchBytesMax = bytesMax })
	payload := bytes.Repeat([]byte("p"), 100)
	for i := uint64(0); i < 50; i++ {
		if err := b.Add(1, i, i, payload); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for bt := b.Next(); bt != nil; bt = b.Next() {
		if bt.Len() > bytesMax {
			t.Fatalf("batch of %d bytes exceeds BatchBytesMax %d", bt.Len(), bytesMax)
		}
		if bt.Count() < 2 {
			t.Fatalf("batch of %d commands: closing too early", bt.Count())
		}
		total += len(decode(t, bt.Bytes()))
		b.Release(bt)
	}
	if total != 50 {
		t.Fatalf("%d commands came out, want 50", total)
	}
}

func TestSeqFloorTravelsInTheBatchAndIsValidated(t *testing.T) {
	b := newBatcher(t, nil)
	if err := b.Add(7, 10, 4, []byte("a")); err != nil {
		t.Fatal(err)
	}
	reqs := []codec.Request{{ClientID: 8, Seq: 3, SeqFloor: 3, Payload: []byte("b")}, {ClientID: 8, Seq: 4, SeqFloor: 5}}
	if taken, err := b.AddRequests(reqs); taken != 1 || !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddRequests with a floor above seq: took %d (%v), want 1 and ErrInvalid", taken, err)
	}
	if err := b.Add(9, 1, 2, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Add with a floor above seq: %v, want ErrInvalid", err)
	}
	bt := b.Next()
	cmds := decode(t, bt.Bytes())
	if len(cmds) != 2 || cmds[0].SeqFloor != 4 || cmds[0].Seq != 10 || cmds[1].SeqFloor != 3 || cmds[1].ClientID != 8 {
		t.Fatalf("batch holds %+v, want client 7 seq 10 floor 4 and client 8 seq 3 floor 3", cmds)
	}
	b.Release(bt)
}

func TestAddReportsBackpressureAtPendingLimit(t *testing.T) {
	b := newBatcher(t, func(c *Config) {
		c.BatchCommandsMax = 4
		c.PendingCommandsMax = 8
	})
	reqs := make([]codec.Request, 12)
	for i := range reqs {
		reqs[i] = codec.Request{ClientID: 3, Seq: uint64(i), Payload: []byte("abc")}
	}
	taken, err := b.AddRequests(reqs)
	if taken != 8 || !errors.Is(err, ErrFull) {
		t.Fatalf("AddRequests took %d (%v), want 8 and ErrFull", taken, err)
	}
	if b.Room(3) {
		t.Fatal("Room reports space at the limit")
	}
	bt := b.Next()
	if bt == nil || bt.Count() != 4 {
		t.Fatalf("Next: %v", bt)
	}
	b.Release(bt)
	taken, err = b.AddRequests(reqs[8:])
	if taken != 4 || err != nil {
		t.Fatalf("after Next, AddRequests took %d (%v), want 4", taken, err)
	}
	if s := b.Stats(); s.PendingCommands != 8 || s.Full != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPendingBytesLimit(t *testing.T) {
	b := newBatcher(t, func(c *Config) {
		c.BatchBytesMax = 1000
		c.PendingBytesMax = 1000
		c.CommandBytesMax = 500
	})
	payload := make([]byte, 200-CommandOverheadBytes)
	for i := 0; i < 5; i++ {
		if err := b.Add(1, uint64(i), uint64(i), payload); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := b.Add(1, 5, 5, payload); !errors.Is(err, ErrFull) {
		t.Fatalf("add over PendingBytesMax: %v, want ErrFull", err)
	}
}

func TestCommandLargerThanCommandBytesMaxIsRefused(t *testing.T) {
	b := newBatcher(t, func(c *Config) { c.BatchBytesMax, c.CommandBytesMax = 256, 1000 })
	if err := b.Add(1, 1, 1, make([]byte, 1001)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if !b.Empty() {
		t.Fatal("a refused command was kept")
	}
}

// Issue 15, defect 8: a payload larger than a batch (but within CommandBytesMax) was refused,
// so the documented 1 MiB was unreachable with 512 KiB batches. It gets a batch of its own,
// between the batches of the commands around it, in order.
func TestCommandLargerThanABatchGetsABatchOfItsOwn(t *testing.T) {
	b := newBatcher(t, func(c *Config) { c.BatchBytesMax, c.CommandBytesMax = 256, 1000 })
	for i, size := range []int{10, 1000, 10} {
		if err := b.Add(1, uint64(i+1), 1, make([]byte, size)); err != nil {
			t.Fatalf("add %d bytes: %v", size, err)
		}
	}
	for i, want := range []int{10, 1000, 10} {
		bt := b.Next()
		if bt == nil || bt.Count() != 1 {
			t.Fatalf("batch %d: %v, want one command of %d bytes", i, bt, want)
		}
		var it codec.BatchIter
		lim := codec.DefaultLimits()
		if err := it.Reset(bt.Bytes(), &lim); err != nil || !it.Next() {
			t.Fatalf("batch %d: %v", i, err)
		}
		if cmd := it.Command(); len(cmd.Payload) != want || cmd.Seq != uint64(i+1) {
			t.Fatalf("batch %d: seq %d of %d bytes, want seq %d of %d bytes", i, cmd.Seq, len(cmd.Payload), i+1, want)
		}
		b.Release(bt)
	}
}

func TestLingerClosesTheOpenBatchUnderAFullWindow(t *testing.T) {
	b := newBatcher(t, func(c *Config) { c.Linger = time.Millisecond })
	start := time.Unix(1000, 0)
	b.now = func() time.Time { return start }
	_ = b.Add(1, 1, 1, []byte("a"))
	if b.CloseExpired(start.Add(500 * time.Microsecond)) {
		t.Fatal("closed before the linger expired")
	}
	if !b.CloseExpired(start.Add(time.Millisecond)) {
		t.Fatal("did not close once the linger expired")
	}
	// Later commands start a new batch: the window frees two slots and gets two batches.
	_ = b.Add(1, 2, 2, []byte("b"))
	first, second := b.Next(), b.Next()
	if first == nil || second == nil || first.Count() != 1 || second.Count() != 1 {
		t.Fatalf("got %v and %v, want two batches of one", first, second)
	}
	if decode(t, first.Bytes())[0].Seq != 1 || decode(t, second.Bytes())[0].Seq != 2 {
		t.Fatal("batches out of order")
	}
	if b.Stats().ClosedByLinger != 1 {
		t.Fatalf("stats %+v", b.Stats())
	}
}

func TestZeroLingerNeverClosesByAge(t *testing.T) {
	b := newBatcher(t, func(c *Config) { c.Linger = 0 })
	start := time.Unix(1000, 0)
	b.now = func() time.Time { return start }
	_ = b.Add(1, 1, 1, []byte("a"))
	if b.CloseExpired(start.Add(time.Hour)) {
		t.Fatal("Linger 0 closed a batch by age")
	}
	_ = b.Add(1, 2, 2, []byte("b"))
	if bt := b.Next(); bt == nil || bt.Count() != 2 {
		t.Fatalf("got %v, want one batch that kept growing to 2 commands", bt)
	}
}

func TestReleasedBatchesAreReusedAndPoolIsBounded(t *testing.T) {
	b := newBatcher(t, func(c *Config) { c.BatchesPooledMax = 2; c.BatchCommandsMax = 1 })
	var out []*Batch
	for i := 0; i < 5; i++ {
		_ = b.Add(1, uint64(i), uint64(i), []byte("z"))
		out = append(out, b.Next())
	}
	for _, bt := range out {
		b.Release(bt)
	}
	if len(b.free) != 2 {
		t.Fatalf("free list holds %d, want BatchesPooledMax 2", len(b.free))
	}
	_ = b.Add(1, 9, 9, []byte("z"))
	bt := b.Next()
	if bt != out[1] {
		t.Fatal("a released batch was not reused")
	}
	if c := decode(t, bt.Bytes()); len(c) != 1 || c[0].Seq != 9 {
		t.Fatalf("reused batch holds %+v, want only seq 9", c)
	}
}

// Concurrent producers and one consumer: every command comes out exactly once and each
// client's commands keep their order.
func TestConcurrentAddAndNextKeepEveryCommandOnceInOrder(t *testing.T) {
	b := newBatcher(t, func(c *Config) {
		c.BatchCommandsMax = 16
		c.PendingCommandsMax = 64
	})
	const producers, perProducer = 4, 2000
	var wg sync.WaitGroup
	for p := 1; p <= producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(0); seq < perProducer; {
				err := b.Add(uint64(p), seq, seq, []byte{byte(seq)})
				if errors.Is(err, ErrFull) {
					time.Sleep(10 * time.Microsecond)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				seq++
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	next := map[uint64]uint64{}
	seen := 0
	for seen < producers*perProducer {
		bt := b.Next()
		if bt == nil {
			select {
			case <-done:
				if b.Empty() {
					t.Fatalf("producers done, only %d commands seen", seen)
				}
			default:
				time.Sleep(10 * time.Microsecond)
			}
			continue
		}
		for _, c := range decode(t, bt.Bytes()) {
			if c.Seq != next[c.ClientID] || c.Payload[0] != byte(c.Seq) {
				t.Fatalf("client %d: got seq %d, want %d", c.ClientID, c.Seq, next[c.ClientID])
			}
			next[c.ClientID]++
			seen++
		}
		b.Release(bt)
	}
}

func TestAddAllocatesNothingPerCommand(t *testing.T) {
	b := newBatcher(t, nil)
	payload := make([]byte, 16)
	// Warm the pool.
	_ = b.Add(1, 0, 0, payload)
	b.Release(b.Next())
	var seq uint64
	allocs := testing.AllocsPerRun(1000, func() {
		seq++
		if err := b.Add(1, seq, seq, payload); err != nil {
			t.Fatal(err)
		}
		if seq%1000 == 0 {
			b.Release(b.Next())
		}
	})
	if allocs != 0 {
		t.Fatalf("Add allocates %.2f times per command, want 0", allocs)
	}
}

func BenchmarkAdd(b *testing.B) {
	for _, size := range []int{16, 128, 1024} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			bt := newBatcher(b, nil)
			payload := make([]byte, size)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := bt.Add(1, uint64(i), uint64(i), payload); err != nil {
					b.Fatal(err)
				}
				if i%1024 == 1023 {
					for x := bt.Next(); x != nil; x = bt.Next() {
						bt.Release(x)
					}
				}
			}
		})
	}
}

func BenchmarkAddRequests(b *testing.B) {
	for _, n := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("requests=%d", n), func(b *testing.B) {
			bt := newBatcher(b, nil)
			reqs := make([]codec.Request, n)
			for i := range reqs {
				reqs[i] = codec.Request{ClientID: 1, Seq: uint64(i), Payload: make([]byte, 16)}
			}
			b.ReportAllocs()
			b.SetBytes(int64(16 * n))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := bt.AddRequests(reqs); err != nil && !errors.Is(err, ErrFull) {
					b.Fatal(err)
				}
				for x := bt.Next(); x != nil; x = bt.Next() {
					bt.Release(x)
				}
			}
		})
	}
}
