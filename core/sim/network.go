package sim

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/mpaxos/mpaxos/codec"
)

// envelope is one message on the simulated network, as bytes: the frame the sender's encoder
// wrote (S2-compressed when its compression is on and pays) and the plain frame for the
// round-trip check.
type envelope struct {
	to         uint32
	from       uint32
	frame      []byte
	plain      []byte
	compressed bool
	at         int // delivered at this tick or later (a paused receiver gets it once it resumes)
	// chunk numbers a snapshot chunk carrying data (0: any other message), in send order.
	chunk uint64
}

// send puts a message core handed out on the wire: the checker sees it first (it was sent,
// whatever the network does to it), then it is encoded, and maybe lost, duplicated, delayed or
// held in the long-delay tail.
func (w *world) send(n *node, m codec.Message) {
	w.must(w.history.Sent(n.id, m))
	plain := codec.AppendMessage(nil, &m)
	e := envelope{from: m.From, to: m.To, frame: plain, plain: plain}
	if m.From != n.id || m.To == 0 || int(m.To) > len(w.nodes) || m.To == n.id {
		w.fail("messages are addressed", "replica %d sent %v from %d to %d", n.id, m.Type, m.From, m.To)
	}
	if n.compress {
		if frame := n.encoder.AppendMessage(nil, &m); !bytes.Equal(frame, plain) {
			e.frame, e.compressed = frame, true
		}
	}
	if w.opts.Plant == PlantCorruptFrame && w.rng.IntN(100) == 0 {
		e.frame = bytes.Clone(e.frame)
		e.frame[w.rng.IntN(len(e.frame))] ^= 1 << w.rng.IntN(8)
	}
	if !w.connected(m.From, m.To) || w.rng.IntN(100) < w.opts.DropPercent {
		return
	}
	copies := 1
	if w.rng.IntN(100) < w.opts.DuplicatePercent {
		copies = 2
	}
	for range copies {
		e.at = w.now + w.rng.IntN(w.opts.DelayTicksMax+1)
		if w.opts.LongDelayPerMille > 0 && w.rng.IntN(1000) < w.opts.LongDelayPerMille {
			e.at = w.now + w.opts.DelayTicksMax + 1 + w.rng.IntN(w.opts.LongDelayTicksMax-w.opts.DelayTicksMax)
			w.res.LongDelays++
		}
		if m.Type == codec.TypeSnapshotChunk && len(m.Data) > 0 {
			// A peer link keeps order per direction (netio): chunks are lost, duplicated and
			// held up, never overtaken by a later chunk (the driver takes them in order only).
			w.chunkSeq++
			link := &w.chunkAt[m.From-1][m.To-1]
			e.at = max(e.at, *link)
			e.chunk, *link = w.chunkSeq, e.at
		}
		w.network = append(w.network, e)
	}
}

// deliver hands every due message to its replica's driver (which passes all but snapshot
// chunks to core), in random order, decoded from a fresh copy of its frame. A replica that does
// not own what it is given (StepValuesOwned off) gets its message's bytes scribbled over after
// Step returns: core and the driver's effects must copy what they keep. Messages to
// a paused replica wait; messages to a crashed one, or across a cut, are lost.
func (w *world) deliver() {
	var due []envelope
	kept := w.network[:0]
	for _, e := range w.network {
		if e.at <= w.now && w.nodes[e.to-1].running(w.now) || e.at <= w.now && !w.nodes[e.to-1].live() {
			due = append(due, e)
		} else {
			kept = append(kept, e)
		}
	}
	clear(w.network[len(kept):])
	w.network = kept
	w.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	w.orderChunks(due)
	for _, e := range due {
		n := w.nodes[e.to-1]
		if !n.live() || !w.connected(e.from, e.to) {
			continue
		}
		m := w.decode(n, e)
		if err := n.driver.Step(&m); err != nil {
			w.fail("well-formed messages are accepted", "replica %d: %v", n.id, err)
		}
		if !n.cfg.StepValuesOwned {
			scribble(m)
		}
		if w.crashIfDecided(n) {
			continue
		}
		w.checkPromised(n)
		w.res.Messages++
	}
}

// orderChunks puts the snapshot chunks among due back in send order, in the places the
// shuffle gave them: other messages stay shuffled around them.
func (w *world) orderChunks(due []envelope) {
	w.chunkPlaces = w.chunkPlaces[:0]
	for i := range due {
		if due[i].chunk != 0 {
			w.chunkPlaces = append(w.chunkPlaces, i)
		}
	}
	if len(w.chunkPlaces) < 2 {
		return
	}
	w.chunks = w.chunks[:0]
	for _, i := range w.chunkPlaces {
		w.chunks = append(w.chunks, due[i])
	}
	slices.SortFunc(w.chunks, func(a, b envelope) int { return cmp.Compare(a.chunk, b.chunk) })
	for k, i := range w.chunkPlaces {
		due[i] = w.chunks[k]
	}
	clear(w.chunks)
}

// decode turns a frame back into a message the way a replica's connection would, and checks
// that the codec round-trips it: re-encoded plain, it is the frame the sender's message made.
func (w *world) decode(n *node, e envelope) codec.Message {
	buf := bytes.Clone(e.frame) // each delivery its own bytes: duplicates share e.frame
	var m codec.Message
	var err error
	if e.compressed || w.rng.IntN(2) == 0 {
		err = n.decoder.DecodeMessage(buf, &m)
		w.res.Compressed += boolInt(e.compressed)
	} else {
		err = codec.DecodeMessage(buf, &m, nil)
	}
	if err != nil {
		w.fail("codec round trip", "replica %d could not decode a frame from %d: %v", n.id, e.from, err)
	}
	w.frame = codec.AppendMessage(w.frame[:0], &m)
	if !bytes.Equal(w.frame, e.plain) {
		w.fail("codec round trip", "replica %d decoded %v from %d as %x, sent %x", n.id, m.Type, e.from, w.frame, e.plain)
	}
	if n.cfg.StepValuesOwned {
		m = cloneMessage(m) // like the pipeline: every peer message copied into fresh memory
	}
	return m
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cloneMessage(m codec.Message) codec.Message {
	c := m
	c.Values = make([][]byte, len(m.Values))
	for i, v := range m.Values {
		c.Values[i] = bytes.Clone(v)
	}
	c.Entries = slices.Clone(m.Entries)
	for i := range c.Entries {
		c.Entries[i].Value = bytes.Clone(c.Entries[i].Value)
	}
	c.Data = bytes.Clone(m.Data)
	return c
}

func scribble(m codec.Message) {
	for _, v := range m.Values {
		for i := range v {
			v[i] = 0xEE
		}
	}
	for _, e := range m.Entries {
		for i := range e.Value {
			e.Value[i] = 0xEE
		}
	}
	for i := range m.Data {
		m.Data[i] = 0xEE
	}
}
