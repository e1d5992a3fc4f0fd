//! Key handling and the commands the UI emits.

mod support;

use chirp_tui::{App, BufferId, Config, UiCommand, UiEvent};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use support::*;

fn sends(cmds: &[UiCommand]) -> Vec<(BufferId, String, bool, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            UiCommand::Send {
                buffer,
                text,
                action,
                local_id,
            } => Some((buffer.clone(), text.clone(), *action, *local_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn enter_sends_to_the_current_room_with_a_pending_echo_then_delivered() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    let cmds = enter_line(&mut app, "hello", T0);
    assert_eq!(sends(&cmds), vec![(room("#a"), "hello".into(), false, 1)]);
    assert_eq!(app.input(), "", "the line is cleared");
    let s = screen(&mut app, 60, 10);
    assert!(
        find_row(&s, "10:00 · <me> hello").is_some(),
        "pending: {}",
        dump(&s)
    );
    app.handle_event(
        UiEvent::Delivered {
            local_id: 1,
            id: Some(77),
            ts: Some(T0 + MIN),
        },
        T0 + MIN,
    );
    let s = screen(&mut app, 60, 10);
    assert!(
        find_row(&s, "10:01 ✓ <me> hello").is_some(),
        "delivered: {}",
        dump(&s)
    );
    // The server's echo of the stored message (same id) is not shown twice.
    app.handle_event(
        UiEvent::Message {
            buffer: room("#a"),
            msg: msg(77, "me", "hello", T0 + MIN),
            own: true,
        },
        T0 + MIN,
    );
    let s = screen(&mut app, 60, 10);
    assert_eq!(
        s.iter().filter(|r| r.contains("hello")).count(),
        1,
        "{}",
        dump(&s)
    );
}

#[test]
fn an_echo_that_overtakes_its_delivery_report_confirms_the_pending_line() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    enter_line(&mut app, "same", T0);
    enter_line(&mut app, "same", T0);
    app.handle_event(
        UiEvent::Message {
            buffer: room("#a"),
            msg: msg(5, "me", "same", T0),
            own: true,
        },
        T0,
    );
    let s = screen(&mut app, 60, 10);
    assert!(find_row(&s, "✓ <me> same").is_some(), "{}", dump(&s));
    assert!(
        find_row(&s, "· <me> same").is_some(),
        "the second is still pending: {}",
        dump(&s)
    );
    // The late report for the first send changes nothing; the second's report confirms it.
    app.handle_event(
        UiEvent::Delivered {
            local_id: 1,
            id: Some(5),
            ts: None,
        },
        T0,
    );
    app.handle_event(
        UiEvent::Delivered {
            local_id: 2,
            id: Some(6),
            ts: None,
        },
        T0,
    );
    let s = screen(&mut app, 60, 10);
    assert_eq!(
        s.iter().filter(|r| r.contains("✓ <me> same")).count(),
        2,
        "{}",
        dump(&s)
    );
}

#[test]
fn failed_message_is_marked_and_alt_r_retries_with_the_same_local_id() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    enter_line(&mut app, "important", T0);
    app.handle_event(
        UiEvent::Failed {
            local_id: 1,
            reason: "server unreachable".into(),
        },
        T0,
    );
    let s = screen(&mut app, 140, 10);
    let row = find_row(&s, "✗ <me> important").expect("failed marker");
    assert!(
        s[row].contains("not delivered: server unreachable; Alt+R retries"),
        "{}",
        dump(&s)
    );
    let cmds = app.handle_key(alt('r'), T0);
    assert_eq!(
        sends(&cmds),
        vec![(room("#a"), "important".into(), false, 1)]
    );
    let s = screen(&mut app, 100, 10);
    assert!(
        find_row(&s, "· <me> important").is_some(),
        "pending again: {}",
        dump(&s)
    );
    // Nothing left to retry.
    assert!(sends(&app.handle_key(alt('r'), T0)).is_empty());
}

#[test]
fn over_limit_message_is_refused_and_kept_in_the_input_line() {
    let mut app = App::new(Config {
        max_message_bytes: 10,
        ..Config::default()
    });
    app.handle_event(UiEvent::SelfNick("me".into()), T0);
    join(&mut app, "#a", &[]);
    let cmds = enter_line(&mut app, "exactly 10", T0);
    assert_eq!(sends(&cmds).len(), 1, "the limit itself is fine");
    let cmds = enter_line(&mut app, "eleven byte", T0);
    assert!(cmds.is_empty(), "{cmds:?}");
    assert_eq!(app.input(), "eleven byte");
    let s = screen(&mut app, 100, 10);
    assert!(
        find_row(&s, "message not sent: 11 bytes, the limit is 10 (1 over)").is_some(),
        "{}",
        dump(&s)
    );
    // The server can announce its own limit.
    app.handle_event(UiEvent::MessageLimit(100), T0);
    let cmds = app.handle_key(key(KeyCode::Enter), T0);
    assert_eq!(sends(&cmds).len(), 1);
    assert_eq!(app.input(), "");
}

