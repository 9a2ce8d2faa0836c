//! A node whose clock runs an hour ahead (libfaketime, as the fault suite found it):
//! pings measure the offset, every node shows it (`/v1/cluster`, `/metrics`), the skewed
//! node refuses to coordinate writes with a clear error while the others keep taking
//! them, and register writes without an event time are stamped after what their replica
//! holds, so a stamp from the future does not hide later writes; an event time more than
//! a day ahead is refused. Back on a true clock, the node coordinates again.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::cluster::{Cluster, ClusterOptions, QUORUM};

const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

fn libfaketime() -> &'static str {
    LIBFAKETIME
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime is needed (apt-get install faketime; .ci/run installs it)")
}

async fn cluster_info(cluster: &Cluster, i: usize) -> Value {
    cluster.cluster_info(i).await.unwrap()
}

/// Node `observer`'s view of node `target`'s clock offset (ms).
fn offset_of(info: &Value, addr: &str) -> Option<i64> {
    info["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["addr"] == addr)?["clock_offset_ms"]
        .as_i64()
}

async fn register(cluster: &Cluster, i: usize) -> Value {
    let url = format!(
        "{}/v1/views/reg/get?key=greeting&consistency=quorum",
        cluster.base(i)
    );
    let answer: Value = cluster
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_clock_an_hour_ahead_is_flagged_and_coordinates_no_writes() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster
        .declare_spec(
            "reg",
            &json!({"type": "register", "epoch_secs": 1_000_000_000u64}),
        )
        .await;
    cluster
        .declare_spec(
            "hits",
            &json!({"type": "counter", "epoch_secs": 1_000_000_000u64}),
        )
        .await;
    let skewed = 2;
    let addr = cluster.addr(skewed);
    cluster.nodes[skewed].restart_with_env(&[
        ("LD_PRELOAD", libfaketime()),
        ("FAKETIME", "+3600s"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    cluster.wait_all_up(Duration::from_secs(20)).await;

    // Every node sees the offset; the skewed node knows it is the odd one out.
    let started = Instant::now();
    loop {
        let a = offset_of(&cluster_info(&cluster, 0).await, &addr);
        let b = offset_of(&cluster_info(&cluster, 1).await, &addr);
        let me = cluster_info(&cluster, skewed).await;
        let flagged = [a, b]
            .iter()
            .all(|o| o.is_some_and(|o| (3_590_000..3_610_000).contains(&o)));
        if flagged && me["clock_skewed"] == true {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "offsets seen: {a:?} {b:?}; skewed node: {me}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("skew flagged after {:?}", started.elapsed());
    let offset = cluster
        .metric(
            0,
            &format!("speedlayer_peer_clock_offset_seconds{{target=\"{addr}\"}}"),
        )
        .await
        .unwrap();
    assert!((3590.0..3610.0).contains(&offset), "{offset}");
    assert_eq!(cluster_info(&cluster, 0).await["clock_skewed"], false);

    // The skewed node refuses to coordinate writes, clearly; the others take them, and
    // the skewed node still stores its replica.
    let incr = json!({"key": "k", "op": "incr", "by": 1, "id": {"writer": "w", "seq": 1}});
    let (status, body) = cluster.update(skewed, "hits", &incr, QUORUM).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "clock_skew", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("another node"),
        "{body}"
    );
    cluster
        .update_ok(0, "hits", &incr, &[("consistency", "all")])
        .await;

    // A register stamped an hour ahead (an explicit event time here, as a skewed
    // coordinator would have stamped it) does not hide a later write without one.
    let future = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let set = |value: &str| json!({"key": "greeting", "op": "set", "value": value});
    let mut from_future = set("from the future");
    from_future["ts"] = json!(future);
    cluster.update_ok(0, "reg", &from_future, QUORUM).await;
    cluster.update_ok(1, "reg", &set("later"), QUORUM).await;
    for i in 0..3 {
        assert_eq!(
            register(&cluster, i).await,
            "later",
            "read through n{}",
            i + 1
        );
    }

    // An event time far ahead of every clock is refused, clearly.
    let mut far = set("far ahead");
    far["ts"] = json!(future + 2 * 86_400);
    let (status, body) = cluster.update(0, "reg", &far, QUORUM).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_timestamp", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("ahead"), "{body}");
    assert_eq!(register(&cluster, 0).await, "later");

    // On a true clock again, the node coordinates writes.
    cluster.nodes[skewed].restart_with_env(&[]);
    cluster.wait_all_up(Duration::from_secs(20)).await;
    let started = Instant::now();
    loop {
        let mut incr = incr.clone();
        incr["id"]["seq"] = json!(2);
        let (status, body) = cluster.update(skewed, "hits", &incr, QUORUM).await.unwrap();
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still refused after the clock was fixed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
