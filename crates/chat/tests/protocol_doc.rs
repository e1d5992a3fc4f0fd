//! `docs/PROTOCOL.md` against the code's own tables: packet types, frame types, close codes,
//! REFUSE reasons, wire constants, the chat error codes, and the step and rule numbers the
//! document cites. A type, code or constant added, renumbered or renamed on one side only fails
//! here, in the manner of `crates/proto/tests/vectors.rs` for the byte-level vectors.
//!
//! The document is read as a stranger would read it: its tables, by their first columns. The
//! code is read through its behaviour where it has one (which packet and frame type bytes
//! decode) and through its source where it has only names (the `close_code` and `code`
//! modules), so that a new constant without a row in the document is caught too.

use std::collections::BTreeMap;

use chirp_proto::crypto::{ReplayWindow, TAG_LEN};
use chirp_proto::wire::{
    DecodeError, FrameType, Frames, MAX_DATAGRAM_SIZE, MAX_TOKEN_LEN, MIN_INITIAL_SIZE, Packet,
    PacketType, RESET_PACKET_LEN, RefuseReason, VERSION,
};
use chirp_proto::{
    HANDSHAKE_TIMEOUT, INITIAL_MAX_DATA, MAX_ACK_DELAY, MAX_MESSAGE_SIZE, VERDICT_TIMEOUT,
};

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/PROTOCOL.md"
));
const CLOSE_CODES_SRC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../proto/src/connection.rs"
));
const CHAT_WIRE_SRC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/wire.rs"));

// ----- Reading the document -----

/// The text of the section whose heading line starts with `heading` (e.g. `"### 2.1 "`), up to
/// the next heading of the same or a higher level.
fn section(heading: &str) -> &'static str {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let start = DOC
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no section {heading:?}"));
    let lines: Vec<&str> = DOC.lines().collect();
    let end = lines[start + 1..]
        .iter()
        .position(|l| {
            let n = l.chars().take_while(|&c| c == '#').count();
            n > 0 && n <= level && l.chars().nth(n) == Some(' ')
        })
        .map_or(lines.len(), |i| start + 1 + i);
    // Byte offsets of those lines within DOC, so the result borrows from it.
    let offset = |line: usize| -> usize { lines[..line].iter().map(|l| l.len() + 1).sum() };
    &DOC[offset(start)..offset(end).min(DOC.len())]
}

/// The cells of every table row of `text` (lines starting with `|`), trimmed, without the
/// header and separator rows.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|cells| !cells[0].starts_with("---") && !cells[0].is_empty())
        .collect()
}

/// `` `0x1f` `` as 0x1f; anything else `None`.
fn hex_cell(cell: &str) -> Option<u64> {
    let inner = cell.strip_prefix("`0x")?.strip_suffix('`')?;
    u64::from_str_radix(inner, 16).ok()
}

/// `` `0x0c`–`0xff` `` as (0x0c, 0xff).
fn hex_range(cell: &str) -> Option<(u64, u64)> {
    let (a, b) = cell.split_once('–')?;
    Some((hex_cell(a)?, hex_cell(b)?))
}

/// Rows of `text` whose first cell is a single hex code, as code → second cell.
fn code_table(text: &'static str) -> BTreeMap<u64, &'static str> {
    let mut out = BTreeMap::new();
    for r in rows(text) {
        if let (Some(code), Some(name)) = (hex_cell(r[0]), r.get(1)) {
            assert!(
                out.insert(code, *name).is_none(),
                "{:#x} listed twice",
                code
            );
        }
    }
    out
}

/// The `pub const NAME: TYPE = VALUE;` items of the `pub mod MODULE {` block of `src`, as
/// NAME → VALUE (the literal, quotes stripped).
fn consts_of_module(src: &'static str, module: &str) -> BTreeMap<&'static str, &'static str> {
    let open = format!("pub mod {module} {{");
    let start = src
        .find(&open)
        .unwrap_or_else(|| panic!("no `{open}` in the source"));
    let body = &src[start + open.len()..];
    let body = &body[..body.find("\n}").expect("module ends")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("NAME: TYPE = VALUE;");
            let value = rest
                .split_once('=')
                .expect("NAME: TYPE = VALUE;")
                .1
                .trim()
                .trim_end_matches(';')
                .trim_matches('"');
            (name.trim(), value)
        })
        .collect()
}

