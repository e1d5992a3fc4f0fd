//! The one command language of chirp's input lines, for every program and surface: `chirp
//! connect` and `chirp peer`, in the terminal UI and in line/JSON mode.
//!
//! [`COMMANDS`] is the one table: each command's name, aliases, argument usage, one-line help
//! and the [`Context`]s it is available in. [`parse`] turns a typed line into a [`Command`]
//! (a plain line is [`Command::Text`]; `//` escapes a leading slash) or a precise
//! [`CommandError`], and [`help`] writes the help text of a context from the same table, so
//! that what `/help` lists, what Tab completes and what the parser accepts cannot drift apart.
//!
//! Pure code: no I/O, no state. What a command *does* is the caller's business (the UI's
//! `App`, `chirp connect`'s line mode, `chirp peer`'s line mode).
//!
//! ```
//! use chirp_tui::command::{self, Command, Context};
//!
//! // A line-mode caller (`chirp connect --line`): strip the line end, then parse.
//! let line = "/msg bob see you at 5";
//! match command::parse(line, Context::ChatLine) {
//!     Ok(Command::Msg { to, text }) => assert_eq!((&*to, &*text), ("bob", "see you at 5")),
//!     other => panic!("{other:?}"),
//! }
//! let text = command::parse("//etc/hosts", Context::ChatLine);
//! assert_eq!(text, Ok(Command::Text("/etc/hosts".into())));
//! // An error is shown as it is (JSON mode: `{"type":"error","code":err.code(),…}`).
//! let err = command::parse("/history -5", Context::ChatLine).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "/history takes a positive number of messages: usage: /history [N]"
//! );
//! assert_eq!(err.code(), "usage");
//! // `/help`:
//! assert!(command::help(Context::ChatLine).contains("/history [N]"));
//! ```

use std::fmt;

/// Where a line was typed: which program, on which surface. Commands differ by what the
/// program can do (a peer has no rooms or nicks) and by what the surface shows (line mode has
/// no buffers to switch or panels to toggle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// `chirp connect` in the terminal UI.
    ChatUi,
    /// `chirp connect --line` or `--json`: standard input lines.
    ChatLine,
    /// `chirp peer` in the terminal UI.
    PeerUi,
    /// `chirp peer` in line/JSON mode (and `--plain`).
    PeerLine,
}

impl Context {
    /// Every context, for tests and tables.
    pub const ALL: [Context; 4] = [
        Context::ChatUi,
        Context::ChatLine,
        Context::PeerUi,
        Context::PeerLine,
    ];

    /// `chirp peer`: one peer, no server.
    pub fn is_peer(self) -> bool {
        matches!(self, Context::PeerUi | Context::PeerLine)
    }

    /// The terminal UI (as opposed to line/JSON mode).
    pub fn is_ui(self) -> bool {
        matches!(self, Context::ChatUi | Context::PeerUi)
    }

    const fn bit(self) -> u8 {
        match self {
            Context::ChatUi => CHAT_UI,
            Context::ChatLine => CHAT_LINE,
            Context::PeerUi => PEER_UI,
            Context::PeerLine => PEER_LINE,
        }
    }
}

const CHAT_UI: u8 = 1;
const CHAT_LINE: u8 = 2;
const PEER_UI: u8 = 4;
const PEER_LINE: u8 = 8;
const CHAT: u8 = CHAT_UI | CHAT_LINE;
const UI: u8 = CHAT_UI | PEER_UI;
const EVERYWHERE: u8 = CHAT | PEER_UI | PEER_LINE;

/// Which command a table row or a [`Command`] is, without its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Name {
    /// `/join`
    Join,
    /// `/part`
    Part,
    /// `/msg`
    Msg,
    /// `/query`
    Query,
    /// `/me`
    Me,
    /// `/nick`
    Nick,
    /// `/topic`
    Topic,
    /// `/list`
    List,
    /// `/who`
    Who,
    /// `/history`
    History,
    /// `/buffer`
    Buffer,
    /// `/close`
    Close,
    /// `/search`
    Search,
    /// `/read`
    Read,
    /// `/clear`
    Clear,
    /// `/members`
    Members,
    /// `/stats`
    Stats,
    /// `/retry`
    Retry,
    /// `/bell`
    Bell,
    /// `/accept`
    Accept,
    /// `/refuse`
    Refuse,
    /// `/send`
    Send,
    /// `/decline`
    Decline,
    /// `/cancel`
    Cancel,
    /// `/op`
    Op,
    /// `/deop`
    Deop,
    /// `/voice`
    Voice,
    /// `/devoice`
    Devoice,
    /// `/mute`
    Mute,
    /// `/unmute`
    Unmute,
    /// `/invite`
    Invite,
    /// `/kick`
    Kick,
    /// `/ban`
    Ban,
    /// `/unban`
    Unban,
    /// `/mode`
    Mode,
    /// `/sessions`
    Sessions,
    /// `/kill`
    Kill,
    /// `/ignore`
    Ignore,
    /// `/unignore`
    Unignore,
    /// `/edit`
    Edit,
    /// `/delete`
    Delete,
    /// `/react`
    React,
    /// `/unreact`
    Unreact,
    /// `/typing`
    Typing,
    /// `/ids`
    Ids,
    /// `/help`
    Help,
    /// `/quit`
    Quit,
}

/// One row of [`COMMANDS`].
#[derive(Debug)]
pub struct Spec {
    /// Which command.
    pub name: Name,
    /// Its name as typed, with the slash (`"/join"`).
    pub word: &'static str,
    /// Other words for it (`["/j"]`); matching, like `word`'s, ignores case.
    pub aliases: &'static [&'static str],
    /// Its arguments, `[optional]` and `UPPERCASE` placeholders (`"#ROOM"`); empty if none.
    pub usage: &'static str,
    /// What it does, in one line.
    pub help: &'static str,
    contexts: u8,
}

impl Spec {
    /// Whether the command exists in `context`.
    pub fn available_in(&self, context: Context) -> bool {
        self.contexts & context.bit() != 0
    }

    /// `"/join #ROOM"`, or just the word for a command without arguments.
    pub fn synopsis(&self) -> String {
        if self.usage.is_empty() {
            self.word.to_owned()
        } else {
            format!("{} {}", self.word, self.usage)
        }
    }

    /// Whether `word` (with its slash, any case) names this command.
    fn is(&self, word: &str) -> bool {
        self.word.eq_ignore_ascii_case(word)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(word))
    }
}

