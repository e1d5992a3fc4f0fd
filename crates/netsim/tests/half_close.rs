//! Closing and half-closing two endpoints that both send at once, under the impairment of
//! issue 12 (20 % loss, 5 % duplication, 10 % reordering, 1 % corruption, 5 ms delay): what one
//! side reports as undelivered is exactly what the other did not receive, and a finish (the
//! message stream's half-close) lets both sides deliver everything before the connection ends.

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{CloseReason, ConnectionHandle, EndpointConfig, Event, SendError, WriteError};

const LINES: u32 = 1000;

fn impaired() -> LinkConfig {
    LinkConfig::ideal(Duration::from_millis(5))
        .with_loss(0.20)
        .with_duplicate(0.05)
        .with_reorder(0.10, Duration::from_millis(10))
        .with_corrupt(0.01)
}

fn line(dir: u8, i: u32) -> Vec<u8> {
    format!("{dir} line {i} {}", "x".repeat((i % 40) as usize)).into_bytes()
}

/// One side of the exchange, as an application would keep it.
#[derive(Default)]
struct App {
    sent: u32,
    received: u32,
    acked: u64,
    peer_finished: bool,
    closed: Option<(CloseReason, usize)>,
    finish_called: bool,
    close_called: bool,
}

impl App {
    fn feed(&mut self, ep: &mut chirp_proto::Endpoint, conn: ConnectionHandle, dir: u8) {
        while self.sent < LINES {
            match ep.send(conn, &line(dir, self.sent)) {
                Ok(()) => self.sent += 1,
                Err(SendError::Write(WriteError::Blocked)) => break,
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }

    fn take(&mut self, events: impl IntoIterator<Item = Event>, from: u8) {
        for ev in events {
            match ev {
                Event::Message { data, .. } => {
                    assert!(!self.peer_finished, "a message after the peer's finish");
                    assert_eq!(&data[..], &line(from, self.received)[..], "in order, once");
                    self.received += 1;
                }
                Event::Acked { messages, .. } => self.acked += messages,
                Event::PeerFinished { .. } => {
                    assert!(!self.peer_finished, "finish reported twice");
                    self.peer_finished = true;
                }
                Event::Closed {
                    reason,
                    undelivered,
                    ..
                } => {
                    assert!(self.closed.is_none(), "closed twice");
                    self.closed = Some((reason, undelivered.len()));
                }
                _ => {}
            }
        }
    }
}

/// Both sides send everything, then close as `chirp peer` did at end of input before the
/// half-close: a graceful close once their own messages are all acknowledged. Whatever a
/// side is told is undelivered must be exactly what the other did not receive.
fn close_when_flushed(seed: u64) {
    let mut p = Pair::new(EndpointConfig::default(), impaired(), seed);
    let (ca, cb) = p.connect().expect("connects");
    let (mut a, mut b) = (App::default(), App::default());
    p.drive_until(Duration::from_secs(600), |p| {
        a.feed(&mut p.a.endpoint, ca, 1);
        b.feed(&mut p.b.endpoint, cb, 2);
        a.take(p.a.events.drain(..), 2);
        b.take(p.b.events.drain(..), 1);
        let now = p.now;
        for (app, ep, conn) in [
            (&mut a, &mut p.a.endpoint, ca),
            (&mut b, &mut p.b.endpoint, cb),
        ] {
            if app.sent == LINES && app.acked == u64::from(LINES) && !app.close_called {
                app.close_called = true;
                ep.close(now, conn, 0, "bye");
            }
        }
        a.closed.is_some() && b.closed.is_some()
    })
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for (name, me, other) in [("A", &a, &b), ("B", &b, &a)] {
        let (reason, undelivered) = me.closed.clone().expect("closed");
        let not_received = (LINES - other.received) as usize;
        match reason {
            CloseReason::Local | CloseReason::PeerClosed { .. } => assert_eq!(
                undelivered, not_received,
                "seed {seed}: {name} was told {undelivered} message(s) were undelivered \
                 ({reason:?}), but the other side missed {not_received}"
            ),
            // Nothing was heard of the peer's end: what it got is unknown.
            _ => assert!(
                undelivered >= not_received,
                "seed {seed}: {name}: {reason:?}"
            ),
        }
    }
}

#[test]
fn undelivered_after_a_close_is_exactly_what_the_peer_did_not_receive() {
    for seed in 1..=20 {
        close_when_flushed(seed);
    }
}

/// Both sides send everything and finish (half-close) at once, as `chirp peer` does at end of
/// input. Each receives all the other sent, sees its finish, and the connection then closes by
/// itself with nothing undelivered.
fn finish_both(seed: u64) -> Duration {
    let mut p = Pair::new(EndpointConfig::default(), impaired(), seed);
    let (ca, cb) = p.connect().expect("connects");
    let (mut a, mut b) = (App::default(), App::default());
    let start = p.now;
    p.drive_until(Duration::from_secs(600), |p| {
        a.feed(&mut p.a.endpoint, ca, 1);
        b.feed(&mut p.b.endpoint, cb, 2);
        a.take(p.a.events.drain(..), 2);
        b.take(p.b.events.drain(..), 1);
        for (app, ep, conn) in [
            (&mut a, &mut p.a.endpoint, ca),
            (&mut b, &mut p.b.endpoint, cb),
        ] {
            if app.sent == LINES && !app.finish_called {
                app.finish_called = true;
                ep.finish(conn).expect("open");
                assert_eq!(ep.send(conn, b"late"), Err(SendError::Closed));
            }
        }
        a.closed.is_some() && b.closed.is_some()
    })
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let took = p.now - start;
    for (name, me) in [("A", &a), ("B", &b)] {
        assert_eq!(me.received, LINES, "seed {seed}: {name} received");
        assert_eq!(
            me.acked,
            u64::from(LINES),
            "seed {seed}: {name} acknowledged"
        );
        assert!(me.peer_finished, "seed {seed}: {name} saw no finish");
        let (reason, undelivered) = me.closed.clone().expect("closed");
        assert_eq!(undelivered, 0, "seed {seed}: {name}: {reason:?}");
        assert!(
            matches!(&reason, CloseReason::Local)
                || matches!(&reason, CloseReason::PeerClosed { code: 0, reason } if reason == "finished"),
            "seed {seed}: {name} closed with {reason:?}"
        );
    }
    // Both connections are forgotten and nothing stays armed.
    p.drive_to_idle(Duration::from_secs(60)).expect("goes idle");
    assert_eq!(
        p.a.endpoint.connections().count() + p.b.endpoint.connections().count(),
        0
    );
    took
}

#[test]
#[allow(
    clippy::print_stderr,
    reason = "the runtime is worth seeing with --nocapture"
)]
fn both_finish_after_a_thousand_messages_each_way_twenty_seeds() {
    let mut slowest = Duration::ZERO;
    for seed in 1..=20 {
        slowest = slowest.max(finish_both(seed));
    }
    eprintln!("slowest run: {slowest:?} of virtual time");
}

