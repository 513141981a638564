package core

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/mpaxos/mpaxos/codec"
)

// fieldKind says how Clone and AppendFingerprint treat a field.
type fieldKind uint8

const (
	fieldState  fieldKind = iota // cloned deeply and encoded in the fingerprint
	fieldConfig                  // configuration (or derived from it): shared, not fingerprinted
)

// knownFields lists every field of Replica, of Ready, and of every struct reachable from them,
// as "Type.field". TestCloneKnowsEveryField fails on a field missing here: whoever adds a field
// to Replica (or to a struct inside it) must handle it in clone.go (copy it in Clone if it holds
// a map, slice or pointer; encode it in AppendFingerprint) and then list it here.
var knownFields = map[string]fieldKind{
	"Replica.cfg": fieldConfig, "Replica.id": fieldState, "Replica.others": fieldConfig,
	"Replica.quorum": fieldConfig, "Replica.storage": fieldConfig,
	"Replica.promised": fieldState, "Replica.durablePromised": fieldState, "Replica.log": fieldState,
	"Replica.logStart": fieldState, "Replica.logEnd": fieldState, "Replica.run": fieldState,
	"Replica.commit": fieldState, "Replica.handedNext": fieldState, "Replica.applied": fieldState,
	"Replica.retainedBytes": fieldState, "Replica.snapshotSlot": fieldState, "Replica.catchUp": fieldState,
	"Replica.role": fieldState, "Replica.leader": fieldState, "Replica.ballot": fieldState,
	"Replica.highestSeen": fieldState, "Replica.phase1": fieldState, "Replica.preVote": fieldState,
	"Replica.next": fieldState, "Replica.inflightSum": fieldState, "Replica.progress": fieldState,
	"Replica.selfAckNext": fieldState, "Replica.flushNeeded": fieldState,
	"Replica.electionElapsed": fieldState, "Replica.electionTimeout": fieldState,
	"Replica.heartbeatElapsed": fieldState, "Replica.quorumElapsed": fieldState,
	"Replica.syncWaitTicks": fieldState,
	"Replica.unstable":      fieldState, "Replica.msgs": fieldState, "Replica.msgsAfter": fieldState,
	"Replica.savableCommit": fieldState, "Replica.savedCommit": fieldState, "Replica.savedPromised": fieldState,
	"Replica.readyOut": fieldState, "Replica.pendingInstall": fieldState,

	"slotState.ballot": fieldState, "slotState.value": fieldState, "slotState.durable": fieldState,
	"ackRun.ballot": fieldState, "ackRun.from": fieldState, "ackRun.next": fieldState,
	"catchUpState.inflight": fieldState, "catchUpState.ticks": fieldState, "catchUpState.wanted": fieldState,
	"phase1State.from": fieldState, "phase1State.promised": fieldState, "phase1State.count": fieldState,
	"phase1State.selfCounted": fieldState, "phase1State.recovered": fieldState,
	"phase1State.recoveredEnd": fieldState, "phase1State.elapsed": fieldState,
	"preVoteState.ballot": fieldState, "preVoteState.granted": fieldState, "preVoteState.count": fieldState,
	"peerProgress.id": fieldState, "peerProgress.ackNext": fieldState, "peerProgress.sendNext": fieldState,
	"peerProgress.idleTicks": fieldState, "peerProgress.heard": fieldState,

	"Ready.HardState": fieldState, "Ready.MustSaveHardState": fieldState, "Ready.Entries": fieldState,
	"Ready.MustSync": fieldState, "Ready.Messages": fieldState, "Ready.MessagesAfterPersist": fieldState,
	"Ready.Chosen": fieldState, "Ready.SnapshotSlot": fieldState, "Ready.commit": fieldState,
	"HardState.Promised": fieldState, "HardState.Commit": fieldState,

	"Ballot.Round": fieldState, "Ballot.Replica": fieldState,
	"Entry.Slot": fieldState, "Entry.Ballot": fieldState, "Entry.Value": fieldState,
	"Message.Type": fieldState, "Message.From": fieldState, "Message.To": fieldState,
	"Message.Ballot": fieldState, "Message.Slot": fieldState, "Message.Commit": fieldState,
	"Message.Count": fieldState, "Message.Values": fieldState, "Message.Entries": fieldState,
	"Message.Offset": fieldState, "Message.Total": fieldState, "Message.Checksum": fieldState,
	"Message.Data": fieldState,
}

// TestCloneKnowsEveryField walks Replica's and Ready's types with reflect and fails on any field
// knownFields does not list, and on any listed field that no longer exists.
func TestCloneKnowsEveryField(t *testing.T) {
	seen := map[string]bool{}
	visited := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		switch typ.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			walk(typ.Elem())
		case reflect.Map:
			walk(typ.Key())
			walk(typ.Elem())
		case reflect.Struct:
			if visited[typ] {
				return
			}
			visited[typ] = true
			for i := range typ.NumField() {
				f := typ.Field(i)
				name := typ.Name() + "." + f.Name
				seen[name] = true
				kind, ok := knownFields[name]
				if !ok {
					t.Errorf("field %s (%s) is unknown to Clone and AppendFingerprint: handle it in clone.go "+
						"(copy it in Clone if it holds a map, slice or pointer; encode it in AppendFingerprint), "+
						"then list it in knownFields", name, f.Type)
					continue
				}
				if kind == fieldState {
					walk(f.Type)
				}
			}
		}
	}
	walk(reflect.TypeFor[Replica]())
	walk(reflect.TypeFor[Ready]())
	for _, name := range slices.Sorted(maps.Keys(knownFields)) {
		if !seen[name] {
			t.Errorf("knownFields lists %s, which no longer exists: drop it (and its handling in clone.go)", name)
		}
	}
}

