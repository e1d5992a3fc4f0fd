//! `chirp connect A B`: when the server in use dies, the client moves to the next address by
//! itself. Real processes on loopback: two `chirp serve` sharing one identity key (as the nodes
//! of a cluster do), a line-mode client given both, `kill -9` of the first. Every wait is
//! bounded, and every process is killed on every path (`Proc` and `Server` kill on drop).
//!
//! The two servers here do not share a store (the cluster's shared store is not what is
//! tested), so B's message ids do not continue A's: the client's own copy of a line stored by
//! B can fall at or below an id already seen on A and is then not shown again; B's
//! acknowledgement (`delivered`) and another client of B seeing the line are what count.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{CHIRP, Proc, Server, Stdout, WAIT, connect_json, run_to_end};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The server's identity key in its data directory (`chirp::id::KEY_FILE`).
const KEY_FILE: &str = "identity";

/// Starts a server on a free loopback port (the OS picks it: port 0).
fn server(dir: &Path) -> Server {
    Server::start(dir, "127.0.0.1:0", &[])
}

/// Starts a second node: with `same_key`, a copy of `first`'s key goes into its data
/// directory before it starts, so both present one key.
fn second(first_dir: &Path, dir: &Path, same_key: bool) -> Server {
    if same_key {
        std::fs::copy(first_dir.join(KEY_FILE), dir.join(KEY_FILE)).expect("copy the key");
    }
    server(dir)
}

/// A line-mode (human) `chirp connect` child, every line it printed kept.
struct Client {
    proc: Proc,
    lines: Vec<String>,
}

impl Client {
    fn start(servers: &[String], home: &Path, extra: &[&str]) -> Client {
        let mut args: Vec<String> = vec!["connect".into()];
        args.extend(servers.iter().cloned());
        for a in [
            "--nick",
            "ann",
            "--join",
            "#r",
            "--line",
            "--idle-timeout",
            "2",
        ] {
            args.push(a.into());
        }
        args.push("--home".into());
        args.push(home.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Client {
            proc: Proc::spawn("ann", CHIRP, &args, Stdout::Lines),
            lines: Vec::new(),
        }
    }

    /// Waits for the next line (after those read) that satisfies `pred`; panics with every
    /// line and stderr after `timeout` or if stdout closes first.
    fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.proc.recv(left) {
                Ok(raw) => {
                    let line = String::from_utf8_lossy(&raw).into_owned();
                    self.lines.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what} within {timeout:?}\n{}", self.diag()),
            }
        }
    }

    fn type_line(&mut self, text: &str) {
        self.proc.write(format!("{text}\n").as_bytes());
    }

    /// After the process exited: the rest of what it printed.
    fn drain(&mut self) {
        while let Ok(raw) = self.proc.recv(Duration::from_secs(5)) {
            self.lines.push(String::from_utf8_lossy(&raw).into_owned());
        }
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines.iter().filter(|l| pred(l)).count()
    }

    fn diag(&self) -> String {
        format!(
            "--- ann's lines:\n{}\n--- ann's stderr:\n{}",
            self.lines.join("\n"),
            self.proc.stderr()
        )
    }
}

