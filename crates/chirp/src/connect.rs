//! `chirp connect`: the line-mode chat client. Standard input lines in (text to the current
//! room, or `/commands`), one line per event out, human-readable or JSON (`docs/JSON.md`).
//!
//! The behaviour lives in libraries: the session (reconnection, resume, acknowledgements,
//! pacing, exactly-once display) is `chirp_chat::client::Session`, and what a typed line asks
//! of it is `chirp_client::line`. This file is the command line, the key check, the one task
//! that owns the session and the transport handle, and the printing.
//!
//! One task, no cycle: standard input is read by a reader task into a small bounded channel,
//! which the loop reads only while the session holds fewer than [`MAX_BACKLOG`] requests
//! (so a fast pipe is held back, and memory stays bounded); the transport task never waits on
//! us; output is written synchronously.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chirp_chat::client::{ClientConfig, Event, Session, driver};
use chirp_chat::wire::{ModEvent, Msg, Presence, ServerMsg};
use chirp_client::config::ClientFile;
use chirp_client::ignore::IgnoreList;
use chirp_client::line::{LineClient, Reply};
use chirp_client::logs::{self, ChatLog};
use chirp_keys::{Fingerprint, Identity, PublicKey};
use chirp_tui::safe::line as safe;
use clap::Args;
use serde_json::{Value, json};

use crate::lines::{self, Line};
use crate::output::{Output, message_body};
use crate::serve::DEFAULT_PORT;

/// Requests the session may hold before standard input stops being read.
const MAX_BACKLOG: usize = 256;

/// The longest input line taken; a longer one is refused whole (no message can be that long:
/// one transport message is 64 KiB).
const MAX_LINE: usize = 64 * 1024;

