//! Core tests with arbitrary keys and virtual time: no sockets, no store (commits are
//! simulated, and can be held back to show that nothing is shown before its commit).

use std::net::Ipv4Addr;

use super::*;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn key(n: u8) -> Key {
    [n; 32]
}

/// The two addresses of a relayed pair.
type Pair = (std::net::SocketAddr, std::net::SocketAddr);

struct H {
    s: Server,
    now: i64,
    /// Everything sent, per session, decoded.
    inbox: HashMap<SessionId, Vec<ServerMsg>>,
    closed: Vec<SessionId>,
    /// Persist batches not yet committed (when `auto_commit` is off).
    held: Vec<(u64, Vec<Op>)>,
    persisted: Vec<Op>,
    reads: Vec<(SessionId, String, Option<u64>, usize)>,
    /// The `id` of each of `reads`.
    read_ids: Vec<Option<u64>>,
    /// `ReadAfter`s not answered yet (when `defer_after` is on), in order.
    defer_after: bool,
    after_reads: VecDeque<(SessionId, u64, String, u64, u64, usize, usize)>,
    /// `ReadAfter`s answered, and the most messages one answer carried.
    after_answered: usize,
    after_most: usize,
    auto_commit: bool,
    sends: usize,
    /// Sessions whose transport takes nothing (a reader that does not read); every other
    /// session's output is taken at once, as a fast link would.
    stuck: HashSet<SessionId>,
    /// Bytes sent to each session and not taken.
    outstanding: HashMap<SessionId, usize>,
    /// The store's messages (loaded and persisted), for `ReadUndelivered`.
    stored: Vec<Record>,
    /// The store's id high-water mark per conversation: a commit gives the next.
    last_ids: HashMap<String, u64>,
    /// Bus requests seen (a server alone makes none).
    bus_outputs: usize,
    undelivered_reads: usize,
    /// `ReadUndelivered`s not answered yet (when `defer_reads` is on).
    defer_reads: bool,
    deferred: Vec<(SessionId, Key, Option<String>)>,
    /// A closed session stays connected (its `disconnected` is up to the test).
    linger: bool,
    /// The sessions closed with `now` (queue dropped, connection aborted).
    closed_now: Vec<SessionId>,
    /// `Output::Relay`s, in order.
    relay_out: Vec<([u8; 16], Option<Pair>)>,
    /// The caps of those that set a pair up or moved it, in order.
    relay_caps: Vec<Option<u64>>,
    /// `Output::Search`es, in order.
    searches: Vec<SearchAsked>,
    /// The store's reactions: (conversation, message, emoji, key).
    reactions: HashSet<(String, u64, String, Key)>,
}

/// An `Output::Search`: (session, conversation, words, before, limit).
type SearchAsked = (SessionId, String, Vec<String>, Option<u64>, usize);

impl H {
    fn new(config: ServerConfig) -> Self {
        Self::with(config, Loaded::default())
    }

    fn with(config: ServerConfig, loaded: Loaded) -> Self {
        let last_ids = loaded.last_ids.iter().cloned().collect();
        H {
            last_ids,
            bus_outputs: 0,
            s: Server::new(config, loaded),
            now: 1_000_000,
            inbox: HashMap::new(),
            closed: Vec::new(),
            held: Vec::new(),
            persisted: Vec::new(),
            reads: Vec::new(),
            read_ids: Vec::new(),
            defer_after: false,
            after_reads: VecDeque::new(),
            after_answered: 0,
            after_most: 0,
            auto_commit: true,
            sends: 0,
            stuck: HashSet::new(),
            outstanding: HashMap::new(),
            stored: Vec::new(),
            undelivered_reads: 0,
            defer_reads: false,
            deferred: Vec::new(),
            linger: false,
            closed_now: Vec::new(),
            relay_out: Vec::new(),
            relay_caps: Vec::new(),
            searches: Vec::new(),
            reactions: HashSet::new(),
        }
    }

    /// What `Reader::markers` answers, from the persisted markers.
    fn markers(&self, key: &Key, limit: usize) -> Vec<(String, u64)> {
        let mut by_conv: std::collections::BTreeMap<String, u64> = Default::default();
        for op in &self.persisted {
            if let Op::ReadMarker { key: k, conv, upto } = op {
                if k == key {
                    let e = by_conv.entry(conv.clone()).or_default();
                    *e = (*e).max(*upto);
                }
            }
        }
        by_conv.into_iter().take(limit).collect()
    }

    /// What `Reader::search` answers, from `stored`: every word in the text (as a word,
    /// any case), newest first.
    fn search(
        &self,
        conv: &str,
        terms: &[String],
        before: Option<u64>,
        limit: usize,
    ) -> Vec<Record> {
        let mut hits: Vec<Record> = self
            .stored
            .iter()
            .filter(|r| {
                let words = chirp_store::search_terms(&r.text).unwrap_or_default();
                r.conv == conv
                    && r.kind < 2
                    && r.id < before.unwrap_or(u64::MAX)
                    && terms.iter().all(|t| words.contains(t))
            })
            .cloned()
            .collect();
        hits.sort_by_key(|r| Reverse(r.id));
        hits.truncate(limit);
        hits
    }

    /// What `Reader::undelivered` answers, from `stored` and the persisted DM cursors.
    fn undelivered(&self, key: &Key, after: Option<&str>, limit: usize) -> Vec<(String, u64)> {
        let mut cursors: HashMap<&str, u64> = HashMap::new();
        for op in &self.persisted {
            if let Op::DmCursor { key: k, conv, upto } = op {
                if k == key {
                    let e = cursors.entry(conv.as_str()).or_default();
                    *e = (*e).max(*upto);
                }
            }
        }
        let mut first: std::collections::BTreeMap<&str, u64> = Default::default();
        for r in &self.stored {
            let undelivered = r.to_key.as_ref() == Some(key)
                && r.id > cursors.get(r.conv.as_str()).copied().unwrap_or(0)
                && after.is_none_or(|a| r.conv.as_str() > a);
            if undelivered {
                let e = first.entry(r.conv.as_str()).or_insert(r.id);
                *e = (*e).min(r.id);
            }
        }
        first
            .into_iter()
            .take(limit)
            .map(|(c, id)| (c.to_owned(), id))
            .collect()
    }

