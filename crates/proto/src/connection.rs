//! One connection: handshake, loss recovery, acknowledgements, flow and congestion control,
//! latency-first redundancy, keepalive, idle timeout and close.
//!
//! The [`crate::Endpoint`] owns every `Connection` and forwards to it; nothing here touches a
//! socket or a clock. Loss recovery follows RFC 9002 with a single packet-number space shared
//! by every key: packet numbers are never reused, so each (key, nonce) pair is unique. ACK
//! frames that arrive in long-header packets (whose keys are public) may acknowledge only
//! long-header packets, so that nobody who can merely see the connection ID can forge the
//! acknowledgement of data.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use crate::coding::varint_len;
use crate::config::TransportConfig;
use crate::congestion::NewReno;
use crate::crypto::{AuthError, InitialKeys, PacketKey, ReplayWindow};
use crate::handshake::Handshake;
use crate::mem::ReleaseIfEmpty as _;
use crate::pacing::{Pacer, PacingRate};
use crate::pmtud::{self, Pmtud};
use crate::range_set::RangeSet;
use crate::rtt::{RttEstimator, StandingRtt};
use crate::stats::ConnectionStats;
use crate::stream::{RecvStream, SendStream, WriteError};
use crate::trace::{
    DropReason, LossTrigger, PathChange, TraceEvent, TraceFrame, TraceMetrics, TracePacket,
    TracePacketType, TraceRole, TraceState, Tracer,
};
use crate::wire::{
    AckFrame, ConnectionId, Frame, Frames, Header, MIN_INITIAL_SIZE, Packet, PacketBuilder,
    PacketType, data_packet_len,
};

/// The longest a receiver may hold an ACK for an ack-eliciting packet. A protocol constant of
/// version 1, so that each side can compute the other's probe timeout without negotiation.
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(10);
/// A receiver acknowledges at once after this many ack-eliciting packets.
const ACK_ELICITING_THRESHOLD: u32 = 2;
/// Flow-control limit each side may assume for the other before any MAX_DATA frame: a protocol
/// constant, so that neither side ever has to guess the peer's configuration. It exceeds one
/// maximum-size message plus its length prefix, so a first message can never deadlock.
pub const INITIAL_MAX_DATA: u64 = 128 * 1024;
/// A server connection whose client has not completed the handshake (Noise message 3) within
/// this time is dropped: it bounds how long a half-open handshake holds a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handshake may stay paused for the application's verdict on the peer's key
/// (a person comparing fingerprints may take a while). The deciding side gives up this long
/// after it was asked; a server whose client is deciding waits this much longer than
/// [`HANDSHAKE_TIMEOUT`] for message 3.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(120);
/// While a client decides on the server's key, it sends a PING this often (its HANDSHAKE
/// packets carry no message 3 meanwhile): it shows the server that it is deciding, before the
/// handshake timeout, and keeps both idle timers fresh.
const DECIDING_KEEPALIVE: Duration = Duration::from_secs(3);
/// A new peer address that has not answered our PATH_CHALLENGE within this many probe
/// timeouts is abandoned for the previous one.
const PATH_VALIDATION_PTOS: u32 = 3;
/// Path probing ([`crate::Endpoint::probe_path`], PROTOCOL.md §5.7.1): the first probe of an
/// address goes out at once, the next this long after it, each wait twice the one before, up
/// to [`PROBE_INTERVAL_MAX`].
pub const PROBE_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two probes of one address: a path that never answers costs one
/// 1200-byte datagram per this interval, and its NAT mappings are refreshed well inside the
/// usual 30 s UDP timeout.
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(15);
/// Answers owed to challenges from addresses other than the peer's current one, at most.
const MAX_PROBE_RESPONSES: usize = 4;
/// A packet smaller than this is not worth building while the anti-amplification budget of an
/// unvalidated path holds us back.
const MIN_USEFUL_PACKET: usize = 64;
/// Room kept free in a packet beyond a proactive copy: header, frame headers, tag, an ACK.
const COPY_MARGIN: usize = 160;
/// RFC 9002 packet-reordering threshold: the starting value, in ack-eliciting packets.
const PACKET_THRESHOLD: u64 = 3;
/// The packet threshold grows with the reordering seen, up to this (RFC 8985 §6.2 keeps
/// DupThresh only as a hint; time decides).
const MAX_PACKET_THRESHOLD: u64 = 32;
/// The reordering window is `mult × min_rtt / 4`; `mult` grows by one per round trip with a
/// spurious loss, up to this (and the window never exceeds the smoothed RTT).
const MAX_REO_WND_MULT: u32 = 8;
/// Recovery periods without a spurious loss after which the reordering window shrinks back
/// (RFC 8985 §6.2, `reo_wnd_persist`).
const REO_WND_PERSIST: u32 = 16;
/// Most packets declared lost remembered, to recognise them if they are acknowledged later.
const MAX_DECLARED_LOST: usize = 256;
/// Most ACK ranges sent in one frame: the newest ones matter, older gaps have been resolved.
const MAX_ACK_RANGES_SENT: usize = 32;
/// Most received-packet ranges remembered; older packet numbers count as duplicates.
const MAX_RECV_RANGES: usize = 128;
/// Probe packets sent when the probe timer fires on a clean path (RFC 9002 §6.2.4: up to two).
const PROBES_PER_PTO: u32 = 2;
/// Most probe packets sent when the probe timer fires on a lossy path (see `probes_per_pto`).
const MAX_PROBES_PER_PTO: u32 = 5;
/// The chance, at most, that every probe of one timeout is lost or has its ACK lost, as far as
/// the loss estimate and [`MAX_PROBES_PER_PTO`] allow.
const PROBE_FAILURE_TARGET: f64 = 0.05;
/// DATA packets a server keeps, unopened, while its application judges the client's key (the
/// client's first flight: its queued messages, up to the initial window).
const MAX_EARLY_PACKETS: usize = 16;
/// Probe timeouts a side whose streams are both delivered waits for the acknowledgement of its
/// RECEIVED before it closes anyway.
const FINISH_GRACE_PTOS: u32 = 3;
/// Pings the application may have queued on one connection and not yet sent (see
/// [`Connection::ping`]): each goes out in the next packet, so only an application that never
/// lets the endpoint transmit reaches it.
pub(crate) const MAX_QUEUED_PINGS: usize = 64;
/// Room in the congestion window, in datagrams, that bulk data leaves to the chat stream (at
/// most a quarter of the window): a chat message written while a transfer fills the window
/// goes out at once, with its proactive copies, instead of waiting for acknowledgements to
/// free room (up to a round trip when they come in bursts). See `Connection::bulk_allowed`.
const BULK_HEADROOM_PACKETS: u64 = 4;
/// Weight of one packet outcome in the loss estimate: an EWMA over ~64 packets (its standard
/// error at 5 % loss is ~2 points, against ~3 with 1/32, whose dips below the 3.2 % that
/// separates two transmissions of a small message from three cost the 5 % tail; issue 13).
const LOSS_EWMA_WEIGHT: f64 = 1.0 / 64.0;

/// Close codes carried in CLOSE frames. Values below 0x100 belong to the transport.
pub mod close_code {
    /// Orderly close, nothing wrong.
    pub const NO_ERROR: u64 = 0x00;
    /// The peer sent something the protocol forbids.
    pub const PROTOCOL_VIOLATION: u64 = 0x01;
    /// The peer exceeded the flow-control limit.
    pub const FLOW_CONTROL: u64 = 0x02;
    /// The peer sent a message above the maximum size.
    pub const MESSAGE_TOO_LARGE: u64 = 0x03;
    /// The Noise handshake failed (a message did not authenticate).
    pub const HANDSHAKE_FAILED: u64 = 0x04;
    /// The peer's static key is not the one this side expected (pinned or known).
    pub const KEY_MISMATCH: u64 = 0x05;
    /// First code available to applications.
    pub const APPLICATION_MIN: u64 = 0x100;
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent CLOSE.
    PeerClosed {
        /// Its code.
        code: u64,
        /// Its reason, decoded lossily.
        reason: String,
    },
    /// This side closed it.
    Local,
    /// Nothing was heard from the peer for the idle timeout: it is presumed dead.
    IdleTimeout,
    /// The peer broke the protocol; this side closed with the given code.
    ProtocolViolation {
        /// The code sent to the peer.
        code: u64,
        /// What went wrong.
        detail: &'static str,
    },
    /// The peer no longer knows the connection (it restarted): it answered with a stateless
    /// RESET authenticated by the token it gave us during the connection.
    Reset,
    /// The peer presented a static key other than the one expected: a pinned key, or the key
    /// remembered from earlier. Nothing was sent to it after its key was seen.
    KeyMismatch {
        /// The key this side expected.
        expected: [u8; 32],
        /// The key the peer proved it holds.
        actual: [u8; 32],
    },
    /// The application refused the peer's static key when asked
    /// ([`Event::VerifyKey`](crate::Event::VerifyKey)). Nothing was sent to the peer, and
    /// nothing was accepted from it, after its key was seen.
    KeyRefused {
        /// The key the peer proved it holds.
        actual: [u8; 32],
    },
    /// The server answered our INITIAL with an authentic REFUSE: it will not take the
    /// connection, for `reason` (e.g. it is full). Ends the attempt at once.
    Refused {
        /// Why, as the server said.
        reason: crate::wire::RefuseReason,
    },
}

/// Per-connection events, wrapped with the handle by the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    /// The handshake is paused until the application accepts or refuses this key.
    VerifyKey {
        incoming: bool,
        remote_key: [u8; 32],
    },
    Connected {
        incoming: bool,
        remote_key: [u8; 32],
    },
    Message(Bytes),
    /// A message of the bulk channel.
    BulkMessage(Bytes),
    /// The peer finished its stream, and every message before its end has been delivered.
    PeerFinished,
    /// This many more messages were wholly acknowledged, in write order.
    Acked(u64),
    /// What became of the application's ping `id` ([`Connection::ping`]).
    Ping(u64, PingOutcome),
    Writable,
    /// The bulk send buffer, which was full, has room again.
    BulkWritable,
    /// The peer's address changed and the new one is validated (or we went back to a
    /// validated one): the address is [`Connection::remote`].
    PathChanged,
    Closed(CloseReason, Vec<Bytes>),
}

/// What became of a ping the application asked for ([`crate::Endpoint::ping`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// The peer acknowledged the packet that carried it, in the ACK frame sent for it (no
    /// ack-eliciting packet sent after it was acknowledged with it).
    Acked {
        /// Round-trip time of that packet: from sending it to the acknowledgement's arrival,
        /// less the acknowledgement delay the peer reported (capped at [`MAX_ACK_DELAY`]),
        /// which is taken out as for the RTT estimate (RFC 9002 §5.3: only if the result
        /// stays at or above the minimum RTT, so that a peer cannot shrink it below what was
        /// observed).
        rtt: Duration,
        /// The acknowledgement delay the peer reported, as it reported it.
        ack_delay: Duration,
    },
    /// The packet that carried it arrived, but only an ACK frame that also acknowledged a later
    /// ack-eliciting packet said so: the acknowledgement sent for it was lost (or the peer
    /// held it for the later packet), so its round trip is not known. (`chirp ping` counts it
    /// as a probe whose answer was lost.)
    Covered,
    /// Loss detection declared the packet that carried it lost. A ping is never sent again:
    /// the application decides whether to ask for another. (Should the packet be
    /// acknowledged later after all, nothing more is reported.)
    Lost,
}

/// The pings the application asked for on one connection: absent until the first, so that a
/// connection nobody pings pays one pointer and a branch per ACK frame.
#[derive(Debug, Default)]
struct AppPings {
    /// The id of the next ping.
    next_id: u64,
    /// Asked for, not yet sent, in order.
    queued: VecDeque<u64>,
    /// Sent and awaiting acknowledgement or loss: (packet number, id), in packet-number order
    /// (one ping per packet).
    in_flight: VecDeque<(u64, u64)>,
    /// Outcomes not yet reported, in order.
    outcomes: VecDeque<(u64, PingOutcome)>,
}

