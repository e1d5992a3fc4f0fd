//! `chirp migrate` as a real process: the history a real `chirp serve` wrote to SQLite is
//! moved into a real PostgreSQL that the test starts itself, and a `chirp serve --database`
//! on it goes on where the SQLite server stopped. Errors (a missing file, a bad or
//! unreachable URL, a target that holds a history already) are one clear line and exit 1
//! (exit 2 for what the command line itself rejects). Every wait is bounded and every process
//! stopped on every path. Without PostgreSQL installed the PostgreSQL test says so and passes
//! (CI sets CHIRP_REQUIRE_SERVICES=1, which turns that into a failure).
//!
//! Run alone: `cargo test -p chirp --test migrate`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use chirp_store::{Sqlite, StoreConfig};
use common::{CHIRP, Chirp, Server, WAIT, connect_json, run_to_end};
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Waits until the client is in the server's session and in every room given.
fn ready(c: &mut Chirp, rooms: &[&str]) {
    c.wait_type("connected", WAIT);
    let mut want: BTreeSet<&str> = rooms.iter().copied().collect();
    while !want.is_empty() {
        let v = c.wait_for("joined", WAIT, |v| v["type"] == "join" && v["self"] == true);
        want.remove(v["room"].as_str().unwrap_or(""));
    }
}

fn message(c: &mut Chirp, text: &str) -> Value {
    c.wait_for(&format!("message {text:?}"), WAIT, |v| {
        v["type"] == "message" && v["text"] == text
    })
}

/// The first event so far that satisfies `pred`, or else the next one to come.
fn event(c: &mut Chirp, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    match c.seen.iter().find(|v| pred(v)) {
        Some(v) => v.clone(),
        None => c.wait_for(what, WAIT, pred),
    }
}

fn ends_ok(c: &mut Chirp) {
    c.proc.close_stdin();
    let st = c.exit(WAIT);
    c.drain();
    assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
}

/// `chirp migrate --from FROM --to TO`: (exit code, stdout, stderr).
fn migrate(from: &Path, to: &str) -> (Option<i32>, String, String) {
    let from = from.display().to_string();
    let (st, out, err) = run_to_end(CHIRP, &["migrate", "--from", &from, "--to", to], WAIT);
    (st.code(), out, err)
}

