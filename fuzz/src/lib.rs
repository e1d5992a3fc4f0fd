//! Helpers shared by chirp's fuzz targets (see `docs/FUZZING.md`).
//!
//! The targets live in `fuzz_targets/`; this library holds the checks they share, so that the
//! seed generator (`examples/gen_seeds.rs`) and the targets agree on the input formats.

use std::net::SocketAddr;

use chirp_proto::wire::{CHECKSUM_LEN, Frame, Frames, MAX_DATAGRAM_SIZE, Packet};

pub mod endpoint;

/// Appends the big-endian CRC32C of everything in `buf`, as chirp's packet trailer.
pub fn append_crc(buf: &mut Vec<u8>) {
    let crc = crc32c::crc32c(buf);
    buf.extend_from_slice(&crc.to_be_bytes());
}

/// Decodes `datagram` as a chirp packet and every frame in it; each frame that decodes is
/// re-encoded and must produce exactly `encoded_len()` bytes and decode back to itself.
/// Returns the number of frames that decoded. Panics only on a violated invariant.
pub fn check_datagram(datagram: &[u8]) -> usize {
    let Ok(packet) = Packet::new_checked(datagram) else {
        return 0;
    };
    assert!(
        !packet.payload.is_empty(),
        "accepted a packet with no frames"
    );
    // The header may have used non-minimal varints, so the minimal length is an upper bound.
    assert!(
        packet.header.len() + packet.payload.len() + CHECKSUM_LEN <= datagram.len(),
        "header {:?} and payload do not fit the datagram",
        packet.header
    );
    let mut decoded = 0;
    let mut out = Vec::new();
    for frame in Frames::new(packet.payload) {
        let Ok(frame) = frame else { break };
        decoded += 1;
        check_frame_round_trip(&frame, &mut out);
    }
    decoded
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
/// cannot produce a packet the decoder would reject.
pub fn check_own_transmit(destination: SocketAddr, contents: &[u8]) {
    assert!(
        contents.len() <= MAX_DATAGRAM_SIZE,
        "transmit to {destination} of {} bytes exceeds MAX_DATAGRAM_SIZE",
        contents.len()
    );
    let packet = match Packet::new_checked(contents) {
        Ok(p) => p,
        Err(e) => {
            panic!("endpoint produced a datagram its own decoder rejects ({e}): {contents:02x?}")
        }
    };
    for frame in Frames::new(packet.payload) {
        if let Err(e) = frame {
            panic!("endpoint produced an undecodable frame ({e}): {contents:02x?}");
        }
    }
}

/// The `packet_decode_valid_crc` target's transformation: usually force the v1 version byte,
/// then append a correct CRC32C, so the fuzzer explores past the checksum.
pub fn with_valid_crc(data: &[u8]) -> Vec<u8> {
    let mut datagram = data.to_vec();
    if !datagram.is_empty() && !crc32c::crc32c(data).is_multiple_of(8) {
        datagram[0] = chirp_proto::wire::VERSION;
    }
    append_crc(&mut datagram);
    datagram
}
