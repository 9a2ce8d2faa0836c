//! Batch views: what the batch layer hands over, and where its coverage ends.
//!
//! A Lambda Architecture's batch layer recomputes views from the master dataset; once a
//! run covers every event before time T, speedlayer answers `batch(T) ⊕ realtime since
//! T`. Two pure pieces live here: the [`BatchBoundary`] T (which epochs the batch view
//! owns, so realtime epochs before it can be dropped whole) and the [`BatchValue`] of one
//! imported row (exact, unlike a realtime HyperLogLog), with its JSON form, its canonical
//! byte form, and how it joins a realtime [`Reading`](crate::Reading).

use serde_json::Value as Json;

use crate::codec::{write_varint, write_zigzag, DecodeError, Reader};
use crate::epoch::Epoch;
use crate::op::ApplyCtx;
use crate::reading::Reading;
use crate::value::{TypeMismatch, Value};
use crate::value_type::ValueType;

/// The time a batch view covers until: every event with `ts < T` (Unix seconds) is in the
/// batch view, and none at or after it.
///
/// Invariant: `T` is a multiple of its view's epoch length (checked by
/// [`BatchBoundary::for_view`]), so every realtime epoch lies wholly before or wholly
/// after it and an answer never splits an epoch. `BatchBoundary::NONE` (T = 0) is the
/// state of a view no batch has been imported into: it covers nothing.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct BatchBoundary(pub u64);

/// Why a boundary is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundaryError {
    /// Not on an epoch boundary of the view: an epoch would be half batch, half realtime.
    #[error("covers_until={secs} is not on an epoch boundary of this view (epoch_secs={epoch_secs}); the nearest are {before} and {after}")]
    NotAligned {
        /// The refused time.
        secs: u64,
        /// The view's epoch length.
        epoch_secs: u64,
        /// The aligned time at or before it.
        before: u64,
        /// The aligned time after it.
        after: u64,
    },
    /// Zero covers nothing; a batch view must cover some time.
    #[error("covers_until must be after 0 (Unix seconds)")]
    Zero,
    /// The epoch length is zero (never for a declared view).
    #[error("epoch length must be at least one second")]
    ZeroEpoch,
}

impl BatchBoundary {
    /// No batch imported: every realtime epoch is live.
    pub const NONE: BatchBoundary = BatchBoundary(0);

    /// `secs` as the boundary of a view with epochs of `epoch_secs`, if it is aligned.
    pub fn for_view(secs: u64, epoch_secs: u64) -> Result<BatchBoundary, BoundaryError> {
        if epoch_secs == 0 {
            return Err(BoundaryError::ZeroEpoch);
        }
        if secs == 0 {
            return Err(BoundaryError::Zero);
        }
        if !secs.is_multiple_of(epoch_secs) {
            let before = secs - secs % epoch_secs;
            return Err(BoundaryError::NotAligned {
                secs,
                epoch_secs,
                before,
                after: before.saturating_add(epoch_secs),
            });
        }
        Ok(BatchBoundary(secs))
    }

    /// The first epoch the realtime layer still owns: epochs before it are the batch
    /// view's (their realtime data is superseded and can be dropped whole).
    pub fn first_realtime_epoch(self, epoch_secs: u64) -> Epoch {
        Epoch(self.0 / epoch_secs.max(1))
    }

    /// The boundary's time in seconds (0 for [`BatchBoundary::NONE`]).
    pub fn secs(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for BatchBoundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One row's value in a batch view: exact, recomputed by the batch layer from the master
/// dataset.
///
/// Rows and realtime epochs hold disjoint events (before and after the boundary), so a
/// read combines them like epochs: counters add, idempotent types join; an exact distinct
/// count adds to a realtime sketch's estimate (see [`Reading::Distinct`](crate::Reading)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchValue {
    /// A counter's or gcounter's exact total.
    Count(i64),
    /// A state of an idempotent type (max, min, register, set, or an hll sketch).
    State(Value),
    /// An exact distinct count, for an hll view.
    Distinct(u64),
}

/// Why a batch row's value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value for a {value_type} view: {reason}")]
pub struct BatchValueError {
    /// The view's type.
    pub value_type: ValueType,
    /// What is wrong, and what was expected.
    pub reason: String,
}

const COUNT: u8 = 0;
const STATE: u8 = 1;
const DISTINCT: u8 = 2;

/// The actor batch states are written under. Empty: no writer id or node id is empty, so
/// a batch set member's dot never collides with a realtime one.
const BATCH_ACTOR: &str = "";

impl BatchValue {
    /// This batch value restricted to `members` when it is a set state
    /// ([`Value::restricted_to`]); any other whole.
    pub fn restricted_to(&self, members: &[Vec<u8>]) -> BatchValue {
        match self {
            BatchValue::State(value) => BatchValue::State(value.restricted_to(members)),
            other => other.clone(),
        }
    }

