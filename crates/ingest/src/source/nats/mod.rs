//! A NATS JetStream source: a stream (or a subject of it) into `POST /v1/events`
//! semantics, exactly once.
//!
//! # What it does
//! A durable **pull** consumer (name [`NatsConfig::consumer`], default `speedlayer`) on
//! the stream [`NatsConfig::stream`], optionally filtered to [`NatsConfig::subject`],
//! created when missing (delivering the stream from its start). The source fetches up
//! to [`NatsConfig::batch`] messages at a time, parses each payload as one JSON event
//! (as a line of `POST /v1/events`; the event time of an event without `ts` is the
//! message's JetStream timestamp, so a replay gives the same time), gives an event
//! without an `id` the id `{"writer": "nats.<stream>", "seq": <stream sequence>}`,
//! submits the batch through [`crate::Ingest::submit`] in the configured
//! [`crate::Mode`], and acknowledges the batch only after `submit` returned `Ok`: with
//! `sync` the updates are durable at the node's default consistency, with `async` the
//! events are durable in the node's queue. On an [`crate::IngestError`] nothing is
//! acknowledged and the *same* batch is retried with backoff; the source never skips
//! ahead. JetStream delivers at least once; the ids make every redelivery count once.
//!
//! A malformed message (not JSON, not an object, a bad `ts` or `id`) is logged, counted
//! in `speedlayer_source_malformed_total{source="nats"}` and acknowledged with its
//! batch, so it cannot block the stream. Events a mapping cannot use (a missing field)
//! are skipped per view, as over HTTP.
//!
//! # Why order matters, and how it is kept
//! Counters deduplicate ids with a per-writer window: on a key, a writer's seq that is
//! [`speedlayer_core::WRITER_WINDOW`] (1024) or more below the highest seq already
//! applied is treated as *already counted* (`Stale`). Stream sequences are such seqs.
//! So a message that was delivered but never applied must be applied again before the
//! source applies anything 1024 or more sequences past it, or it is silently lost.
//! JetStream alone does not guarantee that: after a crash it redelivers unacknowledged
//! messages only when their `ack_wait` expires, and meanwhile serves newer messages to
//! the restarted consumer. Hence:
//! - batches are processed **strictly one after another**, each fully applied and
//!   acknowledged before the next fetch, and a batch holds at most
//!   [`MAX_BATCH`] (1000) messages; the consumer's `max_ack_pending` is the batch size,
//!   so at most one batch is ever delivered-but-unacknowledged;
//! - the consumer uses **`AckPolicy::All`**: acknowledging the batch's highest stream
//!   sequence acknowledges everything below it (one ack round trip per batch, confirmed
//!   by the server: a double ack), so the acknowledged position is always a prefix of the
//!   stream and a lost ack is repaired by the next one;
//! - on every (re)start, if the consumer has unacknowledged deliveries (or a config that
//!   is not ours), it is **recreated at its ack floor**: deleted and created again with
//!   `deliver_policy = by_start_sequence, opt_start_seq = ack_floor + 1`. Delivery then
//!   resumes in stream order from the first message not known to be applied, so an
//!   unapplied message is always applied before anything newer. (nats-server 2.14 has
//!   a consumer reset API for this; Debian's 2.9 does not.) Messages between the floor
//!   and the crash point that were applied are redelivered and count nothing;
//! - every delivery carries the consumer's delivery sequence; a **gap** (a delivery
//!   that never reached us, e.g. a fetch cut by a reconnect) ends the session, and the
//!   next one recreates the consumer at its ack floor as above;
//! - a short `ack_wait` (default [`DEFAULT_ACK_WAIT`], 5 s) makes JetStream redeliver
//!   quickly if a batch is slow, and those redeliveries are harmless duplicates.
//!
//! The same reasoning holds for ids the producers put in events: a producer's seqs
//! should increase in stream order, and an id re-sent much later (more than 1024 of that
//! producer's seqs later) is treated as already counted.
//!
//! # Requirements and limits
//! - **One consuming node per stream.** Configure the source on one node of a cluster
//!   (the updates it applies reach every replica through the cluster as any write). Two
//!   processes sharing the durable consumer would break the order rule (and each would
//!   keep recreating it). Events without ids are keyed by the *stream* (writer
//!   `nats.<stream>`), not the consumer, so replaying the stream under another consumer
//!   name counts nothing twice; but two consumers of one stream progressing at different
//!   speeds (e.g. disjoint subject filters) could under-count the slower one.
//! - **Limits retention** (the JetStream default). Recreating the consumer under
//!   `interest` or `workqueue` retention could discard messages, so such a stream is
//!   refused with an error at start.
//! - The durable consumer belongs to speedlayer: it is created, and recreated, with the
//!   settings above. A push consumer of that name is refused.
//! - If the process dies between deleting and recreating the consumer, the next start
//!   creates it afresh and replays the stream from its start: correct (ids), but slow.
//! - Credentials go in the URL (`nats://user:password@host:4222`).
//! - Views feed from the moment they exist: declare them (with their mappings) before
//!   the stream is consumed, e.g. in the config file, which is applied before the source
//!   starts. An event consumed earlier does not feed a view declared later.
//! - A subject filter equal to the stream's only subject is dropped (it selects the whole
//!   stream): nats-server 2.9 serves a wildcard-filtered pull consumer resumed mid-stream
//!   at about one message per millisecond for several seconds, measured in the test.
//!
//! # Client
//! The official `async-nats` crate (JetStream pull consumers, double acks, reconnects),
//! built without its default features except `jetstream` and `ring` (no websockets,
//! key-value, object store, service API or nkeys), and without the `server_2_1x`
//! features, so it speaks the JetStream API of the nats-server 2.9 Debian ships.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{RetentionPolicy, Stream as JsStream};
use async_nats::jetstream::Message;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{
    next_backoff, parse_message, position_id, sleep_unless_stopped, submit_until_durable,
    SourceCounters, SourceMetrics, FIRST_BACKOFF,
};
use crate::ingest::Ingest;