pub(crate) const EXAMPLES: &str = "\
Each line you type goes to the current room (the last one joined, or switched to with /join;
a refused /join changes nothing). Commands: /join #room, /part [#room], /msg NICK TEXT (sends
privately, stays in the room), /me TEXT, /nick NEW, /topic [TEXT], /list, /who [#room],
/history [N], /ignore [NICK], /unignore NICK, /stats, /quit, /help, and the moderation
commands (/op, /kick, /ban, /mode, ...: /help lists them); //text sends a line starting
with '/'. The chat UI has the same commands.
Files: /send NICK PATH offers a file to NICK, who must be online (in the chat UI, /send PATH
in a DM buffer offers it to that nick); they see the offer and answer /accept [ID] or
/decline [ID] (in the UI also Alt+Y, Alt+N; progress shows in its status bar); /cancel [ID]
stops sending one (the recipient deletes its partial file; it is never offered again). The file then goes end to end
encrypted between your two clients (directly, or through the server's relay, which cannot read
it), checked against the hash in the offer, into --downloads; the sender is told when the
recipient has the whole file. The server refuses files over its --max-file-size and files to
users who are not online; it stores nothing. One transfer runs at a time; end of input waits
for the one under way. With --relay-only the file always goes through the relay, and the
other user never learns your address. A transfer cut off (either client killed or restarted,
or no packet for --idle-timeout) resumes from what the recipient holds: the sender offers it
again every 3 s for up to 10 minutes until the recipient is back, the recipient takes it
again without asking (after its own restart, /accept again), and /send of the same file
later resumes too. --auto-accept-from FINGERPRINT (repeatable; `chirp id` prints a user's)
accepts offers from that user's key at once, without /accept, also after a restart: the
server names the sender's key in each offer, and the transfer is refused if the peer the
server then introduces has another key. An older server names no key, so nothing is
accepted unasked through it.

Set once: ~/.config/chirp/client.toml ($XDG_CONFIG_HOME/chirp, or --config FILE) holds what
you would type every time; flags given here win over it. With a server and a nick in it,
`chirp connect` alone connects. A key chirp does not know is an error naming the line.
  server = \"chat.example.org\"        # or [\"10.0.0.1:7667\", \"10.0.0.2:7667\"]
  nick = \"alice\"
  rooms = [\"#rust\", \"#chirp\"]
  bell = true
  log_dir = \"~/chirp-logs\"           # one plain-text file per room and DM
  downloads = \"~/Downloads/chirp\"    # received files (also chirp peer)
  relay_only = true                  # files only through the server's relay (--relay-only)
  auto_accept_from = [\"wxyz-wxyz-wxyz-wxyz-wxyz-wxyz\"]   # as --auto-accept-from
  # server_key, idle_timeout, home, qlog: as the flags
/ignore NICK hides a nick's messages (also in --json: dropped), kept across restarts in
$XDG_STATE_HOME/chirp/ignore. Details: docs/CLIENT.md.
At end of input (Ctrl-D) chirp waits until the server has stored every message you sent, then
exits 0. A lost server is reconnected to automatically, and nothing is shown twice.

Pacing: chirp sends no faster than the server's flood control allows (by default a burst of 10,
then 5 lines a second), so a script piping lines is slowed, not refused. While lines wait, chirp
says so (a '* pacing' line, or a JSON 'pacing' event with the number held), and again when all
have gone. A line longer than the server takes is refused at once (error 'bad_text') and the
rest go on.

Several servers (the nodes of one cluster, which share a key and a store): the first is tried
first; when the one in use is lost (no answer for --idle-timeout, closed, restarted, refused),
chirp moves to the next by itself, after the last to the first again, with the same backoff,
and resumes where it was: one 'disconnected' line, nothing shown twice. Names are resolved
once, at start.

The server's key is remembered on first contact (in --home, file known_keys, per address) and
any other key later is refused; --server-key pins the fingerprint the server printed at start
instead, and then every address given must present it. Without --server-key, an address seen
for the first time is accepted if its key is the one remembered for another address of the
same list (a cluster has one key), and remembered; another key there is refused.

Examples:
  chirp connect                                        # all from client.toml
  chirp connect --config ~/work-chat.toml --join '#ops'
  chirp connect chat.example.org --nick alice --join '#rust' --log-dir ~/chirp-logs
  chirp connect 127.0.0.1:7667 --nick bob --join '#rust' --json        # for scripts
  chirp connect 192.0.2.1 --nick carol --server-key abcd-efgh-ijkl-mnop-qrst-uvwx
  chirp connect 10.0.0.1:7667 10.0.0.2:7667 10.0.0.3 --nick ann        # a cluster of three
  chirp connect 127.0.0.1 --nick dave --qlog /tmp/chirp-qlog   # a qlog trace per connection
  chirp connect chat.example.org --nick erin --line --downloads ~/inbox
      /send frank ~/notes.pdf                                      # then typed: a file to frank
  chirp connect chat.example.org --nick gus --relay-only   # files never reveal your address
  chirp connect chat.example.org --nick hal --auto-accept-from wxyz-wxyz-wxyz-wxyz-wxyz-wxyz
                                          # files from that key are saved without /accept";

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The server, HOST[:PORT] (port 1-65535, default 7667). Several: addresses of one
    /// cluster, tried in turn (the first first; the next when one is lost) [default: `server`
    /// in the config file].
    #[arg(value_name = "HOST[:PORT]", num_args = 0..)]
    servers: Vec<String>,
    /// Your nick. It belongs to your key from the first time you use it [default: `nick` in
    /// the config file].
    #[arg(long)]
    nick: Option<String>,
    /// The client config file [default: $XDG_CONFIG_HOME/chirp/client.toml, i.e.
    /// ~/.config/chirp/client.toml, read if it exists]. A flag given here wins over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of your identity key and known server keys [default: `home` in the config
    /// file, else $XDG_CONFIG_HOME/chirp].
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Join this room at start (repeatable); the last one is the current room. Given here,
    /// these replace the config file's `rooms`.
    #[arg(long = "join", value_name = "#ROOM")]
    join: Vec<String>,
    /// Line mode even on a terminal (where the default is the chat UI): stdin lines in, stdout
    /// lines out.
    #[arg(long, conflicts_with = "json")]
    line: bool,
    /// In the chat UI, do not ring the terminal bell on mentions of your nick and on direct
    /// messages (`/bell` switches it while running; `bell = false` in the config file).
    #[arg(long)]
    no_bell: bool,
    /// Ring the bell although the config file says `bell = false`.
    #[arg(long, conflicts_with = "no_bell")]
    bell: bool,
    /// Line mode with one JSON object per event on stdout (schema: docs/JSON.md).
    #[arg(long)]
    json: bool,
    /// Testing aid: do not pace requests to the server's rate (the server's flood control
    /// then refuses the excess with errors).
    #[arg(long, hide = true)]
    no_pace: bool,
    /// Accept only a server whose key has this fingerprint [default: `server_key` in the
    /// config file].
    #[arg(long, value_name = "FINGERPRINT")]
    server_key: Option<Fingerprint>,
    /// Declare the server unreachable after this many seconds without a packet (then
    /// reconnect: to the next address, when several are given) [default: `idle_timeout` in
    /// the config file, else 30; with several servers 6, so that a dead node is left within
    /// seconds].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout: Option<u64>,
    /// Write a qlog trace of every connection to the server into this directory (created if
    /// missing): one file per connection, <connection id>-client.sqlog, for qvis.
    #[arg(long, value_name = "DIR")]
    qlog: Option<PathBuf>,
    /// Where files other users send you are saved (created if missing) [default: the XDG
    /// download directory, e.g. ~/Downloads].
    #[arg(long, value_name = "DIR")]
    downloads: Option<PathBuf>,
    /// DM file transfers (and any connection the server introduces) go through the
    /// server's relay, never direct: the other user never learns your address, and the
    /// server does not give it out (still end to end encrypted; the relay cannot read it)
    /// [default: `relay_only` in the config file, else off].
    #[arg(long)]
    relay_only: bool,
    /// Keep a plain-text log of every room and DM in this directory (created if missing):
    /// one file per conversation (#room.log, nick.log), appended as messages arrive
    /// [default: `log_dir` in the config file; none].
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Accept DM file offers from the user with this key fingerprint without asking
    /// (repeatable; `chirp id` on their machine prints it). Given here, these replace the
    /// config file's `auto_accept_from`.
    #[arg(long, value_name = "FINGERPRINT")]
    auto_accept_from: Vec<Fingerprint>,
}

/// `chirp connect`'s settings: its flags, with what they leave out taken from the config
/// file.
#[derive(Debug, PartialEq)]
struct Settings {
    servers: Vec<String>,
    nick: String,
    home: Option<PathBuf>,
    rooms: Vec<String>,
    bell: bool,
    server_key: Option<Fingerprint>,
    idle_timeout: Option<u64>,
    qlog: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    downloads: Option<PathBuf>,
    relay_only: bool,
    auto_accept_from: Vec<Fingerprint>,
}

/// The config file to read: `--config` (which must exist), else the default one if it exists.
/// Returns its path and contents (an empty file when there is none). Paths in it are resolved
/// (`~`, relative to its directory).
fn load_config(explicit: Option<&Path>) -> anyhow::Result<(Option<PathBuf>, ClientFile)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = crate::id::default_home()
                .map(|h| h.join(chirp_client::config::FILE_NAME))
                .ok();
            match p {
                Some(p) if p.exists() => p,
                _ => return Ok((None, ClientFile::default())),
            }
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut file =
        ClientFile::parse(&text).with_context(|| format!("bad config file {}", path.display()))?;
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let base = path.parent().unwrap_or(Path::new("."));
    file.resolve_paths(home.as_deref(), base);
    Ok((Some(path), file))
}

/// The default config file, for `chirp peer` (which has no `--config`): it takes `downloads`
/// and `auto_accept_from` from it. Empty if there is none.
pub(crate) fn peer_config() -> anyhow::Result<ClientFile> {
    Ok(load_config(None)?.1)
}

/// The flags, with the config file's settings where a flag was not given.
fn merge(args: &ConnectArgs, file: ClientFile, path: Option<&Path>) -> anyhow::Result<Settings> {
    let from = || match path {
        Some(p) => format!("in {}", p.display()),
        None => format!(
            "in a config file (--config FILE, or {} in the chirp config directory)",
            chirp_client::config::FILE_NAME
        ),
    };
    let servers = if args.servers.is_empty() {
        file.servers()
    } else {
        args.servers.clone()
    };
    anyhow::ensure!(
        !servers.is_empty(),
        "no server given: name one (chirp connect HOST[:PORT]), or set server = \"HOST\" {}",
        from()
    );
    let Some(nick) = args.nick.clone().or(file.nick) else {
        anyhow::bail!(
            "no nick given: pass --nick NICK, or set nick = \"NICK\" {}",
            from()
        );
    };
    let bell = if args.bell {
        true
    } else if args.no_bell {
        false
    } else {
        file.bell.unwrap_or(true)
    };
    Ok(Settings {
        servers,
        nick,
        home: args.home.clone().or(file.home),
        rooms: if args.join.is_empty() {
            file.rooms
        } else {
            args.join.clone()
        },
        bell,
        server_key: args.server_key.or(file.server_key),
        idle_timeout: args.idle_timeout.or(file.idle_timeout),
        qlog: args.qlog.clone().or(file.qlog),
        log_dir: args.log_dir.clone().or(file.log_dir),
        downloads: args.downloads.clone().or(file.downloads),
        relay_only: args.relay_only || file.relay_only.unwrap_or(false),
        auto_accept_from: if args.auto_accept_from.is_empty() {
            file.auto_accept_from
        } else {
            args.auto_accept_from.clone()
        },
    })
}

/// The idle timeout alone, and with several servers to fail over to: a client keeps its link
/// alive every half of it (PROTOCOL.md §7.1), so the shorter one costs a keepalive every 3 s
/// instead of 15 s, and buys leaving a dead node in 6 s instead of 30.
const IDLE_TIMEOUT_SECS: u64 = 30;
const IDLE_TIMEOUT_CLUSTER_SECS: u64 = 6;

/// The servers given, resolved: (name for known_keys, address) each, in order. An error names
/// the address at fault (and, in a list, which one it is).
fn resolve_all(servers: &[String]) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let n = servers.len();
    let mut out: Vec<(String, SocketAddr)> = Vec::with_capacity(n);
    for (i, server) in servers.iter().enumerate() {
        let which = if n > 1 {
            format!(" (number {} of the {n} given)", i + 1)
        } else {
            String::new()
        };
        let (name, addr) =
            resolve(server).with_context(|| format!("invalid server address '{server}'{which}"))?;
        if let Some((first, _)) = out.iter().find(|(_, a)| *a == addr) {
            anyhow::bail!(
                "invalid server address '{server}'{which}: it is {addr}, as '{first}' is; give \
                 each server once"
            );
        }
        if let Some((first, a)) = out.first()
            && a.is_ipv4() != addr.is_ipv4()
        {
            anyhow::bail!(
                "invalid server address '{server}'{which}: {addr} and '{first}' ({a}) are of \
                 different IP versions; give servers of one"
            );
        }
        out.push((name, addr));
    }
    Ok(out)
}

