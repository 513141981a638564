package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// The report is one HTML file with inline SVG charts and the data inline as JSON: it opens
// offline and loads nothing (no scripts, fonts or styles from anywhere else).

// Chart geometry in SVG user units.
const (
	chartWidth  = 760.0
	chartHeight = 300.0
	chartLeft   = 70.0
	chartRight  = 20.0
	chartTop    = 30.0
	chartBottom = 45.0
	chartTicks  = 5
)

type point struct{ X, Y float64 }

type series struct {
	Name   string
	Color  string
	Points []point
	Labels []string // optional, one per point, drawn beside it
}

type tick struct {
	Value float64
	Label string
}

type chart struct {
	Title, XLabel, YLabel string
	Series                []series
	XTicks                []tick // nil = evenly spaced numbers
	ShadeUntil            float64
	Markers               bool
}

// svg renders the chart as an inline <svg> element.
func (c *chart) svg() template.HTML {
	xMin, xMax, yMax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			xMin, xMax, yMax = math.Min(xMin, p.X), math.Max(xMax, p.X), math.Max(yMax, p.Y)
		}
	}
	if math.IsInf(xMin, 0) {
		xMin, xMax = 0, 1
	}
	xMin = math.Min(xMin, 0) // time, throughput and percentile axes all read best from zero
	if xMax <= xMin {
		xMax = xMin + 1
	}
	if yMax <= 0 {
		yMax = 1
	}
	yMax *= 1.1
	plotW := chartWidth - chartLeft - chartRight
	plotH := chartHeight - chartTop - chartBottom
	sx := func(x float64) float64 { return chartLeft + (x-xMin)/(xMax-xMin)*plotW }
	sy := func(y float64) float64 { return chartTop + plotH - y/yMax*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img">`, chartWidth, chartHeight, chartWidth, chartHeight)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`, chartLeft, template.HTMLEscapeString(c.Title))
	if c.ShadeUntil > xMin {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#eee"/>`,
			sx(xMin), chartTop, sx(math.Min(c.ShadeUntil, xMax))-sx(xMin), plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#888">warm-up</text>`, sx(xMin)+4, chartTop+12)
	}
	// Axes and grid.
	fmt.Fprintf(&b, `<g stroke="#999" stroke-width="1"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/></g>`,
		chartLeft, chartTop, chartLeft, chartTop+plotH, chartLeft, chartTop+plotH, chartLeft+plotW, chartTop+plotH)
	for i := 0; i <= chartTicks; i++ {
		y := yMax * float64(i) / chartTicks
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/><text x="%.1f" y="%.1f" font-size="10" text-anchor="end">%s</text>`,
			chartLeft, sy(y), chartLeft+plotW, sy(y), chartLeft-4, sy(y)+3, formatAxis(y))
	}
	xTicks := c.XTicks
	if xTicks == nil {
		for i := 0; i <= chartTicks; i++ {
			x := xMin + (xMax-xMin)*float64(i)/chartTicks
			xTicks = append(xTicks, tick{x, formatAxis(x)})
		}
	}
	for _, t := range xTicks {
		if t.Value < xMin || t.Value > xMax {
			continue
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`,
			sx(t.Value), chartTop+plotH+14, template.HTMLEscapeString(t.Label))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`,
		chartLeft+plotW/2, chartHeight-8, template.HTMLEscapeString(c.XLabel))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" font-size="11" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`,
		chartTop+plotH/2, chartTop+plotH/2, template.HTMLEscapeString(c.YLabel))
	// Series and legend.
	for i, s := range c.Series {
		var pts strings.Builder
		for _, p := range s.Points {
			fmt.Fprintf(&pts, "%.1f,%.1f ", sx(p.X), sy(p.Y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.Color, strings.TrimSpace(pts.String()))
		if c.Markers {
			for j, p := range s.Points {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, sx(p.X), sy(p.Y), s.Color)
				if j < len(s.Labels) {
					fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10">%s</text>`,
						sx(p.X)+5, sy(p.Y)-5, template.HTMLEscapeString(s.Labels[j]))
				}
			}
		}
		lx := chartLeft + plotW - 150
		ly := chartTop + 14 + float64(i)*14
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/><text x="%.1f" y="%.1f" font-size="11">%s</text>`,
			lx, ly-4, lx+20, ly-4, s.Color, lx+24, ly, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built from numbers and escaped strings only
}

func formatAxis(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func throughputChart(r *Result, warmup float64) *chart {
	ops := series{Name: "ops/s", Color: "#1f77b4"}
	for _, s := range r.Timeline {
		ops.Points = append(ops.Points, point{s.Elapsed.Seconds(), s.OpsPerSec})
	}
	return &chart{Title: "Throughput over time", XLabel: "elapsed (s)", YLabel: "ops/s",
		Series: []series{ops}, ShadeUntil: warmup}
}

func latencyTimeChart(r *Result, warmup float64) *chart {
	p50 := series{Name: "p50", Color: "#2ca02c"}
	p99 := series{Name: "p99", Color: "#d62728"}
	for _, s := range r.Timeline {
		p50.Points = append(p50.Points, point{s.Elapsed.Seconds(), ms(s.P50)})
		p99.Points = append(p99.Points, point{s.Elapsed.Seconds(), ms(s.P99)})
	}
	return &chart{Title: "Latency over time (per interval)", XLabel: "elapsed (s)", YLabel: "latency (ms)",
		Series: []series{p50, p99}, ShadeUntil: warmup}
}

// percentilePoint is one step of the latency-by-percentile curve.
type percentilePoint struct {
	Percentile float64 `json:"percentile"`
	LatencyUs  int64   `json:"latency_us"`
	Count      int64   `json:"count"`
}

func percentileCurve(r *Result) []percentilePoint {
	if r.Histogram == nil || r.Histogram.TotalCount() == 0 {
		return nil
	}
	var curve []percentilePoint
	for _, b := range r.Histogram.CumulativeDistributionWithTicks(hgrmTicksPerHalfDistance) {
		curve = append(curve, percentilePoint{Percentile: b.Quantile, LatencyUs: b.ValueAt, Count: b.Count})
	}
	return curve
}

// percentileX maps a percentile to the usual HdrHistogram axis, log10(1/(1-p)), capped so
// 100% stays on the chart.
func percentileX(p float64) float64 {
	return math.Log10(1 / math.Max(1-p/100, 1e-6))
}

func percentileChart(curve []percentilePoint) *chart {
	lat := series{Name: "latency", Color: "#9467bd"}
	for _, p := range curve {
		lat.Points = append(lat.Points, point{percentileX(p.Percentile), float64(p.LatencyUs) / 1000})
	}
	ticks := []tick{{0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}, {6, "100%"}}
	return &chart{Title: "Latency by percentile (measured window)", XLabel: "percentile", YLabel: "latency (ms)",
		Series: []series{lat}, XTicks: ticks}
}

func sweepChart(results []*Result) *chart {
	curve := series{Name: "p99 vs ops/s", Color: "#ff7f0e"}
	for _, r := range results {
		curve.Points = append(curve.Points, point{r.OpsPerSec(), ms(r.Percentile(99))})
		curve.Labels = append(curve.Labels, fmt.Sprintf("%d clients", r.Clients))
	}
	return &chart{Title: "Sweep: p99 latency against throughput", XLabel: "ops/s", YLabel: "p99 latency (ms)",
		Series: []series{curve}, Markers: true}
}

// reportData is the JSON embedded in the page, for anyone who wants the numbers.
type reportData struct {
	Runs []reportRun `json:"runs"`
}

type reportRun struct {
	Summary     json.RawMessage   `json:"summary"`
	Rate        float64           `json:"rate"`
	DurationSec float64           `json:"duration_sec"`
	ErrorsBy    map[string]int64  `json:"errors_by_kind"`
	Timeline    []reportSample    `json:"timeline"`
	Percentiles []percentilePoint `json:"percentiles"`
}

type reportSample struct {
	ElapsedSec float64 `json:"elapsed_sec"`
	Warmup     bool    `json:"warmup"`
	Ops        int64   `json:"ops"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50Us      int64   `json:"p50_us"`
	P99Us      int64   `json:"p99_us"`
	Errors     int64   `json:"errors"`
}

