//! Drawing: the layout, the lines of a buffer, the status bar, the input line and the
//! `/stats` panel. Pure functions of the [`App`]; nothing here changes state except clamping a
//! scroll position that went past the top.
//!
//! ```text
//!  1 status      │ #rust — all things rust                        │3 members
//!  2 #rust       │── Wed 2 Dec 2026 ──────────────────────────────│alice
//!  3 bob       1!│10:00 --> you joined #rust                      │bob
//!                │10:01 <alice> hello there                       │me
//!                │── new messages ────────────────────────────────│
//!                │10:05 * bob waves                               │
//!  connected │ rtt 23ms │ loss 0.4% │ rtx 12 │ fp k3xq-7p2m-vd9…
//! [#rust] input line_
//! ```
//!
//! The buffer list shows from 56 columns on, the member list from 72; below that the title
//! row and status bar carry the buffer's number and the activity. Message rows are wrapped
//! here (see [`crate::text::wrap`]) and drawn as they are, so the width used for scrolling and
//! for drawing is the same.

use chrono::{DateTime, FixedOffset, NaiveDate};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Sparkline};

use crate::api::{BufferId, LinkPath, LinkState, UnixMs};
use crate::app::App;
use crate::buffer::{Buffer, Entry, EntryKind, EventKind, History, SendState};
use crate::safe;
use crate::text::{sanitize, truncate, width, wrap};

/// Width of the buffer list, border included.
const BUFFER_LIST_WIDTH: u16 = 16;
/// Width of the member list, border included.
const MEMBER_LIST_WIDTH: u16 = 16;
/// Narrowest terminal that gets the buffer list.
const BUFFER_LIST_MIN_TERM: u16 = 56;
/// Narrowest terminal that gets the member list.
const MEMBER_LIST_MIN_TERM: u16 = 72;

/// Nick colours: distinct on dark and light backgrounds alike.
const NICK_COLOURS: [Color; 12] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Red,
    Color::LightCyan,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightRed,
];

/// A nick's colour: FNV-1a of the lower-cased nick, so it is the same in every buffer, every
/// run and on every machine (std's hasher promises none of that).
pub(crate) fn nick_colour(nick: &str) -> Color {
    let mut h: u32 = 0x811c_9dc5;
    for b in nick.to_lowercase().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    NICK_COLOURS[h as usize % NICK_COLOURS.len()]
}

const DIM: Style = Style::new().fg(Color::DarkGray);

fn local(ts: UnixMs, offset: i32) -> Option<DateTime<FixedOffset>> {
    let tz = FixedOffset::east_opt(offset).or_else(|| FixedOffset::east_opt(0))?;
    let ms = i64::try_from(ts).ok()?;
    Some(DateTime::from_timestamp_millis(ms)?.with_timezone(&tz))
}

fn hhmm(ts: UnixMs, offset: i32) -> String {
    local(ts, offset).map_or_else(|| "--:--".to_owned(), |t| t.format("%H:%M").to_string())
}

/// Date and time, for lines that may be old (search results): `2026-12-07 10:01`.
pub(crate) fn stamp(ts: UnixMs, offset: i32) -> String {
    local(ts, offset).map_or_else(
        || "----------".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}

fn day(ts: UnixMs, offset: i32) -> Option<NaiveDate> {
    local(ts, offset).map(|t| t.date_naive())
}

/// A full-width rule with a label: `── label ─────`.
fn rule(label: &str, cols: usize, style: Style) -> Line<'static> {
    let label = truncate(label, cols.saturating_sub(4));
    let used = cols.min(3 + width(&label) + 1);
    let rest = cols.saturating_sub(used);
    let text = if cols >= 4 {
        format!("── {label} {}", "─".repeat(rest))
    } else {
        "─".repeat(cols)
    };
    Line::from(Span::styled(text, style))
}

/// What the rows of a buffer depend on besides the buffer.
struct Ctx {
    /// Local time zone.
    offset: i32,
    /// The search match, drawn reversed.
    found: Option<u64>,
    /// Message ids are shown (`#12` after the time).
    ids: bool,
    width: usize,
}

impl Ctx {
    fn of(app: &App, width: usize) -> Ctx {
        Ctx {
            offset: app.config.utc_offset_secs,
            found: app.search.as_ref().and_then(|s| s.found),
            ids: app.ids_shown(),
            width,
        }
    }
}

