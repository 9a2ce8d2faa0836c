//! After a crash, a node hints every key it replayed from its update log to the key's
//! other owners, so a state it applied and logged but never shipped (it died, or its
//! journal failed, between applying and replicating) reaches the other replicas without
//! waiting for a quorum read. The fault suite found the gap: a node whose disk filled
//! came back with an increment its peers never got, and their `local` answers stayed
//! apart for a minute.
//!
//! The exact window (applied and synced, not yet shipped) cannot be hit on purpose from
//! outside, so this test checks the mechanism end to end: writes, SIGKILL before the
//! node checkpoints, restart; the node says it hinted the replayed keys, the hints are
//! delivered, and every replica's own copy agrees.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::{epoch_safe_ts, read_counter, Cluster, ClusterOptions, QUORUM};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_hints_what_it_replayed_to_the_other_owners() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    for i in 0..40u64 {
        let body = json!({"key": format!("k{}", i % 8), "op": "incr", "by": 1, "ts": ts,
                          "id": {"writer": "w", "seq": i}});
        cluster.update_ok(0, "hits", &body, QUORUM).await;
    }
    // Killed within the checkpoint interval (10 s): the writes are in its update log.
    let logged = cluster.nodes[0].log_len();
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let log = cluster.nodes[0].log_text();
    let after = log.get(logged..).unwrap_or_default();
    let line = after
        .lines()
        .find(|l| l.contains("hinted the keys replayed at recovery"))
        .unwrap_or_else(|| panic!("no replayed keys were hinted:\n{after}"));
    assert!(line.contains("keys=8"), "{line}");
    let drained = cluster.wait_hints_drained(Duration::from_secs(20)).await;
    eprintln!("{line}\nhints delivered {drained:?} after every node was up");
    for i in 0..3 {
        for k in 0..8 {
            let value = read_counter(
                &cluster.client,
                &cluster.base(i),
                "hits",
                &format!("k{k}"),
                "local",
            )
            .await
            .unwrap();
            assert_eq!(value, 5, "k{k} on n{}", i + 1);
        }
    }
}
