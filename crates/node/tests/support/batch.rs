//! Helpers of the batch hand-over tests: hour-aligned simulated event times, imports, and
//! reads that return the boundary they were answered at.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::http::{split, TestNode};

/// Start of a simulated hour `h`: hour-aligned, days in the past (so every event time is
/// real history, before the node's clock).
pub fn hour(h: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = now - now % 3600 - 10 * 24 * 3600;
    base + h * 3600
}

/// `POST /v1/views/{view}/batch?covers_until=T` with `body` (NDJSON).
pub async fn import(node: &TestNode, view: &str, query: &str, body: String) -> (StatusCode, Value) {
    let response = node
        .client
        .post(node.url(&format!("/v1/views/{view}/batch{query}")))
        .body(body)
        .send()
        .await
        .expect("import request");
    split(response).await
}

/// Imports `rows` (clustering → count) of key `key` at `covers_until`, asserting success.
pub async fn import_counts(
    node: &TestNode,
    view: &str,
    key: &str,
    covers_until: u64,
    rows: &[(String, i64)],
) {
    let body = ndjson(
        rows.iter()
            .map(|(c, n)| json!({ "key": key, "clustering": c, "value": n })),
    );
    let answer = import(node, view, &format!("?covers_until={covers_until}"), body).await;
    assert_eq!(
        answer.0,
        StatusCode::OK,
        "import at {covers_until}: {}",
        answer.1
    );
    assert_eq!(answer.1["boundary"], covers_until, "{}", answer.1);
    assert_eq!(answer.1["rows"], rows.len(), "{}", answer.1);
}

/// Values as NDJSON lines.
pub fn ndjson(lines: impl IntoIterator<Item = Value>) -> String {
    lines.into_iter().map(|l| format!("{l}\n")).collect()
}

/// An increment of `key`/`clustering` at event time `ts`, with an id.
pub fn incr(key: &str, clustering: &str, ts: u64, seq: u64) -> Value {
    json!({ "key": key, "clustering": clustering, "op": "incr", "by": 1, "ts": ts,
            "id": { "writer": "w", "seq": seq } })
}

/// The view's current boundary on the node.
pub async fn boundary(node: &TestNode, view: &str) -> u64 {
    let (status, body) = node.get_path(&format!("/v1/views/{view}/batch")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["boundary"].as_u64().expect("boundary")
}

/// A get answer: (value, boundary, batch part value, realtime part value).
pub async fn get_parts(
    node: &TestNode,
    view: &str,
    key: &str,
    clustering: &str,
) -> (Value, u64, Value, Value) {
    let (status, body) = node
        .get(view, &[("key", key), ("clustering", clustering)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["value"].clone(),
        body["boundary"].as_u64().expect("boundary"),
        body["parts"]["batch"]["value"].clone(),
        body["parts"]["realtime"]["value"].clone(),
    )
}
