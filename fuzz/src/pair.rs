//! The `pair` target: two real [`Endpoint`]s with an **established** connection, and a network
//! between them that the fuzzer controls.
//!
//! Setup (every input): a client and a server endpoint with fixed identities and seeds connect
//! over a perfect network; with the crate feature `fuzzing` of `chirp-proto` the Noise
//! ephemeral keys are deterministic (`chirp_proto::handshake::fuzzing`), so every datagram of
//! a run, and so every crash, replays byte for byte. Then the input is a sequence of
//! operations: deliver, drop, duplicate, reorder or corrupt datagrams in flight, application
//! sends, half-close and close, virtual time, and NAT rebinding (a new source port). This
//! reaches what the single-endpoint targets cannot: stream reassembly, ACK processing, loss
//! recovery and PTO probes, proactive copies, flow control, key update, path validation and
//! the close handshake.
//!
//! # Input format
//!
//! Byte 0 picks the transport configuration ([`config`]); then operations until the input
//! ends (at most [`MAX_OPS`]). Each operation is a tag byte ([`SEND_BULK_TAG`], or any other
//! modulo [`OP_COUNT`]) and its fixed-size little-endian fields; fields past the end of the
//! input read as 0. [`Op::encode`] writes this format (for seeds).
//!
//! # Checks
//!
//! Besides "no panic" and the per-datagram checks of [`check_own_transmit`], for each side:
//!
//! - `Connected` comes exactly once, at setup, and no event follows `Closed`;
//! - every `Message` is the next message the other side sent, byte for byte: each message is
//!   delivered at most once and in order (no loss, duplication, reordering or corruption
//!   inside the connection), and nothing comes after `PeerFinished`;
//! - likewise every `BulkMessage` is the next bulk message the other side sent
//!   (`Op::SendBulk`), whatever happened to the chat stream, and none comes after
//!   `PeerFinished`;
//! - `Acked` never counts more messages than were sent, and never more than the peer has
//!   delivered (an acknowledgement means the peer's endpoint holds the message);
//! - `Closed { undelivered }` is exactly the sent messages after the acknowledged ones:
//!   acknowledged + undelivered = sent, each message in one place only;
//! - after `Timeout`, `poll_timeout()` is in the future (no busy loop), and drains terminate;
//! - at the end the network heals: everything in flight is delivered, then every datagram,
//!   and timers run, for up to [`HEAL_LIMIT`] of virtual time. If both connections are still
//!   open, everything each side sent has been delivered and acknowledged, on both channels
//!   (liveness).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_proto::handshake::StaticSecret;
use chirp_proto::{
    ConnectionHandle, Endpoint, EndpointConfig, Event, MAX_MESSAGE_SIZE, Redundancy,
    TransportConfig,
};

use crate::check_own_transmit;

/// Operations per input.
pub const MAX_OPS: usize = 512;
/// Number of operation tags; a tag byte is taken modulo this, except [`SEND_BULK_TAG`].
pub const OP_COUNT: u8 = 11;
/// The tag byte of [`Op::SendBulk`], added after the other operations: a byte no committed
/// input uses as a tag, so that every regression replays exactly as it was found (taking tags
/// modulo 12 instead would have changed them all).
pub const SEND_BULK_TAG: u8 = 11;
/// How long the final heal may take in virtual time: twice the idle timeout, so that a
/// connection that cannot make progress has closed by then.
pub const HEAL_LIMIT: Duration = Duration::from_secs(70);
/// Datagrams held in flight per direction; beyond it the oldest is lost (a router queue).
const MAX_IN_FLIGHT: usize = 2048;
/// Most datagrams one drain may produce before the endpoint is declared stuck in a loop.
const MAX_TRANSMITS_PER_DRAIN: usize = 20_000;
/// Most events one drain may produce.
const MAX_EVENTS_PER_DRAIN: usize = 1_000_000;
/// Steps of the setup handshake and of the heal loop.
const MAX_STEPS: usize = 10_000;

