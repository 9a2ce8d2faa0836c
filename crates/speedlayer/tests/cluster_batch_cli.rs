//! The `speedlayer batch-export` and `speedlayer import` commands end to end: the real
//! binary against a real cluster of `speedlayer serve` children (`support::cluster`).
//!
//! Raw events go in through `/v1/events` and into a file; `batch-export` recomputes the
//! view from the file, `import` hands it over, and every row then counts each event
//! exactly once: from the batch view before the boundary, from the realtime epochs after
//! it (the invariant tested in `cluster_batch.rs`). Re-posting the events changes nothing.
//! The helpers are in `support::batch`.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

mod support;

use support::batch::{
    assert_rows, hour_start, past_hour_start, utc_hour, Row, HOUR, NODE_ARGS, VIEW,
};
use support::cluster::{Cluster, ClusterOptions};

/// A pageview counter per url per hour, fed by events.
fn pageviews_spec() -> Value {
    json!({
        "type": "counter",
        "epoch_secs": HOUR,
        "mapping": {
            "filter": "type == \"pageview\"",
            "key": "url",
            "clustering": "hour(ts)",
            "op": "incr 1",
        },
    })
}

/// One raw event of test 3.
#[derive(Clone, Debug)]
struct Event {
    pageview: bool,
    url: String,
    ts: u64,
    seq: u64,
}

impl Event {
    fn line(&self) -> String {
        let kind = if self.pageview { "pageview" } else { "click" };
        json!({
            "type": kind, "url": self.url, "ts": self.ts,
            "id": { "writer": "web", "seq": self.seq },
        })
        .to_string()
    }
}

/// `n` events over 4 hours from `h0` and 5 urls, one in ten a click (left out by the
/// mapping's filter), in a scrambled time order.
fn generate_events(h0: u64, n: u64) -> Vec<Event> {
    let mut rng = support::cluster::Rng::new(7);
    (0..n)
        .map(|seq| Event {
            pageview: seq % 10 != 3,
            url: format!("/page{}", rng.next_u64() % 5),
            ts: h0 + rng.next_u64() % (4 * HOUR),
            seq,
        })
        .collect()
}

/// The exact pageview count per (url, hour) of `events`, as rows.
fn pageview_rows(events: &[Event]) -> Vec<Row> {
    let mut counts: BTreeMap<(String, u64), i64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.pageview) {
        *counts
            .entry((e.url.clone(), e.ts / HOUR * HOUR))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((key, hour), value)| Row {
            key,
            clustering: utc_hour(hour),
            value,
            hour,
        })
        .collect()
}

/// `POST {base}/v1/events?consistency=quorum` with the NDJSON `body`; must answer 200.
async fn post_events(client: &Client, base: &str, body: &str) -> Value {
    let url = format!("{base}/v1/events?consistency=quorum");
    let response = client
        .post(&url)
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// Runs the real `speedlayer` binary with `args`; panics with its output unless it exits 0.
async fn run_cli(args: &[&str]) -> String {
    let output = tokio::process::Command::new(support::BIN)
        .args(args)
        .env_remove("SPEEDLAYER_REQUIREPASS")
        .output()
        .await
        .expect("running speedlayer");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "speedlayer {}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" "),
        output.status
    );
    format!("{stdout}{stderr}")
}

/// The rows of an NDJSON batch file, as (key, clustering) → value.
fn read_batch_file(path: &Path) -> BTreeMap<(String, String), i64> {
    let text = std::fs::read_to_string(path).expect("batch file");
    text.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("a JSON row");
            let field = |name: &str| row[name].as_str().unwrap_or_default().to_string();
            (
                (field("key"), field("clustering")),
                row["value"].as_i64().expect("value"),
            )
        })
        .collect()
}

/// The last line of `text` that mentions `word`, for progress lines.
fn line_with<'a>(text: &'a str, word: &str) -> &'a str {
    text.lines()
        .rev()
        .find(|l| l.contains(word))
        .unwrap_or("")
        .trim()
}

