//! Arbitrary bytes as a RELAY datagram (PROTOCOL.md §11): `decode_relay` returns the token and
//! inner datagram exactly for a well-formed one, which re-encodes to the same bytes and is never
//! an endpoint's packet; the inner datagram then goes through the ordinary datagram checks.
//! Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::relay::run(data);
});
