package check

import (
	"fmt"
	"math/bits"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// Names of the invariants, as Violation.Invariant carries them (see doc.go).
const (
	InvariantOneValuePerBallot = "one value per (slot, ballot)"
	InvariantMajorityKept      = "a majority-accepted value is kept by every higher ballot"
	InvariantChosenAgree       = "one chosen value per slot"
	InvariantChosenDurable     = "chosen only when durable on a majority with that value"
	InvariantBallotOneLife     = "a ballot is used in one life only"
)

// replicasMax: acceptors of one (slot, ballot) are kept as a bitmask of replica ids.
const replicasMax = 63

// valueShownBytesMax bounds how much of a value a Violation's Detail prints.
const valueShownBytesMax = 16

// Violation is a broken invariant: which one and what was seen.
type Violation struct{ Invariant, Detail string }

func (v *Violation) Error() string {
	return fmt.Sprintf("check: invariant %q broken: %s", v.Invariant, v.Detail)
}

func violation(invariant, format string, args ...any) *Violation {
	return &Violation{Invariant: invariant, Detail: fmt.Sprintf(format, args...)}
}

// acceptance is one (ballot, value) seen at a slot: proposed in an Accept, reported in a
// Promise, or durably accepted (then acceptors is non-zero).
type acceptance struct {
	ballot    codec.Ballot
	value     string
	acceptors uint64 // bit id set: replica id durably accepted value in ballot, in some life
}

func (a *acceptance) majority(quorum int) bool { return bits.OnesCount64(a.acceptors) >= quorum }

// slotHistory is everything seen at one slot.
type slotHistory struct {
	accepts   []acceptance // one per ballot, in the order first seen
	chosen    string       // valid if hasChosen
	hasChosen bool
	chosenBy  uint32 // the first replica that handed it out
}

func (s *slotHistory) find(b codec.Ballot) *acceptance {
	for i := range s.accepts {
		if s.accepts[i].ballot == b {
			return &s.accepts[i]
		}
	}
	return nil
}

// replicaHistory is one replica across its lives.
type replicaHistory struct {
	life      int
	disk      map[uint64]codec.Entry // the latest durable entry per slot
	compacted uint64                 // every slot below it is covered by a snapshot
	// led: the life in which this replica led a ballot or sent Accepts in it.
	led map[codec.Ballot]int
}

// History sees every replica across all its lives.
type History struct {
	quorum   int
	replicas []replicaHistory // index id-1
	slots    map[uint64]*slotHistory
}

// New returns an empty history of a cluster of replicas 1..replicas.
func New(replicas int) *History {
	if replicas < 1 || replicas > replicasMax {
		panic(fmt.Sprintf("check: %d replicas, want 1..%d", replicas, replicasMax))
	}
	h := &History{quorum: replicas/2 + 1, replicas: make([]replicaHistory, replicas), slots: map[uint64]*slotHistory{}}
	for i := range h.replicas {
		h.replicas[i] = replicaHistory{disk: map[uint64]codec.Entry{}, led: map[codec.Ballot]int{}}
	}
	return h
}

func (h *History) replica(id uint32) *replicaHistory {
	if id == 0 || int(id) > len(h.replicas) {
		panic(fmt.Sprintf("check: replica id %d outside 1..%d", id, len(h.replicas)))
	}
	return &h.replicas[id-1]
}

func (h *History) slot(s uint64) *slotHistory {
	sh := h.slots[s]
	if sh == nil {
		sh = &slotHistory{}
		h.slots[s] = sh
	}
	return sh
}

// Restart: replica id starts a new life (its volatile state is gone; its disk stays).
func (h *History) Restart(id uint32) {
	h.replica(id).life++
}

// Sent: replica id sent m (call for every message, Messages and MessagesAfterPersist alike).
// An Accept records (slot, ballot) -> value for each of its values and marks its ballot as
// led in this life; a Prepare or Accept in a ballot led in an earlier life is a violation.
// Entries a Promise reports are checked against the values seen too.
func (h *History) Sent(id uint32, m codec.Message) error {
	r := h.replica(id)
	switch m.Type {
	case codec.TypePrepare:
		return h.checkLife(id, r, m.Ballot, "sent a Prepare")
	case codec.TypeAccept:
		if err := h.checkLife(id, r, m.Ballot, "sent an Accept"); err != nil {
			return err
		}
		r.led[m.Ballot] = r.life
		for i, v := range m.Values {
			if err := h.record(id, m.Slot+uint64(i), m.Ballot, v, "sent Accept"); err != nil {
				return err
			}
		}
	case codec.TypePromise:
		for _, e := range m.Entries {
			if e.Ballot == core.ChosenBallot || e.Ballot.IsZero() {
				continue
			}
			if err := h.record(id, e.Slot, e.Ballot, e.Value, "reported in a Promise"); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkLife: ballot b may be used by replica id now unless it led b in an earlier life.
func (h *History) checkLife(id uint32, r *replicaHistory, b codec.Ballot, what string) error {
	if life, ok := r.led[b]; ok && life < r.life {
		return violation(InvariantBallotOneLife, "replica %d %s in ballot %v in life %d; it led that ballot in life %d",
			id, what, b, r.life, life)
	}
	return nil
}

// record notes (slot, ballot) -> value, which must agree with every value seen there before.
func (h *History) record(id uint32, slot uint64, b codec.Ballot, v []byte, how string) error {
	sh := h.slot(slot)
	if a := sh.find(b); a != nil {
		if a.value != string(v) {
			return violation(InvariantOneValuePerBallot, "replica %d %s %s at slot %d in ballot %v, which already holds %s",
				id, how, show(v), slot, b, show([]byte(a.value)))
		}
		return nil
	}
	sh.accepts = append(sh.accepts, acceptance{ballot: b, value: string(v)})
	return nil
}

// Durable: entry e reached replica id's disk (an acceptance, unless e.Ballot ==
// core.ChosenBallot). It supersedes the disk's earlier entry for the slot. An acceptance must
// agree with every value seen in its ballot and with every majority-accepted value of a lower
// ballot; if it completes a majority, every durable acceptance in a higher ballot must agree.
func (h *History) Durable(id uint32, e codec.Entry) error {
	r := h.replica(id)
	r.disk[e.Slot] = e
	if e.Ballot == core.ChosenBallot {
		if sh := h.slots[e.Slot]; sh != nil && sh.hasChosen && sh.chosen != string(e.Value) {
			return violation(InvariantChosenAgree, "replica %d stored %s as chosen at slot %d; replica %d handed out %s",
				id, show(e.Value), e.Slot, sh.chosenBy, show([]byte(sh.chosen)))
		}
		return nil
	}
	if e.Ballot.IsZero() {
		return nil
	}
	if err := h.record(id, e.Slot, e.Ballot, e.Value, "durably accepted"); err != nil {
		return err
	}
	sh := h.slots[e.Slot]
	a := sh.find(e.Ballot)
	for i := range sh.accepts {
		o := &sh.accepts[i]
		if o.ballot.Less(e.Ballot) && o.majority(h.quorum) && o.value != a.value {
			return violation(InvariantMajorityKept, "replica %d durably accepted %s at slot %d in ballot %v; a majority %s accepted %s in lower ballot %v",
				id, show(e.Value), e.Slot, e.Ballot, members(o.acceptors), show([]byte(o.value)), o.ballot)
		}
	}
	wasMajority := a.majority(h.quorum)
	a.acceptors |= 1 << id
	if wasMajority || !a.majority(h.quorum) {
		return nil
	}
	for i := range sh.accepts {
		o := &sh.accepts[i]
		if a.ballot.Less(o.ballot) && o.acceptors != 0 && o.value != a.value {
			return violation(InvariantMajorityKept, "replica %d completed a majority %s for %s at slot %d in ballot %v; %s durably accepted %s in higher ballot %v",
				id, members(a.acceptors), show(e.Value), e.Slot, e.Ballot, members(o.acceptors), show([]byte(o.value)), o.ballot)
		}
	}
	return nil
}

// Compacted: replica id's disk dropped every entry below slot (covered by a snapshot whose
// values the caller has checked against the chosen log).
func (h *History) Compacted(id uint32, slot uint64) {
	r := h.replica(id)
	if slot <= r.compacted {
		return
	}
	r.compacted = slot
	for s := range r.disk {
		if s < slot {
			delete(r.disk, s)
		}
	}
}

// Chosen: replica id handed out (slot, value) as chosen (core Ready.Chosen). It must be the
// value every earlier Chosen at that slot carried, and durable on a majority with that value.
func (h *History) Chosen(id uint32, e codec.Entry) error {
	h.replica(id)
	sh := h.slot(e.Slot)
	if sh.hasChosen && sh.chosen != string(e.Value) {
		return violation(InvariantChosenAgree, "replica %d handed out %s as chosen at slot %d; replica %d handed out %s",
			id, show(e.Value), e.Slot, sh.chosenBy, show([]byte(sh.chosen)))
	}
	if !sh.hasChosen {
		sh.chosen, sh.hasChosen, sh.chosenBy = string(e.Value), true, id
	}
	var holders uint64
	for i := range h.replicas {
		r := &h.replicas[i]
		if d, ok := r.disk[e.Slot]; e.Slot < r.compacted || (ok && string(d.Value) == string(e.Value)) {
			holders |= 1 << (i + 1)
		}
	}
	if bits.OnesCount64(holders) < h.quorum {
		return violation(InvariantChosenDurable, "replica %d handed out %s as chosen at slot %d; only %s of %d disks hold it (%s)",
			id, show(e.Value), e.Slot, members(holders), len(h.replicas), h.disksAt(e.Slot))
	}
	return nil
}

// disksAt describes every disk's state at slot, for a Violation's Detail.
func (h *History) disksAt(slot uint64) string {
	out := ""
	for i := range h.replicas {
		r := &h.replicas[i]
		if i > 0 {
			out += ", "
		}
		switch d, ok := r.disk[slot]; {
		case slot < r.compacted:
			out += fmt.Sprintf("%d: snapshot", i+1)
		case ok:
			out += fmt.Sprintf("%d: %s in %v", i+1, show(d.Value), d.Ballot)
		default:
			out += fmt.Sprintf("%d: nothing", i+1)
		}
	}
	return out
}

// Led: replica id is leader in ballot b now (Status().IsLeader). Records it for the reuse
// check; leading a ballot it led in an earlier life is a violation.
func (h *History) Led(id uint32, b codec.Ballot) error {
	r := h.replica(id)
	if err := h.checkLife(id, r, b, "leads"); err != nil {
		return err
	}
	if _, ok := r.led[b]; !ok {
		r.led[b] = r.life
	}
	return nil
}

// show prints a value briefly: empty is a no-op, long values are cut.
func show(v []byte) string {
	switch {
	case len(v) == 0:
		return "no-op"
	case len(v) > valueShownBytesMax:
		return fmt.Sprintf("%x...(%d bytes)", v[:valueShownBytesMax], len(v))
	}
	return fmt.Sprintf("%x", v)
}

// members lists the replica ids set in mask.
func members(mask uint64) string {
	var ids []int
	for id := 1; id <= replicasMax; id++ {
		if mask&(1<<id) != 0 {
			ids = append(ids, id)
		}
	}
	return fmt.Sprint(ids)
}
