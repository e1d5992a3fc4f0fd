//! Issue 19 in the UI: edits, deletions and reactions shown in place, message ids, typing
//! notices (sent at the server's rate, shown until they expire), read markers (one per viewed
//! burst; another device's marker lowers the unread count) and the server's search. All in
//! virtual time: every input carries `now`.

mod support;

use chirp_tui::{BufferId, ChatMessage, ReactionCount, UiCommand, UiEvent};
use crossterm::event::KeyCode;
use support::*;

/// The commands of one kind among `cmds`.
fn typing(cmds: &[UiCommand]) -> usize {
    cmds.iter()
        .filter(|c| matches!(c, UiCommand::Typing { .. }))
        .count()
}

fn reads(cmds: &[UiCommand]) -> Vec<(BufferId, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            UiCommand::Read { buffer, id } => Some((buffer.clone(), *id)),
            _ => None,
        })
        .collect()
}

fn unread(app: &chirp_tui::App, name: &str) -> (u32, u32) {
    app.buffer_list()
        .into_iter()
        .find(|(b, _, _)| b.name() == name)
        .map(|(_, u, h)| (u, h))
        .expect("buffer listed")
}

#[test]
fn an_edit_replaces_the_text_and_says_edited() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    say(&mut app, room("#a"), 5, "alice", "helo all", T0);
    say(&mut app, room("#a"), 6, "alice", "next one", T0);
    app.handle_event(
        UiEvent::Edited {
            buffer: room("#a"),
            id: 7,
            target: 5,
            text: "hello all".into(),
        },
        T0 + MIN,
    );
    let s = screen(&mut app, 80, 12);
    let row = find_row(&s, "<alice> hello all (edited)").unwrap_or_else(|| panic!("{}", dump(&s)));
    assert!(
        find_row(&s, "helo all").is_none(),
        "old text gone:\n{}",
        dump(&s)
    );
    assert!(
        row < find_row(&s, "<alice> next one").expect("next"),
        "edited in place, not appended:\n{}",
        dump(&s)
    );
    // An edit of a message not loaded here changes nothing and breaks nothing.
    app.handle_event(
        UiEvent::Edited {
            buffer: room("#a"),
            id: 8,
            target: 99,
            text: "ghost".into(),
        },
        T0 + MIN,
    );
    let s = screen(&mut app, 80, 12);
    assert!(find_row(&s, "ghost").is_none(), "{}", dump(&s));
}

#[test]
fn a_deletion_shows_in_place_and_takes_the_reactions() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    say(&mut app, room("#a"), 5, "alice", "oops, my password", T0);
    say(&mut app, room("#a"), 6, "alice", "after", T0);
    app.handle_event(
        UiEvent::Reaction {
            buffer: room("#a"),
            id: 7,
            target: 5,
            emoji: "😱".into(),
            count: 1,
        },
        T0,
    );
    app.handle_event(
        UiEvent::Deleted {
            buffer: room("#a"),
            id: 8,
            target: 5,
        },
        T0,
    );
    let s = screen(&mut app, 80, 12);
    let row = find_row(&s, "<alice> message deleted").unwrap_or_else(|| panic!("{}", dump(&s)));
    assert!(
        row < find_row(&s, "<alice> after").expect("after"),
        "{}",
        dump(&s)
    );
    assert!(find_row(&s, "password").is_none(), "{}", dump(&s));
    assert!(find_row(&s, "😱").is_none(), "{}", dump(&s));
    // A late edit of a deleted message does not bring text back.
    app.handle_event(
        UiEvent::Edited {
            buffer: room("#a"),
            id: 9,
            target: 5,
            text: "back".into(),
        },
        T0,
    );
    let s = screen(&mut app, 80, 12);
    assert!(find_row(&s, "back").is_none(), "{}", dump(&s));
}

