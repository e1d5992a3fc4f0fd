//! Checks the test vectors of `docs/PROTOCOL.md` against the implementation.
//!
//! The expected field values of every vector are written out below, independently of the hex in
//! the document. For each packet vector the test decodes the document's bytes and compares every
//! field, re-encodes the fields and compares the bytes, and flips every bit to check that the
//! checksum catches it. A vector expected here but missing from the document (or present in the
//! document but unknown here) fails the build, so the document cannot silently drop one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use chirp_proto::coding::{Reader, put_varint, varint_len};
use chirp_proto::wire::{
    AckFrame, CHECKSUM_LEN, ConnectionId, DecodeError, Frame, Frames, Header, MAX_DATAGRAM_SIZE,
    MIN_INITIAL_SIZE, Packet, PacketBuilder, PacketType, VERSION,
};
use chirp_proto::{Endpoint, EndpointConfig, INITIAL_MAX_DATA, TransportConfig};

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/PROTOCOL.md"
));

const CLIENT: ConnectionId = ConnectionId(0xb3f2_af6d_0fc7_10c5);
const SERVER: ConnectionId = ConnectionId(0x1a28_690d_a8a8_d057);
const INITIAL_DCID: ConnectionId = ConnectionId(0x853b_5596_4736_4cea);

/// The stream bytes of the message "hello": length prefix 5, then the message.
const HELLO_STREAM: &[u8] = &[0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f];
/// Message bytes 1470..1500 of the 1500-byte message of the `data-fragment` vector.
const FRAGMENT: &[u8] = b"opqrstuvwxyzabcdefghijklmnopqr";
/// The reference implementation's default receive window, announced in the `server-accept`
/// vector.
const DEFAULT_WINDOW: u64 = 512 * 1024;

/// What the document states about one packet vector.
struct PacketVector {
    name: &'static str,
    header: Header,
    frames: Vec<Frame<'static>>,
    /// Total datagram length.
    len: usize,
    /// The checksum, as stated in the document's field table.
    crc: u32,
}

fn packet_vectors() -> Vec<PacketVector> {
    vec![
        PacketVector {
            name: "client-initial",
            header: Header {
                ty: PacketType::Initial,
                dst_cid: INITIAL_DCID,
                src_cid: Some(CLIENT),
                number: 0,
            },
            frames: vec![Frame::Ping, Frame::Padding { len: 1176 }],
            len: 1200,
            crc: 0x5e4e_3706,
        },
        PacketVector {
            name: "server-accept",
            header: Header {
                ty: PacketType::Accept,
                dst_cid: CLIENT,
                src_cid: Some(SERVER),
                number: 0,
            },
            frames: vec![
                Frame::Ack(AckFrame {
                    delay_us: 137,
                    ranges: vec![(0, 0)],
                }),
                Frame::MaxData {
                    limit: DEFAULT_WINDOW,
                },
            ],
            len: 34,
            crc: 0x561d_0b94,
        },
        PacketVector {
            name: "data-hello",
            header: Header {
                ty: PacketType::Data,
                dst_cid: SERVER,
                src_cid: None,
                number: 2,
            },
            frames: vec![Frame::Message {
                offset: 0,
                data: HELLO_STREAM,
            }],
            len: 24,
            crc: 0x1a3b_5088,
        },
        PacketVector {
            name: "data-ack-ranges",
            header: Header {
                ty: PacketType::Data,
                dst_cid: CLIENT,
                src_cid: None,
                number: 873,
            },
            frames: vec![Frame::Ack(AckFrame {
                delay_us: 8250,
                ranges: vec![(995, 1000), (980, 990), (900, 950)],
            })],
            len: 27,
            crc: 0x3872_c883,
        },
        PacketVector {
            name: "data-fragment",
            header: Header {
                ty: PacketType::Data,
                dst_cid: SERVER,
                src_cid: None,
                number: 70,
            },
            frames: vec![Frame::Message {
                offset: 71_472,
                data: FRAGMENT,
            }],
            len: 52,
            crc: 0xf69a_2c24,
        },
        PacketVector {
            name: "data-max-data",
            header: Header {
                ty: PacketType::Data,
                dst_cid: CLIENT,
                src_cid: None,
                number: 1_000_000,
            },
            frames: vec![Frame::MaxData { limit: 655_360 }],
            len: 23,
            crc: 0xadef_5206,
        },
        PacketVector {
            name: "data-close",
            header: Header {
                ty: PacketType::Data,
                dst_cid: SERVER,
                src_cid: None,
                number: 3,
            },
            frames: vec![Frame::Close {
                code: 0,
                reason: b"bye",
            }],
            len: 21,
            crc: 0x2995_3228,
        },
    ]
}

