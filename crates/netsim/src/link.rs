//! Seeded, deterministic model of one direction of an unreliable datagram path.
//!
//! chirp runs over UDP, so its reliability layer has to cope with everything
//! a real network does to datagrams: loss (independent and bursty), duplication,
//! reordering, bit corruption, MTU limits, bottleneck queues and outages. Real
//! networks produce those rarely and never reproducibly; this model produces
//! them on demand, and — because all randomness comes from one seeded
//! [`ChaCha8Rng`] and all time comes from the caller — a failing test replays
//! bit-for-bit from its seed on every platform.
//!
//! # Pipeline
//!
//! Every datagram offered with [`Link::send`] goes through these stages in this
//! order (the order is part of the determinism contract: it fixes which random
//! numbers are drawn for which decision):
//!
//! 1. **blackout** — dropped if sent before the end of an outage;
//! 2. **MTU** — dropped if longer than [`LinkConfig::mtu`];
//! 3. **bottleneck** — if a rate is set, queued behind earlier datagrams and
//!    tail-dropped when the queue is full;
//! 4. **loss** — independent loss, then the Gilbert-Elliott burst process;
//! 5. **duplication** — possibly a second copy is made;
//! 6. per copy: **delay + jitter** (kept FIFO), **reordering**, **corruption**.
//!
//! Stages 1–3 draw no random numbers; a datagram that reaches stage 4 always
//! draws the same number of them for a given configuration.
//!
//! A **stall** ([`Link::stall`]) stops the whole pipeline for a while, as a
//! proxy process that is not scheduled does (`chirp impair` on a busy
//! machine): a datagram sent during it enters stage 1 only when it ends, all
//! of them at once in send order (a burst into the bottleneck, which drops
//! what its buffer cannot hold), and a copy due out during it comes out when it
//! ends, in its order.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Gilbert-Elliott two-state burst-loss model.
///
/// Independent (Bernoulli) loss is a poor model of real paths: Wi-Fi fades,
/// congested router queues and route flaps lose *runs* of consecutive
/// datagrams. Gilbert-Elliott models this as a Markov chain with a Good and a
/// Bad state, each with its own loss probability. The chain steps once per
/// datagram (it starts in Good), so the length of a stay in Bad is geometric
/// with mean `1 / p_bad_to_good`.
///
/// Probabilities outside `[0, 1]` behave as if clamped into it; NaN behaves as 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability, per datagram, of moving from Good to Bad.
    pub p_good_to_bad: f64,
    /// Probability, per datagram, of moving from Bad back to Good.
    pub p_bad_to_good: f64,
    /// Loss probability while in the Good state.
    pub loss_good: f64,
    /// Loss probability while in the Bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The simple Gilbert model: nothing is lost in Good, everything in Bad,
    /// so every loss burst is exactly one stay in the Bad state.
    #[must_use]
    pub fn gilbert(p_good_to_bad: f64, p_bad_to_good: f64) -> Self {
        Self {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// Long-run fraction of datagrams the chain spends in the Bad state.
    ///
    /// If neither transition can happen the chain stays where it starts, in
    /// Good, so the answer is 0.
    #[must_use]
    pub fn stationary_bad(&self) -> f64 {
        let to_bad = effective(self.p_good_to_bad);
        let total = to_bad + effective(self.p_bad_to_good);
        if total > 0.0 { to_bad / total } else { 0.0 }
    }

    /// Stationary loss rate: the loss probability averaged over the chain's
    /// long-run state distribution. Use it to compare a bursty configuration
    /// with an independent-loss one of the same average severity.
    #[must_use]
    pub fn mean_loss(&self) -> f64 {
        let bad = self.stationary_bad();
        (1.0 - bad) * effective(self.loss_good) + bad * effective(self.loss_bad)
    }

    /// Mean number of consecutive datagrams spent in the Bad state per visit
    /// (`1 / p_bad_to_good`; infinite if Bad is never left).
    #[must_use]
    pub fn mean_bad_run(&self) -> f64 {
        let leave = effective(self.p_bad_to_good);
        if leave > 0.0 {
            1.0 / leave
        } else {
            f64::INFINITY
        }
    }
}

/// Impairments of one direction of a path.
///
/// Every field is public so tests can state exactly the network they need;
/// the `with_*` builders make the common "ideal plus one impairment" case
/// short. Probabilities outside `[0, 1]` behave as if clamped; NaN behaves as 0.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way base propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per datagram.
    ///
    /// Jitter alone never reorders: a datagram is never delivered before one
    /// sent earlier (unless [`reorder`](Self::reorder) picked that one), which
    /// matches real paths where queueing delay varies but a single queue is FIFO.
    pub jitter: Duration,
    /// Independent probability that a datagram is lost.
    pub loss: f64,
    /// Burst-loss process, applied in addition to [`loss`](Self::loss).
    pub burst: Option<GilbertElliott>,
    /// Probability that a datagram is delivered twice; the copy gets its own
    /// jitter, reordering and corruption draws.
    pub duplicate: f64,
    /// Probability that a datagram is held back by
    /// [`reorder_delay`](Self::reorder_delay) extra, so later ones overtake it.
    pub reorder: f64,
    /// Extra delay of a datagram picked for reordering.
    pub reorder_delay: Duration,
    /// Probability that 1 to 3 distinct random bits of a datagram are flipped
    /// (the UDP checksum is optional and weak, so the protocol must detect this).
    pub corrupt: f64,
    /// Datagrams longer than this many bytes are dropped, as an IP path
    /// without fragmentation would.
    pub mtu: usize,
    /// Bottleneck bandwidth. `None` means infinitely fast; `Some(0)` carries
    /// nothing (everything is tail-dropped).
    pub rate_bytes_per_sec: Option<u64>,
    /// Capacity of the bottleneck buffer in bytes, counting every datagram not
    /// yet fully serialised (including the one on the wire). Only used with
    /// [`rate_bytes_per_sec`](Self::rate_bytes_per_sec).
    pub queue_bytes: usize,
}

