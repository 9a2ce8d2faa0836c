//! The batch hand-over in a real cluster when a node dies: `speedlayer serve` children
//! (`support::cluster`), one of them SIGKILLed in the middle of an import.
//!
//! An import that loses a participating node mid-body must fail and change nothing:
//! every answer stays at the boundary published before, with the exact rows. An import
//! sent while a node is down publishes on the owners that are up when every partition
//! has a quorum of them (and is refused, changing nothing, when one has not); the node
//! that missed it copies it when it is back. Nodes run with `--batch-grace 2`, so the
//! retire ticks after the failed import really run past the grace.
//!
//! The invariant itself (one named boundary, every event counted once) is tested in
//! `cluster_batch.rs`; the helpers are in `support::batch`.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::json;

mod support;

use support::batch::{
    assert_rows, await_rows, batch_of, batch_status, channel_body, counter_spec, hour_start,
    import_ok, past_hour_start, post_import, small_rows, write_rows, GRACE, NODE_ARGS, VIEW,
};
use support::cluster::{http_client, Cluster, ClusterOptions};

/// How long a restarted node may take until every node sees every node up.
const RESTART: Duration = Duration::from_secs(20);
/// Rows staged on the owners per round trip by the server (`CHUNK_ROWS`).
const SERVER_CHUNK_ROWS: usize = 8192;
/// Counter of batch rows staged on a node.
const ROWS_STAGED_METRIC: &str = "speedlayer_store_batch_rows_staged_total";

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
/// ticks. With node 3 down the import at T2 publishes on the quorum that is up; with
/// node 2 down too it is refused (503) and changes nothing. Restarted, node 3 copies the
/// import it missed and answers at T2 from its own copy; the next import reaches all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_interrupted_by_a_killed_node_changes_nothing() {
    let test_started = Instant::now();
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3).args(NODE_ARGS)).await;
    cluster.declare_spec(VIEW, &counter_spec()).await;
    let h0 = past_hour_start();
    let (t1, t2, t3) = (hour_start(h0, 1), hour_start(h0, 2), hour_start(h0, 3));
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
    // Past the grace and a few retire ticks, the live nodes still answer at T1.
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    assert_rows(&cluster, &[0, 1], "quorum", &rows, t1).await;

    // While node 3 is down, every partition still has a quorum of its owners up: the
    // import stages and publishes on them, and names n3 as catching up.
    cluster
        .wait_for_states(&[0, 1], &[victim], "down", Duration::from_secs(10))
        .await;
    let mut full = batch_of(&rows, t2);
    full.push_str(&filler(head_rows, held_rows - head_rows));
    let reply = import_ok(&cluster.client, &cluster.base(0), t2, full).await;
    assert_eq!(
        (&reply["published_on"], &reply["catching_up"]),
        (&json!(2), &json!([cluster.addr(victim)])),
        "{reply}"
    );
    assert_rows(&cluster, &[0, 1], "quorum", &rows, t2).await;
    eprintln!("with n3 down, the import at T2 published on n1 and n2: {reply}");

    // With n2 down too, no partition has a quorum of owners up: refused, nothing changes.
    let second = 1;
    cluster.kill(second);
    cluster
        .wait_for_states(&[0], &[second], "down", Duration::from_secs(10))
        .await;
    let (status, reply) = post_import(
        cluster.client.clone(),
        cluster.base(0),
        VIEW,
        t3,
        batch_of(&rows, t3).into(),
    )
    .await
    .expect("an answer");
    assert_eq!(
        (status, &reply["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable")),
        "an import through n1 with n2 and n3 down: {reply}"
    );
    let status = batch_status(&cluster.client, &cluster.base(0)).await;
    assert_eq!(status["boundary"], t2, "n1: {status}");
    assert!(
        status["staged"].as_array().is_some_and(Vec::is_empty),
        "n1: {status}"
    );

    // Both back: n2 held T2 already; n3 copies the rows of its partitions from the others
    // (the held import's 49k rows: several pages) and publishes T2 itself.
    cluster.restart(second);
    cluster.restart(victim);
    let up = cluster.wait_all_up(RESTART).await;
    let caught_up = await_rows(
        &mut cluster,
        &[0, 1, 2],
        "local",
        &rows,
        t2,
        Duration::from_secs(20),
    )
    .await;
    let status = batch_status(&cluster.client, &cluster.base(victim)).await;
    assert_eq!(status["boundary"], t2, "n3 after catching up: {status}");
    eprintln!(
        "n2 and n3 up {up:?} after their restart; n3's own copy exact at T2 {caught_up:?} later"
    );

    // And the next import, with everyone up, reaches everyone.
    let reply = import_ok(&cluster.client, &cluster.base(2), t3, batch_of(&rows, t3)).await;
    assert_eq!(
        (&reply["published_on"], &reply["catching_up"]),
        (&json!(3), &json!([])),
        "{reply}"
    );
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, t3).await;
    await_no_staged(&cluster, &[0, 1, 2], Duration::from_secs(5)).await;
    eprintln!("test took {:?}", test_started.elapsed());
}
