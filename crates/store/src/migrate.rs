//! Moving a history from SQLite into PostgreSQL: what `chirp migrate` runs.
//!
//! [`sqlite_to_postgres`] copies every table of a database that [`Sqlite`](crate::Sqlite)
//! wrote into one that [`Postgres`] then serves: messages with their ids, each conversation's
//! id high-water mark (`convs.last_id`: ids go on where they stopped, above those retention
//! deleted), nicks with their owners' keys and last-seen times, topics, DM delivery
//! cursors, moderation entries (room roles, bans, modes; server-wide bans), read markers
//! and reactions (with the edit, deletion and reaction events among the messages).
//!
//! - The SQLite file is opened read-only and read in one read transaction: a consistent
//!   snapshot, even of a running server's database (WAL lets it read while the server
//!   writes). What that server writes after the snapshot is not copied, though: stop the
//!   server first for a complete copy.
//! - The PostgreSQL schema is created or migrated first ([`Postgres::connect`]). A database
//!   that already holds any chirp row is refused and left untouched: the copied ids would
//!   collide with its own.
//! - Everything is copied in one PostgreSQL transaction (`COPY ... FROM STDIN BINARY`, a
//!   table after the other), its tables locked against writers from the emptiness check to
//!   the commit: the target gets all of the history or, on any failure, none of it.
//! - SQLite is read on a blocking thread, a thousand rows at a time, while the previous
//!   batch is being written to PostgreSQL.

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tracing::{debug, warn};

use crate::postgres::pg_err;
use crate::sqlite::sql_err;
use crate::{Postgres, SQLITE_MIGRATIONS, StoreConfig, StoreError};

/// Rows per batch handed from the SQLite reader to the PostgreSQL copy, and per
/// [`Progress`] report.
const BATCH: usize = 1000;

/// Batches in flight between the reader and the copy.
const QUEUE: usize = 4;

/// How long the copy waits for a chirp node writing to the target to let go of its tables.
const LOCK_TIMEOUT: &str = "10s";

/// What [`sqlite_to_postgres`] copied: rows per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages (room messages and DMs).
    pub messages: u64,
    /// Conversations' id high-water marks, including those of conversations whose messages
    /// retention deleted.
    pub conversations: u64,
    /// Nicks, with their owners' keys and last-seen times.
    pub nicks: u64,
    /// Room topics.
    pub topics: u64,
    /// DM delivery cursors (how far each recipient has been handed each DM conversation).
    pub dm_cursors: u64,
    /// Moderation entries (room roles, bans, mutes, invitations, modes; server-wide bans).
    pub moderation: u64,
    /// Read markers (how far each user has read each conversation).
    pub read_markers: u64,
    /// Reactions (one per message, emoji and reacting key).
    pub reactions: u64,
}

impl Report {
    /// Rows copied, all tables together.
    pub fn rows(&self) -> u64 {
        self.messages
            + self.conversations
            + self.nicks
            + self.topics
            + self.dm_cursors
            + self.moderation
            + self.read_markers
            + self.reactions
    }

    fn from_tables(rows: [u64; TABLES.len()]) -> Report {
        let [
            conversations,
            nicks,
            topics,
            dm_cursors,
            moderation,
            read_markers,
            reactions,
            messages,
        ] = rows;
        Report {
            messages,
            conversations,
            nicks,
            topics,
            dm_cursors,
            moderation,
            read_markers,
            reactions,
        }
    }
}

impl fmt::Display for Report {
    /// `12 messages in 3 conversations, 2 nicks, 1 topic, 1 DM cursor, 0 moderation entries`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{} in {}, {}, {}, {}, {}, {}, {}",
            n(self.messages, "message", "messages"),
            n(self.conversations, "conversation", "conversations"),
            n(self.nicks, "nick", "nicks"),
            n(self.topics, "topic", "topics"),
            n(self.dm_cursors, "DM cursor", "DM cursors"),
            n(self.moderation, "moderation entry", "moderation entries"),
            n(self.read_markers, "read marker", "read markers"),
            n(self.reactions, "reaction", "reactions"),
        )
    }
}

