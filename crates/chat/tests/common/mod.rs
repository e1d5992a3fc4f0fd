//! What the runner tests share: a server (the tokio runner with its SQLite store) on a
//! loopback socket, stopped gracefully or killed, and fresh keys. Each test binary uses part
//! of it.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use chirp_chat::runner::{self, RunnerConfig};
use chirp_proto::handshake::StaticSecret;
use chirp_store::{Sqlite, StoreConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fresh key from the OS generator.
pub(crate) fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&chirp_transport::random_seed().to_le_bytes());
    }
    k
}

/// Runner settings with a fresh server key, adjusted by `tweak`.
pub(crate) fn config(tweak: impl FnOnce(&mut RunnerConfig)) -> RunnerConfig {
    let mut config = RunnerConfig {
        identity: Some(StaticSecret(random_key())),
        ..RunnerConfig::default()
    };
    tweak(&mut config);
    config
}

/// A running server.
pub(crate) struct Srv {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Srv {
    /// Runs `config` on `socket` with the database in `dir`.
    pub(crate) fn spawn(socket: UdpSocket, dir: &Path, config: RunnerConfig) -> Self {
        let addr = socket.local_addr().expect("local addr");
        let store = Sqlite::open(&dir.join("chirp.db"), StoreConfig::default()).expect("store");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
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
            .expect("server runs");
        });
        Self { addr, stop, task }
    }

    /// [`Self::spawn`] on a fresh loopback port.
    pub(crate) fn start(dir: &Path, config: RunnerConfig) -> Self {
        let socket = chirp_transport::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        Self::spawn(socket, dir, config)
    }

    /// Stops the server gracefully and waits, at most `wait`, for it to be done.
    pub(crate) async fn shutdown(self, wait: Duration) {
        let _ = self.stop.send(());
        tokio::time::timeout(wait, self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }

    /// Stops the server as `kill -9` would, as far as one process allows: its task is
    /// dropped where it stands (the transport goes with it; commits already queued finish).
    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
