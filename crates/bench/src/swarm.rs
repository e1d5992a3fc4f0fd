//! A swarm: many sans-IO chat sessions ([`Session`]) over ONE sans-IO transport endpoint
//! ([`Endpoint`]) on ONE UDP socket, driven by one loop on a thread of its own.
//!
//! There is no task and no channel per session. The loop:
//!
//! 1. receives datagrams, draining the socket (up to [`RECV_BATCH`]) before writing, and
//!    hands each to the endpoint;
//! 2. fires what is due: the endpoint's timer, the sessions' deadlines (a [`BTreeSet`] keyed
//!    by `(Instant, index)`, kept up to date whenever a session's deadline moves) and the
//!    scenario's;
//! 3. routes every endpoint event to the session owning its connection (a
//!    `HashMap<ConnectionHandle, usize>`), which joins the ready list;
//! 4. runs the ready sessions only: answers their [`Io`] against the endpoint, and hands
//!    their chat [`Event`]s to the [`Scenario`], which may make sessions `say` things or add
//!    sessions;
//! 5. transmits everything the endpoint has, and sleeps until the earliest deadline, a
//!    datagram, or a poke from the thread that started it ([`SwarmHandle::poke`]).
//!
//! Every step costs in proportion to what happened, never to the number of sessions.
//!
//! Sessions are let in a few at a time ([`SwarmConfig::max_setup`]): a session counts as "in
//! setup" from its start to its `welcome` (or its end), and the rest wait their turn. That
//! keeps the server's handshakes in flight below the load threshold of its per-address
//! handshake limit, where they would be throttled.
//!
//! Several swarms may run at once, each on its own loopback address ([`bind_addr`]), so
//! that a server's per-address limits see several sources.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chirp_chat::client::{ClientConfig, Event, Io, Session, Target};
use chirp_proto::{ConnectionHandle, Endpoint, EndpointConfig};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::BenchError;

/// Datagrams read in one wake-up before the sessions run and output goes out.
pub const RECV_BATCH: usize = 256;
/// Largest datagram read (the IPv4 maximum fits).
const RECV_BUFFER: usize = 65_536;
/// How often a swarm logs its counters (at debug level: `RUST_LOG=chirp_bench=debug`).
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long a stopping swarm waits for its connections to close gracefully.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The `i`th swarm's local address: `127.0.0.(2+i)`, any port. Linux routes all of
/// 127.0.0.0/8 to the loopback interface, so each swarm is a source address of its own.
pub fn bind_addr(i: usize) -> SocketAddr {
    let last = u8::try_from(2 + i % 250).unwrap_or(2);
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0))
}

/// How a swarm runs.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The local address of its socket (see [`bind_addr`]).
    pub bind: SocketAddr,
    /// Sessions in setup (started, not yet welcomed) at once; the others wait.
    pub max_setup: usize,
    /// The endpoint's settings; see [`endpoint_config`].
    pub endpoint: EndpointConfig,
}

/// The endpoint settings of a swarm whose sessions are like `template`: the client's own
/// ([`chirp_chat::client::driver::endpoint_config`]: keep-alives, idle timeout, no incoming
/// connections), room for `sessions` connections (and as many closing), and a random static
/// key of the endpoint's own (each session proves its own key: [`Endpoint::connect_as`]).
pub fn endpoint_config(template: &ClientConfig, sessions: usize) -> EndpointConfig {
    let mut ep = chirp_chat::client::driver::endpoint_config(template);
    ep.max_connections = sessions.saturating_mul(2).saturating_add(64);
    ep.identity = Some(crate::fanout::fresh_key());
    ep
}