/// How far [`sqlite_to_postgres`] got: reported once the target is found empty (`copied` 0),
/// then after every batch written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The table being copied: `convs`, `nicks`, `topics`, `dm_cursors`, `moderation`,
    /// `read_markers`, `reactions`, then `messages` (nearly all of the rows).
    pub table: &'static str,
    /// Rows written so far, all tables together.
    pub copied: u64,
    /// Rows to write in all.
    pub total: u64,
}

/// Copies the chirp history in the SQLite database at `sqlite_path` into the PostgreSQL
/// database at `postgres_url` (created or migrated schema, no chirp row yet), in one
/// transaction; `progress` is told how far it got. See the [module documentation](self).
///
/// # Errors
///
/// - [`StoreError::Sqlite`]: the file is missing, is not a chirp database, or cannot be read.
///   Nothing was sent to PostgreSQL.
/// - [`StoreError::TooNew`]: either database was written by a newer chirp.
/// - [`StoreError::Address`]: `postgres_url` is not a PostgreSQL address.
/// - [`StoreError::Postgres`]: PostgreSQL cannot be reached, its database already holds a
///   chirp history ("nothing was copied"), or the copy failed. The transaction is then rolled
///   back: no row was copied (the schema may have been created).
pub async fn sqlite_to_postgres(
    sqlite_path: &Path,
    postgres_url: &str,
    mut progress: impl FnMut(Progress),
) -> Result<Report, StoreError> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let path = sqlite_path.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_sqlite(&path, &tx));
    let result = copy(&mut rx, postgres_url, &mut progress).await;
    // After a failure the reader stops at its next batch, which nobody receives any more.
    // Waiting for it closes the SQLite file before this returns.
    drop(rx);
    let joined = reader.await;
    let report = result?;
    joined.map_err(|e| StoreError::Commit(format!("the SQLite reader failed: {e}")))?;
    Ok(report)
}

/// A column's type, the same in both schemas (PostgreSQL's names).
#[derive(Debug, Clone, Copy)]
enum Col {
    Text,
    Int8,
    Int2,
    Bytea,
    Bool,
}

impl Col {
    fn pg(self) -> Type {
        match self {
            Col::Text => Type::TEXT,
            Col::Int8 => Type::INT8,
            Col::Int2 => Type::INT2,
            Col::Bytea => Type::BYTEA,
            Col::Bool => Type::BOOL,
        }
    }
}

/// What an SQLite file of a schema older than a column reads for it.
#[derive(Debug, Clone, Copy)]
enum Older {
    Null,
    False,
    /// The time of the copy, in milliseconds since the epoch.
    Now,
}

/// A table to copy: every column of it, under the same names in both schemas.
#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    /// The primary key: the order SQLite reads the rows in.
    key: &'static str,
    /// The SQLite schema version that added the table: in an older file it is empty (the
    /// file is only read, never upgraded).
    since: i64,
    /// Columns a later schema added (column, that schema, what an older file reads instead).
    added: &'static [(&'static str, i64, Older)],
}

impl Table {
    /// What to select from a file of schema `version` for `column`, at `now_ms`.
    fn select(&self, column: &'static str, version: i64, now_ms: i64) -> String {
        match self.added.iter().find(|a| a.0 == column && version < a.1) {
            Some((_, _, Older::Null)) => "NULL".to_owned(),
            Some((_, _, Older::False)) => "0".to_owned(),
            Some((_, _, Older::Now)) => now_ms.to_string(),
            None => column.to_owned(),
        }
    }
}

