//! The runner on a real terminal: the demo example (a fake network) inside tmux. It draws,
//! sends, quits on Ctrl+C, and leaves a usable terminal behind, also after a panic.
//!
//! Needs `tmux` (CI installs it). Each test runs its own tmux server (`-L`), so nothing here
//! touches a user's sessions, and kills it when done.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The demo example, built by `cargo test` next to this test's binary.
fn demo() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/terminal-<hash> -> target/<profile>/examples/demo
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let demo = profile_dir.join("examples").join("demo");
    assert!(
        demo.exists(),
        "{} missing: cargo test builds examples",
        demo.display()
    );
    demo
}

struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `script` (sh) in a 100x30 pane of a private tmux server.
    fn start(name: &str, script: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("chirp-tui-{name}-{}", std::process::id()),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            "-c",
            script,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed (is tmux installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (CI installs it)")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Waits (at most 20 s) until the screen contains every needle; returns the screen.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.capture();
            if needles.iter().all(|n| screen.contains(n)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needles:?}; screen:\n{screen}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Runs the demo, then reports its exit code and whether the terminal is back in cooked
/// mode (`icanon` on, not `-icanon`), and stays open to be read.
fn script(env: &str) -> String {
    format!(
        "RUST_BACKTRACE=0 {env} '{}'; echo \"EXITED $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon | sed 's/^/MODE /'; sleep 60",
        demo().display()
    )
}

#[test]
fn ui_runs_sends_and_ctrl_c_restores_the_terminal() {
    let tmux = Tmux::start("quit", &script(""));
    let screen = tmux.wait_for(&["connected │ rtt", "[#random]", " 2 #chirp"]);
    assert!(screen.contains("you joined #random"), "{screen}");
    tmux.keys(&["M-2"]);
    tmux.wait_for(&["[#chirp]"]);
    tmux.keys(&["hello from tmux", "Enter"]);
    tmux.wait_for(&["✓ <me> hello from tmux"]);
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for(&["EXITED 0", "MODE "]);
    assert!(
        screen.contains("MODE icanon"),
        "raw mode left on:\n{screen}"
    );
    assert!(
        !screen.contains("connected │"),
        "alternate screen not left:\n{screen}"
    );
}

#[test]
fn a_panic_restores_the_terminal_and_its_message_is_readable() {
    let tmux = Tmux::start("panic", &script("CHIRP_TUI_DEMO_PANIC_AFTER_MS=1500"));
    tmux.wait_for(&["connected │ rtt"]);
    let screen = tmux.wait_for(&["EXITED 101", "MODE "]);
    assert!(
        screen.contains("MODE icanon"),
        "raw mode left on:\n{screen}"
    );
    assert!(screen.contains("demo panic, as asked"), "{screen}");
    assert!(
        !screen.contains("connected │"),
        "alternate screen not left:\n{screen}"
    );
    // The message starts at the left margin: it was printed in cooked mode (raw mode would
    // have staircased it).
    let line = screen
        .lines()
        .find(|l| l.contains("panicked at"))
        .unwrap_or_else(|| panic!("no panic message:\n{screen}"));
    assert!(line.starts_with("thread"), "{screen}");
}