#[test]
fn default_limit_is_8_kib() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    app.handle_paste(&"x".repeat(8 * 1024 + 1), T0);
    // What the paste made the App send by itself (a typing notice), as the runner takes it.
    assert_eq!(
        app.take_commands(),
        vec![UiCommand::Typing { buffer: room("#a") }]
    );
    assert!(app.handle_key(key(KeyCode::Enter), T0).is_empty());
    app.handle_key(key(KeyCode::Backspace), T0);
    assert_eq!(sends(&app.handle_key(key(KeyCode::Enter), T0)).len(), 1);
}

#[test]
fn multi_line_paste_is_one_message() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    type_str(&mut app, "see: ", T0);
    app.handle_paste("line one\r\nline two\nline three", T0);
    let s = screen(&mut app, 80, 10);
    assert!(
        s[9].contains("see: line one↵line two↵line three"),
        "{}",
        dump(&s)
    );
    let cmds = app.handle_key(key(KeyCode::Enter), T0);
    assert_eq!(
        sends(&cmds),
        vec![(
            room("#a"),
            "see: line one\nline two\nline three".into(),
            false,
            1
        )]
    );
    let s = screen(&mut app, 80, 10);
    let first = find_row(&s, "<me> see: line one").expect("first line");
    assert!(
        s[first + 1].contains("line two") && s[first + 2].contains("line three"),
        "{}",
        dump(&s)
    );
}

#[test]
fn slash_commands() {
    let mut app = app();
    assert_eq!(
        enter_line(&mut app, "/join rust", T0),
        vec![UiCommand::Join {
            room: "#rust".into()
        }]
    );
    join(&mut app, "#rust", &["alice"]);
    assert_eq!(
        sends(&enter_line(&mut app, "/me waves", T0)),
        vec![(room("#rust"), "waves".into(), true, 1)]
    );
    assert_eq!(
        enter_line(&mut app, "/topic new topic", T0),
        vec![UiCommand::Topic {
            room: "#rust".into(),
            topic: Some("new topic".into())
        }]
    );
    assert_eq!(
        enter_line(&mut app, "/nick me2", T0),
        vec![UiCommand::Nick { nick: "me2".into() }]
    );
    assert_eq!(enter_line(&mut app, "/list", T0), vec![UiCommand::List]);
    assert_eq!(
        enter_line(&mut app, "/who", T0),
        vec![UiCommand::Who {
            room: "#rust".into()
        }]
    );
    assert_eq!(
        enter_line(&mut app, "/part bye all", T0),
        vec![UiCommand::Part {
            room: "#rust".into(),
            reason: Some("bye all".into())
        }]
    );
    // /msg sends to the conversation and stays in the room (bug 3); /query opens it.
    let cmds = enter_line(&mut app, "/msg bob hi there", T0);
    assert_eq!(
        sends(&cmds),
        vec![(BufferId::Dm("bob".into()), "hi there".into(), false, 2)]
    );
    assert_eq!(app.current_buffer(), &room("#rust"));
    assert!(enter_line(&mut app, "/query bob", T0).is_empty());
    assert_eq!(app.current_buffer(), &BufferId::Dm("bob".into()));
    // A doubled slash sends the text with one slash.
    assert_eq!(
        sends(&enter_line(&mut app, "//not a command", T0)),
        vec![(
            BufferId::Dm("bob".into()),
            "/not a command".into(),
            false,
            3
        )]
    );
    // Unknown commands are errors and stay in the line.
    assert!(enter_line(&mut app, "/frobnicate", T0).is_empty());
    assert_eq!(app.input(), "/frobnicate");
    app.handle_key(ctrl('u'), T0);
    assert_eq!(
        enter_line(&mut app, "/quit gone fishing", T0),
        vec![UiCommand::Quit {
            reason: Some("gone fishing".into())
        }]
    );
}

#[test]
fn open_shows_a_conversation_ready_for_typing() {
    let mut app = app();
    app.handle_event(UiEvent::Open(BufferId::Dm("peer".into())), T0);
    assert_eq!(app.current_buffer(), &BufferId::Dm("peer".into()));
    assert_eq!(
        sends(&enter_line(&mut app, "hi", T0)),
        vec![(BufferId::Dm("peer".into()), "hi".into(), false, 1)]
    );
    // Opening it again keeps one buffer.
    app.handle_event(UiEvent::Open(BufferId::Dm("peer".into())), T0);
    assert_eq!(app.buffer_list().len(), 2);
}

