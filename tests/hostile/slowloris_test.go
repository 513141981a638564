package hostile

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mpaxos/mpaxos/codec"
	"github.com/mpaxos/mpaxos/netio"
)

// Slowloris shape (issue 15, defect 5): 48 client connections to the leader, each sending a
// Request header, all of the body but its last 64 bytes, then one byte a second. Half declare a
// 62 MiB frame (under FrameBytesMax, far over any legal Request), half a legal Request of
// PayloadBytesMax.
const (
	slowlorisConnections = 48
	slowlorisHugeBytes   = 62 << 20
	// slowlorisDeadline: how long the attackers keep trickling. Every connection must have been
	// cut before it: netio.DefaultFrameTimeout plus the time to send the bodies.
	slowlorisDeadline = netio.DefaultFrameTimeout + 15*time.Second
	leaderRSSMax      = 1 << 30
	// slowlorisHeldBytes: what each attacker holds back and then trickles, one byte a second.
	slowlorisHeldBytes = 64
)

func TestSlowlorisKeepsLeaderMemoryBoundedAndServing(t *testing.T) {
	e := startEnv(t)
	leader := e.leader(5 * time.Second)
	pid, addr := e.cluster.PID(leader), e.cluster.Node(leader).ListenAddr
	baseline := e.load.rate(3 * time.Second)
	rssBefore := rssBytes(pid)
	peakRSS := sampleRSS(pid)
	rates := e.load.sample(500 * time.Millisecond)

	start := time.Now()
	var wg sync.WaitGroup
	cut := make(chan time.Duration, slowlorisConnections) // when each attacker was cut off
	for i := range slowlorisConnections {
		declared := slowlorisHugeBytes
		if i%2 == 1 {
			declared = codec.DefaultPayloadBytesMax
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if slowloris(addr, e.cluster.ClusterID(), uint64(1000+i), declared, start.Add(slowlorisDeadline)) {
				cut <- time.Since(start)
			}
		}()
	}
	wg.Wait()
	close(cut)
	peak := peakRSS.stop()
	mean, low := rates.stop()

	var lastCut time.Duration
	cutCount := 0
	for d := range cut {
		cutCount++
		lastCut = max(lastCut, d)
	}
	t.Logf("leader %d: RSS %d MB before, peak %d MB during the attack; load %.0f acks/s before, %.0f mean and %.0f lowest (per 0.5 s) during; "+
		"%d of %d slowloris connections cut, the last after %v",
		leader, rssBefore>>20, peak>>20, baseline, mean, low, cutCount, slowlorisConnections, lastCut.Round(100*time.Millisecond))
	t.Logf("leader %d warnings: %v", leader, e.warnSummary(leader))
	if peak > leaderRSSMax {
		t.Errorf("leader RSS peaked at %d MB, bound %d MB", peak>>20, leaderRSSMax>>20)
	}
	if cutCount != slowlorisConnections {
		t.Errorf("%d of %d slowloris connections still open after %v", slowlorisConnections-cutCount, slowlorisConnections, slowlorisDeadline)
	}
	if mean < baseline/2 {
		t.Errorf("throughput during the attack %.0f acks/s, under half of %.0f before", mean, baseline)
	}
	if after := e.load.rate(2 * time.Second); after < baseline/2 {
		t.Errorf("throughput after the attack %.0f acks/s, under half of %.0f before", after, baseline)
	}
}

// slowloris runs one attacker until the server cuts it off (true) or deadline passes (false).
func slowloris(addr string, clusterID, clientID uint64, declared int, deadline time.Time) bool {
	c, err := dialRawClient(addr, clusterID, clientID)
	if err != nil {
		return false
	}
	defer c.conn.Close()
	header := codec.AppendRequest(nil, &codec.Request{ClientID: clientID, Seq: 1, SeqFloor: 1})
	body := declared + len(header) - codec.FrameHeaderSize
	// The header as if the payload were declared bytes long (body length, then payload length).
	putU32(header[0:], uint32(body))
	putU32(header[len(header)-4:], uint32(declared))
	_ = c.conn.SetWriteDeadline(deadline)
	cutOff := func(err error) bool { // a write failed: cut off, unless our own deadline passed
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	if _, err := c.conn.Write(header); err != nil {
		return cutOff(err)
	}
	chunk := make([]byte, 1<<20)
	// All of the body but its last slowlorisHeldBytes: at one byte a second the frame would
	// be whole only after the deadline.
	for left := declared - slowlorisHeldBytes; left > 0; left -= len(chunk) {
		if _, err := c.conn.Write(chunk[:min(left, len(chunk))]); err != nil {
			return cutOff(err)
		}
	}
	go func() { _, _ = c.r.Discard(1 << 30) }() // read (and drop) whatever the replica answers
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		if _, err := c.conn.Write([]byte{0}); err != nil {
			return cutOff(err)
		}
	}
	return false
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
