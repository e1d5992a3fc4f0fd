//! Path probing and the move from a relayed path to a direct one (PROTOCOL.md §5.7.1), in
//! virtual time.
//!
//! Two peers reach each other two ways, as `chirp peer --via` does: through a relay (slow,
//! always there; each side sees the other at the relayed path's address) and directly (fast,
//! and blocked in either direction as a test says, like a NAT or a firewall). The connection
//! is opened through the relay; both sides then probe the other's direct address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_netsim::{Link, LinkConfig};
use chirp_proto::{
    ConnectionHandle, Endpoint, EndpointConfig, Event, PROBE_INTERVAL_MAX, PROBE_INTERVAL_MIN,
};

/// How each side sees the other through the relay (the reference peer's synthetic address).
fn relayed() -> SocketAddr {
    "[100::1]:7667".parse().expect("address")
}
/// A's direct address, as B sees it, and B's, as A sees it.
fn a_direct() -> SocketAddr {
    "203.0.113.1:40001".parse().expect("address")
}
fn b_direct() -> SocketAddr {
    "198.51.100.2:40002".parse().expect("address")
}

const RELAY_ONE_WAY: Duration = Duration::from_millis(60);
const DIRECT_ONE_WAY: Duration = Duration::from_millis(10);
/// Consecutive steps without the clock moving that count as a busy loop.
const MAX_STUCK: u32 = 10_000;

/// One peer: its endpoint and the events it reported.
struct Peer {
    ep: Endpoint,
    events: VecDeque<Event>,
}

/// Two peers, a relayed path and a direct one.
struct Net {
    now: Instant,
    start: Instant,
    a: Peer,
    b: Peer,
    relay_ab: Link,
    relay_ba: Link,
    direct_ab: Link,
    direct_ba: Link,
    /// Whether the direct path carries datagrams A → B and B → A.
    open_ab: bool,
    open_ba: bool,
    /// Datagrams each way on each path, sent (the direct ones whether or not they passed).
    relayed_ab: u64,
    relayed_ba: u64,
    direct_sent_ab: u64,
    direct_sent_ba: u64,
    stuck: u32,
}

