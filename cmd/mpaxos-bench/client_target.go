package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mpaxos/mpaxos/bench"
	"github.com/mpaxos/mpaxos/client"
)

// clientTarget adapts client.Client to bench.Target: this file is the only place the load
// generator meets the real client.
type clientTarget struct{ c *client.Client }

func (t clientTarget) AppendAsync(payload []byte, done func(error)) error {
	return t.c.AppendAsync(payload, func(_ client.Result, err error) { done(err) })
}

func (t clientTarget) Close() error { return t.c.Close() }

// clientDialer dials one client.Client per bench client, each with its own random client id
// and an in-flight limit matching --inflight so the client never blocks the engine first.
func clientDialer(endpoints []string, clusterID uint64, inflight int, timeout time.Duration) bench.Dialer {
	return func(ctx context.Context, index int) (bench.Target, error) {
		cfg := client.DefaultConfig()
		cfg.Endpoints = endpoints
		cfg.ClusterID = clusterID
		cfg.InflightMax = inflight
		cfg.RequestTimeout = timeout
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return clientTarget{c}, nil
	}
}

// clientErrorKind names the client's errors for the error table; "" leaves the rest to
// bench.DefaultErrorKind.
func clientErrorKind(err error) string {
	var rejected *client.RejectedError
	switch {
	case errors.Is(err, client.ErrTimeout):
		return bench.KindTimeout
	case errors.Is(err, client.ErrRedirectsExhausted):
		return "redirects exhausted"
	case errors.As(err, &rejected):
		return fmt.Sprintf("rejected (status %d)", rejected.Status)
	case errors.Is(err, client.ErrRejected):
		return "rejected"
	case errors.Is(err, client.ErrTooLarge):
		return "too large"
	case errors.Is(err, client.ErrClosed):
		return "closed"
	}
	return ""
}
