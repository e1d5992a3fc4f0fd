//! The Wireshark dissector, `contrib/wireshark/chirp.lua`, read by `tshark` (Debian package
//! `tshark`).
//!
//! - **Real traffic.** `dumpcap` captures on `lo`, with a BPF filter on the test's own ports
//!   only, while real `chirp` processes talk: two `chirp peer`s (found by the dissector's
//!   heuristic alone), two `chirp peer --plain`s (on a port given as a preference), and a
//!   `chirp serve` that sends a RETRY, refuses a second client (REFUSE) and, restarted, answers
//!   the first with a stateless RESET (on a port given as a preference, heuristic off). Then
//!   `tshark -X lua_script:chirp.lua` decodes the capture (`-T json`, one chirp tree per
//!   datagram even where GSO put several in one captured payload; `-T fields` for the text)
//!   and the test checks it against what the processes did: every datagram decoded, the packet
//!   types expected, and connection IDs that agree across the two directions.
//! - **The reference decoder.** A pcap written here holds the packet vectors of
//!   `docs/PROTOCOL.md` and thousands of cut, damaged and odd variants. The dissector must flag
//!   as malformed exactly the datagrams `chirp_proto::wire::Packet::new_checked` rejects, decode
//!   the others to the same fields, authenticate long-header packets exactly when the public
//!   key opens them, and show the same frames; a datagram cut by the capture is flagged as
//!   cut, never malformed; and there is never a Lua error.
//!
//! The capture is ready when a probe datagram, sent by the test to its own probe port (inside
//! the filter), comes out of dumpcap's output; it is complete when an end marker does. Every
//! process is bounded in time and killed on drop. Without `tshark`/`dumpcap`, or without the
//! right to capture on `lo` (root, or dumpcap's capabilities), the tests say they skip, unless
//! `CHIRP_REQUIRE_SERVICES=1` (CI), where that is a failure.

#![allow(clippy::print_stderr)] // The capture summaries are printed for the reader of the log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chirp_proto::crypto::InitialKeys;
use chirp_proto::wire::{
    ConnectionId, Frame, Frames, Header, MAX_DATAGRAM_SIZE, MIN_INITIAL_SIZE, Packet,
    PacketBuilder, PacketType, RefuseReason, encode_refuse, encode_reset, encode_retry,
};
use common::{Chirp, Server, WAIT, both_exit_ok, connect_json, free_ports, lo};

/// The dissector under test.
const LUA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../contrib/wireshark/chirp.lua"
);

const INSTALL: &str = "install it with `apt-get install tshark`";

/// Bound on one tshark run: it loads all of Wireshark's dissectors first, on a shared 2-core
/// machine.
const TSHARK_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// Whether tshark is installed (else: a skip note, or a failure under CHIRP_REQUIRE_SERVICES).
fn tshark_ready() -> bool {
    chirp_testsvc::require_with("tshark", common::have("tshark"), INSTALL)
}

/// Whether tshark and dumpcap are installed and dumpcap may capture on `lo` here (tried once
/// per test binary).
fn capture_ready() -> bool {
    static CAN_CAPTURE: OnceLock<Result<(), String>> = OnceLock::new();
    if !tshark_ready() {
        return false;
    }
    if !chirp_testsvc::require_with("dumpcap", common::have("dumpcap"), INSTALL) {
        return false;
    }
    let tried = CAN_CAPTURE.get_or_init(|| Capture::start(&[]).map(|c| drop(c.stop())));
    match tried {
        Ok(()) => true,
        Err(e) => chirp_testsvc::require_with(
            &format!("capturing on lo with dumpcap ({e})"),
            false,
            "run as root, or answer yes to `dpkg-reconfigure wireshark-common` and join the \
             wireshark group",
        ),
    }
}

/// Runs `program args` with `env`, bounded by `limit` (killed after it): (success, stdout,
/// stderr), each read to its end.
fn run(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    limit: Duration,
) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    (status.success(), out, err)
}

/// One decoded datagram: field name to value (several occurrences joined by `,`).
type Row = BTreeMap<String, String>;

/// Runs `tshark -r PCAP -X lua_script:chirp.lua [-o PREF]... ARGS...` and returns its output.
/// tshark reads its preferences from an empty directory, so a user's own settings cannot
/// change what the test sees. Fails on any Lua error.
fn tshark_raw(pcap: &Path, prefs: &[&str], more: &[&str]) -> String {
    let config = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<String> = vec![
        "-r".into(),
        pcap.display().to_string(),
        "-X".into(),
        format!("lua_script:{LUA}"),
    ];
    for p in prefs {
        args.push("-o".into());
        args.push((*p).into());
    }
    args.extend(more.iter().map(|s| (*s).to_owned()));
    let dir = config.path().display().to_string();
    let (ok, out, err) = run(
        "tshark",
        &args,
        &[("WIRESHARK_CONFIG_DIR", &dir)],
        TSHARK_LIMIT,
    );
    assert!(ok, "tshark failed: {err}\n{out}");
    // As root tshark warns that it runs as root; Wireshark 4.0 still runs Lua scripts given
    // with -X (`run_user_scripts_when_superuser` in its init.lua). Anything about Lua is a
    // failure: the script did not load, or raised an error.
    assert!(
        !err.contains("Lua") && !out.contains("Lua Error") && !out.contains("dissector error"),
        "Lua trouble in tshark:\n{err}\n{out}"
    );
    out
}