// dump is a canonical text of every fieldState field of v, reached by reflect alone (maps in key
// order, nil and empty alike): an independent oracle for Clone and AppendFingerprint.
func dump(v any) string {
	var b strings.Builder
	dumpValue(&b, reflect.ValueOf(v))
	return b.String()
}

func dumpValue(b *strings.Builder, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			b.WriteString("nil")
			return
		}
		dumpValue(b, v.Elem())
	case reflect.Struct:
		b.WriteString("{")
		for i := range v.NumField() {
			name := v.Type().Name() + "." + v.Type().Field(i).Name
			if knownFields[name] != fieldState {
				continue
			}
			b.WriteString(v.Type().Field(i).Name + ":")
			dumpValue(b, v.Field(i))
			b.WriteString(" ")
		}
		b.WriteString("}")
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			fmt.Fprintf(b, "%q", v.Bytes())
			return
		}
		b.WriteString("[")
		for i := range v.Len() {
			dumpValue(b, v.Index(i))
			b.WriteString(",")
		}
		b.WriteString("]")
	case reflect.Map:
		var entries []string
		for _, k := range v.MapKeys() {
			var kb, vb strings.Builder
			dumpValue(&kb, k)
			dumpValue(&vb, v.MapIndex(k))
			entries = append(entries, kb.String()+"="+vb.String())
		}
		sort.Strings(entries)
		b.WriteString("map[" + strings.Join(entries, ",") + "]")
	case reflect.Bool:
		fmt.Fprint(b, v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		fmt.Fprint(b, v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		fmt.Fprint(b, v.Uint())
	case reflect.String:
		fmt.Fprintf(b, "%q", v.String())
	default:
		panic(fmt.Sprintf("dump: %s of kind %s: teach dumpValue about it", v.Type(), v.Kind()))
	}
}

// zeroRand always draws 0: the explorer's stateless randomness, so a clone replays exactly.
type zeroRand struct{}

func (zeroRand) IntN(int) int { return 0 }

// cloneWorld is three replicas whose Readies persist asynchronously (a FIFO per replica), with
// random deliveries, drops, ticks, campaigns, proposals, persists and crashes: a cheap way to
// reach the many states Clone and AppendFingerprint must get right.
type cloneWorld struct {
	rng      *rand.Rand
	replicas []*Replica
	disks    []Persisted
	pending  [][]Ready
	network  []codec.Message
}

func newCloneWorld(t *testing.T, seed uint64) *cloneWorld {
	w := &cloneWorld{rng: rand.New(rand.NewPCG(seed, 1)), disks: make([]Persisted, 3), pending: make([][]Ready, 3)}
	for id := uint32(1); id <= 3; id++ {
		w.replicas = append(w.replicas, w.start(t, id))
	}
	return w
}

