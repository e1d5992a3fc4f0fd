//! `chirp connect` in line (and JSON) mode: what a typed line asks of the session, and what the
//! line mode keeps from the session's events.
//!
//! - Plain lines go to the **current room**. It changes only when a join succeeds (the
//!   server's `joined` for a room the user asked to join, or switched to with `/join` while
//!   already in it) and when the current room is left: a refused `/join` leaves it as it was.
//! - Room text typed while a join is unanswered (a script piping lines right after
//!   `--join`, or after `/join`) is held, in order, until the join is answered: then it goes to
//!   the room that is current. End of input waits for that too ([`LineClient::finish`]).
//! - `/msg NICK TEXT` sends privately and changes nothing else.
//! - `/query NICK [TEXT]` makes the DM with NICK the **current conversation**: plain lines,
//!   `/me`, `/edit`, `/delete`, `/react`, `/unreact` and `/typing` go to it instead of the
//!   current room, until `/join #room` makes a room current again. Text held for a join
//!   (typed before the `/query`) still goes to the room. `/topic`, `/who`, `/history` and
//!   `/search` keep acting on the current room.
//! - `/history [N]` pages back from the oldest message seen in the current room.
//! - `/search WORDS` searches the server's history of the current room, newest first; the same
//!   `/search` again goes on with older matches while the last answer said there are more.
//! - `/read` marks every conversation shown as read up to its newest message: the user's other
//!   sessions are told, and clear their unread counts.
//!
//! The commands are the one command language's ([`chirp_tui::command`], context
//! [`Context::ChatLine`]); the binary prints what [`LineClient::input`] answers and every
//! session event.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use chirp_chat::client::{Event, Session, Target};
use chirp_chat::names::fold;
use chirp_chat::wire::{ClientMsg, ReactReq, ServerMsg};
use chirp_tui::command::{self, Command, Context, ModCommand, Name};

use crate::ignore::{Change, IgnoreList};

/// How many messages `/history` asks for without a number.
pub const DEFAULT_HISTORY: u32 = 50;
/// How many matches one `/search` asks for.
pub const SEARCH_PAGE: u32 = 20;

/// What a typed line did, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to say (a request went to the session, or the line was blank).
    Nothing,
    /// A status line (`* …`).
    Status(String),
    /// A mistake in the line; nothing was sent.
    Error {
        /// The JSON event's `code` (`usage`, `no_room`).
        code: &'static str,
        /// What to tell the user.
        message: String,
    },
    /// The help text.
    Help(String),
    /// The user leaves (`/quit`): finish the session.
    Leave,
}

impl Reply {
    fn usage(message: impl Into<String>) -> Reply {
        Reply::Error {
            code: "usage",
            message: message.into(),
        }
    }
}

/// The line-mode client: the session and what typed lines need to know.
#[derive(Debug)]
pub struct LineClient {
    session: Session,
    /// Where plain lines go: a room we are in.
    current: Option<String>,
    /// The room that becomes current once joined (the last `--join`, or a `/join`).
    joining: Option<String>,
    /// The DM made current by `/query` (a nick): where plain lines and the message commands
    /// go while it is set, before the current room.
    query: Option<String>,
    rooms: BTreeSet<String>,
    topics: HashMap<String, String>,
    /// The oldest message id seen per conversation, where `/history` continues.
    oldest: HashMap<String, u64>,
    /// The newest message id shown per conversation, where `/read` marks.
    newest: HashMap<String, u64>,
    /// The last `/search`: (room, words, the id below which the next page starts if the last
    /// answer said there were more).
    search: Option<(String, String, Option<u64>)>,
    /// Room text (`text`, `action`) typed while `joining`, in order.
    held: VecDeque<(String, bool)>,
    /// End of input came while text was held: finish once it has gone.
    finish_when_sent: bool,
    /// Our nick as the server spells it (asked for, until welcomed).
    me: String,
    /// Nicks whose messages are not shown (`/ignore`).
    ignores: IgnoreList,
}