impl Net {
    fn new(seed: u64) -> Self {
        let start = Instant::now();
        let server = EndpointConfig {
            accept_incoming: true,
            ..EndpointConfig::default()
        };
        let relay = LinkConfig::ideal(RELAY_ONE_WAY);
        let direct = LinkConfig::ideal(DIRECT_ONE_WAY);
        Net {
            now: start,
            start,
            a: Peer {
                ep: Endpoint::new(EndpointConfig::default(), seed ^ 0xa),
                events: VecDeque::new(),
            },
            b: Peer {
                ep: Endpoint::new(server, seed ^ 0xb),
                events: VecDeque::new(),
            },
            relay_ab: Link::new(relay.clone(), seed ^ 1),
            relay_ba: Link::new(relay, seed ^ 2),
            direct_ab: Link::new(direct.clone(), seed ^ 3),
            direct_ba: Link::new(direct, seed ^ 4),
            open_ab: false,
            open_ba: false,
            relayed_ab: 0,
            relayed_ba: 0,
            direct_sent_ab: 0,
            direct_sent_ba: 0,
            stuck: 0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn flush(&mut self) {
        let now = self.now;
        while let Some(t) = self.a.ep.poll_transmit(now) {
            if t.destination == relayed() {
                self.relayed_ab += 1;
                self.relay_ab.send(now, t.contents);
            } else {
                assert_eq!(t.destination, b_direct(), "A sends nowhere else");
                self.direct_sent_ab += 1;
                if self.open_ab {
                    self.direct_ab.send(now, t.contents);
                }
            }
        }
        while let Some(t) = self.b.ep.poll_transmit(now) {
            if t.destination == relayed() {
                self.relayed_ba += 1;
                self.relay_ba.send(now, t.contents);
            } else {
                assert_eq!(t.destination, a_direct(), "B sends nowhere else");
                self.direct_sent_ba += 1;
                if self.open_ba {
                    self.direct_ba.send(now, t.contents);
                }
            }
        }
        while let Some(e) = self.a.ep.poll_event() {
            self.a.events.push_back(e);
        }
        while let Some(e) = self.b.ep.poll_event() {
            self.b.events.push_back(e);
        }
    }

    /// One round (transmit, deliver, timers), then the clock to the next wakeup, at most
    /// `limit`.
    fn step(&mut self, limit: Instant) {
        self.flush();
        let now = self.now;
        while let Some(d) = self.relay_ab.poll_deliver(now) {
            self.b.ep.handle_datagram(now, relayed(), &d);
        }
        while let Some(d) = self.direct_ab.poll_deliver(now) {
            self.b.ep.handle_datagram(now, a_direct(), &d);
        }
        while let Some(d) = self.relay_ba.poll_deliver(now) {
            self.a.ep.handle_datagram(now, relayed(), &d);
        }
        while let Some(d) = self.direct_ba.poll_deliver(now) {
            self.a.ep.handle_datagram(now, b_direct(), &d);
        }
        for ep in [&mut self.a.ep, &mut self.b.ep] {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
        self.flush();
        let next = [
            self.a.ep.poll_timeout(),
            self.b.ep.poll_timeout(),
            self.relay_ab.next_delivery(),
            self.relay_ba.next_delivery(),
            self.direct_ab.next_delivery(),
            self.direct_ba.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(limit)
        .min(limit);
        if next <= self.now {
            self.stuck += 1;
            assert!(self.stuck < MAX_STUCK, "busy loop at {:?}", self.elapsed());
        } else {
            self.stuck = 0;
            self.now = next;
        }
    }

    fn run_until(&mut self, t: Instant) {
        while self.now < t {
            self.step(t);
        }
        self.step(t);
    }

    fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// A connects to B through the relay; both are up.
    fn connect(&mut self) -> (ConnectionHandle, ConnectionHandle) {
        let ca = self.a.ep.connect(self.now, relayed()).expect("room");
        let deadline = self.now + Duration::from_secs(10);
        let mut cb = None;
        let mut up_a = false;
        while self.now < deadline && !(up_a && cb.is_some()) {
            self.step(deadline);
            for e in self.a.events.drain(..) {
                up_a |= matches!(e, Event::Connected { .. });
            }
            for e in self.b.events.drain(..) {
                if let Event::Connected { conn, .. } = e {
                    cb = Some(conn);
                }
            }
        }
        assert!(up_a, "A connected through the relay");
        (ca, cb.expect("B connected through the relay"))
    }

    fn peer(&mut self, a: bool) -> &mut Peer {
        if a { &mut self.a } else { &mut self.b }
    }

    /// The messages `a` (or B) received so far, taken from its events.
    fn take_messages(&mut self, a: bool) -> Vec<Bytes> {
        let events = &mut self.peer(a).events;
        let mut out = Vec::new();
        events.retain(|e| match e {
            Event::Message { data, .. } => {
                out.push(data.clone());
                false
            }
            _ => true,
        });
        out
    }

    /// The addresses `a` (or B) reported in `PathChanged`, taken from its events.
    fn take_path_changes(&mut self, a: bool) -> Vec<SocketAddr> {
        let events = &mut self.peer(a).events;
        let mut out = Vec::new();
        events.retain(|e| match e {
            Event::PathChanged { remote, .. } => {
                out.push(*remote);
                false
            }
            _ => true,
        });
        out
    }
}

fn line(side: &str, i: usize) -> Bytes {
    Bytes::from(format!("{side} line {i}"))
}

#[test]
fn relayed_peers_move_to_the_direct_path_once_it_works_and_lose_nothing() {
    for seed in 1..=4 {
        let mut n = Net::new(seed);
        let (ca, cb) = n.connect();
        assert!(n.a.ep.probe_path(n.now, ca, Some(b_direct())));
        assert!(n.b.ep.probe_path(n.now, cb, Some(a_direct())));
        let mut sent = 0;
        let send_some = |n: &mut Net, sent: &mut usize, count: usize| {
            for _ in 0..count {
                n.a.ep.send(ca, &line("a", *sent)).expect("room");
                n.b.ep.send(cb, &line("b", *sent)).expect("room");
                *sent += 1;
            }
        };
        // Lines go through the relay while the direct path is blocked both ways.
        for _ in 0..20 {
            send_some(&mut n, &mut sent, 3);
            n.run_for(Duration::from_millis(250));
        }
        assert_eq!(n.a.ep.remote(ca), Some(relayed()), "seed {seed}");
        assert_eq!(n.b.ep.remote(cb), Some(relayed()), "seed {seed}");
        assert!(n.take_path_changes(true).is_empty());
        assert!(n.take_path_changes(false).is_empty());
        // The direct path opens; lines keep flowing through the move.
        n.open_ab = true;
        n.open_ba = true;
        let opened = n.now;
        let mut moved_at = None;
        for _ in 0..160 {
            send_some(&mut n, &mut sent, 3);
            n.run_for(Duration::from_millis(125));
            if moved_at.is_none()
                && n.a.ep.remote(ca) == Some(b_direct())
                && n.b.ep.remote(cb) == Some(a_direct())
            {
                moved_at = Some(n.now);
            }
        }
        let moved_at = moved_at.expect("both moved to the direct path");
        // Probing had backed off to at most 4 s (1 s, 2 s, 4 s after 5 s of probing).
        assert!(
            moved_at - opened <= Duration::from_secs(4) + Duration::from_millis(500),
            "seed {seed}: moved {:?} after the path opened",
            moved_at - opened
        );
        n.run_for(Duration::from_secs(5));
        // Exactly once and in order, both ways.
        let expect = |side: &str| (0..sent).map(|i| line(side, i)).collect::<Vec<_>>();
        assert_eq!(n.take_messages(false), expect("a"), "seed {seed}: B got");
        assert_eq!(n.take_messages(true), expect("b"), "seed {seed}: A got");
        // One change each, to the direct address: no flapping back to the relay while
        // relayed packets were still in flight.
        assert_eq!(n.take_path_changes(true), vec![b_direct()], "seed {seed}");
        assert_eq!(n.take_path_changes(false), vec![a_direct()], "seed {seed}");
        // And the relay carries nothing any more.
        let (ab, ba) = (n.relayed_ab, n.relayed_ba);
        send_some(&mut n, &mut sent, 10);
        n.run_for(Duration::from_secs(2));
        assert_eq!((n.relayed_ab, n.relayed_ba), (ab, ba), "seed {seed}");
        assert_eq!(n.take_messages(false).len(), 10);
        // (A packet or two still on the relay when the faster direct path overtook it may
        // have been declared lost and resent: the stream delivered each line once all the
        // same. That lost probes count for nothing is the next test's.)
        let sa = n.a.ep.stats(ca).expect("stats");
        assert!(sa.probes_answered >= 1, "{sa:?}");
        assert_eq!(sa.migrations, 1, "{sa:?}");
    }
}

#[test]
fn a_direct_path_that_never_works_costs_a_few_probes_and_nothing_else() {
    let mut n = Net::new(9);
    let (ca, cb) = n.connect();
    n.a.ep.probe_path(n.now, ca, Some(b_direct()));
    n.b.ep.probe_path(n.now, cb, Some(a_direct()));
    // Probing the same address again does not restart its backoff.
    n.run_for(Duration::from_secs(20));
    n.a.ep.probe_path(n.now, ca, Some(b_direct()));
    let minutes = 5;
    let mut sent = 0;
    for _ in 0..minutes * 60 {
        n.a.ep.send(ca, &line("a", sent)).expect("room");
        sent += 1;
        n.run_for(Duration::from_secs(1));
    }
    let span = n.elapsed();
    // 0, 1, 3, 7, 15 s, then every 15 s.
    assert_eq!(PROBE_INTERVAL_MIN, Duration::from_secs(1));
    let bound = 5 + (span.as_secs() / PROBE_INTERVAL_MAX.as_secs()) + 1;
    for (side, probes) in [("A", n.direct_sent_ab), ("B", n.direct_sent_ba)] {
        assert!(
            (span.as_secs() / PROBE_INTERVAL_MAX.as_secs()..=bound).contains(&probes),
            "{side} sent {probes} probes in {span:?}"
        );
    }
    let sa = n.a.ep.stats(ca).expect("stats");
    assert_eq!(sa.probes_sent, n.direct_sent_ab);
    assert_eq!(sa.probes_answered, 0);
    assert_eq!(sa.packets_lost, 0, "lost probes are no losses: {sa:?}");
    assert_eq!(n.a.ep.remote(ca), Some(relayed()));
    assert!(n.take_path_changes(true).is_empty());
    assert!(n.take_path_changes(false).is_empty());
    assert_eq!(n.take_messages(false).len(), sent);
    // Stopping: no more probes.
    n.a.ep.probe_path(n.now, ca, None);
    n.b.ep.probe_path(n.now, cb, None);
    let (ab, ba) = (n.direct_sent_ab, n.direct_sent_ba);
    n.run_for(Duration::from_secs(60));
    assert_eq!((n.direct_sent_ab, n.direct_sent_ba), (ab, ba));
}

#[test]
fn a_probe_never_moves_the_connection_of_the_side_it_reaches() {
    // Only B → A passes directly: B's probes reach A, A's answers (and probes) do not reach
    // B. A must stay on the relay (a probe is no reason to move), and nothing is lost.
    let mut n = Net::new(5);
    let (ca, cb) = n.connect();
    n.a.ep.probe_path(n.now, ca, Some(b_direct()));
    n.b.ep.probe_path(n.now, cb, Some(a_direct()));
    n.open_ba = true;
    for i in 0..60 {
        n.a.ep.send(ca, &line("a", i)).expect("room");
        n.b.ep.send(cb, &line("b", i)).expect("room");
        n.run_for(Duration::from_millis(500));
    }
    assert_eq!(n.a.ep.remote(ca), Some(relayed()));
    assert_eq!(n.b.ep.remote(cb), Some(relayed()));
    assert!(n.take_path_changes(true).is_empty());
    assert!(n.take_path_changes(false).is_empty());
    assert!(
        n.direct_ab.stats().sent == 0 && n.direct_sent_ab > 0,
        "A probed and answered, into the block"
    );
    assert_eq!(n.take_messages(true).len(), 60);
    assert_eq!(n.take_messages(false).len(), 60);
    // The block lifts: the next probes are answered and the client (A) moves; B follows.
    n.open_ab = true;
    n.run_for(PROBE_INTERVAL_MAX + Duration::from_secs(1));
    assert_eq!(n.a.ep.remote(ca), Some(b_direct()));
    assert_eq!(n.b.ep.remote(cb), Some(a_direct()));
    assert_eq!(n.take_path_changes(true), vec![b_direct()]);
    assert_eq!(n.take_path_changes(false), vec![a_direct()]);
}
