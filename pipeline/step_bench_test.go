package pipeline

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mpaxos/mpaxos/batching"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// stepBench is three replicas' step loops without sockets, disks or goroutines: commands go
// into the leader's batcher, batches are proposed as the step loop does (an exact-size copy
// for core), every peer message is encoded and decoded with the codec and copied as HandlePeer
// copies it, and every entry is encoded as its WAL record payload.
type stepBench struct {
	batcher  *batching.Batcher
	replicas map[uint32]*core.Replica
	encoders map[uint32]*codec.Encoder
	decoder  *codec.Decoder
	queue    []codec.Message
	frame    []byte
	walBuf   []byte
	chosen   int // commands chosen at the leader
}

func newStepBench(b *testing.B, window int) *stepBench {
	lim := codec.DefaultLimits()
	sb := &stepBench{replicas: map[uint32]*core.Replica{}, encoders: map[uint32]*codec.Encoder{},
		decoder: codec.NewDecoder(lim)}
	var err error
	if sb.batcher, err = batching.New(batching.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	peers := []uint32{1, 2, 3}
	for _, id := range peers {
		cfg := core.DefaultConfig(id, peers)
		cfg.Window = window
		cfg.AcceptValuesMax = lim.ValuesMax
		cfg.StepValuesOwned = true // as the pipeline: copyMessage hands core fresh memory
		cfg.Rand = rand.New(rand.NewPCG(uint64(id), 1))
		if sb.replicas[id], err = core.New(cfg, core.Persisted{}, nil); err != nil {
			b.Fatal(err)
		}
		sb.encoders[id] = codec.NewEncoder(false, 0)
	}
	sb.replicas[1].Campaign()
	sb.drain(b)
	if !sb.replicas[1].Status().IsLeader {
		b.Fatal("replica 1 did not become leader")
	}
	return sb
}

// drain runs every replica's Ready cycle and delivers messages until all are quiet.
func (sb *stepBench) drain(b *testing.B) {
	for again := true; again; {
		again = false
		for id := uint32(1); id <= 3; id++ {
			r := sb.replicas[id]
			for r.HasReady() {
				again = true
				rd := r.Ready()
				sb.walBuf = sb.walBuf[:0]
				for i := range rd.Entries {
					sb.walBuf = appendEntryPayload(sb.walBuf, &rd.Entries[i])
				}
				sb.queue = append(sb.queue, rd.Messages...)
				sb.queue = append(sb.queue, rd.MessagesAfterPersist...)
				if id == 1 {
					for _, e := range rd.Chosen {
						n, _ := codec.BatchCount(e.Value)
						sb.chosen += n
					}
				}
				r.Advance(rd)
			}
		}
		for len(sb.queue) > 0 {
			again = true
			m := sb.queue[0]
			sb.queue = sb.queue[1:]
			sb.frame = sb.encoders[m.From].AppendMessage(sb.frame[:0], &m)
			var got codec.Message
			if err := sb.decoder.DecodeMessage(sb.frame, &got); err != nil {
				b.Fatal(err)
			}
			cp := copyMessage(&got)
			if err := sb.replicas[m.To].Step(cp); err != nil {
				b.Fatal(err)
			}
		}
		sb.queue = sb.queue[:0]
	}
}

// propose hands every closed batch to the leader, as stepper.propose does.
func (sb *stepBench) propose(b *testing.B) {
	for bt := sb.batcher.Next(); bt != nil; bt = sb.batcher.Next() {
		v := bytes.Clone(bt.Bytes())
		sb.batcher.Release(bt)
		if _, err := sb.replicas[1].Propose(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStep is the cost per command of the step path (batching, core on three replicas,
// peer codec, the copy HandlePeer makes, WAL payload encoding): one op is one 16-byte command;
// batchCommands commands make one slot.
func BenchmarkStep(b *testing.B) {
	payload := make([]byte, 16)
	for _, batchCommands := range []int{64, 1024, 8192} {
		b.Run(fmt.Sprintf("batch=%d", batchCommands), func(b *testing.B) {
			sb := newStepBench(b, 16)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				seq++
				if err := sb.batcher.Add(1+seq%64, seq, 0, payload); err != nil {
					b.Fatal(err)
				}
				if seq%uint64(batchCommands) == 0 {
					sb.propose(b)
					sb.drain(b)
				}
			}
			sb.propose(b)
			sb.drain(b)
			if sb.chosen != int(seq) {
				b.Fatalf("%d commands chosen of %d added", sb.chosen, seq)
			}
		})
	}
}
