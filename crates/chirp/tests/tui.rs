//! The terminal UI end to end, under tmux: a real `chirp serve`, `chirp connect` clients (two
//! chatting, a third joining later) in their own tmux sessions, so that stdin and stdout are
//! terminals and the UI is chosen; keys typed with `send-keys`, screens read with
//! `capture-pane`. Every wait polls with a deadline; the private tmux server (`tmux -S`, its
//! socket in the test's directory) is killed on every path, panics included.
//!
//! Skipped, with a message, only where tmux is not installed (`.ci/run` installs it).
//! `cargo test -p chirp --test tui -- --nocapture` prints the final screens of the clients.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::tmux::{Tmux, tmux_installed};
use common::{CHIRP, Chirp, Proc, Server, fingerprint, free_ports, lo};

/// Whether `screen` has a status bar showing an RTT such as `rtt 0.4ms` or `rtt 23ms`.
fn shows_rtt(screen: &str) -> bool {
    screen.lines().any(|line| {
        line.contains("connected")
            && line.match_indices("rtt ").any(|(i, m)| {
                let rest = &line[i + m.len()..];
                let number: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                !number.is_empty()
                    && number.chars().next().is_some_and(|c| c.is_ascii_digit())
                    && rest[number.len()..].starts_with("ms")
            })
    })
}

/// Starts `chirp serve` on a free loopback port; returns it with its address.
fn server(dir: &Path) -> (Proc, SocketAddr) {
    server_with(dir, &[])
}

/// [`server`] with extra arguments.
fn server_with(dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let s = Server::start(dir, "127.0.0.1:0", extra);
    (s.proc, s.addr)
}

/// The shell command of a client pane: `chirp connect`, then its exit code, then a pause so
/// the pane (and what the client left on the screen) stays readable. Everything is bounded
/// (`timeout --foreground 120`, which lets chirp read the terminal, and `sleep 60`), so a
/// pane ends by itself even if the test process is killed before its tmux server is;
/// normally the server is killed at the end. The client's config (`client.toml`) and state
/// (the ignore list) are looked for under its home, never in the user's own.
fn client_command(server: SocketAddr, home: &Path, nick: &str, extra: &str) -> String {
    format!(
        "XDG_CONFIG_HOME='{home}/config' XDG_STATE_HOME='{home}/state' timeout --foreground 120 '{CHIRP}' connect {server} --nick {nick} --home '{home}' --join '#t' {extra}; \
         echo \"chirp exited with $?\"; sleep 60",
        home = home.display()
    )
}

