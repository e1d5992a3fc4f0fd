//! Telling a bottleneck buffer too shallow to show a queue from random loss (issue 18).
//!
//! The congestion controller takes a loss for random when no queue of ours stands in the path
//! (PROTOCOL.md §6.7, `Connection::random_loss_base`), and then only caps the window at twice
//! the bandwidth-delay product shown. Behind a drop-tail buffer of a datagram or two (a
//! policer, a shallow switch buffer) the queue never grows enough to show in the RTT: every
//! loss is ours and is taken for random, the window sits at twice what the path holds, and
//! the buffer overflows all the time (37 % of the packets dropped at 1,200-byte datagrams on a
//! 250 kB/s link with a 2,400-byte buffer; with 1,452-byte datagrams, one per buffer, 70 %,
//! and a fifth of the rate).
//!
//! The difference shows when the sender slows down: random loss stays where it was, losses of
//! ours stop. So when a loss taken for random brings the window down to its cap (the window,
//! not the application, limits the sender) while the loss rate is high (at least
//! [`TEST_LOSS_RATE`]), the connection **tests**. It does what a shallow buffer needs: the
//! window capped at one BDP (`NewReno::set_shallow`), the pacer at the window's rate without
//! bursts (`PacingRate::smooth`), one probe per probe timeout, and no halving until the test
//! is decided (`Connection::held_by_shallow_test`). It counts the outcomes of the packets sent
//! from then on. After [`TEST_OUTCOMES`] of them (within [`TEST_SRTTS`] smoothed RTTs), the
//! buffer is taken for **shallow** if their loss rate fell to at most [`LOSS_FELL`] of the
//! rate before the test while the delivery rate held (the last interval's above
//! [`RATE_HELD`] of the best before: the link stayed full at the lower window). Then all of
//! that but the hold on halving stays for [`VERDICT_LIFETIME`], and the datagram size goes
//! back to the base (`Pmtud::on_shallow_buffer`: a buffer of 2,400 bytes holds two datagrams
//! of 1,200 and one of 1,452, and a paced sender needs room for one behind the one going out,
//! or it loses every other datagram whenever its rate exceeds the link's); once it lapses, the
//! next high loss rate tests again. Otherwise the loss is **random**: the window and threshold
//! go back to what they were before the test (a test costs a few round trips at one BDP, not
//! a halving), and no test runs again for [`VERDICT_LIFETIME`]. Random loss (1 to 35 % in the
//! tests) does not fall when the window does; on a path with no bottleneck the delivery rate
//! falls with the window as well.
//!
//! Sans-IO and O(1) per packet: one comparison per acknowledged or lost packet while a test
//! runs, nothing otherwise; a connection that never tests pays 8 bytes.

use std::time::{Duration, Instant};

/// A test starts only while the loss rate (the estimate of PROTOCOL.md §6.8) is at least this:
/// a shallow buffer behind a window of twice its BDP loses a third of the packets or more;
/// random loss this high with a bottleneck that keeps the delivery rate through a test is
/// rare, and a test it starts costs a few round trips at one BDP.
pub(crate) const TEST_LOSS_RATE: f64 = 0.15;
/// Outcomes (acknowledged or lost) of packets sent since the test began that decide it: at
/// 15 % random loss, 32 packets lose at most one with probability 3.7 %, and such a run also
/// has to keep the delivery rate to be taken for a shallow buffer.
pub(crate) const TEST_OUTCOMES: u16 = 32;
/// A test without [`TEST_OUTCOMES`] outcomes after this many smoothed RTTs (the sender went
/// application-limited) decides nothing: the loss is taken for random.
pub(crate) const TEST_SRTTS: u32 = 16;
/// The test's loss rate must fall to at most this fraction (`numerator / denominator`) of the
/// loss rate before it.
pub(crate) const LOSS_FELL: (u64, u64) = (1, 4);
/// The delivery rate held if the last interval's exceeds this fraction of the best before the
/// test (the converse of `RATE_FELL`, the queue check's).
pub(crate) const RATE_HELD: (u128, u128) = (3, 4);
/// How long a verdict holds: as long as a base RTT of a halving that did not help
/// (`UNDRAINED_LIFETIME`), as BBR trusts a minimum RTT.
pub(crate) const VERDICT_LIFETIME: Duration = Duration::from_secs(10);

