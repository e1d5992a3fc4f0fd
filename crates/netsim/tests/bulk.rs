//! The bulk channel (PROTOCOL.md §4.7, issue 18) in virtual time: a file-sized transfer
//! arrives byte for byte over a bad path, chat sent during it keeps its latency, and both
//! sides' memory stays within the windows.
//!
//! Latencies are virtual time: from the sending application's `send` to the receiving
//! application's `Event::Message`, measured to the instant (events polled in a step happened
//! at the instant the step ran).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::{
    EndpointConfig, Event, MAX_MESSAGE_SIZE, SendError, TransportConfig, WriteError,
};
use proptest::prelude::*;

mod common;
use common::{CHAT_COUNT, CHAT_EVERY, ONE_WAY, bad_path, line, line_index, p99};

/// The transfer: 50 MB, in chunks of the largest message.
const TOTAL: u64 = 50_000_000;
const CHUNK: usize = MAX_MESSAGE_SIZE;

/// Chunk `i` of the "file": `len` pseudo-random bytes seeded by `i`, so that a chunk
/// delivered twice, swapped or damaged never compares equal to the expected one.
fn chunk(i: u64, len: usize) -> Vec<u8> {
    chirp_netsim::noise(len, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

struct Outcome {
    chat: Vec<Duration>,
    /// When the last bulk byte arrived (with a transfer).
    transfer: Option<Duration>,
    /// When the last chat line was sent, since the start.
    last_chat_sent: Duration,
}

/// `a` sends `CHAT_COUNT` lines to `b`, one every `CHAT_EVERY`, and `total` bytes (none if 0)
/// on the bulk channel at the same time, as fast as the channel takes them.
fn run(seed: u64, total: u64) -> Outcome {
    let cfg = EndpointConfig::default();
    let (window, send_buffer) = (
        cfg.transport.bulk_receive_window,
        cfg.transport.bulk_send_buffer as u64,
    );
    let mut p = Pair::new(cfg, bad_path(), seed);
    let (ca, cb) = p.connect().expect("connects");
    let t0 = p.now;
    let deadline = t0 + Duration::from_secs(600);
    let mut queued = 0u64;
    let mut next_chunk = 0u64;
    let mut received = 0u64;
    let mut received_chunks = 0u64;
    let mut transfer_done = None;
    let mut chat_sent: Vec<Instant> = Vec::new();
    let mut chat: Vec<Option<Duration>> = vec![None; CHAT_COUNT];
    loop {
        // a's application: keep the bulk channel full.
        while queued < total {
            let len = CHUNK.min((total - queued) as usize);
            match p
                .a
                .endpoint
                .send_bulk(ca, Bytes::from(chunk(next_chunk, len)))
            {
                Ok(()) => {
                    queued += len as u64;
                    next_chunk += 1;
                }
                Err(SendError::Write(WriteError::Blocked)) => break,
                Err(e) => panic!("send_bulk: {e}"),
            }
        }
        let next_line = t0 + CHAT_EVERY * (chat_sent.len() as u32 + 1);
        if chat_sent.len() < CHAT_COUNT && next_line <= p.now {
            p.a.endpoint
                .send(ca, &line(chat_sent.len()))
                .expect("chat never blocks");
            chat_sent.push(p.now);
            continue;
        }
        if chat.iter().all(Option::is_some) && received == total {
            break;
        }
        assert!(p.now < deadline, "stalled: {received} of {total} bytes");
        let limit = if chat_sent.len() < CHAT_COUNT {
            next_line
        } else {
            deadline
        };
        let at = p.now;
        if !p.step_until(limit).expect("no busy loop") {
            p.now = limit;
        }
        // Bounded memory on both sides, at every step.
        let held = p.b.endpoint.bulk_recv_buffered(cb).expect("open");
        assert!(held <= window, "receiver holds {held} bulk bytes");
        let unacked = p.a.endpoint.bulk_buffered(ca).expect("open");
        assert!(
            unacked <= send_buffer + CHUNK as u64 + 4,
            "sender holds {unacked}"
        );
        for e in p.b.events.drain(..) {
            match e {
                Event::Message { data, .. } => {
                    let i = line_index(&data);
                    assert_eq!(data, line(i), "line {i} damaged");
                    assert!(chat[i].is_none(), "line {i} twice");
                    assert!(
                        i == 0 || chat[i - 1].is_some(),
                        "line {i} overtook line {}",
                        i - 1
                    );
                    chat[i] = Some(at - chat_sent[i]);
                }
                Event::BulkMessage { data, .. } => {
                    assert!(
                        data[..] == chunk(received_chunks, data.len())[..],
                        "chunk {received_chunks} damaged, reordered or repeated"
                    );
                    received += data.len() as u64;
                    received_chunks += 1;
                    assert!(received <= total, "more bytes than were sent");
                    if received == total {
                        transfer_done = Some(at - t0);
                    }
                }
                Event::Closed { reason, .. } => panic!("b closed: {reason:?}"),
                _ => {}
            }
        }
        for e in p.a.events.drain(..) {
            assert!(!matches!(e, Event::Closed { .. }), "a closed: {e:?}");
        }
    }
    Outcome {
        chat: chat.into_iter().flatten().collect(),
        transfer: transfer_done,
        last_chat_sent: chat_sent.last().map_or(Duration::ZERO, |t| *t - t0),
    }
}

/// Issue 18: a 50 MB transfer under 10 % loss with reordering and duplication arrives byte
/// for byte, and chat written meanwhile keeps a p99 within 10 ms (a quarter of the round
/// trip) of the same chat's p99 on the same path without the transfer. Without the headroom
/// the bulk channel leaves in the congestion window, a line waited for acknowledgements to
/// free room, up to a round trip.
#[test]
#[allow(
    clippy::print_stderr,
    reason = "the rate and latencies are worth seeing with --nocapture"
)]
fn fifty_megabytes_arrive_byte_exact_under_loss_and_chat_keeps_its_latency() {
    let seed = std::env::var("BULK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18);
    let idle = run(seed, 0);
    let busy = run(seed, TOTAL);
    let transfer = busy.transfer.expect("the transfer completed");
    assert!(
        busy.last_chat_sent < transfer,
        "every line was sent during the transfer ({:?}, which took {transfer:?})",
        busy.last_chat_sent
    );
    let (p99_idle, p99_busy) = (p99(&idle.chat), p99(&busy.chat));
    eprintln!(
        "transfer {transfer:?} ({:.1} MB/s); chat p99 {p99_idle:?} idle, {p99_busy:?} during \
         the transfer; max {:?} / {:?}",
        TOTAL as f64 / transfer.as_secs_f64() / 1e6,
        idle.chat.iter().max(),
        busy.chat.iter().max(),
    );
    assert!(
        p99_busy <= p99_idle + Duration::from_millis(10),
        "chat p99 {p99_busy:?} during the transfer against {p99_idle:?} without"
    );
}

/// Seeds the multi-seed test runs: the original test's and the first six.
const SEEDS: [u64; 7] = [1, 2, 3, 4, 5, 6, 18];
/// The transfer per seed in the multi-seed test: smaller than [`TOTAL`] for the run time,
/// large enough to outlast the chat (3 s of lines; ~4 s at the ~5 MB/s this path gives).
const SEED_TOTAL: u64 = 20_000_000;

/// The bound of the test above on every one of [`SEEDS`], with a 20 MB transfer each: one
/// seed's luck must not decide it. Paced, seeds 1 and 3 gave a p99 of 36.5 and 45.5 ms
/// against ~25 ms idle: the copies of a chat line are sized by the loss of the last round
/// trips, which counted a round trip's losses against the next round trip's
/// acknowledgements, read a few per cent on a 10 % path when the sending rate changed, and
/// sent a line two or three times where three or four were needed (a line whose
/// transmissions were all lost then waited a recovery, and the lines behind it with it).
#[test]
fn chat_keeps_its_latency_during_a_transfer_whatever_the_seed() {
    let mut failed = Vec::new();
    for seed in SEEDS {
        let idle = run(seed, 0);
        let busy = run(seed, SEED_TOTAL);
        let transfer = busy.transfer.expect("the transfer completed");
        assert!(
            busy.last_chat_sent < transfer,
            "seed {seed}: every line was sent during the transfer ({:?}, which took \
             {transfer:?})",
            busy.last_chat_sent
        );
        let (p99_idle, p99_busy) = (p99(&idle.chat), p99(&busy.chat));
        if p99_busy > p99_idle + Duration::from_millis(10) {
            failed.push((seed, p99_idle, p99_busy));
        }
    }
    assert!(
        failed.is_empty(),
        "chat p99 (idle, during the transfer) beyond the bound for seeds {failed:?}"
    );
}

/// The bulk channel's flow control binds when the receiving application is slower than the
/// network: `b` takes its events only every 200 ms. The sender stays within its send buffer,
/// the receiver within its window, and everything arrives, in order.
#[test]
fn a_slow_bulk_reader_bounds_both_sides_and_loses_nothing() {
    let transport = TransportConfig {
        bulk_receive_window: 256 * 1024,
        bulk_send_buffer: 256 * 1024,
        ..TransportConfig::default()
    };
    let cfg = EndpointConfig {
        transport,
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY).with_loss(0.05), 7);
    let (ca, cb) = p.connect().expect("connects");
    let total = 4_000_000u64;
    let (mut queued, mut n, mut received, mut got) = (0u64, 0u64, 0u64, 0u64);
    let mut blocked_seen = 0;
    let mut max_held = 0;
    let t0 = p.now;
    // b's application polls its endpoint itself, every 200 ms; meanwhile the endpoint holds
    // what arrived.
    p.b.reading = false;
    let mut next_read = p.now;
    while received < total {
        assert!(
            p.now - t0 < Duration::from_secs(300),
            "stalled at {received}"
        );
        while queued < total {
            let len = 10_000.min((total - queued) as usize);
            match p.a.endpoint.send_bulk(ca, Bytes::from(chunk(n, len))) {
                Ok(()) => {
                    queued += len as u64;
                    n += 1;
                }
                Err(SendError::Write(WriteError::Blocked)) => {
                    blocked_seen += 1;
                    break;
                }
                Err(e) => panic!("send_bulk: {e}"),
            }
        }
        if p.now >= next_read {
            while let Some(e) = p.b.endpoint.poll_event() {
                if let Event::BulkMessage { data, .. } = e {
                    assert!(data[..] == chunk(got, data.len())[..], "chunk {got}");
                    received += data.len() as u64;
                    got += 1;
                }
            }
            next_read = p.now + Duration::from_millis(200);
        }
        if !p.step_until(next_read).expect("no busy loop") {
            p.now = next_read;
        }
        let held = p.b.endpoint.bulk_recv_buffered(cb).expect("open");
        assert!(held <= 256 * 1024, "receiver holds {held}");
        max_held = max_held.max(held);
        assert!(p.a.endpoint.bulk_buffered(ca).expect("open") <= 256 * 1024 + 10_000);
        p.a.events.clear();
    }
    // The window was used beyond the initial limit (BULK_MAX_DATA took effect) and bound.
    assert!(
        max_held > 128 * 1024,
        "at most {max_held} held: nothing was tested"
    );
    assert!(
        blocked_seen > 0,
        "the send buffer never filled: nothing was tested"
    );
    assert_eq!(received, total);
    assert_eq!(p.a.endpoint.bulk_buffered(ca), Some(0), "all acknowledged");
}

