//! A node stays within `--memory-limit` at any number of keys (issue 19): past its
//! caches' share, cold key states are shed to disk and read back on their next use. The
//! real binary, fed by the real `redis-cli --pipe`; resident memory read from /proc.
//! (Before the limit, ~1 KB per key stayed resident up to about 2 GB.) The peak is
//! sampled, as table resizes, checkpoints and flushes are what exceed a limit.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod support;

use support::redis_cli::{cli, require_redis_cli, run_cli};
use support::{free_ports, rss_kib, sample, Server, BIN};

const LIMIT_MIB: u64 = 512;
/// Enough distinct counters to need ~700 MB resident if every state stayed cached.
const KEYS: usize = 1_600_000;

fn incr_requests(keys: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * 32);
    for i in keys {
        let key = format!("page:{i}");
        out.extend_from_slice(
            format!("*2\r\n$4\r\nINCR\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
        );
    }
    out
}

fn metric(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_stays_within_the_limit_as_keys_grow() {
    require_redis_cli();
    let dir = tempfile::tempdir().unwrap();
    let (http_port, resp_port) = free_ports();
    let mut server = Server::spawn_with(
        &dir.path().join("data"),
        http_port,
        resp_port,
        &dir.path().join("serve.log"),
        &["--memory-limit".into(), format!("{LIMIT_MIB}MiB")],
    );
    server.wait_healthy().await;
    let pid = server.pid().unwrap();
    // The peak, sampled every 50 ms while the keys are written.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let writing = writing.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            peak.max(rss_kib(pid))
        })
    };
    for start in (0..KEYS).step_by(KEYS / 4) {
        let output = run_cli(
            resp_port,
            &["--pipe"],
            Some(&incr_requests(start..start + KEYS / 4)),
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("errors: 0"), "redis-cli --pipe: {said}");
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = sampler.join().unwrap();
    eprintln!("peak resident memory: {} MiB", peak_kib / 1024);
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shed = metric(&metrics, "speedlayer_store_cache_evictions_total");
    let cached = metric(&metrics, "speedlayer_store_cache_bytes");
    assert!(
        shed > 0.0,
        "{KEYS} keys in {LIMIT_MIB} MiB and no state was shed"
    );
    assert!(
        cached <= (LIMIT_MIB * 1024 * 1024 / 4) as f64,
        "the caches hold {cached} bytes, over their quarter of the limit"
    );
    assert!(
        peak_kib <= LIMIT_MIB * 1024,
        "resident memory reached {} MiB with a limit of {LIMIT_MIB} MiB",
        peak_kib / 1024
    );
    // Shed states read back and count on: no key lost, none counted twice.
    assert_eq!(cli(resp_port, &["DBSIZE"]), KEYS.to_string());
    for i in [0, 1, KEYS / 3, KEYS / 2, KEYS - 1] {
        let key = format!("page:{i}");
        assert_eq!(cli(resp_port, &["GET", &key]), "1", "{key}");
        assert_eq!(cli(resp_port, &["INCR", &key]), "2", "{key}");
    }
}

#[test]
fn a_limit_too_small_to_run_in_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, resp_port) = free_ports();
    let output = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(["--resp", &format!("127.0.0.1:{resp_port}")])
        .args(["--memory-limit", "10MiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a 10 MiB limit was accepted");
    assert!(
        stderr.contains("--memory-limit") && stderr.contains("512"),
        "unclear refusal: {stderr}"
    );
    let output = Command::new(BIN)
        .args(["serve", "--memory-limit", "lots"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--memory-limit"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