/// Every command of every context, in the order `/help` lists them and Tab offers them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: Name::Join,
        word: "/join",
        aliases: &["/j"],
        usage: "#ROOM [KEY]",
        help: "join a room (or make it the current one); KEY for a room with one (+k)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Part,
        word: "/part",
        aliases: &["/leave"],
        usage: "[#ROOM] [REASON]",
        help: "leave the current room, or the one named",
        contexts: CHAT,
    },
    Spec {
        name: Name::Msg,
        word: "/msg",
        aliases: &[],
        usage: "NICK TEXT",
        help: "send a direct message, staying where you are",
        contexts: CHAT,
    },
    Spec {
        name: Name::Query,
        word: "/query",
        aliases: &["/q"],
        usage: "NICK [TEXT]",
        help: "open a direct conversation and switch to it (sending TEXT there)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Me,
        word: "/me",
        aliases: &[],
        usage: "TEXT",
        help: "send an action (* you TEXT)",
        contexts: CHAT | PEER_UI,
    },
    Spec {
        name: Name::Nick,
        word: "/nick",
        aliases: &[],
        usage: "NICK",
        help: "change your nick (if nobody else's key holds it)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Topic,
        word: "/topic",
        aliases: &[],
        usage: "[TEXT]",
        help: "set the current room's topic (without TEXT: show it)",
        contexts: CHAT,
    },
    Spec {
        name: Name::List,
        word: "/list",
        aliases: &[],
        usage: "",
        help: "list the rooms",
        contexts: CHAT,
    },
    Spec {
        name: Name::Who,
        word: "/who",
        aliases: &["/names"],
        usage: "[#ROOM]",
        help: "list the members of the current room, or of the one named",
        contexts: CHAT,
    },
    Spec {
        name: Name::History,
        word: "/history",
        aliases: &[],
        usage: "[N]",
        help: "show N older messages of the current room (default 50)",
        contexts: CHAT_LINE,
    },
    Spec {
        name: Name::Buffer,
        word: "/buffer",
        aliases: &["/b"],
        usage: "NAME|N",
        help: "switch to a buffer, by name or number",
        contexts: UI,
    },
    Spec {
        name: Name::Close,
        word: "/close",
        aliases: &[],
        usage: "",
        help: "close the buffer (parts a room)",
        contexts: UI,
    },
    Spec {
        name: Name::Search,
        word: "/search",
        aliases: &[],
        usage: "[TEXT]",
        help: "search the server's history of the current room (the UI: or conversation) for \
               every word, newest first, the same again for older; chirp peer's UI searches \
               the loaded lines, as Ctrl+R does in every UI",
        contexts: CHAT | PEER_UI,
    },
    Spec {
        name: Name::Read,
        word: "/read",
        aliases: &[],
        usage: "",
        help: "mark everything shown as read (your other devices clear their unread counts)",
        contexts: CHAT_LINE,
    },
    Spec {
        name: Name::Clear,
        word: "/clear",
        aliases: &[],
        usage: "",
        help: "clear the current buffer",
        contexts: UI,
    },
    Spec {
        name: Name::Members,
        word: "/members",
        aliases: &[],
        usage: "",
        help: "show or hide the member list",
        contexts: UI,
    },
    Spec {
        name: Name::Stats,
        word: "/stats",
        aliases: &[],
        usage: "",
        help: "show the link statistics: RTT, loss, retransmissions, duplicates, drops",
        contexts: EVERYWHERE,
    },
    Spec {
        name: Name::Retry,
        word: "/retry",
        aliases: &[],
        usage: "",
        help: "resend the failed messages of this buffer (like Alt+R)",
        contexts: UI,
    },
    Spec {
        name: Name::Bell,
        word: "/bell",
        aliases: &[],
        usage: "[on|off]",
        help: "ring the bell on highlights, or not (without an argument: switch)",
        contexts: UI,
    },
    Spec {
        name: Name::Accept,
        word: "/accept",
        aliases: &[],
        usage: "[ID]",
        help: "trust the key chirp asked about (a new key from another port of the peer's IP); \
               else accept a file offer (number ID, or the oldest)",
        contexts: CHAT_UI | PEER_UI | PEER_LINE,
    },
    Spec {
        name: Name::Refuse,
        word: "/refuse",
        aliases: &[],
        usage: "",
        help: "refuse that key",
        contexts: PEER_UI | PEER_LINE,
    },
    Spec {
        name: Name::Send,
        word: "/send",
        aliases: &[],
        usage: "PATH",
        help: "offer a file: to the peer; in chirp connect to a DM buffer's nick (or NICK PATH)",
        contexts: CHAT_UI | PEER_UI | PEER_LINE,
    },
    Spec {
        name: Name::Decline,
        word: "/decline",
        aliases: &[],
        usage: "[ID]",
        help: "decline a file offer (number ID, or the oldest), or stop receiving it",
        contexts: CHAT_UI | PEER_UI | PEER_LINE,
    },
    Spec {
        name: Name::Cancel,
        word: "/cancel",
        aliases: &[],
        usage: "[ID]",
        help: "stop sending a file (number ID, or the only one); the receiver deletes its part",
        contexts: CHAT_UI | PEER_UI | PEER_LINE,
    },
    Spec {
        name: Name::Op,
        word: "/op",
        aliases: &[],
        usage: "[#ROOM] NICK",
        help: "room owner: make NICK an operator of the room",
        contexts: CHAT,
    },
    Spec {
        name: Name::Deop,
        word: "/deop",
        aliases: &[],
        usage: "[#ROOM] NICK",
        help: "room owner: NICK is an operator no more",
        contexts: CHAT,
    },
    Spec {
        name: Name::Voice,
        word: "/voice",
        aliases: &[],
        usage: "[#ROOM] NICK",
        help: "operator: NICK may speak while the room is moderated (+m)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Devoice,
        word: "/devoice",
        aliases: &[],
        usage: "[#ROOM] NICK",
        help: "operator: take NICK's voice back",
        contexts: CHAT,
    },
    Spec {
        name: Name::Mute,
        word: "/mute",
        aliases: &["/quiet"],
        usage: "[#ROOM] NICK",
        help: "operator: NICK may read the room but not speak",
        contexts: CHAT,
    },
    Spec {
        name: Name::Unmute,
        word: "/unmute",
        aliases: &[],
        usage: "[#ROOM] NICK",
        help: "operator: NICK may speak again",
        contexts: CHAT,
    },
    Spec {
        name: Name::Invite,
        word: "/invite",
        aliases: &[],
        usage: "[#ROOM] NICK",
        help: "operator: NICK may join while the room is invite-only (+i)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Kick,
        word: "/kick",
        aliases: &[],
        usage: "[#ROOM] NICK [REASON]",
        help: "operator: put NICK out of the room",
        contexts: CHAT,
    },
    Spec {
        name: Name::Ban,
        word: "/ban",
        aliases: &[],
        usage: "[#ROOM|*] NICK|KEY|RANGE [RANGE] [REASON]",
        help: "operator: ban a nick's key, a key (hex or fingerprint) and/or an address range; * bans from the server (server operators)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Unban,
        word: "/unban",
        aliases: &[],
        usage: "[#ROOM|*] NICK|KEY|RANGE [RANGE]",
        help: "operator: lift a ban",
        contexts: CHAT,
    },
    Spec {
        name: Name::Mode,
        word: "/mode",
        aliases: &[],
        usage: "[#ROOM] +i|-i|+m|-m|+t|-t|+k KEY|-k",
        help: "operator: invite only (i), moderated (m), topic locked (t), key (k)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Sessions,
        word: "/sessions",
        aliases: &[],
        usage: "",
        help: "server operator: list the sessions on the server",
        contexts: CHAT,
    },
    Spec {
        name: Name::Kill,
        word: "/kill",
        aliases: &[],
        usage: "SESSION [REASON]",
        help: "server operator: disconnect a session (an id /sessions lists: N, or N@NODE in a cluster)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Ignore,
        word: "/ignore",
        aliases: &[],
        usage: "[NICK]",
        help: "hide NICK's messages, kept across restarts (without NICK: list who is ignored)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Unignore,
        word: "/unignore",
        aliases: &[],
        usage: "NICK",
        help: "show NICK's messages again",
        contexts: CHAT,
    },
    Spec {
        name: Name::Edit,
        word: "/edit",
        aliases: &[],
        usage: "ID TEXT",
        help: "replace the text of your message ID in the current room or DM (in the UI, \
               Alt+I shows ids)",
        contexts: CHAT,
    },
    Spec {
        name: Name::Delete,
        word: "/delete",
        aliases: &["/del"],
        usage: "ID",
        help: "delete your message ID in the current room or DM (operators: anyone's)",
        contexts: CHAT,
    },
    Spec {
        name: Name::React,
        word: "/react",
        aliases: &[],
        usage: "ID EMOJI",
        help: "react to message ID in the current room or DM with an emoji",
        contexts: CHAT,
    },
    Spec {
        name: Name::Unreact,
        word: "/unreact",
        aliases: &[],
        usage: "ID EMOJI",
        help: "take your reaction back",
        contexts: CHAT,
    },
    Spec {
        name: Name::Typing,
        word: "/typing",
        aliases: &[],
        usage: "",
        help: "tell the current room or DM you are typing (at most once every 3 s; the UI \
               tells it as you type)",
        contexts: CHAT_LINE,
    },
    Spec {
        name: Name::Ids,
        word: "/ids",
        aliases: &[],
        usage: "",
        help: "show or hide message ids, for /edit, /delete and /react (like Alt+I)",
        contexts: CHAT_UI,
    },
    Spec {
        name: Name::Help,
        word: "/help",
        aliases: &["/?"],
        usage: "",
        help: "this text",
        contexts: EVERYWHERE,
    },
    Spec {
        name: Name::Quit,
        word: "/quit",
        aliases: &["/exit"],
        usage: "[REASON]",
        help: "leave chirp, once everything you sent is acknowledged",
        contexts: EVERYWHERE,
    },
];

