//! `POST /v1/events` end to end: event mappings declared with views, sync and async
//! ingest of NDJSON and JSON lists, pre-aggregation, event ids and the durable queue
//! across a restart (errors, declarations, back-pressure and streamed bodies are in
//! `http_events_errors.rs`).
//!
//! A real `reqwest` client against a real node.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::json;

use support::events::*;
use support::http::{metric_value, TestNode};

// ---------------------------------------------------------------------------------------
// 1. The must-show mappings, sync and async
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pageview_stream_feeds_three_views_exactly_in_sync_mode() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_page_views(&api).await;
    let s = page_stream(1, 20_000);
    assert!(s.clicks > 1000 && s.clicks < 4000, "clicks {}", s.clicks);
    assert!(s.pageviews.len() >= 15, "urls {}", s.pageviews.len());

    let mut events = 0;
    let mut updates = 0;
    for part in s.lines.chunks(6_000) {
        let answer = api.post_ok("?mode=sync", ndjson(part)).await;
        assert_eq!(answer["mode"], "sync", "{answer}");
        assert_eq!(answer["events"], part.len(), "{answer}");
        assert_eq!(answer["rejected"], 0, "{answer}");
        assert_eq!(
            answer["unmatched"], 0,
            "every event feeds last_seen: {answer}"
        );
        assert_eq!(answer["skipped"], 0, "{answer}");
        assert_eq!(answer["applied"], answer["updates"], "{answer}");
        assert_eq!(answer["duplicate"], 0, "{answer}");
        events += answer["events"].as_u64().unwrap();
        updates += answer["updates"].as_u64().unwrap();
    }
    let pageviews = s.lines.len() - s.clicks;
    assert_eq!(events as usize, s.lines.len());
    // Each pageview feeds three views, each click only last_seen.
    assert_eq!(updates as usize, 3 * pageviews + s.clicks);

    // Sync: readable as soon as the answer came.
    if let Err(why) = check_page_views(&api, &s).await {
        panic!("after a sync stream: {why}");
    }
    // A url-hour range: from/to select hours of one url.
    let url = s.pageviews.keys().next().unwrap().clone();
    let hours = &s.pageviews[&url];
    let (status, body) = api
        .get_json(
            "/v1/views/pageviews/range",
            &[
                ("key", &url),
                ("from", "2024-11-24T13"),
                ("to", "2024-11-24T14"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want: i64 = ["2024-11-24T13", "2024-11-24T14"]
        .iter()
        .filter_map(|h| hours.get(*h))
        .sum();
    assert_eq!(body["total"], json!(want), "{body}");

    let text = api.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "speedlayer_events_received_total",
            &["mode=\"sync\""]
        ),
        Some(s.lines.len() as f64),
        "{text}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pageview_stream_feeds_three_views_exactly_in_async_mode() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_page_views(&api).await;
    let s = page_stream(2, 20_000);

    for part in s.lines.chunks(5_000) {
        let answer = api.post_ok("?mode=async", ndjson(part)).await;
        assert_eq!(answer["mode"], "async", "{answer}");
        assert_eq!(answer["events"], part.len(), "{answer}");
        assert_eq!(answer["queued"], part.len(), "{answer}");
        assert_eq!(answer["rejected"], 0, "{answer}");
        assert!(
            answer.get("applied").is_none(),
            "async answers queued: {answer}"
        );
    }
    api.wait_until("the async pageview stream", || check_page_views(&api, &s))
        .await;
    assert_eq!(api.metric("speedlayer_event_queue_lag_seconds").await, 0.0);
    let text = api.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "speedlayer_events_received_total",
            &["mode=\"async\""]
        ),
        Some(s.lines.len() as f64),
        "{text}"
    );
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Pre-aggregation
// ---------------------------------------------------------------------------------------

