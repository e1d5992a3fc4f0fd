//! The rendezvous (`meet`, PROTOCOL.md "Meeting a peer"): two users connected to this server
//! ask to be introduced to each other, and each learns where the other's session is, so that
//! their `chirp peer`s can open a connection to each other through their NATs.
//!
//! The rules, each bounding what a session can learn or cost:
//!
//! - **Mutual consent.** A `meet` for a nick is only held; the server answers both sides, with
//!   each other's address, local addresses and key, only once a session of that nick has asked
//!   for this user too. Nobody learns an address from the server (nor whether a nick is online:
//!   the answer to a lone `meet` is the same `meet_wait` either way) without having been asked
//!   for by its owner.
//! - **Bounded.** A session holds at most [`MAX_ASKS`] requests, each for [`ASK_TTL_MS`] (a
//!   request for the same nick again replaces it and starts its time again); `meet`s have a
//!   token bucket of their own ([`MEET_BURST`], [`MEET_PER_MIN`] a minute) beside the session's
//!   flood control. A session that asked keeps a few hundred bytes here until it ends; one
//!   that never asked, nothing.
//! - **Addresses are observed.** The address given is the one the transport last validated
//!   for the session (`Server::observed`, following migrations), never one a client claims;
//!   the local addresses are the other side's claim and are labelled as such.
//!
//! The server never sees what the peers then say to each other: their connection is
//! end-to-end encrypted and authenticated with the keys the answer carries.

use std::net::SocketAddr;

use chirp_proto::wire::{RelayToken, relay_token};

use crate::names;
use crate::wire::{MAX_MEET_LOCAL, ServerMsg, code};

use super::{Key, Output, Server, SessionId};

/// Requests one session holds at once.
pub const MAX_ASKS: usize = 4;
/// How long a request is held waiting for the other side's.
pub const ASK_TTL_MS: i64 = 60_000;
/// `meet` requests a session may make at once...
pub const MEET_BURST: u32 = 6;
/// ...and then per minute.
pub const MEET_PER_MIN: u32 = 12;
/// Relays one session holds at once (its oldest ends for a new one).
pub const MAX_RELAYS: usize = 4;

/// What one session asked for.
#[derive(Debug)]
pub(super) struct Meets {
    /// Thousandths of a `meet` token, and when they were last refilled.
    milli: u64,
    last_ms: i64,
    asks: Vec<Ask>,
}

#[derive(Debug)]
struct Ask {
    /// The nick asked for, folded.
    target: String,
    local: Vec<SocketAddr>,
    /// The asker's address is not to be given out (`relay_only`).
    relay_only: bool,
    expires_ms: i64,
}

impl Meets {
    fn new(now_ms: i64) -> Self {
        Meets {
            milli: u64::from(MEET_BURST) * 1000,
            last_ms: now_ms,
            asks: Vec::new(),
        }
    }