fn parse_int(literal: &str) -> u64 {
    match literal.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => literal.replace('_', "").parse(),
    }
    .unwrap_or_else(|_| panic!("not an integer literal: {literal:?}"))
}

/// `FlowControl` as `FLOW_CONTROL`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

const NUMBER_WORDS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];

// ----- Packet types -----

/// Every packet type of the code, with the name §2.1 gives it. The match is exhaustive, so a
/// new variant does not compile until it is named here (and, by the test, in the document).
fn packet_type_name(t: PacketType) -> &'static str {
    match t {
        PacketType::Initial => "INITIAL",
        PacketType::Handshake => "HANDSHAKE",
        PacketType::Retry => "RETRY",
        PacketType::Data { key_phase: false } => "DATA, key phase 0",
        PacketType::Data { key_phase: true } => "DATA, key phase 1",
        PacketType::Accept => "ACCEPT",
        PacketType::Reset => "RESET",
        PacketType::Refuse => "REFUSE",
    }
}

const ALL_PACKET_TYPES: [PacketType; 8] = [
    PacketType::Initial,
    PacketType::Handshake,
    PacketType::Retry,
    PacketType::Data { key_phase: false },
    PacketType::Accept,
    PacketType::Data { key_phase: true },
    PacketType::Reset,
    PacketType::Refuse,
];

/// The type bytes the decoder knows, by trying all 256.
fn decoded_packet_type_bytes() -> Vec<u64> {
    (0..=255u8)
        .filter(|&b| {
            let mut datagram = vec![0u8; 64];
            datagram[0] = VERSION;
            datagram[1] = b;
            Packet::new_checked(&datagram).err() != Some(DecodeError::UnknownPacketType(b))
        })
        .map(u64::from)
        .collect()
}

#[test]
fn packet_type_table_matches_the_code() {
    let doc = code_table(section("### 2.1 "));
    let code: BTreeMap<u64, &str> = ALL_PACKET_TYPES
        .iter()
        .map(|&t| (u64::from(t.to_byte()), packet_type_name(t)))
        .collect();
    assert_eq!(
        code.keys().copied().collect::<Vec<_>>(),
        decoded_packet_type_bytes(),
        "the decoder knows a type byte this test does not list"
    );
    let doc_names: BTreeMap<u64, &str> = doc
        .iter()
        .map(|(&b, cell)| (b, cell.trim_matches('`')))
        .collect();
    assert_eq!(
        doc_names, code,
        "§2.1's packet-type table and the code differ"
    );

    // "Version 2 has N packet types, with M type bytes": DATA is one type with two bytes.
    let mut types: Vec<&str> = code
        .values()
        .map(|n| n.split(',').next().unwrap_or(n))
        .collect();
    types.sort_unstable();
    types.dedup();
    let sentence = format!(
        "Version 2 has {} packet types, with {} type bytes",
        NUMBER_WORDS[types.len()],
        NUMBER_WORDS[code.len()]
    );
    assert!(
        section("### 2.1 ").replace('\n', " ").contains(&sentence),
        "§2.1 must say {sentence:?}"
    );
    // "Any other type byte (`0x00`, `0x09` to `0xff`)": the first unknown byte after the known.
    let next = code.keys().max().expect("types") + 1;
    assert!(
        section("### 2.1 ").contains(&format!("`0x00`, `{next:#04x}` to `0xff`")),
        "§2.1 must call `0x00` and `{next:#04x}` to `0xff` unknown"
    );
    // §2.4 step 2 names the same range.
    assert!(
        section("### 2.4 ").contains(&format!(
            "Packet type other than `0x01` to `{:#04x}`",
            next - 1
        )),
        "§2.4 step 2 must drop exactly the unknown types"
    );
    // §8's row lists every type byte.
    let row = rows(section("## 8. "))
        .into_iter()
        .find(|r| r[0] == "packet types")
        .expect("§8 lists the packet types");
    for b in code.keys() {
        assert!(
            row[1].contains(&format!("`{b:#04x}`")),
            "§8 lacks packet type {b:#04x}"
        );
    }
    // RESET's exact length, as §2.1 states it.
    assert!(section("### 2.1 ").contains(&format!("exactly {RESET_PACKET_LEN} bytes")));
}

