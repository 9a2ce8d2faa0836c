//! A replicated cluster of real `speedlayer serve` child processes on loopback, for the
//! fault tests in `tests/cluster.rs`.
//!
//! Every node has its own data directory, log file and three ports (HTTP, RESP, cluster),
//! and is seeded with the cluster addresses of all nodes. A [`Node`] is SIGKILLed and
//! reaped when dropped (so a panicking test leaves no process behind) and prints the tail
//! of its log when the test fails. [`Node::restart`] spawns the same command again (same
//! data directory, ports and flags), appending to the same log.
//!
//! The HTTP helpers exist twice: as free functions taking a client and a base URL (for
//! client tasks that must not borrow the [`Cluster`]) and as [`Cluster`] methods taking
//! a node index.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::BIN;

/// The cluster secret every node of a test cluster shares.
pub const SECRET: &str = "speedlayer-cluster-test-secret";

/// Lines of a node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 400;

/// Write parameters: quorum, the node's default quorum mode (sloppy).
pub const QUORUM: &[(&str, &str)] = &[("consistency", "quorum")];
/// Write parameters: quorum, sloppy.
pub const QUORUM_SLOPPY: &[(&str, &str)] = &[("consistency", "quorum"), ("quorum", "sloppy")];
/// Write parameters: quorum, strict.
pub const QUORUM_STRICT: &[(&str, &str)] = &[("consistency", "quorum"), ("quorum", "strict")];

/// One event time for every write of a test: a minute ago, so every write of the test
/// lands in the same (current) epoch on every node.
pub fn epoch_safe_ts() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    now - 60
}

/// `n` distinct free ports of 127.0.0.1 (see [`super::free_port`]).
pub fn free_port_set(n: usize) -> Vec<u16> {
    (0..n).map(|_| super::free_port()).collect()
}

/// A small deterministic generator (xorshift64*) for random bytes and choices.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// How to start one node: everything its command line says.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--node-id`.
    pub node_id: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Where stderr is appended.
    pub log: PathBuf,
    /// `--http` port on 127.0.0.1.
    pub http_port: u16,
    /// `--resp` port on 127.0.0.1.
    pub resp_port: u16,
    /// `--cluster` port on 127.0.0.1.
    pub cluster_port: u16,
    /// `--seeds`: cluster addresses.
    pub seeds: Vec<String>,
    /// `--replicas`.
    pub replicas: usize,
    /// `--cluster-secret`.
    pub secret: String,
    /// Further flags, e.g. `--hinted-handoff off`.
    pub extra_args: Vec<String>,
    /// The address the node listens on: `127.0.0.1`, or its address in a network
    /// namespace ([`super::netns::Netns`]).
    pub host: String,
    /// The network namespace the node runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// Extra environment of the process (e.g. libfaketime for a skewed clock).
    pub env: Vec<(String, String)>,
}

impl NodeConfig {
    /// The `serve` command line.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
            "--http".to_string(),
            format!("{}:{}", self.host, self.http_port),
            "--resp".to_string(),
            format!("{}:{}", self.host, self.resp_port),
            "--cluster".to_string(),
            self.cluster_addr(),
            "--node-id".to_string(),
            self.node_id.clone(),
            "--seeds".to_string(),
            self.seeds.join(","),
            "--replicas".to_string(),
            self.replicas.to_string(),
            "--cluster-secret".to_string(),
            self.secret.clone(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The internode address, as the cluster names the node (`HOST:P`).
    pub fn cluster_addr(&self) -> String {
        format!("{}:{}", self.host, self.cluster_port)
    }
}

/// One `speedlayer serve` child of a cluster. SIGKILLed and reaped when dropped; prints
/// the tail of its log when the test is panicking.
pub struct Node {
    config: NodeConfig,
    child: Option<Child>,
    /// Processes started so far (1 after the first spawn).
    starts: u32,
}

impl Node {
    /// Starts a node.
    pub fn spawn(config: NodeConfig) -> Node {
        let mut node = Node {
            config,
            child: None,
            starts: 0,
        };
        node.start_process();
        node
    }

