use super::*;

fn rec(conv: &str, id: u64, ts_ms: i64, text: &str) -> Record {
    Record {
        conv: conv.into(),
        id,
        ts_ms,
        from_key: [1; 32],
        from_nick: "alice".into(),
        to_key: None,
        to_nick: None,
        kind: 0,
        text: text.into(),
        client_ref: Some((7, id)),
    }
}

fn block<T>(rx: oneshot::Receiver<T>) -> T {
    rx.blocking_recv().expect("writer answered")
}

#[test]
fn written_messages_are_read_back_in_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chirp.db");
    {
        let store = Store::open(&path, StoreConfig::default()).expect("open");
        let rxs: Vec<_> = (1..=5)
            .map(|i| store.write(vec![Op::Message(rec("#a", i, 1000 + i as i64, "hi"))]))
            .collect();
        for rx in rxs {
            block(rx).expect("committed");
        }
        store.close();
    }
    let store = Store::open(&path, StoreConfig::default()).expect("reopen");
    let r = store.reader().expect("reader");
    let page = r.history("#a", None, 3).expect("history");
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(page[0], rec("#a", 3, 1003, "hi"));
    let older = r.history("#a", Some(3), 10).expect("history");
    assert_eq!(older.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2]);
    let loaded = r.load(2).expect("load");
    assert_eq!(loaded.last_ids, vec![("#a".to_owned(), 5)]);
    assert_eq!(loaded.recent.len(), 2);
}

#[test]
fn after_reads_a_bounded_page_of_what_follows_an_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chirp.db");
    let store = Store::open(&path, StoreConfig::default()).expect("open");
    let ops = (1..=20)
        .filter(|&i| i != 7)
        .map(|i| Op::Message(rec("#a", i, 1000, &"x".repeat(10))))
        .chain([Op::Message(rec("#b", 3, 1000, "other"))])
        .collect();
    block(store.write(ops)).expect("committed");
    let r = store.reader().expect("reader");
    let ids = |v: Vec<Record>| v.iter().map(|m| m.id).collect::<Vec<_>>();
    // A hole (7) is skipped, `upto` is the last id, `limit` caps.
    let page = r.after("#a", 4, 12, 100, usize::MAX).expect("after");
    assert_eq!(ids(page), vec![5, 6, 8, 9, 10, 11, 12]);
    let page = r.after("#a", 4, 20, 3, usize::MAX).expect("after");
    assert_eq!(ids(page), vec![5, 6, 8]);
    // Bytes cap: each row is 10 + 5 bytes (text, nick); one row at least.
    let page = r.after("#a", 0, 20, 100, 31).expect("after");
    assert_eq!(ids(page), vec![1, 2, 3]);
    let page = r.after("#a", 0, 20, 100, 1).expect("after");
    assert_eq!(ids(page), vec![1]);
    assert!(r.after("#a", 20, 30, 100, 1000).expect("after").is_empty());
    assert_eq!(ids(r.after("#b", 0, 9, 10, 100).expect("after")), vec![3]);
    store.close();
}

#[test]
fn many_queued_writes_share_few_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db"), StoreConfig::default()).expect("open");
    let rxs: Vec<_> = (1..=500)
        .map(|i| store.write(vec![Op::Message(rec("#a", i, 0, "x"))]))
        .collect();
    for rx in rxs {
        block(rx).expect("committed");
    }
    let s = store.stats();
    assert_eq!(s.ops, 500);
    // Queued faster than one fsync: the writer must have grouped them.
    assert!(s.commits < 500, "{s:?}");
    assert_eq!(
        store.reader().expect("reader").count("#a").expect("count"),
        500
    );
}

