//go:build race

package history

// raceEnabled: the race detector slows the checker about twentyfold; size tests accordingly.
const raceEnabled = true
