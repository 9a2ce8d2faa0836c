//! The controller: builds the network, starts the nodes and the workload clients, plays
//! the scenario, heals everything, lets the clients drain, reads every row from every
//! node, and hands the history to the checker.
//!
//! Every fault it makes is recorded in the history after it is in place and before it is
//! lifted, with the reachability it implies, so the checker knows for certain which
//! replicas a coordinator could reach during any interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::checker::{self, normalise, Report};
use crate::history::{self, now_us, HistoryWriter, Record, VIEWS};
use crate::net::{self, LinkFaults, Network};
use crate::node::{NodeProcess, NodeSpec, CLUSTER_PORT, HTTP_PORT, RESP_PORT};
use crate::scenario::{NodeIx, Scenario, Step};
use crate::workload::{ClientConfig, Endpoint};

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

/// A client process and its control pipes.
struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    async fn tell(
        &mut self,
        command: &str,
        answer: &str,
        within: Duration,
    ) -> Result<String, RunError> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| harness(format!("client {command}: {e}")))?;
        let line = tokio::time::timeout(within, self.stdout.next_line())
            .await
            .map_err(|_| {
                harness(format!(
                    "client did not answer '{command}' within {within:?}"
                ))
            })?
            .map_err(|e| harness(format!("client {command}: {e}")))?
            .ok_or_else(|| harness(format!("client exited instead of answering '{command}'")))?;
        if !line.starts_with(answer) {
            return Err(harness(format!("client answered '{line}' to '{command}'")));
        }
        Ok(line)
    }
}

/// The cluster under test and what has been done to it.
struct Cluster {
    // Declared first so nodes (and their tmpfs mounts) go before the network.
    nodes: Vec<NodeProcess>,
    net: Network,
    links: LinkFaults,
    http: reqwest::Client,
    controller: HistoryWriter,
    cycle: usize,
}

impl Cluster {
    fn alive(&self) -> Vec<bool> {
        self.nodes
            .iter()
            .map(|n| n.is_running() && !n.is_paused())
            .collect()
    }

    fn record(&mut self, record: &Record) -> Result<(), RunError> {
        self.controller
            .write(record)
            .map_err(|e| harness(format!("controller history: {e}")))
    }

    fn record_fault(&mut self, step: &Step) -> Result<(), RunError> {
        let alive = self.alive();
        self.record_state(&step.to_string(), alive)
    }

    fn record_state_named(&mut self, step: &str) -> Result<(), RunError> {
        let alive = self.alive();
        self.record_state(step, alive)
    }

