//! Command-line interface, as the README describes it (its flags and
//! subcommands are the interface users script against: keep old spellings working).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use speedlayer_api::{Consistency, QuorumMode};

/// speedlayer: the speed layer of a Lambda Architecture — realtime views (counters,
/// distinct counts, sets, max/min per key and time bucket) in a durable store.
#[derive(Debug, Parser)]
#[command(name = "speedlayer", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Log filter when `RUST_LOG` is unset: quiet for the interactive commands, and
    /// dependencies (the storage engine's per-table messages, HTTP internals) quiet
    /// unless they warn; `RUST_LOG` opens them (e.g. `RUST_LOG=info,fjall=debug`).
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "warn,speedlayer=info,speedlayer_node=info,speedlayer_store=info,speedlayer_cluster=info,speedlayer_ingest=info,speedlayer_server=info",
            // The demo's nodes going down and up (from the dashboard, and one after the
            // other at its end) are what it shows; their warnings would only scroll the
            // live table away.
            Command::Demo(_) => "warn,speedlayer_cluster=error",
            _ => "warn",
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. With no flags: a complete one-node database in ./speedlayer-data.
    Serve(Box<ServeArgs>),
    /// Start a local 3-node cluster, stream sample pageviews into it (with a batch
    /// hand-over) and show live views.
    Demo(DemoArgs),
    /// Talk to a running node.
    Ctl(CtlArgs),
    /// Measure throughput (storage, HTTP, fsync, epoch drop) and print figures.
    Bench(BenchArgs),
    /// Hand a batch view to a node: stream its NDJSON rows to
    /// `POST /v1/views/{view}/batch?covers_until=T` (see docs/batch.md).
    Import(ImportArgs),
    /// The small batch layer: recompute a view exactly from raw event files through its
    /// event mapping, and write the NDJSON rows `import` takes (see docs/batch.md).
    BatchExport(BatchExportArgs),
}