#[test]
fn two_clients_chat_in_tmux() {
    if !tmux_installed("two_clients_chat_in_tmux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server(&dir.path().join("data"));
    let tmux = Tmux::new(dir.path());
    tmux.start(
        "alice",
        &client_command(addr, &dir.path().join("alice"), "alice", ""),
    );
    tmux.start(
        "bob",
        &client_command(addr, &dir.path().join("bob"), "bob", ""),
    );

    // Both are in the room, and see each other there.
    tmux.wait_for("alice", "join", |s| s.contains("you joined #t"));
    tmux.wait_for("bob", "join", |s| s.contains("you joined #t"));
    tmux.wait_for("alice", "bob in the member list or joining", |s| {
        s.contains("bob joined #t") || s.contains("2 members")
    });

    tmux.type_line("alice", "hello bob, this goes over UDP");
    let bob = tmux.wait_for("bob", "message from alice", |s| {
        s.contains("<alice> hello bob, this goes over UDP")
    });
    // Alice's own copy is marked as stored by the server.
    tmux.wait_for("alice", "delivered mark", |s| {
        s.contains("✓ <alice> hello bob, this goes over UDP")
    });
    assert!(
        !bob.contains("✓ <alice>"),
        "only one's own messages carry a sending state:\n{bob}"
    );

    tmux.type_line("bob", "hi alice! the status bar shows the RTT");
    tmux.type_line("bob", "/me waves");
    let alice = tmux.wait_for("alice", "bob's message and action", |s| {
        s.contains("<bob> hi alice! the status bar shows the RTT") && s.contains("* bob waves")
    });
    assert!(
        alice.find("<bob> hi alice!") < alice.find("* bob waves"),
        "in order:\n{alice}"
    );

    // A latecomer gets the room's recent history on joining, oldest first.
    tmux.start(
        "carol",
        &client_command(addr, &dir.path().join("carol"), "carol", ""),
    );
    let carol = tmux.wait_for("carol", "the room's history", |s| {
        s.contains("* bob waves") && s.contains("you joined #t")
    });
    let order = [
        "<alice> hello bob, this goes over UDP",
        "<bob> hi alice! the status bar shows the RTT",
        "* bob waves",
    ]
    .map(|line| {
        carol
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing:\n{carol}"))
    });
    assert!(order.is_sorted(), "history out of order:\n{carol}");
    // All of the backlog is older than carol's join, and shown above it.
    assert!(
        carol.find("you joined #t") > carol.find("* bob waves"),
        "the join line is below the whole backlog:\n{carol}"
    );
    // Scrolling up asks the server for older messages; there are none.
    tmux.keys("carol", "PPage");
    tmux.wait_for("carol", "the start of history", |s| {
        s.contains("start of history")
    });

    // The status bar: connected, with an RTT (statistics arrive once a second).
    let alice = tmux.wait_for("alice", "an RTT in the status bar", shows_rtt);
    let bob = tmux.wait_for("bob", "an RTT in the status bar", shows_rtt);
    #[allow(clippy::print_stdout)] // the transcript, for --nocapture
    {
        println!("--- alice ---\n{alice}--- bob ---\n{bob}--- carol ---\n{carol}---");
    }

    // Ctrl+C leaves cleanly: the terminal is restored (the shell's line is visible) and the
    // exit code is 0, since the server stored everything sent.
    tmux.keys("alice", "C-c");
    tmux.wait_for("alice", "a clean exit", |s| {
        s.contains("chirp exited with 0")
    });
    tmux.wait_for("bob", "alice's quit", |s| s.contains("alice quit"));
    tmux.keys("bob", "C-c");
    tmux.wait_for("bob", "a clean exit", |s| s.contains("chirp exited with 0"));
    server.kill();
}

/// Issue 19: the moderation commands of line mode work in the UI: the room's owner kicks a
/// member from her chat UI, the member is told, and her screen shows the room's event.
#[test]
fn a_kick_typed_in_the_ui_takes_effect() {
    if !tmux_installed("a_kick_typed_in_the_ui_takes_effect") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server(&dir.path().join("data"));
    let tmux = Tmux::new(dir.path());
    tmux.start(
        "alice",
        &client_command(addr, &dir.path().join("alice"), "alice", ""),
    );
    // She is first in #t: its owner.
    tmux.wait_for("alice", "join", |s| s.contains("you joined #t"));
    let mut bob = common::connect_json("bob", addr, &dir.path().join("bob"), "bob", &["#t"], &[]);
    bob.wait_for("joined #t", common::WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == "#t"
    });
    tmux.wait_for("alice", "bob joining", |s| s.contains("bob joined #t"));

    tmux.type_line("alice", "/kick bob flooding");
    let kicked = bob.wait_type("kicked", common::WAIT);
    assert_eq!(
        (
            &kicked["room"],
            &kicked["by"],
            &kicked["reason"],
            &kicked["banned"]
        ),
        (
            &serde_json::json!("#t"),
            &serde_json::json!("alice"),
            &serde_json::json!("flooding"),
            &serde_json::json!(false)
        ),
        "{kicked}"
    );
    tmux.wait_for("alice", "the kick in the room", |s| {
        s.contains("alice kicked bob (flooding)")
    });
    // And /mode, which names no room here: the buffer's.
    tmux.type_line("alice", "/mode +m");
    tmux.wait_for("alice", "the mode change", |s| {
        s.contains("alice set mode +m")
    });
    bob.proc.close_stdin();
    let st = bob.exit(common::WAIT);
    assert!(st.success(), "bob: {st:?}\n{}", bob.diag());
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "exit 0", |s| s.contains("chirp exited with 0"));
    server.kill();
}

