//! One suite for both backends: every case in [`cases`] runs on SQLite (a test each) and on a
//! real PostgreSQL that the test starts itself (`postgres_backend_passes_the_suite`, one
//! server, a fresh database per case). A few cases are one backend's own (its schema history,
//! or concurrent nodes on one PostgreSQL).

use std::time::Duration;

use rusqlite::{Connection, params};

use super::*;

/// A fresh, empty database of one backend.
struct Env {
    db: Database,
    /// Keeps the SQLite file's directory.
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        Env {
            db: Database::Sqlite(dir.path().join("chirp.db")),
            _dir: Some(dir),
        }
    }

    async fn open(&self) -> Box<dyn Storage> {
        self.open_with(StoreConfig::default()).await
    }

    async fn open_with(&self, config: StoreConfig) -> Box<dyn Storage> {
        open(&self.db, config).await.expect("open")
    }

    /// Runs `sql` on the database directly (what no [`Storage`] method does: a test's setup).
    async fn exec(&self, sql: &str) {
        match &self.db {
            Database::Sqlite(path) => {
                Connection::open(path)
                    .expect("open")
                    .execute_batch(sql)
                    .expect("exec");
            }
            Database::Postgres(url) => {
                let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                let task = tokio::spawn(conn);
                c.batch_execute(sql).await.expect("exec");
                drop(c);
                let _ = task.await;
            }
        }
    }
}

fn msg(conv: &str, ts_ms: i64, text: &str, c: u64) -> NewMessage {
    NewMessage {
        conv: conv.into(),
        ts_ms,
        from_key: [1; 32],
        from_nick: "alice".into(),
        to_key: None,
        to_nick: None,
        kind: 0,
        text: text.into(),
        client_ref: Some((7, c)),
    }
}

fn dm(conv: &str, to: u8, text: &str, c: u64) -> NewMessage {
    NewMessage {
        to_key: Some([to; 32]),
        to_nick: Some("bob".into()),
        ..msg(conv, 5, text, c)
    }
}

async fn write(s: &dyn Storage, ops: Vec<Op>) -> Vec<Outcome> {
    s.write(ops).await.expect("committed")
}

fn ids(v: &[Record]) -> Vec<u64> {
    v.iter().map(|m| m.id).collect()
}

fn set_nick(nick: &str, key: u8, seen_ms: i64) -> Op {
    Op::SetNick {
        nick: nick.into(),
        fold: nick.to_lowercase(),
        key: [key; 32],
        seen_ms,
    }
}

/// The shared cases: each takes a fresh database.
mod cases {
    use super::*;

    pub(super) async fn written_messages_are_read_back_in_order_after_reopen(env: &Env) {
        {
            let s = env.open().await;
            // Queued one by one, committed in the order queued: ids 1..=5.
            let writes: Vec<_> = (1..=5)
                .map(|i| s.write(vec![Op::Message(msg("#a", 1000 + i, "hi", i as u64))]))
                .collect();
            for (i, w) in writes.into_iter().enumerate() {
                let out = w.await.expect("committed");
                assert_eq!(out, vec![Outcome::Stored { id: i as u64 + 1 }]);
            }
            s.close().await.expect("close");
        }
        let s = env.open().await;
        let page = s.history("#a".into(), None, 3).await.expect("history");
        assert_eq!(ids(&page), vec![3, 4, 5]);
        assert_eq!(page[0], msg("#a", 1003, "hi", 3).with_id(3));
        let older = s.history("#a".into(), Some(3), 10).await.expect("history");
        assert_eq!(ids(&older), vec![1, 2]);
        let loaded = s.load(2).await.expect("load");
        assert_eq!(loaded.last_ids, vec![("#a".to_owned(), 5)]);
        assert_eq!(ids(&loaded.recent), vec![4, 5]);
        s.close().await.expect("close");
    }

    pub(super) async fn ids_are_per_conversation_and_a_resent_message_is_stored_once(env: &Env) {
        let s = env.open().await;
        let out = write(
            &*s,
            vec![
                Op::Message(msg("#a", 1, "one", 1)),
                Op::Message(msg("#b", 1, "other", 2)),
                Op::Message(msg("#a", 1, "two", 3)),
                // The resend of c=1 in the same batch, and one without a client reference.
                Op::Message(msg("#a", 1, "one", 1)),
                Op::Message(NewMessage {
                    client_ref: None,
                    ..msg("#a", 1, "no ref", 0)
                }),
            ],
        )
        .await;
        assert_eq!(
            out,
            vec![
                Outcome::Stored { id: 1 },
                Outcome::Stored { id: 1 },
                Outcome::Stored { id: 2 },
                Outcome::Duplicate {
                    conv: "#a".into(),
                    id: 1,
                    ts_ms: 1
                },
                Outcome::Stored { id: 3 },
            ]
        );
        // A later resend (after a lost ack, to any node): the stored copy, not a new one.
        let again = write(&*s, vec![Op::Message(msg("#a", 9, "two", 3))]).await;
        assert_eq!(
            again,
            vec![Outcome::Duplicate {
                conv: "#a".into(),
                id: 2,
                ts_ms: 1
            }]
        );
        // The same reference from another key is another message.
        let other = write(
            &*s,
            vec![Op::Message(NewMessage {
                from_key: [2; 32],
                ..msg("#a", 9, "bob's", 3)
            })],
        )
        .await;
        assert_eq!(other, vec![Outcome::Stored { id: 4 }]);
        assert_eq!(s.count("#a".into()).await.expect("count"), 4);
        assert_eq!(s.last_id("#a".into()).await.expect("last id"), 4);
        assert_eq!(s.last_id("#b".into()).await.expect("last id"), 1);
        assert_eq!(s.last_id("#none".into()).await.expect("last id"), 0);
        s.close().await.expect("close");
    }

