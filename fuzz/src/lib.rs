//! Helpers shared by chirp's fuzz targets (see `docs/FUZZING.md`).
//!
//! The targets live in `fuzz_targets/`; this library holds the checks they share, so that the
//! seed generator (`examples/gen_seeds.rs`), the replayer (`examples/replay.rs`) and the targets
//! agree on the input formats.
//!
//! # Layout
//!
//! - this file: datagram checks (`packet_decode`, `packet_decode_sealed`) and the sealing
//!   transformation that gets fuzz input past packet authentication;
//! - [`endpoint`]: the stateful `endpoint` target;
//! - [`handshake`]: the `handshake` target (Noise messages, and HANDSHAKE frames in properly
//!   sealed long-header packets fed to an `Endpoint`);
//! - [`chat`]: the `chat_decode` target (chat-protocol JSON and the chat server core);
//! - [`files`]: the `file_decode` target (file-transfer messages and `chirp_files::Transfers`);
//! - [`pair`]: the `pair` target (two endpoints with an established connection, and a network
//!   the fuzzer controls).

use std::net::SocketAddr;

use chirp_proto::crypto::{InitialKeys, PacketKey, TAG_LEN};
use chirp_proto::wire::{
    ConnectionId, Frame, Frames, Header, MAX_DATAGRAM_SIZE, MAX_TOKEN_LEN, Packet, PacketBuilder,
    PacketType, RESET_PACKET_LEN, RESET_TOKEN_LEN, VERSION, encode_refuse,
};

pub mod bus;
pub mod chat;
pub mod endpoint;
pub mod files;
pub mod handshake;
pub mod pair;
pub mod relay;

/// The destination CID of every datagram [`sealed_datagram`] builds: its initial keys seal them.
pub const SEALED_DCID: ConnectionId = ConnectionId(0x853b_5596_4736_4cea);

/// The key [`sealed_datagram`] uses for a packet type, and [`check_datagram`] tries: the
/// public initial keys of [`SEALED_DCID`] for long-header packets, a fixed key for DATA (the
/// fuzzer plays both sides here, so any fixed key reaches the frame decoder the same way).
pub fn fuzz_key(ty: PacketType) -> PacketKey {
    let keys = InitialKeys::new(SEALED_DCID.0);
    match ty {
        PacketType::Initial | PacketType::Handshake => keys.client,
        PacketType::Accept => keys.server,
        PacketType::Retry => keys.retry,
        PacketType::Refuse => keys.refuse,
        // A RESET is not sealed; any key does (`check_datagram` never opens one).
        PacketType::Data { .. } | PacketType::Reset => PacketKey::new([0x42; 32]),
    }
}

/// Decodes `datagram` as a chirp packet; if it opens under [`fuzz_key`] of its type (which
/// happens for [`sealed_datagram`]'s output, and practically never for raw bytes), decodes
/// every frame of the plaintext, re-encoding each and checking it against `encoded_len()`.
/// Returns the number of frames that decoded. Panics only on a violated invariant.
pub fn check_datagram(datagram: &[u8]) -> usize {
    let Ok(packet) = Packet::new_checked(datagram) else {
        return 0;
    };
    check_structure(datagram, &packet);
    if packet.header.ty == PacketType::Reset {
        // Nothing sealed: a RESET is authenticated by its token, which only the endpoint that
        // issued it can check (`fuzz/src/endpoint.rs` and `pair.rs` feed RESETs to endpoints).
        return 0;
    }
    let Ok(plaintext) = packet.open(&fuzz_key(packet.header.ty)) else {
        return 0;
    };
    if packet.header.ty == PacketType::Retry {
        assert!(
            plaintext.is_empty(),
            "a RETRY opened to a non-empty payload"
        );
        return 0;
    }
    if packet.header.ty == PacketType::Refuse {
        assert!(
            plaintext.is_empty(),
            "a REFUSE opened to a non-empty payload"
        );
        let reason = packet
            .refuse_reason()
            .expect("a REFUSE that passed new_checked has a reason");
        // Re-encoded from the decoded fields, it decodes to the same packet.
        let again = encode_refuse(
            packet.header.dst_cid,
            packet
                .header
                .src_cid
                .expect("REFUSE is a long-header packet"),
            reason,
            &fuzz_key(PacketType::Refuse),
        );
        let p2 = Packet::new_checked(&again).expect("an encoded REFUSE decodes");
        assert_eq!(p2.header, packet.header, "REFUSE header round trip");
        assert_eq!(p2.refuse_reason(), Some(reason), "REFUSE reason round trip");
        assert!(p2.open(&fuzz_key(PacketType::Refuse)).is_ok());
        return 0;
    }
    assert!(!plaintext.is_empty(), "accepted a packet with no frames");
    let mut decoded = 0;
    let mut out = Vec::new();
    for frame in Frames::new(&plaintext) {
        let Ok(frame) = frame else { break };
        decoded += 1;
        check_frame_round_trip(&frame, &mut out);
    }
    decoded
}