/// Issue 19 in the UI: alice, in the chat UI, edits her message by the id the UI shows her;
/// bob (a `--json` client) reacts to it and types: her screen shows the new text marked
/// "(edited)", the reaction's count and "bob is typing…". Her own typing reaches bob as a
/// notice before her message, and a server search typed in the UI lists the match.
#[test]
fn an_edit_a_reaction_and_typing_show_in_the_ui() {
    if !tmux_installed("an_edit_a_reaction_and_typing_show_in_the_ui") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server(&dir.path().join("data"));
    let tmux = Tmux::new(dir.path());
    tmux.start(
        "alice",
        &client_command(addr, &dir.path().join("alice"), "alice", ""),
    );
    tmux.wait_for("alice", "join", |s| s.contains("you joined #t"));
    let mut bob = common::connect_json("bob", addr, &dir.path().join("bob"), "bob", &["#t"], &[]);
    bob.wait_for("joined #t", common::WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == "#t"
    });
    tmux.wait_for("alice", "bob joining", |s| s.contains("bob joined #t"));

    tmux.type_line("alice", "helo everyone");
    // Her typing went out with the first key, before the message.
    let t = bob.wait_type("typing", common::WAIT);
    assert_eq!(
        (t["from"].as_str(), t["room"].as_str()),
        (Some("alice"), Some("#t")),
        "{t}"
    );
    let m = bob.wait_for("alice's message", common::WAIT, |v| {
        v["type"] == "message" && v["text"] == "helo everyone"
    });
    let id = m["id"].as_u64().expect("a message id");
    tmux.wait_for("alice", "her message, stored", |s| {
        s.contains("✓ <alice> helo everyone")
    });
    // The id she needs is on her screen (Alt+I).
    tmux.keys("alice", "M-i");
    tmux.wait_for("alice", "the message's id", |s| {
        s.contains(&format!("#{id} ✓ <alice> helo everyone"))
    });
    tmux.keys("alice", "M-i");

    tmux.type_line("alice", &format!("/edit {id} hello everyone"));
    let e = bob.wait_type("edited", common::WAIT);
    assert_eq!(
        (e["target"].as_u64(), e["text"].as_str()),
        (Some(id), Some("hello everyone")),
        "{e}"
    );
    tmux.wait_for("alice", "the edit, in place", |s| {
        s.contains("✓ <alice> hello everyone (edited)") && !s.contains("helo everyone")
    });

    bob.line(&format!("/react {id} 👍"));
    tmux.wait_for("alice", "the reaction's count", |s| {
        s.contains("<alice> hello everyone (edited)  👍 1")
    });

    bob.line("/typing");
    tmux.wait_for("alice", "bob typing, in the status bar", |s| {
        s.contains("bob is typing…")
    });
    // It goes once bob's message comes.
    bob.line("thanks");
    tmux.wait_for("alice", "bob's message, the notice gone", |s| {
        s.contains("<bob> thanks") && !s.contains("is typing")
    });

    // The server's search, from the UI.
    tmux.type_line("alice", "/search everyone");
    let alice = tmux.wait_for("alice", "the search result", |s| {
        s.contains("search for \"everyone\" in #t: 1 match")
            && s.contains(&format!("#{id} "))
            && s.contains("<alice> hello everyone (edited)")
    });
    #[allow(clippy::print_stdout)] // the transcript, for --nocapture
    {
        println!("--- alice ---\n{alice}---");
    }

    bob.proc.close_stdin();
    let st = bob.exit(common::WAIT);
    assert!(st.success(), "bob: {st:?}\n{}", bob.diag());
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "exit 0", |s| s.contains("chirp exited with 0"));
    server.kill();
}

#[test]
fn the_servers_message_limit_reaches_the_input_line() {
    if !tmux_installed("the_servers_message_limit_reaches_the_input_line") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server_with(&dir.path().join("data"), &["--max-message-size", "20"]);
    let tmux = Tmux::new(dir.path());
    tmux.start(
        "dave",
        &client_command(addr, &dir.path().join("dave"), "dave", ""),
    );
    tmux.wait_for("dave", "join", |s| s.contains("you joined #t"));
    // 26 bytes against the server's 20: refused up front, and kept for editing.
    tmux.type_line("dave", "abcdefghijklmnopqrstuvwxyz");
    let screen = tmux.wait_for("dave", "the refusal", |s| {
        s.contains("message not sent: 26 bytes, the limit is 20 (6 over)")
    });
    assert!(
        screen
            .lines()
            .last()
            .is_some_and(|l| l.contains("abcdefghijklmnopqrstuvwxyz")),
        "the text stays in the input line:\n{screen}"
    );
    assert!(
        !screen.contains("<dave> abc"),
        "nothing was sent:\n{screen}"
    );
    // Trimmed to the limit, it goes.
    for _ in 0..6 {
        tmux.keys("dave", "BSpace");
    }
    tmux.keys("dave", "Enter");
    tmux.wait_for("dave", "the message, stored", |s| {
        s.contains("✓ <dave> abcdefghijklmnopqrst")
    });
    tmux.keys("dave", "C-c");
    tmux.wait_for("dave", "a clean exit", |s| {
        s.contains("chirp exited with 0")
    });
    server.kill();
}