/// `tshark ... [-Y FILTER] -T fields -e FIELD...`: one row per frame.
fn tshark(pcap: &Path, prefs: &[&str], filter: Option<&str>, fields: &[&str]) -> Vec<Row> {
    let mut more = vec!["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"];
    if let Some(f) = filter {
        more.extend(["-Y", f]);
    }
    for f in fields {
        more.extend(["-e", f]);
    }
    tshark_raw(pcap, prefs, &more)
        .lines()
        .map(|line| {
            fields
                .iter()
                .zip(line.split('\t').chain(std::iter::repeat("")))
                .map(|(f, v)| ((*f).to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// Adds every value under `v` to `row`, by field name (values of one name joined by `,`).
fn flatten(v: &serde_json::Value, key: &str, row: &mut Row) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(v, k, row);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                flatten(v, key, row);
            }
        }
        other => {
            let s = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            row.entry(key.to_owned())
                .and_modify(|old| {
                    old.push(',');
                    old.push_str(&s);
                })
                .or_insert(s);
        }
    }
}

/// `tshark ... -T json`: one row per chirp datagram, with the frame number and UDP ports, and
/// `gso.segments` when the datagram was one segment of a GSO super-datagram; a row without
/// chirp fields for a UDP datagram that is not chirp.
fn datagrams(pcap: &Path, prefs: &[&str]) -> Vec<Row> {
    let out = tshark_raw(
        pcap,
        prefs,
        &["-T", "json", "--no-duplicate-keys", "-J", "frame udp chirp"],
    );
    let frames: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("tshark JSON: {e}\n{out}"));
    let mut rows = Vec::new();
    for fr in &frames {
        let layers = &fr["_source"]["layers"];
        let mut base = Row::new();
        for (layer, name) in [
            ("frame", "frame.number"),
            ("udp", "udp.srcport"),
            ("udp", "udp.dstport"),
            ("udp", "udp.length"),
        ] {
            if let Some(v) = layers[layer][name].as_str() {
                base.insert(name.to_owned(), v.to_owned());
            }
        }
        let trees: Vec<&serde_json::Value> = match &layers["chirp"] {
            serde_json::Value::Array(a) => a.iter().collect(),
            serde_json::Value::Null => Vec::new(),
            one => vec![one],
        };
        let gso = trees
            .iter()
            .find_map(|t| t["chirp.gso.segments"].as_str().map(str::to_owned));
        let before = rows.len();
        for t in trees.iter().filter(|t| !t["chirp.type"].is_null()) {
            let mut row = base.clone();
            if let Some(n) = &gso {
                row.insert("gso.segments".into(), n.clone());
            }
            flatten(t, "chirp", &mut row);
            rows.push(row);
        }
        if rows.len() == before {
            rows.push(base);
        }
    }
    rows
}

fn field<'a>(row: &'a Row, name: &str) -> &'a str {
    row.get(name).map_or("", String::as_str)
}

fn num(row: &Row, name: &str) -> Option<u64> {
    let v = field(row, name);
    if v.is_empty() {
        return None;
    }
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

fn port(row: &Row, name: &str) -> u16 {
    field(row, name)
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {row:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Capturing with dumpcap
// ---------------------------------------------------------------------------------------------

/// `dumpcap -i lo -f "udp and (port P...)" -P -w -`, its output collected in memory, killed
/// on drop.
struct Capture {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The test's own probe socket: its port is in the filter, and it sends to itself.
    probe: UdpSocket,
    markers: u32,
}

impl Capture {
    /// Starts capturing UDP to or from `ports` (and the probe port) on `lo`; returns once a
    /// probe datagram has come out, so nothing sent afterwards is missed. `Err(dumpcap's
    /// stderr)` if it cannot capture.
    fn start(ports: &[u16]) -> Result<Capture, String> {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind the probe socket");
        let probe_port = probe.local_addr().expect("probe address").port();
        let filter = std::iter::once(probe_port)
            .chain(ports.iter().copied())
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut child = Command::new("dumpcap")
            .args([
                "-i",
                "lo",
                "-f",
                &format!("udp and ({filter})"),
                "-P",
                "-q",
                "-w",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start dumpcap: {e}"))?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let mut pipe = child.stdout.take().expect("piped stdout");
            let sink = Arc::clone(&out);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1 << 16];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("capture lock")
                        .extend_from_slice(&buf[..n]);
                }
            })
        };
        {
            let mut pipe = child.stderr.take().expect("piped stderr");
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = pipe.read_to_end(&mut all);
                sink.lock().expect("stderr lock").extend_from_slice(&all);
            });
        }
        let mut cap = Capture {
            child,
            out,
            reader: Some(reader),
            stderr,
            probe,
            markers: 0,
        };
        cap.mark("start")?;
        Ok(cap)
    }

    /// Sends a unique marker datagram to the probe port until dumpcap has written it (every
    /// 20 ms, for at most 20 s): everything sent on `lo` before it is then in the capture.
    fn mark(&mut self, what: &str) -> Result<(), String> {
        self.markers += 1;
        let marker = format!(
            "chirp-wireshark-test {what} {} {}",
            std::process::id(),
            self.markers
        );
        let to = self.probe.local_addr().expect("probe address");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.probe
                .send_to(marker.as_bytes(), to)
                .expect("send a probe datagram");
            std::thread::sleep(Duration::from_millis(20));
            let seen = {
                let out = self.out.lock().expect("capture lock");
                out.windows(marker.len()).any(|w| w == marker.as_bytes())
            };
            if seen {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its first error line (the rest is advice on how to get the permission), once
                // the reader has it (it reads to the end, which follows the exit at once).
                let until = Instant::now() + Duration::from_secs(1);
                while self.stderr.lock().expect("stderr lock").is_empty() && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let stderr =
                    String::from_utf8_lossy(&self.stderr.lock().expect("stderr lock")).into_owned();
                let why = stderr
                    .lines()
                    .find(|l| l.starts_with("dumpcap:"))
                    .unwrap_or(stderr.trim());
                return Err(format!("dumpcap exited ({status}): {why}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("marker {what:?} not captured within 20 s"));
            }
        }
    }

    /// Waits for an end marker, stops dumpcap (SIGTERM: it closes the file cleanly) and
    /// returns the pcap bytes.
    fn stop(mut self) -> Vec<u8> {
        self.mark("end").expect("capture the end marker");
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM dumpcap failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("wait for dumpcap").is_none() {
            assert!(
                Instant::now() < deadline,
                "dumpcap ignored SIGTERM for 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(r) = self.reader.take() {
            r.join().expect("capture reader");
        }
        std::mem::take(&mut *self.out.lock().expect("capture lock"))
    }

    /// [`Self::stop`], written to `dir/name`.
    fn save(self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.stop()).expect("write the capture");
        path
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INITIAL: u64 = 0x01;
const HANDSHAKE: u64 = 0x02;
const RETRY: u64 = 0x03;
const DATA: u64 = 0x04;
const ACCEPT: u64 = 0x05;
const RESET: u64 = 0x07;
const REFUSE: u64 = 0x08;

fn ty(row: &Row) -> Option<u64> {
    num(row, "chirp.type")
}

fn is_long(t: u64) -> bool {
    matches!(t, INITIAL | HANDSHAKE | RETRY | ACCEPT | REFUSE)
}

/// The datagrams between chirp processes (the probe and markers left out), each checked to be
/// decoded as chirp, well formed, authentic where it can be checked, and INITIALs padded.
fn chirp_rows(rows: Vec<Row>, ports: &[u16]) -> Vec<Row> {
    let ours: Vec<Row> = rows
        .into_iter()
        .filter(|r| {
            ports.contains(&port(r, "udp.srcport")) || ports.contains(&port(r, "udp.dstport"))
        })
        .collect();
    assert!(!ours.is_empty(), "nothing captured on ports {ports:?}");
    for r in &ours {
        let t = ty(r).unwrap_or_else(|| panic!("a datagram not decoded as chirp: {r:?}"));
        assert!(
            !r.keys().any(|k| k.starts_with("_ws.expert")),
            "expert info on {r:?}"
        );
        if is_long(t) {
            assert_eq!(
                field(r, "chirp.authentic"),
                "1",
                "long header not authentic: {r:?}"
            );
        }
        // A client pads its INITIALs to 1200 bytes, but for one carrying CLOSE (§7.4).
        let closing = field(r, "chirp.frame").split(',').any(|f| f == "0x05");
        if t == INITIAL && !closing {
            assert_eq!(field(r, "chirp.padded"), "1", "{r:?}");
            assert_eq!(
                num(r, "chirp.datagram_len"),
                Some(MIN_INITIAL_SIZE as u64),
                "{r:?}"
            );
            assert_eq!(field(r, "chirp.handshake.number"), "1", "{r:?}");
        }
        // ACCEPT carries message 2 and HANDSHAKE message 3, or only an ACK while the side
        // that sends it pauses to judge the peer's key (PROTOCOL.md §5.8).
        let number = field(r, "chirp.handshake.number");
        if t == ACCEPT {
            assert!(["2", ""].contains(&number), "{r:?}");
        }
        if t == HANDSHAKE {
            assert!(["3", ""].contains(&number), "{r:?}");
        }
    }
    for (t, m) in [(ACCEPT, "2"), (HANDSHAKE, "3")] {
        assert!(
            ours.iter()
                .any(|r| ty(r) == Some(t) && field(r, "chirp.handshake.number") == m),
            "no Noise message {m} decoded"
        );
    }
    ours
}

/// Packets by type name, for the log and the assertions.
fn census(rows: &[Row]) -> BTreeMap<u64, usize> {
    let mut n = BTreeMap::new();
    for r in rows {
        if let Some(t) = ty(r) {
            *n.entry(t).or_insert(0) += 1;
        }
    }
    n
}

/// The distinct values of `name` over `rows`.
fn values(rows: &[&Row], name: &str) -> BTreeSet<u64> {
    rows.iter().filter_map(|r| num(r, name)).collect()
}

fn from_port<'a>(rows: &'a [Row], p: u16, t: &[u64]) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| port(r, "udp.srcport") == p && ty(r).is_some_and(|x| t.contains(&x)))
        .collect()
}

