//! Bulk transfer through `chirp impair`: chirp's transport against quinn, on the same path in
//! the same run (issue 18).
//!
//! ```text
//! cargo build --release -p chirp --bin chirp -p chirp-bench --example bulk
//! target/release/examples/bulk target/release/chirp [--mb 100] [--rate 100mbit] [--delay 20]
//!     [--loss 0,0.01,0.05] [--runs 3] [--stacks chirp,quinn,tcp] [--max-secs 60] [--no-pacing]
//!     [--max-datagram 1452] [--tcp-cc cubic] [--hystart]
//! ```
//!
//! For each loss rate and run, a fresh `chirp impair --rate RATE --delay MS --loss P --seed N`
//! sits between a sender and a receiver on 127.0.0.1 (each direction its own bottleneck with
//! a drop-tail queue of one bandwidth-delay product, then the delay and the loss), and each
//! stack moves `--mb` megabytes through it, one after the other, with the same seed:
//!
//! - **chirp**: `chirp-transport` endpoints; the sender queues 64,000-byte messages with
//!   `Endpoint::send` while its send buffer takes them (a bounded in-flight window), and waits
//!   for `Writable` when it is full ([`chirp_send`]: the one place to change once a bulk
//!   channel exists);
//! - **quinn**: one unidirectional stream (`write_all` of 64,000-byte chunks, `finish`), its
//!   default congestion controller (CUBIC) and MTU discovery (datagrams grow from 1,200 to
//!   ~1,450 bytes; chirp's do the same with its own discovery, on here with quinn's ceiling of
//!   1,452 though off by default in `TransportConfig`; `--max-datagram 1200` keeps chirp's at
//!   1,200, as before it had any);
//! - **tcp** (a reference, when root with `ip` and `socat`): the kernel's TCP through the same
//!   proxy, each IP packet one datagram of a UDP tunnel between two network namespaces
//!   ([`chirp_bench::tcp_ref`]); 64,000-byte writes, the kernel's buffers, an MTU of 1,500,
//!   and the kernel's default congestion controller (named in the first line of the output;
//!   BBR on Debian's cloud kernels, CUBIC on most others) or `--tcp-cc NAME`.
//!
//! Both get the same windows: 4 MiB of receive window (chirp's `receive_window`, quinn's
//! stream and connection receive windows) and 4 MiB of send buffer, about 8 BDPs of the
//! default path, so that flow control never binds and the congestion controller and loss
//! recovery decide. The time runs from the first byte handed to the sender to the last byte
//! read by the receiver (the handshake is not counted), or to `--max-secs` if that comes
//! first (a stack that crawls under loss would take hours for 100 MB; its row then says how
//! much it moved); goodput is the payload received over that time, as a fraction of `--rate`.
//! At the end, per stack and loss, the median of the runs and chirp's ratio to each other
//! stack (the median of the per-run ratios).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark prints its results

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use chirp_bench::children::{Children, Impairment};
use chirp_bench::{median, tcp_ref};
use chirp_proto::{
    ConnectionHandle, EndpointConfig, Event, SendError, TransportConfig, WriteError,
};
use tokio::sync::mpsc;

/// Bytes per message (chirp) and per write (quinn).
const CHUNK: usize = 64_000;
/// Receive window and send buffer of chirp and quinn (TCP keeps the kernel's).
const WINDOW: u64 = 4 << 20;
/// A transfer's outcome: payload bytes the receiver read, over how long.
#[derive(Debug, Clone)]
struct Outcome {
    bytes: u64,
    elapsed: Duration,
    complete: bool,
    /// The sender's mean datagram size, UDP payload bytes (filled in after `measure`).
    datagram: Option<u64>,
    /// What the sender's loss recovery did, where the stack tells (chirp's connection stats):
    /// a round far below the others is read from it.
    recovery: Option<String>,
}

