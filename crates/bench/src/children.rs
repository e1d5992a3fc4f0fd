//! The child processes of the benches that run the real `chirp` binary ([`crate::nat`], and the
//! `e2e_latency` example of the `chirp` crate), and the flags of the `chirp impair` proxy they
//! put in the path.
//!
//! - [`Children`]: each child's stdout is read line by line by a thread of its own, every line
//!   stamped as soon as it is read and sent into one channel, so that every wait for a line has
//!   a deadline; its stderr goes to a file, whose tail is shown when something goes wrong.
//!   Children are killed and reaped when dropped, on every path.
//!   [`Children::wait_for`] reads lines until one is what a run waits for, and
//!   [`Children::spawn_impair`] starts the proxy and waits until it forwards.
//! - [`Impairment`]: what `chirp impair` does to datagrams, as its flags.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::BenchError;

/// One stdout line of child `who`, stamped when it was read; `None` once its stdout closed.
#[derive(Debug)]
pub struct Out<W> {
    /// Which child.
    pub who: W,
    /// When the line was read.
    pub at: Instant,
    /// The line, without its newline; `None`: the child's stdout closed.
    pub line: Option<String>,
}

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
struct Proc<W> {
    who: W,
    name: String,
    child: Child,
    stderr: PathBuf,
}

impl<W> Proc<W> {
    fn stderr_tail(&self) -> String {
        const TAIL: u64 = 2000;
        let read = || -> std::io::Result<String> {
            let mut f = File::open(&self.stderr)?;
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).trim().to_owned())
        };
        match read() {
            Ok(s) if s.is_empty() => "(stderr empty)".to_owned(),
            Ok(s) => format!("stderr: {s}"),
            Err(e) => format!("(cannot read its stderr: {e})"),
        }
    }
}

impl<W> Drop for Proc<W> {
    fn drop(&mut self) {
        // Already exited is fine; after SIGKILL the wait returns at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The children of one run, told apart by a `W` each (see the [module documentation](self)).
#[derive(Debug)]
pub struct Children<W> {
    procs: Vec<Proc<W>>,
    rx: Receiver<Out<W>>,
    tx: Sender<Out<W>>,
}

impl<W: Copy + PartialEq + Send + 'static> Default for Children<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Copy + PartialEq + Send + 'static> Children<W> {
    /// No children yet.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            procs: Vec::new(),
            rx,
            tx,
        }
    }

    /// Starts `cmd` as `who` (`name` in messages): its stdout read into [`Self::recv_timeout`],
    /// its stderr written to the file `stderr`, its stdin a pipe if `stdin` (returned), else
    /// none.
    ///
    /// # Errors
    ///
    /// The file cannot be created, the process or its reader thread cannot be started.
    pub fn spawn(
        &mut self,
        who: W,
        name: &str,
        mut cmd: Command,
        stderr: PathBuf,
        stdin: bool,
    ) -> Result<Option<ChildStdin>, BenchError> {
        let file = File::create(&stderr)
            .map_err(BenchError::io(format!("create {}", stderr.display())))?;
        let mut child = cmd
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .map_err(BenchError::io(format!("start {name} ({cmd:?})")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        // Owned from here on: killed on every path.
        self.procs.push(Proc {
            who,
            name: name.to_owned(),
            child,
            stderr,
        });
        let stdout = stdout.ok_or_else(|| BenchError::Stuck(format!("{name} has no stdout")))?;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("{name} stdout"))
            .spawn(move || read_lines(who, stdout, &tx))
            .map_err(BenchError::io("start a reader thread"))?;
        Ok(stdin)
    }

    /// The next line of any child, within `timeout`.
    ///
    /// # Errors
    ///
    /// Nothing came in time, or no child is left to send anything.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Out<W>, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// What became of `who`, whose stdout closed: `alice exited (exit status: 1); stderr: …`.
    pub fn exited(&mut self, who: W) -> String {
        match self.procs.iter_mut().find(|p| p.who == who) {
            Some(p) => {
                let status = p.child.try_wait().ok().flatten().map_or_else(
                    || "closed its output".to_owned(),
                    |s| format!("exited ({s})"),
                );
                format!("{} {status}; {}", p.name, p.stderr_tail())
            }
            None => "a child closed its output".to_owned(),
        }
    }

    /// Every child's stderr tail, a line each, for a timeout's message.
    pub fn tails(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("\n  {}: {}", p.name, p.stderr_tail()))
            .collect()
    }

    /// Kills and reaps every child now.
    pub fn kill_all(&mut self) {
        self.procs.clear();
    }

