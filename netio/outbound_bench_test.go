package netio

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// BenchmarkOutboundWriter compares the two ways to carry a peer link that doc.go weighs: a
// plain net.Conn with a writer goroutine (what peerLink does) and gnet's client, where
// producers append to a mutex-protected buffer and Wake the loop, which writes it. Both send
// 16 KiB frames to a sink that discards them, with at most 256 frames in flight.
func BenchmarkOutboundWriter(b *testing.B) {
	for _, kind := range []string{"netconn", "gnetclient"} {
		b.Run(fmt.Sprintf("writer=%s/frame=16384", kind), func(b *testing.B) {
			benchmarkOutboundWriter(b, kind, 16<<10)
		})
	}
}

// countingSink accepts one connection and counts the bytes it reads.
type countingSink struct {
	ln    net.Listener
	bytes atomic.Int64
	done  chan struct{}
}

func newCountingSink(b *testing.B) *countingSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &countingSink{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 256<<10)
		for {
			n, err := conn.Read(buf)
			s.bytes.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return s
}

// bufferedSender is the part both variants share: a mutex-protected pending buffer.
type bufferedSender struct {
	mu      sync.Mutex
	pending []byte
}

func (s *bufferedSender) take(spare []byte) []byte {
	s.mu.Lock()
	out := s.pending
	s.pending = spare[:0]
	s.mu.Unlock()
	return out
}

type gnetSender struct {
	gnet.BuiltinEventEngine
	bufferedSender
	spare      []byte
	wakeQueued atomic.Bool
}

func (g *gnetSender) OnTraffic(c gnet.Conn) gnet.Action {
	g.wakeQueued.Store(false) // before take: a later append must Wake again
	out := g.take(g.spare)
	if len(out) > 0 {
		_, _ = c.Write(out)
	}
	g.spare = out[:0]
	return gnet.None
}

func benchmarkOutboundWriter(b *testing.B, kind string, frameBytes int) {
	const window = 256
	sink := newCountingSink(b)
	frame := make([]byte, frameBytes)
	var send func()
	var stop func()
	switch kind {
	case "netconn":
		conn, err := net.Dial("tcp", sink.ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		sender := &bufferedSender{}
		ready := make(chan struct{}, 1)
		quit := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			var spare []byte
			for {
				select {
				case <-ready:
				case <-quit:
					return
				}
				out := sender.take(spare)
				if _, err := conn.Write(out); err != nil {
					return
				}
				spare = out[:0]
			}
		}()
		send = func() {
			sender.mu.Lock()
			sender.pending = append(sender.pending, frame...)
			sender.mu.Unlock()
			select {
			case ready <- struct{}{}:
			default:
			}
		}
		stop = func() { close(quit); wg.Wait(); conn.Close() }
	case "gnetclient":
		handler := &gnetSender{}
		client, err := gnet.NewClient(handler, gnet.WithLogger(gnetLogger{testLogger()}))
		if err != nil {
			b.Fatal(err)
		}
		if err := client.Start(); err != nil {
			b.Fatal(err)
		}
		conn, err := client.Dial("tcp", sink.ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		send = func() {
			handler.mu.Lock()
			handler.pending = append(handler.pending, frame...)
			handler.mu.Unlock()
			if handler.wakeQueued.CompareAndSwap(false, true) {
				_ = conn.Wake(nil)
			}
		}
		stop = func() { _ = conn.Close(); _ = client.Stop() }
	}
	b.SetBytes(int64(frameBytes))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Flow control by bytes the sink has read: at most window frames in flight.
		for int64(i-window)*int64(frameBytes) > sink.bytes.Load() {
			time.Sleep(10 * time.Microsecond)
		}
		send()
	}
	for sink.bytes.Load() < int64(b.N)*int64(frameBytes) {
		time.Sleep(10 * time.Microsecond)
	}
	b.StopTimer()
	stop()
	sink.ln.Close()
	<-sink.done
}
