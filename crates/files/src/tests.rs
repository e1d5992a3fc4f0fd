//! Unit tests of [`Transfers`]: two of them, each on a [`MemStorage`], with messages carried
//! between them by hand (and dropped, corrupted or cut where a test says so).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::{self, Msg};
use crate::{Config, Direction, FileEvent, MemStorage, Transfers};

const CHUNK: u32 = 1024;

struct Pair {
    a: Transfers<MemStorage>,
    b: Transfers<MemStorage>,
    now: Instant,
}

fn config(auto: bool) -> Config {
    Config {
        chunk_size: CHUNK,
        auto_accept: auto,
    }
}

/// Deterministic file contents.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// The partial file's name for `data` saved as `name` (its root hash with [`CHUNK`]).
fn part(name: &str, data: &[u8]) -> String {
    let hashes: Vec<_> = data.chunks(CHUNK as usize).map(wire::chunk_hash).collect();
    crate::name::part_name(name, &wire::root_hash(&hashes))
}

impl Pair {
    fn new(b_auto: bool) -> Self {
        Self {
            a: Transfers::new(config(false), MemStorage::default()),
            b: Transfers::new(config(b_auto), MemStorage::default()),
            now: Instant::now(),
        }
    }

    /// A's file `name` with `data`, offered to B.
    fn send(&mut self, name: &str, data: Vec<u8>) -> u64 {
        // A directory per file: two files of the same name are two sources.
        let n = self.a.storage().sources.len();
        let path = PathBuf::from(format!("/home/a/{n}/{name}"));
        self.a.storage_mut().sources.insert(path.clone(), data);
        self.a.send_file(&path).expect("send_file")
    }

    /// Carries messages both ways until neither side has any (bounded), passing each of A's
    /// through `filter` (which may change or drop it).
    fn drive_with(&mut self, mut filter: impl FnMut(Msg) -> Option<Msg>) {
        for _ in 0..100_000 {
            self.now += Duration::from_millis(1);
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, true) {
                moved = true;
                let msg = Msg::decode(&t.data).expect("A sends valid messages");
                if let Some(m) = filter(msg) {
                    self.b.handle_message(self.now, &m.encode());
                }
            }
            while let Some(t) = self.b.poll_transmit(self.now, true) {
                moved = true;
                self.a.handle_message(self.now, &t.data);
            }
            if !moved {
                return;
            }
        }
        panic!("the transfer never went idle");
    }

    fn drive(&mut self) {
        self.drive_with(Some);
    }

    fn events<S: crate::Storage>(t: &mut Transfers<S>) -> Vec<FileEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }
}

fn done_of(events: &[FileEvent]) -> Option<(String, u64, u64)> {
    events.iter().find_map(|e| match e {
        FileEvent::Done {
            name,
            moved,
            resumed,
            ..
        } => Some((name.clone(), *moved, *resumed)),
        _ => None,
    })
}

