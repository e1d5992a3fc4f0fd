//! The message stream: each direction of a connection carries one ordered byte stream in which
//! every application message is encoded as `varint(length) || bytes`.
//!
//! Why a byte stream rather than numbered messages: flow control, deduplication, reassembly and
//! the reorder buffer all reduce to byte offsets, exactly as in QUIC, and the receiver's memory is
//! bounded by one number (the window) whatever the sizes of the messages. Fragmentation falls out
//! for free: a message is simply a run of bytes that may span several MESSAGE frames.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::Bytes;

use crate::coding::{varint_bytes, varint_from_iter, varint_len};
use crate::mem::ReleaseIfEmpty as _;
use crate::range_set::RangeSet;

/// Least number of separate out-of-order segments a receive stream buffers (see
/// `RecvStream::can_buffer`); a larger receive window allows one per [`WINDOW_PER_SEGMENT`]
/// bytes of it.
pub(crate) const MAX_SEGMENTS: usize = 1024;
/// Receive-window bytes per out-of-order segment allowed beyond [`MAX_SEGMENTS`]. Every packet
/// received beyond a gap is a segment of its own, and a full-size packet carries ~1,150
/// bytes, so a sender filling the window never reaches the cap: with a fixed 1,024, a bulk
/// transfer with a window of more than ~1.2 MB in flight lost everything after the 1,024th
/// packet beyond a gap (dropped unacknowledged, so the sender stalled until a probe timeout;
/// issue 18). A peer sending tiny segments still costs at most ~100 bytes of bookkeeping per
/// KiB of window.
const WINDOW_PER_SEGMENT: u64 = 1024;

/// Largest application message (64 KiB).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Why [`SendStream::write`] refused a message.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The message exceeds [`MAX_MESSAGE_SIZE`] (or the configured maximum).
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size offered.
        size: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// The send buffer is full: the peer has not acknowledged (or not granted credit for) enough
    /// of what was sent. Retry after [`crate::Event::Writable`].
    #[error("send buffer full")]
    Blocked,
}

/// Sending half: the messages from the oldest not wholly acknowledged to the last written.
///
/// Each message stays the application's own [`Bytes`], shared rather than copied: a message
/// fanned out to a room is one buffer for every member's stream. Its length prefix is made
/// when its bytes are copied into a packet, which is their only copy.
pub(crate) struct SendStream {
    /// Messages not yet wholly acknowledged, oldest first, each with its stream offset.
    queue: VecDeque<Queued>,
    /// End of written data.
    end: u64,
    /// Everything below this offset has been acknowledged.
    base: u64,
    /// First offset never sent.
    unsent: u64,
    acked: RangeSet,
    lost: RangeSet,
    /// The peer's flow-control limit.
    pub(crate) max_data: u64,
    capacity: usize,
    max_message: usize,
    pub(crate) blocked: bool,
    /// Messages wholly acknowledged so far. They are acknowledged in the order they were
    /// written (`base` only moves forward over a contiguous prefix), which is what lets the
    /// application match acknowledgements to its own messages by counting.
    acked_messages: u64,
    /// The stream's end, once the application finished it (half-close): nothing is written
    /// beyond it.
    fin: Option<u64>,
}

/// One message in a send stream: `varint(len) || body` from offset `start`.
struct Queued {
    start: u64,
    body: Bytes,
}

impl Queued {
    fn header_len(&self) -> u64 {
        varint_len(self.body.len() as u64) as u64
    }

    fn end(&self) -> u64 {
        self.start + self.header_len() + self.body.len() as u64
    }

    /// Appends the message's bytes from stream offset `from` to `to` (both within it).
    fn copy(&self, from: u64, to: u64, out: &mut Vec<u8>) {
        let body_start = self.start + self.header_len();
        if from < body_start {
            let (header, len) = varint_bytes(self.body.len() as u64);
            let a = (from - self.start) as usize;
            let b = (to.min(body_start) - self.start) as usize;
            out.extend_from_slice(&header[..len][a..b]);
        }
        if to > body_start {
            let a = (from.max(body_start) - body_start) as usize;
            let b = (to - body_start) as usize;
            out.extend_from_slice(&self.body[a..b]);
        }
    }
}

