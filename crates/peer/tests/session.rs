//! The peer session driven over two real protocol endpoints in `chirp-netsim`'s virtual time:
//! the half-close at end of input, a peer that leaves while the other stays, a restarted peer
//! whose connection replaces the old one (what the old one never got acknowledged is sent again
//! exactly once, in order), whether it speaks first or not, key questions answered yes or no,
//! and a third endpoint holding one partner's key (`chirp ping --as-me`) that pings the other
//! in the middle of the chat, or while it has none, without taking it over.
//!
//! The harness plays the driver's part: it carries out each [`Transport`] request on the
//! node's endpoint and hands the reply straight back, as `chirp peer` does over its transport.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_files::FileEvent;
use chirp_keys::{Identity, PublicKey};
use chirp_netsim::{LinkConfig, Node, Pair, Path, Side};
use chirp_peer::{
    Config, Input, KeyPolicy, Output, PeerVerdict, Remember, Reply, Report, Session, Transport,
};
use chirp_proto::{
    ConnectionHandle, Endpoint, EndpointConfig, Event, PingOutcome, close_code,
    handshake::StaticSecret,
};

/// Idle timeout of both sessions' endpoints (the transport's default, which `pair` keeps).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An in-memory key policy with the rules of `chirp peer`'s: the key remembered for `to`
/// decides; else a key from exactly `to` is remembered; else the user is asked.
#[derive(Default)]
struct Policy {
    known: HashMap<SocketAddr, PublicKey>,
}

impl KeyPolicy for Policy {
    fn verdict(&mut self, to: SocketAddr, remote: SocketAddr, key: PublicKey) -> PeerVerdict {
        match self.known.get(&to) {
            Some(k) if *k == key => PeerVerdict::Accept(None),
            Some(_) => PeerVerdict::Refuse {
                reason: "another key is remembered".into(),
                fatal: remote == to,
            },
            None if remote == to => {
                self.known.insert(to, key);
                PeerVerdict::Accept(Some("first contact".into()))
            }
            None => PeerVerdict::Ask,
        }
    }
}

impl Remember for Policy {
    fn remember(&mut self, to: SocketAddr, key: PublicKey) -> Result<String, String> {
        self.known.insert(to, key);
        Ok("in memory".into())
    }
}

/// One `chirp peer`: its session and what it told the user.
struct Peer {
    session: Session<Policy>,
    reports: Vec<Report>,
    exit: Option<u8>,
    /// Files the session asked to have hashed (`Output::HashFile`), for the test to carry out.
    hash_jobs: Vec<(std::path::PathBuf, u32)>,
    /// Received files the session asked to have saved (`Output::FinishFile`), likewise.
    finish_jobs: Vec<chirp_files::Finish>,
    /// Partial files the session asked to have checked (`Output::CheckFile`), likewise.
    check_jobs: Vec<chirp_files::Check>,
}

impl Peer {
    fn new(to: SocketAddr, can_ask: bool) -> Self {
        let config = Config {
            to,
            idle_timeout: IDLE_TIMEOUT,
            can_ask,
        };
        Self {
            session: Session::new(config, Policy::default()),
            reports: Vec::new(),
            exit: None,
            hash_jobs: Vec::new(),
            finish_jobs: Vec::new(),
            check_jobs: Vec::new(),
        }
    }

