//! `chirp`: chat over UDP, done properly. The one binary, with subcommands.
//!
//! # Layout
//!
//! - `main.rs`: the command line (clap), logging, the runtime, exit codes.
//! - `peer`: reliable peer mode over the protocol core and the tokio transport.
//! - `plain`: `--plain`, the classic raw-UDP chat, byte-compatible with `nc -u`.
//! - `serve`: `chirp serve`, the chat server (settings from flags and a TOML file, re-read on
//!   SIGHUP; the logic is in `chirp-chat` and `chirp-store`).
//! - `service`: `chirp serve` under systemd (`Type=notify`: READY, RELOADING, STOPPING).
//! - `connect`: `chirp connect`, the line-mode chat client (session logic in `chirp-chat`).
//! - `ping`: `chirp ping`, a handshake and round-trip probes (the state machine is in
//!   `chirp-client`).
//! - `trust`: the key check (pin, else trust on first use) of `peer` and `connect`.
//! - `tui`: `chirp connect` on a terminal: the session wired to the terminal UI (`chirp-tui`).
//! - `peer_ui`: `chirp peer` on a terminal: the peer chat loop wired to the same UI.
//! - `impair`: the impairment proxy (loss, duplication, reordering, corruption, delay).
//! - `input`: what a typed line means (`/commands`, `//` escape).
//! - `output`: human or JSON lines on stdout (schema in `docs/JSON.md`).
//! - `addr`, `prompt`: address parsing with clear errors; the interactive questions.
//! - `id`: `chirp id`, the identity key and its fingerprint (default directories).
//! - `migrate`: `chirp migrate`, a server's SQLite history moved into PostgreSQL.

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

mod addr;
mod bench;
mod connect;
mod id;
mod impair;
mod input;
mod lines;
mod migrate;
mod output;
mod peer;
mod peer_ui;
mod ping;
mod plain;
mod prompt;
mod serve;
mod service;
mod trust;
mod tui;
mod via;

const EXAMPLES: &str = "\
Examples:
  # A chat server, and clients connecting to it:
  chirp serve                                              # UDP 0.0.0.0:7667
  chirp connect 192.0.2.1 --nick alice --join '#rust'

  # Two machines (or two terminals) chat, reliably:
  chirp peer --bind 0.0.0.0:5000 --to 192.0.2.7:5000      # on the first
  chirp peer --bind 0.0.0.0:5000 --to 192.0.2.1:5000      # on the second

  # Talk to the classic script or to netcat (raw, unreliable, unencrypted UDP):
  chirp peer --plain --bind 127.0.0.1:5000 --to 127.0.0.1:6000
  nc -u -p 6000 127.0.0.1 5000

  # Is the server there, and how far? Its key, then round trips, loss and jitter:
  chirp ping 192.0.2.1

  # Watch what a bad network does: 20 % loss between two local peers.
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --loss 0.2

  # No arguments on a terminal: chirp asks for the addresses.
  chirp";

/// Chat over UDP, done properly: reliable and ordered, with the problems made visible.
#[derive(Debug, Parser)]
#[command(name = "chirp", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// How log lines are written on stderr (RUST_LOG picks which: warnings and errors by
    /// default): human (coloured only on a terminal, and not with NO_COLOR set) or json (one
    /// object per line: timestamp, level, target, fields, spans), for log collectors.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// See [`Cli::log_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For a person: one line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat directly with another machine; both sides send and receive at once.
    #[command(after_help = PEER_EXAMPLES)]
    Peer(PeerArgs),
    /// A UDP proxy that loses, duplicates, reorders, corrupts and delays datagrams.
    #[command(after_help = impair::EXAMPLES)]
    Impair(impair::ImpairArgs),
    /// Print this machine's chirp identity fingerprint (creating the key on first use).
    #[command(after_help = id::EXAMPLES)]
    Id(id::IdArgs),
    /// Run a chat server: rooms, nicks bound to keys, DMs, durable history.
    #[command(after_help = serve::EXAMPLES)]
    Serve(serve::ServeArgs),
    /// Move a server's SQLite history (chirp.db) into PostgreSQL, for serve --database.
    #[command(after_help = migrate::EXAMPLES)]
    Migrate(migrate::MigrateArgs),
    /// Connect to a chat server (a chat UI on a terminal; line mode with --line or a pipe).
    #[command(after_help = connect::EXAMPLES)]
    Connect(connect::ConnectArgs),
    /// Like ping, for a chirp server or peer: its key, then round trips, loss and jitter.
    #[command(after_help = ping::EXAMPLES)]
    Ping(ping::PingArgs),
    /// Load-test a server with the real protocol, against plain UDP in the same run.
    #[command(after_help = bench::EXAMPLES)]
    Bench(bench::BenchArgs),
}

