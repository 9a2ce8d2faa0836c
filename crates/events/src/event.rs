//! One raw event: a JSON object with an event time and an optional producer id.
//!
//! ```json
//! {"type":"pageview","url":"/about","visitor":"v17","ts":1732450000,
//!  "id":{"writer":"web-3","seq":7}}
//! ```
//! `ts` is the event time in seconds since 1970 (fractions allowed, microsecond
//! precision); an event without one takes its arrival time, fixed when it arrives (not
//! when a queue applies it later). `id` makes every update the event derives
//! idempotent: a re-sent event counts once.

use serde_json::{Map, Value as Json};
use speedlayer_core::UpdateId;

/// Latest accepted event time: 9999-12-31T23:59:59Z. Anything later is almost surely a
/// unit mistake (milliseconds sent as seconds).
pub const MAX_TS_SECS: i64 = 253_402_300_799;
/// Longest accepted writer name of an event id.
pub const MAX_WRITER_LEN: usize = 256;

/// Why an event was refused; the message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The bytes are not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// Valid JSON, but not an object.
    #[error("an event must be a JSON object")]
    NotObject,
    /// `ts` is not a number of seconds in range.
    #[error("'ts' must be a number of seconds since 1970, at most {MAX_TS_SECS}")]
    Timestamp,
    /// `id` is not `{"writer": string, "seq": integer}`.
    #[error("'id' must be {{\"writer\": non-empty string of at most 256 bytes, \"seq\": non-negative integer}}")]
    Id,
}

/// A parsed event. Invariant: `ts_us` is within `0..=MAX_TS_SECS` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's fields, `ts` and `id` included.
    pub fields: Map<String, Json>,
    /// Event time, microseconds since 1970.
    pub ts_us: i64,
    /// Producer id, when the event carries one.
    pub id: Option<UpdateId>,
}

impl Event {
    /// Parses one event from JSON bytes; `arrival_us` is its time when it has no `ts`.
    pub fn parse(bytes: &[u8], arrival_us: i64) -> Result<Event, EventError> {
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| EventError::Json(e.to_string()))?;
        Event::from_json(json, arrival_us)
    }

    /// An event from an already parsed JSON value.
    pub fn from_json(json: Json, arrival_us: i64) -> Result<Event, EventError> {
        let Json::Object(fields) = json else {
            return Err(EventError::NotObject);
        };
        Event::from_fields(fields, arrival_us)
    }

    /// An event from its fields (how RESP `XADD` builds one: every value a string, so a
    /// numeric string is accepted wherever a number is).
    pub fn from_fields(fields: Map<String, Json>, arrival_us: i64) -> Result<Event, EventError> {
        let ts_us = match fields.get("ts") {
            None | Some(Json::Null) => arrival_us,
            Some(ts) => ts_micros(ts).ok_or(EventError::Timestamp)?,
        };
        let id = match fields.get("id") {
            None | Some(Json::Null) => None,
            Some(id) => Some(parse_id(id).ok_or(EventError::Id)?),
        };
        Ok(Event { fields, ts_us, id })
    }

    /// The event time in whole seconds (rounded down).
    pub fn ts_secs(&self) -> i64 {
        self.ts_us.div_euclid(1_000_000)
    }
}

/// Seconds (a number, or a string holding one) as microseconds, if in range.
fn ts_micros(ts: &Json) -> Option<i64> {
    let secs = number(ts)?;
    if !(0.0..=MAX_TS_SECS as f64).contains(&secs) {
        return None;
    }
    match ts {
        // Whole seconds stay exact.
        Json::Number(n) if n.is_i64() => n.as_i64().map(|s| s * 1_000_000),
        _ => Some((secs * 1_000_000.0).round() as i64),
    }
}

/// A JSON number, or a string holding a decimal number, as f64.
pub(crate) fn number(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn parse_id(id: &Json) -> Option<UpdateId> {
    let obj = id.as_object()?;
    let writer = obj.get("writer")?.as_str()?;
    if writer.is_empty() || writer.len() > MAX_WRITER_LEN || obj.len() != 2 {
        return None;
    }
    let seq = match obj.get("seq")? {
        Json::Number(n) => n.as_u64()?,
        Json::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(UpdateId {
        writer: writer.to_string(),
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ts_and_id() {
        let e = Event::parse(
            br#"{"a":1,"ts":1732450000.25,"id":{"writer":"w","seq":3}}"#,
            5,
        )
        .unwrap();
        assert_eq!(e.ts_us, 1_732_450_000_250_000);
        assert_eq!(e.id.unwrap().seq, 3);
        assert_eq!(Event::parse(br#"{"a":1}"#, 5).unwrap().ts_us, 5);
    }

    #[test]
    fn refuses_bad_events() {
        assert_eq!(Event::parse(b"[1]", 0), Err(EventError::NotObject));
        assert!(matches!(Event::parse(b"{", 0), Err(EventError::Json(_))));
        assert_eq!(
            Event::parse(br#"{"ts":1732450000000}"#, 0),
            Err(EventError::Timestamp)
        );
        assert_eq!(Event::parse(br#"{"ts":-1}"#, 0), Err(EventError::Timestamp));
        assert_eq!(
            Event::parse(br#"{"ts":"x"}"#, 0),
            Err(EventError::Timestamp)
        );
        assert_eq!(
            Event::parse(br#"{"id":{"writer":"","seq":1}}"#, 0),
            Err(EventError::Id)
        );
        assert_eq!(
            Event::parse(br#"{"id":{"writer":"w","seq":-1}}"#, 0),
            Err(EventError::Id)
        );
    }
}
