//! What the user (or a script) sees: one line per event, human-readable or JSON.
//!
//! The JSON schema is documented in `docs/JSON.md`; every object has a `type` and a `ts`
//! (RFC 3339, UTC). Message text never goes to the logs, only here.
//!
//! Human lines are for a terminal, and a terminal obeys the control characters it is given:
//! whatever came from the network goes through [`chirp_tui::safe`] first, so that escape
//! sequences, BEL, backspaces and bidi controls are shown as marks (`^[`, `^G`, `^H`,
//! `<U+202E>`) instead of acting. JSON keeps the text exact: [`json_line`] writes those
//! characters as `\uXXXX` escapes, which any parser turns back into the text as it came.

use std::borrow::Cow;
use std::io::Write;

use chirp_proto::ConnectionStats;
use chirp_tui::safe;
use serde_json::{Value, json};

/// Where and how events are printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
    /// `chirp peer --via`: the path the peer connection takes, `direct` or `relayed`, shown
    /// with `peer_up` and `stats` (`None`: a peer given by address, always direct).
    pub(crate) path: Option<&'static str>,
}

/// `obj` with `"path"` added when there is one.
fn with_path(path: Option<&str>, mut obj: Value) -> Value {
    if let Some(p) = path {
        obj["path"] = json!(p);
    }
    obj
}

/// Now, as JSON events stamp it: RFC 3339, UTC, milliseconds.
pub(crate) fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn local_hms() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Continuation lines of a multi-line message start with this, so that a message cannot pass
/// off one of its lines as a line of chirp's own (`[12:00:00] <alice> ...`).
pub(crate) const CONTINUATION: &str = "    ";

/// The body of a received message, for a human line: [`safe::text`] (controls shown as marks,
/// tabs as spaces), without a final line break (`nc` and `socat` send the newline the user
/// typed; the printer ends the line itself), and with every other line break followed by
/// [`CONTINUATION`]. Borrowed for a one-line message with nothing to escape.
pub(crate) fn message_body(text: &str) -> Cow<'_, str> {
    indent_continuations(safe::text(text))
}

/// [`message_body`] for raw bytes (a `--plain` datagram, a peer's message): bytes that are not
/// UTF-8 show as `\xNN`.
pub(crate) fn message_body_bytes(data: &[u8]) -> Cow<'_, str> {
    indent_continuations(safe::text_bytes(data))
}

fn indent_continuations(text: Cow<'_, str>) -> Cow<'_, str> {
    let end = text.strip_suffix('\n').map_or(text.len(), str::len);
    if text[..end].contains('\n') {
        return Cow::Owned(text[..end].replace('\n', &format!("\n{CONTINUATION}")));
    }
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..end]),
        Cow::Owned(mut s) => {
            s.truncate(end);
            Cow::Owned(s)
        }
    }
}

/// Prints one event on stdout: `human()`, or with `json` the object, stamped with a `ts`
/// unless it has one. Shared by every line-mode printer (`chirp peer`, `chirp connect`).
///
/// The printers escape each field from the network themselves (a nick with [`safe::line`], a
/// message with [`message_body`]), which keeps one event on one line. The human line as a
/// whole goes through [`guard`] once more, for any field a printer forgets:
/// whatever else it lets through, no control character but our own line breaks reaches the
/// terminal.
pub(crate) fn print_event(json: bool, human: impl FnOnce() -> String, mut obj: Value) {
    let line = if json {
        if let Some(map) = obj.as_object_mut() {
            map.entry("ts").or_insert_with(|| Value::String(now_utc()));
        }
        json_line(&obj)
    } else {
        guard(human())
    };
    write_line(&[line.as_bytes()]);
}

