//! The state the ingest handles and the queue worker share.

use std::sync::Arc;

use speedlayer_api::{Coordinator, EventLog};

use crate::ingest::IngestConfig;
use crate::mapped::MappedViews;
use crate::metrics::IngestMetrics;

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
