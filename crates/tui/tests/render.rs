//! Rendering tests: the App drawn on ratatui's `TestBackend`, read back as text.

mod support;

use std::time::Duration;

use chirp_tui::{BufferId, ChatMessage, LinkPath, LinkState, LinkStatus, UiEvent};
use crossterm::event::KeyCode;
use ratatui::style::{Color, Modifier};
use support::*;
use unicode_width::UnicodeWidthStr;

#[test]
fn layout_has_buffer_list_title_messages_members_status_and_input() {
    let mut app = app();
    join(&mut app, "#rust", &["alice", "bob"]);
    app.handle_event(
        UiEvent::Topic {
            room: "#rust".into(),
            topic: Some("all things rust".into()),
            by: None,
            ts: T0,
        },
        T0,
    );
    say(&mut app, room("#rust"), 1, "alice", "hello there", T0 + MIN);
    let s = screen(&mut app, 80, 12);
    let text = dump(&s);
    // Buffer list on the left, with numbers.
    assert!(s[0].starts_with(" 1 status"), "{text}");
    assert!(s[1].starts_with(" 2 #rust"), "{text}");
    // Title row with the topic.
    assert!(s[0].contains("#rust — all things rust"), "{text}");
    // Member list on the right, with a count.
    assert!(s[0].contains("3 members"), "{text}");
    assert!(find_row(&s, "│alice").is_some(), "{text}");
    // The message, with its local (here UTC) time, bottom of the pane.
    let row = find_row(&s, "<alice> hello there").expect("message shown");
    assert!(s[row].contains("10:01 <alice> hello there"), "{text}");
    assert_eq!(row, 9, "messages sit at the bottom of the pane:\n{text}");
    // Status bar and input line at the bottom.
    assert!(s[10].contains("connecting…"), "{text}");
    assert!(s[11].starts_with("[#rust] "), "{text}");
}

#[test]
fn unread_and_highlight_counts_in_buffer_list_and_cleared_on_switch() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    join(&mut app, "#b", &["bob"]);
    // We are in #b now; #a gets three messages, one mentioning us.
    say(&mut app, room("#a"), 1, "alice", "one", T0);
    say(&mut app, room("#a"), 2, "alice", "two", T0);
    say(&mut app, room("#a"), 3, "alice", "hey me, look", T0);
    // A DM counts as a highlight too.
    say(
        &mut app,
        BufferId::Dm("carol".into()),
        4,
        "carol",
        "psst",
        T0,
    );
    let s = screen(&mut app, 80, 12);
    let text = dump(&s);
    assert!(
        s[1].starts_with(" 2 #a") && s[1][..15].trim_end().ends_with("1!"),
        "{text}"
    );
    assert!(s[2].starts_with(" 3 #b"), "{text}");
    assert!(
        s[3].starts_with(" 4 carol") && s[3][..15].trim_end().ends_with("1!"),
        "{text}"
    );
    assert_eq!(
        app.buffer_list()[1],
        (room("#a"), 3, 1),
        "three unread, one highlight"
    );
    // The current buffer never counts.
    say(&mut app, room("#b"), 5, "bob", "here", T0);
    assert_eq!(app.buffer_list()[2].1, 0);
    // Switching to #a clears its counts.
    app.handle_key(alt('2'), T0);
    assert_eq!(app.current_buffer(), &room("#a"));
    assert_eq!(app.buffer_list()[1], (room("#a"), 0, 0));
    let s = screen(&mut app, 80, 12);
    assert!(!s[1][..15].trim_end().ends_with('!'), "{}", dump(&s));
}

#[test]
fn narrow_terminal_shows_activity_in_status_bar() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    join(&mut app, "#b", &[]);
    say(&mut app, room("#a"), 1, "x", "hi", T0);
    say(&mut app, room("#a"), 2, "x", "hi me", T0);
    let s = screen(&mut app, 40, 10);
    assert!(s[8].contains("act 2!"), "{}", dump(&s));
    assert!(
        s[0].contains("3:#b"),
        "title carries the number: {}",
        dump(&s)
    );
}

