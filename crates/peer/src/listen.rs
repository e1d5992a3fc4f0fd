//! A `chirp peer` started without a peer to call (`--to`): it waits for one to call it (found
//! on the LAN, for example), then chats with that one. Sans IO, like the [`Session`] it hands
//! over to.
//!
//! The first thing a caller shows is its key, inside the handshake ([`Event::VerifyKey`]):
//! nothing of ours goes out, and nothing of its is taken, before it is judged. There is no
//! address the user named, so no first contact is trusted by itself:
//! - with a pin (`--peer-key`), the key with that fingerprint is accepted, from any address,
//!   and every other is refused (the refusal is shown, and we go on waiting);
//! - without one, the user is asked ([`Report::AskKey`]: `/accept` remembers the key for the
//!   caller's address in `known_keys`); with nobody to ask (`--json`, no terminal), the key is
//!   refused with a message naming its fingerprint and `--peer-key`.
//!
//! A refused caller cannot end the wait: only the user can ([`Input::Leave`],
//! [`Input::Interrupt`]). Once a key is accepted, [`ListenOutput::Chosen`] says so, with the
//! caller's address (its socket: chirp calls from the socket it listens on, so calling it back
//! there reaches it) and the inputs that came meanwhile (lines typed, end of input), for the
//! driver to start a [`Session`] with that peer pinned and hand them to it.
//!
//! [`Session`]: crate::Session

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use chirp_keys::{Fingerprint, PublicKey};
use chirp_proto::{ConnectionHandle, Event};
use tracing::debug;

use crate::session::{Input, Refusals, Report, Transport};
use crate::trust::Remember;

/// At most this many inputs wait for a caller; more lines are refused (with an error).
pub const MAX_QUEUED: usize = 1024;

/// What comes out of a [`Listener`].
#[derive(Debug)]
pub enum ListenOutput {
    /// Carry this out (a key verdict; no reply is expected).
    Transport(Transport),
    /// Tell the user.
    Report(Report),
    /// A caller's key was accepted: chat with it from now on (start a session with `to`,
    /// pinning `key`, and hand it `queued` in order). Nothing else comes out after this.
    Chosen {
        /// The caller's address.
        to: SocketAddr,
        /// Its key.
        key: PublicKey,
        /// What the user did while waiting (lines, end of input), in order.
        queued: Vec<Input>,
    },
    /// The user left before anyone called: exit with `code`.
    Exit {
        /// The process exit status (0, or 130 after Ctrl-C).
        code: u8,
    },
}

/// The question of [`Report::AskKey`] while waiting for a caller, for line mode and the UI.
pub fn ask_text(from: &str, fingerprint: &str) -> String {
    format!(
        "{from} is calling, with key {fingerprint}, never seen before: is it the peer you \
         expect? Compare the fingerprint with its owner's (chirp id) before trusting it."
    )
}

/// Waits for a caller (see the module documentation).
pub struct Listener<R> {
    pin: Option<Fingerprint>,
    can_ask: bool,
    remember: R,
    out: VecDeque<ListenOutput>,
    /// The handshake paused on a key only the user can judge, with its address and key.
    asking: Option<(ConnectionHandle, SocketAddr, PublicKey)>,
    /// Inputs for the session to come.
    queued: Vec<Input>,
    /// The last refusal shown, and when.
    refusals: Refusals,
    ended: bool,
}