    fn messages(&self) -> Vec<Bytes> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Message { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    fn delivered(&self) -> Vec<u64> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Delivered(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn has(&self, f: impl Fn(&Report) -> bool) -> bool {
        self.reports.iter().any(f)
    }

    fn errors(&self) -> Vec<String> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Error(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many times it said the peer is up, and down.
    fn ups_and_downs(&self) -> (usize, usize) {
        let count = |f: fn(&Report) -> bool| self.reports.iter().filter(|r| f(r)).count();
        (
            count(|r| matches!(r, Report::Up { .. })),
            count(|r| matches!(r, Report::Down { .. })),
        )
    }

    /// The `from` of every message, in order.
    fn senders(&self) -> Vec<String> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Message { from, .. } => Some(from.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Carries out one request on `ep`, as `chirp peer`'s driver does over its transport.
fn execute(ep: &mut Endpoint, now: Instant, t: Transport) -> Option<Reply> {
    match t {
        Transport::Connect { to } => Some(Reply::Connect(
            ep.find_open(to).map_or_else(|| ep.connect(now, to), Ok),
        )),
        Transport::Send { conn, data } => Some(Reply::Send(ep.send(conn, &data))),
        Transport::SendBulk { conn, data } => Some(Reply::Send(ep.send_bulk(conn, data))),
        Transport::Finish { conn } => Some(Reply::Finish(ep.finish(conn))),
        Transport::Stats { conn } => Some(Reply::Stats(ep.stats(conn).map(Box::new))),
        Transport::Close { conn, code, reason } => {
            ep.close(now, conn, code, &reason);
            None
        }
        Transport::Abort { conn, code, reason } => {
            ep.abort(now, conn, code, &reason);
            None
        }
        Transport::VerifyKey { conn, accept: true } => {
            ep.accept_key(now, conn);
            None
        }
        Transport::VerifyKey {
            conn,
            accept: false,
        } => {
            ep.refuse_key(now, conn);
            None
        }
        Transport::SetAcceptIncoming(accept) => {
            ep.set_accept_incoming(accept);
            None
        }
    }
}

/// Feeds the node's events to the session and carries out its output, until both are done.
/// Whether there was anything to do.
fn settle(node: &mut Node, peer: &mut Peer, now: Instant) -> bool {
    let mut any = false;
    loop {
        let mut busy = false;
        while let Some(ev) = node.events.pop_front() {
            busy = true;
            peer.session.handle_event(now, ev);
        }
        while let Some(out) = peer.session.poll_output() {
            busy = true;
            match out {
                Output::Transport(t) => {
                    if let Some(reply) = execute(&mut node.endpoint, now, t) {
                        peer.session.handle_reply(now, reply);
                    }
                }
                Output::Report(r) => peer.reports.push(r),
                Output::Exit { code, .. } => peer.exit = Some(code),
                Output::Fatal(text) => panic!("fatal: {text}"),
                Output::HashFile { path, chunk_size } => peer.hash_jobs.push((path, chunk_size)),
                Output::FinishFile(f) => peer.finish_jobs.push(f),
                Output::CheckFile(c) => peer.check_jobs.push(c),
            }
        }
        if !busy {
            return any;
        }
        any = true;
    }
}

fn input(p: &Pair, peer: &mut Peer, i: Input) {
    peer.session.handle_input(p.now, i);
}

/// Runs the network and both sessions until `done`, for at most `budget` of virtual time.
fn drive(
    p: &mut Pair,
    a: &mut Peer,
    b: &mut Peer,
    budget: Duration,
    done: impl FnMut(&Peer, &Peer) -> bool,
) {
    let deadline = p.now + budget;
    assert!(
        run_until(p, a, b, deadline, done),
        "not done within {budget:?}\nA: {:?}\nB: {:?}",
        a.reports,
        b.reports
    );
}

/// Runs the network and both sessions for `d` of virtual time.
fn run_for(p: &mut Pair, a: &mut Peer, b: &mut Peer, d: Duration) {
    let deadline = p.now + d;
    run_until(p, a, b, deadline, |_, _| false);
}

/// Runs until `done` (true) or `deadline` (false).
fn run_until(
    p: &mut Pair,
    a: &mut Peer,
    b: &mut Peer,
    deadline: Instant,
    done: impl FnMut(&Peer, &Peer) -> bool,
) -> bool {
    run_with(p, a, b, None, deadline, done)
}

/// Runs the network, both sessions and `third` (if any) until `done` (true) or `deadline`
/// (false).
///
/// Each instant is run to its end before the clock moves, as `chirp peer`'s driver does: the
/// datagrams and timers due, then the sessions' events and requests, then what those requests
/// sent, until nothing more happens at that instant. (Moving the clock first would leave the
/// events of an instant's last packets to the next thing that happens, which may be a second
/// later: an acknowledgement seen then looks a second late.)
fn run_with(
    p: &mut Pair,
    a: &mut Peer,
    b: &mut Peer,
    mut third: Option<&mut Pinger>,
    deadline: Instant,
    mut done: impl FnMut(&Peer, &Peer) -> bool,
) -> bool {
    let mut spins = 0u32;
    loop {
        let now = p.now;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            assert!(rounds < 10_000, "busy loop at {:?}", p.elapsed());
            if let Some(t) = third.as_deref_mut() {
                t.exchange(p);
            }
            // Everything due now, without moving the clock.
            p.step_until(now).expect("the network makes progress");
            let mut busy = settle(&mut p.a, a, now);
            busy |= settle(&mut p.b, b, now);
            for peer in [&mut *a, &mut *b] {
                if peer.session.poll_timeout().is_some_and(|t| t <= now) {
                    peer.session.handle_timeout(now);
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        if done(a, b) {
            return true;
        }
        if now >= deadline {
            return false;
        }
        let next = [
            p.next_wakeup(),
            a.session.poll_timeout(),
            b.session.poll_timeout(),
            third.as_deref().and_then(Pinger::wakeup),
        ]
        .into_iter()
        .flatten()
        .fold(deadline, Instant::min);
        if next > now {
            spins = 0;
            p.now = next;
        } else {
            // Something is due now that the round above did not take (the third's wakeup,
            // say): go round again, a bounded number of times.
            spins += 1;
            assert!(spins < 10_000, "busy loop at {:?}", p.elapsed());
        }
    }
}

/// What a [`Pinger`] does: `runs` connections one after the other, each with `pings` PINGs
/// `interval` apart and then a close, as `chirp ping -c PINGS -i INTERVAL` run `runs` times.
#[derive(Clone, Copy)]
struct Runs {
    runs: u32,
    pings: u32,
    interval: Duration,
}

/// `chirp ping --as-me` run by A's user against B, in the middle of their chat: a third
/// endpoint on A's IP at another port, with A's key (so B's policy takes it), on a link of its
/// own to B. It does its [`Runs`], and never sends a message.
struct Pinger {
    endpoint: Endpoint,
    addr: SocketAddr,
    to: SocketAddr,
    /// Pinger → B (`a_to_b`) and B → pinger (`b_to_a`).
    path: Path,
    /// What is left to do (`runs` counts the runs not yet started).
    plan: Runs,
    conn: Option<ConnectionHandle>,
    /// PINGs sent on the current connection.
    sent: u32,
    next_ping: Option<Instant>,
    next_run: Option<Instant>,
    /// Connections that came up.
    handshakes: u32,
    /// PINGs acknowledged, over all runs.
    acked: u32,
    /// Chat messages received: a peer that took it for its partner would send them here.
    messages: u32,
    /// Connections that ended other than by our own close.
    failures: Vec<String>,
}

impl Pinger {
    /// Starts its first run at `p.now`; B's datagrams to it are taken from `p.elsewhere`.
    fn start(
        p: &mut Pair,
        identity: StaticSecret,
        plan: Runs,
        link: LinkConfig,
        seed: u64,
    ) -> Self {
        p.elsewhere = Some(VecDeque::new());
        let config = EndpointConfig {
            identity: Some(identity),
            accept_incoming: false,
            ..EndpointConfig::default()
        };
        Self {
            endpoint: Endpoint::new(config, seed ^ 0xc),
            addr: SocketAddr::new(p.a.addr.ip(), p.a.addr.port() + 1),
            to: p.b.addr,
            path: Path::symmetric(link, seed ^ 0xc),
            plan,
            conn: None,
            sent: 0,
            next_ping: None,
            next_run: Some(p.now),
            handshakes: 0,
            acked: 0,
            messages: 0,
            failures: Vec::new(),
        }
    }

    /// Every run done and its connection gone.
    fn done(&self) -> bool {
        self.plan.runs == 0
            && self.next_run.is_none()
            && self.conn.is_none()
            && self.endpoint.poll_timeout().is_none()
    }

    fn wakeup(&self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.path.a_to_b.next_delivery(),
            self.path.b_to_a.next_delivery(),
            self.next_ping,
            self.next_run,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Everything due at `p.now`: datagrams both ways, timers, events.
    fn exchange(&mut self, p: &mut Pair) {
        let now = p.now;
        if let Some(out) = p.elsewhere.as_mut() {
            for (side, t) in out.drain(..) {
                if side == Side::B && t.destination == self.addr {
                    self.path.b_to_a.send(now, t.contents);
                }
            }
        }
        while let Some(d) = self.path.a_to_b.poll_deliver(now) {
            p.b.endpoint.handle_datagram(now, self.addr, &d);
        }
        while let Some(d) = self.path.b_to_a.poll_deliver(now) {
            self.endpoint.handle_datagram(now, self.to, &d);
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        if self.next_run.is_some_and(|t| t <= now) && self.plan.runs > 0 {
            self.next_run = None;
            self.plan.runs -= 1;
            self.sent = 0;
            self.conn = Some(self.endpoint.connect(now, self.to).expect("room"));
        }
        if let Some(conn) = self
            .conn
            .filter(|_| self.next_ping.is_some_and(|t| t <= now))
        {
            if self.sent < self.plan.pings {
                // Refused only while the connection ends, which its Closed reports.
                let _ = self.endpoint.ping(conn);
                self.sent += 1;
                self.next_ping = Some(now + self.plan.interval);
            } else {
                // The last one has had an interval to be answered.
                self.next_ping = None;
                self.endpoint
                    .close(now, conn, close_code::NO_ERROR, "ping done");
            }
        }
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::Connected { .. } => {
                    self.handshakes += 1;
                    self.next_ping = Some(now);
                }
                Event::Ping {
                    outcome: PingOutcome::Acked { .. },
                    ..
                } => self.acked += 1,
                Event::Message { .. } => self.messages += 1,
                Event::Closed { reason, .. } => {
                    if !matches!(reason, chirp_proto::CloseReason::Local) {
                        self.failures.push(format!("{reason:?}"));
                    }
                    self.conn = None;
                    self.next_ping = None;
                    if self.plan.runs > 0 {
                        self.next_run = Some(now + self.plan.interval);
                    }
                }
                _ => {}
            }
        }
        while let Some(t) = self.endpoint.poll_transmit(now) {
            assert_eq!(t.destination, self.to);
            self.path.a_to_b.send(now, t.contents);
        }
    }
}

/// Two endpoints configured as `chirp peer` configures its own, each allowing only the
/// other's IP, with fresh identities.
fn pair(link: LinkConfig, seed: u64) -> Pair {
    let config = |peer_ip: [u8; 4]| EndpointConfig {
        identity: Some(StaticSecret(*Identity::generate().expect("key").secret())),
        accept_only_from: Some(peer_ip.into()),
        verify_keys: true,
        max_connections: 4,
        ..EndpointConfig::default()
    };
    // The harness puts A on 10.0.0.1:4000 and B on 10.0.0.2:5000.
    let a = config([10, 0, 0, 2]);
    let b = config([10, 0, 0, 1]);
    Pair::with_path(a, b, Path::symmetric(link, seed), seed)
}

fn impaired() -> LinkConfig {
    LinkConfig::ideal(Duration::from_millis(5))
        .with_loss(0.20)
        .with_duplicate(0.05)
        .with_reorder(0.10, Duration::from_millis(10))
        .with_corrupt(0.01)
}

fn line(tag: char, i: u64) -> Bytes {
    Bytes::from(format!("{tag} {i:04} {}", "x".repeat((i % 50) as usize)))
}

fn send(p: &Pair, peer: &mut Peer, tag: char, ids: std::ops::Range<u64>) {
    for i in ids {
        input(
            p,
            peer,
            Input::Send {
                data: line(tag, i),
                local_id: Some(i),
            },
        );
    }
}

#[test]
fn both_reach_end_of_input_at_once_and_everything_arrives() {
    const N: u64 = 1000;
    for seed in 1..=5 {
        let mut p = pair(impaired(), seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
        send(&p, &mut a, 'a', 0..N);
        send(&p, &mut b, 'b', 0..N);
        input(&p, &mut a, Input::EndOfInput);
        input(&p, &mut b, Input::EndOfInput);
        drive(&mut p, &mut a, &mut b, Duration::from_secs(120), |a, b| {
            a.exit.is_some() && b.exit.is_some()
        });
        for (name, me, from) in [("A", &a, 'b'), ("B", &b, 'a')] {
            let want: Vec<Bytes> = (0..N).map(|i| line(from, i)).collect();
            assert!(
                me.messages() == want,
                "seed {seed}: {name} received wrong lines"
            );
            assert_eq!(
                me.delivered(),
                (0..N).collect::<Vec<_>>(),
                "seed {seed}: {name}"
            );
            assert_eq!(me.exit, Some(0), "seed {seed}: {name}: {:?}", me.errors());
            assert!(
                me.errors().is_empty(),
                "seed {seed}: {name}: {:?}",
                me.errors()
            );
        }
    }
}

/// `chirp peer`'s test 3 in virtual time: A sends and reaches end of input while B's user
/// stays; B, idle, finishes too, shows A as left, and A exits 0. B's own end of input, with
/// A gone, then ends B at once with 0.
#[test]
fn a_peer_that_leaves_while_the_other_stays() {
    let mut p = pair(impaired(), 3);
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    send(&p, &mut a, 'a', 0..50);
    input(&p, &mut a, Input::EndOfInput);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, _| {
        a.exit.is_some()
    });
    assert_eq!(a.exit, Some(0), "{:?}", a.errors());
    assert_eq!(b.messages().len(), 50);
    assert!(b.has(|r| matches!(r, Report::Down { reason, .. } if reason == "left")));
    let t = p.now;
    input(&p, &mut b, Input::EndOfInput);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
        b.exit.is_some()
    });
    assert_eq!(b.exit, Some(0), "{:?}", b.errors());
    assert!(p.now - t < Duration::from_secs(3), "B took {:?}", p.now - t);
}

/// A half-closed side keeps receiving: B reaches end of input first, A goes on sending for a
/// while (a script with more to say), and B gets all of it before both exit 0.
#[test]
fn a_finished_side_keeps_receiving_until_the_other_finishes() {
    let mut p = pair(impaired(), 4);
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    send(&p, &mut b, 'b', 0..10);
    input(&p, &mut b, Input::EndOfInput);
    // A types a line every 200 ms: never idle for the second that would make it finish.
    for i in 0..30 {
        send(&p, &mut a, 'a', i..i + 1);
        run_for(&mut p, &mut a, &mut b, Duration::from_millis(200));
    }
    input(&p, &mut a, Input::EndOfInput);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, b| {
        a.exit.is_some() && b.exit.is_some()
    });
    assert_eq!(
        b.messages(),
        (0..30).map(|i| line('a', i)).collect::<Vec<_>>()
    );
    assert_eq!(
        a.messages(),
        (0..10).map(|i| line('b', i)).collect::<Vec<_>>()
    );
    assert_eq!(
        (a.exit, b.exit),
        (Some(0), Some(0)),
        "{:?} {:?}",
        a.errors(),
        b.errors()
    );
}

/// The peer restarts (its process dies without a word, and a new one starts on the same
/// address with the same key): its new connection replaces the old, and the lines the old
/// one never got acknowledged are sent again on it, exactly once and in order, before the
/// lines typed since.
#[test]
fn a_restarted_peer_gets_what_the_old_connection_lost_exactly_once_in_order() {
    let link = LinkConfig::ideal(Duration::from_millis(5)).with_loss(0.1);
    let mut p = pair(link, 5);
    let b_identity = p.b.endpoint.config().clone();
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    send(&p, &mut a, 'a', 0..20);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(30), |a, _| {
        a.delivered().len() == 20
    });
    assert_eq!(b.messages().len(), 20);
    // B dies: nothing of A's next lines reaches it.
    p.path
        .a_to_b
        .blackout_until(p.now + Duration::from_millis(300));
    send(&p, &mut a, 'a', 20..40);
    run_for(&mut p, &mut a, &mut b, Duration::from_millis(100));
    // A new B on the same address, with the same key, knowing A's key.
    p.b.endpoint = Endpoint::new(b_identity, 99);
    p.b.events.clear();
    let mut b2 = Peer::new(a_addr, false);
    send(&p, &mut a, 'a', 40..45);
    drive(&mut p, &mut a, &mut b2, Duration::from_secs(60), |a, _| {
        a.delivered().len() == 45
    });
    assert_eq!(
        b2.messages(),
        (20..45).map(|i| line('a', i)).collect::<Vec<_>>(),
        "the lost lines, once each and in order, then the new ones"
    );
    let mut ids = a.delivered();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..45).collect::<Vec<_>>(),
        "every line delivered once"
    );
    assert!(
        a.has(|r| matches!(r, Report::Down { .. })),
        "{:?}",
        a.reports
    );
    assert!(
        a.reports
            .iter()
            .filter(|r| matches!(r, Report::Up { .. }))
            .count()
            >= 2
    );
    // Both leave cleanly.
    input(&p, &mut a, Input::EndOfInput);
    input(&p, &mut b2, Input::EndOfInput);
    drive(&mut p, &mut a, &mut b2, Duration::from_secs(60), |a, b| {
        a.exit.is_some() && b.exit.is_some()
    });
    assert_eq!((a.exit, b2.exit), (Some(0), Some(0)));
}

/// B's key arrives from another port than the one A was given (a port-changing NAT, or a
/// stranger): A asks; yes lets the chat go on and remembers the key, no refuses it.
#[test]
fn key_questions_answered_yes_and_no() {
    for yes in [true, false] {
        let mut p = pair(LinkConfig::ideal(Duration::from_millis(5)), 6);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        // A was told another port of B's IP.
        let told = SocketAddr::new(b_addr.ip(), b_addr.port() + 1);
        let (mut a, mut b) = (Peer::new(told, true), Peer::new(a_addr, false));
        drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |a, _| {
            a.has(|r| matches!(r, Report::AskKey { .. }))
        });
        input(&p, &mut a, Input::KeyAnswer(yes));
        if yes {
            drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |a, b| {
                a.has(|r| matches!(r, Report::Up { .. }))
                    && b.has(|r| matches!(r, Report::Up { .. }))
            });
            send(&p, &mut b, 'b', 0..1);
            drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |a, _| {
                a.messages().len() == 1
            });
            assert!(a.has(|r| matches!(r, Report::Status(t) if t.contains("remembered"))));
        } else {
            // B hears of it: as an error if its handshake had not finished, else as the
            // link going down.
            let refused = |r: &Report| match r {
                Report::Error(t) | Report::Down { reason: t, .. } => t.contains("refused our key"),
                _ => false,
            };
            drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |_, b| {
                b.has(refused)
            });
            assert!(a.has(|r| matches!(r, Report::Status(t) if t.starts_with("refused key"))));
            assert!(!a.has(|r| matches!(r, Report::Up { .. })));
        }
    }
}

