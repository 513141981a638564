package driver

import (
	"errors"
	"hash/crc32"
	"slices"
	"testing"

	"github.com/mpaxos/mpaxos/codec"
)

// Transfers in these tests: replica 3 fetches the snapshot of slot 10 (a 10-byte file) from
// replica 1 in chunks of 4 bytes, 2 chunks a window, retrying every 3 ticks, giving up after
// 2 silent retries.

var snapshotFile = []byte("0123456789")

func transferConfig() Config {
	cfg := DefaultConfig()
	cfg.ChunkBytes, cfg.ChunkWindow, cfg.RetryTicks, cfg.RetryLimit = 4, 2, 3, 2
	return cfg
}

// chunk is the chunk of snapshotFile at [offset, end) as replica 1 sends it to 3.
func chunk(offset, end uint64) codec.Message {
	return codec.Message{Type: codec.TypeSnapshotChunk, From: 1, To: 3, Slot: 10, Offset: offset,
		Total: uint64(len(snapshotFile)), Checksum: crc32.Checksum(snapshotFile, castagnoli),
		Data: slices.Clone(snapshotFile[offset:end])}
}

// hint is replica 1's answer to a catch-up request below its snapshot of slot 10.
func hint() codec.Message {
	return codec.Message{Type: codec.TypeCatchUpReply, From: 1, To: 3, Slot: 0, Commit: 12, Count: 10}
}

// receiver is replica 3, following replica 1's ballot, told that slot 10 is a snapshot.
func receiver(t *testing.T) *node {
	n := newNode(t, 3, []uint32{1, 2, 3}, transferConfig())
	n.step(t, accept(3, 0, 0, "a"))
	n.persistAll()
	n.fx.outbox = nil
	n.step(t, hint())
	return n
}

// requests returns the offsets of the snapshot requests sent (and forgets them).
func requests(n *node) []uint64 {
	var offsets []uint64
	for _, m := range n.fx.outbox {
		if m.Type == codec.TypeSnapshotChunk && len(m.Data) == 0 {
			offsets = append(offsets, m.Offset)
		}
	}
	n.fx.outbox = nil
	return offsets
}

func (n *node) completeSnapshot() { n.completeSnapshotOperations(nil, nil) }

// The whole transfer: two windows, written, verified and durable, and only then does core
// jump to the snapshot and ask for the install.
func TestSnapshotIsHandedToCoreOnlyOnceItsFileIsDurable(t *testing.T) {
	n := receiver(t)
	if got := requests(n); !slices.Equal(got, []uint64{0}) {
		t.Fatalf("requests %v, want [0]", got)
	}
	n.step(t, chunk(0, 4))
	n.step(t, chunk(4, 8))
	n.completeSnapshot()
	if got := requests(n); !slices.Equal(got, []uint64{8}) {
		t.Fatalf("after the first window is written: requests %v, want [8]", got)
	}
	n.step(t, chunk(8, 10))
	if len(n.fx.finishes) != 0 {
		t.Fatal("finish asked before the last write completed")
	}
	// The last write completes: the finish is asked for, and core has heard nothing yet.
	write := n.fx.writes[0]
	n.fx.writes = nil
	n.fx.temps[write.Transfer] = append(n.fx.temps[write.Transfer], write.Data...)
	n.d.SnapshotWritten(write, nil)
	if len(n.fx.finishes) != 1 || n.r.Status().Commit >= 10 {
		t.Fatalf("finishes %v, commit %d: want one finish, core not at the snapshot", n.fx.finishes, n.r.Status().Commit)
	}
	n.completeSnapshot()
	if n.r.Status().Commit != 10 || !slices.Equal(n.fx.installs, []uint64{10}) {
		t.Fatalf("commit %d, installs %v; want 10, [10]", n.r.Status().Commit, n.fx.installs)
	}
	if n.fx.index("durable snapshot 10") > n.fx.index("install 10") {
		t.Fatalf("installed before durable: %v", n.fx.events)
	}
	if st := n.d.Status(); st.Transfer != 0 || st.SnapshotOperations != 0 {
		t.Fatalf("after the install: %+v", st)
	}
}