impl AppPings {
    /// The ping carried by packet `pn`, if any, no longer in flight.
    fn take(&mut self, pn: u64) -> Option<u64> {
        let i = self.in_flight.binary_search_by_key(&pn, |&(p, _)| p).ok()?;
        self.in_flight.remove(i).map(|(_, id)| id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No packet keys yet: a client waiting for Noise message 2, a server for message 3.
    Handshaking,
    Established,
    /// We sent CLOSE; answer stray packets with CLOSE until the deadline.
    Closing {
        until: Instant,
    },
    /// The peer sent CLOSE; stay silent until the deadline, then forget the connection.
    Draining {
        until: Instant,
    },
    /// Gone; the endpoint removes it once the application has seen `Closed`.
    Drained,
}

#[derive(Debug)]
struct SentPacket {
    time: Instant,
    size: u64,
    /// While the packet is built: does it carry an ack-eliciting frame yet? Only such packets
    /// enter `sent`, so there it is always true.
    ack_eliciting: bool,
    app_limited: bool,
    /// Sent with the window full (see `Connection::finish`): its acknowledgement says the
    /// window, not the application or flow control, limited sending.
    window_full: bool,
    /// Message-stream ranges carried, to be marked acked or lost.
    stream: Vec<Range<u64>>,
    max_data: bool,
    /// Bulk-channel ranges carried, and whether it carried BULK_MAX_DATA.
    bulk: Vec<Range<u64>>,
    bulk_max_data: bool,
    /// Largest packet number our ACK frame in this packet acknowledged (for ack-of-ack).
    ack_largest: Option<u64>,
    /// Sent in a long-header packet (public keys): the only kind an ACK frame from a
    /// long-header packet may acknowledge.
    long: bool,
    /// Carried our RESET_TOKEN frame (sent again if lost).
    reset_token: bool,
    /// Carried our FIN frame (sent again if lost, until acknowledged).
    fin: bool,
    /// Carried our reliable RECEIVED frame (sent again if lost, until acknowledged).
    received: bool,
    /// Carried our PATH_CHALLENGE (sent again if lost while the path is still unvalidated).
    challenge: bool,
    /// A path MTU probe (PING and padding): its loss is no congestion signal.
    mtu_probe: bool,
    /// Rank among ack-eliciting packets sent: the packet threshold counts these, not packet
    /// numbers (ACK-only packets in between say nothing about reordering).
    seq: u64,
}

/// A packet declared lost, kept for a while in case it is acknowledged after all (it was
/// reordered or delayed, not lost): then its loss is taken back.
#[derive(Debug)]
struct DeclaredLost {
    declared: Instant,
    long: bool,
    stream: Vec<Range<u64>>,
    bulk: Vec<Range<u64>>,
    fin: bool,
    received: bool,
    /// `loss_outcomes` right after this loss entered the loss estimate; `None` while it has
    /// not yet (see `confirm_losses`).
    outcome: Option<u64>,
    /// The bulk channel's round trip ([`OutcomeWindow`]) this loss was counted in, if it was.
    window_round: Option<u64>,
    /// The congestion controller's recovery period it counted in.
    episode: u64,
    /// By how many ack-eliciting packets it had been overtaken when declared.
    overtaken: u64,
    /// Its rank among ack-eliciting packets and when it was sent (persistent congestion).
    seq: u64,
    sent: Instant,
}

/// Packet keys after the handshake, with key updates: each direction moves to the next key
/// (Noise `REKEY`) on its own schedule and flips the key-phase bit; the receiver follows.
#[derive(Debug)]
struct Keys {
    send: PacketKey,
    send_phase: bool,
    /// First packet number sent under the current send key, and when.
    phase_first_pn: u64,
    phase_started: Instant,
    recv: PacketKey,
    recv_phase: bool,
    /// The receive key before the last update, for packets reordered across it.
    recv_prev: Option<PacketKey>,
}

impl Keys {
    /// Opens a DATA packet of key phase `phase`. If it needed the peer's next key, that key
    /// comes back too: the caller commits it with [`Self::update_recv`] only once the packet
    /// has passed every other check, so a packet that is then dropped changes nothing.
    /// The payload goes into `out`.
    fn open(
        &self,
        packet: &Packet<'_>,
        phase: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<PacketKey>, AuthError> {
        if phase == self.recv_phase {
            return packet.open_into(&self.recv, out).map(|()| None);
        }
        // The other phase: a late packet from before the peer's last update, or its next one.
        if let Some(prev) = &self.recv_prev {
            if packet.open_into(prev, out).is_ok() {
                return Ok(None);
            }
        }
        let next = self.recv.next();
        packet.open_into(&next, out)?;
        Ok(Some(next))
    }

    fn update_recv(&mut self, next: PacketKey) {
        self.recv_prev = Some(std::mem::replace(&mut self.recv, next));
        self.recv_phase = !self.recv_phase;
    }
}

/// Probe packets for one probe timeout at loss estimate `p`: the least `k` with
/// `q^k <= PROBE_FAILURE_TARGET`, `q = 1 - (1 - p)^2`, clamped to
/// `PROBES_PER_PTO..=MAX_PROBES_PER_PTO` (see `Connection::probes_per_pto`).
fn probes_for_loss(p: f64) -> u32 {
    let q = 1.0 - (1.0 - p.clamp(0.0, 1.0)).powi(2);
    if q <= 0.0 {
        return PROBES_PER_PTO;
    }
    if q >= 1.0 {
        return MAX_PROBES_PER_PTO;
    }
    // q^k <= target  <=>  k >= ln(target) / ln(q), for 0 < q < 1. The cast saturates (and
    // the clamp bounds it either way).
    let k = (PROBE_FAILURE_TARGET.ln() / q.ln()).ceil() as u32;
    k.clamp(PROBES_PER_PTO, MAX_PROBES_PER_PTO)
}

/// A connection whose stream has been quiet this long gives back the memory of its drained
/// buffers, queues and maps (issue 14: an idle session must be small). Not at once: a chat
/// that trickles keeps them, and allocates nothing per message.
const COMPACT_AFTER: Duration = Duration::from_secs(1);

/// How long the standing RTT of a halving that did not help stays the base of the queue test
/// (`Connection::random_loss_base`): as long as BBR trusts a minimum RTT, after which the next
/// halving measures again.
const UNDRAINED_LIFETIME: Duration = Duration::from_secs(10);
/// A halving did not help if the delivery rate fell to at most this fraction
/// (`numerator / denominator`) of the best before it (see `Connection::check_queue`).
const RATE_FELL: (u128, u128) = (3, 4);
/// Smoothed RTTs after a halving for a queue at which the queue is checked: one for the halved
/// window to take effect, one for its packets' acknowledgements to come back.
const QUEUE_CHECK_SRTTS: u32 = 2;

/// What the halvings for a queue showed (see [`Connection::random_loss_base`]).
#[derive(Debug, Clone, Copy, Default)]
struct QueueBase {
    /// The last halving for a queue, until it is checked.
    pending: Option<Halving>,
    /// The recovery period of the last halving for a queue (0: none yet).
    episode: u64,
    /// The standing RTT of a halving that did not help, and when that was found: the base of
    /// the queue test.
    undrained: Option<(Duration, Instant)>,
}

/// A halving for a queue, waiting for its check (`Connection::check_queue`).
#[derive(Debug, Clone, Copy)]
struct Halving {
    /// When the window halved, and when to check what that did.
    at: Instant,
    check_at: Instant,
    /// The standing RTT when it halved, and the best delivery rate before it.
    standing: Option<Duration>,
    rate_before: Option<u64>,
    /// A packet sent after the halving was declared lost before the check.
    lost_after: bool,
}

impl Halving {
    /// The base RTT it stands for: its standing RTT, never below the minimum.
    fn base(&self, min: Duration) -> Duration {
        self.standing.unwrap_or(min).max(min)
    }
}

/// The handshake and packet protection state of one connection.
#[derive(Debug)]
struct Crypto {
    initial: InitialKeys,
    /// The Noise state until it yields keys.
    /// Boxed: it is large (the Noise state) and gone once the handshake ends, so an
    /// established connection does not carry its room.
    handshake: Option<Box<Handshake>>,
    /// Our latest handshake message: every long-header packet we send carries it, so any such
    /// packet that arrives moves the handshake on, and loss recovery retransmits it for free.
    hs_msg: Vec<u8>,
    /// Client: a HANDSHAKE packet (carrying Noise message 3) is due.
    hs_due: bool,
    keys: Option<Keys>,
    remote_key: Option<[u8; 32]>,
    /// Refuse a peer whose key differs (pinning, known keys). Set by a client's
    /// `connect_expecting`, and kept if a simultaneous open makes it the server side.
    expected_key: Option<[u8; 32]>,
    /// Without an expected key, ask the application about the peer's key before the
    /// handshake completes (`EndpointConfig::verify_keys`).
    verify: bool,
    /// While the application's verdict on the peer's key (the Noise state's remote static
    /// key) is awaited: when it was asked (we give up [`VERDICT_TIMEOUT`] later). The
    /// handshake is paused meanwhile (a client has not written Noise message 3; a server has
    /// read it but installed no keys), so no application data moves in either direction.
    awaiting_verdict: Option<Instant>,
    /// Server: the client is deciding on our key (a HANDSHAKE packet without message 3 came),
    /// so message 3 may take up to [`VERDICT_TIMEOUT`] longer than [`HANDSHAKE_TIMEOUT`].
    peer_deciding: bool,
    /// `ConnEvent::VerifyKey` is due.
    verify_pending: bool,
    /// DATA packets that arrived while the verdict was awaited (at most
    /// [`MAX_EARLY_PACKETS`]): packet number, bytes and source. Opened if the key is accepted.
    early: Vec<(u64, Vec<u8>, SocketAddr)>,
    /// Client: the address-validation token from the server's RETRY.
    token: Vec<u8>,
    /// Handshake confirmed: the server has Noise message 3, and (client side) has proved it
    /// by sending DATA. From then on long-header packets are ignored.
    confirmed: bool,
    replay: ReplayWindow,
}

/// Path validation after the peer's address changed (RFC 9000 §8.2, §9).
#[derive(Debug)]
struct PathState {
    /// The peer has proved it receives at `remote` (by cookie or by PATH_RESPONSE).
    validated: bool,
    /// Bytes received from and sent to `remote` while it was not validated: never send more
    /// than was received (anti-amplification).
    rx: u64,
    tx: u64,
    /// The outstanding challenge and its deadline.
    challenge: Option<([u8; 8], Instant)>,
    challenge_due: bool,
    /// When the outstanding challenge last went out.
    challenge_sent: Option<Instant>,
    /// Challenges the peer sent us, to answer (on the path they came from: the current one).
    responses: VecDeque<[u8; 8]>,
    /// The last validated address, to return to if the new one fails validation.
    previous: Option<SocketAddr>,
    /// Probing other paths (PROTOCOL.md §5.7.1). Allocated on first use: a connection that
    /// never sees a probe pays one pointer.
    probing: Option<Box<Probing>>,
    /// Key for the challenge data: unpredictable to anyone else.
    challenge_key: [u8; 32],
    challenges_sent: u64,
}

/// Probing other paths (PROTOCOL.md §5.7.1).
#[derive(Debug, Default)]
struct Probing {
    /// Another address of the peer being probed.
    probe: Option<Probe>,
    /// Answers owed to PATH_CHALLENGEs that came from an address other than `remote`, each
    /// with that address and the size of the datagram that brought it: they go back there, in
    /// a datagram no larger.
    responses: VecDeque<([u8; 8], SocketAddr, usize)>,
    /// After we moved to a probed address: the address we left, and until when a packet from
    /// it does not move the connection back (it was in flight before the peer followed us).
    left: Option<(SocketAddr, Instant)>,
}

/// Probing one address of the peer (PROTOCOL.md §5.7.1).
#[derive(Debug)]
struct Probe {
    addr: SocketAddr,
    /// The challenge every probe of this address carries.
    data: [u8; 8],
    /// When the next probe is due, and the wait after it.
    next: Instant,
    interval: Duration,
    /// A probe is to be sent.
    due: bool,
}

/// A small message scheduled for proactive copies.
#[derive(Debug)]
struct PendingCopy {
    range: Range<u64>,
    remaining: u32,
    next: Instant,
    /// Scheduled by the start-of-connection default alone (`ConnectionStats::startup_copies`).
    startup: bool,
    /// Time between its transmissions (`Connection::copy_spacing`).
    spacing: Duration,
}

/// The bulk channel (PROTOCOL.md §4.7): a second message stream beside the chat stream, with
/// its own offsets, reassembly and flow control, so that a lost bulk packet never holds a chat
/// message back and a full bulk window never blocks chat. Its packets share the connection's
/// packet numbers, loss recovery and congestion window, which it uses only after the chat
/// stream: chat data, retransmitted chat data and control frames go first in every packet,
/// and bulk fills what room and window are left.
///
/// Created on first use, by [`Connection::write_bulk`] or by the first BULK frame from the
/// peer: a connection that never moves bulk data pays one pointer for it. Its existence is
/// also what lets us send BULK_MAX_DATA: a peer that has sent us no bulk data may not know the
/// frame (PROTOCOL.md §4.7), so it never receives one.
#[derive(Debug)]
struct Bulk {
    send: SendStream,
    recv: RecvStream,
    /// BULK_MAX_DATA is due (set only once the peer has sent bulk data).
    max_data_pending: bool,
    writable_pending: bool,
    /// Packet outcomes of the last round trips, for the copies of chat messages
    /// (`Connection::copy_loss_rate`).
    outcomes: OutcomeWindow,
}

/// Packet outcomes (acknowledged, lost) of the current and the previous smoothed RTT.
///
/// The loss estimate (an EWMA over ~64 outcomes, PROTOCOL.md §6.8) sizes a chat message's
/// proactive copies. While bulk data flows it sees hundreds of outcomes per round trip, in
/// batches: an ACK frame acknowledges a window's worth at once, and (once a loss proved
/// spurious) the losses enter a round trip later, so the EWMA swings between ~0 right after
/// an acknowledgement and the true rate several times over after the losses. A chat message
/// written at a low point got no copy at all, and one loss then cost it a recovery (a 95 ms
/// p99 against 25 ms idle, at 10 % loss on a 40 ms path). Counting over whole round trips
/// is immune to the order of the batches.
///
/// Both kinds of outcome enter when the sender learns them, which for packets sent together
/// is about the same time: an acknowledgement a round trip after sending, a loss when the
/// acknowledgements of later packets (or the time threshold) declare it, a reordering window
/// later. A loss is therefore counted when it is declared, not when the loss estimate takes
/// it (a round trip later again on a path that reorders, `loss_confirmation_delay`), and
/// taken back if it proves spurious ([`Self::take_back`]). Counted at confirmation, the losses
/// of one round trip's packets met the acknowledgements of the next one's: whenever the
/// sending rate changed from one round trip to the next (slow start, flow control, the pacer
/// spreading what had been bursts), the rate read low, at times a tenth of the path's loss,
/// and a chat line went two or three times where it needed three or four (10 % loss: a line
/// whose transmissions were all lost waited a recovery, and the lines behind it with it; the
/// chat p99 during a paced 50 MB transfer was 36 and 45 ms against 25 ms idle, issue 18).
#[derive(Debug, Default)]
struct OutcomeWindow {
    /// `(acknowledged, lost)`: this round trip's, then the previous one's.
    counts: [(u64, u64); 2],
    /// When the current round trip's count started.
    started: Option<Instant>,
    /// Number of the current round trip's count (each rotation adds the round trips it moves
    /// past), so that a loss taken back finds the count it entered, if that is still held.
    round: u64,
}

impl OutcomeWindow {
    /// Fewest outcomes that make a rate.
    const MIN_OUTCOMES: u64 = 32;

    /// Counts one outcome; returns the number of the round trip it entered.
    fn record(&mut self, now: Instant, srtt: Duration, lost: bool) -> u64 {
        self.rotate(now, srtt);
        let c = &mut self.counts[0];
        if lost {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
        self.round
    }

    /// A loss counted in round trip `round` proved spurious: it counts as acknowledged, as
    /// if its acknowledgement had come in time. Nothing if that count was dropped already.
    fn take_back(&mut self, now: Instant, srtt: Duration, round: u64) {
        self.rotate(now, srtt);
        let Some(age) = self.round.checked_sub(round) else {
            return;
        };
        if let Some(c) = usize::try_from(age)
            .ok()
            .and_then(|i| self.counts.get_mut(i))
            && c.1 > 0
        {
            c.1 -= 1;
            c.0 += 1;
        }
    }

    fn rotate(&mut self, now: Instant, srtt: Duration) {
        let started = *self.started.get_or_insert(now);
        let age = now.saturating_duration_since(started);
        if age >= srtt * 2 {
            self.counts = [(0, 0); 2];
            self.started = Some(now);
            self.round += 2;
        } else if age >= srtt {
            self.counts[1] = self.counts[0];
            self.counts[0] = (0, 0);
            self.started = Some(now);
            self.round += 1;
        }
    }

    /// The loss rate of the last one to two round trips, if they had enough outcomes.
    fn rate(&self, now: Instant, srtt: Duration) -> Option<f64> {
        let fresh = self
            .started
            .is_some_and(|t| now.saturating_duration_since(t) < srtt * 2);
        let (acked, lost) = (
            self.counts[0].0 + self.counts[1].0,
            self.counts[0].1 + self.counts[1].1,
        );
        (fresh && acked + lost >= Self::MIN_OUTCOMES).then(|| lost as f64 / (acked + lost) as f64)
    }
}

impl Bulk {
    fn new(config: &TransportConfig) -> Box<Self> {
        Box::new(Self {
            send: SendStream::new(
                INITIAL_MAX_DATA,
                config.bulk_send_buffer,
                config.max_message_size,
            ),
            recv: RecvStream::new(
                INITIAL_MAX_DATA,
                config.bulk_receive_window,
                config.max_message_size,
            ),
            max_data_pending: false,
            writable_pending: false,
            outcomes: OutcomeWindow::default(),
        })
    }
}

/// `config` as a connection applies it: the receive window can be raised but never set below
/// what the peer may send before hearing from us (the protocol's initial limit), the datagram
/// size stays within the protocol's bounds, and keepalives come well inside the idle timeout
/// (or a quiet, healthy link would be declared dead).
pub(crate) fn effective_config(config: &TransportConfig) -> TransportConfig {
    TransportConfig {
        receive_window: config.receive_window.max(INITIAL_MAX_DATA),
        bulk_receive_window: config.bulk_receive_window.max(INITIAL_MAX_DATA),
        max_datagram_size: config
            .max_datagram_size
            .clamp(MIN_INITIAL_SIZE, pmtud::MAX_CEILING),
        keep_alive: config.keep_alive.map(|k| k.min(config.idle_timeout / 2)),
        ..config.clone()
    }
}

/// One connection's complete state.
#[derive(Debug)]
pub(crate) struct Connection {
    side: Side,
    state: State,
    /// Shared by every connection of the endpoint.
    config: Arc<TransportConfig>,
    pub(crate) local_cid: ConnectionId,
    /// The peer's connection ID once known; before that a client uses `initial_dcid`.
    remote_cid: Option<ConnectionId>,
    pub(crate) initial_dcid: ConnectionId,
    /// The endpoint's `(address, initial ID)` routing key for this connection, if it has one,
    /// so that removal deletes exactly that entry even after the peer's address moved.
    pub(crate) initial_route: Option<(SocketAddr, ConnectionId)>,
    pub(crate) remote: SocketAddr,
    crypto: Crypto,
    path: PathState,
    /// Our RESET token for this connection, and whether the peer still needs it.
    own_reset_token: [u8; 16],
    reset_token_pending: bool,
    /// The peer's RESET token: a RESET carrying it ends the connection at once.
    pub(crate) peer_reset_token: Option<[u8; 16]>,

    // Sending.
    next_pn: u64,
    sent: BTreeMap<u64, SentPacket>,
    bytes_in_flight: u64,
    /// The part of `bytes_in_flight` in packets that carry bulk data (see `cwnd_allows`).
    bulk_in_flight: u64,
    /// Path MTU discovery: the largest datagram sent now.
    pmtud: Pmtud,
    time_of_last_ack_eliciting: Option<Instant>,
    largest_acked: Option<u64>,
    /// The largest packet number acknowledged by an ACK frame in a DATA packet: the only kind
    /// that can speak of our DATA packets (see `detect_lost`).
    largest_acked_data: Option<u64>,
    loss_time: Option<Instant>,
    /// Reordering tolerance (see `detect_lost`): ack-eliciting packets sent so far, the rank of
    /// the newest acknowledged one (any ACK; ACKs in DATA packets), the packet threshold, and
    /// the RACK-style reordering window multiplier with its persistence.
    next_seq: u64,
    largest_acked_seq: Option<u64>,
    largest_acked_seq_data: Option<u64>,
    packet_threshold: u64,
    reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    reo_wnd_grown: Option<Instant>,
    declared_lost: BTreeMap<u64, DeclaredLost>,
    /// Packets declared lost whose loss has not entered the loss estimate yet, oldest first,
    /// with when it does (`confirm_losses`).
    unconfirmed: VecDeque<(Instant, u64)>,
    /// Outcomes folded into `loss_estimate` so far (to take one back exactly).
    loss_outcomes: u64,
    /// When the first RTT sample was taken: persistent congestion considers only packets sent
    /// after it (RFC 9002 §7.6.2).
    first_rtt_sample: Option<Instant>,
    pto_count: u32,
    probes: u32,
    rtt: RttEstimator,
    /// What our halvings for a queue showed (`random_loss_base`).
    queue: QueueBase,
    /// The smallest RTT of the last smoothed RTT: tells congestion from random loss.
    standing_rtt: StandingRtt,
    cc: NewReno,
    /// Spreads data packets over the round trip (`TransportConfig::pacing`).
    pacer: Pacer,
    loss_estimate: f64,
    send: SendStream,
    /// The bulk channel, once used (see [`Bulk`]).
    bulk: Option<Box<Bulk>>,
    copies: VecDeque<PendingCopy>,
    ping_pending: bool,
    /// The application's pings ([`Self::ping`]).
    app_pings: Option<Box<AppPings>>,
    max_data_pending: bool,
    close_frame: Option<(u64, String)>,
    close_pending: bool,
    close_after_flush: bool,
    /// Half-close (see [`Connection::finish`]): our FIN frame is due, and whether the peer
    /// has acknowledged it (or reported our whole stream received).
    fin_pending: bool,
    fin_acked: bool,
    /// The peer's whole stream has arrived: our RECEIVED frame saying so is due, and whether
    /// the peer has acknowledged it.
    received_pending: bool,
    received_sent: bool,
    received_acked: bool,
    /// `ConnEvent::PeerFinished` was reported.
    peer_fin_reported: bool,
    /// Both streams are delivered; close at this instant even if our RECEIVED is still
    /// unacknowledged (see `close_if_both_finished`).
    finish_grace: Option<Instant>,
    /// A graceful close gives up waiting for acknowledgements at this instant.
    close_deadline: Option<Instant>,
    /// When this connection was created (or became a server), for the handshake timeout.
    created: Instant,
    /// [`COMPACT_AFTER`] past the last stream data sent or received: then the buffers, queues
    /// and maps that have drained give their memory back ([`Self::compact`]).
    compact_due: Option<Instant>,

    // Receiving.
    recv: RecvStream,
    recv_pns: RangeSet,
    recv_floor: u64,
    recv_largest: Option<(u64, Instant)>,
    ack_pending: bool,
    ack_immediately: bool,
    ack_deadline: Option<Instant>,
    eliciting_since_ack: u32,
    last_rx: Instant,
    last_activity: Instant,

    // Events.
    connected_pending: bool,
    /// The peer's validated address changed since the last [`ConnEvent::PathChanged`].
    path_changed_pending: bool,
    writable_pending: bool,
    /// Acknowledged messages already reported with `ConnEvent::Acked`.
    acked_reported: u64,
    closed: Option<CloseReason>,
    closed_emitted: bool,
    /// The application holds this handle: it opened the connection (even if a simultaneous
    /// open then made it the server side), got it from `Endpoint::find_open`, or saw
    /// `Connected`. Such a connection always reports `Closed`, with what it could not deliver.
    app_holds: bool,

    stats: ConnectionStats,
    /// Trace events (`EndpointConfig::trace`); `None`, and so free, while tracing is off.
    trace: Option<Box<Tracer>>,
}

/// What a connection starts its handshake with.
#[derive(Debug)]
pub(crate) struct HandshakeStart {
    /// The Noise state, with our latest message already written.
    pub(crate) handshake: Handshake,
    /// That message.
    pub(crate) message: Vec<u8>,
    /// Keys the PATH_CHALLENGE data of this connection.
    pub(crate) challenge_key: [u8; 32],
    /// The token that authenticates our stateless RESET for this connection's ID, told to the
    /// peer (encrypted) once the handshake is done.
    pub(crate) reset_token: [u8; 16],
    /// Ask the application to accept or refuse the peer's key (unless an expected key
    /// decides).
    pub(crate) verify: bool,
}

impl Connection {
    #[allow(clippy::too_many_arguments)] // private; the two public constructors name the roles
    fn new(
        side: Side,
        config: Arc<TransportConfig>,
        local_cid: ConnectionId,
        remote_cid: Option<ConnectionId>,
        initial_dcid: ConnectionId,
        remote: SocketAddr,
        now: Instant,
        start: HandshakeStart,
    ) -> Self {
        // The endpoint passes an effective configuration already; anything else is made one.
        let config = match effective_config(&config) {
            c if c == *config => config,
            c => Arc::new(c),
        };
        let window = config.receive_window;
        Self {
            side,
            state: State::Handshaking,
            local_cid,
            remote_cid,
            initial_dcid,
            initial_route: None,
            remote,
            crypto: Crypto {
                initial: InitialKeys::new(initial_dcid.0),
                handshake: Some(Box::new(start.handshake)),
                hs_msg: start.message,
                hs_due: false,
                keys: None,
                remote_key: None,
                expected_key: None,
                verify: start.verify,
                awaiting_verdict: None,
                peer_deciding: false,
                verify_pending: false,
                early: Vec::new(),
                token: Vec::new(),
                confirmed: false,
                replay: ReplayWindow::new(),
            },
            path: PathState {
                // A client knows where it sent its INITIAL; a server accepts only INITIALs
                // whose address a cookie has validated.
                validated: true,
                rx: 0,
                tx: 0,
                challenge: None,
                challenge_due: false,
                challenge_sent: None,
                responses: VecDeque::new(),
                previous: None,
                probing: None,
                challenge_key: start.challenge_key,
                challenges_sent: 0,
            },
            own_reset_token: start.reset_token,
            reset_token_pending: false,
            peer_reset_token: None,
            next_pn: 0,
            sent: BTreeMap::new(),
            bytes_in_flight: 0,
            bulk_in_flight: 0,
            time_of_last_ack_eliciting: None,
            largest_acked: None,
            largest_acked_data: None,
            loss_time: None,
            next_seq: 0,
            largest_acked_seq: None,
            largest_acked_seq_data: None,
            packet_threshold: PACKET_THRESHOLD,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            reo_wnd_grown: None,
            declared_lost: BTreeMap::new(),
            unconfirmed: VecDeque::new(),
            loss_outcomes: 0,
            first_rtt_sample: None,
            pto_count: 0,
            probes: 0,
            rtt: RttEstimator::new(config.initial_rtt),
            queue: QueueBase::default(),
            standing_rtt: StandingRtt::default(),
            cc: NewReno::new(pmtud::BASE),
            pacer: Pacer::new(pmtud::BASE),
            pmtud: Pmtud::new(config.max_datagram_size),
            loss_estimate: 0.0,
            // Both sides start from the same window, a protocol constant of the configuration;
            // the first MAX_DATA frame tells the truth if the peer configured another.
            // Both sides start from the protocol's initial limit; a MAX_DATA frame raises it.
            send: SendStream::new(
                INITIAL_MAX_DATA,
                config.send_buffer,
                config.max_message_size,
            ),
            bulk: None,
            copies: VecDeque::new(),
            // A client's first INITIAL and a server's first answer both elicit an ACK, which is
            // how each side learns the other holds its connection ID.
            ping_pending: true,
            app_pings: None,
            // Announce a window larger than the initial limit at the first opportunity.
            max_data_pending: window > INITIAL_MAX_DATA,
            close_frame: None,
            close_pending: false,
            close_after_flush: false,
            fin_pending: false,
            fin_acked: false,
            received_pending: false,
            received_sent: false,
            received_acked: false,
            peer_fin_reported: false,
            finish_grace: None,
            recv: RecvStream::new(INITIAL_MAX_DATA, window, config.max_message_size),
            recv_pns: RangeSet::new(),
            recv_floor: 0,
            recv_largest: None,
            ack_pending: false,
            ack_immediately: false,
            ack_deadline: None,
            eliciting_since_ack: 0,
            last_rx: now,
            last_activity: now,
            connected_pending: false,
            path_changed_pending: false,
            writable_pending: false,
            acked_reported: 0,
            closed: None,
            closed_emitted: false,
            app_holds: side == Side::Client,
            close_deadline: None,
            created: now,
            compact_due: None,
            stats: ConnectionStats::default(),
            trace: None,
            config,
        }
    }

    /// A connection we open; `initial_dcid` is random until the server tells us its own ID.
    /// `start` holds Noise message 1. With `expected_key`, a server presenting any other static
    /// key is refused before we reveal our own identity (Noise message 3).
    #[allow(clippy::too_many_arguments)] // each argument is a distinct input of the handshake
    pub(crate) fn client(
        config: Arc<TransportConfig>,
        local_cid: ConnectionId,
        initial_dcid: ConnectionId,
        remote: SocketAddr,
        now: Instant,
        start: HandshakeStart,
        expected_key: Option<[u8; 32]>,
    ) -> Self {
        let mut c = Self::new(
            Side::Client,
            config,
            local_cid,
            None,
            initial_dcid,
            remote,
            now,
            start,
        );
        c.crypto.expected_key = expected_key;
        c
    }

    /// A connection accepted from a client's (cookie-validated) INITIAL; `start` has read Noise
    /// message 1 and written message 2.
    pub(crate) fn server(
        config: Arc<TransportConfig>,
        local_cid: ConnectionId,
        header: &Header,
        remote: SocketAddr,
        now: Instant,
        start: HandshakeStart,
    ) -> Self {
        Self::new(
            Side::Server,
            config,
            local_cid,
            header.src_cid,
            header.dst_cid,
            remote,
            now,
            start,
        )
    }

    /// Simultaneous open: both peers sent INITIALs and we lost the tie-break, so this client
    /// connection turns into the server side of the peer's attempt. Whatever we already sent in
    /// INITIALs the peer dropped; loss recovery resends it under new packet numbers.
    pub(crate) fn become_server(&mut self, now: Instant, peer: &Header, start: HandshakeStart) {
        self.created = now;
        self.side = Side::Server;
        self.state = State::Handshaking;
        self.remote_cid = peer.src_cid;
        self.initial_dcid = peer.dst_cid;
        self.crypto.initial = InitialKeys::new(peer.dst_cid.0);
        self.crypto.handshake = Some(Box::new(start.handshake));
        self.crypto.hs_msg = start.message;
        // `expected_key` stays: a pinned peer is checked whichever side opens.
        self.ping_pending = true;
        // Our INITIALs were ignored by design, not lost: forget them without counting losses
        // or shrinking the congestion window. They carried no data (a client sends data only
        // once it has keys).
        self.forget_sent();
        if self.tracing() {
            let odcid = peer.dst_cid.0;
            self.record(now, TraceEvent::BecameServer { odcid });
        }
        self.trace_checkpoint(now);
    }

    /// The peer has been seen alive while we are still waiting for its answer: send our
    /// INITIAL again at once.
    pub(crate) fn nudge_handshake(&mut self) {
        if self.is_handshaking_client() {
            self.ping_pending = true;
        }
    }

    /// The peer's connection ID, once known.
    pub(crate) fn remote_cid(&self) -> Option<ConnectionId> {
        self.remote_cid
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.state == State::Handshaking
    }

    pub(crate) fn is_handshaking_client(&self) -> bool {
        self.side == Side::Client && self.state == State::Handshaking
    }

    /// A client that has not heard the server's answer (Noise message 2) yet: the only kind
    /// of connection a simultaneous open can turn into the server side. One that has read
    /// message 2, even if its verdict on the peer's key is still open, keeps its role.
    pub(crate) fn is_racing_client(&self) -> bool {
        self.is_handshaking_client() && self.remote_cid.is_none()
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.state == State::Drained && self.closed_emitted
    }

    /// Why it closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// Past its handshake and not closing?
    pub(crate) fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Still exchanging data (not closing, draining or gone)?
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Handshaking | State::Established)
    }

    /// The application now holds this handle (see `app_holds`).
    pub(crate) fn hand_out(&mut self) {
        self.app_holds = true;
    }

    pub(crate) fn send_buffered(&self) -> u64 {
        self.send.unacked()
    }

    pub(crate) fn recv_buffered(&self) -> u64 {
        self.recv.buffered()
    }

    /// Bulk bytes written and not yet acknowledged.
    pub(crate) fn bulk_buffered(&self) -> u64 {
        self.bulk.as_ref().map_or(0, |b| b.send.unacked())
    }

    /// Bulk bytes held for the peer (out of order, partial or not yet polled).
    pub(crate) fn bulk_recv_buffered(&self) -> u64 {
        self.bulk.as_ref().map_or(0, |b| b.recv.buffered())
    }

    /// Every bulk byte written has been acknowledged (true if none ever was).
    fn bulk_flushed(&self) -> bool {
        self.bulk.as_ref().is_none_or(|b| b.send.is_flushed())
    }

    /// Every byte written on either channel has been acknowledged.
    fn all_flushed(&self) -> bool {
        self.send.is_flushed() && self.bulk_flushed()
    }

    /// Out-of-order data waits for a gap on either channel.
    fn has_hole(&self) -> bool {
        self.recv.has_hole() || self.bulk.as_ref().is_some_and(|b| b.recv.has_hole())
    }

    pub(crate) fn sent_packets_tracked(&self) -> usize {
        self.sent.len()
    }

    /// The largest datagram sent now (path MTU discovery).
    pub(crate) fn max_datagram(&self) -> usize {
        self.pmtud.current()
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            srtt: self.rtt.smoothed(),
            rttvar: self.rtt.var(),
            min_rtt: self.rtt.min(),
            latest_rtt: self.rtt.latest(),
            cwnd: self.cc.window(),
            bytes_in_flight: self.bytes_in_flight,
            loss_estimate: self.loss_rate(),
            // The stream's count, which `Acked` reports as events are polled; after the close
            // (which frees the stream) the total reported.
            messages_acked: self.send.acked_messages().max(self.acked_reported),
            ..self.stats
        }
    }

    /// A datagram of `len` bytes from the peer's address whose header does not parse: the
    /// endpoint charges it to this connection (the one at that address).
    pub(crate) fn count_malformed(&mut self, now: Instant, len: usize) {
        self.count_drop(DropReason::Malformed);
        if self.tracing() {
            let event = TraceEvent::PacketDropped {
                ty: None,
                number: None,
                len: len as u64,
                reason: DropReason::Malformed,
            };
            self.record(now, event);
        }
    }

    /// Drops `packet` for `reason`: counts it, and records it if tracing. Every packet the
    /// connection drops goes through here, so that its trace has a `PacketDropped` for each
    /// one its drop counters count.
    fn drop_packet(&mut self, now: Instant, packet: &Packet<'_>, reason: DropReason) {
        self.count_drop(reason);
        if self.tracing() {
            let ty = packet.header.ty;
            let event = TraceEvent::PacketDropped {
                ty: Some(ty.into()),
                // A RETRY carries no packet number.
                number: (ty != PacketType::Retry).then_some(packet.header.number),
                len: (packet.aad.len() + packet.sealed.len()) as u64,
                reason,
            };
            self.record(now, event);
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        let s = &mut self.stats;
        match reason {
            DropReason::Malformed => s.malformed_dropped += 1,
            DropReason::Corrupt => s.corrupt_dropped += 1,
            DropReason::Undecryptable => s.undecryptable_dropped += 1,
            DropReason::Duplicate => s.duplicates_dropped += 1,
            DropReason::Stale => s.stale_dropped += 1,
            DropReason::NoBuffer => s.no_buffer_dropped += 1,
        }
    }

    // ----- Trace (`crate::trace`) -----

    /// Starts recording trace events, beginning with `Started` (at the connection's creation)
    /// and its state and metrics. The endpoint calls it right after creating the connection.
    pub(crate) fn enable_trace(&mut self) {
        let role = match self.side {
            Side::Client => TraceRole::Client,
            Side::Server => TraceRole::Server,
        };
        let mut tracer = Tracer::default();
        tracer.push(
            self.created,
            TraceEvent::Started {
                role,
                odcid: self.initial_dcid.0,
                local_cid: self.local_cid.0,
                remote: self.remote,
            },
        );
        self.trace = Some(Box::new(tracer));
        self.trace_checkpoint(self.created);
    }

    /// The trace, if tracing is on: the endpoint collects its events after every call.
    pub(crate) fn tracer(&mut self) -> Option<&mut Tracer> {
        self.trace.as_deref_mut()
    }

    /// Is tracing on? Every place that records something asks this first, and builds the
    /// event only then: with tracing off that is the whole cost.
    #[inline]
    fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    fn record(&mut self, now: Instant, event: TraceEvent) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(now, event);
        }
    }