type reportRow struct {
	Clients, Inflight                      int
	Ops, Errors                            int64
	OpsPerSec, MBPerSec                    string
	P50, P90, P99, P999, Max, ErrorsByKind string
}

type reportPage struct {
	Title       string
	Setup       string
	Generated   string
	Rows        []reportRow
	Charts      []template.HTML
	Percentiles []percentilePoint
	Data        template.JS
}

// WriteReport writes a self-contained HTML page for results (one run, or every step of a
// sweep): a summary table, throughput and latency over time and the latency-by-percentile
// curve of the last run, the sweep curve when there are several, and all the data as JSON.
func WriteReport(w io.Writer, results []*Result) error {
	if len(results) == 0 {
		return fmt.Errorf("bench: report needs at least one result")
	}
	last := results[len(results)-1]
	warmup := 0.0
	for _, s := range last.Timeline {
		if s.Warmup {
			warmup = s.Elapsed.Seconds()
		}
	}
	page := reportPage{
		Title: "mpaxos-bench report",
		Setup: fmt.Sprintf("replicas %d, payload %d B, fsync %s, %s, measured %v per run",
			last.Replicas, last.PayloadBytes, onOff(last.Fsync), last.Mode(), last.Duration),
		Generated: time.Now().UTC().Format(time.RFC3339),
	}
	var data reportData
	for _, r := range results {
		summary, err := r.JSON()
		if err != nil {
			return err
		}
		page.Rows = append(page.Rows, reportRow{
			Clients: r.Clients, Inflight: r.Inflight, Ops: r.Ops, Errors: r.Errors,
			OpsPerSec: fmt.Sprintf("%.1f", r.OpsPerSec()), MBPerSec: fmt.Sprintf("%.2f", r.MBPerSec()),
			P50: FormatLatency(r.Percentile(50)), P90: FormatLatency(r.Percentile(90)),
			P99: FormatLatency(r.Percentile(99)), P999: FormatLatency(r.Percentile(99.9)),
			Max: FormatLatency(r.Max()), ErrorsByKind: r.ErrorSummary(),
		})
		run := reportRun{Summary: summary, Rate: r.Rate, DurationSec: r.Duration.Seconds(),
			ErrorsBy: r.ErrorsByKind, Percentiles: percentileCurve(r)}
		for _, s := range r.Timeline {
			run.Timeline = append(run.Timeline, reportSample{
				ElapsedSec: s.Elapsed.Seconds(), Warmup: s.Warmup, Ops: s.Ops, OpsPerSec: s.OpsPerSec,
				P50Us: s.P50.Microseconds(), P99Us: s.P99.Microseconds(), Errors: s.Errors,
			})
		}
		data.Runs = append(data.Runs, run)
	}
	page.Percentiles = percentileCurve(last)
	page.Charts = []template.HTML{
		throughputChart(last, warmup).svg(),
		latencyTimeChart(last, warmup).svg(),
		percentileChart(page.Percentiles).svg(),
	}
	if len(results) > 1 {
		page.Charts = append(page.Charts, sweepChart(results).svg())
	}
	encoded, err := json.Marshal(data) // escapes <, > and &, so it cannot end the script element
	if err != nil {
		return err
	}
	page.Data = template.JS(encoded)
	return reportTemplate.Execute(w, page)
}

var reportTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-size: 13px; }
th { background: #f4f4f4; }
td.text { text-align: left; }
svg { display: block; margin: 16px 0; background: #fff; }
details { margin-top: 16px; }
</style></head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Setup}}. Generated {{.Generated}}.</p>
<table>
<tr><th>clients</th><th>inflight</th><th>ops</th><th>ops/s</th><th>MB/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>errors</th><th>errors by kind</th></tr>
{{range .Rows}}<tr><td>{{.Clients}}</td><td>{{.Inflight}}</td><td>{{.Ops}}</td><td>{{.OpsPerSec}}</td><td>{{.MBPerSec}}</td><td>{{.P50}}</td><td>{{.P90}}</td><td>{{.P99}}</td><td>{{.P999}}</td><td>{{.Max}}</td><td>{{.Errors}}</td><td class="text">{{.ErrorsByKind}}</td></tr>
{{end}}</table>
{{range .Charts}}{{.}}
{{end}}
<details><summary>Latency percentile distribution (last run)</summary>
<table><tr><th>percentile</th><th>latency (us)</th><th>count</th></tr>
{{range .Percentiles}}<tr><td>{{printf "%.4f" .Percentile}}</td><td>{{.LatencyUs}}</td><td>{{.Count}}</td></tr>
{{end}}</table></details>
<script type="application/json" id="mpaxos-bench-data">{{.Data}}</script>
</body></html>
`))
