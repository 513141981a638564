package history

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Entry is one command of a replica's applied log, as read back after a run, in log order.
type Entry struct {
	Slot  uint64
	Index uint32
	Value uint64 // the chaos value its payload carries
}

// Final is the log every replica agreed on at the end of a run.
type Final struct {
	Entries []Entry
}

// Config tunes Check.
type Config struct {
	// Timeout bounds porcupine's search; past it the verdict is Unknown, which fails a run
	// (DefaultTimeout if 0).
	Timeout time.Duration
	// ArtifactDir receives the HTML visualisation and a text dump of the history when the
	// check fails. Empty: nothing is written.
	ArtifactDir string
	// Name prefixes the artifact files (the test's name).
	Name string
	// ProblemsMax bounds how many direct-check problems are listed (DefaultProblemsMax if 0);
	// the rest are counted.
	ProblemsMax int
}

const (
	DefaultTimeout     = 60 * time.Second
	DefaultProblemsMax = 20
)

// Model names reported in Result.Model.
const (
	ModelLog      = "log"      // dense offsets: the full append-only log specification
	ModelPosition = "position" // (Slot, Index) only: positions increase with real time
)

// Result is Check's verdict with what it looked at.
type Result struct {
	Verdict porcupine.CheckResult
	Model   string
	// Problems found by the direct checks; each is one sentence naming the operations.
	Problems      []string
	ProblemsTotal int

	Ops           int // operations recorded
	Appends       int // append calls
	Acknowledged  int // appends acknowledged
	Indeterminate int // appends with unknown outcome
	Resolved      int // indeterminate appends found in the final log (so they took effect)
	Reads         int // reads (by offset and latest) answered, so checked
	Checked       int // operations given to porcupine

	Visualization string // path of the HTML visualisation, if one was written
	Dump          string // path of the text dump of the history, if one was written
	Elapsed       time.Duration
}

// OK reports whether the history passed every check.
func (r Result) OK() bool {
	return r.Verdict == porcupine.Ok && r.ProblemsTotal == 0
}

// Summary is a few lines for a test log.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verdict %s (model %s, %d ops checked in %v); %d ops: %d appends, %d acknowledged, %d indeterminate (%d found in the final log), %d reads answered",
		r.Verdict, r.Model, r.Checked, r.Elapsed.Round(time.Millisecond), r.Ops, r.Appends,
		r.Acknowledged, r.Indeterminate, r.Resolved, r.Reads)
	if r.ProblemsTotal > 0 {
		fmt.Fprintf(&b, "\n%d problems:", r.ProblemsTotal)
		for _, p := range r.Problems {
			b.WriteString("\n  - " + p)
		}
		if r.ProblemsTotal > len(r.Problems) {
			fmt.Fprintf(&b, "\n  - ... and %d more", r.ProblemsTotal-len(r.Problems))
		}
	}
	if r.Visualization != "" {
		fmt.Fprintf(&b, "\nvisualisation: %s", r.Visualization)
	}
	if r.Dump != "" {
		fmt.Fprintf(&b, "\nhistory dump: %s", r.Dump)
	}
	return b.String()
}

type checker struct {
	cfg    Config
	result Result
}

func (c *checker) problem(format string, args ...any) {
	c.result.ProblemsTotal++
	if len(c.result.Problems) < c.cfg.ProblemsMax {
		c.result.Problems = append(c.result.Problems, fmt.Sprintf(format, args...))
	}
}

// Check judges ops against the append-only log specification. final is the log read back from
// the replicas after the run, or nil when it could not be read. See the package doc.
func Check(ops []Op, final *Final, cfg Config) Result {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ProblemsMax <= 0 {
		cfg.ProblemsMax = DefaultProblemsMax
	}
	if cfg.Name == "" {
		cfg.Name = "history"
	}
	start := time.Now()
	c := &checker{cfg: cfg}
	c.result.Ops = len(ops)
	c.countAppends(ops)
	c.checkPositions(ops)
	var finalOffsets map[uint64]int
	if final != nil {
		finalOffsets = c.checkFinal(ops, final)
	}

	model, pops := c.porcupineHistory(ops, final, finalOffsets)
	verdict, info := porcupine.CheckOperationsVerbose(model, pops, cfg.Timeout)
	c.result.Verdict = verdict
	c.result.Checked = len(pops)
	c.result.Elapsed = time.Since(start)
	if !c.result.OK() && cfg.ArtifactDir != "" {
		c.saveArtifacts(model, info, ops, final)
	}
	return c.result
}

func (c *checker) countAppends(ops []Op) {
	for _, op := range ops {
		if op.Kind != KindAppend {
			if op.Outcome == OutcomeOK {
				c.result.Reads++
			}
			continue
		}
		c.result.Appends++
		switch op.Outcome {
		case OutcomeOK:
			c.result.Acknowledged++
		case OutcomeIndeterminate:
			c.result.Indeterminate++
		}
	}
}