/// 3 nodes; raw pageview events over 4 hours go in through `/v1/events` and into a file;
/// `speedlayer batch-export` recomputes the view from the file for T = hour 3 and
/// `speedlayer import` hands it to node 2. Every (url, hour) row read through node 3
/// equals the events' count at boundary T, from the batch view before T and from the
/// realtime epochs after. Re-posting the same events (all with ids) changes nothing: the
/// ones before T are reported late, the others are duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_export_and_import_cli_hand_over_end_to_end() {
    let test_started = Instant::now();
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3).args(NODE_ARGS)).await;
    cluster.declare_spec(VIEW, &pageviews_spec()).await;
    let h0 = past_hour_start();
    let t = hour_start(h0, 3);
    let events = generate_events(h0, 3000);
    let rows = pageview_rows(&events);
    let pageviews = events.iter().filter(|e| e.pageview).count();
    let before_t = events.iter().filter(|e| e.pageview && e.ts < t).count();
    let dir = tempfile::tempdir().expect("tempdir");
    let events_file = dir.path().join("events.ndjson");
    let body: String = events.iter().map(|e| format!("{}\n", e.line())).collect();
    std::fs::write(&events_file, &body).expect("events file");

    let reply = post_events(&cluster.client, &cluster.base(0), &body).await;
    assert_eq!(
        (
            &reply["events"],
            &reply["applied"],
            &reply["late"],
            &reply["unmatched"]
        ),
        (
            &json!(events.len()),
            &json!(pageviews),
            &json!(0),
            &json!(events.len() - pageviews)
        ),
        "posting the events: {reply}"
    );
    assert_rows(&cluster, &[2], "quorum", &rows, 0).await;

    // batch-export through the view's mapping, fetched from node 1.
    let out = dir.path().join("pv.ndjson");
    let node = |i: usize| cluster.base(i).trim_start_matches("http://").to_string();
    let t_arg = t.to_string();
    let exported = run_cli(&[
        "batch-export",
        "--covers-until",
        &t_arg,
        "--view",
        VIEW,
        "--node",
        &node(0),
        "--out",
        out.to_str().expect("path"),
        events_file.to_str().expect("path"),
    ])
    .await;
    let expected_batch: BTreeMap<(String, String), i64> = rows
        .iter()
        .filter(|r| r.hour < t)
        .map(|r| ((r.key.clone(), r.clustering.clone()), r.value))
        .collect();
    assert_eq!(
        read_batch_file(&out),
        expected_batch,
        "batch-export rows: {exported}"
    );
    eprintln!("batch-export: {}", line_with(&exported, "counted"));

    let imported = run_cli(&[
        "import",
        "--view",
        VIEW,
        "--covers-until",
        &t_arg,
        "--node",
        &node(1),
        out.to_str().expect("path"),
    ])
    .await;
    eprintln!("import: {}", line_with(&imported, "imported"));
    assert_rows(&cluster, &[2], "quorum", &rows, t).await;
    assert_rows(&cluster, &[0, 1, 2], "all", &rows, t).await;

    // The same events again: nothing changes; those before T are late.
    let reply = post_events(&cluster.client, &cluster.base(0), &body).await;
    let not_counted =
        reply["duplicate"].as_u64().unwrap_or(0) + reply["stale"].as_u64().unwrap_or(0);
    assert_eq!(
        (&reply["applied"], &reply["late"], not_counted),
        (&json!(0), &json!(before_t), (pageviews - before_t) as u64),
        "re-posting the events: {reply}"
    );
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, t).await;
    eprintln!(
        "{} events ({pageviews} pageviews) in {} rows; re-posted: {} late, {not_counted} \
         duplicate or stale, 0 applied; test took {:?}",
        events.len(),
        rows.len(),
        reply["late"],
        test_started.elapsed()
    );
}
