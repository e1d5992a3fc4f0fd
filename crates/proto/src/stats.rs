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
    /// Of `packets_lost`, those with a long header: sent during the handshake, typically
    /// before the peer was listening (a peer started second, a server restarting). They say
    /// little about the path, so a link-quality figure leaves them out.
    pub handshake_packets_lost: u64,
    /// Of `packets_lost`, those acknowledged after all, later: they were reordered or
    /// delayed, not lost. Each one's loss was taken back (RFC 8985 §7.3 spirit): it left the
    /// loss estimate, the congestion window went back to its size before the loss, and the
    /// reordering window grew.
    pub spurious_losses: u64,
    /// Times persistent congestion was declared (RFC 9002 §7.6: every ack-eliciting packet
    /// over three probe timeouts lost), collapsing the congestion window to its minimum.
    pub persistent_congestion: u64,
    /// Recovery periods taken for random loss (no queue standing in the path): the window was
    /// not halved, only capped at twice the bandwidth-delay product shown (PROTOCOL.md §6.7).
    pub random_loss_periods: u64,
    /// Recovery periods taken for congestion (a queue of ours standing in the path): the
    /// window was halved (PROTOCOL.md §6.7).
    pub congestion_periods: u64,
    /// Packets acknowledged (the loss rate is lost / (lost + acked)).
    pub packets_acked: u64,
    /// Message-stream byte ranges sent again because they were lost or probed.
    pub retransmissions: u64,
    /// Proactive copies of small messages sent (see `Redundancy`).
    pub redundant_copies: u64,
    /// Of `redundant_copies`, those sent only because of the start-of-connection default
    /// (`Redundancy::startup_copies`), before the loss estimate rests on enough packets: the
    /// rest follow the loss estimate.
    pub startup_copies: u64,
    /// Packets dropped by the replay window: their number had been seen already (network
    /// duplicates and replayed datagrams alike).
    pub duplicates_dropped: u64,
    /// Packets that arrived with a lower number than one already received.
    pub out_of_order: u64,
    /// Datagrams that failed authentication: damaged, tampered with or forged.
    pub corrupt_dropped: u64,
    /// Datagrams dropped as malformed (bad header or frame).
    pub malformed_dropped: u64,
    /// DATA packets that arrived before the keys to open them (they overtook the handshake).
    pub undecryptable_dropped: u64,
    /// Handshake packets that arrived after the handshake was confirmed, ignored.
    pub stale_dropped: u64,
    /// Packets dropped whole, unacknowledged, because their out-of-order stream data would
    /// have opened one segment too many (message stream or bulk channel, PROTOCOL.md §4.3):
    /// an honest sender resends them, a hostile one gains nothing.
    pub no_buffer_dropped: u64,
    /// RETRYs followed (address validation asked for by the server).
    pub retries_received: u64,
    /// Key updates of our sending keys.
    pub key_updates: u64,
    /// Key updates of the peer that we followed.
    pub key_updates_received: u64,
    /// Times the peer's address changed (and a path validation started), or we moved the
    /// connection to a probed address that answered.
    pub migrations: u64,
    /// Probes sent to another address of the peer (PROTOCOL.md §5.7.1).
    pub probes_sent: u64,
    /// Our probes that the probed address answered.
    pub probes_answered: u64,
    /// Messages handed to the transport by the application.
    pub messages_sent: u64,
    /// Messages the peer has acknowledged in full (reported by [`crate::Event::Acked`]).
    pub messages_acked: u64,
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

