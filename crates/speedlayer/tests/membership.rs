//! Membership by gossip between real processes: nodes that only know one seed form one
//! cluster; the cluster grows and shrinks while clients write, losing nothing; a dead
//! node is removed and its partitions rebuilt; a process without the secret cannot join.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{epoch_safe_ts, read_counter, Cluster, ClusterOptions};

/// Every node's view: (sorted (addr, state) of its members, ring version).
async fn views(
    cluster: &Cluster,
    nodes: &[usize],
) -> Vec<Result<(Vec<(String, String)>, String), String>> {
    let mut out = Vec::new();
    for &i in nodes {
        out.push(cluster.cluster_info(i).await.map(|info| {
            let mut members: Vec<(String, String)> = info["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (
                        n["addr"].as_str().unwrap().to_owned(),
                        n["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            members.sort();
            (
                members,
                info["ring_version"].as_str().unwrap_or("").to_owned(),
            )
        }));
    }
    out
}

/// Waits until every node of `nodes` lists exactly `expected` (addr → state) and they
/// all report the same ring; how long it took.
async fn wait_agree(
    cluster: &Cluster,
    nodes: &[usize],
    expected: &BTreeMap<String, &str>,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(a, s)| (a.clone(), s.to_string()))
        .collect();
    loop {
        let seen = views(cluster, nodes).await;
        let agree = seen
            .iter()
            .all(|v| v.as_ref().is_ok_and(|(m, _)| *m == want))
            && seen
                .iter()
                .filter_map(|v| v.as_ref().ok().map(|(_, r)| r.clone()))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1;
        if agree {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} the nodes {nodes:?} do not agree on {want:?}: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_know_one_seed_form_one_cluster_and_share_declarations() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(1)).await;
    let a = cluster.addr(0);
    let started = Instant::now();
    let b = cluster.spawn_joiner(vec![a.clone()]);
    let c = cluster.spawn_joiner(vec![a.clone()]);
    let expected: BTreeMap<String, &str> =
        [0, b, c].iter().map(|&i| (cluster.addr(i), "up")).collect();
    wait_agree(&cluster, &[0, b, c], &expected, Duration::from_secs(10)).await;
    let took = started.elapsed();
    eprintln!("three nodes agreed on one cluster {took:?} after the joiners started");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A view declared on C is known to A and B.
    let url = format!("{}/v1/views/joined", cluster.base(c));
    let response = cluster
        .client
        .put(&url)
        .json(&json!({"type": "counter"}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    for i in [0, b] {
        let url = format!("{}/v1/views/joined", cluster.base(i));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = cluster.client.get(&url).send().await.unwrap().status();
            if status.is_success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} does not know the view: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until every node of `nodes` holds `totals` in its own copy (consistency=local).
async fn wait_local(
    cluster: &Cluster,
    nodes: &[usize],
    totals: &BTreeMap<String, i64>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    for &i in nodes {
        for (key, want) in totals {
            loop {
                let got = read_counter(&cluster.client, &cluster.base(i), "hits", key, "local")
                    .await
                    .unwrap_or(-1);
                if got == *want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{key} local on node {i}: {got} of {want}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Acknowledged increments per key, and failures by kind.
#[derive(Default)]
struct Tally {
    acked: BTreeMap<String, i64>,
    failures: BTreeMap<String, u64>,
}

/// A client: increments with ids at quorum through the nodes of `bases` in turn,
/// retrying each one (same id) through the next node until it is acknowledged.
async fn client(
    id: usize,
    http: reqwest::Client,
    bases: Arc<std::sync::RwLock<Vec<String>>>,
    running: Arc<AtomicBool>,
    tally: Arc<std::sync::Mutex<Tally>>,
) {
    let ts = epoch_safe_ts();
    let mut seq = 0u64;
    let mut turn = id;
    while running.load(Ordering::Acquire) {
        let key = format!("k{}", (seq as usize * 7 + id) % 24);
        let body = json!({"key": key, "op": "incr", "by": 1, "ts": ts,
                          "id": {"writer": format!("c{id}"), "seq": seq}});
        loop {
            let base = {
                let bases = bases.read().unwrap();
                turn += 1;
                bases[turn % bases.len()].clone()
            };
            let url = format!("{base}/v1/views/hits/update");
            let sent = http
                .post(&url)
                .query(&[("consistency", "quorum")])
                .json(&body)
                .send()
                .await;
            let kind = match sent {
                Ok(r) if r.status().is_success() => {
                    *tally.lock().unwrap().acked.entry(key.clone()).or_default() += 1;
                    break;
                }
                Ok(r) => format!("{}", r.status().as_u16()),
                Err(e) if e.is_connect() => "connect".to_string(),
                Err(e) if e.is_timeout() => "timeout".to_string(),
                Err(e) => format!("other: {e}"),
            };
            *tally.lock().unwrap().failures.entry(kind).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seq += 1;
    }
}

async fn wait_state(
    cluster: &Cluster,
    observers: &[usize],
    target: usize,
    state: &str,
    within: Duration,
) {
    let started = Instant::now();
    let addr = cluster.addr(target);
    loop {
        let mut unmet = Vec::new();
        for &o in observers {
            let info = cluster.cluster_info(o).await;
            let seen = info.as_ref().ok().and_then(|info| {
                info["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["addr"] == addr)
                    .and_then(|n| n["state"].as_str().map(str::to_owned))
            });
            if seen.as_deref() != Some(state) {
                unmet.push(format!("node {o} sees {addr} as {seen:?}"));
            }
        }
        if unmet.is_empty() {
            return;
        }
        assert!(started.elapsed() < within, "after {within:?}: {unmet:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_grows_to_five_and_shrinks_to_three_while_clients_write() {
    // Anti-entropy off: the joins and leaves must move the data themselves.
    let options = ClusterOptions::new(3).args(&["--anti-entropy-interval-secs", "0"]);
    let mut cluster = Cluster::start_ready(options).await;
    cluster.declare("hits", "counter").await;
    let bases = Arc::new(std::sync::RwLock::new(cluster.bases()));
    let running = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..8)
        .map(|id| {
            tokio::spawn(client(
                id,
                cluster.client.clone(),
                bases.clone(),
                running.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Grow: two nodes join through one seed.
    let grow = Instant::now();
    let d = cluster.spawn_joiner(vec![cluster.addr(0)]);
    let e = cluster.spawn_joiner(vec![cluster.addr(0)]);
    let all: Vec<usize> = (0..5).collect();
    for joiner in [d, e] {
        wait_state(&cluster, &all, joiner, "up", Duration::from_secs(60)).await;
    }
    eprintln!("grew 3 -> 5 in {:?}", grow.elapsed());
    bases
        .write()
        .unwrap()
        .extend([cluster.base(d), cluster.base(e)]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Shrink: two founding nodes leave.
    let shrink = Instant::now();
    for leaver in [0, 1] {
        let url = format!("{}/v1/cluster/leave", cluster.base(leaver));
        let response = cluster.client.post(&url).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            202,
            "{:?}",
            response.text().await
        );
    }
    for leaver in [0, 1] {
        wait_state(&cluster, &all, leaver, "left", Duration::from_secs(60)).await;
    }
    eprintln!("shrank 5 -> 3 in {:?}", shrink.elapsed());
    *bases.write().unwrap() = vec![cluster.base(2), cluster.base(d), cluster.base(e)];
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::Release);
    for c in clients {
        c.await.unwrap();
    }
    // A leaver may be stopped once it has handed on what stale coordinators wrote to it
    // after its last comparison (it says so in its log).
    for leaver in [0, 1] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.nodes[leaver]
            .log_text()
            .contains("late writes handed on")
        {
            assert!(
                Instant::now() < deadline,
                "node {leaver} never finished its last pass"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = cluster.nodes[leaver].log_text();
        let last_pass = log
            .lines()
            .find(|l| l.contains("(late writes): every partition"));
        eprintln!(
            "node {leaver}: {}",
            last_pass.unwrap_or("no comparison after left")
        );
    }
    cluster.kill(0);
    cluster.kill(1);

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let writes: i64 = tally.acked.values().sum();
    eprintln!(
        "{writes} increments acknowledged; failed attempts (retried): {:?}",
        tally.failures
    );
    assert!(writes > 100, "only {writes} writes");
    for kind in tally.failures.keys() {
        assert!(
            kind == "503" || kind == "connect",
            "a failure of an undocumented kind: {kind} ({:?})",
            tally.failures
        );
    }
    // Every remaining node owns every partition (3 nodes, 3 replicas): each one's own
    // copy agrees with the total (checked before any read at `all` could repair it).
    let remaining = [2, d, e];
    wait_local(&cluster, &remaining, &tally.acked, Duration::from_secs(15)).await;
    for &i in &remaining {
        let info: Value = cluster.cluster_info(i).await.unwrap();
        for partition in info["ring"].as_array().unwrap() {
            let owners: Vec<&str> = partition["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            assert_eq!(owners.len(), 3, "node {i}: {partition}");
            for owner in owners {
                assert!(
                    remaining.iter().any(|&r| cluster.addr(r) == owner),
                    "node {i}: partition owned by {owner}, which left"
                );
            }
        }
        for (key, want) in &tally.acked {
            let got = read_counter(&cluster.client, &cluster.base(i), "hits", key, "all")
                .await
                .unwrap();
            assert_eq!(got, *want, "{key} at all through node {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_removed_has_its_partitions_rebuilt_and_a_live_one_cannot_be() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(4)).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..200u64 {
        let key = format!("k{}", i % 40);
        let body = json!({"key": key, "op": "incr", "by": 1, "ts": ts,
                          "id": {"writer": "w", "seq": i}});
        cluster
            .update_ok((i % 4) as usize, "hits", &body, support::cluster::QUORUM)
            .await;
        *totals.entry(key).or_default() += 1;
    }
    // A live node cannot be removed; an unknown one is not found.
    let bases = cluster.bases();
    let client = cluster.client.clone();
    let remove = |via: usize, addr: String| {
        let url = format!("{}/v1/cluster/nodes/{addr}", bases[via]);
        let client = client.clone();
        async move { client.delete(&url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(remove(0, cluster.addr(3)).await, 409);
    assert_eq!(remove(0, "127.0.0.1:1".into()).await, 404);

    cluster.kill(3);
    cluster
        .wait_for_states(&[0, 1, 2], &[3], "down", Duration::from_secs(10))
        .await;
    // Written while it is dead: the coordinators hold hints for it.
    for i in 200..240u64 {
        let key = format!("k{}", i % 40);
        let body = json!({"key": key, "op": "incr", "by": 1, "ts": ts,
                          "id": {"writer": "w", "seq": i}});
        cluster
            .update_ok((i % 3) as usize, "hits", &body, support::cluster::QUORUM)
            .await;
        *totals.entry(key).or_default() += 1;
    }
    let hinted: u64 = {
        let mut n = 0;
        for i in 0..3 {
            n += cluster
                .hints_by_target(i)
                .await
                .unwrap()
                .get(&cluster.addr(3))
                .copied()
                .unwrap_or(0);
        }
        n
    };
    assert!(hinted > 0, "no hints were kept for the dead node");
    let removed = Instant::now();
    assert_eq!(remove(0, cluster.addr(3)).await, 200);
    wait_state(&cluster, &[0, 1, 2], 3, "removed", Duration::from_secs(10)).await;
    // Three nodes, three replicas: each now owns every partition and must hold every key.
    wait_local(&cluster, &[0, 1, 2], &totals, Duration::from_secs(30)).await;
    for i in 0..3 {
        let info = cluster.cluster_info(i).await.unwrap();
        for partition in info["ring"].as_array().unwrap() {
            let owners = partition["nodes"].as_array().unwrap();
            assert_eq!(owners.len(), 3, "{partition}");
            assert!(!owners.contains(&json!(cluster.addr(3))), "{partition}");
        }
    }
    eprintln!(
        "after the removal every remaining node held every key within {:?}",
        removed.elapsed()
    );
    // The hints for it can never be delivered: dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        loop {
            let held = cluster.hints_by_target(i).await.unwrap();
            if held.get(&cluster.addr(3)).copied().unwrap_or(0) == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} still holds hints for the removed node: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_secret_or_with_another_ring_shape_cannot_join() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(1)).await;
    let a = cluster.addr(0);
    let intruder = cluster.spawn_joiner_with(vec![a.clone()], |config| {
        config.secret = "not-the-cluster-secret".into();
    });
    let wrong_shape = cluster.spawn_joiner_with(vec![a.clone()], |config| {
        config.extra_args = vec!["--partitions".into(), "64".into()];
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let secret = cluster
            .metric(
                0,
                "speedlayer_cluster_connections_refused_total{reason=\"secret\"}",
            )
            .await
            .unwrap_or(0.0);
        let shape = cluster
            .metric(
                0,
                "speedlayer_cluster_connections_refused_total{reason=\"ring_shape\"}",
            )
            .await
            .unwrap_or(0.0);
        if secret >= 1.0 && shape >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals counted: secret {secret}, ring shape {shape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = cluster.cluster_info(0).await.unwrap();
    let listed: Vec<&str> = info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["addr"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![a.as_str()], "the seed lists only itself");
    for i in [intruder, wrong_shape] {
        let info = cluster.cluster_info(i).await.unwrap();
        let me = cluster.addr(i);
        let own = info["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["addr"] == me.as_str())
            .unwrap()
            .clone();
        assert_eq!(
            own["state"], "joining",
            "node {i} never owns anything: {own}"
        );
    }
}
