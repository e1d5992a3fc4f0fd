//! Connection establishment corner cases: races, stray and stale handshake packets, and a
//! close before the handshake completes. Each was a real bug once; these keep them fixed.

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair, Side};
use chirp_proto::{CloseReason, EndpointConfig, Event};

const ONE_WAY: Duration = Duration::from_millis(20);

#[test]
fn handshake_completes_under_heavy_loss() {
    for seed in 1..=10 {
        let mut p = Pair::new(
            EndpointConfig::default(),
            LinkConfig::ideal(ONE_WAY).with_loss(0.5),
            seed,
        );
        p.connect().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn aborted_client_leaves_no_ghost_connection() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 21);
    let b_addr = p.b.addr;
    let ca = p.a.endpoint.connect(p.now, b_addr).expect("room");
    // The server's RETRY has arrived (40 ms) and the INITIAL with the token is on its way; the
    // client gives up before the server's ACCEPT can arrive.
    let t = p.now + Duration::from_millis(45);
    p.advance_to(t).expect("runs");
    p.a.endpoint.abort(t, ca, 0, "never mind");
    // ...and its CLOSE is lost (the INITIAL already in flight still arrives), so the server
    // keeps answering for a while.
    p.path.a_to_b.blackout_until(t + Duration::from_secs(60));
    p.advance_to(t + Duration::from_millis(100)).expect("runs");
    assert_eq!(
        p.b.endpoint.connections().count(),
        1,
        "the server did accept the INITIAL"
    );
    // Whatever the server keeps sending must not open a connection on the client's endpoint.
    p.advance_to(t + Duration::from_secs(40)).expect("runs");
    assert!(
        p.b.events.is_empty(),
        "a handshake that never completed is invisible to the application: {:?}",
        p.b.events
    );
    assert_eq!(
        p.b.endpoint.connections().count(),
        0,
        "the server's connection ended"
    );
    assert_eq!(
        p.a.endpoint.connections().count(),
        0,
        "no ghost connection on the client"
    );
    assert!(
        p.a.events
            .iter()
            .all(|e| !matches!(e, Event::Connected { incoming: true, .. })),
        "{:?}",
        p.a.events
    );
    let stray = p.a.endpoint.endpoint_stats();
    assert!(
        stray.unknown_connection > 0,
        "the server's ACCEPTs were seen and dropped: {stray:?}"
    );
}

#[test]
fn close_during_handshake_reaches_the_server() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 22);
    let b_addr = p.b.addr;
    let ca = p.a.endpoint.connect(p.now, b_addr).expect("room");
    // 70 ms: the server has the INITIAL with its token (60 ms, after the RETRY round trip) but
    // the client has no ACCEPT yet (80 ms).
    let t = p.now + Duration::from_millis(70);
    p.advance_to(t).expect("runs");
    assert_eq!(p.b.endpoint.connections().count(), 1);
    p.a.endpoint.abort(t, ca, 0x100, "changed my mind");
    // The half-open connection goes as soon as the CLOSE arrives; without it, it would linger
    // until the handshake timeout (10 s). (Draining lasts three probe timeouts, ~3 s with no
    // RTT sample yet.) Its application never saw it, so it sees no event.
    p.drive_until(Duration::from_secs(5), |p| {
        p.b.endpoint.connections().count() == 0
    })
    .expect("the server learns of the close long before its handshake timeout");
    assert!(p.b.events.is_empty(), "{:?}", p.b.events);
}

