//! Arbitrary bytes as a datagram: `Packet::new_checked`, then every frame of the payload, each
//! re-encoded and checked against `encoded_len()`. Must never panic.
//!
//! Almost every input fails the CRC32C check; `packet_decode_valid_crc` covers what lies past it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::check_datagram(data);
});
