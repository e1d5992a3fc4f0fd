//! Network namespaces for the benches that need a topology of their own (the NAT bench, the
//! TCP reference of the bulk bench): built with `ip`, each command bounded in time, deleted
//! on drop with whatever still runs in them, and the leftovers of a killed bench swept at the
//! next start.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::BenchError;

/// Bound on one `ip` or `iptables` command (they normally take milliseconds).
const CMD_LIMIT: Duration = Duration::from_secs(10);
/// Prefix of the namespaces' names, followed by `PID-N-`.
const NS_PREFIX: &str = "chirp-nb-";

/// Why the NAT bench cannot run here (not root, no `ip` or `iptables`), or `Ok`.
pub fn preflight() -> Result<(), String> {
    require(&["ip", "iptables"])
}

/// Why namespaces with `tools` cannot be built here (not root, a tool missing), or `Ok`.
pub(crate) fn require(tools: &[&str]) -> Result<(), String> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    });
    if !root {
        return Err("not running as root".into());
    }
    for tool in tools {
        if !have(tool) {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    Ok(())
}

pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `program args` to completion, bounded by [`CMD_LIMIT`]: its stdout, or what went wrong.
pub(crate) fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let what = || format!("`{program} {}`", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", what()))?;
    let deadline = Instant::now() + CMD_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish within {CMD_LIMIT:?}", what()));
            }
            Err(e) => return Err(format!("{}: {e}", what())),
        }
    };
    // The outputs of these commands are small: they fit in the pipes, read after the exit.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{} failed ({status}): {}", what(), err.trim()))
    }
}

/// Kills what still runs in namespace `ns`, then deletes it. Never panics.
pub(crate) fn teardown(ns: &str) {
    if let Ok(pids) = cmd("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = cmd("kill", &["-KILL", pid]);
        }
    }
    if let Err(e) = cmd("ip", &["netns", "del", ns]) {
        tracing::warn!("could not delete network namespace {ns}: {e}");
    }
}

/// Deletes the namespaces of benches that were killed before they could (their pid is gone).
pub(crate) fn sweep_leftovers() {
    let Ok(list) = cmd("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            teardown(name);
        }
    }
}

/// The namespaces of one run; deleted on drop with whatever still runs in them.
#[derive(Debug)]
pub(crate) struct Namespaces {
    tag: String,
    names: Vec<String>,
}

impl Namespaces {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            tag: format!("{}-{n}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// What makes this run's names unique (`PID-N`): for devices of its own.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// A new namespace for `role`, its loopback up.
    pub(crate) fn add(&mut self, role: &str) -> Result<String, BenchError> {
        let name = format!("{NS_PREFIX}{}-{role}", self.tag);
        cmd("ip", &["netns", "add", &name]).map_err(BenchError::Stuck)?;
        self.names.push(name.clone());
        cmd("ip", &["-n", &name, "link", "set", "lo", "up"]).map_err(BenchError::Stuck)?;
        Ok(name)
    }

    /// A veth pair `nb{tag}{x}` in `a` and `nb{tag}{y}` in `b`, addressed and up.
    pub(crate) fn link(
        &self,
        (a, x, addr_a): (&str, char, &str),
        (b, y, addr_b): (&str, char, &str),
    ) -> Result<(String, String), BenchError> {
        let (ia, ib) = (format!("nb{}{x}", self.tag), format!("nb{}{y}", self.tag));
        cmd(
            "ip",
            &[
                "link", "add", &ia, "netns", a, "type", "veth", "peer", "name", &ib, "netns", b,
            ],
        )
        .map_err(BenchError::Stuck)?;
        for (ns, dev, addr) in [(a, &ia, addr_a), (b, &ib, addr_b)] {
            cmd("ip", &["-n", ns, "addr", "add", addr, "dev", dev]).map_err(BenchError::Stuck)?;
            cmd("ip", &["-n", ns, "link", "set", dev, "up"]).map_err(BenchError::Stuck)?;
        }
        Ok((ia, ib))
    }

    /// `sh -c script` in `ns`.
    pub(crate) fn sh(&self, ns: &str, script: &str) -> Result<String, BenchError> {
        cmd("ip", &["netns", "exec", ns, "sh", "-c", script]).map_err(BenchError::Stuck)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            teardown(ns);
        }
    }
}
