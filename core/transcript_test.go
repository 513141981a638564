package core

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// Transcripts: scripted multi-step scenarios in testdata/*.txt, in the style of etcd's raft
// testdata. Each block is an optional run of "#" lines saying why, one command, "----", and
// the output the command must produce; blocks are separated by blank lines.
//
//	go test ./core -run TestTranscripts -rewrite   # rewrite the expected output (then review the diff)
//
// Commands (replica ids are 1..n):
//
//	cluster N            N replicas; every Ready is persisted, sent, applied and advanced at once
//	hold ID              ID's Readies stay pending: Messages leave, the persist waits for "persist"
//	persist ID           the oldest pending Ready of ID becomes durable (after-persist messages
//	                     leave, Chosen is applied, Advance)
//	release ID           persist every pending Ready of ID and stop holding
//	crash ID             ID loses every pending Ready and restarts from its disk
//	campaign ID | tick ID [N] | propose ID VALUE (VALUE "-" is a no-op)
//	deliver [type=T] [from=A] [to=B] [count=K]   deliver matching messages, oldest first
//	drop [type=T] [from=A] [to=B]                lose matching messages
//	stabilize            deliver everything until nothing is left
//	cut A->B | heal      lose every message from A to B as it is sent (a one-way cut) | undo all cuts
//	status ID... | net | disk ID | applied ID
var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the core transcripts")

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) { runTranscript(t, file) })
	}
}

type transcriptBlock struct {
	comments []string
	command  string
	line     int
	want     []string
}

func parseTranscript(t *testing.T, file string) []transcriptBlock {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []transcriptBlock
	var cur *transcriptBlock
	inOutput := false
	scanner := bufio.NewScanner(f)
	for n := 1; scanner.Scan(); n++ {
		line := scanner.Text()
		switch {
		case inOutput && line == "":
			inOutput, cur = false, nil
		case inOutput:
			cur.want = append(cur.want, line)
		case line == "":
		case strings.HasPrefix(line, "#"):
			if cur == nil {
				blocks = append(blocks, transcriptBlock{})
				cur = &blocks[len(blocks)-1]
			}
			cur.comments = append(cur.comments, line)
		case line == "----":
			if cur == nil || cur.command == "" {
				t.Fatalf("%s:%d: ---- without a command", file, n)
			}
			inOutput = true
		default:
			if cur == nil || cur.command != "" {
				blocks = append(blocks, transcriptBlock{})
				cur = &blocks[len(blocks)-1]
			}
			cur.command, cur.line = line, n
		}
	}
	return blocks
}

