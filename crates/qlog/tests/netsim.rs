//! Traces of simulated connections (virtual time, a lossy link), serialized as qlog and checked
//! against what the simulation really did: every packet that went out is in the sender's trace
//! as `packet_sent`, a packet the network dropped shows up as `packet_lost` with its number,
//! and nothing is declared lost that the network delivered; the metrics carry the congestion
//! window and the RTT of the link; every record passes the qlog 0.3 schema check.

use std::collections::BTreeSet;
use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair, Side};
use chirp_proto::trace::{TraceEvent, TraceRecord};
use chirp_proto::wire::Packet;
use chirp_proto::{ConnectionHandle, EndpointConfig, Event};
use chirp_qlog::validate::{self, CheckedTrace};
use chirp_qlog::{QlogDir, QlogWriter, TraceHeader};
use serde_json::Value;

const ONE_WAY: Duration = Duration::from_millis(20);
const MESSAGES: usize = 300;

/// A traced transfer from A to B over a link that loses `loss` of the datagrams each way,
/// then a graceful close. The pair records what was sent and what was delivered.
fn traced_transfer(loss: f64, seed: u64) -> (Pair, ConnectionHandle, ConnectionHandle) {
    let mut cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    // Key updates every 64 packets, so that the trace shows some.
    cfg.transport.key_update_packets = 64;
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY).with_loss(loss), seed);
    p.capture = Some(Vec::new());
    p.delivered = Some(Vec::new());
    let (ca, cb) = p.connect().expect("handshake");
    let mut got = 0;
    for i in 0..MESSAGES {
        // Small chat lines and a few larger messages that take several packets.
        let len = if i % 50 == 7 { 4000 } else { 60 + i % 90 };
        p.a.endpoint.send(ca, &vec![b'x'; len]).expect("room");
        p.advance_to(p.now + Duration::from_millis(10))
            .expect("no busy loop");
        got += p.b.take_messages().len();
    }
    p.drive_until(Duration::from_secs(120), |p| {
        got += p.b.take_messages().len();
        got == MESSAGES
    })
    .expect("every message delivered");
    p.a.endpoint.close(p.now, ca, 0x100, "done");
    p.drive_until(Duration::from_secs(60), |p| {
        p.a.events
            .iter()
            .any(|e| matches!(e, Event::Closed { conn, .. } if *conn == ca))
    })
    .expect("closed");
    p.drive_to_idle(Duration::from_secs(60)).expect("idle");
    assert_eq!(p.a.endpoint.endpoint_stats().trace_dropped, 0);
    (p, ca, cb)
}

/// The records of `side`'s endpoint, in order.
fn records(p: &mut Pair, side: Side) -> Vec<TraceRecord> {
    let node = p.node(side);
    std::iter::from_fn(|| node.endpoint.poll_trace()).collect()
}

/// `records` of one connection, serialized the way a driver does it, then checked.
fn serialize(records: &[TraceRecord], conn: ConnectionHandle) -> (Vec<u8>, CheckedTrace) {
    let mut mine = records.iter().filter(|r| r.conn == conn);
    let started = mine.next().expect("a first record");
    let header = TraceHeader::from_started(started, None, None).expect("Started comes first");
    let mut w = QlogWriter::new(Vec::new(), header).expect("header");
    w.write(started.at, &started.event).expect("write");
    let mut removed = false;
    for r in mine {
        assert!(!removed, "nothing after Removed");
        removed = matches!(r.event, TraceEvent::Removed);
        w.write(r.at, &r.event).expect("write");
    }
    assert!(removed, "the trace ends with Removed");
    let bytes = w.into_inner().expect("flush");
    let checked = validate::check(&bytes).unwrap_or_else(|e| panic!("invalid qlog: {e}"));
    (bytes, checked)
}

/// The packet numbers of the datagrams `side` sent (captured) and of those that arrived.
fn wire_numbers(p: &Pair, side: Side) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let pn = |d: &[u8]| {
        Packet::new_checked(d)
            .expect("our own packets parse")
            .header
            .number
    };
    let sent = p.capture.as_ref().expect("capture on");
    let delivered = p.delivered.as_ref().expect("delivered on");
    (
        sent.iter()
            .filter(|c| c.0 == side)
            .map(|c| pn(&c.2))
            .collect(),
        delivered
            .iter()
            .filter(|d| d.0 == side)
            .map(|d| pn(&d.1))
            .collect(),
    )
}

fn numbers<'a>(events: impl Iterator<Item = &'a Value>) -> BTreeSet<u64> {
    events
        .map(|e| {
            e["data"]["header"]["packet_number"]
                .as_u64()
                .expect("packet_number")
        })
        .collect()
}

