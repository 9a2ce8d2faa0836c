//! `speedlayer demo`: a local 3-node cluster, a generated pageview stream, and a live
//! summary that says which node served what.
//!
//! The three nodes run in this process but talk over real sockets (HTTP, RESP and the
//! internode protocol), with 3 replicas and quorum reads and writes. Everything goes
//! through the real HTTP API, exactly as a user's stream job would: the demo is also a
//! smoke test of the product.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use speedlayer_cluster::ClusterConfig;
use speedlayer_events::bucket::Bucket;
use speedlayer_node::{Node, NodeConfig};

use crate::cli::DemoArgs;

mod control;

use control::DemoNodes;

const PAGES: [&str; 12] = [
    "/",
    "/pricing",
    "/docs",
    "/docs/quickstart",
    "/blog",
    "/blog/lambda-architecture",
    "/about",
    "/careers",
    "/docs/crdts",
    "/login",
    "/signup",
    "/contact",
];
const VISITORS: u64 = 5_000;
const BATCH: usize = 500;

/// A tiny deterministic generator (xorshift64*): the demo needs no cryptographic RNG.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Zipf-like pick in `0..n`: low indexes are much more frequent.
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.next_u64() as usize % n;
        let b = self.next_u64() as usize % n;
        a.min(b)
    }
}

/// `YYYY-MM-DDTHH` (UTC) of a Unix time: the demo's hourly clustering key, written as
/// a mapping's `hour(ts)` writes it (so batch rows and realtime rows meet).
pub fn hour_bucket(ts_secs: u64) -> String {
    Bucket::Hour.format(i64::try_from(ts_secs).unwrap_or(i64::MAX))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the demo until Ctrl-C or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let listener = control::bind().await?;
    let dashboard = listener.local_addr()?;
    let configs = local_cluster_configs(dir.path(), NODES, |_| {})?;
    let nodes = start_nodes(&configs).await?;
    let cluster_addrs: Vec<SocketAddr> = configs.iter().map(|c| c.cluster.listen).collect();
    let resp_addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.resp_addr).collect();
    let demo = Arc::new(DemoNodes::new(nodes, configs));
    control::serve(listener, demo.clone());
    let bases = demo.bases.clone();
    let base = bases[0].clone();
    println!(
        "speedlayer demo: open the dashboard at {}",
        control::dashboard_url(dashboard)
    );
    println!(
        "  a 3-node cluster (3 replicas, quorum reads and writes; data in {}); stop and start nodes from the page",
        dir.path().display()
    );
    for (i, base) in bases.iter().enumerate() {
        println!(
            "  n{i}: HTTP {base}  Redis {}  cluster {}",
            resp_addrs[i], cluster_addrs[i]
        );
    }
    let ctl = if dashboard.port() == 7780 {
        "speedlayer ctl status".to_owned()
    } else {
        format!("speedlayer ctl --node {dashboard} status")
    };
    println!("try: {ctl}      (or cargo run --release -- ctl ...; the dashboard's port forwards reads to a running node)");
    println!("     curl '{base}/v1/views/pageviews/range?key=/docs'");
    println!(
        "     redis-cli -p {} HGETALL pageviews:/docs      (Ctrl-C to stop)\n",
        resp_addrs[0].port()
    );
    let client = reqwest::Client::new();
    for (view, kind) in [
        ("pageviews", "counter"),
        ("uniques", "hll"),
        ("last_seen", "max"),
    ] {
        let response = client
            .put(format!("{base}/v1/views/{view}"))
            .json(&json!({ "type": kind, "epoch_secs": 3600 }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("declaring {view}: {}", response.text().await?);
        }
    }
    // The batch layer's view of the hours before this one; the stream continues from its
    // boundary. Imported through n1: any node coordinates an import.
    let boundary = now_secs() / 3600 * 3600;
    let rows = import_history(&client, &bases[1], boundary).await?;
    println!(
        "batch layer: imported {rows} rows covering the {HISTORY_HOURS} hours before {} UTC (through n1); answers are batch ⊕ realtime since then\n",
        hour_bucket(boundary)
    );
    // Producer p sends its batches to node p mod 3: every node coordinates writes.
    let served: Arc<Vec<AtomicU64>> = Arc::new((0..NODES).map(|_| AtomicU64::new(0)).collect());
    let producers = 3 * 2;
    let mut tasks = Vec::new();
    for p in 0..producers {
        tasks.push(tokio::spawn(produce(
            client.clone(),
            bases.clone(),
            served.clone(),
            p as usize % NODES,
            args.rate / producers,
            p + 1,
        )));
    }
    let sent = || {
        served
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs(d));
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        for task in &tasks {
            if task.is_finished() {
                bail!("an event producer stopped; see the log above");
            }
        }
        let events = sent();
        let per_node: Vec<String> = served
            .iter()
            .enumerate()
            .map(|(i, s)| format!("n{i} {}", s.load(Ordering::Relaxed)))
            .collect();
        bar.set_message(format!(
            "{events} events acknowledged at quorum ({:.0}/s; coordinated by {})",
            events as f64 / started.elapsed().as_secs_f64().max(0.001),
            per_node.join(", ")
        ));
        let table = summary(&client, &bases, &demo).await;
        // `println` on the bar prints nothing when stdout is not a terminal.
        bar.suspend(|| println!("{table}"));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    bar.finish_and_clear();
    for task in tasks {
        task.abort();
    }
    println!(
        "{} events acknowledged, each durable on at least 2 of 3 replicas; stopping.",
        sent()
    );
    let retried = RETRIED.load(Ordering::Relaxed);
    if retried > 0 {
        println!("({retried} batch write(s) answered 503 unavailable or found their node stopped, and were retried with the same ids)");
    }
    demo.shutdown().await?;
    drop(dir);
    Ok(())
}

