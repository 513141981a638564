package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/tests/chaos/history"
)

// workloadOptions shape the clients.
type workloadOptions struct {
	pinned         int           // clients that know one replica only
	roaming        int           // clients that know every replica
	lanesPerClient int           // goroutines sharing each client (pipelined requests)
	requestTimeout time.Duration // per operation; past it the outcome is indeterminate
	think          time.Duration // pause between a lane's operations (bounds the history size)
	readPercent    int           // share of a mixed lane's operations that are reads (half latest, half by offset)
	// readerLanes of each client's lanes only read, so a replica that answers stale reads is
	// asked all through a fault, not only between appends that block until they time out.
	readerLanes int
	// redialLanes own a client each that they replace, dialling the replicas in a new random
	// order, after any operation without an answer and every redialEvery operations: they
	// find whichever leader the replica they reach first names, so during a partition some
	// work reaches each side (the shared clients tend to stay with the leader they know).
	redialLanes   int
	redialEvery   int
	redialTimeout time.Duration // per operation on a redial lane
}

func defaultWorkload() workloadOptions {
	return workloadOptions{pinned: 2, roaming: 2, lanesPerClient: 3, requestTimeout: 3 * time.Second,
		think: 2 * time.Millisecond, readPercent: 20, readerLanes: 1,
		redialLanes: 2, redialEvery: 20, redialTimeout: time.Second}
}

// workload appends unique values and reads the log from many lanes, and records every call in
// h.rec.
type workload struct {
	h       *harness
	opts    workloadOptions
	clients []*client.Client
	lanes   int

	nextValue atomic.Uint64
	// logLength is the highest log length any operation has reported: reads by offset aim
	// around it (some past it, some far behind it).
	logLength atomic.Uint64
	stop      chan struct{}
	wg        sync.WaitGroup

	gate   sync.RWMutex // held for writing while the workload is paused
	paused atomic.Bool

	acked, indeterminate, failed atomic.Uint64
	readsOK, compactedReads      atomic.Uint64
	errMu                        sync.Mutex
	errSamples                   map[string]int // error text -> count, bounded
}

const errSamplesMax = 32

func (h *harness) startWorkload(opts workloadOptions) *workload {
	h.t.Helper()
	w := &workload{h: h, opts: opts, stop: make(chan struct{}), errSamples: make(map[string]int)}
	w.nextValue.Store(1)
	endpoints := h.cluster.Endpoints()
	for i := 0; i < opts.pinned+opts.roaming; i++ {
		cfg := client.DefaultConfig()
		cfg.ClusterID = h.cluster.ClusterID()
		cfg.RequestTimeout = opts.requestTimeout
		cfg.ClientID = h.seed<<16 + uint64(i) + 1 // distinct per client, reproducible per seed
		if i < opts.pinned {
			cfg.Endpoints = []string{endpoints[i%len(endpoints)]}
		} else {
			shuffled := append([]string(nil), endpoints...)
			h.rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
			cfg.Endpoints = shuffled
		}
		c, err := dialRetry(cfg, 15*time.Second)
		if err != nil {
			w.close()
			h.t.Fatalf("client %d: %v", i, err)
		}
		w.clients = append(w.clients, c)
	}
	for ci, c := range w.clients {
		for l := 0; l < opts.lanesPerClient; l++ {
			lane := ci*opts.lanesPerClient + l
			rng := rand.New(rand.NewPCG(h.seed, uint64(lane)))
			readPercent := opts.readPercent
			if l < opts.readerLanes {
				readPercent = 100
			}
			w.wg.Add(1)
			go w.run(c, lane, readPercent, rng)
		}
	}
	shared := len(w.clients) * opts.lanesPerClient
	for i := 0; i < opts.redialLanes; i++ {
		lane := shared + i
		rng := rand.New(rand.NewPCG(h.seed, uint64(lane)))
		w.wg.Add(1)
		go w.runRedial(endpoints, lane, rng)
	}
	w.lanes = shared + opts.redialLanes
	return w
}

