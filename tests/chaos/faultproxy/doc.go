// Package faultproxy is a TCP proxy that injects network faults between mpaxos replicas.
//
// A replica's peer messages to another replica travel on its own outbound connection (netio:
// replica i dials j and only i writes on it after the handshake), so one Proxy per ordered pair
// carries exactly the messages from i to j: give replica i the flag --peers j=<P(i,j)>.
// A Network holds the proxies of a whole cluster and speaks in replicas: Partition, Isolate,
// Block(from, to) (asymmetric: i cannot reach j, j still reaches i), Heal.
//
// # What a fault means on a TCP stream
//
// TCP is a reliable byte stream: dropping bytes from the middle of one would corrupt frames in
// a way no real network can, so the proxy never resumes a stream it has dropped bytes from.
//
//   - Cut (Faults.Cut): every connection through the proxy is reset and new ones are accepted
//     and closed at once — a partition the sender notices (connection refused/reset).
//   - Black hole (Faults.Blackhole): bytes in the forward direction are read and discarded while
//     the connection stays open — a partition nobody notices until timeouts fire. A connection
//     that lost bytes this way is reset as soon as the black hole is lifted, so the replica
//     reconnects and the stream starts clean.
//   - Loss (Faults.KillProbability p): each chunk read from the sender is, with probability p,
//     not delivered and the connection is reset instead. "50% loss" thus means half of the
//     reads end their connection: messages are lost in bursts (whatever was in flight) and the
//     sender sees reconnects, like a flaky link whose TCP gives up.
//   - Delay (Faults.Delay ± Faults.Jitter, forward direction): each chunk is delivered no
//     earlier than Delay+U(-Jitter, +Jitter) after it was read, and never before an earlier
//     chunk (a stream cannot reorder). At most Config.ChunksQueuedMax chunks wait; beyond that
//     the reader stops reading, which pushes back on the sender as a slow link does.
//
// Reordering between messages cannot happen inside one TCP stream; it happens in mpaxos only
// across connections (reconnects, different peers), which the faults above already produce.
package faultproxy
