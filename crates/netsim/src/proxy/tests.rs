//! The proxy core in virtual time: no socket, no clock, every run replayable from its seed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The server behind the proxy.
fn server() -> SocketAddr {
    addr(6000)
}

fn config(link: LinkConfig, seed: u64) -> ProxyConfig {
    ProxyConfig::new(server(), link, seed)
}

/// A proxy and a virtual clock, recording everything it emits.
struct Run {
    proxy: Proxy,
    start: Instant,
    now: Instant,
    /// `(virtual time since start, transmit)`, in the order handed out.
    sent: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, Event)>,
}

impl Run {
    fn new(config: ProxyConfig) -> Self {
        let start = Instant::now();
        Self {
            proxy: Proxy::new(config, start),
            start,
            now: start,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Drains events, then transmits (the order a driver must use).
    fn drain(&mut self) {
        let at = self.elapsed();
        while let Some(e) = self.proxy.poll_event() {
            self.events.push((at, e));
        }
        while let Some(t) = self.proxy.poll_transmit() {
            self.sent.push((at, t));
        }
    }

    fn client_sends(&mut self, from: SocketAddr, data: &[u8]) {
        self.proxy.handle_from_client(self.now, from, data.to_vec());
        self.drain();
    }

    fn server_sends(&mut self, id: ClientId, from: SocketAddr, data: &[u8]) {
        self.proxy
            .handle_from_upstream(self.now, id, from, data.to_vec());
        self.drain();
    }

    /// Runs timers until virtual time `t` (since start), jumping from one to the next.
    /// Bounded: a `poll_timeout` that does not advance fails the test.
    fn run_until(&mut self, t: Duration) {
        let end = self.start + t;
        for _ in 0..100_000 {
            match self.proxy.poll_timeout() {
                Some(next) if next <= end => {
                    self.now = self.now.max(next);
                    self.proxy.handle_timeout(self.now);
                    self.drain();
                    if let Some(again) = self.proxy.poll_timeout() {
                        assert!(again > self.now, "poll_timeout did not advance: busy loop");
                    }
                }
                _ => {
                    self.now = self.now.max(end);
                    return;
                }
            }
        }
        panic!("more than 100 000 wake-ups");
    }

    /// Advances virtual time to `t` without firing timers (a late driver).
    fn jump(&mut self, t: Duration) {
        self.now = self.start + t;
    }

    fn sent_in(&self, dir: Direction) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|(_, t)| t.direction == dir)
            .map(|(_, t)| t.contents.clone())
            .collect()
    }

    fn expired(&self) -> Vec<(Duration, ClientId)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::ClientExpired { id, .. } => Some((*at, *id)),
                _ => None,
            })
            .collect()
    }
}

fn payload(tag: u8, i: u32) -> Vec<u8> {
    let mut d = vec![tag; 32];
    d[..4].copy_from_slice(&i.to_be_bytes());
    d
}

/// Every datagram is accounted for, in both directions.
fn assert_balanced(s: &ProxyStats) {
    for (name, d) in [("up", s.up), ("down", s.down)] {
        assert_eq!(
            d.received + d.duplicated,
            d.forwarded
                + d.lost
                + d.queue_drops
                + d.oversize
                + d.rejected
                + d.overflow
                + d.send_errors
                + d.in_flight,
            "{name} does not add up: {d:?}"
        );
    }
}

#[test]
fn client_seeds_differ_and_client_zero_uses_the_run_seed() {
    assert_eq!(client_seed(7, 0), 7);
    let seeds: std::collections::HashSet<u64> = (0..1000).map(|i| client_seed(7, i)).collect();
    assert_eq!(seeds.len(), 1000);
}

#[test]
fn v4_mapped_addresses_are_the_same_endpoint() {
    let v4 = addr(5);
    let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 5));
    assert!(same_endpoint(v4, mapped));
    assert!(!same_endpoint(v4, v6));
    assert!(!same_endpoint(v4, addr(6)));
}

