//! The TCP reference of the bulk bench (issue 18): the kernel's TCP (with SACK and RACK, and
//! the congestion controller asked for, or the kernel's default: [`default_congestion`])
//! through the same `chirp impair` path as chirp and quinn, in the same run.
//!
//! `chirp impair` relays UDP datagrams, so TCP rides a UDP tunnel. Two network namespaces
//! each hold one end of the TCP connection on a tun device (10.77.0.1 and 10.77.0.2, private,
//! inside the namespaces only). Each tun device is opened by a `socat` in the bench's own
//! namespace that carries every IP packet as one UDP datagram over 127.0.0.1, through one
//! `chirp impair` in fixed-wire mode (`--client`/`--via`). The proxy's rate limit, queue,
//! delay and loss therefore apply to TCP's packets one by one, as to the other stacks'
//! datagrams. The rate counts what the tunnel carries: TCP's IP and TCP headers (40 bytes a
//! packet at an MTU of 1,500) count against it, where chirp's and quinn's IP and UDP headers
//! do not.
//!
//! The receiver and the sender are the bench's own executable run again inside the
//! namespaces ([`sink`], [`source`]): the sender stamps the moment its connection is up, the
//! receiver the moment it has read every byte (or its deadline, with what it had), both on
//! the system clock, which namespaces share. The handshake is not counted, as for the others.
//!
//! Needs root, `ip`, `socat` and `/dev/net/tun`; [`preflight`] says why not otherwise.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::BenchError;
use crate::children::{Children, Impairment, Out};
use crate::netns::{Namespaces, cmd, require, sweep_leftovers};

/// The receiver's address inside its namespace.
const SINK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), 5001);
/// The sender's tun address.
const SOURCE_IP: &str = "10.77.0.1/30";
/// The receiver's tun address.
const SINK_IP: &str = "10.77.0.2/30";
/// Bound on each start-up step (a device appearing, a process's first line).
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// What the receiver waits for after its deadline before it is killed.
const GRACE: Duration = Duration::from_secs(10);
/// Argument that runs the executable as the receiver: `--tcp-sink BYTES MAX_SECS`.
pub const SINK_ARG: &str = "--tcp-sink";
/// Argument that runs the executable as the sender: `--tcp-source BYTES [CONTROLLER]`.
pub const SOURCE_ARG: &str = "--tcp-source";

/// The path the TCP transfer takes: `chirp impair`'s settings.
#[derive(Debug, Clone)]
pub struct TcpPath<'a> {
    /// The `chirp` executable.
    pub chirp: &'a Path,
    /// What the proxy does to the tunnel's datagrams (its rate, delay and loss).
    pub impairment: Impairment,
    /// The proxy's `--seed`.
    pub seed: u64,
    /// The sender's TCP congestion controller (`net.ipv4.tcp_congestion_control` in its
    /// namespace, e.g. `cubic` or `bbr`); `None`: the kernel's default.
    pub congestion: Option<&'a str>,
}

/// The kernel's default TCP congestion controller, which a new namespace starts with.
pub fn default_congestion() -> Option<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// What one transfer moved, over how long.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Payload bytes the receiver read.
    pub bytes: u64,
    /// From the sender's connection up to the receiver's last byte (or its deadline).
    pub elapsed: Duration,
    /// Every byte arrived before the deadline.
    pub complete: bool,
    /// The sender's congestion controller, as its socket reported it.
    pub congestion: String,
}

/// Why the TCP reference cannot run here, or `Ok`.
pub fn preflight() -> Result<(), String> {
    require(&["ip", "socat"])?;
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    Ok(())
}

/// The children of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Impair,
    Sink,
    Source,
}

/// A `socat`, killed and reaped on drop. Not one of the [`Children`]: socat says on its
/// stderr when its device is ready ([`ready`]), and its stdout is the device's data.
#[derive(Debug)]
struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, BenchError> {
    let s =
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BenchError::io("bind 127.0.0.1:0"))?;
    let addr = s
        .local_addr()
        .map_err(BenchError::io("a bound socket's address"))?;
    Ok(addr.port())
}

