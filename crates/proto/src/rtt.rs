//! RTT estimation, as RFC 9002 §5, and the standing RTT (Copa's `RTTstanding`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Smoothed RTT, its variance, and the minimum seen (RFC 9002 §5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    latest: Duration,
    smoothed: Duration,
    var: Duration,
    min: Duration,
    has_sample: bool,
}

impl RttEstimator {
    /// Before any sample, RFC 9002 assumes `initial` (333 ms) with variance `initial / 2`.
    pub(crate) fn new(initial: Duration) -> Self {
        Self {
            latest: initial,
            smoothed: initial,
            var: initial / 2,
            min: initial,
            has_sample: false,
        }
    }

    /// Folds in one sample. `ack_delay` is what the peer reported, already capped by the caller
    /// at the peer's `max_ack_delay`; it is only subtracted when the result stays above min_rtt,
    /// so a lying peer cannot shrink the estimate below what was observed.
    /// Returns the sample with the ack delay taken out as described.
    pub(crate) fn update(&mut self, sample: Duration, ack_delay: Duration) -> Duration {
        self.latest = sample;
        if !self.has_sample {
            self.has_sample = true;
            self.min = sample;
            self.smoothed = sample;
            self.var = sample / 2;
            return sample;
        }
        self.min = self.min.min(sample);
        let adjusted = if sample >= self.min + ack_delay {
            sample - ack_delay
        } else {
            sample
        };
        let diff = self.smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = (self.smoothed * 7 + adjusted) / 8;
        adjusted
    }

    /// Smoothed RTT.
    pub(crate) fn smoothed(&self) -> Duration {
        self.smoothed
    }

    /// RTT variance.
    pub(crate) fn var(&self) -> Duration {
        self.var
    }

    /// Latest sample.
    pub(crate) fn latest(&self) -> Duration {
        self.latest
    }

    /// Smallest sample seen.
    pub(crate) fn min(&self) -> Duration {
        self.min
    }

    /// RFC 9002 §6.2.1: srtt + max(4 * rttvar, granularity) + max_ack_delay.
    pub(crate) fn pto_base(&self, max_ack_delay: Duration) -> Duration {
        self.smoothed + (self.var * 4).max(GRANULARITY) + max_ack_delay
    }

    /// RFC 9002 §6.1.2: 9/8 * max(srtt, latest), at least the timer granularity.
    pub(crate) fn loss_delay(&self) -> Duration {
        (self.smoothed.max(self.latest) * 9 / 8).max(GRANULARITY)
    }
}

/// The smallest RTT sample of the last window (one smoothed RTT), and of the last
/// [`MIN_STANDING_SAMPLES`] samples however old: the delay of the path plus the queue that
/// *stands* in it. Jitter raises single samples but rarely all of a window's, so unlike the
/// smoothed RTT this rises only with a standing queue (Copa, NSDI 2018, uses the same estimate
/// for the same reason). That takes a few samples: a small window gets one or two per RTT,
/// and with 0–30 ms of jitter on each hop of a 40 ms path a lone sample exceeded the queue
/// threshold in four loss periods of ten, each halving a window that then gave still fewer
/// samples (issue 13). A sliding-window minimum: samples kept in increasing order, each pushed
/// and popped once.
#[derive(Debug, Clone, Default)]
pub(crate) struct StandingRtt {
    /// `(taken at, sequence number, sample)`, increasing in both time and sample.
    samples: VecDeque<(Instant, u64, Duration)>,
    /// Samples pushed so far.
    pushed: u64,
}

/// Samples the standing RTT always covers, even when they are older than its window.
pub(crate) const MIN_STANDING_SAMPLES: u64 = 4;

/// Samples kept at most (a bound for memory; the window rarely holds more than a few).
const STANDING_SAMPLES: usize = 64;