impl LineClient {
    /// Wraps `session`; `first_rooms` are the rooms it joins at start (the last becomes
    /// current once joined).
    pub fn new(session: Session, first_rooms: &[String]) -> LineClient {
        let me = session.config().nick.clone();
        LineClient {
            me,
            ignores: IgnoreList::default(),
            session,
            current: None,
            joining: first_rooms.last().map(|r| fold(r)),
            query: None,
            rooms: BTreeSet::new(),
            topics: HashMap::new(),
            oldest: HashMap::new(),
            newest: HashMap::new(),
            search: None,
            held: VecDeque::new(),
            finish_when_sent: false,
        }
    }

    /// Hides the messages of the nicks in `ignores` (the list loaded at start).
    pub fn with_ignores(mut self, ignores: IgnoreList) -> LineClient {
        self.ignores = ignores;
        self
    }

    /// The ignore list, to save when it changed ([`IgnoreList::take_dirty`]).
    pub fn ignores_mut(&mut self) -> &mut IgnoreList {
        &mut self.ignores
    }

    /// Whether `ev` is not to be shown (nor logged): a message from an ignored nick, live or
    /// from history. Our own messages are never hidden.
    pub fn hides(&self, ev: &Event) -> bool {
        match ev {
            Event::Message(m) => {
                fold(&m.from) != fold(&self.me) && self.ignores.is_ignored(&m.from)
            }
            _ => false,
        }
    }

    /// Our nick, as the server last said it.
    pub fn nick(&self) -> &str {
        &self.me
    }

    /// `/ignore [NICK]`, `/unignore NICK`.
    fn ignore(&mut self, nick: Option<String>, add: bool) -> Reply {
        let Some(n) = nick else {
            return Reply::Status(self.ignores.describe());
        };
        if add && fold(&n) == fold(&self.me) {
            return Reply::usage("you cannot ignore yourself");
        }
        let change = if add {
            self.ignores.add(&n)
        } else {
            self.ignores.remove(&n)
        };
        Reply::Status(match (change, add) {
            (Change::Done, true) => format!("ignoring {n}: their messages are not shown"),
            (Change::Done, false) => format!("no longer ignoring {n}"),
            (Change::Unchanged, true) => format!("{n} is already ignored"),
            (Change::Unchanged, false) => format!("{n} is not ignored"),
            (Change::Full, _) => {
                return Reply::usage("the ignore list is full: /unignore someone first");
            }
        })
    }

    /// Lines held for a join not yet answered (a driver counts them with the session's
    /// backlog, to stop reading input while many wait).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// End of input (or `/quit`): finishes the session once held text has gone.
    pub fn finish(&mut self, now: Instant) {
        if self.held.is_empty() {
            self.session.finish(now);
        } else {
            self.finish_when_sent = true;
        }
    }

    /// Room text: to the current room, or held while a join is unanswered.
    fn room_text(&mut self, now: Instant, text: String, action: bool) -> Reply {
        if self.joining.is_some() {
            self.held.push_back((text, action));
            return Reply::Nothing;
        }
        match &self.current {
            Some(room) => {
                self.session
                    .say(now, Target::Room(room.clone()), text, action);
                Reply::Nothing
            }
            None => Reply::Error {
                code: "no_room",
                message: "not sent: you are in no room: /join #room first (or /msg NICK TEXT)"
                    .into(),
            },
        }
    }

    /// The join being waited for is answered (joined, refused, or lost with the
    /// connection): held text goes where text goes now. Returns what to tell the user.
    fn join_answered(&mut self, now: Instant) -> Vec<Reply> {
        self.joining = None;
        let mut out = Vec::new();
        while let Some((text, action)) = self.held.pop_front() {
            match self.room_text(now, text, action) {
                Reply::Nothing => {}
                other => out.push(other),
            }
        }
        if std::mem::take(&mut self.finish_when_sent) {
            self.session.finish(now);
        }
        out
    }

