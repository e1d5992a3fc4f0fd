//! Prometheus metrics of a running server (`chirp serve --metrics ADDR`): `/metrics` in the
//! classic Prometheus text format, over HTTP/1.
//!
//! - Counters the code keeps anyway (the transport's, the core's, the store writer's) are read
//!   when a scrape comes: the HTTP task asks the runner for the core's figures (the runner
//!   answers from its loop, it never waits on this task) and the transport driver for its
//!   totals, sets them in the recorder and renders it. Nothing is counted twice, and nothing
//!   is done per datagram for metrics.
//! - Histograms record observations as they happen: commit latency (the runner, per store
//!   write), group-commit batch size (the store writer, per transaction), and each
//!   established connection's smoothed RTT and loss, sampled every
//!   [`PATH_SAMPLE_PERIOD`].
//! - Labels take a few fixed values (a state, a reason, a source): never a nick, a room or an
//!   address.
//!
//! The recorder is the process's global one (the `metrics` facade): installed once, by the
//! server binary. Without it every `metrics::histogram!` in the code is a no-op.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chirp_proto::EndpointTotals;
use chirp_store::WriterStats;
use chirp_transport::Handle;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use crate::server::ServerStats;

/// Commit latency: from a store write's queueing to its commit (histogram, seconds).
pub const COMMIT_SECONDS: &str = "chirp_commit_seconds";
/// How often every established connection's RTT and loss are sampled.
pub const PATH_SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// Scrapes served at once; more connections wait in the listen queue.
const MAX_SCRAPES: usize = 8;
/// A scrape connection that has not sent its request headers by then is closed...
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and any connection is closed after this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a scrape waits for the runner's and the transport's figures.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `Content-Type` of the classic Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter refused its settings.
    #[error("cannot set up the metrics exporter: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    /// Another recorder is installed in this process already.
    #[error("a metrics recorder is installed in this process already")]
    Installed,
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics scrapes on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The core's and the store's figures, as the runner gives them to a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub(crate) server: ServerStats,
    pub(crate) writer: WriterStats,
    /// Other nodes heard from, in a cluster.
    pub(crate) peers: Option<usize>,
}

/// A scrape's request to the runner.
pub(crate) type ScrapeRequest = oneshot::Sender<Snapshot>;

/// The installed recorder, and what renders it.
#[derive(Debug, Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the process's global recorder, with the histograms' buckets, and describes
    /// every metric. Once per process.
    pub fn install() -> Result<Exporter, MetricsError> {
        let seconds = [
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(COMMIT_SECONDS.into()), &seconds)?
            .set_buckets_for_metric(Matcher::Full(RTT_SECONDS.into()), &seconds)?
            .set_buckets_for_metric(
                Matcher::Full(LOSS_RATIO.into()),
                &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
            )?
            .set_buckets_for_metric(
                Matcher::Full(BATCH_OPS.into()),
                &[
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
                ],
            )?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| MetricsError::Installed)?;
        describe();
        gauge!("chirp_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Ok(Exporter { handle })
    }

    /// The text of a scrape, once the figures are set.
    fn render(&self) -> String {
        self.handle.render()
    }
}

const RTT_SECONDS: &str = "chirp_connection_rtt_seconds";
const LOSS_RATIO: &str = "chirp_connection_loss_ratio";
const BATCH_OPS: &str = "chirp_store_batch_ops";

