//! `chirp peer --via SERVER --to NICK`: the peer side of the rendezvous, sans IO.
//!
//! The peer's one endpoint (one UDP socket) holds a chat session with the server, whose key is
//! bound to our nick, beside the peer connection: so the address the server observes for us
//! (our NAT's mapping of that socket) is the one the peer is told to dial, and our own packets
//! to the peer go out through that same mapping. [`Rendezvous`] decides what to ask the server
//! and what to make of its answer:
//!
//! 1. once the chat session is up, ask to `meet` the nick, listing our local address, and ask
//!    again before the request expires while the other side has not asked for us
//!    ([`Rendezvous::welcome`], [`Rendezvous::waiting`], [`Rendezvous::handle_timeout`]);
//! 2. the answer ([`Rendezvous::answer`]) names the other side's nick, key and addresses. Its
//!    key becomes the only key the peer connection accepts (a `--peer-key` pin must agree with
//!    it), so the handshake authenticates the peer end to end: the server is trusted to
//!    introduce, not to vouch. The address dialled ([`Introduction::candidate`]) is the public
//!    one the server observed, or, when both sides are seen at the same public IP (behind the
//!    same NAT, which may not hairpin), the local address the other side listed;
//! 3. both sides then dial each other at once: the transport's simultaneous open
//!    (PROTOCOL.md §5.6) turns the two attempts into one connection, and each side's first
//!    packets open its NAT for the other's.
//!
//! One candidate per side keeps the result one connection: two paths that both work (a LAN
//! and a hairpinning NAT) would otherwise give two connections, and each side could keep a
//! different one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_keys::{Fingerprint, PublicKey};

/// Ask again this long before the server's hold of the request runs out (`meet_wait`'s
/// `ttl_ms`), so that a request is always waiting there.
pub const REASK_MARGIN: Duration = Duration::from_secs(5);
/// Shortest time between two requests (a server with a tiny `ttl_ms` must not be flooded).
pub const MIN_REASK: Duration = Duration::from_secs(2);

/// Whom the rendezvous introduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduction {
    /// Its nick, as the server spells it.
    pub nick: String,
    /// Its key: the peer connection accepts no other.
    pub key: PublicKey,
    /// The address to dial; `None` when the peer asked for relay only (the server did not
    /// give its address): the two connect through the relay.
    pub candidate: Option<SocketAddr>,
    /// Where the server sees the peer (its public address), unless withheld (relay only).
    pub public: Option<SocketAddr>,
    /// Where the server sees us.
    pub you: SocketAddr,
    /// The server's relay token for us two, if it relays (PROTOCOL.md §11).
    pub relay: Option<[u8; 16]>,
}

/// The server's answer, as it came (see the chat protocol's `meet`).
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// The other side's nick.
    pub nick: &'a str,
    /// Its key, 64 hex digits.
    pub key: &'a str,
    /// Its observed address (absent when it asked for relay only).
    pub addr: Option<SocketAddr>,
    /// The local addresses it listed.
    pub local: &'a [SocketAddr],
    /// Our observed address.
    pub you: SocketAddr,
    /// The relay token, 32 hex digits, if the server relays.
    pub relay: Option<&'a str>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Rendezvous {
    /// The nick asked for.
    nick: String,
    pin: Option<Fingerprint>,
    local: Vec<SocketAddr>,
    /// When to ask again (the request waits at the server until then).
    ask_at: Option<Instant>,
    met: bool,
}

impl Rendezvous {
    /// A rendezvous with `nick`; `pin` is `--peer-key`, `local` our local addresses.
    pub fn new(nick: &str, pin: Option<Fingerprint>, local: Vec<SocketAddr>) -> Self {
        Rendezvous {
            nick: nick.to_owned(),
            pin,
            local,
            ask_at: None,
            met: false,
        }
    }

    /// The nick asked for.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Whether the server introduced us already.
    pub fn is_met(&self) -> bool {
        self.met
    }

