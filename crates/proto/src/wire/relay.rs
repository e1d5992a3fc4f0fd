//! RELAY datagrams (PROTOCOL.md §11): `[version][0x09][16-byte relay token][inner datagram]`.
//!
//! A relay (a chirp server acting as rendezvous) forwards them between the two addresses its
//! token binds without opening the inner datagram, which is an ordinary chirp packet of the
//! two peers' own connection, sealed end to end. Neither the relay nor the endpoint parses
//! the inner bytes here: the receiving peer hands them to its endpoint as a datagram from the
//! relayed path.

use super::VERSION;

/// The packet type byte of a RELAY datagram.
pub const RELAY_TYPE: u8 = 0x09;
/// A relay token's length.
pub const RELAY_TOKEN_LEN: usize = 16;
/// The header before the inner datagram: version, type, token.
pub const RELAY_HEADER_LEN: usize = 2 + RELAY_TOKEN_LEN;

/// A relay token: names one relayed pair at one relay.
pub type RelayToken = [u8; RELAY_TOKEN_LEN];

/// Whether `datagram` claims to be a RELAY datagram (version and type), before any check of
/// its length: a receiver that relays or unwraps looks no further than this to route it.
pub fn is_relay(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[0] == VERSION && datagram[1] == RELAY_TYPE
}

/// The token and inner datagram of a RELAY datagram; `None` if it is not one or carries no
/// inner byte. Never panics.
pub fn decode_relay(datagram: &[u8]) -> Option<(&RelayToken, &[u8])> {
    if !is_relay(datagram) || datagram.len() <= RELAY_HEADER_LEN {
        return None;
    }
    let (token, inner) = datagram[2..].split_at(RELAY_TOKEN_LEN);
    Some((token.try_into().ok()?, inner))
}

/// Writes the RELAY datagram carrying `inner` under `token` into `out` (cleared first).
pub fn encode_relay(token: &RelayToken, inner: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(RELAY_HEADER_LEN + inner.len());
    out.extend_from_slice(&[VERSION, RELAY_TYPE]);
    out.extend_from_slice(token);
    out.extend_from_slice(inner);
}

/// A relay token for `parts` under the relay's `secret` (BLAKE2s-MAC, truncated): unguessable
/// without the secret, so a token names a pair the relay introduced and nothing else.
pub fn relay_token(secret: &[u8; 32], parts: &[&[u8]]) -> RelayToken {
    let full = crate::crypto::mac(secret, parts);
    let mut t = [0u8; RELAY_TOKEN_LEN];
    t.copy_from_slice(&full[..RELAY_TOKEN_LEN]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed() {
        let token = [7u8; RELAY_TOKEN_LEN];
        let mut out = Vec::new();
        encode_relay(&token, b"inner", &mut out);
        assert_eq!(out.len(), RELAY_HEADER_LEN + 5);
        assert_eq!(&out[..2], &[VERSION, RELAY_TYPE]);
        assert_eq!(decode_relay(&out), Some((&token, &b"inner"[..])));
        // Too short (no inner byte, or no whole token), another type or version: not one.
        assert_eq!(decode_relay(&out[..RELAY_HEADER_LEN]), None);
        assert_eq!(decode_relay(&out[..5]), None);
        assert_eq!(decode_relay(&[]), None);
        let mut other = out.clone();
        other[1] = 0x04;
        assert_eq!(decode_relay(&other), None);
        other[1] = RELAY_TYPE;
        other[0] = 0x01;
        assert_eq!(decode_relay(&other), None);
    }

    #[test]
    fn tokens_depend_on_secret_and_parts() {
        let a = relay_token(&[1; 32], &[b"x", b"y"]);
        assert_eq!(a, relay_token(&[1; 32], &[b"x", b"y"]));
        assert_ne!(a, relay_token(&[2; 32], &[b"x", b"y"]));
        assert_ne!(a, relay_token(&[1; 32], &[b"x", b"z"]));
    }
}
