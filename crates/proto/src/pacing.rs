//! Pacing: a sender's packets spread over the round trip instead of sent in bursts.
//!
//! Without pacing, a bulk sender puts a whole window on the wire as fast as the socket takes
//! it, and acknowledgements release the next window in bursts too. A bottleneck's buffer then
//! sees a burst of a window arrive at the host's speed and overflows long before the link is
//! full: the losses halve the window, and a transfer over a path with a shallow buffer runs
//! well below its rate (RFC 9002 §7.7; issue 18). So the connection sends at a rate of its
//! window per smoothed RTT times a gain (twice that in slow start, so that slow start still
//! doubles the window each round trip, 1.25 times after it, as Linux does), from a token
//! bucket that holds a burst of a few milliseconds of that rate (10 to 256 datagrams, as
//! quinn's pacer): an idle connection has a full bucket, so a chat message never waits for
//! the pacer, and a driver whose timers have a millisecond's granularity still keeps the
//! rate.
//!
//! The pacer is sans-IO like the rest: it reads no clock. The connection asks it when a
//! packet may go ([`Pacer::ready_at`], a pure function of its state, so that `poll_timeout`
//! can report it), brings it up to `now` before sending ([`Pacer::refill`]) and tells it
//! what went ([`Pacer::on_sent`]).

use std::time::{Duration, Instant};

/// The bucket holds this much time of the pacing rate...
const BURST_INTERVAL: Duration = Duration::from_millis(2);
/// ... but never fewer datagrams than this (a driver's timer fires about once a millisecond,
/// and a new connection's first flight goes at once) ...
const MIN_BURST_DATAGRAMS: u64 = 10;
/// ... nor more than this.
const MAX_BURST_DATAGRAMS: u64 = 256;
/// Pacing gain in slow start, as a fraction: the window doubles every round trip, so packets
/// go at twice the rate of the last window.
const SLOW_START_GAIN: (u64, u64) = (2, 1);
/// Pacing gain after slow start: a little faster than the window per RTT, so that the pacer
/// never holds back a window that the congestion controller allows (RFC 9002 §7.7's N).
const AVOIDANCE_GAIN: (u64, u64) = (5, 4);

/// The rate to pace at: `window` bytes per `rtt`, times a gain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacingRate {
    window: u64,
    rtt: Duration,
    gain: (u64, u64),
}

impl PacingRate {
    /// The rate for a congestion window of `window` bytes over a smoothed RTT of `rtt`, in
    /// slow start or not.
    pub(crate) fn new(window: u64, rtt: Duration, slow_start: bool) -> Self {
        Self {
            window,
            rtt,
            gain: if slow_start {
                SLOW_START_GAIN
            } else {
                AVOIDANCE_GAIN
            },
        }
    }

    /// Bytes per `rtt × gain.1` nanoseconds, as numerator and denominator of bytes per
    /// nanosecond; `None` if the rate is unbounded (an RTT of zero, as on a path with no delay
    /// at all) or zero.
    fn per_nano(&self) -> Option<(u128, u128)> {
        let num = u128::from(self.window) * u128::from(self.gain.0);
        let den = self.rtt.as_nanos() * u128::from(self.gain.1);
        (num > 0 && den > 0).then_some((num, den))
    }
}

/// A token bucket in bytes, refilled at the pacing rate.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    max_datagram: u64,
    /// Bytes that may be sent now (as of `updated`).
    tokens: u64,
    /// The bucket's size for the window and RTT it was last computed for.
    capacity: u64,
    sized_for: (u64, Duration),
    /// When `tokens` was last brought up to date (`None`: never; the bucket is full).
    updated: Option<Instant>,
}

impl Pacer {
    /// A full bucket for datagrams of `max_datagram` bytes.
    pub(crate) fn new(max_datagram: usize) -> Self {
        let max_datagram = max_datagram as u64;
        let capacity = MIN_BURST_DATAGRAMS * max_datagram;
        Self {
            max_datagram,
            tokens: capacity,
            capacity,
            sized_for: (0, Duration::ZERO),
            updated: None,
        }
    }

    /// Datagrams are now up to `max_datagram` bytes (path MTU discovery): the bucket is
    /// sized for them from the next refill on.
    pub(crate) fn set_max_datagram(&mut self, max_datagram: usize) {
        self.max_datagram = max_datagram as u64;
        self.sized_for = (0, Duration::ZERO);
    }

    /// The bucket's size at `rate`: [`BURST_INTERVAL`] of it, within
    /// [`MIN_BURST_DATAGRAMS`]..=[`MAX_BURST_DATAGRAMS`] datagrams.
    fn capacity_for(&self, rate: PacingRate) -> u64 {
        let burst = rate.per_nano().map_or(u128::MAX, |(num, den)| {
            BURST_INTERVAL.as_nanos().saturating_mul(num) / den
        });
        let min = MIN_BURST_DATAGRAMS * self.max_datagram;
        let max = MAX_BURST_DATAGRAMS * self.max_datagram;
        u64::try_from(burst).unwrap_or(u64::MAX).clamp(min, max)
    }

