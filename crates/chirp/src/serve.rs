//! `chirp serve`: the chat server. Settings come from the defaults, then the TOML config file
//! (`--config`), then the command line, each overriding the one before.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chirp_chat::runner::{self, RunnerConfig};
use chirp_keys::Identity;
use chirp_store::{Database, Retention, StoreConfig};
use clap::Args;
use serde::Deserialize;
use tracing::info;

pub(crate) const EXAMPLES: &str = "\
Runs with no flags at all: UDP 0.0.0.0:7667, data (identity key, chirp.db) in
$XDG_DATA_HOME/chirp (~/.local/share/chirp). It prints its address and key fingerprint; give
the fingerprint to users so they can pin it (chirp connect --server-key). SIGTERM or Ctrl-C
stops it gracefully: clients are told, the database is flushed.

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

A nick belongs to the key that claimed it first, until that key stays away (no connection)
for nick_expiry_days; then another key may claim it. A key's first nick is rate-limited per
source address (IPv4, or IPv6 /64): nick_claim_burst at once, then nick_claims_per_hour; an
IPv6 /56 gets twice that and a /48 four times, shared by all the /64s in it.

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
  chirp serve --config /etc/chirp/server.toml
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
#[derive(Debug, Args, Default, Deserialize)]
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
    /// The server's identity key file (created if missing) [default: server.key in the data
    /// directory]. Every node of a cluster serves with the same key, so that clients' pinned
    /// key holds whichever node they reach.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Directory of the server's identity key and database [default: $XDG_DATA_HOME/chirp].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Messages replayed to a client when it joins a room, 0 to 1000; 0: none [default: 50].
    #[arg(long, value_name = "N")]
    history_on_join: Option<usize>,
    /// Largest message text in bytes, 1 to 61440 [default: 8192].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
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

/// Runs the server until SIGTERM or Ctrl-C.
pub(crate) async fn run(mut args: ServeArgs) -> anyhow::Result<u8> {
    if let Some(path) = &args.config {
        let mut f = load_file(path)?;
        let s = &mut args.settings;
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
            qlog
        );
    }
    check_ranges(&args.settings)?;
    let bind = args
        .settings
        .bind
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
    let data_dir = match args.settings.data_dir.clone() {
        Some(d) => d,
        None => crate::id::default_data_dir()?,
    };
    let key_file = match &args.settings.key_file {
        Some(f) => f.clone(),
        None => data_dir.join(crate::id::KEY_FILE),
    };
    let (identity, created) = Identity::load_or_create(&key_file)
        .with_context(|| format!("cannot load the server identity {}", key_file.display()))?;
    let s = &args.settings;
    let mut config = RunnerConfig {
        identity: Some(chirp_proto::handshake::StaticSecret(*identity.secret())),
        qlog_dir: s.qlog.clone(),
        ..RunnerConfig::default()
    };
    let (peers_tx, mut peers_rx) = tokio::sync::watch::channel(0usize);
    let node = match &s.cluster {
        Some(url) => {
            anyhow::ensure!(
                s.database
                    .as_deref()
                    .is_some_and(|d| d.starts_with("postgres://") || d.starts_with("postgresql://")),
                "--cluster needs --database postgres://...: every node of a cluster shares one PostgreSQL database"
            );
            let node = match &s.node {
                Some(n) => {
                    anyhow::ensure!(
                        !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_graphic()),
                        "--node must be 1 to 64 visible ASCII characters"
                    );
                    n.clone()
                }
                None => default_node_name(),
            };
            config.bus = Some(url.clone());
            config.bus_ca = s.cluster_ca.clone();
            config.peers = Some(peers_tx);
            config.server.cluster = Some(chirp_chat::server::ClusterConfig::new(node.clone()));
            Some((node, url.clone()))
        }
        None => {
            anyhow::ensure!(s.node.is_none(), "--node is for a cluster node (--cluster)");
            anyhow::ensure!(
                s.cluster_ca.is_none(),
                "--cluster-ca is for a cluster node (--cluster)"
            );
            None
        }
    };
    let c = &mut config.server;
    c.history_on_join = s.history_on_join.unwrap_or(c.history_on_join);
    c.max_text = s.max_message_size.unwrap_or(c.max_text);
    c.burst = s.burst.unwrap_or(c.burst);
    c.per_sec = s.per_sec.unwrap_or(c.per_sec);
    c.max_rooms_per_user = s.max_rooms.unwrap_or(c.max_rooms_per_user);
    c.max_sessions_per_ip = s.max_sessions_per_ip.unwrap_or(c.max_sessions_per_ip);
    c.replay_cache = c.replay_cache.max(c.history_on_join);
    // The in-memory replay window must not outlive retention.
    if let Some(n) = s.retention_count {
        c.replay_cache = c.replay_cache.min(usize::try_from(n).unwrap_or(usize::MAX));
    }
    c.max_age_ms = s
        .retention_days
        .map(|d| i64::try_from(d.saturating_mul(86_400_000)).unwrap_or(i64::MAX));
    anyhow::ensure!(
        c.burst >= 1 && c.per_sec >= 1,
        "burst and per_sec must be at least 1"
    );
    if let Some(days) = s.nick_expiry_days {
        anyhow::ensure!(
            days <= 36_500,
            "nick_expiry_days is at most 36500 (100 years); 0 means nicks never expire"
        );
        c.nick_expiry_ms = i64::try_from(days)
            .ok()
            .filter(|&d| d > 0)
            .map(|d| d * chirp_chat::server::DAY_MS);
    }
    c.nick_claim_burst = s.nick_claim_burst.unwrap_or(c.nick_claim_burst);
    c.nick_claims_per_hour = s.nick_claims_per_hour.unwrap_or(c.nick_claims_per_hour);
    anyhow::ensure!(
        (1..=1_000_000).contains(&c.nick_claim_burst)
            && (1..=3_600_000).contains(&c.nick_claims_per_hour),
        "nick_claim_burst must be 1 to 1000000 and nick_claims_per_hour 1 to 3600000"
    );
    anyhow::ensure!(
        c.max_text <= 60 * 1024,
        "max_message_size is at most 61440 bytes (one transport message, with room for the envelope)"
    );
    config.max_connections = s.max_connections.unwrap_or(config.max_connections);
    if let Some(secs) = s.idle_timeout {
        anyhow::ensure!(
            (1..=3600).contains(&secs),
            "idle_timeout must be 1 to 3600 seconds"
        );
        config.idle_timeout = Duration::from_secs(secs);
    }
    let store_config = StoreConfig {
        retention: Retention {
            max_per_conv: s.retention_count,
            max_age: s.retention_days.map(|d| Duration::from_secs(d * 86_400)),
        },
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
    runner::run(socket, store, config, shutdown_signal())
        .await
        .context("server failed")?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "chirp server stopped; database flushed");
    Ok(0)
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

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }
    use clap::Parser as _;
}
