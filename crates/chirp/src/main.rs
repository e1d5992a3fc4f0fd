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
//! - `lan`: `chirp peer --lan` (browse, list, pick) and the peer's advertisement on the LAN
//!   (the logic is in `chirp-lan`).
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
mod dm;
mod files;
mod id;
mod impair;
mod input;
mod lan;
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
    Serve(Box<serve::ServeArgs>),
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
  chirp peer --bind 127.0.0.1:5001 --to 127.0.0.1:5002 --qlog /tmp/chirp-qlog
                                          # a qlog trace per connection, for qvis

Files: /send PATH offers the peer a file; the peer sees its name, size and BLAKE3 hash and
answers /accept (or Alt+Y in the UI) or /decline; /cancel [ID] stops sending it (the peer
then deletes its partial file). It is saved in --downloads (the XDG download
directory by default) as NAME.H.part (H: the start of its hash) until every chunk has been
checked against the hash, then renamed; an existing file is never overwritten (NAME (1).ext),
and a symbolic link in the download directory is never followed. A transfer cut by a dropped
link or a restart resumes from what was saved and verified. The same works with --via.
downloads and auto_accept_from in ~/.config/chirp/client.toml (see chirp connect --help) give
--downloads and --auto-accept-from when they are not given.
  chirp peer --bind 127.0.0.1:5001 --to 127.0.0.1:5002 --downloads ~/inbox
  chirp peer --bind 0.0.0.0:5000 --to 192.0.2.7:5000 --auto-accept-from xxxx-xxxx-xxxx-xxxx-xxxx-xxxx
  echo '/send report.pdf' | chirp peer --bind 127.0.0.1:5001 --to 127.0.0.1:5002
                                          # sends the file, then leaves once it is saved

Through NATs, introduced by a chirp server both of you use (a rendezvous; each must ask for
the other, and the server then tells each where the other is and what its key is; it never
sees what you say, which is encrypted end to end with that key):
  chirp peer --via chat.example.org --nick alice --to bob            # on alice's machine
  chirp peer --via chat.example.org --nick bob --to alice            # on bob's machine
  chirp peer --via 192.0.2.1:7667 --nick alice --to bob --json --peer-key xxxx-xxxx-xxxx-xxxx-xxxx-xxxx
With no direct path within 3 s, the chat goes through the server's relay (still encrypted end
to end); it keeps probing the direct path and moves back to it by itself once it works. The
status bar and /stats say which: direct or relayed.

On the LAN (DNS-SD over mDNS, _chirp._udp.local): a chirp peer advertises its name, port and
key fingerprint. Without --to it waits for a peer to call it, and asks you about the caller's
key (or takes only the key pinned with --peer-key). The advertised fingerprint is only a hint:
the key is checked as always (--peer-key, or the key remembered for the address).
  chirp peer --name alice                 # wait for a call, advertised as alice (default user@host)
  chirp peer --lan                        # list the peers on the LAN, pick one by number
  chirp peer --lan --json                 # the list for scripts: one JSON object per peer
  chirp peer --lan --to alice             # call the peer advertised as alice
  chirp peer --bind 0.0.0.0:5000 --to 192.0.2.7:5000 --no-advertise  # stay off the LAN lists";

