//! Trace events: what a connection did, packet by packet, for a qlog writer (`chirp-qlog`).
//!
//! Off by default ([`EndpointConfig::trace`](crate::EndpointConfig::trace)). When it is off,
//! each place that could record something costs one branch on an `Option` that is `None`:
//! nothing is allocated, formatted or copied. When it is on, a connection appends compact
//! [`TraceEvent`] values as it works, and the endpoint hands them out, tagged with the
//! connection's handle and the `now` of the call that caused them, through
//! [`Endpoint::poll_trace`](crate::Endpoint::poll_trace). The core still has no clock and
//! does no I/O: the driver drains the records and writes them where it wants.
//!
//! What a trace holds: packet numbers, types and sizes, frame types with their offsets and
//! lengths, congestion and RTT figures, state changes, key phases (never keys), peer
//! addresses. Never message bytes, close reasons, tokens or challenge data.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::endpoint::ConnectionHandle;
use crate::wire::{Frame, FrameType, Frames, PacketType};

/// Records one endpoint keeps for its driver at most. A driver that enables tracing and stops
/// draining loses the newest beyond this (counted in
/// [`EndpointStats::trace_dropped`](crate::EndpointStats::trace_dropped)) rather than growing
/// without bound.
pub const MAX_TRACE_QUEUE: usize = 1 << 16;

/// One trace event, with the connection it belongs to and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    /// The connection.
    pub conn: ConnectionHandle,
    /// The `now` of the call into the endpoint that caused the event.
    pub at: Instant,
    /// What happened.
    pub event: TraceEvent,
}

/// Which end of the connection this endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceRole {
    /// It opened the connection.
    Client,
    /// It accepted it.
    Server,
}

/// A packet's type, as a trace shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePacketType {
    /// Client's first packets (Noise message 1).
    Initial,
    /// Server's handshake packets (Noise message 2).
    Accept,
    /// Client's handshake packets (Noise message 3).
    Handshake,
    /// Everything after the handshake, under the packet keys of the given phase.
    Data {
        /// The key-phase bit.
        key_phase: bool,
    },
    /// A server's stateless RETRY (address validation), as its client receives it.
    Retry,
    /// A server's stateless REFUSE, as its client receives it.
    Refuse,
    /// A stateless RESET (never part of a connection's trace).
    Other,
}

impl From<PacketType> for TracePacketType {
    fn from(ty: PacketType) -> Self {
        match ty {
            PacketType::Initial => Self::Initial,
            PacketType::Accept => Self::Accept,
            PacketType::Handshake => Self::Handshake,
            PacketType::Data { key_phase } => Self::Data { key_phase },
            PacketType::Retry => Self::Retry,
            PacketType::Refuse => Self::Refuse,
            PacketType::Reset => Self::Other,
        }
    }
}