/// What a test found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The losses were ours: the window capped at one BDP, the pacer smooth.
    Shallow,
    /// The losses were random: the window and threshold as before the test.
    Random {
        /// The window and slow-start threshold when the test began.
        window: u64,
        ssthresh: u64,
    },
}

/// A test under way.
#[derive(Debug, Clone)]
struct Test {
    /// When it began (packets sent after count) and when it gives up.
    since: Instant,
    deadline: Instant,
    /// The loss rate and the best delivery rate (bytes per second) before it.
    loss_before: f64,
    rate_before: Option<u64>,
    /// The window and slow-start threshold before it (restored if the loss was random).
    window: u64,
    ssthresh: u64,
    /// Outcomes of packets sent since it began.
    acked: u16,
    lost: u16,
}

/// The shallow-buffer test and its last verdict (see the module documentation): boxed, as most
/// connections never test (8 bytes for them).
#[derive(Debug, Clone, Default)]
pub(crate) struct ShallowBuffer(Option<Box<State>>);

#[derive(Debug, Clone, Default)]
struct State {
    /// The test under way, if any.
    test: Option<Test>,
    /// The last verdict (shallow or not) and when it lapses.
    verdict: Option<(bool, Instant)>,
}

impl ShallowBuffer {
    /// A loss period taken for random at `now` capped the window, with the loss rate at
    /// `loss_rate`. True if a test should begin ([`Self::begin`]): none is under way, no
    /// verdict holds, and the loss rate is at least [`TEST_LOSS_RATE`].
    pub(crate) fn should_test(&self, now: Instant, loss_rate: f64) -> bool {
        loss_rate >= TEST_LOSS_RATE
            && self
                .0
                .as_ref()
                .is_none_or(|s| s.test.is_none() && s.verdict.is_none_or(|(_, until)| now >= until))
    }

    /// A test begins at `now` (the caller caps the window and smooths the pacer): `loss_rate`
    /// and `rate_before` as they were, the window and threshold before the cap.
    pub(crate) fn begin(
        &mut self,
        now: Instant,
        srtt: Duration,
        loss_rate: f64,
        rate_before: Option<u64>,
        window: u64,
        ssthresh: u64,
    ) {
        let s = self.0.get_or_insert_default();
        s.verdict = None;
        s.test = Some(Test {
            since: now,
            deadline: now + srtt * TEST_SRTTS,
            loss_before: loss_rate,
            rate_before,
            window,
            ssthresh,
            acked: 0,
            lost: 0,
        });
    }

    /// A packet sent at `sent` was acknowledged (`lost` false) or declared lost.
    pub(crate) fn on_outcome(&mut self, sent: Instant, lost: bool) {
        let Some(t) = self
            .0
            .as_mut()
            .and_then(|s| s.test.as_mut())
            .filter(|t| sent > t.since)
        else {
            return;
        };
        if lost {
            t.lost = t.lost.saturating_add(1);
        } else {
            t.acked = t.acked.saturating_add(1);
        }
    }