    /// The chat session is up (again): the request to send, `(nick, local addresses)`, unless
    /// the peer was met already.
    pub fn welcome(&mut self) -> Option<(String, Vec<SocketAddr>)> {
        if self.met {
            return None;
        }
        self.ask_at = None;
        Some((self.nick.clone(), self.local.clone()))
    }

    /// The server holds the request for `ttl`: ask again before it lapses.
    pub fn waiting(&mut self, now: Instant, ttl: Duration) {
        if self.met {
            return;
        }
        self.ask_at = Some(now + ttl.saturating_sub(REASK_MARGIN).max(MIN_REASK));
    }

    /// When [`Self::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ask_at
    }

    /// The request to send again, if it is time.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<(String, Vec<SocketAddr>)> {
        if self.ask_at.is_some_and(|t| now >= t) {
            return self.welcome();
        }
        None
    }

    /// The server introduced us. `Err`: what to tell the user (the answer is unusable: not the
    /// nick asked for, a malformed key, or a key that is not the `--peer-key` pinned).
    pub fn answer(&mut self, a: &Answer<'_>) -> Result<Introduction, String> {
        if a.nick.to_lowercase() != self.nick.to_lowercase() {
            return Err(format!(
                "the server introduced {} when {} was asked for; ignored",
                a.nick, self.nick
            ));
        }
        let key = parse_key(a.key)
            .ok_or_else(|| "the server's introduction carries no valid key; ignored".to_owned())?;
        if let Some(pin) = &self.pin {
            let actual = key.fingerprint();
            if *pin != actual {
                return Err(format!(
                    "refusing {}: the server introduced key {actual}, but --peer-key pins {pin}",
                    a.nick
                ));
            }
        }
        self.met = true;
        self.ask_at = None;
        Ok(Introduction {
            nick: a.nick.to_owned(),
            key,
            candidate: candidate(a),
            public: a.addr,
            you: a.you,
            // A malformed token only means no relay.
            relay: a.relay.and_then(parse_hex::<16>),
        })
    }
}

/// The one address to dial: the public one, unless both sides are seen at the same public IP
/// (the same NAT) and the other listed a local address of our family. `None` without a
/// public one (the other side asked for relay only).
pub fn candidate(a: &Answer<'_>) -> Option<SocketAddr> {
    let addr = a.addr?;
    if addr.ip() == a.you.ip() {
        if let Some(&l) = a.local.iter().find(|l| l.is_ipv4() == a.you.is_ipv4()) {
            return Some(l);
        }
    }
    Some(addr)
}

/// A key written as 64 hex digits.
pub fn parse_key(hex: &str) -> Option<PublicKey> {
    parse_hex::<32>(hex).map(PublicKey)
}

/// `N` bytes written as `2 N` hex digits.
fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut k = [0u8; N];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