/// One side finishes at once, with nothing sent; the other keeps sending for a while, then
/// finishes: the half-closed side keeps receiving until then.
#[test]
fn a_finished_side_keeps_receiving_until_the_peer_finishes() {
    let mut p = Pair::new(EndpointConfig::default(), impaired(), 7);
    let (ca, cb) = p.connect().expect("connects");
    p.a.endpoint.finish(ca).expect("open");
    let mut b = App::default();
    let mut a = App::default();
    // B sends its last 100 lines only after a second.
    b.sent = LINES - 100;
    a.received = LINES - 100;
    let t_late = p.now + Duration::from_secs(1);
    p.drive_until(Duration::from_secs(120), |p| {
        if p.now >= t_late {
            b.feed(&mut p.b.endpoint, cb, 2);
        }
        a.take(p.a.events.drain(..), 2);
        b.take(p.b.events.drain(..), 1);
        if b.sent == LINES && !b.finish_called {
            b.finish_called = true;
            p.b.endpoint.finish(cb).expect("open");
        }
        a.closed.is_some() && b.closed.is_some()
    })
    .expect("both close");
    assert!(b.peer_finished && a.peer_finished);
    assert_eq!(
        a.received, LINES,
        "A received all of B's lines after finishing"
    );
    assert_eq!(b.received, 0);
    assert_eq!(b.acked, 100);
    assert_eq!(a.closed.expect("closed").1, 0);
    assert_eq!(b.closed.expect("closed").1, 0);
}

/// Both finish; the first side to close then falls silent for good (its CLOSE, and its answers
/// to retransmissions, are all lost; its process is gone). The other side already holds
/// everything and knows its own stream arrived: it closes within a few probe timeouts, not at
/// its idle timeout, with nothing undelivered.
#[test]
fn a_lost_close_after_both_finished_costs_a_few_ptos_not_the_idle_timeout() {
    for seed in 1..=5 {
        let mut p = Pair::new(EndpointConfig::default(), impaired(), seed);
        let (ca, cb) = p.connect().expect("connects");
        let (mut a, mut b) = (App::default(), App::default());
        let mut silenced: Option<(bool, std::time::Instant)> = None;
        p.drive_until(Duration::from_secs(120), |p| {
            a.feed(&mut p.a.endpoint, ca, 1);
            b.feed(&mut p.b.endpoint, cb, 2);
            a.take(p.a.events.drain(..), 2);
            b.take(p.b.events.drain(..), 1);
            for (app, ep, conn) in [
                (&mut a, &mut p.a.endpoint, ca),
                (&mut b, &mut p.b.endpoint, cb),
            ] {
                if app.sent == LINES && !app.finish_called {
                    app.finish_called = true;
                    ep.finish(conn).expect("open");
                }
            }
            if silenced.is_none() && (a.closed.is_some() || b.closed.is_some()) {
                // Whoever closed first is gone: nothing of it arrives any more.
                let a_first = a.closed.is_some();
                let far = p.now + Duration::from_secs(3600);
                if a_first {
                    p.path.a_to_b.blackout_until(far);
                } else {
                    p.path.b_to_a.blackout_until(far);
                }
                silenced = Some((a_first, p.now));
            }
            a.closed.is_some() && b.closed.is_some()
        })
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let (a_first, t) = silenced.expect("one side closed");
        let other = if a_first { &b } else { &a };
        let took = p.now - t;
        assert!(
            took < Duration::from_secs(2),
            "seed {seed}: the other side took {took:?} to close: {:?}",
            other.closed
        );
        for (name, me) in [("A", &a), ("B", &b)] {
            assert_eq!(me.received, LINES, "seed {seed}: {name}");
            let (reason, undelivered) = me.closed.clone().expect("closed");
            assert_eq!(undelivered, 0, "seed {seed}: {name}: {reason:?}");
        }
    }
}
