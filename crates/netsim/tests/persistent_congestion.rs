//! Persistent congestion (RFC 9002 §7.6): every ack-eliciting packet over more than three probe
//! timeouts lost collapses the congestion window to its minimum; random loss never does.

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::EndpointConfig;

const MS: Duration = Duration::from_millis(1);
const INTERVAL: Duration = Duration::from_millis(20);

/// Both sides send a numbered 100-byte message every 20 ms for `secs`; `outage` blacks out both
/// directions for that span (from, length). Checks exactly-once, in-order delivery of all.
fn chat(
    link: LinkConfig,
    seed: u64,
    secs: u64,
    outage: Option<(Duration, Duration)>,
) -> (chirp_proto::ConnectionStats, chirp_proto::ConnectionStats) {
    let mut p = Pair::new(EndpointConfig::default(), link, seed);
    let (ca, cb) = p.connect().expect("handshake");
    let origin = p.now;
    let n = u32::try_from(secs * 1000 / 20).expect("small");
    let mut next = [0u32; 2];
    let check = |p: &mut Pair, next: &mut [u32; 2]| {
        for (side, node) in [&mut p.a, &mut p.b].into_iter().enumerate() {
            for data in node.take_messages() {
                let mut i = [0u8; 4];
                i.copy_from_slice(&data[..4]);
                assert_eq!(u32::from_be_bytes(i), next[side], "exactly once, in order");
                next[side] += 1;
            }
        }
    };
    for i in 0..n {
        let t = INTERVAL * i;
        p.advance_to(origin + t).expect("no busy loop");
        if let Some((from, len)) = outage
            && t == from
        {
            p.path.a_to_b.blackout_until(p.now + len);
            p.path.b_to_a.blackout_until(p.now + len);
        }
        check(&mut p, &mut next);
        let mut msg = vec![0u8; 100];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        p.a.endpoint.send(ca, &msg).expect("room");
        p.b.endpoint.send(cb, &msg).expect("room");
    }
    p.drive_until(Duration::from_secs(20), |p| {
        check(p, &mut next);
        next == [n, n]
    })
    .expect("every message delivered");
    (
        p.a.endpoint.stats(ca).expect("live"),
        p.b.endpoint.stats(cb).expect("live"),
    )
}

#[test]
fn an_outage_is_persistent_congestion() {
    let (sa, sb) = chat(
        LinkConfig::ideal(20 * MS),
        1,
        6,
        Some((Duration::from_secs(2), Duration::from_secs(2))),
    );
    for s in [sa, sb] {
        assert_eq!(s.persistent_congestion, 1, "{s:?}");
    }
}

#[test]
fn random_loss_is_not_persistent_congestion() {
    for seed in 1..=2 {
        let (sa, sb) = chat(LinkConfig::ideal(20 * MS).with_loss(0.1), seed, 60, None);
        for s in [sa, sb] {
            assert!(s.packets_lost > 100, "{s:?}");
            assert_eq!(s.persistent_congestion, 0, "{s:?}");
        }
    }
}
