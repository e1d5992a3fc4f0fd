//! Frames: the units of meaning inside a packet.
//!
//! | type | frame     | fields (all integers are varints)                                   |
//! |------|-----------|---------------------------------------------------------------------|
//! | 0x00 | PADDING   | none (a run of zero bytes)                                          |
//! | 0x01 | PING      | none                                                                |
//! | 0x02 | ACK       | largest, delay_us, range_count, first_range, (gap, length)*         |
//! | 0x03 | MESSAGE   | offset, length, data                                                |
//! | 0x04 | MAX_DATA  | limit                                                               |
//! | 0x05 | CLOSE     | code, reason_length, reason (UTF-8)                                 |
//! | 0x06 | HANDSHAKE | length, Noise handshake message                                     |
//! | 0x07 | PATH_CHALLENGE | 8 bytes of data                                                |
//! | 0x08 | PATH_RESPONSE  | the 8 bytes of the challenge it answers                        |
//! | 0x09 | RESET_TOKEN    | 16 bytes: the token that authenticates a stateless RESET       |
//! | 0x0a | FIN       | final_offset: the sender's message stream ends there (half-close)   |
//! | 0x0b | RECEIVED  | offset: every byte of the receiver's stream below it has arrived    |
//! | 0x0c | BULK      | offset, length, data: the bulk channel, beside the message stream   |
//! | 0x0d | BULK_MAX_DATA | limit: flow-control limit of the bulk channel                   |

use super::DecodeError;
use crate::coding::{Reader, put_varint, varint_len};

/// A frame type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Zero bytes that pad a packet; ignored by the receiver.
    Padding = 0x00,
    /// Asks for an acknowledgement; used for keepalives and probes.
    Ping = 0x01,
    /// Acknowledges received packet numbers.
    Ack = 0x02,
    /// A slice of the message stream.
    Message = 0x03,
    /// Raises the flow-control limit of the message stream.
    MaxData = 0x04,
    /// Closes the connection.
    Close = 0x05,
    /// A Noise handshake message.
    Handshake = 0x06,
    /// Asks the peer to echo 8 bytes, proving it receives at the address it sends from.
    PathChallenge = 0x07,
    /// Echoes a PATH_CHALLENGE.
    PathResponse = 0x08,
    /// The token with which the sender would authenticate a stateless RESET.
    ResetToken = 0x09,
    /// The sender's message stream ends at this offset: it will write nothing more.
    Fin = 0x0a,
    /// Every byte of the receiver's message stream below this offset has arrived.
    Received = 0x0b,
    /// A slice of the bulk channel: a second message stream for bulk data (files), with its
    /// own reassembly and flow control, so that its losses never hold chat back.
    Bulk = 0x0c,
    /// Raises the flow-control limit of the bulk channel.
    BulkMaxData = 0x0d,
}

/// Upper bound on ACK ranges in one frame. A receiver never needs more to describe recent
/// history, and a cap keeps the decoded form of a hostile frame small.
pub(crate) const MAX_ACK_RANGES: usize = 64;

/// An ACK frame: the packet numbers received, as inclusive ranges in descending order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckFrame {
    /// How long the receiver held the largest packet before acknowledging it, in microseconds,
    /// so that the sender can subtract it from its RTT sample.
    pub delay_us: u64,
    /// Inclusive ranges `(smallest, largest)`, the highest first, not overlapping or adjacent.
    pub ranges: Vec<(u64, u64)>,
}

impl AckFrame {
    /// The largest packet number acknowledged, if any range is present.
    pub fn largest(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.1)
    }

    /// Does this frame acknowledge `pn`?
    pub fn contains(&self, pn: u64) -> bool {
        self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&pn))
    }

    fn encoded_len(&self) -> usize {
        let Some(&(first_lo, largest)) = self.ranges.first() else {
            return 0;
        };
        let mut n = 1
            + varint_len(largest)
            + varint_len(self.delay_us)
            + varint_len(self.ranges.len() as u64 - 1)
            + varint_len(largest - first_lo);
        let mut prev_lo = first_lo;
        for &(lo, hi) in &self.ranges[1..] {
            n += varint_len(prev_lo - hi - 2) + varint_len(hi - lo);
            prev_lo = lo;
        }
        n
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let Some(&(first_lo, largest)) = self.ranges.first() else {
            return;
        };
        out.push(FrameType::Ack as u8);
        put_varint(out, largest);
        put_varint(out, self.delay_us);
        put_varint(out, self.ranges.len() as u64 - 1);
        put_varint(out, largest - first_lo);
        let mut prev_lo = first_lo;
        for &(lo, hi) in &self.ranges[1..] {
            // Gap and length are stored minus one/two as in RFC 9000 §19.3.1, so that every
            // encoded value describes a non-empty range: no byte sequence is redundant.
            put_varint(out, prev_lo - hi - 2);
            put_varint(out, hi - lo);
            prev_lo = lo;
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let largest = r.varint()?;
        let delay_us = r.varint()?;
        let extra = r.varint()?;
        if extra >= MAX_ACK_RANGES as u64 {
            return Err(DecodeError::Invalid("ack range count"));
        }
        let first = r.varint()?;
        let mut lo = largest
            .checked_sub(first)
            .ok_or(DecodeError::Invalid("ack range"))?;
        let mut ranges = Vec::with_capacity(extra as usize + 1);
        ranges.push((lo, largest));
        for _ in 0..extra {
            let gap = r.varint()?;
            let len = r.varint()?;
            let hi = lo
                .checked_sub(gap)
                .and_then(|v| v.checked_sub(2))
                .ok_or(DecodeError::Invalid("ack gap"))?;
            lo = hi
                .checked_sub(len)
                .ok_or(DecodeError::Invalid("ack range"))?;
            ranges.push((lo, hi));
        }
        Ok(Self { delay_us, ranges })
    }
}