    fn drain(&mut self) {
        let mut guard = 0;
        while let Some(o) = self.s.poll_output() {
            guard += 1;
            assert!(guard < 1_000_000, "output never ends");
            match o {
                Output::Send { to, data } => {
                    self.sends += 1;
                    let m = ServerMsg::decode(&data).expect("server output decodes");
                    self.inbox.entry(to).or_default().push(m);
                    if self.stuck.contains(&to) {
                        *self.outstanding.entry(to).or_default() += data.len();
                    } else {
                        self.s.sent(self.now, to, data.len());
                    }
                }
                Output::Close { session, now, .. } => {
                    self.closed.push(session);
                    if now {
                        self.closed_now.push(session);
                    }
                    if !self.linger {
                        self.s.disconnected(self.now, session, "closed");
                    }
                }
                Output::Publish { .. } | Output::Follow(_) | Output::Unfollow(_) => {
                    self.bus_outputs += 1;
                }
                Output::Relay { token, pair, cap } => {
                    if pair.is_some() {
                        self.relay_caps.push(cap);
                    }
                    self.relay_out.push((token, pair));
                }
                Output::Sync { conv } => {
                    let last = self.last_ids.get(&conv).copied().unwrap_or(0);
                    self.s.synced(self.now, &conv, Ok(last));
                }
                Output::Persist { token, ops } => {
                    if self.auto_commit {
                        self.commit(token, ops);
                    } else {
                        self.held.push((token, ops));
                    }
                }
                Output::ReadHistory {
                    session,
                    id,
                    conv,
                    before,
                    limit,
                } => {
                    self.reads.push((session, conv, before, limit));
                    self.read_ids.push(id);
                }
                Output::ReadAfter {
                    session,
                    token,
                    conv,
                    after,
                    upto,
                    limit,
                    max_bytes,
                } => {
                    let read = (session, token, conv, after, upto, limit, max_bytes);
                    self.after_reads.push_back(read);
                    if !self.defer_after {
                        self.answer_after();
                    }
                }
                Output::ReadUndelivered {
                    session,
                    key,
                    after,
                    limit,
                } if self.defer_reads => {
                    assert_eq!(limit, UNDELIVERED_PAGE);
                    self.deferred.push((session, key, after));
                }
                Output::ReadUndelivered {
                    session,
                    key,
                    after,
                    limit,
                } => {
                    self.undelivered_reads += 1;
                    let page = self.undelivered(&key, after.as_deref(), limit);
                    self.s.undelivered_loaded(self.now, session, Ok(page));
                }
                Output::ReadMarkers { key, limit } => {
                    let markers = self.markers(&key, limit);
                    self.s.markers_loaded(key, Ok(markers));
                }
                Output::Search {
                    session,
                    id,
                    conv,
                    terms,
                    before,
                    limit,
                } => {
                    let hits = self.search(&conv, &terms, before, limit);
                    self.searches
                        .push((session, conv.clone(), terms, before, limit));
                    self.s.search_loaded(session, id, &conv, limit, Ok(hits));
                }
            }
        }
    }

    /// What `Reader::after` answers, from `stored`.
    fn after(&self, conv: &str, after: u64, upto: u64, limit: usize, max: usize) -> Vec<Record> {
        let mut page: Vec<Record> = self
            .stored
            .iter()
            .filter(|r| r.conv == conv && r.id > after && r.id <= upto)
            .cloned()
            .collect();
        page.sort_by_key(|r| r.id);
        page.truncate(limit);
        let mut bytes = 0;
        let n = page
            .iter()
            .take_while(|r| {
                let go = bytes < max;
                bytes += r.text.len() + r.from_nick.len();
                go
            })
            .count();
        page.truncate(n);
        page
    }

    /// Answers the oldest `ReadAfter` not answered yet (its outputs are not drained).
    fn answer_after(&mut self) -> bool {
        let Some((session, token, conv, after, upto, limit, max)) = self.after_reads.pop_front()
        else {
            return false;
        };
        let page = self.after(&conv, after, upto, limit, max);
        self.after_answered += 1;
        self.after_most = self.after_most.max(page.len());
        self.s
            .replay_loaded(self.now, session, &conv, token, Ok(page));
        true
    }

    /// Commits `ops` as the store does: each message gets the next id of its conversation.
    fn commit(&mut self, token: u64, ops: Vec<Op>) {
        self.persisted.extend(ops.iter().cloned());
        let mut outcomes = Vec::new();
        for op in ops {
            outcomes.push(match op {
                Op::Message(m) => {
                    let last = self.last_ids.entry(m.conv.clone()).or_default();
                    *last += 1;
                    let id = *last;
                    self.stored.push(m.with_id(id));
                    Outcome::Stored { id }
                }
                Op::SetNick { .. } => Outcome::NickBound,
                Op::Amend(a) => self.amend(a),
                _ => Outcome::Done,
            });
        }
        self.s.committed(self.now, token, Ok(outcomes));
    }

    /// Makes a change to a stored message as the store does (`chirp_store`'s `Op::Amend`).
    fn amend(&mut self, a: chirp_store::Amend) -> Outcome {
        use chirp_store::{Change, Refusal, kind};
        let Some(i) = self.stored.iter().position(|r| {
            r.conv == a.conv && r.id == a.target && kind::is_message(r.kind) && !r.deleted
        }) else {
            return Outcome::Refused(Refusal::NoMessage);
        };
        if a.author.is_some_and(|k| k != self.stored[i].from_key) {
            return Outcome::Refused(Refusal::NotAuthor);
        }
        let mut count = None;
        let target = &mut self.stored[i];
        let (k, text) = match &a.change {
            Change::Edit(t) => {
                target.text = t.clone();
                target.edited = true;
                (kind::EDIT, t.clone())
            }
            Change::Delete => {
                target.text.clear();
                target.deleted = true;
                target.reactions.clear();
                for r in &mut self.stored {
                    if r.conv == a.conv && r.target == Some(a.target) && r.kind == kind::EDIT {
                        r.text.clear();
                        r.deleted = true;
                    }
                }
                (kind::DELETE, String::new())
            }
            Change::React(e) | Change::Unreact(e) => {
                let add = matches!(a.change, Change::React(_));
                let r = (a.conv.clone(), a.target, e.clone(), a.by_key);
                let changed = if add {
                    self.reactions.insert(r)
                } else {
                    self.reactions.remove(&r)
                };
                if !changed {
                    return Outcome::Refused(Refusal::Unchanged);
                }
                let n = self
                    .reactions
                    .iter()
                    .filter(|x| x.0 == a.conv && x.1 == a.target && x.2 == *e)
                    .count() as u64;
                count = Some(n);
                let target = &mut self.stored[i];
                match target.reactions.iter().position(|x| x.0 == *e) {
                    Some(j) if n == 0 => {
                        target.reactions.remove(j);
                    }
                    Some(j) => target.reactions[j].1 = n,
                    None => target.reactions.push((e.clone(), n)),
                }
                (if add { kind::REACT } else { kind::UNREACT }, e.clone())
            }
        };
        let last = self.last_ids.entry(a.conv.clone()).or_default();
        *last += 1;
        let record = Record {
            conv: a.conv.clone(),
            id: *last,
            ts_ms: a.ts_ms,
            from_key: a.by_key,
            from_nick: a.by_nick.clone(),
            to_key: a.to_key,
            to_nick: a.to_nick.clone(),
            kind: k,
            text: text.clone(),
            target: Some(a.target),
            reactions: count.map(|n| vec![(text, n)]).unwrap_or_default(),
            ..Record::default()
        };
        self.stored.push(record.clone());
        Outcome::Amended(Box::new(record))
    }

