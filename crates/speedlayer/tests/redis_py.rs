//! redis-py, the Python client, against the real `speedlayer serve` binary: pipelines of
//! writes that carry producer ids (`ID writer seq`) sent twice count once, and a
//! connection's `CONSISTENCY` is its own.
//!
//! redis-py comes from Debian's `python3-redis` (CI installs it in `.ci/run`), which
//! installs for Debian's `/usr/bin/python3`. When no interpreter here can import it this
//! test fails with a message saying so: it never skips silently.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod support;

use support::Server;

/// The script: two sends of one pipeline of ten (ID, INCRBY) pairs, then a read; prints
/// what each returned, one JSON document.
const SCRIPT: &str = r#"
import json, sys, redis
r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
def send():
    p = r.pipeline(transaction=False)
    for seq in range(1, 11):
        p.execute_command("ID", "py-worker", seq)
        p.incrby("py:clicks", seq)
    return p.execute()
first = send()
again = send()
other = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
r.execute_command("CONSISTENCY", "all", "strict")
print(json.dumps({
    "first": first,
    "again": again,
    "value": r.get("py:clicks"),
    "mine": r.execute_command("CONSISTENCY"),
    "other": other.execute_command("CONSISTENCY"),
}))
"#;

/// An interpreter that can import redis-py.
fn python_with_redis() -> String {
    for python in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(python)
            .args(["-c", "import redis"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return python.to_string();
        }
    }
    panic!(
        "no python3 here can import redis-py: this test needs the real Python client. \
         Install it with `apt-get install -y python3-redis`; .ci/run installs it on CI."
    );
}

#[test]
fn redis_py_pipelines_with_ids_count_once_when_sent_again() {
    let python = python_with_redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_listening(dir.path());
    let resp_port = server.resp_port;
    let output = Command::new(&python)
        .args(["-c", SCRIPT, &resp_port.to_string()])
        .output()
        .expect("running python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the redis-py script failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let mut first = Vec::new();
    let mut again = Vec::new();
    for seq in 1..=10i64 {
        first.push(serde_json::json!("OK"));
        first.push(serde_json::json!(seq * (seq + 1) / 2));
        again.push(serde_json::json!("OK"));
        again.push(serde_json::json!(55));
    }
    assert_eq!(seen["first"], serde_json::json!(first), "{seen}");
    assert_eq!(seen["again"], serde_json::json!(again), "{seen}");
    assert_eq!(seen["value"], "55", "{seen}");
    assert_eq!(seen["mine"], "all strict", "{seen}");
    assert_ne!(seen["other"], "all strict", "{seen}");
    server.assert_running();
}