/// Packet numbers of each sender strictly increase (one connection per sender here, and
/// chirp never reuses a number, not even for a retransmission).
fn assert_pn_increasing(rows: &[Row], senders: &[u16]) {
    for &p in senders {
        let pns: Vec<u64> = rows
            .iter()
            .filter(|r| port(r, "udp.srcport") == p)
            .filter_map(|r| num(r, "chirp.pn"))
            .collect();
        assert!(
            pns.windows(2).all(|w| w[0] < w[1]),
            "packet numbers from port {p} do not increase: {pns:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Real exchanges
// ---------------------------------------------------------------------------------------------

/// Two `chirp peer`s chat; the dissector finds them by its heuristic alone (their ports are
/// not configured), decodes every datagram, and the connection IDs agree: the client's
/// HANDSHAKEs and DATA go to the ID the server announced in its ACCEPTs, and the server's
/// ACCEPTs and DATA to the ID the client announced in its long headers.
#[test]
fn a_peer_exchange_decodes_with_connection_ids_that_agree_both_ways() {
    if !capture_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cap, mut a, mut b) = common::retry_bind(|| {
        let [pa, pb] = free_ports();
        let cap = Capture::start(&[pa, pb]).expect("start the capture");
        let mut a = Chirp::spawn_peer("A", lo(pa), lo(pb), &[]);
        let mut b = Chirp::spawn_peer("B", lo(pb), lo(pa), &[]);
        a.started()?;
        b.started()?;
        Ok((cap, a, b))
    });
    let (pa, pb) = (a.addr.port(), b.addr.port());
    for i in 1..=3 {
        a.line(&format!("from A {i}"));
        b.line(&format!("from B {i}"));
    }
    assert_eq!(b.messages(3, WAIT), ["from A 1", "from A 2", "from A 3"]);
    assert_eq!(a.messages(3, WAIT), ["from B 1", "from B 2", "from B 3"]);
    both_exit_ok(&mut a, &mut b);
    let pcap = cap.save(dir.path(), "peers.pcap");

    let rows = chirp_rows(datagrams(&pcap, &[]), &[pa, pb]);
    let n = census(&rows);
    eprintln!("peer exchange, packets by type: {n:?}");
    for t in [INITIAL, ACCEPT, HANDSHAKE, DATA] {
        assert!(
            n.get(&t).is_some_and(|&c| c > 0),
            "no packet of type {t:#04x}: {n:?}"
        );
    }
    // One connection: one side sent ACCEPTs (the server, whichever won the simultaneous
    // open), the other HANDSHAKEs (the client).
    let accepts_from: BTreeSet<u16> = rows
        .iter()
        .filter(|r| ty(r) == Some(ACCEPT))
        .map(|r| port(r, "udp.srcport"))
        .collect();
    assert_eq!(
        accepts_from.len(),
        1,
        "ACCEPTs from both sides: {accepts_from:?}"
    );
    let server = *accepts_from.first().expect("one server");
    let client = if server == pa { pb } else { pa };
    let accepts = from_port(&rows, server, &[ACCEPT]);
    let handshakes = from_port(&rows, client, &[HANDSHAKE]);
    assert!(
        !handshakes.is_empty(),
        "no HANDSHAKE from the client {client}"
    );
    assert!(from_port(&rows, server, &[HANDSHAKE]).is_empty());
    let s_ids = values(&accepts, "chirp.scid");
    let c_ids = values(&handshakes, "chirp.scid");
    assert_eq!(
        (s_ids.len(), c_ids.len()),
        (1, 1),
        "S {s_ids:x?}, C {c_ids:x?}"
    );
    let (s, c) = (*s_ids.first().expect("S"), *c_ids.first().expect("C"));
    assert_eq!(values(&accepts, "chirp.dcid"), BTreeSet::from([c]));
    assert_eq!(values(&handshakes, "chirp.dcid"), BTreeSet::from([s]));
    // The client opened with INITIALs from C; the server's own long headers (its INITIALs
    // before it yielded, if any, then its ACCEPTs) all come from S.
    assert!(
        from_port(&rows, client, &[INITIAL])
            .iter()
            .any(|r| num(r, "chirp.scid") == Some(c)),
        "no INITIAL from the client's ID {c:016x}"
    );
    assert_eq!(
        values(&from_port(&rows, server, &[INITIAL, ACCEPT]), "chirp.scid"),
        BTreeSet::from([s])
    );
    // DATA: each side addresses the other's announced ID, and only that one.
    let data_c = from_port(&rows, client, &[DATA]);
    let data_s = from_port(&rows, server, &[DATA]);
    assert!(
        !data_c.is_empty() && !data_s.is_empty(),
        "DATA missing one way"
    );
    assert_eq!(values(&data_c, "chirp.dcid"), BTreeSet::from([s]));
    assert_eq!(values(&data_s, "chirp.dcid"), BTreeSet::from([c]));
    assert_pn_increasing(&rows, &[pa, pb]);

    // The same through `-T fields`, where a GSO super-datagram is one line with a value per
    // datagram: the same senders, types and destinations, in the same order.
    let lines = tshark(
        &pcap,
        &[],
        Some("chirp"),
        &["udp.srcport", "chirp.type", "chirp.dcid"],
    );
    let mut from_fields = Vec::new();
    for l in &lines {
        let (types, dcids) = (field(l, "chirp.type"), field(l, "chirp.dcid"));
        let (types, dcids): (Vec<&str>, Vec<&str>) =
            (types.split(',').collect(), dcids.split(',').collect());
        assert_eq!(types.len(), dcids.len(), "{l:?}");
        for (t, d) in types.into_iter().zip(dcids) {
            from_fields.push((
                field(l, "udp.srcport").to_owned(),
                t.to_owned(),
                d.to_owned(),
            ));
        }
    }
    let from_json: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let f = |n| field(r, n).to_owned();
            (f("udp.srcport"), f("chirp.type"), f("chirp.dcid"))
        })
        .collect();
    assert_eq!(from_fields, from_json);
    if let Some(r) = rows.iter().find(|r| ty(r) == Some(DATA)) {
        eprintln!("sample DATA row: {r:?}");
    }
}

