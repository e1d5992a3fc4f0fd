//! The servers really start, serve, survive a crash and a restart, and are gone after drop.
//!
//! Each test is skipped (with a note) when its server is not installed, unless
//! `CHIRP_REQUIRE_SERVICES=1`, where that fails.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chirp_testsvc::{Nats, Postgres, nats_available, postgres_available, postgres_tool, require};

fn connect(port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(2),
    )
}

/// `select 1` through the real `psql`, as a client outside this crate would run it.
fn select_one(port: u16) -> String {
    let psql = postgres_tool("psql").expect("psql is installed with the server");
    let out = Command::new(psql)
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "chirp", "-d", "chirp", "-c", "select 1"])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn postgres_serves_survives_a_crash_and_is_gone_after_drop() {
    if !require("PostgreSQL", postgres_available()) {
        return;
    }
    let mut pg = Postgres::start().expect("start PostgreSQL");
    let port = pg.port();
    assert_eq!(pg.url(), format!("postgres://chirp@127.0.0.1:{port}/chirp"));
    assert!(pg.is_running());
    connect(port).expect("the port accepts a TCP connection");
    assert_eq!(select_one(port), "1");

    // Committed data survives a crash (fsync=on, crash recovery on restart).
    pg.psql("create table t (x int); insert into t values (42)")
        .expect("create a table");
    pg.kill();
    assert!(!pg.is_running());
    assert!(connect(port).is_err(), "nothing listens after kill");
    pg.start_again().expect("start again after a crash");
    assert_eq!(pg.port(), port);
    assert_eq!(select_one(port), "1");
    assert_eq!(pg.psql("select x from t").expect("query").trim(), "42");

    // And a clean stop and restart.
    pg.stop();
    assert!(!pg.is_running());
    pg.start_again().expect("start again after a stop");
    assert_eq!(select_one(port), "1");
    assert!(matches!(
        pg.start_again(),
        Err(chirp_testsvc::Error::AlreadyRunning { .. })
    ));

    let dir = pg.data_dir();
    drop(pg);
    assert!(connect(port).is_err(), "the port is closed after drop");
    assert!(!dir.exists(), "the directory is removed after drop");
}

#[test]
fn nats_serves_survives_a_crash_and_is_gone_after_drop() {
    if !require("NATS", nats_available()) {
        return;
    }
    let mut nats = Nats::start().expect("start NATS");
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert_info(port);

    nats.kill();
    assert!(!nats.is_running());
    assert!(connect(port).is_err(), "nothing listens after kill");
    nats.start_again().expect("start again after a crash");
    assert_eq!(nats.port(), port);
    assert_info(port);

    nats.stop();
    assert!(connect(port).is_err(), "nothing listens after stop");
    nats.start_again().expect("start again after a stop");
    assert_info(port);

    drop(nats);
    assert!(connect(port).is_err(), "the port is closed after drop");
}

/// A TCP connection to `port` is greeted with NATS's `INFO {…}` line.
fn assert_info(port: u16) {
    let stream = connect(port).expect("the port accepts a TCP connection");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read the greeting");
    assert!(line.starts_with("INFO {"), "greeting: {line:?}");
}

#[test]
fn a_panicking_test_leaves_no_server_behind() {
    if !require(
        "PostgreSQL and NATS",
        postgres_available() && nats_available(),
    ) {
        return;
    }
    let mut ports = None;
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pg = Postgres::start().expect("start PostgreSQL");
        let nats = Nats::start().expect("start NATS");
        ports = Some((pg.port(), nats.port()));
        panic!("a test fails while its servers run");
    }));
    assert!(unwound.is_err());
    let (pg_port, nats_port) = ports.expect("both servers started");
    assert!(
        connect(pg_port).is_err(),
        "PostgreSQL stopped while unwinding"
    );
    assert!(connect(nats_port).is_err(), "NATS stopped while unwinding");
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let a = chirp_testsvc::free_port();
    let b = chirp_testsvc::free_port();
    assert_ne!(a, b);
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, a)).expect("the port is free");
}

/// Set for the child process of `a_killed_test_process_leaves_no_server_behind`.
const HELPER_ENV: &str = "CHIRP_TESTSVC_HELPER";
const HELPER: &str = "helper_starts_servers_and_waits_to_be_killed";

/// A test process killed with SIGKILL runs no `Drop`; the watchdogs stop its servers and remove
/// their directories.
#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    if !require(
        "PostgreSQL and NATS",
        postgres_available() && nats_available(),
    ) {
        return;
    }
    let mut helper = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            HELPER,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the helper");
    let stdout = helper.stdout.take().expect("piped stdout");
    // The helper's servers start within their bounded waits, or it fails and its stdout ends.
    // libtest may have printed "test NAME ... " on the same line before it.
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| Some(line.split_once("servers ")?.1.to_owned()));
    helper.kill().expect("SIGKILL the helper");
    helper.wait().expect("reap the helper");
    let line = line.expect("the helper started its servers");
    let fields: Vec<&str> = line.split(' ').collect();
    let [pg_port, nats_port, pg_dir, nats_dir] = fields[..] else {
        panic!("unexpected helper line {line:?}");
    };
    let ports: Vec<u16> = [pg_port, nats_port]
        .iter()
        .map(|p| p.parse().expect("a port"))
        .collect();
    let dirs = [Path::new(pg_dir), Path::new(nats_dir)];

    let deadline = Instant::now() + Duration::from_secs(40);
    let cleaned = || ports.iter().all(|&p| connect(p).is_err()) && dirs.iter().all(|d| !d.exists());
    while !cleaned() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for port in &ports {
        assert!(connect(*port).is_err(), "port {port} is still open");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
#[ignore = "not a test on its own: a_killed_test_process_leaves_no_server_behind runs it"]
fn helper_starts_servers_and_waits_to_be_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let pg = Postgres::start().expect("start PostgreSQL");
    let nats = Nats::start().expect("start NATS");
    let dir_of = |log: PathBuf| {
        log.parent()
            .expect("a log in a directory")
            .display()
            .to_string()
    };
    #[allow(clippy::print_stdout)] // The parent test reads this line.
    {
        println!(
            "servers {} {} {} {}",
            pg.port(),
            nats.port(),
            dir_of(pg.log_path()),
            dir_of(nats.log_path())
        );
    }
    // Killed long before this ends.
    std::thread::sleep(Duration::from_secs(120));
}
