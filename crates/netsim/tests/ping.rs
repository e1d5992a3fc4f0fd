//! `Endpoint::ping` (what `chirp ping` probes with) over the simulator: an acknowledged ping
//! reports the path's round trip with the peer's acknowledgement delay taken out, a ping
//! asked for during the handshake waits for DATA, a lost one is reported once and never sent
//! again, and a connection nobody pings reports nothing.

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair, Side};
use chirp_proto::{ConnectionHandle, EndpointConfig, Event, MAX_ACK_DELAY, PingError, PingOutcome};

/// The ping outcomes `side` has reported so far (taken out of its events).
fn outcomes(p: &mut Pair, side: Side) -> Vec<(u64, PingOutcome)> {
    p.node(side)
        .take_events(|e| matches!(e, Event::Ping { .. }))
        .into_iter()
        .filter_map(|e| match e {
            Event::Ping { id, outcome, .. } => Some((id, outcome)),
            _ => None,
        })
        .collect()
}

fn rtt_of(o: PingOutcome) -> Duration {
    match o {
        PingOutcome::Acked { rtt, .. } => rtt,
        other => panic!("not acknowledged: {other:?}"),
    }
}

fn close_to(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= Duration::from_micros(500)
}

/// Drives until `side` has `n` ping outcomes, at most `budget` of virtual time.
fn wait_outcomes(p: &mut Pair, side: Side, n: usize, budget: Duration) -> Vec<(u64, PingOutcome)> {
    let mut got = Vec::new();
    p.drive_until(budget, |p| {
        got.extend(outcomes(p, side));
        got.len() >= n
    })
    .unwrap_or_else(|e| panic!("{e}: {got:?}"));
    got
}

#[test]
fn a_ping_measures_the_round_trip() {
    let delay = Duration::from_millis(20);
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(delay), 1);
    let (ca, _) = p.connect().expect("connects");
    // Quiet for a while: the peer acknowledges a lone PING at once (PROTOCOL.md §6.1).
    p.advance_to(p.now + Duration::from_secs(2)).expect("runs");
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            let id = p.a.endpoint.ping(ca).expect("ping");
            p.advance_to(p.now + Duration::from_millis(100))
                .expect("runs");
            id
        })
        .collect();
    assert_eq!(ids, [0, 1, 2]);
    let got = wait_outcomes(&mut p, Side::A, 3, Duration::from_secs(1));
    assert_eq!(got.iter().map(|o| o.0).collect::<Vec<_>>(), ids);
    for (id, o) in got {
        let PingOutcome::Acked { rtt, ack_delay } = o else {
            panic!("ping {id} lost")
        };
        assert!(close_to(rtt, delay * 2), "ping {id}: {rtt:?}");
        assert!(ack_delay < Duration::from_millis(1), "{ack_delay:?}");
    }
    // Nobody pinged from B: it reports nothing.
    assert!(outcomes(&mut p, Side::B).is_empty());
}

#[test]
fn the_peers_ack_delay_is_taken_out() {
    let delay = Duration::from_millis(20);
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(delay), 2);
    let (ca, _) = p.connect().expect("connects");
    // Stream data just crossed: B holds its next ACK for a lone PING up to MAX_ACK_DELAY.
    p.a.endpoint.send(ca, b"hello").expect("send");
    p.advance_to(p.now + Duration::from_millis(200))
        .expect("runs");
    p.a.endpoint.ping(ca).expect("ping");
    let got = wait_outcomes(&mut p, Side::A, 1, Duration::from_secs(1));
    let PingOutcome::Acked { rtt, ack_delay } = got[0].1 else {
        panic!("lost: {got:?}")
    };
    assert!(close_to(ack_delay, MAX_ACK_DELAY), "{ack_delay:?}");
    assert!(close_to(rtt, delay * 2), "{rtt:?}");
}

#[test]
fn a_ping_asked_for_during_the_handshake_waits_for_data() {
    let delay = Duration::from_millis(10);
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(delay), 3);
    let ca =
        p.a.endpoint
            .connect(p.now, p.b.addr)
            .expect("room for a connection");
    assert_eq!(p.a.endpoint.ping(ca), Ok(0));
    let got = wait_outcomes(&mut p, Side::A, 1, Duration::from_secs(2));
    // Acknowledged only once B had the keys: at least the handshake's three round trips.
    assert!(matches!(got[0], (0, PingOutcome::Acked { .. })), "{got:?}");
    assert!(p.elapsed() >= delay * 6, "{:?}", p.elapsed());
    assert!(close_to(rtt_of(got[0].1), delay * 2), "{got:?}");
}

