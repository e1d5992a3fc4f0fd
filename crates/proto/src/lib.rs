//! chirp's protocol core: reliable, ordered, fragmented messages over UDP, with no I/O.
//!
//! This crate never opens a socket, never spawns a task and never reads the clock: time comes
//! in as `now`, datagrams come in as byte slices, and datagrams, deadlines and events come out.
//! That makes every behaviour reproducible in a simulator (see `chirp-netsim`) and leaves the
//! I/O policy (tokio, threads, batching) to the driver.
//!
//! # Layout
//!
//! - [`coding`]: varints and a bounds-checked reader; the only code that touches raw bytes.
//! - [`wire`]: packets and frames, `new_checked` parsing and encoding (`docs/PROTOCOL.md`).
//! - `range_set`: disjoint ranges; the bookkeeping behind ACKs and stream reassembly.
//! - `stream`: the message stream: write buffer, reassembly, flow control, message framing.
//! - `rtt`, `congestion`, `pacing`: RFC 9002 RTT estimation, NewReno, and the pacer that
//!   spreads a window's packets over the round trip.
//! - `connection`: one connection's state machine: handshake, loss recovery, ACKs, redundancy,
//!   keepalive, idle timeout, close.
//! - `endpoint`: the public entry point. Routes datagrams by connection ID and exposes
//!   `handle_datagram` / `handle_timeout` / `poll_transmit` / `poll_timeout` / `poll_event`.
//! - [`crypto`]: packet protection (ChaCha20-Poly1305 with the packet number as nonce and the
//!   header as associated data, the public keys of long-header packets, replay window, key
//!   update, address-validation cookies).
//! - [`handshake`]: the Noise XX handshake (snow) that yields the packet keys and the peer's
//!   identity. `connection` runs it inside INITIAL / ACCEPT / HANDSHAKE packets; `endpoint`
//!   answers first INITIALs statelessly with a RETRY cookie before any state exists, and with
//!   a REFUSE ("server full") when it has no room.
//! - `config`, `stats`: tunables and counters.
//! - [`trace`]: what a connection did, packet by packet, when tracing is on
//!   ([`EndpointConfig::trace`], [`Endpoint::poll_trace`]); `chirp-qlog` writes it as qlog.
//!
//! One message's path: [`Endpoint::send`] appends `varint(len) || bytes` to the connection's
//! send stream; `poll_transmit` cuts the stream into MESSAGE frames inside packets of at most
//! 1200 bytes, each sealed with the connection's key; the peer's `handle_datagram`
//! authenticates and decrypts the packet, rejects replays, acknowledges it and reassembles
//! the stream; its `poll_event` yields [`Event::Message`] once the whole message is there and
//! everything before it has been delivered.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod coding;
mod config;
mod congestion;
mod connection;
pub mod crypto;
mod endpoint;
pub mod handshake;
mod mem;
mod pacing;
pub mod pmtud;
mod range_set;
mod rng;
mod rtt;
mod stats;
mod stream;
pub mod trace;
pub mod wire;

pub use config::{Redundancy, TransportConfig};
pub use connection::{
    CloseReason, HANDSHAKE_TIMEOUT, INITIAL_MAX_DATA, MAX_ACK_DELAY, PROBE_INTERVAL_MAX,
    PROBE_INTERVAL_MIN, PingError, PingOutcome, SendError, VERDICT_TIMEOUT, close_code,
};
pub use endpoint::{
    ConnectError, ConnectionHandle, Endpoint, EndpointConfig, Event, HandshakeLimit, Transmit,
};
pub use stats::{
    ConnectionStats, ConnectionTotals, EndpointStats, EndpointTotals, HandshakeFailures, PathSample,
};
pub use stream::{MAX_MESSAGE_SIZE, WriteError};
pub use trace::{TraceEvent, TraceRecord};
pub use wire::RefuseReason;
