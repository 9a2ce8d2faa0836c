//! The replicated cluster under faults, with real processes on real TCP: `speedlayer
//! serve` children seeded with each other (`support::cluster`), driven over HTTP by
//! concurrent clients, SIGKILLed and restarted on the same data directories, and fed
//! bad bytes on their internode port.
//!
//! Every write of a test carries the same event time (a minute ago), so it lands in one
//! epoch on every node. Expected counter totals are computed by the clients from the
//! updates the cluster acknowledged; with ids, an update sent twice must count once.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

mod support;

use support::cluster::{
    epoch_safe_ts, expect_closed, get_json, http_client, nodes_summary, post_update, send_raw,
    state_in, Cluster, ClusterOptions, Rng, QUORUM, QUORUM_SLOPPY, QUORUM_STRICT, SECRET,
};

/// How long a node may take to see a peer die or come back (the contract says ~2 s).
const DETECT: Duration = Duration::from_secs(10);
/// How long a restarted node may take until every node sees every node up.
const RESTART: Duration = Duration::from_secs(20);
/// How long a live replica may lag behind a quorum write, and hints may take to drain.
const CONVERGE: Duration = Duration::from_secs(15);

/// Expected counter totals per key.
type Totals = BTreeMap<String, i64>;

/// What one client task did: the totals of its acknowledged updates and every failure.
#[derive(Debug, Default)]
struct ClientLog {
    totals: Totals,
    errors: Vec<String>,
    requests: u64,
    updates: u64,
}

/// Adds `from` into `into`.
fn merge(into: &mut Totals, from: &Totals) {
    for (key, value) in from {
        *into.entry(key.clone()).or_insert(0) += value;
    }
}

/// One counter update.
fn incr(key: &str, by: i64, ts: i64, id: Option<(&str, u64)>) -> Value {
    let mut update = json!({ "key": key, "op": "incr", "by": by, "ts": ts });
    if let Some((writer, seq)) = id {
        update["id"] = json!({ "writer": writer, "seq": seq });
    }
    update
}

/// Reads every key of `expected` through each node in `nodes` at `consistency`; returns
/// one line per value that differs (or read that fails).
async fn mismatches(
    cluster: &Cluster,
    nodes: &[usize],
    view: &str,
    expected: &Totals,
    consistency: &str,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for &i in nodes {
        for (key, want) in expected {
            match cluster.read(i, view, key, consistency).await {
                Ok(got) if got == *want => {}
                Ok(got) => wrong.push(format!(
                    "n{} {consistency} {key}: {got}, expected {want}",
                    i + 1
                )),
                Err(e) => wrong.push(format!("n{} {consistency} {key}: {e}", i + 1)),
            }
        }
    }
    wrong
}

/// Asserts that reads at `consistency` through each of `nodes` equal `expected` now.
async fn assert_reads(
    cluster: &Cluster,
    nodes: &[usize],
    view: &str,
    expected: &Totals,
    consistency: &str,
) {
    let wrong = mismatches(cluster, nodes, view, expected, consistency).await;
    assert!(
        wrong.is_empty(),
        "{} of {} reads at {consistency} differ from the acknowledged totals:\n{}",
        wrong.len(),
        nodes.len() * expected.len(),
        wrong.join("\n")
    );
}

