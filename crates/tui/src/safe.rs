//! Text from the network, made harmless for a terminal: the one sanitizer behind every place
//! chirp shows a person what somebody else sent (the chat UI, and the line-mode printers of
//! `chirp peer`, `chirp peer --plain` and `chirp connect`).
//!
//! A terminal obeys the text it is given. An ESC (`\x1b`) starts a sequence that can retitle
//! the window, clear the screen, move the cursor over earlier lines or, on some terminals,
//! write to the clipboard; C1 controls (U+0080–U+009F: `\u{9b}` is a one-character CSI) do the
//! same on terminals that honour them; BEL rings, backspace and a lone CR move the cursor back
//! over what is already shown; bidi controls make text display in another order than it is
//! read. So nothing from the network may reach the terminal as it is. Every character that
//! could act on the terminal is replaced by a visible mark, so the reader still sees that
//! something odd was sent, and where:
//!
//! | what | shown as |
//! |---|---|
//! | C0 controls U+0000–U+001F | caret notation: ESC `^[`, BEL `^G`, backspace `^H`, CR `^M` |
//! | DEL U+007F | `^?` |
//! | C1 controls U+0080–U+009F | `<U+009B>` |
//! | bidi controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) | `<U+202E>` |
//! | line and paragraph separators U+2028, U+2029 | `<U+2028>` |
//! | bytes that are not UTF-8 (only from [`text_bytes`]) | `\xff` |
//!
//! Text without any of these comes back borrowed, untouched: wide characters, emoji and
//! combining marks pass through, since they cannot act on the terminal.
//!
//! Two shapes of text: a [`line()`] (a nick, a room name, a topic, a reason) must stay on one
//! line, so even newline and tab are marked (`^J`, `^I`); a message [`text()`] keeps its line
//! breaks (`\n`, and `\r\n` read as one) so that a multi-line message stays readable, and
//! expands tabs to spaces (stops every [`TAB_STOP`] columns). The caller lays out the lines it
//! gets back (the UI and the line printers indent continuation lines, so that a message cannot
//! pass off a line of its own as a new message).
//!
//! This lives in `chirp-tui` because that is the crate that owns what a terminal shows, and the
//! lowest one both printers can reach without a new dependency edge: `chirp` (the binary, with
//! the line-mode printers) already depends on `chirp-tui`, and `chirp-tui` depends on no other
//! chirp crate, so no cycle is possible.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_width::UnicodeWidthChar as _;

/// Tabs in a message [`text()`] become spaces up to the next multiple of this many columns,
/// counted from the start of the message's line (as `cat` shows a file).
pub const TAB_STOP: usize = 8;

/// Whether `c` could act on a terminal (or on how it orders text) rather than just show:
/// control characters (C0, DEL, C1), bidi controls, and the line and paragraph separators
/// (which some renderers break lines at). Everything [`line()`] replaces.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// One line of text from the network (a nick, a room name, a topic, a reason), with every
/// character of [`is_unsafe`] replaced by a visible mark; newlines and tabs included, so the
/// result is always one line. Borrowed when nothing needed replacing.
pub fn line(s: &str) -> Cow<'_, str> {
    match s.find(is_unsafe) {
        None => Cow::Borrowed(s),
        Some(at) => {
            let mut out = Marks::new(false, &s[..at]);
            out.push_str(&s[at..]);
            Cow::Owned(out.out)
        }
    }
}

/// A message from the network: like [`line()`], except that line breaks stay (`\n`; `\r\n` is
/// read as one `\n`, while a lone `\r` is marked `^M`) and tabs become spaces. The result
/// holds no character of [`is_unsafe`] other than `\n`. Borrowed when nothing needed
/// replacing.
pub fn text(s: &str) -> Cow<'_, str> {
    match s.find(|c| c != '\n' && is_unsafe(c)) {
        None => Cow::Borrowed(s),
        Some(at) => {
            let mut out = Marks::new(true, &s[..at]);
            out.push_str(&s[at..]);
            Cow::Owned(out.out)
        }
    }
}

