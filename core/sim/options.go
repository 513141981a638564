package sim

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"

	"github.com/mpaxos/mpaxos/core"
	"github.com/mpaxos/mpaxos/core/driver"
)

// Options shape one simulated run. Every random choice derives from Seed; DrawOptions draws
// the fault mix itself from the seed, so each seed runs a different mix.
type Options struct {
	Seed     uint64
	Replicas int

	FaultTicks int // ticks with faults and client load
	// QuietTicks: then the faults stop, and every pending command must be chosen and applied
	// everywhere within this bound plus the snapshot transfers' time (transferTicks).
	QuietTicks int

	// Core timers (ticks), drawn so a round trip plus a persist fits an election timeout.
	ElectionTicks   int
	HeartbeatTicks  int
	RetransmitTicks int

	// Network.
	DelayTicksMax    int // a message takes [0, DelayTicksMax] ticks (reordering follows)
	DropPercent      int // a message is lost
	DuplicatePercent int // a message is delivered twice
	// LongDelayPerMille: a message is held in the long-delay tail, [DelayTicksMax+1,
	// LongDelayTicksMax] ticks, so stale messages of earlier ballots and earlier lives arrive.
	LongDelayPerMille int
	LongDelayTicksMax int
	CompressPercent   int // a replica's encoder S2-compresses its frames (drawn per replica)

	// Partitions: one at a time, healing after [1, PartitionTicksMax] ticks. Of the new ones,
	// OneWayPercent cut one direction only (a set of replicas cannot reach the others, which
	// still reach it), ThreeWayPercent of the rest split the cluster into three groups.
	PartitionPerMille int
	PartitionTicksMax int
	OneWayPercent     int
	ThreeWayPercent   int

	// Disk.
	// PersistTicksMax: a write that syncs (entries, a hard state, a received snapshot made
	// durable) takes up to PersistTicksMax ticks on a slow disk (at least half of it), up to a
	// quarter of it on a fast one; each replica's disk is drawn. Snapshot reads and unsynced
	// writes take up to a quarter of it.
	PersistTicksMax int
	// PersistsInflightMax: each replica's driver keeps up to [1, PersistsInflightMax] (drawn per
	// replica) Readies persisting at once (driver.Config.PersistInflightMax).
	PersistsInflightMax int
	StallPerMille       int // per replica per tick, its disk stops completing anything
	StallTicksMax       int // for [1, StallTicksMax] ticks

	// The driver's hard-state policy: a commit-only hard state is saved at most once per
	// CommitSaveTicks ticks (driver.Config.CommitSaveTicks).
	CommitSaveTicks int

	// Snapshot transfer (driver.Config) and its faults. Chunks are lost, duplicated and delayed
	// by the network like every message.
	ChunkBytes                int
	ChunkWindow               int
	SnapshotRetryTicks        int
	SnapshotRetryLimit        int
	SnapshotWriteFailPercent  int // a write into the transfer's file fails
	SnapshotCorruptPercent    int // a write into the transfer's file flips one bit (verification must catch it)
	SnapshotFinishFailPercent int // verifying or syncing the received file fails
	// InstallCrashPercent: a replica crashes during a snapshot install (the install may have
	// truncated part of its log); FinishCrashPercent: right after a received snapshot became
	// durable, before it is installed.
	InstallCrashPercent int
	FinishCrashPercent  int

	// Crashes.
	CrashPerMille       int // per replica per tick
	DownTicksMax        int // a crashed replica restarts after [1, DownTicksMax] ticks,
	QuickRestartPercent int // or, this often, after 1 or 2

	// Pauses and clocks.
	PausePerMille int // per replica per tick: it neither ticks, steps nor persists, then resumes
	PauseTicksMax int // for [1, PauseTicksMax] ticks
	// TickSkewPercent: each replica's clock runs at a rate drawn in [100-skew, 100+skew]% of
	// the world's; TickJitterPercent adds [-jitter, +jitter]% per world tick. Replicas do not
	// tick in lockstep.
	TickSkewPercent   int
	TickJitterPercent int

	CampaignPerMille int // per replica per tick, a replica starts phase 1 unprompted (duels)
	CompactPerMille  int // per replica per tick, the application snapshots and compacts

	// Clients: each has up to ClientInflightMax commands outstanding, retried unanswered with
	// the same seq (to any leader). ProposePercent: per tick, some client submits a command.
	Clients           int
	ClientInflightMax int
	ProposePercent    int

	// LyingDisk makes a crash also lose the last persisted Ready that wrote anything (a disk
	// that acknowledged a sync it did not do). Only for testing that the simulator catches
	// broken durability.
	LyingDisk bool
	// Plant is a fault planted in the simulator's own driver or state machine (never in core),
	// to prove that an invariant catches it. Zero: none.
	Plant Plant

	// Config adjusts each replica's core.Config (after the simulator's defaults).
	Config func(*core.Config) `sim:"-"`
	// Driver adjusts each replica's driver.Config (after the simulator's draws).
	Driver func(*driver.Config) `sim:"-"`
}

