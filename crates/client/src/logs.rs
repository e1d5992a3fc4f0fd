//! `--log-dir DIR`: a local plain-text log of every conversation, one file per room or DM,
//! appended as messages arrive.
//!
//! - **File names.** A room's file is its name as the server folds it (`#rust.log`); a DM's is
//!   the other party's nick (`bob.log`; rooms start with `#`, nicks cannot, so they never
//!   share a file). Names come from the network, so [`file_name`] keeps only letters, digits,
//!   `#`, `-` and `_` as they are and writes every other byte as `%XX` (`/`, `.`, `\`, NUL,
//!   controls, spaces): the result has no path separator, never starts with `.`, and is at
//!   most [`MAX_NAME`] bytes (a longer name is cut and tagged with a hash of the whole, so
//!   two long names stay apart). A hostile room or nick cannot reach outside the directory.
//! - **Lines.** `2026-12-07 13:45:01 #17 <alice> hello` (local time; `#17` the message's id
//!   in its conversation), `… #18 * alice waves` for an action. Edits and deletions are lines
//!   of their own, so that the log keeps what was said and what it became:
//!   `… #19 * alice edited #17: hello all` and `… #20 * message #17 deleted by alice`. A
//!   message replayed after it was changed says so (`(edited)`, `(message deleted)`).
//!   Nicks go through [`chirp_tui::safe::line`], text through [`chirp_tui::safe::text`] (the
//!   sanitising of everything chirp prints), and the lines of a multi-line text after the
//!   first are indented, so the log holds no control character and no message can pass off
//!   a line as another message.
//! - **What is logged, once each, in order.** Messages, edits and deletions, ours included,
//!   and not those of ignored nicks: live, caught up after a reconnect, and replayed from
//!   history (a join's replay after the client was not running, a `/history` page of a
//!   conversation not logged yet). Ids grow within a conversation, so the log remembers the
//!   last id it wrote for each ([`STATE_FILE`] in the directory, written by
//!   [`ChatLog::flush`]) and writes nothing at or below it: the same history replayed at the
//!   next start, or an older `/history` page, is not logged again. A join replays the last 50
//!   messages (the server's `history_on_join`): of a longer absence, only those reach the log.
//!
//! Files are created with mode 0600 in a directory of mode 0700 (they hold private
//! conversations), opened, appended to and closed per line.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chirp_chat::names::fold;
use chirp_chat::wire::{Msg, ServerMsg};
use chirp_tui::safe;
use serde::{Deserialize, Serialize};

/// The longest file name made, in bytes, before `.log`.
pub const MAX_NAME: usize = 120;

/// The file in the log directory that remembers the last id logged per conversation (JSON).
/// Its name starts with `.`, which no conversation's file name does.
pub const STATE_FILE: &str = ".last-logged.json";

/// Most conversations whose last logged id is remembered: past it, a new conversation is
/// logged without it (a hostile server cannot make the state file grow without bound).
pub const MAX_CONVERSATIONS: usize = 10_000;

/// The file name, without `.log`, for a conversation named `name` (a `#room` or a nick).
pub fn file_name(name: &str) -> String {
    let folded = fold(name);
    let mut out = String::with_capacity(folded.len());
    for c in folded.chars() {
        if c.is_alphanumeric() || matches!(c, '#' | '-' | '_') {
            out.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    if out.len() > MAX_NAME {
        let mut cut = MAX_NAME - 17;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}~{:016x}", &out[..cut], fnv1a(folded.as_bytes()));
    }
    out
}

/// FNV-1a, 64 bits: stable across runs and builds, which is all a file name tag needs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The conversation a message belongs to, as named in the log directory: the room, or the
/// other party of a DM (`me`: our nick).
pub fn conversation<'m>(m: &'m Msg, me: &str) -> &'m str {
    if let Some(room) = &m.room {
        return room;
    }
    if fold(&m.from) == fold(me) {
        m.to.as_deref().unwrap_or(&m.from)
    } else {
        &m.from
    }
}