#[test]
fn a_killed_server_is_left_for_the_next_address_with_one_disconnected_line() {
    let (data_a, data_b, homes) = (tmp(), tmp(), tmp());
    let mut a = server(data_a.path());
    let b = second(data_a.path(), data_b.path(), true);
    assert_eq!(a.fingerprint, b.fingerprint, "one key, as in a cluster");
    let (addr_a, addr_b) = (a.addr.to_string(), b.addr.to_string());

    // Bob is on B only: he sees what ann says there.
    let mut bob = connect_json(
        "bob",
        b.addr,
        &homes.path().join("bob"),
        "bob",
        &["#r"],
        &[],
    );
    bob.wait_type("connected", WAIT);
    bob.wait_for("join", WAIT, |v| v["type"] == "join" && v["self"] == true);

    let mut ann = Client::start(
        &[addr_a.clone(), addr_b.clone()],
        &homes.path().join("ann"),
        &[],
    );
    let hello = ann.wait("greeting", WAIT, |l| l.starts_with("* chirp connect to"));
    assert!(
        hello.contains(&addr_a) && hello.contains(&format!("then to {addr_b}")),
        "{hello}"
    );
    ann.wait("connection to A", WAIT, |l| {
        l.starts_with(&format!(
            "* connected to {addr_a}; server key {}",
            a.fingerprint
        ))
    });
    ann.wait("welcome", WAIT, |l| l == "* connected as ann");
    ann.wait("join", WAIT, |l| l.starts_with("* you joined #r"));
    ann.type_line("hello A");
    ann.wait("A's acknowledgement", WAIT, |l| {
        l.starts_with("* delivered #")
    });

    a.proc.kill();
    let killed = Instant::now();
    // Typed while nobody answers: it waits, and goes to B.
    ann.type_line("hello B");
    let down = ann.wait("disconnected", WAIT, |l| l.starts_with("* disconnected"));
    assert!(
        down.starts_with(&format!(
            "* disconnected from {addr_a}: no answer from the server"
        )) && down.contains(&format!("reconnecting to {addr_b} in")),
        "{down}\n{}",
        ann.diag()
    );
    let trusted = ann.wait("B's key accepted", WAIT, |l| {
        l.contains("first contact with")
    });
    assert!(
        trusted.contains(&addr_b) && trusted.contains(&format!("remembered for {addr_a}")),
        "{trusted}"
    );
    ann.wait("connection to B", WAIT, |l| {
        l.starts_with(&format!(
            "* connected to {addr_b}; server key {}",
            b.fingerprint
        ))
    });
    ann.wait("welcome from B", WAIT, |l| l == "* connected as ann");
    ann.wait("B's acknowledgement", WAIT, |l| {
        l.starts_with("* delivered #")
    });
    let took = killed.elapsed();
    // The idle timeout (2 s) declares A gone, a first backoff (at most 0.32 s), a handshake.
    assert!(
        took < Duration::from_secs(8),
        "moved to B after {took:?}\n{}",
        ann.diag()
    );
    let seen = bob.wait_for("ann's line on B", WAIT, |v| v["type"] == "message");
    assert_eq!(
        (&seen["from"], &seen["text"]),
        (&"ann".into(), &"hello B".into())
    );

    // End of input: everything is stored, so ann leaves with 0.
    ann.proc.close_stdin();
    let status = ann.proc.wait_exit(WAIT);
    ann.drain();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        ann.diag()
    );
    // One disconnection reported, no retries in between, two welcomes, each line delivered
    // once and shown at most once.
    assert_eq!(
        ann.count(|l| l.starts_with("* disconnected")),
        1,
        "{}",
        ann.diag()
    );
    assert_eq!(
        ann.count(|l| l.starts_with("* connecting")),
        0,
        "{}",
        ann.diag()
    );
    assert_eq!(
        ann.count(|l| l == "* connected as ann"),
        2,
        "{}",
        ann.diag()
    );
    assert_eq!(
        ann.count(|l| l.starts_with("* delivered #")),
        2,
        "{}",
        ann.diag()
    );
    assert_eq!(
        ann.count(|l| l.contains("<ann> hello A")),
        1,
        "{}",
        ann.diag()
    );
    assert!(
        ann.count(|l| l.contains("<ann> hello B")) <= 1,
        "{}",
        ann.diag()
    );
    assert!(
        !ann.lines.iter().any(|l| l.starts_with('!')),
        "{}",
        ann.diag()
    );
    // B's key is now remembered for B's address too.
    let known =
        std::fs::read_to_string(homes.path().join("ann").join("known_keys")).expect("known_keys");
    assert!(
        known.lines().any(|l| l.starts_with(&format!("{addr_b} "))),
        "{known}"
    );
}

#[test]
fn a_next_address_with_another_key_is_refused_naming_it() {
    let (data_a, data_b, homes) = (tmp(), tmp(), tmp());
    let mut a = server(data_a.path());
    let b = second(data_a.path(), data_b.path(), false);
    assert_ne!(a.fingerprint, b.fingerprint);
    let (addr_a, addr_b) = (a.addr.to_string(), b.addr.to_string());
    let mut ann = Client::start(
        &[addr_a.clone(), addr_b.clone()],
        &homes.path().join("ann"),
        &[],
    );
    ann.wait("welcome", WAIT, |l| l == "* connected as ann");
    a.proc.kill();
    ann.wait("disconnected", WAIT, |l| l.starts_with("* disconnected"));
    let status = ann.proc.wait_exit(WAIT);
    ann.drain();
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}\n{}",
        ann.diag()
    );
    let all = format!("{}\n{}", ann.lines.join("\n"), ann.proc.stderr());
    assert!(
        all.contains(&format!("refusing server {addr_b}"))
            && all.contains(&format!(
                "the key remembered for {addr_a} is {}",
                a.fingerprint
            ))
            && all.contains(&b.fingerprint),
        "{all}"
    );
    assert_eq!(ann.count(|l| l.starts_with("* connected to")), 1, "{all}");
}

#[test]
fn a_bad_address_in_the_list_is_named_and_help_shows_a_cluster() {
    let home = tmp();
    let home = home.path().display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["127.0.0.1:7667", "127.0.0.1:0"],
            "invalid server address '127.0.0.1:0' (number 2 of the 2 given): port 0 is out of range (1-65535)",
        ),
        (
            &["127.0.0.1:7667", "127.0.0.1:x", "127.0.0.1:7668"],
            "invalid server address '127.0.0.1:x' (number 2 of the 3 given): 'x' is not a port number",
        ),
        (
            &["127.0.0.1:7667", "127.0.0.1:7668", "127.0.0.1"],
            "invalid server address '127.0.0.1' (number 3 of the 3 given): it is 127.0.0.1:7667, as '127.0.0.1:7667' is",
        ),
        (&["127.0.0.1:7667", "[::1]:7667"], "different IP versions"),
    ];
    for (servers, want) in cases {
        let mut args = vec!["connect"];
        args.extend_from_slice(servers);
        args.extend_from_slice(&["--nick", "ann", "--home", &home, "--line"]);
        let (status, out, err) = run_to_end(CHIRP, &args, Duration::from_secs(10));
        assert!(!status.success(), "{servers:?}: {out}");
        assert!(err.contains(want), "{servers:?}: {err}");
    }
    let (status, out, _) = run_to_end(CHIRP, &["connect", "--help"], Duration::from_secs(10));
    assert!(status.success());
    assert!(
        out.contains("chirp connect 10.0.0.1:7667 10.0.0.2:7667 10.0.0.3 --nick ann"),
        "{out}"
    );
}
