//! Swarms against an in-process server (the tokio runner with its SQLite store) over UDP on
//! loopback: every session joins, and every message reaches every other member once, in
//! order. Not timed; every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chirp_bench::fanout::{self, FanoutConfig};
use chirp_bench::handshake::{self, HandshakeConfig};
use chirp_bench::swarm::{self, Fleet, Scenario, Sessions};
use chirp_chat::client::{ClientConfig, Event, Target};
use chirp_chat::runner::{self, RunnerConfig};
use chirp_chat::wire::ServerMsg;
use chirp_proto::handshake::StaticSecret;
use chirp_store::{Sqlite, StoreConfig};
use indicatif::ProgressBar;
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(60);

fn key() -> StaticSecret {
    let mut k = [0u8; 32];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&chirp_transport::random_seed().to_le_bytes());
    }
    StaticSecret(k)
}

/// A server with the bench's raised limits; stops when the sender is dropped or fires.
fn server(dir: &std::path::Path) -> (SocketAddr, oneshot::Sender<()>) {
    let socket = chirp_transport::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = socket.local_addr().expect("local addr");
    let store = Sqlite::open(&dir.join("chirp.db"), StoreConfig::default()).expect("store");
    let mut config = RunnerConfig {
        identity: Some(key()),
        ..RunnerConfig::default()
    };
    config.server.burst = 1_000_000;
    config.server.per_sec = 1_000_000;
    config.server.max_sessions_per_ip = 1000;
    config.server.nick_claim_burst = 1000;
    config.server.history_on_join = 0;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        runner::run(
            socket,
            Box::new(store),
            config,
            runner::Control::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .expect("server runs");
    });
    (addr, stop)
}

/// Every member says one line once all have joined, and counts the others' lines.
struct Chat {
    members: usize,
    joined: Arc<AtomicUsize>,
    heard: Arc<AtomicUsize>,
    /// By session index: its member number, and whether it joined.
    mine: Vec<(usize, bool)>,
    /// Per session: the lines heard, by member number (each exactly once).
    lines: Vec<Vec<u32>>,
    said: bool,
}

impl Scenario for Chat {
    fn on_event(&mut self, _: Instant, i: usize, event: Event, _: &mut Sessions) {
        match event {
            Event::Server(ServerMsg::Joined { .. }) if !self.mine[i].1 => {
                self.mine[i].1 = true;
                self.joined.fetch_add(1, Ordering::Relaxed);
            }
            Event::Message(m) if m.c.is_none() => {
                let n: usize = m
                    .text
                    .strip_prefix("line from ")
                    .expect("ours")
                    .parse()
                    .expect("n");
                self.lines[i][n] += 1;
                self.heard.fetch_add(1, Ordering::Relaxed);
            }
            Event::Fatal(why) => panic!("session {i}: {why}"),
            _ => {}
        }
    }

    fn poke(&mut self, now: Instant, sessions: &mut Sessions) {
        if self.said || self.joined.load(Ordering::Relaxed) < self.members {
            return;
        }
        self.said = true;
        for (i, &(n, _)) in self.mine.iter().enumerate() {
            let said = sessions.say(
                now,
                i,
                Target::Room("#swarm".into()),
                format!("line from {n}"),
            );
            assert!(said.is_some(), "session {i} runs");
        }
    }

    fn is_done(&self) -> bool {
        false
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < end, "{what} within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_on_two_sockets_all_join_and_hear_every_line_once() {
    const MEMBERS: usize = 50;
    const SOCKETS: usize = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, _stop) = server(dir.path());
    let joined = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(AtomicUsize::new(0));
    let template = ClientConfig::new(addr, "template");
    let fleet = Fleet::start(SOCKETS, &template, MEMBERS, 16, |k| {
        let chat = Chat {
            members: MEMBERS,
            joined: Arc::clone(&joined),
            heard: Arc::clone(&heard),
            mine: Vec::new(),
            lines: Vec::new(),
            said: false,
        };
        let setup = move |me: &mut Chat, sessions: &mut Sessions| {
            for n in (0..MEMBERS).filter(|&n| swarm::place(n, SOCKETS) == k) {
                let mut c = ClientConfig::new(addr, format!("swarm{n}"));
                c.rooms = vec!["#swarm".into()];
                c.identity = Some(key());
                c.pace = false;
                let i = sessions.add(c);
                assert_eq!(i, me.mine.len(), "indices count up from 0");
                me.mine.push((n, false));
                me.lines.push(vec![0; MEMBERS]);
            }
        };
        (chat, setup)
    })
    .expect("swarms start");
    wait_until("every session joins", || {
        joined.load(Ordering::Relaxed) == MEMBERS
    })
    .await;
    fleet.poke();
    let want = MEMBERS * (MEMBERS - 1);
    wait_until("every line reaches every other member", || {
        heard.load(Ordering::Relaxed) >= want
    })
    .await;
    // Nothing more arrives (no duplicate on its way).
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.stop();
    let parts = fleet.join().await.expect("swarms stop");
    assert_eq!(parts.len(), SOCKETS);
    let mut sessions = 0;
    for (chat, stats) in &parts {
        assert!(
            stats.datagrams_in > 0 && stats.datagrams_out > 0,
            "{stats:?}"
        );
        for (&(n, joined), lines) in chat.mine.iter().zip(&chat.lines) {
            assert!(joined);
            for (from, &count) in lines.iter().enumerate() {
                // Its own line comes back as its own copy (with its `c`), not counted here.
                let expected = u32::from(from != n);
                assert_eq!(
                    count, expected,
                    "member {n} heard member {from}'s line {count} times"
                );
            }
            sessions += 1;
        }
    }
    assert_eq!(sessions, MEMBERS);
    assert_eq!(heard.load(Ordering::Relaxed), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_and_handshake_scenarios_run_on_swarms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, _stop) = server(dir.path());
    let r = fanout::run(
        &FanoutConfig {
            servers: vec![addr],
            server_pids: Vec::new(),
            service_pids: Vec::new(),
            members: 40,
            senders: 3,
            messages: 20,
            rate: None,
            limit: LIMIT,
            sockets: 3,
        },
        &ProgressBar::hidden(),
    )
    .await
    .expect("fan-out runs");
    assert_eq!(r.expected, 3 * 20 * 39);
    assert_eq!(r.delivered, r.expected, "{r:?}");
    assert!(r.is_clean(), "{r:?}");
    assert!(r.latency_ms.p50 <= r.latency_ms.p99 && r.latency_ms.p99 <= r.latency_ms.max);

    let h = handshake::run(
        &HandshakeConfig {
            server: addr,
            server_pid: None,
            sessions: 60,
            concurrency: 6,
            timeout: Duration::from_secs(20),
            sockets: 2,
        },
        &ProgressBar::hidden(),
    )
    .await
    .expect("handshakes run");
    assert_eq!((h.completed, h.failed), (60, 0), "{h:?}");
    assert!(h.setup_ms.p50 > 0.0);
}
