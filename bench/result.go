package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one run measured. Replicas and Fsync describe the system under test; the
// engine cannot know them, so the caller fills them in before reporting.
type Result struct {
	Replicas     int
	Fsync        bool
	Clients      int
	Inflight     int
	PayloadBytes int
	Rate         float64       // 0 = closed loop
	Duration     time.Duration // measured window (shorter when interrupted)
	Ops          int64         // successful requests whose intended start fell in the window
	Errors       int64         // failed requests whose intended start fell in the window
	ErrorsByKind map[string]int64
	// Histogram holds the latency of every counted success, in microseconds.
	Histogram *hdrhistogram.Histogram
	// Timeline has one Sample per progress interval, warm-up included.
	Timeline []Sample
	// SendLag (open loop only, else nil) holds, for every request due in the measured
	// window, how late it was handed to the client library after its due time, in
	// microseconds: the generator's own share of the latency. A high p99 here means the
	// generator, not the cluster, missed its schedule (a starved CPU, a full in-flight cap).
	SendLag *hdrhistogram.Histogram
}

// OpsPerSec is successes per second of the measured window.
func (r *Result) OpsPerSec() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Duration.Seconds()
}

// MBPerSec is payload megabytes (10^6 bytes) per second acknowledged.
func (r *Result) MBPerSec() float64 {
	return r.OpsPerSec() * float64(r.PayloadBytes) / 1e6
}

// Percentile returns the latency at percentile p (0..100) of the successes.
func (r *Result) Percentile(p float64) time.Duration {
	if r.Histogram == nil {
		return 0
	}
	return time.Duration(r.Histogram.ValueAtQuantile(p)) * time.Microsecond
}

// Max is the highest latency recorded (to the histogram's precision).
func (r *Result) Max() time.Duration {
	if r.Histogram == nil || r.Histogram.TotalCount() == 0 {
		return 0
	}
	return time.Duration(r.Histogram.Max()) * time.Microsecond
}

// Mode says "closed loop" or "open loop at N ops/s".
func (r *Result) Mode() string {
	if r.Rate == 0 {
		return "closed loop"
	}
	return fmt.Sprintf("open loop at %.0f ops/s", r.Rate)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// WriteTable prints the human summary: one line of setup, the figures, the errors by kind.
func (r *Result) WriteTable(w io.Writer) error {
	_, err := fmt.Fprintf(w,
		"replicas %d, clients %d x inflight %d, payload %d B, fsync %s, %s, measured %v\n"+
			"%10s %12s %8s %9s %9s %9s %9s %9s %8s\n"+
			"%10d %12.1f %8.2f %9s %9s %9s %9s %9s %8d\n"+
			"errors: %s\n",
		r.Replicas, r.Clients, r.Inflight, r.PayloadBytes, onOff(r.Fsync), r.Mode(), r.Duration,
		"ops", "ops/s", "MB/s", "p50", "p90", "p99", "p99.9", "max", "errors",
		r.Ops, r.OpsPerSec(), r.MBPerSec(),
		FormatLatency(r.Percentile(50)), FormatLatency(r.Percentile(90)),
		FormatLatency(r.Percentile(99)), FormatLatency(r.Percentile(99.9)),
		FormatLatency(r.Max()), r.Errors, r.ErrorSummary())
	if err != nil || r.SendLag == nil || r.SendLag.TotalCount() == 0 {
		return err
	}
	lag := func(q float64) string {
		return FormatLatency(time.Duration(r.SendLag.ValueAtQuantile(q)) * time.Microsecond)
	}
	_, err = fmt.Fprintf(w, "send lag (due -> sent, included above): p50 %s, p99 %s, max %s\n",
		lag(50), lag(99), FormatLatency(time.Duration(r.SendLag.Max())*time.Microsecond))
	return err
}

// resultJSON fixes the JSON line's keys; scripts depend on exactly these.
type resultJSON struct {
	Ops          int64   `json:"ops"`
	OpsPerSec    float64 `json:"ops_per_sec"`
	P50          int64   `json:"p50_us"`
	P90          int64   `json:"p90_us"`
	P99          int64   `json:"p99_us"`
	P999         int64   `json:"p999_us"`
	Max          int64   `json:"max_us"`
	Errors       int64   `json:"errors"`
	Replicas     int     `json:"replicas"`
	Clients      int     `json:"clients"`
	Inflight     int     `json:"inflight"`
	PayloadBytes int     `json:"payload_bytes"`
	Fsync        bool    `json:"fsync"`
}

// JSON returns the result as one line of JSON (no trailing newline) with exactly the keys
// ops, ops_per_sec, p50_us, p90_us, p99_us, p999_us, max_us, errors, replicas, clients,
// inflight, payload_bytes, fsync. Latencies are integer microseconds.
func (r *Result) JSON() ([]byte, error) {
	return json.Marshal(resultJSON{
		Ops:          r.Ops,
		OpsPerSec:    float64(int64(r.OpsPerSec()*10)) / 10,
		P50:          r.Percentile(50).Microseconds(),
		P90:          r.Percentile(90).Microseconds(),
		P99:          r.Percentile(99).Microseconds(),
		P999:         r.Percentile(99.9).Microseconds(),
		Max:          r.Max().Microseconds(),
		Errors:       r.Errors,
		Replicas:     r.Replicas,
		Clients:      r.Clients,
		Inflight:     r.Inflight,
		PayloadBytes: r.PayloadBytes,
		Fsync:        r.Fsync,
	})
}

// hgrmTicksPerHalfDistance is the usual resolution of .hgrm files (HdrHistogram's default).
const hgrmTicksPerHalfDistance = 5

// WriteHgrm writes the percentile distribution in HdrHistogram's .hgrm text format with
// values in milliseconds, the unit HdrHistogram's plotter expects.
func (r *Result) WriteHgrm(w io.Writer) error {
	h := r.Histogram
	if h == nil {
		return fmt.Errorf("bench: no histogram to write")
	}
	_, err := h.PercentilesPrint(w, hgrmTicksPerHalfDistance, 1000.0)
	return err
}

// WriteSweepTable prints one line per run of a sweep: the throughput/latency curve.
func WriteSweepTable(w io.Writer, results []*Result) error {
	if _, err := fmt.Fprintf(w, "%8s %9s %12s %8s %9s %9s %9s %9s %8s\n",
		"clients", "inflight", "ops/s", "MB/s", "p50", "p99", "p99.9", "max", "errors"); err != nil {
		return err
	}
	for _, r := range results {
		if _, err := fmt.Fprintf(w, "%8d %9d %12.1f %8.2f %9s %9s %9s %9s %8d\n",
			r.Clients, r.Inflight, r.OpsPerSec(), r.MBPerSec(), FormatLatency(r.Percentile(50)),
			FormatLatency(r.Percentile(99)), FormatLatency(r.Percentile(99.9)),
			FormatLatency(r.Max()), r.Errors); err != nil {
			return err
		}
	}
	return nil
}
