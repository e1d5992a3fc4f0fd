//! The client [`Session`] in virtual time: a netsim [`Pair`] whose side A is the client's
//! endpoint, driven by the session exactly as the tokio driver drives it, and whose side B is a
//! scripted server speaking the chat protocol. Minutes of reconnects and pacing run in
//! milliseconds, and each run is the same every time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chirp_chat::client::{ClientConfig, Event, Io, KeyCheck, Session, Target, driver};
use chirp_chat::wire::{ClientMsg, JoinReq, Msg, ServerMsg, code};
use chirp_netsim::{LinkConfig, Pair, Path};
use chirp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event as T};

/// The scripted server: answers hello, joins, says (ack, and the own echo once per
/// `(client, c)` when `hello` asks for it or `force_echo` is set, as a server predating
/// `echo` does) and history requests.
#[derive(Default)]
struct Server {
    /// Answer `say` (when false, messages are received and never acknowledged).
    ack: bool,
    burst: u32,
    per_sec: u32,
    max_text: u32,
    /// `(client, c)` → stored id.
    stored: HashMap<(u64, u64), u64>,
    next_id: u64,
    /// Every `say` received, with the virtual time it came, duplicates included.
    says: Vec<(Instant, u64, String)>,
    /// Hellos received.
    hellos: Vec<ClientMsg>,
    /// `client` and `echo` of each connection's `hello`.
    clients: HashMap<ConnectionHandle, (u64, bool)>,
    /// Echo even when `hello` says `echo: false`.
    force_echo: bool,
}

impl Server {
    fn new() -> Self {
        Server {
            ack: true,
            burst: 10,
            per_sec: 5,
            max_text: 8192,
            ..Server::default()
        }
    }

    fn send(ep: &mut Endpoint, conn: ConnectionHandle, m: &ServerMsg) {
        ep.send(conn, &m.encode())
            .expect("the scripted server's sends fit");
    }

    fn on_event(&mut self, now: Instant, ep: &mut Endpoint, ev: T) {
        let T::Message { conn, data } = ev else {
            return;
        };
        let m = ClientMsg::decode(&data).expect("the session sends valid requests");
        match m {
            ClientMsg::Hello {
                ref nick,
                client,
                ref rooms,
                echo,
                ..
            } => {
                self.clients.insert(conn, (client, echo || self.force_echo));
                let welcome = ServerMsg::Welcome {
                    v: 1,
                    nick: nick.clone(),
                    burst: self.burst,
                    per_sec: self.per_sec,
                    max_text: self.max_text,
                };
                Self::send(ep, conn, &welcome);
                for JoinReq { room, .. } in rooms {
                    Self::joined(ep, conn, room);
                }
                self.hellos.push(m);
            }
            ClientMsg::Join(JoinReq { room, .. }) => Self::joined(ep, conn, &room),
            ClientMsg::Say { c, room, text, .. } => {
                self.says.push((now, c, text.clone()));
                if !self.ack {
                    return;
                }
                let (client, echo) = self.clients[&conn];
                let room = room.expect("these tests talk in rooms");
                let fresh = !self.stored.contains_key(&(client, c));
                let next = self.next_id + 1;
                let id = *self.stored.entry((client, c)).or_insert(next);
                if fresh {
                    self.next_id = id;
                }
                if fresh && echo {
                    let echo = Msg {
                        conv: room.clone(),
                        room: Some(room.clone()),
                        id,
                        ts: 1,
                        from: "me".into(),
                        to: None,
                        text,
                        action: false,
                        history: false,
                        c: Some(c),
                        ..Msg::default()
                    };
                    Self::send(ep, conn, &ServerMsg::Msg(echo));
                }
                let ack = ServerMsg::Ack {
                    c,
                    conv: room,
                    id,
                    ts: 1,
                };
                Self::send(ep, conn, &ack);
            }
            ClientMsg::History { id, room, .. } => {
                let end = ServerMsg::HistoryEnd {
                    id,
                    conv: room.unwrap_or_default(),
                    count: 0,
                };
                Self::send(ep, conn, &end);
            }
            _ => {}
        }
    }

