//! `speedlayer bench`: throughput figures printed side by side with the machine's own
//! fsync rate, measured interleaved and repeated (these machines have slow phases), and
//! reported as medians.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_client::registry::Registry;
use speedlayer_api::{Update, ViewSpec};
use speedlayer_core::{Epoch, Key, Op, ValueType};
use speedlayer_node::{Node, NodeConfig};
use speedlayer_store::{Store, StoreConfig};

use crate::cli::{BenchArgs, BenchWhich};
use crate::demo::Rng;

mod events;
mod import;

/// Runs the chosen benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchWhich::Writes {
            rounds,
            secs,
            writers,
            batch,
            keys,
            dir,
        } => {
            let (_tmp, dir) = work_dir(dir)?;
            writes(
                &dir,
                rounds,
                Duration::from_secs_f64(secs),
                writers,
                batch,
                keys,
            )
            .await
        }
        BenchWhich::Import {
            rows,
            rounds,
            readers,
            nodes,
            dir,
        } => {
            let (_tmp, dir) = work_dir(dir)?;
            import::run(&dir, rows, rounds, readers, nodes).await
        }
        BenchWhich::DropEpoch { keys, rounds, dir } => {
            let (_tmp, dir) = work_dir(dir)?;
            drop_epoch(&dir, &keys, rounds).await
        }
        BenchWhich::Events {
            rounds,
            clients,
            bodies,
            events,
            dir,
        } => {
            let (_tmp, dir) = work_dir(dir)?;
            events::run(&dir, rounds, clients, bodies, events).await
        }
    }
}

fn work_dir(dir: Option<PathBuf>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            Ok((None, dir))
        }
        None => {
            let tmp = tempfile::tempdir_in(".").or_else(|_| tempfile::tempdir())?;
            let path = tmp.path().to_path_buf();
            Ok((Some(tmp), path))
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Raw `write + fdatasync` pairs per second on a file in `dir`: the ceiling for a
/// database that syncs once per write.
fn fsyncs_per_sec(dir: &Path, duration: Duration) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        file.write_all(&[0u8; 512])?;
        file.sync_data()?;
        syncs += 1;
    }
    std::fs::remove_file(&path)?;
    Ok(syncs as f64 / started.elapsed().as_secs_f64())
}

fn bench_updates(rng: &mut Rng, batch: usize, keys: usize) -> Vec<Update> {
    (0..batch)
        .filter_map(|_| {
            let key = format!("k{}", rng.next_u64() % keys as u64);
            Key::new(key.into_bytes(), Vec::new())
                .ok()
                .map(|key| Update {
                    key,
                    op: Op::Incr(1),
                    ts_us: None,
                    id: None,
                })
        })
        .collect()
}

struct Figures {
    updates_per_sec: f64,
    updates_per_fsync: f64,
}