#[test]
fn late_copies_after_simultaneous_open_are_ignored() {
    // Heavy duplication and reordering: copies of both sides' INITIALs arrive long after the
    // race is settled. Each side must still end with exactly one connection, never treating a
    // late copy as a restarted peer.
    for seed in 1..=20 {
        let link = LinkConfig::ideal(ONE_WAY)
            .with_duplicate(0.5)
            .with_reorder(0.5, Duration::from_millis(300));
        let mut p = Pair::new(EndpointConfig::default(), link, seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let ca = p.a.endpoint.connect(p.now, b_addr).expect("room");
        let cb = p.b.endpoint.connect(p.now, a_addr).expect("room");
        let t = p.now + Duration::from_secs(3);
        p.advance_to(t).expect("runs");
        let connected = |evs: &std::collections::VecDeque<Event>| {
            evs.iter()
                .filter(|e| matches!(e, Event::Connected { .. }))
                .count()
        };
        assert_eq!(connected(&p.a.events), 1, "seed {seed}: {:?}", p.a.events);
        assert_eq!(connected(&p.b.events), 1, "seed {seed}: {:?}", p.b.events);
        assert_eq!(p.a.endpoint.connections().count(), 1, "seed {seed}");
        assert_eq!(p.b.endpoint.connections().count(), 1, "seed {seed}");
        // And the one connection works both ways.
        p.a.endpoint.send(ca, b"ping").expect("open");
        p.b.endpoint.send(cb, b"pong").expect("open");
        p.drive_until(Duration::from_secs(5), |p| {
            p.a.events
                .iter()
                .any(|e| matches!(e, Event::Message { .. }))
                && p.b
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Message { .. }))
        })
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn restarted_peer_is_a_new_connection() {
    // A peer that loses all state and connects again from the same address gets a new
    // connection, which the application can tell apart from the old one.
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 23);
    let (ca, cb_old) = p.connect().expect("connects");
    p.b.events.clear();
    // "Restart" a: a fresh endpoint at the same address.
    p.a.endpoint = chirp_proto::Endpoint::new(EndpointConfig::default(), 999);
    p.a.events.clear();
    let b_addr = p.b.addr;
    let ca_new = p.a.endpoint.connect(p.now, b_addr).expect("room");
    assert_eq!(ca_new, ca, "handles restart from zero in a new endpoint");
    let mut new_conn = None;
    p.drive_until(Duration::from_secs(5), |p| {
        new_conn = p.b.events.iter().find_map(|e| match e {
            Event::Connected {
                conn,
                incoming: true,
                ..
            } => Some(*conn),
            _ => None,
        });
        new_conn.is_some()
    })
    .expect("b accepts the restarted peer");
    assert_ne!(new_conn, Some(cb_old));
}

#[test]
fn close_acknowledges_what_arrived_just_before_it() {
    // b receives a message and closes at once, before its delayed ACK is due: the CLOSE packet
    // itself must acknowledge the message, so a does not report it as undelivered.
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 24);
    let (ca, cb) = p.connect().expect("connects");
    p.a.endpoint.send(ca, b"last words").expect("open");
    p.drive_until(Duration::from_secs(1), |p| {
        p.b.events
            .iter()
            .any(|e| matches!(e, Event::Message { .. }))
    })
    .expect("delivered");
    let now = p.now;
    p.b.endpoint.close(now, cb, 0, "bye");
    let closed = p.wait_event(Side::A, Duration::from_secs(5), |e| {
        matches!(e, Event::Closed { .. })
    });
    let Event::Closed { undelivered, .. } = closed.expect("a sees the close") else {
        unreachable!("wait_event returns a matching event")
    };
    assert!(
        undelivered.is_empty(),
        "delivered data reported as undelivered: {undelivered:?}"
    );
}

#[test]
fn late_starter_is_found_within_two_round_trips() {
    // a has been trying for a while (its probe timer is backed off); b starts and tries too.
    // Whichever side wins the tie-break, the connection must be up within about one round
    // trip of b's start, not at a's next probe timeout.
    for seed in 1..=20 {
        let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        p.a.endpoint.connect(p.now, b_addr).expect("room");
        // b is not there yet: a's INITIALs go nowhere.
        p.path
            .a_to_b
            .blackout_until(p.now + Duration::from_millis(2500));
        p.advance_to(p.now + Duration::from_millis(2500))
            .expect("runs");
        let t0 = p.now;
        p.b.endpoint.connect(t0, a_addr).expect("room");
        // Step by hand: a step polls events at the instant it processes, then moves the clock
        // on, so the instant before the step is when the events happened.
        let both_up = |p: &Pair| {
            p.a.events
                .iter()
                .any(|e| matches!(e, Event::Connected { .. }))
                && p.b
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Connected { .. }))
        };
        let deadline = t0 + Duration::from_secs(3);
        let connected_at = loop {
            let at = p.now;
            p.step_until(deadline).expect("no busy loop");
            if both_up(&p) {
                break at;
            }
            assert!(p.now < deadline, "seed {seed}: not connected within 3 s");
        };
        let took = connected_at - t0;
        // No RETRY here (each side chose to contact the other), but Noise XX has three
        // messages: the worst case is b's INITIAL, a's nudged INITIAL, b's ACCEPT, a's
        // HANDSHAKE: four one-way delays (three before the encrypted protocol).
        assert!(took <= 4 * ONE_WAY, "seed {seed}: took {took:?}");
    }
}