#[test]
fn unread_marker_line_where_you_left_off() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    say(&mut app, room("#a"), 1, "alice", "seen before", T0);
    join(&mut app, "#b", &[]); // switches away from #a
    say(&mut app, room("#a"), 2, "alice", "new one", T0 + MIN);
    say(&mut app, room("#a"), 3, "alice", "new two", T0 + MIN);
    app.handle_key(alt('2'), T0 + 2 * MIN);
    let s = screen(&mut app, 60, 14);
    let text = dump(&s);
    let seen = find_row(&s, "seen before").expect("old line");
    let marker = find_row(&s, "new messages").expect("marker line");
    let new = find_row(&s, "new one").expect("new line");
    assert!(seen < marker && marker < new, "{text}");
    assert!(s[marker].contains("── new messages ──"), "{text}");
    // Leaving with nothing new and coming back: no marker.
    app.handle_key(alt('3'), T0 + 3 * MIN);
    app.handle_key(alt('2'), T0 + 3 * MIN);
    let s = screen(&mut app, 60, 14);
    assert!(find_row(&s, "new messages").is_none(), "{}", dump(&s));
}

#[test]
fn day_change_line_between_days() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    say(&mut app, room("#a"), 1, "x", "late", T0 + 13 * 60 * MIN); // 23:00
    say(&mut app, room("#a"), 2, "x", "early", T0 + 15 * 60 * MIN); // 01:00 next day
    let s = screen(&mut app, 60, 12);
    let text = dump(&s);
    let late = find_row(&s, "late").expect("first");
    let day = find_row(&s, "Thu 3 Dec 2026").expect("day-change line");
    let early = find_row(&s, "early").expect("second");
    assert!(late < day && day < early, "{text}");
    assert!(s[early].contains("01:00"), "{text}");
}

#[test]
fn local_time_uses_the_configured_offset() {
    let mut app = app();
    app.set_utc_offset(2 * 3600);
    join(&mut app, "#a", &[]);
    say(&mut app, room("#a"), 1, "x", "hi", T0);
    let s = screen(&mut app, 60, 12);
    assert!(find_row(&s, "12:00 <x> hi").is_some(), "{}", dump(&s));
}

/// Rows of the message pane that hold `needle`'s message, from its first row to the row
/// before the next blank/other prefix.
fn message_rows(s: &[String], first: &str, count: usize, from_col: usize) -> Vec<String> {
    let start = find_row(s, first).expect("message present");
    s[start..start + count]
        .iter()
        .map(|r| r.chars().skip(from_col).collect::<String>())
        .collect()
}

#[test]
fn long_text_wraps_with_a_hanging_indent() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    let text = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor";
    say(&mut app, room("#a"), 1, "bob", text, T0);
    // 40 columns: no side panels, the pane is the whole width.
    let s = screen(&mut app, 40, 10);
    let rows = message_rows(&s, "<bob>", 3, 0);
    let dump_ = dump(&s);
    assert!(rows[0].starts_with("10:00 <bob> lorem ipsum"), "{dump_}");
    // Continuation rows start under the text (12 columns: "10:00 <bob> ").
    for r in &rows[1..] {
        assert!(
            r.starts_with("            ") && !r[12..].starts_with(' '),
            "{dump_}"
        );
    }
    let joined: Vec<&str> = rows.iter().flat_map(|r| r.split_whitespace()).collect();
    let words: Vec<&str> = text.split(' ').collect();
    assert_eq!(
        &joined[2..],
        &words[..],
        "every word once, in order: {dump_}"
    );
}

