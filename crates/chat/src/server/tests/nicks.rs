//! Nicks nobody can fake or hoard (issue 11, part 4): look-alike nicks and room names, the
//! rate of new nick claims per source network, and nick expiry, in virtual time.

use std::net::Ipv6Addr;

use super::*;

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

impl H {
    /// `hello` from session `id` with key `k` at address `from`.
    fn hello_from(&mut self, id: SessionId, from: IpAddr, k: Key, nick: &str) {
        self.s.connected(self.now, id, from, k);
        self.drain();
        self.send(
            id,
            ClientMsg::Hello {
                v: wire::VERSION,
                nick: nick.into(),
                client: id,
                rooms: vec![],
                dms: vec![],
                echo: true,
            },
        );
    }

    fn welcomed(&mut self, id: SessionId) -> Option<String> {
        self.take(id).into_iter().find_map(|m| match m {
            ServerMsg::Welcome { nick, .. } => Some(nick),
            _ => None,
        })
    }

    fn join(&mut self, id: SessionId, room: &str) {
        self.send(
            id,
            ClientMsg::Join(JoinReq {
                room: room.into(),
                after: None,
                key: None,
            }),
        );
    }

    fn nick_ops(&self) -> Vec<Op> {
        self.persisted
            .iter()
            .filter(|o| matches!(o, Op::SetNick { .. } | Op::ReleaseNick { .. }))
            .cloned()
            .collect()
    }
}

/// The one error of a refused `hello`, which also closes the session.
fn refused(h: &mut H, id: SessionId) -> (String, String) {
    let e = h.errors(id);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(h.closed.contains(&id), "session {id} is closed");
    (e[0].1.clone(), e[0].2.clone())
}

fn unlimited() -> ServerConfig {
    ServerConfig {
        nick_claim_burst: 1000,
        max_sessions_per_ip: 1000,
        ..ServerConfig::default()
    }
}

#[test]
fn invisible_filler_and_mixed_script_nicks_are_refused() {
    let mut h = H::new(unlimited());
    let mut id = 0;
    for c in [
        '\u{2063}',
        '\u{2061}',
        '\u{034F}',
        '\u{180E}',
        '\u{FE0F}',
        '\u{E0020}',
        '\u{3164}',
    ] {
        for n in [format!("ali{c}ce"), format!("alice{c}")] {
            id += 1;
            h.hello_from(id, ip(1), key(1), &n);
            let (code, m) = refused(&mut h, id);
            assert_eq!(code, code::BAD_NAME, "{n:?}");
            assert!(m.contains(&format!("U+{:04X}", c as u32)), "{n:?}: {m}");
        }
    }
    id += 1;
    h.hello_from(id, ip(1), key(1), "\u{0430}lice");
    let (code, m) = refused(&mut h, id);
    assert_eq!(code, code::BAD_NAME);
    assert!(m.contains("mixes scripts (Cyrillic, Latin)"), "{m}");
    // Nothing was bound, and a /nick is held to the same rules.
    assert!(h.nick_ops().is_empty());
    h.hello_from(100, ip(1), key(1), "alice");
    assert_eq!(h.welcomed(100).as_deref(), Some("alice"));
    h.send(
        100,
        ClientMsg::Nick {
            nick: "al\u{3164}".into(),
        },
    );
    let e = h.errors(100);
    assert_eq!(e[0].1, code::BAD_NAME, "{e:?}");
    assert!(e[0].2.contains("U+3164"), "{e:?}");
}