/// The `varints` vector: value and shortest encoding.
const VARINTS: &[(u64, &[u8])] = &[
    (0, &[0x00]),
    (37, &[0x25]),
    (63, &[0x3f]),
    (64, &[0x40, 0x40]),
    (15_293, &[0x7b, 0xbd]),
    (16_383, &[0x7f, 0xff]),
    (16_384, &[0x80, 0x00, 0x40, 0x00]),
    (494_878_333, &[0x9d, 0x7f, 0x3e, 0x7d]),
    (1_073_741_823, &[0xbf, 0xff, 0xff, 0xff]),
    (
        1_073_741_824,
        &[0xc0, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00],
    ),
    (
        151_288_809_941_952_652,
        &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
    ),
    (
        (1 << 62) - 1,
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ),
];

const VARINTS_VECTOR: &str = "varints";

fn vector(name: &str) -> PacketVector {
    packet_vectors()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no expectations for vector {name}"))
}

// ----- Reading the document -----

/// Every `<!-- vector: NAME -->` of the document with the lines of the ```hex block after it.
fn doc_vectors() -> BTreeMap<String, Vec<String>> {
    const MARKER: &str = "<!-- vector:";
    let mut out = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(MARKER) else {
            continue;
        };
        let name = rest
            .strip_suffix("-->")
            .unwrap_or_else(|| panic!("unterminated vector marker: {line:?}"))
            .trim()
            .to_owned();
        // The next fenced block must be the vector's, and must be tagged `hex`.
        let fence = lines
            .by_ref()
            .find(|l| l.trim_start().starts_with("```"))
            .unwrap_or_else(|| panic!("vector {name}: no code block follows the marker"));
        assert_eq!(
            fence.trim(),
            "```hex",
            "vector {name}: block must be ```hex"
        );
        let body: Vec<String> = lines
            .by_ref()
            .take_while(|l| l.trim() != "```")
            .map(str::to_owned)
            .collect();
        assert!(!body.is_empty(), "vector {name}: empty block");
        let previous = out.insert(name.clone(), body);
        assert!(previous.is_none(), "vector {name} appears twice");
    }
    out
}

fn doc_vector(name: &str) -> Vec<String> {
    doc_vectors()
        .remove(name)
        .unwrap_or_else(|| panic!("vector {name} is missing from docs/PROTOCOL.md"))
}

fn hex_byte(tok: &str) -> u8 {
    assert_eq!(tok.len(), 2, "not a two-digit hex byte: {tok:?}");
    u8::from_str_radix(tok, 16).unwrap_or_else(|_| panic!("not a hex byte: {tok:?}"))
}

/// The bytes of a hex block: `#` comments stripped, `XX*N` expanded to N copies of XX.
fn parse_hex(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        let code = line.split('#').next().unwrap_or_default();
        for tok in code.split_whitespace() {
            match tok.split_once('*') {
                Some((byte, count)) => {
                    let count: usize = count
                        .parse()
                        .unwrap_or_else(|_| panic!("bad repeat count in {tok:?}"));
                    out.extend(std::iter::repeat_n(hex_byte(byte), count));
                }
                None => out.push(hex_byte(tok)),
            }
        }
    }
    out
}

fn doc_packet(name: &str) -> Vec<u8> {
    parse_hex(&doc_vector(name))
}

// ----- Helpers -----

