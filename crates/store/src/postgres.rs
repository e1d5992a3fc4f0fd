//! The PostgreSQL backend: for one node, or for every node of a cluster sharing one database.
//!
//! - [`Postgres::connect`] builds a connection pool (`deadpool-postgres`), migrates the schema
//!   ([`MIGRATIONS`], version in table `chirp_schema`, under an advisory lock so that nodes
//!   starting together migrate once) and starts the writer task.
//! - The writer is one task per node: it takes every batch queued while its previous commit
//!   ran into one transaction (group commit) and sends the transaction's statements pipelined
//!   on one connection, so a transaction of many messages costs about one round trip plus the
//!   commit, not one round trip per message.
//! - Ids: each message takes `convs.last_id + 1` of its conversation in its transaction. The
//!   row lock on `convs` orders concurrent writers of one conversation, so ids are unique and
//!   increasing across nodes. Within a transaction messages are written in the order of their
//!   conversations' names (their order within a conversation kept): two nodes' transactions
//!   then lock conversations in the same order and cannot deadlock on them.
//! - Nicks: [`Op::SetNick`] binds only if no other key holds the nick: `INSERT .. ON CONFLICT
//!   (fold) DO UPDATE .. WHERE` the holder is the same key, inside a savepoint that is rolled
//!   back when another key holds it. Two nodes racing for a nick: the second insert waits for
//!   the first transaction and then finds the nick held ([`Outcome::NickTaken`]).
//! - Reads take a pooled connection each; several run at once.
//! - When PostgreSQL is down, writes and reads fail at once with [`StoreError::Postgres`]
//!   (nothing is acknowledged that is not committed), and the pool reconnects by itself when
//!   it is back.
//! - TLS: with `sslmode=require` in the address, connections are encrypted (rustls) and the
//!   server's certificate is verified against the system's trusted roots, plus the CA file
//!   `sslrootcert=PATH` names (as libpq spells it). Without it, connections are plain (the
//!   default `prefer` of libpq, which encrypts without verifying anything, protects only
//!   against a passive listener; chirp does not pretend otherwise).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tracing::{debug, warn};

use crate::{
    Amend, Batch, Change, Loaded, ModEntry, NewMessage, Op, Outcome, Record, Refusal, Retention,
    SEARCH_TIMEOUT, Storage, StoreConfig, StoreError, StoreFuture, WriterStats, event_record, kind,
};

/// Schema migrations; entry `i` upgrades version `i` to `i + 1`. Text keys use the "C"
/// collation: conversation names are compared and paged by their bytes, as in SQLite.
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE messages (
        conv TEXT COLLATE \"C\" NOT NULL,
        id BIGINT NOT NULL,
        ts BIGINT NOT NULL,
        from_key BYTEA NOT NULL,
        from_nick TEXT NOT NULL,
        to_key BYTEA,
        to_nick TEXT,
        kind SMALLINT NOT NULL,
        text TEXT NOT NULL,
        client_id BIGINT,
        client_seq BIGINT,
        PRIMARY KEY (conv, id)
    );
    CREATE INDEX messages_to ON messages (to_key, conv, id) WHERE to_key IS NOT NULL;
    CREATE INDEX messages_ts ON messages (ts);
    -- A message is stored once, whichever node its sender reached.
    CREATE UNIQUE INDEX messages_ref ON messages (from_key, client_id, client_seq)
        WHERE client_id IS NOT NULL;
    -- The highest id ever given in a conversation: ids never go back, even after retention
    -- deleted every message of a conversation.
    CREATE TABLE convs (conv TEXT COLLATE \"C\" PRIMARY KEY, last_id BIGINT NOT NULL);
    CREATE TABLE nicks (fold TEXT COLLATE \"C\" PRIMARY KEY, nick TEXT NOT NULL,
        key BYTEA NOT NULL UNIQUE, seen BIGINT NOT NULL);
    CREATE TABLE topics (room TEXT COLLATE \"C\" PRIMARY KEY, topic TEXT NOT NULL,
        set_by TEXT NOT NULL, ts BIGINT NOT NULL);
    CREATE TABLE dm_cursors (key BYTEA NOT NULL, conv TEXT COLLATE \"C\" NOT NULL,
        upto BIGINT NOT NULL, PRIMARY KEY (key, conv));",
    // 2: moderation: room roles, bans, mutes, invitations and modes; server-wide bans
    // (scope '').
    "CREATE TABLE moderation (scope TEXT COLLATE \"C\" NOT NULL,
        kind TEXT COLLATE \"C\" NOT NULL, subject TEXT COLLATE \"C\" NOT NULL,
        value TEXT NOT NULL, set_by TEXT NOT NULL, ts BIGINT NOT NULL,
        PRIMARY KEY (scope, kind, subject));",
    // 3: read markers, and full-text search over plain messages and actions: a GIN index on
    // the words of each text ('simple': lowercased, no stemming, no stop words, as SQLite's
    // FTS5 index matches). PostgreSQL keeps it in step with every insert, update and delete.
    "CREATE TABLE read_markers (key BYTEA NOT NULL, conv TEXT COLLATE \"C\" NOT NULL,
        upto BIGINT NOT NULL, PRIMARY KEY (key, conv));
    CREATE INDEX messages_fts ON messages USING GIN (to_tsvector('simple', text))
        WHERE kind IN (0, 1);",
    // 4: edits, deletions and reactions (as SQLite's migration 6).
    "ALTER TABLE messages ADD COLUMN target BIGINT,
        ADD COLUMN edited BOOLEAN NOT NULL DEFAULT false,
        ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false,
        ADD COLUMN count BIGINT;
    CREATE INDEX messages_target ON messages (conv, target) WHERE target IS NOT NULL;
    CREATE TABLE reactions (conv TEXT COLLATE \"C\" NOT NULL, id BIGINT NOT NULL,
        emoji TEXT COLLATE \"C\" NOT NULL, key BYTEA NOT NULL, ts BIGINT NOT NULL,
        PRIMARY KEY (conv, id, emoji, key));",
];