    fn commit_held(&mut self) {
        for (token, ops) in std::mem::take(&mut self.held) {
            self.commit(token, ops);
        }
        self.drain();
    }

    fn connect(&mut self, id: SessionId, k: Key) {
        self.s.connected(self.now, id, IP, k);
        self.drain();
    }

    fn send(&mut self, id: SessionId, m: ClientMsg) {
        self.s.message(self.now, id, &m.encode());
        self.drain();
    }

    fn hello(&mut self, id: SessionId, k: Key, nick: &str, rooms: &[&str]) {
        self.connect(id, k);
        self.send(id, hello_msg(id, nick, rooms));
    }

    fn say(&mut self, id: SessionId, c: u64, room: &str, text: &str) {
        self.send(
            id,
            ClientMsg::Say {
                c,
                room: Some(room.into()),
                to: None,
                text: text.into(),
                action: false,
            },
        );
    }

    fn dm(&mut self, id: SessionId, c: u64, to: &str, text: &str) {
        self.send(
            id,
            ClientMsg::Say {
                c,
                room: None,
                to: Some(to.into()),
                text: text.into(),
                action: false,
            },
        );
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        if self.s.poll_timeout().is_some_and(|t| t <= self.now) {
            self.s.handle_timeout(self.now);
        }
        self.drain();
    }

    /// The transport of a stuck session takes everything outstanding, at last.
    fn unstick(&mut self, id: SessionId) {
        self.stuck.remove(&id);
        let n = self.outstanding.remove(&id).unwrap_or(0);
        self.s.sent(self.now, id, n);
        self.drain();
    }

    /// The transport of a stuck session takes `n` bytes.
    fn take_bytes(&mut self, id: SessionId, n: usize) {
        let e = self.outstanding.entry(id).or_default();
        let n = n.min(*e);
        *e -= n;
        self.s.sent(self.now, id, n);
        self.drain();
    }

    fn take(&mut self, id: SessionId) -> Vec<ServerMsg> {
        self.inbox.remove(&id).unwrap_or_default()
    }

    fn msgs(&mut self, id: SessionId) -> Vec<Msg> {
        self.take(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Msg(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn errors(&mut self, id: SessionId) -> Vec<(Option<u64>, String, String)> {
        self.take(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Error { c, code, message } => Some((c, code, message)),
                _ => None,
            })
            .collect()
    }
}

fn texts(m: &[Msg]) -> Vec<(&str, u64, &str, bool)> {
    m.iter()
        .map(|m| (m.from.as_str(), m.id, m.text.as_str(), m.history))
        .collect()
}

/// A `hello` from client instance `client` as `nick`, joining `rooms`.
fn hello_msg(client: SessionId, nick: &str, rooms: &[&str]) -> ClientMsg {
    ClientMsg::Hello {
        v: wire::VERSION,
        nick: nick.into(),
        client,
        rooms: rooms
            .iter()
            .map(|r| JoinReq {
                room: (*r).into(),
                after: None,
                key: None,
            })
            .collect(),
        dms: vec![],
        echo: true,
    }
}

#[test]
fn a_nick_belongs_to_the_first_key_and_is_freed_by_a_change() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    assert!(matches!(h.take(1)[0], ServerMsg::Welcome { ref nick, .. } if nick == "alice"));
    // Another key, other case: refused with a clear error, and the session is closed.
    h.hello(2, key(2), "ALICE", &[]);
    let e = h.errors(2);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, code::NICK_TAKEN);
    assert!(e[0].2.contains("belongs to another key"), "{}", e[0].2);
    assert_eq!(h.closed, vec![2]);
    // Still refused while alice is offline: the binding is durable.
    h.s.disconnected(h.now, 1, "left");
    h.hello(3, key(2), "alice", &[]);
    assert_eq!(h.errors(3)[0].1, code::NICK_TAKEN);
    // The owner renames; the old nick is free for anyone.
    h.hello(4, key(1), "alice", &[]);
    h.send(4, ClientMsg::Nick { nick: "al".into() });
    assert!(h.take(4).contains(&ServerMsg::Nick {
        old: "alice".into(),
        new: "al".into()
    }));
    h.hello(5, key(2), "alice", &[]);
    assert!(h.errors(5).is_empty());
    // And "al" is now key 1's: key 2 cannot rename to it.
    h.send(5, ClientMsg::Nick { nick: "Al".into() });
    assert_eq!(h.errors(5)[0].1, code::NICK_TAKEN);
    // Every binding was persisted.
    let binds: Vec<_> = h
        .persisted
        .iter()
        .filter_map(|o| match o {
            Op::SetNick { nick, key, .. } => Some((nick.as_str(), key[0])),
            _ => None,
        })
        .collect();
    assert_eq!(binds, vec![("alice", 1), ("al", 1), ("alice", 2)]);
}

#[test]
fn room_messages_are_shown_and_acknowledged_only_after_commit() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#R"]);
    h.advance(1000);
    h.take(1);
    h.take(2);
    h.auto_commit = false;
    h.say(1, 7, "#r", "hello");
    h.say(1, 8, "#r", "again");
    assert!(
        h.take(1).is_empty() && h.take(2).is_empty(),
        "nothing before the commit"
    );
    assert_eq!(h.held.len(), 2);
    h.commit_held();
    assert_eq!(
        texts(&h.msgs(2)),
        vec![("alice", 1, "hello", false), ("alice", 2, "again", false)]
    );
    let a = h.take(1);
    let acks: Vec<_> = a
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack { c, id, conv, .. } => Some((*c, *id, conv.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![(7, 1, "#r"), (8, 2, "#r")]);
    // The sender sees its own message too (so all its devices agree).
    assert_eq!(
        a.iter().filter(|m| matches!(m, ServerMsg::Msg(_))).count(),
        2
    );
}

