package bench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// instantTarget completes every request inside AppendAsync: what is left is the engine's own
// cost per request (payload stamp, two histogram records, the free-list hand-off).
type instantTarget struct{}

func (instantTarget) AppendAsync(payload []byte, done func(error)) error {
	done(nil)
	return nil
}

func (instantTarget) Close() error { return nil }

// BenchmarkRequestOverhead is the load generator's cost per request, which bounds the rate one
// mpaxos-bench process can offer. It should allocate nothing.
func BenchmarkRequestOverhead(b *testing.B) {
	for _, payload := range []int{16, 1024, 65536} {
		b.Run(fmt.Sprintf("payload=%d", payload), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Inflight, cfg.PayloadBytes = 4, payload
			c := newClientState(0, instantTarget{}, &cfg)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(payload))
			b.ResetTimer()
			for b.Loop() {
				r := <-c.free
				c.send(ctx, r, time.Now(), true)
			}
			b.StopTimer()
			if got := c.total.TotalCount(); got != int64(b.N) {
				b.Fatalf("recorded %d of %d requests", got, b.N)
			}
		})
	}
}

// BenchmarkSample is the sampler's cost per progress interval for 64 clients.
func BenchmarkSample(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Inflight = 64, 1
	clients := make([]*clientState, cfg.Clients)
	for i := range clients {
		clients[i] = newClientState(i, instantTarget{}, &cfg)
	}
	s := newSampler(&cfg, clients, time.Now(), time.Now())
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range clients {
			_ = c.interval.RecordValue(1000)
		}
		s.take(time.Now(), false)
	}
}
