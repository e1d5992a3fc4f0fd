//! `chirp ping` as a real process against real `chirp serve`, `chirp peer` and `chirp impair`
//! processes on loopback: exit status, the lines it prints (parsed), the key check, the JSON
//! object, its one-time key and `--as-me`, and a ping of a peer in the middle of a chat (which
//! loses none of its lines). Every process is killed on every path and every wait is bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chirp_keys::{KnownKeys, PublicKey};
use common::{
    CHIRP, Chirp, Proc, Server, Stdout, WAIT, both_exit_ok, fingerprint, free_ports, lo,
    retry_bind, run_to_end,
};
use serde_json::Value;

/// Longest a ping of a few probes may take here (a loaded 2-core machine included).
const PING_WAIT: Duration = Duration::from_secs(30);

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `chirp ping ARGS --home HOME`, to its end: (exit code, stdout, stderr).
fn ping(home: &Path, args: &[&str]) -> (i32, String, String) {
    let home = home.display().to_string();
    let mut all: Vec<&str> = vec!["ping"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--home", &home]);
    let (status, out, err) = run_to_end(CHIRP, &all, PING_WAIT);
    let code = status
        .code()
        .unwrap_or_else(|| panic!("ping killed by a signal: {status}\n{out}\n{err}"));
    (code, out, err)
}

/// `chirp ping ... --json`: the exit code and the one JSON object it printed.
fn ping_json(home: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = ping(home, &all);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected:\n{out}\n{err}");
    let v: Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    assert_eq!(err, "", "--json wrote to stderr");
    (code, v)
}

/// The round-trip times of the `seq=N rtt=X ms` lines, in order, checking their form.
fn probe_lines(out: &str) -> Vec<(u64, Option<f64>)> {
    out.lines()
        .filter(|l| l.starts_with("seq="))
        .map(|l| {
            let (seq, rest) = l["seq=".len()..]
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let seq: u64 = seq.parse().unwrap_or_else(|_| panic!("bad seq in {l:?}"));
            if rest.starts_with("lost") {
                return (seq, None);
            }
            let rtt = rest
                .strip_prefix("rtt=")
                .and_then(|r| r.strip_suffix(" ms"))
                .and_then(|r| r.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("bad rtt in {l:?}"));
            (seq, Some(rtt))
        })
        .collect()
}

/// The statistics: (sent, answered, loss %) and the four rtt figures, if printed.
fn statistics(out: &str) -> ((u64, u64, f64), Option<[f64; 4]>) {
    let counts = out
        .lines()
        .find(|l| l.contains(" probes sent, "))
        .unwrap_or_else(|| panic!("no statistics in {out}"));
    // "N probes sent, M answered, X% loss, time T ms"
    let words: Vec<&str> = counts.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let n = |i: usize| -> f64 {
        words[i]
            .trim_end_matches('%')
            .parse()
            .unwrap_or_else(|_| panic!("bad statistics line {counts:?}"))
    };
    let sent = n(0) as u64;
    let answered = n(3) as u64;
    let loss = n(5);
    let rtt = out.lines().find_map(|l| {
        let figures = l
            .strip_prefix("rtt min/avg/max/mdev = ")?
            .strip_suffix(" ms")?;
        let v: Vec<f64> = figures
            .split('/')
            .map(|x| x.parse().expect("figure"))
            .collect();
        Some([v[0], v[1], v[2], v[3]])
    });
    ((sent, answered, loss), rtt)
}

#[test]
fn a_server_answers_and_its_key_is_the_one_it_printed() {
    let data = tempdir();
    let home = tempdir();
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let (code, out, err) = ping(home.path(), &[&addr, "-c", "3", "-i", "0.2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("CHIRP PING {addr} ({addr}): 3 probes")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("key {}: not in known_keys", server.fingerprint)),
        "{out}"
    );
    let probes = probe_lines(&out);
    assert_eq!(probes.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    for (seq, rtt) in &probes {
        let rtt = rtt.unwrap_or_else(|| panic!("probe {seq} lost on loopback\n{out}"));
        assert!(rtt > 0.0 && rtt < 1000.0, "{out}");
    }
    assert!(
        out.contains(&format!("--- {addr} chirp ping statistics ---")),
        "{out}"
    );
    let ((sent, answered, loss), rtt) = statistics(&out);
    assert_eq!((sent, answered, loss), (3, 3, 0.0), "{out}");
    let [min, avg, max, mdev] = rtt.expect("rtt figures");
    assert!(min <= avg && avg <= max && mdev >= 0.0, "{out}");
    assert_eq!(err, "");
    // Ping reads known_keys and never writes it; its key is a one-time one, never written
    // either (no identity appears in the home directory).
    assert!(!home.path().join("known_keys").exists());
    assert!(!home.path().join("identity").exists());

    // Pinned to the key the server printed: the same, said so.
    let (code, out, err) = ping(
        home.path(),
        &[&addr, "-c", "1", "--server-key", &server.fingerprint],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("key {}: matches --server-key", server.fingerprint)),
        "{out}"
    );
    // Remembered (as `chirp connect` would have): said so.
    let key = PublicKey::from_hex(&chirp_keys_hex(data.path())).expect("server key");
    KnownKeys::new(home.path().join("known_keys"))
        .check(&addr, key)
        .expect("remember");
    let (code, out, _) = ping(home.path(), &[&addr, "-c", "1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("matches known_keys"), "{out}");
}

/// The server's public key, as hex, from the identity in its data directory.
fn chirp_keys_hex(data: &Path) -> String {
    let id = chirp_keys::Identity::load(&data.join("identity")).expect("server identity");
    id.public().to_hex()
}

#[test]
fn json_is_one_object_whose_fields_agree() {
    let data = tempdir();
    let home = tempdir();
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let (code, v) = ping_json(home.path(), &[&addr, "-c", "4", "-i", "0.1"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["type"], "ping");
    assert!(v["ts"].is_string());
    assert_eq!(v["host"], addr.as_str());
    assert_eq!(v["address"], addr.as_str());
    assert_eq!(v["key"], server.fingerprint.as_str());
    assert_eq!(v["key_status"], "unknown");
    assert!(v["handshake_ms"].as_f64().is_some_and(|h| h > 0.0), "{v}");
    let probes = v["probes"].as_array().expect("probes");
    assert_eq!(v["sent"], 4);
    assert_eq!(probes.len(), 4);
    let rtts: Vec<f64> = probes.iter().filter_map(|p| p["rtt_ms"].as_f64()).collect();
    assert_eq!(v["answered"], rtts.len() as u64);
    assert_eq!(v["lost"], (probes.len() - rtts.len()) as u64);
    let loss = v["loss_percent"].as_f64().expect("loss");
    assert!(
        (loss - 100.0 * (4 - rtts.len()) as f64 / 4.0).abs() < 1e-9,
        "{v}"
    );
    let r = &v["rtt_ms"];
    let fig = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("rtt_ms.{k} in {v}"));
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
    assert!(
        (fig("min") - min).abs() < 1e-6 && (fig("max") - max).abs() < 1e-6,
        "{v}"
    );
    assert!((fig("avg") - mean).abs() < 1e-3, "{v}");
    assert!(fig("mdev") >= 0.0 && fig("mdev") <= max - min, "{v}");
    assert!(v["time_ms"].as_f64().is_some_and(|t| t >= 300.0), "{v}");
    assert_eq!(v["messages_ignored"], 0);
    assert!(v["failure"].is_null(), "{v}");
    assert_eq!(v["exit"], 0);
}

/// The line ping prints when a peer refuses its one-time key.
const ONE_TIME_REFUSED: &str = "is up: it answered, then refused ping's one-time key";

#[test]
fn a_peer_that_takes_our_key_answers_and_one_that_does_not_refuses() {
    let home = tempdir();
    let our_fp = fingerprint(home.path());
    // A peer whose partner is nowhere (nothing listens on its --to), pinned to our key.
    let (peer, refusing) = retry_bind(|| {
        let [pp, pr, nobody] = free_ports();
        let peer = Chirp::peer("peer", lo(pp), lo(nobody), &["--peer-key", &our_fp])?;
        // Another that knows no key of ours, with nobody to ask (--json): it refuses us.
        let refusing = Chirp::peer("refusing", lo(pr), lo(nobody), &[])?;
        Ok((peer, refusing))
    });
    let peer_fp = fingerprint(&common::peer_home("peer", peer.addr));
    let (code, out, err) = ping(
        home.path(),
        &[&peer.addr_str(), "-c", "2", "-i", "0.2", "--as-me"],
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", peer.diag());
    assert_eq!(
        probe_lines(&out).iter().filter(|p| p.1.is_some()).count(),
        2,
        "{out}"
    );
    assert!(out.contains(&format!("key {peer_fp}: ")), "{out}");

    // Our own key refused: an error, exit 1.
    let (code, out, err) = ping(home.path(), &[&refusing.addr_str(), "-c", "2", "--as-me"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("refused by the peer"), "{err}");
    assert!(probe_lines(&out).is_empty(), "{out}");
    assert!(statistics(&out).0 == (0, 0, 0.0), "{out}");

    // Without --as-me, ping's one-time key is refused by both: each proved its key first, so
    // ping says it is up (exit 0), with its key, and sends no probe.
    for (p, name) in [(&peer, "peer"), (&refusing, "refusing")] {
        let fp = fingerprint(&common::peer_home(name, p.addr));
        let (code, out, err) = ping(home.path(), &[&p.addr_str(), "-c", "2"]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            out.contains(&format!("{} {ONE_TIME_REFUSED}", p.addr_str())),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l.starts_with(&format!(
                "key {fp}: not in known_keys (not remembered by ping); answered in "
            ))),
            "{out}"
        );
        assert!(probe_lines(&out).is_empty(), "{out}");
        assert_eq!(statistics(&out).0, (0, 0, 0.0), "{out}");
        assert_eq!(err, "", "not an error");
    }
}

/// Issue 16: `chirp ping` against a real `chirp peer` B in the middle of its chat with a real
/// `chirp peer` A, run on A's host with A's home directory, while both type lines:
/// - by default (a one-time key) B refuses it, ping says B is up and exits 0, and B's user sees
///   the refusal; three pings in a row;
/// - with --as-me (A's key) B answers every probe, and sends ping no chat line.
///
/// Either way every line typed meanwhile, both ways, arrives once and in order, and neither
/// peer sees the other go down or come up again.
#[test]
fn pinging_a_peer_in_a_chat_loses_none_of_its_lines() {
    const LINES: usize = 40;
    let (mut a, mut b) = Chirp::pair(&[], &[]);
    a.wait_type("peer_up", WAIT);
    b.wait_type("peer_up", WAIT);
    let home_a = common::peer_home("A", a.addr);
    let b_fp = fingerprint(&common::peer_home("B", b.addr));
    let target = b.addr_str();
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for as_me in [false, true] {
        let runs: Vec<(i32, String, String)> = std::thread::scope(|s| {
            let pinging = s.spawn(|| {
                if as_me {
                    let args = [
                        target.as_str(),
                        "-c",
                        "20",
                        "-i",
                        "0.05",
                        "--as-me",
                        "--json",
                    ];
                    vec![ping(&home_a, &args)]
                } else {
                    (0..3).map(|_| ping(&home_a, &[target.as_str()])).collect()
                }
            });
            // Lines both ways, 25 ms apart, while ping runs.
            for i in 0..LINES {
                let (la, lb) = (format!("a {as_me} {i}"), format!("b {as_me} {i}"));
                a.line(&la);
                b.line(&lb);
                from_a.push(la);
                from_b.push(lb);
                std::thread::sleep(Duration::from_millis(25));
            }
            pinging.join().expect("the ping thread")
        });
        for (code, out, err) in &runs {
            assert_eq!(*code, 0, "{out}\n{err}\n{}", b.diag());
            if as_me {
                let v: Value = serde_json::from_str(out.trim())
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
                assert_eq!(v["as_me"], true, "{v}");
                assert_eq!(v["key"], b_fp.as_str(), "{v}");
                assert_eq!(v["key_status"], "known", "{v}");
                assert_eq!(
                    (v["sent"].as_u64(), v["answered"].as_u64()),
                    (Some(20), Some(20)),
                    "{v}"
                );
                assert_eq!(v["messages_ignored"], 0, "B sent ping chat lines: {v}");
                assert!(v["failure"].is_null(), "{v}");
            } else {
                assert!(
                    out.contains(&format!("{target} {ONE_TIME_REFUSED}")),
                    "{out}\n{err}"
                );
                assert!(
                    out.contains(&format!("key {b_fp}: matches known_keys; answered in ")),
                    "{out}"
                );
                assert!(probe_lines(out).is_empty(), "{out}");
            }
        }
        let at_b = b.messages(LINES, WAIT);
        let at_a = a.messages(LINES, WAIT);
        assert_eq!(at_b, from_a[from_a.len() - LINES..], "{}", b.diag());
        assert_eq!(at_a, from_b[from_b.len() - LINES..], "{}", a.diag());
        if !as_me {
            // B's user saw ping's key refused, at ping's address (not A's).
            let a_port = format!("{} (not", a.addr_str());
            let refusals: Vec<&Value> = b
                .seen_of("error")
                .into_iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("refusing peer 127.0.0.1:"))
                })
                .collect();
            assert!(!refusals.is_empty(), "{}", b.diag());
            assert!(
                refusals
                    .iter()
                    .all(|e| !e["message"].as_str().unwrap_or("").contains(&a_port)),
                "{}",
                b.diag()
            );
        }
    }
    for c in [&a, &b] {
        assert_eq!(c.seen_of("peer_up").len(), 1, "{}", c.diag());
        assert!(c.seen_of("peer_down").is_empty(), "{}", c.diag());
    }
    // Nothing came twice, and the chat ends well.
    a.poll();
    b.poll();
    assert_eq!(a.seen_of("message").len(), 2 * LINES, "{}", a.diag());
    assert_eq!(b.seen_of("message").len(), 2 * LINES, "{}", b.diag());
    for (c, other) in [(&a, b.addr_str()), (&b, a.addr_str())] {
        assert!(
            c.seen_of("message")
                .iter()
                .all(|m| m["from"] == other.as_str()),
            "{}",
            c.diag()
        );
    }
    both_exit_ok(&mut a, &mut b);
}

#[test]
fn nobody_listening_fails_within_the_timeout() {
    let home = tempdir();
    let [port] = free_ports();
    let addr = lo(port).to_string();
    let start = Instant::now();
    let (code, out, err) = ping(home.path(), &[&addr, "-c", "3", "-W", "1"]);
    let took = start.elapsed();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("no answer within 1.0 s"), "{err}");
    assert!(probe_lines(&out).is_empty(), "{out}");
    // The timeout, the CLOSE's linger (at most 2 s), and a process start on a busy machine.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_key_that_is_not_the_expected_one_ends_ping_before_any_probe() {
    let data = tempdir();
    let home = tempdir();
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let other = fingerprint(tempdir().path());
    let (code, out, err) = ping(home.path(), &[&addr, "--server-key", &other]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "the key presented is {}, but --server-key pins {other}",
            server.fingerprint
        )),
        "{err}"
    );
    assert!(probe_lines(&out).is_empty(), "{out}");
    assert_eq!(statistics(&out).0, (0, 0, 0.0), "{out}");
    let (code, v) = ping_json(home.path(), &[&addr, "--server-key", &other]);
    assert_eq!(code, 2);
    assert_eq!(v["failure"]["kind"], "key_mismatch", "{v}");
    assert_eq!(v["key"], server.fingerprint.as_str(), "{v}");
    assert_eq!(v["key_status"], "pin_differs", "{v}");
    assert_eq!(v["sent"], 0);
    assert_eq!(v["exit"], 2);

    // Another key remembered for it in known_keys: refused the same way.
    let stranger = chirp_keys::Identity::generate().expect("key").public();
    KnownKeys::new(home.path().join("known_keys"))
        .check(&addr, stranger)
        .expect("remember");
    let (code, out, err) = ping(home.path(), &[&addr]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "remembered for it in known_keys is {}",
            stranger.fingerprint()
        )),
        "{err}"
    );
    assert!(probe_lines(&out).is_empty(), "{out}");
}

