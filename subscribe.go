package mpaxos

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mpaxos/mpaxos/pipeline"
)

// FellBehindError ends a Subscription whose next offset was compacted away (this node
// snapshotted past it, or installed a peer's snapshot): the commands before Resume are only
// in snapshots now. Rebuild from a snapshot and subscribe again from Resume.
type FellBehindError struct {
	Next   uint64 // the offset the subscription wanted
	Resume uint64 // the oldest offset still held
}

func (e *FellBehindError) Error() string {
	return fmt.Sprintf("mpaxos: subscriber fell behind: offset %d is compacted, resume from %d", e.Next, e.Resume)
}

// Unwrap makes errors.Is(err, ErrCompacted) hold.
func (e *FellBehindError) Unwrap() error { return ErrCompacted }

// Subscription yields every command of the applied log in offset order, exactly once, from
// the offset it was opened at. It reads the node's log (cache, then write-ahead log) at its
// own pace: a slow subscriber costs no memory beyond Config.SubscribeBytesMax and never slows
// the node; if it falls so far behind that its offset is compacted, Next returns a
// *FellBehindError. Not safe for concurrent use by several goroutines.
type Subscription struct {
	n      *Node
	next   uint64
	buf    []pipeline.AppliedCommand
	pos    int
	closed chan struct{}
	once   sync.Once
}

// Subscribe opens a Subscription starting at fromOffset, which may be beyond the current end
// (it waits), but not below Position().First (ErrCompacted).
func (n *Node) Subscribe(fromOffset uint64) (*Subscription, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	if p := n.Position(); fromOffset < p.First {
		return nil, &FellBehindError{Next: fromOffset, Resume: p.First}
	}
	return &Subscription{n: n, next: fromOffset, closed: make(chan struct{})}, nil
}

// Next returns the next command, waiting for one to be applied. It returns ctx's error when
// ctx ends, ErrClosed once the subscription or the node is closed, and a *FellBehindError
// when the next offset was compacted. Entry.Payload is the caller's to keep.
func (s *Subscription) Next(ctx context.Context) (Entry, error) {
	for s.pos == len(s.buf) {
		if err := s.fill(ctx); err != nil {
			return Entry{}, err
		}
	}
	c := s.buf[s.pos]
	s.buf[s.pos] = pipeline.AppliedCommand{}
	s.pos++
	s.next = c.Offset + 1
	return Entry(c), nil
}

// Offset is the offset the next call to Next returns.
func (s *Subscription) Offset() uint64 { return s.next }

func (s *Subscription) fill(ctx context.Context) error {
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	if s.n.isClosed() {
		return ErrClosed
	}
	s.buf, s.pos = s.buf[:0], 0
	var err error
	s.buf, err = s.n.rt.ReadOffsets(s.next, 1<<16, s.n.cfg.SubscribeBytesMax, s.buf)
	switch {
	case err == nil && len(s.buf) > 0:
		return nil
	case errors.Is(err, pipeline.ErrCompacted):
		return &FellBehindError{Next: s.next, Resume: s.n.rt.Position().First}
	case err != nil && !errors.Is(err, pipeline.ErrNotApplied):
		return err
	}
	// Nothing new yet: wait for the apply stage to pass s.next, the subscription to close or
	// ctx to end.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-wctx.Done():
		}
	}()
	err = s.n.rt.WaitApplied(wctx, s.next+1, 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pipeline.ErrStopped):
		return ErrClosed
	}
	select {
	case <-s.closed:
		return ErrClosed
	default:
		return err
	}
}

// Close ends the subscription; a Next waiting in another goroutine returns ErrClosed.
func (s *Subscription) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}