/// The structural promise of `Packet::new_checked` for an accepted datagram, exactly, per
/// packet type (`docs/PROTOCOL.md` §2, `wire/packet.rs`):
///
/// - RESET: exactly [`RESET_PACKET_LEN`] bytes, no sealed part (it has no tag: the 16 bytes
///   after version and type are the reset token), the whole datagram as header, zero CIDs and
///   packet number;
/// - RETRY and REFUSE: a long header and the 16-byte tag alone, packet number 0; a REFUSE's
///   token is its reason, exactly one varint; a RETRY's token at most [`MAX_TOKEN_LEN`];
/// - INITIAL, HANDSHAKE, ACCEPT, DATA: the tag and at least one byte of ciphertext (an empty
///   plaintext is invalid); a source CID exactly for the long-header types; an INITIAL's
///   token at most [`MAX_TOKEN_LEN`], no token for the others.
///
/// For every type the header and sealed part tile the datagram, and the header is a prefix.
pub fn check_structure(datagram: &[u8], packet: &Packet<'_>) {
    assert_eq!(
        packet.aad.len() + packet.sealed.len(),
        datagram.len(),
        "header and sealed payload do not tile the datagram"
    );
    assert_eq!(
        packet.aad,
        &datagram[..packet.aad.len()],
        "header not a prefix"
    );
    let ty = packet.header.ty;
    assert_eq!(datagram[0], VERSION, "accepted another version");
    assert_eq!(
        datagram[1],
        ty.to_byte(),
        "type byte and decoded type disagree"
    );
    match ty {
        PacketType::Reset => {
            assert_eq!(
                datagram.len(),
                RESET_PACKET_LEN,
                "RESET of the wrong length"
            );
            assert!(packet.sealed.is_empty(), "RESET with a sealed part");
            assert_eq!(
                packet.token,
                &datagram[2..],
                "RESET token is not its last 16 bytes"
            );
            assert_eq!(packet.token.len(), RESET_TOKEN_LEN);
            assert_eq!(
                (
                    packet.header.dst_cid,
                    packet.header.src_cid,
                    packet.header.number
                ),
                (ConnectionId(0), None, 0),
                "RESET with header fields"
            );
        }
        PacketType::Retry | PacketType::Refuse => {
            assert_eq!(
                packet.sealed.len(),
                TAG_LEN,
                "a {ty:?} must be its header and the tag alone"
            );
            assert_eq!(packet.header.number, 0, "{ty:?} with a packet number");
            assert!(
                packet.header.src_cid.is_some(),
                "{ty:?} without a source CID"
            );
            if ty == PacketType::Refuse {
                let mut r = chirp_proto::coding::Reader::new(packet.token);
                assert!(
                    r.varint().is_ok() && r.remaining() == 0,
                    "REFUSE reason is not exactly one varint: {:02x?}",
                    packet.token
                );
                assert!(packet.refuse_reason().is_some());
            } else {
                assert!(packet.token.len() <= MAX_TOKEN_LEN, "RETRY token too long");
            }
        }
        PacketType::Initial
        | PacketType::Handshake
        | PacketType::Accept
        | PacketType::Data { .. } => {
            assert!(
                packet.sealed.len() > TAG_LEN,
                "accepted a {ty:?} without a tag and a ciphertext byte"
            );
            assert_eq!(
                packet.header.src_cid.is_some(),
                ty.is_long(),
                "source CID presence disagrees with the type"
            );
            if ty == PacketType::Initial {
                assert!(
                    packet.token.len() <= MAX_TOKEN_LEN,
                    "INITIAL token too long"
                );
            } else {
                assert!(packet.token.is_empty(), "{ty:?} with a token");
            }
        }
    }
}

