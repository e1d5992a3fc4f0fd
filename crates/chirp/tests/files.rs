//! File transfer between two real `chirp peer` processes (issue 18): `/send`, `/accept`,
//! `/decline`, read back as `--json` events, with the received file compared byte for byte.
//!
//! Every test uses free ports, fresh directories and bounded waits, and kills its children on
//! every path (`common::Proc`).

#![allow(clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    CHIRP, Chirp, Proc, Stdout, fingerprint, free_ports, lo, noise, peer_home, retry_bind,
};

/// Bound on one transfer of the tests' sizes (seconds on loopback; generous for a loaded CI).
const TRANSFER: Duration = Duration::from_secs(120);
/// Bound on a single step (an offer arriving, a refusal).
const STEP: Duration = Duration::from_secs(20);

/// The partial file's name for `name` of the offer `offer`: `NAME.HHHHHHHHHHHHHHHH.part`,
/// the first 16 hex digits of its root hash.
fn part_name(name: &str, offer: &serde_json::Value) -> String {
    let hash = offer["hash"].as_str().expect("hash");
    format!("{name}.{}.part", &hash[..16])
}

/// A fresh directory for one test's files.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

/// Two peers A (sender) and B (receiver, saving into `downloads`), on fresh ports, directly.
fn pair(downloads: &Path, b_extra: &[&str]) -> (Chirp, Chirp) {
    retry_bind(|| {
        let [pa, pb] = free_ports();
        let dl = arg(downloads);
        let mut b_args = vec!["--downloads", dl.as_str()];
        b_args.extend_from_slice(b_extra);
        let mut a = Chirp::spawn_peer("A", lo(pa), lo(pb), &[]);
        let mut b = Chirp::spawn_peer("B", lo(pb), lo(pa), &b_args);
        a.started()?;
        b.started()?;
        Ok((a, b))
    })
}

/// Waits for the `file_done` of the transfer in `direction`; panics on its `file_failed`.
fn done(c: &mut Chirp, direction: &str, timeout: Duration) -> serde_json::Value {
    let v = c.wait_for("file_done or file_failed", timeout, |v| {
        (v["type"] == "file_done" || v["type"] == "file_failed") && v["direction"] == direction
    });
    assert_eq!(v["type"], "file_done", "{v}\n{}", c.diag());
    v
}

