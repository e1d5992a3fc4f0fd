//! The pinger ([`chirp_client::ping::Pinger`]) against a real server endpoint, over a
//! `chirp-netsim` path, in virtual time: what it measures is what the simulated path does.
//!
//! The harness plays the driver's part, as `chirp ping` does over UDP: it moves the pinger's
//! datagrams through one [`Link`] and the server's through the other, fires timers, and
//! jumps the clock to the next thing that can happen. A deadline stuck in the past is a busy
//! loop and fails the test, as does a run that has not finished in its time budget.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_client::ping::{Config, Event, Failure, LostReason, Pinger, Summary};
use chirp_keys::{Fingerprint, Identity, PublicKey};
use chirp_netsim::{LinkConfig, Path};
use chirp_proto::handshake::StaticSecret;
use chirp_proto::{CloseReason, Endpoint, EndpointConfig, close_code};

const PINGER: ([u8; 4], u16) = ([10, 0, 0, 1], 4000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 7667);
/// Steps at one instant before the harness calls it a busy loop.
const MAX_STEPS_AT_ONE_INSTANT: u32 = 10_000;

/// The server's identity: one per test process (tests compare fingerprints with it).
fn server_identity() -> &'static Identity {
    static ID: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    ID.get_or_init(|| Identity::generate().expect("a key from the OS generator"))
}

fn server_fingerprint() -> Fingerprint {
    server_identity().public().fingerprint()
}

fn config(count: u64) -> Config {
    Config {
        remote: SERVER.into(),
        count: Some(count),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        pin: None,
        verify_key: false,
        identity: Some(StaticSecret([9; 32])),
        trace: false,
    }
}

/// What the server side does with keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// A chat server: any key may talk to it.
    Open,
    /// A peer whose accept policy refuses our key.
    RefusesKeys,
    /// A peer whose user never answers the question about our key.
    Undecided,
    /// A server with no room (REFUSE).
    Full,
    /// Nobody there.
    Absent,
}

struct Sim {
    now: Instant,
    start: Instant,
    pinger: Pinger,
    server: Endpoint,
    server_kind: Server,
    path: Path,
    events: Vec<Event>,
    server_events: Vec<chirp_proto::Event>,
    /// The verdict given on `Event::VerifyKey`.
    verdict: bool,
    /// When to call `Pinger::stop`, if ever.
    stop_at: Option<Instant>,
    stuck: u32,
}

impl Sim {
    fn new(config: Config, link: LinkConfig, server_kind: Server, seed: u64) -> Self {
        Self::with_path(config, Path::symmetric(link, seed), server_kind, seed)
    }

