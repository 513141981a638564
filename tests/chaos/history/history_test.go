package history

import (
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The builders below write histories by hand; times are abstract ticks.

func ack(client int, call, ret int64, value, offset uint64) Op {
	return Op{Client: client, Kind: KindAppend, Outcome: OutcomeOK, Call: call, Return: ret,
		Value: value, Offset: offset, HasOffset: true, Slot: offset + 1}
}

// ackPos is an acknowledgement that carries only (Slot, Index), as the server does today.
func ackPos(client int, call, ret int64, value, slot uint64, index uint32) Op {
	return Op{Client: client, Kind: KindAppend, Outcome: OutcomeOK, Call: call, Return: ret,
		Value: value, Slot: slot, Index: index}
}

func unknown(client int, call int64, value uint64) Op {
	return Op{Client: client, Kind: KindAppend, Outcome: OutcomeIndeterminate, Call: call,
		Return: Infinity, Value: value, Err: "timeout"}
}

func read(client int, call, ret int64, offset, value uint64, found bool) Op {
	return Op{Client: client, Kind: KindRead, Outcome: OutcomeOK, Call: call, Return: ret,
		Offset: offset, Value: value, Found: found}
}

func latest(client int, call, ret int64, length, last uint64) Op {
	return Op{Client: client, Kind: KindReadLatest, Outcome: OutcomeOK, Call: call, Return: ret, Length: length,
		Found: length > 0, Value: last}
}

// finalOf lists values in log order; value v sits at slot offset+1, index 0 (matching ack).
func finalOf(values ...uint64) *Final {
	f := &Final{Entries: []Entry{}}
	for i, v := range values {
		f.Entries = append(f.Entries, Entry{Slot: uint64(i) + 1, Value: v})
	}
	return f
}

func TestCheckAcceptsLinearizableHistories(t *testing.T) {
	cases := []struct {
		name  string
		ops   []Op
		final *Final
		model string
	}{
		{"sequential appends", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1), ack(1, 5, 6, 12, 2)}, finalOf(10, 11, 12), ModelLog},
		{"concurrent appends land in either order", []Op{ack(0, 1, 10, 10, 1), ack(1, 2, 9, 11, 0)}, finalOf(11, 10), ModelLog},
		{"offsets without a final log", []Op{ack(0, 1, 10, 10, 1), ack(1, 2, 9, 11, 0), ack(2, 11, 12, 12, 2)}, nil, ModelLog},
		{"indeterminate append that took effect", []Op{unknown(0, 1, 10), ack(1, 5, 6, 11, 1)}, finalOf(10, 11), ModelLog},
		{"indeterminate append that never took effect", []Op{unknown(0, 1, 10), ack(1, 5, 6, 11, 0)}, finalOf(11), ModelLog},
		{"indeterminate append fills a gap without a final log", []Op{unknown(0, 1, 10), ack(1, 5, 6, 11, 1), read(2, 7, 8, 0, 10, true)}, nil, ModelLog},
		{"indeterminate append may stay invisible without a final log", []Op{unknown(0, 1, 10), ack(1, 5, 6, 11, 0), latest(2, 7, 8, 1, 11)}, nil, ModelLog},
		{"reads see acknowledged appends", []Op{
			ack(0, 1, 2, 10, 0), read(1, 3, 4, 0, 10, true), read(1, 5, 6, 1, 0, false), latest(2, 3, 4, 1, 10),
			ack(0, 7, 12, 11, 1), latest(2, 8, 9, 1, 10), latest(2, 10, 11, 2, 11), // concurrent with the append: either
		}, finalOf(10, 11), ModelLog},
		{"positions increase with real time", []Op{
			ackPos(0, 1, 2, 10, 3, 0), ackPos(1, 3, 10, 11, 5, 1), ackPos(2, 4, 9, 12, 5, 0), unknown(3, 5, 13), ackPos(0, 11, 12, 14, 9, 0),
		}, nil, ModelPosition},
		{"positions checked against the final log", []Op{
			ackPos(0, 1, 2, 10, 3, 0), ackPos(1, 3, 10, 11, 5, 1), ackPos(2, 4, 9, 12, 5, 0),
		}, &Final{Entries: []Entry{{3, 0, 10}, {4, 0, 13}, {5, 0, 12}, {5, 1, 11}}}, ModelLog},
		{"empty history", nil, &Final{Entries: []Entry{}}, ModelLog},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ops := tc.ops
			if tc.name == "positions checked against the final log" {
				// Value 13 is in the log: an append nobody saw acknowledged, still invoked.
				ops = append(ops, unknown(3, 2, 13))
			}
			r := Check(ops, tc.final, Config{Timeout: 10 * time.Second})
			if !r.OK() {
				t.Fatalf("want Ok, got %s", r.Summary())
			}
			if r.Model != tc.model {
				t.Fatalf("model %s, want %s", r.Model, tc.model)
			}
		})
	}
}

