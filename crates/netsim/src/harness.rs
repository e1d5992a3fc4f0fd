//! Two chirp endpoints joined by a simulated [`Path`], in virtual time.
//!
//! Modelled on quinn-proto's test `Pair`: [`Pair::step`] lets both endpoints transmit, delivers
//! every datagram that is due, fires due timers, and then jumps the clock straight to the next
//! thing that can happen. Minutes of simulated chat run in milliseconds, and a seed replays a
//! run exactly. A `poll_timeout` that never moves forward would spin forever in a real driver;
//! here it trips [`HarnessError::BusyLoop`] instead, and a run that never settles trips
//! [`HarnessError::StepLimit`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event, Transmit};

use crate::link::{LinkConfig, Path};

/// How many consecutive steps may pass without the clock moving before the harness calls it a
/// busy loop. Real progress at one instant (a burst of datagrams) stays far below this.
const MAX_STEPS_AT_ONE_INSTANT: u32 = 10_000;

/// Why a drive stopped without reaching its goal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HarnessError {
    /// The clock stopped advancing: some deadline is stuck in the past.
    #[error("busy loop: no progress in virtual time at {elapsed:?} after {steps} steps")]
    BusyLoop {
        /// Virtual time since the start.
        elapsed: Duration,
        /// Steps taken at that instant.
        steps: u32,
    },
    /// The step budget ran out.
    #[error("step limit of {0} exceeded")]
    StepLimit(u64),
    /// The deadline passed before the goal was reached.
    #[error("goal not reached within {0:?} of virtual time")]
    Timeout(Duration),
}

/// Names one side of a [`Pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that connects.
    A,
    /// The side that accepts.
    B,
}

/// One side of the pair.
#[derive(Debug)]
pub struct Node {
    /// The endpoint under test.
    pub endpoint: Endpoint,
    /// Its simulated address.
    pub addr: SocketAddr,
    /// Events polled so far and not yet taken by the test.
    pub events: VecDeque<Event>,
    /// When false, the harness stops polling events: the application "stops reading".
    pub reading: bool,
}

impl Node {
    fn new(config: EndpointConfig, seed: u64, addr: SocketAddr) -> Self {
        Self {
            endpoint: Endpoint::new(config, seed),
            addr,
            events: VecDeque::new(),
            reading: true,
        }
    }

    /// Removes and returns the messages delivered so far, in order, keeping the other events.
    pub fn take_messages(&mut self) -> Vec<Bytes> {
        self.take_events(|e| matches!(e, Event::Message { .. }))
            .into_iter()
            .filter_map(|e| match e {
                Event::Message { data, .. } => Some(data),
                _ => None,
            })
            .collect()
    }

    /// Removes and returns the events that match `f`, keeping the rest in order.
    pub fn take_events(&mut self, mut f: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let (take, keep): (Vec<_>, Vec<_>) = self.events.drain(..).partition(|e| f(e));
        self.events = keep.into();
        take
    }
}

/// Two endpoints `a` and `b` on a simulated path.
#[derive(Debug)]
pub struct Pair {
    /// Virtual now.
    pub now: Instant,
    /// When the simulation started.
    pub start: Instant,
    /// The side that connects.
    pub a: Node,
    /// The side that accepts.
    pub b: Node,
    /// The network between them.
    pub path: Path,
    /// Steps taken so far.
    pub steps: u64,
    /// Total step budget.
    pub max_steps: u64,
    /// If set, every datagram either side sends is recorded here with its destination (tests
    /// that inspect the wire).
    pub capture: Option<Vec<(Side, SocketAddr, Vec<u8>)>>,
    /// If set, every datagram the network delivers is recorded here with the side that sent
    /// it: beside `capture`, it tells exactly which datagrams the network dropped.
    pub delivered: Option<Vec<(Side, Vec<u8>)>>,
    /// Datagrams dropped because they were addressed to neither node's current address (for
    /// example to a client's old port after it rebound).
    pub misaddressed: u64,
    /// If set, datagrams addressed to neither node are kept here with the side that sent them,
    /// instead of being dropped and counted in `misaddressed`: a test that plays a third
    /// endpoint (on a link of its own) takes them from here, and hands that endpoint's
    /// datagrams to a node's endpoint itself. While any wait here, [`Pair::next_wakeup`] is
    /// now (the clock does not move past them); the third endpoint's own timers and link are
    /// the test's to drive.
    pub elsewhere: Option<VecDeque<(Side, Transmit)>>,
    stuck: u32,
}

