//! Membership tests in a cluster read only the members asked about (`MemberStates`): real
//! nodes and the real redis-cli show they still answer what the whole set says, through
//! any node, after a remove on another node, and when one owner missed an add (the
//! owners' restrictions are joined, and read repair carries the missed add to it).
//! `SCARD` answers from the owners' counts when their state digests agree, and joins the
//! members when owners with equal counts hold different sets.

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

/// Three nodes without hints or anti-entropy: an owner that missed a write stays
/// different until a read joins the owners and repairs it.
fn repaired_by_reads_only() -> ClusterOptions {
    ClusterOptions::new(3).args(&[
        "--hinted-handoff",
        "off",
        "--anti-entropy-interval-secs",
        "0",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_tests_agree_with_the_whole_set_through_every_node() {
    require_redis_cli();
    let mut cluster = Cluster::start_ready(repaired_by_reads_only()).await;
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

/// `SCARD`'s summaries (count and state digest per owner) answered through node `at`:
/// (`summary`, `members`) counts of the metric.
async fn cardinality_reads(cluster: &Cluster, at: usize) -> (f64, f64) {
    let text = cluster.metrics_text(at).await.unwrap();
    let read = |answer: &str| {
        let name = format!("speedlayer_set_cardinality_reads_total{{answer=\"{answer}\"}}");
        support::sample(&text, &name).unwrap_or(0.0)
    };
    (read("summary"), read("members"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cardinality_comes_from_digests_when_owners_agree_and_from_members_when_not() {
    require_redis_cli();
    let mut cluster = Cluster::start_ready(repaired_by_reads_only()).await;
    let port = |cluster: &Cluster, i: usize| cluster.nodes[i].config().resp_port;

    assert_eq!(
        session(port(&cluster, 0), "CONSISTENCY all\nSADD s a b c"),
        "OK\n3"
    );
    for i in 0..3 {
        let before = cardinality_reads(&cluster, i).await;
        assert_eq!(
            session(port(&cluster, i), "SCARD s\nSCARD nokey"),
            "3\n0",
            "node {i}"
        );
        let after = cardinality_reads(&cluster, i).await;
        assert_eq!(
            after.0 - before.0,
            2.0,
            "node {i}: both answered from summaries"
        );
        assert_eq!(after.1, before.1, "node {i}: no members read");
    }
    assert_eq!(
        session(port(&cluster, 0), "SET str x\nSCARD str")
            .lines()
            .last(),
        Some("WRONGTYPE Operation against a key holding the wrong kind of value")
    );

    // Owners with the same count and different members: nodes 1 and 2 miss an add of d,
    // node 3 alone takes an add of x. Each owner counts 4; the set has 5.
    cluster.kill(2);
    assert_eq!(session(port(&cluster, 0), "SADD s d"), "1");
    cluster.restart(2);
    cluster.wait_all_up(Duration::from_secs(30)).await;
    cluster.kill(0);
    cluster.kill(1);
    assert_eq!(
        session(port(&cluster, 2), "CONSISTENCY one\nSADD s x"),
        "OK\n1"
    );
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_all_up(Duration::from_secs(30)).await;
    let p = port(&cluster, 0);
    assert_eq!(session(p, "CONSISTENCY local\nSCARD s"), "OK\n4");
    assert_eq!(
        session(port(&cluster, 2), "CONSISTENCY local\nSCARD s"),
        "OK\n4"
    );
    // At `all` the digests differ, so the members are joined (and the owners repaired).
    let before = cardinality_reads(&cluster, 0).await;
    assert_eq!(session(p, "CONSISTENCY all\nSCARD s"), "OK\n5");
    let after = cardinality_reads(&cluster, 0).await;
    assert_eq!(
        after.1 - before.1,
        1.0,
        "the owners disagreed: members read"
    );
    // Repaired, the owners agree again: the count comes from their summaries.
    assert_eq!(session(p, "CONSISTENCY all\nSCARD s"), "OK\n5");
    let again = cardinality_reads(&cluster, 0).await;
    assert_eq!(
        again.0 - after.0,
        1.0,
        "repaired owners agree on the digest"
    );
    assert_eq!(again.1, after.1);
    assert_eq!(
        session(port(&cluster, 2), "CONSISTENCY local\nSCARD s"),
        "OK\n5"
    );
}
