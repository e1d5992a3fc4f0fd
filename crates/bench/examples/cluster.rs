//! `chirp bench fanout` on one node or on a cluster, the set-ups alternated in rounds, each
//! figure also given as a ratio to the first set-up's in the same round.
//!
//! ```text
//! cargo run --release -p chirp-bench --example cluster -- CHIRP ROUNDS SETUP[,SETUP...] [BENCH ARGS...]
//! cargo run --release -p chirp-bench --example cluster -- CHIRP hold SETUP
//! ```
//!
//! CHIRP is the `chirp` binary (e.g. `target/release/chirp`). A SETUP is
//! - `sqlite`: one `chirp serve` on its own SQLite file (the default server);
//! - `postgres`: one `chirp serve --database postgres://...` on a PostgreSQL of its own;
//! - `cluster:N`: N nodes `chirp serve --cluster nats://... --database postgres://...`
//!   sharing one PostgreSQL, one nats-server and one key file (`cluster:1` is one node that
//!   still stores in PostgreSQL and publishes every message on NATS).
//!
//! Every set-up is fresh for each round: PostgreSQL (`initdb`, `fsync=on`) and nats-server
//! are started by `chirp-testsvc` in temporary directories on free loopback ports, and
//! stopped after. Each round runs `CHIRP bench fanout --runs 1 --json BENCH ARGS --server
//! ... --server-pid ... --service-pid ...` once per set-up and prints its row; at the end,
//! the medians. CPU is given per delivery: the nodes' (summed), PostgreSQL's and
//! nats-server's (with their children), and the load generator's, each measured over the
//! fan-out only (after every member joined).
//!
//! `hold SETUP` starts the set-up, prints the `--server`/`--server-pid`/`--service-pid`
//! arguments for `chirp bench fanout` on its first line and the services' URLs on the next
//! (`postgres://...`, `nats://...`), and holds until its stdin closes.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark prints its results

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use chirp_bench::median;
use chirp_bench::server::ServerProcess;
use chirp_testsvc::{Nats, Postgres};
use serde_json::Value;

/// Sessions each node is sized for (its per-address limits).
const SESSIONS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Setup {
    Sqlite,
    Postgres,
    Cluster(usize),
}

impl Setup {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" => Ok(Self::Postgres),
            _ => s
                .strip_prefix("cluster:")
                .and_then(|n| n.parse().ok())
                .filter(|&n| (1..=16).contains(&n))
                .map(Self::Cluster)
                .ok_or_else(|| format!("not a set-up: {s} (sqlite, postgres, cluster:N)")),
        }
    }

    fn name(self) -> String {
        match self {
            Self::Sqlite => "1 node, SQLite".into(),
            Self::Postgres => "1 node, PostgreSQL".into(),
            Self::Cluster(1) => "1 cluster node (PostgreSQL + NATS)".into(),
            Self::Cluster(n) => format!("{n} cluster nodes (PostgreSQL + NATS)"),
        }
    }
}

/// A running set-up: its services and nodes. Dropping it stops the nodes, then the services.
struct Running {
    nodes: Vec<ServerProcess>,
    services: Vec<u32>,
    nats: Option<Nats>,
    pg: Option<Postgres>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The nodes before the services they use (fields drop in order, but be explicit).
        self.nodes.clear();
    }
}

