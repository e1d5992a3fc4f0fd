//! Fan-out: messages per second delivered to the members of one room, end to end.
//!
//! `cargo run --release -p chirp-chat --example fanout_bench [MEMBERS] [MESSAGES] [RUNS]`
//!
//! One process runs the real server (runner, core, SQLite store in a temporary directory) and
//! MEMBERS client sessions, each with its own UDP socket on loopback (defaults: 100 members,
//! 200 messages, 3 runs). One member sends MESSAGES messages as fast as the server accepts
//! them (flood control raised for the bench, client pacing off); the clock stops when every
//! member has received every message. Fan-out rate = MESSAGES x MEMBERS / elapsed. Durable
//! storage is in the path: each message is committed before anyone sees it.

#![allow(clippy::print_stdout)] // a benchmark prints its results

use std::time::{Duration, Instant};

use chirp_chat::client::{self, ClientConfig, Event, Target};
use chirp_chat::runner::{self, RunnerConfig};
use chirp_chat::wire::ServerMsg;
use chirp_proto::handshake::StaticSecret;
use chirp_store::{Sqlite, StoreConfig};

fn key() -> [u8; 32] {
    let mut k = [0u8; 32];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&chirp_transport::random_seed().to_le_bytes());
    }
    k
}

async fn run_once(members: usize, messages: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = chirp_transport::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let store = Sqlite::open(&dir.path().join("db"), StoreConfig::default()).expect("store");
    let mut config = RunnerConfig {
        identity: Some(StaticSecret(key())),
        ..RunnerConfig::default()
    };
    config.server.max_sessions_per_ip = members + 10;
    config.server.nick_claim_burst = u32::try_from(members).unwrap_or(u32::MAX);
    config.server.burst = 100_000;
    config.server.per_sec = 100_000;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
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
        .expect("server");
    });
    let mut clients = Vec::new();
    for i in 0..members {
        let mut c = ClientConfig::new(addr, format!("m{i}"));
        c.bind = "127.0.0.1:0".parse().expect("addr");
        c.rooms = vec!["#bench".into()];
        c.identity = Some(StaticSecret(key()));
        c.pace = false;
        clients.push(client::spawn(c).expect("client"));
    }
    for (_, ev, _) in &mut clients {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), ev.recv()).await {
                Ok(Some(Event::Server(ServerMsg::Joined { .. }))) => break,
                Ok(Some(_)) => {}
                _ => panic!("a member did not join"),
            }
        }
    }
    let start = Instant::now();
    let sender = clients[0].0.clone();
    let send = tokio::spawn(async move {
        for k in 0..messages {
            sender
                .say(
                    Target::Room("#bench".into()),
                    format!("fan-out message {k}"),
                    false,
                )
                .await
                .expect("say");
        }
    });
    let mut waits = Vec::new();
    // The handles stay alive until the end: dropping one ends its session.
    let mut handles = Vec::new();
    for (h, mut ev, t) in clients.drain(..) {
        handles.push((h, t));
        waits.push(tokio::spawn(async move {
            let mut got = 0;
            while got < messages {
                match tokio::time::timeout(Duration::from_secs(60), ev.recv()).await {
                    Ok(Some(Event::Message(m))) if !m.history => got += 1,
                    Ok(Some(_)) => {}
                    _ => panic!("a member stopped receiving after {got}"),
                }
            }
            ev
        }));
    }
    send.await.expect("sender");
    let mut keep = Vec::new();
    for w in waits {
        keep.push(w.await.expect("member"));
    }
    let elapsed = start.elapsed();
    drop(keep);
    drop(handles);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    (messages * members) as f64 / elapsed.as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let messages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| rt.block_on(run_once(members, messages)))
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "fan-out to a room of {members}: {messages} messages, median of {runs} runs: {:.0} deliveries/s ({:.0} messages/s into the room); runs: {:?}",
        rates[runs / 2],
        rates[runs / 2] / members as f64,
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
}
