//! NewReno congestion control, as RFC 9002 §7, with a gentler response to random loss.
//!
//! Chat traffic is almost always application-limited, so the window rarely binds; it exists so
//! that a bulk sender (large messages, a backlog after an outage) backs off on a congested path
//! instead of making it worse, which raw UDP never does.
//!
//! **Random loss.** Halving the window for every recovery period collapses it to the minimum on
//! a path that loses packets at random (radio, a bad link) rather than from a full queue: at
//! 5 % loss a chat server's connection, whose copies and fan-out fill a few dozen packets per
//! RTT, then holds messages back behind the window, and at 35 % a bulk transfer crawls at two
//! packets per RTT (issue 13). A loss from congestion comes with a queue standing in the path,
//! so the connection tells them apart as TCP Veno does, with Copa's standing RTT (the smallest
//! RTT of the last smoothed RTT, robust to jitter) as the measure of the queue. With a queue
//! of ours (the standing RTT exceeds the base RTT by a quarter of the minimum, and 2 ms; the
//! base is the minimum RTT, or the standing RTT of a halving that did not help, see
//! `Connection::random_loss_base`) the period halves the window as NewReno does. Without one,
//! the loss is taken for random and the window is not cut for it, nor its growth stopped, only
//! capped, as BBR caps its window, at twice the bandwidth-delay product the path has shown
//! (the highest delivery rate of the last ten smoothed RTTs times the base RTT), but never
//! below the initial window (what any new connection may send in its first RTT; a chat
//! sender's delivery rate is its own, application-limited rate, and must not hold it back).
//! So a loss taken for random wrongly (a policer, a bottleneck whose buffer is too small to
//! show a queue) brings the window back to twice what the path delivers (or an initial
//! window) each time, and once the cap stops growing the window grows between such losses
//! only in congestion avoidance; persistent congestion collapses the window as before.
//!
//! **A slow start ended by caps resumes when the path shows room.** A cap that did not grow
//! can also come from a stall: a proxy or a machine that is not scheduled for a few tens of
//! milliseconds holds a round trip's acknowledgements, the delivery rate shown stops growing
//! while the window is still small, and the first slow start ended there, at ~90 kB on a path
//! whose BDP is 500 kB, for good (the threshold only ever fell): one 100 MB transfer in three
//! at 43 % of a 100 Mbit/s link at 5 % loss on a busy machine, with no congestion period at
//! all (issue 18). So before any congestion period or HyStart++ exit, once the window is full
//! and a random loss's cap is at least 3/2 of it (the window was delivered nearly whole within
//! the base RTT, so no queue of ours stood and little was lost), the threshold is forgotten and
//! slow start resumes, to end as a first one does. A policer's or a shallow buffer's cap stays
//! at twice the rate it allows, under 3/2 of a window grown to it; a window that does not fill
//! (flow control, an application-limited chat) shows nothing of the path and resumes nothing.
//!
//! **A halving stops at the BDP.** A halving for a queue leaves half the window, but never less
//! than the bandwidth-delay product the path has shown (the delivery rate of the last smoothed
//! RTT times the minimum RTT, as TCP Westwood+ sets its window after a loss), nor more than
//! the window: the halving is there to drain our queue, and a window of the BDP holds none.
//! Where it binds:
//! - after slow start, whose overshoot the first halving answers with a window above the BDP,
//!   so a queue of the difference stands (a quarter of a one-BDP buffer, say). With random loss
//!   the next loss comes with that queue and is taken for congestion, and halving again took
//!   the window to ~0.7 of the BDP, from which congestion avoidance regrows it by one datagram
//!   per round trip: hundreds of round trips under the link rate (issue 18: one bulk round in
//!   three at 43 % of a 100 Mbit/s link at 5 % loss). Now that halving drains the queue and
//!   stops at the BDP.
//! - at a drop-tail buffer shallower than the BDP: congestion avoidance overflows it at a
//!   window of the BDP plus the buffer, half of which is under the BDP. The window now goes
//!   back to the BDP (the link stays busy) and the buffer overflows again after (buffer /
//!   datagram) round trips instead of after (BDP + buffer) / 2 / datagram. A buffer of at least
//!   the BDP sees NewReno's halving unchanged.
//!
//! The rate is the one delivered, so on a shared path it is our share; it is the last smoothed
//! RTT's rather than the ten-RTT maximum the random-loss cap uses, so that a competitor that
//! took part of the link shows within a round trip. A low interval (an application-limited
//! one, a recovery) only lowers the floor towards NewReno's halving.
//!
//! **Leaving slow start before the queue overflows** (HyStart++, RFC 9406). Slow start doubles
//! the window every round trip until a loss, so on a path with a drop-tail buffer of one
//! bandwidth-delay product the first loss comes when the window has grown well past what the
//! path and the buffer hold, and a third of a window is dropped at once (issue 18: 4.7 % of
//! a 20 MB transfer's packets, resent, and a recovery period). The queue shows in the RTT
//! before it overflows: the minimum of each run of [`N_RTT_SAMPLE`] samples in a round is
//! compared with the last round's minimum, and a rise of an eighth of it (at least 4 ms, at
//! most 16 ms) ends slow start for Conservative Slow Start (RFC 9406 judges the round's
//! minimum over all its samples so far, which shows a queue built during one round only in
//! the next, after a one-BDP buffer has overflowed), which grows the window by a quarter as
//! fast. After [`CSS_ROUNDS`] rounds of it the threshold is set to the window (congestion
//! avoidance); a run whose minimum falls back under the one that began it was a spurious
//! exit, and slow start resumes. chirp paces, so there is no per-ack growth limit
//! (RFC 9406 §4.2's L is infinite). Like Linux's HyStart, it only acts once the window is
//! [`HYSTART_LOW_WINDOW`] datagrams, and only on acknowledgements of packets the window
//! limited: an application-limited chat connection never leaves slow start for RTT jitter.

use std::time::{Duration, Instant};

