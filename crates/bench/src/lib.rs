//! chirp's load generator, behind `chirp bench`: it speaks the real protocol (Noise handshake,
//! encryption, the chat protocol) to a real server, checks that nothing was lost, duplicated
//! or reordered, and measures the same machine's plain UDP in the same run as the reference
//! every figure is given against.
//!
//! - [`raw`]: plain UDP datagrams per second over loopback, one thread sending, one receiving.
//! - [`fanout`]: a room of M members, S of them sending, on one server or spread over the nodes
//!   of a cluster; deliveries per second and the latency from each send to each delivery;
//!   every member checks it got every message exactly once, in order.
//! - [`handshake`]: new sessions per second (handshake, `hello`, `welcome`), a fixed number in
//!   setup at once, with the setup time of each.
//! - [`idle`]: N established, joined sessions held open: the server's memory per session
//!   and its CPU while they idle.
//! - [`nat`]: two `chirp peer --via` through real NATs in network namespaces (endpoint-
//!   independent, none, symmetric): the path each case ends on, the time to first message,
//!   and the chat's latency with `chirp impair` on the direct or the relayed path.
//! - [`swarm`]: how every scenario runs its sessions: many sans-IO chat sessions over one
//!   sans-IO endpoint on one UDP socket, one loop on a thread of its own, with no task or
//!   channel per session; a few swarms (sockets, each its own loopback address) at once.
//! - [`children`]: the child processes of the benches that run the real binary (`nat`, and the
//!   `e2e_latency` example of `chirp`), and the flags of the `chirp impair` proxy between them.
//! - [`tcp_ref`]: the bulk bench's TCP reference, the kernel's TCP through the same `chirp
//!   impair` path by a UDP tunnel between two network namespaces.
//! - [`server`]: starts `chirp serve` as a child process in a temporary directory, on a free
//!   loopback port, with flood control and per-address limits raised for the load; stops it
//!   on drop; reads a process's CPU time and resident memory from `/proc`.
//!
//! Numbers from one run on a shared machine are noisy: compare a figure with the reference of
//! the same run, and take medians over runs (`--runs`).

pub mod children;
pub mod fanout;
pub mod flood;
pub mod handshake;
pub mod idle;
pub mod nat;
mod netns;
pub mod raw;
pub mod server;
pub mod swarm;
pub mod tcp_ref;

/// Why a benchmark could not run (a benchmark that ran but found messages lost, duplicated or
/// reordered reports that in its result instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket, process or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server or a client did not get where it had to within the time limit.
    #[error("{0}")]
    Stuck(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// The value at quantile `q` (0 to 1) of `sorted` (ascending), by the nearest-rank method.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (the upper one of an even count), sorting them.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
    }
}