    fn with_path(config: Config, path: Path, server_kind: Server, seed: u64) -> Self {
        // The origin of virtual time; nothing depends on its value.
        let start = Instant::now();
        let server = Endpoint::new(
            EndpointConfig {
                identity: Some(StaticSecret(*server_identity().secret())),
                verify_keys: matches!(server_kind, Server::RefusesKeys | Server::Undecided),
                max_connections: if server_kind == Server::Full { 0 } else { 16 },
                ..EndpointConfig::default()
            },
            seed ^ 0x5e,
        );
        Self {
            now: start,
            start,
            pinger: Pinger::new(config, start, seed).expect("a fresh endpoint has room"),
            server,
            server_kind,
            path,
            events: Vec::new(),
            server_events: Vec::new(),
            verdict: true,
            stop_at: None,
            stuck: 0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Output of both sides, as a driver drains it after every input.
    fn drain(&mut self) {
        let now = self.now;
        while let Some(t) = self.pinger.poll_transmit(now) {
            assert_eq!(t.destination, SocketAddr::from(SERVER));
            self.path.a_to_b.send(now, t.contents);
        }
        while let Some(t) = self.server.poll_transmit(now) {
            self.path.b_to_a.send(now, t.contents);
        }
        while let Some(ev) = self.pinger.poll_event() {
            if let Event::VerifyKey { .. } = ev {
                self.pinger.key_verdict(now, self.verdict);
            }
            self.events.push(ev);
        }
        while let Some(ev) = self.server.poll_event() {
            if let chirp_proto::Event::VerifyKey { conn, .. } = ev
                && self.server_kind == Server::RefusesKeys
            {
                self.server.refuse_key(now, conn);
            }
            self.server_events.push(ev);
        }
    }

    /// Runs until the pinger has finished and its connection is gone, for at most `budget`
    /// of virtual time.
    fn run(&mut self, budget: Duration) {
        let deadline = self.start + budget;
        loop {
            self.drain();
            if self.pinger.is_finished() && self.pinger.poll_timeout().is_none() {
                return;
            }
            let next = [
                self.pinger.poll_timeout(),
                self.server.poll_timeout(),
                self.path.a_to_b.next_delivery(),
                self.path.b_to_a.next_delivery(),
                self.stop_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("an unfinished pinger has a deadline");
            assert!(
                next <= deadline,
                "not finished within {budget:?}: {:#?}",
                self.events
            );
            if next <= self.now {
                self.stuck += 1;
                assert!(
                    self.stuck < MAX_STEPS_AT_ONE_INSTANT,
                    "busy loop at {:?}",
                    self.elapsed()
                );
            } else {
                self.stuck = 0;
                self.now = next;
            }
            let now = self.now;
            while let Some(d) = self.path.a_to_b.poll_deliver(now) {
                if self.server_kind != Server::Absent {
                    self.server.handle_datagram(now, PINGER.into(), &d);
                }
            }
            while let Some(d) = self.path.b_to_a.poll_deliver(now) {
                self.pinger.handle_datagram(now, SERVER.into(), &d);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            if self.pinger.poll_timeout().is_some_and(|t| t <= now) {
                self.pinger.handle_timeout(now);
            }
            if self.stop_at.is_some_and(|t| t <= now) {
                self.stop_at = None;
                self.pinger.stop(now);
            }
        }
    }

    fn replies(&self) -> Vec<(u64, Duration)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Reply { seq, rtt } => Some((*seq, *rtt)),
                _ => None,
            })
            .collect()
    }

    fn lost(&self) -> Vec<(u64, LostReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Lost { seq, reason } => Some((*seq, *reason)),
                _ => None,
            })
            .collect()
    }

    fn failure(&self) -> Option<&Failure> {
        self.events.iter().find_map(|e| match e {
            Event::Failed { reason } => Some(reason),
            _ => None,
        })
    }

    /// The summary of the last event, which must be `Finished`.
    fn summary(&self) -> Summary {
        match self.events.last() {
            Some(Event::Finished { summary }) => *summary,
            other => panic!(
                "the last event is not Finished: {other:?}\n{:#?}",
                self.events
            ),
        }
    }

    fn server_closed(&self) -> Option<&CloseReason> {
        self.server_events.iter().find_map(|e| match e {
            chirp_proto::Event::Closed { reason, .. } => Some(reason),
            _ => None,
        })
    }
}

fn close_to(a: Duration, b: Duration, tolerance: Duration) -> bool {
    a.abs_diff(b) <= tolerance
}

/// Every probe has exactly one outcome, its seq counts from 1, and the summary agrees with
/// the events.
fn assert_consistent(sim: &Sim) {
    let s = sim.summary();
    let mut seqs: Vec<u64> = sim
        .replies()
        .iter()
        .map(|r| r.0)
        .chain(sim.lost().iter().map(|l| l.0))
        .collect();
    seqs.sort_unstable();
    let unique = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), unique, "a probe with two outcomes: {seqs:?}");
    assert!(seqs.iter().all(|&q| q >= 1 && q <= s.sent), "{seqs:?}");
    assert_eq!(s.answered, sim.replies().len() as u64);
    assert_eq!(s.lost, sim.lost().len() as u64);
    assert!(s.answered + s.lost <= s.sent);
    let rtts: Vec<Duration> = sim.replies().iter().map(|r| r.1).collect();
    match s.rtt {
        None => assert!(rtts.is_empty()),
        Some(r) => {
            assert_eq!(r.min, *rtts.iter().min().expect("replies"));
            assert_eq!(r.max, *rtts.iter().max().expect("replies"));
            // Mean and standard deviation recomputed here in floating point.
            let xs: Vec<f64> = rtts.iter().map(Duration::as_secs_f64).collect();
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let sd = (xs.iter().map(|x| x * x).sum::<f64>() / n - mean * mean)
                .max(0.0)
                .sqrt();
            assert!((r.avg.as_secs_f64() - mean).abs() < 1e-6, "{r:?} vs {mean}");
            assert!((r.mdev.as_secs_f64() - sd).abs() < 1e-6, "{r:?} vs {sd}");
        }
    }
}

