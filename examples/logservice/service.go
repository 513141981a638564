package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/mpaxos/mpaxos"
)

// recordBytesMax bounds one appended record (the cluster's payload limit is 1 MiB).
const recordBytesMax = 64 << 10

// service is one instance of the log service: an embedded mpaxos node and its HTTP API.
type service struct {
	node *mpaxos.Node
	http *http.Server
	ln   net.Listener
	done chan struct{}
	// stop is closed when the service shuts down, ending open tail streams.
	stop chan struct{}
}

// startService starts the node, then serves HTTP on httpAddr.
func startService(cfg mpaxos.Config, httpAddr string) (*service, error) {
	node, err := mpaxos.Start(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		_ = node.Close()
		return nil, fmt.Errorf("logservice: http address %s: %w", httpAddr, err)
	}
	s := &service{node: node, ln: ln, done: make(chan struct{}), stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /records", s.append)
	mux.HandleFunc("GET /records/{offset}", s.get)
	mux.HandleFunc("GET /tail", s.tail)
	mux.HandleFunc("GET /end", s.end)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

// Addr is the HTTP address.
func (s *service) Addr() string { return s.ln.Addr().String() }

// Close stops HTTP (ending tails), then the node.
func (s *service) Close() error {
	close(s.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	<-s.done
	return errors.Join(err, s.node.Close())
}

type appendReply struct {
	Offset uint64 `json:"offset"`
}

// append: POST /records with the record as the body; answers {"offset": N} once the record is
// durable on a majority. 503 with "ambiguous" means it may or may not have been appended.
func (s *service) append(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, recordBytesMax))
	if err != nil {
		http.Error(w, "record too large or unreadable: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	if len(body) == 0 {
		http.Error(w, "empty record", http.StatusBadRequest)
		return
	}
	offset, err := s.node.Propose(r.Context(), body)
	switch {
	case err == nil || errors.Is(err, mpaxos.ErrApplyLag):
		writeJSON(w, appendReply{Offset: offset})
	case errors.Is(err, mpaxos.ErrTimeout), errors.Is(err, mpaxos.ErrClosed):
		http.Error(w, "ambiguous: the record may or may not have been appended: "+err.Error(), http.StatusServiceUnavailable)
	default:
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

// get: GET /records/{offset} returns the record's bytes. An offset this instance has not
// applied yet is looked up again after a Barrier, so a record acknowledged by any instance
// is found on every instance.
func (s *service) get(w http.ResponseWriter, r *http.Request) {
	offset, err := strconv.ParseUint(r.PathValue("offset"), 10, 64)
	if err != nil {
		http.Error(w, "offset must be a non-negative integer", http.StatusBadRequest)
		return
	}
	e, err := s.node.Read(offset)
	if errors.Is(err, mpaxos.ErrNotApplied) {
		if _, berr := s.node.Barrier(r.Context()); berr != nil {
			http.Error(w, berr.Error(), http.StatusServiceUnavailable)
			return
		}
		e, err = s.node.Read(offset)
	}
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Offset", strconv.FormatUint(e.Offset, 10))
		_, _ = w.Write(e.Payload)
	case errors.Is(err, mpaxos.ErrNotApplied):
		http.Error(w, "no record at this offset yet", http.StatusNotFound)
	case errors.Is(err, mpaxos.ErrCompacted):
		http.Error(w, "record compacted: "+err.Error(), http.StatusGone)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

type tailEvent struct {
	Offset uint64 `json:"offset"`
	Record string `json:"record"`
}

// tail: GET /tail?from=N streams every record from offset N on as server-sent events, one
// JSON object {"offset", "record"} per event, until the client goes away.
func (s *service) tail(w http.ResponseWriter, r *http.Request) {
	from := uint64(0)
	if v := r.URL.Query().Get("from"); v != "" {
		var err error
		if from, err = strconv.ParseUint(v, 10, 64); err != nil {
			http.Error(w, "from must be a non-negative integer", http.StatusBadRequest)
			return
		}
	}
	sub, err := s.node.Subscribe(from)
	if err != nil {
		http.Error(w, err.Error(), http.StatusGone)
		return
	}
	defer sub.Close()
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		e, err := sub.Next(ctx)
		if err != nil {
			var fb *mpaxos.FellBehindError
			if errors.As(err, &fb) {
				fmt.Fprintf(w, "event: fell-behind\ndata: {\"resume\": %d}\n\n", fb.Resume)
			}
			return
		}
		b, _ := json.Marshal(tailEvent{Offset: e.Offset, Record: string(e.Payload)})
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Offset, b); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

type endReply struct {
	Next uint64 `json:"next"`
}

// end: GET /end returns the offset the next record will take, confirmed with a quorum: every
// record acknowledged before the request has a smaller offset.
func (s *service) end(w http.ResponseWriter, r *http.Request) {
	next, err := s.node.Barrier(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, endReply{Next: next})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