    fn start_process(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.config.node_id
        );
        self.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.config.log)
            .expect("log file");
        let args = self.config.args();
        let _ = writeln!(
            log,
            "==== test harness: start #{} of node {}: {BIN} {} ====",
            self.starts,
            self.config.node_id,
            args.join(" ")
        );
        // `ip netns exec` execs the binary in the namespace: the child is the node itself,
        // so SIGKILL still reaches it.
        let mut command = match &self.config.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("SPEEDLAYER_CLUSTER_SECRET")
            .env_remove("SPEEDLAYER_REQUIREPASS")
            .envs(
                self.config
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning speedlayer serve");
        self.child = Some(child);
    }

    /// Starts the node again after [`Node::kill`]: same data directory, ports and flags.
    pub fn restart(&mut self) {
        self.start_process();
    }

    /// Kills the node and starts it again with `env` added to its environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.kill();
        self.config.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start_process();
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap. Nothing if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let what = match child.try_wait() {
                Ok(Some(status)) => format!("had exited by itself with {status}"),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    "SIGKILLed".to_string()
                }
            };
            if let Ok(mut log) = File::options().append(true).open(&self.config.log) {
                let _ = writeln!(
                    log,
                    "==== test harness: node {} {what} ====",
                    self.config.node_id
                );
            }
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the harness started the node and has not killed it.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Panics (with the log, through `Drop`) if the node was started and has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "node {} (cluster {}) exited unexpectedly with {status}",
                    self.config.node_id,
                    self.config.cluster_addr()
                );
            }
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// `http://HOST:P`.
    pub fn base(&self) -> String {
        format!("http://{}:{}", self.config.host, self.config.http_port)
    }

    /// The node's internode address.
    pub fn cluster_addr(&self) -> String {
        self.config.cluster_addr()
    }

    /// Bytes in the node's log so far.
    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.config.log).map_or(0, |m| m.len() as usize)
    }

    /// The node's log so far (every run of it).
    pub fn log_text(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.config.log) {
            let _ = file.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "---- node {} (http {}, cluster {}) log {} ({} earlier lines left out) ----\n{}\n\
                 ---- end of log of node {} ----",
                self.config.node_id,
                self.config.http_port,
                self.config.cluster_addr(),
                self.config.log.display(),
                skip,
                lines[skip..].join("\n"),
                self.config.node_id,
            );
        }
    }
}

/// The shape of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Nodes (all seeded with every node's cluster address).
    pub nodes: usize,
    /// `--replicas`.
    pub replicas: usize,
    /// Flags every node gets.
    pub extra_args: Vec<String>,
    /// (address, namespace) of each node when they run in network namespaces.
    pub namespaces: Option<Vec<(String, String)>>,
}

impl ClusterOptions {
    /// `nodes` nodes, 3 replicas, no extra flags.
    pub fn new(nodes: usize) -> ClusterOptions {
        ClusterOptions {
            nodes,
            replicas: 3,
            extra_args: Vec::new(),
            namespaces: None,
        }
    }

    /// Runs node `i` in the `i`th namespace of `net` (one per node), on its address there.
    pub fn in_namespaces(mut self, net: &super::netns::Netns) -> ClusterOptions {
        self.namespaces = Some(
            (0..self.nodes)
                .map(|i| (net.addr(i), net.namespace(i)))
                .collect(),
        );
        self
    }