#[test]
fn a_failed_commit_is_an_error_and_nobody_sees_the_message() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.take(1);
    h.take(2);
    h.auto_commit = false;
    h.say(1, 1, "#r", "x");
    let (token, _) = h.held.pop().expect("persisted");
    h.s.committed(h.now, token, Err("disk full".into()));
    h.drain();
    assert!(h.msgs(2).is_empty());
    assert_eq!(
        h.errors(1),
        vec![(
            Some(1),
            code::STORE.to_owned(),
            "the server could not store this message; it was not delivered".to_owned()
        )]
    );
}

#[test]
fn multi_device_gets_everything_on_both_including_its_own_messages() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(1), "alice", &[]);
    h.hello(3, key(2), "bob", &["#r"]);
    // Device 2 learns it is in #r.
    assert!(
        h.take(2)
            .iter()
            .any(|m| matches!(m, ServerMsg::Joined { room, .. } if room == "#r"))
    );
    h.take(1);
    h.say(1, 1, "#r", "from phone");
    h.say(3, 1, "#r", "from bob");
    h.dm(3, 2, "alice", "psst");
    h.dm(2, 1, "bob", "reply");
    let want = vec![
        ("alice", 1, "from phone", false),
        ("bob", 2, "from bob", false),
        ("bob", 1, "psst", false),
        ("alice", 2, "reply", false),
    ];
    assert_eq!(texts(&h.msgs(1)), want);
    assert_eq!(texts(&h.msgs(2)), want);
    assert_eq!(texts(&h.msgs(3)), want);
    // Joining from one device joins the user: both devices hear of it.
    h.send(
        2,
        ClientMsg::Join(JoinReq {
            room: "#s".into(),
            after: None,
            key: None,
        }),
    );
    for s in [1, 2] {
        assert!(
            h.take(s)
                .iter()
                .any(|m| matches!(m, ServerMsg::Joined { room, .. } if room == "#s")),
            "session {s}"
        );
    }
    // One device leaving is not a quit; the last one is.
    h.s.disconnected(h.now, 1, "left");
    h.advance(1000);
    assert!(h.take(3).is_empty());
    h.s.disconnected(h.now, 2, "timed out");
    h.advance(1000);
    assert_eq!(
        h.take(3),
        vec![ServerMsg::Presence {
            room: "#r".into(),
            events: vec![Presence::Quit {
                nick: "alice".into(),
                reason: "timed out".into()
            }]
        }]
    );
}

#[test]
fn dms_to_offline_users_are_stored_and_delivered_on_connect() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.s.disconnected(h.now, 2, "left");
    h.dm(1, 1, "bob", "one");
    h.dm(1, 2, "BOB", "two");
    h.dm(1, 3, "carol", "nobody");
    assert_eq!(h.errors(1)[0].1, code::NO_SUCH_NICK);
    h.take(1);
    h.hello(3, key(2), "bob", &[]);
    let got = h.msgs(3);
    assert_eq!(
        texts(&got),
        vec![("alice", 1, "one", false), ("alice", 2, "two", false)]
    );
    assert_eq!(got[0].to.as_deref(), Some("bob"));
    assert_eq!(got[0].room, None);
    assert!(h.persisted.contains(&Op::DmCursor {
        key: key(2),
        conv: dm_conv(&key(1), &key(2)),
        upto: 2
    }));
    // Delivered once only.
    h.s.disconnected(h.now, 3, "left");
    h.hello(4, key(2), "bob", &[]);
    assert!(h.msgs(4).is_empty());
}

#[test]
fn undelivered_dms_survive_a_restart_through_the_loaded_state() {
    let conv = dm_conv(&key(1), &key(2));
    let rec = Record {
        conv: conv.clone(),
        id: 4,
        ts_ms: 5,
        from_key: key(1),
        from_nick: "alice".into(),
        to_key: Some(key(2)),
        to_nick: Some("bob".into()),
        kind: 0,
        text: "while you were out".into(),
        client_ref: None,
        ..Record::default()
    };
    let loaded = Loaded {
        nicks: vec![("alice".into(), key(1)), ("bob".into(), key(2))],
        last_ids: vec![(conv.clone(), 4)],
        recent: vec![rec.clone()],
        ..Loaded::default()
    };
    let mut h = H::with(ServerConfig::default(), loaded);
    // Undelivered DMs are not loaded: they stay in the store until their recipient connects.
    h.stored = vec![rec];
    h.hello(1, key(2), "bob", &[]);
    assert_eq!(
        texts(&h.msgs(1)),
        vec![("alice", 4, "while you were out", false)]
    );
    // Ids continue after the loaded high-water mark.
    h.hello(2, key(1), "alice", &[]);
    h.dm(2, 1, "bob", "next");
    assert_eq!(h.msgs(1)[0].id, 5);
}

#[test]
fn flood_control_refuses_with_an_error_then_refills() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.take(1);
    for c in 1..=12 {
        h.say(1, c, "#r", "spam");
    }
    let errs = h.errors(1);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, Some(11));
    assert_eq!(errs[0].1, code::FLOOD);
    assert!(
        errs[0].2.contains("at most 5 requests per second"),
        "{}",
        errs[0].2
    );
    assert_eq!(h.s.stats().messages, 10);
    // 5/s: after 200 ms exactly one more fits.
    h.advance(200);
    h.say(1, 13, "#r", "ok");
    h.say(1, 14, "#r", "too soon");
    let errs = h.errors(1);
    assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![Some(14)]);
}

#[test]
fn limits_and_bad_names_get_clear_errors() {
    let config = ServerConfig {
        max_rooms_per_user: 2,
        max_sessions_per_ip: 3,
        max_text: 100,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "al\u{202E}ice", &[]);
    let e = h.errors(1);
    assert_eq!(e[0].1, code::BAD_NAME);
    assert!(e[0].2.contains("bidirectional"), "{}", e[0].2);
    h.hello(2, key(1), "alice", &["#a", "#b", "#c", "nohash"]);
    let e = h.errors(2);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].1, code::TOO_MANY_ROOMS);
    assert!(e[0].2.contains("at most 2"), "{}", e[0].2);
    assert_eq!(e[1].1, code::BAD_NAME);
    assert!(e[1].2.contains("start with '#'"), "{}", e[1].2);
    h.say(2, 1, "#a", &"x".repeat(101));
    let e = h.errors(2);
    assert_eq!(e[0].1, code::BAD_TEXT);
    assert!(e[0].2.contains("101 bytes (at most 100)"), "{}", e[0].2);
    h.say(2, 2, "#zzz", "x");
    assert_eq!(h.errors(2)[0].1, code::NOT_IN_ROOM);
    h.send(
        2,
        ClientMsg::Topic {
            room: "#a".into(),
            topic: "bad\u{7}".into(),
        },
    );
    assert_eq!(h.errors(2)[0].1, code::BAD_NAME);
    // Sessions per IP: 2 open (1 was closed for its bad nick), 3 more: the third is refused.
    h.connect(3, key(3));
    h.connect(4, key(4));
    h.connect(5, key(5));
    assert_eq!(h.errors(5)[0].1, code::TOO_MANY_SESSIONS);
    assert!(h.closed.contains(&5));
    // Garbage is answered, not fatal.
    h.s.message(h.now, 2, b"\xff{not json");
    h.drain();
    assert_eq!(h.errors(2)[0].1, code::BAD_REQUEST);
    assert_eq!(h.s.stats().malformed, 1);
}

