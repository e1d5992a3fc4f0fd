//! `chirp ping HOST[:PORT]`: like `ping`, for a chirp server or peer. A handshake (the key's
//! fingerprint, and whether it is the one remembered or pinned), then probes with their round
//! trip, loss and jitter, and the statistics at the end. Ping presents a one-time key, made for
//! the run and never written anywhere, unless `--as-me` asks for the user's identity (to probe a
//! peer whose partner is the user).
//!
//! The logic is [`chirp_client::ping::Pinger`], a sans-IO state machine that owns its
//! endpoint. This file is the command line, the key check against `known_keys`, a thin tokio
//! loop that moves datagrams between a UDP socket and the pinger and sleeps until its next
//! deadline, and the printing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chirp_client::ping::{Config, Event, Failure, LostReason, Pinger, Summary};
use chirp_keys::{Fingerprint, Identity, KnownKeys, PublicKey};
use chirp_qlog::{QlogDir, QlogSender, WriterHandle};
use chirp_tui::safe::line as safe;
use clap::Args;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::output::{guard, json_line, now_utc, write_line};

pub(crate) const EXAMPLES: &str = "\
What a probe is: one packet with a PING frame, which any chirp server or peer acknowledges
(nothing new on the wire). Its round-trip time (rtt) runs from sending it to the arrival of
the acknowledgement, less the acknowledgement delay the other side reports in it (at most
10 ms): the path's time, not the other side's batching of acknowledgements. A probe is lost
when the transport's loss detection declares its packet lost (\"detected by the
transport\"), after -W seconds without an answer, or when it arrived but the acknowledgement
sent for it was lost and only a later one said so (\"arrived; its answer was lost\": like an
echo reply lost on the way back, it has no round-trip time). A probe is never sent again.
The summary is ping's: rtt min/avg/max/mdev, where mdev (the jitter) is the standard
deviation of the round-trip times, computed as iputils ping does:
sqrt(mean(rtt^2) - mean(rtt)^2). A probe still waiting at Ctrl-C counts as unanswered.

Their key: the handshake authenticates the other side's static key. Its fingerprint is
printed with whether it matches the one remembered for HOST:PORT in --home's known_keys (where
`chirp connect` and `chirp peer` remember keys); ping reads that file and never writes it.
--server-key pins a fingerprint instead (the one `chirp serve` or `chirp id` printed). A key
that differs from the pinned or remembered one ends ping before any probe, with exit code 2;
ping's own key is not revealed to it.

Ping's key: a one-time key, made for this run and never written anywhere, so that ping reveals
nobody's identity and nobody can take it for someone else. A chat server takes any key. A
chirp peer (`chirp peer`) takes only its partner's key (its --peer-key, the key it remembered
for its --to, or on first contact a key from exactly its --to address), so it refuses the
one-time key after proving its own: ping prints the peer's key and how soon it answered, says
that the peer is up but takes only its partner's key, and exits 0 (the refusal is its answer;
no probe is sent). The peer's user sees a line saying that it refused a key from ping's
address. A peer that has not met its partner yet and has a user to ask asks about ping's key
instead (the answer to give is no): ping gives up after -W seconds, saying that the handshake
did not complete.