func TestCheckRejectsBadHistories(t *testing.T) {
	cases := []struct {
		name    string
		ops     []Op
		final   *Final
		problem string // a substring of one direct-check problem; "" if only porcupine sees it
	}{
		{"lost append", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1)}, finalOf(11), "lost"},
		{"lost append acknowledged by position only", []Op{ackPos(0, 1, 2, 10, 1, 0), ackPos(0, 3, 4, 11, 2, 0)}, &Final{Entries: []Entry{{2, 0, 11}}}, "lost"},
		{"two appends at the same offset", []Op{ack(0, 1, 2, 10, 0), ack(1, 1, 2, 11, 0)}, nil, "two appends acknowledged at offset 0"},
		{"two appends at the same position", []Op{ackPos(0, 1, 2, 10, 4, 0), ackPos(1, 1, 2, 11, 4, 0)}, nil, "two appends acknowledged at slot 4 index 0"},
		{"read of a value never appended", []Op{ack(0, 1, 2, 10, 0), read(1, 3, 4, 0, 99, true)}, finalOf(10), ""},
		{"read of a position never filled", []Op{ack(0, 1, 2, 10, 0), read(1, 3, 4, 1, 10, true)}, finalOf(10), ""},
		{"stale read latest after a newer ack", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1), latest(1, 5, 6, 1, 10)}, finalOf(10, 11), ""},
		{"read latest returns a value that is not the last", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1), latest(1, 5, 6, 2, 10)}, finalOf(10, 11), ""},
		{"read latest of an empty log finds a value", []Op{
			{Client: 1, Kind: KindReadLatest, Outcome: OutcomeOK, Call: 1, Return: 2, Length: 0, Found: true, Value: 10},
			ack(0, 3, 4, 10, 0)}, finalOf(10), ""},
		{"stale read misses an acknowledged position", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1), read(1, 5, 6, 1, 0, false)}, finalOf(10, 11), ""},
		{"stale position after a newer ack", []Op{ackPos(0, 1, 2, 10, 7, 0), ackPos(1, 3, 4, 11, 6, 0)}, nil, "stale position"},
		{"offsets against real time", []Op{ack(0, 1, 2, 10, 1), ack(1, 3, 4, 11, 0)}, nil, ""},
		{"value applied twice", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1)}, finalOf(10, 11, 10), "applied twice"},
		{"value nobody appended in the final log", []Op{ack(0, 1, 2, 10, 0)}, finalOf(10, 77), "no client appended"},
		{"failed append in the final log", []Op{{Client: 0, Kind: KindAppend, Outcome: OutcomeFailed, Call: 1, Return: 2, Value: 10, Err: "refused"}}, finalOf(10), "reported as failed"},
		{"acknowledged offset disagrees with the final log", []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1)}, finalOf(11, 10), "final log holds it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.ops, tc.final, Config{Timeout: 10 * time.Second})
			if r.OK() {
				t.Fatalf("want a failure, got %s", r.Summary())
			}
			if tc.problem == "" {
				if r.Verdict != porcupine.Illegal {
					t.Fatalf("want porcupine Illegal, got %s", r.Summary())
				}
				return
			}
			if !strings.Contains(strings.Join(r.Problems, "\n"), tc.problem) {
				t.Fatalf("want a problem mentioning %q, got %s", tc.problem, r.Summary())
			}
		})
	}
}

