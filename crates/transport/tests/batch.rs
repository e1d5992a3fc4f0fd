//! `Handle::send_batch` over real loopback sockets: one round trip queues messages on many
//! connections, each connection's in order, and a refusal stops only that connection's list.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chirp_proto::{
    ConnectionHandle, EndpointConfig, Event, SendError, TransportConfig, WriteError,
};
use chirp_transport::Sent;
use tokio::time::timeout;

use common::{connected, next_event};

#[tokio::test]
async fn a_batch_reaches_every_connection_in_order() {
    let (client, mut client_rx, _server, mut server_rx, [a, b]) =
        connected(EndpointConfig::default()).await;
    let bogus = ConnectionHandle(999);
    let msg = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let sent = client
        .send_batch(vec![
            (a, vec![msg("a1"), msg("a2")]),
            (bogus, vec![msg("x")]),
            (b, vec![msg("b1")]),
        ])
        .await
        .unwrap();
    assert_eq!(
        sent,
        vec![
            Sent {
                conn: a,
                taken: 2,
                stopped: None
            },
            Sent {
                conn: bogus,
                taken: 0,
                stopped: Some(SendError::UnknownConnection)
            },
            Sent {
                conn: b,
                taken: 1,
                stopped: None
            },
        ]
    );
    // The server sees two connections: one gets a1 then a2, the other b1.
    let mut got: std::collections::BTreeMap<ConnectionHandle, Vec<Bytes>> = Default::default();
    while got.values().map(Vec::len).sum::<usize>() < 3 {
        if let Event::Message { conn, data } = next_event(&mut server_rx).await {
            got.entry(conn).or_default().push(data);
        }
    }
    let mut lists: Vec<_> = got.into_values().collect();
    lists.sort();
    assert_eq!(lists, vec![vec![msg("a1"), msg("a2")], vec![msg("b1")]]);
    while let Ok(Some(_)) = timeout(Duration::from_millis(10), client_rx.recv()).await {}
}

#[tokio::test]
async fn a_full_send_buffer_stops_only_its_connection() {
    let (client, _client_rx, _server, _server_rx, [a, b]) = connected(EndpointConfig {
        transport: TransportConfig {
            send_buffer: 4096,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    })
    .await;
    let big = Bytes::from(vec![7u8; 1000]);
    let sent = client
        .send_batch(vec![(a, vec![big.clone(); 10]), (b, vec![big.clone()])])
        .await
        .unwrap();
    assert!(
        (1..10).contains(&sent[0].taken),
        "some of a's messages fit: {sent:?}"
    );
    assert_eq!(sent[0].stopped, Some(SendError::Write(WriteError::Blocked)));
    assert_eq!(
        sent[1],
        Sent {
            conn: b,
            taken: 1,
            stopped: None
        }
    );
}