#[test]
fn presence_is_batched_so_mass_joins_cost_linear_messages() {
    let mut h = H::new(ServerConfig {
        max_sessions_per_ip: 1000,
        // 200 new nicks from one address.
        nick_claim_burst: 1000,
        ..ServerConfig::default()
    });
    let n = 200u64;
    for i in 0..n {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        h.hello(i + 1, k, &format!("u{i}"), &["#big"]);
    }
    let before = h.sends;
    h.advance(1000);
    // One presence message per member for the whole burst.
    assert_eq!(h.sends - before, n as usize);
    let last = h.take(1).into_iter().last().expect("presence");
    let ServerMsg::Presence { events, .. } = last else {
        panic!("{last:?}")
    };
    assert_eq!(events.len(), n as usize);
    // Everything together, per session: welcome, joined, the (empty) history's end, one
    // presence batch; and the creator's `modes` (it owns the room). Linear, not n².
    assert_eq!(h.sends, 4 * n as usize + 1, "{} sends", h.sends);
}

#[test]
fn join_replays_recent_history_and_resume_sends_only_what_was_missed() {
    let config = ServerConfig {
        history_on_join: 3,
        replay_cache: 5,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=4 {
        h.say(1, c, "#r", &format!("m{c}"));
    }
    h.hello(2, key(2), "bob", &["#r"]);
    let all = h.take(2);
    let got: Vec<Msg> = all
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts(&got),
        vec![
            ("alice", 2, "m2", true),
            ("alice", 3, "m3", true),
            ("alice", 4, "m4", true)
        ]
    );
    // The first join's replay ends like a history page, after its messages.
    assert_eq!(
        all.last(),
        Some(&ServerMsg::HistoryEnd {
            id: None,
            conv: "#r".into(),
            count: 3
        })
    );
    // Bob drops, misses m5, m6, reconnects with after = 4.
    h.s.disconnected(h.now, 2, "timed out");
    h.advance(1000);
    h.say(1, 5, "#r", "m5");
    h.say(1, 6, "#r", "m6");
    h.connect(3, key(2));
    h.send(
        3,
        ClientMsg::Hello {
            v: 1,
            nick: "bob".into(),
            client: 9,
            rooms: vec![JoinReq {
                room: "#r".into(),
                after: Some(4),
                key: None,
            }],
            dms: vec![],
            echo: true,
        },
    );
    let all = h.take(3);
    // A resume's messages are live ones: no history end.
    assert!(
        !all.iter()
            .any(|m| matches!(m, ServerMsg::HistoryEnd { .. })),
        "{all:?}"
    );
    let got: Vec<Msg> = all
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts(&got),
        vec![("alice", 5, "m5", false), ("alice", 6, "m6", false)]
    );
    // A gap longer than the cache is read from the store: nothing is missing.
    h.s.disconnected(h.now, 3, "left");
    for c in 7..=14 {
        h.advance(1000);
        h.say(1, c, "#r", "more");
    }
    h.connect(4, key(2));
    h.send(
        4,
        ClientMsg::Hello {
            v: 1,
            nick: "bob".into(),
            client: 9,
            rooms: vec![JoinReq {
                room: "#r".into(),
                after: Some(6),
                key: None,
            }],
            dms: vec![],
            echo: true,
        },
    );
    let all = h.take(4);
    assert!(
        !all.iter().any(|m| matches!(m, ServerMsg::Error { .. })),
        "{all:?}"
    );
    let ids: Vec<u64> = all
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, (7..=14).collect::<Vec<_>>());
    // The cache held 10..=14; 7..=9 came from the store, in one read.
    assert_eq!(h.after_answered, 1);
}

#[test]
fn history_pages_come_from_the_cache_or_the_store() {
    let config = ServerConfig {
        replay_cache: 5,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=8 {
        h.advance(1000);
        h.say(1, c, "#r", "x");
    }
    h.take(1);
    h.send(
        1,
        ClientMsg::History {
            id: None,
            room: Some("#r".into()),
            with: None,
            before: Some(8),
            limit: 2,
        },
    );
    let page = h.take(1);
    assert_eq!(page.len(), 3);
    assert!(matches!(&page[0], ServerMsg::Msg(m) if m.id == 6 && m.history));
    assert_eq!(
        page[2],
        ServerMsg::HistoryEnd {
            id: None,
            conv: "#r".into(),
            count: 2
        }
    );
    assert!(h.reads.is_empty());
    // Older than the cache holds: the store is asked.
    h.advance(1000);
    h.send(
        1,
        ClientMsg::History {
            id: None,
            room: Some("#r".into()),
            with: None,
            before: Some(4),
            limit: 50,
        },
    );
    assert_eq!(h.reads, vec![(1, "#r".to_owned(), Some(4), 50)]);
    // Not a member: refused.
    h.hello(2, key(2), "bob", &[]);
    h.send(
        2,
        ClientMsg::History {
            id: None,
            room: Some("#r".into()),
            with: None,
            before: None,
            limit: 5,
        },
    );
    assert_eq!(h.errors(2)[0].1, code::NOT_IN_ROOM);
}

#[test]
fn a_resent_message_is_stored_once_and_acknowledged_again() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.say(1, 1, "#r", "once");
    h.take(1);
    // The client reconnects (same client instance id 1) and resends c = 1.
    h.s.disconnected(h.now, 1, "timed out");
    h.connect(3, key(1));
    h.send(
        3,
        ClientMsg::Hello {
            v: 1,
            nick: "alice".into(),
            client: 1,
            rooms: vec![],
            dms: vec![],
            echo: true,
        },
    );
    h.take(3);
    h.say(3, 1, "#r", "once");
    assert!(matches!(
        h.take(3)[..],
        [ServerMsg::Ack { c: 1, id: 1, .. }]
    ));
    assert_eq!(h.msgs(2).len(), 1);
    assert_eq!(h.s.stats().messages, 1);
}

