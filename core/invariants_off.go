//go:build !invariants

package core

// invariantsOn: the expensive assertions are off in normal builds (they walk the whole
// in-memory log after every input). make test runs the simulator with -tags invariants.
const invariantsOn = false
