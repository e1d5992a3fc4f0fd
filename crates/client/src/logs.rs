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
//! - **Lines.** `2026-12-07 13:45:01 <alice> hello` (local time), `… * alice waves` for an
//!   action. Nicks go through [`chirp_tui::safe::line`], text through
//!   [`chirp_tui::safe::text`] (the sanitising of everything chirp prints), and the lines of a
//!   multi-line message after the first are indented, so the log holds no control character
//!   and no message can pass off a line as another message.
//! - **What is logged.** Live messages, ours included, and not those of ignored nicks.
//!   History replayed on a join or by `/history` is not: it was logged when it arrived live,
//!   and logging it again at every start would repeat it. Messages that came while this
//!   client was not running are therefore not in the log.
//!
//! Files are created with mode 0600 in a directory of mode 0700 (they hold private
//! conversations), opened, appended to and closed per message.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chirp_chat::names::fold;
use chirp_chat::wire::Msg;
use chirp_tui::safe;

/// The longest file name made, in bytes, before `.log`.
pub const MAX_NAME: usize = 120;

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

/// One log line (with its line end) for `m`, stamped `when` (already formatted).
pub fn line(m: &Msg, when: &str) -> String {
    let from = safe::line(&m.from);
    let text = safe::text(&m.text);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut out = if m.action {
        format!("{when} * {from} {first}\n")
    } else {
        format!("{when} <{from}> {first}\n")
    };
    for more in lines {
        out.push_str("    ");
        out.push_str(more);
        out.push('\n');
    }
    out
}

/// The log directory.
#[derive(Debug, Clone)]
pub struct ChatLog {
    dir: PathBuf,
}

impl ChatLog {
    /// Logs into `dir` (created, mode 0700, if missing).
    pub fn open(dir: &Path) -> std::io::Result<ChatLog> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
        Ok(ChatLog {
            dir: dir.to_path_buf(),
        })
    }

    /// The file of conversation `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.log", file_name(name)))
    }

    /// Appends `m` (a live message; history is the caller's to skip) to its conversation's
    /// file, stamped with its server time in local time. `me`: our nick.
    pub fn append(&self, m: &Msg, me: &str) -> std::io::Result<()> {
        let when = chrono::DateTime::from_timestamp_millis(m.ts)
            .unwrap_or_default()
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let mut o = OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(self.path_of(conversation(m, me)))?;
        f.write_all(line(m, &when).as_bytes())
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
        assert_eq!(rows[0], "T <ev^[il> hi ^[]0;title^G");
        assert_eq!(rows[1], "    x 2026-01-01 00:00:00 <bob> forged");
        assert!(rows[2].starts_with("    <U+202E>end"), "{l:?}");
        assert!(!l.chars().any(|c| c != '\n' && safe::is_unsafe(c)), "{l:?}");
        let mut me = msg(None, "me", Some("bob"), "waves");
        me.action = true;
        assert_eq!(line(&me, "T"), "T * me waves\n");
    }

    #[test]
    fn messages_go_to_their_conversations_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let log = ChatLog::open(&logs).expect("open");
        log.append(&msg(Some("#Rust"), "bob", None, "one"), "me")
            .expect("append");
        log.append(&msg(Some("#rust"), "me", None, "two"), "me")
            .expect("append");
        // A DM is filed under the other party, whichever way it went.
        log.append(&msg(None, "bob", Some("me"), "psst"), "me")
            .expect("append");
        log.append(&msg(None, "Me", Some("bob"), "yes?"), "me")
            .expect("append");
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
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["#%2E%2E%2F%2E%2E%2Fx.log", "#rust.log", "bob.log"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&logs), 0o700);
            assert_eq!(mode(&logs.join("bob.log")), 0o600);
        }
    }
}
