//! The real path in one process: the tokio server runner with its SQLite store, and client
//! sessions, over UDP on loopback. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use chirp_chat::client::{self, ClientConfig, ClientHandle, Event, Target};
use chirp_chat::runner::RunnerConfig;
use chirp_chat::wire::ServerMsg;
use chirp_proto::handshake::StaticSecret;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

mod common;
use common::{Srv, random_key};

fn start_server(dir: &std::path::Path, tweak: impl FnOnce(&mut RunnerConfig)) -> Srv {
    Srv::start(dir, common::config(tweak))
}

struct Cli {
    h: ClientHandle,
    ev: mpsc::Receiver<Event>,
    /// Messages skipped over while waiting for something else, oldest first.
    backlog: std::collections::VecDeque<chirp_chat::wire::Msg>,
    _task: JoinHandle<()>,
}

fn client(server: SocketAddr, nick: &str, rooms: &[&str], key: [u8; 32]) -> Cli {
    let mut c = ClientConfig::new(server, nick);
    c.bind = "127.0.0.1:0".parse().expect("addr");
    c.rooms = rooms.iter().map(|r| (*r).to_owned()).collect();
    c.identity = Some(StaticSecret(key));
    let (h, ev, task) = client::spawn(c).expect("client starts");
    Cli {
        h,
        ev,
        backlog: Default::default(),
        _task: task,
    }
}

impl Cli {
    /// Waits for the first event `f` accepts, skipping others.
    async fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ev.recv()).await {
                Ok(Some(e)) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                    if let Event::Message(m) = e {
                        self.backlog.push_back(m);
                    }
                }
                Ok(None) => panic!("session ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    async fn joined(&mut self, room: &str) {
        self.until(&format!("joined {room}"), |e| match e {
            Event::Server(ServerMsg::Joined { room: r, .. }) if r == room => Some(()),
            _ => None,
        })
        .await
    }

    async fn message(&mut self, text: &str) -> chirp_chat::wire::Msg {
        if let Some(i) = self.backlog.iter().position(|m| m.text == text) {
            return self.backlog.remove(i).expect("index from position");
        }
        self.until(&format!("message {text:?}"), |e| match e {
            Event::Message(m) if m.text == text => Some(m.clone()),
            _ => None,
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_chat_dm_and_delivery_over_real_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), |_| {});
    let mut a = client(srv.addr, "alice", &["#r"], random_key());
    let mut b = client(srv.addr, "bob", &["#r"], random_key());
    a.joined("#r").await;
    b.joined("#r").await;
    let c =
        a.h.say(Target::Room("#r".into()), "hello bob".into(), false)
            .await
            .expect("say");
    let got = b.message("hello bob").await;
    assert_eq!(
        (got.from.as_str(), got.room.as_deref()),
        ("alice", Some("#r"))
    );
    let id = a
        .until("delivered", |e| match e {
            Event::Delivered { c: dc, id, .. } if *dc == c => Some(*id),
            _ => None,
        })
        .await;
    assert_eq!(id, got.id);
    b.h.say(Target::Nick("alice".into()), "psst".into(), false)
        .await
        .expect("dm");
    let dm = a.message("psst").await;
    assert_eq!((dm.room, dm.to.as_deref()), (None, Some("alice")));
    a.h.finish().await.expect("finish");
    a.until("finished", |e| match e {
        Event::Finished { undelivered } => Some(*undelivered),
        _ => None,
    })
    .await;
    srv.shutdown(WAIT).await;
}

/// 200 sessions in one room (real UDP sockets, one per session, all in this process): every
/// one receives every message, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_in_one_room_all_receive_every_message() {
    const N: usize = 200;
    const MSGS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), |c| {
        c.server.max_sessions_per_ip = N + 10;
        // N new nicks from one address.
        c.server.nick_claim_burst = N as u32;
    });
    let mut clients = Vec::new();
    for i in 0..N {
        clients.push(client(srv.addr, &format!("u{i}"), &["#big"], random_key()));
    }
    for c in &mut clients {
        c.joined("#big").await;
    }
    for k in 0..MSGS {
        let sender = k * 37 % N;
        clients[sender]
            .h
            .say(Target::Room("#big".into()), format!("m{k}"), false)
            .await
            .expect("say");
        // Next message from another sender only after this one is stored, so the expected
        // order is known.
        clients[sender]
            .until("delivered", |e| {
                matches!(e, Event::Delivered { .. }).then_some(())
            })
            .await;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got: Vec<String> = c
            .backlog
            .drain(..)
            .filter(|m| !m.history)
            .map(|m| m.text)
            .collect();
        while got.len() < MSGS {
            let m = c
                .until(&format!("client {i}: message {}", got.len()), |e| match e {
                    Event::Message(m) if !m.history => Some(m.text.clone()),
                    _ => None,
                })
                .await;
            got.push(m);
        }
        let want: Vec<String> = (0..MSGS).map(|k| format!("m{k}")).collect();
        assert_eq!(got, want, "client {i}");
    }
    srv.shutdown(WAIT).await;
}

/// The application stops reading events while it keeps sending commands: the session task
/// must go on serving commands (it never waits on the application), so the application's
/// awaits end. (The driver before the sans-IO session awaited room in the event channel, and
/// the application awaiting room in the command channel then waited forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_channel_does_not_stop_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), |_| {});
    let mut a = client(srv.addr, "alice", &["#r"], random_key());
    a.joined("#r").await;
    // Each `stats` is answered with an event; 3,000 of them fill the event channel (1,024)
    // and then the command channel (256) many times over, while nobody reads events.
    let flood = async {
        for _ in 0..3_000 {
            a.h.stats().await.expect("the session takes the command");
        }
        a.h.say(Target::Room("#r".into()), "still here".into(), false)
            .await
            .expect("say")
    };
    let c = tokio::time::timeout(WAIT, flood)
        .await
        .expect("no command waits for the application to read events");
    // Reading again, everything arrives: the answers, then the delivery.
    let mut stats = 0;
    a.until("delivered", |e| match e {
        Event::Stats(_) => {
            stats += 1;
            None
        }
        Event::Delivered { c: dc, .. } if *dc == c => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(stats, 3_000, "every answer, none lost");
    srv.shutdown(WAIT).await;
}
