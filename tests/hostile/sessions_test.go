package hostile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/tests/chaos/history"
)

// Issue 15, defect 7, checked with porcupine: a flood of new client ids (66,000 in 2 s) evicted
// a live session, and its retry applied twice. With an exactly-once table of 24 clients, a
// flood of fresh ids runs while 4 clients append and the leader is killed and restarted (so
// their commands are resent with the same seqs). Every flood request is recorded too: one the
// replicas answered OK must be in the log once, one answered Overloaded (the table was full)
// must not be in it at all. The whole history must be linearizable, with no value applied
// twice and none lost.
func TestClientIDFloodKeepsExactlyOnce(t *testing.T) {
	const sessionsMax, workers, flooders = 24, 4, 6
	e := startCluster(t, "--sessions-max", "24")
	endpoints, clusterID := e.cluster.Endpoints(), e.cluster.ClusterID()
	rec := history.NewRecorder(1 << 20)
	var next atomic.Uint64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range workers {
		cfg := client.DefaultConfig()
		cfg.Endpoints, cfg.ClusterID, cfg.InflightMax = endpoints, clusterID, 4
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				v := next.Add(1)
				op := history.Op{Client: w, Kind: history.KindAppend, Value: v, Call: rec.Now()}
				callCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := c.Append(callCtx, history.EncodePayload(v))
				done()
				if err == nil {
					op.Outcome, op.Return = history.OutcomeOK, rec.Now()
					op.Slot, op.Index, op.Offset, op.HasOffset = r.Slot, r.Index, r.Offset, true
				} else {
					op.Outcome, op.Return, op.Err = history.OutcomeIndeterminate, history.Infinity, err.Error()
				}
				_ = rec.Add(op)
			}
		}()
	}
	// The victim appends once, then stays idle while the flood runs: the least recently
	// active session, the one an evicting table drops first.
	victimID, victimValue := rand.Uint64()|1, next.Add(1)
	victimOp := history.Op{Client: workers + flooders, Kind: history.KindAppend, Value: victimValue, Call: rec.Now()}
	first, err := appendRaw(e.cluster.Node(e.leader(5*time.Second)).ListenAddr, clusterID, victimID, victimValue)
	if err != nil || first.Status != codec.StatusOK {
		t.Fatalf("victim's append: %+v, %v", first, err)
	}
	victimOp.Outcome, victimOp.Return = history.OutcomeOK, rec.Now()
	victimOp.Slot, victimOp.Index, victimOp.Offset, victimOp.HasOffset = first.Slot, first.Index, first.Offset, true
	_ = rec.Add(victimOp)
	var overloaded, applied atomic.Int64
	for f := range flooders {
		rng := rand.New(rand.NewPCG(uint64(f), 15))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				leader := e.leader(2 * time.Second)
				if leader == 0 {
					continue
				}
				v := next.Add(1)
				op := history.Op{Client: workers + f, Kind: history.KindAppend, Value: v, Call: rec.Now()}
				op.Outcome, op.Return = floodOnce(e.cluster.Node(leader).ListenAddr, clusterID, rng.Uint64()|1, v, &op)
				if op.Outcome == history.OutcomeOK {
					op.Return = rec.Now()
					applied.Add(1)
				}
				if op.Outcome == history.OutcomeFailed {
					overloaded.Add(1)
					op.Return = rec.Now()
				}
				_ = rec.Add(op)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	// The victim's answer was lost (say): it resends the same (client id, seq). It must get
	// its original position back, not be applied a second time.
	again, err := appendRaw(e.cluster.Node(e.leader(5*time.Second)).ListenAddr, clusterID, victimID, victimValue)
	if err != nil || again.Status != codec.StatusOK || again.Offset != first.Offset || again.Slot != first.Slot {
		t.Errorf("victim's resend after the flood: %+v, %v; want its first answer (slot %d, offset %d) again",
			again, err, first.Slot, first.Offset)
	}
	leader := e.leader(5 * time.Second)
	if err := e.cluster.Kill(leader); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := e.cluster.Start(leader); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()

	final := readFinalLog(t, endpoints, clusterID)
	res := history.Check(rec.Ops(), &final, history.Config{Name: t.Name(), Timeout: 60 * time.Second})
	t.Logf("%d flood requests applied, %d refused as Overloaded (table of %d); %s", applied.Load(), overloaded.Load(),
		sessionsMax, res.Summary())
	if !res.OK() {
		t.Fatalf("history: %s\n%v", res.Summary(), res.Problems)
	}
	if overloaded.Load() == 0 {
		t.Fatal("no flood request was refused: the table never filled, the test proved nothing")
	}
}

