package chaos

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mpaxos/mpaxos/codec"
)

// Hostile clients attack the client port while the workload runs. Each variant checks what
// the contract promises: bad input closes the stream (never a crash, never unbounded memory);
// the cluster keeps serving (the workload and the final append check that).

// closedWithin reports whether the server closes c within d (reads until EOF or an error).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// handshake completes a client handshake and returns the connection ready for requests.
func handshake(addr string, clusterID uint64) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	r := bufio.NewReader(c)
	frame, err := readFrame(r)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	var ch codec.Challenge
	if err := codec.DecodeChallenge(frame, &ch, nil); err != nil {
		c.Close()
		return nil, err
	}
	hello := codec.Hello{Version: codec.Version, Role: codec.RoleClient, ClusterID: clusterID, ClientID: uint64(time.Now().UnixNano()) | 1}
	if _, err := c.Write(codec.AppendHello(nil, &hello)); err != nil {
		c.Close()
		return nil, err
	}
	frame, err = readFrame(r)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	var wel codec.Welcome
	if err := codec.DecodeWelcome(frame, &wel, nil); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func readFrame(r *bufio.Reader) ([]byte, error) {
	header, err := r.Peek(codec.FrameHeaderSize)
	if err != nil {
		return nil, err
	}
	_, n, err := codec.PeekFrame(header, nil)
	if !errors.Is(err, codec.ErrIncomplete) && err != nil {
		return nil, err
	}
	if n > 1<<20 {
		return nil, fmt.Errorf("handshake frame of %d bytes", n)
	}
	frame := make([]byte, n)
	_, err = io.ReadFull(r, frame)
	return frame, err
}

// header builds a frame header announcing bodyLen bytes of type typ.
func header(bodyLen uint32, typ codec.MsgType) []byte {
	h := make([]byte, codec.FrameHeaderSize)
	binary.LittleEndian.PutUint32(h, bodyLen)
	h[4] = codec.Version
	h[5] = byte(typ)
	return h
}

// runHostileClients runs every variant against random replicas for about d and returns the
// broken promises it saw.
func runHostileClients(h *harness, d time.Duration) []string {
	var mu sync.Mutex
	var problems []string
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	// The rng is not safe for concurrent use: draw every choice up front.
	type attack struct {
		addr    string
		variant int
		garbage []byte
	}
	var attacks []attack
	for i := 0; i < 24; i++ {
		id := h.randomRunning(0)
		if id == 0 {
			break
		}
		g := make([]byte, 1+h.rng.IntN(4096))
		for j := range g {
			g[j] = byte(h.rng.IntN(256))
		}
		attacks = append(attacks, attack{addr: h.cluster.Node(id).ListenAddr, variant: i % 6, garbage: g})
	}
	clusterID := h.cluster.ClusterID()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, a := range attacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hostileAttack(a.addr, a.variant, a.garbage, clusterID, deadline, problem)
		}()
	}
	wg.Wait()
	return problems
}

// closeTimeout: how long the server may take to close a stream after bad input. Generous:
// the handshake timeout (5 s) bounds the pre-handshake cases.
const closeTimeout = 8 * time.Second

func hostileAttack(addr string, variant int, garbage []byte, clusterID uint64, deadline time.Time, problem func(string, ...any)) {
	switch variant {
	case 0: // random bytes instead of a Hello
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(garbage)
		if !closedWithin(c, closeTimeout) {
			problem("%s kept a connection open after %d random bytes", addr, len(garbage))
		}
	case 1: // a Hello header announcing a 4 GiB body
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(header(0xFFFFFFFF, codec.TypeHello))
		if !closedWithin(c, closeTimeout) {
			problem("%s kept a connection open after a 4 GiB frame header (pre-handshake)", addr)
		}
	case 2: // a valid handshake, then a Request header announcing 4 GiB
		c, err := handshake(addr, clusterID)
		if err != nil {
			return // the replica may be down or busy: not this attack's concern
		}
		defer c.Close()
		c.Write(header(0xFFFFFFFF, codec.TypeRequest))
		c.Write(garbage)
		if !closedWithin(c, closeTimeout) {
			problem("%s kept a client connection open after a 4 GiB request header", addr)
		}
	case 3: // a valid handshake, a truncated request, then the connection closes
		c, err := handshake(addr, clusterID)
		if err != nil {
			return
		}
		frame := codec.AppendRequest(nil, &codec.Request{ClientID: 1, Seq: 1, Payload: garbage})
		c.Write(frame[:len(frame)/2])
		c.Close()
	case 4: // idle before the handshake: must be closed by the handshake timeout
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		if !closedWithin(c, closeTimeout) {
			problem("%s kept an idle pre-handshake connection open over %v", addr, closeTimeout)
		}
	case 5: // idle after the handshake, held until the end (a half-open client)
		c, err := handshake(addr, clusterID)
		if err != nil {
			return
		}
		defer c.Close()
		if wait := time.Until(deadline); wait > 0 {
			time.Sleep(wait)
		}
	}
}