/// Builds a datagram from a header and frames with the implementation's encoder.
fn encode(header: &Header, frames: &[Frame<'_>]) -> Vec<u8> {
    let mut b = PacketBuilder::new(header, MAX_DATAGRAM_SIZE);
    for f in frames {
        f.encode(b.frames_buf());
    }
    b.finish()
}

/// CRC-32C written from the parameters stated in the document (reflected polynomial
/// 0x82F63B78, initial value and final XOR 0xFFFFFFFF), bit by bit, so that the test checks the
/// document's description and not merely the implementation against itself.
fn crc32c_reference(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xffff_ffff
}

fn hex_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ----- The tests -----

#[test]
fn every_vector_is_in_the_doc_and_every_doc_vector_is_checked() {
    let in_doc: Vec<String> = doc_vectors().into_keys().collect();
    let mut expected: Vec<String> = packet_vectors().iter().map(|v| v.name.to_owned()).collect();
    expected.push(VARINTS_VECTOR.to_owned());
    expected.sort();
    for name in &expected {
        assert!(
            in_doc.contains(name),
            "vector {name} is missing from docs/PROTOCOL.md"
        );
    }
    for name in &in_doc {
        assert!(
            expected.contains(name),
            "docs/PROTOCOL.md has vector {name}, which this test does not check"
        );
    }
    assert!(
        in_doc.len() >= 7,
        "the document must keep its packet vectors"
    );
}

#[test]
fn packet_vectors_decode_to_the_stated_fields() {
    for v in packet_vectors() {
        let bytes = doc_packet(v.name);
        assert_eq!(bytes.len(), v.len, "{}: datagram length", v.name);
        assert!(bytes.len() <= MAX_DATAGRAM_SIZE, "{}: too large", v.name);
        assert_eq!(bytes[0], VERSION, "{}: version byte", v.name);
        assert_eq!(bytes[1], v.header.ty as u8, "{}: type byte", v.name);

        let packet = Packet::new_checked(&bytes)
            .unwrap_or_else(|e| panic!("{}: rejected by new_checked: {e}", v.name));
        assert_eq!(packet.header, v.header, "{}: header", v.name);
        assert_eq!(
            v.header.len() + packet.payload.len() + CHECKSUM_LEN,
            bytes.len(),
            "{}: header, payload and checksum make up the datagram",
            v.name
        );
        let frames: Vec<Frame<'_>> = Frames::new(packet.payload)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: frames do not decode: {e}", v.name));
        assert_eq!(frames, v.frames, "{}: frames", v.name);

        let trailer = u32::from_be_bytes(
            bytes[bytes.len() - CHECKSUM_LEN..]
                .try_into()
                .expect("4 bytes"),
        );
        assert_eq!(trailer, v.crc, "{}: checksum field", v.name);
    }
}

#[test]
fn packet_vectors_re_encode_byte_for_byte() {
    for v in packet_vectors() {
        let doc = doc_packet(v.name);
        let built = encode(&v.header, &v.frames);
        assert_eq!(
            hex_string(&built),
            hex_string(&doc),
            "{}: encoding the stated fields does not give the document's bytes",
            v.name
        );
        let frames_len: usize = v.frames.iter().map(Frame::encoded_len).sum();
        assert_eq!(
            v.header.len() + frames_len + CHECKSUM_LEN,
            doc.len(),
            "{}: encoded_len",
            v.name
        );
    }
}

#[test]
fn client_initial_is_a_ping_padded_to_exactly_1200_bytes() {
    let v = vector("client-initial");
    let mut b = PacketBuilder::new(&v.header, MAX_DATAGRAM_SIZE);
    Frame::Ping.encode(b.frames_buf());
    b.pad_to(MIN_INITIAL_SIZE);
    let built = b.finish();
    assert_eq!(built.len(), MIN_INITIAL_SIZE);
    assert_eq!(built, doc_packet("client-initial"));
}

#[test]
fn flipping_any_single_bit_is_corrupt() {
    for v in packet_vectors() {
        let bytes = doc_packet(v.name);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    Packet::new_checked(&bad).err(),
                    Some(DecodeError::Corrupt),
                    "{}: flipping bit {bit} of byte {i}",
                    v.name
                );
            }
        }
    }
}

