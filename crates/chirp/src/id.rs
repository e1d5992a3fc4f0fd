//! `chirp id`: show (and on first use create) the static key that identifies this client or
//! server, as a fingerprint people can compare by eye.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use chirp_keys::Identity;
use clap::Args;

pub(crate) const EXAMPLES: &str = "\
The key is created on first use, with file mode 0600. A client's lives in --home (default:
$XDG_CONFIG_HOME/chirp, i.e. ~/.config/chirp); a server's in its --data-dir (default:
$XDG_DATA_HOME/chirp, i.e. ~/.local/share/chirp).

Examples:
  chirp id                              # this user's client identity
  chirp id --data-dir /var/lib/chirp    # a server's identity";

/// File name of the key inside its directory.
pub(crate) const KEY_FILE: &str = "identity";

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// Client home directory holding the key.
    #[arg(long, value_name = "DIR", conflicts_with = "data_dir")]
    home: Option<PathBuf>,
    /// Server data directory holding the key.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn xdg(var: &str, fallback: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("chirp"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .with_context(|| format!("neither {var} nor HOME is set; pass the directory explicitly"))?;
    Ok(PathBuf::from(home).join(fallback).join("chirp"))
}

/// The default client home: `$XDG_CONFIG_HOME/chirp` or `~/.config/chirp`.
pub(crate) fn default_home() -> anyhow::Result<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config")
}

/// The client's state directory (the ignore list): `$XDG_STATE_HOME/chirp` or
/// `~/.local/state/chirp`.
pub(crate) fn default_state_dir() -> anyhow::Result<PathBuf> {
    xdg("XDG_STATE_HOME", ".local/state")
}

/// The default server data directory: `$XDG_DATA_HOME/chirp` or `~/.local/share/chirp`.
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    xdg("XDG_DATA_HOME", ".local/share")
}

pub(crate) fn run(args: &IdArgs) -> anyhow::Result<u8> {
    let dir = match (&args.home, &args.data_dir) {
        (Some(h), _) => h.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => default_home()?,
    };
    let path = dir.join(KEY_FILE);
    let (id, created) = Identity::load_or_create(&path).context("cannot load the identity")?;
    let mut out = std::io::stdout().lock();
    let note = if created { "created now" } else { "existing" };
    // A closed stdout leaves nothing to report to.
    let _ = writeln!(out, "{}", id.public().fingerprint());
    let _ = writeln!(std::io::stderr(), "identity {} ({note})", path.display());
    Ok(0)
}
