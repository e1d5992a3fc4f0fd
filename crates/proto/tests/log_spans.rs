//! Every log line a connection causes carries its span: our connection ID and the peer's
//! address (issue 14: a server with 100k connections must say which one a line is about).
//!
//! Alone in its test binary, with its subscriber as the global default: tracing caches
//! whether a log call site is enabled for every thread at once, so a test beside others that
//! run without a subscriber can find the lines it waits for disabled.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chirp_proto::{Endpoint, EndpointConfig, Event};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_lines_name_their_connection() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let (client_addr, server_addr): (SocketAddr, SocketAddr) = (
        "127.0.0.1:50001".parse().unwrap(),
        "127.0.0.1:4434".parse().unwrap(),
    );
    let now = Instant::now();
    let mut client = Endpoint::new(EndpointConfig::default(), 21);
    let mut server = Endpoint::new(
        EndpointConfig {
            accept_incoming: true,
            ..EndpointConfig::default()
        },
        22,
    );
    client.connect(now, server_addr).expect("room");
    let mut connected = 0;
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = client.poll_transmit(now) {
            server.handle_datagram(now, client_addr, &t.contents);
            moved = true;
        }
        while let Some(t) = server.poll_transmit(now) {
            client.handle_datagram(now, server_addr, &t.contents);
            moved = true;
        }
        while let Some(e) = client.poll_event() {
            connected += usize::from(matches!(e, Event::Connected { .. }));
        }
        while server.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
    assert_eq!(connected, 1, "the connection is up");
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" connected")).collect();
    assert_eq!(lines.len(), 2, "client and server each log it once:\n{log}");
    // The server's line names the client's address, the client's the server's.
    for peer in ["remote=127.0.0.1:50001}", "remote=127.0.0.1:4434}"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("conn{cid=") && l.contains(peer)),
            "{peer}:\n{log}"
        );
    }
}