/// Reads `log` (socat's stderr) until a line contains `mark` (`Ok`) or is an error line of
/// socat's (` E `), within [`SETUP_LIMIT`]; a thread of its own reads the rest to the end, so
/// that socat never blocks on a full pipe.
fn ready(what: &str, log: impl Read + Send + 'static, mark: &str) -> Result<(), BenchError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + SETUP_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(mark) => return Ok(()),
            Ok(line) if line.contains(" E ") => {
                return Err(BenchError::Stuck(format!("{what}: {line}")));
            }
            Ok(_) => {}
            Err(_) => return Err(BenchError::Stuck(format!("{what} did not start"))),
        }
    }
}

/// The next line of `who`, within `limit`. Lines of the others meanwhile are passed over,
/// and so is their end: the sender exits once it has sent everything, before the receiver
/// has read it.
fn line_of(
    children: &mut Children<Who>,
    who: Who,
    what: &str,
    limit: Duration,
) -> Result<String, BenchError> {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match children.recv_timeout(left) {
            Ok(Out { who: w, line, .. }) if w == who => {
                return line.ok_or_else(|| {
                    BenchError::Stuck(format!(
                        "while waiting for {what}: {}",
                        children.exited(who)
                    ))
                });
            }
            Ok(_) => {}
            Err(_) => {
                return Err(BenchError::Stuck(format!(
                    "no {what} within {limit:?}{}",
                    children.tails()
                )));
            }
        }
    }
}

/// Moves `total` bytes by TCP through `path`, at most `max` long; `exe` is the executable
/// that runs [`sink`] and [`source`] (the bench's own, which dispatches [`SINK_ARG`] and
/// [`SOURCE_ARG`] to them).
pub fn transfer(
    path: &TcpPath<'_>,
    total: u64,
    max: Duration,
    exe: &Path,
) -> Result<Outcome, BenchError> {
    preflight().map_err(|why| BenchError::Stuck(format!("no TCP reference: {why}")))?;
    sweep_leftovers();
    // Declared first, dropped last: the processes die before their namespaces go, and the
    // directory of their stderr files after them.
    let dir = tempfile::tempdir().map_err(BenchError::io("a temporary directory"))?;
    let mut ns = Namespaces::new();
    let mut socats = Vec::new();
    let mut children = Children::new();
    let a = ns.add("tcpa")?;
    let b = ns.add("tcpb")?;
    let (tun_a, tun_b) = (format!("ct{}a", ns.tag()), format!("ct{}b", ns.tag()));
    let [listen, client, via, to] = [free_port()?, free_port()?, free_port()?, free_port()?];
    let local = |p: u16| format!("127.0.0.1:{p}");
    let route = [
        "--listen".to_owned(),
        local(listen),
        "--to".to_owned(),
        local(to),
        "--client".to_owned(),
        local(client),
        "--via".to_owned(),
        local(via),
    ];
    children.spawn_impair(
        Who::Impair,
        path.chirp,
        &route,
        &path.impairment,
        path.seed,
        dir.path().join("impair.stderr"),
        SETUP_LIMIT,
    )?;

    // The tunnel: socat A sends to the proxy's --listen from --client; socat B receives on
    // --to and sends back to --via. The proxy first: a socat whose datagram is refused
    // (nothing on the port yet) exits.
    for (tun, peer, bind) in [(&tun_a, listen, client), (&tun_b, via, to)] {
        let mut child = Command::new("socat")
            .args(["-d", "-d"])
            .arg(format!("TUN,tun-name={tun},iff-no-pi"))
            .arg(format!("UDP:{},bind={}", local(peer), local(bind)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Stuck(format!("cannot start socat: {e}")))?;
        let log = child.stderr.take();
        socats.push(Socat(child));
        // socat configures the device after creating it: moving it away before socat is done
        // makes socat fail and the device vanish. It says when it is done.
        let log = log.ok_or_else(|| BenchError::Stuck("socat's stderr".into()))?;
        ready(
            &format!("socat for {tun}"),
            log,
            "starting data transfer loop",
        )?;
    }
    for (tun, ns_name, addr) in [(&tun_a, &a, SOURCE_IP), (&tun_b, &b, SINK_IP)] {
        // Moving a device clears its addresses: configure it in its namespace.
        cmd("ip", &["link", "set", tun, "netns", ns_name]).map_err(BenchError::Stuck)?;
        cmd("ip", &["-n", ns_name, "addr", "add", addr, "dev", tun]).map_err(BenchError::Stuck)?;
        cmd("ip", &["-n", ns_name, "link", "set", tun, "up"]).map_err(BenchError::Stuck)?;
    }
    // The bench's own executable, run again in a namespace as `who`.
    let in_ns = |children: &mut Children<Who>, who: Who, ns_name: &str, args: &[String]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns_name]).arg(exe).args(args);
        let name = format!("{who:?}").to_lowercase();
        let stderr = dir.path().join(format!("{name}.stderr"));
        children.spawn(who, &name, c, stderr, false).map(drop)
    };
    let sink_args = [
        SINK_ARG.into(),
        total.to_string(),
        max.as_secs().to_string(),
    ];
    in_ns(&mut children, Who::Sink, &b, &sink_args)?;
    let line = line_of(&mut children, Who::Sink, "the TCP receiver", SETUP_LIMIT)?;
    if line != "listening" {
        return Err(BenchError::Stuck(format!("the TCP receiver said {line:?}")));
    }
    let mut source_args = vec![SOURCE_ARG.into(), total.to_string()];
    source_args.extend(path.congestion.map(str::to_owned));
    in_ns(&mut children, Who::Source, &a, &source_args)?;
    let line = line_of(&mut children, Who::Source, "the TCP sender", SETUP_LIMIT)?;
    // `connected NANOS CONTROLLER`: the controller the socket uses (read back).
    let mut words = line.split_whitespace();
    let (Some("connected"), Some(started), Some(congestion)) =
        (words.next(), words.next(), words.next())
    else {
        return Err(BenchError::Stuck(format!("the TCP sender said {line:?}")));
    };
    let started: u128 = started
        .parse()
        .map_err(|_| BenchError::Stuck(format!("the TCP sender said {line:?}")))?;
    let congestion = congestion.to_owned();
    let last = line_of(
        &mut children,
        Who::Sink,
        "the TCP receiver's result",
        max + GRACE,
    )?;
    let mut words = last.split_whitespace();
    let (Some(kind), Some(bytes), Some(ended)) = (words.next(), words.next(), words.next()) else {
        return Err(BenchError::Stuck(format!("the TCP receiver said {last:?}")));
    };
    let (Ok(bytes), Ok(ended)) = (bytes.parse::<u64>(), ended.parse::<u128>()) else {
        return Err(BenchError::Stuck(format!("the TCP receiver said {last:?}")));
    };
    let nanos = u64::try_from(ended.saturating_sub(started)).unwrap_or(u64::MAX);
    drop(children);
    drop(socats);
    drop(ns);
    Ok(Outcome {
        bytes,
        elapsed: Duration::from_nanos(nanos),
        complete: kind == "done",
        congestion,
    })
}

