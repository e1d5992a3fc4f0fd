//! Arbitrary bytes as Noise handshake messages 1, 2 and 3 to `chirp_proto::handshake::Handshake`
//! (responder and initiator), and as the HANDSHAKE frame of properly sealed INITIAL, ACCEPT and
//! HANDSHAKE packets given to an `Endpoint`. See `chirp_fuzz::handshake` for the input format.
//! Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::handshake::run(data);
});
