//! Resuming `chirp connect`'s DM file transfers (PROTOCOL.md "Files between users",
//! "Resuming"), sans IO: what to offer again through the server and when, and which offers a
//! receiver takes without asking again. The binary (`chirp`'s `dm` module) owns the peer
//! connections and carries out what these say.
//!
//! A DM transfer runs over a peer connection that lives only as long as both clients and
//! the path between them. When it is lost (the transport's idle timeout: the other client
//! was killed, restarted, or the path went dark), both sides end that connection:
//!
//! - The **sender** keeps the unfinished file and offers it again through the server
//!   ([`Reoffers`]): at once, then every [`REOFFER_EVERY`] until the recipient answers, for at
//!   most [`RESUME_WAIT`]. The server refuses it (`offline`) while the recipient has no
//!   session, and forwards it once one is back; a session the server still holds for a
//!   killed client drops it, so the offer is repeated rather than sent once.
//! - The **receiver** remembers for [`ACCEPTED_TTL`] which files it accepted and did not
//!   finish ([`Accepted`]): the same file (size and root hash) offered again by the same nick
//!   with the same key (as the server names it in the offer) is accepted without asking, and replaces a transfer of it still under way (the sender
//!   offers again only once it gave that one up). A receiver that restarted remembers nothing:
//!   its user accepts again.
//!
//! Either way the receiver's new peer session finds its verified partial file
//! (`NAME.H.part`, `chirp_files`) and asks only for the chunks it lacks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chirp_keys::PublicKey;

/// How often an unfinished file is offered again while the recipient does not answer.
pub const REOFFER_EVERY: Duration = Duration::from_secs(3);

/// How long the sender keeps offering an unfinished file again before it gives up (a `/send`
/// of the same file then still resumes from what the recipient holds).
pub const RESUME_WAIT: Duration = Duration::from_secs(10 * 60);

/// How long a receiver accepts again, without asking, a file it accepted and did not finish.
pub const ACCEPTED_TTL: Duration = Duration::from_secs(60 * 60);

/// Most unfinished accepted files a receiver remembers (the oldest is forgotten first).
pub const MAX_ACCEPTED: usize = 64;

/// What is due for an unfinished file (by the caller's id for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Offer it again through the server.
    Offer(u64),
    /// [`RESUME_WAIT`] is over without an answer: give up (and say that `/send` resumes).
    GiveUp(u64),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    next: Instant,
    until: Instant,
}

/// The sender's unfinished files waiting to be offered again (see the module documentation).
///
/// Inputs: [`Self::lost`] when a transfer's peer connection is lost, [`Self::answered`] when
/// the recipient answers one of its offers (or the user drops it). Outputs: [`Self::poll`]
/// at [`Self::poll_timeout`].
#[derive(Debug)]
pub struct Reoffers {
    pending: Vec<Pending>,
    every: Duration,
    wait: Duration,
}

impl Default for Reoffers {
    fn default() -> Self {
        Self::new(REOFFER_EVERY, RESUME_WAIT)
    }
}

impl Reoffers {
    /// Offers again every `every`, for at most `wait` after the loss.
    pub fn new(every: Duration, wait: Duration) -> Self {
        Self {
            pending: Vec::new(),
            every,
            wait,
        }
    }

    /// The peer connection of file `id` was lost at `now`: it is offered again at once (the
    /// next [`Self::poll`]), then every `every`. Returns when it will be given up. A file
    /// already waiting keeps its deadline.
    pub fn lost(&mut self, now: Instant, id: u64) -> Instant {
        if let Some(p) = self.pending.iter().find(|p| p.id == id) {
            return p.until;
        }
        let until = now + self.wait;
        self.pending.push(Pending {
            id,
            next: now,
            until,
        });
        until
    }

    /// Whether file `id` is waiting to be offered again (an answer to it resumes it).
    pub fn contains(&self, id: u64) -> bool {
        self.pending.iter().any(|p| p.id == id)
    }

