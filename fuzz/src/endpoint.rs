//! The stateful `endpoint` target: a sequence of operations driving one [`Endpoint`] in virtual
//! time.
//!
//! # Input format
//!
//! The input is read front to back by one [`Unstructured`]: an [`Op`] (decoded with
//! `arbitrary`'s derive: a little-endian `u32` picks the variant, then the fields in order,
//! little-endian), and, for the two datagram operations, the next `len` bytes of the input as
//! its payload (fewer if the input ends). Then the next operation, up to [`MAX_OPS`]. Keeping
//! the variable-length payloads inline (rather than letting `arbitrary` take lengths from the
//! end of the input) makes seeds easy to write ([`encode`]) and mutations local.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use chirp_proto::coding::VARINT_MAX;
use chirp_proto::crypto::{InitialKeys, PacketKey};
use chirp_proto::handshake::StaticSecret;
use chirp_proto::wire::{
    ConnectionId, Header, MAX_DATAGRAM_SIZE, MIN_INITIAL_SIZE, Packet, PacketBuilder, PacketType,
    RefuseReason, encode_refuse,
};
use chirp_proto::{Endpoint, EndpointConfig, Event};

use crate::check_own_transmit;

/// Operations per run: enough for a handshake, a few messages, loss recovery and a close,
/// few enough that one run takes about a millisecond (with ASan).
pub const MAX_OPS: usize = 256;
/// Most datagrams one drain may produce before the endpoint is declared stuck in a loop.
/// (Congestion control and the 1 MiB send buffer keep a real burst far below this.)
const MAX_TRANSMITS_PER_DRAIN: usize = 20_000;
/// Most events one drain may produce (a packet can carry ~1000 empty messages).
const MAX_EVENTS_PER_DRAIN: usize = 1_000_000;
/// How many of the endpoint's own connection IDs the harness remembers for [`Cid::Learned`].
const MAX_LEARNED: usize = 16;
/// Peers live at 127.0.0.1:PEER_PORT_BASE + (port % PEERS).
const PEER_PORT_BASE: u16 = 40_000;
const PEERS: u8 = 4;

/// One step of a scenario.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A raw datagram: the next `len` bytes of the input. With `seal`, the bytes go through
    /// [`crate::sealed_datagram`] first (type selector, packet number, frames sealed under the
    /// public initial keys of [`crate::SEALED_DCID`]), so authentication no longer stops the
    /// fuzzer.
    Datagram {
        /// Which peer sends it.
        from_port: u8,
        /// Seal the bytes as a packet.
        seal: bool,
        /// Payload length taken from the input.
        len: u16,
    },
    /// A packet with a well-formed header whose frames are the next `len` bytes of the input,
    /// sealed as a real peer would seal it where the harness knows the key: INITIAL, HANDSHAKE
    /// and ACCEPT under the initial keys of the attempt (the destination CID for INITIAL, the
    /// initial destination CID last seen between the endpoint and that peer otherwise), INITIAL
    /// with the cookie of the last RETRY the endpoint sent that peer. DATA is sealed under a
    /// fixed key the endpoint never has, so it exercises only the authentication failure path.
    Packet {
        /// Which peer sends it.
        from_port: u8,
        /// Packet type.
        kind: Kind,
        /// Pad with PADDING frames to `MIN_INITIAL_SIZE` (only padded INITIALs open connections).
        pad: bool,
        /// Destination connection ID.
        dst: Cid,
        /// Source connection ID (long-header packets only).
        src_cid: u64,
        /// Packet number (low end) ...
        pn: u16,
        /// ... or counted down from the largest packet number a varint can carry.
        pn_high: bool,
        /// Frame bytes taken from the input.
        len: u16,
    },
    /// Let `ms` milliseconds pass, then call `handle_timeout`.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// Jump to the endpoint's own deadline (`poll_timeout`) and call `handle_timeout`.
    Timeout,
    /// Open a connection to a peer.
    Connect {
        /// Which peer.
        port: u8,
    },
    /// Queue a message of `len` bytes on a live connection.
    Send {
        /// Index into the live connections.
        conn: u8,
        /// Message size (sizes above 64 KiB are refused by the endpoint).
        len: u16,
    },
    /// Close (gracefully or not) a live connection.
    Close {
        /// Index into the live connections.
        conn: u8,
        /// Close code.
        code: u16,
        /// Wait for the send buffer to drain first.
        graceful: bool,
    },
}