// runRedial is a redial lane (see workloadOptions.redialLanes): half appends, half reads.
func (w *workload) runRedial(endpoints []string, lane int, rng *rand.Rand) {
	defer w.wg.Done()
	opts := w.opts
	opts.requestTimeout = opts.redialTimeout
	for {
		cfg := client.DefaultConfig()
		cfg.ClusterID = w.h.cluster.ClusterID()
		cfg.RequestTimeout = opts.redialTimeout
		cfg.DialTimeout = opts.redialTimeout
		cfg.Endpoints = append([]string(nil), endpoints...)
		rng.Shuffle(len(cfg.Endpoints), func(a, b int) { cfg.Endpoints[a], cfg.Endpoints[b] = cfg.Endpoints[b], cfg.Endpoints[a] })
		// ClientID 0: a fresh random id per client, so a new client never reuses the
		// exactly-once session (and seqs) of an earlier one.
		ctx, cancel := context.WithTimeout(context.Background(), opts.redialTimeout)
		c, err := client.Dial(ctx, cfg)
		cancel()
		if err != nil {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		for k := 0; k < max(opts.redialEvery, 1); k++ {
			select {
			case <-w.stop:
				c.Close()
				return
			default:
			}
			w.gate.RLock()
			var op history.Op
			switch roll := rng.IntN(100); {
			case roll < 25:
				op = w.readLatest(c, lane, opts.requestTimeout)
			case roll < 50:
				op = w.readAt(c, lane, w.readTarget(rng), opts.requestTimeout)
			default:
				op = w.appendWith(c, lane, opts.requestTimeout)
			}
			w.gate.RUnlock()
			if err := w.h.rec.Add(op); err != nil {
				c.Close()
				return
			}
			if op.Outcome == history.OutcomeIndeterminate {
				break
			}
			if opts.think > 0 {
				time.Sleep(opts.think)
			}
		}
		c.Close()
	}
}

func dialRetry(cfg client.Config, timeout time.Duration) (*client.Client, error) {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.Dial(ctx, cfg)
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *workload) run(c *client.Client, lane, readPercent int, rng *rand.Rand) {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.gate.RLock()
		var op history.Op
		switch roll := rng.IntN(100); {
		case roll < readPercent/2:
			op = w.readLatest(c, lane, w.opts.requestTimeout)
		case roll < readPercent:
			op = w.readAt(c, lane, w.readTarget(rng), w.opts.requestTimeout)
		default:
			op = w.appendWith(c, lane, w.opts.requestTimeout)
		}
		w.gate.RUnlock()
		if err := w.h.rec.Add(op); err != nil {
			return // history full: a truncated history cannot be checked, stop adding
		}
		if w.opts.think > 0 {
			time.Sleep(w.opts.think)
		}
	}
}

// appendWith makes one append and describes it as a history op.
func (w *workload) appendWith(c *client.Client, lane int, timeout time.Duration) history.Op {
	value := w.nextValue.Add(1) - 1
	op := appendOp(w.h.rec, c, lane, value, timeout, w.noteError)
	if op.Outcome == history.OutcomeOK {
		w.sawLength(op.Offset + 1)
	}
	return op
}

func (w *workload) sawLength(n uint64) {
	for {
		old := w.logLength.Load()
		if n <= old || w.logLength.CompareAndSwap(old, n) {
			return
		}
	}
}

// readTarget picks an offset to read: mostly recent ones (the tail, where a stale or lost
// write would show), some just past the end (must not be found yet), some anywhere.
func (w *workload) readTarget(rng *rand.Rand) uint64 {
	n := w.logLength.Load()
	switch roll := rng.IntN(10); {
	case roll < 6:
		back := uint64(rng.IntN(16))
		return n - min(back, n)
	case roll < 8:
		return n + uint64(rng.IntN(4))
	default:
		return uint64(rng.Uint64N(n + 1))
	}
}

// readLatest reads the log's length and last value.
func (w *workload) readLatest(c *client.Client, lane int, timeout time.Duration) history.Op {
	op := history.Op{Client: lane, Kind: history.KindReadLatest}
	res, err := w.read(&op, timeout, func(ctx context.Context) (client.ReadResult, error) { return c.ReadLatest(ctx) })
	if err == nil {
		op.Length = res.Length
		w.sawLength(res.Length)
	}
	return op
}