    /// Records the state and the metrics if they changed since they were last recorded. Called
    /// at the end of every call into the connection that takes `now`, so a trace shows each
    /// call's outcome rather than every intermediate step.
    #[inline]
    fn trace_checkpoint(&mut self, now: Instant) {
        if self.tracing() {
            self.record_checkpoint(now);
        }
    }

    #[cold]
    fn record_checkpoint(&mut self, now: Instant) {
        let state = match self.state {
            State::Handshaking if self.side == Side::Client => TraceState::Attempted,
            State::Handshaking => TraceState::HandshakeStarted,
            State::Established if self.crypto.confirmed => TraceState::HandshakeConfirmed,
            State::Established => TraceState::HandshakeCompleted,
            State::Closing { .. } => TraceState::Closing,
            State::Draining { .. } => TraceState::Draining,
            State::Drained => TraceState::Closed,
        };
        let metrics = TraceMetrics {
            cwnd: self.cc.window(),
            bytes_in_flight: self.bytes_in_flight,
            ssthresh: self.cc.ssthresh(),
            smoothed_rtt: self.rtt.smoothed(),
            latest_rtt: self.rtt.latest(),
            min_rtt: self.rtt.min(),
            rtt_variance: self.rtt.var(),
            pto_count: self.pto_count,
        };
        let Some(t) = self.trace.as_deref_mut() else {
            return;
        };
        if t.last_state != Some(state) {
            let old = t.last_state.replace(state);
            t.push(now, TraceEvent::State { old, new: state });
        }
        if t.last_metrics != Some(metrics) {
            t.last_metrics = Some(metrics);
            t.push(now, TraceEvent::Metrics(metrics));
        }
    }

    /// Records an authentic stateless packet (RETRY, REFUSE) addressed to this connection: it
    /// carries no frames.
    fn trace_stateless(&mut self, now: Instant, packet: &Packet<'_>) {
        if self.tracing() {
            let packet = TracePacket {
                ty: packet.header.ty.into(),
                number: packet.header.number,
                len: (packet.aad.len() + packet.sealed.len()) as u64,
                frames: Vec::new(),
            };
            self.record(now, TraceEvent::PacketReceived(packet));
        }
    }

    /// The type packet `pn` was sent with, for the trace of its loss: a long-header packet's
    /// as the tracer noted it when it went out; a DATA packet's key phase as the last key
    /// update tells (a packet lost is from the current phase or the one before: an update
    /// waits until a packet of the current phase is acknowledged). Kept out of `SentPacket`,
    /// so that tracing costs no memory per packet in flight while it is off.
    fn sent_type(&mut self, pn: u64, long: bool) -> TracePacketType {
        if long {
            let noted = self.trace.as_deref_mut().and_then(|t| {
                let i = t.long_sent.iter().position(|&(n, _)| n == pn)?;
                Some(t.long_sent.swap_remove(i).1)
            });
            return noted.unwrap_or(TracePacketType::Other);
        }
        let key_phase = self.crypto.keys.as_ref().is_some_and(|k| {
            if pn >= k.phase_first_pn {
                k.send_phase
            } else {
                !k.send_phase
            }
        });
        TracePacketType::Data { key_phase }
    }

    /// Records a change of the peer's address (the address is already the new one).
    fn trace_path(&mut self, now: Instant, change: PathChange, old: SocketAddr) {
        if self.tracing() {
            let new = self.remote;
            self.record(now, TraceEvent::Path { change, old, new });
        }
    }

    /// Gives back the memory of whatever has drained: stream buffers and queues, the maps of
    /// packets in flight and declared lost, scheduled copies. Runs [`COMPACT_AFTER`] after
    /// the last stream data; if data is still unacknowledged then, it runs again as long.
    fn compact(&mut self, now: Instant) {
        self.send.compact();
        self.recv.compact();
        if let Some(b) = self.bulk.as_mut() {
            b.send.compact();
            b.recv.compact();
        }
        self.sent.release_if_empty();
        self.declared_lost.release_if_empty();
        self.unconfirmed.release_if_empty();
        self.copies.release_if_empty();
        self.path.responses.release_if_empty();
        if self.crypto.early.is_empty() {
            self.crypto.early = Vec::new();
        }
        self.compact_due =
            (!self.all_flushed() || !self.sent.is_empty()).then_some(now + COMPACT_AFTER);
    }

    // ----- Application calls -----

    pub(crate) fn write(&mut self, msg: Bytes) -> Result<(), SendError> {
        if !self.is_open() || self.close_after_flush || self.send.fin().is_some() {
            return Err(SendError::Closed);
        }
        self.send.write(msg)?;
        self.stats.messages_sent += 1;
        Ok(())
    }

    /// Queues one message on the bulk channel (see [`Bulk`]). Like [`Self::write`], refused
    /// once the connection is closing or the application finished (a FIN covers both
    /// channels).
    pub(crate) fn write_bulk(&mut self, msg: Bytes) -> Result<(), SendError> {
        if !self.is_open() || self.close_after_flush || self.send.fin().is_some() {
            return Err(SendError::Closed);
        }
        let config = &self.config;
        let bulk = self.bulk.get_or_insert_with(|| Bulk::new(config));
        bulk.send.write(msg)?;
        Ok(())
    }

    /// Asks the peer for an acknowledgement: the next DATA packet carries a PING frame (or
    /// whatever ack-eliciting frames it carries anyway), and what becomes of that packet is
    /// reported as `ConnEvent::Ping` with the id returned here (ids count from 0). Only DATA
    /// packets carry it, so an acknowledgement also says that the peer holds the packet keys,
    /// i.e. it completed the handshake and accepted our key. Like every PING frame it is never
    /// retransmitted: a lost one is reported lost. Pings still queued or in flight when the
    /// connection closes get no outcome (`Closed` is the last event).
    pub(crate) fn ping(&mut self) -> Result<u64, PingError> {
        if !self.is_open() || self.close_after_flush {
            return Err(PingError::Closed);
        }
        let pings = self.app_pings.get_or_insert_with(Box::default);
        if pings.queued.len() >= MAX_QUEUED_PINGS {
            return Err(PingError::TooMany);
        }
        let id = pings.next_id;
        pings.next_id += 1;
        pings.queued.push_back(id);
        Ok(id)
    }

    /// The application's ping carried by packet `pn`, if any: it has an outcome now.
    fn ping_outcome(&mut self, pn: u64, outcome: impl FnOnce(&Self) -> PingOutcome) {
        let Some(id) = self.app_pings.as_mut().and_then(|p| p.take(pn)) else {
            return;
        };
        let outcome = outcome(self);
        if let Some(p) = self.app_pings.as_mut() {
            p.outcomes.push_back((id, outcome));
        }
    }

    /// Half-closes the connection, like a QUIC stream's FIN or TCP's `shutdown(SHUT_WR)`: the
    /// message stream ends after what was written so far (later writes fail), and a FIN frame
    /// telling the peer where it ends goes out reliably. Receiving goes on.
    ///
    /// Why the connection then closes by itself, and when: an application that finished wants
    /// to know that everything it sent arrived and to receive everything the peer sends until
    /// the peer finishes too. Packet ACKs cannot tell it the first exactly (an ACK for a
    /// packet already declared lost, or lost itself, leaves its data looking unacknowledged),
    /// so each side, once the peer's whole stream has arrived, says so with a RECEIVED frame,
    /// sent reliably. A side closes once (1) the peer has acknowledged its FIN and its whole
    /// stream, and (2) the peer has acknowledged our RECEIVED, i.e. knows its own stream
    /// arrived. When either side closes, both therefore already know that both streams were
    /// delivered: the CLOSE (code 0, "finished") is a courtesy that may be lost, and the
    /// other side, if it misses it, loses nothing but a few probe timeouts (it closes too once
    /// our acknowledgement of its RECEIVED arrives, or after `FINISH_GRACE_PTOS` without it).
    /// `Closed` then hands back nothing.
    pub(crate) fn finish_stream(&mut self) -> Result<(), SendError> {
        if !self.is_open() || self.close_after_flush {
            return Err(SendError::Closed);
        }
        if self.send.fin().is_none() {
            self.send.finish();
            self.fin_pending = true;
        }
        Ok(())
    }

    /// Our stream is finished and the peer holds all of it, FIN included.
    fn own_half_done(&self) -> bool {
        self.send.fin().is_some() && self.fin_acked && self.all_flushed()
    }

    /// Closes once both halves are finished and each side knows the other has everything
    /// (see [`Self::finish_stream`]).
    ///
    /// Once both streams are delivered and only the peer's acknowledgement of our RECEIVED is
    /// missing, we wait for it at most [`FINISH_GRACE_PTOS`] probe timeouts: everything we need
    /// is here, and the peer has what it needs unless that RECEIVED was lost, in which case our
    /// CLOSE carries it again (and is repeated while we are closing). Without the bound, a
    /// peer that closed first and whose CLOSE was lost would keep us until the idle timeout.
    fn close_if_both_finished(&mut self, now: Instant) {
        if !(self.is_open() && self.own_half_done() && self.recv.is_complete()) {
            return;
        }
        let grace_over = *self
            .finish_grace
            .get_or_insert(now + self.pto() * FINISH_GRACE_PTOS)
            <= now;
        if self.received_acked || grace_over {
            debug!(
                received_acked = self.received_acked,
                "both directions finished and delivered; closing"
            );
            self.close_frame = Some((close_code::NO_ERROR, "finished".into()));
            self.enter_closing(now, CloseReason::Local);
        }
    }

    /// Bookkeeping after more of our stream was acknowledged (by ACK or RECEIVED).
    fn on_stream_acked(&mut self, now: Instant) {
        // Acknowledgements are the only way a copy becomes moot, so this is the one place that
        // prunes them.
        self.copies.retain(|c| !self.send.is_acked(&c.range));
        if self.send.blocked && self.send.has_room() {
            self.send.blocked = false;
            self.writable_pending = true;
        }
        if let Some(b) = self.bulk.as_mut()
            && b.send.blocked
            && b.send.has_room()
        {
            b.send.blocked = false;
            b.writable_pending = true;
        }
        if self.close_after_flush && self.all_flushed() {
            self.close_after_flush = false;
            self.enter_closing(now, CloseReason::Local);
        }
    }

    /// Closes the connection. Graceful: first wait until everything written is acknowledged.
    pub(crate) fn close(&mut self, now: Instant, code: u64, reason: &str, graceful: bool) {
        if !self.is_open() {
            return;
        }
        self.close_frame = Some((code, reason.to_owned()));
        if graceful && !self.all_flushed() {
            self.close_after_flush = true;
            // Bounded: a peer that is alive but has stopped reading would otherwise hold the
            // close open for ever (its ACKs keep the idle timer fresh while flow control keeps
            // our data back).
            self.close_deadline = Some(now + self.config.idle_timeout);
        } else {
            self.enter_closing(now, CloseReason::Local);
        }
        self.trace_checkpoint(now);
    }

    fn enter_closing(&mut self, now: Instant, reason: CloseReason) {
        debug!(?reason, "closing");
        self.state = State::Closing {
            until: now + self.pto() * 3,
        };
        self.close_pending = true;
        self.closed.get_or_insert(reason);
        self.copies.clear();
    }

    fn protocol_violation(&mut self, now: Instant, code: u64, detail: &'static str) {
        debug!(code, detail, "peer violated the protocol");
        self.close_frame = Some((code, detail.to_owned()));
        self.enter_closing(now, CloseReason::ProtocolViolation { code, detail });
    }

    pub(crate) fn poll_event(&mut self) -> Option<ConnEvent> {
        if let Some(remote_key) = self.key_in_question().filter(|_| self.is_open()) {
            if std::mem::take(&mut self.crypto.verify_pending) {
                return Some(ConnEvent::VerifyKey {
                    incoming: self.side == Side::Server,
                    remote_key,
                });
            }
        }
        if std::mem::take(&mut self.connected_pending) {
            return Some(ConnEvent::Connected {
                incoming: self.side == Side::Server,
                // Set by the handshake, which is what queues this event.
                remote_key: self.crypto.remote_key.unwrap_or_default(),
            });
        }
        if self.path.validated && std::mem::take(&mut self.path_changed_pending) {
            return Some(ConnEvent::PathChanged);
        }
        if let Some(msg) = self.recv.pop_message() {
            self.stats.messages_received += 1;
            if self.is_open() && self.recv.wants_max_data_update() {
                self.max_data_pending = true;
            }
            return Some(ConnEvent::Message(msg));
        }
        let open = self.is_open();
        if let Some(b) = self.bulk.as_mut()
            && let Some(msg) = b.recv.pop_message()
        {
            if open && b.recv.wants_max_data_update() {
                b.max_data_pending = true;
            }
            return Some(ConnEvent::BulkMessage(msg));
        }
        if !self.peer_fin_reported && self.recv.is_finished_delivered() {
            self.peer_fin_reported = true;
            return Some(ConnEvent::PeerFinished);
        }
        // Before `Closed`, which replaces the send stream (and so its counter): every message
        // is then either reported acknowledged or handed back as undelivered, never both.
        let acked = self.send.acked_messages();
        if acked > self.acked_reported && !self.closed_emitted {
            let n = acked - self.acked_reported;
            self.acked_reported = acked;
            return Some(ConnEvent::Acked(n));
        }
        if let Some((id, outcome)) = self
            .app_pings
            .as_mut()
            .filter(|_| !self.closed_emitted)
            .and_then(|p| p.outcomes.pop_front())
        {
            return Some(ConnEvent::Ping(id, outcome));
        }
        if std::mem::take(&mut self.writable_pending) {
            return Some(ConnEvent::Writable);
        }
        if let Some(b) = self.bulk.as_mut()
            && std::mem::take(&mut b.writable_pending)
        {
            return Some(ConnEvent::BulkWritable);
        }
        if !self.closed_emitted {
            if let Some(reason) = &self.closed {
                self.closed_emitted = true;
                if !self.app_holds && self.crypto.remote_key.is_none() {
                    // An incoming handshake that never completed: the application never saw
                    // `Connected` nor the handle, so it hears nothing of the end either.
                    return None;
                }
                // Hand back what the peer never acknowledged, and free the send buffer.
                let undelivered = self.send.unacked_messages();
                self.send = SendStream::new(0, 0, 0);
                self.bulk = None;
                self.copies.clear();
                return Some(ConnEvent::Closed(reason.clone(), undelivered));
            }
        }
        None
    }

    // ----- Input -----

