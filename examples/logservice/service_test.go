package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mpaxos/mpaxos"
	"github.com/mpaxos/mpaxos/internal/testnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}

type instances struct {
	t     *testing.T
	cfgs  map[uint32]mpaxos.Config
	svcs  map[uint32]*service
	httpc *http.Client
}

func startInstances(t *testing.T) *instances {
	in := &instances{t: t, cfgs: map[uint32]mpaxos.Config{}, svcs: map[uint32]*service{},
		httpc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}}
	peers := map[uint32]string{}
	for i, a := range testnet.FreeAddrs(t, 3) {
		peers[uint32(i+1)] = a
	}
	for id := range peers {
		cfg := mpaxos.DefaultConfig()
		cfg.ID, cfg.Peers, cfg.ClusterID = id, peers, 5
		cfg.Secret = []byte("logservice-test-secret")
		cfg.DataDir = t.TempDir()
		cfg.NoSync = true
		cfg.SnapshotEveryCommands = 64 // compaction happens during the test
		cfg.Runtime.TickInterval = 5 * time.Millisecond
		cfg.Runtime.WALSegmentBytes = 1 << 20 // a new WAL zero-fills its first segment: keep starts fast
		cfg.Runtime.ElectionTicks = 20
		cfg.Runtime.HeartbeatTicks = 2
		cfg.Runtime.Snapshot.RetryInterval = 50 * time.Millisecond
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		in.cfgs[id] = cfg
		in.start(id)
	}
	t.Cleanup(func() {
		for id := range in.svcs {
			in.kill(id)
		}
	})
	return in
}

func (in *instances) start(id uint32) {
	s, err := startService(in.cfgs[id], "127.0.0.1:0")
	if err != nil {
		in.t.Fatalf("start instance %d: %v", id, err)
	}
	in.svcs[id] = s
}

func (in *instances) kill(id uint32) {
	if err := in.svcs[id].Close(); err != nil {
		in.t.Errorf("close instance %d: %v", id, err)
	}
	delete(in.svcs, id)
}

func (in *instances) url(id uint32, path string) string {
	return "http://" + in.svcs[id].Addr() + path
}

// appendAll posts perInstance records through each running instance concurrently and
// returns the record acknowledged at each offset.
func (in *instances) appendAll(perInstance int, tag string, into map[uint64]string) {
	in.t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id := range in.svcs {
		url := in.url(id, "/records")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perInstance; j++ {
				rec := fmt.Sprintf("%s-%d-%d", tag, id, j)
				resp, err := in.httpc.Post(url, "text/plain", strings.NewReader(rec))
				if err != nil {
					in.t.Errorf("POST %s: %v", rec, err)
					return
				}
				var reply appendReply
				err = json.NewDecoder(resp.Body).Decode(&reply)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK || err != nil {
					in.t.Errorf("POST %s: status %d, %v", rec, resp.StatusCode, err)
					return
				}
				mu.Lock()
				if old, dup := into[reply.Offset]; dup {
					in.t.Errorf("offset %d acknowledged for %q and %q", reply.Offset, old, rec)
				}
				into[reply.Offset] = rec
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// checkSame asserts that every running instance serves want at every offset in [from, len).
func (in *instances) checkSame(want map[uint64]string, from uint64) {
	in.t.Helper()
	for off := uint64(0); off < uint64(len(want)); off++ {
		if _, ok := want[off]; !ok {
			in.t.Fatalf("offset %d was never acknowledged: offsets are not dense", off)
		}
	}
	for id := range in.svcs {
		for off := from; off < uint64(len(want)); off++ {
			resp, err := in.httpc.Get(in.url(id, fmt.Sprintf("/records/%d", off)))
			if err != nil {
				in.t.Fatalf("instance %d GET %d: %v", id, off, err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != want[off] {
				in.t.Fatalf("instance %d offset %d: status %d %q, want %q", id, off, resp.StatusCode, body, want[off])
			}
		}
	}
}

func TestThreeInstancesServeTheSameLogAcrossARestart(t *testing.T) {
	in := startInstances(t)
	want := map[uint64]string{}
	in.appendAll(40, "first", want)
	in.checkSame(want, 0)

	in.kill(2)
	in.appendAll(40, "while-down", want)
	in.start(2) // same data directory: recovers from its snapshot and WAL, then catches up
	in.appendAll(20, "after", want)
	if len(want) != 3*40+2*40+3*20 {
		t.Fatalf("%d records acknowledged", len(want))
	}
	// Records compacted on some instance are 410 Gone there; compare what all still hold.
	first := uint64(0)
	for _, s := range in.svcs {
		first = max(first, s.node.Position().First)
	}
	in.checkSame(want, first)
}

func TestTailStreamsRecordsInOrder(t *testing.T) {
	in := startInstances(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.url(3, "/tail?from=0"), nil)
	resp, err := in.httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := map[uint64]string{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.appendAll(10, "tail", want)
	}()
	sc := bufio.NewScanner(resp.Body)
	next := uint64(0)
	var got []tailEvent
	for next < 30 && sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		var ev tailEvent
		if err := json.Unmarshal(line[len("data: "):], &ev); err != nil {
			t.Fatalf("bad event %q: %v", line, err)
		}
		if ev.Offset != next {
			t.Fatalf("tail gave offset %d, want %d", ev.Offset, next)
		}
		got = append(got, ev)
		next++
	}
	<-done
	for _, ev := range got {
		if want[ev.Offset] != ev.Record {
			t.Fatalf("tail offset %d = %q, acknowledged %q", ev.Offset, ev.Record, want[ev.Offset])
		}
	}
	if len(got) != 30 {
		t.Fatalf("tail gave %d records, want 30 (%v)", len(got), sc.Err())
	}
	cancel()
}