const CLIENT: usize = 0;
const SERVER: usize = 1;

/// One step of a scenario. `dir` / `side`: 0 = client, 1 = server (low bit); for datagrams the
/// direction is that of the sender. `idx` picks a datagram in flight (modulo their number), so
/// delivering other than the oldest reorders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Deliver one datagram in flight.
    Deliver {
        /// Sender.
        dir: u8,
        /// Which datagram.
        idx: u8,
    },
    /// Deliver everything in flight from `dir`, oldest first.
    DeliverAll {
        /// Sender.
        dir: u8,
    },
    /// Lose one datagram.
    Drop {
        /// Sender.
        dir: u8,
        /// Which datagram.
        idx: u8,
    },
    /// Deliver a copy of one datagram and keep it in flight.
    Duplicate {
        /// Sender.
        dir: u8,
        /// Which datagram.
        idx: u8,
    },
    /// Deliver one datagram with byte `pos` (modulo its length) XORed with `xor` (0 counts as
    /// 1), and with `truncate` (if non-zero and shorter) cut to that length.
    Corrupt {
        /// Sender.
        dir: u8,
        /// Which datagram.
        idx: u8,
        /// Byte to flip.
        pos: u16,
        /// Bits to flip.
        xor: u8,
        /// Length to cut to (0: keep).
        truncate: u16,
    },
    /// The application on `side` sends a message of `len` bytes.
    Send {
        /// Which side.
        side: u8,
        /// Length (taken modulo `MAX_MESSAGE_SIZE + 1`).
        len: u16,
    },
    /// `ms` milliseconds pass; both endpoints handle the timeout.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// Jump to the earlier of the two deadlines and handle it.
    Timeout,
    /// NAT rebinding: `side` continues from a new source port. Datagrams in flight to its old
    /// address are lost on delivery.
    Rebind {
        /// Which side.
        side: u8,
    },
    /// Half-close (`finish`) on `side`.
    Finish {
        /// Which side.
        side: u8,
    },
    /// `close` (graceful) or `abort` on `side`.
    Close {
        /// Which side.
        side: u8,
        /// Close code.
        code: u8,
        /// `close` rather than `abort`.
        graceful: bool,
    },
    /// The application on `side` sends a message of `len` bytes on the bulk channel.
    SendBulk {
        /// Which side.
        side: u8,
        /// Length (taken modulo `MAX_MESSAGE_SIZE + 1`).
        len: u16,
    },
}

/// A little-endian reader that yields 0 past the end of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

impl Op {
    fn decode(r: &mut Input<'_>) -> Self {
        let tag = r.u8();
        if tag == SEND_BULK_TAG {
            return Op::SendBulk {
                side: r.u8(),
                len: r.u16(),
            };
        }
        match tag % OP_COUNT {
            0 => Op::Deliver {
                dir: r.u8(),
                idx: r.u8(),
            },
            1 => Op::DeliverAll { dir: r.u8() },
            2 => Op::Drop {
                dir: r.u8(),
                idx: r.u8(),
            },
            3 => Op::Duplicate {
                dir: r.u8(),
                idx: r.u8(),
            },
            4 => Op::Corrupt {
                dir: r.u8(),
                idx: r.u8(),
                pos: r.u16(),
                xor: r.u8(),
                truncate: r.u16(),
            },
            5 => Op::Send {
                side: r.u8(),
                len: r.u16(),
            },
            6 => Op::Advance { ms: r.u16() },
            7 => Op::Timeout,
            8 => Op::Rebind { side: r.u8() },
            9 => Op::Finish { side: r.u8() },
            _ => Op::Close {
                side: r.u8(),
                code: r.u8(),
                graceful: r.u8() & 1 == 1,
            },
        }
    }