// A chunk lost in the window: the written part falls short of the window, the retry timer
// asks again from the bytes received, and the transfer completes.
func TestLostChunkIsAskedForAgainAfterARetryInterval(t *testing.T) {
	n := receiver(t)
	requests(n)
	n.step(t, chunk(0, 4))
	n.step(t, chunk(8, 10)) // out of order: chunk 4-8 was lost
	n.completeSnapshot()
	if got := requests(n); len(got) != 0 || len(n.fx.finishes) != 0 {
		t.Fatalf("requests %v, finishes %v before any retry", got, n.fx.finishes)
	}
	cfg := transferConfig()
	for range 2 * cfg.RetryTicks { // the first interval saw progress, the second is silent
		n.d.Tick()
	}
	if got := requests(n); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("retry requests %v, want [4]", got)
	}
	n.step(t, chunk(4, 8))
	n.step(t, chunk(8, 10))
	n.completeSnapshot()
	n.completeSnapshot()
	if !slices.Equal(n.fx.installs, []uint64{10}) {
		t.Fatalf("installs %v after the retry", n.fx.installs)
	}
}

// A sender that never answers: the receiver asks RetryLimit more times, gives up (nothing was
// written, so there is no file to remove), and the next hint starts a new transfer.
func TestSilentSenderIsGivenUpAndTheNextHintStartsOver(t *testing.T) {
	n := receiver(t)
	cfg := transferConfig()
	for range (cfg.RetryLimit + 1) * cfg.RetryTicks {
		n.d.Tick()
	}
	if got := requests(n); !slices.Equal(got, []uint64{0, 0, 0}) {
		t.Fatalf("requests %v, want the first and %d retries", got, cfg.RetryLimit)
	}
	if len(n.fx.discards) != 1 || !errors.Is(n.fx.discards[0].Reason, ErrTransferSilent) || n.fx.discards[0].Bytes != 0 {
		t.Fatalf("discards %+v, want one silent with no bytes", n.fx.discards)
	}
	n.step(t, hint())
	if got := requests(n); !slices.Equal(got, []uint64{0}) || n.d.Status().Transfer != 2 {
		t.Fatalf("after the next hint: requests %v, transfer %d; want [0], 2", got, n.d.Status().Transfer)
	}
}

// A partial transfer: a chunk is damaged on the way, the file fails verification, the transfer
// is discarded, core never hears of it; the next hint fetches it whole.
func TestDamagedTransferFailsVerificationAndIsFetchedAgain(t *testing.T) {
	n := receiver(t)
	bad := chunk(4, 8)
	bad.Data[0] ^= 0xff
	n.step(t, chunk(0, 4))
	n.step(t, bad)
	n.completeSnapshot()
	n.step(t, chunk(8, 10))
	n.completeSnapshot()
	n.completeSnapshot()
	if len(n.fx.discards) != 1 || !errors.Is(n.fx.discards[0].Reason, ErrTransferFinish) || n.fx.discards[0].Bytes != 10 {
		t.Fatalf("discards %+v, want one failed finish of 10 bytes", n.fx.discards)
	}
	if n.r.Status().Commit >= 10 || len(n.fx.installs) != 0 {
		t.Fatalf("core moved to a damaged snapshot: commit %d, installs %v", n.r.Status().Commit, n.fx.installs)
	}
	requests(n)
	n.step(t, hint())
	n.step(t, chunk(0, 4))
	n.step(t, chunk(4, 8))
	n.completeSnapshot()
	n.step(t, chunk(8, 10))
	n.completeSnapshot()
	n.completeSnapshot()
	if !slices.Equal(n.fx.installs, []uint64{10}) {
		t.Fatalf("installs %v after the second transfer", n.fx.installs)
	}
}

