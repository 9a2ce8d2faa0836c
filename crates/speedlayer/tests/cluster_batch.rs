//! The batch hand-over in a real cluster: `speedlayer serve` children (`support::cluster`)
//! importing batch views while writers and readers keep going.
//!
//! The invariant under test (docs/batch.md, "How the switch works"):
//! every answer is `batch(T) ⊕ realtime epochs ≥ T` for the one boundary T it names, so
//! every event counts exactly once, whichever boundary a read picked while imports switch
//! it. Rows are keyed by the simulated hour their events fall in; a row of an hour before
//! T must come from the batch view only, a later one from the realtime epochs only.
//!
//! Nodes run with `--batch-grace 2`, so an old boundary (and the realtime epochs it still
//! needs) really is retired during the test.
//!
//! An import interrupted by a SIGKILLed node is tested in `cluster_batch_faults.rs`, the
//! `batch-export` / `import` commands in `cluster_batch_cli.rs`; what the three share is
//! in `support::batch`.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

mod support;

use support::batch::{
    assert_rows, batch_body, batch_status, counter_spec, epoch_starts, get_range, get_row,
    hour_label, hour_start, incr, past_hour_start, post_import, post_until_acked, Row, GRACE, HOUR,
    NODE_ARGS, VIEW,
};
use support::cluster::{http_client, Cluster, ClusterOptions};

/// How long after the grace a node may take to drop what it retired (ticks of 1 s, and
/// a loaded machine).
const RETIRE_SLACK: Duration = Duration::from_secs(4);
/// Counter of realtime epochs a node dropped because a batch view covers them.
const EPOCHS_RETIRED_METRIC: &str = "speedlayer_store_epochs_retired_total";

/// Simulated hours the writer streams.
const HOURS: usize = 7;
/// The hours whose completion triggers an import covering every hour before them.
const IMPORT_AT: [usize; 4] = [2, 3, 4, 5];
/// Events per writer request.
const BODY_EVENTS: usize = 20;
/// The writer's pause between requests, so the hours (and the boundaries imported at
/// their ends) last long enough for the checkers to read at each of them.
const WRITER_PACE: Duration = Duration::from_millis(40);
/// The partition key every event of the test increments.
const PAGE: &str = "/p";

/// Events in simulated hour `h`: a different count per hour, so a row taken from the
/// wrong hour, or counted twice, shows.
fn events_in_hour(h: usize) -> i64 {
    120 + 37 * h as i64
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
    /// The newest boundary an answer through this node named so far.
    last: u64,
}

impl CheckerLog {
    /// Counts an answer at `boundary` and checks it (see [`check_boundary`]).
    fn saw(&mut self, boundary: u64, after: &Snapshot) {
        *self.per_boundary.entry(boundary).or_default() += 1;
        self.violations
            .extend(check_boundary(boundary, self.last, after));
        self.last = self.last.max(boundary);
    }
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
    let mut round = 0usize;
    while !progress.finished() {
        round += 1;
        let before = progress.snapshot();
        let answer = get_range(&client, &base, PAGE, consistency).await;
        let after = progress.snapshot();
        match answer {
            Ok(seen) => {
                let b = seen.boundary;
                log.saw(b, &after);
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
                log.saw(b, &after);
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