#[test]
fn reactions_show_counts_after_the_message_in_first_use_order() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    say(&mut app, room("#a"), 5, "alice", "ship it", T0);
    let react = |app: &mut chirp_tui::App, id, emoji: &str, count| {
        app.handle_event(
            UiEvent::Reaction {
                buffer: room("#a"),
                id,
                target: 5,
                emoji: emoji.into(),
                count,
            },
            T0,
        );
    };
    react(&mut app, 6, "👍", 1);
    react(&mut app, 7, "🎉", 1);
    react(&mut app, 8, "👍", 2);
    let s = screen(&mut app, 80, 12);
    assert!(
        find_row(&s, "<alice> ship it  👍 2  🎉 1").is_some(),
        "{}",
        dump(&s)
    );
    // Counts are absolute: the last event leaves the server's state; 0 removes it.
    react(&mut app, 9, "👍", 0);
    let s = screen(&mut app, 80, 12);
    assert!(
        find_row(&s, "<alice> ship it  🎉 1").is_some(),
        "{}",
        dump(&s)
    );
    assert!(find_row(&s, "👍").is_none(), "{}", dump(&s));
    // A copy from history carries its state.
    app.handle_event(
        UiEvent::HistoryPage {
            buffer: room("#a"),
            messages: vec![(
                ChatMessage {
                    edited: true,
                    reactions: vec![ReactionCount {
                        emoji: "❤️".into(),
                        count: 3,
                    }],
                    ..msg(2, "bob", "older, fixed", T0 - MIN)
                },
                false,
            )],
            more: false,
        },
        T0,
    );
    let s = screen(&mut app, 80, 12);
    assert!(
        find_row(&s, "<bob> older, fixed (edited)  ❤️ 3").is_some(),
        "{}",
        dump(&s)
    );
}

#[test]
fn text_from_the_network_in_changes_is_made_safe() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    say(&mut app, room("#a"), 5, "alice", "hi", T0);
    app.handle_event(
        UiEvent::Edited {
            buffer: room("#a"),
            id: 6,
            target: 5,
            text: "evil\u{202e}txt\u{1b}[2J".into(),
        },
        T0,
    );
    app.handle_event(
        UiEvent::Reaction {
            buffer: room("#a"),
            id: 7,
            target: 5,
            emoji: "\u{1b}]0;pwned\u{7}".into(),
            count: 1,
        },
        T0,
    );
    let s = screen(&mut app, 80, 12);
    let all = dump(&s);
    assert!(!all.contains('\u{202e}') && !all.contains('\u{1b}') && !all.contains('\u{7}'));
    assert!(find_row(&s, "(edited)").is_some(), "{all}");
}

#[test]
fn ids_show_on_alt_i_and_while_a_command_that_takes_one_is_typed() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    say(&mut app, room("#a"), 12, "alice", "react to me", T0);
    let s = screen(&mut app, 80, 12);
    assert!(
        find_row(&s, "10:00 <alice> react to me").is_some(),
        "{}",
        dump(&s)
    );
    assert!(
        find_row(&s, "#12").is_none(),
        "hidden by default:\n{}",
        dump(&s)
    );
    app.handle_key(alt('i'), T0);
    let s = screen(&mut app, 80, 12);
    assert!(
        find_row(&s, "10:00 #12 <alice> react to me").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_key(alt('i'), T0);
    type_str(&mut app, "/react ", T0);
    let s = screen(&mut app, 80, 12);
    assert!(find_row(&s, "10:00 #12 <alice>").is_some(), "{}", dump(&s));
    app.handle_key(ctrl('u'), T0);
    let s = screen(&mut app, 80, 12);
    assert!(find_row(&s, "#12").is_none(), "{}", dump(&s));
    enter_line(&mut app, "/ids", T0);
    let s = screen(&mut app, 80, 12);
    assert!(find_row(&s, "#12 <alice>").is_some(), "{}", dump(&s));
}