#[test]
fn part_topic_list_and_who() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r", "#s"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.advance(1000);
    h.take(1);
    h.take(2);
    h.send(
        1,
        ClientMsg::Topic {
            room: "#r".into(),
            topic: "Rust talk".into(),
        },
    );
    let t = ServerMsg::Topic {
        room: "#r".into(),
        topic: "Rust talk".into(),
        by: "alice".into(),
    };
    assert_eq!(h.take(2), vec![t.clone()]);
    h.send(2, ClientMsg::Who { room: "#r".into() });
    assert_eq!(
        h.take(2),
        vec![ServerMsg::Who {
            room: "#r".into(),
            members: vec!["alice".into(), "bob".into()],
            more: 0
        }]
    );
    h.send(2, ClientMsg::List);
    let ServerMsg::List { rooms } = &h.take(2)[0] else {
        panic!()
    };
    assert_eq!(
        rooms[0],
        RoomInfo {
            room: "#r".into(),
            members: 2,
            topic: "Rust talk".into()
        }
    );
    assert_eq!(rooms.len(), 2);
    h.take(1);
    h.send(1, ClientMsg::Part { room: "#r".into() });
    assert!(h.take(1).contains(&ServerMsg::Parted { room: "#r".into() }));
    h.advance(1000);
    assert_eq!(
        h.take(2),
        vec![ServerMsg::Presence {
            room: "#r".into(),
            events: vec![Presence::Part {
                nick: "alice".into()
            }]
        }]
    );
    h.send(1, ClientMsg::Part { room: "#r".into() });
    assert_eq!(h.errors(1)[0].1, code::NOT_IN_ROOM);
}

#[test]
fn requests_before_hello_are_refused_and_bad_versions_closed() {
    let mut h = H::new(ServerConfig::default());
    h.connect(1, key(1));
    h.say(1, 1, "#r", "x");
    assert_eq!(h.errors(1)[0].1, code::STATE);
    h.send(
        1,
        ClientMsg::Hello {
            v: 99,
            nick: "a".into(),
            client: 1,
            rooms: vec![],
            dms: vec![],
            echo: true,
        },
    );
    assert_eq!(h.errors(1)[0].1, code::VERSION);
    assert_eq!(h.closed, vec![1]);
}

/// docs/PROTOCOL.md, "Errors and sessions": a request out of state is refused with
/// `protocol_state` and only that request; the session stays open, and a `hello` still works.
#[test]
fn an_out_of_state_request_is_refused_alone_and_the_session_stays_open() {
    let mut h = H::new(ServerConfig::default());
    h.connect(1, key(1));
    h.send(1, ClientMsg::List);
    let got = h.take(1);
    assert!(
        matches!(&got[..], [ServerMsg::Error { c: None, code, message }]
            if code == code::STATE && message == "send hello first"),
        "{got:?}"
    );
    // A refused `history` with an `id` still gets its `history_end`, right after the error.
    h.send(
        1,
        ClientMsg::History {
            id: Some(9),
            room: Some("#r".into()),
            with: None,
            before: None,
            limit: 5,
        },
    );
    let got = h.take(1);
    assert!(
        matches!(&got[..], [
            ServerMsg::Error { code, .. },
            ServerMsg::HistoryEnd { id: Some(9), count: 0, .. },
        ] if code == code::STATE),
        "{got:?}"
    );
    assert!(h.closed.is_empty(), "not closed");
    // The session is still usable: `hello` gets `welcome`.
    h.send(1, hello_msg(1, "a", &[]));
    assert!(
        h.take(1)
            .iter()
            .any(|m| matches!(m, ServerMsg::Welcome { .. }))
    );
    // A second `hello` is refused the same way, and the session goes on.
    h.send(1, hello_msg(1, "a", &[]));
    let errors = h.errors(1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].1.as_str(), errors[0].2.as_str()),
        (code::STATE, "hello sent twice")
    );
    h.send(1, ClientMsg::List);
    assert!(
        h.take(1)
            .iter()
            .any(|m| matches!(m, ServerMsg::List { .. }))
    );
    assert!(h.closed.is_empty(), "not closed");
}

#[test]
fn shutdown_says_bye_to_every_session() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.take(1);
    h.take(2);
    h.s.shutdown(h.now, "server shutting down");
    h.drain();
    for s in [1, 2] {
        assert_eq!(
            h.take(s),
            vec![ServerMsg::Bye {
                reason: "server shutting down".into()
            }]
        );
    }
}

#[test]
fn messages_past_retention_age_are_not_replayed_from_memory() {
    let config = ServerConfig {
        max_age_ms: Some(10_000),
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "alice", &["#r"]);
    h.say(1, 1, "#r", "old");
    h.advance(8_000);
    h.say(1, 2, "#r", "new");
    h.advance(4_000);
    h.hello(2, key(2), "bob", &["#r"]);
    assert_eq!(texts(&h.msgs(2)), vec![("alice", 2, "new", true)]);
}

/// `n` messages of `len` bytes each in `conv` (ids 1..=n), as the store would load them.
fn filled(convs: &[&str], n: u64, len: usize) -> Loaded {
    let mut loaded = Loaded {
        nicks: vec![("filler".into(), key(9))],
        ..Loaded::default()
    };
    for conv in convs {
        loaded.last_ids.push(((*conv).into(), n));
        for id in 1..=n {
            loaded.recent.push(Record {
                conv: (*conv).into(),
                id,
                ts_ms: 5,
                from_key: key(9),
                from_nick: "filler".into(),
                to_key: None,
                to_nick: None,
                kind: 0,
                text: format!("{id:05}{}", "x".repeat(len - 5)),
                client_ref: None,
                ..Record::default()
            });
        }
    }
    loaded
}

/// A hello from a stuck reader (its transport takes nothing).
fn stuck_hello(h: &mut H, id: SessionId, k: Key, rooms: Vec<JoinReq>) {
    h.stuck.insert(id);
    h.connect(id, k);
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: format!("n{id}"),
        client: id,
        rooms,
        dms: vec![],
        echo: true,
    };
    h.send(id, hello);
}

/// Room messages `id`s of `conv` in `got`, in order.
fn ids_of(got: &[ServerMsg], conv: &str) -> Vec<u64> {
    got.iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) if m.conv == conv => Some(m.id),
            _ => None,
        })
        .collect()
}

/// The bytes one 8 KiB message takes on the wire, with room to spare.
const ONE_MESSAGE: usize = 9 * 1024;

