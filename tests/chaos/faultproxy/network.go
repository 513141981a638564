package faultproxy

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Network is one Proxy per ordered pair of replicas: P(from, to) carries from's messages to
// to. Replica ids are 1-based.
type Network struct {
	ids     []int
	proxies map[[2]int]*Proxy
}

// NewNetwork starts a proxy for every ordered pair of ids; target(id) is replica id's real
// listen address. seed seeds every proxy's loss and jitter draws.
func NewNetwork(ids []int, target func(id int) string, seed uint64) (*Network, error) {
	n := &Network{ids: append([]int(nil), ids...), proxies: make(map[[2]int]*Proxy)}
	sort.Ints(n.ids)
	for _, from := range n.ids {
		for _, to := range n.ids {
			if from == to {
				continue
			}
			p, err := New(Config{Target: target(to), Seed: seed ^ uint64(from)<<32 ^ uint64(to)})
			if err != nil {
				n.Close()
				return nil, err
			}
			n.proxies[[2]int{from, to}] = p
		}
	}
	return n, nil
}

// Proxy returns P(from, to).
func (n *Network) Proxy(from, to int) *Proxy {
	p := n.proxies[[2]int{from, to}]
	if p == nil {
		panic(fmt.Sprintf("faultproxy: no proxy from %d to %d", from, to))
	}
	return p
}

// Addr is the address replica from must dial to reach replica to.
func (n *Network) Addr(from, to int) string { return n.Proxy(from, to).Addr() }

// Set applies f to P(from, to).
func (n *Network) Set(from, to int, f Faults) error { return n.Proxy(from, to).SetFaults(f) }

// SetAll applies f to every proxy.
func (n *Network) SetAll(f Faults) error {
	for _, p := range n.proxies {
		if err := p.SetFaults(f); err != nil {
			return err
		}
	}
	return nil
}

// Block cuts messages from one replica to another, leaving the other direction alone (an
// asymmetric partition). blackhole makes it silent instead of refused.
func (n *Network) Block(from, to int, blackhole bool) error {
	return n.Set(from, to, Faults{Cut: !blackhole, Blackhole: blackhole})
}

// Partition cuts every pair of replicas that are in different groups, both directions.
// Replicas in no group are cut from everyone.
func (n *Network) Partition(blackhole bool, groups ...[]int) error {
	group := make(map[int]int)
	for g, members := range groups {
		for _, id := range members {
			group[id] = g + 1
		}
	}
	for key, p := range n.proxies {
		gFrom, gTo := group[key[0]], group[key[1]]
		f := Faults{}
		if gFrom == 0 || gTo == 0 || gFrom != gTo {
			f = Faults{Cut: !blackhole, Blackhole: blackhole}
		}
		if err := p.SetFaults(f); err != nil {
			return err
		}
	}
	return nil
}

// Isolate cuts replica id from every other replica, both directions.
func (n *Network) Isolate(id int, blackhole bool) error {
	for key, p := range n.proxies {
		if key[0] == id || key[1] == id {
			if err := p.SetFaults(Faults{Cut: !blackhole, Blackhole: blackhole}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every fault on every proxy.
func (n *Network) Heal() {
	for _, p := range n.proxies {
		p.Heal()
	}
}

// Describe lists the proxies that have faults, e.g. "1->2 cut, 3->1 loss 50%".
func (n *Network) Describe() string {
	var parts []string
	for _, from := range n.ids {
		for _, to := range n.ids {
			if from == to {
				continue
			}
			f := n.Proxy(from, to).Faults()
			if f != (Faults{}) {
				parts = append(parts, fmt.Sprintf("%d->%d %s", from, to, f))
			}
		}
	}
	if len(parts) == 0 {
		return "healthy"
	}
	return strings.Join(parts, ", ")
}

// Stats sums every proxy's counters.
func (n *Network) Stats() Stats {
	var s Stats
	for _, p := range n.proxies {
		ps := p.Stats()
		s.Accepted += ps.Accepted
		s.Refused += ps.Refused
		s.Killed += ps.Killed
		s.BytesForward += ps.BytesForward
		s.BytesBackward += ps.BytesBackward
		s.BytesDropped += ps.BytesDropped
	}
	return s
}

// Close closes every proxy.
func (n *Network) Close() error {
	var errs []error
	for _, p := range n.proxies {
		if err := p.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
