//! Running a [`Session`] over a [`chirp_transport`] endpoint with tokio.
//!
//! The building blocks are for drivers that own the session by `&mut` in one task (the
//! `chirp connect` line mode and terminal UI do, each with its own inputs):
//! [`start_transport`] opens the endpoint, [`perform`] carries out what the session asks of
//! it, and [`sleep_until`] waits for the session's deadline.
//!
//! [`spawn`] is a complete driver for programs and tests that want a session behind a handle:
//! one task owns the session; [`ClientHandle`] calls reach it through a command channel and
//! events leave through a bounded event channel.
//!
//! # No cycle of waits
//!
//! - The transport task never waits on us: it hands events over only when its channel has
//!   room (a permit), and answers commands from its `select!` loop.
//! - The session task never waits on the application: it takes a permit of the event channel
//!   inside its `select!`, so commands are served while events are waiting for room. While an
//!   event waits, it stops reading transport events, so a slow reader holds back the server
//!   (flow control), not our memory.
//! - The application may wait on a command (and its reply), which the session task always
//!   serves.
//!
//! So no two tasks ever wait on each other. `tests::a_full_event_channel_does_not_stop_commands`
//! fills the event channel and keeps sending commands.

use std::io;
use std::time::{Duration, Instant};

use chirp_proto::EndpointConfig;
use chirp_transport::{Handle, Stopped};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ClientConfig, Event, Io, KeyCheck, Session, Target};

/// The endpoint settings of a client with `config`: it only opens connections, checks the
/// server's key inside the handshake when asked to, and keeps an idle link alive.
pub fn endpoint_config(config: &ClientConfig) -> EndpointConfig {
    let mut ep = EndpointConfig {
        // A client only opens connections; nobody may open one to it.
        accept_incoming: false,
        max_connections: 4,
        identity: config.identity.clone(),
        // The server's key is checked inside the handshake (`Io::CheckKey`).
        verify_keys: config.server_key_check.is_some(),
        ..EndpointConfig::default()
    };
    ep.transport.idle_timeout = config.idle_timeout;
    // Keepalives: the transport's default, every 15 s and at most half our idle timeout
    // (PROTOCOL.md §7.1), which is also half the server's default idle timeout, so an idle
    // but present client is never taken for gone, and NAT bindings of ~30 s stay open. (It was
    // a third of the idle timeout, 10 s: at 100,000 idle clients, 10,000 wake-ups a second of
    // the server for nothing.)
    ep
}

/// Opens the client's endpoint for `config` ([`endpoint_config`]) on a socket bound to
/// `config.bind`.
pub fn start_transport(
    config: &ClientConfig,
) -> io::Result<(
    Handle,
    mpsc::Receiver<chirp_proto::Event>,
    JoinHandle<io::Result<()>>,
)> {
    let socket = chirp_transport::bind(config.bind)?;
    let options = chirp_transport::Options {
        qlog_dir: config.qlog_dir.clone(),
        ..chirp_transport::Options::default()
    };
    chirp_transport::spawn_with(socket, endpoint_config(config), options)
}

/// Carries out every transport request the session has, answering each.
pub async fn perform(
    session: &mut Session,
    handle: &Handle,
    key_check: Option<&KeyCheck>,
) -> Result<(), Stopped> {
    while let Some(io) = session.poll_io(Instant::now()) {
        match io {
            Io::Connect { server } => {
                let r = handle.connect(server).await?;
                session.connect_result(Instant::now(), r);
            }
            Io::Send { conn, data } => {
                let r = handle.send(conn, data).await?;
                session.send_result(Instant::now(), conn, r);
            }
            Io::Close { conn, reason } => handle.close(conn, 0, reason).await?,
            Io::CheckKey { conn, server, key } => {
                let verdict = key_check.map_or(Ok(()), |check| check(server, &key));
                session.key_verdict(Instant::now(), conn, verdict);
            }
            Io::VerifyKey { conn, accept } => handle.verify_key(conn, accept).await?,
            Io::Stats { conn } => {
                let s = handle.stats(conn).await?;
                session.stats_result(s);
            }
        }
    }
    Ok(())
}

/// Sleeps until `at` (forever for `None`).
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug)]
enum Command {
    Say {
        target: Target,
        text: String,
        action: bool,
        reply: oneshot::Sender<u64>,
    },
    Join(String),
    Part(String),
    Nick(String),
    Topic(String, String),
    List,
    Who(String),
    History {
        target: Target,
        before: Option<u64>,
        limit: u32,
        reply: oneshot::Sender<u64>,
    },
    Stats,
    Finish,
}

/// The application's side of a [`spawn`]ed session.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    tx: mpsc::Sender<Command>,
}

/// The session task has ended.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("the chat session has ended")]
pub struct Ended;

impl ClientHandle {
    async fn command(&self, c: Command) -> Result<(), Ended> {
        self.tx.send(c).await.map_err(|_| Ended)
    }