/// The rows of one entry.
fn entry_lines(ctx: &Ctx, e: &Entry) -> Vec<Line<'static>> {
    let time = format!("{} ", hhmm(e.ts, ctx.offset));
    let mut segs: Vec<(String, Style)> = vec![(time, DIM)];
    let found = ctx.found == Some(e.seq);
    // Index of the segment holding the text: what comes before it is the prefix.
    let text_at;
    match &e.kind {
        EntryKind::Chat {
            id,
            from,
            text,
            action,
            own,
            highlight,
            send,
            edited,
            deleted,
            reactions,
        } => {
            if let Some(id) = id.filter(|_| ctx.ids) {
                segs.push((format!("#{id} "), DIM));
            }
            match send {
                SendState::None => {}
                SendState::Pending { .. } => segs.push(("· ".into(), DIM)),
                SendState::Delivered => segs.push(("✓ ".into(), Style::new().fg(Color::Green))),
                SendState::Failed { .. } => segs.push(("✗ ".into(), Style::new().fg(Color::Red))),
            }
            let nick = sanitize(from);
            let mut nick_style = Style::new()
                .fg(nick_colour(&nick))
                .add_modifier(Modifier::BOLD);
            if *highlight {
                nick_style = nick_style.add_modifier(Modifier::REVERSED);
            }
            let mut text_style = Style::new();
            if *highlight {
                text_style = text_style.fg(Color::Yellow).add_modifier(Modifier::BOLD);
            }
            if *own && matches!(send, SendState::Pending { .. }) {
                text_style = DIM;
            }
            if found {
                text_style = text_style.add_modifier(Modifier::REVERSED);
            }
            if *action {
                segs.push(("* ".into(), Style::new().fg(Color::Magenta)));
                segs.push((nick, nick_style));
                segs.push((" ".into(), Style::new()));
                text_style = text_style.add_modifier(Modifier::ITALIC);
            } else {
                segs.push(("<".into(), DIM));
                segs.push((nick, nick_style));
                segs.push(("> ".into(), DIM));
            }
            text_at = segs.len();
            if *deleted {
                segs.push(("message deleted".into(), DIM.add_modifier(Modifier::ITALIC)));
            } else {
                // Line breaks stay (continuation rows are indented), tabs become spaces, and
                // every control or bidi character is shown as a mark.
                segs.push((safe::text(text).into_owned(), text_style));
            }
            if *edited && !*deleted {
                segs.push((" (edited)".into(), DIM));
            }
            for r in reactions {
                segs.push((
                    format!("  {} {}", sanitize(&r.emoji), r.count),
                    Style::new().fg(Color::Yellow),
                ));
            }
            if let SendState::Failed { reason, .. } = send {
                segs.push((
                    format!("  [not delivered: {}; Alt+R retries]", sanitize(reason)),
                    Style::new().fg(Color::Red),
                ));
            }
        }
        EntryKind::Event { kind, text } => {
            let (mark, style) = match kind {
                EventKind::Join => ("--> ", DIM),
                EventKind::Part | EventKind::Quit => ("<-- ", DIM),
                EventKind::Nick => ("-- ", DIM),
                EventKind::Topic => ("-- ", Style::new().fg(Color::Cyan)),
                EventKind::Info => ("-- ", Style::new()),
                EventKind::Error => (
                    "!! ",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
            };
            let style = if found {
                style.add_modifier(Modifier::REVERSED)
            } else {
                style
            };
            segs.push((mark.into(), style));
            text_at = segs.len();
            segs.push((safe::text(text).into_owned(), style));
        }
    }
    // Continuation rows start under the text, unless the prefix is too wide to leave room.
    let prefix: usize = segs[..text_at].iter().map(|(s, _)| width(s)).sum();
    let indent = if prefix * 2 <= ctx.width { prefix } else { 2 };
    let borrowed: Vec<(&str, Style)> = segs.iter().map(|(s, st)| (s.as_str(), *st)).collect();
    wrap(&borrowed, ctx.width, indent)
}