/// The table row of `name`.
pub fn spec(name: Name) -> &'static Spec {
    // Every `Name` has a row: the unit test `every_name_has_one_row` checks it. The fallback
    // (the last row) is never taken.
    COMMANDS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or(&COMMANDS[COMMANDS.len() - 1])
}

/// The command `word` (with its slash, any case, an alias or the name) names, in any context.
pub fn lookup(word: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.is(word))
}

/// The commands available in `context`, in table order.
pub fn commands(context: Context) -> impl Iterator<Item = &'static Spec> {
    COMMANDS.iter().filter(move |s| s.available_in(context))
}

/// What a typed line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A plain line to send as it is: anything not starting with `/`, and a line starting
    /// with `//` without its first slash. May be empty or blank (callers decide whether to
    /// send that) and may hold newlines (a multi-line paste).
    Text(String),
    /// `/join #ROOM [KEY]`: the room as typed, trimmed (the server judges the name; the UI
    /// adds a missing `#`).
    Join {
        /// The room.
        room: String,
        /// The room's key (`+k`), if given.
        key: Option<String>,
    },
    /// `/part [#ROOM] [REASON]`: the first word is the room if it starts with `#`, else
    /// everything is the reason and the room is the current one.
    Part {
        /// The room, if named.
        room: Option<String>,
        /// Parting words.
        reason: Option<String>,
    },
    /// `/msg NICK TEXT`: sends, and stays in the current buffer or room.
    Msg {
        /// A nick (the UI also takes a `#room`).
        to: String,
        /// The text, never blank.
        text: String,
    },
    /// `/query NICK [TEXT]`: opens the conversation, switches to it, and sends TEXT there.
    Query {
        /// A nick (the UI also takes a `#room`).
        nick: String,
        /// What to send there, if anything.
        text: Option<String>,
    },
    /// `/me TEXT`: an action in the current room or conversation.
    Me {
        /// Everything after `/me `, as typed; never blank.
        text: String,
    },
    /// `/nick NICK`: the nick as typed, trimmed (the server judges it).
    Nick {
        /// The requested nick.
        nick: String,
    },
    /// `/topic [TEXT]`.
    Topic {
        /// The new topic; `None`: show the topic (the UI asks the server).
        text: Option<String>,
    },
    /// `/list`.
    List,
    /// `/who [#ROOM]`.
    Who {
        /// The room as typed, trimmed; `None`: the current room.
        room: Option<String>,
    },
    /// `/history [N]`.
    History {
        /// How many messages (at least 1); `None`: the caller's default.
        count: Option<u32>,
    },
    /// `/buffer NAME|N`.
    Buffer {
        /// A buffer number (as listed, from 1) or a name or part of one.
        name: String,
    },
    /// `/close`.
    Close,
    /// `/read`.
    Read,
    /// `/search [TEXT]`.
    Search {
        /// What to look for; may be empty (then typing goes on in the search).
        text: String,
    },
    /// `/clear`.
    Clear,
    /// `/members`.
    Members,
    /// `/stats`.
    Stats,
    /// `/retry`.
    Retry,
    /// `/bell [on|off]`.
    Bell {
        /// `None`: switch.
        on: Option<bool>,
    },
    /// `/accept [ID]`: trust the key a question is open about; else accept a file offer.
    Accept {
        /// The file offer's number; `None`: the question, else the oldest offer.
        id: Option<u64>,
    },
    /// `/refuse`: refuse it.
    Refuse,
    /// `/send PATH`: offer a file.
    Send {
        /// The path as typed, trimmed (it may hold spaces).
        path: String,
    },
    /// `/decline [ID]`: decline a file offer, or stop receiving it.
    Decline {
        /// The offer's number; `None`: the oldest waiting.
        id: Option<u64>,
    },
    /// `/cancel [ID]`: stop sending a file.
    Cancel {
        /// The file's number; `None`: the only one being sent.
        id: Option<u64>,
    },
    /// A moderation command: `/op`, `/deop`, `/voice`, `/devoice`, `/mute`, `/unmute`,
    /// `/invite`, `/kick`, `/ban`, `/unban`, `/mode`, `/sessions`, `/kill`.
    Mod(ModCommand),
    /// `/ignore [NICK]`: hide a nick's messages; without one, list the ignored nicks.
    Ignore {
        /// The nick as typed, trimmed; `None`: list.
        nick: Option<String>,
    },
    /// `/unignore NICK`.
    Unignore {
        /// The nick as typed, trimmed.
        nick: String,
    },
    /// `/edit ID TEXT`: replace the text of one's message `id` in the current room.
    Edit {
        /// The message.
        id: u64,
        /// Its new text, as typed.
        text: String,
    },
    /// `/delete ID`.
    Delete {
        /// The message.
        id: u64,
    },
    /// `/react ID EMOJI` (or `/unreact`: `remove`).
    React {
        /// The message.
        id: u64,
        /// The emoji, as typed (the server judges it).
        emoji: String,
        /// `/unreact`.
        remove: bool,
    },
    /// `/typing`.
    Typing,
    /// `/ids`.
    Ids,
    /// `/help`.
    Help,
    /// `/quit [REASON]`.
    Quit {
        /// Parting words.
        reason: Option<String>,
    },
}

