//! Peer mode's key policy: whom a `chirp peer` talks to (see `docs/SECURITY.md`, "Peer mode:
//! whom a peer talks to"). A pinned fingerprint decides; otherwise the key remembered for the
//! peer's address (trust on first use, like ssh's accept-new); a key never seen from another
//! port of the peer's IP is asked about. The [`KeyPolicy`] trait keeps the file out of the
//! [`Session`](crate::Session): [`KnownKeysPolicy`] is the real one, tests bring their own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chirp_keys::{Fingerprint, KnownKeys, PublicKey, Trust};

/// File (in the home directory) of the keys seen on first contact, per peer address.
pub const KNOWN_KEYS_FILE: &str = "known_keys";

/// Remembers a key the user trusted by answering a question (the known-keys file; tests
/// bring their own). All a [`Listener`](crate::listen::Listener) needs of a policy.
pub trait Remember {
    /// Remember `key` for `to`. `Ok`: where it is remembered, for the user; `Err`: what to
    /// tell instead.
    fn remember(&mut self, to: SocketAddr, key: PublicKey) -> Result<String, String>;
}

/// What the [`Session`](crate::Session) asks about keys.
pub trait KeyPolicy: Remember {
    /// The verdict on `key`, presented inside a handshake by the other side at `remote`, when
    /// the user named the peer `to` (see [`peer_verdict`]).
    fn verdict(&mut self, to: SocketAddr, remote: SocketAddr, key: PublicKey) -> PeerVerdict;
}

/// The policy of `chirp peer`: `--peer-key`, else the known-keys file.
#[derive(Debug, Clone)]
pub struct KnownKeysPolicy {
    /// The pinned fingerprint (`--peer-key`), if any.
    pub pin: Option<Fingerprint>,
    /// The known-keys file.
    pub known: PathBuf,
}

impl KeyPolicy for KnownKeysPolicy {
    fn verdict(&mut self, to: SocketAddr, remote: SocketAddr, key: PublicKey) -> PeerVerdict {
        peer_verdict(to, remote, key, self.pin.as_ref(), &self.known)
    }
}

impl Remember for KnownKeysPolicy {
    fn remember(&mut self, to: SocketAddr, key: PublicKey) -> Result<String, String> {
        remember_peer(to, key, &self.known).map(|()| format!("in {}", self.known.display()))
    }
}

/// Checks `key`, presented by the `kind` ("peer", "server") known as `name`, against `pin`
/// (the value of command-line `flag`) or else the known-keys file `known`. `Ok(Some(notice))`
/// on first contact (the key is now remembered); `Err` is the refusal to show, naming both
/// fingerprints.
pub fn check(
    kind: &str,
    flag: &str,
    name: &str,
    key: PublicKey,
    pin: Option<&Fingerprint>,
    known: &Path,
) -> Result<Option<String>, String> {
    let actual = key.fingerprint();
    if let Some(pinned) = pin {
        return if *pinned == actual {
            Ok(None)
        } else {
            Err(format!(
                "refusing {kind} {name}: it presented key {actual}, but {flag} pins {pinned}"
            ))
        };
    }
    match KnownKeys::new(known).check(name, key) {
        Ok(Trust::Known) => Ok(None),
        Ok(Trust::New) => Ok(Some(format!(
            "first contact with {name}: its key {actual} is now remembered in {}",
            known.display()
        ))),
        Ok(Trust::Changed { stored }) => Err(format!(
            "refusing {kind} {name}: it presented key {actual}, but the key remembered for it is \
             {}. If the {kind} really has a new key, remove its line from {} (or pin it with \
             {flag})",
            stored.fingerprint(),
            known.display()
        )),
        Err(e) => Err(format!("cannot check the {kind}'s key: {e}")),
    }
}

/// What peer mode does with a key presented inside a handshake (its accept policy; see
/// `docs/SECURITY.md`, "Peer mode: whom a peer talks to").
#[derive(Debug, PartialEq, Eq)]
pub enum PeerVerdict {
    /// Go on; the notice (first contact: the key is now remembered) is for the user.
    Accept(Option<String>),
    /// A key never seen, from another port of the peer's IP: only the user can tell whether
    /// it is the peer behind a port-changing NAT or a stranger on the same host or NAT.
    Ask,
    /// Refuse, telling the user why. `fatal`: it came from the very address the user named,
    /// so the peer itself is not who it should be and the chat ends; from any other address a
    /// refusal only turns a stranger away (who must not be able to end our chat).
    Refuse {
        /// What to tell the user.
        reason: String,
        /// The chat ends.
        fatal: bool,
    },
}