/// `chirp peer --plain`: on a port given in the `chirp.plain_ports` preference, each datagram
/// is the text, exactly as typed; the Info column shows control and bidi characters as marks.
/// Without the preference nothing of it is taken for chirp (the heuristic stays away).
#[test]
fn plain_text_on_a_configured_port_decodes_exactly_and_safely() {
    if !capture_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cap, mut a, mut b) = common::retry_bind(|| {
        let [pa, pb] = free_ports();
        let cap = Capture::start(&[pa, pb]).expect("start the capture");
        let a = Chirp::peer("A", lo(pa), lo(pb), &["--plain"])?;
        let b = Chirp::peer("B", lo(pb), lo(pa), &["--plain"])?;
        Ok((cap, a, b))
    });
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let from_a = ["plain from A, é✓", "evil \u{1b}[2J and \u{202e}reversed"];
    let from_b = ["plain from B"];
    for l in from_a {
        a.line(l);
        assert_eq!(b.wait_type("message", WAIT)["text"], l, "{}", b.diag());
    }
    for l in from_b {
        b.line(l);
        assert_eq!(a.wait_type("message", WAIT)["text"], l, "{}", a.diag());
    }
    let pcap = cap.save(dir.path(), "plain.pcap");

    let pref = format!("chirp.plain_ports:{pb}");
    let fields = [
        "udp.srcport",
        "udp.dstport",
        "chirp.text",
        "_ws.col.Info",
        "_ws.expert.message",
    ];
    let rows: Vec<Row> = tshark(&pcap, &[&pref], None, &fields)
        .into_iter()
        .filter(|r| [pa, pb].contains(&port(r, "udp.srcport")))
        .collect();
    let texts = |p: u16| -> Vec<&str> {
        rows.iter()
            .filter(|r| port(r, "udp.srcport") == p)
            .map(|r| field(r, "chirp.text"))
            .collect()
    };
    assert!(
        rows.iter()
            .all(|r| field(r, "_ws.expert.message").is_empty()),
        "{rows:#?}"
    );
    assert_eq!(texts(pa), from_a, "{rows:#?}");
    assert_eq!(texts(pb), from_b, "{rows:#?}");
    let evil = rows
        .iter()
        .find(|r| field(r, "chirp.text").starts_with("evil"))
        .expect("the evil line");
    assert_eq!(
        field(evil, "_ws.col.Info"),
        "Text: \"evil ^[[2J and <U+202E>reversed\"",
        "{evil:?}"
    );
    eprintln!("sample plain row: {evil:?}");

    // Not configured: plain UDP, not chirp.
    let rows = tshark(&pcap, &[], Some("chirp"), &["frame.number", "chirp.text"]);
    assert!(rows.is_empty(), "plain text taken for chirp: {rows:?}");
}

/// Waits until a `chirp connect` client is in its session and in `room`.
fn ready(c: &mut Chirp, room: &str) {
    c.wait_type("connected", WAIT);
    c.wait_for("joined", WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == room
    });
}