#[test]
fn losses_in_the_simulation_are_packet_lost_in_the_qlog() {
    let (mut p, ca, cb) = traced_transfer(0.1, 7);
    let (sent, delivered) = wire_numbers(&p, Side::A);
    let dropped: BTreeSet<u64> = sent.difference(&delivered).copied().collect();
    assert!(
        dropped.len() > 10,
        "the link lost packets: {}",
        dropped.len()
    );

    let ra = records(&mut p, Side::A);
    let (bytes, trace) = serialize(&ra, ca);

    // Every datagram A sent is a packet_sent in its trace, and nothing else is.
    assert_eq!(numbers(trace.named("transport:packet_sent")), sent);
    // Losses: packets the network dropped, matched by number; none that it delivered.
    let lost = numbers(trace.named("recovery:packet_lost"));
    assert!(!lost.is_empty(), "losses were declared");
    let delivered_but_lost: Vec<_> = lost.difference(&dropped).collect();
    assert!(
        delivered_but_lost.is_empty(),
        "declared lost though delivered: {delivered_but_lost:?}"
    );
    // A lost packet has the type it was sent with.
    for l in trace.named("recovery:packet_lost") {
        let number = &l["data"]["header"]["packet_number"];
        let sent = trace
            .named("transport:packet_sent")
            .find(|e| e["data"]["header"]["packet_number"] == *number)
            .expect("sent");
        assert_eq!(
            l["data"]["header"]["packet_type"],
            sent["data"]["header"]["packet_type"]
        );
    }
    // The metrics carry the congestion window and an RTT near the link's (2 × 20 ms).
    let metrics: Vec<&Value> = trace.named("recovery:metrics_updated").collect();
    assert!(metrics.len() > 20);
    for m in &metrics {
        assert!(m["data"]["congestion_window"].as_u64().expect("cwnd") >= 2 * 1200);
        assert!(m["data"]["bytes_in_flight"].is_u64());
    }
    let srtt = metrics.last().expect("metrics")["data"]["smoothed_rtt"]
        .as_f64()
        .expect("smoothed_rtt");
    assert!((39.0..80.0).contains(&srtt), "smoothed RTT {srtt} ms");
    let latest = metrics
        .iter()
        .filter_map(|m| m["data"]["latest_rtt"].as_f64());
    assert!(latest.clone().all(|r| r > 0.0));
    // States, in order: attempted, then up, then closing and closed.
    let states: Vec<&str> = trace
        .named("connectivity:connection_state_updated")
        .map(|e| e["data"]["new"].as_str().expect("state"))
        .collect();
    assert_eq!(
        states,
        [
            "attempted",
            "handshake_completed",
            "handshake_confirmed",
            "closing",
            "closed"
        ]
    );
    // chirp's own events: key updates (every 64 packets) and proactive copies, each copy in a
    // packet that went out with that stream range.
    assert!(trace.named("chirp:key_updated").count() >= 2);
    let copies: Vec<&Value> = trace.named("chirp:redundant_copy").collect();
    assert!(!copies.is_empty());
    for c in copies {
        let number = c["data"]["packet_number"].as_u64().expect("number");
        let packet = trace
            .named("transport:packet_sent")
            .find(|e| e["data"]["header"]["packet_number"] == number)
            .expect("the copy's packet was sent");
        let frames = packet["data"]["frames"].as_array().expect("frames");
        assert!(frames.iter().any(|f| {
            f["frame_type"] == "stream"
                && f["offset"] == c["data"]["offset"]
                && f["length"] == c["data"]["length"]
        }));
    }
    // No message byte (the payload is all 'x') ever reaches a trace: only numbers do.
    assert!(!bytes.windows(8).any(|w| w == b"xxxxxxxx"));

    // B's side: every packet it accepted is one the network delivered.
    let rb = records(&mut p, Side::B);
    let (_, trace_b) = serialize(&rb, cb);
    let received = numbers(trace_b.named("transport:packet_received"));
    assert!(received.is_subset(&delivered));
    assert!(
        received.len() * 10 >= delivered.len() * 9,
        "B accepted nearly everything"
    );
}

#[test]
fn tracing_off_records_nothing() {
    let mut p = Pair::new(EndpointConfig::default(), LinkConfig::ideal(ONE_WAY), 3);
    let (ca, _) = p.connect().expect("handshake");
    p.a.endpoint.send(ca, b"hello").expect("room");
    p.drive_until(Duration::from_secs(5), |p| !p.b.take_messages().is_empty())
        .expect("delivered");
    assert!(p.a.endpoint.poll_trace().is_none());
    assert!(p.b.endpoint.poll_trace().is_none());
}

