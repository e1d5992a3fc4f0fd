//! Chat latency under random loss, in the simulator.
//!
//! One hop with a fixed one-way delay; both sides send 100-byte messages at 50 messages/s at
//! the same time. For each loss rate it reports p50 / p99 / max delivery latency (application
//! `send` to application `Message` event, both directions pooled) and the UDP payload bytes on
//! the wire per delivered message, for chirp's default configuration and for the same core with
//! latency-first redundancy switched off (plain RFC 9002 recovery, the QUIC-like baseline).
//!
//! ```text
//! cargo run --release -p chirp-netsim --example latency            # the table in PERFORMANCE.md
//! cargo run --release -p chirp-netsim --example latency -- --secs 20 --seeds 2   # quicker
//! cargo run --release -p chirp-netsim --example latency -- --trace 1   # with qlog tracing on
//! ```
//!
//! `--trace 1` turns on the endpoints' trace and serializes every record as qlog (into
//! `io::sink()`): the cost of tracing without the disk. Latencies are in virtual time and do
//! not change; the run's wall-clock time does (docs/PERFORMANCE.md, issue 16).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::EndpointConfig;
use chirp_qlog::{QlogWriter, TraceHeader};

const ONE_WAY: Duration = Duration::from_millis(20);
const INTERVAL: Duration = Duration::from_millis(20); // 50 messages/s
const SIZE: usize = 100;
/// The length of one measured run in the real-socket measurement (1,000 messages at 50/s).
const WINDOW_SECS: u64 = 20;

struct Outcome {
    latencies: Vec<Duration>,
    /// p99 of each 20 s window (1,000 messages each way, the size of one measured run).
    window_p99: Vec<Duration>,
    copies: u64,
    wire_bytes: u64,
    delivered: u64,
}

/// With `--trace 1`: each side's qlog writer (into a sink) and the records written.
#[derive(Default)]
struct Tracing {
    on: bool,
    writers: [Option<QlogWriter<std::io::Sink>>; 2],
    records: u64,
}

impl Tracing {
    /// Serializes what both endpoints recorded since the last call.
    fn drain(&mut self, p: &mut Pair) {
        if !self.on {
            return;
        }
        for (node, w) in [&mut p.a, &mut p.b].into_iter().zip(&mut self.writers) {
            while let Some(r) = node.endpoint.poll_trace() {
                self.records += 1;
                if w.is_none() {
                    *w = TraceHeader::from_started(&r, None, None)
                        .map(|h| QlogWriter::new(std::io::sink(), h).expect("sink"));
                }
                if let Some(w) = w {
                    w.write(r.at, &r.event).expect("sink");
                }
            }
        }
    }
}

