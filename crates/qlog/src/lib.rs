//! qlog traces of chirp connections: one JSON-SEQ file per connection, written from the trace
//! events of the protocol core ([`chirp_proto::trace`]).
//!
//! # Which qlog
//!
//! qlog version **0.3** in its JSON-SEQ form (RFC 7464: every record starts with the record
//! separator `0x1E` and ends with a newline; the first record is the header): the schema of
//! draft-ietf-quic-qlog-main-schema-02/03 with the QUIC events of the matching
//! draft-ietf-quic-qlog-quic-events, whose event names have a category (`transport:`,
//! `recovery:`, `connectivity:`). That is the form qvis reads (it accepts `qlog_version` 0.3
//! with `qlog_format` "JSON-SEQ") and the one quiche's `qlog` crate wrote up to 0.13. The
//! drafts since renamed the events (`quic:packet_sent`, `quic:recovery_metrics_updated`) and
//! replaced `qlog_version` with `file_schema`; qvis does not read those.
//!
//! | core event | qlog event |
//! |---|---|
//! | `Started` | `connectivity:connection_started` |
//! | `State` | `connectivity:connection_state_updated` |
//! | `PacketSent` / `PacketReceived` | `transport:packet_sent` / `transport:packet_received` |
//! | `PacketDropped` | `transport:packet_dropped` (trigger, and chirp's reason as `details`) |
//! | `PacketLost` | `recovery:packet_lost` |
//! | `Metrics` | `recovery:metrics_updated`: the fields that changed (see below) |
//! | `RedundantCopy` | `chirp:redundant_copy` |
//! | `KeyUpdated` | `chirp:key_updated` (the phase and generation; never a key) |
//! | `Path` | `chirp:path_updated` |
//! | `BecameServer` | `chirp:became_server` |
//! | (events the writer dropped) | `chirp:events_dropped` (`count`), where they are missing |
//!
//! Packet types: INITIAL is `initial`, ACCEPT and HANDSHAKE (Noise messages 2 and 3) are
//! `handshake`, DATA is `1RTT`, RETRY `retry`, REFUSE `unknown`.
//!
//! Metrics: a `metrics_updated` holds, of the congestion window, bytes in flight, ssthresh,
//! PTO count and the RTTs (in ms), only those that differ from what the file last said (the
//! first one holds them all), as quiche writes it; none is written when nothing changed.
//! Bytes in flight change with almost every packet sent or acknowledged, so most hold that
//! alone.
//!
//! Drops: the reason is the connection counter the drop is counted in (`details`: `malformed`,
//! `corrupt`, `undecryptable`, `duplicate`, `stale`; `no_buffer` has no counter), with qlog
//! 0.3's nearest trigger (`invalid`, `decryption_failure`, `rejected`). Drops the endpoint
//! cannot pin on a connection (an unknown connection ID, INITIALs refused before a connection
//! exists) are in no file.
//!
//! Frames map to their QUIC counterparts: MESSAGE is a `stream` frame on stream 0, FIN a
//! `stream` frame of length 0 with `fin`, BULK a `stream` frame on stream 1 and
//! BULK_MAX_DATA `max_stream_data` of stream 1, the Noise handshake message a `crypto` frame,
//! CLOSE `connection_close` (code only); RESET_TOKEN and RECEIVED have no counterpart and are
//! `unknown` frames with their wire type (and, for RECEIVED, its offset). No record holds a
//! key, a token, challenge data, a close reason or a byte of a message.
//!
//! Times are milliseconds since the connection started (`time_format` "relative"); the
//! header's `reference_time` is that instant in milliseconds since the Unix epoch when the
//! writer knows it (a real driver), 0 in a simulation.
//!
//! # Layout
//!
//! - [`QlogWriter`]: one connection's trace into any `Write`.
//! - [`QlogDir`]: a driver's side: routes an endpoint's trace records into one file per
//!   connection in a directory, named by the original destination connection ID and role
//!   (`0123456789abcdef-client.sqlog`; a client that a simultaneous open made the server side
//!   of the peer's attempt is renamed after that attempt's ID), and closes each when its
//!   connection is gone.
//! - [`spawn_writer`]: a writer thread that owns a [`TraceSink`] (a `QlogDir`), and its
//!   driver's end, [`QlogSender`], which never blocks: when the writer is [`WRITER_QUEUE`]
//!   records behind, records are dropped, counted, and noted in their connection's file as
//!   `chirp:events_dropped`.
//! - `validate` (feature `validate`): checks a written file against the qlog 0.3 schema, for
//!   tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod thread;
#[cfg(feature = "validate")]
pub mod validate;