/// Serialises schema migrations of nodes starting at once (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6368_6972_7000; // "chirp"

/// Connections in the pool: the writer's and the reads'.
const POOL_SIZE: usize = 8;
/// How long a connection attempt or a wait for a pooled connection may take before the
/// request fails (PostgreSQL down or overloaded): a client then gets an error, not silence.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const COLUMNS: &str = "conv, id, ts, from_key, from_nick, to_key, to_nick, kind, text, client_id,
     client_seq, target, edited, deleted, count";

const INSERT_MESSAGE: &str = "WITH dup AS (
        SELECT conv, id, ts FROM messages
        WHERE from_key = $3 AND client_id = $9 AND client_seq = $10
    ), next AS (
        INSERT INTO convs (conv, last_id) SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM dup)
        ON CONFLICT (conv) DO UPDATE SET last_id = convs.last_id + 1 RETURNING last_id
    ), ins AS (
        INSERT INTO messages (conv, id, ts, from_key, from_nick, to_key, to_nick, kind, text,
            client_id, client_seq)
        SELECT $1, last_id, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM next RETURNING id
    )
    SELECT true, $1::text, id, $2::bigint FROM ins
    UNION ALL SELECT false, conv::text, id, ts FROM dup";

/// `url` without its query parameter `name` (which tokio-postgres does not know), and the
/// parameter's value.
fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

/// The rustls settings for `sslmode=require`: the system's trusted roots, and the
/// certificates of `ca_file` (PEM), if given.
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("sslrootcert {path}: no certificate in it"));
        }
    }
    if roots.is_empty() {
        return Err(
            "sslmode=require, but no trusted root certificate: give sslrootcert=CA.pem".into(),
        );
    }
    // ring, which async-nats builds already (aws-lc-rs would add a C toolchain dependency);
    // rustls deprecated it for lacking post-quantum key exchange, which PostgreSQL does not
    // negotiate anyway.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The connection string without its password, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
            format!(
                "postgres://{}@{}:{}/{}",
                c.get_user().unwrap_or(""),
                hosts.join(","),
                ports.join(","),
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "postgres://(unparsable)".into(),
    }
}

enum Req {
    Write(Vec<Op>, oneshot::Sender<Result<Vec<Outcome>, StoreError>>),
    Prune(i64, oneshot::Sender<Result<u64, StoreError>>),
    Retention(Retention),
}

/// The PostgreSQL database: a pool, and a writer task. See the module documentation.
#[derive(Debug)]
pub struct Postgres {
    pool: Pool,
    target: String,
    /// `None` once closed.
    tx: Mutex<Option<mpsc::UnboundedSender<Req>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stats: Arc<Mutex<WriterStats>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error of the database at `target`.
pub(crate) fn pg_err(target: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Postgres {
        target: target.to_owned(),
        // `Display` of a server error is only "db error"; its detail says what happened.
        message: match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        },
    }
}

fn pool_err(target: &str, e: deadpool_postgres::PoolError) -> StoreError {
    // The causes too: "error performing TLS handshake" alone does not say that the
    // certificate was refused, nor why.
    let mut message = format!("no connection: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    StoreError::Postgres {
        target: target.to_owned(),
        message,
    }
}

fn key32(v: Vec<u8>) -> Result<[u8; 32], String> {
    v.try_into().map_err(|_| "a key is not 32 bytes".to_owned())
}

