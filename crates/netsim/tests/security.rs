//! Packet protection in the simulator: what an observer sees, what tampering and replay
//! achieve, key updates, and a client whose address changes mid-chat.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chirp_netsim::{LinkConfig, Pair, Side};
use chirp_proto::{ConnectionHandle, EndpointConfig, Event, TransportConfig};

const ONE_WAY: Duration = Duration::from_millis(20);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn message_text_never_appears_on_the_wire() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 1);
    p.capture = Some(Vec::new());
    let (ca, cb) = p.connect().expect("connects");
    let secret = b"the eagle lands at midnight";
    p.a.endpoint.send(ca, secret).expect("room");
    p.b.endpoint
        .send(cb, b"reply: the eagle lands at midnight")
        .expect("room");
    p.drive_until(Duration::from_secs(2), |p| {
        p.a.events
            .iter()
            .any(|e| matches!(e, Event::Message { .. }))
            && p.b
                .events
                .iter()
                .any(|e| matches!(e, Event::Message { .. }))
    })
    .expect("both delivered");
    let wire = p.capture.take().expect("capturing");
    assert!(
        wire.len() >= 6,
        "handshake and data were captured: {}",
        wire.len()
    );
    for (side, _, d) in &wire {
        assert!(!contains(d, b"eagle"), "{side:?} sent plaintext: {d:02x?}");
    }
    // The same check would catch plaintext: it finds the text when it is there.
    assert!(contains(b"xx the eagle lands", b"eagle"));
}

#[test]
fn tampered_datagrams_are_dropped_and_the_message_still_arrives() {
    // Every datagram has a 40 % chance of 1-3 flipped bits, in both directions.
    let link = LinkConfig::ideal(ONE_WAY).with_corrupt(0.4);
    let mut p = Pair::new(EndpointConfig::default(), link, 7);
    let (ca, cb) = p.connect().expect("connects under corruption");
    let sent: Vec<Bytes> = (0..200)
        .map(|i| Bytes::from(format!("message {i} {}", "x".repeat(i * 7))))
        .collect();
    for m in &sent {
        p.a.endpoint.send(ca, m).expect("room");
    }
    let mut got = Vec::new();
    p.drive_until(Duration::from_secs(60), |p| {
        got.extend(p.b.take_messages());
        got.len() >= sent.len()
    })
    .expect("everything delivered");
    assert_eq!(got, sent, "byte-exact, in order, exactly once");
    let s = p.b.endpoint.stats(cb).expect("open");
    assert!(
        s.corrupt_dropped > 0,
        "tampered packets were rejected: {s:?}"
    );
    let a = p.a.endpoint.stats(ca).expect("open");
    assert!(
        a.retransmissions > 0,
        "and repaired by retransmission: {a:?}"
    );
}

#[test]
fn replayed_datagrams_are_rejected() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 3);
    p.capture = Some(Vec::new());
    let (ca, cb) = p.connect().expect("connects");
    p.a.endpoint.send(ca, b"pay bob 10 euros").expect("room");
    p.drive_until(Duration::from_secs(1), |p| {
        p.b.events
            .iter()
            .any(|e| matches!(e, Event::Message { .. }))
    })
    .expect("delivered once");
    assert_eq!(p.b.take_messages().len(), 1);
    let wire = p.capture.take().expect("capturing");
    let before = p.b.endpoint.stats(cb).expect("open");
    // An attacker replays everything a sent, twice, from a's address.
    let from: SocketAddr = p.a.addr;
    let mut replayed = 0;
    for _ in 0..2 {
        for (side, _, d) in &wire {
            if *side == Side::A {
                p.b.endpoint.handle_datagram(p.now, from, d);
                replayed += 1;
            }
        }
    }
    p.drive_until(Duration::from_millis(500), |_| false).ok();
    assert!(
        p.b.take_messages().is_empty(),
        "a replay delivers nothing twice"
    );
    let after = p.b.endpoint.stats(cb).expect("still open");
    let rejected = (after.duplicates_dropped - before.duplicates_dropped)
        + (after.stale_dropped - before.stale_dropped);
    assert_eq!(
        rejected, replayed,
        "every replayed datagram was rejected: {before:?} → {after:?}"
    );
    assert_eq!(after.messages_received, before.messages_received);
}

