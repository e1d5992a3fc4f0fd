//! A bulk transfer through a bottleneck, in virtual time: the fraction of the link chirp's
//! transport fills, with and without pacing (issue 18).
//!
//! ```text
//! cargo run --release -p chirp-netsim --example bulk_sim [-- --mb 20 --rate 12500000 --delay 20 --seeds 3 --max-datagram 1452]
//! cargo run --release -p chirp-netsim --example bulk_sim -- --seeds 30 --loss 5 --pacing on
//! BULK_TRACE=1 cargo run --release -p chirp-netsim --example bulk_sim -- --seed 1 --loss 5 --pacing on --stall-at 300 --stall-ms 100
//! ```
//!
//! The path: one bottleneck of `--rate` bytes/s each way with a drop-tail buffer of one
//! bandwidth-delay product (rate × 2 × delay), `--delay` ms each way, random loss after the
//! queue (0, 1 and 5 %). A sends `--mb` MB as 64,000-byte messages with a 4 MiB receive window
//! and send buffer (what `crates/bench/examples/bulk.rs` gives both stacks on real sockets).
//! Goodput is the payload over the time from the first send to the last delivery. Everything
//! is deterministic: the same arguments print the same table on any machine.
//!
//! Where the rest of the link goes, as two factors whose product is the goodput: **wire
//! efficiency**, the payload over the UDP payload bytes A sent (headers, tags, frame headers,
//! retransmissions, probes; what the bottleneck counts, as `chirp impair` does), and **link
//! busy**, the UDP bytes the bottleneck delivered over what it could have in the time (start-up,
//! recovery and the tail). `ACKs / packet` is B's datagrams per datagram of A. `--max-datagram`
//! is the path MTU discovery ceiling (default here 1452; 1200: off, `TransportConfig`'s
//! default). `--loss PERCENT` runs one loss rate instead of 0, 1 and 5 %, `--pacing on` or
//! `--pacing off` one pacing setting instead of both, `--seed N` seed N alone, `--queue BYTES` the
//! bottleneck's buffer in bytes (default: one BDP, at least 24,000). Each row gives the median and the worst
//! seed, then every seed's figure; `BULK_TRACE=1` prints A's window every 100 ms of virtual time
//! and each recovery period as it begins (congestion or random, with the window after it).
//! `--stall-at MS --stall-ms MS` stalls the path (both directions) for `--stall-ms` from
//! `--stall-at` after the first send, as a proxy that is not scheduled on a busy machine
//! (`Link::stall`: what is sent meanwhile enters the bottleneck as one burst when it ends).

#![allow(clippy::print_stdout)] // an example prints its results

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{EndpointConfig, Event, TransportConfig};