/// The packet type of [`Op::Packet`].
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client's INITIAL (carries its source connection ID).
    Initial,
    /// DATA (key phase 0).
    Data,
    /// A server's ACCEPT (carries its source connection ID).
    Accept,
    /// A client's HANDSHAKE (carries its source connection ID).
    Handshake,
    /// A server's stateless REFUSE of the endpoint's last connection attempt to that peer:
    /// its source ID is the attempt's initial destination ID (with `pn_high`: `src_cid`, a
    /// mismatch), sealed under that attempt's refuse key; `pn` is the reason code; the frame
    /// bytes and `pad` are ignored. (Appended last: the variants before it keep their
    /// encoding, so older seeds decode as before.)
    Refuse,
}

impl Kind {
    fn packet_type(self) -> PacketType {
        match self {
            Kind::Initial => PacketType::Initial,
            Kind::Data => PacketType::Data { key_phase: false },
            Kind::Accept => PacketType::Accept,
            Kind::Handshake => PacketType::Handshake,
            Kind::Refuse => PacketType::Refuse,
        }
    }
}

/// A destination connection ID for [`Op::Packet`].
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cid {
    /// One of the IDs the endpoint announced in its own INITIAL packets (index modulo the
    /// number learned; 0 if none yet): how a real peer addresses it.
    Learned(u8),
    /// Any ID.
    Raw(u64),
}

/// Decodes an input into operations and their payloads (at most [`MAX_OPS`]).
pub fn decode(data: &[u8]) -> Vec<(Op, &[u8])> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        let payload = match op {
            Op::Datagram { len, .. } | Op::Packet { len, .. } => {
                let n = usize::from(len).min(u.len());
                u.bytes(n).unwrap_or_default()
            }
            _ => &[][..],
        };
        ops.push((op, payload));
    }
    ops
}

/// Encodes operations in the input format that [`decode`] reads; the length fields of the
/// datagram operations are overwritten with the payloads' lengths. Used to write seeds.
pub fn encode(ops: &[(Op, &[u8])]) -> Vec<u8> {
    fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
        // The derive picks variant `(u32 * count) >> 32`: take the smallest u32 that maps to
        // `index`.
        let v = (index << 32).div_ceil(count);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    let mut out = Vec::new();
    for &(op, payload) in ops {
        let len = u16::try_from(payload.len()).expect("payload fits a u16 length");
        match op {
            Op::Datagram {
                from_port, seal, ..
            } => {
                variant(&mut out, 0, 7);
                out.push(from_port);
                out.push(u8::from(seal));
                out.extend_from_slice(&len.to_le_bytes());
            }
            Op::Packet {
                from_port,
                kind,
                pad,
                dst,
                src_cid,
                pn,
                pn_high,
                ..
            } => {
                variant(&mut out, 1, 7);
                out.push(from_port);
                let kind = match kind {
                    Kind::Initial => 0,
                    Kind::Data => 1,
                    Kind::Accept => 2,
                    Kind::Handshake => 3,
                    Kind::Refuse => 4,
                };
                variant(&mut out, kind, 5);
                out.push(u8::from(pad));
                match dst {
                    Cid::Learned(i) => {
                        variant(&mut out, 0, 2);
                        out.push(i);
                    }
                    Cid::Raw(cid) => {
                        variant(&mut out, 1, 2);
                        out.extend_from_slice(&cid.to_le_bytes());
                    }
                }
                out.extend_from_slice(&src_cid.to_le_bytes());
                out.extend_from_slice(&pn.to_le_bytes());
                out.push(u8::from(pn_high));
                out.extend_from_slice(&len.to_le_bytes());
            }
            Op::Advance { ms } => {
                variant(&mut out, 2, 7);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Op::Timeout => variant(&mut out, 3, 7),
            Op::Connect { port } => {
                variant(&mut out, 4, 7);
                out.push(port);
            }
            Op::Send { conn, len } => {
                variant(&mut out, 5, 7);
                out.push(conn);
                out.extend_from_slice(&len.to_le_bytes());
            }
            Op::Close {
                conn,
                code,
                graceful,
            } => {
                variant(&mut out, 6, 7);
                out.push(conn);
                out.extend_from_slice(&code.to_le_bytes());
                out.push(u8::from(graceful));
            }
        }
        out.extend_from_slice(payload);
    }
    out
}

fn peer(port: u8) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        PEER_PORT_BASE + u16::from(port % PEERS),
    ))
}

