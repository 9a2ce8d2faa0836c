//! Expiry around the batch hand-over: retired epochs give their disk space back, the
//! retention limit drops uncovered epochs loudly, a published boundary survives a
//! restart, and exact batch distinct counts replace realtime estimates.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::batch::{boundary, get_parts, hour, import, import_counts, ndjson};
use support::http::{metric_value, TestNode};

/// Bytes of every file under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// The live epochs of `view` and their bytes on disk.
async fn epochs(node: &TestNode, view: &str) -> Vec<(u64, u64)> {
    let (_, body) = node.get_path(&format!("/v1/views/{view}/epochs")).await;
    body["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| {
            (
                e["epoch"].as_u64().unwrap(),
                e["disk_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Polls `check` every 100 ms until it holds, for at most 15 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `disk_usage(dir)` once it stopped changing (no flush or compaction under way): the same
/// in two readings 500 ms apart, for at most 15 s.
async fn settled_usage(dir: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = disk_usage(dir);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = disk_usage(dir);
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// The epochs of `view` once the first `n` are flushed to table files (memtables reach
/// disk in the background), for at most 15 s.
async fn flushed_epochs(node: &TestNode, view: &str, n: usize) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = epochs(node, view).await;
        if listed.len() >= n && listed.iter().take(n).all(|(_, bytes)| *bytes > 0) {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "epochs never reached disk: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_epochs_give_their_disk_space_back() {
    const KEYS: u64 = 40_000;
    // Small memtables, so these small epochs reach table files as a big one would.
    let node = TestNode::start_with(|c| {
        c.batch_grace = Duration::from_secs(1);
        c.epoch_memtable_bytes = Some(256 * 1024);
    })
    .await;
    node.declare_ok("pv", "counter").await;
    for h in 0..3 {
        for chunk in 0..KEYS / 5000 {
            let updates: Vec<Value> = (chunk * 5000..(chunk + 1) * 5000)
                .map(|i| json!({ "key": format!("user-{i:08}-with-a-longish-name"), "clustering": format!("h{h}"),
                                 "op": "incr", "by": 1, "ts": hour(h) + i % 3600 }))
                .collect();
            node.update_ok("pv", Value::Array(updates)).await;
        }
    }
    // Memtables reach table files in the background: wait until the two epochs the batch
    // view will cover are on disk.
    // All three, so no flush of the live epoch lands between the two measurements.
    let before = flushed_epochs(&node, "pv", 3).await;
    let covered: u64 = before.iter().take(2).map(|(_, bytes)| bytes).sum();
    // Table files of every keyspace (the shared journal is reclaimed on its own schedule).
    let tables = node.data_dir().join("keyspaces");
    let tables_before = settled_usage(&tables).await;
    // The batch view: one row per hour (a batch layer would aggregate per user too; the
    // point here is the realtime epochs' space).
    import_counts(
        &node,
        "pv",
        "total",
        hour(2),
        &[("h0".into(), KEYS as i64), ("h1".into(), KEYS as i64)],
    )
    .await;
    eventually("the covered epochs are dropped", || async {
        epochs(&node, "pv").await.len() == 1
    })
    .await;
    eventually("their files are deleted", || async {
        disk_usage(&tables) + covered / 2 <= tables_before
    })
    .await;
    let tables_after = disk_usage(&tables);
    eprintln!(
        "epochs before: {before:?}; covered epochs {covered} B; table files {tables_before} B -> {tables_after} B"
    );
    let (value, b, batch, realtime) = get_parts(&node, "pv", "total", "h1").await;
    assert_eq!(
        (value, b, batch, realtime),
        (json!(KEYS), hour(2), json!(KEYS), Value::Null)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_epochs_no_batch_covers_and_says_so() {
    let two_days = Duration::from_secs(2 * 24 * 3600);
    let node = TestNode::start_with(|c| c.retention = Some(two_days)).await;
    node.declare_ok("pv", "counter").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let recent = now - 3600;
    let updates = json!([
        { "key": "/p", "clustering": "old", "op": "incr", "by": 3, "ts": hour(0) },
        { "key": "/p", "clustering": "recent", "op": "incr", "by": 4, "ts": recent },
    ]);
    node.update_ok("pv", updates).await;
    eventually("the epoch older than the retention is dropped", || async {
        epochs(&node, "pv").await.len() == 1
    })
    .await;
    assert_eq!(epochs(&node, "pv").await[0].0, recent / 3600);
    let (value, b, ..) = get_parts(&node, "pv", "/p", "old").await;
    assert_eq!((value, b), (json!(0), 0), "its data left every answer");
    let (value, ..) = get_parts(&node, "pv", "/p", "recent").await;
    assert_eq!(value, 4);
    let metrics = node.metrics_text().await;
    let expired = metric_value(
        &metrics,
        "speedlayer_store_epochs_expired_uncovered_total",
        &[],
    );
    assert_eq!(expired, Some(1.0), "{metrics}");
    let retired = metric_value(&metrics, "speedlayer_store_epochs_retired_total", &[]);
    assert_eq!(retired, Some(0.0), "{metrics}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_boundary_and_its_rows_survive_a_restart() {
    let mut node = TestNode::start().await;
    node.declare_ok("pv", "counter").await;
    let updates: Vec<Value> = (0..3)
        .map(|h| json!({ "key": "/p", "clustering": format!("h{h}"), "op": "incr", "by": 5, "ts": hour(h) }))
        .collect();
    node.update_ok("pv", Value::Array(updates)).await;
    import_counts(
        &node,
        "pv",
        "/p",
        hour(2),
        &[("h0".into(), 7), ("h1".into(), 8)],
    )
    .await;
    node.restart(|_| {}).await;
    assert_eq!(boundary(&node, "pv").await, hour(2));
    let (_, body) = node.range("pv", &[("key", "/p")]).await;
    let rows: Vec<(Value, Value)> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["value"].clone(), r["source"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!(7), json!("batch")),
            (json!(8), json!("batch")),
            (json!(5), json!("realtime"))
        ],
        "{body}"
    );
    assert_eq!(body["boundary"], hour(2));
    // The restarted node still refuses a boundary that does not move forward.
    let answer = import(
        &node,
        "pv",
        &format!("?covers_until={}", hour(1)),
        String::new(),
    )
    .await;
    assert_eq!(answer.0, StatusCode::CONFLICT, "{}", answer.1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_batch_distinct_counts_replace_realtime_estimates() {
    let node = TestNode::start().await;
    node.declare_ok("uniques", "hll").await;
    let add = |c: &str, ts: u64, n: u64| {
        let members: Vec<String> = (0..n).map(|i| format!("visitor-{c}-{i}")).collect();
        json!({ "key": "/p", "clustering": c, "op": "pfadd", "members": members, "ts": ts })
    };
    let updates = json!([
        add("h0", hour(0), 5000),
        add("h1", hour(1), 3000),
        add("h2", hour(2), 40)
    ]);
    node.update_ok("uniques", updates).await;
    let (_, body) = node
        .get("uniques", &[("key", "/p"), ("clustering", "h0")])
        .await;
    assert_eq!(
        body["approximate"], true,
        "a realtime sketch is an estimate: {body}"
    );
    let rows = ndjson([
        json!({ "key": "/p", "clustering": "h0", "value": 5000 }),
        json!({ "key": "/p", "clustering": "h1", "value": 3000 }),
    ]);
    let answer = import(
        &node,
        "uniques",
        &format!("?covers_until={}", hour(2)),
        rows,
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let (_, body) = node
        .get("uniques", &[("key", "/p"), ("clustering", "h0")])
        .await;
    assert_eq!(body["value"], 5000, "exact from the batch view: {body}");
    assert_eq!(body["approximate"], false, "{body}");
    assert_eq!(
        body["parts"]["batch"],
        json!({ "value": 5000, "approximate": false })
    );
    let (_, body) = node
        .get("uniques", &[("key", "/p"), ("clustering", "h2")])
        .await;
    assert_eq!(body["approximate"], true, "realtime part: {body}");
    assert_eq!(body["parts"]["realtime"]["approximate"], true, "{body}");
    let (_, body) = node.range("uniques", &[("key", "/p")]).await;
    let flags: Vec<&Value> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["approximate"])
        .collect();
    assert_eq!(
        flags,
        vec![&json!(false), &json!(false), &json!(true)],
        "{body}"
    );
    assert_eq!(
        body["approximate"], true,
        "a total over rows sums distinct counts: {body}"
    );
    let total = body["total"].as_u64().unwrap();
    assert!((8038..=8042).contains(&total), "5000 + 3000 + ~40: {total}");
    node.stop().await;
}
