package bench

import (
	"context"
	"fmt"
)

// SweepClients returns the client counts of a sweep up to clientsMax: 1, 2, 4, ... doubling,
// and clientsMax itself last when it is not a power of two.
func SweepClients(clientsMax int) []int {
	var counts []int
	for n := 1; n < clientsMax; n *= 2 {
		counts = append(counts, n)
	}
	return append(counts, clientsMax)
}

// Sweep runs cfg once per count of SweepClients(cfg.Clients), each with its own dial,
// warm-up and measured window, calling each (if set) after every run. It stops at the first
// run that fails and returns the results so far (the failed run's partial result included
// when there is one) with that error.
func Sweep(ctx context.Context, cfg Config, dial Dialer, each func(*Result)) ([]*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var results []*Result
	for _, clients := range SweepClients(cfg.Clients) {
		step := cfg
		step.Clients = clients
		res, err := Run(ctx, step, dial)
		if res != nil {
			results = append(results, res)
			if each != nil {
				each(res)
			}
		}
		if err != nil {
			return results, fmt.Errorf("bench: sweep step with %d clients: %w", clients, err)
		}
	}
	return results, nil
}