/// A closed-loop sender that waits for `BulkWritable` after `Blocked` (the backpressure
/// event, as `Writable` is for chat) is woken every time and never stalls.
#[test]
fn bulk_writable_follows_every_blocked_send() {
    let transport = TransportConfig {
        bulk_send_buffer: 64 * 1024,
        ..TransportConfig::default()
    };
    let cfg = EndpointConfig {
        transport,
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY).with_loss(0.02), 3);
    let (ca, cb) = p.connect().expect("connects");
    let total = 2_000_000u64;
    let (mut queued, mut n, mut received, mut wakeups) = (0u64, 0u64, 0u64, 0u32);
    let mut waiting = false;
    p.drive_until(Duration::from_secs(120), |p| {
        if waiting
            && !p
                .a
                .take_events(|e| matches!(e, Event::BulkWritable { conn } if *conn == ca))
                .is_empty()
        {
            waiting = false;
            wakeups += 1;
        }
        while !waiting && queued < total {
            match p.a.endpoint.send_bulk(ca, Bytes::from(chunk(n, 5000))) {
                Ok(()) => {
                    queued += 5000;
                    n += 1;
                }
                Err(SendError::Write(WriteError::Blocked)) => waiting = true,
                Err(e) => panic!("send_bulk: {e}"),
            }
        }
        for e in p.b.take_events(|e| matches!(e, Event::BulkMessage { .. })) {
            if let Event::BulkMessage { conn, data } = e {
                assert_eq!(conn, cb);
                received += data.len() as u64;
            }
        }
        received == total
    })
    .expect("the transfer completes");
    assert!(wakeups >= 10, "only {wakeups} wake-ups");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any interleaving of chat and bulk messages of any sizes, over a lossy, reordering,
    /// duplicating path, in both directions: each channel delivers exactly what was sent on
    /// it, in its own order, and neither is mixed into the other.
    #[test]
    fn any_interleaving_delivers_each_channel_in_order(
        ops in proptest::collection::vec((any::<bool>(), any::<bool>(), 0usize..20_000), 1..60),
        seed in any::<u64>(),
    ) {
        let link = LinkConfig::ideal(Duration::from_millis(5))
            .with_loss(0.1)
            .with_reorder(0.1, Duration::from_millis(3))
            .with_duplicate(0.1);
        let mut p = Pair::new(EndpointConfig::default(), link, seed);
        let (ca, cb) = p.connect().expect("connects");
        // [side][channel]: what was sent, what arrived.
        let mut sent: [[Vec<Bytes>; 2]; 2] = Default::default();
        for (k, &(from_b, bulk, len)) in ops.iter().enumerate() {
            let side = usize::from(from_b);
            let msg = Bytes::from(chunk(k as u64 * 2 + u64::from(bulk), len));
            let (node, conn) = if from_b { (&mut p.b, cb) } else { (&mut p.a, ca) };
            let r = if bulk {
                node.endpoint.send_bulk(conn, msg.clone())
            } else {
                node.endpoint.send_bytes(conn, msg.clone())
            };
            if r.is_ok() {
                sent[side][usize::from(bulk)].push(msg);
            }
        }
        let want: usize = sent.iter().flatten().map(Vec::len).sum();
        let mut got: [[Vec<Bytes>; 2]; 2] = Default::default();
        p.drive_until(Duration::from_secs(120), |p| {
            for (to, node) in [(1, &mut p.b), (0, &mut p.a)] {
                for e in node.events.drain(..) {
                    match e {
                        Event::Message { data, .. } => got[1 - to][0].push(data),
                        Event::BulkMessage { data, .. } => got[1 - to][1].push(data),
                        _ => {}
                    }
                }
            }
            got.iter().flatten().map(Vec::len).sum::<usize>() == want
        })
        .expect("everything arrives");
        prop_assert_eq!(got, sent);
    }
}

