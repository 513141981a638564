// Package codec is the mpaxos wire format: the message types every package shares
// (messages.go), their binary frames, the batch format of a slot value, and the limits a
// decoder enforces. It does no I/O. docs/PROTOCOL.md is the byte-by-byte specification, written
// so that a client in another language can be built from it alone.
//
// # Frames
//
// Every message travels as one frame: a fixed 8-byte header and a body. All fixed-width
// integers are little-endian.
//
//	 0               4         5        6        7        8
//	+---------------+---------+--------+--------+--------+--------------------+
//	| body length   | version | type   | flags  | 0      | body (length bytes)|
//	| uint32 LE     | = 1     | MsgType| bit0=S2|reserved|                    |
//	+---------------+---------+--------+--------+--------+--------------------+
//
// A reader calls PeekFrame on the bytes it has: ErrIncomplete means read more; any other error
// means close the stream; otherwise it passes buf[:frameLen] to the DecodeX function for the
// type. Flag bit 0 (FlagCompressed) says the body is one S2 block; it is allowed only on
// Promise, Accept and CatchUpReply and only an Encoder built with compression on sets it. The
// caller turns compression on only when both ends set FeatureS2 in the handshake
// (Hello.Features and Welcome.Features); a Decoder accepts compressed frames either way.
//
// Peer messages (Message) carry From and To, then only the fields their type uses, in a fixed
// order (Ballot, Slot, Commit, Count, Offset/Total/Checksum, then Values, Entries or Data). A
// field a type does not use is not sent and decodes as zero: setting it is harmless and
// useless. See the table in docs/PROTOCOL.md.
//
// # Batches
//
// A slot value is an encoded batch of client commands; the empty value is a no-op.
//
//	+--------+-------------+------------------------------------------------------+
//	| 0x02   | count       | count x ( client id u64 LE | seq uvarint |          |
//	| format | uint32 LE>0 |   seq - seq floor uvarint | payload length uvarint |  |
//	|        |             |   payload bytes )                                    |
//	+--------+-------------+------------------------------------------------------+
//
// Varints are minimal (shortest form); anything else is ErrCorrupt, so every batch has exactly
// one encoding. A seq floor distance larger than seq is ErrCorrupt, as is a Request whose
// SeqFloor is above its Seq.
//
// # Contract
//
//   - Encoders append to the caller's dst and allocate only when dst lacks capacity. They trust
//     their input: limits are the receiver's to enforce. A frame whose body exceeds 4 GiB, or a
//     Message whose Type is not a peer type, is a caller bug and panics.
//   - Decoders take exactly one whole frame and never panic, whatever the bytes. Every error
//     wraps one sentinel (ErrTruncated, ErrLimit, ErrCorrupt, ErrFrameTooLarge, ErrBadVersion,
//     ErrUnknownType, ErrCompressed) and names the message and field. No count is trusted: it is
//     checked against the bytes that remain and against Limits before anything is allocated.
//     After an error the destination message holds partial, meaningless contents. A nil *Limits
//     means DefaultLimits.
//   - Decoders do not copy: every []byte they return aliases the frame (or, for a compressed
//     frame, the Decoder's scratch buffer, valid until that Decoder's next call). Copy what must
//     outlive the buffer. Message decoding reuses the capacity of m.Values and m.Entries, so a
//     connection that decodes into one Message allocates nothing per frame once warm.
//   - Decoders check what must hold within a message (a ballot where one is required, an Accept
//     with at least one value, Promise entries in increasing slot order at or above the
//     requested slot with non-zero ballots, snapshot chunks within Total), so
//     core/ never sees a message no correct replica sends. They do not walk the batches inside
//     values: BatchIter does that where commands are applied.
//   - Encoder and Decoder keep scratch buffers: one per connection, not shared across goroutines.
//     The functions are safe for concurrent use.
//
// The numbers in this package — Version, HandshakeVersion, FrameHeaderSize, the MsgType, Status, Role and Feature
// values, FlagCompressed, the field order of each body, the batch format byte, BatchHeaderSize
// and the HMAC labels — are part of the format: changing one breaks every deployed peer and
// every slot value already in a WAL.
package codec
