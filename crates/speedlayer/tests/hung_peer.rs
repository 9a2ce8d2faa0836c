//! A hung peer (SIGSTOP: its socket still accepts bytes, nothing answers) costs a quorum
//! write nothing once W other owners answered: the coordinator answers at W and lets the
//! hung replica's write finish in the background, where its timeout becomes a hint that
//! is delivered once the peer resumes (SIGCONT). Before, every write waited for every
//! live owner: up to the 2 s RPC timeout each, until the failure detector gave up on the
//! peer.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;

mod support;

use support::cluster::{read_counter, Cluster, ClusterOptions};
use support::signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_peer_adds_nothing_to_quorum_writes_and_catches_up_by_hints() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("hits", "counter").await;
    let incr = json!({"key": "k", "op": "incr"});
    let quorum = [("consistency", "quorum")];
    for _ in 0..5 {
        cluster.update_ok(0, "hits", &incr, &quorum).await;
    }

    let pid = cluster.nodes[2].pid().unwrap();
    signal("-STOP", pid);
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        cluster.update_ok(0, "hits", &incr, &quorum).await;
        latencies.push(started.elapsed());
    }
    signal("-CONT", pid);
    latencies.sort();
    let slowest = latencies[latencies.len() - 1];
    eprintln!(
        "quorum writes with a peer stopped: median {:?}, slowest {slowest:?}",
        latencies[latencies.len() / 2]
    );
    assert!(
        slowest < Duration::from_millis(300),
        "a write waited for the stopped peer: slowest {slowest:?}"
    );

    // The stopped peer gets every write once it runs again.
    let n3 = cluster.base(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let local = read_counter(&cluster.client, &n3, "hits", "k", "local").await;
        if local == Ok(45) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed peer holds {local:?} of 45 after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