/// Bug 3: `/msg nick text` sends privately and stays where the user was, so the next line,
/// meant for the room, does not go to the DM by surprise.
#[test]
fn msg_sends_privately_and_stays_in_the_room() {
    let mut app = app();
    join(&mut app, "#rust", &["bob"]);
    assert_eq!(
        sends(&enter_line(&mut app, "/msg bob hi", T0)),
        vec![(BufferId::Dm("bob".into()), "hi".into(), false, 1)]
    );
    assert_eq!(app.current_buffer(), &room("#rust"));
    assert_eq!(
        sends(&enter_line(&mut app, "for everyone", T0)),
        vec![(room("#rust"), "for everyone".into(), false, 2)]
    );
    // The DM's buffer exists (the private line is shown there), without being shown.
    assert!(
        app.buffer_list()
            .iter()
            .any(|(b, _, _)| *b == BufferId::Dm("bob".into()))
    );
    // `/msg nick` without text sends nothing and does not switch either.
    assert!(enter_line(&mut app, "/msg bob", T0).is_empty());
    assert_eq!(app.current_buffer(), &room("#rust"));
    assert_eq!(app.input(), "/msg bob", "the refused line stays for fixing");
    let s = screen(&mut app, 100, 12);
    assert!(
        find_row(&s, "usage: /msg NICK TEXT").is_some(),
        "{}",
        dump(&s)
    );
}

/// `/query nick` opens the conversation and shows it; with text it sends there too.
#[test]
fn query_opens_the_conversation_and_switches_to_it() {
    let mut app = app();
    join(&mut app, "#rust", &["bob"]);
    assert!(enter_line(&mut app, "/query bob", T0).is_empty());
    assert_eq!(app.current_buffer(), &BufferId::Dm("bob".into()));
    assert_eq!(
        sends(&enter_line(&mut app, "just us", T0)),
        vec![(BufferId::Dm("bob".into()), "just us".into(), false, 1)]
    );
    app.handle_key(alt('2'), T0);
    assert_eq!(app.current_buffer(), &room("#rust"));
    assert_eq!(
        sends(&enter_line(&mut app, "/q carol hello there", T0)),
        vec![(BufferId::Dm("carol".into()), "hello there".into(), false, 2)]
    );
    assert_eq!(app.current_buffer(), &BufferId::Dm("carol".into()));
}

/// Bug 2, in the UI: only the server's answer to a join (our own `Join` event) changes where
/// text goes; a refused `/join` leaves the current buffer as it was.
#[test]
fn a_refused_join_does_not_change_the_current_buffer() {
    let mut app = app();
    join(&mut app, "#rust", &["bob"]);
    assert_eq!(
        enter_line(&mut app, "/join nohash", T0),
        vec![UiCommand::Join {
            room: "#nohash".into()
        }]
    );
    assert_eq!(app.current_buffer(), &room("#rust"));
    app.handle_event(
        UiEvent::Error("bad_name: room names start with '#'".into()),
        T0,
    );
    assert_eq!(app.current_buffer(), &room("#rust"));
    assert_eq!(
        sends(&enter_line(&mut app, "still here", T0)),
        vec![(room("#rust"), "still here".into(), false, 1)]
    );
    assert_eq!(app.buffer_list().len(), 2, "no buffer for the refused room");
}

/// `/history` is line mode's; the UI has PgUp for it, and says so rather than sending the
/// line, whatever the argument (`-5` included).
#[test]
fn history_in_the_ui_points_to_page_up() {
    let mut app = app();
    join(&mut app, "#rust", &["bob"]);
    for (i, line) in ["/history", "/history 5", "/history -5"]
        .into_iter()
        .enumerate()
    {
        assert!(enter_line(&mut app, line, T0).is_empty(), "{line}");
        assert_eq!(app.input(), line);
        let s = screen(&mut app, 120, 12);
        assert!(find_row(&s, "join a room first").is_none(), "{}", dump(&s));
        let said = s
            .iter()
            .filter(|r| r.contains("/history") && r.contains("PgUp"));
        assert_eq!(said.count(), i + 1, "{line}: {}", dump(&s));
        app.handle_key(ctrl('u'), T0);
    }
}

#[test]
fn nothing_is_sent_from_the_status_buffer() {
    let mut app = app();
    assert!(enter_line(&mut app, "hello?", T0).is_empty());
    assert_eq!(app.input(), "hello?");
    let s = screen(&mut app, 100, 10);
    assert!(
        find_row(&s, "nothing is sent from the status buffer").is_some(),
        "{}",
        dump(&s)
    );
}

