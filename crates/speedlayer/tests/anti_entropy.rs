//! Anti-entropy between real processes: a replica that missed writes converges with no
//! hint and no read; a node whose data directory was wiped gets every key of its
//! partitions back, and counts anonymous increments in a fresh slot meanwhile; an epoch
//! dropped cluster-wide stays dropped through every round.
//!
//! Convergence is judged only by `local` reads (each replica's own copy, no read repair),
//! and hinted handoff is off where hints could do the work instead.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{epoch_safe_ts, get_json, read_counter, Cluster, ClusterOptions, QUORUM};

const KEYS: u64 = 60;
const WRITES: u64 = 300;

/// `WRITES` increments with ids of `writer` over `KEYS` keys through node `via`; the
/// totals.
async fn write_counters(cluster: &Cluster, via: usize, ts: i64, writer: &str) -> Vec<i64> {
    let mut totals = vec![0i64; KEYS as usize];
    for i in 0..WRITES {
        let k = i % KEYS;
        let by = (i % 7 + 1) as i64;
        let body = json!({"key": format!("k{k}"), "op": "incr", "by": by, "ts": ts,
                          "id": {"writer": writer, "seq": i}});
        cluster.update_ok(via, "hits", &body, QUORUM).await;
        totals[k as usize] += by;
    }
    totals
}

/// Waits until node `i`'s own copy of every key holds `totals`; how long it took.
async fn wait_local(cluster: &Cluster, i: usize, totals: &[i64], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut wrong = Vec::new();
        for (k, want) in totals.iter().enumerate() {
            let key = format!("k{k}");
            let got = read_counter(&cluster.client, &cluster.base(i), "hits", &key, "local").await;
            if got.as_ref().ok() != Some(want) {
                wrong.push(format!("{key}: {got:?} (want {want})"));
            }
        }
        if wrong.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "node {i} still differs after {within:?} on {} key(s), e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_writes_converges_through_anti_entropy_alone() {
    let options = ClusterOptions::new(3).args(&[
        "--hinted-handoff",
        "off",
        "--anti-entropy-interval-secs",
        "1",
    ]);
    let mut cluster = Cluster::start_ready(options).await;
    cluster.declare("hits", "counter").await;
    cluster.kill(2);
    let totals = write_counters(&cluster, 0, epoch_safe_ts(), "w").await;
    cluster.restart(2);
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let took = wait_local(&cluster, 2, &totals, Duration::from_secs(30)).await;
    let pulled = cluster
        .metric(2, "speedlayer_anti_entropy_keys_pulled_total")
        .await
        .unwrap_or(0.0);
    let pushed = cluster
        .metric(0, "speedlayer_anti_entropy_keys_pushed_total")
        .await
        .unwrap_or(0.0)
        + cluster
            .metric(1, "speedlayer_anti_entropy_keys_pushed_total")
            .await
            .unwrap_or(0.0);
    let mut wire = 0.0;
    for i in 0..3 {
        wire += cluster
            .metric(i, "speedlayer_anti_entropy_wire_bytes_total")
            .await
            .unwrap_or(0.0);
    }
    eprintln!(
        "the restarted replica converged {took:?} after every node was up ({pulled} pulled, {pushed} pushed by its peers; {wire} bytes of anti-entropy messages, {:.0} per differing key)",
        wire / KEYS as f64
    );
    assert!(
        pulled + pushed >= KEYS as f64,
        "anti-entropy moved {pulled} + {pushed} states"
    );
    let held = cluster.hints_by_target(0).await.unwrap();
    assert_eq!(
        held.get(&cluster.addr(2)).copied(),
        Some(KEYS),
        "node 0 still holds its hints for node 2 (handoff is off): hints did not do it; {held:?}"
    );
    for i in 0..2 {
        wait_local(&cluster, i, &totals, Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_directory_was_wiped_gets_its_partitions_back() {
    let options = ClusterOptions::new(3).args(&["--anti-entropy-interval-secs", "1"]);
    let mut cluster = Cluster::start_ready(options).await;
    cluster.declare("hits", "counter").await;
    let totals = write_counters(&cluster, 1, epoch_safe_ts(), "w").await;
    wait_local(&cluster, 2, &totals, Duration::from_secs(10)).await;
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.nodes[2].config().data_dir).unwrap();
    let restarted = Instant::now();
    cluster.restart(2);
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let took = wait_local(&cluster, 2, &totals, Duration::from_secs(30)).await;
    eprintln!(
        "the wiped node had every key back {:?} after its restart",
        restarted.elapsed()
    );
    assert!(took < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_counts_anonymous_increments_in_a_fresh_slot() {
    // Anti-entropy off: the wiped node takes writes before it has its old states back.
    let options = ClusterOptions::new(3).args(&["--anti-entropy-interval-secs", "0"]);
    let mut cluster = Cluster::start_ready(options).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    let anonymous = json!({"key": "anon", "op": "incr", "by": 5, "ts": ts});
    cluster.update_ok(2, "hits", &anonymous, QUORUM).await;
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.nodes[2].config().data_dir).unwrap();
    cluster.restart(2);
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let one = json!({"key": "anon", "op": "incr", "by": 1, "ts": ts});
    cluster
        .update_ok(2, "hits", &one, &[("consistency", "all")])
        .await;
    for i in 0..2 {
        let total = read_counter(&cluster.client, &cluster.base(i), "hits", "anon", "local")
            .await
            .unwrap();
        assert_eq!(total, 6, "node {i}: the increment after the wipe counts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_never_brings_back_an_epoch_dropped_cluster_wide() {
    let options = ClusterOptions::new(3).args(&["--anti-entropy-interval-secs", "1"]);
    let mut cluster = Cluster::start_ready(options).await;
    cluster.declare("hits", "counter").await;
    let now = epoch_safe_ts();
    let old = now - 3 * 3600;
    write_counters(&cluster, 0, old, "old").await;
    let current = write_counters(&cluster, 0, now, "now").await;
    let old_epoch = old / 3600;
    cluster.kill(2);
    let url = format!("{}/v1/views/hits/epochs/{old_epoch}", cluster.base(0));
    let response = cluster.client.delete(&url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    cluster.restart(2);
    cluster.wait_all_up(Duration::from_secs(20)).await;
    // Several rounds, in which the restarted node could have offered the old epoch.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..3 {
        let url = format!("{}/v1/views/hits/epochs", cluster.base(i));
        let epochs = get_json(&cluster.client, &url).await.unwrap();
        let listed: Vec<i64> = epochs["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["epoch"].as_i64())
            .collect();
        assert!(!listed.contains(&old_epoch), "node {i} lists {listed:?}");
        wait_local(&cluster, i, &current, Duration::from_secs(5)).await;
    }
    let rounds = cluster
        .metric(2, "speedlayer_anti_entropy_rounds_total")
        .await
        .unwrap_or(0.0);
    assert!(rounds >= 2.0, "{rounds} anti-entropy rounds ran");
}