/// Hours of history the demo's batch layer imports.
const HISTORY_HOURS: u64 = 3;

/// Imports made-up batch views of `pageviews` and `uniques` for the hours before
/// `boundary` (as a batch job over the master dataset would), through `base`; the number
/// of rows imported.
async fn import_history(
    client: &reqwest::Client,
    base: &str,
    boundary: u64,
) -> anyhow::Result<usize> {
    let mut rng = Rng::new(42);
    let mut imported = 0;
    for view in ["pageviews", "uniques"] {
        let mut body = String::new();
        for (i, page) in PAGES.iter().enumerate() {
            for h in 1..=HISTORY_HOURS {
                let views = 20_000 / (i as u64 + 1) + rng.next_u64() % 500;
                let value = if view == "pageviews" {
                    views
                } else {
                    views / 3
                };
                let row = json!({ "key": page, "clustering": hour_bucket(boundary - h * 3600), "value": value });
                body.push_str(&format!("{row}\n"));
                imported += 1;
            }
        }
        let response = client
            .post(format!(
                "{base}/v1/views/{view}/batch?covers_until={boundary}"
            ))
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "importing the batch view of {view}: {}",
                response.text().await?
            );
        }
    }
    Ok(imported)
}

/// Nodes in the demo cluster.
const NODES: usize = 3;