/// What a scenario does with a swarm's sessions. Every method gets the sessions
/// ([`Sessions`]) to act on: `say`, `finish`, `add`.
pub trait Scenario: Send + 'static {
    /// Session `session` reported `event`.
    fn on_event(&mut self, now: Instant, session: usize, event: Event, sessions: &mut Sessions);

    /// When [`Scenario::handle_timeout`] is due next.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The instant from [`Scenario::poll_timeout`] has passed.
    fn handle_timeout(&mut self, _now: Instant, _sessions: &mut Sessions) {}

    /// The thread that started the swarm poked it ([`SwarmHandle::poke`]): shared state the
    /// scenario reads may have changed.
    fn poke(&mut self, _now: Instant, _sessions: &mut Sessions) {}

    /// The swarm may stop: it then finishes its sessions and returns.
    fn is_done(&self) -> bool;
}

/// One session's place in the swarm.
#[derive(Debug, Default)]
struct Slot {
    /// `None` while it waits to start, and once it ended.
    session: Option<Session>,
    /// Its configuration while it waits to start.
    waiting: Option<ClientConfig>,
    /// Its latest connection.
    conn: Option<ConnectionHandle>,
    /// Its deadline as the timer set holds it.
    deadline: Option<Instant>,
    /// In the ready list.
    queued: bool,
    /// Started and not yet welcomed (nor ended).
    setting_up: bool,
}

/// A swarm's sessions, as a [`Scenario`] sees them.
#[derive(Debug, Default)]
pub struct Sessions {
    slots: Vec<Slot>,
    /// Slots of ended sessions, for reuse.
    free: Vec<usize>,
    /// Sessions something happened to, each once.
    ready: VecDeque<usize>,
    /// Each running session's deadline.
    timers: BTreeSet<(Instant, usize)>,
    /// Sessions added and not yet started, in order.
    waiting: VecDeque<usize>,
    /// Sessions in setup.
    in_setup: usize,
    /// Sessions running (started, not ended).
    running: usize,
    /// Which session owns each connection.
    by_conn: HashMap<ConnectionHandle, usize>,
}

impl Sessions {
    /// Adds a session with `config` (its `bind` is ignored: it runs on the swarm's socket);
    /// it starts when a setup slot is free. Returns its index, which stays its own until it
    /// ends (an ended session's index may be given to a later one).
    pub fn add(&mut self, config: ClientConfig) -> usize {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        self.slots[i] = Slot {
            waiting: Some(config),
            ..Slot::default()
        };
        self.waiting.push_back(i);
        i
    }

    /// Session `i` says `text` in `target` (see [`Session::say`]); `None` if it is not
    /// running.
    pub fn say(&mut self, now: Instant, i: usize, target: Target, text: String) -> Option<u64> {
        let s = self.slots.get_mut(i)?.session.as_mut()?;
        let c = s.say(now, target, text, false);
        self.wake(i);
        Some(c)
    }

