//! `speedlayer-torture`: run the fault suite against the `speedlayer` binary, check a kept
//! history again, or (internally) be a workload client.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use speedlayer_torture::checker;
use speedlayer_torture::history;
use speedlayer_torture::net;
use speedlayer_torture::run::{run, RunConfig};
use speedlayer_torture::scenario::{FaultKind, Scenario};
use speedlayer_torture::workload::{run_client, ClientConfig};

/// A Jepsen-style fault suite for speedlayer (needs root, iproute2, nftables; faketime for
/// the skew fault).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster in network namespaces, play a scenario against it under a
    /// workload, and check the history. Exits 1 when a property fails.
    Run(Box<RunArgs>),
    /// Check a kept history directory again.
    Check {
        /// The run's directory (its `history/` is read) or the history directory itself.
        dir: PathBuf,
    },
    /// Remove network namespaces and bridges that killed runs left behind.
    Cleanup,
    /// A workload client (started by `run` inside a client namespace).
    #[command(hide = true)]
    Client {
        /// The client's configuration, as JSON.
        #[arg(long)]
        config: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The speedlayer binary under test [default: `speedlayer` next to this binary].
    #[arg(long)]
    speedlayer: Option<PathBuf>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Replication factor [default: the number of nodes, at most 3].
    #[arg(long)]
    replicas: Option<usize>,
    /// Fault cycles drawn from `--seed` (ignored with --scenario).
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Seed of the scenario and of the clients' choices [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds the cycles take in turn, comma-separated (kill, pause, isolate, split,
    /// bridge, oneway, loss, cut, rolling, fulldisk, skew) [default: all].
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Play this scenario instead of a random one, e.g. "Kill(b); Wait(3s); Restart(b);
    /// AssertConverged".
    #[arg(long)]
    scenario: Option<String>,
    /// Shortest and longest time a fault holds, in ms.
    #[arg(long, value_delimiter = ',', default_values_t = [1500u64, 4000])]
    hold_ms: Vec<u64>,
    /// Where the history, node logs and report go [default: a new temporary directory, kept].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Sequential workers per client (one client per node).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Client timeout per attempt, in ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Pause between one worker's operations, in ms.
    #[arg(long, default_value_t = 5)]
    think_ms: u64,
    /// Longest wait for convergence after a heal, in seconds.
    #[arg(long, default_value_t = 60)]
    converge_secs: u64,
    /// Size of each node's tmpfs data directory in MiB (the full-disk fault needs one).
    #[arg(long, default_value_t = 512)]
    tmpfs_mib: u32,
    /// BROKEN on purpose: send HTTP increments without producer ids, so retries double
    /// count. The checker must fail.
    #[arg(long)]
    break_anonymous_retries: bool,
    /// Extra `serve` flags for every node (e.g. a broken configuration:
    /// `--serve-arg=--hinted-handoff --serve-arg=off`).
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
}

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match cli.command {
        Command::Client { config } => {
            let config: ClientConfig = serde_json::from_str(&config).context("client config")?;
            runtime.block_on(run_client(config))?;
            Ok(())
        }
        Command::Cleanup => {
            let removed = net::cleanup_stale();
            println!("removed {} leftovers: {}", removed.len(), removed.join(" "));
            Ok(())
        }
        Command::Check { dir } => {
            let history_dir = if dir.join("history").is_dir() {
                dir.join("history")
            } else {
                dir
            };
            let records = history::read_dir(&history_dir)?;
            let report = checker::check(&records);
            print!("{report}");
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run(args) => runtime.block_on(run_command(*args)),
    }
}

async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("locating this binary")?;
    let speedlayer = match args.speedlayer {
        Some(path) => path,
        None => me.with_file_name("speedlayer"),
    };
    if !speedlayer.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --speedlayer",
            speedlayer.display()
        );
    }
    let seed = args.seed.unwrap_or_else(|| history::now_us() % 1_000_000);
    let (lo, hi) = match args.hold_ms.as_slice() {
        [lo, hi] if lo <= hi => (*lo, *hi),
        [one] => (*one, *one),
        _ => bail!("--hold-ms takes MIN,MAX"),
    };
    let kinds: Vec<FaultKind> = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|f| FaultKind::from_name(f).with_context(|| format!("unknown fault kind '{f}'")))
            .collect::<anyhow::Result<_>>()?
    };
    let scenario = match &args.scenario {
        Some(text) => Scenario::parse(text)?,
        None => Scenario::random(
            seed,
            args.cycles,
            args.nodes,
            &kinds,
            (Duration::from_millis(lo), Duration::from_millis(hi)),
        ),
    };
    if let Some(n) = scenario.highest_node() {
        if n >= args.nodes {
            bail!(
                "the scenario names node {} but the cluster has {} nodes",
                n + 1,
                args.nodes
            );
        }
    }
    let dir = match args.dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("speedlayer-torture-")
            .tempdir()?
            .keep(),
    };
    let config = RunConfig {
        speedlayer,
        torture: me,
        nodes: args.nodes,
        replicas: args.replicas.unwrap_or(args.nodes.min(3)),
        scenario: scenario.clone(),
        dir,
        seed,
        workers: args.workers,
        timeout_ms: args.timeout_ms,
        think_ms: args.think_ms,
        converge_within: Duration::from_secs(args.converge_secs),
        anonymous_retries: args.break_anonymous_retries,
        serve_args: args.serve_arg,
        tmpfs_mib: Some(args.tmpfs_mib),
    };
    println!(
        "seed {seed}, {} nodes, history in {}",
        args.nodes,
        config.dir.display()
    );
    println!("scenario: {scenario}");
    let bar = ProgressBar::new(scenario.steps.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |index: usize, step: &speedlayer_torture::scenario::Step| {
        bar.set_position(index as u64);
        bar.set_message(step.to_string());
    };
    // Ctrl-C drops the run: its nodes are killed, its mounts and namespaces removed.
    let outcome = tokio::select! {
        outcome = run(&config, &progress) => outcome?,
        _ = tokio::signal::ctrl_c() => {
            bar.abandon_with_message("interrupted");
            bail!("interrupted; the history so far is in {}", config.dir.display());
        }
    };
    bar.finish_with_message("done");
    print!("{}", outcome.report);
    println!(
        "unresolved after draining: {}; history kept in {}",
        outcome.unresolved,
        outcome.dir.display()
    );
    if !outcome.report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
