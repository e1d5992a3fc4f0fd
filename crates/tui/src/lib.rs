//! chirp's terminal chat UI (ratatui + crossterm), for `chirp connect` and `chirp peer`.
//!
//! The UI is split like the protocol: [`App`] is the whole UI as *pure state* — it reads no
//! clock (every input carries `now`), does no I/O, and draws into whatever ratatui `Frame` it
//! is given, so tests drive it key by key and check the screen with ratatui's `TestBackend`.
//! [`run`] is the thin terminal driver: raw mode, the alternate screen, and one `select!`
//! over keyboard, network events, room for commands and the App's timer.
//!
//! The network is reached only through two channels: [`UiEvent`]s in (messages, joins,
//! delivery reports, link statistics) and [`UiCommand`]s out (send, join, fetch history, …).
//! Commands queue inside the runner until the channel has room, so a stalled network never
//! stalls typing or drawing.
//!
//! # Layout
//!
//! - `api`: [`UiEvent`], [`UiCommand`], [`BufferId`], [`LinkStatus`] — the boundary.
//! - `app`: [`App`] and [`Config`]: buffers, key handling, `/commands`, sending state,
//!   unread counts, highlights, scrolling and history paging, search; changes to messages
//!   (edits, deletions, reactions), typing notices both ways, read markers.
//! - `buffer`: one buffer's lines, counters, marker, scroll and members.
//! - [`command`]: the one command language of every input line (the UI's and line mode's, in
//!   `chirp connect` and `chirp peer`): the table of commands and aliases, the parser, the
//!   help text (public: `chirp`'s line modes use it too).
//! - `editor`: the input line ([`Editor`]) and the per-buffer input history.
//! - `complete`: Tab completion of nicks, `/commands` and `#rooms`.
//! - [`safe`]: the sanitizer for text from the network (public: `chirp`'s line-mode printers
//!   use it too), showing control and bidi characters as visible marks.
//! - `text`: wrapping text by display width (CJK, emoji), through [`safe`].
//! - `view`: drawing — buffer list, message pane, member list, status bar, input, `/stats`.
//! - `runner`: [`run`] and [`TerminalGuard`] (restores the terminal on drop and on panic).
//!
//! # Keys
//!
//! | key | action |
//! |---|---|
//! | Enter / Alt+Enter | send / insert a newline |
//! | Alt+1…9, Alt+0 | buffer 1…9, 10 |
//! | Ctrl+N / Ctrl+P (Alt+Down / Alt+Up) | next / previous buffer |
//! | Alt+A | next buffer with highlights, else with unread messages |
//! | PgUp / PgDn, Esc | scroll (older history is fetched at the top), back to the bottom |
//! | Ctrl+R | search the loaded lines (again: older match; Enter keeps the view, Esc leaves); `/search` asks the server |
//! | Tab / Shift+Tab | complete nick, `/command` or `#room`, cycling |
//! | Up / Down | this buffer's input history |
//! | Left/Right, Ctrl+Left/Right (Alt+B/F), Home/End (Ctrl+A/E) | move |
//! | Backspace/Delete, Ctrl+W (Alt+Backspace), Alt+D, Ctrl+U, Ctrl+K | delete |
//! | Alt+R | resend the failed messages of this buffer |
//! | Alt+M (F2), F3 | member list, `/stats` panel |
//! | Alt+I | message ids (for `/edit`, `/delete`, `/react`; shown anyway while one is typed) |
//! | Ctrl+L | repaint |
//! | Ctrl+C, Ctrl+D on an empty line | quit |

mod api;
mod app;
mod buffer;
pub mod command;
mod complete;
mod editor;
mod runner;
pub mod safe;
mod text;
mod view;

pub use api::{
    BufferId, ChatMessage, LinkPath, LinkState, LinkStatus, ReactionCount, RoomInfo, UiCommand,
    UiEvent, UnixMs,
};
pub use app::{App, Config};
pub use editor::Editor;
pub use runner::{TerminalGuard, run};