    /// Session `i` finishes: once its messages are acknowledged it closes and ends
    /// ([`Event::Finished`]). A session still waiting to start is dropped.
    pub fn finish(&mut self, now: Instant, i: usize) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if slot.waiting.take().is_some() {
            self.waiting.retain(|&w| w != i);
            self.free.push(i);
            return;
        }
        if let Some(s) = slot.session.as_mut() {
            s.finish(now);
            self.wake(i);
        }
    }

    /// Sessions running (started and not ended).
    pub fn running(&self) -> usize {
        self.running
    }

    /// Sessions added and not yet started.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn wake(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i)
            && !slot.queued
        {
            slot.queued = true;
            self.ready.push_back(i);
        }
    }

    /// Starts waiting sessions while fewer than `max_setup` are in setup.
    fn admit(&mut self, now: Instant, max_setup: usize) {
        while self.in_setup < max_setup {
            let Some(i) = self.waiting.pop_front() else {
                return;
            };
            let Some(config) = self.slots[i].waiting.take() else {
                continue;
            };
            let mut s = Session::new(config, now, chirp_transport::random_seed());
            // A new session connects at once: its first deadline is `now`.
            s.handle_timeout(now);
            let slot = &mut self.slots[i];
            slot.session = Some(s);
            slot.setting_up = true;
            self.in_setup += 1;
            self.running += 1;
            self.wake(i);
        }
    }

    /// Moves session `i`'s entry in the timer set to `deadline`.
    fn set_deadline(&mut self, i: usize, deadline: Option<Instant>) {
        let slot = &mut self.slots[i];
        if slot.deadline == deadline {
            return;
        }
        if let Some(t) = slot.deadline {
            self.timers.remove(&(t, i));
        }
        if let Some(t) = deadline {
            self.timers.insert((t, i));
        }
        slot.deadline = deadline;
    }

    /// Fires the deadlines due at `now`.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(t, i)) = self.timers.first() {
            if t > now {
                return;
            }
            self.timers.pop_first();
            let slot = &mut self.slots[i];
            slot.deadline = None;
            if let Some(s) = slot.session.as_mut() {
                s.handle_timeout(now);
                self.wake(i);
            }
        }
    }

    /// Session `i` is no longer in setup.
    fn set_up(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if std::mem::take(&mut slot.setting_up) {
            self.in_setup -= 1;
        }
    }

    /// Frees the slot of session `i`, which has ended: its memory goes, and its connection
    /// (closing) is no longer routed to it.
    fn release(&mut self, i: usize) {
        self.set_up(i);
        self.set_deadline(i, None);
        let slot = &mut self.slots[i];
        if slot.session.take().is_some() {
            self.running -= 1;
        }
        if let Some(c) = slot.conn.take() {
            self.by_conn.remove(&c);
        }
        self.free.push(i);
    }
}

/// What a swarm counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwarmStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Wake-ups of the loop.
    pub wakeups: u64,
}

/// The starting thread's side of a running swarm.
#[derive(Debug, Clone)]
pub struct SwarmHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    poke: Notify,
}

impl SwarmHandle {
    /// Wakes the swarm to call [`Scenario::poke`].
    pub fn poke(&self) {
        self.shared.poke.notify_one();
    }

    /// Tells the swarm to finish its sessions and return.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.poke.notify_one();
    }

    /// The swarm's socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A swarm running on its own thread: [`Swarm::join`] waits for its scenario back.
#[derive(Debug)]
pub struct Swarm<S> {
    handle: SwarmHandle,
    thread: std::thread::JoinHandle<Result<(S, SwarmStats), BenchError>>,
}

impl<S: Scenario> Swarm<S> {
    /// Binds the socket and starts the swarm's thread, running `scenario` (which adds the
    /// sessions, at its first [`Scenario::poke`] or [`Scenario::handle_timeout`]: `setup`
    /// is called first, with the sessions, to add the initial ones).
    pub fn start(
        config: SwarmConfig,
        mut scenario: S,
        setup: impl FnOnce(&mut S, &mut Sessions) + Send + 'static,
    ) -> Result<Self, BenchError> {
        let socket =
            chirp_transport::bind(config.bind).map_err(BenchError::io("bind a swarm socket"))?;
        let local_addr = socket
            .local_addr()
            .map_err(BenchError::io("read a swarm socket's address"))?;
        let shared = Arc::new(Shared::default());
        let handle = SwarmHandle {
            shared: Arc::clone(&shared),
            local_addr,
        };
        let thread = std::thread::Builder::new()
            .name(format!("swarm {local_addr}"))
            .spawn(move || {
                // Every log line of this swarm says which one it is.
                let _span = tracing::debug_span!("swarm", local = %local_addr).entered();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(BenchError::io("start a swarm's runtime"))?;
                rt.block_on(async move {
                    let socket = UdpSocket::from_std(socket)
                        .map_err(BenchError::io("register a swarm socket"))?;
                    let mut sessions = Sessions::default();
                    setup(&mut scenario, &mut sessions);
                    let mut driver = Driver {
                        endpoint: Endpoint::new(
                            config.endpoint.clone(),
                            chirp_transport::random_seed(),
                        ),
                        socket,
                        sessions,
                        max_setup: config.max_setup.max(1),
                        shared,
                        stats: SwarmStats::default(),
                        events: Vec::new(),
                        datagram: Vec::new(),
                    };
                    driver.run(&mut scenario).await?;
                    Ok((scenario, driver.stats))
                })
            })
            .map_err(BenchError::io("start a swarm thread"))?;
        Ok(Self { handle, thread })
    }

