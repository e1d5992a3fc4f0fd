//! Writing traces off the driver's thread: a bounded queue to a writer thread, which drops
//! rather than waits.
//!
//! A driver must never wait for a disk. [`spawn_writer`] starts a thread that owns a
//! [`TraceSink`] (a [`QlogDir`](crate::QlogDir), in practice) and returns the driver's end, a
//! [`QlogSender`], whose [`QlogSender::send`] never blocks: it hands a record to a bounded
//! channel ([`WRITER_QUEUE`] records) or, when the writer is that far behind, drops it and
//! counts it ([`QlogSender::dropped`]). The connection's file says so where it happened: the
//! next record of that connection that gets through carries the count, and the writer puts a
//! `chirp:events_dropped` event before it (its `count` is how many events are missing
//! there).
//!
//! A connection's first record (`Started`) that finds the queue full is dropped with
//! everything that connection records after it: it gets no file at all, rather than one
//! without its header. Once a connection has a file, the two records that name and close it
//! (`BecameServer`, `Removed`) are never dropped: they wait in the sender, in order, and go
//! first as soon as there is room ([`QlogSender::retry`], which a driver calls every turn),
//! so that no file is left open, or misnamed, by a writer that fell behind. While one waits,
//! that connection's other records are dropped and counted. What waits is at most two records
//! per connection that had a file when the writer stopped keeping up (a stalled writer takes
//! no new `Started`, so no new files), so memory stays bounded however long the writer is
//! stuck.
//!
//! The writer flushes its files whenever its queue runs dry, and then calls the `wake` it was
//! given, so that a driver can wait, without blocking, for its traces to be on disk
//! ([`QlogSender::caught_up`]: before it reports itself idle, say) or for the writer to have
//! finished once the sender is dropped ([`WriterHandle::is_finished`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Instant;

use chirp_proto::ConnectionHandle;
use chirp_proto::trace::{TraceEvent, TraceRecord};
use tracing::warn;

/// Records the writer thread may be behind by before the driver drops them. At a few hundred
/// bytes of qlog each, a few megabytes of output: a pause of the disk of a second or so on a
/// busy server, with tracing on.
pub const WRITER_QUEUE: usize = 16_384;

/// Where a writer thread puts trace records. [`QlogDir`](crate::QlogDir) writes them as qlog
/// files; tests put them anywhere.
pub trait TraceSink: Send + 'static {
    /// Takes one record, in its connection's order.
    fn record(&mut self, record: &TraceRecord) -> io::Result<()>;
    /// `count` records of connection `conn` were dropped just before the next one, which
    /// happened at `at`.
    fn dropped(&mut self, conn: ConnectionHandle, at: Instant, count: u64) -> io::Result<()>;
    /// Nothing is waiting: a moment to flush what is buffered.
    fn flush(&mut self) -> io::Result<()>;
}

impl<T: TraceSink + ?Sized> TraceSink for Box<T> {
    fn record(&mut self, record: &TraceRecord) -> io::Result<()> {
        (**self).record(record)
    }

    fn dropped(&mut self, conn: ConnectionHandle, at: Instant, count: u64) -> io::Result<()> {
        (**self).dropped(conn, at, count)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// What crosses to the writer thread: a record, and how many of its connection's records
/// were dropped just before it.
#[derive(Debug)]
struct Item {
    record: TraceRecord,
    dropped_before: u64,
}

/// What the sender knows of a connection.
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// Its `Started` was dropped: it has no file, and its records are dropped too.
    Skipped,
    /// It has a file (its `Started` went through).
    Open {
        /// Records dropped since the last one that went through.
        dropped: u64,
        /// Its records in [`QlogSender::waiting`] (a `BecameServer`, a `Removed`).
        waiting: u8,
    },
}

/// What the writer thread has done, for its sender and its handle.
#[derive(Debug, Default)]
struct Progress {
    /// Records it has taken and written (or failed to write), as of its last flush.
    handled: AtomicU64,
    /// It has written everything, dropped its sink (closing the files) and ended.
    finished: AtomicBool,
}

/// The driver's end of a writer thread ([`spawn_writer`]): takes trace records without ever
/// blocking. When it is dropped, the thread writes what it has, closes its files and ends.
#[derive(Debug)]
pub struct QlogSender {
    tx: SyncSender<Item>,
    progress: Arc<Progress>,
    /// Records handed to the thread.
    sent: u64,
    lanes: HashMap<ConnectionHandle, Lane>,
    /// `BecameServer` and `Removed` records that found the queue full, oldest first.
    waiting: VecDeque<Item>,
    dropped: u64,
    /// The writer thread is gone (it panicked): everything is dropped from now on.
    gone: bool,
}

/// The thread's side of a writer: whether it has finished.
#[derive(Debug)]
pub struct WriterHandle {
    progress: Arc<Progress>,
    thread: std::thread::JoinHandle<()>,
}

impl WriterHandle {
    /// Has the thread written everything, closed its files and ended (its sender dropped)?
    pub fn is_finished(&self) -> bool {
        self.progress.finished.load(Ordering::Acquire)
    }

    /// The thread.
    pub fn thread(&self) -> &std::thread::Thread {
        self.thread.thread()
    }
}

/// Starts a writer thread named `name` that hands records to `sink`, through a queue of
/// `capacity` records. It calls `wake` whenever it has written and flushed everything it was
/// given ([`QlogSender::caught_up`] turns true), and once more when it has finished
/// ([`WriterHandle::is_finished`]), so that a driver can wait for either without blocking a
/// thread of its own (`wake` must not block: a `tokio::sync::Notify`, say).
pub fn spawn_writer(
    sink: impl TraceSink,
    capacity: usize,
    name: &str,
    wake: impl Fn() + Send + 'static,
) -> io::Result<(QlogSender, WriterHandle)> {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let progress = Arc::new(Progress::default());
    let theirs = Arc::clone(&progress);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            write_all(sink, &rx, &theirs, &wake);
            theirs.finished.store(true, Ordering::Release);
            wake();
        })?;
    let sender = QlogSender {
        tx,
        progress: Arc::clone(&progress),
        sent: 0,
        lanes: HashMap::new(),
        waiting: VecDeque::new(),
        dropped: 0,
        gone: false,
    };
    Ok((sender, WriterHandle { progress, thread }))
}

