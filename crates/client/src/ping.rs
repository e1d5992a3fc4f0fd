//! `chirp ping`: a handshake with a chirp server or peer, then probes that measure the round
//! trip, as `ping` does, in a sans-IO state machine ([`Pinger`]).
//!
//! The pinger owns a client [`Endpoint`] and is driven like one (quinn-proto's style): feed it
//! datagrams ([`Pinger::handle_datagram`]) and timeouts ([`Pinger::handle_timeout`]), each
//! with `now`; then drain [`Pinger::poll_transmit`] into the socket and [`Pinger::poll_event`]
//! into the printer, and sleep until [`Pinger::poll_timeout`]. It reads no clock and opens no
//! socket, so it runs in `chirp-netsim`'s virtual time in its tests as it runs over UDP in
//! `chirp ping`.
//!
//! # What a probe is
//!
//! Nothing new on the wire. Probe `k` is one DATA packet carrying a PING frame, asked for with
//! [`Endpoint::ping`]; its round-trip time is from sending that packet to the arrival of the
//! ACK that covers it, less the acknowledgement delay the peer reports in that ACK (at most
//! 10 ms, PROTOCOL.md §3.3, §6.3), so that the figure is the path's and not the peer's delayed
//! acknowledgement. Any chirp endpoint acknowledges a PING, so this works against `chirp serve`
//! and `chirp peer` alike. A probe is lost when the transport's loss detection declares its
//! packet lost (PROTOCOL.md §6.4), when no acknowledgement came within [`Config::timeout`],
//! or when the acknowledgement sent for it was lost and only a later packet's said that it
//! had arrived (its round trip is then unknown: the reply was lost, as `ping` would say); it
//! is never sent again (PING frames are never retransmitted): the next
//! probe is a new packet, at its own time.
//!
//! # The handshake
//!
//! The pinger connects, judges the peer's key inside the handshake (a pin, or the
//! application's verdict on [`Event::VerifyKey`], before our own identity is revealed), and
//! then sends one more PING in a DATA packet: its acknowledgement proves that the peer
//! completed the handshake and took our key (a `chirp peer` may refuse it:
//! [`Failure::PeerRefusedKey`]). Only then is the handshake done ([`Event::HandshakeDone`])
//! and probing starts. That PING is not a probe; it is asked for again if it is lost, until
//! the timeout.
//!
//! # Statistics
//!
//! [`Summary`] has what `ping` prints: probes sent and answered, loss, the time from the first
//! probe to the end, and the minimum, mean, maximum and `mdev` of the round-trip times. `mdev`
//! is what iputils `ping` prints under that name: the standard deviation of the samples,
//! `sqrt(mean(rtt²) − mean(rtt)²)`, computed here exactly from integer sums of nanoseconds.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_keys::{Fingerprint, PublicKey};
use chirp_proto::handshake::StaticSecret;
use chirp_proto::{
    CloseReason, ConnectError, ConnectionHandle, Endpoint, EndpointConfig, PingOutcome,
    RefuseReason, TraceRecord, Transmit, close_code,
};

/// How a [`Pinger`] pings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server or peer.
    pub remote: SocketAddr,
    /// Probes to send; `None`: until [`Pinger::stop`].
    pub count: Option<u64>,
    /// Time between two probes.
    pub interval: Duration,
    /// How long the handshake may take, and how long each probe waits for its
    /// acknowledgement before it counts as lost.
    pub timeout: Duration,
    /// The fingerprint the peer's key must have (`--server-key`): checked inside the
    /// handshake, before our identity is sent; any other key fails with
    /// [`Failure::KeyMismatch`].
    pub pin: Option<Fingerprint>,
    /// Without a pin: ask the application about the peer's key ([`Event::VerifyKey`]) inside
    /// the handshake. Without either, any key is taken.
    pub verify_key: bool,
    /// Our static key; `None`: a fresh one from `seed` (tests).
    pub identity: Option<StaticSecret>,
    /// Record what the connection does, packet by packet, for a qlog writer
    /// ([`Pinger::poll_trace`]; `EndpointConfig::trace`).
    pub trace: bool,
}

