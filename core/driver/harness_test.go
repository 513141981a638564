package driver

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// The tests drive real core replicas through the Driver with fake effects that record every
// effect as one line of text and complete nothing on their own: each test completes persists
// and snapshot operations when (and whether) its scenario says.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type persistCall struct {
	seq  uint64
	part Part
}

// fakeEffects records effects and holds the operations awaiting completion.
type fakeEffects struct {
	events   []string
	outbox   []codec.Message // sent and not yet delivered (deep copies)
	persists []persistCall   // not yet reported
	applied  []uint64        // every slot applied, in order
	installs []uint64

	files    map[uint64][]byte // durable local snapshots, by slot
	temps    map[uint64][]byte // a transfer's temporary file, by transfer
	reads    []SnapshotRead
	writes   []SnapshotWrite
	finishes []SnapshotFinish
	discards []SnapshotDiscard
}

func (f *fakeEffects) log(format string, args ...any) {
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

func (f *fakeEffects) Send(m *codec.Message) {
	f.log("send %v to %d", m.Type, m.To)
	f.outbox = append(f.outbox, cloneMessage(m))
}

func (f *fakeEffects) PersistEntries(seq uint64, entries []codec.Entry) {
	f.log("persist %d entries %d-%d", seq, entries[0].Slot, entries[len(entries)-1].Slot)
	f.persists = append(f.persists, persistCall{seq, PartEntries})
}

func (f *fakeEffects) SaveHardState(seq uint64, hs core.HardState) {
	f.log("persist %d hard state promised %v commit %d", seq, hs.Promised, hs.Commit)
	f.persists = append(f.persists, persistCall{seq, PartHardState})
}

func (f *fakeEffects) Apply(chosen []codec.Entry) {
	f.log("apply %d-%d", chosen[0].Slot, chosen[len(chosen)-1].Slot)
	for _, e := range chosen {
		f.applied = append(f.applied, e.Slot)
	}
}

func (f *fakeEffects) InstallSnapshot(slot uint64) {
	f.log("install %d", slot)
	f.installs = append(f.installs, slot)
}

func (f *fakeEffects) ReadSnapshot(read SnapshotRead) {
	f.log("read %d@%d for %d", read.Slot, read.Offset, read.Peer)
	f.reads = append(f.reads, read)
}

func (f *fakeEffects) WriteSnapshot(write SnapshotWrite) {
	f.log("write transfer %d @%d+%d", write.Transfer, write.Offset, len(write.Data))
	f.writes = append(f.writes, write)
}

func (f *fakeEffects) FinishSnapshot(finish SnapshotFinish) {
	f.log("finish transfer %d slot %d", finish.Transfer, finish.Slot)
	f.finishes = append(f.finishes, finish)
}

func (f *fakeEffects) DiscardSnapshot(discard SnapshotDiscard) {
	f.log("discard transfer %d: %v", discard.Transfer, discard.Reason)
	f.discards = append(f.discards, discard)
	delete(f.temps, discard.Transfer)
}

func (f *fakeEffects) has(event string) bool {
	return slices.Contains(f.events, event)
}

// index returns the position of the first event starting with prefix, -1 if none.
func (f *fakeEffects) index(prefix string) int {
	return slices.IndexFunc(f.events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

func cloneMessage(m *codec.Message) codec.Message {
	cp := *m
	cp.Data = slices.Clone(m.Data)
	if m.Values != nil {
		cp.Values = make([][]byte, len(m.Values))
		for i, v := range m.Values {
			cp.Values[i] = slices.Clone(v)
		}
	}
	if m.Entries != nil {
		cp.Entries = make([]codec.Entry, len(m.Entries))
		for i, e := range m.Entries {
			cp.Entries[i] = codec.Entry{Slot: e.Slot, Ballot: e.Ballot, Value: slices.Clone(e.Value)}
		}
	}
	return cp
}

// node is one replica: core, its driver and the fake effects.
type node struct {
	id uint32
	r  *core.Replica
	d  *Driver
	fx *fakeEffects
}

func newNode(t *testing.T, id uint32, peers []uint32, cfg Config) *node {
	t.Helper()
	cc := core.DefaultConfig(id, peers)
	cc.Rand = rand.New(rand.NewPCG(uint64(id), 7))
	r, err := core.New(cc, core.Persisted{}, emptyStorage{})
	if err != nil {
		t.Fatal(err)
	}
	fx := &fakeEffects{files: map[uint64][]byte{}, temps: map[uint64][]byte{}}
	d, err := New(cfg, r, fx)
	if err != nil {
		t.Fatal(err)
	}
	return &node{id: id, r: r, d: d, fx: fx}
}

type emptyStorage struct{}

func (emptyStorage) Chosen(_ uint64, _, _ int, dst [][]byte) ([][]byte, error) { return dst, nil }

// step feeds m and drives.
func (n *node) step(t *testing.T, m codec.Message) {
	t.Helper()
	if err := n.d.Step(&m); err != nil {
		t.Fatalf("replica %d: Step(%v): %v", n.id, m.Type, err)
	}
	n.d.Drive()
}

// persistAll reports every persist part asked for so far, in the order asked.
func (n *node) persistAll() {
	for len(n.fx.persists) > 0 {
		p := n.fx.persists[0]
		n.fx.persists = n.fx.persists[1:]
		n.d.Persisted(p.seq, p.part)
		n.d.Drive()
	}
}

// persist reports the first pending persist of seq and part.
func (n *node) persist(t *testing.T, seq uint64, part Part) {
	t.Helper()
	i := slices.Index(n.fx.persists, persistCall{seq, part})
	if i < 0 {
		t.Fatalf("replica %d: persist %d %v was not asked for (asked: %v)", n.id, seq, part, n.fx.persists)
	}
	n.fx.persists = slices.Delete(n.fx.persists, i, i+1)
	n.d.Persisted(seq, part)
	n.d.Drive()
}

// completeSnapshotOperations completes every snapshot operation asked for so far, in order,
// against the node's files; failWrite and failFinish may fail one.
func (n *node) completeSnapshotOperations(failWrite func(SnapshotWrite) error, failFinish func(SnapshotFinish) error) bool {
	fx, moved := n.fx, false
	for len(fx.reads) > 0 {
		read := fx.reads[0]
		fx.reads = fx.reads[1:]
		slot := read.Slot
		if slot == 0 {
			for s := range fx.files {
				slot = max(slot, s)
			}
		}
		file, ok := fx.files[slot]
		var chunk SnapshotChunk
		var err error
		if !ok || read.Offset > uint64(len(file)) {
			err = fmt.Errorf("no snapshot %d", slot)
		} else {
			end := min(uint64(len(file)), read.Offset+uint64(read.BytesMax))
			chunk = SnapshotChunk{Slot: slot, Total: uint64(len(file)), Checksum: crc32.Checksum(file, castagnoli),
				Data: file[read.Offset:end]}
		}
		n.d.SnapshotReadDone(read, chunk, err)
		moved = true
	}
	for len(fx.writes) > 0 {
		w := fx.writes[0]
		fx.writes = fx.writes[1:]
		var err error
		if failWrite != nil {
			err = failWrite(w)
		}
		if err == nil {
			file := fx.temps[w.Transfer]
			if w.Offset == 0 {
				file = nil
			}
			fx.temps[w.Transfer] = append(file[:w.Offset], w.Data...)
		}
		n.d.SnapshotWritten(w, err)
		moved = true
	}
	for len(fx.finishes) > 0 {
		f := fx.finishes[0]
		fx.finishes = fx.finishes[1:]
		file := fx.temps[f.Transfer]
		var err error
		if failFinish != nil {
			err = failFinish(f)
		}
		if err == nil && (uint64(len(file)) != f.Total || crc32.Checksum(file, castagnoli) != f.Checksum) {
			err = fmt.Errorf("received %d bytes with checksum %08x, want %d with %08x",
				len(file), crc32.Checksum(file, castagnoli), f.Total, f.Checksum)
		}
		if err == nil {
			fx.files[f.Slot] = file
			delete(fx.temps, f.Transfer)
			fx.log("durable snapshot %d", f.Slot)
		}
		n.d.SnapshotFinished(f, err)
		moved = true
	}
	n.d.Drive()
	return moved
}

// cluster is replicas joined by a network the test controls.
type cluster struct {
	t     *testing.T
	nodes map[uint32]*node
	ids   []uint32
	// drop, if set, loses a message instead of delivering it.
	drop func(m *codec.Message) bool
	// hold, if set, keeps a replica's persists and snapshot operations from completing.
	hold func(id uint32) bool
	// failWrite / failFinish, if set, may fail a snapshot operation.
	failWrite  func(SnapshotWrite) error
	failFinish func(SnapshotFinish) error
}

func newCluster(t *testing.T, size int, cfg Config) *cluster {
	c := &cluster{t: t, nodes: map[uint32]*node{}}
	for id := uint32(1); id <= uint32(size); id++ {
		c.ids = append(c.ids, id)
	}
	for _, id := range c.ids {
		c.nodes[id] = newNode(t, id, c.ids, cfg)
	}
	return c
}

// settle delivers messages and completes every operation not held until nothing moves.
func (c *cluster) settle() {
	c.t.Helper()
	for round := 0; ; round++ {
		if round > 1000 {
			c.t.Fatal("the cluster does not settle")
		}
		moved := false
		for _, id := range c.ids {
			n := c.nodes[id]
			n.d.Drive()
			if c.hold == nil || !c.hold(id) {
				if len(n.fx.persists) > 0 {
					n.persistAll()
					moved = true
				}
				if n.completeSnapshotOperations(c.failWrite, c.failFinish) {
					moved = true
				}
			}
			outbox := n.fx.outbox
			n.fx.outbox = nil
			for i := range outbox {
				m := &outbox[i]
				moved = true
				if c.drop != nil && c.drop(m) {
					continue
				}
				if err := c.nodes[m.To].d.Step(m); err != nil {
					c.t.Fatalf("replica %d: Step(%v from %d): %v", m.To, m.Type, m.From, err)
				}
			}
		}
		if !moved {
			return
		}
	}
}

// tick ticks every replica once and settles.
func (c *cluster) tick(times int) {
	for range times {
		for _, id := range c.ids {
			c.nodes[id].d.Tick()
		}
		c.settle()
	}
}

// elect makes replica 1 the leader.
func (c *cluster) elect() *node {
	c.t.Helper()
	leader := c.nodes[1]
	leader.r.Campaign()
	c.settle()
	if !leader.r.Status().IsLeader {
		c.t.Fatalf("replica 1 did not become leader: %+v", leader.r.Status())
	}
	return leader
}

// propose proposes count values at the leader and settles.
func (c *cluster) propose(leader *node, count int) {
	c.t.Helper()
	for i := range count {
		if _, err := leader.r.Propose([]byte(fmt.Sprintf("value %d", i))); err != nil {
			c.t.Fatal(err)
		}
		c.settle()
	}
}

// ballot1 is replica 1's first ballot, for scripted messages.
var ballot1 = codec.Ballot{Round: 1, Replica: 1}

// accept is an Accept of values from slot, from replica 1 in ballot1, carrying commit.
func accept(to uint32, slot, commit uint64, values ...string) codec.Message {
	m := codec.Message{Type: codec.TypeAccept, From: 1, To: to, Ballot: ballot1, Slot: slot, Commit: commit}
	for _, v := range values {
		m.Values = append(m.Values, []byte(v))
	}
	return m
}
