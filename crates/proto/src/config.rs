//! Tunables. The defaults are what chirp ships with; tests and the simulator vary them.

use std::time::Duration;

use crate::stream::MAX_MESSAGE_SIZE;

/// Per-connection transport settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportConfig {
    /// Largest datagram sent: the ceiling of path MTU discovery ([`crate::pmtud`]). A
    /// connection starts at 1,200 bytes ([`crate::wire::MAX_DATAGRAM_SIZE`], which every path
    /// carries and INITIALs are padded to) and, above that, probes up to this after the
    /// handshake; clamped to 1,200..=65,507. Default 1,200: discovery off (behind a bottleneck
    /// buffer of two 1,200-byte datagrams, 1,452-byte ones overflow it; PROTOCOL.md §6.9).
    /// [`crate::pmtud::DEFAULT_CEILING`] (1,452) suits IPv4 over an Ethernet-sized path.
    pub max_datagram_size: usize,
    /// With no packet received for this long, the peer is declared dead. Default 30 s.
    pub idle_timeout: Duration,
    /// Send a PING when nothing ack-eliciting has crossed the connection for this long, so a NAT
    /// binding (typically ~30 s) stays open. Default 15 s; `None` disables keepalives.
    pub keep_alive: Option<Duration>,
    /// RTT assumed before the first sample (RFC 9002: 333 ms).
    pub initial_rtt: Duration,
    /// Upper bound on the probe timeout after backoff. RFC 9002 sets none; chat wants one, so
    /// that after an outage the link is re-probed at least this often and recovers quickly.
    pub max_pto: Duration,
    /// Receive window: the most message-stream bytes buffered for the peer (out-of-order, partly
    /// reassembled or unread). This bounds a connection's receive memory. Must be at least one
    /// maximum-size message plus its length prefix.
    pub receive_window: u64,
    /// Send buffer: the most bytes written but not yet acknowledged before `send` says
    /// [`crate::WriteError::Blocked`].
    pub send_buffer: usize,
    /// Largest message accepted from the application or the peer.
    pub max_message_size: usize,
    /// Receive window of the bulk channel ([`crate::Endpoint::send_bulk`]): the most
    /// bulk-channel bytes buffered for the peer, on top of (and independent of)
    /// `receive_window`. Never below the initial limit, 128 KiB (a smaller value is raised to
    /// it). Default 1 MiB: a transfer runs at up to this much per round trip.
    pub bulk_receive_window: u64,
    /// Send buffer of the bulk channel: the most bulk bytes written but not yet acknowledged
    /// before `send_bulk` says [`crate::WriteError::Blocked`]. Default 1 MiB.
    pub bulk_send_buffer: usize,
    /// Latency-first redundancy for small messages: see [`Redundancy`].
    pub redundancy: Redundancy,
    /// Pace data packets over the round trip (the window per smoothed RTT, times 2 in slow
    /// start and 1.25 after it or once HyStart++ has seen the RTT rise) instead of sending a
    /// window at once; an idle connection still sends a burst of at least 10 packets at once.
    /// Default on; off only to compare.
    pub pacing: bool,
    /// End slow start when the RTT rises, before the bottleneck's queue overflows (HyStart++,
    /// RFC 9406; PROTOCOL.md §6.7). Default **off**: on real sockets through a 100 Mbit/s,
    /// 40 ms path it cost 9 to 13 points of goodput at 1 % and 5 % random loss (docs/
    /// PERFORMANCE.md, "Run 4"), though it cuts the first slow start's queue drops.
    pub hystart: bool,
    /// Move to the next sending key after this many packets under one key. ChaCha20-Poly1305
    /// nonces (the packet number) never repeat anyway; updating bounds how much traffic one
    /// key protects and how much a key compromise exposes.
    pub key_update_packets: u64,
    /// ... or after this long under one key, whichever comes first (WireGuard rekeys after 2
    /// minutes).
    pub key_update_interval: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_datagram_size: crate::pmtud::BASE,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(15)),
            initial_rtt: Duration::from_millis(333),
            max_pto: Duration::from_secs(1),
            receive_window: 512 * 1024,
            send_buffer: 1024 * 1024,
            max_message_size: MAX_MESSAGE_SIZE,
            bulk_receive_window: 1024 * 1024,
            bulk_send_buffer: 1024 * 1024,
            redundancy: Redundancy::default(),
            pacing: true,
            hystart: false,
            key_update_packets: 1 << 20,
            key_update_interval: Duration::from_secs(120),
        }
    }
}

/// Proactive copies of small messages, sized to the measured loss rate.
///
/// A lost chat message otherwise waits for loss detection: at least one RTT plus a timer. Sending
/// `k` copies of a small message a few milliseconds apart makes the chance that all are lost
/// `p^k`; chirp picks the smallest `k` for which that falls below `target_residual`, so a clean
/// path pays nothing and a lossy one pays bytes, not latency. Bulk transfers (anything that does
/// not fit in one packet) never get copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Redundancy {
    /// Master switch.
    pub enabled: bool,
    /// Most transmissions of one small message, the original included.
    pub max_copies: u32,
    /// Residual loss probability aimed for.
    pub target_residual: f64,
    /// Loss rates below this send no copies at all.
    pub min_loss: f64,
    /// Only data runs up to this many bytes are copied.
    pub max_bytes: usize,
    /// The start-of-connection default: until this many packet outcomes (acknowledged or
    /// lost, handshake included) have been seen, small messages go at least
    /// `startup_copies` times. Before that the estimate rests on too few packets: a
    /// connection whose handshake and first exchanges lost nothing read 0 %, and on a lossy
    /// path its first lost messages, with no copy, held the next ones back for a recovery
    /// (70 to 110 ms on a 40 ms round trip, the largest part of the p99 through a server at 10
    /// and 20 % loss; issue 13). The price on a clean path is a copy of each of the first
    /// ~12 messages of a connection.
    pub startup_outcomes: u64,
    /// See `startup_outcomes`.
    pub startup_copies: u32,
}

impl Default for Redundancy {
    fn default() -> Self {
        Self {
            enabled: true,
            // Five at 20 % loss (p^5 = 3e-4): with four, a message whose copies were all lost
            // (1.6e-3) made the p99 through a server (two hops, a busier connection whose
            // stalls hold more messages back) 91 ms against 65 (issue 13).
            max_copies: 5,
            target_residual: 1e-3,
            min_loss: 0.005,
            max_bytes: 1024,
            startup_outcomes: 24,
            startup_copies: 2,
        }
    }
}

impl Redundancy {
    /// Transmissions per small message for an estimated loss rate `p`.
    pub fn copies_for(&self, p: f64) -> u32 {
        if !self.enabled || p < self.min_loss {
            return 1;
        }
        if p >= 1.0 {
            return self.max_copies.max(1);
        }
        let k = (self.target_residual.ln() / p.ln()).ceil();
        // `k` is finite and positive here because 0 < p < 1 and 0 < target < 1.
        (k.max(1.0) as u32).clamp(1, self.max_copies.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_grow_with_loss() {
        let r = Redundancy::default();
        assert_eq!(r.copies_for(0.0), 1);
        assert_eq!(r.copies_for(0.001), 1);
        assert_eq!(r.copies_for(0.02), 2);
        assert_eq!(r.copies_for(0.1), 3);
        assert_eq!(r.copies_for(0.2), 5);
        assert_eq!(r.copies_for(0.9), 5);
        assert_eq!(
            Redundancy {
                enabled: false,
                ..r
            }
            .copies_for(0.5),
            1
        );
    }
}