#[test]
fn a_look_alike_of_another_keys_nick_is_refused_and_the_owner_keeps_its_own() {
    let mut h = H::new(unlimited());
    h.hello_from(1, ip(1), key(1), "alice");
    assert_eq!(h.welcomed(1).as_deref(), Some("alice"));
    for (id, n) in [(2, "aIice"), (3, "a1ice"), (4, "a|ice"), (5, "ALICE")] {
        h.hello_from(id, ip(2), key(2), n);
        let (code, m) = refused(&mut h, id);
        assert_eq!(code, code::NICK_TAKEN, "{n}");
        if n == "ALICE" {
            assert!(m.contains("'alice' belongs to another key"), "{m}");
        } else {
            assert!(
                m.contains(&format!(
                    "nick '{n}' looks like 'alice', which belongs to another key"
                )),
                "{m}"
            );
        }
    }
    // Whole-script look-alikes (every letter Cyrillic) are caught by the skeleton too.
    h.hello_from(6, ip(1), key(3), "coco");
    h.hello_from(7, ip(2), key(2), "\u{0441}\u{043E}\u{0441}\u{043E}");
    assert_eq!(refused(&mut h, 7).0, code::NICK_TAKEN);
    // A /nick from a key that has a nick: the same.
    h.hello_from(8, ip(2), key(2), "bob");
    assert_eq!(h.welcomed(8).as_deref(), Some("bob"));
    h.send(
        8,
        ClientMsg::Nick {
            nick: "aIice".into(),
        },
    );
    let e = h.errors(8);
    assert_eq!(e[0].1, code::NICK_TAKEN, "{e:?}");
    assert!(e[0].2.contains("looks like 'alice'"), "{e:?}");
    // The owner re-claims its nick from another device, in another case, or a look-alike of
    // it (renaming itself): all fine.
    h.hello_from(9, ip(3), key(1), "alice");
    assert_eq!(h.welcomed(9).as_deref(), Some("alice"));
    h.send(
        9,
        ClientMsg::Nick {
            nick: "aIice".into(),
        },
    );
    assert!(h.errors(9).is_empty());
    h.hello_from(10, ip(3), key(1), "Alice");
    assert_eq!(h.welcomed(10).as_deref(), Some("Alice"));
    // A name freed by a rename is free for look-alikes too.
    h.send(
        10,
        ClientMsg::Nick {
            nick: "carol".into(),
        },
    );
    h.hello_from(11, ip(2), key(4), "a1ice");
    assert_eq!(h.welcomed(11).as_deref(), Some("a1ice"));
}

#[test]
fn canonically_equivalent_spellings_are_one_nick_bound_in_nfc() {
    let mut h = H::new(unlimited());
    h.hello_from(1, ip(1), key(1), "zoe\u{0308}");
    assert_eq!(h.welcomed(1).as_deref(), Some("zo\u{00EB}"));
    h.hello_from(2, ip(1), key(2), "ZO\u{00CB}");
    assert_eq!(refused(&mut h, 2).0, code::NICK_TAKEN);
    h.hello_from(3, ip(1), key(2), "bob");
    h.dm(3, 1, "zoe\u{0308}", "hi");
    assert!(h.errors(3).is_empty());
}

#[test]
fn look_alike_room_names_are_refused_while_the_room_exists() {
    let mut h = H::new(unlimited());
    h.hello_from(1, ip(1), key(1), "alice");
    h.hello_from(2, ip(1), key(2), "bob");
    h.take(1);
    h.take(2);
    h.join(1, "#main");
    h.join(2, "#rnain");
    let e = h.errors(2);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, code::BAD_NAME);
    assert!(
        e[0].2
            .contains("room '#rnain' looks like '#main', which already exists"),
        "{e:?}"
    );
    // The same room in another case is the same room.
    h.join(2, "#MAIN");
    assert!(h.errors(2).is_empty());
    // Rules of nicks for the part after '#'.
    for r in ["#r\u{0443}st", "#ma\u{2063}in", "#\u{3164}"] {
        h.join(2, r);
        assert_eq!(h.errors(2)[0].1, code::BAD_NAME, "{r:?}");
    }
    // An empty room without messages or topic is gone: its look-alike may be created.
    h.send(
        1,
        ClientMsg::Part {
            room: "#main".into(),
        },
    );
    h.send(
        2,
        ClientMsg::Part {
            room: "#main".into(),
        },
    );
    h.join(2, "#rnain");
    assert!(h.errors(2).is_empty());
    // A room with messages exists after everyone left it.
    h.say(2, 1, "#rnain", "hi");
    h.send(
        2,
        ClientMsg::Part {
            room: "#rnain".into(),
        },
    );
    h.take(1);
    h.join(1, "#main");
    assert!(h.errors(1)[0].2.contains("looks like '#rnain'"));
}