/// Endpoint-wide counters: datagrams in and out, handshakes, and the datagrams that could
/// not be attributed to one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Datagrams received in total.
    pub datagrams_received: u64,
    /// Bytes received in total, as UDP payload.
    pub bytes_received: u64,
    /// Datagrams sent in total (by connections, and stateless answers).
    pub datagrams_sent: u64,
    /// Bytes sent in total, as UDP payload.
    pub bytes_sent: u64,
    /// Connections created: ours opened, and the peers' validated INITIALs accepted.
    pub handshakes_started: u64,
    /// Handshakes that completed (the connection was reported connected).
    pub handshakes_completed: u64,
    /// Connections that ended before their handshake completed, by why.
    pub handshakes_failed: HandshakeFailures,
    /// INITIALs that failed authentication (damaged or forged).
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
    /// RETRYs sent: INITIALs without a valid token, answered statelessly.
    pub retries_sent: u64,
    /// INITIALs whose token was invalid or expired.
    pub invalid_tokens: u64,
    /// Validated INITIALs refused by the per-source handshake rate limit.
    pub rate_limited: u64,
    /// Stateless answers dropped because too many were queued.
    pub stateless_dropped: u64,
    /// RESETs sent in answer to DATA for a connection we do not know.
    pub resets_sent: u64,
    /// Authentic RESETs received (a connection ended because the peer forgot it).
    pub resets_received: u64,
    /// REFUSEs sent: INITIALs answered with "server full" because the connection table was
    /// full (each is also counted in `refused`).
    pub refusals_sent: u64,
    /// Calls the endpoint made into its connections to drive them (timers, transmit and
    /// event polls). It grows with what happens, not with how many connections there are.
    pub connection_visits: u64,
    /// Trace records dropped because the driver did not drain
    /// [`Endpoint::poll_trace`](crate::Endpoint::poll_trace) and
    /// [`MAX_TRACE_QUEUE`](crate::trace::MAX_TRACE_QUEUE) were waiting (tracing on only). A
    /// driver that drops records further on adds its own when it reports this:
    /// `chirp-transport` adds those its qlog writer could not keep up with.
    pub trace_dropped: u64,
}

/// Handshakes that failed, by why (a connection that ended before it was connected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeFailures {
    /// Nothing (more) was heard from the peer.
    pub timeout: u64,
    /// The peer refused it (REFUSE: server full, or not accepting).
    pub refused: u64,
    /// The peer's key was not the expected one, or was refused.
    pub key: u64,
    /// The peer broke the protocol (or its handshake message did not verify).
    pub protocol: u64,
    /// Closed (by either side) or reset before it completed.
    pub closed: u64,
}

/// Counters summed over every connection an endpoint has had, open or gone: what its
/// connections did in total, for metrics. (The per-connection figures are in
/// [`ConnectionStats`].)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionTotals {
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received and accepted.
    pub packets_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Of `packets_lost`, those found to be only late.
    pub spurious_losses: u64,
    /// Packets acknowledged.
    pub packets_acked: u64,
    /// Message-stream byte ranges sent again.
    pub retransmissions: u64,
    /// Proactive copies of small messages sent.
    pub redundant_copies: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// Packets dropped as duplicates or replays.
    pub duplicates_dropped: u64,
    /// Datagrams that failed authentication.
    pub corrupt_dropped: u64,
    /// Datagrams dropped as malformed.
    pub malformed_dropped: u64,
    /// Packets that arrived before their keys.
    pub undecryptable_dropped: u64,
    /// Handshake packets that arrived after the handshake.
    pub stale_dropped: u64,
    /// Key updates, ours and the peers'.
    pub key_updates: u64,
    /// Peer address changes.
    pub migrations: u64,
    /// Messages sent by the application.
    pub messages_sent: u64,
    /// Messages delivered to the application.
    pub messages_received: u64,
}

impl ConnectionTotals {
    /// Adds the counters of one connection.
    pub fn add(&mut self, s: &ConnectionStats) {
        self.packets_sent += s.packets_sent;
        self.packets_received += s.packets_received;
        self.packets_lost += s.packets_lost;
        self.spurious_losses += s.spurious_losses;
        self.packets_acked += s.packets_acked;
        self.retransmissions += s.retransmissions;
        self.redundant_copies += s.redundant_copies;
        self.ptos += s.ptos;
        self.duplicates_dropped += s.duplicates_dropped;
        self.corrupt_dropped += s.corrupt_dropped;
        self.malformed_dropped += s.malformed_dropped;
        self.undecryptable_dropped += s.undecryptable_dropped;
        self.stale_dropped += s.stale_dropped;
        self.key_updates += s.key_updates + s.key_updates_received;
        self.migrations += s.migrations;
        self.messages_sent += s.messages_sent;
        self.messages_received += s.messages_received;
    }
}

/// An endpoint's figures for metrics ([`crate::Endpoint::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointTotals {
    /// Endpoint-wide counters.
    pub endpoint: EndpointStats,
    /// Every connection's counters, summed.
    pub connections: ConnectionTotals,
    /// Connections now handshaking.
    pub handshaking: u64,
    /// Connections now established.
    pub established: u64,
    /// Connections now closing or draining.
    pub closing: u64,
}

/// One connection's path, as [`crate::Endpoint::sample_paths`] finds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathSample {
    /// Its smoothed round-trip time.
    pub srtt: Duration,
    /// The fraction of its packets lost since the last sample, of those acknowledged or
    /// declared lost since then (`None`: none were).
    pub loss: Option<f64>,
}