// Plant names a bug planted in the simulator's own disks, network or state machine (the Ready
// handling is core/driver's; tests/planted plants bugs there).
type Plant int

const (
	PlantNone Plant = iota
	// PlantTornRecordReadWhole: a crash tears the last in-flight entry and the disk reads the
	// torn record back as whole (a WAL without record checksums): a value cut short.
	PlantTornRecordReadWhole
	// PlantForgetOwnPromise: a crash loses the hard state's promise if no entry carries it
	// (a hard-state file that was never fsynced): the candidate's own promise, durable in
	// core's eyes, is gone after the restart.
	PlantForgetOwnPromise
	// PlantLeaderPersistReportedEarly: a leader's disk reports its entries durable as soon as
	// it is asked to write them (they land at the usual time): the driver advances, and the
	// leader counts its own vote, before its disk holds it.
	PlantLeaderPersistReportedEarly
	// PlantForgetAcceptedOnCrash: a crash drops one accepted entry that was durable.
	PlantForgetAcceptedOnCrash
	// PlantStorageOffByOne: catch-up served from Storage returns the values one slot late.
	PlantStorageOffByOne
	// PlantSnapshotWithoutSessions: a snapshot saves the applied values but not the sessions
	// table, so a restored replica forgets which commands it applied.
	PlantSnapshotWithoutSessions
	// PlantPersistReportedEarly: every disk reports every write durable as soon as it is
	// asked for it: the driver sends the acks that vouch for it before the disk holds it.
	PlantPersistReportedEarly
	// PlantCorruptFrame: the network flips one bit in 1% of frames.
	PlantCorruptFrame
	// PlantSnapshotUnverified: FinishSnapshot makes a received file durable without checking
	// its size, its checksum or its format: a damaged transfer gets installed.
	PlantSnapshotUnverified
)

// Streams of randomness derived from the seed: the run's own, and the drawing of Options.
const (
	runStream  = 0x6d706178
	drawStream = 0x6f707473
)

// Liveness: after the faults stop, everything pending must be chosen everywhere within
// livenessElectionTimeouts election timeouts plus the long-delay tail (messages still held).
const livenessElectionTimeouts = 30

