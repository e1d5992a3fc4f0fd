//! Writes the seed corpora of the fuzz targets (committed under `fuzz/seeds/<target>/`).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [OUT_DIR]   # default fuzz/seeds
//! ```
//!
//! Every seed is checked before it is written: the packets authenticate and decode with the
//! expected number of frames, and each endpoint scenario reaches the state it is meant to reach.
#![allow(clippy::print_stdout)]

use std::fs;
use std::path::{Path, PathBuf};

use chirp_fuzz::endpoint::{Cid, Kind, Op, RunStats, encode, run};
use chirp_fuzz::pair::Op as P;
use chirp_proto::coding::put_varint;
use chirp_proto::crypto::InitialKeys;
use chirp_proto::wire::{
    AckFrame, ConnectionId, Frame, RESET_TOKEN_LEN, RefuseReason, encode_refuse, encode_reset,
    encode_retry,
};

fn frames(fs: &[Frame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fs {
        f.encode(&mut out);
    }
    out
}

fn ack(ranges: &[(u64, u64)]) -> Frame<'static> {
    Frame::Ack(AckFrame {
        delay_us: 1234,
        ranges: ranges.to_vec(),
    })
}

/// One application message as it appears in the stream: `varint(len) || bytes`.
fn stream_msg(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create seed directory");
    fs::write(dir.join(name), bytes).expect("write seed");
    println!("{:>5} bytes  {}", bytes.len(), dir.join(name).display());
}

/// A packet from a peer; INITIALs are padded, as only padded INITIALs open connections.
fn pkt(from_port: u8, kind: Kind, dst: Cid, pn: u16) -> Op {
    Op::Packet {
        from_port,
        kind,
        pad: kind == Kind::Initial,
        dst,
        src_cid: 0x3333_3333_3333_3333 + u64::from(from_port),
        pn,
        pn_high: false,
        len: 0,
    }
}