fn failed_of(events: &[FileEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        FileEvent::Failed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn offer_accept_transfer_and_hash() {
    let mut p = Pair::new(false);
    let data = content(10_000, 1);
    p.b.set_peer_key(Some("abcd-efgh".into()));
    let id = p.send("report.pdf", data.clone());
    p.drive();
    let ev = Pair::events(&mut p.b);
    let Some(FileEvent::Offered {
        id: offered,
        name,
        size,
        hash,
        auto,
        key,
    }) = ev.first().cloned()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (offered, name.as_str(), size, auto, key.as_deref()),
        (id, "report.pdf", 10_000, false, Some("abcd-efgh"))
    );
    let hashes: Vec<_> = data.chunks(CHUNK as usize).map(wire::chunk_hash).collect();
    assert_eq!(hash, wire::root_hash(&hashes));
    // Nothing is written before the user accepts.
    assert!(p.b.storage().files.is_empty());
    assert_eq!(p.b.accept(None), Ok(id));
    p.drive();
    let ev = Pair::events(&mut p.b);
    assert_eq!(done_of(&ev), Some(("report.pdf".into(), 10_000, 0)));
    assert_eq!(p.b.storage().files.get("report.pdf"), Some(&data));
    assert!(!p.b.storage().files.contains_key(&part("report.pdf", &data)));
    let ev = Pair::events(&mut p.a);
    assert!(matches!(ev[0], FileEvent::Offering { .. }), "{ev:?}");
    assert!(
        ev.iter().any(|e| matches!(
            e,
            FileEvent::Done {
                direction: Direction::Send,
                ..
            }
        )),
        "{ev:?}"
    );
    assert!(!p.a.busy() && !p.b.busy());
}

#[test]
fn decline_tells_the_sender_and_writes_nothing() {
    let mut p = Pair::new(false);
    let id = p.send("x.bin", content(3000, 2));
    p.drive();
    Pair::events(&mut p.b);
    assert_eq!(p.b.decline(Some(id)), Ok(id));
    p.drive();
    let reason = failed_of(&Pair::events(&mut p.a)).expect("the sender hears of it");
    assert!(reason.contains("declined"), "{reason}");
    assert!(p.b.storage().files.is_empty());
    assert!(p.b.accept(Some(id)).is_err(), "a declined offer is gone");
    assert!(p.b.accept(None).is_err());
}

#[test]
fn auto_accept_and_empty_file() {
    let mut p = Pair::new(true);
    p.send("empty", Vec::new());
    p.drive();
    let ev = Pair::events(&mut p.b);
    assert!(
        matches!(ev[0], FileEvent::Offered { auto: true, .. }),
        "{ev:?}"
    );
    assert_eq!(done_of(&ev), Some(("empty".into(), 0, 0)));
    assert_eq!(p.b.storage().files.get("empty"), Some(&Vec::new()));
}

#[test]
fn hostile_names_are_stripped_and_existing_names_kept() {
    let mut p = Pair::new(true);
    p.b.storage_mut()
        .files
        .insert("passwd".into(), b"the user's own file".to_vec());
    p.send("x", content(10, 3));
    // The sender's name is hostile: rewrite the offer on the way.
    p.drive_with(|m| match m {
        Msg::Offer {
            id,
            size,
            chunk_size,
            root,
            ..
        } => Some(Msg::Offer {
            id,
            size,
            chunk_size,
            root,
            name: b"../../etc/\x1b[31mpasswd".to_vec(),
        }),
        other => Some(other),
    });
    let ev = Pair::events(&mut p.b);
    assert_eq!(done_of(&ev).map(|d| d.0), Some("[31mpasswd".into()));
    // A plain `passwd` now, twice: suffixed, never overwritten.
    let mut p = Pair::new(true);
    p.b.storage_mut()
        .files
        .insert("passwd".into(), b"mine".to_vec());
    p.send("passwd", content(10, 4));
    p.send("passwd", content(20, 5));
    p.drive();
    let ev = Pair::events(&mut p.b);
    let names: Vec<String> = ev
        .iter()
        .cloned()
        .filter_map(|e| match e {
            FileEvent::Done { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["passwd (1)", "passwd (2)"], "{ev:?}");
    assert_eq!(p.b.storage().files["passwd"], b"mine");
    assert_eq!(p.b.storage().files["passwd (1)"], content(10, 4));
    assert_eq!(p.b.storage().files["passwd (2)"], content(20, 5));
}

#[test]
fn a_bad_chunk_fails_and_is_never_written_or_done() {
    let mut p = Pair::new(true);
    p.send("f", content(5000, 6));
    p.drive_with(|m| match m {
        Msg::Chunk { id, index: 2, data } => {
            let mut d = data.to_vec();
            d[7] ^= 1;
            Some(Msg::Chunk {
                id,
                index: 2,
                data: Bytes::from(d),
            })
        }
        other => Some(other),
    });
    let ev = Pair::events(&mut p.b);
    assert_eq!(
        failed_of(&ev).as_deref(),
        Some("chunk 2 does not match its hash")
    );
    assert!(done_of(&ev).is_none());
    assert!(!p.b.storage().files.contains_key("f"));
    // The partial file holds chunks 0 and 1 only, as received.
    let f_part = part("f", &content(5000, 6));
    assert_eq!(p.b.storage().files[&f_part], content(5000, 6)[..2048]);
    // The sender was told.
    let reason = failed_of(&Pair::events(&mut p.a)).expect("sender told");
    assert!(reason.contains("bad chunk"), "{reason}");
}

#[test]
fn a_list_that_does_not_match_the_offered_hash_fails() {
    let mut p = Pair::new(true);
    p.send("f", content(5000, 7));
    p.drive_with(|m| match m {
        Msg::Hashes {
            id,
            first,
            mut hashes,
        } => {
            hashes[1][0] ^= 1;
            Some(Msg::Hashes { id, first, hashes })
        }
        other => Some(other),
    });
    let ev = Pair::events(&mut p.b);
    assert_eq!(
        failed_of(&ev).as_deref(),
        Some("the chunk-hash list does not match the offered hash")
    );
    assert!(p.b.storage().files.is_empty(), "nothing written");
}

#[test]
fn resume_after_a_drop_keeps_verified_chunks_and_refetches_a_corrupted_one() {
    let data = content(20 * 1024 + 100, 8);
    let mut p = Pair::new(true);
    p.send("big.iso", data.clone());
    // The link drops after 12 chunks.
    let mut chunks = 0;
    p.drive_with(|m| match m {
        Msg::Chunk { .. } if chunks >= 12 => None,
        Msg::Chunk { .. } => {
            chunks += 1;
            Some(m)
        }
        other => Some(other),
    });
    let iso_part = part("big.iso", &data);
    assert_eq!(p.b.storage().files[&iso_part].len(), 12 * 1024);
    p.a.disconnected();
    p.b.disconnected();
    // While down, chunk 5 of the partial file rots on disk.
    p.b.storage_mut().files.get_mut(&iso_part).expect("part")[5 * 1024 + 3] ^= 0x40;
    p.a.connected();
    p.drive();
    let ev = Pair::events(&mut p.b);
    let (name, moved, resumed) = done_of(&ev).expect("done after the resume");
    assert_eq!(name, "big.iso");
    assert_eq!(resumed, 11 * 1024, "11 good chunks kept");
    assert_eq!(
        moved,
        data.len() as u64 - 11 * 1024,
        "only the rest was sent"
    );
    assert_eq!(p.b.storage().files["big.iso"], data);
}

#[test]
fn restart_of_the_receiver_resumes_from_the_partial_file() {
    let data = content(10 * 1024, 9);
    let mut p = Pair::new(true);
    p.send("doc", data.clone());
    let mut chunks = 0;
    p.drive_with(|m| match m {
        Msg::Chunk { .. } if chunks >= 4 => None,
        Msg::Chunk { .. } => {
            chunks += 1;
            Some(m)
        }
        other => Some(other),
    });
    // B restarts: a new state machine over the same download directory.
    let disk = std::mem::take(p.b.storage_mut());
    p.b = Transfers::new(config(true), disk);
    p.a.disconnected();
    p.a.connected();
    p.drive();
    let (name, moved, resumed) = done_of(&Pair::events(&mut p.b)).expect("done");
    assert_eq!((name.as_str(), moved, resumed), ("doc", 6 * 1024, 4 * 1024));
    assert_eq!(p.b.storage().files["doc"], data);
}

#[test]
fn a_full_disk_fails_clearly_without_a_done_file() {
    let mut p = Pair::new(true);
    p.b.storage_mut().capacity = Some(4000);
    p.send("huge", content(10_000, 10));
    p.drive();
    let ev = Pair::events(&mut p.b);
    let reason = failed_of(&ev).expect("failed");
    let huge_part = part("huge", &content(10_000, 10));
    assert!(
        reason.starts_with(&format!("cannot write {huge_part}: "))
            && reason.contains("no storage space"),
        "{reason}"
    );
    assert!(done_of(&ev).is_none());
    assert!(!p.b.storage().files.contains_key("huge"));
    let reason = failed_of(&Pair::events(&mut p.a)).expect("sender told");
    assert!(reason.contains("cannot save"), "{reason}");
}

#[test]
fn hostile_messages_are_dropped_and_bounded() {
    let mut p = Pair::new(false);
    let now = p.now;
    // Chunks, lists and answers about transfers that do not exist.
    for m in [
        Msg::Chunk {
            id: 9,
            index: 0,
            data: Bytes::from_static(b"x"),
        },
        Msg::Hashes {
            id: 9,
            first: 0,
            hashes: vec![[0; 32]],
        },
        Msg::Want {
            id: 9,
            ranges: vec![(0, 1)],
        },
        Msg::Done { id: 9 },
        Msg::Accept { id: 9 },
    ] {
        p.b.handle_message(now, &m.encode());
    }
    p.b.handle_message(now, &Bytes::from_static(&[wire::TAG, 0x42, 0]));
    assert_eq!(p.b.dropped(), 6);
    // A flood of offers: at most MAX_INCOMING are kept, the rest declined.
    for id in 0..100 {
        let m = Msg::Offer {
            id,
            size: 1 << 30,
            chunk_size: 60 * 1024,
            root: [1; 32],
            name: b"spam".to_vec(),
        };
        p.b.handle_message(now, &m.encode());
    }
    let offers = Pair::events(&mut p.b)
        .iter()
        .filter(|e| matches!(e, FileEvent::Offered { .. }))
        .count();
    assert_eq!(offers, crate::transfers::MAX_INCOMING);
    let declines = std::iter::from_fn(|| p.b.poll_transmit(now, true))
        .filter(|t| matches!(Msg::decode(&t.data), Ok(Msg::Decline { .. })))
        .count();
    assert_eq!(declines, 100 - crate::transfers::MAX_INCOMING);
    // An accepted offer whose list comes out of order fails (no panic, no write).
    let id = 3;
    assert_eq!(p.b.accept(Some(id)), Ok(id));
    let bad = Msg::Hashes {
        id,
        first: 5,
        hashes: vec![[0; 32]],
    };
    p.b.handle_message(now, &bad.encode());
    let reason = failed_of(&Pair::events(&mut p.b)).expect("failed");
    assert!(reason.contains("out of order"), "{reason}");
    assert!(p.b.storage().files.is_empty());
}

#[test]
fn oversize_files_are_refused_by_the_sender_and_the_decoder() {
    let mut t = Transfers::new(config(false), MemStorage::default());
    // A file of more than MAX_CHUNKS chunks of the largest size cannot be offered: checked
    // with a source whose length is claimed, not allocated.
    struct Huge;
    impl crate::Storage for Huge {
        fn source_len(&mut self, _: &std::path::Path) -> std::io::Result<u64> {
            Ok(wire::MAX_CHUNKS * u64::from(wire::MAX_CHUNK_SIZE) + 1)
        }
        fn read_source(
            &mut self,
            _: &std::path::Path,
            _: u64,
            _: &mut [u8],
        ) -> std::io::Result<()> {
            unreachable!("never read")
        }
        fn exists(&mut self, _: &str) -> bool {
            false
        }
        fn len(&mut self, _: &str) -> std::io::Result<Option<u64>> {
            Ok(None)
        }
        fn read(&mut self, _: &str, _: u64, _: &mut [u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn write(&mut self, _: &str, _: u64, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn finish(&mut self, _: &str, _: &str, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn close(&mut self, _: &str) {}
        fn remove(&mut self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn close_source(&mut self, _: &std::path::Path) {}
    }
    let mut huge = Transfers::new(config(false), Huge);
    let err = huge.send_file(std::path::Path::new("/x")).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    // A missing file is a clear error.
    let err = t.send_file(std::path::Path::new("/nope")).unwrap_err();
    assert!(err.to_string().starts_with("cannot read /nope"), "{err}");
}

/// Carries messages between `a` and `b` until neither has any (bounded); `before_b` runs
/// before each of A's messages is handed to B.
fn carry<A: crate::Storage, B: crate::Storage>(
    a: &mut Transfers<A>,
    b: &mut Transfers<B>,
    mut before_b: impl FnMut(&Msg),
) {
    let mut now = Instant::now();
    for _ in 0..100_000 {
        now += Duration::from_millis(1);
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, true) {
            moved = true;
            before_b(&Msg::decode(&t.data).expect("A sends valid messages"));
            b.handle_message(now, &t.data);
        }
        while let Some(t) = b.poll_transmit(now, true) {
            moved = true;
            a.handle_message(now, &t.data);
        }
        if !moved {
            return;
        }
    }
    panic!("the transfer never went idle");
}

/// A download directory in a fresh temporary directory, and a file outside it that planted
/// links point to.
fn planted() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dl = dir.path().join("dl");
    std::fs::create_dir(&dl).expect("mkdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"not yours").expect("write");
    (dir, dl, victim)
}

#[test]
fn fs_storage_never_follows_a_symlink_in_the_download_directory() {
    use crate::Storage as _;
    let (dir, dl, victim) = planted();
    std::os::unix::fs::symlink(&victim, dl.join("x.part")).expect("symlink");
    let absent = dir.path().join("created-through-a-link");
    std::os::unix::fs::symlink(&absent, dl.join("dangling.part")).expect("symlink");
    let mut fs = crate::FsStorage::new(dl.clone());
    let e = fs
        .write("x.part", 0, b"overwritten")
        .expect_err("a link is refused");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let mut buf = [0u8; 4];
    fs.read("x.part", 0, &mut buf)
        .expect_err("not read through either");
    assert!(fs.len("x.part").is_err(), "a link is not a partial file");
    fs.write("dangling.part", 0, b"x")
        .expect_err("a dangling link is refused");
    assert_eq!(std::fs::read(&victim).expect("read"), b"not yours");
    assert!(!absent.exists(), "nothing was created through the link");
    // A link (even dangling) is a name taken: never the final name of a file.
    assert!(fs.exists("dangling.part"));
    fs.write("ok.part", 0, b"data").expect("a new partial file");
    fs.finish("ok.part", "x.part", 4)
        .expect_err("the link at the final name is never replaced");
    assert_eq!(std::fs::read(&victim).expect("read"), b"not yours");
    // Deleting a partial file that is a link deletes the link, never what it points to; a
    // name that is not there is no error.
    fs.remove("x.part").expect("the link is deleted");
    assert!(!fs.exists("x.part"));
    assert_eq!(std::fs::read(&victim).expect("read"), b"not yours");
    fs.remove("x.part").expect("already gone");
}

/// Links planted at the file's name and at its partial file's name make the receiver choose
/// another name, whose partial file is its own; another transfer's partial file of the same
/// name (another hash) is left alone; the file is saved whole and nothing outside is touched.
#[test]
fn planted_links_and_other_partial_files_make_the_receiver_choose_another_name() {
    let (_dir, dl, victim) = planted();
    let data = content(10_000, 11);
    let root = wire::root_hash(
        &data
            .chunks(CHUNK as usize)
            .map(wire::chunk_hash)
            .collect::<Vec<_>>(),
    );
    std::os::unix::fs::symlink(&victim, dl.join("photo.jpg")).expect("symlink");
    let part1 = crate::name::part_name("photo (1).jpg", &root);
    std::os::unix::fs::symlink(&victim, dl.join(&part1)).expect("symlink");
    // Another file's partial file under the next name: not ours (another hash).
    let other = crate::name::part_name("photo (2).jpg", &[7; 32]);
    std::fs::write(dl.join(&other), b"someone else's transfer").expect("write");
    let mut a = Transfers::new(config(false), MemStorage::default());
    a.storage_mut()
        .sources
        .insert("/home/a/photo.jpg".into(), data.clone());
    let mut b = Transfers::new(config(true), crate::FsStorage::new(dl.clone()));
    a.send_file(std::path::Path::new("/home/a/photo.jpg"))
        .expect("send_file");
    carry(&mut a, &mut b, |_| {});
    let (name, size, _) = done_of(&Pair::events(&mut b)).expect("done");
    assert_eq!((name.as_str(), size), ("photo (2).jpg", 10_000));
    assert_eq!(
        std::fs::read(dl.join("photo (2).jpg")).expect("saved"),
        data
    );
    assert_eq!(std::fs::read(&victim).expect("read"), b"not yours");
    assert_eq!(
        std::fs::read(dl.join(&other)).expect("read"),
        b"someone else's transfer"
    );
    for link in ["photo.jpg", part1.as_str()] {
        let m = std::fs::symlink_metadata(dl.join(link)).expect("still there");
        assert!(m.file_type().is_symlink(), "{link}");
    }
}

/// A link planted at the partial file's name after the name was chosen (between the accept
/// and the first chunk) is not followed: the transfer fails, saying why, and the file it
/// points to is untouched.
#[test]
fn a_link_planted_during_the_transfer_fails_it_clearly() {
    let (_dir, dl, victim) = planted();
    let data = content(5000, 12);
    let root = wire::root_hash(
        &data
            .chunks(CHUNK as usize)
            .map(wire::chunk_hash)
            .collect::<Vec<_>>(),
    );
    let part = dl.join(crate::name::part_name("doc", &root));
    let mut a = Transfers::new(config(false), MemStorage::default());
    a.storage_mut().sources.insert("/home/a/doc".into(), data);
    let mut b = Transfers::new(config(true), crate::FsStorage::new(dl.clone()));
    a.send_file(std::path::Path::new("/home/a/doc"))
        .expect("send_file");
    let mut planted_it = false;
    carry(&mut a, &mut b, |m| {
        if matches!(m, Msg::Chunk { .. }) && !planted_it {
            planted_it = true;
            std::os::unix::fs::symlink(&victim, &part).expect("symlink");
        }
    });
    assert!(planted_it);
    let ev = Pair::events(&mut b);
    let reason = failed_of(&ev).expect("failed");
    assert!(reason.contains("symbolic link"), "{reason}");
    assert!(done_of(&ev).is_none());
    assert_eq!(std::fs::read(&victim).expect("read"), b"not yours");
    assert!(!dl.join("doc").exists());
}

/// `hash_file` announces what `send_file` then offers: the same size and root hash (a DM
/// offer through a server is checked against the peer-connection offer this way).
#[test]
fn hash_file_agrees_with_the_offer() {
    let mut t = Transfers::new(config(false), MemStorage::default());
    let path = PathBuf::from("/home/a/f.bin");
    let data = content(5 * CHUNK as usize + 17, 3);
    t.storage_mut().sources.insert(path.clone(), data.clone());
    let (size, root) = t.hash_file(&path).expect("hash_file");
    assert_eq!(size, data.len() as u64);
    t.send_file(&path).expect("send_file");
    match t.poll_event() {
        Some(FileEvent::Offering { size: s, hash, .. }) => {
            assert_eq!((s, hash), (size, root));
        }
        other => panic!("expected the offer, got {other:?}"),
    }
    // Another file hashes otherwise; a missing one is an error naming it.
    let other = PathBuf::from("/home/a/g.bin");
    let mut changed = data;
    changed[0] ^= 1;
    t.storage_mut().sources.insert(other.clone(), changed);
    assert_ne!(t.hash_file(&other).expect("hash").1, root);
    let e = t
        .hash_file(&PathBuf::from("/nowhere"))
        .expect_err("missing");
    assert!(e.to_string().contains("/nowhere"), "{e}");
}

/// Whether `events` say the file went out (the sender's [`FileEvent::Done`]).
fn sent(events: &[FileEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            FileEvent::Done {
                direction: Direction::Send,
                ..
            }
        )
    })
}

/// With `finish_outside`, the last chunk does not make the transfer done: the receiver hands
/// out one [`crate::Finish`] for the partial file and waits. Only its result makes DONE go
/// out and both sides done; the same result given twice changes nothing.
#[test]
fn a_finish_outside_is_done_only_after_its_result() {
    let data = content(7 * CHUNK as usize + 5, 21);
    let mut p = Pair::new(true);
    p.b.finish_outside();
    let id = p.send("movie.mkv", data.clone());
    p.drive();
    let ev_b = Pair::events(&mut p.b);
    assert!(
        done_of(&ev_b).is_none() && failed_of(&ev_b).is_none(),
        "{ev_b:?}"
    );
    assert!(!sent(&Pair::events(&mut p.a)), "no DONE before the save");
    // Every verified byte is in the partial file; the file itself does not exist yet.
    let movie_part = part("movie.mkv", &data);
    assert_eq!(p.b.storage().files.get(&movie_part), Some(&data));
    assert!(!p.b.storage().files.contains_key("movie.mkv"));
    assert!(p.a.busy() && p.b.busy(), "both wait for the save");
    let finish = p.b.poll_finish().expect("a finish for the driver");
    assert_eq!(p.b.poll_finish(), None, "one finish per file");
    assert_eq!(
        (
            finish.id,
            finish.part.as_str(),
            finish.name.as_str(),
            finish.size
        ),
        (id, movie_part.as_str(), "movie.mkv", data.len() as u64)
    );
    // A result for another transfer's finish that has the same job number is not this
    // one's: ignored.
    let other = crate::Finish {
        id: id + 1,
        ..finish.clone()
    };
    p.b.finished(&other, Ok("movie.mkv".into()));
    assert!(Pair::events(&mut p.b).is_empty() && p.b.busy());
    assert!(!p.b.wants_transmit(true), "no DONE for it");
    // The driver runs it (here, on the same storage) and hands the result back.
    let result = finish.run(p.b.storage_mut());
    assert_eq!(result.as_deref().ok(), Some("movie.mkv"));
    p.b.finished(&finish, result);
    p.drive();
    let ev_b = Pair::events(&mut p.b);
    assert_eq!(
        done_of(&ev_b),
        Some(("movie.mkv".into(), data.len() as u64, 0))
    );
    assert_eq!(p.b.storage().files.get("movie.mkv"), Some(&data));
    assert!(sent(&Pair::events(&mut p.a)), "DONE after the save");
    assert!(!p.a.busy() && !p.b.busy());
    // A second answer for the same finish is ignored: no second DONE, no event.
    p.b.finished(&finish, Ok("movie.mkv".into()));
    assert!(!p.b.wants_transmit(true));
    assert!(Pair::events(&mut p.b).is_empty());
}

/// While a received file is being saved, the link drops and the sender offers it again: the
/// receiver neither asks anew nor starts over (no chunk moves, the partial file is not read
/// while it is being renamed); the DONE that follows the save ends the sender's transfer.
#[test]
fn an_offer_again_while_saving_is_answered_by_done_after_the_save() {
    let data = content(4 * CHUNK as usize, 22);
    let mut p = Pair::new(true);
    p.b.finish_outside();
    p.send("a.bin", data.clone());
    p.drive();
    let finish = p.b.poll_finish().expect("a finish");
    Pair::events(&mut p.b);
    p.a.disconnected();
    p.b.disconnected();
    p.a.connected();
    let mut moved_again = 0;
    p.drive_with(|m| {
        if !matches!(m, Msg::Offer { .. }) {
            moved_again += 1;
        }
        Some(m)
    });
    assert_eq!(moved_again, 0, "only the offer went out");
    assert!(
        Pair::events(&mut p.b).is_empty(),
        "no new offer for the user"
    );
    let result = finish.run(p.b.storage_mut());
    p.b.finished(&finish, result);
    p.drive();
    assert!(done_of(&Pair::events(&mut p.b)).is_some());
    assert!(sent(&Pair::events(&mut p.a)));
    assert_eq!(p.b.storage().files.get("a.bin"), Some(&data));
    assert!(!p.a.busy() && !p.b.busy());
}

/// A save that fails (a full disk at the fsync) fails the transfer on both sides with the
/// reason, leaves no file under the name and keeps the partial file: inline and outside alike.
/// Offered again, the same file then resumes from that partial file: nothing is sent again,
/// and the save that works makes it done.
#[test]
fn a_failed_finish_fails_clearly_keeps_the_part_and_a_new_offer_resumes_from_it() {
    for outside in [false, true] {
        let data = content(6 * CHUNK as usize + 100, 23);
        let mut p = Pair::new(true);
        if outside {
            p.b.finish_outside();
        }
        p.b.storage_mut().fail_finish = Some(std::io::ErrorKind::StorageFull);
        p.send("db.sqlite", data.clone());
        p.drive();
        if outside {
            let finish = p.b.poll_finish().expect("a finish");
            let result = finish.run(p.b.storage_mut());
            assert!(result.is_err(), "{result:?}");
            p.b.finished(&finish, result);
            p.drive();
        }
        assert_eq!(p.b.poll_finish(), None);
        let ev = Pair::events(&mut p.b);
        let reason = failed_of(&ev).expect("failed");
        let db_part = part("db.sqlite", &data);
        assert_eq!(
            reason,
            format!("cannot save {db_part}: no storage space"),
            "outside: {outside}"
        );
        assert!(done_of(&ev).is_none());
        assert!(!p.b.storage().files.contains_key("db.sqlite"));
        assert_eq!(p.b.storage().files.get(&db_part), Some(&data));
        let reason = failed_of(&Pair::events(&mut p.a)).expect("the sender is told");
        assert_eq!(reason, "declined by the receiver: cannot save the file");
        assert!(!p.a.busy() && !p.b.busy());

        // Room again; the user sends the same file again.
        p.b.storage_mut().fail_finish = None;
        p.a.send_file(std::path::Path::new("/home/a/0/db.sqlite"))
            .expect("send_file");
        let mut chunks = 0;
        p.drive_with(|m| {
            chunks += u32::from(matches!(m, Msg::Chunk { .. }));
            Some(m)
        });
        if outside {
            let finish = p.b.poll_finish().expect("a finish");
            let result = finish.run(p.b.storage_mut());
            p.b.finished(&finish, result);
            p.drive();
        }
        assert_eq!(chunks, 0, "outside: {outside}: resumed, nothing sent again");
        let ev = Pair::events(&mut p.b);
        assert_eq!(
            done_of(&ev),
            Some(("db.sqlite".into(), 0, data.len() as u64)),
            "outside: {outside}: {ev:?}"
        );
        assert_eq!(p.b.storage().files.get("db.sqlite"), Some(&data));
        assert!(!p.b.storage().files.contains_key(&db_part));
    }
}

/// The name chosen on accepting appears while the file is being saved: [`crate::Finish::run`]
/// saves it under the next free name and never overwrites.
#[test]
fn a_name_that_appears_during_the_save_is_never_overwritten() {
    let data = content(3 * CHUNK as usize, 24);
    let mut p = Pair::new(true);
    p.b.finish_outside();
    p.send("notes.txt", data.clone());
    p.drive();
    let finish = p.b.poll_finish().expect("a finish");
    p.b.storage_mut()
        .files
        .insert("notes.txt".into(), b"mine".to_vec());
    let result = finish.run(p.b.storage_mut());
    p.b.finished(&finish, result);
    let (name, ..) = done_of(&Pair::events(&mut p.b)).expect("done");
    assert_eq!(name, "notes (1).txt");
    assert_eq!(p.b.storage().files["notes.txt"], b"mine");
    assert_eq!(p.b.storage().files["notes (1).txt"], data);
}

/// [`crate::FsStorage::finish`] never creates the partial file: one that is gone (saved by
/// another finish meanwhile) is an error, and no empty file appears under the name.
#[test]
fn fs_storage_finish_of_a_missing_partial_file_fails_and_creates_nothing() {
    use crate::Storage as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut disk = crate::FsStorage::new(dir.path().to_owned());
    let e = disk.finish("x.part", "x", 10).expect_err("no partial file");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(!disk.exists("x") && !disk.exists("x.part"));
    // With the partial file there, the same call saves it.
    disk.write("x.part", 0, b"0123456789abc").expect("write");
    disk.finish("x.part", "x", 10).expect("finish");
    assert_eq!(
        std::fs::read(dir.path().join("x")).expect("x"),
        b"0123456789"
    );
    assert!(!disk.exists("x.part"));
}

/// Carries messages until the link "drops" after `keep` chunks reached B (the rest are lost),
/// then takes both sides down and brings the link back (A offers again).
fn drop_after_chunks(p: &mut Pair, keep: u32) {
    let mut chunks = 0;
    p.drive_with(|m| match m {
        Msg::Chunk { .. } if chunks >= keep => None,
        Msg::Chunk { .. } => {
            chunks += 1;
            Some(m)
        }
        other => Some(other),
    });
    p.a.disconnected();
    p.b.disconnected();
    p.a.connected();
}

/// With `check_outside`, a resume hands the check of the partial file to the driver and asks
/// for nothing until its result: no WANT, so no chunk moves, while it is held. A result for a
/// check the transfer no longer waits for (the link dropped again, and a new check was handed
/// out) is ignored; the new one's result sends WANT for exactly the chunks missing.
#[test]
fn a_check_outside_holds_want_until_its_result_and_a_stale_one_is_ignored() {
    let data = content(10 * CHUNK as usize + 7, 31);
    let mut p = Pair::new(true);
    p.b.check_outside();
    p.send("vm.img", data.clone());
    // The first attempt has no partial file: nothing to check, nothing handed out.
    drop_after_chunks(&mut p, 6);
    assert_eq!(p.b.poll_check(), None);
    let mut chunks = 0;
    p.drive_with(|m| {
        chunks += u32::from(matches!(m, Msg::Chunk { .. }));
        Some(m)
    });
    let stale = p.b.poll_check().expect("a check of the partial file");
    assert_eq!(stale.part, part("vm.img", &data));
    assert_eq!(chunks, 0, "no WANT (so no chunk) before the check's result");
    assert_eq!(p.b.poll_check(), None);

    // The link drops again while it is checked: the transfer starts over with a new check.
    p.a.disconnected();
    p.b.disconnected();
    p.a.connected();
    p.drive();
    let check = p.b.poll_check().expect("a new check");
    assert_ne!(check.job, stale.job);
    let result = stale.run(p.b.storage_mut());
    p.b.checked(&stale, result);
    p.drive_with(|m| {
        chunks += u32::from(matches!(m, Msg::Chunk { .. }));
        Some(m)
    });
    assert_eq!(chunks, 0, "the stale result is ignored");
    assert!(
        Pair::events(&mut p.b)
            .iter()
            .all(|e| !matches!(e, FileEvent::Done { .. } | FileEvent::Failed { .. }))
    );

    let result = check.run(p.b.storage_mut());
    assert_eq!(
        result
            .as_ref()
            .map(|h| h.iter().filter(|&&h| h).count())
            .ok(),
        Some(6)
    );
    p.b.checked(&check, result);
    p.drive_with(|m| {
        chunks += u32::from(matches!(m, Msg::Chunk { .. }));
        Some(m)
    });
    assert_eq!(chunks, 5, "only the 5 chunks missing");
    let (name, moved, resumed) = done_of(&Pair::events(&mut p.b)).expect("done");
    assert_eq!(
        (name.as_str(), moved, resumed),
        ("vm.img", 4 * u64::from(CHUNK) + 7, 6 * u64::from(CHUNK))
    );
    assert_eq!(p.b.storage().files["vm.img"], data);
    assert!(!p.a.busy() && !p.b.busy());
}

/// A check whose partial file cannot be read (not a regular file) fails the transfer on both
/// sides with the reason.
#[test]
fn a_check_that_fails_fails_the_transfer() {
    let data = content(4 * CHUNK as usize, 32);
    let mut p = Pair::new(true);
    p.b.check_outside();
    p.send("a.bin", data);
    drop_after_chunks(&mut p, 2);
    p.drive();
    let check = p.b.poll_check().expect("a check");
    let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    p.b.checked(&check, Err(e));
    p.drive();
    let reason = failed_of(&Pair::events(&mut p.b)).expect("failed");
    assert_eq!(
        reason,
        format!("cannot read {}: not a regular file", check.part)
    );
    let reason = failed_of(&Pair::events(&mut p.a)).expect("the sender is told");
    assert_eq!(
        reason,
        "declined by the receiver: cannot read the partial file"
    );
    assert!(!p.a.busy() && !p.b.busy());
}

/// The link drops while the received file is being saved, so the DONE that follows the save
/// is queued for a link that is gone and dropped when it comes back. The sender offers the
/// file again: the receiver remembers it and answers DONE at once, with no new offer for its
/// user and no second copy; the sender's transfer is done. `/decline` of it says why not,
/// during the save and after it.
#[test]
fn a_done_lost_with_the_link_is_answered_again_without_a_second_copy() {
    let data = content(5 * CHUNK as usize + 1, 33);
    let mut p = Pair::new(true);
    p.b.finish_outside();
    let id = p.send("song.flac", data.clone());
    p.drive();
    let finish = p.b.poll_finish().expect("a finish");
    let e = p.b.decline(Some(id)).expect_err("being saved");
    assert!(
        e.contains("cannot be declined now") && e.contains("being saved"),
        "{e}"
    );
    Pair::events(&mut p.b);
    // The link is down when the save ends: its DONE goes nowhere.
    p.a.disconnected();
    p.b.disconnected();
    let result = finish.run(p.b.storage_mut());
    p.b.finished(&finish, result);
    assert!(done_of(&Pair::events(&mut p.b)).is_some());
    // Back up: the receiver's session starts the file layer over (the queued DONE is gone).
    p.b.disconnected();
    p.a.connected();
    let mut chunks = 0;
    p.drive_with(|m| {
        chunks += u32::from(matches!(m, Msg::Chunk { .. } | Msg::Hashes { .. }));
        Some(m)
    });
    assert_eq!(chunks, 0, "nothing moves again");
    assert!(sent(&Pair::events(&mut p.a)), "the sender hears DONE");
    assert!(
        Pair::events(&mut p.b).is_empty(),
        "nothing new for B's user"
    );
    let mut names: Vec<_> = p.b.storage().files.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["song.flac"], "one copy, no partial file");
    assert!(!p.a.busy() && !p.b.busy());
    let e = p.b.decline(Some(id)).expect_err("received");
    assert_eq!(
        e,
        format!("file {id} cannot be declined: it was received (saved as song.flac)")
    );
}

/// What is remembered is bounded: another file under the same id (a sender that restarted) is
/// a new offer, and so is the same file once [`crate::REMEMBER_FOR`] has passed; of many
/// files received, only the last [`crate::REMEMBER_FINISHED`] are remembered.
#[test]
fn finished_transfers_are_remembered_for_a_bounded_time_and_count() {
    let data = content(2 * CHUNK as usize, 34);
    let mut p = Pair::new(true);
    let id = p.send("a.txt", data.clone());
    p.drive();
    assert!(done_of(&Pair::events(&mut p.b)).is_some());
    let offer_again = |p: &mut Pair, data: &[u8]| {
        // A sender that restarted: ids start over, the same id for the same (or another) file.
        p.a = Transfers::new(config(false), MemStorage::default());
        let again = p.send("a.txt", data.to_vec());
        assert_eq!(again, id);
        p.drive();
    };
    // The same file: DONE at once.
    offer_again(&mut p, &data);
    assert!(sent(&Pair::events(&mut p.a)));
    assert!(Pair::events(&mut p.b).is_empty());
    // Another file under the same id: a new offer, saved beside the first.
    let other = content(2 * CHUNK as usize, 35);
    offer_again(&mut p, &other);
    let (name, ..) = done_of(&Pair::events(&mut p.b)).expect("a new file");
    assert_eq!(
        (name.as_str(), &p.b.storage().files[&name]),
        ("a (1).txt", &other)
    );
    // The first one, long after: new too.
    p.now += crate::REMEMBER_FOR;
    offer_again(&mut p, &data);
    let (name, ..) = done_of(&Pair::events(&mut p.b)).expect("new after the time");
    assert_eq!(name, "a (2).txt");

    // Count: after REMEMBER_FINISHED more files, the first is forgotten.
    let mut p = Pair::new(true);
    let first = p.send("f", content(10, 0));
    p.drive();
    let mut saved = usize::from(done_of(&Pair::events(&mut p.b)).is_some());
    for n in 1..=crate::REMEMBER_FINISHED {
        p.send(&format!("f{n}"), content(10, n as u8));
        p.drive();
        saved += usize::from(done_of(&Pair::events(&mut p.b)).is_some());
    }
    assert_eq!(saved, crate::REMEMBER_FINISHED + 1);
    assert_eq!(
        p.b.decline(Some(first)),
        Err(format!("no file offer {first}")),
        "forgotten"
    );
    let last = first + crate::REMEMBER_FINISHED as u64;
    let e = p.b.decline(Some(last)).expect_err("remembered");
    assert!(e.contains("it was received"), "{e}");
}

/// The sender cancels a file half received: the receiver ends it with the sender's reason and
/// deletes its partial file (no resume will come), a chunk still in flight is dropped and
/// never written, both sides end up idle, and the sender hears `cancelled`.
#[test]
fn the_sender_cancels_mid_transfer_and_the_receiver_deletes_its_partial_file() {
    let data = content(20 * CHUNK as usize + 5, 40);
    let mut p = Pair::new(true);
    let id = p.send("movie.mkv", data.clone());
    // Six chunks arrive; the seventh is still in flight; the rest wait.
    let (mut chunks, mut in_flight) = (0, None);
    p.drive_with(|m| match m {
        Msg::Chunk { .. } if chunks >= 6 => {
            in_flight.get_or_insert(m);
            None
        }
        Msg::Chunk { .. } => {
            chunks += 1;
            Some(m)
        }
        other => Some(other),
    });
    let movie_part = part("movie.mkv", &data);
    assert_eq!(p.b.storage().files[&movie_part].len(), 6 * CHUNK as usize);
    assert!(p.a.busy() && p.b.busy());
    Pair::events(&mut p.a);
    Pair::events(&mut p.b);

    assert_eq!(p.a.cancel(None), Ok(id), "the only file sent");
    let a = Pair::events(&mut p.a);
    assert!(
        matches!(&a[..], [FileEvent::Failed { id: i, direction: Direction::Send, reason, .. }]
            if *i == id && reason == "cancelled"),
        "{a:?}"
    );
    p.drive();
    let b = Pair::events(&mut p.b);
    assert!(
        matches!(&b[..], [FileEvent::Failed { id: i, direction: Direction::Receive, reason, .. }]
            if *i == id && reason == "cancelled by the sender: cancelled"),
        "{b:?}"
    );
    assert!(
        p.b.storage().files.is_empty(),
        "neither the partial file nor the file: {:?}",
        p.b.storage().files.keys()
    );
    // The chunk that was in flight arrives after the CANCEL: dropped, not written.
    let dropped = p.b.dropped();
    let late = in_flight.expect("a chunk was in flight");
    p.b.handle_message(p.now, &late.encode());
    assert_eq!(p.b.dropped(), dropped + 1);
    assert!(p.b.storage().files.is_empty());
    assert!(!p.a.busy() && !p.b.busy());
    assert!(p.a.cancel(Some(id)).is_err(), "cancelled already");
    // After the link drops and returns, nothing is offered again.
    p.a.disconnected();
    p.a.connected();
    assert!(p.a.poll_transmit(p.now, true).is_none());
}

/// `cancel` without an id takes the only file sent, and refuses to guess among several (it
/// names them); an offer cancelled before the answer is gone from the receiver, which never
/// wrote anything; an id we do not send is an error.
#[test]
fn cancel_chooses_only_when_one_file_is_sent_and_takes_back_an_open_offer() {
    let mut p = Pair::new(false);
    assert_eq!(p.a.cancel(None), Err("no file is being sent".to_owned()));
    let first = p.send("a.txt", content(3000, 41));
    let second = p.send("b.txt", content(3000, 42));
    p.drive();
    let err = p.a.cancel(None).expect_err("two files are sent");
    assert!(
        err.contains(&format!("{first} \"a.txt\"")) && err.contains(&format!("{second} \"b.txt\"")),
        "{err}"
    );
    assert!(p.a.cancel(Some(99)).is_err());
    Pair::events(&mut p.b);
    assert_eq!(p.a.cancel(Some(second)), Ok(second));
    p.drive();
    let b = Pair::events(&mut p.b);
    assert!(
        matches!(&b[..], [FileEvent::Failed { id, .. }] if *id == second),
        "{b:?}"
    );
    assert!(p.b.accept(Some(second)).is_err(), "the offer is gone");
    // The one left is the one `cancel` takes; the other is still open at the receiver.
    assert_eq!(p.a.cancel(None), Ok(first));
    p.drive();
    assert!(p.b.accept(None).is_err(), "no offer is left");
    assert!(p.b.storage().files.is_empty());
    assert!(!p.a.busy() && !p.b.busy());
}