/// Shuts down the nodes of [`start_local_cluster`] and waits until they have let go of
/// their stores: the cluster's background loops end within one tick of the stop signal,
/// and the data directory must outlive them.
pub async fn stop_local_cluster(nodes: Vec<Node>) -> anyhow::Result<()> {
    for node in nodes {
        node.shutdown().await?;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    Ok(())
}

/// Starts `n` nodes in this process, in `dir/n0..`, on free loopback ports, seeded with
/// each other (3 replicas, the defaults), with `tweak` applied to each configuration;
/// returns once every node sees every other up, with their cluster addresses.
pub async fn start_local_cluster(
    dir: &std::path::Path,
    n: usize,
    tweak: impl Fn(&mut NodeConfig),
) -> anyhow::Result<(Vec<Node>, Vec<SocketAddr>)> {
    let configs = local_cluster_configs(dir, n, tweak)?;
    let nodes = start_nodes(&configs).await?;
    Ok((nodes, configs.iter().map(|c| c.cluster.listen).collect()))
}

/// The configurations of [`start_local_cluster`]'s nodes (HTTP and Redis on ephemeral
/// ports, the cluster ports chosen now, since every node must know them all).
fn local_cluster_configs(
    dir: &std::path::Path,
    n: usize,
    tweak: impl Fn(&mut NodeConfig),
) -> anyhow::Result<Vec<NodeConfig>> {
    let cluster_addrs = free_addrs(n)?;
    let mut configs = Vec::new();
    for (i, addr) in cluster_addrs.iter().enumerate() {
        let mut config = NodeConfig::new(dir.join(format!("n{i}")));
        config.http = "127.0.0.1:0".parse()?;
        config.resp = "127.0.0.1:0".parse()?;
        config.node_id = Some(format!("n{i}"));
        config.cluster = ClusterConfig::single(*addr);
        if n > 1 {
            config.cluster.seeds = cluster_addrs.clone();
        }
        tweak(&mut config);
        configs.push(config);
    }
    Ok(configs)
}

/// Starts a node per configuration; returns once every node sees every other up.
async fn start_nodes(configs: &[NodeConfig]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let node = Node::start(config.clone())
            .await
            .with_context(|| format!("starting node n{i}"))?;
        nodes.push(node);
    }
    wait_for_peers(&nodes).await?;
    Ok(nodes)
}

/// `n` free loopback addresses (bound, read, released: the nodes must know each other's
/// internode address before any of them starts).
fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("finding free ports")?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?)
}

