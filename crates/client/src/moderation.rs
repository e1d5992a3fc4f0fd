//! What a moderation command (`/op`, `/kick`, `/ban`, `/mode`, …, parsed by
//! [`chirp_tui::command`]) asks of the server: one request, in the room the command names or
//! the current one. Shared by the line mode ([`crate::line`]) and the terminal UI
//! ([`crate::bridge`]), so that a command means the same wherever it is typed. The server
//! judges every request (who may do what); the client only builds it. [`describe`] puts the
//! server's room events in words, for both as well.

use chirp_chat::names::fold;
use chirp_chat::wire::{BanReq, ClientMsg, ModEvent, RoomNick, SessionInfo};
use chirp_tui::command::{self, ModCommand, Name};
use chirp_tui::safe;

/// Why no request was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModError {
    /// The JSON `error` event's code: `no_room` or `usage`.
    pub code: &'static str,
    /// What to tell the user.
    pub message: String,
}

/// The request `m` makes; `current` is the current room, if any (`m.room` overrides it).
pub fn request(m: ModCommand, current: Option<&str>) -> Result<ClientMsg, ModError> {
    let name = m.name;
    let synopsis = command::spec(name).synopsis();
    let room = || -> Result<String, ModError> {
        match m.room.as_deref().map(fold).or(current.map(str::to_owned)) {
            Some(r) => Ok(r),
            None => Err(ModError {
                code: "no_room",
                message: format!("you are in no room: name one: {synopsis}"),
            }),
        }
    };
    let target = m.target.clone().unwrap_or_default();
    let rn = || {
        room().map(|room| RoomNick {
            room,
            nick: target.clone(),
        })
    };
    Ok(match name {
        Name::Op => ClientMsg::Op(rn()?),
        Name::Deop => ClientMsg::Deop(rn()?),
        Name::Voice => ClientMsg::Voice(rn()?),
        Name::Devoice => ClientMsg::Devoice(rn()?),
        Name::Mute => ClientMsg::Mute(rn()?),
        Name::Unmute => ClientMsg::Unmute(rn()?),
        Name::Invite => ClientMsg::Invite(rn()?),
        Name::Kick => ClientMsg::Kick {
            room: room()?,
            nick: target,
            reason: m.text,
        },
        Name::Ban | Name::Unban => {
            let room = if m.room.as_deref() == Some("*") {
                None
            } else {
                Some(room()?)
            };
            // A lone range bans the range only.
            let (target, net) = if m.net.is_none() && command::is_address_range(&target) {
                (None, Some(target))
            } else {
                (Some(target), m.net)
            };
            let b = BanReq {
                room,
                target,
                net,
                reason: m.text,
            };
            if name == Name::Ban {
                ClientMsg::Ban(b)
            } else {
                ClientMsg::Unban(b)
            }
        }
        Name::Mode => ClientMsg::Mode {
            room: room()?,
            change: target,
            key: m.text,
        },
        Name::Sessions => ClientMsg::Sessions,
        Name::Kill => {
            // The parser took `NUMBER` or `NUMBER@NODE`.
            let (number, node) = match target.split_once('@') {
                Some((n, node)) => (n, Some(node.to_owned())),
                None => (target.as_str(), None),
            };
            ClientMsg::Kill {
                session: number.parse().unwrap_or(0),
                reason: m.text,
                node,
            }
        }
        _ => {
            return Err(ModError {
                code: "usage",
                message: format!("usage: {synopsis}"),
            });
        }
    })
}

/// A `sessions` answer in words, one session a line (`7@node-b alice 3f2a… 127.0.0.1:5000`:
/// the id to give `/kill`, with its node in a cluster), then the nodes that did not answer.
/// Names from the network are made harmless for a terminal.
pub fn describe_sessions(sessions: &[SessionInfo], silent: &[String]) -> String {
    let mut s = format!("{} sessions:", sessions.len());
    for x in sessions {
        let nick = if x.nick.is_empty() { "-" } else { &x.nick };
        let id = match &x.node {
            Some(n) => format!("{}@{}", x.id, safe::line(n)),
            None => x.id.to_string(),
        };
        s.push_str(&format!(
            "\n  {id} {} {} {}",
            safe::line(nick),
            safe::line(&x.fingerprint),
            x.addr
        ));
    }
    if !silent.is_empty() {
        let names: Vec<String> = silent.iter().map(|n| safe::line(n).into_owned()).collect();
        s.push_str(&format!(
            "\n  not answering (their sessions are not listed): {}",
            names.join(", ")
        ));
    }
    s
}

/// A room's moderation event in words, every name made harmless for a terminal
/// ([`chirp_tui::safe::line`]): `ann kicked bob (spam)`. An action this client does not know
/// is shown as it comes.
pub fn describe(e: &ModEvent) -> String {
    let by = safe::line(&e.by);
    let target = e.target.as_deref().map(safe::line).unwrap_or_default();
    let arg = e.arg.as_deref().map(safe::line).unwrap_or_default();
    let why = if arg.is_empty() {
        String::new()
    } else {
        format!(" ({arg})")
    };
    match e.action.as_str() {
        "owner" => format!("{target} owns the room"),
        "op" => format!("{by} made {target} an operator"),
        "deop" => format!("{by} took operator from {target}"),
        "voice" => format!("{by} gave voice to {target}"),
        "devoice" => format!("{by} took voice from {target}"),
        "mute" => format!("{by} muted {target}"),
        "unmute" => format!("{by} unmuted {target}"),
        "invite" => format!("{by} invited {target}"),
        "kick" => format!("{by} kicked {target}{why}"),
        "ban" => format!("{by} banned {target}{why}"),
        "unban" => format!("{by} lifted the ban on {target}"),
        "mode" => format!("{by} set mode {arg}"),
        other => format!("{by} {}: {target}{why}", safe::line(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, target: Option<&str>, arg: Option<&str>) -> ModEvent {
        ModEvent {
            room: "#r".into(),
            id: 1,
            ts: 0,
            by: "ann".into(),
            action: action.into(),
            target: target.map(str::to_owned),
            arg: arg.map(str::to_owned),
            history: false,
        }
    }

    #[test]
    fn events_are_described_harmlessly() {
        assert_eq!(
            describe(&event("kick", Some("bob"), Some("spam"))),
            "ann kicked bob (spam)"
        );
        assert_eq!(
            describe(&event("mode", None, Some("+i"))),
            "ann set mode +i"
        );
        assert_eq!(
            describe(&event("frob\x1b[2J", Some("b\u{202e}ob"), None)),
            "ann frob^[[2J: b<U+202E>ob"
        );
    }
}