#[test]
fn retention_by_count_and_age_keeps_ids_increasing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let config = StoreConfig {
        retention: Retention {
            max_per_conv: Some(3),
            max_age: Some(Duration::from_secs(10)),
        },
        ..StoreConfig::default()
    };
    let store = Store::open(&path, config).expect("open");
    let ops = (1..=6)
        .map(|i| Op::Message(rec("#a", i, 1_000 * i as i64, "x")))
        .chain([Op::Message(rec("#b", 1, 0, "old"))])
        .collect();
    block(store.write(ops)).expect("committed");
    // now = 14 s: #b's message (ts 0) is older than 10 s; #a keeps 4, 5, 6 by count.
    let deleted = block(store.prune(14_000)).expect("pruned");
    assert_eq!(deleted, 4);
    let r = store.reader().expect("reader");
    let a = r.history("#a", None, 10).expect("history");
    assert_eq!(a.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 5, 6]);
    let loaded = r.load(10).expect("load");
    let mut last = loaded.last_ids.clone();
    last.sort();
    assert_eq!(last, vec![("#a".into(), 6), ("#b".into(), 1)]);
}

#[test]
fn nicks_topics_and_dm_cursors_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db"), StoreConfig::default()).expect("open");
    let mut dm = rec("@x", 1, 5, "psst");
    dm.to_key = Some([2; 32]);
    dm.to_nick = Some("bob".into());
    let mut dm2 = dm.clone();
    dm2.id = 2;
    let ops = vec![
        Op::SetNick {
            nick: "Alice".into(),
            fold: "alice".into(),
            key: [1; 32],
            seen_ms: 3,
        },
        Op::SetNick {
            nick: "Al".into(),
            fold: "al".into(),
            key: [1; 32],
            seen_ms: 4,
        },
        Op::SetTopic {
            room: "#a".into(),
            topic: "t".into(),
            by: "Al".into(),
            ts_ms: 9,
        },
        Op::Message(dm),
        Op::Message(dm2.clone()),
        Op::DmCursor {
            key: [2; 32],
            conv: "@x".into(),
            upto: 1,
        },
    ];
    block(store.write(ops)).expect("committed");
    let loaded = store.reader().expect("reader").load(10).expect("load");
    assert_eq!(loaded.nicks, vec![("Al".to_owned(), [1; 32])]);
    assert_eq!(
        loaded.topics,
        vec![("#a".into(), "t".into(), "Al".into(), 9)]
    );
    // The DM cursor is kept: only the second DM is still owed to its recipient.
    let r = store.reader().expect("reader");
    assert_eq!(
        r.undelivered(&[2; 32], None, 10).expect("read"),
        vec![("@x".to_owned(), dm2.id)]
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    {
        let c = Connection::open(&path).expect("open");
        c.pragma_update(None, "user_version", 99).expect("set");
    }
    let e = Store::open(&path, StoreConfig::default()).expect_err("too new");
    assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
}

#[test]
fn undelivered_lists_conversations_not_messages_in_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db"), StoreConfig::default()).expect("open");
    let to = |mut r: Record, key: u8| {
        r.to_key = Some([key; 32]);
        r.to_nick = Some("bob".into());
        r
    };
    let ops = vec![
        Op::Message(to(rec("@a", 1, 5, "one"), 2)),
        Op::Message(to(rec("@a", 2, 5, "two"), 2)),
        Op::Message(to(rec("@a", 3, 5, "three"), 2)),
        Op::Message(to(rec("@b", 7, 5, "other"), 2)),
        Op::Message(to(rec("@c", 1, 5, "not bob's"), 3)),
        // Delivered up to 1 in @a; everything in @d was delivered.
        Op::DmCursor {
            key: [2; 32],
            conv: "@a".into(),
            upto: 1,
        },
        Op::Message(to(rec("@d", 1, 5, "seen"), 2)),
        Op::DmCursor {
            key: [2; 32],
            conv: "@d".into(),
            upto: 1,
        },
    ];
    block(store.write(ops)).expect("committed");
    let r = store.reader().expect("reader");
    let all = r.undelivered(&[2; 32], None, 10).expect("read");
    assert_eq!(all, vec![("@a".into(), 2), ("@b".into(), 7)]);
    let first = r.undelivered(&[2; 32], None, 1).expect("read");
    assert_eq!(first, vec![("@a".into(), 2)]);
    let next = r.undelivered(&[2; 32], Some("@a"), 1).expect("read");
    assert_eq!(next, vec![("@b".into(), 7)]);
    assert!(
        r.undelivered(&[2; 32], Some("@b"), 1)
            .expect("read")
            .is_empty()
    );
    assert!(r.undelivered(&[9; 32], None, 10).expect("read").is_empty());
}

