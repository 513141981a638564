package mpaxos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/mpaxos/mpaxos/client"
	"github.com/mpaxos/mpaxos/pipeline"
)

// Errors returned by Node. Each is a sentinel; compare with errors.Is.
var (
	// ErrTimeout: the context (or Config.ProposeTimeout) ended before the outcome was known.
	// AMBIGUOUS: the command may or may not have been chosen, and if chosen it applies once.
	ErrTimeout = errors.New("mpaxos: timed out; the command may or may not have been applied")
	// ErrClosed: the Node is closed. A proposal outstanding at Close is AMBIGUOUS like
	// ErrTimeout.
	ErrClosed = errors.New("mpaxos: node closed")
	// ErrRejected: the cluster refused the command as it is; it was not applied.
	ErrRejected = errors.New("mpaxos: command rejected")
	// ErrTooLarge: the command exceeds the payload limit (Runtime.Network.Limits
	// .PayloadBytesMax); it was not applied.
	ErrTooLarge = errors.New("mpaxos: command too large")
	// ErrEmptyCommand: an empty command cannot be proposed (empty commands are the markers
	// Barrier sends); nothing was sent.
	ErrEmptyCommand = errors.New("mpaxos: empty command")
	// ErrCompacted: the offset is below the oldest one this node still holds; its history was
	// compacted into a snapshot (see Position().First).
	ErrCompacted = errors.New("mpaxos: offset compacted")
	// ErrNotApplied: the offset is not applied on this node yet. Barrier, then Read, to see
	// every acknowledged command.
	ErrNotApplied = errors.New("mpaxos: offset not applied yet")
	// ErrApplyLag: the command was chosen (it will apply exactly once) but the context ended
	// before this node applied it, so its offset is not known here yet. Not ambiguous.
	ErrApplyLag = errors.New("mpaxos: chosen but not yet applied on this node")
)

// Entry is one applied command.
type Entry struct {
	Offset   uint64 // dense position in the applied log: 0, 1, 2, ...
	Slot     uint64 // the Paxos slot whose batch holds it
	Index    uint32 // its position in that batch
	ClientID uint64 // the proposing node's client id (or an mpaxos client's)
	Seq      uint64 // the proposer's sequence number
	Payload  []byte
}

// StateMachine is the application state a Node keeps replicated (optional), in the manner of
// hashicorp/raft's FSM. Apply, Snapshot and Restore are called on the node's apply
// goroutine, never concurrently.
type StateMachine interface {
	// Apply is called for every command in offset order, on every node. e.Payload is valid
	// only during the call. A slow Apply slows the node.
	Apply(e Entry)
	// Snapshot captures the state as of the last Apply and returns a reader of it. It must be
	// cheap (a copy, or a copy-on-write view): the reader is read and closed on another
	// goroutine while Apply goes on.
	Snapshot() (io.ReadCloser, error)
	// Restore replaces the state with a snapshot's: at Start from the newest local snapshot,
	// or when a snapshot from a peer is installed because this node fell too far behind.
	Restore(r io.Reader) error
}

type stateMachineAdapter struct{ sm StateMachine }

func (a stateMachineAdapter) Apply(c pipeline.AppliedCommand) {
	a.sm.Apply(Entry(c))
}
func (a stateMachineAdapter) Snapshot() (io.ReadCloser, error) { return a.sm.Snapshot() }
func (a stateMachineAdapter) Restore(r io.Reader) error        { return a.sm.Restore(r) }

// LeaderChange is a change of the leader this node knows.
type LeaderChange struct {
	ID   uint32 // 0: no leader known
	Addr string
	Self bool // this node leads
}

// Node is one running replica embedded in the application. Safe for concurrent use.
type Node struct {
	cfg    Config
	rt     *pipeline.Node
	client *client.Client

	leaderCh chan LeaderChange
	quit     chan struct{}
	done     sync.WaitGroup

	closeMu sync.Mutex
	closed  bool
}

// Start opens (or creates) the node's data directory, recovers from its newest snapshot and
// write-ahead log, joins the cluster over TCP and returns the running Node. The cluster
// elects a leader once a majority of replicas run.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rt, err := pipeline.Start(cfg.runtime())
	if err != nil {
		return nil, fmt.Errorf("mpaxos: start: %w", err)
	}
	n := &Node{cfg: cfg, rt: rt, leaderCh: make(chan LeaderChange, 1), quit: make(chan struct{})}
	cc := client.DefaultConfig()
	cc.Endpoints = n.endpoints()
	cc.ClusterID = cfg.ClusterID
	cc.InflightMax = cfg.ProposeInflightMax
	cc.RequestTimeout = cfg.ProposeTimeout
	cc.Limits = cfg.Runtime.Network.Limits
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n.client, err = client.Dial(ctx, cc); err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer stopCancel()
		_ = rt.Stop(stopCtx)
		return nil, fmt.Errorf("mpaxos: start: connecting the proposal client: %w", err)
	}
	n.done.Add(1)
	go n.watchLeader()
	return n, nil
}

