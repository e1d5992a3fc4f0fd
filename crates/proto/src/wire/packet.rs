//! Packet headers and packet protection (wire version 2).
//!
//! ```text
//! INITIAL   (0x01): version type dst_cid(8) src_cid(8) token_len(varint) token pn(varint) sealed
//! HANDSHAKE (0x02): version type dst_cid(8) src_cid(8)                     pn(varint) sealed
//! RETRY     (0x03): version type dst_cid(8) src_cid(8) token_len(varint) token      tag(16)
//! DATA      (0x04 key phase 0, 0x06 key phase 1): version type dst_cid(8) pn(varint) sealed
//! ACCEPT    (0x05): version type dst_cid(8) src_cid(8)                     pn(varint) sealed
//! RESET     (0x07): version type reset_token(16)                        (exactly 18 bytes)
//! REFUSE    (0x08): version type dst_cid(8) src_cid(8) reason(varint)       tag(16)
//! ```
//!
//! `sealed` is the frames encrypted with ChaCha20-Poly1305 followed by the 16-byte tag; the
//! nonce is the packet number and the associated data is every header byte before `sealed`,
//! so a change to any bit of the datagram fails authentication. INITIAL, HANDSHAKE, ACCEPT,
//! RETRY and REFUSE use keys derived from the client's first destination connection ID
//! (public: they detect damage, they do not hide anything); DATA uses the keys of the Noise
//! handshake.

use std::fmt;

use super::DecodeError;
use crate::coding::{Reader, VARINT_MAX, put_varint};
use crate::crypto::{PacketKey, TAG_LEN};

/// The protocol version this implementation speaks, carried in the first byte of every packet.
/// Version 1 (CRC32C, no encryption) is not spoken any more.
pub const VERSION: u8 = 0x02;
/// No datagram chirp sends is larger than this: it fits the IPv6 minimum MTU (1280) with room
/// for IP and UDP headers, so it never needs IP fragmentation on any path.
pub const MAX_DATAGRAM_SIZE: usize = 1200;
/// A client pads its INITIAL packets to this size, so that a server answering before the
/// client's address is validated never sends more bytes than it received.
pub const MIN_INITIAL_SIZE: usize = 1200;
/// Longest address-validation token accepted.
pub const MAX_TOKEN_LEN: usize = 64;
const CID_LEN: usize = 8;
/// Smallest possible protected packet: version, type, dst cid, 1-byte packet number, one frame
/// byte, tag.
const MIN_PACKET_LEN: usize = 2 + CID_LEN + 1 + 1 + TAG_LEN;

/// The size of a sealed short-header (DATA) packet numbered `number` with `frames_len` bytes
/// of frames.
pub(crate) const fn data_packet_len(number: u64, frames_len: usize) -> usize {
    2 + CID_LEN + crate::coding::varint_len(number) + frames_len + TAG_LEN
}

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

/// The packet types of version 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// Client → server, padded to 1200 bytes, carrying Noise message 1 and, after a RETRY,
    /// the address-validation token. The only packet type that can open a connection.
    Initial,
    /// Client → server after the server's ACCEPT: carries Noise message 3 until the server
    /// confirms, by sending DATA, that it has the keys.
    Handshake,
    /// Server → client, stateless: "repeat your INITIAL with this token".
    Retry,
    /// Server → client: carries Noise message 2 until the handshake completes.
    Accept,
    /// Everything after the handshake, under the Noise keys of the given key phase.
    Data {
        /// Flips at every key update.
        key_phase: bool,
    },
    /// Stateless reset: "I do not know the connection your DATA packet was for" (the sender
    /// restarted). Authenticated by a token the sender gave the receiver, encrypted, while the
    /// connection was alive; it carries nothing else.
    Reset,
    /// Server → client, stateless: "I will not take your connection" (for the reason it
    /// carries, e.g. the server is full). Echoes both connection IDs of the INITIAL it answers
    /// and is authenticated under the refuse key of the client's initial destination ID, so it
    /// is exactly as hard to forge as a RETRY.
    Refuse,
}

/// Why a server refused a connection attempt: the reason code of a REFUSE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Code `0x01`: the server has no room for another connection; try again later.
    ServerFull,
    /// A code this implementation does not know (from a later version). Still a refusal.
    Other(u64),
}

impl RefuseReason {
    /// The code on the wire.
    pub fn code(self) -> u64 {
        match self {
            Self::ServerFull => 0x01,
            Self::Other(code) => code,
        }
    }

