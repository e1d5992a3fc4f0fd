//! A server operator's `sessions` and `kill` across the nodes of a cluster.
//!
//! Session ids are a node's own, so every session is named by its node and its id there.
//! `sessions` lists this node's sessions at once and asks every other node it hears from for
//! theirs ([`Bus::ListSessions`] on `chirp.nodes`); each answers on the asking node's own
//! subject ([`Bus::SessionList`]). The answer goes to the operator when every node asked has
//! answered, or after [`CLUSTER_ASK_MS`] without the rest, which it names (`silent`). A
//! `kill` naming another node goes to that node's subject ([`Bus::KillSession`]); the node
//! disconnects the session, if it has it, and says so ([`Bus::Killed`]); the operator is told
//! if it had no such session, or did not answer in time.
//!
//! Still sans-IO: a request waits as an [`Ask`] with its deadline, which
//! [`Server::poll_timeout`] reports and [`Server::handle_timeout`] acts on. Nothing here is
//! stored. The bus is trusted as for moderation (a ban published by a node is applied too):
//! only a node's own operators' requests are checked for rights, by that node.

use super::*;
use crate::bus::Bus;
use crate::wire::{CLUSTER_ASK_MS, SessionInfo};

/// Most operator requests waiting for other nodes at once; past it, a new one is refused
/// (`busy`).
const MAX_ASKS: usize = 64;

/// A server operator's request waiting for other nodes' answers.
#[derive(Debug)]
pub(crate) struct Ask {
    /// The operator's session here.
    session: SessionId,
    /// When to answer without the nodes still waited for.
    due: i64,
    /// The nodes not heard from yet.
    waiting: BTreeSet<String>,
    what: Asked,
}

#[derive(Debug)]
enum Asked {
    /// `sessions`: what has been gathered.
    Sessions(Vec<SessionInfo>),
    /// `kill` of this session (of the one node waited for).
    Kill(u64),
}

/// The operator requests of a node: those waiting, and the next request's number.
#[derive(Debug, Default)]
pub(crate) struct Asks {
    waiting: BTreeMap<u64, Ask>,
    next: u64,
}

impl Server {
    /// This node's sessions, as `sessions` lists them (at most `max_names`, lowest ids
    /// first); each names this node in a cluster.
    fn local_sessions(&self) -> Vec<SessionInfo> {
        let node = self.node();
        let mut sessions: Vec<SessionInfo> = self
            .sessions
            .iter()
            .map(|(&id, s)| SessionInfo {
                id,
                nick: self.nick_of.get(&s.key).cloned().unwrap_or_default(),
                fingerprint: fingerprint(&s.key),
                addr: s.addr(),
                node: node.clone(),
            })
            .collect();
        sessions.sort_by_key(|s| s.id);
        sessions.truncate(self.config.max_names);
        sessions
    }

    /// A server operator's `sessions` (its rights checked): answered at once alone, or once
    /// the other nodes have answered (or [`CLUSTER_ASK_MS`] has passed).
    pub(super) fn sessions_request(
        &mut self,
        now_ms: i64,
        session: SessionId,
    ) -> Result<(), (&'static str, String)> {
        let local = self.local_sessions();
        let others: BTreeSet<String> = self
            .cluster
            .as_ref()
            .map(|c| c.nodes.keys().cloned().collect())
            .unwrap_or_default();
        if others.is_empty() {
            self.send(
                session,
                &ServerMsg::Sessions {
                    sessions: local,
                    silent: Vec::new(),
                },
            );
            return Ok(());
        }
        let ask = self.new_ask(now_ms, session, others, Asked::Sessions(local))?;
        let Some(node) = self.node() else {
            return Ok(());
        };
        self.publish(Subject::Nodes, &Bus::ListSessions { node, ask });
        Ok(())
    }