impl LinkConfig {
    /// A perfect link: constant `delay`, no impairment, MTU 1500 (Ethernet),
    /// no rate limit (and a 64 KiB queue, used only if a rate is set later).
    #[must_use]
    pub fn ideal(delay: Duration) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            corrupt: 0.0,
            mtu: 1500,
            rate_bytes_per_sec: None,
            queue_bytes: 64 * 1024,
        }
    }

    /// Sets [`delay`](Self::delay).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the independent [`loss`](Self::loss) probability.
    #[must_use]
    pub fn with_loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets the [`burst`](Self::burst) loss process.
    #[must_use]
    pub fn with_burst(mut self, burst: GilbertElliott) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets the [`duplicate`](Self::duplicate) probability.
    #[must_use]
    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Sets the [`reorder`](Self::reorder) probability and
    /// [`reorder_delay`](Self::reorder_delay).
    #[must_use]
    pub fn with_reorder(mut self, p: f64, delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = delay;
        self
    }

    /// Sets the [`corrupt`](Self::corrupt) probability.
    #[must_use]
    pub fn with_corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    /// Sets the [`mtu`](Self::mtu).
    #[must_use]
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Sets a bottleneck of `bytes_per_sec` with a buffer of `queue_bytes`.
    #[must_use]
    pub fn with_rate(mut self, bytes_per_sec: u64, queue_bytes: usize) -> Self {
        self.rate_bytes_per_sec = Some(bytes_per_sec);
        self.queue_bytes = queue_bytes;
        self
    }
}

impl Default for LinkConfig {
    /// An ideal link with 20 ms one-way delay, a typical same-continent path.
    fn default() -> Self {
        Self::ideal(Duration::from_millis(20))
    }
}

/// Counters of what a [`Link`] did, for assertions and test diagnostics.
///
/// Counts are per datagram *copy*. They always satisfy
/// `sent + duplicated == delivered + in_flight + lost + oversize + queue_drops
/// + blackout_drops` (with `in_flight` from [`Link::in_flight`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered with [`Link::send`].
    pub sent: u64,
    /// Copies handed out by [`Link::poll_deliver`].
    pub delivered: u64,
    /// Datagrams dropped by independent or burst loss (and the practically
    /// unreachable case of a delivery time too far in the future to represent).
    pub lost: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Copies held back by the reordering impairment (whether or not anything
    /// actually overtook them).
    pub reordered: u64,
    /// Copies whose bits were flipped.
    pub corrupted: u64,
    /// Datagrams dropped for exceeding the MTU.
    pub oversize: u64,
    /// Datagrams tail-dropped by a full bottleneck queue.
    pub queue_drops: u64,
    /// Datagrams dropped because they were sent during a blackout.
    pub blackout_drops: u64,
    /// Bytes offered with [`Link::send`].
    pub bytes_sent: u64,
    /// Bytes handed out by [`Link::poll_deliver`].
    pub bytes_delivered: u64,
}

/// A copy of a datagram travelling through the link.
///
/// Ordered by `(deliver_at, seq)` only: `seq` is unique per link, so equal
/// delivery times fall back to send order and the datagram bytes never need
/// comparing. That makes delivery order a pure function of the seed.
#[derive(Debug)]
struct Scheduled {
    deliver_at: Instant,
    seq: u64,
    datagram: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

/// One direction of a network path.
///
/// A `Link` never reads the clock: callers pass virtual time `now` to every
/// method, and must pass non-decreasing values. Datagrams go in with
/// [`send`](Self::send) and come out with [`poll_deliver`](Self::poll_deliver);
/// [`next_delivery`](Self::next_delivery) tells a virtual-time driver how far
/// it may jump.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    rng: ChaCha8Rng,
    /// Copies in flight, min-heap on `(deliver_at, seq)`.
    in_flight: BinaryHeap<Reverse<Scheduled>>,
    /// Next value for [`Scheduled::seq`].
    next_seq: u64,
    /// Delivery time of the last copy that stayed in FIFO order; later copies
    /// are never scheduled before it, so jitter cannot reorder.
    last_fifo: Option<Instant>,
    /// Current Gilbert-Elliott state; kept across `set_config` so changing
    /// other impairments does not reset an ongoing burst.
    ge_bad: bool,
    /// Bottleneck backlog: `(serialisation finished, length)` per datagram, in
    /// send order, so the oldest finishes first.
    bottleneck: VecDeque<(Instant, usize)>,
    /// Sum of the lengths in `bottleneck`.
    queued_bytes: usize,
    blackout_until: Option<Instant>,
    /// The current or next stall: `[start, end)`.
    stall: Option<(Instant, Instant)>,
    stats: LinkStats,
}