#[test]
fn a_clean_path_answers_every_probe_with_its_round_trip() {
    let delay = Duration::from_millis(20);
    let mut sim = Sim::new(config(5), LinkConfig::ideal(delay), Server::Open, 1);
    sim.run(Duration::from_secs(30));
    let done = sim.events.iter().find_map(|e| match e {
        Event::HandshakeDone { fingerprint, time } => Some((*fingerprint, *time)),
        _ => None,
    });
    let (fingerprint, handshake) = done.expect("handshake done");
    assert_eq!(fingerprint, server_fingerprint());
    // INITIAL → RETRY, INITIAL → ACCEPT, HANDSHAKE and the confirming PING → ACK: three
    // round trips.
    assert!(
        close_to(handshake, delay * 6, Duration::from_millis(1)),
        "{handshake:?}"
    );
    // The server's key came in its ACCEPT: two round trips.
    let answer = sim.summary().answer.expect("answered");
    assert!(
        close_to(answer, delay * 4, Duration::from_millis(1)),
        "{answer:?}"
    );
    let replies = sim.replies();
    assert_eq!(
        replies.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    for (seq, rtt) in &replies {
        assert!(
            close_to(*rtt, delay * 2, Duration::from_millis(1)),
            "probe {seq}: {rtt:?}"
        );
    }
    assert!(sim.lost().is_empty());
    assert_eq!(sim.failure(), None);
    assert_consistent(&sim);
    let s = sim.summary();
    assert_eq!((s.sent, s.answered, s.lost), (5, 5, 0));
    assert_eq!(s.loss_percent(), 0.0);
    let r = s.rtt.expect("figures");
    assert!(r.mdev < Duration::from_micros(100), "{r:?}");
    // Four intervals, then the last probe's round trip.
    assert!(
        close_to(
            s.time,
            Duration::from_secs(4) + delay * 2,
            Duration::from_millis(1)
        ),
        "{:?}",
        s.time
    );
    // The server heard a graceful close.
    assert!(
        matches!(
            sim.server_closed(),
            Some(CloseReason::PeerClosed { code, .. }) if *code == close_code::NO_ERROR
        ),
        "{:?}",
        sim.server_closed()
    );
}

#[test]
fn probes_lost_on_the_path_are_counted_and_never_sent_again() {
    let link = LinkConfig::ideal(Duration::from_millis(10)).with_loss(0.2);
    let mut cfg = config(100);
    cfg.interval = Duration::from_millis(200);
    cfg.timeout = Duration::from_secs(10);
    let mut sim = Sim::new(cfg, link, Server::Open, 42);
    sim.run(Duration::from_secs(120));
    assert_eq!(sim.failure(), None, "{:#?}", sim.events);
    assert_consistent(&sim);
    let s = sim.summary();
    assert_eq!(s.sent, 100);
    // A probe is lost if its packet or the acknowledgement is: 1 − 0.8² = 36 % expected.
    assert!(s.lost >= 20 && s.lost <= 55, "{s:?}");
    // Every probe has its outcome (nothing was left waiting at the end), and none waited
    // for its 10 s timeout: the transport's loss detection declared the lost ones, and a
    // later packet's acknowledgement showed the others had arrived, their answer lost.
    assert_eq!(s.answered + s.lost, s.sent, "{s:?}");
    let lost = sim.lost();
    let declared = lost.iter().filter(|l| l.1 == LostReason::Declared).count();
    let answer_lost = lost
        .iter()
        .filter(|l| l.1 == LostReason::AnswerLost)
        .count();
    assert_eq!(declared + answer_lost, lost.len(), "{lost:?}");
    assert!(declared >= 5 && answer_lost >= 5, "{lost:?}");
    // Losses do not change what an answered probe measures.
    for (seq, rtt) in sim.replies() {
        assert!(
            close_to(rtt, Duration::from_millis(20), Duration::from_millis(1)),
            "probe {seq}: {rtt:?}"
        );
    }
}

#[test]
fn jitter_shows_in_mdev_computed_as_ping_does() {
    let link = LinkConfig::ideal(Duration::from_millis(30)).with_jitter(Duration::from_millis(10));
    let mut cfg = config(40);
    cfg.interval = Duration::from_millis(250);
    let mut sim = Sim::new(cfg, link, Server::Open, 7);
    sim.run(Duration::from_secs(60));
    assert_consistent(&sim);
    let s = sim.summary();
    assert_eq!((s.sent, s.answered), (40, 40), "{s:?}");
    let r = s.rtt.expect("figures");
    // Each way 30 ms plus up to 10 ms of jitter.
    assert!(r.min >= Duration::from_millis(60), "{r:?}");
    assert!(r.max <= Duration::from_millis(81), "{r:?}");
    assert!(r.mdev >= Duration::from_millis(1), "{r:?}");
}

#[test]
fn a_pinned_key_that_differs_fails_before_any_probe() {
    let mut cfg = config(3);
    let other = PublicKey([1; 32]).fingerprint();
    cfg.pin = Some(other);
    let mut sim = Sim::new(
        cfg,
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::Open,
        3,
    );
    sim.run(Duration::from_secs(10));
    assert_eq!(
        sim.failure(),
        Some(&Failure::KeyMismatch {
            expected: other,
            actual: server_fingerprint()
        })
    );
    assert!(sim.failure().is_some_and(Failure::is_key_mismatch));
    assert!(!sim.events.iter().any(|e| matches!(
        e,
        Event::HandshakeDone { .. } | Event::Reply { .. } | Event::Lost { .. }
    )));
    assert_eq!(sim.summary().sent, 0);
    // Our identity never reached the server: it never had a connection up.
    assert!(
        !sim.server_events
            .iter()
            .any(|e| matches!(e, chirp_proto::Event::Connected { .. })),
        "{:?}",
        sim.server_events
    );
}

#[test]
fn the_right_pin_pings() {
    let mut cfg = config(2);
    cfg.pin = Some(server_fingerprint());
    let mut sim = Sim::new(
        cfg,
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::Open,
        4,
    );
    sim.run(Duration::from_secs(10));
    assert_eq!(sim.failure(), None);
    assert_eq!(sim.summary().answered, 2);
}

#[test]
fn the_applications_verdict_decides_the_key() {
    for accept in [true, false] {
        let mut cfg = config(2);
        cfg.verify_key = true;
        let mut sim = Sim::new(
            cfg,
            LinkConfig::ideal(Duration::from_millis(5)),
            Server::Open,
            5,
        );
        sim.verdict = accept;
        sim.run(Duration::from_secs(10));
        let asked: Vec<PublicKey> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                Event::VerifyKey { key } => Some(*key),
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].fingerprint(), server_fingerprint());
        if accept {
            assert_eq!(sim.failure(), None);
            assert_eq!(sim.summary().answered, 2);
        } else {
            assert_eq!(
                sim.failure(),
                Some(&Failure::KeyRejected {
                    actual: server_fingerprint()
                })
            );
            assert_eq!(sim.summary().sent, 0);
        }
    }
}