// ----- Frame types -----

/// Every frame type of the code. Exhaustive, as for packet types.
fn frame_type_byte(t: FrameType) -> u8 {
    match t {
        FrameType::Padding
        | FrameType::Ping
        | FrameType::Ack
        | FrameType::Message
        | FrameType::MaxData
        | FrameType::Close
        | FrameType::Handshake
        | FrameType::PathChallenge
        | FrameType::PathResponse
        | FrameType::ResetToken
        | FrameType::Fin
        | FrameType::Received
        | FrameType::Bulk
        | FrameType::BulkMaxData => t as u8,
    }
}

const ALL_FRAME_TYPES: [FrameType; 14] = [
    FrameType::Padding,
    FrameType::Ping,
    FrameType::Ack,
    FrameType::Message,
    FrameType::MaxData,
    FrameType::Close,
    FrameType::Handshake,
    FrameType::PathChallenge,
    FrameType::PathResponse,
    FrameType::ResetToken,
    FrameType::Fin,
    FrameType::Received,
    FrameType::Bulk,
    FrameType::BulkMaxData,
];

#[test]
fn frame_type_table_matches_the_code() {
    let code: BTreeMap<u64, String> = ALL_FRAME_TYPES
        .iter()
        .map(|&t| (u64::from(frame_type_byte(t)), screaming(&format!("{t:?}"))))
        .collect();
    // The decoder knows exactly these bytes.
    let decoded: Vec<u64> = (0..=255u8)
        .filter(|&b| {
            !matches!(
                Frames::new(&[b]).next(),
                Some(Err(DecodeError::UnknownFrame(_)))
            )
        })
        .map(u64::from)
        .collect();
    assert_eq!(
        code.keys().copied().collect::<Vec<_>>(),
        decoded,
        "the frame decoder knows a type byte this test does not list"
    );
    let text = section("## 3. ");
    let doc: BTreeMap<u64, String> = code_table(text)
        .into_iter()
        .map(|(b, n)| (b, n.to_owned()))
        .collect();
    assert_eq!(doc, code, "§3's frame-type table and the code differ");
    // The reserved row starts right after the last type.
    let next = code.keys().max().expect("frames") + 1;
    let reserved = rows(text)
        .into_iter()
        .find_map(|r| hex_range(r[0]).filter(|_| r.get(1) == Some(&"reserved")))
        .expect("§3 has a reserved row");
    assert_eq!(reserved, (next, 0xff), "§3's reserved frame types");
}

// ----- Close codes and REFUSE reasons -----

#[test]
fn close_code_table_matches_the_code() {
    let consts = consts_of_module(CLOSE_CODES_SRC, "close_code");
    let app_min = parse_int(consts.get("APPLICATION_MIN").expect("APPLICATION_MIN"));
    assert_eq!(app_min, chirp_proto::close_code::APPLICATION_MIN);
    let code: BTreeMap<u64, &str> = consts
        .iter()
        .filter(|(n, _)| **n != "APPLICATION_MIN")
        .map(|(n, v)| (parse_int(v), *n))
        .collect();
    assert_eq!(
        code.len(),
        consts.len() - 1,
        "two close codes share a value"
    );
    let text = section("### 7.3 ");
    assert_eq!(
        code_table(text),
        code,
        "§7.3's close-code table and the code differ"
    );
    let next = code.keys().max().expect("codes") + 1;
    let table = rows(text);
    assert!(
        table
            .iter()
            .any(|r| hex_range(r[0]) == Some((next, 0xff)) && r[1] == "reserved"),
        "§7.3 must reserve {next:#04x} to 0xff"
    );
    assert!(
        table
            .iter()
            .any(|r| r[0] == format!("`{app_min:#x}` and above") && r[1] == "application"),
        "§7.3 must give applications {app_min:#x} and above"
    );
    // The table of errors and their reasons names only codes that exist.
    for r in &table {
        if r.len() == 3 && !r[0].starts_with('`') && r[0] != "code" && r[0] != "condition" {
            assert!(
                code.values().any(|n| *n == r[1]),
                "§7.3 cites an unknown code {}",
                r[1]
            );
        }
    }
}