/// Polls until reads at `consistency` through each of `nodes` equal `expected`, for at
/// most `within`; returns how long it took.
async fn await_reads(
    cluster: &mut Cluster,
    nodes: &[usize],
    view: &str,
    expected: &Totals,
    consistency: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        cluster.assert_running();
        let wrong = mismatches(cluster, nodes, view, expected, consistency).await;
        if wrong.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?}, {} of {} reads at {consistency} still differ from the \
             acknowledged totals:\n{}",
            wrong.len(),
            nodes.len() * expected.len(),
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Client `n` of the quorum test: 40 batches of 10 increments (every other one with an
/// id, one decrement per batch) over 50 keys, coordinators rotating over every node.
async fn quorum_client(n: usize, bases: Vec<String>, client: Client, ts: i64) -> ClientLog {
    let writer = format!("q{n}");
    let mut log = ClientLog::default();
    let mut seq = 0u64;
    for r in 0..40usize {
        let base = &bases[(n + r) % bases.len()];
        let mut batch = Vec::new();
        let mut delta = Totals::new();
        for j in 0..10usize {
            let key = format!("key-{:02}", (n * 7 + r * 13 + j * 17) % 50);
            let id = if j % 2 == 0 {
                seq += 1;
                Some((writer.as_str(), seq))
            } else {
                None
            };
            let (update, by) = if j == 9 {
                let mut update = incr(&key, 1, ts, id);
                update["op"] = json!("decr");
                (update, -1)
            } else {
                let by = 1 + ((r + j) % 4) as i64;
                (incr(&key, by, ts, id), by)
            };
            batch.push(update);
            *delta.entry(key).or_insert(0) += by;
        }
        log.requests += 1;
        match post_update(&client, base, "hits", &json!(batch), QUORUM).await {
            Ok((StatusCode::OK, _)) => {
                merge(&mut log.totals, &delta);
                log.updates += batch.len() as u64;
            }
            other => log
                .errors
                .push(format!("client {n} batch {r} through {base}: {other:?}")),
        }
    }
    log
}

/// 3 nodes, 8 concurrent clients writing batches at quorum through every coordinator:
/// reads at quorum through every node equal the exact totals, and so does every node's
/// own replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_read_back_exact_on_every_coordinator() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();

    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            tokio::spawn(quorum_client(
                n,
                cluster.bases(),
                cluster.client.clone(),
                ts,
            ))
        })
        .collect();
    let mut expected: Totals = (0..50).map(|k| (format!("key-{k:02}"), 0)).collect();
    let (mut errors, mut updates) = (Vec::new(), 0);
    for task in tasks {
        let log = task.await.expect("client task");
        merge(&mut expected, &log.totals);
        errors.extend(log.errors);
        updates += log.updates;
    }
    let elapsed = started.elapsed();
    assert!(
        errors.is_empty(),
        "quorum writes failed:\n{}",
        errors.join("\n")
    );
    eprintln!(
        "{updates} updates in 320 batches at quorum in {elapsed:?} ({:.0} updates/s)",
        updates as f64 / elapsed.as_secs_f64()
    );

    // R + W > N: a quorum read through any coordinator sees every acknowledged update.
    assert_reads(&cluster, &[0, 1, 2], "hits", &expected, "quorum").await;
    // Every write went to all three replicas; the third may lag a moment behind the quorum.
    let lag = await_reads(
        &mut cluster,
        &[0, 1, 2],
        "hits",
        &expected,
        "local",
        CONVERGE,
    )
    .await;
    eprintln!("every replica held the exact totals {lag:?} after the quorum reads");
}

