//! `chirp serve`: the chat server. Settings come from the defaults, then the TOML config file
//! (`--config`), then the command line, each overriding the one before.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chirp_chat::runner::{self, RunnerConfig};
use chirp_chat::server::Limits;
use chirp_keys::Identity;
use chirp_store::{Database, StoreConfig};
use clap::Args;
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::service;

pub(crate) const EXAMPLES: &str = "\
Runs with no flags at all: UDP 0.0.0.0:7667, data (identity key, chirp.db) in
$XDG_DATA_HOME/chirp (~/.local/share/chirp). It prints its address and key fingerprint; give
the fingerprint to users so they can pin it (chirp connect --server-key). SIGTERM or Ctrl-C
stops it gracefully: clients are told, the database is flushed.

SIGHUP re-reads the config file (kill -HUP PID, or systemctl reload chirp) and applies at once
what can change live: flood control (burst, per_sec), max_message_size, max_rooms,
max_sessions_per_ip, retention_count, retention_days, nick_expiry_days, nick_claim_burst,
nick_claims_per_hour, join_burst, joins_per_hour, nick_change_burst, nick_changes_per_hour,
rooms_per_hour and oper; connected clients are told the new flood control and size. It prints
what changed. A flag still overrides the file. Other settings (bind, database, cluster, node,
key_file, data_dir, history_on_join, max_file_size, max_connections, idle_timeout, metrics,
qlog) need a restart: a change to them is logged and left as it is. A file that cannot be read or is
invalid is refused whole, with an error in the log, and the settings in force stay.

Logs go to stderr (RUST_LOG=info for more): --log-format json writes one JSON object a line
for log collectors; the human format is coloured only on a terminal. Under systemd
(Type=notify) the server says READY once the database is open and the socket bound, and
STOPPING when it stops: see contrib/systemd/chirp.service and docs/OPERATIONS.md.

