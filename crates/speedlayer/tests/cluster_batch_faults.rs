//! The batch hand-over in a real cluster when a node dies: `speedlayer serve` children
//! (`support::cluster`), one of them SIGKILLed in the middle of an import.
//!
//! An import that loses a node mid-body, or is sent while a node is down, must fail and
//! change nothing: every answer stays at the boundary published before, with the exact
//! rows, until the import is retried with every node up. Nodes run with
//! `--batch-grace 2`, so the retire ticks after the failed import really run past the
//! grace.
//!
//! The invariant itself (one named boundary, every event counted once) is tested in
//! `cluster_batch.rs`; the helpers are in `support::batch`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::json;

mod support;

use support::batch::{
    assert_rows, await_rows, batch_of, batch_status, channel_body, counter_spec, hour_label,
    hour_start, import_ok, past_hour_start, post_import, write_rows, Row, GRACE, NODE_ARGS, VIEW,
};
use support::cluster::{http_client, Cluster, ClusterOptions};

/// How long a restarted node may take until every node sees every node up.
const RESTART: Duration = Duration::from_secs(20);
/// Rows staged on the owners per round trip by the server (`CHUNK_ROWS`).
const SERVER_CHUNK_ROWS: usize = 8192;
/// Counter of batch rows staged on a node.
const ROWS_STAGED_METRIC: &str = "speedlayer_store_batch_rows_staged_total";

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
