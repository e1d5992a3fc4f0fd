//! Two endpoints with an established connection and a network the fuzzer controls: the input
//! is a transport configuration byte and a sequence of operations (deliver, drop, duplicate,
//! reorder, corrupt, send, finish, close, time, NAT rebinding). See `chirp_fuzz::pair`.
//!
//! Must never panic; checks that every message is delivered at most once, in order and intact,
//! that `Acked` and `Closed { undelivered }` account for every message sent exactly once, that
//! no acknowledgement runs ahead of delivery, and that a healed network delivers everything.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::pair::run(data);
});