func (w *cloneWorld) start(t *testing.T, id uint32) *Replica {
	cfg := DefaultConfig(id, []uint32{1, 2, 3})
	cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.RetransmitTicks, cfg.Window = 3, 1, 2, 4
	cfg.Rand = zeroRand{}
	r, err := New(cfg, w.disks[id-1], nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// step runs one random event on replica i and takes its Readies.
func (w *cloneWorld) step(t *testing.T, i int) {
	r := w.replicas[i]
	switch w.rng.IntN(8) {
	case 0, 1, 2:
		for j, m := range w.network {
			if m.To == r.id {
				w.network = slices.Delete(w.network, j, j+1)
				if w.rng.IntN(4) > 0 {
					if err := r.Step(m); err != nil {
						t.Fatal(err)
					}
				}
				break
			}
		}
	case 3:
		r.Tick()
	case 4:
		if w.rng.IntN(4) == 0 {
			r.Campaign()
		}
	case 5:
		r.Propose([]byte{byte('a' + w.rng.IntN(26))})
	case 6:
		if len(w.pending[i]) > 0 {
			rd := w.pending[i][0]
			w.pending[i] = w.pending[i][1:]
			d := &w.disks[i]
			if rd.MustSaveHardState {
				d.HardState = rd.HardState
			}
			for _, e := range rd.Entries {
				d.Entries = slices.DeleteFunc(d.Entries, func(o codec.Entry) bool { return o.Slot == e.Slot })
				d.Entries = append(d.Entries, e)
			}
			w.network = append(w.network, rd.MessagesAfterPersist...)
			r.Advance(rd)
		}
	case 7:
		if w.rng.IntN(8) == 0 {
			w.pending[i] = nil
			w.replicas[i] = w.start(t, r.id)
		}
	}
	for w.replicas[i].HasReady() {
		rd := w.replicas[i].Ready()
		w.network = append(w.network, rd.Messages...)
		w.pending[i] = append(w.pending[i], rd)
	}
}

// TestCloneIsDeepAndFingerprintIsComplete: over many reachable states, a clone equals the
// original field by field; driving a clone leaves the original untouched (no shared mutable
// memory); and two replicas have equal fingerprints exactly when every state field is equal.
func TestCloneIsDeepAndFingerprintIsComplete(t *testing.T) {
	byFingerprint := map[string]string{}
	states := 0
	for seed := uint64(1); seed <= 40; seed++ {
		w := newCloneWorld(t, seed)
		for range 300 {
			i := w.rng.IntN(3)
			w.step(t, i)
			r := w.replicas[i]
			before := dump(r)
			clone := r.Clone(zeroRand{})
			if got := dump(clone); got != before {
				t.Fatalf("seed %d: clone differs from the original:\n got %s\nwant %s", seed, got, before)
			}
			fingerprint := string(r.AppendFingerprint(nil))
			if !bytes.Equal(clone.AppendFingerprint(nil), []byte(fingerprint)) {
				t.Fatalf("seed %d: clone's fingerprint differs from the original's", seed)
			}
			if other, ok := byFingerprint[fingerprint]; ok && other != before {
				t.Fatalf("seed %d: two states share a fingerprint: a field is missing from AppendFingerprint\n%s\n%s",
					seed, other, before)
			}
			byFingerprint[fingerprint] = before
			if states%7 == 0 {
				checkEveryLeafCounts(t, r, fingerprint)
			}
			states++
			// Drive the original replica's clone hard; the original must not change.
			w.replicas[i] = clone
			for range 5 {
				w.step(t, i)
			}
			if dump(r) != before {
				t.Fatalf("seed %d: driving a clone changed the original: Clone shares mutable memory", seed)
			}
		}
	}
	seenDumps := map[string]string{}
	for fingerprint, d := range byFingerprint {
		if other, ok := seenDumps[d]; ok && other != fingerprint {
			t.Fatalf("one state has two fingerprints: AppendFingerprint is not canonical\n%s", d)
		}
		seenDumps[d] = fingerprint
	}
	if len(byFingerprint) < 1000 {
		t.Fatalf("only %d distinct states of %d reached: the random walk is too narrow to test anything", len(byFingerprint), states)
	}
	t.Logf("%d states, %d distinct", states, len(byFingerprint))
}

// checkEveryLeafCounts changes, in a fresh clone of r, one scalar or byte string of its state
// at a time (every field knownFields marks fieldState, in every struct, slice element and map
// value) and fails if the fingerprint does not change: a field AppendFingerprint leaves out.
func checkEveryLeafCounts(t *testing.T, r *Replica, fingerprint string) {
	t.Helper()
	for leaf := 0; ; leaf++ {
		c, countdown := r.Clone(zeroRand{}), leaf
		path, found := mutateLeaf(reflect.ValueOf(c).Elem(), "Replica", &countdown)
		if !found {
			return
		}
		if string(c.AppendFingerprint(nil)) == fingerprint {
			t.Fatalf("changing %s leaves the fingerprint unchanged: AppendFingerprint misses it", path)
		}
	}
}

// mutateLeaf walks v (addressable) in a fixed order and changes the leaf *leaf counts down to;
// it returns the leaf's path and whether it was found.
func mutateLeaf(v reflect.Value, path string, leaf *int) (string, bool) {
	if v.CanAddr() && !v.CanSet() { // an unexported field: reach it through its address
		v = reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem()
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "", false
		}
		return mutateLeaf(v.Elem(), path, leaf)
	case reflect.Struct:
		for i := range v.NumField() {
			name := v.Type().Name() + "." + v.Type().Field(i).Name
			if knownFields[name] != fieldState {
				continue
			}
			if p, ok := mutateLeaf(v.Field(i), path+"."+v.Type().Field(i).Name, leaf); ok {
				return p, true
			}
		}
		return "", false
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			break // a byte string is one leaf
		}
		for i := range v.Len() {
			if p, ok := mutateLeaf(v.Index(i), fmt.Sprintf("%s[%d]", path, i), leaf); ok {
				return p, true
			}
		}
		return "", false
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].Uint() < keys[j].Uint() })
		for _, k := range keys {
			elem := reflect.New(v.Type().Elem()).Elem()
			elem.Set(v.MapIndex(k))
			if p, ok := mutateLeaf(elem, fmt.Sprintf("%s[%d]", path, k.Uint()), leaf); ok {
				v.SetMapIndex(k, elem)
				return p, true
			}
		}
		return "", false
	}
	if *leaf > 0 {
		*leaf--
		return "", false
	}
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Slice: // a byte string: replace it (stored values are shared, never written)
		v.SetBytes(append(bytes.Clone(v.Bytes()), 'x'))
	default:
		panic(fmt.Sprintf("mutateLeaf: %s of kind %s: teach it about this kind", path, v.Kind()))
	}
	return path, true
}
