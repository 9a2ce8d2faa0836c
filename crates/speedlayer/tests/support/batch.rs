//! What the batch hand-over tests (`tests/cluster_batch*.rs`) share: the view they import
//! into and its epoch, the nodes' flags, simulated event hours, imports and reads over
//! HTTP as the answers spell them, and rows whose exact values a test knows (written as
//! increments, read back with a `get` per row and a `range` per key).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::cluster::{get_json, post_update, Cluster, QUORUM};

/// The view every test imports into.
pub const VIEW: &str = "pv";
/// The view's epoch: one hour, so boundaries are full hours.
pub const HOUR: u64 = 3600;
/// Flags of every node: an old boundary stays readable 2 s after a newer one is published.
pub const NODE_ARGS: &[&str] = &["--batch-grace", "2"];
/// `--batch-grace` of [`NODE_ARGS`].
pub const GRACE: Duration = Duration::from_secs(2);

/// `{"type":"counter","epoch_secs":3600}`.
pub fn counter_spec() -> Value {
    json!({ "type": "counter", "epoch_secs": HOUR })
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The start of the simulated event time: a full hour three days ago, so every event
/// time of a test (a few hours from there) is in the past, as events must be.
pub fn past_hour_start() -> u64 {
    (now_secs() - 3 * 86_400) / HOUR * HOUR
}

/// The start of simulated hour `h` (hour 0 starts at `h0`).
pub fn hour_start(h0: u64, h: usize) -> u64 {
    h0 + h as u64 * HOUR
}

/// The clustering key of hour `h`'s row.
pub fn hour_label(h: usize) -> String {
    format!("h{h}")
}

/// `YYYY-MM-DDTHH` of Unix seconds in UTC: the `hour(ts)` bucket of an event mapping.
pub fn utc_hour(secs: u64) -> String {
    // Days to civil date (H. Hinnant's algorithm), for days after 1970.
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days / 146_097;
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}", secs % 86_400 / 3600)
}

// ---------------------------------------------------------------------------------------
// HTTP: imports and reads as the answers spell them.
// ---------------------------------------------------------------------------------------

/// NDJSON batch rows, one `{"key","clustering","value"}` per line.
pub fn batch_body<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, i64)>) -> String {
    rows.into_iter()
        .map(|(key, clustering, value)| {
            format!(
                "{}\n",
                json!({ "key": key, "clustering": clustering, "value": value })
            )
        })
        .collect()
}