    /// Parses a row's JSON value for a view of `value_type` whose batch covers until
    /// `boundary`. Accepted forms: counter/gcounter an integer (gcounter ≥ 0); max/min an
    /// integer; register a string (it is older than every realtime write: its time is
    /// just before the boundary); set an array of strings; hll an integer ≥ 0 (an exact
    /// distinct count) or `{"sketch": "<hex>"}` (registers in the canonical encoding).
    pub fn from_json(
        value_type: ValueType,
        json: &Json,
        boundary: BatchBoundary,
    ) -> Result<BatchValue, BatchValueError> {
        let refuse = |reason: &str| BatchValueError {
            value_type,
            reason: reason.to_string(),
        };
        let ctx = ApplyCtx {
            node: BATCH_ACTOR,
            id: None,
            ts_us: i64::try_from(boundary.0.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX)
                .saturating_sub(1),
            unique: 0,
        };
        let mut state = Value::new(value_type);
        match (value_type, &mut state) {
            (ValueType::Counter | ValueType::Gcounter, _) => {
                let total = json
                    .as_i64()
                    .ok_or_else(|| refuse("expected an integer total"))?;
                if value_type == ValueType::Gcounter && total < 0 {
                    return Err(refuse("a gcounter total cannot be negative"));
                }
                return Ok(BatchValue::Count(total));
            }
            (ValueType::Max | ValueType::Min, Value::Max(e) | Value::Min(e)) => {
                let v = json.as_i64().ok_or_else(|| refuse("expected an integer"))?;
                if value_type == ValueType::Max {
                    e.apply_max(v);
                } else {
                    e.apply_min(v);
                }
            }
            (ValueType::Register, Value::Register(r)) => {
                let v = json.as_str().ok_or_else(|| refuse("expected a string"))?;
                r.set(v.as_bytes(), &ctx);
            }
            (ValueType::Set, Value::Set(s)) => {
                let members = json
                    .as_array()
                    .ok_or_else(|| refuse("expected an array of strings"))?
                    .iter()
                    .map(|m| m.as_str().map(|m| m.as_bytes().to_vec()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| refuse("expected an array of strings"))?;
                s.add(&members, &ctx);
            }
            (ValueType::Hll, _) => {
                if let Some(count) = json.as_u64() {
                    return Ok(BatchValue::Distinct(count));
                }
                let hex = json
                    .get("sketch")
                    .and_then(Json::as_str)
                    .ok_or_else(|| {
                        refuse("expected an exact distinct count (integer >= 0) or {\"sketch\": \"<hex>\"}")
                    })?;
                let bytes = decode_hex(hex).ok_or_else(|| refuse("sketch is not hex"))?;
                let mut encoded = vec![ValueType::Hll.tag()];
                encoded.extend_from_slice(&bytes);
                let sketch = Value::decode(&encoded)
                    .map_err(|e| refuse(&format!("sketch does not decode: {e}")))?;
                return Ok(BatchValue::State(sketch));
            }
            _ => return Err(refuse("unsupported type")),
        }
        Ok(BatchValue::State(state))
    }

    /// True when the value may live in a view of `value_type`.
    pub fn fits(&self, value_type: ValueType) -> bool {
        match self {
            BatchValue::Count(n) => {
                value_type == ValueType::Counter || (value_type == ValueType::Gcounter && *n >= 0)
            }
            BatchValue::State(v) => v.value_type() == value_type,
            BatchValue::Distinct(_) => value_type == ValueType::Hll,
        }
    }

    /// Canonical bytes: equal values encode equally.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            BatchValue::Count(n) => {
                out.push(COUNT);
                write_zigzag(&mut out, *n);
            }
            BatchValue::State(v) => {
                out.push(STATE);
                v.encode_into(&mut out);
            }
            BatchValue::Distinct(n) => {
                out.push(DISTINCT);
                write_varint(&mut out, *n);
            }
        }
        out
    }

    /// Inverse of [`BatchValue::encode`]; total on arbitrary bytes.
    pub fn decode(bytes: &[u8]) -> Result<BatchValue, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.read_u8()? {
            COUNT => {
                let n = r.read_zigzag()?;
                r.finish()?;
                Ok(BatchValue::Count(n))
            }
            STATE => Ok(BatchValue::State(Value::decode(&bytes[1..])?)),
            DISTINCT => {
                let n = r.read_varint()?;
                r.finish()?;
                Ok(BatchValue::Distinct(n))
            }
            _ => Err(DecodeError::Invalid("unknown batch value tag")),
        }
    }
}

