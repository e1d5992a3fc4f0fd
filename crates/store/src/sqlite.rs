//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`, one writer thread that
//! commits in groups, and a read connection for the server's reads.
//!
//! - [`Sqlite::open`] opens (or creates, or migrates) the database and starts the writer
//!   thread. Schema versions live in `PRAGMA user_version`; [`MIGRATIONS`] lists them in order.
//! - The writer takes every batch that queued up while the previous commit was running into
//!   one transaction: under load one fsync covers many messages (group commit).
//! - [`Reader`]: a separate read connection (WAL lets it read while the writer writes). The
//!   [`Storage`] reads run on tokio's blocking pool, one at a time on one such connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::{
    Amend, Batch, Change, Loaded, ModEntry, NewMessage, Op, Outcome, Record, Refusal, Retention,
    SEARCH_TIMEOUT, Storage, StoreConfig, StoreError, StoreFuture, WriterStats, event_record, kind,
};

/// Schema migrations; entry `i` upgrades `user_version` `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: messages, conversation high-water marks, nicks, topics, DM delivery cursors.
    "CREATE TABLE messages (
        conv TEXT NOT NULL,
        id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        from_key BLOB NOT NULL,
        from_nick TEXT NOT NULL,
        to_key BLOB,
        to_nick TEXT,
        kind INTEGER NOT NULL,
        text TEXT NOT NULL,
        client_id INTEGER,
        client_seq INTEGER,
        PRIMARY KEY (conv, id)
    ) WITHOUT ROWID;
    CREATE INDEX messages_to ON messages (to_key, conv, id) WHERE to_key IS NOT NULL;
    CREATE INDEX messages_ts ON messages (ts);
    -- The highest id ever given in a conversation: ids never go back, even after retention
    -- deleted every message of a conversation.
    CREATE TABLE convs (conv TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE nicks (fold TEXT PRIMARY KEY, nick TEXT NOT NULL, key BLOB NOT NULL UNIQUE);
    CREATE TABLE topics (room TEXT PRIMARY KEY, topic TEXT NOT NULL, set_by TEXT NOT NULL,
        ts INTEGER NOT NULL);
    CREATE TABLE dm_cursors (key BLOB NOT NULL, conv TEXT NOT NULL, upto INTEGER NOT NULL,
        PRIMARY KEY (key, conv)) WITHOUT ROWID;",
    // 2: when each nick's owner was last seen connected (ms since the epoch), for nick
    // expiry. Nicks bound before this version count as seen at the upgrade, so that none
    // expires sooner than a full expiry period after it.
    "ALTER TABLE nicks ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
    UPDATE nicks SET seen = unixepoch() * 1000;",
    // 3: messages by sender and client reference, to recognise a resent message in the
    // database (a resend may reach a server that never saw the original).
    "CREATE INDEX messages_ref ON messages (from_key, client_id, client_seq)
        WHERE client_id IS NOT NULL;",
    // 4: moderation: room roles, bans, mutes, invitations and modes; server-wide bans
    // (scope '').
    "CREATE TABLE moderation (scope TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
        value TEXT NOT NULL, set_by TEXT NOT NULL, ts INTEGER NOT NULL,
        PRIMARY KEY (scope, kind, subject)) WITHOUT ROWID;",
    // 5: read markers, and full-text search (FTS5) over plain messages and actions.
    // `messages` has no rowid, so `fts_rows` gives each indexed message one, in the order of
    // its conversation's ids (the newest match of a conversation is the index's highest
    // rowid). The index holds no copy of the texts (contentless) and is kept in step with
    // `messages` by triggers: every insert, delete (retention) and update of a text (an
    // edit, or a deletion that blanks it) reaches it, whoever writes.
    "CREATE TABLE read_markers (key BLOB NOT NULL, conv TEXT NOT NULL, upto INTEGER NOT NULL,
        PRIMARY KEY (key, conv)) WITHOUT ROWID;
    CREATE TABLE fts_rows (rowid INTEGER PRIMARY KEY, conv TEXT NOT NULL, id INTEGER NOT NULL,
        UNIQUE (conv, id));
    CREATE VIRTUAL TABLE messages_fts USING fts5(text, content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 0');
    INSERT INTO fts_rows (conv, id) SELECT conv, id FROM messages WHERE kind IN (0, 1)
        ORDER BY conv, id;
    INSERT INTO messages_fts (rowid, text) SELECT p.rowid, m.text FROM fts_rows p
        JOIN messages m ON m.conv = p.conv AND m.id = p.id;
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.kind IN (0, 1) BEGIN
        INSERT INTO fts_rows (conv, id) VALUES (new.conv, new.id);
        INSERT INTO messages_fts (rowid, text)
            SELECT rowid, new.text FROM fts_rows WHERE conv = new.conv AND id = new.id;
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.kind IN (0, 1) BEGIN
        DELETE FROM messages_fts WHERE rowid =
            (SELECT rowid FROM fts_rows WHERE conv = old.conv AND id = old.id);
        DELETE FROM fts_rows WHERE conv = old.conv AND id = old.id;
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
        DELETE FROM messages_fts WHERE rowid =
            (SELECT rowid FROM fts_rows WHERE conv = old.conv AND id = old.id);
        INSERT INTO messages_fts (rowid, text)
            SELECT rowid, new.text FROM fts_rows WHERE conv = new.conv AND id = new.id;
    END;",
    // 6: edits, deletions and reactions. `target`: the message an edit, deletion or
    // reaction event is about; `edited`/`deleted`: a message's state (a deleted message's
    // text is overwritten with ''); `count`: a reaction event's emoji count after it. One
    // row per reaction (message, emoji, reacting key).
    //
    // The search index is made again so that no word of a deleted (or edited-away) text
    // stays in the file: migration 5's `contentless_delete` index only marks a row deleted
    // (its words stay in the index's pages until a merge). This one is contentless too, but
    // its rows are taken out with FTS5's `delete` command, given the text the row was indexed
    // with (the trigger's `old.text`, always what the index holds), and its `secure-delete`
    // setting (kept in the index) removes them from the pages at once; with SQLite's
    // `secure_delete` the freed bytes are overwritten.
    "ALTER TABLE messages ADD COLUMN target INTEGER;
    ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN count INTEGER;
    CREATE INDEX messages_target ON messages (conv, target) WHERE target IS NOT NULL;
    CREATE TABLE reactions (conv TEXT NOT NULL, id INTEGER NOT NULL, emoji TEXT NOT NULL,
        key BLOB NOT NULL, ts INTEGER NOT NULL,
        PRIMARY KEY (conv, id, emoji, key)) WITHOUT ROWID;
    DROP TRIGGER messages_fts_insert;
    DROP TRIGGER messages_fts_delete;
    DROP TRIGGER messages_fts_update;
    DROP TABLE messages_fts;
    CREATE VIRTUAL TABLE messages_fts USING fts5(text, content = '',
        tokenize = 'unicode61 remove_diacritics 0');
    INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);
    INSERT INTO messages_fts (rowid, text) SELECT p.rowid, m.text FROM fts_rows p
        JOIN messages m ON m.conv = p.conv AND m.id = p.id;
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.kind IN (0, 1) BEGIN
        INSERT INTO fts_rows (conv, id) VALUES (new.conv, new.id);
        INSERT INTO messages_fts (rowid, text)
            SELECT rowid, new.text FROM fts_rows WHERE conv = new.conv AND id = new.id;
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.kind IN (0, 1) BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            SELECT 'delete', rowid, old.text FROM fts_rows WHERE conv = old.conv AND id = old.id;
        DELETE FROM fts_rows WHERE conv = old.conv AND id = old.id;
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
        WHEN old.kind IN (0, 1) BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            SELECT 'delete', rowid, old.text FROM fts_rows WHERE conv = old.conv AND id = old.id;
        INSERT INTO messages_fts (rowid, text)
            SELECT rowid, new.text FROM fts_rows WHERE conv = new.conv AND id = new.id;
    END;",
];

