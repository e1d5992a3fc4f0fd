//! Arbitrary bytes as one cluster bus message (`chirp_chat::bus`): the decoder returns `Ok` or
//! `Err`, never panics, and what decodes re-encodes to the same value. Then the bytes reach
//! a cluster node's core (a session in `#r`, a DM user) as if from the bus: it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::bus::run(data);
});
