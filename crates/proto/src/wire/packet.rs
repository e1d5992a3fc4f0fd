//! Packet header and checksum.
//!
//! ```text
//! DATA:    version(1) type(1)=0x04 dst_cid(8)             packet_number(varint) frames.. crc32c(4)
//! INITIAL: version(1) type(1)=0x01 dst_cid(8) src_cid(8)  packet_number(varint) frames.. crc32c(4)
//! ACCEPT:  version(1) type(1)=0x05 dst_cid(8) src_cid(8)  packet_number(varint) frames.. crc32c(4)
//! ```

use std::fmt;

use super::DecodeError;
use crate::coding::{Reader, put_varint};

/// The protocol version this implementation speaks, carried in the first byte of every packet.
pub const VERSION: u8 = 0x01;
/// No datagram chirp sends is larger than this: it fits the IPv6 minimum MTU (1280) with room
/// for IP and UDP headers, so it never needs IP fragmentation on any path.
pub const MAX_DATAGRAM_SIZE: usize = 1200;
/// A client pads its INITIAL packets to this size. It costs ~1 KB once per connection and lets
/// a server that must not amplify (3x rule) answer with a full-sized handshake later.
pub const MIN_INITIAL_SIZE: usize = 1200;
/// Length of the CRC32C trailer.
pub const CHECKSUM_LEN: usize = 4;
const CID_LEN: usize = 8;
/// Smallest possible packet: version, type, dst cid, 1-byte packet number, one frame byte, crc.
const MIN_PACKET_LEN: usize = 2 + CID_LEN + 1 + 1 + CHECKSUM_LEN;

/// A connection ID: chosen by the receiver of packets so that it can route them to the right
/// connection, independent of the source address (which a NAT may change).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ConnectionId(pub u64);

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The packet types of version 1. Values 0x02 and 0x03 are reserved for the encrypted
/// handshake and the address-validation retry of a later version and are rejected today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// Sent by a client until it learns the server's connection ID; padded to 1200 bytes.
    /// The only packet type that can open a connection. Carries the sender's own ID.
    Initial = 0x01,
    /// Everything else.
    Data = 0x04,
    /// Sent by a server until the client has confirmed (by sending DATA) that it knows the
    /// server's connection ID. Carries the sender's own ID. A distinct type from INITIAL so
    /// that a stray answer can never be mistaken for a new connection.
    Accept = 0x05,
}

impl PacketType {
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::Initial),
            0x04 => Ok(Self::Data),
            0x05 => Ok(Self::Accept),
            other => Err(DecodeError::UnknownPacketType(other)),
        }
    }
}

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ty: PacketType,
    /// The connection ID the receiver chose (or, in a client's first INITIALs, a random one).
    pub dst_cid: ConnectionId,
    /// The sender's own connection ID; present in INITIAL and ACCEPT packets only.
    pub src_cid: Option<ConnectionId>,
    /// Packet number: strictly increasing per sender and never reused, not even for
    /// retransmissions, so every acknowledgement is unambiguous.
    pub number: u64,
}

impl Header {
    /// Length of the encoded header in bytes.
    pub fn len(&self) -> usize {
        2 + CID_LEN + self.src_cid.map_or(0, |_| CID_LEN) + crate::coding::varint_len(self.number)
    }

    /// Headers are never empty; provided for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.ty as u8);
        out.extend_from_slice(&self.dst_cid.0.to_be_bytes());
        if let Some(src) = self.src_cid {
            out.extend_from_slice(&src.0.to_be_bytes());
        }
        put_varint(out, self.number);
    }
}

