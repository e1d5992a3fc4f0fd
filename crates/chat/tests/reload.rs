//! Issue 16: the runner's [`Control`]: it says when the server serves, and takes new limits
//! while running, answering with what changed; a new retention reaches the store and is
//! applied at once (not at the next minute's prune). The tokio runner with its SQLite store on
//! a loopback socket; every wait is bounded.

use std::time::Duration;

use chirp_chat::runner::{self, Control, Reload};
use chirp_chat::server::Limits;
use chirp_store::{NewMessage, Op, Reader, Sqlite, Storage, StoreConfig};
use tokio::sync::{mpsc, oneshot};

mod common;

const WAIT: Duration = Duration::from_secs(20);

fn message(i: u64) -> Op {
    Op::Message(NewMessage {
        conv: "#a".into(),
        // Recent: retention by age (none here) would not touch them.
        ts_ms: runner::now_ms(),
        from_key: [1; 32],
        from_nick: "alice".into(),
        to_key: None,
        to_nick: None,
        kind: 0,
        text: format!("m{i}"),
        client_ref: Some((7, i)),
    })
}

/// Sends `limits` and waits for the answer.
async fn reload(tx: &mpsc::UnboundedSender<Reload>, limits: Limits) -> Vec<String> {
    let (done, answer) = oneshot::channel();
    tx.send(Reload { limits, done })
        .expect("the runner takes reloads");
    let changes = tokio::time::timeout(WAIT, answer)
        .await
        .expect("answered in time")
        .expect("answered");
    changes.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn the_runner_says_when_it_serves_and_applies_new_limits_and_retention_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chirp.db");
    // Six messages stored before the server starts, with no retention.
    let store = Sqlite::open(&db, StoreConfig::default()).expect("store");
    Storage::write(&store, (1..=6).map(message).collect())
        .await
        .expect("written");
    Storage::close(&store).await.expect("closed");

    let store = Sqlite::open(&db, StoreConfig::default()).expect("store");
    let socket = chirp_transport::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let (ready, is_ready) = oneshot::channel();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner::run(
        socket,
        Box::new(store),
        common::config(|_| {}),
        Control {
            ready: Some(ready),
            reload: Some(reload_rx),
        },
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(WAIT, is_ready)
        .await
        .expect("ready in time")
        .expect("told it serves");

    // The same limits: nothing changes.
    assert_eq!(
        reload(&reload_tx, Limits::default()).await,
        Vec::<String>::new()
    );
    // Keep 2 per conversation, and a lower burst: both reported, and the store prunes now.
    let limits = Limits {
        max_per_conv: Some(2),
        burst: 4,
        ..Limits::default()
    };
    assert_eq!(
        reload(&reload_tx, limits).await,
        vec!["burst 10 -> 4", "retention_count none -> 2"]
    );
    let reader = Reader::open(&db).expect("reader");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = reader.count("#a").expect("count");
        if n == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} messages kept, not 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops in time")
        .expect("server task")
        .expect("server ran");
}
