//! `POST /v1/events` end to end: event mappings declared with views, sync and async
//! ingest of NDJSON and JSON lists, pre-aggregation, event ids, line errors, declaration
//! errors, back-pressure, streamed bodies of any size and the durable queue across a
//! restart.
//!
//! A real `reqwest` client (and raw TCP for chunked bodies) against a real node.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::http::{assert_error, metric_value, split, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 2024-11-24T00:00:00Z.
const DAY0: i64 = 1_732_406_400;
/// 2024-11-24T12:00:00Z: the generated streams start here.
const T0: i64 = DAY0 + 12 * 3600;
/// How long asynchronous results may take to show.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A client and a node's base URL (works for `TestNode` and for nodes restarted by hand).
#[derive(Clone)]
struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn of(node: &TestNode) -> Api {
        Api {
            client: node.client.clone(),
            base: node.url(""),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to `/v1/events{query}`.
    async fn post_raw(&self, query: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/events{query}")))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("events request")
    }

    async fn post(&self, query: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        split(self.post_raw(query, body).await).await
    }

    /// POSTs `body`, asserting 200.
    async fn post_ok(&self, query: &str, body: impl Into<reqwest::Body>) -> Value {
        let (status, answer) = self.post(query, body).await;
        assert_eq!(status, StatusCode::OK, "POST /v1/events{query}: {answer}");
        answer
    }

    async fn declare(&self, view: &str, spec: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/views/{view}")))
            .json(&spec)
            .send()
            .await
            .expect("declare request");
        split(response).await
    }

    async fn declare_mapped(&self, view: &str, value_type: &str, mapping: Value) {
        let (status, body) = self
            .declare(
                view,
                json!({ "type": value_type, "epoch_secs": 3600, "mapping": mapping }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "declaring {view}: {body}");
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .expect("GET");
        split(response).await
    }

    /// The value of one row.
    async fn value(&self, view: &str, key: &str, clustering: &str) -> Value {
        let (status, body) = self
            .get_json(
                &format!("/v1/views/{view}/get"),
                &[("key", key), ("clustering", clustering)],
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "get {view}/{key}/{clustering}: {body}"
        );
        body["value"].clone()
    }

    /// `(clustering, value)` rows and the total of a partition.
    async fn range(&self, view: &str, key: &str) -> (Vec<(String, Value)>, Value) {
        let (status, body) = self
            .get_json(&format!("/v1/views/{view}/range"), &[("key", key)])
            .await;
        assert_eq!(status, StatusCode::OK, "range {view}/{key}: {body}");
        assert_eq!(body["truncated"], false, "range {view}/{key}: {body}");
        let rows = body["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows in {body}"))
            .iter()
            .map(|r| {
                (
                    r["clustering"].as_str().expect("clustering").to_string(),
                    r["value"].clone(),
                )
            })
            .collect();
        (rows, body["total"].clone())
    }

    async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics body")
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name, &[])
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    async fn queue_length(&self) -> f64 {
        self.metric("speedlayer_event_queue_length").await
    }

    async fn health(&self) {
        let (status, body) = self.get_json("/health", &[]).await;
        assert_eq!(status, StatusCode::OK, "health: {body}");
        assert_eq!(body["status"], "ok", "health: {body}");
    }

    /// Polls until the async queue is empty and `check` passes; panics with the last
    /// failure after [`DRAIN_DEADLINE`].
    async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
        loop {
            let queued = self.queue_length().await;
            let outcome = if queued == 0.0 {
                check().await
            } else {
                Err(format!("{queued} events still queued"))
            };
            match outcome {
                Ok(()) => return,
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    panic!("{what}: not reached within {DRAIN_DEADLINE:?}: {why}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until every queued event is applied and `view`'s counters equal `expected`.
    async fn wait_counts(&self, view: &str, expected: &BTreeMap<String, i64>) {
        self.wait_until(&format!("counts of {view}"), || async {
            check_counts(self, view, expected).await
        })
        .await;
    }
}

/// Compares counters of `view` (keys without clustering) with `expected`.
async fn check_counts(
    api: &Api,
    view: &str,
    expected: &BTreeMap<String, i64>,
) -> Result<(), String> {
    for (key, want) in expected {
        let got = api.value(view, key, "").await;
        if got != json!(want) {
            return Err(format!("{view}/{key}: {got}, expected {want}"));
        }
    }
    Ok(())
}

/// A small deterministic PRNG (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The hour bucket of `secs`, as the mapping language writes it.
fn hour_of(secs: i64) -> String {
    assert!(
        (DAY0..DAY0 + 86_400).contains(&secs),
        "{secs} outside 2024-11-24"
    );
    format!("2024-11-24T{:02}", (secs - DAY0) / 3600)
}

/// A generated pageview stream and what the three mapped views must hold after it.
struct PageStream {
    lines: Vec<String>,
    /// url → hour → pageviews.
    pageviews: BTreeMap<String, BTreeMap<String, i64>>,
    /// url → hour → distinct visitors.
    uniques: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// user → latest event time in whole seconds (every event type).
    last_seen: BTreeMap<String, i64>,
    clicks: usize,
}

/// `n` events over six hours: ~20 urls, ~500 visitors and users, 1 in 8 a click; some
/// timestamps fractional, some numeric strings, some users numbers.
fn page_stream(seed: u64, n: usize) -> PageStream {
    let mut rng = Rng(seed);
    let mut s = PageStream {
        lines: Vec::with_capacity(n),
        pageviews: BTreeMap::new(),
        uniques: BTreeMap::new(),
        last_seen: BTreeMap::new(),
        clicks: 0,
    };
    for _ in 0..n {
        // Skewed url popularity: low indexes more often.
        let spread = 1 + rng.below(20);
        let url = format!("/page/{}", rng.below(spread));
        let visitor = format!("v{}", rng.below(500));
        let user_n = rng.below(500);
        let secs = T0 + rng.below(6 * 3600) as i64;
        let click = rng.below(8) == 0;
        let kind = if click { "click" } else { "pageview" };
        let (ts, floor) = match rng.below(10) {
            // Fractional seconds: buckets and `max ts` use the whole second below.
            0 => (json!(secs as f64 + 0.75), secs),
            // A numeric string.
            1 => (json!(secs.to_string()), secs),
            _ => (json!(secs), secs),
        };
        // A user that is a number keys the row by its text.
        let (user, user_key) = if user_n.is_multiple_of(7) {
            (json!(user_n), user_n.to_string())
        } else {
            (json!(format!("u{user_n}")), format!("u{user_n}"))
        };
        let event = json!({
            "type": kind, "url": url, "visitor": visitor, "user": user, "ts": ts,
        });
        s.lines.push(event.to_string());
        let seen = s.last_seen.entry(user_key).or_insert(i64::MIN);
        *seen = (*seen).max(floor);
        if click {
            s.clicks += 1;
            continue;
        }
        let hour = hour_of(floor);
        *s.pageviews
            .entry(url.clone())
            .or_default()
            .entry(hour.clone())
            .or_default() += 1;
        s.uniques
            .entry(url)
            .or_default()
            .entry(hour)
            .or_default()
            .insert(visitor);
    }
    s
}

async fn declare_page_views(api: &Api) {
    let page = r#"type == "pageview""#;
    api.declare_mapped(
        "pageviews",
        "counter",
        json!({ "filter": page, "key": "url", "clustering": "hour(ts)", "op": "incr 1" }),
    )
    .await;
    api.declare_mapped(
        "uniques",
        "hll",
        json!({ "filter": page, "key": "url", "clustering": "hour(ts)", "op": "pfadd visitor" }),
    )
    .await;
    api.declare_mapped("last_seen", "max", json!({ "key": "user", "op": "max ts" }))
        .await;
}

/// Checks the three views against the stream; `Err` describes the first difference.
async fn check_page_views(api: &Api, s: &PageStream) -> Result<(), String> {
    for (url, hours) in &s.pageviews {
        let (rows, total) = api.range("pageviews", url).await;
        let want: Vec<(String, Value)> = hours.iter().map(|(h, n)| (h.clone(), json!(n))).collect();
        if rows != want {
            return Err(format!("pageviews {url}: rows {rows:?}, expected {want:?}"));
        }
        let sum: i64 = hours.values().sum();
        if total != json!(sum) {
            return Err(format!("pageviews {url}: total {total}, expected {sum}"));
        }
    }
    // HLL estimates (p = 14, Ertl's estimator): at these sizes (tens to a few hundred
    // members) the error is a few members either way, so each url-hour must be within
    // max(2.5 %, 4) of exact, the sum over all url-hours within 0.5 % (the errors are
    // unbiased), and each url's range total (the merge of its hours) within 2 %.
    let (mut sum_got, mut sum_exact) = (0.0, 0.0);
    for (url, hours) in &s.uniques {
        let (rows, total) = api.range("uniques", url).await;
        let got_hours: Vec<&String> = rows.iter().map(|(h, _)| h).collect();
        let want_hours: Vec<&String> = hours.keys().collect();
        if got_hours != want_hours {
            return Err(format!(
                "uniques {url}: hours {got_hours:?}, expected {want_hours:?}"
            ));
        }
        for ((hour, got), exact) in rows.iter().zip(hours.values()) {
            let got = got.as_f64().unwrap_or(-1.0);
            let exact = exact.len() as f64;
            sum_got += got;
            sum_exact += exact;
            if (got - exact).abs() > (exact * 0.025).max(4.0) {
                return Err(format!("uniques {url} {hour}: {got}, exact {exact}"));
            }
        }
        let all: BTreeSet<&String> = hours.values().flatten().collect();
        let exact = all.len() as f64;
        let got = total.as_f64().unwrap_or(-1.0);
        if (got - exact).abs() > (exact * 0.02).max(4.0) {
            return Err(format!(
                "uniques {url} over all hours: {got}, exact {exact}"
            ));
        }
    }
    if (sum_got - sum_exact).abs() > sum_exact * 0.005 {
        return Err(format!(
            "uniques summed over url-hours: {sum_got}, exact {sum_exact}"
        ));
    }
    for (user, secs) in &s.last_seen {
        let got = api.value("last_seen", user, "").await;
        if got != json!(secs) {
            return Err(format!("last_seen {user}: {got}, expected {secs}"));
        }
    }
    Ok(())
}

/// Lines joined as an NDJSON body (with a trailing newline).
fn ndjson(lines: &[String]) -> String {
    let mut body = lines.join("\n");
    body.push('\n');
    body
}

fn errors_of(body: &Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["line"].as_u64().expect("line number"),
                        e["error"].as_str().expect("error text").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn error_lines(body: &Value) -> Vec<u64> {
    errors_of(body).into_iter().map(|(l, _)| l).collect()
}

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
// 4. Request errors
// ---------------------------------------------------------------------------------------

async fn declare_error_views(api: &Api) {
    api.declare_mapped(
        "e",
        "counter",
        json!({ "filter": r#"type == "pageview""#, "key": "url", "op": "incr 1" }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_lines_are_reported_by_number_and_the_rest_applied() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_error_views(&api).await;
    let body = [
        format!(r#"{{"type":"pageview","url":"/a","ts":{T0}}}"#), // 1 ok
        "this is not json".to_string(),                           // 2
        "[1,2,3]".to_string(),                                    // 3 array
        r#"{"type":"pageview","url":"/a","ts":1732450000000}"#.to_string(), // 4 ms
        r#"{"type":"pageview","url":"/a","id":{"writer":"","seq":1}}"#.to_string(), // 5
        format!(r#"{{"type":"pageview","url":"/a","ts":{T0}}}"#), // 6 ok
        "   ".to_string(),                                        // 7 blank
        format!(r#"{{"type":"pageview","ts":{T0}}}"#),            // 8 no url: skip
        format!(r#"{{"type":"click","url":"/a","ts":{T0}}}"#),    // 9 unmatched
        r#"{"type":"pageview","url":"/a","id":{"writer":"w","seq":-3}}"#.to_string(), // 10
        r#"{"type":"pageview","url":"/a","ts":-5}"#.to_string(),  // 11
        r#"{"type":"pageview","url":"/a","ts":"soon"}"#.to_string(), // 12
        r#""just a string""#.to_string(),                         // 13
    ]
    .join("\n");

    let answer = api.post("", body.clone()).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    let (_, reply) = &answer;
    assert_eq!(
        error_lines(reply),
        vec![2, 3, 4, 5, 10, 11, 12, 13],
        "{reply}"
    );
    let errors = errors_of(reply);
    assert!(errors[0].1.contains("JSON"), "{reply}");
    assert!(errors[1].1.contains("object"), "{reply}");
    assert!(errors[2].1.contains("ts"), "{reply}");
    assert!(errors[3].1.contains("id"), "{reply}");
    assert_eq!(reply["rejected"], 8, "{reply}");
    assert_eq!(reply["events"], 4, "{reply}");
    assert_eq!(reply["applied"], 2, "{reply}");
    assert_eq!(reply["unmatched"], 1, "{reply}");
    assert_eq!(reply["skipped"], 1, "{reply}");
    let skips = reply["skips"].as_array().expect("skips listed");
    assert_eq!(skips.len(), 1, "{reply}");
    assert_eq!(skips[0]["line"], 8, "{reply}");
    assert_eq!(skips[0]["view"], "e", "{reply}");
    assert!(
        skips[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("url"),
        "{reply}"
    );
    assert_eq!(api.value("e", "/a", "").await, json!(2));

    // atomic=true: the same body applies nothing.
    let answer = api.post("?atomic=true", body.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_events");
    assert_eq!(
        error_lines(&answer.1),
        vec![2, 3, 4, 5, 10, 11, 12, 13],
        "{}",
        answer.1
    );
    assert_eq!(api.value("e", "/a", "").await, json!(2));
    // Nor in async mode.
    let answer = api.post("?atomic=true&mode=async", body).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_events");
    // An atomic body without errors applies.
    let ok = format!(
        "{{\"type\":\"pageview\",\"url\":\"/a\",\"ts\":{T0}}}\n{{\"type\":\"pageview\",\"url\":\"/b\",\"ts\":{T0}}}"
    );
    let answer = api.post_ok("?atomic=true", ok).await;
    assert_eq!(answer["applied"], 2, "{answer}");
    assert_eq!(api.value("e", "/a", "").await, json!(3));
    assert_eq!(api.value("e", "/b", "").await, json!(1));
    // An async atomic body without errors queues it all.
    let ok = format!("{{\"type\":\"pageview\",\"url\":\"/c\",\"ts\":{T0}}}\n");
    let answer = api.post_ok("?atomic=true&mode=async", ok.repeat(10)).await;
    assert_eq!(answer["queued"], 10, "{answer}");
    api.wait_until("atomic async", || async {
        match api.value("e", "/c", "").await {
            v if v == json!(10) => Ok(()),
            v => Err(format!("/c = {v}")),
        }
    })
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_lists_empty_bodies_and_bad_parameters() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_error_views(&api).await;

    // A JSON list (whitespace before it).
    let list = json!([
        { "type": "pageview", "url": "/l", "ts": T0 },
        { "type": "pageview", "url": "/l", "ts": T0 + 1 },
        { "type": "click", "url": "/l", "ts": T0 },
    ]);
    let answer = api.post_ok("", format!("  \n{list}")).await;
    assert_eq!(answer["events"], 3, "{answer}");
    assert_eq!(answer["applied"], 2, "{answer}");
    assert_eq!(answer["unmatched"], 1, "{answer}");
    assert_eq!(api.value("e", "/l", "").await, json!(2));
    // A list with a bad item: the others applied, the item named.
    let list = json!([
        { "type": "pageview", "url": "/l", "ts": T0 },
        { "type": "pageview", "url": "/l", "ts": "never" },
        7,
    ]);
    let answer = api.post("", list.to_string()).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    assert_eq!(answer.1["rejected"], 2, "{}", answer.1);
    assert_eq!(api.value("e", "/l", "").await, json!(3));
    // A list that is not JSON is refused whole.
    let answer = api.post("", r#"[{"type":"pageview"},"#).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_json");
    // An empty list, an empty body, a blank body.
    for body in ["[]", "", "\n\n  \n"] {
        let answer = api.post_ok("", body).await;
        assert_eq!(answer["events"], 0, "{body:?}: {answer}");
        assert_eq!(answer["rejected"], 0, "{body:?}: {answer}");
        let answer = api.post_ok("?mode=async", body).await;
        assert_eq!(answer["queued"], 0, "{body:?}: {answer}");
    }
    // A single event without a trailing newline.
    let one = format!(r#"{{"type":"pageview","url":"/l","ts":{T0}}}"#);
    assert_eq!(api.post_ok("", one.clone()).await["applied"], 1);
    // CRLF line ends.
    let crlf = format!("{one}\r\n{one}\r\n");
    assert_eq!(api.post_ok("", crlf).await["applied"], 2);
    assert_eq!(api.value("e", "/l", "").await, json!(6));

    // Parameters.
    let answer = api.post("?consistency=local", one.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_consistency");
    for query in [
        "?colour=blue",
        "?mode=later",
        "?atomic=maybe",
        "?consistency=most",
    ] {
        let answer = api.post(query, one.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    }
    for query in [
        "?consistency=one",
        "?consistency=quorum",
        "?consistency=all&quorum=strict",
    ] {
        let answer = api.post_ok(query, one.clone()).await;
        assert_eq!(answer["applied"], 1, "{query}: {answer}");
    }
    assert_eq!(api.value("e", "/l", "").await, json!(9));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlong_line_is_rejected_and_later_lines_apply() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_error_views(&api).await;
    let ok = format!(r#"{{"type":"pageview","url":"/long","ts":{T0}}}"#);
    let pad = |bytes: usize| {
        let event = format!(r#"{{"type":"pageview","url":"/long","ts":{T0},"pad":""}}"#);
        let filler = "x".repeat(bytes - event.len());
        format!(r#"{{"type":"pageview","url":"/long","ts":{T0},"pad":"{filler}"}}"#)
    };
    let near = pad(1024 * 1024 - 16);
    let over = pad(1024 * 1024 + 4096);
    let huge = pad(5 * 1024 * 1024);
    let body = [
        ok.clone(), // 1
        over,       // 2: rejected
        ok.clone(), // 3
        near,       // 4: just under the limit, applied
        huge,       // 5: rejected
        ok.clone(), // 6
    ]
    .join("\n");
    let answer = api.post("", body).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    assert_eq!(error_lines(&answer.1), vec![2, 5], "{}", answer.1);
    assert_eq!(answer.1["applied"], 4, "{}", answer.1);
    assert_eq!(api.value("e", "/long", "").await, json!(4));

    // The over-long line last, without a newline after it.
    let answer = api
        .post("", format!("{ok}\n{}", pad(1024 * 1024 + 1)))
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    assert_eq!(error_lines(&answer.1), vec![2], "{}", answer.1);
    assert_eq!(api.value("e", "/long", "").await, json!(5));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. Declaration errors
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mappings_are_refused_at_declaration() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    let page = r#"type == "pageview""#;
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "counter",
            json!({ "key": "url", "op": "pfadd visitor" }),
            &["op", "pfadd"],
        ),
        (
            "hll",
            json!({ "key": "url", "op": "max ts" }),
            &["op", "max"],
        ),
        (
            "counter",
            json!({ "key": "url", "op": "explode 3" }),
            &["op", "explode"],
        ),
        (
            "counter",
            json!({ "key": "url", "op": "incr 1.5" }),
            &["op"],
        ),
        (
            "gcounter",
            json!({ "key": "url", "op": "decr 1" }),
            &["op", "decr"],
        ),
        ("counter", json!({ "key": "url", "op": "" }), &["op"]),
        (
            "counter",
            json!({ "filter": r#"type = "pageview""#, "key": "url", "op": "incr 1" }),
            &["filter"],
        ),
        (
            "counter",
            json!({ "filter": "type ==", "key": "url", "op": "incr 1" }),
            &["filter"],
        ),
        (
            "counter",
            json!({ "filter": "type == pageview", "key": "url", "op": "incr 1" }),
            &["filter", "pageview"],
        ),
        (
            "counter",
            json!({ "filter": page, "key": "url", "clustering": "week(ts)", "op": "incr 1" }),
            &["clustering", "week"],
        ),
        ("counter", json!({ "key": "", "op": "incr 1" }), &["key"]),
        (
            "counter",
            json!({ "key": "a,,b", "op": "incr 1" }),
            &["key"],
        ),
        (
            "counter",
            json!({ "key": "url", "op": "incr 1", "colour": "red" }),
            &["colour"],
        ),
        ("counter", json!({ "op": "incr 1" }), &["key"]),
        ("counter", json!({ "key": "url" }), &["op"]),
        (
            "counter",
            json!({ "key": "x".repeat(2000), "op": "incr 1" }),
            &["key"],
        ),
    ];
    for (i, (value_type, mapping, words)) in cases.iter().enumerate() {
        let view = format!("bad{i}");
        let answer = api
            .declare(&view, json!({ "type": value_type, "mapping": mapping }))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");
        let detail = answer.1["detail"].as_str().unwrap();
        for word in *words {
            assert!(
                detail.contains(word),
                "{value_type} {mapping}: detail {detail:?} should name {word:?}"
            );
        }
        // Nothing was declared.
        let (status, body) = api.get_json(&format!("/v1/views/{view}"), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{view}: {body}");
    }

    // A good mapping: shown as declared, identical redeclaration 200, other mapping 409.
    let mapping =
        json!({ "filter": page, "key": "url, visitor", "clustering": "day(ts)", "op": "incr 1" });
    let spec = json!({ "type": "counter", "epoch_secs": 3600, "mapping": mapping });
    let (status, body) = api.declare("good", spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["mapping"], mapping, "{body}");
    let (status, body) = api.get_json("/v1/views/good", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mapping"], mapping, "{body}");
    assert_eq!(body["type"], "counter", "{body}");
    let (status, body) = api.declare("good", spec).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other = json!({ "filter": page, "key": "url", "clustering": "day(ts)", "op": "incr 1" });
    let answer = api
        .declare(
            "good",
            json!({ "type": "counter", "epoch_secs": 3600, "mapping": other }),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "view_conflict");
    // Dropping the mapping is a change too.
    let answer = api
        .declare("good", json!({ "type": "counter", "epoch_secs": 3600 }))
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "view_conflict");
    let (_, body) = api.get_json("/v1/views", &[]).await;
    let listed = body["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "good")
        .cloned()
        .unwrap_or_else(|| panic!("good not listed: {body}"));
    assert_eq!(listed["mapping"], mapping, "{body}");

    // The declared multi-term key and day bucket are what events write.
    let event = json!({ "type": "pageview", "url": "/x", "visitor": "v1", "ts": T0 });
    assert_eq!(api.post_ok("", event.to_string()).await["applied"], 1);
    assert_eq!(api.value("good", "/x|v1", "2024-11-24").await, json!(1));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. Back-pressure
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_drains() {
    let node = TestNode::start_with(|c| c.ingest.queue_limit = 1).await;
    let api = Api::of(&node);
    api.declare_mapped("bp", "counter", json!({ "key": "k", "op": "incr 1" }))
        .await;
    // Bodies of one chunk (< 8192 events): a 429 queues none of them.
    let body: String = (0..4_000)
        .map(|i| format!("{{\"k\":\"k{}\",\"ts\":{T0}}}\n", i % 3))
        .collect();
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    let mut accepted: u64 = 0;
    let mut refused = 0;
    while refused == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 429 with a queue limit of 1"
        );
        let sends = (0..16).map(|_| {
            let api = api.clone();
            let body = body.clone();
            async move { api.post_raw("?mode=async", body).await }
        });
        for response in futures_util::future::join_all(sends).await {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let answer = split(response).await;
            match answer.0 {
                StatusCode::OK => {
                    assert_eq!(answer.1["queued"], 4_000, "{}", answer.1);
                    accepted += 4_000;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "queue_full");
                    let secs: u64 = retry_after
                        .as_deref()
                        .unwrap_or_else(|| panic!("429 without Retry-After: {}", answer.1))
                        .parse()
                        .expect("Retry-After in seconds");
                    assert!(secs >= 1, "Retry-After {secs}");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", answer.1),
            }
        }
    }
    assert!(accepted > 0, "nothing accepted");
    api.health().await;
    assert!(api.metric("speedlayer_event_queue_full_total").await >= refused as f64);
    // Sync submits are not subject to the queue limit.
    let answer = api
        .post_ok("", format!("{{\"k\":\"sync\",\"ts\":{T0}}}"))
        .await;
    assert_eq!(answer["applied"], 1, "{answer}");

    // What was accepted is applied exactly; the queue drains to zero.
    api.wait_until("the accepted events", || async {
        let mut sum = 0;
        for k in 0..3 {
            sum += api
                .value("bp", &format!("k{k}"), "")
                .await
                .as_i64()
                .unwrap();
        }
        if sum == accepted as i64 {
            Ok(())
        } else {
            Err(format!("sum {sum}, accepted {accepted}"))
        }
    })
    .await;
    // And once drained, async submits are accepted again.
    let answer = api.post_ok("?mode=async", body).await;
    assert_eq!(answer["queued"], 4_000, "{answer}");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. Streamed bodies
// ---------------------------------------------------------------------------------------

/// POSTs `body` to `path` over raw TCP with `Transfer-Encoding: chunked`, in chunks of
/// pseudo-random sizes (so chunk boundaries split lines anywhere); returns the status and
/// the JSON answer.
async fn post_chunked(addr: &str, path: &str, body: &[u8], seed: u64) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut rng = Rng(seed);
    let mut at = 0;
    let mut wrote_all = true;
    while at < body.len() {
        let len = match rng.below(4) {
            0 => 1 + rng.below(16) as usize,
            1 => 1 + rng.below(4096) as usize,
            _ => 1 + rng.below(256 * 1024) as usize,
        }
        .min(body.len() - at);
        let mut chunk = format!("{len:x}\r\n").into_bytes();
        chunk.extend_from_slice(&body[at..at + len]);
        chunk.extend_from_slice(b"\r\n");
        if stream.write_all(&chunk).await.is_err() {
            // The server answered early (e.g. 413) and closed: read its answer.
            wrote_all = false;
            break;
        }
        at += len;
    }
    if wrote_all {
        stream.write_all(b"0\r\n\r\n").await.unwrap();
    }
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut response))
        .await
        .expect("answer within 120 s")
        .expect("read answer");
    let text = String::from_utf8(response).expect("utf-8 answer");
    let (head, payload) = text.split_once("\r\n\r\n").expect("HTTP answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    let json = serde_json::from_str(&payload)
        .unwrap_or_else(|e| panic!("answer {status} not JSON ({e}): {payload:?}"));
    (status, json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_body_of_200000_events_counts_exactly() {
    // A body limit far below the body: NDJSON is streamed, not read whole.
    let node = TestNode::start_with(|c| c.max_body_bytes = 1024 * 1024).await;
    let api = Api::of(&node);
    api.declare_mapped(
        "s",
        "counter",
        json!({ "filter": "has(k)", "key": "k", "clustering": "minute(ts)", "op": "incr 1" }),
    )
    .await;
    const N: usize = 200_000;
    let mut rng = Rng(7);
    let mut body = Vec::with_capacity(N * 40);
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for _ in 0..N {
        let k = format!("k{}", rng.below(10));
        let secs = T0 + rng.below(300) as i64;
        body.extend_from_slice(format!("{{\"k\":\"{k}\",\"ts\":{secs}}}\n").as_bytes());
        let minute = format!("{}:{:02}", hour_of(secs), (secs % 3600) / 60);
        *want.entry((k, minute)).or_insert(0) += 1;
    }
    assert!(body.len() > 4 * 1024 * 1024, "body {} bytes", body.len());
    let addr = node.url("").trim_start_matches("http://").to_string();

    let (status, answer) = post_chunked(&addr, "/v1/events", &body, 11).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], N, "{answer}");
    assert_eq!(answer["applied"], N, "{answer}");
    assert_eq!(answer["rejected"], 0, "{answer}");
    let mut per_key: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for ((k, minute), n) in &want {
        per_key
            .entry(k.clone())
            .or_default()
            .push((minute.clone(), json!(n)));
    }
    for (k, rows) in &per_key {
        let (got, total) = api.range("s", k).await;
        assert_eq!(&got, rows, "sync rows of {k}");
        let sum: i64 = rows.iter().map(|(_, n)| n.as_i64().unwrap()).sum();
        assert_eq!(total, json!(sum));
    }

    // The same body again, async, with other chunk boundaries: counts double.
    let (status, answer) = post_chunked(&addr, "/v1/events?mode=async", &body, 12).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], N, "{answer}");
    api.wait_until("the streamed async body", || async {
        for (k, rows) in &per_key {
            let (got, _) = api.range("s", k).await;
            let doubled: Vec<(String, Value)> = rows
                .iter()
                .map(|(m, n)| (m.clone(), json!(n.as_i64().unwrap() * 2)))
                .collect();
            if got != doubled {
                return Err(format!("rows of {k}: {got:?}"));
            }
        }
        Ok(())
    })
    .await;

    // A JSON list larger than the body limit is refused (it is read whole).
    let list = format!(
        "[{}]",
        "{\"k\":\"big\"},".repeat(200_000).trim_end_matches(',')
    );
    let (status, answer) = post_chunked(&addr, "/v1/events", list.as_bytes(), 13).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "body_too_large", "{answer}");
    assert_eq!(api.value("s", "big", "").await, json!(0));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 8. The queue across a restart
// ---------------------------------------------------------------------------------------

/// Starts a node on `dir` at once (as `support::start_node` does), failing the test if it
/// cannot: `shutdown()` has returned, so the data directory must be free.
async fn start_on(dir: &tempfile::TempDir) -> (speedlayer_server::Node, Api) {
    let config = speedlayer_server::NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        resp: "127.0.0.1:0".parse().unwrap(),
        ..speedlayer_server::NodeConfig::new(dir.path())
    };
    let node = speedlayer_server::Node::start(config)
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