    /// Is a test under way?
    pub(crate) fn testing(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.test.is_some())
    }

    /// Is the path taken for a shallow buffer at `now` (a test under way, or its verdict)?
    pub(crate) fn active(&self, now: Instant) -> bool {
        self.0.as_ref().is_some_and(|s| {
            s.test.is_some()
                || s.verdict
                    .is_some_and(|(shallow, until)| shallow && now < until)
        })
    }

    /// Decides a test that has its outcomes (or ran out of time) at `now`; `recent_rate` is
    /// the delivery rate of the last interval. Returns the verdict, once. A shallow verdict
    /// that lapses is the caller's to notice ([`Self::active`]).
    pub(crate) fn check(&mut self, now: Instant, recent_rate: Option<u64>) -> Option<Verdict> {
        let s = self.0.as_mut()?;
        let t = s.test.as_ref()?;
        let n = u64::from(t.acked) + u64::from(t.lost);
        if n < u64::from(TEST_OUTCOMES) && now < t.deadline {
            return None;
        }
        let t = s.test.take()?;
        // The loss rate over the test, against LOSS_FELL of the one before, in parts per
        // million (whole numbers: the comparison is exact).
        let before_ppm = (t.loss_before.clamp(0.0, 1.0) * 1e6).round() as u64;
        let loss_fell = n >= u64::from(TEST_OUTCOMES)
            && u64::from(t.lost) * 1_000_000 * LOSS_FELL.1 <= n * before_ppm * LOSS_FELL.0;
        let rate_held = t
            .rate_before
            .zip(recent_rate)
            .is_some_and(|(before, after)| {
                u128::from(after) * RATE_HELD.1 > u128::from(before) * RATE_HELD.0
            });
        let shallow = loss_fell && rate_held;
        s.verdict = Some((shallow, now + VERDICT_LIFETIME));
        Some(if shallow {
            Verdict::Shallow
        } else {
            Verdict::Random {
                window: t.window,
                ssthresh: t.ssthresh,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRTT: Duration = Duration::from_millis(50);

    /// A test begun at `t0` with a 35 % loss rate and 250 kB/s delivered, then `acked` and
    /// `lost` outcomes of packets sent after it.
    fn tested(t0: Instant, acked: u16, lost: u16) -> ShallowBuffer {
        let mut s = ShallowBuffer::default();
        assert!(s.should_test(t0, 0.35));
        s.begin(t0, SRTT, 0.35, Some(250_000), 24_000, u64::MAX);
        assert!(s.active(t0));
        let sent = t0 + Duration::from_millis(1);
        for _ in 0..acked {
            s.on_outcome(sent, false);
        }
        for _ in 0..lost {
            s.on_outcome(sent, true);
        }
        // Packets sent before the test do not count.
        s.on_outcome(t0, true);
        s
    }

    #[test]
    fn tests_only_at_a_high_loss_rate() {
        let t0 = Instant::now();
        let s = ShallowBuffer::default();
        assert!(!s.should_test(t0, 0.14), "a loss rate under 15 %");
        assert!(s.should_test(t0, 0.15));
        assert!(!s.active(t0));
    }

    #[test]
    fn losses_that_stop_while_the_rate_holds_were_ours() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 35 % before, 2 of 32 (6.25 %, under a quarter) after, 240 kB/s: shallow.
        let mut s = tested(t0, 30, 1);
        assert_eq!(s.check(t0 + ms(200), Some(240_000)), None, "31 outcomes");
        s.on_outcome(t0 + ms(2), true);
        assert_eq!(s.check(t0 + ms(200), Some(240_000)), Some(Verdict::Shallow));
        assert_eq!(s.check(t0 + ms(201), Some(240_000)), None, "once");
        // It holds, and no new test starts, for the verdict's lifetime.
        let lapse = t0 + ms(200) + VERDICT_LIFETIME;
        assert!(s.active(lapse - ms(1)));
        assert!(!s.should_test(lapse - ms(1), 0.5));
        assert!(!s.active(lapse));
        assert!(s.should_test(lapse, 0.5), "tested again once it lapses");
    }

    #[test]
    fn losses_that_go_on_or_a_rate_that_falls_are_random() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let random = Some(Verdict::Random {
            window: 24_000,
            ssthresh: u64::MAX,
        });
        // The loss rate stayed (10 of 32, 31 %): random.
        let mut s = tested(t0, 22, 10);
        assert_eq!(s.check(t0 + ms(200), Some(250_000)), random);
        assert!(!s.active(t0 + ms(200)));
        assert!(!s.should_test(t0 + ms(200) + VERDICT_LIFETIME - ms(1), 0.5));
        // The losses stopped but the rate fell to 3/4 (the window, not the path, limited it).
        let mut s = tested(t0, 32, 0);
        assert_eq!(s.check(t0 + ms(200), Some(187_500)), random);
        // Just above 3/4, and exactly a quarter of the loss rate (8.75 % of 80 = 7): shallow.
        let mut s = tested(t0, 73, 7);
        assert_eq!(s.check(t0 + ms(200), Some(187_501)), Some(Verdict::Shallow));
        // No delivery rate measured: no evidence that it held.
        let mut s = tested(t0, 32, 0);
        assert_eq!(s.check(t0 + ms(200), None), random);
        // Too few outcomes by the deadline (the sender went quiet): random.
        let mut s = tested(t0, 10, 0);
        assert_eq!(s.check(t0 + SRTT * TEST_SRTTS - ms(1), Some(250_000)), None);
        assert_eq!(s.check(t0 + SRTT * TEST_SRTTS, Some(250_000)), random);
    }
}