#[test]
fn edit_delete_and_react_become_requests_for_the_current_conversation() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    let cmds = enter_line(&mut app, "/edit 5 hello  all", T0);
    assert!(
        cmds.contains(&UiCommand::Edit {
            buffer: room("#a"),
            id: 5,
            text: "hello  all".into()
        }),
        "{cmds:?}"
    );
    let cmds = enter_line(&mut app, "/del 5", T0);
    assert!(cmds.contains(&UiCommand::Delete {
        buffer: room("#a"),
        id: 5
    }));
    let cmds = enter_line(&mut app, "/react 5 👍", T0);
    assert!(cmds.contains(&UiCommand::React {
        buffer: room("#a"),
        id: 5,
        emoji: "👍".into(),
        remove: false
    }));
    let cmds = enter_line(&mut app, "/unreact 5 👍", T0);
    assert!(cmds.contains(&UiCommand::React {
        buffer: room("#a"),
        id: 5,
        emoji: "👍".into(),
        remove: true
    }));
    // In a DM, to the other party.
    enter_line(&mut app, "/query bob", T0);
    let cmds = enter_line(&mut app, "/delete 3", T0);
    assert!(cmds.contains(&UiCommand::Delete {
        buffer: BufferId::Dm("bob".into()),
        id: 3
    }));
    // Not in the status buffer: said, nothing sent, the line kept.
    app.handle_key(alt('1'), T0);
    let cmds = enter_line(&mut app, "/edit 5 x", T0);
    assert!(cmds.is_empty(), "{cmds:?}");
    assert_eq!(app.input(), "/edit 5 x");
    let s = screen(&mut app, 100, 12);
    assert!(
        find_row(&s, "/edit works in a room or a conversation").is_some(),
        "{}",
        dump(&s)
    );
}

#[test]
fn typing_notices_go_at_most_once_every_three_seconds_per_buffer() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    assert_eq!(typing(&type_str(&mut app, "h", T0)), 1);
    assert_eq!(typing(&type_str(&mut app, "el", T0 + 1_000)), 0);
    assert_eq!(typing(&type_str(&mut app, "l", T0 + 2_999)), 0);
    let cmds = type_str(&mut app, "o", T0 + 3_000);
    assert_eq!(
        cmds,
        vec![UiCommand::Typing { buffer: room("#a") }],
        "again after 3 s"
    );
    // Commands are not messages being written.
    app.handle_key(ctrl('u'), T0 + 3_000);
    assert_eq!(typing(&type_str(&mut app, "/nick bob", T0 + 9_000)), 0);
    app.handle_key(ctrl('u'), T0 + 9_000);
    // `//` starts a message; a paste counts too.
    app.handle_paste("//etc is a path", T0 + 9_000);
    assert_eq!(typing(&app.take_commands()), 1);
    app.handle_key(ctrl('u'), T0 + 9_000);
    // Another buffer has its own pace; the status buffer none.
    enter_line(&mut app, "/query bob", T0 + 9_000);
    assert_eq!(
        type_str(&mut app, "x", T0 + 9_500),
        vec![UiCommand::Typing {
            buffer: BufferId::Dm("bob".into())
        }]
    );
    app.handle_key(alt('1'), T0 + 20_000);
    assert_eq!(typing(&type_str(&mut app, "x", T0 + 20_000)), 0);
}

