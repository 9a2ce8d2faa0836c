//! Strangers on the internode port cannot make a node hold memory: before the handshake
//! proves the cluster secret a frame may be at most 4 KiB (a 60 MiB frame is refused at
//! its length prefix, not buffered), and at most 64 connections may wait for their
//! handshake (more are closed at once). Before, ten 60 MiB frames took a node from 27 to
//! 654 MB resident, and it stayed there.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{expect_closed, send_raw, Cluster, ClusterOptions, QUORUM};
use support::rss_kib;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_cluster_port_cannot_make_a_node_hold_memory() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("hits", "counter").await;
    let target = cluster.addr(0);
    let pid = cluster.nodes[0].pid().unwrap();
    let before = rss_kib(pid);

    // Ten connections, each declaring a 60 MiB frame and sending 1 MiB of it: each is
    // closed at once.
    let mut payload = (60u32 << 20).to_be_bytes().to_vec();
    payload.extend(vec![0x5a; 1 << 20]);
    let started = Instant::now();
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(send_raw(&target, &payload).await);
    }
    for stream in open {
        expect_closed(
            stream,
            "a 60 MiB frame before the handshake",
            Duration::from_secs(1),
        )
        .await;
    }
    let after = rss_kib(pid);
    eprintln!(
        "10 x 60 MiB frames refused in {:?}; RSS {} -> {} MiB",
        started.elapsed(),
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 40 * 1024,
        "RSS grew from {before} to {after} KiB"
    );

    // 100 silent connections: beyond 64 waiting for a handshake, the rest are closed at
    // once.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(send_raw(&target, b"").await);
    }
    let mut closed_at_once = 0;
    for stream in silent.iter_mut() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        )
        .await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 36,
        "only {closed_at_once} of 100 silent connections were closed at once"
    );
    eprintln!("{closed_at_once} of 100 silent connections closed at once");
    drop(silent);

    // The cluster keeps working: quorum writes through the node under attack.
    let incr = json!({"key": "k", "op": "incr", "by": 1, "id": {"writer": "w", "seq": 1}});
    cluster.update_ok(0, "hits", &incr, QUORUM).await;
    cluster.assert_running();
}
