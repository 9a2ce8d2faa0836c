//! `speedlayer serve`: flags over TOML config over defaults, then run until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use speedlayer_api::{Consistency, QuorumMode, WriteOptions};
use speedlayer_cluster::ClusterConfig;
use speedlayer_ingest::source::nats::NatsConfig;
use speedlayer_node::{Node, NodeConfig};

use crate::cli::{ServeArgs, Switch};

/// The TOML configuration file: the `serve` flags by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
    resp: Option<SocketAddr>,
    cluster: Option<SocketAddr>,
    node_id: Option<String>,
    seeds: Option<Vec<SocketAddr>>,
    replicas: Option<usize>,
    cluster_secret: Option<String>,
    requirepass: Option<String>,
    shards: Option<usize>,
    max_body_bytes: Option<usize>,
    partitions: Option<u32>,
    consistency: Option<Consistency>,
    quorum: Option<QuorumMode>,
    hinted_handoff: Option<bool>,
    queue_limit: Option<u64>,
    batch_grace: Option<u64>,
    retention: Option<u64>,
    nats_url: Option<String>,
    nats_stream: Option<String>,
    nats_subject: Option<String>,
    nats_consumer: Option<String>,
    nats_mode: Option<speedlayer_ingest::Mode>,
    nats_batch: Option<usize>,
    nats_ack_wait: Option<f64>,
    /// Views declared at start: `[views.pageviews]` with `type`, `epoch_secs` and an
    /// optional `mapping` table (`filter`, `key`, `clustering`, `op`).
    #[serde(default)]
    views: std::collections::BTreeMap<String, speedlayer_api::ViewSpec>,
}

/// Applies flags over the file over the defaults, and checks the combination.
pub fn resolve(args: ServeArgs) -> anyhow::Result<NodeConfig> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./speedlayer-data"));
    let mut node = NodeConfig::new(data_dir);
    if let Some(http) = args.http.or(file.http) {
        node.http = http;
    }
    node.node_id = args.node_id.or(file.node_id);
    node.requirepass = args
        .requirepass
        .or(file.requirepass)
        .filter(|p| !p.is_empty());
    node.shards = args.shards.or(file.shards);
    if let Some(max) = args.max_body_bytes.or(file.max_body_bytes) {
        node.max_body_bytes = max;
    }
    let cluster = args
        .cluster
        .or(file.cluster)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7782)));
    let cluster_secret = args
        .cluster_secret
        .or(file.cluster_secret)
        .filter(|s| !s.is_empty());
    if !cluster.ip().is_loopback() && cluster_secret.is_none() {
        bail!(
            "cluster address {cluster} is not loopback: set --cluster-secret (or \
             SPEEDLAYER_CLUSTER_SECRET) so other hosts cannot join or read internode traffic"
        );
    }
    let seeds = args.seeds.or(file.seeds).unwrap_or_default();
    let mut cluster_config = ClusterConfig::single(cluster);
    cluster_config.seeds = seeds;
    cluster_config.secret = cluster_secret;
    if let Some(replicas) = args.replicas.or(file.replicas) {
        if replicas == 0 {
            bail!("--replicas must be at least 1");
        }
        cluster_config.replicas = replicas;
    }
    if let Some(partitions) = args.partitions.or(file.partitions) {
        if !(1..=65_536).contains(&partitions) {
            bail!("--partitions must be between 1 and 65536");
        }
        cluster_config.partitions = partitions;
    }
    let consistency = args.consistency.or(file.consistency).unwrap_or_default();
    if consistency == Consistency::Local {
        bail!("--consistency local is a per-read diagnostic; the default takes one, quorum or all");
    }
    cluster_config.defaults = WriteOptions {
        consistency,
        quorum: args.quorum.or(file.quorum).unwrap_or_default(),
    };
    cluster_config.hinted_handoff = args
        .hinted_handoff
        .map(|h| h == Switch::On)
        .or(file.hinted_handoff)
        .unwrap_or(true);
    node.cluster = cluster_config;
    if let Some(grace) = args.batch_grace.or(file.batch_grace) {
        node.batch_grace = std::time::Duration::from_secs(grace);
    }
    node.retention = match args.retention.or(file.retention) {
        Some(0) => bail!("--retention must be at least 1 second (leave it out to keep epochs until a batch view covers them)"),
        Some(secs) => Some(std::time::Duration::from_secs(secs)),
        None => None,
    };
    if let Some(limit) = args.queue_limit.or(file.queue_limit) {
        if limit == 0 {
            bail!("--queue-limit must be at least 1");
        }
        node.ingest.queue_limit = limit;
    }
    node.nats = match (
        args.nats_url.or(file.nats_url),
        args.nats_stream.or(file.nats_stream),
    ) {
        (None, None) => None,
        (None, Some(_)) => bail!("--nats-stream needs --nats-url"),
        (Some(_), None) => {
            bail!("--nats-url needs --nats-stream (the JetStream stream to consume)")
        }
        (Some(url), Some(stream)) => {
            let mut nats = NatsConfig::new(url, stream);
            nats.subject = args.nats_subject.or(file.nats_subject);
            if let Some(consumer) = args.nats_consumer.or(file.nats_consumer) {
                nats.consumer = consumer;
            }
            nats.mode = args.nats_mode.or(file.nats_mode).unwrap_or_default();
            if let Some(batch) = args.nats_batch.or(file.nats_batch) {
                nats.batch = batch;
            }
            if let Some(secs) = args.nats_ack_wait.or(file.nats_ack_wait) {
                nats.ack_wait = Duration::try_from_secs_f64(secs)
                    .map_err(|_| anyhow::anyhow!("--nats-ack-wait must be a number of seconds"))?;
            }
            nats.validate()?;
            Some(nats)
        }
    };
    for (name, spec) in file.views {
        if let Some(mapping) = &spec.mapping {
            speedlayer_events::Mapping::compile(mapping, spec.value_type.typed())
                .with_context(|| format!("view '{name}' in the config file"))?;
        }
        node.views.push((name, spec));
    }
    if let Some(resp) = args.resp.or(file.resp) {
        node.resp = resp;
    }
    Ok(node)
}

/// Runs a node until SIGINT/SIGTERM, then shuts down cleanly.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    let node = Node::start(config.clone())
        .await
        .context("starting the node")?;
    eprintln!(
        "speedlayer node {} serving HTTP on http://{} and Redis on {} (data in {})",
        node.store.node_id(),
        node.http_addr,
        node.resp_addr,
        config.data_dir.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
