package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Target is one connection to the system under test, the way a single client sees it.
type Target interface {
	// AppendAsync sends payload and arranges for done to run exactly once with the outcome.
	// It may block (backpressure); done must not block, and may run on any goroutine,
	// including inside AppendAsync. The engine does not reuse payload before done has run.
	// An error returned here means the request was not sent; done will not run.
	AppendAsync(payload []byte, done func(err error)) error
	// Close releases the connection. Requests still outstanding may or may not complete.
	Close() error
}

// Dialer opens the Target for client number index (0-based).
type Dialer func(ctx context.Context, index int) (Target, error)

// Sentinel errors.
var (
	// ErrNothingSucceeded: the measured window ended without one successful request. The
	// wrapped text names the error kinds seen.
	ErrNothingSucceeded = errors.New("bench: no request succeeded")
	// ErrConfig: a Config or ClusterConfig field is out of range; the text names the field.
	ErrConfig = errors.New("bench: invalid config")
	// ErrSpawn: a spawned replica did not become ready; the text carries its output tail.
	ErrSpawn = errors.New("bench: spawning replica failed")
)

// Error kinds produced by DefaultErrorKind. Custom classifiers may add their own.
const (
	KindTimeout    = "timeout"
	KindRefused    = "refused"
	KindConnection = "connection"
	KindCanceled   = "canceled"
	KindUnfinished = "unfinished" // still outstanding when the drain timeout ran out
	KindUnsent     = "unsent"     // open loop: due in the window, no free slot before the drain timeout
	KindOther      = "other"
	KindSend       = "send" // AppendAsync itself returned an error
)

// DefaultErrorKind sorts transport-level errors into a few kinds. Anything it does not know
// is KindOther.
func DefaultErrorKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return KindTimeout
	case errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return KindConnection
	}
	return KindOther
}
