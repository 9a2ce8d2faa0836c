//! The JSON form of an update, and its translation into a storage [`Update`].
//!
//! ```json
//! {"key":"/about","clustering":"2024-11-24T12","op":"incr","by":1,
//!  "ts":1732450000,"id":{"writer":"w1","seq":7}}
//! ```
//! Operands by op: `incr`/`decr` take `by` (default 1); `max`/`min` an integer `value`;
//! `set` a string `value`; `add`/`remove`/`pfadd` a `members` array of strings. `ts` is
//! the event time in seconds since 1970 (fractions allowed, microsecond precision); the
//! arrival time when absent.

use serde::Deserialize;
use speedlayer_api::{Update, MAX_TS_US};
use speedlayer_core::{Key, Op, UpdateId};

use super::error::ApiError;

/// One update as sent over HTTP; unknown fields are refused so typos do not pass silently.
/// A body is one of these or a JSON array of them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// Partition key.
    key: String,
    /// Clustering key (e.g. an hour bucket); empty when absent.
    #[serde(default)]
    clustering: String,
    /// `incr`, `decr`, `set`, `add`, `remove`, `pfadd`, `max`, `min`, `merge` or
    /// `delete`, as the view's type allows.
    op: String,
    /// Amount of `incr`/`decr` (default 1).
    by: Option<i64>,
    /// Operand of `set`, `max`, `min`, `merge`.
    value: Option<serde_json::Value>,
    /// Members of `add`, `remove`, `pfadd`.
    members: Option<Vec<String>>,
    /// Event time in Unix seconds (a number or a numeric string); arrival time when absent.
    ts: Option<serde_json::Value>,
    /// Producer id `{"writer": "...", "seq": n}`: the update counts once however often
    /// it is retried, through any node.
    #[schema(value_type = Option<Object>)]
    id: Option<UpdateId>,
}

/// Parses a request body holding one update object or a JSON array of them.
pub fn parse_updates(body: &[u8]) -> Result<Vec<Update>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let bodies: Vec<UpdateBody> = match first {
        None => return Err(ApiError::bad_request("malformed_json", "empty body")),
        Some(b'[') => serde_json::from_slice(body).map_err(json_error)?,
        Some(_) => vec![serde_json::from_slice(body).map_err(json_error)?],
    };
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            body.into_update().map_err(|mut e| {
                e.detail = format!("update #{index}: {}", e.detail);
                e
            })
        })
        .collect()
}

fn json_error(e: serde_json::Error) -> ApiError {
    ApiError::bad_request("malformed_json", e.to_string())
}

impl UpdateBody {
    fn into_update(self) -> Result<Update, ApiError> {
        let key = Key::new(self.key.into_bytes(), self.clustering.into_bytes())
            .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
        let op = match self.op.as_str() {
            "incr" => Op::Incr(self.by.unwrap_or(1)),
            "decr" => Op::Incr(
                self.by
                    .unwrap_or(1)
                    .checked_neg()
                    .ok_or_else(|| bad_operand("'by' is out of range"))?,
            ),
            "max" => Op::Max(integer_value(self.value)?),
            "min" => Op::Min(integer_value(self.value)?),
            "set" => Op::Set(string_value(self.value)?.into_bytes()),
            "add" => Op::Add(members(self.members)?),
            "remove" => Op::Remove(members(self.members)?),
            "pfadd" => Op::PfAdd(members(self.members)?),
            other => {
                return Err(ApiError::bad_request(
                    "unknown_op",
                    format!(
                        "unknown op '{other}' (expected incr, decr, max, min, set, add, remove or pfadd)"
                    ),
                ))
            }
        };
        let ts_us = match self.ts {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(ts)) => Some(seconds_to_us(&ts)?),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_timestamp",
                    format!("ts {other} must be a number of seconds since 1970"),
                ))
            }
        };
        Ok(Update {
            key,
            op,
            ts_us,
            id: self.id,
        })
    }
}

fn bad_operand(detail: &str) -> ApiError {
    ApiError::bad_request("invalid_operand", detail)
}

fn integer_value(value: Option<serde_json::Value>) -> Result<i64, ApiError> {
    value
        .as_ref()
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| bad_operand("this op needs an integer 'value'"))
}

fn string_value(value: Option<serde_json::Value>) -> Result<String, ApiError> {
    match value {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(bad_operand("'set' needs a string 'value'")),
    }
}

fn members(members: Option<Vec<String>>) -> Result<Vec<Vec<u8>>, ApiError> {
    match members {
        Some(m) if !m.is_empty() => Ok(m.into_iter().map(String::into_bytes).collect()),
        _ => Err(bad_operand("this op needs a non-empty 'members' array")),
    }
}

/// Converts a JSON number of seconds since 1970 into microseconds, refusing what cannot
/// be an event time (negative, past year 9999, not finite).
pub fn seconds_to_us(ts: &serde_json::Number) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_timestamp",
            format!("ts {ts} must be seconds since 1970, between 0 and 253402300799"),
        )
    };
    let us = if let Some(secs) = ts.as_i64() {
        secs.checked_mul(1_000_000).ok_or_else(invalid)?
    } else {
        let secs = ts.as_f64().ok_or_else(invalid)?;
        let us = (secs * 1_000_000.0).round();
        if !us.is_finite() || us < 0.0 || us > MAX_TS_US as f64 {
            return Err(invalid());
        }
        us as i64
    };
    if !(0..=MAX_TS_US).contains(&us) {
        return Err(invalid());
    }
    Ok(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_list_bodies_parse() {
        let one = parse_updates(br#"{"key":"a","op":"incr","by":2,"ts":1732450000}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].op, Op::Incr(2));
        assert_eq!(one[0].ts_us, Some(1_732_450_000_000_000));
        let many = parse_updates(
            br#" [{"key":"a","op":"decr"},{"key":"b","op":"pfadd","members":["x"]}]"#,
        )
        .unwrap();
        assert_eq!(many[0].op, Op::Incr(-1));
        assert_eq!(many[1].op, Op::PfAdd(vec![b"x".to_vec()]));
    }

    #[test]
    fn bad_bodies_are_client_errors() {
        for body in [
            &b""[..],
            b"{",
            br#"{"key":"a","op":"explode"}"#,
            br#"{"key":"a","op":"max"}"#,
            br#"{"key":"a","op":"incr","ts":-5}"#,
            br#"{"key":"a","op":"incr","ts":1e300}"#,
            br#"{"key":"a","op":"incr","ts":"yesterday"}"#,
            br#"{"key":"","op":"incr"}"#,
            br#"{"key":"a","op":"incr","bogus":1}"#,
            br#"{"key":"a","op":"decr","by":-9223372036854775808}"#,
        ] {
            let e = parse_updates(body).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body:?}");
        }
    }
}
