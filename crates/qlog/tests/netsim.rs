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

/// The metrics a reader of the trace knows after each `metrics_updated` (each holds only what
/// changed): every field's latest value. The first event holds every field.
fn metrics_states(events: &[&Value]) -> Vec<serde_json::Map<String, Value>> {
    let mut state = serde_json::Map::new();
    events
        .iter()
        .map(|e| {
            let data = e["data"].as_object().expect("data");
            assert!(!data.is_empty(), "an empty metrics_updated");
            for (k, v) in data {
                assert_ne!(state.get(k), Some(v), "{k} written unchanged: {e}");
                state.insert(k.clone(), v.clone());
            }
            state.clone()
        })
        .collect()
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
    // The metrics carry the congestion window and an RTT near the link's (2 × 20 ms). Each
    // event holds what changed; the state after each one is every field's latest value.
    let metrics: Vec<&Value> = trace.named("recovery:metrics_updated").collect();
    assert!(metrics.len() > 20);
    let states = metrics_states(&metrics);
    for state in &states {
        assert!(state["congestion_window"].as_u64().expect("cwnd") >= 2 * 1200);
        assert!(state["bytes_in_flight"].is_u64());
    }
    let srtt = states.last().expect("metrics")["smoothed_rtt"]
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

/// The `recovery:metrics_updated` events of `records` of `conn`, as written.
fn written_metrics(records: &[TraceRecord], conn: ConnectionHandle) -> Vec<Value> {
    let (_, trace) = serialize_open(records, conn);
    trace.named("recovery:metrics_updated").cloned().collect()
}

/// `records` of `conn` through a writer, checked, whether or not the connection has ended.
fn serialize_open(records: &[TraceRecord], conn: ConnectionHandle) -> (Vec<u8>, CheckedTrace) {
    let mut mine = records.iter().filter(|r| r.conn == conn);
    let started = mine.next().expect("a first record");
    let header = TraceHeader::from_started(started, None, None).expect("Started comes first");
    let mut w = QlogWriter::new(Vec::new(), header).expect("header");
    for r in std::iter::once(started).chain(mine) {
        w.write(r.at, &r.event).expect("write");
    }
    let bytes = w.into_inner().expect("flush");
    let checked = validate::check(&bytes).unwrap_or_else(|e| panic!("invalid qlog: {e}"));
    (bytes, checked)
}

/// Issue 16: metrics were written in full with every packet. Now a `metrics_updated` holds
/// only what changed, and a connection whose metrics do not change writes none, however many
/// packets it sends and receives; a change writes one, with that change.
#[test]
fn metrics_are_written_only_when_they_change_and_only_what_changed() {
    let a_cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    // B sends no keepalives of its own: through a quiet minute it only acknowledges A's, so
    // nothing it measures changes (no RTT sample, nothing in flight).
    let mut b_cfg = a_cfg.clone();
    b_cfg.transport.keep_alive = None;
    let path = chirp_netsim::Path::symmetric(LinkConfig::ideal(ONE_WAY), 9);
    let mut p = Pair::with_path(a_cfg, b_cfg, path, 9);
    let (ca, cb) = p.connect().expect("handshake");
    for _ in 0..10 {
        p.a.endpoint.send(ca, b"a line").expect("room");
    }
    p.drive_until(Duration::from_secs(5), |p| p.b.take_messages().len() == 10)
        .expect("delivered");
    p.advance_to(p.now + Duration::from_secs(1))
        .expect("no busy loop");
    let before = records(&mut p, Side::B);

    // A quiet minute: A's keepalives (every 15 s) and B's ACKs.
    p.advance_to(p.now + Duration::from_secs(60))
        .expect("no busy loop");
    let quiet = records(&mut p, Side::B);
    let mine = |rs: &[TraceRecord], f: fn(&TraceEvent) -> bool| {
        rs.iter().filter(|r| r.conn == cb && f(&r.event)).count()
    };
    let received = mine(&quiet, |e| matches!(e, TraceEvent::PacketReceived(_)));
    let sent = mine(&quiet, |e| matches!(e, TraceEvent::PacketSent(_)));
    assert!(
        received >= 3 && sent >= 3,
        "keepalives went both ways: {received} received, {sent} sent"
    );
    assert_eq!(
        mine(&quiet, |e| matches!(e, TraceEvent::Metrics(_))),
        0,
        "nothing changed, so no metrics"
    );
    let all: Vec<TraceRecord> = before.iter().chain(&quiet).cloned().collect();
    let quiet_written = written_metrics(&all, cb).len() - written_metrics(&before, cb).len();
    assert_eq!(quiet_written, 0, "no metrics_updated written while quiet");

    // A change: B sends a message, so bytes are in flight, and that alone is written.
    p.b.endpoint.send(cb, b"an answer").expect("room");
    p.drive_until(Duration::from_secs(5), |p| p.a.take_messages().len() == 1)
        .expect("delivered");
    p.advance_to(p.now + Duration::from_secs(1))
        .expect("no busy loop");
    let after = records(&mut p, Side::B);
    let all: Vec<TraceRecord> = all.into_iter().chain(after).collect();
    let written = written_metrics(&all, cb);
    let new = &written[written_metrics(&before, cb).len()..];
    assert!(new.len() >= 2, "in flight, then acknowledged: {new:?}");
    let flight = new[0]["data"].as_object().expect("data");
    assert_eq!(
        flight.keys().collect::<Vec<_>>(),
        ["bytes_in_flight"],
        "only what changed: {flight:?}"
    );
    assert!(flight["bytes_in_flight"].as_u64().expect("bytes") > 0);
    let last = new.last().expect("events");
    assert_eq!(last["data"]["bytes_in_flight"], 0, "acknowledged: {new:?}");
    // Never an empty one, nor a field written with the value the file last gave it.
    metrics_states(&written.iter().collect::<Vec<_>>());
}

/// Issue 16: datagrams a connection drops are traced as `transport:packet_dropped`, one for
/// each drop its counters count, with the counter's name as the details: here under
/// corruption (flipped bits fail authentication, or break the header).
#[test]
fn corrupted_datagrams_are_packet_dropped_as_many_as_the_counters_say() {
    let cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    let link = LinkConfig::ideal(ONE_WAY)
        .with_corrupt(0.1)
        .with_duplicate(0.05);
    let mut p = Pair::new(cfg, link, 21);
    let (ca, cb) = p.connect().expect("handshake");
    let mut got = 0;
    for i in 0..200 {
        p.a.endpoint
            .send(ca, format!("line {i}").as_bytes())
            .expect("room");
        p.advance_to(p.now + Duration::from_millis(10))
            .expect("no busy loop");
        got += p.b.take_messages().len();
    }
    p.drive_until(Duration::from_secs(60), |p| {
        got += p.b.take_messages().len();
        got == 200
    })
    .expect("every message delivered");
    let mut corrupt = 0;
    for (side, conn) in [(Side::A, ca), (Side::B, cb)] {
        // The records so far, and the counters at the same moment.
        let rs = records(&mut p, side);
        let stats = p.node(side).endpoint.stats(conn).expect("open");
        let traced = |reason| {
            rs.iter()
                .filter(|r| {
                    r.conn == conn
                        && matches!(r.event, TraceEvent::PacketDropped { reason: x, .. } if x == reason)
                })
                .count() as u64
        };
        use chirp_proto::trace::DropReason as R;
        assert_eq!(
            traced(R::Corrupt),
            stats.corrupt_dropped,
            "{side:?} corrupt"
        );
        assert_eq!(
            traced(R::Malformed),
            stats.malformed_dropped,
            "{side:?} malformed"
        );
        assert_eq!(
            traced(R::Duplicate),
            stats.duplicates_dropped,
            "{side:?} duplicates"
        );
        assert_eq!(
            traced(R::Undecryptable),
            stats.undecryptable_dropped,
            "{side:?} undecryptable"
        );
        assert_eq!(traced(R::Stale), stats.stale_dropped, "{side:?} stale");
        assert_eq!(
            traced(R::NoBuffer),
            stats.no_buffer_dropped,
            "{side:?} no buffer"
        );
        corrupt += stats.corrupt_dropped;
        // As qlog: one packet_dropped for each, with a trigger and the reason, valid.
        let (bytes, trace) = serialize_open(&rs, conn);
        let dropped: Vec<&Value> = trace.named("transport:packet_dropped").collect();
        let counted = stats.corrupt_dropped
            + stats.malformed_dropped
            + stats.duplicates_dropped
            + stats.undecryptable_dropped
            + stats.stale_dropped;
        let no_buffer = traced(R::NoBuffer);
        assert_eq!(dropped.len() as u64, counted + no_buffer, "{side:?}");
        for d in &dropped {
            let data = &d["data"];
            assert!(data["trigger"].is_string(), "{d}");
            assert!(data["raw"]["length"].as_u64().expect("length") > 0, "{d}");
        }
        let corrupt_written = dropped
            .iter()
            .filter(|d| {
                d["data"]["details"] == "corrupt" && d["data"]["trigger"] == "decryption_failure"
            })
            .count() as u64;
        assert_eq!(corrupt_written, stats.corrupt_dropped, "{side:?}");
        assert!(!bytes.windows(5).any(|w| w == b"line "), "no message text");
    }
    assert!(
        corrupt > 10,
        "the link corrupted datagrams: {corrupt} failed authentication"
    );
}