func TestCheckPorcupineAloneCatchesEachAnomaly(t *testing.T) {
	// The direct checks explain a failure; porcupine must still catch each anomaly by itself.
	cases := map[string]struct {
		ops   []Op
		final *Final
	}{
		"lost append":        {[]Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1)}, finalOf(11)},
		"duplicate offset":   {[]Op{ack(0, 1, 2, 10, 0), ack(1, 1, 2, 11, 0)}, nil},
		"duplicate position": {[]Op{ackPos(0, 1, 2, 10, 4, 0), ackPos(1, 1, 2, 11, 4, 0)}, nil},
		"unknown value":      {[]Op{ack(0, 1, 2, 10, 0)}, finalOf(10, 77)},
		"stale position":     {[]Op{ackPos(0, 1, 2, 10, 7, 0), ackPos(1, 3, 4, 11, 6, 0)}, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &checker{cfg: Config{ProblemsMax: 1}}
			var offsets map[uint64]int
			if tc.final != nil {
				offsets = c.checkFinal(tc.ops, tc.final)
			}
			model, pops := c.porcupineHistory(tc.ops, tc.final, offsets)
			if got := porcupine.CheckOperationsTimeout(model, pops, 10*time.Second); got != porcupine.Illegal {
				t.Fatalf("porcupine says %s, want Illegal", got)
			}
		})
	}
}

func TestCheckWritesArtifactsOnFailure(t *testing.T) {
	dir := t.TempDir()
	ops := []Op{ack(0, 1, 2, 10, 0), ack(0, 3, 4, 11, 1), latest(1, 5, 6, 1, 10)}
	r := Check(ops, finalOf(10, 11), Config{ArtifactDir: dir, Name: "stale/read"})
	if r.OK() {
		t.Fatalf("want a failure, got %s", r.Summary())
	}
	for _, path := range []string{r.Visualization, r.Dump} {
		if !strings.HasPrefix(path, dir) {
			t.Fatalf("artifact %q not under %s", path, dir)
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			t.Fatalf("artifact %s: %v (%d bytes)", path, err, len(b))
		}
	}
	if !strings.Contains(r.Summary(), r.Visualization) {
		t.Fatalf("summary does not name the visualisation: %s", r.Summary())
	}
	good := Check(ops[:2], finalOf(10, 11), Config{ArtifactDir: t.TempDir()})
	if !good.OK() || good.Visualization != "" {
		t.Fatalf("a passing check wrote artifacts or failed: %s", good.Summary())
	}
}

// randomHistory simulates clients appending to and reading from a correct log: each operation
// takes effect at an instant inside its [call, return] interval. Some appends time out.
func randomHistory(rng *rand.Rand, clients, opsPerClient int, withOffsets bool) ([]Op, *Final) {
	type pending struct {
		op     Op
		effect int64
	}
	var all []pending
	var next uint64 = 1
	for c := 0; c < clients; c++ {
		now := int64(rng.IntN(50))
		for i := 0; i < opsPerClient; i++ {
			call := now + 1
			effect := call + int64(rng.IntN(40))
			ret := effect + int64(rng.IntN(40))
			op := Op{Client: c, Call: call, Return: ret}
			switch rng.IntN(10) {
			case 0:
				op.Kind = KindRead
			case 1:
				op.Kind = KindReadLatest
			default:
				op.Kind, op.Value = KindAppend, next
				next++
			}
			all = append(all, pending{op: op, effect: effect})
			now = ret
		}
	}
	// Apply in effect order (ties by client) to a real log.
	order := make([]int, len(all))
	for i := range order {
		order[i] = i
	}
	sortByEffect := func(i, j int) bool {
		a, b := all[order[i]], all[order[j]]
		if a.effect != b.effect {
			return a.effect < b.effect
		}
		return a.op.Client < b.op.Client
	}
	insertionSort(order, sortByEffect)
	var log []uint64
	final := &Final{Entries: []Entry{}}
	for _, i := range order {
		p := &all[i]
		switch p.op.Kind {
		case KindAppend:
			if rng.IntN(20) == 0 { // timed out: may or may not have applied
				p.op.Outcome, p.op.Return, p.op.Err = OutcomeIndeterminate, Infinity, "timeout"
				if rng.IntN(2) == 0 {
					continue
				}
			} else {
				p.op.Outcome = OutcomeOK
			}
			p.op.Offset, p.op.HasOffset = uint64(len(log)), withOffsets
			p.op.Slot, p.op.Index = uint64(len(log)/3+1), uint32(len(log)%3)
			final.Entries = append(final.Entries, Entry{Slot: p.op.Slot, Index: p.op.Index, Value: p.op.Value})
			log = append(log, p.op.Value)
		case KindRead:
			p.op.Outcome = OutcomeOK
			p.op.Offset = uint64(rng.IntN(len(log) + 2))
			if p.op.Offset < uint64(len(log)) {
				p.op.Value, p.op.Found = log[p.op.Offset], true
			}
		case KindReadLatest:
			p.op.Outcome, p.op.Length = OutcomeOK, uint64(len(log))
			if len(log) > 0 {
				p.op.Found, p.op.Value = true, log[len(log)-1]
			}
		}
	}
	ops := make([]Op, len(all))
	for i, p := range all {
		ops[i] = p.op
	}
	return ops, final
}

