package hostile

import (
	"context"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/batching"
	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
)

// Issue 15, defect 8: a payload over PayloadBytesMax closed the connection. It must be answered
// TooLarge, and the same connection must go on serving.
func TestOversizedPayloadIsAnsweredTooLarge(t *testing.T) {
	e := startEnv(t)
	leader := e.leader(5 * time.Second)
	c, err := dialRawClient(e.cluster.Node(leader).ListenAddr, e.cluster.ClusterID(), 777)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	oversized := codec.AppendRequest(nil, &codec.Request{ClientID: 777, Seq: 1, SeqFloor: 1,
		Payload: make([]byte, codec.DefaultPayloadBytesMax+1)})
	next := codec.AppendRequest(nil, &codec.Request{ClientID: 777, Seq: 2, SeqFloor: 2, Payload: []byte("after")})
	start := time.Now()
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(append(oversized, next...)); err != nil {
		t.Fatalf("writing %d bytes: %v (the replica closed the connection)", len(oversized), err)
	}
	answers := map[uint64]codec.Status{}
	for len(answers) < 2 {
		typ, frame, err := c.readFrame()
		if err != nil {
			t.Fatalf("after a %d-byte payload: %v; answers so far %v (want seq 1 TooLarge, seq 2 served)",
				codec.DefaultPayloadBytesMax+1, err, answers)
		}
		switch typ {
		case codec.TypeResponse:
			var r codec.Response
			if err := codec.DecodeResponse(frame, &r, nil); err != nil {
				t.Fatal(err)
			}
			answers[r.Seq] = r.Status
		case codec.TypeRedirect: // leadership moved meanwhile: still an answer on a live connection
			var r codec.Redirect
			if err := codec.DecodeRedirect(frame, &r, nil); err != nil {
				t.Fatal(err)
			}
			answers[r.Seq] = codec.StatusNotLeader
		}
	}
	if answers[1] != codec.StatusTooLarge {
		t.Fatalf("oversized payload answered %v, want TooLarge", answers[1])
	}
	if answers[2] != codec.StatusOK && answers[2] != codec.StatusNotLeader {
		t.Fatalf("the request after it answered %v", answers[2])
	}
	t.Logf("payload of %d bytes: TooLarge after %v; the next request on the same connection: %v",
		codec.DefaultPayloadBytesMax+1, time.Since(start).Round(time.Millisecond), answers[2])
}

// Issue 15, defect 8: the documented payload limit, codec.DefaultPayloadBytesMax (1 MiB), must
// be reachable with every default. It was not: batching.DefaultBatchBytesMax (512 KiB) is
// smaller than one command of that size, so the leader answered TooLarge from about 512 KiB.
// Now a command larger than a batch gets a batch of its own, up to batching.CommandBytesMax.
func TestDocumentedPayloadLimitIsReachableByDefault(t *testing.T) {
	if have := batching.DefaultConfig().CommandBytesMax; have < codec.DefaultPayloadBytesMax {
		t.Fatalf("batching.DefaultCommandBytesMax is %d, below codec.DefaultPayloadBytesMax %d", have, codec.DefaultPayloadBytesMax)
	}
	e := startEnv(t)
	cfg := client.DefaultConfig()
	cfg.Endpoints = e.cluster.Endpoints()
	cfg.ClusterID = e.cluster.ClusterID()
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Append(ctx, make([]byte, codec.DefaultPayloadBytesMax)); err != nil {
		t.Fatalf("a payload of exactly PayloadBytesMax (%d bytes): %v", codec.DefaultPayloadBytesMax, err)
	}
}