#[test]
fn line_flag_keeps_line_mode_on_a_terminal() {
    if !tmux_installed("line_flag_keeps_line_mode_on_a_terminal") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server(&dir.path().join("data"));
    let tmux = Tmux::new(dir.path());
    tmux.start(
        "carol",
        &client_command(addr, &dir.path().join("carol"), "carol", "--line"),
    );
    // Line mode prints its events as lines ("* you joined #t (...)"), and has no status bar.
    let screen = tmux.wait_for("carol", "the line-mode join line", |s| {
        s.contains("* you joined #t")
    });
    assert!(!shows_rtt(&screen), "no UI in line mode:\n{screen}");
    tmux.type_line("carol", "/quit");
    tmux.wait_for("carol", "a clean exit", |s| {
        s.contains("chirp exited with 0")
    });
    server.kill();
}

/// The shell command of a `chirp peer` pane (exit code and pause as in [`client_command`]).
fn peer_command(bind: SocketAddr, to: SocketAddr, home: &Path, extra: &str) -> String {
    format!(
        "XDG_CONFIG_HOME='{home}/config' timeout --foreground 120 '{CHIRP}' peer --bind {bind} --to {to} --home '{home}' {extra}; \
         echo \"chirp exited with $?\"; sleep 60",
        home = home.display()
    )
}

