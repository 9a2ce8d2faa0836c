//! The controller: builds the network, starts the nodes and the workload clients, plays
//! the scenario, heals everything, lets the clients drain, reads every row from every
//! node, and hands the history to the checker.
//!
//! Every fault it makes is recorded in the history after it is in place and before it is
//! lifted, with the reachability it implies, so the checker knows for certain which
//! replicas a coordinator could reach during any interval.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checker::{self, Report};
use crate::history::{self, now_us, HistoryWriter, Record, VIEWS};
use crate::net::{self, LinkFaults, Network};
use crate::node::{NodeProcess, NodeSpec, CLUSTER_PORT, HTTP_PORT, RESP_PORT};
use crate::scenario::{Scenario, Step};
use crate::workload::{ClientConfig, Endpoint};

mod clients;
mod cluster;

use clients::{spawn_client, ClientProcess};
use cluster::{letter, Cluster};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The `speedlayer` binary under test.
    pub speedlayer: PathBuf,
    /// This harness's binary (started again as `client` in each client namespace).
    pub torture: PathBuf,
    /// Nodes.
    pub nodes: usize,
    /// Replication factor.
    pub replicas: usize,
    /// The scenario.
    pub scenario: Scenario,
    /// Where the history, the node logs and the report go.
    pub dir: PathBuf,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// Workers per client (one client per node).
    pub workers: usize,
    /// Client timeout per attempt (ms).
    pub timeout_ms: u64,
    /// Pause between one worker's operations (ms).
    pub think_ms: u64,
    /// Longest wait for convergence after a heal.
    pub converge_within: Duration,
    /// Broken switch: HTTP increments without producer ids (the checker must catch it).
    pub anonymous_retries: bool,
    /// Further `serve` flags (e.g. `--hinted-handoff off`, a broken configuration).
    pub serve_args: Vec<String>,
    /// Size of each node's tmpfs data directory (needed for the full-disk fault).
    pub tmpfs_mib: Option<u32>,
}

/// A run could not be carried out (as opposed to a run whose checker failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The network could not be built or changed.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// A node could not be started.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// Something else: a file, a client, a node that never came up.
    #[error("{0}")]
    Harness(String),
    /// The history could not be read back.
    #[error(transparent)]
    History(#[from] history::HistoryError),
}

fn harness(what: impl std::fmt::Display) -> RunError {
    RunError::Harness(what.to_string())
}

/// What a run produced.
pub struct RunOutcome {
    /// The checker's report.
    pub report: Report,
    /// Operations the clients could not get acknowledged even when draining.
    pub unresolved: usize,
    /// Where the history is.
    pub dir: PathBuf,
}

/// Every row the workload writes: (view, key).
pub fn rows() -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    for k in 0..4 {
        rows.push((history::COUNTER_VIEW, format!("k{k}")));
    }
    for k in 0..2 {
        rows.push((history::COUNTER_VIEW, format!("r{k}")));
        rows.push((history::SET_VIEW, format!("s{k}")));
        rows.push((history::MAX_VIEW, format!("m{k}")));
    }
    rows.push((history::HLL_VIEW, "h0".to_string()));
    rows.push((history::REGISTER_VIEW, "g0".to_string()));
    rows
}

/// Epoch length of the workload's views: one epoch for the whole run (and for a node
/// whose clock is an hour off).
const EPOCH_SECS: u64 = 1_000_000_000;

