package explore

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// zeroRand is the explorer's randomness: always 0, so every election timeout is exactly
// ElectionTicks and a cloned replica behaves exactly as its original.
type zeroRand struct{}

func (zeroRand) IntN(int) int { return 0 }

// world is one state of the whole system. Worlds are copy-on-write: a successor shares every
// replica, disk, queue and slice its event does not touch with its parent, so nothing reachable
// from a world is ever modified once the world is finished.
type world struct {
	n        int // replicas
	replicas [replicasMax]*core.Replica
	disks    [replicasMax]*disk
	pending  [replicasMax][]pendingReady // per replica: Readies handed out, not yet durable (FIFO)
	network  []string                    // the set of frames in flight, sorted
	budget   budget
	// facts: what the checker's verdicts depend on beyond the world itself (see fact kinds),
	// sorted, so that two paths to one world with different histories stay apart.
	facts []string
	// replicaPrints caches the 128-bit hash of each replica's part of the fingerprint (its
	// core state, disk, pending writes and tick budget): an event touches one replica, so the
	// others' are carried over from the parent.
	replicaPrints [replicasMax][2]uint64
}

// disk is what a replica's storage holds durably.
type disk struct {
	hard    core.HardState
	entries map[uint64]codec.Entry // the latest durable entry per slot
}

// pendingReady is a Ready whose persist has not completed. advanced: the driver already called
// Advance (only under PlantAdvanceBeforePersist).
type pendingReady struct {
	rd       core.Ready
	advanced bool
}

// needsWrite: the Ready asks for something to reach the disk.
func (p *pendingReady) needsWrite() bool {
	return len(p.rd.Entries) > 0 || p.rd.MustSaveHardState
}

// replicasMax bounds Options.Replicas (budgets keep per-replica counters in an array).
const replicasMax = 5

type budget struct {
	proposals int // proposals left; the next one proposes value number ProposalsMax-proposals+1
	crashes   int
	campaigns int
	ticks     [replicasMax]int
}

// observation is one fact for package check, in the order it happened.
type observation struct {
	kind   observationKind
	id     uint32
	msg    codec.Message
	entry  codec.Entry
	ballot codec.Ballot
}

type observationKind uint8

const (
	observeSent observationKind = iota
	observeDurable
	observeChosen
	observeLed
	observeRestart
)

// Fact kinds (the first byte of a fact). Together they are everything check.History keeps that
// can change a later verdict: which ballots each replica led (in this life or an earlier one),
// every (slot, ballot, value) seen, which acceptors durably accepted it, and what was chosen.
const (
	factLedNow     = 'L' // id, ballot: led in the current life
	factLedEarlier = 'E' // id, ballot: led in an earlier life
	factValue      = 'V' // slot, ballot, value
	factAcceptor   = 'A' // slot, ballot, value, id: durably accepted
	factChosen     = 'C' // slot, value
)

// step is one transition being computed: the successor world and what it observed.
type step struct {
	x            *explorer
	w            *world // &successor
	successor    world
	observations []observation
	cloned       [replicasMax]bool
	diskCopied   [replicasMax]bool
	pendingOwned [replicasMax]bool
	networkOwned bool
	factsOwned   bool
}

// violation: the successor broke a rule the explorer checks itself (a panic, a rejected
// message, a refused restart).
type violation struct{ invariant, detail string }

func (x *explorer) newStep(parent *world) *step {
	s := &step{x: x, successor: *parent}
	s.w = &s.successor
	return s
}

// replica returns replica i of the successor, cloned on first use.
func (s *step) replica(i int) *core.Replica {
	if !s.cloned[i] {
		s.w.replicas[i] = s.w.replicas[i].Clone(zeroRand{})
		s.cloned[i] = true
	}
	return s.w.replicas[i]
}

func (s *step) disk(i int) *disk {
	if !s.diskCopied[i] {
		old := s.w.disks[i]
		s.w.disks[i] = &disk{hard: old.hard, entries: maps.Clone(old.entries)}
		s.diskCopied[i] = true
	}
	return s.w.disks[i]
}

func (s *step) queue(i int) *[]pendingReady {
	if !s.pendingOwned[i] {
		s.w.pending[i] = slices.Clone(s.w.pending[i])
		s.pendingOwned[i] = true
	}
	return &s.w.pending[i]
}