fn run(
    loss: f64,
    seed: u64,
    redundancy: bool,
    secs: u64,
    jitter: Duration,
    tracing: &mut Tracing,
) -> Outcome {
    let mut cfg = EndpointConfig {
        trace: tracing.on,
        ..EndpointConfig::default()
    };
    cfg.transport.redundancy.enabled = redundancy;
    tracing.writers = [None, None];
    let link = LinkConfig::ideal(ONE_WAY)
        .with_jitter(jitter)
        .with_loss(loss);
    let mut p = Pair::new(cfg, link, seed);
    let (ca, cb) = p.connect().expect("handshake");
    let origin = p.now;
    let n = (secs * 1000 / INTERVAL.as_millis() as u64) as u32;
    let mut latencies = Vec::with_capacity(2 * n as usize);
    let collect =
        |p: &mut Pair, at: std::time::Instant, latencies: &mut Vec<(Duration, Duration)>| {
            for node in [&mut p.a, &mut p.b] {
                for data in node.take_messages() {
                    let mut ns = [0u8; 8];
                    ns.copy_from_slice(&data[..8]);
                    let sent = Duration::from_nanos(u64::from_be_bytes(ns));
                    latencies.push((sent, at - (origin + sent)));
                }
            }
        };
    for i in 0..n {
        let t = origin + INTERVAL * i;
        while p.now < t {
            let at = p.now;
            if !p.step_until(t).expect("no busy loop") {
                p.now = t;
            }
            tracing.drain(&mut p);
            collect(&mut p, at, &mut latencies);
        }
        let mut msg = vec![0u8; SIZE];
        msg[..8].copy_from_slice(&((t - origin).as_nanos() as u64).to_be_bytes());
        p.a.endpoint.send(ca, &msg).expect("room");
        p.b.endpoint.send(cb, &msg).expect("room");
    }
    // Drain: everything still in flight gets delivered.
    let end = p.now + Duration::from_secs(30);
    while latencies.len() < 2 * n as usize && p.now < end {
        let at = p.now;
        p.step_until(end).expect("no busy loop");
        tracing.drain(&mut p);
        collect(&mut p, at, &mut latencies);
    }
    assert_eq!(latencies.len(), 2 * n as usize, "every message delivered");
    let sa = p.a.endpoint.stats(ca).expect("live");
    let sb = p.b.endpoint.stats(cb).expect("live");
    let mut windows: Vec<Vec<Duration>> = Vec::new();
    for &(sent, latency) in &latencies {
        let w = (sent.as_secs() / WINDOW_SECS) as usize;
        if windows.len() <= w {
            windows.resize_with(w + 1, Vec::new);
        }
        windows[w].push(latency);
    }
    let window_p99 = windows
        .into_iter()
        .filter(|w| w.len() >= 1_000)
        .map(|mut w| {
            w.sort_unstable();
            pct(&w, 0.99)
        })
        .collect();
    Outcome {
        latencies: latencies.into_iter().map(|(_, l)| l).collect(),
        window_p99,
        copies: sa.redundant_copies + sb.redundant_copies,
        wire_bytes: sa.bytes_sent + sb.bytes_sent,
        delivered: 2 * u64::from(n),
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut secs = 60u64;
    let mut seeds = 5u64;
    let mut jitter_ms = 0u64;
    let mut tracing = Tracing::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--secs", Some(v)) => secs = v,
            ("--seeds", Some(v)) => seeds = v,
            ("--jitter", Some(v)) => jitter_ms = v,
            ("--trace", Some(v)) => tracing.on = v != 0,
            _ => {
                eprintln!("usage: latency [--secs N] [--seeds N] [--jitter MS] [--trace 0|1]");
                std::process::exit(2);
            }
        }
    }
    let jitter = Duration::from_millis(jitter_ms);
    println!(
        "one-way delay {} ms + 0-{jitter_ms} ms jitter, {} B messages at {}/s each way, \
         {secs} s x {seeds} seeds per row\n",
        ONE_WAY.as_millis(),
        SIZE,
        1000 / INTERVAL.as_millis()
    );
    println!(
        "| loss | mode | p50 ms | p99 ms | p99.9 ms | max ms | p99 / one-way | \
         p99 of 20 s windows: median / worst ms | copies/msg | wire B/msg |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for loss in [0.0, 0.05, 0.10, 0.20] {
        for (mode, redundancy) in [("chirp (default)", true), ("RFC 9002 only", false)] {
            let mut all = Vec::new();
            let mut windows = Vec::new();
            let (mut bytes, mut msgs, mut copies) = (0, 0, 0);
            for seed in 1..=seeds {
                let o = run(loss, seed, redundancy, secs, jitter, &mut tracing);
                all.extend(o.latencies);
                windows.extend(o.window_p99);
                bytes += o.wire_bytes;
                msgs += o.delivered;
                copies += o.copies;
            }
            all.sort_unstable();
            windows.sort_unstable();
            let p99 = pct(&all, 0.99);
            let windows = if windows.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{} / {}",
                    ms(pct(&windows, 0.5)),
                    ms(*windows.last().expect("non-empty"))
                )
            };
            println!(
                "| {:.0} % | {mode} | {} | {} | {} | {} | {:.2} | {windows} | {:.2} | {:.0} |",
                loss * 100.0,
                ms(pct(&all, 0.5)),
                ms(p99),
                ms(pct(&all, 0.999)),
                ms(*all.last().expect("non-empty")),
                p99.as_secs_f64() / ONE_WAY.as_secs_f64(),
                copies as f64 / msgs as f64,
                bytes as f64 / msgs as f64
            );
        }
    }
    if tracing.on {
        eprintln!("trace records serialized: {}", tracing.records);
    }
}