#[test]
fn two_peers_chat_in_tmux() {
    if !tmux_installed("two_peers_chat_in_tmux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ann_home, ben_home) = (dir.path().join("ann"), dir.path().join("ben"));
    let ben_fp = fingerprint(&ben_home);
    let [pa, pb] = free_ports();
    let (ann, ben) = (lo(pa), lo(pb));
    let tmux = Tmux::new(dir.path());
    // Ann starts alone and types: her message waits, marked pending, while she is connecting.
    tmux.start("ann", &peer_command(ann, ben, &ann_home, ""));
    tmux.wait_for("ann", "the connecting state", |s| s.contains("connecting"));
    tmux.type_line("ann", "hello ben, straight from peer to peer");
    tmux.wait_for("ann", "pending mark", |s| {
        s.contains(&format!("· <{ann}> hello ben, straight from peer to peer"))
    });
    tmux.start("ben", &peer_command(ben, ann, &ben_home, ""));

    // Each sees the other come up, in the conversation named by the other's address.
    tmux.wait_for("ann", "ben up", |s| s.contains(&format!("{ben} is up")));
    tmux.wait_for("ben", "ann up", |s| s.contains(&format!("{ann} is up")));
    tmux.wait_for("ben", "ann's message", |s| {
        s.contains(&format!("<{ann}> hello ben, straight from peer to peer"))
    });
    // Ann's copy is marked delivered once ben's transport has acknowledged it.
    tmux.wait_for("ann", "delivered mark", |s| {
        s.contains(&format!("✓ <{ann}> hello ben, straight from peer to peer"))
    });
    tmux.type_line("ben", "hi ann! no server in between");
    tmux.type_line("ben", "/me waves");
    let ann_screen = tmux.wait_for("ann", "ben's message and action", |s| {
        s.contains(&format!("<{ben}> hi ann! no server in between"))
            && s.contains(&format!("* {ben} waves"))
    });
    assert!(
        ann_screen.find("hi ann!") < ann_screen.find("waves"),
        "in order:\n{ann_screen}"
    );
    // Server commands are refused with the reason, and the line is kept for fixing.
    tmux.type_line("ben", "/join #rust");
    tmux.wait_for("ben", "the refusal", |s| s.contains("needs a chat server"));
    tmux.keys("ben", "C-u");

    // The status bar: connected, an RTT, and the peer's fingerprint.
    // Loopback loses nothing: the loss over the last minute is 0 %. Ann started first, so
    // handshake packets she sent before ben listened were lost, but they are not the link's
    // loss (`handshake_packets_lost`; the bar once showed 25 % here).
    let ann_screen = tmux.wait_for("ann", "RTT, loss and ben's key in the status bar", |s| {
        shows_rtt(s) && s.contains("loss 0.0%") && s.contains(&format!("fp {}", &ben_fp[..9]))
    });
    let ben_screen = tmux.wait_for("ben", "RTT and loss in the status bar", |s| {
        shows_rtt(s) && s.contains("loss 0.0%")
    });
    #[allow(clippy::print_stdout)] // the transcript, for --nocapture
    {
        println!("--- ann ---\n{ann_screen}--- ben ---\n{ben_screen}---");
    }

    // Ctrl+C leaves cleanly (exit 0: everything sent was acknowledged); ben sees ann go, and
    // leaves too.
    tmux.keys("ann", "C-c");
    tmux.wait_for("ann", "a clean exit", |s| s.contains("chirp exited with 0"));
    tmux.wait_for("ben", "ann leaving", |s| {
        s.contains(&format!("{ann} is down: left"))
    });
    tmux.type_line("ben", "/quit");
    tmux.wait_for("ben", "a clean exit", |s| s.contains("chirp exited with 0"));
}

#[test]
fn wrong_peer_key_is_refused_in_the_ui_and_said_again_after_it() {
    if !tmux_installed("wrong_peer_key_is_refused_in_the_ui_and_said_again_after_it") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ann_home, ben_home) = (dir.path().join("ann"), dir.path().join("ben"));
    let (ann_fp, ben_fp) = (fingerprint(&ann_home), fingerprint(&ben_home));
    let [pa, pb] = free_ports();
    let (ann, ben) = (lo(pa), lo(pb));
    let tmux = Tmux::new(dir.path());
    // Ann pins a key that is not ben's (her own).
    let pin = format!("--peer-key {ann_fp}");
    tmux.start("ann", &peer_command(ann, ben, &ann_home, &pin));
    tmux.start("ben", &peer_command(ben, ann, &ben_home, ""));
    let screen = tmux.wait_for("ann", "the refusal", |s| {
        s.contains("refusing peer") && s.contains("the network task ended")
    });
    // The message names both keys (it may wrap, so look for their first groups in what
    // follows "refusing peer").
    let refusal = screen.split_once("refusing peer").map_or("", |(_, r)| r);
    assert!(
        refusal.contains(&ann_fp[..9]) && refusal.contains(&ben_fp[..9]),
        "{screen}"
    );
    assert!(
        !screen.contains(&format!("{ben} is up")),
        "a refused peer is never shown up:\n{screen}"
    );
    // Ben hears that ann refused its key. Ann checks ben's key inside the handshake, so ben
    // sees ann up at most briefly (only if ben's own attempt, as the Noise initiator, finished
    // its side first), and, although it tries again, never up after the refusal: a peer that
    // is ending accepts no new connection while it lingers.
    tmux.wait_for("ben", "ann's refusal", |s| s.contains("refused our key"));
    // Leaving the UI, the refusal is printed again on the restored terminal, and the exit
    // code says it failed.
    tmux.keys("ann", "C-c");
    let screen = tmux.wait_for("ann", "the exit", |s| s.contains("chirp exited with"));
    assert!(screen.contains("chirp exited with 1"), "{screen}");
    assert!(screen.contains("chirp: refusing peer"), "{screen}");
    // Ann is gone: no connection to her can come up any more, so ben's screen now shows
    // everything her whole lifetime could have shown (no need to wait for "nothing").
    let ben_screen = tmux.screen("ben");
    let up = format!("{ann} is up");
    assert!(
        ben_screen.matches(&up).count() <= 1
            && ben_screen.rfind(&up) < ben_screen.find("refused our key"),
        "a ghost connection:\n{ben_screen}"
    );
}

/// A stranger at `from` (its own home in `dir`) dialing `to` with one line queued.
fn stranger(dir: &Path, from: SocketAddr, to: SocketAddr, line: &str) -> (Chirp, String) {
    let home = dir.join("stranger");
    let fp = fingerprint(&home);
    let home = home.display().to_string();
    let mut c = Chirp::peer("stranger", from, to, &["--home", &home]).expect("stranger starts");
    c.line(line);
    (c, fp)
}