#[test]
fn loss_through_impair_is_counted() {
    let data = tempdir();
    let home = tempdir();
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let (mut proxy, listen) = retry_bind(|| {
        let [port] = free_ports();
        let args: Vec<String> = [
            "impair",
            "--listen",
            &lo(port).to_string(),
            "--to",
            &server.addr.to_string(),
            "--loss",
            "0.2",
            "--seed",
            "3",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut p = Proc::spawn("impair", CHIRP, &args, Stdout::Lines);
        // Its start line comes once the socket is bound.
        match p.recv(common::WAIT) {
            Ok(_) => Ok((p, lo(port))),
            Err(_) => {
                let _ = p.wait_exit(Duration::from_secs(2));
                Err(p.stderr())
            }
        }
    });
    let (code, v) = ping_json(
        home.path(),
        &[&listen.to_string(), "-c", "40", "-i", "0.05", "-W", "10"],
    );
    proxy.kill();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["key"], server.fingerprint.as_str());
    assert_eq!(v["sent"], 40);
    let (answered, lost) = (v["answered"].as_u64(), v["lost"].as_u64());
    let (answered, lost) = (answered.expect("answered"), lost.expect("lost"));
    assert!(lost > 0 && answered > 0, "{v}");
    assert_eq!(answered + lost, 40, "every probe has its outcome: {v}");
    let declared = v["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .filter(|p| p["lost"].is_string())
        .count() as u64;
    assert_eq!(declared, lost, "{v}");
}
