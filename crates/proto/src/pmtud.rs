//! Datagram packetization layer path MTU discovery (RFC 8899, as QUIC does it in RFC 9000
//! §14.3): the largest datagram a connection sends, found by probing.
//!
//! Every path carries [`BASE`] (1,200) bytes; a connection starts there. Once the handshake
//! is confirmed it sends a padded, ack-eliciting probe of the configured ceiling
//! ([`crate::TransportConfig::max_datagram_size`]: off, 1,200, by default; [`DEFAULT_CEILING`],
//! 1,452, suits IPv4 over an Ethernet-sized path); an acknowledged probe raises the size at once, so on the common path
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
//! ones are lost, [`BLACK_HOLE_LOSSES`] loss detections in a row that lose a large packet with
//! no large packet acknowledged in between. Either drops the size back to [`BASE`], and a new
//! search starts [`BLACK_HOLE_RETRY`] later. Random loss does neither: large packets keep
//! arriving between the losses, and each one acknowledged clears the count (acknowledgements
//! are taken before the loss detection they trigger).
//!
//! All of it is event-driven: a handful of integers updated per acknowledgement, loss or
//! probe timeout, and one deadline ([`Pmtud::deadline`]) in the connection's timers.

use std::time::{Duration, Instant};

use crate::wire::MIN_INITIAL_SIZE;

/// The datagram size every path carries (QUIC's minimum; the size of an INITIAL).
pub const BASE: usize = MIN_INITIAL_SIZE;
/// The ceiling for an Ethernet-sized path: 1,500-byte MTU minus a 20-byte IPv4 and an 8-byte
/// UDP header, minus 20 bytes of room for a tunnel (quinn's default upper bound). Not the
/// default of `max_datagram_size` (1,200, off): see PROTOCOL.md §6.9.
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

/// A search under way, or the wait for the next one: boxed, so that a connection that has
/// settled at the ceiling (the common case) holds none of it (an idle connection must stay
/// small).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Search {
    /// The largest size known to work (acknowledged).
    low: u16,
    /// The smallest size known not to work, or one past the ceiling.
    high: u16,
    /// The size probed now.
    size: u16,
    /// Probes of `size` lost so far.
    lost: u8,
    /// The probe's packet number while one is out.
    in_flight: Option<u64>,
    /// Not searching now: the search starts (again) at this instant.
    next: Option<Instant>,
}

/// One connection's path MTU discovery: 16 bytes when idle.
#[derive(Debug, Clone)]
pub(crate) struct Pmtud {
    /// `None`: no search under way or planned (the ceiling is reached, or discovery is off).
    search: Option<Box<Search>>,
    current: u16,
    ceiling: u16,
    /// Loss detections in a row that lost a packet larger than [`BASE`], with none larger than
    /// [`BASE`] acknowledged in between.
    suspicious: u8,
}

/// Sizes are at most [`MAX_CEILING`], which fits.
fn narrow(size: usize) -> u16 {
    u16::try_from(size.min(MAX_CEILING)).unwrap_or(u16::MAX)
}

impl Pmtud {
    /// Discovery up to `ceiling` bytes (clamped to `BASE..=MAX_CEILING`); a ceiling of
    /// [`BASE`] turns it off.
    pub(crate) fn new(ceiling: usize) -> Self {
        let mut p = Self {
            search: None,
            current: narrow(BASE),
            ceiling: narrow(ceiling.clamp(BASE, MAX_CEILING)),
            suspicious: 0,
        };
        p.search();
        p
    }

    /// The largest datagram to send now.
    pub(crate) fn current(&self) -> usize {
        usize::from(self.current)
    }

