//! [`Ingest`]: the entry point every event source uses.

use std::sync::Arc;

use speedlayer_cluster::{Cluster, WriteOptions};
use speedlayer_core::Outcome;
use speedlayer_events::Event;

use crate::derive::{derive, Skip};
use crate::error::IngestError;
use crate::metrics::IngestMetrics;

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
    /// Sync: updates refused by their key's state (e.g. a writer limit), with reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Async: events now durable in the queue.
    pub queued: u64,
}

/// Handle to the node's ingest layer; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cluster: Cluster,
    pub config: IngestConfig,
    pub metrics: IngestMetrics,
}

impl Ingest {
    /// The ingest layer of a node.
    pub fn new(cluster: Cluster, config: IngestConfig, metrics: IngestMetrics) -> Ingest {
        Ingest {
            inner: Arc::new(Inner {
                cluster,
                config,
                metrics,
            }),
        }
    }

    /// The node's cluster layer.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Maps `events` through every mapped view and applies (sync) or queues (async) the
    /// updates. Per-event problems are reported in the result; an error means the
    /// request as a whole failed (for sync: some updates may be applied, so retry with
    /// ids; for async: nothing was queued).
    pub async fn submit(
        &self,
        events: &[Event],
        mode: Mode,
        options: WriteOptions,
    ) -> Result<Submitted, IngestError> {
        let metrics = &self.inner.metrics;
        metrics.events(mode).inc_by(events.len() as u64);
        match mode {
            Mode::Sync => self.apply_now(events, options).await,
            Mode::Async => Err(IngestError::Store(speedlayer_store::StoreError::Failed)),
        }
    }

    async fn apply_now(
        &self,
        events: &[Event],
        options: WriteOptions,
    ) -> Result<Submitted, IngestError> {
        let mapped = self.inner.cluster.store().mapped_views();
        let derivation = derive(&mapped, events, 0, None);
        let mut out = Submitted {
            events: events.len() as u64,
            updates: derivation.updates(),
            unmatched: derivation.unmatched,
            skipped: derivation.skipped,
            skips: derivation.skips,
            ..Submitted::default()
        };
        self.inner.metrics.count_derivation(&out);
        let cluster = &self.inner.cluster;
        let writes =
            derivation
                .per_view
                .into_iter()
                .map(|(view, updates)| async move {
                    cluster.apply(&view, updates, options, false).await
                });
        for results in futures_util::future::join_all(writes).await {
            for result in results? {
                match result {
                    Ok(applied) => match applied.outcome {
                        Outcome::Applied => out.applied += 1,
                        Outcome::Duplicate => out.duplicate += 1,
                        Outcome::Stale => out.stale += 1,
                    },
                    Err(e) => out.refused.push(e.to_string()),
                }
            }
        }
        Ok(out)
    }
}
