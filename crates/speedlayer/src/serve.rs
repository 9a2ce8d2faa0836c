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
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    cluster_tls_cert: Option<PathBuf>,
    cluster_tls_key: Option<PathBuf>,
    cluster_tls_ca: Option<PathBuf>,
    shards: Option<usize>,
    max_body_bytes: Option<usize>,
    max_clients: Option<usize>,
    request_timeout_secs: Option<u64>,
    partitions: Option<u32>,
    consistency: Option<Consistency>,
    quorum: Option<QuorumMode>,
    hinted_handoff: Option<bool>,
    max_clock_offset_ms: Option<u64>,
    anti_entropy_interval_secs: Option<u64>,
    anti_entropy_mib_per_sec: Option<u64>,
    max_future_ts_secs: Option<u64>,
    max_value_bytes: Option<usize>,
    memory_limit: Option<bytesize::ByteSize>,
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
    node.tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
        args.tls_client_ca.or(file.tls_client_ca),
    ) {
        (Some(cert), Some(key), client_ca) => Some(speedlayer_node::tls::TlsConfig {
            cert,
            key,
            client_ca,
        }),
        (None, None, None) => None,
        _ => bail!("TLS needs both --tls-cert and --tls-key (tls_cert and tls_key in the config file); --tls-client-ca needs them too"),
    };
    node.cluster_tls = match (
        args.cluster_tls_cert.or(file.cluster_tls_cert),
        args.cluster_tls_key.or(file.cluster_tls_key),
        args.cluster_tls_ca.or(file.cluster_tls_ca),
    ) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(speedlayer_node::tls::ClusterTlsConfig { cert, key, ca })
        }
        (None, None, None) => None,
        _ => bail!("TLS between nodes needs --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca together (cluster_tls_cert, cluster_tls_key, cluster_tls_ca in the config file)"),
    };
    node.shards = args.shards.or(file.shards);
    if let Some(max) = args.max_clients.or(file.max_clients) {
        node.max_clients = max;
    }
    if let Some(secs) = args.request_timeout_secs.or(file.request_timeout_secs) {
        node.request_timeout = Duration::from_secs(secs.max(1));
    }
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
    if cluster.ip().is_unspecified() && !seeds.is_empty() {
        bail!(
            "cluster address {cluster} is a wildcard, but it is also this node's name in the              ring, which the other nodes dial: give the address they reach it at (e.g.              --cluster 10.0.0.5:7782)"
        );
    }
    let mut cluster_config = ClusterConfig::single(cluster);
    // An explicit cluster address: others may join this node later.
    cluster_config.always_listen = args.cluster.or(file.cluster).is_some();
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
    if let Some(ms) = args.max_clock_offset_ms.or(file.max_clock_offset_ms) {
        cluster_config.max_clock_offset = Duration::from_millis(ms);
    }
    if let Some(secs) = args
        .anti_entropy_interval_secs
        .or(file.anti_entropy_interval_secs)
    {
        cluster_config.anti_entropy.interval = (secs > 0).then(|| Duration::from_secs(secs));
    }
    if let Some(mib) = args
        .anti_entropy_mib_per_sec
        .or(file.anti_entropy_mib_per_sec)
    {
        if mib == 0 {
            bail!("--anti-entropy-mib-per-sec must be at least 1 (turn anti-entropy off with --anti-entropy-interval-secs 0)");
        }
        cluster_config.anti_entropy.bytes_per_sec = mib.saturating_mul(1024 * 1024);
    }
    node.cluster = cluster_config;
    if let Some(secs) = args.max_future_ts_secs.or(file.max_future_ts_secs) {
        node.max_future_ts = Duration::from_secs(secs);
    }
    if let Some(bytes) = args.max_value_bytes.or(file.max_value_bytes) {
        node.max_value_bytes = bytes;
    }
    if let Some(limit) = args.memory_limit.or(file.memory_limit) {
        if limit.as_u64() < speedlayer_store::MIN_MEMORY_LIMIT {
            bail!(
                "--memory-limit {limit} is below the smallest a node runs in ({})",
                bytesize::ByteSize(speedlayer_store::MIN_MEMORY_LIMIT)
            );
        }
        node.memory_limit = Some(limit.as_u64());
    }
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
///
/// A node whose storage fails (a journal sync error: a full disk, an I/O error) refuses
/// writes from then on, and `/health` answers 503; it cannot clear that state in place
/// (after a failed fsync the kernel may have dropped dirty pages, so a retried sync could
/// lie). It waits until its data directory accepts a synced write again, shuts down, and
/// restarts itself in the same process (exec of the same command line), which recovers
/// exactly what was durable; its peers' hints bring what it refused meanwhile.
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
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = storage_failure(&node.store) => {
            tracing::error!(
                data_dir = %config.data_dir.display(),
                "storage failed (a journal sync error: disk full or I/O error); refusing writes until the data directory accepts writes again, then restarting"
            );
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = writable(&config.data_dir) => {
                    tracing::warn!("the data directory accepts writes again: restarting to recover what is durable");
                    let stopped = tokio::time::timeout(RESTART_SHUTDOWN, node.shutdown()).await;
                    if !matches!(stopped, Ok(Ok(()))) {
                        tracing::warn!("shutting down before the restart did not finish cleanly");
                    }
                    return Err(restart_in_place());
                }
            }
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await?;
    Ok(())
}

/// How long a restart after a storage failure waits for requests in flight.
const RESTART_SHUTDOWN: Duration = Duration::from_secs(10);
/// Bytes written (and synced) to tell that the data directory has space again.
const PROBE_BYTES: usize = 4 << 20;

/// Resolves once the store has failed.
async fn storage_failure(store: &speedlayer_store::Store) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if store.has_failed() {
            return;
        }
    }
}

/// Resolves once a probe file of [`PROBE_BYTES`] can be written and synced in `dir`
/// (checked every second, at least two seconds after the failure).
async fn writable(dir: &std::path::Path) {
    let probe = dir.join(".speedlayer-space-probe");
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        let path = probe.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let written = (|| {
                use std::io::Write;
                let mut file = std::fs::File::create(&path)?;
                file.write_all(&vec![0u8; PROBE_BYTES])?;
                file.sync_all()
            })();
            let _ = std::fs::remove_file(&path);
            written.is_ok()
        })
        .await
        .unwrap_or(false);
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Replaces this process by a fresh start of the same command line (same pid, so a
/// supervisor or a test still tracks it). Returns only if that fails.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    match std::env::current_exe() {
        Ok(exe) => {
            let error = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .exec();
            anyhow::anyhow!("restarting after a storage failure: {error}")
        }
        Err(e) => anyhow::anyhow!("restarting after a storage failure: locating the binary: {e}"),
    }
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
