//! The NATS JetStream source against a real `nats-server -js` and the real binary:
//! 20,000 published messages (events without ids, events with their producers' own ids,
//! re-published duplicates of those, non-matching events and malformed messages), the
//! node SIGKILLed mid-stream twice, and once the consumer deleted behind its back so the
//! whole stream is replayed. The per-url, per-hour counters must equal exactly what was
//! published, counting each id once and each id-less message once: acking before the
//! updates are durable loses events, forgetting the ids counts the replay twice,
//! applying newer messages before redelivered ones loses events (they fall out of the
//! counters' writer window).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::nats::{NatsClient, NatsServer};
use support::{free_ports, Server};

const STREAM: &str = "EVENTS";
const CONSUMER: &str = "speedlayer";
/// 2024-11-24T12:00:00Z, on an hour boundary.
const BASE_TS: i64 = 1_732_449_600;
const HOURS: i64 = 6;
const URLS: [&str; 8] = ["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h"];
const TOTAL: usize = 20_000;
/// Where the publishing phases end.
const PHASE_1: usize = 12_000;
const PHASE_2: usize = 16_000;
/// Acknowledged positions after which phase 1 SIGKILLs the node.
const PHASE_1_KILLS: [u64; 5] = [1_500, 3_500, 5_500, 7_500, 9_500];

/// One message to publish and what it should count for.
#[derive(Clone)]
struct Published {
    subject: String,
    payload: Vec<u8>,
    /// `(url, hour bucket)` the event counts in, if it is a valid pageview.
    counts_in: Option<(String, String)>,
    /// The producer's own id, if any.
    id: Option<(String, u64)>,
}

/// Deterministic xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn hour_bucket(ts: i64) -> String {
    // BASE_TS is 2024-11-24T12:00:00Z and HOURS keeps the day.
    format!("2024-11-24T{:02}", 12 + (ts - BASE_TS) / 3600)
}

