//! The settings a running server takes without a restart (`chirp serve` re-reads its config
//! file on SIGHUP): [`Limits`], the differences between two of them ([`Change`]), and how the
//! core applies new ones ([`Server::reconfigure`]).
//!
//! What is not here (the address, the database, the cluster, the key, the connection limit,
//! the idle timeout, `history_on_join`, which sizes the replay caches loaded at start) needs a
//! restart: the runner's transport and store were built from it.

use std::fmt;
use std::time::Duration;

use chirp_store::Retention;
use tracing::debug;

use super::{DAY_MS, Server, ServerConfig};
use crate::wire::ServerMsg;

/// The settings of [`ServerConfig`] that can change while the server runs. Each field is the
/// `ServerConfig` field of the same name (but `max_per_conv` and `max_age_ms`, which are also
/// the store's [`Retention`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Flood control: burst.
    pub burst: u32,
    /// Flood control: sustained requests per second.
    pub per_sec: u32,
    /// Largest message text, in bytes.
    pub max_text: usize,
    /// Rooms one user may be in at once.
    pub max_rooms_per_user: usize,
    /// Sessions at once from one source IP address.
    pub max_sessions_per_ip: usize,
    /// Nick expiry (`None`: never).
    pub nick_expiry_ms: Option<i64>,
    /// New nicks per source network at once...
    pub nick_claim_burst: u32,
    /// ...and per hour after that.
    pub nick_claims_per_hour: u32,
    /// Joins one key may make at once...
    pub join_burst: u32,
    /// ...and per hour after that.
    pub joins_per_hour: u32,
    /// Nick changes one key may make at once...
    pub nick_change_burst: u32,
    /// ...and per hour after that.
    pub nick_changes_per_hour: u32,
    /// Rooms one key may create per hour.
    pub rooms_per_hour: u32,
    /// Server operators, by key fingerprint.
    pub opers: Vec<chirp_keys::Fingerprint>,
    /// Retention by count: messages kept per conversation (`None`: no limit).
    pub max_per_conv: Option<u64>,
    /// Retention by age (`None`: no limit).
    pub max_age_ms: Option<i64>,
}

impl Default for Limits {
    fn default() -> Self {
        ServerConfig::default().limits()
    }
}

/// One setting that differs between two [`Limits`], named as in `chirp serve`'s config file,
/// with both values as a person reads them. Displays as `burst 10 -> 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting's name in the config file (`per_sec`, `retention_days`, ...).
    pub setting: &'static str,
    /// Its value before.
    pub from: String,
    /// Its value now.
    pub to: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.setting, self.from, self.to)
    }
}

/// A number of days as the config file gives it (whole days; anything else in ms).
fn days(ms: Option<i64>, none: &str) -> String {
    match ms {
        None => none.to_owned(),
        Some(ms) if ms % DAY_MS == 0 => (ms / DAY_MS).to_string(),
        Some(ms) => format!("{ms} ms"),
    }
}

fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

