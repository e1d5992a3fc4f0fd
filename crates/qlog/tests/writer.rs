//! The writer thread (`spawn_writer`): a sink that is stuck never holds up the sender. What
//! does not fit is dropped and counted, the connection's file says where and how many, and the
//! records that name and close a file are kept until they fit. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chirp_proto::trace::{TraceEvent, TraceMetrics, TraceRecord, TraceRole};
use chirp_proto::{ConnectionHandle, EndpointConfig};
use chirp_qlog::{QlogDir, QlogSender, TraceSink, WriterHandle, spawn_writer, validate};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);
/// The writer's queue in these tests.
const QUEUE: usize = 32;

/// A [`QlogDir`] behind a gate: its first `record` tells the test that it has started, then
/// waits until the test opens the gate (a disk that hangs). It notes every call.
struct Gated {
    inner: QlogDir,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl TraceSink for Gated {
    fn record(&mut self, record: &TraceRecord) -> std::io::Result<()> {
        if let Some((started, open)) = self.gate.take() {
            started.send(()).expect("the test waits");
            open.recv_timeout(LIMIT).expect("the test opens the gate");
        }
        let name = format!("{:?}", record.event);
        let name = name.split([' ', '(', '{']).next().unwrap_or_default();
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{} {name}", record.conn.0));
        self.inner.record(record)
    }

    fn dropped(&mut self, conn: ConnectionHandle, at: Instant, count: u64) -> std::io::Result<()> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{} dropped {count}", conn.0));
        self.inner.dropped(conn, at, count)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The test's side of a writer over a gated sink: the gate's two ends (started, open), the
/// calls the sink saw, the thread's handle and its wake-ups.
struct Gate {
    started: mpsc::Receiver<()>,
    open: mpsc::Sender<()>,
    calls: Arc<Mutex<Vec<String>>>,
    writer: WriterHandle,
    wakes: mpsc::Receiver<()>,
}

/// A writer thread over a gated [`QlogDir`] in `dir` (queue [`QUEUE`]).
fn stuck_writer(dir: &std::path::Path) -> (QlogSender, Gate) {
    let (started_tx, started) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = Gated {
        inner: QlogDir::new(dir, None).expect("dir"),
        gate: Some((started_tx, open_rx)),
        calls: Arc::clone(&calls),
    };
    let (wake, wakes) = mpsc::channel();
    let (sender, writer) = spawn_writer(sink, QUEUE, "qlog-test", move || {
        let _ = wake.send(());
    })
    .expect("thread");
    assert_eq!(writer.thread().name(), Some("qlog-test"));
    (
        sender,
        Gate {
            started,
            open,
            calls,
            writer,
            wakes,
        },
    )
}

/// Runs `f` on a thread of its own and gives back its result, failing the test (rather than
/// hanging it) if it does not return within the limit: a sender that blocked would not.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .expect("sending returned: it never waits for the writer")
}

fn started(conn: u64, at: Instant, odcid: u64) -> TraceRecord {
    TraceRecord {
        conn: ConnectionHandle(conn),
        at,
        event: TraceEvent::Started {
            role: TraceRole::Client,
            odcid,
            local_cid: 1,
            remote: SocketAddr::from(([127, 0, 0, 1], 9)),
        },
    }
}

/// A metrics record that differs from the one before (so each is written).
fn metrics(conn: u64, at: Instant, i: u64) -> TraceRecord {
    TraceRecord {
        conn: ConnectionHandle(conn),
        at,
        event: TraceEvent::Metrics(TraceMetrics {
            cwnd: 12_000,
            bytes_in_flight: i,
            ssthresh: u64::MAX,
            smoothed_rtt: Duration::from_millis(40),
            latest_rtt: Duration::from_millis(40),
            min_rtt: Duration::from_millis(40),
            rtt_variance: Duration::from_millis(5),
            pto_count: 0,
        }),
    }
}

fn record(conn: u64, at: Instant, event: TraceEvent) -> TraceRecord {
    TraceRecord {
        conn: ConnectionHandle(conn),
        at,
        event,
    }
}

fn events(bytes: &[u8]) -> Vec<Value> {
    validate::check(bytes)
        .unwrap_or_else(|e| panic!("invalid qlog: {e}"))
        .events
}

/// What [`release`] found: the records the sender dropped, the calls the sink saw, and the
/// files (name, contents) once the writer had caught up.
struct Released {
    dropped: u64,
    calls: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
}

/// Opens the gate and hands over what waits until the writer has caught up (everything
/// written and flushed, the sender still alive), then ends the sender and waits for the
/// thread: the records dropped, the calls the sink saw once caught up, and the files in
/// `dir` then, by name, with their contents.
fn release(mut sender: QlogSender, gate: Gate, dir: &std::path::Path) -> Released {
    gate.open.send(()).expect("the sink waits");
    assert!(!sender.caught_up(), "what waits is not written yet");
    for _ in 0..10_000 {
        sender.retry();
        if sender.waiting() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sender.waiting(), 0, "what waited went through");
    while !sender.caught_up() {
        gate.wakes
            .recv_timeout(LIMIT)
            .expect("the writer says when it has caught up");
    }
    // Caught up: every record is in the files, flushed, while the writer still runs.
    let calls = gate.calls.lock().expect("lock").clone();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().into_string().expect("utf-8");
            (name, std::fs::read(e.path()).expect("read"))
        })
        .collect();
    files.sort();
    let dropped = sender.dropped();
    assert!(!gate.writer.is_finished());
    drop(sender);
    while !gate.writer.is_finished() {
        gate.wakes
            .recv_timeout(LIMIT)
            .expect("the writer says when it has finished");
    }
    Released {
        dropped,
        calls,
        files,
    }
}

