//! A receiver whose application stops reading for many idle timeouts (its output is stuck, as
//! when `chirp peer`'s stdout pipe is full or its terminal is paused with Ctrl-S) keeps the
//! connection: its transport goes on acknowledging and both sides send keepalives, flow control
//! holds the sender back, and once reading resumes every message arrives once, in order.
//!
//! The virtual-time counterpart of `crates/chirp/tests/slow_reader.rs`, which used to wait 12 s
//! of wall-clock time to show that nothing happened; here a minute of stuck output costs
//! milliseconds, deterministically.

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{EndpointConfig, Event, SendError, WriteError};

/// Line `i` as `chirp peer` sends it in the real-process test: 97 bytes, numbered.
fn line(i: u32) -> Vec<u8> {
    format!("{i:05} {}", "x".repeat(90)).into_bytes()
}

fn closed(e: &Event) -> bool {
    matches!(e, Event::Closed { .. })
}

/// Sends lines until all are queued or the sender is pushed back.
fn push(p: &mut Pair, conn: chirp_proto::ConnectionHandle, sent: &mut u32, total: u32) -> bool {
    while *sent < total {
        match p.a.endpoint.send(conn, &line(*sent)) {
            Ok(()) => *sent += 1,
            Err(SendError::Write(WriteError::Blocked)) => return true,
            Err(e) => panic!("send: {e}"),
        }
    }
    false
}

fn stuck_reader_keeps_the_link(total: u32, seed: u64, held_back: bool) {
    let idle = Duration::from_secs(5);
    let mut cfg = EndpointConfig::default();
    cfg.transport.idle_timeout = idle;
    let mut p = Pair::new(cfg, LinkConfig::ideal(Duration::from_millis(1)), seed);
    let (ca, cb) = p.connect().expect("connects");
    // b's application stops reading: nothing is taken from its endpoint any more.
    p.b.reading = false;
    let mut sent = 0u32;
    let t0 = p.now;
    p.drive_until(Duration::from_secs(90), |p| {
        push(p, ca, &mut sent, total);
        p.now - t0 >= 12 * idle
    })
    .expect("runs 12 idle timeouts");
    assert_eq!(
        sent < total,
        held_back,
        "{sent} of {total} lines taken by a"
    );
    // Twelve idle timeouts later, neither side gave up on the other.
    assert!(!p.a.events.iter().any(closed), "a closed: {:?}", p.a.events);
    assert!(
        p.a.endpoint.recv_buffered(ca).is_some(),
        "a's connection is gone"
    );
    let held =
        p.b.endpoint
            .recv_buffered(cb)
            .expect("b's connection is gone");
    assert!(
        held > 0,
        "b's transport holds what its application did not read"
    );
    let before = p.a.endpoint.stats(ca).expect("live");
    // Traffic went on meanwhile: acknowledgements and keepalives, at least one per half
    // idle timeout.
    assert!(before.packets_received >= 24, "{before:?}");

    // Reading resumes: every line arrives, once, in order, and b never saw a close either.
    p.b.reading = true;
    let mut got = 0u32;
    p.drive_until(Duration::from_secs(60), |p| {
        push(p, ca, &mut sent, total);
        while let Some(e) = p.b.events.pop_front() {
            assert!(!closed(&e), "b closed: {e:?}");
            if let Event::Message { data, .. } = e {
                assert_eq!(&data[..], &line(got)[..], "line {got}");
                got += 1;
            }
        }
        got == total
    })
    .expect("everything arrives once reading resumes");
    assert!(!p.a.events.iter().any(closed), "a closed: {:?}", p.a.events);
}

/// The real-process test's load: 3000 lines of 97 bytes, which fit in the receive window.
#[test]
fn a_reader_stuck_for_twelve_idle_timeouts_keeps_the_link() {
    stuck_reader_keeps_the_link(3000, 21, false);
}

/// More than the receive window: the sender is held back for the whole minute, and still
/// nobody times out.
#[test]
fn a_sender_held_back_by_a_stuck_reader_keeps_the_link() {
    let window = EndpointConfig::default().transport.receive_window;
    let total = u32::try_from(3 * window / 97).expect("fits");
    stuck_reader_keeps_the_link(total, 22, true);
}
