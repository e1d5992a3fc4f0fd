//! Encrypted peer mode end to end, with real processes on loopback: what a sniffer sees, key
//! pinning, and a peer whose key changed.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Chirp, WAIT, fingerprint, free_ports, lo, peer_home, retry_bind};

/// A UDP relay between the first sender it hears (A) and `b`, recording every datagram.
struct Sniffer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Sniffer {
    fn start(b: SocketAddr) -> Sniffer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut a: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            // Bounded: the test stops it, and it gives up after a minute regardless.
            let end = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                seen2.lock().expect("lock").push(buf[..n].to_vec());
                let to = if from == b {
                    a
                } else {
                    a = Some(from);
                    Some(b)
                };
                if let Some(to) = to {
                    let _ = sock.send_to(&buf[..n], to);
                }
            }
        });
        Sniffer { addr, seen, stop }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn message_text_never_appears_in_a_datagram() {
    let (mut a, mut b, sniffer) = retry_bind(|| {
        let [pa, pb] = free_ports();
        let sniffer = Sniffer::start(lo(pb));
        let a = Chirp::peer("A", lo(pa), sniffer.addr, &[])?;
        let b = Chirp::peer("B", lo(pb), sniffer.addr, &[])?;
        Ok((a, b, sniffer))
    });
    a.wait_type("peer_up", WAIT);
    b.wait_type("peer_up", WAIT);
    let text = "correct horse battery staple";
    for i in 0..20 {
        a.line(&format!("{text} {i}"));
        b.line(&format!("{text} back {i}"));
    }
    assert_eq!(b.messages(20, WAIT)[19], format!("{text} 19"));
    assert_eq!(a.messages(20, WAIT)[19], format!("{text} back 19"));
    let seen = sniffer.seen.lock().expect("lock").clone();
    assert!(
        seen.len() >= 10,
        "the relay carried the chat: {}",
        seen.len()
    );
    for d in &seen {
        assert!(
            !d.windows(b"horse".len()).any(|w| w == b"horse"),
            "plaintext on the wire: {d:02x?}"
        );
    }
}

#[test]
fn wrong_pinned_key_is_refused_with_both_fingerprints() {
    let [pa, pb] = free_ports();
    let b_home = peer_home("B", lo(pb));
    let other = peer_home("someone-else", lo(pb));
    let b_fp = fingerprint(&b_home);
    let wrong = fingerprint(&other);
    assert_ne!(b_fp, wrong);
    let mut b = Chirp::peer("B", lo(pb), lo(pa), &[]).expect("B starts");
    let mut a = Chirp::peer("A", lo(pa), lo(pb), &["--peer-key", &wrong]).expect("A starts");
    let err = a.wait_type("error", WAIT);
    let msg = err["message"].as_str().expect("text");
    assert!(msg.contains(&b_fp) && msg.contains(&wrong), "{msg}");
    let status = a.exit(WAIT);
    assert!(!status.success(), "{status:?}");
    assert!(a.seen_of("message").is_empty());
    // With the right pin they talk. (Same machine, so the same identity: B remembered it.)
    let home = peer_home("A", lo(pa)).display().to_string();
    let mut a = Chirp::peer(
        "A2",
        lo(pa),
        lo(pb),
        &["--peer-key", &b_fp, "--home", &home],
    )
    .expect("A2 starts");
    a.line("pinned hello");
    assert_eq!(b.messages(1, WAIT), vec!["pinned hello"]);
}

#[test]
fn changed_peer_key_is_refused_on_reconnect() {
    let [pa, pb] = free_ports();
    let (mut a, mut b) = (
        Chirp::peer("A", lo(pa), lo(pb), &[]).expect("A starts"),
        Chirp::peer("B", lo(pb), lo(pa), &[]).expect("B starts"),
    );
    a.line("first contact");
    assert_eq!(b.messages(1, WAIT), vec!["first contact"]);
    a.wait_for("first-contact status", WAIT, |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("first contact with"))
    });
    let old_fp = fingerprint(&peer_home("B", lo(pb)));
    b.proc.kill();
    drop(b);
    // Someone else now answers at B's address, with another key.
    let impostor_home = peer_home("impostor", lo(pb));
    let new_fp = fingerprint(&impostor_home);
    let home = impostor_home.display().to_string();
    let _impostor =
        Chirp::peer("impostor", lo(pb), lo(pa), &["--home", &home]).expect("impostor starts");
    let err = a.wait_type("error", Duration::from_secs(40));
    let msg = err["message"].as_str().expect("text");
    assert!(msg.contains(&old_fp) && msg.contains(&new_fp), "{msg}");
    assert!(
        msg.contains("known_keys"),
        "says where the remembered key is: {msg}"
    );
    let status = a.exit(WAIT);
    assert!(!status.success(), "{status:?}");
}
