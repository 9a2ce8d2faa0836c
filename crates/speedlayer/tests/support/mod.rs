//! What the real-process tests share: a `speedlayer serve` child that cannot outlive its
//! test, and free ports.

// Test support: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub mod batch;
pub mod cluster;
pub mod nats;
pub mod netns;
pub mod pki;
pub mod redis_cli;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_speedlayer");

/// A `speedlayer serve` child process. Killed (SIGKILL) and reaped when dropped, so a
/// panicking test leaves no process behind; prints the node's log when the test fails.
pub struct Server {
    child: Option<Child>,
    log: PathBuf,
    /// HTTP port.
    pub http_port: u16,
    /// Redis-protocol port.
    pub resp_port: u16,
}

impl Server {
    /// Starts `speedlayer serve` on `data_dir` and the given ports, appending its log to
    /// `log` (a restart on the same file keeps the earlier run's lines).
    pub fn spawn(data_dir: &Path, http_port: u16, resp_port: u16, log: &Path) -> Server {
        Server::spawn_with(data_dir, http_port, resp_port, log, &[])
    }

    /// [`Server::spawn`] with `extra` flags for `serve`.
    pub fn spawn_with(
        data_dir: &Path,
        http_port: u16,
        resp_port: u16,
        log: &Path,
        extra: &[String],
    ) -> Server {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--resp", &format!("127.0.0.1:{resp_port}")])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning speedlayer serve");
        Server {
            child: Some(child),
            log: log.to_path_buf(),
            http_port,
            resp_port,
        }
    }

    /// Polls `GET /health` until 200, for at most 30 s, failing (with the log) if the
    /// process exits meanwhile.
    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let url = format!("http://127.0.0.1:{}/health", self.http_port);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            self.assert_running();
            if let Ok(response) = client.get(&url).send().await {
                if response.status() == reqwest::StatusCode::OK {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url} did not answer 200 within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The process id (it stays the same across a restart in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A node on free ports with its data and log in `dir`, once its Redis port accepts
    /// connections (panics after 60 s, or if it exits).
    pub fn start_listening(dir: &Path) -> Server {
        let (http_port, resp_port) = free_ports();
        let mut server = Server::spawn(
            &dir.join("data"),
            http_port,
            resp_port,
            &dir.join("serve.log"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", resp_port)).is_err() {
            server.assert_running();
            assert!(
                std::time::Instant::now() < deadline,
                "speedlayer serve did not listen on port {resp_port} within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics (with the log, through `Drop`) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("speedlayer serve exited early with {status}");
            }
        }
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- speedlayer serve log ({}) ----\n{}\n---- end of log ----",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Two distinct free ports (HTTP, RESP), from [`free_port`].
pub fn free_ports() -> (u16, u16) {
    (free_port(), free_port())
}

/// Where [`free_port`] hands ports out: below the kernel's ephemeral range (32768–60999
/// here), so no outgoing connection — of this test or a parallel one — can be given a
/// port between the check and the server's own bind.
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port for a server a test starts, free when checked (bound and released).
///
/// Never the same port twice in one test process, and never one the kernel hands out for
/// `bind(0)` or an outgoing connection: a port taken from the ephemeral range and released
/// can be given to the next caller (two joiners once got the same HTTP port, and one of
/// them died at start), or to any socket of a parallel test. Test processes start at
/// different places in the range (by pid), so two of them rarely meet; a port someone
/// holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..span {
        let port = (TEST_PORTS.start + NEXT.fetch_add(1, Ordering::AcqRel) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// The value of the unlabelled Prometheus sample `name` (e.g.
/// `speedlayer_store_cache_bytes`) in a `/metrics` text.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A process's resident memory in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, ...) to `pid` with `kill`.
pub fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}