#[test]
fn ctrl_c_and_ctrl_d_quit() {
    let mut app = app();
    type_str(&mut app, "x", T0);
    assert_eq!(
        app.handle_key(ctrl('c'), T0),
        vec![UiCommand::Quit { reason: None }]
    );
    // Ctrl+D deletes while there is text, quits on an empty line.
    app.handle_key(key(KeyCode::Home), T0);
    assert!(app.handle_key(ctrl('d'), T0).is_empty());
    assert_eq!(app.input(), "");
    assert_eq!(
        app.handle_key(ctrl('d'), T0),
        vec![UiCommand::Quit { reason: None }]
    );
}

#[test]
fn key_releases_are_ignored() {
    let mut app = app();
    let mut release = key(KeyCode::Char('x'));
    release.kind = KeyEventKind::Release;
    app.handle_key(release, T0);
    assert_eq!(app.input(), "");
}

#[test]
fn buffer_navigation() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    join(&mut app, "#b", &[]);
    join(&mut app, "#c", &[]);
    assert_eq!(app.current_buffer(), &room("#c"));
    app.handle_key(ctrl('n'), T0);
    assert_eq!(app.current_buffer(), &BufferId::Status, "wraps around");
    app.handle_key(ctrl('p'), T0);
    assert_eq!(app.current_buffer(), &room("#c"));
    app.handle_key(alt('2'), T0);
    assert_eq!(app.current_buffer(), &room("#a"));
    app.handle_key(alt('9'), T0);
    assert_eq!(app.current_buffer(), &room("#a"), "no buffer 9: stays");
    enter_line(&mut app, "/buffer #b", T0);
    assert_eq!(app.current_buffer(), &room("#b"));
    enter_line(&mut app, "/buffer 1", T0);
    assert_eq!(app.current_buffer(), &BufferId::Status);
    enter_line(&mut app, "/buffer c", T0);
    assert_eq!(
        app.current_buffer(),
        &room("#c"),
        "a unique part of the name will do"
    );
    // Alt+A: highlights first, then plain unread.
    say(&mut app, room("#a"), 1, "x", "plain", T0);
    say(&mut app, room("#b"), 2, "x", "hey me", T0);
    app.handle_key(alt('a'), T0);
    assert_eq!(app.current_buffer(), &room("#b"));
    app.handle_key(alt('a'), T0);
    assert_eq!(app.current_buffer(), &room("#a"));
    app.handle_key(alt('a'), T0);
    assert_eq!(app.current_buffer(), &room("#a"), "nothing unread: stays");
}

#[test]
fn input_history_is_per_buffer() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    enter_line(&mut app, "in a", T0);
    join(&mut app, "#b", &[]);
    enter_line(&mut app, "in b 1", T0);
    enter_line(&mut app, "in b 2", T0);
    type_str(&mut app, "draft", T0);
    app.handle_key(key(KeyCode::Up), T0);
    assert_eq!(app.input(), "in b 2");
    app.handle_key(key(KeyCode::Up), T0);
    assert_eq!(app.input(), "in b 1");
    app.handle_key(key(KeyCode::Up), T0);
    assert_eq!(app.input(), "in b 1", "oldest reached");
    app.handle_key(key(KeyCode::Down), T0);
    app.handle_key(key(KeyCode::Down), T0);
    assert_eq!(app.input(), "draft");
    app.handle_key(ctrl('u'), T0);
    app.handle_key(alt('2'), T0);
    app.handle_key(key(KeyCode::Up), T0);
    assert_eq!(app.input(), "in a");
}

#[test]
fn line_editing_keys() {
    let mut app = app();
    type_str(&mut app, "hello wide world", T0);
    app.handle_key(ctrl('w'), T0);
    assert_eq!(app.input(), "hello wide ");
    app.handle_key(KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL), T0);
    app.handle_key(key(KeyCode::Home), T0);
    type_str(&mut app, ">", T0);
    assert_eq!(app.input(), ">hello wide ");
    app.handle_key(key(KeyCode::End), T0);
    app.handle_key(key(KeyCode::Backspace), T0);
    app.handle_key(alt('b'), T0);
    app.handle_key(alt('d'), T0);
    assert_eq!(app.input(), ">hello ");
    app.handle_key(ctrl('a'), T0);
    app.handle_key(key(KeyCode::Right), T0);
    app.handle_key(ctrl('k'), T0);
    assert_eq!(app.input(), ">");
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT), T0);
    type_str(&mut app, "x", T0);
    assert_eq!(app.input(), ">\nx", "Alt+Enter inserts a newline");
}

