//! Tracing never slows the driver: a server whose trace sink hangs (a disk that does not
//! answer) keeps serving at full speed over real loopback sockets. Trace records it cannot
//! hand over are dropped and counted (`EndpointStats::trace_dropped`); once the sink comes
//! back, the connection's trace notes every one of them where they are missing, and its end
//! gets through. Every wait is bounded.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_proto::trace::{TraceEvent, TraceRecord};
use chirp_proto::{ConnectionHandle, EndpointConfig, Event};
use chirp_qlog::TraceSink;
use chirp_transport::Options;
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);
/// Messages sent per round (half a megabyte: within the send window), and most rounds.
const BATCH: usize = 500;
const MAX_ROUNDS: usize = 100;

/// What the sink saw: records (by connection and kind) and notes of dropped records.
#[derive(Debug, Default)]
struct Seen {
    records: Vec<(ConnectionHandle, &'static str)>,
    dropped: Vec<(ConnectionHandle, u64)>,
}

/// A sink that hangs in its first `record` until the test lets it go.
struct Hanging {
    gate: Option<std_mpsc::Receiver<()>>,
    seen: Arc<Mutex<Seen>>,
}

impl TraceSink for Hanging {
    fn record(&mut self, record: &TraceRecord) -> std::io::Result<()> {
        if let Some(gate) = self.gate.take() {
            // Bounded: a test that failed before letting it go does not leave it forever.
            let _ = gate.recv_timeout(LIMIT);
        }
        let kind = match record.event {
            TraceEvent::Started { .. } => "started",
            TraceEvent::Removed => "removed",
            _ => "other",
        };
        self.seen
            .lock()
            .expect("lock")
            .records
            .push((record.conn, kind));
        Ok(())
    }

    fn dropped(&mut self, conn: ConnectionHandle, _: Instant, count: u64) -> std::io::Result<()> {
        self.seen.lock().expect("lock").dropped.push((conn, count));
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn until_message_count(rx: &mut mpsc::Receiver<Event>, mut want: usize) {
    while want > 0 {
        match timeout(LIMIT, rx.recv()).await {
            Ok(Some(Event::Message { .. })) => want -= 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the server stopped"),
            Err(_) => panic!("{want} messages still missing: the server stalled"),
        }
    }
}

#[tokio::test]
async fn a_hanging_trace_sink_does_not_slow_the_server_and_every_drop_is_noted() {
    let (let_go, gate) = std_mpsc::channel();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server_socket.local_addr().unwrap();
    let options = Options {
        trace_sink: Some(Box::new(Hanging {
            gate: Some(gate),
            seen: Arc::clone(&seen),
        })),
        ..Options::default()
    };
    let (server, mut server_rx, server_task) =
        chirp_transport::spawn_with(server_socket, EndpointConfig::default(), options).unwrap();
    let client_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (client, _client_rx, _client_task) = chirp_transport::spawn(
        client_socket,
        EndpointConfig {
            accept_incoming: false,
            ..EndpointConfig::default()
        },
    )
    .unwrap();
    let conn = client.connect(server_addr).await.unwrap().unwrap();

    // Rounds of messages, each delivered whole, until the server has had to drop trace
    // records: its writer hangs from the first, so its queue fills, and the server serves on.
    let mut rounds = 0;
    let dropped = loop {
        assert!(
            rounds < MAX_ROUNDS,
            "{} messages and nothing dropped",
            rounds * BATCH
        );
        rounds += 1;
        // A packet each (of a kilobyte), so that each is a few records.
        let batch: Vec<Bytes> = (0..BATCH)
            .map(|i| Bytes::from(format!("{i:01000}")))
            .collect();
        let sent = client.send_batch(vec![(conn, batch)]).await.unwrap();
        assert_eq!(sent[0].taken, BATCH, "{:?}", sent[0].stopped);
        until_message_count(&mut server_rx, BATCH).await;
        let stats = server.endpoint_stats().await.unwrap();
        if stats.trace_dropped > 0 {
            break stats.trace_dropped;
        }
    };
    assert!(dropped > 0);

    // The connection ends; the server forgets it (its `Removed` waits for room). The sink
    // comes back: once idle (no connection, and every trace written) the sink has seen it
    // all.
    client.close(conn, 0x100, "done").await.unwrap();
    let_go.send(()).expect("the sink waits");
    timeout(LIMIT, server.wait_idle())
        .await
        .expect("the server's connection is gone and its trace written")
        .unwrap();
    let dropped = server.endpoint_stats().await.unwrap().trace_dropped;
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    drop(server);
    drop(server_rx);
    timeout(LIMIT, server_task)
        .await
        .expect("the server stops")
        .expect("joined")
        .expect("no error");

    let server_conn = seen.records.first().expect("records").0;
    assert_eq!(seen.records.first().map(|r| r.1), Some("started"));
    assert_eq!(
        seen.records.last(),
        Some(&(server_conn, "removed")),
        "the trace's end got through"
    );
    let noted: u64 = seen.dropped.iter().map(|d| d.1).sum();
    assert_eq!(
        noted, dropped,
        "every dropped record noted in the trace: {:?}",
        seen.dropped
    );
    assert!(seen.dropped.iter().all(|d| d.0 == server_conn));
}

#[tokio::test]
async fn a_qlog_dir_and_a_trace_sink_together_are_refused() {
    let socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, gate) = std_mpsc::channel();
    let options = Options {
        qlog_dir: Some(dir.path().to_owned()),
        trace_sink: Some(Box::new(Hanging {
            gate: Some(gate),
            seen: Arc::default(),
        })),
    };
    let err = chirp_transport::spawn_with(socket, EndpointConfig::default(), options)
        .expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