/// Congestion window state.
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    max_datagram: u64,
    /// The initial window: also the least a random loss leaves (see the module documentation).
    initial: u64,
    window: u64,
    ssthresh: u64,
    /// When the current recovery period began: losses of packets sent before it belong to it.
    recovery_start: Option<Instant>,
    /// When the last recovery period from congestion (a queue standing) began: acks of
    /// packets sent before it do not grow the window (RFC 9002 §7.3.2). A period taken for
    /// random loss does not stop growth, or a path that loses a packet every RTT would keep
    /// the window where it started for good.
    frozen_before: Option<Instant>,
    bytes_acked: u64,
    /// The current recovery period: numbered, with the state before it began (to undo it)
    /// and how many of the losses declared in it have not been found spurious yet.
    episode: u64,
    undo: Option<Undo>,
    /// (A `u32`, saturating: 4 bytes less per connection, which pays for the two flags below
    /// under the idle connection ceiling.)
    episode_losses: u32,
    rate: DeliveryRate,
    /// The last random-loss cap that bound (0: none yet; the delivery rate is marked then).
    last_cap: u64,
    /// The slow-start threshold was set by random-loss caps alone, with no HyStart++ exit or
    /// persistent congestion since: slow start may resume if no congestion period has been
    /// either (`frozen_before` is `None`; see `on_congestion_event`).
    threshold_from_cap: bool,
    /// Since the current recovery period began (or the connection did), a packet sent with
    /// the window full was acknowledged: the window, not the application or the peer's flow
    /// control, limited sending.
    window_full: bool,
    hystart: HyStart,
}

/// RTT samples a run needs before its minimum counts (RFC 9406 §4.2 `N_RTT_SAMPLE`, there
/// for the round's first samples).
const N_RTT_SAMPLE: u8 = 8;
/// Conservative Slow Start grows the window this many times slower than slow start.
const CSS_GROWTH_DIVISOR: u64 = 4;
/// Rounds of Conservative Slow Start before congestion avoidance (RFC 9406 `CSS_ROUNDS`).
const CSS_ROUNDS: u8 = 5;
/// The RTT rise that ends slow start: the last round's minimum over 8, within these bounds
/// (RFC 9406 `MIN_RTT_THRESH`, `MAX_RTT_THRESH`, `MIN_RTT_DIVISOR`), in microseconds.
const MIN_RTT_THRESH_US: u32 = 4_000;
const MAX_RTT_THRESH_US: u32 = 16_000;
const MIN_RTT_DIVISOR: u32 = 8;
/// HyStart++ acts only once the window holds this many datagrams (Linux's
/// `hystart_low_window`): below it a rise is jitter, not a queue worth leaving slow start for.
const HYSTART_LOW_WINDOW: u64 = 16;

/// HyStart++ state (RFC 9406): 40 bytes, RTTs in whole microseconds (`u32::MAX`: none).
#[derive(Debug, Clone)]
struct HyStart {
    /// When the current round began: it ends once a packet sent since is acknowledged (RFC
    /// 9406's `windowEnd`, as a time, so no packet number has to be kept).
    round_start: Option<Instant>,
    last_round_min: u32,
    round_min: u32,
    /// The minimum of the current run of [`N_RTT_SAMPLE`] samples in the round.
    run_min: u32,
    /// The run minimum that ended slow start (`u32::MAX`: not in Conservative Slow Start).
    css_baseline: u32,
    /// Samples in the current run.
    run_samples: u8,
    /// Conservative Slow Start rounds completed.
    css_rounds: u8,
}

impl Default for HyStart {
    fn default() -> Self {
        Self {
            round_start: None,
            last_round_min: u32::MAX,
            round_min: u32::MAX,
            run_min: u32::MAX,
            css_baseline: u32::MAX,
            run_samples: 0,
            css_rounds: 0,
        }
    }
}

impl HyStart {
    fn in_css(&self) -> bool {
        self.css_baseline != u32::MAX
    }
}

/// Delivery-rate samples kept, one per smoothed RTT (BBR's bandwidth filter length).
const RATE_SAMPLES: usize = 10;

/// The highest rate at which acknowledged bytes arrived over the last [`RATE_SAMPLES`]
/// intervals of one smoothed RTT each.
#[derive(Debug, Clone, Default)]
struct DeliveryRate {
    delivered: u64,
    /// Start of the current interval and the bytes delivered before it.
    start: Option<(Instant, u64)>,
    /// Bytes per second of the last intervals (a ring), saturating at `u32::MAX` (4.3 GB/s,
    /// 34 Gbit/s, far more than one connection's endpoint sends): 40 bytes less per
    /// connection, which pays for [`HyStart`] under the idle connection ceiling.
    samples: [u32; RATE_SAMPLES],
    next: u8,
    /// Intervals completed, wrapping (u8s in what would be padding: the idle connection's
    /// ceiling), and that count when [`Self::mark`] was last called.
    completed: u8,
    marked: u8,
}