fn record(row: &tokio_postgres::Row) -> Result<Record, String> {
    let get = |e: tokio_postgres::Error| e.to_string();
    let to_key: Option<Vec<u8>> = row.try_get(5).map_err(get)?;
    let cid: Option<i64> = row.try_get(9).map_err(get)?;
    let cseq: Option<i64> = row.try_get(10).map_err(get)?;
    let kind: i16 = row.try_get(7).map_err(get)?;
    Ok(Record {
        conv: row.try_get(0).map_err(get)?,
        id: row.try_get::<_, i64>(1).map_err(get)? as u64,
        ts_ms: row.try_get(2).map_err(get)?,
        from_key: key32(row.try_get(3).map_err(get)?)?,
        from_nick: row.try_get(4).map_err(get)?,
        to_key: to_key.map(key32).transpose()?,
        to_nick: row.try_get(6).map_err(get)?,
        kind: u8::try_from(kind).map_err(|_| format!("kind {kind} out of range"))?,
        text: row.try_get(8).map_err(get)?,
        client_ref: cid.zip(cseq).map(|(a, b)| (a as u64, b as u64)),
        target: row
            .try_get::<_, Option<i64>>(11)
            .map_err(get)?
            .map(|t| t as u64),
        edited: row.try_get(12).map_err(get)?,
        deleted: row.try_get(13).map_err(get)?,
        reactions: match row.try_get::<_, Option<i64>>(14).map_err(get)? {
            Some(n) => vec![(row.try_get(8).map_err(get)?, n as u64)],
            None => Vec::new(),
        },
    })
}

/// Fills in the reaction counts of the messages among `records` (of one conversation).
async fn add_reactions(
    c: &deadpool_postgres::ClientWrapper,
    records: &mut [Record],
) -> Result<(), String> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let (conv, lo, hi) = (first.conv.clone(), id_param(first.id), id_param(last.id));
    let st = c
        .prepare_cached(
            "SELECT id, emoji, count(*) FROM reactions WHERE conv = $1 AND id BETWEEN $2 AND $3
             GROUP BY id, emoji ORDER BY id, min(ts), emoji",
        )
        .await
        .map_err(msg)?;
    for row in c.query(&st, &[&conv, &lo, &hi]).await.map_err(msg)? {
        let id = row.get::<_, i64>(0) as u64;
        if let Ok(i) = records.binary_search_by_key(&id, |r| r.id) {
            if kind::is_message(records[i].kind) {
                records[i]
                    .reactions
                    .push((row.get(1), row.get::<_, i64>(2) as u64));
            }
        }
    }
    Ok(())
}

/// Fills in the reaction counts of search matches (of `conv`, newest first, not contiguous),
/// in one query.
async fn add_reactions_of_matches(
    c: &deadpool_postgres::ClientWrapper,
    conv: &str,
    records: &mut [Record],
) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = records.iter().map(|r| id_param(r.id)).collect();
    let st = c
        .prepare_cached(
            "SELECT id, emoji, count(*) FROM reactions WHERE conv = $1 AND id = ANY($2)
             GROUP BY id, emoji ORDER BY id, min(ts), emoji",
        )
        .await
        .map_err(msg)?;
    for row in c.query(&st, &[&conv, &ids]).await.map_err(msg)? {
        let id = row.get::<_, i64>(0) as u64;
        if let Some(r) = records.iter_mut().find(|r| r.id == id) {
            r.reactions.push((row.get(1), row.get::<_, i64>(2) as u64));
        }
    }
    Ok(())
}