impl Limits {
    /// What differs from `self` in `new`, in the order of the config file's settings.
    pub fn changes(&self, new: &Limits) -> Vec<Change> {
        let mut out = Vec::new();
        let mut diff = |setting: &'static str, from: String, to: String| {
            if from != to {
                out.push(Change { setting, from, to });
            }
        };
        diff(
            "max_message_size",
            self.max_text.to_string(),
            new.max_text.to_string(),
        );
        diff("burst", self.burst.to_string(), new.burst.to_string());
        diff("per_sec", self.per_sec.to_string(), new.per_sec.to_string());
        diff(
            "max_rooms",
            self.max_rooms_per_user.to_string(),
            new.max_rooms_per_user.to_string(),
        );
        diff(
            "max_sessions_per_ip",
            self.max_sessions_per_ip.to_string(),
            new.max_sessions_per_ip.to_string(),
        );
        diff(
            "retention_count",
            count(self.max_per_conv),
            count(new.max_per_conv),
        );
        diff(
            "retention_days",
            days(self.max_age_ms, "none"),
            days(new.max_age_ms, "none"),
        );
        diff(
            "nick_expiry_days",
            days(self.nick_expiry_ms, "0 (never)"),
            days(new.nick_expiry_ms, "0 (never)"),
        );
        diff(
            "nick_claim_burst",
            self.nick_claim_burst.to_string(),
            new.nick_claim_burst.to_string(),
        );
        diff(
            "nick_claims_per_hour",
            self.nick_claims_per_hour.to_string(),
            new.nick_claims_per_hour.to_string(),
        );
        for (setting, from, to) in [
            ("join_burst", self.join_burst, new.join_burst),
            ("joins_per_hour", self.joins_per_hour, new.joins_per_hour),
            (
                "nick_change_burst",
                self.nick_change_burst,
                new.nick_change_burst,
            ),
            (
                "nick_changes_per_hour",
                self.nick_changes_per_hour,
                new.nick_changes_per_hour,
            ),
            ("rooms_per_hour", self.rooms_per_hour, new.rooms_per_hour),
        ] {
            diff(setting, from.to_string(), to.to_string());
        }
        let opers = |o: &[chirp_keys::Fingerprint]| {
            let mut v: Vec<String> = o.iter().map(ToString::to_string).collect();
            v.sort();
            format!("[{}]", v.join(", "))
        };
        diff("opers", opers(&self.opers), opers(&new.opers));
        out
    }

    /// The store's retention policy for these limits.
    pub fn retention(&self) -> Retention {
        Retention {
            max_per_conv: self.max_per_conv,
            max_age: self
                .max_age_ms
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        }
    }
}

impl ServerConfig {
    /// The settings of this config that can change while the server runs.
    pub fn limits(&self) -> Limits {
        Limits {
            burst: self.burst,
            per_sec: self.per_sec,
            max_text: self.max_text,
            max_rooms_per_user: self.max_rooms_per_user,
            max_sessions_per_ip: self.max_sessions_per_ip,
            nick_expiry_ms: self.nick_expiry_ms,
            nick_claim_burst: self.nick_claim_burst,
            nick_claims_per_hour: self.nick_claims_per_hour,
            join_burst: self.join_burst,
            joins_per_hour: self.joins_per_hour,
            nick_change_burst: self.nick_change_burst,
            nick_changes_per_hour: self.nick_changes_per_hour,
            rooms_per_hour: self.rooms_per_hour,
            opers: self.opers.clone(),
            max_per_conv: self.max_per_conv,
            max_age_ms: self.max_age_ms,
        }
    }

    /// Sets the settings `l` holds, leaving the others.
    pub fn set_limits(&mut self, l: &Limits) {
        self.burst = l.burst;
        self.per_sec = l.per_sec;
        self.max_text = l.max_text;
        self.max_rooms_per_user = l.max_rooms_per_user;
        self.max_sessions_per_ip = l.max_sessions_per_ip;
        self.nick_expiry_ms = l.nick_expiry_ms;
        self.nick_claim_burst = l.nick_claim_burst;
        self.nick_claims_per_hour = l.nick_claims_per_hour;
        self.join_burst = l.join_burst;
        self.joins_per_hour = l.joins_per_hour;
        self.nick_change_burst = l.nick_change_burst;
        self.nick_changes_per_hour = l.nick_changes_per_hour;
        self.rooms_per_hour = l.rooms_per_hour;
        self.opers = l.opers.clone();
        self.max_per_conv = l.max_per_conv;
        self.max_age_ms = l.max_age_ms;
    }

    /// Messages cached per conversation: `replay_cache`, and never more than retention keeps
    /// (the in-memory replay window must not outlive what the store holds).
    pub fn cache_cap(&self) -> usize {
        let kept = self
            .max_per_conv
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        self.replay_cache.min(kept)
    }
}

impl Server {
    /// The settings in force that can change while the server runs.
    pub fn limits(&self) -> Limits {
        self.config.limits()
    }