/// Nanoseconds since the epoch on the system clock (shared by every namespace).
fn wall_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The receiver, in its namespace: listens on [`SINK`], prints `listening`, accepts one
/// connection and reads until it has `total` bytes (`done BYTES NANOS`), the connection ends
/// (`short BYTES NANOS`) or `max` has passed since the accept (`partial BYTES NANOS`).
pub fn sink(total: u64, max: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind(SINK)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening")?;
    out.flush()?;
    let (mut conn, _) = listener.accept()?;
    let deadline = Instant::now() + max;
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = vec![0_u8; 1 << 20];
    let mut got = 0_u64;
    let kind = loop {
        if got >= total {
            break "done";
        }
        if Instant::now() >= deadline {
            break "partial";
        }
        match conn.read(&mut buf) {
            Ok(0) => break "short",
            Ok(n) => got += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    };
    writeln!(out, "{kind} {got} {}", wall_nanos())?;
    out.flush()
}

/// The sender, in its namespace: connects to [`SINK`] with `congestion` as its congestion
/// controller (or the kernel's default), prints `connected NANOS CONTROLLER`, writes `total`
/// bytes and closes.
pub fn source(total: u64, congestion: Option<&str>) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(cc) = congestion {
        socket.set_tcp_congestion(cc.as_bytes())?;
    }
    socket.connect(&SINK.into())?;
    let used = String::from_utf8_lossy(&socket.tcp_congestion()?)
        .trim_end_matches('\0')
        .to_owned();
    let mut conn = TcpStream::from(socket);
    let mut out = std::io::stdout().lock();
    writeln!(out, "connected {} {used}", wall_nanos())?;
    out.flush()?;
    let chunk = vec![0x5a_u8; 64_000];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    conn.shutdown(std::net::Shutdown::Write)
}