/// `serve` flags. Every flag can also come from the TOML file given by `--config` (same
/// names, with `_` for `-`); flags win over the file, the file over the defaults.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./speedlayer-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:7780].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Redis-protocol listen address [default: 127.0.0.1:7781].
    #[arg(long)]
    pub resp: Option<SocketAddr>,
    /// Internode listen address, also this node's name in the ring. Given explicitly,
    /// the node listens for peers even without --seeds, so others can join it later
    /// [default: 127.0.0.1:7782].
    #[arg(long)]
    pub cluster: Option<SocketAddr>,
    /// Node id [default: generated once and kept in the data directory].
    #[arg(long)]
    pub node_id: Option<String>,
    /// Cluster addresses of live members to join through, comma-separated; the node
    /// learns every other member from them by gossip. A node that lists its own address
    /// (or has no seeds) founds the cluster and owns its partitions at once (start every
    /// founding node with the same list); one that does not joins a running cluster and
    /// copies its partitions from their owners before it owns them.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<SocketAddr>>,
    /// Replication factor [default: 3].
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Secret shared by every node of the cluster; required when the cluster address is
    /// not loopback.
    #[arg(long, env = "SPEEDLAYER_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Password clients must present (RESP AUTH, HTTP bearer token).
    #[arg(long, env = "SPEEDLAYER_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// The node's TLS certificate chain (PEM, leaf first): the HTTP and Redis ports then
    /// speak only TLS (HTTPS, `redis-cli --tls`). Needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM) whose certificates clients must present on the HTTP and Redis ports
    /// (mutual TLS); any client with TLS when absent. Needs `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// This node's certificate for the cluster port (PEM; it must name the IP address of
    /// `--cluster`): every internode connection is then mutual TLS. Needs
    /// `--cluster-tls-key` and `--cluster-tls-ca`, and every node of the cluster must use it.
    #[arg(long, requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    pub cluster_tls_cert: Option<PathBuf>,
    /// The private key of `--cluster-tls-cert` (PEM).
    #[arg(long, requires = "cluster_tls_cert")]
    pub cluster_tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed every node's `--cluster-tls-cert`; a peer presenting any
    /// other certificate, or none, is refused.
    #[arg(long, requires = "cluster_tls_cert")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Key-owner shards (threads) [default: one per core, at least 2].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Largest accepted HTTP request body in bytes [default: 16 MiB].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Most connections at once on each of the Redis-protocol and HTTP ports; a further
    /// client gets Redis's `-ERR max number of clients reached`, or HTTP 503
    /// `too_many_connections` [default: 10000]. Lowered, with a warning, when the
    /// open-file limit (raised to its hard limit at start) cannot hold that many beside
    /// 512 descriptors kept for storage and peers.
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Seconds a Redis-protocol request, or an HTTP request's line and headers, may take
    /// to arrive once its first byte has, and an HTTP body may go without a byte; a
    /// client that stalls mid-request is closed (idle Redis clients are kept)
    /// [default: 30].
    #[arg(long)]
    pub request_timeout_secs: Option<u64>,
    /// Partitions of the ring, fixed at cluster creation; the same on every node
    /// [default: 256].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Consistency of requests that do not choose one (RESP, HTTP without
    /// `consistency=`): one, quorum or all [default: quorum].
    #[arg(long)]
    pub consistency: Option<Consistency>,
    /// Quorum of writes that do not choose one: sloppy (fallback nodes with hints) or
    /// strict [default: sloppy].
    #[arg(long)]
    pub quorum: Option<QuorumMode>,
    /// Deliver hints to their owners when they are back [default: on]. `off` keeps
    /// them (only to test read repair and anti-entropy).
    #[arg(long)]
    pub hinted_handoff: Option<Switch>,
    /// Largest clock offset from its peers a node accepts, in ms: a node whose clock is
    /// off by more from most of its peers refuses to coordinate writes until it is back
    /// within it (pings measure the offsets; see `/v1/cluster`) [default: 500].
    #[arg(long)]
    pub max_clock_offset_ms: Option<u64>,
    /// Seconds between anti-entropy rounds, in which the replicas of each partition
    /// compare Merkle digests of their data and exchange what differs; 0 turns it off
    /// [default: 30].
    #[arg(long)]
    pub anti_entropy_interval_secs: Option<u64>,
    /// MiB of key states anti-entropy may move per second, to keep foreground latency
    /// [default: 32].
    #[arg(long)]
    pub anti_entropy_mib_per_sec: Option<u64>,
    /// How far ahead of the node's clock an update's event time (`ts`) may be, in
    /// seconds; later ones are refused with a 400 / `ERR` [default: 86400].
    #[arg(long)]
    pub max_future_ts_secs: Option<u64>,
    /// Longest register value or set/HLL member an update may carry, in bytes; longer
    /// ones are refused (HTTP 413 `value_too_large`, Redis `ERR`), and a Redis bulk string
    /// longer than it (or 64 KiB, whichever is more) closes the connection before it is
    /// read [default: 1048576].
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    /// Resident memory the node aims to stay within at any number of keys, e.g. `4GiB`,
    /// `512MiB` or bytes: a quarter goes to the cache of key states (cold keys are shed to
    /// disk past it), the rest to memtables, the block cache and work in flight; at
    /// least 512 MiB [default: a quarter of the RAM].
    #[arg(long)]
    pub memory_limit: Option<bytesize::ByteSize>,
    /// Events the async queue may hold before `mode=async` submits are refused with 429
    /// [default: 10000000].
    #[arg(long)]
    pub queue_limit: Option<u64>,
    /// Seconds an older batch boundary stays readable after a newer one is published,
    /// before its realtime epochs and batch table are dropped [default: 30].
    #[arg(long)]
    pub batch_grace: Option<u64>,
    /// Drop realtime epochs older than this many seconds even when no batch view covers
    /// them (counted in speedlayer_store_epochs_expired_uncovered_total, with a warning)
    /// [default: off: kept until a batch view covers them].
    #[arg(long)]
    pub retention: Option<u64>,
    /// Consume a NATS JetStream stream into the views' mappings (exactly once, acking
    /// only durable events): the server URL, e.g. nats://127.0.0.1:4222. Needs
    /// --nats-stream.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// JetStream stream to consume (it must exist, with limits retention).
    #[arg(long)]
    pub nats_stream: Option<String>,
    /// Only this subject of the stream, wildcards allowed [default: every subject].
    #[arg(long)]
    pub nats_subject: Option<String>,
    /// Durable pull consumer the node owns; its ack floor is the position
    /// [default: speedlayer].
    #[arg(long)]
    pub nats_consumer: Option<String>,
    /// Ack a batch once its updates are applied (sync) or durably queued (async)
    /// [default: sync].
    #[arg(long)]
    pub nats_mode: Option<speedlayer_ingest::Mode>,
    /// Messages per batch, 1 to 1000 [default: 500].
    #[arg(long)]
    pub nats_batch: Option<usize>,
    /// Seconds JetStream waits for an ack before redelivering [default: 5].
    #[arg(long)]
    pub nats_ack_wait: Option<f64>,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Target events per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
}