/// `n` events into `keys` keys of a counter view `hits` (`incr amount`), and the sums.
fn hit_stream(seed: u64, n: usize, keys: u64) -> (String, BTreeMap<String, i64>) {
    let mut rng = Rng(seed);
    let mut body = String::with_capacity(n * 40);
    let mut sums = BTreeMap::new();
    for _ in 0..n {
        let key = format!("k{}", rng.below(keys));
        let amount = 1 + rng.below(3) as i64;
        body.push_str(&format!("{{\"k\":\"{key}\",\"n\":{amount},\"ts\":{T0}}}\n"));
        *sums.entry(key).or_insert(0) += amount;
    }
    (body, sums)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pre_aggregation_writes_far_fewer_log_entries_than_events() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    api.declare_mapped("hits", "counter", json!({ "key": "k", "op": "incr n" }))
        .await;
    const N: usize = 100_000;

    // Sync: one body, chunks of 8192 events, each one storage batch per key.
    let (body, sync_sums) = hit_stream(3, N, 4);
    let logged_before = api.metric("speedlayer_store_logged_updates_total").await;
    let derived_before = api.metric("speedlayer_event_updates_derived_total").await;
    let answer = api.post_ok("", body).await;
    assert_eq!(answer["applied"], N, "{answer}");
    check_counts(&api, "hits", &sync_sums).await.unwrap();
    let logged = api.metric("speedlayer_store_logged_updates_total").await - logged_before;
    let derived = api.metric("speedlayer_event_updates_derived_total").await - derived_before;
    assert_eq!(derived, N as f64);
    assert!(
        logged * 10.0 < derived,
        "sync: {logged} log entries for {derived} derived updates"
    );
    assert!(logged >= 4.0, "sync: {logged} log entries for 4 keys");
    eprintln!("sync: {derived} derived updates, {logged} log entries");

    // Async: the worker batches queued records and merges per key.
    let (body, async_sums) = hit_stream(4, N, 16);
    let logged_before = api.metric("speedlayer_store_logged_updates_total").await;
    let answer = api.post_ok("?mode=async", body).await;
    assert_eq!(answer["queued"], N, "{answer}");
    let mut total = sync_sums.clone();
    for (k, v) in &async_sums {
        *total.entry(k.clone()).or_insert(0) += v;
    }
    api.wait_counts("hits", &total).await;
    let logged = api.metric("speedlayer_store_logged_updates_total").await - logged_before;
    let derived = api.metric("speedlayer_event_updates_derived_total").await;
    assert_eq!(derived, derived_before + 2.0 * N as f64);
    assert!(
        logged * 10.0 < N as f64,
        "async: {logged} log entries for {N} queued updates"
    );
    eprintln!("async: {N} queued updates, {logged} log entries");
    let applied = api.metric("speedlayer_store_updates_applied_total").await;
    assert!(applied >= 2.0 * N as f64, "updates applied {applied}");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. Event ids
// ---------------------------------------------------------------------------------------

fn id_events(writer: &str, seqs: std::ops::Range<u64>, keys: u64) -> String {
    seqs.map(|seq| {
        json!({ "k": format!("k{}", seq % keys), "ts": T0,
                "id": { "writer": writer, "seq": seq } })
        .to_string()
    })
    .collect::<Vec<_>>()
    .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_with_ids_count_once_when_resent() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    api.declare_mapped("ids", "counter", json!({ "key": "k", "op": "incr 1" }))
        .await;
    // A second view fed by the same events: one id per event, used in both views.
    api.declare_mapped(
        "ids_all",
        "gcounter",
        json!({ "key": "'all'", "op": "incr 1" }),
    )
    .await;

    // Sync: 50 events over 5 keys, sent twice.
    let body = id_events("w", 0..50, 5);
    let first = api.post_ok("", body.clone()).await;
    assert_eq!(first["applied"], 100, "{first}");
    assert_eq!(first["duplicate"], 0, "{first}");
    let again = api.post_ok("?mode=sync", body.clone()).await;
    assert_eq!(again["updates"], 100, "{again}");
    assert_eq!(again["applied"], 0, "{again}");
    assert_eq!(again["duplicate"], 100, "{again}");
    assert_eq!(again["stale"], 0, "{again}");
    let mut want: BTreeMap<String, i64> = (0..5).map(|k| (format!("k{k}"), 10)).collect();
    check_counts(&api, "ids", &want).await.unwrap();
    assert_eq!(api.value("ids_all", "all", "").await, json!(50));

    // The same event twice in one body (one pre-aggregated batch) counts once.
    let line = json!({ "k": "k0", "ts": T0, "id": { "writer": "w", "seq": 1000 } }).to_string();
    let twice = api.post_ok("", format!("{line}\n{line}\n")).await;
    assert_eq!(twice["applied"], 2, "{twice}");
    assert_eq!(twice["duplicate"], 2, "{twice}");
    *want.get_mut("k0").unwrap() += 1;
    check_counts(&api, "ids", &want).await.unwrap();

    // A seq given as a string is the same id.
    let as_string =
        json!({ "k": "k0", "ts": T0, "id": { "writer": "w", "seq": "1000" } }).to_string();
    let answer = api.post_ok("", as_string).await;
    assert_eq!(answer["duplicate"], 2, "{answer}");

    // Re-sending the sync events through the queue changes nothing either.
    api.post_ok("?mode=async", body.clone()).await;

    // Async: another writer's 60 events, queued twice.
    let body = id_events("wa", 0..60, 6);
    for _ in 0..2 {
        let answer = api.post_ok("?mode=async", body.clone()).await;
        assert_eq!(answer["queued"], 60, "{answer}");
    }
    for k in 0..6 {
        *want.entry(format!("k{k}")).or_insert(0) += 10;
    }
    api.wait_counts("ids", &want).await;
    assert_eq!(api.value("ids_all", "all", "").await, json!(50 + 1 + 60));
    // And the async ones re-sent in sync mode are duplicates.
    let answer = api.post_ok("", body).await;
    assert_eq!(answer["duplicate"], 120, "{answer}");
    check_counts(&api, "ids", &want).await.unwrap();
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 8. The queue across a restart
// ---------------------------------------------------------------------------------------

/// Starts a node on `dir` at once (as `support::start_node` does), failing the test if it
/// cannot: `shutdown()` has returned, so the data directory must be free.
async fn start_on(dir: &tempfile::TempDir) -> (speedlayer_node::Node, Api) {
    let config = speedlayer_node::NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        resp: "127.0.0.1:0".parse().unwrap(),
        ..speedlayer_node::NodeConfig::new(dir.path())
    };
    let node = speedlayer_node::Node::start(config)
        .await
        .unwrap_or_else(|e| panic!("restarting on the same directory after shutdown(): {e}"));
    let api = Api {
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base: format!("http://{}", node.http_addr),
    };
    (node, api)
}

fn counter_line(k: &str) -> String {
    format!("{{\"k\":\"{k}\",\"ts\":{T0}}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_events_survive_a_restart_and_drain_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, api) = start_on(&dir).await;
    api.declare_mapped("r", "counter", json!({ "key": "k", "op": "incr 1" }))
        .await;
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    // Many records queued over 40 keys, and the node stopped at once: whatever the
    // worker had not applied is still in the durable queue.
    for _ in 0..40 {
        let body: String = (0..40).map(|k| counter_line(&format!("k{k}"))).collect();
        let answer = api.post_ok("?mode=async", body.repeat(25)).await;
        assert_eq!(answer["queued"], 1_000, "{answer}");
    }
    for k in 0..40 {
        want.insert(format!("k{k}"), 1_000);
    }
    support::shutdown(Some(node)).await;

    let (node, api) = start_on(&dir).await;
    api.wait_counts("r", &want).await;
    assert_eq!(api.queue_length().await, 0.0);
    assert_eq!(api.metric("speedlayer_event_queue_lag_seconds").await, 0.0);
    support::shutdown(Some(node)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_events_after_a_restart_with_an_empty_queue_still_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, api) = start_on(&dir).await;
    api.declare_mapped("r", "counter", json!({ "key": "k", "op": "incr 1" }))
        .await;
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for k in ["a", "b"] {
        api.post_ok("?mode=async", counter_line(k).repeat(2_000))
            .await;
        want.insert(k.to_string(), 2_000);
    }
    // Fully drained before the shutdown: the queue is empty on restart.
    api.wait_counts("r", &want).await;
    support::shutdown(Some(node)).await;

    let (node, api) = start_on(&dir).await;
    check_counts(&api, "r", &want).await.unwrap();
    // New events to the same keys (and a new key) are new: they must count.
    for k in ["a", "b", "c"] {
        let answer = api
            .post_ok("?mode=async", counter_line(k).repeat(300))
            .await;
        assert_eq!(answer["queued"], 300, "{answer}");
        *want.entry(k.to_string()).or_insert(0) += 300;
    }
    api.wait_counts("r", &want).await;
    support::shutdown(Some(node)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_backlog_drains_while_reads_stay_answered() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    api.declare_mapped("hot", "counter", json!({ "key": "k", "op": "incr 1" }))
        .await;
    // 65,536 queued events to one key: the worker's round size. Every queued event gets
    // a queue id, so this is one pre-aggregated batch of id-carrying updates.
    const N: i64 = 65_536;
    let answer = api
        .post_ok("?mode=async", counter_line("hot").repeat(N as usize))
        .await;
    assert_eq!(answer["queued"], N, "{answer}");
    // The backlog drains within the deadline, and reads (of another key, and the metrics
    // page) keep answering within 10 s meanwhile.
    let quick = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    loop {
        let read = quick
            .get(api.url("/v1/views/hot/get?key=cold"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a read blocked while {N} queued events drain ({:?} in): {e}",
                    started.elapsed()
                )
            });
        assert_eq!(read.status(), StatusCode::OK);
        let metrics = quick
            .get(api.url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "/metrics blocked while {N} queued events drain ({:?} in): {e}",
                    started.elapsed()
                )
            })
            .text()
            .await
            .unwrap();
        let queued = metric_value(&metrics, "speedlayer_event_queue_length", &[]);
        if queued == Some(0.0) && api.value("hot", "hot", "").await == json!(N) {
            break;
        }
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "{N} queued events to one key not applied within {DRAIN_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await;
}