/// Waits for the `file_failed` of the transfer in `direction`.
fn failed(c: &mut Chirp, direction: &str, timeout: Duration) -> serde_json::Value {
    let v = c.wait_for("file_done or file_failed", timeout, |v| {
        (v["type"] == "file_done" || v["type"] == "file_failed") && v["direction"] == direction
    });
    assert_eq!(v["type"], "file_failed", "{v}\n{}", c.diag());
    v
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Peers A and B (B saving into `downloads`) through `chirp impair` with `impair_args` besides
/// its addresses, both started; and A's key fingerprint.
fn peers_through_impair(downloads: &Path, impair_args: &[&str]) -> (Proc, Chirp, Chirp, String) {
    retry_bind(|| {
        let [pa, pb, pl, pv] = free_ports();
        let mut impair: Vec<String> = [
            "impair",
            "--listen",
            &lo(pl).to_string(),
            "--to",
            &lo(pb).to_string(),
            "--client",
            &lo(pa).to_string(),
            "--via",
            &lo(pv).to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        impair.extend(impair_args.iter().map(|s| (*s).to_owned()));
        let a_key = fingerprint(&peer_home("A", lo(pa)));
        let proxy = Proc::spawn("impair", CHIRP, &impair, Stdout::Lines);
        let dl = arg(downloads);
        let mut a = Chirp::spawn_peer("A", lo(pa), lo(pl), &[]);
        let mut b = Chirp::spawn_peer("B", lo(pb), lo(pv), &["--downloads", &dl]);
        a.started()?;
        b.started()?;
        Ok((proxy, a, b, a_key))
    })
}

/// 20 MB through `chirp impair` at 5 % loss: accepted with `/accept`, saved byte for byte,
/// the same hash on both sides as in the offer, no `.part` left.
#[test]
fn twenty_megabytes_through_five_percent_loss_arrive_verified() {
    let dir = scratch();
    let downloads = dir.path().join("dl");
    let src = dir.path().join("big.bin");
    let data = noise(20_000_000, 1);
    std::fs::write(&src, &data).expect("write source");
    let (_proxy, mut a, mut b, _) =
        peers_through_impair(&downloads, &["--loss", "0.05", "--seed", "18"]);
    a.wait_type("peer_up", STEP);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let offered = a.wait_type("file_offer", STEP);
    let offer = b.wait_type("file_offer", STEP);
    assert_eq!(offer["name"], "big.bin", "{}", b.diag());
    assert_eq!(offer["size"], 20_000_000);
    assert_eq!(offer["auto"], false);
    assert_eq!(offer["hash"], offered["hash"]);
    // Nothing is written before the user accepts.
    assert!(names_in(&downloads).is_empty());
    b.line(&format!("/accept {}", offer["id"]));
    let got = done(&mut b, "receive", TRANSFER);
    let sent = done(&mut a, "send", TRANSFER);
    assert_eq!(got["hash"], offered["hash"], "{}", b.diag());
    assert_eq!(sent["hash"], offered["hash"]);
    assert_eq!(got["name"], "big.bin");
    assert!(
        std::fs::read(downloads.join("big.bin")).expect("saved") == data,
        "the saved file differs from the source"
    );
    assert_eq!(names_in(&downloads), ["big.bin"], "no .part left");
    // Progress was reported, and not too often (at most every 250 ms per transfer).
    let progress = b.seen_of("file_progress");
    assert!(!progress.is_empty(), "{}", b.diag());
    assert!(
        progress.iter().all(|p| p["total"] == 20_000_000),
        "{}",
        b.diag()
    );
}

/// The receiver is killed (SIGKILL) mid-transfer and started again on its port with its
/// identity: the sender offers the file again, the new receiver (trusting the sender's key)
/// checks its `.part` against the chunk-hash list and receives only the rest.
#[test]
fn a_killed_receiver_restarts_and_resumes_without_starting_over() {
    let dir = scratch();
    let downloads = dir.path().join("dl");
    let src = dir.path().join("video.mkv");
    let size = 30_000_000;
    let data = noise(size, 2);
    std::fs::write(&src, &data).expect("write source");
    let dl = arg(&downloads);
    let (mut a, mut b, pb, pa) = retry_bind(|| {
        let [pa, pb] = free_ports();
        // B trusts A's key: the restarted B accepts the renewed offer without a human.
        let a_key = fingerprint(&peer_home("A", lo(pa)));
        let mut a = Chirp::spawn_peer("A", lo(pa), lo(pb), &[]);
        let b_args = ["--downloads", dl.as_str(), "--auto-accept-from", &a_key];
        let mut b = Chirp::spawn_peer("B", lo(pb), lo(pa), &b_args);
        a.started()?;
        b.started()?;
        Ok((a, b, pb, pa))
    });
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let offer = b.wait_type("file_offer", STEP);
    assert_eq!(offer["auto"], true, "{}", b.diag());
    // Some of it has arrived (and been written: progress follows the write).
    b.wait_for("some progress", TRANSFER, |v| {
        v["type"] == "file_progress" && v["bytes"].as_u64().is_some_and(|n| n > 0)
    });
    b.proc.kill();
    let part = downloads.join(part_name("video.mkv", &offer));
    let part_len = std::fs::metadata(&part).expect("a .part is left").len();
    assert!(part_len > 0 && part_len < size as u64, "{part_len}");
    assert!(!downloads.join("video.mkv").exists());

    let a_key = fingerprint(&peer_home("A", lo(pa)));
    let b_args = ["--downloads", dl.as_str(), "--auto-accept-from", &a_key];
    let mut b2 = Chirp::peer("B", lo(pb), lo(pa), &b_args).expect("B restarts on its port");
    let offer2 = b2.wait_type("file_offer", TRANSFER);
    assert_eq!(offer2["hash"], offer["hash"], "{}", b2.diag());
    let got = done(&mut b2, "receive", TRANSFER);
    done(&mut a, "send", TRANSFER);
    let (moved, resumed) = (
        got["moved"].as_u64().expect("moved"),
        got["resumed"].as_u64().expect("resumed"),
    );
    // It did not start over: what the .part held was checked and kept.
    assert!(resumed > 0, "{got}");
    assert!(moved < size as u64, "{got}");
    assert_eq!(moved + resumed, size as u64, "{got}");
    assert_eq!(got["hash"], offer["hash"]);
    assert!(
        std::fs::read(downloads.join("video.mkv")).expect("saved") == data,
        "the saved file differs from the source"
    );
    assert_eq!(names_in(&downloads), ["video.mkv"]);
}

/// `/decline`: the sender hears why, and nothing is written.
#[test]
fn a_declined_offer_writes_nothing_and_tells_the_sender() {
    let dir = scratch();
    let downloads = dir.path().join("dl");
    let src = dir.path().join("notes.txt");
    std::fs::write(&src, b"private notes").expect("write");
    let (mut a, mut b) = pair(&downloads, &[]);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let offer = b.wait_type("file_offer", STEP);
    b.line("/decline");
    let f = failed(&mut a, "send", STEP);
    assert!(
        f["reason"].as_str().is_some_and(|r| r.contains("declined")),
        "{f}"
    );
    let f = failed(&mut b, "receive", STEP);
    assert_eq!(f["id"], offer["id"]);
    assert!(
        names_in(&downloads).is_empty(),
        "{:?}",
        names_in(&downloads)
    );
    // Nothing is left to accept.
    b.line("/accept");
    let e = b.wait_type("error", STEP);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no file offer")),
        "{e}"
    );
}

/// A name that exists in the download directory is never overwritten: `report (1).txt`.
#[test]
fn an_existing_name_gets_a_suffix_and_is_never_overwritten() {
    let dir = scratch();
    let downloads = dir.path().join("dl");
    std::fs::create_dir_all(&downloads).expect("mkdir");
    std::fs::write(downloads.join("report.txt"), b"mine, not the peer's").expect("write");
    let src = dir.path().join("report.txt");
    let data = noise(100_000, 3);
    std::fs::write(&src, &data).expect("write");
    let (mut a, mut b) = pair(&downloads, &[]);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    b.wait_type("file_offer", STEP);
    b.line("/accept");
    let got = done(&mut b, "receive", TRANSFER);
    assert_eq!(got["name"], "report (1).txt");
    assert_eq!(
        std::fs::read(downloads.join("report.txt")).expect("read"),
        b"mine, not the peer's"
    );
    assert!(std::fs::read(downloads.join("report (1).txt")).expect("read") == data);
}

/// A hostile name (escape sequences, a bell, a bidi override, leading dots) is neutralised
/// before it is used or shown: saved inside the download directory under a clean name.
#[test]
fn a_hostile_name_is_neutralised() {
    let dir = scratch();
    let downloads = dir.path().join("dl");
    let hostile = "..\u{1b}]0;pwned\u{7}\u{202e}txt.exe";
    let src = dir.path().join(hostile);
    std::fs::write(&src, b"payload").expect("write");
    let (mut a, mut b) = pair(&downloads, &[]);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let offer = b.wait_type("file_offer", STEP);
    assert_eq!(offer["name"], "]0;pwnedtxt.exe", "{}", b.diag());
    b.line("/accept");
    let got = done(&mut b, "receive", TRANSFER);
    assert_eq!(got["name"], "]0;pwnedtxt.exe");
    assert_eq!(names_in(&downloads), ["]0;pwnedtxt.exe"]);
    assert_eq!(
        std::fs::read(downloads.join("]0;pwnedtxt.exe")).expect("read"),
        b"payload"
    );
}

/// A tmpfs mounted for one test, unmounted (and its directory removed) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A download directory on a 1 MiB tmpfs, and a 3 MB file: a clear `file_failed` naming the
/// write error on both sides, and no finished file.
#[test]
fn a_full_disk_fails_clearly_and_leaves_no_done_file() {
    let dir = scratch();
    let downloads = dir.path().join("small");
    let mounted = match Tmpfs::mount(&downloads, "1m") {
        Ok(m) => Some(m),
        Err(e) => {
            let how = format!("run as root with tmpfs available ({e})");
            if !chirp_testsvc::require_with("a 1 MiB tmpfs (mount -t tmpfs)", false, &how) {
                return;
            }
            None
        }
    };
    let src = dir.path().join("too-big.bin");
    std::fs::write(&src, noise(3_000_000, 4)).expect("write");
    let (mut a, mut b) = pair(&downloads, &[]);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let offer = b.wait_type("file_offer", STEP);
    b.line("/accept");
    let f = failed(&mut b, "receive", TRANSFER);
    let reason = f["reason"].as_str().unwrap_or_default().to_owned();
    let part = part_name("too-big.bin", &offer);
    assert!(
        reason.starts_with(&format!("cannot write {part}: ")) && reason.contains("No space"),
        "{reason}"
    );
    let f = failed(&mut a, "send", TRANSFER);
    assert!(
        f["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot save")),
        "{f}"
    );
    assert!(b.seen_of("file_done").is_empty(), "{}", b.diag());
    assert!(!downloads.join("too-big.bin").exists());
    drop(a);
    drop(b);
    drop(mounted);
}

