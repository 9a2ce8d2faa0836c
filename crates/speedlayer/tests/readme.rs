//! The README's command blocks run as written, pasted top to bottom, against a fresh node:
//! the HTTP walk-through, events, the batch hand-over and the Redis protocol sections,
//! with `curl` failing on any HTTP error (`--fail-with-body`) and the shell stopping at
//! the first failing command. Only the ports change (the README's 7780 and 7781 become
//! the test node's; `speedlayer` finds it through `SPEEDLAYER_NODE`), and `speedlayer` is
//! the binary under test. Needs `curl` and `redis-cli` (`.ci/run` installs redis-tools).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod support;

use support::{Server, BIN};

/// The `sh` code blocks between the `## ` headings `from` (included) and `to` (excluded).
fn blocks(readme: &str, from: &str, to: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {from}"))
        .unwrap_or_else(|| panic!("no section {from:?} in the README"));
    let end = readme[start..]
        .find(&format!("\n## {to}"))
        .map_or(readme.len(), |e| start + e);
    let mut out = Vec::new();
    // (indentation of the opening fence, lines so far) of the block being read.
    let mut open: Option<(usize, Vec<&str>)> = None;
    for line in readme[start..end].lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None if trimmed == "```sh" => open = Some((indent, Vec::new())),
            Some((_, lines)) if trimmed == "```" => {
                out.push(lines.join("\n"));
                open = None;
            }
            Some((fence, lines)) => lines.push(line.get(*fence..).unwrap_or(trimmed)),
            None => {}
        }
    }
    assert!(
        open.is_none(),
        "a code block of section {from:?} is not closed"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .expect("README.md");
    let blocks = blocks(&readme, "HTTP walk-through", "Guarantees and limits");
    assert!(
        blocks.len() >= 4,
        "expected the walk-through, events, batch and Redis blocks, found {}",
        blocks.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_listening(dir.path());
    server.wait_healthy().await;
    let (http_port, resp_port) = (server.http_port, server.resp_port);

    // `speedlayer` on the PATH is the binary under test.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("speedlayer")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let script = format!(
        "curl() {{ command curl -sS --fail-with-body \"$@\"; echo; }}\n{}\n",
        blocks.join("\n")
    )
    .replace("localhost:7780", &format!("localhost:{http_port}"))
    .replace("-p 7781", &format!("-p {resp_port}"));
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-x", "-c", &script])
        .current_dir(&work)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("SPEEDLAYER_NODE", format!("127.0.0.1:{http_port}"))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a README command failed ({}); the trace ends with the failing command:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    // What the README says the blocks do, spot-checked in their answers.
    for expected in [
        "\"duplicate\":0",         // the first write with its id
        "\"boundary\":1732464000", // the batch view's T in the answer
        "\"dropped\":481236",      // the epoch drop
        "\"status\":\"ok\"",       // /health
    ] {
        assert!(
            stdout.contains(expected),
            "no {expected} in the README commands' output:\n{stdout}"
        );
    }
    server.assert_running();
}