#[test]
fn rooms_and_nicks_loaded_from_the_store_count() {
    let loaded = Loaded {
        nicks: vec![("alice".into(), key(1))],
        last_ids: vec![("#main".into(), 3)],
        topics: vec![("#help".into(), "t".into(), "alice".into(), 1)],
        ..Loaded::default()
    };
    let mut h = H::with(unlimited(), loaded);
    h.hello_from(1, ip(1), key(2), "aIice");
    assert_eq!(refused(&mut h, 1).0, code::NICK_TAKEN);
    h.hello_from(2, ip(1), key(2), "bob");
    h.join(2, "#rnain");
    assert!(h.errors(2)[0].2.contains("looks like '#main'"));
    h.join(2, "#he1p");
    assert!(h.errors(2)[0].2.contains("looks like '#help'"));
    h.join(2, "#main");
    assert!(h.errors(2).is_empty());
}

/// 100 throwaway keys from one address: only the burst gets nicks; another address is
/// unaffected; keys that have a nick are not counted again; the budget refills.
#[test]
fn new_nick_claims_are_rate_limited_per_source_network() {
    let config = ServerConfig {
        max_sessions_per_ip: 1000,
        ..ServerConfig::default()
    };
    let (burst, per_hour) = (config.nick_claim_burst, config.nick_claims_per_hour);
    assert_eq!((burst, per_hour), (5, 6));
    let mut h = H::new(config);
    let mut got = Vec::new();
    for i in 0..100u8 {
        let id = SessionId::from(i) + 1;
        h.hello_from(id, ip(1), key(i), &format!("squat{i}"));
        if h.closed.contains(&id) {
            let (code, m) = refused(&mut h, id);
            assert_eq!(code, code::NICK_RATE);
            assert!(m.contains("at most 5 at once, then 6 per hour"), "{m}");
            assert!(m.contains("try again in 10 min"), "{m}");
        } else {
            assert!(h.welcomed(id).is_some());
            got.push(i);
        }
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(h.nick_ops().len(), 5);
    // Another address (and another IPv6 /64) is unaffected.
    h.hello_from(200, ip(2), key(200), "carol");
    assert_eq!(h.welcomed(200).as_deref(), Some("carol"));
    let v6 = |last| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
    for i in 0..5 {
        h.hello_from(
            201 + u64::from(i),
            v6(i),
            key(201 + i as u8),
            &format!("v6u{i}"),
        );
        assert!(h.welcomed(201 + u64::from(i)).is_some());
    }
    h.hello_from(210, v6(99), key(210), "v6u9");
    assert_eq!(refused(&mut h, 210).0, code::NICK_RATE, "one /64");
    // A key with a nick reconnects, or renames, without a claim.
    h.hello_from(300, ip(1), key(0), "squat0");
    assert_eq!(h.welcomed(300).as_deref(), Some("squat0"));
    h.send(
        300,
        ClientMsg::Nick {
            nick: "renamed".into(),
        },
    );
    assert!(h.errors(300).is_empty());
    // Ten minutes later: one more.
    h.advance(10 * 60 * 1000);
    h.hello_from(301, ip(1), key(50), "late");
    assert_eq!(h.welcomed(301).as_deref(), Some("late"));
    h.hello_from(302, ip(1), key(51), "later");
    assert_eq!(refused(&mut h, 302).0, code::NICK_RATE);
}

#[test]
fn a_nick_whose_key_stays_away_expires_and_can_be_claimed() {
    let config = ServerConfig {
        nick_expiry_ms: Some(30 * DAY_MS),
        ..unlimited()
    };
    let mut h = H::new(config);
    h.hello_from(1, ip(1), key(1), "alice");
    h.hello_from(2, ip(1), key(3), "bob1");
    h.hello_from(3, ip(1), key(5), "dave");
    h.advance(DAY_MS);
    let left = h.now;
    h.s.disconnected(h.now, 1, "left");
    h.s.disconnected(h.now, 2, "left");
    h.drain();
    // The last disconnect recorded when alice was seen.
    assert!(h.persisted.contains(&Op::Seen {
        key: key(1),
        ts_ms: h.now
    }));
    // Away 30 days less a second: still hers.
    h.advance(30 * DAY_MS - 1000);
    h.hello_from(10, ip(2), key(2), "alice");
    assert_eq!(refused(&mut h, 10).0, code::NICK_TAKEN);
    // dave stayed connected all along: never expires.
    h.hello_from(11, ip(2), key(2), "dave");
    assert_eq!(refused(&mut h, 11).0, code::NICK_TAKEN);
    h.advance(1000);
    h.hello_from(12, ip(2), key(2), "Alice");
    assert_eq!(h.welcomed(12).as_deref(), Some("Alice"));
    // Expired look-alikes are released as well.
    h.hello_from(13, ip(2), key(4), "bobl");
    assert_eq!(h.welcomed(13).as_deref(), Some("bobl"));
    // The expired bindings were aged out as their time came (the same second), before the
    // claims.
    let ops = h.nick_ops();
    let tail: Vec<_> = ops[ops.len() - 4..].to_vec();
    assert_eq!(
        tail,
        vec![
            // Released in the store only if nobody saw them after they left (in a cluster,
            // another node may have).
            Op::ReleaseNick {
                key: key(1),
                seen_by: left
            },
            Op::ReleaseNick {
                key: key(3),
                seen_by: left
            },
            Op::SetNick {
                nick: "Alice".into(),
                fold: "alice".into(),
                key: key(2),
                seen_ms: h.now
            },
            Op::SetNick {
                nick: "bobl".into(),
                fold: "bobl".into(),
                key: key(4),
                seen_ms: h.now
            },
        ]
    );
    // alice's old key comes back: the nick is someone else's now.
    h.hello_from(14, ip(1), key(1), "alice");
    assert_eq!(refused(&mut h, 14).0, code::NICK_TAKEN);
    // A reconnect refreshes the time: dave, back after 20 days and gone again, has the full
    // period again.
    h.s.disconnected(h.now, 3, "left");
    h.drain();
    h.advance(20 * DAY_MS);
    h.hello_from(15, ip(1), key(5), "dave");
    assert!(h.welcomed(15).is_some());
    h.s.disconnected(h.now, 15, "left");
    h.drain();
    h.advance(20 * DAY_MS);
    h.hello_from(16, ip(2), key(6), "dave");
    assert_eq!(refused(&mut h, 16).0, code::NICK_TAKEN);
}

#[test]
fn expiry_counts_from_the_stored_time_and_not_right_after_a_restart() {
    let now = 1_000_000;
    let loaded = Loaded {
        nicks: vec![("alice".into(), key(1)), ("bob".into(), key(2))],
        seen: vec![(key(1), now - 200 * DAY_MS), (key(2), now - 10 * DAY_MS)],
        ..Loaded::default()
    };
    let mut h = H::with(unlimited(), loaded);
    // In the first minutes, alice (connected when the server stopped?) may still come back.
    h.hello_from(1, ip(1), key(3), "alice");
    assert_eq!(refused(&mut h, 1).0, code::NICK_TAKEN);
    h.advance(10 * 60 * 1000);
    h.hello_from(2, ip(1), key(3), "alice");
    assert_eq!(h.welcomed(2).as_deref(), Some("alice"));
    h.hello_from(3, ip(1), key(4), "bob");
    assert_eq!(refused(&mut h, 3).0, code::NICK_TAKEN);
    // With expiry off, nothing ever expires.
    let loaded = Loaded {
        nicks: vec![("alice".into(), key(1))],
        seen: vec![(key(1), 0)],
        ..Loaded::default()
    };
    let mut h = H::with(
        ServerConfig {
            nick_expiry_ms: None,
            ..unlimited()
        },
        loaded,
    );
    h.hello_from(1, ip(1), key(3), "x");
    h.advance(1000 * DAY_MS);
    h.hello_from(2, ip(1), key(3), "alice");
    assert_eq!(refused(&mut h, 2).0, code::NICK_TAKEN);
}

impl H {
    /// Runs virtual time to `until`, calling `handle_timeout` whenever it is due (as the
    /// runner does), and returns the size of every batch of `Op::Seen` a call persisted.
    fn run_until(&mut self, until: i64) -> Vec<usize> {
        let mut batches = Vec::new();
        let mut calls = 0;
        while let Some(due) = self.s.poll_timeout().filter(|&d| d <= until) {
            calls += 1;
            assert!(calls < 100_000, "handle_timeout is always due: a busy loop");
            self.now = self.now.max(due);
            let before = self.persisted.len();
            self.s.handle_timeout(self.now);
            self.drain();
            let seen = self.persisted[before..]
                .iter()
                .filter(|o| matches!(o, Op::Seen { .. }))
                .count();
            if seen > 0 {
                batches.push(seen);
            }
        }
        self.now = until;
        batches
    }

    /// What the store would load after a crash now: the nicks and their last-seen times as
    /// persisted so far.
    fn as_stored(&self) -> Loaded {
        let mut nicks: Vec<(String, Key)> = Vec::new();
        let mut seen: HashMap<Key, i64> = HashMap::new();
        for op in &self.persisted {
            match op {
                Op::SetNick {
                    nick, key, seen_ms, ..
                } => {
                    nicks.retain(|(_, k)| k != key);
                    nicks.push((nick.clone(), *key));
                    seen.insert(*key, *seen_ms);
                }
                Op::Seen { key, ts_ms } => {
                    if let Some(t) = seen.get_mut(key) {
                        *t = (*t).max(*ts_ms);
                    }
                }
                Op::ReleaseNick { key, seen_by } if seen.get(key).is_some_and(|t| t <= seen_by) => {
                    nicks.retain(|(_, k)| k != key);
                    seen.remove(key);
                }
                _ => {}
            }
        }
        Loaded {
            nicks,
            seen: seen.into_iter().collect(),
            ..Loaded::default()
        }
    }
}

/// A user connected for longer than the expiry period keeps the nick across a restart, both
/// a clean one (`shutdown` records every connected owner) and a crash (connected owners are
/// recorded hourly while they stay).
#[test]
fn a_nick_of_a_user_connected_longer_than_the_expiry_survives_a_restart() {
    let config = ServerConfig {
        nick_expiry_ms: Some(2 * DAY_MS),
        ..unlimited()
    };
    let mut h = H::new(config.clone());
    h.hello_from(1, ip(1), key(1), "alice");
    h.hello_from(2, ip(1), key(2), "bob");
    let start = h.now;
    // Three days connected.
    h.run_until(start + 3 * DAY_MS);
    let refreshed: Vec<i64> = h
        .persisted
        .iter()
        .filter_map(|o| match o {
            Op::Seen { key: k, ts_ms } if *k == key(1) => Some(*ts_ms),
            _ => None,
        })
        .collect();
    // Once an hour, no more.
    assert_eq!(refreshed.len(), 72, "{refreshed:?}");
    assert!(
        refreshed
            .windows(2)
            .all(|w| w[1] - w[0] == SEEN_RESOLUTION_MS)
    );

    // A crash: what the store holds is at most an hour old.
    let mut after_crash = H::with(config.clone(), h.as_stored());
    after_crash.now = h.now + 60_000;
    after_crash.run_until(after_crash.now + RESTART_GRACE_MS + 1000);
    after_crash.hello_from(1, ip(2), key(3), "alice");
    assert_eq!(refused(&mut after_crash, 1).0, code::NICK_TAKEN);
    after_crash.hello_from(2, ip(2), key(3), "bob");
    assert_eq!(refused(&mut after_crash, 2).0, code::NICK_TAKEN);

    // A clean shutdown half an hour after the last refresh: recorded at the shutdown.
    h.run_until(h.now + 30 * 60 * 1000);
    h.s.shutdown(h.now, "server shutting down");
    h.drain();
    for k in [key(1), key(2)] {
        assert!(
            h.persisted.contains(&Op::Seen {
                key: k,
                ts_ms: h.now
            }),
            "{k:?}"
        );
    }
    // Back a day later (the owners do not come back): two days after the shutdown less a
    // millisecond, still theirs; a millisecond more and the nicks expire, counted from the
    // shutdown.
    let mut restarted = H::with(config, h.as_stored());
    restarted.now = h.now + DAY_MS;
    restarted.hello_from(1, ip(2), key(3), "carol");
    restarted.now = h.now + 2 * DAY_MS - 1;
    restarted.hello_from(2, ip(2), key(4), "alice");
    assert_eq!(refused(&mut restarted, 2).0, code::NICK_TAKEN);
    restarted.now += 1;
    restarted.hello_from(3, ip(2), key(4), "alice");
    assert_eq!(restarted.welcomed(3).as_deref(), Some("alice"));
}

/// The hourly refresh is amortized: a bounded batch per `handle_timeout`, each connected
/// owner once an hour, none after it left.
#[test]
fn connected_owners_are_refreshed_in_bounded_batches() {
    let mut h = H::new(unlimited());
    let n = 2 * SEEN_REFRESH_PER_TICK + 10;
    for i in 0..n {
        let id = SessionId::try_from(i).expect("small") + 1;
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(i as u64).to_le_bytes());
        h.hello_from(id, ip(1), k, &format!("u{i}"));
    }
    // The last one leaves at once.
    h.s.disconnected(h.now, SessionId::try_from(n).expect("small"), "left");
    h.drain();
    let start = h.now;
    let batches = h.run_until(start + SEEN_RESOLUTION_MS - 1);
    assert!(batches.is_empty(), "{batches:?}");
    let batches = h.run_until(start + 2 * SEEN_RESOLUTION_MS - 1);
    assert_eq!(batches.len(), 3, "{batches:?}");
    assert_eq!(batches.iter().sum::<usize>(), n - 1);
    assert!(batches.iter().all(|&b| b <= SEEN_REFRESH_PER_TICK));
    let batches = h.run_until(start + 3 * SEEN_RESOLUTION_MS - 1);
    assert_eq!(batches.iter().sum::<usize>(), n - 1);
    assert!(batches.iter().all(|&b| b <= SEEN_REFRESH_PER_TICK));
    // Nobody connected, nothing left to do.
    for i in 1..n {
        h.s.disconnected(h.now, SessionId::try_from(i).expect("small"), "left");
    }
    h.drain();
    h.run_until(h.now + 2 * SEEN_RESOLUTION_MS);
    // Nothing until the first of their nicks expires, to be aged out: the one that left at
    // the start, seen last then.
    let expiry = DEFAULT_NICK_EXPIRY_DAYS * DAY_MS;
    assert_eq!(h.s.poll_timeout(), Some(start + expiry));
}