impl DeliveryRate {
    fn on_delivered(&mut self, now: Instant, bytes: u64, interval: Duration) {
        self.delivered += bytes;
        let Some((start, before)) = self.start else {
            self.start = Some((now, self.delivered));
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        // Whole microseconds: with a smoothed RTT of 0 (a path with no delay) an interval can
        // be shorter than one, and the rate would divide by zero.
        let micros = elapsed.as_micros();
        if elapsed < interval || micros == 0 {
            return;
        }
        let rate = u128::from(self.delivered - before) * 1_000_000 / micros;
        self.samples[usize::from(self.next)] = u32::try_from(rate).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % RATE_SAMPLES as u8;
        self.completed = self.completed.wrapping_add(1);
        self.start = Some((now, self.delivered));
    }

    /// Remembers that the rate was read now (see [`Self::measured_since_mark`]).
    fn mark(&mut self) {
        self.marked = self.completed;
    }

    /// Has an interval completed since the last [`Self::mark`]? (Wrong only if a multiple
    /// of 256 did, hundreds of round trips; the next question gets it right.)
    fn measured_since_mark(&self) -> bool {
        self.completed != self.marked
    }

    /// The rate of the last completed interval, if any.
    fn latest(&self) -> Option<u64> {
        let last = self.samples[(usize::from(self.next) + RATE_SAMPLES - 1) % RATE_SAMPLES];
        (last > 0).then_some(u64::from(last))
    }

    /// The highest rate of the intervals kept, if any.
    fn max(&self) -> Option<u64> {
        self.samples
            .iter()
            .copied()
            .max()
            .filter(|&r| r > 0)
            .map(u64::from)
    }

    /// Twice the bandwidth-delay product shown over a path of RTT `rtt` (at the highest rate
    /// kept), if any interval has completed.
    fn twice_bdp(&self, rtt: Duration) -> Option<u64> {
        Some(bdp(self.max()?, rtt).saturating_mul(2))
    }

    /// The bandwidth-delay product at the rate of the last completed interval over a path of
    /// RTT `rtt`, if one has completed.
    fn latest_bdp(&self, rtt: Duration) -> Option<u64> {
        Some(bdp(self.latest()?, rtt))
    }
}

/// The bytes `rate` (bytes per second) delivers in `rtt`.
fn bdp(rate: u64, rtt: Duration) -> u64 {
    let bdp = u128::from(rate) * rtt.as_micros() / 1_000_000;
    u64::try_from(bdp).unwrap_or(u64::MAX)
}

/// The window state before a recovery period began.
#[derive(Debug, Clone, Copy)]
struct Undo {
    window: u64,
    ssthresh: u64,
    recovery_start: Option<Instant>,
    frozen_before: Option<Instant>,
    bytes_acked: u64,
}

impl NewReno {
    /// Initial window: 10 datagrams, capped at max(14720, 2 * datagram) (RFC 9002 §7.2).
    pub(crate) fn new(max_datagram: usize) -> Self {
        let max_datagram = max_datagram as u64;
        let window = (10 * max_datagram).min(14_720.max(2 * max_datagram));
        Self {
            max_datagram,
            initial: window,
            window,
            ssthresh: u64::MAX,
            recovery_start: None,
            frozen_before: None,
            bytes_acked: 0,
            episode: 0,
            undo: None,
            episode_losses: 0,
            rate: DeliveryRate::default(),
            last_cap: 0,
            threshold_from_cap: false,
            window_full: false,
            hystart: HyStart::default(),
        }
    }

    /// `bytes` were newly acknowledged at `now`; `interval` is the smoothed RTT.
    pub(crate) fn on_delivered(&mut self, now: Instant, bytes: u64, interval: Duration) {
        self.rate.on_delivered(now, bytes, interval);
    }

    /// The delivery rate (bytes per second) over the last completed interval of one smoothed
    /// RTT, if one has completed.
    pub(crate) fn recent_rate(&self) -> Option<u64> {
        self.rate.latest()
    }

    /// The highest delivery rate of the last ten intervals (the one the BDP cap uses).
    pub(crate) fn max_rate(&self) -> Option<u64> {
        self.rate.max()
    }

    /// The current window in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// The slow-start threshold in bytes (`u64::MAX` before the first congestion event).
    pub(crate) fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    /// In slow start: the window below the threshold (it doubles every round trip).
    pub(crate) fn in_slow_start(&self) -> bool {
        self.window < self.ssthresh
    }

    /// Datagrams are now up to `max_datagram` bytes (path MTU discovery): congestion
    /// avoidance grows the window, and the minimum window is counted, in such datagrams.
    pub(crate) fn set_max_datagram(&mut self, max_datagram: usize) {
        self.max_datagram = max_datagram as u64;
    }

    /// The current recovery period (0 before the first).
    pub(crate) fn episode(&self) -> u64 {
        self.episode
    }

    fn minimum(&self) -> u64 {
        2 * self.max_datagram
    }

    /// A packet sent with the window full (no room left for the next one) was acknowledged:
    /// the window limits this sender (see `on_congestion_event`).
    pub(crate) fn on_window_full_acked(&mut self) {
        self.window_full = true;
    }

    /// A packet of `bytes` sent at `sent` was acknowledged.
    pub(crate) fn on_ack(&mut self, sent: Instant, bytes: u64, app_limited: bool) {
        if self.frozen_before.is_some_and(|start| sent <= start) || app_limited {
            // Acks of packets sent before a congestion recovery began don't grow the window,
            // and neither do acks while the application, not the window, limits sending
            // (RFC 9002 §7.8).
            return;
        }
        if self.window < self.ssthresh {
            self.window += if self.hystart.in_css() {
                bytes / CSS_GROWTH_DIVISOR
            } else {
                bytes
            };
        } else {
            self.bytes_acked += bytes;
            if self.bytes_acked >= self.window {
                self.bytes_acked -= self.window;
                self.window += self.max_datagram;
            }
        }
    }

    /// An RTT sample (`rtt`, the latest RTT, ack delay not subtracted) taken at `now` from the
    /// acknowledgement of a packet sent at `sent`, which the application limited if
    /// `app_limited`: HyStart++ (see the module documentation). Rounds are counted on every
    /// sample; only those of window-limited packets, once the window is large enough, count
    /// towards a round's minimum.
    pub(crate) fn on_rtt_sample(
        &mut self,
        now: Instant,
        sent: Instant,
        rtt: Duration,
        app_limited: bool,
    ) {
        if !self.in_slow_start() {
            return;
        }
        let h = &mut self.hystart;
        if h.round_start.is_none_or(|start| sent >= start) {
            // A new round: a packet sent since the last one began was acknowledged.
            h.round_start = Some(now);
            h.last_round_min = h.round_min;
            h.round_min = u32::MAX;
            h.run_min = u32::MAX;
            h.run_samples = 0;
            if h.in_css() {
                h.css_rounds += 1;
                if h.css_rounds >= CSS_ROUNDS {
                    // Conservative Slow Start found no spurious exit: congestion avoidance.
                    self.ssthresh = self.window;
                    self.threshold_from_cap = false;
                    self.hystart = HyStart::default();
                    return;
                }
            }
        }
        if app_limited || self.window < HYSTART_LOW_WINDOW * self.max_datagram {
            return;
        }
        let rtt = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX - 1);
        h.round_min = h.round_min.min(rtt);
        h.run_min = h.run_min.min(rtt);
        h.run_samples += 1;
        if h.run_samples < N_RTT_SAMPLE {
            return;
        }
        h.run_samples = 0;
        let run_min = std::mem::replace(&mut h.run_min, u32::MAX);
        if h.last_round_min == u32::MAX {
            return;
        }
        if h.in_css() {
            if run_min < h.css_baseline {
                // The RTT fell back: the exit was spurious, slow start resumes.
                h.css_baseline = u32::MAX;
                h.css_rounds = 0;
            }
        } else {
            let thresh =
                (h.last_round_min / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH_US, MAX_RTT_THRESH_US);
            if run_min >= h.last_round_min.saturating_add(thresh) {
                // A queue is building: Conservative Slow Start.
                h.css_baseline = run_min;
                h.css_rounds = 0;
            }
        }
    }