/// The identity `pair` gave A's endpoint.
fn identity_of(node: &Node) -> StaticSecret {
    node.endpoint
        .config()
        .identity
        .clone()
        .expect("pair gives every endpoint its identity")
}

/// Types one line on each side every `gap` (`n` each), while the network (and `third`) runs.
fn chat_both_ways(
    p: &mut Pair,
    a: &mut Peer,
    b: &mut Peer,
    mut third: Option<&mut Pinger>,
    ids: std::ops::Range<u64>,
    gap: Duration,
) {
    for i in ids {
        send(p, a, 'a', i..i + 1);
        send(p, b, 'b', i..i + 1);
        let until = p.now + gap;
        run_with(p, a, b, third.as_deref_mut(), until, |_, _| false);
    }
}

/// A and B (peers of a fresh pair on `link`) type ten lines each, 10 ms apart, until all are
/// acknowledged. Also returns B's endpoint configuration with `stateless_reset` as given, for
/// [`restart_b`].
fn ten_lines_each_way(
    link: LinkConfig,
    seed: u64,
    stateless_reset: bool,
) -> (Pair, Peer, Peer, EndpointConfig) {
    let mut p = pair(link, seed);
    let b_config = EndpointConfig {
        stateless_reset,
        ..p.b.endpoint.config().clone()
    };
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    let gap = Duration::from_millis(10);
    chat_both_ways(&mut p, &mut a, &mut b, None, 0..10, gap);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |a, b| {
        a.delivered().len() == 10 && b.delivered().len() == 10
    });
    (p, a, b, b_config)
}

/// B restarts: a new endpoint (`config`, `seed`) on B's address, with B's key, and a new
/// session, B2, driven until it is up with A.
fn restart_b(p: &mut Pair, a: &mut Peer, config: EndpointConfig, seed: u64) -> Peer {
    p.b.endpoint = Endpoint::new(config, seed);
    p.b.events.clear();
    let mut b2 = Peer::new(p.a.addr, false);
    drive(p, a, &mut b2, Duration::from_secs(10), |_, b2| {
        b2.ups_and_downs().0 == 1
    });
    b2
}

