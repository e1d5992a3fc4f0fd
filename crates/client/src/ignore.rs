//! `/ignore NICK`: whose messages the client does not show, kept across restarts.
//!
//! **By nick.** A message carries its sender's nick, not its key, so the client can only tell
//! senders apart by nick; the server binds a nick to the key that claimed it, so the nick names
//! one key for as long as that key keeps it. Nicks are compared as the server folds them
//! (`Bob` is `bob`). When an ignored nick is seen to change (`bob is now known as bobby`), the
//! new nick is ignored too, so a rename seen while running does not escape the list.
//!
//! The list is a plain file, one nick per line (`#` starts a comment line), written whole
//! through a temporary file and a rename ([`IgnoreList::save`]), so a crash leaves the old list
//! or the new one, never half of one. The file lives in chirp's state directory
//! (`$XDG_STATE_HOME/chirp/ignore`); the binary picks the path.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chirp_chat::names::fold;

/// The file name in chirp's state directory.
pub const FILE_NAME: &str = "ignore";

/// The most nicks the list holds (a file grown by hand past this is cut; `/ignore` refuses
/// more).
pub const MAX_IGNORED: usize = 1000;

/// The ignored nicks, folded, and whether they changed since the last save.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreList {
    nicks: BTreeSet<String>,
    dirty: bool,
}

/// What `/ignore` and `/unignore` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Added or removed.
    Done,
    /// Already so: nothing changed.
    Unchanged,
    /// The list is full ([`MAX_IGNORED`]).
    Full,
}

impl IgnoreList {
    /// Reads the list from its text (lines of nicks; blank and `#` lines skipped).
    pub fn parse(text: &str) -> IgnoreList {
        let nicks = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(fold)
            .take(MAX_IGNORED)
            .collect();
        IgnoreList {
            nicks,
            dirty: false,
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s =
            String::from("# chirp: nicks whose messages are not shown (/ignore, /unignore)\n");
        for n in &self.nicks {
            s.push_str(n);
            s.push('\n');
        }
        s
    }

    /// Whether messages from `nick` are hidden.
    pub fn is_ignored(&self, nick: &str) -> bool {
        !self.nicks.is_empty() && self.nicks.contains(&fold(nick))
    }

    /// `/ignore NICK`.
    pub fn add(&mut self, nick: &str) -> Change {
        if self.nicks.len() >= MAX_IGNORED && !self.is_ignored(nick) {
            return Change::Full;
        }
        if self.nicks.insert(fold(nick)) {
            self.dirty = true;
            Change::Done
        } else {
            Change::Unchanged
        }
    }

    /// `/unignore NICK`.
    pub fn remove(&mut self, nick: &str) -> Change {
        if self.nicks.remove(&fold(nick)) {
            self.dirty = true;
            Change::Done
        } else {
            Change::Unchanged
        }
    }

    /// A nick change seen: an ignored `old` makes `new` ignored too.
    pub fn renamed(&mut self, old: &str, new: &str) {
        if self.is_ignored(old) && !self.is_ignored(new) {
            let _ = self.add(new);
        }
    }

    /// The ignored nicks, in order.
    pub fn nicks(&self) -> impl Iterator<Item = &str> {
        self.nicks.iter().map(String::as_str)
    }

    /// Whether the list changed since it was loaded or last saved; clears the mark.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// `/ignore` without a nick: the list, for the user.
    pub fn describe(&self) -> String {
        if self.nicks.is_empty() {
            "nobody is ignored (/ignore NICK hides a nick's messages)".to_owned()
        } else {
            let nicks: Vec<&str> = self.nicks().collect();
            format!("ignored: {}", nicks.join(" "))
        }
    }

    /// Reads the list from `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> std::io::Result<IgnoreList> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(IgnoreList::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreList::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the list to `path` atomically: a temporary file in the same directory (created
    /// if missing), synced, then renamed over the old one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, self.render().as_bytes())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks_are_matched_as_the_server_folds_them_and_renames_are_followed() {
        let mut l = IgnoreList::default();
        assert!(!l.is_ignored("bob"));
        assert_eq!(l.add("Bob"), Change::Done);
        assert_eq!(l.add("bob"), Change::Unchanged);
        assert!(l.is_ignored("BOB"));
        assert!(!l.is_ignored("bobby"));
        l.renamed("bob", "bobby");
        assert!(l.is_ignored("bobby"));
        l.renamed("carol", "dave");
        assert!(!l.is_ignored("dave"));
        assert_eq!(l.describe(), "ignored: bob bobby");
        assert_eq!(l.remove("BOB"), Change::Done);
        assert_eq!(l.remove("bob"), Change::Unchanged);
        assert!(l.take_dirty());
        assert!(!l.take_dirty());
    }

    #[test]
    fn the_list_is_kept_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The directory does not exist yet: save makes it.
        let path = dir.path().join("state").join(FILE_NAME);
        assert_eq!(
            IgnoreList::load(&path).expect("missing is empty"),
            IgnoreList::default()
        );
        let mut l = IgnoreList::default();
        l.add("bob");
        l.add("Ünïcode");
        l.save(&path).expect("save");
        let back = IgnoreList::load(&path).expect("load");
        assert!(back.is_ignored("BOB") && back.is_ignored("ünïcode"));
        assert_eq!(back.nicks().count(), 2);
        // Saving again replaces the file whole, and leaves no temporary file behind.
        let mut l = back;
        l.remove("bob");
        l.save(&path).expect("save");
        assert!(!IgnoreList::load(&path).expect("load").is_ignored("bob"));
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn a_hand_edited_file_is_read_leniently_and_bounded() {
        let l = IgnoreList::parse("# comment\n\n  alice  \r\nBob\n");
        assert_eq!(l.nicks().collect::<Vec<_>>(), ["alice", "bob"]);
        let many: String = (0..MAX_IGNORED + 10).map(|i| format!("n{i}\n")).collect();
        let mut l = IgnoreList::parse(&many);
        assert_eq!(l.nicks().count(), MAX_IGNORED);
        assert_eq!(l.add("another"), Change::Full);
    }
}
