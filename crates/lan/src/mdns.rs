//! The I/O half: advertising and browsing over the `mdns-sd` daemon.
//!
//! `mdns-sd` runs its responder and querier on a thread of its own and takes commands through
//! a bounded channel with non-blocking sends, so neither an advertisement nor a browse ever
//! blocks the chat: the caller only waits where it chooses to, and for a bounded time (the
//! browse window, [`STOP_WAIT`] at the end).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chirp_keys::Fingerprint;
use mdns_sd::{
    DaemonEvent, IfKind, RecvTimeoutError, ResolvedService, ServiceDaemon, ServiceEvent,
    ServiceInfo,
};
use tracing::{debug, warn};

use crate::advert::{Discovery, LanPeer, RawAdvert, check_name};
use crate::{PROTOCOL_VERSION, SERVICE_TYPE};

/// The longest wait for the daemon to confirm a withdrawal or its own shutdown.
pub const STOP_WAIT: Duration = Duration::from_secs(1);

/// At most this many errors of the daemon are kept for the user (the rest are logged).
const MAX_ERRORS: usize = 4;

/// What went wrong with mDNS.
#[derive(Debug, thiserror::Error)]
pub enum LanError {
    /// The name cannot be advertised (see [`check_name`]).
    #[error("cannot advertise the name: {0}")]
    BadName(String),
    /// The mDNS daemon refused (it could not start, or the advertisement is malformed).
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// What a [`browse`] found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The peers, one per name and address, sorted by name (see [`Discovery::peers`]).
    pub peers: Vec<LanPeer>,
    /// Advertisements that were not taken (not chirp's version, no fingerprint, ...).
    pub rejected: u64,
    /// Errors the mDNS daemon reported meanwhile (a socket it could not open, ...): why
    /// nothing may have been found.
    pub errors: Vec<String>,
}

/// Browses the local network for chirp peers for `window`, then stops. Blocks the calling
/// thread for `window` plus at most [`STOP_WAIT`] (call it from a blocking context).
pub fn browse(window: Duration) -> Result<Found, LanError> {
    let daemon = ServiceDaemon::new()?;
    let result = browse_with(&daemon, window);
    stop_daemon(&daemon);
    result
}

