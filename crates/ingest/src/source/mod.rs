//! Event sources: consumers of existing logs that feed [`crate::Ingest`].
//!
//! A source reads messages from a log, parses each as an event, gives an event without
//! an id one derived from its position in the log (so redelivery counts once), submits
//! them, and acknowledges a message to the log only after [`crate::Ingest::submit`]
//! returned (the updates are durable). At-least-once delivery plus ids is exactly-once.
//!
//! What every source shares lives here, so a new one (Kafka: topic-partition and offset
//! as the id, the committed offset as the acknowledgement) is one more module beside
//! [`nats`] that only speaks its log's protocol:
//! - [`position_id`]: the id of an event without one, from the log's position;
//! - [`parse_message`]: one message's bytes as an event, or why it is malformed;
//! - [`submit_until_durable`]: submit a batch, retrying the *same* batch with backoff on
//!   an [`crate::IngestError`], never skipping ahead;
//! - [`SourceMetrics`]: `speedlayer_source_*{source="…"}` in the node's registry.
//!
//! The ordering rule every source must keep (see [`nats`] for the details): ids derived
//! from positions are deduplicated by the counters' per-writer window
//! ([`speedlayer_core::WRITER_WINDOW`] seqs), so a source must apply its log strictly in
//! order, one batch at a time, and after a restart resume from the last *acknowledged*
//! position before it applies anything newer.

pub mod nats;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use speedlayer_core::UpdateId;
use speedlayer_events::{Event, EventError};
use tokio::sync::watch;

use crate::ingest::{Ingest, Mode, Submitted};

/// The id of an event that carries none: `(writer, position)`. `writer` names the log
/// (e.g. `nats.EVENTS`), `position` is the message's place in it, the same on every
/// redelivery, so a redelivered message counts once.
pub fn position_id(writer: &str, position: u64) -> UpdateId {
    UpdateId {
        writer: writer.to_string(),
        seq: position,
    }
}

/// Parses one message's payload as an event. `arrival_us` (the log's own timestamp of
/// the message, so a replay gives the same time) is the event time when the event has
/// no `ts`; an event without an `id` gets `default_id`.
pub fn parse_message(
    payload: &[u8],
    arrival_us: i64,
    default_id: impl FnOnce() -> UpdateId,
) -> Result<Event, EventError> {
    let mut event = Event::parse(payload, arrival_us)?;
    if event.id.is_none() {
        event.id = Some(default_id());
    }
    Ok(event)
}

/// First wait after a failed submit; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts (submits, reconnects).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The next backoff after `current`: doubled, at most [`MAX_BACKOFF`].
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

