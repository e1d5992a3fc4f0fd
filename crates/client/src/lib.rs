//! The client front-ends of chirp, over the sans-IO chat session
//! ([`chirp_chat::client::Session`]): pure code, no I/O, time comes in as arguments; except
//! for the few small files a user's client keeps (the ignore list, the conversation logs),
//! which [`ignore`] and [`logs`] read and write when the binary asks.
//!
//! # Layout
//!
//! - [`line`]: `chirp connect` in line and JSON mode: a typed line (in the one command
//!   language, [`chirp_tui::command`]) becomes session requests; session events keep the
//!   current room. The binary reads standard input and prints.
//! - [`bridge`]: `chirp connect` in the terminal UI: session events become [`chirp_tui::UiEvent`]s
//!   and [`chirp_tui::UiCommand`]s become session requests.
//! - [`moderation`]: what a moderation command asks of the server, and the server's room
//!   events in words; for the line mode and the UI alike.
//! - [`config`]: `client.toml`, the settings a user sets once (parsed here; the binary reads
//!   the file and lets its flags win).
//! - [`ignore`]: `/ignore`, the nicks whose messages are not shown, kept in a file.
//! - [`logs`]: `--log-dir`, a plain-text log per room and DM, with safe file names.
//! - [`unread`]: unread counts per conversation that follow the user's read markers, synced
//!   across its devices.
//! - [`link`]: the status bar's link figures (RTT, loss over the last minute, counters).
//! - [`ping`]: `chirp ping`: a handshake with a server or peer, then probes measuring the round
//!   trip, as a sans-IO state machine owning its endpoint ([`ping::Pinger`]).
//! - [`peer_bridge`]: `chirp peer` in the terminal UI: reports of the peer session
//!   ([`chirp_peer::Session`]) become UI events, UI commands become session inputs.
//! - [`files`]: file transfers in the terminal UI (offers, the progress line, done and
//!   failed lines), for `chirp peer` and `chirp connect`'s DM transfers alike.
//! - [`dm_resume`]: when `chirp connect` offers an unfinished DM transfer again, and which
//!   offers its receiver takes without asking again.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod config;
pub mod dm_resume;
pub mod files;
pub mod ignore;
pub mod line;
pub mod link;
pub mod logs;
pub mod moderation;
pub mod peer_bridge;
pub mod ping;
pub mod unread;
