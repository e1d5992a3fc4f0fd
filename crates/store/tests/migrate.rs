//! `chirp_store::migrate`: an SQLite history written through [`Sqlite`] (rooms, a DM, a nick,
//! a topic, a DM cursor, and retention having deleted a prefix) is copied into a real
//! PostgreSQL that the test starts itself, and every [`Storage`] read answers the same on both
//! sides. Without PostgreSQL installed the PostgreSQL tests say so and pass (CI sets
//! CHIRP_REQUIRE_SERVICES=1, which turns that into a failure).

use std::path::Path;
use std::time::Duration;

use chirp_store::migrate::{self, Progress, Report};
use chirp_store::{
    Amend, Change, ModEntry, NewMessage, Op, Outcome, Postgres, Retention, SQLITE_MIGRATIONS,
    Sqlite, Storage, StoreConfig, StoreError,
};

const ALICE: [u8; 32] = [1; 32];
const BOB: [u8; 32] = [2; 32];
/// A DM conversation's name (opaque to the store; the server chooses it).
const DM: &str = "dm:alice:bob";
/// The rooms and the DM, and a room whose messages retention deleted entirely.
const CONVS: [&str; 4] = ["#a", "#b", DM, "#old"];

/// A PostgreSQL server of this test's own, and a fresh database on it per call.
struct Pg {
    server: chirp_testsvc::Postgres,
    next: u32,
}

impl Pg {
    fn start() -> Option<Pg> {
        if !chirp_testsvc::require("PostgreSQL", chirp_testsvc::postgres_available()) {
            return None;
        }
        let server = chirp_testsvc::Postgres::start().expect("start PostgreSQL");
        Some(Pg { server, next: 0 })
    }

    /// The URL of a new, empty database.
    fn fresh(&mut self) -> String {
        self.next += 1;
        let name = format!("target{}", self.next);
        self.server
            .psql(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        format!("postgres://chirp@127.0.0.1:{}/{name}", self.server.port())
    }

    /// `SELECT ...` in database `db`'s URL: the one value it returns, as text.
    async fn value(url: &str, sql: &str) -> String {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        let row = c.query_one(sql, &[]).await.expect("query");
        let v: String = row.get(0);
        drop(c);
        let _ = task.await;
        v
    }
}

fn msg(conv: &str, ts_ms: i64, text: &str, seq: u64) -> NewMessage {
    NewMessage {
        conv: conv.into(),
        ts_ms,
        from_key: ALICE,
        from_nick: "alice".into(),
        to_key: None,
        to_nick: None,
        kind: 0,
        text: text.into(),
        client_ref: Some((7, seq)),
    }
}

async fn write(s: &dyn Storage, ops: Vec<Op>) -> Vec<Outcome> {
    s.write(ops).await.expect("committed")
}

const NOW: i64 = 1_000_000_000;
const DAY: i64 = 86_400_000;

/// An SQLite history at `path`, left open (as a running server's would be): 10 messages in
/// `#a` of which retention kept the last 4 (ids 7..=10), 3 in `#b` (one an action, one
/// without a client reference), 3 DMs to bob of which he was handed the first, 2 old
/// messages in `#old` that retention by age deleted, two nicks, a topic; bob's reaction to
/// `#b` 2 (event `#b` 4) and alice's edit of her DM 3 (event 4 of the DM).
async fn sqlite_history(path: &Path) -> Sqlite {
    let config = StoreConfig {
        retention: Retention {
            max_per_conv: Some(4),
            max_age: Some(Duration::from_millis(30 * DAY as u64)),
        },
        ..StoreConfig::default()
    };
    let s = Sqlite::open(path, config).expect("open SQLite");
    let mut ops: Vec<Op> = (1..=10)
        .map(|i| Op::Message(msg("#a", NOW + i, &format!("a{i}"), i as u64)))
        .collect();
    ops.push(Op::Message(msg("#b", NOW, "b1", 100)));
    ops.push(Op::Message(NewMessage {
        kind: 1,
        ..msg("#b", NOW + 1, "waves", 101)
    }));
    ops.push(Op::Message(NewMessage {
        client_ref: None,
        text: "héllo \u{1F426}".into(),
        ..msg("#b", NOW + 2, "", 0)
    }));
    for i in 1..=3 {
        ops.push(Op::Message(NewMessage {
            to_key: Some(BOB),
            to_nick: Some("bob".into()),
            ..msg(DM, NOW + i, &format!("psst {i}"), 200 + i as u64)
        }));
    }
    ops.push(Op::Message(msg("#old", NOW - 40 * DAY, "ancient", 300)));
    ops.push(Op::Message(msg("#old", NOW - 40 * DAY, "older", 301)));
    ops.extend([
        Op::SetNick {
            nick: "Alice".into(),
            fold: "alice".into(),
            key: ALICE,
            seen_ms: NOW - 5,
        },
        Op::SetNick {
            nick: "bob".into(),
            fold: "bob".into(),
            key: BOB,
            seen_ms: NOW - 9,
        },
        Op::SetTopic {
            room: "#a".into(),
            topic: "all about a".into(),
            by: "Alice".into(),
            ts_ms: NOW + 3,
        },
        Op::SetMod(ModEntry {
            scope: "#a".into(),
            kind: "ban".into(),
            subject: "0303".into(),
            value: "spam".into(),
            by: "Alice".into(),
            ts_ms: NOW + 4,
        }),
        Op::DmCursor {
            key: BOB,
            conv: DM.into(),
            upto: 1,
        },
        Op::ReadMarker {
            key: BOB,
            conv: DM.into(),
            upto: 2,
        },
    ]);
    write(&s, ops).await;
    let amend = |conv: &str, target, by_key, to_key, change| {
        Op::Amend(Amend {
            conv: conv.into(),
            target,
            ts_ms: NOW + 5,
            by_key,
            by_nick: "someone".into(),
            to_key,
            to_nick: to_key.map(|_| "bob".into()),
            author: Some(by_key).filter(|_| matches!(change, Change::Edit(_))),
            change,
        })
    };
    let out = write(
        &s,
        vec![
            amend("#b", 2, BOB, None, Change::React("👍".into())),
            amend(DM, 3, ALICE, Some(BOB), Change::Edit("psst, edited".into())),
        ],
    )
    .await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Amended(_))),
        "{out:?}"
    );
    let deleted = Storage::prune(&s, NOW + 10).await.expect("prune");
    assert_eq!(deleted, 6 + 2, "retention: #a's first 6, #old's 2");
    s
}

