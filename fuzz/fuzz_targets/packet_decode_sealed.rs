//! Like `packet_decode`, but the input is a packet-type selector, a packet number and the
//! *plaintext* frames: the target seals them under the public initial key of the type (or a
//! fixed key for DATA) with `chirp_fuzz::sealed_datagram`, so every input gets past
//! authentication and reaches the frame decoder. Must never panic; each decoded frame must
//! re-encode to `encoded_len()` bytes and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::check_datagram(&chirp_fuzz::sealed_datagram(data));
});