/// One key's (or range row's) disjoint parts for one boundary: its batch row and its
/// realtime states per epoch at or after the boundary (oldest first). What a replica
/// answers; a coordinator joins replicas' parts with [`RowParts::join`] and only then
/// combines the parts into a [`Reading`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowParts {
    /// The batch view's row, if it has one.
    pub batch: Option<BatchValue>,
    /// Realtime states per epoch, oldest first, one entry per epoch.
    pub epochs: Vec<(Epoch, Value)>,
}

impl RowParts {
    /// Joins another replica's parts of the same row and boundary: epoch states merge
    /// (they are CRDT replicas); batch rows are identical on every replica (one import),
    /// so either is kept. An epoch state of another type is a [`TypeMismatch`], and this
    /// side's state is kept.
    pub fn join(&mut self, other: &RowParts) -> Result<(), TypeMismatch> {
        if self.batch.is_none() {
            self.batch.clone_from(&other.batch);
        }
        let mut mismatch = Ok(());
        for (epoch, state) in &other.epochs {
            match self.epochs.binary_search_by_key(epoch, |(e, _)| *e) {
                Ok(at) => {
                    if let Err(e) = self.epochs[at].1.merge(state) {
                        mismatch = Err(e);
                    }
                }
                Err(at) => self.epochs.insert(at, (*epoch, state.clone())),
            }
        }
        mismatch
    }

    /// The batch row and the realtime epochs, each as a reading (`None` when absent).
    /// `value_type` is the view's type (`None` in an `any` view, which has no batch rows).
    pub fn split(
        &self,
        value_type: Option<ValueType>,
    ) -> Result<(Option<Reading>, Option<Reading>), TypeMismatch> {
        let mut batch = None;
        if let (Some(t), Some(row)) = (value_type, &self.batch) {
            Reading::add_batch_to(&mut batch, row, t)?;
        }
        let mut realtime = None;
        for (_, state) in &self.epochs {
            Reading::add_part_to(&mut realtime, state)?;
        }
        Ok((batch, realtime))
    }

    /// The answer of a batch part and a realtime part ([`RowParts::split`]): `batch ⊕
    /// realtime`.
    pub fn join_split(
        batch: Option<Reading>,
        realtime: Option<Reading>,
    ) -> Result<Option<Reading>, TypeMismatch> {
        match (batch, realtime) {
            (Some(mut batch), Some(realtime)) => {
                batch.combine(&realtime)?;
                Ok(Some(batch))
            }
            (batch, realtime) => Ok(batch.or(realtime)),
        }
    }

