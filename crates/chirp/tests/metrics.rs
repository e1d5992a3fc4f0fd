//! `chirp serve --metrics`: a real server scraped over HTTP. The text passes Debian's
//! `promtool check metrics`; the counters move as traffic flows; the alert rules of
//! docs/OPERATIONS.md pass `promtool check rules`; and every metric the Grafana dashboard
//! (contrib/grafana/chirp.json) queries is one the server serves.
//!
//! Needs `promtool` (Debian package `prometheus`); without it the test says so and passes,
//! unless CHIRP_REQUIRE_SERVICES=1 (CI), where it fails.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, WAIT, connect_json, have};

const INSTALL: &str = "install it with `apt-get install prometheus`";

/// `GET PATH` over HTTP/1.1: (status code, Content-Type, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the metrics port");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, ctype, body.to_owned())
}

/// Every sample of a scrape: `name{labels}` → value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse().expect("sample value"))
        })
        .collect()
}

/// The metric names (families) a scrape has: histograms by their base name.
fn families(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().expect("name").to_owned())
        .collect()
}

fn value(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:?}", s.keys().collect::<BTreeSet<_>>()))
}

/// Runs `promtool ARGS` with `input` on stdin: (success, stdout + stderr).
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The server's second line: "metrics at http://ADDR/metrics".
fn metrics_addr(server: &mut Server) -> SocketAddr {
    let line = server.proc.recv(WAIT).expect("the metrics line");
    let line = String::from_utf8_lossy(&line).into_owned();
    line.strip_prefix("metrics at http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
}

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn a_scrape_passes_promtool_and_its_counters_follow_the_traffic() {
    if !chirp_testsvc::require_with("promtool", have("promtool"), INSTALL) {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        data.path(),
        "127.0.0.1:0",
        &[
            "--metrics",
            "127.0.0.1:0",
            "--burst",
            "100",
            "--per-sec",
            "100",
        ],
    );
    let at = metrics_addr(&mut server);

    // Before any client: the text is what Prometheus reads, and promtool finds nothing to
    // lint.
    let (status, ctype, before) = get(at, "/metrics");
    assert_eq!(status, 200, "{before}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let (ok, out) = promtool(&["check", "metrics"], &before);
    assert!(ok, "promtool check metrics: {out}\n{before}");
    let b = samples(&before);
    assert_eq!(value(&b, "chirp_messages_stored_total"), 0.0);
    assert_eq!(value(&b, r#"chirp_connections{state="established"}"#), 0.0);
    assert_eq!(
        value(
            &b,
            &format!(
                r#"chirp_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // Anything else is not found.
    assert_eq!(get(at, "/").0, 404);

    // Two users in a room; one says 20 lines, which the other sees.
    const LINES: usize = 20;
    let homes = tempfile::tempdir().expect("tempdir");
    let mut ann = connect_json(
        "ann",
        server.addr,
        &homes.path().join("a"),
        "ann",
        &["#m"],
        &[],
    );
    let mut bob = connect_json(
        "bob",
        server.addr,
        &homes.path().join("b"),
        "bob",
        &["#m"],
        &[],
    );
    for c in [&mut ann, &mut bob] {
        c.wait_for("joined #m", WAIT, |v| {
            v["type"] == "join" && v["self"] == true && v["room"] == "#m"
        });
    }
    let text: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
    ann.proc.write(text.as_bytes());
    let got = bob.messages(LINES, WAIT);
    assert_eq!(got.len(), LINES);
    let mut ids = Vec::new();
    ann.wait_for("every line delivered", WAIT, |v| {
        if v["type"] == "delivered" {
            ids.push(v["id"].as_u64().expect("a delivered id"));
        }
        ids.len() == LINES
    });
    // A history page from the store's side or the cache: either counts.
    ann.line("/history 5");
    ann.wait_type("history_end", WAIT);
    // One change of each kind, and a typing notice, each seen by bob.
    ann.line(&format!("/edit {} line zero, edited", ids[0]));
    bob.wait_type("edited", WAIT);
    ann.line(&format!("/delete {}", ids[1]));
    bob.wait_type("deleted", WAIT);
    ann.line(&format!("/react {} 👍", ids[2]));
    bob.wait_for("the reaction", WAIT, |v| {
        v["type"] == "reaction" && v["removed"] == false
    });
    ann.line(&format!("/unreact {} 👍", ids[2]));
    bob.wait_for("the reaction taken back", WAIT, |v| {
        v["type"] == "reaction" && v["removed"] == true
    });
    ann.line("/typing");
    bob.wait_type("typing", WAIT);

    // The next scrape counts what happened, and still passes promtool. The path samples
    // come every 10 s: wait for the first (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (after, a) = loop {
        let (status, _, body) = get(at, "/metrics");
        assert_eq!(status, 200);
        let a = samples(&body);
        if a.get("chirp_connection_rtt_seconds_count")
            .copied()
            .unwrap_or(0.0)
            >= 2.0
            || Instant::now() > deadline
        {
            break (body, a);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (ok, out) = promtool(&["check", "metrics"], &after);
    assert!(ok, "promtool check metrics: {out}\n{after}");
    let n = LINES as f64;
    assert_eq!(value(&a, "chirp_messages_accepted_total"), n);
    assert_eq!(value(&a, "chirp_messages_stored_total"), n);
    // Each line to bob, and ann's own copy or ack of it.
    assert!(value(&a, "chirp_deliveries_total") >= 2.0 * n, "{after}");
    assert_eq!(value(&a, "chirp_sessions"), 2.0);
    assert_eq!(value(&a, "chirp_users"), 2.0);
    assert_eq!(value(&a, "chirp_rooms"), 1.0);
    assert_eq!(value(&a, "chirp_room_members"), 2.0);
    assert_eq!(value(&a, r#"chirp_connections{state="established"}"#), 2.0);
    assert!(value(&a, "chirp_handshakes_completed_total") >= 2.0);
    assert!(value(&a, "chirp_handshakes_started_total") >= 2.0);
    assert!(
        value(&a, "chirp_datagrams_received_total")
            > value(&b, "chirp_datagrams_received_total") + n,
        "{after}"
    );
    // Every line went out to bob (and its ack to ann) in some datagram, but not one datagram
    // each: lines that come together are packed together, so the count only has to grow; the
    // bytes sent grew by more than the lines' text.
    assert!(
        value(&a, "chirp_datagrams_sent_total") > value(&b, "chirp_datagrams_sent_total"),
        "{after}"
    );
    let text_bytes: usize = (0..LINES).map(|i| format!("line {i}").len()).sum();
    assert!(
        value(&a, "chirp_sent_bytes_total") - value(&b, "chirp_sent_bytes_total")
            > text_bytes as f64,
        "{after}"
    );
    assert!(value(&a, "chirp_received_bytes_total") > value(&a, "chirp_datagrams_received_total"));
    // Messages share packets, so fewer packets than lines may be acknowledged; but some
    // are, and never more than were sent.
    assert!(value(&a, "chirp_packets_acked_total") > value(&b, "chirp_packets_acked_total"));
    assert!(value(&a, "chirp_packets_acked_total") <= value(&a, "chirp_packets_sent_total"));
    for (kind, n) in [
        ("edit", 1.0),
        ("delete", 1.0),
        ("react", 1.0),
        ("unreact", 1.0),
    ] {
        assert_eq!(
            value(&a, &format!(r#"chirp_amends_total{{kind="{kind}"}}"#)),
            n,
            "{after}"
        );
    }
    for (outcome, n) in [("forwarded", 1.0), ("rate_limited", 0.0), ("refused", 0.0)] {
        assert_eq!(
            value(
                &a,
                &format!(r#"chirp_typing_notices_total{{outcome="{outcome}"}}"#)
            ),
            n,
            "{after}"
        );
    }
    let reads = value(&a, r#"chirp_history_reads_total{source="cache"}"#)
        + value(&a, r#"chirp_history_reads_total{source="store"}"#);
    assert!(reads >= 1.0, "{after}");
    // Every message waited for its commit (store writes carry one or more messages).
    assert!(value(&a, "chirp_commit_seconds_count") >= 1.0, "{after}");
    assert!(value(&a, "chirp_commit_seconds_sum") > 0.0, "{after}");
    assert!(value(&a, "chirp_store_batch_ops_count") >= 1.0, "{after}");
    assert!(value(&a, "chirp_store_ops_total") >= n);
    assert!(
        value(&a, "chirp_connection_rtt_seconds_count") >= 2.0,
        "no path sample in 30 s: {after}"
    );
    // Loopback: every sampled RTT is under 100 ms.
    assert_eq!(
        value(&a, r#"chirp_connection_rtt_seconds_bucket{le="0.1"}"#),
        value(&a, "chirp_connection_rtt_seconds_count"),
    );

    // Bounded labels: no series names a nick, a room or an address.
    for key in a.keys() {
        for secret in ["ann", "bob", "#m", "127.0.0.1"] {
            assert!(!key.contains(secret), "{key} names {secret}");
        }
    }

    // The alert rules of docs/OPERATIONS.md pass promtool, and use metrics that exist.
    let ops = repo_file("docs/OPERATIONS.md");
    let rules = ops
        .split("<!-- alert-rules -->")
        .nth(1)
        .and_then(|r| r.split("<!-- /alert-rules -->").next())
        .and_then(|r| r.split("```yaml").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("the alert rules block of docs/OPERATIONS.md");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("chirp-rules.yml");
    std::fs::write(&file, rules).expect("write the rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool check rules");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules: {text}");
    assert!(text.contains("SUCCESS: 3 rules found"), "{text}");
    let served = families(&after);
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("contrib/grafana/chirp.json")).expect("dashboard JSON");
    let mut exprs: Vec<String> = vec![rules.to_owned()];
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    let mut used = BTreeSet::new();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("chirp_") {
                used.insert(word.to_owned());
            }
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| served.contains(*b)))
            .unwrap_or(name);
        assert!(served.contains(base), "{name} is queried but not served");
    }

    drop(ann);
    drop(bob);
    server.terminate();
}