#[test]
fn cjk_and_emoji_wrap_by_display_width() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    let text = "日本語のテキストを折り返す👍🎉漢字かな交じり文";
    say(&mut app, room("#a"), 1, "bob", text, T0);
    let buf = draw(&mut app, 40, 10);
    let s = rows(&buf);
    let start = find_row(&s, "<bob>").expect("message");
    let mut seen = String::new();
    assert!(
        s[start + 2].contains("connecting"),
        "two rows, then the status bar"
    );
    for (i, r) in s[start..start + 2].iter().enumerate() {
        let body = if i == 0 {
            &r[r.find("> ").expect("nick") + 2..]
        } else {
            r.as_str()
        };
        assert!(r.width() <= 40, "row fits: {r:?}");
        seen.push_str(body.trim());
    }
    assert_eq!(seen, text, "{}", dump(&s));
    // The first row is full up to the last column that a wide glyph can take.
    assert!(s[start].width() >= 39, "{}", dump(&s));
    // A wide glyph is never cut at the right edge: the cell after each wide glyph is its
    // hidden half, never the first half of another glyph.
    for y in 0..buf.area.height {
        let last = buf[(39, y)].symbol();
        assert!(last.width() <= 1, "row {y} ends in half a glyph: {last:?}");
    }
}

#[test]
fn status_bar_shows_the_link() {
    let mut app = app();
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Connected,
            fingerprint: Some("abcd-efgh-ijkl-mnop-qrst-uvwx".into()),
            path: None,
            rtt: Some(Duration::from_millis(23)),
            loss_pct_last_minute: Some(1.5),
            retransmissions: 7,
            counters: vec![],
            held: 0,
        }),
        T0,
    );
    assert!(
        !screen(&mut app, 100, 10)[8].contains("direct"),
        "no path outside chirp peer --via"
    );
    let s = screen(&mut app, 100, 10);
    let bar = &s[8];
    assert!(bar.contains("connected"), "{bar}");
    assert!(bar.contains("rtt 23ms"), "{bar}");
    assert!(bar.contains("loss 1.5%"), "{bar}");
    assert!(bar.contains("rtx 7"), "{bar}");
    assert!(bar.contains("fp abcd-efgh-ijk…"), "{bar}");
    // Sub-10 ms RTTs keep a decimal.
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Connected,
            rtt: Some(Duration::from_micros(340)),
            ..LinkStatus::default()
        }),
        T0,
    );
    assert!(screen(&mut app, 100, 10)[8].contains("rtt 0.3ms"));
    // Lines held back by pacing are shown as waiting, and the mark goes once they are sent.
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Connected,
            held: 12,
            ..LinkStatus::default()
        }),
        T0,
    );
    assert!(screen(&mut app, 100, 10)[8].contains("paced: 12 waiting"));
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Connected,
            ..LinkStatus::default()
        }),
        T0,
    );
    assert!(!screen(&mut app, 100, 10)[8].contains("paced"));
}

#[test]
fn status_bar_and_stats_panel_show_the_peer_path() {
    let mut app = app();
    let link = |path| {
        UiEvent::Link(LinkStatus {
            state: LinkState::Connected,
            path: Some(path),
            rtt: Some(Duration::from_millis(80)),
            ..LinkStatus::default()
        })
    };
    app.handle_event(link(LinkPath::Relayed), T0);
    let bar = screen(&mut app, 100, 10)[8].clone();
    assert!(bar.contains("connected │ relayed │ rtt 80ms"), "{bar}");
    app.handle_event(link(LinkPath::Direct), T0);
    let bar = screen(&mut app, 100, 10)[8].clone();
    assert!(bar.contains("connected │ direct │ rtt 80ms"), "{bar}");
    assert!(!bar.contains("relayed"), "{bar}");
    app.handle_key(KeyEvent_f3(), T0);
    let s = screen(&mut app, 100, 24);
    assert!(
        s.iter().any(|l| l.contains("path   direct")),
        "{}",
        s.join("\n")
    );
}