impl Command {
    /// Which command this is; `None` for [`Command::Text`].
    pub fn name(&self) -> Option<Name> {
        Some(match self {
            Command::Text(_) => return None,
            Command::Join { .. } => Name::Join,
            Command::Part { .. } => Name::Part,
            Command::Msg { .. } => Name::Msg,
            Command::Query { .. } => Name::Query,
            Command::Me { .. } => Name::Me,
            Command::Nick { .. } => Name::Nick,
            Command::Topic { .. } => Name::Topic,
            Command::List => Name::List,
            Command::Who { .. } => Name::Who,
            Command::History { .. } => Name::History,
            Command::Buffer { .. } => Name::Buffer,
            Command::Close => Name::Close,
            Command::Search { .. } => Name::Search,
            Command::Read => Name::Read,
            Command::Clear => Name::Clear,
            Command::Members => Name::Members,
            Command::Stats => Name::Stats,
            Command::Retry => Name::Retry,
            Command::Bell { .. } => Name::Bell,
            Command::Accept { .. } => Name::Accept,
            Command::Refuse => Name::Refuse,
            Command::Send { .. } => Name::Send,
            Command::Decline { .. } => Name::Decline,
            Command::Cancel { .. } => Name::Cancel,
            Command::Mod(m) => m.name,
            Command::Ignore { .. } => Name::Ignore,
            Command::Unignore { .. } => Name::Unignore,
            Command::Edit { .. } => Name::Edit,
            Command::Delete { .. } => Name::Delete,
            Command::React { remove: false, .. } => Name::React,
            Command::React { remove: true, .. } => Name::Unreact,
            Command::Typing => Name::Typing,
            Command::Ids => Name::Ids,
            Command::Help => Name::Help,
            Command::Quit { .. } => Name::Quit,
        })
    }
}

/// The arguments of a moderation command ([`Command::Mod`]), as typed; the server judges
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModCommand {
    /// Which command.
    pub name: Name,
    /// The room named (`None`: the current one); `*` for `/ban` and `/unban`: the whole
    /// server.
    pub room: Option<String>,
    /// The nick (or key, or range for `/ban`), the mode change (`+i`) of `/mode`, the session
    /// id of `/kill`; `None` for `/sessions`.
    pub target: Option<String>,
    /// `/ban`, `/unban`: an address range after the target.
    pub net: Option<String>,
    /// The reason (`/kick`, `/ban`, `/kill`) or the key of `/mode +k`.
    pub text: Option<String>,
}

/// Whether `word` is an address or an address range (`203.0.113.0/24`, `2001:db8::/48`).
pub fn is_address_range(word: &str) -> bool {
    let (addr, prefix) = match word.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (word, None),
    };
    addr.parse::<std::net::IpAddr>().is_ok() && prefix.is_none_or(|p| p.parse::<u8>().is_ok())
}

/// Why a `/line` is not a command to run. Its `Display` is the message for the user. The line
/// must not be sent as text either: it stays in the UI's input line, and line mode reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No command has this name in any context.
    Unknown {
        /// The word typed (`"/foo"`).
        word: String,
    },
    /// The command exists, but not here (`/join` in `chirp peer`, `/buffer` in line mode).
    Unavailable {
        /// The word typed, lower case (`"/j"`).
        word: String,
        /// Which command it is.
        name: Name,
        /// Where it was typed.
        context: Context,
    },
    /// Arguments missing: `usage: /join #ROOM`.
    Usage {
        /// Which command.
        name: Name,
    },
    /// An argument is wrong.
    Invalid {
        /// Which command.
        name: Name,
        /// What is wrong, completing "/history …" (`"takes a positive number of messages"`).
        problem: &'static str,
    },
}

impl CommandError {
    /// The `code` of a JSON-mode `error` event (`docs/JSON.md`): `usage`, as for every local
    /// mistake in a typed line.
    pub fn code(&self) -> &'static str {
        "usage"
    }

    /// The command the error is about, if the word named one.
    pub fn name(&self) -> Option<Name> {
        match self {
            CommandError::Unknown { .. } => None,
            CommandError::Unavailable { name, .. }
            | CommandError::Usage { name }
            | CommandError::Invalid { name, .. } => Some(*name),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown { word } => write!(
                f,
                "unknown command {word} (not sent); /help lists them, \
                 //TEXT sends a line starting with /"
            ),
            CommandError::Unavailable {
                word,
                name,
                context,
            } => {
                let s = spec(*name);
                if context.is_peer()
                    && !s.available_in(Context::PeerUi)
                    && !s.available_in(Context::PeerLine)
                {
                    write!(
                        f,
                        "{word} needs a chat server: chirp peer talks to one peer only \
                         (chirp serve and chirp connect have rooms, nicks and direct messages)"
                    )
                } else if !context.is_peer()
                    && !s.available_in(Context::ChatUi)
                    && !s.available_in(Context::ChatLine)
                {
                    write!(
                        f,
                        "{word} is for chirp peer, which asks about a peer's new key; \
                         chirp connect asks nothing"
                    )
                } else if *name == Name::History {
                    write!(
                        f,
                        "{word} is for line mode; in the terminal UI, PgUp loads older messages"
                    )
                } else if context.is_ui() {
                    write!(f, "{word} works in line mode only")
                } else {
                    write!(f, "{word} works in the terminal UI only")
                }
            }
            CommandError::Usage { name } => write!(f, "usage: {}", spec(*name).synopsis()),
            CommandError::Invalid { name, problem } => {
                let s = spec(*name);
                write!(f, "{} {problem}: usage: {}", s.word, s.synopsis())
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// What one typed line means in `context`.
///
/// A line not starting with `/` is [`Command::Text`], as is one starting with `//` (without
/// its first slash). Otherwise the word up to the first whitespace names the command (any
/// case, any alias), and the rest are its arguments. The line is taken as it is: a line-mode
/// caller strips the line end (`\n`, `\r\n`) first; blank lines are `Text` too.
///
/// Commands without arguments ignore any given. Names (rooms, nicks) are returned as typed,
/// trimmed; the server judges them.
pub fn parse(line: &str, context: Context) -> Result<Command, CommandError> {
    if let Some(text) = line.strip_prefix("//") {
        return Ok(Command::Text(format!("/{text}")));
    }
    if !line.starts_with('/') {
        return Ok(Command::Text(line.to_owned()));
    }
    let (word, rest) = match line.char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((i, c)) => (&line[..i], &line[i + c.len_utf8()..]),
        None => (line, ""),
    };
    let Some(s) = lookup(word) else {
        return Err(CommandError::Unknown {
            word: word.to_owned(),
        });
    };
    if !s.available_in(context) {
        return Err(CommandError::Unavailable {
            word: word.to_lowercase(),
            name: s.name,
            context,
        });
    }
    let name = s.name;
    let args = rest.trim();
    let opt = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
    let usage = Err(CommandError::Usage { name });
    // The first word of `args`, and what follows it (trimmed).
    let (first, after) = match args.split_once(char::is_whitespace) {
        Some((a, b)) => (a, b.trim_start()),
        None => (args, ""),
    };
    Ok(match name {
        Name::Join if args.is_empty() => return usage,
        Name::Join => Command::Join {
            room: first.to_owned(),
            key: opt(after),
        },
        Name::Part if first.starts_with('#') => Command::Part {
            room: Some(first.to_owned()),
            reason: opt(after),
        },
        Name::Part => Command::Part {
            room: None,
            reason: opt(args),
        },
        Name::Msg if after.is_empty() => return usage,
        Name::Msg => Command::Msg {
            to: first.to_owned(),
            text: after.to_owned(),
        },
        Name::Query if first.is_empty() => return usage,
        Name::Query => Command::Query {
            nick: first.to_owned(),
            text: opt(after),
        },
        Name::Me if args.is_empty() => return usage,
        Name::Me => Command::Me {
            text: rest.to_owned(),
        },
        Name::Nick if args.is_empty() => return usage,
        Name::Nick => Command::Nick {
            nick: args.to_owned(),
        },
        Name::Topic => Command::Topic { text: opt(args) },
        Name::List => Command::List,
        Name::Who => Command::Who { room: opt(args) },
        Name::History if args.is_empty() => Command::History { count: None },
        Name::History => match args.parse::<u32>() {
            Ok(n) if n > 0 => Command::History { count: Some(n) },
            _ => {
                return Err(CommandError::Invalid {
                    name,
                    problem: "takes a positive number of messages",
                });
            }
        },
        Name::Buffer if first.is_empty() => return usage,
        Name::Buffer => Command::Buffer {
            name: first.to_owned(),
        },
        Name::Close => Command::Close,
        Name::Search => Command::Search {
            text: args.to_owned(),
        },
        Name::Read => Command::Read,
        Name::Clear => Command::Clear,
        Name::Members => Command::Members,
        Name::Stats => Command::Stats,
        Name::Retry => Command::Retry,
        Name::Bell => match args.to_lowercase().as_str() {
            "" => Command::Bell { on: None },
            "on" => Command::Bell { on: Some(true) },
            "off" => Command::Bell { on: Some(false) },
            _ => {
                return Err(CommandError::Invalid {
                    name,
                    problem: "takes on or off (or nothing, to switch)",
                });
            }
        },
        Name::Accept | Name::Decline | Name::Cancel => {
            let id = match first {
                "" => None,
                n => match n.parse::<u64>() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        return Err(CommandError::Invalid {
                            name,
                            problem: if name == Name::Cancel {
                                "takes the number of a file being sent"
                            } else {
                                "takes the number of a file offer"
                            },
                        });
                    }
                },
            };
            match name {
                Name::Accept => Command::Accept { id },
                Name::Decline => Command::Decline { id },
                _ => Command::Cancel { id },
            }
        }
        Name::Refuse => Command::Refuse,
        Name::Send if args.is_empty() => return usage,
        Name::Send => Command::Send {
            path: args.to_owned(),
        },
        Name::Op
        | Name::Deop
        | Name::Voice
        | Name::Devoice
        | Name::Mute
        | Name::Unmute
        | Name::Invite
        | Name::Kick
        | Name::Ban
        | Name::Unban
        | Name::Mode
        | Name::Sessions
        | Name::Kill => return parse_mod(name, args),
        Name::Ignore if args.contains(char::is_whitespace) => return usage,
        Name::Ignore => Command::Ignore { nick: opt(args) },
        Name::Unignore if first.is_empty() || !after.is_empty() => return usage,
        Name::Unignore => Command::Unignore {
            nick: first.to_owned(),
        },
        Name::Edit | Name::Delete | Name::React | Name::Unreact => {
            let Ok(id) = first.parse::<u64>() else {
                return if first.is_empty() {
                    usage
                } else {
                    Err(CommandError::Invalid {
                        name,
                        problem: "takes a message id (a number)",
                    })
                };
            };
            match name {
                Name::Delete => Command::Delete { id },
                _ if after.is_empty() => return usage,
                Name::Edit => Command::Edit {
                    id,
                    text: after.to_owned(),
                },
                _ => Command::React {
                    id,
                    emoji: after.to_owned(),
                    remove: name == Name::Unreact,
                },
            }
        }
        Name::Typing => Command::Typing,
        Name::Ids => Command::Ids,
        Name::Help => Command::Help,
        Name::Quit => Command::Quit { reason: opt(args) },
    })
}