// Message bytes are user plaintext: `Debug` shows sizes and offsets, never contents.
impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream")
            .field("buffered", &self.buffered())
            .field("base", &self.base)
            .field("unsent", &self.unsent)
            .field("max_data", &self.max_data)
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream")
            .field("segments", &self.segments.len())
            .field("pending", &self.pending.len())
            .field("ready", &self.ready.len())
            .field("consumed", &self.consumed)
            .field("max_data", &self.max_data)
            .finish_non_exhaustive()
    }
}

impl SendStream {
    pub(crate) fn new(initial_max_data: u64, capacity: usize, max_message: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            end: 0,
            base: 0,
            unsent: 0,
            acked: RangeSet::new(),
            lost: RangeSet::new(),
            max_data: initial_max_data,
            capacity,
            max_message,
            blocked: false,
            acked_messages: 0,
            fin: None,
        }
    }

    /// Ends the stream where it is now (half-close) and returns that final offset. Idempotent.
    pub(crate) fn finish(&mut self) -> u64 {
        *self.fin.get_or_insert(self.end())
    }

    /// The final offset, once finished.
    pub(crate) fn fin(&self) -> Option<u64> {
        self.fin
    }

    /// The peer says it holds every byte below `offset` (a RECEIVED frame): acknowledged,
    /// whatever became of the packets that carried them. `Err` if it claims bytes never sent.
    pub(crate) fn on_received(&mut self, offset: u64) -> Result<(), RecvError> {
        if offset > self.unsent {
            return Err(RecvError::BeyondSent);
        }
        self.on_ack(0..offset);
        Ok(())
    }

    /// Queues one message (shared, not copied).
    pub(crate) fn write(&mut self, msg: Bytes) -> Result<(), WriteError> {
        debug_assert!(
            self.fin.is_none(),
            "the connection refuses writes after finish"
        );
        if msg.len() > self.max_message {
            return Err(WriteError::TooLarge {
                size: msg.len(),
                max: self.max_message,
            });
        }
        let encoded = (varint_len(msg.len() as u64) + msg.len()) as u64;
        // Always admit one message into an empty buffer, so a capacity below the message size
        // can never deadlock the stream.
        if !self.queue.is_empty() && self.buffered() + encoded > self.capacity as u64 {
            self.blocked = true;
            return Err(WriteError::Blocked);
        }
        self.queue.push_back(Queued {
            start: self.end,
            body: msg,
        });
        self.end += encoded;
        Ok(())
    }

    /// End of written data.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes held: from the start of the oldest message not wholly acknowledged to the end.
    fn buffered(&self) -> u64 {
        self.queue.front().map_or(0, |q| self.end - q.start)
    }

    /// Messages wholly acknowledged since the stream started, in write order.
    pub(crate) fn acked_messages(&self) -> u64 {
        self.acked_messages
    }

    /// Bytes written but not yet acknowledged.
    pub(crate) fn unacked(&self) -> u64 {
        self.end() - self.base
    }

    /// True if everything written has been acknowledged.
    pub(crate) fn is_flushed(&self) -> bool {
        self.base == self.end()
    }

    /// Room for at least one more byte in the buffer?
    pub(crate) fn has_room(&self) -> bool {
        self.buffered() < self.capacity as u64
    }

    pub(crate) fn has_lost(&self) -> bool {
        !self.lost.is_empty()
    }

    /// New bytes exist that flow control lets us send.
    pub(crate) fn has_sendable_new(&self) -> bool {
        self.unsent < self.end().min(self.max_data)
    }

    /// True if new bytes are waiting on the peer's credit alone.
    #[cfg(test)]
    pub(crate) fn is_flow_blocked(&self) -> bool {
        self.unsent < self.end() && self.unsent >= self.max_data
    }

    /// Takes up to `max_len` bytes of data that was declared lost.
    pub(crate) fn next_lost(&mut self, max_len: usize) -> Option<Range<u64>> {
        let r = self.lost.first()?;
        let r = r.start..r.end.min(r.start + max_len as u64);
        self.lost.remove(r.clone());
        Some(r)
    }

    /// Takes up to `max_len` never-sent bytes that flow control allows.
    pub(crate) fn next_new(&mut self, max_len: usize) -> Option<Range<u64>> {
        let end = self
            .end()
            .min(self.max_data)
            .min(self.unsent + max_len as u64);
        if end <= self.unsent {
            return None;
        }
        let r = self.unsent..end;
        self.unsent = end;
        Some(r)
    }

    /// The oldest sent-but-unacknowledged bytes (up to `max_len`), for a probe. Not removed from
    /// anything: the probe is a copy, the original stays in flight.
    pub(crate) fn oldest_unacked(&self, max_len: usize) -> Option<Range<u64>> {
        let gap = self
            .acked
            .gaps_in(self.base..self.unsent)
            .into_iter()
            .next()?;
        Some(gap.start..gap.end.min(gap.start + max_len as u64))
    }

    /// Parts of `r` not yet acknowledged.
    pub(crate) fn unacked_parts(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let r = r.start.max(self.base)..r.end;
        if r.is_empty() {
            return Vec::new();
        }
        self.acked.gaps_in(r)
    }

    /// Is all of `r` acknowledged?
    pub(crate) fn is_acked(&self, r: &Range<u64>) -> bool {
        r.end <= self.base || self.acked.contains_range(r.clone())
    }

    /// Appends the bytes of `r` (which must lie in `[base, end)`) to `out`.
    pub(crate) fn copy_range(&self, r: Range<u64>, out: &mut Vec<u8>) {
        let mut at = r.start;
        let first = self.queue.partition_point(|q| q.end() <= at);
        for q in self.queue.range(first..) {
            if at >= r.end {
                break;
            }
            let to = q.end().min(r.end);
            q.copy(at, to, out);
            at = to;
        }
        debug_assert_eq!(at, r.end, "copy_range beyond the buffered bytes");
    }

    /// `r` was acknowledged.
    pub(crate) fn on_ack(&mut self, r: Range<u64>) {
        if r.end <= self.base {
            return;
        }
        let r = r.start.max(self.base)..r.end;
        self.lost.remove(r.clone());
        // In order (the usual case): `base` moves on without the range entering `acked`.
        let new_base = if r.start == self.base && self.acked.first().is_none_or(|f| f.start > r.end)
        {
            Some(r.end)
        } else {
            self.acked.insert(r);
            match self.acked.first() {
                Some(first) if first.start == self.base => {
                    self.acked.pop_first();
                    Some(first.end)
                }
                _ => None,
            }
        };
        if let Some(base) = new_base {
            self.base = base;
            // Free the messages that now lie wholly below `base`.
            while self.queue.front().is_some_and(|q| q.end() <= base) {
                self.queue.pop_front();
                self.acked_messages += 1;
            }
            release_burst(&mut self.queue);
        }
    }

    /// Frees what has drained (see `Connection::compact`).
    pub(crate) fn compact(&mut self) {
        self.queue.release_if_empty();
    }

    /// Every message from the first unacknowledged byte on, in order, without length prefixes.
    ///
    /// A later message whose own bytes were acknowledged is included too: the receiver delivers
    /// only an in-order prefix, so it never handed that message to its application.
    pub(crate) fn unacked_messages(&self) -> Vec<Bytes> {
        self.queue.iter().map(|q| q.body.clone()).collect()
    }

    /// `r` was in a packet declared lost: queue the parts not since acknowledged.
    pub(crate) fn on_lost(&mut self, r: Range<u64>) {
        for part in self.unacked_parts(r) {
            self.lost.insert(part);
        }
    }
}