func insertionSort(order []int, less func(i, j int) bool) {
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && less(j, j-1); j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
}

func TestCheckRandomHistories(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		withOffsets := seed%2 == 0
		ops, final := randomHistory(rng, 6, 60, withOffsets)
		if r := Check(ops, final, Config{Timeout: 20 * time.Second}); !r.OK() {
			t.Fatalf("seed %d: correct history judged bad: %s", seed, r.Summary())
		}
		if withOffsets {
			if r := Check(ops, nil, Config{Timeout: 20 * time.Second}); !r.OK() {
				t.Fatalf("seed %d: correct history without final log judged bad: %s", seed, r.Summary())
			}
		} else if r := Check(ops, nil, Config{Timeout: 20 * time.Second}); !r.OK() || r.Model != ModelPosition {
			t.Fatalf("seed %d: position model: %s", seed, r.Summary())
		}

		// Corrupt it: drop one acknowledged append from the final log.
		bad := &Final{}
		dropped := false
		for _, e := range final.Entries {
			if !dropped && e.Value%3 == 0 && acknowledged(ops, e.Value) {
				dropped = true
				continue
			}
			bad.Entries = append(bad.Entries, e)
		}
		if !dropped {
			continue
		}
		if r := Check(ops, bad, Config{Timeout: 20 * time.Second}); r.OK() || r.Verdict != porcupine.Illegal {
			t.Fatalf("seed %d: lost append not caught: %s", seed, r.Summary())
		}
	}
}

func acknowledged(ops []Op, value uint64) bool {
	for _, op := range ops {
		if op.Kind == KindAppend && op.Value == value {
			return op.Outcome == OutcomeOK
		}
	}
	return false
}

func TestCheckLargeHistoryIsFast(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	perClient := 500
	if raceEnabled {
		perClient = 60
	}
	ops, final := randomHistory(rng, 16, perClient, true)
	start := time.Now()
	r := Check(ops, final, Config{Timeout: 30 * time.Second})
	if !r.OK() {
		t.Fatalf("correct history judged bad: %s", r.Summary())
	}
	t.Logf("%d ops checked in %v", len(ops), time.Since(start))
}

func TestRecorderConcurrentAndBounded(t *testing.T) {
	r := NewRecorder(1000)
	var wg sync.WaitGroup
	var full sync.Map
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				call := r.Now()
				op := Op{Client: c, Kind: KindAppend, Outcome: OutcomeIndeterminate, Call: call, Return: r.Now()}
				if err := r.Add(op); err != nil {
					if !errors.Is(err, ErrHistoryFull) {
						t.Errorf("Add: %v", err)
					}
					full.Store(c, true)
				}
			}
		}()
	}
	wg.Wait()
	ops := r.Ops()
	if len(ops) != 1000 || r.Dropped() != 600 {
		t.Fatalf("held %d ops, dropped %d; want 1000 and 600", len(ops), r.Dropped())
	}
	for _, op := range ops {
		if op.Call <= 0 || op.Return != Infinity {
			t.Fatalf("indeterminate op recorded with call %d return %d", op.Call, op.Return)
		}
	}
}

func TestPayloadRoundTripAndErrors(t *testing.T) {
	for _, v := range []uint64{0, 1, 1 << 63, 12345678901234} {
		got, err := DecodePayload(EncodePayload(v))
		if err != nil || got != v {
			t.Fatalf("round trip %d: got %d, %v", v, got, err)
		}
	}
	if _, err := DecodePayload([]byte("short")); err == nil || !strings.Contains(err.Error(), "5 bytes") {
		t.Fatalf("short payload: %v", err)
	}
	if _, err := DecodePayload([]byte("0123456789abcdef")); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("foreign payload: %v", err)
	}
}
