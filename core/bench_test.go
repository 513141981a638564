package core

import (
	"fmt"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// BenchmarkLeaderPipeline measures core alone: a leader and two followers in memory, each
// iteration proposing one value and running the Ready cycles until it is chosen everywhere the
// messages reach. It is the protocol's CPU cost per slot, without disks or sockets.
func BenchmarkLeaderPipeline(b *testing.B) {
	for _, size := range []int{64, 4096, 65536} {
		b.Run(fmt.Sprintf("value=%d", size), func(b *testing.B) {
			c := newTestCluster(&testing.T{}, 3)
			c.elect(1, nil)
			value := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.nodes[1].r.Propose(value); err != nil {
					b.Fatal(err)
				}
				c.deliverAll()
			}
		})
	}
}

// BenchmarkAcceptorAccept measures one follower accepting a window of 16 values per message.
func BenchmarkAcceptorAccept(b *testing.B) {
	r, err := New(testConfig(2, []uint32{1, 2, 3}), Persisted{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	values := make([][]byte, 16)
	for i := range values {
		values[i] = make([]byte, 1024)
	}
	m := codec.Message{Type: codec.TypeAccept, From: 1, To: 2, Ballot: ballot(1, 1), Values: values}
	b.SetBytes(16 * 1024)
	b.ReportAllocs()
	for i := range b.N {
		m.Slot, m.Commit = uint64(i)*16, uint64(i)*16
		if err := r.Step(m); err != nil {
			b.Fatal(err)
		}
		rd := r.Ready()
		r.Advance(rd)
	}
}
