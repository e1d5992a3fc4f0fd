//! HyStart++ (RFC 9406) ends the first slow start before it overflows the bottleneck (issue
//! 18). PROTOCOL.md §6.7.
//!
//! The bulk path of `examples/bulk_sim.rs`: 12.5 MB/s (100 Mbit/s) each way, 20 ms each way,
//! a drop-tail buffer of one bandwidth-delay product (500 kB), no random loss. Slow start
//! alone doubles the window until the buffer overflows, at three times the BDP, and a third
//! of a window is dropped at once; with HyStart++ the RTT's rise ends slow start first.

// The figures are printed (seen with --nocapture).
#![allow(clippy::print_stderr)]

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{EndpointConfig, Event, TransportConfig};

const RATE: u64 = 12_500_000;
const ONE_WAY: Duration = Duration::from_millis(20);

/// One transfer's outcome.
struct Outcome {
    /// Payload over the time from the first send to the last delivery, over the link rate.
    goodput: f64,
    packets_sent: u64,
    queue_drops: u64,
}

/// `total` bytes from A to B in 64,000-byte messages, with 4 MiB windows (as `bulk_sim`).
fn transfer(hystart: bool, total: usize, seed: u64) -> Outcome {
    let bdp = (u128::from(RATE) * 2 * ONE_WAY.as_millis() / 1_000) as usize;
    let link = LinkConfig::ideal(ONE_WAY).with_rate(RATE, bdp);
    let config = EndpointConfig {
        transport: TransportConfig {
            receive_window: 4 << 20,
            send_buffer: 4 << 20,
            max_datagram_size: 1_452,
            hystart,
            ..TransportConfig::default()
        },
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(config, link, seed);
    let (ca, _) = p.connect().expect("handshake");
    let start = p.now;
    let msg = vec![7u8; 64_000];
    let n = total / msg.len();
    let (mut sent, mut got) = (0, 0);
    let deadline = start + Duration::from_secs(60);
    while got < n {
        while sent < n && p.a.endpoint.send(ca, &msg).is_ok() {
            sent += 1;
        }
        assert!(p.now < deadline, "bulk transfer stalled: {got} of {n}");
        let next = p.now + Duration::from_millis(1);
        p.advance_to(next).expect("no busy loop");
        got +=
            p.b.take_events(|e| matches!(e, Event::Message { .. }))
                .len();
    }
    let secs = (p.now - start).as_secs_f64();
    let stats = p.a.endpoint.stats(ca).expect("live");
    Outcome {
        goodput: (n * msg.len()) as f64 / secs / RATE as f64,
        packets_sent: stats.packets_sent,
        queue_drops: p.path.a_to_b.stats().queue_drops,
    }
}

/// Without HyStart++ the first slow start overflows the buffer by far (695 of 14,834 packets,
/// 4.7 %, dropped at the queue); with it a quarter as many (173 of 14,312, 1.2 %: the RTT
/// shows the queue a round trip late, when the window is near the BDP plus the buffer), and
/// the transfer is no slower (86.4 % of the link against 86.1 %). No random loss, so the
/// outcome is the same for any seed.
#[test]
fn the_first_slow_start_ends_before_the_queue_overflows() {
    let total = 20_000_000;
    let off = transfer(false, total, 1);
    let on = transfer(true, total, 1);
    eprintln!(
        "without HyStart++ {:.1} % of the link, {} of {} packets dropped at the queue; with it \
         {:.1} %, {} of {}",
        off.goodput * 100.0,
        off.queue_drops,
        off.packets_sent,
        on.goodput * 100.0,
        on.queue_drops,
        on.packets_sent,
    );
    assert!(
        off.queue_drops * 25 > off.packets_sent,
        "slow start alone overflows the buffer (more than 4 % dropped)"
    );
    assert!(
        on.queue_drops * 50 < on.packets_sent,
        "with HyStart++ under 2 % of the packets are dropped at the queue"
    );
    assert!(
        on.queue_drops * 3 < off.queue_drops,
        "a third of the drops or fewer"
    );
    assert!(
        on.goodput >= off.goodput,
        "no slower ({:.3} against {:.3})",
        on.goodput,
        off.goodput
    );
}