// A write fails while another is in flight: the transfer is discarded only once that one
// completes too, so no completion ever finds a transfer gone.
func TestFailedWriteDiscardsTheTransferAfterItsWritesInFlight(t *testing.T) {
	n := receiver(t)
	n.step(t, chunk(0, 4))
	n.step(t, chunk(4, 8))
	first, second := n.fx.writes[0], n.fx.writes[1]
	n.fx.writes = nil
	n.d.SnapshotWritten(first, errors.New("disk full"))
	if len(n.fx.discards) != 0 {
		t.Fatal("discarded with a write in flight")
	}
	n.step(t, chunk(8, 10)) // dropped: the transfer is abandoned
	n.d.SnapshotWritten(second, nil)
	if len(n.fx.discards) != 1 || !errors.Is(n.fx.discards[0].Reason, ErrTransferWrite) || n.fx.discards[0].Bytes != 8 {
		t.Fatalf("discards %+v, want one failed write with 8 bytes handed out", n.fx.discards)
	}
	if len(n.fx.writes) != 0 || n.d.Status().SnapshotOperations != 0 {
		t.Fatalf("writes %v, operations %d after the discard", n.fx.writes, n.d.Status().SnapshotOperations)
	}
}

// Chunks while a window of writes is in flight wait for the disk: beyond ChunkWindow writes a
// chunk is dropped (the retry asks for it again), and the retry timer does not run meanwhile.
func TestChunksBeyondAWindowOfWritesInFlightAreDropped(t *testing.T) {
	n := receiver(t)
	requests(n)
	n.step(t, chunk(0, 4))
	n.step(t, chunk(4, 8))
	n.step(t, chunk(8, 10))
	if len(n.fx.writes) != 2 {
		t.Fatalf("writes %d, want ChunkWindow = 2", len(n.fx.writes))
	}
	for range 10 * transferConfig().RetryTicks {
		n.d.Tick()
	}
	if got := requests(n); len(got) != 0 || len(n.fx.discards) != 0 {
		t.Fatalf("with writes in flight: requests %v, discards %v", got, n.fx.discards)
	}
	n.completeSnapshot()
	if got := requests(n); !slices.Equal(got, []uint64{8}) {
		t.Fatalf("requests %v, want [8]", got)
	}
}

// An install waits for the persist ahead of it, and chosen slots after the snapshot wait
// behind the install: the state machine sees the snapshot, then slots 10 and 11.
func TestChosenAfterAnInstallWaitsForIt(t *testing.T) {
	n := receiver(t)
	n.step(t, chunk(0, 4))
	n.step(t, chunk(4, 8))
	n.completeSnapshot()
	n.step(t, chunk(8, 10))
	n.step(t, accept(3, 1, 0, "b")) // a persist in flight ahead of the install
	n.completeSnapshot()            // the last write, the finish: core takes the snapshot
	if len(n.fx.installs) != 0 {
		t.Fatal("installed ahead of an earlier Ready's persist")
	}
	n.step(t, codec.Message{Type: codec.TypeCatchUpReply, From: 1, To: 3, Slot: 10, Commit: 12,
		Values: [][]byte{[]byte("x"), []byte("y")}})
	if slices.Contains(n.fx.applied, 10) || n.d.Status().Unapplied != 2 {
		t.Fatalf("applied %v, unapplied %d: slots after a pending install went early", n.fx.applied, n.d.Status().Unapplied)
	}
	n.persistAll()
	if !slices.Equal(n.fx.installs, []uint64{10}) || !slices.Equal(n.fx.applied, []uint64{10, 11}) ||
		n.fx.index("install 10") > n.fx.index("apply 10-11") {
		t.Fatalf("installs %v, applied %v, events %v", n.fx.installs, n.fx.applied, n.fx.events)
	}
}

