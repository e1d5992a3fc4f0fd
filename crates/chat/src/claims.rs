//! Who may claim a name: the index of taken names by look-alike key, and the rate of new nick
//! claims per source network. Both are plain data structures; the rules that use them are in
//! the server core (`server.rs`: `check_claim`, `join`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use crate::names;

/// Taken names by look-alike key ([`names::look_alike_keys`]): key → holders (a key for nicks,
/// the room name for rooms). Normally one holder per entry; several only for look-alikes that
/// were registered before look-alikes were refused.
#[derive(Debug)]
pub(crate) struct LookAlikes<H> {
    map: HashMap<String, Vec<H>>,
}

impl<H> Default for LookAlikes<H> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

impl<H: Clone + PartialEq> LookAlikes<H> {
    /// Records that `holder` holds `name`. Returns another holder that already held a
    /// look-alike of it, if any (only possible for names registered before the rule).
    pub(crate) fn insert(&mut self, name: &str, holder: H) -> Option<H> {
        let mut clash = None;
        for k in names::look_alike_keys(name) {
            let holders = self.map.entry(k).or_default();
            if clash.is_none() {
                clash = holders.iter().find(|h| **h != holder).cloned();
            }
            if !holders.contains(&holder) {
                holders.push(holder.clone());
            }
        }
        clash
    }

    /// Forgets that `holder` holds `name`.
    pub(crate) fn remove(&mut self, name: &str, holder: &H) {
        for k in names::look_alike_keys(name) {
            if let Entry::Occupied(mut e) = self.map.entry(k) {
                e.get_mut().retain(|h| h != holder);
                if e.get().is_empty() {
                    e.remove();
                }
            }
        }
    }

    /// The holders other than `not` of a look-alike of `name`, without repeats.
    pub(crate) fn others(&self, name: &str, not: &H) -> Vec<H> {
        let mut out: Vec<H> = Vec::new();
        for k in names::look_alike_keys(name) {
            for h in self.map.get(&k).into_iter().flatten() {
                if h != not && !out.contains(h) {
                    out.push(h.clone());
                }
            }
        }
        out
    }

    /// Number of look-alike keys recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A network a claim rate applies to: an IPv4 address, or an IPv6 prefix (a /64, /56 or
/// /48; one host usually has a whole /64, so counting addresses would count nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Net {
    /// The address with the bits past the prefix cleared.
    addr: IpAddr,
    /// Prefix length.
    len: u8,
}

/// IPv6 prefix lengths a claim counts against, with the multiple of the base budget
/// (`burst`, `per_hour`) each gets: a /64 has the base budget, the /56 around it twice that,
/// the /48 four times. A claim must pass every level, so all the /64s (and /56s) of one /48
/// together get no more than the /48's budget.
const V6_LEVELS: [(u8, u32); 3] = [(64, 1), (56, 2), (48, 4)];

impl Net {
    fn v6(addr: Ipv6Addr, len: u8) -> Net {
        let mask = !(u128::MAX >> len);
        Net {
            addr: IpAddr::V6(Ipv6Addr::from(u128::from(addr) & mask)),
            len,
        }
    }

    /// The networks a claim from `ip` counts against, smallest first, each with the multiple
    /// of the base budget it gets: the IPv4 address (an IPv4-mapped IPv6 address is IPv4), or
    /// the /64, /56 and /48 of an IPv6 address.
    pub(crate) fn levels(ip: IpAddr) -> Vec<(Net, u32)> {
        let v4 = |v4| Net {
            addr: IpAddr::V4(v4),
            len: 32,
        };
        match ip {
            IpAddr::V4(a) => vec![(v4(a), 1)],
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(a) => vec![(v4(a), 1)],
                None => V6_LEVELS
                    .iter()
                    .map(|&(len, mult)| (Net::v6(v6, len), mult))
                    .collect(),
            },
        }
    }
}

/// One hour in milliseconds: token amounts are kept in 1/`HOUR_MS` of a token, so that a rate
/// per hour refills by an integer amount every millisecond.
const HOUR_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in 1/`HOUR_MS` units, as of `at_ms`.
    units: u64,
    /// Time of the last claim.
    at_ms: i64,
}

/// Why a claim was refused; each carries the milliseconds until one may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The claimant's network (or a larger network around it) has used its budget.
    Network(u64),
    /// The table of networks is full of budgets that are not used up yet: no new network is
    /// tracked (nor any claim from one granted) until the oldest of them has refilled.
    Busy(u64),
}

/// Token buckets of new nick claims per [`Net`]: `burst` at once, then `per_hour` (times the
/// level's multiple, [`Net::levels`]). A claim takes one token from every level of its
/// source, and is refused if any level has none.
///
/// Memory is bounded: a bucket is forgotten once it has refilled completely (it then says
/// nothing a fresh one would not), and the table holds at most `cap` buckets. When a claim
/// would need more, it is refused ([`Refused::Busy`]) rather than forget a bucket that has
/// not refilled, which would hand that network a fresh budget. Each claim costs amortized
/// O(1): buckets sit in a queue in the order of their last claim, with stale entries skipped
/// lazily.
#[derive(Debug)]
pub(crate) struct ClaimLimiter {
    burst: u32,
    per_hour: u32,
    cap: usize,
    buckets: HashMap<Net, Bucket>,
    /// `(time of a claim, net)`, oldest first; an entry is live while its net's bucket still
    /// has `at_ms` equal to its time.
    order: VecDeque<(i64, Net)>,
}

