package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// sendErrorBackoff is how long a client pauses after AppendAsync itself failed, so a dead
// target costs errors, not a spinning core.
const sendErrorBackoff = 10 * time.Millisecond

// drainPollInterval is how often the end-of-run drain checks for outstanding requests.
const drainPollInterval = 2 * time.Millisecond

// interruptedDrainTimeout caps the end-of-run drain when the run was interrupted.
const interruptedDrainTimeout = time.Second

// histogramDigits is the HdrHistogram precision: 3 significant digits (0.1% error).
const histogramDigits = 3

// request is one reusable in-flight slot of a client: its payload buffer is not touched
// again until done has run, and done is allocated once, not per request.
type request struct {
	client   *clientState
	payload  []byte
	start    time.Time // intended send time
	measured bool
	done     func(err error)
}

// clientState is one client's target and bookkeeping. Everything behind mu is touched by
// the completion callbacks (normally the target's one reader goroutine) and, once a
// sample interval, by the sampler.
type clientState struct {
	index     int
	target    Target
	free      chan *request // holds every request not in flight; cap = Inflight
	errorKind func(error) string
	kindsMax  int
	valueMax  int64 // microseconds
	sequence  uint64
	// sentMeasured counts requests sent with an intended start in the measured window, and
	// lag (open loop) how late each of those was sent; only the goroutine that sends for
	// this client touches them, read after that goroutine ended.
	sentMeasured int64
	lag          *hdrhistogram.Histogram

	mu             sync.Mutex
	total          *hdrhistogram.Histogram // successes in the measured window
	interval       *hdrhistogram.Histogram // successes since the last sample
	errors         int64                   // failures in the measured window
	intervalErrors int64                   // failures since the last sample
	kinds          map[string]int64        // failures in the measured window, by kind
	finished       bool                    // results taken: late callbacks are ignored
}

func newHistogram(valueMax int64) *hdrhistogram.Histogram {
	return hdrhistogram.New(1, valueMax, histogramDigits)
}

func newClientState(index int, target Target, cfg *Config) *clientState {
	valueMax := cfg.LatencyMax.Microseconds()
	c := &clientState{
		index:     index,
		target:    target,
		free:      make(chan *request, cfg.Inflight),
		errorKind: cfg.ErrorKind,
		kindsMax:  cfg.ErrorKindsMax,
		valueMax:  valueMax,
		total:     newHistogram(valueMax),
		interval:  newHistogram(valueMax),
		lag:       newHistogram(valueMax),
		kinds:     make(map[string]int64),
	}
	rng := rand.New(rand.NewPCG(uint64(index), 0x6d7061786f73))
	for range cfg.Inflight {
		r := &request{client: c, payload: make([]byte, cfg.PayloadBytes)}
		// Random bytes so a compressing transport gets no free lunch from zeros.
		for i := range r.payload {
			r.payload[i] = byte(rng.Uint32())
		}
		r.done = r.complete
		c.free <- r
	}
	return c
}

// complete is every request's callback.
func (r *request) complete(err error) {
	latency := time.Since(r.start)
	c := r.client
	kind := ""
	if err != nil {
		kind = c.classify(err)
	}
	c.mu.Lock()
	if !c.finished {
		if err != nil {
			c.recordErrorLocked(kind, r.measured)
		} else {
			value := min(latency.Microseconds(), c.valueMax)
			_ = c.interval.RecordValue(value) // cannot fail: value is within range
			if r.measured {
				_ = c.total.RecordValue(value)
			}
		}
	}
	c.mu.Unlock()
	c.free <- r // never blocks: only Inflight requests exist
}

func (c *clientState) classify(err error) string {
	if c.errorKind != nil {
		if kind := c.errorKind(err); kind != "" {
			return kind
		}
	}
	return DefaultErrorKind(err)
}

func (c *clientState) recordErrorLocked(kind string, measured bool) {
	c.intervalErrors++
	if !measured {
		return
	}
	c.errors++
	if _, ok := c.kinds[kind]; !ok && len(c.kinds) >= c.kindsMax {
		kind = KindOther
	}
	c.kinds[kind]++
}