/// The address a relayed path is known by to the endpoint: in 100::/64, the discard-only
/// prefix (RFC 6666), so no real host has it, with the relay's port.
pub fn relayed_address(relay: SocketAddr) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 1)),
        relay.port(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_hex(b: u8) -> String {
        format!("{b:02x}").repeat(32)
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn the_public_address_is_dialled_across_nats() {
        let local = [a("10.0.2.2:5000")];
        let ans = Answer {
            nick: "Bob",
            key: &key_hex(7),
            addr: Some(a("198.51.100.2:40000")),
            local: &local,
            you: a("203.0.113.1:41000"),
            relay: None,
        };
        let mut r = Rendezvous::new("bob", None, vec![a("10.0.1.2:5000")]);
        let intro = r.answer(&ans).expect("introduction");
        assert_eq!(intro.candidate, Some(a("198.51.100.2:40000")));
        // The other side asked for relay only: no address to dial, the relay is the way.
        let hidden = Answer {
            addr: None,
            local: &[],
            ..ans.clone()
        };
        let intro = Rendezvous::new("bob", None, Vec::new())
            .answer(&hidden)
            .expect("still an introduction");
        assert_eq!((intro.candidate, intro.public), (None, None));
        assert_eq!(intro.relay, None);
        let token = "0f".repeat(16);
        let relayed = Answer {
            relay: Some(&token),
            ..ans.clone()
        };
        let intro = Rendezvous::new("bob", None, Vec::new())
            .answer(&relayed)
            .expect("introduction");
        assert_eq!(intro.relay, Some([0x0f; 16]));
        let bad = Answer {
            relay: Some("0f"),
            ..ans.clone()
        };
        let intro = Rendezvous::new("bob", None, Vec::new())
            .answer(&bad)
            .expect("still met");
        assert_eq!(intro.relay, None, "a malformed token is no relay");
        assert_eq!(intro.key, PublicKey([7; 32]));
        assert!(r.is_met());
        assert_eq!(r.welcome(), None, "met: nothing more to ask");
    }

    #[test]
    fn behind_the_same_nat_the_local_address_is_dialled() {
        let local = [a("[fd00::2]:5000"), a("192.168.1.7:5000")];
        let ans = Answer {
            nick: "bob",
            key: &key_hex(7),
            addr: Some(a("203.0.113.1:40000")),
            local: &local,
            you: a("203.0.113.1:41000"),
            relay: None,
        };
        assert_eq!(
            candidate(&ans),
            Some(a("192.168.1.7:5000")),
            "same family as ours"
        );
        let none = Answer { local: &[], ..ans };
        assert_eq!(candidate(&none), Some(a("203.0.113.1:40000")));
    }

    #[test]
    fn a_key_other_than_the_pin_or_another_nick_is_refused() {
        let ans = Answer {
            nick: "bob",
            key: &key_hex(7),
            addr: Some(a("198.51.100.2:40000")),
            local: &[],
            you: a("203.0.113.1:41000"),
            relay: None,
        };
        let other = PublicKey([8; 32]).fingerprint();
        let mut r = Rendezvous::new("bob", Some(other), Vec::new());
        let e = r.answer(&ans).expect_err("pinned to another key");
        assert!(e.contains("--peer-key pins"), "{e}");
        assert!(!r.is_met());
        let mut r = Rendezvous::new("carol", None, Vec::new());
        assert!(r.answer(&ans).is_err(), "not the nick asked for");
        for bad in ["", "zz", &"g".repeat(64), &key_hex(1)[1..]] {
            let ans = Answer {
                key: bad,
                ..ans.clone()
            };
            assert!(
                Rendezvous::new("bob", None, Vec::new())
                    .answer(&ans)
                    .is_err(),
                "{bad}"
            );
        }
        let pin = PublicKey([7; 32]).fingerprint();
        assert!(
            Rendezvous::new("BOB", Some(pin), Vec::new())
                .answer(&ans)
                .is_ok()
        );
    }

    #[test]
    fn the_request_is_repeated_before_it_lapses_until_met() {
        let t0 = Instant::now();
        let mut r = Rendezvous::new("bob", None, vec![a("10.0.1.2:5000")]);
        let ask = r.welcome().expect("first request");
        assert_eq!(ask, ("bob".to_owned(), vec![a("10.0.1.2:5000")]));
        r.waiting(t0, Duration::from_secs(60));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(55)));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(54)), None);
        assert!(r.handle_timeout(t0 + Duration::from_secs(55)).is_some());
        // A tiny hold is not a reason to ask in a loop.
        r.waiting(t0, Duration::from_millis(10));
        assert_eq!(r.poll_timeout(), Some(t0 + MIN_REASK));
        let ans = Answer {
            nick: "bob",
            key: &key_hex(7),
            addr: Some(a("198.51.100.2:40000")),
            local: &[],
            you: a("203.0.113.1:41000"),
            relay: None,
        };
        r.answer(&ans).expect("met");
        assert_eq!(r.poll_timeout(), None);
        r.waiting(t0, Duration::from_secs(60));
        assert_eq!(r.poll_timeout(), None, "a late meet_wait changes nothing");
    }
}
