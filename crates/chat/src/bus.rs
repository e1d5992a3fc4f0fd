//! What the nodes of a cluster tell each other over the message bus (NATS): committed
//! messages, presence, nick bindings and node liveness. JSON, one object per bus message,
//! tagged by `"t"`. Durability never depends on the bus: a message is on the bus only after
//! the database committed it, and a node that misses one finds it by its id gap (or by
//! re-reading the database's high-water mark after a bus reconnect) and reads it from the
//! database.
//!
//! Every decoder is checked: a bus message that does not parse, or names a key that is not
//! 32 bytes of hex, is dropped and counted, never trusted.
//!
//! # Subjects
//!
//! - `chirp.room.<hex of the room name>`: a room's messages and presence, and requests for its
//!   member list. A node subscribes while it has members in the room.
//! - `chirp.user.<hex of the key>`: DMs to or from a key, and its read markers. A node
//!   subscribes while the key has a session on it.
//! - `chirp.nicks`: nick bindings and moderation (role, ban, mute, invitation and mode
//!   changes; kicks), every node.
//! - `chirp.nodes`: node heartbeats and goodbyes, and server operators' requests for every
//!   node's sessions, every node.
//! - `chirp.node.<hex of the node's name>`: what is for one node alone (the answers to its
//!   requests for sessions, and kills of its sessions); each node follows its own.

use serde::{Deserialize, Serialize};

use crate::server::Key;
use crate::wire::{Presence, SessionInfo};

/// Most rooms a heartbeat lists (the busiest): what `list` shows of the other nodes.
pub const MAX_BEAT_ROOMS: usize = 256;

/// Largest bus message decoded (a message of the largest text, escaped, with room to spare).
pub const MAX_BUS_MESSAGE: usize = 512 * 1024;

/// A bus subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A room's traffic.
    Room(String),
    /// A key's DMs.
    User(Key),
    /// Nick bindings.
    Nicks,
    /// Node liveness.
    Nodes,
    /// What is for one node (by name).
    Node(String),
}

impl Subject {
    /// The NATS subject: names are hex-encoded, so that no room name (any Unicode, dots
    /// included) can form a wildcard or another room's subject.
    pub fn name(&self) -> String {
        let hex = data_encoding::HEXLOWER;
        match self {
            Subject::Room(r) => format!("chirp.room.{}", hex.encode(r.as_bytes())),
            Subject::User(k) => format!("chirp.user.{}", hex.encode(k)),
            Subject::Nicks => "chirp.nicks".into(),
            Subject::Nodes => "chirp.nodes".into(),
            Subject::Node(n) => format!("chirp.node.{}", hex.encode(n.as_bytes())),
        }
    }
}

/// A key as 64 hex digits on the bus.
mod hexkey {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::HEXLOWER.encode(k))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <&str>::deserialize(d)?;
        let v = data_encoding::HEXLOWER
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a key is 32 bytes"))
    }
}

mod hexkey_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(k: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match k {
            Some(k) => super::hexkey::serialize(k, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let s = Option::<&str>::deserialize(d)?;
        s.map(|s| {
            let v = data_encoding::HEXLOWER
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom)?;
            v.try_into()
                .map_err(|_| serde::de::Error::custom("a key is 32 bytes"))
        })
        .transpose()
    }
}

/// A member of a room, as one node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's key.
    #[serde(with = "hexkey")]
    pub key: Key,
    /// Its nick.
    pub nick: String,
}

/// A moderation entry set or cleared on one node (`scope`: a room, or `""` for the server;
/// the rest as in [`chirp_store::ModEntry`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModChange {
    /// The room, or `""`.
    pub scope: String,
    /// The kind of entry.
    pub kind: String,
    /// What it applies to.
    pub subject: String,
    /// Its value (`None`: cleared).
    #[serde(default)]
    pub value: Option<String>,
    /// Who changed it (a nick).
    #[serde(default)]
    pub by: String,
    /// When (ms since the epoch): of two owners claimed at once, the earlier wins.
    #[serde(default)]
    pub ts: i64,
}

