//! Advertisements as they come off the network, checked and made harmless; what a browse saw;
//! picking a peer by name. Sans-IO: no sockets, no clock, no threads.
//!
//! Everything in a [`RawAdvert`] is hostile: anyone on the link can answer a query with any
//! name, port, address and TXT record. [`parse`] therefore
//! - accepts only instances of [`SERVICE_TYPE`] whose TXT record says `v=1` and carries a
//!   well-formed `fp=` fingerprint (the first occurrence of a key counts, as RFC 6763 §6.4
//!   says; keys are compared without case);
//! - shows the instance name through [`chirp_tui::safe::line`] (control and bidi characters
//!   become visible marks, so the name cannot act on a terminal or pass for another line), cut
//!   at [`MAX_SHOWN_CHARS`];
//! - drops addresses nobody can be reached at (unspecified, multicast, broadcast, and IPv6
//!   link-local, which would need the interface's scope), and keeps at most
//!   [`MAX_ADDRESSES`];
//! - never panics, whatever the input (the tests feed it hostile and random input).
//!
//! [`Discovery`] holds at most [`MAX_INSTANCES`] instances, so a flood of advertisements
//! cannot grow it without bound.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use chirp_keys::Fingerprint;
use chirp_tui::safe;

use crate::{PROTOCOL_VERSION, SERVICE_TYPE};

/// The longest name we advertise, in bytes: one DNS label (RFC 1035 §2.3.4).
pub const MAX_NAME_BYTES: usize = 63;

/// The longest name shown, in characters (after control characters became marks); a longer
/// one is cut and ends in `…`.
pub const MAX_SHOWN_CHARS: usize = 64;

/// At most this many addresses of one instance are kept.
pub const MAX_ADDRESSES: usize = 8;

/// At most this many instances are kept by one [`Discovery`]; more are counted and dropped.
pub const MAX_INSTANCES: usize = 256;

/// The longest TXT value looked at for a fingerprint (a real one is 29 bytes).
const MAX_FINGERPRINT_BYTES: usize = 64;

/// One service instance as the mDNS browser resolved it, nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawAdvert {
    /// The instance's full name, `NAME._chirp._udp.local.` (dots and backslashes inside NAME
    /// may be escaped with a backslash).
    pub fullname: String,
    /// The port of its SRV record.
    pub port: u16,
    /// The addresses of its host (A and AAAA records).
    pub addresses: Vec<IpAddr>,
    /// Its TXT record, as key and value (`None`: a key without `=`), in order.
    pub txt: Vec<(String, Option<Vec<u8>>)>,
}

/// A chirp peer found on the LAN: one name at one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPeer {
    /// Its advertised name, safe to print (see the module documentation).
    pub name: String,
    /// Where to reach it.
    pub addr: SocketAddr,
    /// The fingerprint it advertises: a hint only, checked by nothing (the handshake and the
    /// usual key checks decide).
    pub fingerprint: Fingerprint,
}

/// Why an advertisement was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not an instance of [`SERVICE_TYPE`].
    #[error("not a {SERVICE_TYPE} instance")]
    NotChirp,
    /// The instance name is empty.
    #[error("no instance name")]
    NoName,
    /// The SRV port is 0.
    #[error("port 0")]
    NoPort,
    /// No `v=` in the TXT record, or another version than ours (shown safely).
    #[error("protocol version {0} (this chirp speaks v={PROTOCOL_VERSION})")]
    Version(String),
    /// No `fp=` in the TXT record, or one that is not a fingerprint.
    #[error("no valid fingerprint (fp=)")]
    Fingerprint,
    /// No address chirp can connect to.
    #[error("no usable address")]
    NoAddress,
}