/// The frame types each side sent, from its trace.
fn frames_sent(p: &mut Pair) -> [Vec<chirp_proto::wire::FrameType>; 2] {
    use chirp_proto::trace::TraceEvent;
    let mut out: [Vec<_>; 2] = Default::default();
    for (i, node) in [&mut p.a, &mut p.b].into_iter().enumerate() {
        while let Some(r) = node.endpoint.poll_trace() {
            if let TraceEvent::PacketSent(pk) = r.event {
                out[i].extend(pk.frames.iter().map(|f| f.wire_type()));
            }
        }
    }
    out
}

/// PROTOCOL.md §4.7, "Who may send bulk frames": a peer that may predate the bulk channel
/// never receives a BULK or BULK_MAX_DATA frame unless its application asked for bulk data.
/// A chat-only connection carries neither, either way; the side that receives bulk data
/// announces its window (BULK_MAX_DATA) only once it has, and the side that only sends bulk
/// data never sends BULK_MAX_DATA.
#[test]
fn no_bulk_frame_reaches_a_peer_that_did_not_speak_bulk_first() {
    use chirp_proto::wire::FrameType;
    let cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg.clone(), LinkConfig::ideal(ONE_WAY), 11);
    let (ca, cb) = p.connect().expect("connects");
    for i in 0..50 {
        p.a.endpoint.send(ca, &line(i)).expect("room");
        p.b.endpoint.send(cb, &line(i)).expect("room");
    }
    let mut delivered = 0;
    p.drive_until(Duration::from_secs(10), |p| {
        delivered += p.b.take_messages().len() + p.a.take_messages().len();
        delivered == 100
            && p.a.endpoint.send_buffered(ca) == Some(0)
            && p.b.endpoint.send_buffered(cb) == Some(0)
    })
    .expect("chat delivered");
    assert_eq!(p.a.endpoint.endpoint_stats().trace_dropped, 0);
    let bulk = |t: &FrameType| matches!(t, FrameType::Bulk | FrameType::BulkMaxData);
    for (side, sent) in frames_sent(&mut p).iter().enumerate() {
        assert!(sent.contains(&FrameType::Message), "side {side} sent chat");
        assert!(
            !sent.iter().any(bulk),
            "side {side}: a bulk frame on a chat-only connection"
        );
    }

    // Now `a` sends bulk data: only `a` sends BULK, only `b` sends BULK_MAX_DATA.
    let mut p = Pair::new(cfg, LinkConfig::ideal(ONE_WAY), 12);
    let (ca, _) = p.connect().expect("connects");
    let mut n = 0u64;
    let mut got = 0u64;
    // Drained at every step, so that the bounded trace queue drops nothing.
    let [mut a, mut b]: [Vec<FrameType>; 2] = Default::default();
    p.drive_until(Duration::from_secs(30), |p| {
        let [sa, sb] = frames_sent(p);
        a.extend(sa);
        b.extend(sb);
        while n < 40
            && p.a
                .endpoint
                .send_bulk(ca, Bytes::from(chunk(n, CHUNK)))
                .is_ok()
        {
            n += 1;
        }
        got +=
            p.b.take_events(|e| matches!(e, Event::BulkMessage { .. }))
                .len() as u64;
        got == 40
    })
    .expect("bulk delivered");
    assert_eq!(p.a.endpoint.endpoint_stats().trace_dropped, 0);
    assert_eq!(p.b.endpoint.endpoint_stats().trace_dropped, 0);
    assert!(a.contains(&FrameType::Bulk));
    assert!(
        !a.contains(&FrameType::BulkMaxData),
        "a never received bulk data"
    );
    assert!(
        b.contains(&FrameType::BulkMaxData),
        "b announced its bulk window"
    );
    assert!(!b.contains(&FrameType::Bulk), "b sent no bulk data");
}
