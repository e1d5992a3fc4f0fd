//! End-to-end guarantees of the protocol core under simulated bad networks.
//!
//! Every test is deterministic (seeded network, virtual time) and bounded (a virtual-time budget
//! plus the harness's step limit and busy-loop detector).

use std::time::Duration;

use chirp_netsim::{GilbertElliott, LinkConfig, Pair, Side};
use chirp_proto::{CloseReason, ConnectionHandle, EndpointConfig, Event, SendError, WriteError};

/// The bytes of message `i` in direction `dir`: a header naming both, then bytes derived from
/// them, so the receiver can check every byte without keeping a copy.
fn message(dir: u8, i: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    let mut x = (u64::from(i) << 8 | u64::from(dir)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(x as u8);
    }
    if len >= 5 {
        m[0] = dir;
        m[1..5].copy_from_slice(&i.to_be_bytes());
    }
    m
}

/// Sizes skewed towards chat (mostly small) with a real tail up to the 64 KiB maximum.
fn size_of(seed: u64, i: u32) -> usize {
    let mut x = seed
        .wrapping_mul(31)
        .wrapping_add(u64::from(i))
        .wrapping_mul(0x2545_f491_4f6c_dd1d);
    x ^= x >> 29;
    match x % 100 {
        0..=69 => (x >> 8) as usize % 200,
        70..=94 => 200 + (x >> 8) as usize % 3900,
        95..=98 => 4096 + (x >> 8) as usize % (65536 - 4096),
        _ => 65536,
    }
}

struct Flow {
    dir: u8,
    conn_tx: ConnectionHandle,
    next_send: u32,
    next_recv: u32,
    total: u32,
    seed: u64,
}

