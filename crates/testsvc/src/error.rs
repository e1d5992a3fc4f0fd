//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Why a server could not be started (stopping never fails: it escalates to SIGKILL).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program was found neither in `PATH` nor in the usual install directories.
    #[error(
        "`{program}` not found in PATH nor in {searched}; install it with `apt-get install postgresql nats-server`"
    )]
    NotFound {
        /// The program's name.
        program: String,
        /// Where else it was looked for.
        searched: String,
    },
    /// Running as root, but there is no `postgres` user to run `initdb` and `postgres` as.
    #[error(
        "running as root, where initdb and postgres refuse to run, and /etc/passwd has no `postgres` user to run them as"
    )]
    NoPostgresUser,
    /// The file system or process creation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or program.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A setup command (`initdb`, `createdb`, `psql`) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
    /// The server process exited while it was starting.
    #[error("{service} exited while starting ({status}); log {log_path}:\n{log_tail}")]
    Exited {
        /// `"postgres"` or `"nats-server"`.
        service: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The log file.
        log_path: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    /// The server did not accept connections in time (it has been killed).
    #[error("{service} did not accept connections within {secs} s; log {log_path}:\n{log_tail}")]
    NotReady {
        /// `"postgres"` or `"nats-server"`.
        service: &'static str,
        /// How long was waited.
        secs: u64,
        /// The log file.
        log_path: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    /// `start_again` was called while the server is still running.
    #[error("{service} is still running; stop or kill it before starting it again")]
    AlreadyRunning {
        /// `"postgres"` or `"nats-server"`.
        service: &'static str,
    },
}

impl Error {
    /// An [`Error::Io`] with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
