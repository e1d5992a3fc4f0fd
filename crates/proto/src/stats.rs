//! Link statistics, kept per connection for the UI and `/stats`.

use std::time::Duration;

/// Counters and estimates of one connection. All counters only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionStats {
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Round-trip time variance.
    pub rttvar: Duration,
    /// Smallest RTT sample.
    pub min_rtt: Duration,
    /// Latest RTT sample.
    pub latest_rtt: Duration,
    /// Packets sent.
    pub packets_sent: u64,
    /// Bytes sent, as UDP payload.
    pub bytes_sent: u64,
    /// Packets received and accepted (not counting those dropped below).
    pub packets_received: u64,
    /// Bytes received, as UDP payload, accepted or not.
    pub bytes_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Packets acknowledged (the loss rate is lost / (lost + acked)).
    pub packets_acked: u64,
    /// Message-stream byte ranges sent again because they were lost or probed.
    pub retransmissions: u64,
    /// Proactive copies of small messages sent (see `Redundancy`).
    pub redundant_copies: u64,
    /// Packets dropped because their number had been seen already.
    pub duplicates_dropped: u64,
    /// Packets that arrived with a lower number than one already received.
    pub out_of_order: u64,
    /// Datagrams dropped for a bad checksum.
    pub corrupt_dropped: u64,
    /// Datagrams dropped as malformed (bad header or frame).
    pub malformed_dropped: u64,
    /// Messages handed to the transport by the application.
    pub messages_sent: u64,
    /// Messages delivered to the application.
    pub messages_received: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Smoothed loss estimate used for redundancy, in [0, 1].
    pub loss_estimate: f64,
}

impl ConnectionStats {
    /// Fraction of acknowledged-or-lost packets that were lost, in percent.
    pub fn loss_percent(&self) -> f64 {
        let total = self.packets_lost + self.packets_acked;
        if total == 0 {
            0.0
        } else {
            100.0 * self.packets_lost as f64 / total as f64
        }
    }
}

/// Endpoint-wide counters: datagrams that could not be attributed to one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams received in total.
    pub datagrams_received: u64,
    /// Dropped for a bad checksum.
    pub corrupt_dropped: u64,
    /// Dropped as malformed.
    pub malformed_dropped: u64,
    /// Dropped because no connection has that ID (and it was not a new INITIAL).
    pub unknown_connection: u64,
    /// INITIALs refused: not accepting, the connection table is full, or not padded to the
    /// minimum size.
    pub refused: u64,
    /// Late copies of INITIALs from a peer that is already connected.
    pub stale_initials: u64,
}
