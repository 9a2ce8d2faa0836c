//! The fault suite in CI: `speedlayer-torture run` against the `speedlayer` binary of
//! this build, three nodes in network namespaces, every fault kind several times, and the
//! checker's verdict; then two deliberately broken configurations that the checker must
//! catch (so a green run means something).
//!
//! Needs root, iproute2, nftables and faketime (`.ci/run` installs them). A longer run:
//! `speedlayer-torture run --cycles 200` (see the crate's README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const TORTURE: &str = env!("CARGO_BIN_EXE_speedlayer-torture");

/// The `speedlayer` binary built alongside (the workspace build puts every binary in one
/// directory).
fn speedlayer() -> PathBuf {
    let bin = Path::new(TORTURE).with_file_name("speedlayer");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build / cargo nextest run --workspace)",
        bin.display()
    );
    bin
}

/// Runs the suite with `args`; returns (exit code, stdout).
fn torture(name: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("torture-{name}-"))
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let output = Command::new(TORTURE)
        .arg("run")
        .arg("--speedlayer")
        .arg(speedlayer())
        .arg("--dir")
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "---- {name}: {:?}, exit {:?}\n{stdout}\n{}",
        started.elapsed(),
        output.status.code(),
        stderr
            .lines()
            .filter(|l| !l.contains('\r'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let code = output.status.code().unwrap_or(-1);
    if code != 0 {
        // Keep the history and the node logs of a failing run for whoever looks next.
        let kept = dir.keep();
        eprintln!("history and node logs kept in {}", kept.display());
    }
    (code, stdout)
}

/// The seed: fixed, so CI plays the same scenario each time, unless `TORTURE_SEED` says
/// otherwise.
fn seed() -> String {
    std::env::var("TORTURE_SEED").unwrap_or_else(|_| "20261207".to_string())
}

#[test]
fn every_fault_kind_three_times_loses_nothing_and_converges() {
    let seed = seed();
    let (code, out) = torture(
        "all-faults",
        &[
            "--cycles",
            "33",
            "--seed",
            &seed,
            "--hold-ms",
            "1000,2500",
            "--converge-secs",
            "30",
        ],
    );
    assert_eq!(code, 0, "the checker failed (seed {seed}):\n{out}");
    for property in [
        "counters exact",
        "set adds kept",
        "distinct within bound",
        "max exact",
        "register written",
        "strict writes refused",
        "converged",
    ] {
        assert!(
            out.contains(&format!("PASS {property}")),
            "{property} not checked:\n{out}"
        );
    }
    for kind in [
        "Kill",
        "Pause",
        "Partition",
        "Bridge",
        "Drop",
        "Loss",
        "Cut",
        "RollingRestart",
        "FillDisk",
        "Skew",
    ] {
        assert!(
            out.contains(&format!("  {kind} ")),
            "no {kind} cycle:\n{out}"
        );
    }
    assert!(out.contains("unresolved after draining: 0"), "{out}");
}

#[test]
fn anonymous_retries_are_caught_double_counting() {
    // Broken on purpose: increments retried without their producer id. A short client
    // timeout makes acknowledged-too-late attempts (applied, then retried) certain while
    // a peer is paused.
    let (code, out) = torture(
        "anonymous-retries",
        &[
            "--scenario",
            "Pause(b); Wait(2s); Resume(b); AssertConverged; Pause(c); Wait(2s); Resume(c); AssertConverged",
            "--seed",
            &seed(),
            "--timeout-ms",
            "400",
            "--break-anonymous-retries",
        ],
    );
    assert_eq!(code, 1, "the checker did not fail:\n{out}");
    assert!(
        out.contains("FAIL counters exact") && out.contains("DOUBLE COUNTED"),
        "{out}"
    );
}

#[test]
fn a_cluster_without_hinted_handoff_is_caught_not_converging() {
    // Broken on purpose: hints kept, never delivered, and no anti-entropy, so a node that
    // was down misses what was written meanwhile until something reads it at quorum.
    let (code, out) = torture(
        "no-hinted-handoff",
        &[
            "--scenario",
            "Kill(c); Wait(2s); Restart(c); AssertConverged",
            "--seed",
            &seed(),
            "--converge-secs",
            "5",
            "--serve-arg=--hinted-handoff",
            "--serve-arg=off",
            "--serve-arg=--anti-entropy-interval-secs",
            "--serve-arg=0",
        ],
    );
    assert_eq!(code, 1, "the checker did not fail:\n{out}");
    assert!(
        out.contains("FAIL converged") && out.contains("not converged"),
        "{out}"
    );
}