/// `Frame::encode` writes exactly `encoded_len()` bytes, never more than the decoder consumed
/// for a frame it decoded, and the result decodes to the same frame.
pub fn check_frame_round_trip(frame: &Frame<'_>, out: &mut Vec<u8>) {
    out.clear();
    frame.encode(out);
    assert_eq!(
        out.len(),
        frame.encoded_len(),
        "encoded_len disagrees with encode for {frame:?}"
    );
    let mut again = Frames::new(out);
    assert_eq!(
        again.next(),
        Some(Ok(frame.clone())),
        "re-encoded frame decodes differently: {frame:?} -> {out:02x?}"
    );
    assert_eq!(
        again.next(),
        None,
        "re-encoded {frame:?} decodes as more than one frame"
    );
}

/// Checks a datagram that the endpoint itself produced: the wire format promises that encoding
/// cannot produce a packet the decoder would reject. (Its payload is sealed under keys the
/// harness may not know, so only the structure is checked here.)
pub fn check_own_transmit(destination: SocketAddr, contents: &[u8]) {
    assert!(
        contents.len() <= MAX_DATAGRAM_SIZE,
        "transmit to {destination} of {} bytes exceeds MAX_DATAGRAM_SIZE",
        contents.len()
    );
    match Packet::new_checked(contents) {
        Ok(packet) => check_structure(contents, &packet),
        Err(e) => {
            panic!("endpoint produced a datagram its own decoder rejects ({e}): {contents:02x?}")
        }
    }
}

/// The `packet_decode_sealed` target's transformation. The first input byte picks the packet
/// type (INITIAL, HANDSHAKE, ACCEPT, DATA phase 0 or 1; RETRY is covered by `packet_decode`),
/// the second its packet number; the rest are the frame bytes, sealed under [`fuzz_key`] of
/// that type, so every input reaches the frame decoder behind authentication. Frame bytes
/// that would not fit a 1200-byte datagram are cut.
pub fn sealed_datagram(data: &[u8]) -> Vec<u8> {
    let (sel, rest) = data.split_first().unwrap_or((&0, &[]));
    let (pn, frames) = rest.split_first().unwrap_or((&0, &[]));
    let ty = match sel % 5 {
        0 => PacketType::Initial,
        1 => PacketType::Handshake,
        2 => PacketType::Accept,
        3 => PacketType::Data { key_phase: false },
        _ => PacketType::Data { key_phase: true },
    };
    let header = Header {
        ty,
        dst_cid: SEALED_DCID,
        src_cid: ty.is_long().then_some(ConnectionId(0x2222_2222_2222_2222)),
        number: u64::from(*pn),
    };
    let mut b = PacketBuilder::new(&header, &[], MAX_DATAGRAM_SIZE);
    let room = b.remaining();
    b.frames_buf()
        .extend_from_slice(&frames[..frames.len().min(room)]);
    if !b.has_frames() {
        // An empty plaintext is structurally invalid; give the decoder one PADDING byte.
        b.frames_buf().push(0);
    }
    b.finish(&fuzz_key(ty))
}
