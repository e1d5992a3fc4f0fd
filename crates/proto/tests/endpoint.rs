//! Endpoint-level behaviour that needs no network model: what happens to junk, to datagrams for
//! unknown connections, and to INITIALs the endpoint may not accept.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_proto::wire::{
    ConnectionId, Frame, Frames, Header, MIN_INITIAL_SIZE, Packet, PacketBuilder, PacketType,
};
use chirp_proto::{Endpoint, EndpointConfig, Event};
use proptest::prelude::*;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn initial(dst: u64, src: u64, frames: &[Frame<'_>]) -> Vec<u8> {
    let h = Header {
        ty: PacketType::Initial,
        dst_cid: ConnectionId(dst),
        src_cid: Some(ConnectionId(src)),
        number: 0,
    };
    let mut b = PacketBuilder::new(&h, 1200);
    for f in frames {
        f.encode(b.frames_buf());
    }
    // A conforming client pads its INITIALs; the endpoint refuses shorter ones.
    b.pad_to(MIN_INITIAL_SIZE);
    b.finish()
}

/// Rewrites the CRC32C trailer so that a deliberately damaged packet passes the checksum.
fn fix_checksum(d: &mut [u8]) {
    let n = d.len();
    let crc = crc32c::crc32c(&d[..n - 4]);
    d[n - 4..].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn junk_is_counted_not_fatal() {
    let now = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    ep.handle_datagram(now, addr(1), b"");
    ep.handle_datagram(now, addr(1), b"hello there, this is not chirp");
    let s = ep.endpoint_stats();
    assert_eq!(s.datagrams_received, 2);
    assert_eq!(s.malformed_dropped, 1, "too short");
    assert_eq!(s.corrupt_dropped, 1, "the text fails the checksum");

    // A valid checksum around an unknown frame type: dropped as malformed, and it allocates
    // nothing (frames are checked before a connection is created).
    let mut bad = initial(1, 2, &[Frame::Ping]);
    // Header: version, type, two 8-byte IDs, 1-byte packet number = 19 bytes; PING follows.
    assert_eq!(bad[19], 0x01);
    bad[19] = 0x3f;
    fix_checksum(&mut bad);
    ep.handle_datagram(now, addr(1), &bad);
    assert_eq!(ep.connections().count(), 0);
    assert_eq!(ep.endpoint_stats().malformed_dropped, 2);

    // An unpadded INITIAL is refused: answering it could amplify.
    let h = Header {
        ty: PacketType::Initial,
        dst_cid: ConnectionId(5),
        src_cid: Some(ConnectionId(6)),
        number: 0,
    };
    let mut b = PacketBuilder::new(&h, 1200);
    Frame::Ping.encode(b.frames_buf());
    ep.handle_datagram(now, addr(1), &b.finish());
    assert_eq!(ep.connections().count(), 0);
    assert_eq!(ep.endpoint_stats().refused, 1);

    // A stray ACCEPT (a server's answer to a connection we no longer have) opens nothing.
    let h = Header {
        ty: PacketType::Accept,
        dst_cid: ConnectionId(7),
        src_cid: Some(ConnectionId(8)),
        number: 0,
    };
    let mut b = PacketBuilder::new(&h, 1200);
    Frame::Ping.encode(b.frames_buf());
    b.pad_to(MIN_INITIAL_SIZE);
    ep.handle_datagram(now, addr(1), &b.finish());
    assert_eq!(ep.connections().count(), 0);
    assert_eq!(ep.endpoint_stats().unknown_connection, 1);

    // A DATA packet for an ID nobody has is counted as such.
    let h = Header {
        ty: PacketType::Data,
        dst_cid: ConnectionId(99),
        src_cid: None,
        number: 0,
    };
    let mut b = PacketBuilder::new(&h, 1200);
    Frame::Ping.encode(b.frames_buf());
    ep.handle_datagram(now, addr(1), &b.finish());
    assert_eq!(ep.endpoint_stats().unknown_connection, 2);
}

#[test]
fn refuses_when_not_accepting_and_when_full() {
    let now = Instant::now();
    let cfg = EndpointConfig {
        accept_incoming: false,
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(cfg, 1);
    ep.handle_datagram(now, addr(1), &initial(1, 2, &[Frame::Ping]));
    assert_eq!(ep.connections().count(), 0);
    assert_eq!(ep.endpoint_stats().refused, 1);
    assert!(
        ep.poll_transmit(now).is_none(),
        "nothing is sent to an address we refused"
    );

    let cfg = EndpointConfig {
        max_connections: 2,
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(cfg, 1);
    for port in 1..=5u16 {
        let p = u64::from(port);
        ep.handle_datagram(now, addr(port), &initial(p, 100 + p, &[Frame::Ping]));
    }
    assert_eq!(ep.connections().count(), 2);
    assert_eq!(ep.endpoint_stats().refused, 3);
}

#[test]
fn server_answers_initial_and_retransmissions_route_to_one_connection() {
    let now = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    let first = initial(7, 8, &[Frame::Ping]);
    ep.handle_datagram(now, addr(9), &first);
    ep.handle_datagram(now + Duration::from_millis(5), addr(9), &first);
    assert_eq!(ep.connections().count(), 1);
    let t = ep.poll_transmit(now).expect("server answers");
    assert_eq!(t.destination, addr(9));
    let p = Packet::new_checked(&t.contents).expect("valid");
    assert_eq!(p.header.ty, PacketType::Accept);
    assert_eq!(
        p.header.dst_cid,
        ConnectionId(8),
        "addressed to the client's own ID"
    );
    let frames: Vec<_> = Frames::new(p.payload)
        .collect::<Result<_, _>>()
        .expect("frames");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Ack(a) if a.contains(0))),
        "{frames:?}"
    );
    assert!(matches!(
        ep.poll_event(),
        Some(Event::Connected { incoming: true, .. })
    ));
    let conn = ep.connections().next().expect("one");
    assert_eq!(
        ep.stats(conn).expect("live").duplicates_dropped,
        1,
        "the copy was not reprocessed"
    );
}

proptest! {
    /// Whole packets round-trip: header fields and frames survive encode, `new_checked`, decode.
    #[test]
    fn packet_round_trip(
        initial_ty in any::<bool>(),
        dst in any::<u64>(),
        src in any::<u64>(),
        number in 0u64..(1 << 62),
        offset in 0u64..(1 << 40),
        data in proptest::collection::vec(any::<u8>(), 0..1000),
        limit in 0u64..(1 << 62),
        ping in any::<bool>(),
    ) {
        let header = Header {
            ty: if initial_ty { PacketType::Initial } else { PacketType::Data },
            dst_cid: ConnectionId(dst),
            src_cid: initial_ty.then_some(ConnectionId(src)),
            number,
        };
        let mut frames = vec![Frame::Message { offset, data: &data }, Frame::MaxData { limit }];
        if ping {
            frames.push(Frame::Ping);
        }
        let mut b = PacketBuilder::new(&header, 1200);
        for f in &frames {
            f.encode(b.frames_buf());
        }
        let bytes = b.finish();
        prop_assert!(bytes.len() <= 1200);
        let p = Packet::new_checked(&bytes).expect("valid");
        prop_assert_eq!(p.header, header);
        let decoded: Vec<Frame<'_>> = Frames::new(p.payload).collect::<Result<_, _>>().expect("frames");
        prop_assert_eq!(decoded, frames);
    }

    /// Arbitrary datagrams, with or without a valid checksum, never panic the endpoint, and no
    /// datagram that fails to parse allocates a connection.
    #[test]
    fn arbitrary_datagrams_never_panic(
        dgrams in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>(), any::<bool>()), 1..20)
    ) {
        let now = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), 3);
        for (i, (mut d, fix, as_v1)) in dgrams.into_iter().enumerate() {
            if as_v1 && d.len() >= 2 {
                d[0] = 0x01;
                d[1] = if i % 2 == 0 { 0x01 } else { 0x04 };
            }
            if fix && d.len() >= 4 {
                fix_checksum(&mut d);
            }
            let parses = Packet::new_checked(&d).is_ok();
            let before = ep.connections().count();
            ep.handle_datagram(now + Duration::from_millis(i as u64), addr(1000 + i as u16), &d);
            if !parses {
                prop_assert_eq!(ep.connections().count(), before);
            }
            while ep.poll_transmit(now).is_some() {}
            while ep.poll_event().is_some() {}
            ep.handle_timeout(now + Duration::from_secs(100));
        }
    }
}

