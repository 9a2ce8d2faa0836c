//! Helpers of the event-ingest tests (`http_events`, `http_events_errors`): an API client
//! over a test node, a generated pageview stream with its exact expected views, and checks.

#![allow(dead_code)] // each test binary uses a subset

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use super::http::{metric_value, split, TestNode};

/// 2024-11-24T00:00:00Z.
pub const DAY0: i64 = 1_732_406_400;
/// 2024-11-24T12:00:00Z: the generated streams start here.
pub const T0: i64 = DAY0 + 12 * 3600;
/// How long asynchronous results may take to show.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A client and a node's base URL (works for `TestNode` and for nodes restarted by hand).
#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub base: String,
}

impl Api {
    pub fn of(node: &TestNode) -> Api {
        Api {
            client: node.client.clone(),
            base: node.url(""),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to `/v1/events{query}`.
    pub async fn post_raw(&self, query: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/events{query}")))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("events request")
    }

    pub async fn post(&self, query: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        split(self.post_raw(query, body).await).await
    }

    /// POSTs `body`, asserting 200.
    pub async fn post_ok(&self, query: &str, body: impl Into<reqwest::Body>) -> Value {
        let (status, answer) = self.post(query, body).await;
        assert_eq!(status, StatusCode::OK, "POST /v1/events{query}: {answer}");
        answer
    }

    pub async fn declare(&self, view: &str, spec: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/views/{view}")))
            .json(&spec)
            .send()
            .await
            .expect("declare request");
        split(response).await
    }

    pub async fn declare_mapped(&self, view: &str, value_type: &str, mapping: Value) {
        let (status, body) = self
            .declare(
                view,
                json!({ "type": value_type, "epoch_secs": 3600, "mapping": mapping }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "declaring {view}: {body}");
    }

    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
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
    pub async fn value(&self, view: &str, key: &str, clustering: &str) -> Value {
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
    pub async fn range(&self, view: &str, key: &str) -> (Vec<(String, Value)>, Value) {
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

    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics body")
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name, &[])
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    pub async fn queue_length(&self) -> f64 {
        self.metric("speedlayer_event_queue_length").await
    }

    pub async fn health(&self) {
        let (status, body) = self.get_json("/health", &[]).await;
        assert_eq!(status, StatusCode::OK, "health: {body}");
        assert_eq!(body["status"], "ok", "health: {body}");
    }

    /// Polls until the async queue is empty and `check` passes; panics with the last
    /// failure after [`DRAIN_DEADLINE`].
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
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
    pub async fn wait_counts(&self, view: &str, expected: &BTreeMap<String, i64>) {
        self.wait_until(&format!("counts of {view}"), || async {
            check_counts(self, view, expected).await
        })
        .await;
    }
}

/// Compares counters of `view` (keys without clustering) with `expected`.
pub async fn check_counts(
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
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The hour bucket of `secs`, as the mapping language writes it.
pub fn hour_of(secs: i64) -> String {
    assert!(
        (DAY0..DAY0 + 86_400).contains(&secs),
        "{secs} outside 2024-11-24"
    );
    format!("2024-11-24T{:02}", (secs - DAY0) / 3600)
}

/// A generated pageview stream and what the three mapped views must hold after it.
pub struct PageStream {
    pub lines: Vec<String>,
    /// url → hour → pageviews.
    pub pageviews: BTreeMap<String, BTreeMap<String, i64>>,
    /// url → hour → distinct visitors.
    pub uniques: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// user → latest event time in whole seconds (every event type).
    pub last_seen: BTreeMap<String, i64>,
    pub clicks: usize,
}

/// `n` events over six hours: ~20 urls, ~500 visitors and users, 1 in 8 a click; some
/// timestamps fractional, some numeric strings, some users numbers.
pub fn page_stream(seed: u64, n: usize) -> PageStream {
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

pub async fn declare_page_views(api: &Api) {
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
pub async fn check_page_views(api: &Api, s: &PageStream) -> Result<(), String> {
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
pub fn ndjson(lines: &[String]) -> String {
    let mut body = lines.join("\n");
    body.push('\n');
    body
}

pub fn errors_of(body: &Value) -> Vec<(u64, String)> {
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

pub fn error_lines(body: &Value) -> Vec<u64> {
    errors_of(body).into_iter().map(|(l, _)| l).collect()
}