    /// Appends this operation in the input format.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Op::Deliver { dir, idx } => out.extend([0, dir, idx]),
            Op::DeliverAll { dir } => out.extend([1, dir]),
            Op::Drop { dir, idx } => out.extend([2, dir, idx]),
            Op::Duplicate { dir, idx } => out.extend([3, dir, idx]),
            Op::Corrupt {
                dir,
                idx,
                pos,
                xor,
                truncate,
            } => {
                out.extend([4, dir, idx]);
                out.extend(pos.to_le_bytes());
                out.push(xor);
                out.extend(truncate.to_le_bytes());
            }
            Op::Send { side, len } => {
                out.extend([5, side]);
                out.extend(len.to_le_bytes());
            }
            Op::Advance { ms } => {
                out.push(6);
                out.extend(ms.to_le_bytes());
            }
            Op::Timeout => out.push(7),
            Op::Rebind { side } => out.extend([8, side]),
            Op::Finish { side } => out.extend([9, side]),
            Op::Close {
                side,
                code,
                graceful,
            } => out.extend([10, side, code, u8::from(graceful)]),
            Op::SendBulk { side, len } => {
                out.extend([SEND_BULK_TAG, side]);
                out.extend(len.to_le_bytes());
            }
        }
    }
}

/// Decodes an input: the configuration byte and the operations.
pub fn decode(data: &[u8]) -> (u8, Vec<Op>) {
    let mut r = Input(data);
    let config = r.u8();
    let mut ops = Vec::new();
    while !r.0.is_empty() && ops.len() < MAX_OPS {
        ops.push(Op::decode(&mut r));
    }
    (config, ops)
}

/// Encodes a configuration byte and operations (for seeds).
pub fn encode(config: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![config];
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// The transport configuration of both sides, from the first input byte. Bit 0: key update
/// every 8 packets (instead of every 2^20); bit 1: redundancy (proactive copies) off; bit 2: a
/// 4 KiB receive window (flow control binds); bit 3: a 16 KiB send buffer (`send` fails with
/// a full buffer, `Writable` follows); bit 4: no keep-alive.
pub fn config(bits: u8) -> TransportConfig {
    let mut t = TransportConfig::default();
    if bits & 1 != 0 {
        t.key_update_packets = 8;
    }
    if bits & 2 != 0 {
        t.redundancy = Redundancy {
            enabled: false,
            ..Redundancy::default()
        };
    }
    if bits & 4 != 0 {
        t.receive_window = 4096;
    }
    if bits & 8 != 0 {
        t.send_buffer = 16 * 1024;
    }
    if bits & 16 != 0 {
        t.keep_alive = None;
    }
    t
}

/// What one side's application has seen, for the checks.
#[derive(Debug, Default)]
struct App {
    conn: Option<ConnectionHandle>,
    connected: u64,
    /// Messages `send` accepted, in order.
    sent: Vec<Bytes>,
    /// Messages the peer acknowledged (sum of `Acked`).
    acked: u64,
    /// Messages delivered to this side (each checked against the peer's `sent`).
    delivered: u64,
    /// Bulk messages `send_bulk` accepted, in order, and bulk messages delivered to this side
    /// (each checked against the peer's `bulk_sent`).
    bulk_sent: Vec<Bytes>,
    bulk_delivered: u64,
    peer_finished: bool,
    closed: bool,
}

/// Summary of one run (for the seed generator's checks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Operations applied.
    pub ops: usize,
    /// Messages each side sent (client, server).
    pub sent: [u64; 2],
    /// Messages each side delivered.
    pub delivered: [u64; 2],
    /// Bulk messages each side sent, and delivered.
    pub bulk_sent: [u64; 2],
    /// See `bulk_sent`.
    pub bulk_delivered: [u64; 2],
    /// Messages each side had acknowledged.
    pub acked: [u64; 2],
    /// Each side's connection closed.
    pub closed: [bool; 2],
    /// Datagrams delivered (including copies and corrupted ones).
    pub datagrams_delivered: u64,
    /// Key updates either side made. This and the next two come from the connection
    /// statistics at the end of the run (a connection already gone counts 0).
    pub key_updates: u64,
    /// Packets either side declared lost.
    pub lost: u64,
    /// Migrations either side followed.
    pub migrations: u64,
}