/// Checks and makes the change of `a` to its message (as SQLite's `amend`): `Err` if it may
/// not be made, else, for a reaction, its emoji's count after it. The message's row is
/// locked until the transaction ends.
async fn amend(
    tx: &deadpool_postgres::Transaction<'_>,
    a: &Amend,
) -> Result<Result<Option<u64>, Refusal>, tokio_postgres::Error> {
    let (conv, id) = (&a.conv, id_param(a.target));
    let found = tx
        .query_opt(
            "SELECT from_key, kind, deleted FROM messages WHERE conv = $1 AND id = $2 FOR UPDATE",
            &[conv, &id],
        )
        .await?;
    let Some(row) = found else {
        return Ok(Err(Refusal::NoMessage));
    };
    let (from, k, deleted): (Vec<u8>, i16, bool) = (row.get(0), row.get(1), row.get(2));
    if !u8::try_from(k).is_ok_and(kind::is_message) || deleted {
        return Ok(Err(Refusal::NoMessage));
    }
    if a.author.is_some_and(|au| au[..] != from[..]) {
        return Ok(Err(Refusal::NotAuthor));
    }
    let count = async |emoji: &String| -> Result<Option<u64>, tokio_postgres::Error> {
        let row = tx
            .query_one(
                "SELECT count(*) FROM reactions WHERE conv = $1 AND id = $2 AND emoji = $3",
                &[conv, &id, emoji],
            )
            .await?;
        Ok(Some(row.get::<_, i64>(0) as u64))
    };
    Ok(Ok(match &a.change {
        Change::Edit(text) => {
            tx.execute(
                "UPDATE messages SET text = $3, edited = true WHERE conv = $1 AND id = $2",
                &[conv, &id, text],
            )
            .await?;
            None
        }
        Change::Delete => {
            tx.execute(
                "UPDATE messages SET text = '', deleted = true WHERE conv = $1 AND id = $2",
                &[conv, &id],
            )
            .await?;
            tx.execute(
                "UPDATE messages SET text = '', deleted = true WHERE conv = $1 AND target = $2
                 AND kind = $3",
                &[conv, &id, &i16::from(kind::EDIT)],
            )
            .await?;
            tx.execute(
                "DELETE FROM reactions WHERE conv = $1 AND id = $2",
                &[conv, &id],
            )
            .await?;
            None
        }
        Change::React(emoji) => {
            let row = tx
                .query_one(
                    "SELECT count(DISTINCT emoji), count(*) FILTER (WHERE emoji = $3)
                     FROM reactions WHERE conv = $1 AND id = $2",
                    &[conv, &id, emoji],
                )
                .await?;
            let (used, this): (i64, i64) = (row.get(0), row.get(1));
            if this == 0 && used as usize >= crate::MAX_EMOJIS {
                return Ok(Err(Refusal::TooManyEmojis));
            }
            let added = tx
                .execute(
                    "INSERT INTO reactions (conv, id, emoji, key, ts) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING",
                    &[conv, &id, emoji, &&a.by_key[..], &a.ts_ms],
                )
                .await?;
            if added == 0 {
                return Ok(Err(Refusal::Unchanged));
            }
            count(emoji).await?
        }
        Change::Unreact(emoji) => {
            let removed = tx
                .execute(
                    "DELETE FROM reactions WHERE conv = $1 AND id = $2 AND emoji = $3
                     AND key = $4",
                    &[conv, &id, emoji, &&a.by_key[..]],
                )
                .await?;
            if removed == 0 {
                return Ok(Err(Refusal::Unchanged));
            }
            count(emoji).await?
        }
    }))
}

/// Stores the event of an [`Op::Amend`] that was made, with the next id of its conversation.
async fn insert_event(
    tx: &deadpool_postgres::Transaction<'_>,
    a: &Amend,
    count: Option<u64>,
) -> Result<Record, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "INSERT INTO convs (conv, last_id) VALUES ($1, 1)
             ON CONFLICT (conv) DO UPDATE SET last_id = convs.last_id + 1 RETURNING last_id",
            &[&a.conv],
        )
        .await?;
    let id = row.get::<_, i64>(0);
    let r = event_record(a, id as u64, count);
    tx.execute(
        "INSERT INTO messages (conv, id, ts, from_key, from_nick, to_key, to_nick, kind, text,
             target, count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &r.conv,
            &id,
            &r.ts_ms,
            &&r.from_key[..],
            &r.from_nick,
            &r.to_key.as_ref().map(|k| &k[..]),
            &r.to_nick,
            &i16::from(r.kind),
            &r.text,
            &id_param(a.target),
            &count.map(|n| n as i64),
        ],
    )
    .await?;
    Ok(r)
}

/// The conversation of a message or of a change to one.
fn conv_of(op: &Op) -> &str {
    match op {
        Op::Message(m) => &m.conv,
        Op::Amend(a) => &a.conv,
        _ => "",
    }
}

/// Stores `messages` (op `i` of the batch each), pipelined, and sets their outcomes.
async fn insert_messages(
    tx: &deadpool_postgres::Transaction<'_>,
    messages: &[(usize, &NewMessage)],
    out: &mut [Outcome],
) -> Result<(), tokio_postgres::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let st = tx.prepare_cached(INSERT_MESSAGE).await?;
    let params: Vec<[Box<dyn ToSql + Sync + Send>; 10]> = messages
        .iter()
        .map(|(_, m)| -> [Box<dyn ToSql + Sync + Send>; 10] {
            [
                Box::new(m.conv.clone()),
                Box::new(m.ts_ms),
                Box::new(m.from_key.to_vec()),
                Box::new(m.from_nick.clone()),
                Box::new(m.to_key.map(|k| k.to_vec())),
                Box::new(m.to_nick.clone()),
                Box::new(i16::from(m.kind)),
                Box::new(m.text.clone()),
                Box::new(m.client_ref.map(|c| c.0 as i64)),
                Box::new(m.client_ref.map(|c| c.1 as i64)),
            ]
        })
        .collect();
    // Every query is queued on the connection as its future is first polled, in
    // order: one round trip for all of them.
    let queries = params.iter().map(|p| {
        let refs: Vec<&(dyn ToSql + Sync)> =
            p.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect();
        let st = &st;
        async move { tx.query_one(st, &refs).await }
    });
    let rows = futures_util::future::try_join_all(queries).await?;
    for ((i, _), row) in messages.iter().zip(rows) {
        let fresh: bool = row.get(0);
        let id = row.get::<_, i64>(2) as u64;
        out[*i] = if fresh {
            Outcome::Stored { id }
        } else {
            Outcome::Duplicate {
                conv: row.get(1),
                id,
                ts_ms: row.get(3),
            }
        };
    }
    Ok(())
}