Every flag can be set in the config file too (same names, with '_' for '-'), e.g.
  bind = \"0.0.0.0:7667\"
  data_dir = \"/var/lib/chirp\"
  history_on_join = 50
  burst = 10
  per_sec = 5
  retention_days = 365
  nick_expiry_days = 180
  nick_claim_burst = 5
  nick_claims_per_hour = 6
  rooms_per_hour = 20
  oper = [\"abcd-efgh-ijkl-mnop-qrst-uvwx\"]
  metrics = \"127.0.0.1:9467\"

A nick belongs to the key that claimed it first, until that key stays away (no connection)
for nick_expiry_days; then another key may claim it. A key's first nick is rate-limited per
source address (IPv4, or IPv6 /64): nick_claim_burst at once, then nick_claims_per_hour; an
IPv6 /56 gets twice that and a /48 four times, shared by all the /64s in it.

Files: users send each other files with /send NICK PATH in chirp connect while both are
online. Only the offer (name, size, hash) passes through the server; the file goes end to end
encrypted between the two clients (directly, or through this server's relay, which cannot read
it) and is never stored. --max-file-size (default 1G) refuses larger offers; an offer to a
user who is not online is refused.

Moderation: whoever creates a room owns it and names its operators (/op); operators kick, ban,
mute, voice, invite and set modes (+i invite only, +m moderated, +t topic locked, +k key).
Server operators (--oper FINGERPRINT, the fingerprint `chirp id` prints on their machine) ban
keys and address ranges from the whole server (/ban --server), list sessions (/sessions) and
disconnect one (/kill); a banned key is refused on connect with a clear error. Rates per key:
join_burst then joins_per_hour joins, nick_change_burst then nick_changes_per_hour nick
changes, rooms_per_hour new rooms.

History, nicks and topics live in SQLite (chirp.db in the data directory) unless --database
names a PostgreSQL database (postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME); its schema is
created or migrated at start.

Examples:
  chirp serve
  chirp serve --bind 127.0.0.1:7000 --data-dir /tmp/chirp-test
  chirp serve --database postgres://chirp@db.example.net/chirp --key-file /etc/chirp/server.key
  chirp serve --bind 0.0.0.0:7667 --cluster nats://10.0.0.5:4222 \\
      --database postgres://chirp@10.0.0.6/chirp --key-file /etc/chirp/server.key
  chirp serve --cluster tls://nats.internal:4222 --cluster-ca /etc/chirp/nats-ca.pem \\
      --database 'postgres://chirp@db.internal/chirp?sslmode=require&sslrootcert=/etc/chirp/pg-ca.pem' ...
  chirp serve --metrics 127.0.0.1:9467        # Prometheus scrapes http://127.0.0.1:9467/metrics
  chirp serve --config /etc/chirp/server.toml
  chirp serve --oper abcd-efgh-ijkl-mnop-qrst-uvwx --rooms-per-hour 3
  chirp serve --max-file-size 100M    # users may send each other files of up to 100 MiB
  kill -HUP PID                  # PID of that server: it re-reads /etc/chirp/server.toml
  systemctl reload chirp         # the same under systemd (contrib/systemd/chirp.service)
  RUST_LOG=info chirp serve --log-format json 2>>/var/log/chirp.json
  chirp serve --qlog /tmp/chirp-qlog     # a qlog trace per connection (qlog 0.3 JSON-SEQ,
                                         # for qvis: congestion window, RTT, losses)";

/// Default UDP port of a chirp server.
pub(crate) const DEFAULT_PORT: u16 = 7667;

#[derive(Debug, Args, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with any of these settings (command-line flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// Settings that the config file can also hold.
#[derive(Debug, Clone, Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Address to listen on, IP:PORT [default: 0.0.0.0:7667].
    #[arg(long, value_name = "ADDR", value_parser = crate::addr::local_addr)]
    bind: Option<SocketAddr>,
    /// Where the history, nicks and topics live: a postgres:// URL (PostgreSQL), or an
    /// SQLite file path [default: chirp.db in the data directory].
    #[arg(long, value_name = "URL|FILE")]
    database: Option<String>,
    /// Run as a node of a cluster whose nodes meet on this NATS server (nats://HOST:PORT);
    /// needs a PostgreSQL --database shared by every node.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// The CA certificate (PEM) the NATS server's certificate must chain to: TLS to NATS is
    /// then required (a tls:// --cluster URL requires it too, against the system's roots).
    #[arg(long, value_name = "FILE")]
    cluster_ca: Option<PathBuf>,
    /// This node's name in the cluster [default: HOSTNAME-PID-RANDOM, new at every start].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// The server's identity key file (created if missing) [default: identity in the data
    /// directory]. Every node of a cluster serves with the same key, so that clients' pinned
    /// key holds whichever node they reach.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9467 [default: off].
    /// Keep it on loopback or a private network: it tells how busy the server is.
    #[arg(long, value_name = "ADDR", value_parser = crate::addr::local_addr)]
    metrics: Option<SocketAddr>,
    /// Directory of the server's identity key and database [default: $XDG_DATA_HOME/chirp].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Messages replayed to a client when it joins a room, 0 to 1000; 0: none [default: 50].
    #[arg(long, value_name = "N")]
    history_on_join: Option<usize>,
    /// Largest message text in bytes, 1 to 61440 [default: 8192].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Largest file one user may send another through this server (`/send NICK PATH` in
    /// chirp connect), in bytes or with a binary suffix (K, M, G, T: 512M, 2G); a larger
    /// offer is refused (`too_large`). The file itself goes end to end between the two
    /// clients and is never stored [default: 1G]. In the config file: a number of bytes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// Flood control: requests a client may send in a burst [default: 10].
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
    /// Flood control: sustained requests per second per client [default: 5].
    #[arg(long, value_name = "N")]
    per_sec: Option<u32>,
    /// Rooms one user may be in at once, at least 1 [default: 32].
    #[arg(long, value_name = "N")]
    max_rooms: Option<usize>,
    /// Sessions at once from one source IP address, at least 1 [default: 16].
    #[arg(long, value_name = "N")]
    max_sessions_per_ip: Option<usize>,
    /// Connections at once, 1 to 1000000; beyond it newcomers are told "server full" at once
    /// [default: 4096].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// A client silent this many seconds is presumed gone and shown as quit [default: 30].
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// Keep at most this many messages per room or conversation, at least 1 [default: no
    /// limit].
    #[arg(long, value_name = "N")]
    retention_count: Option<u64>,
    /// Delete messages older than this many days, 1 to 36500 [default: no limit: messages are
    /// kept forever].
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u64>,
    /// A nick whose key has not connected for this many days may be claimed by another key;
    /// 0: nicks never expire [default: 180].
    #[arg(long, value_name = "DAYS")]
    nick_expiry_days: Option<u64>,
    /// New nicks (a key's first) one source address (IPv4, or IPv6 /64; a /56 twice as many,
    /// a /48 four times) may claim at once [default: 5].
    #[arg(long, value_name = "N")]
    nick_claim_burst: Option<u32>,
    /// New nicks one source address may claim per hour after its burst [default: 6].
    #[arg(long, value_name = "N")]
    nick_claims_per_hour: Option<u32>,
    /// Rooms one key may join at once with `join` requests [default: 20]...
    #[arg(long, value_name = "N")]
    join_burst: Option<u32>,
    /// ...and per hour after that [default: 120].
    #[arg(long, value_name = "N")]
    joins_per_hour: Option<u32>,
    /// Nick changes one key may make at once [default: 3]...
    #[arg(long, value_name = "N")]
    nick_change_burst: Option<u32>,
    /// ...and per hour after that [default: 30].
    #[arg(long, value_name = "N")]
    nick_changes_per_hour: Option<u32>,
    /// Rooms one key may create per hour [default: 20].
    #[arg(long, value_name = "N")]
    rooms_per_hour: Option<u32>,
    /// A server operator, by key fingerprint (what `chirp id` prints); repeat for several.
    /// Server operators ban keys and address ranges server-wide, list sessions, disconnect
    /// one, and count as owner in every room. In the config file: oper = ["abcd-...", ...].
    #[arg(long, value_name = "FINGERPRINT")]
    oper: Option<Vec<String>>,
    /// Write a qlog trace of every connection into this directory (created if missing): one
    /// file per connection, <connection id>-server.sqlog, for qvis [default: none].
    #[arg(long, value_name = "DIR")]
    qlog: Option<PathBuf>,
}