pub(crate) fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql_err(path))?;
    // WAL: readers do not block the writer and a commit is one append + fsync of the log.
    // synchronous=FULL: the WAL is fsynced at every commit, so a committed transaction
    // survives a crash of the process or of the machine.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err(path))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sql_err(path))?;
    // A deleted message's text (and whatever retention deletes) is overwritten with zeros
    // in the file, not left in free space where a copy of the file would still show it.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(sql_err(path))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err(path))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(sql_err(path))?;
        tx.execute_batch(sql).map_err(sql_err(path))?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(sql_err(path))?;
        tx.commit().map_err(sql_err(path))?;
        debug!(version = i + 1, "database migrated");
    }
    Ok(())
}

enum Req {
    Write(Vec<Op>, oneshot::Sender<Result<Vec<Outcome>, StoreError>>),
    Prune(i64, oneshot::Sender<Result<u64, StoreError>>),
    Retention(Retention),
}

/// The SQLite database: a writer thread plus [`Reader`]s.
#[derive(Debug)]
pub struct Sqlite {
    path: PathBuf,
    /// `None` once closed.
    tx: Mutex<Option<mpsc::Sender<Req>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Mutex<WriterStats>>,
    /// The read connection of the [`Storage`] reads (opened at the first).
    reader: Arc<Mutex<Option<Reader>>>,
}

