//! Congestion control tells random loss from congestion (issue 13, part 3).
//!
//! A loss with no queue standing in the path (the smallest RTT of the last smoothed RTT close
//! to the minimum RTT) is taken for random: the window is not halved for it, only capped at
//! twice the bandwidth-delay product shown (never below the initial window). A loss with a
//! standing queue halves the window as NewReno does. PROTOCOL.md §6.7.

// The bulk test prints its figures (seen with --nocapture).
#![allow(clippy::print_stderr)]

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{EndpointConfig, Event};

const ONE_WAY: Duration = Duration::from_millis(20);

/// A bulk transfer from A to B over a bottleneck of `rate` bytes/s with a `queue`-byte
/// drop-tail buffer and random `loss`: `total` bytes in 8 KiB messages, as fast as the
/// transport takes them. Returns (seconds to deliver all, A's stats, datagrams the bottleneck
/// queue dropped).
fn bulk(
    rate: u64,
    queue: usize,
    loss: f64,
    total: usize,
    seed: u64,
) -> (f64, chirp_proto::ConnectionStats, u64) {
    bulk_over(
        LinkConfig::ideal(ONE_WAY)
            .with_rate(rate, queue)
            .with_loss(loss),
        total,
        seed,
    )
}

/// [`bulk`] over any link.
fn bulk_over(
    link: LinkConfig,
    total: usize,
    seed: u64,
) -> (f64, chirp_proto::ConnectionStats, u64) {
    let mut p = Pair::new(EndpointConfig::default(), link, seed);
    let (ca, _) = p.connect().expect("handshake");
    let start = p.now;
    let msg = vec![7u8; 8 * 1024];
    let n = total / msg.len();
    let (mut sent, mut got) = (0, 0);
    let deadline = start + Duration::from_secs(600);
    while got < n {
        while sent < n && p.a.endpoint.send(ca, &msg).is_ok() {
            sent += 1;
        }
        assert!(p.now < deadline, "bulk transfer stalled: {got} of {n}");
        let next = p.now + Duration::from_millis(5);
        p.advance_to(next).expect("no busy loop");
        got +=
            p.b.take_events(|e| matches!(e, Event::Message { .. }))
                .len();
    }
    let secs = (p.now - start).as_secs_f64();
    let stats = p.a.endpoint.stats(ca).expect("live");
    (secs, stats, p.path.a_to_b.stats().queue_drops)
}

/// 20 % random loss, no bottleneck worth the name (10 MB/s): the window is not halved per
/// loss period, so 2 MB go through at many times the rate that halving allows. With NewReno's
/// halving (before issue 13) the window sat near its two-datagram minimum: about 2 datagrams
/// per 40 ms RTT, 60 kB/s, over 30 s for these 2 MB.
#[test]
fn random_loss_does_not_collapse_the_window() {
    for seed in 1..=3 {
        let (secs, s, _) = bulk(10_000_000, 1 << 20, 0.20, 2 << 20, seed);
        eprintln!(
            "seed {seed}: {secs:.2} s, cwnd {}, lost {}, periods taken for random {}",
            s.cwnd, s.packets_lost, s.random_loss_periods
        );
        assert!(s.random_loss_periods > 0, "losses were taken for random");
        assert!(secs < 8.0, "seed {seed}: 2 MB took {secs:.1} s");
        // The window grows through random loss periods (slow start goes on until a congestion
        // period): 0.96-1.25 s, against 6.4-7.3 s when each period froze growth for a flight.
        assert!(secs < 2.5, "seed {seed}: 2 MB took {secs:.1} s");
    }
}