/// Checks and converts one advertisement: one [`LanPeer`] per usable address (IPv4 first),
/// or why it is not taken.
pub fn parse(raw: &RawAdvert) -> Result<Vec<LanPeer>, Rejected> {
    let instance = instance_name(&raw.fullname).ok_or(Rejected::NotChirp)?;
    let name = shown_name(&instance).ok_or(Rejected::NoName)?;
    if raw.port == 0 {
        return Err(Rejected::NoPort);
    }
    match txt(raw, "v") {
        Some(Some(v)) if v == PROTOCOL_VERSION.as_bytes() => {}
        Some(Some(v)) => {
            let v = String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned();
            return Err(Rejected::Version(safe::line(&v).into_owned()));
        }
        Some(None) | None => return Err(Rejected::Version("missing".into())),
    }
    let fingerprint = match txt(raw, "fp") {
        Some(Some(fp)) if fp.len() <= MAX_FINGERPRINT_BYTES => std::str::from_utf8(fp)
            .ok()
            .and_then(|s| s.parse::<Fingerprint>().ok())
            .ok_or(Rejected::Fingerprint)?,
        _ => return Err(Rejected::Fingerprint),
    };
    let mut ips: Vec<IpAddr> = raw
        .addresses
        .iter()
        .map(|ip| ip.to_canonical())
        .filter(|ip| usable(*ip))
        .collect();
    // IPv4 first (`IpAddr`'s order), then deterministic; one entry per address.
    ips.sort_unstable();
    ips.dedup();
    ips.truncate(MAX_ADDRESSES);
    if ips.is_empty() {
        return Err(Rejected::NoAddress);
    }
    Ok(ips
        .into_iter()
        .map(|ip| LanPeer {
            name: name.clone(),
            addr: SocketAddr::new(ip, raw.port),
            fingerprint,
        })
        .collect())
}

/// The first value of TXT key `key` (without case): `Some(None)` for a key without `=`.
fn txt<'a>(raw: &'a RawAdvert, key: &str) -> Option<Option<&'a [u8]>> {
    raw.txt
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_deref())
}

/// The instance part of `fullname` (`NAME._chirp._udp.local.`, the type without case), with
/// `\.` and `\\` unescaped. `None` for another service type.
fn instance_name(fullname: &str) -> Option<String> {
    let suffix = SERVICE_TYPE.len() + 1; // ".", then the type
    let cut = fullname.len().checked_sub(suffix)?;
    // `get` rather than indexing: a cut inside a character is not our type anyway.
    let (instance, rest) = (fullname.get(..cut)?, fullname.get(cut..)?);
    let rest = rest.strip_prefix('.')?;
    if !rest.eq_ignore_ascii_case(SERVICE_TYPE) {
        return None;
    }
    let mut out = String::with_capacity(instance.len());
    let mut chars = instance.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // A lone trailing backslash stays as it is.
            out.push(chars.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `name` as shown to the user: control and bidi characters as marks, at most
/// [`MAX_SHOWN_CHARS`] characters (a cut one ends in `…`). `None` if empty.
fn shown_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let safe = safe::line(name);
    let mut chars = safe.chars();
    let mut out: String = chars.by_ref().take(MAX_SHOWN_CHARS).collect();
    if chars.next().is_some() {
        out.pop();
        out.push('…');
    }
    Some(out)
}

/// Whether chirp can send to `ip`: not unspecified, multicast or broadcast, and not an IPv6
/// link-local address (it would need the scope of an interface, which an A/AAAA record does
/// not carry).
fn usable(ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_broadcast(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
    }
}

/// What a browse saw: the chirp peers that answered, deduplicated by name and address, with
/// those that said goodbye (or were replaced by a newer answer) forgotten.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Per instance (full name without case), its peers as last resolved.
    instances: BTreeMap<String, Vec<LanPeer>>,
    /// Advertisements not taken (see [`Rejected`]).
    rejected: u64,
    /// Instances dropped because [`MAX_INSTANCES`] were already held.
    dropped: u64,
}

impl Discovery {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An instance was resolved (again: its newer records replace the older ones).
    pub fn resolved(&mut self, raw: &RawAdvert) -> Result<(), Rejected> {
        let key = raw.fullname.to_lowercase();
        let peers = match parse(raw) {
            Ok(peers) => peers,
            Err(e) => {
                // Whatever it said before no longer holds either.
                self.instances.remove(&key);
                self.rejected = self.rejected.saturating_add(1);
                return Err(e);
            }
        };
        if !self.instances.contains_key(&key) && self.instances.len() >= MAX_INSTANCES {
            self.dropped = self.dropped.saturating_add(1);
            return Ok(());
        }
        self.instances.insert(key, peers);
        Ok(())
    }