impl Sqlite {
    /// Opens or creates the database at `path`, migrates it, and starts the writer thread.
    pub fn open(path: &Path, config: StoreConfig) -> Result<Sqlite, StoreError> {
        let mut conn = open_conn(path)?;
        migrate(&mut conn, path)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let writer = Writer {
            conn,
            path: path.to_owned(),
            rx,
            config,
            stats: Arc::clone(&stats),
        };
        let thread = std::thread::Builder::new()
            .name("chirp-store".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Sqlite {
            path: path.to_owned(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            stats,
            reader: Arc::new(Mutex::new(None)),
        })
    }

    /// Queues `ops` to be written in one transaction (possibly shared with other batches). The
    /// receiver resolves after the commit returned, so the data is on disk.
    pub fn write(&self, ops: Vec<Op>) -> oneshot::Receiver<Result<Vec<Outcome>, StoreError>> {
        let (done, rx) = oneshot::channel();
        match &*lock(&self.tx) {
            Some(tx) => {
                if let Err(mpsc::SendError(Req::Write(_, done))) = tx.send(Req::Write(ops, done)) {
                    let _ = done.send(Err(StoreError::Stopped));
                }
            }
            None => {
                let _ = done.send(Err(StoreError::Stopped));
            }
        }
        rx
    }

    /// Applies the retention policy as of `now_ms`; resolves to the number of messages deleted.
    pub fn prune(&self, now_ms: i64) -> oneshot::Receiver<Result<u64, StoreError>> {
        let (done, rx) = oneshot::channel();
        match &*lock(&self.tx) {
            Some(tx) => {
                if let Err(mpsc::SendError(Req::Prune(_, done))) = tx.send(Req::Prune(now_ms, done))
                {
                    let _ = done.send(Err(StoreError::Stopped));
                }
            }
            None => {
                let _ = done.send(Err(StoreError::Stopped));
            }
        }
        rx
    }

    /// Replaces the retention policy for the prunes queued after this call.
    pub fn set_retention(&self, retention: Retention) {
        if let Some(tx) = &*lock(&self.tx) {
            // A stopped writer prunes nothing more.
            let _ = tx.send(Req::Retention(retention));
        }
    }

    /// A new read connection.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.path)
    }

    /// Stops the writer after it has committed everything queued, and waits for it (blocking).
    pub fn shutdown(&self) {
        lock(&self.tx).take();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    /// Runs `read` on the read connection, on tokio's blocking pool.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let reader = Arc::clone(&self.reader);
        let path = self.path.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut r = lock(&reader);
            if r.is_none() {
                *r = Some(Reader::open(&path)?);
            }
            match &*r {
                Some(r) => read(r),
                None => Err(StoreError::Stopped),
            }
        });
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::Commit(format!("the read task failed: {e}")))?
        })
    }
}

/// A lock whose holder panicked is still usable: every value behind one is whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn answer<T: Send + 'static>(rx: oneshot::Receiver<Result<T, StoreError>>) -> StoreFuture<T> {
    Box::pin(async move { rx.await.map_err(|_| StoreError::Stopped)? })
}

impl Storage for Sqlite {
    fn write(&self, ops: Vec<Op>) -> StoreFuture<Vec<Outcome>> {
        answer(Sqlite::write(self, ops))
    }

    fn prune(&self, now_ms: i64) -> StoreFuture<u64> {
        answer(Sqlite::prune(self, now_ms))
    }

    fn set_retention(&self, retention: Retention) {
        Sqlite::set_retention(self, retention);
    }

    fn load(&self, recent: usize) -> StoreFuture<Loaded> {
        self.read(move |r| r.load(recent))
    }

    fn history(&self, conv: String, before: Option<u64>, limit: usize) -> StoreFuture<Vec<Record>> {
        self.read(move |r| r.history(&conv, before, limit))
    }