/// Walks the rows of `b` from the bottom up, in blocks (an entry's rows, or one separator
/// row), handing each with the seq of its entry (`None` for separators) to `f` until it
/// returns false.
fn blocks_rev(ctx: &Ctx, b: &Buffer, mut f: impl FnMut(Option<u64>, Vec<Line<'static>>) -> bool) {
    let n = b.entries.len();
    for i in (0..n).rev() {
        let e = &b.entries[i];
        if !f(Some(e.seq), entry_lines(ctx, e)) {
            return;
        }
        let prev = i.checked_sub(1).map(|p| &b.entries[p]);
        if prev.is_none_or(|p| day(p.ts, ctx.offset) != day(e.ts, ctx.offset)) {
            let label = local(e.ts, ctx.offset)
                .map_or_else(String::new, |t| t.format("%a %-d %b %Y").to_string());
            if !f(None, vec![rule(&label, ctx.width, DIM)]) {
                return;
            }
        }
        if prev.is_some_and(|p| b.marker_after == Some(p.seq)) {
            let marker = rule("new messages", ctx.width, Style::new().fg(Color::LightRed));
            if !f(None, vec![marker]) {
                return;
            }
        }
    }
    let top = match (b.history, &b.id) {
        (_, BufferId::Status) => return,
        (History::More, _) => "PgUp loads older messages",
        (History::Fetching, _) => "loading older messages…",
        (History::Complete, _) => "start of history",
    };
    f(None, vec![rule(top, ctx.width, DIM)]);
}

/// Rows that `entry` adds below `prev` (its own and a day-change line), for keeping a
/// scrolled view still as lines arrive.
pub(crate) fn entry_rows_with_separators(
    app: &App,
    prev: Option<&Entry>,
    entry: &Entry,
    width: usize,
) -> usize {
    let offset = app.config.utc_offset_secs;
    let ctx = Ctx {
        found: None,
        ..Ctx::of(app, width)
    };
    let day_line = prev.is_some_and(|p| day(p.ts, offset) != day(entry.ts, offset));
    entry_lines(&ctx, entry).len() + usize::from(day_line)
}

/// Rows of `b` from the bottom, counting until `limit`.
pub(crate) fn count_rows(app: &App, b: &Buffer, width: usize, limit: usize) -> usize {
    let ctx = Ctx::of(app, width);
    let mut total = 0;
    blocks_rev(&ctx, b, |_, rows| {
        total += rows.len();
        total < limit
    });
    total
}

/// Rows below the entry `seq` (from its last row to the bottom).
pub(crate) fn rows_below(app: &App, b: &Buffer, seq: u64, width: usize) -> usize {
    let ctx = Ctx::of(app, width);
    let mut total = 0;
    blocks_rev(&ctx, b, |s, rows| {
        if s == Some(seq) {
            return false;
        }
        total += rows.len();
        true
    });
    total
}

/// Draws everything.
pub(crate) fn render(app: &mut App, frame: &mut Frame<'_>) {
    let area = frame.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let [main, status, input] = if area.height >= 3 {
        Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area)
    } else {
        // Too small for anything but typing.
        let empty = Rect::new(area.x, area.y, area.width, 0);
        [
            empty,
            empty,
            Rect::new(area.x, area.y + area.height - 1, area.width, 1),
        ]
    };
    let show_list = area.width >= BUFFER_LIST_MIN_TERM;
    let is_room = matches!(app.buffers[app.current].id, BufferId::Room(_));
    let show_members = app.show_members && is_room && area.width >= MEMBER_LIST_MIN_TERM;
    let [list, pane, members] = Layout::horizontal([
        Constraint::Length(if show_list { BUFFER_LIST_WIDTH } else { 0 }),
        Constraint::Min(1),
        Constraint::Length(if show_members { MEMBER_LIST_WIDTH } else { 0 }),
    ])
    .areas(main);
    let [title, messages] = if pane.height >= 2 {
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(pane)
    } else {
        [Rect::new(pane.x, pane.y, pane.width, 0), pane]
    };
    app.msg_area = messages;
    if show_list {
        draw_buffer_list(app, frame, list);
    }
    if show_members {
        draw_members(app, frame, members);
    }
    draw_title(app, frame, title, !show_list);
    draw_messages(app, frame, messages);
    draw_status(app, frame, status, !show_list);
    draw_input(app, frame, input);
    if app.show_stats {
        draw_stats(app, frame, pane);
    }
}