// floodOnce connects as a fresh client id, appends v once and returns the outcome: OK with
// its position (op filled in), Failed when the replica refused it before proposing it
// (Overloaded: the exactly-once table is full; a Redirect), Indeterminate otherwise.
func floodOnce(addr string, clusterID, clientID, v uint64, op *history.Op) (history.Outcome, int64) {
	c, err := dialRawClient(addr, clusterID, clientID)
	if err != nil {
		return history.OutcomeFailed, 0 // never sent
	}
	defer c.conn.Close()
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := codec.Request{ClientID: clientID, Seq: 1, SeqFloor: 1, Payload: history.EncodePayload(v)}
	if _, err := c.conn.Write(codec.AppendRequest(nil, &req)); err != nil {
		return history.OutcomeIndeterminate, history.Infinity
	}
	for {
		typ, frame, err := c.readFrame()
		if err != nil {
			return history.OutcomeIndeterminate, history.Infinity
		}
		switch typ {
		case codec.TypeRedirect:
			return history.OutcomeFailed, 0
		case codec.TypeResponse:
			var resp codec.Response
			if codec.DecodeResponse(frame, &resp, nil) != nil {
				return history.OutcomeIndeterminate, history.Infinity
			}
			switch resp.Status {
			case codec.StatusOK:
				op.Slot, op.Index, op.Offset, op.HasOffset = resp.Slot, resp.Index, resp.Offset, true
				return history.OutcomeOK, 0
			case codec.StatusOverloaded, codec.StatusNotLeader:
				return history.OutcomeFailed, 0
			default:
				return history.OutcomeIndeterminate, history.Infinity
			}
		}
	}
}

// appendRaw appends value once as (clientID, seq 1) and returns the answer (a Redirect is an
// error: the caller addresses the leader).
func appendRaw(addr string, clusterID, clientID, value uint64) (codec.Response, error) {
	c, err := dialRawClient(addr, clusterID, clientID)
	if err != nil {
		return codec.Response{}, err
	}
	defer c.conn.Close()
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := codec.Request{ClientID: clientID, Seq: 1, SeqFloor: 1, Payload: history.EncodePayload(value)}
	if _, err := c.conn.Write(codec.AppendRequest(nil, &req)); err != nil {
		return codec.Response{}, err
	}
	for {
		typ, frame, err := c.readFrame()
		if err != nil {
			return codec.Response{}, err
		}
		if typ == codec.TypeResponse {
			var resp codec.Response
			err := codec.DecodeResponse(frame, &resp, nil)
			return resp, err
		}
		if typ == codec.TypeRedirect {
			return codec.Response{}, fmt.Errorf("redirected by %s", addr)
		}
	}
}

// readFinalLog reads the whole applied log back through the leader, in offset order.
func readFinalLog(t *testing.T, endpoints []string, clusterID uint64) history.Final {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints, cfg.ClusterID = endpoints, clusterID
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	latest, err := c.ReadLatest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var final history.Final
	for offset := range latest.Length {
		r, err := c.ReadAt(ctx, offset)
		if err != nil || !r.Found {
			t.Fatalf("ReadAt(%d): found %v, %v", offset, r.Found, err)
		}
		v, err := history.DecodePayload(r.Payload)
		if err != nil {
			t.Fatalf("offset %d: %v", offset, err)
		}
		final.Entries = append(final.Entries, history.Entry{Slot: r.Slot, Index: r.Index, Value: v})
	}
	return final
}