impl Pair {
    /// Builds a pair over a symmetric path. `seed` drives the network and both endpoints.
    pub fn new(config: EndpointConfig, link: LinkConfig, seed: u64) -> Self {
        Self::with_path(config.clone(), config, Path::symmetric(link, seed), seed)
    }

    /// Builds a pair with separate configurations and a prepared path.
    pub fn with_path(a: EndpointConfig, b: EndpointConfig, path: Path, seed: u64) -> Self {
        // The harness is the one place that may read the real clock: once, as the origin of
        // virtual time. Nothing depends on its value.
        let start = Instant::now();
        let a_addr: SocketAddr = ([10, 0, 0, 1], 4000).into();
        let b_addr: SocketAddr = ([10, 0, 0, 2], 5000).into();
        Self {
            now: start,
            start,
            a: Node::new(a, seed ^ 0xa, a_addr),
            b: Node::new(b, seed ^ 0xb, b_addr),
            path,
            steps: 0,
            max_steps: 50_000_000,
            capture: None,
            delivered: None,
            misaddressed: 0,
            elsewhere: None,
            stuck: 0,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// `a` connects to `b`; drives until both report `Connected`. Returns (a's handle, b's).
    pub fn connect(&mut self) -> Result<(ConnectionHandle, ConnectionHandle), HarnessError> {
        let b_addr = self.b.addr;
        // The endpoint was just created, so its table has room.
        let ca = self
            .a
            .endpoint
            .connect(self.now, b_addr)
            .expect("empty endpoint has room");
        let connected = |e: &Event| matches!(e, Event::Connected { .. });
        let budget = Duration::from_secs(60);
        self.wait_event(Side::A, budget, connected)?;
        match self.wait_event(Side::B, budget, connected)? {
            Event::Connected { conn, .. } => Ok((ca, conn)),
            _ => unreachable!("wait_event returns a matching event"),
        }
    }

    fn flush(&mut self) {
        let now = self.now;
        let (a_addr, b_addr) = (self.a.addr, self.b.addr);
        for (side, node, link, to) in [
            (Side::A, &mut self.a, &mut self.path.a_to_b, b_addr),
            (Side::B, &mut self.b, &mut self.path.b_to_a, a_addr),
        ] {
            while let Some(t) = node.endpoint.poll_transmit(now) {
                if let Some(c) = self.capture.as_mut() {
                    c.push((side, t.destination, t.contents.clone()));
                }
                if t.destination != to {
                    match self.elsewhere.as_mut() {
                        Some(out) => out.push_back((side, t)),
                        // Nobody listens there (any more): the datagram is lost.
                        None => self.misaddressed += 1,
                    }
                    continue;
                }
                link.send(now, t.contents);
            }
            if node.reading {
                while let Some(ev) = node.endpoint.poll_event() {
                    node.events.push_back(ev);
                }
            }
        }
    }

    /// The next instant at which anything can happen.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let waiting = self.elsewhere.as_ref().is_some_and(|q| !q.is_empty());
        [
            self.a.endpoint.poll_timeout(),
            self.b.endpoint.poll_timeout(),
            self.path.a_to_b.next_delivery(),
            self.path.b_to_a.next_delivery(),
            waiting.then_some(self.now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One round: transmit, deliver what is due, fire due timers, then advance the clock to the
    /// next wakeup but no further than `limit`. Returns false when nothing at all is pending.
    pub fn step_until(&mut self, limit: Instant) -> Result<bool, HarnessError> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(HarnessError::StepLimit(self.max_steps));
        }
        self.flush();
        let now = self.now;
        while let Some(d) = self.path.a_to_b.poll_deliver(now) {
            if let Some(r) = self.delivered.as_mut() {
                r.push((Side::A, d.clone()));
            }
            self.b.endpoint.handle_datagram(now, self.a.addr, &d);
        }
        while let Some(d) = self.path.b_to_a.poll_deliver(now) {
            if let Some(r) = self.delivered.as_mut() {
                r.push((Side::B, d.clone()));
            }
            self.a.endpoint.handle_datagram(now, self.b.addr, &d);
        }
        if self.a.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.a.endpoint.handle_timeout(now);
        }
        if self.b.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.b.endpoint.handle_timeout(now);
        }
        self.flush();
        let Some(next) = self.next_wakeup() else {
            return Ok(false);
        };
        if next <= self.now {
            self.stuck += 1;
            if self.stuck > MAX_STEPS_AT_ONE_INSTANT {
                return Err(HarnessError::BusyLoop {
                    elapsed: self.elapsed(),
                    steps: self.stuck,
                });
            }
        } else {
            self.stuck = 0;
            self.now = next.min(limit).max(self.now);
        }
        Ok(true)
    }