/// Sleeps `delay`, or less if `stop` turns true. Returns false when stopped.
pub async fn sleep_unless_stopped(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Submits `events` until the ingest layer accepts them (`Ok`: durable at the node's
/// default consistency, or in the node's queue for [`Mode::Async`]). On an error the
/// *same* batch is retried with backoff, so the source never acknowledges or skips past
/// events that are not durable; ids make the retries count once. Returns `None` when
/// `stop` turns true first.
pub async fn submit_until_durable(
    ingest: &Ingest,
    events: &[Event],
    mode: Mode,
    counters: &SourceCounters,
    stop: &mut watch::Receiver<bool>,
) -> Option<Submitted> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt: u32 = 1;
    loop {
        let options = ingest.coordinator().defaults();
        match ingest.submit(events, mode, options).await {
            Ok(submitted) => return Some(submitted),
            Err(e) => {
                counters.submit_retries.inc();
                tracing::warn!(
                    source = counters.source,
                    error = %e,
                    attempt,
                    events = events.len(),
                    retry_in = ?backoff,
                    "submitting a batch from the log failed; retrying the same batch"
                );
                if !sleep_unless_stopped(backoff, stop).await {
                    return None;
                }
                backoff = next_backoff(backoff);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Label of the per-source metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source's kind: `nats` (later `kafka`).
    pub source: &'static str,
}

/// What the log sources count, one series per source kind. Registered once per node.
#[derive(Clone, Default)]
pub struct SourceMetrics {
    messages: Family<SourceLabel, Counter>,
    redelivered: Family<SourceLabel, Counter>,
    malformed: Family<SourceLabel, Counter>,
    batches: Family<SourceLabel, Counter>,
    submit_retries: Family<SourceLabel, Counter>,
    restarts: Family<SourceLabel, Counter>,
    acked_position: Family<SourceLabel, Gauge>,
}

impl SourceMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "speedlayer_source_messages",
            "Messages received from a log source, redeliveries and malformed ones included",
            self.messages.clone(),
        );
        registry.register(
            "speedlayer_source_redelivered",
            "Messages the log delivered more than once (their ids make them count once)",
            self.redelivered.clone(),
        );
        registry.register(
            "speedlayer_source_malformed",
            "Messages that are not a valid event; logged, acknowledged and skipped",
            self.malformed.clone(),
        );
        registry.register(
            "speedlayer_source_batches",
            "Batches submitted and acknowledged to the log",
            self.batches.clone(),
        );
        registry.register(
            "speedlayer_source_submit_retries",
            "Failed submits of a batch, each retried with the same batch",
            self.submit_retries.clone(),
        );
        registry.register(
            "speedlayer_source_restarts",
            "Times a source reconnected and resumed from the log's acknowledged position",
            self.restarts.clone(),
        );
        registry.register(
            "speedlayer_source_acked_position",
            "Last position acknowledged to the log (NATS: stream sequence)",
            self.acked_position.clone(),
        );
    }

    /// The counters of one source kind.
    pub fn counters(&self, source: &'static str) -> SourceCounters {
        let label = SourceLabel { source };
        SourceCounters {
            source,
            messages: self.messages.get_or_create(&label).clone(),
            redelivered: self.redelivered.get_or_create(&label).clone(),
            malformed: self.malformed.get_or_create(&label).clone(),
            batches: self.batches.get_or_create(&label).clone(),
            submit_retries: self.submit_retries.get_or_create(&label).clone(),
            restarts: self.restarts.get_or_create(&label).clone(),
            acked_position: self.acked_position.get_or_create(&label).clone(),
        }
    }
}

/// One source's handles into [`SourceMetrics`] (cheap clones of shared atomics).
#[derive(Clone, Debug)]
pub struct SourceCounters {
    /// The label value, for logs too.
    pub source: &'static str,
    /// Messages received.
    pub messages: Counter,
    /// Messages delivered more than once.
    pub redelivered: Counter,
    /// Malformed messages skipped.
    pub malformed: Counter,
    /// Batches submitted and acknowledged.
    pub batches: Counter,
    /// Failed submits (retried).
    pub submit_retries: Counter,
    /// Reconnects / resumes after an error.
    pub restarts: Counter,
    /// Last acknowledged position.
    pub acked_position: Gauge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_without_an_id_gets_its_position() {
        let e = parse_message(br#"{"a":1,"ts":10}"#, 5, || position_id("nats.S", 42)).unwrap();
        assert_eq!(e.id, Some(position_id("nats.S", 42)));
        assert_eq!(e.ts_us, 10_000_000);
        let own = parse_message(br#"{"id":{"writer":"w","seq":3}}"#, 5, || {
            position_id("nats.S", 42)
        })
        .unwrap();
        assert_eq!(own.id, Some(position_id("w", 3)));
        assert_eq!(own.ts_us, 5, "no ts: the log's timestamp");
        assert!(parse_message(b"[1]", 0, || position_id("x", 1)).is_err());
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = FIRST_BACKOFF;
        for _ in 0..20 {
            b = next_backoff(b);
        }
        assert_eq!(b, MAX_BACKOFF);
        assert_eq!(next_backoff(FIRST_BACKOFF), FIRST_BACKOFF * 2);
    }
}