/// A message as raw bytes (a `--plain` datagram, a peer's message): [`text()`] for the parts
/// that are UTF-8, and `\xNN` for each byte that is not. Borrowed when the bytes are UTF-8
/// and nothing needed replacing.
pub fn text_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return text(s);
    }
    let mut out = Marks::new(true, "");
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_mark(format_args!("\\x{byte:02x}"));
        }
    }
    Cow::Owned(out.out)
}

/// The output being built, and the column (for tab stops) in its current line.
struct Marks {
    out: String,
    /// Keep line breaks and expand tabs (a message text), or mark them (a one-line field).
    multiline: bool,
    col: usize,
}

impl Marks {
    /// Starts with `clean`, a prefix known to need no replacement.
    fn new(multiline: bool, clean: &str) -> Marks {
        let mut out = String::with_capacity(clean.len() + 32);
        out.push_str(clean);
        let line_start = clean.rfind('\n').map_or(0, |i| i + 1);
        Marks {
            out,
            multiline,
            col: width(&clean[line_start..]),
        }
    }

    fn push_str(&mut self, s: &str) {
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' if self.multiline => self.newline(),
                '\r' if self.multiline && chars.peek() == Some(&'\n') => {
                    chars.next();
                    self.newline();
                }
                '\t' if self.multiline => {
                    let n = TAB_STOP - self.col % TAB_STOP;
                    self.out.extend(std::iter::repeat_n(' ', n));
                    self.col += n;
                }
                '\0'..='\u{1F}' => {
                    // Caret notation: the control's code with bit 6 set (ESC 0x1B → '[').
                    let caret = char::from(c as u8 ^ 0x40);
                    self.push_mark(format_args!("^{caret}"));
                }
                '\u{7F}' => self.push_mark(format_args!("^?")),
                c if is_unsafe(c) => self.push_mark(format_args!("<U+{:04X}>", u32::from(c))),
                c => {
                    self.out.push(c);
                    self.col += c.width().unwrap_or(0);
                }
            }
        }
    }

    fn newline(&mut self) {
        self.out.push('\n');
        self.col = 0;
    }

    /// Appends a mark (ASCII, one column per byte).
    fn push_mark(&mut self, mark: std::fmt::Arguments<'_>) {
        let before = self.out.len();
        // Writing to a String cannot fail.
        let _ = self.out.write_fmt(mark);
        self.col += self.out.len() - before;
    }
}