    /// In HyStart++'s Conservative Slow Start (slow start ended by an RTT rise, the window
    /// growing a quarter as fast).
    pub(crate) fn in_conservative_slow_start(&self) -> bool {
        self.in_slow_start() && self.hystart.in_css()
    }

    /// `count` packets were declared lost; `largest_lost_sent` is when the newest of them was
    /// sent. `random` is the path's base RTT (the minimum, or the delay of FIFO jitter that a
    /// halving did not drain) when no queue of ours stands in the path, `None` when one does
    /// (see the module documentation); `min_rtt` is the minimum RTT, under which a halving
    /// keeps the window at the BDP shown. Returns the recovery period they belong to (for
    /// [`Self::on_spurious_loss`]).
    pub(crate) fn on_congestion_event(
        &mut self,
        now: Instant,
        largest_lost_sent: Instant,
        count: u64,
        random: Option<Duration>,
        min_rtt: Duration,
    ) -> u64 {
        if self
            .recovery_start
            .is_some_and(|start| largest_lost_sent <= start)
        {
            // Already reacted to this loss episode.
            self.episode_losses = self
                .episode_losses
                .saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
            return self.episode;
        }
        self.episode += 1;
        self.undo = Some(Undo {
            window: self.window,
            ssthresh: self.ssthresh,
            recovery_start: self.recovery_start,
            frozen_before: self.frozen_before,
            bytes_acked: self.bytes_acked,
        });
        let window_full = std::mem::take(&mut self.window_full);
        self.episode_losses = u32::try_from(count).unwrap_or(u32::MAX);
        self.recovery_start = Some(now);
        match random {
            None => {
                // Congestion: NewReno's halving, but not below the BDP shown (see
                // `halved_window`), and no growth until the flight sent before it has been
                // acknowledged.
                self.window = self.halved_window(min_rtt);
                self.ssthresh = self.window;
                self.bytes_acked = 0;
                self.frozen_before = Some(now);
                self.hystart = HyStart::default();
            }
            Some(base_rtt) => {
                // Random: capped at twice the BDP shown, and otherwise growing as it did (in
                // slow start if it was): a random loss says nothing about the path's capacity.
                // A cap that binds does not by itself end the first slow start: there the rate
                // shown lags the window by an RTT, in which the window doubled, so the cap
                // binds at 1.3 times the window of an RTT ago at 35 % loss, with no sign of a
                // limit. It does once it binds without having grown since it last bound, the
                // rate having been measured again in between: the path delivers no more (a
                // policer, a buffer too shallow to show a queue), and slow start would take the
                // window to three times its BDP between losses. (Without a new measurement the
                // cap cannot have grown: the first interval shows only the initial window, and
                // on real sockets two random losses came before the next one completed, which
                // left the threshold at ~21 kB for the rest of a 100 MB transfer: issue 18.)
                // After a congestion period every cap that binds lowers the threshold, or the
                // window would slow-start back over a full buffer every RTT.
                //
                // A slow start ended by caps alone (no congestion period, no HyStart++ exit)
                // resumes once a full window is delivered nearly whole within the base RTT
                // (the cap is at least 3/2 of the window: a queue of a quarter of the base RTT,
                // or heavy loss, keeps it under): the cap that did not grow may have come from
                // a stall (of a proxy, of the machine) that held a round trip's
                // acknowledgements, not from the path, and left the window to congestion
                // avoidance, one datagram per round trip towards a BDP of hundreds. A
                // policer's or a shallow buffer's cap stays at twice the rate it allows, under
                // 3/2 of a window that has grown to it; a window that does not fill (flow
                // control, the application) shows nothing of the path.
                let cap = self
                    .rate
                    .twice_bdp(base_rtt)
                    .map_or(u64::MAX, |cap| cap.max(self.initial).max(self.minimum()));
                if cap < self.window {
                    self.window = cap;
                    let measured_again = self.rate.measured_since_mark();
                    if self.ssthresh != u64::MAX || (cap <= self.last_cap && measured_again) {
                        if self.ssthresh == u64::MAX {
                            self.threshold_from_cap = true;
                        }
                        self.ssthresh = self.ssthresh.min(cap);
                    }
                    self.last_cap = cap;
                    self.rate.mark();
                    self.bytes_acked = 0;
                } else if self.threshold_from_cap
                    && self.frozen_before.is_none()
                    && window_full
                    && cap != u64::MAX
                    && cap >= self.window + self.window / 2
                {
                    self.ssthresh = u64::MAX;
                    self.threshold_from_cap = false;
                    self.hystart = HyStart::default();
                }
            }
        }
        self.episode
    }

    /// The window a congestion period leaves: half the window, as NewReno, but not below the
    /// bandwidth-delay product the path has shown (the delivery rate of the last smoothed RTT
    /// times `min_rtt`; TCP Westwood+ sets its window to that estimate after a loss), nor above
    /// the window itself, nor below the minimum window. See the module documentation ("A
    /// halving stops at the BDP").
    fn halved_window(&self, min_rtt: Duration) -> u64 {
        let bdp = self.rate.latest_bdp(min_rtt).unwrap_or(0).min(self.window);
        (self.window / 2).max(bdp).max(self.minimum())
    }

    /// A packet declared lost in recovery period `episode` was acknowledged after all. Once
    /// every loss of the current period has turned out spurious, the period is undone: the
    /// window and threshold go back to what they were before it (RFC 8985 §7.3 spirit; TCP's
    /// undo of a spurious fast retransmit). True if this undid the period.
    pub(crate) fn on_spurious_loss(&mut self, episode: u64) -> bool {
        if episode != self.episode || self.episode_losses == 0 {
            return false;
        }
        self.episode_losses -= 1;
        if self.episode_losses == 0
            && let Some(u) = self.undo.take()
        {
            self.window = self.window.max(u.window);
            self.ssthresh = u.ssthresh;
            self.recovery_start = u.recovery_start;
            self.frozen_before = u.frozen_before;
            self.bytes_acked = u.bytes_acked;
            return true;
        }
        false
    }