/// `HOST[:PORT]` → (name for known_keys, address).
pub(crate) fn resolve(server: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (host, port) = if let Ok(sa) = server.parse::<SocketAddr>() {
        (sa.ip().to_string(), sa.port())
    } else if let Ok(ip) = server.parse::<IpAddr>() {
        (ip.to_string(), DEFAULT_PORT)
    } else if let Some((h, p)) = server.rsplit_once(':') {
        let port = p
            .parse::<u16>()
            .ok()
            .with_context(|| format!("'{p}' is not a port number (1-65535)"))?;
        (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
        )
    } else {
        (server.to_owned(), DEFAULT_PORT)
    };
    // Port 0 means "any port" to bind, and nothing to send to.
    anyhow::ensure!(port != 0, "port 0 is out of range (1-65535)");
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve '{host}'"))?
        .next()
        .with_context(|| format!("'{host}' has no address"))?;
    let name = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((name, addr))
}

/// Prints events, human-readable or JSON. In a human line every field from the server (nicks,
/// rooms, topics, reasons, message text) is shown through `chirp_tui::safe`: the server
/// refuses control characters in names and text, but a client does not bet its terminal on
/// that (an older or hostile server, or bidi controls, which message text may hold).
struct Printer {
    json: bool,
    nick: String,
    /// Several server addresses were given: connection lines say which one.
    several: bool,
    /// Unread counts, following the read markers (`marker` events carry them).
    unread: chirp_client::unread::Unread,
}

/// The first line of `chirp connect`: where it connects, as whom. With several servers, all
/// of them, in the order they are tried.
pub(crate) fn greeting(servers: &[(String, SocketAddr)], nick: &str) -> String {
    let named = |(name, addr): &(String, SocketAddr)| format!("{name} ({addr})");
    match servers {
        [] | [_] => format!(
            "chirp connect to {} as {nick}; /help for commands",
            servers.first().map(named).unwrap_or_default()
        ),
        [first, rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(named).collect();
            format!(
                "chirp connect to {} as {nick} (if it is lost, then to {}); /help for commands",
                named(first),
                rest.join(", then ")
            )
        }
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Where a change happened, for a human line: the room, or `(DM)`.
fn place(room: Option<&str>) -> std::borrow::Cow<'_, str> {
    safe(room.unwrap_or("(DM)"))
}

/// A human line for an edit, deletion or reaction event `id`:
/// `[12:00:00] 7 #room: * BODY`, marked when replayed from history.
fn amend_line(ts: i64, id: u64, room: Option<&str>, history: bool, body: &str) -> String {
    let h = if history { " (history)" } else { "" };
    format!("[{}] {id} {}: * {body}{h}", hms(ts), place(room))
}

fn hms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%H:%M:%S")
        .to_string()
}

impl Printer {
    fn emit(&self, human: impl FnOnce() -> String, obj: Value) {
        crate::output::print_event(self.json, human, obj);
    }

    fn status(&self, text: &str) {
        self.emit(
            || format!("* {}", safe(text)),
            json!({"type": "status", "message": text}),
        );
    }

    fn error(&self, code: &str, text: &str) {
        self.emit(
            || format!("! {}", safe(text)),
            json!({"type": "error", "code": code, "message": text}),
        );
    }

    fn info(&self, text: &str) {
        self.emit(|| text.to_owned(), json!({"type": "info", "message": text}));
    }

    /// A message as a human line (before [`crate::output::guard`]).
    fn message_line(m: &Msg) -> String {
        let h = if m.history { " (history)" } else { "" };
        let place = match (&m.room, &m.to) {
            (Some(r), _) => safe(r).into_owned(),
            (None, Some(to)) => format!("(DM to {})", safe(to)),
            (None, None) => safe(&m.conv).into_owned(),
        };
        let (from, text) = (safe(&m.from), message_body(&m.text));
        let (id, ts) = (m.id, hms(m.ts));
        let mut state = String::new();
        if m.edited && !m.deleted {
            state.push_str(" (edited)");
        }
        if !m.reactions.is_empty() {
            let r: Vec<String> = m
                .reactions
                .iter()
                .map(|r| format!("{} {}", safe(&r.emoji), r.count))
                .collect();
            state.push_str(&format!(" [{}]", r.join(", ")));
        }
        if m.deleted {
            format!("[{ts}] {id} {place} <{from}> (message deleted){state}{h}")
        } else if m.action {
            format!("[{ts}] {id} {place}: * {from} {text}{state}{h}")
        } else {
            format!("[{ts}] {id} {place} <{from}> {text}{state}{h}")
        }
    }