/// Client `n` of the SIGKILL test: batches of 8 increments, all with ids, at quorum +
/// sloppy through nodes 1 and 2 only, until `stop`.
async fn sloppy_client(
    n: usize,
    bases: Vec<String>,
    client: Client,
    ts: i64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> ClientLog {
    let writer = format!("s{n}");
    let mut log = ClientLog::default();
    let mut seq = 0u64;
    for r in 0usize.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let base = &bases[(n + r) % bases.len()];
        let mut batch = Vec::new();
        let mut delta = Totals::new();
        for j in 0..8usize {
            let key = format!("key-{:02}", (n * 11 + r * 7 + j * 3) % 40);
            let by = 1 + ((r + j) % 3) as i64;
            seq += 1;
            batch.push(incr(&key, by, ts, Some((&writer, seq))));
            *delta.entry(key).or_insert(0) += by;
        }
        log.requests += 1;
        match post_update(&client, base, "hits", &json!(batch), QUORUM_SLOPPY).await {
            Ok((StatusCode::OK, _)) => {
                merge(&mut log.totals, &delta);
                log.updates += batch.len() as u64;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            other => log
                .errors
                .push(format!("client {n} batch {r} through {base}: {other:?}")),
        }
    }
    log
}

/// 3 nodes; clients write at quorum + sloppy through nodes 1 and 2 while node 3 is
/// SIGKILLed: no client sees an error, the survivors hold hints for node 3 (in
/// `/v1/cluster` and `/metrics`), and after node 3 restarts the hints drain and every
/// replica holds the exact totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sloppy_quorum_writes_loses_nothing_and_hints_drain() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    let victim = 2;
    let victim_addr = cluster.addr(victim);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let through = vec![cluster.base(0), cluster.base(1)];
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            tokio::spawn(sloppy_client(
                n,
                through.clone(),
                cluster.client.clone(),
                ts,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();

    // Kill node 3 mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::Relaxed) < 150 {
        assert!(
            !tasks.iter().any(|t| t.is_finished()),
            "a client stopped before the kill"
        );
        assert!(
            Instant::now() < deadline,
            "only {} batches acknowledged in 20 s before the kill",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill(victim);
    let killed_at = Instant::now();
    let acked_at_kill = acked.load(Ordering::Relaxed);

    // Keep writing until the survivors know node 3 is down, hold hints for it, and a
    // good number of batches went through after the kill.
    let detected = cluster
        .wait_for_states(&[0, 1], &[victim], "down", DETECT)
        .await;
    let deadline = Instant::now() + DETECT;
    let holder = loop {
        let mut holder = None;
        for i in [0, 1] {
            let hints = cluster.hints_by_target(i).await.unwrap_or_default();
            if hints.get(&victim_addr).copied().unwrap_or(0) > 0 {
                holder = Some(i);
            }
        }
        if let (Some(i), true) = (holder, acked.load(Ordering::Relaxed) >= acked_at_kill + 150) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} after the kill: survivors' hints {:?} / {:?}, {} batches acknowledged \
             since the kill",
            killed_at.elapsed(),
            cluster.hints_by_target(0).await,
            cluster.hints_by_target(1).await,
            acked.load(Ordering::Relaxed) - acked_at_kill
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let mut expected: Totals = (0..40).map(|k| (format!("key-{k:02}"), 0)).collect();
    let (mut errors, mut updates, mut requests) = (Vec::new(), 0, 0);
    for task in tasks {
        let log = task.await.expect("client task");
        merge(&mut expected, &log.totals);
        errors.extend(log.errors);
        updates += log.updates;
        requests += log.requests;
    }
    assert!(
        errors.is_empty(),
        "sloppy quorum writes failed around the SIGKILL of n3:\n{}",
        errors.join("\n")
    );
    eprintln!(
        "{requests} batches ({updates} updates) acknowledged, {acked_at_kill} before the kill; \
         survivors saw n3 down {detected:?} after the kill"
    );

    // The hints show in the metrics too, labelled with the owner's cluster address.
    let hints = cluster.hints_by_target(holder).await.expect("hints");
    let metric = cluster.metric_hints(holder).await.expect("metrics");
    assert!(
        metric.get(&victim_addr).copied().unwrap_or(0.0) > 0.0,
        "n{} holds hints for {victim_addr} by /v1/cluster ({hints:?}), but /metrics says \
         {metric:?}",
        holder + 1
    );
    let pending: u64 = {
        let mut total = 0;
        for i in [0, 1] {
            total += cluster.hints_by_target(i).await.expect("hints")[&victim_addr];
        }
        total
    };

    // Restart node 3: the hints are delivered and dropped.
    cluster.restart(victim);
    let restarted = Instant::now();
    let up = cluster.wait_all_up(RESTART).await;
    cluster.wait_hints_drained(CONVERGE + RESTART).await;
    let delivered = restarted.elapsed();
    eprintln!(
        "hint delivery: {pending} hints pending for n3 at its restart; every node saw it up \
         after {up:?}; all hints delivered {delivered:?} after the restart"
    );

    // Every replica holds the exact totals: n3 got what it missed from the hints.
    assert_reads(&cluster, &[0, 1, 2], "hits", &expected, "local").await;
}

/// 4 nodes, 3 replicas, 2 of them SIGKILLed: strict quorum writes fail with a 503 naming
/// a dead node where a key's preference list lost its quorum and succeed where it kept
/// both survivors; sloppy writes to the failed keys succeed. After the restarts every
/// strict write is retried with its id, and reads at `all` count each id exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_writes_fail_clearly_when_quorum_is_lost_and_nothing_counts_twice() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(4)).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    let killed = [2, 3];
    let killed_addrs: Vec<String> = killed.iter().map(|&i| cluster.addr(i)).collect();
    for i in killed {
        cluster.kill(i);
    }
    let detected = cluster
        .wait_for_states(&[0, 1], &killed, "down", DETECT)
        .await;
    eprintln!("survivors saw n3 and n4 down {detected:?} after the kill");

    const KEYS: usize = 200;
    let key = |i: usize| format!("key-{i:03}");
    let strict_body = |i: usize| {
        incr(
            &key(i),
            1 + (i % 5) as i64,
            ts,
            Some(("strict", i as u64 + 1)),
        )
    };
    let mut expected = Totals::new();
    let (mut succeeded, mut failed, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..KEYS {
        let through = i % 2;
        match cluster
            .update(through, "hits", &strict_body(i), QUORUM_STRICT)
            .await
        {
            Ok((StatusCode::OK, _)) => succeeded.push(i),
            Ok((StatusCode::SERVICE_UNAVAILABLE, answer)) => {
                let detail = answer["detail"].as_str().unwrap_or("");
                if answer["error"] != "unavailable"
                    || !killed_addrs.iter().any(|a| detail.contains(a.as_str()))
                {
                    wrong.push(format!(
                        "{} through n{}: 503 without error \"unavailable\" and a detail \
                         naming {killed_addrs:?}: {answer}",
                        key(i),
                        through + 1
                    ));
                }
                failed.push(i);
            }
            other => wrong.push(format!(
                "{} through n{}: neither 200 nor 503: {other:?}",
                key(i),
                through + 1
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "strict writes with 2 of 4 nodes down:\n{}",
        wrong.join("\n")
    );
    eprintln!(
        "strict writes with n3, n4 down: {} of {KEYS} succeeded, {} refused",
        succeeded.len(),
        failed.len()
    );
    assert!(
        !failed.is_empty(),
        "every strict write succeeded with 2 of 4 nodes down (3 replicas): none reached a \
         partition that lost its quorum?"
    );
    assert!(
        !succeeded.is_empty(),
        "every strict write failed with 2 of 4 nodes down: partitions whose preference \
         list holds both survivors still have a quorum"
    );

    // Sloppy writes to the keys that lost their quorum go to the live nodes.
    for &i in &failed {
        let body = incr(&key(i), 10, ts, Some(("sloppy", i as u64 + 1)));
        match cluster
            .update((i + 1) % 2, "hits", &body, QUORUM_SLOPPY)
            .await
        {
            Ok((StatusCode::OK, _)) => {}
            other => panic!(
                "sloppy write to {} with 2 live nodes failed: {other:?}",
                key(i)
            ),
        }
    }

    for i in killed {
        cluster.restart(i);
    }
    let up = cluster.wait_all_up(RESTART).await;
    eprintln!("every node saw every node up {up:?} after the restarts");

    // The client retries every strict write with its id: the refused ones now succeed,
    // and neither they nor the ones that had succeeded count twice.
    let mut retry_errors = Vec::new();
    for i in failed.iter().chain(succeeded.iter()).copied() {
        let through = i % 4;
        match cluster
            .update(through, "hits", &strict_body(i), QUORUM_STRICT)
            .await
        {
            Ok((StatusCode::OK, _)) => {}
            other => retry_errors.push(format!(
                "retry of {} through n{} with every node up: {other:?}",
                key(i),
                through + 1
            )),
        }
    }
    assert!(retry_errors.is_empty(), "{}", retry_errors.join("\n"));
    for i in 0..KEYS {
        let sloppy = if failed.contains(&i) { 10 } else { 0 };
        expected.insert(key(i), 1 + (i % 5) as i64 + sloppy);
    }

    let drained = cluster.wait_hints_drained(CONVERGE).await;
    eprintln!("hints drained {drained:?} after the retries");

    let mut wrong = Vec::new();
    for (n, (key, want)) in expected.iter().enumerate() {
        match cluster.read(n % 4, "hits", key, "all").await {
            Ok(got) if got == *want => {}
            other => wrong.push(format!(
                "{key} at all through n{}: {other:?}, expected {want}{}",
                n % 4 + 1,
                if failed.contains(&n) {
                    " (its strict write was refused, then retried)"
                } else {
                    ""
                }
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {KEYS} keys do not count each id exactly once:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Sends `body` through `base` and demands 200.
async fn send_ok(client: &Client, base: &str, body: &Value) -> Result<(), String> {
    match post_update(client, base, "hits", body, QUORUM).await {
        Ok((StatusCode::OK, _)) => Ok(()),
        other => Err(format!("{body} through {base}: {other:?}")),
    }
}

/// Client `n` of the retry test: every request (with ids) goes to one coordinator and
/// again to another; some to both at once, some first with a timeout that gives up
/// before the answer, some to all three.
async fn retrying_client(n: usize, bases: Vec<String>, client: Client, ts: i64) -> ClientLog {
    let impatient = http_client(Duration::from_millis(5));
    let writer = format!("r{n}");
    let mut log = ClientLog::default();
    let mut seq = 0u64;
    for i in 0..60usize {
        let a = (n + i) % 3;
        let b = (a + 1) % 3;
        let c = (a + 2) % 3;
        // Every other request is a batch of two updates on different keys.
        let mut body = Vec::new();
        for j in 0..(1 + i % 2) {
            let key = format!("key-{:02}", (n * 3 + i + j * 7) % 20);
            let by = 1 + ((i + j) % 4) as i64;
            seq += 1;
            body.push(incr(&key, by, ts, Some((&writer, seq))));
            *log.totals.entry(key).or_insert(0) += by;
        }
        let body = if body.len() == 1 {
            body.pop().unwrap()
        } else {
            json!(body)
        };
        log.requests += 1;
        let outcome = match i % 4 {
            // A, then the same again through B.
            0 => match send_ok(&client, &bases[a], &body).await {
                Ok(()) => send_ok(&client, &bases[b], &body).await,
                e => e,
            },
            // Through A and B at once.
            1 => {
                let (x, y) = tokio::join!(
                    send_ok(&client, &bases[a], &body),
                    send_ok(&client, &bases[b], &body)
                );
                x.and(y)
            }
            // A times out on the client's side (the request may or may not have been
            // applied, or still be in flight): retried through B.
            2 => {
                let _ = post_update(&impatient, &bases[a], "hits", &body, QUORUM).await;
                send_ok(&client, &bases[b], &body).await
            }
            // Through all three, one after the other.
            _ => {
                let mut outcome = Ok(());
                for coordinator in [a, b, c] {
                    outcome = outcome.and(send_ok(&client, &bases[coordinator], &body).await);
                }
                outcome
            }
        };
        if let Err(e) = outcome {
            log.errors.push(format!("client {n} request {i}: {e}"));
        }
    }
    log
}

/// 3 nodes; every write (with ids) is sent again through another coordinator, some at
/// once to both, some after a client-side timeout: reads at quorum count each id once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_another_coordinator_count_once() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();

    let tasks: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(retrying_client(
                n,
                cluster.bases(),
                cluster.client.clone(),
                ts,
            ))
        })
        .collect();
    let mut expected: Totals = (0..20).map(|k| (format!("key-{k:02}"), 0)).collect();
    let mut errors = Vec::new();
    for task in tasks {
        let log = task.await.expect("client task");
        merge(&mut expected, &log.totals);
        errors.extend(log.errors);
    }
    assert!(errors.is_empty(), "writes failed:\n{}", errors.join("\n"));

    assert_reads(&cluster, &[0, 1, 2], "hits", &expected, "quorum").await;
    // Requests abandoned by the impatient client may still be in flight; once they have
    // landed every replica must still hold the same exact totals.
    await_reads(
        &mut cluster,
        &[0, 1, 2],
        "hits",
        &expected,
        "local",
        CONVERGE,
    )
    .await;
    assert_reads(&cluster, &[0, 1, 2], "hits", &expected, "quorum").await;
}

/// 3 nodes without hinted handoff or anti-entropy; node 3 misses writes while SIGKILLed
/// and comes back stale; a read at `all` through node 1 answers the total and repairs
/// node 3's replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_at_all_repairs_a_replica_that_missed_writes() {
    let options = ClusterOptions::new(3).args(&[
        "--hinted-handoff",
        "off",
        "--anti-entropy-interval-secs",
        "0",
    ]);
    let mut cluster = Cluster::start_ready(options).await;
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    let stale = 2;
    let keys: Vec<String> = (0..20).map(|k| format!("key-{k:02}")).collect();

    // Before the kill: every replica gets 2 per key.
    let mut before = Totals::new();
    for (k, key) in keys.iter().enumerate() {
        let body = incr(key, 2, ts, Some(("before", k as u64 + 1)));
        cluster.update_ok(0, "hits", &body, QUORUM).await;
        before.insert(key.clone(), 2);
    }
    await_reads(&mut cluster, &[stale], "hits", &before, "local", CONVERGE).await;

    cluster.kill(stale);
    cluster
        .wait_for_states(&[0, 1], &[stale], "down", DETECT)
        .await;
    // While n3 is down: 5 more writes of 3 per key, through n1.
    let mut total = before.clone();
    let mut seq = 0;
    for round in 0..5 {
        let batch: Vec<Value> = keys
            .iter()
            .map(|key| {
                seq += 1;
                incr(key, 3, ts, Some(("during", seq)))
            })
            .collect();
        match cluster.update(0, "hits", &json!(batch), QUORUM).await {
            Ok((StatusCode::OK, _)) => {}
            other => panic!("round {round} at quorum with n3 down: {other:?}"),
        }
        for key in &keys {
            *total.get_mut(key).unwrap() += 3;
        }
    }

    cluster.restart(stale);
    cluster.wait_all_up(RESTART).await;
    // Give a (wrongly) enabled handoff the time it would take, so the next check means
    // something.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut hints = BTreeMap::new();
    for i in [0, 1] {
        hints.insert(i + 1, cluster.hints_by_target(i).await);
    }
    eprintln!("hints held with --hinted-handoff off, after n3 is back: {hints:?}");
    let mut not_stale = Vec::new();
    for key in &keys {
        let local = cluster
            .read(stale, "hits", key, "local")
            .await
            .unwrap_or_else(|e| panic!("local read on n3: {e}"));
        if local >= total[key] {
            not_stale.push(format!("{key}: {local} of {}", total[key]));
        }
    }
    assert!(
        not_stale.is_empty(),
        "n3 was down for the later writes and hinted handoff is off, yet its replica is not \
         behind: {not_stale:?}"
    );

    // A read at `all` answers the merge and repairs the stale replica before answering.
    assert_reads(&cluster, &[0], "hits", &total, "all").await;
    assert_reads(&cluster, &[stale], "hits", &total, "local").await;
}

/// 3 nodes; a 4th process with the wrong secret, seeded with them, is refused (logged
/// "refused", never up on either side); garbage, a 4 GiB length prefix, truncated frames
/// and frames of random bytes on the internode port are refused; the 3 nodes keep
/// serving quorum writes and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_internode_input_is_refused_without_crashing() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    let seeds = cluster.seeds();

    // The intruder: the right seeds, the wrong secret. Only what the nodes log after it
    // starts counts, and not the OS's "Connection refused (os error 111)" of a peer
    // dialled while it was still starting.
    assert_ne!(SECRET, "not-the-cluster-secret");
    let logged_before: Vec<usize> = cluster.nodes.iter().map(|n| n.log_len()).collect();
    let intruder = cluster.spawn_outsider("intruder", "not-the-cluster-secret", seeds.clone());
    let intruder_addr = intruder.cluster_addr();
    let deadline = Instant::now() + Duration::from_secs(15);
    let refusal = loop {
        cluster.assert_running();
        let refusal = (0..3).find_map(|i| {
            let text = cluster.nodes[i].log_text();
            let line = text
                .get(logged_before[i]..)?
                .lines()
                .find(|line| {
                    let lower = line.to_lowercase();
                    lower.contains("refused") && !lower.contains("os error 111")
                })?
                .to_string();
            Some(format!("n{}: {line}", i + 1))
        });
        if let Some(refusal) = refusal {
            break refusal;
        }
        assert!(
            Instant::now() < deadline,
            "no node logged \"refused\" within 15 s of the intruder {intruder_addr} \
             (wrong secret) starting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("the intruder was refused: {refusal}");

    // Bad bytes on n1's (and n2's) internode port, all at once.
    let mut rng = Rng::new(0x5eed);
    let target = cluster.addr(0);
    let mut must_close = Vec::new();
    // Garbage: an HTTP request (its first 4 bytes read as a length of ~1.1 GB).
    must_close.push((
        "garbage bytes",
        send_raw(&target, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
    ));
    // A 4 GiB length prefix and a little of its "payload".
    let mut huge = vec![0xFF, 0xFF, 0xFF, 0xFF];
    huge.extend(rng.bytes(1024));
    must_close.push(("a 0xFFFFFFFF length prefix", send_raw(&target, &huge).await));
    // Well-formed frames of random bytes, first frame of the connection.
    for len in [1usize, 16, 256, 4096] {
        let mut frame = (len as u32).to_be_bytes().to_vec();
        frame.extend(rng.bytes(len));
        must_close.push(("a frame of random bytes", send_raw(&target, &frame).await));
    }
    // A frame of random bytes to n2 as well.
    let mut frame = 512u32.to_be_bytes().to_vec();
    frame.extend(rng.bytes(512));
    must_close.push((
        "a frame of random bytes (n2)",
        send_raw(&cluster.addr(1), &frame).await,
    ));
    // Truncated frames and connections closed mid-frame or mid-prefix, many times.
    for round in 0..50u32 {
        let bytes = match round % 3 {
            0 => {
                let mut b = 1000u32.to_be_bytes().to_vec();
                b.extend(rng.bytes(10));
                b
            }
            1 => vec![0x00, 0x00],
            _ => {
                let mut b = 64u32.to_be_bytes().to_vec();
                b.extend(rng.bytes(63));
                b
            }
        };
        drop(send_raw(&target, &bytes).await);
    }
    // Connections opened and closed without a byte.
    for _ in 0..20 {
        drop(send_raw(&target, &[]).await);
    }
    for (what, stream) in must_close {
        expect_closed(stream, what, Duration::from_secs(10)).await;
    }

    // The three nodes are alive, healthy and still see each other up.
    cluster.assert_running();
    for i in 0..3 {
        assert_eq!(
            cluster.health(i).await,
            Ok(StatusCode::OK),
            "n{} /health after bad internode input",
            i + 1
        );
    }
    cluster
        .wait_for_states(&[0, 1, 2], &[0, 1, 2], "up", DETECT)
        .await;

    // And they still replicate: quorum writes through each, quorum reads through each.
    cluster.declare("hits", "counter").await;
    let ts = epoch_safe_ts();
    let mut expected = Totals::new();
    for k in 0..12usize {
        let key = format!("key-{k:02}");
        let body = incr(&key, 1 + k as i64, ts, Some(("after", k as u64 + 1)));
        cluster.update_ok(k % 3, "hits", &body, QUORUM).await;
        expected.insert(key, 1 + k as i64);
    }
    assert_reads(&cluster, &[0, 1, 2], "hits", &expected, "quorum").await;

    // Nobody ever let the intruder in, in either direction.
    for i in 0..3 {
        let info = cluster.cluster_info(i).await.expect("/v1/cluster");
        assert_ne!(
            state_in(&info, &intruder_addr).as_deref(),
            Some("up"),
            "n{} shows the intruder {intruder_addr} (wrong secret) up: {}",
            i + 1,
            nodes_summary(&info)
        );
    }
    let url = format!("{}/v1/cluster", intruder.base());
    match get_json(&cluster.client, &url).await {
        Ok(info) => {
            for addr in &seeds {
                assert_ne!(
                    state_in(&info, addr).as_deref(),
                    Some("up"),
                    "the intruder (wrong secret) shows {addr} up: {}",
                    nodes_summary(&info)
                );
            }
        }
        Err(e) => eprintln!("the intruder's /v1/cluster did not answer: {e}"),
    }
    drop(intruder);
}