    /// Persistent congestion (RFC 9002 §7.6): the window collapses to the minimum and slow
    /// start begins again. Never undone.
    pub(crate) fn on_persistent_congestion(&mut self) {
        self.window = self.minimum();
        self.threshold_from_cap = false;
        self.bytes_acked = 0;
        self.recovery_start = None;
        self.frozen_before = None;
        self.undo = None;
        self.hystart = HyStart::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The minimum RTT the tests' congestion periods are given.
    const MIN_RTT: Duration = Duration::from_millis(40);

    /// `n` packets of 1,200 bytes sent at `sent` acknowledged.
    fn acked(cc: &mut NewReno, sent: Instant, n: u32) {
        for _ in 0..n {
            cc.on_ack(sent, 1_200, false);
        }
    }

    /// Ten intervals of 40 ms (the smoothed RTT) from `t0`, each delivering `bytes`.
    fn show_rate(cc: &mut NewReno, t0: Instant, bytes: u64) {
        let ms = Duration::from_millis;
        for i in 0..=10 {
            cc.on_delivered(t0 + ms(40) * i, bytes, ms(40));
        }
    }

    /// Round `k` of HyStart++ from `t0` (rounds 100 ms apart): `samples` RTT samples of `rtt`,
    /// the first from a packet sent after round `k - 1` began (which begins round `k`), the
    /// rest from packets sent before.
    fn round(cc: &mut NewReno, t0: Instant, k: u32, rtt: Duration, samples: u32) {
        let ms = Duration::from_millis;
        let begun = t0 + ms(100) * k;
        let now = begun + ms(100);
        cc.on_rtt_sample(now, begun + ms(1), rtt, false);
        for i in 1..samples {
            cc.on_rtt_sample(now + ms(1) * i, begun - ms(1), rtt, false);
        }
    }

    /// A window of 36,000 bytes (30 datagrams, over HyStart++'s 16), in slow start.
    fn grown(t0: Instant) -> NewReno {
        let mut cc = NewReno::new(1200);
        acked(&mut cc, t0, 20);
        assert_eq!(cc.window(), 36_000);
        cc
    }

    #[test]
    fn hystart_does_not_exit_while_the_rtt_is_flat() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cc = grown(t0);
        // Rises of less than an eighth of 40 ms (5 ms) are not a queue.
        for (k, rtt) in [40, 44, 41, 40, 44, 40].into_iter().enumerate() {
            round(&mut cc, t0, k as u32, ms(rtt), 20);
            assert!(!cc.in_conservative_slow_start(), "round {k}");
        }
        let w = cc.window();
        cc.on_ack(t0 + ms(1_000), 1_200, false);
        assert_eq!(cc.window(), w + 1_200, "slow start");
        // Samples of application-limited packets, or with a window under 16 datagrams, count
        // rounds but not towards an exit.
        let mut cc = grown(t0);
        round(&mut cc, t0, 0, ms(40), 20);
        let begun = t0 + ms(100);
        for i in 0..20 {
            cc.on_rtt_sample(begun + ms(100 + i), begun + ms(1), ms(80), true);
        }
        assert!(!cc.in_conservative_slow_start(), "application-limited");
        let mut cc = NewReno::new(1200);
        round(&mut cc, t0, 0, ms(40), 20);
        round(&mut cc, t0, 1, ms(80), 20);
        assert!(!cc.in_conservative_slow_start(), "window of 10 datagrams");
    }

