//! Async ingest survives SIGKILL: the real `speedlayer` binary takes a heavy stream of
//! `POST /v1/events?mode=async` bodies from concurrent clients, is killed mid-stream
//! (with a backlog in its queue and the worker mid-batch) and restarted on the same data
//! directory. Afterwards the queue drains to zero and:
//! - every event with an id counts exactly once: acknowledged bodies, plus the bodies in
//!   flight at the kill, which the clients re-send after the restart (at-least-once
//!   delivery, exactly-once counting);
//! - every acknowledged event without an id counts exactly once too (the queue gives it
//!   an id when it applies it, so a batch re-applied after the crash does not double
//!   count); a body in flight at the kill is either wholly queued or not at all.
//!
//! Each client owns its urls, so its own ledger gives exact expectations.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

mod support;

use support::{free_ports, Server};

const CLIENTS: usize = 6;
/// Events per body.
const BODY_EVENTS: usize = 1_000;
/// The node is killed once this many events are acknowledged (or after 1.5 s): enough
/// for a backlog in the queue, little enough for a debug build to drain quickly.
const ACKED_BEFORE_KILL: u64 = 40_000;
/// Urls per client and kind.
const URLS: usize = 5;
/// 2024-11-24T12:06:40Z: every event lands in one hour bucket.
const TS: i64 = 1_732_450_000;
const HOUR: &str = "2024-11-24T12";

/// The value of a Prometheus sample named exactly `name` (no labels).
async fn metric(client: &Client, base: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    support::sample(&text, name)
}

/// One body of a client: `BODY_EVENTS` pageviews over its urls, with ids (`with_ids`)
/// or without; returns the NDJSON and the count per url index.
fn body(client: usize, round: u64, with_ids: bool) -> (String, [i64; URLS]) {
    let mut out = String::with_capacity(BODY_EVENTS * 90);
    let mut counts = [0i64; URLS];
    for i in 0..BODY_EVENTS {
        let u = (i * 7 + round as usize) % URLS;
        counts[u] += 1;
        let kind = if with_ids { "i" } else { "a" };
        let mut event = json!({
            "type": "pageview",
            "url": format!("/c{client}/{kind}{u}"),
            "ts": TS,
        });
        if with_ids {
            event["id"] = json!({ "writer": format!("client-{client}"), "seq": round * BODY_EVENTS as u64 + i as u64 });
        }
        out.push_str(&event.to_string());
        out.push('\n');
    }
    (out, counts)
}

#[derive(Clone, Default)]
struct Ledger {
    /// Acknowledged events per url without ids.
    anon: [i64; URLS],
    /// Events per url with ids, acknowledged or re-sent after the restart.
    ids: [i64; URLS],
    /// Bodies with ids whose answer was lost in the kill: re-sent after the restart.
    unanswered: Vec<u64>,
    /// Anonymous bodies in flight at the kill: counted wholly or not at all.
    anon_in_flight: Vec<[i64; URLS]>,
}

async fn post(client: &Client, base: &str, body: String) -> Result<Value, String> {
    let response = client
        .post(format!("{base}/v1/events?mode=async"))
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let value: Value = response.json().await.map_err(|e| e.to_string())?;
    if status == StatusCode::OK {
        Ok(value)
    } else {
        Err(format!("{status}: {value}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_heavy_async_stream_applies_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let (http, resp) = free_ports();
    let base = format!("http://127.0.0.1:{http}");
    let mut server = Server::spawn(&dir.path().join("data"), http, resp, &log);
    server.wait_healthy().await;
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let declared = client
        .put(format!("{base}/v1/views/pageviews"))
        .json(&json!({"type":"counter","mapping":{
            "filter":"type == \"pageview\"","key":"url","clustering":"hour(ts)","op":"incr 1"}}))
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success());

    // Heavy stream until the kill.
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let acked_total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        let acked_total = acked_total.clone();
        tasks.push(tokio::spawn(async move {
            let mut ledger = Ledger::default();
            let mut round = 0u64;
            loop {
                let with_ids = round.is_multiple_of(2);
                let (text, counts) = body(c, round, with_ids);
                let result = post(&client, &base, text).await;
                match (result, with_ids) {
                    (Ok(reply), _) => {
                        assert_eq!(reply["queued"], BODY_EVENTS as u64, "{reply}");
                        acked_total
                            .fetch_add(BODY_EVENTS as u64, std::sync::atomic::Ordering::Relaxed);
                        let into = if with_ids {
                            &mut ledger.ids
                        } else {
                            &mut ledger.anon
                        };
                        for (total, n) in into.iter_mut().zip(counts) {
                            *total += n;
                        }
                    }
                    (Err(_), true) => {
                        ledger.unanswered.push(round);
                        return ledger;
                    }
                    (Err(_), false) => {
                        ledger.anon_in_flight.push(counts);
                        return ledger;
                    }
                }
                round += 1;
                if Instant::now() > stop_at + Duration::from_secs(20) {
                    panic!("the node was not killed");
                }
            }
        }));
    }
    while Instant::now() < stop_at
        && acked_total.load(std::sync::atomic::Ordering::Relaxed) < ACKED_BEFORE_KILL
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backlog = metric(&client, &base, "speedlayer_event_queue_length").await;
    server.kill();
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.unwrap());
    }
    let acked: i64 = ledgers
        .iter()
        .map(|l| l.anon.iter().sum::<i64>() + l.ids.iter().sum::<i64>())
        .sum();
    eprintln!(
        "killed with {acked} events acknowledged, queue backlog before the kill: {backlog:?}"
    );
    assert!(acked > 0, "nothing was acknowledged before the kill");

    // Restart; clients re-send the bodies with ids that got no answer.
    let mut server = Server::spawn(&dir.path().join("data"), http, resp, &log);
    server.wait_healthy().await;
    for (c, ledger) in ledgers.iter_mut().enumerate() {
        for round in std::mem::take(&mut ledger.unanswered) {
            let (text, counts) = body(c, round, true);
            post(&client, &base, text)
                .await
                .expect("re-send after restart");
            for (total, n) in ledger.ids.iter_mut().zip(counts) {
                *total += n;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        server.assert_running();
        if metric(&client, &base, "speedlayer_event_queue_length").await == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&client, &base, "speedlayer_event_queue_lag_seconds").await,
        Some(0.0)
    );

    for (c, ledger) in ledgers.iter().enumerate() {
        for u in 0..URLS {
            for (kind, expected) in [("i", ledger.ids[u]), ("a", ledger.anon[u])] {
                let url = format!("/c{c}/{kind}{u}");
                let reply: Value = client
                    .get(format!("{base}/v1/views/pageviews/get"))
                    .query(&[("key", url.as_str()), ("clustering", HOUR)])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let got = reply["value"].as_i64().unwrap_or(0);
                if kind == "i" {
                    assert_eq!(
                        got, expected,
                        "{url}: events with ids must count exactly once"
                    );
                } else {
                    // A body in flight at the kill was queued wholly or not at all.
                    let options: Vec<i64> = std::iter::once(0)
                        .chain(ledger.anon_in_flight.iter().map(|counts| counts[u]))
                        .collect();
                    assert!(
                        options.iter().any(|extra| got == expected + extra),
                        "{url}: got {got}, acknowledged {expected}, in flight {options:?}"
                    );
                }
            }
        }
    }
}