    /// Processes one packet routed to this connection: authenticates it, then applies it
    /// whole or not at all. `scratch` is where it is decrypted (the caller's, reused).
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        packet: &Packet<'_>,
        datagram_len: usize,
        scratch: &mut Vec<u8>,
    ) {
        self.stats.bytes_received += datagram_len as u64;
        self.process_packet(now, remote, packet, datagram_len, scratch);
        self.trace_checkpoint(now);
    }

    /// [`Self::handle_packet`] without the byte count: also for packets kept while the
    /// application judged the peer's key, opened once it accepted it.
    fn process_packet(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        packet: &Packet<'_>,
        datagram_len: usize,
        scratch: &mut Vec<u8>,
    ) {
        if matches!(self.state, State::Drained | State::Draining { .. }) {
            return;
        }
        let header = packet.header;
        let Some(next_key) = self.open(now, remote, packet, scratch) else {
            return;
        };
        let payload: &[u8] = scratch;
        // Authentic from here on (long-header packets: at least undamaged and addressed to us).
        if !self.path.validated && remote == self.remote {
            self.path.rx += datagram_len as u64;
            // The peer is still there but has not answered: our challenge or its PATH_RESPONSE
            // (never retransmitted) was lost, or the challenge's packet was acknowledged while
            // the answer's was not. Challenge again, at most once per PTO, with the same data
            // so that a late answer to the earlier one still counts (as quinn does on PTO).
            // And at once if the limit holds everything else back: the challenge-only packet
            // is the one thing that can lift it (the PTO may be long: after a fuzzed 34 s RTT
            // a client's data waited behind a 35-byte budget for good, crash 6).
            if self
                .path
                .challenge_sent
                .is_some_and(|t| now.saturating_duration_since(t) >= self.pto())
                || self.amplification_blocked()
            {
                self.path.challenge_due = true;
            }
        }
        if let State::Closing { .. } = self.state {
            // Answer with CLOSE (once per packet received, so never more than we get) and
            // stop early if the peer closes too.
            self.close_pending = true;
            if Frames::new(payload).any(|f| matches!(f, Ok(Frame::Close { .. }))) {
                self.state = State::Drained;
            }
            return;
        }
        let pn = header.number;
        // The replay window: every packet number is accepted once. Network duplicates and
        // replayed datagrams end here alike.
        if !self.crypto.replay.check(pn) || pn < self.recv_floor || self.recv_pns.contains(pn) {
            self.drop_packet(now, packet, DropReason::Duplicate);
            return;
        }
        // Check everything before acting on anything: a packet is applied whole or not at
        // all. The frames are decoded twice (here, then to apply them) rather than collected:
        // decoding is cheap, an allocation per packet is not.
        let long = header.ty.is_long();
        let mut misplaced = false;
        let mut unbufferable = false;
        // A probing packet (PROTOCOL.md §5.7.1) holds path frames and padding only: it checks
        // a path, and never moves the connection.
        let mut probing = true;
        for frame in Frames::new(payload) {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    trace!(%e, "malformed frames");
                    self.drop_packet(now, packet, DropReason::Malformed);
                    return;
                }
            };
            misplaced |= match frame {
                // Long-header keys are public: nothing that touches application data or the
                // path may ride on them.
                Frame::Padding { .. }
                | Frame::Ping
                | Frame::Ack(_)
                | Frame::Close { .. }
                | Frame::Handshake(_) => false,
                Frame::Message { .. }
                | Frame::MaxData { .. }
                | Frame::PathChallenge(_)
                | Frame::PathResponse(_)
                | Frame::ResetToken(_)
                | Frame::Fin { .. }
                | Frame::Received { .. }
                | Frame::Bulk { .. }
                | Frame::BulkMaxData { .. } => long,
            };
            probing &= matches!(
                frame,
                Frame::Padding { .. } | Frame::PathChallenge(_) | Frame::PathResponse(_)
            );
            match frame {
                Frame::Message { offset, data } => {
                    unbufferable |= !self.recv.can_buffer(offset, data.len());
                }
                Frame::Bulk { offset, data } => {
                    // A channel not yet created holds nothing: anything fits.
                    unbufferable |= self
                        .bulk
                        .as_ref()
                        .is_some_and(|b| !b.recv.can_buffer(offset, data.len()));
                }
                _ => {}
            }
        }
        if misplaced {
            self.drop_packet(now, packet, DropReason::Malformed);
            return;
        }
        if unbufferable {
            // Dropped whole and not acknowledged, exactly as if lost: the sender resends.
            trace!(
                pn,
                "out-of-order data beyond the segment cap; packet dropped"
            );
            self.drop_packet(now, packet, DropReason::NoBuffer);
            return;
        }
        self.crypto.replay.record(pn);
        if self.tracing() {
            let packet = TracePacket {
                ty: header.ty.into(),
                number: pn,
                len: datagram_len as u64,
                frames: TraceFrame::list(payload),
            };
            self.record(now, TraceEvent::PacketReceived(packet));
        }
        if let (Some(next), Some(keys)) = (next_key, self.crypto.keys.as_mut()) {
            debug!("peer updated its keys");
            keys.update_recv(next);
            let key_phase = keys.recv_phase;
            self.stats.key_updates_received += 1;
            if self.tracing() {
                let generation = self.stats.key_updates_received;
                self.record(
                    now,
                    TraceEvent::KeyUpdated {
                        local: false,
                        key_phase,
                        generation,
                    },
                );
            }
        }
        self.stats.packets_received += 1;
        self.last_rx = now;
        self.last_activity = now;

        // Packet-number bookkeeping and ACK urgency: a gap, or a gap being filled, is news the
        // sender needs now, not after the delayed-ACK timer. (Only for ack-eliciting packets:
        // answering reordered ACKs with ACKs would ping-pong forever.)
        let mut urgent = long;
        match self.recv_largest {
            Some((largest, _)) if pn < largest => {
                self.stats.out_of_order += 1;
                urgent = true;
            }
            Some((largest, _)) if pn > largest + 1 => urgent = true,
            _ => {}
        }
        if header.ty.is_data()
            && !probing
            && remote == self.remote
            && let Some(p) = self.path.probing.as_mut()
        {
            // The peer sends from where we moved: it has followed us (§5.7.1).
            p.left = None;
        }
        if self.recv_largest.is_none_or(|(largest, _)| pn > largest) {
            self.recv_largest = Some((pn, now));
            // A packet from the address we moved away from was in flight before the peer
            // followed us: no reason to go back (§5.7.1).
            let left_behind = self
                .path
                .probing
                .as_ref()
                .and_then(|p| p.left)
                .is_some_and(|(a, until)| a == remote && now < until);
            if remote != self.remote && header.ty.is_data() && !probing && !left_behind {
                // Only an authenticated packet, and only the newest, moves the connection.
                self.migrate(now, remote, datagram_len);
            }
        }
        self.recv_pns.insert(pn..pn + 1);
        if self.recv_pns.range_count() > MAX_RECV_RANGES {
            self.recv_pns.truncate_low(MAX_RECV_RANGES);
            self.recv_floor = self.recv_pns.min().unwrap_or(self.recv_floor);
        }
        self.ack_pending = true;

        match (self.side, header.ty) {
            (Side::Client, PacketType::Data { .. }) if !self.crypto.confirmed => {
                debug!("handshake confirmed");
                self.crypto.confirmed = true;
                self.crypto.hs_due = false;
                self.crypto.hs_msg = Vec::new();
            }
            _ => {}
        }

        let mut eliciting = false;
        // Every ack-eliciting frame is a PING (a keepalive, or a probe without data).
        let mut ping_only = true;
        let mut carried_handshake = false;
        // Checked above: every frame decodes.
        for frame in Frames::new(payload).flatten() {
            eliciting |= frame.is_ack_eliciting();
            ping_only &= !frame.is_ack_eliciting() || matches!(frame, Frame::Ping);
            match frame {
                Frame::Padding { .. } | Frame::Ping => {}
                Frame::Handshake(msg) => {
                    carried_handshake = true;
                    if self.side == Side::Client
                        && header.ty == PacketType::Accept
                        && self.crypto.keys.is_some()
                    {
                        // The server is still sending message 2: it has not got message 3.
                        // (One that has it and is deciding on our key sends ACCEPTs with
                        // acknowledgements only: repeating message 3 to those would only be
                        // acknowledged again, and so on.)
                        self.crypto.hs_due = true;
                    }
                    if let Err(detail) = self.on_handshake(now, &header, msg) {
                        self.protocol_violation(now, close_code::HANDSHAKE_FAILED, detail);
                        return;
                    }
                    if !self.is_open() {
                        return; // the peer's key was refused
                    }
                }
                Frame::Ack(ref ack) => {
                    if let Err(detail) = self.on_ack(now, ack, long) {
                        self.protocol_violation(now, close_code::PROTOCOL_VIOLATION, detail);
                        return;
                    }
                }
                Frame::Message { offset, data } => match self.recv.on_data(offset, data) {
                    Ok(_) => self.compact_due = Some(now + COMPACT_AFTER),
                    Err(e) => {
                        let (code, detail) = receive_violation(e, "data beyond the final offset");
                        self.protocol_violation(now, code, detail);
                        return;
                    }
                },
                Frame::Bulk { offset, data } => {
                    let config = &self.config;
                    let bulk = self.bulk.get_or_insert_with(|| Bulk::new(config));
                    if bulk.recv.max_data == INITIAL_MAX_DATA
                        && config.bulk_receive_window > INITIAL_MAX_DATA
                    {
                        // The peer speaks bulk: now, and only now, a window above the initial
                        // limit may be announced (see `Bulk`).
                        bulk.max_data_pending = true;
                    }
                    match bulk.recv.on_data(offset, data) {
                        Ok(_) => self.compact_due = Some(now + COMPACT_AFTER),
                        Err(e) => {
                            // The bulk channel has no FIN: only the limits can be broken.
                            let (code, detail) = receive_violation(e, "bulk data");
                            self.protocol_violation(now, code, detail);
                            return;
                        }
                    }
                }
                Frame::BulkMaxData { limit } => {
                    // Only a peer we sent bulk data to sends this; from any other it is
                    // harmless (the credit waits, unused, in a channel of its own).
                    let config = &self.config;
                    let bulk = self.bulk.get_or_insert_with(|| Bulk::new(config));
                    if limit > bulk.send.max_data {
                        bulk.send.max_data = limit;
                    }
                }
                Frame::Fin { final_offset } => {
                    if self.recv.on_fin(final_offset).is_err() {
                        let code = close_code::PROTOCOL_VIOLATION;
                        self.protocol_violation(now, code, "final offset");
                        return;
                    }
                }
                Frame::Received { offset } => {
                    if self.send.on_received(offset).is_err() {
                        let code = close_code::PROTOCOL_VIOLATION;
                        self.protocol_violation(now, code, "received beyond sent");
                        return;
                    }
                    if self.send.fin().is_some_and(|f| offset >= f) {
                        self.fin_acked = true;
                        self.fin_pending = false;
                    }
                    self.on_stream_acked(now);
                }
                Frame::MaxData { limit } => {
                    if limit > self.send.max_data {
                        self.send.max_data = limit;
                    }
                }
                Frame::PathChallenge(data) if remote != self.remote => {
                    // A probe from another address: answered there (§5.7.1). Bounded too.
                    let p = self.path.probing.get_or_insert_with(Box::default);
                    if p.responses.len() >= MAX_PROBE_RESPONSES {
                        p.responses.pop_front();
                    }
                    p.responses.push_back((data, remote, datagram_len));
                }
                Frame::PathChallenge(data) => {
                    // Bounded: at most a few outstanding answers; a flood gets the newest.
                    if self.path.responses.len() >= 4 {
                        self.path.responses.pop_front();
                    }
                    self.path.responses.push_back(data);
                }
                Frame::ResetToken(token) => self.peer_reset_token = Some(token),
                Frame::PathResponse(data) => {
                    if self.path.challenge.is_some_and(|(c, _)| c == data) && remote == self.remote
                    {
                        debug!(remote = %self.remote, "new path validated");
                        self.path.validated = true;
                        self.path.challenge = None;
                        let old = self.path.previous.take().unwrap_or(remote);
                        self.path_changed_pending = true;
                        self.trace_path(now, PathChange::Validated, old);
                    }
                    if self
                        .probe()
                        .is_some_and(|p| p.data == data && p.addr == remote)
                    {
                        self.on_probe_answered(now, remote);
                    }
                }
                Frame::Close { code, reason } => {
                    let reason = String::from_utf8_lossy(reason).into_owned();
                    debug!(code, "peer closed");
                    self.closed
                        .get_or_insert(CloseReason::PeerClosed { code, reason });
                    self.state = State::Draining {
                        until: now + self.pto() * 3,
                    };
                    self.copies.clear();
                    return;
                }
            }
        }
        if self.side == Side::Server
            && header.ty == PacketType::Handshake
            && !carried_handshake
            && self.crypto.keys.is_none()
            && !self.crypto.peer_deciding
        {
            // A HANDSHAKE packet without message 3: the client is deciding on our key (§5.8).
            debug!("the client is deciding on our key");
            self.crypto.peer_deciding = true;
        }
        if eliciting {
            self.eliciting_since_ack += 1;
            // Handshake packets are acknowledged at once too: the RTT estimate starts there.
            // A packet-number gap is urgent only while data is missing: a gap whose data
            // arrived anyway (in a proactive copy) repairs nothing, and acknowledging every
            // such gap at once cost an ACK-only packet per lost copy (issue 13).
            let urgent = urgent && (long || self.has_hole());
            // A keepalive (nothing but a PING, on a connection whose stream has been quiet
            // for `COMPACT_AFTER`) is acknowledged at once: no data follows for the ACK to
            // ride with, and the delayed ACK would cost a second wake-up per keepalive, which
            // is most of what an idle connection costs a server (issue 14). A probe while data
            // flows keeps the delayed ACK: its RTT sample then is like every other's.
            let keepalive = ping_only && self.compact_due.is_none();
            if urgent || keepalive || self.eliciting_since_ack >= ACK_ELICITING_THRESHOLD {
                self.ack_immediately = true;
            }
            self.ack_deadline.get_or_insert(now + MAX_ACK_DELAY);
        }
        if !self.received_sent && self.recv.is_complete() {
            // The peer's whole stream is here: tell it, reliably (see `finish_stream`).
            self.received_sent = true;
            self.received_pending = true;
        }
        self.close_if_both_finished(now);
    }

    /// Authenticates and decrypts `packet` with the key its type calls for, returning the
    /// frames and, if the packet is under the peer's next key, that key (to commit once the
    /// packet is accepted). `None`: dropped (and counted).
    /// Authenticates and decrypts `packet` into `out`; `Some` with the peer's next key if
    /// the packet needed it (see [`Keys::open`]).
    fn open(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        packet: &Packet<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Option<PacketKey>> {
        let ty = packet.header.ty;
        let result = match (self.side, ty) {
            (_, PacketType::Data { key_phase }) => {
                let Some(keys) = self.crypto.keys.as_mut() else {
                    if self.crypto.awaiting_verdict.is_some()
                        && self.crypto.early.len() < MAX_EARLY_PACKETS
                    {
                        // A client has keys once it wrote message 3 and may send DATA at
                        // once, while our application still judges its key. Kept unopened
                        // (nothing is accepted before the verdict) and opened if the key is
                        // accepted: a slow verdict then costs no retransmissions, and the
                        // client sees no loss. (A DATA packet's bytes are its header, the
                        // associated data, and the sealed part.)
                        let bytes = [packet.aad, packet.sealed].concat();
                        self.crypto
                            .early
                            .push((packet.header.number, bytes, remote));
                        return None;
                    }
                    // DATA that overtook the handshake message carrying the keys: dropped, and
                    // retransmitted by the peer's loss recovery like any lost packet.
                    self.drop_packet(now, packet, DropReason::Undecryptable);
                    return None;
                };
                keys.open(packet, key_phase, out)
            }
            (Side::Server, PacketType::Initial | PacketType::Handshake)
            | (Side::Client, PacketType::Accept) => {
                if self.crypto.confirmed {
                    // Long-header keys are public; once the handshake is confirmed they are not
                    // trusted with anything. A client still sending them has not seen our DATA
                    // yet: elicit some.
                    if self.side == Side::Server && packet.open(&self.crypto.initial.client).is_ok()
                    {
                        self.ping_pending = true;
                    }
                    self.drop_packet(now, packet, DropReason::Stale);
                    return None;
                }
                let key = match self.side {
                    Side::Server => &self.crypto.initial.client,
                    Side::Client => &self.crypto.initial.server,
                };
                packet.open_into(key, out).map(|()| None)
            }
            (Side::Client, PacketType::Retry) => {
                self.on_retry(now, packet);
                return None;
            }
            (Side::Client, PacketType::Refuse) => {
                self.on_refuse(now, packet);
                return None;
            }
            _ => {
                // A type that never travels in this direction.
                self.drop_packet(now, packet, DropReason::Malformed);
                return None;
            }
        };
        match result {
            Ok(next_key) => Some(next_key),
            Err(AuthError) => {
                self.drop_packet(now, packet, DropReason::Corrupt);
                None
            }
        }
    }

    /// The server wants proof of our address first: repeat the INITIAL with its token.
    fn on_retry(&mut self, now: Instant, packet: &Packet<'_>) {
        let ours = self.state == State::Handshaking
            && self.remote_cid.is_none()
            && self.crypto.token.is_empty()
            && !packet.token.is_empty();
        if !ours || packet.open(&self.crypto.initial.retry).is_err() {
            // One RETRY per attempt (a second could only loop us), and only an authentic one.
            self.drop_packet(now, packet, DropReason::Malformed);
            return;
        }
        debug!("retry: repeating the INITIAL with the server's token");
        self.trace_stateless(now, packet);
        self.crypto.token = packet.token.to_vec();
        self.stats.retries_received += 1;
        // The INITIALs sent so far were answered, not lost: forget them without counting
        // losses or shrinking the congestion window, and send the next one now.
        self.forget_sent();
        self.ping_pending = true;
        self.last_rx = now;
    }

    /// The server will not take this attempt: end it at once, with the server's reason. Only
    /// while no ACCEPT has arrived (after one the server has state, and would not refuse), and
    /// only if it echoes our initial destination ID and authenticates under its refuse key:
    /// as hard to forge as a RETRY.
    fn on_refuse(&mut self, now: Instant, packet: &Packet<'_>) {
        let ours = self.state == State::Handshaking
            && self.remote_cid.is_none()
            && packet.header.src_cid == Some(self.initial_dcid);
        let reason = packet.refuse_reason();
        let authentic = packet.open(&self.crypto.initial.refuse).is_ok();
        let (true, true, Some(reason)) = (ours, authentic, reason) else {
            self.drop_packet(now, packet, DropReason::Malformed);
            return;
        };
        debug!(%reason, "refused by the server");
        self.trace_stateless(now, packet);
        self.state = State::Drained;
        self.copies.clear();
        self.closed.get_or_insert(CloseReason::Refused { reason });
    }

    fn forget_sent(&mut self) {
        // Only DATA packets carry the application's pings, and packets are forgotten only
        // during the handshake; should one be in flight all the same, it is lost.
        let pns: Vec<u64> = self
            .app_pings
            .as_ref()
            .map(|p| p.in_flight.iter().map(|&(pn, _)| pn).collect())
            .unwrap_or_default();
        for pn in pns {
            self.ping_outcome(pn, |_| PingOutcome::Lost);
        }
        self.sent.clear();
        self.declared_lost.clear();
        self.unconfirmed.clear();
        self.bytes_in_flight = 0;
        self.bulk_in_flight = 0;
        self.time_of_last_ack_eliciting = None;
        self.loss_time = None;
        self.pto_count = 0;
        self.probes = 0;
        if let Some(t) = self.trace.as_deref_mut() {
            t.long_sent.clear();
        }
    }

    /// A Noise message from the peer. Only the one the handshake expects next is read;
    /// repeats (every long-header packet carries one) are ignored.
    ///
    /// The message that carries the peer's static key (message 2 for a client, 3 for a
    /// server) is where its key is checked, before anything of ours depends on it: against the
    /// expected key if there is one, else by the application if `verify` is set. Either way
    /// a refused peer never gets Noise message 3 from a client (our identity) nor a DATA
    /// packet from a server, and nothing it sends is opened.
    fn on_handshake(
        &mut self,
        now: Instant,
        header: &Header,
        msg: &[u8],
    ) -> Result<(), &'static str> {
        let expected = matches!(
            (self.side, header.ty),
            (Side::Client, PacketType::Accept) | (Side::Server, PacketType::Handshake)
        );
        if self.crypto.awaiting_verdict.is_some() {
            return Ok(()); // A repeat while the application decides.
        }
        let Some(hs) = self.crypto.handshake.as_mut() else {
            return Ok(());
        };
        if !expected || hs.is_my_turn() {
            return Ok(());
        }
        hs.read(msg).map_err(|_| "handshake message rejected")?;
        let actual = hs.remote_static().ok_or("no static key")?;
        if self.side == Side::Client {
            self.remote_cid = header.src_cid;
        }
        match self.crypto.expected_key {
            Some(expected) if expected != actual => {
                debug!("peer key differs from the expected one; refusing");
                self.refuse_key(now, CloseReason::KeyMismatch { expected, actual });
                Ok(())
            }
            Some(_) => self.complete_handshake(now),
            None if self.crypto.verify => {
                debug!("peer key presented; awaiting the application's verdict");
                self.crypto.awaiting_verdict = Some(now);
                self.crypto.verify_pending = true;
                // Our last message is answered (a client's message 1 by message 2, a server's
                // message 2 by message 3); a client's message 3 waits for the verdict. Until
                // then our long-header packets carry acknowledgements only: were they to carry
                // the answered message, each would be acknowledged, and each acknowledgement
                // answered, at the round-trip rate for as long as a person takes to decide.
                self.crypto.hs_msg = Vec::new();
                // The application sees this handle now, so it hears of its end too.
                self.app_holds = true;
                Ok(())
            }
            None => self.complete_handshake(now),
        }
    }

    /// The peer's key, while the application's verdict on it is awaited: the Noise state's
    /// remote static key (the state is kept until the verdict).
    fn key_in_question(&self) -> Option<[u8; 32]> {
        self.crypto.awaiting_verdict?;
        self.crypto.handshake.as_ref()?.remote_static()
    }

    /// The application's verdict on the key it was asked about with `ConnEvent::VerifyKey`.
    /// Ignored unless that question is open (the connection may have ended meanwhile).
    pub(crate) fn key_verdict(&mut self, now: Instant, accept: bool) {
        if !self.is_open() {
            return;
        }
        let Some(actual) = self.key_in_question() else {
            return;
        };
        self.crypto.awaiting_verdict = None;
        self.crypto.verify_pending = false;
        let early = std::mem::take(&mut self.crypto.early);
        if accept {
            if let Err(detail) = self.complete_handshake(now) {
                self.protocol_violation(now, close_code::HANDSHAKE_FAILED, detail);
                return;
            }
            let mut scratch = Vec::new();
            for (_, datagram, from) in early {
                // Built from a packet that parsed once, so it parses again.
                if let Ok(packet) = Packet::new_checked(&datagram) {
                    self.process_packet(now, from, &packet, datagram.len(), &mut scratch);
                }
            }
        } else {
            for (_, datagram, _) in &early {
                // Built from a packet that parsed once, so it parses again.
                match Packet::new_checked(datagram) {
                    Ok(packet) => self.drop_packet(now, &packet, DropReason::Undecryptable),
                    Err(_) => self.count_drop(DropReason::Undecryptable),
                }
            }
            debug!("peer key refused by the application");
            self.refuse_key(now, CloseReason::KeyRefused { actual });
        }
        self.trace_checkpoint(now);
    }

    /// Ends the handshake with a refused peer: a client before writing message 3 (an impostor
    /// never learns who we are), a server before installing keys (nothing it sends is opened).
    fn refuse_key(&mut self, now: Instant, reason: CloseReason) {
        self.crypto.hs_msg = Vec::new();
        self.crypto.hs_due = false;
        self.crypto.handshake = None;
        let text = match reason {
            CloseReason::KeyMismatch { .. } => "key mismatch",
            _ => "key refused",
        };
        self.close_frame = Some((close_code::KEY_MISMATCH, text.into()));
        self.enter_closing(now, reason);
    }

    /// The peer's key passed: a client writes Noise message 3, both sides install packet keys
    /// and the connection is established.
    fn complete_handshake(&mut self, now: Instant) -> Result<(), &'static str> {
        let mut hs = self
            .crypto
            .handshake
            .take()
            .ok_or("handshake state missing")?;
        if self.side == Side::Client {
            self.crypto.hs_msg = hs.write(&[]).map_err(|_| "handshake write failed")?;
            self.crypto.hs_due = true;
        }
        let keys = hs.finish().map_err(|_| "handshake incomplete")?;
        self.crypto.remote_key = Some(keys.remote_static);
        self.crypto.keys = Some(Keys {
            send: keys.send,
            send_phase: false,
            phase_first_pn: self.next_pn,
            phase_started: now,
            recv: keys.recv,
            recv_phase: false,
            recv_prev: None,
        });
        if self.side == Side::Server {
            self.crypto.confirmed = true;
            self.crypto.hs_msg = Vec::new();
            // Our first DATA packet is what confirms the handshake to the client.
            self.ping_pending = true;
        }
        self.state = State::Established;
        self.connected_pending = true;
        self.reset_token_pending = true;
        debug!(remote_cid = ?self.remote_cid, "connected");
        Ok(())
    }

    /// An authenticated packet, the newest, came from a new address: NAT rebinding, or the
    /// peer moved. Follow it at once (nothing is lost), but send no more than we receive from
    /// there until it answers a PATH_CHALLENGE; fall back if it never does.
    fn migrate(&mut self, now: Instant, remote: SocketAddr, datagram_len: usize) {
        let old = self.remote;
        if self.path.previous == Some(remote) {
            // Back to the address that was validated before: nothing to prove.
            debug!(new = %remote, "peer back on its validated address");
            self.remote = remote;
            self.path.validated = true;
            self.path.challenge = None;
            self.path.previous = None;
            self.path_changed_pending = true;
            self.trace_path(now, PathChange::Returned, old);
            return;
        }
        debug!(old = %self.remote, new = %remote, "peer address changed; validating");
        if self.path.validated {
            self.path.previous = Some(self.remote);
        }
        self.remote = remote;
        self.trace_path(now, PathChange::Migrated, old);
        self.path.validated = false;
        // What the old path's queue showed says nothing about the new one.
        self.queue = QueueBase::default();
        self.pmtud.on_new_path();
        self.mtu_fell_back();
        self.path.rx = datagram_len as u64;
        self.path.tx = 0;
        let data = self.challenge_data();
        self.path.challenge = Some((data, now + self.pto() * PATH_VALIDATION_PTOS));
        self.path.challenge_due = true;
        self.stats.migrations += 1;
    }

    /// Probes `addr` as another path to the peer, or stops probing (`None`): see
    /// [`crate::Endpoint::probe_path`]. Probing the address already probed changes nothing
    /// (its backoff goes on).
    pub(crate) fn probe_path(&mut self, now: Instant, addr: Option<SocketAddr>) {
        let addr = addr.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()));
        if self.probe().map(|p| p.addr) == addr {
            return;
        }
        let probe = addr.map(|addr| Probe {
            addr,
            data: self.challenge_data(),
            next: now,
            interval: PROBE_INTERVAL_MIN,
            due: false,
        });
        self.path.probing.get_or_insert_with(Box::default).probe = probe;
    }

    /// The address being probed, if any.
    fn probe(&self) -> Option<&Probe> {
        self.path.probing.as_ref()?.probe.as_ref()
    }

    /// Whether probes go out now: only on an established connection whose current path is
    /// validated (one path change at a time), while the peer is elsewhere than the probed
    /// address.
    fn probes_go_out(&self) -> bool {
        self.probe().is_some_and(|p| {
            self.state == State::Established
                && self.crypto.confirmed
                && self.path.validated
                && self.remote != p.addr
        })
    }

    /// When the next probe is due, if probing.
    fn probe_deadline(&self) -> Option<Instant> {
        if !self.probes_go_out() {
            return None;
        }
        self.probe().filter(|p| !p.due).map(|p| p.next)
    }

    /// The probed address answered our PATH_CHALLENGE from there: the path works both ways.
    /// The client moves the connection to it at once (validated by that answer); the server
    /// waits for the client to move, and follows it by §5.7.
    fn on_probe_answered(&mut self, now: Instant, addr: SocketAddr) {
        self.stats.probes_answered += 1;
        if self.side != Side::Client || !self.probes_go_out() {
            debug!(%addr, "probed address answered");
            return;
        }
        let old = std::mem::replace(&mut self.remote, addr);
        debug!(%old, new = %addr, "probed address answered: moving there");
        self.path.previous = Some(old);
        let until = now + self.pto() * PATH_VALIDATION_PTOS;
        self.path.probing.get_or_insert_with(Box::default).left = Some((old, until));
        // What the old path's queue showed says nothing about the new one.
        self.queue = QueueBase::default();
        self.pmtud.on_new_path();
        self.mtu_fell_back();
        // A packet that is not a probe, at once: the peer follows it here.
        self.ping_pending = true;
        self.path_changed_pending = true;
        self.stats.migrations += 1;
        self.trace_path(now, PathChange::Moved, old);
    }

    /// The datagram size went back to the base: the window counts in such datagrams again.
    fn mtu_fell_back(&mut self) {
        self.cc.set_max_datagram(pmtud::BASE);
        self.pacer.set_max_datagram(pmtud::BASE);
    }

    fn challenge_data(&mut self) -> [u8; 8] {
        self.path.challenges_sent += 1;
        let full = crate::crypto::mac(
            &self.path.challenge_key,
            &[&self.path.challenges_sent.to_be_bytes()],
        );
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    /// The peer answered with a RESET carrying the token it gave us: it no longer knows this
    /// connection (it restarted). End at once; unacknowledged messages go back to the
    /// application, which can reconnect without waiting for the idle timeout.
    pub(crate) fn on_reset(&mut self, now: Instant) {
        if matches!(self.state, State::Drained) {
            return;
        }
        debug!("stateless reset from the peer");
        self.state = State::Drained;
        self.copies.clear();
        self.closed.get_or_insert(CloseReason::Reset);
        self.trace_checkpoint(now);
    }

    /// The peer's authenticated static key, once the handshake has produced it.
    pub(crate) fn remote_key(&self) -> Option<[u8; 32]> {
        self.crypto.remote_key
    }

    /// An ACK frame. `from_long`: it came in a long-header packet, whose keys are public, so
    /// it may acknowledge only long-header packets.
    fn on_ack(
        &mut self,
        now: Instant,
        ack: &AckFrame,
        from_long: bool,
    ) -> Result<(), &'static str> {
        let Some(largest) = ack.largest() else {
            return Ok(());
        };
        if largest >= self.next_pn {
            return Err("ack of unsent packet");
        }
        let mut newly: Vec<(u64, SentPacket)> = Vec::new();
        let mut spurious: Vec<DeclaredLost> = Vec::new();
        for &(lo, hi) in &ack.ranges {
            let pns: Vec<u64> = self
                .sent
                .range(lo..=hi)
                .filter(|(_, p)| p.long || !from_long)
                .map(|(&pn, _)| pn)
                .collect();
            for pn in pns {
                if let Some(p) = self.sent.remove(&pn) {
                    newly.push((pn, p));
                }
            }
            let pns: Vec<u64> = self
                .declared_lost
                .range(lo..=hi)
                .filter(|(_, p)| p.long || !from_long)
                .map(|(&pn, _)| pn)
                .collect();
            for pn in pns {
                if let Some(p) = self.declared_lost.remove(&pn) {
                    spurious.push(p);
                }
            }
        }
        let any_spurious = !spurious.is_empty();
        for p in spurious {
            self.on_spurious_loss(now, p);
        }
        if let Some(seq) = newly.iter().map(|(_, p)| p.seq).max() {
            self.largest_acked_seq = Some(self.largest_acked_seq.map_or(seq, |a| a.max(seq)));
            if !from_long {
                self.largest_acked_seq_data =
                    Some(self.largest_acked_seq_data.map_or(seq, |a| a.max(seq)));
            }
        }
        let credible = if from_long {
            newly.iter().map(|&(pn, _)| pn).max()
        } else {
            Some(largest)
        };
        if let Some(l) = credible {
            self.largest_acked = Some(self.largest_acked.map_or(l, |a| a.max(l)));
        }
        if !from_long {
            self.largest_acked_data =
                Some(self.largest_acked_data.map_or(largest, |a| a.max(largest)));
        }
        if newly.is_empty() {
            if any_spurious {
                self.on_stream_acked(now);
            }
            return Ok(());
        }
        // An RTT sample only from the largest acknowledged packet, and only when it is newly
        // acknowledged: packet numbers are never reused, so the sample is never ambiguous.
        // (Everything in `sent` is ack-eliciting, as RFC 9002 requires for a sample.)
        if let Some((_, p)) = newly.iter().find(|(pn, _)| *pn == largest) {
            let delay = Duration::from_micros(ack.delay_us).min(MAX_ACK_DELAY);
            let sample = self
                .rtt
                .update(now.saturating_duration_since(p.time), delay);
            self.standing_rtt.push(now, sample, self.rtt.smoothed());
            if self.config.hystart {
                self.cc
                    .on_rtt_sample(now, p.time, self.rtt.latest(), p.app_limited);
            }
            self.check_queue(now);
            self.first_rtt_sample.get_or_insert(now);
        }
        if self
            .app_pings
            .as_ref()
            .is_some_and(|p| !p.in_flight.is_empty())
        {
            // Only the newest ack-eliciting packet acknowledged has its round trip here: an
            // older one's own acknowledgement was lost, or it waited at the peer for a later
            // packet, and counting the time until this ACK (a probe timeout later, say) would
            // make up a round trip. (ACK-only packets of ours do not count: they elicit no
            // ACK, and the peer acknowledges them along with the rest.) The delay the peer
            // reports is that of the frame's largest packet, received no earlier than ours.
            let newest = newly.iter().map(|&(pn, _)| pn).max();
            let ack_delay = Duration::from_micros(ack.delay_us);
            let delay = ack_delay.min(MAX_ACK_DELAY);
            for (pn, p) in &newly {
                let elapsed = now.saturating_duration_since(p.time);
                self.ping_outcome(*pn, |c| {
                    if Some(*pn) != newest {
                        return PingOutcome::Covered;
                    }
                    PingOutcome::Acked {
                        rtt: if elapsed >= c.rtt.min() + delay {
                            elapsed - delay
                        } else {
                            elapsed
                        },
                        ack_delay,
                    }
                });
            }
        }
        let mut acked_bytes = 0;
        let srtt = self.rtt.smoothed();
        for (pn, p) in newly {
            if p.mtu_probe {
                if let Some(size) = self.pmtud.on_probe_acked(now, pn, p.size as usize) {
                    debug!(size, "path MTU raised");
                    self.cc.set_max_datagram(size);
                    self.pacer.set_max_datagram(size);
                }
            } else {
                self.pmtud.on_large_acked(p.size as usize);
            }
            self.stats.packets_acked += 1;
            self.bytes_in_flight -= p.size;
            if !p.bulk.is_empty() {
                self.bulk_in_flight -= p.size;
            }
            acked_bytes += p.size;
            self.loss_estimate *= 1.0 - LOSS_EWMA_WEIGHT;
            self.loss_outcomes += 1;
            if let Some(b) = self.bulk.as_mut() {
                b.outcomes.record(now, srtt, false);
            }
            if p.window_full {
                self.cc.on_window_full_acked();
            }
            self.cc.on_ack(p.time, p.size, p.app_limited);
            for r in p.stream {
                self.send.on_ack(r);
            }
            if let Some(b) = self.bulk.as_mut() {
                for r in p.bulk {
                    b.send.on_ack(r);
                }
            }
            self.fin_acked |= p.fin;
            self.received_acked |= p.received;
            if let Some(l) = p.ack_largest {
                // The peer has seen our acknowledgement up to `l`: it will never need those
                // packet numbers acknowledged again, so stop tracking them. A packet kept
                // unopened while the peer's key is judged stays above the floor: it is still
                // to be opened and acknowledged.
                let floor = self.crypto.early.iter().map(|e| e.0).fold(l + 1, u64::min);
                if floor > self.recv_floor {
                    self.recv_floor = floor;
                    self.recv_pns.remove(0..floor);
                }
            }
        }
        self.cc.on_delivered(now, acked_bytes, self.rtt.smoothed());
        self.detect_lost(now);
        // A client keeps its probe backoff through acknowledgements in ACCEPT packets (as
        // RFC 9002 §6.2.1 does through Initial ones): a server deciding on our key acknowledges
        // our HANDSHAKE probes but not the DATA it keeps unopened, and resetting the backoff
        // on each acknowledgement would probe at the round-trip rate for as long as it decides.
        if !(from_long && self.side == Side::Client) {
            self.pto_count = 0;
        }
        self.on_stream_acked(now);
        Ok(())
    }

    /// RFC 9002 §6.1, made tolerant of reordering (RFC 8985, RACK): a packet is declared lost
    /// only once a packet sent after it has been acknowledged and either
    ///
    /// - it was sent at least `max(smoothed RTT, latest RTT) + reo_wnd` ago (time threshold),
    ///   where the reordering window `reo_wnd` is `mult × min_rtt / 4` (at least 1/8 of the
    ///   RTT, as RFC 9002's 9/8, and at most the smoothed RTT), `mult` growing while losses
    ///   turn out spurious, or
    /// - at least `packet_threshold` ack-eliciting packets sent after it have been
    ///   acknowledged (3 at first, raised past the reordering seen).
    ///
    /// A packet declared lost is remembered for a while: if it is acknowledged after all,
    /// `on_spurious_loss` takes the loss back.
    fn detect_lost(&mut self, now: Instant) {
        self.loss_time = None;
        let Some(largest_acked) = self.largest_acked else {
            return;
        };
        let loss_delay = self.loss_delay();
        let mut lost = Vec::new();
        for (&pn, p) in self.sent.range(..largest_acked) {
            // A DATA packet is judged only against acknowledgements that could have covered
            // it: those carried in DATA packets. One in a long-header packet (the peer has no
            // keys yet, or is still judging ours and keeps our DATA unopened) acknowledges
            // long-header packets only and says nothing of our DATA.
            let (reference, reference_seq) = if p.long {
                (largest_acked, self.largest_acked_seq)
            } else {
                match self.largest_acked_data {
                    Some(l) if pn < l => (l, self.largest_acked_seq_data),
                    _ => continue,
                }
            };
            debug_assert!(pn < reference);
            let overtaken = reference_seq.map_or(0, |r| r.saturating_sub(p.seq));
            // A packet whose data all arrived in a copy repairs nothing, and its receiver
            // holds the ACK for it up to MAX_ACK_DELAY (a gap whose data is there is not
            // urgent, §6.1): wait for that too, or a copy that overtook its original on a
            // jittery path makes the original look lost.
            // (Checked only when the plain threshold has passed: the common case costs nothing.)
            let overdue = now.checked_sub(loss_delay).is_some_and(|t| p.time <= t);
            let delay = if overdue && Self::covered_by_copies(&self.send, p) {
                loss_delay + MAX_ACK_DELAY
            } else {
                loss_delay
            };
            let by_time = now.checked_sub(delay).is_some_and(|t| p.time <= t);
            if by_time || overtaken >= self.packet_threshold {
                lost.push((pn, overtaken, by_time));
            } else {
                let t = p.time + delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        let mut newest_lost: Option<Instant> = None;
        let mut large_lost = false;
        let mut declared = Vec::with_capacity(lost.len());
        for (pn, overtaken, by_time) in lost {
            let Some(p) = self.sent.remove(&pn) else {
                continue;
            };
            if p.mtu_probe {
                // Too large for the path, perhaps: no congestion signal, nothing to resend.
                trace!(pn, size = p.size, "path MTU probe lost");
                self.bytes_in_flight -= p.size;
                self.pmtud.on_probe_lost(now, pn);
                continue;
            }
            large_lost |= p.size > pmtud::BASE as u64;
            trace!(pn, "lost");
            if self.tracing() {
                let trigger = if by_time {
                    LossTrigger::TimeThreshold
                } else {
                    LossTrigger::ReorderingThreshold
                };
                let ty = self.sent_type(pn, p.long);
                let event = TraceEvent::PacketLost {
                    ty,
                    number: pn,
                    trigger,
                };
                self.record(now, event);
            }
            self.ping_outcome(pn, |_| PingOutcome::Lost);
            self.stats.packets_lost += 1;
            if p.long {
                self.stats.handshake_packets_lost += 1;
            }
            self.bytes_in_flight -= p.size;
            if !p.bulk.is_empty() {
                self.bulk_in_flight -= p.size;
            }
            newest_lost = Some(newest_lost.map_or(p.time, |t| t.max(p.time)));
            for r in &p.stream {
                self.send.on_lost(r.clone());
            }
            if let Some(b) = self.bulk.as_mut() {
                for r in &p.bulk {
                    b.send.on_lost(r.clone());
                }
                b.max_data_pending |= p.bulk_max_data;
            }
            self.max_data_pending |= p.max_data;
            self.reset_token_pending |= p.reset_token;
            self.fin_pending |= p.fin && !self.fin_acked;
            self.received_pending |= p.received && !self.received_acked;
            // A lost challenge is sent again while its path is unvalidated: otherwise one lost
            // packet fails the validation (after 3 PTOs) and sends us back to the previous
            // address, which the peer may have left for good (found by the `pair` fuzzer).
            self.path.challenge_due |= p.challenge && self.path.challenge.is_some();
            declared.push((
                pn,
                DeclaredLost {
                    declared: now,
                    long: p.long,
                    stream: p.stream,
                    bulk: p.bulk,
                    fin: p.fin,
                    received: p.received,
                    outcome: None,
                    window_round: None,
                    episode: 0,
                    overtaken,
                    seq: p.seq,
                    sent: p.time,
                },
            ));
        }
        if self.pmtud.on_loss(now, large_lost) {
            debug!("large datagrams lost while small ones arrive: path MTU back to the base");
            self.mtu_fell_back();
        }
        if let Some(t) = newest_lost {
            let before = self.cc.episode();
            let random = self.random_loss_base(now, t);
            let episode =
                self.cc
                    .on_congestion_event(now, t, declared.len() as u64, random, self.rtt.min());
            if episode != before {
                if random.is_some() {
                    self.stats.random_loss_periods += 1;
                } else {
                    self.stats.congestion_periods += 1;
                    // Halved for a queue: see whether the queue drains (`check_queue`).
                    self.queue.episode = episode;
                    self.queue.pending = Some(Halving {
                        at: now,
                        check_at: now + self.rtt.smoothed() * QUEUE_CHECK_SRTTS,
                        standing: self.standing_rtt.get(now, self.rtt.smoothed()),
                        rate_before: self.cc.max_rate(),
                        lost_after: false,
                    });
                }
            }
            if episode != before && self.reo_wnd_persist > 0 {
                // A new recovery period: after enough of them without a spurious loss, the
                // reordering window shrinks back.
                self.reo_wnd_persist -= 1;
                if self.reo_wnd_persist == 0 {
                    self.reo_wnd_mult = 1;
                }
            }
            if self.persistent_congestion(&declared) {
                debug!("persistent congestion");
                self.stats.persistent_congestion += 1;
                self.cc.on_persistent_congestion();
                self.queue = QueueBase::default();
            }
            let confirm_at = now + self.loss_confirmation_delay();
            let defer = self.stats.spurious_losses > 0;
            let srtt = self.rtt.smoothed();
            for (pn, mut d) in declared {
                d.episode = episode;
                // Into the copies' loss rate at once, whether or not the estimate waits (see
                // `OutcomeWindow`).
                d.window_round = self
                    .bulk
                    .as_mut()
                    .map(|b| b.outcomes.record(now, srtt, true));
                if defer {
                    self.unconfirmed.push_back((confirm_at, pn));
                } else {
                    d.outcome = Some(self.count_loss());
                }
                self.declared_lost.insert(pn, d);
            }
        }
        self.confirm_losses(now);
        // Forget losses too old to be contradicted by a late acknowledgement (the peer acks
        // within max_ack_delay of receipt; three probe timeouts is ample), and bound the map.
        // Losses are declared oldest packet first, so the oldest entries are the first to
        // expire: drop from the front until one is still young (work proportional to what
        // expired, not to the map).
        let keep = self.pto() * 3;
        loop {
            let over = self.declared_lost.len() > MAX_DECLARED_LOST;
            let Some(entry) = self.declared_lost.first_entry() else {
                break;
            };
            if !over && now.saturating_duration_since(entry.get().declared) <= keep {
                break;
            }
            if entry.remove().outcome.is_none() {
                // Forgotten before its confirmation (the map is full): a loss all the same.
                self.count_loss();
            }
        }
        self.declared_lost.release_if_empty();
    }

    /// Once a connection has seen reordering beyond its window (a spurious loss), a declared
    /// loss waits this long before it enters the loss estimate: one smoothed RTT, about as
    /// late as the acknowledgement of a reordered packet comes after the reordering window
    /// ran out. A loss that proves spurious in the meantime never enters it, so further
    /// reordering costs no proactive copies (their number follows the estimate).
    ///
    /// Not from the start: on a path that only loses, a loss then counted a round trip late
    /// at the start of the connection, when the estimate rests on a few packets, and the
    /// p99 of the first 20 s at 5 and 10 % loss rose from 26.7 to 40 ms (one way 20 ms; the
    /// netsim latency table, issue 13).
    fn loss_confirmation_delay(&self) -> Duration {
        self.rtt
            .smoothed()
            .clamp(Duration::from_millis(1), self.stale_rtt_cap())
    }

    /// Folds the declared losses whose confirmation delay has passed into the loss estimate
    /// (and the oldest at once if more than `MAX_DECLARED_LOST` wait, so the queue stays
    /// bounded). Work proportional to what is confirmed: the queue is in declaration order.
    fn confirm_losses(&mut self, now: Instant) {
        while let Some(&(at, pn)) = self.unconfirmed.front() {
            if at > now && self.unconfirmed.len() <= MAX_DECLARED_LOST {
                break;
            }
            self.unconfirmed.pop_front();
            self.unconfirmed.release_if_empty();
            // Gone: proved spurious (never counted), or forgotten (counted then).
            if self
                .declared_lost
                .get(&pn)
                .is_some_and(|d| d.outcome.is_none())
            {
                let outcome = self.count_loss();
                if let Some(d) = self.declared_lost.get_mut(&pn) {
                    d.outcome = Some(outcome);
                }
            }
        }
    }

    /// One loss enters the estimate; returns `loss_outcomes` after it.
    fn count_loss(&mut self) -> u64 {
        self.loss_estimate = self.loss_estimate * (1.0 - LOSS_EWMA_WEIGHT) + LOSS_EWMA_WEIGHT;
        self.loss_outcomes += 1;
        self.loss_outcomes
    }

    /// Did everything `p` carried that needs delivery reach the peer by other packets? Its
    /// stream data is acknowledged (a copy arrived), and it held no other frame that is sent
    /// again when lost.
    fn covered_by_copies(send: &SendStream, p: &SentPacket) -> bool {
        !p.stream.is_empty()
            && !p.max_data
            && p.bulk.is_empty()
            && !p.bulk_max_data
            && !p.reset_token
            && !p.fin
            && !p.received
            && !p.challenge
            && p.stream.iter().all(|r| send.is_acked(r))
    }

    /// RFC 9002 §7.6: do the packets just declared lost, with those declared before, include
    /// a run of consecutive ack-eliciting packets (none between them acknowledged), all sent
    /// after the first RTT sample, spanning at least three times the probe timeout (without
    /// backoff)? Only a run that includes a packet just declared lost counts, so one outage is
    /// reacted to once.
    fn persistent_congestion(&self, new: &[(u64, DeclaredLost)]) -> bool {
        let Some(first_sample) = self.first_rtt_sample else {
            return false;
        };
        let duration = self.rtt.pto_base(MAX_ACK_DELAY) * 3;
        let mut lost: Vec<(u64, Instant, bool)> = new
            .iter()
            .map(|(_, d)| (d.seq, d.sent, true))
            .chain(self.declared_lost.values().map(|d| (d.seq, d.sent, false)))
            .filter(|&(_, sent, _)| sent > first_sample)
            .collect();
        lost.sort_unstable_by_key(|l| l.0);
        let mut run: Option<(u64, Instant, bool)> = None; // (last seq, first sent, has new)
        for (seq, sent, is_new) in lost {
            let (first, has_new) = match run {
                Some((last, first, has_new)) if seq == last + 1 => (first, has_new || is_new),
                _ => (sent, is_new),
            };
            if has_new && sent.saturating_duration_since(first) >= duration {
                return true;
            }
            run = Some((seq, first, has_new));
        }
        false
    }

    /// The time threshold of `detect_lost`: RTT plus the reordering window.
    fn loss_delay(&self) -> Duration {
        let rtt = self.rtt.smoothed().max(self.rtt.latest());
        let reo_wnd = (self.rtt.min() / 4 * self.reo_wnd_mult).min(self.rtt.smoothed());
        // Never below RFC 9002's 9/8 × RTT (at least the timer granularity). Capped as the
        // PTO's base is: a stale estimate must not hold a loss for longer (see `pto`).
        self.rtt
            .loss_delay()
            .max(rtt + reo_wnd)
            .min(self.stale_rtt_cap())
    }

    /// The longest any recovery timer waits on the RTT estimate: a third of the idle timeout.
    fn stale_rtt_cap(&self) -> Duration {
        self.config.idle_timeout / 3
    }

    /// A packet declared lost was acknowledged after all: it was reordered or delayed. Take
    /// the loss back: out of the loss estimate that drives redundancy (as if it had been
    /// acknowledged in time), out of the congestion response (the window is restored once
    /// every loss of that recovery period proved spurious), and widen the reordering
    /// tolerance so that the same reordering is not mistaken again. Its data is acknowledged
    /// (a retransmission still queued is dropped).
    fn on_spurious_loss(&mut self, now: Instant, d: DeclaredLost) {
        trace!("spurious loss");
        self.stats.spurious_losses += 1;
        if let Some(outcome) = d.outcome {
            let since = self.loss_outcomes.saturating_sub(outcome);
            let since = i32::try_from(since).unwrap_or(i32::MAX);
            self.loss_estimate = (self.loss_estimate
                - LOSS_EWMA_WEIGHT * (1.0 - LOSS_EWMA_WEIGHT).powi(since))
            .max(0.0);
        }
        if let (Some(round), Some(b)) = (d.window_round, self.bulk.as_mut()) {
            b.outcomes.take_back(now, self.rtt.smoothed(), round);
        }
        if self.cc.on_spurious_loss(d.episode) && d.episode == self.queue.episode {
            // The halving that armed the queue check was undone: what it would measure is no
            // halving's effect.
            self.queue = QueueBase::default();
        }
        if d.overtaken >= self.packet_threshold {
            self.packet_threshold = (d.overtaken + 1).min(MAX_PACKET_THRESHOLD);
        }
        // RFC 8985 §6.2: one step per round trip with spurious losses, and at once as far
        // as this loss shows is needed: the window it was declared under, plus how late its
        // acknowledgement came.
        let quarter = (self.rtt.min() / 4).max(Duration::from_millis(1));
        let needed = quarter * self.reo_wnd_mult + now.saturating_duration_since(d.declared);
        let needed =
            u32::try_from(needed.as_nanos().div_ceil(quarter.as_nanos())).unwrap_or(u32::MAX);
        let step = self
            .reo_wnd_grown
            .is_none_or(|t| now.saturating_duration_since(t) >= self.rtt.smoothed());
        if step || needed > self.reo_wnd_mult {
            self.reo_wnd_mult = (self.reo_wnd_mult + u32::from(step))
                .max(needed)
                .min(MAX_REO_WND_MULT);
            self.reo_wnd_grown = Some(now);
        }
        self.reo_wnd_persist = REO_WND_PERSIST;
        for r in d.stream {
            self.send.on_ack(r);
        }
        if let Some(b) = self.bulk.as_mut() {
            for r in d.bulk {
                b.send.on_ack(r);
            }
        }
        self.fin_acked |= d.fin;
        self.received_acked |= d.received;
        // A resend queued by the loss is no longer needed.
        self.fin_pending &= !self.fin_acked;
        self.received_pending &= !self.received_acked;
    }

    /// Probe timeout with backoff, capped at `max_pto` (but never below the base, so that a
    /// probe does not go before an acknowledgement could come back). The base itself is
    /// capped at a third of the idle timeout: an RTT estimate beyond that is stale (the path
    /// held packets for that long once, then healed), and a PTO longer than the idle timeout
    /// would never fire. After a fuzzed 80 s hold the estimate read 71 s, the PTO 385 s, and
    /// a lost range waited behind it for minutes on a perfect path (crash 8 of `pair`).
    fn pto(&self) -> Duration {
        let base = self.rtt.pto_base(MAX_ACK_DELAY).min(self.stale_rtt_cap());
        // While the server decides on our key, our probes only show that we are still here
        // (it keeps our DATA unopened, and sends its own once it decides): no need to probe
        // more often than a deciding client sends its keepalive.
        let max = if self.server_is_deciding() {
            DECIDING_KEEPALIVE
        } else {
            self.config.max_pto
        };
        base.saturating_mul(1 << self.pto_count.min(16))
            .min(max.max(base))
    }

    /// Client: the server has acknowledged our message 3 but sent no DATA packet: it is
    /// deciding on our key (a server that has message 3 otherwise installs keys at once).
    /// Message 3 rides in every long-header packet from the one our keys start at (the first
    /// packet number of their phase, which moves only once the server has acknowledged a
    /// later packet), so the server has it once it acknowledged one of those.
    fn server_is_deciding(&self) -> bool {
        self.side == Side::Client
            && !self.crypto.confirmed
            && self
                .crypto
                .keys
                .as_ref()
                .zip(self.largest_acked)
                .is_some_and(|(k, a)| a >= k.phase_first_pn)
    }

    fn loss_detection_deadline(&self) -> Option<Instant> {
        if let Some(t) = self.loss_time {
            return Some(t);
        }
        if self.sent.is_empty() {
            return None;
        }
        self.time_of_last_ack_eliciting.map(|t| t + self.pto())
    }

    /// The largest datagram we may send now: until the peer's current address is validated,
    /// never more bytes than it sent us from there (anti-amplification, RFC 9000 §8).
    fn send_budget(&self) -> usize {
        let max = self.pmtud.current();
        if self.path.validated {
            return max;
        }
        let left = self.path.rx.saturating_sub(self.path.tx);
        usize::try_from(left).unwrap_or(max).min(max)
    }

    /// Does the anti-amplification budget hold us back?
    fn amplification_blocked(&self) -> bool {
        self.send_budget() < MIN_USEFUL_PACKET
    }

    /// When the connection is given up on: idle timeout, or the handshake timeout for a server
    /// whose client has not completed the handshake.
    fn death_deadline(&self) -> Instant {
        let idle = self.last_rx + self.config.idle_timeout;
        if self.state != State::Handshaking {
            return idle;
        }
        if let Some(asked) = self.crypto.awaiting_verdict {
            // Deciding (either side): the application has that long.
            return idle.min(asked + VERDICT_TIMEOUT);
        }
        match self.side {
            Side::Server if self.crypto.peer_deciding => {
                idle.min(self.created + HANDSHAKE_TIMEOUT + VERDICT_TIMEOUT)
            }
            Side::Server => idle.min(self.created + HANDSHAKE_TIMEOUT),
            Side::Client => idle,
        }
    }

    fn awaiting_verdict(&self) -> bool {
        self.crypto.awaiting_verdict.is_some()
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        if self.side == Side::Client && self.state == State::Handshaking && self.awaiting_verdict()
        {
            // A deciding client: the server would otherwise hear nothing from us (§5.8).
            return Some(self.last_activity + DECIDING_KEEPALIVE);
        }
        let interval = self.config.keep_alive?;
        (self.state == State::Established).then_some(self.last_activity + interval)
    }

    /// Is a loss now random (`Some`, with the base RTT for the cap on the window) or one of
    /// congestion we cause (`None`)? `lost_sent` is when the newest packet lost was sent.
    ///
    /// A queue stands when the standing RTT exceeds the base: the minimum RTT, unless the
    /// last halving did not help (`check_queue`). Jitter that keeps FIFO order (a link-layer
    /// retransmission, a shared queue of other traffic) holds every packet behind the slowest
    /// before it, so at any real rate the RTT sits near the top of the jitter, above the
    /// minimum a lone packet once saw, and looks like a queue for as long as we send at all;
    /// with 0–30 ms of it on a 20 ms path and 35 % random loss, that halved the window at
    /// every other loss and held a bulk transfer at two packets per RTT (issue 13). So each
    /// halving is checked two smoothed RTTs later, and until then no loss halves the window
    /// again (a loss is capped as random, with the standing RTT at the halving as its base).
    /// If the halving did not help, the standing RTT at the halving becomes the base for
    /// [`UNDRAINED_LIFETIME`]: only a queue standing above it halves the window again.
    fn random_loss_base(&mut self, now: Instant, lost_sent: Instant) -> Option<Duration> {
        let min = self.rtt.min();
        if let Some(h) = self.queue.pending.as_mut() {
            h.lost_after |= lost_sent > h.at;
            return Some(h.base(min));
        }
        let base = match self.queue.undrained {
            Some((rtt, at)) if now.saturating_duration_since(at) <= UNDRAINED_LIFETIME => {
                rtt.max(min)
            }
            _ => min,
        };
        (!self.queue_above(now, base)).then_some(base)
    }

    /// After an RTT sample, two smoothed RTTs after a halving for a queue: did it help? It
    /// did not if our delivery rate fell with the window (the last interval's to 3/4 of the
    /// best before the halving, or less) and packets sent after it were lost all the same:
    /// the path delivered all we sent and lost packets whatever our rate, so the losses are
    /// random and the delay is not a queue of ours. At a real bottleneck the rate holds when
    /// the window halves (it stays busy while its queue drains), or the losses stop, or both.
    /// A check found due more than two smoothed RTTs late (the connection went idle) is
    /// dropped: what it would see is no halving's effect.
    fn check_queue(&mut self, now: Instant) {
        let Some(h) = self.queue.pending.filter(|h| now >= h.check_at) else {
            return;
        };
        self.queue.pending = None;
        if now.saturating_duration_since(h.check_at) > self.rtt.smoothed() * QUEUE_CHECK_SRTTS {
            return;
        }
        let rate_fell = h
            .rate_before
            .zip(self.cc.recent_rate())
            .is_some_and(|(before, after)| {
                u128::from(after) * RATE_FELL.1 <= u128::from(before) * RATE_FELL.0
            });
        self.queue.undrained = (rate_fell && h.lost_after).then(|| (h.base(self.rtt.min()), now));
    }

    /// How far the standing RTT must exceed the base for a queue: a quarter of the minimum RTT,
    /// twice the RTT variance (the jitter of the path: with few samples per window, their
    /// minimum still carries some of it), and 2 ms.
    fn queue_threshold(&self) -> Duration {
        (self.rtt.min() / 4)
            .max(self.rtt.var() * 2)
            .max(Duration::from_millis(2))
    }

    /// Does a queue stand in the path above `base` (the minimum RTT, or what a halving did not
    /// shrink)? The standing RTT (the smallest sample of the last smoothed RTT and of the last
    /// few) exceeds `base` by at least [`Self::queue_threshold`]. Before any RTT sample, assume
    /// so (the conservative answer).
    fn queue_above(&mut self, now: Instant, base: Duration) -> bool {
        let threshold = self.queue_threshold();
        self.standing_rtt
            .get(now, self.rtt.smoothed())
            .is_none_or(|standing| standing.saturating_sub(base) >= threshold)
    }

    /// The estimated loss rate: the EWMA of packet outcomes, corrected for its start at 0
    /// (divided by the weight its terms carry, `1 - (1 - w)^n` after `n` outcomes, as Adam
    /// corrects its moments). Early in a connection it is therefore the plain share of packets
    /// lost so far rather than a fraction of it: the first losses raise the copies at once
    /// instead of after dozens of packets, and a clean start still reads 0.
    fn loss_rate(&self) -> f64 {
        Self::bias_corrected(self.loss_estimate, self.loss_outcomes)
    }

    /// The loss rate that sizes a chat message's copies: the estimate, or while bulk data
    /// flows, the loss of the last round trips if higher (see [`OutcomeWindow`]).
    fn copy_loss_rate(&self, now: Instant) -> f64 {
        let estimate = self.loss_rate();
        self.bulk
            .as_ref()
            .and_then(|b| b.outcomes.rate(now, self.rtt.smoothed()))
            .map_or(estimate, |r| r.max(estimate))
    }

    /// Probe packets for one probe timeout. Two on a clean path, as RFC 9002 has it. On a lossy
    /// one, a probe round trip fails (the probe or its ACK lost) with `q = 1 − (1 − p)²` (`p`
    /// estimates our direction; the other is taken to be alike), two probes fail together
    /// with `q²`, and each failure doubles the next timeout: at 35 % loss one timeout in three
    /// failed, a full window waited behind a chain of them for up to 1.7 s, and that was half
    /// the time of a bulk transfer through the server (issue 13). So send enough that all fail
    /// with at most [`PROBE_FAILURE_TARGET`], up to [`MAX_PROBES_PER_PTO`]. (A model: the
    /// probes go back to back and the peer acknowledges every second packet, so their fates
    /// are not quite independent; it sets the count, not a guarantee.) The extra packets are
    /// few and small next to the window the timeout holds back, and the timeout still backs
    /// off exponentially.
    fn probes_per_pto(&self) -> u32 {
        probes_for_loss(self.loss_rate())
    }

    /// An EWMA started at 0 after `outcomes` outcomes, divided by the weight they carry.
    fn bias_corrected(estimate: f64, outcomes: u64) -> f64 {
        if outcomes == 0 {
            return 0.0;
        }
        let n = i32::try_from(outcomes).unwrap_or(i32::MAX);
        let weight = 1.0 - (1.0 - LOSS_EWMA_WEIGHT).powi(n);
        (estimate / weight).clamp(0.0, 1.0)
    }

    /// Time between the `copies` transmissions of a small message: the smoothed RTT / (4 ×
    /// copies), the first copy half that after the original, so that all of them go out
    /// within the first quarter of a round trip (a message whose first transmissions were lost
    /// is late by a fraction of the RTT, not by a recovery), clamped to 1..10 ms so that
    /// copies are not sent back to back into the same loss burst. With 1/12 of the RTT for
    /// every spacing, the third and fourth transmissions made the p99 at 10 and 20 % loss:
    /// 31 and 34 ms peer to peer on a 20 ms path (issue 13).
    fn copy_spacing(&self, copies: u32) -> Duration {
        (self.rtt.smoothed() / (4 * copies.max(1)))
            .clamp(Duration::from_millis(1), Duration::from_millis(10))
    }

    /// May a packet carry message-stream data (new, retransmitted or copied)? While the
    /// window has room, as always. And while bulk data fills it, as long as the packets in
    /// flight without bulk data stay within the headroom bulk leaves to chat: bulk packets
    /// sent while the window was larger (a loss has just capped it, and the acknowledgements
    /// that drain them come a round trip later, in a burst) must not hold a chat message and
    /// its copies back. Chat thus exceeds the window by at most the headroom, only while
    /// bulk data is in flight; without bulk data nothing changes.
    fn cwnd_allows(&self) -> bool {
        let window = self.cc.window();
        self.probes > 0
            || self.bytes_in_flight < window
            || (self.bulk_in_flight > 0
                && self.bytes_in_flight - self.bulk_in_flight < self.bulk_headroom())
    }

    /// The congestion window bulk data leaves to the chat stream: [`BULK_HEADROOM_PACKETS`]
    /// datagrams, at most a quarter of the window.
    fn bulk_headroom(&self) -> u64 {
        (BULK_HEADROOM_PACKETS * pmtud::BASE as u64).min(self.cc.window() / 4)
    }

    /// May a packet carry bulk data now? Only while the window keeps the headroom free for
    /// the chat stream, and always in a probe (which ignores the window).
    fn bulk_allowed(&self) -> bool {
        self.probes > 0 || self.bytes_in_flight + self.bulk_headroom() < self.cc.window()
    }

    fn next_copy_time(&self) -> Option<Instant> {
        if !self.cwnd_allows() || !self.can_send_data() {
            return None;
        }
        let next = self.copies.iter().map(|c| c.next).min()?;
        Some(self.pacing_delay().map_or(next, |t| t.max(next)))
    }

    /// The rate the pacer spreads data at now.
    fn pacing_rate(&self) -> PacingRate {
        PacingRate::new(
            self.cc.window(),
            self.rtt.smoothed(),
            self.cc.in_slow_start() && !self.cc.in_conservative_slow_start(),
        )
    }

    /// When the pacer lets the next data packet go, if it holds it back (as of its last
    /// refill). Probes are never paced.
    fn pacing_delay(&self) -> Option<Instant> {
        if !self.config.pacing || self.probes > 0 {
            return None;
        }
        self.pacer.ready_at(self.pacing_rate())
    }

    /// May a data packet go at `now` as far as the pacer is concerned? Brings it up to `now`.
    fn pacer_allows(&mut self, now: Instant) -> bool {
        if !self.config.pacing {
            return true;
        }
        let rate = self.pacing_rate();
        self.pacer.refill(now, rate);
        self.pacing_delay().is_none_or(|t| t <= now)
    }

    /// When data waiting only for the pacer may go: new or lost data of either channel (copies have
    /// their own deadline, [`Self::next_copy_time`]), the window open, the pacer holding it.
    fn pacing_deadline(&self) -> Option<Instant> {
        if !self.cwnd_allows()
            || !self.can_send_data()
            || !(self.send.has_lost() || self.send.has_sendable_new() || self.bulk_sendable())
        {
            return None;
        }
        self.pacing_delay()
    }

    /// Has the bulk channel lost or new data that it may send now (the window aside)?
    fn bulk_sendable(&self) -> bool {
        self.bulk_allowed()
            && self
                .bulk
                .as_ref()
                .is_some_and(|b| b.send.has_lost() || b.send.has_sendable_new())
    }

    fn can_send_data(&self) -> bool {
        self.remote_cid.is_some() && self.crypto.keys.is_some() && self.is_open()
    }

    /// When `handle_timeout` next has work to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let end = match self.state {
            State::Closing { until } | State::Draining { until } => return Some(until),
            State::Drained => return None,
            State::Handshaking | State::Established => self.death_deadline(),
        };
        // While the amplification limit holds us back, deadlines that only lead to sending
        // would fire without effect, over and over: leave them out.
        let may_send = !self.amplification_blocked();
        // The probe timeout too: no probe can go out, so it would stay due (its base, the last
        // ack-eliciting packet sent, cannot move). The next datagram from the peer lifts the
        // block and re-arms it. The time-threshold deadline (`loss_time`) needs no sending.
        let loss = self
            .loss_time
            .or_else(|| self.loss_detection_deadline().filter(|_| may_send));
        [
            Some(end),
            loss,
            self.ack_pending
                .then_some(self.ack_deadline)
                .flatten()
                .filter(|_| may_send),
            self.keepalive_deadline().filter(|_| may_send),
            self.next_copy_time().filter(|_| may_send),
            self.pacing_deadline().filter(|_| may_send),
            self.close_deadline.filter(|_| self.close_after_flush),
            self.finish_grace,
            self.path.challenge.map(|(_, deadline)| deadline),
            self.probe_deadline(),
            self.compact_due,
            self.pmtud.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever timers are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.config.pacing {
            // The pacer's deadline is due: bring it up to `now`, so that `poll_timeout` moves
            // on even if no data packet can be built now (the packet type of a handshake).
            let rate = self.pacing_rate();
            self.pacer.refill(now, rate);
        }
        self.fire_timers(now);
        self.trace_checkpoint(now);
    }

    fn fire_timers(&mut self, now: Instant) {
        match self.state {
            State::Closing { until } | State::Draining { until } => {
                if now >= until {
                    self.state = State::Drained;
                }
                return;
            }
            State::Drained => return,
            State::Handshaking | State::Established => {}
        }
        if now >= self.death_deadline() {
            debug!(state = ?self.state, "idle or handshake timeout");
            self.state = State::Drained;
            self.closed.get_or_insert(CloseReason::IdleTimeout);
            return;
        }
        if self.finish_grace.is_some_and(|t| now >= t) {
            self.close_if_both_finished(now);
            if !self.is_open() {
                return;
            }
        }
        if self.close_after_flush && self.close_deadline.is_some_and(|t| now >= t) {
            debug!("graceful close timed out waiting for acknowledgements");
            self.close_after_flush = false;
            self.enter_closing(now, CloseReason::Local);
            return;
        }
        if self.ack_deadline.is_some_and(|t| now >= t) {
            self.ack_immediately = true;
        }
        if self.path.challenge.is_some_and(|(_, t)| now >= t) {
            match self.path.previous.take() {
                Some(previous) => {
                    debug!(failed = %self.remote, back_to = %previous, "path validation failed");
                    let failed = std::mem::replace(&mut self.remote, previous);
                    self.path.validated = true;
                    self.path.challenge = None;
                    self.path_changed_pending = true;
                    self.trace_path(now, PathChange::ValidationFailed, failed);
                }
                None => {
                    let data = self.challenge_data();
                    self.path.challenge = Some((data, now + self.pto() * PATH_VALIDATION_PTOS));
                    self.path.challenge_due = true;
                }
            }
        }
        if self.keepalive_deadline().is_some_and(|t| now >= t) {
            self.ping_pending = true;
            self.last_activity = now;
        }
        if self.probe_deadline().is_some_and(|t| now >= t)
            && let Some(p) = self.path.probing.as_mut().and_then(|p| p.probe.as_mut())
        {
            p.due = true;
            p.next = now + p.interval;
            p.interval = (p.interval * 2).min(PROBE_INTERVAL_MAX);
        }
        if self.compact_due.is_some_and(|t| now >= t) {
            self.compact(now);
        }
        self.pmtud.on_timeout(now);
        if self.loss_time.is_some_and(|t| now >= t) {
            self.detect_lost(now);
        }
        // Not `else`: once the time threshold has declared its packets lost, the probe timeout
        // of what is still in flight may be overdue already (its base is the last ack-eliciting
        // packet sent, and a full window may keep the retransmissions from going out). Left for
        // the next call, `poll_timeout` would report a deadline in the past right after this
        // one (found by the `pair` fuzzer).
        if self.loss_time.is_none() && self.loss_detection_deadline().is_some_and(|t| now >= t) {
            self.pto_count += 1;
            self.stats.ptos += 1;
            if self.pmtud.on_pto(now, self.pto_count) {
                debug!(pto_count = self.pto_count, "path MTU back to the base");
                self.mtu_fell_back();
            }
            self.probes = self.probes_per_pto();
            if self.side == Side::Client && self.crypto.keys.is_some() && !self.crypto.confirmed {
                // The server may lack Noise message 3: the probe repeats it.
                self.crypto.hs_due = true;
                if self.server_is_deciding() {
                    // It has it, and no keys yet: it is deciding on our key, and keeps our
                    // DATA unopened until then. Only the HANDSHAKE probe: resending our DATA
                    // would add copies to what it holds, not deliver anything sooner.
                    self.probes = 1;
                }
            }
            debug!(pto_count = self.pto_count, "probe timeout");
        }
    }

    // ----- Output -----

    /// Builds the next datagram into `buf` (replacing what it held, reusing its capacity) and
    /// returns its destination: the peer's address, or another one for a probe or the answer
    /// to one (§5.7.1). `None` if there is nothing to send (`buf` keeps its memory; its
    /// contents are then unspecified).
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = match self.poll_probe(now, buf) {
            Some(to) => Some(to),
            None => (self.poll_mtu_probe(now, buf) || self.build_transmit(now, buf))
                .then_some(self.remote),
        };
        if to.is_some() {
            self.trace_checkpoint(now);
        }
        to
    }

    /// A probing packet (§5.7.1), alone in its datagram and sent off the current path: an
    /// answer owed to a probe from another address, or our own probe. Neither is tracked for
    /// loss or congestion (the path it tests is not the one whose window and RTT we keep), so
    /// a path that never answers costs nothing but its datagrams.
    fn poll_probe(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if self.state != State::Established || !self.packet_type().is_data() {
            return None;
        }
        let answer = self
            .path
            .probing
            .as_mut()
            .and_then(|p| p.responses.pop_front());
        if let Some((data, to, len)) = answer {
            let mut b = self.sized_builder(now, buf, pmtud::BASE);
            Frame::PathResponse(data).encode(b.frames_buf());
            // As large as the probe (at most 1200 bytes), so that the path is known to carry
            // such datagrams both ways; never larger, so that a forged source address gets
            // no more than was sent.
            b.pad_to(len.min(MIN_INITIAL_SIZE));
            *buf = self.seal(now, b);
            return Some(to);
        }
        if !self.probes_go_out() {
            return None;
        }
        let p = self
            .path
            .probing
            .as_mut()
            .and_then(|p| p.probe.as_mut())
            .filter(|p| p.due)?;
        p.due = false;
        let (addr, data) = (p.addr, p.data);
        let mut b = self.sized_builder(now, buf, pmtud::BASE);
        Frame::PathChallenge(data).encode(b.frames_buf());
        b.pad_to(MIN_INITIAL_SIZE);
        *buf = self.seal(now, b);
        self.stats.probes_sent += 1;
        Some(addr)
    }

    /// A path MTU probe (PROTOCOL.md §6.9), if one is due: PING and PADDING up to the size
    /// probed, once the handshake is confirmed, the path validated, and the congestion window
    /// and the pacer have room for it. It is tracked like any packet, but its loss is no
    /// congestion signal (`detect_lost`).
    fn poll_mtu_probe(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let Some(size) = self.pmtud.probe_due() else {
            return false;
        };
        if self.state != State::Established
            || !self.crypto.confirmed
            || !self.packet_type().is_data()
            || !self.can_send_data()
            || !self.path.validated
            || self.bytes_in_flight + size as u64 > self.cc.window()
            || !self.pacer_allows(now)
        {
            return false;
        }
        let mut b = self.sized_builder(now, buf, size);
        Frame::Ping.encode(b.frames_buf());
        b.pad_to(size);
        let mut sp = SentPacket::empty(now);
        sp.ack_eliciting = true;
        sp.mtu_probe = true;
        self.pmtud.on_probe_sent(self.next_pn - 1);
        self.finish(now, b, sp, false, buf);
        true
    }

    fn build_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if self.amplification_blocked() {
            return self.poll_challenge_only(now, buf);
        }
        match self.state {
            State::Drained | State::Draining { .. } => return false,
            State::Closing { .. } => {
                if !std::mem::take(&mut self.close_pending) {
                    return false;
                }
                let (code, reason) = self.close_frame.clone().unwrap_or_default();
                let mut b = self.builder(now, buf);
                let mut sp = SentPacket::empty(now);
                // Every closing packet carries our acknowledgement state: without it, whatever the
                // peer sent just before our close would look undelivered to it, although we
                // received it, and the first CLOSE may well be lost.
                if self.recv_largest.is_some() {
                    self.write_ack(now, &mut b, &mut sp);
                }
                // And how far our side received the peer's stream, so that the peer hands back
                // as undelivered exactly the messages we never got (packet ACKs alone cannot
                // say: the packets that carried a message may have been declared lost, and
                // their copies lost, although the message arrived).
                let received = self.recv.received_end();
                if b.packet_type().is_data() && received > 0 {
                    Frame::Received { offset: received }.encode(b.frames_buf());
                }
                let reason = truncate_utf8(&reason, b.remaining().saturating_sub(20));
                Frame::Close {
                    code,
                    reason: reason.as_bytes(),
                }
                .encode(b.frames_buf());
                self.finish(now, b, sp, false, buf);
                return true;
            }
            State::Handshaking | State::Established => {}
        }
        let ty = self.packet_type();
        let send_ack = self.ack_pending
            && (self.ack_immediately || self.ack_deadline.is_some_and(|t| now >= t));
        let paced = self.pacer_allows(now);
        // While bulk data is in flight, the pacer spaces it, not the chat stream: chat data
        // overtakes the pacer as it overtakes bulk in the window (the headroom, see
        // `cwnd_allows`), so a line never waits behind paced chunks. Its packets still take
        // their tokens, which delays the bulk data behind them instead.
        let chat_overtakes = self.bulk_in_flight > 0
            && (self.send.has_lost()
                || self.send.has_sendable_new()
                || self.copies.iter().any(|c| c.next <= now));
        let data_ok =
            ty.is_data() && self.can_send_data() && self.cwnd_allows() && (paced || chat_overtakes);
        let copy_due = data_ok && self.copies.iter().any(|c| c.next <= now);
        let bulk_due = paced && self.bulk_sendable();
        let data_due =
            data_ok && (self.send.has_lost() || self.send.has_sendable_new() || bulk_due);
        // Our FIN covers the bulk channel too: it goes out once every bulk byte is
        // acknowledged, so a peer that has our whole stream has our bulk data as well.
        let fin_due = self.fin_pending && self.bulk_flushed();
        let bulk_max_data_due = self.bulk.as_ref().is_some_and(|b| b.max_data_pending);
        let path_due = ty.is_data() && (self.path.challenge_due || !self.path.responses.is_empty());
        let control_due = self.ping_pending
            || ((self.max_data_pending
                || bulk_max_data_due
                || self.reset_token_pending
                || fin_due
                || self.received_pending)
                && self.can_send_data()
                && ty.is_data())
            || (ty == PacketType::Handshake && self.crypto.hs_due);
        // The application's pings ride in DATA packets only (see `ping`).
        let ping_due = ty.is_data()
            && self.can_send_data()
            && self
                .app_pings
                .as_ref()
                .is_some_and(|p| !p.queued.is_empty());
        if !(send_ack
            || data_due
            || copy_due
            || control_due
            || path_due
            || ping_due
            || self.probes > 0)
        {
            return false;
        }

        let mut b = self.builder(now, buf);
        let mut sp = SentPacket::empty(now);
        if ty.is_long() && !self.crypto.hs_msg.is_empty() {
            // Our latest handshake message rides in every long-header packet (it is at most
            // ~100 bytes), so whichever of them arrives first moves the handshake on.
            Frame::Handshake(&self.crypto.hs_msg).encode(b.frames_buf());
            sp.ack_eliciting = true;
        }
        if ty == PacketType::Handshake {
            self.crypto.hs_due = false;
        }
        if self.ack_pending {
            self.write_ack(now, &mut b, &mut sp);
        }
        if ty.is_data() {
            self.write_path_frames(now, &mut b, &mut sp);
            if self.reset_token_pending && b.remaining() >= 17 {
                self.reset_token_pending = false;
                Frame::ResetToken(self.own_reset_token).encode(b.frames_buf());
                sp.reset_token = true;
                sp.ack_eliciting = true;
            }
        }
        if self.max_data_pending && self.can_send_data() && ty.is_data() {
            self.max_data_pending = false;
            let limit = self.recv.advance_max_data();
            Frame::MaxData { limit }.encode(b.frames_buf());
            sp.max_data = true;
            sp.ack_eliciting = true;
        }
        if bulk_max_data_due
            && self.can_send_data()
            && ty.is_data()
            && let Some(bulk) = self.bulk.as_mut()
        {
            bulk.max_data_pending = false;
            let limit = bulk.recv.advance_max_data();
            Frame::BulkMaxData { limit }.encode(b.frames_buf());
            sp.bulk_max_data = true;
            sp.ack_eliciting = true;
        }
        if ty.is_data() && self.can_send_data() {
            if let Some(final_offset) = self.send.fin().filter(|_| fin_due) {
                self.fin_pending = false;
                Frame::Fin { final_offset }.encode(b.frames_buf());
                sp.fin = true;
                sp.ack_eliciting = true;
            }
            if std::mem::take(&mut self.received_pending) {
                let offset = self.recv.received_end();
                Frame::Received { offset }.encode(b.frames_buf());
                sp.received = true;
                sp.ack_eliciting = true;
            }
        }
        let mut new_range: Option<Range<u64>> = None;
        // Retransmitted runs get copies too: a message that was lost once is already late, and
        // a lone retransmission lost again costs a second recovery (at 20 % loss, one in five).
        let mut resent: Vec<Range<u64>> = Vec::new();
        if data_ok {
            while let Some(r) = self.take_stream(&b, |s, n| s.next_lost(n)) {
                self.stats.retransmissions += 1;
                self.write_stream(&mut b, &mut sp, r.clone());
                resent.push(r);
            }
            while let Some(r) = self.take_stream(&b, |s, n| s.next_new(n)) {
                new_range = Some(new_range.map_or(r.clone(), |n| n.start..r.end));
                self.write_stream(&mut b, &mut sp, r);
            }
            self.write_copies(now, &mut b, &mut sp);
            // Bulk data last: it fills what room the chat stream left in this packet, and
            // only packets the chat stream leaves in the window and the pacer lets go.
            if paced && self.bulk_allowed() {
                while let Some(r) = self.take_bulk(&b, |s, n| s.next_lost(n)) {
                    self.stats.retransmissions += 1;
                    self.write_bulk_range(&mut b, &mut sp, r);
                }
                while let Some(r) = self.take_bulk(&b, |s, n| s.next_new(n)) {
                    self.write_bulk_range(&mut b, &mut sp, r);
                }
            }
        }
        if self.probes > 0 && !sp.ack_eliciting && data_ok {
            // A probe carries data if it can: it then repairs a loss as well as detecting one.
            // Size the frame for the largest offset it could start at, not for offset 0: the
            // offset's varint is part of the frame. Chat data first, as always.
            let room = max_stream_payload(&b, self.send.end());
            if let Some(r) = self.send.oldest_unacked(room) {
                self.stats.retransmissions += 1;
                self.write_stream(&mut b, &mut sp, r);
            } else if let Some(r) = self.bulk.as_ref().and_then(|bulk| {
                let room = max_stream_payload(&b, bulk.send.end());
                bulk.send.oldest_unacked(room)
            }) {
                self.stats.retransmissions += 1;
                self.write_bulk_range(&mut b, &mut sp, r);
            }
        }
        if ping_due && (sp.ack_eliciting || b.remaining() > 0) {
            let pn = self.next_pn - 1;
            if let Some(id) = self.app_pings.as_mut().and_then(|p| {
                let id = p.queued.pop_front()?;
                p.in_flight.push_back((pn, id));
                Some(id)
            }) {
                trace!(pn, id, "ping");
                if !sp.ack_eliciting {
                    Frame::Ping.encode(b.frames_buf());
                    sp.ack_eliciting = true;
                }
            }
        }
        if (std::mem::take(&mut self.ping_pending) || self.probes > 0) && !sp.ack_eliciting {
            Frame::Ping.encode(b.frames_buf());
            sp.ack_eliciting = true;
        }
        self.probes = self.probes.saturating_sub(1);
        for r in resent.into_iter().chain(new_range) {
            self.schedule_copies(now, r);
        }
        let pad = ty == PacketType::Initial;
        if pad {
            b.pad_to(MIN_INITIAL_SIZE);
        }
        sp.app_limited = !self.send.has_sendable_new()
            && self
                .bulk
                .as_ref()
                .is_none_or(|b| !b.send.has_sendable_new());
        if !b.has_frames() {
            // Everything that looked due turned out to be moot (e.g. an ACK with nothing left
            // to acknowledge). The packet number is simply skipped; gaps are legal.
            *buf = b.into_buffer();
            return false;
        }
        self.finish(now, b, sp, pad, buf);
        true
    }

    /// Under the anti-amplification limit nothing goes out but answers to the peer's challenges
    /// and a due PATH_CHALLENGE, alone in the smallest packet: whatever
    /// budget is left, down to ~40 bytes, is spent on the one frame that lifts the limit.
    /// Without this, a lost PATH_RESPONSE left an idle peer's address unvalidated for good: its
    /// keepalives never add up to a full packet's budget (crash 5 of the `pair` fuzzer).
    fn poll_challenge_only(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let ty = self.packet_type();
        let due = ((self.path.challenge_due && self.path.challenge.is_some())
            || !self.path.responses.is_empty())
            && ty.is_data()
            && matches!(self.state, State::Established | State::Handshaking);
        let size = data_packet_len(self.next_pn, 9);
        if !due || self.send_budget() < size {
            return false;
        }
        let mut b = self.builder(now, buf);
        let mut sp = SentPacket::empty(now);
        self.write_path_frames(now, &mut b, &mut sp);
        debug_assert!(
            b.has_frames(),
            "one path frame fits the packet sized for it"
        );
        self.finish(now, b, sp, false, buf);
        true
    }

    /// Answers to the peer's challenges, then the PATH_CHALLENGE for a new peer address.
    /// Answers first: when both sides changed address and each may send the other only a
    /// challenge's worth, an answer validates the receiver, which may then send freely, while
    /// two challenges crossing would answer nothing (crash 7 of the `pair` fuzzer: 10,000
    /// challenge-only packets each way, at one instant).
    ///
    /// While the address is unvalidated, every packet we send there carries the challenge, not
    /// only the first: those packets are few (the anti-amplification limit), and an answer to
    /// any of them validates, whichever earlier challenge or answer was lost.
    fn write_path_frames(&mut self, now: Instant, b: &mut PacketBuilder, sp: &mut SentPacket) {
        while b.remaining() >= 9 {
            let Some(data) = self.path.responses.pop_front() else {
                break;
            };
            Frame::PathResponse(data).encode(b.frames_buf());
            sp.ack_eliciting = true;
        }
        let unvalidated = !self.path.validated && self.path.challenge.is_some();
        if (self.path.challenge_due || unvalidated) && b.remaining() >= 9 {
            if let Some((data, _)) = self.path.challenge {
                Frame::PathChallenge(data).encode(b.frames_buf());
                sp.ack_eliciting = true;
                sp.challenge = true;
                self.path.challenge_sent = Some(now);
            }
            self.path.challenge_due = false;
        }
    }

    /// The packet type is decided by what each side knows, not by connection state, so that
    /// even a CLOSE sent mid-handshake reaches the peer's connection.
    fn packet_type(&self) -> PacketType {
        let phase = self.crypto.keys.as_ref().is_some_and(|k| k.send_phase);
        match self.side {
            Side::Client if self.remote_cid.is_none() => PacketType::Initial,
            Side::Client if self.crypto.keys.is_none() || self.crypto.hs_due => {
                PacketType::Handshake
            }
            Side::Server if self.crypto.keys.is_none() => PacketType::Accept,
            _ => PacketType::Data { key_phase: phase },
        }
    }

    /// Moves our sending keys on (Noise `REKEY`) after `key_update_packets` packets or
    /// `key_update_interval`, whichever comes first. Only once the peer has acknowledged a
    /// packet under the current key: it then surely holds that key, so it can tell our next
    /// phase from our previous one.
    fn maybe_update_keys(&mut self, now: Instant) {
        let (packets, interval) = (
            self.config.key_update_packets,
            self.config.key_update_interval,
        );
        let next_pn = self.next_pn;
        let acked = self.largest_acked;
        let Some(keys) = self.crypto.keys.as_mut() else {
            return;
        };
        let due = next_pn - keys.phase_first_pn >= packets
            || now.saturating_duration_since(keys.phase_started) >= interval;
        if due && acked.is_some_and(|a| a >= keys.phase_first_pn) {
            keys.send = keys.send.next();
            keys.send_phase = !keys.send_phase;
            keys.phase_first_pn = next_pn;
            keys.phase_started = now;
            let key_phase = keys.send_phase;
            self.stats.key_updates += 1;
            debug!("updated sending keys");
            if self.tracing() {
                let generation = self.stats.key_updates;
                self.record(
                    now,
                    TraceEvent::KeyUpdated {
                        local: true,
                        key_phase,
                        generation,
                    },
                );
            }
        }
    }

    /// Starts a packet in `buf`'s memory (taken; [`Self::finish`] or
    /// [`PacketBuilder::into_buffer`] gives it back).
    fn builder(&mut self, now: Instant, buf: &mut Vec<u8>) -> PacketBuilder {
        let max = self.send_budget();
        self.sized_builder(now, buf, max)
    }

    /// [`Self::builder`] for a packet of at most `max` bytes.
    fn sized_builder(&mut self, now: Instant, buf: &mut Vec<u8>, max: usize) -> PacketBuilder {
        if self.packet_type().is_data() {
            self.maybe_update_keys(now);
        }
        let ty = self.packet_type();
        let header = Header {
            ty,
            dst_cid: self.remote_cid.unwrap_or(self.initial_dcid),
            src_cid: ty.is_long().then_some(self.local_cid),
            number: self.next_pn,
        };
        self.next_pn += 1;
        let token: &[u8] = if ty == PacketType::Initial {
            &self.crypto.token
        } else {
            &[]
        };
        PacketBuilder::new_in(std::mem::take(buf), &header, token, max)
    }

    /// Seals `b` into `buf` and records the packet as sent.
    fn finish(
        &mut self,
        now: Instant,
        b: PacketBuilder,
        mut sp: SentPacket,
        padded: bool,
        buf: &mut Vec<u8>,
    ) {
        let long = b.packet_type().is_long();
        let bytes = self.seal(now, b);
        sp.size = bytes.len() as u64;
        sp.long = long;
        if !self.path.validated {
            self.path.tx += bytes.len() as u64;
        }
        // Only ack-eliciting packets are tracked (and count as in flight): nothing acknowledges
        // the others, so they could never leave the map. An ACK riding on one still gets its
        // ack-of-ack. A padded INITIAL always carries a handshake message.
        if sp.ack_eliciting || padded {
            self.bytes_in_flight += sp.size;
            if !sp.bulk.is_empty() {
                self.bulk_in_flight += sp.size;
            }
            // The window is full when it leaves no room for bulk data (the headroom it keeps
            // for chat aside): the next packet waits for acknowledgements, not for the
            // application or the peer's flow control.
            sp.window_full =
                !sp.app_limited && self.bytes_in_flight + self.bulk_headroom() >= self.cc.window();
            self.pacer.on_sent(sp.size);
            self.time_of_last_ack_eliciting = Some(now);
            self.last_activity = now;
            sp.seq = self.next_seq;
            self.next_seq += 1;
            self.sent.insert(self.next_pn - 1, sp);
        }
        *buf = bytes;
    }

    /// Seals `b` (the packet numbered `next_pn - 1`) and counts it as sent.
    fn seal(&mut self, now: Instant, b: PacketBuilder) -> Vec<u8> {
        let pn = self.next_pn - 1;
        let ty = b.packet_type();
        let key = match (ty, self.crypto.keys.as_ref()) {
            (PacketType::Data { .. }, Some(keys)) => &keys.send,
            (PacketType::Accept, _) => &self.crypto.initial.server,
            _ => &self.crypto.initial.client,
        };
        let frames = self.tracing().then(|| TraceFrame::list(b.frames()));
        let bytes = b.finish(key);
        if let Some(frames) = frames {
            if ty.is_long()
                && let Some(t) = self.trace.as_deref_mut()
            {
                t.long_sent.push((pn, ty.into()));
            }
            let packet = TracePacket {
                ty: ty.into(),
                number: pn,
                len: bytes.len() as u64,
                frames,
            };
            self.record(now, TraceEvent::PacketSent(packet));
        }
        // Every frame writer checks its room first; a violation here is a bug in one of them.
        debug_assert!(
            bytes.len() <= self.config.max_datagram_size,
            "packet of {} bytes exceeds the datagram limit",
            bytes.len()
        );
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        trace!(pn, len = bytes.len(), "send");
        bytes
    }

    fn write_ack(&mut self, now: Instant, b: &mut PacketBuilder, sp: &mut SentPacket) {
        let Some((largest, received_at)) = self.recv_largest else {
            return;
        };
        let mut ranges: Vec<(u64, u64)> = self
            .recv_pns
            .iter()
            .rev()
            .take(MAX_ACK_RANGES_SENT)
            .map(|r| (r.start, r.end - 1))
            .collect();
        if ranges.first().is_none_or(|r| r.1 != largest) {
            // The largest was already acknowledged and forgotten (ack-of-ack); nothing to say.
            ranges.clear();
        }
        let delay_us = now.saturating_duration_since(received_at).as_micros() as u64;
        let mut ack = AckFrame { delay_us, ranges };
        // Drop the oldest ranges until the frame fits; it always fits with one range.
        while ack.ranges.len() > 1 && Frame::Ack(ack.clone()).encoded_len() > b.remaining() {
            ack.ranges.pop();
        }
        if !ack.ranges.is_empty() && Frame::Ack(ack.clone()).encoded_len() <= b.remaining() {
            Frame::Ack(ack).encode(b.frames_buf());
            sp.ack_largest = Some(largest);
        }
        self.ack_pending = false;
        self.ack_immediately = false;
        self.ack_deadline = None;
        self.eliciting_since_ack = 0;
    }

    fn take_stream(
        &mut self,
        b: &PacketBuilder,
        take: impl FnOnce(&mut SendStream, usize) -> Option<Range<u64>>,
    ) -> Option<Range<u64>> {
        let room = max_stream_payload(b, self.send.end());
        if room == 0 {
            return None;
        }
        take(&mut self.send, room)
    }

    fn write_stream(&mut self, b: &mut PacketBuilder, sp: &mut SentPacket, r: Range<u64>) {
        let out = b.frames_buf();
        out.push(crate::wire::FrameType::Message as u8);
        crate::coding::put_varint(out, r.start);
        crate::coding::put_varint(out, r.end - r.start);
        self.send.copy_range(r.clone(), out);
        sp.stream.push(r);
        self.compact_due = Some(sp.time + COMPACT_AFTER);
        sp.ack_eliciting = true;
    }

    /// Like [`Self::take_stream`], for the bulk channel.
    fn take_bulk(
        &mut self,
        b: &PacketBuilder,
        take: impl FnOnce(&mut SendStream, usize) -> Option<Range<u64>>,
    ) -> Option<Range<u64>> {
        let bulk = self.bulk.as_mut()?;
        let room = max_stream_payload(b, bulk.send.end());
        if room == 0 {
            return None;
        }
        take(&mut bulk.send, room)
    }

    /// Writes bulk-channel bytes `r` as a BULK frame.
    fn write_bulk_range(&mut self, b: &mut PacketBuilder, sp: &mut SentPacket, r: Range<u64>) {
        let Some(bulk) = self.bulk.as_ref() else {
            return;
        };
        let out = b.frames_buf();
        out.push(crate::wire::FrameType::Bulk as u8);
        crate::coding::put_varint(out, r.start);
        crate::coding::put_varint(out, r.end - r.start);
        bulk.send.copy_range(r.clone(), out);
        sp.bulk.push(r);
        self.compact_due = Some(sp.time + COMPACT_AFTER);
        sp.ack_eliciting = true;
    }

    /// Queues proactive copies of a small, just-sent run of new data.
    fn schedule_copies(&mut self, now: Instant, r: Range<u64>) {
        let rate = self.copy_loss_rate(now);
        let red = &self.config.redundancy;
        // A copy must always fit in an otherwise empty packet (header, frame overhead, a small
        // ACK), or a due copy could never be sent and its timer would fire for ever.
        // (The base size: the current one may fall back to it before the copy is due.)
        let fits = pmtud::BASE.saturating_sub(COPY_MARGIN);
        let small =
            (r.end - r.start) as usize <= red.max_bytes.min(fits) && !self.send.has_sendable_new();
        let estimated = red.copies_for(rate);
        let copies = if red.enabled && self.loss_outcomes < red.startup_outcomes {
            estimated.max(red.startup_copies)
        } else {
            estimated
        };
        if small && copies > 1 {
            let spacing = self.copy_spacing(copies);
            self.copies.push_back(PendingCopy {
                range: r,
                remaining: copies - 1,
                next: now + spacing / 2,
                startup: estimated <= 1,
                spacing,
            });
        }
    }

    /// Adds due copies (and, since this packet goes out anyway, those nearly due) if they fit.
    fn write_copies(&mut self, now: Instant, b: &mut PacketBuilder, sp: &mut SentPacket) {
        let mut i = 0;
        while i < self.copies.len() {
            let c = &self.copies[i];
            let spacing = c.spacing;
            let ready = c.next <= now + spacing / 2;
            let parts = self.send.unacked_parts(c.range.clone());
            // Every part is its own frame with its own header: count them all.
            let needed: usize = parts
                .iter()
                .map(|p| {
                    let len = (p.end - p.start) as usize;
                    Frame::message_overhead(p.start, len) + len
                })
                .sum();
            if !ready {
                i += 1;
                continue;
            }
            if needed > b.remaining() {
                // Not in this packet. If the packet is still empty it fits in none right now
                // (the anti-amplification budget of an unvalidated path is smaller than the
                // copy): try again a spacing later, or its deadline would stay due and a
                // driver sleeping until `poll_timeout` would spin (found by the `pair` fuzzer).
                if !b.has_frames() && c.next <= now {
                    self.copies[i].next = now + spacing;
                }
                i += 1;
                continue;
            }
            if self.tracing() {
                let (number, startup) = (self.next_pn - 1, self.copies[i].startup);
                for p in &parts {
                    let (offset, len) = (p.start, p.end - p.start);
                    let event = TraceEvent::RedundantCopy {
                        number,
                        offset,
                        len,
                        startup,
                    };
                    self.record(now, event);
                }
            }
            for part in parts {
                self.write_stream(b, sp, part);
            }
            self.stats.redundant_copies += 1;
            self.stats.startup_copies += u64::from(self.copies[i].startup);
            let c = &mut self.copies[i];
            c.remaining -= 1;
            c.next = now + spacing;
            if c.remaining == 0 {
                self.copies.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
impl Connection {
    /// A DATA packet to the peer carrying exactly `frames` (already encoded), sealed under
    /// our current key with the next packet number: what a peer that breaks the protocol
    /// would send. Not tracked as sent (nothing of it is retransmitted).
    pub(crate) fn forge_data_packet(&mut self, now: Instant, frames: &[u8]) -> Vec<u8> {
        assert!(self.packet_type().is_data(), "the handshake is over");
        let mut buf = Vec::new();
        let mut b = self.builder(now, &mut buf);
        b.frames_buf().extend_from_slice(frames);
        self.finish(now, b, SentPacket::empty(now), false, &mut buf);
        buf
    }
}

/// Largest stream payload that fits in `b` for data near `offset`.
fn max_stream_payload(b: &PacketBuilder, offset: u64) -> usize {
    let room = b.remaining();
    let overhead = 1 + varint_len(offset) + varint_len(room as u64);
    room.saturating_sub(overhead)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl SentPacket {
    fn empty(time: Instant) -> Self {
        Self {
            time,
            size: 0,
            ack_eliciting: false,
            app_limited: false,
            window_full: false,
            stream: Vec::new(),
            max_data: false,
            bulk: Vec::new(),
            bulk_max_data: false,
            ack_largest: None,
            long: false,
            reset_token: false,
            fin: false,
            received: false,
            challenge: false,
            mtu_probe: false,
            seq: 0,
        }
    }
}

/// Why a ping could not be queued ([`crate::Endpoint::ping`]).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum PingError {
    /// The connection is closing or closed.
    #[error("connection closed")]
    Closed,
    /// No connection with that handle.
    #[error("unknown connection")]
    UnknownConnection,
    /// 64 pings wait to be sent already: let the endpoint transmit first.
    #[error("too many pings queued")]
    TooMany,
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// See [`WriteError`].
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The connection is closing or closed.
    #[error("connection closed")]
    Closed,
    /// No connection with that handle.
    #[error("unknown connection")]
    UnknownConnection,
}

/// The close code and reason for data a receiving stream refused; `other` names any refusal
/// besides the two limits.
fn receive_violation(e: crate::stream::RecvError, other: &'static str) -> (u64, &'static str) {
    match e {
        crate::stream::RecvError::FlowControl => (close_code::FLOW_CONTROL, "flow control"),
        crate::stream::RecvError::MessageTooLarge => {
            (close_code::MESSAGE_TOO_LARGE, "message too large")
        }
        _ => (close_code::PROTOCOL_VIOLATION, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss rate the copies of chat messages use while bulk data flows counts whole round
    /// trips, whatever the order of the batches; too few outcomes, or old ones, say nothing.
    #[test]
    fn outcome_window_counts_whole_round_trips() {
        let srtt = Duration::from_millis(40);
        let t0 = Instant::now();
        let mut w = OutcomeWindow::default();
        assert_eq!(w.rate(t0, srtt), None);
        // A window's worth acknowledged at once, its losses counted half a round trip later.
        for _ in 0..90 {
            w.record(t0, srtt, false);
        }
        let later = t0 + srtt / 2;
        for _ in 0..10 {
            w.record(later, srtt, true);
        }
        assert_eq!(w.rate(later, srtt), Some(0.1));
        // The next round trip's acknowledgements alone do not hide the previous losses.
        let next = t0 + srtt;
        for _ in 0..50 {
            w.record(next, srtt, false);
        }
        assert_eq!(w.rate(next, srtt), Some(10.0 / 150.0));
        // Two round trips later, the first is forgotten; after two quiet ones, all of it.
        let third = next + srtt;
        for _ in 0..40 {
            w.record(third, srtt, false);
        }
        assert_eq!(w.rate(third, srtt), Some(0.0));
        assert_eq!(w.rate(third + srtt * 2, srtt), None);
        let mut few = OutcomeWindow::default();
        for _ in 0..OutcomeWindow::MIN_OUTCOMES - 1 {
            few.record(t0, srtt, true);
        }
        assert_eq!(few.rate(t0, srtt), None, "too few outcomes");
    }

    /// A loss that proves spurious counts as acknowledged in the round trip it entered, while
    /// that round trip is still counted; once it is not, nothing changes.
    #[test]
    fn outcome_window_takes_spurious_losses_back() {
        let srtt = Duration::from_millis(40);
        let t0 = Instant::now();
        let mut w = OutcomeWindow::default();
        for _ in 0..30 {
            w.record(t0, srtt, false);
        }
        let first = w.record(t0, srtt, true);
        let second = w.record(t0, srtt, true);
        assert_eq!(first, second);
        assert_eq!(w.rate(t0, srtt), Some(2.0 / 32.0));
        // Taken back in the same round trip.
        w.take_back(t0 + srtt / 2, srtt, first);
        assert_eq!(w.rate(t0 + srtt / 2, srtt), Some(1.0 / 32.0));
        // And in the next one, from the previous round trip's count.
        let next = t0 + srtt;
        let third = w.record(next, srtt, true);
        assert_eq!(third, first + 1);
        w.take_back(next, srtt, second);
        assert_eq!(w.rate(next, srtt), Some(1.0 / 33.0));
        // A round trip no longer counted takes nothing back, and a round trip's count never
        // goes below zero.
        let later = next + srtt;
        for _ in 0..40 {
            w.record(later, srtt, false);
        }
        w.take_back(later, srtt, first);
        assert_eq!(w.rate(later, srtt), Some(1.0 / 41.0));
        w.take_back(later, srtt, third);
        w.take_back(later, srtt, third);
        assert_eq!(w.rate(later, srtt), Some(0.0));
        // A quiet spell of two round trips forgets everything, and the numbering goes on.
        let quiet = later + srtt * 2;
        let fourth = w.record(quiet, srtt, true);
        assert_eq!(fourth, third + 3);
        w.take_back(quiet, srtt, third);
        assert_eq!(w.counts, [(0, 1), (0, 0)]);
    }

    /// The value column of the row of PROTOCOL.md §8 whose name starts `name`.
    fn constants_row(name: &str) -> String {
        const DOC: &str = include_str!("../../../docs/PROTOCOL.md");
        let row = DOC
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("PROTOCOL.md §8 has no row {name:?}"));
        row.split('|')
            .map(str::trim)
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn probe_and_queue_constants_are_as_documented() {
        assert_eq!(
            constants_row("probes per PTO"),
            format!("{PROBES_PER_PTO}, {MAX_PROBES_PER_PTO}, {PROBE_FAILURE_TARGET}")
        );
        assert_eq!(
            constants_row("base RTT of the queue test"),
            format!(
                "{QUEUE_CHECK_SRTTS} × smoothed RTT / {} s / ≤ {}/{} of the best before",
                UNDRAINED_LIFETIME.as_secs(),
                RATE_FELL.0,
                RATE_FELL.1
            )
        );
        assert_eq!(
            constants_row("path probes"),
            format!(
                "{MIN_INITIAL_SIZE} bytes, {} s doubling, {} s, {MAX_PROBE_RESPONSES}",
                PROBE_INTERVAL_MIN.as_secs(),
                PROBE_INTERVAL_MAX.as_secs()
            )
        );
        let queue = constants_row("a queue stands");
        let standing = format!(
            "smallest of the last smoothed RTT and the last {} samples",
            crate::rtt::MIN_STANDING_SAMPLES
        );
        assert!(queue.contains(&standing), "{queue}");
    }

    #[test]
    fn bulk_constants_are_as_documented() {
        let t = TransportConfig::default();
        assert_eq!(
            constants_row("bulk-channel receive window"),
            format!(
                "{} bytes; never below {INITIAL_MAX_DATA} / {} bytes",
                t.bulk_receive_window, t.bulk_send_buffer
            )
        );
        assert_eq!(
            constants_row("congestion window left to the message stream"),
            format!("{BULK_HEADROOM_PACKETS} datagrams, at most a quarter of the window")
        );
    }

    /// The probe counts PROTOCOL.md §6.5 gives: 2 up to p ≈ 11.9 %, 3 up to 20.5 %, 4 up to
    /// 27.4 %, 5 above.
    #[test]
    fn probes_per_timeout_follow_the_loss_estimate() {
        let cases = [
            (0.0, 2),
            (0.05, 2),
            (0.118, 2),
            (0.12, 3),
            (0.2, 3),
            (0.206, 4),
            (0.27, 4),
            (0.275, 5),
            (0.35, 5),
            (0.9, 5),
            (1.0, 5),
            (-0.5, 2),
            (f64::NAN, 2),
        ];
        for (p, k) in cases {
            assert_eq!(probes_for_loss(p), k, "loss estimate {p}");
        }
    }
}