#[test]
fn a_plain_relay_forwards_both_ways_at_once() {
    let mut run = Run::new(config(LinkConfig::ideal(Duration::ZERO), 1));
    let c = addr(5000);
    run.client_sends(c, b"hello");
    assert_eq!(
        run.events,
        [(
            Duration::ZERO,
            Event::ClientAdded {
                id: ClientId(0),
                addr: c
            }
        )]
    );
    assert_eq!(
        run.sent,
        [(
            Duration::ZERO,
            Transmit {
                client: ClientId(0),
                direction: Direction::Up,
                destination: server(),
                contents: b"hello".to_vec()
            }
        )]
    );
    run.server_sends(ClientId(0), server(), b"hi");
    assert_eq!(
        run.sent[1].1,
        Transmit {
            client: ClientId(0),
            direction: Direction::Down,
            destination: c,
            contents: b"hi".to_vec()
        }
    );
    // A known client gets no second event; a zero delay needs no timer.
    run.client_sends(c, b"again");
    assert_eq!(run.events.len(), 1);
    assert_eq!(run.sent.len(), 3);
    let s = run.proxy.stats();
    assert_eq!((s.up.forwarded, s.down.forwarded, s.clients), (2, 1, 1));
    assert_eq!((s.up.bytes_received, s.up.bytes_forwarded), (10, 10));
    assert_balanced(&s);
}

#[test]
fn each_client_gets_its_own_index_and_only_its_replies() {
    let mut run = Run::new(config(LinkConfig::ideal(Duration::ZERO), 1));
    let (a, b) = (addr(5000), addr(5001));
    run.client_sends(a, b"a");
    run.client_sends(b, b"b");
    run.server_sends(ClientId(1), server(), b"for b");
    run.server_sends(ClientId(0), server(), b"for a");
    let down: Vec<(SocketAddr, Vec<u8>)> = run
        .sent
        .iter()
        .filter(|(_, t)| t.direction == Direction::Down)
        .map(|(_, t)| (t.destination, t.contents.clone()))
        .collect();
    assert_eq!(down, [(b, b"for b".to_vec()), (a, b"for a".to_vec())]);
    assert_eq!(run.proxy.client_addr(ClientId(1)), Some(b));
}

/// The decisions, and when each was carried out, of a run of a badly impaired proxy.
fn impaired_run(seed: u64) -> (Vec<(Duration, Transmit)>, ProxyStats) {
    let link = LinkConfig::ideal(20 * MS)
        .with_jitter(10 * MS)
        .with_loss(0.2)
        .with_duplicate(0.1)
        .with_reorder(0.2, 30 * MS)
        .with_corrupt(0.1);
    let mut run = Run::new(config(link, seed));
    let clients = [addr(5000), addr(5001), addr(5002)];
    for i in 0..300u32 {
        let k = i as usize % clients.len();
        run.client_sends(clients[k], &payload(b'u', i));
        run.server_sends(ClientId(k as u64), server(), &payload(b'd', i));
        run.run_until(run.elapsed() + 3 * MS);
    }
    run.run_until(Duration::from_secs(10));
    let stats = run.proxy.stats();
    (run.sent, stats)
}

#[test]
fn the_same_seed_makes_the_same_decisions() {
    let (a, stats) = impaired_run(42);
    let (b, _) = impaired_run(42);
    assert_eq!(a, b, "same seed, different runs");
    let (c, _) = impaired_run(43);
    assert_ne!(a, c, "different seeds, same run");
    // The run really was impaired, in both directions, and everything is accounted for.
    for d in [stats.up, stats.down] {
        assert_eq!(d.received, 300);
        assert!(d.lost > 20 && d.duplicated > 5 && d.reordered > 20 && d.corrupted > 5);
        assert_eq!(d.in_flight, 0);
    }
    assert_balanced(&stats);
}

