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

/// The unit a claim rate applies to: an IPv4 address, or the /64 prefix of an IPv6 address
/// (one host usually has a whole /64, so counting addresses would count nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Net(IpAddr);

impl Net {
    pub(crate) fn of(ip: IpAddr) -> Net {
        match ip {
            IpAddr::V4(_) => Net(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Net(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Net(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
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

/// Token buckets of new nick claims per [`Net`]: `burst` at once, then `per_hour`.
///
/// Memory is bounded: a bucket is forgotten once it has refilled completely (it then says
/// nothing a fresh one would not), and the table holds at most `cap` buckets (beyond that the
/// least recently used one is forgotten, which only errs in the claimant's favour). Each claim
/// costs amortized O(1): buckets sit in a queue in the order of their last claim, with stale
/// entries skipped lazily.
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
    /// `burst` and `per_hour` of at least 1 (0 is taken as 1).
    pub(crate) fn new(burst: u32, per_hour: u32, cap: usize) -> Self {
        ClaimLimiter {
            burst: burst.max(1),
            per_hour: per_hour.max(1),
            cap: cap.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.burst) * HOUR_MS
    }

    /// Milliseconds an empty bucket takes to fill.
    fn fill_ms(&self) -> i64 {
        i64::try_from(self.full().div_ceil(u64::from(self.per_hour))).unwrap_or(i64::MAX)
    }

    fn units_at(&self, b: &Bucket, now_ms: i64) -> u64 {
        let elapsed = u64::try_from(now_ms.saturating_sub(b.at_ms)).unwrap_or(0);
        self.full().min(
            b.units
                .saturating_add(elapsed.saturating_mul(u64::from(self.per_hour))),
        )
    }

    /// Takes one claim for the network of `ip` at `now_ms`; `Err` carries the milliseconds
    /// until the next one is allowed.
    pub(crate) fn take(&mut self, now_ms: i64, ip: IpAddr) -> Result<(), u64> {
        self.forget_full(now_ms);
        let net = Net::of(ip);
        let (units, at_ms) = match self.buckets.get(&net) {
            // A clock that went back refills nothing until it passes the last claim again.
            Some(b) => (self.units_at(b, now_ms), b.at_ms.max(now_ms)),
            None => (self.full(), now_ms),
        };
        if units < HOUR_MS {
            let missing = HOUR_MS - units;
            return Err(missing.div_ceil(u64::from(self.per_hour)));
        }
        self.buckets.insert(
            net,
            Bucket {
                units: units - HOUR_MS,
                at_ms,
            },
        );
        self.order.push_back((at_ms, net));
        while self.buckets.len() > self.cap {
            let Some((t, n)) = self.order.pop_front() else {
                break;
            };
            if self.buckets.get(&n).is_some_and(|b| b.at_ms == t) && n != net {
                self.buckets.remove(&n);
            }
        }
        Ok(())
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
        assert_eq!(l.take(0, a), Err(600_000));
        assert_eq!(l.take(599_999, a), Err(1));
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
        for i in 0..5000 {
            l.take(0, v4(i)).expect("first claim of each");
        }
        assert_eq!(l.tracked(), 1000);
        assert!(l.queued() <= 5000);
        // Two minutes later every bucket has refilled: the next claim forgets them all.
        l.take(120_000, v4(1)).expect("refilled");
        assert_eq!(l.tracked(), 1);
        assert_eq!(l.queued(), 1);
        // A clock that goes back refills nothing and breaks nothing.
        l.take(0, v4(1)).expect("second of the burst");
        assert!(l.take(-5, v4(1)).is_err());
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
