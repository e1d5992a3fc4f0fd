//! `chirp bench` works end to end (not a timed test): it starts its own server, runs a small
//! fan-out with the real protocol and the raw-UDP reference, and reports every message
//! delivered once and in order, with the server's CPU and memory.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_chirp"))
        .arg("bench")
        .args(args)
        .output()
        .expect("chirp runs");
    assert!(
        out.status.success(),
        "chirp bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn a_small_fanout_delivers_everything_once_in_order() {
    let v = bench(&[
        "fanout",
        "--members",
        "20",
        "--senders",
        "2",
        "--messages",
        "10",
        "--runs",
        "1",
        "--limit",
        "60",
        "--json",
    ]);
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(v["clean"], true, "{v}");
    let run = &v["runs"][0];
    // Two senders' 10 messages each to the 19 others (a sender does not count its own).
    assert_eq!(run["expected"], 2 * 10 * 19);
    assert_eq!(run["delivered"], 2 * 10 * 19, "{run}");
    for k in ["lost", "duplicated", "reordered"] {
        assert_eq!(run[k], 0, "{k}: {run}");
    }
    assert!(run["deliveries_per_sec"].as_f64().unwrap() > 0.0);
    let lat = &run["latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    assert!(lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());
    let server = &run["server"];
    assert!(server["rss_kib_end"].as_u64().unwrap() > 0, "{run}");
    assert!(server["cpu_percent"].as_f64().unwrap() >= 0.0);
    assert!(v["raw_packets_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["ratio_to_raw"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_raw_reference_runs() {
    let v = bench(&["raw", "--seconds", "1", "--runs", "1", "--json"]);
    assert_eq!(v["scenario"], "raw");
    assert!(v["packets_per_sec"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn bench_help_has_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_chirp"))
        .args(["bench", "--help"])
        .output()
        .expect("chirp runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Examples:") && help.contains("chirp bench fanout"),
        "{help}"
    );
}

#[test]
fn idle_sessions_are_held_and_measured() {
    let v = bench(&["idle", "--sessions", "20", "--seconds", "1", "--json"]);
    assert_eq!(v["scenario"], "idle");
    let r = &v["report"];
    assert_eq!(r["sessions"], 20);
    assert!(
        r["rss_kib_held"].as_u64().unwrap() >= r["rss_kib_empty"].as_u64().unwrap(),
        "{r}"
    );
    assert!(r["idle_cpu_percent"].as_f64().unwrap() >= 0.0);
    assert!(r["idle_s"].as_f64().unwrap() >= 1.0, "{r}");
}

#[test]
fn sessions_are_set_up_and_timed() {
    let v = bench(&[
        "handshake",
        "--sessions",
        "40",
        "--concurrency",
        "8",
        "--json",
    ]);
    assert_eq!(v["scenario"], "handshake");
    let r = &v["report"];
    assert_eq!(r["completed"], 40, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["sessions_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    let s = &r["setup_ms"];
    assert!(s["p50"].as_f64().unwrap() > 0.0);
    assert!(
        s["p50"].as_f64().unwrap() <= s["p99"].as_f64().unwrap(),
        "{r}"
    );
}

#[test]
fn a_flood_is_measured_with_and_without_sessions() {
    let v = bench(&[
        "flood",
        "--sessions",
        "0,20",
        "--probes",
        "10",
        "--interval",
        "10",
        "--json",
    ]);
    assert_eq!(v["scenario"], "flood");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{v}");
    for (run, sessions) in runs.iter().zip([0, 20]) {
        assert_eq!(run["sessions"], sessions, "{run}");
        assert_eq!(run["probes_lost"], 0, "every probe came back: {run}");
        let kinds: Vec<&str> = run["kinds"]
            .as_array()
            .expect("kinds")
            .iter()
            .filter_map(|k| k.as_str())
            .collect();
        assert_eq!(kinds, ["random", "initial", "reset", "unknown_data"]);
        let cost = &run["cost"];
        assert!(cost["sent"].as_u64().unwrap() > 0, "{run}");
        assert!(
            cost["cpu_us_per_datagram"].as_f64().unwrap() >= 0.0,
            "{run}"
        );
        for phase in ["unloaded_ms", "flooded_ms"] {
            let l = &run[phase];
            assert!(l["p50"].as_f64().unwrap() > 0.0, "{phase}: {run}");
            assert!(l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
        }
    }
}
