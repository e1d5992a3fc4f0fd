//! Set-up shared by the tests that drive two endpoints over real loopback sockets (`bulk.rs`,
//! `batch.rs`).

use std::time::Duration;

use chirp_proto::{ConnectionHandle, EndpointConfig, Event};
use chirp_transport::Handle;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound of every wait; waits normally end in milliseconds.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// The next event on `rx`, within [`LIMIT`].
pub(crate) async fn next_event(rx: &mut mpsc::Receiver<Event>) -> Event {
    timeout(LIMIT, rx.recv())
        .await
        .expect("an event within the limit")
        .expect("the driver is running")
}

/// A server endpoint and a client endpoint (with `client_config`) on loopback, the client
/// with `N` connections open to the server, opened one after the other: the client's handle
/// and events, the server's (its driver runs while its handle lives), and the connections.
pub(crate) async fn connected<const N: usize>(
    client_config: EndpointConfig,
) -> (
    Handle,
    mpsc::Receiver<Event>,
    Handle,
    mpsc::Receiver<Event>,
    [ConnectionHandle; N],
) {
    let server_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server_socket.local_addr().unwrap();
    let (server, server_rx, _st) = chirp_transport::spawn(
        server_socket,
        EndpointConfig {
            accept_incoming: true,
            ..EndpointConfig::default()
        },
    )
    .unwrap();
    let client_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (client, client_rx, _ct) = chirp_transport::spawn(client_socket, client_config).unwrap();
    let mut conns = [ConnectionHandle(0); N];
    for conn in &mut conns {
        *conn = client.connect(server_addr).await.unwrap().unwrap();
    }
    (client, client_rx, server, server_rx, conns)
}