/// Every table of the schema (`SQLITE_MIGRATIONS`, `POSTGRES_MIGRATIONS`), the small ones first
/// and `messages`, nearly all of the rows, last.
const TABLES: [Table; 8] = [
    Table {
        name: "convs",
        columns: &[("conv", Col::Text), ("last_id", Col::Int8)],
        key: "conv",
        since: 1,
        added: &[],
    },
    Table {
        name: "nicks",
        columns: &[
            ("fold", Col::Text),
            ("nick", Col::Text),
            ("key", Col::Bytea),
            ("seen", Col::Int8),
        ],
        key: "fold",
        since: 1,
        added: &[
            // Schema 1 had no last-seen times: as SQLite's migration 2 does, its nicks count
            // as seen now, so that none expires sooner than a full expiry period after the
            // move.
            ("seen", 2, Older::Now),
        ],
    },
    Table {
        name: "topics",
        columns: &[
            ("room", Col::Text),
            ("topic", Col::Text),
            ("set_by", Col::Text),
            ("ts", Col::Int8),
        ],
        key: "room",
        since: 1,
        added: &[],
    },
    Table {
        name: "dm_cursors",
        columns: &[
            ("key", Col::Bytea),
            ("conv", Col::Text),
            ("upto", Col::Int8),
        ],
        key: "key, conv",
        since: 1,
        added: &[],
    },
    Table {
        name: "moderation",
        columns: &[
            ("scope", Col::Text),
            ("kind", Col::Text),
            ("subject", Col::Text),
            ("value", Col::Text),
            ("set_by", Col::Text),
            ("ts", Col::Int8),
        ],
        key: "scope, kind, subject",
        since: 4,
        added: &[],
    },
    Table {
        name: "read_markers",
        columns: &[
            ("key", Col::Bytea),
            ("conv", Col::Text),
            ("upto", Col::Int8),
        ],
        key: "key, conv",
        since: 5,
        added: &[],
    },
    Table {
        name: "reactions",
        columns: &[
            ("conv", Col::Text),
            ("id", Col::Int8),
            ("emoji", Col::Text),
            ("key", Col::Bytea),
            ("ts", Col::Int8),
        ],
        key: "conv, id, emoji, key",
        since: 6,
        added: &[],
    },
    Table {
        name: "messages",
        columns: &[
            ("conv", Col::Text),
            ("id", Col::Int8),
            ("ts", Col::Int8),
            ("from_key", Col::Bytea),
            ("from_nick", Col::Text),
            ("to_key", Col::Bytea),
            ("to_nick", Col::Text),
            ("kind", Col::Int2),
            ("text", Col::Text),
            ("client_id", Col::Int8),
            ("client_seq", Col::Int8),
            ("target", Col::Int8),
            ("edited", Col::Bool),
            ("deleted", Col::Bool),
            ("count", Col::Int8),
        ],
        key: "conv, id",
        since: 1,
        added: &[
            // Schema 6 added edits, deletions and reactions.
            ("target", 6, Older::Null),
            ("count", 6, Older::Null),
            ("edited", 6, Older::False),
            ("deleted", 6, Older::False),
        ],
    },
];

/// One value read from SQLite, typed for PostgreSQL (`None`: NULL; PostgreSQL's NOT NULL
/// constraints refuse one where it does not belong).
#[derive(Debug)]
enum Cell {
    Text(Option<String>),
    Int8(Option<i64>),
    Int2(Option<i16>),
    Bytea(Option<Vec<u8>>),
    Bool(Option<bool>),
}

impl Cell {
    fn read(row: &rusqlite::Row<'_>, i: usize, col: Col) -> rusqlite::Result<Cell> {
        Ok(match col {
            Col::Text => Cell::Text(row.get(i)?),
            Col::Int8 => Cell::Int8(row.get(i)?),
            // Out of range is an error, not a wrapped value.
            Col::Int2 => Cell::Int2(row.get(i)?),
            Col::Bytea => Cell::Bytea(row.get(i)?),
            Col::Bool => Cell::Bool(row.get(i)?),
        })
    }

    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Text(v) => v,
            Cell::Int8(v) => v,
            Cell::Int2(v) => v,
            Cell::Bytea(v) => v,
            Cell::Bool(v) => v,
        }
    }
}

/// What the SQLite reader hands the copy, in this order: the totals, then every table's rows
/// in [`TABLES`] order.
#[derive(Debug)]
enum Read {
    /// Rows of each table (in [`TABLES`] order) in the snapshot.
    Totals([u64; TABLES.len()]),
    /// Rows of `TABLES[table]`, one cell per column each, row after row.
    Rows { table: usize, cells: Vec<Cell> },
}

type ReadTx = mpsc::Sender<Result<Read, StoreError>>;