#[derive(Debug, Args)]
struct PeerArgs {
    /// Local address to listen on, IP:PORT (port 0 picks a free one). Required with --to ADDR;
    /// with --via, with --lan, or without --to, 0.0.0.0:0 by default.
    #[arg(long, value_name = "ADDR", value_parser = addr::local_addr)]
    bind: Option<SocketAddr>,
    /// The other peer's address, IP:PORT; with --lan, the name it advertises (exactly); with
    /// --via, its nick on that server. Without --to (and without --lan or --via), chirp waits
    /// for a peer to call it.
    #[arg(long, value_name = "ADDR|NAME|NICK")]
    to: Option<String>,
    /// Meet the peer through this chirp server (HOST[:PORT], port 7667 by default), which
    /// introduces two users who both ask for each other: each side's NAT is then opened from
    /// the inside by both dialling at once. Needs --nick, and --to with the peer's nick. Such a
    /// peer is not advertised on the LAN (nobody could call it there).
    #[arg(
        long,
        value_name = "SERVER",
        conflicts_with_all = ["plain", "lan", "name"],
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
    /// Find the peer on the local network (mDNS): list the chirp peers that answer within
    /// --browse-secs and pick one by number (on a terminal), print them (--json, or no
    /// terminal), or call the one named with --to.
    #[arg(long, conflicts_with = "plain")]
    lan: bool,
    /// With --lan: how long to listen for answers, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3, requires = "lan", value_parser = clap::value_parser!(u64).range(1..=60))]
    browse_secs: u64,
    /// The name this peer advertises on the LAN (default: user@host): at most 63 bytes, no
    /// control characters. If another peer on the LAN has it, mDNS renames ours ("NAME (2)").
    #[arg(long, value_name = "NAME", conflicts_with_all = ["no_advertise", "plain"])]
    name: Option<String>,
    /// Do not advertise this peer on the LAN (a peer bound to a loopback address never is).
    #[arg(long, conflicts_with = "plain")]
    no_advertise: bool,
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
    /// a terminal and refused otherwise: pin it with this flag. Waiting for a call (no --to),
    /// the caller with this key is accepted from any address, and every other refused.
    #[arg(long, value_name = "FINGERPRINT", conflicts_with = "plain")]
    peer_key: Option<chirp_keys::Fingerprint>,
    /// Write a qlog trace of every connection into this directory (created if missing): one
    /// file per connection, <connection id>-<client|server>.sqlog, for qvis.
    #[arg(long, value_name = "DIR", conflicts_with = "plain")]
    qlog: Option<std::path::PathBuf>,
    /// Where received files are saved (created if missing; default: `downloads` in the
    /// client config file, ~/.config/chirp/client.toml, else the XDG download directory,
    /// e.g. ~/Downloads).
    #[arg(long, value_name = "DIR", conflicts_with = "plain")]
    downloads: Option<std::path::PathBuf>,
    /// Accept file offers from the peer with this key fingerprint without asking (repeatable;
    /// default: `auto_accept_from` in the client config file; flags given replace its list).
    #[arg(long, value_name = "FINGERPRINT", conflicts_with = "plain")]
    auto_accept_from: Vec<chirp_keys::Fingerprint>,
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
        Some(Command::Peer(a)) => {
            // Usage errors as clap reports them (status 2), before anything starts.
            let target = peer_target(&a).unwrap_or_else(|e| e.exit());
            runtime.block_on(run_peer(a, target))
        }
        Some(Command::Impair(a)) => runtime.block_on(impair::run(a)),
        Some(Command::Id(a)) => id::run(&a),
        Some(Command::Serve(a)) => runtime.block_on(serve::run(*a)),
        Some(Command::Migrate(a)) => runtime.block_on(migrate::run(a)),
        Some(Command::Connect(a)) => runtime.block_on(connect::run(a)),
        Some(Command::Ping(a)) => runtime.block_on(ping::run(a)),
        Some(Command::Bench(a)) => runtime.block_on(bench::run(a)),
        None if std::io::stdin().is_terminal() => {
            let (bind, to) =
                prompt::ask_addresses(&mut std::io::stdin().lock(), &mut std::io::stdout())?;
            let target = PeerTarget::Addr(to);
            runtime.block_on(run_peer(
                PeerArgs {
                    bind: Some(bind),
                    to: Some(to.to_string()),
                    via: None,
                    nick: None,
                    server_key: None,
                    lan: false,
                    browse_secs: 3,
                    name: None,
                    no_advertise: false,
                    plain: false,
                    raw: false,
                    json: false,
                    line: false,
                    no_bell: false,
                    idle_timeout: 30,
                    home: None,
                    peer_key: None,
                    qlog: None,
                    downloads: None,
                    auto_accept_from: Vec::new(),
                },
                target,
            ))
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

/// Whom `chirp peer` is to talk to, from `--to` and `--lan`.
#[derive(Debug, Clone)]
enum PeerTarget {
    /// `--to IP:PORT`.
    Addr(SocketAddr),
    /// `--lan`: pick from what the LAN advertises (by number, or the name given with `--to`).
    Lan(Option<String>),
    /// No `--to`: wait for a caller.
    Listen,
    /// `--via SERVER --nick NICK --to NICK`: the server introduces us to the peer.
    Via {
        server: String,
        nick: String,
        to: String,
    },
}

/// Checks the combination of `chirp peer`'s flags; the errors are clap's (usage, status 2).
fn peer_target(a: &PeerArgs) -> Result<PeerTarget, clap::Error> {
    use clap::error::ErrorKind;
    let usage = |kind, msg: String| {
        let mut cmd = Cli::command();
        cmd.build();
        match cmd.find_subcommand_mut("peer") {
            Some(peer) => peer.error(kind, msg),
            None => cmd.error(kind, msg),
        }
    };
    if let Some(server) = &a.via {
        // clap has checked the rest: --nick is there, --lan, --name and --plain are not.
        let (Some(to), Some(nick)) = (&a.to, &a.nick) else {
            return Err(usage(
                ErrorKind::MissingRequiredArgument,
                "--via needs --nick NICK (ours on that server) and --to NICK (the peer's)".into(),
            ));
        };
        return Ok(PeerTarget::Via {
            server: server.clone(),
            nick: nick.clone(),
            to: to.clone(),
        });
    }
    let target = match (&a.to, a.lan) {
        (to, true) => PeerTarget::Lan(to.clone()),
        (Some(to), false) => PeerTarget::Addr(addr::remote_addr(to).map_err(|e| {
            usage(
                ErrorKind::ValueValidation,
                format!(
                    "invalid value '{to}' for '--to <ADDR|NAME|NICK>': {e} (a nick needs --via)"
                ),
            )
        })?),
        (None, false) if a.plain => {
            return Err(usage(
                ErrorKind::MissingRequiredArgument,
                "--plain needs --to ADDR: raw UDP has no handshake to wait for".into(),
            ));
        }
        (None, false) => PeerTarget::Listen,
    };
    if matches!(target, PeerTarget::Addr(_)) && a.bind.is_none() {
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            "--to ADDR needs --bind ADDR (the address the other peer sends to); --lan and a \
             peer waiting for a call pick a port themselves"
                .into(),
        ));
    }
    if let Some(name) = &a.name {
        chirp_lan::check_name(name).map_err(|e| {
            usage(
                ErrorKind::ValueValidation,
                format!("invalid value for '--name <NAME>': {e}"),
            )
        })?;
    }
    Ok(target)
}