impl<R> std::fmt::Debug for Listener<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("pin", &self.pin)
            .field("asking", &self.asking.map(|a| a.1))
            .field("queued", &self.queued.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<R: Remember> Listener<R> {
    /// Waits for a caller whose key has fingerprint `pin`, or (without one) whose key the
    /// user accepts (`can_ask`: someone can answer [`Report::AskKey`]).
    pub fn new(pin: Option<Fingerprint>, can_ask: bool, remember: R) -> Self {
        Self {
            pin,
            can_ask,
            remember,
            out: VecDeque::new(),
            asking: None,
            queued: Vec::new(),
            refusals: Refusals::default(),
            ended: false,
        }
    }

    /// The next thing to do. Call it after every input until it returns `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ListenOutput> {
        self.out.pop_front()
    }

    /// Inputs waiting for a caller (a line-mode driver stops reading at [`MAX_QUEUED`]).
    pub fn pending(&self) -> usize {
        self.queued.len()
    }

    /// An event of the protocol core.
    pub fn handle_event(&mut self, now: Instant, ev: Event) {
        if self.ended {
            return;
        }
        match ev {
            Event::VerifyKey {
                conn,
                remote,
                remote_key,
                ..
            } => self.on_verify(now, conn, remote, PublicKey(remote_key)),
            Event::Closed { conn, .. } => {
                if let Some((_, remote, _)) = self.asking.filter(|a| a.0 == conn) {
                    let text = format!(
                        "{remote} gave up waiting for an answer; /accept (Alt+Y) still trusts \
                         its key for its next attempt"
                    );
                    self.report(Report::Status(text));
                }
            }
            // Nothing else happens on a connection whose key was not accepted.
            _ => {}
        }
    }

    /// A request of the user.
    pub fn handle_input(&mut self, input: Input) {
        if self.ended {
            return;
        }
        match input {
            Input::KeyAnswer(yes) => self.answer(yes),
            Input::Send { local_id, .. } if self.queued.len() >= MAX_QUEUED => {
                let reason = "too many lines wait for a peer: that line was not sent".to_owned();
                self.report(match local_id {
                    Some(local_id) => Report::Failed { local_id, reason },
                    None => Report::Error(reason),
                });
            }
            Input::SendFile(_) if self.queued.len() >= MAX_QUEUED => {
                self.report(Report::Error("too many requests wait for a peer".into()));
            }
            // A file is offered once a peer has called.
            Input::Send { .. } | Input::EndOfInput | Input::SendFile(_) => self.queued.push(input),
            Input::AcceptFile(_) | Input::DeclineFile(_) | Input::CancelFile(_) => {
                self.report(Report::Error("no peer has called yet".into()));
            }
            Input::Stats => {
                self.report(Report::Error("no peer has called yet".into()));
            }
            Input::Link => self.report(Report::Link(None)),
            // Asked for by a session only (`Output::HashFile`, `Output::FinishFile`,
            // `Output::CheckFile`), never by the listener.
            Input::FileHashed { .. } => debug!("a hashed file with no session: dropped"),
            Input::FileFinished { .. } => debug!("a saved file with no session: dropped"),
            Input::FileChecked { .. } => debug!("a checked file with no session: dropped"),
            Input::Leave => self.exit(0),
            Input::Interrupt => self.exit(130),
        }
    }

    fn exit(&mut self, code: u8) {
        // Nobody new gets in while the process ends.
        self.transport(Transport::SetAcceptIncoming(false));
        if let Some((conn, _, _)) = self.asking.take() {
            self.transport(Transport::VerifyKey {
                conn,
                accept: false,
            });
        }
        self.ended = true;
        self.out.push_back(ListenOutput::Exit { code });
    }

    fn on_verify(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        remote: SocketAddr,
        key: PublicKey,
    ) {
        let fp = key.fingerprint();
        if let Some(pin) = self.pin {
            if fp == pin {
                self.choose(conn, remote, key);
            } else {
                self.transport(Transport::VerifyKey {
                    conn,
                    accept: false,
                });
                let text = format!(
                    "refusing peer {remote}: it presented key {fp}, but --peer-key pins {pin}"
                );
                self.show_refusal(now, text);
            }
            return;
        }
        match self.asking {
            Some((_, _, asked)) if asked == key => {
                // The same caller trying again: the open question now stands for this attempt.
                self.asking = Some((conn, remote, key));
            }
            None if self.can_ask => {
                debug!(?conn, %remote, "asking the user about a caller's key");
                self.asking = Some((conn, remote, key));
                self.report(Report::AskKey {
                    from: remote.to_string(),
                    fingerprint: fp.to_string(),
                });
            }
            _ => {
                // Nobody to ask, or a question about another caller is open.
                self.transport(Transport::VerifyKey {
                    conn,
                    accept: false,
                });
                let text = format!(
                    "refusing peer {remote}: its key {fp} is not known. To chat with it, start \
                     again with --peer-key {fp} (having checked the fingerprint with its owner), \
                     or on a terminal, to be asked"
                );
                self.show_refusal(now, text);
            }
        }
    }

    /// The user's answer to [`Report::AskKey`].
    fn answer(&mut self, yes: bool) {
        let Some((conn, remote, key)) = self.asking.take() else {
            let text = "no question is open (/accept and /refuse answer one about a new key)";
            self.report(Report::Error(text.into()));
            return;
        };
        if !yes {
            self.transport(Transport::VerifyKey {
                conn,
                accept: false,
            });
            let text = format!("refused key {} from {remote}", key.fingerprint());
            self.report(Report::Status(text));
            return;
        }
        match self.remember.remember(remote, key) {
            Ok(place) => {
                let text = format!(
                    "key {} from {remote} accepted, and remembered for {remote} {place}",
                    key.fingerprint()
                );
                self.report(Report::Status(text));
            }
            // Accepted all the same (the user said so); only the remembering failed.
            Err(e) => self.report(Report::Error(e)),
        }
        self.choose(conn, remote, key);
    }

    fn choose(&mut self, conn: ConnectionHandle, remote: SocketAddr, key: PublicKey) {
        if let Some((other, _, _)) = self.asking.take() {
            self.transport(Transport::VerifyKey {
                conn: other,
                accept: false,
            });
        }
        self.transport(Transport::VerifyKey { conn, accept: true });
        self.ended = true;
        self.out.push_back(ListenOutput::Chosen {
            to: remote,
            key,
            queued: std::mem::take(&mut self.queued),
        });
    }

    fn show_refusal(&mut self, now: Instant, text: String) {
        if !self.refusals.fresh(now, &text) {
            debug!("refused the same caller again");
            return;
        }
        self.report(Report::Error(text));
    }

    fn report(&mut self, r: Report) {
        self.out.push_back(ListenOutput::Report(r));
    }

    fn transport(&mut self, t: Transport) {
        self.out.push_back(ListenOutput::Transport(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chirp_keys::Identity;

    #[derive(Default)]
    struct Memory(Vec<(SocketAddr, PublicKey)>);

    impl Remember for &mut Memory {
        fn remember(&mut self, addr: SocketAddr, key: PublicKey) -> Result<String, String> {
            self.0.push((addr, key));
            Ok("in memory".into())
        }
    }

    fn key() -> PublicKey {
        Identity::generate().expect("key").public()
    }

    fn verify(conn: ConnectionHandle, remote: &str, key: PublicKey) -> Event {
        Event::VerifyKey {
            conn,
            remote: remote.parse().expect("addr"),
            incoming: true,
            remote_key: key.0,
        }
    }

    fn drain<R: Remember>(l: &mut Listener<R>) -> Vec<ListenOutput> {
        std::iter::from_fn(|| l.poll_output()).collect()
    }

    fn verdicts(out: &[ListenOutput]) -> Vec<(ConnectionHandle, bool)> {
        out.iter()
            .filter_map(|o| match o {
                ListenOutput::Transport(Transport::VerifyKey { conn, accept }) => {
                    Some((*conn, *accept))
                }
                _ => None,
            })
            .collect()
    }

    fn errors(out: &[ListenOutput]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                ListenOutput::Report(Report::Error(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn handles() -> [ConnectionHandle; 3] {
        [
            ConnectionHandle(1),
            ConnectionHandle(2),
            ConnectionHandle(3),
        ]
    }

    #[test]
    fn a_pinned_caller_is_chosen_and_strangers_cannot_end_the_wait() {
        let (peer, stranger) = (key(), key());
        let [c1, c2, _] = handles();
        let mut mem = Memory::default();
        let mut l = Listener::new(Some(peer.fingerprint()), false, &mut mem);
        let now = Instant::now();
        // Lines typed and end of input while waiting are kept for the session.
        l.handle_input(Input::Send {
            data: Bytes::from_static(b"early"),
            local_id: Some(7),
        });
        l.handle_input(Input::EndOfInput);
        l.handle_input(Input::Stats);
        let out = drain(&mut l);
        assert_eq!(errors(&out), ["no peer has called yet"]);
        // A stranger: refused, shown once however often it tries, and the wait goes on.
        l.handle_event(now, verify(c1, "10.0.0.9:4000", stranger));
        l.handle_event(now, verify(c1, "10.0.0.9:4000", stranger));
        let out = drain(&mut l);
        assert_eq!(verdicts(&out), [(c1, false), (c1, false)]);
        let e = errors(&out);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("--peer-key pins") && e[0].contains("10.0.0.9:4000"));
        // The pinned key, from any address: accepted and chosen, with what waited.
        l.handle_event(now, verify(c2, "10.0.0.2:5000", peer));
        let out = drain(&mut l);
        assert_eq!(verdicts(&out), [(c2, true)]);
        let Some(ListenOutput::Chosen { to, key: k, queued }) = out.last() else {
            panic!("not chosen: {out:?}");
        };
        assert_eq!(*to, "10.0.0.2:5000".parse().expect("addr"));
        assert_eq!(*k, peer);
        assert!(matches!(
            queued.as_slice(),
            [
                Input::Send {
                    local_id: Some(7),
                    ..
                },
                Input::EndOfInput
            ]
        ));
        // Nothing more after the choice.
        l.handle_event(now, verify(c1, "10.0.0.9:4000", stranger));
        l.handle_input(Input::Leave);
        assert!(drain(&mut l).is_empty());
        assert!(mem.0.is_empty(), "a pin remembers nothing");
    }

    #[test]
    fn without_a_pin_the_user_decides_or_the_key_is_refused() {
        let (peer, other) = (key(), key());
        let [c1, c2, c3] = handles();
        let now = Instant::now();

        // Nobody to ask: refused, naming the fingerprint and the flag.
        let mut mem = Memory::default();
        let mut l = Listener::new(None, false, &mut mem);
        l.handle_event(now, verify(c1, "10.0.0.2:5000", peer));
        let out = drain(&mut l);
        assert_eq!(verdicts(&out), [(c1, false)]);
        let e = errors(&out);
        assert!(
            e[0].contains(&format!("--peer-key {}", peer.fingerprint())),
            "{e:?}"
        );

        // On a terminal: asked; a second caller meanwhile is refused; a refusal goes on
        // waiting; an accept remembers the key for the caller's address and chooses it.
        let mut mem = Memory::default();
        let mut l = Listener::new(None, true, &mut mem);
        l.handle_event(now, verify(c1, "10.0.0.2:5000", peer));
        let out = drain(&mut l);
        assert!(matches!(
            out.as_slice(),
            [ListenOutput::Report(Report::AskKey { from, .. })] if from == "10.0.0.2:5000"
        ));
        l.handle_event(now, verify(c2, "10.0.0.3:5000", other));
        assert_eq!(verdicts(&drain(&mut l)), [(c2, false)]);
        l.handle_input(Input::KeyAnswer(false));
        assert_eq!(verdicts(&drain(&mut l)), [(c1, false)]);
        // It tries again (a new handshake): asked again; this time yes.
        l.handle_event(now, verify(c3, "10.0.0.2:5000", peer));
        assert_eq!(drain(&mut l).len(), 1);
        l.handle_input(Input::KeyAnswer(true));
        let out = drain(&mut l);
        assert_eq!(verdicts(&out), [(c3, true)]);
        assert!(matches!(out.last(), Some(ListenOutput::Chosen { key, .. }) if *key == peer));
        drop(l);
        assert_eq!(mem.0, [("10.0.0.2:5000".parse().expect("addr"), peer)]);

        // An answer with no question open says so.
        let mut mem = Memory::default();
        let mut l = Listener::new(None, true, &mut mem);
        l.handle_input(Input::KeyAnswer(true));
        assert_eq!(errors(&drain(&mut l)).len(), 1);
    }

    #[test]
    fn leaving_before_anyone_called() {
        let [c1, _, _] = handles();
        let mut mem = Memory::default();
        let mut l = Listener::new(None, true, &mut mem);
        l.handle_event(Instant::now(), verify(c1, "10.0.0.2:5000", key()));
        let _ = drain(&mut l);
        l.handle_input(Input::Interrupt);
        let out = drain(&mut l);
        // The open question's handshake is refused, then the exit.
        assert_eq!(verdicts(&out), [(c1, false)]);
        assert!(matches!(out.last(), Some(ListenOutput::Exit { code: 130 })));
        let mut l = Listener::new(None, false, &mut mem);
        l.handle_input(Input::Leave);
        // Nobody new gets in, then the exit.
        assert!(matches!(
            drain(&mut l).as_slice(),
            [
                ListenOutput::Transport(Transport::SetAcceptIncoming(false)),
                ListenOutput::Exit { code: 0 }
            ]
        ));
    }
}
