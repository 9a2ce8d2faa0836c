//! One simulated run: three coordinators with real stores over the in-memory network, a
//! workload of clients recording the fault suite's history, faults drawn from the seed,
//! a heal, a drain, convergence, final reads, and the fault suite's checker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use speedlayer_api::{Consistency, Coordinator, ViewSpec, ViewType};
use speedlayer_cluster::{Cluster, ClusterConfig};
use speedlayer_core::{Key, Reading, ValueType};
use speedlayer_store::{Store, StoreConfig};
use speedlayer_torture::checker::{self, normalise, Report};
use speedlayer_torture::history::{now_us, Record};
use speedlayer_torture::scenario::SeededRng;
use tokio::sync::watch;

use crate::client::SimClient;
use crate::network::Network;

/// What a simulated run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of the faults, the message delays and the workload.
    pub seed: u64,
    /// Nodes (every node replicates every key: replicas = nodes, at most 3).
    pub nodes: usize,
    /// Sequential clients.
    pub clients: usize,
    /// Operations per client.
    pub ops_per_client: usize,
    /// Fault changes during the workload.
    pub faults: usize,
    /// Longest delay of one write on a connection.
    pub max_delay: Duration,
    /// Bound on one internode request.
    pub rpc_timeout: Duration,
    /// Longest wait for convergence after the heal.
    pub converge_within: Duration,
    /// Broken on purpose: increments retried without their producer id.
    pub anonymous_retries: bool,
}

impl SimConfig {
    /// The defaults for `seed`: small and quick (about two seconds).
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            clients: 4,
            ops_per_client: 120,
            faults: 6,
            max_delay: Duration::from_millis(3),
            rpc_timeout: Duration::from_millis(300),
            converge_within: Duration::from_secs(15),
            anonymous_retries: false,
        }
    }
}

/// A run that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A store or a coordinator could not start, or a view could not be declared.
    #[error("{0}")]
    Setup(String),
}

/// What a run produced.
pub struct SimOutcome {
    /// The checker's report.
    pub report: Report,
    /// The history, for keeping when the report fails.
    pub history: Vec<Record>,
    /// The fault schedule that was played, in words.
    pub schedule: Vec<String>,
}

pub(crate) const COUNTER: &str = "t_counter";
pub(crate) const SET: &str = "t_set";
pub(crate) const HLL: &str = "t_hll";
pub(crate) const MAX: &str = "t_max";

fn views() -> [(&'static str, ValueType); 4] {
    [
        (COUNTER, ValueType::Counter),
        (SET, ValueType::Set),
        (HLL, ValueType::Hll),
        (MAX, ValueType::Max),
    ]
}

fn value_type_of(view: &str) -> ValueType {
    views()
        .iter()
        .find(|(v, _)| *v == view)
        .map_or(ValueType::Counter, |(_, t)| *t)
}

fn rows() -> Vec<(&'static str, String)> {
    let mut rows: Vec<(&str, String)> = (0..3).map(|k| (COUNTER, format!("k{k}"))).collect();
    rows.push((SET, "s0".into()));
    rows.push((HLL, "h0".into()));
    rows.push((MAX, "m0".into()));
    rows
}

pub(crate) fn key(text: &str) -> Result<Key, String> {
    Key::new(text.as_bytes().to_vec(), Vec::new()).map_err(|e| e.to_string())
}

pub(crate) type History = Arc<Mutex<Vec<Record>>>;

pub(crate) fn record(history: &History, r: Record) {
    history.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

/// The simulated address of node `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7782))
}

/// A scratch directory for the stores, on a tmpfs when there is one.
pub fn scratch_dir() -> Result<tempfile::TempDir, SimError> {
    if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::Builder::new()
            .prefix("speedlayer-sim-")
            .tempdir_in("/dev/shm")
    } else {
        tempfile::Builder::new().prefix("speedlayer-sim-").tempdir()
    }
    .map_err(|e| SimError::Setup(e.to_string()))
}

/// Starts simulated node `i`: a real store (two shards) under `base`, a coordinator with
/// `config` on the simulated network (16 partitions, the simulation's secret).
pub async fn start_node(
    base: &std::path::Path,
    i: usize,
    net: &Network,
    mut config: ClusterConfig,
    stop: watch::Receiver<bool>,
) -> Result<Cluster, SimError> {
    let setup = |e: &dyn std::fmt::Display| SimError::Setup(e.to_string());
    let mut store_config = StoreConfig::new(base.join(format!("n{i}")));
    store_config.node_id = Some(format!("n{i}"));
    store_config.shards = 2;
    let mut registry = Registry::default();
    let store = tokio::task::block_in_place(|| Store::open(store_config, &mut registry))
        .map_err(|e| setup(&e))?;
    config.partitions = 16;
    config.secret = Some("sim".into());
    config.transport = net.transport(config.listen);
    Cluster::start(store, config, &mut registry, stop)
        .await
        .map_err(|e| setup(&e))
}