/// Many /64s of one /48, each a fresh network to a /64 count: together they get the /48's
/// budget (four times a /64's burst), not one each.
#[test]
fn the_64s_of_one_48_share_its_nick_claims() {
    let config = ServerConfig {
        max_sessions_per_ip: 1000,
        ..ServerConfig::default()
    };
    let burst = config.nick_claim_burst as usize;
    let mut h = H::new(config);
    let mut got = 0;
    for i in 0..500u16 {
        let id = SessionId::from(i) + 1;
        let from = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, i, 0, 0, 0, 1));
        let mut k = [7u8; 32];
        k[..2].copy_from_slice(&i.to_le_bytes());
        h.hello_from(id, from, k, &format!("v6n{i}"));
        if h.closed.contains(&id) {
            assert_eq!(refused(&mut h, id).0, code::NICK_RATE);
        } else {
            assert!(h.welcomed(id).is_some());
            got += 1;
        }
    }
    assert_eq!(got, 4 * burst);
}

/// A nick is refused by its length as received, before it is normalized: the error counts
/// the characters sent, not those of a normalized copy.
#[test]
fn an_overlong_nick_is_refused_by_its_length_as_received() {
    let mut h = H::new(unlimited());
    let long = "e\u{0301}".repeat(1000);
    h.hello_from(1, ip(1), key(1), &long);
    let (code, m) = refused(&mut h, 1);
    assert_eq!(code, code::BAD_NAME);
    assert!(m.contains("too long: 2000 characters"), "{m}");
    h.hello_from(2, ip(1), key(1), "alice");
    h.take(2);
    h.send(2, ClientMsg::Nick { nick: long });
    let e = h.errors(2);
    assert_eq!(e[0].1, code::BAD_NAME, "{e:?}");
    assert!(e[0].2.contains("too long: 2000 characters"), "{e:?}");
}