// checkPositions: acknowledged positions are unique, and an append called after another
// returned got a higher position (real-time order; no stale leader handed out an old slot).
func (c *checker) checkPositions(ops []Op) {
	type acked struct {
		op  Op
		pos position
	}
	var list []acked
	seenPosition := make(map[position]Op)
	seenOffset := make(map[uint64]Op)
	seenValue := make(map[uint64]Op)
	for _, op := range ops {
		if op.Kind != KindAppend {
			continue
		}
		if prev, ok := seenValue[op.Value]; ok {
			c.problem("workload bug: value %d appended twice (%v and %v)", op.Value, prev, op)
		}
		seenValue[op.Value] = op
		if op.Outcome != OutcomeOK {
			continue
		}
		p := position{slot: op.Slot, index: op.Index, valid: true}
		if prev, ok := seenPosition[p]; ok {
			c.problem("two appends acknowledged at slot %d index %d: %v and %v", op.Slot, op.Index, prev, op)
		}
		seenPosition[p] = op
		if op.HasOffset {
			if prev, ok := seenOffset[op.Offset]; ok {
				c.problem("two appends acknowledged at offset %d: %v and %v", op.Offset, prev, op)
			}
			seenOffset[op.Offset] = op
		}
		list = append(list, acked{op: op, pos: p})
	}
	byReturn := append([]acked(nil), list...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].op.Return < byReturn[j].op.Return })
	sort.Slice(list, func(i, j int) bool { return list[i].op.Call < list[j].op.Call })
	var highest acked
	next := 0
	for _, b := range list {
		for next < len(byReturn) && byReturn[next].op.Return < b.op.Call {
			if !highest.pos.valid || highest.pos.less(byReturn[next].pos) {
				highest = byReturn[next]
			}
			next++
		}
		if highest.pos.valid && !highest.pos.less(b.pos) {
			c.problem("stale position: %v returned at %v, before %v was called at %v, yet got a higher position",
				highest.op, time.Duration(highest.op.Return), b.op, time.Duration(b.op.Call))
		}
	}
}

// checkFinal compares the history with the final log and returns each value's dense offset.
func (c *checker) checkFinal(ops []Op, final *Final) map[uint64]int {
	offsets := make(map[uint64]int, len(final.Entries))
	for i, e := range final.Entries {
		if i > 0 {
			prev := final.Entries[i-1]
			if !(position{slot: prev.Slot, index: prev.Index}).less(position{slot: e.Slot, index: e.Index}) {
				c.problem("final log out of order at offset %d: %d.%d follows %d.%d", i, e.Slot, e.Index, prev.Slot, prev.Index)
			}
		}
		if j, ok := offsets[e.Value]; ok {
			c.problem("value %d applied twice: at offsets %d (slot %d.%d) and %d (slot %d.%d)",
				e.Value, j, final.Entries[j].Slot, final.Entries[j].Index, i, e.Slot, e.Index)
			continue
		}
		offsets[e.Value] = i
	}
	invoked := make(map[uint64]bool)
	for _, op := range ops {
		if op.Kind != KindAppend {
			continue
		}
		invoked[op.Value] = true
		i, present := offsets[op.Value]
		switch op.Outcome {
		case OutcomeOK:
			if !present {
				c.problem("lost: %v is missing from the final log", op)
				continue
			}
			e := final.Entries[i]
			if e.Slot != op.Slot || e.Index != op.Index {
				c.problem("%v but the final log holds it at slot %d.%d", op, e.Slot, e.Index)
			}
			if op.HasOffset && op.Offset != uint64(i) {
				c.problem("%v but the final log holds it at offset %d", op, i)
			}
		case OutcomeFailed:
			if present {
				c.problem("%v (reported as failed, %s) is in the final log at offset %d", op, op.Err, i)
			}
		case OutcomeIndeterminate:
			if present {
				c.result.Resolved++
			}
		}
	}
	for i, e := range final.Entries {
		if !invoked[e.Value] {
			c.problem("final log holds value %d at offset %d (slot %d.%d) that no client appended", e.Value, i, e.Slot, e.Index)
		}
	}
	return offsets
}