/// The root hash of `data` as an offer announces it (BLAKE3 of the chunks' BLAKE3 hashes),
/// computed here independently of the processes, for files of the default chunk size.
fn root_hash(data: &[u8]) -> String {
    let chunk = chirp_files::DEFAULT_CHUNK_SIZE as usize;
    let hashes: Vec<chirp_files::Hash> = data
        .chunks(chunk)
        .map(chirp_files::wire::chunk_hash)
        .collect();
    chirp_files::hash_hex(&chirp_files::wire::root_hash(&hashes))
}

/// `chirp peer --via SERVER --to NICK`, on loopback, as `nick` asking for `to`, saving into
/// `downloads`.
fn via_peer(
    nick: &str,
    to: &str,
    server: &common::Server,
    home: &Path,
    downloads: &Path,
) -> Result<Chirp, String> {
    let [port] = free_ports();
    let bind = lo(port);
    let args: Vec<String> = [
        "peer",
        "--json",
        "--bind",
        &bind.to_string(),
        "--via",
        &server.addr.to_string(),
        "--server-key",
        &server.fingerprint,
        "--nick",
        nick,
        "--to",
        to,
        "--home",
        &arg(home),
        "--downloads",
        &arg(downloads),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut c = Chirp {
        proc: Proc::spawn(nick, CHIRP, &args, Stdout::Lines),
        addr: bind,
        seen: Vec::new(),
    };
    c.started()?;
    Ok(c)
}

/// `chirp peer --via`: a real `chirp serve` introduces two peers on loopback, and `/send`,
/// `/accept` work as in direct peer mode: the file arrives byte for byte, and its hash,
/// computed here, is the one offered and reported done on both sides.
#[test]
fn a_file_goes_through_peer_mode_via_a_server() {
    let dir = scratch();
    let server = common::Server::start(&dir.path().join("server"), "127.0.0.1:0", &[]);
    let downloads = dir.path().join("dl");
    let src = dir.path().join("photo.jpg");
    let data = noise(3_000_000, 5);
    std::fs::write(&src, &data).expect("write source");
    let (mut a, mut b) = retry_bind(|| {
        let a = via_peer(
            "alice",
            "bob",
            &server,
            &dir.path().join("alice"),
            &dir.path().join("alice-dl"),
        )?;
        let b = via_peer("bob", "alice", &server, &dir.path().join("bob"), &downloads)?;
        Ok((a, b))
    });
    a.wait_type("peer_up", STEP);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let offered = a.wait_type("file_offer", STEP);
    let offer = b.wait_type("file_offer", STEP);
    assert_eq!(offer["name"], "photo.jpg", "{}", b.diag());
    assert_eq!(offer["size"], 3_000_000);
    assert_eq!(offer["hash"], root_hash(&data), "{}", b.diag());
    assert_eq!(offered["hash"], offer["hash"]);
    b.line(&format!("/accept {}", offer["id"]));
    let got = done(&mut b, "receive", TRANSFER);
    let sent = done(&mut a, "send", TRANSFER);
    assert_eq!(got["hash"], offer["hash"], "{}", b.diag());
    assert_eq!(sent["hash"], offer["hash"], "{}", a.diag());
    let saved = std::fs::read(downloads.join("photo.jpg")).expect("saved");
    assert_eq!(root_hash(&saved), root_hash(&data));
    assert!(saved == data, "the saved file differs from the source");
    assert_eq!(names_in(&downloads), ["photo.jpg"], "no .part left");
}

/// Offering a large file (1 GiB, sparse) means reading and hashing all of it, which the peer
/// loop leaves to the blocking pool: lines typed right after `/send` arrive at the peer before
/// the offer does (the offer waits for the hash; with the hash on the loop's task, it went out
/// first and the lines only after it). Checked by the order of the receiver's events, not by
/// timing.
#[test]
fn chat_lines_typed_during_the_hash_of_a_large_offer_arrive_before_it() {
    const LINES: usize = 10;
    const SIZE: u64 = 1 << 30;
    let dir = scratch();
    let downloads = dir.path().join("dl");
    let src = dir.path().join("huge.img");
    std::fs::File::create(&src)
        .and_then(|f| f.set_len(SIZE))
        .expect("a sparse source");
    let (mut a, mut b) = pair(&downloads, &[]);
    a.wait_type("peer_up", STEP);
    b.wait_type("peer_up", STEP);
    // One write: the `/send` and the lines reach the loop together.
    let mut typed = format!("/send {}\n", arg(&src));
    for i in 0..LINES {
        typed.push_str(&format!("line {i} during the hash\n"));
    }
    a.proc.write(typed.as_bytes());
    let offer = b.wait_type("file_offer", TRANSFER);
    assert_eq!(offer["size"], SIZE, "{}", b.diag());
    let texts: Vec<&str> = b
        .seen_of("message")
        .iter()
        .filter_map(|v| v["text"].as_str())
        .collect();
    let want: Vec<String> = (0..LINES)
        .map(|i| format!("line {i} during the hash"))
        .collect();
    assert_eq!(
        texts,
        want,
        "every line typed after /send arrives before the offer\n{}",
        b.diag()
    );
    // The sender said it offers the file only once it was hashed: after its lines went.
    a.wait_type("file_offer", STEP);
}

/// `/cancel` by the sender mid-transfer (a 2 Mbit/s path through `chirp impair`, so that the
/// file is really under way; the offer, not trusted, names the sender's key): both sides say `file_failed` (the sender `cancelled`, the
/// receiver `cancelled by the sender: cancelled`), and the receiver deletes its `.part`
/// rather than keep it for a resume that will not come: no file is left at all.
#[test]
fn the_sender_cancels_mid_transfer_and_no_part_remains() {
    let dir = scratch();
    let downloads = dir.path().join("dl");
    let src = dir.path().join("slow.bin");
    // 32 s at 2 Mbit/s: cancelled long before the end.
    std::fs::write(&src, noise(8_000_000, 5)).expect("write source");
    let (_proxy, mut a, mut b, a_key) = peers_through_impair(&downloads, &["--rate", "2mbit"]);
    b.wait_type("peer_up", STEP);
    a.line(&format!("/send {}", arg(&src)));
    let sending = a.wait_type("file_offer", STEP);
    let offer = b.wait_type("file_offer", STEP);
    // Not trusted: the offer names the sender's key, so that the user can decide.
    assert_eq!(offer["auto"], false);
    assert_eq!(offer["key"], a_key.as_str(), "{offer}");
    b.line(&format!("/accept {}", offer["id"]));
    b.wait_for("some progress", STEP, |v| {
        v["type"] == "file_progress" && v["bytes"].as_u64().is_some_and(|n| n > 0)
    });
    let part = downloads.join(part_name("slow.bin", &offer));
    assert!(part.exists(), "{:?}", names_in(&downloads));

    a.line("/cancel");
    let f = failed(&mut a, "send", STEP);
    assert_eq!(f["id"], sending["id"]);
    assert_eq!(f["reason"], "cancelled", "{f}");
    let f = failed(&mut b, "receive", STEP);
    assert_eq!(f["id"], offer["id"]);
    assert_eq!(f["reason"], "cancelled by the sender: cancelled", "{f}");
    assert!(
        names_in(&downloads).is_empty(),
        "neither the file nor its .part: {:?}",
        names_in(&downloads)
    );
    // Nothing is left to cancel.
    a.line("/cancel");
    let e = a.wait_type("error", STEP);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no file is being sent")),
        "{e}"
    );
}
