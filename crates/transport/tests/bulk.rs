//! `Handle::send_bulk` and `Handle::bulk_buffered` over real loopback sockets: bulk messages
//! arrive in order as `Event::BulkMessage`, their bytes count as buffered until acknowledged,
//! and a full bulk send buffer refuses with `Blocked`, then reports `BulkWritable` once
//! acknowledgements free room.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chirp_proto::{
    ConnectionHandle, EndpointConfig, Event, SendError, TransportConfig, WriteError,
};
use tokio::time::{Instant, timeout};

use common::{LIMIT, connected, next_event};

#[tokio::test]
async fn bulk_messages_arrive_in_order_and_are_then_no_longer_buffered() {
    let (client, _client_rx, _server, mut server_rx, [conn]) =
        connected(EndpointConfig::default()).await;
    let msgs: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 10_000])).collect();
    for m in &msgs {
        client.send_bulk(conn, m.clone()).await.unwrap().unwrap();
    }
    assert_eq!(client.send_buffered(conn).await.unwrap(), Some(0));
    let mut got = Vec::new();
    while got.len() < msgs.len() {
        match next_event(&mut server_rx).await {
            Event::BulkMessage { data, .. } => got.push(data),
            Event::Message { .. } => panic!("a bulk message came on the message stream"),
            _ => {}
        }
    }
    assert!(got == msgs, "the bulk messages differ or are out of order");
    // Acknowledged soon after: nothing stays buffered.
    let deadline = Instant::now() + LIMIT;
    while client.bulk_buffered(conn).await.unwrap() != Some(0) {
        assert!(Instant::now() < deadline, "bulk bytes never acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unknown = ConnectionHandle(999);
    assert_eq!(client.bulk_buffered(unknown).await.unwrap(), None);
    assert_eq!(
        client
            .send_bulk(unknown, Bytes::from_static(b"x"))
            .await
            .unwrap(),
        Err(SendError::UnknownConnection)
    );
}

#[tokio::test]
async fn bulk_bytes_stay_buffered_while_unacknowledged() {
    let server_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server_socket.local_addr().unwrap();
    let config = EndpointConfig {
        accept_incoming: true,
        ..EndpointConfig::default()
    };
    let (server, _server_rx, server_task) = chirp_transport::spawn(server_socket, config).unwrap();
    let client_socket = chirp_transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (client, _client_rx, _ct) =
        chirp_transport::spawn(client_socket, EndpointConfig::default()).unwrap();
    let conn = client.connect(server_addr).await.unwrap().unwrap();
    // The server's driver stops with its last handle: nothing is acknowledged from now on.
    drop(server);
    timeout(LIMIT, server_task).await.unwrap().unwrap().unwrap();
    for _ in 0..3 {
        let msg = Bytes::from(vec![1u8; 1000]);
        client.send_bulk(conn, msg).await.unwrap().unwrap();
    }
    // Each with its length prefix (2 bytes for 1000); none on the message stream.
    assert_eq!(client.bulk_buffered(conn).await.unwrap(), Some(3 * 1002));
    assert_eq!(client.send_buffered(conn).await.unwrap(), Some(0));
}

#[tokio::test]
async fn a_full_bulk_buffer_blocks_then_reports_bulk_writable() {
    let (client, mut client_rx, _server, _server_rx, [conn]) = connected(EndpointConfig {
        transport: TransportConfig {
            bulk_send_buffer: 16 * 1024,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    })
    .await;
    let big = Bytes::from(vec![7u8; 4000]);
    let mut taken = 0;
    let refused = loop {
        match client.send_bulk(conn, big.clone()).await.unwrap() {
            Ok(()) => taken += 1,
            Err(e) => break e,
        }
        assert!(taken < 100, "the bulk send buffer never filled");
    };
    assert_eq!(refused, SendError::Write(WriteError::Blocked));
    assert!(taken >= 1, "not even one message fit");
    // `BulkWritable` says there is room, not that this message fits: a refusal waits for the
    // next one.
    for _ in 0..100 {
        if let Event::BulkWritable { conn: c } = next_event(&mut client_rx).await {
            assert_eq!(c, conn);
            match client.send_bulk(conn, big.clone()).await.unwrap() {
                Ok(()) => return,
                Err(e) => assert_eq!(e, SendError::Write(WriteError::Blocked)),
            }
        }
    }
    panic!("the bulk send buffer never took another message");
}