/// The harness: an endpoint, virtual time, and what it has told us about itself.
struct Harness {
    ep: Endpoint,
    start: Instant,
    now: Instant,
    learned: Vec<ConnectionId>,
    /// Per peer: the cookie of the last RETRY the endpoint sent it.
    tokens: [Vec<u8>; PEERS as usize],
    /// Per peer: the initial destination CID of the last attempt seen (the endpoint's INITIALs
    /// to it, or ours from it); it keys HANDSHAKE and ACCEPT packets.
    initial_dcid: [Option<ConnectionId>; PEERS as usize],
    datagrams_out: u64,
    events: EventCounts,
}

/// Events seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// `Event::VerifyKey`.
    pub verify: u64,
    /// `Event::Connected`.
    pub connected: u64,
    /// `Event::Message`.
    pub messages: u64,
    /// `Event::Acked` (messages acknowledged).
    pub acked: u64,
    /// `Event::Writable`.
    pub writable: u64,
    /// `Event::Closed`.
    pub closed: u64,
    /// `Event::PeerFinished`.
    pub peer_finished: u64,
}

impl Harness {
    fn new() -> Self {
        let start = Instant::now();
        Self {
            // A fixed identity: the endpoint's cookies and answers are then a function of the
            // input alone, so crashes reproduce.
            ep: Endpoint::new(
                EndpointConfig {
                    identity: Some(StaticSecret([0x5e; 32])),
                    // Every handshake pauses for a verdict (`drain` gives it), so the paused
                    // states are fuzzed too.
                    verify_keys: true,
                    ..EndpointConfig::default()
                },
                0,
            ),
            start,
            now: start,
            learned: Vec::new(),
            tokens: Default::default(),
            initial_dcid: [None; PEERS as usize],
            datagrams_out: 0,
            events: EventCounts::default(),
        }
    }

