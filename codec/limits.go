package codec

import (
	"errors"
	"fmt"
)

// Errors returned by decoders. Each is a sentinel: callers test with errors.Is. Every error a
// decoder returns wraps exactly one of them and names the message and the field at fault, e.g.
// "codec: Accept: values[3]: length 70000 exceeds 12 remaining bytes: codec: truncated frame".
// Apart from ErrIncomplete, each means the stream is unusable: close the connection.
var (
	// ErrIncomplete: the buffer does not yet hold a whole frame. Not a stream error: read more.
	ErrIncomplete = errors.New("codec: incomplete frame")
	// ErrFrameTooLarge: a frame (or the declared decompressed size of its body) exceeds
	// Limits.FrameBytesMax.
	ErrFrameTooLarge = errors.New("codec: frame too large")
	// ErrBadVersion: the frame header carries a version this package does not speak.
	ErrBadVersion = errors.New("codec: bad version")
	// ErrUnknownType: the type byte is not a known MsgType, or not the type the caller expected.
	ErrUnknownType = errors.New("codec: unknown type")
	// ErrTruncated: a field or a counted run of bytes extends past the end of the frame.
	ErrTruncated = errors.New("codec: truncated frame")
	// ErrLimit: a count or a length is within the frame but over a Limits field.
	ErrLimit = errors.New("codec: limit exceeded")
	// ErrCorrupt: the bytes are present but mean nothing valid: trailing garbage, reserved bits
	// set, an enum out of range, fields inconsistent with the message type, bad compression.
	ErrCorrupt = errors.New("codec: corrupt frame")
	// ErrCompressed: a compressed frame was given to a function that does not decompress
	// (the package-level DecodeMessage); use a Decoder.
	ErrCompressed = errors.New("codec: compressed frame needs a Decoder")
	// ErrInvalidLimits wraps every Limits.Validate error; the message names the field.
	ErrInvalidLimits = errors.New("codec: invalid limits")
)

// Limits bound everything a decoder will accept, so no peer or client can make a replica
// allocate or loop without bound. Encoders do not consult them: a sender that builds a frame
// over the receiver's limits finds out from the receiver closing the stream.
type Limits struct {
	// FrameBytesMax bounds a whole frame, header included, and also the declared decompressed
	// size of a compressed body plus the header. Memory per connection scales with it.
	FrameBytesMax int
	// PayloadBytesMax bounds one client command payload (Request.Payload, Command.Payload) and
	// Redirect.LeaderAddr.
	PayloadBytesMax int
	// BatchCommandsMax bounds the commands in one batch (one slot value).
	BatchCommandsMax int
	// ValuesMax bounds Message.Values (slots in one Accept or CatchUpReply).
	ValuesMax int
	// EntriesMax bounds Message.Entries (accepted slots reported by one Promise).
	EntriesMax int
	// ValueBytesMax bounds one slot value, one Entry.Value and one SnapshotChunk.Data.
	ValueBytesMax int
	// CompressThreshold is the body size in bytes from which an Encoder with compression on
	// S2-compresses Accept, CatchUpReply and Promise bodies. Smaller bodies are not worth the CPU.
	CompressThreshold int
}

// Defaults of Limits. A 1 MiB payload and 16 MiB values leave room for large commands while a
// 64 MiB frame caps what one connection can make a replica buffer.
const (
	DefaultFrameBytesMax     = 64 << 20
	DefaultPayloadBytesMax   = 1 << 20
	DefaultBatchCommandsMax  = 65536
	DefaultValuesMax         = 4096
	DefaultEntriesMax        = 1 << 20
	DefaultValueBytesMax     = 16 << 20
	DefaultCompressThreshold = 4096
)

// frameBytesCeiling is the largest frame the header can describe (a uint32 body length).
const frameBytesCeiling = FrameHeaderSize + (1<<32 - 1)

// DefaultLimits returns the default limits (see the Default* constants).
func DefaultLimits() Limits {
	return Limits{
		FrameBytesMax:     DefaultFrameBytesMax,
		PayloadBytesMax:   DefaultPayloadBytesMax,
		BatchCommandsMax:  DefaultBatchCommandsMax,
		ValuesMax:         DefaultValuesMax,
		EntriesMax:        DefaultEntriesMax,
		ValueBytesMax:     DefaultValueBytesMax,
		CompressThreshold: DefaultCompressThreshold,
	}
}

// defaultLimits serves callers that pass a nil *Limits.
var defaultLimits = DefaultLimits()

func limitsOrDefault(lim *Limits) *Limits {
	if lim == nil {
		return &defaultLimits
	}
	return lim
}

// Validate reports the first field that is out of range, wrapped in ErrInvalidLimits.
func (l Limits) Validate() error {
	positive := []struct {
		name  string
		value int
	}{
		{"FrameBytesMax", l.FrameBytesMax},
		{"PayloadBytesMax", l.PayloadBytesMax},
		{"BatchCommandsMax", l.BatchCommandsMax},
		{"ValuesMax", l.ValuesMax},
		{"EntriesMax", l.EntriesMax},
		{"ValueBytesMax", l.ValueBytesMax},
		{"CompressThreshold", l.CompressThreshold},
	}
	for _, f := range positive {
		if f.value <= 0 {
			return fmt.Errorf("codec: Limits.%s = %d: must be positive: %w", f.name, f.value, ErrInvalidLimits)
		}
	}
	if l.FrameBytesMax < FrameHeaderSize+64 {
		return fmt.Errorf("codec: Limits.FrameBytesMax = %d: must be at least %d: %w",
			l.FrameBytesMax, FrameHeaderSize+64, ErrInvalidLimits)
	}
	if int64(l.FrameBytesMax) > frameBytesCeiling {
		return fmt.Errorf("codec: Limits.FrameBytesMax = %d: must be at most %d (uint32 body length): %w",
			l.FrameBytesMax, int64(frameBytesCeiling), ErrInvalidLimits)
	}
	if l.ValueBytesMax > l.FrameBytesMax {
		return fmt.Errorf("codec: Limits.ValueBytesMax = %d: exceeds FrameBytesMax %d: %w",
			l.ValueBytesMax, l.FrameBytesMax, ErrInvalidLimits)
	}
	if l.PayloadBytesMax > l.ValueBytesMax {
		return fmt.Errorf("codec: Limits.PayloadBytesMax = %d: exceeds ValueBytesMax %d (a command must fit a slot value): %w",
			l.PayloadBytesMax, l.ValueBytesMax, ErrInvalidLimits)
	}
	return nil
}
