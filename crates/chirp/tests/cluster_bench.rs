//! `chirp bench fanout` against a cluster (issue 15), end to end and not timed: a PostgreSQL
//! and a `nats-server` of the test's own, two `chirp serve --cluster` nodes with the load
//! testing flags, and the bench with both nodes' addresses and pids. The senders are on the
//! first node and the other members are spread over both, so half the deliveries cross from
//! one node to the other through NATS; every one must arrive, once and in order. Every wait
//! is bounded and every process is killed on every path. Without PostgreSQL or nats-server
//! installed the test says so and passes (CI sets CHIRP_REQUIRE_SERVICES=1, which turns that
//! into a failure).
//!
//! Run alone: `cargo test -p chirp --test cluster_bench`.

use std::time::Duration;

use chirp_testsvc::{Nats, Postgres};
use serde_json::Value;

mod common;
use common::*;

/// The bench's own limit for its run, and how long the test waits for it to exit after.
const BENCH_LIMIT_S: u64 = 60;
const BENCH_EXIT: Duration = Duration::from_secs(BENCH_LIMIT_S + 60);

/// Starts node `i` of the cluster on a free port: the database, the bus and the key file
/// every node shares, a data directory of its own, and `chirp bench`'s server flags.
fn node(dir: &std::path::Path, i: usize, pg: &str, nats: &str, key: &str) -> Server {
    let data = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&data).expect("data dir");
    retry_bind(|| {
        let [port] = free_ports::<1>();
        let name = format!("n{i}");
        let args = [
            "--database",
            pg,
            "--cluster",
            nats,
            "--key-file",
            key,
            "--node",
            &name,
            "--burst",
            "1000000",
            "--per-sec",
            "1000000",
            "--max-sessions-per-ip",
            "200000",
            "--nick-claim-burst",
            "200000",
            "--max-connections",
            "200000",
            "--history-on-join",
            "0",
        ];
        Ok(Server::start(&data, &format!("127.0.0.1:{port}"), &args))
    })
}

#[test]
fn a_fanout_across_two_nodes_delivers_everything_once_in_order() {
    if !chirp_testsvc::require("PostgreSQL", chirp_testsvc::postgres_available())
        || !chirp_testsvc::require("nats-server", chirp_testsvc::nats_available())
    {
        return;
    }
    const MEMBERS: u64 = 20;
    const SENDERS: u64 = 2;
    const MESSAGES: u64 = 50;
    let pg = Postgres::start().expect("start PostgreSQL");
    let nats = Nats::start().expect("start nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key").display().to_string();
    // One at a time: the first creates the shared key file, the second reads it.
    let nodes: Vec<Server> = (0..2)
        .map(|i| node(dir.path(), i, &pg.url(), &nats.url(), &key))
        .collect();

    let mut args: Vec<String> = ["bench", "fanout"].map(String::from).to_vec();
    for n in &nodes {
        args.extend(["--server".into(), n.addr.to_string()]);
    }
    for n in &nodes {
        args.extend(["--server-pid".into(), n.proc.pid().to_string()]);
    }
    let (members, senders, messages, limit) = (
        MEMBERS.to_string(),
        SENDERS.to_string(),
        MESSAGES.to_string(),
        BENCH_LIMIT_S.to_string(),
    );
    args.extend(
        [
            "--members",
            &members,
            "--senders",
            &senders,
            "--messages",
            &messages,
            "--runs",
            "1",
            "--limit",
            &limit,
            "--json",
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_to_end(CHIRP, &argv, BENCH_EXIT);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("not one JSON object ({e}); exit {status}\nstdout: {stdout}\nstderr: {stderr}")
    });
    assert!(status.success(), "exit {status}: {v}\nstderr: {stderr}");
    assert_eq!(v["clean"], true, "{v}");
    let run = &v["runs"][0];

    // Every sender's messages to every other member: nothing lost, twice or out of order.
    let expected = SENDERS * MESSAGES * (MEMBERS - 1);
    assert_eq!(run["expected"], expected, "{run}");
    assert_eq!(run["delivered"], expected, "{run}");
    for k in ["lost", "duplicated", "reordered"] {
        assert_eq!(run[k], 0, "{k}: {run}");
    }

    // The senders (members 0 and 1) on the first node, the 18 others alternately on the
    // second and the first: 11 members on the first, 9 on the second, which get every
    // message across the bus.
    let per_node = run["nodes"].as_array().expect("nodes");
    assert_eq!(per_node.len(), 2, "{run}");
    for ((n, server), members) in per_node.iter().zip(&nodes).zip([11, 9]) {
        assert_eq!(n["server"], server.addr.to_string(), "{n}");
        assert_eq!(n["members"], members, "{n}");
        let figures = &n["figures"];
        assert!(figures["rss_kib_end"].as_u64().unwrap_or(0) > 0, "{n}");
        assert!(
            figures["cpu_percent"].as_f64().unwrap_or(-1.0) >= 0.0,
            "{n}"
        );
    }
    // On the first node, the 9 other members get both senders' messages and each sender
    // the other's; on the second, all 9 get both.
    assert_eq!(
        per_node[0]["delivered"],
        (9 * SENDERS + 2) * MESSAGES,
        "{run}"
    );
    assert_eq!(per_node[1]["delivered"], 9 * SENDERS * MESSAGES, "{run}");
    for k in [
        "latency_ms",
        "latency_same_node_ms",
        "latency_other_nodes_ms",
    ] {
        let l = &run[k];
        let (p50, p99, max) = (
            l["p50"].as_f64().expect("p50"),
            l["p99"].as_f64().expect("p99"),
            l["max"].as_f64().expect("max"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{k}: {run}");
    }
    // The cluster's figures are the sum of its nodes'.
    let rss = |f: &Value| f["rss_kib_end"].as_u64().unwrap_or(0);
    assert_eq!(
        rss(&run["server"]),
        per_node.iter().map(|n| rss(&n["figures"])).sum::<u64>(),
        "{run}"
    );

    // And the messages went through the database: both senders' are stored, once.
    let stored = pg
        .psql("SELECT count(*) FROM messages WHERE conv = '#bench'")
        .expect("psql");
    assert_eq!(stored.trim(), (SENDERS * MESSAGES).to_string());

    // The nodes lived through it.
    for mut n in nodes {
        assert!(
            n.proc.try_status().is_none(),
            "a node exited: {}",
            n.proc.stderr()
        );
        n.proc.kill();
    }
}
