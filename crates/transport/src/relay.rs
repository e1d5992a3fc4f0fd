//! RELAY datagrams in the driver (PROTOCOL.md §11), on both sides of a relay.
//!
//! - A **relay** (`chirp serve`, told by its chat core which pairs it introduced:
//!   [`crate::Handle::relay`]) forwards a RELAY datagram whose token it knows from one of the
//!   token's two addresses to the other, unopened, within the pair's rate ([`RELAY_BYTES`],
//!   [`RELAY_DATAGRAMS`] a second; the rest is dropped and counted). A pair introduced for a
//!   file has a cap besides: the bytes it may pass in all, both ways together; past it,
//!   everything is dropped and counted ([`RelayStats::over_cap`]). Nothing else about the
//!   datagram is looked at: the inner packet is the two peers' business, sealed end to end.
//! - A **peer** using a relay ([`crate::Handle::use_relay`]) sees the relayed path as one
//!   synthetic address: what its endpoint sends there goes to the relay wrapped in a RELAY
//!   datagram, and the inner datagram of a RELAY datagram from the relay with its token is
//!   handed to the endpoint as coming from that address.
//!
//! Both are decided before the endpoint sees the datagram, so the endpoint never parses a
//! RELAY header, and a relay's forwarding costs a table lookup and a copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use chirp_proto::wire::{RelayToken, decode_relay, encode_relay, is_relay};

/// Bytes a second one relayed pair may send through the relay (both directions together),
/// and its burst: far above a chat, far below a flood.
pub const RELAY_BYTES: u64 = 1 << 20;
/// Datagrams a second one relayed pair may send through the relay, and its burst.
pub const RELAY_DATAGRAMS: u64 = 2000;
/// Relayed datagrams waiting to be sent at most (the rest of a burst is dropped).
const MAX_QUEUED: usize = 1024;

/// What the relay knows of one pair.
#[derive(Debug)]
struct Pair {
    a: SocketAddr,
    b: SocketAddr,
    /// Tokens of the two buckets, in thousandths, and when they were last refilled.
    bytes: u64,
    datagrams: u64,
    last: Instant,
    /// The bytes the pair may pass in all (`None`: no cap), and those it passed.
    cap: Option<u64>,
    passed: u64,
}

impl Pair {
    fn admit(&mut self, now: Instant, len: usize) -> bool {
        let ms = now.saturating_duration_since(self.last).as_millis() as u64;
        if ms > 0 {
            self.last = now;
            self.bytes = (self.bytes + ms * RELAY_BYTES).min(RELAY_BYTES * 1000);
            self.datagrams = (self.datagrams + ms * RELAY_DATAGRAMS).min(RELAY_DATAGRAMS * 1000);
        }
        let cost = len as u64 * 1000;
        if self.bytes < cost || self.datagrams < 1000 {
            return false;
        }
        self.bytes -= cost;
        self.datagrams -= 1000;
        true
    }
}

/// The relay a peer uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    pub(crate) token: RelayToken,
    pub(crate) relay: SocketAddr,
    pub(crate) synthetic: SocketAddr,
}

/// Counters of RELAY datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Forwarded by this relay.
    pub forwarded: u64,
    /// Dropped: unknown token, a sender that is not one of its pair, over the pair's rate
    /// or cap.
    pub dropped: u64,
    /// Of those dropped, over a pair's cap (a file pair that sent more than its file).
    pub over_cap: u64,
    /// Unwrapped for this endpoint (a peer using a relay).
    pub received: u64,
}

/// The driver's relay state.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    pairs: HashMap<RelayToken, Pair>,
    pub(crate) client: Option<Client>,
    /// Forwarded datagrams waiting for the socket.
    pub(crate) out: Vec<(SocketAddr, Vec<u8>)>,
    pub(crate) stats: RelayStats,
}

/// What to do with a datagram that arrived.
pub(crate) enum Incoming<'a> {
    /// Not a RELAY datagram: the endpoint's, from its sender.
    Endpoint(SocketAddr, &'a [u8]),
    /// Dealt with here (forwarded, dropped).
    Done,
}