impl Flow {
    fn feed(&mut self, ep: &mut chirp_proto::Endpoint) {
        while self.next_send < self.total {
            let m = message(
                self.dir,
                self.next_send,
                size_of(self.seed ^ u64::from(self.dir), self.next_send),
            );
            match ep.send(self.conn_tx, &m) {
                Ok(()) => self.next_send += 1,
                Err(SendError::Write(WriteError::Blocked)) => break,
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }

    fn check(&mut self, events: Vec<Event>) {
        for ev in events {
            let Event::Message { data, .. } = ev else {
                continue;
            };
            let i = self.next_recv;
            assert!(
                i < self.total,
                "dir {}: message beyond the last one sent",
                self.dir
            );
            let expect = message(self.dir, i, size_of(self.seed ^ u64::from(self.dir), i));
            assert_eq!(
                data.len(),
                expect.len(),
                "dir {} message {i}: wrong length",
                self.dir
            );
            assert!(
                data[..] == expect[..],
                "dir {} message {i}: wrong bytes (duplicate, reordered or corrupt)",
                self.dir
            );
            self.next_recv += 1;
        }
    }
}

fn hostile_link() -> LinkConfig {
    LinkConfig::ideal(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(5))
        .with_loss(0.30)
        .with_duplicate(0.05)
        .with_reorder(0.05, Duration::from_millis(15))
        .with_corrupt(0.02)
        .with_mtu(1200)
}

fn exactly_once_in_order(seed: u64, total: u32, link: LinkConfig) {
    let cfg = link.clone();
    let mut p = Pair::new(EndpointConfig::default(), link, seed);
    let (ca, cb) = p.connect().expect("handshake completes under loss");
    let mut ab = Flow {
        dir: 1,
        conn_tx: ca,
        next_send: 0,
        next_recv: 0,
        total,
        seed,
    };
    let mut ba = Flow {
        dir: 2,
        conn_tx: cb,
        next_send: 0,
        next_recv: 0,
        total,
        seed,
    };
    p.drive_until(Duration::from_secs(3600), |p| {
        ab.feed(&mut p.a.endpoint);
        ba.feed(&mut p.b.endpoint);
        ab.check(p.b.take_events(|e| matches!(e, Event::Message { .. })));
        ba.check(p.a.take_events(|e| matches!(e, Event::Message { .. })));
        assert!(
            p.a.events
                .iter()
                .chain(&p.b.events)
                .all(|e| !matches!(e, Event::Closed { .. })),
            "connection closed: {:?} {:?}",
            p.a.events,
            p.b.events
        );
        ab.next_recv == total && ba.next_recv == total
    })
    .unwrap_or_else(|e| {
        panic!(
            "seed {seed}: {e}; a->b {}/{total}, b->a {}/{total}",
            ab.next_recv, ba.next_recv
        )
    });

    // The impairments really happened, and the transport saw and absorbed them.
    let sa = p.a.endpoint.stats(ca).expect("live");
    let sb = p.b.endpoint.stats(cb).expect("live");
    // Each impairment that was configured really happened, and the transport absorbed it.
    let link = p.path.a_to_b.stats();
    assert!(link.lost > 0, "{link:?}");
    // Nothing chirp sent was ever larger than the 1200-byte datagram limit (the links drop
    // and count anything above their 1200-byte MTU).
    assert_eq!(
        link.oversize + p.path.b_to_a.stats().oversize,
        0,
        "oversize datagrams sent"
    );
    assert!(sa.packets_lost > 0 && sa.retransmissions > 0, "{sa:?}");
    if cfg.duplicate > 0.0 {
        assert!(
            link.duplicated > 0 && sb.duplicates_dropped > 0,
            "{link:?} {sb:?}"
        );
    }
    if cfg.reorder > 0.0 {
        assert!(link.reordered > 0 && sb.out_of_order > 0, "{link:?} {sb:?}");
    }
    if cfg.corrupt > 0.0 {
        assert!(
            link.corrupted > 0 && sb.corrupt_dropped > 0,
            "{link:?} {sb:?}"
        );
    }
    assert_eq!(sb.messages_received, u64::from(total));
    assert_eq!(sa.messages_received, u64::from(total));
}

#[test]
fn ten_thousand_messages_each_way_under_30_percent_loss_seed_1() {
    exactly_once_in_order(1, 10_000, hostile_link());
}

#[test]
fn ten_thousand_messages_each_way_under_30_percent_loss_seed_2() {
    exactly_once_in_order(2, 10_000, hostile_link());
}

#[test]
fn ten_thousand_messages_each_way_under_30_percent_loss_seed_3() {
    exactly_once_in_order(3, 10_000, hostile_link());
}

#[test]
fn burst_loss_gilbert_elliott() {
    // Bursts averaging 5 packets, ~10% mean loss, on top of 5% random loss.
    let link = LinkConfig::ideal(Duration::from_millis(30))
        .with_burst(GilbertElliott::gilbert(0.02, 0.2))
        .with_loss(0.05);
    exactly_once_in_order(4, 3_000, link);
}

#[test]
fn recovers_after_five_second_blackout() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        7,
    );
    let (ca, cb) = p.connect().expect("connects");
    let t0 = p.now;
    p.path.a_to_b.blackout_until(t0 + Duration::from_secs(5));
    p.path.b_to_a.blackout_until(t0 + Duration::from_secs(5));
    for i in 0..20u32 {
        p.a.endpoint.send(ca, &message(1, i, 100)).expect("room");
    }
    let mut got = 0;
    p.drive_until(Duration::from_secs(20), |p| {
        for ev in p.b.take_events(|e| matches!(e, Event::Message { .. })) {
            let Event::Message { data, conn } = ev else {
                unreachable!()
            };
            assert_eq!(conn, cb);
            assert_eq!(&data[..], &message(1, got, 100)[..]);
            got += 1;
        }
        got == 20
    })
    .expect("all messages arrive after the outage");
    let after = p.now - (t0 + Duration::from_secs(5));
    // The probe timer is capped (1 s by default), so recovery follows the outage quickly.
    assert!(
        after <= Duration::from_millis(1500),
        "recovered {after:?} after the outage ended"
    );
    assert!(
        p.a.events
            .iter()
            .all(|e| !matches!(e, Event::Closed { .. })),
        "no spurious close"
    );
    let s = p.a.endpoint.stats(ca).expect("live");
    assert!(
        s.ptos >= 3,
        "the outage was bridged by backed-off probes: {s:?}"
    );
}

