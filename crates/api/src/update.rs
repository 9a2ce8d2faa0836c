//! Updates as the front ends hand them to the coordinator, and the checks every update
//! passes before anything is applied.

use speedlayer_core::{Key, Op, UpdateId, ValueType};

use crate::error::Error;
use crate::view::View;

/// Latest accepted event time: 9999-12-31T23:59:59Z, in microseconds. Anything later is a
/// unit mistake (milliseconds or nanoseconds sent as seconds), refused rather than stored
/// in an epoch nobody will ever read.
pub const MAX_TS_US: i64 = 253_402_300_799_000_000;

/// One update as a front end hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// Row addressed.
    pub key: Key,
    /// What to do to it.
    pub op: Op,
    /// Event time in microseconds; the arrival time when `None`.
    pub ts_us: Option<i64>,
    /// Producer id that makes the update idempotent.
    pub id: Option<UpdateId>,
}

/// How a batch of updates is applied: what the caller needs back, and whether the owner
/// shards may pre-aggregate it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ApplyKind {
    /// Each update applied and logged on its own.
    #[default]
    Plain,
    /// As `Plain`, with each result's [`speedlayer_core::Applied::effect`] filled in as Redis reports it.
    Report,
    /// Pre-aggregated (event streams): a shard still applies every update to the key's
    /// state one by one (so every id counts once and every result is exact), but logs
    /// one merged delta per key and message instead of one entry per update, and returns
    /// that merged delta once (on the key's last update) for the replicas to merge. N
    /// increments of one key in a batch become one log entry and one replica merge.
    Aggregate,
}

/// Checks what the caller can get wrong in one update against its view (op of another
/// type, negative gcounter increment, timestamp out of range). The store runs it on
/// every update before applying any; front ends that group commands from several
/// requests into one `apply` run it per request first, so one bad command cannot fail
/// its neighbours.
pub fn validate(view: &View, update: &Update) -> Result<(), Error> {
    let value_type = view.spec.value_type.type_for(&update.op);
    if !update.op.fits(value_type) {
        return Err(Error::WrongOp {
            view: view.name.clone(),
            op: update.op.name(),
            value_type,
        });
    }
    if value_type == ValueType::Gcounter {
        if let Op::Incr(by) = update.op {
            if by < 0 {
                return Err(Error::WrongOp {
                    view: view.name.clone(),
                    op: "decr",
                    value_type,
                });
            }
        }
    }
    if let Some(ts) = update.ts_us {
        if !(0..=MAX_TS_US).contains(&ts) {
            return Err(Error::Timestamp(format!(
                "{} s is outside 0..=253402300799 (seconds since 1970)",
                ts / 1_000_000
            )));
        }
    }
    Ok(())
}