/// `head` followed by `text` (made harmless), its lines after the first indented; with the
/// line end.
fn with_text(head: &str, text: &str, tail: &str) -> String {
    let text = safe::text(text);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut out = format!("{head}{first}{tail}\n");
    for more in lines {
        out.push_str("    ");
        out.push_str(more);
        out.push('\n');
    }
    out
}

/// One log entry (with its line end) for `m`, stamped `when` (already formatted).
pub fn line(m: &Msg, when: &str) -> String {
    let (id, from) = (m.id, safe::line(&m.from));
    if m.deleted {
        return format!("{when} #{id} <{from}> (message deleted)\n");
    }
    let edited = if m.edited { " (edited)" } else { "" };
    if m.action {
        with_text(&format!("{when} #{id} * {from} "), &m.text, edited)
    } else {
        with_text(&format!("{when} #{id} <{from}> "), &m.text, edited)
    }
}

/// An edit or a deletion, as the log keeps it: its conversation, id, server time and
/// entry (without the time stamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    /// The conversation.
    pub conv: &'a str,
    /// The room, for a room's.
    pub room: Option<&'a str>,
    /// Who made it.
    pub by: &'a str,
    /// The event's own id in the conversation.
    pub id: u64,
    /// Server time.
    pub ts: i64,
    /// `edited #17: TEXT` or `deleted`: the entry after the time stamp.
    what: ChangeKind<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChangeKind<'a> {
    Edited { target: u64, text: &'a str },
    Deleted { target: u64 },
}

impl<'a> Change<'a> {
    /// The edit or deletion `m` is, if it is one.
    pub fn of(m: &'a ServerMsg) -> Option<Change<'a>> {
        match m {
            ServerMsg::Edited {
                conv,
                room,
                id,
                ts,
                by,
                target,
                text,
                ..
            } => Some(Change {
                conv,
                room: room.as_deref(),
                by,
                id: *id,
                ts: *ts,
                what: ChangeKind::Edited {
                    target: *target,
                    text,
                },
            }),
            ServerMsg::Deleted {
                conv,
                room,
                id,
                ts,
                by,
                target,
                ..
            } => Some(Change {
                conv,
                room: room.as_deref(),
                by,
                id: *id,
                ts: *ts,
                what: ChangeKind::Deleted { target: *target },
            }),
            _ => None,
        }
    }

    /// Its log entry (with its line end), stamped `when`.
    pub fn line(&self, when: &str) -> String {
        let (id, by) = (self.id, safe::line(self.by));
        match self.what {
            ChangeKind::Edited { target, text } => {
                with_text(&format!("{when} #{id} * {by} edited #{target}: "), text, "")
            }
            ChangeKind::Deleted { target } => {
                format!("{when} #{id} * message #{target} deleted by {by}\n")
            }
        }
    }
}

/// What the log remembers of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Logged {
    /// The last id written.
    id: u64,
    /// The name its file is named after (a room, or a DM's other party).
    name: String,
}