fn id_param(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Postgres {
    /// Connects to the database at `url`, migrates its schema, and starts the writer task
    /// (on the current tokio runtime).
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Postgres, StoreError> {
        let (url, root_cert) = take_param(url, "sslrootcert");
        let url = url.as_str();
        let target = redact(url);
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Address(format!("{target}: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        pg.application_name("chirp");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if pg.get_ssl_mode() == SslMode::Require {
            let tls = tls_config(root_cert.as_deref())
                .map_err(|e| StoreError::Address(format!("{target}: {e}")))?;
            Manager::from_config(
                pg,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            )
        } else {
            if root_cert.is_some() {
                return Err(StoreError::Address(format!(
                    "{target}: sslrootcert is given but sslmode is not require"
                )));
            }
            pg.ssl_mode(SslMode::Disable);
            Manager::from_config(pg, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Address(format!("{target}: {e}")))?;
        migrate(&pool, &target).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let writer = Writer {
            pool: pool.clone(),
            target: target.clone(),
            config,
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(writer.run(rx));
        Ok(Postgres {
            pool,
            target,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(task)),
            stats,
        })
    }

    /// A connection of the pool, for what no [`Storage`] method does (the copy of
    /// [`crate::migrate`]).
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| pool_err(&self.target, e))
    }

    /// The database, for errors: host and database name, never the password.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    fn send<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Req,
    ) -> StoreFuture<T> {
        let (done, rx) = oneshot::channel();
        if let Some(tx) = &*lock(&self.tx) {
            // A send to a stopped writer drops `done`: the receiver then says `Stopped`.
            let _ = tx.send(make(done));
        }
        Box::pin(async move { rx.await.map_err(|_| StoreError::Stopped)? })
    }

    /// Runs `q` on a pooled connection.
    fn read<T, F>(
        &self,
        q: impl FnOnce(deadpool_postgres::Object) -> F + Send + 'static,
    ) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, String>> + Send,
    {
        let pool = self.pool.clone();
        let target = self.target.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(|e| pool_err(&target, e))?;
            q(c).await
                .map_err(|message| StoreError::Postgres { target, message })
        })
    }
}