    /// The handle to poke or stop it.
    pub fn handle(&self) -> &SwarmHandle {
        &self.handle
    }

    /// Waits (blocking the calling thread) until the swarm has stopped; returns its
    /// scenario, with whatever it gathered, and its counters.
    pub fn join(self) -> Result<(S, SwarmStats), BenchError> {
        self.thread
            .join()
            .map_err(|_| BenchError::Stuck("a swarm thread panicked".into()))?
    }
}

struct Driver {
    endpoint: Endpoint,
    socket: UdpSocket,
    sessions: Sessions,
    max_setup: usize,
    shared: Arc<Shared>,
    stats: SwarmStats,
    /// The events of the session being run (reused).
    events: Vec<Event>,
    /// The datagram being sent (reused).
    datagram: Vec<u8>,
}

/// Errors a UDP socket reports for an earlier datagram, or none at all: the loop goes on.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::Interrupted
            | K::WouldBlock
    )
}

impl Driver {
    async fn run<S: Scenario>(&mut self, scenario: &mut S) -> Result<(), BenchError> {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut stopping: Option<Instant> = None;
        let mut report_at = Instant::now();
        loop {
            let now = Instant::now();
            if now >= report_at && tracing::enabled!(tracing::Level::DEBUG) {
                report_at = now + REPORT_EVERY;
                let s = &self.sessions;
                tracing::debug!(
                    running = s.running,
                    waiting = s.waiting.len(),
                    in_setup = s.in_setup,
                    timers = s.timers.len(),
                    connections = s.by_conn.len(),
                    stats = ?self.stats,
                    endpoint = ?self.endpoint.endpoint_stats(),
                    "swarm"
                );
            }
            self.fire(now, scenario);
            self.settle(now, scenario);
            self.flush(now).await;
            if stopping.is_none()
                && (scenario.is_done() || self.shared.stop.load(Ordering::Acquire))
            {
                // Leave: every session says goodbye and closes gracefully.
                stopping = Some(now + CLOSE_GRACE);
                self.sessions.waiting.clear();
                for i in 0..self.sessions.slots.len() {
                    self.sessions.finish(now, i);
                }
                continue;
            }
            if let Some(end) = stopping
                && (now >= end || self.endpoint.connections().next().is_none())
            {
                tracing::debug!(
                    stats = ?self.stats,
                    endpoint = ?self.endpoint.endpoint_stats(),
                    "swarm stopped"
                );
                return Ok(());
            }
            let deadline = [
                self.endpoint.poll_timeout(),
                self.sessions.timers.first().map(|&(t, _)| t),
                scenario.poll_timeout(),
                stopping,
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            self.stats.wakeups += 1;
            tokio::select! {
                biased;
                () = self.shared.poke.notified() => {
                    scenario.poke(Instant::now(), &mut self.sessions);
                }
                r = self.socket.recv_from(&mut buf) => {
                    let now = Instant::now();
                    match r {
                        Ok((n, from)) => {
                            self.stats.datagrams_in += 1;
                            self.endpoint.handle_datagram(now, from, &buf[..n]);
                        }
                        Err(e) if is_transient(&e) => {}
                        Err(e) => return Err(BenchError::Io {
                            what: "receive on a swarm socket".into(),
                            source: e,
                        }),
                    }
                    // Drain what else is queued, up to a batch, before writing again.
                    for _ in 1..RECV_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                self.stats.datagrams_in += 1;
                                self.endpoint.handle_datagram(now, from, &buf[..n]);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) if is_transient(&e) => {}
                            Err(e) => return Err(BenchError::Io {
                                what: "receive on a swarm socket".into(),
                                source: e,
                            }),
                        }
                    }
                }
                () = sleep => {}
            }
        }
    }

    /// Fires every deadline due at `now`: the endpoint's, the sessions', the scenario's; and
    /// starts waiting sessions for which there is room.
    fn fire<S: Scenario>(&mut self, now: Instant, scenario: &mut S) {
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.sessions.fire_timers(now);
        if scenario.poll_timeout().is_some_and(|t| t <= now) {
            scenario.handle_timeout(now, &mut self.sessions);
        }
        self.sessions.admit(now, self.max_setup);
    }

    /// Routes endpoint events and runs ready sessions until neither has anything left.
    fn settle<S: Scenario>(&mut self, now: Instant, scenario: &mut S) {
        loop {
            let mut busy = false;
            while let Some(ev) = self.endpoint.poll_event() {
                busy = true;
                self.route(now, ev);
            }
            while let Some(i) = self.sessions.ready.pop_front() {
                busy = true;
                self.run_session(now, i, scenario);
            }
            // Sessions that ended made room for waiting ones.
            self.sessions.admit(now, self.max_setup);
            if !busy && self.sessions.ready.is_empty() {
                return;
            }
        }
    }

    /// Hands an endpoint event to the session owning its connection.
    fn route(&mut self, now: Instant, ev: chirp_proto::Event) {
        use chirp_proto::Event as T;
        let conn = match &ev {
            // Nothing a session does with these.
            T::Acked { .. }
            | T::PeerFinished { .. }
            | T::Ping { .. }
            | T::PathChanged { .. }
            | T::BulkMessage { .. }
            | T::BulkWritable { .. } => {
                return;
            }
            T::Connected { conn, .. }
            | T::VerifyKey { conn, .. }
            | T::Message { conn, .. }
            | T::Writable { conn }
            | T::Closed { conn, .. } => *conn,
        };
        let owner = if matches!(ev, T::Closed { .. }) {
            self.sessions.by_conn.remove(&conn)
        } else {
            self.sessions.by_conn.get(&conn).copied()
        };
        let Some(i) = owner else {
            return; // A connection of a session that has ended.
        };
        if let Some(s) = self.sessions.slots[i].session.as_mut() {
            s.handle_transport(now, ev);
            self.sessions.wake(i);
        }
    }

    /// Runs session `i`: answers what it asks of the transport, then hands its events to the
    /// scenario.
    fn run_session<S: Scenario>(&mut self, now: Instant, i: usize, scenario: &mut S) {
        let sessions = &mut self.sessions;
        let slot = &mut sessions.slots[i];
        slot.queued = false;
        let Some(s) = slot.session.as_mut() else {
            return;
        };
        while let Some(io) = s.poll_io(now) {
            match io {
                Io::Connect { server } => {
                    let r = match s.config().identity.as_ref() {
                        Some(key) => self.endpoint.connect_as(now, server, None, key),
                        None => self.endpoint.connect(now, server),
                    };
                    if let Ok(conn) = r {
                        if let Some(old) = slot.conn.replace(conn) {
                            sessions.by_conn.remove(&old);
                        }
                        sessions.by_conn.insert(conn, i);
                    }
                    s.connect_result(now, r);
                }
                Io::Send { conn, data } => {
                    let r = self.endpoint.send(conn, &data);
                    s.send_result(now, conn, r);
                }
                Io::Close { conn, reason } => self.endpoint.close(now, conn, 0, reason),
                // The bench trusts the server it was given.
                Io::CheckKey { conn, .. } => s.key_verdict(now, conn, Ok(())),
                Io::VerifyKey { conn, accept: true } => self.endpoint.accept_key(now, conn),
                Io::VerifyKey {
                    conn,
                    accept: false,
                } => self.endpoint.refuse_key(now, conn),
                Io::Stats { conn } => s.stats_result(self.endpoint.stats(conn)),
            }
        }
        while let Some(ev) = s.poll_event() {
            self.events.push(ev);
        }
        let deadline = s.poll_timeout();
        let ended = s.is_ended();
        sessions.set_deadline(i, deadline);
        for ev in self.events.drain(..) {
            if matches!(ev, Event::Welcome { .. }) {
                sessions.set_up(i);
            }
            scenario.on_event(now, i, ev, sessions);
        }
        if ended {
            sessions.release(i);
        }
    }

    /// Sends every datagram the endpoint has, each built in the one reused buffer.
    async fn flush(&mut self, now: Instant) {
        while let Some(to) = self.endpoint.poll_transmit_into(now, &mut self.datagram) {
            self.stats.datagrams_out += 1;
            match self.socket.try_send_to(&self.datagram, to) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The kernel's buffer is full: wait for room rather than drop.
                    let _ = self.socket.send_to(&self.datagram, to).await;
                }
                // Lost, which the protocol survives.
                Err(_) => {}
            }
        }
    }
}