#[test]
fn a_key_from_another_port_is_asked_about_on_a_terminal_and_remembered_on_yes() {
    if !tmux_installed("a_key_from_another_port_is_asked_about_on_a_terminal_and_remembered_on_yes")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ben_home = dir.path().join("ben");
    let [pa, pb, px] = free_ports();
    let tmux = Tmux::new(dir.path());
    // Ben expects his peer at pa; a key never seen before comes from px instead (the peer
    // behind a port-changing NAT, or a stranger: only ben can tell).
    tmux.start("ben", &peer_command(lo(pb), lo(pa), &ben_home, "--line"));
    tmux.wait_for("ben", "the banner", |s| s.contains("chirp peer on"));
    let (_x, x_fp) = stranger(dir.path(), lo(px), lo(pb), "hello from another port");
    let screen = tmux.wait_for("ben", "the question", |s| {
        s.contains("never seen before") && s.contains("Type /accept")
    });
    assert!(screen.contains(&x_fp[..9]), "names the key:\n{screen}");
    assert!(
        !screen.contains("hello from another port"),
        "nothing arrives before the answer:\n{screen}"
    );
    // A plain line is chat, not an answer (the question may come mid-sentence).
    tmux.type_line("ben", "yes");
    tmux.wait_for("ben", "the question still open", |s| {
        !s.contains("accepted, and")
    });
    tmux.type_line("ben", "/accept");
    tmux.wait_for("ben", "the line, once accepted", |s| {
        s.contains("accepted, and remembered") && s.contains("hello from another port")
    });
    let known = std::fs::read_to_string(ben_home.join("known_keys")).expect("known_keys");
    assert!(known.contains(&lo(pa).to_string()), "{known}");
    tmux.type_line("ben", "/quit");
    tmux.wait_for("ben", "the exit", |s| s.contains("chirp exited with"));
}

#[test]
fn a_key_from_another_port_is_asked_about_in_the_ui_and_refused_on_n() {
    if !tmux_installed("a_key_from_another_port_is_asked_about_in_the_ui_and_refused_on_n") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ann_home, ben_home) = (dir.path().join("ann"), dir.path().join("ben"));
    let [pa, pb, px] = free_ports();
    let tmux = Tmux::new(dir.path());
    tmux.start("ben", &peer_command(lo(pb), lo(pa), &ben_home, ""));
    tmux.wait_for("ben", "the UI", |s| s.contains("connecting"));
    let (mut x, _) = stranger(dir.path(), lo(px), lo(pb), "hello from another port");
    tmux.wait_for("ben", "the question", |s| {
        s.contains("never seen") && s.contains("Alt+Y accepts")
    });
    // Typing (y and n included) answers nothing; Alt+N refuses.
    tmux.keys("ben", "y");
    tmux.keys("ben", "n");
    tmux.keys("ben", "C-u");
    tmux.keys("ben", "M-n");
    tmux.wait_for("ben", "the refusal", |s| s.contains("answered: no"));
    // The real peer, at the address ben was given, is then accepted and chats.
    tmux.start("ann", &peer_command(lo(pa), lo(pb), &ann_home, "--line"));
    tmux.wait_for("ben", "ann up", |s| {
        s.contains(&format!("{} is up", lo(pa)))
    });
    tmux.type_line("ann", "the real one");
    let screen = tmux.wait_for("ben", "ann's line", |s| s.contains("the real one"));
    assert!(
        !screen.contains("hello from another port"),
        "the refused key's line never arrives:\n{screen}"
    );
    x.poll();
    assert!(x.seen_of("message").is_empty(), "{}", x.diag());
    let known = std::fs::read_to_string(ben_home.join("known_keys")).expect("known_keys");
    assert_eq!(known.lines().count(), 1, "only ann is remembered: {known}");
    tmux.keys("ben", "C-c");
    tmux.wait_for("ben", "the exit", |s| s.contains("chirp exited with 0"));
}

#[test]
fn rtt_pattern() {
    assert!(shows_rtt(" connected │ rtt 0.4ms │ loss 0.0% │ rtx 0"));
    assert!(shows_rtt(" connected │ rtt 23ms │ loss 0.0%"));
    assert!(!shows_rtt(" connecting │ fp abcd"));
    assert!(!shows_rtt(" connected │ rtt -ms"));
}