/// The writer thread: every record into the sink, a flush (and a `wake`) whenever the queue
/// runs dry. The sink is dropped (its files closed) at the end.
fn write_all(mut sink: impl TraceSink, rx: &Receiver<Item>, progress: &Progress, wake: &dyn Fn()) {
    let mut handled = 0u64;
    loop {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Empty) => {
                if let Err(e) = sink.flush() {
                    warn!(%e, "qlog: cannot flush a trace; tracing that connection no further");
                }
                progress.handled.store(handled, Ordering::Release);
                wake();
                match rx.recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        handled += 1;
        let r = &item.record;
        let result = match item.dropped_before {
            0 => Ok(()),
            n => sink.dropped(r.conn, r.at, n),
        }
        .and_then(|()| sink.record(r));
        if let Err(e) = result {
            warn!(%e, conn = ?r.conn, "qlog: cannot write a trace; tracing that connection no further");
        }
    }
    if let Err(e) = sink.flush() {
        warn!(%e, "qlog: cannot flush a trace");
    }
    progress.handled.store(handled, Ordering::Release);
}

impl QlogSender {
    /// Hands `record` to the writer thread, or drops it (counted) if the writer is
    /// [`WRITER_QUEUE`] records behind. Never blocks. Call it for every record of
    /// [`Endpoint::poll_trace`](chirp_proto::Endpoint::poll_trace), in order.
    pub fn send(&mut self, record: TraceRecord) {
        self.retry();
        let conn = record.conn;
        if let TraceEvent::Started { .. } = record.event {
            let item = Item {
                record,
                dropped_before: 0,
            };
            let lane = match self.offer(item) {
                None => Lane::Open {
                    dropped: 0,
                    waiting: 0,
                },
                Some(_) => {
                    self.dropped += 1;
                    Lane::Skipped
                }
            };
            self.lanes.insert(conn, lane);
            return;
        }
        let removed = matches!(record.event, TraceEvent::Removed);
        let keep = removed || matches!(record.event, TraceEvent::BecameServer { .. });
        let Some(Lane::Open { dropped, waiting }) = self.lanes.get(&conn).copied() else {
            // No file: its `Started` was dropped (or never came).
            self.dropped += 1;
            if removed {
                self.lanes.remove(&conn);
            }
            return;
        };
        let item = Item {
            record,
            dropped_before: dropped,
        };
        // Nothing overtakes a record that waits.
        let refused = if waiting > 0 {
            Some(item)
        } else {
            self.offer(item)
        };
        let lane = match refused {
            None if removed => None,
            None => Some(Lane::Open {
                dropped: 0,
                waiting,
            }),
            Some(item) if keep && !self.gone => {
                self.waiting.push_back(item);
                Some(Lane::Open {
                    dropped: 0,
                    waiting: waiting + 1,
                })
            }
            Some(_) => {
                self.dropped += 1;
                (!removed).then_some(Lane::Open {
                    dropped: dropped + 1,
                    waiting,
                })
            }
        };
        match lane {
            Some(lane) => self.lanes.insert(conn, lane),
            None => self.lanes.remove(&conn),
        };
    }

    /// Hands over the records that wait for room (a file's name or end), as far as the queue
    /// takes them. [`Self::send`] does this first; a driver also calls it once a turn, so that
    /// a connection's `Removed` gets through when nothing else is sent.
    pub fn retry(&mut self) {
        while let Some(item) = self.waiting.pop_front() {
            let conn = item.record.conn;
            let removed = matches!(item.record.event, TraceEvent::Removed);
            match self.offer(item) {
                None if removed => {
                    self.lanes.remove(&conn);
                }
                None => {
                    if let Some(Lane::Open { waiting, .. }) = self.lanes.get_mut(&conn) {
                        *waiting -= 1;
                    }
                }
                Some(item) if !self.gone => {
                    self.waiting.push_front(item);
                    return;
                }
                Some(_) => {
                    // The writer is gone: nothing will be written any more.
                    self.dropped += 1 + self.waiting.len() as u64;
                    self.waiting.clear();
                    self.lanes.clear();
                    return;
                }
            }
        }
    }

    /// Records dropped so far because the writer was behind (or gone).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records waiting in the sender for room: a file's name or end.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Has the writer written and flushed every record handed to it, with none waiting here?
    /// (True also once the writer is gone: nothing more will be written.) A driver that must
    /// not end before its traces are on disk waits for this, woken by `spawn_writer`'s `wake`.
    pub fn caught_up(&self) -> bool {
        self.gone
            || (self.waiting.is_empty()
                && self.progress.handled.load(Ordering::Acquire) == self.sent)
    }

    /// The channel's `try_send`: `None` if `item` went, else `item` back (the queue is full,
    /// or the writer thread is gone, which is noted).
    fn offer(&mut self, item: Item) -> Option<Item> {
        if self.gone {
            return Some(item);
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.sent += 1;
                None
            }
            Err(TrySendError::Full(item)) => Some(item),
            Err(TrySendError::Disconnected(item)) => {
                warn!("qlog: the writer thread is gone; no more traces");
                self.gone = true;
                Some(item)
            }
        }
    }
}
