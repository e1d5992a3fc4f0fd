//! The sans-IO core of `chirp impair`: a UDP impairment proxy as a state machine.
//!
//! # Model
//!
//! The proxy has a *listen* socket that clients send to, and one *upstream* socket per client
//! that talks to the server (`to`). Every client C gets its own [`Path`]: `a_to_b` is "up"
//! (C to the server), `b_to_a` is "down" (the server to C), each direction with its own seeded
//! random stream. The core opens no socket and reads no clock: the driver passes `now` and the
//! datagrams in, and carries out what comes out.
//!
//! - [`Proxy::handle_from_client`]: a datagram read on the listen socket. An unknown source
//!   becomes a new client ([`Event::ClientAdded`]: bind it an upstream socket), unless the
//!   table is full.
//! - [`Proxy::handle_from_upstream`]: a datagram read on client C's upstream socket; only
//!   datagrams from `to` pass.
//! - [`Proxy::handle_timeout`]: at [`Proxy::poll_timeout`], delivers what is due and forgets
//!   idle clients.
//! - [`Proxy::poll_transmit`]: a datagram to send now, from the listen socket to a client
//!   ([`Direction::Down`]) or from a client's upstream socket to `to` ([`Direction::Up`]).
//! - [`Proxy::poll_event`]: clients added and expired, datagrams refused.
//!
//! After every `handle_*` call, drain [`Proxy::poll_event`] *first* (so a new client's upstream
//! socket exists), then [`Proxy::poll_transmit`], then wait until [`Proxy::poll_timeout`] or
//! the next datagram.
//!
//! # Fixed wire
//!
//! With [`ProxyConfig::fixed_client`], the proxy is a wire with two ends between two peers that
//! each send to one fixed address: the one client (index 0) exists from the start and never
//! expires, its "upstream" socket is the far end that faces `to`, datagrams from `to` reach it
//! before it has sent anything, and datagrams on the listen socket from anyone else are
//! refused.
//!
//! # Invariants
//!
//! - Deliveries: after every offer, whatever is already due goes out at once (a zero delay
//!   costs no timer round trip); a min-heap of `(time, client)` wake-ups covers the rest. The
//!   heap always holds, for every client with datagrams in flight, an entry no later than that
//!   client's next delivery; stale entries are harmless (popping one delivers nothing).
//! - Memory is bounded: at most [`ProxyConfig::max_clients`] clients, idle ones expire, and
//!   datagrams held for delayed delivery are capped in total bytes
//!   ([`ProxyConfig::max_held_bytes`]; beyond it they count as `overflow`).
//! - Every datagram is accounted for, per direction: `received + duplicated = forwarded + lost
//!   + queue_drops + oversize + rejected + overflow + send_errors + in_flight` (see
//!   [`DirectionStats`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::link::{LinkConfig, LinkStats, Path};

/// Bookkeeping charged per held datagram on top of its payload, so a flood of empty datagrams
/// is bounded too.
pub const HELD_OVERHEAD: usize = 64;

/// Idle clients are looked for at most once per a quarter of the idle timeout, and never more
/// often than this, so the sweep (which visits every client) costs O(clients) per quarter
/// timeout at most, whatever the traffic, and expiry comes at most that late.
const MAX_SWEEP_GAP: Duration = Duration::from_secs(1);
/// The shortest gap between sweeps, so even a zero idle timeout is no busy loop.
const MIN_SWEEP_GAP: Duration = Duration::from_millis(1);

/// What [`Proxy`] needs to know; see [`ProxyConfig::new`] for the defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where client datagrams are forwarded (the server; with a fixed wire, peer B).
    pub to: SocketAddr,
    /// The impairments, applied in both directions of every client.
    pub link: LinkConfig,
    /// Seed of every random decision.
    pub seed: u64,
    /// Fixed wire: the one client (peer A), known in advance.
    pub fixed_client: Option<SocketAddr>,
    /// Most clients at once; datagrams from further clients are refused.
    pub max_clients: usize,
    /// A client with nothing in flight is forgotten after this long without traffic in either
    /// direction (never the fixed wire's): idle clients are looked for every quarter of it (at
    /// most every second), so expiry comes at most that late.
    pub idle_timeout: Duration,
    /// Total bytes (payload + [`HELD_OVERHEAD`] per copy) held for delayed delivery.
    pub max_held_bytes: usize,
}