/// Every metric: name, kind, unit, help. The single list the HELP lines come from (and that
/// `docs/OPERATIONS.md` explains).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "chirp_build_info",
        Kind::Gauge,
        "Always 1; the version is in its label.",
    ),
    (
        "chirp_connections",
        Kind::Gauge,
        "Connections now, by state: handshaking, established, closing (closing and draining).",
    ),
    (
        "chirp_handshakes_started_total",
        Kind::Counter,
        "Handshakes started: validated INITIALs accepted.",
    ),
    (
        "chirp_handshakes_completed_total",
        Kind::Counter,
        "Handshakes completed.",
    ),
    (
        "chirp_handshakes_failed_total",
        Kind::Counter,
        "Connections that ended before their handshake completed, by reason: timeout, refused, key, protocol, closed.",
    ),
    (
        "chirp_retries_sent_total",
        Kind::Counter,
        "RETRYs sent: INITIALs without a valid token, answered statelessly (address validation).",
    ),
    (
        "chirp_resets_sent_total",
        Kind::Counter,
        "Stateless RESETs sent, for packets of connections this server does not know.",
    ),
    (
        "chirp_refusals_sent_total",
        Kind::Counter,
        "REFUSEs sent: the connection table was full.",
    ),
    (
        "chirp_datagrams_received_total",
        Kind::Counter,
        "UDP datagrams received.",
    ),
    (
        "chirp_datagrams_sent_total",
        Kind::Counter,
        "UDP datagrams sent.",
    ),
    (
        "chirp_received_bytes_total",
        Kind::Counter,
        "UDP payload bytes received.",
    ),
    (
        "chirp_sent_bytes_total",
        Kind::Counter,
        "UDP payload bytes sent.",
    ),
    (
        "chirp_datagrams_dropped_total",
        Kind::Counter,
        "Datagrams dropped, by reason: malformed, corrupt (failed authentication), undecryptable (before their keys), replayed (duplicates), stale (late handshake packets), unknown_connection, invalid_token, over_limit (rate limits, a full table).",
    ),
    (
        "chirp_qlog_records_dropped_total",
        Kind::Counter,
        "Trace records dropped instead of written to the qlog files (--qlog only): the writer fell behind; each file notes where, as chirp:events_dropped.",
    ),
    (
        "chirp_packets_sent_total",
        Kind::Counter,
        "Packets sent by connections.",
    ),
    (
        "chirp_packets_received_total",
        Kind::Counter,
        "Packets received and accepted by connections.",
    ),
    (
        "chirp_packets_acked_total",
        Kind::Counter,
        "Packets acknowledged by the peers.",
    ),
    (
        "chirp_packets_lost_total",
        Kind::Counter,
        "Packets declared lost (loss rate: lost / (lost + acked)).",
    ),
    (
        "chirp_spurious_losses_total",
        Kind::Counter,
        "Packets declared lost and acknowledged later: reordered, not lost.",
    ),
    (
        "chirp_retransmissions_total",
        Kind::Counter,
        "Message data sent again after a loss or a probe.",
    ),
    (
        "chirp_redundant_copies_total",
        Kind::Counter,
        "Proactive copies of small messages sent (latency-first redundancy).",
    ),
    (
        "chirp_probe_timeouts_total",
        Kind::Counter,
        "Probe timeouts that fired.",
    ),
    (
        "chirp_key_updates_total",
        Kind::Counter,
        "Key updates, the server's and the clients'.",
    ),
    (
        "chirp_migrations_total",
        Kind::Counter,
        "Client address changes (NAT rebinding, a new network).",
    ),
    (
        RTT_SECONDS,
        Kind::Histogram,
        "Smoothed round-trip time of every established connection, sampled every 10 seconds.",
    ),
    (
        LOSS_RATIO,
        Kind::Histogram,
        "Fraction of a connection's packets lost in the last 10 seconds, sampled every 10 seconds for every established connection that sent any.",
    ),
    (
        "chirp_sessions",
        Kind::Gauge,
        "Chat sessions: connections the chat server has (welcomed or not yet).",
    ),
    (
        "chirp_users",
        Kind::Gauge,
        "Users online: distinct keys with a session.",
    ),
    (
        "chirp_rooms",
        Kind::Gauge,
        "Rooms with members on this server.",
    ),
    (
        "chirp_room_members",
        Kind::Gauge,
        "Room memberships on this server (a user in two rooms counts twice).",
    ),
    (
        "chirp_messages_accepted_total",
        Kind::Counter,
        "Messages accepted from clients and handed to the store.",
    ),
    (
        "chirp_messages_stored_total",
        Kind::Counter,
        "Messages stored.",
    ),
    (
        "chirp_deliveries_total",
        Kind::Counter,
        "Messages queued for a session, live or as it caught up: one per message per session.",
    ),
    (
        "chirp_flood_refused_total",
        Kind::Counter,
        "Requests refused by flood control.",
    ),
    (
        "chirp_malformed_requests_total",
        Kind::Counter,
        "Chat requests that did not decode.",
    ),
    (
        "chirp_slow_clients_closed_total",
        Kind::Counter,
        "Sessions closed because they did not read what they were sent.",
    ),
    (
        "chirp_amends_total",
        Kind::Counter,
        "Changes to messages stored, asked for on this node, by kind: edit, delete, react, unreact.",
    ),
    (
        "chirp_typing_notices_total",
        Kind::Counter,
        "Typing notices from this node's clients, by outcome: forwarded, rate_limited (more than one per user and conversation in 3 s), refused (the sender may not speak in the room).",
    ),
    (
        "chirp_history_reads_total",
        Kind::Counter,
        "History pages served, by source: cache (memory) or store.",
    ),
    (
        "chirp_store_commits_total",
        Kind::Counter,
        "Store transactions committed.",
    ),
    (
        "chirp_store_ops_total",
        Kind::Counter,
        "Store operations committed.",
    ),
    (
        COMMIT_SECONDS,
        Kind::Histogram,
        "Time from a store write's queueing to its commit: how long a message waits to be durable.",
    ),
    (
        BATCH_OPS,
        Kind::Histogram,
        "Operations per store transaction (group commit).",
    ),
    (
        "chirp_cluster_peers",
        Kind::Gauge,
        "Other nodes of the cluster this node hears from (cluster only).",
    ),
];