/// A's user runs `chirp ping --as-me` against B in the middle of a burst of lines both ways:
/// five pings in a row, each a fresh connection with A's key, which B's policy accepts and
/// whose PINGs B answers. B keeps the chat on its connection with A: every line arrives once
/// and in order on both sides, neither side sees the peer go down or come up again, and the
/// pinger gets no chat message.
#[test]
fn a_ping_with_the_partners_key_leaves_the_chat_alone() {
    const N: u64 = 300;
    const RUNS: u32 = 5;
    const PINGS: u32 = 10;
    for seed in 1..=3 {
        let mut p = pair(impaired(), seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
        drive(&mut p, &mut a, &mut b, Duration::from_secs(30), |a, b| {
            a.ups_and_downs().0 == 1 && b.ups_and_downs().0 == 1
        });
        let plan = Runs {
            runs: RUNS,
            pings: PINGS,
            interval: Duration::from_millis(40),
        };
        let link = LinkConfig::ideal(Duration::from_millis(3));
        let a_key = identity_of(&p.a);
        let mut pinger = Pinger::start(&mut p, a_key, plan, link, seed);
        // 300 lines each way, 10 ms apart: 3 s, over which the five pings (about 0.5 s each)
        // come and go.
        chat_both_ways(
            &mut p,
            &mut a,
            &mut b,
            Some(&mut pinger),
            0..N,
            Duration::from_millis(10),
        );
        let deadline = p.now + Duration::from_secs(60);
        let all_in = run_with(
            &mut p,
            &mut a,
            &mut b,
            Some(&mut pinger),
            deadline,
            |a, b| a.delivered().len() == N as usize && b.delivered().len() == N as usize,
        );
        assert!(
            all_in,
            "seed {seed}: not delivered\nA: {:?}\nB: {:?}",
            a.reports, b.reports
        );
        let until = p.now + Duration::from_secs(10);
        run_with(&mut p, &mut a, &mut b, Some(&mut pinger), until, |_, _| {
            false
        });
        assert!(pinger.done(), "seed {seed}: the pinger did not finish");

        assert_eq!(
            pinger.handshakes, RUNS,
            "seed {seed}: {:?}",
            pinger.failures
        );
        assert!(
            pinger.failures.is_empty(),
            "seed {seed}: {:?}",
            pinger.failures
        );
        assert_eq!(
            pinger.acked,
            RUNS * PINGS,
            "seed {seed}: B took the pinger's key and answered every PING"
        );
        assert_eq!(
            pinger.messages, 0,
            "seed {seed}: B sent chat lines to the pinger"
        );
        for (name, me, from, other) in [("A", &a, 'b', b_addr), ("B", &b, 'a', a_addr)] {
            let want: Vec<Bytes> = (0..N).map(|i| line(from, i)).collect();
            assert!(
                me.messages() == want,
                "seed {seed}: {name} received wrong lines"
            );
            assert!(
                me.senders().iter().all(|f| *f == other.to_string()),
                "seed {seed}: {name}: a line came from elsewhere than the chat's connection"
            );
            assert_eq!(
                me.delivered(),
                (0..N).collect::<Vec<_>>(),
                "seed {seed}: {name}"
            );
            assert_eq!(
                me.ups_and_downs(),
                (1, 0),
                "seed {seed}: {name}: the chat's connection was replaced"
            );
            assert!(
                me.errors().is_empty(),
                "seed {seed}: {name}: {:?}",
                me.errors()
            );
        }
    }
}

/// A goes away for good while A's user pings B with A's key (one long ping from another port).
/// B's connection with A dies of its idle timeout; the ping's connection, set aside, is not
/// taken for A (it came from another port, and carried no message): the lines B types then
/// wait, and reach A when A comes back, instead of going to the pinger.
#[test]
fn a_ping_is_not_taken_for_a_partner_that_went_away() {
    let mut p = pair(LinkConfig::ideal(Duration::from_millis(5)), 7);
    let a_config = p.a.endpoint.config().clone();
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    chat_both_ways(
        &mut p,
        &mut a,
        &mut b,
        None,
        0..5,
        Duration::from_millis(10),
    );
    drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |a, b| {
        a.delivered().len() == 5 && b.delivered().len() == 5
    });
    // A ping of 60 s, every 200 ms.
    let plan = Runs {
        runs: 1,
        pings: 300,
        interval: Duration::from_millis(200),
    };
    let link = LinkConfig::ideal(Duration::from_millis(3));
    let a_key = identity_of(&p.a);
    let mut pinger = Pinger::start(&mut p, a_key, plan, link, 7);
    let until = p.now + Duration::from_secs(1);
    run_with(&mut p, &mut a, &mut b, Some(&mut pinger), until, |_, _| {
        false
    });
    assert_eq!(pinger.handshakes, 1, "{:?}", pinger.failures);
    // A's host goes dark: nothing more from A, nor to it.
    let outage = p.now + Duration::from_secs(3600);
    p.path.a_to_b.blackout_until(outage);
    p.path.b_to_a.blackout_until(outage);
    let deadline = p.now + IDLE_TIMEOUT + Duration::from_secs(5);
    let down = run_with(
        &mut p,
        &mut a,
        &mut b,
        Some(&mut pinger),
        deadline,
        |_, b| b.ups_and_downs().1 == 1,
    );
    assert!(down, "B never noticed that A went away: {:?}", b.reports);
    send(&p, &mut b, 'b', 5..10);
    let until = p.now + Duration::from_secs(10);
    run_with(&mut p, &mut a, &mut b, Some(&mut pinger), until, |_, _| {
        false
    });
    assert_eq!(pinger.messages, 0, "B sent its lines to the pinger");
    assert!(pinger.acked > 100, "the pinger was answered all along");
    assert_eq!(b.ups_and_downs(), (1, 1), "{:?}", b.reports);
    // A comes back (the same key and address, a new process): B's lines reach it.
    p.path.a_to_b.blackout_until(p.now);
    p.path.b_to_a.blackout_until(p.now);
    p.a.endpoint = Endpoint::new(a_config, 70);
    p.a.events.clear();
    let mut a2 = Peer::new(b_addr, false);
    let deadline = p.now + Duration::from_secs(30);
    let got = run_with(
        &mut p,
        &mut a2,
        &mut b,
        Some(&mut pinger),
        deadline,
        |a2, b| a2.messages().len() == 5 && b.delivered().len() == 10,
    );
    assert!(got, "A2: {:?}\nB: {:?}", a2.reports, b.reports);
    assert_eq!(
        a2.messages(),
        (5..10).map(|i| line('b', i)).collect::<Vec<_>>()
    );
    assert_eq!(pinger.messages, 0);
}

/// B is not in a chat: A went away (B noticed, by its idle timeout) when A's user pings B with
/// A's key from another port. The ping's connection comes up while B has none, but it is not
/// taken for A: it came from neither A's address nor the one B was given, and said no HELLO
/// (nor anything else). B answers every PING, says nothing of the ping to its user (no "up"),
/// and the lines B types meanwhile wait, and reach A when A comes back, instead of going to
/// the pinger.
#[test]
fn a_ping_to_a_peer_not_in_a_chat_is_not_taken_for_its_partner() {
    for seed in 1..=3 {
        let mut p = pair(LinkConfig::ideal(Duration::from_millis(5)), seed);
        let a_config = p.a.endpoint.config().clone();
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
        chat_both_ways(
            &mut p,
            &mut a,
            &mut b,
            None,
            0..3,
            Duration::from_millis(10),
        );
        drive(&mut p, &mut a, &mut b, Duration::from_secs(10), |a, b| {
            a.delivered().len() == 3 && b.delivered().len() == 3
        });
        // A's host goes dark, and B notices.
        let outage = p.now + Duration::from_secs(3600);
        p.path.a_to_b.blackout_until(outage);
        p.path.b_to_a.blackout_until(outage);
        let deadline = p.now + IDLE_TIMEOUT + Duration::from_secs(5);
        let down = run_until(&mut p, &mut a, &mut b, deadline, |_, b| {
            b.ups_and_downs().1 == 1
        });
        assert!(down, "seed {seed}: B never noticed: {:?}", b.reports);
        // Now A's user pings B with A's key: 50 PINGs, 100 ms apart, on a path of its own.
        let plan = Runs {
            runs: 1,
            pings: 50,
            interval: Duration::from_millis(100),
        };
        let link = LinkConfig::ideal(Duration::from_millis(3));
        let a_key = identity_of(&p.a);
        let mut pinger = Pinger::start(&mut p, a_key, plan, link, seed);
        let until = p.now + Duration::from_secs(1);
        run_with(&mut p, &mut a, &mut b, Some(&mut pinger), until, |_, _| {
            false
        });
        assert_eq!(pinger.handshakes, 1, "seed {seed}: {:?}", pinger.failures);
        send(&p, &mut b, 'b', 3..8);
        let until = p.now + Duration::from_secs(5);
        run_with(&mut p, &mut a, &mut b, Some(&mut pinger), until, |_, _| {
            false
        });
        assert!(pinger.done(), "seed {seed}: the pinger did not finish");
        assert!(
            pinger.failures.is_empty(),
            "seed {seed}: {:?}",
            pinger.failures
        );
        assert_eq!(pinger.acked, 50, "seed {seed}: B answered every PING");
        assert_eq!(
            pinger.messages, 0,
            "seed {seed}: B sent its lines to the pinger"
        );
        assert_eq!(
            b.ups_and_downs(),
            (1, 1),
            "seed {seed}: B took the ping for A: {:?}",
            b.reports
        );
        assert_eq!(b.delivered(), (0..3).collect::<Vec<_>>(), "seed {seed}");
        // A comes back (the same key and address, a new process): B's lines reach it.
        p.path.a_to_b.blackout_until(p.now);
        p.path.b_to_a.blackout_until(p.now);
        p.a.endpoint = Endpoint::new(a_config, 70 + seed);
        p.a.events.clear();
        let mut a2 = Peer::new(b_addr, false);
        drive(&mut p, &mut a2, &mut b, Duration::from_secs(30), |a2, b| {
            a2.messages().len() == 5 && b.delivered().len() == 8
        });
        assert_eq!(
            a2.messages(),
            (3..8).map(|i| line('b', i)).collect::<Vec<_>>(),
            "seed {seed}"
        );
        assert_eq!(b.ups_and_downs(), (2, 1), "seed {seed}: {:?}", b.reports);
    }
}

