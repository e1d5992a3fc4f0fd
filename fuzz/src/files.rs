//! The `file_decode` target (PROTOCOL.md §12): chirp-files' messages.
//!
//! The input is a sequence of messages, each `u16 length (big-endian) || bytes`. Each one is
//! decoded with `Msg::decode`: `Ok` or `Err`, never a panic, and a message that decodes must
//! re-encode to bytes that decode to the same message. Then all of them go, as the peer's
//! messages, to a `Transfers` (in-memory storage, accepting offers at once) that already holds
//! one offer of ours and one accepted offer of the peer's: whatever they say, it must not panic,
//! and its output must end.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_files::{Config, MemStorage, Msg, Transfers, wire};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut storage = MemStorage::default();
    storage
        .sources
        .insert("/src/ours.bin".into(), (0..5000u32).map(|i| i as u8).collect());
    let config = Config {
        chunk_size: 1024,
        auto_accept: true,
    };
    let mut t = Transfers::new(config, storage);
    let _ = t.send_file(std::path::Path::new("/src/ours.bin"));
    // An offer of the peer's (id 1, two chunks "a…", "b…"), accepted at once.
    let chunks = [vec![b'a'; 1024], vec![b'b'; 10]];
    let hashes: Vec<_> = chunks.iter().map(|c| wire::chunk_hash(c)).collect();
    let offer = Msg::Offer {
        id: 1,
        size: 1034,
        chunk_size: 1024,
        root: wire::root_hash(&hashes),
        name: b"theirs.bin".to_vec(),
    };
    let mut now = Instant::now();
    t.handle_message(now, &offer.encode());
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let msg = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        if let Ok(m) = Msg::decode(&msg) {
            assert_eq!(Msg::decode(&m.encode()).as_ref(), Ok(&m), "re-encodes");
        }
        now += Duration::from_millis(10);
        t.handle_message(now, &msg);
        drain(&mut t, now);
    }
    t.disconnected();
    t.connected();
    drain(&mut t, now);
}

/// Takes everything out; bounded (a busy loop would be a bug).
fn drain(t: &mut Transfers<MemStorage>, now: Instant) {
    for _ in 0..100_000 {
        if t.poll_transmit(now, true).is_none() && t.poll_event().is_none() {
            return;
        }
    }
    panic!("output never ends");
}