/// A real bottleneck: 250 kB/s with a 64 KiB buffer (up to 260 ms of queue on a 40 ms path),
/// no random loss. Its losses come with a standing queue, so they halve the window: the
/// transfer still fills the link, and the buffer overflows only now and then rather than all
/// the time.
#[test]
fn a_standing_queue_still_halves_the_window() {
    for seed in 1..=3 {
        let (secs, s, drops) = bulk(250_000, 64 * 1024, 0.0, 2 << 20, seed);
        let goodput = f64::from(2u32 << 20) / secs;
        eprintln!(
            "seed {seed}: {secs:.2} s ({goodput:.0} B/s), cwnd {}, queue drops {drops} of {} \
             packets, periods taken for random {}",
            s.cwnd, s.packets_sent, s.random_loss_periods
        );
        assert!(goodput > 200_000.0, "seed {seed}: the link is used");
        assert!(
            drops * 20 < s.packets_sent,
            "seed {seed}: at most 5 % of the packets overflow the buffer"
        );
        assert!(
            s.random_loss_periods * 4 <= s.packets_lost.max(1),
            "seed {seed}: queue losses are mostly taken for congestion"
        );
    }
}

/// Jitter that keeps FIFO order (0-30 ms on a 20 ms path, each way) with 35 % random loss and
/// no bottleneck: at any real rate every packet waits behind the slowest before it, the RTT
/// sits near the top of the jitter, and a standing queue shows that halving the window does
/// not drain. After a halving or two, the losses are taken for random and the window grows.
/// (Before: every other period halved the window, which stayed at 2-5 datagrams.)
#[test]
fn a_queue_that_does_not_drain_is_not_ours() {
    for seed in 1..=3 {
        let link = LinkConfig::ideal(ONE_WAY)
            .with_jitter(Duration::from_millis(30))
            .with_loss(0.35);
        let (secs, s, _) = bulk_over(link, 1 << 20, seed);
        eprintln!(
            "seed {seed}: {secs:.2} s, cwnd {}, lost {}, periods taken for random {}, for \
             congestion {}",
            s.cwnd, s.packets_lost, s.random_loss_periods, s.congestion_periods
        );
        assert!(
            s.congestion_periods * 10 <= s.random_loss_periods,
            "seed {seed}: the jitter's delay is mostly not taken for a queue of ours"
        );
        // 5.9-9.7 s here; 82 s before (seed 1), with the window at 2-5 datagrams.
        assert!(secs < 10.0, "seed {seed}: 1 MB took {secs:.1} s");
    }
}

/// The same bottleneck for twice as long (over the 10 s a base RTT is kept): a halving that
/// does not drain a slow start's overshoot is still ours (the delivery rate held), so the
/// buffer does not keep overflowing. And one whose buffer holds two datagrams (a policer, or a
/// buffer too shallow to show a queue: its losses look random, so the window is only capped at
/// twice the BDP): a known cost, 1,102 of 2,931 packets dropped at the queue (621 of 2,444
/// before random periods stopped freezing growth), the same goodput; this guards it from
/// getting worse. Pacing at the delivery rate would be the fix (PERFORMANCE.md).
#[test]
fn long_transfers_and_shallow_buffers_do_not_keep_overflowing() {
    let (secs, s, drops) = bulk(250_000, 64 * 1024, 0.0, 4 << 20, 1);
    eprintln!(
        "64 KiB buffer, 4 MB: {secs:.2} s, drops {drops} of {}, random {}, congestion {}",
        s.packets_sent, s.random_loss_periods, s.congestion_periods
    );
    assert!(f64::from(4u32 << 20) / secs > 200_000.0, "the link is used");
    assert!(
        drops * 20 < s.packets_sent,
        "at most 5 % dropped at the queue"
    );
    assert!(s.congestion_periods > s.random_loss_periods);
    let (secs, s, drops) = bulk(250_000, 2_400, 0.0, 2 << 20, 1);
    eprintln!(
        "2.4 kB buffer, 2 MB: {secs:.2} s, drops {drops} of {}, random {}, congestion {}",
        s.packets_sent, s.random_loss_periods, s.congestion_periods
    );
    assert!(f64::from(2u32 << 20) / secs > 200_000.0, "the link is used");
    assert!(
        drops * 5 < s.packets_sent * 2,
        "at most 40 % dropped at the queue"
    );
}