    fn joined(ep: &mut Endpoint, conn: ConnectionHandle, room: &str) {
        let joined = ServerMsg::Joined {
            room: room.to_owned(),
            topic: String::new(),
            members: vec!["me".into()],
            more: 0,
        };
        Self::send(ep, conn, &joined);
    }
}

/// The client session on side A, the scripted server on side B.
struct Rig {
    pair: Pair,
    session: Session,
    server: Server,
    key_check: Option<KeyCheck>,
    /// The session's events with the virtual time each was polled.
    events: Vec<(Instant, Event)>,
}

fn config(rig_server: std::net::SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(rig_server, "me");
    c.rooms = vec!["#r".into()];
    c.idle_timeout = Duration::from_secs(5);
    c.give_up_after = Duration::from_secs(10);
    c
}

impl Rig {
    fn new(seed: u64, link: LinkConfig, tweak: impl FnOnce(&mut ClientConfig)) -> Rig {
        let server_addr: std::net::SocketAddr = ([10, 0, 0, 2], 5000).into();
        let mut cfg = config(server_addr);
        tweak(&mut cfg);
        let mut server_ep = EndpointConfig::default();
        server_ep.transport.idle_timeout = Duration::from_secs(5);
        let pair = Pair::with_path(
            driver::endpoint_config(&cfg),
            server_ep,
            Path::symmetric(link, seed),
            seed,
        );
        assert_eq!(pair.b.addr, server_addr);
        let key_check = cfg.server_key_check.clone();
        let session = Session::new(cfg, pair.now, seed);
        Rig {
            pair,
            session,
            server: Server::new(),
            key_check,
            events: Vec::new(),
        }
    }

    /// Carries out the session's requests on endpoint A (as `driver::perform` does on a
    /// transport handle) and collects its events.
    fn pump(&mut self) {
        let now = self.pair.now;
        let ep = &mut self.pair.a.endpoint;
        while let Some(io) = self.session.poll_io(now) {
            match io {
                Io::Connect { server } => {
                    let r = ep.connect(now, server);
                    self.session.connect_result(now, r);
                }
                Io::Send { conn, data } => {
                    let r = ep.send(conn, &data);
                    self.session.send_result(now, conn, r);
                }
                Io::Close { conn, reason } => ep.close(now, conn, 0, reason),
                Io::CheckKey { conn, server, key } => {
                    let v = self.key_check.as_ref().map_or(Ok(()), |k| k(server, &key));
                    self.session.key_verdict(now, conn, v);
                }
                Io::VerifyKey { conn, accept } => {
                    if accept {
                        ep.accept_key(now, conn);
                    } else {
                        ep.refuse_key(now, conn);
                    }
                }
                Io::Stats { conn } => {
                    let s = ep.stats(conn);
                    self.session.stats_result(s);
                }
            }
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push((now, e));
        }
    }

    /// One round at the current instant: the network and both endpoints, then the session's
    /// and the server's inputs, then the clock jumps to the next thing that can happen (no
    /// further than `limit`).
    fn step(&mut self, limit: Instant) {
        let now = self.pair.now;
        for _ in 0..10_000 {
            self.pump();
            // Everything due now, without moving the clock: events are handled when they
            // happen, and what the session asked for goes out at once.
            self.pair.step_until(now).expect("the network settles");
            let a = std::mem::take(&mut self.pair.a.events);
            let b = std::mem::take(&mut self.pair.b.events);
            let due = self.session.poll_timeout().is_some_and(|t| t <= now);
            if a.is_empty() && b.is_empty() && !due {
                break;
            }
            for ev in a {
                self.session.handle_transport(now, ev);
            }
            for ev in b {
                self.server.on_event(now, &mut self.pair.b.endpoint, ev);
            }
            if due {
                self.session.handle_timeout(now);
            }
        }
        let next = [
            self.pair.next_wakeup(),
            self.session.poll_timeout(),
            Some(limit),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(limit);
        if next > now {
            self.pair.now = next;
        }
    }

    /// Runs until `done` or until `budget` of virtual time has passed (then panics).
    fn run_until(&mut self, budget: Duration, mut done: impl FnMut(&Rig) -> bool) {
        let deadline = self.pair.now + budget;
        for _ in 0..1_000_000 {
            if done(self) {
                return;
            }
            assert!(
                self.pair.now < deadline,
                "not done within {budget:?}; events: {:#?}",
                self.events.iter().map(|e| &e.1).collect::<Vec<_>>()
            );
            self.step(deadline);
        }
        panic!("no progress after a million steps");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.pair.now + d;
        self.run_until(d + Duration::from_secs(1), |r| r.pair.now >= until);
    }

    fn say(&mut self, text: &str) -> u64 {
        let now = self.pair.now;
        self.session
            .say(now, Target::Room("#r".into()), text.to_owned(), false)
    }

    fn welcomed(&self) -> usize {
        self.count(|e| matches!(e, Event::Welcome { .. }))
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| f(e)).count()
    }