struct Pair {
    ep: [Endpoint; 2],
    addr: [SocketAddr; 2],
    /// Datagrams in flight from side i: (destination, bytes).
    flight: [VecDeque<(SocketAddr, Vec<u8>)>; 2],
    app: [App; 2],
    start: Instant,
    now: Instant,
    stats: RunStats,
}

fn addr(side: usize, port_offset: u16) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::new(127, 0, 0, 1 + side as u8),
        50_000 + port_offset,
    ))
}

impl Pair {
    fn new(config_bits: u8) -> Self {
        chirp_proto::handshake::fuzzing::reset();
        let transport = config(config_bits);
        let endpoint = |key: u8, seed: u64| {
            Endpoint::new(
                EndpointConfig {
                    transport: transport.clone(),
                    identity: Some(StaticSecret([key; 32])),
                    ..EndpointConfig::default()
                },
                seed,
            )
        };
        let start = Instant::now();
        let mut p = Self {
            ep: [endpoint(0xc1, 1), endpoint(0x5e, 2)],
            addr: [addr(CLIENT, 0), addr(SERVER, 0)],
            flight: Default::default(),
            app: Default::default(),
            start,
            now: start,
            stats: RunStats::default(),
        };
        let conn = p.ep[CLIENT]
            .connect(p.now, p.addr[SERVER])
            .expect("the first connection of an empty endpoint");
        p.app[CLIENT].conn = Some(conn);
        p.drain();
        for _ in 0..MAX_STEPS {
            if p.app.iter().all(|a| a.connected == 1) {
                break;
            }
            if p.flight.iter().all(VecDeque::is_empty) {
                p.timeout();
            }
            for dir in [CLIENT, SERVER] {
                p.deliver_all(dir);
            }
        }
        assert!(
            p.app.iter().all(|a| a.connected == 1),
            "setup: the handshake over a perfect network did not complete"
        );
        p
    }

    fn peer(side: usize) -> usize {
        1 - side
    }

    /// Drains both endpoints: datagrams go in flight, events are checked.
    fn drain(&mut self) {
        for side in [CLIENT, SERVER] {
            let mut n = 0;
            while let Some(t) = self.ep[side].poll_transmit(self.now) {
                n += 1;
                assert!(
                    n <= MAX_TRANSMITS_PER_DRAIN,
                    "side {side}: poll_transmit still returns datagrams after \
                     {MAX_TRANSMITS_PER_DRAIN}"
                );
                check_own_transmit(t.destination, &t.contents);
                let q = &mut self.flight[side];
                if q.len() == MAX_IN_FLIGHT {
                    q.pop_front();
                }
                q.push_back((t.destination, t.contents));
            }
            let mut n = 0;
            while let Some(ev) = self.ep[side].poll_event() {
                n += 1;
                assert!(
                    n <= MAX_EVENTS_PER_DRAIN,
                    "side {side}: poll_event still returns events after {MAX_EVENTS_PER_DRAIN}"
                );
                self.check_event(side, ev);
            }
        }
        // An acknowledgement means the peer holds the message, and the peer's messages are
        // delivered as soon as they are complete and in order: after a drain of both sides,
        // nothing is acknowledged that the peer has not delivered.
        for side in [CLIENT, SERVER] {
            let peer = &self.app[Self::peer(side)];
            assert!(
                self.app[side].acked <= peer.delivered,
                "side {side}: {} messages acknowledged, the peer delivered only {}",
                self.app[side].acked,
                peer.delivered
            );
        }
    }

