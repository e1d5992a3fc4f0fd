//! The reference: plain UDP over loopback on the same machine, in the same run.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::BenchError;

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct RawReport {
    /// Datagrams received per second.
    pub packets_per_sec: f64,
    /// Datagrams sent, warm-up included (at least `received`).
    pub sent: u64,
    /// Received in the measured interval.
    pub received: u64,
    /// Payload bytes per datagram.
    pub size: usize,
}

/// Sends `size`-byte datagrams from one thread to another over 127.0.0.1 for `duration`, one
/// `send_to` and one `recv_from` per datagram (as chirp's transport does today), and counts
/// what arrives. The sender does not wait for the receiver: what the kernel drops is not
/// counted, so this is the rate at which one socket can take datagrams in.
pub fn run(duration: Duration, size: usize) -> Result<RawReport, BenchError> {
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("bind the raw receiver"))?;
    let to = rx
        .local_addr()
        .map_err(BenchError::io("read the raw receiver's address"))?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(BenchError::io("set a read timeout"))?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("bind the raw sender"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let buf = vec![0x5a_u8; size];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A full socket buffer (ENOBUFS) is a drop, as on a real network.
                if tx.send_to(&buf, to).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    let mut buf = vec![0u8; 65_536];
    let mut received = 0u64;
    // Warm up, then measure: the first datagrams find cold caches and an idle scheduler.
    let warm = Instant::now() + Duration::from_millis(100);
    while Instant::now() < warm {
        let _ = rx.recv_from(&mut buf);
    }
    let start = Instant::now();
    let end = start + duration;
    while Instant::now() < end {
        if rx.recv_from(&mut buf).is_ok() {
            received += 1;
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = sender
        .join()
        .map_err(|_| BenchError::Stuck("the raw sender thread panicked".into()))?;
    Ok(RawReport {
        packets_per_sec: received as f64 / elapsed.as_secs_f64(),
        sent,
        received,
        size,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn datagrams_arrive() {
        let r = super::run(std::time::Duration::from_millis(100), 100).expect("runs");
        assert!(r.received > 0 && r.packets_per_sec > 0.0, "{r:?}");
        assert!(r.sent >= r.received, "{r:?}");
    }
}
