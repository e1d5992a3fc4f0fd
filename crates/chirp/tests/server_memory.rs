//! One request must not cost the server unbounded memory (issue 11, part 3). A `hello` that
//! lists one room 800 times (21 KB), in a room of 100 cached 8 KiB messages, used to make
//! `chirp serve` encode 800 replays of the whole cache at once: its RSS grew by some 650 MB
//! and another client's round trip reached most of a second. Here a real `chirp serve` gets
//! that request from a client that speaks the chat protocol itself (over `chirp_transport`)
//! and then reads nothing, the worst case for the server's queues.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_chat::wire::{ClientMsg, JoinReq, ServerMsg};
use chirp_proto::{ConnectionHandle, EndpointConfig, Event};
use chirp_transport::Handle;
use common::{Server, WAIT};
use tokio::sync::mpsc;

/// The most the attack may grow the server's resident memory (it grew by ~650 MB).
const RSS_GROWTH_BOUND_KB: u64 = 30 * 1024;
/// The slowest round trip another client may see meanwhile (it reached 737 ms).
const RTT_BOUND: Duration = Duration::from_millis(300);

/// A chat client on its own transport endpoint.
struct Client {
    handle: Handle,
    events: mpsc::Receiver<Event>,
    conn: ConnectionHandle,
}

impl Client {
    async fn connect(server: SocketAddr) -> Client {
        let socket = chirp_transport::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let (handle, mut events, _task) =
            chirp_transport::spawn(socket, EndpointConfig::default()).expect("spawn");
        let conn = handle
            .connect(server)
            .await
            .expect("transport running")
            .expect("connect");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Connected { conn: c, .. })) if c == conn => break,
                Ok(Some(Event::Closed { reason, .. })) => panic!("not connected: {reason:?}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("no connection to the server"),
            }
        }
        Client {
            handle,
            events,
            conn,
        }
    }

    async fn send(&self, m: &ClientMsg) {
        let r = self.handle.send(self.conn, m.encode().into()).await;
        r.expect("transport running").expect("send");
    }

    /// The next chat message from the server.
    async fn next(&mut self) -> ServerMsg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Message { data, .. })) => {
                    return ServerMsg::decode(&data).expect("server message decodes");
                }
                Ok(Some(Event::Closed { reason, .. })) => panic!("closed: {reason:?}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("nothing from the server"),
            }
        }
    }

    /// Skips messages until `want` matches one.
    async fn until(&mut self, want: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.next().await;
            if want(&m) {
                return m;
            }
        }
    }

    async fn hello(&mut self, nick: &str, rooms: Vec<JoinReq>) {
        let hello = ClientMsg::Hello {
            v: 1,
            nick: nick.into(),
            client: 1,
            rooms,
            dms: vec![],
            echo: true,
        };
        self.send(&hello).await;
        self.until(|m| matches!(m, ServerMsg::Welcome { .. })).await;
    }
}

/// The server's resident set size, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

#[test]
#[allow(clippy::print_stderr)] // the figures, for the record
fn a_hello_repeating_one_room_800_times_costs_the_server_little_memory() {
    if !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    // Flood control wide open, so that filling the room takes a moment.
    let srv = Server::start(
        data.path(),
        "127.0.0.1:0",
        &["--burst", "200", "--per-sec", "200"],
    );
    let pid = srv.proc.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let join = |after| JoinReq {
            room: "#big".into(),
            after,
            key: None,
        };
        let mut filler = Client::connect(srv.addr).await;
        filler.hello("filler", vec![join(None)]).await;
        for c in 1..=100u64 {
            let say = ClientMsg::Say {
                c,
                room: Some("#big".into()),
                to: None,
                text: format!("{c:05}{}", "x".repeat(8 * 1024 - 5)),
                action: false,
            };
            filler.send(&say).await;
        }
        for _ in 0..100 {
            filler.until(|m| matches!(m, ServerMsg::Ack { .. })).await;
        }
        let mut probe = Client::connect(srv.addr).await;
        probe.hello("probe", vec![]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_kb(pid);

        let mut attacker = Client::connect(srv.addr).await;
        let hello = ClientMsg::Hello {
            v: 1,
            nick: "attacker".into(),
            client: 1,
            rooms: vec![join(Some(0)); 800],
            dms: vec![],
            echo: true,
        };
        assert!(hello.encode().len() < 22 * 1024);
        // Sent, and nothing read for now: the server's queues for it fill.
        attacker.send(&hello).await;

        let mut peak = before;
        let mut slowest = Duration::ZERO;
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let t = Instant::now();
            probe.send(&ClientMsg::List).await;
            probe.until(|m| matches!(m, ServerMsg::List { .. })).await;
            slowest = slowest.max(t.elapsed());
            peak = peak.max(rss_kb(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "server RSS {before} kB before the hello, peak {peak} kB after (+{} kB); \
             slowest round trip of another client {slowest:?}",
            peak - before
        );
        assert!(
            peak - before < RSS_GROWTH_BOUND_KB,
            "RSS grew from {before} kB to {peak} kB"
        );
        assert!(slowest < RTT_BOUND, "another client waited {slowest:?}");

        // Once the attacker reads, it gets the room's 100 messages, each once, in order.
        let mut ids = Vec::new();
        while ids.len() < 100 {
            if let ServerMsg::Msg(m) = attacker.next().await {
                ids.push(m.id);
            }
        }
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    });
}