/// Refuses settings outside their range, naming the setting (as in the config file and as a
/// flag) and the range. Called before anything is opened or bound.
fn check_ranges(s: &Settings) -> anyhow::Result<()> {
    fn within<T>(name: &str, value: Option<T>, min: T, max: Option<T>) -> anyhow::Result<()>
    where
        T: PartialOrd + std::fmt::Display + Copy,
    {
        let Some(v) = value else { return Ok(()) };
        let flag = name.replace('_', "-");
        match max {
            Some(max) => anyhow::ensure!(
                v >= min && v <= max,
                "{name} (--{flag}) must be {min} to {max}, not {v}"
            ),
            None => anyhow::ensure!(
                v >= min,
                "{name} (--{flag}) must be at least {min}, not {v}"
            ),
        }
        Ok(())
    }
    within(
        "max_connections",
        s.max_connections,
        1,
        Some(MAX_CONNECTIONS),
    )?;
    within(
        "max_message_size",
        s.max_message_size,
        1,
        Some(MAX_MESSAGE_SIZE),
    )?;
    within(
        "history_on_join",
        s.history_on_join,
        0,
        Some(MAX_HISTORY_ON_JOIN),
    )?;
    within(
        "retention_days",
        s.retention_days,
        1,
        Some(MAX_RETENTION_DAYS),
    )?;
    within("retention_count", s.retention_count, 1, None)?;
    within("max_rooms", s.max_rooms, 1, None)?;
    within("max_sessions_per_ip", s.max_sessions_per_ip, 1, None)?;
    Ok(())
}

/// Largest `max_connections`: a bound on what a typo can ask for. The endpoint's work per
/// input does not grow with its connections; their memory does (about 6 KB an idle session,
/// so a million is some 6 GB).
const MAX_CONNECTIONS: usize = 1_000_000;
/// A size in bytes, with an optional binary suffix: `1048576`, `512K`, `100M`, `1G`, `2T`
/// (also `KiB`, `MiB`, ...; `G` means GiB).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a size: expected bytes, e.g. 1048576, 512M or 1G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Largest `max_message_size`: one transport message, with room for the envelope.
const MAX_MESSAGE_SIZE: usize = 60 * 1024;
/// Largest `history_on_join`: the server keeps that many messages per conversation in memory.
const MAX_HISTORY_ON_JOIN: usize = 1000;
/// Largest `retention_days` (100 years), as for `nick_expiry_days`.
const MAX_RETENTION_DAYS: u64 = 36_500;

