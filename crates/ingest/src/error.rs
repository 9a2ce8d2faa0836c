//! Why an ingest request failed as a whole.

/// An ingest failure. Per-event problems (a missing field) are not errors; they are
/// reported in [`crate::Submitted`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The coordinator refused or failed: the updates could not be applied at the
    /// requested consistency, or the node's queue could not take them.
    #[error(transparent)]
    Request(#[from] speedlayer_api::Error),
    /// The async queue holds more than its limit: back-pressure, retry later.
    #[error("the event queue holds {queued} events, over its limit of {limit}; retry later")]
    QueueFull {
        /// Events queued now.
        queued: u64,
        /// The configured limit.
        limit: u64,
    },
}
