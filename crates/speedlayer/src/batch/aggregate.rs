//! The small batch layer's arithmetic: one view recomputed **exactly** from raw events
//! through its event mapping. Pure (no I/O, no clock), so what `batch-export` computes is
//! unit-tested apart from files, terminals and nodes.
//!
//! An [`Aggregator`] takes one NDJSON line at a time ([`Aggregator::feed`]) and keeps one
//! entry per output row, keyed by (partition, clustering) in a `BTreeMap` so the rows come
//! out sorted. What each type keeps, and why it is exact where the realtime layer may
//! approximate:
//! - `counter`/`gcounter`: the sum, plus the `(writer, seq)` ids already counted on the
//!   row, with no window (the realtime layer forgets ids 1,024 seqs back): an event
//!   re-sent with its id counts once per row, as the realtime layer promises.
//! - `max`/`min`: the extremum.
//! - `register`: the value of the latest event time; on a tie the later line wins.
//! - `set`: adds and removes applied in input order; an add whose id was already applied
//!   to the row is a retry and stays ignored (the realtime OR-set keeps its dot as a
//!   tombstone, so a re-sent add does not undo a later remove).
//! - `hll`: every distinct member, so the row's value is the exact distinct count.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value as Json;
use speedlayer_core::{Key, Op, UpdateId, ValueType};
use speedlayer_events::{Event, Mapping, MappingError, MappingSpec, MAX_TS_SECS};

/// Why a line did not count, so the summary can tell a user which part of their data
/// the batch left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not an event: not JSON, not an object, or a bad `ts` or `id`.
    Malformed,
    /// No `ts`: the event cannot be placed before or after the boundary (the realtime
    /// layer gives such events their arrival time, which a file no longer has).
    NoTs,
    /// `ts` at or after the boundary: the realtime layer's part.
    AfterBoundary,
    /// The mapping's filter leaves the event out.
    Filtered,
    /// The event passes the filter but makes no valid update: a missing field, a value
    /// of the wrong kind, a negative amount for a gcounter. The realtime layer skips
    /// these too.
    Unmappable,
}

/// What one line did; the caller reports the reasons of skipped lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fed {
    /// An empty line: not an event, not counted anywhere.
    Blank,
    /// The event's update was applied to its row.
    Counted,
    /// The event carries an id already applied to its row: a retry, counted once.
    Duplicate,
    /// The event was left out, and why (a message naming the problem).
    Skipped(Skip, String),
}

/// Tallies of the lines fed, for the summary a user checks the batch against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Non-empty lines.
    pub read: u64,
    /// Events whose update was applied.
    pub counted: u64,
    /// Events whose id was already applied to their row.
    pub duplicates: u64,
    /// Lines that are not events.
    pub malformed: u64,
    /// Events without `ts`.
    pub no_ts: u64,
    /// Events at or after the boundary.
    pub after_boundary: u64,
    /// Events the filter leaves out.
    pub filtered: u64,
    /// Events passing the filter that make no valid update.
    pub unmappable: u64,
}

impl Stats {
    /// Every event left out, whatever the reason.
    pub fn skipped(&self) -> u64 {
        self.malformed + self.no_ts + self.after_boundary + self.filtered + self.unmappable
    }
}

/// A counter row's sum left the range of a 64-bit integer: the batch cannot state it
/// exactly, so the export stops rather than write a wrong value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// The row's partition key.
    pub key: String,
    /// The row's clustering key.
    pub clustering: String,
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the sum of row (key {:?}, clustering {:?}) leaves the 64-bit integer range",
            self.key, self.clustering
        )
    }
}

impl std::error::Error for Overflow {}

/// One output row in the import format: `{"key":..,"clustering":..,"value":..}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchRow {
    /// Partition key.
    pub key: String,
    /// Clustering key (empty when the mapping has none).
    pub clustering: String,
    /// The row's exact value, shaped by the view's type.
    pub value: RowValue,
}

/// A row's value as the import format spells it for each type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RowValue {
    /// counter, gcounter, max, min: an integer.
    Int(i64),
    /// register: a string.
    Text(String),
    /// set: the members, sorted.
    Members(Vec<String>),
    /// hll: the exact number of distinct members.
    Distinct(u64),
}

