package pipeline

import (
	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/netio"
)

// waiterTable maps a pending command (client id, seq) to the connection waiting for its
// answer. It is an open-addressing hash table with linear probing and backward-shift deletion:
// every command is inserted once and deleted once, and that churn leaves no tombstones, so
// lookups stay one or two probes (a Go map under the same churn spent a fifth of the leader's
// CPU probing). It grows by doubling at half load; it never shrinks. Not safe for concurrent
// use: Node.waitMu guards it.
type waiterTable struct {
	slots []waiterSlot
	count int
	// reads holds the queries of the pending reads, which are few: kept out of the slots so
	// a slot stays 24 bytes (a 40-byte slot made put and take cost the leader 12% of its CPU
	// at saturation, against 5% before).
	reads map[cmdKey]readQuery
}

type waiterSlot struct {
	key  cmdKey
	conn *netio.ClientConn // nil: empty slot
}

// readQuery is what a pending read asks (see codec.Request.Read).
type readQuery struct {
	mode   codec.ReadMode
	offset uint64
}

func newWaiterTable(capacity int) *waiterTable {
	size := 16
	for size < 2*capacity {
		size *= 2
	}
	return &waiterTable{slots: make([]waiterSlot, size), reads: make(map[cmdKey]readQuery)}
}

func (w *waiterTable) len() int { return w.count }

func (k cmdKey) hash() uint64 {
	h := k.client*0x9E3779B97F4A7C15 ^ k.seq*0xC2B2AE3D27D4EB4F
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	return h ^ h>>32
}

func (w *waiterTable) get(k cmdKey) *netio.ClientConn {
	mask := uint64(len(w.slots) - 1)
	for i := k.hash() & mask; ; i = (i + 1) & mask {
		s := &w.slots[i]
		if s.conn == nil {
			return nil
		}
		if s.key == k {
			return s.conn
		}
	}
}

// put sets k's connection and query and returns the connection it replaces (nil if none).
func (w *waiterTable) put(k cmdKey, c *netio.ClientConn, q readQuery) *netio.ClientConn {
	if q.mode != codec.ReadNone {
		w.reads[k] = q
	} else if len(w.reads) > 0 {
		delete(w.reads, k)
	}
	return w.putConn(k, c)
}

func (w *waiterTable) putConn(k cmdKey, c *netio.ClientConn) *netio.ClientConn {
	if 2*(w.count+1) > len(w.slots) {
		w.grow()
	}
	mask := uint64(len(w.slots) - 1)
	for i := k.hash() & mask; ; i = (i + 1) & mask {
		s := &w.slots[i]
		if s.conn == nil {
			s.key, s.conn = k, c
			w.count++
			return nil
		}
		if s.key == k {
			old := s.conn
			s.conn = c
			return old
		}
	}
}

// take removes k and returns its connection (nil if absent) and query.
func (w *waiterTable) take(k cmdKey) (*netio.ClientConn, readQuery) {
	mask := uint64(len(w.slots) - 1)
	i := k.hash() & mask
	for {
		s := &w.slots[i]
		if s.conn == nil {
			return nil, readQuery{}
		}
		if s.key == k {
			break
		}
		i = (i + 1) & mask
	}
	c := w.slots[i].conn
	var q readQuery
	if len(w.reads) > 0 {
		if q = w.reads[k]; q.mode != codec.ReadNone {
			delete(w.reads, k)
		}
	}
	// Backward shift: move later entries of the probe run into the hole when their home
	// slot is not between the hole and their position.
	hole := i
	for j := (i + 1) & mask; w.slots[j].conn != nil; j = (j + 1) & mask {
		home := w.slots[j].key.hash() & mask
		if (j-home)&mask >= (j-hole)&mask {
			w.slots[hole] = w.slots[j]
			hole = j
		}
	}
	w.slots[hole] = waiterSlot{}
	w.count--
	return c, q
}

func (w *waiterTable) grow() {
	old := w.slots
	w.slots = make([]waiterSlot, 2*len(old))
	w.count = 0
	for _, s := range old {
		if s.conn != nil {
			w.putConn(s.key, s.conn)
		}
	}
}

// drain calls fn for every entry and empties the table.
func (w *waiterTable) drain(fn func(k cmdKey, c *netio.ClientConn, q readQuery)) {
	for i := range w.slots {
		if s := w.slots[i]; s.conn != nil {
			fn(s.key, s.conn, w.reads[s.key])
		}
	}
	clear(w.slots)
	clear(w.reads)
	w.count = 0
}
