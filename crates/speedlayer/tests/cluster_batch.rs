//! The batch hand-over in a real cluster: `speedlayer serve` children (`support::cluster`)
//! importing batch views while writers and readers keep going, a node SIGKILLed in the
//! middle of an import, and the `batch-export` / `import` commands end to end.
//!
//! The invariant under test (docs/batch.md, DESIGN.md "The hand-over, step by step"):
//! every answer is `batch(T) ⊕ realtime epochs ≥ T` for the one boundary T it names, so
//! every event counts exactly once, whichever boundary a read picked while imports switch
//! it. Rows are keyed by the simulated hour their events fall in; a row of an hour before
//! T must come from the batch view only, a later one from the realtime epochs only.
//!
//! Nodes run with `--batch-grace 2`, so an old boundary (and the realtime epochs it still
//! needs) really is retired during a test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

mod support;

use support::cluster::{get_json, http_client, post_update, Cluster, ClusterOptions, QUORUM};

/// The view every test imports into.
const VIEW: &str = "pv";
/// The view's epoch: one hour, so boundaries are full hours.
const HOUR: u64 = 3600;
/// Flags of every node: an old boundary stays readable 2 s after a newer one is published.
const NODE_ARGS: &[&str] = &["--batch-grace", "2"];
/// `--batch-grace` of [`NODE_ARGS`].
const GRACE: Duration = Duration::from_secs(2);
/// How long after the grace a node may take to drop what it retired (ticks of 1 s, and
/// a loaded machine).
const RETIRE_SLACK: Duration = Duration::from_secs(4);
/// How long a restarted node may take until every node sees every node up.
const RESTART: Duration = Duration::from_secs(20);
/// Rows staged on the owners per round trip by the server (`CHUNK_ROWS`).
const SERVER_CHUNK_ROWS: usize = 8192;
/// Counter of batch rows staged on a node.
const ROWS_STAGED_METRIC: &str = "speedlayer_store_batch_rows_staged_total";
/// Counter of realtime epochs a node dropped because a batch view covers them.
const EPOCHS_RETIRED_METRIC: &str = "speedlayer_store_epochs_retired_total";

/// `{"type":"counter","epoch_secs":3600}`.
fn counter_spec() -> Value {
    json!({ "type": "counter", "epoch_secs": HOUR })
}

/// Unix seconds now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The start of the simulated event time: a full hour three days ago, so every event
/// time of a test (a few hours from there) is in the past, as events must be.
fn past_hour_start() -> u64 {
    (now_secs() - 3 * 86_400) / HOUR * HOUR
}

/// The start of simulated hour `h` (hour 0 starts at `h0`).
fn hour_start(h0: u64, h: usize) -> u64 {
    h0 + h as u64 * HOUR
}