fn load_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
}

macro_rules! merge {
    ($cli:expr, $file:expr, $($f:ident),*) => {
        $( if $cli.$f.is_none() { $cli.$f = $file.$f.take(); } )*
    };
}

/// The settings in force: the flags `cli`, then what the config file at `path` gives for the
/// rest; checked as far as can be without opening anything. The same at start and at every
/// reload, so that a flag overrides the file on a reload as it did at start.
fn resolve(cli: &Settings, path: Option<&Path>) -> anyhow::Result<Settings> {
    let mut s = cli.clone();
    if let Some(path) = path {
        let mut f = load_file(path)?;
        merge!(
            s,
            f,
            bind,
            database,
            cluster,
            cluster_ca,
            node,
            key_file,
            data_dir,
            history_on_join,
            max_message_size,
            max_file_size,
            burst,
            per_sec,
            max_rooms,
            max_sessions_per_ip,
            max_connections,
            idle_timeout,
            retention_count,
            retention_days,
            nick_expiry_days,
            nick_claim_burst,
            nick_claims_per_hour,
            join_burst,
            joins_per_hour,
            nick_change_burst,
            nick_changes_per_hour,
            rooms_per_hour,
            oper,
            metrics,
            qlog
        );
    }
    check_ranges(&s)?;
    match &s.cluster {
        Some(_) => {
            anyhow::ensure!(
                s.database
                    .as_deref()
                    .is_some_and(|d| d.starts_with("postgres://") || d.starts_with("postgresql://")),
                "--cluster needs --database postgres://...: every node of a cluster shares one PostgreSQL database"
            );
            if let Some(n) = &s.node {
                anyhow::ensure!(
                    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_graphic()),
                    "--node must be 1 to 64 visible ASCII characters"
                );
            }
        }
        None => {
            anyhow::ensure!(s.node.is_none(), "--node is for a cluster node (--cluster)");
            anyhow::ensure!(
                s.cluster_ca.is_none(),
                "--cluster-ca is for a cluster node (--cluster)"
            );
        }
    }
    if let Some(secs) = s.idle_timeout {
        anyhow::ensure!(
            (1..=3600).contains(&secs),
            "idle_timeout must be 1 to 3600 seconds"
        );
    }
    limits(&s)?;
    Ok(s)
}

