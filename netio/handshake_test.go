package netio

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// relayAttacker listens where replica 2 should be (replica 2 is down) and has no secret. Every
// connector that dials it is relayed to target: target's Challenge goes to the connector, the
// connector's Hello goes to target. If target answers with a Welcome, the attacker holds a
// link authenticated as the connector and sends a Prepare in its name.
type relayAttacker struct {
	ln       net.Listener
	target   string
	mu       sync.Mutex
	relayed  int      // Hellos relayed to target
	welcomed []uint32 // the replica ids target welcomed the attacker as
	wg       sync.WaitGroup
}

func startRelayAttacker(t *testing.T, target string) *relayAttacker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &relayAttacker{ln: ln, target: target}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			victim, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer victim.Close()
				a.relay(t, victim)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); a.wg.Wait() })
	return a
}

func (a *relayAttacker) relay(t *testing.T, victimConn net.Conn) {
	targetConn, err := net.DialTimeout("tcp", a.target, 2*time.Second)
	if err != nil {
		return
	}
	defer targetConn.Close()
	victim := &rawConn{t: t, conn: victimConn}
	target := &rawConn{t: t, conn: targetConn}
	_, challenge, err := target.readFrame(2 * time.Second)
	if err != nil || victim.write(challenge) != nil {
		return
	}
	typ, helloFrame, err := victim.readFrame(2 * time.Second)
	if err != nil || typ != codec.TypeHello || target.write(helloFrame) != nil {
		return
	}
	var hello codec.Hello
	if codec.DecodeHello(helloFrame, &hello, nil) != nil {
		return
	}
	a.mu.Lock()
	a.relayed++
	a.mu.Unlock()
	typ, _, err = target.readFrame(2 * time.Second)
	if err != nil || typ != codec.TypeWelcome {
		return // refused: what must happen
	}
	a.mu.Lock()
	a.welcomed = append(a.welcomed, hello.ReplicaID)
	a.mu.Unlock()
	// In the victim's name: a Prepare with a high ballot would depose any leader.
	prepare := codec.Message{Type: codec.TypePrepare, From: hello.ReplicaID, To: 3,
		Ballot: codec.Ballot{Round: 1 << 40, Replica: hello.ReplicaID}, Slot: 1}
	_ = target.write(codec.AppendMessage(nil, &prepare))
	time.Sleep(100 * time.Millisecond)
}

func (a *relayAttacker) results() (relayed int, welcomedAs []uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.relayed, append([]uint32(nil), a.welcomed...)
}

// Issue 15, defect 3: with replica 2 down, a process without the secret that binds replica 2's
// address relays replica 1's proof (made for "replica 2") to replica 3. Replica 3 must refuse
// it: the proof names the responder replica 1 meant to reach, not replica 3.
func TestRelayedHandshakeIsRefused(t *testing.T) {
	addrs := freeAddrs(t, 2)
	h3 := &testHandler{}
	s3 := startServer(t, testConfig(3, addrs[1], map[uint32]string{1: addrs[0]}), h3)
	attacker := startRelayAttacker(t, s3.Addr())
	s1 := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: attacker.ln.Addr().String(), 3: s3.Addr()}), &testHandler{})

	// Replica 1 redials "replica 2" (the attacker) with backoff: several relays are tried.
	waitFor(t, 5*time.Second, "three relayed Hellos", func() bool {
		relayed, _ := attacker.results()
		return relayed >= 3
	})
	time.Sleep(200 * time.Millisecond) // let the last relay finish
	if relayed, welcomed := attacker.results(); len(welcomed) != 0 {
		t.Fatalf("replica 3 welcomed %d of %d relays, as replica(s) %v", len(welcomed), relayed, welcomed)
	}
	if got := s3.Stats().HandshakeFailures; got < 3 {
		t.Fatalf("replica 3 counted %d handshake failures, want >= 3", got)
	}
	if got := h3.received(); len(got) != 0 {
		t.Fatalf("replica 3 handled %d messages injected through the relay, first %+v", len(got), got[0])
	}
	if st := s1.Stats(); st.PeersConnected != 1 {
		t.Fatalf("replica 1 links up: %d, want 1 (to replica 3 only)", st.PeersConnected)
	}
}

// reflectingServer plays replica 2's server without the secret: it answers every connector's
// Hello with a Welcome carrying the connector's own proof (and its nonce as the Challenge's),
// as if the initiator's proof could pass for the responder's.
func startReflectingServer(t *testing.T) (addr string, helloSeen func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	hellos := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				r := &rawConn{t: t, conn: conn}
				challenge := codec.Challenge{Version: codec.HandshakeVersion, ClusterID: testClusterID, Nonce: [codec.NonceSize]byte{7}}
				if r.write(codec.AppendChallenge(nil, &challenge)) != nil {
					return
				}
				typ, frame, err := r.readFrame(2 * time.Second)
				var hello codec.Hello
				if err != nil || typ != codec.TypeHello || codec.DecodeHello(frame, &hello, nil) != nil {
					return
				}
				mu.Lock()
				hellos++
				mu.Unlock()
				welcome := codec.Welcome{ReplicaID: 2, Features: hello.Features, MAC: hello.MAC}
				_ = r.write(codec.AppendWelcome(nil, &welcome))
				time.Sleep(100 * time.Millisecond)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return hellos }
}

// A proof is bound to its direction: the connector's own proof, reflected back to it as the
// server's, must not bring the link up.
func TestReflectedProofIsRefused(t *testing.T) {
	addr, hellos := startReflectingServer(t)
	addrs := freeAddrs(t, 1)
	s1 := startServer(t, testConfig(1, addrs[0], map[uint32]string{2: addr}), &testHandler{})
	waitFor(t, 5*time.Second, "reflected Welcomes refused", func() bool {
		return hellos() >= 2 && s1.Stats().HandshakeFailures >= 2
	})
	if st := s1.Stats(); st.PeersConnected != 0 || st.Reconnects != 0 {
		t.Fatalf("link to the reflecting server came up: %+v", st)
	}
}