/// Appends `deque[r]` to `out` as (at most) two slice copies rather than byte by byte.
fn extend_from_deque(out: &mut Vec<u8>, deque: &VecDeque<u8>, r: Range<usize>) {
    let (front, back) = deque.as_slices();
    if r.start < front.len() {
        out.extend_from_slice(&front[r.start..r.end.min(front.len())]);
    }
    if r.end > front.len() {
        out.extend_from_slice(&back[r.start.saturating_sub(front.len())..r.end - front.len()]);
    }
}

/// Why the receive stream rejected data: both are protocol violations by the peer.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvError {
    /// Data beyond the advertised limit.
    #[error("peer exceeded flow-control limit")]
    FlowControl,
    /// A message length above the maximum.
    #[error("peer sent a message larger than the maximum")]
    MessageTooLarge,
    /// Data beyond the final offset of a FIN, a FIN below data already received, or a second
    /// FIN with another offset.
    #[error("peer sent data beyond the end of its stream")]
    FinalOffset,
    /// A RECEIVED frame for bytes we never sent.
    #[error("peer acknowledged bytes never sent")]
    BeyondSent,
}

/// Receiving half: reassembles the byte stream and cuts it into messages.
pub(crate) struct RecvStream {
    /// Every offset received so far (so duplicates and overlaps are dropped, never stored).
    received: RangeSet,
    /// Out-of-order bytes beyond the contiguous prefix, keyed by offset; never overlapping.
    segments: BTreeMap<u64, Vec<u8>>,
    /// Contiguous bytes not yet cut into messages, starting at `parse_off`.
    pending: VecDeque<u8>,
    parse_off: u64,
    /// Complete messages the application has not taken yet, with their encoded length.
    ready: VecDeque<(Bytes, u64)>,
    /// Bytes the application has taken: flow-control credit is `consumed + window`.
    consumed: u64,
    /// The limit last advertised to the peer.
    pub(crate) max_data: u64,
    window: u64,
    max_message: usize,
    /// The peer's final offset, once its FIN arrived.
    fin: Option<u64>,
}