#[test]
fn a_hello_repeating_one_room_800_times_replays_it_once_in_pages() {
    // The attack of issue 11: 800 × {"room":"#big","after":0}, 100 cached 8 KiB messages.
    // Encoded up front, that was 800 × 100 × 8 KiB = 655 MB.
    let mut h = H::with(ServerConfig::default(), filled(&["#big"], 100, 8 * 1024));
    let rooms = vec![
        JoinReq {
            room: "#big".into(),
            after: Some(0),
            key: None,
        };
        800
    ];
    assert!(
        ClientMsg::Hello {
            v: 1,
            nick: "n1".into(),
            client: 1,
            rooms: rooms.clone(),
            dms: vec![],
            echo: true,
        }
        .encode()
        .len()
            < 22 * 1024
    );
    stuck_hello(&mut h, 1, key(1), rooms);
    let queued = h.outstanding[&1];
    assert!(
        queued <= PAGE_BYTES + ONE_MESSAGE,
        "{queued} bytes queued for one hello"
    );
    assert_eq!(
        h.s.sessions[&1].queued, queued,
        "the core counts what it queued"
    );
    // As the transport takes it, the rest follows, page by page, each message once.
    for _ in 0..100 {
        h.take_bytes(1, PAGE_BYTES / 2);
        assert!(h.outstanding[&1] <= PAGE_BYTES + ONE_MESSAGE);
    }
    h.unstick(1);
    let got = h.take(1);
    assert_eq!(ids_of(&got, "#big"), (1..=100).collect::<Vec<_>>());
    let joined = got
        .iter()
        .filter(|m| matches!(m, ServerMsg::Joined { .. }))
        .count();
    assert_eq!(joined, 1, "one joined for 800 entries");
}

#[test]
fn a_64_kib_hello_of_distinct_rooms_is_capped_and_streamed_under_the_bound() {
    // The worst a hello can ask: as many distinct rooms as fit in one 64 KiB message, each
    // with a full cache (256 messages of 1 KiB), replayed from the start.
    let names: Vec<String> = (0..3000).map(|i| format!("#r{i}")).collect();
    let full: Vec<&str> = names.iter().take(40).map(String::as_str).collect();
    let mut h = H::with(ServerConfig::default(), filled(&full, 256, 1024));
    let rooms: Vec<JoinReq> = names
        .iter()
        .map(|r| JoinReq {
            room: r.clone(),
            after: Some(0),
            key: None,
        })
        .take_while({
            let mut len = 0;
            move |j| {
                len += j.room.len() + 20;
                len < 64 * 1024 - 100
            }
        })
        .collect();
    let n = rooms.len();
    assert!(n > 2000, "{n} rooms");
    stuck_hello(&mut h, 1, key(1), rooms);
    assert!(
        h.outstanding[&1] <= PAGE_BYTES + ONE_MESSAGE,
        "{} bytes queued",
        h.outstanding[&1]
    );
    let errs: Vec<_> = h
        .inbox
        .get(&1)
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            ServerMsg::Error { code, message, .. } => Some((code.clone(), message.clone())),
            _ => None,
        })
        .collect();
    // One for the first room past the limit (as a `join` gets), one counting the rest.
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().all(|e| e.0 == code::TOO_MANY_ROOMS));
    let rest = format!("{} more rooms were not joined", n - 33);
    assert!(errs[0].1.contains(&rest), "{}", errs[0].1);
    assert!(errs[1].1.contains("cannot join #r32"), "{}", errs[1].1);
    while h.outstanding[&1] > 0 {
        h.take_bytes(1, 16 * 1024);
        assert!(h.outstanding[&1] <= PAGE_BYTES + ONE_MESSAGE);
    }
    let got = h.take(1);
    for room in full.iter().take(32) {
        assert_eq!(ids_of(&got, room), (1..=256).collect::<Vec<_>>(), "{room}");
    }
    assert!(
        ids_of(&got, full[32]).is_empty(),
        "the 33rd room is not joined"
    );
    assert_eq!(h.s.users[&key(1)].rooms.len(), 32);
}

#[test]
fn a_first_join_streams_its_history_then_its_end_then_live_messages_in_order() {
    let config = ServerConfig {
        burst: 1000,
        per_sec: 1000,
        ..ServerConfig::default()
    };
    let mut h = H::with(config, filled(&["#big"], 200, 8 * 1024));
    h.hello(2, key(2), "alice", &["#big"]);
    h.take(2);
    stuck_hello(
        &mut h,
        1,
        key(1),
        vec![JoinReq {
            room: "#big".into(),
            after: None,
            key: None,
        }],
    );
    // Live messages while the history is still streaming wait for their turn.
    for c in 1..=3 {
        h.say(2, c, "#big", &format!("live {c}"));
    }
    h.unstick(1);
    let got = h.take(1);
    let end = got
        .iter()
        .position(|m| matches!(m, ServerMsg::HistoryEnd { count: 50, .. }))
        .expect("history_end");
    let msgs: Vec<(u64, bool)> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some((m.id, m.history)),
            _ => None,
        })
        .collect();
    let want: Vec<(u64, bool)> = (151..=200)
        .map(|i| (i, true))
        .chain((201..=203).map(|i| (i, false)))
        .collect();
    assert_eq!(msgs, want);
    let first_live = got
        .iter()
        .position(|m| matches!(m, ServerMsg::Msg(m) if m.id == 201))
        .expect("live");
    assert!(end < first_live, "history_end before the live messages");
}

