//! Deletes hold cluster-wide, with real processes: an epoch dropped through one node is
//! gone on every node and stays gone through read repair, hints and restarts; `FLUSHALL`
//! through one node (the real `redis-cli`) empties what every node answers for Redis
//! keys, and a node that was down during a drop learns it when it is back.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

mod support;

use support::cluster::{epoch_safe_ts, get_json, Cluster, ClusterOptions, QUORUM};

/// How long a node may take to see a peer die or come back.
const DETECT: Duration = Duration::from_secs(10);
/// How long a restarted node may take until every node sees every node up.
const RESTART: Duration = Duration::from_secs(20);
/// How long hints may take to drain.
const CONVERGE: Duration = Duration::from_secs(15);

const ALL: &[(&str, &str)] = &[("consistency", "all")];

fn incr(key: &str, by: i64, ts: i64, writer: &str, seq: u64) -> Value {
    json!({"key": key, "op": "incr", "by": by, "ts": ts, "id": {"writer": writer, "seq": seq}})
}

/// `DELETE /v1/views/{view}/epochs/{epoch}` through node `i`.
async fn drop_epoch(cluster: &Cluster, i: usize, view: &str, epoch: i64) -> (StatusCode, Value) {
    let url = format!("{}/v1/views/{view}/epochs/{epoch}", cluster.base(i));
    let response = cluster
        .client
        .delete(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Reads `key` through every running node at `all` three times (each read repairs what
/// differs), then at `local` on every node: every answer must be `expected`.
async fn assert_everywhere(cluster: &Cluster, view: &str, key: &str, expected: i64) {
    for round in 0..3 {
        for i in cluster.running() {
            let value = cluster
                .read(i, view, key, "all")
                .await
                .unwrap_or_else(|e| panic!("round {round}, read at all through n{}: {e}", i + 1));
            assert_eq!(
                value,
                expected,
                "round {round}: {view}/{key} at all through n{}",
                i + 1
            );
        }
    }
    for i in cluster.running() {
        let value = cluster
            .read(i, view, key, "local")
            .await
            .unwrap_or_else(|e| panic!("local read on n{}: {e}", i + 1));
        assert_eq!(value, expected, "{view}/{key} local on n{}", i + 1);
    }
}

/// A 3-node cluster whose counter view `pv` holds, for key `/a`, five increments in the
/// previous hour's epoch and seven in the current one, written at `all` through n1 and
/// n2; and the previous hour's event time.
async fn two_epochs() -> (Cluster, i64) {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("pv", "counter").await;
    let ts = epoch_safe_ts();
    let old = ts - 3600;
    for seq in 1..=5 {
        cluster
            .update_ok(0, "pv", &incr("/a", 1, old, "w", seq), ALL)
            .await;
    }
    cluster
        .update_ok(1, "pv", &incr("/a", 7, ts, "w", 6), ALL)
        .await;
    (cluster, old)
}

/// 3 nodes: five increments in one epoch and seven in the next, written at `all`; the
/// first epoch dropped through n1 reads 7 through every node at `all` and on every node
/// locally after repair rounds; a later write into it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_dropped_through_one_node_is_gone_on_every_node() {
    let (cluster, old) = two_epochs().await;
    let old_epoch = old / 3600;
    assert_everywhere(&cluster, "pv", "/a", 12).await;

    let (status, body) = drop_epoch(&cluster, 0, "pv", old_epoch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dropped"], json!(old_epoch), "{body}");
    assert_everywhere(&cluster, "pv", "/a", 7).await;

    // Nothing brings it back: a write into the dropped epoch through another node is
    // refused (and reported), and every node still answers 7.
    let (status, body) = cluster
        .update(2, "pv", &incr("/a", 100, old + 1, "w", 7), QUORUM)
        .await
        .expect("update");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("dropped"),
        "the refusal says why: {body}"
    );
    assert_everywhere(&cluster, "pv", "/a", 7).await;
    let refusals = cluster
        .metrics_text(2)
        .await
        .expect("metrics")
        .lines()
        .find(|l| l.starts_with("speedlayer_store_dropped_epoch_refusals_total"))
        .map(str::to_owned);
    assert!(
        refusals.as_deref().is_some_and(|l| !l.ends_with(" 0")),
        "n3 counts the refused write: {refusals:?}"
    );
}

/// n3 is SIGKILLed; writes into epoch E go on at quorum (hints for n3 on n1 and n2);
/// E is dropped through n1 while n3 is down. n3's first answer after its restart already
/// leaves E out; after the hints drained, E is gone on every node, n3's own copy
/// included, also after another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_an_epoch_drop_learns_it_when_back() {
    let (mut cluster, old) = two_epochs().await;
    let old_epoch = old / 3600;

    cluster.kill(2);
    cluster.wait_for_states(&[0, 1], &[2], "down", DETECT).await;
    for seq in 7..=9 {
        cluster
            .update_ok(1, "pv", &incr("/a", 1, old, "w", seq), QUORUM)
            .await;
    }
    let mut hints = 0;
    for i in [0, 1] {
        hints += cluster
            .hints_by_target(i)
            .await
            .expect("hints")
            .values()
            .sum::<u64>();
    }
    assert!(hints > 0, "writes while n3 is down leave hints for it");
    let (status, body) = drop_epoch(&cluster, 0, "pv", old_epoch).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    cluster.restart(2);
    // A restarted node catches up on the catalog before it serves: its very first answer
    // (its own copy, no coordination) already leaves the dropped epoch out.
    let deadline = std::time::Instant::now() + RESTART;
    while cluster.health(2).await != Ok(StatusCode::OK) {
        assert!(std::time::Instant::now() < deadline, "n3 did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = cluster
        .read(2, "pv", "/a", "local")
        .await
        .expect("local read on n3");
    assert_eq!(first, 7, "n3's first answer after its restart");
    cluster.wait_all_up(RESTART).await;
    cluster.wait_hints_drained(CONVERGE).await;
    assert_everywhere(&cluster, "pv", "/a", 7).await;
    // And after another restart of n3 (its journal replayed), still gone.
    cluster.kill(2);
    cluster.restart(2);
    cluster.wait_all_up(RESTART).await;
    assert_everywhere(&cluster, "pv", "/a", 7).await;
}

/// Runs `redis-cli -p PORT ARGS…` and returns its trimmed output; fails (never skips)
/// when redis-cli is missing.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("redis-cli could not run ({e}); install Debian's redis-tools (.ci/run does)")
        });
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `FLUSHALL` through n1 empties the Redis keys every node answers, also for a key whose
/// owners do not include n1; keys written afterwards count from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_through_one_node_empties_every_node() {
    let cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.config().resp_port).collect();
    let keys: Vec<String> = (0..20).map(|k| format!("hits:{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        let port = ports[k % 3];
        assert_eq!(redis_cli(port, &["INCRBY", key, "5"]), "5");
        assert_eq!(
            redis_cli(port, &["SADD", &format!("set:{k}"), "a", "b"]),
            "2"
        );
    }
    for &port in &ports {
        assert_eq!(redis_cli(port, &["GET", "hits:3"]), "5");
    }
    assert_eq!(redis_cli(ports[0], &["FLUSHALL"]), "OK");
    for &port in &ports {
        for (k, key) in keys.iter().enumerate() {
            assert_eq!(redis_cli(port, &["GET", key]), "", "{key} after FLUSHALL");
            assert_eq!(
                redis_cli(port, &["SCARD", &format!("set:{k}")]),
                "0",
                "set:{k} after FLUSHALL"
            );
        }
    }
    // Writes after the flush start from nothing, through any node.
    assert_eq!(redis_cli(ports[2], &["INCR", "hits:3"]), "1");
    for &port in &ports {
        assert_eq!(redis_cli(port, &["GET", "hits:3"]), "1");
    }
    // FLUSHDB does the same, and a second flush of an empty keyspace is fine.
    assert_eq!(redis_cli(ports[1], &["FLUSHDB"]), "OK");
    assert_eq!(redis_cli(ports[1], &["FLUSHDB", "ASYNC"]), "OK");
    for &port in &ports {
        assert_eq!(redis_cli(port, &["GET", "hits:3"]), "");
    }
}