/// A datagram that has passed every check: checksum, version, type and header lengths.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The decoded header.
    pub header: Header,
    /// The frame bytes between header and checksum; decode them with [`super::Frames`].
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Validates `datagram` and splits it into header and payload. Never panics.
    ///
    /// The checksum is verified first, so a damaged datagram is reported as
    /// [`DecodeError::Corrupt`] however its other bytes look.
    pub fn new_checked(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        if datagram.len() < MIN_PACKET_LEN {
            return Err(DecodeError::TooShort(datagram.len()));
        }
        let (body, crc) = datagram.split_at(datagram.len() - CHECKSUM_LEN);
        let expected = u32::from_be_bytes(crc.try_into().map_err(|_| DecodeError::Truncated)?);
        if crc32c::crc32c(body) != expected {
            return Err(DecodeError::Corrupt);
        }
        let mut r = Reader::new(body);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let ty = PacketType::from_byte(r.u8()?)?;
        let dst_cid = ConnectionId(r.u64()?);
        let src_cid = match ty {
            PacketType::Initial | PacketType::Accept => Some(ConnectionId(r.u64()?)),
            PacketType::Data => None,
        };
        let number = r.varint()?;
        let payload = r.rest();
        if payload.is_empty() {
            return Err(DecodeError::Invalid("empty payload"));
        }
        Ok(Self {
            header: Header {
                ty,
                dst_cid,
                src_cid,
                number,
            },
            payload,
        })
    }
}

/// Writes one packet: header, then frames appended by the caller, then padding and checksum.
#[derive(Debug)]
pub struct PacketBuilder {
    buf: Vec<u8>,
    header_len: usize,
    max_size: usize,
}

impl PacketBuilder {
    /// Starts a packet with `header`, limited to `max_size` bytes including the checksum.
    pub fn new(header: &Header, max_size: usize) -> Self {
        let mut buf = Vec::with_capacity(max_size);
        header.encode(&mut buf);
        Self {
            header_len: buf.len(),
            buf,
            max_size,
        }
    }

    /// Room left for frames.
    pub fn remaining(&self) -> usize {
        self.max_size.saturating_sub(self.buf.len() + CHECKSUM_LEN)
    }

    /// The buffer frames are appended to. Callers check [`Self::remaining`] first.
    pub fn frames_buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// True once at least one frame byte follows the header.
    pub fn has_frames(&self) -> bool {
        self.buf.len() > self.header_len
    }

    /// Appends PADDING frames (zero bytes) until the finished packet is `size` bytes long.
    pub fn pad_to(&mut self, size: usize) {
        let target = size.min(self.max_size).saturating_sub(CHECKSUM_LEN);
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
    }

    /// Appends the CRC32C of everything written and returns the datagram.
    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_header(number: u64) -> Header {
        Header {
            ty: PacketType::Data,
            dst_cid: ConnectionId(7),
            src_cid: None,
            number,
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let mut b = PacketBuilder::new(&data_header(300), MAX_DATAGRAM_SIZE);
        b.frames_buf().push(0x01); // PING
        let bytes = b.finish();
        let p = Packet::new_checked(&bytes).expect("valid packet");
        assert_eq!(p.header, data_header(300));
        assert_eq!(p.payload, &[0x01]);

        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(Packet::new_checked(&bad).err(), Some(DecodeError::Corrupt));
            }
        }
    }

    #[test]
    fn rejects_short_unknown_and_empty() {
        assert_eq!(
            Packet::new_checked(&[]).err(),
            Some(DecodeError::TooShort(0))
        );
        let mut h = PacketBuilder::new(&data_header(1), MAX_DATAGRAM_SIZE);
        h.frames_buf().extend_from_slice(&[0x01]);
        let mut bytes = h.finish();
        // Change the version and fix up the checksum: the version check must catch it.
        bytes[0] = 0x02;
        let n = bytes.len();
        let crc = crc32c::crc32c(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&bytes).err(),
            Some(DecodeError::UnsupportedVersion(2))
        );
        bytes[0] = VERSION;
        bytes[1] = 0x02;
        let crc = crc32c::crc32c(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&bytes).err(),
            Some(DecodeError::UnknownPacketType(2))
        );
    }

    #[test]
    fn padding_reaches_exact_size() {
        let h = Header {
            ty: PacketType::Initial,
            dst_cid: ConnectionId(1),
            src_cid: Some(ConnectionId(2)),
            number: 0,
        };
        let mut b = PacketBuilder::new(&h, MAX_DATAGRAM_SIZE);
        b.frames_buf().push(0x01);
        b.pad_to(MIN_INITIAL_SIZE);
        let bytes = b.finish();
        assert_eq!(bytes.len(), MIN_INITIAL_SIZE);
        assert!(Packet::new_checked(&bytes).is_ok());
    }
}
