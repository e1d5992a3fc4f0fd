//! Helpers shared by the integration tests that run real `chirp` processes on loopback.
//!
//! - [`Proc`]: a child process that is killed and reaped on every path (`Drop`), whose stdout
//!   is read by a background thread into a channel (so every wait has a timeout) and whose
//!   stderr is collected for diagnostics and assertions.
//! - [`Chirp`]: a `chirp` child started with `--json`; its stdout is parsed into events.
//! - [`Guard`]: a child driven through its raw pipes (for tests that leave stdout unread for a
//!   while, or write stdin from another thread), killed and reaped on drop.
//! - [`Server`]: a `chirp serve` child, with the address and fingerprint it printed.
//! - [`free_ports`], [`retry_bind`]: free loopback ports, and one retry for the small race
//!   between releasing a probed port and the child binding it.
//!
//! - [`netns`]: network namespaces made by a test, torn down on every path (`nat.rs`,
//!   `rendezvous.rs`, `lan.rs`).
//! - [`tmux`]: a private tmux server for the terminal UI's tests (`tui.rs`, `rendezvous.rs`,
//!   `lan.rs`).
//!
//! Every test binary uses a different subset of these, hence the `dead_code` allowance.

#![allow(dead_code)]

pub(crate) mod netns;
pub(crate) mod tmux;

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use chirp_netsim::noise;

/// [`noise`] with a seed of this moment and process: different in every run.
pub(crate) fn fresh_noise(len: usize) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
    noise(len, now ^ u64::from(std::process::id()) << 32)
}

/// The binary under test.
pub(crate) const CHIRP: &str = env!("CARGO_BIN_EXE_chirp");

/// Generous bound for one wait on a noisy 2-core machine; waits normally end in milliseconds.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// `n` distinct free UDP ports on 127.0.0.1 (all probed at once so they differ). They are
/// released before returning: a child must bind them soon, and [`retry_bind`] covers the race.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let sockets: Vec<UdpSocket> = (0..N)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| sockets[i].local_addr().expect("local_addr").port())
}

/// `127.0.0.1:port`.
pub(crate) fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether this machine can bind UDP on `::1`.
pub(crate) fn ipv6_loopback() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

/// Asserts that `p` wrote nothing to stderr (unless CHIRP_TEST_LOG turned logging on).
pub(crate) fn assert_quiet_stderr(p: &Proc, when: &str) {
    if std::env::var_os("CHIRP_TEST_LOG").is_none() {
        assert_eq!(p.stderr(), "", "{} wrote to stderr {when}", p.name);
    }
}

/// Whether `program` is on the PATH.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `setup`; if it fails because a probed port was taken in the meantime ("in use"),
/// runs it once more (with fresh ports, which `setup` picks itself). Panics on other errors.
#[allow(clippy::print_stderr)] // says why a test retried; peer.rs allows it too
pub(crate) fn retry_bind<T>(mut setup: impl FnMut() -> Result<T, String>) -> T {
    match setup() {
        Ok(t) => t,
        Err(e) if e.contains("in use") => {
            eprintln!("a probed port was taken before chirp bound it ({e}); retrying once");
            setup().unwrap_or_else(|e| panic!("setup failed twice: {e}"))
        }
        Err(e) => panic!("setup failed: {e}"),
    }
}

