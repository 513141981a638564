package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Kind is a profile type.
type Kind string

// The profile kinds Capture knows.
const (
	CPU       Kind = "cpu"
	Heap      Kind = "heap"
	Mutex     Kind = "mutex"
	Block     Kind = "block"
	Goroutine Kind = "goroutine"
)

// Kinds lists every known kind in a stable order.
var Kinds = []Kind{CPU, Heap, Mutex, Block, Goroutine}

// Sentinel errors.
var (
	// ErrConfig: a Config field or argument is out of range; the text names it.
	ErrConfig = errors.New("perf: invalid config")
	// ErrFetch: a profile could not be fetched or saved; the text names replica, kind and URL.
	ErrFetch = errors.New("perf: fetching profile failed")
)

// ParseKinds parses a comma-separated list such as "cpu,heap". Duplicates collapse; an
// unknown or empty name is an error naming it and the known ones.
func ParseKinds(list string) ([]Kind, error) {
	var kinds []Kind
	seen := make(map[Kind]bool)
	for _, name := range strings.Split(list, ",") {
		k := Kind(strings.TrimSpace(strings.ToLower(name)))
		known := false
		for _, want := range Kinds {
			known = known || k == want
		}
		if !known {
			return nil, fmt.Errorf("%w: unknown profile kind %q (want a comma-separated list of cpu, heap, mutex, block, goroutine)", ErrConfig, name)
		}
		if !seen[k] {
			seen[k] = true
			kinds = append(kinds, k)
		}
	}
	return kinds, nil
}

// Endpoint is one replica's admin address: "host:port" or a base URL ("http://host:port").
type Endpoint struct {
	ReplicaID uint32
	AdminAddr string
}

// Config says what to capture, where to, and for how long.
type Config struct {
	// Dir receives the profiles; it is created if missing.
	Dir string
	// Kinds to capture from every endpoint.
	Kinds []Kind
	// Window is the measured window the profiles should cover.
	Window time.Duration
	// ProfileBytesMax bounds one profile's size; a larger one is an error, not a file.
	ProfileBytesMax int64
	// RequestGrace is how long a fetch may take beyond the part of Window it covers.
	RequestGrace time.Duration
	// Client makes the requests; nil = a plain http.Client (each request has its own
	// timeout from Window and RequestGrace).
	Client *http.Client
}

// Limits on Config fields.
const (
	profileBytesLimit = 4 << 30
	windowMax         = 24 * time.Hour
)

// DefaultConfig returns a config for dir and window with every kind.
func DefaultConfig(dir string, window time.Duration) Config {
	return Config{
		Dir:             dir,
		Kinds:           append([]Kind(nil), Kinds...),
		Window:          window,
		ProfileBytesMax: 256 << 20,
		RequestGrace:    30 * time.Second,
	}
}

// Validate reports the first field out of range.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is empty", ErrConfig)
	case len(c.Kinds) == 0:
		return fmt.Errorf("%w: Kinds is empty", ErrConfig)
	case c.Window <= 0 || c.Window > windowMax:
		return fmt.Errorf("%w: Window = %v, want 0 < window <= %v", ErrConfig, c.Window, windowMax)
	case c.ProfileBytesMax < 1 || c.ProfileBytesMax > profileBytesLimit:
		return fmt.Errorf("%w: ProfileBytesMax = %d, want 1..%d", ErrConfig, c.ProfileBytesMax, int64(profileBytesLimit))
	case c.RequestGrace <= 0:
		return fmt.Errorf("%w: RequestGrace = %v, want > 0", ErrConfig, c.RequestGrace)
	}
	for _, k := range c.Kinds {
		if _, err := ParseKinds(string(k)); err != nil {
			return err
		}
	}
	return nil
}

// Profile is the outcome of one fetch.
type Profile struct {
	ReplicaID uint32
	Kind      Kind
	Path      string // where it was saved ("" on error)
	Bytes     int64
	Err       error
}

// FileName is the name a profile is saved under: replica-<id>-<kind>.pb.gz.
func FileName(replicaID uint32, kind Kind) string {
	return fmt.Sprintf("replica-%d-%s.pb.gz", replicaID, kind)
}

// windowSeconds is the ?seconds= value covering window: whole seconds, at least one.
func windowSeconds(window time.Duration) int64 {
	return max(1, int64(window/time.Second))
}