    pub(super) async fn after_reads_a_bounded_page_of_what_follows_an_id(env: &Env) {
        let s = env.open().await;
        let ops = (1..=20)
            .map(|i| Op::Message(msg("#a", 1000, &"x".repeat(10), i)))
            .chain([Op::Message(msg("#b", 1000, "other", 100))])
            .collect();
        write(&*s, ops).await;
        // A hole, as retention by age can leave one.
        env.exec("DELETE FROM messages WHERE conv = '#a' AND id = 7")
            .await;
        let after = |after, upto, limit, bytes| s.after("#a".into(), after, upto, limit, bytes);
        // A hole (7) is skipped, `upto` is the last id, `limit` caps.
        assert_eq!(
            ids(&after(4, 12, 100, usize::MAX).await.expect("after")),
            vec![5, 6, 8, 9, 10, 11, 12]
        );
        assert_eq!(
            ids(&after(4, 20, 3, usize::MAX).await.expect("after")),
            vec![5, 6, 8]
        );
        // Bytes cap: each row is 10 + 5 bytes (text, nick); one row at least.
        assert_eq!(
            ids(&after(0, 20, 100, 31).await.expect("after")),
            vec![1, 2, 3]
        );
        assert_eq!(ids(&after(0, 20, 100, 1).await.expect("after")), vec![1]);
        assert!(after(20, 30, 100, 1000).await.expect("after").is_empty());
        let b = s.after("#b".into(), 0, 9, 10, 100).await.expect("after");
        assert_eq!(ids(&b), vec![1]);
        s.close().await.expect("close");
    }

    pub(super) async fn many_queued_writes_share_few_commits(env: &Env) {
        let s = env.open().await;
        let writes: Vec<_> = (1..=500)
            .map(|i| s.write(vec![Op::Message(msg("#a", 0, "x", i))]))
            .collect();
        for (i, w) in writes.into_iter().enumerate() {
            assert_eq!(
                w.await.expect("committed"),
                vec![Outcome::Stored { id: i as u64 + 1 }]
            );
        }
        let st = s.stats();
        assert_eq!(st.ops, 500);
        // Queued faster than one commit: the writer must have grouped them.
        assert!(st.commits < 500, "{st:?}");
        assert_eq!(s.count("#a".into()).await.expect("count"), 500);
        s.close().await.expect("close");
    }

    /// A running server's reload: the retention set later holds for the prunes after it.
    pub(super) async fn a_new_retention_holds_for_the_next_prune(env: &Env) {
        let s = env.open_with(StoreConfig::default()).await;
        let ops = (1..=6)
            .map(|i| Op::Message(msg("#a", 1_000 * i as i64, "x", i)))
            .collect();
        write(&*s, ops).await;
        // No retention at first: nothing goes.
        assert_eq!(s.prune(14_000).await.expect("pruned"), 0);
        s.set_retention(Retention {
            max_per_conv: Some(4),
            max_age: None,
        });
        assert_eq!(s.prune(14_000).await.expect("pruned"), 2);
        s.set_retention(Retention {
            max_per_conv: Some(4),
            max_age: Some(Duration::from_secs(10)),
        });
        // now = 14 s: of 3 to 6, only 3 (ts 3 s) is older than 10 s.
        assert_eq!(s.prune(14_000).await.expect("pruned"), 1);
        let a = s.history("#a".into(), None, 10).await.expect("history");
        assert_eq!(ids(&a), vec![4, 5, 6]);
        // Back to none: nothing more goes.
        s.set_retention(Retention::default());
        assert_eq!(s.prune(100_000).await.expect("pruned"), 0);
        s.close().await.expect("close");
    }

    pub(super) async fn retention_by_count_and_age_keeps_ids_increasing(env: &Env) {
        let config = StoreConfig {
            retention: Retention {
                max_per_conv: Some(3),
                max_age: Some(Duration::from_secs(10)),
            },
            ..StoreConfig::default()
        };
        let s = env.open_with(config).await;
        let ops = (1..=6)
            .map(|i| Op::Message(msg("#a", 1_000 * i as i64, "x", i)))
            .chain([Op::Message(msg("#b", 0, "old", 100))])
            .collect();
        write(&*s, ops).await;
        // now = 14 s: #b's message (ts 0) is older than 10 s; #a keeps 4, 5, 6 by count.
        assert_eq!(s.prune(14_000).await.expect("pruned"), 4);
        let a = s.history("#a".into(), None, 10).await.expect("history");
        assert_eq!(ids(&a), vec![4, 5, 6]);
        let mut last = s.load(10).await.expect("load").last_ids;
        last.sort();
        assert_eq!(last, vec![("#a".into(), 6), ("#b".into(), 1)]);
        // Ids go on from the high-water mark, never back.
        let out = write(&*s, vec![Op::Message(msg("#b", 20_000, "new", 101))]).await;
        assert_eq!(out, vec![Outcome::Stored { id: 2 }]);
        s.close().await.expect("close");
    }