mod config;

pub use config::{
    NatsConfig, NatsError, DEFAULT_ACK_WAIT, DEFAULT_BATCH, DEFAULT_CONSUMER, MAX_BATCH,
};

/// How long one idle pull request waits for a message when the source is caught up
/// (renewed after; a message arriving meanwhile is served at once).
const IDLE_WAIT: Duration = Duration::from_secs(2);
/// The metric label of this source.
const SOURCE: &str = "nats";

/// The NATS JetStream source of one node. Build with [`NatsSource::new`], then spawn
/// [`NatsSource::run`].
pub struct NatsSource {
    config: NatsConfig,
    ingest: Ingest,
    counters: SourceCounters,
    writer: String,
}

impl NatsSource {
    /// A source feeding `ingest`, counting into `metrics` (label `source="nats"`).
    pub fn new(
        config: NatsConfig,
        ingest: Ingest,
        metrics: &SourceMetrics,
    ) -> Result<NatsSource, NatsError> {
        config.validate()?;
        Ok(NatsSource {
            writer: config.writer(),
            counters: metrics.counters(SOURCE),
            config,
            ingest,
        })
    }

    /// Consumes until `stop` turns true. A failed session (server unreachable, stream
    /// missing, delivery gap, …) is logged and retried with backoff, resuming from the
    /// consumer's ack floor; stopping at any point is safe, since nothing is acknowledged
    /// before it is durable.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *stop.borrow() {
                return;
            }
            let mut session_stop = stop.clone();
            let outcome = tokio::select! {
                outcome = self.session(&mut session_stop, &mut backoff) => outcome,
                _ = stop.wait_for(|s| *s) => return,
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    self.counters.restarts.inc();
                    tracing::warn!(
                        source = SOURCE,
                        error = %e,
                        retry_in = ?backoff,
                        "NATS source session ended; retrying (it resumes from the consumer's ack floor)"
                    );
                    if !sleep_unless_stopped(backoff, &mut stop).await {
                        return;
                    }
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    /// One connection: prepare the consumer, then fetch, apply and ack batches until an
    /// error (`Err`) or `stop` (`Ok`).
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Result<(), NatsError> {
        let config = &self.config;
        // A dropped connection ends the session at once (pull requests in flight die with
        // it); the next session reconnects and resumes from the ack floor, so the client's
        // own reconnect loop is not needed beyond one attempt.
        let (lost_tx, mut lost) = watch::channel(false);
        let client = async_nats::ConnectOptions::new()
            .name("speedlayer")
            .max_reconnects(1)
            .event_callback(move |event| {
                if matches!(
                    event,
                    async_nats::Event::Disconnected | async_nats::Event::SlowConsumer(_)
                ) {
                    lost_tx.send_replace(true);
                }
                async {}
            })
            .connect(config.url.as_str())
            .await
            .map_err(|source| NatsError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(&config.stream)
            .await
            .map_err(|e| NatsError::Stream {
                stream: config.stream.clone(),
                source: Box::new(e),
            })?;
        let retention = match stream.cached_info().config.retention {
            RetentionPolicy::Limits => None,
            RetentionPolicy::Interest => Some("interest"),
            RetentionPolicy::WorkQueue => Some("workqueue"),
        };
        if let Some(retention) = retention {
            return Err(NatsError::Retention {
                stream: config.stream.clone(),
                retention,
            });
        }
        // A filter that is the stream's only subject selects the whole stream: drop it
        // (nats-server 2.9 serves wildcard-filtered pull consumers resumed mid-stream at
        // about 1 ms per message).
        let subjects = &stream.cached_info().config.subjects;
        let filter = match &config.subject {
            Some(s) if subjects.len() == 1 && subjects[0] == *s => String::new(),
            Some(s) => s.clone(),
            None => String::new(),
        };
        let consume = async {
            let (consumer, mut expected) = self.resume_consumer(&stream, filter).await?;
            loop {
                let messages = self.next_messages(&consumer).await?;
                if messages.is_empty() {
                    continue;
                }
                if !self.apply_batch(&messages, &mut expected, stop).await? {
                    return Ok(());
                }
                *backoff = FIRST_BACKOFF;
            }
        };
        tokio::select! {
            outcome = consume => outcome,
            _ = lost.wait_for(|l| *l) => Err(NatsError::ConnectionLost),
        }
    }

    /// The consumer to read from and the delivery sequence of its next message. Reused
    /// when it has nothing delivered-but-unacknowledged and our settings; otherwise
    /// recreated at its ack floor (see the module docs); created when missing.
    async fn resume_consumer(
        &self,
        stream: &JsStream,
        filter: String,
    ) -> Result<(PullConsumer, u64), NatsError> {
        let config = &self.config;
        let consumer_err = |source: async_nats::Error| NatsError::Consumer {
            consumer: config.consumer.clone(),
            source,
        };
        let mut wanted = PullConfig {
            durable_name: Some(config.consumer.clone()),
            description: Some("speedlayer NATS source (acks only durable events)".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::All,
            ack_wait: config.ack_wait,
            max_deliver: -1,
            filter_subject: filter,
            max_ack_pending: config.batch as i64,
            ..PullConfig::default()
        };
        match stream.consumer_info(&config.consumer).await {
            Ok(info) => {
                let have = &info.config;
                if have.deliver_subject.is_some() {
                    return Err(NatsError::PushConsumer {
                        consumer: config.consumer.clone(),
                    });
                }
                let ours = have.ack_policy == AckPolicy::All
                    && have.ack_wait == wanted.ack_wait
                    && have.max_ack_pending == wanted.max_ack_pending
                    && have.filter_subject == wanted.filter_subject;
                if ours && info.num_ack_pending == 0 {
                    let consumer = stream
                        .get_consumer::<PullConfig>(&config.consumer)
                        .await
                        .map_err(consumer_err)?;
                    let next = info.delivered.consumer_sequence + 1;
                    tracing::info!(
                        source = SOURCE,
                        stream = %config.stream,
                        consumer = %config.consumer,
                        ack_floor = info.ack_floor.stream_sequence,
                        pending = info.num_pending,
                        "NATS source resuming its consumer"
                    );
                    return Ok((consumer, next));
                }
                let floor = info.ack_floor.stream_sequence;
                wanted.deliver_policy = if floor == 0 {
                    // Nothing acknowledged yet: start where the consumer started.
                    have.deliver_policy
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: floor + 1,
                    }
                };
                tracing::info!(
                    source = SOURCE,
                    stream = %config.stream,
                    consumer = %config.consumer,
                    ack_floor = floor,
                    unacknowledged = info.num_ack_pending,
                    settings_changed = !ours,
                    "NATS source recreating its consumer at the ack floor, so unacknowledged \
                     messages are applied before newer ones"
                );
                stream
                    .delete_consumer(&config.consumer)
                    .await
                    .map_err(|e| consumer_err(Box::new(e)))?;
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                tracing::info!(
                    source = SOURCE,
                    stream = %config.stream,
                    consumer = %config.consumer,
                    "NATS source creating its consumer (from the start of the stream)"
                );
            }
            Err(e) => return Err(consumer_err(Box::new(e))),
        }
        let consumer = stream
            .create_consumer(wanted)
            .await
            .map_err(|e| consumer_err(Box::new(e)))?;
        Ok((consumer, 1))
    }

    /// The next messages: what is there now (up to a batch, without waiting), or when
    /// caught up the first message to arrive within [`IDLE_WAIT`] and what came with it.
    async fn next_messages(&self, consumer: &PullConsumer) -> Result<Vec<Message>, NatsError> {
        let batch = self.config.batch;
        let mut out = Vec::new();
        let now = consumer
            .fetch()
            .max_messages(batch)
            .messages()
            .await
            .map_err(|e| NatsError::Fetch(Box::new(e)))?;
        self.collect(now, &mut out).await?;
        if out.is_empty() {
            let first = consumer
                .batch()
                .max_messages(1)
                .expires(IDLE_WAIT)
                .messages()
                .await
                .map_err(|e| NatsError::Fetch(Box::new(e)))?;
            self.collect(first, &mut out).await?;
            if !out.is_empty() && batch > 1 {
                let more = consumer
                    .fetch()
                    .max_messages(batch - 1)
                    .messages()
                    .await
                    .map_err(|e| NatsError::Fetch(Box::new(e)))?;
                self.collect(more, &mut out).await?;
            }
        }
        Ok(out)
    }

    /// Drains one pull request's messages into `out`. Bounded in time: a pull request
    /// lost with a connection would otherwise never end (the server may also hold a
    /// request until `ack_wait` when redeliveries are due, hence the margin).
    async fn collect(
        &self,
        mut batch: async_nats::jetstream::consumer::pull::Batch,
        out: &mut Vec<Message>,
    ) -> Result<(), NatsError> {
        let limit = self.config.ack_wait + IDLE_WAIT + Duration::from_secs(5);
        let drain = async {
            while let Some(message) = batch.next().await {
                out.push(message.map_err(NatsError::Fetch)?);
            }
            Ok(())
        };
        tokio::time::timeout(limit, drain)
            .await
            .map_err(|_| NatsError::FetchTimeout(limit))?
    }

    /// Parses, submits (until durable) and acknowledges one batch. `expected` is the
    /// next delivery sequence. Returns false when stopped before the batch was durable
    /// (nothing acknowledged).
    async fn apply_batch(
        &self,
        messages: &[Message],
        expected: &mut u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, NatsError> {
        let counters = &self.counters;
        let mut events = Vec::with_capacity(messages.len());
        // (stream sequence, index) of the highest stream sequence: acking it (AckAll)
        // acknowledges the whole batch.
        let mut highest: Option<(u64, usize)> = None;
        for (i, message) in messages.iter().enumerate() {
            let info = message.info().map_err(NatsError::Metadata)?;
            if info.consumer_sequence != *expected {
                return Err(NatsError::DeliveryGap {
                    expected: *expected,
                    got: info.consumer_sequence,
                });
            }
            *expected += 1;
            counters.messages.inc();
            if info.delivered > 1 {
                counters.redelivered.inc();
            }
            let seq = info.stream_sequence;
            if highest.is_none_or(|(h, _)| seq > h) {
                highest = Some((seq, i));
            }
            let arrival_us = i64::try_from(info.published.unix_timestamp_nanos() / 1000)
                .unwrap_or(0)
                .clamp(0, speedlayer_events::MAX_TS_SECS * 1_000_000);
            match parse_message(&message.payload, arrival_us, || {
                position_id(&self.writer, seq)
            }) {
                Ok(event) => events.push(event),
                Err(e) => {
                    counters.malformed.inc();
                    tracing::warn!(
                        source = SOURCE,
                        stream = %self.config.stream,
                        stream_seq = seq,
                        subject = %message.subject,
                        error = %e,
                        "malformed message skipped (acknowledged with its batch)"
                    );
                }
            }
        }
        if !events.is_empty() {
            let Some(submitted) =
                submit_until_durable(&self.ingest, &events, self.config.mode, counters, stop).await
            else {
                return Ok(false);
            };
            if !submitted.refused.is_empty() {
                tracing::warn!(
                    source = SOURCE,
                    refused = submitted.refused.len(),
                    first = %submitted.refused[0],
                    "updates refused by their keys' state (not retried)"
                );
            }
        }
        if let Some((seq, i)) = highest {
            messages[i]
                .double_ack()
                .await
                .map_err(|source| NatsError::Ack { seq, source })?;
            counters
                .acked_position
                .set(i64::try_from(seq).unwrap_or(i64::MAX));
        }
        counters.batches.inc();
        Ok(true)
    }
}