    /// Runs everything that happens up to `t`, then sets the clock to `t`.
    pub fn advance_to(&mut self, t: Instant) -> Result<(), HarnessError> {
        while self.now < t {
            if !self.step_until(t)? {
                self.now = t;
            }
        }
        // Process what is due exactly at `t`.
        self.step_until(t)?;
        Ok(())
    }

    /// Steps until `done` returns true, for at most `budget` of virtual time.
    pub fn drive_until(
        &mut self,
        budget: Duration,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> Result<(), HarnessError> {
        let deadline = self.now + budget;
        loop {
            if done(self) {
                return Ok(());
            }
            if self.now >= deadline {
                return Err(HarnessError::Timeout(budget));
            }
            if !self.step_until(deadline)? {
                // Nothing is pending any more; the step may still have produced what `done`
                // waits for, at the current instant: look before jumping the clock.
                if done(self) {
                    return Ok(());
                }
                self.now = deadline;
            }
        }
    }

    /// The node on `side`.
    pub fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Steps until `side` has an event matching `matches`, for at most `budget` of virtual
    /// time, then removes that event (the first such) and returns it.
    pub fn wait_event(
        &mut self,
        side: Side,
        budget: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Result<Event, HarnessError> {
        let mut found = None;
        self.drive_until(budget, |p| {
            let events = &mut p.node(side).events;
            found = events
                .iter()
                .position(&matches)
                .and_then(|i| events.remove(i));
            found.is_some()
        })?;
        // drive_until returned Ok, so the predicate saw `found` set.
        Ok(found.expect("predicate checked found"))
    }

    /// Steps until nothing is pending (no timer armed, nothing in flight), for at most `budget`.
    /// Connections keep keepalive and idle timers, so this only ends once they are closed.
    pub fn drive_to_idle(&mut self, budget: Duration) -> Result<(), HarnessError> {
        self.drive_until(budget, |p| p.next_wakeup().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_and_exchanges_over_ideal_link() {
        let mut p = Pair::new(
            EndpointConfig::default(),
            LinkConfig::ideal(Duration::from_millis(20)),
            1,
        );
        let (ca, cb) = p.connect().expect("connects");
        // Two and a half round trips until the server side is up: INITIAL → RETRY, then
        // INITIAL with the token → ACCEPT (Noise message 2) → HANDSHAKE (message 3).
        assert!(
            p.elapsed() >= Duration::from_millis(100),
            "{:?}",
            p.elapsed()
        );
        assert!(
            p.elapsed() < Duration::from_millis(140),
            "{:?}",
            p.elapsed()
        );
        p.a.endpoint.send(ca, b"hi").expect("send");
        let mut got = None;
        p.drive_until(Duration::from_secs(1), |p| {
            got =
                p.b.take_events(|e| matches!(e, Event::Message { .. }))
                    .pop();
            got.is_some()
        })
        .expect("delivered");
        assert_eq!(
            got,
            Some(Event::Message {
                conn: cb,
                data: bytes::Bytes::from_static(b"hi")
            })
        );
    }

    /// A datagram to a third address is kept in `elsewhere` when asked for, with its sender,
    /// and dropped and counted otherwise.
    #[test]
    fn datagrams_to_a_third_address_are_kept_only_when_asked_for() {
        let third: SocketAddr = ([10, 0, 0, 3], 6000).into();
        for keep in [false, true] {
            let link = LinkConfig::ideal(Duration::from_millis(5));
            let mut p = Pair::new(EndpointConfig::default(), link, 2);
            if keep {
                p.elsewhere = Some(VecDeque::new());
            }
            p.b.endpoint.connect(p.now, third).expect("room");
            p.step_until(p.now).expect("step");
            match p.elsewhere.take() {
                Some(kept) => {
                    let kept: Vec<_> = kept
                        .into_iter()
                        .map(|(side, t)| (side, t.destination))
                        .collect();
                    assert_eq!(
                        kept,
                        [(Side::B, third)],
                        "the INITIAL is kept, with its sender"
                    );
                    assert_eq!(p.misaddressed, 0);
                }
                None => assert_eq!(p.misaddressed, 1),
            }
            assert_eq!(p.path.b_to_a.stats().sent, 0, "nothing of it went to a");
        }
    }
}
