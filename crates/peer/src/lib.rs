//! chirp's reliable peer mode as a sans-IO state machine, in the style of quinn-proto and
//! str0m: [`Session`] holds everything a `chirp peer` knows about its one peer, and does no
//! I/O, spawns nothing and reads no clock.
//!
//! # Layout
//!
//! - [`session`]: the [`Session`]. Inputs are the protocol core's events
//!   ([`chirp_proto::Event`], [`Session::handle_event`]), the user's requests
//!   ([`Session::handle_input`]), the transport's answers to what the session asked of it
//!   ([`Session::handle_reply`]) and timers ([`Session::handle_timeout`]), each with `now`.
//!   Outputs ([`Session::poll_output`]) are transport requests ([`Transport`]: connect, send,
//!   finish, close, the verdict on a key), reports for the user ([`Report`]), and the end of
//!   the chat with its exit status ([`Output::Exit`]).
//! - [`listen`]: the [`Listener`], for a peer started without a peer to call: it waits for a
//!   caller and judges its key (a pin, else the user), then names the peer the [`Session`]
//!   is to chat with.
//! - [`trust`]: peer mode's key policy (pin, else the key remembered per peer address, else
//!   ask), behind the [`KeyPolicy`] trait so that the session never touches a file itself.
//!
//! A driver calls `poll_output` after every input until it returns `None`, carrying out each
//! request (and handing back a [`Reply`] when the request asks for one, before anything
//! else), then waits for the next input or [`Session::poll_timeout`]. The `chirp` binary drives
//! it over `chirp_transport::Handle`; the tests drive it over two `chirp_proto::Endpoint`s in
//! `chirp-netsim`'s virtual time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod listen;
pub mod rendezvous;
pub mod session;
pub mod trust;

pub use listen::{ListenOutput, Listener};
pub use session::{
    Config, Input, LEAVE_SAVE_WAIT, Output, Reply, Report, Session, Transport, ask_text,
};
pub use trust::{KNOWN_KEYS_FILE, KeyPolicy, KnownKeysPolicy, PeerVerdict, Remember};