    fn delivered(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Delivered { c, .. } => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn finished(&self) -> Option<usize> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::Finished { undelivered } => Some(*undelivered),
            _ => None,
        })
    }

    /// The server restarts: a new endpoint (no connection, new keys), the same address.
    fn restart_server(&mut self, ack: bool) {
        let mut cfg = EndpointConfig::default();
        cfg.transport.idle_timeout = Duration::from_secs(5);
        self.pair.b.endpoint = Endpoint::new(cfg, 99);
        self.pair.b.events.clear();
        self.server.ack = ack;
        self.server.clients.clear();
    }
}

fn ideal() -> LinkConfig {
    LinkConfig::ideal(Duration::from_millis(10))
}

#[test]
fn connects_says_hello_and_joins_the_first_rooms() {
    let mut rig = Rig::new(1, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    let ClientMsg::Hello { rooms, nick, .. } = &rig.server.hellos[0] else {
        unreachable!("only hellos are kept")
    };
    assert_eq!(nick, "me");
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room, "#r");
    rig.run_until(Duration::from_secs(1), |r| {
        r.count(|e| matches!(e, Event::Server(ServerMsg::Joined { .. }))) == 1
    });
}

#[test]
fn pending_messages_go_again_with_the_same_sequence_numbers_after_a_server_restart() {
    let mut rig = Rig::new(2, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    // The server takes the messages and crashes before acknowledging them.
    rig.server.ack = false;
    let cs: Vec<u64> = (0..3).map(|i| rig.say(&format!("line {i}"))).collect();
    rig.run_until(Duration::from_secs(5), |r| r.server.says.len() == 3);
    rig.restart_server(true);
    // The session notices (a stateless reset answers its next packet, or the idle timeout),
    // reconnects with backoff, says hello again and sends the pending messages again.
    rig.run_until(Duration::from_secs(30), |r| r.delivered().len() == 3);
    assert_eq!(rig.delivered(), cs, "each delivered once, in order");
    assert_eq!(rig.welcomed(), 2);
    let resent: Vec<u64> = rig.server.says[3..].iter().map(|s| s.1).collect();
    assert_eq!(resent, cs, "the same client sequence numbers, in order");
    assert!(rig.count(|e| matches!(e, Event::Disconnected { .. })) >= 1);
    // The hello after the restart resumes the room.
    let ClientMsg::Hello { rooms, .. } = &rig.server.hellos[1] else {
        unreachable!("only hellos are kept")
    };
    assert_eq!(rooms[0].room, "#r");
}

#[test]
fn reconnects_back_off_exponentially_with_jitter_up_to_the_maximum() {
    let mut rig = Rig::new(3, ideal(), |c| {
        c.backoff_min = Duration::from_millis(250);
        c.backoff_max = Duration::from_secs(4);
        c.idle_timeout = Duration::from_secs(1);
    });
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    // The server vanishes for good: no answer to anything.
    let until = rig.pair.now + Duration::from_secs(3600);
    rig.pair.path.a_to_b.blackout_until(until);
    rig.run_until(Duration::from_secs(120), |r| {
        r.count(|e| matches!(e, Event::Disconnected { .. })) >= 7
    });
    let delays: Vec<Duration> = rig
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Disconnected { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    // The first retry after losing a working session comes after the minimum, as does the
    // retry after the first failed attempt; from then on each wait doubles.
    for (k, d) in delays.iter().enumerate() {
        let base = Duration::from_millis(250)
            .saturating_mul(1 << k.saturating_sub(1))
            .min(Duration::from_secs(4));
        assert!(
            *d >= base.mul_f64(0.75) && *d <= base.mul_f64(1.25),
            "attempt {k}: {d:?} is not within ±25 % of {base:?} ({delays:?})"
        );
    }
    // Each attempt is announced, numbered from 1 after the last welcome.
    let attempts: Vec<u32> = rig
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Connecting { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts[0], 1);
    assert!(
        attempts.windows(2).skip(1).all(|w| w[1] == w[0] + 1),
        "{attempts:?}"
    );
}

#[test]
fn pacing_holds_requests_to_the_servers_rate_and_says_so() {
    let mut rig = Rig::new(4, ideal(), |_| {});
    rig.server.burst = 3;
    rig.server.per_sec = 5;
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    let cs: Vec<u64> = (0..13).map(|i| rig.say(&format!("line {i}"))).collect();
    rig.run_until(Duration::from_secs(10), |r| r.delivered().len() == 13);
    assert_eq!(rig.delivered(), cs);
    // 3 at once, then one every 200 ms: the last of 13 no sooner than 2 s after the first.
    let first = rig.server.says[0].0;
    let last = rig.server.says[12].0;
    assert!(
        last - first >= Duration::from_millis(1_950),
        "{:?}",
        last - first
    );
    for w in rig.server.says[3..].windows(2) {
        assert!(w[1].0 - w[0].0 >= Duration::from_millis(195), "paced 5/s");
    }
    // The application heard that requests were held back, and when they had all gone.
    let pacing: Vec<(usize, u32)> = rig
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Pacing { held, per_sec, .. } => Some((*held, *per_sec)),
            _ => None,
        })
        .collect();
    assert_eq!(pacing, vec![(10, 5), (0, 5)], "one start and one end");
}

