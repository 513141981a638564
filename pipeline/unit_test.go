package pipeline

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/netio"
)

func TestConfigValidateNamesTheBadField(t *testing.T) {
	valid := func() Config {
		cfg := DefaultConfig()
		cfg.ID = 1
		cfg.Peers = map[uint32]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}
		cfg.Secret = []byte("0123456789abcdef")
		cfg.DataDir = t.TempDir()
		return cfg
	}
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"ID", func(c *Config) { c.ID = 0 }},
		{"Peers", func(c *Config) { c.ID = 9 }},
		{"Peers", func(c *Config) { c.Peers[2] = "nocolon" }},
		{"ListenAddr", func(c *Config) { c.ListenAddr = "x" }},
		{"AdminAddr", func(c *Config) { c.AdminAddr = "x" }},
		{"Secret", func(c *Config) { c.Secret = []byte("short") }},
		{"DataDir", func(c *Config) { c.DataDir = "" }},
		{"TickInterval", func(c *Config) { c.TickInterval = 0 }},
		{"Window", func(c *Config) { c.Window = 0 }},
		{"ElectionTicks", func(c *Config) { c.ElectionTicks = c.HeartbeatTicks }},
		{"PeerQueueMax", func(c *Config) { c.PeerQueueMax = 0 }},
		{"ApplyQueueMax", func(c *Config) { c.ApplyQueueMax = -1 }},
		{"PendingRequestsMax", func(c *Config) { c.PendingRequestsMax = 0 }},
		{"SessionsMax", func(c *Config) { c.SessionsMax = 0 }},
		{"CacheBytesMax", func(c *Config) { c.CacheBytesMax = 0 }},
		{"RetainSlots", func(c *Config) { c.RetainSlots = -1 }},
		{"Batching", func(c *Config) { c.Batching.Linger = -time.Second }},
		{"Batching.BatchBytesMax", func(c *Config) {
			c.Batching.BatchBytesMax = c.Network.Limits.ValueBytesMax + 1
			c.Batching.PendingBytesMax = c.Batching.BatchBytesMax
		}},
		{"InflightBytesMax", func(c *Config) { c.InflightBytesMax = 1 }},
		{"CatchUpBytesMax", func(c *Config) { c.CatchUpBytesMax = c.Network.Limits.FrameBytesMax }},
	}
	for _, tc := range cases {
		cfg := valid()
		tc.mutate(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
	if cfg := valid(); cfg.Validate() != nil {
		t.Fatalf("valid config refused: %v", cfg.Validate())
	}
}

func TestChosenRingServesContiguousSlotsWithinItsBytes(t *testing.T) {
	r := newChosenRing(10*(100+24), 0)
	for s := uint64(5); s < 2005; s++ {
		r.put(s, bytes.Repeat([]byte{byte(s)}, 100))
	}
	// Only the last 10 slots fit.
	got, err := r.Chosen(1990, 100, 1<<20, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("evicted slot served: %d values, %v", len(got), err)
	}
	got, _ = r.Chosen(1995, 3, 1<<20, nil)
	if len(got) != 3 || got[0][0] != byte(1995%256) || got[2][0] != byte(1997%256) {
		t.Fatalf("got %d values starting %v", len(got), got)
	}
	got, _ = r.Chosen(1995, 100, 250, nil)
	if len(got) != 2 {
		t.Fatalf("maxBytes 250 gave %d values of 100 bytes, want 2", len(got))
	}
	got, _ = r.Chosen(1995, 100, 10, nil)
	if len(got) != 1 {
		t.Fatalf("at least one value must be returned, got %d", len(got))
	}
	got, _ = r.Chosen(3000, 100, 1<<20, nil)
	if len(got) != 0 {
		t.Fatalf("future slot served: %d", len(got))
	}
}

func TestHardStateRoundTripsAndRejectsBadLength(t *testing.T) {
	hs := core.HardState{Promised: codec.Ballot{Round: 7, Replica: 3}, Commit: 12345}
	got, err := decodeHardState(encodeHardState(hs))
	if err != nil || got != hs {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := decodeHardState([]byte{1, 2, 3}); err == nil {
		t.Fatal("a 3-byte hard state was accepted")
	}
}

func TestCopyMessageOwnsEveryByte(t *testing.T) {
	buf := []byte("aaaabbbbccccdddd")
	m := codec.Message{Type: codec.TypeAccept, Values: [][]byte{buf[0:4], nil, buf[4:8]},
		Entries: []codec.Entry{{Slot: 3, Value: buf[8:12]}}, Data: buf[12:16]}
	cp := copyMessage(&m)
	for i := range buf {
		buf[i] = 'x'
	}
	if string(cp.Values[0]) != "aaaa" || cp.Values[1] != nil || string(cp.Values[2]) != "bbbb" ||
		string(cp.Entries[0].Value) != "cccc" || cp.Entries[0].Slot != 3 || string(cp.Data) != "dddd" {
		t.Fatalf("copy aliases the frame: %+v", cp)
	}
	cp.Values[0] = append(cp.Values[0], 'z') // capacity is clipped: must not overwrite the next value
	if string(cp.Values[2]) != "bbbb" {
		t.Fatal("appending to one copied value overwrote another")
	}
}

func TestBackpressurePausesAndResumesClients(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.PendingRequestsMax = 32
		cfg.Batching.BatchCommandsMax = 8
		cfg.Batching.PendingCommandsMax = 16
	})
	c.waitLeader(5 * time.Second)
	results := load(t, c.endpoints(), 4, 200) // up to 4 x 200 in flight against a bound of 32
	if len(results) != 800 {
		t.Fatalf("%d answered, want 800", len(results))
	}
	checkDistinct(t, results)
	leader := c.nodes[c.waitLeader(time.Second)]
	if leader.net.Stats().Pauses == 0 {
		t.Fatal("no connection was ever paused: the bound was not exercised")
	}
	c.waitConverged(800, 10*time.Second)
}