/// The settings of `s` that a running server can take ([`Limits`]), defaults for the rest.
fn limits(s: &Settings) -> anyhow::Result<Limits> {
    let d = Limits::default();
    let l = Limits {
        burst: s.burst.unwrap_or(d.burst),
        per_sec: s.per_sec.unwrap_or(d.per_sec),
        max_text: s.max_message_size.unwrap_or(d.max_text),
        max_rooms_per_user: s.max_rooms.unwrap_or(d.max_rooms_per_user),
        max_sessions_per_ip: s.max_sessions_per_ip.unwrap_or(d.max_sessions_per_ip),
        nick_expiry_ms: match s.nick_expiry_days {
            None => d.nick_expiry_ms,
            Some(days) => {
                anyhow::ensure!(
                    days <= 36_500,
                    "nick_expiry_days is at most 36500 (100 years); 0 means nicks never expire"
                );
                // At most 36,500 days: the product fits.
                i64::try_from(days)
                    .ok()
                    .filter(|&d| d > 0)
                    .map(|d| d * chirp_chat::server::DAY_MS)
            }
        },
        nick_claim_burst: s.nick_claim_burst.unwrap_or(d.nick_claim_burst),
        nick_claims_per_hour: s.nick_claims_per_hour.unwrap_or(d.nick_claims_per_hour),
        join_burst: s.join_burst.unwrap_or(d.join_burst),
        joins_per_hour: s.joins_per_hour.unwrap_or(d.joins_per_hour),
        nick_change_burst: s.nick_change_burst.unwrap_or(d.nick_change_burst),
        nick_changes_per_hour: s.nick_changes_per_hour.unwrap_or(d.nick_changes_per_hour),
        rooms_per_hour: s.rooms_per_hour.unwrap_or(d.rooms_per_hour),
        opers: s
            .oper
            .iter()
            .flatten()
            .map(|f| {
                f.parse::<chirp_keys::Fingerprint>()
                    .with_context(|| "bad oper (--oper)".to_owned())
            })
            .collect::<anyhow::Result<_>>()?,
        max_per_conv: s.retention_count,
        // `check_ranges` keeps it to 36,500 days: the product fits.
        max_age_ms: s
            .retention_days
            .map(|d| i64::try_from(d.saturating_mul(86_400_000)).unwrap_or(i64::MAX)),
    };
    anyhow::ensure!(
        l.burst >= 1 && l.per_sec >= 1,
        "burst and per_sec must be at least 1"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&l.nick_claim_burst)
            && (1..=3_600_000).contains(&l.nick_claims_per_hour),
        "nick_claim_burst must be 1 to 1000000 and nick_claims_per_hour 1 to 3600000"
    );
    for (name, v) in [
        ("join_burst", l.join_burst),
        ("joins_per_hour", l.joins_per_hour),
        ("nick_change_burst", l.nick_change_burst),
        ("nick_changes_per_hour", l.nick_changes_per_hour),
        ("rooms_per_hour", l.rooms_per_hour),
    ] {
        anyhow::ensure!(
            (1..=3_600_000).contains(&v),
            "{name} (--{}) must be 1 to 3600000, not {v}",
            name.replace('_', "-")
        );
    }
    Ok(l)
}

/// The settings a running server cannot take (its socket, store, cluster, key, transport and
/// replay caches were made from them) that differ between `old` and `new`; shown as in the
/// config file, but for the database, whose URL may hold a password.
#[cfg(unix)]
fn restart_needed(old: &Settings, new: &Settings) -> Vec<chirp_chat::server::Change> {
    use chirp_chat::server::Change;
    fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
        v.as_ref()
            .map_or_else(|| "(default)".to_owned(), |v| format!("{v:?}"))
    }
    let mut out = Vec::new();
    macro_rules! diff {
        ($($f:ident),*) => {
            $( if old.$f != new.$f {
                out.push(Change { setting: stringify!($f), from: show(&old.$f), to: show(&new.$f) });
            } )*
        };
    }
    diff!(
        bind,
        cluster,
        cluster_ca,
        node,
        key_file,
        data_dir,
        history_on_join,
        max_file_size,
        max_connections,
        idle_timeout,
        metrics,
        qlog
    );
    if old.database != new.database {
        out.push(Change {
            setting: "database",
            from: "(not shown)".into(),
            to: "(not shown)".into(),
        });
    }
    out
}