impl RecvStream {
    pub(crate) fn new(initial_max_data: u64, window: u64, max_message: usize) -> Self {
        Self {
            received: RangeSet::new(),
            segments: BTreeMap::new(),
            pending: VecDeque::new(),
            parse_off: 0,
            ready: VecDeque::new(),
            consumed: 0,
            max_data: initial_max_data,
            window,
            max_message,
            fin: None,
        }
    }

    /// The peer's FIN: its stream ends at `final_offset`. Returns true the first time.
    pub(crate) fn on_fin(&mut self, final_offset: u64) -> Result<bool, RecvError> {
        match self.fin {
            Some(f) if f == final_offset => Ok(false),
            Some(_) => Err(RecvError::FinalOffset),
            None if self
                .received
                .iter()
                .next_back()
                .is_some_and(|r| r.end > final_offset) =>
            {
                Err(RecvError::FinalOffset)
            }
            None => {
                self.fin = Some(final_offset);
                Ok(true)
            }
        }
    }

    /// Every byte up to the peer's final offset has arrived (not necessarily been delivered).
    pub(crate) fn is_complete(&self) -> bool {
        self.fin.is_some_and(|f| f == self.contiguous_end())
    }

    /// The peer finished, and the application has taken every message before the end.
    pub(crate) fn is_finished_delivered(&self) -> bool {
        self.fin.is_some_and(|f| f == self.consumed)
    }

    /// End of the contiguous bytes received: what a RECEIVED frame reports.
    pub(crate) fn received_end(&self) -> u64 {
        self.contiguous_end()
    }

    fn contiguous_end(&self) -> u64 {
        self.received
            .first()
            .filter(|r| r.start == 0)
            .map_or(0, |r| r.end)
    }

    /// Could this frame's data be buffered? Out-of-order data that would open yet another
    /// separate segment beyond [`MAX_SEGMENTS`] (or one per [`WINDOW_PER_SEGMENT`] bytes of a
    /// larger window) cannot: each segment costs a heap allocation and
    /// a map node, so without a cap a peer sending one byte per gap could make a window's worth
    /// of bytes cost a hundred times as much memory. The caller then drops the whole packet
    /// before acknowledging it, and the sender retransmits.
    pub(crate) fn can_buffer(&self, offset: u64, len: usize) -> bool {
        let end = offset + len as u64;
        let max = usize::try_from(self.window / WINDOW_PER_SEGMENT)
            .unwrap_or(usize::MAX)
            .max(MAX_SEGMENTS);
        self.segments.len() < max
            || offset <= self.contiguous_end()
            || self.received.gaps_in(offset..end).is_empty()
    }

    /// Accepts a MESSAGE frame. Returns the number of new bytes (0 for a pure duplicate).
    pub(crate) fn on_data(&mut self, offset: u64, data: &[u8]) -> Result<u64, RecvError> {
        let end = offset + data.len() as u64;
        if end > self.max_data {
            return Err(RecvError::FlowControl);
        }
        if self.fin.is_some_and(|f| end > f) {
            return Err(RecvError::FinalOffset);
        }
        let mut new = 0;
        // Where the contiguous prefix ends: new bytes from there on join it at once (the usual
        // case, data in order); bytes beyond a gap wait in `segments`.
        let in_order = self.parse_off + self.pending.len() as u64;
        for gap in self.received.gaps_in(offset..end) {
            let slice = &data[(gap.start - offset) as usize..(gap.end - offset) as usize];
            new += slice.len() as u64;
            if gap.start == in_order {
                self.pending.extend(slice);
            } else {
                self.segments.insert(gap.start, slice.to_vec());
            }
        }
        self.received.insert(offset..end);
        let contiguous = self.contiguous_end();
        let mut next = self.parse_off + self.pending.len() as u64;
        while next < contiguous {
            // Segments never overlap and the prefix up to `contiguous` is complete, so the next
            // piece starts exactly at `next`.
            let Some(seg) = self.segments.remove(&next) else {
                break;
            };
            next += seg.len() as u64;
            self.pending.extend(seg);
        }
        self.segments.release_if_empty();
        self.cut_messages()?;
        Ok(new)
    }