impl ClaimLimiter {
    /// `burst` and `per_hour` of at least 1 (0 is taken as 1); at most `cap` buckets.
    pub(crate) fn new(burst: u32, per_hour: u32, cap: usize) -> Self {
        ClaimLimiter {
            burst: burst.max(1),
            per_hour: per_hour.max(1),
            cap: cap.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// New rates (at least 1 each) from now on. A bucket fuller than the new burst holds the
    /// new burst; the time since each bucket's last claim refills at the new rate.
    pub(crate) fn set_rates(&mut self, burst: u32, per_hour: u32) {
        self.burst = burst.max(1);
        self.per_hour = per_hour.max(1);
    }

    fn full(&self, mult: u32) -> u64 {
        u64::from(self.burst) * u64::from(mult) * HOUR_MS
    }

    fn rate(&self, mult: u32) -> u64 {
        u64::from(self.per_hour) * u64::from(mult)
    }

    /// Milliseconds an empty bucket takes to fill (the same at every level).
    fn fill_ms(&self) -> i64 {
        i64::try_from(self.full(1).div_ceil(self.rate(1))).unwrap_or(i64::MAX)
    }

    fn units_at(&self, b: &Bucket, mult: u32, now_ms: i64) -> u64 {
        let elapsed = u64::try_from(now_ms.saturating_sub(b.at_ms)).unwrap_or(0);
        self.full(mult).min(
            b.units
                .saturating_add(elapsed.saturating_mul(self.rate(mult))),
        )
    }

    /// Takes one claim for the networks of `ip` at `now_ms`.
    pub(crate) fn take(&mut self, now_ms: i64, ip: IpAddr) -> Result<(), Refused> {
        self.forget_full(now_ms);
        let levels = Net::levels(ip);
        // Every level first: a refused claim takes nothing from any.
        let mut after = Vec::with_capacity(levels.len());
        let mut wait = 0u64;
        let mut new = 0usize;
        for &(net, mult) in &levels {
            let (units, at_ms) = match self.buckets.get(&net) {
                // A clock that went back refills nothing until it passes the last claim again.
                Some(b) => (self.units_at(b, mult, now_ms), b.at_ms.max(now_ms)),
                None => {
                    new += 1;
                    (self.full(mult), now_ms)
                }
            };
            if units < HOUR_MS {
                wait = wait.max((HOUR_MS - units).div_ceil(self.rate(mult)));
            }
            after.push((net, units.saturating_sub(HOUR_MS), at_ms));
        }
        if wait > 0 {
            return Err(Refused::Network(wait));
        }
        if self.buckets.len() + new > self.cap {
            return Err(Refused::Busy(self.until_one_refills(now_ms)));
        }
        for (net, units, at_ms) in after {
            self.buckets.insert(net, Bucket { units, at_ms });
            self.order.push_back((at_ms, net));
        }
        Ok(())
    }

    /// Milliseconds until the oldest tracked bucket has refilled (and is forgotten), at least 1.
    fn until_one_refills(&mut self, now_ms: i64) -> u64 {
        while let Some(&(t, n)) = self.order.front() {
            if self.buckets.get(&n).is_some_and(|b| b.at_ms == t) {
                let due = t.saturating_add(self.fill_ms());
                return u64::try_from(due.saturating_sub(now_ms))
                    .unwrap_or(0)
                    .max(1);
            }
            self.order.pop_front();
        }
        1
    }

    /// Drops the buckets that have refilled completely by `now_ms`.
    fn forget_full(&mut self, now_ms: i64) {
        let fill = self.fill_ms();
        while let Some(&(t, n)) = self.order.front() {
            if t.saturating_add(fill) > now_ms {
                break;
            }
            self.order.pop_front();
            if self.buckets.get(&n).is_some_and(|b| b.at_ms == t) {
                self.buckets.remove(&n);
            }
        }
    }

    /// Networks tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Queue length (live and stale entries).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_network_gets_its_burst_then_its_rate() {
        let mut l = ClaimLimiter::new(3, 6, 100);
        let a = v4(1);
        for _ in 0..3 {
            l.take(0, a).expect("burst");
        }
        // One per 10 minutes after that.
        assert_eq!(l.take(0, a), Err(Refused::Network(600_000)));
        assert_eq!(l.take(599_999, a), Err(Refused::Network(1)));
        l.take(600_000, a).expect("refilled one");
        assert!(l.take(600_000, a).is_err());
        // Another address is unaffected.
        l.take(0, v4(2)).expect("other address");
    }

    #[test]
    fn an_ipv6_64_is_one_network_and_mapped_ipv4_is_ipv4() {
        let mut l = ClaimLimiter::new(2, 1, 100);
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        l.take(0, host(1)).expect("1");
        l.take(0, host(2)).expect("2");
        assert!(l.take(0, host(3)).is_err(), "same /64");
        l.take(
            0,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1)),
        )
        .expect("next /64");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        l.take(0, mapped).expect("1");
        l.take(0, mapped).expect("2");
        assert!(l.take(0, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).is_err());
    }

    #[test]
    fn memory_is_bounded_and_full_buckets_are_forgotten() {
        let mut l = ClaimLimiter::new(2, 60, 1000);
        for i in 0..1000 {
            l.take(0, v4(i)).expect("first claim of each");
        }
        // The table is full: no more networks are tracked, none is forgotten early.
        for i in 1000..5000 {
            assert_eq!(l.take(0, v4(i)), Err(Refused::Busy(120_000)));
        }
        assert_eq!(l.tracked(), 1000);
        assert_eq!(l.queued(), 1000);
        // Two minutes later every bucket has refilled: the next claim forgets them all.
        l.take(120_000, v4(1)).expect("refilled");
        assert_eq!(l.tracked(), 1);
        assert_eq!(l.queued(), 1);
        // A clock that goes back refills nothing and breaks nothing.
        l.take(0, v4(1)).expect("second of the burst");
        assert!(l.take(-5, v4(1)).is_err());
    }

    /// With the table full, a new network is refused instead of forgetting an old one in its
    /// favour: cycling through one address more than the table holds gets no fresh budgets.
    #[test]
    fn a_full_table_hands_out_no_fresh_buckets() {
        let mut l = ClaimLimiter::new(1, 60, 10);
        let mut granted = 0;
        for round in 0..100 {
            for i in 0..11 {
                if l.take(round, v4(i)).is_ok() {
                    granted += 1;
                }
            }
        }
        assert_eq!(granted, 10, "one burst each for the 10 tracked networks");
        assert_eq!(l.take(100, v4(10)), Err(Refused::Busy(59_900)));
        assert_eq!(l.take(100, v4(0)), Err(Refused::Network(59_900)));
        // Once the oldest have refilled they are forgotten, and new networks are tracked.
        l.take(60_000, v4(10)).expect("room again");
        // A refused claim takes nothing: an IPv6 source needs three buckets, and there is
        // room for only one more.
        let mut l = ClaimLimiter::new(1, 60, 3);
        l.take(0, v4(1)).expect("one");
        l.take(0, v4(2)).expect("two");
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert!(matches!(l.take(0, v6), Err(Refused::Busy(_))));
        assert_eq!(l.tracked(), 2);
        l.take(0, v4(3)).expect("three");
    }

    /// Each /64 of a /48 is a network of its own, but all of them together get only the
    /// budget of their /56 (twice a /64's) and of their /48 (four times).
    #[test]
    fn the_64s_of_one_48_share_its_budget() {
        let (burst, per_hour) = (2u32, 6u32);
        let mut l = ClaimLimiter::new(burst, per_hour, 65_536);
        // 2001:db8:7::/48: its /56s are 2001:db8:7:XX00::/56, its /64s 2001:db8:7:XXYY::/64.
        let host = |net64: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, net64, 0, 0, 0, 1));
        // One /56 (2001:db8:7:100::/56): 256 /64s get the /56's burst, 4.
        let ok = (0..256)
            .filter(|&y| l.take(0, host(0x100 | y)).is_ok())
            .count();
        assert_eq!(ok, 2 * burst as usize);
        // The whole /48: 65,536 /64s get the /48's burst, 8 (4 of them taken above).
        let ok = (0..=u16::MAX)
            .filter(|&n| l.take(0, host(n)).is_ok())
            .count();
        assert_eq!(ok, 4 * burst as usize - 2 * burst as usize);
        // Over the next 50 minutes, a claim every second from a fresh /64 in a fresh /56:
        // the /48's rate, 24 an hour, and no more.
        let mut ok = 0;
        for s in 1..=3000i64 {
            let n = u16::try_from(s % 256).expect("small") << 8 | 0x55;
            if l.take(s * 1000, host(n)).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 4 * per_hour * 50 / 60);
        // A refused claim took nothing from the /64 it came from: another /48 is unaffected.
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 1));
        l.take(3_000_000, other).expect("another /48");
        // Memory: at most three buckets per granted claim.
        assert!(l.tracked() <= 3 * (8 + 20 + 1));
    }

    #[test]
    fn look_alikes_find_other_holders_only() {
        let mut ix: LookAlikes<u8> = LookAlikes::default();
        assert_eq!(ix.insert("alice", 1), None);
        assert_eq!(ix.others("aIice", &2), vec![1]);
        assert!(ix.others("aIice", &1).is_empty());
        assert!(ix.others("bob", &2).is_empty());
        // A look-alike registered before the rule: both are kept, the clash is reported.
        assert_eq!(ix.insert("aIice", 2), Some(1));
        assert_eq!(ix.others("alice", &3), vec![1, 2]);
        ix.remove("alice", &1);
        assert_eq!(ix.others("alice", &3), vec![2]);
        ix.remove("aIice", &2);
        assert_eq!(ix.len(), 0);
    }
}