    /// The reason of a code (any code: unknown ones are [`Self::Other`]).
    pub fn from_code(code: u64) -> Self {
        match code {
            0x01 => Self::ServerFull,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServerFull => f.write_str("server full, try later"),
            Self::Other(code) => write!(f, "connection refused (code {code:#x})"),
        }
    }
}

/// The longest REFUSE: version, type, two connection IDs, an 8-byte varint, the tag. Far below
/// the 1200 bytes of the INITIAL it answers.
pub const MAX_REFUSE_PACKET_LEN: usize = 2 + 2 * CID_LEN + 8 + TAG_LEN;

/// Length of a stateless-reset token, and of a RESET packet.
pub const RESET_TOKEN_LEN: usize = 16;
/// A RESET is exactly this long: smaller than any DATA packet, so answering one DATA packet
/// with one RESET can never amplify.
pub const RESET_PACKET_LEN: usize = 2 + RESET_TOKEN_LEN;

/// Encodes a RESET carrying `token`.
pub fn encode_reset(token: &[u8; RESET_TOKEN_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESET_PACKET_LEN);
    out.push(VERSION);
    out.push(PacketType::Reset.to_byte());
    out.extend_from_slice(token);
    out
}

impl PacketType {
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::Initial),
            0x02 => Ok(Self::Handshake),
            0x03 => Ok(Self::Retry),
            0x04 => Ok(Self::Data { key_phase: false }),
            0x05 => Ok(Self::Accept),
            0x06 => Ok(Self::Data { key_phase: true }),
            0x07 => Ok(Self::Reset),
            0x08 => Ok(Self::Refuse),
            other => Err(DecodeError::UnknownPacketType(other)),
        }
    }

    /// The type byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Initial => 0x01,
            Self::Handshake => 0x02,
            Self::Retry => 0x03,
            Self::Data { key_phase: false } => 0x04,
            Self::Accept => 0x05,
            Self::Data { key_phase: true } => 0x06,
            Self::Reset => 0x07,
            Self::Refuse => 0x08,
        }
    }

    /// Long-header packets carry the sender's connection ID as well as the receiver's.
    pub fn is_long(self) -> bool {
        !matches!(self, Self::Data { .. } | Self::Reset)
    }

    /// DATA packets, sealed with the handshake's keys.
    pub fn is_data(self) -> bool {
        matches!(self, Self::Data { .. })
    }
}

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ty: PacketType,
    /// The connection ID the receiver chose (or, in a client's INITIALs, a random one).
    pub dst_cid: ConnectionId,
    /// The sender's own connection ID; present in long-header packets only.
    pub src_cid: Option<ConnectionId>,
    /// Packet number: strictly increasing per sender and never reused, not even for
    /// retransmissions, so every acknowledgement is unambiguous and every nonce unique. Zero
    /// (and not encoded) in RETRY.
    pub number: u64,
}

impl Header {
    /// Encodes the header; `token` is written for INITIAL and RETRY only.
    fn encode(&self, token: &[u8], out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.ty.to_byte());
        out.extend_from_slice(&self.dst_cid.0.to_be_bytes());
        if self.ty.is_long() {
            out.extend_from_slice(&self.src_cid.unwrap_or_default().0.to_be_bytes());
        }
        if matches!(self.ty, PacketType::Initial | PacketType::Retry) {
            put_varint(out, token.len() as u64);
            out.extend_from_slice(token);
        }
        if self.ty != PacketType::Retry {
            put_varint(out, self.number);
        }
    }
}

