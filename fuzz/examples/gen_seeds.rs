//! Writes the seed corpora of the fuzz targets (committed under `fuzz/seeds/<target>/`).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [OUT_DIR]   # default fuzz/seeds
//! ```
//!
//! Every seed is checked before it is written: the packets decode with the expected number of
//! frames, and each endpoint scenario reaches the state it is meant to reach.
#![allow(clippy::print_stdout)]

use std::fs;
use std::path::{Path, PathBuf};

use chirp_fuzz::endpoint::{Cid, Kind, Op, RunStats, encode, run};
use chirp_proto::coding::put_varint;
use chirp_proto::wire::{
    AckFrame, ConnectionId, Frame, Header, MAX_DATAGRAM_SIZE, MIN_INITIAL_SIZE, PacketBuilder,
    PacketType,
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

fn packet(ty: PacketType, dst: u64, number: u64, payload: &[u8], pad: Option<usize>) -> Vec<u8> {
    let header = Header {
        ty,
        dst_cid: ConnectionId(dst),
        src_cid: (ty != PacketType::Data).then_some(ConnectionId(0x2222_2222_2222_2222)),
        number,
    };
    let mut b = PacketBuilder::new(&header, MAX_DATAGRAM_SIZE);
    b.frames_buf().extend_from_slice(payload);
    if let Some(size) = pad {
        b.pad_to(size);
    }
    b.finish()
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

    // ---- Datagrams: packet_decode gets them whole, packet_decode_valid_crc without the CRC.
    let hello = stream_msg(b"hello");
    let datagrams: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "initial_ping_padded",
            packet(
                PacketType::Initial,
                0x1111_1111_1111_1111,
                0,
                &frames(&[Frame::Ping]),
                Some(MIN_INITIAL_SIZE),
            ),
            2,
        ),
        (
            "accept_maxdata_ack_ping",
            packet(
                PacketType::Accept,
                0x1111_1111_1111_1111,
                1,
                &frames(&[
                    Frame::MaxData { limit: 512 * 1024 },
                    ack(&[(0, 0)]),
                    Frame::Ping,
                ]),
                None,
            ),
            3,
        ),
        (
            "data_ack_message",
            packet(
                PacketType::Data,
                0x4444_4444_4444_4444,
                5,
                &frames(&[
                    ack(&[(10, 12), (5, 7), (0, 0)]),
                    Frame::Message {
                        offset: 0,
                        data: &hello,
                    },
                ]),
                None,
            ),
            2,
        ),
        (
            "data_maxdata_close",
            packet(
                PacketType::Data,
                0x4444_4444_4444_4444,
                300,
                &frames(&[
                    Frame::MaxData { limit: 1 << 20 },
                    Frame::Close {
                        code: 0x100,
                        reason: b"bye",
                    },
                ]),
                None,
            ),
            2,
        ),
        (
            "data_every_frame",
            packet(
                PacketType::Data,
                0x4444_4444_4444_4444,
                70_000,
                &frames(&[
                    Frame::Ping,
                    ack(&[(1 << 31, (1 << 31) + 3), (7, 9)]),
                    Frame::Message {
                        offset: 70_000,
                        data: b"\x02hi",
                    },
                    Frame::MaxData { limit: 1 << 40 },
                    Frame::Close {
                        code: 1,
                        reason: b"protocol",
                    },
                    Frame::Padding { len: 4 },
                ]),
                None,
            ),
            6,
        ),
    ];
    for (name, dgram, nframes) in &datagrams {
        assert_eq!(chirp_fuzz::check_datagram(dgram), *nframes, "{name}");
        write(&out.join("packet_decode"), &format!("{name}.bin"), dgram);
        let body = &dgram[..dgram.len() - 4];
        write(
            &out.join("packet_decode_valid_crc"),
            &format!("{name}.bin"),
            body,
        );
    }

    // ---- Endpoint scenarios.
    let dir = out.join("endpoint");
    let e = Vec::new;

    // The endpoint as a server: a client's INITIAL, then DATA to the ID the server announced,
    // a message each way, acknowledgements, a graceful close and its timers.
    scenario(
        &dir,
        "server_handshake_message_close.bin",
        &[
            (
                pkt(0, Kind::Initial, Cid::Raw(0x1111_1111_1111_1111), 0),
                frames(&[Frame::Ping]),
            ),
            (Op::Advance { ms: 30 }, e()),
            (
                pkt(0, Kind::Data, Cid::Learned(0), 1),
                frames(&[
                    ack(&[(0, 0)]),
                    Frame::Message {
                        offset: 0,
                        data: &hello,
                    },
                ]),
            ),
            (Op::Send { conn: 0, len: 100 }, e()),
            (Op::Advance { ms: 30 }, e()),
            (
                pkt(0, Kind::Data, Cid::Learned(0), 2),
                frames(&[ack(&[(0, 1)])]),
            ),
            (
                Op::Close {
                    conn: 0,
                    code: 0x100,
                    graceful: true,
                },
                e(),
            ),
            (Op::Timeout, e()),
            (Op::Timeout, e()),
            (Op::Timeout, e()),
        ],
        |s| s.events.connected == 1 && s.events.messages == 1 && s.events.closed == 1,
    );

    // The endpoint as a client: connect, the peer's ACCEPT answer, a message each way, then
    // silence until probes, keepalives and finally the idle timeout.
    let mut ops = vec![
        (Op::Connect { port: 1 }, e()),
        (Op::Advance { ms: 40 }, e()),
        (
            pkt(1, Kind::Accept, Cid::Learned(0), 0),
            frames(&[ack(&[(0, 0)]), Frame::Ping]),
        ),
        (Op::Send { conn: 0, len: 20 }, e()),
        (
            pkt(1, Kind::Data, Cid::Learned(0), 1),
            frames(&[Frame::Message {
                offset: 0,
                data: &stream_msg(b"abc"),
            }]),
        ),
    ];
    ops.extend(std::iter::repeat_n((Op::Timeout, e()), 6));
    ops.push((Op::Advance { ms: 31_000 }, e()));
    scenario(&dir, "client_connect_idle.bin", &ops, |s| {
        s.events.connected == 1 && s.events.messages == 1 && s.events.closed == 1
    });

    // Simultaneous open, both outcomes of the tie-break: the peer's ID is larger than ours
    // (we yield and become its server) and smaller (we ignore its INITIAL).
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
            (initial_from(2, u64::MAX), frames(&[Frame::Ping])),
            (Op::Connect { port: 3 }, e()),
            (initial_from(3, 1), frames(&[Frame::Ping])),
            (Op::Advance { ms: 500 }, e()),
            (Op::Timeout, e()),
        ],
        |s| s.events.connected == 1,
    );

    // Raw bytes with the CRC fixed by the harness (the brief's INITIAL layout), its retransmit,
    // a packet the peer numbers near the varint limit, and the peer closing.
    let raw_initial = packet(
        PacketType::Initial,
        0x6666,
        0,
        &frames(&[Frame::Ping]),
        Some(MIN_INITIAL_SIZE),
    );
    let body = raw_initial[..raw_initial.len() - 4].to_vec();
    scenario(
        &dir,
        "raw_fix_crc_peer_close.bin",
        &[
            (
                Op::Datagram {
                    from_port: 3,
                    fix_crc: true,
                    len: 0,
                },
                body,
            ),
            (
                Op::Datagram {
                    from_port: 3,
                    fix_crc: false,
                    len: 0,
                },
                raw_initial.clone(),
            ),
            (
                Op::Packet {
                    from_port: 3,
                    kind: Kind::Data,
                    pad: false,
                    dst: Cid::Learned(0),
                    src_cid: 0,
                    pn: 0,
                    pn_high: true,
                    len: 0,
                },
                frames(&[ack(&[(0, 0)]), Frame::Ping]),
            ),
            (
                pkt(3, Kind::Data, Cid::Learned(0), 2),
                frames(&[Frame::Close {
                    code: 0x100,
                    reason: b"bye",
                }]),
            ),
            (Op::Timeout, e()),
        ],
        |s| s.events.connected == 1 && s.events.closed == 1,
    );

    // Protocol violations: more data than the window allows, a message over the maximum size,
    // and an ACK of a packet never sent, each on its own connection.
    let mut too_large = Vec::new();
    put_varint(&mut too_large, 70_000);
    scenario(
        &dir,
        "protocol_violations.bin",
        &[
            (
                pkt(0, Kind::Initial, Cid::Raw(0xa), 0),
                frames(&[Frame::Ping]),
            ),
            (
                pkt(0, Kind::Data, Cid::Learned(0), 1),
                frames(&[Frame::Message {
                    offset: 600_000,
                    data: b"x",
                }]),
            ),
            (
                pkt(1, Kind::Initial, Cid::Raw(0xb), 0),
                frames(&[Frame::Ping]),
            ),
            (
                pkt(1, Kind::Data, Cid::Learned(1), 1),
                frames(&[Frame::Message {
                    offset: 0,
                    data: &too_large,
                }]),
            ),
            (
                pkt(2, Kind::Initial, Cid::Raw(0xc), 0),
                frames(&[ack(&[(0, 40)])]),
            ),
            (Op::Timeout, e()),
            (Op::Timeout, e()),
        ],
        |s| s.events.connected == 3 && s.events.closed == 3,
    );
}
