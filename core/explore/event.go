package explore

import (
	"fmt"
	"strings"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// EventKind is one kind of thing that can happen next.
type EventKind uint8

const (
	Deliver  EventKind = iota // a message in flight reaches its replica (and leaves the network)
	Drop                      // a message in flight is lost
	Persist                   // a replica's oldest pending write becomes durable
	Crash                     // a replica crashes, keeping some of its pending writes, and restarts
	Campaign                  // a replica starts phase 1 (core.Replica.Campaign)
	Propose                   // a leader proposes the next client value
	Tick                      // a replica's logical clock advances (timeouts, heartbeats, retransmits)
	eventKinds
)

func (k EventKind) String() string {
	return [...]string{"deliver", "drop", "persist", "crash", "campaign", "propose", "tick"}[k]
}

// AllEvents allows every kind of event. DefaultEvents leaves out Drop: the network is a set
// and a message may stay in it forever, so a world that dropped a message can do nothing its
// twin that kept the message in flight cannot; drops add worlds but no reachable violation of
// a safety invariant (they matter for liveness, which the explorer does not check).
const (
	AllEvents     = 1<<eventKinds - 1
	DefaultEvents = AllEvents &^ (1 << Drop)
)

// event is one transition. replica is an index (id-1); message indexes the parent world's
// sorted network; a crash keeps entries entries and the hard-th pending hard state.
type event struct {
	kind    EventKind
	replica uint8
	hard    uint8
	message uint16 // Deliver, Drop: the frame's index; Crash: entries kept
}

// events lists every event enabled in w, in a fixed order.
func (x *explorer) events(w *world, dst []event) []event {
	allowed := func(k EventKind) bool { return x.opts.Events&(1<<k) != 0 }
	for i := range w.network {
		if allowed(Deliver) {
			dst = append(dst, event{kind: Deliver, message: uint16(i)})
		}
		if allowed(Drop) {
			dst = append(dst, event{kind: Drop, message: uint16(i)})
		}
	}
	for i := range w.n {
		r := uint8(i)
		if allowed(Persist) && len(w.pending[i]) > 0 {
			dst = append(dst, event{kind: Persist, replica: r})
		}
		if allowed(Tick) && w.budget.ticks[i] > 0 {
			dst = append(dst, event{kind: Tick, replica: r})
		}
		if allowed(Campaign) && w.budget.campaigns > 0 {
			dst = append(dst, event{kind: Campaign, replica: r})
		}
		if allowed(Propose) && w.budget.proposals > 0 && w.replicas[i].Status().IsLeader {
			dst = append(dst, event{kind: Propose, replica: r})
		}
		if allowed(Crash) && w.budget.crashes > 0 {
			entries, hardStates := w.crashOptions(i)
			for e := 0; e <= entries; e++ {
				for h := 0; h <= hardStates; h++ {
					dst = append(dst, event{kind: Crash, replica: r, message: uint16(e), hard: uint8(h)})
				}
			}
		}
	}
	return dst
}

// apply computes the successor of parent under ev. ok is false if ev turns out to be disabled
// (a Propose the window refuses). A panic inside core is returned as a violation.
func (x *explorer) apply(parent *world, ev event) (s *step, ok bool, v *violation) {
	s = x.newStep(parent)
	defer func() {
		if p := recover(); p != nil {
			ok, v = true, &violation{invariant: "core never panics", detail: fmt.Sprint(p)}
		}
	}()
	i := int(ev.replica)
	switch ev.kind {
	case Deliver:
		m := s.take(int(ev.message))
		i = int(m.To) - 1
		if err := s.replica(i).Step(m); err != nil {
			return s, true, &violation{invariant: "every message a replica sends is accepted", detail: err.Error()}
		}
	case Drop:
		s.take(int(ev.message))
		return s, true, nil
	case Persist:
		s.complete(i)
	case Crash:
		s.w.budget.crashes--
		return s, true, s.crash(i, int(ev.message), int(ev.hard))
	case Campaign:
		s.w.budget.campaigns--
		s.replica(i).Campaign()
	case Propose:
		s.w.budget.proposals--
		value := fmt.Appendf(nil, "v%d", x.opts.ProposalsMax-s.w.budget.proposals)
		if _, err := s.replica(i).Propose(value); err != nil {
			return s, false, nil
		}
	case Tick:
		s.w.budget.ticks[i]--
		s.replica(i).Tick()
	}
	s.drive(i)
	return s, true, nil
}

// describe renders ev, as taken in world w, for a trace, and says which replica it touches.
func (x *explorer) describe(w *world, ev event) (string, int) {
	return x.describeEvent(w, ev), x.touched(w, ev)
}

func (x *explorer) touched(w *world, ev event) int {
	if ev.kind == Deliver || ev.kind == Drop {
		var m codec.Message
		if err := codec.DecodeMessage([]byte(w.network[ev.message]), &m, nil); err == nil {
			return int(m.To) - 1
		}
	}
	return int(ev.replica)
}

func (x *explorer) describeEvent(w *world, ev event) string {
	switch ev.kind {
	case Deliver, Drop:
		var m codec.Message
		if err := codec.DecodeMessage([]byte(w.network[ev.message]), &m, nil); err != nil {
			return fmt.Sprintf("%s an undecodable frame: %v", ev.kind, err)
		}
		return fmt.Sprintf("%-8s %s", ev.kind, describeMessage(&m))
	case Persist:
		p := &w.pending[ev.replica][0]
		return fmt.Sprintf("%-8s R%d: %s", ev.kind, ev.replica+1, describeWrite(&p.rd, len(p.rd.Entries), p.rd.MustSaveHardState))
	case Crash:
		entries, hard := int(ev.message), int(ev.hard)
		var kept []string
		for _, p := range w.pending[ev.replica] {
			keepHard := false
			if p.rd.MustSaveHardState && hard > 0 {
				hard--
				keepHard = hard == 0
			}
			n := min(entries, len(p.rd.Entries))
			entries -= n
			if n > 0 || keepHard {
				kept = append(kept, describeWrite(&p.rd, n, keepHard))
			}
		}
		what := "nothing pending kept"
		if len(kept) > 0 {
			what = "keeps " + strings.Join(kept, "; ")
		}
		return fmt.Sprintf("%-8s R%d and restart from disk (%s)", ev.kind, ev.replica+1, what)
	case Propose:
		return fmt.Sprintf("%-8s R%d: value \"v%d\"", ev.kind, ev.replica+1, x.opts.ProposalsMax-w.budget.proposals+1)
	}
	return fmt.Sprintf("%-8s R%d", ev.kind, ev.replica+1)
}

// describeWrite renders the first entries entries of rd and, if hard, its hard state.
func describeWrite(rd *core.Ready, entries int, hard bool) string {
	var parts []string
	if hard {
		parts = append(parts, fmt.Sprintf("hard state promised %s commit %d", ballot(rd.HardState.Promised), rd.HardState.Commit))
	}
	for _, e := range rd.Entries[:entries] {
		parts = append(parts, "entry "+describeEntry(e))
	}
	if len(parts) == 0 {
		return "nothing to write"
	}
	return strings.Join(parts, ", ")
}

func describeMessage(m *codec.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s R%d->R%d", m.Type, m.From, m.To)
	if !m.Ballot.IsZero() {
		fmt.Fprintf(&b, " ballot %s", ballot(m.Ballot))
	}
	fmt.Fprintf(&b, " slot %d", m.Slot)
	if m.Commit != 0 {
		fmt.Fprintf(&b, " commit %d", m.Commit)
	}
	if m.Count != 0 {
		fmt.Fprintf(&b, " count %d", m.Count)
	}
	for _, v := range m.Values {
		fmt.Fprintf(&b, " %s", value(v))
	}
	for _, e := range m.Entries {
		fmt.Fprintf(&b, " [%s]", describeEntry(e))
	}
	return b.String()
}

func describeEntry(e codec.Entry) string {
	return fmt.Sprintf("slot %d = %s in %s", e.Slot, value(e.Value), ballot(e.Ballot))
}

func ballot(b codec.Ballot) string {
	if b == core.ChosenBallot {
		return "chosen"
	}
	return fmt.Sprintf("(%d,%d)", b.Round, b.Replica)
}

func value(v []byte) string {
	if len(v) == 0 {
		return "no-op"
	}
	return fmt.Sprintf("%q", v)
}

// describeReplica is a one-line status of replica i of w after an event.
func describeReplica(w *world, i int) string {
	st := w.replicas[i].Status()
	role := "not leading"
	if st.IsLeader {
		role = "LEADS in " + ballot(st.Ballot)
	}
	line := fmt.Sprintf("R%d %s; promised %s (disk %s), commit %d", i+1, role, ballot(st.Promised),
		ballot(w.disks[i].hard.Promised), st.Commit)
	if n := len(w.pending[i]); n > 0 {
		line += fmt.Sprintf(", pending writes %d", n)
	}
	return line
}