// The waiter table against a map model, under the insert/delete churn it sees in use.
func TestWaiterTableMatchesAMap(t *testing.T) {
	w := newWaiterTable(4)
	type entry struct {
		conn *netio.ClientConn
		read readQuery
	}
	model := map[cmdKey]entry{}
	conns := []*netio.ClientConn{new(netio.ClientConn), new(netio.ClientConn), new(netio.ClientConn)}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := 0; step < 200000; step++ {
		k := cmdKey{client: uint64(rng.IntN(8)), seq: uint64(rng.IntN(300))}
		switch rng.IntN(3) {
		case 0, 1:
			c := conns[rng.IntN(len(conns))]
			var q readQuery // an append, or a read with its query
			if mode := codec.ReadMode(rng.IntN(3)); mode != codec.ReadNone {
				q = readQuery{mode: mode, offset: uint64(rng.IntN(1000))}
			}
			if got, want := w.put(k, c, q), model[k].conn; got != want {
				t.Fatalf("step %d: put %v replaced %p, want %p", step, k, got, want)
			}
			model[k] = entry{c, q}
		case 2:
			got, q := w.take(k)
			if want := model[k]; got != want.conn || q != want.read {
				t.Fatalf("step %d: take %v = %p %+v, want %p %+v", step, k, got, q, want.conn, want.read)
			}
			delete(model, k)
		}
		if w.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, w.len(), len(model))
		}
	}
	for k, e := range model {
		if w.get(k) != e.conn {
			t.Fatalf("get %v wrong", k)
		}
	}
	n := 0
	w.drain(func(k cmdKey, c *netio.ClientConn, q readQuery) {
		n++
		if model[k].conn != c || model[k].read != q {
			t.Fatalf("drain yielded %v -> %p %+v, model has %+v", k, c, q, model[k])
		}
	})
	if n != len(model) || w.len() != 0 || w.get(cmdKey{1, 1}) != nil {
		t.Fatalf("drain: %d of %d, len after %d", n, len(model), w.len())
	}
}

func BenchmarkWaiterTableChurn(b *testing.B) {
	w := newWaiterTable(4096)
	c := new(netio.ClientConn)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		w.put(cmdKey{uint64(i % 64), uint64(i)}, c, readQuery{})
		if i >= 4096 {
			w.take(cmdKey{uint64((i - 4096) % 64), uint64(i - 4096)})
		}
	}
}

// The applied-log digest tells apart logs that differ in a slot number, in any byte of a
// value, in a value's length (a trailing zero byte), or in the order of two slots.
func TestDigestSlotSeesEveryDifference(t *testing.T) {
	value := codec.AppendBatch(nil, []codec.Command{{ClientID: 7, Seq: 3, SeqFloor: 3, Payload: []byte("payload")}})
	digest := func(slots []uint64, values [][]byte) uint64 {
		h := DigestStart
		for i, s := range slots {
			h = DigestSlot(h, s, values[i])
		}
		return h
	}
	base := digest([]uint64{4, 5}, [][]byte{value, nil})
	if base == DigestStart {
		t.Fatal("two applied slots left the digest at its start value")
	}
	flipped := append([]byte(nil), value...)
	flipped[len(flipped)-1] ^= 1
	others := map[string]uint64{
		"another slot number": digest([]uint64{4, 6}, [][]byte{value, nil}),
		"a flipped byte":      digest([]uint64{4, 5}, [][]byte{flipped, nil}),
		"a longer value":      digest([]uint64{4, 5}, [][]byte{append(append([]byte(nil), value...), 0), nil}),
		"a no-op for a batch": digest([]uint64{4, 5}, [][]byte{nil, nil}),
		"slots swapped":       digest([]uint64{5, 4}, [][]byte{nil, value}),
	}
	for name, d := range others {
		if d == base {
			t.Errorf("%s: same digest %x as the original log", name, d)
		}
	}
}
