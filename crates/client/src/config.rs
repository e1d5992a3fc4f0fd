//! `client.toml`: what a user of `chirp connect` sets once (the server, the nick, the rooms to
//! join, the bell, the log and download directories), so that `chirp connect` alone works.
//! `chirp peer` reads the same file for `downloads` and `auto_accept_from`.
//!
//! The file is TOML, read whole with [`ClientFile::parse`]. A key chirp does not know is an
//! error (a typo must not be silently ignored), and so is a value of the wrong type or a bad
//! nick, room or fingerprint; the error names the line and column (from `toml`'s spans) and
//! the caller adds the file's path. Nothing here reads the disk: the binary reads the file
//! and merges it with its flags (a flag given on the command line wins).
//!
//! ```
//! use chirp_client::config::ClientFile;
//!
//! let file = ClientFile::parse(
//!     "server = \"chat.example.org\"\nnick = \"alice\"\nrooms = [\"#rust\", \"#chirp\"]\n",
//! )
//! .expect("valid");
//! assert_eq!(file.servers(), ["chat.example.org"]);
//! assert_eq!(file.rooms, ["#rust", "#chirp"]);
//! let err = ClientFile::parse("nick = \"alice\"\nnik = \"bob\"\n").unwrap_err();
//! assert!(err.to_string().contains("line 2"), "{err}");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use chirp_keys::Fingerprint;
use serde::{Deserialize, Deserializer};

/// The name of the file in chirp's config directory (`$XDG_CONFIG_HOME/chirp`).
pub const FILE_NAME: &str = "client.toml";

/// An example file, as the docs and `chirp connect --help` show it (a unit test parses it).
pub const EXAMPLE: &str = r##"# ~/.config/chirp/client.toml
server = "chat.example.org"        # or several nodes: ["10.0.0.1:7667", "10.0.0.2:7667"]
nick = "alice"
rooms = ["#rust", "#chirp"]        # joined at start; the last is the current room
bell = true                        # ring on mentions and direct messages
log_dir = "~/chirp-logs"           # a plain-text log per room and DM
downloads = "~/Downloads/chirp"    # where received files are saved
# relay_only = true                # files go through the server's relay, never direct
# server_key = "abcd-efgh-ijkl-mnop-qrst-uvwx"   # pin the server's key
# auto_accept_from = ["wxyz-wxyz-wxyz-wxyz-wxyz-wxyz"]   # take files from these keys unasked
# idle_timeout = 30                # seconds without a packet before reconnecting
# home = "~/.config/chirp"         # identity key and known server keys
"##;

/// One server address or several (the nodes of a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Servers {
    One(String),
    Many(Vec<String>),
}

/// The settings of `client.toml`; every one is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// `server`: `HOST[:PORT]`, or a list of them (one cluster's nodes).
    #[serde(default)]
    server: Option<Servers>,
    /// `nick`.
    #[serde(default, deserialize_with = "nick")]
    pub nick: Option<String>,
    /// `rooms`: joined at start, in order (the last becomes the current room).
    #[serde(default, deserialize_with = "rooms")]
    pub rooms: Vec<String>,
    /// `bell`: ring on mentions and direct messages in the chat UI.
    #[serde(default)]
    pub bell: Option<bool>,
    /// `log_dir`: write a plain-text log per room and DM there.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// `downloads`: where `chirp connect` and `chirp peer` save received files.
    #[serde(default)]
    pub downloads: Option<PathBuf>,
    /// `home`: the identity key and the known server keys.
    #[serde(default)]
    pub home: Option<PathBuf>,
    /// `server_key`: accept only a server with this key fingerprint.
    #[serde(default, deserialize_with = "fingerprint")]
    pub server_key: Option<Fingerprint>,
    /// `idle_timeout`: seconds without a packet before the server is declared lost (1-3600).
    #[serde(default, deserialize_with = "idle_timeout")]
    pub idle_timeout: Option<u64>,
    /// `qlog`: write a qlog trace of every connection into this directory.
    #[serde(default)]
    pub qlog: Option<PathBuf>,
    /// `relay_only`: DM file transfers go through the server's relay, never direct, so that
    /// the other user never learns this client's address.
    #[serde(default)]
    pub relay_only: Option<bool>,
    /// `auto_accept_from`: key fingerprints whose file offers are accepted without asking
    /// (`chirp connect`'s DM offers, and `chirp peer`'s).
    #[serde(default, deserialize_with = "fingerprints")]
    pub auto_accept_from: Vec<Fingerprint>,
}