/// File transfer in the UI of `chirp peer`: ann types `/send`; ben's screen shows the offer
/// (name, size and how to answer), ben accepts with Alt+Y, the status bar shows the progress
/// line (percent, bytes, rate, ETA) while the file flows through `chirp impair` limited to
/// 8 mbit/s (3 MB: about three seconds, so the line is seen), and both show the done line with
/// the whole BLAKE3 hash, the one the line-mode offer and the saved file have.
#[test]
fn a_file_offer_is_accepted_with_a_key_and_its_progress_and_hash_show_in_the_ui() {
    if !tmux_installed("a_file_offer_is_accepted_with_a_key_and_its_progress_and_hash_show") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ann_home, ben_home) = (dir.path().join("ann"), dir.path().join("ben"));
    let downloads = dir.path().join("dl");
    let src = dir.path().join("holiday.jpg");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).expect("write source");
    let hashes: Vec<_> = data
        .chunks(chirp_files::DEFAULT_CHUNK_SIZE as usize)
        .map(chirp_files::wire::chunk_hash)
        .collect();
    let hash = chirp_files::hash_hex(&chirp_files::wire::root_hash(&hashes));
    let [pa, pb, pl, pv] = free_ports();
    let (ann, ben, listen, via) = (lo(pa), lo(pb), lo(pl), lo(pv));
    let impair: Vec<String> = [
        "impair",
        "--listen",
        &listen.to_string(),
        "--to",
        &ben.to_string(),
        "--client",
        &ann.to_string(),
        "--via",
        &via.to_string(),
        "--rate",
        "8mbit",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let _proxy = Proc::spawn("impair", CHIRP, &impair, common::Stdout::Lines);
    let tmux = Tmux::new(dir.path());
    tmux.start("ann", &peer_command(ann, listen, &ann_home, ""));
    let extra = format!("--downloads '{}'", downloads.display());
    tmux.start("ben", &peer_command(ben, via, &ben_home, &extra));
    tmux.wait_for("ann", "ben up", |s| s.contains("is up"));
    tmux.wait_for("ben", "ann up", |s| s.contains("is up"));
    tmux.type_line("ann", &format!("/send {}", src.display()));
    // Not trusted: the offer names ann's key, in the status bar's short form.
    let ann_key = format!("(key {}…) offers file 1", &fingerprint(&ann_home)[..13]);
    tmux.wait_for("ben", "the offer", |s| {
        s.contains(&ann_key) && s.contains("holiday.jpg") && s.contains("Alt+Y accepts it")
    });
    tmux.keys("ben", "M-y");
    // `↓1 40% 1.2 MiB/2.9 MiB 980.0 KiB/s ETA 2s`: bytes, a rate (the first report has
    // none yet) and an ETA in seconds.
    let progress = tmux.wait_for("ben", "the progress line with a rate and an ETA", |s| {
        s.lines().any(|l| {
            let Some(at) = l.find("↓1 ") else {
                return false;
            };
            let p = &l[at..];
            let eta = p
                .split("ETA ")
                .nth(1)
                .is_some_and(|e| e.starts_with(|c: char| c.is_ascii_digit()));
            p.contains("% ") && p.contains("/2.9 MiB ") && !p.contains(" 0 B/s") && eta
        })
    });
    let done = |s: &str| s.contains(&hash);
    let ben_screen = tmux.wait_within(
        "ben",
        "the done line with the hash",
        std::time::Duration::from_secs(60),
        |s| s.contains("received and verified") && done(s),
    );
    tmux.wait_for("ann", "the sent line with the hash", |s| {
        s.contains("\"holiday.jpg\" sent") && done(s)
    });
    #[allow(clippy::print_stdout)] // the transcript, for --nocapture
    {
        println!("--- ben, receiving ---\n{progress}--- ben, done ---\n{ben_screen}---");
    }
    assert!(std::fs::read(downloads.join("holiday.jpg")).expect("saved") == data);
    tmux.type_line("ben", "/quit");
    tmux.wait_for("ben", "a clean exit", |s| s.contains("chirp exited with 0"));
}

