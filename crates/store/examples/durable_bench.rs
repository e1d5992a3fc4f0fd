//! Durable messages per second through the group-committing writer.
//!
//! `cargo run --release -p chirp-store --example durable_bench [MESSAGES] [RUNS] [DATABASE]`
//!
//! DATABASE is a `postgres://` URL (each run writes to a conversation of its own there), or
//! absent: SQLite, a fresh file per run in a temporary directory (so on the disk that holds
//! it). Two loads each run:
//! - `one at a time`: every message waits for its commit before the next is written; one fsync
//!   per message, the latency-bound floor.
//! - `pipelined`: all messages are queued at once, as a busy server does; the writer commits
//!   whatever queued during the previous fsync in one transaction.
//!
//! Each run's rate is messages / wall time until the last commit returned; the median is shown.

#![allow(clippy::print_stdout)] // a benchmark prints its results

use std::time::Instant;

use chirp_store::{Database, NewMessage, Op, StoreConfig};

fn record(conv: &str, i: u64) -> Op {
    Op::Message(NewMessage {
        conv: conv.into(),
        ts_ms: 1_764_650_000_000 + i as i64,
        from_key: [7; 32],
        from_nick: "bench".into(),
        to_key: None,
        to_nick: None,
        kind: 0,
        text: "a typical chat line of about sixty bytes, give or take a few".into(),
        client_ref: Some((1, i)),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let url = args.next();
    let one_n = (n / 20).max(100);
    let mut one = Vec::new();
    let mut piped = Vec::new();
    let mut commits = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = match &url {
            Some(u) => Database::parse(u).expect("database"),
            None => Database::Sqlite(dir.path().join("bench.db")),
        };
        let conv = format!("#bench{}-{run}", std::process::id());
        let store = chirp_store::open(&db, StoreConfig::default())
            .await
            .expect("open");
        let t = Instant::now();
        for i in 1..=one_n {
            store.write(vec![record(&conv, i)]).await.expect("commit");
        }
        one.push(one_n as f64 / t.elapsed().as_secs_f64());
        let before = store.stats();
        let t = Instant::now();
        let writes: Vec<_> = (one_n + 1..=one_n + n)
            .map(|i| store.write(vec![record(&conv, i)]))
            .collect();
        for w in writes {
            w.await.expect("commit");
        }
        piped.push(n as f64 / t.elapsed().as_secs_f64());
        commits.push((store.stats().commits - before.commits) as f64);
        store.close().await.expect("close");
    }
    let what = match &url {
        Some(u) => Database::parse(u).expect("database").display(),
        None => "SQLite, synchronous=FULL, WAL".into(),
    };
    println!("durable messages/s, median of {runs} runs ({what}):");
    println!("  one at a time ({one_n} msgs): {:>9.0} msg/s", median(one));
    println!(
        "  pipelined     ({n} msgs): {:>9.0} msg/s  ({:.0} commits per run, median)",
        median(piped),
        median(commits)
    );
}
