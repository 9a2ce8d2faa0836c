//! The simulation over many seeds, in CI: every seed's history passes the fault suite's
//! checker; and a broken client (increments retried without their producer id) is caught.
//!
//! `SIM_SEEDS=500 cargo test -p speedlayer-sim --release` runs more seeds;
//! `SIM_SEED_BASE` moves the range.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use speedlayer_sim::{simulate, SimConfig};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_keeps_every_promise() {
    let (base, seeds) = (env("SIM_SEED_BASE", 1), env("SIM_SEEDS", 40));
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut converged = Vec::new();
    // A few seeds at a time: each is three nodes with their own threads.
    for chunk in (base..base + seeds).collect::<Vec<_>>().chunks(4) {
        let runs: Vec<_> = chunk
            .iter()
            .map(|&seed| tokio::spawn(async move { (seed, simulate(&SimConfig::new(seed)).await) }))
            .collect();
        for run in runs {
            let (seed, outcome) = run.await.unwrap();
            let outcome = outcome.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            converged.extend(outcome.report.converged_ms.iter().copied());
            let (ops, attempts, acked) = outcome.report.totals;
            eprintln!(
                "seed {seed}: {ops} operations, {attempts} attempts, {acked} acknowledged; faults: {}",
                outcome.schedule.join(", ")
            );
            if !outcome.report.passed() {
                failed.push(format!(
                    "seed {seed} (faults: {}):\n{}",
                    outcome.schedule.join(", "),
                    outcome.report
                ));
            }
        }
    }
    converged.sort_unstable();
    eprintln!(
        "{seeds} seeds in {:?}; convergence after the heal p50 {:?} ms, max {:?} ms",
        started.elapsed(),
        converged.get(converged.len() / 2),
        converged.last()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_retries_are_caught_in_the_simulation() {
    // Broken on purpose. Short RPC timeouts and delays make writes that were applied but
    // failed (and so retried) certain over a few seeds.
    let mut caught = Vec::new();
    for seed in 1..=4 {
        let mut config = SimConfig::new(seed);
        config.anonymous_retries = true;
        config.rpc_timeout = std::time::Duration::from_millis(60);
        config.max_delay = std::time::Duration::from_millis(30);
        let outcome = simulate(&config).await.unwrap();
        let verdict = outcome.report.verdict("counters exact").unwrap().clone();
        if !verdict.ok {
            caught.push(seed);
            assert!(
                verdict.detail.contains("DOUBLE COUNTED"),
                "{}",
                verdict.detail
            );
        }
    }
    assert!(!caught.is_empty(), "no seed caught the anonymous retries");
    eprintln!("double counting caught in seeds {caught:?}");
}
