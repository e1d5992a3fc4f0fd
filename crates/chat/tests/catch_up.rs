//! A client cut off while 5,000 messages are posted to its room, and the server restarted
//! meanwhile, gets every one when it comes back: once, in order, before anything newer. The
//! real path in one process: the tokio runner with its SQLite store (reopened by the restart)
//! and `client::spawn` sessions over UDP on loopback, the cut-off one behind a relay that can
//! drop everything. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chirp_chat::client::{self, ClientConfig, ClientHandle, Event, Target};
use chirp_chat::runner::RunnerConfig;
use chirp_chat::wire::{Msg, ServerMsg};
use chirp_proto::handshake::StaticSecret;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod common;
use common::{Srv, random_key};

const WAIT: Duration = Duration::from_secs(60);
const N: u64 = 5000;

/// A server on `addr` (port 0: any) with the database in `dir`.
async fn start(dir: &std::path::Path, addr: SocketAddr, key: [u8; 32]) -> Srv {
    // After a restart the old socket may take a moment to be released.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let socket = loop {
        match chirp_transport::bind(addr) {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let mut config = RunnerConfig {
        identity: Some(StaticSecret(key)),
        idle_timeout: Duration::from_secs(2),
        ..RunnerConfig::default()
    };
    config.server.burst = 100_000;
    config.server.per_sec = 100_000;
    Srv::spawn(socket, dir, config)
}

/// A UDP relay between one client and the server that drops everything while `cut` is set.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

async fn relay(server: SocketAddr) -> Relay {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("relay bind");
    let addr = socket.local_addr().expect("relay addr");
    let cut = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cut);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut client: Option<SocketAddr> = None;
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if flag.load(Ordering::Relaxed) {
                continue;
            }
            let to = if from == server {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let _ = socket.send_to(&buf[..n], to).await;
        }
    });
    Relay { addr, cut, task }
}

struct Cli {
    h: ClientHandle,
    ev: mpsc::Receiver<Event>,
    _task: JoinHandle<()>,
}

fn client(server: SocketAddr, nick: &str) -> Cli {
    let mut c = ClientConfig::new(server, nick);
    c.bind = "127.0.0.1:0".parse().expect("addr");
    c.rooms = vec!["#r".into()];
    c.identity = Some(StaticSecret(random_key()));
    c.idle_timeout = Duration::from_secs(2);
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(500);
    let (h, ev, task) = client::spawn(c).expect("client starts");
    Cli { h, ev, _task: task }
}

impl Cli {
    /// The next event, within the deadline.
    async fn next(&mut self, deadline: tokio::time::Instant, what: &str) -> Event {
        match tokio::time::timeout_at(deadline, self.ev.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("session ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    async fn joined(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Event::Server(ServerMsg::Joined { .. }) = self.next(deadline, "joined").await {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_for_5000_messages_and_a_restart_gets_each_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_key = random_key();
    let srv = start(dir.path(), "127.0.0.1:0".parse().expect("addr"), server_key).await;
    let addr = srv.addr;
    let bob_link = relay(addr).await;
    let mut alice = client(addr, "alice");
    let mut bob = client(bob_link.addr, "bob");
    alice.joined().await;
    bob.joined().await;
    let say = |h: &ClientHandle, text: String| {
        let h = h.clone();
        async move {
            h.say(Target::Room("#r".into()), text, false)
                .await
                .expect("say")
        }
    };
    say(&alice.h, "before".into()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let first = loop {
        if let Event::Message(m) = bob.next(deadline, "the first message").await {
            break m.id;
        }
    };
    // Bob's link goes dead; Alice posts half, the server restarts, she posts the rest.
    bob_link.cut.store(true, Ordering::Relaxed);
    let mut delivered = 0u64;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut srv = Some(srv);
    for half in 0..2 {
        for i in 0..N / 2 {
            say(&alice.h, format!("m{}", half * (N / 2) + i)).await;
        }
        while delivered < (half + 1) * (N / 2) + 1 {
            match alice.next(deadline, "delivered").await {
                Event::Delivered { .. } => delivered += 1,
                Event::Refused { c, code, message } => panic!("{c} refused: {code} {message}"),
                _ => {}
            }
        }
        if half == 0 {
            // A crash: no goodbye, no linger; only the database survives (reopened by the new
            // server at the same address).
            srv.take().expect("server").kill().await;
            let s = start(dir.path(), addr, server_key).await;
            srv = Some(s);
            // Alice is back before she goes on (nothing of hers is in flight at the crash).
            while !matches!(
                alice.next(deadline, "alice's reconnect").await,
                Event::Welcome { .. }
            ) {}
        }
    }
    // Bob's link comes back: he reconnects and resumes from `first`.
    bob_link.cut.store(false, Ordering::Relaxed);
    let mut got: Vec<Msg> = Vec::new();
    let mut reconnected = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while (got.len() as u64) < N {
        match bob.next(deadline, "the missed messages").await {
            Event::Message(m) => got.push(m),
            Event::Welcome { .. } => reconnected = true,
            _ => {}
        }
    }
    // A new session, which resumed: not the old one's retransmissions.
    assert!(reconnected);
    // And a new one after them.
    say(&alice.h, "after".into()).await;
    let after = loop {
        if let Event::Message(m) = bob.next(deadline, "the message after").await {
            break m;
        }
    };
    let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
    assert_eq!(ids, (first + 1..=first + N).collect::<Vec<_>>());
    let texts: Vec<String> = got.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, (0..N).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(got.iter().all(|m| !m.history && m.c.is_none()));
    assert_eq!((after.id, after.text.as_str()), (first + N + 1, "after"));
    // Nothing more (no duplicate) is pending for Bob.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(e) = bob.ev.try_recv() {
        assert!(!matches!(e, Event::Message(_)), "{e:?}");
    }
    bob_link.task.abort();
    srv.take().expect("server").kill().await;
}
