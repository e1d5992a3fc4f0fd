//! `chirp peer` in the terminal UI: the translation between the peer session
//! ([`chirp_peer::Session`]) and the UI, as [`crate::bridge`] is for `chirp connect`. Pure: no
//! I/O, time comes in as arguments. The binary's bridge task feeds it reports and UI commands.
//!
//! What peer mode means for the UI:
//! - **One conversation.** The peer is a direct-message buffer named by its address, opened
//!   at start; the UI runs with `Config::peer`, which refuses the commands that need a server.
//!   There is no history to page through: the buffer says so at once.
//! - **Delivery marks.** A message is pending until the peer's transport acknowledges it
//!   (`Report::Delivered`), which is as close to "stored" as a server-less chat gets.
//! - **`/me`.** An action travels as the text `/me …` (what a line-mode peer types as `//me …`),
//!   and an incoming `/me …` is shown as an action.
//! - **The link.** Once a second the session is asked for its statistics; the status bar gets
//!   the RTT, retransmissions and the loss over the last minute ([`LossWindow`]).
//! - **Files.** An offer is shown like a question (Alt+Y accepts, Alt+N declines, or `/accept
//!   ID`, `/decline ID`); transfers under way share one progress line in the status bar
//!   (bytes, rate, ETA); the end of each is a line in the conversation ([`crate::files`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_files::FileEvent;
use chirp_peer::{Input, Report, ask_text};
use chirp_tui::{
    BufferId, ChatMessage, LinkPath, LinkState, LinkStatus, UiCommand, UiEvent, UnixMs,
};

use crate::files::FileView;
use crate::link::{LossWindow, update_link};

/// How an action (`/me waves`) travels between peers.
pub const ACTION_PREFIX: &str = "/me ";

/// What the UI needs to know at start.
#[derive(Debug, Clone)]
pub struct Info {
    /// Our own name in the conversation: the local address.
    pub me: String,
    /// The peer's name and buffer: the address we talk to.
    pub peer: String,
    /// The first line of the status buffer.
    pub banner: String,
    /// For the message shown while waiting at exit.
    pub idle_timeout: Duration,
    /// Ring the terminal bell on each message from the peer (it is a direct conversation).
    pub bell: bool,
    /// The peer is whoever calls (`chirp peer` without `--to`): a key question is about a
    /// caller ([`chirp_peer::listen::ask_text`]), not about another port of a named peer.
    pub waiting: bool,
}

/// The translation between the peer loop and the UI. Pure: no I/O, time comes in.
#[derive(Debug)]
pub struct Bridge {
    info: Info,
    link: LinkStatus,
    loss: LossWindow,
    /// The last error reported, to print again once the terminal is restored.
    last_error: Option<String>,
    /// The file transfers under way.
    files: FileView,
}

impl Bridge {
    /// A bridge for the conversation `info` describes; the link is not up yet.
    pub fn new(info: Info) -> Bridge {
        Bridge {
            info,
            link: LinkStatus::default(),
            loss: LossWindow::default(),
            last_error: None,
            files: FileView::default(),
        }
    }

    fn buffer(&self) -> BufferId {
        BufferId::Dm(self.info.peer.clone())
    }

    /// The first events for the UI.
    pub fn start(&self) -> Vec<UiEvent> {
        vec![
            UiEvent::SelfNick(self.info.me.clone()),
            UiEvent::Info {
                buffer: None,
                text: self.info.banner.clone(),
            },
            UiEvent::Open(self.buffer()),
            // A peer keeps no history: say so now rather than offer to load some.
            UiEvent::HistoryPage {
                buffer: self.buffer(),
                messages: Vec::new(),
                more: false,
            },
            UiEvent::MessageLimit(chirp_proto::MAX_MESSAGE_SIZE - ACTION_PREFIX.len()),
            UiEvent::Link(self.link.clone()),
        ]
    }

    /// The last error reported, to print again once the terminal is restored.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Whether the link is up (worth asking for statistics).
    pub fn connected(&self) -> bool {
        self.link.state == LinkState::Connected
    }