    fn cut_messages(&mut self) -> Result<(), RecvError> {
        while let Some((len, hdr)) = varint_from_iter(self.pending.iter().copied()) {
            if len > self.max_message as u64 {
                return Err(RecvError::MessageTooLarge);
            }
            let total = hdr + len as usize;
            if self.pending.len() < total {
                break;
            }
            let mut msg = Vec::with_capacity(len as usize);
            extend_from_deque(&mut msg, &self.pending, hdr..total);
            self.pending.drain(..total);
            self.parse_off += total as u64;
            self.ready.push_back((Bytes::from(msg), total as u64));
        }
        release_burst(&mut self.pending);
        Ok(())
    }

    /// Frees what has drained (see `Connection::compact`).
    pub(crate) fn compact(&mut self) {
        self.pending.release_if_empty();
        self.ready.release_if_empty();
        self.segments.release_if_empty();
    }

    /// Hands the next complete message to the application, releasing its credit.
    pub(crate) fn pop_message(&mut self) -> Option<Bytes> {
        let (msg, encoded) = self.ready.pop_front()?;
        self.consumed += encoded;
        Some(msg)
    }

    /// A new limit to advertise, once the application has freed a quarter of the window:
    /// often enough that a sender never stalls on credit, rarely enough to cost few frames.
    pub(crate) fn wants_max_data_update(&self) -> bool {
        self.consumed + self.window >= self.max_data + self.window / 4
    }

    /// Raises the advertised limit and returns it.
    pub(crate) fn advance_max_data(&mut self) -> u64 {
        self.max_data = self.max_data.max(self.consumed + self.window);
        self.max_data
    }