/// A `chirp serve` with room for one connection, on a port configured in `chirp.udp_ports`
/// (heuristic off): alice's first INITIAL gets a RETRY, her second carries its cookie; bob is
/// refused (REFUSE, SERVER_FULL); the server is killed and restarted, and alice's next DATA,
/// for a connection it no longer knows, gets a stateless RESET. Each of these is decoded, and
/// its connection IDs are those of the INITIAL it answers.
#[test]
fn a_server_retry_refuse_and_reset_decode_and_answer_the_right_initials() {
    if !capture_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &["--max-connections", "1"]);
    let sp = srv.addr.port();
    let cap = Capture::start(&[sp]).expect("start the capture");

    let mut alice = connect_json(
        "alice",
        srv.addr,
        &dir.path().join("a"),
        "alice",
        &["#r"],
        &[],
    );
    ready(&mut alice, "#r");
    let mut bob = connect_json("bob", srv.addr, &dir.path().join("b"), "bob", &["#r"], &[]);
    let refused = bob.proc.wait_exit(WAIT);
    assert!(
        refused.is_some_and(|s| !s.success()),
        "bob was not refused: {refused:?}\n{}",
        bob.diag()
    );
    srv.proc.kill();
    let _srv = Server::start(
        data.path(),
        &srv.addr.to_string(),
        &["--max-connections", "1"],
    );
    alice.line("after the restart");
    let down = alice.wait_type("disconnected", WAIT);
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.contains("restarted")),
        "{down}"
    );
    alice.wait_type("delivered", WAIT);
    let pcap = cap.save(dir.path(), "server.pcap");

    let prefs = [
        format!("chirp.udp_ports:{sp}"),
        "chirp.heuristic:FALSE".to_owned(),
    ];
    let prefs: Vec<&str> = prefs.iter().map(String::as_str).collect();
    let rows = chirp_rows(datagrams(&pcap, &prefs), &[sp]);
    let n = census(&rows);
    eprintln!("server exchange, packets by type: {n:?}");
    for t in [INITIAL, RETRY, ACCEPT, HANDSHAKE, DATA, REFUSE, RESET] {
        assert!(
            n.get(&t).is_some_and(|&c| c > 0),
            "no packet of type {t:#04x}: {n:?}"
        );
    }

    // Every RETRY answers a tokenless INITIAL from the port it goes to (destination = that
    // INITIAL's source ID, source = its destination ID R), and that client then repeats its
    // INITIAL to the same R, from the same ID, with the RETRY's token.
    for (i, retry) in rows
        .iter()
        .enumerate()
        .filter(|(_, r)| ty(r) == Some(RETRY))
    {
        let to = port(retry, "udp.dstport");
        let (c, r) = (num(retry, "chirp.dcid"), num(retry, "chirp.scid"));
        assert_eq!(num(retry, "chirp.token_len"), Some(24), "{retry:?}");
        let asked = rows[..i]
            .iter()
            .rev()
            .find(|x| ty(x) == Some(INITIAL) && port(x, "udp.srcport") == to);
        let asked = asked.unwrap_or_else(|| panic!("RETRY to {to} answers nothing: {retry:?}"));
        assert_eq!(num(asked, "chirp.token_len"), Some(0), "{asked:?}");
        assert_eq!((num(asked, "chirp.scid"), num(asked, "chirp.dcid")), (c, r));
        let again = rows[i..]
            .iter()
            .find(|x| ty(x) == Some(INITIAL) && port(x, "udp.srcport") == to)
            .unwrap_or_else(|| panic!("no INITIAL after the RETRY {retry:?}"));
        assert_eq!((num(again, "chirp.scid"), num(again, "chirp.dcid")), (c, r));
        assert_eq!(field(again, "chirp.token"), field(retry, "chirp.token"));
    }

    // bob's port: INITIALs answered by a REFUSE, never an ACCEPT.
    let refuses: Vec<&Row> = rows.iter().filter(|r| ty(r) == Some(REFUSE)).collect();
    for refuse in &refuses {
        let to = port(refuse, "udp.dstport");
        assert_eq!(
            num(refuse, "chirp.refuse_reason"),
            Some(1),
            "SERVER_FULL: {refuse:?}"
        );
        let initials = from_port(&rows, to, &[INITIAL]);
        assert!(
            initials
                .iter()
                .any(|x| (num(x, "chirp.scid"), num(x, "chirp.dcid"))
                    == (num(refuse, "chirp.dcid"), num(refuse, "chirp.scid"))),
            "REFUSE {refuse:?} answers no INITIAL of port {to}"
        );
        assert!(
            !rows
                .iter()
                .any(|x| ty(x) == Some(ACCEPT) && port(x, "udp.dstport") == to),
            "port {to} was refused and accepted"
        );
    }

    // alice's port: the RESET follows her DATA to the ID of the server she had before its
    // restart (the source ID of its first ACCEPT), and then she opens a new connection.
    let reset_at = rows
        .iter()
        .position(|r| ty(r) == Some(RESET))
        .expect("a RESET");
    let reset = &rows[reset_at];
    let alice_port = port(reset, "udp.dstport");
    assert_eq!(
        field(reset, "chirp.reset_token").replace(':', "").len(),
        32,
        "{reset:?}"
    );
    assert_eq!(num(reset, "chirp.datagram_len"), Some(18), "{reset:?}");
    let old_server = rows
        .iter()
        .find(|r| ty(r) == Some(ACCEPT) && port(r, "udp.dstport") == alice_port)
        .and_then(|r| num(r, "chirp.scid"))
        .expect("alice's first ACCEPT");
    let asked = rows[..reset_at]
        .iter()
        .rev()
        .find(|r| port(r, "udp.srcport") == alice_port)
        .expect("a packet from alice before the RESET");
    assert_eq!(ty(asked), Some(DATA), "{asked:?}");
    assert_eq!(num(asked, "chirp.dcid"), Some(old_server), "{asked:?}");
    let old_client = from_port(&rows[..reset_at], alice_port, &[INITIAL])
        .first()
        .and_then(|r| num(r, "chirp.scid"))
        .expect("alice's first INITIAL");
    let reopened = from_port(&rows[reset_at..], alice_port, &[INITIAL]);
    assert!(
        reopened
            .iter()
            .all(|r| num(r, "chirp.scid").is_some_and(|c| c != old_client)),
        "alice reconnected with her old ID: {reopened:?}"
    );
    assert!(
        !reopened.is_empty(),
        "alice did not reconnect after the RESET"
    );
    assert_pn_increasing(&rows[..reset_at], &[sp]);
    eprintln!("sample RESET row: {reset:?}");
}