/// `POST {base}/v1/views/{view}/batch?covers_until=T` with `body`: the status and the
/// answer (a JSON string of the raw text if it is not JSON).
pub async fn post_import(
    client: Client,
    base: String,
    view: &str,
    covers_until: u64,
    body: reqwest::Body,
) -> Result<(StatusCode, Value), String> {
    let url = format!("{base}/v1/views/{view}/batch?covers_until={covers_until}");
    let response = client
        .post(&url)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// An import that must publish: checks the reply's boundary, rows and `published`.
pub async fn import_ok(client: &Client, base: &str, covers_until: u64, body: String) -> Value {
    let rows = body.lines().count() as u64;
    let started = Instant::now();
    let (status, reply) = post_import(
        client.clone(),
        base.to_string(),
        VIEW,
        covers_until,
        body.into(),
    )
    .await
    .unwrap_or_else(|e| panic!("import at {covers_until} through {base}: {e}"));
    assert_eq!(
        (
            status,
            &reply["published"],
            &reply["boundary"],
            &reply["rows"]
        ),
        (
            StatusCode::OK,
            &json!(true),
            &json!(covers_until),
            &json!(rows)
        ),
        "import of {rows} rows at {covers_until} through {base}: {reply}"
    );
    eprintln!(
        "imported {rows} rows at boundary {covers_until} through {base} in {:?}: {reply}",
        started.elapsed()
    );
    reply
}

/// A request body the test feeds piece by piece, so an import can be held open mid-body.
pub fn channel_body() -> (mpsc::Sender<Bytes>, reqwest::Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|piece| (Ok::<Bytes, std::io::Error>(piece), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

/// A `get` answer: the boundary it names, the value, and which parts it came from.
#[derive(Clone, Debug)]
pub struct GetSeen {
    pub boundary: u64,
    pub value: i64,
    /// `batch`, `realtime`, `batch+realtime`, or `none` (no part holds the row).
    pub source: &'static str,
}

/// The name of the parts a row came from, as a range answer spells it (`none`: neither).
pub fn source_name(batch: bool, realtime: bool) -> &'static str {
    match (batch, realtime) {
        (true, true) => "batch+realtime",
        (true, false) => "batch",
        (false, true) => "realtime",
        (false, false) => "none",
    }
}

/// Reads a `get` answer; an answer whose value is not the sum of its parts is an error.
pub fn parse_get(answer: &Value) -> Result<GetSeen, String> {
    let boundary = answer["boundary"].as_u64();
    let value = answer["value"].as_i64();
    let part = |name: &str| -> Result<Option<i64>, String> {
        match &answer["parts"][name] {
            Value::Null => Ok(None),
            part => part["value"]
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("part {name} has no integer value")),
        }
    };
    let (Some(boundary), Some(value)) = (boundary, value) else {
        return Err(format!("no integer boundary and value in {answer}"));
    };
    let (batch, realtime) = (part("batch")?, part("realtime")?);
    let sum = batch.unwrap_or(0) + realtime.unwrap_or(0);
    if sum != value {
        return Err(format!(
            "value {value} is not the sum of its parts: {answer}"
        ));
    }
    Ok(GetSeen {
        boundary,
        value,
        source: source_name(batch.is_some(), realtime.is_some()),
    })
}

/// A `range` answer: the boundary it names, each row's value and source, the total.
#[derive(Clone, Debug, Default)]
pub struct RangeSeen {
    pub boundary: u64,
    pub total: i64,
    pub truncated: bool,
    pub rows: BTreeMap<String, (i64, String)>,
}

/// Reads a `range` answer.
pub fn parse_range(answer: &Value) -> Result<RangeSeen, String> {
    let bad = || format!("not a range answer of a counter: {answer}");
    let mut seen = RangeSeen {
        boundary: answer["boundary"].as_u64().ok_or_else(bad)?,
        total: answer["total"].as_i64().ok_or_else(bad)?,
        truncated: answer["truncated"].as_bool().ok_or_else(bad)?,
        rows: BTreeMap::new(),
    };
    for row in answer["rows"].as_array().ok_or_else(bad)? {
        let (Some(clustering), Some(value), Some(source)) = (
            row["clustering"].as_str(),
            row["value"].as_i64(),
            row["source"].as_str(),
        ) else {
            return Err(bad());
        };
        seen.rows
            .insert(clustering.to_string(), (value, source.to_string()));
    }
    Ok(seen)
}

/// `GET {base}/v1/views/pv/get?key&clustering&consistency`, parsed.
pub async fn get_row(
    client: &Client,
    base: &str,
    key: &str,
    clustering: &str,
    consistency: &str,
) -> Result<GetSeen, String> {
    let url = format!("{base}/v1/views/{VIEW}/get");
    let response = client
        .get(&url)
        .query(&[
            ("key", key),
            ("clustering", clustering),
            ("consistency", consistency),
        ])
        .send()
        .await
        .map_err(|e| format!("get {key}/{clustering} {consistency} via {base}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "get {key}/{clustering} {consistency} via {base}: {status} {text}"
        ));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    parse_get(&answer).map_err(|e| format!("get {key}/{clustering} via {base}: {e}"))
}

/// `GET {base}/v1/views/pv/range?key&consistency`, parsed.
pub async fn get_range(
    client: &Client,
    base: &str,
    key: &str,
    consistency: &str,
) -> Result<RangeSeen, String> {
    let url = format!("{base}/v1/views/{VIEW}/range");
    let response = client
        .get(&url)
        .query(&[("key", key), ("consistency", consistency)])
        .send()
        .await
        .map_err(|e| format!("range {key} {consistency} via {base}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "range {key} {consistency} via {base}: {status} {text}"
        ));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    parse_range(&answer).map_err(|e| format!("range {key} via {base}: {e}"))
}

/// `GET /v1/views/pv/batch` of `base`: the node's boundary, retiring and staged imports.
pub async fn batch_status(client: &Client, base: &str) -> Value {
    get_json(client, &format!("{base}/v1/views/{VIEW}/batch"))
        .await
        .unwrap_or_else(|e| panic!("batch status: {e}"))
}

/// Start times of the realtime epochs `base` holds for the view.
pub async fn epoch_starts(client: &Client, base: &str) -> Result<Vec<u64>, String> {
    let answer = get_json(client, &format!("{base}/v1/views/{VIEW}/epochs")).await?;
    answer["epochs"]
        .as_array()
        .map(|epochs| {
            epochs
                .iter()
                .filter_map(|e| e["start_secs"].as_u64())
                .collect()
        })
        .ok_or_else(|| format!("no epochs in {answer}"))
}

// ---------------------------------------------------------------------------------------
// Rows whose exact values a test knows.
// ---------------------------------------------------------------------------------------

/// A row whose exact value the test knows, and the start of the hour its events fall in,
/// which decides where a read at a boundary must take it from.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: String,
    pub clustering: String,
    pub value: i64,
    pub hour: u64,
}

