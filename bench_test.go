package mpaxos

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkPropose measures Propose end to end on a 3-node in-process cluster (loopback TCP,
// fsync off): on the leader and on a follower, one proposer at a time and many in parallel.
func BenchmarkPropose(b *testing.B) {
	for _, size := range []int{16, 1024} {
		for _, where := range []string{"leader", "follower"} {
			for _, parallel := range []bool{false, true} {
				name := fmt.Sprintf("size=%d/node=%s/parallel=%v", size, where, parallel)
				b.Run(name, func(b *testing.B) { benchPropose(b, size, where == "leader", parallel) })
			}
		}
	}
}

func benchPropose(b *testing.B, size int, onLeader, parallel bool) {
	c := startCluster(b, nil)
	leader := c.waitLeader()
	id := leader
	if !onLeader {
		id = leader%3 + 1
	}
	n := c.nodes[id]
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := 0; i < b.N; i++ {
			if _, err := n.Propose(context.Background(), payload); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := n.Propose(context.Background(), payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