    /// Translates one report of the peer loop.
    pub fn on_report(&mut self, report: Report, wall: UnixMs, now: Instant) -> Vec<UiEvent> {
        let mut out = Vec::new();
        match report {
            Report::Status(text) => out.push(UiEvent::Info { buffer: None, text }),
            Report::Up { peer, fingerprint } => {
                self.link.state = LinkState::Connected;
                out.push(UiEvent::Info {
                    buffer: Some(self.buffer()),
                    text: format!("{peer} is up (key {fingerprint})"),
                });
                self.link.fingerprint = Some(fingerprint);
                out.push(UiEvent::Link(self.link.clone()));
            }
            Report::Down { peer, reason } => {
                // The loop is already reaching for the peer again.
                self.link.state = LinkState::Connecting;
                self.link.rtt = None;
                self.link.loss_pct_last_minute = None;
                self.loss.reset();
                out.push(UiEvent::Info {
                    buffer: Some(self.buffer()),
                    text: format!("{peer} is down: {reason}; trying to reach it again"),
                });
                out.push(UiEvent::Link(self.link.clone()));
            }
            Report::Message { data, .. } => {
                let text = String::from_utf8_lossy(&data);
                let (text, action) = match text.strip_prefix(ACTION_PREFIX) {
                    Some(rest) => (rest.to_owned(), true),
                    None => (text.into_owned(), false),
                };
                out.push(UiEvent::Message {
                    buffer: self.buffer(),
                    msg: ChatMessage {
                        id: None,
                        from: self.info.peer.clone(),
                        text,
                        action,
                        ts: wall,
                        ..ChatMessage::default()
                    },
                    own: false,
                });
            }
            Report::Error(text) => {
                self.last_error = Some(text.clone());
                out.push(UiEvent::Error(text));
            }
            // Only answers to typed lines, which the UI does not send.
            Report::Stats { .. } => {}
            Report::Delivered(local_id) => out.push(UiEvent::Delivered {
                local_id,
                id: None,
                ts: None,
            }),
            Report::Failed { local_id, reason } => {
                out.push(UiEvent::Failed { local_id, reason });
            }
            Report::Link(Some(s)) => {
                update_link(&mut self.link, &mut self.loss, &s, now);
                out.push(UiEvent::Link(self.link.clone()));
            }
            Report::Link(None) => {}
            // The `--via` loop says what the path is in a status line of its own.
            Report::Path { relayed, .. } => {
                self.link.path = Some(if relayed {
                    LinkPath::Relayed
                } else {
                    LinkPath::Direct
                });
                out.push(UiEvent::Link(self.link.clone()));
            }
            Report::File(e) => self.on_file(e, &mut out),
            Report::AskKey { from, fingerprint } => out.push(UiEvent::Ask {
                question: if self.info.waiting {
                    chirp_peer::listen::ask_text(&from, &fingerprint)
                } else {
                    ask_text(&from, &fingerprint)
                },
            }),
        }
        out
    }

    /// A file transfer's news (shared with `chirp connect`'s DM transfers: [`FileView`]).
    fn on_file(&mut self, e: FileEvent, out: &mut Vec<UiEvent>) {
        let buffer = Some(self.buffer());
        self.files.on_event(&self.info.peer, buffer, e, out);
    }