#[test]
fn a_stuck_writer_costs_the_sender_nothing_and_the_file_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut sender, gate) = stuck_writer(dir.path());
    let t0 = Instant::now();
    let at = move |ms: u64| t0 + Duration::from_millis(ms);
    // Connection 1 gets its file; the writer then hangs in its first write.
    sender.send(started(1, at(0), 0xaa));
    gate.started
        .recv_timeout(LIMIT)
        .expect("the writer is stuck");
    // 10,000 records while it hangs: the queue takes QUEUE of them.
    const N: u64 = 10_000;
    let sender = bounded(move || {
        for i in 1..=N {
            sender.send(metrics(1, at(i), i));
        }
        // Connection 2 starts while the queue is full: it gets no file, and nothing of it
        // is kept.
        sender.send(started(2, at(N), 0xbb));
        sender.send(metrics(2, at(N), 1));
        sender.send(record(2, at(N), TraceEvent::Removed));
        // Connection 1 is renamed and ends: both wait for room, in order.
        sender.send(record(
            1,
            at(N + 1),
            TraceEvent::BecameServer { odcid: 0xcc },
        ));
        sender.send(metrics(1, at(N + 2), N + 2));
        sender.send(record(1, at(N + 3), TraceEvent::Removed));
        sender
    });
    assert_eq!(sender.waiting(), 2, "BecameServer and Removed wait");
    let dropped_1 = N - QUEUE as u64 + 1; // and the one after BecameServer
    let dropped_2 = 3;
    assert_eq!(sender.dropped(), dropped_1 + dropped_2);
    let Released {
        dropped,
        calls,
        files,
    } = release(sender, gate, dir.path());
    assert_eq!(dropped, dropped_1 + dropped_2);

    // The sink saw connection 1's first records, a note of the gap, the rename, a note of the
    // one record dropped after it, and the end; nothing of connection 2.
    let metrics_seen = calls.iter().filter(|c| *c == "1 Metrics").count();
    assert_eq!(metrics_seen, QUEUE);
    let tail: Vec<&str> = calls[1 + QUEUE..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            &format!("1 dropped {}", N - QUEUE as u64)[..],
            "1 BecameServer",
            "1 dropped 1",
            "1 Removed"
        ]
    );
    assert!(!calls.iter().any(|c| c.starts_with("2 ")), "{calls:?}");

    // One file, renamed, valid, with the gaps where they were.
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, format!("{:016x}-server.sqlog", 0xccu64));
    let events = events(&files[0].1);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names[0], "connectivity:connection_started");
    assert!(
        names[1..=QUEUE]
            .iter()
            .all(|n| *n == "recovery:metrics_updated")
    );
    assert_eq!(
        names[QUEUE + 1..],
        [
            "chirp:events_dropped",
            "chirp:became_server",
            "chirp:events_dropped"
        ]
    );
    let gaps: Vec<u64> = events
        .iter()
        .filter(|e| e["name"] == "chirp:events_dropped")
        .map(|e| e["data"]["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(gaps, [N - QUEUE as u64, 1]);
    assert_eq!(gaps.iter().sum::<u64>(), dropped_1);
}

/// The same through a real endpoint: a simulated transfer whose traces go to a writer that
/// hangs from the first record. The simulation runs to the end regardless (every message
/// delivered), the sender counts what it dropped, and, once the writer comes back, each file
/// accounts for every record: written, or counted in a `chirp:events_dropped`.
#[test]
fn a_simulated_transfer_runs_to_the_end_while_its_writer_hangs() {
    use chirp_netsim::{LinkConfig, Pair};
    let dir = tempfile::tempdir().expect("tmp");
    let (sender, gate) = stuck_writer(dir.path());
    let cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    // The writer hangs at the first record it gets (the connection's `Started`), and stays
    // stuck while the whole transfer runs.
    let (sender, produced) = bounded(move || {
        let mut sender = sender;
        let mut p = Pair::new(cfg, LinkConfig::ideal(Duration::from_millis(10)), 4);
        let mut produced = 0u64;
        let mut drain = |p: &mut Pair, sender: &mut QlogSender| {
            sender.retry();
            while let Some(r) = p.a.endpoint.poll_trace() {
                produced += 1;
                sender.send(r);
            }
        };
        let (ca, _) = p.connect().expect("handshake");
        drain(&mut p, &mut sender);
        let mut got = 0;
        for i in 0..500 {
            p.a.endpoint
                .send(ca, format!("line {i}").as_bytes())
                .expect("room");
            p.advance_to(p.now + Duration::from_millis(5))
                .expect("no busy loop");
            drain(&mut p, &mut sender);
            got += p.b.take_messages().len();
        }
        p.drive_until(Duration::from_secs(30), |p| {
            got += p.b.take_messages().len();
            got == 500
        })
        .expect("every message delivered, the writer notwithstanding");
        p.a.endpoint.close(p.now, ca, 0x100, "done");
        p.drive_to_idle(Duration::from_secs(30)).expect("idle");
        drain(&mut p, &mut sender);
        (sender, produced)
    });
    gate.started
        .recv_timeout(LIMIT)
        .expect("the writer got stuck");
    assert!(
        sender.dropped() > 0,
        "the writer was stuck: records were dropped"
    );
    let Released {
        dropped,
        calls,
        files,
    } = release(sender, gate, dir.path());
    let records_seen = calls.iter().filter(|c| !c.contains(" dropped ")).count() as u64;
    assert_eq!(
        records_seen + dropped,
        produced,
        "every record written or counted"
    );
    assert_eq!(files.len(), 1);
    let events = events(&files[0].1);
    let noted: u64 = events
        .iter()
        .filter(|e| e["name"] == "chirp:events_dropped")
        .map(|e| e["data"]["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(noted, dropped, "the file notes every record dropped");
}
