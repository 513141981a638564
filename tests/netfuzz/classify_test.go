package netfuzz

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// These tests hold the fuzzer to its own claims without a cluster: what it calls refusable is
// refused by codec, by netio's sender and addressee checks or by core, and what it calls
// benign changes no promise and nothing chosen. If core's rules change, they say so here
// rather than as a mysterious stall in the live run.

// noStorage holds no chosen values.
type noStorage struct{}

func (noStorage) Chosen(uint64, int, int, [][]byte) ([][]byte, error) { return nil, nil }

func testConn(seed uint64) *attackConn {
	f := &fuzzer{cfg: fuzzConfig{addrs: make([]string, replicas), acknowledged: func() uint64 { return 1000 }}}
	return &attackConn{f: f, g: newGenerator(seed, 0, clusterID, replicas, f.cfg.acknowledged), target: 0}
}

func testReplica(t *testing.T, id uint32) *core.Replica {
	t.Helper()
	cfg := core.DefaultConfig(id, []uint32{1, 2, 3})
	cfg.Rand = rand.New(rand.NewPCG(1, uint64(id)))
	r, err := core.New(cfg, core.Persisted{}, noStorage{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// decodeAtReceiver says how a frame from claimed to target fares at the receiver: refused by codec,
// refused by netio (sender or addressee), or handed to core.
func decodeAtReceiver(frame []byte, claimed, target uint32) (m codec.Message, refusedBy string) {
	if err := codec.NewDecoder(codec.DefaultLimits()).DecodeMessage(frame, &m); err != nil {
		return m, "codec"
	}
	if m.From != claimed || m.To != target {
		return m, "netio"
	}
	return m, ""
}

func TestRefusableMessagesAreRefused(t *testing.T) {
	const target = 1
	byReason := map[string]int{}
	for seed := range uint64(2000) {
		c := testConn(seed)
		claimed := c.otherReplica()
		for _, typ := range peerTypes() {
			m, why := c.refusable(typ, claimed, target)
			decoded, refusedBy := decodeAtReceiver(codec.AppendMessage(nil, &m), claimed, target)
			if refusedBy == "" {
				if typ == codec.TypeSnapshotChunk {
					t.Fatalf("seed %d: %s (%s) reaches the snapshot driver: %+v", seed, typ, why, decoded)
				}
				if err := testReplica(t, target).Step(decoded); err == nil {
					t.Fatalf("seed %d: %s called refusable (%s) was taken by core: %+v", seed, typ, why, decoded)
				}
				refusedBy = "core"
			}
			byReason[refusedBy+": "+why]++
		}
	}
	t.Logf("refused: %v", byReason)
}

// The frames of an authenticated session before its last reach core (netio hands them on)
// and change nothing there; its last frame is refused by codec or netio.
func TestPeerSessionFramesChangeNothing(t *testing.T) {
	const target = 1
	counts := map[peerClass]int{}
	for seed := range uint64(2000) {
		c := testConn(seed)
		claimed := c.otherReplica()
		encoder := codec.NewEncoder(seed%2 == 0, 64)
		class, frame, what := c.keptFrame(encoder, claimed, target)
		counts[class]++
		decoded, refusedBy := decodeAtReceiver(frame, claimed, target)
		if refusedBy != "" {
			t.Fatalf("seed %d: kept frame (%s) refused by %s", seed, what, refusedBy)
		}
		switch {
		case decoded.Type == codec.TypeSnapshotChunk:
			if class != peerBenign || len(decoded.Data) != 0 || decoded.Offset != decoded.Total {
				t.Fatalf("seed %d: a kept snapshot chunk must be a benign request (no data, offset == total): %+v", seed, decoded)
			}
			// The driver serves it from its own snapshot; core never sees it.
		case class == peerRefusable:
			if err := testReplica(t, target).Step(decoded); err == nil {
				t.Fatalf("seed %d: %s was taken by core: %+v", seed, what, decoded)
			}
		default:
			r := testReplica(t, target)
			before := r.Status()
			_ = r.Step(decoded)
			if after := r.Status(); after.Promised != before.Promised || after.Commit != before.Commit || after.Ballot != before.Ballot {
				t.Fatalf("seed %d: %s changed the replica: %+v -> %+v", seed, what, before, after)
			}
		}
		class, frame, what = c.closingFrame(encoder, claimed, target)
		counts[class]++
		if takenAsReal(frame, claimed, target) {
			t.Fatalf("seed %d: closing frame (%s) would be taken as the peer's", seed, what)
		}
	}
	t.Logf("frames by class: %v", counts)
}

func TestGeneratorReplaysItsSeed(t *testing.T) {
	draw := func() []byte {
		g := newGenerator(42, 7, clusterID, replicas, func() uint64 { return 10 })
		var out []byte
		for _, typ := range knownTypes() {
			frame, _ := g.mutate(g.frame(typ, 1, 2), g.frame(typ, 2, 1))
			out = append(out, frame...)
		}
		return out
	}
	if !bytes.Equal(draw(), draw()) {
		t.Fatal("one seed drew two different streams")
	}
}

// Well-formed frames must mostly decode (or the mutations start from noise), and every
// mutation must be drawn.
func TestGeneratedFramesDecode(t *testing.T) {
	g := newGenerator(1, 1, clusterID, replicas, func() uint64 { return 10 })
	var drawn [mutationCount]int
	decoded := map[codec.MsgType]int{}
	for range 200 {
		for _, typ := range knownTypes() {
			frame := g.frame(typ, 2, 1)
			if typ.IsPeer() {
				var m codec.Message
				if codec.NewDecoder(codec.DefaultLimits()).DecodeMessage(frame, &m) == nil {
					decoded[typ]++
				}
			} else if decodeAny(typ, frame) == nil {
				decoded[typ]++
			}
			_, how := g.mutate(frame, frame)
			drawn[how]++
		}
	}
	for _, typ := range knownTypes() {
		if decoded[typ] < 20 {
			t.Errorf("%s: only %d of 200 generated frames decode", typ, decoded[typ])
		}
	}
	for how, n := range drawn {
		if n == 0 {
			t.Errorf("mutation %s never drawn", mutation(how))
		}
	}
}

func decodeAny(typ codec.MsgType, frame []byte) error {
	switch typ {
	case codec.TypeChallenge:
		var c codec.Challenge
		return codec.DecodeChallenge(frame, &c, nil)
	case codec.TypeHello:
		var h codec.Hello
		return codec.DecodeHello(frame, &h, nil)
	case codec.TypeRequest:
		var r codec.Request
		return codec.DecodeRequest(frame, &r, nil)
	case codec.TypeRead:
		var r codec.Request
		return codec.DecodeRead(frame, &r, nil)
	}
	return decodeAnswer(typ, frame)
}
