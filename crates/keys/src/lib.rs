//! chirp identities: a static X25519 key pair per client or server, the fingerprint people
//! compare by eye, and the known-keys store that pins a peer's key on first use.
//!
//! # Layout
//!
//! - [`Identity`]: the key pair, created on first use (by `snow`, never by hand) and kept in a
//!   file of mode 0600 inside a directory of mode 0700. A key file that others can read is
//!   refused, as ssh refuses one.
//! - [`PublicKey`], [`Fingerprint`]: 120 bits of BLAKE2s over the public key, shown as six
//!   groups of four base32 characters (`k3zq-7mfa-…`): short enough to read aloud, long enough
//!   that finding another key with the same fingerprint is out of reach.
//! - [`KnownKeys`]: `name public-key-hex` lines; the first key seen for a name is stored
//!   (ssh's `accept-new`), a different one later is reported with both fingerprints.
//!
//! Secret key bytes never appear in `Debug` output or error messages.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use blake2::{Blake2s256, Digest as _};

/// Noise parameters the key pair is generated for. The key is a plain X25519 key, usable by
/// any pattern over Curve25519.
const KEY_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
const FILE_HEADER: &str = "chirp-identity-v1";
const FINGERPRINT_LEN: usize = 15;

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a chirp key file, or is damaged.
    #[error("{path}: not a valid chirp key file ({detail})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never the key material itself).
        detail: &'static str,
    },
    /// The secret key file is readable by other users.
    #[error(
        "{path}: permissions {mode:o} are too open; the secret key must be private (chmod 600 it)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The key generator failed.
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A static X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The fingerprint people compare.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Blake2s256::new();
        // Domain separation: the same key hashed for another purpose gives another value.
        h.update(b"chirp fingerprint v1");
        h.update(self.0);
        let digest = h.finalize();
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        Fingerprint(fp)
    }

    /// Lowercase hex, as stored in the known-keys file.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.trim().as_bytes())
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// A short, human-comparable digest of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = data_encoding::BASE32_NOPAD
            .encode(&self.0)
            .to_ascii_lowercase();
        for (i, chunk) in s.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // base32 output is ASCII, so every chunk is valid UTF-8.
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a chirp fingerprint (expected six groups of four letters and digits, e.g. abcd-efgh-ijkl-mnop-qrst-uvwx)"
)]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts the displayed form, with or without dashes or spaces, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let clean: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | ' ' | ':'))
            .collect::<String>()
            .to_ascii_uppercase();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|_| FingerprintError(s.to_owned()))?;
        Ok(Self(
            bytes
                .try_into()
                .map_err(|_| FingerprintError(s.to_owned()))?,
        ))
    }
}

/// A static key pair: a client's identity or a server's.
#[derive(Clone)]
pub struct Identity {
    secret: [u8; 32],
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is never formatted.
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh key pair from the OS's generator (through snow).
    pub fn generate() -> Result<Self, KeyError> {
        let params = KEY_PARAMS
            .parse()
            .map_err(|e| KeyError::Generate(format!("{e}")))?;
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(|e| KeyError::Generate(format!("{e}")))?;
        let secret: [u8; 32] = kp
            .private
            .try_into()
            .map_err(|_| KeyError::Generate("bad private key length".into()))?;
        let public: [u8; 32] = kp
            .public
            .try_into()
            .map_err(|_| KeyError::Generate("bad public key length".into()))?;
        Ok(Self {
            secret,
            public: PublicKey(public),
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret half, for the Noise handshake. Never log it.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Loads the key pair at `path`, creating it (and its directory) if it does not exist.
    /// Returns the identity and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match fs::metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate()?;
                id.save_new(path)?;
                Ok((id, true))
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Loads the key pair at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        check_private(path)?;
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let bad = |detail| KeyError::Format {
            path: path.to_owned(),
            detail,
        };
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEADER) {
            return Err(bad("missing header"));
        }
        let mut secret = None;
        let mut public = None;
        for line in lines {
            match line.split_once(' ') {
                Some(("secret", v)) => secret = PublicKey::from_hex(v).map(|k| k.0),
                Some(("public", v)) => public = PublicKey::from_hex(v),
                _ if line.trim().is_empty() => {}
                _ => return Err(bad("unexpected line")),
            }
        }
        let secret = secret.ok_or_else(|| bad("no valid secret key"))?;
        let public = public.ok_or_else(|| bad("no valid public key"))?;
        Ok(Self { secret, public })
    }

    /// Writes a new key file with mode 0600, refusing to overwrite an existing one.
    fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io_err(path))?;
        let text = format!(
            "{FILE_HEADER}\nsecret {}\npublic {}\n",
            data_encoding::HEXLOWER.encode(&self.secret),
            self.public.to_hex()
        );
        f.write_all(text.as_bytes()).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).map_err(io_err(dir))
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// What the known-keys store says about a key presented for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// First contact: the key has now been stored.
    New,
    /// The same key as last time.
    Known,
    /// A different key from the stored one: refuse, and show both fingerprints.
    Changed {
        /// The key stored earlier.
        stored: PublicKey,
    },
}