impl Link {
    /// Creates an empty link whose every random decision derives from `seed`.
    #[must_use]
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            last_fifo: None,
            ge_bad: false,
            bottleneck: VecDeque::new(),
            queued_bytes: 0,
            blackout_until: None,
            stall: None,
            stats: LinkStats::default(),
        }
    }

    /// The current impairments.
    #[must_use]
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Replaces the impairments, e.g. to model a path that degrades mid-test.
    ///
    /// Applies to datagrams sent from now on; those already in flight keep
    /// their delivery times, as packets already in the network would.
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    /// Drops every datagram sent before `until` (a total outage, e.g. a
    /// Wi-Fi hand-over or NAT rebinding), to test keep-alives and recovery.
    ///
    /// Datagrams already in flight are still delivered. A later call replaces
    /// the end time, so `blackout_until(now)` ends an outage early.
    pub fn blackout_until(&mut self, until: Instant) {
        self.blackout_until = Some(until);
    }

    /// Stops the link from `start` until `end`, as a proxy that is not
    /// scheduled for that long would (a busy machine): a datagram sent in
    /// `[start, end)` enters the link at `end`, with the others sent during
    /// the stall, in send order, so they reach a bottleneck as one burst (and
    /// what its buffer cannot hold is tail-dropped); a copy due out in
    /// `[start, end)` is delivered at `end`, in its order. Nothing is lost by
    /// the stall itself. A later call replaces the stall.
    ///
    /// Callers still pass non-decreasing times; `start` may be in the future.
    pub fn stall(&mut self, start: Instant, end: Instant) {
        self.stall = (start < end).then_some((start, end));
    }

    /// `t` moved to the end of the stall if it falls within it.
    fn unstalled(&self, t: Instant) -> Instant {
        match self.stall {
            Some((start, end)) if start <= t && t < end => end,
            _ => t,
        }
    }

    /// Offers a datagram to the link at time `now`; see the module docs for
    /// the order in which impairments apply.
    pub fn send(&mut self, now: Instant, datagram: Vec<u8>) {
        let len = datagram.len();
        self.stats.sent += 1;
        // Held by a stall: the link sees it when the stall ends. Datagrams sent
        // later in the stall are seen at the same instant, after it, so the
        // link's own time still never goes backwards.
        let now = self.unstalled(now);
        self.stats.bytes_sent = self.stats.bytes_sent.saturating_add(byte_count(len));

        if self.blackout_until.is_some_and(|end| now < end) {
            self.stats.blackout_drops += 1;
            return;
        }
        if len > self.config.mtu {
            self.stats.oversize += 1;
            return;
        }
        let Some(departs) = self.enqueue(now, len) else {
            self.stats.queue_drops += 1;
            return;
        };
        if self.draw_loss() {
            self.stats.lost += 1;
            return;
        }
        if self.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            self.schedule(departs, datagram.clone());
        }
        self.schedule(departs, datagram);
    }

    /// Earliest time at which [`poll_deliver`](Self::poll_deliver) will
    /// return something, or `None` if nothing is in flight.
    #[must_use]
    pub fn next_delivery(&self) -> Option<Instant> {
        // A stall moves the copies due during it to its end, which keeps their
        // order: the heap's order is still the delivery order.
        self.in_flight
            .peek()
            .map(|Reverse(s)| self.unstalled(s.deliver_at))
    }

    /// Pops the next datagram whose delivery time is `<= now`, in
    /// delivery-time order with ties broken by send order.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_delivery()? > now {
            return None;
        }
        let Reverse(scheduled) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.bytes_delivered = self
            .stats
            .bytes_delivered
            .saturating_add(byte_count(scheduled.datagram.len()));
        Some(scheduled.datagram)
    }

    /// Number of datagram copies sent but not yet delivered.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// A Bernoulli draw. Always consumes exactly one random number, even for
    /// `p == 0`, so enabling an impairment does not shift the random stream of
    /// the decisions after it. `random::<f64>()` is in `[0, 1)`, so `p <= 0`
    /// (and NaN) never fires and `p >= 1` always does.
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// Runs the datagram through the bottleneck. Returns when its last bit
    /// leaves the bottleneck, or `None` if the queue has no room for it.
    fn enqueue(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.config.rate_bytes_per_sec else {
            return Some(now);
        };
        // Forget datagrams that finished serialising: they no longer occupy
        // the buffer.
        while let Some(&(done, done_len)) = self.bottleneck.front() {
            if done > now {
                break;
            }
            self.bottleneck.pop_front();
            self.queued_bytes = self.queued_bytes.saturating_sub(done_len);
        }
        if rate == 0 || self.queued_bytes.saturating_add(len) > self.config.queue_bytes {
            return None;
        }
        // After pruning, the back (if any) finishes after `now`: the link is
        // busy until then and this datagram waits its turn.
        let start = self
            .bottleneck
            .back()
            .map_or(now, |&(done, _)| done.max(now));
        let done = start.checked_add(serialisation_time(len, rate))?;
        self.bottleneck.push_back((done, len));
        self.queued_bytes += len;
        Some(done)
    }

    /// Decides independent and burst loss for one datagram. Both processes
    /// always draw, so the burst chain advances once per datagram regardless
    /// of whether independent loss already claimed it.
    fn draw_loss(&mut self) -> bool {
        let independent = self.chance(self.config.loss);
        let burst = match self.config.burst {
            Some(ge) => {
                // Step first, then lose according to the new state: either
                // order has the same stationary behaviour, and this one makes
                // a Bad run of length k lose exactly k datagrams with the
                // simple Gilbert model.
                let flip = if self.ge_bad {
                    ge.p_bad_to_good
                } else {
                    ge.p_good_to_bad
                };
                if self.chance(flip) {
                    self.ge_bad = !self.ge_bad;
                }
                let loss = if self.ge_bad {
                    ge.loss_bad
                } else {
                    ge.loss_good
                };
                self.chance(loss)
            }
            None => false,
        };
        independent || burst
    }

    /// Applies delay, jitter, reordering and corruption to one copy that left
    /// the bottleneck at `departs`, and puts it in flight.
    fn schedule(&mut self, departs: Instant, mut datagram: Vec<u8>) {
        let jitter = self.draw_jitter();
        let reorder = self.chance(self.config.reorder);
        let corrupt = self.chance(self.config.corrupt);

        let Some(natural) = departs
            .checked_add(self.config.delay)
            .and_then(|t| t.checked_add(jitter))
        else {
            // Only reachable with absurd delays (centuries); such a copy would
            // never arrive, which is indistinguishable from loss.
            self.stats.lost += 1;
            return;
        };
        let deliver_at = if reorder {
            // Held back relative to its own natural time and taken out of the
            // FIFO line, so copies sent after it are free to overtake.
            let Some(late) = natural.checked_add(self.config.reorder_delay) else {
                self.stats.lost += 1;
                return;
            };
            self.stats.reordered += 1;
            late
        } else {
            let fifo = self.last_fifo.map_or(natural, |last| natural.max(last));
            self.last_fifo = Some(fifo);
            fifo
        };
        if corrupt && flip_bits(&mut self.rng, &mut datagram) {
            self.stats.corrupted += 1;
        }

        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push(Reverse(Scheduled {
            deliver_at,
            seq,
            datagram,
        }));
    }

    /// Uniform in `[0, jitter]` at nanosecond resolution.
    fn draw_jitter(&mut self) -> Duration {
        // u64 nanoseconds cover 584 years; saturate rather than fail beyond.
        let max = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        // An inclusive range starting at 0 is never empty, so this cannot panic.
        Duration::from_nanos(self.rng.random_range(0..=max))
    }
}

