//! The state the ingest handles and the queue worker share.

use std::sync::Arc;

use speedlayer_api::{Coordinator, EventLog};

use crate::mapped::MappedViews;
use crate::metrics::IngestMetrics;

/// Ingest settings.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Events the async queue may hold before submits are refused (back-pressure).
    pub queue_limit: u64,
}

/// Default [`IngestConfig::queue_limit`]: about a minute of a fast stream; the queue is
/// on disk, so this bounds lag and disk use, not memory.
pub const DEFAULT_QUEUE_LIMIT: u64 = 10_000_000;

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// What every [`crate::Ingest`] handle and the queue worker share: the way from events
/// to the coordinator.
pub(crate) struct Pipeline {
    /// The one door: every update ingest derives is applied through it.
    pub coordinator: Arc<dyn Coordinator>,
    /// The node's durable queue of async events.
    pub queue: Arc<dyn EventLog>,
    /// The views' compiled mappings, recompiled when the catalog changes.
    pub mapped: MappedViews,
    /// Queue limit and other settings.
    pub config: IngestConfig,
    /// What ingest counts.
    pub metrics: IngestMetrics,
}