    fn message(&self, m: &Msg) {
        let human = || Printer::message_line(m);
        let mut obj = json!({
            "type": "message", "room": m.room, "from": m.from, "text": m.text, "id": m.id,
            "ts": rfc3339(m.ts), "history": m.history,
        });
        if let Some(map) = obj.as_object_mut() {
            if let Some(to) = &m.to {
                map.insert("to".into(), json!(to));
            }
            if m.action {
                map.insert("action".into(), json!(true));
            }
            if m.edited {
                map.insert("edited".into(), json!(true));
            }
            if m.deleted {
                map.insert("deleted".into(), json!(true));
            }
            if !m.reactions.is_empty() {
                let r: Vec<_> = m
                    .reactions
                    .iter()
                    .map(|r| json!({"emoji": r.emoji, "count": r.count}))
                    .collect();
                map.insert("reactions".into(), json!(r));
            }
        }
        self.emit(human, obj);
    }

    fn server(&mut self, m: ServerMsg) {
        match m {
            ServerMsg::Joined {
                room,
                topic,
                members,
                more,
            } => {
                let n = members.len() as u64 + more;
                self.emit(
                    || {
                        let t = if topic.is_empty() {
                            String::new()
                        } else {
                            format!("; topic: {}", safe(&topic))
                        };
                        let members: Vec<_> = members.iter().map(|m| safe(m)).collect();
                        let room = safe(&room);
                        format!("* you joined {room} ({n} here: {}){t}", members.join(" "))
                    },
                    json!({"type": "join", "room": room, "nick": self.nick, "self": true,
                           "members": members, "topic": topic}),
                );
            }
            ServerMsg::Parted { room } => self.emit(
                || format!("* you left {}", safe(&room)),
                json!({"type": "part", "room": room, "nick": self.nick, "self": true}),
            ),
            ServerMsg::Presence { room, events } => {
                for ev in events {
                    match ev {
                        Presence::Join { nick } if nick != self.nick => self.emit(
                            || format!("* {} joined {}", safe(&nick), safe(&room)),
                            json!({"type": "join", "room": room, "nick": nick}),
                        ),
                        Presence::Part { nick } if nick != self.nick => self.emit(
                            || format!("* {} left {}", safe(&nick), safe(&room)),
                            json!({"type": "part", "room": room, "nick": nick}),
                        ),
                        Presence::Quit { nick, reason } if nick != self.nick => self.emit(
                            || format!("* {} quit ({})", safe(&nick), safe(&reason)),
                            json!({"type": "quit", "room": room, "nick": nick, "reason": reason}),
                        ),
                        _ => {}
                    }
                }
            }
            ServerMsg::Nick { old, new } => {
                if old == self.nick {
                    self.nick = new.clone();
                }
                self.emit(
                    || format!("* {} is now known as {}", safe(&old), safe(&new)),
                    json!({"type": "nick", "old": old, "new": new}),
                );
            }
            ServerMsg::Topic { room, topic, by } => self.emit(
                || {
                    let (by, room, topic) = (safe(&by), safe(&room), safe(&topic));
                    format!("* {by} set the topic of {room}: {topic}")
                },
                json!({"type": "topic", "room": room, "topic": topic, "by": by}),
            ),
            ServerMsg::List { rooms } => self.emit(
                || {
                    let mut s = format!("* {} rooms:", rooms.len());
                    for r in &rooms {
                        let (room, topic) = (safe(&r.room), safe(&r.topic));
                        s.push_str(&format!("\n  {room} ({}) {topic}", r.members));
                    }
                    s
                },
                json!({"type": "list", "rooms": rooms.iter().map(|r| json!({
                    "room": r.room, "members": r.members, "topic": r.topic})).collect::<Vec<_>>()}),
            ),
            ServerMsg::Who {
                room,
                members,
                more,
            } => self.emit(
                || {
                    let m = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    let members: Vec<_> = members.iter().map(|m| safe(m)).collect();
                    format!("* in {}: {}{m}", safe(&room), members.join(" "))
                },
                json!({"type": "who", "room": room, "members": members, "more": more}),
            ),
            ServerMsg::HistoryEnd { conv, count, .. } => self.emit(
                || format!("* end of history page ({count} messages)"),
                json!({"type": "history_end", "room": conv, "count": count}),
            ),
            ServerMsg::Bye { reason } => self.status(&format!("server says goodbye: {reason}")),
            ServerMsg::Limits {
                burst,
                per_sec,
                max_text,
            } => self.emit(
                || {
                    format!(
                        "* the server's limits changed: {burst} requests at once, then {per_sec} a second; messages up to {max_text} bytes"
                    )
                },
                json!({"type": "limits", "burst": burst, "per_sec": per_sec, "max_text": max_text}),
            ),
            ServerMsg::Mod(e) => self.emit(
                || Printer::mod_line(&e),
                json!({"type": "mod", "room": e.room, "id": e.id, "ts": rfc3339(e.ts),
                       "by": e.by, "action": e.action, "target": e.target, "arg": e.arg,
                       "history": e.history}),
            ),
            ServerMsg::Kicked {
                room,
                by,
                reason,
                banned,
            } => self.emit(
                || {
                    let what = if banned { "banned from" } else { "kicked out of" };
                    let why = reason
                        .as_deref()
                        .map(|r| format!(": {}", safe(r)))
                        .unwrap_or_default();
                    format!("* you were {what} {} by {}{why}", safe(&room), safe(&by))
                },
                json!({"type": "kicked", "room": room, "by": by, "reason": reason,
                       "banned": banned}),
            ),
            ServerMsg::Modes { room, modes, role } => self.emit(
                || {
                    let m = if modes.is_empty() {
                        "no modes".to_owned()
                    } else {
                        format!("modes {}", safe(&modes))
                    };
                    format!("* {} has {m}; you are {}", safe(&room), safe(&role))
                },
                json!({"type": "modes", "room": room, "modes": modes, "role": role}),
            ),
            ServerMsg::Sessions { sessions, silent } => self.emit(
                || {
                    format!(
                        "* {}",
                        chirp_client::moderation::describe_sessions(&sessions, &silent)
                    )
                },
                json!({"type": "sessions", "sessions": sessions.iter().map(|x| json!({
                    "id": x.id, "nick": x.nick, "fingerprint": x.fingerprint,
                    "addr": x.addr.to_string(), "node": x.node})).collect::<Vec<_>>(),
                    "silent": silent}),
            ),
            ServerMsg::Markers { markers } => {
                for m in markers {
                    self.marker(&m.conv, m.id);
                }
            }
            ServerMsg::Marker { conv, id } => self.marker(&conv, id),
            ServerMsg::SearchResults {
                conv, hits, more, ..
            } => {
                let more_text = if more { "; /search again for older" } else { "" };
                self.emit(
                    || {
                        let mut s = format!(
                            "* {} matches in {}{more_text}",
                            hits.len(),
                            safe(&conv)
                        );
                        for m in &hits {
                            s.push_str("\n  ");
                            s.push_str(&Printer::message_line(m));
                        }
                        s
                    },
                    json!({"type": "search_results", "conv": conv, "more": more,
                           "hits": hits.iter().map(|m| json!({
                               "id": m.id, "ts": rfc3339(m.ts), "from": m.from, "text": m.text,
                               "room": m.room, "to": m.to, "action": m.action,
                               "edited": m.edited,
                               "reactions": m.reactions.iter()
                                   .map(|r| json!({"emoji": r.emoji, "count": r.count}))
                                   .collect::<Vec<_>>(),
                           })).collect::<Vec<_>>()}),
                );
            }
            ServerMsg::Edited {
                conv,
                room,
                id,
                ts,
                by,
                target,
                text,
                history,
            } => self.emit(
                || {
                    let body = format!(
                        "{} edited message {target}: {} (edited)",
                        safe(&by),
                        message_body(&text)
                    );
                    amend_line(ts, id, room.as_deref(), history, &body)
                },
                json!({"type": "edited", "room": room, "conv": conv, "id": id,
                       "ts": rfc3339(ts), "by": by, "target": target, "text": text,
                       "history": history}),
            ),
            ServerMsg::Deleted {
                conv,
                room,
                id,
                ts,
                by,
                target,
                history,
            } => self.emit(
                || {
                    let body = format!("message {target} deleted by {}", safe(&by));
                    amend_line(ts, id, room.as_deref(), history, &body)
                },
                json!({"type": "deleted", "room": room, "conv": conv, "id": id,
                       "ts": rfc3339(ts), "by": by, "target": target, "history": history}),
            ),
            ServerMsg::Reaction {
                conv,
                room,
                id,
                ts,
                by,
                target,
                emoji,
                count,
                removed,
                history,
            } => self.emit(
                || {
                    let what = if removed { "took back" } else { "reacted" };
                    let emoji = safe(&emoji);
                    let body =
                        format!("{} {what} {emoji} on message {target} ({emoji} {count})", safe(&by));
                    amend_line(ts, id, room.as_deref(), history, &body)
                },
                json!({"type": "reaction", "room": room, "conv": conv, "id": id,
                       "ts": rfc3339(ts), "by": by, "target": target, "emoji": emoji,
                       "count": count, "removed": removed, "history": history}),
            ),
            ServerMsg::Typing { conv, room, from } => self.emit(
                || {
                    format!("* {} is typing in {}", safe(&from), place(room.as_deref()))
                },
                json!({"type": "typing", "room": room, "conv": conv, "from": from}),
            ),
            // Handled by the session (welcome, ack, error, msg).
            _ => {}
        }
    }