    /// An instance said goodbye (or its records expired).
    pub fn removed(&mut self, fullname: &str) {
        self.instances.remove(&fullname.to_lowercase());
    }

    /// The peers seen, one per name and address (the first instance in name order wins a
    /// tie), sorted by name, then address.
    pub fn peers(&self) -> Vec<LanPeer> {
        let mut by_key: BTreeMap<(&str, SocketAddr), &LanPeer> = BTreeMap::new();
        for p in self.instances.values().flatten() {
            by_key.entry((p.name.as_str(), p.addr)).or_insert(p);
        }
        by_key.into_values().cloned().collect()
    }

    /// How many advertisements were not taken.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// How many instances were dropped for want of room.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Why [`pick`] found no single peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    /// No peer of that name; the names that were found.
    NotFound {
        /// The name asked for (as given).
        name: String,
        /// The names found, each once, sorted.
        found: Vec<String>,
    },
    /// Several peers with different keys advertise that name.
    Ambiguous {
        /// The name asked for.
        name: String,
        /// Every peer of that name.
        candidates: Vec<LanPeer>,
    },
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickError::NotFound { name, found } => {
                write!(f, "no chirp peer named '{}' on the LAN", safe::line(name))?;
                if found.is_empty() {
                    write!(f, " (none found)")
                } else {
                    write!(f, " (found: {})", found.join(", "))
                }
            }
            PickError::Ambiguous { name, candidates } => {
                write!(
                    f,
                    "'{}' is advertised with {} different keys: ",
                    safe::line(name),
                    distinct_keys(candidates)
                )?;
                for (i, p) in candidates.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} (key {})", p.addr, p.fingerprint)?;
                }
                f.write_str(
                    "; connect to the right one with --to ADDRESS --peer-key FINGERPRINT \
                     (without --lan), having checked its fingerprint with its owner",
                )
            }
        }
    }
}

impl std::error::Error for PickError {}

fn distinct_keys(peers: &[LanPeer]) -> usize {
    let mut keys: Vec<String> = peers.iter().map(|p| p.fingerprint.to_string()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

/// The peer named exactly `name` among `peers` (as [`Discovery::peers`] lists them). One name
/// at several addresses with one key is one multi-homed peer: its first address (IPv4 first)
/// is taken. The same name with different keys is ambiguous: someone may be impersonating the
/// peer, and only the user can tell which is real.
pub fn pick(peers: &[LanPeer], name: &str) -> Result<LanPeer, PickError> {
    let candidates: Vec<LanPeer> = peers.iter().filter(|p| p.name == name).cloned().collect();
    let Some(first) = candidates.first() else {
        let mut found: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
        found.sort_unstable();
        found.dedup();
        return Err(PickError::NotFound {
            name: name.to_owned(),
            found,
        });
    };
    if distinct_keys(&candidates) > 1 {
        return Err(PickError::Ambiguous {
            name: name.to_owned(),
            candidates,
        });
    }
    Ok(first.clone())
}

/// Whether `name` can be advertised: 1 to [`MAX_NAME_BYTES`] bytes, and no character that
/// could act on a terminal (which [`chirp_tui::safe::is_unsafe`] lists). `Err` says why.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the name is {} bytes long; at most {MAX_NAME_BYTES} fit in an mDNS label",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|&c| safe::is_unsafe(c)) {
        return Err(format!(
            "the name contains {}, a control or bidi character",
            safe::line(&c.to_string())
        ));
    }
    Ok(())
}

/// The default advertised name: `user@host` (made to pass [`check_name`]: unsafe characters
/// dropped, cut to [`MAX_NAME_BYTES`]); `chirp` if neither can be found.
pub fn default_name() -> String {
    let user = whoami::username().ok();
    let host = whoami::hostname().ok();
    let name = match (user, host) {
        (Some(u), Some(h)) => format!("{u}@{h}"),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => String::new(),
    };
    let name = clean_name(&name);
    if name.is_empty() {
        "chirp".into()
    } else {
        name
    }
}