fn stamp(ts: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The log directory, and the last id logged per conversation.
#[derive(Debug)]
pub struct ChatLog {
    dir: PathBuf,
    last: BTreeMap<String, Logged>,
    /// `last` changed since [`ChatLog::flush`].
    dirty: bool,
}

impl ChatLog {
    /// Logs into `dir` (created, mode 0700, if missing), going on after the ids its
    /// [`STATE_FILE`] remembers. A state file that does not parse is an error: logging
    /// without it would write again what is logged already.
    pub fn open(dir: &Path) -> std::io::Result<ChatLog> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
        let state = dir.join(STATE_FILE);
        let last = match std::fs::read(&state) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a log state file ({e}); move it away to start afresh",
                        state.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(ChatLog {
            dir: dir.to_path_buf(),
            last,
            dirty: false,
        })
    }

    /// Whether `id` of `conv` is new to the log; if so it is remembered as the last,
    /// filed under `name`.
    fn take(&mut self, conv: &str, id: u64, name: &str) -> bool {
        match self.last.get_mut(conv) {
            Some(l) if id <= l.id => false,
            Some(l) => {
                l.id = id;
                l.name = name.to_owned();
                self.dirty = true;
                true
            }
            None => {
                if self.last.len() < MAX_CONVERSATIONS {
                    let name = name.to_owned();
                    self.last.insert(conv.to_owned(), Logged { id, name });
                    self.dirty = true;
                }
                true
            }
        }
    }

    /// Appends `line` to the file of conversation `name`.
    fn write(&self, name: &str, line: &str) -> std::io::Result<()> {
        let mut o = OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(self.path_of(name))?;
        f.write_all(line.as_bytes())
    }

    /// Writes the last ids logged to [`STATE_FILE`] if they changed (a new file renamed over
    /// the old, so that a crash leaves one or the other). Call after a batch of events.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let data = serde_json::to_vec(&self.last).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.new"));
        let mut o = OpenOptions::new();
        o.create(true).write(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        self.dirty = false;
        Ok(())
    }

    /// The file of conversation `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.log", file_name(name)))
    }

    /// Appends `m` (live, caught up or from history) to its conversation's file, stamped
    /// with its server time in local time, unless its id is at or below the last logged
    /// there. `me`: our nick. Returns whether it was written.
    pub fn append(&mut self, m: &Msg, me: &str) -> std::io::Result<bool> {
        let name = conversation(m, me);
        if !self.take(&m.conv, m.id, name) {
            return Ok(false);
        }
        self.write(name, &line(m, &stamp(m.ts)))?;
        Ok(true)
    }

    /// Appends an edit or a deletion to its conversation's file, as [`ChatLog::append`]. A
    /// DM's file is the one its messages went to; a change in a DM conversation the log has
    /// no message of goes to the file of whoever made it, unless that is us (`me`): then it
    /// has no file to go to, and is not logged.
    pub fn append_change(&mut self, c: &Change<'_>, me: &str) -> std::io::Result<bool> {
        let name = match (c.room, self.last.get(c.conv)) {
            (Some(room), _) => room.to_owned(),
            (None, Some(l)) => l.name.clone(),
            (None, None) if fold(c.by) != fold(me) => c.by.to_owned(),
            (None, None) => return Ok(false),
        };
        if !self.take(c.conv, c.id, &name) {
            return Ok(false);
        }
        self.write(&name, &c.line(&stamp(c.ts)))?;
        Ok(true)
    }
}