/// Several swarms of one scenario, each on its own socket and thread.
#[derive(Debug)]
pub struct Fleet<S> {
    swarms: Vec<Swarm<S>>,
}

/// Handshakes in flight (sessions in setup) of all the swarms of a fleet together: below the
/// server's load threshold (256), past which its per-address handshake limit applies.
pub const MAX_SETUP: usize = 128;

impl<S: Scenario> Fleet<S> {
    /// Starts `sockets` swarms (at least 1), the `i`th on [`bind_addr`]`(i)` with the
    /// endpoint settings of sessions like `template` and room for `sessions` sessions in
    /// all; `make(i)` gives the `i`th its scenario and the function that adds its first
    /// sessions.
    pub fn start<F>(
        sockets: usize,
        template: &ClientConfig,
        sessions: usize,
        max_setup: usize,
        mut make: impl FnMut(usize) -> (S, F),
    ) -> Result<Self, BenchError>
    where
        F: FnOnce(&mut S, &mut Sessions) + Send + 'static,
    {
        let sockets = sockets.max(1);
        let per = sessions.div_ceil(sockets);
        let mut swarms = Vec::with_capacity(sockets);
        for i in 0..sockets {
            let config = SwarmConfig {
                bind: bind_addr(i),
                max_setup: (max_setup / sockets).max(1),
                endpoint: endpoint_config(template, per),
            };
            let (scenario, setup) = make(i);
            swarms.push(Swarm::start(config, scenario, setup)?);
        }
        Ok(Self { swarms })
    }

    /// Pokes every swarm ([`Scenario::poke`]).
    pub fn poke(&self) {
        for s in &self.swarms {
            s.handle().poke();
        }
    }

    /// Waits until every swarm has stopped (after [`Fleet::stop`], or when their scenarios
    /// are done), without blocking the async runtime; returns their scenarios, in order.
    pub async fn join(self) -> Result<Vec<(S, SwarmStats)>, BenchError> {
        tokio::task::spawn_blocking(move || {
            self.swarms
                .into_iter()
                .map(Swarm::join)
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|_| BenchError::Stuck("a swarm's join task failed".into()))?
    }

    /// Tells every swarm to finish its sessions and stop.
    pub fn stop(&self) {
        for s in &self.swarms {
            s.handle().stop();
        }
    }

    /// [`Self::stop`], then [`Self::join`]: for a run that ends early or a hold released.
    pub async fn shut_down(self) -> Result<Vec<(S, SwarmStats)>, BenchError> {
        self.stop();
        self.join().await
    }
}

/// Which swarm of `sockets` runs session (or member) `i` of a scenario, and its place among
/// that swarm's: round robin.
pub fn place(i: usize, sockets: usize) -> usize {
    i % sockets.max(1)
}
