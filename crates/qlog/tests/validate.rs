//! The schema check itself: a real trace passes, and each kind of damage to it is caught (so a
//! passing check in the other tests means something).

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::EndpointConfig;
use chirp_qlog::validate;
use chirp_qlog::{QlogWriter, TraceHeader};

/// The client's trace of a short simulated chat (with some loss), as qlog bytes.
fn real_trace() -> String {
    real_trace_over(
        LinkConfig::ideal(Duration::from_millis(10)).with_loss(0.1),
        false,
    )
}

/// The client's trace of a short simulated chat over `link`, as qlog bytes; with
/// `note_a_gap`, a note that events were dropped (`QlogWriter::dropped`) after the first.
fn real_trace_over(link: LinkConfig, note_a_gap: bool) -> String {
    let cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg, link, 5);
    let (ca, _) = p.connect().expect("handshake");
    for _ in 0..40 {
        p.a.endpoint.send(ca, b"some chat line").expect("room");
        p.advance_to(p.now + Duration::from_millis(10))
            .expect("no busy loop");
    }
    p.a.endpoint.close(p.now, ca, 0x100, "bye");
    p.drive_to_idle(Duration::from_secs(30)).expect("idle");
    let mut records = std::iter::from_fn(|| p.a.endpoint.poll_trace());
    let first = records.next().expect("records");
    let header = TraceHeader::from_started(&first, None, None).expect("Started first");
    let mut w = QlogWriter::new(Vec::new(), header).expect("header");
    w.write(first.at, &first.event).expect("write");
    if note_a_gap {
        w.dropped(first.at, 7).expect("write");
    }
    for r in records {
        w.write(r.at, &r.event).expect("write");
    }
    String::from_utf8(w.into_inner().expect("flush")).expect("JSON is UTF-8")
}

fn fails(text: &str, why: &str) {
    assert!(
        validate::check(text.as_bytes()).is_err(),
        "{why}: the damaged trace passed"
    );
}

#[test]
fn a_real_trace_passes_and_damage_is_caught() {
    let good = real_trace();
    let trace = validate::check(good.as_bytes()).expect("the real trace is valid");
    for name in [
        "transport:packet_sent",
        "transport:packet_received",
        "recovery:metrics_updated",
        "recovery:packet_lost",
        "connectivity:connection_state_updated",
    ] {
        assert!(trace.named(name).next().is_some(), "{name} in the trace");
    }

    // JSON-SEQ framing.
    fails(&good[1..], "no leading record separator");
    fails(
        &good.replacen("}\n\u{1e}", "}\u{1e}", 1),
        "a record without its newline",
    );
    fails(
        &good.replacen("\n\u{1e}{\"time\"", "\n\u{1e}{\"time\"\n", 1),
        "a broken record",
    );
    // The header.
    fails(
        &good.replacen("\"qlog_version\":\"0.3\"", "\"qlog_version\":\"0.4\"", 1),
        "version",
    );
    fails(&good.replacen("\"JSON-SEQ\"", "\"JSON\"", 1), "format");
    // Typed QUIC events: an unknown packet type, a mistyped number, a missing field, an
    // unknown frame type, an unknown state, an unknown event.
    fails(&good.replacen("\"1RTT\"", "\"2RTT\"", 1), "packet type");
    fails(
        &good.replacen("\"congestion_window\":", "\"congestion_window\":-", 1),
        "negative window",
    );
    fails(&good.replacen("\"header\":", "\"headr\":", 1), "no header");
    fails(
        &good.replacen("\"frame_type\":\"ack\"", "\"frame_type\":\"akc\"", 1),
        "frame type",
    );
    fails(
        &good.replacen("\"new\":\"attempted\"", "\"new\":\"trying\"", 1),
        "state",
    );
    fails(
        &good.replacen("transport:packet_sent", "transport:packet_snet", 1),
        "event name",
    );
    // The event envelope: extra fields, time going backwards.
    fails(
        &good.replacen("{\"time\":", "{\"extra\":1,\"time\":", 1),
        "extra field",
    );
    let last_time = good
        .rsplit("{\"time\":")
        .next()
        .and_then(|t| t.split(',').next())
        .expect("a time");
    fails(
        &good.replacen(&format!("{{\"time\":{last_time},"), "{\"time\":-1.0,", 1),
        "negative time",
    );
}

#[test]
fn chirp_events_are_checked_too() {
    let good = real_trace();
    let copy = good
        .split('\u{1e}')
        .find(|r| r.contains("chirp:redundant_copy"))
        .expect("a copy in the trace (copies at the start of every connection)");
    let trace = format!("{good}\u{1e}{copy}");
    // A copy repeated at its own time comes after later events: out of order.
    fails(&trace, "time order");
    for (from, to) in [
        ("\"startup\":", "\"startp\":"),
        ("\"packet_number\":", "\"packet_number\":\"1\",\"x\":"),
        ("chirp:redundant_copy", "chirp:redundant_copies"),
    ] {
        fails(&good.replacen(copy, &copy.replacen(from, to, 1), 1), from);
    }
}

#[test]
fn drops_are_checked_too() {
    let link = LinkConfig::ideal(Duration::from_millis(10)).with_corrupt(0.2);
    let good = real_trace_over(link, true);
    let trace = validate::check(good.as_bytes()).expect("the real trace is valid");
    let dropped = trace
        .named("transport:packet_dropped")
        .next()
        .expect("the link corrupted datagrams");
    assert!(dropped["data"]["trigger"].is_string());
    let gap = trace
        .named("chirp:events_dropped")
        .next()
        .expect("the gap noted");
    assert_eq!(gap["data"]["count"], 7);
    let record = |name: &str| {
        good.split('\u{1e}')
            .find(|r| r.contains(name))
            .expect("in the trace")
            .to_owned()
    };
    let drop = record("transport:packet_dropped");
    let trigger = drop
        .split("\"trigger\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a trigger");
    fails(
        &good.replacen(
            &drop,
            &drop.replacen(
                &format!("\"trigger\":\"{trigger}\""),
                "\"trigger\":\"oops\"",
                1,
            ),
            1,
        ),
        "an unknown trigger",
    );
    fails(
        &good.replacen(&drop, &drop.replacen("\"length\":", "\"length\":-", 1), 1),
        "a negative length",
    );
    let gap = record("chirp:events_dropped");
    for (from, to) in [
        ("\"count\":7", "\"count\":\"7\""),
        ("\"count\":", "\"cuont\":"),
    ] {
        fails(&good.replacen(&gap, &gap.replacen(from, to, 1), 1), from);
    }
}
