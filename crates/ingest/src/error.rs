//! Why an ingest request failed as a whole.

use speedlayer_cluster::ClusterError;
use speedlayer_store::StoreError;

/// An ingest failure. Per-event problems (a missing field) are not errors; they are
/// reported in [`crate::Submitted`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The cluster could not apply the updates at the requested consistency.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The local store failed (e.g. appending to the queue).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The async queue holds more than its limit: back-pressure, retry later.
    #[error("the event queue holds {queued} events, over its limit of {limit}; retry later")]
    QueueFull {
        /// Events queued now.
        queued: u64,
        /// The configured limit.
        limit: u64,
    },
}
