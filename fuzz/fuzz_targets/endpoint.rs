//! A stateful target: the input is a sequence of operations (datagrams from up to four peers,
//! virtual time passing, connect, send, close) driving one `chirp_proto::Endpoint`, draining
//! `poll_transmit` and `poll_event` after each. See `chirp_fuzz::endpoint` for the input format.
//!
//! Must never panic; besides crashes it checks that every datagram the endpoint emits is at most
//! 1200 bytes and decodes, that draining terminates, and that `poll_timeout` is not still due
//! right after `handle_timeout` (a driver would spin).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::endpoint::run(data);
});
