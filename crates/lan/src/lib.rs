//! chirp peers on the local network: `chirp peer` advertises itself as a DNS-SD service over
//! mDNS (RFC 6762, RFC 6763), and `chirp peer --lan` browses for the others.
//!
//! The service type is [`SERVICE_TYPE`], `_chirp._udp.local.`: the instance name is the peer's
//! name (by default `user@host`), the SRV record its UDP port, the A/AAAA records its addresses,
//! and the TXT record carries `v=1` ([`PROTOCOL_VERSION`]) and `fp=` the fingerprint of its
//! identity key. It is plain DNS-SD, for any browser of it (`avahi-browse -r _chirp._udp`).
//!
//! An advertisement proves nothing: anyone on the link can send one, with any name, address
//! and fingerprint. The fingerprint is a hint shown to the user; whom chirp talks to is still
//! decided by the Noise handshake and the key checks of `chirp peer` (`--peer-key`, the keys
//! remembered in `known_keys`). At worst a forged advertisement costs one connection attempt.
//!
//! # Layout
//!
//! - [`advert`]: sans-IO. What came off the network ([`RawAdvert`]) is checked and made
//!   harmless ([`parse`]: names shown through `chirp_tui::safe`, lengths bounded, version and
//!   fingerprint required, unusable addresses dropped); [`Discovery`] collects what a browse
//!   saw, deduplicated by name and address, bounded in size, and forgets what said goodbye;
//!   [`pick`] finds a peer by name, refusing an ambiguous one.
//! - [`mdns`]: the I/O, over the `mdns-sd` crate (its daemon runs on a thread of its own and is
//!   driven through bounded channels with non-blocking sends): [`browse`] with a deadline, and
//!   the [`Advertiser`], whose stop (or drop) withdraws the advertisement with goodbye packets.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod advert;
pub mod mdns;

pub use advert::{
    Discovery, LanPeer, MAX_ADDRESSES, MAX_INSTANCES, MAX_NAME_BYTES, MAX_SHOWN_CHARS, PickError,
    RawAdvert, Rejected, check_name, default_name, parse, pick,
};
pub use mdns::{Advertiser, Found, LanError, STOP_WAIT, browse};

/// The DNS-SD service type of chirp peers (with its domain).
pub const SERVICE_TYPE: &str = "_chirp._udp.local.";

/// The value of the TXT key `v`: the version of this advertisement (and of the protocol behind
/// it). A peer advertising another version is not listed.
pub const PROTOCOL_VERSION: &str = "1";