/// Waits for `done` (the receiver read everything) up to `max`; counts what `got` says arrived
/// by then.
async fn measure(
    start: Instant,
    max: Duration,
    got: &AtomicU64,
    done: impl std::future::Future<Output = anyhow::Result<Instant>>,
) -> anyhow::Result<Outcome> {
    match tokio::time::timeout(max, done).await {
        Ok(end) => Ok(Outcome {
            bytes: got.load(Ordering::Relaxed),
            elapsed: end? - start,
            complete: true,
            datagram: None,
            recovery: None,
        }),
        Err(_) => Ok(Outcome {
            bytes: got.load(Ordering::Relaxed),
            elapsed: start.elapsed(),
            complete: false,
            datagram: None,
            recovery: None,
        }),
    }
}

#[derive(Debug, Clone)]
struct Args {
    chirp: PathBuf,
    mb: u64,
    rate: String,
    rate_bytes: u64,
    delay_ms: u64,
    losses: Vec<f64>,
    runs: u32,
    stacks: Vec<Stack>,
    pacing: bool,
    max_secs: u64,
    /// chirp's path MTU discovery ceiling (`TransportConfig::max_datagram_size`).
    max_datagram: usize,
    /// TCP's congestion controller (`--tcp-cc`); `None`: the kernel's default.
    tcp_cc: Option<String>,
    /// chirp's HyStart++ (off by default, as in `TransportConfig`; `--hystart` for an A/B).
    hystart: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Chirp,
    Quinn,
    Tcp,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Chirp => "chirp",
            Stack::Quinn => "quinn",
            Stack::Tcp => "tcp",
        }
    }
}