/// Runs one seed.
pub async fn simulate(config: &SimConfig) -> Result<SimOutcome, SimError> {
    let setup = |e: &dyn std::fmt::Display| SimError::Setup(e.to_string());
    let base = scratch_dir()?;
    let net = Network::new(config.seed, config.max_delay);
    let addrs: Vec<SocketAddr> = (0..config.nodes).map(sim_addr).collect();
    let (stop, stopped) = watch::channel(false);
    let mut nodes: Vec<Cluster> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut cluster_config = ClusterConfig::single(*addr);
        cluster_config.seeds = addrs.clone();
        cluster_config.replicas = config.nodes.min(3);
        cluster_config.rpc_timeout = config.rpc_timeout;
        nodes.push(start_node(base.path(), i, &net, cluster_config, stopped.clone()).await?);
    }
    for (view, value_type) in views() {
        let spec = ViewSpec {
            value_type: ViewType::Typed(value_type),
            epoch_secs: 1_000_000_000,
            mapping: None,
        };
        nodes[0]
            .declare_view(view, spec)
            .await
            .map_err(|e| setup(&e))?;
    }
    // Every node knows every view before the clients start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes
        .iter()
        .any(|n| views().iter().any(|(v, _)| n.view(v).is_err()))
    {
        if Instant::now() > deadline {
            return Err(SimError::Setup("views did not reach every node".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let history: History = Arc::default();
    record(
        &history,
        Record::Setup {
            t: now_us(),
            nodes: config.nodes,
            replicas: config.nodes.min(3),
            scenario: format!("sim seed {}", config.seed),
            broken: if config.anonymous_retries {
                vec!["anonymous-retries".into()]
            } else {
                vec![]
            },
        },
    );
    let coordinators: Vec<Arc<dyn Coordinator>> = nodes
        .iter()
        .map(|n| Arc::new(n.clone()) as Arc<dyn Coordinator>)
        .collect();
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            let client = SimClient {
                name: format!("s{c}"),
                nodes: coordinators.clone(),
                history: history.clone(),
                rng: SeededRng::new(config.seed.wrapping_mul(1_000_003).wrapping_add(c as u64)),
                anonymous: config.anonymous_retries,
                pending: Vec::new(),
            };
            tokio::spawn(client.run(config.ops_per_client))
        })
        .collect();

    // Faults, drawn from the seed, while the clients run.
    let mut rng = SeededRng::new(config.seed);
    let mut schedule = Vec::new();
    for _ in 0..config.faults {
        tokio::time::sleep(Duration::from_millis(rng.between(50, 400))).await;
        let x = rng.below(config.nodes as u64) as usize;
        let y = (x + 1 + rng.below(config.nodes as u64 - 1) as usize) % config.nodes;
        let words = match rng.below(4) {
            0 => {
                for (j, other) in addrs.iter().enumerate() {
                    if j != x {
                        net.block(addrs[x], *other);
                        net.block(*other, addrs[x]);
                    }
                }
                format!("isolate n{x}")
            }
            1 => {
                net.block(addrs[x], addrs[y]);
                format!("drop n{x}->n{y}")
            }
            2 => {
                net.block(addrs[x], addrs[y]);
                net.block(addrs[y], addrs[x]);
                format!("cut n{x}<->n{y}")
            }
            _ => {
                net.heal();
                "heal".to_string()
            }
        };
        schedule.push(words);
    }
    net.heal();
    schedule.push("heal".to_string());
    let mut unresolved = 0;
    for client in clients {
        unresolved += client.await.unwrap_or(usize::MAX);
    }

    // Convergence: every node's own copy of every row agrees.
    let healed = Instant::now();
    loop {
        let answers = local_answers(&coordinators).await;
        let differing: Vec<String> = answers
            .iter()
            .filter(|(_, a)| a.iter().any(|v| *v != a[0]))
            .map(|((view, key), a)| format!("{view}/{key}: {a:?}"))
            .collect();
        if differing.is_empty() {
            record(
                &history,
                Record::Converged {
                    t: now_us(),
                    cycle: 1,
                    after_ms: healed.elapsed().as_millis() as u64,
                },
            );
            break;
        }
        if healed.elapsed() > config.converge_within {
            record(
                &history,
                Record::NotConverged {
                    t: now_us(),
                    cycle: 1,
                    waited_ms: healed.elapsed().as_millis() as u64,
                    detail: differing.join("; "),
                },
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (view, key_text) in rows() {
        let value_type = value_type_of(view);
        for (i, node) in coordinators.iter().enumerate() {
            for consistency in [Consistency::Local, Consistency::Quorum] {
                if let Ok(value) =
                    read(node.as_ref(), view, &key_text, value_type, consistency).await
                {
                    record(
                        &history,
                        Record::Final {
                            t: now_us(),
                            view: view.into(),
                            key: key_text.clone(),
                            node: i,
                            consistency: consistency.to_string(),
                            value,
                        },
                    );
                }
            }
        }
    }
    let _ = stop.send(true);
    let history = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    let mut report = checker::check(&history);
    if unresolved > 0 {
        report.verdicts.push(checker::Verdict {
            property: "drained",
            ok: false,
            detail: format!("{unresolved} operations never acknowledged after the heal"),
        });
    }
    Ok(SimOutcome {
        report,
        history,
        schedule,
    })
}

async fn read(
    node: &dyn Coordinator,
    view: &str,
    key_text: &str,
    value_type: ValueType,
    consistency: Consistency,
) -> Result<serde_json::Value, String> {
    let readings = node
        .get_many(view, vec![key(key_text)?], consistency)
        .await
        .map_err(|e| e.to_string())?;
    Ok(readings
        .into_iter()
        .next()
        .flatten()
        .unwrap_or_else(|| Reading::empty(value_type))
        .to_json())
}

async fn local_answers(nodes: &[Arc<dyn Coordinator>]) -> BTreeMap<(String, String), Vec<String>> {
    let mut answers: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (view, key_text) in rows() {
        let value_type = value_type_of(view);
        for node in nodes {
            let shown = match read(
                node.as_ref(),
                view,
                &key_text,
                value_type,
                Consistency::Local,
            )
            .await
            {
                Ok(v) => normalise(&v),
                Err(e) => format!("error: {e}"),
            };
            answers
                .entry((view.into(), key_text.clone()))
                .or_default()
                .push(shown);
        }
    }
    answers
}