impl Running {
    fn start(setup: Setup, chirp: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let needs_pg = setup != Setup::Sqlite;
        let needs_nats = matches!(setup, Setup::Cluster(_));
        if needs_pg && !chirp_testsvc::postgres_available() {
            return Err("PostgreSQL is not installed".into());
        }
        if needs_nats && !chirp_testsvc::nats_available() {
            return Err("nats-server is not installed".into());
        }
        let pg = needs_pg
            .then(Postgres::start)
            .transpose()
            .map_err(|e| format!("start PostgreSQL: {e}"))?;
        let nats = needs_nats
            .then(Nats::start)
            .transpose()
            .map_err(|e| format!("start nats-server: {e}"))?;
        let mut services = Vec::new();
        if let Some(pg) = &pg {
            services.push(postmaster_pid(pg)?);
        }
        if nats.is_some() {
            services.push(child_named("nats-server")?);
        }
        let key = dir.path().join("cluster.key").display().to_string();
        let mut nodes = Vec::new();
        let count = match setup {
            Setup::Cluster(n) => n,
            _ => 1,
        };
        // One at a time: the first node creates the shared key file, the others read it.
        for i in 0..count {
            let mut extra: Vec<String> = Vec::new();
            if let Some(pg) = &pg {
                extra.extend(["--database".into(), pg.url()]);
            }
            if let Some(nats) = &nats {
                extra.extend(["--cluster".into(), nats.url()]);
                extra.extend(["--key-file".into(), key.clone()]);
                extra.extend(["--node".into(), format!("n{i}")]);
            }
            let node = ServerProcess::start(chirp, SESSIONS, &extra)
                .map_err(|e| format!("start node {i}: {e}"))?;
            nodes.push(node);
        }
        Ok(Self {
            nodes,
            services,
            nats,
            pg,
            _dir: dir,
        })
    }

    /// `--server A --server-pid P ... --service-pid S ...`.
    fn bench_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for n in &self.nodes {
            a.extend(["--server".into(), n.addr().to_string()]);
        }
        for n in &self.nodes {
            a.extend(["--server-pid".into(), n.pid().to_string()]);
        }
        for s in &self.services {
            a.extend(["--service-pid".into(), s.to_string()]);
        }
        a
    }
}

/// The postmaster's pid: the first line of `postmaster.pid` in its data directory.
fn postmaster_pid(pg: &Postgres) -> Result<u32, String> {
    let path = pg.data_dir().join("postmaster.pid");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse().ok())
        .ok_or_else(|| format!("no pid in {}", path.display()))
}

/// The pid of this process's child called `name`.
fn child_named(name: &str) -> Result<u32, String> {
    let me = std::process::id();
    let tasks = std::fs::read_dir(format!("/proc/{me}/task")).map_err(|e| e.to_string())?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == name {
                return Ok(pid);
            }
        }
    }
    Err(format!("no child process {name}"))
}

