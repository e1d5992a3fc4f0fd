//! Datagram packetization layer path MTU discovery (RFC 8899, as QUIC does it in RFC 9000
//! §14.3): the largest datagram a connection sends, found by probing.
//!
//! Every path carries [`BASE`] (1,200) bytes; a connection starts there. Once the handshake
//! is confirmed it sends a padded, ack-eliciting probe of the configured ceiling
//! ([`crate::TransportConfig::max_datagram_size`], 1,452 by default: IPv4 over an
//! Ethernet-sized path); an acknowledged probe raises the size at once, so on the common path
//! one round trip reaches the ceiling. A size whose probe is lost [`MAX_PROBES`] times in a
//! row is taken as too large, and a binary search runs between the largest size acknowledged
//! and the smallest that failed, down to [`SEARCH_GRANULARITY`]. A search that ended below the
//! ceiling starts again after [`RAISE_INTERVAL`] (the path may have grown).
//!
//! A probe carries no data, so its loss repairs nothing and is not a congestion signal: the
//! connection leaves it out of the congestion controller, the loss estimate and the
//! statistics of lost packets.
//!
//! **Black holes.** A path that stops carrying the size in use (a route change, a tunnel)
//! shows it one of two ways: nothing at all is acknowledged, and probe timeouts follow one
//! another ([`BLACK_HOLE_PTOS`] in a row); or small packets are acknowledged while the large
//! ones sent before them are lost, [`BLACK_HOLE_LOSSES`] loss detections in a row with no
//! large packet acknowledged in between. Either drops the size back to [`BASE`], and a new
//! search starts [`BLACK_HOLE_RETRY`] later. Random loss does neither: a loss is only
//! suspicious when no large packet sent at the same time or later got through, and the first
//! acknowledged large packet clears the count.
//!
//! All of it is event-driven: a handful of integers updated per acknowledgement, loss or
//! probe timeout, and one deadline ([`Pmtud::deadline`]) in the connection's timers.

use std::time::{Duration, Instant};

use crate::wire::MIN_INITIAL_SIZE;

/// The datagram size every path carries (QUIC's minimum; the size of an INITIAL).
pub const BASE: usize = MIN_INITIAL_SIZE;
/// Default ceiling: 1,500-byte Ethernet MTU minus a 20-byte IPv4 and an 8-byte UDP header,
/// minus 20 bytes of room for a tunnel (as quinn's default upper bound).
pub const DEFAULT_CEILING: usize = 1_452;
/// The largest ceiling that can be configured: the largest UDP payload over IPv4. Every
/// receiver takes datagrams up to this size (PROTOCOL.md §2.1).
pub const MAX_CEILING: usize = 65_507;
/// Probes of one size lost in a row before the size is taken as too large (RFC 8899
/// MAX_PROBES).
pub const MAX_PROBES: u8 = 3;
/// The binary search stops once the range left is narrower than this many bytes.
pub const SEARCH_GRANULARITY: usize = 20;
/// A search that ended below the ceiling runs again after this long (RFC 8899
/// PMTU_RAISE_TIMER).
pub const RAISE_INTERVAL: Duration = Duration::from_secs(600);
/// After a black hole, the search runs again after this long.
pub const BLACK_HOLE_RETRY: Duration = Duration::from_secs(60);
/// Probe timeouts in a row, with nothing acknowledged, that mean the size in use is lost.
pub const BLACK_HOLE_PTOS: u32 = 2;
/// Loss detections in a row that lost a large packet while no large packet was acknowledged.
pub const BLACK_HOLE_LOSSES: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Probing `size`; `in_flight` is the probe's packet number while one is out.
    Searching {
        /// The largest size known to work (acknowledged).
        low: usize,
        /// The smallest size known not to work, or one past the ceiling.
        high: usize,
        size: usize,
        in_flight: Option<u64>,
        lost: u8,
    },
    /// Not searching; the next search starts at `next` (`None`: never, the ceiling is
    /// reached or discovery is off).
    Idle { next: Option<Instant> },
}

/// One connection's path MTU discovery.
#[derive(Debug, Clone)]
pub(crate) struct Pmtud {
    ceiling: usize,
    current: usize,
    phase: Phase,
    /// The largest packet number of a packet larger than [`BASE`] acknowledged.
    largest_large_acked: Option<u64>,
    /// Loss detections in a row that lost a large packet sent after `largest_large_acked`.
    suspicious: u32,
    /// Times the size fell back to [`BASE`] (a statistic).
    pub(crate) black_holes: u64,
}