const PEER_EXAMPLES: &str = "\
On a terminal, chirp peer opens the chat UI: the conversation, a status bar with the link's
state, the peer's fingerprint, RTT, loss over the last minute and retransmissions, and each of
your messages marked pending (·) until the peer acknowledges it (✓). F3 or /stats: every
counter and an RTT graph. /help lists commands and keys; Ctrl+C or /quit leaves.

With --line, --json or a pipe, each line read is one message, and received messages are
printed with the local time and the sender; /help and /stats work there too. End of input
(Ctrl-D) is a half-close, as in TCP: chirp stops sending, keeps receiving, and exits 0 once the
peer has everything you sent and has finished too (or, the peer having finished first, once
you have been quiet for a second); two scripts piping lines into each other both see every
line. If the peer never answers it exits 1 after the idle timeout. /quit leaves at once,
once what you sent is acknowledged.

Examples:
  chirp peer --bind 0.0.0.0:5000 --to 192.0.2.7:5000
  chirp peer --bind 127.0.0.1:5001 --to 127.0.0.1:5002 --line      # plain lines on a terminal
  chirp peer --bind 127.0.0.1:5001 --to 127.0.0.1:5002 --json      # for scripts
  chirp peer --bind 0.0.0.0:5000 --to 198.51.100.4:5000 --peer-key xxxx-xxxx-xxxx-xxxx-xxxx-xxxx
                                          # a peer behind a NAT that changes its port
  chirp peer --plain --bind 127.0.0.1:5000 --to 127.0.0.1:6000     # raw UDP, like nc -u

Through NATs, introduced by a chirp server both of you use (a rendezvous; each must ask for
the other, and the server then tells each where the other is and what its key is; it never
sees what you say, which is encrypted end to end with that key):
  chirp peer --via chat.example.org --nick alice --to bob            # on alice's machine
  chirp peer --via chat.example.org --nick bob --to alice            # on bob's machine
  chirp peer --via 192.0.2.1:7667 --nick alice --to bob --json --peer-key xxxx-xxxx-xxxx-xxxx-xxxx-xxxx";

#[derive(Debug, Args)]
struct PeerArgs {
    /// Local address to listen on, IP:PORT (port 0 picks a free one; with --via, the default
    /// is 0.0.0.0:0).
    #[arg(long, value_name = "ADDR", value_parser = addr::local_addr, required_unless_present = "via")]
    bind: Option<SocketAddr>,
    /// The other peer's address, IP:PORT; with --via, its nick on that server.
    #[arg(long, value_name = "ADDR|NICK")]
    to: String,
    /// Meet the peer through this chirp server (HOST[:PORT], port 7667 by default), which
    /// introduces two users who both ask for each other: each side's NAT is then opened from
    /// the inside by both dialling at once. Needs --nick; --to is then the peer's nick.
    #[arg(
        long,
        value_name = "SERVER",
        conflicts_with = "plain",
        requires = "nick"
    )]
    via: Option<String>,
    /// With --via: our nick on the server (it belongs to our key, as with `chirp connect`).
    #[arg(long, value_name = "NICK", requires = "via")]
    nick: Option<String>,
    /// With --via: talk to the server only if its key has this fingerprint (else its key is
    /// remembered on first contact, as with `chirp connect`).
    #[arg(long, value_name = "FINGERPRINT", requires = "via")]
    server_key: Option<chirp_keys::Fingerprint>,
    /// Raw UDP like the classic script and `nc -u`: one datagram per line, no reliability,
    /// no encryption.
    #[arg(long)]
    plain: bool,
    /// With --plain: print each received datagram byte for byte (after the usual time and
    /// sender), for a program reading the output. RISK: escape sequences then pass as they
    /// came, so on a terminal anyone who can send a datagram to --bind can retitle it, clear
    /// it, fake lines on it or worse. Without --raw, control and bidi characters are shown as
    /// marks (^[, <U+202E>) and bytes that are not UTF-8 as \xNN.
    #[arg(long, requires = "plain", conflicts_with = "json")]
    raw: bool,
    /// Print one JSON object per line for every event (schema: docs/JSON.md).
    #[arg(long)]
    json: bool,
    /// Line mode even on a terminal: one message per input line, events printed as lines
    /// (the default when stdin or stdout is not a terminal).
    #[arg(long, conflicts_with = "json")]
    line: bool,
    /// In the chat UI, do not ring the terminal bell on messages from the peer (`/bell`
    /// switches it while running).
    #[arg(long)]
    no_bell: bool,
    /// Declare the peer gone after this many seconds without a packet from it.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout: u64,
    /// Directory of our identity key and of the keys remembered per peer (default:
    /// $XDG_CONFIG_HOME/chirp, i.e. ~/.config/chirp).
    #[arg(long, value_name = "DIR")]
    home: Option<std::path::PathBuf>,
    /// Talk only to a peer whose key has this fingerprint (from `chirp id` on its machine),
    /// from any port of the --to IP. Without it, the first key seen at exactly --to is
    /// remembered and any later different key is refused; a new key from another port (a
    /// peer behind a NAT that changes ports, or a stranger on the same host) is asked about on
    /// a terminal and refused otherwise: pin it with this flag.
    #[arg(long, value_name = "FINGERPRINT", conflicts_with = "plain")]
    peer_key: Option<chirp_keys::Fingerprint>,
}