    /// The recipient answered an offer of file `id` (or it ended otherwise): no more offers.
    /// Returns whether it was waiting.
    pub fn answered(&mut self, id: u64) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.id != id);
        self.pending.len() != before
    }

    /// Whether no file waits to be offered again.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When [`Self::poll`] has something to say.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next.min(p.until)).min()
    }

    /// What is due at `now`, in the order the files were lost: an offer to make again, or a
    /// file given up (then forgotten).
    pub fn poll(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        let every = self.every;
        self.pending.retain_mut(|p| {
            if now >= p.until {
                due.push(Due::GiveUp(p.id));
                return false;
            }
            if now >= p.next {
                due.push(Due::Offer(p.id));
                p.next = now + every;
            }
            true
        });
        due
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    /// The caller's id for it.
    id: u64,
    from: String,
    /// The sender's key as the server named it in the offer accepted (`None`: an older
    /// server, which names none).
    key: Option<PublicKey>,
    size: u64,
    hash: [u8; 32],
    until: Instant,
}

/// The files a receiver accepted and has not finished: an offer of the same one by the same
/// nick, with the same key, is accepted without asking (see the module documentation). Nicks
/// are compared as given: the caller folds them (`chirp_chat::names::fold`). Keys are those
/// the server names in its offers: a file accepted from one key is not taken unasked from
/// another (a nick given up and claimed by someone else, or a server that swaps keys), and one
/// accepted with a key is not taken unasked from an offer naming none.
#[derive(Debug)]
pub struct Accepted {
    files: VecDeque<Remembered>,
    ttl: Duration,
}

impl Default for Accepted {
    fn default() -> Self {
        Self::new(ACCEPTED_TTL)
    }
}