/// Carries out a run and checks its history. `progress` is told each step as it starts.
pub async fn run(
    config: &RunConfig,
    progress: &dyn Fn(usize, &Step),
) -> Result<RunOutcome, RunError> {
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| harness(format!("{}: {e}", config.dir.display())))?;
    let history_dir = config.dir.join("history");
    if history_dir.exists() {
        std::fs::remove_dir_all(&history_dir)
            .map_err(|e| harness(format!("{}: {e}", history_dir.display())))?;
    }
    std::fs::create_dir_all(&history_dir)
        .map_err(|e| harness(format!("{}: {e}", history_dir.display())))?;
    let stale = net::cleanup_stale();
    if !stale.is_empty() {
        eprintln!(
            "removed what earlier runs left behind: {}",
            stale.join(", ")
        );
    }
    let net = Network::create(config.nodes, config.nodes)?;
    let seeds: Vec<String> = (0..config.nodes)
        .map(|i| format!("{}:{CLUSTER_PORT}", net.node_addr(i)))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..config.nodes {
        let data_dir = config.dir.join(format!("data-{}", letter(i)));
        if data_dir.exists() {
            let _ = run_umount(&data_dir);
            std::fs::remove_dir_all(&data_dir)
                .map_err(|e| harness(format!("{}: {e}", data_dir.display())))?;
        }
        let log = config.dir.join(format!("node-{}.log", letter(i)));
        let _ = std::fs::remove_file(&log);
        nodes.push(NodeProcess::start(NodeSpec {
            bin: config.speedlayer.clone(),
            namespace: net.node_namespace(i),
            addr: net.node_addr(i),
            id: format!("n{i}"),
            data_dir,
            log,
            seeds: seeds.clone(),
            replicas: config.replicas,
            secret: "torture-cluster-secret".to_string(),
            extra: config.serve_args.clone(),
            tmpfs_mib: config.tmpfs_mib,
        })?);
    }
    let controller = HistoryWriter::create(&history_dir.join("controller.jsonl"))
        .map_err(|e| harness(format!("controller history: {e}")))?;
    let mut cluster = Cluster {
        nodes,
        net,
        links: LinkFaults::default(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(harness)?,
        controller,
        cycle: 1,
    };
    for i in 0..config.nodes {
        cluster.wait_up(i, Duration::from_secs(60)).await?;
    }
    declare_views(&cluster).await?;
    cluster.record(&Record::Setup {
        t: now_us(),
        nodes: config.nodes,
        replicas: config.replicas,
        scenario: config.scenario.to_string(),
        broken: broken_switches(config),
    })?;

    let endpoints: Vec<Endpoint> = (0..config.nodes)
        .map(|i| Endpoint {
            http: format!("http://{}:{HTTP_PORT}", cluster.net.node_addr(i)),
            resp: format!("{}:{RESP_PORT}", cluster.net.node_addr(i)),
        })
        .collect();
    let mut clients = Vec::new();
    for c in 0..config.nodes {
        let client = ClientConfig {
            name: format!("c{c}"),
            home: c,
            nodes: endpoints.clone(),
            workers: config.workers,
            seed: config.seed.wrapping_add(c as u64 * 7919),
            history: history_dir.join(format!("client-{c}.jsonl")),
            timeout_ms: config.timeout_ms,
            think_ms: config.think_ms,
            drain_secs: 60,
            anonymous_retries: config.anonymous_retries,
        };
        clients.push(spawn_client(
            config,
            &cluster.net.client_namespace(c),
            &client,
        )?);
    }

    let played = play(&mut cluster, &mut clients, config, progress).await;
    // Whatever happened, lift the faults and let the clients finish.
    let healed = cluster.heal_all().await;
    let mut unresolved = 0;
    for client in &mut clients {
        let line = client
            .tell("drain", "drained", Duration::from_secs(120))
            .await?;
        unresolved += line
            .trim_start_matches("drained")
            .trim()
            .parse::<usize>()
            .unwrap_or(0);
        let _ = client.child.wait().await;
    }
    played?;
    healed?;
    cluster.cycle += 1;
    cluster.converge(config.converge_within).await?;
    for (view, key) in rows() {
        for i in 0..config.nodes {
            for consistency in ["local", "quorum"] {
                let value = cluster
                    .read(i, view, &key, consistency)
                    .await
                    .map_err(|e| {
                        harness(format!(
                            "final {consistency} read of {view}/{key} via {}: {e}",
                            letter(i)
                        ))
                    })?;
                cluster.record(&Record::Final {
                    t: now_us(),
                    view: view.to_string(),
                    key: key.clone(),
                    node: i,
                    consistency: consistency.to_string(),
                    value,
                })?;
            }
        }
    }
    drop(cluster);
    let records = history::read_dir(&history_dir)?;
    let report = checker::check(&records);
    let _ = std::fs::write(config.dir.join("report.txt"), report.to_string());
    Ok(RunOutcome {
        report,
        unresolved,
        dir: config.dir.clone(),
    })
}

fn run_umount(dir: &Path) -> Result<(), net::NetError> {
    net::run("umount", &[&dir.display().to_string()])
}

fn broken_switches(config: &RunConfig) -> Vec<String> {
    let mut broken = Vec::new();
    if config.anonymous_retries {
        broken.push("anonymous-retries".to_string());
    }
    broken.extend(config.serve_args.iter().cloned());
    broken
}

async fn play(
    cluster: &mut Cluster,
    clients: &mut [ClientProcess],
    config: &RunConfig,
    progress: &dyn Fn(usize, &Step),
) -> Result<(), RunError> {
    for (index, step) in config.scenario.steps.iter().enumerate() {
        progress(index, step);
        if let Step::AssertConverged = step {
            cluster.heal_all().await?;
            for client in clients.iter_mut() {
                client
                    .tell("pause", "paused", Duration::from_secs(60))
                    .await?;
            }
            cluster.converge(config.converge_within).await?;
            for client in clients.iter_mut() {
                client
                    .tell("resume", "resumed", Duration::from_secs(10))
                    .await?;
            }
            cluster.cycle += 1;
        } else {
            cluster.apply(step).await?;
        }
    }
    Ok(())
}

async fn declare_views(cluster: &Cluster) -> Result<(), RunError> {
    for (view, value_type) in VIEWS {
        let url = format!("{}/v1/views/{view}", cluster.nodes[0].base());
        let response = cluster
            .http
            .put(&url)
            .json(&json!({"type": value_type, "epoch_secs": EPOCH_SECS}))
            .send()
            .await
            .map_err(|e| harness(format!("declaring {view}: {e}")))?;
        if !response.status().is_success() {
            return Err(harness(format!("declaring {view}: {}", response.status())));
        }
    }
    // Every node knows every view before the clients start.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..cluster.nodes.len() {
        for (view, _) in VIEWS {
            let url = format!("{}/v1/views/{view}", cluster.nodes[i].base());
            loop {
                match cluster.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => break,
                    _ if Instant::now() > deadline => {
                        return Err(harness(format!("node {} does not know {view}", letter(i))))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
    Ok(())
}
