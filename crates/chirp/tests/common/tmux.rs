//! A private tmux server for the tests of the terminal UI (`tui.rs`, `rendezvous.rs` for the
//! path in the status bar, `lan.rs` for picking a peer on terminals): sessions whose stdin and stdout are terminals, keys typed with
//! `send-keys`, screens read with `capture-pane`. Killed on drop, on every path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{WAIT, have};

/// Screen size of every client.
pub(crate) const COLS: &str = "100";
pub(crate) const ROWS: &str = "30";

/// A private tmux server, killed when dropped (also while unwinding from a failed assert).
pub(crate) struct Tmux {
    /// Its socket, in the test's temporary directory (tmux leaves the file behind).
    socket: PathBuf,
    /// Whether a screen is read with wrapped lines joined (`capture-pane -J`).
    join_wrapped: bool,
}

impl Tmux {
    pub(crate) fn new(dir: &Path) -> Tmux {
        Tmux {
            socket: dir.join("tmux.sock"),
            join_wrapped: false,
        }
    }

    /// Reads screens with a line that wraps at the screen's edge joined into one: for
    /// matching a line longer than [`COLS`].
    pub(crate) fn join_wrapped(mut self) -> Tmux {
        self.join_wrapped = true;
        self
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            // The clients print UTF-8 (box drawing, ✓); tmux must not mangle it.
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux {args:?}: {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A detached session `name` running `command` (a shell command line).
    pub(crate) fn start(&self, name: &str, command: &str) {
        self.start_argv(name, &[command]);
    }

    /// A detached session `name` running `argv` (a program and its arguments; with more than
    /// one element no shell comes in between).
    pub(crate) fn start_argv(&self, name: &str, argv: &[&str]) {
        let mut args = vec!["new-session", "-d", "-x", COLS, "-y", ROWS, "-s", name];
        args.extend_from_slice(argv);
        self.run(&args);
    }

    /// Types `text` literally, then Enter.
    pub(crate) fn type_line(&self, name: &str, text: &str) {
        self.run(&["send-keys", "-t", name, "-l", text]);
        self.run(&["send-keys", "-t", name, "Enter"]);
    }

    pub(crate) fn keys(&self, name: &str, keys: &str) {
        self.run(&["send-keys", "-t", name, keys]);
    }

    pub(crate) fn screen(&self, name: &str) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", name];
        if self.join_wrapped {
            args.push("-J");
        }
        String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
    }

    /// Polls the screen of `name` until `pred` holds (at most [`WAIT`]); returns that screen.
    pub(crate) fn wait_for(&self, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_within(name, what, WAIT, pred)
    }

    /// [`Self::wait_for`], at most `limit`.
    pub(crate) fn wait_within(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen(name);
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no {what} within {limit:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Also kills the clients running in it. Errors (no server left) do not matter.
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Whether tmux is here; if not, says that `test` is skipped (`.ci/run` installs tmux).
pub(crate) fn tmux_installed(test: &str) -> bool {
    let here = have("tmux");
    if !here {
        #[allow(clippy::print_stderr)] // the one place a skip can be reported
        {
            eprintln!("SKIPPED {test}: tmux is not installed (.ci/run installs it)");
        }
    }
    here
}
