//! Checks the test vectors of `docs/PROTOCOL.md` (wire version 2) against the implementation.
//!
//! Every vector exists three times: as a hex constant in [`VECTORS`] below, as a `hex` block in
//! the document, and as the output of the implementation given the fixed inputs written out
//! here. The tests require all three to agree, so neither the document nor this file can drift
//! from the code, and a vector cannot silently disappear from either.
//!
//! Beyond equality, each vector is checked against the document's *description*, computed here
//! independently of `chirp_proto`: the initial keys with BLAKE2s, every packet's nonce and
//! associated data with ChaCha20-Poly1305 directly, the key update as Noise's REKEY, the cookie
//! as a keyed BLAKE2s over the documented fields. Packet vectors are decoded field by field,
//! re-encoded byte for byte, and every single-bit flip must be rejected (structurally or by
//! authentication). The Noise vector is a full XX handshake with fixed static and ephemeral
//! keys (snow's `fixed_ephemeral_key_for_testing_only`).
//!
//! To regenerate the constants after a deliberate format change:
//! `cargo test -p chirp-proto --test vectors -- --ignored --nocapture print_vectors`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use blake2::digest::{FixedOutput as _, Mac as _};
use chacha20poly1305::aead::{AeadInPlace as _, KeyInit as _};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chirp_proto::coding::{Reader, put_varint, varint_len};
use chirp_proto::crypto::{AuthError, COOKIE_LEN, CookieJar, InitialKeys, PacketKey, TAG_LEN};
use chirp_proto::handshake::StaticSecret;
use chirp_proto::handshake::{Handshake, NOISE_PARAMS, PROLOGUE};
use chirp_proto::wire::{
    AckFrame, ConnectionId, DecodeError, Frame, Frames, Header, MAX_DATAGRAM_SIZE,
    MIN_INITIAL_SIZE, Packet, PacketBuilder, PacketType, RefuseReason, VERSION, encode_refuse,
    encode_retry,
};
use chirp_proto::{Endpoint, EndpointConfig, close_code};

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/PROTOCOL.md"
));

// ----- Fixed inputs -----

const CLIENT: ConnectionId = ConnectionId(0xb3f2_af6d_0fc7_10c5);
const SERVER: ConnectionId = ConnectionId(0x1a28_690d_a8a8_d057);
/// The client's random first destination CID: every long-header key derives from it.
const INITIAL_DCID: ConnectionId = ConnectionId(0x853b_5596_4736_4cea);

/// The stream bytes of the message "hello": length prefix 5, then the message.
const HELLO_STREAM: &[u8] = &[0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f];

/// 32 bytes `start, start + 1, ...`: the fixed keys of the vectors.
fn counting(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// Noise private keys: initiator static, initiator ephemeral, responder static, responder
/// ephemeral.
fn noise_privates() -> [[u8; 32]; 4] {
    [
        counting(0x00),
        counting(0x20),
        counting(0x40),
        counting(0x60),
    ]
}

/// The cookie vectors' server secret, addresses and time.
fn cookie_secret() -> [u8; 32] {
    counting(0xa0)
}
const COOKIE_TIME: u64 = 1_000;
fn cookie_addr_v4() -> SocketAddr {
    "192.0.2.1:5000".parse().expect("literal address")
}
fn cookie_addr_v6() -> SocketAddr {
    "[2001:db8::1]:5000".parse().expect("literal address")
}

const CHALLENGE: [u8; 8] = [0x8f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78];
/// A stateless-reset token (opaque to its receiver).
const RESET_TOKEN: [u8; 16] = [
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
];
/// The second message of the `data-fragment` vector: 1400 bytes of `a`, stream bytes 6..1408
/// (length prefix `45 78` at 6..8, text at 8..1408), after "hello" at 0..6.
const FRAGMENTED_LEN: usize = 1_400;
/// Where the fragment of `data-fragment` starts in the stream: it carries 1200..1408, the last
/// 208 bytes of that message.
const FRAGMENT_OFFSET: u64 = 1_200;
static FRAGMENT: [u8; 208] = [b'a'; 208];
/// The label of the RESET key ([§5.10]).
const RESET_LABEL: &[u8] = b"chirp v2 stateless reset";
/// The packet number of the `nonce` vector.
const NONCE_PN: u64 = 1_000_000;

// ----- Computing the vectors with the implementation -----

/// A complete Noise XX run with fixed keys, as chirp runs it (empty payloads).
struct Noise {
    /// Public keys in the order of [`noise_privates`].
    publics: [[u8; 32]; 4],
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    msg3: Vec<u8>,
    /// Noise's split: initiator → responder, responder → initiator.
    i2r: [u8; 32],
    r2i: [u8; 32],
}

fn noise_state(initiator: bool) -> snow::HandshakeState {
    let [is, ie, rs, re] = noise_privates();
    let (s, e) = if initiator { (is, ie) } else { (rs, re) };
    let params = NOISE_PARAMS
        .parse()
        .expect("chirp's Noise parameters parse");
    let b = snow::Builder::new(params)
        .local_private_key(&s)
        .expect("32-byte static key")
        .fixed_ephemeral_key_for_testing_only(&e)
        .prologue(PROLOGUE)
        .expect("prologue set once");
    if initiator {
        b.build_initiator().expect("initiator")
    } else {
        b.build_responder().expect("responder")
    }
}

fn write(hs: &mut snow::HandshakeState) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = hs.write_message(&[], &mut out).expect("our turn");
    out.truncate(n);
    out
}

fn read(hs: &mut snow::HandshakeState, msg: &[u8]) -> Result<(), snow::Error> {
    let mut out = vec![0u8; 1024];
    hs.read_message(msg, &mut out).map(|n| {
        assert_eq!(n, 0, "chirp's handshake payloads are empty");
    })
}

fn noise() -> Noise {
    let mut i = noise_state(true);
    let mut r = noise_state(false);
    let msg1 = write(&mut i);
    read(&mut r, &msg1).expect("message 1");
    let msg2 = write(&mut r);
    read(&mut i, &msg2).expect("message 2");
    let msg3 = write(&mut i);
    read(&mut r, &msg3).expect("message 3");
    assert!(i.is_handshake_finished() && r.is_handshake_finished());
    let key = |k: Option<&[u8]>| -> [u8; 32] {
        k.expect("remote static known")
            .try_into()
            .expect("32-byte key")
    };
    let publics = [
        key(r.get_remote_static()),
        key(Some(&msg1[..32])),
        key(i.get_remote_static()),
        key(Some(&msg2[..32])),
    ];
    let (i2r, r2i) = i.dangerously_get_raw_split();
    assert_eq!(
        r.dangerously_get_raw_split(),
        (i2r, r2i),
        "both sides split alike"
    );
    Noise {
        publics,
        msg1,
        msg2,
        msg3,
        i2r,
        r2i,
    }
}

/// What the document states about one packet vector.
struct PacketVector<'a> {
    name: &'static str,
    header: Header,
    token: Vec<u8>,
    frames: Vec<Frame<'a>>,
    /// Pad to this size (INITIAL).
    pad_to: Option<usize>,
    key: PacketKey,
    len: usize,
}