/// Trust on first use: `name public-key-hex` lines in a text file.
#[derive(Debug)]
pub struct KnownKeys {
    path: PathBuf,
}

impl KnownKeys {
    /// The store at `path` (created on the first `check` that stores something).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The key stored for `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<PublicKey>, KeyError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if let (Some(n), Some(k)) = (parts.next(), parts.next()) {
                if n == name {
                    return PublicKey::from_hex(k).map(Some).ok_or(KeyError::Format {
                        path: self.path.clone(),
                        detail: "bad key in known-keys line",
                    });
                }
            }
        }
        Ok(None)
    }

    /// Checks `key` for `name`, storing it if the name is new.
    pub fn check(&self, name: &str, key: PublicKey) -> Result<Trust, KeyError> {
        // Names are addresses or nicks; whitespace would break the line format.
        let name: String = name.split_whitespace().collect::<Vec<_>>().join("_");
        match self.get(&name)? {
            Some(stored) if stored == key => Ok(Trust::Known),
            Some(stored) => Ok(Trust::Changed { stored }),
            None => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_private_dir(dir)?;
                }
                let mut f = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io_err(&self.path))?;
                writeln!(f, "{name} {}", key.to_hex()).map_err(io_err(&self.path))?;
                Ok(Trust::New)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_the_same_identity_with_private_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/identity");
        let (a, created) = Identity::load_or_create(&path).expect("create");
        assert!(created);
        let (b, created) = Identity::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(a.public(), b.public());
        assert_eq!(a.secret(), b.secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir.path().join("sub")), 0o700);
        }
        assert_ne!(Identity::generate().expect("gen").public(), a.public());
        // The secret never shows in Debug output.
        let dbg = format!("{a:?}");
        assert!(
            !dbg.contains(&data_encoding::HEXLOWER.encode(a.secret())),
            "{dbg}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn refuses_readable_or_damaged_key_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity");
        Identity::load_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = Identity::load(&path).expect_err("too open");
        assert!(e.to_string().contains("too open"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, "chirp-identity-v1\nsecret zz\n").expect("write");
        let e = Identity::load(&path).expect_err("damaged");
        assert!(e.to_string().contains("not a valid chirp key file"), "{e}");
    }

    #[test]
    fn fingerprint_format_and_parse() {
        let id = Identity::generate().expect("gen");
        let fp = id.public().fingerprint();
        let s = fp.to_string();
        assert_eq!(s.len(), 6 * 4 + 5, "{s}");
        assert_eq!(s.split('-').count(), 6);
        assert!(
            s.chars()
                .all(|c| c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(s.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(
            s.to_uppercase().replace('-', " ").parse::<Fingerprint>(),
            Ok(fp)
        );
        assert!("abcd-efgh".parse::<Fingerprint>().is_err());
        // Fixed vector, computed independently (Python hashlib.blake2s + base64.b32encode):
        // the hash input, truncation and encoding must never drift.
        assert_eq!(
            PublicKey([0; 32]).fingerprint().to_string(),
            "tegh-342n-h26n-gp2f-6obm-kz7w"
        );
    }

    #[test]
    fn known_keys_trust_on_first_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kk = KnownKeys::new(dir.path().join("known_keys"));
        let (k1, k2) = (PublicKey([1; 32]), PublicKey([2; 32]));
        assert_eq!(kk.check("127.0.0.1:7667", k1).expect("io"), Trust::New);
        assert_eq!(kk.check("127.0.0.1:7667", k1).expect("io"), Trust::Known);
        assert_eq!(
            kk.check("127.0.0.1:7667", k2).expect("io"),
            Trust::Changed { stored: k1 }
        );
        assert_eq!(kk.check("other", k2).expect("io"), Trust::New);
        // It persisted.
        let again = KnownKeys::new(dir.path().join("known_keys"));
        assert_eq!(again.get("127.0.0.1:7667").expect("io"), Some(k1));
    }
}