/// `100mbit`, `10MB/s`, ... in bytes per second (the forms `chirp impair --rate` takes that a
/// report needs; the proxy checks the rest), rounded to a whole byte as the proxy rounds it.
fn rate_bytes(s: &str) -> anyhow::Result<u64> {
    let lower = s.to_ascii_lowercase();
    let units: [(&str, f64); 6] = [
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("gb/s", 1e9),
        ("mb/s", 1e6),
        ("kb/s", 1e3),
    ];
    for (u, f) in units {
        if let Some(n) = lower.strip_suffix(u) {
            let bytes = n.trim().parse::<f64>().context("rate")? * f;
            if !(1.0..1e12).contains(&bytes) {
                bail!("--rate {s}: between one byte and 1 TB a second");
            }
            // In range: the conversion neither truncates nor saturates.
            return Ok(bytes.round() as u64);
        }
    }
    bail!("--rate {s}: use e.g. 100mbit or 10MB/s")
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let chirp = it
        .next()
        .context("usage: bulk CHIRP [--mb N] [--rate R] [--delay MS] [--loss P,P] [--runs N] [--stacks chirp,quinn,tcp] [--max-secs S] [--no-pacing] [--hystart] [--max-datagram BYTES] [--tcp-cc NAME]")?;
    let mut a = Args {
        chirp: PathBuf::from(chirp),
        mb: 100,
        rate: "100mbit".to_owned(),
        rate_bytes: 0,
        delay_ms: 20,
        losses: vec![0.0, 0.01, 0.05],
        runs: 3,
        stacks: Vec::new(),
        pacing: true,
        max_secs: 60,
        max_datagram: chirp_proto::pmtud::DEFAULT_CEILING,
        tcp_cc: None,
        hystart: false,
    };
    while let Some(flag) = it.next() {
        if flag == "--no-pacing" {
            a.pacing = false;
            continue;
        }
        if flag == "--hystart" {
            a.hystart = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mb" => a.mb = value.parse().context("--mb")?,
            "--rate" => a.rate = value,
            "--delay" => a.delay_ms = value.parse().context("--delay")?,
            "--runs" => a.runs = value.parse().context("--runs")?,
            "--max-secs" => a.max_secs = value.parse().context("--max-secs")?,
            "--max-datagram" => a.max_datagram = value.parse().context("--max-datagram")?,
            "--tcp-cc" => a.tcp_cc = Some(value),
            "--loss" => {
                a.losses = value
                    .split(',')
                    .map(|p| p.parse::<f64>().context("--loss"))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--stacks" => {
                a.stacks = value
                    .split(',')
                    .map(|s| match s {
                        "chirp" => Ok(Stack::Chirp),
                        "quinn" => Ok(Stack::Quinn),
                        "tcp" => Ok(Stack::Tcp),
                        _ => bail!("--stacks: chirp, quinn or tcp, not {s}"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            _ => bail!("unknown argument {flag}"),
        }
    }
    if a.stacks.is_empty() {
        // TCP too, where this machine can build its tunnel.
        a.stacks = vec![Stack::Chirp, Stack::Quinn];
        match tcp_ref::preflight() {
            Ok(()) => a.stacks.push(Stack::Tcp),
            Err(why) => println!("# no TCP reference: {why}"),
        }
    }
    a.rate_bytes = rate_bytes(&a.rate)?;
    Ok(a)
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_addr() -> anyhow::Result<SocketAddr> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(s.local_addr()?)
}

/// How long `chirp impair` may take to print its start line.
const IMPAIR_START: Duration = Duration::from_secs(10);

/// `chirp impair` in front of one transfer's receiver: its child process (killed on drop,
/// its stderr in a temporary directory) and the address it listens on.
struct Impair {
    _proxy: Children<()>,
    _dir: tempfile::TempDir,
    listen: SocketAddr,
}

impl Impair {
    fn start(a: &Args, to: SocketAddr, loss: f64, seed: u64) -> anyhow::Result<Self> {
        let listen = free_addr()?;
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let mut proxy = Children::new();
        let route = ["--listen", &listen.to_string(), "--to", &to.to_string()].map(str::to_owned);
        proxy.spawn_impair(
            (),
            &a.chirp,
            &route,
            &impairment(a, loss),
            seed,
            dir.path().join("impair.stderr"),
            IMPAIR_START,
        )?;
        Ok(Self {
            _proxy: proxy,
            _dir: dir,
            listen,
        })
    }
}

/// The path of every stack: `--rate` and `--delay` each way, and `loss` after the queue.
fn impairment(a: &Args, loss: f64) -> Impairment {
    Impairment {
        loss,
        delay_ms: a.delay_ms,
        rate: Some(a.rate_bytes),
        ..Impairment::default()
    }
}

/// chirp's transport settings for a bulk transfer: windows as [`WINDOW`].
fn chirp_config(a: &Args) -> EndpointConfig {
    EndpointConfig {
        transport: TransportConfig {
            receive_window: WINDOW,
            send_buffer: WINDOW as usize,
            pacing: a.pacing,
            hystart: a.hystart,
            max_datagram_size: a.max_datagram,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    }
}

/// Sends `total` bytes on `conn` as messages of [`CHUNK`] bytes, keeping the send buffer
/// full: the one place that says how chirp sends bulk data.
async fn chirp_send(
    handle: &chirp_transport::Handle,
    events: &mut mpsc::Receiver<Event>,
    conn: ConnectionHandle,
    total: u64,
) -> anyhow::Result<()> {
    let chunk = Bytes::from(vec![0x5a_u8; CHUNK]);
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        match handle.send(conn, chunk.slice(..n)).await? {
            Ok(()) => left -= n as u64,
            Err(SendError::Write(WriteError::Blocked)) => loop {
                match events.recv().await.context("sender's events ended")? {
                    Event::Writable { .. } => break,
                    Event::Closed { reason, .. } => bail!("sender closed: {reason:?}"),
                    _ => {}
                }
            },
            Err(e) => bail!("send: {e}"),
        }
    }
    Ok(())
}

/// When the chirp sender's window is sampled, from the first byte handed to it.
const WINDOW_SAMPLES: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// `window kB at 0.5 s: 310, 1.0 s: ...`: the window at each sampled instant the transfer
/// lasted to.
fn window_samples(samples: &[(Duration, u64)]) -> String {
    let mut out = String::from("window kB at");
    for (i, &(at, cwnd)) in samples.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        out.push_str(&format!("{sep} {:.1} s: {}", at.as_secs_f64(), cwnd / 1000));
    }
    out
}

/// One chirp transfer through `chirp impair`.
async fn chirp_run(a: &Args, loss: f64, seed: u64) -> anyhow::Result<Outcome> {
    let total = a.mb * 1_000_000;
    let rx_socket = chirp_transport::bind((Ipv4Addr::LOCALHOST, 0).into())?;
    let (rx, mut rx_events, _rx_task) =
        chirp_transport::spawn_on_thread(rx_socket, chirp_config(a), "bulk-receiver")?;
    let impair = Impair::start(a, rx.local_addr(), loss, seed)?;
    let tx_socket = chirp_transport::bind((Ipv4Addr::LOCALHOST, 0).into())?;
    let (tx, mut tx_events, _tx_task) =
        chirp_transport::spawn_on_thread(tx_socket, chirp_config(a), "bulk-sender")?;
    let conn = tx
        .connect(impair.listen)
        .await?
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    loop {
        match tx_events.recv().await.context("sender's events ended")? {
            Event::Connected { .. } => break,
            Event::Closed { reason, .. } => bail!("handshake failed: {reason:?}"),
            _ => {}
        }
    }
    let start = Instant::now();
    let got = Arc::new(AtomicU64::new(0));
    let receiver = tokio::spawn({
        let got = Arc::clone(&got);
        async move {
            while got.load(Ordering::Relaxed) < total {
                match rx_events.recv().await {
                    Some(Event::Message { data, .. }) => {
                        got.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    Some(Event::Closed { reason, .. }) => bail!("receiver closed: {reason:?}"),
                    Some(_) => {}
                    None => bail!("receiver's events ended"),
                }
            }
            Ok(Instant::now())
        }
    });
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move { chirp_send(&tx, &mut tx_events, conn, total).await }
    });
    // The sender's window at a few instants, to tell a slow round's path (a window that ends
    // slow start small grows one datagram per round trip after).
    let sampler = tokio::spawn({
        let tx = tx.clone();
        async move {
            let mut samples = Vec::new();
            for at in WINDOW_SAMPLES {
                tokio::time::sleep_until((start + at).into()).await;
                match tx.stats(conn).await {
                    Ok(Some(s)) => samples.push((at, s.cwnd)),
                    _ => break,
                }
            }
            samples
        }
    });
    let mut outcome = measure(start, Duration::from_secs(a.max_secs), &got, async {
        receiver.await.context("receiver task")?
    })
    .await?;
    sender.abort();
    sampler.abort();
    let samples = sampler.await.unwrap_or_default();
    if let Ok(Some(s)) = tx.stats(conn).await {
        outcome.datagram = s.bytes_sent.checked_div(s.packets_sent);
        outcome.recovery = Some(format!(
            "lost {} of {}, periods: {} congestion, {} random, {} persistent; {} spurious; \
             {}",
            s.packets_lost,
            s.packets_sent,
            s.congestion_periods,
            s.random_loss_periods,
            s.persistent_congestion,
            s.spurious_losses,
            window_samples(&samples)
        ));
    }
    let _ = tx.abort(conn, 0, "done").await;
    drop(impair);
    Ok(outcome)
}

/// The quinn endpoints' transport settings: windows as [`WINDOW`].
fn quinn_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let w = quinn::VarInt::from_u64(WINDOW).unwrap_or(quinn::VarInt::MAX);
    t.stream_receive_window(w);
    t.receive_window(w);
    t.send_window(WINDOW);
    t
}

/// One quinn transfer through `chirp impair`.
async fn quinn_run(a: &Args, loss: f64, seed: u64) -> anyhow::Result<Outcome> {
    let total = a.mb * 1_000_000;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert_der = rustls::pki_types::CertificateDer::from(cert.cert);
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let mut server_config =
        quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key.into())?;
    server_config.transport_config(Arc::new(quinn_transport()));
    let server = quinn::Endpoint::server(server_config, (Ipv4Addr::LOCALHOST, 0).into())?;
    let impair = Impair::start(a, server.local_addr()?, loss, seed)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let mut client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client_config.transport_config(Arc::new(quinn_transport()));
    let mut client = quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into())?;
    client.set_default_client_config(client_config);

    let got = Arc::new(AtomicU64::new(0));
    let receiver = tokio::spawn({
        let server = server.clone();
        let got = Arc::clone(&got);
        async move {
            let incoming = server.accept().await.context("no connection")?;
            let conn = incoming.await?;
            let mut stream = conn.accept_uni().await?;
            while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
                got.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            }
            let n = got.load(Ordering::Relaxed);
            anyhow::ensure!(n == total, "received {n} of {total} bytes");
            Ok::<_, anyhow::Error>(Instant::now())
        }
    });
    let conn = client.connect(impair.listen, "localhost")?.await?;
    let start = Instant::now();
    let mut stream = conn.open_uni().await?;
    let sender = tokio::spawn(async move {
        let chunk = Bytes::from(vec![0x5a_u8; CHUNK]);
        let mut left = total;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            stream.write_chunk(chunk.slice(..n)).await?;
            left -= n as u64;
        }
        stream.finish()?;
        Ok::<_, anyhow::Error>(stream)
    });
    let mut outcome = measure(start, Duration::from_secs(a.max_secs), &got, async {
        receiver.await.context("receiver task")?
    })
    .await?;
    sender.abort();
    let udp = conn.stats().udp_tx;
    outcome.datagram = udp.bytes.checked_div(udp.datagrams);
    conn.close(0u32.into(), b"done");
    client.close(0u32.into(), b"done");
    server.close(0u32.into(), b"done");
    drop(impair);
    Ok(outcome)
}