fn draw_buffer_list(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let block = Block::new().borders(Borders::RIGHT).border_style(DIM);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = inner.width as usize;
    let rows = inner.height as usize;
    let start = app.current.saturating_sub(rows.saturating_sub(1));
    let lines: Vec<Line<'_>> = app
        .buffers
        .iter()
        .enumerate()
        .skip(start)
        .take(rows)
        .map(|(i, b)| {
            let count = if b.highlights > 0 {
                format!("{}!", b.highlights)
            } else if b.unread > 0 {
                b.unread.to_string()
            } else {
                String::new()
            };
            let name = truncate(&sanitize(b.id.name()), w.saturating_sub(4 + count.len()));
            let left = format!("{:>2} {name}", i + 1);
            let pad = w.saturating_sub(width(&left) + count.len());
            let mut style = if b.highlights > 0 {
                Style::new()
                    .fg(Color::LightRed)
                    .add_modifier(Modifier::BOLD)
            } else if b.unread > 0 {
                Style::new().add_modifier(Modifier::BOLD)
            } else if matches!(b.id, BufferId::Room(_)) && !b.joined {
                DIM
            } else {
                Style::new()
            };
            if i == app.current {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::from(Span::styled(
                format!("{left}{}{count}", " ".repeat(pad)),
                style,
            ))
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_members(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let b = &app.buffers[app.current];
    let block = Block::new().borders(Borders::LEFT).border_style(DIM);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = inner.width as usize;
    let mut lines = vec![Line::from(Span::styled(
        truncate(&format!("{} members", b.members.len()), w),
        DIM,
    ))];
    lines.extend(b.members.iter().take(inner.height as usize).map(|m| {
        let nick = sanitize(m);
        Line::from(Span::styled(
            truncate(&nick, w),
            Style::new().fg(nick_colour(&nick)),
        ))
    }));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_title(app: &App, frame: &mut Frame<'_>, area: Rect, with_number: bool) {
    if area.height == 0 {
        return;
    }
    let b = &app.buffers[app.current];
    let style = Style::new().bg(Color::DarkGray).fg(Color::White);
    let mut text = if with_number {
        format!("{}:{}", app.current + 1, sanitize(b.id.name()))
    } else {
        sanitize(b.id.name())
    };
    if matches!(b.id, BufferId::Room(_)) && !b.joined {
        text.push_str(" (not joined)");
    }
    if let Some(topic) = &b.topic {
        text.push_str(" — ");
        text.push_str(&sanitize(topic));
    }
    let right = if b.scroll > 0 {
        " ↓ more below (PgDn) "
    } else {
        ""
    };
    let w = area.width as usize;
    let left = truncate(&text, w.saturating_sub(width(right) + 1));
    let pad = w.saturating_sub(width(&left) + width(right) + 1);
    let line = Line::from(vec![
        Span::raw(" "),
        Span::raw(left),
        Span::raw(" ".repeat(pad)),
        Span::styled(right, Style::new().fg(Color::Yellow).bg(Color::DarkGray)),
    ])
    .style(style);
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_messages(app: &mut App, frame: &mut Frame<'_>, area: Rect) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let height = area.height as usize;
    let width = area.width as usize;
    let current = app.current;
    let scroll = app.buffers[current].scroll;
    let want = scroll + height;
    let mut blocks: Vec<Vec<Line<'static>>> = Vec::new();
    let mut total = 0;
    {
        let ctx = Ctx::of(app, width);
        blocks_rev(&ctx, &app.buffers[current], |_, rows| {
            total += rows.len();
            blocks.push(rows);
            total < want
        });
    }
    // Scrolled past the top of what is loaded: stop at the top.
    let scroll = scroll.min(total.saturating_sub(height));
    app.buffers[current].scroll = scroll;
    let mut rows: Vec<Line<'static>> = blocks.into_iter().rev().flatten().collect();
    let end = rows.len() - scroll.min(rows.len());
    rows.truncate(end);
    let start = rows.len().saturating_sub(height);
    let visible: Vec<Line<'static>> = rows.drain(start..).collect();
    // Few lines: keep them at the bottom, next to the input line, as chat clients do.
    let pad = height - visible.len();
    let target = Rect::new(
        area.x,
        area.y + pad as u16,
        area.width,
        visible.len() as u16,
    );
    frame.render_widget(Paragraph::new(visible), target);
}

fn fmt_rtt(rtt: std::time::Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn state_span(app: &App) -> Span<'static> {
    match &app.link.state {
        LinkState::Connecting => Span::styled(
            "connecting…",
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        LinkState::Connected => Span::styled(
            "connected",
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        ),
        LinkState::Reconnecting { .. } => {
            let left = app
                .reconnect_at
                .map_or(0, |at| at.saturating_sub(app.now).div_ceil(1000));
            Span::styled(
                format!("reconnecting in {left}s"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        }
        LinkState::Disconnected(why) => Span::styled(
            format!("disconnected: {}", sanitize(why)),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    }
}

/// `direct`, or `relayed` in yellow: the relay works, but adds a detour.
fn path_span(path: LinkPath) -> Span<'static> {
    match path {
        LinkPath::Direct => Span::styled(path.as_str(), Style::new().fg(Color::Green)),
        LinkPath::Relayed => Span::styled(path.as_str(), Style::new().fg(Color::Yellow)),
    }
}

fn activity(app: &App) -> String {
    let mut act: Vec<String> = Vec::new();
    for (i, b) in app.buffers.iter().enumerate() {
        if b.highlights > 0 {
            act.push(format!("{}!", i + 1));
        } else if b.unread > 0 {
            act.push((i + 1).to_string());
        }
    }
    act.join(",")
}

fn draw_status(app: &App, frame: &mut Frame<'_>, area: Rect, with_activity: bool) {
    if area.height == 0 {
        return;
    }
    let link = &app.link;
    // Narrow terminals get narrow separators, so that RTT, loss and retransmissions fit.
    let sep = if area.width >= 60 { " │ " } else { " " };
    let sep = Span::styled(sep, Style::new().fg(Color::Gray));
    let mut spans = vec![Span::raw(" "), state_span(app)];
    let typing = app.typing_now();
    if !typing.is_empty() {
        spans.push(sep.clone());
        let who = match typing.as_slice() {
            [one] => format!("{} is typing…", sanitize(one)),
            [a, b] => format!("{} and {} are typing…", sanitize(a), sanitize(b)),
            _ => "several people are typing…".to_owned(),
        };
        spans.push(Span::styled(
            who,
            Style::new().fg(Color::White).add_modifier(Modifier::ITALIC),
        ));
    }
    if let Some(path) = link.path {
        spans.push(sep.clone());
        spans.push(path_span(path));
    }
    if let Some(rtt) = link.rtt {
        spans.push(sep.clone());
        spans.push(Span::raw(format!("rtt {}", fmt_rtt(rtt))));
    }
    if let Some(loss) = link.loss_pct_last_minute {
        spans.push(sep.clone());
        let style = if loss >= 5.0 {
            Style::new().fg(Color::LightRed)
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!("loss {loss:.1}%"), style));
    }
    if matches!(link.state, LinkState::Connected) || link.retransmissions > 0 {
        spans.push(sep.clone());
        spans.push(Span::raw(format!("rtx {}", link.retransmissions)));
    }
    if link.held > 0 {
        // Pacing to the server's rate: the user's lines are waiting, not lost.
        spans.push(sep.clone());
        spans.push(Span::styled(
            format!("paced: {} waiting", link.held),
            Style::new().fg(Color::Yellow),
        ));
    }
    if let Some(progress) = &app.file_progress {
        spans.push(sep.clone());
        spans.push(Span::styled(
            sanitize(progress),
            Style::new().fg(Color::LightCyan),
        ));
    }
    if let Some(fp) = &link.fingerprint {
        spans.push(sep.clone());
        spans.push(Span::raw(format!("fp {}", truncate(&sanitize(fp), 14))));
    }
    if with_activity {
        let act = activity(app);
        if !act.is_empty() {
            spans.push(sep.clone());
            spans.push(Span::styled(
                format!("act {act}"),
                Style::new()
                    .fg(Color::LightRed)
                    .add_modifier(Modifier::BOLD),
            ));
        }
    }
    let line = Line::from(spans).style(Style::new().bg(Color::Blue).fg(Color::White));
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_input(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let w = area.width as usize;
    if let Some(search) = &app.search {
        let label = if search.failed {
            "failed search"
        } else {
            "search"
        };
        let prompt = format!("({label}) ");
        let query = sanitize(&search.query);
        let hint = "  Ctrl+R older, Enter keeps, Esc back";
        let line = Line::from(vec![
            Span::styled(prompt.clone(), Style::new().fg(Color::Yellow)),
            Span::raw(query.clone()),
            Span::styled(hint, DIM),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        let x = (width(&prompt) + width(&query)).min(w.saturating_sub(1));
        frame.set_cursor_position((area.x + x as u16, area.y));
        return;
    }
    let b = &app.buffers[app.current];
    let over = app.editor.text().len() > app.config.max_message_bytes;
    let prompt_style = if over {
        Style::new().fg(Color::White).bg(Color::Red)
    } else {
        Style::new().fg(Color::Cyan)
    };
    let prompt = truncate(&format!("[{}] ", sanitize(b.id.name())), w / 3);
    let avail = w.saturating_sub(width(&prompt)).max(1);
    // Newlines (from a paste) show as ↵ so that the whole message stays on one row.
    let shown = |s: &str| sanitize(&s.replace('\n', "↵"));
    let before = shown(&app.editor.text()[..app.editor.cursor()]);
    let after = shown(&app.editor.text()[app.editor.cursor()..]);
    // Scroll horizontally so the cursor stays visible.
    let mut head = before.as_str();
    while width(head) >= avail {
        let mut chars = head.chars();
        chars.next();
        head = chars.as_str();
    }
    let cursor_x = width(&prompt) + width(head);
    let line = Line::from(vec![
        Span::styled(prompt, prompt_style),
        Span::raw(head.to_owned()),
        Span::raw(after),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    frame.set_cursor_position((area.x + cursor_x.min(w - 1) as u16, area.y));
}

fn draw_stats(app: &App, frame: &mut Frame<'_>, pane: Rect) {
    let w = pane.width.min(64);
    let h = pane.height;
    if w < 10 || h < 4 {
        return;
    }
    let area = Rect::new(pane.x + (pane.width - w) / 2, pane.y, w, h);
    frame.render_widget(Clear, area);
    let block = Block::bordered().title(" link statistics — /stats or Esc closes ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let link = &app.link;
    let mut lines = vec![Line::from(vec![Span::raw("state  "), state_span(app)])];
    if let Some(path) = link.path {
        lines.push(Line::from(vec![Span::raw("path   "), path_span(path)]));
    }
    if let Some(fp) = &link.fingerprint {
        lines.push(Line::raw(format!("key    {}", sanitize(fp))));
    }
    let rtt = link.rtt.map_or_else(|| "-".to_owned(), fmt_rtt);
    let loss = link
        .loss_pct_last_minute
        .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}%"));
    lines.push(Line::raw(format!(
        "rtt    {rtt}   loss (1 min) {loss}   retransmissions {}",
        link.retransmissions
    )));
    // Counters in two columns when they fit.
    let cw = inner.width as usize;
    let col = if cw >= 50 { cw / 2 } else { cw };
    let cell = |(name, v): &(String, u64)| {
        let v = v.to_string();
        let name = truncate(&sanitize(name), col.saturating_sub(v.len() + 2));
        let dots = col.saturating_sub(width(&name) + v.len() + 1);
        format!("{name} {}{v}", ".".repeat(dots.saturating_sub(1)))
    };
    let per_row = if col < cw { 2 } else { 1 };
    for chunk in link.counters.chunks(per_row) {
        let text: Vec<String> = chunk.iter().map(cell).collect();
        lines.push(Line::raw(text.join(" ")));
    }
    let spark_h: u16 = if inner.height >= lines.len() as u16 + 4 {
        3
    } else {
        0
    };
    let [text_area, label_area, spark_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(spark_h > 0)),
        Constraint::Length(spark_h),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(lines), text_area);
    if spark_h > 0 {
        let n = spark_area.width as usize;
        let samples: Vec<u64> = app
            .rtt_samples
            .iter()
            .skip(app.rtt_samples.len().saturating_sub(n))
            .copied()
            .collect();
        let label = match (samples.iter().min(), samples.iter().max()) {
            (Some(lo), Some(hi)) => format!(
                "RTT, last {} samples: min {:.1}ms max {:.1}ms",
                samples.len(),
                *lo as f64 / 1000.0,
                *hi as f64 / 1000.0
            ),
            _ => "RTT: no samples yet".to_owned(),
        };
        frame.render_widget(Paragraph::new(Line::styled(label, DIM)), label_area);
        frame.render_widget(
            Sparkline::default()
                .data(&samples)
                .style(Style::new().fg(Color::Green)),
            spark_area,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_colours_are_stable_and_case_blind() {
        // Pinned: a change of hash or palette would recolour everyone's friends.
        assert_eq!(nick_colour("alice"), Color::LightRed);
        assert_eq!(nick_colour("bob"), Color::LightYellow);
        assert_eq!(nick_colour("Alice"), nick_colour("alice"));
        let distinct: std::collections::HashSet<_> =
            ["alice", "bob", "carol", "dave", "erin", "frank"]
                .map(nick_colour)
                .into();
        assert!(distinct.len() >= 4, "nicks spread over the palette");
    }

    #[test]
    fn rules_fill_the_width() {
        for w in 0..30 {
            let line = rule("new messages", w, Style::new());
            assert_eq!(line.width(), w);
        }
    }
}