/// Peer mode's accept policy for `key`, presented by the other side of a handshake at
/// `remote`, when the user named the peer as `to`:
/// - a pin (`--peer-key`) decides alone, from any address;
/// - else the key remembered for `to` decides, from any address;
/// - else (first contact) a key from exactly `to` is remembered, and one from any other
///   address is [`PeerVerdict::Ask`]ed about.
pub fn peer_verdict(
    to: SocketAddr,
    remote: SocketAddr,
    key: PublicKey,
    pin: Option<&Fingerprint>,
    known: &Path,
) -> PeerVerdict {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let exact = canonical(remote) == canonical(to);
    let name = to.to_string();
    let refuse = |reason: String| PeerVerdict::Refuse {
        reason,
        fatal: exact,
    };
    let who = if exact {
        name.clone()
    } else {
        format!("{remote} (not {name}, the address given)")
    };
    if pin.is_some() {
        return match check("peer", "--peer-key", &who, key, pin, known) {
            Ok(_) => PeerVerdict::Accept(None),
            Err(e) => refuse(e),
        };
    }
    match KnownKeys::new(known).get(&name) {
        Ok(Some(stored)) if stored == key => PeerVerdict::Accept(None),
        // From another port: not the peer itself, whose key is not in question.
        Ok(Some(stored)) if !exact => refuse(format!(
            "refusing peer {who}: it presented key {}, not the key remembered for {name} ({}): \
             someone else on the peer's host or behind its NAT, such as `chirp ping` (which \
             presents a one-time key)",
            key.fingerprint(),
            stored.fingerprint()
        )),
        Ok(Some(stored)) => refuse(format!(
            "refusing peer {who}: it presented key {}, but the key remembered for {name} is {}. \
             If the peer really has a new key, remove its line from {} (or pin it with \
             --peer-key)",
            key.fingerprint(),
            stored.fingerprint(),
            known.display()
        )),
        Ok(None) if exact => match check("peer", "--peer-key", &name, key, None, known) {
            Ok(notice) => PeerVerdict::Accept(notice),
            Err(e) => refuse(e),
        },
        Ok(None) => PeerVerdict::Ask,
        Err(e) => PeerVerdict::Refuse {
            reason: format!("cannot check the peer's key: {e}"),
            fatal: true,
        },
    }
}

/// The refusal of a first-contact key from another address when nobody can be asked.
pub fn unconfirmed_refusal(to: SocketAddr, remote: SocketAddr, key: PublicKey) -> String {
    let fp = key.fingerprint();
    format!(
        "refusing peer {remote}: its key {fp} is not known, and it came from {remote}, not from \
         {to}, the address given. If it is your peer (for example behind a NAT that changes \
         ports), start again with --peer-key {fp}"
    )
}

/// Remembers `key` for the peer `to` after the user confirmed it. `Err`: what to tell.
pub fn remember_peer(to: SocketAddr, key: PublicKey, known: &Path) -> Result<(), String> {
    match KnownKeys::new(known).check(&to.to_string(), key) {
        Ok(Trust::New | Trust::Known) => Ok(()),
        Ok(Trust::Changed { stored }) => Err(format!(
            "not remembered: {} now holds key {} for {to}",
            known.display(),
            stored.fingerprint()
        )),
        Err(e) => Err(format!("cannot remember the peer's key: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chirp_keys::Identity;

    fn key() -> PublicKey {
        Identity::generate().expect("key").public()
    }

    #[test]
    fn peer_accept_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let known = dir.path().join("known_keys");
        let to: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let other: SocketAddr = "127.0.0.1:6000".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().expect("addr");
        let (real, stranger) = (key(), key());

        // First contact from another port: ask, and remember nothing.
        assert_eq!(
            peer_verdict(to, other, stranger, None, &known),
            PeerVerdict::Ask
        );
        assert_eq!(
            KnownKeys::new(&known).get("127.0.0.1:5000").expect("read"),
            None
        );
        // First contact from the exact address (also written v4-mapped): remembered.
        assert!(matches!(
            peer_verdict(to, mapped, real, None, &known),
            PeerVerdict::Accept(Some(_))
        ));
        // Now the remembered key is accepted from any port, and any other key refused: fatal
        // only from the exact address.
        assert_eq!(
            peer_verdict(to, other, real, None, &known),
            PeerVerdict::Accept(None)
        );
        let PeerVerdict::Refuse { reason, fatal } = peer_verdict(to, other, stranger, None, &known)
        else {
            panic!("a changed key is refused");
        };
        assert!(!fatal);
        assert!(
            reason.contains(&stranger.fingerprint().to_string()),
            "{reason}"
        );
        assert!(reason.contains(&real.fingerprint().to_string()), "{reason}");
        assert!(matches!(
            peer_verdict(to, to, stranger, None, &known),
            PeerVerdict::Refuse { fatal: true, .. }
        ));

        // A pin decides alone, from any address.
        let pin = stranger.fingerprint();
        assert_eq!(
            peer_verdict(to, other, stranger, Some(&pin), &known),
            PeerVerdict::Accept(None)
        );
        assert!(matches!(
            peer_verdict(to, other, real, Some(&pin), &known),
            PeerVerdict::Refuse { fatal: false, .. }
        ));
        assert!(matches!(
            peer_verdict(to, to, real, Some(&pin), &known),
            PeerVerdict::Refuse { fatal: true, .. }
        ));

        // A key the user confirmed is remembered; a second one cannot replace it.
        let fresh = dir.path().join("fresh");
        assert_eq!(
            peer_verdict(to, other, stranger, None, &fresh),
            PeerVerdict::Ask
        );
        remember_peer(to, stranger, &fresh).expect("remembered");
        assert_eq!(
            peer_verdict(to, other, stranger, None, &fresh),
            PeerVerdict::Accept(None)
        );
        assert!(remember_peer(to, real, &fresh).is_err());
        let refusal = unconfirmed_refusal(to, other, real);
        assert!(
            refusal.contains("--peer-key") && refusal.contains(&real.fingerprint().to_string())
        );
    }
}
