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
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{EndpointConfig, Event};

const ONE_WAY: Duration = Duration::from_millis(20);
const INTERVAL: Duration = Duration::from_millis(20); // 50 messages/s
const SIZE: usize = 100;

struct Outcome {
    latencies: Vec<Duration>,
    wire_bytes: u64,
    delivered: u64,
}

fn run(loss: f64, seed: u64, redundancy: bool, secs: u64) -> Outcome {
    let mut cfg = EndpointConfig::default();
    cfg.transport.redundancy.enabled = redundancy;
    let link = LinkConfig::ideal(ONE_WAY).with_loss(loss);
    let mut p = Pair::new(cfg, link, seed);
    let (ca, cb) = p.connect().expect("handshake");
    let origin = p.now;
    let n = (secs * 1000 / INTERVAL.as_millis() as u64) as u32;
    let mut latencies = Vec::with_capacity(2 * n as usize);
    let collect = |p: &mut Pair, at: std::time::Instant, latencies: &mut Vec<Duration>| {
        for node in [&mut p.a, &mut p.b] {
            for ev in node.take_events(|e| matches!(e, Event::Message { .. })) {
                let Event::Message { data, .. } = ev else {
                    continue;
                };
                let mut ns = [0u8; 8];
                ns.copy_from_slice(&data[..8]);
                let sent = origin + Duration::from_nanos(u64::from_be_bytes(ns));
                latencies.push(at - sent);
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
        collect(&mut p, at, &mut latencies);
    }
    assert_eq!(latencies.len(), 2 * n as usize, "every message delivered");
    let sa = p.a.endpoint.stats(ca).expect("live");
    let sb = p.b.endpoint.stats(cb).expect("live");
    Outcome {
        latencies,
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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--secs", Some(v)) => secs = v,
            ("--seeds", Some(v)) => seeds = v,
            _ => {
                eprintln!("usage: latency [--secs N] [--seeds N]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "one-way delay {} ms, {} B messages at {}/s each way, {secs} s x {seeds} seeds per row\n",
        ONE_WAY.as_millis(),
        SIZE,
        1000 / INTERVAL.as_millis()
    );
    println!("| loss | mode | p50 ms | p99 ms | max ms | p99 / one-way | wire B/msg |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for loss in [0.0, 0.05, 0.10, 0.20] {
        for (mode, redundancy) in [("chirp (default)", true), ("RFC 9002 only", false)] {
            let mut all = Vec::new();
            let (mut bytes, mut msgs) = (0, 0);
            for seed in 1..=seeds {
                let o = run(loss, seed, redundancy, secs);
                all.extend(o.latencies);
                bytes += o.wire_bytes;
                msgs += o.delivered;
            }
            all.sort_unstable();
            let p99 = pct(&all, 0.99);
            println!(
                "| {:.0} % | {mode} | {} | {} | {} | {:.2} | {:.0} |",
                loss * 100.0,
                ms(pct(&all, 0.5)),
                ms(p99),
                ms(*all.last().expect("non-empty")),
                p99.as_secs_f64() / ONE_WAY.as_secs_f64(),
                bytes as f64 / msgs as f64
            );
        }
    }
}
