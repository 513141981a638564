package hostile

import (
	"crypto/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Issue 15, defect 3: with a replica stopped, a process without the secret binds its address.
// Every other replica's peer link dials it. It relays each connector to another live replica
// (that replica's Challenge to the connector, the connector's Hello back), and answers others
// itself with the connector's own proof reflected as the Welcome's. A relayed Hello that is
// welcomed lets it inject peer messages in the connector's name: before the fix, one Prepare
// deposed the leader. Both must be refused, and the cluster must keep its leader and its load.
func TestRelayedAndReflectedHandshakesAreRefused(t *testing.T) {
	e := startEnv(t)
	leader := e.leader(5 * time.Second)
	stopped := leader%3 + 1 // a follower: the other two keep a majority and the leader
	var live []int
	for _, n := range e.cluster.Nodes() {
		if n.ID != stopped {
			live = append(live, n.ID)
		}
	}
	baseline := e.load.rate(2 * time.Second)
	changesBefore := e.leaderChanges(live)
	if err := e.cluster.Kill(stopped); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", e.cluster.Node(stopped).ListenAddr)
	if err != nil {
		t.Fatalf("binding the stopped replica's address: %v", err)
	}
	a := &impostor{ln: ln, stopped: uint32(stopped), clusterID: e.cluster.ClusterID()}
	for _, id := range live {
		a.targets = append(a.targets, replicaAddr{uint32(id), e.cluster.Node(id).ListenAddr})
	}
	a.start()
	time.Sleep(8 * time.Second) // the live replicas redial the stopped one every 2 s at most
	a.stop()

	st := a.results()
	after := e.load.rate(2 * time.Second)
	leaderAfter := e.leader(5 * time.Second)
	changes := e.leaderChanges(live) - changesBefore
	t.Logf("impostor at replica %d's address: %d relays, %d welcomed (as %v); %d reflections, %d kept open; "+
		"leader %d before, %d after, %.0f leader changes seen by the live replicas; load %.0f acks/s before, %.0f after",
		stopped, st.relays, len(st.welcomedAs), st.welcomedAs, st.reflections, st.reflectionsKept,
		leader, leaderAfter, changes, baseline, after)
	if st.relays < 2 || st.reflections < 2 {
		t.Fatalf("the attack did not run: %d relays, %d reflections", st.relays, st.reflections)
	}
	if len(st.welcomedAs) != 0 {
		t.Errorf("%d relayed Hellos welcomed, in the name of replica(s) %v", len(st.welcomedAs), st.welcomedAs)
	}
	if st.reflectionsKept != 0 {
		t.Errorf("%d connectors kept a link whose Welcome reflected their own proof", st.reflectionsKept)
	}
	if leaderAfter != leader || changes != 0 {
		t.Errorf("leader %d before, %d after, %.0f leader changes during the attack", leader, leaderAfter, changes)
	}
	if after < baseline/2 {
		t.Errorf("load %.0f acks/s after the attack, under half of %.0f before", after, baseline)
	}
}

// impostor is the process at the stopped replica's address.
type impostor struct {
	ln        net.Listener
	stopped   uint32
	clusterID uint64
	targets   []replicaAddr // the live replicas

	mu  sync.Mutex
	st  impostorResults
	n   int // connections accepted
	wg  sync.WaitGroup
	end chan struct{}
}

type replicaAddr struct {
	id   uint32
	addr string
}

type impostorResults struct {
	relays          int      // Hellos relayed to another replica
	welcomedAs      []uint32 // replica ids a relay was welcomed as
	reflections     int      // Welcomes sent with the connector's own proof
	reflectionsKept int      // connectors that did not close after such a Welcome
}

func (a *impostor) start() {
	a.end = make(chan struct{})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			conn, err := a.ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			k := a.n
			a.n++
			a.mu.Unlock()
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer conn.Close()
				if k%3 == 2 {
					a.reflect(conn)
				} else {
					a.relay(conn, a.targets[k%len(a.targets)])
				}
			}()
		}
	}()
}