/// The message of a query error, with the server's detail when there is one.
fn msg(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn migrate(pool: &Pool, target: &str) -> Result<(), StoreError> {
    let err = pg_err(target);
    let mut c = pool.get().await.map_err(|e| pool_err(target, e))?;
    let tx = c.transaction().await.map_err(&err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS chirp_schema (version INT NOT NULL)")
        .await
        .map_err(&err)?;
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM chirp_schema",
            &[],
        )
        .await
        .map_err(&err)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew {
            path: target.into(),
            found,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(&err)?;
        debug!(version = i + 1, "database migrated");
    }
    if found < known {
        tx.execute("DELETE FROM chirp_schema", &[])
            .await
            .map_err(&err)?;
        tx.execute(
            "INSERT INTO chirp_schema (version) VALUES ($1)",
            &[&(known as i32)],
        )
        .await
        .map_err(&err)?;
    }
    tx.commit().await.map_err(&err)
}

struct Writer {
    pool: Pool,
    target: String,
    config: StoreConfig,
    stats: Arc<Mutex<WriterStats>>,
}

impl Writer {
    /// Waits for the first request; then takes whatever queued meanwhile, up to `max_batch`
    /// operations, into the same transaction. Ends when the sender is gone and the queue is
    /// drained.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Req>) {
        while let Some(first) = rx.recv().await {
            let mut batch: Vec<Batch> = Vec::new();
            let mut ops = 0usize;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Req::Write(o, done) => {
                        ops += o.len();
                        batch.push((o, done));
                    }
                    Req::Prune(now, done) => {
                        // Keep order: commit what came before, then prune on its own.
                        self.commit(std::mem::take(&mut batch)).await;
                        ops = 0;
                        let _ = done.send(self.prune(now).await);
                    }
                    Req::Retention(r) => self.config.retention = r,
                }
                if ops < self.config.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(batch).await;
        }
    }

    async fn commit(&self, batch: Vec<Batch>) {
        if batch.is_empty() {
            return;
        }
        let ops: Vec<&Op> = batch.iter().flat_map(|(o, _)| o.iter()).collect();
        let n = ops.len();
        let result = self.apply(&ops).await;
        match &result {
            Ok(_) => {
                // A no-op unless the process installed a metrics recorder.
                metrics::histogram!("chirp_store_batch_ops").record(n as f64);
                let mut s = lock(&self.stats);
                s.commits += 1;
                s.ops += n as u64;
            }
            Err(e) => warn!(error = %e, ops = n, "commit failed"),
        }
        crate::answer_batches(batch, result);
    }

    /// One transaction: the messages first, pipelined, in the order of their conversations'
    /// names (see the module documentation); then the other operations in their order.
    async fn apply(&self, ops: &[&Op]) -> Result<Vec<Outcome>, StoreError> {
        let err = pg_err(&self.target);
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| pool_err(&self.target, e))?;
        let tx = c.transaction().await.map_err(&err)?;
        let mut out = vec![Outcome::Done; ops.len()];
        // Messages and changes to messages, in the order of their conversations' names (a
        // conversation's own in the order given, so that its ids follow it): runs of
        // messages are pipelined, each change is made on its own.
        let mut convs: Vec<(usize, &Op)> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op, Op::Message(_) | Op::Amend(_)))
            .map(|(i, op)| (i, *op))
            .collect();
        convs.sort_by(|a, b| conv_of(a.1).as_bytes().cmp(conv_of(b.1).as_bytes()));
        let mut run: Vec<(usize, &NewMessage)> = Vec::new();
        for (i, op) in convs {
            match op {
                Op::Message(m) => run.push((i, m)),
                Op::Amend(a) => {
                    insert_messages(&tx, &std::mem::take(&mut run), &mut out)
                        .await
                        .map_err(&err)?;
                    out[i] = match amend(&tx, a).await.map_err(&err)? {
                        Err(refusal) => Outcome::Refused(refusal),
                        Ok(count) => Outcome::Amended(Box::new(
                            insert_event(&tx, a, count).await.map_err(&err)?,
                        )),
                    };
                }
                _ => {}
            }
        }
        insert_messages(&tx, &run, &mut out).await.map_err(&err)?;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Message(_) | Op::Amend(_) => {}
                Op::SetNick {
                    nick,
                    fold,
                    key,
                    seen_ms,
                } => {
                    tx.batch_execute("SAVEPOINT nick").await.map_err(&err)?;
                    tx.execute(
                        "DELETE FROM nicks WHERE key = $1 AND fold <> $2",
                        &[&&key[..], fold],
                    )
                    .await
                    .map_err(&err)?;
                    let bound = tx
                        .query_opt(
                            "INSERT INTO nicks (fold, nick, key, seen) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (fold) DO UPDATE
                                 SET nick = excluded.nick, seen = excluded.seen
                                 WHERE nicks.key = excluded.key
                             RETURNING 1",
                            &[fold, nick, &&key[..], seen_ms],
                        )
                        .await
                        .map_err(&err)?
                        .is_some();
                    if bound {
                        tx.batch_execute("RELEASE SAVEPOINT nick")
                            .await
                            .map_err(&err)?;
                        out[i] = Outcome::NickBound;
                    } else {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT nick")
                            .await
                            .map_err(&err)?;
                        out[i] = Outcome::NickTaken;
                    }
                }
                Op::Seen { key, ts_ms } => {
                    tx.execute(
                        "UPDATE nicks SET seen = greatest(seen, $2) WHERE key = $1",
                        &[&&key[..], ts_ms],
                    )
                    .await
                    .map_err(&err)?;
                }
                Op::ReleaseNick { key, seen_by } => {
                    // The row is locked until the transaction ends: a `Seen` from another
                    // node waits for it, and then finds no row (or the kept one).
                    let seen: Option<i64> = tx
                        .query_opt(
                            "SELECT seen FROM nicks WHERE key = $1 FOR UPDATE",
                            &[&&key[..]],
                        )
                        .await
                        .map_err(&err)?
                        .map(|r| r.get(0));
                    match seen {
                        Some(seen_ms) if seen_ms > *seen_by => {
                            out[i] = Outcome::NickKept { seen_ms };
                        }
                        Some(_) => {
                            tx.execute("DELETE FROM nicks WHERE key = $1", &[&&key[..]])
                                .await
                                .map_err(&err)?;
                        }
                        None => {}
                    }
                }
                Op::SetTopic {
                    room,
                    topic,
                    by,
                    ts_ms,
                } => {
                    tx.execute(
                        "INSERT INTO topics (room, topic, set_by, ts) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (room) DO UPDATE
                             SET topic = excluded.topic, set_by = excluded.set_by, ts = excluded.ts",
                        &[room, topic, by, ts_ms],
                    )
                    .await
                    .map_err(&err)?;
                }
                Op::SetMod(ModEntry {
                    scope,
                    kind,
                    subject,
                    value,
                    by,
                    ts_ms,
                }) => {
                    tx.execute(
                        "INSERT INTO moderation (scope, kind, subject, value, set_by, ts)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (scope, kind, subject) DO UPDATE
                             SET value = excluded.value, set_by = excluded.set_by,
                                 ts = excluded.ts",
                        &[scope, kind, subject, value, by, ts_ms],
                    )
                    .await
                    .map_err(&err)?;
                }
                Op::ClearMod {
                    scope,
                    kind,
                    subject,
                } => {
                    tx.execute(
                        "DELETE FROM moderation WHERE scope = $1 AND kind = $2 AND subject = $3",
                        &[scope, kind, subject],
                    )
                    .await
                    .map_err(&err)?;
                }
                Op::ReadMarker { key, conv, upto } => {
                    tx.execute(
                        "INSERT INTO read_markers (key, conv, upto) VALUES ($1, $2, $3)
                         ON CONFLICT (key, conv) DO UPDATE
                             SET upto = greatest(read_markers.upto, excluded.upto)",
                        &[&&key[..], conv, &id_param(*upto)],
                    )
                    .await
                    .map_err(&err)?;
                }
                Op::DmCursor { key, conv, upto } => {
                    tx.execute(
                        "INSERT INTO dm_cursors (key, conv, upto) VALUES ($1, $2, $3)
                         ON CONFLICT (key, conv) DO UPDATE
                             SET upto = greatest(dm_cursors.upto, excluded.upto)",
                        &[&&key[..], conv, &id_param(*upto)],
                    )
                    .await
                    .map_err(&err)?;
                }
            }
        }
        tx.commit().await.map_err(&err)?;
        Ok(out)
    }

    async fn prune(&self, now_ms: i64) -> Result<u64, StoreError> {
        let err = pg_err(&self.target);
        let mut c = self
            .pool
            .get()
            .await
            .map_err(|e| pool_err(&self.target, e))?;
        let r = self.config.retention;
        let tx = c.transaction().await.map_err(&err)?;
        let mut deleted = 0u64;
        if let Some(age) = r.max_age {
            let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            deleted += tx
                .execute("DELETE FROM messages WHERE ts < $1", &[&cutoff])
                .await
                .map_err(&err)?;
        }
        if let Some(max) = r.max_per_conv {
            // Ids are dense within a conversation: "the newest N" is "id above last_id - N".
            deleted += tx
                .execute(
                    "DELETE FROM messages m USING convs c
                     WHERE c.conv = m.conv AND m.id <= c.last_id - $1",
                    &[&id_param(max)],
                )
                .await
                .map_err(&err)?;
        }
        if deleted > 0 {
            tx.execute(
                "DELETE FROM reactions r WHERE NOT EXISTS (SELECT 1 FROM messages m
                     WHERE m.conv = r.conv AND m.id = r.id)",
                &[],
            )
            .await
            .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)?;
        Ok(deleted)
    }
}