// send stamps and sends r; on a synchronous failure it returns r to the free list, pauses
// and reports false.
func (c *clientState) send(ctx context.Context, r *request, intended time.Time, measured bool) bool {
	if c.trySend(r, intended, measured) {
		return true
	}
	sleepContext(ctx, sendErrorBackoff)
	return false
}

// trySend is send without the pause: a synchronous failure is recorded against r, r goes
// back to the free list, and it reports false.
func (c *clientState) trySend(r *request, intended time.Time, measured bool) bool {
	r.start = intended
	r.measured = measured
	if measured {
		c.sentMeasured++
	}
	c.sequence++
	stampPayload(r.payload, uint64(c.index), c.sequence)
	err := c.target.AppendAsync(r.payload, r.done)
	if err == nil {
		return true
	}
	kind := KindSend + ": " + c.classify(err)
	c.mu.Lock()
	if !c.finished {
		c.recordErrorLocked(kind, measured)
	}
	c.mu.Unlock()
	c.free <- r
	return false
}

// stampPayload writes the client index and sequence into the payload's first bytes, as many
// as fit, so concurrent requests carry different payloads.
func stampPayload(payload []byte, client, sequence uint64) {
	var stamp [16]byte
	binary.LittleEndian.PutUint64(stamp[0:8], client)
	binary.LittleEndian.PutUint64(stamp[8:16], sequence)
	copy(payload, stamp[:])
}