/// Runs the server until SIGTERM or Ctrl-C; SIGHUP reloads the config file.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    // Before anything else: a signal that comes while the server starts is kept, not fatal.
    let stop = shutdown_signal()?;
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let cli = args.settings;
    let settings = resolve(&cli, args.config.as_deref())?;
    let limits = limits(&settings)?;
    let s = &settings;
    let bind = s
        .bind
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
    let data_dir = match s.data_dir.clone() {
        Some(d) => d,
        None => crate::id::default_data_dir()?,
    };
    let key_file = match &s.key_file {
        Some(f) => f.clone(),
        None => data_dir.join(crate::id::KEY_FILE),
    };
    let (identity, created) = Identity::load_or_create(&key_file)
        .with_context(|| format!("cannot load the server identity {}", key_file.display()))?;
    let mut config = RunnerConfig {
        identity: Some(chirp_proto::handshake::StaticSecret(*identity.secret())),
        qlog_dir: s.qlog.clone(),
        ..RunnerConfig::default()
    };
    let (peers_tx, mut peers_rx) = tokio::sync::watch::channel(0usize);
    // `resolve` checked that a cluster has a PostgreSQL database and a well-formed node name.
    let node = s.cluster.as_ref().map(|url| {
        let node = s.node.clone().unwrap_or_else(default_node_name);
        config.bus = Some(url.clone());
        config.bus_ca = s.cluster_ca.clone();
        config.peers = Some(peers_tx);
        config.server.cluster = Some(chirp_chat::server::ClusterConfig::new(node.clone()));
        (node, url.clone())
    });
    let c = &mut config.server;
    c.history_on_join = s.history_on_join.unwrap_or(c.history_on_join);
    c.replay_cache = c.replay_cache.max(c.history_on_join);
    c.set_limits(&limits);
    c.max_file_size = s.max_file_size.unwrap_or(c.max_file_size);
    config.max_connections = s.max_connections.unwrap_or(config.max_connections);
    if let Some(secs) = s.idle_timeout {
        config.idle_timeout = Duration::from_secs(secs);
    }
    let store_config = StoreConfig {
        retention: limits.retention(),
        ..StoreConfig::default()
    };
    let db = match &s.database {
        Some(d) => Database::parse(d).context("bad --database")?,
        None => Database::Sqlite(data_dir.join("chirp.db")),
    };
    let store = chirp_store::open(&db, store_config)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;
    let socket = crate::bind_socket(bind)?;
    let local = socket
        .local_addr()
        .context("cannot read the bound address")?;
    let metrics_at = match s.metrics {
        Some(addr) => {
            let l = chirp_chat::metrics::bind(addr)?;
            let at = l.local_addr().context("cannot read the metrics address")?;
            config.metrics = Some(std::sync::Arc::new(l));
            Some(at)
        }
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        let note = if created { " (new)" } else { "" };
        // A closed stdout is no reason not to serve.
        let _ = writeln!(
            out,
            "chirp server listening on {local} (UDP); key fingerprint {}{note}; data in {}",
            identity.public().fingerprint(),
            db.display()
        );
        if let Some(at) = metrics_at {
            let _ = writeln!(out, "metrics at http://{at}/metrics");
        }
        let _ = out.flush();
    }
    info!(%local, "serving");
    if let Some((node, url)) = &node {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "node {node} joining cluster {url}");
        let _ = out.flush();
        let node = node.clone();
        tokio::spawn(async move {
            while peers_rx.changed().await.is_ok() {
                let n = *peers_rx.borrow_and_update();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "node {node} sees {n} peer{}",
                    if n == 1 { "" } else { "s" }
                );
                let _ = out.flush();
            }
        });
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        if ready_rx.await.is_ok() {
            service::notify(service::State::Ready);
        }
    });
    #[cfg(unix)]
    {
        tokio::spawn(reload_on_hangup(hup, args.config, cli, settings, reload_tx));
    }
    #[cfg(not(unix))]
    let _ = (reload_tx, cli, settings);
    let control = runner::Control {
        ready: Some(ready_tx),
        reload: Some(reload_rx),
    };
    let shutdown = async {
        stop.await;
        service::notify(service::State::Stopping);
    };
    runner::run(socket, store, config, control, shutdown)
        .await
        .context("server failed")?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "chirp server stopped; database flushed");
    Ok(0)
}