// DrawOptions draws a fault mix from the seed: each seed runs its own network delays, persist
// latency, crash, pause, partition, stall and campaign rates, long-delay tail, clock skew and
// load. The same seed always draws the same Options (Options.String prints them; -set pins
// any of them for a replay).
func DrawOptions(seed uint64, replicas int) Options {
	rng := rand.New(rand.NewPCG(seed, drawStream))
	between := func(lo, hi int) int { return lo + rng.IntN(hi-lo+1) }
	// sometimes: the fault is off for a third of the seeds, else drawn in [lo, hi].
	sometimes := func(lo, hi int) int {
		if rng.IntN(3) == 0 {
			return 0
		}
		return between(lo, hi)
	}
	o := Options{Seed: seed, Replicas: replicas, FaultTicks: 300}
	o.DelayTicksMax = between(1, 4)
	o.PersistTicksMax = between(0, 8*o.DelayTicksMax) // up to several network delays
	o.PersistsInflightMax = between(1, 8)
	o.DropPercent = sometimes(1, 15)
	o.DuplicatePercent = sometimes(1, 10)
	o.LongDelayPerMille = sometimes(5, 20)
	o.LongDelayTicksMax = 100
	o.CompressPercent = between(0, 100)
	o.PartitionPerMille = sometimes(2, 15)
	o.PartitionTicksMax = between(5, 60)
	o.OneWayPercent = between(0, 60)
	o.ThreeWayPercent = between(0, 60)
	o.CrashPerMille = sometimes(1, 30)
	o.DownTicksMax = between(1, 40)
	o.QuickRestartPercent = between(0, 90)
	o.PausePerMille = sometimes(1, 5)
	o.PauseTicksMax = between(1, 40)
	o.TickSkewPercent = sometimes(5, 40)
	o.TickJitterPercent = sometimes(5, 30)
	o.CampaignPerMille = sometimes(1, 20)
	o.CompactPerMille = sometimes(1, 10)
	o.Clients = between(1, 6)
	o.ClientInflightMax = between(1, 6)
	o.ProposePercent = between(20, 80)
	// Election timeout: a Prepare's round trip plus the slowest persist, with room to spare,
	// so elections converge once the faults stop.
	o.ElectionTicks = max(10, 2*o.DelayTicksMax+o.PersistTicksMax+4)
	o.HeartbeatTicks = max(2, o.ElectionTicks/5)
	o.RetransmitTicks = max(5, 2*o.DelayTicksMax+o.PersistTicksMax+1)
	o.StallPerMille = sometimes(1, 2)
	o.StallTicksMax = between(1, 3*o.ElectionTicks)
	o.CommitSaveTicks = between(0, 10)
	o.ChunkBytes = between(chunkBytesMin, chunkBytesMax)
	o.ChunkWindow = between(1, 4)
	// A retry interval outlasts a request's round trip and the sender's first read, or every
	// transfer would be given up before its first chunk (the clocks run up to 40% apart).
	reply := 2*o.DelayTicksMax + o.PersistTicksMax/4 + 1
	o.SnapshotRetryTicks = between(2*reply, 4*reply)
	o.SnapshotRetryLimit = between(0, 4)
	o.SnapshotWriteFailPercent = sometimes(1, 5)
	o.SnapshotCorruptPercent = sometimes(1, 5)
	o.SnapshotFinishFailPercent = sometimes(1, 20)
	o.InstallCrashPercent = sometimes(5, 50)
	o.FinishCrashPercent = sometimes(5, 30)
	o.QuietTicks = livenessElectionTimeouts*o.ElectionTicks + o.LongDelayTicksMax
	return o
}

// The chunk sizes drawn: a snapshot of a run is a few KiB to a few tens of KiB, so a transfer
// takes a few to a few hundred chunks.
const (
	chunkBytesMin = 128
	chunkBytesMax = 4096
)

// DefaultOptions returns the options the default test runs use for a seed: DrawOptions.
func DefaultOptions(seed uint64, replicas int) Options { return DrawOptions(seed, replicas) }

// QuietOptions: no faults at all, a steady load; scenario tests add the one fault they study.
func QuietOptions(seed uint64, replicas int) Options {
	return Options{
		Seed: seed, Replicas: replicas, FaultTicks: 300, QuietTicks: 400,
		ElectionTicks: 10, HeartbeatTicks: 2, RetransmitTicks: 5,
		DelayTicksMax: 1, LongDelayTicksMax: 100, PersistTicksMax: 1, PersistsInflightMax: 4,
		DownTicksMax: 1, PartitionTicksMax: 1, PauseTicksMax: 1, StallTicksMax: 1,
		CommitSaveTicks: driver.DefaultCommitSaveTicks, ChunkBytes: 1024, ChunkWindow: 4,
		SnapshotRetryTicks: 20, SnapshotRetryLimit: 4,
		Clients: 3, ClientInflightMax: 4, ProposePercent: 50,
	}
}