    /// The user's read marker in `conv` is at `id` (from any of its devices).
    fn marker(&mut self, conv: &str, id: u64) {
        let unread = self.unread.marker(conv, id);
        self.emit(
            || format!("* read up to #{id} in {}: {unread} unread", safe(conv)),
            json!({"type": "marker", "conv": conv, "id": id, "unread": unread}),
        );
    }

    /// A room's moderation event as a human line: `[12:00:00] #room: * ann kicked bob (spam)`.
    fn mod_line(e: &ModEvent) -> String {
        let h = if e.history { " (history)" } else { "" };
        let what = chirp_client::moderation::describe(e);
        format!("[{}] {}: * {what}{h}", hms(e.ts), safe(&e.room))
    }
}

/// What the client keeps on this machine besides its key: the ignore list (loaded, and where
/// to save it) and the conversation logs (`--log-dir`).
pub(crate) struct Local {
    pub(crate) ignores: IgnoreList,
    pub(crate) ignore_path: PathBuf,
    pub(crate) log: Option<ChatLog>,
}

impl Local {
    fn open(log_dir: Option<&Path>) -> anyhow::Result<Local> {
        let ignore_path = crate::id::default_state_dir()?.join(chirp_client::ignore::FILE_NAME);
        let ignores = IgnoreList::load(&ignore_path)
            .with_context(|| format!("cannot read the ignore list {}", ignore_path.display()))?;
        let log = log_dir
            .map(|d| {
                ChatLog::open(d)
                    .with_context(|| format!("cannot open the log directory {}", d.display()))
            })
            .transpose()?;
        Ok(Local {
            ignores,
            ignore_path,
            log,
        })
    }
}