    /// A server operator's `kill` (its rights checked, `reason` too) of `target` on `node`
    /// (`None`: here).
    pub(super) fn kill_request(
        &mut self,
        now_ms: i64,
        session: SessionId,
        by: String,
        target: u64,
        node: Option<String>,
        reason: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let me = self.node();
        let node = match node {
            Some(n) if Some(&n) != me.as_ref() => n,
            _ => {
                if !self.sessions.contains_key(&target) {
                    return Err((code::NO_SUCH_NICK, format!("no session {target} here")));
                }
                self.disconnect_by_oper(target, &by, reason);
                return Ok(());
            }
        };
        let Some(me) = me else {
            return Err((
                code::NO_SUCH_NICK,
                format!("no node {node}: this server is not part of a cluster"),
            ));
        };
        let known = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.nodes.contains_key(&node));
        if !known {
            return Err((
                code::NO_SUCH_NICK,
                format!("no node {node} in this cluster (sessions names the nodes)"),
            ));
        }
        let waiting = BTreeSet::from([node.clone()]);
        let ask = self.new_ask(now_ms, session, waiting, Asked::Kill(target))?;
        let m = Bus::KillSession {
            node: me,
            to: node.clone(),
            ask,
            session: target,
            by,
            reason,
        };
        self.publish(Subject::Node(node), &m);
        Ok(())
    }

    /// Disconnects session `target` of this node on operator `by`'s word.
    fn disconnect_by_oper(&mut self, target: SessionId, by: &str, reason: Option<String>) {
        let m = match reason {
            Some(r) => format!("disconnected by server operator {by}: {r}"),
            None => format!("disconnected by server operator {by}"),
        };
        self.fail(target, None, code::KILLED, m);
        self.close_session(target, "disconnected by an operator", false);
    }

    fn new_ask(
        &mut self,
        now_ms: i64,
        session: SessionId,
        waiting: BTreeSet<String>,
        what: Asked,
    ) -> Result<u64, (&'static str, String)> {
        let Some(c) = self.cluster.as_mut() else {
            return Err((code::BUSY, "not a cluster".into()));
        };
        if c.asks.waiting.len() >= MAX_ASKS {
            return Err((
                code::BUSY,
                "too many operator requests are waiting for other nodes; ask again soon".into(),
            ));
        }
        c.asks.next = c.asks.next.wrapping_add(1);
        let ask = c.asks.next;
        c.asks.waiting.insert(
            ask,
            Ask {
                session,
                due: now_ms.saturating_add(CLUSTER_ASK_MS),
                waiting,
                what,
            },
        );
        Ok(ask)
    }

    /// When the oldest operator request stops waiting.
    pub(super) fn asks_due(&self) -> Option<i64> {
        let c = self.cluster.as_ref()?;
        c.asks.waiting.values().map(|a| a.due).min()
    }

    /// Answers the operator requests whose wait is over, without the nodes still waited for.
    pub(super) fn asks_timeout(&mut self, now_ms: i64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let due: Vec<u64> = c
            .asks
            .waiting
            .iter()
            .filter(|(_, a)| a.due <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        let done: Vec<Ask> = due
            .into_iter()
            .filter_map(|id| c.asks.waiting.remove(&id))
            .collect();
        for a in done {
            self.finish_ask(a);
        }
    }

    /// Tells the operator what came of its request (the nodes still in `waiting` did not
    /// answer).
    fn finish_ask(&mut self, a: Ask) {
        if !self.sessions.contains_key(&a.session) {
            return;
        }
        match a.what {
            Asked::Sessions(mut sessions) => {
                sessions.sort_by(|x, y| (&x.node, x.id).cmp(&(&y.node, y.id)));
                sessions.truncate(self.config.max_names);
                let silent = a.waiting.into_iter().collect();
                self.send(a.session, &ServerMsg::Sessions { sessions, silent });
            }
            Asked::Kill(target) => {
                let node = a.waiting.into_iter().next().unwrap_or_default();
                let m = format!(
                    "node {node} did not answer within {} s: session {target} there may still be connected",
                    CLUSTER_ASK_MS / 1000
                );
                self.fail(a.session, None, code::NOT_ANSWERING, m);
            }
        }
    }

    /// An operator request's bus message (`me`: this node's name).
    pub(super) fn opers_bus(&mut self, now_ms: i64, me: String, m: Bus) {
        match m {
            Bus::ListSessions { node, ask } if node != me => {
                self.heard(now_ms, &node);
                let answer = Bus::SessionList {
                    node: me,
                    to: node.clone(),
                    ask,
                    sessions: self.local_sessions(),
                };
                self.publish(Subject::Node(node), &answer);
            }
            Bus::SessionList {
                node,
                to,
                ask,
                sessions,
            } if to == me && node != me => {
                self.heard(now_ms, &node);
                let max = self.config.max_names;
                let Some(c) = self.cluster.as_mut() else {
                    return;
                };
                let Some(a) = c.asks.waiting.get_mut(&ask) else {
                    return;
                };
                let Asked::Sessions(list) = &mut a.what else {
                    return;
                };
                if !a.waiting.remove(&node) {
                    return;
                }
                // Another node's list, named by the node that sent it, whatever it says.
                list.extend(sessions.into_iter().take(max).map(|mut s| {
                    s.node = Some(node.clone());
                    s
                }));
                if a.waiting.is_empty() {
                    if let Some(a) = c.asks.waiting.remove(&ask) {
                        self.finish_ask(a);
                    }
                }
            }
            Bus::KillSession {
                node,
                to,
                ask,
                session,
                by,
                reason,
            } if to == me && node != me => {
                self.heard(now_ms, &node);
                let found = self.sessions.contains_key(&session);
                if found {
                    // Checked by the asking node; a reason that does not pass here is left out.
                    let reason = reason.filter(|r| names::topic(r).is_ok());
                    let by = if names::nick(&by).is_ok() {
                        by
                    } else {
                        "?".into()
                    };
                    info!(
                        session,
                        by,
                        from = node,
                        "session disconnected by an operator of another node"
                    );
                    self.disconnect_by_oper(session, &by, reason);
                }
                let answer = Bus::Killed {
                    node: me,
                    to: node.clone(),
                    ask,
                    found,
                };
                self.publish(Subject::Node(node), &answer);
            }
            Bus::Killed {
                node,
                to,
                ask,
                found,
            } if to == me && node != me => {
                self.heard(now_ms, &node);
                let Some(c) = self.cluster.as_mut() else {
                    return;
                };
                let ours =
                    c.asks.waiting.get(&ask).is_some_and(|a| {
                        matches!(a.what, Asked::Kill(_)) && a.waiting.contains(&node)
                    });
                if !ours {
                    return;
                }
                let Some(a) = c.asks.waiting.remove(&ask) else {
                    return;
                };
                if !found && self.sessions.contains_key(&a.session) {
                    let Asked::Kill(target) = a.what else {
                        return;
                    };
                    let m = format!("no session {target} on node {node}");
                    self.fail(a.session, None, code::NO_SUCH_NICK, m);
                }
            }
            _ => {}
        }
    }
}