--as-me presents your identity (--home's key) instead, to probe a peer whose partner is you.
The peer answers ping's probes but never takes ping for you: a chirp peer sends a HELLO first
on its chat's connection, which ping never does. A peer in a chat with you keeps the chat on
its connection with you; a peer that is not in a chat with you does not show you as up, and
the lines its user types wait for you rather than go to ping. Nothing of the chat goes to ping,
nothing is lost. (The one exception: ping sent from your chirp peer's own address, --bind, while
that peer is not running, is taken for it; the lines it is then sent are counted, \"the peer
sent N chat message(s) here\", but not shown.) A peer that refuses your key is reported as an
error (exit code 1).

Exit status: 0 if at least one probe was answered, or if a peer answered and refused the
one-time key; 1 if no probe was answered (nobody there, --as-me refused, all lost); 2 if the key
is not the pinned or remembered one.

--json prints one JSON object at the end instead of lines; its fields are in docs/JSON.md
(\"chirp ping\").

Examples:
  chirp ping 127.0.0.1                      # a server on the default port 7667, 4 probes
  chirp ping chat.example.org:7667 -c 10 -i 0.2
  chirp ping 192.0.2.1 --server-key abcd-efgh-ijkl-mnop-qrst-uvwx
  chirp ping 127.0.0.1:7000 -c 0            # through `chirp impair` on 7000, until Ctrl-C
  chirp ping 127.0.0.1:7667 -c 1 -W 2 --json   # a health check
  chirp ping 203.0.113.5:7002 --as-me       # the peer you chat with, as yourself
  chirp ping 127.0.0.1 -c 10 --qlog /tmp/chirp-qlog   # a qlog trace of the connection, for qvis";

/// Most probes per second: an interval below this would be a flood, not a measurement.
const MIN_INTERVAL: f64 = 0.01;
/// How long, at most, the CLOSE is given to reach the other side once pinging is over.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub(crate) struct PingArgs {
    /// The server or peer, HOST[:PORT] (port default 7667).
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
    /// Probes to send; 0: until Ctrl-C.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4)]
    count: u64,
    /// Seconds between probes (at least 0.01).
    #[arg(short = 'i', long, value_name = "SECS", default_value_t = 1.0, value_parser = interval)]
    interval: f64,
    /// Seconds to wait for the handshake, and for each probe's answer.
    #[arg(short = 'W', long, value_name = "SECS", default_value_t = 5.0, value_parser = timeout)]
    timeout: f64,
    /// Accept only a key with this fingerprint.
    #[arg(long, value_name = "FINGERPRINT")]
    server_key: Option<Fingerprint>,
    /// Directory of known_keys, and of your identity key for --as-me [default:
    /// $XDG_CONFIG_HOME/chirp].
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Handshake with your identity (--home's key) instead of a one-time key: to ping a chirp
    /// peer whose partner is you (it takes no other key).
    #[arg(long)]
    as_me: bool,
    /// Local address to send from, IP:PORT [default: any, of the target's IP version].
    #[arg(long, value_name = "ADDR", value_parser = crate::addr::local_addr)]
    bind: Option<SocketAddr>,
    /// One JSON object at the end instead of lines (fields: docs/JSON.md).
    #[arg(long)]
    json: bool,
    /// Write a qlog trace of the connection into this directory (created if missing):
    /// <connection id>-client.sqlog, for qvis.
    #[arg(long, value_name = "DIR")]
    qlog: Option<PathBuf>,
}

fn seconds(s: &str, min: f64, max: f64) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(min..=max).contains(&v) {
        return Err(format!("{v} is out of range ({min} to {max} seconds)"));
    }
    Ok(v)
}

fn interval(s: &str) -> Result<f64, String> {
    seconds(s, MIN_INTERVAL, 3600.0)
}

fn timeout(s: &str) -> Result<f64, String> {
    seconds(s, 0.1, 600.0)
}

/// What the key check found, for the key line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyStatus {
    /// The pin (`--server-key`) matched.
    Pinned,
    /// The key remembered in known_keys.
    Known,
    /// Nothing remembered for this name.
    Unknown,
    /// Another key is remembered: refused.
    Differs { stored: Fingerprint },
    /// Not the pinned one: refused.
    PinDiffers,
    /// known_keys could not be read: refused (the key cannot be vouched for).
    Unreadable(String),
}

impl KeyStatus {
    fn accepts(&self) -> bool {
        matches!(self, Self::Pinned | Self::Known | Self::Unknown)
    }

    fn json(&self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Known => "known",
            Self::Unknown => "unknown",
            Self::Differs { .. } => "differs",
            Self::PinDiffers => "pin_differs",
            Self::Unreadable(_) => "unreadable",
        }
    }
}