/// B restarts (same key, same address; the old process dies without a word) and its new
/// process connects to A, which has no reason yet to think its connection dead: the new one is
/// set aside, and A's lines keep going to the old one (unacknowledged). B2 sends a line: that
/// proves the new connection to be B's chat, and A moves to it at once, re-sending what the old
/// one never got acknowledged. B2's endpoint answers no stray packet with a RESET here, so the
/// old connection could only have ended by A's 30 s idle timeout: the move within a second is
/// the line's doing. Nothing is lost either way.
#[test]
fn a_restarted_partner_that_speaks_first_is_adopted_and_nothing_is_lost() {
    for seed in 1..=3 {
        let link = LinkConfig::ideal(Duration::from_millis(5)).with_loss(0.05);
        let (mut p, mut a, mut b, b_config) = ten_lines_each_way(link, seed, false);
        // B dies: what A sends now never reaches it.
        p.path
            .a_to_b
            .blackout_until(p.now + Duration::from_millis(200));
        send(&p, &mut a, 'a', 10..15);
        run_for(&mut p, &mut a, &mut b, Duration::from_millis(100));
        // B2: the same address and key, a new endpoint.
        let mut b2 = restart_b(&mut p, &mut a, b_config, seed ^ 0x99);
        // B2 is up, but silent: A does not move yet, and its new lines go to the old one.
        run_for(&mut p, &mut a, &mut b2, Duration::from_secs(2));
        send(&p, &mut a, 'a', 15..20);
        run_for(&mut p, &mut a, &mut b2, Duration::from_millis(200));
        assert_eq!(a.ups_and_downs(), (1, 0), "seed {seed}: {:?}", a.reports);
        assert!(b2.messages().is_empty(), "seed {seed}");
        // B2 speaks.
        let spoke = p.now;
        send(&p, &mut b2, 'c', 0..1);
        drive(&mut p, &mut a, &mut b2, Duration::from_secs(60), |a, b2| {
            a.delivered().len() == 20 && b2.delivered().len() == 1
        });
        assert!(
            p.now - spoke < Duration::from_secs(1),
            "seed {seed}: A took {:?} to move to B2's connection",
            p.now - spoke
        );
        // And at the pace of the network: a few round trips of 10 ms, not a timer's wait.
        // (A second late once: the harness handed the sessions an instant's last events only
        // when the clock had moved on to its next wakeup, A's compaction a second later;
        // with the handshake's ACCEPT/HANDSHAKE ping-pong gone nothing woke it sooner.)
        assert!(
            p.now - spoke < Duration::from_millis(100),
            "seed {seed}: A took {:?} to move to B2's connection",
            p.now - spoke
        );
        assert_eq!(
            b2.messages(),
            (10..20).map(|i| line('a', i)).collect::<Vec<_>>(),
            "seed {seed}: what the old connection lost, once each and in order"
        );
        assert_eq!(
            b.messages(),
            (0..10).map(|i| line('a', i)).collect::<Vec<_>>(),
            "seed {seed}"
        );
        let mut ids = a.delivered();
        ids.sort_unstable();
        assert_eq!(ids, (0..20).collect::<Vec<_>>(), "seed {seed}: once each");
        let mut want: Vec<Bytes> = (0..10).map(|i| line('b', i)).collect();
        want.push(line('c', 0));
        assert_eq!(a.messages(), want, "seed {seed}");
        assert_eq!(a.ups_and_downs(), (2, 1), "seed {seed}: {:?}", a.reports);
        assert!(
            a.has(|r| matches!(r, Report::Down { reason, .. } if reason == "restarted")),
            "seed {seed}: {:?}",
            a.reports
        );
    }
}

/// B restarts and its new process says nothing. A's lines still reach it: sent on the old
/// connection (dead on B's side), they come back from it when it ends and go out on B2's.
/// What bounds the time is how the old connection ends:
/// - by default B2's endpoint answers A's first packet on it with a stateless RESET: the old
///   connection ends one round trip after the lines went out (10 ms here; we allow 1 s);
/// - if no RESET comes (turned off here; lost, or rate-limited, in real life), A's idle timeout
///   ends it 30 s after the last packet it got from the old B, which was before the lines
///   were typed: they reach B2 within 30 s (we allow 31).
#[test]
fn a_restarted_partner_that_says_nothing_still_gets_our_lines() {
    for reset in [true, false] {
        let link = LinkConfig::ideal(Duration::from_millis(5));
        let (mut p, mut a, _b, b_config) = ten_lines_each_way(link, 8, reset);
        // B dies and B2 starts at once on its address, with its key; it says nothing.
        let mut b2 = restart_b(&mut p, &mut a, b_config, 0x98);
        let typed = p.now;
        send(&p, &mut a, 'a', 10..20);
        let bound = if reset {
            Duration::from_secs(1)
        } else {
            IDLE_TIMEOUT + Duration::from_secs(1)
        };
        let got = run_until(&mut p, &mut a, &mut b2, typed + bound, |a, b2| {
            b2.messages().len() == 10 && a.delivered().len() == 20
        });
        assert!(
            got,
            "reset {reset}: not delivered within {bound:?}\nA: {:?}\nB2: {:?}",
            a.reports, b2.reports
        );
        assert_eq!(
            b2.messages(),
            (10..20).map(|i| line('a', i)).collect::<Vec<_>>(),
            "reset {reset}"
        );
        let mut ids = a.delivered();
        ids.sort_unstable();
        assert_eq!(ids, (0..20).collect::<Vec<_>>(), "reset {reset}: once each");
        let reason = if reset {
            "the peer restarted".to_owned()
        } else {
            format!("no answer for {} s", IDLE_TIMEOUT.as_secs())
        };
        assert!(
            a.has(|r| matches!(r, Report::Down { reason: why, .. } if *why == reason)),
            "reset {reset}: {:?}",
            a.reports
        );
        assert_eq!(a.ups_and_downs(), (2, 1), "reset {reset}: {:?}", a.reports);
        // And B2's lines reach A too.
        send(&p, &mut b2, 'c', 0..3);
        drive(&mut p, &mut a, &mut b2, Duration::from_secs(10), |a, _| {
            a.messages().len() == 13
        });
        assert_eq!(
            a.messages()[10..],
            [line('c', 0), line('c', 1), line('c', 2)]
        );
    }
}

/// A download directory both the session (through its boxed storage) and the test can see.
#[derive(Clone, Default)]
struct SharedDisk(std::sync::Arc<std::sync::Mutex<chirp_files::MemStorage>>);

impl SharedDisk {
    fn with<R>(&self, f: impl FnOnce(&mut chirp_files::MemStorage) -> R) -> R {
        f(&mut self.0.lock().expect("not poisoned"))
    }
}

impl chirp_files::Storage for SharedDisk {
    fn source_len(&mut self, path: &std::path::Path) -> std::io::Result<u64> {
        self.with(|s| s.source_len(path))
    }
    fn read_source(
        &mut self,
        path: &std::path::Path,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<()> {
        self.with(|s| s.read_source(path, offset, buf))
    }
    fn exists(&mut self, name: &str) -> bool {
        self.with(|s| s.exists(name))
    }
    fn len(&mut self, name: &str) -> std::io::Result<Option<u64>> {
        self.with(|s| s.len(name))
    }
    fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.with(|s| s.read(name, offset, buf))
    }
    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.with(|s| s.write(name, offset, data))
    }
    fn finish(&mut self, part: &str, name: &str, size: u64) -> std::io::Result<()> {
        self.with(|s| s.finish(part, name, size))
    }
    fn close(&mut self, name: &str) {
        self.with(|s| s.close(name));
    }
    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        self.with(|s| s.remove(name))
    }
    fn close_source(&mut self, path: &std::path::Path) {
        self.with(|s| s.close_source(path));
    }
}

fn file_done(peer: &Peer) -> Option<chirp_files::FileEvent> {
    peer.reports.iter().find_map(|r| match r {
        Report::File(e @ chirp_files::FileEvent::Done { .. }) => Some(e.clone()),
        _ => None,
    })
}

/// Virtual time from A's writing the line `(tag, i)` to B's showing it.
fn line_latency(p: &mut Pair, a: &mut Peer, b: &mut Peer, tag: char, i: u64) -> Duration {
    let start = p.now;
    let want = line(tag, i);
    send(p, a, tag, i..i + 1);
    drive(p, a, b, Duration::from_secs(30), |_, b| {
        b.has(|r| matches!(r, Report::Message { data, .. } if *data == want))
    });
    p.now - start
}

