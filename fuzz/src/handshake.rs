//! The `handshake` target: arbitrary bytes as a Noise handshake message, both to
//! `chirp_proto::handshake::Handshake` directly and inside the HANDSHAKE frame of a properly
//! sealed long-header packet given to an [`Endpoint`].
//!
//! # Input format
//!
//! The first byte picks the mode (modulo 6); the rest is the message `m`:
//!
//! | mode | what reads `m` |
//! |---|---|
//! | 0 | a responder, as message 1 |
//! | 1 | an initiator that wrote message 1, as message 2 |
//! | 2 | a responder that read a real message 1 and wrote message 2, as message 3 |
//! | 3 | a server `Endpoint`, in a padded INITIAL (first without token, then with the cookie of the RETRY it answers with) |
//! | 4 | a client `Endpoint` that has sent its INITIAL, in an ACCEPT sealed with the server initial key |
//! | 5 | a server `Endpoint` that accepted a real message 1 and sent ACCEPT, in a HANDSHAKE packet |
//!
//! Checks besides "no panic": a message Noise accepts leads to the next step succeeding
//! (message 2 is written, the handshake finishes with keys), and every datagram an endpoint
//! emits is at most 1200 bytes and structurally valid.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chirp_proto::crypto::InitialKeys;
use chirp_proto::handshake::{Handshake, StaticSecret};
use chirp_proto::wire::{
    ConnectionId, Frame, Frames, Header, MAX_DATAGRAM_SIZE, MIN_INITIAL_SIZE, Packet,
    PacketBuilder, PacketType,
};
use chirp_proto::{Endpoint, EndpointConfig};

use crate::check_own_transmit;

const CLIENT_KEY: [u8; 32] = [0x11; 32];
const SERVER_KEY: [u8; 32] = [0x22; 32];
const CLIENT_CID: ConnectionId = ConnectionId(0xb3f2_af6d_0fc7_10c5);
const INITIAL_DCID: ConnectionId = ConnectionId(0x853b_5596_4736_4cea);

fn peer() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000))
}

fn endpoint(key: [u8; 32]) -> Endpoint {
    let config = EndpointConfig {
        identity: Some(StaticSecret(key)),
        ..EndpointConfig::default()
    };
    Endpoint::new(config, 0)
}

/// Everything the endpoint sends now, each datagram checked.
fn drain(ep: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Bounded: a handshake step produces a handful of datagrams.
    for _ in 0..64 {
        let Some(t) = ep.poll_transmit(now) else {
            break;
        };
        check_own_transmit(t.destination, &t.contents);
        out.push(t.contents);
    }
    while ep.poll_event().is_some() {}
    out
}

/// A long-header packet carrying `HANDSHAKE(msg)`, sealed as the protocol requires.
fn long_packet(
    ty: PacketType,
    dst: ConnectionId,
    src: ConnectionId,
    pn: u64,
    token: &[u8],
    msg: &[u8],
) -> Vec<u8> {
    let header = Header {
        ty,
        dst_cid: dst,
        src_cid: Some(src),
        number: pn,
    };
    let keys = InitialKeys::new(INITIAL_DCID.0);
    let mut b = PacketBuilder::new(&header, token, MAX_DATAGRAM_SIZE);
    let room = b.remaining().saturating_sub(3);
    Frame::Handshake(&msg[..msg.len().min(room)]).encode(b.frames_buf());
    let key = if ty == PacketType::Accept {
        keys.server
    } else {
        keys.client
    };
    if ty == PacketType::Initial {
        b.pad_to(MIN_INITIAL_SIZE);
    }
    b.finish(&key)
}

/// A client INITIAL carrying `msg1` that the server endpoint lets through its address check:
/// sends it without a token, then again with the cookie of the RETRY.
fn initial_through_retry(ep: &mut Endpoint, now: Instant, msg1: &[u8]) -> Vec<Vec<u8>> {
    let first = long_packet(PacketType::Initial, INITIAL_DCID, CLIENT_CID, 0, &[], msg1);
    ep.handle_datagram(now, peer(), &first);
    let answers = drain(ep, now);
    let token = answers.iter().find_map(|d| {
        let p = Packet::new_checked(d).ok()?;
        (p.header.ty == PacketType::Retry).then(|| p.token.to_vec())
    });
    let Some(token) = token else {
        return answers;
    };
    let second = long_packet(
        PacketType::Initial,
        INITIAL_DCID,
        CLIENT_CID,
        1,
        &token,
        msg1,
    );
    ep.handle_datagram(now, peer(), &second);
    drain(ep, now)
}