    pub(super) async fn nicks_topics_and_dm_cursors_round_trip(env: &Env) {
        let s = env.open().await;
        let ops = vec![
            set_nick("Alice", 1, 3),
            set_nick("Al", 1, 4),
            Op::SetTopic {
                room: "#a".into(),
                topic: "t".into(),
                by: "Al".into(),
                ts_ms: 9,
            },
            Op::SetTopic {
                room: "#a".into(),
                topic: "t2".into(),
                by: "Al".into(),
                ts_ms: 10,
            },
            Op::Message(dm("@x", 2, "psst", 1)),
            Op::Message(dm("@x", 2, "psst again", 2)),
            Op::DmCursor {
                key: [2; 32],
                conv: "@x".into(),
                upto: 1,
            },
        ];
        let out = write(&*s, ops).await;
        assert_eq!(out[..2], [Outcome::NickBound, Outcome::NickBound]);
        let loaded = s.load(10).await.expect("load");
        // A key holds one nick: the second replaced the first.
        let mut nicks = loaded.nicks.clone();
        nicks.sort();
        assert_eq!(nicks, vec![("Al".to_owned(), [1; 32])]);
        assert_eq!(
            loaded.topics,
            vec![("#a".into(), "t2".into(), "Al".into(), 10)]
        );
        // The DM cursor is kept: only the second DM is still owed to its recipient.
        let owed = s.undelivered([2; 32], None, 10).await.expect("read");
        assert_eq!(owed, vec![("@x".to_owned(), 2)]);
        // A cursor never goes back.
        write(
            &*s,
            vec![Op::DmCursor {
                key: [2; 32],
                conv: "@x".into(),
                upto: 0,
            }],
        )
        .await;
        let owed = s.undelivered([2; 32], None, 10).await.expect("read");
        assert_eq!(owed, vec![("@x".to_owned(), 2)]);
        s.close().await.expect("close");
    }

    pub(super) async fn moderation_entries_are_set_replaced_cleared_and_loaded(env: &Env) {
        let s = env.open().await;
        let entry =
            |scope: &str, kind: &str, subject: &str, value: &str, ts_ms: i64| crate::ModEntry {
                scope: scope.into(),
                kind: kind.into(),
                subject: subject.into(),
                value: value.into(),
                by: "Al".into(),
                ts_ms,
            };
        let out = write(
            &*s,
            vec![
                Op::SetMod(entry("#a", "owner", "0101", "", 1)),
                Op::SetMod(entry("#a", "mode", "k", "old key", 2)),
                Op::SetMod(entry("#a", "mode", "k", "new key", 3)),
                Op::SetMod(entry("#a", "ban", "net:203.0.113.0/24", "flood", 4)),
                Op::SetMod(entry("", "ban", "fp:abcd", "abuse", 5)),
                Op::SetMod(entry("#b", "op", "0202", "", 6)),
                Op::ClearMod {
                    scope: "#b".into(),
                    kind: "op".into(),
                    subject: "0202".into(),
                },
                // Clearing what is not there changes nothing.
                Op::ClearMod {
                    scope: "#c".into(),
                    kind: "op".into(),
                    subject: "0303".into(),
                },
            ],
        )
        .await;
        assert_eq!(out, vec![Outcome::Done; 8]);
        // Kept across a reopen: one entry per (scope, kind, subject), the last one set.
        s.close().await.expect("close");
        let s = env.open().await;
        let mut got = s.load(0).await.expect("load").moderation;
        got.sort_by(|x, y| (&x.scope, &x.kind, &x.subject).cmp(&(&y.scope, &y.kind, &y.subject)));
        assert_eq!(
            got,
            vec![
                entry("", "ban", "fp:abcd", "abuse", 5),
                entry("#a", "ban", "net:203.0.113.0/24", "flood", 4),
                entry("#a", "mode", "k", "new key", 3),
                entry("#a", "owner", "0101", "", 1),
            ]
        );
        // One scope at a time, as a node of a cluster reads one again.
        let mut room = s.moderation("#a".into()).await.expect("read #a");
        room.sort_by(|x, y| (&x.kind, &x.subject).cmp(&(&y.kind, &y.subject)));
        assert_eq!(room, got[1..].to_vec());
        let server = s
            .moderation(String::new())
            .await
            .expect("read the server's");
        assert_eq!(server, got[..1].to_vec());
        assert_eq!(s.moderation("#b".into()).await.expect("read #b"), vec![]);
        s.close().await.expect("close");
    }

    pub(super) async fn undelivered_lists_conversations_not_messages_in_pages(env: &Env) {
        let s = env.open().await;
        let ops = vec![
            Op::Message(dm("@a", 2, "one", 1)),
            Op::Message(dm("@a", 2, "two", 2)),
            Op::Message(dm("@a", 2, "three", 3)),
            Op::Message(dm("@b", 2, "other", 4)),
            Op::Message(dm("@c", 3, "not bob's", 5)),
            // Delivered up to 1 in @a; everything in @d was delivered.
            Op::DmCursor {
                key: [2; 32],
                conv: "@a".into(),
                upto: 1,
            },
            Op::Message(dm("@d", 2, "seen", 6)),
            Op::DmCursor {
                key: [2; 32],
                conv: "@d".into(),
                upto: 1,
            },
        ];
        write(&*s, ops).await;
        let u = |after: Option<&str>, limit| s.undelivered([2; 32], after.map(Into::into), limit);
        assert_eq!(
            u(None, 10).await.expect("read"),
            vec![("@a".into(), 2), ("@b".into(), 1)]
        );
        assert_eq!(u(None, 1).await.expect("read"), vec![("@a".into(), 2)]);
        assert_eq!(
            u(Some("@a"), 1).await.expect("read"),
            vec![("@b".into(), 1)]
        );
        assert!(u(Some("@b"), 1).await.expect("read").is_empty());
        let none = s.undelivered([9; 32], None, 10).await.expect("read");
        assert!(none.is_empty());
        s.close().await.expect("close");
    }