    /// Adds flags every node gets.
    pub fn args(mut self, args: &[&str]) -> ClusterOptions {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// N nodes `n1`..`nN` seeded with each other, and a client. Dropping it kills every node
/// (before the directory holding their data is removed).
pub struct Cluster {
    /// The nodes, in order `n1`, `n2`, ...
    pub nodes: Vec<Node>,
    /// An HTTP client (20 s timeout).
    pub client: Client,
    /// Holds data directories and logs; dropped after the nodes.
    dir: TempDir,
}

impl Cluster {
    /// Spawns the nodes; does not wait for them.
    pub fn start(options: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_port_set(3 * options.nodes);
        let place = |i: usize| match &options.namespaces {
            Some(hosts) => (hosts[i].0.clone(), Some(hosts[i].1.clone())),
            None => ("127.0.0.1".to_string(), None),
        };
        let seeds: Vec<String> = (0..options.nodes)
            .map(|i| format!("{}:{}", place(i).0, ports[3 * i + 2]))
            .collect();
        let nodes = (0..options.nodes)
            .map(|i| {
                let node_id = format!("n{}", i + 1);
                Node::spawn(NodeConfig {
                    data_dir: dir.path().join(format!("{node_id}-data")),
                    log: dir.path().join(format!("{node_id}.log")),
                    node_id,
                    http_port: ports[3 * i],
                    resp_port: ports[3 * i + 1],
                    cluster_port: ports[3 * i + 2],
                    seeds: seeds.clone(),
                    replicas: options.replicas,
                    secret: SECRET.to_string(),
                    extra_args: options.extra_args.clone(),
                    host: place(i).0,
                    netns: place(i).1,
                    env: Vec::new(),
                })
            })
            .collect();
        Cluster {
            nodes,
            client: http_client(Duration::from_secs(20)),
            dir,
        }
    }

    /// Spawns the nodes and waits until every node sees every node up.
    pub async fn start_ready(options: ClusterOptions) -> Cluster {
        let mut cluster = Cluster::start(options);
        let started = Instant::now();
        cluster.wait_all_up(Duration::from_secs(30)).await;
        eprintln!(
            "cluster of {} nodes ready (every node sees every node up) after {:?}",
            cluster.nodes.len(),
            started.elapsed()
        );
        cluster
    }

    /// A node that is not part of the cluster's seed list (its own data directory and log
    /// in the cluster's directory, fresh ports), started with `secret` and `seeds`.
    pub fn spawn_outsider(&self, node_id: &str, secret: &str, seeds: Vec<String>) -> Node {
        let ports = free_port_set(3);
        let mut seeds = seeds;
        let own = format!("127.0.0.1:{}", ports[2]);
        if !seeds.contains(&own) {
            seeds.push(own);
        }
        Node::spawn(NodeConfig {
            node_id: node_id.to_string(),
            data_dir: self.dir.path().join(format!("{node_id}-data")),
            log: self.dir.path().join(format!("{node_id}.log")),
            http_port: ports[0],
            resp_port: ports[1],
            cluster_port: ports[2],
            seeds,
            replicas: self.nodes[0].config.replicas,
            secret: secret.to_string(),
            extra_args: Vec::new(),
            host: "127.0.0.1".to_string(),
            netns: None,
            env: Vec::new(),
        })
    }

    /// Starts one more node that joins the cluster through `seeds` (its own address not
    /// among them, so it joins rather than founds), with the cluster's secret, replicas
    /// and extra arguments; returns its index.
    pub fn spawn_joiner(&mut self, seeds: Vec<String>) -> usize {
        self.spawn_joiner_with(seeds, |_| {})
    }

    /// [`Cluster::spawn_joiner`] with its configuration changed by `change` first.
    pub fn spawn_joiner_with(
        &mut self,
        seeds: Vec<String>,
        change: impl FnOnce(&mut NodeConfig),
    ) -> usize {
        let ports = free_port_set(3);
        let index = self.nodes.len();
        let node_id = format!("n{}", index + 1);
        let first = &self.nodes[0].config;
        let mut config = NodeConfig {
            data_dir: self.dir.path().join(format!("{node_id}-data")),
            log: self.dir.path().join(format!("{node_id}.log")),
            node_id,
            http_port: ports[0],
            resp_port: ports[1],
            cluster_port: ports[2],
            seeds,
            replicas: first.replicas,
            secret: first.secret.clone(),
            extra_args: first.extra_args.clone(),
            host: "127.0.0.1".to_string(),
            netns: None,
            env: Vec::new(),
        };
        change(&mut config);
        self.nodes.push(Node::spawn(config));
        index
    }

    /// Every node's cluster address, in node order.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(Node::cluster_addr).collect()
    }

    /// Every node's HTTP base URL, in node order.
    pub fn bases(&self) -> Vec<String> {
        self.nodes.iter().map(Node::base).collect()
    }

    /// Node `i`'s HTTP base URL.
    pub fn base(&self, i: usize) -> String {
        self.nodes[i].base()
    }

    /// Node `i`'s cluster address.
    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].cluster_addr()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` (same data directory, ports, flags).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// Panics if a node the harness has not killed has exited.
    pub fn assert_running(&mut self) {
        for node in &mut self.nodes {
            node.assert_running();
        }
    }

    /// Indices of the nodes the harness has running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// `GET /v1/cluster` of node `i`.
    pub async fn cluster_info(&self, i: usize) -> Result<Value, String> {
        get_json(&self.client, &format!("{}/v1/cluster", self.base(i))).await
    }

    /// How node `observer` sees node `target`: its `state`, or why there is none.
    pub async fn state_seen(&self, observer: usize, target: usize) -> Result<String, String> {
        let info = self.cluster_info(observer).await?;
        state_in(&info, &self.addr(target)).ok_or_else(|| {
            format!(
                "node {} lists no node {} with a state: {}",
                observer + 1,
                self.addr(target),
                nodes_summary(&info)
            )
        })
    }

    /// Waits until every observer sees every target in `state` ("up" or "down"). Returns
    /// how long it took; panics after `within` with what was seen last.
    pub async fn wait_for_states(
        &mut self,
        observers: &[usize],
        targets: &[usize],
        state: &str,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        let deadline = started + within;
        loop {
            self.assert_running();
            let mut unmet = Vec::new();
            for &observer in observers {
                match self.cluster_info(observer).await {
                    Ok(info) => {
                        for &target in targets {
                            let seen = state_in(&info, &self.addr(target));
                            if seen.as_deref() != Some(state) {
                                unmet.push(format!(
                                    "n{} sees n{} ({}) as {seen:?}; its nodes: {}",
                                    observer + 1,
                                    target + 1,
                                    self.addr(target),
                                    nodes_summary(&info)
                                ));
                            }
                        }
                    }
                    Err(e) => unmet.push(format!("n{}: {e}", observer + 1)),
                }
            }
            if unmet.is_empty() {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "within {within:?}, not every observer {observers:?} saw nodes {targets:?} \
                 {state:?}:\n{}",
                unmet.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node sees every node of the cluster up.
    pub async fn wait_all_up(&mut self, within: Duration) -> Duration {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let running = self.running();
        assert_eq!(running, all, "wait_all_up with nodes not running");
        self.wait_for_states(&all, &all, "up", within).await
    }

    /// Declares `view` of `value_type` on node 1, then waits (at most 15 s) until every
    /// running node knows it.
    pub async fn declare(&mut self, view: &str, value_type: &str) {
        self.declare_spec(view, &json!({ "type": value_type }))
            .await;
    }

    /// `POST /v1/views/{view}/update` through node `i`.
    pub async fn update(
        &self,
        i: usize,
        view: &str,
        body: &Value,
        params: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), String> {
        post_update(&self.client, &self.base(i), view, body, params).await
    }

    /// An update through node `i` that must answer 200.
    pub async fn update_ok(&self, i: usize, view: &str, body: &Value, params: &[(&str, &str)]) {
        match self.update(i, view, body, params).await {
            Ok((StatusCode::OK, _)) => {}
            other => panic!(
                "update through n{} {params:?} of {view} {body}: {other:?}",
                i + 1
            ),
        }
    }

    /// The counter value of `key` read through node `i` at `consistency`.
    pub async fn read(
        &self,
        i: usize,
        view: &str,
        key: &str,
        consistency: &str,
    ) -> Result<i64, String> {
        read_counter(&self.client, &self.base(i), view, key, consistency).await
    }

    /// Hints node `i` holds, per target cluster address, from `GET /v1/cluster`.
    pub async fn hints_by_target(&self, i: usize) -> Result<BTreeMap<String, u64>, String> {
        let info = self.cluster_info(i).await?;
        let nodes = info["nodes"]
            .as_array()
            .ok_or_else(|| format!("no nodes in /v1/cluster of n{}: {info}", i + 1))?;
        let mut hints = BTreeMap::new();
        for node in nodes {
            let addr = node["addr"].as_str().unwrap_or("?").to_string();
            let pending = node["hints_pending"].as_u64().ok_or_else(|| {
                format!(
                    "n{}: node {addr} has no integer hints_pending: {node}",
                    i + 1
                )
            })?;
            hints.insert(addr, pending);
        }
        Ok(hints)
    }

    /// `speedlayer_hints_pending{target=...}` of node `i`'s `/metrics`, per target.
    pub async fn metric_hints(&self, i: usize) -> Result<BTreeMap<String, f64>, String> {
        Ok(parse_hint_metrics(&self.metrics_text(i).await?))
    }

    /// Node `i`'s `/metrics` text.
    pub async fn metrics_text(&self, i: usize) -> Result<String, String> {
        let url = format!("{}/metrics", self.base(i));
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("{url}: {status} {text}"));
        }
        Ok(text)
    }

    /// Waits until no running node holds a hint, by `/v1/cluster` and by `/metrics`.
    /// Returns how long it took; panics after `within` with the hints seen last.
    pub async fn wait_hints_drained(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        let deadline = started + within;
        loop {
            self.assert_running();
            let mut pending = Vec::new();
            for i in self.running() {
                match self.hints_by_target(i).await {
                    Ok(hints) => {
                        let held: BTreeMap<_, _> =
                            hints.into_iter().filter(|(_, n)| *n > 0).collect();
                        if !held.is_empty() {
                            pending.push(format!("n{} /v1/cluster: {held:?}", i + 1));
                        }
                    }
                    Err(e) => pending.push(e),
                }
                match self.metric_hints(i).await {
                    Ok(hints) => {
                        let held: BTreeMap<_, _> =
                            hints.into_iter().filter(|(_, n)| *n != 0.0).collect();
                        if !held.is_empty() {
                            pending.push(format!("n{} /metrics: {held:?}", i + 1));
                        }
                    }
                    Err(e) => pending.push(e),
                }
            }
            if pending.is_empty() {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "hints still pending after {within:?}:\n{}",
                pending.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /health` of node `i`.
    pub async fn health(&self, i: usize) -> Result<StatusCode, String> {
        self.client
            .get(format!("{}/health", self.base(i)))
            .send()
            .await
            .map(|r| r.status())
            .map_err(|e| format!("n{} /health: {e}", i + 1))
    }
}