/// The value after `name` on the command line, if any.
fn value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: u64) -> u64 {
    value(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One transfer's outcome.
struct Outcome {
    /// Goodput over the link rate.
    fraction: f64,
    stats: chirp_proto::ConnectionStats,
    /// A's datagram size at the end (path MTU discovery).
    datagram: usize,
    a_to_b: chirp_netsim::LinkStats,
    b_to_a: chirp_netsim::LinkStats,
    secs: f64,
}

/// What every transfer of a row shares.
#[derive(Clone, Copy)]
struct Setup {
    /// Bytes per second of the bottleneck, each way.
    rate: u64,
    /// One way.
    delay: Duration,
    loss: f64,
    /// Bytes to transfer.
    total: u64,
    pacing: bool,
    max_datagram: usize,
    /// The bottleneck's drop-tail buffer, bytes.
    queue: usize,
    /// A stall of the path: when (after the first send) and how long.
    stall: Option<(Duration, Duration)>,
}

/// One transfer.
fn run(setup: Setup, seed: u64) -> Outcome {
    let Setup {
        rate,
        delay,
        loss,
        total,
        pacing,
        max_datagram,
        queue,
        stall,
    } = setup;
    let link = LinkConfig::ideal(delay)
        .with_rate(rate, queue)
        .with_loss(loss);
    let config = EndpointConfig {
        transport: TransportConfig {
            receive_window: 4 << 20,
            send_buffer: 4 << 20,
            pacing,
            max_datagram_size: max_datagram,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    };
    let trace = std::env::var_os("BULK_TRACE").is_some();
    let mut p = Pair::new(config, link, seed);
    let (ca, _) = p.connect().expect("handshake");
    let start = p.now;
    if let Some((at, length)) = stall {
        p.path.stall(start + at, start + at + length);
    }
    let msg = vec![7u8; 64_000];
    let n = total / msg.len() as u64;
    let (mut sent, mut got) = (0, 0);
    let deadline = start + Duration::from_secs(3_600);
    let mut periods = (0, 0);
    while got < n {
        while sent < n && p.a.endpoint.send(ca, &msg).is_ok() {
            sent += 1;
        }
        assert!(p.now < deadline, "bulk transfer stalled: {got} of {n}");
        let next = p.now + Duration::from_millis(1);
        p.advance_to(next).expect("no busy loop");
        if trace {
            let s = p.a.endpoint.stats(ca).expect("live");
            if (s.congestion_periods, s.random_loss_periods) != periods {
                let kind = if s.congestion_periods != periods.0 {
                    "CONGESTION"
                } else {
                    "random"
                };
                println!(
                    "{:>6} ms: {kind} period, cwnd {} after it, srtt {:?}, latest rtt {:?}, min rtt {:?}, lost {}",
                    (p.now - start).as_millis(),
                    s.cwnd,
                    s.srtt,
                    s.latest_rtt,
                    s.min_rtt,
                    s.packets_lost,
                );
                periods = (s.congestion_periods, s.random_loss_periods);
            }
        }
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
    Outcome {
        fraction,
        stats,
        datagram: p.a.endpoint.max_datagram(ca).expect("live"),
        a_to_b: p.path.a_to_b.stats(),
        b_to_a: p.path.b_to_a.stats(),
        secs,
    }
}

fn main() {
    let total = arg("--mb", 20) * 1_000_000;
    let rate = arg("--rate", 12_500_000);
    let delay = Duration::from_millis(arg("--delay", 20));
    let seeds = arg("--seeds", 3).max(1);
    // `--seed N`: that seed alone (with `BULK_TRACE=1`, to look at one run).
    let seed_range = match arg("--seed", 0) {
        0 => 1..=seeds,
        one => one..=one,
    };
    let max_datagram = usize::try_from(arg("--max-datagram", 1_452)).unwrap_or(usize::MAX);
    let losses: Vec<f64> = match value("--loss") {
        Some(v) => vec![v.parse::<f64>().expect("--loss PERCENT") / 100.0],
        None => vec![0.0, 0.01, 0.05],
    };
    let stall = match (value("--stall-at"), arg("--stall-ms", 0)) {
        (Some(at), length) if length > 0 => Some((
            Duration::from_millis(at.parse().expect("--stall-at MS")),
            Duration::from_millis(length),
        )),
        _ => None,
    };
    let bdp = (u128::from(rate) * 2 * delay.as_millis() / 1_000) as usize;
    let queue = match usize::try_from(arg("--queue", 0)).unwrap_or(usize::MAX) {
        0 => bdp.max(24_000),
        bytes => bytes,
    };
    let pacings: Vec<bool> = match value("--pacing").as_deref() {
        Some("on") => vec![true],
        Some("off") => vec![false],
        None => vec![true, false],
        Some(other) => panic!("--pacing on or off, not {other}"),
    };
    println!(
        "{} MB, {rate} B/s each way, {} ms each way, a drop-tail buffer of {queue} B, datagrams up to {max_datagram} B",
        total / 1_000_000,
        delay.as_millis()
    );
    let base = Setup {
        rate,
        delay,
        loss: 0.0,
        total,
        pacing: true,
        max_datagram,
        queue,
        stall,
    };
    if let Some((at, length)) = stall {
        println!(
            "a stall of {} ms at {} ms after the first send",
            length.as_millis(),
            at.as_millis()
        );
    }
    println!(
        "| loss | pacing | of link, median | worst (seed) | wire efficiency | link busy | ACKs / packet | datagram | packets sent | lost | queue drops | congestion / random periods |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut per_seed = Vec::new();
    for &loss in &losses {
        for &pacing in &pacings {
            let mut fractions = Vec::new();
            let (mut sent, mut lost, mut drops, mut cong, mut random) = (0, 0, 0, 0, 0);
            let (mut wire, mut delivered, mut capacity, mut acks, mut datagrams) =
                (0u64, 0u64, 0.0, 0u64, 0u64);
            let mut size = 0;
            for seed in seed_range.clone() {
                let o = run(
                    Setup {
                        loss,
                        pacing,
                        ..base
                    },
                    seed,
                );
                fractions.push((o.fraction * 100.0, seed));
                sent += o.stats.packets_sent;
                lost += o.stats.packets_lost;
                drops += o.a_to_b.queue_drops;
                cong += o.stats.congestion_periods;
                random += o.stats.random_loss_periods;
                wire += o.a_to_b.bytes_sent;
                delivered += o.a_to_b.bytes_delivered;
                capacity += o.secs * rate as f64;
                acks += o.b_to_a.sent;
                datagrams += o.a_to_b.sent;
                size = o.datagram;
            }
            let payload = (total / 64_000 * 64_000 * fractions.len() as u64) as f64;
            let row = format!(
                "{:.0} %, pacing {}",
                loss * 100.0,
                if pacing { "on" } else { "off" }
            );
            let listed: Vec<String> = fractions.iter().map(|(f, _)| format!("{f:.1}")).collect();
            per_seed.push(format!("{row}: {}", listed.join(", ")));
            fractions.sort_by(|a, b| a.0.total_cmp(&b.0));
            // The median (of an even count, the mean of the middle two) and the worst seed.
            let mid = fractions.len() / 2;
            let median = if fractions.len() % 2 == 1 {
                fractions[mid].0
            } else {
                f64::midpoint(fractions[mid - 1].0, fractions[mid].0)
            };
            let (worst, worst_seed) = fractions[0];
            println!(
                "| {:.0} % | {} | {median:.1} % | {worst:.1} % ({worst_seed}) | {:.1} % | {:.1} % | {:.2} | {size} | {sent} | {lost} | {drops} | {cong} / {random} |",
                loss * 100.0,
                if pacing { "on" } else { "off" },
                100.0 * payload / wire as f64,
                100.0 * delivered as f64 / capacity,
                acks as f64 / datagrams as f64,
            );
        }
    }
    println!(
        "\nof link per seed (seeds {} to {}, %):",
        seed_range.start(),
        seed_range.end()
    );
    for line in per_seed {
        println!("{line}");
    }
}
