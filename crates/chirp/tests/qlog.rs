//! `--qlog DIR` on real processes: `chirp serve` + `chirp connect`, and `chirp peer`. Each side
//! writes one qlog file per connection, named by the connection's original destination
//! connection ID and role; every record of every file is checked against the qlog 0.3 schema
//! (`chirp_qlog::validate`), and no file holds the text that was sent. Every wait is bounded;
//! children are killed on every path.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chirp_qlog::validate::{self, CheckedTrace};
use common::connect_json as client;
use common::{CHIRP, Chirp, Server, WAIT, both_exit_ok, free_ports, lo, run_to_end};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The `.sqlog` files in `dir`, by name.
fn qlog_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    for f in &files {
        assert_eq!(
            f.extension().and_then(|e| e.to_str()),
            Some("sqlog"),
            "unexpected file {}",
            f.display()
        );
    }
    files
}

/// `(odcid, role)` from a file name `<16 hex digits>-<role>.sqlog`.
fn name_of(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf-8 name");
    let (odcid, role) = stem.split_once('-').expect("odcid-role");
    assert!(
        odcid.len() == 16 && odcid.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a connection id: {stem}"
    );
    (odcid.to_owned(), role.to_owned())
}

/// Reads and validates a trace; checks what every traced connection must show, and that none
/// of `secrets` appears in the file.
fn checked(path: &Path, role: &str, secrets: &[&str]) -> CheckedTrace {
    let bytes = std::fs::read(path).expect("read qlog");
    for s in secrets {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "{} contains the text {s:?}",
            path.display()
        );
    }
    let trace = validate::check(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vantage = serde_json::to_value(&trace.header.trace.vantage_point.ty).expect("json");
    let group = trace
        .header
        .trace
        .common_fields
        .as_ref()
        .and_then(|c| c.group_id.clone());
    let (odcid, file_role) = name_of(path);
    assert_eq!(file_role, role);
    match trace.named("chirp:became_server").next() {
        // Started as the client; a simultaneous open made it the server side of the peer's
        // attempt, whose ID and role name the file from then on.
        Some(e) => {
            assert_eq!((vantage, role), (serde_json::json!("client"), "server"));
            assert_eq!(e["data"]["odcid"], odcid, "{}", path.display());
        }
        None => {
            assert_eq!(vantage, role, "{}", path.display());
            assert_eq!(group, Some(odcid), "{}", path.display());
        }
    }
    let first = trace.events.first().expect("events");
    assert_eq!(
        first["name"],
        "connectivity:connection_started",
        "{}",
        path.display()
    );
    assert!(trace.named("transport:packet_sent").next().is_some());
    assert!(trace.named("transport:packet_received").next().is_some());
    // Each metrics_updated holds what changed: the latest value of each field is in the last
    // one that holds it.
    let latest = |field: &str| {
        trace
            .named("recovery:metrics_updated")
            .filter_map(|m| m["data"].get(field).cloned())
            .last()
            .unwrap_or_else(|| panic!("{field} in a metrics_updated of {}", path.display()))
    };
    assert!(latest("congestion_window").as_u64().unwrap_or(0) > 0);
    assert!(latest("smoothed_rtt").as_f64().unwrap_or(-1.0) > 0.0);
    trace
}

/// Does the trace show stream data going out (a `stream` frame in a sent packet)?
fn sent_stream_data(trace: &CheckedTrace) -> bool {
    trace.named("transport:packet_sent").any(|e| {
        e["data"]["frames"].as_array().is_some_and(|fs| {
            fs.iter()
                .any(|f| f["frame_type"] == "stream" && f["length"] != 0)
        })
    })
}

