//! The real `redis-cli` (Debian's `redis-tools`, which `.ci/run` installs), run against a
//! node: tests that must show what a Redis user sees.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Fails (does not skip) when redis-cli is not installed.
pub fn require_redis_cli() {
    let found = Command::new("redis-cli")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "redis-cli is not installed (or not on PATH): this test needs the real Redis client. \
         Install it with `apt-get install -y redis-tools`; .ci/run installs it on CI."
    );
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT args...` with `stdin` fed to it, if any.
pub fn run_cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning redis-cli");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        // redis-cli reads while it writes, so a large input cannot deadlock here as long
        // as its stdout is drained too: feed it from a thread.
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    child.wait_with_output().expect("redis-cli output")
}

/// Runs `redis-cli -p PORT args...` and returns its stdout, trimmed.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_raw(port, args).trim_end().to_string()
}

/// Runs `redis-cli -p PORT args...` and returns its stdout as printed.
pub fn cli_raw(port: u16, args: &[&str]) -> String {
    let output = run_cli(port, args, None);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed with {}: stdout {stdout:?} stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
