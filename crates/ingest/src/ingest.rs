//! [`Ingest`]: the entry point every event source uses.

use std::sync::Arc;

use speedlayer_api::{
    ApplyKind, Coordinator, EventLog, QueuedRecord, QueuedView, Update, WriteOptions,
};
use speedlayer_core::Outcome;
use speedlayer_events::Event;
use tokio::sync::watch;

use crate::derive::derive;
use crate::error::IngestError;
use crate::mapped::MappedViews;
use crate::metrics::IngestMetrics;
use crate::pipeline::Pipeline;
pub use crate::pipeline::{IngestConfig, DEFAULT_QUEUE_LIMIT};
pub use crate::submit::{now_us, Mode, Submitted};

/// Handle to the node's ingest layer; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    pub(crate) pipeline: Arc<Pipeline>,
    /// The queue worker, taken by [`Ingest::stopped`].
    pub(crate) worker: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
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
        let worker = tokio::spawn(crate::worker::run(ingest.pipeline.clone(), stop));
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
        let pipeline = Arc::new(Pipeline {
            queue: coordinator.event_log(),
            coordinator,
            mapped: MappedViews::default(),
            config,
            metrics,
        });
        Ingest {
            pipeline,
            worker: Arc::default(),
        }
    }

    /// Applies queued `records` through the coordinator, as one round of the queue
    /// worker does (without removing them from the queue).
    pub async fn apply_queued(&self, records: Vec<QueuedRecord>) -> Result<(), IngestError> {
        let writer = crate::worker::queue_writer(self.pipeline.coordinator.node_id());
        crate::worker::apply(&self.pipeline, &writer, records).await
    }

    /// The node's durable queue of async events.
    pub fn queue(&self) -> &Arc<dyn EventLog> {
        &self.pipeline.queue
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
        &self.pipeline.coordinator
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
        let metrics = &self.pipeline.metrics;
        metrics.events(mode).inc_by(events.len() as u64);
        if mode == Mode::Async {
            self.check_queue_room()?;
        }
        let mapped = self.pipeline.mapped.current(&*self.pipeline.coordinator);
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
        let spec = self.pipeline.coordinator.view(view)?;
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
        self.pipeline.metrics.events(Mode::Async).inc_by(count);
        Ok(count)
    }

    fn check_queue_room(&self) -> Result<(), IngestError> {
        let queued = self.pipeline.queue.len();
        let limit = self.pipeline.config.queue_limit;
        if queued >= limit {
            self.pipeline.metrics.queue_full.inc();
            return Err(IngestError::QueueFull { queued, limit });
        }
        Ok(())
    }

    /// Appends one durable queue record of `events` events.
    async fn append(&self, events: u64, views: &[QueuedView], now: i64) -> Result<(), IngestError> {
        let queue = &*self.pipeline.queue;
        queue.append(events, views, now).await?;
        self.pipeline.metrics.observe_queue(queue);
        Ok(())
    }

    /// Applies the derived updates view by view, pre-aggregated, at `options`.
    async fn apply_now(
        &self,
        per_view: Vec<QueuedView>,
        options: WriteOptions,
        out: &mut Submitted,
    ) -> Result<(), IngestError> {
        let coordinator = &self.pipeline.coordinator;
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