/// The blocking reader: the whole database, from one snapshot, into `out`.
fn read_sqlite(path: &Path, out: &ReadTx) {
    if let Err(e) = read_tables(path, out) {
        // Fails only when nobody listens any more (the copy failed first): nothing to tell.
        let _ = out.blocking_send(Err(e));
    }
}

/// An SQLite error of ours about the file at `path`.
fn file_err(path: &Path, code: std::ffi::c_int, message: String) -> StoreError {
    StoreError::Sqlite {
        path: path.to_owned(),
        source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message)),
    }
}

fn read_tables(path: &Path, out: &ReadTx) -> Result<(), StoreError> {
    let err = sql_err(path);
    // Read-only does not create a missing file, but its error ("unable to open database
    // file") does not say why.
    if !path.is_file() {
        return Err(file_err(
            path,
            rusqlite::ffi::SQLITE_CANTOPEN,
            "no such file".into(),
        ));
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
    // One read transaction: every table from the same snapshot, whatever a running server
    // commits meanwhile.
    let tx = conn.transaction().map_err(&err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(&err)?;
    let known = SQLITE_MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    if version < 1 {
        return Err(file_err(
            path,
            rusqlite::ffi::SQLITE_NOTADB,
            "not a chirp database (no schema version)".into(),
        ));
    }
    let send = |item| out.blocking_send(Ok(item)).map_err(|_| StoreError::Stopped);
    // A table a newer schema added is empty in an older file. (The search index of schema 5
    // is not copied: PostgreSQL builds its own.)
    let present = |table: &Table| version >= table.since;
    let mut totals = [0; TABLES.len()];
    for (total, table) in totals.iter_mut().zip(&TABLES) {
        if !present(table) {
            continue;
        }
        let n: i64 = tx
            .query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| {
                r.get(0)
            })
            .map_err(&err)?;
        *total = n as u64;
    }
    send(Read::Totals(totals))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (t, table) in TABLES.iter().enumerate() {
        if !present(table) {
            continue;
        }
        let width = table.columns.len();
        let select: Vec<String> = table
            .columns
            .iter()
            .map(|&(name, _)| table.select(name, version, now_ms))
            .collect();
        let mut st = tx
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY {}",
                select.join(", "),
                table.name,
                table.key
            ))
            .map_err(&err)?;
        let mut rows = st.query([]).map_err(&err)?;
        let mut cells = Vec::with_capacity(BATCH * width);
        while let Some(row) = rows.next().map_err(&err)? {
            for (i, &(_, col)) in table.columns.iter().enumerate() {
                cells.push(Cell::read(row, i, col).map_err(&err)?);
            }
            if cells.len() >= BATCH * width {
                let full = std::mem::replace(&mut cells, Vec::with_capacity(BATCH * width));
                send(Read::Rows {
                    table: t,
                    cells: full,
                })?;
            }
        }
        if !cells.is_empty() {
            send(Read::Rows { table: t, cells })?;
        }
    }
    Ok(())
}

/// The PostgreSQL side: waits for the reader's totals (a bad file fails before PostgreSQL is
/// contacted), migrates the schema, copies.
async fn copy(
    rx: &mut mpsc::Receiver<Result<Read, StoreError>>,
    url: &str,
    progress: &mut impl FnMut(Progress),
) -> Result<Report, StoreError> {
    let totals = match rx.recv().await {
        Some(Ok(Read::Totals(t))) => t,
        Some(Err(e)) => return Err(e),
        Some(Ok(Read::Rows { .. })) | None => {
            return Err(StoreError::Commit(
                "the SQLite reader stopped before counting the rows".into(),
            ));
        }
    };
    let pg = Postgres::connect(url, StoreConfig::default()).await?;
    let result = copy_into(&pg, rx, totals, progress).await;
    // Ends the (idle) writer task and the pool; it cannot fail.
    let _ = crate::Storage::close(&pg).await;
    result
}