fn scenario(dir: &Path, name: &str, ops: &[(Op, Vec<u8>)], check: impl Fn(&RunStats) -> bool) {
    let borrowed: Vec<(Op, &[u8])> = ops.iter().map(|(o, p)| (*o, p.as_slice())).collect();
    let bytes = encode(&borrowed);
    let decoded = chirp_fuzz::endpoint::decode(&bytes);
    assert_eq!(
        decoded.len(),
        ops.len(),
        "{name}: decodes to another op count"
    );
    for ((want, want_payload), (got, got_payload)) in borrowed.iter().zip(&decoded) {
        assert_eq!(want_payload, got_payload, "{name}: payload differs");
        // `encode` rewrites the length fields; compare the rest through Debug.
        let strip = |o: &Op| {
            let mut o = *o;
            if let Op::Datagram { len, .. } | Op::Packet { len, .. } = &mut o {
                *len = 0;
            }
            o
        };
        assert_eq!(strip(want), strip(got), "{name}: op differs");
    }
    let stats = run(&bytes);
    println!("{name}: {stats:?}");
    assert!(
        check(&stats),
        "{name}: scenario did not do what it is meant to: {stats:?}"
    );
    write(dir, name, &bytes);
}

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));

    // ---- Datagrams: packet_decode_sealed gets (type selector, packet number, plaintext
    // frames); packet_decode gets the sealed datagram built from them.
    let hello = stream_msg(b"hello");
    let eph = [0x20u8; 32];
    let plain: Vec<(&str, u8, u8, Vec<u8>, usize)> = vec![
        (
            "initial_handshake_padding",
            0,
            0,
            [frames(&[Frame::Handshake(&eph)]), vec![0; 1100]].concat(),
            2,
        ),
        (
            "handshake_msg3_ack",
            1,
            2,
            frames(&[Frame::Handshake(&[0x33; 64]), ack(&[(0, 0)])]),
            2,
        ),
        (
            "accept_msg2_ack_close",
            2,
            0,
            frames(&[
                Frame::Handshake(&[0x44; 96]),
                ack(&[(1, 1)]),
                Frame::Close {
                    code: 4,
                    reason: b"handshake failed",
                },
            ]),
            3,
        ),
        (
            "data_ack_message",
            3,
            5,
            frames(&[
                ack(&[(10, 12), (5, 7), (0, 0)]),
                Frame::Message {
                    offset: 0,
                    data: &hello,
                },
            ]),
            2,
        ),
        (
            "data_phase1_every_frame",
            4,
            70,
            frames(&[
                Frame::Ping,
                ack(&[(1 << 31, (1 << 31) + 3), (7, 9)]),
                Frame::Message {
                    offset: 70_000,
                    data: b"\x02hi",
                },
                Frame::MaxData { limit: 1 << 40 },
                Frame::PathChallenge([1, 2, 3, 4, 5, 6, 7, 8]),
                Frame::PathResponse([8, 7, 6, 5, 4, 3, 2, 1]),
                Frame::Handshake(b"noise"),
                Frame::Close {
                    code: 5,
                    reason: b"key mismatch",
                },
                Frame::Padding { len: 4 },
            ]),
            9,
        ),
        (
            // The half-close (docs/PROTOCOL.md §4.6): FIN and RECEIVED, with an ACK and the
            // last message of a stream.
            "data_fin_received",
            3,
            71,
            frames(&[
                ack(&[(3, 5)]),
                Frame::Message {
                    offset: 297,
                    data: b"\x02hi",
                },
                Frame::Fin { final_offset: 300 },
                Frame::Received { offset: 70_000 },
            ]),
            4,
        ),
        (
            // The bulk channel (docs/PROTOCOL.md §4.7) beside the message stream: a chat
            // message, a bulk fragment and the bulk channel's credit.
            "data_message_bulk",
            3,
            72,
            frames(&[
                ack(&[(40, 44)]),
                Frame::Message {
                    offset: 12,
                    data: &hello,
                },
                Frame::Bulk {
                    offset: 1 << 20,
                    data: &[0xb5; 900],
                },
                Frame::BulkMaxData { limit: 3 << 20 },
            ]),
            4,
        ),
    ];
    for (name, sel, pn, frames, nframes) in &plain {
        let input = [vec![*sel, *pn], frames.clone()].concat();
        let dgram = chirp_fuzz::sealed_datagram(&input);
        assert_eq!(chirp_fuzz::check_datagram(&dgram), *nframes, "{name}");
        write(
            &out.join("packet_decode_sealed"),
            &format!("{name}.bin"),
            &input,
        );
        write(&out.join("packet_decode"), &format!("{name}.bin"), &dgram);
    }
    // A RETRY (authenticates, no frames) for packet_decode.
    let retry = encode_retry(
        ConnectionId(0x2222),
        chirp_fuzz::SEALED_DCID,
        &[0x77; 24],
        &InitialKeys::new(chirp_fuzz::SEALED_DCID.0).retry,
    );
    assert_eq!(chirp_fuzz::check_datagram(&retry), 0);
    write(&out.join("packet_decode"), "retry.bin", &retry);
    // A REFUSE (authenticates, no frames, reason SERVER_FULL) for packet_decode.
    let refuse = encode_refuse(
        ConnectionId(0x2222),
        chirp_fuzz::SEALED_DCID,
        RefuseReason::ServerFull,
        &InitialKeys::new(chirp_fuzz::SEALED_DCID.0).refuse,
    );
    assert_eq!(chirp_fuzz::check_datagram(&refuse), 0);
    assert!(
        chirp_proto::wire::Packet::new_checked(&refuse).is_ok_and(|p| p
            .open(&InitialKeys::new(chirp_fuzz::SEALED_DCID.0).refuse)
            .is_ok())
    );
    write(&out.join("packet_decode"), "refuse.bin", &refuse);
    // Issue 13's regression input: a stateless RESET is exactly 18 bytes and has no tag (the
    // harness used to demand one of every packet and died on this within a second). One byte
    // more or less is not a RESET.
    let reset = encode_reset(&[0x5a; RESET_TOKEN_LEN]);
    assert_eq!(reset.len(), 18);
    assert_eq!(chirp_fuzz::check_datagram(&reset), 0);
    assert!(chirp_proto::wire::Packet::new_checked(&reset[..17]).is_err());
    assert!(chirp_proto::wire::Packet::new_checked(&[&reset[..], &[0]].concat()).is_err());
    write(
        &out.join("packet_decode"),
        "regression-reset-no-tag.bin",
        &reset,
    );

    // ---- Handshake target: mode byte, then a message of the size the mode expects.
    let dir = out.join("handshake");
    for (mode, len, name) in [
        (0u8, 32usize, "responder_msg1"),
        (1, 96, "initiator_msg2"),
        (2, 64, "responder_msg3"),
        (3, 32, "endpoint_initial_msg1"),
        (4, 96, "endpoint_accept_msg2"),
        (5, 64, "endpoint_handshake_msg3"),
    ] {
        let input: Vec<u8> = std::iter::once(mode)
            .chain((0..len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(mode)))
            .collect();
        chirp_fuzz::handshake::run(&input);
        write(&dir, &format!("{name}.bin"), &input);
    }
    write(&dir, "empty.bin", &[]);

    // ---- Endpoint scenarios.
    let dir = out.join("endpoint");
    let e = Vec::new;
    let msg1 = frames(&[Frame::Handshake(&eph)]);

    // The endpoint as a server: an INITIAL without token gets a RETRY; repeated with the
    // cookie (the harness attaches it) it opens a connection, which answers with ACCEPT; a
    // HANDSHAKE packet with a forged message 3 then fails the handshake (HANDSHAKE_FAILED).
    scenario(
        &dir,
        "server_retry_accept_bad_msg3.bin",
        &[
            (
                pkt(0, Kind::Initial, Cid::Raw(0x1111_1111_1111_1111), 0),
                msg1.clone(),
            ),
            (
                pkt(0, Kind::Initial, Cid::Raw(0x1111_1111_1111_1111), 1),
                msg1.clone(),
            ),
            (Op::Advance { ms: 30 }, e()),
            (
                // Learned(0) is the RETRY's source CID (the initial destination CID); the
                // ACCEPT announced the server's own, Learned(1).
                pkt(0, Kind::Handshake, Cid::Learned(1), 2),
                frames(&[Frame::Handshake(&[0x33; 64]), ack(&[(0, 0)])]),
            ),
            (Op::Timeout, e()),
            (Op::Timeout, e()),
        ],
        |s| {
            s.endpoint.retries_sent == 1
                && s.endpoint.unknown_connection == 0
                && s.datagrams_out >= 3
        },
    );

    // The endpoint as a client: connect, a forged ACCEPT (HANDSHAKE_FAILED), then a second
    // attempt left to probes and the idle timeout.
    let mut ops = vec![
        (Op::Connect { port: 1 }, e()),
        (Op::Advance { ms: 40 }, e()),
        (
            pkt(1, Kind::Accept, Cid::Learned(0), 0),
            frames(&[Frame::Handshake(&[0x44; 96]), ack(&[(0, 0)])]),
        ),
        (Op::Connect { port: 2 }, e()),
    ];
    ops.extend(std::iter::repeat_n((Op::Timeout, e()), 6));
    ops.push((Op::Advance { ms: 31_000 }, e()));
    scenario(&dir, "client_bad_accept_idle.bin", &ops, |s| {
        s.events.closed >= 1 && s.datagrams_out >= 3
    });

    // The endpoint as a client refused by a full server: a REFUSE that does not echo the
    // attempt's initial destination ID is ignored, the authentic one (reason 1, SERVER_FULL)
    // ends the attempt at once, long before any timeout.
    let refuse = |pn_high: bool| Op::Packet {
        from_port: 1,
        kind: Kind::Refuse,
        pad: false,
        dst: Cid::Learned(0),
        src_cid: 0x7777,
        pn: 1,
        pn_high,
        len: 0,
    };
    scenario(
        &dir,
        "client_refused.bin",
        &[
            (Op::Connect { port: 1 }, e()),
            (refuse(true), e()),
            (refuse(false), e()),
        ],
        |s| s.events.closed == 1 && s.datagrams_out == 1,
    );

    // Simultaneous open, both outcomes of the tie-break: the peer's ID is larger than ours
    // (we yield and become its server, no cookie needed) and smaller (we ignore its INITIAL).
    let initial_from = |port: u8, src_cid: u64| Op::Packet {
        from_port: port,
        kind: Kind::Initial,
        pad: true,
        dst: Cid::Raw(0x5555),
        src_cid,
        pn: 0,
        pn_high: false,
        len: 0,
    };
    scenario(
        &dir,
        "simultaneous_open.bin",
        &[
            (Op::Connect { port: 2 }, e()),
            (initial_from(2, u64::MAX), msg1.clone()),
            (Op::Connect { port: 3 }, e()),
            (initial_from(3, 1), msg1.clone()),
            (Op::Advance { ms: 500 }, e()),
            (Op::Timeout, e()),
        ],
        |s| s.datagrams_out >= 3 && s.endpoint.retries_sent == 0,
    );

    // Raw and sealed datagrams: an unpadded sealed INITIAL (refused), junk (dropped), a DATA
    // packet numbered near the varint limit under a key the endpoint does not have.
    let mut sealed_initial = vec![0u8, 0];
    sealed_initial.extend_from_slice(&msg1);
    scenario(
        &dir,
        "raw_and_sealed.bin",
        &[
            (
                Op::Datagram {
                    from_port: 3,
                    seal: true,
                    len: 0,
                },
                sealed_initial,
            ),
            (
                Op::Datagram {
                    from_port: 3,
                    seal: false,
                    len: 0,
                },
                vec![0x02; 40],
            ),
            (
                Op::Packet {
                    from_port: 3,
                    kind: Kind::Data,
                    pad: false,
                    dst: Cid::Raw(0x6666),
                    src_cid: 0,
                    pn: 0,
                    pn_high: true,
                    len: 0,
                },
                frames(&[ack(&[(0, 0)]), Frame::Ping]),
            ),
            (Op::Timeout, e()),
        ],
        // The DATA packet for a connection the endpoint does not know is answered with a
        // stateless RESET (PROTOCOL.md §5.10); nothing else is answered.
        |s| {
            s.endpoint.refused >= 1
                && s.endpoint.resets_sent <= 1
                && s.datagrams_out == s.endpoint.resets_sent
        },
    );

    // Malformed long-header packets: an INITIAL carrying MESSAGE (forbidden in long headers)
    // and one without a HANDSHAKE frame; both dropped before any state.
    let mut too_large = Vec::new();
    put_varint(&mut too_large, 70_000);
    scenario(
        &dir,
        "initial_forbidden_frames.bin",
        &[
            (
                pkt(0, Kind::Initial, Cid::Raw(0xa), 0),
                [
                    msg1.clone(),
                    frames(&[Frame::Message {
                        offset: 0,
                        data: &too_large,
                    }]),
                ]
                .concat(),
            ),
            (
                pkt(1, Kind::Initial, Cid::Raw(0xb), 0),
                frames(&[Frame::Ping]),
            ),
            (Op::Timeout, e()),
        ],
        |s| s.endpoint.malformed_dropped == 2 && s.datagrams_out == 0,
    );
    // ---- Pair scenarios (an established connection; config byte, then operations).
    let dir = out.join("pair");
    pair_scenarios(&dir);
}