#[test]
fn a_qlog_dir_holds_one_file_per_connection_named_alike_on_both_ends() {
    let (mut p, _, _) = traced_transfer(0.02, 11);
    let dirs = [
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    ];
    for (side, dir) in [Side::A, Side::B].into_iter().zip(&dirs) {
        let mut q = QlogDir::new(dir.path(), None).expect("dir");
        for r in records(&mut p, side) {
            q.record(&r).expect("write");
        }
        assert_eq!(q.open_files(), 0, "closed at Removed");
    }
    let names = |dir: &tempfile::TempDir| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        n.sort();
        n
    };
    let (a, b) = (names(&dirs[0]), names(&dirs[1]));
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    let odcid = a[0].strip_suffix("-client.sqlog").expect("client file");
    assert_eq!(b[0], format!("{odcid}-server.sqlog"));
    for (dir, name) in [(&dirs[0], &a[0]), (&dirs[1], &b[0])] {
        let bytes = std::fs::read(dir.path().join(name)).expect("read");
        let trace = validate::check(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(trace.named("transport:packet_sent").count() > MESSAGES / 2);
    }
}

#[test]
fn a_nat_rebinding_is_traced_as_a_migration_then_a_validation() {
    let cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY), 5);
    let (ca, cb) = p.connect().expect("handshake");
    let old = p.a.addr;
    let new: std::net::SocketAddr = ([10, 0, 0, 1], 4999).into();
    for i in 0..100 {
        p.a.endpoint.send(ca, b"a line").expect("room");
        if i == 50 {
            // From now on A's datagrams come from another port.
            p.a.addr = new;
        }
        p.advance_to(p.now + Duration::from_millis(5))
            .expect("no busy loop");
    }
    p.advance_to(p.now + Duration::from_secs(1))
        .expect("no busy loop");
    assert_eq!(p.b.endpoint.remote(cb), Some(new));
    let rb = records(&mut p, Side::B);
    let paths: Vec<_> = rb
        .iter()
        .filter(|r| r.conn == cb)
        .filter_map(|r| match r.event {
            TraceEvent::Path { change, old, new } => Some((change, old, new)),
            _ => None,
        })
        .collect();
    use chirp_proto::trace::PathChange::{Migrated, Validated};
    assert_eq!(paths, [(Migrated, old, new), (Validated, old, new)]);
    // As qlog: chirp:path_updated, valid.
    let mut w = None;
    for r in rb.iter().filter(|r| r.conn == cb) {
        let w = w.get_or_insert_with(|| {
            let h = TraceHeader::from_started(r, None, None).expect("Started first");
            QlogWriter::new(Vec::new(), h).expect("header")
        });
        w.write(r.at, &r.event).expect("write");
    }
    let bytes = w.expect("records").into_inner().expect("flush");
    let trace = validate::check(&bytes).unwrap_or_else(|e| panic!("invalid qlog: {e}"));
    let changes: Vec<&str> = trace
        .named("chirp:path_updated")
        .map(|e| e["data"]["change"].as_str().expect("change"))
        .collect();
    assert_eq!(changes, ["migrated", "validated"]);
    let first = trace.named("chirp:path_updated").next().expect("migrated");
    assert_eq!(first["data"]["old"], old.to_string());
    assert_eq!(first["data"]["new"], new.to_string());
}

#[test]
fn a_connection_that_became_the_server_side_is_renamed_never_over_another_file() {
    use chirp_proto::trace::TraceRole;
    let dir = tempfile::tempdir().expect("tmp");
    // A file of an earlier run holds the name the connection will take.
    let taken = dir.path().join(format!("{:016x}-server.sqlog", 0xbbu64));
    std::fs::write(&taken, b"earlier").expect("write");
    let mut q = QlogDir::new(dir.path(), None).expect("dir");
    let at = std::time::Instant::now();
    let conn = ConnectionHandle(3);
    let record = |event| TraceRecord { conn, at, event };
    q.record(&record(TraceEvent::Started {
        role: TraceRole::Client,
        odcid: 0xaa,
        local_cid: 1,
        remote: ([127, 0, 0, 1], 9).into(),
    }))
    .expect("started");
    let client = dir.path().join(format!("{:016x}-client.sqlog", 0xaau64));
    assert!(client.exists());
    q.record(&record(TraceEvent::BecameServer { odcid: 0xbb }))
        .expect("renamed");
    q.record(&record(TraceEvent::Removed)).expect("closed");
    assert!(!client.exists());
    assert_eq!(std::fs::read(&taken).expect("read"), b"earlier");
    let renamed = dir.path().join(format!("{:016x}-server-1.sqlog", 0xbbu64));
    let trace = validate::check(&std::fs::read(renamed).expect("renamed file"))
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = trace
        .events
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["connectivity:connection_started", "chirp:became_server"]
    );
}