impl Row {
    /// The only part a read at `boundary` may take this row from.
    pub fn source_at(&self, boundary: u64) -> &'static str {
        if self.hour < boundary {
            "batch"
        } else {
            "realtime"
        }
    }

    /// The row as a batch view line.
    pub fn batch_line(&self) -> (&str, &str, i64) {
        (&self.key, &self.clustering, self.value)
    }
}

/// Keys `/a` and `/b` over hours 0..4 of `h0`, each row a different count.
pub fn small_rows(h0: u64) -> Vec<Row> {
    ["/a", "/b"]
        .into_iter()
        .enumerate()
        .flat_map(|(n, key)| {
            (0..4).map(move |h| Row {
                key: key.to_string(),
                clustering: hour_label(h),
                value: 5 + 3 * h as i64 + 11 * n as i64,
                hour: hour_start(h0, h),
            })
        })
        .collect()
}

/// The batch view at `boundary` of `rows`: those of hours before it.
pub fn batch_of(rows: &[Row], boundary: u64) -> String {
    batch_body(
        rows.iter()
            .filter(|r| r.hour < boundary)
            .map(Row::batch_line),
    )
}

/// Reads every row through each of `nodes` at `consistency`, with a `get` per row and a
/// `range` per key; one line per answer that does not name `boundary` or holds a value
/// other than the row's, or takes it from another part than the boundary says.
pub async fn row_mismatches(
    cluster: &Cluster,
    nodes: &[usize],
    consistency: &str,
    rows: &[Row],
    boundary: u64,
) -> Vec<String> {
    let client = &cluster.client;
    let mut wrong = Vec::new();
    for &i in nodes {
        let base = cluster.base(i);
        let at = format!("n{} {consistency}", i + 1);
        for row in rows {
            let want = (boundary, row.value, row.source_at(boundary));
            match get_row(client, &base, &row.key, &row.clustering, consistency).await {
                Ok(seen) if (seen.boundary, seen.value, seen.source) == want => {}
                Ok(seen) => wrong.push(format!(
                    "{at} get {}/{}: {seen:?}, expected (boundary, value, source) {want:?}",
                    row.key, row.clustering
                )),
                Err(e) => wrong.push(format!("{at}: {e}")),
            }
        }
        let mut keys: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
        for row in rows {
            keys.entry(&row.key).or_default().push(row);
        }
        for (key, rows) in keys {
            let want: BTreeMap<String, (i64, String)> = rows
                .iter()
                .map(|r| {
                    let source = r.source_at(boundary).to_string();
                    (r.clustering.clone(), (r.value, source))
                })
                .collect();
            let total: i64 = rows.iter().map(|r| r.value).sum();
            match get_range(client, &base, key, consistency).await {
                Ok(seen)
                    if seen.boundary == boundary
                        && seen.total == total
                        && !seen.truncated
                        && seen.rows == want => {}
                Ok(seen) => wrong.push(format!(
                    "{at} range {key}: {seen:?}, expected boundary {boundary}, total {total}, \
                     rows {want:?}"
                )),
                Err(e) => wrong.push(format!("{at}: {e}")),
            }
        }
    }
    wrong
}