#[test]
fn keys_update_under_loss_and_reordering_without_losing_anything() {
    let config = EndpointConfig {
        transport: TransportConfig {
            // Small, so that a short test crosses many key phases.
            key_update_packets: 40,
            key_update_interval: Duration::from_secs(5),
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    };
    let link = LinkConfig::ideal(ONE_WAY)
        .with_loss(0.1)
        .with_reorder(0.1, Duration::from_millis(15));
    let mut p = Pair::new(config, link, 11);
    let (ca, cb) = p.connect().expect("connects");
    let sent: Vec<Bytes> = (0..2000)
        .map(|i| Bytes::from(format!("{i:05} {}", "y".repeat(i % 300))))
        .collect();
    let mut next = 0;
    let mut got = Vec::new();
    p.drive_until(Duration::from_secs(300), |p| {
        while next < sent.len() && p.a.endpoint.send(ca, &sent[next]).is_ok() {
            next += 1;
        }
        got.extend(p.b.take_messages());
        got.len() >= sent.len()
    })
    .expect("everything delivered");
    assert_eq!(got, sent);
    let a = p.a.endpoint.stats(ca).expect("open");
    let b = p.b.endpoint.stats(cb).expect("open");
    // A sender moves on only once the peer has acknowledged its current key, so updates come
    // at most every `key_update_packets` plus a round trip.
    assert!(a.key_updates >= 5, "{a:?}");
    assert_eq!(
        b.key_updates_received, a.key_updates,
        "the receiver followed every update"
    );
}

#[test]
fn client_port_change_mid_chat_loses_nothing() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 5);
    let (ca, cb) = p.connect().expect("connects");
    let to_b: Vec<Bytes> = (0..300).map(|i| Bytes::from(format!("a→b {i}"))).collect();
    let to_a: Vec<Bytes> = (0..300).map(|i| Bytes::from(format!("b→a {i}"))).collect();
    let (mut got_b, mut got_a) = (Vec::new(), Vec::new());
    let old = p.a.addr;
    let new: SocketAddr = ([10, 0, 0, 1], 4999).into();
    for i in 0..300 {
        p.a.endpoint.send(ca, &to_b[i]).expect("room");
        p.b.endpoint.send(cb, &to_a[i]).expect("room");
        if i == 150 {
            // NAT rebinding: from now on a's datagrams come from another port, and whatever
            // is sent to the old one is lost.
            p.a.addr = new;
        }
        p.advance_to(p.now + Duration::from_millis(5))
            .expect("runs");
        got_b.extend(p.b.take_messages());
        got_a.extend(p.a.take_messages());
    }
    p.drive_until(Duration::from_secs(30), |p| {
        got_b.extend(p.b.take_messages());
        got_a.extend(p.a.take_messages());
        got_b.len() >= to_b.len() && got_a.len() >= to_a.len()
    })
    .expect("everything delivered after the rebinding");
    assert_eq!(got_b, to_b);
    assert_eq!(got_a, to_a);
    assert_eq!(
        p.b.endpoint.remote(cb),
        Some(new),
        "b follows a to its new port"
    );
    let s = p.b.endpoint.stats(cb).expect("open");
    assert_eq!(s.migrations, 1, "{s:?}");
    assert!(
        p.misaddressed > 0,
        "packets did go to the old port ({old}) and were lost"
    );
    let _: Option<ConnectionHandle> = None;
}

#[test]
fn a_lost_path_response_does_not_strand_an_idle_peer_on_its_new_address() {
    // Crash 5 of the `pair` fuzzer. a moves to a new port and sends one message; b follows and
    // challenges the new address. a's PATH_RESPONSE (never retransmitted) is lost, while a's
    // next packet acknowledges the challenge's packet, so the challenge is not "lost" either.
    // b may send the unvalidated address only what it received from there, and a is idle:
    // b must spend its small budget on a new challenge, not wait for a full packet's worth.
    // (No start-of-connection copies: the scenario counts a's packets one by one.)
    let mut config = EndpointConfig::default();
    config.transport.redundancy.startup_outcomes = 0;
    let mut p = Pair::new(config, LinkConfig::ideal(ONE_WAY), 21);
    let (ca, cb) = p.connect().expect("connects");
    p.a.endpoint.send(ca, b"hello").expect("room");
    p.wait_event(Side::B, Duration::from_secs(2), |e| {
        matches!(e, Event::Message { .. })
    })
    .expect("delivered");
    p.advance_to(p.now + Duration::from_secs(1)).expect("runs");

    let new: SocketAddr = ([10, 0, 0, 1], 4999).into();
    p.a.addr = new;
    p.a.endpoint.send(ca, b"moved").expect("room");
    p.capture = Some(Vec::new());
    // Run until b sends its first datagram to the new address: the challenge.
    p.drive_until(Duration::from_secs(2), |p| {
        p.capture
            .as_ref()
            .is_some_and(|c| c.iter().any(|(side, to, _)| *side == Side::B && *to == new))
    })
    .expect("b challenges the new address");
    // The challenge reaches a one way later and a answers at once: lose that answer.
    p.path
        .a_to_b
        .blackout_until(p.now + ONE_WAY + Duration::from_millis(1));
    p.advance_to(p.now + ONE_WAY + Duration::from_millis(2))
        .expect("runs");
    assert_eq!(
        p.path.a_to_b.stats().blackout_drops,
        1,
        "a's PATH_RESPONSE was lost"
    );

    // More than a's few small packets allow b to send there before a answers again.
    let back: Vec<Bytes> = (0..8)
        .map(|i| Bytes::from(format!("back {i} {}", "x".repeat(150))))
        .collect();
    for m in &back {
        p.b.endpoint.send(cb, m).expect("room");
    }
    let sent_at = p.now;
    let mut got = Vec::new();
    p.drive_until(Duration::from_secs(5), |p| {
        got.extend(p.a.take_messages());
        got.len() >= back.len()
    })
    .expect("b's messages reach a on its new address");
    assert_eq!(got, back);
    let s = p.b.endpoint.stats(cb).expect("open");
    assert!(
        p.now - sent_at <= Duration::from_secs(1),
        "delivered after {:?}: b waited for a keepalive's budget ({s:?})",
        p.now - sent_at
    );
    assert_eq!(p.b.endpoint.remote(cb), Some(new), "b stays with a");
    assert_eq!(p.misaddressed, 0, "b never fell back to a's old port");
}

