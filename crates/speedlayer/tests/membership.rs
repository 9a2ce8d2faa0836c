//! Membership by gossip between real processes: nodes that only know one seed form one
//! cluster; the cluster grows and shrinks while clients write, losing nothing; a dead
//! node is removed and its partitions rebuilt; a process without the secret cannot join.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{epoch_safe_ts, read_counter, Cluster, ClusterOptions};

/// Every node's view: (sorted (addr, state) of its members, ring version).
async fn views(
    cluster: &Cluster,
    nodes: &[usize],
) -> Vec<Result<(Vec<(String, String)>, String), String>> {
    let mut out = Vec::new();
    for &i in nodes {
        out.push(cluster.cluster_info(i).await.map(|info| {
            let mut members: Vec<(String, String)> = info["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (
                        n["addr"].as_str().unwrap().to_owned(),
                        n["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            members.sort();
            (
                members,
                info["ring_version"].as_str().unwrap_or("").to_owned(),
            )
        }));
    }
    out
}

/// Waits until every node of `nodes` lists exactly `expected` (addr → state) and they
/// all report the same ring; how long it took.
async fn wait_agree(
    cluster: &Cluster,
    nodes: &[usize],
    expected: &BTreeMap<String, &str>,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(a, s)| (a.clone(), s.to_string()))
        .collect();
    loop {
        let seen = views(cluster, nodes).await;
        let agree = seen
            .iter()
            .all(|v| v.as_ref().is_ok_and(|(m, _)| *m == want))
            && seen
                .iter()
                .filter_map(|v| v.as_ref().ok().map(|(_, r)| r.clone()))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1;
        if agree {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} the nodes {nodes:?} do not agree on {want:?}: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_know_one_seed_form_one_cluster_and_share_declarations() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(1)).await;
    let a = cluster.addr(0);
    let started = Instant::now();
    let b = cluster.spawn_joiner(vec![a.clone()]);
    let c = cluster.spawn_joiner(vec![a.clone()]);
    let expected: BTreeMap<String, &str> =
        [0, b, c].iter().map(|&i| (cluster.addr(i), "up")).collect();
    wait_agree(&cluster, &[0, b, c], &expected, Duration::from_secs(10)).await;
    let took = started.elapsed();
    eprintln!("three nodes agreed on one cluster {took:?} after the joiners started");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A view declared on C is known to A and B.
    let url = format!("{}/v1/views/joined", cluster.base(c));
    let response = cluster
        .client
        .put(&url)
        .json(&json!({"type": "counter"}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    for i in [0, b] {
        let url = format!("{}/v1/views/joined", cluster.base(i));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = cluster.client.get(&url).send().await.unwrap().status();
            if status.is_success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} does not know the view: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