/// `v` as one line of JSON in which every character [`safe::is_unsafe`] holds is a `\uXXXX`
/// escape. serde_json escapes only C0 controls; C1 and bidi controls (and DEL) would otherwise
/// go out as they are, and act on a terminal that `--json` happens to print to. Escaped, the
/// line is harmless there, and to any JSON parser it is the same value: the text stays exact.
pub(crate) fn json_line(v: &Value) -> String {
    use serde::Serialize as _;

    /// serde_json's compact format, escaping more.
    struct Escaping;

    impl serde_json::ser::Formatter for Escaping {
        fn write_string_fragment<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            fragment: &str,
        ) -> std::io::Result<()> {
            let mut clean = 0;
            for (i, c) in fragment.char_indices() {
                if safe::is_unsafe(c) {
                    w.write_all(&fragment.as_bytes()[clean..i])?;
                    // All of them are in the Basic Multilingual Plane: one escape each.
                    write!(w, "\\u{:04x}", u32::from(c))?;
                    clean = i + c.len_utf8();
                }
            }
            w.write_all(&fragment.as_bytes()[clean..])
        }
    }

    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Escaping);
    // Writing a `Value` to a Vec cannot fail, and the output is UTF-8 (serde_json writes the
    // strings' own UTF-8 and ASCII around it); neither fallback is ever taken.
    if v.serialize(&mut ser).is_err() {
        return v.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| v.to_string())
}

/// The last check of a human line before it is printed: [`safe::text`], which leaves a clean
/// line (the normal case) as it is, without a copy.
pub(crate) fn guard(line: String) -> String {
    match safe::text(&line) {
        Cow::Borrowed(_) => line,
        Cow::Owned(clean) => clean,
    }
}

/// Writes `parts` and a newline to stdout, as one line.
pub(crate) fn write_line(parts: &[&[u8]]) {
    // A stuck stdout (a terminal paused with Ctrl-S, a pipe nobody reads) blocks here, on
    // purpose: the chat task stops taking events, the transport's event channel fills, and
    // flow control holds the sender back, so memory stays bounded. `block_in_place` moves the
    // runtime's other tasks, the transport among them, to the other worker so that the link
    // itself stays alive. A closed stdout (`| head`) is not worth a panic.
    tokio::task::block_in_place(|| {
        let mut out = std::io::stdout().lock();
        for part in parts {
            let _ = out.write_all(part);
        }
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    });
}

impl Output {
    fn emit(&self, human: impl FnOnce() -> String, obj: Value) {
        print_event(self.json, human, obj);
    }

    /// A received message: in a human line its text as [`message_body_bytes`] shows it (bytes
    /// that are not UTF-8 as `\xNN`), in JSON exactly (U+FFFD for bytes that are not UTF-8:
    /// JSON holds text).
    pub(crate) fn message(&self, from: &str, data: &[u8]) {
        self.emit(
            || {
                let (from, text) = (safe::line(from), message_body_bytes(data));
                format!("[{}] <{from}> {text}", local_hms())
            },
            json!({"type": "message", "from": from, "text": String::from_utf8_lossy(data)}),
        );
    }

    /// A received message printed byte for byte, escape sequences included: `--plain --raw`,
    /// for a program reading our stdout that wants the datagram exactly. Never the default:
    /// on a terminal this lets whoever sends the datagram drive the terminal.
    pub(crate) fn message_raw(&self, from: &str, data: &[u8]) {
        let prefix = format!("[{}] <{}> ", local_hms(), safe::line(from));
        write_line(&[prefix.as_bytes(), data]);
    }

    /// Informational status (mode banners, connection attempts).
    pub(crate) fn status(&self, text: &str) {
        self.emit(
            || format!("* {}", safe::line(text)),
            json!({"type": "status", "message": text}),
        );
    }

    /// The peer is reachable.
    pub(crate) fn peer_up(&self, peer: &str) {
        let obj = with_path(self.path, json!({"type": "peer_up", "peer": peer}));
        self.emit(
            || {
                let peer = safe::line(peer);
                match self.path {
                    Some(path) => format!("[{}] * peer {peer} is up ({path})", local_hms()),
                    None => format!("[{}] * peer {peer} is up", local_hms()),
                }
            },
            obj,
        );
    }

    /// `chirp peer --via`: the connection moved to another path (relayed, or direct).
    pub(crate) fn path(&self, peer: &str, relayed: bool) {
        let path = if relayed { "relayed" } else { "direct" };
        self.emit(
            || {
                let peer = safe::line(peer);
                format!("[{}] * path to {peer}: {path}", local_hms())
            },
            json!({"type": "path", "path": path, "peer": peer}),
        );
    }

    /// The peer went away.
    pub(crate) fn peer_down(&self, peer: &str, reason: &str) {
        self.emit(
            || {
                let (peer, reason) = (safe::line(peer), safe::line(reason));
                format!("[{}] * peer {peer} is down: {reason}", local_hms())
            },
            json!({"type": "peer_down", "peer": peer, "reason": reason}),
        );
    }

