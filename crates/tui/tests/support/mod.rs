//! Helpers for driving an [`App`] and reading the screen it draws.

#![allow(dead_code, unreachable_pub)]

use chirp_tui::{App, BufferId, ChatMessage, Config, UiCommand, UiEvent, UnixMs};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use unicode_width::UnicodeWidthStr;

/// 2026-12-02 10:00:00 UTC.
pub const T0: UnixMs = 1_796_205_600_000;
pub const MIN: UnixMs = 60_000;

pub fn app() -> App {
    let mut app = App::new(Config::default());
    app.handle_event(UiEvent::SelfNick("me".into()), T0);
    app
}

pub fn room(name: &str) -> BufferId {
    BufferId::Room(name.into())
}

pub fn msg(id: u64, from: &str, text: &str, ts: UnixMs) -> ChatMessage {
    ChatMessage {
        id: Some(id),
        from: from.into(),
        text: text.into(),
        action: false,
        ts,
        ..ChatMessage::default()
    }
}

pub fn say(app: &mut App, buffer: BufferId, id: u64, from: &str, text: &str, ts: UnixMs) {
    app.handle_event(
        UiEvent::Message {
            buffer,
            msg: msg(id, from, text, ts),
            own: false,
        },
        ts,
    );
}

/// Joins `name` as ourselves, with `others` in it.
pub fn join(app: &mut App, name: &str, others: &[&str]) {
    app.handle_event(
        UiEvent::Join {
            room: name.into(),
            nick: "me".into(),
            ts: T0,
        },
        T0,
    );
    let mut nicks: Vec<String> = others.iter().map(|s| s.to_string()).collect();
    nicks.push("me".into());
    app.handle_event(
        UiEvent::Members {
            room: name.into(),
            nicks,
        },
        T0,
    );
}

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub fn alt(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT)
}

/// Types `text` and returns the commands the keys produced.
pub fn type_str(app: &mut App, text: &str, now: UnixMs) -> Vec<UiCommand> {
    let mut out = Vec::new();
    for c in text.chars() {
        out.extend(app.handle_key(key(KeyCode::Char(c)), now));
    }
    out
}

/// Types `line` and presses Enter.
pub fn enter_line(app: &mut App, line: &str, now: UnixMs) -> Vec<UiCommand> {
    let mut out = type_str(app, line, now);
    out.extend(app.handle_key(key(KeyCode::Enter), now));
    out
}

/// Draws the app on a `w`×`h` test terminal and returns the buffer.
pub fn draw(app: &mut App, w: u16, h: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test backend never fails");
    terminal
        .draw(|f| app.render(f))
        .expect("test backend never fails");
    terminal.backend().buffer().clone()
}

/// The screen as text rows: wide glyphs once (their hidden second cell skipped).
pub fn rows(buf: &Buffer) -> Vec<String> {
    let area = buf.area;
    (0..area.height)
        .map(|y| {
            let mut row = String::new();
            let mut skip = 0;
            for x in 0..area.width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let sym = buf[(x, y)].symbol();
                skip = sym.width().saturating_sub(1);
                row.push_str(sym);
            }
            row
        })
        .collect()
}

pub fn screen(app: &mut App, w: u16, h: u16) -> Vec<String> {
    rows(&draw(app, w, h))
}

/// The index of the first row containing `needle`.
pub fn find_row(rows: &[String], needle: &str) -> Option<usize> {
    rows.iter().position(|r| r.contains(needle))
}

pub fn dump(rows: &[String]) -> String {
    rows.join("\n")
}

/// The screen column where `needle` starts in `row`.
pub fn col_of(row: &str, needle: &str) -> u16 {
    let at = row.find(needle).expect("needle in row");
    row[..at].width() as u16
}
