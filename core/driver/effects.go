package driver

import (
	"fmt"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/core"
)

// Effects is everything the driver does to the world, implemented by its caller (the
// pipeline's step loop; the simulator). Every method returns at once: work that takes time
// (an fsync, a file read) is started and its completion reported later through the Driver's
// completion methods (Persisted, SnapshotReadDone, SnapshotWritten, SnapshotFinished), on the
// goroutine that owns the Driver. A method must not call back into the Driver.
type Effects interface {
	// Send delivers m to replica m.To. m and its slices are valid only during the call (the
	// pipeline encodes it at once).
	Send(m *codec.Message)

	// PersistEntries makes entries durable after the entries of every earlier PersistEntries
	// (a FIFO of writes, such as one group-committing WAL queue: a crash may lose a suffix of
	// them, possibly torn), then reports Persisted(seq, PartEntries). entries is core's and is
	// never modified.
	PersistEntries(seq uint64, entries []codec.Entry)
	// SaveHardState makes hs durable after every earlier SaveHardState (the latest supersedes),
	// then reports Persisted(seq, PartHardState). It may become durable before earlier Readies'
	// entries: the promise only rises, and the commit point covers only entries that were
	// durable when core made the Ready.
	SaveHardState(seq uint64, hs core.HardState)

	// Apply hands chosen entries, contiguous and in slot order, to the state machine.
	Apply(chosen []codec.Entry)
	// InstallSnapshot asks the state machine to install the snapshot of slot, after every entry
	// applied before and before every entry applied after. Its file is durable already
	// (FinishSnapshot succeeded before core heard of it), so a crash during the install leaves
	// a replica that restarts from it.
	InstallSnapshot(slot uint64)

	// ReadSnapshot reads bytes of a local snapshot to serve a peer; report SnapshotReadDone.
	ReadSnapshot(read SnapshotRead)
	// WriteSnapshot writes received bytes into the transfer's temporary file (Offset 0: create
	// it, truncating any left from before); report SnapshotWritten. Data is the Data of the
	// chunk message the caller passed to Step: the effects may keep it only while the caller
	// leaves that memory alone (the pipeline hands Step fresh copies).
	WriteSnapshot(write SnapshotWrite)
	// FinishSnapshot verifies the transfer's file (Total bytes, CRC-32C Checksum over them,
	// and whatever the file's own format checks) and makes it durable under its final name
	// (fsync, rename, fsync of the directory); report SnapshotFinished. Only then does core
	// hear of the snapshot.
	FinishSnapshot(finish SnapshotFinish)
	// DiscardSnapshot: the transfer ended without a snapshot (reason says why). If Bytes > 0
	// its temporary file exists and is removed; no operation of it is in flight any more, and
	// nothing is reported back.
	DiscardSnapshot(discard SnapshotDiscard)
}

// Part names one durable part of a Ready's persist.
type Part uint8

// Parts of a persist. A Ready whose parts are all durable is finished once every earlier
// Ready is.
const (
	PartEntries Part = 1 << iota
	PartHardState
)

func (p Part) String() string {
	switch p {
	case PartEntries:
		return "entries"
	case PartHardState:
		return "hard state"
	}
	return fmt.Sprintf("Part(%d)", uint8(p))
}

// SnapshotRead asks for bytes of a local snapshot file, to serve peer Peer.
type SnapshotRead struct {
	Serve    uint64 // names the request being served; echoed back
	Peer     uint32
	Slot     uint64 // the snapshot of this slot; 0: the newest local one
	Offset   uint64
	BytesMax int
}

// SnapshotChunk is what a SnapshotRead read.
type SnapshotChunk struct {
	Slot     uint64 // the snapshot read (the newest when SnapshotRead.Slot was 0)
	Total    uint64 // the file's bytes
	Checksum uint32 // CRC-32C of the whole file
	Data     []byte // from SnapshotRead.Offset, at most BytesMax; valid only during the call
}

// SnapshotWrite is received snapshot bytes to write at Offset of the transfer's file.
type SnapshotWrite struct {
	Transfer uint64 // names the transfer; every write of one transfer carries it
	Slot     uint64
	Offset   uint64
	Data     []byte
}

// SnapshotFinish asks to verify and make durable a transfer's file.
type SnapshotFinish struct {
	Transfer uint64
	From     uint32 // the peer it came from
	Slot     uint64
	Total    uint64
	Checksum uint32
}

// SnapshotDiscard reports a transfer that ended without a snapshot.
type SnapshotDiscard struct {
	Transfer uint64
	From     uint32
	Slot     uint64 // 0 if no chunk named it
	Bytes    uint64 // bytes handed to WriteSnapshot: 0 means no file was created
	Total    uint64
	Reason   error
}
