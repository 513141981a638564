// Package hostile attacks a live cluster the way a process on the same network could, and
// checks that no input crashes, stalls or fools it (issue 15). Every test starts a 3-replica
// cluster of real `mpaxos serve` processes on 127.0.0.1 with every limit at its default
// (tests/chaos/cluster: each process is killed by PID when the test ends), drives it with a
// steady load through the Go client (4 clients x 16 appends in flight, 16-byte payloads),
// attacks it, and asserts bounds on what the attack may cost.
//
//	MPAXOS_HOSTILE=1 go test -count=1 -v ./tests/hostile     # make test-hostile
//	go test ./tests/hostile -hostile -mpaxos-bin OLD/mpaxos   # the same attacks on another build
//
// Without -hostile or MPAXOS_HOSTILE=1 every test skips. The suite takes about 50 s on the
// 2-core reference machine.
//
// # The attacks and what each asserts
//
//   - TestSlowlorisKeepsLeaderMemoryBoundedAndServing (defect 5): 48 client connections to the
//     leader each send a Request header, all of the body but 64 bytes, then one byte a second;
//     half declare a 62 MiB frame, half a legal one of PayloadBytesMax. The leader's RSS must
//     stay under 1 GiB, every connection must be cut off, and the load must keep at least half
//     its rate.
//   - TestRelayedAndReflectedHandshakesAreRefused (defect 3): a follower is stopped and a
//     process without the secret binds its address. It relays the other replicas' peer links
//     to each other (Challenge one way, Hello the other) and answers some with a Welcome that
//     reflects the connector's own proof. No relay may be welcomed, no reflected link kept, no
//     leader change, and the load must keep half its rate.
//   - TestConnectionFloodDoesNotKeepARestartedFollowerOut (defect 6): every replica is held
//     past its client limit by idle clients and past its handshake pool by silent connections,
//     each reopened as soon as it is closed. A follower is restarted: it must apply what the
//     leader had applied within 20 s, the load must keep a tenth of its rate, and no replica
//     may log more than a few warnings a second.
//   - TestOversizedPayloadIsAnsweredTooLarge (defect 8): a payload of PayloadBytesMax+1 gets
//     TooLarge, and the next request on the same connection is served.
//   - TestHugeBallotKillsNoReplica (defect 1): a process that knows the secret sends every
//     replica, in a member's name, Prepares in rounds 2^64-1 and 2^63; all must stay up and the
//     load go on. With core's round bound and wire check removed (planted by overlay) the load
//     falls to 0 acks/s.
//   - TestClientIDFloodKeepsExactlyOnce (defect 7, porcupine): a table of 24 clients, a flood
//     of fresh client ids while 4 clients append and the leader is restarted, and a victim
//     that appended once, idled, and resends the same (client id, seq). Its resend must get
//     its first position back and the whole history (flood requests included: OK ones in the
//     log once, Overloaded ones not at all) must be linearizable. With the old evicting table
//     (planted with go build -overlay) the victim's resend is applied again at a new offset
//     and porcupine answers Illegal.
//   - TestDocumentedPayloadLimitIsReachableByDefault (defect 8): a payload of exactly
//     PayloadBytesMax (1 MiB) is accepted with every default. The ~512 KiB ceiling of the
//     issue was batching.DefaultBatchBytesMax; a command larger than a batch now gets a batch
//     of its own, up to batching.CommandBytesMax (1 MiB).
//
// # Figures (2-core reference machine; before = the commit before the fixes, e0cb09a, run
// with -mpaxos-bin; after = this package's own build)
//
//	slowloris, leader RSS peak         before 3,568-4,068 MB          after 95-99 MB
//	slowloris connections cut          before 0 of 48 in 25 s          after 48 of 48, the last after 12.1-12.5 s
//	slowloris, load during the attack  before 0 acks/s in the worst 0.5 s   after 1,212-1,560 (mean within the run-to-run spread of the baseline)
//	relayed Hellos welcomed            before 3 of 14 and 10 of 13     after 0 of 15
//	reflected Welcomes kept            before 0 of 7 (labels differed)  after 0 of 7
//	restarted follower under the flood before not caught up in 20 s   after caught up in 0.3-1.1 s
//	warning lines during the flood     before ~30,000 per replica in 23 s   after 4-10 per replica in 4-5 s
//	payload of 1 MiB + 1 byte          before the connection closed    after TooLarge, connection kept
package hostile