/// A writer interned to a number, so a row's seen ids cost 12 bytes each rather than a
/// copy of the writer's name.
type SeenId = (u32, u64);

/// What one row keeps while events are fed.
#[derive(Debug)]
enum State {
    Sum {
        total: i64,
        seen: HashSet<SeenId>,
    },
    Max(i64),
    Min(i64),
    Register {
        ts_us: i64,
        value: Vec<u8>,
    },
    Set {
        members: BTreeSet<Vec<u8>>,
        seen_adds: HashSet<SeenId>,
    },
    Distinct(HashSet<Vec<u8>>),
}

impl State {
    /// The state of a row before its first update.
    fn empty(ty: ValueType) -> State {
        match ty {
            ValueType::Counter | ValueType::Gcounter => State::Sum {
                total: 0,
                seen: HashSet::new(),
            },
            ValueType::Max => State::Max(i64::MIN),
            ValueType::Min => State::Min(i64::MAX),
            ValueType::Register => State::Register {
                ts_us: i64::MIN,
                value: Vec::new(),
            },
            ValueType::Set => State::Set {
                members: BTreeSet::new(),
                seen_adds: HashSet::new(),
            },
            ValueType::Hll => State::Distinct(HashSet::new()),
        }
    }

    /// The row's final value.
    fn value(self) -> RowValue {
        match self {
            State::Sum { total, .. } => RowValue::Int(total),
            State::Max(v) | State::Min(v) => RowValue::Int(v),
            State::Register { value, .. } => RowValue::Text(text(value)),
            State::Set { members, .. } => {
                RowValue::Members(members.into_iter().map(text).collect())
            }
            State::Distinct(members) => RowValue::Distinct(members.len() as u64),
        }
    }
}

/// Bytes that came from JSON strings as a string again (the mapping builds keys and
/// members from strings, so they are UTF-8; anything else is replaced, never a panic).
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Recomputes one view from its events: feed every line, then take the rows.
#[derive(Debug)]
pub struct Aggregator {
    mapping: Mapping,
    value_type: ValueType,
    /// Events with `ts_us` below this count.
    until_us: i64,
    rows: BTreeMap<Key, State>,
    writers: HashMap<String, u32>,
    stats: Stats,
}

impl Aggregator {
    /// An aggregator for a view of `value_type` with `mapping`, counting events before
    /// `covers_until` (Unix seconds). Compiles the mapping against the type, so a mapping
    /// the node would refuse is refused here with the node's message.
    pub fn new(
        mapping: &MappingSpec,
        value_type: ValueType,
        covers_until: i64,
    ) -> Result<Aggregator, MappingError> {
        Ok(Aggregator {
            mapping: Mapping::compile(mapping, Some(value_type))?,
            value_type,
            until_us: covers_until.clamp(0, MAX_TS_SECS + 1) * 1_000_000,
            rows: BTreeMap::new(),
            writers: HashMap::new(),
            stats: Stats::default(),
        })
    }