    fn check_event(&mut self, side: usize, ev: Event) {
        let peer = Self::peer(side);
        let conn = match &ev {
            Event::Connected { conn, .. }
            | Event::VerifyKey { conn, .. }
            | Event::Message { conn, .. }
            | Event::Acked { conn, .. }
            | Event::Ping { conn, .. }
            | Event::PeerFinished { conn }
            | Event::Writable { conn }
            | Event::BulkMessage { conn, .. }
            | Event::BulkWritable { conn }
            | Event::PathChanged { conn, .. }
            | Event::Closed { conn, .. } => *conn,
        };
        let app = &mut self.app[side];
        assert!(!app.closed, "side {side}: {ev:?} after Closed");
        match app.conn {
            Some(c) => assert_eq!(c, conn, "side {side}: an event for another connection"),
            None => app.conn = Some(conn),
        }
        match ev {
            Event::Connected { incoming, .. } => {
                assert_eq!(incoming, side == SERVER, "side {side}: Connected.incoming");
                app.connected += 1;
                assert_eq!(app.connected, 1, "side {side}: Connected twice");
            }
            Event::VerifyKey { .. } => panic!("side {side}: VerifyKey without verify_keys"),
            Event::Message { data, .. } => {
                assert_eq!(app.connected, 1, "side {side}: a message before Connected");
                assert!(
                    !app.peer_finished,
                    "side {side}: a message after PeerFinished"
                );
                let i = app.delivered as usize;
                let sent = &self.app[peer].sent;
                assert!(
                    i < sent.len(),
                    "side {side}: message {i} delivered, but the peer sent only {}",
                    sent.len()
                );
                assert!(
                    data == sent[i],
                    "side {side}: message {i} ({} bytes) is not the peer's message {i} ({} \
                     bytes): delivered out of order, twice or damaged",
                    data.len(),
                    sent[i].len()
                );
                self.app[side].delivered += 1;
            }
            Event::Acked { messages, .. } => {
                assert!(messages >= 1, "side {side}: Acked of 0 messages");
                app.acked += messages;
                assert!(
                    app.acked <= app.sent.len() as u64,
                    "side {side}: {} acknowledged of {} sent",
                    app.acked,
                    app.sent.len()
                );
            }
            Event::PeerFinished { .. } => {
                assert!(!app.peer_finished, "side {side}: PeerFinished twice");
                app.peer_finished = true;
            }
            Event::BulkMessage { data, .. } => {
                assert_eq!(app.connected, 1, "side {side}: bulk before Connected");
                // The peer's FIN goes out only once its bulk data is all acknowledged.
                assert!(!app.peer_finished, "side {side}: bulk after PeerFinished");
                let i = app.bulk_delivered as usize;
                let sent = &self.app[peer].bulk_sent;
                assert!(
                    i < sent.len(),
                    "side {side}: bulk message {i} delivered, but the peer sent only {}",
                    sent.len()
                );
                assert!(
                    data == sent[i],
                    "side {side}: bulk message {i} ({} bytes) is not the peer's bulk message \
                     {i} ({} bytes): delivered out of order, twice or damaged",
                    data.len(),
                    sent[i].len()
                );
                self.app[side].bulk_delivered += 1;
            }
            Event::Writable { .. } | Event::BulkWritable { .. } | Event::PathChanged { .. } => {}
            Event::Ping { .. } => panic!("side {side}: a ping outcome nobody asked for"),
            Event::Closed { undelivered, .. } => {
                app.closed = true;
                let acked = app.acked as usize;
                assert_eq!(
                    acked + undelivered.len(),
                    app.sent.len(),
                    "side {side}: acknowledged + undelivered != sent"
                );
                assert!(
                    undelivered[..] == app.sent[acked..],
                    "side {side}: undelivered is not exactly the unacknowledged messages"
                );
            }
        }
    }

    fn conn(&self, side: usize) -> Option<ConnectionHandle> {
        self.app[side].conn.filter(|_| !self.app[side].closed)
    }

    fn pick(&self, dir: u8, idx: u8) -> Option<(usize, usize)> {
        let dir = usize::from(dir & 1);
        let n = self.flight[dir].len();
        (n > 0).then(|| (dir, usize::from(idx) % n))
    }

