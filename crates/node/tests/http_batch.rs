//! The batch hand-over on one node, over HTTP: while a writer streams events and batch
//! imports switch the boundary, every answer is `batch(T) ⊕ realtime since T` for the one
//! boundary T it names; boundary mistakes are clear errors that change nothing.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::batch::{boundary, get_parts, hour, import, import_counts, incr, ndjson};
use support::http::{assert_error, TestNode};

const HOURS: u64 = 6;
const PER_HOUR: u64 = 400;
const PER_BODY: u64 = 20;

/// What the writer and importer have done, for the checkers to compute expectations.
#[derive(Default)]
struct Progress {
    /// Hours whose every event is acknowledged.
    hours_done: AtomicU64,
    /// Events acknowledged / sent.
    acked: AtomicU64,
    sent: AtomicU64,
    /// Boundaries imported (or being imported).
    boundaries: Mutex<Vec<u64>>,
    done: AtomicBool,
}

async fn writer(node: Arc<TestNode>, progress: Arc<Progress>) {
    let mut seq = 0;
    for h in 0..HOURS {
        for body in 0..PER_HOUR / PER_BODY {
            let updates: Vec<Value> = (0..PER_BODY)
                .map(|i| {
                    seq += 1;
                    let ts = hour(h) + (body * PER_BODY + i) * (3600 / PER_HOUR);
                    incr("/p", &format!("h{h}"), ts, seq)
                })
                .collect();
            progress.sent.fetch_add(PER_BODY, Ordering::SeqCst);
            let answer = node.update_ok("pv", Value::Array(updates)).await;
            assert_eq!(answer["applied"], PER_BODY, "{answer}");
            assert_eq!(answer["late"], 0, "no event is before a boundary: {answer}");
            progress.acked.fetch_add(PER_BODY, Ordering::SeqCst);
        }
        progress.hours_done.store(h + 1, Ordering::SeqCst);
    }
}

