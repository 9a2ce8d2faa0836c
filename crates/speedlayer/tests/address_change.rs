//! A node restarted on its data directory with another `--cluster` address takes its old
//! self's place: the old address is removed from the cluster (it would otherwise stay an
//! owner nobody answers for, and every quorum request would fail naming it), and the
//! data is all there.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

mod support;

use support::cluster::{free_port_set, get_json};
use support::redis_cli::{cli, require_redis_cli};
use support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_another_cluster_address_replaces_its_old_self() {
    require_redis_cli();
    let dir = tempfile::tempdir().unwrap();
    let ports = free_port_set(4);
    let (http_port, resp_port) = (ports[0], ports[1]);
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let at = |port: u16| vec!["--cluster".to_string(), format!("127.0.0.1:{port}")];

    let mut server = Server::spawn_with(&data, http_port, resp_port, &log, &at(ports[2]));
    server.wait_healthy().await;
    assert_eq!(cli(resp_port, &["INCRBY", "hits", "5"]), "5");
    server.kill();

    let mut server = Server::spawn_with(&data, http_port, resp_port, &log, &at(ports[3]));
    server.wait_healthy().await;
    assert_eq!(cli(resp_port, &["INCR", "hits"]), "6");
    assert_eq!(cli(resp_port, &["GET", "hits"]), "6");
    let client = reqwest::Client::new();
    let cluster: Value = get_json(&client, &format!("http://127.0.0.1:{http_port}/v1/cluster"))
        .await
        .unwrap();
    let old = format!("127.0.0.1:{}", ports[2]);
    let states: Vec<(String, String)> = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        states
            .iter()
            .all(|(addr, state)| addr != &old || state == "removed"),
        "the old address is still a member: {states:?}"
    );
    assert!(
        server
            .log_text()
            .contains("the old address is removed from the cluster"),
        "no warning about the old address"
    );
}