    /// The operator changed the settings that can change live ([`Limits`]); returns what
    /// differs (nothing: nothing was done). Call it with the current time.
    ///
    /// - Flood control holds at once: every session's request bucket is first brought up to
    ///   `now_ms` under the old rate, then cut to the new burst if it holds more.
    /// - Every session that has had its `welcome` is told the new `burst`, `per_sec` and
    ///   `max_text` in a `limits` message if one of them changed, so that clients pace
    ///   themselves to them from now on.
    /// - Limits on counts (sessions per address, rooms per user) apply to what comes next:
    ///   what is already beyond a lowered one stays.
    /// - Retention: the replay caches drop at once what a lower count or a shorter age no
    ///   longer keeps; the store is the runner's to tell ([`Limits::retention`]).
    /// - The rates of joins, nick changes and new rooms, and the list of server operators,
    ///   apply from the next request on.
    /// - Nick expiry and the nick-claim rate apply from now on ([`Server::poll_timeout`] may
    ///   change: call it again).
    pub fn reconfigure(&mut self, now_ms: i64, limits: &Limits) -> Vec<Change> {
        let old = self.config.limits();
        let changes = old.changes(limits);
        if changes.is_empty() {
            return changes;
        }
        let old_cap = self.config.cache_cap();
        self.config.set_limits(limits);
        let cap = u64::from(limits.burst) * 1000;
        for s in self.sessions.values_mut() {
            s.bucket.refill(now_ms, old.burst, old.per_sec);
            // A session before its `hello` keeps the token its hello is owed.
            let hello = if s.client.is_none() { 1000 } else { 0 };
            s.bucket.milli = s.bucket.milli.min(cap + hello);
        }
        // A larger max_text makes history pages larger: the queue bound follows. A smaller one
        // keeps the bound (a session may hold a page of the old size) until a restart.
        self.queue_limit = self.queue_limit.max(queue_limit(&self.config));
        self.claims
            .set_rates(limits.nick_claim_burst, limits.nick_claims_per_hour);
        let cap = self.config.cache_cap();
        let cutoff = limits.max_age_ms.map(|a| now_ms.saturating_sub(a));
        let shorter = limits
            .max_age_ms
            .is_some_and(|new| old.max_age_ms.is_none_or(|o| new < o));
        if cap < old_cap || shorter {
            for c in self.convs.values_mut() {
                while c.recent.len() > cap
                    || c.recent
                        .front()
                        .is_some_and(|r| cutoff.is_some_and(|t| r.ts_ms < t))
                {
                    let b = c.pop().unwrap_or(0);
                    c.bytes = c.bytes.saturating_sub(b);
                    self.cache_bytes = self.cache_bytes.saturating_sub(b);
                }
            }
        }
        let announce = (old.burst, old.per_sec, old.max_text)
            != (limits.burst, limits.per_sec, limits.max_text);
        if announce {
            let m = super::enc(&ServerMsg::Limits {
                burst: limits.burst,
                per_sec: limits.per_sec,
                max_text: u32::try_from(limits.max_text).unwrap_or(u32::MAX),
            });
            let up: Vec<_> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.client.is_some() && !s.closing)
                .map(|(&id, _)| id)
                .collect();
            debug!(sessions = up.len(), "new limits announced");
            for id in up {
                self.push_send(id, m.clone());
            }
        }
        changes
    }
}

/// The most bytes queued for one session ([`super::MAX_QUEUED_BYTES`], or more if the settings
/// allow larger history pages).
pub(super) fn queue_limit(config: &ServerConfig) -> usize {
    // A history page is sent whole: room for two of the largest (plain text; JSON escapes can
    // make a page of quotes larger, and such pages are asked for one at a time).
    let page =
        (config.max_history_page as usize).saturating_mul(config.max_text.saturating_add(512));
    super::MAX_QUEUED_BYTES.max(page.saturating_mul(2))
}
