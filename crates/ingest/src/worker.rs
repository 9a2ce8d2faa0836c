//! The queue worker: drains this node's event queue in batches, in order.
//!
//! Each round takes the oldest durable records (up to [`BATCH_EVENTS`] events), gives
//! events without an id the queue's id (`q.<node>`, event sequence), and applies the
//! updates view by view through the cluster as one pre-aggregated batch
//! ([`ApplyKind::Aggregate`]) at the node's default consistency. Only when every view's
//! batch is durable does it remove the records; on failure it waits and retries the same
//! records. Rounds run one after another, so the queue writer's seqs reach every key in
//! increasing order, and a record re-applied after a crash is recognised by its ids.

use std::collections::HashMap;
use std::time::Duration;

use speedlayer_api::{ApplyKind, QueuedRecord, Update};
use speedlayer_core::UpdateId;
use tokio::sync::watch;

use crate::pipeline::Pipeline;

/// Most events applied in one round: large enough that hot keys aggregate well, small
/// enough that a round's updates stay a few MiB.
pub const BATCH_EVENTS: u64 = 65_536;
/// Longest wait between retries of a failing round.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The writer name of queue ids on node `node`.
pub fn queue_writer(node: &str) -> String {
    format!("q.{node}")
}

/// Runs until `stop` turns true.
pub(crate) async fn run(pipeline: std::sync::Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let queue = pipeline.queue.clone();
    let writer = queue_writer(pipeline.coordinator.node_id());
    let mut backoff = Duration::from_millis(50);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        pipeline.metrics.observe_queue(&*queue);
        if *stop.borrow() {
            return;
        }
        if queue.is_empty() {
            tokio::select! {
                _ = queue.wait_ready() => {}
                _ = tick.tick() => continue,
                _ = stop.changed() => return,
            }
        }
        let records = match queue.peek(BATCH_EVENTS) {
            Ok(records) if records.is_empty() => continue,
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "reading the event queue failed");
                if sleep_or_stop(&mut stop, MAX_BACKOFF).await {
                    return;
                }
                continue;
            }
        };
        let last = records.last().map(|r| r.first).unwrap_or(0);
        match apply(&pipeline, &writer, records).await {
            Ok(()) => {
                backoff = Duration::from_millis(50);
                if let Err(e) = queue.remove_through(last) {
                    tracing::error!(error = %e, "removing applied records from the event queue failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "applying queued events failed; retrying the same records");
                if sleep_or_stop(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = stop.changed() => true,
    }
}

/// Applies the records' updates, view by view, concurrently.
pub(crate) async fn apply(
    pipeline: &Pipeline,
    writer: &str,
    records: Vec<QueuedRecord>,
) -> Result<(), crate::IngestError> {
    let mut per_view: HashMap<String, Vec<Update>> = HashMap::new();
    for record in records {
        for group in record.views {
            let updates = per_view.entry(group.view).or_default();
            for (mut update, event) in group.updates {
                if update.id.is_none() {
                    update.id = Some(UpdateId {
                        writer: writer.to_string(),
                        seq: record.first + u64::from(event),
                    });
                }
                updates.push(update);
            }
        }
    }
    let coordinator = &pipeline.coordinator;
    let options = coordinator.defaults();
    let writes = per_view.into_iter().map(|(view, updates)| async move {
        let result = coordinator
            .apply(&view, updates, options, ApplyKind::Aggregate)
            .await;
        (view, result)
    });
    for (view, result) in futures_util::future::join_all(writes).await {
        match result {
            Ok(results) => {
                for e in results.iter().filter_map(|r| r.as_ref().err()) {
                    tracing::warn!(view = %view, error = %e, "a queued update was refused by its key's state");
                    pipeline.metrics.queued_refused.inc();
                }
            }
            // The view was declared on another node and is not known here yet, or some
            // other lasting refusal: retrying cannot help, so log it and move on.
            Err(e) if e.is_client_error() => {
                tracing::error!(view = %view, error = %e, "queued updates refused; dropping them");
                pipeline.metrics.queued_refused.inc();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