/// A decoded frame. Byte fields borrow from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `len` consecutive PADDING bytes.
    Padding {
        /// Number of zero bytes.
        len: usize,
    },
    /// PING.
    Ping,
    /// ACK.
    Ack(AckFrame),
    /// Bytes `[offset, offset + data.len())` of the message stream.
    Message {
        /// Stream offset of the first byte.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// The receiver will accept message-stream bytes below `limit`.
    MaxData {
        /// Absolute stream offset.
        limit: u64,
    },
    /// The sender is closing the connection.
    Close {
        /// Application or transport code; see `docs/PROTOCOL.md`.
        code: u64,
        /// Human-readable reason (UTF-8; shown lossily if it is not).
        reason: &'a [u8],
    },
    /// A Noise handshake message (the sender's latest).
    Handshake(&'a [u8]),
    /// PATH_CHALLENGE.
    PathChallenge([u8; 8]),
    /// PATH_RESPONSE.
    PathResponse([u8; 8]),
    /// RESET_TOKEN.
    ResetToken([u8; 16]),
    /// FIN: the sender's half-close, like QUIC's stream FIN. Its message stream ends at
    /// `final_offset` (the end of its last message); nothing it sends reaches beyond, and the
    /// receiver reports the end once it has delivered every message below it.
    Fin {
        /// Absolute stream offset one past the last byte the sender will ever send.
        final_offset: u64,
    },
    /// RECEIVED: a cumulative, stream-level acknowledgement. The sender holds every byte of
    /// the receiver's message stream below `offset` and delivers (or delivered) them in
    /// order; packet ACKs say which packets arrived, this says which messages did, whatever
    /// happened to the packets that carried them.
    Received {
        /// Absolute offset in the receiver's own (sending) stream.
        offset: u64,
    },
    /// Bytes `[offset, offset + data.len())` of the bulk channel: encoded like the message
    /// stream (`varint(length) || bytes` per message), but its own byte stream, with its own
    /// offsets, reassembly and flow control.
    Bulk {
        /// Bulk-channel offset of the first byte.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// The receiver will accept bulk-channel bytes below `limit`.
    BulkMaxData {
        /// Absolute bulk-channel offset.
        limit: u64,
    },
}

impl Frame<'_> {
    /// Does receiving this frame require an acknowledgement? (RFC 9002's "ack-eliciting".)
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(
            self,
            Frame::Padding { .. } | Frame::Ack(_) | Frame::Close { .. }
        )
    }

    /// Exact encoded size.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Padding { len } => *len,
            Frame::Ping => 1,
            Frame::Ack(ack) => ack.encoded_len(),
            Frame::Message { offset, data } | Frame::Bulk { offset, data } => {
                Self::message_overhead(*offset, data.len()) + data.len()
            }
            Frame::MaxData { limit } | Frame::BulkMaxData { limit } => 1 + varint_len(*limit),
            Frame::Close { code, reason } => {
                1 + varint_len(*code) + varint_len(reason.len() as u64) + reason.len()
            }
            Frame::Handshake(m) => 1 + varint_len(m.len() as u64) + m.len(),
            Frame::PathChallenge(_) | Frame::PathResponse(_) => 9,
            Frame::ResetToken(_) => 17,
            Frame::Fin {
                final_offset: offset,
            }
            | Frame::Received { offset } => 1 + varint_len(*offset),
        }
    }

    /// Bytes a MESSAGE (or BULK) frame needs besides its data.
    pub fn message_overhead(offset: u64, len: usize) -> usize {
        1 + varint_len(offset) + varint_len(len as u64)
    }

    /// Appends the frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Padding { len } => out.resize(out.len() + len, 0),
            Frame::Ping => out.push(FrameType::Ping as u8),
            Frame::Ack(ack) => ack.encode(out),
            Frame::Message { offset, data } | Frame::Bulk { offset, data } => {
                let ty = if matches!(self, Frame::Bulk { .. }) {
                    FrameType::Bulk
                } else {
                    FrameType::Message
                };
                out.push(ty as u8);
                put_varint(out, *offset);
                put_varint(out, data.len() as u64);
                out.extend_from_slice(data);
            }
            Frame::MaxData { limit } => {
                out.push(FrameType::MaxData as u8);
                put_varint(out, *limit);
            }
            Frame::BulkMaxData { limit } => {
                out.push(FrameType::BulkMaxData as u8);
                put_varint(out, *limit);
            }
            Frame::Close { code, reason } => {
                out.push(FrameType::Close as u8);
                put_varint(out, *code);
                put_varint(out, reason.len() as u64);
                out.extend_from_slice(reason);
            }
            Frame::Handshake(m) => {
                out.push(FrameType::Handshake as u8);
                put_varint(out, m.len() as u64);
                out.extend_from_slice(m);
            }
            Frame::PathChallenge(d) => {
                out.push(FrameType::PathChallenge as u8);
                out.extend_from_slice(d);
            }
            Frame::PathResponse(d) => {
                out.push(FrameType::PathResponse as u8);
                out.extend_from_slice(d);
            }
            Frame::ResetToken(t) => {
                out.push(FrameType::ResetToken as u8);
                out.extend_from_slice(t);
            }
            Frame::Fin { final_offset } => {
                out.push(FrameType::Fin as u8);
                put_varint(out, *final_offset);
            }
            Frame::Received { offset } => {
                out.push(FrameType::Received as u8);
                put_varint(out, *offset);
            }
        }
    }
}

