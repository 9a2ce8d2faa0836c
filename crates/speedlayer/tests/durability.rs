//! Durability of acknowledged writes across a crash: the real `speedlayer` binary, fed by
//! concurrent HTTP clients, killed with SIGKILL mid-stream and restarted on the same data
//! directory. Every update the node acknowledged (200) must be there after the restart;
//! updates in flight at the kill may or may not be, but none may count twice.
//!
//! Each client task owns its keys, so at most one of its requests is in flight when the
//! node dies: a key's value after restart must lie in `[acked, acked + in_flight]`.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

mod support;

use support::cluster::get_json;
use support::{free_ports, Server, BIN};

/// Concurrent client tasks (each owns its keys).
const CLIENTS: usize = 16;
/// Acknowledged updates per cycle before the node is killed.
const ACKED_BEFORE_KILL: u64 = 2_000;
/// Kill/restart cycles.
const CYCLES: usize = 2;
/// All events in one epoch of the hour-long epochs (2024-11-24T12:06:40Z), so the test
/// does not depend on the wall clock.
const TS: i64 = 1_732_450_000;

/// What one client knows about its own keys.
#[derive(Clone, Debug, Default)]
struct Ledger {
    /// Sum of acknowledged increments of key `c{n}-a` (anonymous updates).
    acked_a: i64,
    /// Sum of acknowledged increments of key `c{n}-b` (updates with ids).
    acked_b: i64,
    /// Acknowledged members of the set `members/c{n}`.
    acked_members: BTreeSet<String>,
    /// The request in flight when the node died: its increments and members.
    pending_a: i64,
    pending_b: i64,
    pending_members: BTreeSet<String>,
    /// Next `seq` of writer `c{n}` (keeps growing across cycles).
    next_seq: u64,
    /// Highest seq of writer `c{n}` on key `c{n}-b` whose request was acknowledged.
    acked_seq_b: Option<u64>,
    /// Next member number.
    next_member: u64,
    /// Failures seen while the node was supposed to be up.
    unexpected: Vec<String>,
}

/// One request a client sends: the view, the body, and what it adds to the ledger.
struct Planned {
    view: &'static str,
    body: Value,
    a: i64,
    b: i64,
    members: Vec<String>,
    /// Highest writer seq on key `c{n}-b` in this request.
    seq_b: Option<u64>,
}

fn plan(n: usize, i: u64, ledger: &mut Ledger) -> Planned {
    let key_a = format!("c{n}-a");
    let key_b = format!("c{n}-b");
    let by = (i % 5 + 1) as i64;
    let mut id = || {
        ledger.next_seq += 1;
        (
            json!({ "writer": format!("c{n}"), "seq": ledger.next_seq }),
            ledger.next_seq,
        )
    };
    match i % 8 {
        0..=3 => Planned {
            view: "hits",
            body: json!({ "key": key_a, "op": "incr", "by": by, "ts": TS }),
            a: by,
            b: 0,
            members: vec![],
            seq_b: None,
        },
        4 => {
            let (id, seq) = id();
            Planned {
                view: "hits",
                body: json!({ "key": key_b, "op": "incr", "by": by, "ts": TS, "id": id }),
                a: 0,
                b: by,
                members: vec![],
                seq_b: Some(seq),
            }
        }
        5 => {
            let (id_1, _) = id();
            let (id_2, seq) = id();
            Planned {
                view: "hits",
                body: json!([
                    { "key": key_a, "op": "incr", "by": by, "ts": TS },
                    { "key": key_b, "op": "incr", "by": 2 * by, "ts": TS, "id": id_1 },
                    { "key": key_a, "op": "decr", "by": 1, "ts": TS },
                    { "key": key_b, "op": "incr", "by": 1, "ts": TS, "id": id_2 },
                ]),
                a: by - 1,
                b: 2 * by + 1,
                members: vec![],
                seq_b: Some(seq),
            }
        }
        6 => {
            ledger.next_member += 1;
            let member = format!("c{n}-m{}", ledger.next_member);
            Planned {
                view: "members",
                body: json!({ "key": format!("c{n}"), "op": "add", "members": [member], "ts": TS }),
                a: 0,
                b: 0,
                members: vec![member],
                seq_b: None,
            }
        }
        _ => {
            ledger.next_member += 2;
            let m1 = format!("c{n}-m{}", ledger.next_member - 1);
            let m2 = format!("c{n}-m{}", ledger.next_member);
            Planned {
                view: "members",
                body: json!([
                    { "key": format!("c{n}"), "op": "add", "members": [m1], "ts": TS },
                    { "key": format!("c{n}"), "op": "add", "members": [m2], "ts": TS,
                      "id": { "writer": format!("c{n}"), "seq": ledger.next_member } },
                ]),
                a: 0,
                b: 0,
                members: vec![m1, m2],
                seq_b: None,
            }
        }
    }
}