/// What kind of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

fn describe() {
    for &(name, kind, help) in METRICS {
        let unit = if name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if name.ends_with("_bytes_total") {
            Some(Unit::Bytes)
        } else {
            None
        };
        match (kind, unit) {
            (Kind::Counter, Some(u)) => describe_counter!(name, u, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, _) => describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => describe_histogram!(name, u, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
}

/// Sets the figures of a scrape in the recorder.
fn record(s: &Snapshot, t: &EndpointTotals) {
    let e = &t.endpoint;
    let c = &t.connections;
    gauge!("chirp_connections", "state" => "handshaking").set(t.handshaking as f64);
    gauge!("chirp_connections", "state" => "established").set(t.established as f64);
    gauge!("chirp_connections", "state" => "closing").set(t.closing as f64);
    counter!("chirp_handshakes_started_total").absolute(e.handshakes_started);
    counter!("chirp_handshakes_completed_total").absolute(e.handshakes_completed);
    let f = &e.handshakes_failed;
    for (reason, n) in [
        ("timeout", f.timeout),
        ("refused", f.refused),
        ("key", f.key),
        ("protocol", f.protocol),
        ("closed", f.closed),
    ] {
        counter!("chirp_handshakes_failed_total", "reason" => reason).absolute(n);
    }
    counter!("chirp_retries_sent_total").absolute(e.retries_sent);
    counter!("chirp_resets_sent_total").absolute(e.resets_sent);
    counter!("chirp_refusals_sent_total").absolute(e.refusals_sent);
    counter!("chirp_datagrams_received_total").absolute(e.datagrams_received);
    counter!("chirp_datagrams_sent_total").absolute(e.datagrams_sent);
    counter!("chirp_received_bytes_total").absolute(e.bytes_received);
    counter!("chirp_sent_bytes_total").absolute(e.bytes_sent);
    for (reason, n) in [
        ("malformed", e.malformed_dropped + c.malformed_dropped),
        ("corrupt", e.corrupt_dropped + c.corrupt_dropped),
        ("undecryptable", c.undecryptable_dropped),
        ("replayed", c.duplicates_dropped),
        ("stale", e.stale_initials + c.stale_dropped),
        ("unknown_connection", e.unknown_connection),
        ("invalid_token", e.invalid_tokens),
        (
            "over_limit",
            e.refused + e.rate_limited + e.stateless_dropped,
        ),
    ] {
        counter!("chirp_datagrams_dropped_total", "reason" => reason).absolute(n);
    }
    counter!("chirp_qlog_records_dropped_total").absolute(e.trace_dropped);
    counter!("chirp_packets_sent_total").absolute(c.packets_sent);
    counter!("chirp_packets_received_total").absolute(c.packets_received);
    counter!("chirp_packets_acked_total").absolute(c.packets_acked);
    counter!("chirp_packets_lost_total").absolute(c.packets_lost);
    counter!("chirp_spurious_losses_total").absolute(c.spurious_losses);
    counter!("chirp_retransmissions_total").absolute(c.retransmissions);
    counter!("chirp_redundant_copies_total").absolute(c.redundant_copies);
    counter!("chirp_probe_timeouts_total").absolute(c.ptos);
    counter!("chirp_key_updates_total").absolute(c.key_updates);
    counter!("chirp_migrations_total").absolute(c.migrations);

    let v = &s.server;
    gauge!("chirp_sessions").set(v.sessions as f64);
    gauge!("chirp_users").set(v.users as f64);
    gauge!("chirp_rooms").set(v.rooms as f64);
    gauge!("chirp_room_members").set(v.members as f64);
    counter!("chirp_messages_accepted_total").absolute(v.accepted);
    counter!("chirp_messages_stored_total").absolute(v.messages);
    counter!("chirp_deliveries_total").absolute(v.deliveries);
    counter!("chirp_flood_refused_total").absolute(v.flood_refused);
    counter!("chirp_malformed_requests_total").absolute(v.malformed);
    counter!("chirp_slow_clients_closed_total").absolute(v.too_slow);
    for (kind, n) in [
        ("edit", v.edits),
        ("delete", v.deletes),
        ("react", v.reactions),
        ("unreact", v.unreactions),
    ] {
        counter!("chirp_amends_total", "kind" => kind).absolute(n);
    }
    for (outcome, n) in [
        ("forwarded", v.typing),
        ("rate_limited", v.typing_dropped),
        ("refused", v.typing_refused),
    ] {
        counter!("chirp_typing_notices_total", "outcome" => outcome).absolute(n);
    }
    counter!("chirp_history_reads_total", "source" => "cache").absolute(v.history_cached);
    counter!("chirp_history_reads_total", "source" => "store").absolute(v.history_reads);
    counter!("chirp_store_commits_total").absolute(s.writer.commits);
    counter!("chirp_store_ops_total").absolute(s.writer.ops);
    if let Some(n) = s.peers {
        gauge!("chirp_cluster_peers").set(n as f64);
    }
}

/// Binds `addr` for scrapes, so that a bad address is an error at start (and port 0's choice
/// can be printed) before the runner serves on it ([`crate::runner::RunnerConfig::metrics`]).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    let bind = || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    bind().map_err(|source| MetricsError::Bind { addr, source })
}

/// The runner's side of [`bind`]'s listener.
pub(crate) fn listener(l: &std::net::TcpListener) -> Result<TcpListener, MetricsError> {
    let addr = l
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    l.try_clone()
        .and_then(TcpListener::from_std)
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `/metrics` on `listener` until the runner goes away.
pub(crate) async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    runner: mpsc::Sender<ScrapeRequest>,
    transport: Handle,
) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let scraper = Arc::new(Scraper {
        exporter,
        runner,
        transport,
    });
    loop {
        // Waits for a free slot before taking the next connection: at most MAX_SCRAPES.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if scraper.runner.is_closed() {
            return;
        }
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let scraper = scraper.clone();
                async move { Ok::<_, Infallible>(scraper.answer(&req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                debug!(error = %e, "metrics connection ended");
            }
            drop(slot);
        });
    }
}

