//! Arbitrary bytes as one chat-protocol message (`docs/PROTOCOL.md`, "Chat protocol"):
//! both decoders (`ClientMsg`, `ServerMsg`) must return `Ok` or `Err`, never panic; what
//! decodes must re-encode to bytes that decode to the same value. Then the bytes are fed, as a
//! request from a session that has said `hello` and joined `#r`, to the sans-IO server core,
//! whose outputs are drained (commits succeed at once): the core must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chirp_fuzz::chat::run(data);
});