    pub(super) async fn nick_owners_last_seen_times_are_kept_and_released_nicks_forgotten(
        env: &Env,
    ) {
        {
            let s = env.open().await;
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
                Op::ReleaseNick {
                    key: [2; 32],
                    seen_by: 100,
                },
                set_nick("b0b", 4, 600),
                // carol's expired nick is taken by key 5 in another case: released, then bound.
                Op::ReleaseNick {
                    key: [3; 32],
                    seen_by: 650,
                },
                set_nick("Carol", 5, 700),
            ];
            write(&*s, ops).await;
            s.close().await.expect("close");
        }
        let s = env.open().await;
        let mut loaded = s.load(10).await.expect("load");
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
        s.close().await.expect("close");
    }

    pub(super) async fn a_nick_another_key_holds_is_not_taken(env: &Env) {
        let s = env.open().await;
        let out = write(
            &*s,
            vec![
                set_nick("alice", 1, 100),
                set_nick("bob", 2, 100),
                // Key 2 asks for key 1's nick (in another case): refused, and keeps its own.
                set_nick("Alice", 2, 200),
                // Key 1 respells its own nick: fine.
                set_nick("ALICE", 1, 300),
            ],
        )
        .await;
        assert_eq!(
            out,
            vec![
                Outcome::NickBound,
                Outcome::NickBound,
                Outcome::NickTaken,
                Outcome::NickBound
            ]
        );
        let mut nicks = s.load(0).await.expect("load").nicks;
        nicks.sort();
        assert_eq!(
            nicks,
            vec![("ALICE".to_owned(), [1; 32]), ("bob".to_owned(), [2; 32])]
        );
        s.close().await.expect("close");
    }

    pub(super) async fn a_nick_seen_since_the_cutoff_is_kept(env: &Env) {
        let s = env.open().await;
        let out = write(
            &*s,
            vec![
                set_nick("alice", 1, 100),
                // Seen (by another node, say) after the time the release allows.
                Op::Seen {
                    key: [1; 32],
                    ts_ms: 900,
                },
                Op::ReleaseNick {
                    key: [1; 32],
                    seen_by: 899,
                },
                // So the claim that relied on the release finds the nick taken.
                set_nick("Alice", 2, 1000),
                // A key that holds no nick: nothing to release, nothing kept.
                Op::ReleaseNick {
                    key: [7; 32],
                    seen_by: 0,
                },
            ],
        )
        .await;
        assert_eq!(
            out,
            vec![
                Outcome::NickBound,
                Outcome::Done,
                Outcome::NickKept { seen_ms: 900 },
                Outcome::NickTaken,
                Outcome::Done,
            ]
        );
        // Released at exactly the time allowed.
        let out = write(
            &*s,
            vec![
                Op::ReleaseNick {
                    key: [1; 32],
                    seen_by: 900,
                },
                set_nick("Alice", 2, 1000),
            ],
        )
        .await;
        assert_eq!(out, vec![Outcome::Done, Outcome::NickBound]);
        let nicks = s.load(0).await.expect("load").nicks;
        assert_eq!(nicks, vec![("Alice".to_owned(), [2; 32])]);
        s.close().await.expect("close");
    }

    pub(super) async fn read_markers_only_move_forward_and_are_per_key(env: &Env) {
        let s = env.open().await;
        let mark = |key: u8, conv: &str, upto: u64| Op::ReadMarker {
            key: [key; 32],
            conv: conv.into(),
            upto,
        };
        write(
            &*s,
            vec![mark(1, "#a", 5), mark(1, "#b", 2), mark(2, "#a", 9)],
        )
        .await;
        // Back (in another batch, and in the same one): nothing changes; forward: it moves.
        write(&*s, vec![mark(1, "#a", 3)]).await;
        write(&*s, vec![mark(1, "#b", 7), mark(1, "#b", 4)]).await;
        s.close().await.expect("close");
        let s = env.open().await;
        assert_eq!(
            s.markers([1; 32], 10).await.expect("markers"),
            vec![("#a".to_owned(), 5), ("#b".to_owned(), 7)]
        );
        assert_eq!(
            s.markers([2; 32], 10).await.expect("markers"),
            vec![("#a".to_owned(), 9)]
        );
        assert_eq!(
            s.markers([1; 32], 1).await.expect("markers"),
            vec![("#a".to_owned(), 5)],
            "limited"
        );
        assert_eq!(s.markers([3; 32], 10).await.expect("markers"), vec![]);
        s.close().await.expect("close");
    }

    pub(super) async fn search_finds_every_word_newest_first_in_one_conversation(env: &Env) {
        let s = env.open().await;
        let mut ops = Vec::new();
        for i in 1..=30u64 {
            let text = match i % 3 {
                0 => format!("Deploy the Rocket number {i}"),
                1 => format!("rocket fuel {i}"),
                _ => format!("lunch at noon {i}"),
            };
            ops.push(Op::Message(msg("#a", i as i64, &text, i)));
        }
        ops.push(Op::Message(msg(
            "#b",
            1,
            "deploy the rocket elsewhere",
            100,
        )));
        ops.push(Op::Message(NewMessage {
            kind: 2,
            ..msg("#a", 40, "alice kicked the rocket deployer", 101)
        }));
        ops.push(Op::Message(NewMessage {
            kind: 1,
            ..msg("#a", 41, "deploys a ROCKET", 102)
        }));
        write(&*s, ops).await;
        let search = |conv: &str, words: &str, before: Option<u64>, limit: usize| {
            let terms = search_terms(words).expect("words");
            s.search(conv.into(), terms, before, limit)
        };
        // Both words, any case, whole words only ("deploys" is not "deploy"), newest first;
        // no moderation event (kind 2), no other conversation.
        let hits = search("#a", "rocket DEPLOY", None, 100)
            .await
            .expect("search");
        assert_eq!(ids(&hits), vec![30, 27, 24, 21, 18, 15, 12, 9, 6, 3]);
        assert!(hits.iter().all(|r| r.conv == "#a"));
        assert_eq!(hits[0].text, "Deploy the Rocket number 30");
        // Pages: a limit, then the next page below the last id seen.
        let page = search("#a", "rocket", None, 4).await.expect("search");
        assert_eq!(ids(&page), vec![32, 30, 28, 27]);
        let next = search("#a", "rocket", Some(27), 4).await.expect("search");
        assert_eq!(ids(&next), vec![25, 24, 22, 21]);
        let b = search("#b", "rocket deploy", None, 10)
            .await
            .expect("search");
        assert_eq!(ids(&b), vec![1]);
        assert_eq!(
            ids(&search("#a", "mars", None, 10).await.expect("search")),
            vec![]
        );
        // Query syntax is only words: quotes, stars and operators match nothing special.
        let odd = search("#a", "\"rocket\" OR* NEAR(x", None, 10)
            .await
            .expect("search");
        assert_eq!(
            ids(&odd),
            vec![],
            "every word must match, 'or', 'near' and 'x' too"
        );
        // The index follows the stored text: an edit (one update of `messages`, whoever runs
        // it) and a deletion by retention.
        s.close().await.expect("close");
        env.exec("UPDATE messages SET text = 'nothing here' WHERE conv = '#a' AND id = 30")
            .await;
        env.exec("UPDATE messages SET text = 'a rocket to mars' WHERE conv = '#a' AND id = 2")
            .await;
        let s = env
            .open_with(StoreConfig {
                retention: Retention {
                    max_per_conv: Some(30),
                    max_age: None,
                },
                ..StoreConfig::default()
            })
            .await;
        let terms = |w: &str| search_terms(w).expect("words");
        let hits = s.search("#a".into(), terms("mars"), None, 10).await;
        assert_eq!(ids(&hits.expect("search")), vec![2]);
        let hits = s.search("#a".into(), terms("number"), Some(31), 2).await;
        assert_eq!(
            ids(&hits.expect("search")),
            vec![27, 24],
            "30 no longer says it"
        );
        s.prune(0).await.expect("prune");
        let hits = s.search("#a".into(), terms("mars"), None, 10).await;
        assert_eq!(ids(&hits.expect("search")), vec![], "id 2 is pruned");
        let hits = s.search("#a".into(), terms("rocket"), None, 100).await;
        assert_eq!(
            hits.expect("search").len(),
            9 + 9 + 1,
            "4, 7, .. 28; 3, 6, .. 27 (30 was edited); 32"
        );
        s.close().await.expect("close");
    }

    /// Edits, deletions and reactions: allowed only on a message still there (and for a
    /// given author, only its own), each recorded as an event with the next id; a deleted
    /// message's text and its edits' texts are gone from the rows; counts are read back
    /// with the messages.
    pub(super) async fn messages_are_edited_deleted_and_reacted_to(env: &Env) {
        let s = env.open().await;
        let alice = [1; 32];
        let bob = [2; 32];
        let amend = |target: u64, by: [u8; 32], author: Option<[u8; 32]>, change: Change| {
            Op::Amend(Amend {
                conv: "#a".into(),
                target,
                ts_ms: 50,
                by_key: by,
                by_nick: "someone".into(),
                to_key: None,
                to_nick: None,
                author,
                change,
            })
        };
        let react = |t, by, e: &str| amend(t, by, None, Change::React(e.into()));
        write(
            &*s,
            vec![
                Op::Message(msg("#a", 1, "first", 1)),
                Op::Message(msg("#a", 2, "secret words", 2)),
            ],
        )
        .await;
        let out = write(
            &*s,
            vec![
                // Bob edits alice's message: refused; alice edits it.
                amend(1, bob, Some(bob), Change::Edit("nope".into())),
                amend(1, alice, Some(alice), Change::Edit("first, edited".into())),
                amend(
                    2,
                    alice,
                    Some(alice),
                    Change::Edit("secret words, again".into()),
                ),
                react(1, bob, "👍"),
                react(1, alice, "👍"),
                react(1, bob, "👍"),
                react(1, bob, "🎉"),
                amend(1, bob, None, Change::Unreact("🎉".into())),
                amend(1, bob, None, Change::Unreact("🎉".into())),
                // No message 99; an event is not a message.
                react(99, bob, "👍"),
                react(3, bob, "👍"),
            ],
        )
        .await;
        let event = |o: &Outcome| match o {
            Outcome::Amended(r) => (r.id, r.kind, r.target, r.text.clone(), r.reactions.clone()),
            other => panic!("not amended: {other:?}"),
        };
        assert_eq!(out[0], Outcome::Refused(Refusal::NotAuthor));
        assert_eq!(
            event(&out[1]),
            (3, kind::EDIT, Some(1), "first, edited".into(), vec![])
        );
        assert_eq!(event(&out[2]).0, 4);
        assert_eq!(
            event(&out[3]),
            (5, kind::REACT, Some(1), "👍".into(), vec![("👍".into(), 1)])
        );
        assert_eq!(event(&out[4]).4, vec![("👍".into(), 2)]);
        assert_eq!(out[5], Outcome::Refused(Refusal::Unchanged));
        assert_eq!(event(&out[6]).0, 7);
        assert_eq!(
            event(&out[7]),
            (
                8,
                kind::UNREACT,
                Some(1),
                "🎉".into(),
                vec![("🎉".into(), 0)]
            )
        );
        assert_eq!(out[8], Outcome::Refused(Refusal::Unchanged));
        assert_eq!(out[9], Outcome::Refused(Refusal::NoMessage));
        assert_eq!(out[10], Outcome::Refused(Refusal::NoMessage));
        let page = s.history("#a".into(), None, 10).await.expect("history");
        assert_eq!(ids(&page), (1..=8).collect::<Vec<_>>());
        assert_eq!(
            (page[0].text.as_str(), page[0].edited),
            ("first, edited", true)
        );
        assert_eq!(page[0].reactions, vec![("👍".to_owned(), 2)]);
        // A reaction's event carries its count as of then.
        assert_eq!(page[4].reactions, vec![("👍".to_owned(), 1)]);
        // An operator (no author required) deletes message 2: its text and its edit's go.
        let out = write(&*s, vec![amend(2, bob, None, Change::Delete)]).await;
        assert_eq!(event(&out[0]).1, kind::DELETE);
        let out = write(
            &*s,
            vec![
                amend(2, alice, Some(alice), Change::Edit("back".into())),
                react(2, bob, "👍"),
                amend(2, bob, None, Change::Delete),
            ],
        )
        .await;
        assert!(
            out.iter()
                .all(|o| *o == Outcome::Refused(Refusal::NoMessage)),
            "{out:?}"
        );
        let page = s
            .after("#a".into(), 0, 100, 100, 1 << 20)
            .await
            .expect("after");
        assert_eq!(ids(&page), (1..=9).collect::<Vec<_>>());
        assert_eq!((page[1].text.as_str(), page[1].deleted), ("", true));
        assert_eq!(
            (page[3].text.as_str(), page[3].deleted),
            ("", true),
            "its edit"
        );
        assert_eq!(page[0].reactions, vec![("👍".to_owned(), 2)]);
        assert_eq!((page[8].kind, page[8].target), (kind::DELETE, Some(2)));
        // The loaded cache says the same.
        let loaded = s.load(3).await.expect("load");
        assert_eq!(ids(&loaded.recent), vec![7, 8, 9]);
        // At most MAX_EMOJIS different emojis on one message.
        let many: Vec<Op> = (0..=MAX_EMOJIS)
            .map(|i| react(1, bob, &format!("e{i}")))
            .collect();
        let out = write(&*s, many).await;
        assert!(
            matches!(out[MAX_EMOJIS - 2], Outcome::Amended(_)),
            "{out:?}"
        );
        assert_eq!(
            out[MAX_EMOJIS - 1],
            Outcome::Refused(Refusal::TooManyEmojis)
        );
        s.close().await.expect("close");
    }

    /// Search follows edits and deletions made through the store ([`Op::Amend`]): an
    /// edited-away word is no longer found and the new text is; nothing of a deleted message
    /// (or of its edits) is found; the amend events themselves (whose rows carry the edit's
    /// text or the emoji) are never results; a match carries its state and reactions.
    pub(super) async fn search_follows_edits_and_deletions(env: &Env) {
        let s = env.open().await;
        let alice = [1; 32];
        let amend = |target: u64, change: Change| {
            Op::Amend(Amend {
                conv: "#a".into(),
                target,
                ts_ms: 50,
                by_key: alice,
                by_nick: "alice".into(),
                to_key: None,
                to_nick: None,
                author: Some(alice),
                change,
            })
        };
        write(
            &*s,
            vec![
                Op::Message(msg("#a", 1, "launch the falcon today", 1)),
                Op::Message(msg("#a", 2, "the falcon is secret", 2)),
                Op::Message(msg("#a", 3, "falcon photos", 3)),
            ],
        )
        .await;
        let out = write(
            &*s,
            vec![
                // 4: 1 edited, 5: 2 edited, 6: 2 deleted, 7: a reaction (emoji "falcon" is
                // not one, but the row's text must not match either way), 8: its edit.
                amend(1, Change::Edit("launch the heron tomorrow".into())),
                amend(2, Change::Edit("the falcon is hidden".into())),
                amend(2, Change::Delete),
                amend(3, Change::React("👍".into())),
                amend(3, Change::Edit("heron photos".into())),
            ],
        )
        .await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Amended(_))),
            "{out:?}"
        );
        let search = |words: &str| {
            let terms = search_terms(words).expect("words");
            s.search("#a".into(), terms, None, 100)
        };
        assert_eq!(ids(&search("falcon").await.expect("search")), vec![]);
        assert_eq!(ids(&search("secret").await.expect("search")), vec![]);
        assert_eq!(ids(&search("hidden").await.expect("search")), vec![]);
        assert_eq!(ids(&search("today").await.expect("search")), vec![]);
        let heron = search("heron").await.expect("search");
        assert_eq!(
            ids(&heron),
            vec![3, 1],
            "the messages, not their edit events"
        );
        assert!(heron.iter().all(|r| kind::is_message(r.kind) && r.edited));
        assert_eq!(heron[1].text, "launch the heron tomorrow");
        assert_eq!(heron[0].reactions, vec![("👍".to_owned(), 1)]);
        assert!(heron[1].reactions.is_empty());
        // Still so after a reopen (the index is the database's, not the process's).
        s.close().await.expect("close");
        let s = env.open().await;
        let terms = |w: &str| search_terms(w).expect("words");
        let hits = s.search("#a".into(), terms("falcon"), None, 100).await;
        assert_eq!(ids(&hits.expect("search")), vec![]);
        let hits = s
            .search("#a".into(), terms("tomorrow heron"), None, 100)
            .await;
        assert_eq!(ids(&hits.expect("search")), vec![1]);
        s.close().await.expect("close");
        // SQLite: no word of a deleted or edited-away text is left in the file, the search
        // index included (its rows are removed, not marked deleted; secure_delete).
        if let Database::Sqlite(path) = &env.db {
            let c = Connection::open(path).expect("open");
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
            drop(c);
            let bytes = std::fs::read(path).expect("read");
            let has = |w: &str| bytes.windows(w.len()).any(|b| b == w.as_bytes());
            assert!(has("heron"), "the file is the one searched");
            for gone in ["falcon", "alcon", "secret", "hidden", "today"] {
                assert!(!has(gone), "{gone} is still in {}", path.display());
            }
        }
    }

    /// A database of the schema before edits (SQLite 5, PostgreSQL 3: with the search index
    /// and read markers) migrates up: its messages, search index and markers are kept, and
    /// edits and deletions of its old messages reach the index.
    pub(super) async fn a_database_from_before_edits_migrates_up_and_keeps_its_search(env: &Env) {
        let (schema, key) = match &env.db {
            Database::Sqlite(_) => (
                format!(
                    "{}; PRAGMA user_version = 5;",
                    SQLITE_MIGRATIONS[..5].join(";\n")
                ),
                format!("X'{}'", "01".repeat(32)),
            ),
            Database::Postgres(_) => (
                format!(
                    "CREATE TABLE chirp_schema (version INT NOT NULL);
                     {};
                     INSERT INTO chirp_schema (version) VALUES (3);",
                    POSTGRES_MIGRATIONS[..3].join(";\n")
                ),
                format!("'\\x{}'::bytea", "01".repeat(32)),
            ),
        };
        env.exec(&schema).await;
        env.exec(&format!(
            "INSERT INTO messages (conv, id, ts, from_key, from_nick, kind, text)
                 VALUES ('#a', 1, 1, {key}, 'alice', 0, 'the falcon flies'),
                        ('#a', 2, 2, {key}, 'alice', 0, 'falcon photos');
             INSERT INTO convs (conv, last_id) VALUES ('#a', 2);
             INSERT INTO read_markers (key, conv, upto) VALUES ({key}, '#a', 1);"
        ))
        .await;
        let s = env.open().await;
        let terms = |w: &str| search_terms(w).expect("words");
        let hits = s.search("#a".into(), terms("falcon"), None, 10).await;
        assert_eq!(ids(&hits.expect("search")), vec![2, 1]);
        assert_eq!(
            s.markers([1; 32], 10).await.expect("markers"),
            vec![("#a".to_owned(), 1)]
        );
        let amend = |target: u64, change: Change| {
            Op::Amend(Amend {
                conv: "#a".into(),
                target,
                ts_ms: 50,
                by_key: [1; 32],
                by_nick: "alice".into(),
                to_key: None,
                to_nick: None,
                author: Some([1; 32]),
                change,
            })
        };
        let out = write(
            &*s,
            vec![
                amend(1, Change::Edit("the heron flies".into())),
                amend(2, Change::Delete),
            ],
        )
        .await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Amended(_))),
            "{out:?}"
        );
        let hits = s.search("#a".into(), terms("falcon"), None, 10).await;
        assert_eq!(ids(&hits.expect("search")), vec![]);
        let hits = s.search("#a".into(), terms("flies"), None, 10).await;
        assert_eq!(ids(&hits.expect("search")), vec![1]);
        let history = s.history("#a".into(), None, 10).await.expect("history");
        assert_eq!(ids(&history), vec![1, 2, 3, 4], "ids go on after 2");
        assert!(history[0].edited && history[1].deleted && history[1].text.is_empty());
        s.close().await.expect("close");
    }

    pub(super) async fn a_newer_schema_is_refused(env: &Env) {
        env.open().await.close().await.expect("close");
        match &env.db {
            Database::Sqlite(_) => env.exec("PRAGMA user_version = 99").await,
            Database::Postgres(_) => env.exec("UPDATE chirp_schema SET version = 99").await,
        }
        match open(&env.db, StoreConfig::default()).await {
            Err(StoreError::TooNew { found: 99, .. }) => {}
            Err(e) => panic!("expected TooNew, got {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }
}

/// Defines one SQLite test per case, and `ALL` (name, case) for the PostgreSQL run.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(&super::Env::sqlite()).await;
                }
            )*
        }

        type Case = for<'a> fn(&'a Env) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;
        const ALL: &[(&str, Case)] = &[
            $((stringify!($case), |env| Box::pin(cases::$case(env)))),*
        ];
    };
}

