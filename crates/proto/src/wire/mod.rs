//! Wire format v2: packets and frames, exactly as `docs/PROTOCOL.md` specifies them.
//!
//! Parsing follows smoltcp's `new_checked` style: [`Packet::new_checked`] validates the version and every length once, and decoding never panics on any input. Encoding cannot
//! produce a packet the decoder would reject.

mod frame;
mod packet;
mod relay;

pub use frame::{AckFrame, Frame, FrameType, Frames};
pub(crate) use packet::data_packet_len;
pub use packet::{
    ConnectionId, Header, MAX_DATAGRAM_SIZE, MAX_REFUSE_PACKET_LEN, MAX_TOKEN_LEN,
    MIN_INITIAL_SIZE, Packet, PacketBuilder, PacketType, RESET_PACKET_LEN, RESET_TOKEN_LEN,
    RefuseReason, VERSION, encode_refuse, encode_reset, encode_retry,
};
pub use relay::{
    RELAY_HEADER_LEN, RELAY_TOKEN_LEN, RELAY_TYPE, RelayToken, decode_relay, encode_relay,
    is_relay, relay_token,
};

use thiserror::Error;

use crate::coding::UnexpectedEnd;

/// Why a datagram was rejected. Every variant means "drop it and count it"; none is fatal to
/// the endpoint.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Too short to be a chirp packet of any kind.
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    /// A version this implementation does not speak.
    #[error("unsupported version {0:#04x}")]
    UnsupportedVersion(u8),
    /// A packet type that is unknown or reserved for a later version.
    #[error("unknown packet type {0:#04x}")]
    UnknownPacketType(u8),
    /// A frame type that is unknown.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrame(u8),
    /// A field ran past the end of the packet.
    #[error("truncated field")]
    Truncated,
    /// A field held a value that is impossible (e.g. an ACK range below packet number 0).
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl From<UnexpectedEnd> for DecodeError {
    fn from(_: UnexpectedEnd) -> Self {
        Self::Truncated
    }
}
