//go:build invariants

package core

// invariantsOn turns on the expensive assertions (assertDeepInvariants): go test -tags invariants.
const invariantsOn = true