impl StandingRtt {
    /// Adds a sample taken at `now`, forgetting those older than `window`.
    pub(crate) fn push(&mut self, now: Instant, rtt: Duration, window: Duration) {
        while self.samples.back().is_some_and(|&(_, _, r)| r >= rtt) {
            self.samples.pop_back();
        }
        if self.samples.len() == STANDING_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, self.pushed, rtt));
        self.pushed += 1;
        self.expire(now, window);
    }

    /// The smallest sample of the last `window` and the last [`MIN_STANDING_SAMPLES`];
    /// `None` before the first sample.
    pub(crate) fn get(&mut self, now: Instant, window: Duration) -> Option<Duration> {
        self.expire(now, window);
        self.samples.front().map(|&(_, _, r)| r)
    }

    /// Forgets samples older than `window` that are not among the last
    /// [`MIN_STANDING_SAMPLES`].
    fn expire(&mut self, now: Instant, window: Duration) {
        while self.samples.front().is_some_and(|&(t, i, _)| {
            now.saturating_duration_since(t) > window && i + MIN_STANDING_SAMPLES < self.pushed
        }) {
            self.samples.pop_front();
        }
    }
}

/// The timer granularity of RFC 9002 (1 ms).
pub(crate) const GRANULARITY: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn standing_rtt_is_the_window_minimum() {
        let t0 = Instant::now();
        let w = 100 * MS;
        let mut s = StandingRtt::default();
        assert_eq!(s.get(t0, w), None);
        s.push(t0, 50 * MS, w);
        s.push(t0 + 10 * MS, 80 * MS, w);
        s.push(t0 + 20 * MS, 60 * MS, w);
        assert_eq!(s.get(t0 + 20 * MS, w), Some(50 * MS));
        // Out of the window but among the last four samples: 50 ms still counts.
        assert_eq!(s.get(t0 + 105 * MS, w), Some(50 * MS));
        s.push(t0 + 106 * MS, 70 * MS, w);
        s.push(t0 + 107 * MS, 90 * MS, w);
        // Now 50 ms is both older than the window and fifth from last: the smallest of the
        // rest is 60 (the 80 before it can never be a minimum again), though 60 is out of the
        // window too.
        assert_eq!(s.get(t0 + 108 * MS, w), Some(60 * MS));
        // Long after: the last four samples stand (80 left when 60 came).
        assert_eq!(s.get(t0 + 500 * MS, w), Some(60 * MS));
        s.push(t0 + 501 * MS, 95 * MS, w);
        s.push(t0 + 502 * MS, 96 * MS, w);
        // 60 is fifth from last now: the smallest of 70, 90, 95, 96.
        assert_eq!(s.get(t0 + 503 * MS, w), Some(70 * MS));
        for i in 0..200 {
            s.push(
                t0 + 600 * MS + i * MS / 10,
                Duration::from_micros(90_000 + i as u64),
                w,
            );
        }
        // 200 rising samples in one window: only the newest 64 are kept, so the estimate errs
        // high (towards "a queue stands"), the conservative side.
        assert_eq!(s.samples.len(), STANDING_SAMPLES);
        assert_eq!(s.get(t0 + 620 * MS, w), Some(Duration::from_micros(90_136)));
    }

    #[test]
    fn first_sample_then_ewma() {
        let mut r = RttEstimator::new(333 * MS);
        assert_eq!(r.pto_base(Duration::ZERO), 333 * MS + 4 * (333 * MS / 2));
        r.update(100 * MS, Duration::ZERO);
        assert_eq!(
            (r.smoothed(), r.var(), r.min()),
            (100 * MS, 50 * MS, 100 * MS)
        );
        r.update(60 * MS, Duration::ZERO);
        // var = (3*50 + |100-60|)/4 = 47.5; srtt = (7*100 + 60)/8 = 95.
        assert_eq!(r.var(), Duration::from_micros(47_500));
        assert_eq!(r.smoothed(), 95 * MS);
        assert_eq!(r.min(), 60 * MS);
    }

    #[test]
    fn ack_delay_not_subtracted_below_min_rtt() {
        let mut r = RttEstimator::new(333 * MS);
        r.update(40 * MS, Duration::ZERO);
        r.update(45 * MS, 10 * MS); // 45 - 10 < 40: keep 45.
        assert_eq!(r.smoothed(), (40 * MS * 7 + 45 * MS) / 8);
        r.update(60 * MS, 10 * MS); // 60 - 10 >= 40: use 50.
        let expect = ((40 * MS * 7 + 45 * MS) / 8 * 7 + 50 * MS) / 8;
        assert_eq!(r.smoothed(), expect);
    }

    #[test]
    fn loss_delay_is_nine_eighths_of_max() {
        let mut r = RttEstimator::new(333 * MS);
        r.update(80 * MS, Duration::ZERO);
        assert_eq!(r.loss_delay(), 90 * MS);
    }
}