/// Why a `client.toml` was refused: the message, with the line and column where `toml`
/// knows them. The caller names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
    /// 1-based line and column of the offending key or value.
    at: Option<(usize, usize)>,
}

impl ConfigError {
    /// Where the error is, 1-based line and column, if known.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.at
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "line {line}, column {col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ClientFile {
    /// Parses the text of a `client.toml`.
    pub fn parse(text: &str) -> Result<ClientFile, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| line_col(text, span.start));
            ConfigError {
                // `message()` is the bare reason; the position is ours to add.
                message: e.message().trim().to_owned(),
                at,
            }
        })
    }

    /// The server addresses given, in order (empty: none).
    pub fn servers(&self) -> Vec<String> {
        match &self.server {
            None => Vec::new(),
            Some(Servers::One(s)) => vec![s.clone()],
            Some(Servers::Many(v)) => v.clone(),
        }
    }

    /// Makes the file's paths (`log_dir`, `downloads`, `home`, `qlog`) usable: a leading `~`
    /// becomes `home` (the user's home directory, if known), and a relative path is taken
    /// from `base`, the file's own directory (not wherever chirp happens to be started).
    pub fn resolve_paths(&mut self, home: Option<&Path>, base: &Path) {
        for p in [
            &mut self.log_dir,
            &mut self.downloads,
            &mut self.home,
            &mut self.qlog,
        ]
        .into_iter()
        .flatten()
        {
            let expanded = match home {
                Some(h) => expand_tilde(p, h),
                None => p.clone(),
            };
            *p = if expanded.is_relative() {
                base.join(expanded)
            } else {
                expanded
            };
        }
    }
}

/// `~` alone or `~/rest` under `home`; any other path as it is.
pub fn expand_tilde(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// The 1-based line and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

fn nick<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = String::deserialize(d)?;
    chirp_chat::names::nick(&raw)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn rooms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let rooms = Vec::<String>::deserialize(d)?;
    for r in &rooms {
        chirp_chat::names::room(r).map_err(|e| serde::de::Error::custom(format!("{r}: {e}")))?;
    }
    Ok(rooms)
}

fn fingerprint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Fingerprint>, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse::<Fingerprint>()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("bad fingerprint: {e}")))
}

fn fingerprints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Fingerprint>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|raw| {
            raw.parse::<Fingerprint>()
                .map_err(|e| serde::de::Error::custom(format!("bad fingerprint: {e}")))
        })
        .collect()
}