// ---------------------------------------------------------------------------------------------
// Against the reference decoder
// ---------------------------------------------------------------------------------------------

/// One datagram of the hand-made capture: its bytes, and how many of them the capture keeps.
struct Case {
    bytes: Vec<u8>,
    kept: usize,
}

impl Case {
    fn whole(bytes: Vec<u8>) -> Self {
        let kept = bytes.len();
        Self { bytes, kept }
    }
}

/// A classic pcap of raw IPv4 (LINKTYPE_RAW) datagrams 127.0.0.1:40000 -> 127.0.0.2:7667,
/// each cut to its `kept` bytes of UDP payload as a snapshot length would.
fn write_pcap(path: &Path, cases: &[Case]) {
    let mut out = Vec::new();
    // Magic, version 2.4, no time zone, no accuracy, snapshot length, LINKTYPE_RAW (101).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (i, case) in cases.iter().enumerate() {
        let udp_len = 8 + case.bytes.len();
        let ip_len = 20 + udp_len;
        let mut pkt = Vec::with_capacity(ip_len);
        pkt.extend_from_slice(&[0x45, 0]);
        pkt.extend_from_slice(&u16::try_from(ip_len).expect("IP length").to_be_bytes());
        // Identification, don't fragment, TTL 64, UDP, checksum 0 (not checked by tshark).
        pkt.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2]);
        pkt.extend_from_slice(&40_000u16.to_be_bytes());
        pkt.extend_from_slice(&7667u16.to_be_bytes());
        pkt.extend_from_slice(&u16::try_from(udp_len).expect("UDP length").to_be_bytes());
        pkt.extend_from_slice(&[0, 0]); // no UDP checksum
        pkt.extend_from_slice(&case.bytes[..case.kept]);
        let secs = u32::try_from(i).expect("few packets");
        for v in [secs, 0, pkt.len() as u32, ip_len as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&pkt);
    }
    let mut f = std::fs::File::create(path).expect("create the pcap");
    f.write_all(&out).expect("write the pcap");
}

/// The packet vectors of docs/PROTOCOL.md §10, in the document's order (the exchange of §5.4
/// first, so that the dissector meets each INITIAL before the packets sealed under its keys).
fn doc_packets() -> Vec<(String, Vec<u8>)> {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/PROTOCOL.md"
    ));
    let mut out = Vec::new();
    for chunk in doc.split("<!-- vector: ").skip(1) {
        let Some((name, rest)) = chunk.split_once(" -->") else {
            continue;
        };
        let Some(body) = rest
            .split_once("```hex\n")
            .and_then(|(_, b)| b.split_once("```"))
            .map(|(b, _)| b)
        else {
            continue;
        };
        let mut bytes = Vec::new();
        let parsed = body.lines().all(|line| {
            let line = line.split('#').next().unwrap_or("");
            line.split_whitespace().all(|tok| {
                let (b, n) = tok.split_once('*').unwrap_or((tok, "1"));
                match (u8::from_str_radix(b, 16), n.parse::<usize>()) {
                    (Ok(b), Ok(n)) if tok.len() == 2 || tok.contains('*') => {
                        bytes.extend(std::iter::repeat_n(b, n));
                        true
                    }
                    _ => false,
                }
            })
        });
        // Keys, cookies, frames and the varint table are not packets.
        if parsed && Packet::new_checked(&bytes).is_ok() {
            out.push((name.to_owned(), bytes));
        }
    }
    out
}

/// A few packets the vectors do not have: longest fields, an empty RETRY token, unknown
/// refusal codes, non-minimal varints, an unpadded and an oversized INITIAL.
fn odd_packets() -> Vec<Vec<u8>> {
    let (c, s, r) = (
        ConnectionId(0xb3f2_af6d_0fc7_10c5),
        ConnectionId(0x1a28_690d_a8a8_d057),
        ConnectionId(0x853b_5596_4736_4cea),
    );
    let keys = InitialKeys::new(r.0);
    let mut out = vec![
        encode_reset(&[0xab; 16]),
        encode_retry(c, r, &[], &keys.retry),
        encode_retry(c, r, &[7; 64], &keys.retry),
        encode_refuse(c, r, RefuseReason::Other(0x3fff), &keys.refuse),
        encode_refuse(c, r, RefuseReason::Other((1 << 62) - 1), &keys.refuse),
    ];
    let built = |ty, src, number, token: &[u8], frames: &[u8], pad: usize| {
        let header = Header {
            ty,
            dst_cid: if ty == PacketType::Initial { r } else { s },
            src_cid: src,
            number,
        };
        let mut b = PacketBuilder::new(&header, token, MAX_DATAGRAM_SIZE);
        b.frames_buf().extend_from_slice(frames);
        b.pad_to(pad);
        b.finish(&keys.client)
    };
    let ping = [0x01];
    out.push(built(
        PacketType::Data { key_phase: true },
        None,
        1 << 40,
        &[],
        &ping,
        0,
    ));
    out.push(built(PacketType::Handshake, Some(c), 16_383, &[], &ping, 0));
    out.push(built(
        PacketType::Initial,
        Some(c),
        0,
        &[9; 64],
        &ping,
        MIN_INITIAL_SIZE,
    ));
    out.push(built(
        PacketType::Initial,
        Some(c),
        3,
        &[],
        &ping,
        MIN_INITIAL_SIZE - 1,
    ));
    // CLOSE with a hostile reason and a frame a long header may not carry, both authentic.
    let close = [0x05, 0x00, 0x05, 0x1b, b'[', b'2', b'J', 0xff, 0x04, 0x10];
    out.push(built(PacketType::Handshake, Some(c), 7, &[], &close, 0));
    // An INITIAL that carries CLOSE is not padded (PROTOCOL.md §7.4); one whose CLOSE runs
    // past the end of the plaintext, authentic all the same.
    out.push(built(
        PacketType::Initial,
        Some(c),
        8,
        &[],
        &[0x05, 0x00, 0x02, b'o', b'k'],
        0,
    ));
    out.push(built(PacketType::Initial, Some(c), 9, &[], &close[..7], 0));
    // Non-minimal varints: the packet number of a DATA packet, the token length of an
    // INITIAL (which then has 1201 bytes).
    let data = built(
        PacketType::Data { key_phase: false },
        None,
        3,
        &[],
        &ping,
        0,
    );
    let mut v = data[..10].to_vec();
    v.extend_from_slice(&[0x40, 0x03]);
    v.extend_from_slice(&data[11..]);
    out.push(v);
    let initial = built(
        PacketType::Initial,
        Some(c),
        0,
        &[],
        &ping,
        MIN_INITIAL_SIZE,
    );
    let mut v = initial[..18].to_vec();
    v.extend_from_slice(&[0x40, 0x00]);
    v.extend_from_slice(&initial[19..]);
    out.push(v);
    out
}

