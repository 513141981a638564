package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// embedState is the Node's embedding state (offset index, snapshots, snapshot transfer),
// embedded in Node so its fields read as the Node's own.
type embedState struct {
	index     *logIndex
	snaps     *snapshots
	compactTo atomic.Uint64 // every slot below it is compacted (see snapshot.go)
	// snapshotSoon: a peer needs slots only a new snapshot can give it (compactingStorage).
	snapshotSoon atomic.Bool
	boot         *snapshotMeta // the newest local snapshot at Start (nil if none)
	xfer         *snapshotTransfer
}

// startEmbed runs in Start after the WAL is recovered: it loads the newest snapshot and
// starts core at its slot, so only the WAL after it is applied.
func (n *Node) startEmbed(p *core.Persisted) error {
	n.index = newLogIndex()
	n.snaps = &snapshots{jobs: make(chan snapshotJob, 1), writerEnd: make(chan struct{})}
	dc := driverConfig(&n.cfg)
	n.xfer = newSnapshotTransfer(n, dc.SnapshotOperationsMax())
	meta, err := loadLatestSnapshot(n.snapshotDir())
	if err != nil {
		return err
	}
	if meta == nil {
		return nil
	}
	n.boot = meta
	n.snaps.latest = meta.slot
	n.compactTo.Store(meta.slot)
	n.index.reset(meta.nextOffset, meta.slot)
	p.SnapshotSlot = meta.slot
	p.Applied = meta.slot
	p.HardState.Commit = max(p.HardState.Commit, meta.slot)
	n.log.Info("pipeline: starting from snapshot", "slot", meta.slot, "offset", meta.nextOffset)
	return nil
}

// coreStorage wraps the chosen-value cache for core (see compactingStorage).
func (n *Node) coreStorage(cache core.Storage) core.Storage {
	return compactingStorage{n: n, next: cache}
}

// startEmbedStages starts the snapshot writer and the snapshot transfer goroutines.
func (n *Node) startEmbedStages() {
	go n.runSnapshotWriter()
	go pprof.Do(context.Background(), pprof.Labels("stage", "snapshot-transfer"), func(context.Context) { n.xfer.run() })
}

// stopEmbedStages waits for them; the apply stage has ended (it is the only snapshot sender).
func (n *Node) stopEmbedStages() {
	select {
	case <-n.applyDone:
		close(n.snaps.jobs)
		<-n.snaps.writerEnd
	default: // Stop's deadline passed with the apply stage still running
	}
	n.xfer.stop()
}

// embedApply is the apply goroutine's embedding state: the offset counter, the index round
// being built, the snapshot trigger.
type embedApply struct {
	n             *Node
	app           Application
	round         applyRound
	sinceCommands int
	sinceBytes    int64
}

// newEmbedApply starts the apply stage's embedding state, restoring sessions, the applied
// state and the application from the boot snapshot when there is one.
func (n *Node) newEmbedApply(sessions *core.Sessions, state *AppliedState) *embedApply {
	e := &embedApply{n: n, app: n.cfg.Application}
	if n.boot != nil {
		if err := e.restore(n.boot.slot, sessions, state); err != nil {
			n.log.Error("pipeline: restoring the snapshot failed", "slot", n.boot.slot, "err", err)
		}
	}
	return e
}

// restore loads the snapshot of slot into sessions, state, the offset counter, the index and
// the application.
func (e *embedApply) restore(slot uint64, sessions *core.Sessions, state *AppliedState) error {
	n := e.n
	meta, f, _, err := readSnapshotMeta(filepath.Join(n.snapshotDir(), snapshotName(slot)))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := sessions.UnmarshalBinary(meta.sessions); err != nil {
		return fmt.Errorf("%w: slot %d: sessions: %w", ErrSnapshot, slot, err)
	}
	if e.app != nil {
		if err := e.app.Restore(f); err != nil {
			return fmt.Errorf("%w: slot %d: application restore: %w", ErrSnapshot, slot, err)
		}
	}
	*state = meta.applied
	e.round.nextOffset = meta.nextOffset
	e.round.slots = e.round.slots[:0]
	e.sinceCommands, e.sinceBytes = 0, 0
	n.index.reset(meta.nextOffset, slot)
	return nil
}

// install handles an install marker job (see installSnapshot).
func (e *embedApply) install(sessions *core.Sessions, state *AppliedState) {
	n := e.n
	slot := n.takeInstall()
	if slot == 0 || slot <= state.Slot {
		return
	}
	if err := e.restore(slot, sessions, state); err != nil {
		n.log.Error("pipeline: installing a received snapshot failed", "slot", slot, "err", err)
		return
	}
	n.log.Info("pipeline: installed snapshot", "slot", slot, "offset", e.round.nextOffset)
	n.snapshotTaken(slot)
	n.compact(slot)
}

// nextOffset is the offset the next offset-taking command gets.
func (e *embedApply) nextOffset() uint64 { return e.round.nextOffset }

// command records one applied command (see applyRound.command).
func (e *embedApply) command(slot uint64, index uint32, cmd codec.Command, dup bool) (uint64, bool) {
	return e.round.command(e.app, slot, index, cmd, dup)
}

// endRound publishes the round to readers and takes a snapshot when one is due.
func (e *embedApply) endRound(sessions *core.Sessions, state *AppliedState) {
	n := e.n
	n.index.publish(e.round.slots, e.round.nextOffset, state.Slot)
	e.round.slots = e.round.slots[:0]
	e.sinceCommands += int(e.round.commands)
	e.sinceBytes += e.round.bytes
	e.round.commands, e.round.bytes = 0, 0
	sc := &n.cfg.Snapshot
	soon := n.snapshotSoon.Load()
	if e.sinceCommands < sc.EveryCommands && e.sinceBytes < sc.EveryBytes && !soon {
		return
	}
	n.snaps.mu.Lock()
	latest := n.snaps.latest
	n.snaps.mu.Unlock()
	if len(n.snaps.jobs) > 0 || state.Slot <= latest {
		return // the writer is behind (try again after the next round), or nothing is new
	}
	sessionBytes, err := sessions.MarshalBinary()
	if err != nil {
		n.log.Error("pipeline: snapshot: sessions", "err", err)
		return
	}
	job := snapshotJob{meta: snapshotMeta{slot: state.Slot, nextOffset: e.round.nextOffset,
		applied: *state, sessions: sessionBytes}}
	if e.app != nil {
		if job.app, err = e.app.Snapshot(); err != nil {
			n.log.Error("pipeline: snapshot: the application refused", "err", err)
			return
		}
	}
	e.sinceCommands, e.sinceBytes = 0, 0
	n.snapshotSoon.Store(false)
	n.snaps.jobs <- job // the only sender, and the channel was empty: never blocks
}
