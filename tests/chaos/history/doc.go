// Package history records what clients of an mpaxos cluster saw and checks it.
//
// A Recorder collects Ops: one per client call, with its call and return times (monotonic
// nanoseconds since the recorder started), the worker that made it, what it asked and what it
// got back. A call whose outcome is unknown — a timeout, a dropped connection, a status that
// says "may or may not be chosen" — is recorded as OutcomeIndeterminate: it may have taken
// effect at any time after its call, or never. Porcupine models such an operation by giving it
// a return time of +infinity (math.MaxInt64): it stays concurrent with everything after its call.
//
// Check judges a history against a sequential specification of an append-only log:
//
//	state:       the sequence of values appended so far (its length is the next dense offset)
//	append(v)    -> i   legal when i is the log's length; the log becomes log + v
//	read(i)      -> v   legal when position i holds v (or, for "not found", when i >= length)
//	readLatest() -> n   legal when the log's length is n
//
// The dense offset of a command is the number of commands applied before it. Until the server
// returns it on every acknowledgement, Check derives it from the final log read from the
// replicas (a value's index in that log). When neither exists, it checks the weaker position
// model: acknowledged (Slot, Index) positions are unique and ordered consistently with real
// time (if A returned before B was called, A's position is lower).
//
// Besides porcupine's verdict Check runs direct checks that explain a failure in one line: an
// acknowledged append missing from the final log or present twice, two acknowledgements with
// one position, a final-log value nobody appended, an acknowledged offset that disagrees with
// the final log. On any failure (or an Unknown verdict, when the checker ran out of time) it
// writes porcupine's HTML visualisation under the artifact directory.
package history
