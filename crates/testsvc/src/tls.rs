//! A test certificate authority and a server certificate it signed, made by the `openssl`
//! command, for testing TLS to the servers this crate starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files [`make_certs`] wrote.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA's certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate (PEM), for `127.0.0.1` (IP subject alternative name).
    pub cert: PathBuf,
    /// The server's private key (PEM, unencrypted).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    assert!(st.success(), "openssl {args:?} failed");
    Some(())
}

/// Whether the `openssl` command is installed.
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes a CA and a certificate for `127.0.0.1` signed by it into `dir` (valid two days);
/// `None` if `openssl` is not installed. Panics if openssl fails.
pub fn make_certs(dir: &Path) -> Option<TestCerts> {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").ok()?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=chirp test CA",
            "-days",
            "2",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    )?;
    Some(TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}