#[test]
fn dead_peer_is_detected_after_idle_timeout() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        8,
    );
    let (ca, _cb) = p.connect().expect("connects");
    let t0 = p.now;
    // The peer vanishes: every datagram in either direction is lost from now on.
    p.path.a_to_b.blackout_until(t0 + Duration::from_secs(3600));
    p.path.b_to_a.blackout_until(t0 + Duration::from_secs(3600));
    p.a.endpoint.send(ca, b"into the void").expect("room");
    let closed = p.wait_event(Side::A, Duration::from_secs(120), |e| {
        matches!(e, Event::Closed { .. })
    });
    assert_eq!(
        closed.expect("a closed event arrives"),
        Event::Closed {
            conn: ca,
            reason: CloseReason::IdleTimeout,
            undelivered: vec![bytes::Bytes::from_static(b"into the void")],
        }
    );
    let waited = p.now - t0;
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[test]
fn keepalive_holds_an_idle_connection_open() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        9,
    );
    let (ca, _) = p.connect().expect("connects");
    let t0 = p.now;
    // Ten idle minutes: keepalive PINGs every 15 s keep both sides from timing out.
    p.advance_to(t0 + Duration::from_secs(600))
        .expect("no busy loop");
    assert!(
        p.a.events
            .iter()
            .chain(&p.b.events)
            .all(|e| !matches!(e, Event::Closed { .. }))
    );
    let s = p.a.endpoint.stats(ca).expect("still open");
    assert!(s.packets_sent >= 600 / 15, "keepalives were sent: {s:?}");
    // ...and traffic is sparse: roughly one PING and one ACK per 15 s each way, not a tick.
    assert!(s.packets_sent <= 2 * 600 / 15 + 10, "{s:?}");
}

#[test]
fn memory_stays_bounded_when_receiver_stops_reading() {
    let cfg = EndpointConfig::default();
    let window = cfg.transport.receive_window;
    let send_buffer = cfg.transport.send_buffer as u64;
    let mut p = Pair::new(
        cfg,
        LinkConfig::ideal(Duration::from_millis(10)).with_loss(0.1),
        10,
    );
    let (ca, cb) = p.connect().expect("connects");
    p.b.reading = false;
    let mut sent = 0u32;
    let mut blocked = 0u32;
    let t0 = p.now;
    p.drive_until(Duration::from_secs(60), |p| {
        loop {
            match p.a.endpoint.send(ca, &message(1, sent, 4000)) {
                Ok(()) => sent += 1,
                Err(SendError::Write(WriteError::Blocked)) => {
                    blocked += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let rb = p.b.endpoint.recv_buffered(cb).expect("live");
        let sa = p.a.endpoint.send_buffered(ca).expect("live");
        assert!(rb <= window, "receiver holds {rb} > window {window}");
        assert!(sa <= send_buffer + 4100, "sender holds {sa}");
        assert!(p.a.endpoint.sent_packets_tracked(ca).expect("live") < 2000);
        p.now - t0 >= Duration::from_secs(50)
    })
    .expect("runs 50 s");
    assert!(blocked > 0, "the sender was pushed back");
    // The window filled; the sender stopped at it rather than growing anything.
    let rb = p.b.endpoint.recv_buffered(cb).expect("live");
    assert!(rb > window / 2, "window was used: {rb}");
    assert!(
        u64::from(sent) * 4000 < window + send_buffer + 8000,
        "sent {sent} messages"
    );
    // Reading again drains everything in order and unblocks the sender.
    p.b.reading = true;
    let total = sent;
    let mut got = 0u32;
    p.drive_until(Duration::from_secs(60), |p| {
        for ev in p.b.take_events(|e| matches!(e, Event::Message { .. })) {
            let Event::Message { data, .. } = ev else {
                unreachable!()
            };
            assert_eq!(&data[..], &message(1, got, 4000)[..]);
            got += 1;
        }
        got == total
    })
    .expect("drains");
    assert!(
        !p.a.take_events(|e| matches!(e, Event::Writable { .. }))
            .is_empty()
    );
}

#[test]
fn simultaneous_open_yields_one_connection() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        11,
    );
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let ca = p.a.endpoint.connect(p.now, b_addr).expect("room");
    let cb = p.b.endpoint.connect(p.now, a_addr).expect("room");
    p.drive_until(Duration::from_secs(5), |p| {
        p.a.events
            .iter()
            .any(|e| matches!(e, Event::Connected { .. }))
            && p.b
                .events
                .iter()
                .any(|e| matches!(e, Event::Connected { .. }))
    })
    .expect("both sides connect");
    assert_eq!(p.a.endpoint.connections().count(), 1);
    assert_eq!(p.b.endpoint.connections().count(), 1);
    p.a.endpoint.send(ca, b"from a").expect("send");
    p.b.endpoint.send(cb, b"from b").expect("send");
    p.drive_until(Duration::from_secs(5), |p| {
        p.a.events
            .iter()
            .any(|e| matches!(e, Event::Message { data, .. } if &data[..] == b"from b"))
            && p.b
                .events
                .iter()
                .any(|e| matches!(e, Event::Message { data, .. } if &data[..] == b"from a"))
    })
    .expect("both directions work on the single connection");
}

#[test]
fn graceful_close_delivers_everything_first() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)).with_loss(0.2),
        12,
    );
    let (ca, cb) = p.connect().expect("connects");
    for i in 0..50 {
        p.a.endpoint.send(ca, &message(1, i, 500)).expect("room");
    }
    let now = p.now;
    p.a.endpoint.close(now, ca, 0, "bye");
    assert_eq!(p.a.endpoint.send(ca, b"late"), Err(SendError::Closed));
    p.drive_until(Duration::from_secs(30), |p| {
        p.b.events.iter().any(|e| matches!(e, Event::Closed { .. }))
            && p.a.events.iter().any(|e| matches!(e, Event::Closed { .. }))
    })
    .expect("both sides see the close");
    let msgs: Vec<_> = p.b.take_events(|e| matches!(e, Event::Message { .. }));
    assert_eq!(msgs.len(), 50, "everything was delivered before the close");
    let closed = p.b.take_events(|e| matches!(e, Event::Closed { .. }));
    assert_eq!(
        closed,
        vec![Event::Closed {
            conn: cb,
            reason: CloseReason::PeerClosed {
                code: 0,
                reason: "bye".into()
            },
            undelivered: vec![],
        }]
    );
    assert_eq!(
        p.a.take_events(|e| matches!(e, Event::Closed { .. })),
        vec![Event::Closed {
            conn: ca,
            reason: CloseReason::Local,
            undelivered: vec![],
        }]
    );
    // Both connections are eventually forgotten and nothing stays armed.
    p.drive_to_idle(Duration::from_secs(30)).expect("goes idle");
    assert_eq!(
        p.a.endpoint.connections().count() + p.b.endpoint.connections().count(),
        0
    );
}