/// The median of `d` (not empty).
fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// A file of 1 MB crosses a network with 20 % loss, duplication, reordering and corruption,
/// sent right before end of input: it is offered, accepted, and saved byte for byte; chat lines
/// sent by both during the transfer arrive in order; and both half-closes wait for the file,
/// so both exit 0.
#[test]
fn a_file_crosses_a_bad_network_byte_exact_while_chat_flows() {
    const N: u64 = 100;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for seed in 1..=3 {
        let mut p = pair(impaired(), seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
        let (disk_a, disk_b) = (SharedDisk::default(), SharedDisk::default());
        disk_a.with(|d| d.sources.insert("/home/a/photo.jpg".into(), data.clone()));
        a.session.enable_files(Box::new(disk_a.clone()), Vec::new());
        b.session.enable_files(Box::new(disk_b.clone()), Vec::new());
        input(&p, &mut a, Input::SendFile("/home/a/photo.jpg".into()));
        send(&p, &mut a, 'a', 0..N / 2);
        input(&p, &mut a, Input::EndOfInput);
        drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
            b.has(|r| matches!(r, Report::File(chirp_files::FileEvent::Offered { .. })))
        });
        input(&p, &mut b, Input::AcceptFile(None));
        send(&p, &mut b, 'b', 0..N);
        input(&p, &mut b, Input::EndOfInput);
        drive(&mut p, &mut a, &mut b, Duration::from_secs(300), |a, b| {
            a.exit.is_some() && b.exit.is_some()
        });
        let Some(chirp_files::FileEvent::Done { name, size, .. }) = file_done(&b) else {
            panic!("seed {seed}: no file_done at B: {:?}", b.reports);
        };
        assert_eq!((name.as_str(), size), ("photo.jpg", 1_000_000));
        assert!(
            disk_b.with(|d| d.files.get("photo.jpg") == Some(&data)),
            "seed {seed}: the saved file differs"
        );
        assert!(file_done(&a).is_some(), "seed {seed}: A never heard DONE");
        let want_b: Vec<Bytes> = (0..N / 2).map(|i| line('a', i)).collect();
        let want_a: Vec<Bytes> = (0..N).map(|i| line('b', i)).collect();
        assert!(b.messages() == want_b, "seed {seed}: B's lines");
        assert!(a.messages() == want_a, "seed {seed}: A's lines");
        assert_eq!((a.exit, b.exit), (Some(0), Some(0)), "seed {seed}");
        assert!(
            a.errors().is_empty() && b.errors().is_empty(),
            "seed {seed}"
        );
    }
}

/// Chunks go on the bulk channel: lines A writes while a 1 MB file flows from A to B over the
/// bad network reach B about as fast as lines written while the connection is idle (in
/// virtual time), never queued behind chunks nor held back by a lost one; everything still
/// arrives, file and lines.
#[test]
fn chat_lines_do_not_wait_behind_file_chunks() {
    // Lines timed while idle, and while the file flows.
    const PROBES: u64 = 20;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for seed in 1..=3 {
        let mut p = pair(impaired(), seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
        let (disk_a, disk_b) = (SharedDisk::default(), SharedDisk::default());
        disk_a.with(|d| d.sources.insert("/home/a/photo.jpg".into(), data.clone()));
        a.session.enable_files(Box::new(disk_a.clone()), Vec::new());
        b.session.enable_files(Box::new(disk_b.clone()), Vec::new());
        // The first line brings the connection up; the next ones take the idle latency.
        line_latency(&mut p, &mut a, &mut b, 'w', 0);
        let idle: Vec<Duration> = (0..PROBES)
            .map(|i| line_latency(&mut p, &mut a, &mut b, 'i', i))
            .collect();
        input(&p, &mut a, Input::SendFile("/home/a/photo.jpg".into()));
        drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
            b.has(|r| matches!(r, Report::File(chirp_files::FileEvent::Offered { .. })))
        });
        input(&p, &mut b, Input::AcceptFile(None));
        drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
            b.has(|r| matches!(r, Report::File(chirp_files::FileEvent::Progress { .. })))
        });
        let busy: Vec<Duration> = (0..PROBES)
            .map(|i| line_latency(&mut p, &mut a, &mut b, 't', i))
            .collect();
        // Each within twice the slowest idle line, and their median within 1.5 times the
        // idle median. (Chunks on the message stream, 16 in flight, made the first lines
        // written during the transfer take hundreds of milliseconds.)
        let idle_max = *idle.iter().max().expect("probes");
        let (idle_median, busy_median) = (median(idle.clone()), median(busy.clone()));
        assert!(
            busy.iter().all(|d| *d <= idle_max * 2) && busy_median <= idle_median.mul_f64(1.5),
            "seed {seed}: chat waited behind the file\nidle {idle:?}\nduring {busy:?}"
        );
        assert!(
            file_done(&b).is_none(),
            "seed {seed}: the file was done before the last timed line"
        );
        input(&p, &mut a, Input::EndOfInput);
        input(&p, &mut b, Input::EndOfInput);
        drive(&mut p, &mut a, &mut b, Duration::from_secs(300), |a, b| {
            a.exit.is_some() && b.exit.is_some()
        });
        assert!(
            disk_b.with(|d| d.files.get("photo.jpg") == Some(&data)),
            "seed {seed}: the saved file differs"
        );
        let want_b: Vec<Bytes> = std::iter::once(line('w', 0))
            .chain((0..PROBES).map(|i| line('i', i)))
            .chain((0..PROBES).map(|i| line('t', i)))
            .collect();
        assert!(b.messages() == want_b, "seed {seed}: B's lines");
        assert_eq!((a.exit, b.exit), (Some(0), Some(0)), "seed {seed}");
        assert!(
            a.errors().is_empty() && b.errors().is_empty(),
            "seed {seed}"
        );
    }
}

/// `chirp peer`'s test 3 with a slow driver on the leaving side. A sends, reaches end of input
/// and, once B has finished too, its connection closes. A's session learns that only a little
/// later: the transport runs as a task of its own, and meanwhile B, which keeps trying to
/// reach A, dials again. A, leaving with everything delivered, must not let that new attempt
/// in (B would show A up again, a ghost that only the idle timeout would end): it stops
/// accepting connections as soon as nothing is left for a successor to take over, not only
/// once its session hears of the close.
#[test]
fn a_leaving_peer_with_a_slow_driver_lets_no_redial_in() {
    for seed in 1..=5 {
        let mut p = pair(LinkConfig::ideal(Duration::from_micros(50)), seed);
        let (a_addr, b_addr) = (p.a.addr, p.b.addr);
        let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
        send(&p, &mut a, 'a', 0..50);
        input(&p, &mut a, Input::EndOfInput);
        // A's session sees nothing of its endpoint for this long after the close.
        let lag = Duration::from_millis(50);
        let mut frozen_until: Option<Instant> = None;
        let deadline = p.now + Duration::from_secs(30);
        while p.now < deadline && a.exit.is_none() {
            let now = p.now;
            let closed = p.a.events.iter().any(|e| matches!(e, Event::Closed { .. }));
            if closed && frozen_until.is_none() {
                frozen_until = Some(now + lag);
            }
            let a_runs = frozen_until.is_none_or(|t| now >= t);
            if a_runs {
                settle(&mut p.a, &mut a, now);
            }
            settle(&mut p.b, &mut b, now);
            let a_timer = a.session.poll_timeout().filter(|_| a_runs);
            let timers = [
                a_timer,
                b.session.poll_timeout(),
                frozen_until.filter(|&t| t > now),
            ];
            if timers.iter().flatten().any(|&t| t <= now) {
                if a_runs {
                    a.session.handle_timeout(now);
                }
                b.session.handle_timeout(now);
                continue;
            }
            let limit = timers.into_iter().flatten().fold(deadline, Instant::min);
            if !p.step_until(limit).expect("the network makes progress") {
                p.now = limit;
            }
        }
        assert!(
            frozen_until.is_some(),
            "seed {seed}: A's connection never closed"
        );
        assert_eq!(a.exit, Some(0), "seed {seed}: {:?}", a.errors());
        run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
        let want: Vec<Bytes> = (0..50).map(|i| line('a', i)).collect();
        assert!(b.messages() == want, "seed {seed}: B received wrong lines");
        assert!(
            b.has(|r| matches!(r, Report::Down { reason, .. } if reason == "left")),
            "seed {seed}: {:?}",
            b.reports
        );
        assert_eq!(
            b.ups_and_downs(),
            (1, 1),
            "seed {seed}: A came back while leaving: {:?}",
            b.reports
        );
    }
}

