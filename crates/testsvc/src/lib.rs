//! Real PostgreSQL and NATS servers for tests.
//!
//! Each server runs as a child process of the test, in its own temporary directory, on a free
//! port of 127.0.0.1. A test never relies on a service that happens to be running already, and
//! every process started here is stopped on every path: by [`Postgres::stop`] /
//! [`Nats::stop`], or by `Drop`, which also runs while a failed test unwinds.
//!
//! # Layout
//!
//! - [`Postgres`]: `initdb` into a temporary directory, then `postgres` as a child (not
//!   daemonised by `pg_ctl`, so it can be stopped, or crashed with [`Postgres::kill`], and
//!   started again on the same data and port).
//! - [`Nats`]: `nats-server` as a child, logging into its temporary directory.
//! - [`require`] with [`postgres_available`] / [`nats_available`]: the first lines of a test
//!   that needs a server. Without the binaries the test is skipped with a note, unless
//!   `CHIRP_REQUIRE_SERVICES=1` (set by CI), where a missing server is a failure.
//!   [`require_with`] does the same for any other tool (e.g. `tshark`).
//! - [`free_port`]: a free TCP port on 127.0.0.1.
//!
//! # Example
//!
//! ```no_run
//! if !chirp_testsvc::require("PostgreSQL", chirp_testsvc::postgres_available()) {
//!     return;
//! }
//! let pg = chirp_testsvc::Postgres::start().expect("start PostgreSQL");
//! let url = pg.url(); // postgres://chirp@127.0.0.1:PORT/chirp
//! # let _ = url;
//! ```
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. Under uid 0 they run as the `postgres` system
//! user (which the Debian package creates), and the temporary directory is handed to that user.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod nats;
mod postgres;
mod process;
mod tls;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

pub use error::Error;
pub use nats::Nats;
pub use postgres::{Postgres, postgres_tool};
pub use tls::{TestCerts, make_certs, openssl_available};

/// Environment variable that turns a skipped test (missing server binaries) into a failure.
pub const REQUIRE_ENV: &str = "CHIRP_REQUIRE_SERVICES";

/// How to install both servers on Debian or Ubuntu, for skip notes and errors.
const INSTALL_HINT: &str = "apt-get install postgresql nats-server";

/// Ports already handed out by [`free_port`] in this process, so that two servers started at
/// the same moment do not get the same port.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago: bound with port 0, read, released.
///
/// Another process may still take it before the caller binds it; [`Postgres::start`] and
/// [`Nats::start`] retry with another port when that happens. Within one process the same
/// port is never returned twice.
///
/// # Panics
///
/// When no port can be bound on 127.0.0.1 at all (no loopback interface).
pub fn free_port() -> u16 {
    // A poisoned lock only means another test panicked while holding it; the set is still valid.
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a TCP port on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read a bound socket's address: {e}"))
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Whether PostgreSQL can be started here: `initdb`, `postgres`, `pg_isready` and `createdb`
/// are found (in `PATH` or the newest `/usr/lib/postgresql/*/bin`), and, when running as root,
/// the `postgres` system user exists.
pub fn postgres_available() -> bool {
    postgres::available()
}

/// Whether `nats-server` is found (in `PATH`, `/usr/sbin` or `/usr/bin`).
pub fn nats_available() -> bool {
    nats::binary().is_some()
}

/// Whether a test that needs `what` (e.g. `"PostgreSQL"`) should run, given whether it is
/// `available` (from [`postgres_available`] / [`nats_available`]).
///
/// When it is not available this prints a one-line note to stderr and returns false, so the
/// test returns early, skipped.
///
/// # Panics
///
/// When it is not available and `CHIRP_REQUIRE_SERVICES` is set (to anything but empty or
/// `0`): CI sets it, so that a missing server cannot hide a broken test.
pub fn require(what: &str, available: bool) -> bool {
    require_with(
        what,
        available,
        &format!("install it with `{INSTALL_HINT}`"),
    )
}

/// [`require`] for anything else a test needs, with `how` to get it (e.g. "install it with
/// `apt-get install tshark`") for the note or the failure.
///
/// # Panics
///
/// As [`require`]: when it is not available and `CHIRP_REQUIRE_SERVICES` is set.
pub fn require_with(what: &str, available: bool, how: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{what} is required ({REQUIRE_ENV} is set) but not available; {how}");
    }
    #[allow(clippy::print_stderr)] // The skip note is the point: a test's stderr is shown.
    {
        eprintln!(
            "note: skipping test: {what} is not available ({how}; set {REQUIRE_ENV}=1 to fail instead)"
        );
    }
    false
}