/// Convenience pair of links forming a bidirectional path between endpoints
/// A and B, since almost every test needs both directions.
#[derive(Debug)]
pub struct Path {
    /// Datagrams sent by A, delivered to B.
    pub a_to_b: Link,
    /// Datagrams sent by B, delivered to A.
    pub b_to_a: Link,
}

impl Path {
    /// Both directions with the same impairments but independent randomness:
    /// identical seeds would make the directions lose the same datagram
    /// indices, a correlation no real path has.
    #[must_use]
    pub fn symmetric(config: LinkConfig, seed: u64) -> Self {
        Self::asymmetric(config.clone(), config, seed)
    }

    /// Each direction with its own impairments (e.g. a slow, lossy uplink),
    /// seeded independently from `seed`.
    #[must_use]
    pub fn asymmetric(a_to_b: LinkConfig, b_to_a: LinkConfig, seed: u64) -> Self {
        let (seed_ab, seed_ba) = direction_seeds(seed);
        Self {
            a_to_b: Link::new(a_to_b, seed_ab),
            b_to_a: Link::new(b_to_a, seed_ba),
        }
    }

    /// Stalls both directions from `start` until `end` (see [`Link::stall`]):
    /// a proxy between A and B that is not scheduled for that long.
    pub fn stall(&mut self, start: Instant, end: Instant) {
        self.a_to_b.stall(start, end);
        self.b_to_a.stall(start, end);
    }
}

/// Two distinct per-direction seeds from one path seed.
///
/// SplitMix64's finaliser is a bijection on `u64`, and the two inputs differ,
/// so the outputs always differ; its mixing also keeps nearby path seeds from
/// giving related direction seeds.
fn direction_seeds(seed: u64) -> (u64, u64) {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let base = seed.wrapping_mul(2);
    (mix(base), mix(base.wrapping_add(1)))
}

