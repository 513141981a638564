// Package planted proves that core's tests can fail: each entry below plants one bug in core
// (through the go command's -overlay, so the tree is never edited) and runs the catchers — the
// transcripts and unit tests, the simulator, the exhaustive explorer — against it. Every
// planted bug must be caught by at least one of them; the table printed says which caught it,
// after how many seeds or at what depth, and how long it took.
//
//	make planted                                   # every bug (about half an hour on 2 cores)
//	MPAXOS_PLANTED=1 go test -v ./tests/planted -run 'TestPlantedBugs/own-vote'   # one bug
package planted

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// mutation replaces old with new, once, in file (relative to the module root); also, when
// set, also2 with new2 in the same file (a bug whose assertion must go too).
type mutation struct {
	name       string
	file       string
	old, new   string
	also, new2 string
}

// The planted bugs. Each old string must occur exactly once in its file: a stale mutation
// fails the test rather than silently planting nothing.
var mutations = []mutation{
	{name: "lead-before-own-promise-durable", file: "core/proposer.go",
		old:  "if r.phase1.count < r.quorum || !r.phase1.selfCounted {",
		new:  "if r.phase1.count < r.quorum {",
		also: "if r.promised != r.ballot || r.durablePromised != r.ballot {",
		new2: "if r.promised != r.ballot {"},
	{name: "acks-counted-across-ballots", file: "core/proposer.go",
		old: "if r.role != roleLeader || m.Ballot != r.ballot {\n\t\treturn\n\t}\n\tr.recordAck(m.From, m.Slot)",
		new: "if r.role != roleLeader {\n\t\treturn\n\t}\n\tr.recordAck(m.From, m.Slot)"},
	{name: "own-vote-counted-for-older-ballot", file: "core/proposer.go",
		old: "r.selfAckNext < r.next && st.durable == r.ballot;",
		new: "r.selfAckNext < r.next && !st.durable.IsZero();"},
	{name: "self-promise-counted-before-durable", file: "core/proposer.go",
		old: "if r.role != roleCandidate || r.phase1.selfCounted || r.durablePromised != r.ballot {",
		new: "if r.role != roleCandidate || r.phase1.selfCounted || r.promised != r.ballot {"},
	{name: "promise-sent-before-persist", file: "core/acceptor.go",
		old: "\tr.msgsAfter = append(r.msgsAfter, reply)\n}\n\n// promise raises",
		new: "\tr.msgs = append(r.msgs, reply)\n}\n\n// promise raises"},
	{name: "phase1-keeps-lowest-ballot", file: "core/proposer.go",
		old: "if cur, ok := r.phase1.recovered[e.Slot]; ok && !cur.Ballot.Less(e.Ballot) {",
		new: "if cur, ok := r.phase1.recovered[e.Slot]; ok && cur.Ballot.Less(e.Ballot) {"},
	{name: "accept-below-promise", file: "core/acceptor.go",
		old: "func (r *Replica) onAccept(m *codec.Message) {\n\tif m.Ballot.Less(r.promised) {",
		new: "func (r *Replica) onAccept(m *codec.Message) {\n\tif m.Ballot.Less(r.promised) && false {"},
	{name: "learn-commit-ignores-ballot", file: "core/learner.go",
		old: "if st == nil || st.ballot != b && st.ballot != ChosenBallot {",
		new: "if st == nil {"},
	{name: "restart-forgets-accepted-ballots", file: "core/replica.go",
		old: "if e.Ballot != ChosenBallot && r.promised.Less(e.Ballot) {\n\t\t\tr.promised = e.Ballot",
		new: "if false {\n\t\t\tr.promised = e.Ballot"},
	{name: "commit-saved-before-entries-durable", file: "core/learner.go",
		old: "r.savableCommit = max(r.savableCommit, rd.commit)",
		new: "r.savableCommit = max(r.savableCommit, r.commit)"},
	{name: "catch-up-serves-unchosen", file: "core/learner.go",
		old: "\tend := r.commit\n\tif m.Slot < end && end-m.Slot > count {",
		new: "\tend := r.logEnd\n\tif m.Slot < end && end-m.Slot > count {"},
	{name: "noop-instead-of-recovered-value", file: "core/proposer.go",
		old: "if e, ok := r.phase1.recovered[s]; ok {\n\t\t\tv = e.Value",
		new: "if e, ok := r.phase1.recovered[s]; ok && e.Ballot == ChosenBallot {\n\t\t\tv = e.Value"},
	{name: "phase1-range-stops-below-top", file: "core/proposer.go",
		old: "r.next = max(r.commit, r.phase1.recoveredEnd)",
		new: "r.next = max(r.commit, r.phase1.recoveredEnd-min(r.phase1.recoveredEnd, 1))"},
	{name: "no-check-quorum", file: "core/election.go",
		old: "\tif heard < r.quorum {\n\t\tr.stepDown()",
		new: "\tif heard < 0 {\n\t\tr.stepDown()"},
	{name: "prevote-always-granted", file: "core/election.go",
		old: "\tif !heardLeader {\n\t\treply.Count = 1",
		new: "\tif heardLeader || !heardLeader {\n\t\treply.Count = 1"},
	{name: "no-disk-stall-step-down", file: "core/proposer.go",
		old: "\tif r.diskStalled() {\n\t\tr.stepDown() // our votes cannot count",
		new: "\tif false {\n\t\tr.stepDown() // our votes cannot count"},
	// core/driver, the Ready handling the pipeline and the simulator share.
	{name: "driver-acks-before-persist", file: "core/driver/driver.go",
		old: "\tfor i := range rd.Messages {\n\t\td.effects.Send(&rd.Messages[i])\n\t}",
		new: "\trd.Messages = append(rd.Messages, rd.MessagesAfterPersist...)\n\trd.MessagesAfterPersist = nil\n" +
			"\tfor i := range rd.Messages {\n\t\td.effects.Send(&rd.Messages[i])\n\t}"},
	{name: "driver-advances-before-persist", file: "core/driver/driver.go",
		old:  "\tp := pendingReady{rd: rd, seq: d.nextSeq}",
		new:  "\td.r.Advance(rd)\n\tp := pendingReady{rd: rd, seq: d.nextSeq}",
		also: "\td.r.Advance(*rd)\n",
		new2: "\t// advanced when taken\n"},
}