/// With `hash_files_outside`, `/send` does not read the file: the session asks the driver to
/// hash it and goes on. Lines written meanwhile reach B while no offer has (the offer waits
/// for the hash), end of input waits for the file being hashed, and once the driver hands the
/// hash back the file is offered, accepted and saved byte for byte, and both exit 0.
#[test]
fn a_file_hashed_by_the_driver_is_offered_after_the_lines_written_meanwhile() {
    const N: u64 = 20;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    let mut p = pair(impaired(), 7);
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    let (mut disk_a, disk_b) = (SharedDisk::default(), SharedDisk::default());
    disk_a.with(|d| d.sources.insert("/home/a/song.ogg".into(), data.clone()));
    a.session.enable_files(Box::new(disk_a.clone()), Vec::new());
    a.session.hash_files_outside();
    b.session.enable_files(Box::new(disk_b.clone()), Vec::new());
    input(&p, &mut a, Input::SendFile("/home/a/song.ogg".into()));
    send(&p, &mut a, 'a', 0..N);
    input(&p, &mut a, Input::EndOfInput);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
        b.messages().len() == N as usize
    });
    // Nothing was read for the file: the offer waits for the driver's hash.
    let offered = |b: &Peer| b.has(|r| matches!(r, Report::File(FileEvent::Offered { .. })));
    assert!(!offered(&b), "{:?}", b.reports);
    assert_eq!(a.hash_jobs.len(), 1);
    // End of input waits for the file being hashed: A has not left.
    run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
    assert_eq!(a.exit, None, "{:?}", a.reports);
    let (path, chunk_size) = a.hash_jobs.remove(0);
    let result = chirp_files::prepare(&mut disk_a, &path, chunk_size)
        .map(Box::new)
        .map_err(|e| e.to_string());
    input(&p, &mut a, Input::FileHashed { path, result });
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
        offered(b)
    });
    input(&p, &mut b, Input::AcceptFile(None));
    input(&p, &mut b, Input::EndOfInput);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(300), |a, b| {
        a.exit.is_some() && b.exit.is_some()
    });
    let Some(FileEvent::Done { name, size, .. }) = file_done(&b) else {
        panic!("no file_done at B: {:?}", b.reports);
    };
    assert_eq!((name.as_str(), size), ("song.ogg", 300_000));
    assert!(disk_b.with(|d| d.files.get("song.ogg") == Some(&data)));
    let want: Vec<Bytes> = (0..N).map(|i| line('a', i)).collect();
    assert!(b.messages() == want, "B's lines");
    assert_eq!((a.exit, b.exit), (Some(0), Some(0)));
}

/// A file that cannot be hashed (it does not exist) is an error for the user, and end of
/// input no longer waits for it.
#[test]
fn a_file_the_driver_cannot_hash_is_an_error_and_end_of_input_goes_on() {
    let mut p = pair(impaired(), 8);
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    let mut disk_a = SharedDisk::default();
    a.session.enable_files(Box::new(disk_a.clone()), Vec::new());
    a.session.hash_files_outside();
    b.session
        .enable_files(Box::new(SharedDisk::default()), Vec::new());
    input(&p, &mut a, Input::SendFile("/nowhere".into()));
    input(&p, &mut a, Input::EndOfInput);
    input(&p, &mut b, Input::EndOfInput);
    run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
    assert_eq!(
        a.exit, None,
        "end of input waits for the hash: {:?}",
        a.reports
    );
    let (path, chunk_size) = a.hash_jobs.remove(0);
    let result = chirp_files::prepare(&mut disk_a, &path, chunk_size)
        .map(Box::new)
        .map_err(|e| e.to_string());
    assert!(result.is_err());
    input(&p, &mut a, Input::FileHashed { path, result });
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, b| {
        a.exit.is_some() && b.exit.is_some()
    });
    assert!(
        a.errors()
            .iter()
            .any(|e| e.contains("cannot read /nowhere")),
        "{:?}",
        a.reports
    );
    assert!(!b.has(|r| matches!(r, Report::File(_))), "{:?}", b.reports);
}

/// With `finish_files_outside`, the receiver asks the driver to save the file once every
/// chunk is in, and the transfer is done only when the driver answers. While the save is held
/// (a slow fsync), chat flows both ways over the bad network and nobody says done; once the
/// driver hands the result back, DONE reaches the sender and the file is saved byte for byte.
#[test]
fn a_received_file_is_done_only_once_the_driver_saved_it_and_chat_flows_meanwhile() {
    const N: u64 = 20;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 11 + i / 89) as u8).collect();
    let (mut p, mut a, mut b, mut disk_b) = file_pair_on(impaired(), 9, "tape.wav", &data);
    until_saving(&mut p, &mut a, &mut b, "tape.wav");
    assert_eq!(b.finish_jobs.len(), 1);
    // The save is held: lines both ways get through meanwhile, and nobody is done.
    send(&p, &mut a, 'a', 0..N);
    send(&p, &mut b, 'b', 0..N);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, b| {
        a.messages().len() == N as usize && b.messages().len() == N as usize
    });
    run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
    assert!(file_done(&a).is_none() && file_done(&b).is_none());
    assert!(disk_b.with(|d| !d.files.contains_key("tape.wav")));
    let finish = b.finish_jobs.remove(0);
    let result = finish.run(&mut disk_b);
    input(&p, &mut b, Input::FileFinished { finish, result });
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, _| {
        file_done(a).is_some()
    });
    let Some(FileEvent::Done { name, size, .. }) = file_done(&b) else {
        panic!("no file_done at B: {:?}", b.reports);
    };
    assert_eq!((name.as_str(), size), ("tape.wav", 200_000));
    assert!(disk_b.with(|d| d.files.get("tape.wav") == Some(&data)));
    let want_b: Vec<Bytes> = (0..N).map(|i| line('a', i)).collect();
    let want_a: Vec<Bytes> = (0..N).map(|i| line('b', i)).collect();
    assert!(b.messages() == want_b && a.messages() == want_a);
    assert!(a.errors().is_empty() && b.errors().is_empty());
}

/// A save that fails (a full disk at the fsync) is the receiver's `file_failed` with the
/// reason, the sender's too (DECLINE), and no file under the name.
#[test]
fn a_save_that_fails_in_the_driver_fails_the_transfer_on_both_sides() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 5) as u8).collect();
    let (mut p, mut a, mut b, mut disk_b) = file_pair_on(impaired(), 10, "x.bin", &data);
    until_saving(&mut p, &mut a, &mut b, "x.bin");
    disk_b.with(|d| d.fail_finish = Some(std::io::ErrorKind::StorageFull));
    let finish = b.finish_jobs.remove(0);
    let result = finish.run(&mut disk_b);
    input(&p, &mut b, Input::FileFinished { finish, result });
    let failed = |peer: &Peer| {
        peer.reports.iter().find_map(|r| match r {
            Report::File(FileEvent::Failed { reason, .. }) => Some(reason.clone()),
            _ => None,
        })
    };
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, _| {
        failed(a).is_some()
    });
    let reason_b = failed(&b).expect("B failed");
    assert!(
        reason_b.starts_with("cannot save ") && reason_b.ends_with(": no storage space"),
        "{reason_b}"
    );
    assert_eq!(
        failed(&a).as_deref(),
        Some("declined by the receiver: cannot save the file")
    );
    assert!(file_done(&a).is_none() && file_done(&b).is_none());
    assert!(disk_b.with(|d| !d.files.contains_key("x.bin")));
}

/// Both directions go dark until the chat's connection has died on both sides (idle timeout),
/// then come back: the sessions reconnect by themselves.
fn link_dies(p: &mut Pair, a: &mut Peer, b: &mut Peer) {
    let (downs_a, downs_b) = (a.ups_and_downs().1, b.ups_and_downs().1);
    let outage = p.now + Duration::from_secs(3600);
    p.path.a_to_b.blackout_until(outage);
    p.path.b_to_a.blackout_until(outage);
    drive(p, a, b, IDLE_TIMEOUT + Duration::from_secs(10), |a, b| {
        a.ups_and_downs().1 > downs_a && b.ups_and_downs().1 > downs_b
    });
}

fn link_returns(p: &mut Pair) {
    p.path.a_to_b.blackout_until(p.now);
    p.path.b_to_a.blackout_until(p.now);
}

/// How many offers B's user was shown.
fn offers(peer: &Peer) -> usize {
    peer.reports
        .iter()
        .filter(|r| matches!(r, Report::File(FileEvent::Offered { .. })))
        .count()
}