    /// The session, for the driver.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The current room.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// The DM that is the current conversation (`/query NICK`), if any: it comes before the
    /// current room.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Text typed as a plain line or `/me`: to the DM of `/query`, or to the current room.
    fn text(&mut self, now: Instant, text: String, action: bool) -> Reply {
        match &self.query {
            Some(nick) => {
                self.session
                    .say(now, Target::Nick(nick.clone()), text, action);
                Reply::Nothing
            }
            None => self.room_text(now, text, action),
        }
    }

    /// Carries out one typed line (without its line end).
    pub fn input(&mut self, now: Instant, line: &str) -> Reply {
        if line.trim().is_empty() {
            return Reply::Nothing;
        }
        let cmd = match command::parse(line, Context::ChatLine) {
            Ok(c) => c,
            Err(e) => {
                return Reply::Error {
                    code: e.code(),
                    message: e.to_string(),
                };
            }
        };
        let s = &mut self.session;
        match cmd {
            Command::Text(text) => return self.text(now, text, false),
            Command::Me { text } => return self.text(now, text, true),
            Command::Msg { to, text } => {
                s.say(now, Target::Nick(to), text, false);
            }
            Command::Query { nick, text } => {
                if nick.starts_with('#') {
                    return Reply::usage(format!(
                        "/query takes a nick; /join {nick} makes a room current"
                    ));
                }
                self.query = Some(nick.clone());
                if let Some(text) = text {
                    s.say(now, Target::Nick(nick.clone()), text, false);
                }
                return Reply::Status(format!(
                    "current conversation is now a DM with {nick} (/join #room to go back to a room)"
                ));
            }
            Command::Join { room, key } => {
                self.query = None;
                let room = fold(&room);
                if self.rooms.contains(&room) {
                    self.current = Some(room.clone());
                    // Text held for an unanswered join goes here now, as typed after it.
                    let refused = self.join_answered(now);
                    debug_assert!(refused.is_empty(), "there is a current room");
                    return Reply::Status(format!("current room is now {room}"));
                }
                // It becomes current when the server says we joined it, not before: a refused
                // join leaves the current room as it was.
                self.joining = Some(room.clone());
                s.join_with_key(room, key);
            }
            Command::Mod(m) => match self.moderation(m) {
                Ok(req) => self.session.moderate(req),
                Err(reply) => return reply,
            },
            Command::Part { room, .. } => match room.map(|r| fold(&r)).or(self.current.clone()) {
                Some(room) => s.part(room),
                None => return Reply::usage("usage: /part [#room] (you are in no room)"),
            },
            Command::Nick { nick } => s.nick(nick),
            Command::Topic { text } => {
                let Some(room) = self.current.clone() else {
                    return Reply::Error {
                        code: "no_room",
                        message: "/topic works in a room: /join #room first".into(),
                    };
                };
                match text {
                    Some(t) => s.topic(room, t),
                    None => {
                        return Reply::Status(match self.topics.get(&room) {
                            Some(t) if !t.is_empty() => format!("topic of {room}: {t}"),
                            _ => format!("{room} has no topic"),
                        });
                    }
                }
            }
            Command::List => s.list(),
            Command::Who { room } => match room.map(|r| fold(&r)).or(self.current.clone()) {
                Some(room) => s.who(room),
                None => return Reply::usage("usage: /who [#room] (you are in no room)"),
            },
            Command::History { count } => {
                let Some(room) = self.current.clone() else {
                    return Reply::Error {
                        code: "no_room",
                        message: "/history works in a room: /join #room first".into(),
                    };
                };
                let before = self.oldest.get(&room).copied();
                s.history(Target::Room(room), before, count.unwrap_or(DEFAULT_HISTORY));
            }
            Command::Search { text } => {
                let Some(room) = self.current.clone() else {
                    return Reply::Error {
                        code: "no_room",
                        message: "you are in no room: /join #ROOM first".into(),
                    };
                };
                let words = text.trim().to_owned();
                if words.is_empty() {
                    return Reply::usage(format!(
                        "usage: {}",
                        command::spec(Name::Search).synopsis()
                    ));
                }
                // The same search again goes on below the last page.
                let before = match &self.search {
                    Some((r, q, before)) if *r == room && *q == words => *before,
                    _ => None,
                };
                self.search = Some((room.clone(), words.clone(), None));
                s.search(Target::Room(room), words, before, SEARCH_PAGE);
            }
            Command::Read => {
                for (conv, &id) in &self.newest {
                    s.read(conv.clone(), id);
                }
            }
            Command::Edit { .. }
            | Command::Delete { .. }
            | Command::React { .. }
            | Command::Typing => {
                // The current conversation: the DM of `/query`, or the current room.
                let (room, with) = match (&self.query, &self.current) {
                    (Some(nick), _) => (None, Some(nick.clone())),
                    (None, Some(room)) => (Some(room.clone()), None),
                    (None, None) => {
                        return Reply::Error {
                            code: "no_room",
                            message: "edits, deletions, reactions and typing work in a room or a DM: /join #room or /query NICK first".into(),
                        };
                    }
                };
                match cmd {
                    Command::Edit { id, text } => s.amend(ClientMsg::Edit {
                        room,
                        with,
                        id,
                        text,
                    }),
                    Command::Delete { id } => s.amend(ClientMsg::Delete { room, with, id }),
                    Command::React { id, emoji, remove } => {
                        let r = ReactReq {
                            room,
                            with,
                            id,
                            emoji,
                        };
                        s.amend(if remove {
                            ClientMsg::Unreact(r)
                        } else {
                            ClientMsg::React(r)
                        })
                    }
                    _ => s.typing(now, room, with),
                }
            }
            Command::Stats => s.stats(),
            Command::Ignore { nick } => return self.ignore(nick, true),
            Command::Unignore { nick } => return self.ignore(Some(nick), false),
            Command::Help => return Reply::Help(command::help(Context::ChatLine)),
            Command::Quit { .. } => return Reply::Leave,
            // Not in this context: the parser refuses them.
            other => {
                return Reply::usage(format!("{other:?} is not available in line mode"));
            }
        }
        Reply::Nothing
    }