// Validate reports options the simulator cannot run.
func (o *Options) Validate() error {
	switch {
	case o.Replicas < 1 || o.Replicas > 9:
		return fmt.Errorf("sim: Replicas %d, want 1..9", o.Replicas)
	case o.ElectionTicks <= o.HeartbeatTicks || o.HeartbeatTicks < 1 || o.RetransmitTicks < 1:
		return fmt.Errorf("sim: timers ElectionTicks %d, HeartbeatTicks %d, RetransmitTicks %d", o.ElectionTicks, o.HeartbeatTicks, o.RetransmitTicks)
	case o.DelayTicksMax < 0 || o.PersistTicksMax < 0 || o.PersistsInflightMax < 1:
		return fmt.Errorf("sim: DelayTicksMax %d, PersistTicksMax %d, PersistsInflightMax %d", o.DelayTicksMax, o.PersistTicksMax, o.PersistsInflightMax)
	case o.DownTicksMax < 1 || o.PartitionTicksMax < 1 || o.PauseTicksMax < 1 || o.StallTicksMax < 1:
		return fmt.Errorf("sim: DownTicksMax, PartitionTicksMax, PauseTicksMax and StallTicksMax must be >= 1")
	case o.LongDelayTicksMax <= o.DelayTicksMax && o.LongDelayPerMille > 0:
		return fmt.Errorf("sim: LongDelayTicksMax %d must exceed DelayTicksMax %d", o.LongDelayTicksMax, o.DelayTicksMax)
	case o.Clients < 1 || o.ClientInflightMax < 1:
		return fmt.Errorf("sim: Clients %d, ClientInflightMax %d, want >= 1", o.Clients, o.ClientInflightMax)
	case o.TickSkewPercent < 0 || o.TickSkewPercent > 90 || o.TickJitterPercent < 0:
		return fmt.Errorf("sim: TickSkewPercent %d (0..90), TickJitterPercent %d", o.TickSkewPercent, o.TickJitterPercent)
	case o.CommitSaveTicks < 0 || o.ChunkBytes < 1 || o.ChunkWindow < 1 || o.SnapshotRetryTicks < 1 || o.SnapshotRetryLimit < 0:
		return fmt.Errorf("sim: CommitSaveTicks %d, ChunkBytes %d, ChunkWindow %d, SnapshotRetryTicks %d, SnapshotRetryLimit %d",
			o.CommitSaveTicks, o.ChunkBytes, o.ChunkWindow, o.SnapshotRetryTicks, o.SnapshotRetryLimit)
	}
	return nil
}

// String prints every option as Name=value, space-separated: what a failing seed ran with,
// and what -set takes back.
func (o Options) String() string {
	v := reflect.ValueOf(o)
	var parts []string
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Tag.Get("sim") == "-" {
			continue
		}
		switch x := v.Field(i); x.Kind() {
		case reflect.Int, reflect.Uint64:
			parts = append(parts, fmt.Sprintf("%s=%v", f.Name, x.Interface()))
		case reflect.Bool:
			if x.Bool() {
				parts = append(parts, f.Name+"=true")
			}
		}
	}
	return strings.Join(parts, " ")
}

// Set overrides options from "Name=value Name=value" (String's format; commas also separate).
func (o *Options) Set(s string) error {
	v := reflect.ValueOf(o).Elem()
	for _, kv := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' }) {
		name, value, ok := strings.Cut(kv, "=")
		f := v.FieldByName(name)
		if !ok || !f.IsValid() {
			return fmt.Errorf("sim: -set %q: no option %q", kv, name)
		}
		switch f.Kind() {
		case reflect.Int:
			n, err := strconv.Atoi(value)
			if err != nil {
				return fmt.Errorf("sim: -set %q: %v", kv, err)
			}
			f.SetInt(int64(n))
		case reflect.Uint64:
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return fmt.Errorf("sim: -set %q: %v", kv, err)
			}
			f.SetUint(n)
		case reflect.Bool:
			b, err := strconv.ParseBool(value)
			if err != nil {
				return fmt.Errorf("sim: -set %q: %v", kv, err)
			}
			f.SetBool(b)
		default:
			return fmt.Errorf("sim: -set %q: option %s cannot be set", kv, name)
		}
	}
	return nil
}