/// `DEL` through RESP while n3 is down: after n3 is back and the hints drained, every
/// node answers nil (counter, string) and an empty set; `INCR` after `DEL` answers 1. The
/// HTTP form deletes too, and a key whose type cannot be deleted is refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_with_an_owner_down_stays_deleted_everywhere() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.config().resp_port).collect();
    assert_eq!(redis_cli(ports[0], &["INCRBY", "k", "5"]), "5");
    assert_eq!(redis_cli(ports[0], &["SET", "s", "v"]), "OK");
    assert_eq!(redis_cli(ports[0], &["SADD", "members", "a", "b"]), "2");
    assert_eq!(redis_cli(ports[0], &["INCRBY", "other", "2"]), "2");
    assert_eq!(redis_cli(ports[0], &["PFADD", "visitors", "x"]), "1");

    cluster.kill(2);
    cluster.wait_for_states(&[0, 1], &[2], "down", DETECT).await;
    assert_eq!(
        redis_cli(ports[0], &["DEL", "k", "s", "members", "never"]),
        "3"
    );
    let url = format!("{}/v1/views/redis/keys", cluster.base(1));
    let answer: Value = cluster
        .client
        .delete(&url)
        .query(&[("key", "other")])
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["deleted"], json!(true), "{answer}");
    let refused = redis_cli(ports[0], &["DEL", "visitors"]);
    assert!(refused.contains("cannot be deleted"), "{refused}");

    cluster.restart(2);
    cluster.wait_all_up(RESTART).await;
    cluster.wait_hints_drained(CONVERGE).await;
    // Each node's own copy first, before any coordinated read could repair it: the
    // delete reached n2 as a replicated delta and n3 as a hint.
    for i in 0..3 {
        let url = format!(
            "{}/v1/views/redis/get?key=k&consistency=local",
            cluster.base(i)
        );
        let answer = get_json(&cluster.client, &url).await.expect("local read");
        assert_eq!(
            answer["value"],
            Value::Null,
            "n{}'s own copy of k: {answer}",
            i + 1
        );
    }
    for &port in &ports {
        for key in ["k", "s", "other"] {
            assert_eq!(redis_cli(port, &["GET", key]), "", "{key} on port {port}");
        }
        assert_eq!(redis_cli(port, &["SCARD", "members"]), "0");
        assert_eq!(redis_cli(port, &["EXISTS", "k"]), "0");
        assert_eq!(redis_cli(port, &["PFCOUNT", "visitors"]), "1");
    }
    assert_eq!(redis_cli(ports[2], &["INCR", "k"]), "1");
    for &port in &ports {
        assert_eq!(redis_cli(port, &["GET", "k"]), "1");
    }
}

/// Observed-remove: n1 deletes k while n3 is down; then, with n1 and n2 down, n3 (which
/// never saw the delete) counts 3 more. When all are back, every node answers 3: the
/// deleted 5 stays gone, the increment the delete did not see survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_the_del_did_not_see_survives() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.config().resp_port).collect();
    assert_eq!(redis_cli(ports[0], &["INCRBY", "k", "5"]), "5");
    cluster.kill(2);
    cluster.wait_for_states(&[0, 1], &[2], "down", DETECT).await;
    assert_eq!(redis_cli(ports[0], &["DEL", "k"]), "1");
    cluster.kill(0);
    cluster.kill(1);
    cluster.restart(2);
    cluster.wait_for_states(&[2], &[0, 1], "down", DETECT).await;
    let body = json!({"key": "k", "op": "incr", "by": 3});
    cluster
        .update_ok(2, "redis", &body, &[("consistency", "one")])
        .await;
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_all_up(RESTART).await;
    cluster.wait_hints_drained(CONVERGE).await;
    for &port in &ports {
        assert_eq!(redis_cli(port, &["GET", "k"]), "3", "port {port}");
    }
}