/// Why a probe counts as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The transport's loss detection declared its packet lost.
    Declared,
    /// No acknowledgement within [`Config::timeout`].
    Timeout,
    /// It arrived, but the acknowledgement sent for it was lost: only the acknowledgement of a
    /// later packet said so. Like an echo reply lost on the way back, it counts as lost, and
    /// it has no round-trip time.
    AnswerLost,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Declared => "detected by the transport",
            Self::Timeout => "no answer within the timeout",
            Self::AnswerLost => "arrived; its answer was lost",
        })
    }
}

/// Why pinging ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No handshake within the timeout: nothing listens there, or the path drops everything.
    NoAnswer {
        /// How long the handshake was given.
        waited: Duration,
    },
    /// The other side proved its key, but the handshake did not complete within the timeout
    /// (the path loses too much, or a peer is still asking its user about our key).
    HandshakeIncomplete {
        /// How long the handshake was given.
        waited: Duration,
    },
    /// The server answered with a REFUSE (PROTOCOL.md §5.12), e.g. because it is full.
    ServerRefused {
        /// Its reason.
        reason: RefuseReason,
    },
    /// The peer closed the connection in the handshake with KEY_MISMATCH: it does not take
    /// our key (a `chirp peer`'s accept policy, PROTOCOL.md §5.11). `reason` is the peer's
    /// text: hostile until escaped.
    PeerRefusedKey {
        /// What the peer said.
        reason: String,
    },
    /// The peer's key is not the pinned one. Nothing was probed; our identity was not sent.
    KeyMismatch {
        /// The pin.
        expected: Fingerprint,
        /// The peer's.
        actual: Fingerprint,
    },
    /// The application refused the peer's key ([`Pinger::key_verdict`]). Nothing was probed;
    /// our identity was not sent.
    KeyRejected {
        /// The peer's.
        actual: Fingerprint,
    },
    /// The connection ended before pinging did (the peer closed it, restarted, or went
    /// silent for the idle timeout).
    Closed {
        /// How it ended. A peer's close reason is hostile text until escaped.
        reason: CloseReason,
    },
}

impl Failure {
    /// A key that is not the expected one: pinned, or refused by the application.
    pub fn is_key_mismatch(&self) -> bool {
        matches!(self, Self::KeyMismatch { .. } | Self::KeyRejected { .. })
    }
}

/// Words for a failure. Text from the peer (a close reason) is included as it came: escape
/// it before printing it on a terminal.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer { waited } => write!(
                f,
                "no answer within {:.1} s (nothing listens there, or the path drops everything)",
                waited.as_secs_f64()
            ),
            Self::HandshakeIncomplete { waited } => write!(
                f,
                "the handshake began but did not complete within {:.1} s (the path loses too \
                 much, or a peer is still deciding about our key)",
                waited.as_secs_f64()
            ),
            Self::ServerRefused { reason } => write!(f, "the server refused us: {reason}"),
            Self::PeerRefusedKey { reason } => write!(
                f,
                "refused by the peer ({reason}): it does not take our key; a chirp peer takes \
                 only its partner's key (see chirp id and its --peer-key)"
            ),
            Self::KeyMismatch { expected, actual } => write!(
                f,
                "the key presented is {actual}, but --server-key pins {expected}"
            ),
            Self::KeyRejected { actual } => write!(f, "key {actual} refused"),
            Self::Closed { reason } => match reason {
                CloseReason::PeerClosed { code, reason } => {
                    write!(f, "the peer closed the connection (code {code}: {reason})")
                }
                CloseReason::IdleTimeout => f.write_str("the peer went silent (idle timeout)"),
                CloseReason::Reset => {
                    f.write_str("the peer no longer knows the connection (it restarted)")
                }
                CloseReason::ProtocolViolation { detail, .. } => {
                    write!(f, "the peer broke the protocol ({detail})")
                }
                other => write!(f, "the connection ended ({other:?})"),
            },
        }
    }
}