/// Flips 1 to 3 *distinct* random bits, so the content is guaranteed to change
/// (flipping one bit twice would silently undo the corruption). Returns
/// whether anything was flipped: an empty datagram has no bits.
///
/// Positions are drawn as `u64` rather than `usize` so the random stream is
/// the same on 32- and 64-bit targets.
fn flip_bits(rng: &mut ChaCha8Rng, datagram: &mut [u8]) -> bool {
    let bits = byte_count(datagram.len()).saturating_mul(8);
    if bits == 0 {
        return false;
    }
    let count = rng.random_range(1..=3u64).min(bits);
    // Sampling without replacement: draw a rank among the bits not yet
    // chosen, then map it to a position by skipping the chosen ones in
    // ascending order. `chosen[..picked]` stays sorted.
    let mut chosen = [0u64; 3];
    let mut picked = 0;
    for k in 0..count {
        // `k < count <= bits`, so the range is non-empty and cannot panic.
        let mut position = rng.random_range(0..bits - k);
        let mut insert_at = picked;
        for (i, &c) in chosen[..picked].iter().enumerate() {
            if position >= c {
                position += 1;
            } else {
                insert_at = i;
                break;
            }
        }
        // `picked < count <= 3` here, so both the shift and the store stay
        // inside the 3-element array.
        chosen.copy_within(insert_at..picked, insert_at + 1);
        chosen[insert_at] = position;
        picked += 1;
    }
    for &position in &chosen[..picked] {
        let byte = usize::try_from(position / 8)
            .ok()
            .and_then(|i| datagram.get_mut(i));
        if let Some(byte) = byte {
            *byte ^= 1 << (position % 8);
        }
    }
    true
}

