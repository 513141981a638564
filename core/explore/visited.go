package explore

// visitedSet is the set of world fingerprints seen: an open-addressing table of 128-bit keys
// with linear probing. The keys are already uniform hashes, so their low bits index the table
// directly, and one lookup usually touches one cache line (a Go map of ~10^7 keys costs a few
// more misses per lookup, and lookups are a tenth of the search). The all-zero key marks an
// empty slot; a fingerprint that is zero is stored as {0, 1}.
type visitedSet struct {
	slots [][2]uint64
	count int
}

// visitedLoadMax: the table doubles when more than this fraction of it is used (linear probing stays short below it).
const visitedLoadMax = 0.75

const visitedSlotsMin = 1 << 16

// add inserts key and reports whether it was new.
func (v *visitedSet) add(key [2]uint64) bool {
	if key == [2]uint64{} {
		key[1] = 1
	}
	if float64(v.count+1) > visitedLoadMax*float64(len(v.slots)) {
		v.grow()
	}
	if !v.insert(key) {
		return false
	}
	v.count++
	return true
}

func (v *visitedSet) contains(key [2]uint64) bool {
	if key == [2]uint64{} {
		key[1] = 1
	}
	if len(v.slots) == 0 {
		return false
	}
	mask := uint64(len(v.slots) - 1)
	for i := key[0] & mask; ; i = (i + 1) & mask {
		switch v.slots[i] {
		case key:
			return true
		case [2]uint64{}:
			return false
		}
	}
}

// insert places key in the first free slot of its probe sequence; false if it is there.
func (v *visitedSet) insert(key [2]uint64) bool {
	mask := uint64(len(v.slots) - 1)
	for i := key[0] & mask; ; i = (i + 1) & mask {
		switch v.slots[i] {
		case key:
			return false
		case [2]uint64{}:
			v.slots[i] = key
			return true
		}
	}
}

func (v *visitedSet) grow() {
	old := v.slots
	v.slots = make([][2]uint64, max(visitedSlotsMin, 2*len(old)))
	for _, key := range old {
		if key != [2]uint64{} {
			v.insert(key)
		}
	}
}

// bytes is the memory the table holds.
func (v *visitedSet) bytes() int { return 16 * len(v.slots) }