fn statuses(peer: &Peer) -> Vec<String> {
    peer.reports
        .iter()
        .filter_map(|r| match r {
            Report::Status(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// [`file_pair_on`] a link that loses 2 %.
fn file_pair(seed: u64, name: &str, data: &[u8]) -> (Pair, Peer, Peer, SharedDisk) {
    let link = LinkConfig::ideal(Duration::from_millis(5)).with_loss(0.02);
    file_pair_on(link, seed, name, data)
}

/// Two sessions over `link` with file transfer on shared in-memory disks, A's holding
/// `/home/a/NAME` with `data`; B saves (and checks) received files through the driver.
fn file_pair_on(
    link: LinkConfig,
    seed: u64,
    name: &str,
    data: &[u8],
) -> (Pair, Peer, Peer, SharedDisk) {
    let p = pair(link, seed);
    let (a_addr, b_addr) = (p.a.addr, p.b.addr);
    let (mut a, mut b) = (Peer::new(b_addr, false), Peer::new(a_addr, false));
    let (disk_a, disk_b) = (SharedDisk::default(), SharedDisk::default());
    disk_a.with(|d| {
        d.sources
            .insert(format!("/home/a/{name}").into(), data.to_vec())
    });
    a.session.enable_files(Box::new(disk_a), Vec::new());
    b.session.enable_files(Box::new(disk_b.clone()), Vec::new());
    b.session.finish_files_outside();
    b.session.check_files_outside();
    (p, a, b, disk_b)
}

/// A offers `/home/a/NAME`, B accepts it, and every chunk crosses: B's save is then asked of
/// the driver (`b.finish_jobs`), which the caller holds.
fn until_saving(p: &mut Pair, a: &mut Peer, b: &mut Peer, name: &str) {
    input(p, a, Input::SendFile(format!("/home/a/{name}").into()));
    drive(p, a, b, Duration::from_secs(60), |_, b| offers(b) == 1);
    input(p, b, Input::AcceptFile(None));
    drive(p, a, b, Duration::from_secs(300), |_, b| {
        !b.finish_jobs.is_empty()
    });
}

/// A resumed transfer's check of the partial file is asked of the driver: while the driver
/// holds it, chat lines cross both ways, B asks for no chunk (its partial file does not grow)
/// and nobody is done. Its result makes B ask for the chunks it lacks: only those move, and
/// the file is saved byte for byte.
#[test]
fn a_resume_waits_for_the_drivers_check_of_the_partial_file_and_chat_flows_meanwhile() {
    const N: u64 = 20;
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    let (mut p, mut a, mut b, mut disk_b) = file_pair(11, "disk.img", &data);
    input(&p, &mut a, Input::SendFile("/home/a/disk.img".into()));
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
        offers(b) == 1
    });
    input(&p, &mut b, Input::AcceptFile(None));
    let part_len = |disk: &SharedDisk| {
        disk.with(|d| {
            d.files
                .iter()
                .find(|(n, _)| n.ends_with(".part"))
                .map_or(0, |(_, f)| f.len())
        })
    };
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, _| {
        part_len(&disk_b) >= 200_000
    });
    // No partial file at first: nothing was checked.
    assert!(b.check_jobs.is_empty());
    link_dies(&mut p, &mut a, &mut b);
    let held = part_len(&disk_b);
    assert!(held < data.len(), "the link died mid-transfer");
    link_returns(&mut p);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |_, b| {
        !b.check_jobs.is_empty()
    });
    assert_eq!(b.check_jobs.len(), 1);
    // The check is held: chat goes on, nothing else moves.
    send(&p, &mut a, 'a', 0..N);
    send(&p, &mut b, 'b', 0..N);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, b| {
        a.messages().len() == N as usize && b.messages().len() == N as usize
    });
    run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
    assert_eq!(
        part_len(&disk_b),
        held,
        "no chunk before the check's result"
    );
    assert!(file_done(&a).is_none() && file_done(&b).is_none());
    let check = b.check_jobs.remove(0);
    let result = check.run(&mut disk_b);
    input(&p, &mut b, Input::FileChecked { check, result });
    drive(&mut p, &mut a, &mut b, Duration::from_secs(120), |_, b| {
        !b.finish_jobs.is_empty()
    });
    let finish = b.finish_jobs.remove(0);
    let result = finish.run(&mut disk_b);
    input(&p, &mut b, Input::FileFinished { finish, result });
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, _| {
        file_done(a).is_some()
    });
    let Some(FileEvent::Done { resumed, moved, .. }) = file_done(&b) else {
        panic!("no file_done at B: {:?}", b.reports);
    };
    // Whole chunks of the partial file are kept (its tail may be a chunk cut short).
    let chunk = chirp_files::DEFAULT_CHUNK_SIZE as u64;
    assert_eq!(
        resumed,
        held as u64 / chunk * chunk,
        "every whole chunk held is kept"
    );
    assert_eq!(moved, data.len() as u64 - resumed, "only the rest moved");
    assert!(disk_b.with(|d| d.files.get("disk.img") == Some(&data)));
    assert_eq!(offers(&b), 1, "B's user was asked once");
}

/// The link dies right after the last chunk, while B saves the file, so the DONE that follows
/// the save has no connection to go on (and the next one starts the file layer over). A
/// offers the file again on the new connection: B answers DONE at once; it neither asks its
/// user again nor saves a second copy, and A's transfer is done.
#[test]
fn a_done_lost_with_the_link_is_sent_again_when_the_sender_offers_again() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 3 + i / 7) as u8).collect();
    let (mut p, mut a, mut b, mut disk_b) = file_pair(12, "song.flac", &data);
    until_saving(&mut p, &mut a, &mut b, "song.flac");
    link_dies(&mut p, &mut a, &mut b);
    // Saved while the link is down: DONE is queued for no connection.
    let finish = b.finish_jobs.remove(0);
    let result = finish.run(&mut disk_b);
    input(&p, &mut b, Input::FileFinished { finish, result });
    settle(&mut p.b, &mut b, p.now);
    assert!(file_done(&b).is_some());
    assert!(file_done(&a).is_none());
    link_returns(&mut p);
    drive(&mut p, &mut a, &mut b, Duration::from_secs(60), |a, _| {
        file_done(a).is_some()
    });
    run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
    assert_eq!(offers(&b), 1, "B's user was asked once");
    assert!(b.finish_jobs.is_empty() && b.check_jobs.is_empty());
    let mut names: Vec<String> = disk_b.with(|d| d.files.keys().cloned().collect());
    names.sort();
    assert_eq!(names, ["song.flac"], "one copy");
    assert!(disk_b.with(|d| d.files["song.flac"] == data));
    let dones = |peer: &Peer| {
        peer.reports
            .iter()
            .filter(|r| matches!(r, Report::File(FileEvent::Done { .. })))
            .count()
    };
    assert_eq!((dones(&a), dones(&b)), (1, 1));
    assert!(a.errors().is_empty() && b.errors().is_empty());
}

/// `/quit` while a received file is being saved: B says it waits for the save, and does not
/// close meanwhile; once saved, DONE reaches A and then B leaves, cleanly. `/decline` of that
/// file meanwhile says why it cannot be declined.
#[test]
fn quit_during_a_save_waits_for_it_so_that_done_reaches_the_sender() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 5 + i / 11) as u8).collect();
    let (mut p, mut a, mut b, mut disk_b) = file_pair(13, "x.tar", &data);
    until_saving(&mut p, &mut a, &mut b, "x.tar");
    let id = b.finish_jobs[0].id;
    input(&p, &mut b, Input::DeclineFile(Some(id)));
    settle(&mut p.b, &mut b, p.now);
    assert_eq!(
        b.errors(),
        [format!(
            "file {id} cannot be declined now: every byte of it is in, and it is being saved"
        )]
    );
    input(&p, &mut b, Input::Leave);
    settle(&mut p.b, &mut b, p.now);
    assert_eq!(
        statuses(&b).last(),
        Some(&format!(
            "leaving once file {id} (\"x.tar\") is saved (every byte is in), so that the \
             sender hears that it arrived: at most 10 s"
        ))
    );
    run_for(&mut p, &mut a, &mut b, Duration::from_secs(5));
    assert!(b.exit.is_none(), "B left before the save");
    assert!(a.ups_and_downs().1 == 0, "B closed: {:?}", a.reports);
    let finish = b.finish_jobs.remove(0);
    let result = finish.run(&mut disk_b);
    input(&p, &mut b, Input::FileFinished { finish, result });
    drive(&mut p, &mut a, &mut b, Duration::from_secs(30), |a, b| {
        file_done(a).is_some() && b.exit.is_some()
    });
    assert_eq!(b.exit, Some(0));
    assert!(disk_b.with(|d| d.files["x.tar"] == data));
}

/// A save that never ends is waited for [`chirp_peer::LEAVE_SAVE_WAIT`] after `/quit`, no
/// longer: then B says that the sender will not hear of it, and leaves. Ctrl-C does not wait,
/// and says the same at once.
#[test]
fn quit_waits_for_a_save_a_bounded_time_and_ctrl_c_not_at_all() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 9) as u8).collect();
    for interrupt in [false, true] {
        let (mut p, mut a, mut b, _disk_b) = file_pair(14, "y.bin", &data);
        until_saving(&mut p, &mut a, &mut b, "y.bin");
        let id = b.finish_jobs[0].id;
        let start = p.now;
        input(
            &p,
            &mut b,
            if interrupt {
                Input::Interrupt
            } else {
                Input::Leave
            },
        );
        drive(&mut p, &mut a, &mut b, Duration::from_secs(30), |_, b| {
            b.exit.is_some()
        });
        let waited = p.now - start;
        let last = statuses(&b).pop().unwrap_or_default();
        if interrupt {
            assert_eq!(b.exit, Some(130));
            assert!(waited < Duration::from_secs(1), "{waited:?}");
            assert_eq!(
                last,
                format!(
                    "interrupted while file {id} (\"y.bin\") was being saved: it will be saved, \
                     but the sender is not told that it arrived"
                )
            );
        } else {
            assert_eq!(b.exit, Some(0));
            assert!(
                waited >= chirp_peer::LEAVE_SAVE_WAIT
                    && waited < chirp_peer::LEAVE_SAVE_WAIT + Duration::from_secs(5),
                "{waited:?}"
            );
            assert_eq!(
                last,
                format!(
                    "leaving while file {id} (\"y.bin\") is still being saved: it will be \
                     saved, but the sender is not told that it arrived"
                )
            );
        }
        assert!(file_done(&a).is_none() && file_done(&b).is_none());
    }
}