/// The whole published sequence, in order.
fn messages() -> Vec<Published> {
    let malformed: BTreeMap<usize, &str> = [
        (7, "not json at all"),
        (1_000, r#"[1, 2, 3]"#),
        (5_001, r#"{"type":"pageview","url":"/a","ts":"yesterday"}"#),
        (
            9_999,
            r#"{"type":"pageview","url":"/b","ts":1732450000000}"#,
        ),
        (
            13_000,
            r#"{"type":"pageview","url":"/c","id":{"writer":"","seq":1}}"#,
        ),
        (17_500, r#"{"type":"pageview","#),
    ]
    .into_iter()
    .collect();
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut own_seq = [0u64; 2];
    // Re-publications of earlier messages that carry an id: (due position, message).
    let mut dups: Vec<(usize, Published)> = Vec::new();
    let mut out = Vec::with_capacity(TOTAL);
    while out.len() < TOTAL {
        let pos = out.len();
        if let Some(text) = malformed.get(&pos) {
            out.push(Published {
                subject: "events.bad".into(),
                payload: text.as_bytes().to_vec(),
                counts_in: None,
                id: None,
            });
            continue;
        }
        if let Some(i) = dups.iter().position(|d| d.0 <= pos) {
            out.push(dups.swap_remove(i).1);
            continue;
        }
        let url = URLS[rng.below(URLS.len() as u64) as usize];
        let ts = BASE_TS + rng.below((HOURS * 3600) as u64) as i64;
        let kind = if rng.below(20) == 0 {
            "click"
        } else {
            "pageview"
        };
        let mut event = json!({
            "type": kind, "url": url, "visitor": format!("v{}", rng.below(500)), "ts": ts,
        });
        let id = if rng.below(5) < 2 {
            let w = rng.below(2) as usize;
            own_seq[w] += 1;
            let writer = format!("app-{}", w + 1);
            event["id"] = json!({"writer": writer, "seq": own_seq[w]});
            Some((writer, own_seq[w]))
        } else {
            None
        };
        let counts_in = (kind == "pageview").then(|| (url.to_string(), hour_bucket(ts)));
        let published = Published {
            subject: format!("events.{kind}"),
            payload: event.to_string().into_bytes(),
            counts_in,
            id,
        };
        if published.id.is_some() {
            // One in four ids is sent again: mostly soon after, sometimes much later.
            match rng.below(8) {
                0 => dups.push((pos + 1 + rng.below(40) as usize, published.clone())),
                1 => dups.push((pos + 2_000 + rng.below(3_000) as usize, published.clone())),
                _ => {}
            }
        }
        out.push(published);
    }
    out
}

/// Exact counts per `(url, hour)` of `published`: each id once, each id-less event once.
fn expected(published: &[Published]) -> BTreeMap<(String, String), u64> {
    let mut seen = HashSet::new();
    let mut counts = BTreeMap::new();
    for p in published {
        let Some(cell) = &p.counts_in else { continue };
        if let Some(id) = &p.id {
            if !seen.insert(id.clone()) {
                continue;
            }
        }
        *counts.entry(cell.clone()).or_insert(0) += 1;
    }
    counts
}

/// The node's NATS flags. Small batches, so a kill lands between many batches; a short
/// ack wait.
fn source_flags(url: &str, mode: &str) -> Vec<String> {
    [
        "--nats-url",
        url,
        "--nats-stream",
        STREAM,
        "--nats-subject",
        "events.>",
        "--nats-consumer",
        CONSUMER,
        "--nats-batch",
        "50",
        "--nats-ack-wait",
        "2",
        "--nats-mode",
        mode,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Declares `pageviews`: a counter per url per hour, fed by pageview events.
async fn declare_pageviews(client: &Client, base: &str) {
    let declared = client
        .put(format!("{base}/v1/views/pageviews"))
        .json(&json!({
            "type": "counter", "epoch_secs": 3600,
            "mapping": {"filter": "type == \"pageview\"", "key": "url",
                        "clustering": "hour(ts)", "op": "incr 1"},
        }))
        .send()
        .await
        .expect("declare");
    assert!(declared.status().is_success(), "declare: {declared:?}");
}

/// A metric of the `nats` source from `/metrics` (0 when absent).
async fn source_metric(client: &Client, base: &str, name: &str) -> u64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    let prefix = format!("{name}{{source=\"nats\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn acked(client: &Client, base: &str) -> u64 {
    source_metric(client, base, "speedlayer_source_acked_position").await
}

/// Waits until the source acknowledged up to `seq`.
async fn wait_acked(server: &mut Server, client: &Client, base: &str, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        server.assert_running();
        let now = acked(client, base).await;
        if now >= seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the source acknowledged up to {now}, not {seq}, within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the source acknowledged up to `seq` and the node's event queue is empty
/// (in async mode an acknowledged batch is queued, and applied moments later).
async fn wait_settled(server: &mut Server, client: &Client, base: &str, seq: u64) {
    wait_acked(server, client, base, seq).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        server.assert_running();
        let text = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let queued = text
            .lines()
            .find_map(|l| l.strip_prefix("speedlayer_event_queue_length "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if queued == Some(0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the event queue did not drain in 20 s ({queued:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `(url, hour)` count the node reads.
async fn read_counts(client: &Client, base: &str) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for url in URLS {
        let response = client
            .get(format!("{base}/v1/views/pageviews/range"))
            .query(&[("key", url)])
            .send()
            .await
            .expect("range read");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("range JSON");
        for row in body["rows"].as_array().expect("rows") {
            let value = row["value"].as_u64().expect("counter value");
            if value > 0 {
                let hour = row["clustering"].as_str().expect("clustering").to_string();
                counts.insert((url.to_string(), hour), value);
            }
        }
    }
    counts
}

fn assert_counts(
    got: &BTreeMap<(String, String), u64>,
    want: &BTreeMap<(String, String), u64>,
    when: &str,
) {
    if got == want {
        return;
    }
    let mut diffs = Vec::new();
    for key in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (g, w) = (
            got.get(key).copied().unwrap_or(0),
            want.get(key).copied().unwrap_or(0),
        );
        if g != w {
            diffs.push(format!("{key:?}: read {g}, expected {w}"));
        }
    }
    let (g, w): (u64, u64) = (got.values().sum(), want.values().sum());
    panic!(
        "{when}: counts differ (read {g} in all, expected {w}):\n{}",
        diffs.join("\n")
    );
}

/// SIGKILLs the node once the source has acknowledged at least `after`; returns the
/// position it had acknowledged (as last seen) when killed.
async fn kill_after(server: &mut Server, client: &Client, base: &str, after: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        server.assert_running();
        let now = acked(client, base).await;
        if now >= after {
            server.kill();
            return now;
        }
        assert!(Instant::now() < deadline, "acknowledged only {now} in 20 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_events_count_exactly_once_across_kills_and_replays() {
    exactly_once_across_kills_and_replays("sync").await;
}

/// The same with `--nats-mode async`: a batch is acknowledged once it is durable in the
/// node's event queue, and applied from there (also after a SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_events_count_exactly_once_in_async_mode() {
    exactly_once_across_kills_and_replays("async").await;
}

async fn exactly_once_across_kills_and_replays(mode: &str) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(&dir.path().join("jetstream"), &dir.path().join("nats.log"));
    let mut nc = NatsClient::connect(nats.port);
    nc.create_stream(STREAM, &["events.>"]);

    let data_dir = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let (port, resp_port) = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let flags = source_flags(&nats.url(), mode);
    let spawn = || Server::spawn_with(&data_dir, port, resp_port, &log, &flags);

    let mut server = spawn();
    server.wait_healthy().await;
    declare_pageviews(&client, &base).await;

    let all = messages();
    let pairs: Vec<(String, Vec<u8>)> = all
        .iter()
        .map(|p| (p.subject.clone(), p.payload.clone()))
        .collect();
    let ids = all.iter().filter(|p| p.id.is_some()).count();
    let unique_ids = all
        .iter()
        .filter_map(|p| p.id.clone())
        .collect::<HashSet<_>>()
        .len();
    eprintln!(
        "publishing {TOTAL} messages: {} without id, {ids} with an id ({} re-sent), {} malformed",
        all.iter()
            .filter(|p| p.id.is_none() && p.subject != "events.bad")
            .count(),
        ids - unique_ids,
        all.iter().filter(|p| p.subject == "events.bad").count(),
    );

    // Phase 1: publish, then SIGKILL the node mid-stream several times (each kill just
    // after an ack, while the next batch is on its way), restarting it each time.
    let seqs_1 = nc.publish_all(&pairs[..PHASE_1]);
    let last_1 = seqs_1[PHASE_1 - 1];
    for (i, after) in PHASE_1_KILLS.into_iter().enumerate() {
        let at_kill = kill_after(&mut server, &client, &base, after).await;
        let info = nc.consumer_info(STREAM, CONSUMER);
        eprintln!(
            "kill {} with {at_kill} acknowledged of {last_1}; consumer: delivered {}, ack floor {}, unacked {}",
            i + 1,
            info["delivered"]["stream_seq"],
            info["ack_floor"]["stream_seq"],
            info["num_ack_pending"]
        );
        assert!(
            at_kill < last_1,
            "the kill should land mid-stream (acknowledged {at_kill} of {last_1})"
        );
        server = spawn();
        server.wait_healthy().await;
    }
    wait_settled(&mut server, &client, &base, last_1).await;
    assert_counts(
        &read_counts(&client, &base).await,
        &expected(&all[..PHASE_1]),
        "after SIGKILLs and restarts",
    );

    // Phase 2: the node is down while more is published, and a "crashed consumer" (this
    // test) took a partial batch from the durable consumer without acking it. The node
    // must apply those messages before newer ones: acking newer ones first (AckAll)
    // would acknowledge them unapplied.
    server.kill();
    let seqs_2 = nc.publish_all(&pairs[PHASE_1..PHASE_2]);
    let last_2 = seqs_2[seqs_2.len() - 1];
    let taken = nc.pull_without_ack(STREAM, CONSUMER, 20);
    assert_eq!(taken.first(), Some(&(last_1 + 1)), "{taken:?}");
    server = spawn();
    server.wait_healthy().await;
    wait_settled(&mut server, &client, &base, last_2).await;
    assert_counts(
        &read_counts(&client, &base).await,
        &expected(&all[..PHASE_2]),
        "after a restart with a partial batch delivered but not acknowledged",
    );

    // Phase 3: an operator deletes the consumer: the restarted node creates it afresh and
    // replays the whole stream, which must count nothing twice, while the rest is
    // published; the node is SIGKILLed once more during the replay.
    server.kill();
    nc.delete_consumer(STREAM, CONSUMER);
    server = spawn();
    server.wait_healthy().await;
    let seqs_3 = nc.publish_all(&pairs[PHASE_2..]);
    assert!(seqs_3.iter().all(|&s| s > last_2));
    let last = seqs_3[seqs_3.len() - 1];
    let at_kill = kill_after(&mut server, &client, &base, 8_000).await;
    eprintln!("replay killed with {at_kill} acknowledged of {last}");
    assert!(at_kill < last, "the kill should land mid-replay");
    server = spawn();
    server.wait_healthy().await;
    wait_settled(&mut server, &client, &base, last).await;
    let want = expected(&all);
    assert_counts(
        &read_counts(&client, &base).await,
        &want,
        "after a full replay and a SIGKILL during it",
    );
    // Every malformed message was seen, logged and skipped; none blocked the stream.
    let malformed = source_metric(&client, &base, "speedlayer_source_malformed_total").await;
    assert!(malformed > 0, "the last run counted malformed messages");
    let serve_log = server.log_text();
    let seqs: Vec<u64> = seqs_1
        .iter()
        .chain(&seqs_2)
        .chain(&seqs_3)
        .copied()
        .collect();
    for (p, seq) in all.iter().zip(&seqs) {
        if p.subject == "events.bad" {
            assert!(
                serve_log.contains(&format!("stream_seq={seq} subject=events.bad")),
                "malformed message {seq} was not reported"
            );
        }
    }
    eprintln!(
        "{mode}: exact counts: {} pageviews in {} (url, hour) cells; {:.1} s",
        want.values().sum::<u64>(),
        want.len(),
        started.elapsed().as_secs_f64()
    );
    server.assert_running();
}

/// The node's source must survive the NATS server going away mid-stream: the session
/// ends at once on the lost connection, reconnects when the server is back, resumes at
/// the ack floor, and the counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_source_survives_a_nats_server_restart() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, nats_log) = (dir.path().join("jetstream"), dir.path().join("nats.log"));
    let mut nats = NatsServer::start(&store, &nats_log);
    let mut nc = NatsClient::connect(nats.port);
    nc.create_stream(STREAM, &["events.>"]);

    let (port, resp_port) = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let flags = source_flags(&nats.url(), "sync");
    let log = dir.path().join("serve.log");
    let mut server = Server::spawn_with(&dir.path().join("data"), port, resp_port, &log, &flags);
    server.wait_healthy().await;
    declare_pageviews(&client, &base).await;

    let all = messages();
    let part: Vec<(String, Vec<u8>)> = all[..8_000]
        .iter()
        .map(|p| (p.subject.clone(), p.payload.clone()))
        .collect();
    let seqs_1 = nc.publish_all(&part[..5_000]);
    wait_acked(&mut server, &client, &base, 1_500).await;
    nats.stop();
    let at_stop = acked(&client, &base).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats = NatsServer::start_on(nats.port, &store, &nats_log);
    let mut nc = NatsClient::connect(nats.port);
    let seqs_2 = nc.publish_all(&part[5_000..]);
    assert_eq!(seqs_2[0], seqs_1[seqs_1.len() - 1] + 1);
    let last = seqs_2[seqs_2.len() - 1];
    wait_acked(&mut server, &client, &base, last).await;
    assert_counts(
        &read_counts(&client, &base).await,
        &expected(&all[..8_000]),
        "after a nats-server restart",
    );
    let restarts = source_metric(&client, &base, "speedlayer_source_restarts_total").await;
    assert!(restarts >= 1, "the source noticed the lost connection");
    eprintln!(
        "nats-server stopped with {at_stop} of {} acknowledged; exact counts after {restarts} session restart(s); {:.1} s",
        seqs_1[seqs_1.len() - 1],
        started.elapsed().as_secs_f64()
    );
    server.assert_running();
}