#[test]
fn a_lost_ping_is_reported_once_and_not_sent_again() {
    let delay = Duration::from_millis(10);
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(delay), 4);
    let (ca, _) = p.connect().expect("connects");
    p.advance_to(p.now + Duration::from_secs(2)).expect("runs");
    let sent_before = p.a.endpoint.stats(ca).expect("stats").packets_sent;
    // The ping's packet goes into a 1 ms blackout; another ping 50 ms later gets through,
    // and its acknowledgement shows the first one lost.
    p.path
        .a_to_b
        .blackout_until(p.now + Duration::from_millis(1));
    let lost = p.a.endpoint.ping(ca).expect("ping");
    p.advance_to(p.now + Duration::from_millis(50))
        .expect("runs");
    let found = p.a.endpoint.ping(ca).expect("ping");
    let got = wait_outcomes(&mut p, Side::A, 2, Duration::from_secs(5));
    assert!(got.contains(&(lost, PingOutcome::Lost)), "{got:?}");
    assert!(
        got.iter()
            .any(|&(id, o)| id == found && matches!(o, PingOutcome::Acked { .. })),
        "{got:?}"
    );
    // Nothing more about either, however long it runs; and the transport sent no more than
    // the two pings and its own acknowledgements and probes meanwhile.
    p.advance_to(p.now + Duration::from_secs(5)).expect("runs");
    assert!(outcomes(&mut p, Side::A).is_empty());
    let stats = p.a.endpoint.stats(ca).expect("stats");
    assert_eq!(stats.packets_lost, 1, "{stats:?}");
    assert!(stats.packets_sent - sent_before < 10, "{stats:?}");
}

#[test]
fn pings_on_a_lossy_path_each_get_one_outcome() {
    let link = LinkConfig::ideal(Duration::from_millis(5)).with_loss(0.3);
    let mut p = Pair::new(EndpointConfig::default(), link, 5);
    let (ca, _) = p.connect().expect("connects");
    let n = 200;
    for _ in 0..n {
        p.a.endpoint.ping(ca).expect("ping");
        p.advance_to(p.now + Duration::from_millis(50))
            .expect("runs");
    }
    let got = wait_outcomes(&mut p, Side::A, n, Duration::from_secs(10));
    let mut ids: Vec<u64> = got.iter().map(|o| o.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..n as u64).collect::<Vec<_>>(), "one outcome each");
    let lost = got.iter().filter(|o| o.1 == PingOutcome::Lost).count();
    let covered = got.iter().filter(|o| o.1 == PingOutcome::Covered).count();
    // The ping lost (30 %), or its acknowledgement (30 % of the rest, 21 %): then a later
    // packet's acknowledgement covers it, unless that is lost too and loss detection comes
    // first.
    assert!((30..=90).contains(&lost), "{lost} of {n} lost");
    assert!((15..=70).contains(&covered), "{covered} of {n} covered");
    for (_, o) in got {
        if let PingOutcome::Acked { rtt, .. } = o {
            assert!(close_to(rtt, Duration::from_millis(10)), "{rtt:?}");
        }
    }
}

#[test]
fn ping_refuses_unknown_and_closed_connections() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(5)),
        6,
    );
    let (ca, _) = p.connect().expect("connects");
    assert_eq!(
        p.a.endpoint.ping(ConnectionHandle(99)),
        Err(PingError::UnknownConnection)
    );
    p.a.endpoint.close(p.now, ca, 0, "bye");
    assert_eq!(p.a.endpoint.ping(ca), Err(PingError::Closed));
    // Without transmitting, at most 64 wait.
    let mut q = Pair::new(
        EndpointConfig::default(),
        LinkConfig::ideal(Duration::from_millis(5)),
        7,
    );
    let (cq, _) = q.connect().expect("connects");
    for _ in 0..64 {
        q.a.endpoint.ping(cq).expect("room");
    }
    assert_eq!(q.a.endpoint.ping(cq), Err(PingError::TooMany));
}
