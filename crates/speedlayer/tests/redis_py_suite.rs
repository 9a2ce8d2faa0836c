//! redis-py's own test suite against the real `speedlayer serve` binary, for the command
//! families speedlayer claims (strings and counters, sets, hashes, HyperLogLog, keys,
//! connection, pipelines): `compat/redis-py/suite.py` runs them and fails when a test
//! fails that `docs/redis-compat.md` does not list with its reason, or when a listed test
//! passes (the list is stale), over RESP2 and over RESP3. It prints passed/failed/skipped
//! per family.
//!
//! redis-py's sdist and a venv with pytest come from `compat/redis-py/setup.sh` (run by
//! `.ci/run`) into `target/redis-py`, or `$REDIS_PY_DIR`. Without them this test fails
//! with a message saying so: it never skips silently.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

mod support;

use support::Server;

#[test]
fn redis_py_tests_of_the_claimed_families_pass_or_are_listed_with_their_reason() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("REDIS_PY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/redis-py"));
    let tests = dir.join("redis-5.0.8/tests");
    let python = dir.join("venv/bin/python");
    assert!(
        tests.is_dir() && python.exists(),
        "redis-py's tests are not in {}: run `compat/redis-py/setup.sh` first (.ci/run does)",
        dir.display()
    );
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_listening(data.path());
    let resp_port = server.resp_port;
    // Over RESP2, then over RESP3 (`HELLO 3`): the same tests pass or fail either way.
    for protocol in ["2", "3"] {
        let output = Command::new("python3")
            .arg(root.join("compat/redis-py/suite.py"))
            .arg("--tests")
            .arg(&tests)
            .arg("--python")
            .arg(&python)
            .arg("--doc")
            .arg(root.join("docs/redis-compat.md"))
            .arg("--url")
            .arg(format!("redis://127.0.0.1:{resp_port}"))
            .args(["--protocol", protocol])
            .output()
            .expect("running compat/redis-py/suite.py");
        let report = String::from_utf8_lossy(&output.stdout);
        eprintln!("RESP{protocol}:\n{report}");
        assert!(
            output.status.success(),
            "over RESP{protocol}, redis-py's suite disagrees with docs/redis-compat.md:\n{report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        server.assert_running();
    }
}