/// A client with a whole-request timeout.
pub fn http_client(timeout: Duration) -> Client {
    Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

/// `GET url` answering 200 with JSON.
pub async fn get_json(client: &Client, url: &str) -> Result<Value, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("{url}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))
}

/// `POST {base}/v1/views/{view}/update?params` with `body`: the status and the answer's
/// JSON (a JSON string of the raw text if it is not JSON).
pub async fn post_update(
    client: &Client,
    base: &str,
    view: &str,
    body: &Value,
    params: &[(&str, &str)],
) -> Result<(StatusCode, Value), String> {
    let url = format!("{base}/v1/views/{view}/update");
    let response = client
        .post(&url)
        .query(params)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, answer))
}

/// The counter value of `key` in `view` read through `base` at `consistency`
/// (`one`, `quorum`, `all` or `local`).
pub async fn read_counter(
    client: &Client,
    base: &str,
    view: &str,
    key: &str,
    consistency: &str,
) -> Result<i64, String> {
    let url = format!("{base}/v1/views/{view}/get");
    let response = client
        .get(&url)
        .query(&[("key", key), ("consistency", consistency)])
        .send()
        .await
        .map_err(|e| format!("{url}?key={key}&consistency={consistency}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "{url}?key={key}&consistency={consistency}: {status} {text}"
        ));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
    answer["value"].as_i64().ok_or_else(|| {
        format!("{url}?key={key}&consistency={consistency}: value is not an integer: {text}")
    })
}