#[test]
fn delays_are_carried_out_in_virtual_time() {
    let mut run = Run::new(config(LinkConfig::ideal(200 * MS), 1));
    let c = addr(5000);
    run.client_sends(c, b"x");
    assert!(run.sent.is_empty());
    assert_eq!(run.proxy.poll_timeout(), Some(run.start + 200 * MS));
    assert_eq!(run.proxy.stats().up.in_flight, 1);
    run.run_until(Duration::from_secs(1));
    assert_eq!(run.sent.len(), 1);
    assert_eq!(run.sent[0].0, 200 * MS);
    assert_eq!(run.proxy.held_bytes(), 0);
    assert_balanced(&run.proxy.stats());
}

#[test]
fn idle_clients_expire_and_free_their_place() {
    let mut cfg = config(LinkConfig::ideal(Duration::ZERO), 1);
    cfg.max_clients = 1;
    cfg.idle_timeout = Duration::from_secs(1);
    let mut run = Run::new(cfg);
    let (a, b) = (addr(5000), addr(5001));
    run.client_sends(a, b"a");
    run.jump(300 * MS);
    run.server_sends(ClientId(0), server(), b"reply");
    // The table is full: b is refused while a is active; said once, counted every time.
    run.client_sends(b, b"b");
    run.client_sends(b, b"b");
    let refusals = run
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::Refused {
                    reason: Refusal::TableFull,
                    ..
                }
            )
        })
        .count();
    assert_eq!(refusals, 2);
    let full = run
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::TableFull { max_clients: 1 }))
        .count();
    assert_eq!(full, 1);
    // Traffic in either direction keeps a client: a was last seen at 300 ms.
    run.run_until(1299 * MS);
    assert!(run.expired().is_empty(), "{:?}", run.events);
    run.run_until(Duration::from_secs(3));
    assert_eq!(run.expired(), [(1300 * MS, ClientId(0))]);
    assert_eq!(run.proxy.client_count(), 0);
    // Nothing left to wait for.
    assert_eq!(run.proxy.poll_timeout(), None);
    run.client_sends(b, b"b");
    assert_eq!(
        run.events.last().map(|(_, e)| e.clone()),
        Some(Event::ClientAdded {
            id: ClientId(1),
            addr: b
        })
    );
    // An upstream datagram for the expired client is refused.
    run.server_sends(ClientId(0), server(), b"late");
    let s = run.proxy.stats();
    assert_eq!((s.up.rejected, s.down.rejected), (2, 1));
    assert_eq!((s.up.forwarded, s.down.forwarded), (2, 1));
    assert_balanced(&s);
}

#[test]
fn a_client_with_datagrams_in_flight_does_not_expire() {
    let mut cfg = config(LinkConfig::ideal(Duration::from_secs(5)), 1);
    cfg.idle_timeout = Duration::from_secs(1);
    let mut run = Run::new(cfg);
    run.client_sends(addr(5000), b"slow");
    // `run_until` also checks that the sweep never turns into a busy loop.
    run.run_until(4999 * MS);
    assert!(run.expired().is_empty());
    run.run_until(Duration::from_secs(10));
    assert_eq!(run.sent.len(), 1);
    assert_eq!(run.sent[0].0, Duration::from_secs(5));
    let expired = run.expired();
    assert_eq!(expired.len(), 1);
    // Idle clients are looked for every quarter of the idle timeout (at most every second).
    assert!(
        (5000 * MS..=5250 * MS).contains(&expired[0].0),
        "{expired:?}"
    );
    // Its link counters outlive it.
    let s = run.proxy.stats();
    assert_eq!((s.up.received, s.up.forwarded, s.clients), (1, 1, 0));
    assert_balanced(&s);
}

