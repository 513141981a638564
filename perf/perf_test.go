package perf

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pprofServer serves net/http/pprof like a replica's admin address and records the queries.
func pprofServer(t *testing.T) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, r.URL.RequestURI()+" @"+time.Now().Format("15:04:05.000"))
			mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(record(mux))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func TestCaptureSavesEveryKindFromEveryReplica(t *testing.T) {
	srv1, seen1 := pprofServer(t)
	// One process can run one CPU profile at a time, so replica 2 is a stub that answers
	// every path with a small gzip stream, naming what it was asked.
	var stubMu sync.Mutex
	stubSeen := map[string]bool{}
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stubMu.Lock()
		stubSeen[r.URL.Path] = true
		stubMu.Unlock()
		zw := gzip.NewWriter(w)
		io.WriteString(zw, r.URL.RequestURI())
		zw.Close()
	}))
	defer srv2.Close()
	dir := filepath.Join(t.TempDir(), "profiles")
	cfg := DefaultConfig(dir, time.Second)
	started := time.Now()
	profiles, err := Capture(context.Background(), cfg, []Endpoint{
		{ReplicaID: 1, AdminAddr: strings.TrimPrefix(srv1.URL, "http://")}, // host:port form
		{ReplicaID: 2, AdminAddr: srv2.URL},                                // URL form
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(started); took < time.Second {
		t.Errorf("capture took %v: the cpu profile should cover the 1s window", took)
	}
	if len(profiles) != 10 {
		t.Fatalf("%d profiles, want 2 replicas x 5 kinds", len(profiles))
	}
	for _, p := range profiles {
		if p.Err != nil {
			t.Errorf("replica %d %s: %v", p.ReplicaID, p.Kind, p.Err)
			continue
		}
		want := filepath.Join(dir, FileName(p.ReplicaID, p.Kind))
		if p.Path != want {
			t.Errorf("saved as %s, want %s", p.Path, want)
		}
		raw, err := os.ReadFile(p.Path)
		if err != nil || int64(len(raw)) != p.Bytes {
			t.Fatalf("%s: %v (%d bytes, reported %d)", p.Path, err, len(raw), p.Bytes)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s is not gzip: %v", p.Path, err)
		}
		if body, err := io.ReadAll(zr); err != nil || len(body) == 0 {
			t.Errorf("%s: empty or corrupt profile (%v)", p.Path, err)
		}
	}
	queries := strings.Join(seen1(), "\n")
	for _, want := range []string{"/debug/pprof/profile?seconds=1", "/debug/pprof/mutex?seconds=1",
		"/debug/pprof/block?seconds=1", "/debug/pprof/heap", "/debug/pprof/goroutine"} {
		if !strings.Contains(queries, want) {
			t.Errorf("replica 1 was not asked for %s; asked:\n%s", want, queries)
		}
	}
	if len(stubSeen) != 5 {
		t.Errorf("replica 2 was asked for %v, want 5 paths", stubSeen)
	}
	cmds := Commands(profiles)
	if len(cmds) != 10 || !strings.HasPrefix(cmds[0], "go tool pprof ") || !strings.HasSuffix(cmds[0], "replica-1-cpu.pb.gz") {
		t.Errorf("commands: %v", cmds)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestCaptureReportsFailuresPerProfile(t *testing.T) {
	srv, _ := pprofServer(t)
	notPprof := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello, not a profile")
	}))
	defer notPprof.Close()
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()

	cfg := DefaultConfig(t.TempDir(), 200*time.Millisecond)
	cfg.Kinds = []Kind{Heap}
	profiles, err := Capture(context.Background(), cfg, []Endpoint{
		{ReplicaID: 1, AdminAddr: srv.URL},
		{ReplicaID: 2, AdminAddr: notPprof.URL},
		{ReplicaID: 3, AdminAddr: missing.URL},
		{ReplicaID: 4, AdminAddr: "127.0.0.1:1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if profiles[0].Err != nil {
		t.Errorf("good replica failed: %v", profiles[0].Err)
	}
	for i, want := range map[int]string{1: "not a gzip-compressed profile", 2: "404", 3: "replica 4 heap"} {
		if err := profiles[i].Err; !errors.Is(err, ErrFetch) || !strings.Contains(err.Error(), want) {
			t.Errorf("replica %d: err = %v, want ErrFetch mentioning %q", i+1, err, want)
		}
	}
	var summary bytes.Buffer
	if err := WriteSummary(&summary, profiles); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(summary.String(), "profiles saved: 1 of 4") || strings.Count(summary.String(), "go tool pprof") != 1 {
		t.Errorf("summary:\n%s", summary.String())
	}
}

func TestCaptureBoundsProfileSize(t *testing.T) {
	srv, _ := pprofServer(t)
	cfg := DefaultConfig(t.TempDir(), 100*time.Millisecond)
	cfg.Kinds = []Kind{Goroutine}
	cfg.ProfileBytesMax = 10
	profiles, err := Capture(context.Background(), cfg, []Endpoint{{ReplicaID: 1, AdminAddr: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if err := profiles[0].Err; err == nil || !strings.Contains(err.Error(), "ProfileBytesMax") {
		t.Errorf("err = %v, want the size limit named", err)
	}
	if _, statErr := os.Stat(filepath.Join(cfg.Dir, FileName(1, Goroutine))); !os.IsNotExist(statErr) {
		t.Errorf("an oversized profile was saved")
	}
}

func TestCaptureHonoursContext(t *testing.T) {
	srv, _ := pprofServer(t)
	cfg := DefaultConfig(t.TempDir(), 5*time.Second)
	cfg.Kinds = []Kind{CPU, Heap}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started := time.Now()
	profiles, err := Capture(ctx, cfg, []Endpoint{{ReplicaID: 1, AdminAddr: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(started); took > 3*time.Second {
		t.Errorf("cancelled capture took %v", took)
	}
	for _, p := range profiles {
		if p.Err == nil {
			t.Errorf("%s succeeded despite the cancelled context", p.Kind)
		}
	}
}

func TestParseKindsAndValidate(t *testing.T) {
	kinds, err := ParseKinds("cpu, HEAP,cpu,goroutine")
	if err != nil || len(kinds) != 3 || kinds[0] != CPU || kinds[1] != Heap || kinds[2] != Goroutine {
		t.Errorf("ParseKinds = %v, %v", kinds, err)
	}
	for _, bad := range []string{"", "cpu,,heap", "trace", "cpu,allocs"} {
		if _, err := ParseKinds(bad); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "want a comma-separated list") {
			t.Errorf("ParseKinds(%q) = %v, want ErrConfig listing the kinds", bad, err)
		}
	}
	cases := map[string]func(*Config){
		"Dir":             func(c *Config) { c.Dir = "" },
		"Kinds":           func(c *Config) { c.Kinds = nil },
		"Window":          func(c *Config) { c.Window = 0 },
		"ProfileBytesMax": func(c *Config) { c.ProfileBytesMax = 0 },
		"RequestGrace":    func(c *Config) { c.RequestGrace = 0 },
	}
	for field, edit := range cases {
		cfg := DefaultConfig("d", time.Second)
		edit(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
	if _, err := Capture(context.Background(), DefaultConfig(t.TempDir(), time.Second), nil); !errors.Is(err, ErrConfig) {
		t.Errorf("no endpoints: %v", err)
	}
	if _, err := Capture(context.Background(), DefaultConfig(t.TempDir(), time.Second), []Endpoint{{ReplicaID: 3}}); err == nil || !strings.Contains(err.Error(), "replica 3") {
		t.Errorf("empty admin address: %v", err)
	}
	if got := windowSeconds(2500 * time.Millisecond); got != 2 {
		t.Errorf("windowSeconds(2.5s) = %d", got)
	}
	if got := windowSeconds(300 * time.Millisecond); got != 1 {
		t.Errorf("windowSeconds(0.3s) = %d", got)
	}
}
