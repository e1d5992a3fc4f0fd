//! A bulk transfer through a bottleneck, in virtual time: the fraction of the link chirp's
//! transport fills, with and without pacing (issue 18).
//!
//! ```text
//! cargo run --release -p chirp-netsim --example bulk_sim [-- --mb 20 --rate 12500000 --delay 20 --seeds 3]
//! ```
//!
//! The path: one bottleneck of `--rate` bytes/s each way with a drop-tail buffer of one
//! bandwidth-delay product (rate × 2 × delay), `--delay` ms each way, random loss after the
//! queue (0, 1 and 5 %). A sends `--mb` MB as 64,000-byte messages with a 4 MiB receive window
//! and send buffer (what `crates/bench/examples/bulk.rs` gives both stacks on real sockets).
//! Goodput is the payload over the time from the first send to the last delivery. Everything
//! is deterministic: the same arguments print the same table on any machine.

#![allow(clippy::print_stdout)] // an example prints its results

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{EndpointConfig, Event, TransportConfig};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One transfer: (fraction of the link, A's stats, queue drops).
fn run(
    rate: u64,
    delay: Duration,
    loss: f64,
    total: u64,
    pacing: bool,
    seed: u64,
) -> (f64, chirp_proto::ConnectionStats, u64) {
    let queue = (u128::from(rate) * 2 * delay.as_millis() / 1_000) as usize;
    let link = LinkConfig::ideal(delay)
        .with_rate(rate, queue.max(24_000))
        .with_loss(loss);
    let config = EndpointConfig {
        transport: TransportConfig {
            receive_window: 4 << 20,
            send_buffer: 4 << 20,
            pacing,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    };
    let trace = std::env::var_os("BULK_TRACE").is_some();
    let mut p = Pair::new(config, link, seed);
    let (ca, _) = p.connect().expect("handshake");
    let start = p.now;
    let msg = vec![7u8; 64_000];
    let n = total / msg.len() as u64;
    let (mut sent, mut got) = (0, 0);
    let deadline = start + Duration::from_secs(3_600);
    while got < n {
        while sent < n && p.a.endpoint.send(ca, &msg).is_ok() {
            sent += 1;
        }
        assert!(p.now < deadline, "bulk transfer stalled: {got} of {n}");
        let next = p.now + Duration::from_millis(1);
        p.advance_to(next).expect("no busy loop");
        if trace && (p.now - start).as_millis() % 100 == 0 {
            let s = p.a.endpoint.stats(ca).expect("live");
            println!(
                "{:>6} ms: got {got}, cwnd {}, in flight {}, srtt {:?}, lost {}, ptos {}, pc {}, rwnd-buffered {:?}",
                (p.now - start).as_millis(),
                s.cwnd,
                s.bytes_in_flight,
                s.srtt,
                s.packets_lost,
                s.ptos,
                s.persistent_congestion,
                p.a.endpoint.send_buffered(ca),
            );
        }
        got +=
            p.b.take_events(|e| matches!(e, Event::Message { .. }))
                .len() as u64;
    }
    let secs = (p.now - start).as_secs_f64();
    let stats = p.a.endpoint.stats(ca).expect("live");
    let fraction = (n * msg.len() as u64) as f64 / secs / rate as f64;
    (fraction, stats, p.path.a_to_b.stats().queue_drops)
}

fn main() {
    let total = arg("--mb", 20) * 1_000_000;
    let rate = arg("--rate", 12_500_000);
    let delay = Duration::from_millis(arg("--delay", 20));
    let seeds = arg("--seeds", 3);
    println!(
        "{} MB, {rate} B/s each way, {} ms each way, a one-BDP drop-tail buffer",
        total / 1_000_000,
        delay.as_millis()
    );
    println!(
        "| loss | pacing | of link (per seed) | packets sent | lost | queue drops | congestion / random periods |"
    );
    println!("|---:|---|---|---:|---:|---:|---|");
    for loss in [0.0, 0.01, 0.05] {
        for pacing in [true, false] {
            let mut fractions = Vec::new();
            let (mut sent, mut lost, mut drops, mut cong, mut random) = (0, 0, 0, 0, 0);
            for seed in 1..=seeds {
                let (f, s, d) = run(rate, delay, loss, total, pacing, seed);
                fractions.push(format!("{:.1} %", f * 100.0));
                sent += s.packets_sent;
                lost += s.packets_lost;
                drops += d;
                cong += s.congestion_periods;
                random += s.random_loss_periods;
            }
            println!(
                "| {:.0} % | {} | {} | {sent} | {lost} | {drops} | {cong} / {random} |",
                loss * 100.0,
                if pacing { "on" } else { "off" },
                fractions.join(", ")
            );
        }
    }
}