async fn load(c: deadpool_postgres::Object, recent: usize) -> Result<Loaded, String> {
    let mut out = Loaded::default();
    for row in c
        .query("SELECT nick, key, seen FROM nicks", &[])
        .await
        .map_err(msg)?
    {
        let key = key32(row.get(1))?;
        out.nicks.push((row.get(0), key));
        out.seen.push((key, row.get(2)));
    }
    for row in c
        .query("SELECT room, topic, set_by, ts FROM topics", &[])
        .await
        .map_err(msg)?
    {
        out.topics
            .push((row.get(0), row.get(1), row.get(2), row.get(3)));
    }
    for row in c
        .query(
            "SELECT scope, kind, subject, value, set_by, ts FROM moderation",
            &[],
        )
        .await
        .map_err(msg)?
    {
        out.moderation.push(mod_entry(&row));
    }
    for row in c
        .query("SELECT conv, last_id FROM convs", &[])
        .await
        .map_err(msg)?
    {
        out.last_ids.push((row.get(0), row.get::<_, i64>(1) as u64));
    }
    // The newest `recent` of every conversation in one query.
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM (
                     SELECT *, row_number() OVER (PARTITION BY conv ORDER BY id DESC) AS n
                     FROM messages) m
                 WHERE n <= $1 ORDER BY conv, id"
            ),
            &[&(recent as i64)],
        )
        .await
        .map_err(msg)?;
    for row in &rows {
        out.recent.push(record(row)?);
    }
    for conv in out.recent.chunk_by_mut(|a, b| a.conv == b.conv) {
        add_reactions(&c, conv).await?;
    }
    Ok(out)
}

impl Storage for Postgres {
    fn write(&self, ops: Vec<Op>) -> StoreFuture<Vec<Outcome>> {
        self.send(|done| Req::Write(ops, done))
    }

    fn prune(&self, now_ms: i64) -> StoreFuture<u64> {
        self.send(|done| Req::Prune(now_ms, done))
    }

    fn set_retention(&self, retention: Retention) {
        if let Some(tx) = &*lock(&self.tx) {
            // A stopped writer prunes nothing more.
            let _ = tx.send(Req::Retention(retention));
        }
    }

    fn load(&self, recent: usize) -> StoreFuture<Loaded> {
        self.read(move |c| load(c, recent))
    }