/// `YYYY-MM-DDTHH` of Unix seconds in UTC: the `hour(ts)` bucket of an event mapping.
fn utc_hour(secs: u64) -> String {
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
fn batch_body<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, i64)>) -> String {
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
async fn post_import(
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
async fn import_ok(client: &Client, base: &str, covers_until: u64, body: String) -> Value {
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
fn channel_body() -> (mpsc::Sender<Bytes>, reqwest::Body) {
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
struct GetSeen {
    boundary: u64,
    value: i64,
    /// `batch`, `realtime`, `batch+realtime`, or `none` (no part holds the row).
    source: &'static str,
}

/// The name of the parts a row came from, as a range answer spells it (`none`: neither).
fn source_name(batch: bool, realtime: bool) -> &'static str {
    match (batch, realtime) {
        (true, true) => "batch+realtime",
        (true, false) => "batch",
        (false, true) => "realtime",
        (false, false) => "none",
    }
}

/// Reads a `get` answer; an answer whose value is not the sum of its parts is an error.
fn parse_get(answer: &Value) -> Result<GetSeen, String> {
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
struct RangeSeen {
    boundary: u64,
    total: i64,
    truncated: bool,
    rows: BTreeMap<String, (i64, String)>,
}

/// Reads a `range` answer.
fn parse_range(answer: &Value) -> Result<RangeSeen, String> {
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
async fn get_row(
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
async fn get_range(
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
async fn batch_status(client: &Client, base: &str) -> Value {
    get_json(client, &format!("{base}/v1/views/{VIEW}/batch"))
        .await
        .unwrap_or_else(|e| panic!("batch status: {e}"))
}

/// Start times of the realtime epochs `base` holds for the view.
async fn epoch_starts(client: &Client, base: &str) -> Result<Vec<u64>, String> {
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
struct Row {
    key: String,
    clustering: String,
    value: i64,
    hour: u64,
}

impl Row {
    /// The only part a read at `boundary` may take this row from.
    fn source_at(&self, boundary: u64) -> &'static str {
        if self.hour < boundary {
            "batch"
        } else {
            "realtime"
        }
    }

    /// The row as a batch view line.
    fn batch_line(&self) -> (&str, &str, i64) {
        (&self.key, &self.clustering, self.value)
    }
}

/// The batch view at `boundary` of `rows`: those of hours before it.
fn batch_of(rows: &[Row], boundary: u64) -> String {
    batch_body(
        rows.iter()
            .filter(|r| r.hour < boundary)
            .map(Row::batch_line),
    )
}

/// Reads every row through each of `nodes` at `consistency`, with a `get` per row and a
/// `range` per key; one line per answer that does not name `boundary` or holds a value
/// other than the row's, or takes it from another part than the boundary says.
async fn row_mismatches(
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
async fn assert_rows(
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
async fn await_rows(
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
fn incr(key: &str, clustering: &str, ts: u64, writer: &str, seq: u64) -> Value {
    json!({
        "key": key, "clustering": clustering, "op": "incr", "by": 1, "ts": ts,
        "id": { "writer": writer, "seq": seq },
    })
}

/// Posts `body` (a list of updates) through `base` at quorum until it is acknowledged: a
/// 503 or a transport error is retried with the same body, whose ids make it count once.
/// Returns the reply and the attempts it took.
async fn post_until_acked(
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
async fn write_rows(client: &Client, base: &str, rows: &[Row], writer: &str) {
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

// ---------------------------------------------------------------------------------------
// Test 1: answers at one boundary while imports switch it.
// ---------------------------------------------------------------------------------------

/// Simulated hours the writer streams.
const HOURS: usize = 7;
/// The hours whose completion triggers an import covering every hour before them.
const IMPORT_AT: [usize; 4] = [2, 3, 4, 5];
/// Events per writer request.
const BODY_EVENTS: usize = 20;
/// The writer's pause between requests, so the hours (and the boundaries imported at
/// their ends) last long enough for the checkers to read at each of them.
const WRITER_PACE: Duration = Duration::from_millis(40);
/// The partition key every event of test 1 increments.
const PAGE: &str = "/p";

/// Events in simulated hour `h`: a different count per hour, so a row taken from the
/// wrong hour, or counted twice, shows.
fn events_in_hour(h: usize) -> i64 {
    120 + 37 * h as i64
}

/// The clustering key of hour `h`'s row.
fn hour_label(h: usize) -> String {
    format!("h{h}")
}

/// What the writer and the importer have done so far, shared with the checkers.
struct Progress {
    h0: u64,
    /// Events acknowledged per hour, for each hour whose events were all acknowledged.
    completed: Mutex<Vec<i64>>,
    /// Events acknowledged.
    acked: AtomicI64,
    /// Events sent at least once.
    sent: AtomicI64,
    /// Boundaries imports were started at, in order.
    boundaries: Mutex<Vec<u64>>,
    writer_done: AtomicBool,
    importer_done: AtomicBool,
}

/// What [`Progress`] said at one instant.
#[derive(Clone, Debug)]
struct Snapshot {
    completed: Vec<i64>,
    acked: i64,
    sent: i64,
    boundaries: Vec<u64>,
}

impl Progress {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            completed: self.completed.lock().expect("lock").clone(),
            acked: self.acked.load(Ordering::SeqCst),
            sent: self.sent.load(Ordering::SeqCst),
            boundaries: self.boundaries.lock().expect("lock").clone(),
        }
    }

    fn finished(&self) -> bool {
        self.writer_done.load(Ordering::SeqCst) && self.importer_done.load(Ordering::SeqCst)
    }
}

/// Sets a flag when dropped, so the checkers stop even when the writer or the importer
/// fails or panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the writer did.
#[derive(Debug, Default)]
struct WriterLog {
    requests: u64,
    retried: u64,
}

/// Streams the events of hours 0.. in order through `bases` (alternating), each body
/// retried until acknowledged, publishing its progress.
async fn writer(
    progress: Arc<Progress>,
    client: Client,
    bases: Vec<String>,
) -> Result<WriterLog, String> {
    let _done = SetOnDrop(&progress.writer_done);
    let mut log = WriterLog::default();
    let mut seq = 0u64;
    for h in 0..HOURS {
        let (label, start) = (hour_label(h), hour_start(progress.h0, h));
        let events = events_in_hour(h) as u64;
        let mut acked_in_hour = 0i64;
        for first in (0..events).step_by(BODY_EVENTS) {
            let body: Vec<Value> = (first..events.min(first + BODY_EVENTS as u64))
                .map(|i| {
                    seq += 1;
                    incr(PAGE, &label, start + i * 13 % HOUR, "w", seq)
                })
                .collect();
            let n = body.len() as i64;
            let base = &bases[log.requests as usize % bases.len()];
            progress.sent.fetch_add(n, Ordering::SeqCst);
            let (reply, attempts) = post_until_acked(&client, base, &json!(body)).await?;
            let counted =
                reply["applied"].as_i64().unwrap_or(-1) + reply["duplicate"].as_i64().unwrap_or(-1);
            let clean = reply["late"] == 0
                && reply["stale"] == 0
                && counted == n
                && (attempts > 1 || reply["duplicate"] == 0);
            if !clean {
                return Err(format!(
                    "hour {h}: {n} updates through {base} (attempt {attempts}) answered {reply}"
                ));
            }
            log.requests += 1;
            log.retried += u64::from(attempts > 1);
            acked_in_hour += n;
            progress.acked.fetch_add(n, Ordering::SeqCst);
            tokio::time::sleep(WRITER_PACE).await;
        }
        progress.completed.lock().expect("lock").push(acked_in_hour);
    }
    Ok(log)
}

/// Waits until hour `h` is fully acknowledged; false if the writer stopped before.
async fn hour_completed(progress: &Progress, h: usize) -> bool {
    loop {
        if progress.completed.lock().expect("lock").len() > h {
            return true;
        }
        if progress.writer_done.load(Ordering::SeqCst) {
            return progress.completed.lock().expect("lock").len() > h;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When each hour of [`IMPORT_AT`] is fully acknowledged, imports the batch view covering
/// every hour before it (the writer's exact counts), through nodes 1, 2, 3 in turn.
/// Returns the boundaries published and when the last one was.
async fn importer(
    progress: Arc<Progress>,
    client: Client,
    bases: Vec<String>,
) -> Result<(Vec<u64>, Instant), String> {
    let _done = SetOnDrop(&progress.importer_done);
    let mut published = Vec::new();
    let mut last = Instant::now();
    for (n, h) in IMPORT_AT.into_iter().enumerate() {
        if !hour_completed(&progress, h).await {
            return Err(format!(
                "the writer stopped before hour {h} was acknowledged"
            ));
        }
        let counts = progress.completed.lock().expect("lock").clone();
        let labels: Vec<String> = (0..h).map(hour_label).collect();
        let body = batch_body((0..h).map(|k| (PAGE, labels[k].as_str(), counts[k])));
        let boundary = hour_start(progress.h0, h);
        progress.boundaries.lock().expect("lock").push(boundary);
        let base = &bases[n % bases.len()];
        let started = Instant::now();
        let (status, reply) =
            post_import(client.clone(), base.clone(), VIEW, boundary, body.into()).await?;
        let want = (StatusCode::OK, json!(true), json!(boundary), json!(h));
        if (
            status,
            reply["published"].clone(),
            reply["boundary"].clone(),
            reply["rows"].clone(),
        ) != want
        {
            return Err(format!(
                "import at hour {h} through {base}: {status} {reply}"
            ));
        }
        last = Instant::now();
        published.push(boundary);
        eprintln!(
            "import {}/{}: boundary h{h} ({h} rows) through n{} published in {:?} \
             (published_on {} of {}); {} events acknowledged so far",
            n + 1,
            IMPORT_AT.len(),
            n % bases.len() + 1,
            started.elapsed(),
            reply["published_on"],
            reply["nodes"],
            progress.acked.load(Ordering::SeqCst),
        );
    }
    Ok((published, last))
}

/// What one checker saw.
#[derive(Debug, Default)]
struct CheckerLog {
    name: String,
    /// Answers (range and get) per boundary named.
    per_boundary: BTreeMap<u64, u64>,
    violations: Vec<String>,
    errors: Vec<String>,
}

/// The simulated hour of a clustering key `h{k}`.
fn hour_of_label(label: &str) -> Option<usize> {
    label.strip_prefix('h')?.parse().ok().filter(|&k| k < HOURS)
}

/// Checks what a read named as hour `k`'s row (`None`: absent) at `boundary`, against the
/// writer's progress before the read started and after it ended. A row of an hour before
/// the boundary comes from the batch view only and equals the hour's exact count (the
/// importer imported it after the hour was complete); a later row comes from the realtime
/// epochs only, and equals the exact count once the hour was complete before the read
/// (`exact`; at `one` the replica read may lag behind, never lead).
fn check_row(
    h0: u64,
    k: usize,
    seen: Option<(i64, &str)>,
    boundary: u64,
    exact: bool,
    before: &Snapshot,
    after: &Snapshot,
) -> Option<String> {
    let what = format!("row h{k} at boundary {boundary}: {seen:?}");
    if hour_start(h0, k) < boundary {
        let Some(&count) = after.completed.get(k) else {
            return Some(format!(
                "{what}: before the boundary, but the hour is not complete"
            ));
        };
        return (seen != Some((count, "batch")))
            .then(|| format!("{what}, expected {count} from the batch view only"));
    }
    let Some(&count) = before.completed.get(k) else {
        // The hour being written: only its source is known.
        return match seen {
            None | Some((_, "realtime")) => None,
            Some(_) => Some(format!(
                "{what}: an hour being written, not from realtime only"
            )),
        };
    };
    match seen {
        Some((value, "realtime")) if value == count || (!exact && value < count) => None,
        None if !exact => None,
        _ => Some(format!(
            "{what}, expected {count} from the realtime epochs only"
        )),
    }
}

/// Checks a boundary a read named: 0 or one imports were started at, and never older
/// than one this checker already saw through the same coordinator.
fn check_boundary(boundary: u64, last: u64, after: &Snapshot) -> Option<String> {
    if boundary != 0 && !after.boundaries.contains(&boundary) {
        return Some(format!(
            "boundary {boundary} is none of the imported ones {:?}",
            after.boundaries
        ));
    }
    (boundary < last).then(|| format!("boundary {boundary} after {last} through the same node"))
}

/// Reads the range of [`PAGE`] and one complete row at a time through `base` at
/// `consistency` until the writer and the importer are done, checking every answer.
async fn checker(
    progress: Arc<Progress>,
    client: Client,
    base: String,
    name: String,
    consistency: &'static str,
) -> CheckerLog {
    let mut log = CheckerLog {
        name,
        ..CheckerLog::default()
    };
    let exact = consistency != "one";
    let h0 = progress.h0;
    let mut last = 0;
    let mut round = 0usize;
    while !progress.finished() {
        round += 1;
        let before = progress.snapshot();
        let answer = get_range(&client, &base, PAGE, consistency).await;
        let after = progress.snapshot();
        match answer {
            Ok(seen) => {
                let b = seen.boundary;
                *log.per_boundary.entry(b).or_default() += 1;
                log.violations.extend(check_boundary(b, last, &after));
                last = last.max(b);
                for label in seen.rows.keys().filter(|l| hour_of_label(l).is_none()) {
                    log.violations.push(format!("range: unknown row {label}"));
                }
                for k in 0..HOURS {
                    let row = seen.rows.get(&hour_label(k)).map(|(v, s)| (*v, s.as_str()));
                    log.violations
                        .extend(check_row(h0, k, row, b, exact, &before, &after));
                }
                if (exact && seen.total < before.acked) || seen.total > after.sent || seen.truncated
                {
                    log.violations.push(format!(
                        "range at boundary {b}: total {} (truncated {}) outside [{}, {}] \
                         (acknowledged before the read, sent after it)",
                        seen.total, seen.truncated, before.acked, after.sent
                    ));
                }
            }
            Err(e) => log.errors.push(e),
        }
        if before.completed.is_empty() {
            continue;
        }
        let k = round % before.completed.len();
        let answer = get_row(&client, &base, PAGE, &hour_label(k), consistency).await;
        let after = progress.snapshot();
        match answer {
            Ok(seen) => {
                let b = seen.boundary;
                *log.per_boundary.entry(b).or_default() += 1;
                log.violations.extend(check_boundary(b, last, &after));
                last = last.max(b);
                let row = (seen.source != "none").then_some((seen.value, seen.source));
                log.violations.extend(
                    check_row(h0, k, row, b, exact, &before, &after).map(|v| format!("get {v}")),
                );
            }
            Err(e) => log.errors.push(e),
        }
    }
    log
}

/// The per-boundary counts as `h{k}: n` (boundary 0: `none`).
fn describe_boundaries(h0: u64, per_boundary: &BTreeMap<u64, u64>) -> String {
    per_boundary
        .iter()
        .map(|(b, n)| match b {
            0 => format!("none: {n}"),
            b => format!("h{}: {n}", (b - h0) / HOUR),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until every node holds no realtime epoch before `boundary` but still the epochs
/// from it on (`expected`), retires no older boundary, and counts at least `covered`
/// epochs retired (the counter moves only once a drop is durable, a moment after the
/// epoch left the list). Panics `within` after `since` (the last import); returns how
/// long after it everything was dropped.
async fn await_retired(
    cluster: &Cluster,
    boundary: u64,
    expected: &[u64],
    covered: u64,
    since: Instant,
    within: Duration,
) -> Duration {
    loop {
        let mut pending = Vec::new();
        for i in 0..cluster.nodes.len() {
            let base = cluster.base(i);
            match epoch_starts(&cluster.client, &base).await {
                Ok(starts) if starts == expected => {}
                other => pending.push(format!("n{} epochs {other:?}", i + 1)),
            }
            let status = batch_status(&cluster.client, &base).await;
            if status["boundary"] != boundary || status["retiring"] != json!([]) {
                pending.push(format!("n{} batch {status}", i + 1));
            }
            match cluster.metric(i, EPOCHS_RETIRED_METRIC).await {
                Ok(retired) if retired >= covered as f64 => {}
                other => pending.push(format!("n{} {EPOCHS_RETIRED_METRIC} {other:?}", i + 1)),
            }
        }
        if pending.is_empty() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "{within:?} after the last import, not every node dropped what boundary {boundary} \
             retires (expected epochs starting {expected:?}, at least {covered} retired):\n{}",
            pending.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 3 nodes, replicas 3. A writer streams 7 simulated hours of events in order; an
/// importer publishes a batch view at the end of hours 2, 3, 4 and 5 through each node in
/// turn; checkers read through every node (quorum) and at `all` and `one`. Every answer
/// names one imported boundary (or none), holds every complete hour exactly once, from
/// the batch view before the boundary and from the realtime epochs after it, and a total
/// between what was acknowledged before the read and sent after it. Afterwards every row
/// is exact on every node, and the realtime epochs the last boundary covers are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_name_one_boundary_and_count_every_event_once_while_imports_switch() {
    let test_started = Instant::now();
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3).args(NODE_ARGS)).await;
    cluster.declare_spec(VIEW, &counter_spec()).await;
    let h0 = past_hour_start();
    let progress = Arc::new(Progress {
        h0,
        completed: Mutex::new(Vec::new()),
        acked: AtomicI64::new(0),
        sent: AtomicI64::new(0),
        boundaries: Mutex::new(Vec::new()),
        writer_done: AtomicBool::new(false),
        importer_done: AtomicBool::new(false),
    });
    let client = http_client(Duration::from_secs(20));
    let bases = cluster.bases();

    let started = Instant::now();
    let checkers: Vec<_> = [
        (0, "quorum"),
        (1, "quorum"),
        (2, "quorum"),
        (1, "all"),
        (2, "one"),
    ]
    .into_iter()
    .map(|(i, consistency)| {
        let name = format!("n{} {consistency}", i + 1);
        tokio::spawn(checker(
            progress.clone(),
            client.clone(),
            bases[i].clone(),
            name,
            consistency,
        ))
    })
    .collect();
    let writing = tokio::spawn(writer(
        progress.clone(),
        client.clone(),
        bases[..2].to_vec(),
    ));
    let importing = tokio::spawn(importer(progress.clone(), client.clone(), bases.clone()));

    let wrote = writing.await.expect("writer task");
    let imported = importing.await.expect("importer task");
    let logs: Vec<CheckerLog> = futures_util::future::join_all(checkers)
        .await
        .into_iter()
        .map(|log| log.expect("checker task"))
        .collect();
    let wrote = wrote.unwrap_or_else(|e| panic!("writer: {e}"));
    let (published, last_import) = imported.unwrap_or_else(|e| panic!("importer: {e}"));
    let final_boundary = *published.last().expect("an import");
    let counts = progress.completed.lock().expect("lock").clone();
    let total: i64 = counts.iter().sum();
    eprintln!(
        "writer: {total} events in {} requests ({} retried) over {HOURS} hours, {} imports, \
         in {:?}",
        wrote.requests,
        wrote.retried,
        published.len(),
        started.elapsed()
    );

    let mut per_boundary: BTreeMap<u64, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut errors = Vec::new();
    for log in &logs {
        eprintln!(
            "checker {}: {} answers ({}); {} violations, {} errors",
            log.name,
            log.per_boundary.values().sum::<u64>(),
            describe_boundaries(h0, &log.per_boundary),
            log.violations.len(),
            log.errors.len()
        );
        for (b, n) in &log.per_boundary {
            *per_boundary.entry(*b).or_default() += n;
        }
        violations.extend(log.violations.iter().map(|v| format!("{}: {v}", log.name)));
        errors.extend(log.errors.iter().map(|e| format!("{}: {e}", log.name)));
    }
    eprintln!(
        "all checkers: {} answers checked ({})",
        per_boundary.values().sum::<u64>(),
        describe_boundaries(h0, &per_boundary)
    );
    assert!(
        violations.is_empty(),
        "{} answers broke the hand-over invariant (first 40):\n{}",
        violations.len(),
        violations[..violations.len().min(40)].join("\n")
    );
    assert!(
        errors.is_empty(),
        "{} reads failed while every node was up (first 20):\n{}",
        errors.len(),
        errors[..errors.len().min(20)].join("\n")
    );
    let switched = per_boundary.keys().filter(|&&b| b != 0).count();
    assert!(
        switched >= 3,
        "answers named only {switched} nonzero boundaries ({}): the reads did not span the \
         switches",
        describe_boundaries(h0, &per_boundary)
    );

    // Every node, at `all`: every row exact, from the part the final boundary says.
    let rows: Vec<Row> = counts
        .iter()
        .enumerate()
        .map(|(h, &value)| Row {
            key: PAGE.to_string(),
            clustering: hour_label(h),
            value,
            hour: hour_start(h0, h),
        })
        .collect();
    assert_eq!(counts.len(), HOURS, "hours acknowledged");
    assert_eq!(
        total,
        progress.sent.load(Ordering::SeqCst),
        "events sent and acknowledged"
    );
    assert_rows(&cluster, &[0, 1, 2], "all", &rows, final_boundary).await;

    // The realtime epochs before the final boundary are dropped once its grace is over;
    // the later ones stay.
    let live: Vec<u64> = (0..HOURS)
        .map(|h| hour_start(h0, h))
        .filter(|&s| s >= final_boundary)
        .collect();
    let covered = (final_boundary - h0) / HOUR;
    let dropped_after = await_retired(
        &cluster,
        final_boundary,
        &live,
        covered,
        last_import,
        GRACE + RETIRE_SLACK,
    )
    .await;
    eprintln!(
        "realtime epochs before h{covered} dropped on every node {dropped_after:?} after the \
         last import (grace {GRACE:?}); test took {:?}",
        test_started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Test 2: an import interrupted by a SIGKILL.
// ---------------------------------------------------------------------------------------

/// Keys `/a` and `/b` over hours 0..4 of `h0`, each row a different count.
fn small_rows(h0: u64) -> Vec<Row> {
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

/// `n` batch rows of keys nobody reads, to make an import large.
fn filler(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"key\":\"/fill-{i}\",\"value\":1}}\n"))
        .collect()
}

/// Waits until node `i` has staged at least `rows` batch rows in all; panics after
/// `within`.
async fn await_staged(cluster: &Cluster, i: usize, rows: f64, within: Duration) {
    let started = Instant::now();
    loop {
        let staged = cluster.metric(i, ROWS_STAGED_METRIC).await.unwrap_or(0.0);
        if staged >= rows {
            return;
        }
        assert!(
            started.elapsed() < within,
            "n{} staged {staged} batch rows after {within:?}, expected {rows}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until nodes `nodes` hold no staged import of the view (an aborted import's rows
/// are dropped).
async fn await_no_staged(cluster: &Cluster, nodes: &[usize], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for &i in nodes {
            let status = batch_status(&cluster.client, &cluster.base(i)).await;
            if status["staged"] != json!([]) {
                left.push(format!("n{}: {status}", i + 1));
            }
        }
        if left.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} an aborted import is still staged:\n{}",
            left.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 3 nodes; a first import publishes T1. A second, large import at T2 is held open
/// mid-body (its rows staged on every node) while node 3 is SIGKILLed: it fails with a
/// 5xx, and the live nodes still answer the exact rows at T1, also after the retire
/// ticks. Imports while node 3 is down are refused with 503 and change nothing either.
/// After node 3 restarts, the import at T2 succeeds, and every node answers at T2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_interrupted_by_a_killed_node_changes_nothing() {
    let test_started = Instant::now();
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3).args(NODE_ARGS)).await;
    cluster.declare_spec(VIEW, &counter_spec()).await;
    let h0 = past_hour_start();
    let (t1, t2) = (hour_start(h0, 2), hour_start(h0, 3));
    let rows = small_rows(h0);
    write_rows(&cluster.client, &cluster.base(0), &rows, "w").await;
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, 0).await;
    import_ok(&cluster.client, &cluster.base(0), t1, batch_of(&rows, t1)).await;
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, t1).await;

    // The import at T2: its real rows, then filler, exactly whole server chunks, so the
    // server has staged everything sent while it waits for more.
    let victim = 2;
    let held_rows = 6 * SERVER_CHUNK_ROWS;
    let head = batch_of(&rows, t2);
    let head_rows = head.lines().count();
    let staged_before = cluster
        .metric(victim, ROWS_STAGED_METRIC)
        .await
        .expect("metric");
    let (tx, body) = channel_body();
    let slow_client = http_client(Duration::from_secs(40));
    let import = tokio::spawn(post_import(slow_client, cluster.base(0), VIEW, t2, body));
    tx.send(Bytes::from(head)).await.expect("body");
    for from in (head_rows..held_rows).step_by(4096) {
        let piece = filler(from, 4096.min(held_rows - from));
        tx.send(Bytes::from(piece)).await.expect("body");
    }
    let sent_at = Instant::now();
    await_staged(
        &cluster,
        victim,
        staged_before + held_rows as f64,
        Duration::from_secs(25),
    )
    .await;
    let status = batch_status(&cluster.client, &cluster.base(victim)).await;
    assert!(
        status["staged"][0]["boundary"] == t2 && status["staged"][0]["finished"] == false,
        "n3 should be staging T2: {status}"
    );
    assert!(
        !import.is_finished(),
        "the import answered before its body ended"
    );
    eprintln!(
        "{held_rows} rows of the import at T2 staged on n3 {:?} after they were sent; \
         SIGKILL n3",
        sent_at.elapsed()
    );
    cluster.kill(victim);
    tx.send(Bytes::from(filler(held_rows, 100)))
        .await
        .expect("body");
    drop(tx);
    let (status, reply) = tokio::time::timeout(Duration::from_secs(30), import)
        .await
        .expect("the interrupted import answers within 30 s")
        .expect("import task")
        .expect("an HTTP answer to the interrupted import");
    assert!(
        status.is_server_error(),
        "an import that lost a node mid-body answered {status} {reply}"
    );
    eprintln!("the interrupted import answered {status} {reply}");
    assert_rows(&cluster, &[0, 1], "quorum", &rows, t1).await;
    let aborted = await_no_staged(&cluster, &[0, 1], Duration::from_secs(10)).await;
    eprintln!("live nodes still answer at T1; the aborted import left them {aborted:?} later");

    // While node 3 is down, an import is refused at once and changes nothing.
    cluster
        .wait_for_states(&[0, 1], &[victim], "down", Duration::from_secs(10))
        .await;
    for i in [0, 1] {
        let (status, reply) = post_import(
            cluster.client.clone(),
            cluster.base(i),
            VIEW,
            t2,
            batch_of(&rows, t2).into(),
        )
        .await
        .expect("an answer");
        assert_eq!(
            (status, &reply["error"]),
            (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable")),
            "an import through n{} while n3 is down: {reply}",
            i + 1
        );
    }
    // Past the grace and a few retire ticks, the live nodes still answer at T1.
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    assert_rows(&cluster, &[0, 1], "quorum", &rows, t1).await;
    for i in [0, 1] {
        let status = batch_status(&cluster.client, &cluster.base(i)).await;
        assert_eq!(status["boundary"], t1, "n{}: {status}", i + 1);
    }
    eprintln!("imports while n3 was down were refused with 503; every answer still at T1");

    // Node 3 back: the same import succeeds, and every node answers at T2.
    cluster.restart(victim);
    let up = cluster.wait_all_up(RESTART).await;
    let status = batch_status(&cluster.client, &cluster.base(victim)).await;
    assert_eq!(status["boundary"], t1, "n3 after its restart: {status}");
    let mut full = batch_of(&rows, t2);
    full.push_str(&filler(head_rows, held_rows - head_rows));
    let reply = import_ok(&cluster.client, &cluster.base(0), t2, full).await;
    assert_eq!(reply["nodes"], 3, "{reply}");
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, t2).await;
    // The rows n3 had staged when it was killed are gone with the publication.
    await_no_staged(&cluster, &[0, 1, 2], Duration::from_secs(5)).await;
    let converged = await_rows(
        &mut cluster,
        &[0, 1, 2],
        "local",
        &rows,
        t2,
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "n3 up {up:?} after its restart; the retried import published T2; every node's own \
         copy exact at T2 {converged:?} later; test took {:?}",
        test_started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Test 3: batch-export and import, the real binary, end to end.
// ---------------------------------------------------------------------------------------

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
