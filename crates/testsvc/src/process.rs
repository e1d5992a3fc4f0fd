//! Child processes: finding programs, running setup commands with a deadline, signals, waiting
//! for a server to become ready, and stopping it (and, on a crash, its children) for certain.
//!
//! Signals are sent with the `kill` program, so that no `unsafe` libc call is needed; if it is
//! missing, stopping falls back to `Child::kill` (SIGKILL).

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Error;

/// How long a server may take to accept connections.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to shut down after SIGINT before it is killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long killed processes may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling interval of every wait.
const POLL: Duration = Duration::from_millis(25);
/// Lines of a log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// A user and group id to run a child as.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `name` in `PATH`, if it is an executable file there.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The effective user id of this process, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// The uid and gid of system user `name`, from `/etc/passwd`.
pub(crate) fn system_user(name: &str) -> Option<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs { uid, gid })
    })
}

/// A new temporary directory, owned by `run_as` when given.
///
/// A directory another user must reach sits under a base every user can traverse: the usual
/// temporary directory, or `/tmp` when `TMPDIR` points somewhere private.
pub(crate) fn temp_dir(prefix: &str, run_as: Option<RunAs>) -> Result<TempDir, Error> {
    let mut base = std::env::temp_dir();
    if run_as.is_some() && !world_traversable(&base) {
        base = PathBuf::from("/tmp");
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(Error::io(format!(
            "creating a temporary directory in {}",
            base.display()
        )))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).map_err(Error::io(
            format!("handing {} to uid {}", dir.path().display(), user.uid),
        ))?;
    }
    Ok(dir)
}

/// Whether every directory from `/` down to `dir` lets other users through.
fn world_traversable(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A command for `program`, run as `run_as` when given, with messages in the C locale (the
/// readiness checks read server logs).
pub(crate) fn command(program: &Path, run_as: Option<RunAs>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

/// Runs a setup command to completion within `timeout` and returns its stdout; a failure or a
/// timeout is an error quoting its output.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<String, Error> {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting {line}")))?;
    // Both pipes are drained by threads, so a chatty command cannot block on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => Some(status),
        None => {
            kill_tree(&mut child);
            None
        }
    };
    let stdout = stdout.map(join_output).unwrap_or_default();
    let stderr = stderr.map(join_output).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(Error::CommandFailed {
            command: line,
            status,
            output: format!("{stdout}{stderr}"),
        }),
        None => Err(Error::Io {
            what: format!("running {line}"),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no exit within {} s (killed); output:\n{stdout}{stderr}",
                    timeout.as_secs()
                ),
            ),
        }),
    }
}

/// Reads a pipe to its end on a thread.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error just ends the output early; the exit status tells what happened.
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn join_output(handle: thread::JoinHandle<Vec<u8>>) -> String {
    handle
        .join()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Waits up to `timeout` for `child` to exit.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            // Past the deadline, or the child cannot be waited for (already reaped).
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Sends signal `sig` (e.g. `"INT"`) to `pids` with the `kill` program; false if it could not.
fn signal(sig: &str, pids: &[u32]) -> bool {
    if pids.is_empty() {
        return true;
    }
    Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The state letter of process `pid` (`R`, `S`, `Z`, …), or `None` if there is no such process.
fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether process `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// The live child processes of `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            fs::read_to_string(format!("/proc/{candidate}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .filter(|&child| alive(child))
        .collect()
}

/// Stops `child` gently: SIGINT, up to [`STOP_TIMEOUT`] to exit, then [`kill_tree`].
pub(crate) fn stop(child: &mut Option<Child>) {
    let Some(mut process) = child.take() else {
        return;
    };
    if matches!(process.try_wait(), Ok(Some(_))) {
        return;
    }
    if signal("INT", &[process.id()]) && wait_timeout(&mut process, STOP_TIMEOUT).is_some() {
        return;
    }
    kill_tree(&mut process);
}

/// Kills `child` and its direct children with SIGKILL, as a crash would, and waits (bounded)
/// until they are gone.
///
/// The child is frozen with SIGSTOP first, so it cannot start another process between the
/// listing of its children and the kill. PostgreSQL's children would otherwise outlive the
/// postmaster for a moment, and a new postmaster refuses to start while they hold the old
/// shared memory.
pub(crate) fn kill_tree(child: &mut Child) {
    let pid = child.id();
    let stopped = signal("STOP", &[pid]);
    let children = if stopped {
        children_of(pid)
    } else {
        Vec::new()
    };
    let mut all = vec![pid];
    all.extend(&children);
    if !signal("KILL", &all) {
        // No `kill` program: at least the child itself.
        let _ = child.kill();
    }
    if wait_timeout(child, KILL_TIMEOUT).is_none() {
        let _ = child.kill();
        let _ = wait_timeout(child, KILL_TIMEOUT);
    }
    let deadline = Instant::now() + KILL_TIMEOUT;
    while children.iter().any(|&c| alive(c)) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
}

/// The size of file `path` (0 if it does not exist): where a new run's log lines start.
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The text of file `path` from byte `offset` on (lossy UTF-8; empty if unreadable).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last lines of log file `path`, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = read_from(path, 0);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Opens log file `path` for appending, as a child's stdout and stderr.
pub(crate) fn log_stdio(path: &Path) -> Result<(Stdio, Stdio), Error> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(format!("opening {}", path.display())))?;
    let copy = file
        .try_clone()
        .map_err(Error::io(format!("duplicating {}", path.display())))?;
    Ok((Stdio::from(file), Stdio::from(copy)))
}

/// Whether 127.0.0.1:`port` accepts a TCP connection; the stream if so.
pub(crate) fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()
}