/// Every prefix of the header region, every header byte replaced by values that matter to
/// varints and types, a byte more, a byte less, and the whole packet cut by the capture.
fn variants(v: &[u8], out: &mut Vec<Case>) {
    let n = v.len();
    for len in (1..n.min(64)).chain(n.saturating_sub(20).max(64)..n) {
        out.push(Case::whole(v[..len].to_vec()));
    }
    for i in 0..n.min(48) {
        for x in [
            0x00, 0x01, 0x02, 0x07, 0x09, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xff,
        ] {
            if v[i] != x {
                let mut w = v.to_vec();
                w[i] = x;
                out.push(Case::whole(w));
            }
        }
    }
    let mut longer = v.to_vec();
    longer.push(0);
    out.push(Case::whole(longer));
    if n > 19 {
        let mut shorter = v.to_vec();
        shorter.remove(18);
        out.push(Case::whole(shorter));
    }
    for kept in [n - 1, n / 2, 10.min(n - 1), 2.min(n - 1)] {
        if kept > 0 {
            out.push(Case {
                bytes: v.to_vec(),
                kept,
            });
        }
    }
}

/// Seeded junk that starts like chirp: version 2, a type byte around the valid ones.
fn junk(out: &mut Vec<Case>) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..1500 {
        let len = [1, 2, 17, 18, 19, 27, 28, 29, 35, 36, 42, 60, 200, 1200][next() as usize % 14];
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 2 && next() % 8 != 0 {
            b[0] = 0x02;
            b[1] = (next() % 10) as u8;
        }
        out.push(Case::whole(b));
    }
}

