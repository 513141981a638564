package hostile

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/netio"
)

// The flood of issue 15, defect 6, held on every replica: more idle clients than the replica
// admits, plus more silent connections (never a Hello) than it keeps in the handshake, each
// reopened as soon as it is closed. Before the fix peers shared ConnectionsMax (4,096) with
// them, and a restarted follower never rejoined.
const (
	floodClients = netio.DefaultClientConnectionsMax + 16
	floodSilent  = netio.DefaultHandshakesMax + 100
	// How soon a closed connection is opened again. A client slot freed anywhere is retaken
	// within floodClientReopen. Silent connections are closed every HandshakeTimeout (1 s)
	// and displaced past HandshakesMax, so floodSilentReopen sets their churn: about a
	// thousand connections a second per replica.
	floodClientReopen = 100 * time.Millisecond
	floodSilentReopen = time.Second
	// floodDialsMax bounds the flood's connections being opened at once per replica: the
	// attack is connections held, not a connection rate (that one is for the kernel and the
	// firewall: every accepted connection costs a few system calls, whatever netio does).
	floodDialsMax = 256
	// rejoinWithin: how long the restarted follower may take to apply what the leader had
	// applied when it came back.
	rejoinWithin = 20 * time.Second
)

func TestConnectionFloodDoesNotKeepARestartedFollowerOut(t *testing.T) {
	e := startEnv(t)
	leader := e.leader(5 * time.Second)
	follower := leader%3 + 1
	var ids []int
	for _, n := range e.cluster.Nodes() {
		ids = append(ids, n.ID)
	}

	baseline := e.load.rate(2 * time.Second)
	f := &flood{clusterID: e.cluster.ClusterID(), end: make(chan struct{})}
	t.Cleanup(f.stop)
	for _, n := range e.cluster.Nodes() {
		f.start(n.ListenAddr, floodClients, true)
	}
	// Until every replica is full: the count of held clients stops growing.
	last, lastChange := int64(-1), time.Now()
	waitUntil(t, 90*time.Second, "the flood filling every replica", func() bool {
		if held := f.held.Load(); held != last {
			last, lastChange = held, time.Now()
		}
		return last > 0 && time.Since(lastChange) > 3*time.Second
	})
	for _, n := range e.cluster.Nodes() {
		f.start(n.ListenAddr, floodSilent, false)
	}
	time.Sleep(2 * time.Second)
	warnsBefore := map[int]int{}
	for _, id := range ids {
		warnsBefore[id] = countLines(e.cluster.Node(id).LogPath, "level=WARN")
	}
	floodStart := time.Now()

	if err := e.cluster.Kill(follower); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the leader goes on without it
	if err := e.cluster.Start(follower); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	target, _ := e.applied(leader)
	var got uint64
	rejoined := false
	for time.Since(restarted) < rejoinWithin {
		if a, ok := e.applied(follower); ok {
			got = a.Slot
			if got >= target.Slot {
				rejoined = true
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(restarted)
	rate := e.load.rate(2 * time.Second)
	floodFor := time.Since(floodStart)
	var warns []int
	for _, id := range ids {
		warns = append(warns, countLines(e.cluster.Node(id).LogPath, "level=WARN")-warnsBefore[id])
	}
	t.Logf("flood of %d idle clients and %d silent connections per replica (%d held at the restart, %d reopened); "+
		"follower %d restarted: applied slot %d of the leader's %d after %v (rejoined: %v); load %.0f acks/s before, %.0f after; "+
		"WARN lines per replica over %v of flood: %v; leader %d warnings %v",
		floodClients, floodSilent, f.held.Load(), f.reopened.Load(), follower, got, target.Slot, took.Round(100*time.Millisecond),
		rejoined, baseline, rate, floodFor.Round(time.Second), warns, leader, e.warnSummary(leader))
	if !rejoined {
		t.Errorf("restarted follower %d applied slot %d, not the leader's %d, after %v under the flood",
			follower, got, target.Slot, rejoinWithin)
	}
	if rate < baseline/10 {
		t.Errorf("load %.0f acks/s under the flood, below a tenth of %.0f before", rate, baseline)
	}
	// One line per reason per WarnInterval (1 s): a handful of reasons, never one per connection.
	for i, n := range warns {
		if limit := 8 * (int(floodFor/netio.DefaultWarnInterval) + 1); n > limit {
			t.Errorf("replica %d logged %d warnings in %v of flood, more than %d", ids[i], n, floodFor.Round(time.Second), limit)
		}
	}
}

// flood holds connections to replicas, reopening each one closed (floodClientReopen,
// floodSilentReopen).
type flood struct {
	clusterID uint64
	held      atomic.Int64 // client connections past their Welcome, open now
	reopened  atomic.Int64
	end       chan struct{}
	wg        sync.WaitGroup
	conns     sync.Map // net.Conn -> struct{}: closed by stop
	mu        sync.Mutex
	dials     map[string]chan struct{} // per replica address: a slot per connection being opened
}

// start opens count connections to addr: clients, or silent ones.
func (f *flood) start(addr string, count int, client bool) {
	f.mu.Lock()
	if f.dials == nil {
		f.dials = map[string]chan struct{}{}
	}
	dials := f.dials[addr]
	if dials == nil {
		dials = make(chan struct{}, floodDialsMax)
		f.dials[addr] = dials
	}
	f.mu.Unlock()
	for i := range count {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for first := true; ; first = false {
				if !first {
					f.reopened.Add(1)
					reopen := floodSilentReopen
					if client {
						reopen = floodClientReopen
					}
					select {
					case <-f.end:
						return
					case <-time.After(reopen):
					}
				}
				f.hold(addr, client, uint64(i+1), dials)
				select {
				case <-f.end:
					return
				default:
				}
			}
		}()
	}
}

// hold opens one connection and keeps it until the replica closes it or the flood ends: a
// client completes its handshake and then says nothing; a silent one never says Hello.
func (f *flood) hold(addr string, client bool, clientID uint64, dials chan struct{}) {
	select {
	case dials <- struct{}{}:
	case <-f.end:
		return
	}
	opened := false
	defer func() {
		if !opened {
			<-dials
		}
	}()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	f.conns.Store(conn, struct{}{})
	defer func() { f.conns.Delete(conn); conn.Close() }()
	select {
	case <-f.end:
		return
	default:
	}
	if client {
		if !floodHandshake(conn, f.clusterID, clientID) {
			return
		}
		f.held.Add(1)
		defer f.held.Add(-1)
	}
	opened = true
	<-dials
	var one [64]byte
	for {
		if _, err := conn.Read(one[:]); err != nil {
			return
		}
	}
}

// floodHandshake completes a client handshake with fixed-size reads (no buffers to hold).
func floodHandshake(conn net.Conn, clusterID, clientID uint64) bool {
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	challenge := make([]byte, len(codec.AppendChallenge(nil, &codec.Challenge{})))
	if _, err := io.ReadFull(conn, challenge); err != nil {
		return false
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: clusterID, ClientID: clientID}
	if _, err := conn.Write(codec.AppendHello(nil, &hello)); err != nil {
		return false
	}
	welcome := make([]byte, len(codec.AppendWelcome(nil, &codec.Welcome{})))
	_, err := io.ReadFull(conn, welcome)
	return err == nil
}

func (f *flood) stop() {
	select {
	case <-f.end:
		return
	default:
	}
	close(f.end)
	f.conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	f.wg.Wait()
}

// waitUntil polls cond every 100 ms until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