/// Runs one input. Panics only on a violated invariant.
pub fn run(data: &[u8]) {
    // Deterministic Noise ephemeral keys from the start of every input: runs replay exactly.
    chirp_proto::handshake::fuzzing::reset();
    let (mode, msg) = data.split_first().unwrap_or((&0, &[]));
    let now = Instant::now();
    match mode % 6 {
        0 => {
            let Ok(mut r) = Handshake::responder(&SERVER_KEY) else {
                return;
            };
            if r.read(msg).is_ok() {
                let m2 = r
                    .write(&[])
                    .expect("message 2 follows an accepted message 1");
                assert_eq!(m2.len(), 96, "XX message 2 with an empty payload");
            }
        }
        1 => {
            let (Ok(mut i), Ok(mut r)) = (
                Handshake::initiator(&CLIENT_KEY),
                Handshake::responder(&SERVER_KEY),
            ) else {
                return;
            };
            let m1 = i.write(&[]).expect("initiator writes first");
            r.read(&m1).expect("a real message 1 is accepted");
            if i.read(msg).is_ok() {
                assert!(
                    i.remote_static().is_some(),
                    "message 2 carries the static key"
                );
                let m3 = i
                    .write(&[])
                    .expect("message 3 follows an accepted message 2");
                assert!(i.finish().is_ok(), "the initiator has keys after message 3");
                // The forged message 2 came from someone else: the real responder cannot
                // follow (unless the input is the responder's own message 2, which the fuzzer
                // cannot produce: its ephemeral key is random).
                let _ = r.read(&m3);
            }
        }
        2 => {
            let (Ok(mut i), Ok(mut r)) = (
                Handshake::initiator(&CLIENT_KEY),
                Handshake::responder(&SERVER_KEY),
            ) else {
                return;
            };
            let m1 = i.write(&[]).expect("initiator writes first");
            r.read(&m1).expect("a real message 1 is accepted");
            let m2 = r.write(&[]).expect("responder writes message 2");
            i.read(&m2).expect("a real message 2 is accepted");
            if r.read(msg).is_ok() {
                assert!(r.is_finished());
                assert!(r.finish().is_ok(), "the responder has keys after message 3");
            }
        }
        3 => {
            let mut server = endpoint(SERVER_KEY);
            initial_through_retry(&mut server, now, msg);
            server.handle_timeout(now + Duration::from_secs(1));
            drain(&mut server, now + Duration::from_secs(1));
        }
        4 => {
            let mut client = endpoint(CLIENT_KEY);
            if client.connect(now, peer()).is_err() {
                return;
            }
            let sent = drain(&mut client, now);
            let Some(initial) = sent.first().and_then(|d| Packet::new_checked(d).ok()) else {
                panic!("a connecting client sends an INITIAL");
            };
            let (r, c) = (initial.header.dst_cid, initial.header.src_cid);
            let c = c.expect("INITIAL has a source CID");
            // The client's own initial destination CID keys the attempt.
            let header = Header {
                ty: PacketType::Accept,
                dst_cid: c,
                src_cid: Some(ConnectionId(0x1a28_690d_a8a8_d057)),
                number: 0,
            };
            let mut b = PacketBuilder::new(&header, &[], MAX_DATAGRAM_SIZE);
            let room = b.remaining().saturating_sub(3);
            Frame::Handshake(&msg[..msg.len().min(room)]).encode(b.frames_buf());
            let accept = b.finish(&InitialKeys::new(r.0).server);
            client.handle_datagram(now, peer(), &accept);
            drain(&mut client, now);
        }
        _ => {
            let mut server = endpoint(SERVER_KEY);
            let Ok(mut i) = Handshake::initiator(&CLIENT_KEY) else {
                return;
            };
            let m1 = i.write(&[]).expect("initiator writes first");
            let answers = initial_through_retry(&mut server, now, &m1);
            // Find the ACCEPT: the server's CID and its message 2.
            let keys = InitialKeys::new(INITIAL_DCID.0);
            let accept = answers.iter().find_map(|d| {
                let p = Packet::new_checked(d).ok()?;
                if p.header.ty != PacketType::Accept {
                    return None;
                }
                let plain = p.open(&keys.server).ok()?;
                let has_m2 = Frames::new(&plain)
                    .any(|f| matches!(f, Ok(Frame::Handshake(m)) if m.len() == 96));
                has_m2.then_some(p.header.src_cid)
            });
            let Some(Some(server_cid)) = accept else {
                panic!("the server answers a valid INITIAL with a token with an ACCEPT");
            };
            let hs = long_packet(PacketType::Handshake, server_cid, CLIENT_CID, 2, &[], msg);
            server.handle_datagram(now, peer(), &hs);
            drain(&mut server, now);
        }
    }
}