#[test]
fn spoofed_initial_gets_at_most_three_times_its_size_and_is_forgotten() {
    // One padded INITIAL from an address that never answers (a forged source).
    let start = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), 9);
    let first = initial(1, 2, &[Frame::Ping]);
    ep.handle_datagram(start, addr(7), &first);
    let mut sent = 0usize;
    let mut closed = None;
    let mut now = start;
    for _ in 0..10_000 {
        while let Some(t) = ep.poll_transmit(now) {
            sent += t.contents.len();
        }
        while let Some(ev) = ep.poll_event() {
            if let Event::Closed { reason, .. } = ev {
                closed = Some((now - start, reason));
            }
        }
        match ep.poll_timeout() {
            Some(t) => {
                assert!(
                    t > now || t == now && closed.is_none(),
                    "deadline stuck in the past"
                );
                now = t.max(now);
                ep.handle_timeout(now);
            }
            None => break,
        }
    }
    assert!(
        sent <= 3 * first.len(),
        "sent {sent} bytes in answer to {}",
        first.len()
    );
    let (after, reason) = closed.expect("the connection was given up");
    assert_eq!(reason, chirp_proto::CloseReason::IdleTimeout);
    assert!(
        after <= chirp_proto::HANDSHAKE_TIMEOUT + Duration::from_millis(1),
        "{after:?}"
    );
    assert_eq!(ep.connections().count(), 0);
}

#[test]
fn accept_only_from_refuses_strangers() {
    let now = Instant::now();
    let cfg = EndpointConfig {
        accept_only_from: Some("127.0.0.1".parse().expect("ip")),
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(cfg, 1);
    let stranger: SocketAddr = ([127, 0, 0, 2], 9).into();
    ep.handle_datagram(now, stranger, &initial(1, 2, &[Frame::Ping]));
    assert_eq!(ep.connections().count(), 0);
    assert_eq!(ep.endpoint_stats().refused, 1);
    // The expected peer, also when it arrives IPv4-mapped on a dual-stack socket.
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().expect("addr");
    ep.handle_datagram(now, mapped, &initial(3, 4, &[Frame::Ping]));
    assert_eq!(ep.connections().count(), 1);
    assert_eq!(ep.poll_transmit(now).map(|t| t.destination), Some(addr(9)));
}

#[test]
fn find_open_sees_a_connection_the_peer_opened() {
    let now = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    assert_eq!(ep.find_open(addr(9)), None);
    ep.handle_datagram(now, addr(9), &initial(1, 2, &[Frame::Ping]));
    let h = ep.connections().next().expect("accepted");
    assert_eq!(
        ep.find_open(addr(9)),
        Some(h),
        "reused rather than a second connection"
    );
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().expect("addr");
    assert_eq!(ep.find_open(mapped), Some(h));
    ep.abort(now, h, 0, "bye");
    assert_eq!(
        ep.find_open(addr(9)),
        None,
        "a closing connection is not reused"
    );
}