#[test]
fn reconnect_countdown_ticks_down_with_time() {
    let mut app = app();
    assert_eq!(app.poll_timeout(), None, "an idle UI needs no timer");
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Reconnecting { in_secs: 5 },
            ..LinkStatus::default()
        }),
        T0,
    );
    assert!(screen(&mut app, 60, 10)[8].contains("reconnecting in 5s"));
    assert_eq!(app.poll_timeout(), Some(T0 + 1000));
    app.handle_timeout(T0 + 1000);
    assert!(app.take_dirty());
    assert!(screen(&mut app, 60, 10)[8].contains("reconnecting in 4s"));
    app.handle_timeout(T0 + 5000);
    assert_eq!(app.poll_timeout(), None, "countdown over");
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Connected,
            ..LinkStatus::default()
        }),
        T0 + 5200,
    );
    assert_eq!(app.poll_timeout(), None);
    assert!(screen(&mut app, 60, 10)[8].contains("connected"));
}

#[test]
fn small_terminal_40x10() {
    let mut app = app();
    join(&mut app, "#chirp", &["alice", "bob"]);
    say(&mut app, room("#chirp"), 1, "alice", "hi", T0);
    type_str(&mut app, "draft", T0);
    let s = screen(&mut app, 40, 10);
    let text = dump(&s);
    assert_eq!(s.len(), 10);
    assert!(s[0].contains("2:#chirp"), "{text}");
    assert!(find_row(&s, "<alice> hi").is_some(), "{text}");
    assert!(
        !text.contains("members"),
        "no member list at 40 columns: {text}"
    );
    assert!(s[8].contains("connecting"), "{text}");
    assert_eq!(s[9].trim_end(), "[#chirp] draft", "{text}");
}

#[test]
fn any_size_down_to_nothing_draws_without_panicking() {
    let mut app = app();
    join(&mut app, "#chirp", &["alice"]);
    say(
        &mut app,
        room("#chirp"),
        1,
        "alice",
        "日本語 👍 a long line of text to wrap",
        T0,
    );
    app.handle_key(KeyEvent_f3(), T0);
    type_str(&mut app, "some input text that is long", T0);
    for w in 0..=90 {
        for h in 0..=14 {
            draw(&mut app, w, h);
        }
    }
    app.handle_key(key(KeyCode::PageUp), T0);
    for w in [1, 2, 3, 10, 40] {
        draw(&mut app, w, 10);
    }
}

#[allow(non_snake_case)]
fn KeyEvent_f3() -> crossterm::event::KeyEvent {
    key(KeyCode::F(3))
}

#[test]
fn stats_panel_shows_counters_and_rtt_sparkline() {
    let mut app = app();
    for (i, ms) in [20u64, 25, 40, 22].iter().enumerate() {
        app.handle_event(
            UiEvent::Link(LinkStatus {
                state: LinkState::Connected,
                rtt: Some(Duration::from_millis(*ms)),
                counters: vec![("datagrams sent".into(), 1234), ("duplicates".into(), 5)],
                ..LinkStatus::default()
            }),
            T0 + i as u64 * 1000,
        );
    }
    let cmds = enter_line(&mut app, "/stats", T0);
    assert!(cmds.is_empty());
    let buf = draw(&mut app, 80, 20);
    let s = rows(&buf);
    let text = dump(&s);
    assert!(text.contains("link statistics"), "{text}");
    assert!(text.contains("datagrams sent"), "{text}");
    assert!(text.contains("1234"), "{text}");
    assert!(
        text.contains("RTT, last 4 samples: min 20.0ms max 40.0ms"),
        "{text}"
    );
    // The sparkline's bars: the 40 ms sample is the tallest.
    let bars: String = s
        .iter()
        .flat_map(|r| r.chars())
        .filter(|c| "▁▂▃▄▅▆▇█".contains(*c))
        .collect();
    assert!(bars.contains('█'), "{text}");
    // Esc closes it.
    app.handle_key(key(KeyCode::Esc), T0);
    assert!(!dump(&screen(&mut app, 80, 20)).contains("link statistics"));
}

