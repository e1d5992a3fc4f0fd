//! The `bus_decode` target.
//!
//! Arbitrary bytes as one cluster bus message (`chirp_chat::bus::Bus`): the decoder returns
//! `Ok` or `Err`, never panics, and what decodes re-encodes to bytes that decode to the same
//! value. Then the bytes are handed to the core of a cluster node that has a session in `#r`
//! (so room messages, presence and member lists for `#r` are taken, not ignored), as if they
//! came from the bus, and its outputs are drained: the core must not panic, and what it
//! shows must stay within its bounds.

use chirp_chat::bus::Bus;
use chirp_chat::server::{ClusterConfig, Server, ServerConfig};

use crate::chat::{Store, drain, hello_in_room};

/// Runs one input. Panics only on a violated invariant.
pub fn run(data: &[u8]) {
    if let Ok(m) = Bus::decode(data) {
        assert_eq!(Bus::decode(&m.encode()).expect("re-encoded decodes"), m);
    }
    let config = ServerConfig {
        cluster: Some(ClusterConfig::new("fuzz-node")),
        ..ServerConfig::default()
    };
    let mut store = Store::default();
    let mut s = Server::new(config, Default::default());
    hello_in_room(&mut s, &mut store);
    s.bus(1, data);
    drain(&mut s, &mut store);
    // Twice: a second copy is a duplicate (or a gap's end) for the core.
    s.bus(2, data);
    drain(&mut s, &mut store);
    s.handle_timeout(10_000);
    drain(&mut s, &mut store);
}
