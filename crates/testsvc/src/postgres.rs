//! A PostgreSQL server of its own: `initdb` into a temporary directory, `postgres` as a child.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use tempfile::TempDir;

use crate::Error;
use crate::process::{self, RunAs, Starting, Watchdog};

/// Where Debian and Ubuntu install each PostgreSQL version's programs: `/usr/lib/postgresql/N/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// The superuser `initdb` creates, and the database `start` creates.
const USER: &str = "chirp";
const DATABASE: &str = "chirp";
/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a client command (`createdb`, `psql`, `pg_isready`) may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports `start` tries when another process takes the free port first.
const PORT_ATTEMPTS: usize = 3;
/// The log line of a postmaster that accepts connections.
const READY_LINE: &str = "ready to accept connections";

/// The path of PostgreSQL program `name` (`psql`, `initdb`, …): from `PATH`, else from the
/// newest `/usr/lib/postgresql/*/bin` (Debian's layout, which puts only a few wrappers in
/// `PATH`).
pub fn postgres_tool(name: &str) -> Option<PathBuf> {
    process::find_in_path(name).or_else(|| {
        let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(DEBIAN_ROOT)
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry
                    .file_name()
                    .to_str()?
                    .split('.')
                    .map(str::parse)
                    .collect::<Result<Vec<u32>, _>>()
                    .ok()?;
                Some((version, entry.path().join("bin").join(name)))
            })
            .filter(|(_, path)| process::is_executable(path))
            .collect();
        versions.sort();
        versions.pop().map(|(_, path)| path)
    })
}

fn tool(name: &str) -> Result<PathBuf, Error> {
    postgres_tool(name).ok_or_else(|| Error::NotFound {
        program: name.to_owned(),
        searched: format!("{DEBIAN_ROOT}/*/bin"),
    })
}

/// Who runs `initdb` and `postgres`: the `postgres` user under root, else this process's user.
fn server_user() -> Result<Option<RunAs>, Error> {
    if process::is_root() {
        process::system_user("postgres")
            .map(Some)
            .ok_or(Error::NoPostgresUser)
    } else {
        Ok(None)
    }
}

pub(crate) fn available() -> bool {
    ["initdb", "postgres", "pg_isready", "createdb"]
        .iter()
        .all(|name| postgres_tool(name).is_some())
        && server_user().is_ok()
}

/// The programs a server needs, found once.
#[derive(Debug)]
struct Tools {
    postgres: PathBuf,
    pg_isready: PathBuf,
}

/// A PostgreSQL server of its own, for one test: a fresh cluster in a temporary directory,
/// served on a free port of 127.0.0.1 by a child process, with superuser `chirp` (trust
/// authentication) and an empty database `chirp`.
///
/// Dropping it stops the server and removes the directory; so does a panic that unwinds
/// through it.
#[derive(Debug)]
pub struct Postgres {
    /// Holds `data/` (the cluster), the Unix socket, and `postgres.log`.
    dir: TempDir,
    port: u16,
    run_as: Option<RunAs>,
    tools: Tools,
    /// The postmaster, while it runs.
    child: Option<Child>,
    /// Cleans up if the test process dies without dropping `self`.
    watchdog: Option<Watchdog>,
}

impl Postgres {
    /// Creates a cluster (`initdb`: superuser `chirp`, trust authentication, UTF8, C locale),
    /// starts the server, waits (up to 30 s) until it accepts connections, and creates database
    /// `chirp`.
    ///
    /// Under root, `initdb` and `postgres` run as the `postgres` system user.
    pub fn start() -> Result<Self, Error> {
        let initdb = tool("initdb")?;
        let createdb = tool("createdb")?;
        let tools = Tools {
            postgres: tool("postgres")?,
            pg_isready: tool("pg_isready")?,
        };
        let run_as = server_user()?;
        let dir = process::temp_dir("chirp-pg-", run_as)?;
        let data = dir.path().join("data");
        process::run(
            process::command(&initdb, run_as)
                .current_dir(dir.path())
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
            INITDB_TIMEOUT,
        )?;
        let mut pg = Self {
            dir,
            port: crate::free_port(),
            run_as,
            tools,
            child: None,
            watchdog: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            match pg.launch() {
                Ok(()) => break,
                // Another process took the port between `free_port` and the bind: take another.
                Err(Error::Exited { ref log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("Address already in use") =>
                {
                    pg.port = crate::free_port();
                }
                Err(e) => return Err(e),
            }
        }
        process::run(
            process::command(&createdb, None).args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                USER,
                DATABASE,
            ]),
            CLIENT_TIMEOUT,
        )?;
        Ok(pg)
    }