/// Every read of [`Storage`] answers the same on `a` and `b`.
async fn same_reads(a: &dyn Storage, b: &dyn Storage) {
    let mut la = a.load(2).await.expect("load");
    let mut lb = b.load(2).await.expect("load");
    // Row order of the start-up lists is the backends' own.
    for l in [&mut la, &mut lb] {
        l.nicks.sort();
        l.seen.sort();
        l.topics.sort();
        l.last_ids.sort();
        l.moderation
            .sort_by(|x, y| (&x.scope, &x.kind, &x.subject).cmp(&(&y.scope, &y.kind, &y.subject)));
        l.recent
            .sort_by(|x, y| (&x.conv, x.id).cmp(&(&y.conv, y.id)));
    }
    assert_eq!(la, lb, "load");
    for conv in CONVS {
        let c = || conv.to_owned();
        assert_eq!(
            a.history(c(), None, 100).await.expect("history"),
            b.history(c(), None, 100).await.expect("history"),
            "history {conv}"
        );
        assert_eq!(
            a.history(c(), Some(9), 1).await.expect("history"),
            b.history(c(), Some(9), 1).await.expect("history"),
            "history {conv} before 9"
        );
        assert_eq!(
            a.after(c(), 0, u64::MAX, 100, usize::MAX)
                .await
                .expect("after"),
            b.after(c(), 0, u64::MAX, 100, usize::MAX)
                .await
                .expect("after"),
            "after {conv}"
        );
        assert_eq!(
            a.after(c(), 7, 9, 100, 1).await.expect("after"),
            b.after(c(), 7, 9, 100, 1).await.expect("after"),
            "after {conv}, a byte at most"
        );
        assert_eq!(
            a.last_id(c()).await.expect("last id"),
            b.last_id(c()).await.expect("last id"),
            "last id {conv}"
        );
        assert_eq!(
            a.count(c()).await.expect("count"),
            b.count(c()).await.expect("count"),
            "count {conv}"
        );
    }
    for key in [ALICE, BOB] {
        assert_eq!(
            a.undelivered(key, None, 10).await.expect("undelivered"),
            b.undelivered(key, None, 10).await.expect("undelivered"),
        );
        assert_eq!(
            a.markers(key, 10).await.expect("markers"),
            b.markers(key, 10).await.expect("markers"),
        );
    }
    // The search index: SQLite's own, PostgreSQL's built from the copied rows.
    for (conv, words) in [
        (DM, "psst"),
        (DM, "edited"),
        ("#b", "HÉLLO"),
        ("#b", "waves"),
    ] {
        let terms = chirp_store::search_terms(words).expect("words");
        let found = a
            .search(conv.into(), terms.clone(), None, 10)
            .await
            .expect("search");
        assert!(!found.is_empty(), "{words} is found in {conv}");
        assert_eq!(
            found,
            b.search(conv.into(), terms, None, 10)
                .await
                .expect("search"),
            "search {conv} for {words}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_history_moves_into_postgres_and_reads_the_same() {
    let Some(mut pg) = Pg::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chirp.db");
    // Left open, as a running server's: the copy reads a snapshot beside the writer.
    let sqlite = sqlite_history(&path).await;
    // What the history looks like, to be sure the comparison below compares something.
    assert_eq!(sqlite.last_id("#a".into()).await.expect("last id"), 10);
    assert_eq!(sqlite.count("#a".into()).await.expect("count"), 4);
    assert_eq!(sqlite.last_id("#old".into()).await.expect("last id"), 2);
    assert_eq!(sqlite.count("#old".into()).await.expect("count"), 0);
    let b = sqlite
        .history("#b".into(), None, 10)
        .await
        .expect("history");
    assert_eq!(b[1].reactions, vec![("👍".to_owned(), 1)], "{b:?}");
    let dm = sqlite.history(DM.into(), None, 10).await.expect("history");
    assert!(dm[2].edited && dm[2].text == "psst, edited", "{dm:?}");
    assert_eq!(
        sqlite
            .undelivered(BOB, None, 10)
            .await
            .expect("undelivered"),
        vec![(DM.to_owned(), 2)]
    );

    let url = pg.fresh();
    let mut seen: Vec<Progress> = Vec::new();
    let report = migrate::sqlite_to_postgres(&path, &url, |p| seen.push(p))
        .await
        .expect("migrate");
    assert_eq!(
        report,
        Report {
            messages: 4 + 4 + 4,
            conversations: 4,
            nicks: 2,
            topics: 1,
            dm_cursors: 1,
            moderation: 1,
            read_markers: 1,
            reactions: 1,
        }
    );
    assert_eq!(
        report.to_string(),
        "12 messages in 4 conversations, 2 nicks, 1 topic, 1 DM cursor, 1 moderation entry, \
         1 read marker, 1 reaction"
    );
    // Progress: from 0 to every row, never backwards, messages last.
    let total = report.rows();
    assert_eq!(seen.first().map(|p| (p.copied, p.total)), Some((0, total)));
    assert_eq!(
        seen.last().map(|p| (p.table, p.copied, p.total)),
        Some(("messages", total, total))
    );
    assert!(seen.windows(2).all(|w| w[0].copied <= w[1].copied));

    let pg_store = Postgres::connect(&url, StoreConfig::default())
        .await
        .expect("connect");
    same_reads(&sqlite, &pg_store).await;

    // Ids go on from each conversation's high-water mark, past what retention deleted.
    let out = write(
        &pg_store,
        vec![
            Op::Message(msg("#a", NOW + 20, "after the move", 400)),
            Op::Message(msg("#old", NOW + 20, "revived", 401)),
            Op::Message(msg("#new", NOW + 20, "first", 402)),
        ],
    )
    .await;
    assert_eq!(
        out,
        vec![
            Outcome::Stored { id: 11 },
            Outcome::Stored { id: 3 },
            Outcome::Stored { id: 1 },
        ]
    );
    // A message resent after the move is recognised by its client reference: still stored
    // once.
    let again = write(&pg_store, vec![Op::Message(msg("#a", NOW + 30, "a9", 9))]).await;
    assert_eq!(
        again,
        vec![Outcome::Duplicate {
            conv: "#a".into(),
            id: 9,
            ts_ms: NOW + 9
        }]
    );
    // The nicks came with their owners: another key cannot take one.
    let taken = write(
        &pg_store,
        vec![Op::SetNick {
            nick: "ALICE".into(),
            fold: "alice".into(),
            key: [3; 32],
            seen_ms: NOW,
        }],
    )
    .await;
    assert_eq!(taken, vec![Outcome::NickTaken]);

    // Into a database that holds a history now: refused, and nothing copied.
    let before = Pg::value(&url, "SELECT count(*)::text FROM messages").await;
    let mut told = 0;
    match migrate::sqlite_to_postgres(&path, &url, |_| told += 1).await {
        Err(StoreError::Postgres { message, .. }) => {
            assert!(
                message.contains("already holds a chirp history"),
                "{message}"
            );
            assert!(message.contains("nothing was copied"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(told, 0, "no progress for a refused copy");
    assert_eq!(
        Pg::value(&url, "SELECT count(*)::text FROM messages").await,
        before
    );
    assert_eq!(before, "15");

    pg_store.close().await.expect("close");
    Storage::close(&sqlite).await.expect("close");
}

/// A target that holds any chirp row (here one nick a node bound) is refused; no message is
/// copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_any_chirp_row_is_refused_untouched() {
    let Some(mut pg) = Pg::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chirp.db");
    let sqlite = sqlite_history(&path).await;
    Storage::close(&sqlite).await.expect("close");
    let url = pg.fresh();
    let node = Postgres::connect(&url, StoreConfig::default())
        .await
        .expect("connect");
    write(
        &node,
        vec![Op::SetNick {
            nick: "carol".into(),
            fold: "carol".into(),
            key: [3; 32],
            seen_ms: NOW,
        }],
    )
    .await;
    node.close().await.expect("close");
    let err = migrate::sqlite_to_postgres(&path, &url, |_| {})
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("rows in nicks"), "{text}");
    assert_eq!(
        Pg::value(&url, "SELECT count(*)::text FROM messages").await,
        "0"
    );
    assert_eq!(
        Pg::value(&url, "SELECT string_agg(nick, ',') FROM nicks").await,
        "carol"
    );
}

/// A database of schema 1 (before last-seen times) is copied, its nicks counted as seen at the
/// move (none expires early); the file is only read, never upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_database_is_copied_with_its_nicks_seen_now() {
    let Some(mut pg) = Pg::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chirp.db");
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(SQLITE_MIGRATIONS[0]).expect("schema 1");
        c.pragma_update(None, "user_version", 1).expect("version");
        c.execute(
            "INSERT INTO nicks (fold, nick, key) VALUES ('alice', 'Alice', ?1)",
            [&ALICE[..]],
        )
        .expect("nick");
    }
    let url = pg.fresh();
    let before = now_ms();
    let report = migrate::sqlite_to_postgres(&path, &url, |_| {})
        .await
        .expect("migrate");
    let after = now_ms();
    assert_eq!(report.nicks, 1);
    let seen: i64 = Pg::value(&url, "SELECT seen::text FROM nicks")
        .await
        .parse()
        .expect("number");
    assert!(
        (before..=after).contains(&seen),
        "{before} <= {seen} <= {after}"
    );
    let version: i64 = rusqlite::Connection::open(&path)
        .expect("open")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, 1, "the source is not written to");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A missing file, or one that is no chirp database, fails before PostgreSQL is contacted
/// (the address here has nothing listening).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_foreign_source_is_refused_before_postgres_is_contacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = "postgres://chirp@127.0.0.1:1/chirp";
    let missing = dir.path().join("nope.db");
    let err = migrate::sqlite_to_postgres(&missing, nowhere, |_| {})
        .await
        .expect_err("missing");
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("no such file"), "{err}");
    assert!(!missing.exists(), "a missing source is not created");

    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .expect("open")
        .execute_batch("CREATE TABLE t (x INTEGER)")
        .expect("create");
    let err = migrate::sqlite_to_postgres(&foreign, nowhere, |_| {})
        .await
        .expect_err("foreign");
    assert!(err.to_string().contains("not a chirp database"), "{err}");

    let text = dir.path().join("text.db");
    std::fs::write(
        &text,
        "hello, not a database at all, but long enough to look like one",
    )
    .expect("write");
    let err = migrate::sqlite_to_postgres(&text, nowhere, |_| {})
        .await
        .expect_err("not SQLite");
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");

    let newer = dir.path().join("newer.db");
    let c = rusqlite::Connection::open(&newer).expect("open");
    c.pragma_update(None, "user_version", 99).expect("version");
    drop(c);
    let err = migrate::sqlite_to_postgres(&newer, nowhere, |_| {})
        .await
        .expect_err("newer");
    assert!(
        matches!(err, StoreError::TooNew { found: 99, .. }),
        "{err:?}"
    );
}
