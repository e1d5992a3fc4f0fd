//! Text that came over the network, made safe and measured for the terminal.
//!
//! Every string from the network (nicks, messages, topics) is untrusted: an ESC byte written
//! to a cell would let a peer drive our terminal, and bidi overrides would let it disguise
//! text. [`sanitize`] (one-line fields) and [`wrap`] (message rows) show such characters as
//! visible marks, through [`crate::safe`], the one sanitizer chirp has. [`wrap`] lays styled
//! text out in rows of at most `width` *display* columns (CJK and most emoji take two),
//! breaking at spaces when it can and inside words when it must; it measures with
//! `unicode-width`, exactly as ratatui does when it draws, so a row never overflows.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::safe;

/// Makes one line of untrusted text printable: control and bidi characters (tabs and
/// newlines included) become visible marks (`^[`, `<U+202E>`), see [`crate::safe::line`].
pub(crate) fn sanitize(s: &str) -> String {
    safe::line(s).into_owned()
}

/// Display width of a string, as ratatui measures it.
pub(crate) fn width(s: &str) -> usize {
    s.graphemes(true).map(grapheme_width).sum()
}

fn grapheme_width(g: &str) -> usize {
    UnicodeWidthStr::width(g)
}

/// Cuts `s` to at most `max` columns, ending with `…` if anything was cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in s.graphemes(true) {
        let w = grapheme_width(g);
        if used + w > max - 1 {
            break;
        }
        out.push_str(g);
        used += w;
    }
    out.push('…');
    out
}

/// One grapheme with its style and width, ready to be placed.
#[derive(Clone)]
struct Cell {
    text: String,
    style: Style,
    width: usize,
}

enum Token {
    Word(Vec<Cell>),
    Space(Cell),
    Newline,
}

fn tokenize(segments: &[(&str, Style)]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word: Vec<Cell> = Vec::new();
    for (text, style) in segments {
        for g in text.graphemes(true) {
            if g == "\n" || g == "\r\n" {
                if !word.is_empty() {
                    tokens.push(Token::Word(std::mem::take(&mut word)));
                }
                tokens.push(Token::Newline);
                continue;
            }
            // Newlines were handled above; everything else is made printable (message texts
            // arrive already through `safe::text`, which expanded their tabs to spaces). A
            // mark (`^[`, `<U+202E>`) is laid out character by character, like any word.
            let clean = safe::line(g);
            for piece in clean.graphemes(true) {
                let w = grapheme_width(piece);
                if w == 0 {
                    // A lone combining mark or joiner: nothing a cell can show on its own.
                    continue;
                }
                let cell = Cell {
                    text: piece.to_owned(),
                    style: *style,
                    width: w,
                };
                if cell.text == " " {
                    if !word.is_empty() {
                        tokens.push(Token::Word(std::mem::take(&mut word)));
                    }
                    tokens.push(Token::Space(cell));
                } else {
                    word.push(cell);
                }
            }
        }
    }
    if !word.is_empty() {
        tokens.push(Token::Word(word));
    }
    tokens
}

struct Rows {
    width: usize,
    indent: usize,
    rows: Vec<Vec<Cell>>,
    used: usize,
    /// The current row follows a line break of the text itself (not a wrap).
    after_break: bool,
}

impl Rows {
    fn new_row(&mut self) {
        self.rows.push(Vec::new());
        self.used = 0;
        self.after_break = false;
        if self.indent > 0 {
            let pad = Cell {
                text: " ".repeat(self.indent),
                style: Style::default(),
                width: self.indent,
            };
            self.used = self.indent;
            self.rows
                .last_mut()
                .expect("a row was just pushed") // pushed on the line above
                .push(pad);
        }
    }

    fn at_row_start(&self) -> bool {
        self.used <= self.indent
    }

    fn push(&mut self, cell: Cell) {
        if self.used + cell.width > self.width {
            self.new_row();
            if self.used + cell.width > self.width {
                // Wider than a whole row (a wide glyph in a 1-column pane): show a stand-in.
                let stand_in = Cell {
                    text: "?".repeat(self.width - self.used),
                    style: cell.style,
                    width: self.width - self.used,
                };
                self.used = self.width;
                self.rows
                    .last_mut()
                    .expect("new_row pushed one")
                    .push(stand_in); // as said
                return;
            }
        }
        self.used += cell.width;
        self.rows
            .last_mut()
            .expect("rows always holds the current row") // starts with one row
            .push(cell);
    }
}

