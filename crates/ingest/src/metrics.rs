//! Ingest metrics, registered in the node's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::submit::{Mode, Submitted};

/// Label of per-mode metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `sync` or `async`.
    pub mode: &'static str,
}

/// What the ingest layer counts.
#[derive(Clone, Default)]
pub struct IngestMetrics {
    /// Events received, per mode.
    pub events_received: Family<ModeLabel, Counter>,
    /// Updates derived from events through mappings.
    pub updates_derived: Counter,
    /// Events no view's mapping took.
    pub events_unmatched: Counter,
    /// (event, view) pairs skipped (missing field, invalid value).
    pub events_skipped: Counter,
    /// Events in the async queue, not yet applied.
    pub queue_length: Gauge,
    /// Age in seconds of the oldest event in the queue (0 when empty).
    pub queue_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Submits refused because the queue was over its limit.
    pub queue_full: Counter,
    /// Queued updates the worker could not apply for a lasting reason (logged).
    pub queued_refused: Counter,
}

impl IngestMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "speedlayer_events_received",
            "Events received, by mode",
            self.events_received.clone(),
        );
        registry.register(
            "speedlayer_event_updates_derived",
            "View updates derived from events through mappings",
            self.updates_derived.clone(),
        );
        registry.register(
            "speedlayer_events_unmatched",
            "Events no view's mapping took",
            self.events_unmatched.clone(),
        );
        registry.register(
            "speedlayer_events_skipped",
            "Event and view pairs skipped: a field the mapping needs is missing or invalid",
            self.events_skipped.clone(),
        );
        registry.register(
            "speedlayer_event_queue_length",
            "Events in the async queue, not yet applied",
            self.queue_length.clone(),
        );
        registry.register(
            "speedlayer_event_queue_lag_seconds",
            "Age of the oldest event in the async queue (0 when empty)",
            self.queue_lag_seconds.clone(),
        );
        registry.register(
            "speedlayer_event_queue_refused",
            "Queued updates refused for a lasting reason when applied (see the log)",
            self.queued_refused.clone(),
        );
        registry.register(
            "speedlayer_event_queue_full",
            "Submits refused because the async queue was over its limit",
            self.queue_full.clone(),
        );
    }

    /// Sets the queue gauges from `queue`.
    pub fn observe_queue(&self, queue: &dyn speedlayer_api::EventLog) {
        self.queue_length.set(queue.len() as i64);
        self.queue_lag_seconds
            .set(queue.lag_seconds(crate::submit::now_us()));
    }

    /// The received-events counter of `mode`.
    pub fn events(&self, mode: Mode) -> Counter {
        self.events_received
            .get_or_create(&ModeLabel {
                mode: match mode {
                    Mode::Sync => "sync",
                    Mode::Async => "async",
                },
            })
            .clone()
    }

    pub(crate) fn count_derivation(&self, s: &Submitted) {
        self.updates_derived.inc_by(s.updates);
        self.events_unmatched.inc_by(s.unmatched);
        self.events_skipped.inc_by(s.skipped);
    }
}