    /// The request a moderation command makes: in the room it names, or the current one.
    fn moderation(&self, m: ModCommand) -> Result<ClientMsg, Reply> {
        crate::moderation::request(m, self.current.as_deref()).map_err(|e| Reply::Error {
            code: e.code,
            message: e.message,
        })
    }

    /// Takes note of a session event (before it is printed). Returns what to tell the user
    /// about text that was held for a join and could not go.
    pub fn on_event(&mut self, now: Instant, ev: &Event) -> Vec<Reply> {
        let answered = match ev {
            Event::Server(ServerMsg::Joined { room, .. }) => {
                self.joining.as_deref() == Some(fold(room).as_str())
            }
            // A refusal not tied to a message while a join waits: the join's (the server
            // answers a session's requests in order, and held text sent nothing meanwhile).
            Event::Error { .. } | Event::Disconnected { .. } | Event::Fatal(_) => {
                self.joining.is_some()
            }
            _ => false,
        };
        self.note(ev);
        if answered {
            self.join_answered(now)
        } else {
            Vec::new()
        }
    }

    fn note(&mut self, ev: &Event) {
        match ev {
            Event::Message(m) => {
                let e = self.oldest.entry(m.conv.clone()).or_insert(m.id);
                *e = (*e).min(m.id);
                let e = self.newest.entry(m.conv.clone()).or_insert(m.id);
                *e = (*e).max(m.id);
            }
            Event::Server(ServerMsg::SearchResults {
                conv, hits, more, ..
            }) => {
                if let Some((room, _, before)) = &mut self.search {
                    if room == conv {
                        *before = if *more {
                            hits.last().map(|m| m.id)
                        } else {
                            None
                        };
                    }
                }
            }
            Event::Server(ServerMsg::Joined { room, topic, .. }) => {
                let room = fold(room);
                self.rooms.insert(room.clone());
                self.topics.insert(room.clone(), topic.clone());
                if self.joining.as_ref() == Some(&room) {
                    self.current = Some(room);
                }
            }
            Event::Server(ServerMsg::Topic { room, topic, .. }) => {
                self.topics.insert(fold(room), topic.clone());
            }
            Event::Welcome { nick, .. } => self.me = nick.clone(),
            Event::Server(ServerMsg::Nick { old, new }) => {
                if fold(old) == fold(&self.me) {
                    self.me = new.clone();
                }
                if self.query.as_deref().is_some_and(|q| fold(q) == fold(old)) {
                    self.query = Some(new.clone());
                }
                self.ignores.renamed(old, new);
            }
            Event::Server(ServerMsg::Parted { room }) => {
                let room = fold(room);
                self.rooms.remove(&room);
                if self.current.as_ref() == Some(&room) {
                    self.current = self.rooms.iter().next_back().cloned();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chirp_chat::client::{ClientConfig, Io};
    use chirp_chat::wire::{BanReq, Msg, RoomNick};

    fn client(rooms: &[&str]) -> (LineClient, Instant) {
        let now = Instant::now();
        let mut config = ClientConfig::new(([127, 0, 0, 1], 1).into(), "me");
        config.rooms = rooms.iter().map(|r| (*r).to_owned()).collect();
        config.pace = false;
        let rooms: Vec<String> = config.rooms.clone();
        (LineClient::new(Session::new(config, now, 7), &rooms), now)
    }

    fn joined(room: &str) -> Event {
        Event::Server(ServerMsg::Joined {
            room: room.into(),
            topic: String::new(),
            members: vec!["me".into()],
            more: 0,
        })
    }

    #[test]
    fn a_refused_join_does_not_change_where_text_goes() {
        let (mut lc, now) = client(&["#ok"]);
        lc.on_event(now, &joined("#ok"));
        assert_eq!(lc.current(), Some("#ok"));
        assert_eq!(lc.input(now, "/join nohash"), Reply::Nothing);
        // The server refuses it (an error, no `joined`): text still goes to #ok.
        lc.on_event(
            now,
            &Event::Error {
                code: "bad_name".into(),
                message: "room names start with #".into(),
            },
        );
        assert_eq!(lc.current(), Some("#ok"));
        assert_eq!(lc.input(now, "hello"), Reply::Nothing);
        // A successful join does switch.
        assert_eq!(lc.input(now, "/join #next"), Reply::Nothing);
        lc.on_event(now, &joined("#next"));
        assert_eq!(lc.current(), Some("#next"));
        // Switching back to a room we are in is immediate.
        assert_eq!(
            lc.input(now, "/join #OK"),
            Reply::Status("current room is now #ok".into())
        );
    }

    #[test]
    fn text_typed_before_a_join_is_answered_waits_for_the_answer() {
        // A script piping lines right after `--join #r`: they wait for the join, in order.
        let (mut lc, now) = client(&["#r"]);
        assert_eq!(lc.input(now, "one"), Reply::Nothing);
        assert_eq!(lc.input(now, "/me two"), Reply::Nothing);
        assert_eq!((lc.held(), lc.session().pending()), (2, 0));
        // End of input meanwhile: the session does not finish before they have gone.
        lc.finish(now);
        assert!(!lc.session().is_ended());
        assert!(lc.on_event(now, &joined("#r")).is_empty());
        assert_eq!((lc.held(), lc.session().pending()), (0, 2));
        assert_eq!(lc.current(), Some("#r"));
        // Without a room at all, held text is refused when the join is.
        let (mut lc, now) = client(&["#bad"]);
        lc.input(now, "lost");
        let refused = lc.on_event(
            now,
            &Event::Error {
                code: "bad_name".into(),
                message: "no".into(),
            },
        );
        assert!(
            matches!(
                &refused[..],
                [Reply::Error {
                    code: "no_room",
                    ..
                }]
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn text_held_for_a_refused_join_goes_to_the_current_room() {
        let (mut lc, now) = client(&["#ok"]);
        lc.on_event(now, &joined("#ok"));
        lc.input(now, "/join nohash");
        assert_eq!(lc.input(now, "hello"), Reply::Nothing);
        assert_eq!(lc.held(), 1);
        let out = lc.on_event(
            now,
            &Event::Error {
                code: "bad_name".into(),
                message: "room names start with #".into(),
            },
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((lc.held(), lc.session().pending()), (0, 1));
        assert_eq!(lc.current(), Some("#ok"));
    }

    #[test]
    fn history_needs_a_positive_count_and_pages_from_the_oldest_seen() {
        let (mut lc, now) = client(&["#r"]);
        lc.on_event(now, &joined("#r"));
        let Reply::Error { code, message } = lc.input(now, "/history -5") else {
            panic!("refused");
        };
        assert_eq!(code, "usage");
        assert!(message.contains("positive number"), "{message}");
        assert!(!message.contains("join"), "not about joining: {message}");
        assert_eq!(lc.input(now, "/history 5"), Reply::Nothing);
    }

    /// `/query NICK` makes a DM the current conversation until `/join` picks a room again; it
    /// follows the nick's renames, and takes no room.
    #[test]
    fn a_query_makes_a_dm_current_until_a_join() {
        let (mut lc, now) = client(&["#r"]);
        lc.on_event(now, &joined("#r"));
        assert!(matches!(
            lc.input(now, "/query #r"),
            Reply::Error { code: "usage", .. }
        ));
        assert_eq!(lc.query(), None);
        let Reply::Status(s) = lc.input(now, "/query bob") else {
            panic!("a status");
        };
        assert!(s.contains("DM with bob"), "{s}");
        assert_eq!((lc.query(), lc.current()), (Some("bob"), Some("#r")));
        let before = lc.session().backlog();
        assert_eq!(lc.input(now, "psst"), Reply::Nothing);
        assert_eq!(lc.input(now, "/edit 4 psst!"), Reply::Nothing);
        assert_eq!(lc.session().backlog(), before + 2);
        lc.on_event(
            now,
            &Event::Server(ServerMsg::Nick {
                old: "Bob".into(),
                new: "robert".into(),
            }),
        );
        assert_eq!(lc.query(), Some("robert"));
        assert_eq!(
            lc.input(now, "/join #r"),
            Reply::Status("current room is now #r".into())
        );
        assert_eq!((lc.query(), lc.current()), (None, Some("#r")));
    }

    #[test]
    fn msg_sends_privately_and_keeps_the_current_room() {
        let (mut lc, now) = client(&["#r"]);
        lc.on_event(now, &joined("#r"));
        assert_eq!(lc.input(now, "/msg bob psst"), Reply::Nothing);
        assert_eq!(lc.current(), Some("#r"));
        assert_eq!(
            lc.input(now, "/help"),
            Reply::Help(command::help(Context::ChatLine))
        );
        assert_eq!(lc.input(now, "/quit"), Reply::Leave);
    }

    /// Typed requests wait in the session until it is connected and welcomed.
    #[test]
    fn requests_are_queued_in_the_session() {
        let (mut lc, now) = client(&["#r"]);
        lc.on_event(now, &joined("#r"));
        lc.input(now, "one");
        lc.input(now, "/msg bob two");
        lc.input(now, "/join #x");
        assert_eq!(lc.session().backlog(), 3);
        assert_eq!(lc.session().pending(), 2, "two messages await their ack");
        // Nothing goes out before a connection exists.
        let io: Vec<Io> = std::iter::from_fn(|| lc.session().poll_io(now)).collect();
        assert!(io.iter().all(|i| !matches!(i, Io::Send { .. })));
    }

    /// Issue 19: moderation commands become requests, in the current room or the one named;
    /// `*` bans from the server; a lone address range is a range ban.
    #[test]
    fn moderation_commands_become_requests() {
        let (mut lc, now) = client(&["#r"]);
        assert!(matches!(
            lc.input(now, "/kick bob"),
            Reply::Error {
                code: "no_room",
                ..
            }
        ));
        lc.on_event(now, &joined("#r"));
        let req = |lc: &LineClient, line: &str| match command::parse(line, Context::ChatLine) {
            Ok(Command::Mod(m)) => lc.moderation(m),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(
            req(&lc, "/kick bob spam"),
            Ok(ClientMsg::Kick {
                room: "#r".into(),
                nick: "bob".into(),
                reason: Some("spam".into()),
            })
        );
        assert_eq!(
            req(&lc, "/op #Other bob"),
            Ok(ClientMsg::Op(RoomNick {
                room: "#other".into(),
                nick: "bob".into(),
            }))
        );
        assert_eq!(
            req(&lc, "/ban * bob abuse"),
            Ok(ClientMsg::Ban(BanReq {
                room: None,
                target: Some("bob".into()),
                net: None,
                reason: Some("abuse".into()),
            }))
        );
        assert_eq!(
            req(&lc, "/unban 203.0.113.0/24"),
            Ok(ClientMsg::Unban(BanReq {
                room: Some("#r".into()),
                target: None,
                net: Some("203.0.113.0/24".into()),
                reason: None,
            }))
        );
        assert_eq!(
            req(&lc, "/mode +k pw"),
            Ok(ClientMsg::Mode {
                room: "#r".into(),
                change: "+k".into(),
                key: Some("pw".into()),
            })
        );
        assert_eq!(
            req(&lc, "/kill 7"),
            Ok(ClientMsg::Kill {
                session: 7,
                reason: None,
                node: None,
            })
        );
        assert_eq!(
            req(&lc, "/kill 7@node-b spam"),
            Ok(ClientMsg::Kill {
                session: 7,
                reason: Some("spam".into()),
                node: Some("node-b".into()),
            })
        );
        assert_eq!(req(&lc, "/sessions"), Ok(ClientMsg::Sessions));
        let before = lc.session().backlog();
        assert_eq!(lc.input(now, "/mute bob"), Reply::Nothing);
        assert_eq!(lc.session().backlog(), before + 1);
    }

    fn said(from: &str, history: bool) -> Event {
        Event::Message(Msg {
            conv: "#r".into(),
            room: Some("#r".into()),
            id: 1,
            ts: 0,
            from: from.into(),
            to: None,
            text: "hi".into(),
            action: false,
            history,
            c: None,
            ..Msg::default()
        })
    }

    /// Issue 19: `/ignore` hides a nick's messages (live and history), follows its renames,
    /// never hides our own, and marks the list for saving.
    #[test]
    fn ignored_nicks_are_hidden() {
        let (mut lc, now) = client(&["#r"]);
        lc.on_event(now, &joined("#r"));
        assert!(!lc.hides(&said("bob", false)));
        assert_eq!(
            lc.input(now, "/ignore Bob"),
            Reply::Status("ignoring Bob: their messages are not shown".into())
        );
        assert!(lc.ignores_mut().take_dirty());
        assert!(lc.hides(&said("bob", false)) && lc.hides(&said("BOB", true)));
        assert!(!lc.hides(&said("carol", false)));
        assert_eq!(
            lc.input(now, "/ignore"),
            Reply::Status("ignored: bob".into())
        );
        // A rename seen is followed.
        lc.on_event(
            now,
            &Event::Server(ServerMsg::Nick {
                old: "bob".into(),
                new: "bobby".into(),
            }),
        );
        assert!(lc.hides(&said("bobby", false)));
        assert!(matches!(
            lc.input(now, "/ignore me"),
            Reply::Error { code: "usage", .. }
        ));
        assert_eq!(
            lc.input(now, "/unignore bob"),
            Reply::Status("no longer ignoring bob".into())
        );
        assert_eq!(
            lc.input(now, "/unignore bob"),
            Reply::Status("bob is not ignored".into())
        );
        assert!(!lc.hides(&said("bob", false)));
        // A list loaded at start applies at once.
        let (lc, _) = client(&["#r"]);
        let lc = lc.with_ignores(IgnoreList::parse("carol\n"));
        assert!(lc.hides(&said("Carol", false)));
        assert!(!lc.hides(&said("me", false)));
    }
}