/// Runs until the user leaves. Returns the exit code.
pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<u8> {
    let (path, file) = load_config(args.config.as_deref())?;
    let s = merge(&args, file, path.as_deref())?;
    let home = match &s.home {
        Some(h) => h.clone(),
        None => crate::id::default_home()?,
    };
    let (identity, _) = Identity::load_or_create(&home.join(crate::id::KEY_FILE))
        .context("cannot load your identity")?;
    let servers = resolve_all(&s.servers)?;
    if let Err(e) = chirp_chat::names::nick(&s.nick) {
        anyhow::bail!("bad nick {}: {e}", safe(&s.nick));
    }
    for r in &s.rooms {
        if let Err(e) = chirp_chat::names::room(r) {
            anyhow::bail!("bad room {}: {e}", safe(r));
        }
    }
    let local = Local::open(s.log_dir.as_deref())?;
    let json = args.json;
    let downloads = match s.downloads.clone() {
        Some(d) => d,
        None => dirs::download_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join("Downloads")))
            .context("no download directory (no home directory): pass --downloads DIR")?,
    };
    // (`merge` made sure there is a server.)
    let Some((&(_, first), alternates)) = servers.split_first() else {
        anyhow::bail!("no server given");
    };
    let mut config = ClientConfig::new(first, s.nick.clone());
    config.alternates = alternates.iter().map(|&(_, a)| a).collect();
    config.rooms = s.rooms.clone();
    config.identity = Some(chirp_proto::handshake::StaticSecret(*identity.secret()));
    let idle = s.idle_timeout.unwrap_or(if alternates.is_empty() {
        IDLE_TIMEOUT_SECS
    } else {
        IDLE_TIMEOUT_CLUSTER_SECS
    });
    config.idle_timeout = Duration::from_secs(idle);
    config.pace = !args.no_pace;
    config.qlog_dir = s.qlog.clone();
    config.give_up_after = Duration::from_secs(idle.max(10));
    // On a terminal, the chat UI (unless line mode was asked for); it makes its own key check,
    // which reports through the UI rather than on stdout.
    let files = crate::dm::Setup {
        json,
        bind: config.bind,
        downloads,
        known_keys: home.join(crate::peer::KNOWN_KEYS_FILE),
        idle_timeout: config.idle_timeout,
        ui: false,
        relay_only: s.relay_only,
        auto_accept_from: s.auto_accept_from.clone(),
    };
    if crate::tui::wanted(args.line, args.json) {
        return crate::tui::connect(
            config,
            servers,
            s.server_key,
            home.join(crate::peer::KNOWN_KEYS_FILE),
            s.bell,
            local,
            crate::dm::Setup { ui: true, ..files },
        )
        .await;
    }
    let notices = Printer {
        json,
        nick: String::new(),
        several: false,
        unread: Default::default(),
    };
    let greeting = greeting(&servers, &s.nick);
    let several = servers.len() > 1;
    config.server_key_check = Some(crate::trust::server_key_check(
        servers,
        s.server_key,
        home.join(crate::peer::KNOWN_KEYS_FILE),
        move |notice| notices.status(&notice),
    ));
    let (handle, mut tevents, transport) =
        driver::start_transport(&config).context("cannot start the client")?;
    let key_check = config.server_key_check.clone();
    let mut dm = crate::dm::DmFiles::new(files);
    let session = Session::new(config, Instant::now(), chirp_transport::random_seed());
    let Local {
        ignores,
        ignore_path,
        mut log,
    } = local;
    let mut client = LineClient::new(session, &s.rooms).with_ignores(ignores);
    let mut out = Printer {
        json,
        nick: s.nick.clone(),
        several,
        unread: Default::default(),
    };
    out.status(&greeting);
    let (line_tx, mut lines) = tokio::sync::mpsc::channel(16);
    lines::spawn_reader(
        tokio::io::BufReader::new(tokio::io::stdin()),
        MAX_LINE,
        line_tx,
    );
    let mut input_open = true;
    // End of input came while a file transfer was under way: the session finishes after it.
    let mut finish_after_files = false;
    let local = handle.local_addr();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let code = 'session: loop {
        if driver::perform(client.session(), &handle, key_check.as_ref())
            .await
            .is_err()
        {
            out.error("fatal", "the transport stopped");
            break 1;
        }
        while let Some(ev) = client.session().poll_event() {
            for reply in client.on_event(Instant::now(), &ev) {
                out.reply(reply);
            }
            match &ev {
                Event::Server(m) if dm.on_server(client.session(), m) => continue,
                Event::Welcome { .. } => dm.welcome(client.session()),
                _ => {}
            }
            if client.hides(&ev) {
                continue;
            }
            if let Some(l) = &mut log {
                let logged = match &ev {
                    Event::Message(m) => l.append(m, client.nick()),
                    Event::Server(m) => match logs::Change::of(m) {
                        Some(c) => l.append_change(&c, client.nick()),
                        None => Ok(false),
                    },
                    _ => Ok(false),
                };
                if let Err(e) = logged {
                    out.error("log", &format!("{e}; no more messages are logged"));
                    log = None;
                }
            }
            match out.event(ev) {
                Ok(Some(code)) => break 'session code,
                Ok(None) => {}
                Err(e) => {
                    // Let the CLOSE go out before the error ends the process.
                    let _ = driver::perform(client.session(), &handle, None).await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), handle.wait_idle()).await;
                    transport.abort();
                    return Err(e);
                }
            }
        }
        // The last ids logged, once per batch of events (not per line).
        if let Some(l) = &mut log
            && let Err(e) = l.flush()
        {
            out.error("log", &format!("{e}; no more messages are logged"));
            log = None;
        }
        // What the events asked of the file transfer's peer session (after an introduction,
        // its first packet) and of the session (a `meet` for the next transfer, which may
        // start once the pump ended the last) goes out now: before waiting, or nothing may
        // wake us to send it.
        if let Err(e) = dm.pump(&handle).await {
            out.error("fatal", &format!("{e:#}"));
            break 1;
        }
        dm.start_next(client.session(), local);
        // The transfers that input's end waited for are over (the pump just ended the last):
        // the session leaves now, not at its next timer.
        if finish_after_files && !dm.busy() {
            finish_after_files = false;
            client.finish(Instant::now());
        }
        if driver::perform(client.session(), &handle, key_check.as_ref())
            .await
            .is_err()
        {
            out.error("fatal", "the transport stopped");
            break 1;
        }
        let wake = [client.session().poll_timeout(), dm.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let want_input = input_open && client.session().backlog() + client.held() < MAX_BACKLOG;
        tokio::select! {
            line = lines.recv(), if want_input => {
                let now = Instant::now();
                match line {
                    Some(Line::Text(bytes)) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let text = text.strip_suffix('\r').unwrap_or(&text);
                        if let Some(cmd) = crate::dm::command(text) {
                            dm.command(client.session(), cmd);
                            continue;
                        }
                        match client.input(now, text) {
                            Reply::Leave => {
                                input_open = false;
                                client.finish(now);
                            }
                            other => out.reply(other),
                        }
                        if client.ignores_mut().take_dirty()
                            && let Err(e) = client.ignores_mut().save(&ignore_path)
                        {
                            out.error(
                                "ignore",
                                &format!("cannot save the ignore list {}: {e}", ignore_path.display()),
                            );
                        }
                    }
                    Some(Line::TooLong { bytes }) => out.error(
                        "bad_text",
                        &format!(
                            "line of {bytes} bytes not sent: at most {MAX_LINE} bytes per line (the server's own limit is smaller)"
                        ),
                    ),
                    Some(Line::Failed(e)) => {
                        out.error("input", &format!("cannot read standard input: {e}"));
                        input_open = false;
                        client.finish(now);
                    }
                    None if dm.busy() => {
                        input_open = false;
                        finish_after_files = true;
                        out.status("end of input: leaving once the file transfer under way ends");
                    }
                    None => {
                        input_open = false;
                        client.finish(now);
                    }
                }
            }
            ev = tevents.recv() => match ev {
                Some(ev) if client.session().connection() == Some(ev.conn()) => {
                    client.session().handle_transport(Instant::now(), ev)
                }
                // Another connection: a file transfer's peer connection, or one of an
                // earlier server connection (which the session ignores).
                Some(ev) => {
                    if let Err(e) = dm.on_event(&handle, ev).await {
                        out.error("fatal", &format!("{e:#}"));
                        break 1;
                    }
                }
                None => {
                    out.error("fatal", "the transport stopped");
                    break 1;
                }
            },
            input = dm.hashed() => dm.on_hashed(client.session(), input),
            () = driver::sleep_until(wake) => {
                client.session().handle_timeout(Instant::now());
                if let Err(e) = dm.on_timeout(&handle, client.session()).await {
                    out.error("fatal", &format!("{e:#}"));
                    break 1;
                }
            }
            _ = &mut ctrl_c, if input_open => {
                input_open = false;
                client.finish(Instant::now());
            }
        }
    };
    // The CLOSE (queued by the session as it ended) goes out, and is repeated if lost.
    let _ = tokio::time::timeout(Duration::from_secs(2), handle.wait_idle()).await;
    transport.abort();
    Ok(code)
}

