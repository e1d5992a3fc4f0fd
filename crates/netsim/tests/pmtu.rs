//! Path MTU discovery (PROTOCOL.md §6.9) in virtual time: the datagram size rises where the
//! path carries it, stays at the base where it does not, falls back when larger datagrams stop
//! arriving mid-transfer, and a lost probe never costs the congestion window.

use std::time::Duration;

use bytes::Bytes;
use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::pmtud::{BASE, DEFAULT_CEILING, MAX_PROBES};
use chirp_proto::{
    ConnectionHandle, ConnectionStats, EndpointConfig, Event, SendError, TransportConfig,
    WriteError,
};

/// One way of the path.
const ONE_WAY: Duration = Duration::from_millis(20);
/// Bytes per bulk message.
const CHUNK: usize = 60_000;

/// Chunk `i` of a transfer: bytes that say where they belong, so that a chunk damaged,
/// repeated or swapped never compares equal.
fn chunk(i: u64) -> Vec<u8> {
    (0..CHUNK)
        .map(|j| (i.wrapping_mul(31) ^ (j as u64).wrapping_mul(7)) as u8)
        .collect()
}

/// A transfer of `chunks` chunks from a to b on the bulk channel, checked byte for byte.
/// `midway(pair, stats, datagram)` is called once per step with a's statistics and datagram
/// size (to change the path). Returns a's statistics at the end.
fn transfer(
    p: &mut Pair,
    ca: ConnectionHandle,
    chunks: u64,
    mut midway: impl FnMut(&mut Pair, &ConnectionStats, usize),
) -> ConnectionStats {
    let deadline = p.now + Duration::from_secs(300);
    let (mut queued, mut received) = (0u64, 0u64);
    let mut pending: Vec<u8> = Vec::new();
    while received < chunks {
        while queued < chunks {
            match p.a.endpoint.send_bulk(ca, Bytes::from(chunk(queued))) {
                Ok(()) => queued += 1,
                Err(SendError::Write(WriteError::Blocked)) => break,
                Err(e) => panic!("send_bulk: {e}"),
            }
        }
        assert!(p.now < deadline, "stalled at chunk {received} of {chunks}");
        if !p.step_until(deadline).expect("no busy loop") {
            panic!("nothing left to do at chunk {received} of {chunks}");
        }
        for e in p.b.events.drain(..) {
            match e {
                Event::BulkMessage { data, .. } => {
                    pending.extend_from_slice(&data);
                    while pending.len() >= CHUNK {
                        assert!(
                            pending[..CHUNK] == chunk(received)[..],
                            "chunk {received} damaged, reordered or repeated"
                        );
                        pending.drain(..CHUNK);
                        received += 1;
                    }
                }
                Event::Closed { reason, .. } => panic!("b closed: {reason:?}"),
                _ => {}
            }
        }
        let stats = p.a.endpoint.stats(ca).expect("open");
        let datagram = p.a.endpoint.max_datagram(ca).expect("open");
        midway(p, &stats, datagram);
    }
    assert!(pending.is_empty(), "bytes past the end");
    p.a.endpoint.stats(ca).expect("open")
}

/// Both sides with discovery up to [`DEFAULT_CEILING`] (off by default).
fn pair(link: LinkConfig, seed: u64) -> (Pair, ConnectionHandle) {
    let config = EndpointConfig {
        transport: TransportConfig {
            max_datagram_size: DEFAULT_CEILING,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(config, link, seed);
    let (ca, _cb) = p.connect().expect("connects");
    (p, ca)
}

#[test]
fn discovery_is_off_by_default() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 6);
    let (ca, _cb) = p.connect().expect("connects");
    p.capture = Some(Vec::new());
    transfer(&mut p, ca, 20, |_, _, _| {});
    assert_eq!(p.a.endpoint.max_datagram(ca), Some(BASE));
    let sent = p.capture.take().expect("captured");
    assert!(sent.len() > 1_000, "{} datagrams", sent.len());
    assert_eq!(
        sent.iter().map(|(_, _, d)| d.len()).max(),
        Some(BASE),
        "full datagrams, none larger"
    );
}

#[test]
fn the_datagram_size_rises_to_the_ceiling_where_the_path_carries_it() {
    let (mut p, ca) = pair(LinkConfig::ideal(ONE_WAY), 1);
    let s = transfer(&mut p, ca, 100, |_, _, _| {});
    assert_eq!(p.a.endpoint.max_datagram(ca), Some(DEFAULT_CEILING));
    assert_eq!(p.path.a_to_b.stats().oversize, 0);
    assert_eq!(s.packets_lost, 0, "the one probe, of the ceiling, arrived");
    // The data went in datagrams of the ceiling: 6 MB at 1,200 bytes would take more than
    // 5,000 datagrams.
    let sent = p.path.a_to_b.stats();
    assert!(
        sent.sent < 6_000_000 / 1_400 + 200,
        "{} datagrams for 6 MB",
        sent.sent
    );
}