#[test]
fn a_message_too_long_is_refused_at_once_and_the_queue_goes_on() {
    let mut rig = Rig::new(5, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    // Longer than one transport message can carry, and longer than the server takes.
    let huge = rig.say(&"y".repeat(65_600));
    let long = rig.say(&"y".repeat(9_000));
    let after = rig.say("after");
    rig.run_until(Duration::from_secs(5), |r| r.delivered() == vec![after]);
    let refused: Vec<(u64, String)> = rig
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Refused { c, code, .. } => Some((*c, code.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            (huge, code::BAD_TEXT.to_owned()),
            (long, code::BAD_TEXT.to_owned())
        ]
    );
    assert_eq!(rig.server.says.len(), 1, "only the short one went out");
    // And end of input still ends the session.
    let now = rig.pair.now;
    rig.session.finish(now);
    rig.run_until(Duration::from_secs(5), |r| r.finished().is_some());
    assert_eq!(rig.finished(), Some(0));
}

#[test]
fn a_long_message_queued_before_welcome_is_refused_once_the_limit_is_known() {
    let mut rig = Rig::new(6, ideal(), |_| {});
    rig.server.max_text = 100;
    let long = rig.say(&"z".repeat(101));
    let ok = rig.say("fits");
    rig.run_until(Duration::from_secs(5), |r| r.delivered() == vec![ok]);
    assert!(rig.events.iter().any(
        |(_, e)| matches!(e, Event::Refused { c, code, .. } if *c == long && code == code::BAD_TEXT)
    ));
}

#[test]
fn finish_waits_for_every_acknowledgement_then_closes() {
    let mut rig = Rig::new(7, ideal().with_loss(0.2), |_| {});
    rig.run_until(Duration::from_secs(10), |r| r.welcomed() == 1);
    let cs: Vec<u64> = (0..8).map(|i| rig.say(&format!("line {i}"))).collect();
    let now = rig.pair.now;
    rig.session.finish(now);
    rig.run_until(Duration::from_secs(30), |r| r.finished().is_some());
    assert_eq!(rig.finished(), Some(0));
    assert_eq!(
        rig.delivered(),
        cs,
        "every message acknowledged before the end"
    );
    let finished_at = rig
        .events
        .iter()
        .position(|(_, e)| matches!(e, Event::Finished { .. }))
        .expect("finished");
    assert_eq!(
        finished_at,
        rig.events.len() - 1,
        "Finished is the last event"
    );
    assert!(rig.session.is_ended());
    assert_eq!(rig.session.poll_timeout(), None, "nothing left to do");
}

#[test]
fn finish_gives_up_on_a_server_that_is_gone_and_counts_what_was_lost() {
    let mut rig = Rig::new(8, ideal(), |c| c.give_up_after = Duration::from_secs(10));
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    rig.server.ack = false;
    rig.say("one");
    rig.say("two");
    rig.run_until(Duration::from_secs(5), |r| r.server.says.len() == 2);
    let until = rig.pair.now + Duration::from_secs(3600);
    rig.pair.path.a_to_b.blackout_until(until);
    let now = rig.pair.now;
    rig.session.finish(now);
    rig.run_until(Duration::from_secs(60), |r| r.finished().is_some());
    assert_eq!(rig.finished(), Some(2));
}

#[test]
fn a_duplicate_message_from_the_server_is_shown_once() {
    let mut rig = Rig::new(9, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    let conn = rig.pair.b.endpoint.connections().next().expect("connected");
    let m = Msg {
        conv: "#r".into(),
        room: Some("#r".into()),
        id: 7,
        ts: 1,
        from: "other".into(),
        to: None,
        text: "hi".into(),
        action: false,
        history: false,
        c: None,
        ..Msg::default()
    };
    for _ in 0..3 {
        Server::send(&mut rig.pair.b.endpoint, conn, &ServerMsg::Msg(m.clone()));
    }
    rig.run_for(Duration::from_secs(1));
    assert_eq!(rig.count(|e| matches!(e, Event::Message(_))), 1);
}

#[test]
fn history_requests_are_numbered_and_the_answer_names_its_request() {
    let mut rig = Rig::new(10, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    let a = rig.session.history(Target::Room("#r".into()), None, 10);
    let b = rig.session.history(Target::Room("#r".into()), Some(5), 10);
    assert_ne!(a, b);
    rig.run_for(Duration::from_secs(1));
    let ids: Vec<Option<u64>> = rig
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Server(ServerMsg::HistoryEnd { id, .. }) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![Some(a), Some(b)]);
}

#[test]
fn a_refused_server_key_ends_the_session_before_hello() {
    let refuse: KeyCheck =
        std::sync::Arc::new(|_at, _key: &[u8; 32]| Err("not the pinned key".into()));
    let mut rig = Rig::new(11, ideal(), |c| c.server_key_check = Some(refuse));
    rig.run_until(Duration::from_secs(5), |r| r.session.is_ended());
    assert!(
        rig.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Fatal(m) if m == "not the pinned key"))
    );
    assert!(
        rig.server.hellos.is_empty(),
        "nothing of ours reached the server"
    );
    assert_eq!(
        rig.count(|e| matches!(e, Event::Connecting { .. })),
        1,
        "no retry"
    );
}