    fn history(&self, conv: String, before: Option<u64>, limit: usize) -> StoreFuture<Vec<Record>> {
        self.read(move |c| async move {
            let before = before.map_or(i64::MAX, id_param);
            let st = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE conv = $1 AND id < $2
                     ORDER BY id DESC LIMIT $3"
                ))
                .await
                .map_err(msg)?;
            let rows = c
                .query(&st, &[&conv, &before, &(limit as i64)])
                .await
                .map_err(msg)?;
            let mut out = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            add_reactions(&c, &mut out).await?;
            Ok(out)
        })
    }

    fn after(
        &self,
        conv: String,
        after: u64,
        upto: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreFuture<Vec<Record>> {
        self.read(move |c| async move {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE conv = $1 AND id > $2 AND id <= $3
                     ORDER BY id LIMIT $4"
                ))
                .await
                .map_err(msg)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = c
                .query(&st, &[&conv, &id_param(after), &id_param(upto), &limit])
                .await
                .map_err(msg)?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for row in &rows {
                if bytes >= max_bytes {
                    break;
                }
                let r = record(row)?;
                bytes = bytes.saturating_add(r.text.len() + r.from_nick.len());
                out.push(r);
            }
            add_reactions(&c, &mut out).await?;
            Ok(out)
        })
    }

    fn undelivered(
        &self,
        key: [u8; 32],
        after_conv: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<(String, u64)>> {
        self.read(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT conv::text, min(id) FROM messages m WHERE to_key = $1 AND conv > $2
                         AND id > coalesce((SELECT upto FROM dm_cursors d
                                            WHERE d.key = $1 AND d.conv = m.conv), 0)
                     GROUP BY conv ORDER BY conv LIMIT $3",
                )
                .await
                .map_err(msg)?;
            let after = after_conv.unwrap_or_default();
            let rows = c
                .query(&st, &[&&key[..], &after, &(limit as i64)])
                .await
                .map_err(msg)?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn search(
        &self,
        conv: String,
        terms: Vec<String>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<Vec<Record>> {
        self.read(move |mut c| async move {
            if terms.is_empty() || limit == 0 {
                return Ok(Vec::new());
            }
            // plainto_tsquery: the words ANDed, never read as query syntax.
            let words = terms.join(" ");
            let before = before.map_or(i64::MAX, id_param);
            let tx = c.transaction().await.map_err(msg)?;
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                SEARCH_TIMEOUT.as_millis()
            ))
            .await
            .map_err(msg)?;
            let st = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages
                     WHERE conv = $1 AND id < $2 AND kind IN (0, 1)
                         AND to_tsvector('simple', text) @@ plainto_tsquery('simple', $3)
                     ORDER BY id DESC LIMIT $4"
                ))
                .await
                .map_err(msg)?;
            let rows = tx
                .query(&st, &[&conv, &before, &words, &(limit as i64)])
                .await
                .map_err(msg)?;
            tx.commit().await.map_err(msg)?;
            let mut found = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            add_reactions_of_matches(&c, &conv, &mut found).await?;
            Ok(found)
        })
    }

    fn markers(&self, key: [u8; 32], limit: usize) -> StoreFuture<Vec<(String, u64)>> {
        self.read(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT conv::text, upto FROM read_markers WHERE key = $1
                     ORDER BY conv LIMIT $2",
                )
                .await
                .map_err(msg)?;
            let rows = c
                .query(&st, &[&&key[..], &(limit as i64)])
                .await
                .map_err(msg)?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn count(&self, conv: String) -> StoreFuture<u64> {
        self.read(move |c| async move {
            let row = c
                .query_one("SELECT count(*) FROM messages WHERE conv = $1", &[&conv])
                .await
                .map_err(msg)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn last_id(&self, conv: String) -> StoreFuture<u64> {
        self.read(move |c| async move {
            let row = c
                .query_opt("SELECT last_id FROM convs WHERE conv = $1", &[&conv])
                .await
                .map_err(msg)?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
    }

    fn moderation(&self, scope: String) -> StoreFuture<Vec<ModEntry>> {
        self.read(move |c| async move {
            let rows = c
                .query(
                    "SELECT scope, kind, subject, value, set_by, ts FROM moderation
                     WHERE scope = $1",
                    &[&scope],
                )
                .await
                .map_err(msg)?;
            Ok(rows.iter().map(mod_entry).collect())
        })
    }

    fn stats(&self) -> WriterStats {
        *lock(&self.stats)
    }

    fn close(&self) -> StoreFuture<()> {
        lock(&self.tx).take();
        let writer = lock(&self.writer).take();
        let pool = self.pool.clone();
        Box::pin(async move {
            if let Some(w) = writer {
                // The writer commits what is queued, then ends.
                let _ = w.await;
            }
            pool.close();
            Ok(())
        })
    }
}

/// A row of `SELECT scope, kind, subject, value, set_by, ts FROM moderation`.
fn mod_entry(row: &tokio_postgres::Row) -> ModEntry {
    ModEntry {
        scope: row.get(0),
        kind: row.get(1),
        subject: row.get(2),
        value: row.get(3),
        by: row.get(4),
        ts_ms: row.get(5),
    }
}