pub use thread::{QlogSender, TraceSink, WRITER_QUEUE, WriterHandle, spawn_writer};

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chirp_proto::ConnectionHandle;
use chirp_proto::close_code;
use chirp_proto::trace::{
    DropReason, LossTrigger, PathChange, TraceEvent, TraceFrame, TraceMetrics, TracePacket,
    TracePacketType, TraceRecord, TraceRole, TraceState,
};
use serde::Serialize;

/// The `qlog_version` written in every header.
pub const QLOG_VERSION: &str = "0.3";
/// The `qlog_format` written in every header.
pub const QLOG_FORMAT: &str = "JSON-SEQ";
/// The file name extension of JSON-SEQ qlog files.
pub const EXTENSION: &str = "sqlog";
/// RFC 7464's record separator, written before every record.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// What the header of a connection's trace says.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceHeader {
    /// Which end wrote it.
    pub role: TraceRole,
    /// The connection's original destination connection ID (its name on both ends).
    pub odcid: u64,
    /// When the connection started: event times count from here.
    pub start: Instant,
    /// `start` on the wall clock, if known (a simulation has none).
    pub wall_clock: Option<SystemTime>,
    /// The local socket address, if known.
    pub local: Option<SocketAddr>,
}

impl TraceHeader {
    /// The header for a connection whose first record is `started` (a [`TraceEvent::Started`];
    /// `None` for any other event).
    pub fn from_started(
        started: &TraceRecord,
        wall_clock: Option<SystemTime>,
        local: Option<SocketAddr>,
    ) -> Option<Self> {
        match started.event {
            TraceEvent::Started { role, odcid, .. } => Some(Self {
                role,
                odcid,
                start: started.at,
                wall_clock,
                local,
            }),
            _ => None,
        }
    }

    /// The file name for this trace: `<odcid hex>-<role>.sqlog`.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{}.{EXTENSION}", self.odcid, role_name(self.role))
    }
}

fn role_name(role: TraceRole) -> &'static str {
    match role {
        TraceRole::Client => "client",
        TraceRole::Server => "server",
    }
}

/// One connection's qlog trace, written record by record into `W`.
#[derive(Debug)]
pub struct QlogWriter<W: Write> {
    out: W,
    header: TraceHeader,
    /// One record at a time is serialized here, then written with its separator.
    line: Vec<u8>,
    /// The metrics as the file last stated them: a `metrics_updated` holds only what differs.
    metrics: Option<TraceMetrics>,
}

