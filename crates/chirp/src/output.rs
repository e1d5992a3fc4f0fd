//! What the user (or a script) sees: one line per event, human-readable or JSON.
//!
//! The JSON schema is documented in `docs/JSON.md`; every object has a `type` and a `ts`
//! (RFC 3339, UTC). Message text never goes to the logs, only here.

use std::io::Write;

use chirp_proto::ConnectionStats;
use serde_json::{Value, json};

/// Where and how events are printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

/// Now, as JSON events stamp it: RFC 3339, UTC, milliseconds.
pub(crate) fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn local_hms() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Prints one event on stdout: `human()` as it is, or with `json` the object, stamped with a
/// `ts` unless it has one. Shared by every line-mode printer (`chirp peer`, `chirp connect`).
pub(crate) fn print_event(json: bool, human: impl FnOnce() -> String, mut obj: Value) {
    let line = if json {
        if let Some(map) = obj.as_object_mut() {
            map.entry("ts").or_insert_with(|| Value::String(now_utc()));
        }
        obj.to_string()
    } else {
        human()
    };
    // A stuck stdout (a terminal paused with Ctrl-S, a pipe nobody reads) blocks here, on
    // purpose: the chat task stops taking events, the transport's event channel fills, and
    // flow control holds the sender back, so memory stays bounded. `block_in_place` moves the
    // runtime's other tasks, the transport among them, to the other worker so that the link
    // itself stays alive. A closed stdout (`| head`) is not worth a panic.
    tokio::task::block_in_place(|| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
}

impl Output {
    fn emit(&self, human: impl FnOnce() -> String, obj: Value) {
        print_event(self.json, human, obj);
    }

    /// A received message.
    pub(crate) fn message(&self, from: &str, text: &str) {
        self.emit(
            || format!("[{}] <{from}> {text}", local_hms()),
            json!({"type": "message", "from": from, "text": text}),
        );
    }

    /// Informational status (mode banners, connection attempts).
    pub(crate) fn status(&self, text: &str) {
        self.emit(
            || format!("* {text}"),
            json!({"type": "status", "message": text}),
        );
    }

    /// The peer is reachable.
    pub(crate) fn peer_up(&self, peer: &str) {
        self.emit(
            || format!("[{}] * peer {peer} is up", local_hms()),
            json!({"type": "peer_up", "peer": peer}),
        );
    }

    /// The peer went away.
    pub(crate) fn peer_down(&self, peer: &str, reason: &str) {
        self.emit(
            || format!("[{}] * peer {peer} is down: {reason}", local_hms()),
            json!({"type": "peer_down", "peer": peer, "reason": reason}),
        );
    }

    /// An error the user should see (the chat may continue).
    pub(crate) fn error(&self, text: &str) {
        self.emit(
            || format!("! {text}"),
            json!({"type": "error", "message": text}),
        );
    }

    /// Multi-line help or other plain text (JSON: one `info` object).
    pub(crate) fn info(&self, text: &str) {
        self.emit(|| text.to_owned(), json!({"type": "info", "message": text}));
    }

    /// Link statistics of a reliable connection.
    pub(crate) fn stats(&self, peer: &str, s: &ConnectionStats) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        self.emit(
            || {
                format!(
                    "* link to {peer}: rtt {:.1} ms (var {:.1}, min {:.1}), loss {:.1} % \
                     ({} of {} packets), retransmissions {}, redundant copies {}, \
                     duplicates {}, reordered {}, corrupt {}, malformed {}; \
                     sent {} pkts / {} B, received {} pkts / {} B, messages {} out / {} in",
                    ms(s.srtt),
                    ms(s.rttvar),
                    ms(s.min_rtt),
                    s.loss_percent(),
                    s.packets_lost,
                    s.packets_lost + s.packets_acked,
                    s.retransmissions,
                    s.redundant_copies,
                    s.duplicates_dropped,
                    s.out_of_order,
                    s.corrupt_dropped,
                    s.malformed_dropped,
                    s.packets_sent,
                    s.bytes_sent,
                    s.packets_received,
                    s.bytes_received,
                    s.messages_sent,
                    s.messages_received,
                )
            },
            json!({
                "type": "stats", "peer": peer,
                "rtt_ms": ms(s.srtt), "rttvar_ms": ms(s.rttvar), "min_rtt_ms": ms(s.min_rtt),
                "loss_percent": s.loss_percent(),
                "packets_sent": s.packets_sent, "bytes_sent": s.bytes_sent,
                "packets_received": s.packets_received, "bytes_received": s.bytes_received,
                "packets_lost": s.packets_lost,
                "handshake_packets_lost": s.handshake_packets_lost,
                "retransmissions": s.retransmissions,
                "redundant_copies": s.redundant_copies,
                "duplicates": s.duplicates_dropped, "reordered": s.out_of_order,
                "corrupt": s.corrupt_dropped, "malformed": s.malformed_dropped,
                "messages_sent": s.messages_sent, "messages_received": s.messages_received,
                "messages_acked": s.messages_acked,
            }),
        );
    }

    /// Counters of `--plain` mode, which has no protocol to measure.
    pub(crate) fn plain_stats(&self, sent: (u64, u64), received: (u64, u64)) {
        self.emit(
            || {
                format!(
                    "* plain UDP: sent {} datagrams / {} B, received {} datagrams / {} B \
                     (no acknowledgements: loss cannot be measured in this mode)",
                    sent.0, sent.1, received.0, received.1
                )
            },
            json!({"type": "stats", "mode": "plain", "datagrams_sent": sent.0, "bytes_sent": sent.1,
                   "datagrams_received": received.0, "bytes_received": received.1}),
        );
    }
}