#[test]
fn actions_joins_and_parts_look_different() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    app.handle_event(
        UiEvent::Join {
            room: "#a".into(),
            nick: "bob".into(),
            ts: T0,
        },
        T0,
    );
    app.handle_event(
        UiEvent::Message {
            buffer: room("#a"),
            msg: ChatMessage {
                id: Some(1),
                from: "bob".into(),
                text: "waves".into(),
                action: true,
                ts: T0,
                ..ChatMessage::default()
            },
            own: false,
        },
        T0,
    );
    app.handle_event(
        UiEvent::Part {
            room: "#a".into(),
            nick: "bob".into(),
            reason: Some("bye".into()),
            ts: T0,
        },
        T0,
    );
    let buf = draw(&mut app, 60, 12);
    let s = rows(&buf);
    let text = dump(&s);
    let j = find_row(&s, "--> bob joined #a").expect("join line");
    let a = find_row(&s, "* bob waves").expect("action line");
    let p = find_row(&s, "<-- bob left #a (bye)").expect("part line");
    assert!(j < a && a < p, "{text}");
    // Join/part lines are dim; the action text is italic.
    let x = col_of(&s[j], "-->");
    assert_eq!(buf[(x, j as u16)].fg, Color::DarkGray);
    let col = col_of(&s[a], "waves");
    assert!(
        buf[(col, a as u16)].modifier.contains(Modifier::ITALIC),
        "{text}"
    );
}

#[test]
fn nick_colours_are_stable_across_buffers() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    say(&mut app, room("#a"), 1, "alice", "x", T0);
    let buf = draw(&mut app, 60, 10);
    let s = rows(&buf);
    let y = find_row(&s, "<alice>").expect("line");
    let x = col_of(&s[y], "alice");
    let colour_a = buf[(x, y as u16)].fg;
    join(&mut app, "#b", &[]);
    say(&mut app, room("#b"), 2, "bob", "x", T0);
    say(&mut app, room("#b"), 3, "alice", "y", T0);
    let buf = draw(&mut app, 60, 10);
    let s = rows(&buf);
    let y = find_row(&s, "<alice> y").expect("line");
    let x = col_of(&s[y], "alice");
    assert_eq!(buf[(x, y as u16)].fg, colour_a);
    assert_ne!(colour_a, Color::Reset);
}

#[test]
fn hostile_text_cannot_reach_the_terminal() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    say(
        &mut app,
        room("#a"),
        1,
        "ev\u{1b}il",
        "\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}txet",
        T0,
    );
    let buf = draw(&mut app, 80, 10);
    for cell in buf.content() {
        assert!(
            !cell
                .symbol()
                .chars()
                .any(|c| c.is_control() || c == '\u{202e}'),
            "control character drawn: {:?}",
            cell.symbol()
        );
    }
}

/// The payload of issue 11: a title change, a screen clear, colours, BEL, backspaces and a
/// right-to-left override.
const EVIL: &str =
    "evil \x1b]0;pwned-title\x07 \x1b[2J\x1b[31mred\x1b[0m \x08\x08bs \u{202e}evil-bidi end";

/// Characters that must never reach a terminal cell: every control (ESC, BEL, backspace, CR
/// and the C1 set among them) and the bidi controls. Spelled out here rather than taken from
/// `chirp_tui::safe`, so that the test does not trust the code it checks.
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

fn assert_no_forbidden_cell(buf: &ratatui::buffer::Buffer, what: &str) {
    for (i, cell) in buf.content().iter().enumerate() {
        assert!(
            !cell.symbol().chars().any(forbidden),
            "{what}: cell {i} holds {:?}:\n{}",
            cell.symbol(),
            dump(&rows(buf))
        );
    }
}