/// How a child's stdout is handed to the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdout {
    /// One channel item per line, without the `\n`.
    Lines,
    /// Chunks exactly as read (for programs that print bytes without newlines).
    Raw,
}

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<Vec<u8>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args` with piped stdin, stdout and stderr.
    pub(crate) fn spawn(name: &str, program: &str, args: &[String], mode: Stdout) -> Proc {
        Self::spawn_env(name, program, args, mode, &[])
    }

    /// Like [`Self::spawn`], with `env` set in the child's environment (after the defaults).
    pub(crate) fn spawn_env(
        name: &str,
        program: &str,
        args: &[String],
        mode: Stdout,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut cmd = Command::new(program);
        // Deterministic stderr whatever the caller's environment says; CHIRP_TEST_LOG (e.g.
        // `debug`) turns chirp's logs on when investigating a failure.
        cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
        // Keys and data default to the XDG directories: never the user's own in tests.
        let scratch = std::env::temp_dir().join(format!("chirp-tests-{}", std::process::id()));
        cmd.env("XDG_CONFIG_HOME", scratch.join("xdg-config"))
            .env("XDG_DATA_HOME", scratch.join("xdg-data"))
            .env("XDG_STATE_HOME", scratch.join("xdg-state"));
        if let Ok(filter) = std::env::var("CHIRP_TEST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} {args:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || match mode {
            Stdout::Lines => {
                let mut r = BufReader::new(stdout);
                loop {
                    let mut line = Vec::new();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if line.last() == Some(&b'\n') {
                                line.pop();
                            }
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Stdout::Raw => {
                let mut r = stdout;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .expect("stderr lock")
                        .extend_from_slice(&buf[..n]),
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            stdin,
            out,
            stderr,
            status: None,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin, for writing (panics once closed).
    pub(crate) fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin already closed")
    }

    /// Writes `bytes` to the child's stdin and flushes.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        let name = self.name.clone();
        let stdin = self.stdin();
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            panic!(
                "{name}: cannot write to stdin: {e}\nstderr: {}",
                self.stderr()
            );
        }
    }

    /// End of input for the child.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout item, waiting at most `timeout`.
    pub(crate) fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        self.out.recv_timeout(timeout)
    }

    /// Everything the child wrote to stderr so far (lossily decoded).
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr lock")).into_owned()
    }

    /// The exit status if the child has exited.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits at most `timeout` for the child to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (on Unix) and reap.
    pub(crate) fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short-lived command to completion (bounded by `timeout`): (status, stdout, stderr).
pub(crate) fn run_to_end(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let mut p = Proc::spawn(program, program, &args, Stdout::Raw);
    p.close_stdin();
    let status = p
        .wait_exit(timeout)
        .unwrap_or_else(|| panic!("{program} {args:?} did not exit within {timeout:?}"));
    let mut out = Vec::new();
    // The process has exited: the reader thread drains what is left and closes the channel.
    while let Ok(chunk) = p.recv(timeout) {
        out.extend_from_slice(&chunk);
    }
    // Give the stderr thread the same chance (it ends at EOF, right after the exit).
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut err = p.stderr();
    while err.is_empty() && Instant::now() < deadline && !status.success() {
        std::thread::sleep(Duration::from_millis(10));
        err = p.stderr();
    }
    (status, String::from_utf8_lossy(&out).into_owned(), err)
}

/// A `chirp` child with `--json` output, parsed into events.
#[derive(Debug)]
pub(crate) struct Chirp {
    pub(crate) proc: Proc,
    /// The `--bind` address (for peers).
    pub(crate) addr: SocketAddr,
    /// Every event read so far, in order.
    pub(crate) seen: Vec<Value>,
}

/// `chirp id --home DIR`: the fingerprint of the key there (created on first use).
pub(crate) fn fingerprint(home: &Path) -> String {
    let out = Command::new(CHIRP)
        .args(["id", "--home"])
        .arg(home)
        .output()
        .expect("run chirp id");
    assert!(out.status.success(), "chirp id failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Ends two peers' input (end of file) and checks that both exit 0, having read the rest of
/// what they printed (kept in `seen`); on failure, both peers' diagnostics.
pub(crate) fn both_exit_ok(a: &mut Chirp, b: &mut Chirp) {
    a.proc.close_stdin();
    b.proc.close_stdin();
    let (sa, sb) = (a.exit(WAIT), b.exit(WAIT));
    a.drain();
    b.drain();
    for (who, status) in [(&a.proc.name, sa), (&b.proc.name, sb)] {
        assert!(
            status.success(),
            "{who} exited with {status}\n{}\n{}",
            a.diag(),
            b.diag()
        );
    }
}

/// A peer's home directory (identity key, known keys) in tests: never the user's own. Keyed by
/// name and port, so that a peer restarted on its port keeps its identity (its partner would
/// otherwise, rightly, refuse its new key), while unrelated peers never share one.
pub(crate) fn peer_home(name: &str, bind: SocketAddr) -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("chirp-tests-{}", std::process::id()))
        .join(format!("{name}-{}", bind.port()))
}

impl Chirp {
    /// `chirp peer --bind BIND --to TO --json EXTRA...`, not yet known to have bound.
    pub(crate) fn spawn_peer(
        name: &str,
        bind: SocketAddr,
        to: SocketAddr,
        extra: &[&str],
    ) -> Chirp {
        let mut args: Vec<String> = [
            "peer",
            "--bind",
            &bind.to_string(),
            "--to",
            &to.to_string(),
            "--json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        if !extra.contains(&"--home") {
            args.push("--home".into());
            args.push(peer_home(name, bind).display().to_string());
        }
        Chirp {
            proc: Proc::spawn(name, CHIRP, &args, Stdout::Lines),
            addr: bind,
            seen: Vec::new(),
        }
    }

    /// Starts a peer and waits for its `status` line, which is printed once the socket is
    /// bound. `Err(stderr)` if it exits instead (e.g. the port was taken: contains "in use").
    pub(crate) fn peer(
        name: &str,
        bind: SocketAddr,
        to: SocketAddr,
        extra: &[&str],
    ) -> Result<Chirp, String> {
        let mut c = Chirp::spawn_peer(name, bind, to, extra);
        c.started()?;
        Ok(c)
    }

    /// Two reliable peers A and B on fresh loopback ports, started at the same time.
    pub(crate) fn pair(extra_a: &[&str], extra_b: &[&str]) -> (Chirp, Chirp) {
        retry_bind(|| {
            let [pa, pb] = free_ports();
            let a = Chirp::spawn_peer("A", lo(pa), lo(pb), extra_a);
            let b = Chirp::spawn_peer("B", lo(pb), lo(pa), extra_b);
            let (mut a, mut b) = (a, b);
            a.started()?;
            b.started()?;
            Ok((a, b))
        })
    }

    /// Waits for the `status` line of a child spawned with [`Chirp::spawn_peer`].
    pub(crate) fn started(&mut self) -> Result<(), String> {
        match self.next_event(WAIT) {
            Some(v) if v["type"] == "status" => Ok(()),
            Some(v) => panic!(
                "{}: first event is not a status: {v}\n{}",
                self.proc.name,
                self.diag()
            ),
            None => {
                let _ = self.proc.wait_exit(WAIT);
                std::thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "{} did not start: {}",
                    self.proc.name,
                    self.proc.stderr().trim()
                ))
            }
        }
    }

    /// The peer's address as chirp prints it in `from` and `peer` fields.
    pub(crate) fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// Types one line (a newline is added).
    pub(crate) fn line(&mut self, text: &str) {
        let mut b = text.as_bytes().to_vec();
        b.push(b'\n');
        self.proc.write(&b);
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or once stdout closed.
    pub(crate) fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let raw = self.proc.recv(timeout).ok()?;
        let v = serde_json::from_slice::<Value>(&raw).unwrap_or_else(|e| {
            panic!(
                "{}: stdout line is not JSON ({e}): {:?}\n{}",
                self.proc.name,
                String::from_utf8_lossy(&raw),
                self.diag()
            )
        });
        assert!(
            v["type"].is_string() && v["ts"].is_string(),
            "{}: event without type or ts: {v}",
            self.proc.name
        );
        self.seen.push(v.clone());
        Some(v)
    }

    /// Every event already printed, without waiting.
    pub(crate) fn poll(&mut self) {
        while self.next_event(Duration::ZERO).is_some() {}
    }

    /// Waits for the first event (after those already read) that satisfies `pred`; panics
    /// with diagnostics after `timeout` or if the process ends first.
    pub(crate) fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(v) if pred(&v) => return v,
                Some(_) => {}
                None => {
                    let exited = self.proc.try_status();
                    panic!(
                        "{}: no {what} within {timeout:?} (exited: {exited:?})\n{}",
                        self.proc.name,
                        self.diag()
                    )
                }
            }
        }
    }

    /// Waits for the next event of type `ty`.
    pub(crate) fn wait_type(&mut self, ty: &str, timeout: Duration) -> Value {
        self.wait_for(ty, timeout, |v| v["type"] == ty)
    }

    /// Waits for the next `n` messages; returns their texts. Other events are kept in `seen`.
    pub(crate) fn messages(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut texts = Vec::with_capacity(n);
        while texts.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = texts.len();
            let v = self.wait_for(&format!("message {} of {n}", got + 1), left, |v| {
                v["type"] == "message"
            });
            texts.push(v["text"].as_str().expect("message text").to_owned());
        }
        texts
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub(crate) fn exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.proc.wait_exit(timeout) {
            Some(s) => s,
            None => {
                self.poll();
                panic!(
                    "{}: did not exit within {timeout:?}\n{}",
                    self.proc.name,
                    self.diag()
                )
            }
        }
    }

    /// After the process exited: reads the rest of its stdout.
    pub(crate) fn drain(&mut self) {
        while self.next_event(Duration::from_secs(5)).is_some() {}
    }

    /// Events of type `ty` seen so far.
    pub(crate) fn seen_of(&self, ty: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["type"] == ty).collect()
    }

    /// The name, the events seen (the last 40) and stderr: attached to every failure.
    pub(crate) fn diag(&self) -> String {
        let skip = self.seen.len().saturating_sub(40);
        let events: Vec<String> = self.seen[skip..].iter().map(|v| format!("  {v}")).collect();
        format!(
            "--- {} ({} events, last {} shown):\n{}\n--- {} stderr:\n{}",
            self.proc.name,
            self.seen.len(),
            events.len(),
            events.join("\n"),
            self.proc.name,
            self.proc.stderr()
        )
    }
}

/// A `chirp` child driven through its raw pipes; killed and reaped when dropped. Unlike
/// [`Proc`], nothing reads its stdout until [`Guard::json_events`] is called, and its stdin
/// can be handed to another thread.
#[derive(Debug)]
pub(crate) struct Guard(pub(crate) Child);

impl Guard {
    /// Starts `chirp ARGS` with piped stdin and stdout; its stderr goes to `stderr`.
    pub(crate) fn chirp<S: AsRef<OsStr>>(args: &[S], stderr: Stdio) -> Guard {
        let child = Command::new(CHIRP)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn chirp");
        Guard(child)
    }

    /// The child's stdin (panics if already taken).
    pub(crate) fn take_stdin(&mut self) -> ChildStdin {
        self.0.stdin.take().expect("piped stdin")
    }

    /// Starts reading stdout on a thread (panics if already started): every line that is
    /// JSON, in order; other lines are skipped.
    pub(crate) fn json_events(&mut self) -> Receiver<Value> {
        let out = self.0.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Waits at most `limit` for the child to exit; panics after.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < end,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `chirp serve` child.
pub(crate) struct Server {
    pub(crate) proc: Proc,
    pub(crate) addr: SocketAddr,
    /// Its key fingerprint, as it printed it.
    pub(crate) fingerprint: String,
}

impl Server {
    /// Starts `chirp serve --bind BIND --data-dir DIR EXTRA...` and reads its first line.
    pub(crate) fn start(dir: &Path, bind: &str, extra: &[&str]) -> Server {
        Self::start_env(dir, bind, extra, &[])
    }

    /// Like [`Self::start`], with `env` in the server's environment (e.g. `RUST_LOG`).
    pub(crate) fn start_env(
        dir: &Path,
        bind: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut args: Vec<String> = ["serve", "--bind", bind, "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(dir.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut proc = Proc::spawn_env("server", CHIRP, &args, Stdout::Lines, env);
        let line = match proc.recv(WAIT) {
            Ok(l) => String::from_utf8_lossy(&l).into_owned(),
            Err(_) => panic!("server did not start: {}", proc.stderr()),
        };
        // "chirp server listening on ADDR (UDP); key fingerprint FP[ (new)]; data in DIR"
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let fingerprint = line
            .split("key fingerprint ")
            .nth(1)
            .and_then(|r| r.split([' ', ';']).next())
            .unwrap_or_else(|| panic!("no fingerprint in {line:?}"))
            .to_owned();
        Server {
            proc,
            addr,
            fingerprint,
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) fn terminate(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.proc.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let st = self
            .proc
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("server ignored SIGTERM: {}", self.proc.stderr()));
        assert!(st.success(), "server exit {st:?}: {}", self.proc.stderr());
    }
}

/// `chirp connect ADDR --nick NICK --home HOME --json [--join R]... EXTRA...`, named `name`.
pub(crate) fn connect_json(
    name: &str,
    server: SocketAddr,
    home: &Path,
    nick: &str,
    rooms: &[&str],
    extra: &[&str],
) -> Chirp {
    let mut args: Vec<String> = vec![
        "connect".into(),
        server.to_string(),
        "--nick".into(),
        nick.into(),
        "--home".into(),
        home.display().to_string(),
        "--json".into(),
    ];
    for r in rooms {
        args.push("--join".into());
        args.push((*r).into());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Chirp {
        proc: Proc::spawn(name, CHIRP, &args, Stdout::Lines),
        addr: server,
        seen: Vec::new(),
    }
}
