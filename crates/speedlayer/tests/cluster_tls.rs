//! Mutual TLS between nodes (`--cluster-tls-cert/-key/-ca`), with real processes: a
//! cluster whose nodes hold certificates the cluster CA signed forms and replicates; its
//! cluster port answers plain text with a TLS alert; a node whose certificate another CA
//! signed never joins, even with the right cluster secret.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{Cluster, ClusterOptions};
use support::pki::pki;

fn tls_args(cert: &str, key: &str, ca: &str) -> Vec<String> {
    [
        "--cluster-tls-cert",
        cert,
        "--cluster-tls-key",
        key,
        "--cluster-tls-ca",
        ca,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_speak_mutual_tls_and_a_node_another_ca_signed_cannot_join() {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let args = tls_args(
        &pki.path("node.pem"),
        &pki.path("node-key.pem"),
        &pki.path("ca.pem"),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Every node sees every node up: gossip, pings and the catalog all ran over TLS.
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3).args(&args)).await;
    cluster.declare("hits", "counter").await;
    for i in 0..3 {
        let body = json!({"key": "k", "op": "incr", "by": i + 1});
        cluster
            .update_ok(i, "hits", &body, &[("consistency", "all")])
            .await;
    }
    for i in 0..3 {
        assert_eq!(
            cluster.read(i, "hits", "k", "local").await,
            Ok(6),
            "node {i}"
        );
    }

    // Plain text on the cluster port: the answer is a TLS alert record (0x15), not a frame.
    let port: u16 = cluster.addr(0).rsplit(':').next().unwrap().parse().unwrap();
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    let mut answer = [0u8; 16];
    let n = plain.read(&mut answer).unwrap_or(0);
    assert!(
        n > 0 && answer[0] == 0x15,
        "plain text got {:?}",
        &answer[..n]
    );

    // A node with the cluster secret but a certificate from another CA (and trusting only
    // that CA) is refused at the TLS handshake both ways, and never becomes a member.
    let rogue_args = tls_args(
        &pki.path("rogue-node.pem"),
        &pki.path("rogue-node-key.pem"),
        &pki.path("rogue.pem"),
    );
    let rogue = cluster.spawn_joiner_with(vec![cluster.addr(0)], |config| {
        config.extra_args = rogue_args;
    });
    let rogue_addr = cluster.addr(rogue);
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        for i in 0..3 {
            let info = cluster.cluster_info(i).await.unwrap();
            let listed = info["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["addr"] == rogue_addr.as_str());
            assert!(!listed, "node {i} lists the rogue node: {info}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The cluster still serves.
    cluster
        .update_ok(1, "hits", &json!({"key": "k", "op": "incr"}), &[])
        .await;
    assert_eq!(cluster.read(2, "hits", "k", "all").await, Ok(7));
}