impl<W: Write> QlogWriter<W> {
    /// Starts a trace: writes the header record.
    pub fn new(out: W, header: TraceHeader) -> io::Result<Self> {
        let mut w = Self {
            out,
            header,
            line: Vec::with_capacity(256),
            metrics: None,
        };
        let odcid = format!("{:016x}", w.header.odcid);
        let reference_time = w.header.wall_clock.map_or(0.0, |t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        });
        let file = FileHeader {
            qlog_version: QLOG_VERSION,
            qlog_format: QLOG_FORMAT,
            title: "chirp",
            description: "one chirp connection (qlog 0.3, JSON-SEQ)",
            trace: TraceSeq {
                vantage_point: VantagePoint {
                    name: "chirp",
                    ty: role_name(w.header.role),
                },
                title: format!("chirp connection {odcid}"),
                configuration: Configuration { time_offset: 0.0 },
                common_fields: CommonFields {
                    group_id: &odcid,
                    protocol_type: ["QUIC", "chirp"],
                    reference_time,
                    time_format: "relative",
                },
            },
        };
        w.put(&file)?;
        Ok(w)
    }

    /// The header this trace was started with.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Writes one event that happened at `at`. [`TraceEvent::Removed`] writes nothing (the
    /// trace simply ends).
    pub fn write(&mut self, at: Instant, event: &TraceEvent) -> io::Result<()> {
        let time = ms(at.saturating_duration_since(self.header.start));
        match event {
            TraceEvent::Started {
                local_cid, remote, ..
            } => {
                let local = self.header.local;
                let data = ConnectionStarted {
                    ip_version: if remote.is_ipv4() { "ipv4" } else { "ipv6" },
                    src_ip: local.map(|a| a.ip().to_string()).unwrap_or_default(),
                    src_port: local.map(|a| a.port()),
                    dst_ip: remote.ip().to_string(),
                    dst_port: remote.port(),
                    src_cid: format!("{local_cid:016x}"),
                    dst_cid: format!("{:016x}", self.header.odcid),
                };
                self.event(time, "connectivity:connection_started", data)
            }
            TraceEvent::BecameServer { odcid } => {
                let data = BecameServer {
                    odcid: format!("{odcid:016x}"),
                };
                self.event(time, "chirp:became_server", data)
            }
            TraceEvent::PacketSent(p) => self.event(time, "transport:packet_sent", packet(p)),
            TraceEvent::PacketReceived(p) => {
                self.event(time, "transport:packet_received", packet(p))
            }
            TraceEvent::PacketLost {
                ty,
                number,
                trigger,
            } => {
                let data = PacketLost {
                    header: PacketHeader {
                        packet_type: packet_type(*ty),
                        packet_number: *number,
                    },
                    trigger: match trigger {
                        LossTrigger::TimeThreshold => "time_threshold",
                        LossTrigger::ReorderingThreshold => "reordering_threshold",
                    },
                };
                self.event(time, "recovery:packet_lost", data)
            }
            TraceEvent::PacketDropped {
                ty,
                number,
                len,
                reason,
            } => {
                let (trigger, details) = drop_reason(*reason);
                let data = PacketDropped {
                    header: ty.map(|ty| DroppedHeader {
                        packet_type: packet_type(ty),
                        packet_number: *number,
                    }),
                    raw: Raw { length: *len },
                    details,
                    trigger,
                };
                self.event(time, "transport:packet_dropped", data)
            }
            TraceEvent::Metrics(m) => {
                let changed = metrics_changed(self.metrics.as_ref(), m);
                self.metrics = Some(*m);
                match changed {
                    Some(data) => self.event(time, "recovery:metrics_updated", data),
                    None => Ok(()),
                }
            }
            TraceEvent::State { old, new } => {
                let data = StateUpdated {
                    old: old.map(state_name),
                    new: state_name(*new),
                };
                self.event(time, "connectivity:connection_state_updated", data)
            }
            TraceEvent::RedundantCopy {
                number,
                offset,
                len,
                startup,
            } => {
                let data = RedundantCopy {
                    packet_number: *number,
                    offset: *offset,
                    length: *len,
                    startup: *startup,
                };
                self.event(time, "chirp:redundant_copy", data)
            }
            TraceEvent::KeyUpdated {
                local,
                key_phase,
                generation,
            } => {
                let data = KeyUpdated {
                    owner: if *local { "local" } else { "remote" },
                    key_phase: u8::from(*key_phase),
                    generation: *generation,
                };
                self.event(time, "chirp:key_updated", data)
            }
            TraceEvent::Path { change, old, new } => {
                let data = PathUpdated {
                    change: match change {
                        PathChange::Migrated => "migrated",
                        PathChange::Returned => "returned",
                        PathChange::Validated => "validated",
                        PathChange::ValidationFailed => "validation_failed",
                        PathChange::Moved => "moved",
                    },
                    old: old.to_string(),
                    new: new.to_string(),
                };
                self.event(time, "chirp:path_updated", data)
            }
            TraceEvent::Removed => Ok(()),
        }
    }

    /// Notes that `count` events are missing here (the writer fell behind and they were
    /// dropped), as a `chirp:events_dropped` event at `at`.
    pub fn dropped(&mut self, at: Instant, count: u64) -> io::Result<()> {
        let time = ms(at.saturating_duration_since(self.header.start));
        self.event(time, "chirp:events_dropped", EventsDropped { count })
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the output.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn event(&mut self, time: f64, name: &str, data: impl Serialize) -> io::Result<()> {
        self.put(&Event { time, name, data })
    }

    fn put(&mut self, record: &impl Serialize) -> io::Result<()> {
        self.line.clear();
        self.line.push(RECORD_SEPARATOR);
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// A driver's qlog output: one file per connection in a directory.
///
/// Feed it every record from [`chirp_proto::Endpoint::poll_trace`]. A connection's file is
/// created at its `Started` record and flushed and closed at its `Removed` record (or when
/// this is dropped). A connection that a simultaneous open turns into the server side of the
/// peer's attempt (`BecameServer`) has its file renamed after the peer's ID and the server
/// role, so that both ends' files of one connection have one name; its header still names
/// the client role it started in. Files are written through a buffer; a driver calls
/// [`Self::flush`] when it is idle so that a trace can be read while its connection lives.
#[derive(Debug)]
pub struct QlogDir {
    dir: PathBuf,
    local: Option<SocketAddr>,
    files: HashMap<ConnectionHandle, OpenTrace>,
    /// Files written since the last flush (a busy server has many open: only these are
    /// flushed).
    dirty: HashSet<ConnectionHandle>,
}

/// A connection's file, and where it is.
#[derive(Debug)]
struct OpenTrace {
    path: PathBuf,
    writer: QlogWriter<BufWriter<File>>,
}

impl QlogDir {
    /// Writes into `dir`, which is created if it does not exist. `local` is the socket's
    /// address, for the traces' `connection_started` records.
    pub fn new(dir: &Path, local: Option<SocketAddr>) -> io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| in_path(e, dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            local,
            files: HashMap::new(),
            dirty: HashSet::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connections with an open file.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Writes one record into its connection's file (creating it at `Started`, renaming it at
    /// `BecameServer`, closing it at `Removed`). A connection whose file could not be created,
    /// renamed or written is traced no further: the error comes back once, and its later
    /// records are ignored.
    pub fn record(&mut self, record: &TraceRecord) -> io::Result<()> {
        match record.event {
            TraceEvent::Started { .. } => {
                let wall = wall_clock_of(record.at);
                // `from_started` accepts the record: it is a `Started`.
                if let Some(header) = TraceHeader::from_started(record, Some(wall), self.local) {
                    let (path, file) = self.free_name(&header.file_name(), |path| {
                        OpenOptions::new().write(true).create_new(true).open(path)
                    })?;
                    let writer = QlogWriter::new(BufWriter::new(file), header)
                        .map_err(|e| in_path(e, &path))?;
                    self.files.insert(record.conn, OpenTrace { path, writer });
                }
            }
            TraceEvent::BecameServer { odcid } => {
                if let Some(open) = self.files.remove(&record.conn) {
                    let name = TraceHeader {
                        role: TraceRole::Server,
                        odcid,
                        ..open.writer.header.clone()
                    }
                    .file_name();
                    // A hard link fails if the name is taken, where a rename would replace it.
                    let (path, ()) = self.free_name(&name, |path| {
                        std::fs::hard_link(&open.path, path)?;
                        std::fs::remove_file(&open.path)
                    })?;
                    self.files.insert(record.conn, OpenTrace { path, ..open });
                }
            }
            _ => {}
        }
        let Some(open) = self.files.get_mut(&record.conn) else {
            return Ok(());
        };
        self.dirty.insert(record.conn);
        let result = open.writer.write(record.at, &record.event);
        if result.is_err() || matches!(record.event, TraceEvent::Removed) {
            if let Some(open) = self.files.remove(&record.conn) {
                result.map_err(|e| in_path(e, &open.path))?;
                open.writer
                    .into_inner()
                    .map_err(|e| in_path(e, &open.path))?;
            }
        }
        Ok(())
    }

    /// Notes in connection `conn`'s file, if it has one, that `count` of its events are
    /// missing just before `at` ([`QlogWriter::dropped`]). A file that cannot be written is
    /// closed, like in [`Self::record`].
    pub fn dropped(&mut self, conn: ConnectionHandle, at: Instant, count: u64) -> io::Result<()> {
        let Some(open) = self.files.get_mut(&conn) else {
            return Ok(());
        };
        self.dirty.insert(conn);
        match open.writer.dropped(at, count) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = in_path(e, &open.path);
                self.files.remove(&conn);
                Err(e)
            }
        }
    }

    /// Flushes every file written since the last flush. A file that cannot be flushed is
    /// closed and its connection traced no further; the first such error comes back.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut first = None;
        for conn in self.dirty.drain() {
            let Some(open) = self.files.get_mut(&conn) else {
                continue; // Closed since.
            };
            if let Err(e) = open.writer.flush() {
                first.get_or_insert_with(|| in_path(e, &open.path));
                self.files.remove(&conn);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// `make(path)` for `name` in the directory, or, if that name is taken (a directory
    /// reused across runs), with `-1`, `-2`... before the extension: `make` must fail with
    /// `AlreadyExists` for a name that is taken, never replace the file.
    fn free_name<T>(
        &self,
        name: &str,
        mut make: impl FnMut(&Path) -> io::Result<T>,
    ) -> io::Result<(PathBuf, T)> {
        let stem = name.trim_end_matches(&format!(".{EXTENSION}")).to_owned();
        let mut path = self.dir.join(name);
        for n in 1..1000 {
            match make(&path) {
                Ok(made) => return Ok((path, made)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    path = self.dir.join(format!("{stem}-{n}.{EXTENSION}"));
                }
                Err(e) => return Err(in_path(e, &path)),
            }
        }
        Err(in_path(
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a thousand files of this name",
            ),
            &path,
        ))
    }
}

impl TraceSink for QlogDir {
    fn record(&mut self, record: &TraceRecord) -> io::Result<()> {
        QlogDir::record(self, record)
    }

    fn dropped(&mut self, conn: ConnectionHandle, at: Instant, count: u64) -> io::Result<()> {
        QlogDir::dropped(self, conn, at, count)
    }

    fn flush(&mut self) -> io::Result<()> {
        QlogDir::flush(self)
    }
}

/// `at` on the wall clock: now, less how long ago `at` was.
fn wall_clock_of(at: Instant) -> SystemTime {
    let ago = Instant::now().saturating_duration_since(at);
    SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

fn in_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn packet_type(ty: TracePacketType) -> &'static str {
    match ty {
        TracePacketType::Initial => "initial",
        TracePacketType::Accept | TracePacketType::Handshake => "handshake",
        TracePacketType::Data { .. } => "1RTT",
        TracePacketType::Retry => "retry",
        TracePacketType::Refuse | TracePacketType::Other => "unknown",
    }
}

fn state_name(state: TraceState) -> &'static str {
    match state {
        TraceState::Attempted => "attempted",
        TraceState::HandshakeStarted => "handshake_started",
        TraceState::HandshakeCompleted => "handshake_completed",
        TraceState::HandshakeConfirmed => "handshake_confirmed",
        TraceState::Closing => "closing",
        TraceState::Draining => "draining",
        TraceState::Closed => "closed",
    }
}

fn packet(p: &TracePacket) -> PacketEvent {
    PacketEvent {
        header: PacketHeader {
            packet_type: packet_type(p.ty),
            packet_number: p.number,
        },
        raw: Raw { length: p.len },
        frames: p.frames.iter().map(frame).collect(),
    }
}

fn frame(f: &TraceFrame) -> QuicFrame {
    let wire = f.wire_type() as u8;
    match *f {
        TraceFrame::Padding { len } => QuicFrame::Padding {
            payload_length: len,
        },
        TraceFrame::Ping => QuicFrame::Ping,
        TraceFrame::Ack {
            delay_us,
            ref ranges,
        } => QuicFrame::Ack {
            ack_delay: delay_us as f64 / 1000.0,
            // qlog lists ranges lowest first.
            acked_ranges: ranges.iter().rev().map(|&(lo, hi)| [lo, hi]).collect(),
        },
        TraceFrame::Message { offset, len } => QuicFrame::Stream {
            stream_id: 0,
            offset,
            length: len,
            fin: None,
        },
        TraceFrame::Fin { final_offset } => QuicFrame::Stream {
            stream_id: 0,
            offset: final_offset,
            length: 0,
            fin: Some(true),
        },
        TraceFrame::MaxData { limit } => QuicFrame::MaxData { maximum: limit },
        // The bulk channel shows as a second stream beside the message stream (stream 0).
        TraceFrame::Bulk { offset, len } => QuicFrame::Stream {
            stream_id: 1,
            offset,
            length: len,
            fin: None,
        },
        TraceFrame::BulkMaxData { limit } => QuicFrame::MaxStreamData {
            stream_id: 1,
            maximum: limit,
        },
        TraceFrame::Close { code } => QuicFrame::ConnectionClose {
            error_space: if code >= close_code::APPLICATION_MIN {
                "application_error"
            } else {
                "transport_error"
            },
            error_code: code,
        },
        TraceFrame::Handshake { len } => QuicFrame::Crypto {
            offset: 0,
            length: len,
        },
        TraceFrame::PathChallenge => QuicFrame::PathChallenge,
        TraceFrame::PathResponse => QuicFrame::PathResponse,
        TraceFrame::ResetToken => QuicFrame::Unknown {
            raw_frame_type: wire,
            chirp_frame: "reset_token",
            offset: None,
        },
        TraceFrame::Received { offset } => QuicFrame::Unknown {
            raw_frame_type: wire,
            chirp_frame: "received",
            offset: Some(offset),
        },
    }
}

/// The fields of `m` that differ from `last` (all of them if there is none), as quiche and
/// quinn write `metrics_updated`; `None` if nothing does. A slow-start threshold is written
/// once there is one.
fn metrics_changed(last: Option<&TraceMetrics>, m: &TraceMetrics) -> Option<Metrics> {
    // A field's value if it differs from what the file last said.
    macro_rules! changed {
        ($f:ident) => {
            last.is_none_or(|l| l.$f != m.$f).then_some(m.$f)
        };
    }
    let out = Metrics {
        min_rtt: changed!(min_rtt).map(ms),
        smoothed_rtt: changed!(smoothed_rtt).map(ms),
        latest_rtt: changed!(latest_rtt).map(ms),
        rtt_variance: changed!(rtt_variance).map(ms),
        pto_count: changed!(pto_count),
        congestion_window: changed!(cwnd),
        bytes_in_flight: changed!(bytes_in_flight),
        ssthresh: changed!(ssthresh).filter(|&n| n != u64::MAX),
    };
    (out != Metrics::default()).then_some(out)
}

/// qlog 0.3's trigger for a drop, and chirp's reason (the connection counter it is counted
/// in) as its details.
fn drop_reason(reason: DropReason) -> (&'static str, &'static str) {
    match reason {
        DropReason::Malformed => ("invalid", "malformed"),
        DropReason::Corrupt => ("decryption_failure", "corrupt"),
        DropReason::Undecryptable => ("decryption_failure", "undecryptable"),
        DropReason::Duplicate => ("rejected", "duplicate"),
        DropReason::Stale => ("rejected", "stale"),
        DropReason::NoBuffer => ("rejected", "no_buffer"),
    }
}

// ----- The records, as serialized -----

#[derive(Serialize)]
struct FileHeader<'a> {
    qlog_version: &'a str,
    qlog_format: &'a str,
    title: &'a str,
    description: &'a str,
    trace: TraceSeq<'a>,
}

