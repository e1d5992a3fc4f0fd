//! The `chat_decode` target.
//!
//! Arbitrary bytes as one chat-protocol message (`docs/PROTOCOL.md`, "Chat protocol"):
//! both decoders (`ClientMsg`, `ServerMsg`) must return `Ok` or `Err`, never panic; what
//! decodes must re-encode to bytes that decode to the same value. Then the bytes are fed, as a
//! request from a session that has said `hello` and joined `#r`, to the sans-IO server core,
//! whose outputs are drained (commits succeed at once): the core must not panic either.

use std::net::{IpAddr, Ipv4Addr};

use std::collections::HashMap;

use chirp_chat::server::{Output, Server, ServerConfig};
use chirp_chat::wire::{ClientMsg, JoinReq, ServerMsg, VERSION};
use chirp_store::{Op, Outcome};

/// A store that commits at once: each message gets the next id of its conversation.
#[derive(Default)]
pub struct Store {
    last: HashMap<String, u64>,
}

impl Store {
    /// The outcomes of `ops`, as the database would give them.
    pub fn commit(&mut self, ops: &[Op]) -> Vec<Outcome> {
        ops.iter()
            .map(|op| match op {
                Op::Message(m) => {
                    let id = self.last.entry(m.conv.clone()).or_default();
                    *id += 1;
                    Outcome::Stored { id: *id }
                }
                Op::SetNick { .. } => Outcome::NickBound,
                _ => Outcome::Done,
            })
            .collect()
    }

    /// A conversation's high-water mark.
    pub fn last_id(&self, conv: &str) -> u64 {
        self.last.get(conv).copied().unwrap_or(0)
    }
}

/// Carries out the core's outputs (commits succeed at once, syncs read the mark) until there
/// are none.
pub fn drain(s: &mut Server, store: &mut Store) {
    // Bounded: each input produces a handful of outputs.
    for _ in 0..10_000 {
        match s.poll_output() {
            Some(Output::Persist { token, ops }) => {
                let out = store.commit(&ops);
                s.committed(0, token, Ok(out));
            }
            Some(Output::Sync { conv }) => {
                let last = store.last_id(&conv);
                s.synced(0, &conv, Ok(last));
            }
            Some(_) => {}
            None => return,
        }
    }
    panic!("the server core never stopped producing output");
}

/// Connects session 1 (key `[1; 32]`, nick `fuzz`) and joins it to `#r`.
pub fn hello_in_room(s: &mut Server, store: &mut Store) {
    s.connected(0, 1, IpAddr::V4(Ipv4Addr::LOCALHOST), [1; 32]);
    let hello = ClientMsg::Hello {
        v: VERSION,
        nick: "fuzz".into(),
        client: 1,
        rooms: vec![JoinReq {
            room: "#r".into(),
            after: None,
            key: None,
        }],
        dms: vec![],
        echo: true,
    };
    s.message(0, 1, &hello.encode());
    drain(s, store);
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
    let mut store = Store::default();
    let mut s = Server::new(ServerConfig::default(), Default::default());
    hello_in_room(&mut s, &mut store);
    s.message(1, 1, data);
    drain(&mut s, &mut store);
    s.handle_timeout(1_000);
    drain(&mut s, &mut store);
}
