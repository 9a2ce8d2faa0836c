//! [`Ingest`]: the entry point every event source uses.

use std::sync::Arc;

use speedlayer_api::{
    ApplyKind, Coordinator, EventLog, QueuedRecord, QueuedView, Update, WriteOptions,
};
use speedlayer_core::Outcome;
use speedlayer_events::Event;
use tokio::sync::watch;

use crate::derive::{derive, Skip};
use crate::error::IngestError;
use crate::mapped::MappedViews;
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
    /// Sync: updates whose event time is before the view's batch boundary: not applied
    /// (the batch view owns that time; the next batch run counts them).
    pub late: u64,
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
    /// The queue worker, taken by [`Ingest::stopped`].
    pub(crate) worker: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

pub(crate) struct Inner {
    /// The one door: every update ingest derives is applied through it.
    pub coordinator: Arc<dyn Coordinator>,
    /// The node's durable queue of async events.
    pub queue: Arc<dyn EventLog>,
    /// The views' compiled mappings, recompiled when the catalog changes.
    pub mapped: MappedViews,
    pub config: IngestConfig,
    pub metrics: IngestMetrics,
}

impl Ingest {
    /// Starts the ingest layer of a node: its queue worker runs until `stop` turns true.
    pub fn start(
        coordinator: Arc<dyn Coordinator>,
        config: IngestConfig,
        metrics: IngestMetrics,
        stop: watch::Receiver<bool>,
    ) -> Ingest {
        let ingest = Ingest::paused(coordinator, config, metrics);
        let worker = tokio::spawn(crate::worker::run(ingest.inner.clone(), stop));
        *ingest.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker);
        ingest
    }

    /// The ingest layer without its queue worker: queued events wait until someone calls
    /// [`Ingest::apply_queued`] (recovery tests drive the worker's rounds themselves).
    pub fn paused(
        coordinator: Arc<dyn Coordinator>,
        config: IngestConfig,
        metrics: IngestMetrics,
    ) -> Ingest {
        let inner = Arc::new(Inner {
            queue: coordinator.event_log(),
            coordinator,
            mapped: MappedViews::default(),
            config,
            metrics,
        });
        Ingest {
            inner,
            worker: Arc::default(),
        }
    }

    /// Applies queued `records` through the coordinator, as one round of the queue
    /// worker does (without removing them from the queue).
    pub async fn apply_queued(&self, records: Vec<QueuedRecord>) -> Result<(), IngestError> {
        let writer = crate::worker::queue_writer(self.inner.coordinator.node_id());
        crate::worker::apply(&self.inner, &writer, records).await
    }

    /// The node's durable queue of async events.
    pub fn queue(&self) -> &Arc<dyn EventLog> {
        &self.inner.queue
    }

    /// Waits until the queue worker has stopped (after the node's stop signal), so the
    /// store it holds can close. What it had not applied stays queued for the next start.
    pub async fn stopped(&self) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            if let Err(e) = worker.await {
                tracing::warn!(error = %e, "the event queue worker ended abnormally");
            }
        }
    }

    /// The coordinator every update goes through.
    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.inner.coordinator
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
        if mode == Mode::Async {
            self.check_queue_room()?;
        }
        let mapped = self.inner.mapped.current(&*self.inner.coordinator);
        let derivation = derive(&mapped, events);
        let mut out = Submitted {
            events: events.len() as u64,
            updates: derivation.updates(),
            unmatched: derivation.unmatched,
            skipped: derivation.skipped,
            skips: derivation.skips,
            ..Submitted::default()
        };
        metrics.count_derivation(&out);
        match mode {
            Mode::Sync => {
                self.apply_now(derivation.per_view, options, &mut out)
                    .await?
            }
            Mode::Async if out.updates > 0 => {
                self.append(out.events, &derivation.per_view, now_us())
                    .await?;
                out.queued = out.events;
            }
            Mode::Async => {}
        }
        Ok(out)
    }

    /// Queues view updates (`POST /v1/views/{v}/update?mode=async`): checked against the
    /// view first (an invalid update queues nothing), then durable in the queue. Returns
    /// the number queued.
    pub async fn enqueue_updates(
        &self,
        view: &str,
        updates: Vec<Update>,
    ) -> Result<u64, IngestError> {
        self.check_queue_room()?;
        let spec = self.inner.coordinator.view(view)?;
        for update in &updates {
            speedlayer_api::validate(&spec, update)?;
        }
        let arrival = now_us();
        let count = updates.len() as u64;
        let group = QueuedView {
            view: view.to_string(),
            updates: updates
                .into_iter()
                .enumerate()
                .map(|(i, mut update)| {
                    // Fix the arrival time now, not when the worker applies it.
                    update.ts_us.get_or_insert(arrival);
                    (update, i as u32)
                })
                .collect(),
        };
        self.append(count, &[group], arrival).await?;
        self.inner.metrics.events(Mode::Async).inc_by(count);
        Ok(count)
    }

    fn check_queue_room(&self) -> Result<(), IngestError> {
        let queued = self.inner.queue.len();
        let limit = self.inner.config.queue_limit;
        if queued >= limit {
            self.inner.metrics.queue_full.inc();
            return Err(IngestError::QueueFull { queued, limit });
        }
        Ok(())
    }

    /// Appends one durable queue record of `events` events.
    async fn append(&self, events: u64, views: &[QueuedView], now: i64) -> Result<(), IngestError> {
        let queue = &*self.inner.queue;
        queue.append(events, views, now).await?;
        self.inner.metrics.observe_queue(queue);
        Ok(())
    }

    /// Applies the derived updates view by view, pre-aggregated, at `options`.
    async fn apply_now(
        &self,
        per_view: Vec<QueuedView>,
        options: WriteOptions,
        out: &mut Submitted,
    ) -> Result<(), IngestError> {
        let coordinator = &self.inner.coordinator;
        let writes = per_view.into_iter().map(|group| async move {
            let updates: Vec<_> = group.updates.into_iter().map(|(u, _)| u).collect();
            coordinator
                .apply(&group.view, updates, options, ApplyKind::Aggregate)
                .await
        });
        for results in futures_util::future::join_all(writes).await {
            for result in results? {
                match result {
                    Ok(applied) => match applied.outcome {
                        Outcome::Applied => out.applied += 1,
                        Outcome::Duplicate => out.duplicate += 1,
                        Outcome::Stale => out.stale += 1,
                        Outcome::Late => out.late += 1,
                    },
                    Err(e) => out.refused.push(e.to_string()),
                }
            }
        }
        Ok(())
    }
}

/// Now, in microseconds since 1970 (arrival times, queue ages).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
