package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// knownResult has latencies 1..1000 microseconds, once each, and a two-sample timeline.
func knownResult(t *testing.T) *Result {
	t.Helper()
	r := &Result{Replicas: 3, Fsync: true, Clients: 4, Inflight: 8, PayloadBytes: 100,
		Duration: 2 * time.Second, Histogram: newHistogram(time.Minute.Microseconds()),
		Errors: 3, ErrorsByKind: map[string]int64{KindTimeout: 3}}
	for v := int64(1); v <= 1000; v++ {
		if err := r.Histogram.RecordValue(v); err != nil {
			t.Fatal(err)
		}
	}
	r.Ops = r.Histogram.TotalCount()
	r.Timeline = []Sample{
		{Elapsed: time.Second, Interval: time.Second, Warmup: true, Ops: 400, OpsPerSec: 400, P50: 500 * time.Microsecond, P99: 990 * time.Microsecond},
		{Elapsed: 2 * time.Second, Interval: time.Second, Ops: 600, OpsPerSec: 600, P50: 510 * time.Microsecond, P99: 995 * time.Microsecond, Errors: 3},
	}
	return r
}

func TestJSONLineHasExactlyTheKeys(t *testing.T) {
	r := knownResult(t)
	line, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(line, "\n") {
		t.Errorf("JSON is not one line: %s", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("JSON does not parse: %v\n%s", err, line)
	}
	want := []string{"ops", "ops_per_sec", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "errors",
		"replicas", "clients", "inflight", "payload_bytes", "fsync"}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sort.Strings(want)
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Fatalf("keys %v, want exactly %v", keys, want)
	}
	checks := map[string]float64{"ops": 1000, "ops_per_sec": 500, "errors": 3, "replicas": 3, "clients": 4,
		"inflight": 8, "payload_bytes": 100, "p50_us": 500, "p90_us": 900, "p99_us": 990, "p999_us": 999, "max_us": 1000}
	for k, v := range checks {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if got["fsync"] != true {
		t.Errorf("fsync = %v, want true", got["fsync"])
	}
}

func TestTableShowsTheFigures(t *testing.T) {
	var b bytes.Buffer
	if err := knownResult(t).WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replicas 3", "clients 4 x inflight 8", "payload 100 B", "fsync on",
		"ops/s", "MB/s", "p99.9", "1000", "500.0", "0.05", "500us", "990us", "timeout: 3"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestHgrmOutputParses(t *testing.T) {
	r := knownResult(t)
	var b bytes.Buffer
	if err := r.WriteHgrm(&b); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&b)
	var values, percentiles []float64
	var counts []int64
	var footerMax float64
	var footerCount int64
	header := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "Value"):
			header = true
		case strings.HasPrefix(line, "#[Max"):
			// #[Max     =        1.000, Total count    =         1000]
			parts := strings.FieldsFunc(line, func(r rune) bool { return r == '=' || r == ',' || r == ']' })
			footerMax, _ = strconv.ParseFloat(strings.TrimSpace(parts[1]), 64)
			footerCount, _ = strconv.ParseInt(strings.TrimSpace(parts[3]), 10, 64)
		case strings.HasPrefix(line, "#"):
		default:
			f := strings.Fields(line)
			if len(f) != 4 {
				t.Fatalf("data line %q has %d fields, want 4", line, len(f))
			}
			v, err1 := strconv.ParseFloat(f[0], 64)
			p, err2 := strconv.ParseFloat(f[1], 64)
			c, err3 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatalf("data line %q does not parse", line)
			}
			values, percentiles, counts = append(values, v), append(percentiles, p), append(counts, c)
		}
	}
	if !header || len(values) < 10 {
		t.Fatalf("header %v, %d data lines:\n%s", header, len(values), b.String())
	}
	for i := 1; i < len(values); i++ {
		if values[i] < values[i-1] || percentiles[i] < percentiles[i-1] || counts[i] < counts[i-1] {
			t.Fatalf("line %d goes backwards", i)
		}
	}
	last := len(values) - 1
	// Values are in milliseconds: the 1000us maximum is 1.000.
	if math.Abs(values[last]-1.0) > 0.002 || percentiles[last] != 1 || counts[last] != 1000 {
		t.Errorf("last line value %v percentile %v count %d, want 1.0ms, 1, 1000", values[last], percentiles[last], counts[last])
	}
	if footerCount != 1000 || math.Abs(footerMax-1.0) > 0.002 {
		t.Errorf("footer max %v count %d, want 1.0 and 1000", footerMax, footerCount)
	}
}

func TestReportIsSelfContainedAndCarriesTheData(t *testing.T) {
	first := knownResult(t)
	second := knownResult(t)
	second.Clients = 8
	var b bytes.Buffer
	if err := WriteReport(&b, []*Result{first, second}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, banned := range []string{"http://", "https://", "src=", "<link", "@import", "url("} {
		if strings.Contains(page, banned) {
			t.Errorf("report contains %q: it must load nothing", banned)
		}
	}
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("report has %d charts, want 4 (throughput, latency over time, percentiles, sweep)", n)
	}
	for _, want := range []string{"<polyline", "Throughput over time", "Latency by percentile", "990us", "timeout: 3"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	const open = `<script type="application/json" id="mpaxos-bench-data">`
	i := strings.Index(page, open)
	j := strings.Index(page[i+1:], "</script>")
	if i < 0 || j < 0 {
		t.Fatal("report has no embedded data")
	}
	var data struct {
		Runs []struct {
			Summary     map[string]any `json:"summary"`
			Timeline    []map[string]any
			Percentiles []map[string]any
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(page[i+len(open):i+1+j]), &data); err != nil {
		t.Fatalf("embedded data does not parse: %v", err)
	}
	if len(data.Runs) != 2 || data.Runs[1].Summary["clients"] != 8.0 || data.Runs[0].Summary["ops"] != 1000.0 {
		t.Fatalf("embedded runs %+v", data.Runs)
	}
	if len(data.Runs[0].Timeline) != 2 || data.Runs[0].Timeline[1]["ops_per_sec"] != 600.0 {
		t.Errorf("embedded timeline %+v", data.Runs[0].Timeline)
	}
	if len(data.Runs[0].Percentiles) < 10 {
		t.Errorf("embedded percentile curve has %d points", len(data.Runs[0].Percentiles))
	}
}

func TestReportFromARealRun(t *testing.T) {
	cfg := testConfig()
	cfg.Clients, cfg.Inflight = 1, 2
	res, err := Run(context.Background(), cfg, dialFakes(&fakeTarget{latency: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteReport(&b, []*Result{res}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "<svg"); n != 3 {
		t.Errorf("single-run report has %d charts, want 3", n)
	}
	if err := WriteReport(&b, nil); err == nil {
		t.Error("WriteReport(nil) succeeded")
	}
}

func TestFormatLatency(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Microsecond:  "850us",
		1234 * time.Microsecond: "1.23ms",
		25 * time.Millisecond:   "25.0ms",
		999 * time.Millisecond:  "999ms",
		2500 * time.Millisecond: "2.50s",
	} {
		if got := FormatLatency(d); got != want {
			t.Errorf("FormatLatency(%v) = %q, want %q", d, got, want)
		}
	}
}
