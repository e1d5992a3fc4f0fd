//! Is this the server we should be talking to? `chirp connect`'s key check, in line mode and in
//! the terminal UI: a pinned fingerprint decides; otherwise the key remembered for the address
//! (trust on first use, like ssh's accept-new). The check and peer mode's accept policy live
//! in `chirp_peer::trust`.
//!
//! With several addresses (the nodes of one cluster, which share one key), the pin applies to
//! every address; without a pin, each address is remembered under its own name, and an
//! address seen for the first time is accepted only with the key remembered for the other
//! addresses of the same list, if any is (see [`cluster_check`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chirp_chat::client::KeyCheck;
use chirp_keys::{Fingerprint, KnownKeys, PublicKey, Trust};

// The check itself (pin, else trust on first use) is shared with peer mode.
use chirp_peer::trust::check;

/// The server-key check of `chirp connect` ([`check`] with `--server-key`, and
/// [`cluster_check`] across the `servers` given: (name in known_keys, address) each), for the
/// chat session to run during the handshake with whichever address it is at. A first-contact
/// notice goes to `notify`: printed in line mode, shown in the status buffer by the terminal
/// UI.
pub(crate) fn server_key_check(
    servers: Vec<(String, SocketAddr)>,
    pin: Option<Fingerprint>,
    known: PathBuf,
    notify: impl Fn(String) + Send + Sync + 'static,
) -> KeyCheck {
    Arc::new(move |at: SocketAddr, key: &[u8; 32]| {
        let notice = cluster_check(&servers, at, PublicKey(*key), pin.as_ref(), &known)?;
        if let Some(n) = notice {
            notify(n);
        }
        Ok(())
    })
}

/// The verdict on `key`, presented at `at`, one of the `servers` given together:
/// - a pin decides alone, at every address;
/// - else the key remembered for `at`'s name decides;
/// - else (`at` seen for the first time), if keys are remembered for other names of the list,
///   `key` must be theirs: it is then remembered for `at` too (a cluster has one key); another
///   key is refused, naming the address whose key it is not;
/// - else (first contact with the whole list), it is remembered for `at`.
///
/// `Ok(Some(notice))` when a key was remembered; `Err` is the refusal to show.
pub(crate) fn cluster_check(
    servers: &[(String, SocketAddr)],
    at: SocketAddr,
    key: PublicKey,
    pin: Option<&Fingerprint>,
    known: &Path,
) -> Result<Option<String>, String> {
    let name = servers
        .iter()
        .find(|(_, a)| *a == at)
        .map_or_else(|| at.to_string(), |(n, _)| n.clone());
    if pin.is_some() || servers.len() < 2 {
        return check("server", "--server-key", &name, key, pin, known);
    }
    let file = KnownKeys::new(known);
    let cannot = |e| format!("cannot check the server's key: {e}");
    if file.get(&name).map_err(cannot)?.is_some() {
        return check("server", "--server-key", &name, key, None, known);
    }
    let mut vouched: Option<&str> = None;
    for (other, _) in servers.iter().filter(|(n, _)| *n != name) {
        match file.get(other).map_err(cannot)? {
            Some(stored) if stored == key => vouched = vouched.or(Some(other)),
            Some(stored) => {
                return Err(format!(
                    "refusing server {name}: it presented key {}, but the servers given with it \
                     are one cluster with one key, and the key remembered for {other} is {}. If \
                     {name} is not a node of that cluster, leave it out; if the cluster's key \
                     really changed, remove its lines from {} (or pin it with --server-key)",
                    key.fingerprint(),
                    stored.fingerprint(),
                    known.display()
                ));
            }
            None => {}
        }
    }
    let Some(other) = vouched else {
        // First contact with the whole list.
        return check("server", "--server-key", &name, key, None, known);
    };
    match file.check(&name, key) {
        Ok(Trust::New | Trust::Known) => Ok(Some(format!(
            "first contact with {name}: its key {} is the one remembered for {other}, given with \
             it; now remembered for {name} too, in {}",
            key.fingerprint(),
            known.display()
        ))),
        // Another process remembered a key for it since the look-up above: that one decides.
        Ok(Trust::Changed { .. }) => check("server", "--server-key", &name, key, None, known),
        Err(e) => Err(cannot(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chirp_keys::Identity;

    fn key() -> PublicKey {
        Identity::generate().expect("key").public()
    }

    fn list() -> Vec<(String, SocketAddr)> {
        ["10.0.0.1:7667", "10.0.0.2:7667", "node3.example:7000"]
            .iter()
            .zip(["10.0.0.1:7667", "10.0.0.2:7667", "10.0.0.3:7000"])
            .map(|(n, a)| ((*n).to_owned(), a.parse().expect("addr")))
            .collect()
    }

    #[test]
    fn a_cluster_is_trusted_with_one_key_at_every_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let known = dir.path().join("known_keys");
        let servers = list();
        let at = |i: usize| servers[i].1;
        let (k, other) = (key(), key());

        // First contact with the list: remembered for the address met.
        let n = cluster_check(&servers, at(0), k, None, &known).expect("first contact");
        assert!(n.is_some_and(|n| n.contains("first contact with 10.0.0.1:7667")));
        assert_eq!(cluster_check(&servers, at(0), k, None, &known), Ok(None));
        // Another address of the list with the same key: accepted and remembered, saying why.
        let n = cluster_check(&servers, at(2), k, None, &known).expect("same key");
        assert!(
            n.as_deref()
                .is_some_and(|n| n.contains("node3.example:7000")
                    && n.contains("the one remembered for 10.0.0.1:7667")),
            "{n:?}"
        );
        assert_eq!(cluster_check(&servers, at(2), k, None, &known), Ok(None));
        let file = KnownKeys::new(&known);
        assert_eq!(file.get("node3.example:7000").expect("read"), Some(k));
        // Another key at a new address of the list: refused, naming whose key it is not, and
        // not remembered.
        let e = cluster_check(&servers, at(1), other, None, &known).expect_err("other key");
        assert!(
            e.contains("refusing server 10.0.0.2:7667") && e.contains("remembered for 10.0.0.1"),
            "{e}"
        );
        assert_eq!(file.get("10.0.0.2:7667").expect("read"), None);
        // Another key at a known address: refused as always.
        let e = cluster_check(&servers, at(0), other, None, &known).expect_err("changed");
        assert!(e.contains("remembered for it is"), "{e}");
        // A pin decides at every address, remembered or not.
        let pin = k.fingerprint();
        assert_eq!(
            cluster_check(&servers, at(1), k, Some(&pin), &known),
            Ok(None)
        );
        let e = cluster_check(&servers, at(0), other, Some(&pin), &known).expect_err("pinned");
        assert!(e.contains("--server-key pins"), "{e}");
        // One address alone is per address, as before: a new name is a first contact.
        let alone = vec![servers[1].clone()];
        let n = cluster_check(&alone, at(1), other, None, &known).expect("alone");
        assert!(n.is_some_and(|n| n.contains("first contact with 10.0.0.2:7667")));
    }
}