fn packet_vectors(n: &Noise) -> Vec<PacketVector<'_>> {
    let initial = InitialKeys::new(INITIAL_DCID.0);
    let data_key = PacketKey::new(n.i2r);
    vec![
        PacketVector {
            name: "client-initial",
            header: Header {
                ty: PacketType::Initial,
                dst_cid: INITIAL_DCID,
                src_cid: Some(CLIENT),
                number: 0,
            },
            token: Vec::new(),
            frames: vec![Frame::Handshake(&n.msg1), Frame::Padding { len: 1130 }],
            pad_to: Some(MIN_INITIAL_SIZE),
            key: initial.client.clone(),
            len: 1200,
        },
        PacketVector {
            name: "client-initial-with-token",
            header: Header {
                ty: PacketType::Initial,
                dst_cid: INITIAL_DCID,
                src_cid: Some(CLIENT),
                number: 1,
            },
            token: cookie(&cookie_addr_v4()).to_vec(),
            frames: vec![Frame::Handshake(&n.msg1), Frame::Padding { len: 1106 }],
            pad_to: Some(MIN_INITIAL_SIZE),
            key: initial.client.clone(),
            len: 1200,
        },
        PacketVector {
            name: "server-accept",
            header: Header {
                ty: PacketType::Accept,
                dst_cid: CLIENT,
                src_cid: Some(SERVER),
                number: 0,
            },
            token: Vec::new(),
            frames: vec![
                Frame::Handshake(&n.msg2),
                Frame::Ack(AckFrame {
                    delay_us: 137,
                    ranges: vec![(1, 1)],
                }),
            ],
            pad_to: None,
            key: initial.server.clone(),
            len: 140,
        },
        PacketVector {
            name: "client-handshake",
            header: Header {
                ty: PacketType::Handshake,
                dst_cid: SERVER,
                src_cid: Some(CLIENT),
                number: 2,
            },
            token: Vec::new(),
            frames: vec![
                Frame::Handshake(&n.msg3),
                Frame::Ack(AckFrame {
                    delay_us: 0,
                    ranges: vec![(0, 0)],
                }),
            ],
            pad_to: None,
            key: initial.client.clone(),
            len: 107,
        },
        PacketVector {
            name: "data-phase-0",
            header: Header {
                ty: PacketType::Data { key_phase: false },
                dst_cid: SERVER,
                src_cid: None,
                number: 3,
            },
            token: Vec::new(),
            frames: vec![Frame::Message {
                offset: 0,
                data: HELLO_STREAM,
            }],
            pad_to: None,
            key: data_key.clone(),
            len: 36,
        },
        PacketVector {
            name: "data-fragment",
            header: Header {
                ty: PacketType::Data { key_phase: false },
                dst_cid: SERVER,
                src_cid: None,
                number: 5,
            },
            token: Vec::new(),
            frames: vec![Frame::Message {
                offset: FRAGMENT_OFFSET,
                data: &FRAGMENT,
            }],
            pad_to: None,
            key: data_key.clone(),
            len: 240,
        },
        PacketVector {
            name: "data-ack-ranges",
            header: Header {
                ty: PacketType::Data { key_phase: false },
                dst_cid: CLIENT,
                src_cid: None,
                number: 17,
            },
            token: Vec::new(),
            frames: vec![Frame::Ack(AckFrame {
                delay_us: 8_250,
                ranges: vec![(995, 1_000), (980, 990), (900, 950)],
            })],
            pad_to: None,
            key: PacketKey::new(n.r2i),
            len: 38,
        },
        PacketVector {
            name: "data-phase-1",
            header: Header {
                ty: PacketType::Data { key_phase: true },
                dst_cid: SERVER,
                src_cid: None,
                number: 1_000,
            },
            token: Vec::new(),
            frames: vec![
                Frame::PathResponse(CHALLENGE),
                Frame::Ack(AckFrame {
                    delay_us: 8_250,
                    ranges: vec![(995, 1_000), (980, 990), (900, 950)],
                }),
            ],
            pad_to: None,
            key: data_key.next(),
            len: 48,
        },
    ]
}

/// A cookie of the vectors' jar.
fn cookie(addr: &SocketAddr) -> [u8; COOKIE_LEN] {
    CookieJar::new(cookie_secret(), COOKIE_TIME).issue(addr, COOKIE_TIME)
}

fn retry() -> Vec<u8> {
    encode_retry(
        CLIENT,
        INITIAL_DCID,
        &cookie(&cookie_addr_v4()),
        &InitialKeys::new(INITIAL_DCID.0).retry,
    )
}

/// A full server's answer to `client-initial`.
fn refuse() -> Vec<u8> {
    encode_refuse(
        CLIENT,
        INITIAL_DCID,
        RefuseReason::ServerFull,
        &InitialKeys::new(INITIAL_DCID.0).refuse,
    )
}