impl Printer {
    /// Prints what a typed line did (`Leave` is the caller's).
    fn reply(&self, reply: Reply) {
        match reply {
            Reply::Nothing | Reply::Leave => {}
            Reply::Status(s) => self.status(&s),
            Reply::Error { code, message } => self.error(code, &message),
            Reply::Help(h) => self.info(&h),
        }
    }

    /// Prints one session event. Returns the exit code when the session has ended.
    fn event(&mut self, ev: Event) -> anyhow::Result<Option<u8>> {
        match ev {
            Event::Connecting { attempt } if attempt > 1 => {
                self.status(&format!("connecting (attempt {attempt})"))
            }
            Event::Connecting { .. } => {}
            Event::Connected { server, server_key } => {
                let fp = PublicKey(server_key).fingerprint();
                if self.several {
                    self.status(&format!("connected to {server}; server key {fp}"));
                } else {
                    self.status(&format!("connected; server key {fp}"));
                }
            }
            Event::Welcome { nick, .. } => {
                self.nick = nick.clone();
                self.emit(
                    || format!("* connected as {}", safe(&nick)),
                    json!({"type": "connected", "nick": nick}),
                );
            }
            Event::Message(m) => {
                if m.c.is_none() && m.from != self.nick {
                    self.unread.message(&m.conv, m.id);
                }
                self.message(&m)
            }
            Event::Delivered { id, conv, .. } => {
                let room = conv.starts_with('#').then_some(conv.as_str());
                self.emit(
                    || format!("* delivered #{id}"),
                    json!({"type": "delivered", "id": id, "room": room, "conv": conv}),
                );
            }
            Event::Refused { code, message, .. } => self.error(&code, &message),
            Event::Error { code, message } => self.error(&code, &message),
            Event::Pacing {
                held,
                next_in,
                per_sec,
            } => self.emit(
                || {
                    if held == 0 {
                        "* pacing: every waiting line has gone out".to_owned()
                    } else {
                        format!(
                            "* pacing: {held} line(s) wait for the server's rate ({per_sec}/s); nothing is lost"
                        )
                    }
                },
                json!({"type": "pacing", "held": held, "per_sec": per_sec,
                       "next_in_ms": u64::try_from(next_in.as_millis()).unwrap_or(u64::MAX)}),
            ),
            Event::Server(m) => self.server(m),
            Event::Disconnected {
                reason,
                retry_in,
                server,
                next,
            } => {
                let obj = json!({"type": "disconnected", "reason": reason,
                       "retry_in_ms": retry_in.as_millis() as u64,
                       "server": server.to_string(), "next": next.to_string()});
                self.emit(
                    || {
                        let (reason, secs) = (safe(&reason), retry_in.as_secs_f64());
                        if server != next {
                            format!(
                                "* disconnected from {server}: {reason}; reconnecting to {next} in {secs:.1} s"
                            )
                        } else {
                            format!("* disconnected: {reason}; reconnecting in {secs:.1} s")
                        }
                    },
                    obj,
                )
            }
            Event::Stats(Some(s)) => Output {
                json: self.json,
                path: None,
            }
            .stats("server", &s),
            Event::Stats(None) => self.error("stats", "not connected"),
            Event::Fatal(msg) => {
                self.error("fatal", &msg);
                anyhow::bail!("{msg}");
            }
            Event::Finished { undelivered: 0 } => return Ok(Some(0)),
            Event::Finished { undelivered } => {
                let msg = format!(
                    "{undelivered} message(s) were never acknowledged by the server (it could not be reached)"
                );
                self.error("undelivered", &msg);
                return Ok(Some(1));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of issue 11.
    const EVIL: &str =
        "evil \x1b]0;pwned-title\x07 \x1b[2J\x1b[31mred\x1b[0m \x08\x08bs \u{202e}evil-bidi end";

    fn msg(room: Option<&str>, to: Option<&str>, from: &str, text: &str, action: bool) -> Msg {
        Msg {
            conv: room.map_or_else(|| "@a,b".to_owned(), str::to_owned),
            room: room.map(str::to_owned),
            id: 1,
            ts: 0,
            from: from.into(),
            to: to.map(str::to_owned),
            text: text.into(),
            action,
            history: false,
            c: None,
            ..Msg::default()
        }
    }

    /// What `chirp connect --line` prints for a message: nothing in it can act on a terminal.
    /// The server refuses control characters in names and text, so a crafted event stands for
    /// an older or hostile server here; the real-process test in `tests/terminal_text.rs`
    /// covers what the server does let through (bidi controls in text).
    #[test]
    fn a_crafted_message_is_printed_harmlessly() {
        let forbidden = |c: char| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c);
        for m in [
            msg(Some("#r\x1b[2J"), None, "ev\x07il", EVIL, false),
            msg(Some("#r"), None, "ev\u{9b}il", EVIL, true),
            msg(None, Some("b\u{202e}ob"), "a\x08lice", EVIL, false),
        ] {
            let line = crate::output::guard(Printer::message_line(&m));
            assert!(!line.chars().any(forbidden), "{line:?}");
            assert!(
                line.contains(
                    "evil ^[]0;pwned-title^G ^[[2J^[[31mred^[[0m ^H^Hbs <U+202E>evil-bidi end"
                ),
                "{line:?}"
            );
        }
        let line = Printer::message_line(&msg(Some("#r\x1b[2J"), None, "ev\x07il", "x", false));
        assert!(line.ends_with(" #r^[[2J <ev^Gil> x"), "{line:?}");
        let line = Printer::message_line(&msg(None, Some("b\u{202e}ob"), "a", "x", true));
        assert!(line.ends_with(" (DM to b<U+202E>ob): * a x"), "{line:?}");
    }

    #[test]
    fn several_servers_are_resolved_in_order_and_a_bad_one_is_named() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let servers = resolve_all(&args(&["127.0.0.1:5000", "127.0.0.2", "[::1]:7"]));
        let e = format!("{:#}", servers.expect_err("mixed IP versions"));
        assert!(
            e.starts_with("invalid server address '[::1]:7' (number 3 of the 3 given)"),
            "{e}"
        );
        let servers = resolve_all(&args(&["127.0.0.1:5000", "127.0.0.2"])).expect("resolves");
        assert_eq!(
            servers,
            vec![
                ("127.0.0.1:5000".to_owned(), ([127, 0, 0, 1], 5000).into()),
                ("127.0.0.2:7667".to_owned(), ([127, 0, 0, 2], 7667).into()),
            ]
        );
        assert_eq!(
            greeting(&servers, "ann"),
            "chirp connect to 127.0.0.1:5000 (127.0.0.1:5000) as ann (if it is lost, then to \
             127.0.0.2:7667 (127.0.0.2:7667)); /help for commands"
        );
        assert_eq!(
            greeting(&servers[..1], "ann"),
            "chirp connect to 127.0.0.1:5000 (127.0.0.1:5000) as ann; /help for commands"
        );
        let e = resolve_all(&args(&["127.0.0.1:5000", "127.0.0.1:0"])).expect_err("port 0");
        assert_eq!(
            format!("{e:#}"),
            "invalid server address '127.0.0.1:0' (number 2 of the 2 given): port 0 is out of \
             range (1-65535)"
        );
        // One server alone: no numbering.
        let e = resolve_all(&args(&["127.0.0.1:x"])).expect_err("no port");
        assert_eq!(
            format!("{e:#}"),
            "invalid server address '127.0.0.1:x': 'x' is not a port number (1-65535)"
        );
    }

    /// A multi-line message stays readable, and its second line cannot pose as a message.
    #[test]
    fn a_multi_line_message_is_indented() {
        let m = msg(
            Some("#r"),
            None,
            "alice",
            "one\n[00:00:00] #r <bob> forged",
            false,
        );
        let line = Printer::message_line(&m);
        let lines: Vec<&str> = line.lines().collect();
        assert_eq!(lines.len(), 2, "{line:?}");
        assert!(lines[0].ends_with(" #r <alice> one"), "{line:?}");
        assert_eq!(lines[1], "    [00:00:00] #r <bob> forged");
    }

    /// `chirp connect ARGS`, as clap parses them.
    fn args(argv: &[&str]) -> ConnectArgs {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            a: ConnectArgs,
        }
        let argv = std::iter::once("connect").chain(argv.iter().copied());
        <Cmd as clap::Parser>::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .a
    }