func (s *step) observe(o observation) {
	s.observations = append(s.observations, o)
	switch o.kind {
	case observeSent:
		switch o.msg.Type {
		case codec.TypeAccept:
			s.addFact(fact(factLedNow, uint64(o.id), o.msg.Ballot.Round, uint64(o.msg.Ballot.Replica)))
			for k, v := range o.msg.Values {
				s.addFact(valueFact(factValue, o.msg.Slot+uint64(k), o.msg.Ballot, v))
			}
		case codec.TypePromise:
			for _, e := range o.msg.Entries {
				if e.Ballot != core.ChosenBallot && !e.Ballot.IsZero() {
					s.addFact(valueFact(factValue, e.Slot, e.Ballot, e.Value))
				}
			}
		}
	case observeDurable:
		if o.entry.Ballot != core.ChosenBallot {
			s.addFact(valueFact(factValue, o.entry.Slot, o.entry.Ballot, o.entry.Value))
			s.addFact(valueFact(factAcceptor, o.entry.Slot, o.entry.Ballot, o.entry.Value) + fact(0, uint64(o.id)))
		}
	case observeChosen:
		s.addFact(fact(factChosen, o.entry.Slot) + string(o.entry.Value))
	case observeLed:
		s.addFact(fact(factLedNow, uint64(o.id), o.ballot.Round, uint64(o.ballot.Replica)))
	case observeRestart:
		s.restartFacts(o.id)
	}
}

func fact(kind byte, numbers ...uint64) string {
	b := []byte{kind}
	for _, n := range numbers {
		b = binary.AppendUvarint(b, n)
	}
	return string(b)
}

func valueFact(kind byte, slot uint64, b codec.Ballot, value []byte) string {
	return fact(kind, slot, b.Round, uint64(b.Replica), uint64(len(value))) + string(value)
}

func (s *step) addFact(f string) {
	i, found := slices.BinarySearch(s.w.facts, f)
	if found {
		return
	}
	if !s.factsOwned {
		s.w.facts = slices.Clone(s.w.facts)
		s.factsOwned = true
	}
	s.w.facts = slices.Insert(s.w.facts, i, f)
}

// restartFacts: every ballot replica id led in its life that just ended becomes an earlier
// life's ballot.
func (s *step) restartFacts(id uint32) {
	prefix := fact(factLedNow, uint64(id))
	var moved []string
	for _, f := range s.w.facts {
		if strings.HasPrefix(f, prefix) {
			moved = append(moved, string(factLedEarlier)+f[1:])
		}
	}
	if len(moved) == 0 {
		return
	}
	s.w.facts = slices.DeleteFunc(slices.Clone(s.w.facts), func(f string) bool { return strings.HasPrefix(f, prefix) })
	s.factsOwned = true
	for _, f := range moved {
		s.addFact(f)
	}
}

// send puts m in flight: the network is a set, so an identical message already in flight
// is not added twice.
func (s *step) send(from int, m codec.Message) {
	s.observe(observation{kind: observeSent, id: uint32(from + 1), msg: m})
	frame := string(codec.AppendMessage(nil, &m))
	i, found := slices.BinarySearch(s.w.network, frame)
	if found {
		return
	}
	if !s.networkOwned {
		s.w.network = slices.Clone(s.w.network)
		s.networkOwned = true
	}
	s.w.network = slices.Insert(s.w.network, i, frame)
}

// take removes frame i from the network.
func (s *step) take(i int) codec.Message {
	var m codec.Message
	if err := codec.DecodeMessage([]byte(s.w.network[i]), &m, nil); err != nil {
		panic(fmt.Sprintf("explore: a frame in flight does not decode: %v", err))
	}
	s.w.network = slices.Delete(slices.Clone(s.w.network), i, i+1)
	s.networkOwned = true
	return m
}

// drive takes replica i's Readies as the drivers do: Messages leave at once, the persist joins
// the FIFO of in-flight writes; a Ready with nothing to write completes as soon as it reaches
// the head of the FIFO (nothing to wait for). Completing may produce more work; loop until
// none is left.
func (s *step) drive(i int) {
	r := s.replica(i)
	for {
		for r.HasReady() {
			rd := r.Ready()
			for _, m := range rd.Messages {
				s.send(i, m)
			}
			// Core hands these out as chosen now (a driver may apply them before its own
			// persist, as the pipeline does): they must already be durable on a majority.
			for _, e := range rd.Chosen {
				s.observe(observation{kind: observeChosen, id: uint32(i + 1), entry: e})
			}
			p := pendingReady{rd: rd}
			if s.x.opts.PlantAdvanceBeforePersist {
				r.Advance(rd) // the planted bug: core believes the write durable before it is
				p.advanced = true
			}
			q := s.queue(i)
			*q = append(*q, p)
		}
		q := s.queue(i)
		if len(*q) == 0 || (*q)[0].needsWrite() {
			break
		}
		s.complete(i)
	}
	if st := r.Status(); st.IsLeader {
		s.observe(observation{kind: observeLed, id: uint32(i + 1), ballot: st.Ballot})
	}
}

// complete finishes replica i's oldest persist: its hard state and entries reach the disk,
// its MessagesAfterPersist leave, its Chosen are applied (checked when handed out), and it is
// advanced.
func (s *step) complete(i int) {
	q := s.queue(i)
	p := (*q)[0]
	*q = (*q)[1:]
	d := s.disk(i)
	if p.rd.MustSaveHardState {
		d.hard = p.rd.HardState
	}
	for _, e := range p.rd.Entries {
		d.entries[e.Slot] = e
		s.observe(observation{kind: observeDurable, id: uint32(i + 1), entry: e})
	}
	for _, m := range p.rd.MessagesAfterPersist {
		s.send(i, m)
	}
	if !p.advanced {
		s.replica(i).Advance(p.rd)
	}
}