// porcupineHistory chooses the model and turns ops into porcupine operations.
func (c *checker) porcupineHistory(ops []Op, final *Final, offsets map[uint64]int) (porcupine.Model, []porcupine.Operation) {
	allOffsets := true
	lastClient := 0
	var lastReturn int64
	for _, op := range ops {
		if op.Kind == KindAppend && op.Outcome == OutcomeOK && !op.HasOffset {
			allOffsets = false
		}
		lastClient = max(lastClient, op.Client)
		if op.Return != Infinity {
			lastReturn = max(lastReturn, op.Return, op.Call)
		} else {
			lastReturn = max(lastReturn, op.Call)
		}
	}
	if final == nil && !allOffsets {
		c.result.Model = ModelPosition
		var pops []porcupine.Operation
		for _, op := range ops {
			// An append with no acknowledged position constrains nothing in this model.
			if op.Kind != KindAppend || op.Outcome != OutcomeOK {
				continue
			}
			pops = append(pops, porcupine.Operation{
				ClientId: op.Client, Call: op.Call, Return: op.Return,
				Input:  modelInput{kind: KindAppend, value: op.Value},
				Output: modelOutput{known: true, slot: op.Slot, index: op.Index},
			})
		}
		return PositionModel(), pops
	}

	c.result.Model = ModelLog
	var pops []porcupine.Operation
	for _, op := range ops {
		in := modelInput{kind: op.Kind, value: op.Value, offset: op.Offset}
		out := modelOutput{known: op.Outcome == OutcomeOK}
		ret := op.Return
		switch op.Kind {
		case KindAppend:
			if op.Outcome == OutcomeFailed {
				continue
			}
			if final != nil {
				i, present := offsets[op.Value]
				switch {
				case op.Outcome == OutcomeOK && op.HasOffset:
					out.offset = op.Offset
				case present:
					out.known, out.offset = true, uint64(i)
				case op.Outcome == OutcomeOK:
					// Lost: no offset can be legal for it below the final read.
					out.offset = uint64(len(final.Entries)) + 1
				default:
					continue // never took effect
				}
			} else {
				out.offset = op.Offset
			}
			if op.Outcome != OutcomeOK {
				ret = Infinity
			}
		case KindRead:
			if op.Outcome != OutcomeOK {
				continue
			}
			out.found, out.value = op.Found, op.Value
		case KindReadLatest:
			if op.Outcome != OutcomeOK {
				continue
			}
			out.length, out.found, out.value = op.Length, op.Found, op.Value
		default:
			continue
		}
		pops = append(pops, porcupine.Operation{ClientId: op.Client, Call: op.Call, Return: ret, Input: in, Output: out})
	}
	if final != nil {
		// The final log is an observation made after every operation returned: a read of the
		// whole length. It makes a lost append or an unknown value in the log illegal.
		out := modelOutput{known: true, length: uint64(len(final.Entries))}
		if n := len(final.Entries); n > 0 {
			out.found, out.value = true, final.Entries[n-1].Value
		}
		pops = append(pops, porcupine.Operation{
			ClientId: lastClient + 1, Call: lastReturn + 1, Return: lastReturn + 2,
			Input:  modelInput{kind: KindReadLatest},
			Output: out,
		})
	}
	return LogModel(), pops
}

func (c *checker) saveArtifacts(model porcupine.Model, info porcupine.LinearizationInfo, ops []Op, final *Final) {
	if err := os.MkdirAll(c.cfg.ArtifactDir, 0o755); err != nil {
		c.problem("could not create artifact dir: %v", err)
		return
	}
	name := sanitize(c.cfg.Name)
	visualization := filepath.Join(c.cfg.ArtifactDir, name+".html")
	if err := porcupine.VisualizePath(model, info, visualization); err != nil {
		c.problem("could not write visualisation %s: %v", visualization, err)
	} else {
		c.result.Visualization = visualization
	}
	dump := filepath.Join(c.cfg.ArtifactDir, name+".history.txt")
	var b strings.Builder
	sorted := append([]Op(nil), ops...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	for _, op := range sorted {
		ret := "inf"
		if op.Return != Infinity {
			ret = fmt.Sprint(op.Return)
		}
		fmt.Fprintf(&b, "call=%d return=%s %v", op.Call, ret, op)
		if op.Err != "" {
			fmt.Fprintf(&b, " err=%q", op.Err)
		}
		b.WriteByte('\n')
	}
	if final != nil {
		fmt.Fprintf(&b, "\nfinal log (%d entries):\n", len(final.Entries))
		for i, e := range final.Entries {
			fmt.Fprintf(&b, "%d slot=%d.%d value=%d\n", i, e.Slot, e.Index, e.Value)
		}
	}
	if err := os.WriteFile(dump, []byte(b.String()), 0o644); err != nil {
		c.problem("could not write history dump %s: %v", dump, err)
	} else {
		c.result.Dump = dump
	}
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
}

// ErrNoModuleRoot: no go.mod was found above the working directory.
var ErrNoModuleRoot = errors.New("history: no go.mod above the working directory")

// ArtifactDir returns (and creates) a fresh directory for one test's artifacts under the
// module's tests/chaos/artifacts/ (gitignored). Unlike t.TempDir it survives the test.
func ArtifactDir(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("history: artifact dir: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoModuleRoot
		}
		dir = parent
	}
	stamp := time.Now().UTC().Format("20060102-150405.000")
	path := filepath.Join(dir, "tests", "chaos", "artifacts", sanitize(name)+"-"+stamp)
	if err := os.MkdirAll(path, 0o755); err != nil {
		return "", fmt.Errorf("history: artifact dir: %w", err)
	}
	return path, nil
}