impl Drop for ChatLog {
    /// The last ids logged are saved on the way out too (best effort: an error here only
    /// means that the next start may log the last batch again).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: Option<&str>, from: &str, to: Option<&str>, text: &str) -> Msg {
        Msg {
            conv: room.map_or_else(|| "@a,b".to_owned(), str::to_owned),
            room: room.map(str::to_owned),
            id: 1,
            ts: 1_765_000_000_000,
            from: from.into(),
            to: to.map(str::to_owned),
            text: text.into(),
            action: false,
            history: false,
            c: None,
            ..Msg::default()
        }
    }

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        let hostile = [
            "../../etc/passwd",
            "..",
            ".",
            "/abs",
            "a/b",
            "a\\b",
            "nul\0byte",
            "\x1b[2Jclear",
            ".hidden",
            "",
            "a b",
            "#room/../x",
            "\u{202e}bidi",
        ];
        let dir = Path::new("/logs");
        let log = ChatLog {
            dir: dir.to_path_buf(),
            last: BTreeMap::new(),
            dirty: false,
        };
        let mut seen = std::collections::HashSet::new();
        for name in hostile {
            let f = file_name(name);
            assert!(!f.is_empty() && !f.starts_with('.'), "{name:?} -> {f:?}");
            assert!(
                f.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '#' | '-' | '_' | '%' | '~')),
                "{name:?} -> {f:?}"
            );
            let p = log.path_of(name);
            assert_eq!(p.parent(), Some(dir), "{name:?} -> {p:?}");
            assert!(seen.insert(f), "{name:?} shares a file with another name");
        }
        assert_eq!(file_name("#Rust"), "#rust");
        assert_eq!(file_name("bob"), "bob");
        assert_eq!(file_name("a/b"), "a%2Fb");
        assert_eq!(file_name("日本"), "日本");
        // Long names are cut, and two that share the cut part stay apart.
        let long_a = format!("#{}", "x".repeat(300));
        let long_b = format!("#{}y", "x".repeat(299));
        let (a, b) = (file_name(&long_a), file_name(&long_b));
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{a} {b}");
        assert_ne!(a, b);
        let wide = "日".repeat(100);
        assert!(file_name(&wide).len() <= MAX_NAME);
    }

    #[test]
    fn lines_hold_no_control_characters_and_cannot_forge_a_message() {
        let m = msg(
            Some("#r"),
            "ev\x1bil",
            None,
            "hi \x1b]0;title\x07\nx 2026-01-01 00:00:00 <bob> forged\r\n\u{202e}end",
        );
        let l = line(&m, "T");
        let rows: Vec<&str> = l.lines().collect();
        assert_eq!(rows.len(), 3, "{l:?}");
        assert_eq!(rows[0], "T #1 <ev^[il> hi ^[]0;title^G");
        assert_eq!(rows[1], "    x 2026-01-01 00:00:00 <bob> forged");
        assert!(rows[2].starts_with("    <U+202E>end"), "{l:?}");
        assert!(!l.chars().any(|c| c != '\n' && safe::is_unsafe(c)), "{l:?}");
        let mut me = msg(None, "me", Some("bob"), "waves");
        me.action = true;
        assert_eq!(line(&me, "T"), "T #1 * me waves\n");
        me.edited = true;
        assert_eq!(line(&me, "T"), "T #1 * me waves (edited)\n");
        me.deleted = true;
        assert_eq!(line(&me, "T"), "T #1 <me> (message deleted)\n");
    }

    #[test]
    fn messages_go_to_their_conversations_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let mut log = ChatLog::open(&logs).expect("open");
        log.append(&msg(Some("#Rust"), "bob", None, "one"), "me")
            .expect("append");
        log.append(&msg(Some("#rust"), "me", None, "two"), "me")
            .expect("append");
        // A DM is filed under the other party, whichever way it went.
        log.append(&msg(None, "bob", Some("me"), "psst"), "me")
            .expect("append");
        let mut yes = msg(None, "Me", Some("bob"), "yes?");
        yes.id = 2;
        log.append(&yes, "me").expect("append");
        log.append(&msg(Some("#../../x"), "bob", None, "escape?"), "me")
            .expect("append");
        let read = |n: &str| std::fs::read_to_string(logs.join(n)).expect(n);
        let room = read("#rust.log");
        assert!(
            room.contains(" <bob> one\n") && room.contains(" <me> two\n"),
            "{room}"
        );
        let dm = read("bob.log");
        assert!(
            dm.contains(" <bob> psst\n") && dm.contains(" <Me> yes?\n"),
            "{dm}"
        );
        log.flush().expect("flush");
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "#%2E%2E%2F%2E%2E%2Fx.log",
                "#rust.log",
                STATE_FILE,
                "bob.log"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&logs), 0o700);
            assert_eq!(mode(&logs.join("bob.log")), 0o600);
        }
    }

    fn numbered(room: &str, id: u64, history: bool) -> Msg {
        let mut m = msg(Some(room), "bob", None, &format!("m{id}"));
        m.id = id;
        m.ts += id as i64;
        m.history = history;
        m
    }

    /// The entries of a log file, without their time stamps (nor the indented lines of
    /// multi-line texts).
    fn entries(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default().to_owned())
            .collect()
    }

    /// What came while the client was not running is logged when it is replayed, in order;
    /// what is logged already is not logged again, in this run or the next; edits and
    /// deletions are entries of their own.
    #[test]
    fn replayed_history_is_logged_once_in_order_and_changes_keep_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let mut log = ChatLog::open(&logs).expect("open");
        for id in 1..=3 {
            assert!(
                log.append(&numbered("#r", id, false), "me")
                    .expect("append")
            );
        }
        // The same messages again (a /history page): nothing.
        for id in 1..=3 {
            assert!(!log.append(&numbered("#r", id, true), "me").expect("append"));
        }
        drop(log);
        // The next start: the join's replay overlaps what is logged and goes on after it.
        let mut log = ChatLog::open(&logs).expect("open again");
        for id in 2..=5 {
            let written = log.append(&numbered("#r", id, true), "me").expect("append");
            assert_eq!(written, id > 3, "{id}");
        }
        let edit = ServerMsg::Edited {
            conv: "#r".into(),
            room: Some("#r".into()),
            id: 6,
            ts: 1_765_000_000_006,
            by: "bob".into(),
            target: 4,
            text: "m4, better\nand longer".into(),
            history: false,
        };
        let delete = ServerMsg::Deleted {
            conv: "#r".into(),
            room: Some("#r".into()),
            id: 7,
            ts: 1_765_000_000_007,
            by: "bob".into(),
            target: 5,
            history: false,
        };
        for m in [&edit, &delete] {
            let c = Change::of(m).expect("a change");
            assert!(log.append_change(&c, "me").expect("append"));
            // Replayed later: once only.
            assert!(!log.append_change(&c, "me").expect("append"));
        }
        assert_eq!(Change::of(&ServerMsg::Parted { room: "#r".into() }), None);
        assert_eq!(
            entries(&logs.join("#r.log")),
            [
                "#1 <bob> m1",
                "#2 <bob> m2",
                "#3 <bob> m3",
                "#4 <bob> m4",
                "#5 <bob> m5",
                "#6 * bob edited #4: m4, better",
                "#7 * message #5 deleted by bob",
            ]
        );
        let text = std::fs::read_to_string(logs.join("#r.log")).expect("read");
        assert!(text.contains("\n    and longer\n"), "{text}");

        // A DM's change goes to the file its messages went to, even when we made it; with no
        // message of it logged, to whoever made it, or nowhere if that is us.
        let mut dm = msg(None, "me", Some("bob"), "psst");
        dm.conv = "@ab".into();
        log.append(&dm, "me").expect("append");
        let mine = ServerMsg::Deleted {
            conv: "@ab".into(),
            room: None,
            id: 2,
            ts: 1,
            by: "me".into(),
            target: 1,
            history: false,
        };
        let c = Change::of(&mine).expect("a change");
        assert!(log.append_change(&c, "me").expect("append"));
        assert_eq!(
            entries(&logs.join("bob.log")),
            ["#1 <me> psst", "#2 * message #1 deleted by me"]
        );
        let elsewhere = |by: &str| ServerMsg::Deleted {
            conv: "@cd".into(),
            room: None,
            id: 9,
            ts: 1,
            by: by.into(),
            target: 3,
            history: false,
        };
        let m = elsewhere("me");
        assert!(
            !log.append_change(&Change::of(&m).expect("change"), "me")
                .expect("append")
        );
        let m = elsewhere("carol");
        assert!(
            log.append_change(&Change::of(&m).expect("change"), "me")
                .expect("append")
        );
        assert_eq!(
            entries(&logs.join("carol.log")),
            ["#9 * message #3 deleted by carol"]
        );
        drop(log);

        // A state file that does not parse stops the log rather than log everything again.
        std::fs::write(logs.join(STATE_FILE), "{not json").expect("write");
        let e = ChatLog::open(&logs).expect_err("a bad state file");
        assert!(e.to_string().contains("not a log state file"), "{e}");
    }
}