async fn run_peer(a: PeerArgs, target: PeerTarget) -> anyhow::Result<u8> {
    // Where to listen when not told: any address, a free port (the LAN advertisement says
    // which).
    let bind = a
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    if a.plain {
        let PeerTarget::Addr(to) = target else {
            anyhow::bail!("--plain needs --to ADDR");
        };
        return plain::run(bind, to, a.json, a.raw).await;
    }
    let home = match a.home {
        Some(h) => h,
        None => id::default_home()?,
    };
    let interactive = !a.json && std::io::stdin().is_terminal();
    let mut via = None;
    let (to, found) = match target {
        PeerTarget::Addr(to) => (Some(to), None),
        PeerTarget::Listen => (None, None),
        // The peer's address comes from the server.
        PeerTarget::Via { server, nick, to } => {
            via = Some((server, nick, to));
            (None, None)
        }
        PeerTarget::Lan(name) => {
            let window = Duration::from_secs(a.browse_secs);
            let out = output::Output {
                json: a.json,
                path: None,
            };
            match lan::find(window, name.as_deref(), out, interactive).await? {
                lan::Outcome::Listed(code) => return Ok(code),
                lan::Outcome::Picked(peer) => (Some(peer.addr), Some(peer)),
            }
        }
    };
    // The config file gives what the flags leave out (a flag wins over it); with both flags
    // given it is not read at all.
    let file = if a.downloads.is_none() || a.auto_accept_from.is_empty() {
        connect::peer_config()?
    } else {
        chirp_client::config::ClientFile::default()
    };
    let downloads = match a.downloads.or(file.downloads) {
        Some(d) => d,
        None => dirs::download_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join("Downloads")))
            .context("no download directory (no home directory): pass --downloads DIR")?,
    };
    let auto_accept_from = if a.auto_accept_from.is_empty() {
        file.auto_accept_from
    } else {
        a.auto_accept_from
    };
    // A peer met through a server is not advertised: it takes no calls.
    let advertise =
        (!a.no_advertise && via.is_none()).then(|| a.name.unwrap_or_else(chirp_lan::default_name));
    let opts = peer::PeerOpts {
        bind,
        to,
        lan_peer: found,
        advertise,
        json: a.json,
        idle_timeout: Duration::from_secs(a.idle_timeout),
        home,
        peer_key: a.peer_key,
        tui: tui::wanted(a.line, a.json),
        bell: !a.no_bell,
        can_ask: interactive,
        qlog: a.qlog,
        downloads,
        auto_accept_from,
    };
    if let Some((server, nick, to)) = via {
        let (server_name, server) = connect::resolve(&server)
            .with_context(|| format!("invalid --via server address '{server}'"))?;
        let via = via::ViaOpts {
            server_name,
            server,
            server_key: a.server_key,
            nick,
            to,
        };
        return via::run(opts, via).await;
    }
    peer::run(opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `chirp peer ARGS`: the target, or clap's error (kind and text).
    fn target(args: &[&str]) -> Result<PeerTarget, (clap::error::ErrorKind, String)> {
        let argv = ["chirp", "peer"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| (e.kind(), e.to_string()))?;
        let Some(Command::Peer(a)) = cli.command else {
            panic!("not peer");
        };
        peer_target(&a).map_err(|e| (e.kind(), e.to_string()))
    }

    #[test]
    fn what_chirp_peer_is_asked_to_do() {
        use clap::error::ErrorKind;
        let addr = ["--bind", "0.0.0.0:5000", "--to", "192.0.2.7:5000"];
        assert!(matches!(target(&addr), Ok(PeerTarget::Addr(a)) if a.port() == 5000));
        assert!(matches!(target(&[]), Ok(PeerTarget::Listen)));
        assert!(matches!(
            target(&["--name", "alice"]),
            Ok(PeerTarget::Listen)
        ));
        assert!(matches!(target(&["--lan"]), Ok(PeerTarget::Lan(None))));
        assert!(matches!(
            target(&["--lan", "--to", "alice", "--browse-secs", "5"]),
            Ok(PeerTarget::Lan(Some(n))) if n == "alice"
        ));
        // Usage errors, as clap reports them.
        let e = target(&["--bind", "127.0.0.1:0", "--to", "nonsense"]).expect_err("bad --to");
        assert_eq!(e.0, ErrorKind::ValueValidation);
        assert!(e.1.contains("expected IP:PORT"), "{}", e.1);
        let e = target(&["--to", "192.0.2.7:5000"]).expect_err("no --bind");
        assert!(e.1.contains("needs --bind"), "{}", e.1);
        let e = target(&["--plain"]).expect_err("plain without --to");
        assert!(e.1.contains("--plain needs --to"), "{}", e.1);
        let e = target(&["--name", "a\u{1b}b"]).expect_err("bad name");
        assert!(e.1.contains("^["), "{}", e.1);
        let e = target(&["--name", "x", "--no-advertise"]).expect_err("conflict");
        assert_eq!(e.0, ErrorKind::ArgumentConflict);
        let e = target(&["--browse-secs", "5"]).expect_err("needs --lan");
        assert_eq!(e.0, ErrorKind::MissingRequiredArgument);
        let e = target(&["--lan", "--plain"]).expect_err("conflict");
        assert_eq!(e.0, ErrorKind::ArgumentConflict);
    }

    #[test]
    fn chirp_peer_via_a_server() {
        use clap::error::ErrorKind;
        let via = [
            "--via",
            "chat.example.org",
            "--nick",
            "alice",
            "--to",
            "bob",
        ];
        assert!(matches!(
            target(&via),
            Ok(PeerTarget::Via { server, nick, to })
                if server == "chat.example.org" && nick == "alice" && to == "bob"
        ));
        // --bind is optional with --via, and taken when given.
        let mut bound = via.to_vec();
        bound.extend(["--bind", "0.0.0.0:5000"]);
        assert!(matches!(target(&bound), Ok(PeerTarget::Via { .. })));
        // Contradictions and what is missing.
        let e = target(&["--via", "chat.example.org", "--nick", "alice"]).expect_err("no --to");
        assert_eq!(e.0, ErrorKind::MissingRequiredArgument);
        assert!(e.1.contains("--to NICK"), "{}", e.1);
        let e = target(&["--via", "chat.example.org", "--to", "bob"]).expect_err("no --nick");
        assert_eq!(e.0, ErrorKind::MissingRequiredArgument);
        for extra in [&["--lan"][..], &["--name", "alice"], &["--plain"]] {
            let mut args = via.to_vec();
            args.extend(extra);
            let e = target(&args).expect_err("conflict");
            assert_eq!(e.0, ErrorKind::ArgumentConflict, "{extra:?}: {}", e.1);
        }
        let e = target(&["--nick", "alice", "--to", "bob"]).expect_err("--nick without --via");
        assert_eq!(e.0, ErrorKind::MissingRequiredArgument);
        let e = target(&["--bind", "0.0.0.0:0", "--to", "bob"]).expect_err("a nick, no --via");
        assert!(e.1.contains("a nick needs --via"), "{}", e.1);
    }
}