#[test]
fn tab_completes_nicks_commands_and_rooms() {
    let mut app = app();
    join(&mut app, "#chirp", &["alice", "albert", "bob"]);
    say(&mut app, room("#chirp"), 1, "albert", "hi", T0);
    type_str(&mut app, "al", T0);
    app.handle_key(key(KeyCode::Tab), T0);
    assert_eq!(app.input(), "albert: ", "the most recent speaker first");
    app.handle_key(key(KeyCode::Tab), T0);
    assert_eq!(app.input(), "alice: ");
    app.handle_key(key(KeyCode::BackTab), T0);
    assert_eq!(app.input(), "albert: ");
    app.handle_key(ctrl('u'), T0);
    type_str(&mut app, "/sta", T0);
    app.handle_key(key(KeyCode::Tab), T0);
    assert_eq!(app.input(), "/stats ");
    app.handle_key(ctrl('u'), T0);
    app.handle_event(
        UiEvent::RoomList(vec![chirp_tui::RoomInfo {
            name: "#chatter".into(),
            members: 3,
            topic: None,
        }]),
        T0,
    );
    type_str(&mut app, "/join #cha", T0);
    app.handle_key(key(KeyCode::Tab), T0);
    assert_eq!(
        app.input(),
        "/join #chatter ",
        "rooms from /list complete too"
    );
}

#[test]
fn highlights_ring_the_bell_unless_switched_off() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    say(&mut app, room("#a"), 1, "x", "nothing for you", T0);
    assert!(!app.take_bell());
    say(&mut app, room("#a"), 2, "x", "MeMe is not you", T0);
    assert!(!app.take_bell(), "a nick inside a word is no mention");
    say(&mut app, room("#a"), 3, "x", "hey me: ping", T0);
    assert!(app.take_bell());
    assert!(!app.take_bell(), "rings once");
    let s = screen(&mut app, 60, 10);
    assert!(find_row(&s, "hey me: ping").is_some());
    enter_line(&mut app, "/bell off", T0);
    say(&mut app, room("#a"), 4, "x", "me again", T0);
    assert!(!app.take_bell());
}

#[test]
fn page_up_fetches_older_history_once_past_what_is_loaded() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    for i in 0..30 {
        say(
            &mut app,
            room("#a"),
            100 + i,
            "x",
            &format!("message {i}"),
            T0 + i,
        );
    }
    draw(&mut app, 60, 10); // pane: 7 rows
    let mut fetches = Vec::new();
    for _ in 0..10 {
        for c in app.handle_key(key(KeyCode::PageUp), T0) {
            fetches.push(c);
        }
        draw(&mut app, 60, 10);
    }
    assert_eq!(
        fetches,
        vec![UiCommand::FetchHistory {
            buffer: room("#a"),
            before_id: Some(100),
            limit: 100
        }],
        "one fetch, for messages older than the oldest loaded"
    );
    let s = screen(&mut app, 60, 10);
    assert!(
        find_row(&s, "message 0").is_some(),
        "at the top: {}",
        dump(&s)
    );
    assert!(
        find_row(&s, "loading older messages").is_some(),
        "{}",
        dump(&s)
    );
    // The page arrives: it goes above, the view stays where it was.
    app.handle_event(
        UiEvent::HistoryPage {
            buffer: room("#a"),
            messages: (0..5)
                .map(|i| {
                    (
                        msg(90 + i, "old", &format!("older {i}"), T0 - 10 + i),
                        false,
                    )
                })
                .collect(),
            more: false,
        },
        T0,
    );
    let s2 = screen(&mut app, 60, 10);
    assert_eq!(
        s[3..8],
        s2[3..8],
        "view kept (the day line above moved up with the page)"
    );
    app.handle_key(key(KeyCode::PageUp), T0);
    let s = screen(&mut app, 60, 10);
    assert!(find_row(&s, "older 0").is_some(), "{}", dump(&s));
    assert!(find_row(&s, "start of history").is_some(), "{}", dump(&s));
    assert!(
        app.handle_key(key(KeyCode::PageUp), T0).is_empty(),
        "no more to fetch"
    );
    // History is not unread.
    assert_eq!(app.buffer_list()[1].1, 0);
    // Esc returns to the bottom.
    app.handle_key(key(KeyCode::Esc), T0);
    let s = screen(&mut app, 60, 10);
    assert!(find_row(&s, "message 29").is_some(), "{}", dump(&s));
}

#[test]
fn scrolled_view_stays_put_while_messages_arrive() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    for i in 0..20 {
        say(&mut app, room("#a"), i + 1, "x", &format!("m{i}"), T0);
    }
    draw(&mut app, 60, 10);
    app.handle_key(key(KeyCode::PageUp), T0);
    let before = screen(&mut app, 60, 10);
    assert!(before[0].contains("more below"), "{}", dump(&before));
    say(
        &mut app,
        room("#a"),
        50,
        "x",
        "a long new message that wraps over two rows of this pane for sure",
        T0,
    );
    let after = screen(&mut app, 60, 10);
    assert_eq!(
        before[1..8],
        after[1..8],
        "{}\n--\n{}",
        dump(&before),
        dump(&after)
    );
}