impl Relays {
    /// Relays `pair` under `token` (its total capped at `cap` bytes when it is new), or stops
    /// (`None`).
    pub(crate) fn set(
        &mut self,
        now: Instant,
        token: RelayToken,
        pair: Option<(SocketAddr, SocketAddr)>,
        cap: Option<u64>,
    ) {
        match pair {
            None => {
                self.pairs.remove(&token);
            }
            Some((a, b)) => {
                let p = self.pairs.entry(token).or_insert(Pair {
                    a,
                    b,
                    bytes: RELAY_BYTES * 1000,
                    datagrams: RELAY_DATAGRAMS * 1000,
                    last: now,
                    cap,
                    passed: 0,
                });
                // Addresses move with their sessions (migration); the budget and cap stay.
                p.a = a;
                p.b = b;
            }
        }
    }

    /// Sorts one received datagram.
    pub(crate) fn incoming<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        d: &'a [u8],
    ) -> Incoming<'a> {
        if !is_relay(d) {
            return Incoming::Endpoint(from, d);
        }
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let Some((token, inner)) = decode_relay(d) else {
            self.stats.dropped += 1;
            return Incoming::Done;
        };
        if let Some(c) = self.client
            && c.token == *token
            && c.relay == from
        {
            self.stats.received += 1;
            return Incoming::Endpoint(c.synthetic, inner);
        }
        let to = match self.pairs.get_mut(token) {
            Some(p) if p.a == from => p.b,
            Some(p) if p.b == from => p.a,
            _ => {
                self.stats.dropped += 1;
                return Incoming::Done;
            }
        };
        let Some(pair) = self.pairs.get_mut(token) else {
            return Incoming::Done;
        };
        let len = d.len() as u64;
        if pair
            .cap
            .is_some_and(|cap| pair.passed.saturating_add(len) > cap)
        {
            self.stats.dropped += 1;
            self.stats.over_cap += 1;
            return Incoming::Done;
        }
        let admitted = self.out.len() < MAX_QUEUED && pair.admit(now, d.len());
        if admitted {
            pair.passed += len;
            self.stats.forwarded += 1;
            self.out.push((to, d.to_vec()));
        } else {
            self.stats.dropped += 1;
        }
        Incoming::Done
    }

    /// Where a datagram of the endpoint for `destination` goes, and in what: wrapped for the
    /// relay if `destination` is the relayed path's address (`wrapped` then holds it).
    pub(crate) fn outgoing(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        wrapped: &mut Vec<u8>,
    ) -> Option<SocketAddr> {
        let c = self.client.filter(|c| c.synthetic == destination)?;
        encode_relay(&c.token, contents, wrapped);
        Some(c.relay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn wrap(token: &RelayToken, inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_relay(token, inner, &mut v);
        v
    }

    #[test]
    fn forwards_between_the_pair_only_and_within_its_rate() {
        let t0 = Instant::now();
        let mut r = Relays::default();
        let (x, y, z) = (
            a("192.0.2.1:1000"),
            a("198.51.100.2:2000"),
            a("203.0.113.3:3000"),
        );
        r.set(t0, [1; 16], Some((x, y)), None);
        let d = wrap(&[1; 16], b"sealed");
        assert!(matches!(r.incoming(t0, x, &d), Incoming::Done));
        assert_eq!(r.out, vec![(y, d.clone())]);
        assert!(matches!(r.incoming(t0, y, &d), Incoming::Done));
        assert_eq!(r.out[1], (x, d.clone()));
        // A third address, an unknown token, a truncated one: dropped.
        r.out.clear();
        r.incoming(t0, z, &d);
        r.incoming(t0, x, &wrap(&[2; 16], b"sealed"));
        r.incoming(t0, x, &d[..10]);
        assert!(r.out.is_empty());
        assert_eq!(r.stats.dropped, 3);
        // Not a RELAY datagram: the endpoint's.
        assert!(matches!(r.incoming(t0, z, b"\x02\x04junk"), Incoming::Endpoint(f, _) if f == z));
        // The rate: a second's worth of datagrams, then nothing until time passes.
        let mut forwarded = 0;
        for _ in 0..RELAY_DATAGRAMS * 2 {
            r.out.clear();
            r.incoming(t0, x, &d);
            forwarded += r.out.len() as u64;
        }
        assert_eq!(
            forwarded,
            RELAY_DATAGRAMS - 2,
            "the burst (two went earlier)"
        );
        r.out.clear();
        r.incoming(t0 + Duration::from_millis(10), x, &d);
        assert_eq!(r.out.len(), 1, "refilled by the time that passed");
        // The bytes too: a datagram of a megabyte's size never fits a fresh pair's second.
        r.set(t0, [3; 16], Some((x, y)), None);
        let big = wrap(&[3; 16], &vec![0; (RELAY_BYTES / 2) as usize]);
        r.out.clear();
        r.incoming(t0, x, &big);
        r.incoming(t0, x, &big);
        r.incoming(t0, x, &big);
        assert_eq!(
            r.out.len(),
            1,
            "half a second's bytes each, less the header: one fits"
        );
        // Gone with either session.
        r.set(t0, [1; 16], None, None);
        r.out.clear();
        r.incoming(t0 + Duration::from_secs(5), x, &d);
        assert!(r.out.is_empty());
    }

    /// A file pair's relay passes its cap's worth of bytes, both ways together, and drops
    /// and counts the rest; a move of either side keeps the count.
    #[test]
    fn a_capped_pair_passes_its_cap_and_no_more() {
        let t0 = Instant::now();
        let mut r = Relays::default();
        let (x, y) = (a("192.0.2.1:1000"), a("198.51.100.2:2000"));
        let d = wrap(&[4; 16], &[0; 100]);
        let len = d.len() as u64;
        // Room for exactly five datagrams and a half.
        r.set(t0, [4; 16], Some((x, y)), Some(len * 11 / 2));
        for i in 0..3 {
            r.incoming(t0 + Duration::from_millis(i), x, &d);
            r.incoming(t0 + Duration::from_millis(i), y, &d);
        }
        assert_eq!(r.out.len(), 5, "five fit, both ways counted together");
        assert_eq!(
            (r.stats.forwarded, r.stats.over_cap, r.stats.dropped),
            (5, 1, 1)
        );
        // Either side moving keeps the count (and the cap: a new one is not taken).
        let x2 = a("192.0.2.1:1001");
        r.set(t0, [4; 16], Some((x2, y)), None);
        r.out.clear();
        r.incoming(t0 + Duration::from_secs(1), x2, &d);
        assert!(r.out.is_empty(), "still over the cap after the move");
        assert_eq!(r.stats.over_cap, 2);
        // A smaller datagram that still fits passes.
        let small = wrap(&[4; 16], b"tiny");
        assert!(small.len() as u64 <= len / 2);
        r.incoming(t0 + Duration::from_secs(1), y, &small);
        assert_eq!(r.out, vec![(x2, small)]);
        // An uncapped pair is limited by its rate alone.
        r.set(t0, [5; 16], Some((x, y)), None);
        let d5 = wrap(&[5; 16], &[0; 100]);
        r.out.clear();
        for i in 0..100 {
            r.incoming(t0 + Duration::from_millis(10 * i), x, &d5);
        }
        assert_eq!(r.out.len(), 100);
    }

    #[test]
    fn a_peer_sees_the_relayed_path_as_one_address() {
        let t0 = Instant::now();
        let (relay, synthetic) = (a("192.0.2.1:7667"), a("[100::1]:7667"));
        let mut r = Relays {
            client: Some(Client {
                token: [9; 16],
                relay,
                synthetic,
            }),
            ..Relays::default()
        };
        let mut buf = Vec::new();
        assert_eq!(r.outgoing(synthetic, b"pkt", &mut buf), Some(relay));
        assert_eq!(buf, wrap(&[9; 16], b"pkt"));
        assert_eq!(
            r.outgoing(a("192.0.2.9:1"), b"pkt", &mut buf),
            None,
            "a direct path"
        );
        match r.incoming(t0, relay, &buf) {
            Incoming::Endpoint(from, inner) => {
                assert_eq!((from, inner), (synthetic, &b"pkt"[..]));
            }
            Incoming::Done => panic!("unwrapped for the endpoint"),
        }
        // The same token from anyone but the relay is not unwrapped.
        assert!(matches!(
            r.incoming(t0, a("192.0.2.9:1"), &buf),
            Incoming::Done
        ));
    }
}