#[test]
fn sessions_in_the_same_seed_behave_the_same() {
    let run = |seed| {
        let mut rig = Rig::new(seed, ideal().with_loss(0.1), |_| {});
        rig.run_until(Duration::from_secs(10), |r| r.welcomed() == 1);
        for i in 0..5 {
            rig.say(&format!("line {i}"));
        }
        rig.run_until(Duration::from_secs(30), |r| r.delivered().len() == 5);
        rig.events
            .iter()
            .map(|(t, e)| (*t - rig.pair.start, format!("{e:?}")))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(12), run(12));
}

#[test]
fn a_reconnect_resumes_each_room_after_the_last_message_seen() {
    let mut rig = Rig::new(13, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    for i in 0..3 {
        rig.say(&format!("line {i}"));
    }
    rig.run_until(Duration::from_secs(5), |r| r.delivered().len() == 3);
    let last = rig.server.next_id;
    rig.restart_server(true);
    rig.run_until(Duration::from_secs(30), |r| r.welcomed() == 2);
    let ClientMsg::Hello { rooms, client, .. } = &rig.server.hellos[1] else {
        unreachable!("only hellos are kept")
    };
    let ClientMsg::Hello { client: first, .. } = &rig.server.hellos[0] else {
        unreachable!("only hellos are kept")
    };
    assert_eq!(
        client, first,
        "the same client id, so resent messages are recognised"
    );
    assert_eq!(rooms.len(), 1);
    assert_eq!((rooms[0].room.as_str(), rooms[0].after), ("#r", Some(last)));
    // Our own echoes were shown once each, and nothing after the reconnect repeats them.
    assert_eq!(rig.count(|e| matches!(e, Event::Message(_))), 3);
}

/// The connection dies in the endpoint (a stateless reset from a restarted server) while its
/// `Closed` event is still on its way to the session: a send into it fails as "closed" or
/// "unknown connection". That is no reason to drop the message: it goes again on the next
/// connection. (A crash test with real processes lost up to 60 messages of 300 this way.)
#[test]
fn a_send_into_a_connection_that_just_died_goes_again_on_the_next() {
    let mut rig = Rig::new(14, ideal(), |_| {});
    rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
    let conn = rig.session.connection().expect("connected");
    let now = rig.pair.now;
    // Gone in the endpoint; its `Closed` waits in the event queue (not yet handed over).
    rig.pair.a.endpoint.abort(now, conn, 0, "gone");
    let cs: Vec<u64> = (0..5).map(|i| rig.say(&format!("line {i}"))).collect();
    rig.pump();
    assert!(
        rig.events
            .iter()
            .all(|(_, e)| !matches!(e, Event::Refused { .. })),
        "nothing refused: {:?}",
        rig.events
    );
    rig.run_until(Duration::from_secs(30), |r| r.delivered().len() == 5);
    assert_eq!(rig.delivered(), cs);
}

/// The session asks for no own echo (`echo: false`) and shows its line from the `ack`; from a
/// server that echoes anyway (one that predates `echo`) it shows the echo and the `ack` only
/// confirms. Either way the line is shown once, with its `c`, before its `Delivered`, and a
/// repeated `ack` shows nothing more.
#[test]
fn the_own_line_is_shown_once_with_or_without_the_echo() {
    for force_echo in [false, true] {
        let mut rig = Rig::new(21, ideal(), |_| {});
        rig.server.force_echo = force_echo;
        rig.run_until(Duration::from_secs(5), |r| r.welcomed() == 1);
        let ClientMsg::Hello { echo, .. } = &rig.server.hellos[0] else {
            panic!("not a hello");
        };
        assert!(!echo, "the session asks for no echo");
        let c = rig.say("hi there");
        rig.run_until(Duration::from_secs(5), |r| r.delivered() == [c]);
        let own: Vec<usize> = rig
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, (_, e))| match e {
                Event::Message(m) if m.c == Some(c) => {
                    assert_eq!(
                        (m.text.as_str(), m.conv.as_str(), m.room.as_deref()),
                        ("hi there", "#r", Some("#r"))
                    );
                    assert!(!m.history);
                    Some(i)
                }
                _ => None,
            })
            .collect();
        let delivered = rig
            .events
            .iter()
            .position(|(_, e)| matches!(e, Event::Delivered { .. }))
            .expect("delivered");
        assert_eq!(own.len(), 1, "force_echo {force_echo}: shown once");
        assert!(own[0] < delivered, "shown before it is marked delivered");
        // The same ack again (a resend acknowledged twice): nothing more.
        let conn = rig.pair.b.endpoint.connections().next().expect("connected");
        let id = rig.server.stored.values().copied().max().expect("stored");
        let ack = ServerMsg::Ack {
            c,
            conv: "#r".into(),
            id,
            ts: 1,
        };
        Server::send(&mut rig.pair.b.endpoint, conn, &ack);
        rig.run_for(Duration::from_secs(1));
        assert_eq!(rig.count(|e| matches!(e, Event::Message(_))), 1);
        assert_eq!(rig.delivered(), [c]);
    }
}