#[test]
fn ctrl_r_searches_loaded_history() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    say(&mut app, room("#a"), 1, "x", "the needle is here", T0);
    for i in 0..20 {
        say(&mut app, room("#a"), 10 + i, "x", &format!("hay {i}"), T0);
    }
    say(&mut app, room("#a"), 50, "x", "another needle", T0);
    for i in 0..20 {
        say(&mut app, room("#a"), 60 + i, "x", &format!("straw {i}"), T0);
    }
    draw(&mut app, 60, 12);
    app.handle_key(ctrl('r'), T0);
    type_str(&mut app, "NEEDLE", T0);
    let s = screen(&mut app, 60, 12);
    assert!(
        find_row(&s, "another needle").is_some(),
        "newest match first: {}",
        dump(&s)
    );
    assert!(s[11].starts_with("(search) NEEDLE"), "{}", dump(&s));
    app.handle_key(ctrl('r'), T0);
    let s = screen(&mut app, 60, 12);
    assert!(
        find_row(&s, "the needle is here").is_some(),
        "older match: {}",
        dump(&s)
    );
    app.handle_key(ctrl('r'), T0);
    let s = screen(&mut app, 60, 12);
    assert!(s[11].starts_with("(failed search)"), "{}", dump(&s));
    // Enter keeps the view and returns to the input line.
    app.handle_key(key(KeyCode::Enter), T0);
    let s = screen(&mut app, 60, 12);
    assert!(find_row(&s, "the needle is here").is_some());
    assert!(s[11].starts_with("[#a]"), "{}", dump(&s));
    // Again for another word (`/search` asks the server now: tests/amend.rs).
    app.handle_key(ctrl('r'), T0);
    type_str(&mut app, "straw 3", T0);
    let s = screen(&mut app, 60, 12);
    assert!(find_row(&s, "straw 3").is_some(), "{}", dump(&s));
    app.handle_key(key(KeyCode::Esc), T0);
    let s = screen(&mut app, 60, 12);
    assert!(
        find_row(&s, "straw 19").is_some(),
        "Esc: back at the bottom: {}",
        dump(&s)
    );
}

#[test]
fn member_list_toggles() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    assert!(dump(&screen(&mut app, 80, 10)).contains("2 members"));
    app.handle_key(alt('m'), T0);
    assert!(!dump(&screen(&mut app, 80, 10)).contains("2 members"));
    enter_line(&mut app, "/members", T0);
    assert!(dump(&screen(&mut app, 80, 10)).contains("2 members"));
}

#[test]
fn members_follow_joins_parts_quits_and_nick_changes() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    app.handle_event(
        UiEvent::Join {
            room: "#a".into(),
            nick: "bob".into(),
            ts: T0,
        },
        T0,
    );
    app.handle_event(
        UiEvent::NickChange {
            old: "alice".into(),
            new: "alicia".into(),
            ts: T0,
        },
        T0,
    );
    app.handle_event(
        UiEvent::Quit {
            nick: "bob".into(),
            reason: None,
            ts: T0,
        },
        T0,
    );
    let s = screen(&mut app, 80, 12);
    let text = dump(&s);
    assert!(
        text.contains("2 members") && text.contains("│alicia") && !text.contains("│bob"),
        "{text}"
    );
    assert!(
        text.contains("alice is now known as alicia") && text.contains("bob quit"),
        "{text}"
    );
    // Our own nick change.
    app.handle_event(
        UiEvent::NickChange {
            old: "me".into(),
            new: "me2".into(),
            ts: T0,
        },
        T0,
    );
    say(&mut app, room("#a"), 9, "alicia", "hi me2", T0);
    assert!(app.take_bell(), "highlights follow the new nick");
}

#[test]
fn network_gone_marks_pending_failed() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    enter_line(&mut app, "lost", T0);
    app.network_gone(T0);
    let s = screen(&mut app, 100, 10);
    assert!(find_row(&s, "✗ <me> lost").is_some(), "{}", dump(&s));
    assert!(s[8].contains("disconnected"), "{}", dump(&s));
}

#[test]
fn idle_app_is_not_dirty() {
    let mut app = app();
    draw(&mut app, 40, 10);
    app.take_dirty();
    assert!(!app.take_dirty());
    // An unbound key changes nothing visible.
    app.handle_key(key(KeyCode::F(12)), T0);
    assert!(!app.take_dirty());
    // An identical link snapshot (1 Hz keep-alive) draws nothing new.
    let status = chirp_tui::LinkStatus::default();
    app.handle_event(UiEvent::Link(status.clone()), T0);
    assert!(!app.take_dirty());
    type_str(&mut app, "x", T0);
    assert!(app.take_dirty());
}