/// The arguments of a moderation command: `[#ROOM] TARGET [...]`.
fn parse_mod(name: Name, args: &str) -> Result<Command, CommandError> {
    let usage = Err(CommandError::Usage { name });
    let mut words = args.split_whitespace().peekable();
    let rest_after = |n: usize| -> Option<String> {
        // Everything after the first `n` words, as typed (reasons keep their spacing).
        let mut s = args;
        for _ in 0..n {
            s = s.trim_start();
            s = s.find(char::is_whitespace).map_or("", |i| &s[i..]);
        }
        Some(s.trim().to_owned()).filter(|t| !t.is_empty())
    };
    let mut used = 0;
    let room_ok = matches!(name, Name::Ban | Name::Unban);
    let room = match words.peek() {
        Some(w) if w.starts_with('#') || (room_ok && *w == "*") => {
            used += 1;
            words.next().map(str::to_owned)
        }
        _ => None,
    };
    let mut m = ModCommand {
        name,
        room,
        target: None,
        net: None,
        text: None,
    };
    match name {
        Name::Sessions => {}
        Name::Kill => {
            let Some(id) = words.next() else { return usage };
            // `ID`, or `ID@NODE` in a cluster (as /sessions lists them).
            let (number, node) = id.split_once('@').unwrap_or((id, "x"));
            if m.room.is_some() || number.parse::<u64>().is_err() || node.is_empty() {
                return Err(CommandError::Invalid {
                    name,
                    problem: "takes a session id (a number /sessions lists, NUMBER@NODE in a cluster)",
                });
            }
            m.target = Some(id.to_owned());
            m.text = rest_after(used + 1);
        }
        Name::Mode => {
            let Some(change) = words.next() else {
                return usage;
            };
            let ok = matches!(
                change,
                "+i" | "-i" | "+m" | "-m" | "+t" | "-t" | "+k" | "-k"
            );
            if !ok {
                return Err(CommandError::Invalid {
                    name,
                    problem: "takes one of +i -i +m -m +t -t +k KEY -k",
                });
            }
            m.target = Some(change.to_owned());
            m.text = words.next().map(str::to_owned);
            if change == "+k" && m.text.is_none() {
                return Err(CommandError::Invalid {
                    name,
                    problem: "+k needs the key",
                });
            }
        }
        Name::Ban | Name::Unban => {
            let Some(target) = words.next() else {
                return usage;
            };
            used += 1;
            m.target = Some(target.to_owned());
            if let Some(w) = words.peek().filter(|w| is_address_range(w)) {
                m.net = Some((*w).to_owned());
                used += 1;
            }
            m.text = rest_after(used);
        }
        Name::Kick => {
            let Some(target) = words.next() else {
                return usage;
            };
            m.target = Some(target.to_owned());
            m.text = rest_after(used + 1);
        }
        _ => {
            let Some(target) = words.next() else {
                return usage;
            };
            m.target = Some(target.to_owned());
        }
    }
    Ok(Command::Mod(m))
}

