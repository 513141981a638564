package chaos

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/tests/chaos/history"
)

// workloadOptions shape the clients.
type workloadOptions struct {
	pinned         int           // clients that know one replica only
	roaming        int           // clients that know every replica
	lanesPerClient int           // goroutines sharing each client (pipelined requests)
	requestTimeout time.Duration // per append; past it the outcome is indeterminate
	think          time.Duration // pause between a lane's appends (bounds the history size)
}

func defaultWorkload() workloadOptions {
	return workloadOptions{pinned: 2, roaming: 2, lanesPerClient: 3, requestTimeout: 3 * time.Second, think: 2 * time.Millisecond}
}

// workload appends unique values from many lanes and records every call in h.rec.
type workload struct {
	h       *harness
	opts    workloadOptions
	clients []*client.Client
	lanes   int

	nextValue atomic.Uint64
	stop      chan struct{}
	wg        sync.WaitGroup

	gate   sync.RWMutex // held for writing while the workload is paused
	paused atomic.Bool

	acked, indeterminate, failed atomic.Uint64
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
			w.wg.Add(1)
			go w.run(c, lane)
		}
	}
	w.lanes = len(w.clients) * opts.lanesPerClient
	return w
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

func (w *workload) run(c *client.Client, lane int) {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.gate.RLock()
		op := w.append(c, lane)
		w.gate.RUnlock()
		if err := w.h.rec.Add(op); err != nil {
			return // history full: a truncated history cannot be checked, stop adding
		}
		if w.opts.think > 0 {
			time.Sleep(w.opts.think)
		}
	}
}

// append makes one call and describes it as a history op.
func (w *workload) append(c *client.Client, lane int) history.Op {
	value := w.nextValue.Add(1) - 1
	return appendOp(w.h.rec, c, lane, value, w.opts.requestTimeout, w.noteError)
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
		op.Offset, op.HasOffset = resultOffset(res)
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

// rejectedSeen reports whether any append was rejected (a valid payload must never be).
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

// resultOffset is an adapter for a field the contract does not have yet: the dense offset of
// the command (the count of commands applied before it, duplicates not counted), planned as
// client.Result.Offset. Read by reflection so this package builds before and after it lands;
// once it exists the checker verifies it against the final log and uses the full log model
// without needing the final log. Replace with res.Offset when the field is in the contract.
func resultOffset(res client.Result) (uint64, bool) {
	f := reflect.ValueOf(res).FieldByName("Offset")
	if !f.IsValid() || !f.CanUint() {
		return 0, false
	}
	return f.Uint(), true
}