async fn storage_round(
    store: &Store,
    duration: Duration,
    writers: usize,
    batch: usize,
    keys: usize,
) -> anyhow::Result<Figures> {
    let done = Arc::new(AtomicU64::new(0));
    let fsyncs_before = store.metrics().fsyncs.get();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(w as u64 + 11);
            while started.elapsed() < duration {
                let updates = bench_updates(&mut rng, batch, keys);
                let n = updates.len() as u64;
                store.apply("bench", updates).await?;
                done.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let updates = done.load(Ordering::Relaxed) as f64;
    let fsyncs = (store.metrics().fsyncs.get() - fsyncs_before).max(1) as f64;
    Ok(Figures {
        updates_per_sec: updates / elapsed,
        updates_per_fsync: updates / fsyncs,
    })
}

async fn http_round(
    base: &str,
    node: &Node,
    duration: Duration,
    writers: usize,
    batch: usize,
    keys: usize,
) -> anyhow::Result<Figures> {
    let client = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    let fsyncs_before = node.store.metrics().fsyncs.get();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = client.clone();
        let url = format!("{base}/v1/views/bench/update");
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(w as u64 + 101);
            while started.elapsed() < duration {
                let mut body = String::with_capacity(batch * 40);
                body.push('[');
                for i in 0..batch {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&format!(
                        r#"{{"key":"k{}","op":"incr"}}"#,
                        rng.next_u64() % keys as u64
                    ));
                }
                body.push(']');
                let response = client.post(&url).body(body).send().await?;
                anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
                done.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let updates = done.load(Ordering::Relaxed) as f64;
    let fsyncs = (node.store.metrics().fsyncs.get() - fsyncs_before).max(1) as f64;
    Ok(Figures {
        updates_per_sec: updates / elapsed,
        updates_per_fsync: updates / fsyncs,
    })
}

async fn writes(
    dir: &Path,
    rounds: usize,
    duration: Duration,
    writers: usize,
    batch: usize,
    keys: usize,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let store = Store::open(StoreConfig::new(dir.join("storage")), &mut registry)?;
    store.declare_view("bench", ViewSpec::new(ValueType::Counter))?;
    let mut config = NodeConfig::new(dir.join("http"));
    config.http = "127.0.0.1:0".parse()?;
    config.resp = "127.0.0.1:0".parse()?;
    let node = Node::start(config).await?;
    node.store
        .declare_view("bench", ViewSpec::new(ValueType::Counter))?;
    let base = format!("http://{}", node.http_addr);
    let (mut fsync, mut direct, mut direct_ratio, mut http, mut http_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let bar = ProgressBar::new(rounds as u64 * 3);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    for round in 0..rounds {
        bar.set_message(format!("round {}: fsync probe", round + 1));
        let probe_dir = dir.to_path_buf();
        let rate =
            tokio::task::spawn_blocking(move || fsyncs_per_sec(&probe_dir, duration)).await??;
        fsync.push(rate);
        bar.inc(1);
        bar.set_message(format!("round {}: storage layer", round + 1));
        let f = storage_round(&store, duration, writers, batch, keys).await?;
        direct.push(f.updates_per_sec);
        direct_ratio.push(f.updates_per_fsync);
        bar.inc(1);
        bar.set_message(format!("round {}: HTTP batches", round + 1));
        let f = http_round(&base, &node, duration, writers, batch, keys).await?;
        http.push(f.updates_per_sec);
        http_ratio.push(f.updates_per_fsync);
        bar.inc(1);
        bar.suspend(|| println!(
            "round {}: fsync {:>8.0}/s | storage {:>9.0} updates/s ({:>6.0}/fsync) | HTTP {:>9.0} updates/s ({:>6.0}/fsync)",
            round + 1, fsync[round], direct[round], direct_ratio[round], http[round], http_ratio[round]
        ));
    }
    bar.finish_and_clear();
    let fsync_median = median(&mut fsync);
    let direct_median = median(&mut direct);
    let http_median = median(&mut http);
    println!("\nsync updates (counter incr, {writers} concurrent writers, {batch} updates per call, {keys} keys), medians of {rounds} interleaved rounds of {:.1}s:", duration.as_secs_f64());
    println!(
        "  {:<34} {:>12}",
        "raw write+fdatasync of this disk",
        format!("{fsync_median:.0}/s")
    );
    println!(
        "  {:<34} {:>12}   {:>7.0} updates per journal sync   {:>7.1}x the fsync rate",
        "storage layer (Store::apply)",
        format!("{direct_median:.0}/s"),
        median(&mut direct_ratio),
        direct_median / fsync_median.max(1.0)
    );
    println!(
        "  {:<34} {:>12}   {:>7.0} updates per journal sync   {:>7.1}x the fsync rate",
        "HTTP JSON batches (same process)",
        format!("{http_median:.0}/s"),
        median(&mut http_ratio),
        http_median / fsync_median.max(1.0)
    );
    node.shutdown().await?;
    Ok(())
}

async fn drop_epoch(dir: &Path, key_counts: &[usize], rounds: usize) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &keys in key_counts {
        let mut times = Vec::new();
        for round in 0..rounds {
            let path = dir.join(format!("drop-{keys}-{round}"));
            let mut registry = Registry::default();
            let store = Store::open(StoreConfig::new(&path), &mut registry)?;
            store.declare_view("bench", ViewSpec::new(ValueType::Counter))?;
            let bar = ProgressBar::new(keys as u64);
            bar.set_style(ProgressStyle::with_template(
                "{bar:30} {pos}/{len} keys {msg}",
            )?);
            bar.set_message(format!("loading epoch ({keys} keys, round {})", round + 1));
            let epoch_ts = 1_700_000_000i64 * 1_000_000;
            let chunk = 10_000;
            let mut written = 0;
            while written < keys {
                let n = chunk.min(keys - written);
                let updates: Vec<Update> = (written..written + n)
                    .filter_map(|i| {
                        Key::new(format!("key-{i:08}").into_bytes(), Vec::new())
                            .ok()
                            .map(|key| Update {
                                key,
                                op: Op::Incr(1),
                                ts_us: Some(epoch_ts),
                                id: None,
                            })
                    })
                    .collect();
                store.apply("bench", updates).await?;
                written += n;
                bar.set_position(written as u64);
            }
            bar.finish_and_clear();
            let epoch =
                Epoch::containing(epoch_ts, 3600).context("epoch of the bench timestamp")?;
            // States reach the epoch keyspace at a checkpoint; do it outside the timing so
            // the figure is the drop alone.
            store.checkpoint().await?;
            let disk_before = store.disk_bytes()?;
            let started = Instant::now();
            let existed = store.drop_epochs("bench", &[epoch]).await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(existed, "the loaded epoch was not live");
            times.push(elapsed.as_secs_f64() * 1000.0);
            bar.suspend(|| {
                println!(
                    "{keys} keys: dropped in {:.2} ms; database {} MiB before the drop",
                    elapsed.as_secs_f64() * 1000.0,
                    disk_before / (1024 * 1024)
                )
            });
            drop(store);
            std::fs::remove_dir_all(&path).ok();
        }
        results.push((keys, median(&mut times)));
    }
    println!("\ndrop of one epoch (keyspace delete + journal sync), median of {rounds} rounds:");
    for (keys, ms) in results {
        println!("  {keys:>10} keys   {ms:>8.2} ms");
    }
    Ok(())
}