#[test]
fn zero_and_max_size_messages() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(5)).with_loss(0.1),
        13,
    );
    let (ca, _) = p.connect().expect("connects");
    let big = message(1, 1, 65536);
    p.a.endpoint.send(ca, b"").expect("empty message");
    p.a.endpoint.send(ca, &big).expect("max message");
    assert_eq!(
        p.a.endpoint.send(ca, &[0; 65537]),
        Err(SendError::Write(WriteError::TooLarge {
            size: 65537,
            max: 65536
        }))
    );
    let mut got = Vec::new();
    p.drive_until(Duration::from_secs(10), |p| {
        got.extend(p.b.take_events(|e| matches!(e, Event::Message { .. })));
        got.len() == 2
    })
    .expect("both arrive");
    assert!(matches!(&got[0], Event::Message { data, .. } if data.is_empty()));
    assert!(matches!(&got[1], Event::Message { data, .. } if data[..] == big[..]));
}

#[test]
fn same_seed_replays_identically() {
    let run = |seed| {
        let mut p = Pair::new(EndpointConfig::default(), hostile_link(), seed);
        let (ca, _) = p.connect().expect("connects");
        for i in 0..200 {
            p.a.endpoint.send(ca, &message(1, i, 300)).expect("room");
        }
        p.drive_until(Duration::from_secs(60), |p| {
            p.b.events
                .iter()
                .filter(|e| matches!(e, Event::Message { .. }))
                .count()
                == 200
        })
        .expect("delivers");
        (p.elapsed(), p.a.endpoint.stats(ca))
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

/// Sum of `Acked` counts for `conn` among `events`.
fn acked(events: &[Event], conn: ConnectionHandle) -> u64 {
    events
        .iter()
        .map(|e| match e {
            Event::Acked { conn: c, messages } if *c == conn => *messages,
            _ => 0,
        })
        .sum()
}

#[test]
fn acked_counts_every_message_exactly_once_under_loss() {
    let total = 400u32;
    let mut p = Pair::new(EndpointConfig::default(), hostile_link(), 21);
    let (ca, cb) = p.connect().expect("handshake completes under loss");
    let mut ab = Flow {
        dir: 1,
        conn_tx: ca,
        next_send: 0,
        next_recv: 0,
        total,
        seed: 21,
    };
    let mut acked_total = 0u64;
    p.drive_until(Duration::from_secs(600), |p| {
        ab.feed(&mut p.a.endpoint);
        ab.check(p.b.take_events(|e| matches!(e, Event::Message { .. })));
        let events = p.a.take_events(|e| matches!(e, Event::Acked { .. }));
        assert!(
            events
                .iter()
                .all(|e| matches!(e, Event::Acked { messages, .. } if *messages >= 1)),
            "an Acked event for nothing: {events:?}"
        );
        acked_total += acked(&events, ca);
        // Acknowledged means the peer's endpoint has it: never more than was sent, never more
        // than the peer has delivered once its events are drained (the harness drains the
        // receiver's events before the sender can see the acknowledgement).
        assert!(acked_total <= u64::from(ab.next_send));
        assert!(acked_total <= u64::from(ab.next_recv));
        acked_total == u64::from(total) && ab.next_recv == total
    })
    .expect("every message is acknowledged");
    assert_eq!(ab.next_recv, total);
    let s = p.a.endpoint.stats(ca).expect("live");
    assert_eq!(s.messages_acked, u64::from(total));
    assert!(s.packets_lost > 0, "the link did lose packets: {s:?}");
    // The receiver sent nothing, so it hears of no acknowledgement.
    p.drive_to_idle(Duration::from_secs(1)).ok();
    assert_eq!(acked(&p.b.take_events(|_| true), cb), 0);
}

#[test]
fn acked_and_undelivered_split_what_was_sent() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        22,
    );
    let (ca, _cb) = p.connect().expect("connects");
    for i in 0..10u32 {
        p.a.endpoint.send(ca, &message(1, i, 200)).expect("room");
    }
    let mut acked_total = 0;
    p.drive_until(Duration::from_secs(5), |p| {
        acked_total += acked(&p.a.take_events(|e| matches!(e, Event::Acked { .. })), ca);
        acked_total == 10
    })
    .expect("the first ten are acknowledged");
    // The peer vanishes; ten more are sent into the void.
    let t0 = p.now;
    p.path.a_to_b.blackout_until(t0 + Duration::from_secs(3600));
    p.path.b_to_a.blackout_until(t0 + Duration::from_secs(3600));
    for i in 10..20u32 {
        p.a.endpoint.send(ca, &message(1, i, 200)).expect("room");
    }
    let closed = p.wait_event(Side::A, Duration::from_secs(120), |e| {
        matches!(e, Event::Closed { .. })
    });
    let Ok(Event::Closed { undelivered, .. }) = closed else {
        panic!("no Closed event: {closed:?}");
    };
    // No acknowledgement came after the blackout, and the ten unacknowledged messages come
    // back in order: every message is in exactly one of the two.
    assert_eq!(acked(&p.a.take_events(|_| true), ca), 0);
    assert_eq!(undelivered.len(), 10);
    for (i, m) in (10..20u32).zip(&undelivered) {
        assert_eq!(&m[..], &message(1, i, 200)[..]);
    }
}