func sleepContext(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (c *clientState) closedLoop(ctx context.Context, measureStart, end time.Time) {
	// The end timer matters when every request is stuck: nothing frees a slot then.
	ended := time.NewTimer(time.Until(end))
	defer ended.Stop()
	for {
		var r *request
		select {
		case r = <-c.free:
		case <-ended.C:
			return
		case <-ctx.Done():
			return
		}
		now := time.Now()
		if !now.Before(end) {
			c.free <- r
			return
		}
		measured := !now.Before(measureStart)
		ok := c.send(ctx, r, now, measured)
		// Answers arrive in bursts (one read returns many): send the requests freed
		// meanwhile at once, all stamped with this clock reading — they leave within
		// microseconds of it, and each time.Now and three-way select costs more than that.
		// At most one round of the free list, and none after a failed send (which paused).
		for burst := 1; ok && burst < cap(c.free); burst++ {
			select {
			case r = <-c.free:
				ok = c.send(ctx, r, now, measured)
				continue
			default:
			}
			break
		}
	}
}

// schedule is one client's open-loop timetable: request k is due at base + k*interval,
// whatever happened to earlier ones.
type schedule struct {
	c        *clientState
	base     time.Time
	interval float64
	next     int       // the first request not yet sent
	done     bool      // nothing more to send: the rest fall after end, or are counted unsent
	paused   time.Time // after a failed send, nothing is sent before this (sendErrorBackoff)
}

func (s *schedule) due(k int) time.Time {
	return s.base.Add(time.Duration(float64(k) * s.interval))
}

// openLoop paces a group of clients on their schedules from one goroutine: at each wake-up
// it sends, client by client, every request due by then, each stamped with its own due time
// (so a late request's wait is latency). A client whose requests are all in flight is
// skipped until a later wake-up; its requests stay due. Requests due before end are still
// sent after end (their lateness is latency) until sendDeadline; those never sent by then
// count as KindUnsent.
//
// One goroutine for many clients, rather than one each, spares the generator most of its
// wake-ups on a machine it shares with the replicas: with 16 clients the per-client
// goroutines could wake it 80,000 times a second, and at 500k req/s its requests left up to
// 5.7 ms late at p99 (the send-lag histogram this change added).
func openLoop(ctx context.Context, group []*schedule, tick time.Duration, measureStart, end, sendDeadline time.Time) {
	sl := newSleeper()
	defer sl.close()
	for {
		now := time.Now()
		if !now.Before(sendDeadline) {
			for _, s := range group {
				if !s.done {
					s.c.countUnsent(s.next, s.due, measureStart, end)
					s.done = true
				}
			}
			return
		}
		pending, blocked := false, false
		wake := sendDeadline
		for i, s := range group {
			if s.done {
				continue
			}
			if i > 0 {
				// Sending to the clients before this one took time: what is due, and how
				// late it is, is reckoned from now.
				now = time.Now()
			}
			if now.Before(s.paused) {
				pending = true
				wake = minTime(wake, s.paused)
				continue
			}
			for {
				intended := s.due(s.next)
				if !intended.Before(end) {
					s.done = true
					break
				}
				if intended.After(now) {
					pending = true
					wake = minTime(wake, intended)
					break
				}
				var r *request
				select {
				case r = <-s.c.free:
				default:
				}
				if r == nil {
					pending, blocked = true, true
					break
				}
				s.next++
				measured := !intended.Before(measureStart)
				if measured {
					_ = s.c.lag.RecordValue(min(now.Sub(intended).Microseconds(), s.c.valueMax))
				}
				if !s.c.trySend(r, intended, measured) {
					// A failed send pauses this client only, not the group.
					s.paused = now.Add(sendErrorBackoff)
					pending = true
					wake = minTime(wake, s.paused)
					break
				}
			}
		}
		if !pending {
			return
		}
		// Sleep to the earliest due time, or a whole tick when that is sooner (or when a
		// client waits for a free request: its answers are polled once a tick).
		wait := max(time.Until(wake), tick)
		if blocked {
			wait = max(tick, time.Millisecond/10)
		}
		if !sl.sleep(ctx, wait) {
			return
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// countUnsent records every request from k on that was due in the measured window.
func (c *clientState) countUnsent(k int, due func(int) time.Time, measureStart, end time.Time) {
	var n int64
	for ; due(k).Before(end); k++ {
		if !due(k).Before(measureStart) {
			n++
		}
	}
	if n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors += n
	c.intervalErrors += n
	c.kinds[KindUnsent] += n
}

// outstanding reports how many requests are in flight right now.
func (c *clientState) outstanding() int { return cap(c.free) - len(c.free) }

// Run dials cfg.Clients targets, drives them for Warmup+Duration and returns the measured
// result. It returns a result together with an error when the run was interrupted (ctx) or
// nothing succeeded (ErrNothingSucceeded), so partial figures can still be shown.
func Run(ctx context.Context, cfg Config, dial Dialer) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dial == nil {
		return nil, fmt.Errorf("%w: no Dialer", ErrConfig)
	}
	targets, err := dialAll(ctx, cfg, dial)
	if err != nil {
		return nil, err
	}
	defer closeAll(targets)
	clients := make([]*clientState, len(targets))
	for i, t := range targets {
		clients[i] = newClientState(i, t, &cfg)
	}
	return drive(ctx, &cfg, clients)
}

func dialAll(ctx context.Context, cfg Config, dial Dialer) ([]Target, error) {
	targets := make([]Target, cfg.Clients)
	errs := make([]error, cfg.Clients)
	limit := make(chan struct{}, cfg.DialConcurrencyMax)
	var wg sync.WaitGroup
	for i := range targets {
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			targets[i], errs[i] = dial(ctx, i)
			if errs[i] == nil && targets[i] == nil {
				errs[i] = errors.New("dialer returned no target")
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			closeAll(targets)
			return nil, fmt.Errorf("bench: dial client %d of %d: %w", i, cfg.Clients, err)
		}
	}
	return targets, nil
}

func closeAll(targets []Target) {
	for _, t := range targets {
		if t != nil {
			_ = t.Close()
		}
	}
}

// openLoopPacerRate is the request rate one open-loop pacing goroutine is given: sending
// costs about a microsecond per request (AppendAsync), so one goroutine keeps up with this
// with room to spare.
const openLoopPacerRate = 400_000

// openLoopPacers is how many goroutines pace the open loop: one per openLoopPacerRate of the
// total rate, at most one per client.
func openLoopPacers(rate float64, clients int) int {
	n := int(rate/openLoopPacerRate) + 1
	return max(1, min(n, clients))
}

// drive runs the load on already-dialed clients.
func drive(ctx context.Context, cfg *Config, clients []*clientState) (*Result, error) {
	start := time.Now()
	measureStart := start.Add(cfg.Warmup)
	end := measureStart.Add(cfg.Duration)

	if cfg.OnMeasureStart != nil {
		hook := time.AfterFunc(cfg.Warmup, func() { cfg.OnMeasureStart(cfg.Duration) })
		defer hook.Stop()
	}
	s := newSampler(cfg, clients, start, measureStart)
	samplerDone := make(chan struct{})
	samplerStop := make(chan struct{})
	go func() {
		defer close(samplerDone)
		s.loop(samplerStop)
	}()

	var wg sync.WaitGroup
	if cfg.Rate == 0 {
		for _, c := range clients {
			wg.Go(func() { c.closedLoop(ctx, measureStart, end) })
		}
	} else {
		groups := make([][]*schedule, openLoopPacers(cfg.Rate, len(clients)))
		interval := float64(time.Second) * float64(len(clients)) / cfg.Rate
		for _, c := range clients {
			base := start.Add(time.Duration(interval * float64(c.index) / float64(len(clients))))
			g := c.index % len(groups)
			groups[g] = append(groups[g], &schedule{c: c, base: base, interval: interval})
		}
		for _, group := range groups {
			wg.Go(func() {
				openLoop(ctx, group, cfg.OpenLoopTick, measureStart, end, end.Add(cfg.DrainTimeout))
			})
		}
	}
	wg.Wait()
	stopped := time.Now()
	drainTimeout := cfg.DrainTimeout
	if ctx.Err() != nil {
		// Interrupted: the user wants out, not every last answer.
		drainTimeout = min(drainTimeout, interruptedDrainTimeout)
	}
	drain(clients, drainTimeout)

	res := &Result{
		Clients:      len(clients),
		Inflight:     cfg.Inflight,
		PayloadBytes: cfg.PayloadBytes,
		Rate:         cfg.Rate,
		Duration:     cfg.Duration,
		Histogram:    newHistogram(cfg.LatencyMax.Microseconds()),
		ErrorsByKind: make(map[string]int64),
	}
	if ctx.Err() != nil {
		cut := stopped
		if end.Before(cut) {
			cut = end
		}
		res.Duration = max(0, cut.Sub(measureStart))
	}
	for _, c := range clients {
		c.mu.Lock()
		c.finished = true
		if n := c.outstanding(); n > 0 {
			c.errors += int64(n)
			c.kinds[KindUnfinished] += int64(n)
		}
		res.Histogram.Merge(c.total)
		if cfg.Rate > 0 {
			if res.SendLag == nil {
				res.SendLag = newHistogram(cfg.LatencyMax.Microseconds())
			}
			res.SendLag.Merge(c.lag)
		}
		res.Errors += c.errors
		for kind, n := range c.kinds {
			res.ErrorsByKind[kind] += n
		}
		c.mu.Unlock()
	}
	close(samplerStop)
	<-samplerDone
	res.Timeline = s.timeline
	res.Ops = res.Histogram.TotalCount()

	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("bench: run interrupted after %v: %w", stopped.Sub(start).Round(time.Millisecond), err)
	}
	if res.Ops == 0 {
		var sent int64
		for _, c := range clients {
			sent += c.sentMeasured
		}
		if sent == 0 && res.Errors == 0 {
			return res, fmt.Errorf("%w: nothing was sent in the measured window: every in-flight slot "+
				"was held by a warm-up request that had not completed (is the cluster up and led? try a longer warm-up)",
				ErrNothingSucceeded)
		}
		return res, fmt.Errorf("%w: %d requests failed (%s)", ErrNothingSucceeded, res.Errors, res.ErrorSummary())
	}
	return res, nil
}

// drain waits until no request is outstanding or the timeout passes.
func drain(clients []*clientState, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, c := range clients {
		for c.outstanding() > 0 && time.Now().Before(deadline) {
			time.Sleep(drainPollInterval)
		}
	}
}

// ErrorSummary lists the error kinds, most frequent first: "timeout: 12, refused: 3";
// "none" when there were none.
func (r *Result) ErrorSummary() string {
	if len(r.ErrorsByKind) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(r.ErrorsByKind))
	for kind := range r.ErrorsByKind {
		kinds = append(kinds, kind)
	}
	sort.Slice(kinds, func(i, j int) bool {
		a, b := r.ErrorsByKind[kinds[i]], r.ErrorsByKind[kinds[j]]
		if a != b {
			return a > b
		}
		return kinds[i] < kinds[j]
	})
	parts := make([]string, len(kinds))
	for i, kind := range kinds {
		parts[i] = fmt.Sprintf("%s: %d", kind, r.ErrorsByKind[kind])
	}
	return strings.Join(parts, ", ")
}