    /// Is data missing below data received (out-of-order segments waiting for a gap)?
    pub(crate) fn has_hole(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Bytes held on behalf of the peer: out-of-order segments, partial and unread messages.
    pub(crate) fn buffered(&self) -> u64 {
        self.segments.values().map(|s| s.len() as u64).sum::<u64>()
            + self.pending.len() as u64
            + self.ready.iter().map(|(_, n)| n).sum::<u64>()
    }
}

/// A drained byte buffer keeps at most this much capacity until the connection compacts:
/// enough for a few chat messages, so that steady chat traffic does not allocate, while a
/// burst (a history page) is let go of at once.
const KEEP_DRAINED_CAPACITY: usize = 4096;

/// Frees `buf`'s memory if it is empty and holds more than [`KEEP_DRAINED_CAPACITY`] bytes.
fn release_burst<T>(buf: &mut VecDeque<T>) {
    if buf.is_empty() && buf.capacity() * std::mem::size_of::<T>() > KEEP_DRAINED_CAPACITY {
        *buf = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::put_varint;

    fn encode(msgs: &[&[u8]]) -> Vec<u8> {
        let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
        for m in msgs {
            s.write(Bytes::copy_from_slice(m)).expect("room");
        }
        let mut out = Vec::new();
        s.copy_range(0..s.end(), &mut out);
        out
    }

    /// Issue 14 ("allocate buffers lazily and release them when drained"): a burst (a history
    /// page) is let go of as soon as it is delivered; a small buffer is kept while the chat goes
    /// on (no allocation per message), and everything drained is freed when the connection
    /// compacts. The send half holds the application's messages by reference: what it owns
    /// is its queue of them.
    #[test]
    fn drained_buffers_let_go_of_a_burst_at_once_and_the_rest_on_compaction() {
        let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
        let page = Bytes::from(vec![7u8; 60_000]);
        s.write(page.clone()).expect("room");
        for _ in 0..1000 {
            s.write(Bytes::from_static(b"burst")).expect("room");
        }
        assert!(s.queue.capacity() * std::mem::size_of::<Queued>() > KEEP_DRAINED_CAPACITY);
        s.on_ack(0..s.end());
        assert!(s.queue.is_empty());
        assert_eq!(s.queue.capacity(), 0, "the burst's queue is let go of");
        assert!(
            page.is_unique(),
            "the acknowledged message is no longer held"
        );
        s.write(Bytes::copy_from_slice(&[1u8; 100])).expect("room");
        let small = s.queue.capacity();
        s.on_ack(0..s.end());
        assert_eq!(s.queue.capacity(), small, "a small buffer is kept");
        s.write(Bytes::copy_from_slice(&[2u8; 100])).expect("room");
        s.write(Bytes::copy_from_slice(&[3u8; 100])).expect("room");
        let start = s.end() - 2 * 101;
        s.on_ack(start..start + 50);
        s.compact();
        assert!(s.queue.capacity() > 0, "a buffer in use is kept");
        s.on_ack(0..s.end());
        assert!(s.acked.is_empty() && s.lost.is_empty());
        s.compact();
        assert_eq!(s.queue.capacity(), 0);

        let wire = encode(&[&[9u8; 60_000]]);
        let mut r = RecvStream::new(1 << 20, 1 << 20, MAX_MESSAGE_SIZE);
        r.on_data(0, &wire[..30_000]).expect("within window");
        assert!(r.pending.capacity() >= 30_000);
        r.on_data(30_000, &wire[30_000..]).expect("within window");
        assert_eq!(r.pop_message().map(|m| m.len()), Some(60_000));
        assert!(r.pending.capacity() <= KEEP_DRAINED_CAPACITY);
        // Out of order: a segment waits in the map, which lets go of its node once drained.
        let base = wire.len() as u64;
        let wire = encode(&[&[1u8; 10], &[2u8; 10]]);
        r.on_data(base + 11, &wire[11..]).expect("within window");
        assert_eq!(r.segments.len(), 1);
        r.on_data(base, &wire[..11]).expect("within window");
        assert!(r.segments.is_empty());
        assert_eq!(r.pop_message().map(|m| m.len()), Some(10));
        assert_eq!(r.pop_message().map(|m| m.len()), Some(10));
        r.compact();
        assert_eq!((r.pending.capacity(), r.ready.capacity()), (0, 0));
    }

    proptest::proptest! {
        /// Any range of a stream of shared messages reads as the same range of the contiguous
        /// encoding `varint(len) || bytes` per message, across message and header boundaries.
        #[test]
        fn any_range_reads_as_the_contiguous_encoding(
            sizes in proptest::collection::vec(0usize..300, 1..20),
            cut in proptest::collection::vec(0.0f64..1.0, 2),
        ) {
            let msgs: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|k| (i * 31 + k) as u8).collect())
                .collect();
            let mut flat = Vec::new();
            let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
            for m in &msgs {
                put_varint(&mut flat, m.len() as u64);
                flat.extend_from_slice(m);
                s.write(Bytes::copy_from_slice(m)).expect("room");
            }
            proptest::prop_assert_eq!(s.end(), flat.len() as u64);
            let at = |f: f64| ((flat.len() as f64) * f) as usize;
            let (a, b) = (at(cut[0]).min(at(cut[1])), at(cut[0]).max(at(cut[1])));
            let mut out = Vec::new();
            s.copy_range(a as u64..b as u64, &mut out);
            proptest::prop_assert_eq!(&out[..], &flat[a..b]);
        }
    }

    /// Acknowledgements in order move `base` without touching the set of out-of-order ones;
    /// out of order, the set carries them until the gap closes.
    #[test]
    fn acknowledgements_in_and_out_of_order_move_the_base_alike() {
        let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
        for i in 0..4u8 {
            s.write(Bytes::copy_from_slice(&[i; 9])).expect("room"); // 10 bytes each, encoded
        }
        s.on_ack(0..10);
        assert_eq!((s.base, s.acked_messages()), (10, 1));
        assert!(s.acked.is_empty());
        s.on_ack(20..30);
        assert_eq!(s.base, 10);
        assert_eq!(s.acked.range_count(), 1);
        s.on_ack(10..20);
        assert_eq!((s.base, s.acked_messages()), (30, 3));
        assert!(s.acked.is_empty());
        s.on_ack(25..40);
        assert_eq!((s.base, s.acked_messages()), (40, 4));
        assert!(s.is_flushed());
    }