fn browse_with(daemon: &ServiceDaemon, window: Duration) -> Result<Found, LanError> {
    let monitor = daemon.monitor()?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + window;
    let mut discovery = Discovery::new();
    loop {
        match events.recv_deadline(deadline) {
            Ok(ServiceEvent::ServiceResolved(s)) => {
                let raw = raw_advert(&s);
                if let Err(why) = discovery.resolved(&raw) {
                    // The name as the network gave it is for the log only, and escaped there.
                    debug!(instance = ?raw.fullname, %why, "advertisement not taken");
                }
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                debug!(instance = ?fullname, "goodbye");
                discovery.removed(&fullname);
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                warn!("the mDNS daemon stopped during the browse");
                break;
            }
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let errors = monitor
        .try_iter()
        .filter_map(|e| match e {
            DaemonEvent::Error(e) => Some(e.to_string()),
            _ => None,
        })
        .inspect(|e| debug!(error = %e, "mDNS daemon error"))
        .take(MAX_ERRORS)
        .collect();
    Ok(Found {
        peers: discovery.peers(),
        rejected: discovery.rejected(),
        errors,
    })
}

/// A resolved instance, as plain data for [`Discovery`].
fn raw_advert(s: &ResolvedService) -> RawAdvert {
    RawAdvert {
        fullname: s.fullname.clone(),
        port: s.port,
        addresses: s.addresses.iter().map(|a| a.to_ip_addr()).collect(),
        txt: s
            .txt_properties
            .iter()
            .map(|p| (p.key().to_owned(), p.val().map(<[u8]>::to_vec)))
            .collect(),
    }
}

/// Shuts the daemon down (it sends goodbyes for anything still registered) and waits at most
/// [`STOP_WAIT`] for it to confirm.
fn stop_daemon(daemon: &ServiceDaemon) {
    match daemon.shutdown() {
        Ok(done) => {
            if done.recv_timeout(STOP_WAIT).is_err() {
                debug!("the mDNS daemon did not confirm its shutdown in time");
            }
        }
        Err(e) => debug!(error = %e, "mDNS daemon shutdown"),
    }
}

/// A running advertisement of this peer: `NAME._chirp._udp.local.` with our port, our
/// addresses, `v=1` and `fp=`. [`Advertiser::stop`] (or dropping it) withdraws it with goodbye
/// packets (records with TTL 0, RFC 6762 §10.1) and stops the daemon.
pub struct Advertiser {
    /// `None` once stopped.
    daemon: Option<ServiceDaemon>,
    fullname: String,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("fullname", &self.fullname)
            .field("running", &self.daemon.is_some())
            .finish()
    }
}

impl Advertiser {
    /// Advertises `name` for a peer whose socket is bound to `local`, with the fingerprint of
    /// its key. Returns at once (the daemon probes for the name and announces it on its own
    /// thread). `Ok(None)` when `local` is a loopback address: nobody on the network could
    /// reach it. On a wildcard address every interface's addresses of that family are
    /// advertised (each on its own interface) and kept up to date; on a specific address, that
    /// one alone, on its interface.
    ///
    /// If another instance on the link has the name, the daemon renames ours as mDNS requires
    /// (`NAME (2)`).
    pub fn start(
        name: &str,
        local: SocketAddr,
        fingerprint: Fingerprint,
    ) -> Result<Option<Advertiser>, LanError> {
        check_name(name).map_err(LanError::BadName)?;
        let ip = local.ip().to_canonical();
        if ip.is_loopback() {
            return Ok(None);
        }
        let host = format!("{}-chirp-{}.local.", host_label(), local.port());
        let fp = fingerprint.to_string();
        let txt = [("v", PROTOCOL_VERSION), ("fp", fp.as_str())];
        let daemon = ServiceDaemon::new()?;
        let mut advertiser = Advertiser {
            daemon: Some(daemon.clone()),
            fullname: String::new(),
        };
        let ips: Vec<IpAddr> = if ip.is_unspecified() {
            Vec::new()
        } else {
            vec![ip]
        };
        let mut info =
            ServiceInfo::new(SERVICE_TYPE, name, &host, &ips[..], local.port(), &txt[..])?;
        if ip.is_unspecified() {
            info = info.enable_addr_auto();
        }
        // Our socket takes one family only (an IPv6 wildcard socket takes IPv4 too).
        let family = match ip {
            IpAddr::V4(_) => Some(IfKind::IPv6),
            IpAddr::V6(_) if ip.is_unspecified() => None,
            IpAddr::V6(_) => Some(IfKind::IPv4),
        };
        if let Some(other) = family {
            daemon.disable_interface(other)?;
        }
        if !ip.is_unspecified() {
            info.set_interfaces(vec![IfKind::Addr(ip)]);
        }
        advertiser.fullname = info.get_fullname().to_owned();
        // (On error, `advertiser`'s drop stops the daemon.)
        daemon.register(info)?;
        debug!(instance = %advertiser.fullname, %local, "advertising on the LAN");
        Ok(Some(advertiser))
    }

    /// The advertised instance, `NAME._chirp._udp.local.` (with any escapes).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the advertisement (goodbye packets) and stops the daemon; waits at most
    /// [`STOP_WAIT`] for each. Blocks the calling thread for that long at most.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(daemon) = self.daemon.take() else {
            return;
        };
        if !self.fullname.is_empty() {
            match daemon.unregister(&self.fullname) {
                Ok(done) => {
                    if done.recv_timeout(STOP_WAIT).is_err() {
                        debug!("the mDNS daemon did not confirm the withdrawal in time");
                    }
                }
                Err(e) => debug!(error = %e, "mDNS unregister"),
            }
        }
        stop_daemon(&daemon);
        debug!(instance = %self.fullname, "no longer advertised");
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// This host's name as one DNS label for our SRV target: letters, digits and `-` only, at most
/// 40 bytes, `chirp` if nothing is left. Each peer gets its own host name (with its port), so
/// that it never contends for the name of the host itself with another responder.
fn host_label() -> String {
    let host = whoami::hostname().unwrap_or_default();
    let label: String = host
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "chirp".into()
    } else {
        label.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_label_is_one_dns_label() {
        let l = host_label();
        assert!(!l.is_empty() && l.len() <= 40, "{l}");
        assert!(l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert!(!l.starts_with('-') && !l.ends_with('-'));
    }

    #[test]
    fn loopback_is_not_advertised_and_bad_names_are_refused() {
        let fp: Fingerprint = "uazx-xfyy-tgus-q6yc-4ifo-z4sf".parse().expect("fp");
        let lo: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert!(matches!(Advertiser::start("a", lo, fp), Ok(None)));
        let lo6: SocketAddr = "[::1]:5000".parse().expect("addr");
        assert!(matches!(Advertiser::start("a", lo6, fp), Ok(None)));
        let any: SocketAddr = "0.0.0.0:5000".parse().expect("addr");
        assert!(matches!(
            Advertiser::start("bad\x1bname", any, fp),
            Err(LanError::BadName(_))
        ));
    }
}
