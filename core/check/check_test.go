package check

import (
	"errors"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// event is one call on a History; a history is a list of them, replayed in order.
type event func(h *History) error

func restart(id uint32) event {
	return func(h *History) error { h.Restart(id); return nil }
}

func sent(id uint32, m codec.Message) event {
	return func(h *History) error { m.From = id; return h.Sent(id, m) }
}

func durable(id uint32, slot uint64, b codec.Ballot, v string) event {
	return func(h *History) error { return h.Durable(id, codec.Entry{Slot: slot, Ballot: b, Value: []byte(v)}) }
}

func compacted(id uint32, slot uint64) event {
	return func(h *History) error { h.Compacted(id, slot); return nil }
}

func chosen(id uint32, slot uint64, v string) event {
	return func(h *History) error { return h.Chosen(id, codec.Entry{Slot: slot, Value: []byte(v)}) }
}

func led(id uint32, b codec.Ballot) event {
	return func(h *History) error { return h.Led(id, b) }
}

func prepare(b codec.Ballot) codec.Message {
	return codec.Message{Type: codec.TypePrepare, Ballot: b}
}

func accept(b codec.Ballot, slot uint64, values ...string) codec.Message {
	m := codec.Message{Type: codec.TypeAccept, Ballot: b, Slot: slot}
	for _, v := range values {
		m.Values = append(m.Values, []byte(v))
	}
	return m
}

func promise(b codec.Ballot, entries ...codec.Entry) codec.Message {
	return codec.Message{Type: codec.TypePromise, Ballot: b, Entries: entries}
}

var (
	b11 = codec.Ballot{Round: 1, Replica: 1}
	b12 = codec.Ballot{Round: 1, Replica: 2}
	b21 = codec.Ballot{Round: 2, Replica: 1}
	b23 = codec.Ballot{Round: 2, Replica: 3}
	b32 = codec.Ballot{Round: 3, Replica: 2}
)

// TestHistories replays each history on a fresh 3-replica History: a legal one must pass,
// one that breaks an invariant must return a Violation naming it, at the last event.
func TestHistories(t *testing.T) {
	tests := []struct {
		name   string
		events []event
		want   string // "" for a legal history
	}{
		// One value per (slot, ballot).
		{"one leader, one value per slot, retransmitted", []event{
			sent(1, prepare(b11)), led(1, b11), sent(1, accept(b11, 0, "x", "y")),
			durable(2, 0, b11, "x"), sent(1, accept(b11, 0, "x")), durable(2, 1, b11, "y"),
		}, ""},
		{"two values sent in one ballot", []event{
			sent(1, accept(b11, 0, "x")), sent(1, accept(b11, 0, "y")),
		}, InvariantOneValuePerBallot},
		{"an acceptor stores another value than the ballot's Accept", []event{
			sent(1, accept(b11, 3, "x")), durable(2, 3, b11, "y"),
		}, InvariantOneValuePerBallot},
		{"a Promise reports another value for a ballot", []event{
			sent(1, accept(b11, 0, "x")),
			sent(2, promise(b21, codec.Entry{Slot: 0, Ballot: b11, Value: []byte("y")})),
		}, InvariantOneValuePerBallot},
		{"a Promise reports a ChosenBallot entry: not a ballot", []event{
			sent(1, accept(b11, 0, "x")),
			sent(2, promise(b21, codec.Entry{Slot: 0, Ballot: core.ChosenBallot, Value: []byte("x")})),
			sent(3, promise(b21, codec.Entry{Slot: 0, Ballot: b11, Value: []byte("x")})),
		}, ""},
		{"the same value in two ballots is legal", []event{
			sent(1, accept(b11, 0, "x")), sent(2, accept(b12, 0, "x")), durable(3, 0, b12, "x"),
		}, ""},

		// A majority-accepted value is kept by every higher ballot.
		{"a higher ballot re-proposes the majority's value", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b11, "x"),
			durable(3, 0, b23, "x"), durable(1, 0, b32, "x"),
		}, ""},
		{"a higher ballot accepts another value after a majority", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b11, "x"), durable(3, 0, b23, "y"),
		}, InvariantMajorityKept},
		{"a majority forms below a differing higher acceptance", []event{
			durable(3, 0, b23, "y"), durable(1, 0, b11, "x"), durable(2, 0, b11, "x"),
		}, InvariantMajorityKept},
		{"a minority's value may be overridden", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b23, "y"), durable(3, 0, b23, "y"),
		}, ""},
		{"one acceptor counted once across its lives", []event{
			durable(1, 0, b11, "x"), restart(1), durable(1, 0, b11, "x"), durable(2, 0, b23, "y"),
		}, ""},

		// One chosen value per slot.
		{"every replica hands out the same value", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b11, "x"),
			chosen(1, 0, "x"), chosen(2, 0, "x"), chosen(3, 0, "x"),
		}, ""},
		{"two replicas hand out different values", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b11, "x"), chosen(1, 0, "x"), chosen(3, 0, "y"),
		}, InvariantChosenAgree},
		{"a replica stores another value as chosen", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b11, "x"), chosen(1, 0, "x"),
			durable(3, 0, core.ChosenBallot, "y"),
		}, InvariantChosenAgree},

		// Chosen only when durable on a majority with that value.
		{"chosen with one disk of three", []event{
			durable(1, 0, b11, "x"), chosen(1, 0, "x"),
		}, InvariantChosenDurable},
		{"chosen while a majority holds another value at the slot", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b12, "y"), durable(3, 0, b12, "y"), chosen(1, 0, "x"),
		}, InvariantChosenDurable},
		{"a superseding entry no longer counts", []event{
			durable(1, 0, b11, "x"), durable(2, 0, b12, "x"), durable(2, 0, b23, "y"), chosen(1, 0, "x"),
		}, InvariantChosenDurable},
		{"chosen held as ChosenBallot and by a snapshot", []event{
			durable(1, 4, b11, "x"), durable(2, 4, core.ChosenBallot, "x"), compacted(3, 5),
			chosen(3, 4, "x"),
		}, ""},
		{"a snapshot below the slot does not count", []event{
			durable(1, 4, b11, "x"), compacted(2, 4), compacted(3, 4), chosen(1, 4, "x"),
		}, InvariantChosenDurable},
		{"a snapshot point never goes back", []event{
			durable(1, 4, b11, "x"), compacted(2, 5), compacted(2, 3), chosen(1, 4, "x"),
		}, ""},

		// A ballot is used in one life only (issue 14's scenario).
		{"issue 14: a ballot led before a crash is prepared again", []event{
			sent(1, prepare(b11)), led(1, b11), sent(1, accept(b11, 0, "x")), durable(2, 0, b11, "x"),
			restart(1), sent(1, prepare(b11)),
		}, InvariantBallotOneLife},
		{"a ballot led before a crash is used for an Accept again", []event{
			led(1, b11), restart(1), sent(1, accept(b11, 0, "x")),
		}, InvariantBallotOneLife},
		{"a ballot whose Accepts left before a crash is led again", []event{
			sent(1, accept(b11, 0, "x")), restart(1), led(1, b11),
		}, InvariantBallotOneLife},
		{"a campaign that never led may be retried in a new life", []event{
			sent(1, prepare(b11)), restart(1), sent(1, prepare(b11)), led(1, b11), sent(1, accept(b11, 0, "x")),
		}, ""},
		{"a new life leads a higher ballot", []event{
			led(1, b11), sent(1, accept(b11, 0, "x")), restart(1), sent(1, prepare(b21)), led(1, b21),
			sent(1, accept(b21, 0, "x")), led(1, b21),
		}, ""},
		{"another replica's life does not matter", []event{
			led(1, b11), restart(2), led(1, b11), sent(1, accept(b11, 0, "x")),
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(3)
			for i, ev := range tt.events {
				err := ev(h)
				last := i == len(tt.events)-1
				switch {
				case err != nil && (!last || tt.want == ""):
					t.Fatalf("event %d: unexpected %v", i, err)
				case err == nil && last && tt.want != "":
					t.Fatalf("history passed; want %q", tt.want)
				case err != nil:
					var v *Violation
					if !errors.As(err, &v) || v.Invariant != tt.want {
						t.Fatalf("got %v; want invariant %q", err, tt.want)
					}
					t.Logf("%v", err)
				}
			}
		})
	}
}