/// What the application is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Inside the handshake, the peer proved it holds `key` ([`Config::verify_key`]): answer
    /// with [`Pinger::key_verdict`]. The handshake waits meanwhile (within the timeout).
    VerifyKey {
        /// The peer's static key.
        key: PublicKey,
    },
    /// The handshake is done and the peer took us: probing starts.
    HandshakeDone {
        /// The fingerprint of the peer's key.
        fingerprint: Fingerprint,
        /// From the connection attempt to the acknowledgement that confirmed it.
        time: Duration,
    },
    /// Probe `seq` (from 1) was acknowledged.
    Reply {
        /// Which probe.
        seq: u64,
        /// Its round-trip time, less the peer's acknowledgement delay.
        rtt: Duration,
    },
    /// Probe `seq` is lost.
    Lost {
        /// Which probe.
        seq: u64,
        /// How that was decided.
        reason: LostReason,
    },
    /// Pinging ended early; [`Event::Finished`] follows.
    Failed {
        /// Why.
        reason: Failure,
    },
    /// The last event: every probe has its outcome (or the run was stopped or failed), and the
    /// connection is closing. Drive the pinger until [`Pinger::poll_timeout`] returns `None`
    /// (bounded by a linger of the driver's own) so that the CLOSE reaches the peer.
    Finished {
        /// The figures.
        summary: Summary,
    },
}

/// Round-trip figures of the answered probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttSummary {
    /// The smallest.
    pub min: Duration,
    /// The mean.
    pub avg: Duration,
    /// The largest.
    pub max: Duration,
    /// The standard deviation, as iputils `ping` computes its `mdev`.
    pub mdev: Duration,
}

/// What `ping` prints at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Probes sent.
    pub sent: u64,
    /// Probes acknowledged.
    pub answered: u64,
    /// Probes lost ([`Event::Lost`]). `sent − answered − lost` probes were still waiting
    /// when the run was stopped or failed; they count as unanswered, as in `ping`.
    pub lost: u64,
    /// From the first probe to the end (zero if none was sent).
    pub time: Duration,
    /// The handshake's time, if it was done.
    pub handshake: Option<Duration>,
    /// From the connection attempt to the other side's proof of its key (its first answer in
    /// the handshake), if it came: the other side is up, also if it then refused our key.
    pub answer: Option<Duration>,
    /// Round-trip figures, if any probe was answered.
    pub rtt: Option<RttSummary>,
    /// Chat messages the peer sent us. A `chirp peer` that takes our key (we present its
    /// partner's) sends us none: it keeps its chat on the chat's connection, and without one
    /// it takes ours for its partner's only if it comes from the partner's own address
    /// (`--bind` there while the partner is not running). Then its lines come here: they are
    /// not shown, and the peer counts them delivered. Its [`chirp_peer::session::HELLO`] is
    /// no chat message and is not counted.
    pub messages: u64,
}

impl Summary {
    /// Unanswered probes, in percent of those sent (0 if none was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * (self.sent - self.answered) as f64 / self.sent as f64
    }
}

/// Running sums of the answered probes' round-trip times, in nanoseconds, exact.
#[derive(Debug, Clone, Copy, Default)]
struct RttSums {
    n: u64,
    sum: u128,
    sum_sq: u128,
    min: Option<Duration>,
    max: Duration,
}

impl RttSums {
    fn add(&mut self, rtt: Duration) {
        let ns = rtt.as_nanos();
        self.n += 1;
        self.sum += ns;
        self.sum_sq += ns * ns;
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        self.max = self.max.max(rtt);
    }

    fn summary(&self) -> Option<RttSummary> {
        let min = self.min?;
        let n = u128::from(self.n);
        // n·Σx² − (Σx)² = n²·variance, never negative for real sums.
        let spread = (n * self.sum_sq).saturating_sub(self.sum * self.sum);
        let mdev = (spread as f64).sqrt() / n as f64;
        Some(RttSummary {
            min,
            avg: nanos(self.sum / n),
            max: self.max,
            mdev: Duration::from_secs_f64(mdev / 1e9),
        })
    }
}

/// A duration of `ns` nanoseconds (saturating: no round trip comes near).
fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// A probe waiting for its outcome.
#[derive(Debug, Clone, Copy)]
struct Probe {
    seq: u64,
    /// The transport's ping id.
    id: u64,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connecting, judging the key, confirming; the attempt fails at `deadline`.
    Handshake {
        deadline: Instant,
        /// The transport's id of the confirming PING, once the keys are there.
        confirm: Option<u64>,
    },
    Probing,
    /// Finished: the connection is closing.
    Done,
}

