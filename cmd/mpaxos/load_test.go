package main

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/pipeline"
)

// TestLoad drives a 3-process cluster (fsync on) with many pipelined clients and reports the
// throughput. Off by default: MPAXOS_LOAD_SECONDS=10 runs it (MPAXOS_LOAD_CLIENTS,
// MPAXOS_LOAD_INFLIGHT, MPAXOS_LOAD_PAYLOAD adjust it; MPAXOS_LOAD_PROFILE=FILE saves a CPU
// profile of the leader taken during the run).
func TestLoad(t *testing.T) {
	seconds := envInt("MPAXOS_LOAD_SECONDS", 0)
	if seconds <= 0 {
		t.Skip("set MPAXOS_LOAD_SECONDS to run")
	}
	clients, inflight, payloadBytes := envInt("MPAXOS_LOAD_CLIENTS", 64), envInt("MPAXOS_LOAD_INFLIGHT", 64), envInt("MPAXOS_LOAD_PAYLOAD", 16)
	var extra []string
	if w := os.Getenv("MPAXOS_LOAD_WINDOW"); w != "" {
		extra = append(extra, "--window", w)
	}
	rs := startReplicas(t, 3, extra...)
	leader := leaderOf(t, rs, 10*time.Second)
	var cs []*client.Client
	for i := 0; i < clients; i++ {
		cs = append(cs, dial(t, []string{leader.addr}, inflight))
	}
	payload := make([]byte, payloadBytes)
	var done, failed atomic.Int64
	var histMu sync.Mutex
	hist := hdrhistogram.New(1, 60_000_000, 3) // microseconds
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	if path := os.Getenv("MPAXOS_LOAD_PROFILE"); path != "" {
		go saveProfile(t, "http://"+leader.admin+"/debug/pprof/profile?seconds="+strconv.Itoa(max(seconds-2, 1)), path)
	}
	start := time.Now()
	// Each client keeps inflight requests outstanding: every answer submits the next one
	// from the client's reader goroutine, so the load costs no goroutine per request.
	var wg sync.WaitGroup
	var submit func(c *client.Client)
	submit = func(c *client.Client) {
		if time.Now().After(deadline) {
			wg.Done()
			return
		}
		t0 := time.Now()
		err := c.AppendAsync(payload, func(_ client.Result, err error) {
			if err != nil {
				failed.Add(1)
			} else {
				done.Add(1)
				histMu.Lock()
				_ = hist.RecordValue(time.Since(t0).Microseconds())
				histMu.Unlock()
			}
			submit(c)
		})
		if err != nil {
			failed.Add(1)
			wg.Done()
		}
	}
	for _, c := range cs {
		for k := 0; k < inflight; k++ {
			wg.Add(1)
			submit(c)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	var lat pipeline.LatencyReport
	_ = leader.getJSON("/debug/latency", &lat)
	t.Logf("3 replicas, fsync on, %d B commands, %d clients x %d in flight, %v: %d commands, %.0f commands/s, %d failed",
		payloadBytes, clients, inflight, elapsed.Round(time.Millisecond), done.Load(), float64(done.Load())/elapsed.Seconds(), failed.Load())
	t.Logf("client latency: p50 %dus p90 %dus p99 %dus p99.9 %dus max %dus", hist.ValueAtQuantile(50), hist.ValueAtQuantile(90),
		hist.ValueAtQuantile(99), hist.ValueAtQuantile(99.9), hist.Max())
	t.Logf("leader stages (p50/p99 us): batch wait %d/%d, phase-2 %d/%d, fsync %d/%d, apply-to-reply %d/%d; slots %d",
		lat.BatchWait.P50, lat.BatchWait.P99, lat.Phase2.P50, lat.Phase2.P99, lat.Persist.P50, lat.Persist.P99,
		lat.ApplyToReply.P50, lat.ApplyToReply.P99, lat.Phase2.Count)
	if done.Load() == 0 {
		t.Fatal("no command completed")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func saveProfile(t *testing.T, url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Logf("profile: %v", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}