/// A 100 Mbit/s bottleneck each way with a buffer of one bandwidth-delay product (500 kB at a
/// 40 ms round trip), random loss after it, and 4 MiB windows (flow control never binds):
/// `total` bytes in 64,000-byte messages. Returns the fraction of the link used (payload over
/// the time from the first send to the last delivery) and A's stats.
fn fast_bulk(loss: f64, total: usize, seed: u64) -> (f64, chirp_proto::ConnectionStats) {
    let (fraction, stats, _) = fast_bulk_stalled(loss, total, seed, None);
    (fraction, stats)
}

/// [`fast_bulk`], with the path stalled (both ways, `Path::stall`) for `stall.1` from
/// `stall.0` after the first send, if given. Also returns how long after the stall's end (or
/// the first send) A's window first reached [`NEAR_BDP`], if it did.
fn fast_bulk_stalled(
    loss: f64,
    total: usize,
    seed: u64,
    stall: Option<(Duration, Duration)>,
) -> (f64, chirp_proto::ConnectionStats, Option<Duration>) {
    const RATE: u64 = 12_500_000;
    let link = LinkConfig::ideal(ONE_WAY)
        .with_rate(RATE, 500_000)
        .with_loss(loss);
    let config = EndpointConfig {
        transport: chirp_proto::TransportConfig {
            receive_window: 4 << 20,
            send_buffer: 4 << 20,
            ..chirp_proto::TransportConfig::default()
        },
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(config, link, seed);
    let (ca, _) = p.connect().expect("handshake");
    let start = p.now;
    let resumed = match stall {
        Some((at, length)) => {
            p.path.stall(start + at, start + at + length);
            start + at + length
        }
        None => start,
    };
    let mut near_bdp = None;
    let msg = vec![7u8; 64_000];
    let n = total / msg.len();
    let (mut sent, mut got) = (0, 0);
    let deadline = start + Duration::from_secs(120);
    while got < n {
        while sent < n && p.a.endpoint.send(ca, &msg).is_ok() {
            sent += 1;
        }
        assert!(p.now < deadline, "bulk transfer stalled: {got} of {n}");
        let next = p.now + Duration::from_millis(2);
        p.advance_to(next).expect("no busy loop");
        got +=
            p.b.take_events(|e| matches!(e, Event::Message { .. }))
                .len();
        if near_bdp.is_none()
            && p.now >= resumed
            && p.a.endpoint.stats(ca).expect("live").cwnd >= NEAR_BDP
        {
            near_bdp = Some(p.now - resumed);
        }
    }
    let secs = (p.now - start).as_secs_f64();
    let fraction = (n * msg.len()) as f64 / secs / RATE as f64;
    (fraction, p.a.endpoint.stats(ca).expect("live"), near_bdp)
}

/// A window near [`fast_bulk`]'s bandwidth-delay product (500 kB).
const NEAR_BDP: u64 = 400_000;

/// Issue 18: a fast path with a window of more than 1,024 packets in flight. Before, the
/// receiver buffered at most 1,024 packets beyond a gap and dropped the rest unacknowledged:
/// at 1 % loss the sender stalled on probe timeouts and 10 MB took over 100 s (0.4 % of the
/// link). Now the link is used at 0, 1 and 5 % random loss. (20 MB: the slow start's
/// overshoot, about 840 packets dropped at the buffer, is a fixed cost that a longer transfer
/// spreads thinner: 100 MB reach ~95 % at 0 %.)
#[test]
fn a_fast_path_with_a_large_window_is_filled_under_random_loss() {
    for (loss, least) in [(0.0, 0.80), (0.01, 0.75), (0.05, 0.70)] {
        let (fraction, s) = fast_bulk(loss, 20_000_000, 1);
        eprintln!(
            "{:.0} %: {:.1} % of the link, lost {}, ptos {}, congestion / random periods {} / {}",
            loss * 100.0,
            fraction * 100.0,
            s.packets_lost,
            s.ptos,
            s.congestion_periods,
            s.random_loss_periods
        );
        assert!(
            fraction >= least,
            "{:.0} % loss: {:.1} % of the link",
            loss * 100.0,
            fraction * 100.0
        );
    }
}

/// Issue 18's outlier: one 100 MB transfer in three at 43 % of the link at 5 % loss on real
/// sockets. Slow start overshoots the one-BDP buffer, the halving leaves a window above the BDP
/// (1.3 MB to 660 kB, the BDP being 500 kB), whose excess stands as a queue of ~13 ms; the next
/// random loss came with it, was taken for congestion, and halved the window to 330 kB, which
/// congestion avoidance regrew by one datagram per round trip. These seeds are the three
/// worst of seeds 1 to 40 before (62.4, 61.6 and 60.4 % of the link; 73-78 % after, every
/// seed over 73 %): the second halving now stops at the BDP shown, and the first, the
/// overshoot's, still halves.
#[test]
fn a_halving_after_the_first_slow_start_does_not_leave_the_link_idle() {
    for seed in [6, 20, 34] {
        let (fraction, s) = fast_bulk(0.05, 20_000_000, seed);
        eprintln!(
            "seed {seed}: {:.1} % of the link, cwnd {} at the end, congestion / random periods \
             {} / {}",
            fraction * 100.0,
            s.cwnd,
            s.congestion_periods,
            s.random_loss_periods
        );
        assert!(
            s.congestion_periods >= 1,
            "seed {seed}: the overshoot is congestion"
        );
        assert!(
            fraction >= 0.72,
            "seed {seed}: {:.1} % of the link",
            fraction * 100.0
        );
        assert!(
            s.cwnd >= 450_000,
            "seed {seed}: the window ends near the BDP, not under it: {}",
            s.cwnd
        );
    }
}

/// Issue 18's real outlier: one 100 MB round in three at 43 % of the link at 5 % loss on real
/// sockets, with 0 congestion periods and hundreds of random ones, on a busy machine. A stall
/// of the proxy (50 ms, 200 ms into the transfer, in the first slow start) holds the
/// acknowledgements, the delivery rate shown stops growing, and the random-loss cap (twice
/// the BDP shown) binds twice at the same ~90 kB, which ended slow start there for good: the
/// window then grew by one datagram per round trip towards a BDP of 500 kB (26-28 % of the
/// link for these seeds, against 73-76 % without the stall). A threshold set by caps alone
/// is now lifted by a cap that has grown past it while the window is full, so slow start
/// resumes and ends where the path is full (a congestion period, the overshoot), as without
/// the stall.
#[test]
fn a_stall_in_the_first_slow_start_does_not_end_it_for_good() {
    let stall = (Duration::from_millis(200), Duration::from_millis(50));
    for seed in [1, 2, 3] {
        let (clear, _) = fast_bulk(0.05, 20_000_000, seed);
        let (stalled, s, near_bdp) = fast_bulk_stalled(0.05, 20_000_000, seed, Some(stall));
        eprintln!(
            "seed {seed}: {:.1} % of the link with the stall, {:.1} % without; window at \
             {NEAR_BDP} bytes {near_bdp:?} after the stall; congestion / random periods \
             {} / {}",
            stalled * 100.0,
            clear * 100.0,
            s.congestion_periods,
            s.random_loss_periods
        );
        assert!(
            near_bdp.is_some_and(|t| t <= Duration::from_secs(1)),
            "seed {seed}: slow start resumed after the stall: window at {NEAR_BDP} bytes \
             {near_bdp:?} after it"
        );
        assert!(
            s.congestion_periods >= 1,
            "seed {seed}: slow start ended at the path's limit (its overshoot), not at the stall"
        );
        assert!(
            stalled >= 0.85 * clear,
            "seed {seed}: {:.1} % of the link with the stall, {:.1} % without",
            stalled * 100.0,
            clear * 100.0
        );
    }
}
