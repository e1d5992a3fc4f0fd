//! A NATS server of its own: `nats-server` as a child, logging into a temporary directory.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use tempfile::TempDir;

use crate::Error;
use crate::process::{self, Starting, Watchdog};

/// Where `nats-server` is looked for after `PATH` (Debian's package puts it in `/usr/sbin`).
const FALLBACKS: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];
/// How many ports `start` tries when another process takes the free port first.
const PORT_ATTEMPTS: usize = 3;
/// The log line of a server that accepts connections.
const READY_LINE: &str = "Server is ready";

/// The path of `nats-server`, if installed.
pub(crate) fn binary() -> Option<PathBuf> {
    process::find_in_path("nats-server").or_else(|| {
        FALLBACKS
            .iter()
            .map(PathBuf::from)
            .find(|path| process::is_executable(path))
    })
}

/// A NATS server of its own, for one test, on a free port of 127.0.0.1 (no authentication, no
/// JetStream), logging into a temporary directory.
///
/// Dropping it stops the server and removes the directory; so does a panic that unwinds
/// through it.
#[derive(Debug)]
pub struct Nats {
    /// Holds `nats.log`.
    dir: TempDir,
    port: u16,
    binary: PathBuf,
    /// The server, while it runs.
    child: Option<Child>,
    /// Cleans up if the test process dies without dropping `self`.
    watchdog: Option<Watchdog>,
}

impl Nats {
    /// Starts `nats-server` and waits (up to 30 s) until it accepts connections.
    pub fn start() -> Result<Self, Error> {
        let binary = binary().ok_or_else(|| Error::NotFound {
            program: "nats-server".to_owned(),
            searched: FALLBACKS.join(", "),
        })?;
        let mut nats = Self {
            dir: process::temp_dir("chirp-nats-", None)?,
            port: crate::free_port(),
            binary,
            child: None,
            watchdog: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            match nats.launch() {
                Ok(()) => break,
                // Another process took the port between `free_port` and the bind: take another.
                Err(Error::Exited { ref log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("address already in use") =>
                {
                    nats.port = crate::free_port();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(nats)
    }

    /// The client URL: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (all runs, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| process::alive(c.id()))
    }

    /// Stops the server (SIGINT; killed if it has not exited within 15 s). Does nothing if it
    /// is not running.
    pub fn stop(&mut self) {
        self.watchdog = None;
        process::stop(&mut self.child);
    }

    /// Crashes the server with SIGKILL. Does nothing if it is not running.
    pub fn kill(&mut self) {
        self.watchdog = None;
        if let Some(mut child) = self.child.take() {
            process::kill_tree(&mut child);
        }
    }

    /// Starts the server again after [`Nats::stop`] or [`Nats::kill`], on the same port, and
    /// waits (up to 30 s) until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] if it is running; otherwise as [`Nats::start`] (the port may
    /// have been taken by another process meanwhile).
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.is_running() {
            return Err(Error::AlreadyRunning {
                service: "nats-server",
            });
        }
        self.stop();
        self.launch()
    }

    /// Starts `nats-server` and waits until it accepts connections.
    fn launch(&mut self) -> Result<(), Error> {
        let log = self.log_path();
        let log_offset = process::file_len(&log);
        // Its own messages go to the log file (`-l`); anything before that, such as a bad
        // flag, to the same file through stderr.
        let (stdout, stderr) = process::log_stdio(&log)?;
        let child = process::command(&self.binary, None)
            .current_dir(self.dir.path())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-l")
            .arg(&log)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        // Held by `self` from here on, so that `Drop` stops it whatever happens next, and
        // watched, so that it is stopped even if `Drop` never runs.
        self.watchdog = Watchdog::spawn(child.id(), self.dir.path());
        let child = self.child.insert(child);
        let starting = Starting {
            service: "nats-server",
            log: &log,
            log_offset,
        };
        let port = self.port;
        let result = process::wait_ready(child, &starting, |text| {
            text.contains(READY_LINE) && greets(port)
        });
        if result.is_err() {
            self.child = None;
            self.watchdog = None;
        }
        result
    }
}

/// Whether a connection to `port` is greeted with NATS's `INFO {…}` line.
fn greets(port: u16) -> bool {
    let Some(stream) = process::connect(port) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO {")
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