// The issue-14 run in full, as a simulator would report it: the split log is caught by
// several invariants; the first one reached is the ballot reuse.
func TestIssue14SplitLogIsCaughtWhereverTheHistoryIsCut(t *testing.T) {
	steps := []event{
		sent(1, prepare(b11)),
		sent(2, promise(b11)), sent(3, promise(b11)),
		led(1, b11), sent(1, accept(b11, 0, "X")), durable(2, 0, b11, "X"),
		restart(1),
		sent(1, prepare(b11)), // the reused ballot
	}
	h := New(3)
	var err error
	for _, ev := range steps {
		if err = ev(h); err != nil {
			break
		}
	}
	var v *Violation
	if !errors.As(err, &v) || v.Invariant != InvariantBallotOneLife {
		t.Fatalf("got %v, want %q", err, InvariantBallotOneLife)
	}

	// A checker that missed the reuse still sees the second value in the same ballot.
	h = New(3)
	for _, ev := range []event{durable(2, 0, b11, "X"), durable(3, 0, b11, "Y")} {
		err = ev(h)
	}
	if !errors.As(err, &v) || v.Invariant != InvariantOneValuePerBallot {
		t.Fatalf("got %v, want %q", err, InvariantOneValuePerBallot)
	}
}

func TestReplicaIDsOutsideTheClusterPanic(t *testing.T) {
	for _, id := range []uint32{0, 4} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("replica %d of 3 did not panic", id)
				}
			}()
			New(3).Restart(id)
		}()
	}
}

func TestViolationError(t *testing.T) {
	v := &Violation{Invariant: InvariantChosenAgree, Detail: "replica 1 ..."}
	if got, want := v.Error(), `check: invariant "one chosen value per slot" broken: replica 1 ...`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
