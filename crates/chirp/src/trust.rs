//! Is this the key we should be talking to? The one check behind `chirp peer`, and
//! `chirp connect` in line mode and in the terminal UI: a pinned fingerprint decides; otherwise
//! the key remembered for the address (trust on first use, like ssh's accept-new).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chirp_chat::client::KeyCheck;
use chirp_keys::{Fingerprint, KnownKeys, PublicKey, Trust};

/// Checks `key`, presented by the `kind` ("peer", "server") known as `name`, against `pin`
/// (the value of command-line `flag`) or else the known-keys file `known`. `Ok(Some(notice))`
/// on first contact (the key is now remembered); `Err` is the refusal to show, naming both
/// fingerprints.
pub(crate) fn check(
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

/// The server-key check of `chirp connect` ([`check`] with `--server-key`), for the chat
/// session to run during the handshake. A first-contact notice goes to `notify`: printed in
/// line mode, shown in the status buffer by the terminal UI.
pub(crate) fn server_key_check(
    name: String,
    pin: Option<Fingerprint>,
    known: PathBuf,
    notify: impl Fn(String) + Send + Sync + 'static,
) -> KeyCheck {
    Arc::new(move |key: &[u8; 32]| {
        let notice = check(
            "server",
            "--server-key",
            &name,
            PublicKey(*key),
            pin.as_ref(),
            &known,
        )?;
        if let Some(n) = notice {
            notify(n);
        }
        Ok(())
    })
}