/// Sends updates until one fails (the node died), recording what was acknowledged.
async fn client_task(
    n: usize,
    base: String,
    mut ledger: Ledger,
    acked: Arc<AtomicU64>,
    killing: Arc<AtomicBool>,
) -> Ledger {
    let client = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for i in 0u64.. {
        let planned = plan(n, i, &mut ledger);
        let result = client
            .post(format!("{base}/v1/views/{}/update", planned.view))
            .json(&planned.body)
            .send()
            .await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await;
                match (status, text) {
                    (StatusCode::OK, Ok(text)) => Ok(text),
                    (status, text) => Err(format!("{status}: {text:?}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(text) => {
                let answer: Value = serde_json::from_str(&text).expect("JSON answer");
                assert_eq!(answer["duplicate"], 0, "{text}");
                ledger.acked_a += planned.a;
                ledger.acked_b += planned.b;
                ledger.acked_members.extend(planned.members);
                if planned.seq_b.is_some() {
                    ledger.acked_seq_b = planned.seq_b;
                }
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if !killing.load(Ordering::SeqCst) {
                    ledger
                        .unexpected
                        .push(format!("{} {}: {error}", planned.view, planned.body));
                }
                ledger.pending_a = planned.a;
                ledger.pending_b = planned.b;
                ledger.pending_members = planned.members.into_iter().collect();
                return ledger;
            }
        }
    }
    unreachable!()
}

async fn get_value(client: &Client, base: &str, view: &str, key: &str) -> Value {
    let response = client
        .get(format!("{base}/v1/views/{view}/get"))
        .query(&[("key", key)])
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    body["value"].clone()
}

async fn declare(client: &Client, base: &str, view: &str, value_type: &str) -> StatusCode {
    client
        .put(format!("{base}/v1/views/{view}"))
        .json(&json!({ "type": value_type, "epoch_secs": 3600 }))
        .send()
        .await
        .expect("declare")
        .status()
}

/// Checks every key against its ledger and rebases the ledger on what the node holds.
async fn verify(client: &Client, base: &str, ledgers: &mut [Ledger]) {
    for (n, ledger) in ledgers.iter_mut().enumerate() {
        for (key, acked, pending) in [
            (
                format!("c{n}-a"),
                &mut ledger.acked_a,
                &mut ledger.pending_a,
            ),
            (
                format!("c{n}-b"),
                &mut ledger.acked_b,
                &mut ledger.pending_b,
            ),
        ] {
            let value = get_value(client, base, "hits", &key)
                .await
                .as_i64()
                .unwrap_or_else(|| panic!("{key} is not an integer"));
            let (low, high) = if *pending >= 0 {
                (*acked, *acked + *pending)
            } else {
                (*acked + *pending, *acked)
            };
            assert!(
                (low..=high).contains(&value),
                "key {key}: value {value} after restart, acknowledged {acked}, \
                 in flight at the kill {pending}"
            );
            // Whatever of the in-flight request survived is durable now.
            *acked = value;
            *pending = 0;
        }
        let members = get_value(client, base, "members", &format!("c{n}")).await;
        let present: BTreeSet<String> = members
            .as_array()
            .unwrap_or_else(|| panic!("members of c{n}: {members}"))
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        let missing: Vec<_> = ledger.acked_members.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "acknowledged members of c{n} lost: {missing:?}"
        );
        let allowed: BTreeSet<String> = ledger
            .acked_members
            .union(&ledger.pending_members)
            .cloned()
            .collect();
        let unknown: Vec<_> = present.difference(&allowed).collect();
        assert!(unknown.is_empty(), "members never sent: {unknown:?}");
        ledger.acked_members = present;
        ledger.pending_members.clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_updates_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let (port, resp_port) = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();

    let mut server = Server::spawn(&data_dir, port, resp_port, &log);
    server.wait_healthy().await;
    assert_eq!(
        declare(&client, &base, "hits", "counter").await,
        StatusCode::CREATED
    );
    assert_eq!(
        declare(&client, &base, "members", "set").await,
        StatusCode::CREATED
    );

    let mut ledgers: Vec<Ledger> = vec![Ledger::default(); CLIENTS];
    for cycle in 0..CYCLES {
        let acked = Arc::new(AtomicU64::new(0));
        let killing = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = ledgers
            .iter()
            .cloned()
            .enumerate()
            .map(|(n, ledger)| {
                tokio::spawn(client_task(
                    n,
                    base.clone(),
                    ledger,
                    acked.clone(),
                    killing.clone(),
                ))
            })
            .collect();

        // Kill mid-stream, while every client is still sending.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::Relaxed) < ACKED_BEFORE_KILL {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: only {} updates acknowledged in 60 s",
                acked.load(Ordering::Relaxed)
            );
            if tasks.iter().any(|t| t.is_finished()) {
                // A client failed before the kill; its ledger says why (checked below).
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        killing.store(true, Ordering::SeqCst);
        server.kill();
        let acked_at_kill = acked.load(Ordering::Relaxed);

        let mut in_flight = 0;
        for (n, task) in tasks.into_iter().enumerate() {
            let ledger = task.await.expect("client task");
            assert!(
                ledger.unexpected.is_empty(),
                "client {n} failed before the kill: {:?}",
                ledger.unexpected
            );
            if ledger.pending_a != 0 || ledger.pending_b != 0 || !ledger.pending_members.is_empty()
            {
                in_flight += 1;
            }
            ledgers[n] = ledger;
        }
        eprintln!(
            "cycle {cycle}: killed after {acked_at_kill} acknowledged updates \
             ({in_flight} clients had a request in flight), {:?} since start",
            started.elapsed()
        );

        // Restart on the same directory and port.
        server = Server::spawn(&data_dir, port, resp_port, &log);
        server.wait_healthy().await;
        verify(&client, &base, &mut ledgers).await;

        // The declarations survived (redeclaring is "unchanged", not "created"). The
        // node's implicit Redis view is left out.
        let views: Value = client
            .get(format!("{base}/v1/views"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let declared: Vec<&Value> = views["views"]
            .as_array()
            .unwrap_or_else(|| panic!("no views in {views}"))
            .iter()
            .filter(|v| v["name"] != "redis")
            .collect();
        assert_eq!(
            json!(declared),
            json!([
                { "name": "hits", "type": "counter", "epoch_secs": 3600 },
                { "name": "members", "type": "set", "epoch_secs": 3600 },
            ]),
            "{views}"
        );
        assert_eq!(
            declare(&client, &base, "hits", "counter").await,
            StatusCode::OK
        );
        assert_eq!(
            declare(&client, &base, "members", "set").await,
            StatusCode::OK
        );
    }

    // The restarted node takes new writes, and they count on top of the survivors.
    let before = ledgers[0].acked_a;
    let response = client
        .post(format!("{base}/v1/views/hits/update"))
        .json(&json!({ "key": "c0-a", "op": "incr", "by": 1000, "ts": TS }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        get_value(&client, &base, "hits", "c0-a").await,
        json!(before + 1000)
    );
    // An id acknowledged before the last crash is still known: its retry counts nothing.
    let seq = ledgers[0]
        .acked_seq_b
        .expect("client 0 had an update with an id acknowledged");
    let response = client
        .post(format!("{base}/v1/views/hits/update"))
        .json(&json!({ "key": "c0-b", "op": "incr", "by": 1, "ts": TS,
                       "id": { "writer": "c0", "seq": seq } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["duplicate"], 1, "{answer}");
    assert_eq!(
        get_value(&client, &base, "hits", "c0-b").await,
        json!(ledgers[0].acked_b),
        "a retried id counted twice after restart"
    );
    eprintln!("durability test took {:?}", started.elapsed());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_reports_acknowledged_events() {
    let started = Instant::now();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["demo", "--duration", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawning speedlayer demo");
    // Dropping the child on timeout kills it (kill_on_drop).
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("speedlayer demo --duration 4 did not finish within 60 s")
        .expect("demo output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("events acknowledged"))
        .unwrap_or_else(|| panic!("no 'events acknowledged' in stdout:\n{stdout}"));
    let events: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {line:?}"));
    assert!(events > 0, "{line}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the demo stopped before its duration"
    );
}

/// A key of a `gcounter` view written and acknowledged, then SIGKILL before any
/// checkpoint: recovery replays the update log, and the key must come back as a gcounter
/// with its total (replay once created a missing key with the op's natural type, a
/// `counter`, which the view then refused to read or write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcounter_key_replayed_after_sigkill_keeps_its_type() {
    let node = InPlace::new();
    let base = node.base.clone();
    let client = Client::new();
    let mut server = node.start().await;
    let declared = client
        .put(format!("{base}/v1/views/hits"))
        .json(&json!({"type": "gcounter"}))
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success());
    let incr = json!({"key": "k", "op": "incr", "by": 2, "ts": TS});
    for _ in 0..5 {
        let response = client
            .post(format!("{base}/v1/views/hits/update"))
            .json(&incr)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Well before the 10 s checkpoint: the states live only in the update log.
    server.kill();
    let mut server = node.start().await;
    let read = |client: Client, base: String| async move {
        let response = client
            .get(format!("{base}/v1/views/hits/get?key=k"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, body) = read(client.clone(), base.clone()).await;
    assert_eq!(
        (status, &body["value"]),
        (StatusCode::OK, &json!(10)),
        "{body}"
    );
    let response = client
        .post(format!("{base}/v1/views/hits/update"))
        .json(&incr)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = read(client, base).await;
    assert_eq!(
        (status, &body["value"]),
        (StatusCode::OK, &json!(12)),
        "{body}"
    );
    server.assert_running();
}

/// Key counts (`/epochs`) stay exact when the states come back through log replay after
/// SIGKILL, and when written again and deleted after it: 300 keys written (100 twice),
/// killed before any checkpoint, 20 deleted after the restart, 10 new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_counts_are_exact_after_a_replay() {
    let node = InPlace::new();
    let base = node.base.clone();
    let client = Client::new();
    let mut server = node.start().await;
    assert!(declare(&client, &base, "hits", "counter")
        .await
        .is_success());
    let write = |keys: std::ops::Range<u32>| {
        let updates: Vec<Value> = keys
            .map(|i| json!({"key": format!("k{i}"), "op": "incr", "by": 1, "ts": TS}))
            .collect();
        let request = client
            .post(format!("{base}/v1/views/hits/update"))
            .json(&updates);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    write(0..300).await;
    write(0..100).await;
    // Well before the 10 s checkpoint: the states live only in the update log.
    server.kill();
    let mut server = node.start().await;
    assert!(
        server.log_text().contains("replayed the update log"),
        "the restart did not replay the log (a checkpoint ran first?)"
    );
    let keys = |client: Client, base: String| async move {
        // /metrics checkpoints first, so the counts are current.
        client.get(format!("{base}/metrics")).send().await.unwrap();
        let epochs = get_json(&client, &format!("{base}/v1/views/hits/epochs"))
            .await
            .unwrap();
        epochs["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["approx_keys"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(keys(client.clone(), base.clone()).await, 300);
    for i in 0..20 {
        let response = client
            .delete(format!("{base}/v1/views/hits/keys?key=k{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?}",
            response.text().await
        );
    }
    write(300..310).await;
    assert_eq!(keys(client.clone(), base.clone()).await, 290);
    server.assert_running();
}

/// A node on fresh ports and a fresh data directory, which a test kills and starts again
/// in place.
struct InPlace {
    dir: tempfile::TempDir,
    port: u16,
    resp_port: u16,
    base: String,
}

impl InPlace {
    fn new() -> InPlace {
        let (port, resp_port) = free_ports();
        InPlace {
            dir: tempfile::tempdir().unwrap(),
            port,
            resp_port,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts the node (again) and waits until it is healthy.
    async fn start(&self) -> Server {
        let mut server = Server::spawn(
            &self.dir.path().join("data"),
            self.port,
            self.resp_port,
            &self.dir.path().join("node.log"),
        );
        server.wait_healthy().await;
        server
    }
}