/// The `state` of the node with cluster address `addr` in a `/v1/cluster` answer.
pub fn state_in(info: &Value, addr: &str) -> Option<String> {
    info["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["addr"] == addr)
        .and_then(|n| n["state"].as_str())
        .map(str::to_string)
}

/// A `/v1/cluster` answer without its ring (which is long), for messages.
pub fn nodes_summary(info: &Value) -> String {
    let mut info = info.clone();
    if let Some(map) = info.as_object_mut() {
        map.remove("ring");
    }
    info.to_string()
}

/// `speedlayer_hints_pending` samples of a Prometheus text page, by `target` label.
pub fn parse_hint_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut hints = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("speedlayer_hints_pending{") else {
            continue;
        };
        let Some(start) = rest.find("target=\"") else {
            continue;
        };
        let label = &rest[start + "target=\"".len()..];
        let Some(end) = label.find('"') else {
            continue;
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        *hints.entry(label[..end].to_string()).or_insert(0.0) += value;
    }
    hints
}

impl Cluster {
    /// Declares `view` with a whole declaration (`epoch_secs`, `mapping`, ...) on node 1,
    /// then waits until every running node knows it.
    pub async fn declare_spec(&mut self, view: &str, spec: &Value) {
        let response = self
            .client
            .put(format!("{}/v1/views/{view}", self.base(0)))
            .json(spec)
            .send()
            .await
            .expect("declare");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "declaring {view} as {spec} on n1: {status} {text}"
        );
        self.wait_view_known(view, Duration::from_secs(15)).await;
    }

    /// Waits until every running node answers `GET /v1/views/{view}` with 200; panics
    /// after `within`.
    pub async fn wait_view_known(&mut self, view: &str, within: Duration) {
        let deadline = Instant::now() + within;
        for i in self.running() {
            loop {
                self.assert_running();
                let url = format!("{}/v1/views/{view}", self.base(i));
                let seen = self.client.get(&url).send().await.map(|r| r.status());
                if matches!(seen, Ok(StatusCode::OK)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "view {view} is not known on n{} after {within:?}: {seen:?}",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The value of the unlabelled sample `name` (e.g.
    /// `speedlayer_store_epochs_retired_total`) in node `i`'s `/metrics`.
    pub async fn metric(&self, i: usize, name: &str) -> Result<f64, String> {
        let text = self.metrics_text(i).await?;
        super::sample(&text, name)
            .ok_or_else(|| format!("n{}: no sample {name} in /metrics", i + 1))
    }
}

/// Reads from `stream` until the peer closes or resets it; panics if it is still open
/// after `within`.
pub async fn expect_closed(mut stream: tokio::net::TcpStream, what: &str, within: Duration) {
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(within, async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the node kept the internode connection open for {within:?} after {what}"
    );
}

/// Opens a connection to `addr` and writes `bytes` (a write error means the node already
/// hung up, which is fine).
pub async fn send_raw(addr: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to the cluster port {addr}: {e}"));
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, bytes).await;
    let _ = tokio::io::AsyncWriteExt::flush(&mut stream).await;
    stream
}