    /// Hands a datagram from `dir` to the other side, if it is addressed to where that side
    /// is now (after a rebinding, datagrams to the old address are lost).
    fn deliver(&mut self, dir: usize, destination: SocketAddr, bytes: &[u8]) {
        let to = Self::peer(dir);
        if destination != self.addr[to] {
            return;
        }
        self.stats.datagrams_delivered += 1;
        self.ep[to].handle_datagram(self.now, self.addr[dir], bytes);
    }

    fn deliver_all(&mut self, dir: usize) {
        let batch = std::mem::take(&mut self.flight[dir]);
        for (dst, bytes) in batch {
            self.deliver(dir, dst, &bytes);
        }
        self.drain();
    }

    fn timeout(&mut self) {
        let next = self.ep.iter().filter_map(Endpoint::poll_timeout).min();
        if let Some(t) = next {
            self.now = self.now.max(t);
        }
        for ep in &mut self.ep {
            ep.handle_timeout(self.now);
        }
        self.drain();
        for (side, ep) in self.ep.iter().enumerate() {
            if let Some(t) = ep.poll_timeout() {
                assert!(
                    t > self.now,
                    "side {side}: poll_timeout() is still due after handle_timeout(now) at \
                     t={:?}: a driver would busy-loop; connection: {:?}",
                    self.now - self.start,
                    self.app[side].conn.and_then(|h| ep.stats(h))
                );
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Deliver { dir, idx } => {
                if let Some((d, i)) = self.pick(dir, idx)
                    && let Some((dst, bytes)) = self.flight[d].remove(i)
                {
                    self.deliver(d, dst, &bytes);
                }
            }
            Op::DeliverAll { dir } => self.deliver_all(usize::from(dir & 1)),
            Op::Drop { dir, idx } => {
                if let Some((d, i)) = self.pick(dir, idx) {
                    self.flight[d].remove(i);
                }
            }
            Op::Duplicate { dir, idx } => {
                if let Some((d, i)) = self.pick(dir, idx) {
                    let (dst, bytes) = self.flight[d][i].clone();
                    self.deliver(d, dst, &bytes);
                }
            }
            Op::Corrupt {
                dir,
                idx,
                pos,
                xor,
                truncate,
            } => {
                if let Some((d, i)) = self.pick(dir, idx)
                    && let Some((dst, mut bytes)) = self.flight[d].remove(i)
                {
                    let p = usize::from(pos) % bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(p) {
                        *b ^= xor.max(1);
                    }
                    if truncate != 0 {
                        bytes.truncate(usize::from(truncate));
                    }
                    self.deliver(d, dst, &bytes);
                }
            }
            Op::Send { side, len } => {
                let side = usize::from(side & 1);
                if let Some(h) = self.conn(side) {
                    let len = usize::from(len) % (MAX_MESSAGE_SIZE + 1);
                    let n = self.app[side].sent.len();
                    // Distinct contents, so that a swap or a duplicate is seen.
                    let msg: Vec<u8> = (0..len)
                        .map(|j| (j as u8).wrapping_mul(31) ^ (n as u8) ^ (side as u8 * 0x80))
                        .collect();
                    if self.ep[side].send(h, &msg).is_ok() {
                        self.app[side].sent.push(Bytes::from(msg));
                    }
                }
            }
            Op::SendBulk { side, len } => {
                let side = usize::from(side & 1);
                if let Some(h) = self.conn(side) {
                    let len = usize::from(len) % (MAX_MESSAGE_SIZE + 1);
                    let n = self.app[side].bulk_sent.len();
                    // Distinct from each other and from chat messages.
                    let msg: Vec<u8> = (0..len)
                        .map(|j| (j as u8).wrapping_mul(17) ^ (n as u8) ^ 0x55 ^ (side as u8))
                        .collect();
                    if self.ep[side].send_bulk(h, Bytes::from(msg.clone())).is_ok() {
                        self.app[side].bulk_sent.push(Bytes::from(msg));
                    }
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                for ep in &mut self.ep {
                    ep.handle_timeout(self.now);
                }
            }
            Op::Timeout => self.timeout(),
            Op::Rebind { side } => {
                let side = usize::from(side & 1);
                let port = self.addr[side].port().wrapping_sub(50_000).wrapping_add(1) % 1000;
                self.addr[side] = addr(side, port);
            }
            Op::Finish { side } => {
                let side = usize::from(side & 1);
                if let Some(h) = self.conn(side) {
                    let _ = self.ep[side].finish(h);
                }
            }
            Op::Close {
                side,
                code,
                graceful,
            } => {
                let side = usize::from(side & 1);
                if let Some(h) = self.conn(side) {
                    if graceful {
                        self.ep[side].close(self.now, h, u64::from(code), "fuzz");
                    } else {
                        self.ep[side].abort(self.now, h, u64::from(code), "fuzz");
                    }
                }
            }
        }
        self.drain();
    }

    /// The network heals: everything in flight arrives, and so does everything sent from now
    /// on, while timers run, until both sides are idle or [`HEAL_LIMIT`] has passed.
    fn heal(&mut self) {
        let until = self.now + HEAL_LIMIT;
        for _ in 0..MAX_STEPS {
            if self.flight.iter().all(VecDeque::is_empty) {
                let done = self.app.iter().all(|a| a.closed)
                    || (0..2).all(|s| {
                        let peer = &self.app[Self::peer(s)];
                        self.app[s].acked == self.app[s].sent.len() as u64
                            && peer.delivered == self.app[s].sent.len() as u64
                            && peer.bulk_delivered == self.app[s].bulk_sent.len() as u64
                    });
                let next = self.ep.iter().filter_map(Endpoint::poll_timeout).min();
                if done || next.is_none_or(|t| t > until) {
                    break;
                }
                self.timeout();
            }
            for dir in [CLIENT, SERVER] {
                self.deliver_all(dir);
            }
        }
        if self.app.iter().any(|a| a.closed) {
            return;
        }
        for side in [CLIENT, SERVER] {
            let bulk_sent = self.app[side].bulk_sent.len() as u64;
            let peer = &self.app[Self::peer(side)];
            assert!(
                peer.bulk_delivered == bulk_sent,
                "liveness: after {HEAL_LIMIT:?} of a perfect network both connections are \
                 open, but side {side} sent {bulk_sent} bulk messages and the peer delivered {}",
                peer.bulk_delivered
            );
        }
        for side in [CLIENT, SERVER] {
            let sent = self.app[side].sent.len() as u64;
            let peer = &self.app[Self::peer(side)];
            assert!(
                peer.delivered == sent && self.app[side].acked == sent,
                "liveness: after {HEAL_LIMIT:?} of a perfect network both connections are \
                 open, but side {side} sent {sent} messages, the peer delivered {} and {} are \
                 acknowledged",
                peer.delivered,
                self.app[side].acked
            );
        }
    }
}

/// Runs one input. Panics only if an endpoint panics or breaks one of the promises above.
pub fn run(data: &[u8]) -> RunStats {
    let (config, ops) = decode(data);
    let mut p = Pair::new(config);
    for &op in &ops {
        p.apply(op);
    }
    p.heal();
    let mut stats = p.stats;
    stats.ops = ops.len();
    for side in [CLIENT, SERVER] {
        let a = &p.app[side];
        stats.sent[side] = a.sent.len() as u64;
        stats.delivered[side] = a.delivered;
        stats.bulk_sent[side] = a.bulk_sent.len() as u64;
        stats.bulk_delivered[side] = a.bulk_delivered;
        stats.acked[side] = a.acked;
        stats.closed[side] = a.closed;
        if let Some(s) = a.conn.and_then(|h| p.ep[side].stats(h)) {
            stats.key_updates += s.key_updates;
            stats.lost += s.packets_lost;
            stats.migrations += s.migrations;
        }
    }
    stats
}