#[test]
fn someone_typing_shows_until_it_expires_or_their_message_comes() {
    let mut app = app();
    join(&mut app, "#a", &["alice", "bob"]);
    assert_eq!(app.poll_timeout(), None, "an idle UI sleeps");
    app.handle_event(
        UiEvent::Typing {
            buffer: room("#a"),
            nick: "bob".into(),
        },
        T0,
    );
    let s = screen(&mut app, 100, 12);
    assert!(find_row(&s, "bob is typing…").is_some(), "{}", dump(&s));
    assert_eq!(app.poll_timeout(), Some(T0 + 5_000));
    app.handle_event(
        UiEvent::Typing {
            buffer: room("#a"),
            nick: "alice".into(),
        },
        T0 + 1_000,
    );
    let s = screen(&mut app, 100, 12);
    assert!(
        find_row(&s, "bob and alice are typing…").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_timeout(T0 + 4_999);
    let s = screen(&mut app, 100, 12);
    assert!(
        find_row(&s, "bob and alice are typing…").is_some(),
        "{}",
        dump(&s)
    );
    app.handle_timeout(T0 + 5_000);
    let s = screen(&mut app, 100, 12);
    assert!(find_row(&s, "bob").is_some_and(|r| !s[r].contains("typing")));
    assert!(find_row(&s, "alice is typing…").is_some(), "{}", dump(&s));
    assert_eq!(app.poll_timeout(), Some(T0 + 6_000));
    // Her message ends it at once.
    say(&mut app, room("#a"), 3, "alice", "done", T0 + 2_000);
    let s = screen(&mut app, 100, 12);
    assert!(find_row(&s, "typing").is_none(), "{}", dump(&s));
    // Our own notices (another device of ours) are not shown; nor in another buffer.
    app.handle_event(
        UiEvent::Typing {
            buffer: room("#a"),
            nick: "me".into(),
        },
        T0 + 2_000,
    );
    app.handle_event(
        UiEvent::Typing {
            buffer: room("#elsewhere"),
            nick: "carol".into(),
        },
        T0 + 2_000,
    );
    let s = screen(&mut app, 100, 12);
    assert!(find_row(&s, "typing").is_none(), "{}", dump(&s));
}

#[test]
fn a_viewed_buffer_sends_one_marker_for_a_burst() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    for id in 1..=5 {
        say(&mut app, room("#a"), id, "alice", "burst", T0);
    }
    assert!(reads(&app.take_commands()).is_empty(), "not at once");
    assert_eq!(app.poll_timeout(), Some(T0 + 1_000));
    // Keys meanwhile send nothing either.
    assert!(reads(&type_str(&mut app, "ab", T0 + 500)).is_empty());
    app.handle_timeout(T0 + 1_000);
    assert_eq!(reads(&app.take_commands()), vec![(room("#a"), 5)]);
    assert_eq!(app.poll_timeout(), None);
    app.handle_timeout(T0 + 5_000);
    assert!(app.take_commands().is_empty(), "once");
    // An edit moves the newest id too.
    app.handle_event(
        UiEvent::Edited {
            buffer: room("#a"),
            id: 6,
            target: 5,
            text: "b".into(),
        },
        T0 + 6_000,
    );
    app.handle_timeout(T0 + 7_000);
    assert_eq!(reads(&app.take_commands()), vec![(room("#a"), 6)]);
}

#[test]
fn no_marker_while_scrolled_up_or_for_a_buffer_not_in_view() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    join(&mut app, "#b", &["alice"]);
    for id in 1..=60 {
        say(&mut app, room("#b"), id, "alice", "line", T0);
    }
    screen(&mut app, 80, 12);
    app.handle_key(key(KeyCode::PageUp), T0);
    say(&mut app, room("#b"), 61, "alice", "line", T0);
    say(&mut app, room("#a"), 1, "alice", "elsewhere", T0);
    app.handle_timeout(T0 + 10_000);
    assert!(reads(&app.take_commands()).is_empty());
    assert_eq!(app.poll_timeout(), None);
    // Back at the bottom: marked a second later.
    app.handle_key(key(KeyCode::Esc), T0 + 10_000);
    app.handle_timeout(T0 + 11_000);
    assert_eq!(reads(&app.take_commands()), vec![(room("#b"), 61)]);
}

#[test]
fn a_marker_from_another_device_lowers_the_unread_count() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    join(&mut app, "#b", &[]);
    for id in 1..=3 {
        say(&mut app, room("#a"), id, "alice", "hey me", T0);
    }
    assert_eq!(unread(&app, "#a"), (3, 3));
    app.handle_event(
        UiEvent::ReadMarker {
            buffer: room("#a"),
            id: 2,
            unread: 1,
        },
        T0,
    );
    assert_eq!(unread(&app, "#a"), (1, 1));
    app.handle_event(
        UiEvent::ReadMarker {
            buffer: room("#a"),
            id: 3,
            unread: 0,
        },
        T0,
    );
    assert_eq!(unread(&app, "#a"), (0, 0));
    // Read elsewhere: viewing it here sends no marker for what is read already.
    app.handle_key(alt('2'), T0);
    app.handle_timeout(T0 + 2_000);
    assert!(reads(&app.take_commands()).is_empty());
}