/// The frame types the dissector lists for the plaintext of a long-header packet, by the
/// reference decoder, and whether it flags a bad frame: it stops at the first frame that does
/// not decode (listing its type byte) or that a long header may not carry.
fn frame_types(plain: &[u8]) -> (String, bool) {
    let mut types = Vec::new();
    let mut at = 0;
    for frame in Frames::new(plain) {
        let Ok(frame) = frame else {
            types.push(format!("{:#04x}", plain[at]));
            return (types.join(","), true);
        };
        at += frame.encoded_len();
        let t: u8 = match frame {
            Frame::Padding { .. } => 0x00,
            Frame::Ping => 0x01,
            Frame::Ack(_) => 0x02,
            Frame::Message { .. } => 0x03,
            Frame::MaxData { .. } => 0x04,
            Frame::Close { .. } => 0x05,
            Frame::Handshake(_) => 0x06,
            Frame::PathChallenge(_) => 0x07,
            Frame::PathResponse(_) => 0x08,
            Frame::ResetToken(_) => 0x09,
            Frame::Fin { .. } => 0x0a,
            Frame::Received { .. } => 0x0b,
            Frame::Bulk { .. } => 0x0c,
            Frame::BulkMaxData { .. } => 0x0d,
        };
        types.push(format!("{t:#04x}"));
        if ![0x00, 0x01, 0x02, 0x05, 0x06].contains(&t) {
            return (types.join(","), true);
        }
    }
    (types.join(","), false)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The dissector agrees with `Packet::new_checked` on every datagram of the vectors and their
/// variants: malformed exactly when the decoder rejects it (cut by the capture: flagged as cut,
/// and malformed only if the decoder rejects it too), the same header fields otherwise, a tag
/// verified exactly when the public key opens the packet, the same frames inside; and never a
/// Lua error.
#[test]
fn the_dissector_agrees_with_the_reference_decoder_on_vectors_and_damaged_variants() {
    if !tshark_ready() {
        return;
    }
    let vectors = doc_packets();
    let names: Vec<&str> = vectors.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "client-initial",
        "retry",
        "server-accept",
        "client-handshake",
        "data-phase-0",
        "data-phase-1",
        "refuse",
        "reset-answer",
    ] {
        assert!(
            names.contains(&want),
            "vector {want} not found in {names:?}"
        );
    }
    let mut cases: Vec<Case> = vectors
        .iter()
        .map(|(_, v)| Case::whole(v.clone()))
        .collect();
    let odd = odd_packets();
    cases.extend(odd.iter().cloned().map(Case::whole));
    for v in vectors.iter().map(|(_, v)| v).chain(&odd) {
        variants(v, &mut cases);
    }
    junk(&mut cases);
    // GSO super-datagrams (segments of one size to one destination, the last one shorter or
    // equal), as a capture on the sending host shows them: split back into their datagrams.
    let vector = |name: &str| -> Vec<u8> {
        vectors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("vector {name}"))
    };
    let gso: Vec<Vec<Vec<u8>>> = vec![
        vec![vector("client-handshake"), vector("data-phase-0")],
        vec![vector("data-phase-0"); 3],
        vec![vector("reset-answer"); 2],
        vec![
            vector("client-initial"),
            vector("client-initial-with-token"),
        ],
    ];
    let gso_from = cases.len();
    for parts in &gso {
        cases.push(Case::whole(parts.concat()));
    }
    // Cut by the capture in its second segment: the rest is flagged as cut, not malformed.
    let cut_gso = vector("data-phase-0").repeat(3);
    cases.push(Case {
        kept: 36 + 10,
        bytes: cut_gso,
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("cases.pcap");
    write_pcap(&pcap, &cases);
    let fields = [
        "frame.number",
        "chirp.type",
        "chirp.dcid",
        "chirp.scid",
        "chirp.pn",
        "chirp.token_len",
        "chirp.token",
        "chirp.refuse_reason",
        "chirp.reset_token",
        "chirp.initial_dcid",
        "chirp.authentic",
        "chirp.frame",
        "chirp.malformed",
        "chirp.cut",
        "chirp.bad_frame",
        "chirp.gso.segments",
        "_ws.expert.message",
    ];
    let rows = tshark(&pcap, &[], None, &fields);
    assert_eq!(rows.len(), cases.len(), "one row per datagram");

    for (parts, row) in gso.iter().zip(&rows[gso_from..]) {
        let decoded: Vec<Packet<'_>> = parts
            .iter()
            .map(|p| Packet::new_checked(p).expect("a vector"))
            .collect();
        let list = |f: fn(&Packet<'_>) -> Option<String>| -> String {
            decoded.iter().filter_map(f).collect::<Vec<_>>().join(",")
        };
        assert_eq!(
            num(row, "chirp.gso.segments"),
            Some(parts.len() as u64),
            "{row:?}"
        );
        assert_eq!(
            field(row, "chirp.type"),
            list(|p| Some(format!("{:#04x}", p.header.ty.to_byte()))),
            "{row:?}"
        );
        assert_eq!(
            field(row, "chirp.dcid"),
            list(|p| (p.header.ty != PacketType::Reset)
                .then(|| format!("{:#018x}", p.header.dst_cid.0))),
            "{row:?}"
        );
        assert_eq!(field(row, "chirp.malformed"), "", "{row:?}");
    }
    let cut_row = &rows[gso_from + gso.len()];
    assert_eq!(num(cut_row, "chirp.gso.segments"), Some(3), "{cut_row:?}");
    assert_eq!(field(cut_row, "chirp.malformed"), "", "{cut_row:?}");
    assert!(field(cut_row, "chirp.cut").starts_with('1'), "{cut_row:?}");

    let (mut rejected, mut opened, mut cut, mut bad_frames) = (0, 0, 0, 0);
    for (i, (case, row)) in cases[..gso_from].iter().zip(&rows).enumerate() {
        assert_eq!(
            field(row, "chirp.gso.segments"),
            "",
            "split by mistake: {row:?}"
        );
        assert_eq!(num(row, "frame.number"), Some(i as u64 + 1));
        let what = format!(
            "datagram {} ({} of {} bytes kept): {}\n{row:?}",
            i + 1,
            case.kept,
            case.bytes.len(),
            hex(&case.bytes[..case.bytes.len().min(64)])
        );
        let decoded = Packet::new_checked(&case.bytes);
        let malformed = field(row, "chirp.malformed") == "1";
        assert!(
            !field(row, "_ws.expert.message").contains("dissector error"),
            "{what}"
        );
        if case.kept < case.bytes.len() {
            cut += 1;
            if decoded.is_ok() {
                assert!(
                    !malformed,
                    "a sound datagram cut by the capture is malformed: {what}"
                );
                assert_eq!(field(row, "chirp.cut"), "1", "not flagged as cut: {what}");
            } else if malformed {
                rejected += 1;
            }
            continue;
        }
        assert_eq!(field(row, "chirp.cut"), "", "{what}");
        let p = match decoded {
            Err(e) => {
                assert!(
                    malformed,
                    "the decoder rejects it ({e}), the dissector does not: {what}"
                );
                rejected += 1;
                continue;
            }
            Ok(p) => p,
        };
        assert!(
            !malformed,
            "the decoder accepts it, the dissector does not: {what}"
        );
        let h = p.header;
        assert_eq!(
            num(row, "chirp.type"),
            Some(u64::from(h.ty.to_byte())),
            "{what}"
        );
        if h.ty == PacketType::Reset {
            assert_eq!(field(row, "chirp.reset_token"), hex(p.token), "{what}");
            continue;
        }
        assert_eq!(num(row, "chirp.dcid"), Some(h.dst_cid.0), "{what}");
        assert_eq!(num(row, "chirp.scid"), h.src_cid.map(|c| c.0), "{what}");
        let tag_only = matches!(h.ty, PacketType::Retry | PacketType::Refuse);
        assert_eq!(
            num(row, "chirp.pn"),
            (!tag_only).then_some(h.number),
            "{what}"
        );
        if matches!(h.ty, PacketType::Initial | PacketType::Retry) {
            assert_eq!(
                num(row, "chirp.token_len"),
                Some(p.token.len() as u64),
                "{what}"
            );
            assert_eq!(field(row, "chirp.token"), hex(p.token), "{what}");
        }
        assert_eq!(
            num(row, "chirp.refuse_reason"),
            p.refuse_reason().map(RefuseReason::code),
            "{what}"
        );
        // Long headers whose attempt the dissector knows: authentic exactly when the key of
        // that attempt opens the packet, and then the same frames.
        let Some(r) = num(row, "chirp.initial_dcid") else {
            continue;
        };
        let keys = InitialKeys::new(r);
        let key = match h.ty {
            PacketType::Initial | PacketType::Handshake => &keys.client,
            PacketType::Accept => &keys.server,
            PacketType::Retry => &keys.retry,
            PacketType::Refuse => &keys.refuse,
            other => panic!("{other:?} has no public key: {what}"),
        };
        match p.open(key) {
            Ok(plain) => {
                opened += 1;
                assert_eq!(field(row, "chirp.authentic"), "1", "{what}");
                let (types, bad) = frame_types(&plain);
                assert_eq!(field(row, "chirp.frame"), types, "{what}");
                assert_eq!(field(row, "chirp.bad_frame") == "1", bad, "{what}");
                bad_frames += usize::from(bad);
            }
            Err(_) => assert_eq!(field(row, "chirp.authentic"), "0", "{what}"),
        }
    }
    // The vectors themselves: every long header opened (the ACCEPT and HANDSHAKE with the keys
    // of the INITIAL before them), DATA never.
    for (i, (name, v)) in vectors.iter().enumerate() {
        let ty = PacketType::to_byte(Packet::new_checked(v).expect("vector").header.ty);
        let authentic = field(&rows[i], "chirp.authentic");
        let long = matches!(u64::from(ty), INITIAL | HANDSHAKE | RETRY | ACCEPT | REFUSE);
        assert_eq!(
            authentic,
            if long { "1" } else { "" },
            "vector {name}: {:?}",
            rows[i]
        );
    }
    eprintln!(
        "{} datagrams: {rejected} rejected by both, {opened} long headers opened by both \
         ({bad_frames} with a bad frame), {cut} cut by the capture",
        cases.len()
    );
    assert!(
        rejected > 1000 && opened >= 10 && bad_frames >= 2 && cut > 50,
        "too few cases of a kind"
    );
}
