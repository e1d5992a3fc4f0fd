//! The server under test: started here as a child process, or one already running, found by
//! its pid; and what `/proc` says about a process.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::BenchError;

/// How long a started server may take to say it is listening.
const START_LIMIT: Duration = Duration::from_secs(20);

/// `chirp serve`, started by [`ServerProcess::start`]; killed and reaped when dropped, and
/// its temporary data directory removed.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `exe serve` on a free port of 127.0.0.1 with a fresh data directory, flood
    /// control and the per-address limits raised for `sessions` sessions from one address
    /// (the bench's clients all come from 127.0.0.1), plus `extra` flags; waits until it
    /// prints its first line (it is then listening).
    pub fn start(exe: &Path, sessions: usize, extra: &[String]) -> Result<Self, BenchError> {
        let data = tempfile::tempdir().map_err(BenchError::io("create a data directory"))?;
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(BenchError::io("find a free port"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let n = sessions.max(16).to_string();
        let mut args: Vec<String> = [
            "serve",
            "--bind",
            &addr.to_string(),
            "--data-dir",
            &path_str(data.path()),
            "--burst",
            "1000000",
            "--per-sec",
            "1000000",
            "--max-sessions-per-ip",
            &n,
            "--nick-claim-burst",
            &n,
            "--max-connections",
            // Room for every session of the run and a few more (the measuring client of
            // `flood`, a session still closing).
            &(sessions + 64).max(4096).to_string(),
            "--history-on-join",
            "0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend_from_slice(extra);
        let mut child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(BenchError::io(format!("start {}", exe.display())))?;
        let stdout = child.stdout.take();
        let mut server = Self {
            child,
            addr,
            _data: data,
        };
        let Some(stdout) = stdout else {
            return Err(BenchError::Stuck("the server has no stdout".into()));
        };
        // The first line says it is listening; the rest is read and dropped, so that the
        // server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(START_LIMIT) {
            Ok(_) => Ok(server),
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                Err(BenchError::Stuck(format!(
                    "the server did not start within {START_LIMIT:?} (exit status: {status:?})"
                )))
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(p: &Path) -> String {
    PathBuf::from(p).display().to_string()
}

/// A process's CPU time and memory, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// When it was taken.
    #[serde(skip)]
    pub at: Instant,
}

/// Clock ticks per second of `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`): 100 on every Linux
/// configuration that matters (it is fixed by the kernel's ABI, not by `HZ`).
pub(crate) const CLK_TCK: f64 = 100.0;

impl ProcSample {
    /// Reads `pid`'s figures now.
    pub fn read(pid: u32) -> Result<Self, BenchError> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(BenchError::io(format!("read /proc/{pid}/stat")))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(BenchError::io(format!("read /proc/{pid}/status")))?;
        let cpu_ticks = parse_cpu_ticks(&stat)
            .ok_or_else(|| BenchError::Stuck(format!("cannot parse /proc/{pid}/stat")))?;
        let rss_kib = parse_rss_kib(&status)
            .ok_or_else(|| BenchError::Stuck(format!("cannot parse /proc/{pid}/status")))?;
        Ok(Self {
            cpu_ticks,
            rss_kib,
            at,
        })
    }

    /// Reads `pid`'s figures now, if a pid is given.
    pub fn read_opt(pid: Option<u32>) -> Result<Option<Self>, BenchError> {
        pid.map(Self::read).transpose()
    }

    /// Share of one core the process used between `earlier` and this sample, in percent.
    pub fn cpu_percent_since(&self, earlier: &Self) -> f64 {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let ticks = self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64;
        100.0 * ticks / CLK_TCK / secs
    }
}

/// utime + stime: fields 14 and 15 of `/proc/PID/stat`, counted after the command name, which
/// is in parentheses and may itself contain spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// cutime + cstime (fields 16 and 17): the CPU time of the children the process has waited
/// for.
fn parse_children_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(13);
    let cutime: u64 = fields.next()?.parse().ok()?;
    let cstime: u64 = fields.next()?.parse().ok()?;
    Some(cutime + cstime)
}

/// The CPU time, in clock ticks, of `pid` and all its descendants: those running (found
/// through `/proc/PID/task/TID/children`) and those that ended and were waited for (their
/// parent's `cutime` and `cstime`). For a service of several processes, such as PostgreSQL's
/// postmaster and its backends. A descendant that ends while it is read is left out.
pub fn tree_cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(BenchError::io(format!("read /proc/{pid}/stat")))?;
    let own = parse_cpu_ticks(&stat)
        .zip(parse_children_ticks(&stat))
        .map(|(a, b)| a + b)
        .ok_or_else(|| BenchError::Stuck(format!("cannot parse /proc/{pid}/stat")))?;
    let mut total = own;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(BenchError::io(format!("read /proc/{pid}/task")))?;
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            // Ended meanwhile: its time moves to our `cutime` once waited for.
            total += tree_cpu_ticks(child).unwrap_or(0);
        }
    }
    Ok(total)
}

/// CPU time of a set of process trees over an interval, taken by [`CpuSample`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuFigures {
    /// Percent of one core (above 100 when they used more than one).
    pub cpu_percent: f64,
    /// Seconds of CPU time.
    pub cpu_s: f64,
}

/// The CPU time of some process trees ([`tree_cpu_ticks`]) at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    ticks: u64,
    at: Instant,
}

impl CpuSample {
    /// The trees of `pids` together, now.
    pub fn read(pids: &[u32]) -> Result<Self, BenchError> {
        let at = Instant::now();
        let ticks = pids
            .iter()
            .map(|&p| tree_cpu_ticks(p))
            .sum::<Result<u64, _>>()?;
        Ok(Self { ticks, at })
    }

    /// What they used between `earlier` and this sample.
    pub fn since(&self, earlier: &Self) -> CpuFigures {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        let cpu_s = self.ticks.saturating_sub(earlier.ticks) as f64 / CLK_TCK;
        CpuFigures {
            cpu_percent: if secs > 0.0 {
                100.0 * cpu_s / secs
            } else {
                0.0
            },
            cpu_s,
        }
    }
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (chirp (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 750 250 0 0 20 0 \
                    3 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_children_ticks(stat), Some(0));
        let waited = "7 (postgres) S 1 7 7 0 -1 4194560 1234 0 0 0 750 250 30 12 20 0";
        assert_eq!(parse_children_ticks(waited), Some(42));
        let status = "Name:\tchirp\nVmPeak:\t  10000 kB\nVmRSS:\t   45678 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(45_678));
    }

    #[test]
    fn reads_this_process() {
        let a = ProcSample::read(std::process::id()).expect("readable");
        assert!(a.rss_kib > 0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let b = ProcSample::read(std::process::id()).expect("readable");
        assert!(b.cpu_ticks >= a.cpu_ticks);
        assert!(b.cpu_percent_since(&a) >= 0.0);
    }

    #[test]
    fn a_tree_counts_its_children() {
        let me = std::process::id();
        let alone = tree_cpu_ticks(me).expect("readable");
        let before = CpuSample::read(&[me]).expect("readable");
        // A child that spins for a while, then is waited for: its time is ours from then on.
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let after = CpuSample::read(&[me]).expect("readable");
        assert!(tree_cpu_ticks(me).expect("readable") > alone);
        assert!(
            after.since(&before).cpu_s > 0.0,
            "{:?}",
            after.since(&before)
        );
    }
}
