//! A client that stops reading (its transport still acknowledges packets, but it never opens
//! its flow-control window) is closed as too slow, and the server lets go of it at once:
//! the tokio runner with its store and a real transport on loopback. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use chirp_chat::server::ServerConfig;
use chirp_chat::wire::{ClientMsg, JoinReq, ServerMsg};
use chirp_proto::handshake::StaticSecret;
use chirp_proto::{ConnectionHandle, EndpointConfig, Event, SendError, WriteError};
use chirp_transport::Handle;
use tokio::sync::mpsc;

mod common;
use common::{Srv, random_key};

const WAIT: Duration = Duration::from_secs(20);

/// A chat client speaking the protocol itself over its own transport endpoint, so that it
/// can stop reading.
struct Raw {
    handle: Handle,
    events: mpsc::Receiver<Event>,
    conn: ConnectionHandle,
}

impl Raw {
    async fn connect(server: SocketAddr) -> Raw {
        let socket = chirp_transport::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let config = EndpointConfig {
            identity: Some(StaticSecret(random_key())),
            ..EndpointConfig::default()
        };
        let (handle, mut events, _task) = chirp_transport::spawn(socket, config).expect("spawn");
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
        Raw {
            handle,
            events,
            conn,
        }
    }

    /// Sends `m`, waiting while the send buffer is full (without reading events).
    async fn send(&self, m: &ClientMsg) {
        assert!(self.try_send(m).await, "the connection ended");
    }

    /// Like [`Self::send`], but false if the connection has ended (the server closed it).
    async fn try_send(&self, m: &ClientMsg) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.handle.send(self.conn, m.encode().into()).await;
            match r.expect("transport running") {
                Ok(()) => return true,
                Err(SendError::Write(WriteError::Blocked)) => {
                    assert!(tokio::time::Instant::now() < deadline, "blocked for good");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(SendError::Closed | SendError::UnknownConnection) => return false,
                Err(e) => panic!("send: {e:?}"),
            }
        }
    }

    /// Skips messages until `want` matches one.
    async fn until(&mut self, want: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Message { data, .. })) => {
                    let m = ServerMsg::decode(&data).expect("server message decodes");
                    if want(&m) {
                        return m;
                    }
                }
                Ok(Some(Event::Closed { reason, .. })) => panic!("closed: {reason:?}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("nothing from the server"),
            }
        }
    }

    async fn hello(&mut self, nick: &str, after: Option<u64>) {
        let hello = ClientMsg::Hello {
            v: 1,
            nick: nick.into(),
            client: 1,
            rooms: vec![JoinReq {
                room: "#big".into(),
                after,
                key: None,
            }],
            dms: vec![],
            echo: true,
        };
        self.send(&hello).await;
        self.until(|m| matches!(m, ServerMsg::Welcome { .. })).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_at_once_when_too_slow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Srv::start(
        dir.path(),
        common::config(|c| {
            c.server = ServerConfig {
                burst: 10_000,
                per_sec: 10_000,
                ..ServerConfig::default()
            };
        }),
    );
    let addr = server.addr;

    // A room of 200 messages of 8 KiB: one history page of it is 1.7 MB.
    let mut filler = Raw::connect(addr).await;
    filler.hello("filler", None).await;
    for c in 1..=200u64 {
        let say = ClientMsg::Say {
            c,
            room: Some("#big".into()),
            to: None,
            text: format!("{c:05}{}", "x".repeat(8 * 1024 - 5)),
            action: false,
        };
        filler.send(&say).await;
    }
    for _ in 0..200 {
        filler.until(|m| matches!(m, ServerMsg::Ack { .. })).await;
    }

    let mut reader = Raw::connect(addr).await;
    reader.hello("reader", Some(200)).await;
    // From now on the reader reads nothing. Small answers fill its event channel (its
    // transport then grants no more credit, though it goes on acknowledging), then history
    // pages fill its window, the server's send buffer and the server's queue for it. (The
    // server may close it before all of these are sent: then the rest are not.)
    let page = ClientMsg::History {
        id: None,
        room: Some("#big".into()),
        with: None,
        before: None,
        limit: 200,
    };
    let requests = std::iter::repeat_n(ClientMsg::List, 1500).chain(std::iter::repeat_n(page, 8));
    for r in requests {
        if !reader.try_send(&r).await {
            break;
        }
    }

    // The server closes it (as too slow) and lets go of it: the reader quits the room, well
    // before any idle timeout (its transport is alive and acknowledging).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        filler
            .send(&ClientMsg::Who {
                room: "#big".into(),
            })
            .await;
        let who = filler.until(|m| matches!(m, ServerMsg::Who { .. })).await;
        let ServerMsg::Who { members, .. } = who else {
            unreachable!()
        };
        if !members.iter().any(|m| m == "reader") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that does not read is still connected: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(reader);
    server.shutdown(WAIT).await;
}