// endpoints lists this node first (no extra hop when it leads, and it is surely up), then
// the others in id order; redirects find the leader.
func (n *Node) endpoints() []string {
	eps := []string{n.rt.Addr()}
	ids := make([]uint32, 0, len(n.cfg.Peers))
	for id := range n.cfg.Peers {
		if id != n.cfg.ID {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		eps = append(eps, n.cfg.Peers[id])
	}
	return eps
}

// ID is this node's replica id.
func (n *Node) ID() uint32 { return n.cfg.ID }

// Addr is the address the node serves peers and mpaxos clients on.
func (n *Node) Addr() string { return n.rt.Addr() }

// Position is this node's applied log: offsets in [First, Next) are readable here.
type Position struct {
	First uint64 // older offsets are compacted
	Next  uint64 // the offset the next applied command takes
}

// Position returns the bounds of the applied log this node holds. Next is local and may lag
// the cluster; see Barrier.
func (n *Node) Position() Position {
	p := n.rt.Position()
	return Position{First: p.First, Next: p.Next}
}

// Leader returns the leader this node knows (0, "" if none).
func (n *Node) Leader() (id uint32, addr string) {
	id = n.rt.Status().Leader
	return id, n.cfg.Peers[id]
}

// LeaderCh delivers leader changes. It holds only the latest change: a reader that is slow
// misses intermediate ones but always sees the current leader. Closed by Close.
func (n *Node) LeaderCh() <-chan LeaderChange { return n.leaderCh }

func (n *Node) watchLeader() {
	defer n.done.Done()
	defer close(n.leaderCh)
	tick := time.NewTicker(n.cfg.Runtime.TickInterval)
	defer tick.Stop()
	var last uint32
	for {
		select {
		case <-n.quit:
			return
		case <-tick.C:
		}
		st := n.rt.Status()
		if st.Leader == last {
			continue
		}
		last = st.Leader
		change := LeaderChange{ID: st.Leader, Addr: n.cfg.Peers[st.Leader], Self: st.Leader == n.cfg.ID}
		select { // latest wins: replace an unread change
		case <-n.leaderCh:
		default:
		}
		n.leaderCh <- change
	}
}

func (n *Node) isClosed() bool {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	return n.closed
}

// Propose replicates cmd and returns its offset once it is chosen (accepted durably by a
// majority) and applied on this node, so Read(offset) here succeeds at once. It works on
// every node: a follower forwards to the leader. If ctx ends after the command was chosen but
// before this node applied it, the offset comes with ErrApplyLag (not ambiguous). With
// Config.ProposeNoLocalWait it returns as soon as the leader answered. See the package doc
// for which errors are ambiguous.
func (n *Node) Propose(ctx context.Context, cmd []byte) (uint64, error) {
	if len(cmd) == 0 {
		return 0, ErrEmptyCommand
	}
	res, err := n.append(ctx, cmd)
	if err != nil {
		return 0, err
	}
	return n.offsetOf(ctx, res)
}

func (n *Node) append(ctx context.Context, cmd []byte) (client.Result, error) {
	if n.isClosed() {
		return client.Result{}, ErrClosed
	}
	res, err := n.client.Append(ctx, cmd)
	return res, n.proposeError(err)
}

// proposeError maps the client's outcomes onto the package's sentinels.
func (n *Node) proposeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, client.ErrRejected):
		return fmt.Errorf("%w: %w", ErrRejected, err)
	case errors.Is(err, client.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	default: // timeouts, context ends, redirects exhausted: all ambiguous
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
}

// offsetOf returns the offset the leader's apply stage gave res, once this node has applied
// res's slot too (so a Read of it here succeeds right away). If ctx ends first, the offset
// comes with ErrApplyLag: the command is chosen, only this node is behind.
func (n *Node) offsetOf(ctx context.Context, res client.Result) (uint64, error) {
	if err := n.waitSlot(ctx, res.Slot); err != nil {
		return res.Offset, err
	}
	return res.Offset, nil
}