/// `chirp ping` as a state machine: see the [module documentation](self).
#[derive(Debug)]
pub struct Pinger {
    endpoint: Endpoint,
    config: Config,
    conn: ConnectionHandle,
    phase: Phase,
    started: Instant,
    /// The peer's key, once it proved it holds it: someone answered.
    key: Option<PublicKey>,
    /// Probes sent and waiting, in send order (so deadlines are in order too).
    probes: VecDeque<Probe>,
    /// When the next probe goes, while probing.
    next_probe: Option<Instant>,
    first_probe: Option<Instant>,
    summary: Summary,
    sums: RttSums,
    stopped: bool,
    events: VecDeque<Event>,
}

impl Pinger {
    /// Starts the connection attempt at `now`. `seed` keys the endpoint's connection IDs (and
    /// its static key, if [`Config::identity`] is `None`).
    pub fn new(config: Config, now: Instant, seed: u64) -> Result<Self, ConnectError> {
        let ep = EndpointConfig {
            // A client only: nobody may open a connection to it.
            accept_incoming: false,
            max_connections: 2,
            identity: config.identity.clone(),
            verify_keys: config.pin.is_some() || config.verify_key,
            trace: config.trace,
            ..EndpointConfig::default()
        };
        // (The transport's default idle timeout, 30 s, and keepalives, every 15 s at most, hold
        // the connection open between probes, whatever the interval.)
        let mut endpoint = Endpoint::new(ep, seed);
        let conn = endpoint.connect(now, config.remote)?;
        Ok(Self {
            endpoint,
            phase: Phase::Handshake {
                deadline: now + config.timeout,
                confirm: None,
            },
            config,
            conn,
            started: now,
            key: None,
            probes: VecDeque::new(),
            next_probe: None,
            first_probe: None,
            summary: Summary::default(),
            sums: RttSums::default(),
            stopped: false,
            events: VecDeque::new(),
        })
    }

