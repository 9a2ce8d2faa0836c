//! Membership tests in a cluster read only the members asked about (`MemberStates`): real
//! nodes and the real redis-cli show they still answer what the whole set says, through
//! any node, after a remove on another node, and when one owner missed an add (the
//! owners' restrictions are joined, and read repair carries the missed add to it).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::redis_cli::{require_redis_cli, run_cli};

/// The commands (one per line) on one connection through `port`, replies by line.
fn session(port: u16, commands: &str) -> String {
    let output = run_cli(port, &[], Some(commands.as_bytes()));
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_tests_agree_with_the_whole_set_through_every_node() {
    require_redis_cli();
    // No hints, no anti-entropy: an owner that missed a write only learns it by repair.
    let options = ClusterOptions::new(3).args(&[
        "--hinted-handoff",
        "off",
        "--anti-entropy-interval-secs",
        "0",
    ]);
    let mut cluster = Cluster::start_ready(options).await;
    let port = |cluster: &Cluster, i: usize| cluster.nodes[i].config().resp_port;

    assert_eq!(session(port(&cluster, 0), "SADD s a b c"), "3");
    assert_eq!(
        session(port(&cluster, 1), "CONSISTENCY all\nSREM s b"),
        "OK\n1"
    );
    for i in 0..3 {
        let p = port(&cluster, i);
        assert_eq!(session(p, "SISMEMBER s a"), "1", "node {i}");
        assert_eq!(session(p, "SISMEMBER s b"), "0", "node {i}");
        assert_eq!(session(p, "SISMEMBER s zz"), "0", "node {i}");
        assert_eq!(
            session(p, "SMISMEMBER s a b c zz"),
            "1\n0\n1\n0",
            "node {i}"
        );
        assert_eq!(session(p, "SISMEMBER nokey a"), "0", "node {i}");
        assert_eq!(session(p, "SCARD s"), "2", "node {i}");
    }
    assert_eq!(
        session(port(&cluster, 0), "SET str x\nSISMEMBER str x")
            .lines()
            .last(),
        Some("WRONGTYPE Operation against a key holding the wrong kind of value")
    );

    // Node 2 misses an add.
    cluster.kill(2);
    assert_eq!(session(port(&cluster, 0), "SADD s d"), "1");
    cluster.restart(2);
    cluster.wait_all_up(Duration::from_secs(30)).await;
    let p2 = port(&cluster, 2);
    assert_eq!(session(p2, "CONSISTENCY local\nSISMEMBER s d"), "OK\n0");
    // At `all`, the owners' restrictions joined: d is in. The read repairs node 2 (at
    // `all` before answering) with the restricted join: d, and nothing else changes.
    assert_eq!(session(p2, "CONSISTENCY all\nSISMEMBER s d"), "OK\n1");
    assert_eq!(session(p2, "CONSISTENCY local\nSISMEMBER s d"), "OK\n1");
    let mut members: Vec<String> = session(p2, "CONSISTENCY local\nSMEMBERS s")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    members.sort();
    assert_eq!(members, ["a", "c", "d"]);
}