func (n *Node) waitSlot(ctx context.Context, slot uint64) error {
	if n.cfg.ProposeNoLocalWait {
		return nil
	}
	err := n.rt.WaitApplied(ctx, 0, slot+1)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pipeline.ErrStopped):
		return fmt.Errorf("%w: chosen at slot %d: %w", ErrApplyLag, slot, ErrClosed)
	default:
		return fmt.Errorf("%w: chosen at slot %d: %w", ErrApplyLag, slot, err)
	}
}

// ProposeBatch proposes every command at once and returns their offsets, in the order of
// cmds, once all are chosen and applied here. On an error some commands may have been
// applied: the ambiguity rules of Propose hold for each command that has no offset.
func (n *Node) ProposeBatch(ctx context.Context, cmds [][]byte) ([]uint64, error) {
	for i, c := range cmds {
		if len(c) == 0 {
			return nil, fmt.Errorf("%w: command %d", ErrEmptyCommand, i)
		}
	}
	if n.isClosed() {
		return nil, ErrClosed
	}
	type outcome struct {
		i   int
		res client.Result
		err error
	}
	ch := make(chan outcome, len(cmds)) // callbacks never block, even after we return
	submitted := 0
	var firstErr error
	for i, c := range cmds {
		if err := ctx.Err(); err != nil {
			firstErr = err
			break
		}
		i := i
		if err := n.client.AppendAsync(c, func(r client.Result, err error) { ch <- outcome{i, r, err} }); err != nil {
			firstErr = err
			break
		}
		submitted++
	}
	results := make([]client.Result, len(cmds))
	for k := 0; k < submitted; k++ {
		select {
		case o := <-ch:
			if o.err != nil && firstErr == nil {
				firstErr = o.err
			}
			results[o.i] = o.res
		case <-ctx.Done():
			return nil, n.proposeError(ctx.Err())
		}
	}
	if firstErr != nil {
		return nil, n.proposeError(firstErr)
	}
	offsets := make([]uint64, len(cmds))
	last := uint64(0)
	for i, r := range results {
		offsets[i] = r.Offset
		last = max(last, r.Slot)
	}
	if err := n.waitSlot(ctx, last); err != nil {
		return offsets, err
	}
	return offsets, nil
}

// Barrier returns a position N confirmed by a quorum: every command acknowledged (to any
// proposer) before Barrier was called has an offset below N, and this node has applied all
// of them, so Read of any such offset succeeds here (unless Config.ProposeNoLocalWait). It sends an empty marker command through
// the log — a paused old leader cannot answer, because the marker must be chosen by a
// majority in the current ballot. Markers take no offset.
func (n *Node) Barrier(ctx context.Context) (uint64, error) {
	res, err := n.append(ctx, nil)
	if err != nil {
		return 0, err
	}
	if err := n.waitSlot(ctx, res.Slot); err != nil {
		return res.Offset, err
	}
	// A marker takes no offset; its answer carries the offset the next command gets.
	return res.Offset, nil
}

// Read returns the command at offset from this node's applied log: from the cache of recent
// slots, else the write-ahead log. ErrNotApplied if this node has not applied it (yet),
// ErrCompacted if it was compacted.
func (n *Node) Read(offset uint64) (Entry, error) {
	if n.isClosed() {
		return Entry{}, ErrClosed
	}
	cmds, err := n.rt.ReadOffsets(offset, 1, 1, nil)
	if err != nil {
		return Entry{}, n.readError(err)
	}
	if len(cmds) == 0 {
		return Entry{}, fmt.Errorf("%w: offset %d", ErrNotApplied, offset)
	}
	return Entry(cmds[0]), nil
}

func (n *Node) readError(err error) error {
	switch {
	case errors.Is(err, pipeline.ErrCompacted):
		return fmt.Errorf("%w: %w", ErrCompacted, err)
	case errors.Is(err, pipeline.ErrNotApplied):
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	return err
}

// Close stops the node: outstanding proposals end with ErrClosed (ambiguous), subscriptions
// end with ErrClosed, and every goroutine, file and socket the node opened is released.
func (n *Node) Close() error {
	n.closeMu.Lock()
	if n.closed {
		n.closeMu.Unlock()
		return ErrClosed
	}
	n.closed = true
	n.closeMu.Unlock()
	close(n.quit)
	cerr := n.client.Close()
	if errors.Is(cerr, client.ErrClosed) {
		cerr = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := n.rt.Stop(ctx)
	n.done.Wait()
	return errors.Join(cerr, err)
}