    /// Brings the bucket up to `now` at `rate`. Call before sending at `now`.
    pub(crate) fn refill(&mut self, now: Instant, rate: PacingRate) {
        if self.sized_for != (rate.window, rate.rtt) {
            self.sized_for = (rate.window, rate.rtt);
            self.capacity = self.capacity_for(rate);
            self.tokens = self.tokens.min(self.capacity);
        }
        let Some(updated) = self.updated else {
            self.updated = Some(now);
            return;
        };
        let Some((num, den)) = rate.per_nano() else {
            // No delay to spread packets over: nothing to pace.
            self.tokens = self.capacity;
            self.updated = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(updated).as_nanos();
        let added = elapsed.saturating_mul(num) / den;
        if added == 0 {
            // Keep the time: a connection polled more often than a byte's worth of time
            // would otherwise never earn a token.
            return;
        }
        let tokens = u128::from(self.tokens).saturating_add(added);
        self.tokens = u64::try_from(tokens).unwrap_or(u64::MAX).min(self.capacity);
        self.updated = Some(now);
    }

    /// When a full-size datagram may be sent at `rate`: `None` if at once (as of the last
    /// [`Self::refill`]), else the instant at which the bucket will hold enough.
    pub(crate) fn ready_at(&self, rate: PacingRate) -> Option<Instant> {
        let need = self.max_datagram.min(self.capacity);
        if self.tokens >= need {
            return None;
        }
        let updated = self.updated?;
        let (num, den) = rate.per_nano()?;
        let missing = u128::from(need - self.tokens);
        // Rounded up, so that a refill at that instant finds enough.
        let nanos = (missing * den).div_ceil(num);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Some(updated.checked_add(wait).unwrap_or(updated))
    }

    /// `bytes` of an ack-eliciting packet were sent.
    pub(crate) fn on_sent(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Sends as fast as the pacer lets full datagrams go for `span`, from `t0`; returns the
    /// send times.
    fn run(p: &mut Pacer, t0: Instant, rate: PacingRate, span: Duration) -> Vec<Duration> {
        let mut now = t0;
        let mut sent = Vec::new();
        for _ in 0..1_000_000 {
            p.refill(now, rate);
            match p.ready_at(rate) {
                Some(t) if t > now => now = t,
                _ => {
                    p.on_sent(1_200);
                    sent.push(now - t0);
                }
            }
            if now - t0 >= span {
                return sent;
            }
        }
        panic!("no progress");
    }

    #[test]
    fn an_idle_connection_sends_a_burst_then_the_rate() {
        let t0 = Instant::now();
        // 120,000 bytes per 40 ms = 3 MB/s; after slow start, 1.25 times that.
        let rate = PacingRate::new(120_000, 40 * MS, false);
        let mut p = Pacer::new(1_200);
        let sent = run(&mut p, t0, rate, 1_000 * MS);
        // The first ten go at once (a full bucket of the minimum burst: 2 ms of the rate is
        // 7,500 bytes, below ten datagrams).
        assert!(sent[..10].iter().all(|t| t.is_zero()), "{:?}", &sent[..12]);
        assert!(sent[10] > Duration::ZERO);
        // Then 3.75 MB/s: 3,125 datagrams a second, 320 µs apart.
        let after = sent.len() - 10;
        assert!((3_120..=3_126).contains(&after), "{after} paced in 1 s");
        let gap = sent[100] - sent[99];
        assert!(gap >= Duration::from_micros(319) && gap <= Duration::from_micros(321));
    }

    #[test]
    fn slow_start_paces_at_twice_the_window_per_rtt() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_200);
        let rate = PacingRate::new(120_000, 40 * MS, true);
        let sent = run(&mut p, t0, rate, 1_000 * MS);
        // 6 MB/s: 5,000 datagrams a second, after the first burst.
        let after = sent.len() - 10;
        assert!((4_995..=5_001).contains(&after), "{after} paced in 1 s");
    }

    #[test]
    fn the_bucket_refills_only_to_its_capacity() {
        let t0 = Instant::now();
        // A large window: 2 ms of 1.25 × 12.5 MB/s is 31,250 bytes, 26 datagrams' worth.
        let rate = PacingRate::new(500_000, 40 * MS, false);
        let mut p = Pacer::new(1_200);
        let sent = run(&mut p, t0, rate, 10 * MS);
        assert!(sent.len() > 100);
        // Idle for a second: the bucket holds 2 ms of the rate, no more.
        let t1 = t0 + 1_000 * MS;
        let burst = run(&mut p, t1, rate, Duration::from_nanos(1));
        let at_once = burst.iter().filter(|t| t.is_zero()).count();
        assert_eq!(at_once, 31_250 / 1_200, "{burst:?}");
        // A tiny window: never fewer than ten datagrams in a burst.
        let mut p = Pacer::new(1_200);
        let rate = PacingRate::new(2_400, 40 * MS, false);
        p.refill(t0, rate);
        for _ in 0..10 {
            assert_eq!(p.ready_at(rate), None);
            p.on_sent(1_200);
        }
        assert!(p.ready_at(rate).is_some_and(|t| t > t0));
    }

    #[test]
    fn no_rtt_means_no_pacing_and_frequent_polls_still_earn_tokens() {
        let t0 = Instant::now();
        let rate = PacingRate::new(12_000, Duration::ZERO, true);
        let mut p = Pacer::new(1_200);
        p.refill(t0, rate);
        for _ in 0..100 {
            p.on_sent(1_200);
            p.refill(t0, rate);
            assert_eq!(p.ready_at(rate), None);
        }
        // 3/8 of a byte per µs: polled every microsecond, the bucket still fills.
        let rate = PacingRate::new(12_001, 40 * MS, false);
        let mut p = Pacer::new(1_200);
        p.refill(t0, rate);
        while p.ready_at(rate).is_none() {
            p.on_sent(1_200);
        }
        let ready = p.ready_at(rate).expect("empty bucket");
        let mut now = t0;
        let mut polls = 0u32;
        while p.ready_at(rate).is_some() {
            now += Duration::from_micros(1);
            p.refill(now, rate);
            polls += 1;
            assert!(polls < 20_000_000, "never refilled");
        }
        assert!(now >= ready, "ready early: {now:?} < {ready:?}");
    }
}