impl Accepted {
    /// Remembers each accepted file for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            files: VecDeque::new(),
            ttl,
        }
    }

    /// The user accepted the file (`size`, `hash`) from `from`, whose key the offer named as
    /// `key`, at `now`, which the caller numbers `id` (again: the time restarts).
    pub fn remember(
        &mut self,
        now: Instant,
        id: u64,
        from: &str,
        key: Option<PublicKey>,
        size: u64,
        hash: [u8; 32],
    ) {
        self.forget(from, size, hash);
        if self.files.len() >= MAX_ACCEPTED {
            self.files.pop_front();
        }
        self.files.push_back(Remembered {
            id,
            from: from.to_owned(),
            key,
            size,
            hash,
            until: now + self.ttl,
        });
    }

    /// Whether an offer of (`size`, `hash`) by `from`, naming the sender's key `key`, at
    /// `now` is one the user accepted and did not finish (the same nick, key and file): the
    /// caller's id for it, if so.
    pub fn accepted(
        &mut self,
        now: Instant,
        from: &str,
        key: Option<&PublicKey>,
        size: u64,
        hash: [u8; 32],
    ) -> Option<u64> {
        self.files.retain(|r| r.until > now);
        self.files
            .iter()
            .find(|r| r.from == from && r.key.as_ref() == key && r.size == size && r.hash == hash)
            .map(|r| r.id)
    }

    /// The file arrived (or the user declined it): no offer of it is taken without asking.
    pub fn forget(&mut self, from: &str, size: u64, hash: [u8; 32]) {
        self.files
            .retain(|r| !(r.from == from && r.size == size && r.hash == hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_lost_file_is_offered_at_once_then_every_period_until_given_up() {
        let t0 = Instant::now();
        let mut r = Reoffers::new(3 * S, 10 * S);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.lost(t0, 7), t0 + 10 * S);
        assert!(r.contains(7));
        assert_eq!(r.poll_timeout(), Some(t0));
        assert_eq!(r.poll(t0), vec![Due::Offer(7)]);
        // Nothing more until the period is over.
        assert_eq!(r.poll(t0 + 2 * S), vec![]);
        assert_eq!(r.poll_timeout(), Some(t0 + 3 * S));
        assert_eq!(r.poll(t0 + 3 * S), vec![Due::Offer(7)]);
        assert_eq!(r.poll(t0 + 6 * S), vec![Due::Offer(7)]);
        assert_eq!(r.poll(t0 + 9 * S), vec![Due::Offer(7)]);
        // The next offer would be at 12 s: the deadline (10 s) comes first.
        assert_eq!(r.poll_timeout(), Some(t0 + 10 * S));
        assert_eq!(r.poll(t0 + 10 * S), vec![Due::GiveUp(7)]);
        assert!(!r.contains(7));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.poll(t0 + 20 * S), vec![]);
    }

    #[test]
    fn an_answer_stops_the_offers_and_a_second_loss_keeps_the_first_deadline() {
        let t0 = Instant::now();
        let mut r = Reoffers::new(3 * S, 10 * S);
        r.lost(t0, 1);
        r.lost(t0 + S, 2);
        assert_eq!(r.poll(t0 + S), vec![Due::Offer(1), Due::Offer(2)]);
        // Lost again before it was answered: the deadline stays the first one.
        assert_eq!(r.lost(t0 + 5 * S, 1), t0 + 10 * S);
        assert!(r.answered(1));
        assert!(!r.answered(1), "answered twice");
        assert!(!r.contains(1));
        assert_eq!(r.poll(t0 + 4 * S), vec![Due::Offer(2)]);
        assert_eq!(r.poll(t0 + 11 * S), vec![Due::GiveUp(2)]);
        // Lost again after it resumed: a new deadline.
        assert_eq!(r.lost(t0 + 20 * S, 1), t0 + 30 * S);
    }

    const ALICE: PublicKey = PublicKey([1; 32]);

    #[test]
    fn an_accepted_file_is_taken_again_from_the_same_nick_only_until_done_or_expiry() {
        let t0 = Instant::now();
        let mut a = Accepted::new(60 * S);
        let h = [7; 32];
        let k = Some(&ALICE);
        a.remember(t0, 3, "alice", Some(ALICE), 100, h);
        assert_eq!(a.accepted(t0 + S, "alice", k, 100, h), Some(3));
        assert_eq!(a.accepted(t0 + S, "bob", k, 100, h), None, "another nick");
        assert_eq!(a.accepted(t0 + S, "alice", k, 101, h), None, "another size");
        assert_eq!(
            a.accepted(t0 + S, "alice", k, 100, [8; 32]),
            None,
            "another hash"
        );
        assert_eq!(a.accepted(t0 + 60 * S, "alice", k, 100, h), None, "expired");
        a.remember(t0, 4, "alice", Some(ALICE), 100, h);
        a.forget("alice", 100, h);
        assert_eq!(a.accepted(t0 + S, "alice", k, 100, h), None, "done");
    }

    /// The memory is bound to the sender's key: the same file offered again by the same nick
    /// with another key, or with no key named, is not taken unasked; with the key it was
    /// accepted from, it is. A file accepted through an older server (no key named) is taken
    /// again only from an offer that names none either.
    #[test]
    fn an_accepted_file_is_taken_again_only_from_the_key_it_was_accepted_from() {
        let t0 = Instant::now();
        let mut a = Accepted::new(60 * S);
        let (h, mallory) = ([7; 32], PublicKey([9; 32]));
        a.remember(t0, 3, "alice", Some(ALICE), 100, h);
        assert_eq!(
            a.accepted(t0 + S, "alice", Some(&mallory), 100, h),
            None,
            "another key"
        );
        assert_eq!(a.accepted(t0 + S, "alice", None, 100, h), None, "no key");
        assert_eq!(a.accepted(t0 + S, "alice", Some(&ALICE), 100, h), Some(3));
        a.remember(t0, 5, "carol", None, 200, h);
        assert_eq!(a.accepted(t0 + S, "carol", Some(&mallory), 200, h), None);
        assert_eq!(a.accepted(t0 + S, "carol", None, 200, h), Some(5));
    }

    #[test]
    fn the_receiver_remembers_a_bounded_number_of_files() {
        let t0 = Instant::now();
        let mut a = Accepted::new(60 * S);
        for n in 0..=MAX_ACCEPTED as u64 {
            a.remember(t0, n, "alice", Some(ALICE), n, [1; 32]);
        }
        assert_eq!(a.files.len(), MAX_ACCEPTED);
        assert_eq!(
            a.accepted(t0, "alice", Some(&ALICE), 0, [1; 32]),
            None,
            "the oldest went first"
        );
        let last = MAX_ACCEPTED as u64;
        assert_eq!(
            a.accepted(t0, "alice", Some(&ALICE), last, [1; 32]),
            Some(last)
        );
        // Remembering one again does not hold it twice.
        a.remember(t0, 5, "alice", Some(ALICE), 5, [1; 32]);
        assert_eq!(a.files.len(), MAX_ACCEPTED);
    }
}
