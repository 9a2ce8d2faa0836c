//! The batch hand-over across a network partition made in the kernel: three
//! `speedlayer serve` processes, each in its own network namespace on a bridge
//! (`support::netns`), one of them cut off while a batch view is imported.
//!
//! The majority side publishes the new boundary (a quorum of every partition's owners
//! holds it) and keeps taking writes; the node cut off keeps answering, from inside its
//! namespace, exactly at the boundary it knows, and refuses quorum reads it cannot make.
//! Once the link is back, it learns the publication from gossip, copies the rows it
//! missed, receives its hints, and answers at the new boundary from its own copy.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::batch::{
    assert_rows, await_rows, batch_of, batch_status, counter_spec, hour_start, import_ok,
    past_hour_start, small_rows, write_rows, Row, NODE_ARGS, VIEW,
};
use support::cluster::{Cluster, ClusterOptions};
use support::netns::Netns;

/// A range read of `key` made from inside node `i`'s namespace: (status, body).
fn read_inside(
    net: &Netns,
    cluster: &Cluster,
    i: usize,
    key: &str,
    consistency: &str,
) -> (u16, Value) {
    let url = format!(
        "{}/v1/views/{VIEW}/range?key={key}&consistency={consistency}",
        cluster.base(i)
    );
    let (status, body) = net.http_get(i, &url);
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_during_an_import_stays_exact_and_catches_up() {
    let started = Instant::now();
    // Declared first, dropped last: the nodes die before their namespaces do.
    let net = Netns::create(3);
    let mut cluster =
        Cluster::start_ready(ClusterOptions::new(3).args(NODE_ARGS).in_namespaces(&net)).await;
    cluster.declare_spec(VIEW, &counter_spec()).await;
    let h0 = past_hour_start();
    let (t1, t2) = (hour_start(h0, 1), hour_start(h0, 2));
    let mut rows = small_rows(h0);
    write_rows(&cluster.client, &cluster.base(0), &rows, "w").await;
    import_ok(&cluster.client, &cluster.base(0), t1, batch_of(&rows, t1)).await;
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, t1).await;

    // Cut node 3 off in the kernel; the others see it down.
    let cut = 2;
    net.cut(cut);
    let noticed = cluster
        .wait_for_states(&[0, 1], &[cut], "down", Duration::from_secs(15))
        .await;
    eprintln!("n3 cut off; n1 and n2 see it down after {noticed:?}");

    // The majority imports T2 and keeps taking writes (n3's share waits in hints).
    let reply = import_ok(&cluster.client, &cluster.base(1), t2, batch_of(&rows, t2)).await;
    assert_eq!(
        (&reply["published_on"], &reply["catching_up"]),
        (&json!(2), &json!([cluster.addr(cut)])),
        "{reply}"
    );
    let late: Vec<Row> = rows
        .iter()
        .filter(|r| r.hour >= hour_start(h0, 3))
        .map(|r| Row {
            value: 3,
            ..r.clone()
        })
        .collect();
    write_rows(&cluster.client, &cluster.base(0), &late, "w2").await;
    let before_cut = rows.clone();
    for row in rows.iter_mut().filter(|r| r.hour >= hour_start(h0, 3)) {
        row.value += 3;
    }
    assert_rows(&cluster, &[0, 1], "quorum", &rows, t2).await;

    // Inside the partition: n3 answers at the boundary it knows, with what it holds, and
    // cannot make a quorum.
    for key in ["/a", "/b"] {
        let (status, body) = read_inside(&net, &cluster, cut, key, "one");
        let expected: i64 = before_cut
            .iter()
            .filter(|r| r.key == key)
            .map(|r| r.value)
            .sum();
        assert_eq!(
            (status, &body["boundary"], &body["total"]),
            (200, &json!(t1), &json!(expected)),
            "n3 cut off, {key} at one: {body}"
        );
        let (status, body) = read_inside(&net, &cluster, cut, key, "quorum");
        assert_eq!(
            (status, &body["error"]),
            (503, &json!("unavailable")),
            "{body}"
        );
    }
    eprintln!("n3, cut off, answers at T1 with what it holds and refuses quorum reads");

    // Heal: n3 learns T2 from gossip, copies the batch rows, receives its hints, and its
    // own copy answers at T2 exactly.
    net.heal(cut);
    let up = cluster.wait_all_up(Duration::from_secs(20)).await;
    let converged = await_rows(
        &mut cluster,
        &[0, 1, 2],
        "local",
        &rows,
        t2,
        Duration::from_secs(30),
    )
    .await;
    let status = batch_status(&cluster.client, &cluster.base(cut)).await;
    assert_eq!(status["boundary"], t2, "n3 after the partition: {status}");
    assert_rows(&cluster, &[0, 1, 2], "quorum", &rows, t2).await;
    eprintln!(
        "healed: every node up after {up:?}; n3's own copy exact at T2 {converged:?} later; test took {:?}",
        started.elapsed()
    );
}
