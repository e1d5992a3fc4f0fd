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
    /// The current recovery period: numbered, with the state before it began (to undo it)
    /// and how many of the losses declared in it have not been found spurious yet.
    episode: u64,
    undo: Option<Undo>,
    episode_losses: u64,
}

/// The window state before a recovery period began.
#[derive(Debug, Clone, Copy)]
struct Undo {
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
            episode: 0,
            undo: None,
            episode_losses: 0,
        }
    }

    /// The current window in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// The current recovery period (0 before the first).
    pub(crate) fn episode(&self) -> u64 {
        self.episode
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

    /// `count` packets were declared lost; `largest_lost_sent` is when the newest of them was
    /// sent. Returns the recovery period they belong to (for [`Self::on_spurious_loss`]).
    pub(crate) fn on_congestion_event(
        &mut self,
        now: Instant,
        largest_lost_sent: Instant,
        count: u64,
    ) -> u64 {
        if self
            .recovery_start
            .is_some_and(|start| largest_lost_sent <= start)
        {
            // Already reacted to this loss episode.
            self.episode_losses += count;
            return self.episode;
        }
        self.episode += 1;
        self.undo = Some(Undo {
            window: self.window,
            ssthresh: self.ssthresh,
            recovery_start: self.recovery_start,
            bytes_acked: self.bytes_acked,
        });
        self.episode_losses = count;
        self.recovery_start = Some(now);
        self.window = (self.window / 2).max(self.minimum());
        self.ssthresh = self.window;
        self.bytes_acked = 0;
        self.episode
    }

    /// A packet declared lost in recovery period `episode` was acknowledged after all. Once
    /// every loss of the current period has turned out spurious, the period is undone: the
    /// window and threshold go back to what they were before it (RFC 8985 §7.3 spirit; TCP's
    /// undo of a spurious fast retransmit).
    pub(crate) fn on_spurious_loss(&mut self, episode: u64) {
        if episode != self.episode || self.episode_losses == 0 {
            return;
        }
        self.episode_losses -= 1;
        if self.episode_losses == 0
            && let Some(u) = self.undo.take()
        {
            self.window = self.window.max(u.window);
            self.ssthresh = u.ssthresh;
            self.recovery_start = u.recovery_start;
            self.bytes_acked = u.bytes_acked;
        }
    }

    /// Persistent congestion (RFC 9002 §7.6): the window collapses to the minimum and slow
    /// start begins again. Never undone.
    pub(crate) fn on_persistent_congestion(&mut self) {
        self.window = self.minimum();
        self.bytes_acked = 0;
        self.recovery_start = None;
        self.undo = None;
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
        cc.on_congestion_event(t1, t0, 1);
        assert_eq!(cc.window(), 6_600);
        // A second loss from the same flight does not halve again.
        cc.on_congestion_event(t1 + Duration::from_millis(1), t0, 1);
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
            cc.on_congestion_event(t, t, 1);
        }
        assert_eq!(cc.window(), 2_400, "never below two datagrams");
    }

    #[test]
    fn spurious_losses_undo_the_period() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        let t1 = t0 + Duration::from_millis(10);
        let e = cc.on_congestion_event(t1, t0, 1);
        let e2 = cc.on_congestion_event(t1, t0, 1);
        assert_eq!((e, cc.window()), (e2, 6_000));
        cc.on_spurious_loss(e);
        assert_eq!(cc.window(), 6_000, "one loss of the period is still real");
        cc.on_spurious_loss(e);
        assert_eq!(cc.window(), 12_000, "all spurious: undone");
        // A stale period is not undone again.
        cc.on_spurious_loss(e);
        assert_eq!(cc.window(), 12_000);
        let t2 = t1 + Duration::from_millis(10);
        let e3 = cc.on_congestion_event(t2, t2, 1);
        cc.on_spurious_loss(e);
        assert_eq!(
            cc.window(),
            6_000,
            "an older period's loss does not undo a newer one"
        );
        cc.on_spurious_loss(e3);
        assert_eq!(cc.window(), 12_000);
    }

    #[test]
    fn persistent_congestion_collapses_and_is_not_undone() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        let e = cc.on_congestion_event(t0, t0, 1);
        cc.on_persistent_congestion();
        assert_eq!(cc.window(), 2_400);
        cc.on_spurious_loss(e);
        assert_eq!(cc.window(), 2_400);
        // Slow start again (ssthresh stays at the halved window).
        cc.on_ack(t0 + Duration::from_millis(1), 1200, false);
        assert_eq!(cc.window(), 3_600);
    }
}