// request returns the pprof URL path and query for kind, and how long to wait before asking.
func request(kind Kind, window time.Duration) (path string, delay time.Duration) {
	seconds := windowSeconds(window)
	switch kind {
	case CPU:
		return fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), 0
	case Mutex, Block:
		return fmt.Sprintf("/debug/pprof/%s?seconds=%d", kind, seconds), 0
	default: // heap, goroutine: a snapshot in the middle of the window
		return "/debug/pprof/" + string(kind), window / 2
	}
}

func baseURL(addr string) string {
	addr = strings.TrimRight(addr, "/")
	if strings.Contains(addr, "://") {
		return addr
	}
	return "http://" + addr
}

// Capture fetches every kind from every endpoint concurrently and returns when all are done
// (or ctx ends), one Profile per (endpoint, kind) in endpoint then kind order. The error is
// for a bad config or an unusable Dir; fetch failures are in the Profiles.
func Capture(ctx context.Context, cfg Config, endpoints []Endpoint) ([]Profile, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints", ErrConfig)
	}
	for _, e := range endpoints {
		if e.AdminAddr == "" {
			return nil, fmt.Errorf("%w: replica %d has no admin address", ErrConfig, e.ReplicaID)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: creating %s: %v", ErrConfig, cfg.Dir, err)
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{}
	}
	profiles := make([]Profile, 0, len(endpoints)*len(cfg.Kinds))
	for _, e := range endpoints {
		for _, k := range cfg.Kinds {
			profiles = append(profiles, Profile{ReplicaID: e.ReplicaID, Kind: k})
		}
	}
	var wg sync.WaitGroup
	for i := range profiles {
		p := &profiles[i]
		addr := endpoints[i/len(cfg.Kinds)].AdminAddr
		wg.Go(func() { p.Path, p.Bytes, p.Err = fetch(ctx, client, &cfg, addr, p.ReplicaID, p.Kind) })
	}
	wg.Wait()
	return profiles, nil
}

func fetch(ctx context.Context, client *http.Client, cfg *Config, addr string, id uint32, kind Kind) (string, int64, error) {
	path, delay := request(kind, cfg.Window)
	url := baseURL(addr) + path
	fail := func(format string, args ...any) (string, int64, error) {
		return "", 0, fmt.Errorf("%w: replica %d %s from %s: %s", ErrFetch, id, kind, url, fmt.Sprintf(format, args...))
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fail("%v", ctx.Err())
		}
	}
	timeout := time.Duration(windowSeconds(cfg.Window))*time.Second + cfg.RequestGrace
	reqCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
	if err != nil {
		return fail("%v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail("%v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, cfg.ProfileBytesMax+1))
	if err != nil {
		return fail("reading the body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail("HTTP %s: %s", resp.Status, strings.TrimSpace(string(body[:min(len(body), 300)])))
	}
	if int64(len(body)) > cfg.ProfileBytesMax {
		return fail("profile larger than ProfileBytesMax (%d bytes)", cfg.ProfileBytesMax)
	}
	if !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		return fail("response is not a gzip-compressed profile (starts %q)", body[:min(len(body), 16)])
	}
	final := filepath.Join(cfg.Dir, FileName(id, kind))
	temporary := final + ".tmp"
	if err := os.WriteFile(temporary, body, 0o644); err != nil {
		return fail("saving: %v", err)
	}
	if err := os.Rename(temporary, final); err != nil {
		_ = os.Remove(temporary)
		return fail("saving: %v", err)
	}
	return final, int64(len(body)), nil
}

// Commands returns, for every saved profile, the command that opens it in pprof's web UI.
func Commands(profiles []Profile) []string {
	var out []string
	for _, p := range profiles {
		if p.Err == nil && p.Path != "" {
			out = append(out, "go tool pprof -http=127.0.0.1:0 "+p.Path)
		}
	}
	return out
}

// WriteSummary prints what was saved, what failed and how to open each profile.
func WriteSummary(w io.Writer, profiles []Profile) error {
	var b strings.Builder
	failed := 0
	for _, p := range profiles {
		if p.Err != nil {
			failed++
			fmt.Fprintf(&b, "profile failed: %v\n", p.Err)
		}
	}
	fmt.Fprintf(&b, "profiles saved: %d of %d; open with:\n", len(profiles)-failed, len(profiles))
	for _, c := range Commands(profiles) {
		fmt.Fprintf(&b, "  %s\n", c)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