    /// The tallies so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Rows so far (one per distinct (key, clustering) counted).
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Feeds one NDJSON line (surrounding whitespace, a trailing `\r` included, is
    /// ignored). Fails only when a counter row leaves the i64 range.
    pub fn feed(&mut self, line: &[u8]) -> Result<Fed, Overflow> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(Fed::Blank);
        }
        self.stats.read += 1;
        // Arrival time 0 is never used: events without `ts` are skipped below.
        let event = match Event::parse(line, 0) {
            Ok(event) => event,
            Err(e) => return Ok(self.skip(Skip::Malformed, e.to_string())),
        };
        if matches!(event.fields.get("ts"), None | Some(Json::Null)) {
            return Ok(self.skip(Skip::NoTs, "the event has no 'ts'".into()));
        }
        if event.ts_us >= self.until_us {
            return Ok(self.skip(Skip::AfterBoundary, "ts at or after the boundary".into()));
        }
        let derived = match self.mapping.derive(&event) {
            Ok(Some(derived)) => derived,
            Ok(None) => return Ok(self.skip(Skip::Filtered, "left out by the filter".into())),
            Err(reason) => return Ok(self.skip(Skip::Unmappable, reason)),
        };
        if let Err(reason) = self.check(&derived.op) {
            return Ok(self.skip(Skip::Unmappable, reason));
        }
        let id = event.id.as_ref().map(|id| self.intern(id));
        let fed = self.apply(derived.key, derived.op, id, event.ts_us)?;
        match fed {
            Fed::Counted => self.stats.counted += 1,
            Fed::Duplicate => self.stats.duplicates += 1,
            Fed::Blank | Fed::Skipped(..) => {}
        }
        Ok(fed)
    }

    /// The rows, sorted by (key, clustering).
    pub fn into_rows(self) -> impl Iterator<Item = BatchRow> {
        self.rows.into_iter().map(|(key, state)| BatchRow {
            key: text(key.partition),
            clustering: text(key.clustering),
            value: state.value(),
        })
    }

    fn skip(&mut self, why: Skip, reason: String) -> Fed {
        let tally = match why {
            Skip::Malformed => &mut self.stats.malformed,
            Skip::NoTs => &mut self.stats.no_ts,
            Skip::AfterBoundary => &mut self.stats.after_boundary,
            Skip::Filtered => &mut self.stats.filtered,
            Skip::Unmappable => &mut self.stats.unmappable,
        };
        *tally += 1;
        Fed::Skipped(why, reason)
    }

    /// Refuses what the realtime layer refuses, before a row is created for it.
    fn check(&self, op: &Op) -> Result<(), String> {
        if !op.fits(self.value_type) {
            return Err(format!(
                "'{}' does not apply to a {} view",
                op.name(),
                self.value_type
            ));
        }
        if let (ValueType::Gcounter, Op::Incr(by)) = (self.value_type, op) {
            if *by < 0 {
                return Err(format!("a gcounter only grows: amount {by} is negative"));
            }
        }
        Ok(())
    }

    fn intern(&mut self, id: &UpdateId) -> SeenId {
        let next = u32::try_from(self.writers.len()).unwrap_or(u32::MAX);
        let writer = *self.writers.entry(id.writer.clone()).or_insert(next);
        (writer, id.seq)
    }

    fn apply(&mut self, key: Key, op: Op, id: Option<SeenId>, ts_us: i64) -> Result<Fed, Overflow> {
        let overflow = |key: &Key| Overflow {
            key: String::from_utf8_lossy(&key.partition).into_owned(),
            clustering: String::from_utf8_lossy(&key.clustering).into_owned(),
        };
        if let Some(state) = self.rows.get_mut(&key) {
            return apply_to(state, op, id, ts_us).ok_or_else(|| overflow(&key));
        }
        let mut state = State::empty(self.value_type);
        let fed = apply_to(&mut state, op, id, ts_us).ok_or_else(|| overflow(&key))?;
        self.rows.insert(key, state);
        Ok(fed)
    }
}

/// Applies one update to one row; `None` when a sum leaves the i64 range.
fn apply_to(state: &mut State, op: Op, id: Option<SeenId>, ts_us: i64) -> Option<Fed> {
    let first_time = |seen: &mut HashSet<SeenId>| id.is_none_or(|id| seen.insert(id));
    match (state, op) {
        (State::Sum { total, seen }, Op::Incr(by)) => {
            if !first_time(seen) {
                return Some(Fed::Duplicate);
            }
            *total = total.checked_add(by)?;
        }
        (State::Max(v), Op::Max(x)) => *v = (*v).max(x),
        (State::Min(v), Op::Min(x)) => *v = (*v).min(x),
        (State::Register { ts_us: at, value }, Op::Set(x)) if ts_us >= *at => {
            *at = ts_us;
            *value = x;
        }
        (State::Set { members, seen_adds }, Op::Add(xs)) => {
            if !first_time(seen_adds) {
                return Some(Fed::Duplicate);
            }
            members.extend(xs);
        }
        (State::Set { members, .. }, Op::Remove(xs)) => {
            for x in &xs {
                members.remove(x);
            }
        }
        (State::Distinct(members), Op::PfAdd(xs)) => members.extend(xs),
        // A register write older than the row's value loses. Nothing else gets here:
        // `Aggregator::check` admits only ops that fit the view's type, and every row of
        // the view holds that type's state.
        _ => {}
    }
    Some(Fed::Counted)
}

#[cfg(test)]
mod tests;
