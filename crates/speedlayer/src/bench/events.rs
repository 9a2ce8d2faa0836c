//! `speedlayer bench events`: NDJSON events/s through `POST /v1/events` on one node, sync
//! and async interleaved, with the pre-aggregation ratio (updates applied per update-log
//! entry). The client runs in the same process (it competes for the same cores, so the
//! figures are a floor for a remote client).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use speedlayer_api::ViewSpec;
use speedlayer_core::ValueType;
use speedlayer_events::MappingSpec;
use speedlayer_node::{Node, NodeConfig};

use super::median;
use crate::demo::Rng;

/// 2024-11-24T12:06:40Z; events spread over the following six hours.
const TS: u64 = 1_732_450_000;

/// What one round measured.
struct Round {
    /// Events acknowledged per second.
    acked_per_sec: f64,
    /// Events applied per second (async: until the queue drained).
    applied_per_sec: f64,
    /// Updates applied per update-log entry written.
    aggregation: f64,
}

/// The benchmark's views: the pageview example of the README.
fn views() -> Vec<(&'static str, ViewSpec)> {
    let mapping = |filter: Option<&str>, key: &str, clustering: Option<&str>, op: &str| {
        Some(MappingSpec {
            filter: filter.map(str::to_string),
            key: key.to_string(),
            clustering: clustering.map(str::to_string),
            op: op.to_string(),
        })
    };
    let view = |t: ValueType, m| {
        let mut spec = ViewSpec::new(t);
        spec.mapping = m;
        spec
    };
    let pv = Some("type == \"pageview\"");
    vec![
        (
            "pageviews",
            view(
                ValueType::Counter,
                mapping(pv, "url", Some("hour(ts)"), "incr 1"),
            ),
        ),
        (
            "uniques",
            view(
                ValueType::Hll,
                mapping(pv, "url", Some("hour(ts)"), "pfadd visitor"),
            ),
        ),
        (
            "last_seen",
            view(ValueType::Max, mapping(None, "visitor", None, "max ts")),
        ),
    ]
}

/// `bodies` NDJSON bodies of `per_body` pageviews: 1,000 urls, 100,000 visitors.
fn bodies(bodies: usize, per_body: usize) -> Vec<bytes::Bytes> {
    let mut rng = Rng::new(7);
    (0..bodies)
        .map(|_| {
            let mut out = String::with_capacity(per_body * 100);
            for _ in 0..per_body {
                let url = rng.next_u64() % 1000;
                let visitor = rng.next_u64() % 100_000;
                let ts = TS + rng.next_u64() % (6 * 3600);
                out.push_str(&format!(
                    "{{\"type\":\"pageview\",\"url\":\"/p{url}\",\"visitor\":\"v{visitor}\",\"ts\":{ts}}}\n"
                ));
            }
            bytes::Bytes::from(out)
        })
        .collect()
}

/// Runs the benchmark and prints its table.
pub async fn run(
    dir: &std::path::Path,
    rounds: usize,
    clients: usize,
    body_count: usize,
    per_body: usize,
) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(dir.join("node"));
    config.http = "127.0.0.1:0".parse()?;
    config.resp = "127.0.0.1:0".parse()?;
    config.views = views()
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    let node = Node::start(config).await.context("starting the node")?;
    let base = format!("http://{}", node.http_addr);
    let data = Arc::new(bodies(body_count, per_body));
    let events = (body_count * per_body) as f64;
    let progress = ProgressBar::new((rounds * 2) as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} rounds")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut sync, mut asynch) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for mode in ["sync", "async"] {
            progress.set_message(mode);
            let round = one_round(&node, &base, &data, clients, mode, events).await?;
            if mode == "sync" {
                sync.push(round);
            } else {
                asynch.push(round);
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    println!(
        "events through 3 mapped views (counter, hll, max): {body_count} bodies x {per_body} events, {clients} concurrent clients, {rounds} interleaved rounds, medians"
    );
    println!(
        "{:<6} {:>16} {:>16} {:>22}",
        "mode", "acked events/s", "applied events/s", "updates per log entry"
    );
    for (name, rounds) in [("sync", &sync), ("async", &asynch)] {
        let mut acked: Vec<f64> = rounds.iter().map(|r| r.acked_per_sec).collect();
        let mut applied: Vec<f64> = rounds.iter().map(|r| r.applied_per_sec).collect();
        let mut ratio: Vec<f64> = rounds.iter().map(|r| r.aggregation).collect();
        println!(
            "{:<6} {:>16.0} {:>16.0} {:>22.1}",
            name,
            median(&mut acked),
            median(&mut applied),
            median(&mut ratio)
        );
    }
    node.shutdown().await?;
    Ok(())
}

async fn one_round(
    node: &Node,
    base: &str,
    data: &Arc<Vec<bytes::Bytes>>,
    clients: usize,
    mode: &'static str,
    events: f64,
) -> anyhow::Result<Round> {
    let metrics = node.store.metrics();
    let (applied_before, logged_before) =
        (metrics.updates_applied.get(), metrics.logged_updates.get());
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, data, next) = (client.clone(), data.clone(), next.clone());
        let url = format!("{base}/v1/events?mode={mode}");
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = data.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("{}: {}", response.status(), response.text().await?);
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let acked = started.elapsed();
    let queue = node.store.event_queue();
    while !queue.is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let applied = started.elapsed();
    let logged = metrics.logged_updates.get() - logged_before;
    let updates = metrics.updates_applied.get() - applied_before;
    Ok(Round {
        acked_per_sec: events / acked.as_secs_f64(),
        applied_per_sec: events / applied.as_secs_f64(),
        aggregation: updates as f64 / logged.max(1) as f64,
    })
}