    /// Records the fault state `step` leaves: the current links and `alive`. A step that
    /// lifts a fault records the state it will leave before it acts, so the history never
    /// claims a fault that is already gone, only (briefly) health that is not yet back.
    fn record_state(&mut self, step: &str, alive: Vec<bool>) -> Result<(), RunError> {
        let n = self.nodes.len();
        let reach = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        if !alive[i] || !alive[j] {
                            Some(false)
                        } else {
                            self.links.reach(i, j)
                        }
                    })
                    .collect()
            })
            .collect();
        let record = Record::Fault {
            t: now_us(),
            cycle: self.cycle,
            step: step.to_string(),
            reach,
            alive,
        };
        self.record(&record)
    }

    async fn healthy(&self, i: NodeIx) -> bool {
        let url = format!("{}/health", self.nodes[i].base());
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }

    /// Waits until node `i` answers `/health` and every other running node sees it up.
    async fn wait_up(&self, i: NodeIx, within: Duration) -> Result<(), RunError> {
        let deadline = Instant::now() + within;
        while !self.healthy(i).await {
            if Instant::now() > deadline {
                return Err(harness(format!(
                    "node {} did not answer /health within {within:?} (log: {})",
                    letter(i),
                    self.nodes[i].log_path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let addr = format!("{}:{CLUSTER_PORT}", self.net.node_addr(i));
        for j in 0..self.nodes.len() {
            if j == i || !self.nodes[j].is_running() || self.nodes[j].is_paused() {
                continue;
            }
            loop {
                let url = format!("{}/v1/cluster", self.nodes[j].base());
                let seen = match self.http.get(&url).send().await {
                    Ok(r) => r.json::<serde_json::Value>().await.ok().is_some_and(|v| {
                        v["nodes"].as_array().is_some_and(|nodes| {
                            nodes
                                .iter()
                                .any(|n| n["addr"] == addr.as_str() && n["state"] == "up")
                        })
                    }),
                    Err(_) => false,
                };
                if seen {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(harness(format!(
                        "node {} did not see {} up within {within:?}",
                        letter(j),
                        letter(i)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn apply(&mut self, step: &Step) -> Result<(), RunError> {
        let wait_up = Duration::from_secs(60);
        match step {
            Step::Kill(n) => self.nodes[*n].kill(),
            Step::Restart(n) => {
                let skew = self.nodes[*n].skew();
                self.nodes[*n].restart(skew)?;
                self.record_fault(step)?;
                return self.wait_up(*n, wait_up).await;
            }
            Step::Pause(n) => self.nodes[*n].pause()?,
            Step::Resume(n) => {
                let mut alive = self.alive();
                alive[*n] = self.nodes[*n].is_running();
                self.record_state(&step.to_string(), alive)?;
                return self.nodes[*n].resume().map_err(RunError::from);
            }
            Step::Partition(groups) => {
                let mut links = self.links.clone();
                links.partition(groups);
                self.set_links(links)?;
            }
            Step::Bridge(x) => {
                let n = self.nodes.len();
                let others: Vec<Vec<NodeIx>> = (0..n).filter(|i| i != x).map(|i| vec![i]).collect();
                let mut links = self.links.clone();
                links.partition(&others);
                self.set_links(links)?;
            }
            Step::Drop(x, y) => {
                let mut links = self.links.clone();
                links.drops.insert((*x, *y));
                self.set_links(links)?;
            }
            Step::Loss(x, p) => {
                let mut links = self.links.clone();
                links.loss.insert(*x, *p);
                self.set_links(links)?;
            }
            Step::Cut(x) => {
                let mut links = self.links.clone();
                links.cut.insert(*x);
                self.set_links(links)?;
            }
            Step::Heal => {
                self.links = LinkFaults::default();
                self.record_fault(step)?;
                return Ok(self.net.apply(&LinkFaults::default())?);
            }
            Step::FillDisk(n) => self.nodes[*n].fill_disk()?,
            Step::FreeDisk(n) => {
                self.record_fault(step)?;
                self.nodes[*n].free_disk();
                return Ok(());
            }
            Step::Skew(n, secs) => {
                self.nodes[*n].restart(Some(*secs))?;
                self.record_fault(step)?;
                return self.wait_up(*n, wait_up).await;
            }
            Step::Unskew(n) => {
                self.nodes[*n].restart(None)?;
                self.record_fault(step)?;
                return self.wait_up(*n, wait_up).await;
            }
            Step::RollingRestart => {
                for n in 0..self.nodes.len() {
                    let skew = self.nodes[n].skew();
                    self.nodes[n].kill();
                    self.record_state_named(&format!("{step}: {}", Step::Kill(n)))?;
                    self.nodes[n].restart(skew)?;
                    self.record_state_named(&format!("{step}: {}", Step::Restart(n)))?;
                    self.wait_up(n, wait_up).await?;
                }
                return Ok(());
            }
            Step::Wait(d) => {
                tokio::time::sleep(*d).await;
                return Ok(());
            }
            Step::AssertConverged => return Ok(()),
        }
        self.record_fault(step)
    }

    fn set_links(&mut self, links: LinkFaults) -> Result<(), RunError> {
        self.net.apply(&links)?;
        self.links = links;
        Ok(())
    }

    /// Every node's `local` answer for every workload row, by row.
    async fn local_answers(&self) -> BTreeMap<(String, String), Vec<(NodeIx, String)>> {
        let mut answers: BTreeMap<(String, String), Vec<(NodeIx, String)>> = BTreeMap::new();
        for (view, key) in rows() {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() || self.nodes[i].is_paused() {
                    continue;
                }
                let value = self.read(i, view, &key, "local").await;
                let shown = value.map_or_else(|e| format!("error: {e}"), |v| normalise(&v));
                answers
                    .entry((view.to_string(), key.clone()))
                    .or_default()
                    .push((i, shown));
            }
        }
        answers
    }

    async fn read(
        &self,
        i: NodeIx,
        view: &str,
        key: &str,
        consistency: &str,
    ) -> Result<serde_json::Value, String> {
        let url = format!(
            "{}/v1/views/{view}/get?key={key}&consistency={consistency}",
            self.nodes[i].base()
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status} {body}"));
        }
        Ok(body["value"].clone())
    }

    /// Waits until every running node's `local` answers agree; records the outcome.
    async fn converge(&mut self, within: Duration) -> Result<bool, RunError> {
        let started = Instant::now();
        loop {
            let answers = self.local_answers().await;
            let differing: Vec<String> = answers
                .iter()
                .filter(|(_, a)| {
                    a.iter().any(|(_, v)| v.starts_with("error"))
                        || a.iter().any(|(_, v)| *v != a[0].1)
                })
                .map(|((view, key), a)| {
                    let shown: Vec<String> = a
                        .iter()
                        .map(|(i, v)| {
                            format!("{}={}", letter(*i), v.chars().take(80).collect::<String>())
                        })
                        .collect();
                    format!("{view}/{key}: {}", shown.join(" "))
                })
                .collect();
            if differing.is_empty() {
                let record = Record::Converged {
                    t: now_us(),
                    cycle: self.cycle,
                    after_ms: started.elapsed().as_millis() as u64,
                };
                self.record(&record)?;
                return Ok(true);
            }
            if started.elapsed() > within {
                let record = Record::NotConverged {
                    t: now_us(),
                    cycle: self.cycle,
                    waited_ms: started.elapsed().as_millis() as u64,
                    detail: differing.into_iter().take(3).collect::<Vec<_>>().join("; "),
                };
                self.record(&record)?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lifts every fault: network healed, nodes resumed or restarted with true clocks,
    /// disks freed.
    async fn heal_all(&mut self) -> Result<(), RunError> {
        if !self.links.is_healthy() {
            self.apply(&Step::Heal).await?;
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].is_paused() {
                self.apply(&Step::Resume(n)).await?;
            }
            if self.nodes[n].disk_full() {
                self.apply(&Step::FreeDisk(n)).await?;
            }
            if self.nodes[n].skew().is_some() {
                self.apply(&Step::Unskew(n)).await?;
            } else if !self.nodes[n].is_running() {
                self.apply(&Step::Restart(n)).await?;
            }
        }
        Ok(())
    }
}

fn letter(n: NodeIx) -> char {
    char::from(b'a' + (n % 26) as u8)
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

fn spawn_client(
    config: &RunConfig,
    namespace: &str,
    client: &ClientConfig,
) -> Result<ClientProcess, RunError> {
    let json = serde_json::to_string(client).map_err(harness)?;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(&config.torture)
        .args(["client", "--config", &json])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| harness(format!("starting client {}: {e}", client.name)))?;
    let stdin = child.stdin.take().ok_or_else(|| harness("client stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| harness("client stdout"))?;
    Ok(ClientProcess {
        child,
        stdin,
        stdout: BufReader::new(stdout).lines(),
    })
}