struct Scraper {
    exporter: Exporter,
    runner: mpsc::Sender<ScrapeRequest>,
    transport: Handle,
}

impl Scraper {
    async fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/metrics" {
            return text(
                StatusCode::NOT_FOUND,
                "not found: the metrics are at /metrics\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        }
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.figures()).await {
            Ok(Some((s, t))) => {
                record(&s, &t);
                let mut r = Response::new(Full::new(Bytes::from(self.exporter.render())));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(CONTENT_TYPE),
                );
                r
            }
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server did not answer in time\n",
            ),
        }
    }

    async fn figures(&self) -> Option<(Snapshot, EndpointTotals)> {
        let (tx, rx) = oneshot::channel();
        self.runner.send(tx).await.ok()?;
        let snapshot = rx.await.ok()?;
        let totals = self.transport.totals().await.ok()?;
        Some((snapshot, totals))
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Samples every established connection's RTT and loss every [`PATH_SAMPLE_PERIOD`] into
/// the histograms, until the transport stops.
pub(crate) async fn sample_paths(transport: Handle) {
    let mut every = tokio::time::interval(PATH_SAMPLE_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Ok(samples) = transport.sample_paths().await else {
            return;
        };
        let rtt = metrics::histogram!(RTT_SECONDS);
        let loss = metrics::histogram!(LOSS_RATIO);
        for p in samples {
            rtt.record(p.srtt);
            if let Some(l) = p.loss {
                loss.record(l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_by_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for &(name, kind, help) in METRICS {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.starts_with("chirp_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(!help.is_empty() && help.ends_with('.'), "{name}");
        }
    }
}