/// One frame of a packet: its type and the numbers that describe it, never its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceFrame {
    /// PADDING of `len` bytes.
    Padding {
        /// Bytes.
        len: u64,
    },
    /// PING.
    Ping,
    /// ACK.
    Ack {
        /// The ACK delay, in microseconds.
        delay_us: u64,
        /// Inclusive ranges `(smallest, largest)`, the highest first.
        ranges: Vec<(u64, u64)>,
    },
    /// MESSAGE: stream bytes `[offset, offset + len)`.
    Message {
        /// Stream offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// MAX_DATA.
    MaxData {
        /// The new limit.
        limit: u64,
    },
    /// CLOSE (the reason text is left out: it may come from a user).
    Close {
        /// The code.
        code: u64,
    },
    /// A Noise handshake message of `len` bytes.
    Handshake {
        /// Bytes.
        len: u64,
    },
    /// PATH_CHALLENGE (its data is left out).
    PathChallenge,
    /// PATH_RESPONSE (its data is left out).
    PathResponse,
    /// RESET_TOKEN (the token is left out).
    ResetToken,
    /// FIN: the sender's stream ends at `final_offset`.
    Fin {
        /// Final offset.
        final_offset: u64,
    },
    /// RECEIVED: the sender holds the receiver's stream below `offset`.
    Received {
        /// Offset.
        offset: u64,
    },
    /// BULK: bulk-channel bytes `[offset, offset + len)`.
    Bulk {
        /// Bulk-channel offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// BULK_MAX_DATA.
    BulkMaxData {
        /// The new limit.
        limit: u64,
    },
}

impl TraceFrame {
    /// The frame's type on the wire.
    pub fn wire_type(&self) -> FrameType {
        match self {
            Self::Padding { .. } => FrameType::Padding,
            Self::Ping => FrameType::Ping,
            Self::Ack { .. } => FrameType::Ack,
            Self::Message { .. } => FrameType::Message,
            Self::MaxData { .. } => FrameType::MaxData,
            Self::Close { .. } => FrameType::Close,
            Self::Handshake { .. } => FrameType::Handshake,
            Self::PathChallenge => FrameType::PathChallenge,
            Self::PathResponse => FrameType::PathResponse,
            Self::ResetToken => FrameType::ResetToken,
            Self::Fin { .. } => FrameType::Fin,
            Self::Received { .. } => FrameType::Received,
            Self::Bulk { .. } => FrameType::Bulk,
            Self::BulkMaxData { .. } => FrameType::BulkMaxData,
        }
    }

    fn of(frame: &Frame<'_>) -> Self {
        match *frame {
            Frame::Padding { len } => Self::Padding { len: len as u64 },
            Frame::Ping => Self::Ping,
            Frame::Ack(ref ack) => Self::Ack {
                delay_us: ack.delay_us,
                ranges: ack.ranges.clone(),
            },
            Frame::Message { offset, data } => Self::Message {
                offset,
                len: data.len() as u64,
            },
            Frame::MaxData { limit } => Self::MaxData { limit },
            Frame::Close { code, .. } => Self::Close { code },
            Frame::Handshake(msg) => Self::Handshake {
                len: msg.len() as u64,
            },
            Frame::PathChallenge(_) => Self::PathChallenge,
            Frame::PathResponse(_) => Self::PathResponse,
            Frame::ResetToken(_) => Self::ResetToken,
            Frame::Fin { final_offset } => Self::Fin { final_offset },
            Frame::Received { offset } => Self::Received { offset },
            Frame::Bulk { offset, data } => Self::Bulk {
                offset,
                len: data.len() as u64,
            },
            Frame::BulkMaxData { limit } => Self::BulkMaxData { limit },
        }
    }

    /// The frames of a decrypted payload (one that already decoded; a malformed tail ends
    /// the list).
    pub(crate) fn list(payload: &[u8]) -> Vec<Self> {
        Frames::new(payload)
            .map_while(Result::ok)
            .map(|f| Self::of(&f))
            .collect()
    }
}

/// A packet sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePacket {
    /// Its type.
    pub ty: TracePacketType,
    /// Its packet number.
    pub number: u64,
    /// The datagram's length in bytes (header, frames and tag).
    pub len: u64,
    /// Its frames, in order.
    pub frames: Vec<TraceFrame>,
}

/// Why a packet was declared lost (RFC 9002 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossTrigger {
    /// A later packet was acknowledged and this one was sent long enough before it.
    TimeThreshold,
    /// Enough packets sent after it were acknowledged.
    ReorderingThreshold,
}

/// Why a connection dropped a packet: each reason is one of the connection's drop counters
/// ([`ConnectionStats`](crate::ConnectionStats)), but for [`DropReason::NoBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its header or frames do not parse, a frame is where it may not be, its type never
    /// travels in this direction, or a RETRY or REFUSE is not for this attempt
    /// (`malformed_dropped`).
    Malformed,
    /// It failed authentication: damaged, tampered with or forged (`corrupt_dropped`).
    Corrupt,
    /// DATA that came before the keys to open it, or was held for the application's verdict
    /// on the peer's key and the key was refused (`undecryptable_dropped`).
    Undecryptable,
    /// Its packet number was seen already: a network duplicate or a replay
    /// (`duplicates_dropped`).
    Duplicate,
    /// A handshake packet after the handshake was confirmed (`stale_dropped`).
    Stale,
    /// Out-of-order stream data beyond what the receive buffer may hold: dropped whole, not
    /// acknowledged, and sent again by the peer as if lost (no counter).
    NoBuffer,
}

/// The connection's congestion and RTT state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceMetrics {
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Slow-start threshold, bytes (`u64::MAX` while there is none).
    pub ssthresh: u64,
    /// Smoothed RTT.
    pub smoothed_rtt: Duration,
    /// Latest RTT sample.
    pub latest_rtt: Duration,
    /// Minimum RTT.
    pub min_rtt: Duration,
    /// RTT variation.
    pub rtt_variance: Duration,
    /// Probe timeouts in a row.
    pub pto_count: u32,
}