/// On every SIGHUP: reads the config file again and hands the settings that can change live
/// to the runner; reports what changed, and what would need a restart (left as it is). A file
/// that cannot be read or is invalid is refused whole, and the settings in force stay.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    path: Option<PathBuf>,
    cli: Settings,
    started: Settings,
    runner: tokio::sync::mpsc::UnboundedSender<runner::Reload>,
) {
    while hup.recv().await.is_some() {
        let Some(path) = &path else {
            warn!("SIGHUP: no config file (--config) to reload; nothing changed");
            continue;
        };
        service::notify(service::State::Reloading);
        let file = path.display().to_string();
        // A file read: off the runtime's thread, which the chat runner shares.
        let read = {
            let (cli, path) = (cli.clone(), path.clone());
            tokio::task::spawn_blocking(move || resolve(&cli, Some(&path)))
        };
        let resolved = match read.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the config reader failed: {e}")),
        };
        match resolved.and_then(|s| Ok((limits(&s)?, s))) {
            Err(e) => {
                error!(
                    file,
                    error = format!("{e:#}"),
                    "config file refused; the settings in force stay"
                );
            }
            Ok((limits, new)) => {
                let restart = restart_needed(&started, &new);
                for c in &restart {
                    warn!(setting = c.setting, from = %c.from, to = %c.to, "changed in the config file, but needs a restart: left as it is");
                }
                let (done, answer) = tokio::sync::oneshot::channel();
                if runner.send(runner::Reload { limits, done }).is_err() {
                    return; // The server is stopping.
                }
                let Ok(changes) = answer.await else { return };
                let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
                let mut line = format!("config reloaded from {file}: ");
                line.push_str(&if shown.is_empty() {
                    "nothing changed".to_owned()
                } else {
                    shown.join(", ")
                });
                if !restart.is_empty() {
                    let names: Vec<&str> = restart.iter().map(|c| c.setting).collect();
                    line.push_str(&format!(
                        "; needs a restart (left as it is): {}",
                        names.join(", ")
                    ));
                }
                info!(
                    file,
                    changed = changes.len(),
                    restart = restart.len(),
                    "config reloaded"
                );
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        service::notify(service::State::Ready);
    }
}

/// A node name unique to this start: the host's name, the process id and a random part (a
/// restarted node is a new node to the others, so nothing of its previous life is mistaken
/// for it).
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "chirp".into());
    // Uniqueness, not secrecy: std's randomly keyed hasher is random enough.
    use std::hash::{BuildHasher as _, Hasher as _};
    let r = std::hash::RandomState::new().build_hasher().finish() & 0xff_ffff;
    format!("{host}-{}-{r:06x}", std::process::id())
}