    /// Translates one UI command: what to ask of the loop, and what to tell the UI at once.
    pub fn on_command(&mut self, cmd: UiCommand) -> (Option<Input>, Vec<UiEvent>) {
        match cmd {
            UiCommand::Send {
                buffer,
                text,
                action,
                local_id,
            } => {
                if buffer != self.buffer() {
                    let reason = format!("chirp peer talks only to {}", self.info.peer);
                    return (None, vec![UiEvent::Failed { local_id, reason }]);
                }
                let data = if action {
                    Bytes::from(format!("{ACTION_PREFIX}{text}"))
                } else {
                    Bytes::from(text)
                };
                (
                    Some(Input::Send {
                        data,
                        local_id: Some(local_id),
                    }),
                    Vec::new(),
                )
            }
            UiCommand::FetchHistory { buffer, .. } => (
                None,
                vec![UiEvent::HistoryPage {
                    buffer,
                    messages: Vec::new(),
                    more: false,
                }],
            ),
            UiCommand::Quit { .. } => (Some(Input::Leave), Vec::new()),
            UiCommand::Answer(yes) => (Some(Input::KeyAnswer(yes)), Vec::new()),
            // One conversation: the file goes to the peer (the UI names no nick here).
            UiCommand::SendFile { path, .. } => (Some(Input::SendFile(path.into())), Vec::new()),
            UiCommand::AcceptFile(id) => (Some(Input::AcceptFile(id)), Vec::new()),
            UiCommand::DeclineFile(id) => (Some(Input::DeclineFile(id)), Vec::new()),
            UiCommand::CancelFile(id) => (Some(Input::CancelFile(id)), Vec::new()),
            // The UI refuses these in peer mode; should one get here, say why.
            UiCommand::Join { .. }
            | UiCommand::Part { .. }
            | UiCommand::Nick { .. }
            | UiCommand::Topic { .. }
            | UiCommand::List
            | UiCommand::Who { .. }
            | UiCommand::Moderate { .. }
            | UiCommand::Ignore(_)
            | UiCommand::Unignore(_)
            | UiCommand::Edit { .. }
            | UiCommand::Delete { .. }
            | UiCommand::React { .. }
            | UiCommand::Search { .. } => (
                None,
                vec![UiEvent::Error(
                    "that needs a chat server: chirp peer talks to one peer only".into(),
                )],
            ),
            // The UI sends neither in peer mode; nothing to say if one came.
            UiCommand::Typing { .. } | UiCommand::Read { .. } => (None, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chirp_proto::ConnectionStats;

    use super::*;

    fn bridge() -> Bridge {
        Bridge::new(Info {
            me: "127.0.0.1:5001".into(),
            peer: "127.0.0.1:5002".into(),
            banner: "chirp peer on 127.0.0.1:5001".into(),
            idle_timeout: Duration::from_secs(30),
            bell: true,
            waiting: false,
        })
    }

    fn peer_buf() -> BufferId {
        BufferId::Dm("127.0.0.1:5002".into())
    }

    fn links(out: &[UiEvent]) -> Vec<&LinkStatus> {
        out.iter()
            .filter_map(|e| match e {
                UiEvent::Link(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn start_opens_the_peer_buffer_without_history() {
        let b = bridge();
        let out = b.start();
        assert_eq!(out[0], UiEvent::SelfNick("127.0.0.1:5001".into()));
        assert!(out.contains(&UiEvent::Open(peer_buf())));
        assert!(out.contains(&UiEvent::HistoryPage {
            buffer: peer_buf(),
            messages: Vec::new(),
            more: false
        }));
        assert!(
            out.iter().any(
                |e| matches!(e, UiEvent::MessageLimit(n) if *n < chirp_proto::MAX_MESSAGE_SIZE)
            )
        );
        assert_eq!(links(&out)[0].state, LinkState::Connecting);
    }

    #[test]
    fn up_down_and_statistics_drive_the_status_bar() {
        let mut b = bridge();
        let t0 = Instant::now();
        assert!(!b.connected());
        let out = b.on_report(
            Report::Up {
                peer: "127.0.0.1:5002".into(),
                fingerprint: "ab12".into(),
            },
            5,
            t0,
        );
        let l = links(&out)[0];
        assert_eq!(l.state, LinkState::Connected);
        assert_eq!(l.fingerprint.as_deref(), Some("ab12"));
        assert!(b.connected());
        let stats = ConnectionStats {
            srtt: Duration::from_millis(12),
            packets_lost: 1,
            packets_acked: 9,
            retransmissions: 3,
            messages_acked: 7,
            ..ConnectionStats::default()
        };
        let out = b.on_report(Report::Link(Some(Box::new(stats))), 5, t0);
        let l = links(&out)[0];
        assert_eq!(l.rtt, Some(Duration::from_millis(12)));
        assert_eq!(l.loss_pct_last_minute, Some(10.0));
        assert_eq!(l.retransmissions, 3);
        assert!(l.counters.contains(&("messages acked".to_owned(), 7)));
        // No snapshot while down: nothing to show.
        assert!(b.on_report(Report::Link(None), 5, t0).is_empty());
        let out = b.on_report(
            Report::Down {
                peer: "127.0.0.1:5002".into(),
                reason: "left".into(),
            },
            5,
            t0,
        );
        let l = links(&out)[0];
        assert_eq!(l.state, LinkState::Connecting);
        assert_eq!(l.rtt, None);
        assert_eq!(l.loss_pct_last_minute, None);
        assert!(!b.connected());
        assert!(out.iter().any(
            |e| matches!(e, UiEvent::Info { buffer: Some(buf), text } if *buf == peer_buf() && text.contains("left"))
        ));
    }

    #[test]
    fn the_path_reaches_the_status_bar_and_stays_through_statistics() {
        let mut b = bridge();
        let t0 = Instant::now();
        assert_eq!(
            links(&b.start())[0].path,
            None,
            "unknown until the loop says"
        );
        let path = |relayed| Report::Path {
            peer: "[100::1]:7667".into(),
            relayed,
        };
        let out = b.on_report(path(true), 5, t0);
        assert_eq!(links(&out)[0].path, Some(LinkPath::Relayed));
        let stats = ConnectionStats {
            srtt: Duration::from_millis(12),
            ..ConnectionStats::default()
        };
        let out = b.on_report(Report::Link(Some(Box::new(stats))), 5, t0);
        assert_eq!(links(&out)[0].path, Some(LinkPath::Relayed));
        let out = b.on_report(path(false), 5, t0);
        assert_eq!(links(&out)[0].path, Some(LinkPath::Direct));
    }

    #[test]
    fn messages_and_actions_go_to_the_peer_buffer() {
        let mut b = bridge();
        let t0 = Instant::now();
        for (data, text, action) in [
            (&b"hello"[..], "hello", false),
            (b"/me waves", "waves", true),
            (b"/mess", "/mess", false),
            (b"bad \xff utf-8", "bad \u{fffd} utf-8", false),
        ] {
            let out = b.on_report(
                Report::Message {
                    from: "127.0.0.1:5002".into(),
                    data: Bytes::copy_from_slice(data),
                },
                77,
                t0,
            );
            assert_eq!(
                out,
                vec![UiEvent::Message {
                    buffer: peer_buf(),
                    msg: ChatMessage {
                        id: None,
                        from: "127.0.0.1:5002".into(),
                        text: text.into(),
                        action,
                        ts: 77,
                        ..ChatMessage::default()
                    },
                    own: false,
                }]
            );
        }
    }

    #[test]
    fn sends_become_requests_and_delivery_reports_become_marks() {
        let mut b = bridge();
        let (req, out) = b.on_command(UiCommand::Send {
            buffer: peer_buf(),
            text: "hi".into(),
            action: false,
            local_id: 1,
        });
        assert!(out.is_empty());
        assert!(matches!(req, Some(Input::Send { data, local_id: Some(1) }) if data == "hi"));
        let (req, _) = b.on_command(UiCommand::Send {
            buffer: peer_buf(),
            text: "waves".into(),
            action: true,
            local_id: 2,
        });
        assert!(
            matches!(req, Some(Input::Send { data, local_id: Some(2) }) if data == "/me waves")
        );
        // Another buffer has nobody to send to.
        let (req, out) = b.on_command(UiCommand::Send {
            buffer: BufferId::Dm("carol".into()),
            text: "hi".into(),
            action: false,
            local_id: 3,
        });
        assert!(req.is_none());
        assert!(matches!(&out[..], [UiEvent::Failed { local_id: 3, .. }]));
        let t0 = Instant::now();
        assert_eq!(
            b.on_report(Report::Delivered(1), 5, t0),
            vec![UiEvent::Delivered {
                local_id: 1,
                id: None,
                ts: None
            }]
        );
        let failed = Report::Failed {
            local_id: 2,
            reason: "too big".into(),
        };
        assert_eq!(
            b.on_report(failed, 5, t0),
            vec![UiEvent::Failed {
                local_id: 2,
                reason: "too big".into()
            }]
        );
    }

    #[test]
    fn history_is_answered_empty_quit_leaves_and_errors_are_kept() {
        let mut b = bridge();
        let (req, out) = b.on_command(UiCommand::FetchHistory {
            buffer: peer_buf(),
            before_id: None,
            limit: 100,
        });
        assert!(req.is_none());
        assert_eq!(
            out,
            vec![UiEvent::HistoryPage {
                buffer: peer_buf(),
                messages: Vec::new(),
                more: false
            }]
        );
        let (req, out) = b.on_command(UiCommand::Join {
            room: "#rust".into(),
        });
        assert!(req.is_none());
        assert!(matches!(&out[..], [UiEvent::Error(_)]));
        let (req, _) = b.on_command(UiCommand::Quit { reason: None });
        assert!(matches!(req, Some(Input::Leave)));
        let out = b.on_report(Report::Error("key refused".into()), 5, Instant::now());
        assert_eq!(out, vec![UiEvent::Error("key refused".into())]);
        assert_eq!(b.last_error.as_deref(), Some("key refused"));
    }

    #[test]
    fn a_key_question_is_asked_and_answered_through_the_ui() {
        let mut b = bridge();
        let ask = Report::AskKey {
            from: "127.0.0.1:6000".into(),
            fingerprint: "abcd-efgh".into(),
        };
        let out = b.on_report(ask, 5, Instant::now());
        let [UiEvent::Ask { question }] = &out[..] else {
            panic!("{out:?}");
        };
        assert!(question.contains("127.0.0.1:6000") && question.contains("abcd-efgh"));
        let (req, out) = b.on_command(UiCommand::Answer(true));
        assert!(matches!(req, Some(Input::KeyAnswer(true))) && out.is_empty());
        let (req, _) = b.on_command(UiCommand::Answer(false));
        assert!(matches!(req, Some(Input::KeyAnswer(false))));
        // A peer waiting for a call asks about the caller, not about another port.
        assert!(question.contains("another port"), "{question}");
        let mut b = Bridge::new(Info {
            waiting: true,
            ..b.info.clone()
        });
        let ask = Report::AskKey {
            from: "10.0.0.3:6000".into(),
            fingerprint: "abcd-efgh".into(),
        };
        let out = b.on_report(ask, 5, Instant::now());
        let [UiEvent::Ask { question }] = &out[..] else {
            panic!("{out:?}");
        };
        assert!(
            question.contains("10.0.0.3:6000 is calling") && !question.contains("another port"),
            "{question}"
        );
    }

    /// A file offer from a key not trusted is a question naming the key in the status bar's
    /// short form; `/cancel` reaches the session; a trusted key's offer is a line.
    #[test]
    fn a_file_offer_names_the_key_and_cancel_reaches_the_session() {
        use chirp_files::FileEvent;
        let mut b = bridge();
        let offer = |auto| {
            Report::File(FileEvent::Offered {
                id: 2,
                name: "photo.jpg".into(),
                size: 4096,
                hash: [0x12; 32],
                auto,
                key: Some("abcd-efgh-ijkl-mnop-qrst-uvwx".into()),
            })
        };
        let out = b.on_report(offer(false), 5, Instant::now());
        let [UiEvent::FileOffer { id: 2, text }] = &out[..] else {
            panic!("{out:?}");
        };
        assert!(
            text.contains("(key abcd-efgh-ijk…) offers file 2: \"photo.jpg\""),
            "{text}"
        );
        let out = b.on_report(offer(true), 5, Instant::now());
        assert!(
            matches!(&out[..], [UiEvent::Info { text, .. }] if text.contains("offers from this key are accepted")),
            "{out:?}"
        );
        let (req, out) = b.on_command(UiCommand::CancelFile(Some(2)));
        assert!(matches!(req, Some(Input::CancelFile(Some(2)))) && out.is_empty());
        let (req, _) = b.on_command(UiCommand::CancelFile(None));
        assert!(matches!(req, Some(Input::CancelFile(None))));
    }
}