/// Imports the exact batch view (hours before `k`, from the writer's known counts) at
/// each boundary `hour(k)` as soon as those hours are written.
async fn importer(node: Arc<TestNode>, progress: Arc<Progress>) {
    for k in 2..HOURS {
        while progress.hours_done.load(Ordering::SeqCst) < k {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rows: Vec<(String, i64)> = (0..k).map(|h| (format!("h{h}"), PER_HOUR as i64)).collect();
        progress.boundaries.lock().unwrap().push(hour(k));
        import_counts(&node, "pv", "/p", hour(k), &rows).await;
    }
}

/// Reads the range and one completed row until the others are done; checks each answer
/// against the boundary it names. Returns answers per boundary.
async fn checker(node: Arc<TestNode>, progress: Arc<Progress>) -> BTreeMap<u64, u64> {
    let mut seen = BTreeMap::new();
    while !progress.done.load(Ordering::SeqCst) {
        let acked_before = progress.acked.load(Ordering::SeqCst);
        let hours_before = progress.hours_done.load(Ordering::SeqCst);
        let (status, body) = node.range("pv", &[("key", "/p")]).await;
        let sent_after = progress.sent.load(Ordering::SeqCst);
        assert_eq!(status, StatusCode::OK, "{body}");
        let b = body["boundary"].as_u64().expect("boundary named");
        let known = progress.boundaries.lock().unwrap().clone();
        assert!(
            b == 0 || known.contains(&b),
            "boundary {b} was never imported ({known:?})"
        );
        *seen.entry(b).or_insert(0) += 1;
        for row in body["rows"].as_array().expect("rows") {
            let k: u64 = row["clustering"].as_str().unwrap()[1..].parse().unwrap();
            let source = if hour(k) < b { "batch" } else { "realtime" };
            assert_eq!(row["source"], source, "row h{k} at boundary {b}: {body}");
            if k < hours_before {
                assert_eq!(
                    row["value"], PER_HOUR,
                    "completed row h{k} at boundary {b}: {body}"
                );
            }
        }
        let total = body["total"].as_u64().expect("total");
        assert!(
            (acked_before..=sent_after).contains(&total),
            "total {total} outside [{acked_before}, {sent_after}] at boundary {b}"
        );
        if hours_before > 0 {
            let k = hours_before - 1;
            let (value, b, batch, realtime) = get_parts(&node, "pv", "/p", &format!("h{k}")).await;
            assert_eq!(value, PER_HOUR, "row h{k} at boundary {b}");
            if hour(k) < b {
                assert_eq!(
                    (batch, realtime),
                    (json!(PER_HOUR), Value::Null),
                    "h{k} at {b}"
                );
            } else {
                assert_eq!(
                    (batch, realtime),
                    (Value::Null, json!(PER_HOUR)),
                    "h{k} at {b}"
                );
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_are_batch_plus_realtime_for_the_one_boundary_they_name() {
    let node = Arc::new(TestNode::start_with(|c| c.batch_grace = Duration::from_secs(1)).await);
    node.declare_ok("pv", "counter").await;
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let checkers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(checker(node.clone(), progress.clone())))
        .collect();
    let write = tokio::spawn(writer(node.clone(), progress.clone()));
    let imports = tokio::spawn(importer(node.clone(), progress.clone()));
    let (w, i) = tokio::join!(write, imports);
    progress.done.store(true, Ordering::SeqCst);
    w.expect("writer");
    i.expect("importer");
    let mut per_boundary: BTreeMap<u64, u64> = BTreeMap::new();
    for checker in checkers {
        for (b, n) in checker.await.expect("checker") {
            *per_boundary.entry(b).or_insert(0) += n;
        }
    }
    eprintln!(
        "answers checked per boundary: {per_boundary:?} in {:?}",
        started.elapsed()
    );
    let switched = per_boundary.keys().filter(|b| **b != 0).count();
    assert!(
        switched >= 2,
        "answers at too few boundaries: {per_boundary:?}"
    );

    // Final: exact, at the last boundary, every row from where it belongs.
    let (_, body) = node.range("pv", &[("key", "/p")]).await;
    assert_eq!(body["total"], HOURS * PER_HOUR, "{body}");
    assert_eq!(body["boundary"], hour(HOURS - 1), "{body}");
    // After the grace period the epochs the batch covers are dropped whole.
    let first_live = hour(HOURS - 1) / 3600;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listed) = node.get_path("/v1/views/pv/epochs").await;
        let epochs: Vec<u64> = listed["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["epoch"].as_u64().unwrap())
            .collect();
        if epochs.iter().all(|e| *e >= first_live) {
            assert_eq!(epochs, vec![first_live], "only the last hour is realtime");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "epochs before the boundary remain: {epochs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, body) = node.range("pv", &[("key", "/p")]).await;
    assert_eq!(
        body["total"],
        HOURS * PER_HOUR,
        "still exact after retiring: {body}"
    );
    let metrics = node.metrics_text().await;
    let retired =
        support::http::metric_value(&metrics, "speedlayer_store_epochs_retired_total", &[]);
    assert_eq!(retired, Some((HOURS - 1) as f64), "{metrics}");
    node_stop(node).await;
}

async fn node_stop(node: Arc<TestNode>) {
    match Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => panic!("a task still holds the node"),
    }
}

/// Counts of hours 0..3 written as realtime data, 10 events each.
async fn write_hours(node: &TestNode, hours: u64) {
    let updates: Vec<Value> = (0..hours * 10)
        .map(|i| incr("/p", &format!("h{}", i / 10), hour(i / 10) + i, i + 1))
        .collect();
    node.update_ok("pv", Value::Array(updates)).await;
}

/// Imports the batch view of what [`write_hours`] wrote before hour 2.
async fn import_two_hours(node: &TestNode) {
    let rows = [("h0".to_string(), 10), ("h1".to_string(), 10)];
    import_counts(node, "pv", "/p", hour(2), &rows).await;
}

async fn staged_count(node: &TestNode) -> usize {
    let (_, body) = node.get_path("/v1/views/pv/batch").await;
    body["staged"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_mistakes_are_clear_errors_that_change_nothing() {
    let node = TestNode::start().await;
    node.declare_ok("pv", "counter").await;
    write_hours(&node, 4).await;
    let row = |c: &str, v: Value| json!({ "key": "/p", "clustering": c, "value": v });
    let good = ndjson([row("h0", json!(10)), row("h1", json!(10))]);

    let answer = import(&node, "pv", "", good.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "missing_covers_until");
    let answer = import(
        &node,
        "pv",
        &format!("?covers_until={}", hour(2) + 7),
        good.clone(),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_boundary");
    let detail = answer.1["detail"].as_str().unwrap();
    assert!(
        detail.contains(&hour(2).to_string()),
        "names the aligned times: {detail}"
    );
    let q = format!("?covers_until={}", hour(2));
    let bad_type = ndjson([
        row("h0", json!(10)),
        row("h1", json!(10)),
        row("h1", json!("ten")),
    ]);
    let answer = import(&node, "pv", &q, bad_type).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_batch_row");
    assert!(
        answer.1["detail"].as_str().unwrap().contains("line 3"),
        "{}",
        answer.1
    );
    let malformed = format!("{good}{{\"key\": \"/p\", \"clustering\": \n");
    let answer = import(&node, "pv", &q, malformed).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_batch_row");
    assert!(
        answer.1["detail"].as_str().unwrap().contains("line 3"),
        "{}",
        answer.1
    );
    let unknown_field = ndjson([json!({ "key": "/p", "value": 1, "valeu": 2 })]);
    let answer = import(&node, "pv", &q, unknown_field).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_batch_row");
    let answer = import(&node, "nope", &q, good.clone()).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");
    let answer = import(&node, "redis", &q, good.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "untyped_view");

    // Nothing changed: no boundary, realtime answers, no staged import left behind.
    assert_eq!(boundary(&node, "pv").await, 0);
    let (value, b, batch, realtime) = get_parts(&node, "pv", "/p", "h0").await;
    assert_eq!(
        (value, b, batch, realtime),
        (json!(10), 0, Value::Null, json!(10))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while staged_count(&node).await > 0 {
        assert!(
            Instant::now() < deadline,
            "aborted imports left staged tables"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A good import, then boundaries that do not move forward.
    import_two_hours(&node).await;
    for t in [hour(1), hour(2)] {
        let answer = import(&node, "pv", &format!("?covers_until={t}"), good.clone()).await;
        assert_error(&answer, StatusCode::CONFLICT, "boundary_not_after");
    }
    assert_eq!(boundary(&node, "pv").await, hour(2));
    let (_, body) = node.get_path("/v1/views/pv").await;
    assert_eq!(
        body["boundary"],
        hour(2),
        "the declaration names the boundary: {body}"
    );
    let (_, body) = node.range("pv", &[("key", "/p")]).await;
    assert_eq!(body["total"], 40, "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_reported_and_not_counted() {
    let node = TestNode::start().await;
    node.declare_ok("pv", "counter").await;
    write_hours(&node, 3).await;
    import_two_hours(&node).await;
    // Before the boundary: late, not applied (the batch view owns that time).
    let answer = node
        .update_ok(
            "pv",
            json!([
                incr("/p", "h1", hour(1) + 5, 1000),
                incr("/p", "h2", hour(2) + 5, 1001)
            ]),
        )
        .await;
    assert_eq!(
        answer,
        json!({ "applied": 1, "duplicate": 0, "stale": 0, "late": 1 })
    );
    let (value, ..) = get_parts(&node, "pv", "/p", "h1").await;
    assert_eq!(value, 10, "a late event does not change the batch row");
    let (value, ..) = get_parts(&node, "pv", "/p", "h2").await;
    assert_eq!(value, 11);
    let metrics = node.metrics_text().await;
    let late = support::http::metric_value(&metrics, "speedlayer_store_late_events_total", &[]);
    assert_eq!(late, Some(1.0), "{metrics}");
    let gauge = support::http::metric_value(
        &metrics,
        "speedlayer_batch_boundary_seconds",
        &["view=\"pv\""],
    );
    assert_eq!(gauge, Some(hour(2) as f64), "{metrics}");
    node.stop().await;
}