/// A datagram whose header has passed every structural check. Its payload is still sealed:
/// [`Packet::open`] authenticates and decrypts it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The decoded header.
    pub header: Header,
    /// INITIAL and RETRY: the address-validation token (possibly empty). RESET: the reset
    /// token. REFUSE: the reason code, a varint (see [`Packet::refuse_reason`]).
    pub token: &'a [u8],
    /// The header bytes: the associated data of the AEAD.
    pub aad: &'a [u8],
    /// Ciphertext and tag (RETRY, REFUSE: the tag alone).
    pub sealed: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Validates the structure of `datagram` and splits it. Never panics. Nothing is
    /// authenticated yet: the caller must [`Self::open`] before trusting anything but the
    /// routing fields.
    pub fn new_checked(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(datagram);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let ty = PacketType::from_byte(r.u8()?)?;
        if ty == PacketType::Reset {
            if datagram.len() != RESET_PACKET_LEN {
                return Err(DecodeError::Invalid("reset length"));
            }
            return Ok(Self {
                header: Header {
                    ty,
                    dst_cid: ConnectionId(0),
                    src_cid: None,
                    number: 0,
                },
                token: r.rest(),
                aad: datagram,
                sealed: &[],
            });
        }
        if datagram.len() < MIN_PACKET_LEN {
            return Err(DecodeError::TooShort(datagram.len()));
        }
        let dst_cid = ConnectionId(r.u64()?);
        let src_cid = if ty.is_long() {
            Some(ConnectionId(r.u64()?))
        } else {
            None
        };
        let token = if matches!(ty, PacketType::Initial | PacketType::Retry) {
            let len = usize::try_from(r.varint()?).map_err(|_| DecodeError::Truncated)?;
            if len > MAX_TOKEN_LEN {
                return Err(DecodeError::Invalid("token length"));
            }
            r.bytes(len)?
        } else if ty == PacketType::Refuse {
            let (rest, before) = (r.rest(), r.remaining());
            r.varint()?;
            &rest[..before - r.remaining()]
        } else {
            &[]
        };
        // RETRY and REFUSE are stateless answers: no packet number, nonce 0, the tag alone.
        let tag_only = matches!(ty, PacketType::Retry | PacketType::Refuse);
        let number = if tag_only { 0 } else { r.varint()? };
        let sealed = r.rest();
        let min_sealed = if tag_only { TAG_LEN } else { TAG_LEN + 1 };
        if sealed.len() < min_sealed || (tag_only && sealed.len() != TAG_LEN) {
            return Err(DecodeError::Invalid("sealed payload length"));
        }
        let aad = &datagram[..datagram.len() - sealed.len()];
        Ok(Self {
            header: Header {
                ty,
                dst_cid,
                src_cid,
                number,
            },
            token,
            aad,
            sealed,
        })
    }

    /// REFUSE: the reason it carries. `None` for every other type.
    pub fn refuse_reason(&self) -> Option<RefuseReason> {
        if self.header.ty != PacketType::Refuse {
            return None;
        }
        // `new_checked` made sure `token` is exactly one varint.
        Reader::new(self.token)
            .varint()
            .ok()
            .map(RefuseReason::from_code)
    }

    /// Authenticates and decrypts the payload with `key`, returning the frame bytes (empty for
    /// RETRY and REFUSE). `Err` means forged, damaged, replayed under another key, or simply not ours.
    pub fn open(&self, key: &PacketKey) -> Result<Vec<u8>, crate::crypto::AuthError> {
        let mut buf = Vec::new();
        self.open_into(key, &mut buf)?;
        Ok(buf)
    }

    /// [`Self::open`] into `out` (replacing its contents, reusing its memory): a receiver
    /// that passes the same buffer for every packet allocates nothing per packet. On `Err`,
    /// `out`'s contents are unspecified.
    pub fn open_into(
        &self,
        key: &PacketKey,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::crypto::AuthError> {
        out.clear();
        out.extend_from_slice(self.sealed);
        key.open(self.header.number, self.aad, out)
    }
}

/// Writes one packet: header, then frames appended by the caller, then padding, then the seal.
#[derive(Debug)]
pub struct PacketBuilder {
    buf: Vec<u8>,
    header_len: usize,
    max_size: usize,
    number: u64,
    ty: PacketType,
}

impl PacketBuilder {
    /// Starts a packet with `header` (and `token`, for INITIAL), limited to `max_size` bytes
    /// including the tag.
    pub fn new(header: &Header, token: &[u8], max_size: usize) -> Self {
        Self::new_in(Vec::new(), header, token, max_size)
    }

    /// [`Self::new`] in `buf`'s memory (cleared first): a sender that hands the same buffer
    /// back for every packet ([`Self::into_buffer`], or the datagram [`Self::finish`]
    /// returns) allocates nothing per packet.
    pub fn new_in(mut buf: Vec<u8>, header: &Header, token: &[u8], max_size: usize) -> Self {
        buf.clear();
        buf.reserve(max_size);
        header.encode(token, &mut buf);
        Self {
            header_len: buf.len(),
            buf,
            max_size,
            number: header.number,
            ty: header.ty,
        }
    }

    /// The type of the packet being built.
    pub fn packet_type(&self) -> PacketType {
        self.ty
    }

    /// Room left for frames.
    pub fn remaining(&self) -> usize {
        self.max_size.saturating_sub(self.buf.len() + TAG_LEN)
    }