#[test]
fn checksum_is_crc32c_big_endian_as_documented() {
    // The check value the document states for CRC-32C.
    assert_eq!(crc32c_reference(b"123456789"), 0xe306_9283);
    assert!(DOC.contains("0xE3069283") && DOC.contains("0xe3069283"));
    for v in packet_vectors() {
        let bytes = doc_packet(v.name);
        let (body, trailer) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        assert_eq!(
            trailer,
            crc32c_reference(body).to_be_bytes(),
            "{}: trailer is the big-endian CRC32C of the preceding bytes",
            v.name
        );
        // The field tables state the checksum as `0x........`.
        assert!(
            DOC.contains(&format!("`{:#010x}`", v.crc)),
            "{}: the document's field table does not state CRC32C {:#010x}",
            v.name,
            v.crc
        );
    }
}

#[test]
fn varint_table() {
    let lines = doc_vector(VARINTS_VECTOR);
    let mut from_doc: Vec<(u64, Vec<u8>)> = Vec::new();
    for line in &lines {
        let code = line.split('#').next().unwrap_or_default();
        let mut toks = code.split_whitespace();
        let Some(value) = toks.next() else {
            continue;
        };
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("varints: bad decimal value in {line:?}"));
        from_doc.push((value, toks.map(hex_byte).collect()));
    }
    let expected: Vec<(u64, Vec<u8>)> = VARINTS.iter().map(|&(v, b)| (v, b.to_vec())).collect();
    assert_eq!(from_doc, expected, "the varints table differs");
    for (value, bytes) in &expected {
        let mut out = Vec::new();
        put_varint(&mut out, *value);
        assert_eq!(&out, bytes, "encoding {value}");
        assert_eq!(varint_len(*value), bytes.len(), "varint_len({value})");
        let mut r = Reader::new(bytes);
        assert_eq!(r.varint(), Ok(*value), "decoding {}", hex_string(bytes));
        assert!(r.is_empty());
    }
    // A non-minimal encoding (RFC 9000's example) is accepted.
    assert_eq!(Reader::new(&[0x40, 0x25]).varint(), Ok(37));
}