#[test]
fn the_datagram_size_stays_at_the_base_on_a_path_that_drops_larger_ones() {
    let link = LinkConfig::ideal(ONE_WAY).with_mtu(BASE);
    let (mut p, ca) = pair(link, 2);
    transfer(&mut p, ca, 100, |_, _, _| {});
    // The search ends within a few seconds of the handshake, and stays ended.
    p.advance_to(p.now + Duration::from_secs(10))
        .expect("no busy loop");
    let s = p.a.endpoint.stats(ca).expect("open");
    let probes = p.path.a_to_b.stats().oversize;
    p.advance_to(p.now + Duration::from_secs(60))
        .expect("no busy loop");
    assert_eq!(
        p.path.a_to_b.stats().oversize,
        probes,
        "no probe until the raise interval"
    );
    assert_eq!(p.a.endpoint.max_datagram(ca), Some(BASE));
    // Only probes were too large: 3 of the ceiling, then 3 of each step of the bisection
    // (1326, 1263, 1231, 1215).
    assert_eq!(probes, 5 * u64::from(MAX_PROBES));
    // Lost probes are no congestion signal and no lost data.
    assert_eq!(s.packets_lost, 0);
    assert_eq!(s.congestion_periods, 0);
    assert_eq!(s.random_loss_periods, 0);
}

#[test]
fn lost_probes_do_not_cut_the_congestion_window() {
    // A path of 1,300 bytes: the ceiling's probes are lost, then the search bisects.
    let link = LinkConfig::ideal(ONE_WAY).with_mtu(1_300);
    let (mut p, ca) = pair(link, 3);
    let s = transfer(&mut p, ca, 100, |_, _, _| {});
    let size = p.a.endpoint.max_datagram(ca).expect("open");
    assert!((1_280..=1_300).contains(&size), "settled at {size}");
    assert!(p.path.a_to_b.stats().oversize >= u64::from(MAX_PROBES));
    assert_eq!(s.packets_lost, 0, "nothing but probes was lost");
    assert_eq!(
        s.congestion_periods, 0,
        "no recovery period: the window was never cut"
    );
    assert_eq!(s.random_loss_periods, 0);
    assert_eq!(s.persistent_congestion, 0);
}

#[test]
fn a_black_hole_mid_transfer_falls_back_to_the_base_and_the_transfer_completes() {
    let (mut p, ca) = pair(LinkConfig::ideal(ONE_WAY), 4);
    let mut hole_at = None;
    let s = transfer(&mut p, ca, 300, |p, s, datagram| {
        // Once the size is up and data flows at it, the path stops carrying more than the
        // base (a route change onto a tunnel), in the direction of the data.
        if hole_at.is_none() && datagram == DEFAULT_CEILING && s.bytes_sent > 3_000_000 {
            hole_at = Some(p.now);
            let config = p.path.a_to_b.config().clone().with_mtu(BASE);
            p.path.a_to_b.set_config(config);
        }
    });
    let hole_at = hole_at.expect("the size rose before the hole");
    assert_eq!(
        p.a.endpoint.max_datagram(ca),
        Some(BASE),
        "fell back, and searches again only after a minute"
    );
    assert!(
        p.path.a_to_b.stats().oversize > 0,
        "the hole dropped datagrams"
    );
    assert!(
        p.now - hole_at < Duration::from_secs(30),
        "the rest of the transfer took {:?}",
        p.now - hole_at
    );
    assert_eq!(
        s.persistent_congestion, 0,
        "the fallback came before a collapse"
    );
}

#[test]
fn a_black_hole_under_chat_traffic_is_found_by_the_losses_of_large_packets() {
    // Chat: a small line and a 2,000-byte paste every 50 ms. After the hole the small
    // packets keep arriving (no probe timeout fires) while every large one is lost.
    let (mut p, ca) = pair(LinkConfig::ideal(ONE_WAY), 5);
    p.advance_to(p.now + Duration::from_secs(1))
        .expect("no busy loop");
    assert_eq!(p.a.endpoint.max_datagram(ca), Some(DEFAULT_CEILING));
    let config = p.path.a_to_b.config().clone().with_mtu(BASE);
    p.path.a_to_b.set_config(config);
    let hole_at = p.now;
    let message = |i: usize| -> Vec<u8> {
        let len = if i % 2 == 0 { 60 } else { 2_000 };
        (0..len).map(|j| (i * 7 + j) as u8).collect()
    };
    let count = 80;
    let mut fell_back = None;
    for i in 0..count {
        p.a.endpoint.send(ca, &message(i)).expect("room");
        p.advance_to(p.now + Duration::from_millis(25))
            .expect("no busy loop");
        if fell_back.is_none() && p.a.endpoint.max_datagram(ca) == Some(BASE) {
            fell_back = Some(p.now - hole_at);
        }
    }
    p.advance_to(p.now + Duration::from_secs(5))
        .expect("no busy loop");
    let fell_back = fell_back.expect("fell back to the base");
    assert!(fell_back < Duration::from_secs(1), "after {fell_back:?}");
    assert_eq!(
        p.a.endpoint.stats(ca).expect("open").ptos,
        0,
        "found by losses"
    );
    let got = p.b.take_messages();
    assert_eq!(got.len(), count, "every message arrived");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m[..], message(i)[..], "message {i}");
    }
}