/// Binds a UDP socket, turning the OS error into one a person can act on.
pub(crate) fn bind_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    chirp_transport::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another program, perhaps another chirp, is using this port; pick another)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (this machine has no such address; use 0.0.0.0 or one of its own IPs)"
            }
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        anyhow::anyhow!("cannot bind {addr}: {e}{hint}")
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // stderr, except while the terminal UI owns the terminal.
        .with_writer(tui::log_writer);
    match format {
        // Colour codes are for a terminal: in a file, a pipe or the journal they are noise.
        LogFormat::Human => logs.with_ansi(colour(&std::io::stderr())).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// Whether to colour what goes to `out`: a terminal, unless NO_COLOR is set (no-color.org).
fn colour(out: &impl IsTerminal) -> bool {
    out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "cannot bind ...: in use".
            // The chain may carry text from the network (a server's refusal), so it is shown
            // harmlessly like everything else chirp prints. (A failed write to stderr leaves
            // nothing better to do than exit.)
            let text = format!("{e:#}");
            let _ = writeln!(
                std::io::stderr(),
                "chirp: error: {}",
                chirp_tui::safe::line(&text)
            );
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let runtime = if matches!(cli.command, Some(Command::Serve(_))) {
        // The server's tasks (the transport driver and the chat runner) hand work to each
        // other for every datagram: on one thread that is a queue push, across two a wake-up
        // of a parked worker each time. SQLite reads go to the blocking pool and commits to
        // the store's writer thread either way.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        // Two workers: output to a stuck terminal or pipe blocks the chat task (see
        // `output`), and the transport task must keep acknowledging and sending keepalives
        // meanwhile.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let result = match cli.command {
        Some(Command::Peer(a)) => runtime.block_on(run_peer(a)),
        Some(Command::Impair(a)) => runtime.block_on(impair::run(a)),
        Some(Command::Id(a)) => id::run(&a),
        Some(Command::Serve(a)) => runtime.block_on(serve::run(a)),
        Some(Command::Migrate(a)) => runtime.block_on(migrate::run(a)),
        Some(Command::Connect(a)) => runtime.block_on(connect::run(a)),
        Some(Command::Ping(a)) => runtime.block_on(ping::run(a)),
        Some(Command::Bench(a)) => runtime.block_on(bench::run(a)),
        None if std::io::stdin().is_terminal() => {
            let (bind, to) =
                prompt::ask_addresses(&mut std::io::stdin().lock(), &mut std::io::stdout())?;
            runtime.block_on(run_peer(PeerArgs {
                bind: Some(bind),
                to: to.to_string(),
                via: None,
                nick: None,
                server_key: None,
                plain: false,
                raw: false,
                json: false,
                line: false,
                no_bell: false,
                idle_timeout: 30,
                home: None,
                peer_key: None,
            }))
        }
        None => {
            // Not a terminal and nothing asked for: show how to use it rather than guess.
            Cli::command().print_help().context("cannot print help")?;
            Ok(2)
        }
    };
    // Don't wait for tokio's blocking stdin reader: after `/quit` it may be parked in a read
    // that only returns on the next line the user types.
    runtime.shutdown_background();
    result
}

async fn run_peer(a: PeerArgs) -> anyhow::Result<u8> {
    let bind = a
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    // With --via, --to is a nick; the peer session's own address comes from the server.
    let to = match &a.via {
        Some(_) => bind,
        None => {
            addr::remote_addr(&a.to).map_err(|e| anyhow::anyhow!("invalid value for --to: {e}"))?
        }
    };
    if a.plain {
        plain::run(bind, to, a.json, a.raw).await
    } else {
        let home = match a.home {
            Some(h) => h,
            None => id::default_home()?,
        };
        let opts = peer::PeerOpts {
            bind,
            to,
            json: a.json,
            idle_timeout: Duration::from_secs(a.idle_timeout),
            home,
            peer_key: a.peer_key,
            tui: tui::wanted(a.line, a.json),
            bell: !a.no_bell,
            can_ask: !a.json && std::io::stdin().is_terminal(),
        };
        if let (Some(server), Some(nick)) = (a.via, a.nick) {
            let (server_name, server) = connect::resolve(&server)
                .with_context(|| format!("invalid --via server address '{server}'"))?;
            let via = via::ViaOpts {
                server_name,
                server,
                server_key: a.server_key,
                nick,
                to: a.to,
            };
            return via::run(opts, via).await;
        }
        peer::run(opts).await
    }
}
