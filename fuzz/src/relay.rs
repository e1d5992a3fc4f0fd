//! The `relay_decode` target (PROTOCOL.md §11).
//!
//! Arbitrary bytes as a datagram reaching a relay or a peer using one: `decode_relay` must
//! return the token and inner datagram exactly when the bytes are a RELAY datagram (version,
//! type 0x09, a whole token and at least one inner byte), never panic, and what it returns must
//! re-encode (`encode_relay`) to the same bytes. A RELAY datagram is never a chirp packet to an
//! endpoint (`Packet::new_checked` refuses type 0x09), so a driver that passed one on by
//! mistake could not confuse its endpoint; and the inner datagram, handed to an endpoint, goes
//! through the ordinary datagram checks.

use chirp_proto::wire::{
    Packet, RELAY_HEADER_LEN, RELAY_TOKEN_LEN, RELAY_TYPE, VERSION, decode_relay, encode_relay,
    is_relay,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    let claims = data.len() >= 2 && data[0] == VERSION && data[1] == RELAY_TYPE;
    assert_eq!(is_relay(data), claims);
    match decode_relay(data) {
        Some((token, inner)) => {
            assert!(claims && data.len() > RELAY_HEADER_LEN);
            assert_eq!(&token[..], &data[2..2 + RELAY_TOKEN_LEN]);
            assert_eq!(inner, &data[RELAY_HEADER_LEN..]);
            let mut again = Vec::new();
            encode_relay(token, inner, &mut again);
            assert_eq!(again, data, "re-encodes to the same bytes");
            assert!(Packet::new_checked(data).is_err(), "never an endpoint's packet");
            crate::check_datagram(inner);
        }
        None => assert!(!claims || data.len() <= RELAY_HEADER_LEN),
    }
}