    /// When [`Self::on_timeout`] has work: the next search.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.search.as_ref().and_then(|s| s.next)
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|t| now >= t) {
            self.search();
        }
    }

    /// Starts a search from the current size: the ceiling first, as the likeliest answer.
    fn search(&mut self) {
        self.search = (self.current < self.ceiling).then(|| {
            Box::new(Search {
                low: self.current,
                high: self.ceiling.saturating_add(1),
                size: self.ceiling,
                lost: 0,
                in_flight: None,
                next: None,
            })
        });
    }

    /// The size of the probe to send now, if one is due (none is out, none is waited for).
    pub(crate) fn probe_due(&self) -> Option<usize> {
        let s = self.search.as_deref()?;
        (s.next.is_none() && s.in_flight.is_none()).then_some(usize::from(s.size))
    }

    /// The probe asked for by [`Self::probe_due`] went out as packet `pn`.
    pub(crate) fn on_probe_sent(&mut self, pn: u64) {
        if let Some(s) = self.search.as_deref_mut() {
            s.in_flight = Some(pn);
        }
    }

    /// The probe in flight, if `pn` is it.
    fn probe(&mut self, pn: u64) -> Option<&mut Search> {
        self.search
            .as_deref_mut()
            .filter(|s| s.next.is_none() && s.in_flight == Some(pn))
    }

    /// Packet `pn`, a probe of `size` bytes, was acknowledged: returns the new current size if
    /// it grew.
    pub(crate) fn on_probe_acked(&mut self, now: Instant, pn: u64, size: usize) -> Option<usize> {
        self.on_large_acked(size);
        let high = self.probe(pn)?.high;
        let size = narrow(size);
        let grew = size > self.current;
        self.current = self.current.max(size);
        self.next_size(now, self.current, high);
        grew.then_some(self.current())
    }

    /// Packet `pn`, a probe, was declared lost.
    pub(crate) fn on_probe_lost(&mut self, now: Instant, pn: u64) {
        let Some(s) = self.probe(pn) else {
            return;
        };
        s.in_flight = None;
        s.lost += 1;
        if s.lost >= MAX_PROBES {
            let (low, size) = (s.low, s.size);
            self.next_size(now, low, size);
        }
    }

    /// The search knows `low` works and `high` does not: probe between, or stop.
    fn next_size(&mut self, now: Instant, low: u16, high: u16) {
        if usize::from(high - low) <= SEARCH_GRANULARITY || low >= self.ceiling {
            // Below the ceiling, the path may grow: search again later.
            self.search = (self.current < self.ceiling).then(|| {
                Box::new(Search {
                    low: 0,
                    high: 0,
                    size: 0,
                    lost: 0,
                    in_flight: None,
                    next: Some(now + RAISE_INTERVAL),
                })
            });
            return;
        }
        if let Some(s) = self.search.as_deref_mut() {
            *s = Search {
                low,
                high,
                size: low + (high - low) / 2,
                lost: 0,
                in_flight: None,
                next: None,
            };
        }
    }

    /// A packet of `size` bytes (not necessarily a probe) was acknowledged.
    pub(crate) fn on_large_acked(&mut self, size: usize) {
        if size > BASE {
            self.suspicious = 0;
        }
    }

    /// One loss detection declared lost packets that were not probes, `large` of them larger
    /// than [`BASE`]. Returns whether the size fell back to [`BASE`]. (Acknowledgements are
    /// processed before the loss detection they trigger, so random loss, where later large
    /// packets keep arriving, keeps the count at one at most.)
    pub(crate) fn on_loss(&mut self, now: Instant, large: bool) -> bool {
        if !large {
            return false;
        }
        self.suspicious = self.suspicious.saturating_add(1);
        u32::from(self.suspicious) >= BLACK_HOLE_LOSSES && self.black_hole(now)
    }

    /// The `pto_count`-th probe timeout in a row fired. Returns whether the size fell back.
    pub(crate) fn on_pto(&mut self, now: Instant, pto_count: u32) -> bool {
        pto_count >= BLACK_HOLE_PTOS && self.black_hole(now)
    }

    /// Back to [`BASE`] if above it; the search starts again after [`BLACK_HOLE_RETRY`].
    fn black_hole(&mut self, now: Instant) -> bool {
        self.suspicious = 0;
        if self.current() <= BASE {
            return false;
        }
        self.current = narrow(BASE);
        self.search = Some(Box::new(Search {
            low: 0,
            high: 0,
            size: 0,
            lost: 0,
            in_flight: None,
            next: Some(now + BLACK_HOLE_RETRY),
        }));
        true
    }

    /// The peer moved to a new path: back to [`BASE`], and search it from there.
    pub(crate) fn on_new_path(&mut self) {
        self.current = narrow(BASE);
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
        assert_eq!(p.deadline(), Some(now + BLACK_HOLE_RETRY));
        assert_eq!(p.probe_due(), None, "no probe before the retry");
        assert!(!p.on_pto(now, 3), "already at the base");
        p.on_timeout(now + BLACK_HOLE_RETRY);
        assert_eq!(p.probe_due(), Some(DEFAULT_CEILING));
    }

    #[test]
    fn losses_fall_back_only_when_no_large_packet_gets_through() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        p.on_probe_sent(1);
        p.on_probe_acked(now, 1, DEFAULT_CEILING);
        // Random loss: large packets acknowledged between the losses.
        for _ in 0..10 {
            p.on_large_acked(1_452);
            assert!(!p.on_loss(now, true));
        }
        // Losses of small packets only say nothing; small packets acknowledged clear nothing.
        assert!(!p.on_loss(now, false));
        p.on_large_acked(BASE);
        // A black hole: only small packets get through.
        assert!(!p.on_loss(now, true));
        // An acknowledged large packet clears the count.
        p.on_large_acked(1_452);
        assert!(!p.on_loss(now, true));
        assert!(!p.on_loss(now, true));
        assert!(p.on_loss(now, true));
        assert_eq!(p.current(), BASE);
    }

    #[test]
    fn an_idle_settled_discovery_is_small() {
        let now = t0();
        let mut p = Pmtud::new(DEFAULT_CEILING);
        p.on_probe_sent(1);
        p.on_probe_acked(now, 1, DEFAULT_CEILING);
        assert!(p.search.is_none(), "nothing on the heap once settled");
        assert!(std::mem::size_of::<Pmtud>() <= 16);
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