    #[test]
    fn slices_of_a_wrapped_deque_copy_like_its_iterator() {
        // A deque whose contents wrap around the end of its buffer: two slices.
        let mut d: VecDeque<u8> = VecDeque::with_capacity(16);
        d.extend(0..12u8);
        d.drain(..8);
        d.extend(12..24u8);
        assert!(!d.as_slices().1.is_empty(), "the deque wraps");
        for start in 0..=d.len() {
            for end in start..=d.len() {
                let mut got = vec![0xAA];
                extend_from_deque(&mut got, &d, start..end);
                let want: Vec<u8> = std::iter::once(0xAA)
                    .chain(d.range(start..end).copied())
                    .collect();
                assert_eq!(got, want, "{start}..{end}");
            }
        }
    }

    #[test]
    fn reassembles_out_of_order_with_duplicates() {
        let msgs: [&[u8]; 3] = [b"hello", b"", &[7u8; 300]];
        let wire = encode(&msgs);
        let mut r = RecvStream::new(1 << 16, 1 << 16, MAX_MESSAGE_SIZE);
        // Deliver in reverse chunks of 7 bytes, each twice.
        let chunks: Vec<_> = wire.chunks(7).enumerate().collect();
        for (i, c) in chunks.iter().rev() {
            let off = (*i * 7) as u64;
            r.on_data(off, c).expect("within window");
            assert_eq!(r.on_data(off, c), Ok(0), "duplicate counts no new bytes");
        }
        let got: Vec<Bytes> = std::iter::from_fn(|| r.pop_message()).collect();
        assert_eq!(
            got,
            msgs.iter()
                .map(|m| Bytes::copy_from_slice(m))
                .collect::<Vec<_>>()
        );
        assert_eq!(r.buffered(), 0);
        // A peer that opens a new gap with every byte hits the segment cap; in-order data and
        // duplicates are always accepted.
        let mut cap = RecvStream::new(1 << 20, 1 << 20, MAX_MESSAGE_SIZE);
        for i in 0..MAX_SEGMENTS as u64 {
            assert!(cap.can_buffer(10 + 2 * i, 1));
            cap.on_data(10 + 2 * i, &[0]).expect("within window");
        }
        assert!(
            !cap.can_buffer(10 + 2 * MAX_SEGMENTS as u64, 1),
            "one gap too many"
        );
        assert!(cap.can_buffer(0, 1), "in-order data still fits");
        assert!(cap.can_buffer(10, 1), "a duplicate is harmless");
        // A hostile zero-length frame anywhere in the window is harmless.
        assert_eq!(r.on_data(wire.len() as u64, &[]), Ok(0));
        assert_eq!(r.on_data(5, &[]), Ok(0));
        assert_eq!(r.pop_message(), None);
    }

    #[test]
    fn flow_control_and_limits() {
        let mut r = RecvStream::new(100, 100, 1000);
        assert_eq!(r.on_data(90, &[0; 11]), Err(RecvError::FlowControl));
        let mut big = Vec::new();
        put_varint(&mut big, 1001);
        assert_eq!(r.on_data(0, &big), Err(RecvError::MessageTooLarge));

        let mut s = SendStream::new(10, 20, 8);
        assert_eq!(
            s.write(Bytes::copy_from_slice(&[0; 9])),
            Err(WriteError::TooLarge { size: 9, max: 8 })
        );
        s.write(Bytes::copy_from_slice(&[0; 8])).expect("room");
        s.write(Bytes::copy_from_slice(&[0; 8])).expect("room");
        assert_eq!(
            s.write(Bytes::copy_from_slice(&[0; 8])),
            Err(WriteError::Blocked)
        );
        assert_eq!(s.next_new(100), Some(0..10), "credit caps what is sent");
        assert!(s.is_flow_blocked());
    }

