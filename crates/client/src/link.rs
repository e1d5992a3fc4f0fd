//! The link figures of the status bar: RTT, retransmissions, the `/stats` counters, and the
//! loss over the last minute, computed from the connection's cumulative lost/acknowledged
//! packet counters over a sliding window. Used by both UI bridges (chat and peer).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chirp_proto::ConnectionStats;
use chirp_tui::LinkStatus;

/// How often the link statistics are refreshed (each refresh is a sparkline point).
pub const STATS_EVERY: Duration = Duration::from_secs(1);
/// The window of "loss over the last minute".
const LOSS_WINDOW: Duration = Duration::from_secs(60);

/// Loss over a sliding window, from cumulative lost/acknowledged packet counters.
///
/// Keeps one sample per statistics answer (about one a second, so at most ~61 samples) and
/// compares the newest with the oldest still inside the window. A counter going backwards means
/// a new connection (counters restart), which restarts the window.
#[derive(Debug, Default)]
pub struct LossWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl LossWindow {
    /// Records the cumulative counters at `now`; returns the loss in percent over the window,
    /// or over the whole connection if nothing was sent in the window (`None` before any
    /// packet was lost or acknowledged at all).
    pub fn record(&mut self, now: Instant, lost: u64, acked: u64) -> Option<f64> {
        if self
            .samples
            .back()
            .is_some_and(|&(_, l, a)| lost < l || acked < a)
        {
            self.samples.clear();
        }
        self.samples.push_back((now, lost, acked));
        // Keep the newest sample at or before the window's start as the baseline, so a full
        // minute is covered even though samples are not exactly a second apart.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, ..)| now.saturating_duration_since(t) >= LOSS_WINDOW)
        {
            self.samples.pop_front();
        }
        let &(_, l0, a0) = self.samples.front()?;
        let (dl, da) = if self.samples.len() == 1 {
            // The first sample of a connection: everything so far is inside the window.
            (lost, acked)
        } else {
            (lost - l0, acked - a0)
        };
        if dl + da == 0 {
            // Nothing sent in the window (a quiet link): the connection's figure so far, rather
            // than none (the status bar used to lose its loss figure a second after a burst).
            let all = lost + acked;
            return (all > 0).then(|| lost as f64 * 100.0 / all as f64);
        }
        let total = dl + da;
        (total > 0).then(|| dl as f64 * 100.0 / total as f64)
    }