    /// Reads the children's lines until `done` (given who printed it, when, and the line)
    /// says so, within `limit`.
    ///
    /// # Errors
    ///
    /// Nothing matched within `limit` (with every child's stderr tail), or a child's stdout
    /// closed meanwhile (what became of it).
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(W, Instant, &str) -> bool,
    ) -> Result<(), BenchError> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.recv_timeout(left) {
                Ok(Out {
                    who,
                    at,
                    line: Some(line),
                }) => {
                    if done(who, at, &line) {
                        return Ok(());
                    }
                }
                Ok(Out {
                    who, line: None, ..
                }) => {
                    let ended = self.exited(who);
                    return Err(BenchError::Stuck(format!(
                        "while waiting for {what}: {ended}"
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BenchError::Stuck(format!(
                        "no {what} within {limit:?}{}",
                        self.tails()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::Stuck("every child's output closed".into()));
                }
            }
        }
    }

    /// Starts `chirp impair --json` as `who`, with `route` (its `--listen`/`--to`, or
    /// `--client`/`--via` flags) and `imp`'s flags, and waits at most `limit` for its start
    /// line: from then on it forwards.
    ///
    /// # Errors
    ///
    /// As [`Self::spawn`] and [`Self::wait_for`].
    #[allow(clippy::too_many_arguments)] // each is one of impair's inputs; a struct would only rename them
    pub fn spawn_impair(
        &mut self,
        who: W,
        chirp: &Path,
        route: &[String],
        imp: &Impairment,
        seed: u64,
        stderr: PathBuf,
        limit: Duration,
    ) -> Result<(), BenchError> {
        let mut cmd = Command::new(chirp);
        cmd.args(["impair", "--json"])
            .args(route)
            .args(imp.flags(seed));
        self.spawn(who, "chirp impair", cmd, stderr, false)?;
        self.wait_for("chirp impair's start line", limit, |w, _, line| {
            w == who && is_impair_start(line)
        })
    }
}

/// A child's stdout, line by line, each stamped as soon as it is read.
fn read_lines<W: Copy>(who: W, stdout: impl Read, tx: &Sender<Out<W>>) {
    let mut r = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let at = Instant::now();
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                let line = Some(String::from_utf8_lossy(&buf).into_owned());
                if tx.send(Out { who, at, line }).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(Out {
        who,
        at: Instant::now(),
        line: None,
    });
}

/// What the `chirp impair` proxy does to datagrams (its flags of the same names).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Delay of every datagram, in milliseconds.
    pub delay_ms: u64,
    /// Extra random delay, uniform in 0 to this many milliseconds.
    pub jitter_ms: u64,
    /// Probability that a datagram is held back so that later ones overtake it.
    pub reorder: f64,
    /// How long a datagram is held back (`None`: impair's default).
    pub reorder_delay_ms: Option<u64>,
    /// Probability that a datagram is sent twice.
    pub dup: f64,
    /// Probability that a datagram is damaged.
    pub corrupt: f64,
    /// Each direction a bottleneck of this many bytes per second, with a drop-tail queue of
    /// impair's default (one bandwidth-delay product); `None`: no rate limit.
    pub rate: Option<u64>,
}

impl Impairment {
    /// The `chirp impair` flags, with the seed of its random choices.
    pub fn flags(&self, seed: u64) -> Vec<String> {
        let mut v = vec![
            "--loss".to_owned(),
            self.loss.to_string(),
            "--delay".to_owned(),
            self.delay_ms.to_string(),
            "--jitter".to_owned(),
            self.jitter_ms.to_string(),
            "--reorder".to_owned(),
            self.reorder.to_string(),
            "--dup".to_owned(),
            self.dup.to_string(),
            "--corrupt".to_owned(),
            self.corrupt.to_string(),
            "--seed".to_owned(),
            seed.to_string(),
        ];
        if let Some(ms) = self.reorder_delay_ms {
            v.extend(["--reorder-delay".to_owned(), ms.to_string()]);
        }
        if let Some(bytes) = self.rate {
            v.extend(["--rate".to_owned(), format!("{bytes}B/s")]);
        }
        v
    }

    /// The impairment in words; `per_row` when the loss rate changes from row to row.
    pub fn describe(&self, per_row: bool) -> String {
        let loss = if per_row {
            "loss per row".to_owned()
        } else {
            format!("loss {}", self.loss)
        };
        let mut s = format!(
            "{loss}, delay {} ms + jitter 0-{} ms",
            self.delay_ms, self.jitter_ms
        );
        if let Some(bytes) = self.rate {
            s.push_str(&format!(", rate {bytes} B/s"));
        }
        if self.reorder > 0.0 {
            let held = self
                .reorder_delay_ms
                .map_or_else(|| "impair's default".to_owned(), |ms| format!("{ms} ms"));
            s.push_str(&format!(", reorder {} (held back {held})", self.reorder));
        }
        if self.dup > 0.0 {
            s.push_str(&format!(", dup {}", self.dup));
        }
        if self.corrupt > 0.0 {
            s.push_str(&format!(", corrupt {}", self.corrupt));
        }
        s
    }
}

/// Whether `line`, of `chirp impair --json`, is its start line (it then forwards).
pub fn is_impair_start(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("impair_start"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_every_impairment_and_the_seed() {
        let imp = Impairment {
            loss: 0.25,
            delay_ms: 20,
            jitter_ms: 2,
            reorder_delay_ms: Some(40),
            ..Impairment::default()
        };
        assert_eq!(
            imp.flags(7).join(" "),
            "--loss 0.25 --delay 20 --jitter 2 --reorder 0 --dup 0 --corrupt 0 --seed 7 \
             --reorder-delay 40"
        );
        assert_eq!(
            imp.describe(false),
            "loss 0.25, delay 20 ms + jitter 0-2 ms"
        );
        let limited = Impairment {
            rate: Some(12_500_000),
            ..imp
        };
        assert!(
            limited.flags(7).join(" ").ends_with("--rate 12500000B/s"),
            "{:?}",
            limited.flags(7)
        );
        assert_eq!(
            limited.describe(true),
            "loss per row, delay 20 ms + jitter 0-2 ms, rate 12500000 B/s"
        );
    }

    #[test]
    fn the_start_line_is_told_from_the_others() {
        assert!(is_impair_start(
            r#"{"type":"impair_start","listen":"127.0.0.1:1"}"#
        ));
        assert!(!is_impair_start(r#"{"type":"impair_stats"}"#));
        assert!(!is_impair_start("impair_start"));
    }
}