/// What a server being started is.
pub(crate) struct Starting<'a> {
    /// `"postgres"` or `"nats-server"`.
    pub(crate) service: &'static str,
    /// Its log file.
    pub(crate) log: &'a Path,
    /// Where this run's lines start in the log.
    pub(crate) log_offset: u64,
}

/// Waits up to [`READY_TIMEOUT`] until `ready` (given this run's log text) holds. If the child
/// exits first, that is an error; if time runs out, the child is killed and that is an error.
/// On error the child has been reaped.
pub(crate) fn wait_ready(
    process: &mut Child,
    starting: &Starting<'_>,
    mut ready: impl FnMut(&str) -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = process.try_wait() {
            return Err(Error::Exited {
                service: starting.service,
                status,
                log_path: starting.log.to_path_buf(),
                log_tail: log_tail(starting.log),
            });
        }
        if ready(&read_from(starting.log, starting.log_offset)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            kill_tree(process);
            return Err(Error::NotReady {
                service: starting.service,
                secs: READY_TIMEOUT.as_secs(),
                log_path: starting.log.to_path_buf(),
                log_tail: log_tail(starting.log),
            });
        }
        thread::sleep(POLL);
    }
}

/// What the watchdog runs: `$1` is this process, `$2` the server, `$3` its directory.
///
/// It polls its own parent id; when this process dies without running `Drop` (SIGKILL, a
/// timeout, an abort, SIGINT to the whole process group), the watchdog is reparented, and it
/// stops the server (SIGINT, SIGKILL after 15 s) and removes the directory.
const WATCHDOG_SCRIPT: &str = r#"
while read -r _ _ _ ppid _ < /proc/$$/stat && [ "$ppid" = "$1" ]; do sleep 1; done
kill -INT "$2" 2>/dev/null
n=0
while [ "$n" -lt 15 ] && read -r _ _ state _ < "/proc/$2/stat" && [ "$state" != Z ]; do
  sleep 1
  n=$((n + 1))
done
kill -KILL "$2" 2>/dev/null
sleep 1
rm -rf "$3"
"#;

/// A `sh` process that cleans up after a server if this process dies before it can (see
/// [`WATCHDOG_SCRIPT`]). Dropping it ends it.
///
/// It runs in a process group of its own, so that a Ctrl-C meant for the tests does not end it
/// too.
#[derive(Debug)]
pub(crate) struct Watchdog(Child);

impl Watchdog {
    /// Watches over `server`, which runs in `dir`. Best effort: `None` if `sh` cannot start.
    pub(crate) fn spawn(server: u32, dir: &Path) -> Option<Self> {
        Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("chirp-testsvc-watchdog")
            .arg(std::process::id().to_string())
            .arg(server.to_string())
            .arg(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(Self)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = wait_timeout(&mut self.0, KILL_TIMEOUT);
    }
}