/// `name` without unsafe characters, cut to at most [`MAX_NAME_BYTES`] on a character
/// boundary.
fn clean_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().filter(|&c| !safe::is_unsafe(c)) {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP: &str = "uazx-xfyy-tgus-q6yc-4ifo-z4sf";
    const FP2: &str = "2r3f-r4a5-76tk-jjhf-voar-vooc";

    fn raw(name: &str, port: u16, ips: &[&str], fp: &str) -> RawAdvert {
        RawAdvert {
            fullname: format!("{name}.{SERVICE_TYPE}"),
            port,
            addresses: ips.iter().map(|s| s.parse().expect("ip")).collect(),
            txt: vec![
                ("v".into(), Some(b"1".to_vec())),
                ("fp".into(), Some(fp.as_bytes().to_vec())),
            ],
        }
    }

    fn fp(s: &str) -> Fingerprint {
        s.parse().expect("fingerprint")
    }

    #[test]
    fn a_good_advertisement() {
        let peers = parse(&raw("alice@box", 5000, &["10.1.2.3"], FP)).expect("taken");
        assert_eq!(
            peers,
            vec![LanPeer {
                name: "alice@box".into(),
                addr: "10.1.2.3:5000".parse().expect("addr"),
                fingerprint: fp(FP),
            }]
        );
        // The type without case, escaped dots and backslashes in the name, keys without case.
        let mut r = raw(r"a\.b\\c", 7, &["10.0.0.1"], FP);
        r.fullname = r"a\.b\\c._CHIRP._udp.LOCAL.".into();
        r.txt = vec![
            ("V".into(), Some(b"1".to_vec())),
            ("FP".into(), Some(FP.to_uppercase().into_bytes())),
        ];
        let peers = parse(&r).expect("taken");
        assert_eq!(peers[0].name, r"a.b\c");
        assert_eq!(peers[0].fingerprint, fp(FP));
    }

    #[test]
    fn hostile_names_are_shown_harmlessly_and_bounded() {
        let evil = "ali\x1b]0;owned\x07ce\u{202e}\n<bob> hi";
        let peers = parse(&raw(evil, 1, &["10.0.0.1"], FP)).expect("taken");
        let name = &peers[0].name;
        assert!(!name.chars().any(safe::is_unsafe), "{name:?}");
        assert_eq!(name, "ali^[]0;owned^Gce<U+202E>^J<bob> hi");
        // Long names are cut, visibly.
        let long = "x".repeat(500);
        let peers = parse(&raw(&long, 1, &["10.0.0.1"], FP)).expect("taken");
        assert_eq!(peers[0].name.chars().count(), MAX_SHOWN_CHARS);
        assert!(peers[0].name.ends_with('…'));
        // Marks make a name longer: the bound is on what is shown.
        let peers = parse(&raw(&"\x1b".repeat(200), 1, &["10.0.0.1"], FP)).expect("taken");
        assert_eq!(peers[0].name.chars().count(), MAX_SHOWN_CHARS);
        assert_eq!(parse(&raw("", 1, &["10.0.0.1"], FP)), Err(Rejected::NoName));
    }

    #[test]
    fn what_is_not_a_chirp_peer_is_rejected() {
        let good = raw("alice", 5000, &["10.0.0.1"], FP);
        let mut r = good.clone();
        r.fullname = "alice._http._tcp.local.".into();
        assert_eq!(parse(&r), Err(Rejected::NotChirp));
        for fullname in ["", ".", "_chirp._udp.local.", "x_chirp._udp.local.", "é"] {
            r.fullname = fullname.into();
            assert_eq!(parse(&r), Err(Rejected::NotChirp), "{fullname:?}");
        }
        let mut r = good.clone();
        r.port = 0;
        assert_eq!(parse(&r), Err(Rejected::NoPort));
        // Version: missing, valueless, another one (shown harmlessly and short).
        let mut r = good.clone();
        r.txt.retain(|(k, _)| k != "v");
        assert_eq!(parse(&r), Err(Rejected::Version("missing".into())));
        r.txt.push(("v".into(), None));
        assert_eq!(parse(&r), Err(Rejected::Version("missing".into())));
        let mut r = good.clone();
        r.txt[0].1 = Some(b"2\x1b[2J".to_vec());
        assert_eq!(parse(&r), Err(Rejected::Version("2^[[2J".into())));
        r.txt[0].1 = Some(vec![0xff; 10_000]);
        assert!(matches!(parse(&r), Err(Rejected::Version(v)) if v.len() < 64));
        // Fingerprint: missing, valueless, malformed, not UTF-8, huge.
        for bad in [
            None,
            Some(b"".to_vec()),
            Some(b"not-a-fingerprint".to_vec()),
            Some(vec![0xff, 0xfe]),
            Some(FP.repeat(1000).into_bytes()),
        ] {
            let mut r = good.clone();
            r.txt[1].1 = bad;
            assert_eq!(parse(&r), Err(Rejected::Fingerprint));
        }
        let mut r = good.clone();
        r.txt.retain(|(k, _)| k != "fp");
        assert_eq!(parse(&r), Err(Rejected::Fingerprint));
        // The first occurrence of a key counts (RFC 6763 §6.4): a second `v` changes nothing.
        let mut r = good.clone();
        r.txt.push(("v".into(), Some(b"9".to_vec())));
        assert!(parse(&r).is_ok());
        // Addresses nobody can be reached at.
        let r = raw(
            "a",
            1,
            &[
                "0.0.0.0",
                "224.0.0.251",
                "255.255.255.255",
                "fe80::1",
                "::",
                "ff02::fb",
            ],
            FP,
        );
        assert_eq!(parse(&r), Err(Rejected::NoAddress));
    }

    #[test]
    fn addresses_are_sorted_deduplicated_and_bounded() {
        let mut r = raw("a", 9, &["fd00::1", "10.0.0.2", "10.0.0.1", "fe80::2"], FP);
        r.addresses.push("::ffff:10.0.0.1".parse().expect("mapped"));
        let addrs: Vec<String> = parse(&r)
            .expect("taken")
            .iter()
            .map(|p| p.addr.to_string())
            .collect();
        assert_eq!(addrs, ["10.0.0.1:9", "10.0.0.2:9", "[fd00::1]:9"]);
        let many: Vec<String> = (1..=100).map(|i| format!("10.0.1.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            parse(&raw("a", 9, &many, FP)).expect("taken").len(),
            MAX_ADDRESSES
        );
    }

    #[test]
    fn discovery_deduplicates_replaces_and_forgets() {
        let mut d = Discovery::new();
        let alice = raw("alice", 5000, &["10.0.0.1"], FP);
        d.resolved(&alice).expect("taken");
        // The same instance resolved again (another interface, a refresh): one entry.
        d.resolved(&alice).expect("taken");
        // Same name and address under another instance name spelling: one entry.
        let mut upper = alice.clone();
        upper.fullname = format!("alice.{}", SERVICE_TYPE.to_uppercase());
        d.resolved(&upper).expect("taken");
        assert_eq!(d.peers().len(), 1);
        // Another address of the same instance replaces the old one.
        d.resolved(&raw("alice", 5000, &["10.0.0.9"], FP))
            .expect("taken");
        let peers = d.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].addr.to_string(), "10.0.0.9:5000");
        // Another peer; sorted by name.
        d.resolved(&raw("aaron", 6000, &["10.0.0.2"], FP2))
            .expect("taken");
        let names: Vec<String> = d.peers().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["aaron", "alice"]);
        // A later answer that is not valid withdraws what the instance said before.
        let mut broken = raw("aaron", 6000, &["10.0.0.2"], FP2);
        broken.txt.clear();
        assert!(d.resolved(&broken).is_err());
        assert_eq!(d.rejected(), 1);
        assert_eq!(d.peers().len(), 1);
        // Goodbye.
        d.removed(&format!("ALICE.{SERVICE_TYPE}"));
        assert!(d.peers().is_empty());
    }

    #[test]
    fn discovery_is_bounded() {
        let mut d = Discovery::new();
        for i in 0..MAX_INSTANCES + 50 {
            d.resolved(&raw(&format!("p{i}"), 1, &["10.0.0.1"], FP))
                .expect("taken");
        }
        assert_eq!(d.peers().len(), MAX_INSTANCES);
        assert_eq!(d.dropped(), 50);
        // An instance already held is still updated.
        d.resolved(&raw("p0", 2, &["10.0.0.1"], FP)).expect("taken");
        assert!(
            d.peers()
                .iter()
                .any(|p| p.name == "p0" && p.addr.port() == 2)
        );
    }

    #[test]
    fn pick_by_exact_name() {
        let mut d = Discovery::new();
        d.resolved(&raw("alice", 5000, &["10.0.0.1", "fd00::1"], FP))
            .expect("taken");
        d.resolved(&raw("bob", 5001, &["10.0.0.2"], FP2))
            .expect("taken");
        let peers = d.peers();
        // One multi-homed peer (one key): its IPv4 address.
        let p = pick(&peers, "alice").expect("found");
        assert_eq!(p.addr.to_string(), "10.0.0.1:5000");
        // Exact: neither a prefix nor another case.
        for name in ["ali", "Alice", "alice "] {
            let e = pick(&peers, name).expect_err("not found");
            assert_eq!(
                e,
                PickError::NotFound {
                    name: name.into(),
                    found: vec!["alice".into(), "bob".into()]
                }
            );
        }
        let e = pick(&peers, "carol").expect_err("not found").to_string();
        assert_eq!(
            e,
            "no chirp peer named 'carol' on the LAN (found: alice, bob)"
        );
        let e = pick(&[], "x\x1b[2J").expect_err("none").to_string();
        assert_eq!(e, "no chirp peer named 'x^[[2J' on the LAN (none found)");
        // The same shown name from another instance, with another key: ambiguous, naming
        // every candidate. (Two instances cannot share a name on one link, but an escaped
        // character shows as itself.)
        let mut impostor = raw("alice", 5000, &["10.0.0.66"], FP2);
        impostor.fullname = format!(r"alic\e.{SERVICE_TYPE}");
        d.resolved(&impostor).expect("taken");
        let e = pick(&d.peers(), "alice").expect_err("ambiguous");
        let PickError::Ambiguous { candidates, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(candidates.len(), 3);
        let text = e.to_string();
        assert!(text.contains(FP) && text.contains(FP2), "{text}");
        assert!(text.contains("10.0.0.66:5000") && text.contains("--peer-key"));
    }

    #[test]
    fn names_we_advertise() {
        assert!(check_name("alice@box").is_ok());
        assert!(check_name("アリス").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(64)).is_err());
        assert!(check_name(&"x".repeat(63)).is_ok());
        let e = check_name("a\x1bb").expect_err("escape");
        assert!(e.contains("^["), "{e}");
        assert!(check_name("a\u{202e}b").is_err());
        let d = default_name();
        assert!(check_name(&d).is_ok(), "{d:?}");
        assert_eq!(clean_name(&"é".repeat(40)).len(), 62);
        assert_eq!(clean_name("a\nb"), "ab");
    }

    proptest! {
        /// Whatever arrives, parsing neither panics nor lets an unsafe character or an
        /// unbounded name through.
        #[test]
        fn parse_never_panics(
            fullname in ".{0,300}",
            suffix in prop::bool::ANY,
            port in any::<u16>(),
            ips in prop::collection::vec(any::<IpAddr>(), 0..20),
            txt in prop::collection::vec(
                (".{0,10}", prop::option::of(prop::collection::vec(any::<u8>(), 0..80))),
                0..10,
            ),
            v1 in prop::bool::ANY,
        ) {
            let mut txt = txt;
            if v1 {
                txt.insert(0, ("v".into(), Some(b"1".to_vec())));
                txt.insert(1, ("fp".into(), Some(FP.as_bytes().to_vec())));
            }
            let fullname = if suffix { format!("{fullname}.{SERVICE_TYPE}") } else { fullname };
            let raw = RawAdvert { fullname, port, addresses: ips, txt };
            let mut d = Discovery::new();
            let _ = d.resolved(&raw);
            if let Ok(peers) = parse(&raw) {
                prop_assert!(!peers.is_empty() && peers.len() <= MAX_ADDRESSES);
                for p in peers {
                    prop_assert!(!p.name.chars().any(safe::is_unsafe));
                    prop_assert!(p.name.chars().count() <= MAX_SHOWN_CHARS);
                    prop_assert!(p.addr.port() != 0);
                }
            }
            for p in d.peers() {
                let _ = pick(&d.peers(), &p.name);
            }
        }
    }
}