/// Asserts that reads through each of `nodes` at `consistency` answer `rows` exactly at
/// `boundary` (see [`row_mismatches`]).
pub async fn assert_rows(
    cluster: &Cluster,
    nodes: &[usize],
    consistency: &str,
    rows: &[Row],
    boundary: u64,
) {
    let wrong = row_mismatches(cluster, nodes, consistency, rows, boundary).await;
    assert!(
        wrong.is_empty(),
        "{} reads through {nodes:?} at {consistency} are not the exact rows at boundary \
         {boundary}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// [`assert_rows`], polled for at most `within` (a replica's own copy may lag a moment).
pub async fn await_rows(
    cluster: &mut Cluster,
    nodes: &[usize],
    consistency: &str,
    rows: &[Row],
    boundary: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        cluster.assert_running();
        let wrong = row_mismatches(cluster, nodes, consistency, rows, boundary).await;
        if wrong.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?}, {} reads through {nodes:?} at {consistency} are still not \
             the exact rows at boundary {boundary}:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One counter increment of `key`/`clustering` at `ts` with id (`writer`, `seq`).
pub fn incr(key: &str, clustering: &str, ts: u64, writer: &str, seq: u64) -> Value {
    json!({
        "key": key, "clustering": clustering, "op": "incr", "by": 1, "ts": ts,
        "id": { "writer": writer, "seq": seq },
    })
}

/// Posts `body` (a list of updates) through `base` at quorum until it is acknowledged: a
/// 503 or a transport error is retried with the same body, whose ids make it count once.
/// Returns the reply and the attempts it took.
pub async fn post_until_acked(
    client: &Client,
    base: &str,
    body: &Value,
) -> Result<(Value, u32), String> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let failure = match post_update(client, base, VIEW, body, QUORUM).await {
            Ok((StatusCode::OK, reply)) => return Ok((reply, attempts)),
            Ok((StatusCode::SERVICE_UNAVAILABLE, reply)) => format!("503 {reply}"),
            Ok((status, reply)) => return Err(format!("update via {base}: {status} {reply}")),
            Err(e) => e,
        };
        if attempts >= 40 {
            return Err(format!(
                "update via {base} failed {attempts} times, last: {failure}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes each row's value as that many increments (ids `writer`/1..) through `base`.
pub async fn write_rows(client: &Client, base: &str, rows: &[Row], writer: &str) {
    let mut seq = 0;
    let mut updates = Vec::new();
    for row in rows {
        for i in 0..row.value as u64 {
            seq += 1;
            updates.push(incr(
                &row.key,
                &row.clustering,
                row.hour + i * 61 % HOUR,
                writer,
                seq,
            ));
        }
    }
    for body in updates.chunks(200) {
        let body = json!(body);
        let (reply, _) = post_until_acked(client, base, &body)
            .await
            .unwrap_or_else(|e| panic!("writing the rows: {e}"));
        assert_eq!(
            (&reply["applied"], &reply["late"]),
            (&json!(body.as_array().map_or(0, Vec::len)), &json!(0)),
            "writing the rows: {reply}"
        );
    }
}
