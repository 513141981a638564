// Package netns builds a private network of Linux network namespaces for fault tests.
//
// Create makes one namespace per host, each joined by a veth pair to a bridge in the test's
// own (root) namespace, all named with a random per-run prefix so concurrent runs never share
// a device:
//
//	root namespace: bridge mpx<run>br 198.18.S.254/24
//	   |-- veth mpx<run>h1 <-> mpx<run>n1 in namespace mpx<run>-1: 198.18.S.1/24
//	   |-- veth mpx<run>h2 <-> mpx<run>n2 in namespace mpx<run>-2: 198.18.S.2/24
//	   ...
//
// 198.18.0.0/15 is the range RFC 2544 sets aside for network benchmark tests; S is drawn per
// run. The namespaces have no default route: from inside one, only the other hosts and the
// bridge are reachable, and any other address is "network unreachable" without a packet
// being sent. Create checks that the root namespace routes the subnet through the bridge
// before it returns, so a test never sends to these addresses unless they are its own.
// Replicas run inside with Topology.Exec(i) as the command prefix (`ip netns exec NS`, which
// execs the program: its PID is the replica's).
//
// SetNetem adds delay, jitter, loss and reordering with tc netem on a host's veth (egress, so
// a delay D on every host gives a round trip of 2D between two hosts). It needs the kernel's
// sch_netem; NetemSupported probes for it, and SetNetem returns ErrNetemUnsupported (with the
// reason) where it is missing — as on the Firecracker kernels CI uses today.
//
// CreateEmulated (or CreateWith and Options.Emulated) builds the same namespaces and
// addresses without a bridge or kernel netem: each namespace gets a TUN device (IPv4, MTU
// 65000 by default) and the root namespace a gateway TUN device holding the .254 address,
// and the test process forwards the packets between them:
//
//	namespace mpx<run>-1: TUN mpx<run>t1 198.18.S.1/24 --+
//	namespace mpx<run>-2: TUN mpx<run>t2 198.18.S.2/24 --+-- emulator goroutines (this process)
//	root namespace:       TUN mpx<run>gw 198.18.S.254/24 -+
//
// One goroutine per device reads what its namespace sends, routes each packet by destination
// address, and applies the sender's shaping with netem's knobs: loss first, then either
// "reorder" (sent now, ahead of delayed packets) or the delay plus a uniform jitter in
// [-Jitter, +Jitter]. Packets wait in the destination's queue (a heap by due time, FIFO among
// equals; bounded by EmulatorConfig.QueuePacketsMax and QueueBytesMax — past them a packet is
// dropped and counted) and one goroutine per device writes them as they come due.
// Disconnect drops every packet to or from the host, those already queued included. Stats
// counts what each host sent, forwarded and dropped. The emulator is this package's own and
// costs CPU in the test process (about 1.6 GB/s of bulk TCP at 64 KB packets on 2 cores); a
// delay is late by the Go timer's slack, about half a millisecond on an idle machine.
//
// InNamespace runs a function on a thread inside a host's namespace, so a test can open
// sockets there without a child process.
//
// Available reports, with a clear error, when namespaces cannot be made (no `ip`, not root,
// no CAP_SYS_ADMIN): tests FAIL on it rather than skip. Close deletes everything Create made
// (and stops the emulator's goroutines, closing its devices), and Create cleans up after
// itself when it fails half-way.
package netns