    #[test]
    fn an_rtt_rise_ends_slow_start_for_slower_growth() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cc = grown(t0);
        round(&mut cc, t0, 0, ms(40), 20);
        // Seven samples are not enough to judge a round.
        round(&mut cc, t0, 1, ms(46), 7);
        assert!(!cc.in_conservative_slow_start());
        cc.on_rtt_sample(t0 + ms(250), t0 + ms(99), ms(46), false);
        assert!(cc.in_conservative_slow_start(), "5 ms over 40 ms: a queue");
        assert!(cc.in_slow_start(), "the threshold is not set yet");
        cc.on_ack(t0 + ms(260), 1_200, false);
        assert_eq!(cc.window(), 36_300, "a quarter as fast");
        // A rise late in a long round (over 255 samples in, as a large window gives) counts.
        let mut cc = grown(t0);
        round(&mut cc, t0, 0, ms(40), 20);
        round(&mut cc, t0, 1, ms(40), 304);
        assert!(!cc.in_conservative_slow_start());
        for i in 0..8 {
            cc.on_rtt_sample(t0 + ms(300) + ms(i), t0 + ms(99), ms(46), false);
        }
        assert!(cc.in_conservative_slow_start(), "a late run of 8");
        // The threshold is clamped: 4 ms over a 20 ms round, 16 ms over a 200 ms one.
        for (base, rise, exits) in [
            (20, 3, false),
            (20, 4, true),
            (200, 15, false),
            (200, 16, true),
        ] {
            let mut cc = grown(t0);
            round(&mut cc, t0, 0, ms(base), 8);
            round(&mut cc, t0, 1, ms(base + rise), 8);
            assert_eq!(cc.in_conservative_slow_start(), exits, "{base} + {rise} ms");
        }
    }

    #[test]
    fn conservative_slow_start_ends_in_congestion_avoidance_after_five_rounds() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cc = grown(t0);
        round(&mut cc, t0, 0, ms(40), 8);
        round(&mut cc, t0, 1, ms(50), 8);
        assert!(cc.in_conservative_slow_start());
        for k in 2..6 {
            round(&mut cc, t0, k, ms(52), 8);
            assert!(cc.in_conservative_slow_start(), "CSS round {}", k - 1);
        }
        round(&mut cc, t0, 6, ms(52), 8);
        assert!(
            !cc.in_slow_start(),
            "after five rounds: congestion avoidance"
        );
        assert_eq!(cc.ssthresh(), cc.window());
        let w = cc.window();
        cc.on_ack(t0 + ms(1_000), 1_200, false);
        assert_eq!(cc.window(), w, "a datagram per window");
    }

    #[test]
    fn a_spurious_exit_returns_to_slow_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cc = grown(t0);
        round(&mut cc, t0, 0, ms(40), 8);
        round(&mut cc, t0, 1, ms(50), 8);
        assert!(cc.in_conservative_slow_start());
        // The next round's RTT falls under the one that ended slow start: it was jitter.
        round(&mut cc, t0, 2, ms(49), 8);
        assert!(!cc.in_conservative_slow_start(), "spurious exit undone");
        assert!(cc.in_slow_start());
        let w = cc.window();
        cc.on_ack(t0 + ms(1_000), 1_200, false);
        assert_eq!(cc.window(), w + 1_200, "slow start again");
        // And it can leave again, from the new baseline (49 ms: 6.1 ms threshold).
        round(&mut cc, t0, 3, ms(56), 8);
        assert!(cc.in_conservative_slow_start());
    }

    #[test]
    fn halves_once_per_episode_and_grows() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        assert_eq!(cc.window(), 12_000);
        cc.on_ack(t0, 1200, false);
        assert_eq!(cc.window(), 13_200);
        let t1 = t0 + Duration::from_millis(10);
        cc.on_congestion_event(t1, t0, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 6_600);
        // A second loss from the same flight does not halve again.
        cc.on_congestion_event(t1 + Duration::from_millis(1), t0, 1, None, MIN_RTT);
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
            cc.on_congestion_event(t, t, 1, None, MIN_RTT);
        }
        assert_eq!(cc.window(), 2_400, "never below two datagrams");
    }

    #[test]
    fn a_halving_stops_at_the_bdp_shown() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 24,000 bytes per 40 ms delivered: a BDP of 24,000 bytes over the 40 ms minimum RTT.
        let shown = |window_datagrams: u32| {
            let mut cc = NewReno::new(1200);
            show_rate(&mut cc, t0, 24_000);
            acked(&mut cc, t0 + ms(500), window_datagrams - 10);
            assert_eq!(cc.window(), u64::from(window_datagrams) * 1_200);
            cc
        };
        // 36,000 bytes: half is 18,000, under the BDP, so the window stops at 24,000, and the
        // threshold with it.
        let mut cc = shown(30);
        let t1 = t0 + ms(600);
        cc.on_congestion_event(t1, t1, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 24_000);
        assert_eq!(cc.ssthresh(), 24_000);
        cc.on_ack(t1, 1_200, false);
        assert_eq!(
            cc.window(),
            24_000,
            "frozen for the flight before the halving"
        );
        // A second period with no growth since: the window holds no queue, nothing to cut.
        let t2 = t1 + ms(100);
        cc.on_congestion_event(t2, t2, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 24_000);
        // Over twice the BDP: NewReno's halving.
        let mut cc = shown(50);
        cc.on_congestion_event(t1, t1, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 30_000);
        // The BDP is counted over the minimum RTT it is given: over 20 ms it is 12,000 bytes.
        let mut cc = shown(30);
        cc.on_congestion_event(t1, t1, 1, None, ms(20));
        assert_eq!(cc.window(), 18_000);
        // No rate shown yet: NewReno's halving.
        let mut cc = NewReno::new(1200);
        acked(&mut cc, t0, 20);
        cc.on_congestion_event(t1, t1, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 18_000);
        // Undone as spurious: back to the window before the period.
        let mut cc = shown(30);
        let e = cc.on_congestion_event(t1, t1, 1, None, MIN_RTT);
        assert!(cc.on_spurious_loss(e));
        assert_eq!(cc.window(), 36_000);
    }

    #[test]
    fn spurious_losses_undo_the_period() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        let t1 = t0 + Duration::from_millis(10);
        let e = cc.on_congestion_event(t1, t0, 1, None, MIN_RTT);
        let e2 = cc.on_congestion_event(t1, t0, 1, None, MIN_RTT);
        assert_eq!((e, cc.window()), (e2, 6_000));
        assert!(!cc.on_spurious_loss(e));
        assert_eq!(cc.window(), 6_000, "one loss of the period is still real");
        assert!(cc.on_spurious_loss(e), "undone");
        assert_eq!(cc.window(), 12_000, "all spurious: undone");
        // A stale period is not undone again.
        cc.on_spurious_loss(e);
        assert_eq!(cc.window(), 12_000);
        let t2 = t1 + Duration::from_millis(10);
        let e3 = cc.on_congestion_event(t2, t2, 1, None, MIN_RTT);
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
    fn random_loss_caps_the_window_at_twice_the_bdp_shown() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let min_rtt = ms(40);
        let mut cc = NewReno::new(1200);
        // 9,000 bytes per 40 ms delivered (225 kB/s): twice the BDP is 18,000 bytes.
        show_rate(&mut cc, t0, 9_000);
        acked(&mut cc, t0 + ms(500), 20);
        assert_eq!(cc.window(), 36_000, "slow start");
        let t1 = t0 + ms(600);
        cc.on_congestion_event(t1, t1, 1, Some(min_rtt), MIN_RTT);
        assert_eq!(cc.window(), 18_000, "capped at twice the BDP shown");
        // With a standing queue: halved.
        let t2 = t1 + ms(100);
        cc.on_congestion_event(t2, t2, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 9_000);
        // Random again: below the cap, so no cut.
        let t3 = t2 + ms(100);
        cc.on_congestion_event(t3, t3, 1, Some(min_rtt), MIN_RTT);
        assert_eq!(cc.window(), 9_000);
        // An application-limited sender shows a small rate (1,000 bytes per 40 ms): twice its
        // BDP is 2,000 bytes, but a random loss never cuts below the initial window.
        let mut cc = NewReno::new(1200);
        show_rate(&mut cc, t0, 1_000);
        acked(&mut cc, t0 + ms(500), 5);
        let t4 = t0 + ms(600);
        cc.on_congestion_event(t4, t4, 1, Some(min_rtt), MIN_RTT);
        assert_eq!(cc.window(), 12_000);
        // No delivery rate measured yet: a random loss leaves the window alone.
        let mut cc = NewReno::new(1200);
        acked(&mut cc, t0, 5);
        cc.on_congestion_event(t0, t0, 3, Some(min_rtt), MIN_RTT);
        assert_eq!(cc.window(), 18_000);
    }

    #[test]
    fn random_loss_does_not_stop_growth_or_slow_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let min_rtt = ms(40);
        let mut cc = NewReno::new(1200);
        // A loss every RTT, all taken for random, no rate measured (so no cap): the flight
        // sent before each period is acknowledged after it and still grows the window, in slow
        // start, as on a clean path. (NewReno froze growth for that flight, and at 35 % loss
        // the window never left 12,000 bytes.)
        for rtt in 0..4u32 {
            let sent = t0 + ms(40) * rtt;
            cc.on_congestion_event(sent + ms(20), sent, 1, Some(min_rtt), MIN_RTT);
            let w = cc.window();
            for _ in 0..w / 1200 {
                cc.on_ack(sent, 1200, false);
            }
            assert_eq!(
                cc.window(),
                2 * w,
                "RTT {rtt}: slow start through random loss"
            );
        }
        assert_eq!(cc.window(), 192_000);
    }

    #[test]
    fn after_congestion_a_binding_cap_lowers_the_threshold() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let min_rtt = ms(40);
        let mut cc = NewReno::new(1200);
        // 15,000 bytes per 40 ms delivered: twice the BDP is 30,000 bytes.
        show_rate(&mut cc, t0, 15_000);
        acked(&mut cc, t0 + ms(500), 40);
        assert_eq!(cc.window(), 60_000);
        // Before any congestion period, a binding cap leaves slow start on.
        let t1 = t0 + ms(600);
        cc.on_congestion_event(t1, t1, 1, Some(min_rtt), MIN_RTT);
        assert_eq!(cc.window(), 30_000);
        cc.on_ack(t1 + ms(1), 1_200, false);
        assert_eq!(cc.window(), 31_200, "still in slow start");
        // A queue: halved to 15,600, the threshold with it; the flight sent before does not
        // grow the window.
        let t2 = t1 + ms(100);
        cc.on_congestion_event(t2, t2, 1, None, MIN_RTT);
        assert_eq!(cc.window(), 15_600);
        cc.on_ack(t2, 1_200, false);
        assert_eq!(
            cc.window(),
            15_600,
            "frozen for the flight before the halving"
        );
        // Grown back over the cap in congestion avoidance, then a random loss: the cap binds
        // and lowers the threshold too, so the window does not slow-start back.
        acked(&mut cc, t2 + ms(1), 600);
        assert!(cc.window() > 30_000, "window {}", cc.window());
        let t3 = t2 + ms(5_000);
        cc.on_congestion_event(t3, t3, 1, Some(min_rtt), MIN_RTT);
        assert_eq!(cc.window(), 30_000);
        cc.on_ack(t3 + ms(1), 1_200, false);
        assert_eq!(
            cc.window(),
            30_000,
            "congestion avoidance: a datagram per window"
        );
    }

    #[test]
    fn a_cap_that_binds_twice_without_growing_ends_slow_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cc = NewReno::new(1200);
        // 15,000 bytes per 40 ms, and no more: the cap is 30,000 bytes each time.
        show_rate(&mut cc, t0, 15_000);
        acked(&mut cc, t0 + ms(500), 40);
        let t1 = t0 + ms(600);
        cc.on_congestion_event(t1, t1, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 30_000);
        acked(&mut cc, t1 + ms(1), 25);
        assert_eq!(
            cc.window(),
            60_000,
            "slow start went on after the first cap"
        );
        // The path still delivers 15,000 bytes per 40 ms, measured again.
        for i in 1..=2 {
            cc.on_delivered(t1 + ms(40) * i, 15_000, ms(40));
        }
        let t2 = t1 + ms(100);
        cc.on_congestion_event(t2, t2, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 30_000);
        cc.on_ack(t2 + ms(1), 1_200, false);
        assert_eq!(
            cc.window(),
            30_000,
            "the same cap again: congestion avoidance"
        );
    }

    /// Issue 18's real-socket outlier: the first interval shows only the initial window, and
    /// two random losses come before the next one completes. The cap binds twice at the same
    /// value, but it was not measured again, so slow start goes on; once it is, and has grown,
    /// it no longer binds.
    #[test]
    fn a_cap_not_measured_again_does_not_end_slow_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cc = NewReno::new(1200);
        // The initial window's 12,000 bytes acknowledged over the first 40 ms interval: a cap
        // of 24,000 bytes.
        cc.on_delivered(t0, 1_200, ms(40));
        cc.on_delivered(t0 + ms(40), 12_000, ms(40));
        acked(&mut cc, t0 + ms(40), 20);
        assert_eq!(cc.window(), 36_000);
        let t1 = t0 + ms(60);
        cc.on_congestion_event(t1, t1, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 24_000);
        acked(&mut cc, t1 + ms(1), 5);
        assert_eq!(
            cc.window(),
            30_000,
            "slow start went on after the first cap"
        );
        // A second random loss before the interval that began at 40 ms has ended.
        let t2 = t1 + ms(15);
        cc.on_congestion_event(t2, t2, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 24_000, "the same cap binds again");
        cc.on_ack(t2 + ms(1), 1_200, false);
        assert_eq!(cc.window(), 25_200, "but slow start goes on");
        assert_eq!(cc.ssthresh(), u64::MAX);
        // The next interval shows the second flight: 30,000 bytes in 40 ms, a cap of 60,000.
        cc.on_delivered(t0 + ms(80), 30_000, ms(40));
        acked(&mut cc, t2 + ms(2), 25);
        assert_eq!(cc.window(), 55_200);
        let t3 = t2 + ms(40);
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 55_200, "under the grown cap: not cut");
        assert!(cc.in_slow_start());
    }

    /// Slow start ended, before any congestion period, by a cap of 30,000 bytes that bound
    /// twice without growing, measured again in between (the delivery rate of a stall), as in
    /// `a_cap_that_binds_twice_without_growing_ends_slow_start`; the window then fills up in
    /// congestion avoidance.
    fn ended_by_a_stall(t0: Instant) -> NewReno {
        let ms = Duration::from_millis;
        let mut cc = NewReno::new(1200);
        show_rate(&mut cc, t0, 15_000);
        acked(&mut cc, t0 + ms(500), 40);
        let t1 = t0 + ms(600);
        cc.on_congestion_event(t1, t1, 1, Some(ms(40)), MIN_RTT);
        acked(&mut cc, t1 + ms(1), 25);
        for i in 1..=2 {
            cc.on_delivered(t1 + ms(40) * i, 15_000, ms(40));
        }
        let t2 = t1 + ms(100);
        cc.on_congestion_event(t2, t2, 1, Some(ms(40)), MIN_RTT);
        assert_eq!((cc.window(), cc.ssthresh()), (30_000, 30_000));
        cc
    }

    #[test]
    fn a_full_window_delivered_whole_resumes_a_slow_start_ended_by_caps() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let t3 = t0 + ms(1_500);
        // The path then shows 25,000 bytes per 40 ms with the window full: a random loss's
        // cap of 50,000 bytes is at least 3/2 of the 30,000-byte window, so the threshold set
        // by the caps is forgotten and slow start resumes, as if it had never ended.
        let mut cc = ended_by_a_stall(t0);
        show_rate(&mut cc, t0 + ms(900), 25_000);
        cc.on_window_full_acked();
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 30_000, "under the cap: not cut");
        assert!(cc.in_slow_start());
        assert_eq!(cc.ssthresh(), u64::MAX, "no threshold");
        acked(&mut cc, t3 + ms(1), 20);
        assert_eq!(cc.window(), 54_000, "slow start again");
        // It ends as a first slow start does: a cap that grew binds and slow start goes on;
        // the same cap once more, measured again, ends it.
        let t4 = t3 + ms(100);
        cc.on_congestion_event(t4, t4, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.window(), 50_000);
        assert!(cc.in_slow_start(), "the cap grew since it last bound");
        acked(&mut cc, t4 + ms(1), 5);
        for i in 1..=2 {
            cc.on_delivered(t4 + ms(40) * i, 25_000, ms(40));
        }
        let t5 = t4 + ms(100);
        cc.on_congestion_event(t5, t5, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(
            (cc.window(), cc.ssthresh()),
            (50_000, 50_000),
            "the same cap: ended"
        );

        // A cap under 3/2 of the window (20,000 bytes per 40 ms: a cap of 40,000 bytes): the
        // window was not delivered whole within the base RTT (a queue, heavy loss), and the
        // threshold stays.
        let mut cc = ended_by_a_stall(t0);
        show_rate(&mut cc, t0 + ms(900), 20_000);
        cc.on_window_full_acked();
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.ssthresh(), 30_000, "under 3/2 of the window");
        // The cap that resumes it, but no packet sent with the window full was acknowledged
        // since the last period began (flow control or the application limited sending):
        // the rate shows nothing of the path.
        let mut cc = ended_by_a_stall(t0);
        show_rate(&mut cc, t0 + ms(900), 25_000);
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.ssthresh(), 30_000, "not window-limited");
        // A full window acknowledged before the previous period does not count either.
        cc.on_window_full_acked();
        let t4 = t3 + ms(100);
        cc.on_congestion_event(t4, t4, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(
            cc.ssthresh(),
            u64::MAX,
            "window-limited since the last period"
        );
        let mut cc = ended_by_a_stall(t0);
        cc.on_window_full_acked();
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        show_rate(&mut cc, t3 + ms(100), 25_000);
        cc.on_congestion_event(t4 + ms(500), t4 + ms(500), 1, Some(ms(40)), MIN_RTT);
        assert_eq!(
            cc.ssthresh(),
            30_000,
            "the full window was before the last period"
        );
    }

    #[test]
    fn a_cap_that_did_not_grow_or_a_congestion_period_keeps_the_threshold() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let t3 = t0 + ms(1_500);
        // A policer: the path shows no more than before (15,000 bytes per 40 ms), so the cap
        // is the one that ended slow start, however full the window.
        let mut cc = ended_by_a_stall(t0);
        show_rate(&mut cc, t0 + ms(900), 15_000);
        cc.on_window_full_acked();
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        assert_eq!((cc.window(), cc.ssthresh()), (30_000, 30_000));
        cc.on_ack(t3 + ms(1), 1_200, false);
        assert_eq!(cc.window(), 30_000, "congestion avoidance");
        // After a congestion period the threshold is NewReno's, whatever the cap shows later.
        let mut cc = ended_by_a_stall(t0);
        let t4 = t0 + ms(900);
        cc.on_congestion_event(t4, t4, 1, None, MIN_RTT);
        let threshold = cc.ssthresh();
        show_rate(&mut cc, t4 + ms(100), 100_000);
        cc.on_window_full_acked();
        cc.on_congestion_event(t4 + ms(600), t4 + ms(600), 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.ssthresh(), threshold, "no lift after congestion");
        // A threshold set by a halving undone as spurious is the cap's again: the lift is back.
        let mut cc = ended_by_a_stall(t0);
        let e = cc.on_congestion_event(t4, t4, 1, None, MIN_RTT);
        assert!(cc.on_spurious_loss(e));
        show_rate(&mut cc, t4 + ms(100), 25_000);
        cc.on_window_full_acked();
        cc.on_congestion_event(t4 + ms(600), t4 + ms(600), 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.ssthresh(), u64::MAX, "undone: slow start resumes");
        // Nor is a threshold set by HyStart++ (an RTT rise) lifted.
        let mut cc = grown(t0);
        show_rate(&mut cc, t0, 15_000);
        for (k, rtt) in [40, 50, 52, 52, 52, 52, 52].into_iter().enumerate() {
            round(&mut cc, t0, k as u32, ms(rtt), 8);
        }
        assert!(!cc.in_slow_start());
        let threshold = cc.ssthresh();
        show_rate(&mut cc, t0 + ms(900), 100_000);
        cc.on_window_full_acked();
        cc.on_congestion_event(t3, t3, 1, Some(ms(40)), MIN_RTT);
        assert_eq!(cc.ssthresh(), threshold, "HyStart++'s threshold stays");
    }

    #[test]
    fn delivery_rate_over_sub_microsecond_intervals_does_not_divide_by_zero() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        for i in 0..4 {
            cc.on_delivered(t0 + Duration::from_nanos(300 * i), 1200, Duration::ZERO);
        }
        assert_eq!(cc.rate.twice_bdp(Duration::from_millis(40)), None);
    }

    #[test]
    fn persistent_congestion_collapses_and_is_not_undone() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        let e = cc.on_congestion_event(t0, t0, 1, None, MIN_RTT);
        cc.on_persistent_congestion();
        assert_eq!(cc.window(), 2_400);
        cc.on_spurious_loss(e);
        assert_eq!(cc.window(), 2_400);
        // Slow start again (ssthresh stays at the halved window).
        cc.on_ack(t0 + Duration::from_millis(1), 1200, false);
        assert_eq!(cc.window(), 3_600);
    }
}