/// The vectors' server (static key: the responder's), restarted: it no longer knows `S`, and
/// answers the client's `data-phase-0` with a RESET. Returns that datagram.
fn reset_answer(data_phase_0: &[u8]) -> Vec<u8> {
    let [_, _, responder_static, _] = noise_privates();
    let config = EndpointConfig {
        identity: Some(StaticSecret(responder_static)),
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(config, 1);
    let now = Instant::now();
    ep.handle_datagram(now, cookie_addr_v4(), data_phase_0);
    let t = ep
        .poll_transmit(now)
        .expect("a RESET answers DATA for an unknown CID");
    assert_eq!(t.destination, cookie_addr_v4(), "sent to the DATA's source");
    assert!(ep.poll_transmit(now).is_none(), "one answer, no more");
    t.contents
}

/// Builds a datagram with the implementation's encoder.
fn encode(v: &PacketVector<'_>) -> Vec<u8> {
    let mut b = PacketBuilder::new(&v.header, &v.token, MAX_DATAGRAM_SIZE);
    for f in &v.frames {
        if !matches!(f, Frame::Padding { .. }) || v.pad_to.is_none() {
            f.encode(b.frames_buf());
        }
    }
    if let Some(size) = v.pad_to {
        b.pad_to(size);
    }
    b.finish(&v.key)
}

/// The frame vectors: name and the one frame each holds.
fn frame_vectors() -> Vec<(&'static str, Frame<'static>)> {
    vec![
        ("frame-padding", Frame::Padding { len: 3 }),
        ("frame-ping", Frame::Ping),
        (
            "frame-ack",
            Frame::Ack(AckFrame {
                delay_us: 8_250,
                ranges: vec![(995, 1_000), (980, 990), (900, 950)],
            }),
        ),
        (
            "frame-message",
            Frame::Message {
                offset: 70_000,
                data: HELLO_STREAM,
            },
        ),
        ("frame-max-data", Frame::MaxData { limit: 655_360 }),
        (
            "frame-close",
            Frame::Close {
                code: close_code::KEY_MISMATCH,
                reason: b"key mismatch",
            },
        ),
        ("frame-handshake", Frame::Handshake(b"noise")),
        ("frame-path-challenge", Frame::PathChallenge(CHALLENGE)),
        ("frame-path-response", Frame::PathResponse(CHALLENGE)),
        ("frame-reset-token", Frame::ResetToken(RESET_TOKEN)),
        ("frame-fin", Frame::Fin { final_offset: 300 }),
        ("frame-received", Frame::Received { offset: 70_000 }),
        (
            "frame-bulk",
            Frame::Bulk {
                offset: 1_048_576,
                data: b"\x05chunk",
            },
        ),
        (
            "frame-bulk-max-data",
            Frame::BulkMaxData { limit: 2_097_152 },
        ),
    ]
}

/// Every vector, computed by the implementation from the fixed inputs.
fn computed() -> BTreeMap<&'static str, Vec<u8>> {
    let n = noise();
    let mut out = BTreeMap::new();
    let k = InitialKeys::new(INITIAL_DCID.0);
    out.insert(
        "initial-keys",
        [*k.client.raw(), *k.server.raw(), *k.retry.raw()].concat(),
    );
    let key = PacketKey::new(n.i2r);
    out.insert("key-update", [*key.raw(), *key.next().raw()].concat());
    let mut nonce_and_aad = Vec::new();
    // The nonce is not exposed; the `nonce_and_associated_data` test derives it independently
    // and proves the implementation uses it.
    nonce_and_aad.extend_from_slice(&[0, 0, 0, 0]);
    nonce_and_aad.extend_from_slice(&NONCE_PN.to_le_bytes());
    out.insert("nonce", nonce_and_aad);
    out.insert("cookie-v4", cookie(&cookie_addr_v4()).to_vec());
    out.insert("cookie-v6", cookie(&cookie_addr_v6()).to_vec());
    let [is, ie, rs, re] = noise_privates();
    let [is_p, ie_p, rs_p, re_p] = n.publics;
    out.insert(
        "noise-keys",
        [is, is_p, ie, ie_p, rs, rs_p, re, re_p].concat(),
    );
    out.insert("noise-message-1", n.msg1.clone());
    out.insert("noise-message-2", n.msg2.clone());
    out.insert("noise-message-3", n.msg3.clone());
    out.insert("noise-split", [n.i2r, n.r2i].concat());
    out.insert("retry", retry());
    out.insert("refuse-key", k.refuse.raw().to_vec());
    out.insert("refuse", refuse());
    out.insert("reset", chirp_proto::wire::encode_reset(&RESET_TOKEN));
    for v in packet_vectors(&n) {
        out.insert(v.name, encode(&v));
    }
    let answer = reset_answer(&out["data-phase-0"]);
    // The key is not exposed; `reset_token_is_keyed_blake2s` derives it independently and
    // proves the implementation's token is made with it.
    let [_, _, responder_static, _] = noise_privates();
    out.insert("reset-key", reset_key_reference(&responder_static).to_vec());
    out.insert("reset-token", answer[2..].to_vec());
    out.insert("reset-answer", answer);
    for (name, f) in frame_vectors() {
        let mut b = Vec::new();
        f.encode(&mut b);
        out.insert(name, b);
    }
    out
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

/// The bytes of a document hex block: `#` comments stripped, `XX*N` expanded to N copies of
/// XX.
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

/// The bytes of one of the [`VECTORS`] constants: hex digits, whitespace ignored.
fn parse_const(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|c| hex_byte(std::str::from_utf8(c).expect("ASCII hex digits")))
        .collect()
}

fn hex_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bytes of vector `name`, from the constants of this file.
fn vector(name: &str) -> Vec<u8> {
    let (_, hex) = VECTORS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no constant for vector {name}"));
    parse_const(hex)
}

/// ChaCha20-Poly1305 as the document specifies packet protection, written against the
/// `chacha20poly1305` crate directly rather than through `PacketKey`.
fn reference_seal(key: &[u8; 32], pn: u64, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&pn.to_le_bytes());
    let aead = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut buf = plaintext.to_vec();
    let tag = aead
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut buf)
        .expect("small input");
    buf.extend_from_slice(&tag);
    buf
}

/// The RESET key of [§5.10] for a static private key, computed with `blake2` directly:
/// unkeyed BLAKE2s-256 of the label and the 32 private-key bytes.
fn reset_key_reference(private: &[u8; 32]) -> [u8; 32] {
    use blake2::Digest as _;
    let mut h = blake2::Blake2s256::new();
    h.update(RESET_LABEL);
    h.update(private);
    h.finalize().into()
}

/// Every bit of `bytes` flipped in turn: `rejected` must hold for each.
fn every_bit_flip(bytes: &[u8], mut rejected: impl FnMut(&[u8]) -> bool, what: &str) {
    let mut bad = bytes.to_vec();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            bad[i] ^= 1 << bit;
            assert!(
                rejected(&bad),
                "{what}: flipping byte {i} bit {bit} accepted"
            );
            bad[i] ^= 1 << bit;
        }
    }
}

// ----- The tests -----

#[test]
fn document_and_constants_hold_the_same_vectors() {
    let doc = doc_vectors();
    let mut in_doc: Vec<&str> = doc.keys().map(String::as_str).collect();
    in_doc.retain(|n| *n != VARINTS_VECTOR);
    let consts: Vec<&str> = VECTORS.iter().map(|(n, _)| *n).collect();
    let mut sorted = consts.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), consts.len(), "a constant appears twice");
    assert_eq!(
        in_doc, sorted,
        "docs/PROTOCOL.md and tests/vectors.rs name different vectors"
    );
    for (name, hex) in VECTORS {
        let from_doc = parse_hex(&doc[*name]);
        assert_eq!(
            hex_string(&from_doc),
            hex_string(&parse_const(hex)),
            "vector {name}: docs/PROTOCOL.md and the constant differ"
        );
    }
    assert!(
        doc.contains_key(VARINTS_VECTOR),
        "the varints table is gone"
    );
}

#[test]
fn implementation_produces_every_vector() {
    let computed = computed();
    let names: Vec<&str> = VECTORS.iter().map(|(n, _)| *n).collect();
    let mut expected_names: Vec<&str> = computed.keys().copied().collect();
    expected_names.sort_unstable();
    let mut names_sorted = names.clone();
    names_sorted.sort_unstable();
    assert_eq!(names_sorted, expected_names, "a vector has no constant");
    for (name, bytes) in &computed {
        assert_eq!(
            hex_string(&vector(name)),
            hex_string(bytes),
            "vector {name}: the implementation's bytes differ"
        );
    }
}

