//! `chirp id`: creates the key once (mode 0600), then prints the same fingerprint every time.

use std::process::Command;

fn id(args: &[&str], env_home: &std::path::Path) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_chirp"))
        .arg("id")
        .args(args)
        .env("HOME", env_home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("run chirp id");
    let s = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (s(&out.stdout), s(&out.stderr), out.status.success())
}

#[test]
fn creates_once_then_prints_the_same_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("h");
    let home_s = home.to_str().expect("utf-8 path");
    let (fp1, err1, ok1) = id(&["--home", home_s], dir.path());
    assert!(ok1, "{err1}");
    assert!(err1.contains("created now"), "{err1}");
    assert_eq!(fp1.len(), 29, "six groups of four: {fp1}");
    let (fp2, err2, ok2) = id(&["--home", home_s], dir.path());
    assert!(ok2 && err2.contains("existing"), "{err2}");
    assert_eq!(fp1, fp2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(home.join("identity"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A server's data dir is another identity; the default home comes from $HOME.
    let (fp3, _, ok3) = id(
        &[
            "--data-dir",
            dir.path().join("srv").to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    assert!(ok3);
    assert_ne!(fp3, fp1);
    let (fp4, err4, ok4) = id(&[], dir.path());
    assert!(ok4, "{err4}");
    assert!(err4.contains(".config/chirp/identity"), "{err4}");
    assert_ne!(fp4, fp1);
    // --home and --data-dir together is an error.
    let (_, err5, ok5) = id(&["--home", "a", "--data-dir", "b"], dir.path());
    assert!(!ok5 && err5.contains("cannot be used with"), "{err5}");
}