    fn after(
        &self,
        conv: String,
        after: u64,
        upto: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreFuture<Vec<Record>> {
        self.read(move |r| r.after(&conv, after, upto, limit, max_bytes))
    }

    fn undelivered(
        &self,
        key: [u8; 32],
        after_conv: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<(String, u64)>> {
        self.read(move |r| r.undelivered(&key, after_conv.as_deref(), limit))
    }

    fn search(
        &self,
        conv: String,
        terms: Vec<String>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<Vec<Record>> {
        self.read(move |r| r.search(&conv, &terms, before, limit))
    }

    fn markers(&self, key: [u8; 32], limit: usize) -> StoreFuture<Vec<(String, u64)>> {
        self.read(move |r| r.markers(&key, limit))
    }

    fn count(&self, conv: String) -> StoreFuture<u64> {
        self.read(move |r| r.count(&conv))
    }

    fn last_id(&self, conv: String) -> StoreFuture<u64> {
        self.read(move |r| r.last_id(&conv))
    }

    fn moderation(&self, scope: String) -> StoreFuture<Vec<ModEntry>> {
        self.read(move |r| r.moderation(&scope))
    }

    fn stats(&self) -> WriterStats {
        *lock(&self.stats)
    }

    fn close(&self) -> StoreFuture<()> {
        lock(&self.tx).take();
        let thread = lock(&self.thread).take();
        Box::pin(async move {
            if let Some(t) = thread {
                // Joined on the blocking pool: the writer commits what is queued first.
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            Ok(())
        })
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    rx: mpsc::Receiver<Req>,
    config: StoreConfig,
    stats: Arc<Mutex<WriterStats>>,
}

impl Writer {
    fn run(mut self) {
        // Blocks for the first request; then takes whatever queued meanwhile, up to max_batch
        // operations, into the same transaction. Ends when every sender is gone and the queue
        // is drained.
        while let Ok(first) = self.rx.recv() {
            let mut batch = Vec::new();
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
                        self.commit(std::mem::take(&mut batch));
                        ops = 0;
                        let _ = done.send(self.prune(now));
                    }
                    Req::Retention(r) => self.config.retention = r,
                }
                if ops < self.config.max_batch {
                    next = self.rx.try_recv().ok();
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Batch>) {
        if batch.is_empty() {
            return;
        }
        let n: usize = batch.iter().map(|(o, _)| o.len()).sum();
        let result = self.apply(batch.iter().flat_map(|(o, _)| o.iter()));
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

    fn apply<'a>(&mut self, ops: impl Iterator<Item = &'a Op>) -> Result<Vec<Outcome>, StoreError> {
        let path = self.path.clone();
        let err = sql_err(&path);
        // IMMEDIATE: the write lock is taken at BEGIN, waiting for it (the busy timeout) if
        // another connection holds it. A deferred transaction that read first (the duplicate
        // check) would get SQLITE_BUSY at once on its first write instead, with no wait.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut out = Vec::new();
        // Each conversation's last id as this transaction has it: read once, counted here,
        // written back once at the end (a message costs its duplicate check and its insert,
        // not a `convs` update as well). Not kept across transactions: another connection
        // may write in between.
        let mut last: HashMap<&str, i64> = HashMap::new();
        {
            let mut dup = tx
                .prepare_cached(
                    "SELECT conv, id, ts FROM messages
                     WHERE from_key = ?1 AND client_id = ?2 AND client_seq = ?3",
                )
                .map_err(&err)?;
            let mut last_id = tx
                .prepare_cached("SELECT last_id FROM convs WHERE conv = ?1")
                .map_err(&err)?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO messages (conv, id, ts, from_key, from_nick, to_key,
                     to_nick, kind, text, client_id, client_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(&err)?;
            let mut ins_event = tx
                .prepare_cached(
                    "INSERT INTO messages (conv, id, ts, from_key, from_nick, to_key,
                     to_nick, kind, text, target, count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(&err)?;
            // The next id of `conv` in this transaction.
            let mut next_id = |conv: &'a str| -> Result<i64, StoreError> {
                Ok(match last.get_mut(conv) {
                    Some(id) => {
                        *id += 1;
                        *id
                    }
                    None => {
                        let id = last_id
                            .query_row(params![conv], |r| r.get::<_, i64>(0))
                            .optional()
                            .map_err(&err)?
                            .unwrap_or(0)
                            + 1;
                        last.insert(conv, id);
                        id
                    }
                })
            };
            for op in ops {
                let outcome = match op {
                    Op::Message(m) => {
                        let NewMessage {
                            conv,
                            ts_ms,
                            from_key,
                            from_nick,
                            to_key,
                            to_nick,
                            kind,
                            text,
                            client_ref,
                        } = m;
                        let cref = client_ref.map(|(a, b)| (a as i64, b as i64));
                        let stored = match cref {
                            Some((cid, cseq)) => dup
                                .query_row(params![&from_key[..], cid, cseq], |r| {
                                    Ok(Outcome::Duplicate {
                                        conv: r.get(0)?,
                                        id: r.get::<_, i64>(1)? as u64,
                                        ts_ms: r.get(2)?,
                                    })
                                })
                                .optional()
                                .map_err(&err)?,
                            None => None,
                        };
                        match stored {
                            Some(d) => d,
                            None => {
                                let id = next_id(conv)?;
                                ins.execute(params![
                                    conv,
                                    id,
                                    ts_ms,
                                    &from_key[..],
                                    from_nick,
                                    to_key.as_ref().map(|k| &k[..]),
                                    to_nick,
                                    kind,
                                    text,
                                    cref.map(|c| c.0),
                                    cref.map(|c| c.1),
                                ])
                                .map_err(&err)?;
                                Outcome::Stored { id: id as u64 }
                            }
                        }
                    }
                    Op::Amend(a) => match amend(&tx, a).map_err(&err)? {
                        Err(refusal) => Outcome::Refused(refusal),
                        Ok(count) => {
                            let id = next_id(&a.conv)?;
                            let record = event_record(a, id as u64, count);
                            ins_event
                                .execute(params![
                                    record.conv,
                                    id,
                                    record.ts_ms,
                                    &record.from_key[..],
                                    record.from_nick,
                                    record.to_key.as_ref().map(|k| &k[..]),
                                    record.to_nick,
                                    record.kind,
                                    record.text,
                                    a.target as i64,
                                    count.map(|n| n as i64),
                                ])
                                .map_err(&err)?;
                            Outcome::Amended(Box::new(record))
                        }
                    },
                    Op::SetNick {
                        nick,
                        fold,
                        key,
                        seen_ms,
                    } => {
                        let holder: Option<Vec<u8>> = tx
                            .query_row(
                                "SELECT key FROM nicks WHERE fold = ?1",
                                params![fold],
                                |r| r.get(0),
                            )
                            .optional()
                            .map_err(&err)?;
                        if holder.is_some_and(|h| h != key[..]) {
                            Outcome::NickTaken
                        } else {
                            tx.execute("DELETE FROM nicks WHERE key = ?1", params![&key[..]])
                                .map_err(&err)?;
                            tx.execute(
                                "INSERT INTO nicks (fold, nick, key, seen) VALUES (?1, ?2, ?3, ?4)",
                                params![fold, nick, &key[..], seen_ms],
                            )
                            .map_err(&err)?;
                            Outcome::NickBound
                        }
                    }
                    Op::Seen { key, ts_ms } => {
                        tx.execute(
                            "UPDATE nicks SET seen = max(seen, ?2) WHERE key = ?1",
                            params![&key[..], ts_ms],
                        )
                        .map_err(&err)?;
                        Outcome::Done
                    }
                    Op::ReleaseNick { key, seen_by } => {
                        let seen: Option<i64> = tx
                            .query_row(
                                "SELECT seen FROM nicks WHERE key = ?1",
                                params![&key[..]],
                                |r| r.get(0),
                            )
                            .optional()
                            .map_err(&err)?;
                        match seen {
                            Some(seen_ms) if seen_ms > *seen_by => Outcome::NickKept { seen_ms },
                            Some(_) => {
                                tx.execute("DELETE FROM nicks WHERE key = ?1", params![&key[..]])
                                    .map_err(&err)?;
                                Outcome::Done
                            }
                            None => Outcome::Done,
                        }
                    }
                    Op::SetTopic {
                        room,
                        topic,
                        by,
                        ts_ms,
                    } => {
                        tx.execute(
                            "INSERT OR REPLACE INTO topics (room, topic, set_by, ts)
                             VALUES (?1, ?2, ?3, ?4)",
                            params![room, topic, by, ts_ms],
                        )
                        .map_err(&err)?;
                        Outcome::Done
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
                            "INSERT OR REPLACE INTO moderation
                             (scope, kind, subject, value, set_by, ts)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![scope, kind, subject, value, by, ts_ms],
                        )
                        .map_err(&err)?;
                        Outcome::Done
                    }
                    Op::ClearMod {
                        scope,
                        kind,
                        subject,
                    } => {
                        tx.execute(
                            "DELETE FROM moderation WHERE scope = ?1 AND kind = ?2 AND subject = ?3",
                            params![scope, kind, subject],
                        )
                        .map_err(&err)?;
                        Outcome::Done
                    }
                    Op::ReadMarker { key, conv, upto } => {
                        tx.execute(
                            "INSERT INTO read_markers (key, conv, upto) VALUES (?1, ?2, ?3)
                             ON CONFLICT (key, conv) DO UPDATE SET upto = max(upto, excluded.upto)",
                            params![&key[..], conv, i64::try_from(*upto).unwrap_or(i64::MAX)],
                        )
                        .map_err(&err)?;
                        Outcome::Done
                    }
                    Op::DmCursor { key, conv, upto } => {
                        tx.execute(
                            "INSERT INTO dm_cursors (key, conv, upto) VALUES (?1, ?2, ?3)
                             ON CONFLICT (key, conv) DO UPDATE SET upto = max(upto, excluded.upto)",
                            params![&key[..], conv, *upto as i64],
                        )
                        .map_err(&err)?;
                        Outcome::Done
                    }
                };
                out.push(outcome);
            }
        }
        if !last.is_empty() {
            let mut set = tx
                .prepare_cached(
                    "INSERT INTO convs (conv, last_id) VALUES (?1, ?2)
                     ON CONFLICT (conv) DO UPDATE SET last_id = excluded.last_id",
                )
                .map_err(&err)?;
            for (conv, id) in &last {
                set.execute(params![conv, id]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        Ok(out)
    }

    fn prune(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let r = self.config.retention;
        let tx = self.conn.transaction().map_err(&err)?;
        let mut deleted = 0u64;
        if let Some(age) = r.max_age {
            let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            deleted += tx
                .execute("DELETE FROM messages WHERE ts < ?1", params![cutoff])
                .map_err(&err)? as u64;
        }
        if let Some(max) = r.max_per_conv {
            deleted += tx
                .execute(
                    // Ids are dense within a conversation, so "the newest N" is "id above
                    // last_id - N": one indexed range delete per conversation.
                    "DELETE FROM messages WHERE id <=
                         (SELECT c.last_id FROM convs c WHERE c.conv = messages.conv) - ?1",
                    params![i64::try_from(max).unwrap_or(i64::MAX)],
                )
                .map_err(&err)? as u64;
        }
        if deleted > 0 {
            tx.execute(
                "DELETE FROM reactions WHERE NOT EXISTS (SELECT 1 FROM messages m
                     WHERE m.conv = reactions.conv AND m.id = reactions.id)",
                [],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)?;
        Ok(deleted)
    }
}

/// Checks and makes the change of `a` to its message: `Err` (nothing changed) if it may not
/// be made, else, for a reaction, its emoji's count after it.
fn amend(
    tx: &rusqlite::Transaction<'_>,
    a: &Amend,
) -> rusqlite::Result<Result<Option<u64>, Refusal>> {
    let (conv, id) = (&a.conv, a.target as i64);
    let found: Option<(Vec<u8>, u8, bool)> = tx
        .query_row(
            "SELECT from_key, kind, deleted FROM messages WHERE conv = ?1 AND id = ?2",
            params![conv, id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((from, _, _)) = found.filter(|f| kind::is_message(f.1) && !f.2) else {
        return Ok(Err(Refusal::NoMessage));
    };
    if a.author.is_some_and(|au| au[..] != from[..]) {
        return Ok(Err(Refusal::NotAuthor));
    }
    let count = |tx: &rusqlite::Transaction<'_>, emoji: &str| -> rusqlite::Result<Option<u64>> {
        let n: i64 = tx.query_row(
            "SELECT count(*) FROM reactions WHERE conv = ?1 AND id = ?2 AND emoji = ?3",
            params![conv, id, emoji],
            |r| r.get(0),
        )?;
        Ok(Some(n as u64))
    };
    Ok(Ok(match &a.change {
        Change::Edit(text) => {
            tx.execute(
                "UPDATE messages SET text = ?3, edited = 1 WHERE conv = ?1 AND id = ?2",
                params![conv, id, text],
            )?;
            None
        }
        Change::Delete => {
            tx.execute(
                "UPDATE messages SET text = '', deleted = 1 WHERE conv = ?1 AND id = ?2",
                params![conv, id],
            )?;
            tx.execute(
                "UPDATE messages SET text = '', deleted = 1 WHERE conv = ?1 AND target = ?2
                 AND kind = ?3",
                params![conv, id, kind::EDIT],
            )?;
            tx.execute(
                "DELETE FROM reactions WHERE conv = ?1 AND id = ?2",
                params![conv, id],
            )?;
            None
        }
        Change::React(emoji) => {
            let used: i64 = tx.query_row(
                "SELECT count(DISTINCT emoji), coalesce(sum(emoji = ?3), 0) FROM reactions
                 WHERE conv = ?1 AND id = ?2",
                params![conv, id, emoji],
                |r| {
                    Ok(if r.get::<_, i64>(1)? > 0 {
                        0
                    } else {
                        r.get(0)?
                    })
                },
            )?;
            if used as usize >= crate::MAX_EMOJIS {
                return Ok(Err(Refusal::TooManyEmojis));
            }
            let added = tx.execute(
                "INSERT OR IGNORE INTO reactions (conv, id, emoji, key, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![conv, id, emoji, &a.by_key[..], a.ts_ms],
            )?;
            if added == 0 {
                return Ok(Err(Refusal::Unchanged));
            }
            count(tx, emoji)?
        }
        Change::Unreact(emoji) => {
            let removed = tx.execute(
                "DELETE FROM reactions WHERE conv = ?1 AND id = ?2 AND emoji = ?3 AND key = ?4",
                params![conv, id, emoji, &a.by_key[..]],
            )?;
            if removed == 0 {
                return Ok(Err(Refusal::Unchanged));
            }
            count(tx, emoji)?
        }
    }))
}

/// A read connection.
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

const COLUMNS: &str = "conv, id, ts, from_key, from_nick, to_key, to_nick, kind, text, client_id,
     client_seq, target, edited, deleted, count";

fn key32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "key is not 32 bytes".into(),
        )
    })
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let to_key: Option<Vec<u8>> = row.get(5)?;
    let cid: Option<i64> = row.get(9)?;
    let cseq: Option<i64> = row.get(10)?;
    Ok(Record {
        conv: row.get(0)?,
        id: row.get::<_, i64>(1)? as u64,
        ts_ms: row.get(2)?,
        from_key: key32(row.get(3)?)?,
        from_nick: row.get(4)?,
        to_key: to_key.map(key32).transpose()?,
        to_nick: row.get(6)?,
        kind: row.get(7)?,
        text: row.get(8)?,
        client_ref: cid.zip(cseq).map(|(a, b)| (a as u64, b as u64)),
        target: row.get::<_, Option<i64>>(11)?.map(|t| t as u64),
        edited: row.get(12)?,
        deleted: row.get(13)?,
        reactions: match (row.get::<_, Option<i64>>(14)?, row.get::<_, String>(8)?) {
            (Some(n), emoji) => vec![(emoji, n as u64)],
            (None, _) => Vec::new(),
        },
    })
}

/// Fills in the reaction counts of the messages among `records` (of one conversation).
fn add_reactions(conn: &Connection, path: &Path, records: &mut [Record]) -> Result<(), StoreError> {
    let err = sql_err(path);
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let (conv, lo, hi) = (first.conv.clone(), first.id as i64, last.id as i64);
    let mut st = conn
        .prepare_cached(
            "SELECT id, emoji, count(*) FROM reactions WHERE conv = ?1 AND id BETWEEN ?2 AND ?3
             GROUP BY id, emoji ORDER BY id, min(ts), emoji",
        )
        .map_err(&err)?;
    let rows = st
        .query_map(params![conv, lo, hi], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as u64,
            ))
        })
        .map_err(&err)?;
    for row in rows {
        let (id, emoji, n) = row.map_err(&err)?;
        if let Ok(i) = records.binary_search_by_key(&id, |r| r.id) {
            if kind::is_message(records[i].kind) {
                records[i].reactions.push((emoji, n));
            }
        }
    }
    Ok(())
}

impl Reader {
    /// Opens a read connection to the database at `path` (which [`Sqlite::open`] created).
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        Ok(Reader {
            conn: open_conn(path)?,
            path: path.to_owned(),
        })
    }

    /// Loads the server's start-up state: nicks, topics, id high-water marks and the last
    /// `recent` messages of every conversation. Undelivered DMs are not loaded: the server
    /// reads them a page at a time when their recipient connects ([`Reader::undelivered`]).
    pub fn load(&self, recent: usize) -> Result<Loaded, StoreError> {
        let err = sql_err(&self.path);
        let c = &self.conn;
        let mut out = Loaded::default();
        let mut st = c
            .prepare("SELECT nick, key, seen FROM nicks")
            .map_err(&err)?;
        let rows: Vec<(String, [u8; 32], i64)> = st
            .query_map([], |r| Ok((r.get(0)?, key32(r.get(1)?)?, r.get(2)?)))
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        for (nick, key, seen) in rows {
            out.nicks.push((nick, key));
            out.seen.push((key, seen));
        }
        let mut st = c
            .prepare("SELECT room, topic, set_by, ts FROM topics")
            .map_err(&err)?;
        out.topics = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        let mut st = c
            .prepare("SELECT scope, kind, subject, value, set_by, ts FROM moderation")
            .map_err(&err)?;
        out.moderation = st
            .query_map([], mod_entry)
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        let mut st = c.prepare("SELECT conv, last_id FROM convs").map_err(&err)?;
        out.last_ids = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        for (conv, _) in &out.last_ids {
            let mut page = self.history(conv, None, recent)?;
            out.recent.append(&mut page);
        }
        Ok(out)
    }

    /// Up to `limit` messages of `conv` with ids below `before` (or the newest), oldest first.
    pub fn history(
        &self,
        conv: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let err = sql_err(&self.path);
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE conv = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT ?3"
            ))
            .map_err(&err)?;
        let mut rows: Vec<Record> = st
            .query_map(params![conv, before, limit as i64], record)
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        rows.reverse();
        add_reactions(&self.conn, &self.path, &mut rows)?;
        Ok(rows)
    }

    /// The messages of `conv` with ids in `after + 1..=upto`, oldest first: at most `limit`,
    /// and no more once their texts and nicks add up to `max_bytes` (one at least, if any).
    /// What a client missed is read this way, a bounded page at a time, however much it is.
    pub fn after(
        &self,
        conv: &str,
        after: u64,
        upto: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let err = sql_err(&self.path);
        let id = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE conv = ?1 AND id > ?2 AND id <= ?3
                 ORDER BY id LIMIT ?4"
            ))
            .map_err(&err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = st
            .query_map(params![conv, id(after), id(upto), limit], record)
            .map_err(&err)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while bytes < max_bytes {
            let Some(r) = rows.next() else {
                break;
            };
            let r = r.map_err(&err)?;
            bytes = bytes.saturating_add(r.text.len() + r.from_nick.len());
            out.push(r);
        }
        drop(rows);
        add_reactions(&self.conn, &self.path, &mut out)?;
        Ok(out)
    }

    /// The DM conversations in which `key` has messages not yet handed to it, after
    /// `after_conv` in name order, at most `limit`: `(conversation, id of the first such
    /// message)`. A page of conversation names, never of messages, so that the server keeps no
    /// offline message in memory and reads what a returning user missed only when it connects.
    pub fn undelivered(
        &self,
        key: &[u8; 32],
        after_conv: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT conv, min(id) FROM messages m WHERE to_key = ?1 AND conv > ?2
                     AND id > coalesce(
                         (SELECT upto FROM dm_cursors d WHERE d.key = ?1 AND d.conv = m.conv), 0)
                 GROUP BY conv ORDER BY conv LIMIT ?3",
            )
            .map_err(&err)?;
        let rows = st
            .query_map(
                params![&key[..], after_conv.unwrap_or(""), limit as i64],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        Ok(rows)
    }

    /// The messages of `conv` whose text holds every word of `terms`, with ids below
    /// `before` (or any), newest first, at most `limit` ([`Storage::search`]). Stopped (an
    /// error) once it has run for [`SEARCH_TIMEOUT`].
    pub fn search(
        &self,
        conv: &str,
        terms: &[String],
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let err = sql_err(&self.path);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // Each word a quoted FTS5 string (a quote inside doubled): matched as a word, never
        // read as query syntax (`AND`, `NEAR`, `*`, column filters).
        let query = terms
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let deadline = Instant::now() + SEARCH_TIMEOUT;
        // Called every few thousand virtual machine steps; `true` interrupts the statement.
        self.conn
            .progress_handler(4096, Some(move || Instant::now() > deadline));
        let result = (|| {
            // CROSS JOIN keeps the index first: its matches are walked newest first and the
            // walk stops at `limit`, instead of visiting every message of the conversation.
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT m.conv, m.id, m.ts, m.from_key, m.from_nick, m.to_key, m.to_nick,
                         m.kind, m.text, m.client_id, m.client_seq, m.target, m.edited,
                         m.deleted, m.count
                     FROM messages_fts f CROSS JOIN fts_rows p CROSS JOIN messages m
                     WHERE messages_fts MATCH ?1 AND p.rowid = f.rowid AND p.conv = ?2
                         AND p.id < ?3 AND m.conv = p.conv AND m.id = p.id
                     ORDER BY f.rowid DESC LIMIT ?4",
                )
                .map_err(&err)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            st.query_map(params![query, conv, before, limit], record)
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)
        })();
        self.conn.progress_handler(0, None::<fn() -> bool>);
        let mut found = result?;
        for r in &mut found {
            add_reactions(&self.conn, &self.path, std::slice::from_mut(r))?;
        }
        Ok(found)
    }

    /// The read markers of `key`, at most `limit`, in conversation name order.
    pub fn markers(&self, key: &[u8; 32], limit: usize) -> Result<Vec<(String, u64)>, StoreError> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT conv, upto FROM read_markers WHERE key = ?1 ORDER BY conv LIMIT ?2",
            )
            .map_err(&err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        st.query_map(params![&key[..], limit], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(&err)?
        .collect::<Result<_, _>>()
        .map_err(&err)
    }

    /// The moderation entries of `scope` (a room, or `""` for the server).
    pub fn moderation(&self, scope: &str) -> Result<Vec<ModEntry>, StoreError> {
        let err = sql_err(&self.path);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT scope, kind, subject, value, set_by, ts FROM moderation WHERE scope = ?1",
            )
            .map_err(&err)?;
        st.query_map(params![scope], mod_entry)
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)
    }

    /// The highest id given in `conv` so far (0: none).
    pub fn last_id(&self, conv: &str) -> Result<u64, StoreError> {
        let err = sql_err(&self.path);
        self.conn
            .query_row(
                "SELECT last_id FROM convs WHERE conv = ?1",
                params![conv],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(&err)
            .map(|n| n.unwrap_or(0) as u64)
    }

    /// Number of messages stored in `conv`.
    pub fn count(&self, conv: &str) -> Result<u64, StoreError> {
        let err = sql_err(&self.path);
        self.conn
            .query_row(
                "SELECT count(*) FROM messages WHERE conv = ?1",
                params![conv],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(&err)
            .map(|n| n.unwrap_or(0) as u64)
    }
}

/// A row of `SELECT scope, kind, subject, value, set_by, ts FROM moderation`.
fn mod_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModEntry> {
    Ok(ModEntry {
        scope: r.get(0)?,
        kind: r.get(1)?,
        subject: r.get(2)?,
        value: r.get(3)?,
        by: r.get(4)?,
        ts_ms: r.get(5)?,
    })
}
