package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/tests/chaos/history"
	"github.com/mpaxos/mpaxos/tests/chaos/replicalog"
)

// summary is what one run checked.
type summary struct {
	faults        int
	ops           int
	acknowledged  int
	indeterminate int
	slots         uint64
	commands      int
	verdict       string
	ok            bool
}

// finishAndCheck stops the workload, heals, and runs every end-of-run check (see doc.go).
// Failures are reported with t.Errorf; the summary says what was checked.
func (h *harness) finishAndCheck(w *workload) summary {
	t := h.t
	t.Helper()
	w.finish()
	h.fault("heal all")
	h.healAll()
	if t.Failed() {
		return summary{}
	}
	if rejected := w.rejectedSeen(); len(rejected) > 0 {
		t.Errorf("valid appends or reads were rejected: %q", rejected)
	}

	// A final append must succeed once the cluster is whole again.
	finalLane := w.lanes
	cfg := client.DefaultConfig()
	cfg.ClusterID, cfg.Endpoints, cfg.RequestTimeout = h.cluster.ClusterID(), h.cluster.Endpoints(), 10*time.Second
	cfg.ClientID = h.seed<<16 + 0xfff0
	c, err := dialRetry(cfg, 30*time.Second)
	if err != nil {
		t.Errorf("final append: no replica reachable: %v", err)
		return summary{}
	}
	finalOK := false
	for attempt := 0; attempt < 4 && !finalOK; attempt++ {
		op := appendOp(h.rec, c, finalLane, w.nextValue.Add(1)-1, 10*time.Second, nil)
		h.rec.Add(op)
		finalOK = op.Outcome == history.OutcomeOK
		if !finalOK {
			t.Logf("final append attempt %d: %s", attempt+1, op.Err)
		}
	}
	c.Close()
	if !finalOK {
		t.Errorf("no final append succeeded after healing (4 attempts of 10 s)")
	}

	// Every replica converges to one applied log.
	ids := allIDs(h.cluster)
	agreed, err := h.converge(ids, 500*time.Millisecond, 60*time.Second)
	if err != nil {
		t.Errorf("convergence: %v", err)
		return summary{}
	}
	// The commit point reaches the disk at most 50 ms after it moves (pipeline doc).
	time.Sleep(300 * time.Millisecond)
	if exits := h.cluster.UnexpectedExits(); len(exits) > 0 {
		for _, e := range exits {
			t.Errorf("crash: %s", e)
		}
	}
	h.cluster.Close()

	// Read every replica's log from disk and compare.
	logs := make(map[int]*replicalog.Log)
	for _, id := range ids {
		scratch, err := os.MkdirTemp(t.TempDir(), fmt.Sprintf("log-%d-", id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := replicalog.ReadUpTo(h.cluster.Node(id).DataDir, scratch, agreed.Slot)
		if err != nil {
			t.Errorf("replica %d: read log: %v", id, err)
			return summary{}
		}
		p, ok := l.At(agreed.Slot)
		switch {
		case !ok:
			t.Errorf("replica %d: disk holds %d chosen slots (commit point %d), it reported %d applied", id, l.Slots, l.Commit, agreed.Slot)
		case p.Digest != agreed.Digest:
			t.Errorf("replica %d: log on disk up to slot %d has digest %x, the replica reported %x", id, agreed.Slot, p.Digest, agreed.Digest)
		case p.Commands != agreed.Commands:
			t.Errorf("replica %d: log on disk up to slot %d has %d commands, the replica reported %d", id, agreed.Slot, p.Commands, agreed.Commands)
		case p.Duplicates != agreed.Duplicates:
			t.Errorf("replica %d: exactly-once: the log up to slot %d repeats %d (client id, seq) pairs, the replica skipped %d as duplicates (it skipped a command never applied, or applied a retry twice)",
				id, agreed.Slot, p.Duplicates, agreed.Duplicates)
		}
		logs[id] = l
	}
	if t.Failed() {
		return summary{}
	}
	reference := logs[ids[0]]
	for _, id := range ids[1:] {
		if diff := diffLogs(reference, logs[id], agreed.Slot); diff != "" {
			t.Errorf("replicas %d and %d hold different logs: %s", ids[0], id, diff)
		}
	}

	final := &history.Final{Entries: []history.Entry{}}
	for _, cmd := range reference.Applied() {
		if cmd.Slot >= agreed.Slot {
			break
		}
		v, err := history.DecodePayload(cmd.Payload)
		if err != nil {
			t.Errorf("slot %d index %d (client %x seq %d): %v", cmd.Slot, cmd.Index, cmd.ClientID, cmd.Seq, err)
			continue
		}
		final.Entries = append(final.Entries, history.Entry{Slot: cmd.Slot, Index: cmd.Index, Value: v})
	}

	cfgCheck := history.Config{Timeout: 2 * time.Minute, Name: "history"}
	if dir, err := h.artifactDir(); err == nil {
		cfgCheck.ArtifactDir = dir
	}
	ops := h.rec.Ops()
	result := history.Check(ops, final, cfgCheck)
	if result.OK() {
		t.Logf("history: %s", result.Summary())
		if cfgCheck.ArtifactDir != "" {
			os.Remove(cfgCheck.ArtifactDir) // empty unless the check wrote into it
		}
	} else {
		t.Errorf("history check failed: %s", result.Summary())
		if cfgCheck.ArtifactDir != "" {
			os.WriteFile(filepath.Join(cfgCheck.ArtifactDir, "check.txt"), []byte(result.Summary()+"\n"), 0o644)
		}
	}
	if h.rec.Dropped() > 0 {
		t.Errorf("history recorder full: %d ops dropped", h.rec.Dropped())
	}
	if errs := w.errorSummary(); errs != "" {
		t.Logf("client errors seen:%s", errs)
	}
	return summary{
		faults: len(h.faultLog()), ops: result.Ops, acknowledged: result.Acknowledged,
		indeterminate: result.Indeterminate, slots: agreed.Slot, commands: len(final.Entries),
		verdict: string(result.Verdict), ok: !t.Failed(),
	}
}

// diffLogs describes the first difference between two logs below slot, "" if none.
func diffLogs(a, b *replicalog.Log, slot uint64) string {
	ai, bi := 0, 0
	for {
		aDone := ai >= len(a.Commands) || a.Commands[ai].Slot >= slot
		bDone := bi >= len(b.Commands) || b.Commands[bi].Slot >= slot
		if aDone && bDone {
			return ""
		}
		if aDone != bDone {
			return fmt.Sprintf("one log ends after %d commands, the other after %d or more", min(ai, bi), max(ai, bi))
		}
		x, y := a.Commands[ai], b.Commands[bi]
		if x.Slot != y.Slot || x.Index != y.Index || x.ClientID != y.ClientID || x.Seq != y.Seq || string(x.Payload) != string(y.Payload) {
			return fmt.Sprintf("command %d: %d.%d client %x seq %d vs %d.%d client %x seq %d", ai, x.Slot, x.Index, x.ClientID, x.Seq, y.Slot, y.Index, y.ClientID, y.Seq)
		}
		ai++
		bi++
	}
}
