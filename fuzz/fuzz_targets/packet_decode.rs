//! Arbitrary bytes as a datagram: `Packet::new_checked` (version, type, lengths, token), then
//! authentication under the public key of its type for `chirp_fuzz::SEALED_DCID`, and, if that
//! ever passes, every frame of the plaintext, each re-encoded and checked against
//! `encoded_len()`. Must never panic.
//!
//! Almost every input fails authentication; `packet_decode_sealed` covers what lies past it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::check_datagram(data);
});