#[test]
fn a_served_sqlite_history_moves_into_postgres_and_the_server_goes_on_there() {
    if !chirp_testsvc::require("PostgreSQL", chirp_testsvc::postgres_available()) {
        return;
    }
    let pg = chirp_testsvc::Postgres::start().expect("start PostgreSQL");
    let data = tmp();
    let homes = tmp();
    let home = |n: &str| homes.path().join(n);

    // A server on SQLite: bob takes his nick and leaves; alice talks in #r, sets its topic
    // and leaves bob a DM.
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let fingerprint = srv.fingerprint.clone();
    let mut b = connect_json("bob", srv.addr, &home("b"), "bob", &[], &[]);
    ready(&mut b, &[]);
    ends_ok(&mut b);
    let mut a = connect_json("alice", srv.addr, &home("a"), "alice", &["#r"], &[]);
    ready(&mut a, &["#r"]);
    for line in [
        "one",
        "two",
        "/topic moved to PostgreSQL",
        "/msg bob while you were away",
    ] {
        a.line(line);
    }
    a.wait_for("the topic", WAIT, |v| v["type"] == "topic");
    message(&mut a, "while you were away");
    while a.seen_of("delivered").len() < 3 {
        a.wait_type("delivered", WAIT);
    }
    ends_ok(&mut a);
    // The operator's steps: stop the server, migrate, start it on PostgreSQL.
    srv.terminate();

    let db = data.path().join("chirp.db");
    let (code, out, err) = migrate(&db, &pg.url());
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    // No progress bar on a pipe: the summary line only.
    assert_eq!(err, "", "stderr on a pipe");
    let target = format!("postgres://chirp@127.0.0.1:{}/chirp", pg.port());
    let summary = out.trim_end();
    assert!(!summary.contains('\n'), "one line: {out:?}");
    // "migrated ... in 0.1 s": everything but the time, exactly. (The moderation entry is the
    // owner of the room the clients created.)
    let expected = format!(
        "migrated 3 messages in 2 conversations, 2 nicks, 1 topic, 0 DM cursors, \
         1 moderation entry, 0 read markers, 0 reactions from {} into {target} in ",
        db.display()
    );
    assert!(
        summary.starts_with(&expected) && summary.ends_with(" s"),
        "{summary}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM messages").expect("psql"),
        "3\n"
    );

    // The same data directory (so the same server key), the history in PostgreSQL.
    let srv = Server::start(data.path(), "127.0.0.1:0", &["--database", &pg.url()]);
    assert_eq!(srv.fingerprint, fingerprint, "the same server key");
    let mut b = connect_json("bob again", srv.addr, &home("b"), "bob", &["#r"], &[]);
    // The DM left for him while he was away on the SQLite server (before or after the join:
    // two conversations are not ordered with each other).
    let dm = event(&mut b, "the DM", |v| {
        v["type"] == "message" && v["text"] == "while you were away"
    });
    assert_eq!(
        (dm["from"].as_str(), dm["to"].as_str()),
        (Some("alice"), Some("bob"))
    );
    let joined = event(&mut b, "joined #r", |v| {
        v["type"] == "join" && v["self"] == true
    });
    assert_eq!(joined["topic"], "moved to PostgreSQL", "{joined}");
    let replay: Vec<(u64, String)> = ["one", "two"]
        .iter()
        .map(|t| {
            let m = event(&mut b, t, |v| v["type"] == "message" && v["text"] == *t);
            assert_eq!(
                (m["history"].as_bool(), m["from"].as_str()),
                (Some(true), Some("alice"))
            );
            (m["id"].as_u64().expect("id"), t.to_string())
        })
        .collect();
    assert_eq!(replay, vec![(1, "one".into()), (2, "two".into())]);
    // Ids go on from where the SQLite server stopped.
    b.line("three");
    let three = message(&mut b, "three");
    assert_eq!(three["id"], 3, "{three}");
    ends_ok(&mut b);
    // Alice's nick came along with her key: someone else cannot take it.
    let mut m = connect_json("mallory", srv.addr, &home("m"), "alice", &[], &[]);
    let st = m.exit(WAIT);
    assert!(!st.success(), "{}", m.diag());

    // Again, into the database that now holds the history: refused, nothing copied.
    let (code, out, err) = migrate(&db, &pg.url());
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "");
    assert!(
        err.starts_with(&format!(
            "chirp: error: cannot migrate {} into {target}: ",
            db.display()
        )),
        "{err}"
    );
    assert!(err.contains("already holds a chirp history"), "{err}");
    assert!(err.contains("nothing was copied"), "{err}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM messages").expect("psql"),
        "4\n"
    );
}

/// What goes wrong before any copy: a clear line and exit 1, or exit 2 for an argument the
/// command line rejects. Needs no PostgreSQL (the address has nothing listening).
#[test]
fn a_missing_file_or_a_bad_url_is_a_clear_error() {
    let dir = tmp();
    let port = chirp_testsvc::free_port();
    let nowhere = format!("postgres://chirp:s3cret@127.0.0.1:{port}/chirp");
    let shown = format!("postgres://chirp@127.0.0.1:{port}/chirp");

    let missing = dir.path().join("chirp.db");
    let (code, out, err) = migrate(&missing, &nowhere);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err.trim_end(),
        format!(
            "chirp: error: cannot migrate {p} into {shown}: database {p}: no such file",
            p = missing.display()
        )
    );
    assert!(!missing.exists(), "a missing source is not created");

    // A real chirp database, and nothing listening at the URL.
    Sqlite::open(&missing, StoreConfig::default())
        .expect("create SQLite")
        .shutdown();
    let (code, out, err) = migrate(&missing, &nowhere);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    assert!(
        err.starts_with(&format!(
            "chirp: error: cannot migrate {} into {shown}: PostgreSQL at {shown}: ",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "the password is never shown: {err}"
    );

    // Not a PostgreSQL URL at all (a file path, say): the command line says so.
    let (code, _, err) = migrate(&missing, "other.db");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
    let (code, _, err) = migrate(&missing, "postgres://chirp@127.0.0.1:notaport/chirp");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid database address"), "{err}");
}
