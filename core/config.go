package core

import "fmt"

// Validate reports the first invalid field of c, wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.ID == 0 {
		return bad("ID must be non-zero")
	}
	seen := make(map[uint32]bool, len(c.Peers))
	for _, p := range c.Peers {
		if p == 0 {
			return bad("Peers contains replica id 0")
		}
		if seen[p] {
			return bad("Peers lists replica %d twice", p)
		}
		seen[p] = true
	}
	if !seen[c.ID] {
		return bad("Peers %v does not contain ID %d", c.Peers, c.ID)
	}
	switch {
	case c.HeartbeatTicks < 1:
		return bad("HeartbeatTicks %d must be >= 1", c.HeartbeatTicks)
	case c.ElectionTicks <= c.HeartbeatTicks:
		return bad("ElectionTicks %d must exceed HeartbeatTicks %d", c.ElectionTicks, c.HeartbeatTicks)
	case c.RetransmitTicks < 1:
		return bad("RetransmitTicks %d must be >= 1", c.RetransmitTicks)
	case c.Window < 1:
		return bad("Window %d must be >= 1", c.Window)
	case c.ValueBytesMax < 1:
		return bad("ValueBytesMax %d must be >= 1", c.ValueBytesMax)
	case c.InflightBytesMax < c.ValueBytesMax:
		return bad("InflightBytesMax %d must be >= ValueBytesMax %d", c.InflightBytesMax, c.ValueBytesMax)
	case c.AcceptValuesMax < 1:
		return bad("AcceptValuesMax %d must be >= 1", c.AcceptValuesMax)
	case c.CatchUpSlotsMax < 1:
		return bad("CatchUpSlotsMax %d must be >= 1", c.CatchUpSlotsMax)
	case c.CatchUpBytesMax < 1:
		return bad("CatchUpBytesMax %d must be >= 1", c.CatchUpBytesMax)
	case c.RetainBytesMax < 0:
		return bad("RetainBytesMax %d must be >= 0", c.RetainBytesMax)
	case c.RetainSlots < 0:
		return bad("RetainSlots %d must be >= 0", c.RetainSlots)
	case c.Rand == nil:
		return bad("Rand must be set")
	}
	return nil
}
