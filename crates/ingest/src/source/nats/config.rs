//! The NATS source's settings and errors: what `serve --nats-*` and the TOML keys fill in,
//! checked before the node starts.

use std::time::Duration;

use crate::ingest::Mode;

/// Default durable consumer name.
pub const DEFAULT_CONSUMER: &str = "speedlayer";
/// Default messages per batch.
pub const DEFAULT_BATCH: usize = 500;
/// Largest batch: below [`speedlayer_core::WRITER_WINDOW`] (1024), so one batch applied
/// out of order (a retried or partially applied one) stays inside the window.
pub const MAX_BATCH: usize = 1000;
/// Default `ack_wait`: how long JetStream waits for an ack before redelivering.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);
/// Where and how to consume. Validate with [`NatsConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct NatsConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for several).
    pub url: String,
    /// The JetStream stream to consume; it must exist (its owner chooses its retention
    /// and storage).
    pub stream: String,
    /// Only this subject of the stream (wildcards allowed), or every subject.
    pub subject: Option<String>,
    /// Durable consumer name; its ack floor is the source's position.
    pub consumer: String,
    /// Apply each batch now (`Sync`) or queue it durably (`Async`) before acking.
    pub mode: Mode,
    /// Messages per batch, `1..=MAX_BATCH`.
    pub batch: usize,
    /// JetStream `ack_wait` of the consumer.
    pub ack_wait: Duration,
}

impl NatsConfig {
    /// The defaults for consuming `stream` from `url`.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            stream: stream.into(),
            subject: None,
            consumer: DEFAULT_CONSUMER.to_string(),
            mode: Mode::Sync,
            batch: DEFAULT_BATCH,
            ack_wait: DEFAULT_ACK_WAIT,
        }
    }

    /// Checks names, batch size and ack wait, with messages naming the setting.
    pub fn validate(&self) -> Result<(), NatsError> {
        let bad = |msg: String| Err(NatsError::Config(msg));
        if self.url.trim().is_empty() {
            return bad("the NATS url is empty".into());
        }
        if !valid_name(&self.stream) {
            return bad(format!(
                "stream name '{}' is invalid (non-empty, no spaces, '.', '*', '>', '/' or '\\')",
                self.stream
            ));
        }
        if !valid_name(&self.consumer) {
            return bad(format!(
                "consumer name '{}' is invalid (non-empty, no spaces, '.', '*', '>', '/' or '\\')",
                self.consumer
            ));
        }
        if let Some(subject) = &self.subject {
            let tokens_ok = subject.split('.').all(|t| !t.is_empty());
            if subject.is_empty() || subject.chars().any(char::is_whitespace) || !tokens_ok {
                return bad(format!("subject '{subject}' is invalid"));
            }
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(format!(
                "batch {} is out of range: 1..={MAX_BATCH} (kept below the counters' \
                 writer window of {} so redeliveries count exactly once)",
                self.batch,
                speedlayer_core::WRITER_WINDOW
            ));
        }
        if self.ack_wait < Duration::from_millis(100) || self.ack_wait > Duration::from_secs(3600) {
            return bad(format!(
                "ack wait {:?} is out of range: 0.1 s to 1 h",
                self.ack_wait
            ));
        }
        Ok(())
    }

    /// The writer of the ids given to events without one.
    pub fn writer(&self) -> String {
        format!("nats.{}", self.stream)
    }
}

/// A stream or consumer name as JetStream accepts it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

/// Why a session with the NATS server ended (the source logs it, waits and starts a new
/// session, resuming from the consumer's ack floor), or why a config is refused.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The configuration is invalid (refused at start).
    #[error("invalid NATS source configuration: {0}")]
    Config(String),
    /// Connecting failed.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// The stream could not be read (missing, no JetStream, timeout).
    #[error("JetStream stream '{stream}': {source}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        source: async_nats::Error,
    },
    /// The stream's retention would let a consumer recreation discard messages.
    #[error(
        "stream '{stream}' uses {retention} retention; the NATS source needs limits \
         retention (it recreates its consumer at the ack floor after a restart, which \
         could discard messages under interest or workqueue retention)"
    )]
    Retention {
        /// The stream.
        stream: String,
        /// Its retention policy.
        retention: &'static str,
    },
    /// A consumer of that name exists and is a push consumer.
    #[error("consumer '{consumer}' exists and is a push consumer; speedlayer needs its own pull consumer (choose another --nats-consumer)")]
    PushConsumer {
        /// The consumer.
        consumer: String,
    },
    /// Reading, deleting or creating the consumer failed.
    #[error("JetStream consumer '{consumer}': {source}")]
    Consumer {
        /// The consumer.
        consumer: String,
        /// Why.
        source: async_nats::Error,
    },
    /// A pull request failed.
    #[error("fetching messages: {0}")]
    Fetch(async_nats::Error),
    /// The connection to the server dropped (or the client dropped messages).
    #[error("the connection to the NATS server was lost")]
    ConnectionLost,
    /// A pull request did not complete in time (e.g. lost with a connection).
    #[error("a pull request did not complete within {0:?}")]
    FetchTimeout(Duration),
    /// A delivered message carried no JetStream metadata.
    #[error("a message without JetStream metadata: {0}")]
    Metadata(async_nats::Error),
    /// A delivery never reached this process (consumer sequence gap); the session
    /// restarts at the ack floor so nothing is applied out of order.
    #[error("delivery gap: expected consumer sequence {expected}, got {got}; resuming from the ack floor")]
    DeliveryGap {
        /// The next delivery sequence expected.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// The server did not confirm an ack; the batch will be redelivered (and count once).
    #[error("acknowledging up to stream sequence {seq}: {source}")]
    Ack {
        /// The acknowledged stream sequence.
        seq: u64,
        /// Why.
        source: async_nats::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_settings() {
        let ok = NatsConfig::new("nats://127.0.0.1:4222", "EVENTS");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.writer(), "nats.EVENTS");
        let cases: Vec<(NatsConfig, &str)> = vec![
            (
                NatsConfig {
                    url: " ".into(),
                    ..ok.clone()
                },
                "url",
            ),
            (
                NatsConfig {
                    stream: "a.b".into(),
                    ..ok.clone()
                },
                "stream name",
            ),
            (
                NatsConfig {
                    consumer: "".into(),
                    ..ok.clone()
                },
                "consumer name",
            ),
            (
                NatsConfig {
                    subject: Some("events..x".into()),
                    ..ok.clone()
                },
                "subject",
            ),
            (
                NatsConfig {
                    batch: MAX_BATCH + 1,
                    ..ok.clone()
                },
                "batch",
            ),
            (
                NatsConfig {
                    batch: 0,
                    ..ok.clone()
                },
                "batch",
            ),
            (
                NatsConfig {
                    ack_wait: Duration::from_millis(10),
                    ..ok.clone()
                },
                "ack wait",
            ),
        ];
        for (config, word) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(word), "{err} should mention {word}");
        }
        let with_subject = NatsConfig {
            subject: Some("events.>".into()),
            ..ok
        };
        assert!(with_subject.validate().is_ok());
    }

    #[test]
    fn the_batch_fits_the_writer_window() {
        const { assert!((MAX_BATCH as u64) < speedlayer_core::WRITER_WINDOW) };
    }
}
