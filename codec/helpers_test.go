package codec

import (
	"bytes"
	"fmt"
	"math/rand/v2"
)

// peerTypes lists every MsgType carried by Message.
var peerTypes = []MsgType{
	TypePrepare, TypePromise, TypeAccept, TypeAccepted, TypeNack, TypeHeartbeat,
	TypeHeartbeatReply, TypeCatchUpRequest, TypeCatchUpReply, TypeSnapshotChunk,
	TypePreVote, TypePreVoteReply,
}

// randUint64 favours edge values, since bugs live at 0 and at the top of the range.
func randUint64(r *rand.Rand) uint64 {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return ^uint64(0) - uint64(r.IntN(3))
	case 2:
		return uint64(r.IntN(300))
	}
	return r.Uint64()
}

func randUint32(r *rand.Rand) uint32 { return uint32(randUint64(r)) }

func randBallot(r *rand.Rand) Ballot {
	b := Ballot{Round: randUint64(r), Replica: randUint32(r)}
	if b.IsZero() {
		b.Round = 1
	}
	return b
}

// randBytes returns nil for empty (what decoders return), sometimes compressible bytes.
func randBytes(r *rand.Rand, max int) []byte {
	n := r.IntN(max + 1)
	if n == 0 || r.IntN(8) == 0 {
		return nil
	}
	b := make([]byte, n)
	if r.IntN(2) == 0 {
		for i := range b {
			b[i] = byte(r.IntN(4)) // compressible
		}
	} else {
		for i := range b {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

func randCommands(r *rand.Rand, max int) []Command {
	cmds := make([]Command, 1+r.IntN(max))
	for i := range cmds {
		seq := randUint64(r)
		floor := seq - min(seq, randUint64(r)%(1<<uint(r.IntN(20))))
		if r.IntN(8) == 0 {
			floor = seq - min(seq, randUint64(r)) // any floor up to seq, often far below it
		}
		cmds[i] = Command{ClientID: randUint64(r), Seq: seq, SeqFloor: floor, Payload: randBytes(r, 64)}
	}
	return cmds
}

// randValue returns a slot value: a real batch, a no-op, or arbitrary bytes (the frame layer
// does not look inside values).
func randValue(r *rand.Rand) []byte {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return randBytes(r, 200)
	}
	return AppendBatch(nil, randCommands(r, 40))
}

// randMessage builds a message of type t that satisfies every consistency rule, with only the
// fields t carries set.
func randMessage(r *rand.Rand, t MsgType) Message {
	m := Message{Type: t, From: randUint32(r), To: randUint32(r)}
	f := fieldsOf(t)
	if f&fieldBallot != 0 {
		m.Ballot = randBallot(r)
	}
	if f&fieldSlot != 0 {
		m.Slot = randUint64(r)
	}
	if f&fieldCommit != 0 {
		m.Commit = randUint64(r)
	}
	if f&fieldCount != 0 {
		m.Count = randUint64(r)
	}
	switch t {
	case TypeAccept, TypeCatchUpReply:
		n := r.IntN(6)
		if t == TypeAccept {
			n++
		}
		if m.Slot > ^uint64(0)-uint64(n) {
			m.Slot = ^uint64(0) - uint64(n)
		}
		for range n {
			m.Values = append(m.Values, randValue(r))
		}
	case TypePromise:
		n := r.IntN(6)
		slot := m.Slot
		if slot > ^uint64(0)-1000 {
			slot = ^uint64(0) - 1000
			m.Slot = slot
		}
		for range n {
			slot += 1 + uint64(r.IntN(5))
			b := m.Ballot
			switch r.IntN(3) {
			case 0:
				if b.Round > 1 {
					b.Round = 1 + r.Uint64N(b.Round-1)
				}
			case 1:
				b = randBallot(r) // e.g. core's all-ones ballot for values learned as chosen
			}
			m.Entries = append(m.Entries, Entry{Slot: slot, Ballot: b, Value: randValue(r)})
		}
	case TypePreVoteReply:
		m.Count = uint64(r.IntN(2))
	case TypeSnapshotChunk:
		m.Data = randBytes(r, 300)
		m.Offset = uint64(r.IntN(1 << 20))
		m.Total = m.Offset + uint64(len(m.Data)) + uint64(r.IntN(1<<20))
		m.Checksum = r.Uint32()
	}
	return m
}

// diffMessage describes the first difference between want and got, "" if none. Empty and nil
// slices are equal: the wire does not tell them apart.
func diffMessage(want, got *Message) string {
	if want.Type != got.Type || want.From != got.From || want.To != got.To || want.Ballot != got.Ballot ||
		want.Slot != got.Slot || want.Commit != got.Commit || want.Count != got.Count ||
		want.Offset != got.Offset || want.Total != got.Total || want.Checksum != got.Checksum {
		return fmt.Sprintf("scalars differ:\nwant %+v\ngot  %+v", *want, *got)
	}
	if !bytes.Equal(want.Data, got.Data) {
		return "Data differs"
	}
	if len(want.Values) != len(got.Values) {
		return fmt.Sprintf("len(Values) want %d got %d", len(want.Values), len(got.Values))
	}
	for i := range want.Values {
		if !bytes.Equal(want.Values[i], got.Values[i]) {
			return fmt.Sprintf("Values[%d] differs", i)
		}
	}
	if len(want.Entries) != len(got.Entries) {
		return fmt.Sprintf("len(Entries) want %d got %d", len(want.Entries), len(got.Entries))
	}
	for i := range want.Entries {
		w, g := want.Entries[i], got.Entries[i]
		if w.Slot != g.Slot || w.Ballot != g.Ballot || !bytes.Equal(w.Value, g.Value) {
			return fmt.Sprintf("Entries[%d] differs: want %+v got %+v", i, w, g)
		}
	}
	return ""
}

// smallLimits make every limit reachable by small inputs (fuzzing, limit tests).
func smallLimits() Limits {
	return Limits{
		FrameBytesMax:     1 << 20,
		PayloadBytesMax:   4 << 10,
		BatchCommandsMax:  256,
		ValuesMax:         64,
		EntriesMax:        64,
		ValueBytesMax:     64 << 10,
		CompressThreshold: 256,
	}
}
