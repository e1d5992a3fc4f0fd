//! Checks a written trace against the qlog 0.3 schema (feature `validate`; for tests).
//!
//! Every record must be RFC 7464 JSON-SEQ (separator, one JSON text, newline). The header
//! must parse as the qlog 0.3 `QlogSeq` of quiche's `qlog` crate (0.13, the data model of
//! that schema version), with `qlog_version` "0.3" and `qlog_format` "JSON-SEQ". Every event
//! must be an object of exactly `time` (a number, never decreasing: qvis needs them in
//! order), `name` (`category:event`) and `data` (an object). Events of the QUIC categories
//! must deserialize as the `qlog` crate's typed events (which checks each field's name and
//! type); `chirp:` events are checked against the fields `chirp-qlog` documents.

use serde_json::{Map, Value};

/// A trace that passed [`check`].
#[derive(Debug, Clone)]
pub struct CheckedTrace {
    /// The header.
    pub header: qlog::QlogSeq,
    /// The events, in order, as JSON.
    pub events: Vec<Value>,
}

impl CheckedTrace {
    /// The events called `name` (e.g. `"transport:packet_sent"`).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["name"] == name)
    }
}

/// The QUIC event names `chirp-qlog` writes (all in the qlog 0.3 QUIC event definitions).
const QUIC_EVENTS: &[&str] = &[
    "connectivity:connection_started",
    "connectivity:connection_state_updated",
    "transport:packet_sent",
    "transport:packet_received",
    "transport:packet_dropped",
    "recovery:packet_lost",
    "recovery:metrics_updated",
];

/// Checks a whole JSON-SEQ file; `Err` says which record is wrong and why.
pub fn check(bytes: &[u8]) -> Result<CheckedTrace, String> {
    let Some((&first, _)) = bytes.split_first() else {
        return Err("empty file".into());
    };
    if first != crate::RECORD_SEPARATOR {
        return Err("the file does not start with a record separator (0x1E)".into());
    }
    let mut records = bytes[1..].split(|&b| b == crate::RECORD_SEPARATOR);
    let header = records.next().ok_or("no header record")?;
    let header = text(header).map_err(|e| format!("header: {e}"))?;
    let header: qlog::QlogSeq =
        serde_json::from_slice(header).map_err(|e| format!("header: not a qlog QlogSeq: {e}"))?;
    if header.qlog_version != crate::QLOG_VERSION || header.qlog_format != crate::QLOG_FORMAT {
        return Err(format!(
            "header: qlog_version {:?}, qlog_format {:?}",
            header.qlog_version, header.qlog_format
        ));
    }
    let mut events = Vec::new();
    let mut last_time = 0.0;
    for (i, record) in records.enumerate() {
        let n = i + 1;
        let json = text(record).map_err(|e| format!("record {n}: {e}"))?;
        let event = check_event(json).map_err(|e| format!("record {n}: {e}"))?;
        let time = event["time"].as_f64().unwrap_or(f64::NAN);
        if time < last_time {
            return Err(format!("record {n}: time {time} before {last_time}"));
        }
        last_time = time;
        events.push(event);
    }
    Ok(CheckedTrace { header, events })
}

/// One record's JSON text: everything up to its closing newline.
fn text(record: &[u8]) -> Result<&[u8], String> {
    match record.split_last() {
        Some((b'\n', json)) if !json.contains(&b'\n') => Ok(json),
        _ => Err("not one line ending in a newline".into()),
    }
}

fn check_event(json: &[u8]) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["data", "name", "time"] {
        return Err(format!("fields {keys:?}, expected data, name, time"));
    }
    let time = obj["time"].as_f64().ok_or("time is not a number")?;
    if !(time >= 0.0 && time.is_finite()) {
        return Err(format!("time {time}"));
    }
    let name = obj["name"].as_str().ok_or("name is not a string")?;
    let data = obj["data"].as_object().ok_or("data is not an object")?;
    match name.split_once(':') {
        Some(("chirp", event)) => check_chirp(event, data).map_err(|e| format!("{name}: {e}"))?,
        Some(_) if QUIC_EVENTS.contains(&name) => {
            // The typed model rejects a missing or mistyped field, an unknown enum value
            // (packet type, frame type, trigger, state) and an unknown event name.
            let typed: qlog::events::Event = serde_json::from_value(value.clone())
                .map_err(|e| format!("{name}: not a qlog 0.3 event: {e}"))?;
            if !typed.ex_data.is_empty() {
                return Err(format!(
                    "{name}: unexpected fields {:?}",
                    typed.ex_data.keys()
                ));
            }
        }
        _ => return Err(format!("unknown event name {name:?}")),
    }
    Ok(value)
}

/// The field types of `chirp:` events.
#[derive(Clone, Copy)]
enum Ty {
    Uint,
    Bool,
    Str,
}

fn check_chirp(event: &str, data: &Map<String, Value>) -> Result<(), String> {
    let fields: &[(&str, Ty)] = match event {
        "redundant_copy" => &[
            ("packet_number", Ty::Uint),
            ("offset", Ty::Uint),
            ("length", Ty::Uint),
            ("startup", Ty::Bool),
        ],
        "key_updated" => &[
            ("owner", Ty::Str),
            ("key_phase", Ty::Uint),
            ("generation", Ty::Uint),
        ],
        "path_updated" => &[("change", Ty::Str), ("old", Ty::Str), ("new", Ty::Str)],
        "became_server" => &[("odcid", Ty::Str)],
        "events_dropped" => &[("count", Ty::Uint)],
        _ => return Err("unknown chirp event".into()),
    };
    if data.len() != fields.len() {
        return Err(format!("{} fields, expected {}", data.len(), fields.len()));
    }
    for &(field, ty) in fields {
        let v = data.get(field).ok_or_else(|| format!("no {field}"))?;
        let ok = match ty {
            Ty::Uint => v.is_u64(),
            Ty::Bool => v.is_boolean(),
            Ty::Str => v.is_string(),
        };
        if !ok {
            return Err(format!("{field} has the wrong type: {v}"));
        }
    }
    Ok(())
}