#[test]
fn a_slow_reader_gets_live_messages_in_order_once_even_what_left_the_cache() {
    let config = ServerConfig {
        burst: 1000,
        per_sec: 1000,
        replay_cache: 30,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(2, key(2), "alice", &["#r"]);
    stuck_hello(
        &mut h,
        1,
        key(1),
        vec![JoinReq {
            room: "#r".into(),
            after: None,
            key: None,
        }],
    );
    let text = "y".repeat(8 * 1024);
    for c in 1..=60 {
        h.say(2, c, "#r", &text);
    }
    // The reader's queue stopped growing at a page; the rest waits in the cache (and the
    // store).
    assert!(h.outstanding[&1] <= PAGE_BYTES + ONE_MESSAGE);
    assert!(h.closed.is_empty());
    let live = h.take(1);
    let k = ids_of(&live, "#r").len() as u64;
    h.unstick(1);
    let got: Vec<ServerMsg> = live.into_iter().chain(h.take(1)).collect();
    let ids = ids_of(&got, "#r");
    // Ids 1..=k came live; the cache holds the last 30; what fell out between came from the
    // store: every message once, in order, and no error.
    assert!(k >= 7, "a page went out live: {ids:?}");
    assert!(k < 30, "some left the cache before they were sent: {ids:?}");
    let want: Vec<u64> = (1..=60).collect();
    assert_eq!(ids, want);
    assert!(
        !got.iter().any(|m| matches!(m, ServerMsg::Error { .. })),
        "{got:?}"
    );
    assert!(h.after_answered >= 1, "read from the store");
}

#[test]
fn a_reader_whose_queue_passes_the_bound_is_closed_as_too_slow() {
    let config = ServerConfig {
        burst: 1000,
        per_sec: 1000,
        ..ServerConfig::default()
    };
    let mut h = H::with(config, filled(&["#big"], 200, 8 * 1024));
    stuck_hello(
        &mut h,
        1,
        key(1),
        vec![JoinReq {
            room: "#big".into(),
            after: Some(200),
            key: None,
        }],
    );
    // History pages are answers, sent whole (1.7 MB each): the third passes 4 MiB.
    for _ in 0..3 {
        let req = ClientMsg::History {
            id: None,
            room: Some("#big".into()),
            with: None,
            before: None,
            limit: 200,
        };
        h.send(1, req);
    }
    assert_eq!(h.closed, vec![1]);
    assert_eq!(h.s.stats().too_slow, 1);
    assert!(h.outstanding[&1] <= MAX_QUEUED_BYTES);
    assert!(h.outstanding[&1] > MAX_QUEUED_BYTES / 2);
}

#[test]
fn garbage_hellos_and_out_of_state_requests_count_against_flood_control() {
    let mut h = H::new(ServerConfig::default());
    h.connect(1, key(1));
    // 200 garbage requests over one second: at most burst + rate (10 + 5; the session's
    // extra token is its hello's, and garbage can spend it) are answered as such, the rest
    // are refused by flood control.
    for _ in 0..200 {
        h.s.message(h.now, 1, b"\x00garbage");
        h.drain();
        h.now += 5;
    }
    let got = h.errors(1);
    let bad = got.iter().filter(|e| e.1 == code::BAD_REQUEST).count();
    let flood = got.iter().filter(|e| e.1 == code::FLOOD).count();
    assert!((10..=15).contains(&bad), "{bad} garbage requests answered");
    assert_eq!(bad + flood, 200);
    assert_eq!(h.s.stats().malformed, 200);
    // Out of state, before hello: the same bucket.
    h.advance(10_000);
    for c in 1..=12 {
        h.say(1, c, "#r", "before hello");
    }
    let got = h.errors(1);
    assert_eq!(got.iter().filter(|e| e.1 == code::STATE).count(), 10);
    assert_eq!(got.iter().filter(|e| e.1 == code::FLOOD).count(), 2);
    // A hello costs a token too: with none left it is refused, not fatal.
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: "alice".into(),
        client: 1,
        rooms: vec![],
        dms: vec![],
        echo: true,
    };
    h.send(1, hello.clone());
    assert_eq!(h.errors(1)[0].1, code::FLOOD);
    assert!(h.closed.is_empty());
    h.advance(1000);
    h.send(1, hello.clone());
    assert!(matches!(h.take(1)[0], ServerMsg::Welcome { .. }));
    // And a repeated one.
    for _ in 0..20 {
        h.send(1, hello.clone());
    }
    let got = h.errors(1);
    assert!(got.iter().filter(|e| e.1 == code::STATE).count() <= 5);
    assert_eq!(got.len(), 20);
}

#[test]
fn dms_received_while_away_come_from_the_store_a_page_of_conversations_at_a_time() {
    let config = ServerConfig {
        max_sessions_per_ip: 100,
        // 41 new nicks from one address.
        nick_claim_burst: 100,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(100, key(100), "bob", &[]);
    h.s.disconnected(h.now, 100, "left");
    // 40 senders (more than a page of 32 conversations), 2 DMs each.
    for i in 0..40u8 {
        h.hello(u64::from(i), key(i), &format!("s{i}"), &[]);
        h.dm(u64::from(i), 1, "bob", "one");
        h.dm(u64::from(i), 2, "bob", "two");
    }
    h.undelivered_reads = 0;
    h.hello(101, key(100), "bob", &[]);
    assert_eq!(h.undelivered_reads, 2, "two pages of conversations");
    let got = h.take(101);
    for i in 0..40u8 {
        let conv = dm_conv(&key(i), &key(100));
        assert_eq!(ids_of(&got, &conv), vec![1, 2], "from s{i}");
        assert!(h.persisted.contains(&Op::DmCursor {
            key: key(100),
            conv,
            upto: 2
        }));
    }
    // Delivered once.
    h.s.disconnected(h.now, 101, "left");
    h.hello(102, key(100), "bob", &[]);
    assert!(h.msgs(102).is_empty());
}

#[test]
fn a_dm_arriving_while_the_store_is_read_waits_behind_the_older_ones() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.s.disconnected(h.now, 2, "left");
    h.dm(1, 1, "bob", "old");
    // Bob connects; the store's answer is late, and a new DM arrives first.
    h.connect(3, key(2));
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: "bob".into(),
        client: 3,
        rooms: vec![],
        dms: vec![],
        echo: true,
    };
    h.s.message(h.now, 3, &hello.encode());
    let mut read = None;
    while let Some(o) = h.s.poll_output() {
        match o {
            Output::ReadUndelivered { key, after, .. } => read = Some((key, after)),
            // Bob has no read markers.
            Output::ReadMarkers { key, .. } => h.s.markers_loaded(key, Ok(Vec::new())),
            Output::Send { to, data } => {
                h.s.sent(h.now, to, data.len());
                let m = ServerMsg::decode(&data).expect("decodes");
                h.inbox.entry(to).or_default().push(m);
            }
            o => panic!("{o:?}"),
        }
    }
    let (k, after) = read.expect("asked the store");
    h.dm(1, 2, "bob", "new");
    assert!(h.msgs(3).is_empty(), "the new DM waits for the old one");
    let page = h.undelivered(&k, after.as_deref(), UNDELIVERED_PAGE);
    h.s.undelivered_loaded(h.now, 3, Ok(page));
    h.drain();
    assert_eq!(
        texts(&h.msgs(3)),
        vec![("alice", 1, "old", false), ("alice", 2, "new", false)]
    );
}

mod amend;
mod bounds;
mod catch_up;
mod cluster;
mod cost;
mod echo;
mod files;
mod meet;
mod moderation;
mod nicks;
mod reading;
mod reload;