/// Every handle the application holds gets its `Closed` (with what it could not deliver), also
/// when the handshake never completes: the incoming one it picked up with `find_open`, and
/// its own after a simultaneous open made it the server side. (Only an incoming handshake
/// nobody asked for ends silently.)
#[test]
fn a_held_handle_always_reports_closed_even_if_its_handshake_dies() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        23,
    );
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    // B opens; as soon as A holds the incoming handshake, A picks it up and writes to it.
    let _cb = p.b.endpoint.connect(p.now, a_addr).expect("room");
    p.drive_until(Duration::from_secs(5), |p| {
        p.a.endpoint.connections().count() == 1
    })
    .expect("A sees B's handshake");
    let ca =
        p.a.endpoint
            .find_open(b_addr)
            .expect("the incoming handshake");
    p.a.endpoint.send(ca, b"picked up").expect("room");
    let t0 = p.now;
    p.path.a_to_b.blackout_until(t0 + Duration::from_secs(3600));
    p.path.b_to_a.blackout_until(t0 + Duration::from_secs(3600));
    let closed = p.wait_event(
        Side::A,
        Duration::from_secs(60),
        |e| matches!(e, Event::Closed { conn, .. } if *conn == ca),
    );
    let Ok(Event::Closed { undelivered, .. }) = closed else {
        panic!("A's held handle ended without Closed: {closed:?}");
    };
    assert_eq!(undelivered, vec![bytes::Bytes::from_static(b"picked up")]);

    // A simultaneous open that dies half-way: both applications hear of their handles.
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        24,
    );
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let ca = p.a.endpoint.connect(p.now, b_addr).expect("room");
    let cb = p.b.endpoint.connect(p.now, a_addr).expect("room");
    p.a.endpoint.send(ca, b"from a").expect("room");
    p.b.endpoint.send(cb, b"from b").expect("room");
    // Long enough for the INITIALs to cross (one side yields), too short to finish.
    let t0 = p.now;
    p.advance_to(t0 + Duration::from_millis(30)).expect("runs");
    p.path.a_to_b.blackout_until(t0 + Duration::from_secs(3600));
    p.path.b_to_a.blackout_until(t0 + Duration::from_secs(3600));
    for (side, conn, text) in [(Side::A, ca, &b"from a"[..]), (Side::B, cb, b"from b")] {
        let closed = p.wait_event(
            side,
            Duration::from_secs(60),
            |e| matches!(e, Event::Closed { conn: c, .. } if *c == conn),
        );
        let Ok(Event::Closed { undelivered, .. }) = closed else {
            panic!("{side:?}: no Closed for its own handle: {closed:?}");
        };
        assert_eq!(undelivered, vec![bytes::Bytes::copy_from_slice(text)]);
    }
}