/// A connection's state, as a trace shows it (qlog's connection states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceState {
    /// A client's handshake has started (its INITIAL is out).
    Attempted,
    /// A server's handshake has started (it answered an INITIAL).
    HandshakeStarted,
    /// Packet keys are installed.
    HandshakeCompleted,
    /// The handshake is confirmed: the server has Noise message 3, and the client knows it.
    HandshakeConfirmed,
    /// This side sent CLOSE.
    Closing,
    /// The peer sent CLOSE.
    Draining,
    /// Gone.
    Closed,
}

/// What happened to the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChange {
    /// An authenticated packet came from a new address; the connection follows it and
    /// validates it.
    Migrated,
    /// The peer came back to the address it had before (validated already).
    Returned,
    /// The new address answered the PATH_CHALLENGE.
    Validated,
    /// The new address never answered: back to the previous one.
    ValidationFailed,
    /// We moved to another address of the peer that answered our probe (PROTOCOL.md §5.7.1).
    Moved,
}

/// Something a connection did.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceEvent {
    /// The first event of every traced connection.
    Started {
        /// Which end we are.
        role: TraceRole,
        /// The original destination connection ID: the client's random INITIAL ID. Names the
        /// connection on both sides.
        odcid: u64,
        /// Our connection ID.
        local_cid: u64,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// A simultaneous open made this client the server side of the peer's attempt.
    BecameServer {
        /// The peer's original destination connection ID, the connection's name from now on.
        odcid: u64,
    },
    /// A packet went out.
    PacketSent(TracePacket),
    /// A packet was authenticated and accepted.
    PacketReceived(TracePacket),
    /// A packet was declared lost.
    PacketLost {
        /// Its type.
        ty: TracePacketType,
        /// Its number.
        number: u64,
        /// Why.
        trigger: LossTrigger,
    },
    /// A datagram addressed to this connection was dropped (and counted). Drops the endpoint
    /// cannot pin on one connection (an unknown connection ID, a RESET whose token matches
    /// none, INITIALs refused before a connection exists) are in no connection's trace.
    PacketDropped {
        /// Its type, if its header parsed.
        ty: Option<TracePacketType>,
        /// Its packet number, if its header parsed.
        number: Option<u64>,
        /// The datagram's length in bytes.
        len: u64,
        /// Why.
        reason: DropReason,
    },
    /// The congestion or RTT state changed (recorded once per call into the connection, not
    /// at every intermediate step).
    Metrics(TraceMetrics),
    /// The connection's state changed.
    State {
        /// Before (`None` for the connection's first state).
        old: Option<TraceState>,
        /// After.
        new: TraceState,
    },
    /// A proactive copy of recent stream data rides in packet `number`.
    RedundantCopy {
        /// The packet that carries it.
        number: u64,
        /// Stream offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Scheduled by the start-of-connection default alone.
        startup: bool,
    },
    /// A key update.
    KeyUpdated {
        /// Ours (true: our sending keys moved on) or the peer's.
        local: bool,
        /// The new key phase bit.
        key_phase: bool,
        /// Key updates in this direction so far, this one included.
        generation: u64,
    },
    /// The peer's address changed, was validated, or fell back.
    Path {
        /// What happened.
        change: PathChange,
        /// The address before.
        old: SocketAddr,
        /// The address after.
        new: SocketAddr,
    },
    /// The endpoint forgot the connection: the last record for this handle.
    Removed,
}

/// A connection's trace state: what it recorded since the endpoint last collected, and what it
/// last reported (so that metrics and states are recorded only when they change).
#[derive(Debug, Default)]
pub(crate) struct Tracer {
    pub(crate) events: Vec<(Instant, TraceEvent)>,
    pub(crate) last_metrics: Option<TraceMetrics>,
    pub(crate) last_state: Option<TraceState>,
    /// The `now` of the newest record (the time of `Removed`).
    pub(crate) last_at: Option<Instant>,
    /// Long-header packets sent (handshake packets: a few per connection) and their types,
    /// until declared lost: the type a `PacketLost` reports.
    pub(crate) long_sent: Vec<(u64, TracePacketType)>,
}

impl Tracer {
    pub(crate) fn push(&mut self, at: Instant, event: TraceEvent) {
        self.last_at = Some(at);
        self.events.push((at, event));
    }
}