/// One bus message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Bus {
    /// A committed message (room message or DM), as stored.
    Msg {
        /// Conversation.
        conv: String,
        /// Its id (from the database).
        id: u64,
        /// Server timestamp (ms since the epoch).
        ts: i64,
        /// Sender's key.
        #[serde(with = "hexkey")]
        from: Key,
        /// Sender's nick.
        nick: String,
        /// DM recipient's key.
        #[serde(with = "hexkey_opt", default)]
        to: Option<Key>,
        /// DM recipient's nick.
        #[serde(default)]
        to_nick: Option<String>,
        /// 0: message, 1: action.
        kind: u8,
        /// The text.
        text: String,
        /// The sending client's reference.
        #[serde(default)]
        cref: Option<(u64, u64)>,
        /// An edit, deletion or reaction: the message it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<u64>,
        /// A reaction: its emoji's count after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// `from` (`nick`) is typing in `conv` (on the room's subject, or on the DM recipient
    /// `to`'s): the nodes show it to their sessions of the conversation.
    Typing {
        /// Where it was typed.
        node: String,
        /// The conversation.
        conv: String,
        /// Who types.
        #[serde(with = "hexkey")]
        from: Key,
        /// Their nick.
        nick: String,
        /// A DM's recipient.
        #[serde(with = "hexkey_opt", default)]
        to: Option<Key>,
    },
    /// A presence change of a member on node `node`.
    Presence {
        /// Where the member is connected.
        node: String,
        /// The room.
        room: String,
        /// The member's key.
        #[serde(with = "hexkey")]
        key: Key,
        /// What happened (with the nick).
        ev: Presence,
    },
    /// Node `node` asks for the members of `room` (it starts following the room).
    Who {
        /// Who asks.
        node: String,
        /// The room.
        room: String,
    },
    /// The members of `room` connected to node `node` (an answer to [`Bus::Who`]).
    Members {
        /// Whose members.
        node: String,
        /// The room.
        room: String,
        /// The members.
        members: Vec<Member>,
    },
    /// `key` now holds `nick` (`None`: no nick any more).
    Nick {
        /// The key.
        #[serde(with = "hexkey")]
        key: Key,
        /// Its nick.
        nick: Option<String>,
        /// Its previous nick, when it was renamed while connected...
        #[serde(default)]
        old: Option<String>,
        /// ...and the rooms it is in, whose members are told.
        #[serde(default)]
        rooms: Vec<String>,
    },
    /// `by` set the topic of `room` (on node `node`).
    Topic {
        /// Where it was set.
        node: String,
        /// The room.
        room: String,
        /// The topic.
        topic: String,
        /// Who set it.
        by: String,
    },
    /// Node `node` is alive; its busiest rooms and how many members each has there (for
    /// `list`).
    Beat {
        /// The node.
        node: String,
        /// `(room, members on that node)`, at most [`MAX_BEAT_ROOMS`].
        #[serde(default)]
        rooms: Vec<(String, u64)>,
    },
    /// A moderation entry changed (every node applies it, and enforces a ban).
    Mod(ModChange),
    /// An operator put `key` out of `room`: the nodes it is connected to put it out there.
    Kick {
        /// The room.
        room: String,
        /// The member's key.
        #[serde(with = "hexkey")]
        key: Key,
        /// Who did it.
        by: String,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
        /// Banned as well.
        #[serde(default)]
        banned: bool,
    },
    /// `key` moved its read marker in `conv` to `id` (stored by the node that says so): the
    /// nodes where it has sessions tell them.
    Marker {
        /// The user.
        #[serde(with = "hexkey")]
        key: Key,
        /// The conversation.
        conv: String,
        /// The last id read.
        id: u64,
    },
    /// A server operator on node `node` asks every node for its sessions (on
    /// [`Subject::Nodes`]); each answers with [`Bus::SessionList`] on `node`'s subject.
    ListSessions {
        /// Who asks.
        node: String,
        /// The asking node's number for the request, given back in the answers.
        ask: u64,
    },
    /// The sessions of node `node` (at most the server's `max_names`), for `to`'s request
    /// `ask`.
    SessionList {
        /// Whose sessions.
        node: String,
        /// Who asked.
        to: String,
        /// The request.
        ask: u64,
        /// The sessions.
        sessions: Vec<SessionInfo>,
    },
    /// A server operator (`by`, on node `node`) disconnects session `session` of node `to`
    /// (on `to`'s subject); `to` answers with [`Bus::Killed`].
    KillSession {
        /// Who asks.
        node: String,
        /// The node of the session.
        to: String,
        /// The asking node's number for the request.
        ask: u64,
        /// The session.
        session: u64,
        /// The operator's nick.
        by: String,
        /// Why, told to the session.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Node `node`'s answer to `to`'s [`Bus::KillSession`] `ask`: whether the session was
    /// there (and is now disconnected).
    Killed {
        /// The node of the session.
        node: String,
        /// Who asked.
        to: String,
        /// The request.
        ask: u64,
        /// The session was there.
        found: bool,
    },
    /// Node `node` is shutting down: its members are gone.
    Bye {
        /// The node.
        node: String,
    },
}

impl Bus {
    /// Encodes as JSON.
    pub fn encode(&self) -> bytes::Bytes {
        // Serialising these types cannot fail (no maps with non-string keys, no I/O).
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// Decodes untrusted bytes.
    pub fn decode(data: &[u8]) -> Result<Bus, String> {
        if data.len() > MAX_BUS_MESSAGE {
            return Err(format!("{} bytes, more than {MAX_BUS_MESSAGE}", data.len()));
        }
        serde_json::from_slice(data).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_keys() {
        let cases = [
            Bus::Msg {
                conv: "#a".into(),
                id: 7,
                ts: 9,
                from: [1; 32],
                nick: "ann".into(),
                to: Some([2; 32]),
                to_nick: Some("bob".into()),
                kind: 1,
                text: "hi \"there\"".into(),
                cref: Some((3, 4)),
                target: None,
                count: None,
            },
            Bus::Presence {
                node: "n1".into(),
                room: "#a".into(),
                key: [3; 32],
                ev: Presence::Quit {
                    nick: "cy".into(),
                    reason: "timed out".into(),
                },
            },
            Bus::Members {
                node: "n1".into(),
                room: "#a".into(),
                members: vec![Member {
                    key: [4; 32],
                    nick: "d".into(),
                }],
            },
            Bus::Nick {
                key: [5; 32],
                nick: Some("e".into()),
                old: Some("f".into()),
                rooms: vec!["#a".into()],
            },
            Bus::Topic {
                node: "n1".into(),
                room: "#a".into(),
                topic: "t".into(),
                by: "ann".into(),
            },
            Bus::Beat {
                node: "n2".into(),
                rooms: vec![("#a".into(), 3)],
            },
            Bus::Mod(ModChange {
                scope: "#a".into(),
                kind: "ban".into(),
                subject: "net:203.0.113.0/24".into(),
                value: Some("spam".into()),
                by: "ann".into(),
                ts: 5,
            }),
            Bus::Kick {
                room: "#a".into(),
                key: [6; 32],
                by: "ann".into(),
                reason: None,
                banned: false,
            },
            Bus::Marker {
                key: [7; 32],
                conv: "#a".into(),
                id: 12,
            },
            Bus::ListSessions {
                node: "n1".into(),
                ask: 3,
            },
            Bus::SessionList {
                node: "n2".into(),
                to: "n1".into(),
                ask: 3,
                sessions: vec![SessionInfo {
                    id: 9,
                    nick: "ann".into(),
                    fingerprint: "ab".into(),
                    addr: "[::1]:7667".parse().expect("addr"),
                    node: Some("n2".into()),
                }],
            },
            Bus::KillSession {
                node: "n1".into(),
                to: "n2".into(),
                ask: 4,
                session: 9,
                by: "root".into(),
                reason: Some("spam".into()),
            },
            Bus::Killed {
                node: "n2".into(),
                to: "n1".into(),
                ask: 4,
                found: true,
            },
        ];
        for b in cases {
            assert_eq!(Bus::decode(&b.encode()), Ok(b));
        }
        for bad in [
            &br#"{"t":"nick","key":"00","nick":null}"#[..],
            br#"{"t":"beat"}"#,
            br#"{"t":"beat","node":"x","extra":1}"#,
            br#"not json"#,
            br#"{"t":"nick","key":"zz00000000000000000000000000000000000000000000000000000000000000","nick":"a"}"#,
        ] {
            assert!(Bus::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(Bus::decode(&vec![b' '; MAX_BUS_MESSAGE + 1]).is_err());
    }

    #[test]
    fn a_mod_change_decodes_as_a_node_publishes_it() {
        let m = Bus::Mod(ModChange {
            scope: "#mod".into(),
            kind: "owner".into(),
            subject: "01".repeat(32),
            value: Some(String::new()),
            by: "alice".into(),
            ts: 1_765_100_000_000,
        });
        let data = m.encode();
        assert_eq!(
            Bus::decode(&data),
            Ok(m),
            "{}",
            String::from_utf8_lossy(&data)
        );
    }

    #[test]
    fn subjects_cannot_be_wildcards() {
        let s = Subject::Room("#a.>*".into()).name();
        assert_eq!(s, "chirp.room.23612e3e2a");
        assert!(!s["chirp.room.".len()..].contains(['.', '*', '>']));
        let s = Subject::Node("host.a-1>*".into()).name();
        assert_eq!(s, "chirp.node.686f73742e612d313e2a");
    }
}