/// One set-up's figures in one round.
#[derive(Debug, Clone, Default)]
struct Row {
    rate: f64,
    raw: f64,
    p50: f64,
    p99: f64,
    /// Members on other nodes than the senders' (a cluster of several nodes).
    other: Option<(f64, f64)>,
    /// CPU µs per delivery: the nodes together, the services, the load generator.
    nodes_us: f64,
    nodes_pct: f64,
    services_us: f64,
    load_us: f64,
    clean: bool,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn run_once(setup: Setup, chirp: &Path, bench: &[String]) -> Result<Row, String> {
    let running = Running::start(setup, chirp)?;
    let out = Command::new(chirp)
        .args(["bench", "fanout", "--runs", "1", "--json"])
        .args(bench)
        .args(running.bench_args())
        .output()
        .map_err(|e| format!("run {}: {e}", chirp.display()))?;
    drop(running);
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "chirp bench printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let r = &v["runs"][0];
    let delivered = f(&r["delivered"]);
    let per = |cpu_s: f64| cpu_s * 1e6 / delivered.max(1.0);
    let other = &r["latency_other_nodes_ms"];
    Ok(Row {
        rate: f(&r["deliveries_per_sec"]),
        raw: f(&v["raw_packets_per_sec"]),
        p50: f(&r["latency_ms"]["p50"]),
        p99: f(&r["latency_ms"]["p99"]),
        other: other
            .is_object()
            .then(|| (f(&other["p50"]), f(&other["p99"]))),
        nodes_us: per(f(&r["server"]["cpu_s"])),
        nodes_pct: f(&r["server"]["cpu_percent"]),
        services_us: r["services"]["cpu_s"].as_f64().map_or(0.0, per),
        load_us: per(f(&r["load_generator"]["cpu_s"])),
        clean: v["clean"] == true,
    })
}

fn med(rows: &[Row], get: impl Fn(&Row) -> f64) -> f64 {
    median(&mut rows.iter().map(get).collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

fn hold(setup: Setup, chirp: &Path) -> Result<(), String> {
    let running = Running::start(setup, chirp)?;
    println!("{}", running.bench_args().join(" "));
    let urls: Vec<String> = (running.pg.iter().map(Postgres::url))
        .chain(running.nats.iter().map(Nats::url))
        .collect();
    println!("{}", urls.join(" "));
    eprintln!("{} running; close stdin (Ctrl-D) to stop it", setup.name());
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
    drop(running);
    Ok(())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: cluster CHIRP ROUNDS SETUP[,SETUP...] [BENCH ARGS...] | cluster CHIRP hold SETUP";
    let chirp = PathBuf::from(args.next().ok_or(usage)?);
    let what = args.next().ok_or(usage)?;
    let setups: Vec<Setup> = args
        .next()
        .ok_or(usage)?
        .split(',')
        .map(Setup::parse)
        .collect::<Result<_, _>>()?;
    if what == "hold" {
        let [setup] = setups[..] else {
            return Err(usage.into());
        };
        return hold(setup, &chirp);
    }
    let rounds: usize = what.parse().map_err(|_| usage.to_owned())?;
    let bench: Vec<String> = args.collect();
    println!(
        "chirp bench fanout {}; {rounds} round(s), set-ups alternated",
        bench.join(" ")
    );
    println!(
        "| round | set-up | deliveries/s | ratio to {} | raw UDP | p50 / p99 ms | other nodes p50 / p99 ms | nodes CPU % | CPU µs per delivery: nodes / services / load generator | clean |",
        setups[0].name()
    );
    println!("|---|---|---:|---:|---:|---|---|---:|---|---|");
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); setups.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 1..=rounds {
        let mut reference = None;
        for (k, &setup) in setups.iter().enumerate() {
            let row = run_once(setup, &chirp, &bench)?;
            let base = *reference.get_or_insert(row.rate);
            let ratio = row.rate / base;
            let other = row
                .other
                .map_or_else(|| "-".into(), |(a, b)| format!("{a:.1} / {b:.1}"));
            println!(
                "| {round} | {} | {:.0} | {ratio:.2} | {:.0} | {:.1} / {:.1} | {other} | {:.0} | {:.1} / {:.1} / {:.1} | {} |",
                setup.name(),
                row.rate,
                row.raw,
                row.p50,
                row.p99,
                row.nodes_pct,
                row.nodes_us,
                row.services_us,
                row.load_us,
                row.clean
            );
            ratios[k].push(ratio);
            rows[k].push(row);
        }
    }
    println!("\nmedians over {rounds} round(s):");
    println!(
        "| set-up | deliveries/s | ratio (median of the rounds') | p50 / p99 ms | other nodes p50 / p99 ms | nodes CPU % | CPU µs per delivery: nodes / services / load generator | every run clean |"
    );
    println!("|---|---:|---:|---|---|---:|---|---|");
    for (k, setup) in setups.iter().enumerate() {
        let r = &rows[k];
        let other = if r.iter().all(|x| x.other.is_some()) {
            format!(
                "{:.1} / {:.1}",
                med(r, |x| x.other.map_or(f64::NAN, |o| o.0)),
                med(r, |x| x.other.map_or(f64::NAN, |o| o.1))
            )
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.1} / {:.1} | {other} | {:.0} | {:.1} / {:.1} / {:.1} | {} |",
            setup.name(),
            med(r, |x| x.rate),
            median(&mut ratios[k].clone()).unwrap_or(f64::NAN),
            med(r, |x| x.p50),
            med(r, |x| x.p99),
            med(r, |x| x.nodes_pct),
            med(r, |x| x.nodes_us),
            med(r, |x| x.services_us),
            med(r, |x| x.load_us),
            r.iter().all(|x| x.clean),
        );
    }
    Ok(())
}