impl Pmtud {
    /// Discovery up to `ceiling` bytes (clamped to `BASE..=MAX_CEILING`); a ceiling of
    /// [`BASE`] turns it off.
    pub(crate) fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.clamp(BASE, MAX_CEILING);
        let mut p = Self {
            ceiling,
            current: BASE,
            phase: Phase::Idle { next: None },
            largest_large_acked: None,
            suspicious: 0,
            black_holes: 0,
        };
        p.search();
        p
    }

    /// The largest datagram to send now.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// When [`Self::on_timeout`] has work: the next search.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { next } => next,
            Phase::Searching { .. } => None,
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|t| now >= t) {
            self.search();
        }
    }

    /// Starts a search from the current size: the ceiling first, as the likeliest answer.
    fn search(&mut self) {
        self.phase = if self.current < self.ceiling {
            Phase::Searching {
                low: self.current,
                high: self.ceiling + 1,
                size: self.ceiling,
                in_flight: None,
                lost: 0,
            }
        } else {
            Phase::Idle { next: None }
        };
    }

    /// The size of the probe to send now, if one is due (none is out).
    pub(crate) fn probe_due(&self) -> Option<usize> {
        match self.phase {
            Phase::Searching {
                size,
                in_flight: None,
                ..
            } => Some(size),
            _ => None,
        }
    }

    /// The probe asked for by [`Self::probe_due`] went out as packet `pn`.
    pub(crate) fn on_probe_sent(&mut self, pn: u64) {
        if let Phase::Searching { in_flight, .. } = &mut self.phase {
            *in_flight = Some(pn);
        }
    }

    /// Packet `pn`, a probe of `size` bytes, was acknowledged: returns the new current size if
    /// it grew.
    pub(crate) fn on_probe_acked(&mut self, now: Instant, pn: u64, size: usize) -> Option<usize> {
        self.on_large_acked(pn, size);
        let Phase::Searching {
            high, in_flight, ..
        } = self.phase
        else {
            return None;
        };
        if in_flight != Some(pn) {
            return None;
        }
        let grew = size > self.current;
        self.current = self.current.max(size);
        self.next_size(now, self.current, high);
        grew.then_some(self.current)
    }

    /// Packet `pn`, a probe, was declared lost.
    pub(crate) fn on_probe_lost(&mut self, now: Instant, pn: u64) {
        let Phase::Searching {
            low,
            size,
            in_flight,
            lost,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if *in_flight != Some(pn) {
            return;
        }
        *in_flight = None;
        *lost += 1;
        if *lost >= MAX_PROBES {
            let (low, size) = (*low, *size);
            self.next_size(now, low, size);
        }
    }

    /// The search knows `low` works and `high` does not: probe between, or stop.
    fn next_size(&mut self, now: Instant, low: usize, high: usize) {
        if high - low <= SEARCH_GRANULARITY || low >= self.ceiling {
            let next = (self.current < self.ceiling).then(|| now + RAISE_INTERVAL);
            self.phase = Phase::Idle { next };
            return;
        }
        self.phase = Phase::Searching {
            low,
            high,
            size: low + (high - low) / 2,
            in_flight: None,
            lost: 0,
        };
    }

    /// A packet of `size` bytes (not necessarily a probe) was acknowledged.
    pub(crate) fn on_large_acked(&mut self, pn: u64, size: usize) {
        if size > BASE {
            self.largest_large_acked = Some(self.largest_large_acked.map_or(pn, |l| l.max(pn)));
            self.suspicious = 0;
        }
    }

    /// One loss detection declared lost packets that were not probes; `largest_large` is the
    /// largest packet number among those larger than [`BASE`]. Returns whether the size fell
    /// back to [`BASE`].
    pub(crate) fn on_loss(&mut self, now: Instant, largest_large: Option<u64>) -> bool {
        let Some(pn) = largest_large else {
            return false;
        };
        if self.largest_large_acked.is_some_and(|a| a > pn) {
            // A large packet sent later got through: this loss is not the path's size.
            return false;
        }
        self.suspicious += 1;
        self.suspicious >= BLACK_HOLE_LOSSES && self.black_hole(now)
    }

    /// The `pto_count`-th probe timeout in a row fired. Returns whether the size fell back.
    pub(crate) fn on_pto(&mut self, now: Instant, pto_count: u32) -> bool {
        pto_count >= BLACK_HOLE_PTOS && self.black_hole(now)
    }

    /// Back to [`BASE`] if above it; the search starts again after [`BLACK_HOLE_RETRY`].
    fn black_hole(&mut self, now: Instant) -> bool {
        self.suspicious = 0;
        if self.current <= BASE {
            return false;
        }
        self.current = BASE;
        self.largest_large_acked = None;
        self.black_holes += 1;
        self.phase = Phase::Idle {
            next: Some(now + BLACK_HOLE_RETRY),
        };
        true
    }

    /// The peer moved to a new path: back to [`BASE`], and search it from there.
    pub(crate) fn on_new_path(&mut self) {
        self.current = BASE;
        self.largest_large_acked = None;
        self.suspicious = 0;
        self.search();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn an_acknowledged_probe_of_the_ceiling_ends_the_search_at_once() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        assert_eq!(p.current(), BASE);
        assert_eq!(p.probe_due(), Some(DEFAULT_CEILING));
        p.on_probe_sent(7);
        assert_eq!(p.probe_due(), None, "one probe at a time");
        assert_eq!(
            p.on_probe_acked(now, 7, DEFAULT_CEILING),
            Some(DEFAULT_CEILING)
        );
        assert_eq!(p.current(), DEFAULT_CEILING);
        assert_eq!(p.probe_due(), None);
        assert_eq!(p.deadline(), None, "at the ceiling: no further search");
    }

    #[test]
    fn a_ceiling_of_the_base_turns_discovery_off() {
        let p = Pmtud::new(1_000);
        assert_eq!(p.current(), BASE);
        assert_eq!(p.probe_due(), None);
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn lost_probes_bisect_down_to_what_the_path_carries() {
        // A path that carries 1,300 bytes.
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        let mut pn = 0;
        let mut probes = 0;
        while let Some(size) = p.probe_due() {
            probes += 1;
            assert!(probes < 40, "the search ends");
            p.on_probe_sent(pn);
            if size <= 1_300 {
                p.on_probe_acked(now, pn, size);
            } else {
                p.on_probe_lost(now, pn);
            }
            pn += 1;
        }
        assert!(
            (1_300 - SEARCH_GRANULARITY..=1_300).contains(&p.current()),
            "{}",
            p.current()
        );
        assert_eq!(
            p.deadline(),
            Some(now + RAISE_INTERVAL),
            "searched again later"
        );
        p.on_timeout(now + RAISE_INTERVAL);
        assert_eq!(p.probe_due(), Some(DEFAULT_CEILING));
    }

    #[test]
    fn a_path_that_carries_only_the_base_stays_there() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        let mut pn = 0;
        while let Some(_size) = p.probe_due() {
            p.on_probe_sent(pn);
            p.on_probe_lost(now, pn);
            pn += 1;
            assert!(pn < 40);
        }
        assert_eq!(p.current(), BASE);
        // 3 probes of the ceiling, then 3 of each bisection step.
        assert_eq!(pn % u64::from(MAX_PROBES), 0);
    }

    #[test]
    fn stale_probe_answers_are_ignored() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        p.on_probe_sent(3);
        assert_eq!(p.on_probe_acked(now, 2, 1_400), None);
        p.on_probe_lost(now, 4);
        assert_eq!(p.probe_due(), None, "probe 3 is still out");
    }

    #[test]
    fn repeated_probe_timeouts_fall_back_to_the_base() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        p.on_probe_sent(1);
        p.on_probe_acked(now, 1, DEFAULT_CEILING);
        assert!(!p.on_pto(now, 1));
        assert!(p.on_pto(now, 2));
        assert_eq!(p.current(), BASE);
        assert_eq!(p.black_holes, 1);
        assert_eq!(p.deadline(), Some(now + BLACK_HOLE_RETRY));
        assert!(!p.on_pto(now, 3), "already at the base");
        p.on_timeout(now + BLACK_HOLE_RETRY);
        assert_eq!(p.probe_due(), Some(DEFAULT_CEILING));
    }

    #[test]
    fn losses_fall_back_only_when_no_later_large_packet_got_through() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        p.on_probe_sent(1);
        p.on_probe_acked(now, 1, DEFAULT_CEILING);
        // Random loss: large packets acknowledged after the ones lost.
        for i in 0..10 {
            p.on_large_acked(100 + 10 * i, 1_452);
            assert!(!p.on_loss(now, Some(95 + 10 * i)));
        }
        // Losses of small packets only say nothing.
        assert!(!p.on_loss(now, None));
        // A black hole: only small packets get through.
        assert!(!p.on_loss(now, Some(200)));
        assert!(!p.on_loss(now, Some(210)));
        // An acknowledged large packet clears the count.
        p.on_large_acked(220, 1_452);
        assert!(!p.on_loss(now, Some(230)));
        assert!(!p.on_loss(now, Some(240)));
        assert!(p.on_loss(now, Some(250)));
        assert_eq!(p.current(), BASE);
    }

    #[test]
    fn a_new_path_starts_from_the_base() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        p.on_probe_sent(1);
        p.on_probe_acked(now, 1, DEFAULT_CEILING);
        p.on_new_path();
        assert_eq!(p.current(), BASE);
        assert_eq!(p.probe_due(), Some(DEFAULT_CEILING));
    }
}