/// Time for `len` bytes to cross a `rate` bytes/s bottleneck, rounded up so
/// the link never runs faster than configured. `rate` must be non-zero.
fn serialisation_time(len: usize, rate: u64) -> Duration {
    let nanos = (u128::from(byte_count(len)) * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// `usize` to `u64` without `as`: lossless on every supported target, and
/// saturating on any hypothetical wider one.
fn byte_count(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Maps a configured probability to the one [`Link::chance`] actually applies.
fn effective(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Datagram carrying its send index, so tests can tell which one arrived.
    fn numbered(i: u32, len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len.max(4)];
        d[..4].copy_from_slice(&i.to_le_bytes());
        d
    }

    fn index_of(d: &[u8]) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&d[..4]);
        u32::from_le_bytes(b)
    }

    /// The accounting identity every link must satisfy at all times: each
    /// copy (original or duplicate) is exactly one of delivered, in flight,
    /// or dropped by one stage.
    fn assert_accounting(link: &Link) {
        let s = link.stats();
        assert_eq!(
            s.sent + s.duplicated,
            s.delivered
                + link.in_flight() as u64
                + s.lost
                + s.oversize
                + s.queue_drops
                + s.blackout_drops,
            "accounting broken: {s:?}, in flight {}",
            link.in_flight()
        );
    }

    /// Delivers everything due at or before `until`, each at its own delivery
    /// time, as a virtual-time driver would.
    fn deliver_until(link: &mut Link, until: Instant, out: &mut Vec<(Instant, Vec<u8>)>) {
        while let Some(at) = link.next_delivery().filter(|&at| at <= until) {
            let d = link
                .poll_deliver(at)
                .expect("next_delivery promised a datagram");
            out.push((at, d));
            assert_accounting(link);
        }
    }

    /// Sends datagram `i` (of `len` bytes) at `t0 + i * gap` for `i < n`,
    /// interleaving deliveries in time order; returns every delivery.
    fn run(
        link: &mut Link,
        t0: Instant,
        n: u32,
        gap: Duration,
        len: usize,
    ) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..n {
            let now = t0 + gap * i;
            deliver_until(link, now, &mut out);
            link.send(now, numbered(i, len));
            assert_accounting(link);
        }
        deliver_until(link, t0 + Duration::from_secs(1_000_000), &mut out);
        assert_eq!(link.in_flight(), 0);
        out
    }

    fn indices(out: &[(Instant, Vec<u8>)]) -> Vec<u32> {
        out.iter().map(|(_, d)| index_of(d)).collect()
    }

    #[test]
    fn ideal_link_delivers_everything_after_delay_in_order() {
        let t0 = Instant::now();
        let delay = 20 * MS;
        let mut link = Link::new(LinkConfig::ideal(delay), 1);
        for i in 0..100 {
            link.send(t0 + MS * i, numbered(i, 100));
        }
        for i in 0..100 {
            let due = t0 + MS * i + delay;
            assert_eq!(link.next_delivery(), Some(due));
            assert_eq!(
                link.poll_deliver(due - Duration::from_nanos(1)),
                None,
                "early delivery"
            );
            let d = link.poll_deliver(due).expect("due datagram");
            assert_eq!(d, numbered(i, 100));
        }
        assert_eq!(link.poll_deliver(t0 + Duration::from_secs(10)), None);
        // Nothing but sending and delivering happened.
        assert_eq!(
            link.stats(),
            LinkStats {
                sent: 100,
                delivered: 100,
                bytes_sent: 10_000,
                bytes_delivered: 10_000,
                ..LinkStats::default()
            }
        );
    }

    #[test]
    fn simultaneous_sends_are_delivered_in_send_order() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::default(), 1);
        for i in 0..50 {
            link.send(t0, numbered(i, 8));
        }
        let out = run(&mut link, t0, 0, MS, 8);
        assert_eq!(indices(&out), (0..50).collect::<Vec<_>>());
        assert!(out.iter().all(|(at, _)| *at == t0 + 20 * MS));
    }

    fn messy() -> LinkConfig {
        LinkConfig::ideal(10 * MS)
            .with_jitter(5 * MS)
            .with_loss(0.1)
            .with_burst(GilbertElliott::gilbert(0.02, 0.3))
            .with_duplicate(0.05)
            .with_reorder(0.05, 15 * MS)
            .with_corrupt(0.05)
            .with_rate(1_000_000, 20_000)
    }

    #[test]
    fn same_seed_same_result_different_seed_different_losses() {
        let t0 = Instant::now();
        let go = |seed| {
            let mut link = Link::new(messy(), seed);
            let out = run(&mut link, t0, 5_000, MS, 200);
            (out, link.stats())
        };
        let (a, stats_a) = go(7);
        let (b, stats_b) = go(7);
        assert_eq!(
            a, b,
            "same seed must give identical deliveries, times and bytes"
        );
        assert_eq!(stats_a, stats_b);

        let (c, _) = go(8);
        let arrived = |out: &[(Instant, Vec<u8>)]| {
            let mut v = indices(out);
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_ne!(
            arrived(&a),
            arrived(&c),
            "different seeds should lose different datagrams"
        );
    }

    #[test]
    fn independent_loss_rate_matches_config() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(MS).with_loss(0.1), 42);
        let n = 100_000;
        let out = run(&mut link, t0, n, Duration::from_micros(10), 4);
        let rate = link.stats().lost as f64 / f64::from(n);
        // One standard deviation is ~0.00095; 0.005 is > 5 sigma.
        assert!((rate - 0.1).abs() < 0.005, "loss rate {rate}");
        assert_eq!(out.len() as u64 + link.stats().lost, u64::from(n));
    }

    #[test]
    fn gilbert_elliott_mean_loss_formula() {
        let ge = GilbertElliott {
            p_good_to_bad: 0.1,
            p_bad_to_good: 0.3,
            loss_good: 0.01,
            loss_bad: 0.5,
        };
        assert!((ge.stationary_bad() - 0.25).abs() < 1e-12);
        assert!((ge.mean_loss() - (0.75 * 0.01 + 0.25 * 0.5)).abs() < 1e-12);
        // A chain that can never move stays in Good, where it starts.
        let stuck = GilbertElliott {
            p_good_to_bad: 0.0,
            p_bad_to_good: 0.0,
            loss_good: 0.2,
            loss_bad: 1.0,
        };
        assert_eq!(stuck.mean_loss(), 0.2);
        assert_eq!(stuck.mean_bad_run(), f64::INFINITY);
        assert_eq!(GilbertElliott::gilbert(0.1, 0.25).mean_bad_run(), 4.0);
    }

    #[test]
    fn gilbert_elliott_produces_bursts() {
        let t0 = Instant::now();
        let ge = GilbertElliott::gilbert(0.01, 0.25);
        let mut link = Link::new(LinkConfig::ideal(MS).with_burst(ge), 3);
        let n = 200_000u32;
        let out = run(&mut link, t0, n, Duration::from_micros(10), 4);

        let mut delivered = vec![false; n as usize];
        for i in indices(&out) {
            delivered[i as usize] = true;
        }
        let lost = delivered.iter().filter(|d| !**d).count();
        let bursts =
            delivered.windows(2).filter(|w| w[0] && !w[1]).count() + usize::from(!delivered[0]);
        let rate = lost as f64 / f64::from(n);
        let mean_burst = lost as f64 / bursts as f64;

        assert_eq!(lost as u64, link.stats().lost);
        // Expected 0.0385; burst correlation widens the spread versus Bernoulli.
        assert!(
            (rate - ge.mean_loss()).abs() < 0.004,
            "loss rate {rate} vs {}",
            ge.mean_loss()
        );
        // Expected 4; independent loss at this rate would give ~1.04.
        assert!(
            (mean_burst - ge.mean_bad_run()).abs() < 0.3,
            "mean burst {mean_burst}"
        );
    }

    #[test]
    fn duplication_delivers_extra_copies() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(5 * MS).with_duplicate(1.0), 1);
        let out = run(&mut link, t0, 100, MS, 16);
        assert_eq!(out.len(), 200);
        let mut idx = indices(&out);
        idx.sort_unstable();
        assert_eq!(idx, (0..100).flat_map(|i| [i, i]).collect::<Vec<_>>());
        assert_eq!(link.stats().duplicated, 100);

        let mut link = Link::new(LinkConfig::ideal(5 * MS).with_duplicate(0.2), 1);
        let out = run(&mut link, t0, 10_000, MS, 16);
        let dups = link.stats().duplicated;
        assert_eq!(out.len() as u64, 10_000 + dups);
        assert!((1_800..2_200).contains(&dups), "duplicated {dups}");
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(10 * MS).with_reorder(0.1, 30 * MS), 5);
        let out = run(&mut link, t0, 1_000, MS, 8);
        let idx = indices(&out);
        assert_eq!(idx.len(), 1_000, "reordering must not lose anything");
        let overtaken = idx.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(
            overtaken > 0,
            "no datagram was delivered after a later-sent one"
        );
        assert!(
            (50..150).contains(&link.stats().reordered),
            "{:?}",
            link.stats()
        );
        // A held-back datagram arrives exactly reorder_delay late.
        for (at, d) in &out {
            let natural = t0 + MS * index_of(d) + 10 * MS;
            assert!(*at == natural || *at == natural + 30 * MS);
        }
    }

    #[test]
    fn jitter_alone_keeps_fifo() {
        let t0 = Instant::now();
        let delay = 10 * MS;
        let mut link = Link::new(LinkConfig::ideal(delay).with_jitter(30 * MS), 9);
        // Jitter larger than the send gap: unclamped, many datagrams would
        // overtake their predecessor.
        let gap = 20 * MS;
        let out = run(&mut link, t0, 2_000, gap, 8);
        assert_eq!(indices(&out), (0..2_000).collect::<Vec<_>>());
        let extra: Vec<Duration> = out
            .iter()
            .map(|(at, d)| *at - (t0 + gap * index_of(d) + delay))
            .collect();
        // Jitter did happen (delays vary) but never made anything early.
        assert!(extra.iter().any(|e| *e > 5 * MS));
        assert!(extra.iter().any(|e| *e < MS));
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(link.stats().reordered, 0);
    }

    #[test]
    fn corruption_flips_one_to_three_bits() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(MS).with_corrupt(1.0), 11);
        let out = run(&mut link, t0, 1_000, MS, 64);
        assert_eq!(out.len(), 1_000);
        assert_eq!(link.stats().corrupted, 1_000);
        let mut seen = [0usize; 4];
        for (i, (_, d)) in out.iter().enumerate() {
            let original = numbered(i as u32, 64);
            assert_eq!(d.len(), original.len());
            let flipped: u32 = d
                .iter()
                .zip(&original)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert!((1..=3).contains(&flipped), "{flipped} bits flipped");
            seen[flipped as usize] += 1;
        }
        assert!(
            seen[1] > 0 && seen[2] > 0 && seen[3] > 0,
            "bit counts {seen:?}"
        );

        // An empty datagram has nothing to corrupt; it still arrives.
        link.send(t0 + Duration::from_secs(10), Vec::new());
        assert_eq!(
            link.poll_deliver(t0 + Duration::from_secs(11)),
            Some(Vec::new())
        );
        assert_eq!(link.stats().corrupted, 1_000);
    }

    #[test]
    fn mtu_drops_oversize_datagrams() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(MS).with_mtu(100), 1);
        link.send(t0, vec![1; 100]);
        link.send(t0, vec![2; 101]);
        link.send(t0, vec![3; 99]);
        assert_accounting(&link);
        assert_eq!(link.poll_deliver(t0 + MS), Some(vec![1; 100]));
        assert_eq!(link.poll_deliver(t0 + MS), Some(vec![3; 99]));
        assert_eq!(link.poll_deliver(t0 + MS), None);
        assert_eq!(link.stats().oversize, 1);
        assert_eq!(link.stats().bytes_delivered, 199);
    }

    #[test]
    fn blackout_drops_during_window_then_recovers() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(5 * MS), 1);
        // In flight before the outage: still delivered.
        link.send(t0, numbered(999, 8));
        link.blackout_until(t0 + Duration::from_secs(1));
        let out = run(&mut link, t0 + MS, 200, 10 * MS, 8);
        // Sent at t0 + 1ms + i*10ms: i = 0..=99 fall before t0 + 1s.
        let mut expected: Vec<u32> = vec![999];
        expected.extend(100..200);
        assert_eq!(indices(&out), expected);
        assert_eq!(link.stats().blackout_drops, 100);

        // Ending an outage early by replacing its end time.
        let t1 = t0 + Duration::from_secs(10);
        link.blackout_until(t1 + Duration::from_secs(60));
        link.send(t1, vec![1]);
        link.blackout_until(t1);
        link.send(t1, vec![2]);
        assert_eq!(link.poll_deliver(t1 + 5 * MS), Some(vec![2]));
        assert_eq!(link.stats().blackout_drops, 101);
    }

    #[test]
    fn a_stall_holds_everything_then_releases_a_burst_into_the_bottleneck() {
        let t0 = Instant::now();
        // 100-byte datagrams at 1000 B/s take 100 ms each; the buffer holds 5.
        let mut link = Link::new(LinkConfig::ideal(10 * MS).with_rate(1_000, 500), 1);
        link.stall(t0 + 50 * MS, t0 + 300 * MS);
        // Sent before the stall, due out during it (t0 + 110 ms): held to its end.
        link.send(t0, numbered(0, 100));
        assert_eq!(link.next_delivery(), Some(t0 + 300 * MS));
        assert_eq!(link.poll_deliver(t0 + 299 * MS), None);
        // Eight sent during the stall enter the bottleneck together when it ends:
        // five fit in its buffer, three are tail-dropped.
        for i in 1..=8 {
            link.send(t0 + (50 + 10 * i) * MS, numbered(i, 100));
        }
        assert_eq!(link.poll_deliver(t0 + 300 * MS), Some(numbered(0, 100)));
        let mut out = Vec::new();
        let mut now = t0 + 300 * MS;
        while let Some(at) = link.next_delivery() {
            now = now.max(at);
            let d = link.poll_deliver(now).expect("due");
            out.push((index_of(&d), now - t0));
        }
        let expected: Vec<(u32, Duration)> =
            (1..=5).map(|k| (k, (300 + 100 * k + 10) * MS)).collect();
        assert_eq!(out, expected, "a burst at the end, at the link's rate");
        assert_eq!(link.stats().queue_drops, 3);
        assert_accounting(&link);
        // After the stall the link is itself again.
        link.send(now, numbered(9, 100));
        assert_eq!(link.next_delivery(), Some(now + 110 * MS));
    }

    #[test]
    fn rate_limit_spaces_deliveries_and_tail_drops() {
        let t0 = Instant::now();
        // 100-byte datagrams at 1000 B/s take 100 ms each; the buffer holds 10.
        let mut link = Link::new(LinkConfig::ideal(20 * MS).with_rate(1_000, 1_000), 1);
        for i in 0..15 {
            link.send(t0, numbered(i, 100));
        }
        assert_eq!(link.stats().queue_drops, 5);
        assert_eq!(link.in_flight(), 10);
        let mut out = Vec::new();
        deliver_until(&mut link, t0 + Duration::from_secs(60), &mut out);
        for (k, (at, d)) in out.iter().enumerate() {
            assert_eq!(index_of(d), k as u32);
            assert_eq!(*at, t0 + 100 * MS * (k as u32 + 1) + 20 * MS);
        }

        // After 250 ms, 2 datagrams have finished serialising, freeing room
        // for exactly 2 more (queued behind the remaining 8); the third drops.
        let mut link = Link::new(LinkConfig::ideal(20 * MS).with_rate(1_000, 1_000), 1);
        for i in 0..10 {
            link.send(t0, numbered(i, 100));
        }
        for i in 10..13 {
            link.send(t0 + 250 * MS, numbered(i, 100));
        }
        assert_eq!(link.stats().queue_drops, 1);
        let mut out = Vec::new();
        deliver_until(&mut link, t0 + Duration::from_secs(60), &mut out);
        assert_eq!(indices(&out), (0..12).collect::<Vec<_>>());
        assert_eq!(
            out.last().map(|(at, _)| *at),
            Some(t0 + 1_200 * MS + 20 * MS)
        );

        // A zero rate carries nothing.
        let mut link = Link::new(LinkConfig::ideal(MS).with_rate(0, 1_000), 1);
        link.send(t0, vec![0; 10]);
        assert_eq!((link.stats().queue_drops, link.in_flight()), (1, 0));
    }

    #[test]
    fn stats_add_up_under_every_impairment() {
        let t0 = Instant::now();
        let config = messy().with_mtu(1_000).with_rate(300_000, 3_000);
        let mut link = Link::new(config, 13);
        link.blackout_until(t0 + Duration::from_millis(500));
        // Sizes 200..=1_100 exercise the MTU; 1 ms spacing at ~650 B average
        // overloads the 300 kB/s bottleneck so the queue tail-drops.
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            let now = t0 + MS * i;
            deliver_until(&mut link, now, &mut out);
            link.send(now, numbered(i, 200 + (i as usize * 37) % 901));
            assert_accounting(&link);
        }
        deliver_until(&mut link, t0 + Duration::from_secs(1_000), &mut out);
        assert_accounting(&link);

        let s = link.stats();
        for (name, v) in [
            ("lost", s.lost),
            ("duplicated", s.duplicated),
            ("reordered", s.reordered),
            ("corrupted", s.corrupted),
            ("oversize", s.oversize),
            ("queue_drops", s.queue_drops),
            ("blackout_drops", s.blackout_drops),
        ] {
            assert!(v > 0, "{name} never happened: {s:?}");
        }
        assert_eq!(s.delivered, out.len() as u64);
        assert_eq!(
            s.bytes_delivered,
            out.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
        );
        assert!(s.bytes_delivered < s.bytes_sent);
    }

    #[test]
    fn set_config_applies_to_later_sends_only() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(10 * MS), 1);
        link.send(t0, vec![1]);
        link.set_config(LinkConfig::ideal(50 * MS).with_loss(1.0));
        assert_eq!(link.config().delay, 50 * MS);
        link.send(t0, vec![2]);
        assert_eq!(link.poll_deliver(t0 + 10 * MS), Some(vec![1]));
        assert_eq!(link.next_delivery(), None);
        assert_eq!(link.stats().lost, 1);
    }

    #[test]
    fn path_directions_are_independent() {
        let t0 = Instant::now();
        let mut path = Path::symmetric(LinkConfig::ideal(MS).with_loss(0.5), 77);
        assert_eq!(path.a_to_b.config(), path.b_to_a.config());
        let ab = indices(&run(&mut path.a_to_b, t0, 1_000, MS, 4));
        let ba = indices(&run(&mut path.b_to_a, t0, 1_000, MS, 4));
        assert_ne!(ab, ba, "both directions lost the same datagrams");
        let (x, y) = direction_seeds(0);
        assert_ne!(x, y);
    }
}