#[test]
fn handshake_packets_lost_before_the_peer_listens_are_counted_apart() {
    // Two peers, A started 3 s before B (its INITIALs go nowhere meanwhile), both opening:
    // what `chirp peer` does when one side starts late.
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(20)),
        25,
    );
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let t0 = p.now;
    p.path.a_to_b.blackout_until(t0 + Duration::from_secs(3));
    p.a.endpoint.connect(p.now, b_addr).expect("room");
    p.advance_to(t0 + Duration::from_secs(3)).expect("runs");
    let _cb = p.b.endpoint.connect(p.now, a_addr).expect("room");
    p.drive_until(Duration::from_secs(10), |p| {
        [&p.a.events, &p.b.events]
            .iter()
            .all(|evs| evs.iter().any(|e| matches!(e, Event::Connected { .. })))
    })
    .expect("both connect");
    let conn_a =
        p.a.endpoint
            .connections()
            .next()
            .expect("A has its connection");
    let s = p.a.endpoint.stats(conn_a).expect("live");
    assert!(s.packets_lost > 0, "A's early INITIALs were lost: {s:?}");
    assert_eq!(s.handshake_packets_lost, s.packets_lost, "{s:?}");
    // Data lost afterwards is not handshake loss.
    p.path
        .a_to_b
        .blackout_until(p.now + Duration::from_millis(500));
    for i in 0..5u32 {
        p.a.endpoint
            .send(conn_a, &message(1, i, 100))
            .expect("room");
    }
    p.drive_until(Duration::from_secs(10), |p| {
        p.a.endpoint
            .stats(conn_a)
            .is_some_and(|s| s.messages_acked == 5)
    })
    .expect("delivered and acknowledged after the gap");
    let after = p.a.endpoint.stats(conn_a).expect("live");
    assert!(after.packets_lost > s.packets_lost, "{after:?}");
    assert_eq!(after.handshake_packets_lost, s.handshake_packets_lost);
}