suite!(
    written_messages_are_read_back_in_order_after_reopen,
    ids_are_per_conversation_and_a_resent_message_is_stored_once,
    after_reads_a_bounded_page_of_what_follows_an_id,
    many_queued_writes_share_few_commits,
    retention_by_count_and_age_keeps_ids_increasing,
    a_new_retention_holds_for_the_next_prune,
    nicks_topics_and_dm_cursors_round_trip,
    moderation_entries_are_set_replaced_cleared_and_loaded,
    undelivered_lists_conversations_not_messages_in_pages,
    nick_owners_last_seen_times_are_kept_and_released_nicks_forgotten,
    a_nick_another_key_holds_is_not_taken,
    a_nick_seen_since_the_cutoff_is_kept,
    read_markers_only_move_forward_and_are_per_key,
    search_finds_every_word_newest_first_in_one_conversation,
    messages_are_edited_deleted_and_reacted_to,
    search_follows_edits_and_deletions,
    a_database_from_before_edits_migrates_up_and_keeps_its_search,
    a_newer_schema_is_refused,
);

/// A PostgreSQL server of this test binary's own, and a fresh database on it per call.
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

    async fn fresh(&mut self) -> Env {
        self.next += 1;
        let name = format!("case{}", self.next);
        Env {
            db: Database::Postgres(self.server.url()),
            _dir: None,
        }
        .exec(&format!("CREATE DATABASE {name}"))
        .await;
        let url = format!("postgres://chirp@127.0.0.1:{}/{name}", self.server.port());
        Env {
            db: Database::Postgres(url),
            _dir: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // names the case a failure belongs to
async fn postgres_backend_passes_the_suite() {
    let Some(mut pg) = Pg::start() else {
        return;
    };
    for (name, case) in ALL {
        let env = pg.fresh().await;
        eprintln!("postgres: {name}");
        case(&env).await;
    }
}

/// Nodes of a cluster: several writers on one PostgreSQL database, writing to one
/// conversation at once, get unique, dense ids, and every message is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_nodes_get_unique_increasing_ids_from_postgres() {
    let Some(mut pg) = Pg::start() else {
        return;
    };
    let env = pg.fresh().await;
    let nodes = [env.open().await, env.open().await, env.open().await];
    let mut writes = Vec::new();
    for round in 0..50u64 {
        for (n, node) in nodes.iter().enumerate() {
            let ops = (0..4)
                .map(|i| {
                    let mut m = msg("#a", 0, "x", round * 100 + n as u64 * 10 + i);
                    m.from_key = [n as u8 + 1; 32];
                    // Another room too, in another order per node: no deadlock.
                    let conv = if (n + i as usize) % 2 == 0 {
                        "#a"
                    } else {
                        "#b"
                    };
                    m.conv = conv.into();
                    Op::Message(m)
                })
                .collect();
            writes.push(node.write(ops));
        }
    }
    let mut got: Vec<(String, u64)> = Vec::new();
    for w in writes {
        for o in w.await.expect("committed") {
            match o {
                Outcome::Stored { id } => got.push((String::new(), id)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(got.len(), 600);
    for conv in ["#a", "#b"] {
        let all = nodes[0]
            .after(conv.into(), 0, u64::MAX, 10_000, usize::MAX)
            .await
            .expect("read");
        let n = all.len() as u64;
        assert_eq!(ids(&all), (1..=n).collect::<Vec<_>>(), "{conv}: dense ids");
        let mut refs: Vec<_> = all.iter().map(|r| (r.from_key, r.client_ref)).collect();
        refs.sort();
        refs.dedup();
        assert_eq!(refs.len() as u64, n, "{conv}: each message once");
    }
    let total = nodes[0].count("#a".into()).await.expect("count")
        + nodes[0].count("#b".into()).await.expect("count");
    assert_eq!(total, 600);
    for n in nodes {
        n.close().await.expect("close");
    }
}

/// Two nodes racing for one nick: one winner, one [`Outcome::NickTaken`], and the loser keeps
/// the nick it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nick_race_between_two_nodes_has_one_winner() {
    let Some(mut pg) = Pg::start() else {
        return;
    };
    let env = pg.fresh().await;
    let (a, b) = (env.open().await, env.open().await);
    write(&*a, vec![set_nick("ann", 1, 1), set_nick("ben", 2, 1)]).await;
    for round in 0..20 {
        let nick = format!("prize{round}");
        let (x, y) = tokio::join!(
            a.write(vec![set_nick(&nick, 1, 2)]),
            b.write(vec![set_nick(&nick, 2, 2)])
        );
        let (x, y) = (x.expect("a"), y.expect("b"));
        let won = [&x[0], &y[0]]
            .iter()
            .filter(|o| ***o == Outcome::NickBound)
            .count();
        let lost = [&x[0], &y[0]]
            .iter()
            .filter(|o| ***o == Outcome::NickTaken)
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {x:?} {y:?}");
        let nicks = a.load(0).await.expect("load").nicks;
        let holders: Vec<_> = nicks.iter().filter(|(n, _)| *n == nick).collect();
        assert_eq!(holders.len(), 1, "{nicks:?}");
        // Each key holds exactly one nick: the loser kept its previous one.
        assert_eq!(nicks.len(), 2, "{nicks:?}");
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// A database written by schema 1 (no last-seen times) opens, and its nicks count as seen at
/// the upgrade: none of them expires early.
#[test]
fn a_schema_1_database_is_migrated_and_its_nicks_count_as_seen_at_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    {
        let c = Connection::open(&path).expect("open");
        c.execute_batch(SQLITE_MIGRATIONS[0]).expect("schema 1");
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
    let store = Sqlite::open(&path, StoreConfig::default()).expect("migrates");
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
    assert_eq!(version, SQLITE_MIGRATIONS.len() as i64);
    // The migrated table takes the new operations.
    store
        .write(vec![Op::Seen {
            key: [1; 32],
            ts_ms: after + 5,
        }])
        .blocking_recv()
        .expect("answered")
        .expect("committed");
    let loaded = store.reader().expect("reader").load(10).expect("load");
    assert_eq!(loaded.seen, vec![([1; 32], after + 5)]);
}

/// `sslmode=require`: the connection is encrypted and the server's certificate verified
/// against the CA `sslrootcert` names; without that CA the connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Some(pg) = Pg::start() else {
        return;
    };
    if !chirp_testsvc::require("openssl", chirp_testsvc::openssl_available()) {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = chirp_testsvc::make_certs(certs.path()).expect("test certificates");
    // The server's key and certificate in its data directory, owned by its user, 0600.
    let data = pg.server.data_dir();
    let owner = std::fs::metadata(&data).expect("data dir").uid();
    for (from, f) in [(&tls.key, "server.key"), (&tls.cert, "server.pem")] {
        let to = data.join(format!("tls-{f}"));
        std::fs::copy(from, &to).expect("copy");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&to, Some(owner), None).expect("chown");
    }
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            data.join("tls-server.pem").display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            data.join("tls-server.key").display()
        ),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        pg.server.psql(&sql).expect("configure TLS");
    }
    let port = pg.server.port();
    let ca = &tls.ca;
    let url = format!(
        "postgres://chirp@127.0.0.1:{port}/chirp?sslmode=require&sslrootcert={}",
        ca.display()
    );
    // The reload is asynchronous: TLS is on within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match open(&Database::Postgres(url.clone()), StoreConfig::default()).await {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("TLS connection failed: {e}"),
        }
    };
    let out = write(&*store, vec![Op::Message(msg("#tls", 1, "secret", 1))]).await;
    assert_eq!(out, vec![Outcome::Stored { id: 1 }]);
    let encrypted = pg
        .server
        .psql(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.application_name = 'chirp'",
        )
        .expect("query");
    assert!(
        encrypted.trim().parse::<u32>().expect("count") >= 1,
        "no encrypted connection: {encrypted}"
    );
    store.close().await.expect("close");
    // Without the CA that signed the server's certificate: refused, naming the cause.
    let url = format!("postgres://chirp@127.0.0.1:{port}/chirp?sslmode=require");
    match open(&Database::Postgres(url), StoreConfig::default()).await {
        Err(e) => assert!(e.to_string().to_lowercase().contains("certificate"), "{e}"),
        Ok(_) => panic!("a certificate from an unknown CA was accepted"),
    }
}
