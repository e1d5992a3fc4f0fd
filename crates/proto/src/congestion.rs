//! NewReno congestion control, as RFC 9002 §7.
//!
//! Chat traffic is almost always application-limited, so the window rarely binds; it exists so
//! that a bulk sender (large messages, a backlog after an outage) backs off on a congested path
//! instead of making it worse, which raw UDP never does.

use std::time::Instant;

/// Congestion window state.
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    max_datagram: u64,
    window: u64,
    ssthresh: u64,
    recovery_start: Option<Instant>,
    bytes_acked: u64,
}

impl NewReno {
    /// Initial window: 10 datagrams, capped at max(14720, 2 * datagram) (RFC 9002 §7.2).
    pub(crate) fn new(max_datagram: usize) -> Self {
        let max_datagram = max_datagram as u64;
        let window = (10 * max_datagram).min(14_720.max(2 * max_datagram));
        Self {
            max_datagram,
            window,
            ssthresh: u64::MAX,
            recovery_start: None,
            bytes_acked: 0,
        }
    }

    /// The current window in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    fn minimum(&self) -> u64 {
        2 * self.max_datagram
    }

    /// A packet of `bytes` sent at `sent` was acknowledged.
    pub(crate) fn on_ack(&mut self, sent: Instant, bytes: u64, app_limited: bool) {
        if self.recovery_start.is_some_and(|start| sent <= start) || app_limited {
            // Acks of packets sent before recovery began don't grow the window, and neither do
            // acks while the application, not the window, limits sending (RFC 9002 §7.8).
            return;
        }
        if self.window < self.ssthresh {
            self.window += bytes;
        } else {
            self.bytes_acked += bytes;
            if self.bytes_acked >= self.window {
                self.bytes_acked -= self.window;
                self.window += self.max_datagram;
            }
        }
    }

    /// Packets were declared lost; `largest_lost_sent` is when the newest of them was sent.
    pub(crate) fn on_congestion_event(&mut self, now: Instant, largest_lost_sent: Instant) {
        if self
            .recovery_start
            .is_some_and(|start| largest_lost_sent <= start)
        {
            return; // Already reacted to this loss episode.
        }
        self.recovery_start = Some(now);
        self.window = (self.window / 2).max(self.minimum());
        self.ssthresh = self.window;
        self.bytes_acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn halves_once_per_episode_and_grows() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        assert_eq!(cc.window(), 12_000);
        cc.on_ack(t0, 1200, false);
        assert_eq!(cc.window(), 13_200);
        let t1 = t0 + Duration::from_millis(10);
        cc.on_congestion_event(t1, t0);
        assert_eq!(cc.window(), 6_600);
        // A second loss from the same flight does not halve again.
        cc.on_congestion_event(t1 + Duration::from_millis(1), t0);
        assert_eq!(cc.window(), 6_600);
        // Congestion avoidance: one datagram per window of acked bytes.
        for _ in 0..6 {
            cc.on_ack(t1 + Duration::from_millis(5), 1100, false);
        }
        assert_eq!(cc.window(), 7_800);
        cc.on_ack(t1 + Duration::from_millis(5), 1100, true);
        assert_eq!(
            cc.window(),
            7_800,
            "app-limited acks do not grow the window"
        );
        for i in 0..10 {
            let t = t1 + Duration::from_millis(20 + i);
            cc.on_congestion_event(t, t);
        }
        assert_eq!(cc.window(), 2_400, "never below two datagrams");
    }
}