/// SIGTERM and SIGINT (Ctrl-C), handled from now on: the future resolves on the first. One
/// that comes while the server is still starting is kept, and stops it gracefully as soon as
/// it serves (with no handler yet, it would end the process on the spot).
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_bad_ones_are_named() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("3T"), Ok(3 << 40));
        assert!(parse_size("1X").is_err_and(|e| e.contains("unknown unit 'X'")));
        assert!(parse_size("G").is_err_and(|e| e.contains("is not a size")));
        assert!(parse_size("99999999999T").is_err_and(|e| e.contains("too large")));
    }

    #[test]
    fn config_file_keys_parse_and_unknown_ones_are_refused() {
        let f: Settings = toml::from_str(
            "bind = \"127.0.0.1:7000\"\nhistory_on_join = 20\nburst = 3\nretention_days = 7\n",
        )
        .expect("parses");
        assert_eq!(f.bind, Some(SocketAddr::from(([127, 0, 0, 1], 7000))));
        assert_eq!(f.history_on_join, Some(20));
        assert_eq!(f.burst, Some(3));
        assert_eq!(f.retention_days, Some(7));
        let f: Settings = toml::from_str(
            "nick_expiry_days = 30\nnick_claim_burst = 2\nnick_claims_per_hour = 12\n",
        )
        .expect("parses");
        assert_eq!(f.nick_expiry_days, Some(30));
        assert_eq!(f.nick_claim_burst, Some(2));
        assert_eq!(f.nick_claims_per_hour, Some(12));
        let e = toml::from_str::<Settings>("bnid = \"x\"\n").expect_err("typo");
        assert!(e.to_string().contains("bnid"), "{e}");
    }

    /// Issue 12, bug 8: these were accepted without complaint.
    #[test]
    fn out_of_range_settings_are_refused_naming_the_setting_and_the_range() {
        for (line, want) in [
            (
                "max_connections = 0",
                "max_connections (--max-connections) must be 1 to 1000000, not 0",
            ),
            (
                "max_connections = 1000001",
                "max_connections (--max-connections) must be 1 to 1000000, not 1000001",
            ),
            (
                "max_message_size = 0",
                "max_message_size (--max-message-size) must be 1 to 61440, not 0",
            ),
            (
                "retention_days = 0",
                "retention_days (--retention-days) must be 1 to 36500, not 0",
            ),
            (
                "retention_days = 18446744073709551615",
                "retention_days (--retention-days) must be 1 to 36500, not 18446744073709551615",
            ),
            (
                "history_on_join = 1000000000",
                "history_on_join (--history-on-join) must be 0 to 1000, not 1000000000",
            ),
            (
                "retention_count = 0",
                "retention_count (--retention-count) must be at least 1, not 0",
            ),
            (
                "max_rooms = 0",
                "max_rooms (--max-rooms) must be at least 1, not 0",
            ),
            (
                "max_sessions_per_ip = 0",
                "max_sessions_per_ip (--max-sessions-per-ip) must be at least 1, not 0",
            ),
        ] {
            // From the config file ...
            let s: Settings = toml::from_str(line).expect("parses");
            let e = check_ranges(&s).expect_err(line);
            assert_eq!(e.to_string(), want);
            // ... and from the command line.
            let (key, value) = line.split_once(" = ").expect("key = value");
            let flag = format!("--{}", key.replace('_', "-"));
            let cli = Cli::try_parse_from(["serve", flag.as_str(), value]).expect("parses");
            let e = check_ranges(&cli.args.settings).expect_err(line);
            assert_eq!(e.to_string(), want);
        }
        for line in [
            "",
            "max_connections = 1",
            "max_connections = 1000000",
            "max_message_size = 1",
            "max_message_size = 61440",
            "retention_days = 1",
            "retention_days = 36500",
            "history_on_join = 0",
            "history_on_join = 1000",
            "retention_count = 1",
            "max_rooms = 1",
            "max_sessions_per_ip = 1",
        ] {
            let s: Settings = toml::from_str(line).expect("parses");
            check_ranges(&s).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    /// The reload path: flags over the file, as at start; the settings that need a restart
    /// are named (the database's URL never shown); an invalid file is an error.
    #[cfg(unix)]
    #[test]
    fn a_reload_keeps_flags_over_the_file_and_names_what_needs_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        let cli = Cli::try_parse_from(["serve", "--burst", "7", "--bind", "127.0.0.1:7000"])
            .expect("parses")
            .args
            .settings;
        std::fs::write(&path, "burst = 3\nper_sec = 2\n").expect("write");
        let started = resolve(&cli, Some(&path)).expect("valid");
        let l = limits(&started).expect("limits");
        assert_eq!((l.burst, l.per_sec), (7, 2), "the flag wins over the file");
        std::fs::write(
            &path,
            "burst = 1\nper_sec = 4\nbind = \"0.0.0.0:1\"\nhistory_on_join = 9\n\
             database = \"postgres://chirp:secret@db/chirp\"\n",
        )
        .expect("write");
        let new = resolve(&cli, Some(&path)).expect("valid");
        let l = limits(&new).expect("limits");
        assert_eq!((l.burst, l.per_sec), (7, 4), "still");
        let restart: Vec<String> = restart_needed(&started, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        // bind comes from the flag: unchanged.
        assert_eq!(
            restart,
            vec![
                "history_on_join (default) -> 9",
                "database (not shown) -> (not shown)"
            ]
        );
        std::fs::write(&path, "burst = 5\nnode = \"n1\"\n").expect("write");
        let e = resolve(&cli, Some(&path)).expect_err("a node without a cluster");
        assert!(
            e.to_string().contains("--node is for a cluster node"),
            "{e}"
        );
        std::fs::remove_file(&path).expect("remove");
        let e = resolve(&cli, Some(&path)).expect_err("no file");
        assert!(e.to_string().contains("cannot read the config file"), "{e}");
    }

    /// Every setting the file may hold is taken from it when no flag gives it (`metrics` was
    /// parsed but not taken).
    #[test]
    fn the_file_gives_metrics_and_qlog_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "metrics = \"127.0.0.1:9467\"\nqlog = \"/var/lib/chirp/qlog\"\n",
        )
        .expect("write");
        let none = Cli::try_parse_from(["serve"])
            .expect("parses")
            .args
            .settings;
        let s = resolve(&none, Some(&path)).expect("valid");
        assert_eq!(s.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9467))));
        assert_eq!(s.qlog, Some(PathBuf::from("/var/lib/chirp/qlog")));
        let flags = Cli::try_parse_from(["serve", "--metrics", "127.0.0.1:1", "--qlog", "/q"])
            .expect("parses")
            .args
            .settings;
        let s = resolve(&flags, Some(&path)).expect("valid");
        assert_eq!(s.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(s.qlog, Some(PathBuf::from("/q")));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }
    use clap::Parser as _;
}
