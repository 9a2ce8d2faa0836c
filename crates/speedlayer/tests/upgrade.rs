//! A data directory written by an earlier version opens with all its data: the state
//! layout changed to placement order (`speedlayer_store`'s `state_key`), and a node moves
//! older states once, before it replays its update log.
//!
//! The fixture `fixtures/data-dir-before-placement-order.tgz` was written by the release
//! build of commit b44665e (the last one with the old layout) as a one-node cluster on
//! `--cluster 127.0.0.1:17782`, then SIGKILLed, so part of it is checkpointed states and
//! part only in the update log:
//!
//! ```sh
//! speedlayer serve --data-dir data --http 127.0.0.1:17780 --resp 127.0.0.1:17781 --cluster 127.0.0.1:17782 &
//! curl -X PUT localhost:17780/v1/views/hits -d '{"type":"counter","epoch_secs":3600}'
//! for i in $(seq 1 50); do echo "INCRBY c$i $i"; echo "SADD s$((i%5)) m$i"; done | redis-cli -p 17781
//! redis-cli -p 17781 HSET h f1 v1 f2 v2
//! curl -X POST localhost:17780/v1/views/hits/update -d '[{"key":"/about","clustering":"h10","op":"incr","by":3,"ts":1700000000},
//!   {"key":"/about","clustering":"h11","op":"incr","by":4,"ts":1700000000},{"key":"/about","clustering":"h12","op":"incr","by":1,"ts":1700003700}]'
//! curl localhost:17780/metrics        # checkpoints
//! for i in $(seq 1 20); do echo "INCR c$i"; done | redis-cli -p 17781
//! redis-cli -p 17781 DEL c50
//! curl -X POST localhost:17780/v1/views/hits/update -d '{"key":"/about","clustering":"h11","op":"incr","by":10,"ts":1700000000}'
//! kill -9 %1; tar czf fixture.tgz data
//! ```

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

mod support;

use support::cluster::get_json;
use support::redis_cli::{cli, require_redis_cli};
use support::{free_ports, Server};

/// The cluster address the fixture's node had: its member record names it, so the node
/// must come back under it (below the ephemeral range tests' free ports come from).
const FIXTURE_CLUSTER_ADDR: &str = "127.0.0.1:17782";

fn check_data(server: &Server) {
    let port = server.resp_port;
    // Checkpointed before the kill, then incremented in the update log only.
    assert_eq!(cli(port, &["GET", "c1"]), "2");
    assert_eq!(cli(port, &["GET", "c20"]), "21");
    // Checkpointed only.
    assert_eq!(cli(port, &["GET", "c21"]), "21");
    assert_eq!(cli(port, &["SCARD", "s1"]), "10");
    assert_eq!(cli(port, &["HGET", "h", "f2"]), "v2");
    // Deleted in the update log only.
    assert_eq!(cli(port, &["EXISTS", "c50"]), "0");
    // Every key listed once: 49 counters, 5 sets, 1 hash.
    let mut keys: Vec<String> = cli(port, &["KEYS", "*"])
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    let mut expected: Vec<String> = (1..50)
        .map(|i| format!("c{i}"))
        .chain((0..5).map(|i| format!("s{i}")))
        .chain(["h".to_string()])
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    // Counted exactly (KEYS checkpointed): the 2 hash fields count as rows.
    assert_eq!(cli(port, &["DBSIZE"]), "56");
}

async fn check_range(server: &Server) {
    let client = reqwest::Client::new();
    let range: Value = get_json(
        &client,
        &format!(
            "http://127.0.0.1:{}/v1/views/hits/range?key=/about&from=h00&to=h99",
            server.http_port
        ),
    )
    .await
    .unwrap();
    let rows: Vec<(String, i64)> = range["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["clustering"].as_str().unwrap().to_string(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("h10".to_string(), 3),
            ("h11".to_string(), 14),
            ("h12".to_string(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_before_placement_order_opens_with_all_its_data() {
    require_redis_cli();
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/data-dir-before-placement-order.tgz"
    );
    let status = Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "tar xzf {fixture}");
    let (http_port, resp_port) = free_ports();
    let extra = ["--cluster".to_string(), FIXTURE_CLUSTER_ADDR.to_string()];
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let mut server = Server::spawn_with(&data, http_port, resp_port, &log, &extra);
    server.wait_healthy().await;
    assert!(
        server
            .log_text()
            .contains("moved existing states to placement order"),
        "the node did not say it moved the old states"
    );
    check_data(&server);
    check_range(&server).await;
    // A second start finds nothing to move and the same data.
    server.kill();
    let mut server = Server::spawn_with(&data, http_port, resp_port, &log, &extra);
    server.wait_healthy().await;
    assert_eq!(
        server
            .log_text()
            .matches("moved existing states to placement order")
            .count(),
        1,
        "the move ran again"
    );
    check_data(&server);
    check_range(&server).await;
}