    /// Forgets everything (the connection is gone).
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

/// A statistics snapshot into the status bar: smoothed RTT, loss over the last minute (of
/// packets sent after the handshake), retransmissions and the `/stats` counters.
pub fn update_link(
    link: &mut LinkStatus,
    loss: &mut LossWindow,
    s: &ConnectionStats,
    now: Instant,
) {
    link.rtt = Some(s.srtt);
    // Handshake packets lost before the other side was listening are not the path's loss, and
    // neither are packets declared lost that were acknowledged later (reordering).
    let lost = s
        .packets_lost
        .saturating_sub(s.handshake_packets_lost)
        .saturating_sub(s.spurious_losses);
    link.loss_pct_last_minute = loss.record(now, lost, s.packets_acked);
    link.retransmissions = s.retransmissions;
    link.counters = counters(s);
}

/// The counters of the `/stats` panel, in display order.
fn counters(s: &ConnectionStats) -> Vec<(String, u64)> {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    [
        ("packets sent", s.packets_sent),
        ("packets received", s.packets_received),
        ("packets acked", s.packets_acked),
        ("packets lost", s.packets_lost),
        ("… found late (reordered)", s.spurious_losses),
        ("… of them in the handshake", s.handshake_packets_lost),
        ("retransmissions", s.retransmissions),
        ("redundant copies", s.redundant_copies),
        ("… of them at the start", s.startup_copies),
        ("duplicates dropped", s.duplicates_dropped),
        ("out of order", s.out_of_order),
        ("corrupt dropped", s.corrupt_dropped),
        ("malformed dropped", s.malformed_dropped),
        ("probe timeouts", s.ptos),
        ("loss periods taken for random", s.random_loss_periods),
        ("loss periods taken for congestion", s.congestion_periods),
        ("persistent congestion", s.persistent_congestion),
        ("bytes sent", s.bytes_sent),
        ("bytes received", s.bytes_received),
        ("messages sent", s.messages_sent),
        ("messages received", s.messages_received),
        ("messages acked", s.messages_acked),
        ("min rtt µs", us(s.min_rtt)),
        ("rtt variance µs", us(s.rttvar)),
        ("cwnd bytes", s.cwnd),
        ("bytes in flight", s.bytes_in_flight),
        ("key updates", s.key_updates),
        ("migrations", s.migrations),
        ("path probes sent", s.probes_sent),
        ("… answered", s.probes_answered),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_counted_over_the_last_minute_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LossWindow::default();
        assert_eq!(w.record(t0, 0, 0), None, "nothing sent yet");
        // 10 lost of 100 in the first seconds.
        assert_eq!(w.record(t0 + s(1), 10, 90), Some(10.0));
        // A clean minute follows: 300 acked, nothing lost.
        for i in 2..=59 {
            w.record(t0 + s(i), 10, 90 + i * 5);
        }
        // The loss happened in the first second, (0 s, 1 s]: inside the minute up to 60 s.
        let inside = w
            .record(t0 + s(60), 10, 390)
            .expect("packets in the window");
        assert_eq!(inside, 2.5, "10 lost of 400");
        // Once that second has left the window, the loss is zero.
        let after = w
            .record(t0 + s(61), 10, 395)
            .expect("packets in the window");
        assert_eq!(after, 0.0);
        assert!(w.samples.len() <= 62, "bounded: {}", w.samples.len());
        // A new connection's counters start from zero: the window restarts.
        assert_eq!(w.record(t0 + s(62), 1, 3), Some(25.0));
        w.reset();
        assert_eq!(w.record(t0 + s(63), 0, 0), None);
    }

    #[test]
    fn a_quiet_connection_keeps_its_loss_figure_for_its_first_minute() {
        // First sampled after its traffic, then idle: the figure stays (it used to vanish at
        // the second sample, and a status bar lost its "loss 0.0%").
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LossWindow::default();
        assert_eq!(w.record(t0, 1, 19), Some(5.0));
        assert_eq!(w.record(t0 + s(1), 1, 19), Some(5.0));
        assert_eq!(w.record(t0 + s(30), 1, 19), Some(5.0));
    }

    #[test]
    fn handshake_losses_are_not_link_loss() {
        // Started before the other side: 2 INITIALs went nowhere, then 10 packets acked.
        let t0 = Instant::now();
        let (mut link, mut loss) = (LinkStatus::default(), LossWindow::default());
        let s = ConnectionStats {
            packets_lost: 2,
            handshake_packets_lost: 2,
            packets_acked: 10,
            ..ConnectionStats::default()
        };
        update_link(&mut link, &mut loss, &s, t0);
        assert_eq!(link.loss_pct_last_minute, Some(0.0));
        assert!(link.counters.contains(&("packets lost".to_owned(), 2)));
        // A data packet lost later is the path's.
        let s = ConnectionStats {
            packets_lost: 3,
            packets_acked: 19,
            ..s
        };
        update_link(&mut link, &mut loss, &s, t0 + Duration::from_secs(1));
        assert_eq!(
            link.loss_pct_last_minute,
            Some(10.0),
            "1 lost, 9 acked since"
        ); // A loss that proved spurious (the packet was only late) is not the path's either.
        let s = ConnectionStats {
            spurious_losses: 1,
            packets_acked: 29,
            ..s
        };
        update_link(&mut link, &mut loss, &s, t0 + Duration::from_secs(2));
        assert_eq!(
            link.loss_pct_last_minute,
            Some(0.0),
            "the one loss was late, not lost"
        );
        assert!(
            link.counters
                .contains(&("… found late (reordered)".to_owned(), 1))
        );
    }
}