// readAt reads the value at a dense offset.
func (w *workload) readAt(c *client.Client, lane int, offset uint64, timeout time.Duration) history.Op {
	op := history.Op{Client: lane, Kind: history.KindRead, Offset: offset}
	res, err := w.read(&op, timeout, func(ctx context.Context) (client.ReadResult, error) { return c.ReadAt(ctx, offset) })
	if err == nil && res.Found && res.Offset != offset {
		op.Outcome, op.Found, op.Value = history.OutcomeOK, true, 0 // value 0 is never appended: illegal
		w.noteError(fmt.Errorf("ReadAt(%d) answered with offset %d", offset, res.Offset))
	}
	return op
}

// read makes one read call and fills op's times, outcome, Found and Value; a payload that is
// not a chaos value is recorded as value 0, which no append uses, so the checker refuses it.
func (w *workload) read(op *history.Op, timeout time.Duration, call func(context.Context) (client.ReadResult, error)) (client.ReadResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	op.Call = w.h.rec.Now()
	res, err := call(ctx)
	op.Return = w.h.rec.Now()
	if err != nil {
		// A read has no effect: an unanswered one constrains nothing and is left out of
		// the check (see history.Check). An offset a snapshot compacted away is refused by
		// design (StatusCompacted); any other rejection is noted and fails the run.
		op.Outcome, op.Err = history.OutcomeIndeterminate, err.Error()
		var rej *client.RejectedError
		if errors.As(err, &rej) && rej.Status == codec.StatusCompacted {
			w.compactedReads.Add(1)
		} else {
			w.noteError(err)
		}
		return res, err
	}
	w.readsOK.Add(1)
	op.Outcome, op.Found = history.OutcomeOK, res.Found
	if res.Found {
		v, derr := history.DecodePayload(res.Payload)
		if derr != nil {
			w.noteError(fmt.Errorf("read returned a foreign payload: %w", derr))
		}
		op.Value = v
	}
	return res, nil
}

func appendOp(rec *history.Recorder, c *client.Client, lane int, value uint64, timeout time.Duration, noteError func(error)) history.Op {
	op := history.Op{Client: lane, Kind: history.KindAppend, Value: value}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	op.Call = rec.Now()
	res, err := c.Append(ctx, history.EncodePayload(value))
	op.Return = rec.Now()
	switch {
	case err == nil:
		op.Outcome, op.Slot, op.Index = history.OutcomeOK, res.Slot, res.Index
		op.Offset, op.HasOffset = res.Offset, true
	case errors.Is(err, client.ErrTooLarge):
		op.Outcome, op.Err = history.OutcomeFailed, err.Error() // refused before sending
	default:
		// Timeouts, lost connections, leadership changes, closing: the command may or may
		// not have been applied. A rejection of a valid payload is a bug, but its effect is
		// still unknown, so it is recorded the same way and reported through noteError.
		op.Outcome, op.Err = history.OutcomeIndeterminate, err.Error()
	}
	if err != nil && noteError != nil {
		noteError(err)
	}
	return op
}

func (w *workload) noteError(err error) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	key := err.Error()
	if len(key) > 160 {
		key = key[:160]
	}
	if _, ok := w.errSamples[key]; ok || len(w.errSamples) < errSamplesMax {
		w.errSamples[key]++
	}
}

// pause stops lanes from starting new appends (in-flight ones finish) until resume.
func (w *workload) pause() {
	if w.paused.CompareAndSwap(false, true) {
		w.gate.Lock()
	}
}

func (w *workload) resume() {
	if w.paused.CompareAndSwap(true, false) {
		w.gate.Unlock()
	}
}

// finish stops every lane, waits for them and closes the clients.
func (w *workload) finish() {
	w.resume()
	close(w.stop)
	w.wg.Wait()
	w.close()
}

func (w *workload) close() {
	for _, c := range w.clients {
		c.Close()
	}
	w.clients = nil
}

func (w *workload) errorSummary() string {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	s := ""
	for e, n := range w.errSamples {
		s += fmt.Sprintf("\n  %5d × %s", n, e)
	}
	return s
}

// rejectedSeen reports whether any append or read was rejected (a valid one never is; a read
// of a compacted offset is not counted here).
func (w *workload) rejectedSeen() []string {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	var out []string
	for e := range w.errSamples {
		if strings.Contains(e, client.ErrRejected.Error()) {
			out = append(out, e)
		}
	}
	return out
}
