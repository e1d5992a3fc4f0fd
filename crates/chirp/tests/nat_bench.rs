//! `chirp bench nat` works end to end, run tiny (not a timed test: its figures are not
//! asserted, only that it measured what it says): the NAT matrix ends direct, direct and
//! relayed; the latency cells put `chirp impair` in the path (no line arrives faster than its
//! delay), on the path they name; every line arrives once, in order; nothing is left behind.
//!
//! Skipped with a message where namespaces cannot be made ([`common::netns`]);
//! `CHIRP_REQUIRE_NETNS=1` makes that a failure.

#![allow(clippy::print_stderr)] // skip notices

mod common;

use std::process::Command;

use common::CHIRP;
use common::netns::{self, Skip, iptables, run};
use serde_json::Value;

/// The proxy's one-way delay in the latency cells, ms.
const DELAY_MS: f64 = 10.0;
/// Lines each way per latency run.
const LINES: u64 = 30;

fn namespaces() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("chirp-nb-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_tiny_nat_bench_measures_every_case_and_cleans_up() {
    let test = "a_tiny_nat_bench_measures_every_case_and_cleans_up";
    if let Err(why) = iptables() {
        return netns::skip(test, &why, "root, iproute2 and iptables with NAT support");
    }
    let before = namespaces();
    let out = Command::new(CHIRP)
        .args([
            "bench",
            "nat",
            "--runs",
            "1",
            "--lines",
            &LINES.to_string(),
            "--rate",
            "100",
            "--loss-list",
            "0.1",
            "--delay",
            "10",
            "--jitter",
            "0",
            "--json",
        ])
        .output()
        .expect("chirp runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        return netns::skip(test, &Skip(stderr.trim().to_owned()), "network namespaces");
    }
    assert!(out.status.success(), "chirp bench nat failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["scenario"], "nat");
    assert_eq!(v["clean"], true, "{v}");

    let matrix = v["matrix"].as_array().expect("matrix");
    let paths: Vec<&str> = matrix
        .iter()
        .map(|m| m["runs"][0]["path"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(paths, ["direct", "direct", "relayed"], "{v}");
    let share = v["direct_share"].as_f64().expect("direct_share");
    assert!((share - 2.0 / 3.0).abs() < 1e-9, "{v}");
    for m in matrix {
        assert_eq!(m["as_expected"], true, "{m}");
        let first = m["first_message_ms"].as_f64().expect("first_message_ms");
        assert!(first > 0.0, "{m}");
        if m["case"]["expected"] == "relayed" {
            // The peers give the direct path 3 s before they relay.
            assert!(first >= 3000.0, "{m}");
        }
    }

    let cells = v["latency"].as_array().expect("latency");
    let names: Vec<(&str, &str)> = cells
        .iter()
        .map(|c| {
            (
                c["case"]["name"].as_str().unwrap_or_default(),
                c["runs"][0]["path"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("reference: direct, no NAT", "direct"),
            ("direct, endpoint-independent both", "direct"),
            ("relayed, symmetric both", "relayed"),
        ],
        "{v}"
    );
    for c in cells {
        assert_eq!(c["clean"], true, "{c}");
        assert_eq!(c["loss"], 0.1, "{c}");
        let run = &c["runs"][0];
        assert_eq!(run["expected"], 2 * LINES, "{c}");
        assert_eq!(run["delivered"], 2 * LINES, "{c}");
        for k in ["missing", "duplicated", "reordered", "damaged"] {
            assert_eq!(run[k], 0, "{k}: {c}");
        }
        let lat = &run["latency_ms"];
        let f = |k: &str| lat[k].as_f64().unwrap_or(f64::NAN);
        // The proxy is in the path: no line is faster than its delay.
        assert!(f("min") >= DELAY_MS, "{c}");
        assert!(
            f("min") <= f("p50") && f("p50") <= f("p99") && f("p99") <= f("max"),
            "{c}"
        );
    }
    let reference = cells[0]["p99_to_reference"].as_f64().expect("ratio");
    assert!((reference - 1.0).abs() < 1e-9, "{v}");

    // Its namespaces are gone.
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn nat_bench_help_has_examples() {
    let out = Command::new(CHIRP)
        .args(["bench", "nat", "--help"])
        .output()
        .expect("chirp runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Examples:") && help.contains("chirp bench nat --lines 0"),
        "{help}"
    );
}