    fn fp(s: &str) -> Fingerprint {
        s.parse().expect("fingerprint")
    }

    fn file(text: &str) -> ClientFile {
        ClientFile::parse(text).expect("valid")
    }

    /// Issue 19: the config file fills in what the flags leave out; a flag wins.
    #[test]
    fn flags_override_the_config_file() {
        let f = "server = [\"10.0.0.1\", \"10.0.0.2\"]\nnick = \"ann\"\nrooms = [\"#a\", \"#b\"]\n\
                 bell = false\nlog_dir = \"/logs\"\nidle_timeout = 9\ndownloads = \"/dl\"\n\
                 relay_only = true\nauto_accept_from = [\"bbbb-bbbb-bbbb-bbbb-bbbb-bbbb\"]\n";
        // Nothing on the command line: all from the file.
        let s = merge(&args(&[]), file(f), Some(Path::new("/c.toml"))).expect("complete");
        assert_eq!(
            s,
            Settings {
                servers: vec!["10.0.0.1".into(), "10.0.0.2".into()],
                nick: "ann".into(),
                home: None,
                rooms: vec!["#a".into(), "#b".into()],
                bell: false,
                server_key: None,
                idle_timeout: Some(9),
                qlog: None,
                log_dir: Some(PathBuf::from("/logs")),
                downloads: Some(PathBuf::from("/dl")),
                relay_only: true,
                auto_accept_from: vec![fp("bbbb-bbbb-bbbb-bbbb-bbbb-bbbb")],
            }
        );
        // Flags win, each on its own; --join replaces the file's rooms.
        let a = args(&[
            "127.0.0.1:7000",
            "--nick",
            "bob",
            "--join",
            "#c",
            "--bell",
            "--idle-timeout",
            "3",
            "--log-dir",
            "/mine",
            "--downloads",
            "/inbox",
            "--auto-accept-from",
            "cccc-cccc-cccc-cccc-cccc-cccc",
            "--auto-accept-from",
            "dddd-dddd-dddd-dddd-dddd-dddd",
        ]);
        let s = merge(&a, file(f), None).expect("complete");
        assert_eq!(s.servers, ["127.0.0.1:7000"]);
        assert_eq!((s.nick.as_str(), s.bell), ("bob", true));
        assert_eq!(s.rooms, ["#c"]);
        assert_eq!(s.idle_timeout, Some(3));
        assert_eq!(s.log_dir, Some(PathBuf::from("/mine")));
        assert_eq!(s.downloads, Some(PathBuf::from("/inbox")));
        let trusted = [
            "cccc-cccc-cccc-cccc-cccc-cccc",
            "dddd-dddd-dddd-dddd-dddd-dddd",
        ];
        assert_eq!(s.auto_accept_from, trusted.map(fp));
        // No file: the flags alone, the bell on by default and off with --no-bell.
        let s = merge(&args(&["h", "--nick", "c"]), ClientFile::default(), None).expect("ok");
        assert!(s.bell && s.rooms.is_empty() && s.log_dir.is_none());
        assert!(!s.relay_only, "off unless asked for");
        let s = merge(
            &args(&["h", "--nick", "c", "--relay-only"]),
            ClientFile::default(),
            None,
        )
        .expect("ok");
        assert!(s.relay_only);
        let s = merge(&args(&["h", "--nick", "c", "--no-bell"]), file(f), None).expect("ok");
        assert!(!s.bell);
    }

    #[test]
    fn what_is_missing_is_named_with_where_to_set_it() {
        let e =
            merge(&args(&["--nick", "ann"]), ClientFile::default(), None).expect_err("no server");
        let e = format!("{e:#}");
        assert!(
            e.starts_with("no server given") && e.contains("client.toml"),
            "{e}"
        );
        let e = merge(
            &args(&[]),
            file("server = \"h\"\n"),
            Some(Path::new("/x/c.toml")),
        )
        .expect_err("no nick");
        let e = format!("{e:#}");
        assert!(e.contains("--nick NICK") && e.contains("/x/c.toml"), "{e}");
    }

    #[test]
    fn a_bad_config_file_is_named_with_the_line_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "nick = \"ann\"\nserevr = \"x\"\n").expect("write");
        let e = format!("{:#}", load_config(Some(&path)).expect_err("typo"));
        assert!(
            e.starts_with(&format!(
                "bad config file {}: line 2, column 1: ",
                path.display()
            )),
            "{e}"
        );
        assert!(e.contains("unknown field `serevr`"), "{e}");
        // --config names a file that must exist.
        let missing = dir.path().join("nope.toml");
        let e = format!("{:#}", load_config(Some(&missing)).expect_err("missing"));
        assert!(e.starts_with("cannot read the config file"), "{e}");
        // Paths in it are its directory's.
        std::fs::write(&path, "log_dir = \"logs\"\n").expect("write");
        let (p, f) = load_config(Some(&path)).expect("valid");
        assert_eq!(p.as_deref(), Some(path.as_path()));
        assert_eq!(f.log_dir, Some(dir.path().join("logs")));
    }
}