func (a *impostor) stop() {
	close(a.end)
	a.ln.Close()
	a.wg.Wait()
}

func (a *impostor) results() impostorResults {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// relay forwards target's Challenge to the connector and the connector's Hello to target. A
// connector relayed to itself is refused for naming its own id; one relayed to the other
// live replica is the attack.
func (a *impostor) relay(connector net.Conn, target replicaAddr) {
	server, err := net.DialTimeout("tcp", target.addr, 2*time.Second)
	if err != nil {
		return
	}
	defer server.Close()
	s, c := &rawClient{conn: server, r: newReader(server)}, &rawClient{conn: connector, r: newReader(connector)}
	deadline := time.Now().Add(3 * time.Second)
	_ = server.SetDeadline(deadline)
	_ = connector.SetDeadline(deadline)
	_, challenge, err := s.readFrame()
	if err != nil {
		return
	}
	if _, err := connector.Write(challenge); err != nil {
		return
	}
	typ, frame, err := c.readFrame()
	var hello codec.Hello
	if err != nil || typ != codec.TypeHello || codec.DecodeHello(frame, &hello, nil) != nil {
		return
	}
	if _, err := server.Write(frame); err != nil {
		return
	}
	a.mu.Lock()
	a.st.relays++
	a.mu.Unlock()
	if typ, _, err := s.readFrame(); err != nil || typ != codec.TypeWelcome {
		return // refused
	}
	a.mu.Lock()
	a.st.welcomedAs = append(a.st.welcomedAs, hello.ReplicaID)
	a.mu.Unlock()
	// Welcomed in the connector's name: a Prepare with a high ballot, as that replica.
	prepare := codec.Message{Type: codec.TypePrepare, From: hello.ReplicaID, To: target.id,
		Ballot: codec.Ballot{Round: 1 << 40, Replica: hello.ReplicaID}, Slot: 1}
	_, _ = server.Write(codec.AppendMessage(nil, &prepare))
	time.Sleep(500 * time.Millisecond)
}

// reflect plays the stopped replica's server: a Challenge of its own, then a Welcome whose
// proof is the connector's Hello proof.
func (a *impostor) reflect(connector net.Conn) {
	version := a.liveHandshakeVersion()
	if version == 0 {
		return
	}
	challenge := codec.Challenge{Version: version, ClusterID: a.clusterID}
	_, _ = rand.Read(challenge.Nonce[:])
	_ = connector.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := connector.Write(codec.AppendChallenge(nil, &challenge)); err != nil {
		return
	}
	c := &rawClient{conn: connector, r: newReader(connector)}
	typ, frame, err := c.readFrame()
	var hello codec.Hello
	if err != nil || typ != codec.TypeHello || codec.DecodeHello(frame, &hello, nil) != nil {
		return
	}
	welcome := codec.Welcome{ReplicaID: a.stopped, Features: hello.Features, MAC: hello.MAC}
	if _, err := connector.Write(codec.AppendWelcome(nil, &welcome)); err != nil {
		return
	}
	kept := !closedWithin(connector, time.Second)
	a.mu.Lock()
	a.st.reflections++
	if kept {
		a.st.reflectionsKept++
	}
	a.mu.Unlock()
}

// liveHandshakeVersion reads the handshake version a live replica announces, so the
// reflection speaks the version the connectors expect (0 if none answers).
func (a *impostor) liveHandshakeVersion() uint16 {
	conn, err := net.DialTimeout("tcp", a.targets[0].addr, 2*time.Second)
	if err != nil {
		return 0
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	c := &rawClient{conn: conn, r: newReader(conn)}
	_, frame, err := c.readFrame()
	var challenge codec.Challenge
	if err != nil || codec.DecodeChallenge(frame, &challenge, nil) != nil {
		return 0
	}
	return challenge.Version
}