/// Issue 18, DM files in `chirp connect`'s UI: a real `chirp serve` and two UI clients.
/// Alice types `/send bob PATH`; bob's UI shows the offer (alice's key, name, size, how to
/// answer) and he accepts with Alt+Y; his status bar shows the progress line (percent, bytes,
/// rate, ETA) while the file flows; both show the done line with the BLAKE3 hash in their DM buffer
/// with the other, and the saved file is byte-exact.
#[test]
fn a_dm_file_is_offered_accepted_with_a_key_and_shown_done_in_the_chat_ui() {
    if !tmux_installed("a_dm_file_is_offered_accepted_with_a_key_and_shown_done_in_the_chat_ui") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server(&dir.path().join("data"));
    let downloads = dir.path().join("dl");
    let src = dir.path().join("archive.tar");
    // Large enough that the transfer spans several progress reports on loopback.
    let data: Vec<u8> = (0..96_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).expect("write source");
    let tmux = Tmux::new(dir.path());
    tmux.start(
        "alice",
        &client_command(addr, &dir.path().join("alice"), "alice", ""),
    );
    let extra = format!("--downloads '{}'", downloads.display());
    tmux.start(
        "bob",
        &client_command(addr, &dir.path().join("bob"), "bob", &extra),
    );
    tmux.wait_for("alice", "join", |s| s.contains("you joined #t"));
    tmux.wait_for("bob", "join", |s| s.contains("you joined #t"));
    tmux.type_line("alice", &format!("/send bob {}", src.display()));
    // Not trusted: the offer names alice's key, in the status bar's short form.
    let alice_fp = fingerprint(&dir.path().join("alice"));
    let offer = format!(
        "alice (key {}…) offers file 1: \"archive.tar\"",
        &alice_fp[..13]
    );
    // The key makes the question two lines longer: how to answer wraps after "Alt+Y".
    tmux.wait_for("bob", "the offer", |s| {
        s.contains(&offer)
            && s.contains("/accept 1 or Alt+Y")
            && s.contains("accepts it, /decline 1 or Alt+N declines.")
    });
    tmux.keys("bob", "M-y");
    let progress = tmux.wait_for("bob", "the progress line with an ETA", |s| {
        s.lines().any(|l| {
            l.find("↓1 ").is_some_and(|at| {
                let p = &l[at..];
                p.contains("% ") && p.contains("/91.6 MiB ") && p.contains("ETA ")
            })
        })
    });
    // The done line goes to the DM buffer with alice.
    tmux.type_line("bob", "/query alice");
    let ben_screen = tmux.wait_within(
        "bob",
        "the done line with the hash",
        std::time::Duration::from_secs(90),
        |s| s.contains("file 1 received and verified") && s.contains("BLAKE3"),
    );
    tmux.type_line("alice", "/query bob");
    tmux.wait_for("alice", "the sent line", |s| {
        s.contains("\"archive.tar\" sent") && s.contains("BLAKE3")
    });
    #[allow(clippy::print_stdout)] // the transcript, for --nocapture
    {
        println!("--- bob, receiving ---\n{progress}--- bob, done ---\n{ben_screen}---");
    }
    assert!(std::fs::read(downloads.join("archive.tar")).expect("saved") == data);
    tmux.type_line("bob", "/quit");
    tmux.wait_for("bob", "a clean exit", |s| s.contains("chirp exited with 0"));
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "a clean exit", |s| {
        s.contains("chirp exited with 0")
    });
    server.kill();
}

/// Issue 18, `--auto-accept-from` in `chirp connect`'s UI: bob trusts alice's key, so her
/// offer is taken at once (the UI says so) and the file arrives byte-exact without Alt+Y.
#[test]
fn a_dm_file_from_a_trusted_key_is_received_without_alt_y_in_the_chat_ui() {
    if !tmux_installed("a_dm_file_from_a_trusted_key_is_received_without_alt_y_in_the_chat_ui") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = server(&dir.path().join("data"));
    let downloads = dir.path().join("dl");
    let src = dir.path().join("note.bin");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).expect("write source");
    let alice_home = dir.path().join("alice");
    let alice_fp = fingerprint(&alice_home);
    let tmux = Tmux::new(dir.path());
    tmux.start("alice", &client_command(addr, &alice_home, "alice", ""));
    let extra = format!(
        "--downloads '{}' --auto-accept-from {alice_fp}",
        downloads.display()
    );
    tmux.start(
        "bob",
        &client_command(addr, &dir.path().join("bob"), "bob", &extra),
    );
    tmux.wait_for("alice", "join", |s| s.contains("you joined #t"));
    tmux.wait_for("bob", "join", |s| s.contains("you joined #t"));
    tmux.type_line("alice", &format!("/send bob {}", src.display()));
    tmux.type_line("bob", "/query alice");
    let screen = tmux.wait_within(
        "bob",
        "the file received unasked",
        std::time::Duration::from_secs(60),
        |s| s.contains("file 1 received and verified"),
    );
    assert!(
        screen.contains("receiving file 1: \"note.bin\"")
            && screen.contains("offers from this key are accepted"),
        "{screen}"
    );
    assert!(!screen.contains("Alt+Y accepts it"), "{screen}");
    assert!(std::fs::read(downloads.join("note.bin")).expect("saved") == data);
    tmux.type_line("bob", "/quit");
    tmux.wait_for("bob", "a clean exit", |s| s.contains("chirp exited with 0"));
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "a clean exit", |s| {
        s.contains("chirp exited with 0")
    });
    server.kill();
}
