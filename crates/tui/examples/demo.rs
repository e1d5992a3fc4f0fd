//! The chat UI on a fake network, for trying it by hand:
//!
//! ```text
//! cargo run -p chirp-tui --example demo
//! ```
//!
//! A fake server answers like the real one would: two rooms with chatty bots, history pages
//! when you scroll to the top, delivery reports for what you send (a message containing
//! "fail" fails; Alt+R retries it and then it goes through), a link whose RTT wanders, and a
//! short outage with a reconnect countdown every two minutes. Ctrl+C quits.
//!
//! `CHIRP_TUI_DEMO_PANIC_AFTER_MS=N` panics N ms after start while the UI is up; the
//! terminal test uses it to check that a panic leaves a usable terminal behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chirp_tui::{BufferId, ChatMessage, Config, LinkState, LinkStatus, UiCommand, UiEvent, UnixMs};
use tokio::sync::mpsc;

fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const LINES: &[&str] = &[
    "has anyone tried the new build?",
    "works on my machine",
    "日本語のメッセージも大丈夫です。長い行は表示幅で折り返されます。",
    "lunch? 🍜🍣",
    "me: can you review my patch when you have a minute",
    "the RTT on this link is pretty stable today",
    "a much longer message to show the wrapping of text in the message pane, which keeps a \
     hanging indent under the text column so that nicks stay easy to scan",
];

struct Fake {
    events: mpsc::Sender<UiEvent>,
    tick: u64,
    next_id: u64,
    oldest: u64,
    retried: Vec<u64>,
}

impl Fake {
    async fn emit(&self, e: UiEvent) -> bool {
        self.events.send(e).await.is_ok()
    }

    fn link(&self, state: LinkState) -> UiEvent {
        let wobble = (self.tick as f64 * 0.7).sin() * 6.0 + (self.tick % 7) as f64;
        UiEvent::Link(LinkStatus {
            state,
            fingerprint: Some("k3xq-7p2m-vd9a-hh4c-zr8e-0wfy".into()),
            path: None,
            rtt: Some(Duration::from_micros((24_000.0 + wobble * 1000.0) as u64)),
            loss_pct_last_minute: Some((self.tick % 5) as f64 * 0.4),
            retransmissions: self.tick / 3,
            counters: vec![
                ("datagrams sent".into(), 1200 + self.tick * 4),
                ("datagrams received".into(), 1180 + self.tick * 4),
                ("retransmissions".into(), self.tick / 3),
                ("duplicates dropped".into(), self.tick / 11),
                ("reordered".into(), self.tick / 13),
                ("corrupt dropped".into(), self.tick / 29),
                ("bytes sent".into(), 90_000 + self.tick * 311),
                ("bytes received".into(), 88_000 + self.tick * 297),
            ],
            held: 0,
        })
    }

    async fn start(&mut self) -> bool {
        let t = now_ms();
        let mut ok = self.emit(UiEvent::SelfNick("me".into())).await;
        ok &= self.emit(self.link(LinkState::Connected)).await;
        for room in ["#chirp", "#random"] {
            ok &= self
                .emit(UiEvent::Join {
                    room: room.into(),
                    nick: "me".into(),
                    ts: t,
                })
                .await;
            ok &= self
                .emit(UiEvent::Members {
                    room: room.into(),
                    nicks: vec!["alice".into(), "bob".into(), "carol".into(), "me".into()],
                })
                .await;
        }
        ok &= self
            .emit(UiEvent::Topic {
                room: "#chirp".into(),
                topic: Some("chat over raw UDP — /help for commands".into()),
                by: None,
                ts: t,
            })
            .await;
        ok &= self.history(BufferId::Room("#chirp".into()), None).await;
        ok
    }

    async fn history(&mut self, buffer: BufferId, before: Option<u64>) -> bool {
        // Ids below 1000 are history; 40 per page, 200 in all.
        let top = before.unwrap_or(1000).min(self.oldest);
        let from = top.saturating_sub(40).max(800);
        self.oldest = from;
        let t = now_ms();
        let messages = (from..top)
            .map(|id| {
                let msg = ChatMessage {
                    id: Some(id),
                    from: ["alice", "bob", "carol"][id as usize % 3].into(),
                    text: format!("history line {id}: {}", LINES[id as usize % LINES.len()]),
                    action: false,
                    ts: t - (1000 - id) * 45 * 60_000,
                    ..ChatMessage::default()
                };
                (msg, false)
            })
            .collect();
        self.emit(UiEvent::HistoryPage {
            buffer,
            messages,
            more: from > 800,
        })
        .await
    }

