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
    let loaded = r.load(2, 100).expect("load");
    assert_eq!(loaded.last_ids, vec![("#a".to_owned(), 5)]);
    assert_eq!(loaded.recent.len(), 2);
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
    let loaded = r.load(10, 10).expect("load");
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
        },
        Op::SetNick {
            nick: "Al".into(),
            fold: "al".into(),
            key: [1; 32],
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
    let loaded = store.reader().expect("reader").load(10, 10).expect("load");
    assert_eq!(loaded.nicks, vec![("Al".to_owned(), [1; 32])]);
    assert_eq!(
        loaded.topics,
        vec![("#a".into(), "t".into(), "Al".into(), 9)]
    );
    assert_eq!(loaded.undelivered, vec![dm2]);
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