#[test]
fn undelivered_includes_messages_stuck_behind_a_gap() {
    // "one" is lost, "two" arrives and is acknowledged, but b can never deliver "two" before
    // "one". When a gives up, both must come back as undelivered, in order.
    let mut cfg = EndpointConfig::default();
    cfg.transport.redundancy.enabled = false;
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY), 25);
    let (ca, _) = p.connect().expect("connects");
    let t = p.now;
    p.path.a_to_b.blackout_until(t + Duration::from_millis(1));
    p.a.endpoint.send(ca, b"one").expect("open");
    p.advance_to(t + Duration::from_millis(2)).expect("runs");
    p.a.endpoint.send(ca, b"two").expect("open");
    p.advance_to(t + Duration::from_millis(3)).expect("runs");
    // From now on nothing more from a gets through: "one" is never repaired.
    p.path.a_to_b.blackout_until(t + Duration::from_secs(3600));
    p.advance_to(t + Duration::from_millis(200)).expect("runs");
    assert!(
        p.b.events
            .iter()
            .all(|e| !matches!(e, Event::Message { .. })),
        "nothing delivered"
    );
    let now = p.now;
    p.a.endpoint.abort(now, ca, 0, "giving up");
    let closed = p.wait_event(Side::A, Duration::from_secs(5), |e| {
        matches!(e, Event::Closed { .. })
    });
    let Event::Closed { undelivered, .. } = closed.expect("closed") else {
        unreachable!("wait_event returns a matching event")
    };
    assert_eq!(
        undelivered,
        vec![bytes::Bytes::from("one"), bytes::Bytes::from("two")]
    );
}

#[test]
fn graceful_close_is_bounded_when_the_peer_stops_reading() {
    let mut cfg = EndpointConfig::default();
    cfg.transport.idle_timeout = Duration::from_secs(10);
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY), 26);
    let (ca, _) = p.connect().expect("connects");
    p.b.reading = false;
    // More than the receive window: flow control stops part of it, and it is never read.
    let mut n = 0;
    while p.a.endpoint.send(ca, &[7u8; 60_000]).is_ok() && n < 40 {
        n += 1;
    }
    let t0 = p.now;
    p.a.endpoint.close(t0, ca, 0, "bye");
    let closed = p.wait_event(Side::A, Duration::from_secs(30), |e| {
        matches!(e, Event::Closed { .. })
    });
    let Event::Closed {
        reason,
        undelivered,
        ..
    } = closed.expect("the close completes although the peer never reads")
    else {
        unreachable!("wait_event returns a matching event")
    };
    assert_eq!(reason, CloseReason::Local);
    assert!(
        !undelivered.is_empty(),
        "what never got through is reported"
    );
    let took = p.now - t0;
    assert!(took <= Duration::from_secs(11), "{took:?}");
}

#[test]
fn short_idle_timeout_still_keeps_a_quiet_link_up() {
    let mut cfg = EndpointConfig::default();
    cfg.transport.idle_timeout = Duration::from_secs(6);
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY), 27);
    p.connect().expect("connects");
    let t = p.now;
    p.advance_to(t + Duration::from_secs(120)).expect("runs");
    assert!(
        p.a.events
            .iter()
            .chain(&p.b.events)
            .all(|e| !matches!(e, Event::Closed { .. })),
        "keepalives (at most half the idle timeout apart) kept it open"
    );
}