#[test]
fn a_raced_packet_from_another_address_does_not_hijack_the_connection() {
    // An on-path attacker copies a's packets and races them to b from its own address. The
    // fresh ones authenticate, so b starts validating the attacker's address; but it sends
    // there no more than it received from there, and a's next packet brings it back.
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 9);
    let (ca, cb) = p.connect().expect("connects");
    p.capture = Some(Vec::new());
    p.a.endpoint.send(ca, b"hello").expect("room");
    // Capture a's packets before they reach b, and race copies from the attacker.
    p.advance_to(p.now + Duration::from_millis(1))
        .expect("runs");
    let raced: Vec<Vec<u8>> = p
        .capture
        .take()
        .expect("capturing")
        .into_iter()
        .filter(|(side, _, _)| *side == Side::A)
        .map(|(_, _, d)| d)
        .collect();
    assert!(!raced.is_empty());
    let attacker: SocketAddr = ([192, 0, 2, 66], 666).into();
    let mut received_from_attacker = 0;
    for d in &raced {
        p.b.endpoint.handle_datagram(p.now, attacker, d);
        received_from_attacker += d.len();
    }
    p.capture = Some(Vec::new());
    for i in 0..20 {
        p.a.endpoint
            .send(ca, format!("after {i}").as_bytes())
            .expect("room");
        p.advance_to(p.now + Duration::from_millis(10))
            .expect("runs");
    }
    p.drive_until(Duration::from_secs(5), |p| {
        p.b.events
            .iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count()
            >= 21
    })
    .expect("the chat goes on");
    assert_eq!(
        p.b.endpoint.remote(cb),
        Some(p.a.addr),
        "b is back with the real a"
    );
    let sent_to_attacker: usize = p
        .capture
        .take()
        .expect("capturing")
        .iter()
        .filter(|(_, to, _)| *to == attacker)
        .map(|(_, _, d)| d.len())
        .sum();
    assert!(
        sent_to_attacker <= received_from_attacker,
        "anti-amplification: sent {sent_to_attacker} B to the unvalidated address, received \
         {received_from_attacker} B from it"
    );
}

#[test]
fn a_restarted_peer_resets_the_old_connection_at_once_and_forged_resets_do_nothing() {
    use chirp_proto::CloseReason;
    use chirp_proto::handshake::StaticSecret;
    let b_config = EndpointConfig {
        identity: Some(StaticSecret([42; 32])),
        ..EndpointConfig::default()
    };
    let path = chirp_netsim::Path::symmetric(LinkConfig::ideal(ONE_WAY), 13);
    // One message, one packet, one RESET: no start-of-connection copy of it.
    let mut a_config = EndpointConfig::default();
    a_config.transport.redundancy.startup_outcomes = 0;
    let mut p = Pair::with_path(a_config, b_config.clone(), path, 13);
    let (ca, _) = p.connect().expect("connects");
    p.advance_to(p.now + Duration::from_millis(200))
        .expect("runs");

    // Forged RESETs: a wrong token from b's address, and junk of the right size.
    let b_addr = p.b.addr;
    let mut forged = vec![chirp_proto::wire::VERSION, 0x07];
    forged.extend_from_slice(&[0xAB; 16]);
    p.a.endpoint.handle_datagram(p.now, b_addr, &forged);
    assert!(
        p.a.endpoint.stats(ca).is_some(),
        "a forged RESET ends nothing"
    );
    assert_eq!(p.a.endpoint.endpoint_stats().resets_received, 0);

    // b restarts: same key, no memory of the connection.
    p.b.endpoint = chirp_proto::Endpoint::new(b_config, 99);
    let t0 = p.now;
    p.a.endpoint.send(ca, b"are you there?").expect("room");
    let closed = p
        .wait_event(Side::A, Duration::from_secs(5), |e| {
            matches!(e, Event::Closed { .. })
        })
        .expect("a learns of the restart");
    let Event::Closed {
        reason,
        undelivered,
        ..
    } = closed
    else {
        unreachable!("wait_event returns a matching event")
    };
    assert_eq!(reason, CloseReason::Reset);
    assert_eq!(undelivered, vec![Bytes::from_static(b"are you there?")]);
    assert!(
        p.now - t0 <= 3 * ONE_WAY,
        "one round trip, not the idle timeout: {:?}",
        p.now - t0
    );
    assert_eq!(p.b.endpoint.endpoint_stats().resets_sent, 1);
    // And a new connection to the restarted b works.
    let ca2 = p.a.endpoint.connect(p.now, b_addr).expect("room");
    p.wait_event(
        Side::A,
        Duration::from_secs(5),
        |e| matches!(e, Event::Connected { conn, .. } if *conn == ca2),
    )
    .expect("reconnects");
}
