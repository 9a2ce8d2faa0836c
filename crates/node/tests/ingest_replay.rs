//! The async queue's worker applies a batch of records and then removes them; a crash in
//! between means the next run applies the same records again. The queue's ids must make
//! that a no-op for events without ids of their own. Drives the worker's rounds by hand
//! on a real store and coordinator.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use prometheus_client::registry::Registry;
use speedlayer_api::{Coordinator, ViewSpec};
use speedlayer_cluster::{Cluster, ClusterConfig};
use speedlayer_core::{Key, ValueType};
use speedlayer_events::{Event, MappingSpec};
use speedlayer_ingest::metrics::IngestMetrics;
use speedlayer_ingest::worker::BATCH_EVENTS;
use speedlayer_ingest::{Ingest, IngestConfig, Mode};
use speedlayer_store::{Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_applying_queued_records_counts_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let store = Store::open(StoreConfig::new(dir.path()), &mut registry).unwrap();
    let mut spec = ViewSpec::new(ValueType::Counter);
    spec.mapping = Some(MappingSpec {
        filter: None,
        key: "url".into(),
        clustering: None,
        op: "incr 1".into(),
    });
    store.declare_view("hits", spec).unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let cluster = Cluster::start(
        store.clone(),
        ClusterConfig::single("127.0.0.1:0".parse().unwrap()),
        &mut registry,
        stop.clone(),
    )
    .await
    .unwrap();
    let coordinator: Arc<dyn Coordinator> = Arc::new(cluster);
    // No running worker: the test drives the rounds itself.
    let ingest = Ingest::paused(
        coordinator.clone(),
        IngestConfig::default(),
        IngestMetrics::default(),
    );
    let events: Vec<Event> = (0..500)
        .map(|i| {
            let json = format!(r#"{{"url":"/u{}","ts":1732450000}}"#, i % 3);
            Event::parse(json.as_bytes(), 0).unwrap()
        })
        .collect();
    for chunk in events.chunks(100) {
        ingest
            .submit(chunk, Mode::Async, coordinator.defaults())
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let records = ingest.queue().peek(BATCH_EVENTS).unwrap();
        assert_eq!(records.len(), 5);
        ingest.apply_queued(records).await.unwrap();
    }
    let mut total = 0;
    for u in 0..3 {
        let key = Key::new(format!("/u{u}").into_bytes(), Vec::new()).unwrap();
        let reading = store.get("hits", &key).await.unwrap().unwrap();
        total += reading.to_json().as_i64().unwrap();
    }
    assert_eq!(
        total, 500,
        "each queued event counts once however often applied"
    );
}