// catcher is one test command run against a planted bug; detail pulls the seed, depth or
// test name that caught it out of the output.
type catcher struct {
	name   string
	args   []string
	detail *regexp.Regexp
}

var catchers = []catcher{
	{"core tests", []string{"test", "-count=1", "-tags", "invariants", "./core"},
		regexp.MustCompile(`--- FAIL: (\S+)`)},
	{"simulator", []string{"test", "-count=1", "-tags", "invariants", "./core/sim", "-run", "^TestSim$", "-seeds", "5000"}, // make test's SIM_SEEDS
		regexp.MustCompile(`(seed \d+, \d+ replicas)`)},
	{"sim liveness", []string{"test", "-count=1", "-tags", "invariants", "./core/sim", "-run",
		"^TestSim(LeaderCutOneWay|RejoinAfterIsolation|StalledLeaderDisk)"},
		regexp.MustCompile(`--- FAIL: (\S+)`)},
	{"explorer", []string{"test", "-count=1", "-tags", "invariants", "./core/explore", "-run", "^TestExplore"},
		regexp.MustCompile(`(depth \d+[^\n]*)`)},
}

// broken: output that means the catcher never ran (a mutation that does not compile, or a
// package that is not there), which must not count as a catch.
var broken = regexp.MustCompile(`\[build failed\]|\[setup failed\]|matched no packages|no Go files|cannot find package|directory not found`)

func TestPlantedBugs(t *testing.T) {
	if os.Getenv("MPAXOS_PLANTED") == "" {
		t.Skip("set MPAXOS_PLANTED=1 (make planted): plants each bug and runs the catchers, about half an hour")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var table []string
	for _, mu := range mutations {
		t.Run(mu.name, func(t *testing.T) {
			overlay := plant(t, root, mu)
			caught := false
			for _, c := range catchers {
				start := time.Now()
				cmd := exec.Command("go", append(c.args, "-overlay", overlay)...)
				cmd.Dir = root
				out, err := cmd.CombinedOutput()
				took := time.Since(start).Round(time.Second)
				if broken.Match(out) {
					t.Fatalf("%s did not build with %s planted (fix the mutation):\n%s", c.name, mu.name, firstLines(out, 20))
				}
				if err == nil {
					table = append(table, fmt.Sprintf("%-38s %-11s missed (%v)", mu.name, c.name, took))
					continue
				}
				caught = true
				detail := "failed"
				if m := c.detail.FindSubmatch(out); m != nil {
					detail = string(m[1])
				}
				table = append(table, fmt.Sprintf("%-38s %-11s CAUGHT %s (%v)", mu.name, c.name, detail, took))
				t.Logf("%s caught %s: %s", c.name, mu.name, firstLines(out, 6))
			}
			if !caught {
				t.Errorf("planted bug %s was caught by nothing", mu.name)
			}
		})
	}
	t.Logf("planted bugs:\n%s", strings.Join(table, "\n"))
}

// plant writes the mutated file to a temporary directory and returns a go -overlay file that
// puts it in place of the original.
func plant(t *testing.T, root string, mu mutation) string {
	path := filepath.Join(root, mu.file)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	for _, edit := range [][2]string{{mu.old, mu.new}, {mu.also, mu.new2}} {
		if edit[0] == "" {
			continue
		}
		if n := strings.Count(text, edit[0]); n != 1 {
			t.Fatalf("mutation %s: %q occurs %d times in %s, want once", mu.name, edit[0], n, mu.file)
		}
		text = strings.Replace(text, edit[0], edit[1], 1)
	}
	dir := t.TempDir()
	mutated := filepath.Join(dir, filepath.Base(mu.file))
	if err := os.WriteFile(mutated, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(map[string]map[string]string{"Replace": {path: mutated}})
	if err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlay, js, 0o644); err != nil {
		t.Fatal(err)
	}
	return overlay
}

func firstLines(out []byte, n int) string {
	lines := strings.Split(string(out), "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