fn idle_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let secs = u64::deserialize(d)?;
    if !(1..=3600).contains(&secs) {
        return Err(serde::de::Error::custom(format!(
            "idle_timeout must be 1 to 3600 seconds, not {secs}"
        )));
    }
    Ok(Some(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_into_every_setting() {
        let mut f = ClientFile::parse(EXAMPLE).expect("the example is valid");
        assert_eq!(f.servers(), ["chat.example.org"]);
        assert_eq!(f.nick.as_deref(), Some("alice"));
        assert_eq!(f.rooms, ["#rust", "#chirp"]);
        assert_eq!(f.bell, Some(true));
        assert_eq!(f.server_key, None);
        f.resolve_paths(Some(Path::new("/home/alice")), Path::new("/etc/x"));
        assert_eq!(f.log_dir, Some(PathBuf::from("/home/alice/chirp-logs")));
        assert_eq!(
            f.downloads,
            Some(PathBuf::from("/home/alice/Downloads/chirp"))
        );
        // A relative path is the file's directory's, absolute ones stay.
        let mut f = ClientFile::parse("log_dir = \"logs\"\nqlog = \"/q\"\n").expect("valid");
        f.resolve_paths(None, Path::new("/etc/chirp"));
        assert_eq!(f.log_dir, Some(PathBuf::from("/etc/chirp/logs")));
        assert_eq!(f.qlog, Some(PathBuf::from("/q")));
        // An empty file is valid: nothing set.
        assert_eq!(ClientFile::parse(""), Ok(ClientFile::default()));
    }

    #[test]
    fn several_servers_and_every_optional_setting() {
        let f = ClientFile::parse(
            "server = [\"10.0.0.1:7667\", \"10.0.0.2\"]\nserver_key = \
             \"aaaa-aaaa-aaaa-aaaa-aaaa-aaaa\"\nidle_timeout = 6\nqlog = \"/tmp/q\"\nhome = \
             \"/h\"\nbell = false\nrelay_only = true\nauto_accept_from = \
             [\"bbbb-bbbb-bbbb-bbbb-bbbb-bbbb\", \"cccc-cccc-cccc-cccc-cccc-cccc\"]\n",
        )
        .expect("valid");
        let trusted: Vec<Fingerprint> = [
            "bbbb-bbbb-bbbb-bbbb-bbbb-bbbb",
            "cccc-cccc-cccc-cccc-cccc-cccc",
        ]
        .iter()
        .map(|f| f.parse().expect("fingerprint"))
        .collect();
        assert_eq!(f.auto_accept_from, trusted);
        assert_eq!(f.servers(), ["10.0.0.1:7667", "10.0.0.2"]);
        assert!(f.server_key.is_some());
        assert_eq!(f.idle_timeout, Some(6));
        assert_eq!(f.bell, Some(false));
        assert_eq!(f.home, Some(PathBuf::from("/h")));
        assert_eq!(f.qlog, Some(PathBuf::from("/tmp/q")));
        assert_eq!(f.relay_only, Some(true));
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let e = ClientFile::parse("nick = \"alice\"\n\n  nik = \"bob\"\n").expect_err("typo");
        assert_eq!(e.position(), Some((3, 3)), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("line 3, column 3: "), "{text}");
        assert!(text.contains("unknown field `nik`"), "{text}");
        // The keys chirp does know are listed, to fix the typo by.
        assert!(text.contains("nick"), "{text}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("bell = \"yes\"\n", 1, "invalid type"),
            (
                "nick = \"ok\"\nrooms = [\"#fine\", \"nohash\"]\n",
                2,
                "start with '#'",
            ),
            ("server_key = \"nonsense\"\n", 1, "bad fingerprint"),
            (
                "auto_accept_from = [\"aaaa-aaaa-aaaa-aaaa-aaaa-aaaa\", \"x\"]\n",
                1,
                "bad fingerprint",
            ),
            (
                "auto_accept_from = \"aaaa-aaaa-aaaa-aaaa-aaaa-aaaa\"\n",
                1,
                "invalid type",
            ),
            ("\nidle_timeout = 0\n", 2, "1 to 3600"),
            ("nick = \"a,b\"\n", 1, "nick"),
            ("server = 7\n", 1, ""),
            ("rooms = [\n", 1, ""),
        ];
        for &(text, line, what) in cases {
            let e = ClientFile::parse(text).expect_err(text);
            assert_eq!(e.position().map(|p| p.0), Some(line), "{text:?}: {e}");
            assert!(e.to_string().contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_tilde_means_the_home_directory_only_at_the_start() {
        let home = Path::new("/home/u");
        assert_eq!(expand_tilde(Path::new("~"), home), PathBuf::from("/home/u"));
        assert_eq!(
            expand_tilde(Path::new("~/logs"), home),
            PathBuf::from("/home/u/logs")
        );
        assert_eq!(
            expand_tilde(Path::new("/var/~/x"), home),
            PathBuf::from("/var/~/x")
        );
        assert_eq!(
            expand_tilde(Path::new("~bob/x"), home),
            PathBuf::from("~bob/x")
        );
    }
}
