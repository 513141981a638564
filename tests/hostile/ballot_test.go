package hostile

import (
	"crypto/rand"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Issue 15, defect 1: one Prepare with round 2^64-1 killed every replica, permanently (the
// next campaign wrapped to round 0 and core panicked; the ballot, saved, crashed every
// restart). Sent here by a process that knows the secret, in a member's name, to every
// replica of a loaded cluster (from a slot above every log start, so it is not refused as a
// catch-up case): every replica must stay up, and the load must go on.
func TestHugeBallotKillsNoReplica(t *testing.T) {
	e := startEnv(t)
	leader := e.leader(5 * time.Second)
	sender := uint32(leader%3 + 1) // a follower's name
	baseline := e.load.rate(2 * time.Second)
	for _, n := range e.cluster.Nodes() {
		if uint32(n.ID) == sender {
			continue
		}
		for _, round := range []uint64{1<<64 - 1, 1 << 63} {
			if err := sendAsPeer(n.ListenAddr, e.cluster.ClusterID(), []byte(e.cluster.Secret()), sender, uint32(n.ID),
				codec.Message{Type: codec.TypePrepare, From: sender, To: uint32(n.ID),
					Ballot: codec.Ballot{Round: round, Replica: sender}, Slot: 1 << 40}); err != nil {
				t.Fatalf("sending the Prepare to replica %d: %v", n.ID, err)
			}
		}
	}
	time.Sleep(3 * time.Second) // several election timeouts: a campaign would have wrapped by now
	for _, n := range e.cluster.Nodes() {
		var st map[string]any
		if err := getJSON(n.AdminAddr, "/debug/status", &st); err != nil {
			t.Errorf("replica %d does not answer after the Prepare: %v", n.ID, err)
		}
	}
	after := e.load.rate(2 * time.Second)
	t.Logf("load %.0f acks/s before, %.0f after Prepares in rounds 2^64-1 and 2^63", baseline, after)
	if after < baseline/2 {
		t.Errorf("load %.0f acks/s after, under half of %.0f before", after, baseline)
	}
}

// sendAsPeer completes the peer handshake as replica from with replica to at addr and sends m.
func sendAsPeer(addr string, clusterID uint64, secret []byte, from, to uint32, m codec.Message) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	c := &rawClient{conn: conn, r: newReader(conn)}
	typ, frame, err := c.readFrame()
	if err != nil || typ != codec.TypeChallenge {
		return fmt.Errorf("no Challenge (%v, %v)", typ, err)
	}
	var challenge codec.Challenge
	if err := codec.DecodeChallenge(frame, &challenge, nil); err != nil {
		return err
	}
	hello := codec.Hello{Version: codec.HandshakeVersion, Role: codec.RolePeer, ClusterID: clusterID, ReplicaID: from}
	_, _ = rand.Read(hello.Nonce[:])
	transcript := codec.Transcript{ClusterID: clusterID, Initiator: from, Responder: to,
		ServerNonce: challenge.Nonce, ConnectorNonce: hello.Nonce}
	hello.MAC = codec.InitiatorMAC(secret, &transcript)
	if _, err := conn.Write(codec.AppendHello(nil, &hello)); err != nil {
		return err
	}
	if typ, _, err := c.readFrame(); err != nil || typ != codec.TypeWelcome {
		return fmt.Errorf("no Welcome (%v, %v)", typ, err)
	}
	_, err = conn.Write(codec.AppendMessage(nil, &m))
	time.Sleep(100 * time.Millisecond) // let it be read before the close
	return err
}
