//! The input line: a text with a cursor, edited grapheme by grapheme, and the per-buffer
//! history that Up/Down walk through.

use unicode_segmentation::UnicodeSegmentation;

/// A line of input with a cursor. The cursor is a byte offset that always sits on a grapheme
/// boundary, so an emoji with a skin tone or a flag moves and deletes as one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Editor {
    text: String,
    cursor: usize,
}

impl Editor {
    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor, as a byte offset into [`Editor::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Whether the line is empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the text; the cursor goes to the end.
    pub fn set(&mut self, text: impl Into<String>) {
        self.text = text.into();
        self.cursor = self.text.len();
    }

    /// Empties the line and returns what it held.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Inserts text at the cursor and moves past it.
    pub fn insert_str(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
        // An inserted combining mark can merge with the grapheme before; keep the cursor on a
        // boundary of the new text.
        self.cursor = self.snap(self.cursor);
    }

    /// Inserts one character at the cursor.
    pub fn insert_char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.insert_str(c.encode_utf8(&mut buf));
    }

    /// Replaces the bytes `range` with `with`, leaving the cursor after the replacement.
    pub(crate) fn replace_range(&mut self, range: std::ops::Range<usize>, with: &str) {
        let start = range.start;
        self.text.replace_range(range, with);
        self.cursor = self.snap(start + with.len());
    }

    fn snap(&self, at: usize) -> usize {
        let at = at.min(self.text.len());
        self.text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .chain(std::iter::once(self.text.len()))
            .find(|&i| i >= at)
            .unwrap_or(self.text.len())
    }

    fn prev_boundary(&self, from: usize) -> usize {
        self.text[..from]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, from: usize) -> usize {
        self.text[from..]
            .graphemes(true)
            .next()
            .map_or(from, |g| from + g.len())
    }

    /// Start of the word before the cursor (skipping spaces first), as shells do.
    fn word_start_before(&self, from: usize) -> usize {
        let mut at = from;
        let mut seen_word = false;
        for (i, g) in self.text[..from].grapheme_indices(true).rev() {
            let space = g.chars().all(char::is_whitespace);
            if space && seen_word {
                break;
            }
            seen_word |= !space;
            at = i;
        }
        at
    }

    /// End of the word after the cursor (skipping spaces first).
    fn word_end_after(&self, from: usize) -> usize {
        let mut at = from;
        let mut seen_word = false;
        for (i, g) in self.text[from..].grapheme_indices(true) {
            let space = g.chars().all(char::is_whitespace);
            if space && seen_word {
                break;
            }
            seen_word |= !space;
            at = from + i + g.len();
        }
        at
    }

    /// Deletes the grapheme before the cursor (Backspace).
    pub fn backspace(&mut self) {
        let start = self.prev_boundary(self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the grapheme under the cursor (Delete).
    pub fn delete(&mut self) {
        let end = self.next_boundary(self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    /// One grapheme left.
    pub fn left(&mut self) {
        self.cursor = self.prev_boundary(self.cursor);
    }

    /// One grapheme right.
    pub fn right(&mut self) {
        self.cursor = self.next_boundary(self.cursor);
    }

    /// To the start of the word (Ctrl+Left, Alt+B).
    pub fn word_left(&mut self) {
        self.cursor = self.word_start_before(self.cursor);
    }

    /// Past the end of the word (Ctrl+Right, Alt+F).
    pub fn word_right(&mut self) {
        self.cursor = self.word_end_after(self.cursor);
    }

    /// To the start (Home, Ctrl+A).
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// To the end (End, Ctrl+E).
    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Deletes the word before the cursor (Ctrl+W, Alt+Backspace).
    pub fn delete_word_back(&mut self) {
        let start = self.word_start_before(self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the word after the cursor (Alt+D, Ctrl+Delete).
    pub fn delete_word_forward(&mut self) {
        let end = self.word_end_after(self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    /// Deletes everything before the cursor (Ctrl+U).
    pub fn kill_to_start(&mut self) {
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
    }

    /// Deletes everything after the cursor (Ctrl+K).
    pub fn kill_to_end(&mut self) {
        self.text.truncate(self.cursor);
    }
}

/// Lines sent in one buffer, newest last, for Up/Down.
#[derive(Debug, Default, Clone)]
pub(crate) struct InputHistory {
    entries: Vec<String>,
    /// Index into `entries` while browsing.
    pos: Option<usize>,
    /// What was typed before browsing started, given back after the newest entry.
    draft: String,
}

/// Remembered lines per buffer.
const HISTORY_LEN: usize = 200;

impl InputHistory {
    /// Remembers a sent line and stops browsing.
    pub(crate) fn push(&mut self, line: &str) {
        self.pos = None;
        if line.is_empty() || self.entries.last().is_some_and(|l| l == line) {
            return;
        }
        if self.entries.len() == HISTORY_LEN {
            self.entries.remove(0);
        }
        self.entries.push(line.to_owned());
    }

    /// The line before; `current` is what the input holds now. `None`: nothing older.
    pub(crate) fn up(&mut self, current: &str) -> Option<String> {
        let next = match self.pos {
            None if self.entries.is_empty() => return None,
            None => {
                self.draft = current.to_owned();
                self.entries.len() - 1
            }
            Some(0) => return None,
            Some(p) => p - 1,
        };
        self.pos = Some(next);
        Some(self.entries[next].clone())
    }

    /// The line after, then the draft. `None`: not browsing.
    pub(crate) fn down(&mut self) -> Option<String> {
        let p = self.pos?;
        if p + 1 < self.entries.len() {
            self.pos = Some(p + 1);
            Some(self.entries[p + 1].clone())
        } else {
            self.pos = None;
            Some(std::mem::take(&mut self.draft))
        }
    }

    /// Stops browsing (the user edited the recalled line).
    pub(crate) fn reset(&mut self) {
        self.pos = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed(text: &str) -> Editor {
        let mut e = Editor::default();
        e.set(text);
        e
    }

    #[test]
    fn insert_and_move() {
        let mut e = Editor::default();
        for c in "helo".chars() {
            e.insert_char(c);
        }
        e.left();
        e.insert_char('l');
        assert_eq!(e.text(), "hello");
        assert_eq!(e.cursor(), 4);
        e.home();
        e.insert_str(">> ");
        assert_eq!(e.text(), ">> hello");
        e.end();
        assert_eq!(e.cursor(), e.text().len());
    }

    #[test]
    fn graphemes_move_and_delete_as_one() {
        // A thumbs-up with a skin tone is two chars, one grapheme; a flag is two regional
        // indicators.
        let mut e = ed("a👍🏽🇫🇷");
        e.backspace();
        assert_eq!(e.text(), "a👍🏽");
        e.left();
        assert_eq!(e.cursor(), 1);
        e.delete();
        assert_eq!(e.text(), "a");
        e.right();
        assert_eq!(e.cursor(), 1, "right stops at the end");
    }

    #[test]
    fn word_movement_and_deletion() {
        let mut e = ed("say hello  world");
        e.word_left();
        assert_eq!(e.cursor(), 11);
        e.word_left();
        assert_eq!(e.cursor(), 4);
        e.word_right();
        assert_eq!(e.cursor(), 9);
        e.end();
        e.delete_word_back();
        assert_eq!(e.text(), "say hello  ");
        e.delete_word_back();
        assert_eq!(e.text(), "say ");
        e.home();
        e.delete_word_forward();
        assert_eq!(e.text(), " ");
    }

    #[test]
    fn kill_to_start_and_end() {
        let mut e = ed("abc def");
        e.home();
        e.word_right();
        e.kill_to_end();
        assert_eq!(e.text(), "abc");
        let mut e = ed("abc def");
        e.word_left();
        e.kill_to_start();
        assert_eq!((e.text(), e.cursor()), ("def", 0));
    }

    #[test]
    fn cjk_editing() {
        let mut e = ed("日本語");
        e.left();
        e.backspace();
        assert_eq!(e.text(), "日語");
        e.insert_str("本");
        assert_eq!(e.text(), "日本語");
    }

    #[test]
    fn history_walks_back_and_returns_the_draft() {
        let mut h = InputHistory::default();
        h.push("one");
        h.push("two");
        h.push("two"); // repeated lines are kept once
        assert_eq!(h.up("draft").as_deref(), Some("two"));
        assert_eq!(h.up("two").as_deref(), Some("one"));
        assert_eq!(h.up("one"), None);
        assert_eq!(h.down().as_deref(), Some("two"));
        assert_eq!(h.down().as_deref(), Some("draft"));
        assert_eq!(h.down(), None);
    }

    #[test]
    fn empty_history_does_nothing() {
        let mut h = InputHistory::default();
        assert_eq!(h.up("x"), None);
        assert_eq!(h.down(), None);
    }

    proptest::proptest! {
        #[test]
        fn edits_never_panic_and_keep_the_cursor_on_a_boundary(
            text in "\\PC{0,30}",
            ops in proptest::collection::vec(0u8..13, 0..40),
        ) {
            let mut e = ed(&text);
            for op in ops {
                match op {
                    0 => e.left(),
                    1 => e.right(),
                    2 => e.word_left(),
                    3 => e.word_right(),
                    4 => e.backspace(),
                    5 => e.delete(),
                    6 => e.delete_word_back(),
                    7 => e.delete_word_forward(),
                    8 => e.home(),
                    9 => e.end(),
                    10 => e.kill_to_end(),
                    11 => e.kill_to_start(),
                    _ => e.insert_str("é日"),
                }
                proptest::prop_assert!(e.text().is_char_boundary(e.cursor()));
                proptest::prop_assert!(e.cursor() <= e.text().len());
            }
        }
    }
}