impl ProxyConfig {
    /// Forwarding to `to` through `link`: at most 64 clients, 60 s idle timeout, 64 MiB held.
    #[must_use]
    pub fn new(to: SocketAddr, link: LinkConfig, seed: u64) -> Self {
        Self {
            to,
            link,
            seed,
            fixed_client: None,
            max_clients: 64,
            idle_timeout: Duration::from_secs(60),
            max_held_bytes: 64 << 20,
        }
    }
}

/// A client of the proxy: its index, in order of arrival from 0 (the fixed wire's is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// Up: client to server. Down: server to client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: sent from the client's upstream socket to `to`.
    Up,
    /// Server to client: sent from the listen socket to the client.
    Down,
}

/// A datagram to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The client whose path it travelled.
    pub client: ClientId,
    /// [`Direction::Up`]: send from `client`'s upstream socket; [`Direction::Down`]: from the
    /// listen socket.
    pub direction: Direction,
    /// The server (`to`) going up, the client's address going down.
    pub destination: SocketAddr,
    /// The (possibly corrupted) datagram.
    pub contents: Vec<u8>,
}

/// Why a datagram was refused (counted as `rejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Fixed wire: a datagram on the listen socket from someone other than the client.
    NotTheClient,
    /// A datagram on an upstream socket from someone other than `to`.
    NotFromUpstream,
    /// The client table is full.
    TableFull,
    /// A datagram for a client that is gone (read just before it expired).
    UnknownClient,
}

/// Something the driver should know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new client: bind it an upstream socket before sending its [`Transmit`]s, and pass what
    /// that socket receives to [`Proxy::handle_from_upstream`]. If the socket cannot be had,
    /// call [`Proxy::handle_upstream_failed`]. (Not emitted for the fixed wire's client.)
    ClientAdded {
        /// Its index.
        id: ClientId,
        /// Its address (as seen on the listen socket).
        addr: SocketAddr,
    },
    /// A client was idle for the idle timeout: close its upstream socket.
    ClientExpired {
        /// Its index.
        id: ClientId,
        /// Its address.
        addr: SocketAddr,
    },
    /// The client table just became full: datagrams from new clients are refused until idle
    /// ones expire. Said once each time the table fills.
    TableFull {
        /// [`ProxyConfig::max_clients`].
        max_clients: usize,
    },
    /// A datagram was refused.
    Refused {
        /// The direction it would have gone.
        direction: Direction,
        /// Its source.
        from: SocketAddr,
        /// Why.
        reason: Refusal,
    },
}

/// One direction's counters. Every datagram is accounted for:
/// `received + duplicated = forwarded + lost + queue_drops + oversize + rejected + overflow
/// + send_errors + in_flight`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams handed to the proxy.
    pub received: u64,
    /// Datagram copies handed out by [`Proxy::poll_transmit`] (duplicates included), less those
    /// reported with [`Proxy::handle_send_error`].
    pub forwarded: u64,
    /// Dropped by loss or burst loss (or a blackout).
    pub lost: u64,
    /// Tail-dropped by the rate limit's full queue ([`LinkConfig::rate_bytes_per_sec`],
    /// [`LinkConfig::queue_bytes`]): the sender is faster than the link.
    pub queue_drops: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Copies held back by reordering.
    pub reordered: u64,
    /// Copies with flipped bits.
    pub corrupted: u64,
    /// Dropped for exceeding the MTU.
    pub oversize: u64,
    /// Dropped as not from a known peer (wrong source, client table full, client expired).
    pub rejected: u64,
    /// Dropped because too many bytes were already held for delayed delivery.
    pub overflow: u64,
    /// Copies that could not be sent (the driver said so, or the client's socket failed).
    pub send_errors: u64,
    /// Copies waiting for their delivery time or for [`Proxy::poll_transmit`].
    pub in_flight: u64,
    /// Bytes of the `received` datagrams.
    pub bytes_received: u64,
    /// Bytes of the `forwarded` copies.
    pub bytes_forwarded: u64,
}

impl DirectionStats {
    fn add_link(&mut self, s: &LinkStats) {
        // Blackouts are not configured by the proxy; fold any into `lost` so the sum above
        // holds whatever the model does.
        self.lost += s.lost + s.blackout_drops;
        self.queue_drops += s.queue_drops;
        self.duplicated += s.duplicated;
        self.reordered += s.reordered;
        self.corrupted += s.corrupted;
        self.oversize += s.oversize;
    }

    fn add_retired(&mut self, r: &Self) {
        self.lost += r.lost;
        self.queue_drops += r.queue_drops;
        self.duplicated += r.duplicated;
        self.reordered += r.reordered;
        self.corrupted += r.corrupted;
        self.oversize += r.oversize;
    }
}