#[test]
fn fragment_vector_matches_its_description() {
    // A 1500-byte message whose byte i is 'a' + i % 26, starting at stream offset 70000.
    let body: Vec<u8> = (0..1500u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stream = Vec::new();
    put_varint(&mut stream, body.len() as u64);
    assert_eq!(stream, [0x45, 0xdc]);
    stream.extend_from_slice(&body);
    let start = 70_000usize;
    let (first, second) = (start..71_472, 71_472..start + stream.len());
    assert_eq!(second.end, 71_502);
    assert_eq!(&stream[second.start - start..], FRAGMENT);
    assert_eq!(first.end, second.start);
}

#[test]
fn reserved_code_points_are_rejected() {
    // With a correct checksum, a packet of type `ty` (a long header: both CIDs, packet number 0,
    // PING).
    let long_packet = |ty: u8| {
        let mut body = vec![VERSION, ty];
        body.extend_from_slice(&CLIENT.0.to_be_bytes());
        body.extend_from_slice(&SERVER.0.to_be_bytes());
        body.extend_from_slice(&[0x00, 0x01]); // packet number 0, PING
        body.extend_from_slice(&crc32c_reference(&body).to_be_bytes());
        body
    };
    // Reserved packet types 0x02 and 0x03, and every unassigned one.
    for ty in [0x00u8, 0x02, 0x03].into_iter().chain(0x06..=0xff) {
        assert_eq!(
            Packet::new_checked(&long_packet(ty)).err(),
            Some(DecodeError::UnknownPacketType(ty)),
            "packet type {ty:#04x}"
        );
    }
    // The two long-header types, INITIAL (0x01) and ACCEPT (0x05), carry a source CID.
    for (ty, expected) in [(0x01, PacketType::Initial), (0x05, PacketType::Accept)] {
        let bytes = long_packet(ty);
        let p = Packet::new_checked(&bytes)
            .unwrap_or_else(|e| panic!("packet type {ty:#04x} rejected: {e}"));
        assert_eq!(p.header.ty, expected);
        assert_eq!(p.header.ty as u8, ty);
        assert_eq!(p.header.dst_cid, CLIENT);
        assert_eq!(p.header.src_cid, Some(SERVER));
        assert_eq!(p.payload, [0x01]);
    }
    // Frame types 0x06 to 0xff.
    for ty in 0x06..=0xffu8 {
        let payload = [0x01, ty, 0x00];
        let decoded: Result<Vec<_>, _> = Frames::new(&payload).collect();
        assert_eq!(decoded, Err(DecodeError::UnknownFrame(ty)));
    }
    // An ACK claiming 64 extra ranges is invalid; 63 is the most a frame may have.
    let mut too_many = vec![0x02];
    for v in [10_000u64, 0, 64, 0] {
        put_varint(&mut too_many, v);
    }
    too_many.extend(std::iter::repeat_n(0u8, 128));
    assert!(matches!(
        Frames::new(&too_many).next(),
        Some(Err(DecodeError::Invalid(_)))
    ));
}

#[test]
fn ack_eliciting_frames_are_as_documented() {
    let cases: [(Frame<'_>, bool); 6] = [
        (Frame::Padding { len: 1 }, false),
        (Frame::Ping, true),
        (Frame::Ack(AckFrame::default()), false),
        (
            Frame::Message {
                offset: 0,
                data: &[],
            },
            true,
        ),
        (Frame::MaxData { limit: 0 }, true),
        (
            Frame::Close {
                code: 0,
                reason: &[],
            },
            false,
        ),
    ];
    for (frame, eliciting) in cases {
        assert_eq!(frame.is_ack_eliciting(), eliciting, "{frame:?}");
    }
}

/// Decodes a datagram the implementation sent, with its frames.
fn decode(datagram: &[u8]) -> (Header, Vec<Frame<'_>>) {
    let p = Packet::new_checked(datagram).expect("the implementation sends valid packets");
    let frames = Frames::new(p.payload)
        .collect::<Result<_, _>>()
        .expect("the implementation sends valid frames");
    (p.header, frames)
}

/// The handshake vectors are what the implementation actually sends (with its own CIDs), with
/// its default configuration.
#[test]
fn implementation_emits_the_handshake_vectors() {
    let now = Instant::now();
    let client_addr: SocketAddr = "192.0.2.1:4000".parse().expect("address");
    let server_addr: SocketAddr = "192.0.2.2:5000".parse().expect("address");
    let config = EndpointConfig::default();
    assert_eq!(config.transport.receive_window, DEFAULT_WINDOW);
    let mut client = Endpoint::new(config.clone(), 1);
    let mut server = Endpoint::new(config, 2);
    let conn = client.connect(now, server_addr).expect("room");

    // Client INITIAL: as the vector, with this run's connection IDs.
    let initial = client.poll_transmit(now).expect("client INITIAL").contents;
    let (h, _) = decode(&initial);
    let v = vector("client-initial");
    let expected = encode(
        &Header {
            dst_cid: h.dst_cid,
            src_cid: h.src_cid,
            ..v.header
        },
        &v.frames,
    );
    assert_eq!(initial, expected, "client INITIAL");
    let client_cid = h.src_cid.expect("INITIAL has a source CID");
    server.handle_datagram(now, client_addr, &initial);

    // Server ACCEPT: as the vector (ACK of packet 0, MAX_DATA announcing the window), apart from
    // the ACK delay, which depends on timing.
    let answer = server.poll_transmit(now).expect("server ACCEPT").contents;
    let (h, frames) = decode(&answer);
    assert_eq!(h.ty, PacketType::Accept, "the server answers with ACCEPT");
    assert_eq!(h.dst_cid, client_cid);
    let server_cid = h.src_cid.expect("ACCEPT has a source CID");
    let delay_us = match frames.first() {
        Some(Frame::Ack(a)) => a.delay_us,
        other => panic!("server ACCEPT must start with an ACK: {other:?}"),
    };
    let v = vector("server-accept");
    let mut expected_frames = v.frames.clone();
    if let Some(Frame::Ack(a)) = expected_frames.first_mut() {
        a.delay_us = delay_us;
    }
    let expected = encode(
        &Header {
            dst_cid: client_cid,
            src_cid: Some(server_cid),
            ..v.header
        },
        &expected_frames,
    );
    assert_eq!(
        hex_string(&answer),
        hex_string(&expected),
        "server ACCEPT: {frames:?}"
    );
    client.handle_datagram(now, server_addr, &answer);

    // The client, now established, acknowledges in DATA packet 1 and announces its own window,
    // then sends "hello" in packet 2, then closes.
    let ack = client.poll_transmit(now).expect("client ACK").contents;
    let (h, frames) = decode(&ack);
    assert_eq!(
        (h.ty, h.number, h.dst_cid),
        (PacketType::Data, 1, server_cid)
    );
    assert!(
        matches!(
            &frames[..],
            [Frame::Ack(a), Frame::MaxData { limit: DEFAULT_WINDOW }] if a.ranges == [(0, 0)]
        ),
        "client DATA 1 frames: {frames:?}"
    );
    client.send(conn, b"hello").expect("send");
    let hello = client.poll_transmit(now).expect("hello").contents;
    let with_cid = |v: PacketVector| {
        encode(
            &Header {
                dst_cid: server_cid,
                ..v.header
            },
            &v.frames,
        )
    };
    assert_eq!(hello, with_cid(vector("data-hello")), "data-hello");
    client.abort(now, conn, 0, "bye");
    let close = client.poll_transmit(now).expect("CLOSE").contents;
    // Every closing packet repeats the ACK state (§7.5), so the implementation's CLOSE is the
    // data-close vector's CLOSE frame preceded by an ACK of what it received.
    let p = Packet::new_checked(&close).expect("valid");
    assert_eq!(
        p.header.number,
        vector("data-close").header.number,
        "data-close number"
    );
    let frames: Vec<Frame<'_>> = Frames::new(p.payload)
        .collect::<Result<_, _>>()
        .expect("frames");
    let want = vector("data-close").frames;
    assert!(
        matches!(&frames[..], [Frame::Ack(_), close] if close == want.last().expect("a frame")),
        "closing packet frames: {frames:?}"
    );
}

/// A receive window of at most the initial limit (smaller ones are raised to it) is never
/// announced: the server's ACCEPT then asks for an acknowledgement with a PING instead, and the
/// client's first DATA packet is a bare ACK (the variant noted under the sequence diagram).
#[test]
fn handshake_without_max_data_when_the_window_is_the_initial_limit() {
    assert_eq!(INITIAL_MAX_DATA, 131_072);
    assert!(DOC.contains("**131072** (128 KiB, `INITIAL_MAX_DATA`)"));
    for window in [INITIAL_MAX_DATA, 16 * 1024] {
        let config = EndpointConfig {
            transport: TransportConfig {
                receive_window: window,
                ..TransportConfig::default()
            },
            ..EndpointConfig::default()
        };
        let now = Instant::now();
        let client_addr: SocketAddr = "192.0.2.1:4000".parse().expect("address");
        let server_addr: SocketAddr = "192.0.2.2:5000".parse().expect("address");
        let mut client = Endpoint::new(config.clone(), 1);
        let mut server = Endpoint::new(config, 2);
        client.connect(now, server_addr).expect("room");
        let initial = client.poll_transmit(now).expect("client INITIAL").contents;
        assert_eq!(initial.len(), MIN_INITIAL_SIZE);
        server.handle_datagram(now, client_addr, &initial);

        let answer = server.poll_transmit(now).expect("server ACCEPT").contents;
        let (h, frames) = decode(&answer);
        assert_eq!(h.ty, PacketType::Accept);
        assert!(
            matches!(&frames[..], [Frame::Ack(a), Frame::Ping] if a.ranges == [(0, 0)]),
            "window {window}: server ACCEPT frames: {frames:?}"
        );
        client.handle_datagram(now, server_addr, &answer);

        let ack = client.poll_transmit(now).expect("client ACK").contents;
        let (h, frames) = decode(&ack);
        assert_eq!((h.ty, h.number), (PacketType::Data, 1));
        assert!(
            matches!(&frames[..], [Frame::Ack(a)] if a.ranges == [(0, 0)]),
            "window {window}: client DATA 1 frames: {frames:?}"
        );
    }
}