fn set_nick(nick: &str, key: u8, seen_ms: i64) -> Op {
    Op::SetNick {
        nick: nick.into(),
        fold: nick.to_lowercase(),
        key: [key; 32],
        seen_ms,
    }
}

#[test]
fn nick_owners_last_seen_times_are_kept_and_released_nicks_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    {
        let store = Store::open(&path, StoreConfig::default()).expect("open");
        let ops = vec![
            set_nick("alice", 1, 100),
            set_nick("bob", 2, 100),
            set_nick("carol", 3, 100),
            // Later sightings move the time forward, never back.
            Op::Seen {
                key: [1; 32],
                ts_ms: 500,
            },
            Op::Seen {
                key: [1; 32],
                ts_ms: 400,
            },
            // A key without a nick: nothing to record.
            Op::Seen {
                key: [9; 32],
                ts_ms: 500,
            },
            // bob's expired nick is taken by key 4 under a look-alike spelling: released.
            Op::ReleaseNick { key: [2; 32] },
            set_nick("b0b", 4, 600),
            // carol's expired nick is taken by key 5 in another case: replaced.
            set_nick("Carol", 5, 700),
        ];
        block(store.write(ops)).expect("committed");
        store.close();
    }
    let store = Store::open(&path, StoreConfig::default()).expect("reopen");
    let mut loaded = store.reader().expect("reader").load(10).expect("load");
    loaded.nicks.sort();
    loaded.seen.sort();
    assert_eq!(
        loaded.nicks,
        vec![
            ("Carol".to_owned(), [5; 32]),
            ("alice".to_owned(), [1; 32]),
            ("b0b".to_owned(), [4; 32]),
        ]
    );
    assert_eq!(
        loaded.seen,
        vec![([1; 32], 500), ([4; 32], 600), ([5; 32], 700)]
    );
}

/// A database written by the previous version (schema 1, no last-seen times) opens, and its
/// nicks count as seen at the upgrade: none of them expires early.
#[test]
fn a_schema_1_database_is_migrated_and_its_nicks_count_as_seen_at_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    {
        let c = Connection::open(&path).expect("open");
        c.execute_batch(MIGRATIONS[0]).expect("schema 1");
        c.pragma_update(None, "user_version", 1).expect("version");
        c.execute(
            "INSERT INTO nicks (fold, nick, key) VALUES ('alice', 'Alice', ?1)",
            params![&[1u8; 32][..]],
        )
        .expect("nick");
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let before = now();
    let store = Store::open(&path, StoreConfig::default()).expect("migrates");
    let after = now();
    let loaded = store.reader().expect("reader").load(10).expect("load");
    assert_eq!(loaded.nicks, vec![("Alice".to_owned(), [1; 32])]);
    let (key, seen) = loaded.seen[0];
    assert_eq!(key, [1; 32]);
    // unixepoch() has whole seconds.
    assert!(
        (before - 1000..=after).contains(&seen),
        "{before} <= {seen} <= {after}"
    );
    let version: i64 = Connection::open(&path)
        .expect("open")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, MIGRATIONS.len() as i64);
    // The migrated table takes the new operations.
    block(store.write(vec![Op::Seen {
        key: [1; 32],
        ts_ms: after + 5,
    }]))
    .expect("committed");
    let loaded = store.reader().expect("reader").load(10).expect("load");
    assert_eq!(loaded.seen, vec![([1; 32], after + 5)]);
}