/// Iterates over the frames of a packet payload. After the first error it stops.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Self {
            r: Reader::new(payload),
            failed: false,
        }
    }

    fn decode_one(&mut self) -> Result<Frame<'a>, DecodeError> {
        let ty = self.r.u8()?;
        Ok(match ty {
            0x00 => {
                let zeros = self.r.rest().iter().take_while(|&&b| b == 0).count();
                self.r.bytes(zeros)?;
                Frame::Padding { len: zeros + 1 }
            }
            0x01 => Frame::Ping,
            0x02 => Frame::Ack(AckFrame::decode(&mut self.r)?),
            0x03 | 0x0c => {
                let offset = self.r.varint()?;
                let len = self.r.varint()?;
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                let data = self.r.bytes(len)?;
                if offset
                    .checked_add(len as u64)
                    .is_none_or(|end| end > crate::coding::VARINT_MAX)
                {
                    return Err(DecodeError::Invalid("message offset"));
                }
                if ty == 0x03 {
                    Frame::Message { offset, data }
                } else {
                    Frame::Bulk { offset, data }
                }
            }
            0x04 => Frame::MaxData {
                limit: self.r.varint()?,
            },
            0x05 => {
                let code = self.r.varint()?;
                let len = usize::try_from(self.r.varint()?).map_err(|_| DecodeError::Truncated)?;
                Frame::Close {
                    code,
                    reason: self.r.bytes(len)?,
                }
            }
            0x06 => {
                let len = usize::try_from(self.r.varint()?).map_err(|_| DecodeError::Truncated)?;
                Frame::Handshake(self.r.bytes(len)?)
            }
            0x07 | 0x08 => {
                let mut d = [0u8; 8];
                d.copy_from_slice(self.r.bytes(8)?);
                if ty == 0x07 {
                    Frame::PathChallenge(d)
                } else {
                    Frame::PathResponse(d)
                }
            }
            0x09 => {
                let mut t = [0u8; 16];
                t.copy_from_slice(self.r.bytes(16)?);
                Frame::ResetToken(t)
            }
            0x0a => Frame::Fin {
                final_offset: self.r.varint()?,
            },
            0x0b => Frame::Received {
                offset: self.r.varint()?,
            },
            0x0d => Frame::BulkMaxData {
                limit: self.r.varint()?,
            },
            other => return Err(DecodeError::UnknownFrame(other)),
        })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let res = self.decode_one();
        self.failed = res.is_err();
        Some(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(f: &Frame<'_>) {
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(out.len(), f.encoded_len(), "{f:?}");
        let decoded: Vec<_> = Frames::new(&out)
            .collect::<Result<_, _>>()
            .expect("decodes");
        assert_eq!(decoded, vec![f.clone()]);
    }

    #[test]
    fn each_frame_round_trips() {
        round_trip(&Frame::Ping);
        round_trip(&Frame::Handshake(&[1, 2, 3]));
        round_trip(&Frame::PathChallenge([9; 8]));
        round_trip(&Frame::PathResponse([8; 8]));
        round_trip(&Frame::ResetToken([7; 16]));
        round_trip(&Frame::Padding { len: 5 });
        round_trip(&Frame::Message {
            offset: 70_000,
            data: b"hello",
        });
        round_trip(&Frame::Message {
            offset: 0,
            data: b"",
        });
        round_trip(&Frame::MaxData { limit: 1 << 20 });
        round_trip(&Frame::Fin { final_offset: 0 });
        round_trip(&Frame::Fin {
            final_offset: 70_000,
        });
        round_trip(&Frame::Received { offset: 1 << 40 });
        round_trip(&Frame::Bulk {
            offset: 1 << 33,
            data: &[0xab; 1100],
        });
        round_trip(&Frame::Bulk {
            offset: 0,
            data: b"",
        });
        round_trip(&Frame::BulkMaxData { limit: 1 << 22 });
        round_trip(&Frame::Close {
            code: 0,
            reason: b"bye",
        });
        round_trip(&Frame::Ack(AckFrame {
            delay_us: 1234,
            ranges: vec![(10, 12), (5, 7), (0, 0)],
        }));
    }

    #[test]
    fn hostile_acks_are_rejected() {
        // largest 1, first range 5: would go below zero.
        assert!(
            Frames::new(&[0x02, 1, 0, 0, 5])
                .next()
                .is_some_and(|r| r.is_err())
        );
        // Too many ranges claimed.
        assert!(
            Frames::new(&[0x02, 1, 0, 0x40, 0xff, 0])
                .next()
                .is_some_and(|r| r.is_err())
        );
        // Gap below zero.
        assert!(
            Frames::new(&[0x02, 3, 0, 1, 0, 9, 0])
                .next()
                .is_some_and(|r| r.is_err())
        );
    }

    #[test]
    fn fin_and_received_encodings() {
        // The bytes of docs/PROTOCOL.md's examples.
        let mut out = Vec::new();
        Frame::Fin { final_offset: 300 }.encode(&mut out);
        Frame::Received { offset: 5 }.encode(&mut out);
        assert_eq!(out, [0x0a, 0x41, 0x2c, 0x0b, 0x05]);
        // Truncated: the varint is missing.
        assert_eq!(
            Frames::new(&[0x0a]).next(),
            Some(Err(DecodeError::Truncated))
        );
    }

    #[test]
    fn bulk_frames_reject_what_message_frames_reject() {
        // An end beyond 2^62 - 1: invalid, as for MESSAGE.
        let mut out = vec![0x0c];
        put_varint(&mut out, crate::coding::VARINT_MAX);
        put_varint(&mut out, 1);
        out.push(0);
        assert_eq!(
            Frames::new(&out).next(),
            Some(Err(DecodeError::Invalid("message offset")))
        );
        // A length beyond the bytes left.
        assert_eq!(
            Frames::new(&[0x0c, 0x00, 0x05, 1, 2]).next(),
            Some(Err(DecodeError::Truncated))
        );
        assert_eq!(
            Frames::new(&[0x0d]).next(),
            Some(Err(DecodeError::Truncated))
        );
    }

    #[test]
    fn unknown_frame_stops_iteration() {
        let mut it = Frames::new(&[0x01, 0x3f, 0x01]);
        assert_eq!(it.next(), Some(Ok(Frame::Ping)));
        assert_eq!(it.next(), Some(Err(DecodeError::UnknownFrame(0x3f))));
        assert_eq!(it.next(), None);
    }

    fn arb_ack() -> impl Strategy<Value = AckFrame> {
        (
            0u64..1 << 40,
            0u64..1 << 30,
            proptest::collection::vec((0u64..1000, 0u64..1000), 1..20),
        )
            .prop_map(|(top, delay_us, steps)| {
                let mut ranges = Vec::new();
                let mut hi = top + 1_000_000;
                for (gap, len) in steps {
                    let lo = hi - len;
                    ranges.push((lo, hi));
                    hi = lo - gap - 2;
                }
                AckFrame { delay_us, ranges }
            })
    }

    proptest! {
        #[test]
        fn ack_round_trip(ack in arb_ack()) {
            round_trip(&Frame::Ack(ack));
        }

        #[test]
        fn message_round_trip(offset in 0u64..1 << 50, data in proptest::collection::vec(any::<u8>(), 0..1200)) {
            round_trip(&Frame::Message { offset, data: &data });
            round_trip(&Frame::Bulk { offset, data: &data });
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Whatever decodes must re-encode to no more bytes than it came from.
            for f in Frames::new(&bytes).flatten() {
                prop_assert!(f.encoded_len() <= bytes.len());
            }
        }
    }
}