    /// The buffer frames are appended to. Callers check [`Self::remaining`] first.
    pub fn frames_buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The frames written so far, unsealed.
    pub fn frames(&self) -> &[u8] {
        &self.buf[self.header_len..]
    }

    /// True once at least one frame byte follows the header.
    pub fn has_frames(&self) -> bool {
        self.buf.len() > self.header_len
    }

    /// Appends PADDING frames (zero bytes) until the sealed packet is `size` bytes long.
    pub fn pad_to(&mut self, size: usize) {
        let target = size.min(self.max_size).saturating_sub(TAG_LEN);
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
    }

    /// The buffer back, unsealed (for a packet that is not sent after all).
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Seals the frames under `key` and returns the datagram.
    pub fn finish(self, key: &PacketKey) -> Vec<u8> {
        let Self {
            mut buf,
            header_len,
            number,
            ..
        } = self;
        key.seal_in_place(number, &mut buf, header_len);
        buf
    }
}

/// Encodes a RETRY: the token, authenticated with the retry key of the client's original
/// destination connection ID.
pub fn encode_retry(
    dst_cid: ConnectionId,
    src_cid: ConnectionId,
    token: &[u8],
    key: &PacketKey,
) -> Vec<u8> {
    let header = Header {
        ty: PacketType::Retry,
        dst_cid,
        src_cid: Some(src_cid),
        number: 0,
    };
    let mut buf = Vec::with_capacity(2 + 2 * CID_LEN + 2 + token.len() + TAG_LEN);
    header.encode(token, &mut buf);
    let len = buf.len();
    key.seal_in_place(0, &mut buf, len);
    buf
}

