package history

import (
	"fmt"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Inputs and outputs of the porcupine models. They are small comparable values so porcupine's
// visualisation can describe them.

type modelInput struct {
	kind   Kind
	value  uint64 // append: the value
	offset uint64 // read: the dense offset asked for
}

type modelOutput struct {
	known  bool   // false: outcome unknown (an indeterminate append)
	offset uint64 // append: dense offset acknowledged
	value  uint64 // read: value found
	found  bool   // read: the position held a value
	length uint64 // readLatest: log length (found and value: its last value)

	// Position model only: the acknowledged (slot, index).
	slot  uint64
	index uint32
}

// logState is an immutable log: a persistent list sharing its prefix with the state it grew
// from, so each step of the checker costs O(1) memory. hash covers the whole sequence.
type logState struct {
	parent *logState
	value  uint64
	length uint64
	hash   uint64
}

var emptyLog = &logState{hash: 0x9e3779b97f4a7c15}

func (s *logState) push(value uint64) *logState {
	h := s.hash ^ (value + 0x9e3779b97f4a7c15 + (s.hash << 6) + (s.hash >> 2))
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return &logState{parent: s, value: value, length: s.length + 1, hash: h}
}

// at returns the value at dense offset i. It walks back from the tail: reads in chaos runs ask
// for recent positions, so the walk is short in the common case.
func (s *logState) at(i uint64) (uint64, bool) {
	if i >= s.length {
		return 0, false
	}
	n := s
	for n.length > i+1 {
		n = n.parent
	}
	return n.value, true
}

func logEqual(a, b *logState) bool {
	for a != b {
		if a.length != b.length || a.hash != b.hash {
			return false
		}
		if a.value != b.value {
			return false
		}
		a, b = a.parent, b.parent
	}
	return true
}

func (s *logState) describe() string {
	const tail = 6
	var values []string
	n := s
	for i := 0; i < tail && n.length > 0; i++ {
		values = append([]string{fmt.Sprint(n.value)}, values...)
		n = n.parent
	}
	prefix := ""
	if n.length > 0 {
		prefix = "…, "
	}
	return fmt.Sprintf("len=%d [%s%s]", s.length, prefix, strings.Join(values, ", "))
}

// stepLog is the sequential specification of the append-only log. It returns every state the
// log may be in after the operation: none if the operation is illegal, two for an append whose
// outcome is unknown (it happened, or it never will).
func stepLog(state, input, output interface{}) []interface{} {
	s := state.(*logState)
	in := input.(modelInput)
	out := output.(modelOutput)
	switch in.kind {
	case KindAppend:
		if !out.known {
			return []interface{}{s, s.push(in.value)}
		}
		if out.offset != s.length {
			return nil
		}
		return []interface{}{s.push(in.value)}
	case KindRead:
		if !out.known {
			return []interface{}{s}
		}
		value, ok := s.at(in.offset)
		if ok != out.found || (ok && value != out.value) {
			return nil
		}
		return []interface{}{s}
	case KindReadLatest:
		if !out.known {
			return []interface{}{s}
		}
		if out.length != s.length || out.found != (s.length > 0) || (out.found && out.value != s.value) {
			return nil
		}
		return []interface{}{s}
	}
	return nil
}

func describeLogOperation(input, output interface{}) string {
	in := input.(modelInput)
	out := output.(modelOutput)
	switch in.kind {
	case KindAppend:
		if !out.known {
			return fmt.Sprintf("append(%d) -> ?", in.value)
		}
		return fmt.Sprintf("append(%d) -> %d", in.value, out.offset)
	case KindRead:
		switch {
		case !out.known:
			return fmt.Sprintf("read(%d) -> ?", in.offset)
		case !out.found:
			return fmt.Sprintf("read(%d) -> none", in.offset)
		}
		return fmt.Sprintf("read(%d) -> %d", in.offset, out.value)
	case KindReadLatest:
		if !out.found {
			return fmt.Sprintf("readLatest() -> %d, empty", out.length)
		}
		return fmt.Sprintf("readLatest() -> %d, last %d", out.length, out.value)
	}
	return fmt.Sprintf("%v -> %v", input, output)
}

// LogModel is the porcupine model of the append-only log over dense offsets.
func LogModel() porcupine.Model {
	nondeterministic := porcupine.NondeterministicModel{
		Init: func() []interface{} { return []interface{}{emptyLog} },
		Step: stepLog,
		Equal: func(a, b interface{}) bool {
			return logEqual(a.(*logState), b.(*logState))
		},
		Hash:              func(state interface{}) uint64 { return state.(*logState).hash },
		DescribeOperation: describeLogOperation,
		DescribeState:     func(state interface{}) string { return state.(*logState).describe() },
	}
	return nondeterministic.ToModel()
}

// position is a command's place in the log as the server acknowledges it.
type position struct {
	slot  uint64
	index uint32
	valid bool // false: nothing acknowledged yet
}

func (p position) less(o position) bool {
	if p.slot != o.slot {
		return p.slot < o.slot
	}
	return p.index < o.index
}

// PositionModel is the porcupine model used when dense offsets are unknown: the log order is
// the (Slot, Index) order, so a linearization must acknowledge positions in strictly increasing
// order. The state is the last position linearized. Gaps are allowed (no-op slots, commands of
// other clients, indeterminate appends), so it cannot see a lost command; the final-log checks
// do that.
func PositionModel() porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return position{} },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			last := state.(position)
			out := output.(modelOutput)
			if !out.known {
				return true, last
			}
			p := position{slot: out.slot, index: out.index, valid: true}
			if last.valid && !last.less(p) {
				return false, last
			}
			return true, p
		},
		Hash: func(state interface{}) uint64 {
			p := state.(position)
			return p.slot<<20 ^ uint64(p.index)
		},
		DescribeOperation: func(input, output interface{}) string {
			in := input.(modelInput)
			out := output.(modelOutput)
			if !out.known {
				return fmt.Sprintf("append(%d) -> ?", in.value)
			}
			return fmt.Sprintf("append(%d) -> %d.%d", in.value, out.slot, out.index)
		},
		DescribeState: func(state interface{}) string {
			p := state.(position)
			if !p.valid {
				return "none"
			}
			return fmt.Sprintf("last %d.%d", p.slot, p.index)
		},
	}
}
