//! chirp's chat application on top of the transport: the client/server protocol, the sans-IO
//! server core, the tokio server runner and the client session.
//!
//! # Layout
//!
//! - [`wire`]: the chat protocol, one JSON object per transport message (`docs/PROTOCOL.md`,
//!   "Chat protocol"). Decoding never panics.
//! - [`names`]: nick, room, topic and text validation with precise errors; the identifier and
//!   look-alike rules for nicks and room names.
//! - `claims` (private): the look-alike index of taken names and the per-network rate of new
//!   nick claims, used by the server core.
//! - [`server`]: the sans-IO server core (rooms, key-bound nicks, DMs, presence batching, flood
//!   control, limits). Time comes in as `now_ms`; storage requests go out as outputs.
//! - [`runner`]: the tokio server: transport events in, core outputs carried out, the store's
//!   group commits fed back, graceful shutdown.
//! - [`client`]: the sans-IO client session (connect, hello, reconnect with backoff and resume,
//!   pending acknowledgements resent with the same sequence number, pacing, exactly-once
//!   display), tested in virtual time; [`client::driver`] runs it over the transport. Used by
//!   `chirp connect` and by tests that run many sessions in one process.
//!
//! One message's path: `client::Session::say` → `Session::poll_io` (`Io::Send`, paced) →
//! `client::driver::perform` → transport → `runner` → `Server::message` (checks, id) →
//! `Output::Persist` → store writer commit → `Server::committed` → `msg` to every member
//! session (the sender's copy with its `c`) and `ack` to the sender → `Session::handle_transport`
//! → `Event::Message` / `Event::Delivered`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bus;
mod claims;
pub mod client;
pub mod metrics;
pub mod names;
pub mod runner;
pub mod server;
pub mod wire;