    /// Drains `poll_transmit` then `poll_event`, checking every datagram the endpoint emits.
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(t) = self.ep.poll_transmit(self.now) {
            n += 1;
            assert!(
                n <= MAX_TRANSMITS_PER_DRAIN,
                "poll_transmit still returns datagrams after {MAX_TRANSMITS_PER_DRAIN} at t={:?}",
                self.now - self.start
            );
            check_own_transmit(t.destination, &t.contents);
            let packet = Packet::new_checked(&t.contents).ok();
            let src = packet.and_then(|p| p.header.src_cid);
            if let Some(p) = packet {
                let i = usize::from(t.destination.port().wrapping_sub(PEER_PORT_BASE) % 256)
                    % usize::from(PEERS);
                match p.header.ty {
                    PacketType::Retry => self.tokens[i] = p.token.to_vec(),
                    PacketType::Initial => self.initial_dcid[i] = Some(p.header.dst_cid),
                    _ => {}
                }
            }
            if let Some(src) = src
                && !self.learned.contains(&src)
                && self.learned.len() < MAX_LEARNED
            {
                self.learned.push(src);
            }
        }
        self.datagrams_out += n as u64;
        let mut n = 0;
        while let Some(ev) = self.ep.poll_event() {
            n += 1;
            assert!(
                n <= MAX_EVENTS_PER_DRAIN,
                "poll_event still returns events after {MAX_EVENTS_PER_DRAIN}"
            );
            match ev {
                Event::VerifyKey {
                    conn, remote_key, ..
                } => {
                    self.events.verify += 1;
                    // A verdict that is a function of the input: both ways get exercised.
                    if remote_key[0] % 2 == 0 {
                        self.ep.accept_key(self.now, conn);
                    } else {
                        self.ep.refuse_key(self.now, conn);
                    }
                }
                Event::Connected { .. } => self.events.connected += 1,
                Event::Message { .. } => self.events.messages += 1,
                Event::Acked { messages, .. } => self.events.acked += messages,
                Event::Writable { .. } => self.events.writable += 1,
                Event::Closed { .. } => self.events.closed += 1,
                Event::PeerFinished { .. } => self.events.peer_finished += 1,
                // Nothing here asks for pings; an address change is the connection's own.
                Event::Ping { .. }
                | Event::PathChanged { .. }
                | Event::BulkMessage { .. }
                | Event::BulkWritable { .. } => {}
            }
        }
    }

    fn nth_conn(&self, i: u8) -> Option<chirp_proto::ConnectionHandle> {
        let live: Vec<_> = self.ep.connections().collect();
        (!live.is_empty()).then(|| live[usize::from(i) % live.len()])
    }

    fn apply(&mut self, op: Op, payload: &[u8]) {
        match op {
            Op::Datagram {
                from_port, seal, ..
            } => {
                let bytes = if seal {
                    crate::sealed_datagram(payload)
                } else {
                    payload.to_vec()
                };
                self.ep.handle_datagram(self.now, peer(from_port), &bytes);
            }
            Op::Packet {
                from_port,
                kind,
                pad,
                dst,
                src_cid,
                pn,
                pn_high,
                ..
            } => {
                let dst_cid = match dst {
                    Cid::Learned(i) if !self.learned.is_empty() => {
                        self.learned[usize::from(i) % self.learned.len()]
                    }
                    Cid::Learned(_) => ConnectionId(0),
                    Cid::Raw(c) => ConnectionId(c),
                };
                let number = if pn_high {
                    VARINT_MAX - u64::from(pn)
                } else {
                    u64::from(pn)
                };
                let ty = kind.packet_type();
                let header = Header {
                    ty,
                    dst_cid,
                    src_cid: ty.is_long().then_some(ConnectionId(src_cid)),
                    number,
                };
                let i = usize::from(from_port % PEERS);
                if ty == PacketType::Initial {
                    self.initial_dcid[i] = Some(dst_cid);
                }
                let attempt = InitialKeys::new(self.initial_dcid[i].unwrap_or(dst_cid).0);
                let key = match ty {
                    PacketType::Initial | PacketType::Handshake => attempt.client,
                    PacketType::Accept => attempt.server,
                    _ => PacketKey::new([0x42; 32]),
                };
                let token: &[u8] = if ty == PacketType::Initial {
                    &self.tokens[i]
                } else {
                    &[]
                };
                let bytes = if ty == PacketType::Refuse {
                    let r = self.initial_dcid[i].unwrap_or(ConnectionId(src_cid));
                    let src = if pn_high { ConnectionId(src_cid) } else { r };
                    let reason = RefuseReason::from_code(u64::from(pn));
                    encode_refuse(dst_cid, src, reason, &attempt.refuse)
                } else {
                    let mut b = PacketBuilder::new(&header, token, MAX_DATAGRAM_SIZE);
                    let room = b.remaining();
                    b.frames_buf()
                        .extend_from_slice(&payload[..payload.len().min(room)]);
                    if pad {
                        b.pad_to(MIN_INITIAL_SIZE);
                    }
                    b.finish(&key)
                };
                self.ep.handle_datagram(self.now, peer(from_port), &bytes);
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.ep.handle_timeout(self.now);
            }
            Op::Timeout => {
                if let Some(t) = self.ep.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.ep.handle_timeout(self.now);
                self.drain();
                // A driver sleeps until poll_timeout(); one that is still due after
                // handle_timeout and a full drain would make it spin.
                if let Some(t) = self.ep.poll_timeout() {
                    assert!(
                        t > self.now,
                        "poll_timeout() = now+{:?} is still due after handle_timeout(now) at \
                         t={:?}: a driver would busy-loop",
                        t.saturating_duration_since(self.now),
                        self.now - self.start
                    );
                }
            }
            Op::Connect { port } => {
                let _ = self.ep.connect(self.now, peer(port));
            }
            Op::Send { conn, len } => {
                if let Some(h) = self.nth_conn(conn) {
                    let msg = vec![len as u8; usize::from(len)];
                    let _ = self.ep.send(h, &msg);
                }
            }
            Op::Close {
                conn,
                code,
                graceful,
            } => {
                if let Some(h) = self.nth_conn(conn) {
                    if graceful {
                        self.ep.close(self.now, h, u64::from(code), "fuzz");
                    } else {
                        self.ep.abort(self.now, h, u64::from(code), "fuzz");
                    }
                }
            }
        }
        self.drain();
    }
}

/// Summary of one run, for the seed generator's sanity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Operations applied.
    pub ops: usize,
    /// Datagrams the endpoint emitted.
    pub datagrams_out: u64,
    /// Events the endpoint emitted.
    pub events: EventCounts,
    /// Endpoint-wide counters at the end.
    pub endpoint: chirp_proto::EndpointStats,
}

/// Runs one input. Panics only if the endpoint panics or breaks one of its documented promises.
pub fn run(data: &[u8]) -> RunStats {
    // Deterministic Noise ephemeral keys from the start of every input: runs replay exactly.
    chirp_proto::handshake::fuzzing::reset();
    let ops = decode(data);
    let mut h = Harness::new();
    for &(op, payload) in &ops {
        h.apply(op, payload);
    }
    RunStats {
        ops: ops.len(),
        datagrams_out: h.datagrams_out,
        events: h.events,
        endpoint: h.ep.endpoint_stats(),
    }
}