/// The key remembered for `name` in `known`, against `key`. Reads only.
fn known_status(known: &KnownKeys, name: &str, key: PublicKey) -> KeyStatus {
    match known.get(name) {
        Ok(Some(stored)) if stored == key => KeyStatus::Known,
        Ok(Some(stored)) => KeyStatus::Differs {
            stored: stored.fingerprint(),
        },
        Ok(None) => KeyStatus::Unknown,
        Err(e) => KeyStatus::Unreadable(e.to_string()),
    }
}

/// A peer refused the one-time key after proving its own: it is up, and this is its answer.
fn one_time_key_refused(failure: Option<&Failure>, summary: &Summary, as_me: bool) -> bool {
    !as_me && summary.answer.is_some() && matches!(failure, Some(Failure::PeerRefusedKey { .. }))
}

/// The exit status: 2 for a key that is not the expected one, else 0 if any probe was
/// answered or a peer answered and refused the one-time key, else 1.
fn exit_code(failure: Option<&Failure>, summary: &Summary, as_me: bool) -> u8 {
    match failure {
        Some(f) if f.is_key_mismatch() => 2,
        _ if summary.answered > 0 => 0,
        _ if one_time_key_refused(failure, summary, as_me) => 0,
        _ => 1,
    }
}

/// Milliseconds with three decimals, as ping prints them.
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Milliseconds for JSON, to the microsecond.
fn ms_f(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// A loss percentage as ping prints it: whole when it is, else with what it needs.
fn percent(p: f64) -> String {
    let digits = format!("{p:.4}");
    format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
}

/// An error line as printed: escaped, since it may hold the other side's words (a close
/// reason).
fn error_line(text: &str) -> String {
    format!("chirp ping: {}", safe(text))
}

/// Everything printed, in human lines as they happen or as one JSON object at the end.
struct Printer {
    json: bool,
    /// Ping presents the user's identity (`--as-me`), not a one-time key.
    as_me: bool,
    /// `--server-key`.
    pin: Option<Fingerprint>,
    /// The name as given (with its port), and the address.
    name: String,
    addr: SocketAddr,
    fingerprint: Option<Fingerprint>,
    key_status: Option<KeyStatus>,
    probes: Vec<Value>,
    failure: Option<Failure>,
}

impl Printer {
    fn line(&self, text: String) {
        if !self.json {
            write_line(&[guard(text).as_bytes()]);
        }
    }

    /// An error line, on stderr (escaped: it may hold the peer's words).
    fn error(&self, text: &str) {
        if !self.json {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{}", error_line(text));
        }
    }

    fn header(&self, count: u64, interval: f64) {
        let probes = match count {
            0 => "probes until Ctrl-C".to_owned(),
            1 => "1 probe".to_owned(),
            n => format!("{n} probes"),
        };
        self.line(format!(
            "CHIRP PING {} ({}): {probes}, every {interval} s",
            safe(&self.name),
            self.addr
        ));
    }

    /// The key line: the fingerprint, what the key check found, and `when` (the handshake's
    /// time, or the time the other side took to answer).
    fn key_line(&self, when: &str) {
        let (Some(fp), Some(status)) = (&self.fingerprint, &self.key_status) else {
            return;
        };
        let how = match status {
            KeyStatus::Pinned => "matches --server-key".to_owned(),
            KeyStatus::Known => "matches known_keys".to_owned(),
            KeyStatus::Unknown => "not in known_keys (not remembered by ping)".to_owned(),
            KeyStatus::Differs { .. } | KeyStatus::PinDiffers | KeyStatus::Unreadable(_) => {
                "refused".to_owned()
            }
        };
        self.line(format!("key {fp}: {how}; {when}"));
    }

    fn event(&mut self, ev: &Event) {
        match ev {
            // The key line comes once the handshake is done (or refused), with its time.
            Event::VerifyKey { key } => self.fingerprint = Some(key.fingerprint()),
            Event::HandshakeDone { fingerprint, time } => {
                self.fingerprint = Some(*fingerprint);
                // With a pin the pinger checked it; without, `verdict` set the status.
                self.key_status.get_or_insert(KeyStatus::Pinned);
                self.key_line(&format!("handshake {} ms", ms(*time)));
            }
            Event::Reply { seq, rtt } => {
                self.probes.push(json!({"seq": seq, "rtt_ms": ms_f(*rtt)}));
                self.line(format!("seq={seq} rtt={} ms", ms(*rtt)));
            }
            Event::Lost { seq, reason } => {
                let why = match reason {
                    LostReason::Declared => "declared",
                    LostReason::Timeout => "timeout",
                    LostReason::AnswerLost => "answer",
                };
                self.probes.push(json!({"seq": seq, "lost": why}));
                self.line(format!("seq={seq} lost ({reason})"));
            }
            Event::Failed { reason } => {
                self.failure = Some(reason.clone());
                match reason {
                    Failure::KeyMismatch { actual, .. } => {
                        self.fingerprint = Some(*actual);
                        self.key_status = Some(KeyStatus::PinDiffers);
                    }
                    Failure::KeyRejected { actual } => self.fingerprint = Some(*actual),
                    // Refused by the peer after our check: with a pin, that key was the pin's.
                    Failure::PeerRefusedKey { .. } => {
                        if let Some(pin) = self.pin {
                            self.fingerprint = Some(pin);
                            self.key_status = Some(KeyStatus::Pinned);
                        }
                        if !self.as_me {
                            // The peer's answer to the one-time key: told with the summary.
                            return;
                        }
                    }
                    _ => {}
                }
                let text = match (reason, &self.key_status) {
                    (Failure::KeyRejected { actual }, Some(KeyStatus::Differs { stored })) => {
                        format!(
                            "refusing {}: it presented key {actual}, but the key remembered for \
                             it in known_keys is {stored}; if it really has a new key, remove \
                             its line (or pin it with --server-key)",
                            self.name
                        )
                    }
                    (Failure::KeyRejected { actual }, Some(KeyStatus::Unreadable(e))) => {
                        format!("cannot check key {actual}: {e}")
                    }
                    (Failure::PeerRefusedKey { reason }, _) => format!(
                        "{}: refused by the peer ({reason}): it does not take your key; a chirp \
                         peer takes only its partner's key (its --peer-key, or the key it \
                         remembered for its --to)",
                        self.name
                    ),
                    (reason, _) => format!("{}: {reason}", self.name),
                };
                self.error(&text);
            }
            Event::Finished { .. } => {}
        }
    }

    fn summary(&self, s: &Summary, code: u8) {
        if self.json {
            let rtt = s.rtt.map(|r| {
                json!({"min": ms_f(r.min), "avg": ms_f(r.avg), "max": ms_f(r.max),
                       "mdev": ms_f(r.mdev)})
            });
            let failure = self.failure.as_ref().map(|f| {
                let kind = match f {
                    Failure::NoAnswer { .. } => "no_answer",
                    Failure::HandshakeIncomplete { .. } => "handshake_incomplete",
                    Failure::ServerRefused { .. } => "server_refused",
                    Failure::PeerRefusedKey { .. } => "peer_refused_key",
                    Failure::KeyMismatch { .. } => "key_mismatch",
                    Failure::KeyRejected { .. } => "key_rejected",
                    Failure::Closed { .. } => "closed",
                };
                json!({"kind": kind, "message": f.to_string()})
            });
            let obj = json!({
                "type": "ping",
                "ts": now_utc(),
                "host": self.name,
                "address": self.addr.to_string(),
                "key": self.fingerprint.map(|f| f.to_string()),
                "key_status": self.key_status.as_ref().map(KeyStatus::json),
                "as_me": self.as_me,
                "answer_ms": s.answer.map(ms_f),
                "handshake_ms": s.handshake.map(ms_f),
                "probes": self.probes,
                "sent": s.sent,
                "answered": s.answered,
                "lost": s.lost,
                "loss_percent": s.loss_percent(),
                "time_ms": ms_f(s.time),
                "rtt_ms": rtt,
                "messages_ignored": s.messages,
                "failure": failure,
                "exit": code,
            });
            write_line(&[json_line(&obj).as_bytes()]);
            return;
        }
        match (&self.failure, s.answer) {
            (Some(Failure::PeerRefusedKey { .. }), Some(answer)) if !self.as_me => {
                self.key_line(&format!("answered in {} ms", ms(answer)));
                self.line(format!(
                    "{} is up: it answered, then refused ping's one-time key. It is a chirp \
                     peer, which takes only its partner's key; no probe was sent (to probe a \
                     peer whose partner is you, ping as yourself: --as-me)",
                    safe(&self.name)
                ));
            }
            // Refused before anything proved who is there: an error after all.
            (Some(f @ Failure::PeerRefusedKey { .. }), None) if !self.as_me => {
                self.error(&format!("{}: {f}", self.name));
            }
            _ => {}
        }
        if s.messages > 0 {
            self.error(&format!(
                "the peer sent {} chat message(s) here: it took ping for its chat partner. They \
                 were not shown, and the peer counts them delivered",
                s.messages
            ));
        }
        self.line(format!(
            "--- {} chirp ping statistics ---",
            safe(&self.name)
        ));
        self.line(format!(
            "{} probes sent, {} answered, {} loss, time {:.0} ms",
            s.sent,
            s.answered,
            percent(s.loss_percent()),
            ms_f(s.time)
        ));
        if let Some(r) = s.rtt {
            self.line(format!(
                "rtt min/avg/max/mdev = {}/{}/{}/{} ms",
                ms(r.min),
                ms(r.avg),
                ms(r.max),
                ms(r.mdev)
            ));
        }
    }
}

/// The datagram's destination as this socket can send to it: an IPv6 socket reaches an IPv4
/// address through its mapped form.
fn destination(local: SocketAddr, to: SocketAddr) -> SocketAddr {
    match (local.ip(), to.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => SocketAddr::new(v4.to_ipv6_mapped().into(), to.port()),
        _ => to,
    }
}

/// How long, at most, ping waits at the end for its qlog file to be written.
const QLOG_FINISH: Duration = Duration::from_secs(5);

/// `--qlog`: the connection's trace, written by a thread of its own (`chirp_qlog`), as the
/// transport does it for the other commands.
struct Qlog {
    sender: QlogSender,
    writer: WriterHandle,
    /// Woken by the writer when it has caught up, and when it has finished.
    progress: Arc<Notify>,
}

impl Qlog {
    fn start(dir: &Path, local: SocketAddr) -> anyhow::Result<Self> {
        let sink = QlogDir::new(dir, Some(local)).context("cannot write the qlog trace")?;
        let progress = Arc::new(Notify::new());
        let wake = Arc::clone(&progress);
        let (sender, writer) =
            chirp_qlog::spawn_writer(sink, chirp_qlog::WRITER_QUEUE, "chirp-qlog", move || {
                wake.notify_one();
            })
            .context("cannot start the qlog writer")?;
        Ok(Self {
            sender,
            writer,
            progress,
        })
    }

    /// The pinger's trace records, to the writer.
    fn drain(&mut self, pinger: &mut Pinger) {
        self.sender.retry();
        while let Some(record) = pinger.poll_trace() {
            self.sender.send(record);
        }
    }

    /// The last records, then waits (a bounded time) for the file to be complete.
    async fn finish(mut self, pinger: &mut Pinger) {
        self.drain(pinger);
        let deadline = tokio::time::Instant::now() + QLOG_FINISH;
        while self.sender.waiting() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.sender.retry();
        }
        drop(self.sender);
        while !self.writer.is_finished() {
            if tokio::time::timeout_at(deadline, self.progress.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    "qlog: the trace writer did not finish in time; the trace may be cut short"
                );
                return;
            }
        }
    }
}