#[test]
fn initial_keys_are_blake2s_of_label_and_dcid() {
    use blake2::Digest as _;
    let bytes = vector("initial-keys");
    assert_eq!(bytes.len(), 96);
    for (i, label) in ["client", "server", "retry"].iter().enumerate() {
        let mut input = b"chirp v2 initial ".to_vec();
        input.extend_from_slice(label.as_bytes());
        input.extend_from_slice(&[0x85, 0x3b, 0x55, 0x96, 0x47, 0x36, 0x4c, 0xea]);
        let key = blake2::Blake2s256::digest(&input);
        assert_eq!(&bytes[32 * i..32 * (i + 1)], key.as_slice(), "{label} key");
    }
    // The refuse key, the same way.
    let mut input = b"chirp v2 initial refuse".to_vec();
    input.extend_from_slice(&[0x85, 0x3b, 0x55, 0x96, 0x47, 0x36, 0x4c, 0xea]);
    assert_eq!(
        vector("refuse-key"),
        blake2::Blake2s256::digest(&input).as_slice(),
        "refuse key"
    );
    // Another destination CID gives unrelated keys.
    let other = InitialKeys::new(INITIAL_DCID.0 ^ 1);
    assert_ne!(other.client.raw(), &bytes[..32]);
}

#[test]
fn nonce_and_associated_data_are_as_documented() {
    let nonce = vector("nonce");
    let mut expected = [0u8; 12];
    expected[4..].copy_from_slice(&[0x40, 0x42, 0x0f, 0, 0, 0, 0, 0]);
    assert_eq!(
        nonce, expected,
        "4 zero bytes, then pn 1000000 as u64 little-endian"
    );
    // `PacketKey::seal` with that packet number equals ChaCha20-Poly1305 under that nonce.
    let key = counting(0x10);
    let mut sealed = b"payload".to_vec();
    PacketKey::new(key).seal(NONCE_PN, b"aad", &mut sealed);
    let aead = ChaCha20Poly1305::new(Key::from_slice(&key));
    let mut reference = b"payload".to_vec();
    let tag = aead
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"aad", &mut reference)
        .expect("small input");
    reference.extend_from_slice(&tag);
    assert_eq!(sealed, reference);

    // Every protected packet vector: associated data = all bytes up to and including the
    // packet number, nonce from the packet number, the rest is ciphertext and tag.
    let n = noise();
    for v in packet_vectors(&n) {
        let bytes = vector(v.name);
        let mut header = Vec::new();
        header.push(VERSION);
        header.push(v.header.ty.to_byte());
        header.extend_from_slice(&v.header.dst_cid.0.to_be_bytes());
        if let Some(src) = v.header.src_cid {
            header.extend_from_slice(&src.0.to_be_bytes());
        }
        if v.header.ty == PacketType::Initial {
            put_varint(&mut header, v.token.len() as u64);
            header.extend_from_slice(&v.token);
        }
        put_varint(&mut header, v.header.number);
        assert_eq!(&bytes[..header.len()], header, "{}: header", v.name);
        let mut plaintext = Vec::new();
        for f in &v.frames {
            f.encode(&mut plaintext);
        }
        let expected = reference_seal(v.key.raw(), v.header.number, &header, &plaintext);
        assert_eq!(
            hex_string(&bytes[header.len()..]),
            hex_string(&expected),
            "{}: sealed payload",
            v.name
        );
    }
    // RETRY: the tag of an empty plaintext, nonce 0, the whole header as associated data.
    let bytes = vector("retry");
    let (header, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    let key = InitialKeys::new(INITIAL_DCID.0).retry;
    assert_eq!(reference_seal(key.raw(), 0, header, &[]), tag);
    // REFUSE: likewise, under the refuse key (taken from its own vector).
    let bytes = vector("refuse");
    let (header, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    let key: [u8; 32] = vector("refuse-key").try_into().expect("32 bytes");
    assert_eq!(reference_seal(&key, 0, header, &[]), tag);
}

#[test]
fn key_update_is_noise_rekey() {
    let bytes = vector("key-update");
    let (old, new) = bytes.split_at(32);
    assert_eq!(
        old,
        noise().i2r,
        "the key updated is the client's first DATA key"
    );
    // REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64 - 1, empty AD, 32 zero bytes).
    let old: [u8; 32] = old.try_into().expect("32 bytes");
    let rekeyed = reference_seal(&old, u64::MAX, &[], &[0; 32]);
    assert_eq!(new, &rekeyed[..32]);
    // And the phase-1 vector opens under it and under nothing else.
    let data = vector("data-phase-1");
    let p = Packet::new_checked(&data).expect("valid");
    let new: [u8; 32] = new.try_into().expect("32 bytes");
    assert!(p.open(&PacketKey::new(new)).is_ok());
    assert_eq!(p.open(&PacketKey::new(old)), Err(AuthError));
}

#[test]
fn packet_vectors_decode_to_the_stated_fields_and_re_encode() {
    let n = noise();
    for v in packet_vectors(&n) {
        let bytes = vector(v.name);
        assert_eq!(bytes.len(), v.len, "{}: length", v.name);
        let p = Packet::new_checked(&bytes).unwrap_or_else(|e| panic!("{}: rejected: {e}", v.name));
        assert_eq!(p.header, v.header, "{}: header", v.name);
        assert_eq!(p.token, v.token, "{}: token", v.name);
        let payload = p
            .open(&v.key)
            .unwrap_or_else(|_| panic!("{}: does not authenticate", v.name));
        let frames: Vec<Frame<'_>> = Frames::new(&payload)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: frames: {e}", v.name));
        assert_eq!(frames, v.frames, "{}: frames", v.name);
        // Re-encode from the decoded values.
        let mut b = PacketBuilder::new(&p.header, p.token, MAX_DATAGRAM_SIZE);
        for f in &frames {
            f.encode(b.frames_buf());
        }
        assert_eq!(
            hex_string(&b.finish(&v.key)),
            hex_string(&bytes),
            "{}: re-encoding",
            v.name
        );
    }
    let bytes = vector("retry");
    let p = Packet::new_checked(&bytes).expect("retry is valid");
    assert_eq!(
        p.header,
        Header {
            ty: PacketType::Retry,
            dst_cid: CLIENT,
            src_cid: Some(INITIAL_DCID),
            number: 0,
        }
    );
    assert_eq!(p.token, vector("cookie-v4"));
    let key = InitialKeys::new(INITIAL_DCID.0).retry;
    assert_eq!(p.open(&key), Ok(Vec::new()));
    assert_eq!(encode_retry(CLIENT, INITIAL_DCID, p.token, &key), bytes);

    // REFUSE: 35 bytes, field by field as §2.1 lays them out.
    let bytes = vector("refuse");
    assert_eq!(bytes.len(), 35);
    assert_eq!(&bytes[..2], &[VERSION, 0x08]);
    assert_eq!(bytes[2..10], CLIENT.0.to_be_bytes(), "destination: C");
    assert_eq!(bytes[10..18], INITIAL_DCID.0.to_be_bytes(), "source: R");
    assert_eq!(bytes[18], 0x01, "reason SERVER_FULL");
    let p = Packet::new_checked(&bytes).expect("refuse is valid");
    assert_eq!(
        p.header,
        Header {
            ty: PacketType::Refuse,
            dst_cid: CLIENT,
            src_cid: Some(INITIAL_DCID),
            number: 0,
        }
    );
    assert_eq!(p.refuse_reason(), Some(RefuseReason::ServerFull));
    let key = InitialKeys::new(INITIAL_DCID.0).refuse;
    assert_eq!(p.open(&key), Ok(Vec::new()));
    assert_eq!(
        p.open(&InitialKeys::new(INITIAL_DCID.0).retry),
        Err(AuthError)
    );
    let reason = p.refuse_reason().expect("a reason");
    assert_eq!(encode_refuse(CLIENT, INITIAL_DCID, reason, &key), bytes);
}

#[test]
fn flipping_any_bit_of_a_packet_is_rejected() {
    let n = noise();
    for v in packet_vectors(&n) {
        let bytes = vector(v.name);
        every_bit_flip(
            &bytes,
            |bad| Packet::new_checked(bad).map_or(true, |p| p.open(&v.key) == Err(AuthError)),
            v.name,
        );
    }
    let retry = vector("retry");
    let key = InitialKeys::new(INITIAL_DCID.0).retry;
    every_bit_flip(
        &retry,
        |bad| Packet::new_checked(bad).map_or(true, |p| p.open(&key) == Err(AuthError)),
        "retry",
    );
    let refuse = vector("refuse");
    let key = InitialKeys::new(INITIAL_DCID.0).refuse;
    every_bit_flip(
        &refuse,
        |bad| Packet::new_checked(bad).map_or(true, |p| p.open(&key) == Err(AuthError)),
        "refuse",
    );
}

#[test]
fn frame_vectors_decode_and_re_encode() {
    for (name, frame) in frame_vectors() {
        let bytes = vector(name);
        let decoded: Vec<Frame<'_>> = Frames::new(&bytes)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, vec![frame.clone()], "{name}");
        let mut out = Vec::new();
        decoded[0].encode(&mut out);
        assert_eq!(out, bytes, "{name}: re-encoding");
        assert_eq!(frame.encoded_len(), bytes.len(), "{name}: encoded_len");
        // Every truncation of a frame with fields is a structural error (PADDING and PING
        // have none; truncated PADDING is shorter PADDING).
        if !matches!(frame, Frame::Padding { .. } | Frame::Ping) {
            for cut in 1..bytes.len() {
                assert!(
                    Frames::new(&bytes[..cut]).any(|r| r.is_err()),
                    "{name} truncated to {cut} bytes decoded"
                );
            }
        }
    }
}

#[test]
fn cookies_are_keyed_blake2s_over_the_documented_fields() {
    for (name, addr, family, ip) in [
        ("cookie-v4", cookie_addr_v4(), 4u8, vec![192, 0, 2, 1]),
        (
            "cookie-v6",
            cookie_addr_v6(),
            6u8,
            vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
    ] {
        let bytes = vector(name);
        assert_eq!(bytes.len(), COOKIE_LEN);
        assert_eq!(bytes[..8], COOKIE_TIME.to_be_bytes(), "{name}: timestamp");
        let mut m =
            <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(&cookie_secret())
                .expect("32-byte key");
        m.update(b"chirp cookie v1");
        m.update(&[family]);
        m.update(&ip);
        m.update(&5000u16.to_be_bytes());
        m.update(&COOKIE_TIME.to_be_bytes());
        assert_eq!(bytes[8..], m.finalize_fixed()[..16], "{name}: MAC");
        let jar = CookieJar::new(cookie_secret(), COOKIE_TIME);
        assert!(jar.verify(&bytes, &addr, COOKIE_TIME + 5, 60), "{name}");
        every_bit_flip(
            &bytes,
            |bad| !jar.verify(bad, &addr, COOKIE_TIME + 5, 1 << 40),
            name,
        );
    }
}

#[test]
fn reset_token_is_keyed_blake2s() {
    // key = BLAKE2s-256(label || static private key), unkeyed.
    let [_, _, responder_static, _] = noise_privates();
    let key: [u8; 32] = vector("reset-key").try_into().expect("32 bytes");
    assert_eq!(key, reset_key_reference(&responder_static));
    // token = first 16 bytes of BLAKE2s-256 in its own keyed mode (RFC 7693, not HMAC) under
    // that key, over the connection ID, 8 bytes big-endian.
    let keyed = |k: &[u8; 32], cid: ConnectionId| {
        let mut m = <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(k)
            .expect("32-byte key");
        m.update(&cid.0.to_be_bytes());
        m.finalize_fixed()[..16].to_vec()
    };
    let token = vector("reset-token");
    assert_eq!(token, keyed(&key, SERVER), "token of S");
    assert_ne!(
        token,
        keyed(&responder_static, SERVER),
        "the key is the hash, not the private key itself"
    );
    // The whole RESET: `02 07` then the token, 18 bytes, and it decodes as one.
    let answer = vector("reset-answer");
    assert_eq!(answer.len(), 18);
    assert_eq!(answer[..2], [VERSION, 0x07]);
    assert_eq!(answer[2..], token);
    let p = Packet::new_checked(&answer).expect("a RESET");
    assert_eq!(p.header.ty, PacketType::Reset);
    assert_eq!(p.token, token);
    // What provoked it: the client's DATA to S, which the restarted server no longer knows.
    assert_eq!(reset_answer(&vector("data-phase-0")), answer);
}

#[test]
fn fragment_vector_is_the_tail_of_a_long_message() {
    // The client's stream: "hello", then a 1400-byte message of `a`.
    let mut stream = HELLO_STREAM.to_vec();
    put_varint(&mut stream, FRAGMENTED_LEN as u64);
    assert_eq!(stream[6..], [0x45, 0x78], "length prefix 1400");
    stream.extend(std::iter::repeat_n(b'a', FRAGMENTED_LEN));
    assert_eq!(stream.len(), 1_408);
    let from = usize::try_from(FRAGMENT_OFFSET).expect("small");
    assert_eq!(
        &stream[from..],
        FRAGMENT,
        "the last 208 bytes of the message"
    );
    // More than fits in one packet: the message cannot travel unfragmented.
    assert!(stream.len() - 6 > MAX_DATAGRAM_SIZE);
    // Its plaintext, as §10 spells it.
    let mut plaintext = vec![0x03, 0x44, 0xb0, 0x40, 0xd0];
    plaintext.extend_from_slice(&FRAGMENT);
    let bytes = vector("data-fragment");
    let p = Packet::new_checked(&bytes).expect("valid");
    assert_eq!(
        p.open(&PacketKey::new(noise().i2r)).expect("opens"),
        plaintext
    );
    // The ACK-ranges packet is the server's, under the second key of the split.
    let bytes = vector("data-ack-ranges");
    let p = Packet::new_checked(&bytes).expect("valid");
    assert_eq!(
        p.open(&PacketKey::new(noise().r2i)).expect("opens"),
        vector("frame-ack")
    );
}

#[test]
fn noise_xx_vector() {
    let keys = vector("noise-keys");
    assert_eq!(keys.len(), 256);
    let privates = noise_privates();
    for (i, private) in privates.iter().enumerate() {
        assert_eq!(&keys[64 * i..64 * i + 32], private, "private key {i}");
    }
    let n = noise();
    let (m1, m2, m3) = (
        vector("noise-message-1"),
        vector("noise-message-2"),
        vector("noise-message-3"),
    );
    // XX sizes with empty payloads: e; e, ee, s (encrypted), es, tag; s (encrypted), se, tag.
    assert_eq!((m1.len(), m2.len(), m3.len()), (32, 96, 64));
    assert_eq!(
        m1,
        &keys[96..128],
        "message 1 is the initiator's ephemeral public key"
    );
    assert_eq!(
        &m2[..32],
        &keys[224..256],
        "message 2 starts with the responder's"
    );
    let split = vector("noise-split");
    assert_eq!((&split[..32], &split[32..]), (&n.i2r[..], &n.r2i[..]));

    // chirp's own responder accepts message 1 of the vector and answers with a message 2 of
    // the same size (its ephemeral key is random, so not the same bytes).
    let mut responder = Handshake::responder(&privates[2]).expect("responder");
    responder.read(&m1).expect("message 1 accepted");
    assert_eq!(responder.write(&[]).expect("message 2").len(), m2.len());

    // Message 1 carries no authentication (anything 32 bytes long is an ephemeral key); it is
    // protected only by the INITIAL packet's AEAD. Messages 2 and 3 are authenticated: every
    // flipped bit fails the handshake.
    every_bit_flip(
        &m2,
        |bad| {
            let mut i = noise_state(true);
            let _ = write(&mut i);
            read(&mut i, bad).is_err()
        },
        "noise message 2",
    );
    every_bit_flip(
        &m3,
        |bad| {
            let mut r = noise_state(false);
            read(&mut r, &m1).expect("message 1");
            let _ = write(&mut r);
            read(&mut r, bad).is_err()
        },
        "noise message 3",
    );
    // Another prologue (another protocol version) cannot read message 2.
    let params = NOISE_PARAMS.parse().expect("params");
    let mut other = snow::Builder::new(params)
        .local_private_key(&privates[0])
        .expect("key")
        .fixed_ephemeral_key_for_testing_only(&privates[1])
        .prologue(b"chirp encrypted protocol v3")
        .expect("prologue")
        .build_initiator()
        .expect("initiator");
    assert_eq!(
        write(&mut other),
        m1,
        "message 1 does not depend on the prologue"
    );
    assert!(read(&mut other, &m2).is_err());
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
fn reserved_code_points_and_other_versions_are_rejected() {
    // The structure of a DATA packet (long enough for any type), with type `ty`.
    let mut packet = vector("data-phase-0");
    for ty in std::iter::once(0x00u8).chain(0x09..=0xff) {
        packet[1] = ty;
        assert_eq!(
            Packet::new_checked(&packet).err(),
            Some(DecodeError::UnknownPacketType(ty)),
            "packet type {ty:#04x}"
        );
    }
    // RESET (0x07) is exactly 18 bytes: anything else with its type byte is malformed.
    packet[1] = 0x07;
    assert_eq!(
        Packet::new_checked(&packet).err(),
        Some(DecodeError::Invalid("reset length"))
    );
    let reset = vector("reset");
    let p = Packet::new_checked(&reset).expect("a RESET");
    assert_eq!(p.header.ty, PacketType::Reset);
    assert_eq!(p.token, RESET_TOKEN);
    // REFUSE (0x08) is a header and a tag only: a DATA packet's bytes are not one.
    packet[1] = 0x08;
    assert_eq!(
        Packet::new_checked(&packet).err(),
        Some(DecodeError::Invalid("sealed payload length"))
    );
    packet[1] = 0x04;
    for version in (0..=0xffu8).filter(|&v| v != VERSION) {
        packet[0] = version;
        assert_eq!(
            Packet::new_checked(&packet).err(),
            Some(DecodeError::UnsupportedVersion(version))
        );
    }
    for ty in 0x0e..=0xffu8 {
        let payload = [0x01, ty, 0x00];
        let decoded: Result<Vec<_>, _> = Frames::new(&payload).collect();
        assert_eq!(decoded, Err(DecodeError::UnknownFrame(ty)));
    }
    // A token longer than 64 bytes is a structural error.
    let mut b = PacketBuilder::new(
        &Header {
            ty: PacketType::Initial,
            dst_cid: INITIAL_DCID,
            src_cid: Some(CLIENT),
            number: 0,
        },
        &[7; 65],
        MAX_DATAGRAM_SIZE,
    );
    b.pad_to(MIN_INITIAL_SIZE);
    let long_token = b.finish(&InitialKeys::new(INITIAL_DCID.0).client);
    assert_eq!(
        Packet::new_checked(&long_token).err(),
        Some(DecodeError::Invalid("token length"))
    );
}

#[test]
fn ack_eliciting_frames_are_as_documented() {
    for (name, frame) in frame_vectors() {
        let eliciting = !matches!(
            frame,
            Frame::Padding { .. } | Frame::Ack(_) | Frame::Close { .. }
        );
        assert_eq!(frame.is_ack_eliciting(), eliciting, "{name}");
    }
}

/// Prints the constants of [`VECTORS`] as the implementation computes them, and the document's
/// blocks without comments. Not a check: run it by hand after a deliberate format change.
#[test]
#[ignore = "generator, run by hand"]
#[allow(clippy::print_stdout, reason = "printing is its purpose")]
fn print_vectors() {
    for (name, bytes) in computed() {
        let lines: Vec<String> = bytes
            .chunks(32)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        println!(
            "    (\n        \"{name}\",\n        \"{}\",\n    ),",
            lines.join("\\\n         ")
        );
    }
    for (name, bytes) in computed() {
        println!("<!-- vector: {name} -->\n```hex");
        for c in bytes.chunks(16) {
            println!("{}", hex_string(c));
        }
        println!("```\n");
    }
}

/// The vectors, as the document states them (see `docs/PROTOCOL.md` §10).
const VECTORS: &[(&str, &str)] = &[
    (
        "client-handshake",
        "02021a28690da8a8d057b3f2af6d0fc710c5023a7737a969c560c006f3e459f8\
         6903ff3d70dab61b89827c4327e56bb095c0dc07d5a8c58a9a66532ef79e05e5\
         f8e45b205a63f752b6f2ac0a60d99b499aaede05fb033c0857dee55e6853890c\
         2d8ba5c24d2e8d97f2a2f9",
    ),
    (
        "client-initial",
        "0201853b559647364ceab3f2af6d0fc710c50000d6dc66dc1c85e4177782d9a1\
         a2e66c07a48fdbb2cb43e866883750e5c571153794abf07ff3247f38312f1152\
         5e0a675d530c65eda129886c6fdba8099c53b07a7438db52eea108c092948107\
         2e1c8d43d3e069ae50b0898d69be20d598d646c0909ed61be345ff2d91c35710\
         22155e90d126ce7f7385a6197576db055e705f7504bbb17da6c50a6e1aa5c261\
         675f2c07533973671f6b482999a147dd51a5e8adf33aa205b68fc6a82c0af138\
         ee6884e768647753927fd95abd269d2ce6fabf14fa638f926ed55abffad6cc83\
         042a1387f3de3e5a3deb310ae25422b3cf65340be0db567a6a456a1632cdc3b4\
         c43853ab2aa0eafe8aff2d8ec5ed160f87e57e3909a3d8b5759d8045c13d5683\
         e7451bf911837614fa2ce54ef210901ba3fbc85c79496f3cfb22938d6d3be453\
         beaca0cd2e364ac053b7efcdd7b4211fb0012c9e6b1324c09aa883e852c63c6d\
         549aae8be7934062738538ebad659439f5713e28ea5cc0b52b837c977e988cf9\
         b361233b4824ea9db895390f9799ca8fc31f134fa263349cd69ed6bf88dfc771\
         a3789041f4b05e83db215b8ba269411d4eec7a614366dabf45e3af41974e8695\
         f83a4297fa93f4bbadee97bae7a370d953cbc9dbc3794c95a6e4d8d7edf6472c\
         d39cfc7be198821d8e00a63750e9613eb489104cdbc558964f68b29d7a491fb5\
         d74a748136314dc6d0c781a6a944d80b1b369b1af6351fc805addb1c99420bf7\
         32fe0687e2b96c25ce0dba5da71340561b98f8d335cb746bac4693b8cc1131d3\
         b3930de413435e4cbe55e2a7cf8e590298566f84c97766e2645e0aa503ce5ed3\
         91f2469f46d8a1ff2501cef5ff1a4edbfe1853e52360418e132ffd3b64ca0dec\
         0ca0f7e3fd60a7f58444bf0810f0c59198c2c9206735fa4ffa16b2c8f9dc5e5b\
         84ce0a785f1acf541d26ff794664cc53fb3300cebd69e35f0f5b8e9b03d0a41a\
         7b227ff32b9a08fd5173dfca357405b4bf1b6e70d1c4f48398244ea425b266eb\
         19177f24520c88365b7fe9f08bd3c756aba0f8b21398ee1be1d2404c3333c0ab\
         467448464f35d6a97be95e6a6deb0d45060689fd97fbe0f186c745b8d7c0a351\
         b15497bd974a4ee852cf57a5d8fbfe31c995a0a29bf5c52ccee1815278ea0b36\
         eac2f37f59972e1c8d118bdf0d20cddc97018caa1bfb44774214cec095f7536f\
         76145e50757f0062179c774b9cc39df85e75d528a46290090f96e79e865ae8f0\
         7bff4e4929c567c22e5e9b9a6aab1e21205e4782e2a8d2bf9e8e40ec8ada7797\
         a97909e9251854299c90e6de553774affe51374eb9cefb91ec20fce74aca5d79\
         8076fa0a50ed3c4309689a9683269402229db643019048d8222b188b0c495fc6\
         29e1e44419bb1a12234d97a19fcdc4d80f55574631741ea78c522723d4cd4cab\
         6b91772e74a1c63b3aedecc1e70d260df7dc380dcd329f5901d8f81ded673106\
         feea0281b6ed0813727b90ace511f1a3a89aca32d2a9ef9dad43161c9f6b904f\
         d3c33ad5f75f636957b9aed1459638f080c2e9901347a861d04e773598a8c499\
         d2e27852092a5d756d729435ab0154076760462284b56e787f73c30ef8ab04f3\
         316b22118e818051331002de4bbab5dc8c12396cd2ab7732977bcda493714dd5\
         95fdadbbb01dba65af10b5d3ef16e030",
    ),
    (
        "client-initial-with-token",
        "0201853b559647364ceab3f2af6d0fc710c51800000000000003e82eda90f94d\
         c145f8defa31100d1f194d01bc792a32f267d6c927dfe44ec518a2e6417b9128\
         52cd798088ce3dee7b1bb2643477d679dc23a31097d99ad1b4aa34b3412ac3a0\
         aa11b24f4c4400234769001ce2be457ccb5b3b063b7479a78b34f3bf9bb887cf\
         9e3acb0a2d845ce57051761fb7aeb01a644d2b0089ddc4587e3a2c2db5199682\
         54ab894aabe91ae0285431e4867efe05c39081b312650d83d1990be69e6f081a\
         bd21dcda4429bc1156d151bd1d87e2acc8e1e93d4f98b94ab566c95196ae81c6\
         7c2e94a811c2054edb3e0ef039aedd5ec83f441933698d6d562be37b5839410e\
         7f4dfa95d29471754876b318b53c142126282645324339fc6530baad8c35f41a\
         12b75b34663231384c7eca0ac640a058eb6b1ef10ef8a5313fe9ec1121b7a760\
         1e3599af9dee762d89185c6b1f4d8bb306466b3388c2d77a58abc9aecd9b1efa\
         b35af8afc20cb270eab9e9a28e61b7554d70c968e5fe08b1ffc063cecc23af4d\
         d777cb57088aa33b9b06f144e768b9c7af1d8ccac7392731220c8a0e2f9c38ef\
         39f9fb1aa1768a574b9097d1a26745b70210bd862793892c235503dca96e296a\
         fa9cabee5f39f7cf079fc0a571706abf78bbd71d4553779a880cc9cee142b475\
         4308b855dc2db8e4ca1d372d6031b4d05af7364fff785dfc58affe23f043a1d5\
         57c8b673f89628dde1111b07a052ec5e9db5e3789a97844d95b518a162a6e1bd\
         f813789ad41040119a58c7cbab71f28a79756052a4ba92807539345a41d31ed8\
         de2e2196c1f4588407d84d247bc4981a52d72c8c9e597dcaf1a3883210cf7daa\
         ea44968926fd213711ed168848333bde468960f363d8cc589d76716e39da33db\
         cf7795869f0d5218b12e1ef5386a73db52ed304cd4d2111ca81b382f9a28203f\
         cb3d1bce9bc3ae1698ca6e48ac4bcaad0ccac7b05be5b67ab8042c3f362692cb\
         f07f9c89875cf2a33fdb726e998cae8ef77f8023fe1ffbff281072ebb052d822\
         a7cb2afd6ff5d446a3ed2f59f4f1ecd42de60637fde1186e52b09a8d44152467\
         b7b5f99149fde88a02b9fbf19355d897ba968dee5d85cfd5db347269540bb47f\
         703ff52972bec031227f786e5a2ece4a7dd2c5b5340fbc06133e59b7e6b70576\
         4081225684469cf3b89637a328efc1ebebe7e9c74314de98956cae344b13b4d9\
         de6982bfeb939925928979b1ec9f7fdeebc27dc1ecd01dd25d9f51fd08d7a763\
         fb5309858a45ca0638a7cb46338dd700ee3b2deda02f01150b735a718bb13e7b\
         dadc8454d0eddd689ab6cb754db82f9d30b02764b51af432b308633a9f045737\
         4d021f4324d9d3927e3c7ed0f224a8f7a5420439b134e9d2338858252d9dbf4d\
         89d84965018a65059c7526a49f625ce9154c86c1830cb4dd537331fe0ec50626\
         65b6fa363aa16f438e1fce1d42a3db1eb8f50b56bf253890442531288f274df8\
         57a8be59305a77737086736998275588628e6d799b14029f717afb4bc44778f0\
         cacd2f7832b0343d00f2b04053611f1b9121240b39df655d9f10fdd4266fcadc\
         685e9e7fc8098b737c09025ee485aefe67860f8a9b03debcbbdacbdfd1f67492\
         46c76a1b658b4aba13158599a3bad0e8d7fdac4a819118db1ab97723d895b4ae\
         0a5291dfdb14e62ae6872e64a9c9ce72",
    ),
    (
        "cookie-v4",
        "00000000000003e82eda90f94dc145f8defa31100d1f194d",
    ),
    (
        "cookie-v6",
        "00000000000003e8e57eee220e12d522f3510fd9da7a12b3",
    ),
    (
        "data-ack-ranges",
        "0204b3f2af6d0fc710c511f34f594c5fbbd35a84e967a1dacee79d625955f40e\
         63cdf90642aa",
    ),
    (
        "data-fragment",
        "02041a28690da8a8d05705537752159575f3ef7c6136fa7f6475e154c923696b\
         101aa01d25eb93a16d822c62b6bfd64ef5e97463d37c618cd3169caab01cf262\
         7fe4e7ca87e595f8428c837c83f9cfbe0bcf4772b5e1011ee6dc53bac8f29581\
         98b60154de3b33cb7be4891d6cc158309322d8842e09dcc6939a425693cb7e0b\
         b4e05826b2ebbafff83102a63af1b53ce16e2aaa56e1906091955566772a7bdf\
         e58ede6bbf3802651914771081e519a00d90f78327f5f2489f12be5e67f8375e\
         813a04e11f3262954a8b89e87d17c932decb2fcc4185508016fc06682c897a11\
         91f233c1abc3a9bb1ee8e345081fe6f4",
    ),
    (
        "data-phase-0",
        "02041a28690da8a8d0570316d24dd016f22f3d659d3d151fe2a88ef81383e27b\
         ee0768a1",
    ),
    (
        "data-phase-1",
        "02061a28690da8a8d05743e84b4fe38b7fd566a8757167ffe5722a4efac2f305\
         4b4d21ddc5f399527d0a560788819f1b",
    ),
    ("frame-ack", "0243e8603a0205030a1c32"),
    ("frame-close", "05050c6b6579206d69736d61746368"),
    ("frame-handshake", "06056e6f697365"),
    ("frame-max-data", "04800a0000"),
    ("frame-message", "0380011170060568656c6c6f"),
    ("frame-padding", "000000"),
    ("frame-path-challenge", "078f1e2d3c4b5a6978"),
    ("frame-path-response", "088f1e2d3c4b5a6978"),
    ("frame-reset-token", "09c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"),
    ("frame-fin", "0a412c"),
    ("frame-received", "0b80011170"),
    ("frame-bulk", "0c8010000006056368756e6b"),
    ("frame-bulk-max-data", "0d80200000"),
    ("reset", "0207c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"),
    (
        "reset-key",
        "b0a474b931e7b9cf4d73e32126ef8c33fc94c17dd6171b0d0a2dec3bac95d6f7",
    ),
    ("reset-token", "a51655520438ae025787f3f9b718bd25"),
    ("reset-answer", "0207a51655520438ae025787f3f9b718bd25"),
    ("frame-ping", "01"),
    (
        "initial-keys",
        "d3d8d9af98f4fc05ebe8d7745bcb97e4ef45e9747415d010277b85adf7c3869f\
         d2fb3be483c5f7f9d20ac63f8584ab865f597845429087d560a143c06b7b09b5\
         336ffe872c64a6b97d85ecc04cfa3750bb31e7e8d977b19bdfcd3f1f745c7ed3",
    ),
    (
        "key-update",
        "fe82ab4fde92ca5d10414b241405091287335745ba20653f9735e0c75ba26f82\
         3debec85f40b96b983afa824f6d9f791e94daaa3bd5a7c15563c454e71996f1b",
    ),
    (
        "noise-keys",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
         8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f\
         202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
         358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254\
         404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\
         79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a\
         606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
         675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f",
    ),
    (
        "noise-message-1",
        "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254",
    ),
    (
        "noise-message-2",
        "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f\
         eb05ff723dfaa2cf9c3bba8d146a4a5348d1cb05787a2802a66cd40293380c43\
         d4d31aa0dd9795246a3cf6f33794f12f275b8df27960cb8070ddd3ee236dd3c6",
    ),
    (
        "noise-message-3",
        "cd0bb5353946d9772fcf0852cc0956ef2ca0d30c0573c138692ad8c3f99aef50\
         d1b1c6dae16096343ae900fdcc804179f2247dca6111a0ea6303ffb72429b5b2",
    ),
    (
        "noise-split",
        "fe82ab4fde92ca5d10414b241405091287335745ba20653f9735e0c75ba26f82\
         bf8e7af4c248108e408892f7f4477490b026817f7877e5a382bd8d428f48f4df",
    ),
    ("nonce", "0000000040420f0000000000"),
    (
        "retry",
        "0203b3f2af6d0fc710c5853b559647364cea1800000000000003e82eda90f94d\
         c145f8defa31100d1f194db48900d5a904eaa2a7c0932551390cc8",
    ),
    (
        "refuse-key",
        "03ad1a3ac240ca1ae2a4b4d402d449e17ebd52ca95275fb2fb315a417d16b045",
    ),
    (
        "refuse",
        "0208b3f2af6d0fc710c5853b559647364cea015f1007d1ff18a32cab69af2b9a\
         eb00fb",
    ),
    (
        "server-accept",
        "0205b3f2af6d0fc710c51a28690da8a8d057002f4d4e3265e7ae275326516f25\
         e9a622a47dffe5c2a53fa04970f94895add3311de3895b6bdfe53b29f1d04bbd\
         6fcc6ffe1395ea40d2cb2915608cf237556402c76d44aa162d406c88b0f469b5\
         758140da6a99b82c6a9abbb2861e8260cdb0c6f8d0856c4af96350888d271151\
         6f116f219e4cbded70e991c0",
    ),
];

/// The value column of the constants table row of PROTOCOL.md §8 whose name starts `name`.
fn policy_row(name: &str) -> String {
    let row = DOC
        .lines()
        .find(|l| l.starts_with(&format!("| {name}")))
        .unwrap_or_else(|| panic!("PROTOCOL.md §8 has no row {name:?}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // "| name | value |" splits into ["", name, value, ""].
    cells[2].to_owned()
}

#[test]
fn redundancy_defaults_are_as_documented() {
    let r = chirp_proto::Redundancy::default();
    let weight = policy_row("redundancy: loss EWMA weight");
    let fields: Vec<&str> = weight.split(", ").collect();
    assert_eq!(fields.len(), 5, "{weight}");
    assert_eq!(fields[1], "10^−3");
    assert!((r.target_residual - 1e-3).abs() < 1e-12);
    assert_eq!(fields[2], r.max_copies.to_string());
    assert_eq!(fields[3].parse::<f64>().ok(), Some(r.min_loss));
    assert_eq!(fields[4], format!("{} bytes", r.max_bytes));
    let startup = policy_row("redundancy at the start of a connection");
    assert_eq!(
        startup,
        format!("{}, {}", r.startup_outcomes, r.startup_copies)
    );
}
