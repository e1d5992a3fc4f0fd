//! A client people configure once (issue 19), end to end: a real `chirp serve`, and `chirp
//! connect --json` with no server and no nick on its command line, everything from
//! `client.toml` in `$XDG_CONFIG_HOME/chirp`. It connects, joins the configured rooms, logs
//! what it receives into `log_dir`, and an `/ignore` holds across a restart (the list kept in
//! `$XDG_STATE_HOME/chirp/ignore`).

mod common;

use std::path::Path;

use common::{CHIRP, Chirp, Proc, Server, Stdout, WAIT, connect_json};
use serde_json::Value;

/// `chirp connect --json` with nothing but the config directories: all else from the file.
fn configured(name: &str, server: std::net::SocketAddr, root: &Path) -> Chirp {
    let dir = |d: &str| root.join(d).display().to_string();
    let (config, state, home) = (dir("config"), dir("state"), dir("home"));
    let args = ["connect".to_owned(), "--json".to_owned()];
    Chirp {
        proc: Proc::spawn_env(
            name,
            CHIRP,
            &args,
            Stdout::Lines,
            &[
                ("XDG_CONFIG_HOME", &config),
                ("XDG_STATE_HOME", &state),
                ("HOME", &home),
            ],
        ),
        addr: server,
        seen: Vec::new(),
    }
}

fn joined(c: &mut Chirp, room: &str) {
    c.wait_for(&format!("joined {room}"), WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == room
    });
}

/// Sends `text` from `c` and waits until the server has stored it.
fn say(c: &mut Chirp, text: &str) {
    c.line(text);
    c.wait_type("delivered", WAIT);
}

fn message(c: &mut Chirp, from: &str, text: &str) {
    c.wait_for(&format!("message {text:?}"), WAIT, |v| {
        v["type"] == "message" && v["from"] == from && v["text"] == text
    });
}

/// Nothing `c` printed was a message from `nick` (live or history).
fn never_shown(c: &Chirp, nick: &str, what: &str) {
    let shown: Vec<_> = c
        .seen_of("message")
        .into_iter()
        .filter(|v| v["from"] == nick)
        .collect();
    assert!(
        shown.is_empty(),
        "{what}: {nick}'s messages shown: {shown:?}"
    );
}

fn ends_ok(c: &mut Chirp) {
    c.proc.close_stdin();
    let st = c.exit(WAIT);
    c.drain();
    assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
}

#[test]
fn chirp_connect_alone_runs_from_client_toml_ignores_across_restarts_and_logs() {
    let data = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let homes = tempfile::tempdir().expect("tempdir");
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let logs = root.path().join("home").join("chat logs");
    let cfg = root.path().join("config").join("chirp");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    // `~` is $HOME; the log directory does not exist yet.
    std::fs::write(
        cfg.join("client.toml"),
        format!(
            "# written by the test\nserver = \"{}\"\nnick = \"ann\"\nrooms = [\"#one\", \
             \"#two\"]\nbell = false\nlog_dir = \"~/chat logs\"\n",
            srv.addr
        ),
    )
    .expect("write client.toml");

    let mut ann = configured("ann", srv.addr, root.path());
    let hello = ann.wait_type("connected", WAIT);
    assert_eq!(hello["nick"], "ann", "{hello}");
    joined(&mut ann, "#one");
    joined(&mut ann, "#two");
    // The key was made in the config directory, as for any client without --home.
    assert!(cfg.join("identity").is_file());

    let h = |n: &str| homes.path().join(n);
    let mut bob = connect_json("bob", srv.addr, &h("b"), "bob", &["#two"], &[]);
    joined(&mut bob, "#two");
    let mut carol = connect_json("carol", srv.addr, &h("c"), "carol", &["#two"], &[]);
    joined(&mut carol, "#two");
    say(&mut bob, "hello from bob");
    message(&mut ann, "bob", "hello from bob");

    ann.line("/ignore Bob");
    ann.wait_for("the ignore answer", WAIT, |v| {
        v["type"] == "status"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("ignoring Bob"))
    });
    say(&mut bob, "hidden one");
    // Carol's later message in the same room arrives after bob's (one conversation, in order).
    say(&mut carol, "carol after one");
    message(&mut ann, "carol", "carol after one");
    ends_ok(&mut ann);
    let shown_before: Vec<_> = ann
        .seen_of("message")
        .iter()
        .filter(|v| v["from"] == "bob")
        .map(|v| v["text"].clone())
        .collect();
    assert_eq!(shown_before, ["hello from bob"], "only before /ignore");
    let list = std::fs::read_to_string(root.path().join("state/chirp/ignore")).expect("list");
    assert!(list.lines().any(|l| l == "bob"), "{list}");

    // A restart: the list holds, for live messages and for the history replayed on join.
    let mut ann = configured("ann again", srv.addr, root.path());
    joined(&mut ann, "#two");
    say(&mut bob, "hidden two");
    say(&mut carol, "carol after two");
    message(&mut ann, "carol", "carol after two");
    ann.line("/ignore");
    ann.wait_for("the list", WAIT, |v| {
        v["type"] == "status" && v["message"] == "ignored: bob"
    });
    ann.line("/unignore bob");
    ann.wait_for("unignored", WAIT, |v| {
        v["type"] == "status" && v["message"] == "no longer ignoring bob"
    });
    say(&mut bob, "seen again");
    message(&mut ann, "bob", "seen again");
    ends_ok(&mut ann);
    let bobs: Vec<_> = ann
        .seen_of("message")
        .iter()
        .filter(|v| v["from"] == "bob")
        .map(|v| v["text"].clone())
        .collect();
    assert_eq!(bobs, ["seen again"], "history and live alike were hidden");
    never_shown(&bob, "ann", "ann said nothing");

    // The log: one file per room, live messages with their senders, nothing ignored.
    let two = std::fs::read_to_string(logs.join("#two.log")).expect("#two.log");
    for want in [
        "<bob> hello from bob",
        "<carol> carol after one",
        "<carol> carol after two",
        "<bob> seen again",
    ] {
        assert_eq!(
            two.lines().filter(|l| l.ends_with(want)).count(),
            1,
            "{want} once in:\n{two}"
        );
    }
    assert!(!two.contains("hidden"), "{two}");
    // Nothing was said in #one: no file; and nothing else in the directory but the log's own
    // record of the last ids written (so that history replayed later is logged once).
    let mut files: Vec<String> = std::fs::read_dir(&logs)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["#two.log", ".last-logged.json"]);

    ends_ok(&mut bob);
    ends_ok(&mut carol);
    srv.terminate();
}