async fn copy_into(
    pg: &Postgres,
    rx: &mut mpsc::Receiver<Result<Read, StoreError>>,
    totals: [u64; TABLES.len()],
    progress: &mut impl FnMut(Progress),
) -> Result<Report, StoreError> {
    let target = pg.target();
    let err = pg_err(target);
    let mut c = pg.client().await?;
    let tx = c.transaction().await.map_err(&err)?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    // EXCLUSIVE: readers go on, writers wait until the commit. A node started on the target
    // meanwhile cannot slip a row in between the check and the copy.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';
         LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .await
    .map_err(&err)?;
    let held: Vec<String> = tx
        .query(
            &names
                .iter()
                .map(|n| format!("SELECT '{n}'::text WHERE EXISTS (SELECT 1 FROM {n})"))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
            &[],
        )
        .await
        .map_err(&err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !held.is_empty() {
        return Err(StoreError::Postgres {
            target: target.to_owned(),
            message: format!(
                "the database already holds a chirp history (rows in {}): nothing was \
                 copied; migrate into a new, empty database",
                held.join(", ")
            ),
        });
    }
    let total: u64 = totals.iter().sum();
    progress(Progress {
        table: TABLES[0].name,
        copied: 0,
        total,
    });
    let mut copied = [0u64; TABLES.len()];
    let mut done = 0u64;
    // The COPY in progress: its table, and its writer.
    let mut open: Option<(usize, Pin<Box<BinaryCopyInWriter>>)> = None;
    while let Some(item) = rx.recv().await {
        let (t, cells) = match item? {
            Read::Rows { table, cells } => (table, cells),
            Read::Totals(_) => {
                return Err(StoreError::Commit("the SQLite reader counted twice".into()));
            }
        };
        let table = &TABLES[t];
        let w = match &mut open {
            Some((ot, w)) if *ot == t => w,
            _ => {
                if let Some((ot, mut w)) = open.take() {
                    copied[ot] = w.as_mut().finish().await.map_err(&err)?;
                }
                let columns: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
                let types: Vec<Type> = table.columns.iter().map(|c| c.1.pg()).collect();
                let sink = tx
                    .copy_in(&format!(
                        "COPY {} ({}) FROM STDIN BINARY",
                        table.name,
                        columns.join(", ")
                    ))
                    .await
                    .map_err(&err)?;
                &mut open
                    .insert((t, Box::pin(BinaryCopyInWriter::new(sink, &types))))
                    .1
            }
        };
        let width = table.columns.len();
        for row in cells.chunks_exact(width) {
            // One value per column, as `types` has (`write_raw` panics otherwise): the reader
            // read `width` cells per row.
            w.as_mut()
                .write_raw(row.iter().map(Cell::sql))
                .await
                .map_err(&err)?;
        }
        done += (cells.len() / width) as u64;
        progress(Progress {
            table: table.name,
            copied: done,
            total,
        });
    }
    if let Some((ot, mut w)) = open.take() {
        copied[ot] = w.as_mut().finish().await.map_err(&err)?;
    }
    // The reader ends its channel after the last row, or early after an error (sent first,
    // and returned above) or a crash: only a copy of every counted row is committed.
    if copied != totals {
        return Err(StoreError::Commit(format!(
            "copied {copied:?} rows of {totals:?} (tables {names:?}): the SQLite reader \
             stopped early; nothing was copied"
        )));
    }
    // Ids go on above every copied one: each conversation's high-water mark is at least its
    // highest id (as SQLite keeps it; a database that does not is refused, not repaired).
    let behind: i64 = tx
        .query_one(
            "SELECT count(*) FROM (SELECT conv, max(id) AS top FROM messages GROUP BY conv) m
             LEFT JOIN convs c ON c.conv = m.conv
             WHERE c.last_id IS NULL OR c.last_id < m.top",
            &[],
        )
        .await
        .map_err(&err)?
        .get(0);
    if behind > 0 {
        return Err(StoreError::Postgres {
            target: target.to_owned(),
            message: format!(
                "in {behind} conversation(s) of the SQLite database a message id is above the \
                 conversation's last id (an inconsistent database): nothing was copied"
            ),
        });
    }
    tx.commit().await.map_err(&err)?;
    debug!(rows = done, "history copied");
    // Planner statistics for the new rows now, rather than at autovacuum's next round.
    if let Err(e) = c
        .batch_execute(&format!("ANALYZE {}", names.join(", ")))
        .await
    {
        warn!(error = %e, "ANALYZE after the copy failed");
    }
    Ok(Report::from_tables(copied))
}
