//! Event sources: consumers of existing logs that feed [`crate::Ingest`].
//!
//! A source reads messages from a log, parses each as an event, gives an event without
//! an id one derived from its position in the log (so redelivery counts once), submits
//! them, and acknowledges a message to the log only after [`crate::Ingest::submit`]
//! returned (the updates are durable). At-least-once delivery plus ids is exactly-once.
//! A new source (Kafka: topic-partition and offset as the id) is one more module here
//! implementing the same loop.