    /// One token of the `meet` bucket: [`MEET_PER_MIN`] a minute, up to [`MEET_BURST`].
    fn take(&mut self, now_ms: i64) -> bool {
        let cap = u64::from(MEET_BURST) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0) as u64;
        // MEET_PER_MIN tokens per 60,000 ms is MEET_PER_MIN / 60 thousandths per ms. Time
        // that brought less than one thousandth is not used up (`last_ms` stays).
        let gained = elapsed.saturating_mul(u64::from(MEET_PER_MIN)) / 60;
        if gained > 0 {
            self.milli = cap.min(self.milli.saturating_add(gained));
            self.last_ms = now_ms;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    fn live(&self, target: &str, now_ms: i64) -> Option<usize> {
        self.asks
            .iter()
            .position(|a| a.target == target && a.expires_ms > now_ms)
    }
}

impl Server {
    /// The address the transport observes for `session` (its NAT's public mapping), at
    /// connection and after every validated migration. A rendezvous answer gives this
    /// address to the session's peer.
    pub fn observed(&mut self, session: SessionId, addr: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let old_ip = s.ip;
        let moved = s.addr() != addr;
        s.ip = addr.ip();
        s.port = addr.port();
        if moved {
            self.relays_moved(session);
        }
        if old_ip != addr.ip() {
            // The per-address session count follows the session (not enforced on a move: the
            // session exists already).
            if let Some(n) = self.per_ip.get_mut(&old_ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&old_ip);
                }
            }
            *self.per_ip.entry(addr.ip()).or_default() += 1;
        }
    }

    /// Sessions holding rendezvous requests (for tests and stats).
    pub fn meet_requests(&self) -> usize {
        self.meets.values().map(|m| m.asks.len()).sum()
    }

    /// A `meet` from `session` (of user `key`, whose `hello` was accepted).
    pub(super) fn meet(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        nick: &str,
        local: Vec<SocketAddr>,
        relay_only: bool,
    ) {
        let wanted = match names::nick(nick) {
            Ok(n) => n,
            Err(e) => return self.fail(session, None, code::BAD_NAME, e),
        };
        let target = names::fold(&wanted);
        let Some(own) = self.users.get(&key).map(|u| names::fold(&u.nick)) else {
            return;
        };
        if target == own {
            let text = "cannot meet yourself".to_owned();
            return self.fail(session, None, code::BAD_REQUEST, text);
        }
        if local.len() > MAX_MEET_LOCAL {
            let text = format!("at most {MAX_MEET_LOCAL} local addresses");
            return self.fail(session, None, code::BAD_REQUEST, text);
        }
        let meets = self
            .meets
            .entry(session)
            .or_insert_with(|| Meets::new(now_ms));
        if !meets.take(now_ms) {
            let text = format!("at most {MEET_PER_MIN} meet requests a minute; ask again later");
            return self.fail(session, None, code::MEET_BUSY, text);
        }
        meets
            .asks
            .retain(|a| a.expires_ms > now_ms && a.target != target);
        if meets.asks.len() >= MAX_ASKS {
            let text = format!("at most {MAX_ASKS} meet requests wait at once");
            return self.fail(session, None, code::MEET_BUSY, text);
        }
        // Does a session of that nick wait for us?
        let partner = self
            .nick_owner
            .get(&target)
            .map(|&(_, k)| k)
            .filter(|k| *k != key)
            .and_then(|k| self.users.get(&k).map(|u| (k, u.sessions.clone())))
            .and_then(|(k, sessions)| {
                sessions.into_iter().find_map(|other| {
                    let at = self.meets.get(&other)?.live(&own, now_ms)?;
                    let addr = self.sessions.get(&other).filter(|s| !s.closing)?.addr();
                    Some((k, other, at, addr))
                })
            });
        let Some((other_key, other, at, other_addr)) = partner else {
            let meets = self
                .meets
                .entry(session)
                .or_insert_with(|| Meets::new(now_ms));
            meets.asks.push(Ask {
                target,
                local,
                relay_only,
                expires_ms: now_ms + ASK_TTL_MS,
            });
            let wait = ServerMsg::MeetWait {
                nick: wanted,
                ttl_ms: ASK_TTL_MS as u64,
            };
            return self.send(session, &wait);
        };
        // Both asked: introduce them to each other, once (both requests are used up).
        let (their_local, they_hide) = match self.meets.get_mut(&other) {
            Some(m) => {
                let ask = m.asks.swap_remove(at);
                (ask.local, ask.relay_only)
            }
            None => (Vec::new(), false),
        };
        let Some(own_addr) = self.sessions.get(&session).map(|s| s.addr()) else {
            return;
        };
        let hex = data_encoding::HEXLOWER;
        let (own_nick, other_nick) = match (self.users.get(&key), self.users.get(&other_key)) {
            (Some(a), Some(b)) => (a.nick.clone(), b.nick.clone()),
            _ => return,
        };
        tracing::debug!(session, other, "rendezvous: introducing two sessions");
        self.stats.meets += 1;
        let cap = self.take_file_pair(now_ms, key, other_key);
        let token = self.add_relay(session, other, own_addr, other_addr, cap);
        // A relay-only side's addresses are given to nobody: the two meet at the relay.
        let to_us = ServerMsg::Meet {
            nick: other_nick,
            key: hex.encode(&other_key),
            addr: (!they_hide).then_some(other_addr),
            local: if they_hide { Vec::new() } else { their_local },
            you: own_addr,
            relay: Some(hex.encode(&token)),
        };
        let to_them = ServerMsg::Meet {
            nick: own_nick,
            key: hex.encode(&key),
            addr: (!relay_only).then_some(own_addr),
            local: if relay_only { Vec::new() } else { local },
            you: other_addr,
            relay: Some(hex.encode(&token)),
        };
        self.send(session, &to_us);
        self.send(other, &to_them);
    }

    /// `session` ended: its requests go with it, and its relays.
    pub(super) fn meet_gone(&mut self, session: SessionId) {
        self.meets.remove(&session);
        for (token, other) in self.relays.remove(&session).unwrap_or_default() {
            if let Some(list) = self.relays.get_mut(&other) {
                list.retain(|&(t, _)| t != token);
                if list.is_empty() {
                    self.relays.remove(&other);
                }
            }
            self.out.push_back(Output::Relay {
                token,
                pair: None,
                cap: None,
            });
        }
    }

    /// The secret relay tokens are derived under: the runner sets a random one at start (a
    /// core left with the default, all zeros, gives guessable tokens: tests only).
    pub fn set_relay_secret(&mut self, secret: [u8; 32]) {
        self.relay_secret = secret;
    }

    /// Relays held (pairs), for tests and stats.
    pub fn relays(&self) -> usize {
        self.relays.values().map(Vec::len).sum::<usize>() / 2
    }

    /// A relay between `a` and `b` (at those addresses), of at most `cap` bytes; a session's
    /// oldest relay beyond [`MAX_RELAYS`] ends.
    fn add_relay(
        &mut self,
        a: SessionId,
        b: SessionId,
        at_a: SocketAddr,
        at_b: SocketAddr,
        cap: Option<u64>,
    ) -> RelayToken {
        self.relay_count += 1;
        let token = relay_token(
            &self.relay_secret,
            &[
                &a.to_be_bytes(),
                &b.to_be_bytes(),
                &self.relay_count.to_be_bytes(),
            ],
        );
        for s in [a, b] {
            let full = self.relays.get(&s).is_some_and(|l| l.len() >= MAX_RELAYS);
            if full {
                let (old, other) = self
                    .relays
                    .get_mut(&s)
                    .map(|l| l.remove(0))
                    .unwrap_or_default();
                if let Some(l) = self.relays.get_mut(&other) {
                    l.retain(|&(t, _)| t != old);
                }
                self.out.push_back(Output::Relay {
                    token: old,
                    pair: None,
                    cap: None,
                });
            }
        }
        self.relays.entry(a).or_default().push((token, b));
        self.relays.entry(b).or_default().push((token, a));
        self.out.push_back(Output::Relay {
            token,
            pair: Some((at_a, at_b)),
            cap,
        });
        token
    }

    /// `session` moved: its relays follow it.
    fn relays_moved(&mut self, session: SessionId) {
        let Some(list) = self.relays.get(&session) else {
            return;
        };
        let mut updates = Vec::new();
        for &(token, other) in list {
            let here = self.sessions.get(&session).map(|s| s.addr());
            let there = self.sessions.get(&other).map(|s| s.addr());
            if let (Some(here), Some(there)) = (here, there) {
                updates.push(Output::Relay {
                    token,
                    pair: Some((here, there)),
                    cap: None,
                });
            }
        }
        self.out.extend(updates);
    }
}
