//! The peer session driven over two real protocol endpoints in `chirp-netsim`'s virtual time:
//! the half-close at end of input, a peer that leaves while the other stays, a restarted peer
//! whose connection replaces the old one (what the old one never got acknowledged is sent again
//! exactly once, in order), and key questions answered yes or no.
//!
//! The harness plays the driver's part: it carries out each [`Transport`] request on the
//! node's endpoint and hands the reply straight back, as `chirp peer` does over its transport.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_keys::{Identity, PublicKey};
use chirp_netsim::{LinkConfig, Node, Pair, Path};
use chirp_peer::{
    Config, Input, KeyPolicy, Output, PeerVerdict, Reply, Report, Session, Transport,
};
use chirp_proto::{Endpoint, EndpointConfig, handshake::StaticSecret};

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
}

impl Peer {
    fn new(to: SocketAddr, can_ask: bool) -> Self {
        let config = Config {
            to,
            idle_timeout: Duration::from_secs(30),
            can_ask,
        };
        Self {
            session: Session::new(config, Policy::default()),
            reports: Vec::new(),
            exit: None,
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
}

/// Carries out one request on `ep`, as `chirp peer`'s driver does over its transport.
fn execute(ep: &mut Endpoint, now: Instant, t: Transport) -> Option<Reply> {
    match t {
        Transport::Connect { to } => Some(Reply::Connect(
            ep.find_open(to).map_or_else(|| ep.connect(now, to), Ok),
        )),
        Transport::Send { conn, data } => Some(Reply::Send(ep.send(conn, &data))),
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
fn settle(node: &mut Node, peer: &mut Peer, now: Instant) {
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
            }
        }
        if !busy {
            return;
        }
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
    mut done: impl FnMut(&Peer, &Peer) -> bool,
) -> bool {
    loop {
        let now = p.now;
        settle(&mut p.a, a, now);
        settle(&mut p.b, b, now);
        if done(a, b) {
            return true;
        }
        if p.now >= deadline {
            return false;
        }
        let timers = [a.session.poll_timeout(), b.session.poll_timeout()];
        if timers.iter().flatten().any(|&t| t <= now) {
            a.session.handle_timeout(now);
            b.session.handle_timeout(now);
            continue;
        }
        let limit = timers.into_iter().flatten().fold(deadline, Instant::min);
        if !p.step_until(limit).expect("the network makes progress") {
            p.now = limit;
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