/// The last state a trace records.
fn last_state(trace: &CheckedTrace) -> String {
    trace
        .named("connectivity:connection_state_updated")
        .last()
        .and_then(|e| e["data"]["new"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[test]
fn serve_and_connect_write_one_valid_qlog_file_per_connection() {
    let (data, homes) = (tmp(), tmp());
    let (q_server, q_alice, q_bob) = (tmp(), tmp(), tmp());
    let qs = q_server.path().join("traces"); // created by chirp
    let mut server = Server::start(
        data.path(),
        "127.0.0.1:0",
        &["--qlog", qs.to_str().expect("utf-8 path")],
    );
    let qa = q_alice.path().to_str().expect("utf-8 path");
    let qb = q_bob.path().to_str().expect("utf-8 path");
    let home = |n: &str| homes.path().join(n);
    let mut alice = client(
        "alice",
        server.addr,
        &home("a"),
        "alice",
        &["#q"],
        &["--qlog", qa],
    );
    let mut bob = client(
        "bob",
        server.addr,
        &home("b"),
        "bob",
        &["#q"],
        &["--qlog", qb],
    );
    for c in [&mut alice, &mut bob] {
        c.wait_for("joined", WAIT, |v| v["type"] == "join" && v["self"] == true);
    }
    alice.line("first secret line of alice");
    bob.wait_for("alice's line", WAIT, |v| {
        v["type"] == "message" && v["text"] == "first secret line of alice"
    });
    bob.line("bob answers in secret");
    alice.wait_for("bob's line", WAIT, |v| {
        v["type"] == "message" && v["text"] == "bob answers in secret"
    });
    for c in [&mut alice, &mut bob] {
        c.proc.close_stdin();
        let st = c.exit(WAIT);
        assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
    }
    server.terminate();

    let secrets = ["first secret line of alice", "bob answers in secret"];
    let mut client_odcids = BTreeSet::new();
    for dir in [q_alice.path(), q_bob.path()] {
        let files = qlog_files(dir);
        assert_eq!(files.len(), 1, "one connection, one file: {files:?}");
        let trace = checked(&files[0], "client", &secrets);
        assert!(sent_stream_data(&trace));
        assert_eq!(last_state(&trace), "closed", "{}", files[0].display());
        client_odcids.insert(name_of(&files[0]).0);
    }
    let files = qlog_files(&qs);
    assert_eq!(files.len(), 2, "two connections, two files: {files:?}");
    let mut server_odcids = BTreeSet::new();
    for f in &files {
        let trace = checked(f, "server", &secrets);
        assert!(sent_stream_data(&trace));
        server_odcids.insert(name_of(f).0);
    }
    // The same connection has the same name on both ends.
    assert_eq!(client_odcids, server_odcids);
}

#[test]
fn peer_writes_valid_qlog_files() {
    let (q_a, q_b) = (tmp(), tmp());
    let qa = q_a.path().to_str().expect("utf-8 path");
    let qb = q_b.path().to_str().expect("utf-8 path");
    let (mut a, mut b) = Chirp::pair(&["--qlog", qa], &["--qlog", qb]);
    a.line("a secret from a");
    b.wait_for("a's line", WAIT, |v| {
        v["type"] == "message" && v["text"] == "a secret from a"
    });
    b.line("b keeps a secret too");
    a.wait_for("b's line", WAIT, |v| {
        v["type"] == "message" && v["text"] == "b keeps a secret too"
    });
    both_exit_ok(&mut a, &mut b);

    let secrets = ["a secret from a", "b keeps a secret too"];
    // Each side's connections by name; the one that carried the chat is the same connection
    // on both sides, under the same ID (one client, one server, whichever opened it; a
    // simultaneous open renames the side that yielded).
    let names = |dir: &Path| -> BTreeSet<(String, String)> {
        let files = qlog_files(dir);
        assert!(!files.is_empty() && files.len() <= 4, "{files:?}");
        let mut carried = BTreeSet::new();
        for f in &files {
            let (odcid, role) = name_of(f);
            if sent_stream_data(&checked(f, &role, &secrets)) {
                carried.insert((odcid, role));
            }
        }
        carried
    };
    let (a, b) = (names(q_a.path()), names(q_b.path()));
    assert_eq!(
        (a.len(), b.len()),
        (1, 1),
        "one connection carried the chat: {a:?} {b:?}"
    );
    let (a, b) = (a.first().expect("one"), b.first().expect("one"));
    assert_eq!(a.0, b.0, "both ends name the connection alike");
    assert_ne!(a.1, b.1, "one end is the client, the other the server");
}

#[test]
fn a_qlog_path_that_is_not_a_directory_is_a_clear_error_at_start() {
    let dir = tmp();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let file = file.to_str().expect("utf-8 path");
    let [pa, pb] = free_ports();
    let (bind, to) = (lo(pa).to_string(), lo(pb).to_string());
    let home = dir.path().join("home");
    let home = home.to_str().expect("utf-8 path");
    let peer = [
        "peer", "--bind", &bind, "--to", &to, "--json", "--home", home, "--qlog", file,
    ];
    let (status, _, err) = run_to_end(CHIRP, &peer, WAIT);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot start the transport") && err.contains(file),
        "{err}"
    );
    let data = tmp();
    let data = data.path().to_str().expect("utf-8 path");
    let serve = ["serve", "--bind", &bind, "--data-dir", data, "--qlog", file];
    let (status, _, err) = run_to_end(CHIRP, &serve, WAIT);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(file), "{err}");
}

#[test]
fn ping_writes_a_valid_qlog_file_with_its_probes() {
    let (data, home, q) = (tmp(), tmp(), tmp());
    let mut server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let home = home.path().to_str().expect("utf-8 path");
    let qd = q.path().to_str().expect("utf-8 path");
    let args = [
        "ping", &addr, "-c", "3", "-i", "0.05", "--home", home, "--qlog", qd,
    ];
    let (status, out, err) = run_to_end(CHIRP, &args, WAIT);
    server.terminate();
    assert!(status.success(), "ping: {status}\n{out}\n{err}");
    let files = qlog_files(q.path());
    assert_eq!(files.len(), 1, "one connection, one file: {files:?}");
    let trace = checked(&files[0], "client", &[]);
    // The three probes, each a PING frame sent.
    let pings = trace
        .named("transport:packet_sent")
        .filter(|e| {
            e["data"]["frames"]
                .as_array()
                .is_some_and(|fs| fs.iter().any(|f| f["frame_type"] == "ping"))
        })
        .count();
    assert!(pings >= 3, "{pings} PINGs sent");
    let states: Vec<&str> = trace
        .named("connectivity:connection_state_updated")
        .filter_map(|e| e["data"]["new"].as_str())
        .collect();
    assert!(states.contains(&"closing"), "ping closes: {states:?}");
}

#[test]
fn help_shows_the_qlog_option_with_an_example() {
    for command in ["serve", "connect", "peer", "ping"] {
        let (status, out, _) = run_to_end(CHIRP, &[command, "--help"], WAIT);
        assert!(status.success());
        assert!(out.contains("--qlog <DIR>"), "{command} --help:\n{out}");
        assert!(
            out.contains("--qlog /tmp/chirp-qlog"),
            "{command} --help example:\n{out}"
        );
    }
}