    async fn command(&mut self, cmd: UiCommand) -> bool {
        match cmd {
            UiCommand::Send { text, local_id, .. } => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if text.contains("fail") && !self.retried.contains(&local_id) {
                    self.retried.push(local_id);
                    return self
                        .emit(UiEvent::Failed {
                            local_id,
                            reason: "the server did not answer".into(),
                        })
                        .await;
                }
                self.next_id += 1;
                self.emit(UiEvent::Delivered {
                    local_id,
                    id: Some(self.next_id),
                    ts: Some(now_ms()),
                })
                .await
            }
            UiCommand::FetchHistory {
                buffer, before_id, ..
            } => {
                tokio::time::sleep(Duration::from_millis(400)).await;
                self.history(buffer, before_id).await
            }
            UiCommand::Join { room } => {
                self.emit(UiEvent::Join {
                    room,
                    nick: "me".into(),
                    ts: now_ms(),
                })
                .await
            }
            UiCommand::Part { room, reason } => {
                self.emit(UiEvent::Part {
                    room,
                    nick: "me".into(),
                    reason,
                    ts: now_ms(),
                })
                .await
            }
            UiCommand::Nick { nick } => {
                self.emit(UiEvent::NickChange {
                    old: "me".into(),
                    new: nick,
                    ts: now_ms(),
                })
                .await
            }
            UiCommand::List => {
                self.emit(UiEvent::RoomList(vec![
                    chirp_tui::RoomInfo {
                        name: "#chirp".into(),
                        members: 4,
                        topic: Some("chat over raw UDP".into()),
                    },
                    chirp_tui::RoomInfo {
                        name: "#random".into(),
                        members: 4,
                        topic: None,
                    },
                ]))
                .await
            }
            UiCommand::Quit { .. } => false,
            other => {
                self.emit(UiEvent::Info {
                    buffer: None,
                    text: format!("(demo) would send {other:?}"),
                })
                .await
            }
        }
    }

    async fn tick(&mut self) -> bool {
        self.tick += 1;
        let t = now_ms();
        // An outage of 5 s every two minutes shows the reconnect countdown.
        let phase = self.tick % 120;
        let state = match phase {
            100 => LinkState::Reconnecting { in_secs: 5 },
            101..=104 => return true,
            _ => LinkState::Connected,
        };
        if !self.emit(self.link(state)).await {
            return false;
        }
        if self.tick % 4 == 0 {
            self.next_id += 1;
            let who = ["alice", "bob", "carol"][(self.tick / 4 % 3) as usize];
            let room = if self.tick % 12 == 0 {
                "#random"
            } else {
                "#chirp"
            };
            let buffer = if self.tick % 28 == 0 {
                BufferId::Dm(who.into())
            } else {
                BufferId::Room(room.into())
            };
            let msg = ChatMessage {
                id: Some(self.next_id),
                from: who.into(),
                text: LINES[(self.tick / 4) as usize % LINES.len()].into(),
                action: self.tick % 20 == 0,
                ts: t,
                ..ChatMessage::default()
            };
            return self
                .emit(UiEvent::Message {
                    buffer,
                    msg,
                    own: false,
                })
                .await;
        }
        true
    }
}

async fn fake_network(events: mpsc::Sender<UiEvent>, mut commands: mpsc::Receiver<UiCommand>) {
    let mut fake = Fake {
        events,
        tick: 0,
        next_id: 1000,
        oldest: 1000,
        retried: Vec::new(),
    };
    if !fake.start().await {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        let alive = tokio::select! {
            _ = ticker.tick() => fake.tick().await,
            cmd = commands.recv() => match cmd {
                Some(cmd) => fake.command(cmd).await,
                None => false,
            },
        };
        if !alive {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (event_tx, event_rx) = mpsc::channel(256);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let network = tokio::spawn(fake_network(event_tx, cmd_rx));
    let panic_after = std::env::var("CHIRP_TUI_DEMO_PANIC_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    // The UI future lives outside the select, so that it (and its terminal guard) is still
    // alive when the panic below starts: the panic hook, not Drop, has to restore.
    let ui = chirp_tui::run(Config::default(), event_rx, cmd_tx);
    tokio::pin!(ui);
    let result = tokio::select! {
        result = &mut ui => result,
        () = async {
            match panic_after {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        } => panic!("demo panic, as asked by CHIRP_TUI_DEMO_PANIC_AFTER_MS"),
    };
    network.abort();
    result
}