#[test]
fn search_asks_the_server_and_shows_pages_newest_first() {
    let mut app = app();
    join(&mut app, "#a", &["alice"]);
    let cmds = enter_line(&mut app, "/search  rocket ", T0);
    assert_eq!(
        cmds,
        vec![UiCommand::Search {
            buffer: room("#a"),
            query: "rocket".into(),
            before: None
        }]
    );
    let hit = |id, text: &str| ChatMessage {
        id: Some(id),
        ..msg(id, "alice", text, T0 - 60 * MIN)
    };
    app.handle_event(
        UiEvent::SearchResults {
            buffer: room("#a"),
            query: "rocket".into(),
            hits: vec![hit(9, "rocket\nlaunch"), hit(4, "a rocket")],
            more: true,
        },
        T0,
    );
    let s = screen(&mut app, 100, 12);
    let first = find_row(&s, "#9 2026-12-02 09:00 <alice> rocket ↵ launch")
        .unwrap_or_else(|| panic!("{}", dump(&s)));
    let second = find_row(&s, "#4 2026-12-02 09:00 <alice> a rocket").expect("second hit");
    assert!(first < second, "newest first:\n{}", dump(&s));
    assert!(
        find_row(&s, "search for \"rocket\" in #a: 2 matches").is_some(),
        "{}",
        dump(&s)
    );
    // The same again: the next page, below the last hit.
    let cmds = enter_line(&mut app, "/search rocket", T0);
    assert_eq!(
        cmds,
        vec![UiCommand::Search {
            buffer: room("#a"),
            query: "rocket".into(),
            before: Some(4)
        }]
    );
    // Words are needed; Ctrl+R still searches the loaded lines.
    assert!(enter_line(&mut app, "/search", T0).is_empty());
    app.handle_key(ctrl('u'), T0);
    app.handle_key(ctrl('r'), T0);
    type_str(&mut app, "rock", T0);
    let s = screen(&mut app, 100, 12);
    assert!(find_row(&s, "(search) rock").is_some(), "{}", dump(&s));
}

#[test]
fn a_peer_ui_searches_its_loaded_lines_and_sends_no_notices() {
    let mut app = chirp_tui::App::new(chirp_tui::Config {
        peer: true,
        ..chirp_tui::Config::default()
    });
    let peer = BufferId::Dm("127.0.0.1:5002".into());
    app.handle_event(UiEvent::Open(peer.clone()), T0);
    say(&mut app, peer, 1, "127.0.0.1:5002", "the needle", T0);
    let cmds = enter_line(&mut app, "/search needle", T0);
    assert!(cmds.is_empty(), "no server: {cmds:?}");
    let s = screen(&mut app, 80, 12);
    assert!(find_row(&s, "(search) needle").is_some(), "{}", dump(&s));
    app.handle_key(key(KeyCode::Esc), T0);
    // No typing notices, no read markers: a peer has no server to pass them on.
    let cmds = type_str(&mut app, "hello", T0 + 10_000);
    app.handle_timeout(T0 + 20_000);
    assert!(
        cmds.is_empty() && app.take_commands().is_empty(),
        "{cmds:?}"
    );
}

#[test]
fn help_lists_the_new_commands_and_keys() {
    let mut app = app();
    join(&mut app, "#a", &[]);
    enter_line(&mut app, "/help", T0);
    let s = screen(&mut app, 200, 80);
    for needle in [
        "/edit ID TEXT",
        "/delete ID",
        "/react ID EMOJI",
        "/unreact ID EMOJI",
        "/search [TEXT]",
        "/ids",
    ] {
        assert!(find_row(&s, needle).is_some(), "{needle}:\n{}", dump(&s));
    }
    let help = chirp_tui::command::help(chirp_tui::command::Context::ChatUi);
    for needle in [
        "Alt+I message ids",
        "Ctrl+R search the loaded lines",
        "the server's history",
    ] {
        assert!(help.contains(needle), "{needle}:\n{help}");
    }
}
