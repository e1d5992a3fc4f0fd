//! Issue 14, memory under traffic: a client that sends faster than the server's database
//! commits is held back at its own end, not queued in the server's memory. The database's
//! write lock is held from outside for two seconds while one client says 8,000 messages:
//! the server stops taking messages once 256 wait for their commit, so flow control
//! lets the client's transport get only a window's worth further, and the rest waits in the
//! client. Once the lock is released, every message is stored and acknowledged. The real
//! path in one process: the tokio runner with its SQLite store, a `client::spawn` session
//! over UDP on loopback. Every wait is bounded.

use std::time::Duration;

use chirp_chat::client::{self, ClientConfig, Event, Target};
use chirp_chat::wire::ServerMsg;
use chirp_proto::handshake::StaticSecret;

mod common;
use common::{Srv, random_key};

const WAIT: Duration = Duration::from_secs(60);
/// Messages said, of [`TEXT`] bytes each: 1.6 MB, three times the server's receive window.
const N: usize = 8_000;
const TEXT: usize = 200;

/// The session's next event, by `deadline`.
async fn next(
    ev: &mut tokio::sync::mpsc::Receiver<Event>,
    deadline: tokio::time::Instant,
) -> Event {
    tokio::time::timeout_at(deadline, ev.recv())
        .await
        .expect("an event within the limit")
        .expect("the session runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_faster_than_the_database_waits_at_its_own_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chirp.db");
    let server = Srv::start(
        dir.path(),
        common::config(|c| {
            c.server.burst = 100_000;
            c.server.per_sec = 100_000;
        }),
    );
    let addr = server.addr;

    let mut c = ClientConfig::new(addr, "fast");
    c.bind = "127.0.0.1:0".parse().expect("addr");
    c.rooms = vec!["#r".into()];
    c.identity = Some(StaticSecret(random_key()));
    let (h, mut ev, _task) = client::spawn(c).expect("client starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Event::Server(ServerMsg::Joined { .. }) = next(&mut ev, deadline).await {
            break;
        }
    }

    // The database's write lock, held from outside: the server's writer waits for it.
    let lock = rusqlite::Connection::open(&db).expect("open the database");
    lock.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    // The server's writer waits up to 5 s for a lock (its busy timeout): release it well
    // before.
    let release_by = tokio::time::Instant::now() + Duration::from_millis(3500);

    let text = "x".repeat(TEXT);
    for _ in 0..N {
        h.say(Target::Room("#r".into()), text.clone(), false)
            .await
            .expect("the session takes it");
    }
    // Let the transport send all it may: until what the server has acknowledged stops
    // growing (two readings 300 ms apart agree), or the lock must go.
    let mut acked = Vec::new();
    let settle = release_by;
    let stats = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.stats().await.expect("stats");
        let stats = loop {
            match next(&mut ev, deadline).await {
                Event::Stats(Some(s)) => break s,
                Event::Delivered { .. } => panic!("nothing can be stored while the lock is held"),
                _ => {}
            }
        };
        acked.push(stats.messages_acked);
        let settled = acked.len() >= 2 && acked[acked.len() - 2] == stats.messages_acked;
        if (settled && stats.messages_acked > 0) || tokio::time::Instant::now() >= settle {
            break stats;
        }
    };
    // The server took at most 256 messages to write, 1,024 more into its event channel and a
    // receive window (512 KiB, 2,600 of these messages) beyond what it took: about 3,900.
    // Without the bound it took them all.
    assert!(
        stats.messages_acked < 4_500,
        "the server took {} of {N} messages while its database was locked",
        stats.messages_acked
    );
    assert!(
        stats.messages_acked > 1_000,
        "readings {acked:?}: {stats:?}"
    );

    // Released: everything is stored and acknowledged, once, in order.
    lock.execute_batch("COMMIT")
        .expect("release the write lock");
    drop(lock);
    let mut delivered = 0;
    let mut last_id = 0;
    while delivered < N {
        if let Event::Delivered { id, .. } = next(&mut ev, deadline).await {
            assert!(id > last_id, "in order: {id} after {last_id}");
            last_id = id;
            delivered += 1;
        }
    }
    server.shutdown(Duration::from_secs(10)).await;
}
