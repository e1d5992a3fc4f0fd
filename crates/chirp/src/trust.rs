//! Is this the server we should be talking to? `chirp connect`'s key check, in line mode and in
//! the terminal UI: a pinned fingerprint decides; otherwise the key remembered for the address
//! (trust on first use, like ssh's accept-new). The check and peer mode's accept policy live
//! in `chirp_peer::trust`.

use std::path::PathBuf;
use std::sync::Arc;

use chirp_chat::client::KeyCheck;
use chirp_keys::{Fingerprint, PublicKey};

// The check itself (pin, else trust on first use) is shared with peer mode.
use chirp_peer::trust::check;

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