#[test]
fn peer_mode_refuses_server_commands_and_sends_to_the_peer() {
    let mut app = App::new(Config {
        peer: true,
        ..Config::default()
    });
    let peer = BufferId::Dm("127.0.0.1:5002".into());
    app.handle_event(UiEvent::SelfNick("127.0.0.1:5001".into()), T0);
    app.handle_event(UiEvent::Open(peer.clone()), T0);
    for (i, line) in ["/join #rust", "/nick bob", "/msg carol hi", "/list", "/who"]
        .into_iter()
        .enumerate()
    {
        assert!(enter_line(&mut app, line, T0).is_empty(), "{line} was sent");
        assert_eq!(app.input(), line, "the refused line stays for fixing");
        let s = screen(&mut app, 150, 30);
        let cmd = line.split(' ').next().unwrap_or(line);
        let refusals = s
            .iter()
            .filter(|r| r.contains("needs a chat server"))
            .count();
        assert_eq!(refusals, i + 1, "{line}: {}", dump(&s));
        assert!(
            find_row(&s, &format!("{cmd} needs a chat server")).is_some(),
            "{line}: {}",
            dump(&s)
        );
        // Clear the input line for the next one.
        app.handle_key(ctrl('u'), T0);
    }
    // /help lists what works, not what does not.
    assert!(enter_line(&mut app, "/help", T0).is_empty());
    let s = screen(&mut app, 150, 60);
    assert!(
        s.iter()
            .any(|r| r.contains("/stats ") && r.contains("show the link statistics")),
        "{}",
        dump(&s)
    );
    assert!(find_row(&s, "/join #ROOM").is_none(), "{}", dump(&s));
    assert!(find_row(&s, "/nick NICK").is_none(), "{}", dump(&s));
    // Text and actions go to the peer.
    assert_eq!(
        sends(&enter_line(&mut app, "hello", T0)),
        vec![(peer.clone(), "hello".into(), false, 1)]
    );
    assert_eq!(
        sends(&enter_line(&mut app, "/me waves", T0)),
        vec![(peer.clone(), "waves".into(), true, 2)]
    );
    // The peer's conversation cannot be closed: nothing could reopen it.
    assert!(enter_line(&mut app, "/close", T0).is_empty());
    assert_eq!(app.current_buffer(), &peer);
    assert_eq!(app.buffer_list().len(), 2);
    // The same commands work with a server.
    let mut app = support::app();
    assert!(
        enter_line(&mut app, "/join #rust", T0)
            .iter()
            .any(|c| matches!(c, UiCommand::Join { .. }))
    );
}

#[test]
fn a_question_is_answered_only_by_its_deliberate_keys() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    app.handle_event(
        UiEvent::Ask {
            question: "trust key abcd from 127.0.0.1:6000?".into(),
        },
        T0,
    );
    let s = screen(&mut app, 80, 10);
    assert!(
        find_row(&s, "Alt+Y accepts it").is_some(),
        "the question is shown: {}",
        dump(&s)
    );
    // Typing while the question is open, y and n included, is just typing (and tells the
    // room so, once).
    let cmds = type_str(&mut app, "hey you, no", T0);
    assert_eq!(cmds, vec![UiCommand::Typing { buffer: room("#a") }]);
    assert_eq!(app.input(), "hey you, no");
    assert_eq!(app.handle_key(alt('n'), T0), vec![UiCommand::Answer(false)]);
    // Answered: Alt+Y no longer answers anything.
    assert!(app.handle_key(alt('y'), T0).is_empty());

    app.handle_event(
        UiEvent::Ask {
            question: "again?".into(),
        },
        T0,
    );
    assert_eq!(app.handle_key(alt('Y'), T0), vec![UiCommand::Answer(true)]);
}

