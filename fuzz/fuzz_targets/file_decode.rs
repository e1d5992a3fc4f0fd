//! Arbitrary bytes as a sequence of file-transfer messages (PROTOCOL.md §12): decoding never
//! panics and round-trips, and the `Transfers` state machine that receives them never panics
//! and its output always ends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::files::run(data);
});
