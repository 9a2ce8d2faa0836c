//! `speedlayer ctl` as a Unix tool in a pipeline: a reader that stops early (`| head`)
//! closes its stdout, and ctl ends quietly with success instead of a panic and a stack
//! backtrace.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

mod support;

use support::{Server, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_ends_quietly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_listening(dir.path());
    server.wait_healthy().await;
    let mut child = Command::new(BIN)
        .args([
            "ctl",
            "--node",
            &format!("127.0.0.1:{}", server.http_port),
            "status",
        ])
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before ctl prints its first line.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("panicked"),
        "ctl with a closed stdout: {}\n{stderr}",
        output.status
    );
    server.assert_running();
}