/// `ctl` flags.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The node to talk to (`--password` and `--requirepass` both work).
    #[command(flatten)]
    pub access: NodeAccess,
    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Node health, cluster membership (state, partitions owned, hints held), views and
    /// their live epochs.
    Status,
    /// Decommission the node: it hands its partitions to the next owners, then leaves
    /// the ring (follow it with `ctl status`; stop the process once it shows `left`).
    Leave,
    /// Take a dead node out of the ring (its cluster address, as `ctl status` lists it);
    /// its partitions are rebuilt from the surviving replicas.
    Remove {
        /// Cluster address of the dead node.
        node: String,
    },
}

/// `import` flags.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// View the batch rows belong to.
    #[arg(long)]
    pub view: String,
    /// Unix seconds the batch covers up to (exclusive): a multiple of the view's
    /// epoch_secs, later than its current boundary.
    #[arg(long, value_name = "T")]
    pub covers_until: u64,
    /// The node to talk to.
    #[command(flatten)]
    pub access: NodeAccess,
    /// NDJSON rows `{"key":..,"clustering":..,"value":..}`; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// How a command reaches a node's HTTP API (`ctl`, `import`, and `batch-export --view`).
#[derive(Debug, Args)]
pub struct NodeAccess {
    /// HTTP address of the node (or `SPEEDLAYER_NODE`).
    #[arg(long, env = "SPEEDLAYER_NODE", default_value = "127.0.0.1:7780")]
    pub node: String,
    /// Password, if the node requires one (sent as an HTTP bearer token).
    #[arg(
        long,
        alias = "requirepass",
        env = "SPEEDLAYER_REQUIREPASS",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify a node's TLS certificate with (the node serves TLS
    /// with `--tls-cert`); an address without a scheme then means `https://`.
    #[arg(long, env = "SPEEDLAYER_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for a node that requires one (`--tls-client-ca`).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// `batch-export` flags: where the view's declaration comes from (exactly one of
/// `--view-spec` and `--view`), the boundary, and the event files.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("declaration").required(true).args(["view_spec", "view"])))]
pub struct BatchExportArgs {
    /// Count only events with ts < T (Unix seconds); import the output with the same T.
    #[arg(long, value_name = "T")]
    pub covers_until: u64,
    /// The view's declaration as JSON (`{"type":..,"epoch_secs":..,"mapping":{..}}`), or
    /// `@FILE` to read it from a file.
    #[arg(long, value_name = "JSON_OR_@FILE")]
    pub view_spec: Option<String>,
    /// Name of a view to fetch the declaration of from `--node`.
    #[arg(long)]
    pub view: Option<String>,
    /// The node to talk to.
    #[command(flatten)]
    pub access: NodeAccess,
    /// Where to write the rows [default: standard output]. Written to a temporary file
    /// beside it and renamed when complete, so a failed run leaves no partial batch.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// NDJSON event files, read in order; `-` reads standard input.
    #[arg(value_name = "EVENTS_FILE", required = true)]
    pub events: Vec<PathBuf>,
}

/// `bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchWhich,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhich {
    /// Sync updates/s against the storage layer and through HTTP batches, interleaved with
    /// raw fsyncs/s of the same disk; medians of several rounds.
    Writes {
        /// Rounds of each measurement (interleaved).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 32)]
        writers: usize,
        /// Updates per request (per storage call / per HTTP batch).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Distinct keys written.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Directory for the benchmark's databases [default: a temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// NDJSON events/s through `POST /v1/events` (3 mapped views), sync and async
    /// interleaved, with the pre-aggregation ratio; medians of several rounds.
    Events {
        /// Rounds of each mode (interleaved).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Bodies per round.
        #[arg(long, default_value_t = 40)]
        bodies: usize,
        /// Events per body.
        #[arg(long, default_value_t = 25_000)]
        events: usize,
        /// Directory for the benchmark's database [default: a temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Batch-view import throughput (rows/s) beside redis-server loading as many SETs,
    /// and read latency during imports and switches. Needs `redis-server` on the PATH
    /// (Debian's redis-server package).
    Import {
        /// Rows per import.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Rounds (ours and the peer's interleaved).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Concurrent HTTP readers measuring latency.
        #[arg(long, default_value_t = 4)]
        readers: usize,
        /// Nodes of a local cluster (in this process) to import into; 1: a single node.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Directory for the benchmark's database [default: a temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Time to drop an epoch holding N keys, for several N.
    DropEpoch {
        /// Key counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
        keys: Vec<usize>,
        /// Rounds per key count.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Directory for the benchmark's databases [default: a temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}