/// The help text of `context`: every command available there (with its aliases) and nothing
/// else, then how to send a leading `/`, and a line about the rest (keys in the UI, plain
/// lines in line mode).
pub fn help(context: Context) -> String {
    let rows: Vec<(String, String)> = commands(context)
        .map(|s| {
            let mut what = s.help.to_owned();
            if !s.aliases.is_empty() {
                what.push_str(&format!(" (also {})", s.aliases.join(", ")));
            }
            (s.synopsis(), what)
        })
        .chain([(
            "//TEXT".to_owned(),
            "send a line that starts with '/'".to_owned(),
        )])
        .collect();
    let width = rows
        .iter()
        .map(|(s, _)| s.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::from("commands:");
    for (synopsis, what) in rows {
        text.push_str(&format!("\n  {synopsis:width$}  {what}"));
    }
    text.push('\n');
    text.push_str(match context {
        Context::ChatUi | Context::PeerUi => {
            "keys: Alt+1..0 / Ctrl+N/P buffers, Alt+A next unread, PgUp/PgDn scroll, \
             Ctrl+R search the loaded lines, Tab complete, Alt+R retry, Alt+M members, \
             Alt+I message ids, F3 stats, Alt+Enter newline, Ctrl+C quit"
        }
        Context::ChatLine => {
            "Anything else you type goes to the current room. Ctrl-D (end of input) leaves \
             like /quit."
        }
        Context::PeerLine => {
            "Anything else you type is sent as one message. Ctrl-D (end of input) stops \
             sending and leaves once the peer has everything and has finished too."
        }
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_deletions_reactions_and_typing_parse() {
        let line = |l: &str| parse(l, Context::ChatLine);
        assert_eq!(
            line("/edit 18  hi,  all "),
            Ok(Command::Edit {
                id: 18,
                text: "hi,  all".into()
            })
        );
        assert_eq!(line("/del 4"), Ok(Command::Delete { id: 4 }));
        assert_eq!(
            line("/unreact 4 👍"),
            Ok(Command::React {
                id: 4,
                emoji: "👍".into(),
                remove: true
            })
        );
        assert_eq!(line("/typing"), Ok(Command::Typing));
        assert_eq!(
            line("/react 4").map_err(|e| e.to_string()),
            Err("usage: /react ID EMOJI".into())
        );
        assert_eq!(
            line("/edit four x").map_err(|e| e.to_string()),
            Err("/edit takes a message id (a number): usage: /edit ID TEXT".into())
        );
        assert!(help(Context::ChatLine).contains("/react ID EMOJI"));
        assert_eq!(
            parse("/edit 1 x", Context::ChatUi),
            Ok(Command::Edit {
                id: 1,
                text: "x".into()
            }),
            "the UI has them too"
        );
        assert!(
            parse("/edit 1 x", Context::PeerUi).is_err(),
            "a peer has no server to keep messages"
        );
        assert!(
            matches!(
                parse("/typing", Context::ChatUi),
                Err(CommandError::Unavailable { .. })
            ),
            "the UI sends typing notices as you type"
        );
    }

    fn chat(line: &str) -> Result<Command, CommandError> {
        parse(line, Context::ChatUi)
    }

    /// Every word that names a command anywhere.
    fn all_words() -> impl Iterator<Item = (&'static Spec, &'static str)> {
        COMMANDS.iter().flat_map(|s| {
            std::iter::once(s.word)
                .chain(s.aliases.iter().copied())
                .map(move |w| (s, w))
        })
    }

    /// Arguments that satisfy every command that takes any.
    fn args_for(name: Name) -> &'static str {
        match name {
            Name::History | Name::Accept | Name::Decline | Name::Cancel => "5",
            Name::Bell => "on",
            Name::Mode => "+m",
            Name::Kill => "7 bye",
            Name::Ignore | Name::Unignore => "bob",
            Name::Edit | Name::Delete | Name::React | Name::Unreact => "7 hi",
            _ => "bob hi there",
        }
    }

    #[test]
    fn every_name_has_one_row() {
        let names = [
            Name::Join,
            Name::Part,
            Name::Msg,
            Name::Query,
            Name::Me,
            Name::Nick,
            Name::Topic,
            Name::List,
            Name::Who,
            Name::History,
            Name::Buffer,
            Name::Close,
            Name::Search,
            Name::Read,
            Name::Clear,
            Name::Members,
            Name::Op,
            Name::Deop,
            Name::Voice,
            Name::Devoice,
            Name::Mute,
            Name::Unmute,
            Name::Invite,
            Name::Kick,
            Name::Ban,
            Name::Unban,
            Name::Mode,
            Name::Sessions,
            Name::Kill,
            Name::Ignore,
            Name::Unignore,
            Name::Edit,
            Name::Delete,
            Name::React,
            Name::Unreact,
            Name::Typing,
            Name::Ids,
            Name::Stats,
            Name::Retry,
            Name::Bell,
            Name::Accept,
            Name::Refuse,
            Name::Send,
            Name::Decline,
            Name::Cancel,
            Name::Help,
            Name::Quit,
        ];
        assert_eq!(names.len(), COMMANDS.len());
        for n in names {
            assert_eq!(COMMANDS.iter().filter(|s| s.name == n).count(), 1, "{n:?}");
            assert_eq!(spec(n).name, n);
        }
        // No word means two commands, and every word is a lower-case `/word`.
        let words: Vec<&str> = all_words().map(|(_, w)| w).collect();
        for (i, w) in words.iter().enumerate() {
            assert!(w.starts_with('/') && *w == w.to_lowercase(), "{w}");
            assert!(!words[..i].contains(w), "{w} twice");
        }
        for s in COMMANDS {
            assert!(
                Context::ALL.iter().any(|&c| s.available_in(c)),
                "{} nowhere",
                s.word
            );
        }
    }

    #[test]
    fn every_alias_maps_to_the_same_command() {
        for &context in &Context::ALL {
            for (s, word) in all_words() {
                let args = args_for(s.name);
                let by_word = parse(&format!("{} {args}", s.word), context);
                let by_alias = parse(&format!("{word} {args}"), context);
                let shouted = parse(&format!("{} {args}", word.to_uppercase()), context);
                if s.available_in(context) {
                    let cmd = by_word.clone().unwrap_or_else(|e| panic!("{word}: {e}"));
                    assert_eq!(cmd.name(), Some(s.name), "{word}");
                    assert_eq!(by_alias, Ok(cmd.clone()), "{word} in {context:?}");
                    assert_eq!(shouted, Ok(cmd), "{word} upper case");
                } else {
                    let Err(CommandError::Unavailable { name, .. }) = by_alias else {
                        panic!("{word} in {context:?}: {by_alias:?}");
                    };
                    assert_eq!(name, s.name);
                }
            }
        }
    }

    /// What the three old parsers accepted, the one parser accepts (aliases only added).
    #[test]
    fn the_old_parsers_words_still_work() {
        let ui = [
            "/join", "/j", "/part", "/leave", "/msg", "/query", "/q", "/me", "/nick", "/topic",
            "/list", "/who", "/names", "/buffer", "/b", "/close", "/search", "/stats", "/members",
            "/retry", "/clear", "/bell", "/help", "/quit", "/exit",
        ];
        let line = [
            "/me", "/join", "/part", "/msg", "/nick", "/topic", "/list", "/who", "/history",
            "/stats", "/quit", "/help",
        ];
        let peer = [
            "/stats", "/quit", "/exit", "/help", "/?", "/accept", "/refuse",
        ];
        let peer_ui = [
            "/buffer", "/b", "/bell", "/clear", "/close", "/help", "/me", "/members", "/quit",
            "/exit", "/retry", "/search", "/stats",
        ];
        for (context, words) in [
            (Context::ChatUi, &ui[..]),
            (Context::ChatLine, &line[..]),
            (Context::PeerLine, &peer[..]),
            (Context::PeerUi, &peer_ui[..]),
        ] {
            for w in words {
                let s = lookup(w).unwrap_or_else(|| panic!("{w}"));
                assert!(s.available_in(context), "{w} in {context:?}");
            }
        }
    }

    #[test]
    fn plain_lines_and_escapes() {
        for context in Context::ALL {
            assert_eq!(parse("hello", context), Ok(Command::Text("hello".into())));
            assert_eq!(parse("", context), Ok(Command::Text(String::new())));
            assert_eq!(parse("  ", context), Ok(Command::Text("  ".into())));
            assert_eq!(
                parse("//stats", context),
                Ok(Command::Text("/stats".into()))
            );
            assert_eq!(parse("//", context), Ok(Command::Text("/".into())));
            assert_eq!(parse("///x", context), Ok(Command::Text("//x".into())));
            assert_eq!(
                parse("not /a command", context),
                Ok(Command::Text("not /a command".into()))
            );
            assert_eq!(
                parse(" /stats", context),
                Ok(Command::Text(" /stats".into()))
            );
        }
    }

    #[test]
    fn arguments() {
        assert_eq!(
            chat("/join #rust"),
            Ok(Command::Join {
                room: "#rust".into(),
                key: None,
            })
        );
        assert_eq!(
            chat("/j  rust "),
            Ok(Command::Join {
                room: "rust".into(),
                key: None,
            })
        );
        // A second word is the room's key (+k), as in IRC; room names have no spaces.
        assert_eq!(
            chat("/join #a b"),
            Ok(Command::Join {
                room: "#a".into(),
                key: Some("b".into()),
            })
        );
        assert_eq!(
            chat("/part"),
            Ok(Command::Part {
                room: None,
                reason: None
            })
        );
        assert_eq!(
            chat("/part bye all"),
            Ok(Command::Part {
                room: None,
                reason: Some("bye all".into())
            })
        );
        assert_eq!(
            chat("/leave #rust  bye all"),
            Ok(Command::Part {
                room: Some("#rust".into()),
                reason: Some("bye all".into())
            })
        );
        assert_eq!(
            chat("/msg bob  hi there "),
            Ok(Command::Msg {
                to: "bob".into(),
                text: "hi there".into()
            })
        );
        assert_eq!(
            chat("/msg bob line one\nline two"),
            Ok(Command::Msg {
                to: "bob".into(),
                text: "line one\nline two".into()
            })
        );
        assert_eq!(
            chat("/query bob"),
            Ok(Command::Query {
                nick: "bob".into(),
                text: None
            })
        );
        assert_eq!(
            chat("/q bob hi"),
            Ok(Command::Query {
                nick: "bob".into(),
                text: Some("hi".into())
            })
        );
        assert_eq!(
            chat("/me waves"),
            Ok(Command::Me {
                text: "waves".into()
            })
        );
        assert_eq!(
            chat("/me\nwaves"),
            Ok(Command::Me {
                text: "waves".into()
            })
        );
        assert_eq!(chat("/nick me2"), Ok(Command::Nick { nick: "me2".into() }));
        assert_eq!(chat("/topic"), Ok(Command::Topic { text: None }));
        assert_eq!(
            chat("/topic new topic"),
            Ok(Command::Topic {
                text: Some("new topic".into())
            })
        );
        assert_eq!(chat("/list"), Ok(Command::List));
        assert_eq!(chat("/who"), Ok(Command::Who { room: None }));
        assert_eq!(
            chat("/names #a"),
            Ok(Command::Who {
                room: Some("#a".into())
            })
        );
        assert_eq!(
            parse("/history", Context::ChatLine),
            Ok(Command::History { count: None })
        );
        assert_eq!(
            parse("/history 10", Context::ChatLine),
            Ok(Command::History { count: Some(10) })
        );
        assert_eq!(chat("/b 2"), Ok(Command::Buffer { name: "2".into() }));
        assert_eq!(
            chat("/search"),
            Ok(Command::Search {
                text: String::new()
            })
        );
        assert_eq!(
            chat("/search a b"),
            Ok(Command::Search { text: "a b".into() })
        );
        assert_eq!(chat("/bell"), Ok(Command::Bell { on: None }));
        assert_eq!(chat("/bell OFF"), Ok(Command::Bell { on: Some(false) }));
        assert_eq!(chat("/quit"), Ok(Command::Quit { reason: None }));
        assert_eq!(
            chat("/exit gone fishing"),
            Ok(Command::Quit {
                reason: Some("gone fishing".into())
            })
        );
        // Commands without arguments ignore any.
        assert_eq!(chat("/list all"), Ok(Command::List));
        assert_eq!(
            parse("/quit now", Context::PeerLine),
            Ok(Command::Quit {
                reason: Some("now".into())
            })
        );
        assert_eq!(parse("/? me", Context::PeerLine), Ok(Command::Help));
    }

    #[test]
    fn usage_errors() {
        for (line, want) in [
            ("/join", "usage: /join #ROOM [KEY]"),
            ("/j   ", "usage: /join #ROOM [KEY]"),
            ("/msg", "usage: /msg NICK TEXT"),
            ("/msg bob", "usage: /msg NICK TEXT"),
            ("/msg bob   ", "usage: /msg NICK TEXT"),
            ("/query", "usage: /query NICK [TEXT]"),
            ("/me", "usage: /me TEXT"),
            ("/me  \n ", "usage: /me TEXT"),
            ("/nick", "usage: /nick NICK"),
            ("/buffer", "usage: /buffer NAME|N"),
            (
                "/bell loud",
                "/bell takes on or off (or nothing, to switch): usage: /bell [on|off]",
            ),
        ] {
            let err = chat(line).expect_err(line);
            assert_eq!(err.to_string(), want, "{line}");
            assert_eq!(err.code(), "usage");
        }
    }

    /// Issue 19: the moderation commands, in line mode (the UI refuses them for now).
    #[test]
    fn moderation_commands() {
        let line = |l: &str| parse(l, Context::ChatLine);
        let m = |name,
                 room: Option<&str>,
                 target: Option<&str>,
                 net: Option<&str>,
                 text: Option<&str>| {
            Ok(Command::Mod(ModCommand {
                name,
                room: room.map(str::to_owned),
                target: target.map(str::to_owned),
                net: net.map(str::to_owned),
                text: text.map(str::to_owned),
            }))
        };
        assert_eq!(line("/op bob"), m(Name::Op, None, Some("bob"), None, None));
        assert_eq!(
            line("/deop #r bob"),
            m(Name::Deop, Some("#r"), Some("bob"), None, None)
        );
        assert_eq!(
            line("/quiet bob"),
            m(Name::Mute, None, Some("bob"), None, None)
        );
        assert_eq!(
            line("/kick #r bob  you know   why"),
            m(
                Name::Kick,
                Some("#r"),
                Some("bob"),
                None,
                Some("you know   why")
            )
        );
        assert_eq!(
            line("/kick bob"),
            m(Name::Kick, None, Some("bob"), None, None)
        );
        // A ban: a target, then an address range if the next word is one, then the reason.
        assert_eq!(
            line("/ban bob 203.0.113.0/24 flood bot"),
            m(
                Name::Ban,
                None,
                Some("bob"),
                Some("203.0.113.0/24"),
                Some("flood bot")
            )
        );
        assert_eq!(
            line("/ban #r bob flooding"),
            m(Name::Ban, Some("#r"), Some("bob"), None, Some("flooding"))
        );
        assert_eq!(
            line("/ban * 2001:db8::/48"),
            m(Name::Ban, Some("*"), Some("2001:db8::/48"), None, None)
        );
        assert_eq!(
            line("/unban * bob"),
            m(Name::Unban, Some("*"), Some("bob"), None, None)
        );
        // `*` is a server-wide ban's, not a room for others.
        assert_eq!(
            line("/kick * bob"),
            m(Name::Kick, None, Some("*"), None, Some("bob"))
        );
        assert_eq!(
            line("/mode +k s3cret"),
            m(Name::Mode, None, Some("+k"), None, Some("s3cret"))
        );
        assert_eq!(
            line("/mode #r -i"),
            m(Name::Mode, Some("#r"), Some("-i"), None, None)
        );
        assert_eq!(line("/sessions"), m(Name::Sessions, None, None, None, None));
        assert_eq!(
            line("/kill 12 go away"),
            m(Name::Kill, None, Some("12"), None, Some("go away"))
        );
        for (l, want) in [
            ("/op", "usage: /op [#ROOM] NICK"),
            ("/kick #r", "usage: /kick [#ROOM] NICK [REASON]"),
            (
                "/ban",
                "usage: /ban [#ROOM|*] NICK|KEY|RANGE [RANGE] [REASON]",
            ),
            (
                "/mode +x",
                "/mode takes one of +i -i +m -m +t -t +k KEY -k: usage: /mode [#ROOM] +i|-i|+m|-m|+t|-t|+k KEY|-k",
            ),
            (
                "/mode +k",
                "/mode +k needs the key: usage: /mode [#ROOM] +i|-i|+m|-m|+t|-t|+k KEY|-k",
            ),
            (
                "/kill bob",
                "/kill takes a session id (a number /sessions lists, NUMBER@NODE in a cluster): usage: /kill SESSION [REASON]",
            ),
            (
                "/kill 7@",
                "/kill takes a session id (a number /sessions lists, NUMBER@NODE in a cluster): usage: /kill SESSION [REASON]",
            ),
        ] {
            assert_eq!(line(l).expect_err(l).to_string(), want, "{l}");
        }
        // A session of another node of a cluster: `NUMBER@NODE`, the node as /sessions says.
        let Ok(Command::Mod(k)) = line("/kill 7@host-12-ab0 spam") else {
            panic!("a kill with a node");
        };
        assert_eq!(
            (k.target.as_deref(), k.text.as_deref()),
            (Some("7@host-12-ab0"), Some("spam"))
        );
        // The UI parses them alike (issue 19: they used to be line mode only).
        assert_eq!(chat("/kick #r bob spam"), line("/kick #r bob spam"));
        assert!(help(Context::ChatLine).contains("/ban [#ROOM|*]"));
        assert!(help(Context::ChatUi).contains("/ban [#ROOM|*]"));
        assert!(!help(Context::PeerLine).contains("/kick"));
        assert!(is_address_range("198.51.100.7") && is_address_range("::1/128"));
        assert!(!is_address_range("bob") && !is_address_range("1.2.3.4/x"));
    }

    /// Issue 19: `/ignore [NICK]` and `/unignore NICK`, in line mode and the UI alike.
    #[test]
    fn ignore_takes_one_nick() {
        for context in [Context::ChatUi, Context::ChatLine] {
            let p = |l: &str| parse(l, context);
            assert_eq!(
                p("/ignore  Bob "),
                Ok(Command::Ignore {
                    nick: Some("Bob".into())
                })
            );
            assert_eq!(p("/ignore"), Ok(Command::Ignore { nick: None }));
            assert_eq!(
                p("/unignore bob"),
                Ok(Command::Unignore { nick: "bob".into() })
            );
            for bad in ["/ignore bob carol", "/unignore", "/unignore a b"] {
                let e = p(bad).expect_err(bad);
                assert_eq!(e.code(), "usage", "{bad}");
                assert!(e.to_string().starts_with("usage: /"), "{bad}: {e}");
            }
        }
        let e = parse("/ignore bob", Context::PeerLine).expect_err("no server");
        assert!(e.to_string().contains("needs a chat server"), "{e}");
    }

    /// Bug 8: `/history -5` said "join a room first", even in a room.
    #[test]
    fn history_takes_a_positive_number() {
        for line in [
            "/history -5",
            "/history 0",
            "/history five",
            "/history 5 6",
            "/history 99999999999",
        ] {
            let err = parse(line, Context::ChatLine).expect_err(line);
            assert_eq!(
                err,
                CommandError::Invalid {
                    name: Name::History,
                    problem: "takes a positive number of messages"
                },
                "{line}"
            );
            let text = err.to_string();
            assert_eq!(
                text,
                "/history takes a positive number of messages: usage: /history [N]"
            );
            assert!(!text.contains("room"), "{text}");
        }
    }

    #[test]
    fn unknown_and_unavailable() {
        let err = chat("/frob x").expect_err("unknown");
        assert_eq!(
            err,
            CommandError::Unknown {
                word: "/frob".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown command /frob (not sent); /help lists them, //TEXT sends a line starting with /"
        );
        assert_eq!(
            chat("/").expect_err("bare slash"),
            CommandError::Unknown { word: "/".into() }
        );
        for context in [Context::PeerUi, Context::PeerLine] {
            for w in [
                "/join", "/J", "/msg", "/nick", "/list", "/who", "/names", "/topic", "/query",
            ] {
                let err = parse(&format!("{w} x y"), context).expect_err(w);
                assert!(
                    err.to_string()
                        .starts_with(&format!("{} needs a chat server", w.to_lowercase())),
                    "{err}"
                );
            }
        }
        // A key question is peer mode's alone; file offers are answered in both UIs.
        let err = parse("/refuse", Context::ChatUi).expect_err("refuse");
        assert!(err.to_string().contains("is for chirp peer"), "{err}");
        assert_eq!(
            parse("/accept 3", Context::ChatUi),
            Ok(Command::Accept { id: Some(3) })
        );
        assert_eq!(
            parse("/send bob /tmp/a b", Context::ChatUi),
            Ok(Command::Send {
                path: "bob /tmp/a b".into()
            })
        );
        let err = parse("/history -5", Context::ChatUi).expect_err("history in the UI");
        assert_eq!(
            err.to_string(),
            "/history is for line mode; in the terminal UI, PgUp loads older messages"
        );
        let err = parse("/buffer 2", Context::ChatLine).expect_err("buffer in line mode");
        assert_eq!(err.to_string(), "/buffer works in the terminal UI only");
        // Line mode has one stream, but a current conversation: /query makes a DM current.
        assert_eq!(
            parse("/query bob", Context::ChatLine),
            Ok(Command::Query {
                nick: "bob".into(),
                text: None
            })
        );
    }

    #[test]
    fn help_lists_what_is_available_and_nothing_else() {
        for context in Context::ALL {
            let text = help(context);
            let lines: Vec<&str> = text.lines().collect();
            for s in COMMANDS {
                let listed = lines
                    .iter()
                    .any(|l| l.trim_start().starts_with(&format!("{} ", s.word)));
                assert_eq!(
                    listed,
                    s.available_in(context),
                    "{} in {context:?}:\n{text}",
                    s.word
                );
                for a in s.aliases {
                    assert_eq!(
                        text.contains(&format!("{a},")) || text.contains(&format!("{a})")),
                        s.available_in(context),
                        "{a}"
                    );
                }
                if s.available_in(context) {
                    assert!(text.contains(&s.synopsis()), "{}", s.synopsis());
                    assert!(text.contains(s.help), "{}", s.help);
                }
            }
            assert!(text.contains("//TEXT"), "{text}");
        }
        let text = help(Context::PeerLine);
        assert!(text.contains("/accept") && !text.contains("/join") && !text.contains("/buffer"));
        let text = help(Context::ChatLine);
        assert!(
            text.contains("/history [N]") && !text.contains("/accept") && !text.contains("/close")
        );
    }
}