func runTranscript(t *testing.T, file string) {
	blocks := parseTranscript(t, file)
	w := &transcriptWorld{t: t}
	var out strings.Builder
	for i := range blocks {
		b := &blocks[i]
		got := w.run(b.command)
		if len(got) == 0 {
			got = []string{"ok"}
		}
		if *rewrite {
			b.want = got
		} else if !slices.Equal(got, b.want) {
			t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", file, b.line, b.command,
				strings.Join(got, "\n"), strings.Join(b.want, "\n"))
		}
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", b.command, strings.Join(b.want, "\n"))
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(strings.TrimSuffix(out.String(), "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// transcriptNode is one replica with an in-memory disk.
type transcriptNode struct {
	id      uint32
	r       *Replica
	hard    HardState
	entries map[uint64]codec.Entry
	pending []Ready
	hold    bool
	applied []string
}

type transcriptWorld struct {
	t     *testing.T
	peers []uint32
	cuts  map[[2]uint32]bool
	nodes []*transcriptNode
	net   []codec.Message
	out   []string
}

func (w *transcriptWorld) printf(format string, args ...any) {
	w.out = append(w.out, fmt.Sprintf(format, args...))
}

func (w *transcriptWorld) node(arg string) *transcriptNode {
	id, err := strconv.Atoi(arg)
	if err != nil || id < 1 || id > len(w.nodes) {
		w.t.Fatalf("no replica %q", arg)
	}
	return w.nodes[id-1]
}

func (w *transcriptWorld) run(command string) []string {
	w.out = nil
	f := strings.Fields(command)
	args := f[1:]
	switch f[0] {
	case "cluster":
		n, _ := strconv.Atoi(args[0])
		for i := 1; i <= n; i++ {
			w.peers = append(w.peers, uint32(i))
		}
		for _, id := range w.peers {
			nd := &transcriptNode{id: id, entries: map[uint64]codec.Entry{}}
			w.nodes = append(w.nodes, nd)
			w.start(nd)
		}
	case "cut":
		from, to, _ := strings.Cut(args[0], "->")
		if w.cuts == nil {
			w.cuts = map[[2]uint32]bool{}
		}
		w.cuts[[2]uint32{w.node(from).id, w.node(to).id}] = true
	case "heal":
		w.cuts = nil
	case "hold":
		w.node(args[0]).hold = true
	case "persist":
		nd := w.node(args[0])
		if len(nd.pending) == 0 {
			w.printf("%d: nothing pending", nd.id)
		} else {
			w.persist(nd)
		}
	case "release":
		nd := w.node(args[0])
		for len(nd.pending) > 0 {
			w.persist(nd)
		}
		nd.hold = false
	case "crash":
		nd := w.node(args[0])
		w.printf("%d: crash, %d pending Readies lost", nd.id, len(nd.pending))
		nd.pending, nd.hold, nd.applied = nil, false, nil
		w.start(nd)
	case "campaign":
		w.node(args[0]).r.Campaign()
	case "tick":
		nd, count := w.node(args[0]), 1
		if len(args) > 1 {
			count, _ = strconv.Atoi(args[1])
		}
		for range count {
			nd.r.Tick()
			w.process()
		}
	case "propose":
		nd := w.node(args[0])
		value := []byte(args[1])
		if args[1] == "-" {
			value = nil // a no-op
		}
		slot, err := nd.r.Propose(value)
		if err != nil {
			w.printf("%d: propose %s: %v", nd.id, args[1], err)
		} else {
			w.printf("%d: propose %s at slot %d", nd.id, args[1], slot)
		}
	case "deliver", "drop":
		w.deliver(f[0] == "deliver", args)
	case "stabilize":
		for w.process(); len(w.net) > 0; w.process() {
			w.deliver(true, nil)
		}
	case "status":
		for _, a := range args {
			st := w.node(a).r.Status()
			w.printf("%d: %s ballot=%s promised=%s leader=%d commit=%d applied=%d",
				st.ID, w.node(a).r.role, fmtBallot(st.Ballot), fmtBallot(st.Promised), st.Leader, st.Commit, st.Applied)
		}
	case "net":
		for _, m := range w.net {
			w.printf("%s", fmtMessage(m))
		}
	case "disk":
		nd := w.node(args[0])
		w.printf("%d: promised=%s commit=%d", nd.id, fmtBallot(nd.hard.Promised), nd.hard.Commit)
		for _, s := range sortedKeys(nd.entries) {
			e := nd.entries[s]
			w.printf("%d: slot %d = %q in %s", nd.id, s, e.Value, fmtBallot(e.Ballot))
		}
	case "applied":
		nd := w.node(args[0])
		w.printf("%d: applied %q", nd.id, nd.applied)
	default:
		w.t.Fatalf("unknown transcript command %q", command)
	}
	w.process()
	return w.out
}

func (w *transcriptWorld) start(nd *transcriptNode) {
	p := Persisted{HardState: nd.hard}
	for _, s := range sortedKeys(nd.entries) {
		p.Entries = append(p.Entries, nd.entries[s])
	}
	r, err := New(testConfig(nd.id, w.peers), p, nil)
	if err != nil {
		w.t.Fatalf("start %d: %v", nd.id, err)
	}
	nd.r = r
}

// process takes every replica's Readies: Messages leave at once; unless the replica is held,
// the persist completes at once too.
func (w *transcriptWorld) process() {
	for again := true; again; {
		again = false
		for _, nd := range w.nodes {
			if !nd.r.HasReady() {
				continue
			}
			again = true
			rd := nd.r.Ready()
			for _, m := range rd.Messages {
				w.send(m)
			}
			nd.pending = append(nd.pending, rd)
			if !nd.hold {
				w.persist(nd)
			}
		}
	}
}

func (w *transcriptWorld) persist(nd *transcriptNode) {
	rd := nd.pending[0]
	nd.pending = nd.pending[1:]
	if rd.MustSaveHardState && rd.HardState.Promised != nd.hard.Promised {
		w.printf("%d: persist promised=%s", nd.id, fmtBallot(rd.HardState.Promised))
	}
	if rd.MustSaveHardState {
		nd.hard = rd.HardState
	}
	for _, e := range rd.Entries {
		nd.entries[e.Slot] = e
		w.printf("%d: persist slot %d = %q in %s", nd.id, e.Slot, e.Value, fmtBallot(e.Ballot))
	}
	for _, m := range rd.MessagesAfterPersist {
		w.send(m)
	}
	for _, e := range rd.Chosen {
		nd.applied = append(nd.applied, string(e.Value))
		w.printf("%d: apply slot %d = %q", nd.id, e.Slot, e.Value)
	}
	nd.r.Advance(rd)
}

func (w *transcriptWorld) send(m codec.Message) {
	if w.cuts[[2]uint32{m.From, m.To}] {
		w.printf("cut %s", fmtMessage(m))
		return
	}
	w.net = append(w.net, m)
	w.printf("%s", fmtMessage(m))
}

func (w *transcriptWorld) deliver(deliver bool, args []string) {
	match := func(m codec.Message) bool { return true }
	count := -1
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "type":
			prev := match
			match = func(m codec.Message) bool { return prev(m) && m.Type.String() == v }
		case "from":
			id, _ := strconv.Atoi(v)
			prev := match
			match = func(m codec.Message) bool { return prev(m) && m.From == uint32(id) }
		case "to":
			id, _ := strconv.Atoi(v)
			prev := match
			match = func(m codec.Message) bool { return prev(m) && m.To == uint32(id) }
		case "count":
			count, _ = strconv.Atoi(v)
		default:
			w.t.Fatalf("unknown filter %q", a)
		}
	}
	var chosen []codec.Message
	kept := w.net[:0]
	for _, m := range w.net {
		if count != 0 && match(m) {
			chosen = append(chosen, m)
			count--
		} else {
			kept = append(kept, m)
		}
	}
	w.net = kept
	for _, m := range chosen {
		if !deliver {
			w.printf("dropped %s", fmtMessage(m))
			continue
		}
		w.printf("deliver %s", fmtMessage(m))
		if err := w.nodes[m.To-1].r.Step(m); err != nil {
			w.printf("%d: refused: %v", m.To, err)
		}
		w.process()
	}
}

func fmtBallot(b codec.Ballot) string {
	if b == ChosenBallot {
		return "chosen"
	}
	return fmt.Sprintf("(%d,%d)", b.Round, b.Replica)
}

func fmtMessage(m codec.Message) string {
	s := fmt.Sprintf("%d->%d %s", m.From, m.To, m.Type)
	switch m.Type {
	case codec.TypePrepare, codec.TypePreVote:
		s += fmt.Sprintf(" %s slot=%d", fmtBallot(m.Ballot), m.Slot)
	case codec.TypePromise:
		s += fmt.Sprintf(" %s slot=%d commit=%d", fmtBallot(m.Ballot), m.Slot, m.Commit)
		for _, e := range m.Entries {
			s += fmt.Sprintf(" [%d %q %s]", e.Slot, e.Value, fmtBallot(e.Ballot))
		}
	case codec.TypeAccept:
		s += fmt.Sprintf(" %s slot=%d commit=%d values=%q", fmtBallot(m.Ballot), m.Slot, m.Commit, m.Values)
	case codec.TypeAccepted, codec.TypeNack:
		s += fmt.Sprintf(" %s slot=%d", fmtBallot(m.Ballot), m.Slot)
	case codec.TypeHeartbeat:
		s += fmt.Sprintf(" %s commit=%d", fmtBallot(m.Ballot), m.Commit)
	case codec.TypeHeartbeatReply:
		s += fmt.Sprintf(" %s slot=%d commit=%d", fmtBallot(m.Ballot), m.Slot, m.Commit)
	case codec.TypePreVoteReply:
		s += fmt.Sprintf(" %s granted=%t", fmtBallot(m.Ballot), m.Count == 1)
	case codec.TypeCatchUpRequest:
		s += fmt.Sprintf(" slot=%d count=%d", m.Slot, m.Count)
	case codec.TypeCatchUpReply:
		s += fmt.Sprintf(" slot=%d commit=%d count=%d values=%q", m.Slot, m.Commit, m.Count, m.Values)
	}
	return s
}

func sortedKeys(m map[uint64]codec.Entry) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