/// `chirp peer`'s UI answers a question with `/accept` or `/refuse` too, as its line mode
/// does; with no question open they do nothing but say so.
#[test]
fn peer_ui_answers_with_accept_and_refuse() {
    let mut app = App::new(Config {
        peer: true,
        ..Config::default()
    });
    app.handle_event(UiEvent::Open(BufferId::Dm("127.0.0.1:5002".into())), T0);
    assert!(enter_line(&mut app, "/accept", T0).is_empty());
    assert_eq!(app.input(), "/accept");
    let s = screen(&mut app, 100, 12);
    assert!(
        find_row(&s, "no question is open").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_key(ctrl('u'), T0);
    let ask = UiEvent::Ask {
        question: "trust key abcd?".into(),
    };
    app.handle_event(ask.clone(), T0);
    assert_eq!(
        enter_line(&mut app, "/accept", T0),
        vec![UiCommand::Answer(true)]
    );
    assert!(
        enter_line(&mut app, "/refuse", T0).is_empty(),
        "answered already"
    );
    app.handle_key(ctrl('u'), T0);
    app.handle_event(ask, T0);
    assert_eq!(
        enter_line(&mut app, "/REFUSE", T0),
        vec![UiCommand::Answer(false)]
    );
    // A chat server asks no such question: `/refuse` is peer mode's, and `/accept` answers
    // file offers only.
    let mut app = support::app();
    join(&mut app, "#a", &[]);
    assert!(enter_line(&mut app, "/refuse", T0).is_empty());
    let s = screen(&mut app, 120, 12);
    assert!(
        find_row(&s, "/refuse is for chirp peer").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_key(ctrl('u'), T0);
    assert!(enter_line(&mut app, "/accept", T0).is_empty());
    let s = screen(&mut app, 120, 12);
    assert!(
        find_row(&s, "no file offer waits for an answer").is_some(),
        "{}",
        dump(&s)
    );
}

/// `chirp connect`'s UI: `/send NICK PATH` anywhere, `/send PATH` in a DM buffer (to its
/// nick); an offer is answered with Alt+Y or `/decline`, and the progress line shows in the
/// status bar until the transfer ends.
#[test]
fn chat_ui_sends_and_answers_dm_files() {
    let mut app = support::app();
    join(&mut app, "#a", &["bob"]);
    assert_eq!(
        enter_line(&mut app, "/send bob /tmp/a file.txt", T0),
        vec![UiCommand::SendFile {
            to: Some("bob".into()),
            path: "/tmp/a file.txt".into()
        }]
    );
    assert!(
        enter_line(&mut app, "/send /tmp/x", T0).is_empty(),
        "no nick"
    );
    let s = screen(&mut app, 120, 12);
    assert!(
        find_row(&s, "usage: /send NICK PATH").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_key(ctrl('u'), T0);
    // In bob's DM buffer the whole argument is the path, to bob.
    enter_line(&mut app, "/query bob", T0);
    assert_eq!(
        enter_line(&mut app, "/send /tmp/b c", T0),
        vec![UiCommand::SendFile {
            to: Some("bob".into()),
            path: "/tmp/b c".into()
        }]
    );
    // An offer: Alt+Y accepts it.
    app.handle_event(
        UiEvent::FileOffer {
            id: 4,
            text: "bob offers file 4: \"x.bin\" (1.0 MiB, BLAKE3 0123456789abcdef…).".into(),
        },
        T0,
    );
    let s = screen(&mut app, 160, 12);
    assert!(find_row(&s, "Alt+Y accepts it").is_some(), "{}", dump(&s));
    assert_eq!(
        app.handle_key(alt('y'), T0),
        vec![UiCommand::AcceptFile(Some(4))]
    );
    app.handle_event(
        UiEvent::FileProgress(Some("↓4 50% 512.0 KiB/1.0 MiB 1.0 MiB/s ETA 0s".into())),
        T0,
    );
    let s = screen(&mut app, 160, 12);
    assert!(
        find_row(&s, "↓4 50% 512.0 KiB/1.0 MiB").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_event(UiEvent::FileProgress(None), T0);
    let s = screen(&mut app, 160, 12);
    assert!(find_row(&s, "↓4 50%").is_none(), "{}", dump(&s));
    // The sender stops a file with /cancel (the transfers choose without a number).
    assert_eq!(
        enter_line(&mut app, "/cancel 4", T0),
        vec![UiCommand::CancelFile(Some(4))]
    );
    assert_eq!(
        enter_line(&mut app, "/cancel", T0),
        vec![UiCommand::CancelFile(None)]
    );
}

/// The UI's usage errors come from the command table, and the refused line stays.
#[test]
fn usage_errors_name_the_arguments() {
    let mut app = app();
    join(&mut app, "#a", &["bob"]);
    for (line, want) in [
        ("/join", "usage: /join #ROOM"),
        ("/msg bob", "usage: /msg NICK TEXT"),
        ("/query", "usage: /query NICK [TEXT]"),
        ("/me ", "usage: /me TEXT"),
        ("/bell loud", "/bell takes on or off"),
        ("/frob", "unknown command /frob"),
    ] {
        assert!(enter_line(&mut app, line, T0).is_empty(), "{line}");
        assert_eq!(app.input(), line);
        let s = screen(&mut app, 120, 12);
        assert!(find_row(&s, want).is_some(), "{line}: {}", dump(&s));
        app.handle_key(ctrl('u'), T0);
    }
    // Aliases old and new.
    assert_eq!(
        enter_line(&mut app, "/J #b", T0),
        vec![UiCommand::Join { room: "#b".into() }]
    );
    assert_eq!(
        enter_line(&mut app, "/exit", T0),
        vec![UiCommand::Quit { reason: None }]
    );
}
