package client_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/pipeline"
)

// These tests run one real replica (package pipeline) so that the exactly-once table, the
// dense offsets and the client meet for real.

const replicaCluster = 4242

func startReplica(t *testing.T, dataDir, addr string) *pipeline.Node {
	t.Helper()
	cfg := pipeline.DefaultConfig()
	cfg.ID = 1
	cfg.Peers = map[uint32]string{1: addr}
	cfg.ClusterID = replicaCluster
	cfg.Secret = []byte("exactly-once-test-secret")
	cfg.DataDir = dataDir
	cfg.NoSync = true
	cfg.TickInterval = 5 * time.Millisecond
	cfg.ElectionTicks = 10
	cfg.HeartbeatTicks = 2
	cfg.RetransmitTicks = 10
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := pipeline.Start(cfg)
	if err != nil {
		t.Fatalf("start replica: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !n.Status().IsLeader {
		if time.Now().After(deadline) {
			t.Fatal("the single replica did not become leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

func stopReplica(t *testing.T, n *pipeline.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Errorf("stop replica: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// rawClient speaks the client protocol by hand, so a test can choose seqs and floors and
// withhold a request, which the Client never does.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	id uint64
}

func dialRawClient(t *testing.T, addr string, id uint64) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc), id: id}
	var ch codec.Challenge
	if err := codec.DecodeChallenge(rc.frame(), &ch, nil); err != nil {
		t.Fatal(err)
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: replicaCluster, ClientID: id}
	if _, err := nc.Write(codec.AppendHello(nil, &hello)); err != nil {
		t.Fatal(err)
	}
	var w codec.Welcome
	if err := codec.DecodeWelcome(rc.frame(), &w, nil); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawClient) frame() []byte {
	rc.t.Helper()
	head, err := rc.br.Peek(codec.FrameHeaderSize)
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	_, n, err := codec.PeekFrame(head, nil)
	if err != nil && !errors.Is(err, codec.ErrIncomplete) {
		rc.t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rc.br, b); err != nil {
		rc.t.Fatal(err)
	}
	return b
}

// send writes requests (seq, floor) in one write, then reads one Response per request and
// returns them by seq.
func (rc *rawClient) send(reqs ...[2]uint64) map[uint64]codec.Response {
	rc.t.Helper()
	var out []byte
	for _, r := range reqs {
		out = codec.AppendRequest(out, &codec.Request{ClientID: rc.id, Seq: r[0], SeqFloor: r[1], Payload: []byte{byte(r[0]), 'x'}})
	}
	if _, err := rc.nc.Write(out); err != nil {
		rc.t.Fatal(err)
	}
	got := map[uint64]codec.Response{}
	for range reqs {
		var resp codec.Response
		if err := codec.DecodeResponse(rc.frame(), &resp, nil); err != nil {
			rc.t.Fatalf("want a Response: %v", err)
		}
		got[resp.Seq] = resp
	}
	return got
}

// TestLostLowerSeqIsAppliedAfterHigherOnes is the scenario the per-client seq floor exists
// for: seqs 5, 6, 7 in flight, 5 lost (its leader crashed before proposing it), 6 and 7
// applied; the retry of 5 must be applied, not answered as a duplicate. Every acknowledged
// command has its own offset, the offsets are dense, and a restart replays the same ones.
func TestLostLowerSeqIsAppliedAfterHigherOnes(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := startReplica(t, dir, addr)
	rc := dialRawClient(t, addr, 77)

	acked := map[uint64]codec.Response{} // offset -> answer
	ack := func(r codec.Response) {
		t.Helper()
		if r.Status != codec.StatusOK {
			t.Fatalf("seq %d answered %+v, want OK", r.Seq, r)
		}
		if prev, dup := acked[r.Offset]; dup && prev.Seq != r.Seq {
			t.Fatalf("offset %d given to seq %d and seq %d", r.Offset, prev.Seq, r.Seq)
		}
		acked[r.Offset] = r
	}
	// Seqs 1-4 go through normally; then 5 is "lost": 6 and 7 are sent with floor 5.
	for _, r := range rc.send([2]uint64{1, 1}, [2]uint64{2, 1}, [2]uint64{3, 1}, [2]uint64{4, 1}) {
		ack(r)
	}
	high := rc.send([2]uint64{6, 5}, [2]uint64{7, 5})
	ack(high[6])
	ack(high[7])
	five := rc.send([2]uint64{5, 5})[5]
	ack(five)
	if five.Offset <= high[6].Offset || five.Offset <= high[7].Offset {
		t.Fatalf("seq 5 got offset %d, want a new one after 6's %d and 7's %d", five.Offset, high[6].Offset, high[7].Offset)
	}
	// Retries of 5, 6 and 7 are duplicates answered with their original positions.
	for seq, r := range rc.send([2]uint64{5, 5}, [2]uint64{6, 5}, [2]uint64{7, 5}) {
		orig := map[uint64]codec.Response{5: five, 6: high[6], 7: high[7]}[seq]
		if r.Status != codec.StatusOK || r.Slot != orig.Slot || r.Index != orig.Index || r.Offset != orig.Offset {
			t.Fatalf("retry of seq %d answered %+v, want the original %+v", seq, r, orig)
		}
	}
	// Floor 8 says 5-7 are answered: a late copy of 6 is abandoned, not applied.
	ack(rc.send([2]uint64{8, 8})[8])
	if r := rc.send([2]uint64{6, 5})[6]; r.Status != codec.StatusAbandoned {
		t.Fatalf("seq 6 below the floor 8 answered %+v, want StatusAbandoned", r)
	}
	// A seq SessionSeqsMax above the floor is refused.
	far := 8 + uint64(pipeline.DefaultSessionSeqsMax)
	if r := rc.send([2]uint64{far, 8})[far]; r.Status != codec.StatusInvalid {
		t.Fatalf("seq %d with floor 8 answered %+v, want StatusInvalid", far, r)
	}
	// Another client through the library: its results take the next offsets.
	c, err := client.Dial(context.Background(), client.Config{Endpoints: []string{addr}, ClusterID: replicaCluster,
		InflightMax: 16, RequestTimeout: 5 * time.Second, DialTimeout: time.Second, RetryBackoff: 5 * time.Millisecond,
		WriteBytesMax: 1 << 16, Limits: codec.DefaultLimits()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		res, err := c.Append(context.Background(), []byte("library"))
		if err != nil {
			t.Fatal(err)
		}
		ack(codec.Response{Seq: 1000 + uint64(i), Status: codec.StatusOK, Slot: res.Slot, Index: res.Index, Offset: res.Offset})
	}
	_ = c.Close()
	for off := range uint64(len(acked)) {
		if _, ok := acked[off]; !ok {
			t.Fatalf("offsets are not dense: %d missing among %d acknowledged commands", off, len(acked))
		}
	}
	before := waitApplied(t, n, uint64(len(acked)))
	stopReplica(t, n)

	// Restart: the log replays to the same offsets, and a retry of 5 still finds its own.
	n = startReplica(t, dir, addr)
	defer stopReplica(t, n)
	after := waitApplied(t, n, before.Offset)
	if after.Offset != before.Offset || after.Digest != before.Digest && after.Slot == before.Slot {
		t.Fatalf("after restart applied %+v, before %+v", after, before)
	}
	rc = dialRawClient(t, addr, 77)
	if r := rc.send([2]uint64{8, 8})[8]; r.Status != codec.StatusOK || acked[r.Offset].Seq != 8 {
		t.Fatalf("retry of seq 8 after restart answered %+v, want its original offset", r)
	}
}

func waitApplied(t *testing.T, n *pipeline.Node, offset uint64) pipeline.AppliedState {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a := n.Applied()
		if a.Offset >= offset {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("applied %+v, want offset %d", a, offset)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