    /// The connection URL: `postgres://chirp@127.0.0.1:PORT/chirp`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file (all runs, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| process::alive(c.id()))
    }

    /// Stops the server with a fast shutdown (SIGINT: open transactions are rolled back, the
    /// data is checkpointed). If it has not exited within 15 s it is killed. Does nothing if it
    /// is not running.
    pub fn stop(&mut self) {
        self.watchdog = None;
        process::stop(&mut self.child);
    }

    /// Crashes the server: SIGKILL to the postmaster and all its processes at once, as a power
    /// cut would. Committed data survives (`fsync=on`); [`Postgres::start_again`] runs crash
    /// recovery. Does nothing if it is not running.
    pub fn kill(&mut self) {
        self.watchdog = None;
        if let Some(mut child) = self.child.take() {
            process::kill_tree(&mut child);
        }
    }

    /// Starts the server again after [`Postgres::stop`] or [`Postgres::kill`], on the same data
    /// directory and port, and waits (up to 30 s) until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] if it is running; otherwise as [`Postgres::start`] (the port
    /// may have been taken by another process meanwhile).
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.is_running() {
            return Err(Error::AlreadyRunning {
                service: "postgres",
            });
        }
        self.stop();
        self.launch()
    }

    /// Runs SQL with `psql` (in the database `chirp`, stopping at the first error) and returns
    /// its output: unaligned, tuples only, so `select 1` gives `"1\n"`.
    pub fn psql(&self, sql: &str) -> Result<String, Error> {
        let psql = tool("psql")?;
        process::run(
            process::command(&psql, None)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    USER,
                    "-d",
                    DATABASE,
                ])
                .args(["-c", sql]),
            CLIENT_TIMEOUT,
        )
    }

    /// Starts the postmaster on the existing cluster and waits until it accepts connections.
    fn launch(&mut self) -> Result<(), Error> {
        let log = self.log_path();
        let log_offset = process::file_len(&log);
        let (stdout, stderr) = process::log_stdio(&log)?;
        let port = self.port.to_string();
        let child = process::command(&self.tools.postgres, self.run_as)
            .current_dir(self.dir.path())
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &port])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=on"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "lc_messages=C"])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(Error::io(format!(
                "starting {}",
                self.tools.postgres.display()
            )))?;
        // Held by `self` from here on, so that `Drop` stops it whatever happens next, and
        // watched, so that it is stopped even if `Drop` never runs.
        self.watchdog = Watchdog::spawn(child.id(), self.dir.path());
        let child = self.child.insert(child);
        let starting = Starting {
            service: "postgres",
            log: &log,
            log_offset,
        };
        let pg_isready = &self.tools.pg_isready;
        // The log line first: reading it is cheap, `pg_isready` is a process.
        let result = process::wait_ready(child, &starting, |text| {
            text.contains(READY_LINE) && is_ready(pg_isready, self.port)
        });
        if result.is_err() {
            self.child = None;
            self.watchdog = None;
        }
        result
    }

    /// Removes the System V shared memory segment a killed postmaster leaves behind (a new
    /// postmaster would reuse it; with none to come, it would stay until reboot). Best effort.
    fn release_shared_memory(&self) {
        let Ok(pid_file) = fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return;
        };
        // Line 7 of postmaster.pid: "KEY ID" of the segment.
        let Some(id) = pid_file
            .lines()
            .nth(6)
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|id| id.parse::<u64>().ok())
        else {
            return;
        };
        let _ = process::run(
            process::command(Path::new("ipcrm"), None).args(["-m", &id.to_string()]),
            CLIENT_TIMEOUT,
        );
    }
}

/// Whether `pg_isready` finds the server on `port` accepting connections over TCP. It logs in
/// as `chirp` to `postgres`, which exist from the start, so the server logs no failed login.
fn is_ready(pg_isready: &Path, port: u16) -> bool {
    process::run(
        process::command(pg_isready, None).args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "5",
        ]),
        CLIENT_TIMEOUT,
    )
    .is_ok()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        self.release_shared_memory();
    }
}
