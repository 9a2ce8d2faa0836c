//! The node's durable event queue as ingest sees it: where `mode=async` events wait
//! until a worker applies them through the coordinator.
//!
//! The queue is node-local on purpose: it buffers what this node acknowledged before the
//! updates enter the coordinator, so it replicates nothing and bypasses nothing. Its
//! implementation lives in storage (it shares the node's journal and group commit); ingest
//! holds it only through [`EventLog`].

use async_trait::async_trait;

use crate::error::Error;
use crate::update::Update;

/// The queued updates of one view: each with the index, within its record, of the event
/// it came from (for the queue id of events without their own). Grouped by view because
/// that is how they are derived and applied (and the name is stored once per group).
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedView {
    /// View name.
    pub view: String,
    /// The updates (`ts_us` always set: the arrival time was fixed at submit), with
    /// their event index.
    pub updates: Vec<(Update, u32)>,
}

/// A record read back from the queue.
#[derive(Debug)]
pub struct QueuedRecord {
    /// Event sequence of the record's first event (its key).
    pub first: u64,
    /// Number of events it covers.
    pub events: u64,
    /// When it was appended, microseconds since 1970.
    pub enqueued_us: i64,
    /// Its updates, by view.
    pub views: Vec<QueuedView>,
}

/// A durable, ordered queue of event records numbered by event sequence.
///
/// Invariants every implementation keeps: [`EventLog::append`] returns only once the
/// record is durable; [`EventLog::peek`] returns only durable records, oldest first, with
/// no gaps; a record leaves only through [`EventLog::remove_through`].
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends a record of `events` events holding `views`' updates, durably; returns the
    /// event sequence of its first event.
    async fn append(&self, events: u64, views: &[QueuedView], now_us: i64) -> Result<u64, Error>;
    /// Events waiting (durable, not yet applied).
    fn len(&self) -> u64;
    /// True when no durable record waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Age in seconds, at `now_us`, of the oldest waiting record (0 when none waits).
    fn lag_seconds(&self, now_us: i64) -> f64;
    /// Waits until a record may be waiting (returns at once if one is).
    async fn wait_ready(&self);
    /// The oldest durable records, in order, up to about `max_events` events (at least
    /// one record when any waits).
    fn peek(&self, max_events: u64) -> Result<Vec<QueuedRecord>, Error>;
    /// Removes every record up to and including the one starting at `first`.
    fn remove_through(&self, first: u64) -> Result<(), Error>;
}