#[test]
fn nobody_there_fails_after_the_timeout() {
    let mut cfg = config(3);
    cfg.timeout = Duration::from_secs(2);
    let mut sim = Sim::new(
        cfg,
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::Absent,
        6,
    );
    sim.run(Duration::from_secs(10));
    assert_eq!(
        sim.failure(),
        Some(&Failure::NoAnswer {
            waited: Duration::from_secs(2)
        })
    );
    assert!(!sim.failure().is_some_and(Failure::is_key_mismatch));
    // Failed at the timeout, and done at once: nobody there to wait for.
    assert_eq!(sim.elapsed(), Duration::from_secs(2));
    assert_eq!(sim.summary().sent, 0);
    assert_eq!(sim.summary().answer, None);
}

#[test]
fn a_peer_refusing_our_key_is_reported_before_any_probe() {
    let mut sim = Sim::new(
        config(3),
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::RefusesKeys,
        8,
    );
    sim.run(Duration::from_secs(10));
    assert_eq!(
        sim.failure(),
        Some(&Failure::PeerRefusedKey {
            reason: "key refused".into()
        })
    );
    assert!(!sim.events.iter().any(|e| matches!(
        e,
        Event::HandshakeDone { .. } | Event::Reply { .. } | Event::Lost { .. }
    )));
    assert_eq!(sim.summary().sent, 0);
    // It answered (its key, in its ACCEPT, two round trips in) before it refused ours: it is
    // up, which `chirp ping` says.
    let answer = sim.summary().answer.expect("the peer answered");
    assert!(
        close_to(answer, Duration::from_millis(20), Duration::from_millis(1)),
        "{answer:?}"
    );
}

