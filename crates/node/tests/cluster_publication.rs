//! A batch publication that reaches only one node: the others have the import staged
//! (every node stages before any publishes) and learn the publication from catalog gossip;
//! meanwhile every answer, on every coordinator, is exact for the boundary it names.
//!
//! Three nodes run in this process over real sockets. The import is driven step by step
//! through each node's store (as `speedlayer_cluster::Import` does over the wire), so the
//! publication can be made to miss two nodes, which a real import only does when they
//! fail at that moment.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use speedlayer_cluster::ClusterConfig;
use speedlayer_core::{BatchBoundary, BatchValue, Key};
use speedlayer_node::{Node, NodeConfig};
use support::batch::hour;

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect()
}

async fn json_of(client: &Client, url: String) -> Value {
    let response = client.get(url).send().await.expect("request");
    response.json().await.expect("json")
}

/// Polls `url` until `check` holds on its JSON, for at most 10 s.
async fn wait_for(client: &Client, url: String, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = json_of(client, url.clone()).await;
        if check(&body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three nodes in this process, seeded with each other, every one seeing the others up,
/// with `view` declared as `spec` and known everywhere; their HTTP bases and a client.
async fn three_nodes(
    dir: &tempfile::TempDir,
    view: &str,
    spec: Value,
) -> (Vec<Node>, Vec<String>, Client) {
    let addrs = free_addrs(3);
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut config = NodeConfig::new(dir.path().join(format!("n{i}")));
        config.http = "127.0.0.1:0".parse().unwrap();
        config.resp = "127.0.0.1:0".parse().unwrap();
        config.cluster = ClusterConfig::single(*addr);
        config.cluster.seeds = addrs.clone();
        // Three in-process nodes of a debug build share two cores with the other tests:
        // internode requests that carry megabytes of rows get time to be answered (these
        // tests are about what arrives, not how fast).
        config.cluster.rpc_timeout = std::time::Duration::from_secs(10);
        nodes.push(Node::start(config).await.expect("node starts"));
    }
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| format!("http://{}", n.http_addr))
        .collect();
    let client = Client::new();
    for base in &bases {
        wait_for(
            &client,
            format!("{base}/v1/cluster"),
            "every peer is up",
            |c| {
                c["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().all(|n| n["state"] == "up"))
            },
        )
        .await;
    }
    let declared = client
        .put(format!("{}/v1/views/{view}", bases[0]))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success());
    for base in &bases {
        wait_for(
            &client,
            format!("{base}/v1/views"),
            "the view is known",
            |v| {
                v["views"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v["name"] == view))
            },
        )
        .await;
    }
    (nodes, bases, client)
}

async fn stop(nodes: Vec<Node>) {
    for node in nodes {
        node.shutdown().await.expect("shutdown");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_a_publication_learns_it_from_gossip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = json!({ "type": "counter", "epoch_secs": 3600 });
    let (nodes, bases, client) = three_nodes(&dir, "pv", spec).await;
    let updates: Vec<Value> = (0..3)
        .map(|h| json!({ "key": "/p", "clustering": format!("h{h}"), "op": "incr", "by": 10, "ts": hour(h) }))
        .collect();
    let written = client
        .post(format!("{}/v1/views/pv/update?consistency=all", bases[0]))
        .json(&updates)
        .send()
        .await
        .unwrap();
    assert!(
        written.status().is_success(),
        "{}",
        written.text().await.unwrap()
    );

    // Stage and finish everywhere, publish on node 0 only.
    let t = BatchBoundary(hour(2));
    let rows: Vec<(Key, BatchValue)> = (0..2)
        .map(|h| {
            let key = Key::new(b"/p".to_vec(), format!("h{h}").into_bytes()).unwrap();
            (key, BatchValue::Count(7))
        })
        .collect();
    for node in &nodes {
        node.store.stage_begin("pv", t, 99).await.expect("stage");
        node.store
            .stage_rows("pv", t, 99, rows.clone())
            .await
            .expect("rows");
        node.store.stage_finish("pv", t, 99).await.expect("finish");
    }
    assert!(nodes[0].store.publish("pv", t, 99).await.expect("publish"));

    // Whichever boundary a coordinator knows, its answer is exact for it.
    for base in &bases {
        let body = json_of(
            &client,
            format!("{base}/v1/views/pv/range?key=/p&consistency=all"),
        )
        .await;
        let total = body["total"].as_i64().unwrap();
        match body["boundary"].as_u64().unwrap() {
            0 => assert_eq!(total, 30, "realtime only: {body}"),
            b if b == t.secs() => assert_eq!(total, 7 + 7 + 10, "batch + realtime since T: {body}"),
            other => panic!("boundary {other} was never published: {body}"),
        }
    }
    // Gossip carries the publication to the nodes that missed it.
    for base in &bases[1..] {
        wait_for(
            &client,
            format!("{base}/v1/views/pv/batch"),
            "the node publishes",
            |b| b["boundary"] == t.secs(),
        )
        .await;
        let body = json_of(&client, format!("{base}/v1/views/pv/range?key=/p")).await;
        assert_eq!(
            (body["boundary"].as_u64(), body["total"].as_i64()),
            (Some(t.secs()), Some(24)),
            "{body}"
        );
    }
    stop(nodes).await;
}

/// Rows larger than one internode request holds (sets of 2,000 members of ~100 bytes:
/// ~200 KB each, 120 of them, ~24 MB) are staged on every owner in several requests, and
/// every node's own copy answers them whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_of_large_rows_reaches_every_owner_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = json!({ "type": "set", "epoch_secs": 3600 });
    let (nodes, bases, client) = three_nodes(&dir, "tags", spec).await;
    let member = |row: usize, m: usize| format!("{row:04}-{m:05}-{}", "x".repeat(88));
    let body: String = (0..120)
        .map(|row| {
            let members: Vec<String> = (0..2000).map(|m| member(row, m)).collect();
            format!(
                "{}\n",
                json!({ "key": format!("k{row}"), "value": members })
            )
        })
        .collect();
    assert!(body.len() > 20 * 1024 * 1024, "{} bytes", body.len());
    let t = hour(2);
    let response = client
        .post(format!("{}/v1/views/tags/batch?covers_until={t}", bases[0]))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let reply: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status} {reply}");
    assert_eq!(
        (&reply["rows"], &reply["published_on"]),
        (&json!(120), &json!(3)),
        "{reply}"
    );
    for base in &bases {
        for row in [0, 61, 119] {
            let url = format!("{base}/v1/views/tags/get?key=k{row}&consistency=local");
            let body = json_of(&client, url).await;
            let members = body["value"].as_array().map_or(0, Vec::len);
            assert_eq!(
                (body["boundary"].as_u64(), members),
                (Some(t), 2000),
                "{base} k{row}"
            );
            assert_eq!(body["value"][1999], json!(member(row, 1999)));
        }
    }
    stop(nodes).await;
}