/// One TCP transfer through `chirp impair`, by [`tcp_ref`]'s tunnel.
fn tcp_run(a: &Args, loss: f64, seed: u64) -> anyhow::Result<Outcome> {
    let path = tcp_ref::TcpPath {
        chirp: &a.chirp,
        impairment: impairment(a, loss),
        seed,
        congestion: a.tcp_cc.as_deref(),
    };
    let exe = std::env::current_exe().context("this executable's path")?;
    let o = tcp_ref::transfer(
        &path,
        a.mb * 1_000_000,
        Duration::from_secs(a.max_secs),
        &exe,
    )?;
    // The header names the controller: the run must have used it.
    let want = a.tcp_cc.clone().or_else(tcp_ref::default_congestion);
    if want.as_ref().is_some_and(|w| *w != o.congestion) {
        bail!("TCP used {} where {want:?} was meant", o.congestion);
    }
    Ok(Outcome {
        bytes: o.bytes,
        elapsed: o.elapsed,
        complete: o.complete,
        // The tunnel's datagrams are TCP's IP packets, up to the MTU of 1,500.
        datagram: None,
        recovery: None,
    })
}

/// Runs this executable as [`tcp_ref`]'s receiver or sender, inside a namespace, when it was
/// started as one: `Some` then.
fn tcp_role() -> Option<anyhow::Result<()>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> anyhow::Result<u64> {
        args.get(i)
            .context("missing argument")?
            .parse()
            .context("not a number")
    };
    match args.first().map(String::as_str) {
        Some(tcp_ref::SINK_ARG) => Some((|| {
            let (total, max) = (number(1)?, number(2)?);
            tcp_ref::sink(total, Duration::from_secs(max)).context("TCP receiver")
        })()),
        Some(tcp_ref::SOURCE_ARG) => Some(number(1).and_then(|total| {
            tcp_ref::source(total, args.get(2).map(String::as_str)).context("TCP sender")
        })),
        _ => None,
    }
}

