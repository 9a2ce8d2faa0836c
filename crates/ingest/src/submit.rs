//! What a submit asks for and what it did: the vocabulary every event source, the
//! queue worker and the metrics share.

use crate::derive::Skip;

/// When a submit returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// After every derived update is durable at the requested consistency.
    #[default]
    Sync,
    /// After the events are durable in this node's queue; applied moments later.
    Async,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            other => Err(format!("unknown mode '{other}' (expected sync or async)")),
        }
    }
}

/// What a submit did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Submitted {
    /// Events in the request.
    pub events: u64,
    /// Updates derived from them (an event feeds every view whose mapping takes it).
    pub updates: u64,
    /// Events no view took.
    pub unmatched: u64,
    /// (event, view) pairs skipped; the first ones are listed in `skips`.
    pub skipped: u64,
    /// The first skips, with reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<Skip>,
    /// Sync: updates applied.
    pub applied: u64,
    /// Sync: updates already applied earlier (same id).
    pub duplicate: u64,
    /// Sync: updates whose id is older than the writer's window (already counted).
    pub stale: u64,
    /// Sync: updates whose event time is before the view's batch boundary: not applied
    /// (the batch view owns that time; the next batch run counts them).
    pub late: u64,
    /// Sync: updates refused by their key's state (e.g. a writer limit), with reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Async: events now durable in the queue.
    pub queued: u64,
}

/// Now, in microseconds since 1970 (arrival times, queue ages).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