/// A typo in client.toml stops `chirp connect` at once, naming the file and the line.
#[test]
fn an_unknown_key_in_client_toml_is_a_clear_error() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = root.path().join("config").join("chirp");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    let file = cfg.join("client.toml");
    std::fs::write(&file, "nick = \"ann\"\nservre = \"127.0.0.1\"\n").expect("write");
    let mut c = configured("typo", common::lo(9), root.path());
    let st = c.exit(WAIT);
    assert_eq!(st.code(), Some(1), "{}", c.diag());
    let err = c.proc.stderr();
    assert!(
        err.contains(&format!(
            "chirp: error: bad config file {}: line 2, column 1: unknown field `servre`",
            file.display()
        )),
        "{err}"
    );
    // No file and no server: says what to do.
    std::fs::remove_file(&file).expect("rm");
    let mut c = configured("nothing", common::lo(9), root.path());
    let st = c.exit(WAIT);
    assert_eq!(st.code(), Some(1), "{}", c.diag());
    let err = c.proc.stderr();
    assert!(
        err.contains("no server given") && err.contains("client.toml"),
        "{err}"
    );
}

/// `chirp peer` B with `client.toml` in its config directory, talking to A, with `extra` flags.
fn configured_peer(
    root: &Path,
    b: std::net::SocketAddr,
    a: std::net::SocketAddr,
    extra: &[&str],
) -> Chirp {
    let dir = |d: &str| root.join(d).display().to_string();
    let (config, home) = (dir("config"), dir("home"));
    let mut args: Vec<String> = ["peer", "--bind", &b.to_string(), "--to", &a.to_string()]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(["--json".to_owned(), "--home".to_owned()]);
    args.push(common::peer_home("B", b).display().to_string());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Chirp {
        proc: Proc::spawn_env(
            "B",
            CHIRP,
            &args,
            Stdout::Lines,
            &[("XDG_CONFIG_HOME", &config), ("HOME", &home)],
        ),
        addr: b,
        seen: Vec::new(),
    }
}

/// A offers B a file; B's offer event.
fn offer_to_configured_peer(root: &Path, src: &Path, b_extra: &[&str]) -> (Chirp, Chirp, Value) {
    let (mut a, mut b, a_key) = common::retry_bind(|| {
        let [pa, pb] = common::free_ports();
        let (la, lb) = (common::lo(pa), common::lo(pb));
        let a_key = common::fingerprint(&common::peer_home("A", la));
        // B trusts A's key through the file (written before B starts).
        let toml = format!("downloads = \"dl\"\nauto_accept_from = [\"{a_key}\"]\n",);
        let cfg = root.join("config").join("chirp");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        std::fs::write(cfg.join("client.toml"), toml).expect("write client.toml");
        let mut a = Chirp::spawn_peer("A", la, lb, &[]);
        let mut b = configured_peer(root, lb, la, b_extra);
        a.started()?;
        b.started()?;
        Ok((a, b, a_key))
    });
    b.wait_type("peer_up", WAIT);
    a.line(&format!("/send {}", src.display()));
    let offer = b.wait_type("file_offer", WAIT);
    assert_eq!(offer["key"], a_key.as_str(), "{offer}");
    (a, b, offer)
}

/// `chirp peer` takes `auto_accept_from` (and `downloads`, a path relative to the file's
/// directory) from `client.toml` as `chirp connect` does: a listed key's file is accepted
/// unasked and saved there; `--auto-accept-from` on the command line replaces the file's list.
#[test]
fn chirp_peer_takes_auto_accept_from_and_downloads_from_client_toml() {
    let root = tempfile::tempdir().expect("tempdir");
    let src = root.path().join("notes.txt");
    std::fs::write(&src, b"from the trusted key").expect("write");
    let (mut a, mut b, offer) = offer_to_configured_peer(root.path(), &src, &[]);
    assert_eq!(offer["auto"], true, "{offer}\n{}", b.diag());
    let done = b.wait_for("file_done", WAIT, |v| {
        v["type"] == "file_done" || v["type"] == "file_failed"
    });
    assert_eq!(done["type"], "file_done", "{done}\n{}", b.diag());
    let saved = root.path().join("config/chirp/dl/notes.txt");
    assert_eq!(
        std::fs::read(&saved).expect("saved in the file's downloads"),
        b"from the trusted key"
    );
    common::both_exit_ok(&mut a, &mut b);

    // A flag replaces the file's list: A's key is no longer trusted, the offer waits.
    let other = common::fingerprint(&root.path().join("other-home"));
    let (mut a, mut b, offer) =
        offer_to_configured_peer(root.path(), &src, &["--auto-accept-from", &other]);
    assert_eq!(offer["auto"], false, "{offer}\n{}", b.diag());
    b.line("/decline");
    b.wait_for("the decline", WAIT, |v| v["type"] == "file_failed");
    common::both_exit_ok(&mut a, &mut b);
}