fn main() -> anyhow::Result<()> {
    if let Some(done) = tcp_role() {
        return done;
    }
    let a = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let link = a.rate_bytes as f64;
    println!(
        "# {} MB through chirp impair --rate {} --delay {} (each way), {} runs, pacing {}, HyStart++ {}, chirp's datagrams up to {} B",
        a.mb,
        a.rate,
        a.delay_ms,
        a.runs,
        if a.pacing { "on" } else { "off" },
        if a.hystart { "on" } else { "off" },
        a.max_datagram
    );
    if a.stacks.contains(&Stack::Tcp) {
        let cc = a.tcp_cc.clone().or_else(tcp_ref::default_congestion);
        println!(
            "# tcp: the kernel's TCP, congestion control {}",
            cc.as_deref().unwrap_or("unknown")
        );
    }
    println!("loss\trun\tstack\tseconds\tMB/s\tof link\tmean datagram\trecovery (chirp)");
    // Per loss: per stack, each run's fraction of the link.
    let mut table: Vec<(f64, Vec<Vec<f64>>)> = Vec::new();
    for (li, &loss) in a.losses.iter().enumerate() {
        let mut rows = vec![Vec::new(); a.stacks.len()];
        for run in 0..a.runs {
            let seed = 1_000 * li as u64 + u64::from(run) + 1;
            for (si, &stack) in a.stacks.iter().enumerate() {
                let result = runtime.block_on(async {
                    match stack {
                        Stack::Chirp => chirp_run(&a, loss, seed).await,
                        Stack::Quinn => quinn_run(&a, loss, seed).await,
                        Stack::Tcp => {
                            let a = a.clone();
                            tokio::task::spawn_blocking(move || tcp_run(&a, loss, seed)).await?
                        }
                    }
                });
                let fraction = match result {
                    Ok(o) => {
                        let rate = o.bytes as f64 / o.elapsed.as_secs_f64();
                        println!(
                            "{:.0} %\t{}\t{}\t{:.2}\t{:.2}\t{:.1} %\t{}{}{}",
                            loss * 100.0,
                            run + 1,
                            stack.name(),
                            o.elapsed.as_secs_f64(),
                            rate / 1e6,
                            100.0 * rate / link,
                            o.datagram
                                .map_or_else(|| "?".to_owned(), |d| format!("{d} B")),
                            if o.complete {
                                String::new()
                            } else {
                                format!(" ({} MB of {} in --max-secs)", o.bytes / 1_000_000, a.mb)
                            },
                            o.recovery.map(|r| format!("\t{r}")).unwrap_or_default()
                        );
                        rate / link
                    }
                    Err(e) => {
                        println!(
                            "{:.0} %\t{}\t{}\tfailed: {e:#}",
                            loss * 100.0,
                            run + 1,
                            stack.name()
                        );
                        0.0
                    }
                };
                rows[si].push(fraction);
            }
        }
        table.push((loss, rows));
    }
    println!();
    print!("| loss |");
    for s in &a.stacks {
        print!(" {} (median, of link) | runs |", s.name());
    }
    // chirp against each other stack, when chirp ran.
    let chirp = a.stacks.iter().position(|&s| s == Stack::Chirp);
    let others: Vec<usize> = match chirp {
        Some(c) => (0..a.stacks.len()).filter(|&i| i != c).collect(),
        None => Vec::new(),
    };
    for &o in &others {
        print!(
            " chirp / {} (median of per-run ratios) |",
            a.stacks[o].name()
        );
    }
    println!();
    for (loss, rows) in &table {
        print!("| {:.0} % |", loss * 100.0);
        for r in rows {
            let runs: Vec<String> = r.iter().map(|f| format!("{:.1}", f * 100.0)).collect();
            let med = median(&mut r.clone()).unwrap_or(0.0);
            print!(" {:.1} % | {} |", med * 100.0, runs.join(", "));
        }
        if let Some(c) = chirp {
            for &o in &others {
                let mut ratios: Vec<f64> = rows[c]
                    .iter()
                    .zip(&rows[o])
                    .map(|(c, q)| if *q > 0.0 { c / q } else { f64::NAN })
                    .collect();
                let med = median(&mut ratios).unwrap_or(f64::NAN);
                print!(" {med:.2}x |");
            }
        }
        println!();
    }
    Ok(())
}