    /// An error the user should see (the chat may continue).
    pub(crate) fn error(&self, text: &str) {
        self.emit(
            || format!("! {}", safe::line(text)),
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
        let path = self.path.map_or(String::new(), |p| format!(" ({p})"));
        self.emit(
            || {
                let peer = safe::line(peer);
                format!(
                    "* link to {peer}{path}: rtt {:.1} ms (var {:.1}, min {:.1}), loss {:.1} % \
                     ({} of {} packets), retransmissions {}, redundant copies {} ({} at the start), \
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
                    s.startup_copies,
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
            with_path(self.path, json!({
                "type": "stats", "peer": peer,
                "rtt_ms": ms(s.srtt), "rttvar_ms": ms(s.rttvar), "min_rtt_ms": ms(s.min_rtt),
                "loss_percent": s.loss_percent(),
                "packets_sent": s.packets_sent, "bytes_sent": s.bytes_sent,
                "packets_received": s.packets_received, "bytes_received": s.bytes_received,
                "packets_lost": s.packets_lost,
                "handshake_packets_lost": s.handshake_packets_lost,
                "retransmissions": s.retransmissions,
                "redundant_copies": s.redundant_copies,
                "startup_copies": s.startup_copies,
                "duplicates": s.duplicates_dropped, "reordered": s.out_of_order,
                "corrupt": s.corrupt_dropped, "malformed": s.malformed_dropped,
                "messages_sent": s.messages_sent, "messages_received": s.messages_received,
                "messages_acked": s.messages_acked,
                "spurious_losses": s.spurious_losses, "ptos": s.ptos,
                "cwnd": s.cwnd, "random_loss_periods": s.random_loss_periods,
                "congestion_periods": s.congestion_periods,
                "persistent_congestion": s.persistent_congestion,
            })),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_body_shows_controls_and_indents_its_lines() {
        assert!(matches!(
            message_body("hello ✓ 日本"),
            Cow::Borrowed("hello ✓ 日本")
        ));
        assert_eq!(
            message_body("evil \x1b]0;t\x07 \x08bs \u{202e}x"),
            "evil ^[]0;t^G ^Hbs <U+202E>x"
        );
        // A second line cannot pose as a line of chirp's own: it is indented.
        assert_eq!(
            message_body("one\n[12:00:00] <alice> forged\n\ttab"),
            "one\n    [12:00:00] <alice> forged\n            tab"
        );
        assert_eq!(message_body("over\rwrite"), "over^Mwrite");
    }

    #[test]
    fn the_final_line_break_a_tool_sends_is_dropped() {
        assert!(matches!(
            message_body("typed in nc\n"),
            Cow::Borrowed("typed in nc")
        ));
        assert_eq!(message_body("windows\r\n"), "windows");
        assert_eq!(message_body("two\n\n"), "two\n    ");
        assert_eq!(message_body(""), "");
    }

    #[test]
    fn bytes_that_are_not_utf8_show_as_hex() {
        assert_eq!(message_body_bytes(b"\xff\xfeok\x1b"), "\\xff\\xfeok^[");
        assert_eq!(message_body_bytes(b"a\nb\x9b\n"), "a\n    b\\x9b");
    }

    #[test]
    fn json_is_exact_and_harmless_on_a_terminal() {
        let text = "evil \x1b]0;t\x07 \u{9b}2J \x7f \u{202e}x\u{2028} \"q\" \\ ✓ 日本 👋";
        let line = json_line(&json!({"type": "message", "text": text, "n": 1}));
        assert!(!line.chars().any(safe::is_unsafe), "{line}");
        assert!(line.contains(r"\u009b2J \u007f \u202ex\u2028"), "{line}");
        assert!(line.contains("✓ 日本 👋"), "{line}");
        let back: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(back["text"], text, "the text survives exactly");
        assert_eq!(back["n"], 1);
        assert_eq!(json_line(&json!({"a": "plain"})), r#"{"a":"plain"}"#);
    }

    #[test]
    fn the_guard_keeps_our_line_breaks_and_marks_the_rest() {
        let clean = "* a status\n  with two lines ✓".to_owned();
        assert_eq!(guard(clean.clone()), clean);
        assert_eq!(
            guard("! bad \x1b[2J\u{9b}\u{2067}".into()),
            "! bad ^[[2J<U+009B><U+2067>"
        );
    }
}