#[test]
fn a_full_server_is_reported() {
    let mut sim = Sim::new(
        config(3),
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::Full,
        9,
    );
    sim.run(Duration::from_secs(10));
    assert!(
        matches!(sim.failure(), Some(Failure::ServerRefused { .. })),
        "{:?}",
        sim.failure()
    );
    assert!(
        sim.elapsed() < Duration::from_millis(100),
        "{:?}",
        sim.elapsed()
    );
}

#[test]
fn a_probe_without_an_answer_times_out() {
    // The path back goes dark for 3 s after the handshake: nothing can declare the probes
    // sent meanwhile lost, so their 1 s timeout does.
    let mut cfg = config(6);
    cfg.timeout = Duration::from_secs(1);
    let delay = Duration::from_millis(5);
    let mut sim = Sim::new(cfg, LinkConfig::ideal(delay), Server::Open, 10);
    // Up to the handshake (three round trips) and the first probe's answer.
    let until = sim.start + Duration::from_millis(100);
    while sim.now < until && sim.replies().is_empty() {
        let t = sim.now + Duration::from_millis(1);
        step_to(&mut sim, t);
    }
    assert_eq!(sim.replies().len(), 1, "{:#?}", sim.events);
    let dark = sim.now + Duration::from_secs(3);
    sim.path.b_to_a.blackout_until(dark);
    sim.run(Duration::from_secs(60));
    assert_consistent(&sim);
    let lost = sim.lost();
    assert!(
        lost.iter().any(|l| l.1 == LostReason::Timeout),
        "{lost:?}\n{:#?}",
        sim.events
    );
    let s = sim.summary();
    assert_eq!(s.sent, 6);
    // Probes sent after the path came back are answered.
    assert!(
        sim.replies().iter().any(|r| r.0 >= 5),
        "{:?}",
        sim.replies()
    );
}

/// Drives `sim` up to `t` (the same loop as `Sim::run`, bounded by `t`).
fn step_to(sim: &mut Sim, t: Instant) {
    loop {
        sim.drain();
        let next = [
            sim.pinger.poll_timeout(),
            sim.server.poll_timeout(),
            sim.path.a_to_b.next_delivery(),
            sim.path.b_to_a.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|&n| n <= t) else {
            sim.now = t.max(sim.now);
            return;
        };
        sim.now = next.max(sim.now);
        let now = sim.now;
        while let Some(d) = sim.path.a_to_b.poll_deliver(now) {
            sim.server.handle_datagram(now, PINGER.into(), &d);
        }
        while let Some(d) = sim.path.b_to_a.poll_deliver(now) {
            sim.pinger.handle_datagram(now, SERVER.into(), &d);
        }
        if sim.server.poll_timeout().is_some_and(|x| x <= now) {
            sim.server.handle_timeout(now);
        }
        if sim.pinger.poll_timeout().is_some_and(|x| x <= now) {
            sim.pinger.handle_timeout(now);
        }
    }
}

#[test]
fn stopping_ends_an_endless_run_with_its_figures() {
    let mut cfg = config(0);
    cfg.count = None;
    let mut sim = Sim::new(
        cfg,
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::Open,
        11,
    );
    // Handshake (30 ms), then probes at 0, 1, 2 and 3 s; stopped at 3.5 s.
    sim.stop_at = Some(sim.start + Duration::from_millis(3500));
    sim.run(Duration::from_secs(10));
    assert_eq!(sim.failure(), None);
    assert_consistent(&sim);
    let s = sim.summary();
    assert_eq!((s.sent, s.answered, s.lost), (4, 4, 0), "{s:?}");
}

#[test]
fn a_handshake_that_does_not_complete_is_told_from_nobody_there() {
    let mut cfg = config(3);
    cfg.timeout = Duration::from_secs(2);
    let mut sim = Sim::new(
        cfg,
        LinkConfig::ideal(Duration::from_millis(5)),
        Server::Undecided,
        12,
    );
    sim.run(Duration::from_secs(10));
    assert_eq!(
        sim.failure(),
        Some(&Failure::HandshakeIncomplete {
            waited: Duration::from_secs(2)
        })
    );
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, Event::HandshakeDone { .. }))
    );
    assert_eq!(sim.summary().sent, 0);
    assert!(sim.summary().answer.is_some(), "someone proved its key");
    // Someone is there: the CLOSE is given its closing period, not dropped at once.
    assert!(
        sim.elapsed() > Duration::from_secs(2),
        "{:?}",
        sim.elapsed()
    );
}