    /// Sends a message; returns its client sequence number (see [`Event::Delivered`]).
    pub async fn say(&self, target: Target, text: String, action: bool) -> Result<u64, Ended> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Say {
            target,
            text,
            action,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Ended)
    }

    /// Joins a room.
    pub async fn join(&self, room: String) -> Result<(), Ended> {
        self.command(Command::Join(room)).await
    }

    /// Leaves a room.
    pub async fn part(&self, room: String) -> Result<(), Ended> {
        self.command(Command::Part(room)).await
    }

    /// Changes nick.
    pub async fn nick(&self, nick: String) -> Result<(), Ended> {
        self.command(Command::Nick(nick)).await
    }

    /// Sets a room's topic.
    pub async fn topic(&self, room: String, topic: String) -> Result<(), Ended> {
        self.command(Command::Topic(room, topic)).await
    }

    /// Lists rooms.
    pub async fn list(&self) -> Result<(), Ended> {
        self.command(Command::List).await
    }

    /// Lists a room's members.
    pub async fn who(&self, room: String) -> Result<(), Ended> {
        self.command(Command::Who(room)).await
    }

    /// Asks for `limit` messages before `before` in a room or DM conversation; returns the
    /// request's id (echoed in its `history_end`).
    pub async fn history(
        &self,
        target: Target,
        before: Option<u64>,
        limit: u32,
    ) -> Result<u64, Ended> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::History {
            target,
            before,
            limit,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Ended)
    }

    /// Asks for link statistics ([`Event::Stats`]).
    pub async fn stats(&self) -> Result<(), Ended> {
        self.command(Command::Stats).await
    }

    /// Finishes: waits for every acknowledgement, then closes ([`Event::Finished`]).
    pub async fn finish(&self) -> Result<(), Ended> {
        self.command(Command::Finish).await
    }
}

fn apply(session: &mut Session, now: Instant, c: Command) {
    match c {
        Command::Say {
            target,
            text,
            action,
            reply,
        } => {
            let _ = reply.send(session.say(now, target, text, action));
        }
        Command::Join(r) => session.join(r),
        Command::Part(r) => session.part(r),
        Command::Nick(n) => session.nick(n),
        Command::Topic(r, t) => session.topic(r, t),
        Command::List => session.list(),
        Command::Who(r) => session.who(r),
        Command::History {
            target,
            before,
            limit,
            reply,
        } => {
            let _ = reply.send(session.history(target, before, limit));
        }
        Command::Stats => session.stats(),
        Command::Finish => session.finish(now),
    }
}

/// Starts a session in its own task. Events arrive on the receiver; the task ends after
/// [`Event::Finished`] or [`Event::Fatal`] (or when the handle and the receiver are dropped).
pub fn spawn(
    config: ClientConfig,
) -> io::Result<(ClientHandle, mpsc::Receiver<Event>, JoinHandle<()>)> {
    let (handle, tevents, ttask) = start_transport(&config)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let session = Session::new(config, Instant::now(), chirp_transport::random_seed());
    let task = tokio::spawn(async move {
        run(session, handle.clone(), tevents, cmd_rx, ev_tx).await;
        // Let the CLOSE go out (and be repeated if lost) before the endpoint goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), handle.wait_idle()).await;
        ttask.abort();
    });
    Ok((ClientHandle { tx: cmd_tx }, ev_rx, task))
}

async fn run(
    mut session: Session,
    handle: Handle,
    mut tevents: mpsc::Receiver<chirp_proto::Event>,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let key_check = session.config().server_key_check.clone();
    let mut cmds_open = true;
    // An event polled from the session and waiting for room in the channel.
    let mut waiting: Option<Event> = None;
    loop {
        if perform(&mut session, &handle, key_check.as_ref())
            .await
            .is_err()
        {
            let _ = events
                .send(Event::Fatal("the transport stopped".into()))
                .await;
            return;
        }
        if waiting.is_none() {
            waiting = session.poll_event();
        }
        if waiting.is_none() && session.is_ended() {
            return;
        }
        let wake = session.poll_timeout();
        tokio::select! {
            permit = events.reserve(), if waiting.is_some() => match permit {
                Ok(p) => {
                    if let Some(e) = waiting.take() {
                        p.send(e);
                    }
                }
                // Nobody listens: stop.
                Err(_) => return,
            },
            cmd = cmds.recv(), if cmds_open => match cmd {
                Some(c) => apply(&mut session, Instant::now(), c),
                None => {
                    cmds_open = false;
                    session.finish(Instant::now());
                }
            },
            ev = tevents.recv(), if waiting.is_none() => match ev {
                Some(ev) => session.handle_transport(Instant::now(), ev),
                None => {
                    let _ = events
                        .send(Event::Fatal("the transport stopped".into()))
                        .await;
                    return;
                }
            },
            () = sleep_until(wake) => session.handle_timeout(Instant::now()),
        }
    }
}