/// Writes one `pair` seed after checking that it runs cleanly and reaches its goal.
fn pair_seed(
    dir: &Path,
    name: &str,
    config: u8,
    ops: &[P],
    check: impl Fn(&chirp_fuzz::pair::RunStats) -> bool,
) {
    let bytes = chirp_fuzz::pair::encode(config, ops);
    let (c, decoded) = chirp_fuzz::pair::decode(&bytes);
    assert_eq!((c, decoded.as_slice()), (config, ops), "{name}: round trip");
    let stats = chirp_fuzz::pair::run(&bytes);
    assert!(check(&stats), "{name}: goal not reached: {stats:?}");
    write(dir, name, &bytes);
}

fn pair_scenarios(dir: &Path) {
    const C: u8 = 0;
    const S: u8 = 1;
    let send = |side, len| P::Send { side, len };
    // Both sides send; a clean network delivers everything in order.
    pair_seed(
        dir,
        "exchange.bin",
        0,
        &[
            send(C, 5),
            send(C, 0),
            send(S, 1500),
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
            P::Timeout,
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
        ],
        |s| s.delivered == [1, 2] && s.acked == [2, 1],
    );
    // Loss, reordering, duplication and corruption of a 64 KiB message and small ones, with
    // proactive copies off: loss recovery and reassembly put them back in order.
    let mut ops = vec![send(C, 65_535), send(C, 3), send(C, 1200), send(S, 40)];
    for i in 0..8 {
        ops.push(P::Drop { dir: C, idx: 3 * i });
        ops.push(P::Deliver { dir: C, idx: 5 });
        ops.push(P::Duplicate { dir: C, idx: 1 });
        ops.push(P::Corrupt {
            dir: C,
            idx: 2,
            pos: 40 + i as u16,
            xor: 0x10,
            truncate: 0,
        });
        ops.push(P::Deliver { dir: S, idx: 0 });
    }
    ops.extend([P::Timeout, P::DeliverAll { dir: C }, P::Timeout]);
    pair_seed(dir, "loss_reorder_dup_corrupt.bin", 2, &ops, |s| {
        s.delivered == [1, 3] && s.lost > 0
    });
    // Key update every 8 packets, with a reordered and a dropped packet around it.
    let mut ops = Vec::new();
    for i in 0..24 {
        ops.push(send((i % 2) as u8, 900));
        if i % 5 == 0 {
            ops.push(P::Drop { dir: C, idx: 0 });
        }
        ops.push(P::Deliver {
            dir: (i % 2) as u8,
            idx: 1,
        });
        ops.push(P::DeliverAll { dir: C });
        ops.push(P::DeliverAll { dir: S });
    }
    ops.push(P::Timeout);
    pair_seed(dir, "key_update.bin", 1, &ops, |s| s.key_updates >= 2);
    // NAT rebinding of the client, and of the server (its datagrams to the client's old
    // address are lost): path validation, then traffic goes on.
    pair_seed(
        dir,
        "rebind.bin",
        0,
        &[
            send(C, 100),
            P::Rebind { side: C },
            send(C, 200),
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
            send(S, 50),
            P::DeliverAll { dir: S },
            P::DeliverAll { dir: C },
            P::Rebind { side: S },
            send(S, 60),
            P::DeliverAll { dir: S },
            P::Timeout,
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
        ],
        |s| s.migrations >= 1 && s.delivered == [2, 2],
    );
    // Flow control: a 4 KiB receive window and a 16 KiB send buffer (full: `send` fails).
    let mut ops = Vec::new();
    for _ in 0..6 {
        ops.push(send(C, 6000));
    }
    for _ in 0..12 {
        ops.extend([
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
            P::Timeout,
        ]);
    }
    pair_seed(dir, "flow_control.bin", 4 | 8, &ops, |s| {
        s.sent[0] >= 2 && s.sent[0] < 6 && s.delivered[1] == s.sent[0]
    });
    // Half-close on both sides, then the close handshake; the last FIN is lost once.
    pair_seed(
        dir,
        "finish_both.bin",
        0,
        &[
            send(C, 10),
            send(S, 10),
            P::Finish { side: C },
            P::Drop { dir: C, idx: 255 },
            P::Finish { side: S },
            P::DeliverAll { dir: S },
            P::Timeout,
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
            P::DeliverAll { dir: C },
            P::Timeout,
        ],
        |s| s.closed == [true, true] && s.delivered == [1, 1],
    );
    // The bulk channel beside chat: 64 KiB bulk messages and small chat ones both ways,
    // with loss, reordering and duplication; each channel delivers in its own order.
    let bulk = |side, len| P::SendBulk { side, len };
    let mut ops = vec![bulk(C, 65_535), send(C, 10), bulk(C, 3000), bulk(S, 1), send(S, 5)];
    for i in 0..10 {
        ops.push(P::Drop { dir: C, idx: 2 * i });
        ops.push(P::Deliver { dir: C, idx: 7 });
        ops.push(P::Duplicate { dir: C, idx: 3 });
        ops.push(P::DeliverAll { dir: S });
        ops.push(send(C, 20));
        ops.push(P::Timeout);
    }
    ops.extend([P::DeliverAll { dir: C }, P::Timeout]);
    pair_seed(dir, "bulk_beside_chat.bin", 2, &ops, |s| {
        s.bulk_delivered == [1, 2] && s.delivered[1] == 11 && s.lost > 0
    });
    // An abort with messages in flight: `Closed { undelivered }` hands back exactly the
    // unacknowledged ones; the peer hears CLOSE.
    pair_seed(
        dir,
        "abort_in_flight.bin",
        16,
        &[
            send(C, 10),
            P::DeliverAll { dir: C },
            P::DeliverAll { dir: S },
            send(C, 20),
            send(C, 30),
            P::Drop { dir: C, idx: 0 },
            P::Close {
                side: C,
                code: 7,
                graceful: false,
            },
            P::DeliverAll { dir: C },
            P::Advance { ms: 5000 },
        ],
        |s| s.closed == [true, true] && s.sent[0] == 3 && s.delivered[1] >= 1,
    );
}
