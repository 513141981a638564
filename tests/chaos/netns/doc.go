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
// Netem adds delay, jitter, loss and reordering with tc netem on a host's veth (egress, so a
// delay D on every host gives a round trip of 2D between two hosts). It needs the kernel's
// sch_netem; NetemSupported probes for it, and Netem returns ErrNetemUnsupported (with the
// reason) where it is missing — as on the Firecracker kernels CI uses today, where the
// userspace faultproxy supplies delay and loss instead.
//
// Available reports, with a clear error, when namespaces cannot be made (no `ip`, not root,
// no CAP_SYS_ADMIN): tests FAIL on it rather than skip. Close deletes everything Create made,
// and Create cleans up after itself when it fails half-way.
package netns