    /// A datagram arrived from `from`. Then drain `poll_transmit` and `poll_event`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.endpoint.handle_datagram(now, from, datagram);
        self.run(now);
    }

    /// The instant from [`Self::poll_timeout`] has passed (calling it early is harmless). Then
    /// drain `poll_transmit` and `poll_event`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.run(now);
    }

    /// The verdict on the key of [`Event::VerifyKey`]: `true` lets the handshake go on,
    /// `false` ends it with [`Failure::KeyRejected`] before our identity is sent. Ignored
    /// unless that question is open.
    pub fn key_verdict(&mut self, now: Instant, accept: bool) {
        if accept {
            self.endpoint.accept_key(now, self.conn);
        } else {
            self.endpoint.refuse_key(now, self.conn);
        }
        self.run(now);
    }

    /// Stops pinging (Ctrl-C): no more probes; those still waiting count as unanswered, as in
    /// `ping`. [`Event::Finished`] follows.
    pub fn stop(&mut self, now: Instant) {
        self.stopped = true;
        self.run(now);
    }

    /// The next datagram to send, if any. Call it after every input until it returns `None`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.endpoint.poll_transmit(now)
    }

    /// The next event, if any. Call it after every input until it returns `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next trace record of the connection, with [`Config::trace`] on
    /// ([`Endpoint::poll_trace`]). Call it after every input until it returns `None`.
    pub fn poll_trace(&mut self) -> Option<TraceRecord> {
        self.endpoint.poll_trace()
    }

    /// When to call [`Self::handle_timeout`] next; `None` once finished and the connection is
    /// gone (the driver may exit), or at once if nobody ever answered (nobody to say goodbye
    /// to: the CLOSE has gone out once).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done && self.key.is_none() {
            return None;
        }
        let own = match self.phase {
            Phase::Handshake { deadline, .. } => Some(deadline),
            Phase::Probing => {
                // Deadlines are in send order: the first probe waiting has the earliest.
                let probe = self.probes.front().map(|p| p.deadline);
                let next = self.next_probe.filter(|_| self.wants_more_probes());
                probe.into_iter().chain(next).min()
            }
            Phase::Done => None,
        };
        own.into_iter().chain(self.endpoint.poll_timeout()).min()
    }

    /// The figures so far.
    pub fn summary(&self) -> Summary {
        Summary {
            rtt: self.sums.summary(),
            ..self.summary
        }
    }

    /// Has every event been produced ([`Event::Finished`] included)?
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    fn wants_more_probes(&self) -> bool {
        !self.stopped && self.config.count.is_none_or(|n| self.summary.sent < n)
    }

    /// After every input: the endpoint's events, then the pinger's own timers.
    fn run(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            self.on_transport(now, ev);
        }
        match self.phase {
            Phase::Handshake { deadline, .. } => {
                if self.stopped {
                    self.finish(now);
                } else if now >= deadline {
                    let waited = self.config.timeout;
                    let failure = match self.key {
                        None => Failure::NoAnswer { waited },
                        Some(_) => Failure::HandshakeIncomplete { waited },
                    };
                    self.fail(now, failure);
                }
            }
            Phase::Probing => self.probe(now),
            Phase::Done => {}
        }
    }

    /// Probing: expire what waited too long, send what is due, finish when nothing is left.
    fn probe(&mut self, now: Instant) {
        while let Some(p) = self.probes.front().copied().filter(|p| p.deadline <= now) {
            self.probes.pop_front();
            self.lost(p.seq, LostReason::Timeout);
        }
        if self.wants_more_probes() && self.next_probe.is_some_and(|t| t <= now) {
            // Refused only while the connection ends (then not counted as sent): its Closed
            // event says why.
            if let Ok(id) = self.endpoint.ping(self.conn) {
                self.summary.sent += 1;
                self.first_probe.get_or_insert(now);
                self.probes.push_back(Probe {
                    seq: self.summary.sent,
                    id,
                    deadline: now + self.config.timeout,
                });
            }
            // Keep the cadence, unless the driver woke up a whole interval late.
            let next = self.next_probe.map_or(now, |t| t + self.config.interval);
            self.next_probe = Some(if next <= now {
                now + self.config.interval
            } else {
                next
            });
        }
        if !self.wants_more_probes() && (self.stopped || self.probes.is_empty()) {
            self.finish(now);
        }
    }

    fn lost(&mut self, seq: u64, reason: LostReason) {
        self.summary.lost += 1;
        self.events.push_back(Event::Lost { seq, reason });
    }

    fn on_transport(&mut self, now: Instant, ev: chirp_proto::Event) {
        use chirp_proto::Event as T;
        if self.phase == Phase::Done {
            return;
        }
        match ev {
            T::VerifyKey { remote_key, .. } => {
                let key = PublicKey(remote_key);
                self.key = Some(key);
                self.answered(now);
                match &self.config.pin {
                    Some(pin) if *pin == key.fingerprint() => {
                        self.endpoint.accept_key(now, self.conn)
                    }
                    Some(_) => self.endpoint.refuse_key(now, self.conn),
                    None => self.events.push_back(Event::VerifyKey { key }),
                }
            }
            T::Connected { remote_key, .. } => {
                self.key = Some(PublicKey(remote_key));
                self.answered(now);
                self.confirm();
            }
            T::Ping { id, outcome, .. } => self.on_ping(now, id, outcome),
            // Never shown, never kept: see `Summary::messages`.
            T::Message { data, .. } if data[..] != *chirp_peer::session::HELLO => {
                self.summary.messages += 1;
            }
            T::Message { .. } => {}
            T::Closed { reason, .. } => {
                let failure = match reason {
                    CloseReason::KeyMismatch { expected, actual } => Failure::KeyMismatch {
                        expected: PublicKey(expected).fingerprint(),
                        actual: PublicKey(actual).fingerprint(),
                    },
                    CloseReason::KeyRefused { actual } => {
                        let actual = PublicKey(actual).fingerprint();
                        match self.config.pin {
                            Some(expected) => Failure::KeyMismatch { expected, actual },
                            None => Failure::KeyRejected { actual },
                        }
                    }
                    CloseReason::Refused { reason } => Failure::ServerRefused { reason },
                    CloseReason::PeerClosed { code, reason }
                        if code == close_code::KEY_MISMATCH
                            && matches!(self.phase, Phase::Handshake { .. }) =>
                    {
                        Failure::PeerRefusedKey { reason }
                    }
                    CloseReason::IdleTimeout if matches!(self.phase, Phase::Handshake { .. }) => {
                        Failure::NoAnswer {
                            waited: now.saturating_duration_since(self.started),
                        }
                    }
                    reason => Failure::Closed { reason },
                };
                self.fail(now, failure);
            }
            T::Acked { .. }
            | T::Writable { .. }
            | T::PeerFinished { .. }
            | T::PathChanged { .. }
            | T::BulkMessage { .. }
            | T::BulkWritable { .. } => {}
        }
    }

    /// The other side has proved its key (the first time counts).
    fn answered(&mut self, now: Instant) {
        let time = now.saturating_duration_since(self.started);
        self.summary.answer.get_or_insert(time);
    }

    /// Asks for the PING whose acknowledgement confirms the handshake.
    fn confirm(&mut self) {
        if let Phase::Handshake { deadline, .. } = self.phase {
            // Refused only if the connection is ending, which its Closed event reports.
            let confirm = self.endpoint.ping(self.conn).ok();
            self.phase = Phase::Handshake { deadline, confirm };
        }
    }

    fn on_ping(&mut self, now: Instant, id: u64, outcome: PingOutcome) {
        if let Phase::Handshake { confirm, .. } = self.phase {
            if confirm == Some(id) {
                match outcome {
                    // Either way the peer holds the keys and took us.
                    PingOutcome::Acked { .. } | PingOutcome::Covered => self.handshake_done(now),
                    PingOutcome::Lost => self.confirm(),
                }
            }
            return;
        }
        // A probe already counted lost for its timeout has no second outcome.
        let Some(i) = self.probes.iter().position(|p| p.id == id) else {
            return;
        };
        let Some(p) = self.probes.remove(i) else {
            return;
        };
        match outcome {
            PingOutcome::Acked { rtt, .. } => {
                self.summary.answered += 1;
                self.sums.add(rtt);
                self.events.push_back(Event::Reply { seq: p.seq, rtt });
            }
            PingOutcome::Covered => self.lost(p.seq, LostReason::AnswerLost),
            PingOutcome::Lost => self.lost(p.seq, LostReason::Declared),
        }
    }

    fn handshake_done(&mut self, now: Instant) {
        let time = now.saturating_duration_since(self.started);
        self.summary.handshake = Some(time);
        // Set by `Connected`, which comes before any ping can be acknowledged.
        let fingerprint = self.key.unwrap_or(PublicKey([0; 32])).fingerprint();
        self.events
            .push_back(Event::HandshakeDone { fingerprint, time });
        self.phase = Phase::Probing;
        self.next_probe = Some(now);
    }

    fn fail(&mut self, now: Instant, reason: Failure) {
        self.events.push_back(Event::Failed { reason });
        self.finish(now);
    }

    /// The end: close the connection (gracefully: nothing of ours is unacknowledged, so the
    /// CLOSE goes at once) and report the figures.
    fn finish(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        self.next_probe = None;
        self.endpoint
            .close(now, self.conn, close_code::NO_ERROR, "ping done");
        if let Some(first) = self.first_probe {
            self.summary.time = now.saturating_duration_since(first);
        }
        let summary = self.summary();
        self.events.push_back(Event::Finished { summary });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1000.0)
    }

    /// The figures `ping` prints, from the samples, the way iputils computes them.
    #[test]
    fn rtt_figures_are_pings() {
        let mut s = RttSums::default();
        assert_eq!(s.summary(), None);
        for x in [1.0, 2.0, 3.0, 4.0] {
            s.add(ms(x));
        }
        let r = s.summary().expect("samples");
        assert_eq!((r.min, r.avg, r.max), (ms(1.0), ms(2.5), ms(4.0)));
        // sqrt(mean(x²) − mean(x)²) = sqrt(7.5 − 6.25) = 1.118 ms.
        let mdev = r.mdev.as_secs_f64() * 1000.0;
        assert!((mdev - 1.25f64.sqrt()).abs() < 1e-6, "{mdev}");
        // One sample, or equal ones: no spread.
        let mut one = RttSums::default();
        one.add(ms(0.42));
        one.add(ms(0.42));
        assert_eq!(one.summary().map(|r| r.mdev), Some(Duration::ZERO));
    }

    #[test]
    fn loss_percent_counts_every_unanswered_probe() {
        let s = |sent, answered, lost| Summary {
            sent,
            answered,
            lost,
            ..Summary::default()
        };
        assert_eq!(s(0, 0, 0).loss_percent(), 0.0);
        assert_eq!(s(4, 3, 1).loss_percent(), 25.0);
        // One still waiting when stopped: unanswered, not lost, as in ping.
        assert_eq!(s(4, 3, 0).loss_percent(), 25.0);
        assert_eq!(s(3, 0, 3).loss_percent(), 100.0);
    }
}
