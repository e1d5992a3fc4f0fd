//! Tab completion of `/commands`, `#rooms` and nicks.
//!
//! The word before the cursor picks the kind: `/` at the start of the line completes a
//! command, `#` a room, anything else a nick (a nick at the start of the line gets `: `, as
//! in IRC clients). Matching is a case-insensitive prefix. Pressing Tab again cycles through
//! the candidates, Shift+Tab cycles back; any other key ends the cycle.

use crate::command::{self, Context};
use crate::editor::Editor;

/// What completion can draw from.
#[derive(Debug, Default)]
pub(crate) struct Sources<'a> {
    /// Nicks, most relevant (most recently active) first.
    pub(crate) nicks: Vec<&'a str>,
    /// Room names with their `#`.
    pub(crate) rooms: Vec<&'a str>,
    /// Peer mode: no server commands.
    pub(crate) peer: bool,
}

/// A completion in progress: Tab cycles through `candidates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    /// Byte offset where the completed word starts.
    start: usize,
    /// Byte offset where the inserted text ends (the cursor after the last Tab).
    end: usize,
    candidates: Vec<String>,
    index: usize,
}

impl Completion {
    /// Starts completing the word before the cursor. `None` when nothing matches.
    pub(crate) fn start(editor: &mut Editor, sources: &Sources<'_>) -> Option<Completion> {
        let text = editor.text();
        let cursor = editor.cursor();
        let start = text[..cursor]
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &text[start..cursor];
        let lower = word.to_lowercase();
        let matches = |cand: &str| cand.to_lowercase().starts_with(&lower);
        let candidates: Vec<String> = if start == 0 && word.starts_with('/') {
            let context = if sources.peer {
                Context::PeerUi
            } else {
                Context::ChatUi
            };
            command::commands(context)
                .map(|s| s.word)
                .filter(|c| matches(c))
                .map(|c| format!("{c} "))
                .collect()
        } else if word.starts_with('#') {
            let mut rooms: Vec<&str> = sources
                .rooms
                .iter()
                .copied()
                .filter(|r| matches(r))
                .collect();
            rooms.sort_unstable();
            rooms.dedup();
            rooms.into_iter().map(|r| format!("{r} ")).collect()
        } else if word.is_empty() {
            return None;
        } else {
            let suffix = if start == 0 { ": " } else { " " };
            let mut seen = Vec::new();
            for n in sources.nicks.iter().copied().filter(|n| matches(n)) {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            seen.into_iter().map(|n| format!("{n}{suffix}")).collect()
        };
        let first = candidates.first()?.clone();
        editor.replace_range(start..cursor, &first);
        Some(Completion {
            start,
            end: start + first.len(),
            candidates,
            index: 0,
        })
    }

    /// Whether this completion still applies: the editor holds what the last Tab left.
    pub(crate) fn is_current(&self, editor: &Editor) -> bool {
        editor.cursor() == self.end
            && editor
                .text()
                .get(self.start..self.end)
                .is_some_and(|s| s == self.candidates[self.index])
    }

    /// Replaces the last candidate with the next (`forward`) or previous one.
    pub(crate) fn cycle(&mut self, editor: &mut Editor, forward: bool) {
        let n = self.candidates.len();
        self.index = if forward {
            (self.index + 1) % n
        } else {
            (self.index + n - 1) % n
        };
        let next = &self.candidates[self.index];
        editor.replace_range(self.start..self.end, next);
        self.end = self.start + next.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn editor(text: &str) -> Editor {
        let mut e = Editor::default();
        e.set(text);
        e
    }

    fn sources() -> Sources<'static> {
        Sources {
            nicks: vec!["bob", "Bea", "alice", "bob"],
            rooms: vec!["#rust", "#random", "#chirp"],
            peer: false,
        }
    }

    #[test]
    fn peer_mode_completes_no_server_commands() {
        let peer = Sources {
            peer: true,
            ..sources()
        };
        // `/j` would be `/join`, which needs a server; `/h` is still `/help`.
        let mut e = editor("/j");
        assert!(Completion::start(&mut e, &peer).is_none());
        assert_eq!(e.text(), "/j");
        let mut e = editor("/j");
        assert!(Completion::start(&mut e, &sources()).is_some());
        assert_eq!(e.text(), "/join ");
        let mut e = editor("/h");
        assert!(Completion::start(&mut e, &peer).is_some());
        assert_eq!(e.text(), "/help ");
        // Every command of the UI is offered with a server, and peer mode offers exactly those
        // that work without one.
        for (peer, context) in [(false, Context::ChatUi), (true, Context::PeerUi)] {
            let src = Sources { peer, ..sources() };
            for spec in command::COMMANDS {
                let mut e = editor(spec.word);
                let offered = Completion::start(&mut e, &src).is_some_and(|mut c| {
                    (0..command::COMMANDS.len()).any(|_| {
                        let hit = e.text() == format!("{} ", spec.word);
                        c.cycle(&mut e, true);
                        hit
                    })
                });
                assert_eq!(
                    offered,
                    spec.available_in(context),
                    "{} {context:?}",
                    spec.word
                );
            }
        }
        assert!(command::commands(Context::PeerUi).count() >= 10);
    }

    #[test]
    fn nick_at_line_start_gets_a_colon() {
        let mut e = editor("al");
        let c = Completion::start(&mut e, &sources()).expect("alice matches");
        assert_eq!(e.text(), "alice: ");
        assert!(c.is_current(&e));
    }

    #[test]
    fn nick_mid_line_cycles_case_insensitively_in_activity_order() {
        let mut e = editor("hi B");
        let mut c = Completion::start(&mut e, &sources()).expect("two match");
        assert_eq!(e.text(), "hi bob ");
        c.cycle(&mut e, true);
        assert_eq!(e.text(), "hi Bea ");
        c.cycle(&mut e, true);
        assert_eq!(e.text(), "hi bob ", "wraps around; bob listed once");
        c.cycle(&mut e, false);
        assert_eq!(e.text(), "hi Bea ");
    }

    #[test]
    fn commands_only_at_line_start() {
        let mut e = editor("/jo");
        Completion::start(&mut e, &sources()).expect("/join");
        assert_eq!(e.text(), "/join ");
        let mut e = editor("see /jo");
        assert!(Completion::start(&mut e, &sources()).is_none());
    }

    #[test]
    fn rooms_sorted() {
        let mut e = editor("/join #r");
        let mut c = Completion::start(&mut e, &sources()).expect("two rooms");
        assert_eq!(e.text(), "/join #random ");
        c.cycle(&mut e, true);
        assert_eq!(e.text(), "/join #rust ");
    }

    #[test]
    fn completes_in_the_middle_of_the_line() {
        let mut e = editor("hi al how are you");
        for _ in 0.." how are you".len() {
            e.left();
        }
        Completion::start(&mut e, &sources()).expect("alice");
        assert_eq!(e.text(), "hi alice  how are you");
        assert_eq!(e.cursor(), "hi alice ".len());
    }

    #[test]
    fn no_match_changes_nothing() {
        let mut e = editor("zed");
        assert!(Completion::start(&mut e, &sources()).is_none());
        assert_eq!(e.text(), "zed");
        let mut e = editor("");
        assert!(Completion::start(&mut e, &sources()).is_none());
    }

    #[test]
    fn editing_ends_the_cycle() {
        let mut e = editor("b");
        let c = Completion::start(&mut e, &sources()).expect("bob");
        e.insert_char('x');
        assert!(!c.is_current(&e));
    }
}