// servedChunks returns the chunks sent as [offset, end) pairs (and forgets them).
func servedChunks(n *node) [][2]uint64 {
	var got [][2]uint64
	for _, m := range n.fx.outbox {
		if m.Type == codec.TypeSnapshotChunk && len(m.Data) > 0 {
			got = append(got, [2]uint64{m.Offset, m.Offset + uint64(len(m.Data))})
		}
	}
	n.fx.outbox = nil
	return got
}

// request is replica from's request for the snapshot of slot from offset, to replica 1.
func request(from uint32, slot, offset uint64) codec.Message {
	return codec.Message{Type: codec.TypeSnapshotChunk, From: from, To: 1, Slot: slot, Offset: offset, Total: offset}
}

// The sender reads one chunk at a time and sends a window per request; a newer request from
// the same peer replaces the one being served; ServesMax bounds the peers served at once.
func TestSenderServesOneWindowPerRequestOneReadAtATime(t *testing.T) {
	cfg := transferConfig()
	cfg.ServesMax = 1
	n := newNode(t, 1, []uint32{1, 2, 3}, cfg)
	n.fx.files[10] = snapshotFile
	n.step(t, request(3, 0, 0))
	if len(n.fx.reads) != 1 {
		t.Fatalf("reads %v, want one in flight", n.fx.reads)
	}
	n.step(t, request(2, 0, 0)) // beyond ServesMax: dropped
	n.completeSnapshot()
	n.completeSnapshot()
	if got := servedChunks(n); !slices.Equal(got, [][2]uint64{{0, 4}, {4, 8}}) {
		t.Fatalf("served %v, want one window", got)
	}
	if n.d.Status().Serving != 0 {
		t.Fatalf("still serving after the window: %+v", n.d.Status())
	}
	n.step(t, request(3, 10, 8))
	n.completeSnapshot()
	if got := servedChunks(n); !slices.Equal(got, [][2]uint64{{8, 10}}) {
		t.Fatalf("served %v, want the tail", got)
	}
	n.step(t, request(3, 0, 0))
	n.step(t, request(3, 10, 8)) // replaces the first while its read is in flight
	n.completeSnapshot()
	n.completeSnapshot()
	if got := servedChunks(n); !slices.Equal(got, [][2]uint64{{8, 10}}) {
		t.Fatalf("served %v, want only the newer request's chunk", got)
	}
	n.step(t, request(3, 99, 0)) // a snapshot this replica does not have: nothing is sent
	n.completeSnapshot()
	if got := servedChunks(n); len(got) != 0 || n.d.Status().Serving != 0 {
		t.Fatalf("served %v for a missing snapshot", got)
	}
}

// Three replicas: replica 3 is cut off while the others choose 12 slots and the leader
// compacts below 10. When the cut heals, replica 3 learns it must fetch a snapshot, fetches it
// across windows through the drivers on both sides, installs it, then catches up with the log.
func TestCutOffReplicaFetchesTheLeadersSnapshotAndCatchesUp(t *testing.T) {
	c := newCluster(t, 3, transferConfig())
	leader := c.elect()
	c.drop = func(m *codec.Message) bool { return m.To == 3 || m.From == 3 }
	c.propose(leader, 12)
	if st := leader.r.Status(); st.Applied != 12 {
		t.Fatalf("leader applied %d, want 12", st.Applied)
	}
	leader.fx.files[10] = snapshotFile
	leader.r.Compact(10)
	c.drop = nil
	follower := c.nodes[3]
	for range 40 {
		c.tick(1)
		if len(follower.fx.applied) == 2 {
			break
		}
	}
	if !slices.Equal(follower.fx.installs, []uint64{10}) || !slices.Equal(follower.fx.applied, []uint64{10, 11}) {
		t.Fatalf("replica 3: installs %v, applied %v; want [10], [10 11]", follower.fx.installs, follower.fx.applied)
	}
	if got := follower.fx.files[10]; !slices.Equal(got, snapshotFile) {
		t.Fatalf("replica 3 holds %q, want %q", got, snapshotFile)
	}
}
