package bench

import (
	"fmt"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Sample is the load over one progress interval.
type Sample struct {
	Elapsed   time.Duration // since the run started, at the end of the interval
	Interval  time.Duration // length of the interval
	Warmup    bool          // the interval ended before the measured window began
	Ops       int64         // successful requests completed in the interval
	OpsPerSec float64
	P50       time.Duration // latency percentiles of the interval's successes
	P99       time.Duration
	Errors    int64 // failed requests completed in the interval
}

// sampler takes a Sample per interval by merging and resetting every client's interval
// histogram under that client's lock: one lock per client per interval, none per request.
type sampler struct {
	cfg          *Config
	clients      []*clientState
	start        time.Time
	measureStart time.Time
	last         time.Time
	merged       *hdrhistogram.Histogram
	timeline     []Sample
}

func newSampler(cfg *Config, clients []*clientState, start, measureStart time.Time) *sampler {
	return &sampler{
		cfg:          cfg,
		clients:      clients,
		start:        start,
		measureStart: measureStart,
		last:         start,
		merged:       newHistogram(cfg.LatencyMax.Microseconds()),
		timeline:     make([]Sample, 0, min(cfg.TimelineSamplesMax, 1024)),
	}
}

func (s *sampler) loop(stop <-chan struct{}) {
	ticker := time.NewTicker(s.cfg.ProgressInterval)
	defer ticker.Stop()
	for {
		select {
		case now := <-ticker.C:
			s.take(now, true)
		case <-stop:
			// A last, usually short, interval: kept when it is long enough to mean
			// something.
			now := time.Now()
			if now.Sub(s.last) >= s.cfg.ProgressInterval/2 {
				s.take(now, true)
			}
			return
		}
	}
}

func (s *sampler) take(now time.Time, print bool) {
	s.merged.Reset()
	var errs int64
	for _, c := range s.clients {
		c.mu.Lock()
		s.merged.Merge(c.interval)
		c.interval.Reset()
		errs += c.intervalErrors
		c.intervalErrors = 0
		c.mu.Unlock()
	}
	begin := s.last
	interval := now.Sub(begin)
	s.last = now
	sample := Sample{
		Elapsed:  now.Sub(s.start),
		Interval: interval,
		Warmup:   begin.Add(interval / 2).Before(s.measureStart), // mostly warm-up
		Ops:      s.merged.TotalCount(),
		P50:      time.Duration(s.merged.ValueAtQuantile(50)) * time.Microsecond,
		P99:      time.Duration(s.merged.ValueAtQuantile(99)) * time.Microsecond,
		Errors:   errs,
	}
	if interval > 0 {
		sample.OpsPerSec = float64(sample.Ops) / interval.Seconds()
	}
	s.append(sample)
	if print && s.cfg.Progress != nil {
		phase := ""
		if sample.Warmup {
			phase = "  (warm-up)"
		}
		fmt.Fprintf(s.cfg.Progress, "[%6.1fs] ops/s %10.0f  p50 %9s  p99 %9s  errors %d%s\n",
			sample.Elapsed.Seconds(), sample.OpsPerSec, FormatLatency(sample.P50),
			FormatLatency(sample.P99), sample.Errors, phase)
	}
}

// append keeps the timeline within TimelineSamplesMax by dropping every other sample when
// full: resolution halves, the shape over the whole run stays.
func (s *sampler) append(sample Sample) {
	if len(s.timeline) >= s.cfg.TimelineSamplesMax {
		kept := s.timeline[:0]
		for i := 1; i < len(s.timeline); i += 2 {
			kept = append(kept, s.timeline[i])
		}
		s.timeline = kept
	}
	s.timeline = append(s.timeline, sample)
}

// FormatLatency prints a latency with three significant digits in a unit that suits it:
// "850us", "1.23ms", "2.50s".
func FormatLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dus", d.Microseconds())
	case d < time.Second:
		return threeDigits(float64(d)/float64(time.Millisecond)) + "ms"
	default:
		return threeDigits(d.Seconds()) + "s"
	}
}

func threeDigits(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
