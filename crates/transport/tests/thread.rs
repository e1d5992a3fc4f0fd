//! `spawn_on_thread`: a driver on a thread of its own talks to one on the test's runtime over
//! real loopback sockets, and its thread ends, with the driver's result, once its last handle
//! is dropped.

use std::time::Duration;

use chirp_proto::{EndpointConfig, Event};
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

async fn next_event(rx: &mut mpsc::Receiver<Event>) -> Event {
    timeout(LIMIT, rx.recv())
        .await
        .expect("an event within the limit")
        .expect("the driver is running")
}

#[tokio::test]
async fn a_driver_on_its_own_thread_serves_and_stops_with_its_handles() {
    let server_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server_socket.local_addr().unwrap();
    let (server, mut server_rx, thread) =
        chirp_transport::spawn_on_thread(server_socket, EndpointConfig::default(), "test-server")
            .unwrap();
    assert_eq!(thread.thread().name(), Some("test-server"));
    assert_eq!(server.local_addr(), server_addr);

    let client_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (client, mut client_rx, _task) = chirp_transport::spawn(
        client_socket,
        EndpointConfig {
            accept_incoming: false,
            ..EndpointConfig::default()
        },
    )
    .unwrap();
    let conn = client.connect(server_addr).await.unwrap().unwrap();
    client
        .send(conn, "over the thread".into())
        .await
        .unwrap()
        .unwrap();
    let (sconn, data) = loop {
        if let Event::Message { conn, data } = next_event(&mut server_rx).await {
            break (conn, data);
        }
    };
    assert_eq!(&data[..], b"over the thread");
    server
        .send(sconn, "and back".into())
        .await
        .unwrap()
        .unwrap();
    loop {
        if let Event::Message { data, .. } = next_event(&mut client_rx).await {
            assert_eq!(&data[..], b"and back");
            break;
        }
    }

    drop(server);
    let joined = tokio::task::spawn_blocking(move || thread.join());
    let result = timeout(LIMIT, joined)
        .await
        .expect("the thread ends within the limit")
        .expect("joined")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}