// crashOptions: how many entries and which hard state of replica i's pending persists a crash
// may keep. A crash keeps a prefix of the entries in FIFO order, and, independently (the hard
// state has a file of its own), the disk's hard state or the one of any pending Ready that
// carries one.
func (w *world) crashOptions(i int) (entries, hardStates int) {
	for _, p := range w.pending[i] {
		entries += len(p.rd.Entries)
		if p.rd.MustSaveHardState {
			hardStates++
		}
	}
	return entries, hardStates
}

// crash loses replica i's volatile state and every write not kept, keeping the first
// entriesKept entries and the hardKept-th pending hard state (0: the disk's), then restarts it
// from its disk alone.
func (s *step) crash(i, entriesKept, hardKept int) *violation {
	d := s.disk(i)
	for _, p := range s.w.pending[i] {
		if p.rd.MustSaveHardState && hardKept > 0 {
			hardKept--
			if hardKept == 0 {
				d.hard = p.rd.HardState
			}
		}
		for _, e := range p.rd.Entries {
			if entriesKept == 0 {
				break
			}
			entriesKept--
			d.entries[e.Slot] = e
			s.observe(observation{kind: observeDurable, id: uint32(i + 1), entry: e})
		}
	}
	s.w.pending[i], s.pendingOwned[i] = nil, true
	s.observe(observation{kind: observeRestart, id: uint32(i + 1)})
	p := core.Persisted{HardState: d.hard}
	if s.x.opts.PlantRestartWithoutHardState {
		p.HardState = core.HardState{} // the planted bug: the promise is forgotten
	}
	for _, slot := range slices.Sorted(maps.Keys(d.entries)) {
		p.Entries = append(p.Entries, d.entries[slot])
	}
	r, err := core.New(s.x.configs[i], p, nil)
	if err != nil {
		return &violation{invariant: "a replica restarts from its disk", detail: err.Error()}
	}
	s.w.replicas[i], s.cloned[i] = r, true
	s.drive(i)
	return nil
}

// appendFingerprint encodes the whole world canonically, each replica's part as its cached
// hash.
func (w *world) appendFingerprint(dst []byte) []byte {
	for i := range w.n {
		dst = binary.LittleEndian.AppendUint64(dst, w.replicaPrints[i][0])
		dst = binary.LittleEndian.AppendUint64(dst, w.replicaPrints[i][1])
	}
	dst = binary.AppendUvarint(dst, uint64(len(w.network)))
	for _, frame := range w.network {
		dst = appendString(dst, frame)
	}
	dst = binary.AppendUvarint(dst, uint64(w.budget.proposals))
	dst = binary.AppendUvarint(dst, uint64(w.budget.crashes))
	dst = binary.AppendUvarint(dst, uint64(w.budget.campaigns))
	dst = binary.AppendUvarint(dst, uint64(len(w.facts)))
	for _, f := range w.facts {
		dst = appendString(dst, f)
	}
	return dst
}

// appendReplicaFingerprint encodes replica i's part of the world: its core state, its disk,
// its pending writes and its tick budget.
func (w *world) appendReplicaFingerprint(dst []byte, i int) []byte {
	{
		dst = w.replicas[i].AppendFingerprint(dst)
		d := w.disks[i]
		dst = binary.AppendUvarint(dst, d.hard.Promised.Round)
		dst = binary.AppendUvarint(dst, uint64(d.hard.Promised.Replica))
		dst = binary.AppendUvarint(dst, d.hard.Commit)
		dst = binary.AppendUvarint(dst, uint64(len(d.entries)))
		for _, slot := range sortedSlots(d.entries) {
			e := d.entries[slot]
			dst = binary.AppendUvarint(dst, slot)
			dst = binary.AppendUvarint(dst, e.Ballot.Round)
			dst = binary.AppendUvarint(dst, uint64(e.Ballot.Replica))
			dst = appendString(dst, string(e.Value))
		}
		dst = binary.AppendUvarint(dst, uint64(len(w.pending[i])))
		for k := range w.pending[i] {
			p := &w.pending[i][k]
			dst = p.rd.AppendFingerprint(dst)
			dst = binary.AppendUvarint(dst, boolBit(p.advanced))
		}
		dst = binary.AppendUvarint(dst, uint64(w.budget.ticks[i]))
	}
	return dst
}

// touched: replica i's part of the world may differ from the parent's.
func (s *step) touched(i int) bool {
	return s.cloned[i] || s.diskCopied[i] || s.pendingOwned[i]
}

func sortedSlots(entries map[uint64]codec.Entry) []uint64 {
	if len(entries) <= 1 {
		for slot := range entries {
			return []uint64{slot}
		}
		return nil
	}
	slots := slices.Collect(maps.Keys(entries))
	sort.Slice(slots, func(a, b int) bool { return slots[a] < slots[b] })
	return slots
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func boolBit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
