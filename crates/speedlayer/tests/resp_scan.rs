//! `SCAN` and `KEYS` through real `redis-cli` against a real 4-node cluster with 2
//! replicas (so each node owns about half the partitions and a listing must ask peers):
//! every key that exists is listed exactly once, through any node, in pages of any size,
//! also with a node SIGKILLed; deleted keys are not listed; `MATCH`, `TYPE` and `KEYS`
//! filter as Redis does; bad arguments get Redis's errors.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

mod support;

use support::cluster::{Cluster, ClusterOptions};
use support::redis_cli::{cli, require_redis_cli};

/// Every key of a full iteration through `port` in pages of `count`, with how often each
/// was listed; panics if the iteration does not end.
fn scan_all(port: u16, count: usize, extra: &[&str]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let count = count.to_string();
        let mut args = vec!["SCAN", cursor.as_str(), "COUNT", count.as_str()];
        args.extend_from_slice(extra);
        let reply = cli(port, &args);
        let mut lines = reply.lines();
        let next = lines.next().expect("a cursor").to_string();
        for key in lines {
            *seen.entry(key.to_string()).or_insert(0) += 1;
        }
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
    panic!("SCAN through port {port} did not end within 10,000 calls");
}

/// Asserts `seen` lists exactly `expected`, each once.
fn assert_listed_once(seen: &BTreeMap<String, usize>, expected: &[String], what: &str) {
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: listed more than once: {twice:?}");
    let listed: Vec<&String> = seen.keys().collect();
    let mut expected: Vec<&String> = expected.iter().collect();
    expected.sort();
    assert_eq!(listed, expected, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_lists_every_key_once_across_the_ring() {
    require_redis_cli();
    let mut cluster = Cluster::start_ready(ClusterOptions {
        replicas: 2,
        ..ClusterOptions::new(4)
    })
    .await;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.config().resp_port).collect();

    // 300 counters, 20 sets, 10 hashes of 3 fields, 5 registers, written through every
    // node; then 30 counters deleted.
    let mut expected = Vec::new();
    let mut pipe = String::new();
    for i in 0..300 {
        pipe.push_str(&format!("INCRBY count:{i} {}\n", i + 1));
        expected.push(format!("count:{i}"));
    }
    for i in 0..20 {
        pipe.push_str(&format!("SADD set:{i} a b\n"));
        expected.push(format!("set:{i}"));
    }
    for i in 0..10 {
        pipe.push_str(&format!("HSET hash:{i} f1 1 f2 2 f3 3\n"));
        expected.push(format!("hash:{i}"));
    }
    for i in 0..5 {
        pipe.push_str(&format!("SET reg:{i} v\n"));
        expected.push(format!("reg:{i}"));
    }
    let commands: Vec<&str> = pipe.lines().collect();
    for (i, chunk) in commands
        .chunks(commands.len() / ports.len() + 1)
        .enumerate()
    {
        let input = chunk.join("\n") + "\n";
        let out = support::redis_cli::run_cli(ports[i], &[], Some(input.as_bytes()));
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("ERR"), "writes through node {i}: {text}");
    }
    for i in 0..30 {
        assert_eq!(cli(ports[i % 4], &["DEL", &format!("count:{i}")]), "1");
        expected.retain(|k| *k != format!("count:{i}"));
    }

    // Every node lists every key once, in small and large pages.
    for (i, &port) in ports.iter().enumerate() {
        for count in [7, 1000] {
            let seen = scan_all(port, count, &[]);
            assert_listed_once(
                &seen,
                &expected,
                &format!("SCAN COUNT {count} through n{}", i + 1),
            );
        }
    }
    let mut keys: Vec<String> = cli(ports[1], &["KEYS", "*"])
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "KEYS *");

    // Filters.
    let sets: Vec<String> = (0..20).map(|i| format!("set:{i}")).collect();
    assert_listed_once(&scan_all(ports[2], 10, &["TYPE", "set"]), &sets, "TYPE set");
    let hashes: Vec<String> = (0..10).map(|i| format!("hash:{i}")).collect();
    assert_listed_once(
        &scan_all(ports[2], 10, &["TYPE", "hash"]),
        &hashes,
        "TYPE hash",
    );
    let nines: Vec<String> = expected
        .iter()
        .filter(|k| k.starts_with("count:") && k.ends_with('9'))
        .cloned()
        .collect();
    assert_listed_once(
        &scan_all(ports[3], 50, &["MATCH", "count:*9"]),
        &nines,
        "MATCH count:*9",
    );
    let mut few: Vec<String> = cli(ports[0], &["KEYS", "reg:[0-2]"])
        .lines()
        .map(String::from)
        .collect();
    few.sort();
    assert_eq!(few, vec!["reg:0", "reg:1", "reg:2"]);
    assert_eq!(cli(ports[0], &["KEYS", "nothing*"]), "");

    // Redis's errors.
    assert_eq!(cli(ports[0], &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(
        cli(ports[0], &["SCAN", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(cli(ports[0], &["SCAN", "0", "MATCH"]), "ERR syntax error");
    assert!(cli(ports[0], &["KEYS"]).starts_with("ERR wrong number of arguments"));

    // A node down: every partition keeps a live owner, so listings stay complete.
    cluster.kill(3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for &port in &ports[..3] {
        let seen = scan_all(port, 25, &[]);
        assert_listed_once(&seen, &expected, "SCAN with n4 killed");
    }
}
