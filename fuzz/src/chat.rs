//! The `chat_decode` target.
//!
//! Arbitrary bytes as one chat-protocol message (`docs/PROTOCOL.md`, "Chat protocol"):
//! both decoders (`ClientMsg`, `ServerMsg`) must return `Ok` or `Err`, never panic; what
//! decodes must re-encode to bytes that decode to the same value. Then the bytes are fed, as a
//! request from a session that has said `hello` and joined `#r`, to the sans-IO server core,
//! whose outputs are drained (commits succeed at once): the core must not panic either.

use std::net::{IpAddr, Ipv4Addr};

use chirp_chat::server::{Output, Server, ServerConfig};
use chirp_chat::wire::{ClientMsg, JoinReq, ServerMsg, VERSION};

fn drain(s: &mut Server) {
    // Bounded: each input produces a handful of outputs.
    for _ in 0..10_000 {
        match s.poll_output() {
            Some(Output::Persist { token, .. }) => s.committed(0, token, true),
            Some(_) => {}
            None => return,
        }
    }
    panic!("the server core never stopped producing output");
}

/// Runs one input. Panics only on a violated invariant.
pub fn run(data: &[u8]) {
    if let Ok(m) = ClientMsg::decode(data) {
        assert_eq!(
            ClientMsg::decode(&m.encode()).expect("re-encoded decodes"),
            m
        );
    }
    if let Ok(m) = ServerMsg::decode(data) {
        assert_eq!(
            ServerMsg::decode(&m.encode()).expect("re-encoded decodes"),
            m
        );
    }
    let mut s = Server::new(ServerConfig::default(), Default::default());
    s.connected(0, 1, IpAddr::V4(Ipv4Addr::LOCALHOST), [1; 32]);
    let hello = ClientMsg::Hello {
        v: VERSION,
        nick: "fuzz".into(),
        client: 1,
        rooms: vec![JoinReq {
            room: "#r".into(),
            after: None,
        }],
        dms: vec![],
        echo: true,
    };
    s.message(0, 1, &hello.encode());
    drain(&mut s);
    s.message(1, 1, data);
    drain(&mut s);
    s.handle_timeout(1_000);
    drain(&mut s);
}