/// Every string the network hands the UI — message text, nicks, room and DM names, topics,
/// members, reasons, the key fingerprint and the link state — is drawn with its controls as
/// visible marks (`^[`, `^G`, `<U+202E>`), never as the characters themselves; a multi-line
/// message stays readable, its lines indented under the text.
#[test]
fn network_text_is_shown_as_marks_everywhere() {
    let evil_room = "#ev\x1b[2Jil\u{202e}";
    let evil_nick = "ma\x07llory\u{202e}";
    let mut app = app();
    join(&mut app, evil_room, &[evil_nick, "bob"]);
    app.handle_event(
        UiEvent::Topic {
            room: evil_room.into(),
            topic: Some("top\x1b]0;t\x07ic\u{2066}".into()),
            by: Some(evil_nick.into()),
            ts: T0,
        },
        T0,
    );
    say(&mut app, room(evil_room), 1, evil_nick, EVIL, T0 + MIN);
    say(
        &mut app,
        room(evil_room),
        2,
        "bob",
        "first line\n\tindented\r\x1b[31m",
        T0 + MIN,
    );
    app.handle_event(
        UiEvent::Quit {
            nick: "bob".into(),
            reason: Some("bye\x1b[2J\u{9b}".into()),
            ts: T0 + MIN,
        },
        T0 + MIN,
    );
    say(
        &mut app,
        BufferId::Dm("dm\x1b[1m".into()),
        3,
        "dm\x1b[1m",
        "psst\x08",
        T0 + MIN,
    );
    app.handle_event(
        UiEvent::Link(LinkStatus {
            state: LinkState::Disconnected("gone\x1b[2J".into()),
            fingerprint: Some("fp\x1b[31m".into()),
            ..LinkStatus::default()
        }),
        T0 + MIN,
    );

    // Wide: buffer list, title, messages, member list.
    let buf = draw(&mut app, 160, 16);
    assert_no_forbidden_cell(&buf, "160 columns");
    let s = rows(&buf);
    let text = dump(&s);
    let first = find_row(
        &s,
        "<ma^Gllory<U+202E>> evil ^[]0;pwned-title^G ^[[2J^[[31mred^[[0m",
    )
    .unwrap_or_else(|| panic!("the payload, as marks:\n{text}"));
    assert!(s[first].contains("^H^Hbs <U+202E>evil-bidi end"), "{text}");
    assert!(
        find_row(&s, "#ev^[[2Jil<U+202E> — top^[]0;t^Gic<U+2066>").is_some(),
        "title: {text}"
    );
    assert!(
        find_row(&s, " 2 #ev^[[2Jil").is_some(),
        "buffer list: {text}"
    );
    assert!(
        find_row(&s, " 3 dm^[[1m").is_some(),
        "DM in the buffer list: {text}"
    );
    assert!(find_row(&s, "│ma^Gllory").is_some(), "member list: {text}");
    assert!(find_row(&s, "set the topic").is_some(), "{text}");
    assert!(
        find_row(&s, "bye^[[2J<U+009B>").is_some(),
        "quit reason: {text}"
    );
    assert!(
        find_row(&s, "disconnected: gone^[[2J").is_some(),
        "link state: {text}"
    );
    assert!(find_row(&s, "fp fp^[[31m").is_some(), "fingerprint: {text}");
    assert!(
        find_row(&s, "[#ev^[[2Jil").is_some(),
        "input prompt: {text}"
    );
    // The multi-line message: its second line on a row of its own, under the text, with the
    // tab expanded and the lone CR and ESC shown.
    let y = find_row(&s, "<bob> first line").unwrap_or_else(|| panic!("{text}"));
    let x = col_of(&s[y], "first line");
    assert!(s[y + 1].contains("indented^M^[[31m"), "{text}");
    assert_eq!(col_of(&s[y + 1], "indented"), x + 8, "{text}");

    // Narrow: the buffer list folds into the title and the status bar.
    let buf = draw(&mut app, 50, 12);
    assert_no_forbidden_cell(&buf, "50 columns");
    // The DM buffer, with its name in the title and the input prompt.
    app.handle_key(alt('3'), T0 + MIN);
    let buf = draw(&mut app, 160, 16);
    assert_no_forbidden_cell(&buf, "the DM buffer");
    let s = rows(&buf);
    assert!(find_row(&s, "<dm^[[1m> psst^H").is_some(), "{}", dump(&s));
}