#[derive(Serialize)]
struct TraceSeq<'a> {
    vantage_point: VantagePoint<'a>,
    title: String,
    configuration: Configuration,
    common_fields: CommonFields<'a>,
}

#[derive(Serialize)]
struct VantagePoint<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
}

#[derive(Serialize)]
struct Configuration {
    time_offset: f64,
}

#[derive(Serialize)]
struct CommonFields<'a> {
    group_id: &'a str,
    protocol_type: [&'a str; 2],
    reference_time: f64,
    time_format: &'a str,
}

#[derive(Serialize)]
struct Event<'a, D> {
    time: f64,
    name: &'a str,
    data: D,
}

#[derive(Serialize)]
struct ConnectionStarted {
    ip_version: &'static str,
    src_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    dst_ip: String,
    dst_port: u16,
    src_cid: String,
    dst_cid: String,
}

#[derive(Serialize)]
struct BecameServer {
    odcid: String,
}

#[derive(Serialize)]
struct PacketHeader {
    packet_type: &'static str,
    packet_number: u64,
}

#[derive(Serialize)]
struct Raw {
    length: u64,
}

#[derive(Serialize)]
struct PacketEvent {
    header: PacketHeader,
    raw: Raw,
    frames: Vec<QuicFrame>,
}

#[derive(Serialize)]
#[serde(tag = "frame_type", rename_all = "snake_case")]
enum QuicFrame {
    Padding {
        payload_length: u64,
    },
    Ping,
    Ack {
        ack_delay: f64,
        acked_ranges: Vec<[u64; 2]>,
    },
    Stream {
        stream_id: u64,
        offset: u64,
        length: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        fin: Option<bool>,
    },
    MaxData {
        maximum: u64,
    },
    MaxStreamData {
        stream_id: u64,
        maximum: u64,
    },
    ConnectionClose {
        error_space: &'static str,
        error_code: u64,
    },
    Crypto {
        offset: u64,
        length: u64,
    },
    PathChallenge,
    PathResponse,
    Unknown {
        raw_frame_type: u8,
        chirp_frame: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
}

#[derive(Serialize)]
struct PacketLost {
    header: PacketHeader,
    trigger: &'static str,
}

#[derive(Serialize)]
struct PacketDropped {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<DroppedHeader>,
    raw: Raw,
    details: &'static str,
    trigger: &'static str,
}

/// The header of a dropped packet: its number is unknown for a RETRY.
#[derive(Serialize)]
struct DroppedHeader {
    packet_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    packet_number: Option<u64>,
}

#[derive(Serialize, PartialEq, Default)]
struct Metrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    min_rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    smoothed_rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_variance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pto_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    congestion_window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in_flight: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssthresh: Option<u64>,
}

#[derive(Serialize)]
struct StateUpdated {
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<&'static str>,
    new: &'static str,
}

#[derive(Serialize)]
struct RedundantCopy {
    packet_number: u64,
    offset: u64,
    length: u64,
    startup: bool,
}

#[derive(Serialize)]
struct KeyUpdated {
    owner: &'static str,
    key_phase: u8,
    generation: u64,
}

#[derive(Serialize)]
struct EventsDropped {
    count: u64,
}

#[derive(Serialize)]
struct PathUpdated {
    change: &'static str,
    old: String,
    new: String,
}