    /// Every part combined: `batch ⊕ realtime` (see [`RowParts::split`]).
    pub fn reading(&self, value_type: Option<ValueType>) -> Result<Option<Reading>, TypeMismatch> {
        let (batch, realtime) = self.split(value_type)?;
        Self::join_split(batch, realtime)
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: BatchBoundary = BatchBoundary(7200);

    #[test]
    fn boundaries_must_be_aligned_and_after_zero() {
        assert_eq!(BatchBoundary::for_view(7200, 3600), Ok(BatchBoundary(7200)));
        assert_eq!(
            BatchBoundary::for_view(7201, 3600),
            Err(BoundaryError::NotAligned {
                secs: 7201,
                epoch_secs: 3600,
                before: 7200,
                after: 10800
            })
        );
        assert_eq!(BatchBoundary::for_view(0, 3600), Err(BoundaryError::Zero));
        assert_eq!(T.first_realtime_epoch(3600), Epoch(2));
        // The last microsecond before T is the batch's; T itself is realtime.
        let epoch = |ts_us| Epoch::containing(ts_us, 3600).unwrap();
        assert!(epoch(7_199_999_999) < T.first_realtime_epoch(3600));
        assert!(epoch(7_200_000_000) >= T.first_realtime_epoch(3600));
        assert!(epoch(0) >= BatchBoundary::NONE.first_realtime_epoch(3600));
    }

    #[test]
    fn json_forms_by_type() {
        let v = |t, j: Json| BatchValue::from_json(t, &j, T);
        assert_eq!(v(ValueType::Counter, json!(-5)), Ok(BatchValue::Count(-5)));
        assert!(v(ValueType::Gcounter, json!(-5)).is_err());
        assert!(v(ValueType::Counter, json!("5")).is_err());
        assert_eq!(v(ValueType::Hll, json!(12)), Ok(BatchValue::Distinct(12)));
        assert!(v(ValueType::Hll, json!(-1)).is_err());
        assert!(v(ValueType::Hll, json!({"sketch": "zz"})).is_err());
        let set = v(ValueType::Set, json!(["a", "b"])).unwrap();
        let BatchValue::State(Value::Set(s)) = &set else {
            panic!("a set")
        };
        assert_eq!(s.members(), vec![b"a".as_slice(), b"b".as_slice()]);
        assert!(v(ValueType::Set, json!(["a", 1])).is_err());
        let reg = v(ValueType::Register, json!("x")).unwrap();
        let BatchValue::State(Value::Register(r)) = &reg else {
            panic!("a register")
        };
        assert_eq!(r.timestamp_us(), Some(7_199_999_999));
        let max = v(ValueType::Max, json!(3)).unwrap();
        assert!(max.fits(ValueType::Max) && !max.fits(ValueType::Counter));
    }

    #[test]
    fn a_sketch_round_trips_through_hex() {
        let mut sketch = Value::new(ValueType::Hll);
        if let Value::Hll(h) = &mut sketch {
            for i in 0..100 {
                h.add(format!("m{i}").as_bytes());
            }
        }
        let hex: String = sketch.encode()[1..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let parsed = BatchValue::from_json(ValueType::Hll, &json!({ "sketch": hex }), T).unwrap();
        assert_eq!(parsed, BatchValue::State(sketch));
        // A sketch is not exact: an answer holding it says so.
        let mut reading = None;
        Reading::add_batch_to(&mut reading, &parsed, ValueType::Hll).unwrap();
        assert!(reading.is_some_and(|r| r.is_approximate()));
    }

    #[test]
    fn encodings_round_trip_and_refuse_garbage() {
        for value in [
            BatchValue::Count(-3),
            BatchValue::Distinct(99),
            BatchValue::State(Value::new(ValueType::Set)),
        ] {
            let bytes = value.encode();
            assert_eq!(BatchValue::decode(&bytes), Ok(value));
            assert!(BatchValue::decode(&bytes[..bytes.len() - 1]).is_err());
        }
        assert!(BatchValue::decode(&[9]).is_err());
        assert!(BatchValue::decode(&[]).is_err());
    }

    #[test]
    fn exact_distinct_counts_add_to_realtime_sketches_and_say_so() {
        let mut reading = None;
        Reading::add_batch_to(&mut reading, &BatchValue::Distinct(1000), ValueType::Hll).unwrap();
        assert_eq!(reading.as_ref().map(Reading::to_json), Some(json!(1000)));
        assert_eq!(reading.as_ref().map(Reading::is_approximate), Some(false));
        let mut sketch = Value::new(ValueType::Hll);
        if let Value::Hll(h) = &mut sketch {
            h.add(b"late visitor");
        }
        let mut reading = reading.unwrap();
        reading.add_part(&sketch).unwrap();
        assert_eq!(reading.to_json(), json!(1001));
        assert!(reading.is_approximate());
    }
}
