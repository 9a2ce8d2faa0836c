//! `speedlayer bench import`: batch-view import throughput and what an import (and the
//! switch it ends with) does to read latency, beside a peer.
//!
//! Each round: readers run alone for a window (baseline latencies), then an import of N
//! rows runs while the same readers go on (latencies during the import and the switch),
//! then the peer — `redis-server` with an append-only file, loading N `SET`s pipelined
//! over one connection (redis-cli --pipe's method) — loads the same number of rows.
//! Ours and the peer's runs alternate, rounds repeat, and the report gives medians and
//! the ratio (these machines have slow phases; a single run says little).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use speedlayer_api::ViewSpec;
use speedlayer_core::ValueType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::median;
use crate::demo::{start_local_cluster, stop_local_cluster, Rng};

/// Hour-aligned start of the simulated history: boundaries are hours after it.
const BASE: u64 = 1_700_002_800;

/// Figures of one round.
struct Round {
    rows_per_sec: f64,
    peer_rows_per_sec: Option<f64>,
    baseline: Latencies,
    during: Latencies,
}

#[derive(Clone, Copy, Default)]
struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
    reads: usize,
}

/// Runs the benchmark: `rows` rows per import, `rounds` rounds, `readers` concurrent
/// readers.
pub async fn run(
    dir: &Path,
    rows: usize,
    rounds: usize,
    readers: usize,
    nodes: usize,
) -> anyhow::Result<()> {
    let (nodes, _) = start_local_cluster(dir, nodes.max(1), |config| {
        config.views = vec![("bench".into(), ViewSpec::new(ValueType::Counter))];
    })
    .await
    .context("starting the nodes")?;
    let base = format!("http://{}", nodes[0].http_addr);
    let body = bytes::Bytes::from(rows_ndjson(rows));
    let peer = Peer::start(dir).await;
    if let Err(e) = &peer {
        println!("peer skipped: {e:#}");
    }
    let bar = ProgressBar::new(rounds as u64).with_style(
        ProgressStyle::with_template("import rounds [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    for round in 0..rounds {
        bar.set_message(format!("{rows} rows"));
        let covers_until = BASE + 3600 * (round as u64 + 1);
        results.push(
            one_round(
                &base,
                &body,
                covers_until,
                rows,
                readers,
                peer.as_ref().ok(),
            )
            .await?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    report(rows, readers, nodes.len(), &mut results);
    stop_local_cluster(nodes).await
}

fn report(rows: usize, readers: usize, nodes: usize, results: &mut [Round]) {
    let pick = |f: &dyn Fn(&Round) -> f64| median(&mut results.iter().map(f).collect::<Vec<_>>());
    let ours = pick(&|r| r.rows_per_sec);
    let (b50, b99) = (pick(&|r| r.baseline.p50_ms), pick(&|r| r.baseline.p99_ms));
    let (d50, d99) = (pick(&|r| r.during.p50_ms), pick(&|r| r.during.p99_ms));
    let reads = pick(&|r| (r.baseline.reads + r.during.reads) as f64);
    let place = if nodes == 1 {
        "one node".to_string()
    } else {
        format!("{nodes} nodes in this process, 3 replicas: every row staged on 3")
    };
    println!(
        "batch import of {rows} rows ({place}; NDJSON over HTTP, staged, fsynced, published), medians of {} rounds:",
        results.len()
    );
    println!("  speedlayer import                 {ours:>12.0} rows/s");
    let peers: Vec<f64> = results.iter().filter_map(|r| r.peer_rows_per_sec).collect();
    if !peers.is_empty() {
        let peer = median(&mut peers.clone());
        println!(
            "  redis-server SET, pipelined (aof everysec) {peer:>12.0} rows/s   ratio {:.2}",
            ours / peer
        );
    }
    println!("reads during the import and switch ({readers} concurrent readers, ~{reads:.0} reads a round):");
    println!("  without an import   p50 {b50:>7.2} ms   p99 {b99:>7.2} ms");
    println!(
        "  during the import   p50 {d50:>7.2} ms   p99 {d99:>7.2} ms   (p99 x{:.2})",
        d99 / b99.max(1e-9)
    );
}

/// `rows` rows of the bench view as NDJSON, one key per row.
fn rows_ndjson(rows: usize) -> String {
    let mut out = String::with_capacity(rows * 60);
    for i in 0..rows {
        out.push_str(&format!(
            "{{\"key\":\"user-{i:08}\",\"clustering\":\"h0\",\"value\":{}}}\n",
            i % 1000
        ));
    }
    out
}

async fn one_round(
    base: &str,
    body: &bytes::Bytes,
    covers_until: u64,
    rows: usize,
    readers: usize,
    peer: Option<&Peer>,
) -> anyhow::Result<Round> {
    let client = reqwest::Client::new();
    // Baseline: readers alone, for about as long as an import took last time (2 s).
    let baseline = read_while(&client, base, readers, rows, async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    })
    .await?;
    let mut elapsed = Duration::ZERO;
    let during = read_while(&client, base, readers, rows, async {
        let started = Instant::now();
        let response = client
            .post(format!(
                "{base}/v1/views/bench/batch?covers_until={covers_until}"
            ))
            .body(body.clone())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("import: {}: {}", response.status(), response.text().await?);
        }
        elapsed = started.elapsed();
        Ok(())
    })
    .await?;
    let peer_rows_per_sec = match peer {
        Some(peer) => Some(rows as f64 / peer.load(rows).await?.as_secs_f64()),
        None => None,
    };
    Ok(Round {
        rows_per_sec: rows as f64 / elapsed.as_secs_f64(),
        peer_rows_per_sec,
        baseline,
        during,
    })
}

/// Runs `readers` readers of random rows until `work` ends; their latencies.
async fn read_while(
    client: &reqwest::Client,
    base: &str,
    readers: usize,
    rows: usize,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Latencies> {
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..readers)
        .map(|r| {
            let (client, stop, samples) = (client.clone(), stop.clone(), samples.clone());
            let url = format!("{base}/v1/views/bench/get");
            tokio::spawn(async move {
                let mut rng = Rng::new(r as u64 + 1);
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("user-{:08}", rng.next_u64() % rows.max(1) as u64);
                    let started = Instant::now();
                    let ok = client
                        .get(&url)
                        .query(&[("key", key.as_str()), ("clustering", "h0")])
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        mine.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                samples.lock().map(|mut s| s.extend(mine)).ok();
            })
        })
        .collect();
    let result = work.await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    result?;
    let mut samples = std::mem::take(
        &mut *samples
            .lock()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?,
    );
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Latencies {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        reads: samples.len(),
    })
}

/// A `redis-server` child with an append-only file, synced every second.
struct Peer {
    child: tokio::process::Child,
    port: u16,
}

impl Peer {
    async fn start(dir: &Path) -> anyhow::Result<Peer> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let peer_dir = dir.join("redis-peer");
        std::fs::create_dir_all(&peer_dir)?;
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&peer_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Peer { child, port });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not start on port {port}")
    }

    /// Loads `rows` `SET`s, pipelined over one connection; the time until every reply.
    async fn load(&self, rows: usize) -> anyhow::Result<Duration> {
        let mut commands = Vec::with_capacity(rows * 48);
        for i in 0..rows {
            let key = format!("user-{i:08}");
            let value = (i % 1000).to_string();
            commands.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
        }
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let (mut read, mut write) = stream.into_split();
        let started = Instant::now();
        let writer = tokio::spawn(async move { write.write_all(&commands).await });
        let expected = rows * b"+OK\r\n".len();
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        while got < expected {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                bail!("redis-server closed the connection after {got} of {expected} reply bytes");
            }
            got += n;
        }
        writer.await??;
        Ok(started.elapsed())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