/// Lays out styled `segments` in rows of at most `width` columns. Rows after the first start
/// with `indent` spaces (a hanging indent under the message text); the indent is dropped if it
/// would leave fewer than 8 columns. Newlines in the text start a new row. Never returns an
/// empty list unless `width` is 0.
pub(crate) fn wrap(segments: &[(&str, Style)], width: usize, indent: usize) -> Vec<Line<'static>> {
    if width == 0 {
        return Vec::new();
    }
    let indent = if width >= indent + 8 { indent } else { 0 };
    let mut rows = Rows {
        width,
        indent,
        rows: vec![Vec::new()],
        used: 0,
        after_break: false,
    };
    for token in tokenize(segments) {
        match token {
            Token::Newline => {
                rows.new_row();
                rows.after_break = true;
            }
            Token::Space(cell) => {
                // Spaces at the end of a row vanish instead of starting the next row; after a
                // line break of the text they are its indentation, and stay.
                if rows.used + cell.width <= rows.width
                    && (rows.after_break || !(rows.at_row_start() && rows.rows.len() > 1))
                {
                    rows.push(cell);
                }
            }
            Token::Word(cells) => {
                let w: usize = cells.iter().map(|c| c.width).sum();
                let room = rows.width - rows.used;
                if w > room && w <= rows.width - rows.indent && !rows.at_row_start() {
                    rows.new_row();
                }
                for cell in cells {
                    rows.push(cell);
                }
            }
        }
    }
    rows.rows.into_iter().map(to_line).collect()
}

fn to_line(mut cells: Vec<Cell>) -> Line<'static> {
    // A row that ends where a space was drawn does not keep it.
    while cells.last().is_some_and(|c| c.text == " ") {
        cells.pop();
    }
    // Merge runs of equal style into one span each.
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut current = String::new();
    let mut style = Style::default();
    for cell in cells {
        if cell.style != style && !current.is_empty() {
            spans.push(Span::styled(std::mem::take(&mut current), style));
        }
        style = cell.style;
        current.push_str(&cell.text);
    }
    if !current.is_empty() {
        spans.push(Span::styled(current, style));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line<'_>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    fn wrap_plain(s: &str, width: usize, indent: usize) -> Vec<String> {
        plain(&wrap(&[(s, Style::default())], width, indent))
    }

    #[test]
    fn wraps_at_spaces() {
        assert_eq!(
            wrap_plain("the quick brown fox jumps", 10, 0),
            vec!["the quick", "brown fox", "jumps"]
        );
    }

    #[test]
    fn hanging_indent() {
        assert_eq!(
            wrap_plain("aaaa bbbb cccc dddd eeee", 12, 2),
            vec!["aaaa bbbb", "  cccc dddd", "  eeee"]
        );
    }

    #[test]
    fn breaks_long_words() {
        assert_eq!(wrap_plain("abcdefghij", 4, 0), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn cjk_counts_two_columns_and_never_splits_a_glyph() {
        let rows = wrap_plain("日本語のテキスト", 5, 0);
        assert_eq!(rows, vec!["日本", "語の", "テキ", "スト"]);
        for r in &rows {
            assert!(width(r) <= 5);
        }
    }

    #[test]
    fn emoji_are_wide() {
        let rows = wrap_plain("a👍b👍c👍", 3, 0);
        assert_eq!(rows, vec!["a👍", "b👍", "c👍"]);
    }

    #[test]
    fn newlines_start_rows() {
        assert_eq!(wrap_plain("one\ntwo", 20, 2), vec!["one", "  two"]);
    }

    #[test]
    fn indentation_after_a_newline_stays_but_not_after_a_wrap() {
        assert_eq!(
            wrap_plain("fn x() {\n    y();\n}", 20, 2),
            vec!["fn x() {", "      y();", "  }"]
        );
        assert_eq!(wrap_plain("aaaa    bbbb", 6, 0), vec!["aaaa", "bbbb"]);
    }

    #[test]
    fn controls_are_shown_as_marks() {
        let rows = wrap_plain("a\u{1b}[2Jb\u{202E}c", 20, 0);
        assert_eq!(rows, vec!["a^[[2Jb<U+202E>c"]);
        assert_eq!(sanitize("x\u{7}y\nz"), "x^Gy^Jz");
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("日本語", 4), "日…");
    }

    proptest::proptest! {
        #[test]
        fn rows_never_exceed_width(s in "\\PC{0,200}", w in 1usize..30, indent in 0usize..10) {
            for row in wrap_plain(&s, w, indent) {
                proptest::prop_assert!(width(&row) <= w, "{row:?} wider than {w}");
            }
        }
    }
}