/// Encodes a REFUSE: the answer of a server that will not take the connection attempt of the
/// INITIAL whose source ID was `dst_cid` (the client's ID) and whose destination ID was
/// `src_cid` (the client's initial destination ID `R`), authenticated with the refuse key of
/// `R`. At most [`MAX_REFUSE_PACKET_LEN`] bytes.
pub fn encode_refuse(
    dst_cid: ConnectionId,
    src_cid: ConnectionId,
    reason: RefuseReason,
    key: &PacketKey,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MAX_REFUSE_PACKET_LEN);
    buf.push(VERSION);
    buf.push(PacketType::Refuse.to_byte());
    buf.extend_from_slice(&dst_cid.0.to_be_bytes());
    buf.extend_from_slice(&src_cid.0.to_be_bytes());
    // Codes above VARINT_MAX do not fit a varint (and none is defined).
    put_varint(&mut buf, reason.code().min(VARINT_MAX));
    let len = buf.len();
    key.seal_in_place(0, &mut buf, len);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::AuthError;

    fn key() -> PacketKey {
        PacketKey::new([7; 32])
    }

    fn data_header(number: u64) -> Header {
        Header {
            ty: PacketType::Data { key_phase: false },
            dst_cid: ConnectionId(7),
            src_cid: None,
            number,
        }
    }

    #[test]
    fn round_trip_and_every_bit_authenticated() {
        let mut b = PacketBuilder::new(&data_header(300), &[], MAX_DATAGRAM_SIZE);
        b.frames_buf().push(0x01); // PING
        let bytes = b.finish(&key());
        let p = Packet::new_checked(&bytes).expect("valid packet");
        assert_eq!(p.header, data_header(300));
        assert_eq!(p.open(&key()).expect("opens"), vec![0x01]);
        assert_eq!(p.open(&PacketKey::new([8; 32])), Err(AuthError));
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                // Either the structure is now invalid, or authentication fails.
                if let Ok(p) = Packet::new_checked(&bad) {
                    assert_eq!(p.open(&key()), Err(AuthError), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn rejects_short_unknown_and_foreign_versions() {
        assert!(Packet::new_checked(&[]).is_err());
        let mut b = PacketBuilder::new(&data_header(1), &[], MAX_DATAGRAM_SIZE);
        b.frames_buf().push(0x01);
        let mut bytes = b.finish(&key());
        bytes[0] = 0x01;
        assert_eq!(
            Packet::new_checked(&bytes).err(),
            Some(DecodeError::UnsupportedVersion(1))
        );
        bytes[0] = VERSION;
        // 0x08 is REFUSE (version 2 since issue 12): a DATA packet's bytes are not one.
        bytes[1] = 0x08;
        assert!(Packet::new_checked(&bytes).is_err());
        bytes[1] = 0x09;
        assert_eq!(
            Packet::new_checked(&bytes).err(),
            Some(DecodeError::UnknownPacketType(9))
        );
        assert_eq!(
            Packet::new_checked(&bytes[..MIN_PACKET_LEN - 1]).err(),
            Some(DecodeError::UnknownPacketType(9))
        );
        bytes[1] = 0x04;
        assert_eq!(
            Packet::new_checked(&bytes[..MIN_PACKET_LEN - 1]).err(),
            Some(DecodeError::TooShort(MIN_PACKET_LEN - 1))
        );
    }

    #[test]
    fn initial_padding_and_token() {
        let h = Header {
            ty: PacketType::Initial,
            dst_cid: ConnectionId(1),
            src_cid: Some(ConnectionId(2)),
            number: 0,
        };
        let mut b = PacketBuilder::new(&h, b"tok", MAX_DATAGRAM_SIZE);
        b.frames_buf().push(0x01);
        b.pad_to(MIN_INITIAL_SIZE);
        let bytes = b.finish(&key());
        assert_eq!(bytes.len(), MIN_INITIAL_SIZE);
        let p = Packet::new_checked(&bytes).expect("valid");
        assert_eq!(p.token, b"tok");
        assert_eq!(p.header, h);
        assert!(p.open(&key()).is_ok());
    }

    #[test]
    fn reset_round_trip_and_exact_length() {
        let bytes = encode_reset(&[9; RESET_TOKEN_LEN]);
        assert_eq!(bytes.len(), RESET_PACKET_LEN);
        let p = Packet::new_checked(&bytes).expect("valid");
        assert_eq!(p.header.ty, PacketType::Reset);
        assert_eq!(p.token, &[9; RESET_TOKEN_LEN]);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Packet::new_checked(&longer).is_err());
        assert!(Packet::new_checked(&bytes[..RESET_PACKET_LEN - 1]).is_err());
    }

    #[test]
    fn refuse_round_trip_size_and_every_bit_authenticated() {
        let bytes = encode_refuse(
            ConnectionId(3),
            ConnectionId(4),
            RefuseReason::ServerFull,
            &key(),
        );
        assert_eq!(bytes.len(), 2 + 8 + 8 + 1 + TAG_LEN);
        let p = Packet::new_checked(&bytes).expect("valid");
        assert_eq!(p.header.ty, PacketType::Refuse);
        assert_eq!(p.header.dst_cid, ConnectionId(3));
        assert_eq!(p.header.src_cid, Some(ConnectionId(4)));
        assert_eq!(p.refuse_reason(), Some(RefuseReason::ServerFull));
        assert_eq!(p.open(&key()).expect("authentic"), Vec::<u8>::new());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                if let Ok(p) = Packet::new_checked(&bad) {
                    assert_eq!(p.open(&key()), Err(AuthError), "byte {i} bit {bit}");
                }
            }
        }
        // Anything after the tag, or a truncated tag, is malformed.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Packet::new_checked(&longer).is_err());
        assert!(Packet::new_checked(&bytes[..bytes.len() - 1]).is_err());
        // Unknown codes survive, up to the largest varint; the longest packet is the bound.
        for code in [0, 0x02, 0x3fff, VARINT_MAX] {
            let reason = RefuseReason::from_code(code);
            assert_eq!(reason, RefuseReason::Other(code));
            let b = encode_refuse(ConnectionId(3), ConnectionId(4), reason, &key());
            assert!(b.len() <= MAX_REFUSE_PACKET_LEN);
            let p = Packet::new_checked(&b).expect("valid");
            assert_eq!(p.refuse_reason(), Some(reason));
        }
        assert_eq!(
            RefuseReason::ServerFull.to_string(),
            "server full, try later"
        );
        assert_eq!(RefuseReason::from_code(1), RefuseReason::ServerFull);
    }

    #[test]
    fn retry_round_trip() {
        let bytes = encode_retry(ConnectionId(3), ConnectionId(4), b"cookie", &key());
        let p = Packet::new_checked(&bytes).expect("valid");
        assert_eq!(p.header.ty, PacketType::Retry);
        assert_eq!(p.token, b"cookie");
        assert_eq!(p.open(&key()).expect("authentic"), Vec::<u8>::new());
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        let p = Packet::new_checked(&bad).expect("structure intact");
        assert_eq!(p.open(&key()), Err(AuthError));
    }
}