fn width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The payload of issue 11: a title change, a screen clear, colours, BEL, backspaces and a
    /// right-to-left override.
    const EVIL: &str =
        "evil \x1b]0;pwned-title\x07 \x1b[2J\x1b[31mred\x1b[0m \x08\x08bs \u{202e}evil-bidi end";

    #[test]
    fn the_issue_payload_is_shown_not_obeyed() {
        let shown = line(EVIL);
        assert_eq!(
            shown,
            "evil ^[]0;pwned-title^G ^[[2J^[[31mred^[[0m ^H^Hbs <U+202E>evil-bidi end"
        );
        assert_eq!(text(EVIL), shown, "no line break or tab: both shapes agree");
    }

    #[test]
    fn marks_for_every_kind() {
        assert_eq!(line("\0\x01\x1f\x7f"), "^@^A^_^?");
        assert_eq!(line("a\u{9b}31mb\u{85}"), "a<U+009B>31mb<U+0085>");
        assert_eq!(
            line("\u{61c}\u{200e}\u{200f}\u{202a}\u{2066}\u{2069}\u{2028}\u{2029}"),
            "<U+061C><U+200E><U+200F><U+202A><U+2066><U+2069><U+2028><U+2029>"
        );
        assert_eq!(line("one\ntwo\tthree\r"), "one^Jtwo^Ithree^M");
    }

    #[test]
    fn messages_keep_their_lines_and_expand_tabs() {
        assert_eq!(text("one\ntwo"), "one\ntwo");
        assert!(matches!(text("one\ntwo"), Cow::Borrowed(_)));
        assert_eq!(text("dos\r\nline"), "dos\nline");
        assert_eq!(
            text("over\rwrite"),
            "over^Mwrite",
            "a lone CR cannot move the cursor"
        );
        assert_eq!(text("trailing\r"), "trailing^M");
        assert_eq!(text("\tx"), "        x");
        assert_eq!(text("ab\tx\n\ty"), "ab      x\n        y");
        // Columns count display width: a wide glyph takes two, a mark its length.
        assert_eq!(text("日本\tx"), "日本    x");
        assert_eq!(text("\x1b\tx"), "^[      x");
        // Tab stops restart on each line, also when the tab comes after the first mark.
        assert_eq!(text("abc\n\x07\tx"), "abc\n^G      x");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(text_bytes(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(text_bytes(b"a\xc3(b\x1b"), "a\\xc3(b^[");
        assert_eq!(text_bytes("é✓\n".as_bytes()), "é✓\n");
        assert!(matches!(text_bytes("é✓".as_bytes()), Cow::Borrowed(_)));
        // A C1 control encoded in UTF-8 is a character, a lone 0x9b byte is not.
        assert_eq!(text_bytes(b"\xc2\x9b|\x9b"), "<U+009B>|\\x9b");
    }

    #[test]
    fn wide_text_and_emoji_pass_untouched() {
        for s in [
            "日本語も大丈夫",
            "waves 👋",
            "👨‍👩‍👧 family",
            "e\u{301}",
            "مرحبا",
            "שלום",
        ] {
            assert!(matches!(line(s), Cow::Borrowed(_)), "{s}");
            assert!(matches!(text(s), Cow::Borrowed(_)), "{s}");
        }
    }

    /// Characters a sanitizer is most likely to get wrong, mixed into arbitrary text.
    fn nasty() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '\0', '\x07', '\x08', '\t', '\n', '\r', '\x1b', '\x7f', '\u{80}', '\u{85}', '\u{9b}',
            '\u{9f}', '\u{61c}', '\u{200e}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{2028}', '日',
            '👋', 'a', ' ',
        ]);
        let c = prop_oneof![any::<char>(), special];
        prop::collection::vec(c, 0..64).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn a_line_never_holds_an_unsafe_character(s in nasty()) {
            let out = line(&s);
            prop_assert!(!out.chars().any(is_unsafe), "{s:?} -> {out:?}");
        }

        #[test]
        fn a_text_holds_nothing_unsafe_but_newlines(s in nasty()) {
            let out = text(&s);
            prop_assert!(!out.chars().any(|c| c != '\n' && is_unsafe(c)), "{s:?} -> {out:?}");
            prop_assert_eq!(out.matches('\n').count(), s.matches('\n').count());
        }

        #[test]
        fn any_bytes_become_safe_text(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let out = text_bytes(&b);
            prop_assert!(!out.chars().any(|c| c != '\n' && is_unsafe(c)), "{b:?} -> {out:?}");
        }

        #[test]
        fn safe_text_is_borrowed_unchanged(s in "[^\\p{Cc}\u{61c}\u{200e}\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{2028}\u{2029}]{0,64}") {
            prop_assert!(matches!(line(&s), Cow::Borrowed(b) if b == s));
            prop_assert!(matches!(text(&s), Cow::Borrowed(b) if b == s));
            prop_assert!(matches!(text_bytes(s.as_bytes()), Cow::Borrowed(b) if b == s));
        }

        #[test]
        fn safe_multiline_text_is_borrowed_unchanged(s in "[^\\p{Cc}\u{61c}\u{200e}\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{2028}\u{2029}]{0,20}(\n[^\\p{Cc}]{0,20}){0,3}") {
            // (The second part may hold a bidi control: then it must not be borrowed.)
            let borrowed = matches!(text(&s), Cow::Borrowed(_));
            prop_assert_eq!(borrowed, !s.chars().any(|c| c != '\n' && is_unsafe(c)));
        }
    }
}
