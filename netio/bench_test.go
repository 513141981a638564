package netio

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// creditHandler returns a credit per peer message received, so the benchmark sender keeps a
// bounded number of messages in flight instead of overrunning OutboundBytesMax (which drops).
type creditHandler struct {
	testHandler
	credits  chan struct{}
	received atomic.Int64
}

func (h *creditHandler) HandlePeer(*codec.Message) {
	h.received.Add(1)
	h.credits <- struct{}{}
}

// BenchmarkPeerThroughput: replica 1 streams Accept frames (one value each) to replica 2 over
// loopback, at most 256 messages (or 16 MiB) in flight. Bytes/s counts value bytes delivered to the handler.
func BenchmarkPeerThroughput(b *testing.B) {
	for _, size := range []int{256, 16 << 10, 256 << 10} {
		for _, s2 := range []bool{false, true} {
			if s2 && size != 16<<10 {
				continue
			}
			b.Run(fmt.Sprintf("value=%d/s2=%v", size, s2), func(b *testing.B) {
				benchmarkPeerThroughput(b, size, s2)
			})
		}
	}
}

func benchmarkPeerThroughput(b *testing.B, size int, s2 bool) {
	// At most 256 messages or 16 MiB in flight: beyond OutboundBytesMax Send would drop.
	window := max(1, min(256, (16<<20)/size))
	addrs := freeAddrs(b, 2)
	features := uint32(0)
	if s2 {
		features = codec.FeatureS2
	}
	cfg1 := testConfig(1, addrs[0], map[uint32]string{2: addrs[1]})
	cfg2 := testConfig(2, addrs[1], map[uint32]string{1: addrs[0]})
	cfg1.Features, cfg2.Features = features, features
	receiver := &creditHandler{credits: make(chan struct{}, window)}
	sender := startServer(b, cfg1, &testHandler{})
	startServer(b, cfg2, receiver)
	waitFor(b, 5*time.Second, "link up", func() bool { return sender.Stats().PeersConnected == 1 })

	// Half random, half repeated: S2 has something to gain but not everything.
	value := make([]byte, size)
	for i := range value[:size/2] {
		value[i] = byte(rand.Uint32())
	}
	m := &codec.Message{Type: codec.TypeAccept, To: 2, Ballot: codec.Ballot{Round: 1, Replica: 1}, Values: [][]byte{value}}
	for range window {
		receiver.credits <- struct{}{}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		<-receiver.credits
		m.Slot = uint64(i)
		sender.Send(m)
	}
	waitFor(b, 30*time.Second, "all delivered", func() bool { return receiver.received.Load() == int64(b.N) })
	b.StopTimer()
	if drops := sender.Stats().Drops; drops != 0 {
		b.Fatalf("%d drops", drops)
	}
}

// BenchmarkClientRoundTrip: clients pipeline small requests (inflight outstanding each) over
// loopback; the handler answers at once on the loop ("respond=loop") or from another goroutine
// as a pipeline would ("respond=async"). ns/op is per request.
func BenchmarkClientRoundTrip(b *testing.B) {
	for _, async := range []bool{false, true} {
		for _, clients := range []int{1, 4} {
			for _, inflight := range []int{1, 64, 1024} {
				mode := "loop"
				if async {
					mode = "async"
				}
				name := fmt.Sprintf("respond=%s/clients=%d/inflight=%d", mode, clients, inflight)
				b.Run(name, func(b *testing.B) { benchmarkClientRoundTrip(b, async, clients, inflight) })
			}
		}
	}
}

type asyncBatch struct {
	conn *ClientConn
	rs   []codec.Response
}

func benchmarkClientRoundTrip(b *testing.B, async bool, clients, inflight int) {
	addrs := freeAddrs(b, 1)
	cfg := testConfig(1, addrs[0], nil)
	h := &testHandler{}
	var work chan asyncBatch
	var responderDone sync.WaitGroup
	if async {
		work = make(chan asyncBatch, 1024)
		h.onRequests = func(c *ClientConn, reqs []codec.Request) int {
			rs := make([]codec.Response, len(reqs))
			for i, r := range reqs {
				rs[i] = codec.Response{ClientID: r.ClientID, Seq: r.Seq, Slot: r.Seq}
			}
			work <- asyncBatch{c, rs}
			return len(reqs)
		}
		responderDone.Add(1)
		go func() {
			defer responderDone.Done()
			for batch := range work {
				batch.conn.Respond(batch.rs)
			}
		}()
	}
	s := startServer(b, cfg, h)
	b.Cleanup(func() {
		if work != nil {
			close(work)
			responderDone.Wait()
		}
	})

	conns := make([]*rawConn, clients)
	for i := range conns {
		conns[i], _ = dialClient(b, s.Addr(), uint64(i+1))
	}
	per := b.N/clients + 1
	payload := make([]byte, 64)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, 2*clients)
	for i, rc := range conns {
		wg.Add(2)
		credits := make(chan struct{}, inflight)
		for range inflight {
			credits <- struct{}{}
		}
		clientID := uint64(i + 1)
		go func() { // writer
			defer wg.Done()
			var out []byte
			for seq := 1; seq <= per; {
				<-credits
				out = codec.AppendRequest(out[:0], &codec.Request{ClientID: clientID, Seq: uint64(seq), Payload: payload})
				seq++
			more:
				for seq <= per {
					select {
					case <-credits:
						out = codec.AppendRequest(out, &codec.Request{ClientID: clientID, Seq: uint64(seq), Payload: payload})
						seq++
					default:
						break more
					}
				}
				if _, err := rc.conn.Write(out); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			_ = rc.conn.SetReadDeadline(time.Now().Add(time.Minute))
			r := bufio.NewReaderSize(rc.conn, 64<<10)
			frame := make([]byte, 64)
			for want := uint64(1); want <= uint64(per); want++ {
				header, err := r.Peek(codec.FrameHeaderSize)
				if err != nil {
					errs <- err
					return
				}
				_, n, err := codec.PeekFrame(header, nil)
				if err != nil && !errors.Is(err, codec.ErrIncomplete) {
					errs <- err
					return
				}
				frame = frame[:n]
				if _, err := ioReadFull(r, frame); err != nil {
					errs <- err
					return
				}
				var resp codec.Response
				if err := codec.DecodeResponse(frame, &resp, nil); err != nil || resp.Seq != want {
					errs <- fmt.Errorf("response %+v (%v), want seq %d", resp, err, want)
					return
				}
				credits <- struct{}{}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