    #[test]
    fn unacked_messages_are_handed_back_whole() {
        let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
        for m in [&b"one"[..], b"two", b"three"] {
            s.write(Bytes::copy_from_slice(m)).expect("room");
        }
        // "one" = [0,4), "two" = [4,8), "three" = [8,14). Ack "one" and half of "two".
        s.next_new(100).expect("data");
        s.on_ack(0..6);
        s.on_ack(9..11);
        assert_eq!(
            s.unacked_messages(),
            vec![Bytes::from("two"), Bytes::from("three")]
        );
        s.on_ack(8..14);
        // "three" is wholly acknowledged but sits behind the gap in "two": the receiver has
        // not delivered it, so it is handed back too.
        assert_eq!(
            s.unacked_messages(),
            vec![Bytes::from("two"), Bytes::from("three")]
        );
        s.on_ack(6..8);
        assert!(s.unacked_messages().is_empty());
        assert!(s.is_flushed());
        assert!(s.queue.is_empty(), "everything acknowledged is freed");
    }

    #[test]
    fn fin_bounds_the_stream_and_is_reported_after_the_last_message() {
        let wire = encode(&[b"one", b"two"]);
        let end = wire.len() as u64;
        let mut r = RecvStream::new(1 << 16, 1 << 16, MAX_MESSAGE_SIZE);
        // The FIN may overtake the data.
        assert_eq!(r.on_fin(end), Ok(true));
        assert_eq!(r.on_fin(end), Ok(false), "a repeat is harmless");
        assert_eq!(r.on_fin(end + 1), Err(RecvError::FinalOffset));
        assert!(!r.is_complete());
        r.on_data(4, &wire[4..]).expect("within window");
        assert!(!r.is_complete(), "a gap before the end");
        assert_eq!(r.on_data(end, &[1]), Err(RecvError::FinalOffset));
        r.on_data(0, &wire[..4]).expect("within window");
        assert!(r.is_complete());
        assert_eq!(r.received_end(), end);
        assert!(!r.is_finished_delivered(), "messages not yet taken");
        assert_eq!(r.pop_message(), Some(Bytes::from("one")));
        assert!(!r.is_finished_delivered());
        assert_eq!(r.pop_message(), Some(Bytes::from("two")));
        assert!(r.is_finished_delivered());
        // A FIN below bytes already received is a violation.
        let mut r = RecvStream::new(1 << 16, 1 << 16, MAX_MESSAGE_SIZE);
        r.on_data(0, &wire).expect("within window");
        assert_eq!(r.on_fin(end - 1), Err(RecvError::FinalOffset));
        assert_eq!(r.on_fin(end), Ok(true));
    }

    #[test]
    fn received_acknowledges_a_prefix_whatever_the_packets() {
        let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
        for m in [&b"one"[..], b"two", b"three"] {
            s.write(Bytes::copy_from_slice(m)).expect("room");
        }
        assert_eq!(s.finish(), 14);
        assert_eq!(s.finish(), 14, "idempotent");
        assert_eq!(
            s.on_received(1),
            Err(RecvError::BeyondSent),
            "nothing sent yet"
        );
        s.next_new(100).expect("data");
        // Every packet was "lost" and nothing acknowledged by ACK, but the peer says it holds
        // the first two messages.
        s.on_lost(0..14);
        s.on_received(8).expect("sent");
        assert_eq!(s.acked_messages(), 2);
        assert_eq!(s.unacked_messages(), vec![Bytes::from("three")]);
        assert_eq!(s.next_lost(100), Some(8..14), "only the rest is resent");
        s.on_received(14).expect("sent");
        assert!(s.is_flushed());
        assert_eq!(s.on_received(15), Err(RecvError::BeyondSent));
    }

    #[test]
    fn send_stream_tracks_acks_and_losses() {
        let mut s = SendStream::new(u64::MAX, 1 << 20, MAX_MESSAGE_SIZE);
        s.write(Bytes::copy_from_slice(&[1; 100])).expect("room");
        let a = s.next_new(40).expect("data");
        let b = s.next_new(40).expect("data");
        let c = s.next_new(40).expect("data");
        assert_eq!((a.clone(), b.clone(), c.clone()), (0..40, 40..80, 80..102));
        s.on_ack(b.clone());
        s.on_lost(a.clone());
        s.on_lost(b);
        assert_eq!(
            s.next_lost(100),
            Some(0..40),
            "only the unacked part is resent"
        );
        assert_eq!(s.next_lost(100), None);
        assert_eq!(s.oldest_unacked(100), Some(0..40));
        s.on_ack(a);
        assert_eq!(s.oldest_unacked(100), Some(80..102));
        s.on_ack(c);
        assert!(s.is_flushed());
    }
}