#[test]
fn held_bytes_are_capped_and_given_back() {
    let mut cfg = config(LinkConfig::ideal(Duration::from_secs(1)), 1);
    cfg.max_held_bytes = 10 * (100 + HELD_OVERHEAD);
    let mut run = Run::new(cfg);
    let c = addr(5000);
    for _ in 0..15 {
        run.client_sends(c, &[7u8; 100]);
    }
    // Empty datagrams are charged too.
    run.client_sends(c, &[]);
    let s = run.proxy.stats();
    assert_eq!((s.up.in_flight, s.up.overflow), (10, 6));
    assert_eq!(run.proxy.held_bytes(), 10 * (100 + HELD_OVERHEAD));
    assert_balanced(&s);
    run.run_until(Duration::from_secs(2));
    assert_eq!(run.proxy.held_bytes(), 0);
    assert_eq!(run.sent.len(), 10);
    // Room again.
    run.client_sends(c, &[7u8; 100]);
    let s = run.proxy.stats();
    assert_eq!((s.up.in_flight, s.up.overflow), (1, 6));
    assert_balanced(&s);
}

#[test]
fn the_fixed_wire_drops_strangers_and_lets_the_far_side_start() {
    let (a, stranger) = (addr(5000), addr(5999));
    let mut cfg = config(LinkConfig::ideal(Duration::ZERO), 1);
    cfg.fixed_client = Some(a);
    cfg.idle_timeout = Duration::from_secs(1);
    let mut run = Run::new(cfg);
    let wire = run.proxy.fixed_client().expect("a fixed wire");
    assert_eq!(wire, ClientId(0));
    assert_eq!(run.proxy.client_count(), 1);
    // B speaks first: A has sent nothing, yet it gets B's datagram.
    run.server_sends(wire, server(), b"from B");
    assert_eq!(run.sent_in(Direction::Down), [b"from B".to_vec()]);
    assert_eq!(run.sent[0].1.destination, a);
    // A answers (from its v4-mapped form, as a dual-stack socket sees it).
    let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5000));
    run.client_sends(mapped, b"from A");
    assert_eq!(run.sent_in(Direction::Up), [b"from A".to_vec()]);
    // Strangers are dropped at both ends.
    run.client_sends(stranger, b"junk");
    run.server_sends(wire, stranger, b"junk");
    let refused: Vec<Refusal> = run
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Refused { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [Refusal::NotTheClient, Refusal::NotFromUpstream]);
    // No client is ever added, and the wire never expires.
    run.run_until(Duration::from_secs(3600));
    assert!(
        run.events
            .iter()
            .all(|(_, e)| matches!(e, Event::Refused { .. })),
        "{:?}",
        run.events
    );
    assert_eq!(run.proxy.poll_timeout(), None);
    let s = run.proxy.stats();
    assert_eq!((s.up.forwarded, s.down.forwarded), (1, 1));
    assert_eq!((s.up.rejected, s.down.rejected), (1, 1));
    assert_eq!(s.clients, 1);
    assert_balanced(&s);
}

#[test]
fn impairments_are_counted_per_direction() {
    let link = LinkConfig::ideal(Duration::ZERO)
        .with_duplicate(1.0)
        .with_corrupt(1.0)
        .with_mtu(100);
    let mut run = Run::new(config(link, 3));
    let c = addr(5000);
    for i in 0..10 {
        run.client_sends(c, &payload(b'c', i));
    }
    run.client_sends(c, &[0u8; 101]);
    run.server_sends(ClientId(0), server(), &payload(b'd', 0));
    let s = run.proxy.stats();
    assert_eq!(
        (
            s.up.received,
            s.up.duplicated,
            s.up.corrupted,
            s.up.oversize
        ),
        (11, 10, 20, 1)
    );
    assert_eq!((s.up.forwarded, s.up.bytes_forwarded), (20, 20 * 32));
    assert_eq!((s.down.received, s.down.forwarded), (1, 2));
    // Corruption flips bits, never the length.
    assert!(run.sent.iter().all(|(_, t)| t.contents.len() == 32));
    assert_balanced(&s);
}