#[test]
fn refuse_reasons_match_the_code() {
    let code = RefuseReason::ServerFull.code();
    assert_eq!(RefuseReason::from_code(code), RefuseReason::ServerFull);
    let cell = format!("`{code:#04x}` SERVER_FULL");
    assert!(section("### 2.1 ").contains(&cell), "§2.1 must say {cell}");
    let row = rows(section("## 8. "))
        .into_iter()
        .find(|r| r[0] == "REFUSE reason codes")
        .expect("§8 lists the REFUSE reasons");
    assert!(row[1].contains(&format!("SERVER_FULL `{code:#04x}`")));
}

// ----- Wire constants -----

#[test]
fn wire_constants_match_the_code() {
    let expected: [(&str, u64); 9] = [
        ("MAX_DATAGRAM_SIZE", MAX_DATAGRAM_SIZE as u64),
        ("MIN_INITIAL_SIZE", MIN_INITIAL_SIZE as u64),
        ("TAG_LEN", TAG_LEN as u64),
        ("MAX_TOKEN_LEN", MAX_TOKEN_LEN as u64),
        ("MAX_MESSAGE_SIZE", MAX_MESSAGE_SIZE as u64),
        ("INITIAL_MAX_DATA", INITIAL_MAX_DATA),
        ("HANDSHAKE_TIMEOUT", HANDSHAKE_TIMEOUT.as_secs()),
        ("VERDICT_TIMEOUT", VERDICT_TIMEOUT.as_secs()),
        ("ReplayWindow::SIZE", ReplayWindow::SIZE),
    ];
    let table = rows(section("## 8. "));
    for (name, value) in expected {
        let row = table
            .iter()
            .find(|r| r[0].contains(&format!("(`{name}`)")))
            .unwrap_or_else(|| panic!("§8 has no row for {name}"));
        let first: String = row[1]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        assert_eq!(first.parse::<u64>().ok(), Some(value), "§8: {name}");
    }
    let row = table
        .iter()
        .find(|r| r[0] == "version")
        .expect("§8 version");
    assert_eq!(row[1], format!("`{VERSION:#04x}`"));
    let row = table
        .iter()
        .find(|r| r[0] == "MAX_ACK_DELAY")
        .expect("§8 MAX_ACK_DELAY");
    assert_eq!(row[1], format!("{} ms", MAX_ACK_DELAY.as_millis()));
}

// ----- Chat error codes -----

#[test]
fn chat_error_code_table_matches_the_code() {
    let consts = consts_of_module(CHAT_WIRE_SRC, "code");
    let mut code: Vec<&str> = consts.values().copied().collect();
    code.sort_unstable();
    let table = rows(section("### Errors and sessions"));
    let mut doc: Vec<&str> = table
        .iter()
        .filter(|r| r[0] != "code")
        .map(|r| r[0].trim_matches('`'))
        .collect();
    doc.sort_unstable();
    assert_eq!(
        doc, code,
        "the chat error-code table and wire.rs `code` differ"
    );
    // Spot-check the parsed source against the compiled constants.
    assert_eq!(consts["STATE"], chirp_chat::wire::code::STATE);
    assert_eq!(consts["BAD_REQUEST"], chirp_chat::wire::code::BAD_REQUEST);
}

// ----- Step and rule numbers -----

/// How many numbered steps (`N. ` at the start of a line) `text` has.
fn numbered_items(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            let digits: String = l.chars().take_while(char::is_ascii_digit).collect();
            !digits.is_empty() && l[digits.len()..].starts_with(". ")
        })
        .count()
}

#[test]
fn cited_steps_and_rules_exist() {
    for (anchor, heading, word) in [
        ("#24-receiving-a-datagram", "### 2.4 ", "step"),
        ("#52-client", "### 5.2 ", "step"),
        ("#53-server-and-routing", "### 5.3 ", "rule"),
    ] {
        let count = numbered_items(section(heading));
        assert!(count > 0, "{heading} has numbered items");
        let needle = format!("]({anchor}) {word} ");
        let mut cited = 0;
        for (i, _) in DOC.match_indices(&needle) {
            let n: String = DOC[i + needle.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: usize = n.parse().unwrap_or_else(|_| panic!("{needle}: no number"));
            assert!(
                (1..=count).contains(&n),
                "{heading} has {count} {word}s, the document cites {word} {n}"
            );
            cited += 1;
        }
        assert!(cited > 0, "no citation of {heading} {word}s found");
    }
}
