//! Deterministic network simulator for testing chirp's protocol core.
//!
//! chirp is a chat over UDP, so its correctness depends on how it copes with
//! loss, duplication, reordering, corruption, bandwidth limits and outages.
//! This crate reproduces those conditions *deterministically*: every random
//! decision comes from a seeded ChaCha8 generator (identical on every
//! platform) and time is virtual — the caller passes `now` to every method and
//! nothing here reads the clock, opens a socket, spawns a thread or awaits.
//! A test that fails for one seed therefore fails the same way every time,
//! and hours of simulated traffic run in milliseconds.
//!
//! # Layout
//!
//! - `link` — the seeded network model: [`Link`] (one direction of a path,
//!   configured by [`LinkConfig`], with burst loss from [`GilbertElliott`] and
//!   counters in [`LinkStats`]) and [`Path`] (both directions).
//! - `harness` — a two-endpoint virtual-time harness that drives chirp
//!   endpoints over a [`Path`].
//! - `proxy` — the sans-IO core of `chirp impair`: [`Proxy`] gives every client
//!   of a UDP proxy its own [`Path`] and says what to send, from which socket
//!   and when ([`Transmit`], [`Event`], `poll_timeout`); the binary only moves
//!   datagrams between sockets and the core.
//! - [`noise`] — seeded payload bytes for tests of transfers (netsim's and the
//!   binary's real-process tests alike).

#![forbid(unsafe_code)]

mod harness;
mod link;
mod proxy;

pub use harness::{HarnessError, Node, Pair, Side};
pub use link::{GilbertElliott, Link, LinkConfig, LinkStats, Path};
pub use proxy::{
    ClientId, Direction, DirectionStats, Event, HELD_OVERHEAD, Proxy, ProxyConfig, ProxyStats,
    Refusal, Transmit, client_seed, same_endpoint,
};

/// `len` bytes of xorshift64 output from `seed` (made odd, so never 0): incompressible-looking
/// payloads for tests of transfers, in which data written at the wrong place, twice or damaged
/// never compares equal to what was expected, and no run is found elsewhere by chance.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
