package pipeline

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latency is one stage's HdrHistogram of durations (microseconds, 1 µs to 100 s).
type latency struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newLatency() *latency { return &latency{h: hdrhistogram.New(1, 100_000_000, 3)} }

func (l *latency) record(d time.Duration) {
	us := d.Microseconds()
	us = max(us, 1)
	l.mu.Lock()
	_ = l.h.RecordValue(min(us, 100_000_000))
	l.mu.Unlock()
}

// LatencySummary is one stage's percentiles in microseconds.
type LatencySummary struct {
	Count int64   `json:"count"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p999_us"`
	Max   int64   `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

func (l *latency) summary() LatencySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LatencySummary{
		Count: l.h.TotalCount(),
		P50:   l.h.ValueAtQuantile(50),
		P90:   l.h.ValueAtQuantile(90),
		P99:   l.h.ValueAtQuantile(99),
		P999:  l.h.ValueAtQuantile(99.9),
		Max:   l.h.Max(),
		Mean:  l.h.Mean(),
	}
}

// stageLatencies are the per-stage histograms of /debug/latency.
type stageLatencies struct {
	batchWait    *latency // first command of a batch added -> batch proposed
	phase2       *latency // slot proposed -> chosen (leader only)
	persist      *latency // Ready handed to the WAL -> durable (the fsync stage)
	applyToReply *latency // chosen entries handed to apply -> responses queued
}

func newStageLatencies() stageLatencies {
	return stageLatencies{batchWait: newLatency(), phase2: newLatency(), persist: newLatency(), applyToReply: newLatency()}
}

// LatencyReport is the JSON of /debug/latency.
type LatencyReport struct {
	BatchWait    LatencySummary `json:"batch_wait"`
	Phase2       LatencySummary `json:"phase2_round_trip"`
	Persist      LatencySummary `json:"fsync"`
	ApplyToReply LatencySummary `json:"apply_to_reply"`
}

// Latencies returns the per-stage latency percentiles since Start.
func (n *Node) Latencies() LatencyReport {
	return LatencyReport{
		BatchWait:    n.latency.batchWait.summary(),
		Phase2:       n.latency.phase2.summary(),
		Persist:      n.latency.persist.summary(),
		ApplyToReply: n.latency.applyToReply.summary(),
	}
}

// metrics are the Prometheus series of /metrics.
type metrics struct {
	registry       *prometheus.Registry
	commandsChosen prometheus.Counter
	slotsChosen    prometheus.Counter
	batchCommands  prometheus.Histogram
	batchBytes     prometheus.Histogram
	leaderChanges  prometheus.Counter
	peerDrops      prometheus.Counter
	persistSeconds prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		registry: reg,
		commandsChosen: prometheus.NewCounter(prometheus.CounterOpts{Name: "mpaxos_commands_chosen_total",
			Help: "Client commands in chosen slots applied by this replica."}),
		slotsChosen: prometheus.NewCounter(prometheus.CounterOpts{Name: "mpaxos_slots_chosen_total",
			Help: "Slots chosen and applied by this replica."}),
		batchCommands: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mpaxos_batch_commands",
			Help: "Commands per proposed batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		batchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mpaxos_batch_bytes",
			Help: "Encoded bytes per proposed batch.", Buckets: prometheus.ExponentialBuckets(64, 4, 9)}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "mpaxos_leader_changes_total",
			Help: "Changes of the leader this replica knows of."}),
		peerDrops: prometheus.NewCounter(prometheus.CounterOpts{Name: "mpaxos_peer_messages_dropped_total",
			Help: "Peer messages dropped because the step loop queue was full."}),
		persistSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mpaxos_persist_seconds",
			Help: "WAL append plus fsync latency of one Ready.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14)}),
	}
	reg.MustRegister(m.commandsChosen, m.slotsChosen, m.batchCommands, m.batchBytes, m.leaderChanges,
		m.peerDrops, m.persistSeconds)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_window_occupancy",
			Help: "Slots proposed and not yet chosen (leader)."}, func() float64 { return float64(n.inflight.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_is_leader",
			Help: "1 if this replica leads."}, func() float64 {
			if n.isLeader.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_pending_requests",
			Help: "Client requests taken and not yet answered."}, func() float64 { return float64(n.pendingRequests()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_client_connections",
			Help: "Client connections past their handshake."}, func() float64 { return float64(n.net.Stats().ClientConnections) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_client_buffered_bytes",
			Help: "Bytes client connections hold in the network buffers (netio BufferedBytesMax)."},
			func() float64 { return float64(n.net.Stats().BufferedBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_connections_refused_total",
			Help: "Connections closed for a capacity limit (clients at ClientConnectionsMax, handshakes at HandshakesMax)."},
			func() float64 { return float64(n.net.Stats().ConnectionsRefused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_clients_refused_total",
			Help: "Client Hellos refused at ClientConnectionsMax."}, func() float64 { return float64(n.net.Stats().ClientsRefused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_handshakes_evicted_total",
			Help: "Connections closed in their handshake to admit a newer one."}, func() float64 { return float64(n.net.Stats().HandshakesEvicted) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_handshakes_refused_total",
			Help: "Connections closed at accept: HandshakesMax reached."}, func() float64 { return float64(n.net.Stats().HandshakesRefused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_handshake_failures_total",
			Help: "Handshakes refused or timed out, inbound and outbound."}, func() float64 { return float64(n.net.Stats().HandshakeFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_protocol_errors_total",
			Help: "Established connections closed for what they sent."}, func() float64 { return float64(n.net.Stats().ProtocolErrors) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_frame_timeouts_total",
			Help: "Client connections closed: a frame not whole within FrameTimeout."}, func() float64 { return float64(n.net.Stats().FrameTimeouts) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_idle_timeouts_total",
			Help: "Client connections closed after IdleTimeout with nothing pending."}, func() float64 { return float64(n.net.Stats().IdleTimeouts) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_buffered_cutoffs_total",
			Help: "Client connections closed at BufferedBytesMax."}, func() float64 { return float64(n.net.Stats().BufferedCutoffs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_slow_readers_total",
			Help: "Client connections closed: responses queued past ClientOutboundBytesMax."}, func() float64 { return float64(n.net.Stats().SlowReaders) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_requests_too_large_total",
			Help: "Requests over PayloadBytesMax answered TooLarge."}, func() float64 { return float64(n.net.Stats().RequestsTooLarge) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_warnings_suppressed_total",
			Help: "Network warnings not logged because of the rate limit (WarnInterval)."},
			func() float64 { return float64(n.net.Stats().WarningsSuppressed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_bytes_in_total",
			Help: "Bytes read from all connections."}, func() float64 { return float64(n.net.Stats().BytesIn) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_bytes_out_total",
			Help: "Bytes written to all connections."}, func() float64 { return float64(n.net.Stats().BytesOut) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_wal_fsyncs_total",
			Help: "WAL fdatasync calls."}, func() float64 { return float64(n.wal.Stats().Fsyncs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_peer_sends_dropped_total",
			Help: "Peer messages netio dropped on send (link down or outbound buffer full)."}, func() float64 { return float64(n.net.Stats().Drops) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_chosen_cache_hits_total",
			Help: "Chosen slots served from memory (catch-up, reads)."}, func() float64 { return float64(n.ring.hits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_disk_reads_overloaded_total",
			Help: "Reads of slots only on disk answered StatusOverloaded: the disk reader's queue (DiskReadQueueMax) was full."},
			func() float64 { return float64(n.diskReadsOverloaded.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mpaxos_chosen_cache_misses_total",
			Help: "Chosen-slot lookups the in-memory cache could not serve."}, func() float64 { return float64(n.ring.misses.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_chosen_cache_bytes",
			Help: "Bytes held by the chosen-value cache (ring and cold tier)."}, func() float64 { return float64(n.ring.cachedBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mpaxos_wal_fsync_p99_seconds",
			Help: "WAL fdatasync latency, 99th percentile since start."}, func() float64 { return n.wal.Stats().FsyncLatencyP99.Seconds() }),
	)
	return m
}

// adminHandler serves the admin endpoints, behind AdminToken when it is set.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	if !n.cfg.AdminNoPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// pprof's cmdline handler would serve os.Args, and with it a --secret given on the
	// command line: never registered, and answered 404 whatever else is on.
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.Handle("/metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/latency", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, n.Latencies())
	})
	mux.HandleFunc("/debug/applied", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, n.Applied())
	})
	mux.HandleFunc("/debug/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, n.Status())
	})
	return requireToken(n.cfg.AdminToken, mux)
}

// requireToken answers 401 to a request without "Authorization: Bearer <token>" (compared in
// constant time); an empty token lets every request through.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mpaxos admin"`)
			http.Error(w, "mpaxos admin: missing or wrong token (Authorization: Bearer <token>)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