/// Batch writes answered 503 and retried (reported at the end).
static RETRIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Waits until every node sees every other up (the failure detector's first pings).
async fn wait_for_peers(nodes: &[Node]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all_up = nodes.iter().all(|n| {
            n.cluster
                .status()
                .nodes
                .iter()
                .all(|member| member.state == "up")
        });
        if all_up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the demo nodes did not see each other within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends batches of generated events at `rate` per second, to node `home` and, while
/// that node is stopped (from the dashboard), to the next running one.
async fn produce(
    client: reqwest::Client,
    bases: Vec<String>,
    served: Arc<Vec<AtomicU64>>,
    home: usize,
    rate: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let pause = Duration::from_secs_f64(BATCH as f64 / rate.max(1) as f64);
    let mut writer_seq = 0u64;
    loop {
        let tick = Instant::now();
        let ts = now_secs();
        let hour = hour_bucket(ts);
        let (mut views, mut uniques, mut seen) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..BATCH {
            writer_seq += 1;
            let page = PAGES[rng.skewed(PAGES.len())];
            let visitor = format!("v{}", rng.next_u64() % VISITORS);
            let id = json!({ "writer": format!("demo-{seed}"), "seq": writer_seq });
            views
                .push(json!({ "key": page, "clustering": hour, "op": "incr", "ts": ts, "id": id }));
            uniques.push(json!({ "key": page, "clustering": hour, "op": "pfadd", "members": [visitor], "ts": ts }));
            seen.push(json!({ "key": visitor, "op": "max", "value": ts, "ts": ts }));
        }
        let mut node = home;
        for (view, body) in [
            ("pageviews", views),
            ("uniques", uniques),
            ("last_seen", seen),
        ] {
            // A 503 (too few replicas answered in time: a stopped peer, or peers on an
            // overloaded machine missing the 2 s RPC deadline) is retried with the same
            // body, and a node that does not answer (stopped) is replaced by the next:
            // the ids and the idempotent types make a retry count once.
            loop {
                let sent = client
                    .post(format!("{}/v1/views/{view}/update", bases[node]))
                    .json(&body)
                    .send()
                    .await;
                let response = match sent {
                    Ok(response) => response,
                    Err(_) => {
                        RETRIED.fetch_add(1, Ordering::Relaxed);
                        node = (node + 1) % bases.len();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    RETRIED.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                if !response.status().is_success() {
                    bail!("writing {view}: {}", response.text().await?);
                }
                break;
            }
        }
        served[node].fetch_add(BATCH as u64, Ordering::Relaxed);
        if let Some(rest) = pause.checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
}

/// A node's JSON answer to a read, or `{"detail": why}` when the node could not be
/// asked (stopped) or answered something else than JSON: shown as an error, never as 0.
async fn read_json(request: reqwest::RequestBuilder) -> serde_json::Value {
    match request.send().await {
        Ok(response) => match response.json().await {
            Ok(answer) => answer,
            Err(e) => json!({ "detail": format!("unreadable answer: {e}") }),
        },
        Err(e) => json!({ "detail": format!("node unreachable: {e}") }),
    }
}

async fn summary(client: &reqwest::Client, bases: &[String], demo: &DemoNodes) -> String {
    let hour = hour_bucket(now_secs());
    let since = hour_bucket(now_secs() - HISTORY_HOURS * 3600);
    let mut boundary = 0;
    let mut rows = Vec::new();
    for (i, page) in PAGES.into_iter().enumerate() {
        // Each row is read through another coordinator.
        let reader = i % bases.len();
        let base = &bases[reader];
        let views = read_json(
            client
                .get(format!("{base}/v1/views/pageviews/get"))
                .query(&[("key", page), ("clustering", hour.as_str())]),
        )
        .await;
        let uniques = read_json(
            client
                .get(format!("{base}/v1/views/uniques/get"))
                .query(&[("key", page), ("clustering", hour.as_str())]),
        )
        .await;
        let history = read_json(
            client
                .get(format!("{base}/v1/views/pageviews/range"))
                .query(&[
                    ("key", page),
                    ("from", since.as_str()),
                    ("to", hour.as_str()),
                ]),
        )
        .await;
        if let Some(b) = history["boundary"].as_u64() {
            boundary = b;
        }
        let owners = demo.owners(page.as_bytes()).await;
        rows.push((
            page,
            Cell::of(&views, "value"),
            Cell::of(&uniques, "value"),
            Cell::of(&history, "total"),
            reader,
            owners.first().cloned().unwrap_or_default(),
        ));
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.count()));
    let mut out = format!(
        "\ntop pages, hour {hour} UTC   pageviews  distinct (hll)  since {since}  read via  first owner\n"
    );
    for (page, views, uniques, history, reader, owner) in rows.iter().take(6) {
        out.push_str(&format!(
            "  {page:<24} {views:>10}  {uniques:>14}  {history:>19}  n{reader:<7} {owner}\n"
        ));
    }
    out.push_str(&format!(
        "  (pageviews since {since}: batch view before {} UTC ⊕ realtime epochs since, one boundary per answer)\n",
        hour_bucket(boundary)
    ));
    let failed: Vec<&str> = rows
        .iter()
        .flat_map(|row| [&row.1, &row.2, &row.3])
        .filter_map(Cell::error)
        .collect();
    if let Some(first) = failed.first() {
        out.push_str(&format!(
            "  ({} read(s) failed and show as 'error'; the first: {first})\n",
            failed.len()
        ));
    }
    out
}

/// One number of the live table, or why it could not be read: a failed read is shown
/// as an error, never as 0.
enum Cell {
    /// The value read.
    Count(i64),
    /// The node's error answer.
    Error(String),
}

impl Cell {
    /// The integer `field` of a node's answer, or its error.
    fn of(answer: &serde_json::Value, field: &str) -> Cell {
        match answer[field].as_i64() {
            Some(n) => Cell::Count(n),
            None => Cell::Error(match answer.get("detail").and_then(|d| d.as_str()) {
                Some(detail) => detail.to_owned(),
                None => format!("no integer '{field}' in {answer}"),
            }),
        }
    }

    /// The value, or 0 when the read failed (for ordering only).
    fn count(&self) -> i64 {
        match self {
            Cell::Count(n) => *n,
            Cell::Error(_) => 0,
        }
    }

    /// Why the read failed, if it did.
    fn error(&self) -> Option<&str> {
        match self {
            Cell::Count(_) => None,
            Cell::Error(e) => Some(e),
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Count(n) => n.to_string().fmt(f),
            Cell::Error(_) => "error".fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hour_bucket;

    #[test]
    fn hour_buckets_are_utc_calendar_hours() {
        assert_eq!(hour_bucket(0), "1970-01-01T00");
        assert_eq!(hour_bucket(1_732_450_000), "2024-11-24T12");
        assert_eq!(hour_bucket(951_782_400), "2000-02-29T00");
    }
}