/// Runs `chirp ping`. Returns the exit code.
pub(crate) async fn run(args: PingArgs) -> anyhow::Result<u8> {
    let home = match args.home {
        Some(h) => h,
        None => crate::id::default_home()?,
    };
    let identity = if args.as_me {
        let path = home.join(crate::id::KEY_FILE);
        if !path.exists() {
            anyhow::bail!(
                "--as-me: there is no identity key at {} (a peer whose partner is you knows the \
                 key `chirp peer` uses; point --home at its directory)",
                path.display()
            );
        }
        Identity::load(&path).context("cannot load your identity")?
    } else {
        // Made for this run, never written anywhere: it reveals nobody's identity.
        Identity::generate().context("cannot make a one-time key")?
    };
    let (name, addr) = crate::connect::resolve(&args.target)
        .with_context(|| format!("invalid address '{}'", args.target))?;
    let bind = args.bind.unwrap_or_else(|| match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    });
    let socket = UdpSocket::from_std(crate::bind_socket(bind)?)
        .context("cannot register the socket with the runtime")?;
    let local = socket.local_addr().context("no local address")?;
    let mut qlog = match &args.qlog {
        Some(dir) => Some(Qlog::start(dir, local)?),
        None => None,
    };
    let known = KnownKeys::new(home.join(crate::peer::KNOWN_KEYS_FILE));
    let config = Config {
        remote: addr,
        count: (args.count > 0).then_some(args.count),
        interval: Duration::from_secs_f64(args.interval),
        timeout: Duration::from_secs_f64(args.timeout),
        pin: args.server_key,
        verify_key: true,
        identity: Some(chirp_proto::handshake::StaticSecret(*identity.secret())),
        trace: qlog.is_some(),
    };
    let mut pinger = Pinger::new(config, Instant::now(), chirp_transport::random_seed())
        .context("cannot start the connection")?;
    let mut out = Printer {
        json: args.json,
        as_me: args.as_me,
        pin: args.server_key,
        name,
        addr,
        fingerprint: None,
        key_status: None,
        probes: Vec::new(),
        failure: None,
    };
    out.header(args.count, args.interval);

    let mut buf = vec![0u8; chirp_transport::RECV_BUFFER];
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stopped = false;
    let mut summary: Option<Summary> = None;
    let mut linger_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        while let Some(t) = pinger.poll_transmit(now) {
            // A datagram the socket refuses is lost, which the protocol survives.
            if let Err(e) = socket
                .send_to(&t.contents, destination(local, t.destination))
                .await
            {
                tracing::debug!(%e, "send failed");
            }
        }
        let mut verdict_given = false;
        while let Some(ev) = pinger.poll_event() {
            match &ev {
                Event::VerifyKey { key } => {
                    let status = known_status(&known, &out.name, *key);
                    let accept = status.accepts();
                    out.key_status = Some(status);
                    pinger.key_verdict(Instant::now(), accept);
                    verdict_given = true;
                }
                Event::Finished { summary: s } => {
                    summary = Some(*s);
                    linger_until = Some(now + LINGER);
                }
                _ => {}
            }
            out.event(&ev);
        }
        if let Some(q) = qlog.as_mut() {
            q.drain(&mut pinger);
        }
        if verdict_given {
            continue; // The verdict has output of its own to drain first.
        }
        let deadline = match (pinger.poll_timeout(), linger_until) {
            (None, Some(_)) => break,
            (_, Some(l)) if now >= l => break,
            (t, l) => t.into_iter().chain(l).min(),
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => pinger.handle_datagram(Instant::now(), from, &buf[..n]),
                // An ICMP error for an earlier datagram ("port unreachable"): nothing listens
                // yet, or any more; the handshake's timeout decides.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                        | std::io::ErrorKind::Interrupted
                ) => {}
                Err(e) => return Err(e).context("cannot receive"),
            },
            () = sleep => pinger.handle_timeout(Instant::now()),
            _ = &mut ctrl_c, if !stopped => {
                stopped = true;
                pinger.stop(Instant::now());
            }
        }
    }
    if let Some(q) = qlog {
        q.finish(&mut pinger).await;
    }
    let summary = summary.unwrap_or_else(|| pinger.summary());
    let code = exit_code(out.failure.as_ref(), &summary, args.as_me);
    out.summary(&summary, code);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_pings() {
        let s = |answered| Summary {
            sent: 4,
            answered,
            ..Summary::default()
        };
        for as_me in [false, true] {
            assert_eq!(exit_code(None, &s(1), as_me), 0);
            assert_eq!(exit_code(None, &s(0), as_me), 1);
            let fp = PublicKey([1; 32]).fingerprint();
            let mismatch = Failure::KeyMismatch {
                expected: fp,
                actual: fp,
            };
            assert_eq!(exit_code(Some(&mismatch), &s(0), as_me), 2);
            let rejected = Failure::KeyRejected { actual: fp };
            assert_eq!(exit_code(Some(&rejected), &s(0), as_me), 2);
            let closed = Failure::Closed {
                reason: chirp_proto::CloseReason::Reset,
            };
            // Cut short after some answers: still answered.
            assert_eq!(exit_code(Some(&closed), &s(2), as_me), 0);
        }
        let refused = Failure::PeerRefusedKey {
            reason: "key refused".into(),
        };
        let answered = Summary {
            answer: Some(Duration::from_millis(1)),
            ..Summary::default()
        };
        // A peer that proved its key and refused the one-time key is up: that is its answer.
        assert_eq!(exit_code(Some(&refused), &answered, false), 0);
        // Refusing our own key (--as-me) is a refusal.
        assert_eq!(exit_code(Some(&refused), &answered, true), 1);
        // A refusal that came before any proof of a key says nothing of who is there.
        assert_eq!(exit_code(Some(&refused), &s(0), false), 1);
    }

    #[test]
    fn figures_are_printed_as_ping_prints_them() {
        assert_eq!(ms(Duration::from_micros(421)), "0.421");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(25.0), "25%");
        assert_eq!(percent(100.0 / 3.0), "33.3333%");
        assert_eq!(percent(12.5), "12.5%");
    }

    /// A hostile close reason reaches the terminal as marks, never as control characters.
    #[test]
    fn the_other_sides_words_are_escaped() {
        let failure = Failure::Closed {
            reason: chirp_proto::CloseReason::PeerClosed {
                code: 0x100,
                reason: "bye\x1b]0;pwned\x07\x1b[2J\u{202e}".into(),
            },
        };
        let line = error_line(&format!("h:1: {failure}"));
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{line:?}"
        );
        assert!(line.contains("bye^[]0;pwned^G^[[2J<U+202E>"), "{line:?}");
    }

    #[test]
    fn known_keys_are_read_never_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_keys");
        let known = KnownKeys::new(&path);
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        assert_eq!(known_status(&known, "h:1", a), KeyStatus::Unknown);
        assert!(!path.exists(), "ping wrote known_keys");
        known.check("h:1", a).expect("remember");
        assert_eq!(known_status(&known, "h:1", a), KeyStatus::Known);
        assert_eq!(
            known_status(&known, "h:1", b),
            KeyStatus::Differs {
                stored: a.fingerprint()
            }
        );
        assert!(!known_status(&known, "h:1", b).accepts());
    }
}