/// Both directions' counters, and the clients served now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client to server.
    pub up: DirectionStats,
    /// Server to client.
    pub down: DirectionStats,
    /// Clients in the table.
    pub clients: usize,
}

/// `a` and `b` are the same endpoint, treating `::ffff:1.2.3.4` as `1.2.3.4`.
#[must_use]
pub fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Seed of client number `index`'s two links: distinct for every index under one run seed
/// (odd multiplier: a bijection), and client 0 uses the run seed itself.
#[must_use]
pub fn client_seed(seed: u64, index: u64) -> u64 {
    seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn held_charge(len: usize) -> usize {
    len.saturating_add(HELD_OVERHEAD)
}

fn byte_count(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// One client: its address and its two links.
#[derive(Debug)]
struct Client {
    addr: SocketAddr,
    /// `a_to_b` is up (client to server), `b_to_a` is down.
    path: Path,
    last_seen: Instant,
    /// This client's share of [`Proxy::held_bytes`].
    held_bytes: usize,
    /// The fixed wire's client never expires.
    fixed: bool,
}

impl Client {
    fn next_delivery(&self) -> Option<Instant> {
        match (
            self.path.a_to_b.next_delivery(),
            self.path.b_to_a.next_delivery(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn in_flight(&self) -> usize {
        self.path.a_to_b.in_flight() + self.path.b_to_a.in_flight()
    }
}

/// The proxy's whole state; see the module docs.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    clients: HashMap<ClientId, Client>,
    by_addr: HashMap<SocketAddr, ClientId>,
    next_index: u64,
    /// Wake-ups `(time, client)`; see the module docs for the invariant.
    timers: BinaryHeap<Reverse<(Instant, ClientId)>>,
    /// When to look for idle clients next (`None`: no client can expire).
    sweep_at: Option<Instant>,
    held_bytes: usize,
    up: DirectionStats,
    down: DirectionStats,
    /// Link counters of clients gone, so totals never go backwards.
    retired_up: DirectionStats,
    retired_down: DirectionStats,
    table_full_reported: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Proxy {
    /// A proxy with no clients yet, or, for a fixed wire, with its one client (index 0), which
    /// the driver gives the far end's socket. `now` is when the fixed client was last seen.
    #[must_use]
    pub fn new(config: ProxyConfig, now: Instant) -> Self {
        let mut proxy = Self {
            config,
            clients: HashMap::new(),
            by_addr: HashMap::new(),
            next_index: 0,
            timers: BinaryHeap::new(),
            sweep_at: None,
            held_bytes: 0,
            up: DirectionStats::default(),
            down: DirectionStats::default(),
            retired_up: DirectionStats::default(),
            retired_down: DirectionStats::default(),
            table_full_reported: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if let Some(client) = proxy.config.fixed_client {
            proxy.add_client(client, true, now);
        }
        proxy
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The fixed wire's client, if this is a fixed wire.
    #[must_use]
    pub fn fixed_client(&self) -> Option<ClientId> {
        self.config.fixed_client.map(|_| ClientId(0))
    }

    /// Clients in the table now.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The address of client `id`, if it is in the table.
    #[must_use]
    pub fn client_addr(&self, id: ClientId) -> Option<SocketAddr> {
        self.clients.get(&id).map(|c| c.addr)
    }

    /// Bytes held for delayed delivery now (payload + [`HELD_OVERHEAD`] per copy).
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Call with every datagram read on the listen socket.
    pub fn handle_from_client(&mut self, now: Instant, from: SocketAddr, datagram: Vec<u8>) {
        self.up.received += 1;
        self.up.bytes_received = self
            .up
            .bytes_received
            .saturating_add(byte_count(datagram.len()));
        let id = if let Some(fixed) = self.config.fixed_client {
            // The fixed wire has exactly one client, created at start with index 0.
            if !same_endpoint(from, fixed) {
                self.refuse(Direction::Up, from, Refusal::NotTheClient);
                return;
            }
            ClientId(0)
        } else if let Some(&id) = self.by_addr.get(&from) {
            id
        } else if self.clients.len() >= self.config.max_clients {
            if !self.table_full_reported {
                self.table_full_reported = true;
                self.events.push_back(Event::TableFull {
                    max_clients: self.config.max_clients,
                });
            }
            self.refuse(Direction::Up, from, Refusal::TableFull);
            return;
        } else {
            let id = self.add_client(from, false, now);
            self.events.push_back(Event::ClientAdded { id, addr: from });
            id
        };
        self.offer(id, Direction::Up, datagram, now);
    }

    /// Call with every datagram read on client `client`'s upstream socket.
    pub fn handle_from_upstream(
        &mut self,
        now: Instant,
        client: ClientId,
        from: SocketAddr,
        datagram: Vec<u8>,
    ) {
        self.down.received += 1;
        self.down.bytes_received = self
            .down
            .bytes_received
            .saturating_add(byte_count(datagram.len()));
        if !self.clients.contains_key(&client) {
            self.refuse(Direction::Down, from, Refusal::UnknownClient);
            return;
        }
        if !same_endpoint(from, self.config.to) {
            self.refuse(Direction::Down, from, Refusal::NotFromUpstream);
            return;
        }
        self.offer(client, Direction::Down, datagram, now);
    }

    /// Call when [`poll_timeout`](Self::poll_timeout)'s time has come (calling earlier or
    /// later is harmless): delivers what is due and forgets idle clients.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ids = Vec::new();
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.deliver_due(id, now);
            if let Some(next) = self.clients.get(&id).and_then(Client::next_delivery) {
                self.timers.push(Reverse((next, id)));
            }
        }
        if self.sweep_at.is_some_and(|t| t <= now) {
            self.expire_idle(now);
        }
    }

    /// Call when client `id`'s upstream socket cannot be had or failed for good: the client is
    /// dropped, and its copies in flight or not yet transmitted count as send errors. (For the
    /// fixed wire this leaves a proxy that refuses everything; drivers usually stop.)
    pub fn handle_upstream_failed(&mut self, id: ClientId) {
        let Some(c) = self.remove_client(id) else {
            return;
        };
        // Copies still in flight will never be sent: count them as send errors so the totals
        // still add up, and give back their share of the memory budget.
        self.up.send_errors += byte_count(c.path.a_to_b.in_flight());
        self.down.send_errors += byte_count(c.path.b_to_a.in_flight());
        self.held_bytes = self.held_bytes.saturating_sub(c.held_bytes);
        let (up, down) = (&mut self.up, &mut self.down);
        self.transmits.retain(|t| {
            if t.client != id {
                return true;
            }
            match t.direction {
                Direction::Up => up.send_errors += 1,
                Direction::Down => down.send_errors += 1,
            }
            false
        });
    }

    /// Call when a datagram handed out by [`poll_transmit`](Self::poll_transmit) could not be
    /// sent: it is counted as a send error instead of forwarded.
    pub fn handle_send_error(&mut self, transmit: &Transmit) {
        let c = match transmit.direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        };
        c.forwarded = c.forwarded.saturating_sub(1);
        c.bytes_forwarded = c
            .bytes_forwarded
            .saturating_sub(byte_count(transmit.contents.len()));
        c.send_errors += 1;
    }

    /// The next datagram to send now. Call after every `handle_*` until `None` (after
    /// [`poll_event`](Self::poll_event), so new clients have their sockets).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        let c = match t.direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        };
        c.forwarded += 1;
        c.bytes_forwarded = c
            .bytes_forwarded
            .saturating_add(byte_count(t.contents.len()));
        Some(t)
    }

    /// The next event. Call after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, or `None` if nothing is
    /// pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        match (timer, self.sweep_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The counters so far, over all clients past and present.
    #[must_use]
    pub fn stats(&self) -> ProxyStats {
        let mut up = self.up;
        let mut down = self.down;
        up.add_retired(&self.retired_up);
        down.add_retired(&self.retired_down);
        for c in self.clients.values() {
            up.add_link(&c.path.a_to_b.stats());
            down.add_link(&c.path.b_to_a.stats());
            up.in_flight += byte_count(c.path.a_to_b.in_flight());
            down.in_flight += byte_count(c.path.b_to_a.in_flight());
        }
        for t in &self.transmits {
            match t.direction {
                Direction::Up => up.in_flight += 1,
                Direction::Down => down.in_flight += 1,
            }
        }
        ProxyStats {
            up,
            down,
            clients: self.clients.len(),
        }
    }

    fn refuse(&mut self, direction: Direction, from: SocketAddr, reason: Refusal) {
        match direction {
            Direction::Up => self.up.rejected += 1,
            Direction::Down => self.down.rejected += 1,
        }
        self.events.push_back(Event::Refused {
            direction,
            from,
            reason,
        });
    }

    fn add_client(&mut self, addr: SocketAddr, fixed: bool, now: Instant) -> ClientId {
        let id = ClientId(self.next_index);
        let seed = client_seed(self.config.seed, self.next_index);
        self.next_index += 1;
        self.clients.insert(
            id,
            Client {
                addr,
                path: Path::symmetric(self.config.link.clone(), seed),
                last_seen: now,
                held_bytes: 0,
                fixed,
            },
        );
        self.by_addr.insert(addr, id);
        if !fixed {
            // Deadlines only grow, so an earlier sweep stays the right one.
            if let Some(deadline) = now.checked_add(self.config.idle_timeout) {
                self.sweep_at = Some(self.sweep_at.map_or(deadline, |t| t.min(deadline)));
            }
        }
        id
    }

    /// Removes client `id` from the table, keeping its link counters.
    fn remove_client(&mut self, id: ClientId) -> Option<Client> {
        let c = self.clients.remove(&id)?;
        self.by_addr.remove(&c.addr);
        self.retired_up.add_link(&c.path.a_to_b.stats());
        self.retired_down.add_link(&c.path.b_to_a.stats());
        if self.clients.len() < self.config.max_clients {
            self.table_full_reported = false;
        }
        Some(c)
    }

    /// Puts a datagram into a client's link, queues whatever is due, and keeps a wake-up for
    /// the rest.
    fn offer(&mut self, id: ClientId, dir: Direction, data: Vec<u8>, now: Instant) {
        let charge = held_charge(data.len());
        if self.held_bytes.saturating_add(charge) > self.config.max_held_bytes {
            match dir {
                Direction::Up => self.up.overflow += 1,
                Direction::Down => self.down.overflow += 1,
            }
            return;
        }
        let Some(client) = self.clients.get_mut(&id) else {
            // Callers check that the client exists; count it anyway so the totals add up.
            match dir {
                Direction::Up => self.up.rejected += 1,
                Direction::Down => self.down.rejected += 1,
            }
            return;
        };
        client.last_seen = now;
        let before_next = client.next_delivery();
        let link = match dir {
            Direction::Up => &mut client.path.a_to_b,
            Direction::Down => &mut client.path.b_to_a,
        };
        let before = link.in_flight();
        link.send(now, data);
        // Every copy has the original length (corruption flips bits, never resizes).
        let added = link
            .in_flight()
            .saturating_sub(before)
            .saturating_mul(charge);
        client.held_bytes = client.held_bytes.saturating_add(added);
        self.held_bytes = self.held_bytes.saturating_add(added);
        self.deliver_due(id, now);
        // Keep the wake-up invariant: a new entry is needed only if this client's next
        // delivery moved earlier (or it had none); otherwise an existing entry covers it.
        let next = self.clients.get(&id).and_then(Client::next_delivery);
        if let Some(next) = next {
            if before_next.is_none_or(|b| next < b) {
                self.timers.push(Reverse((next, id)));
            }
        }
    }

    /// Queues every datagram of client `id` whose time has come.
    fn deliver_due(&mut self, id: ClientId, now: Instant) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let to = self.config.to;
        let mut released = 0usize;
        for (direction, link, destination) in [
            (Direction::Up, &mut client.path.a_to_b, to),
            (Direction::Down, &mut client.path.b_to_a, client.addr),
        ] {
            while let Some(contents) = link.poll_deliver(now) {
                released = released.saturating_add(held_charge(contents.len()));
                self.transmits.push_back(Transmit {
                    client: id,
                    direction,
                    destination,
                    contents,
                });
            }
        }
        client.held_bytes = client.held_bytes.saturating_sub(released);
        self.held_bytes = self.held_bytes.saturating_sub(released);
    }

    /// Forgets clients idle for the idle timeout with nothing in flight, and plans the next
    /// sweep.
    fn expire_idle(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        let mut expired: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                !c.fixed && c.in_flight() == 0 && now.saturating_duration_since(c.last_seen) >= idle
            })
            .map(|(&id, _)| id)
            .collect();
        // Deterministic event order, whatever the hash map's.
        expired.sort_unstable();
        for id in expired {
            if let Some(c) = self.remove_client(id) {
                self.events
                    .push_back(Event::ClientExpired { id, addr: c.addr });
            }
        }
        let earliest = self
            .clients
            .values()
            .filter(|c| !c.fixed)
            .filter_map(|c| c.last_seen.checked_add(idle))
            .min();
        // A client past its deadline but with copies in flight is looked at again later, never
        // in a busy loop.
        let gap = (idle / 4).clamp(MIN_SWEEP_GAP, MAX_SWEEP_GAP);
        self.sweep_at = earliest.map(|t| now.checked_add(gap).map_or(t, |n| t.max(n)));
    }
}

#[cfg(test)]
mod tests;