#[test]
fn send_errors_and_failed_sockets_keep_the_totals() {
    let mut run = Run::new(config(LinkConfig::ideal(Duration::from_secs(1)), 1));
    let c = addr(5000);
    run.client_sends(c, b"one");
    run.run_until(Duration::from_secs(1));
    // The driver could not send it.
    let t = run.sent[0].1.clone();
    run.proxy.handle_send_error(&t);
    run.client_sends(c, b"two");
    run.server_sends(ClientId(0), server(), b"three");
    assert!(run.proxy.held_bytes() > 0);
    // The upstream socket fails: the client goes, its copies in flight become send errors.
    run.proxy.handle_upstream_failed(ClientId(0));
    assert_eq!(run.proxy.held_bytes(), 0);
    assert_eq!(run.proxy.client_count(), 0);
    let s = run.proxy.stats();
    assert_eq!((s.up.forwarded, s.up.send_errors), (0, 2));
    assert_eq!((s.down.forwarded, s.down.send_errors), (0, 1));
    assert_balanced(&s);
    // Datagrams due but not yet handed out count too.
    let mut run = Run::new(config(LinkConfig::ideal(Duration::ZERO), 1));
    run.proxy.handle_from_client(run.now, c, b"queued".to_vec());
    assert!(matches!(
        run.proxy.poll_event(),
        Some(Event::ClientAdded { .. })
    ));
    run.proxy.handle_upstream_failed(ClientId(0));
    assert_eq!(run.proxy.poll_transmit(), None);
    let s = run.proxy.stats();
    assert_eq!(s.up.send_errors, 1);
    assert_balanced(&s);
}

#[test]
fn a_rate_limit_spaces_each_direction_and_tail_drops_a_full_queue() {
    // 100 kB/s: a 1,000-byte datagram takes 10 ms on the wire; the queue holds 5 of them.
    let link = LinkConfig::ideal(20 * MS).with_rate(100_000, 5_000);
    let mut run = Run::new(config(link, 1));
    let c = addr(5000);
    // A burst of 8 up and, at the same instant, 3 down: each direction has its own link and
    // queue, so the down burst neither waits behind the up one nor takes its room.
    for i in 0..8u32 {
        let mut d = payload(b'u', i);
        d.resize(1_000, 0);
        run.client_sends(c, &d);
    }
    for i in 0..3u32 {
        let mut d = payload(b'd', i);
        d.resize(1_000, 0);
        run.server_sends(ClientId(0), server(), &d);
    }
    run.run_until(Duration::from_secs(1));
    let times = |dir: Direction| -> Vec<Duration> {
        run.sent
            .iter()
            .filter(|(_, t)| t.direction == dir)
            .map(|(at, _)| *at)
            .collect()
    };
    // Serialised one after another, then the fixed delay: 30, 40, ... ms.
    let up: Vec<Duration> = (1..=5).map(|k| (20 + 10 * k) * MS).collect();
    assert_eq!(times(Direction::Up), up);
    let down: Vec<Duration> = (1..=3).map(|k| (20 + 10 * k) * MS).collect();
    assert_eq!(times(Direction::Down), down);
    // The first five of the burst got through, in order; the last three found the queue full.
    let sent: Vec<u32> = run
        .sent_in(Direction::Up)
        .iter()
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    assert_eq!(sent, [0, 1, 2, 3, 4]);
    let s = run.proxy.stats();
    assert_eq!((s.up.queue_drops, s.up.lost), (3, 0));
    assert_eq!((s.down.queue_drops, s.down.forwarded), (0, 3));
    assert_balanced(&s);
    // Once the queue has drained, the link takes a datagram again, after 10 ms on the wire.
    let mut d = payload(b'u', 9);
    d.resize(1_000, 0);
    run.client_sends(c, &d);
    let at = run.elapsed();
    run.run_until(Duration::from_secs(2));
    assert_eq!(run.sent.last().map(|(t, _)| *t), Some(at + 30 * MS));
    assert_eq!(run.proxy.stats().up.forwarded, 6);
}
