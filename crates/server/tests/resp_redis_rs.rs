//! The Redis-protocol front end end to end: the `redis` crate (redis-rs) against a real
//! node listening on TCP, as DESIGN.md's "RESP" section describes it, plus a few raw-TCP
//! checks of the wire itself (protocol errors, inline commands, exact error lines).
//!
//! Keys: `view:partition[:clustering]` addresses a declared view; any other key lives in
//! the implicit `redis` view and takes the type of its first write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value as Json};
use speedlayer_server::{Node, NodeConfig};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Redis's own reply to a command on a key of another type.
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A node on ephemeral ports and its data directory.
struct TestNode {
    node: Option<Node>,
    dir: TempDir,
    http: Client,
    requirepass: Option<String>,
}

impl TestNode {
    async fn start() -> TestNode {
        TestNode::start_in(tempfile::tempdir().expect("tempdir"), None).await
    }

    async fn start_in(dir: TempDir, requirepass: Option<&str>) -> TestNode {
        let config = NodeConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            resp: "127.0.0.1:0".parse().unwrap(),
            requirepass: requirepass.map(String::from),
            ..NodeConfig::new(dir.path())
        };
        let node = Node::start(config).await.expect("node starts");
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestNode {
            node: Some(node),
            dir,
            http,
            requirepass: requirepass.map(String::from),
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("node running")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node().http_addr)
    }

    /// A redis-rs connection (RESP2, or RESP3 through `HELLO 3` when `resp3`).
    async fn connect(&self, resp3: bool) -> MultiplexedConnection {
        let mut url = format!("redis://{}/", self.node().resp_addr);
        if resp3 {
            url.push_str("?protocol=resp3");
        }
        connect_url(&url).await
    }

    /// Declares `view` over HTTP (authenticating when the node has a password).
    async fn declare(&self, view: &str, value_type: &str) {
        let mut request = self
            .http
            .put(self.url(&format!("/v1/views/{view}")))
            .json(&json!({ "type": value_type, "epoch_secs": 3600 }));
        if let Some(pass) = &self.requirepass {
            request = request.bearer_auth(pass);
        }
        let response = request.send().await.expect("declare request");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "declaring {view}: {status} {body}"
        );
    }

    /// Stops the node cleanly and hands back its data directory.
    async fn stop(mut self) -> TempDir {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }
}

async fn connect_url(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid redis URL");
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(10))
        .set_response_timeout(Duration::from_secs(30));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Sends one command (`args[0]` is its name) and returns the reply or the error.
async fn try_cmd(con: &mut MultiplexedConnection, args: &[&str]) -> Result<Value, RedisError> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<Value>(con).await
}

/// Sends one command that must succeed.
async fn cmd(con: &mut MultiplexedConnection, args: &[&str]) -> Value {
    try_cmd(con, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Sends one command that must fail, and returns the error line as the server sent it
/// (without the leading `-`).
async fn cmd_err(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    match try_cmd(con, args).await {
        Ok(value) => panic!("{args:?} should have failed, got {value:?}"),
        Err(e) => error_line(&e),
    }
}

/// The error line redis-rs split into a code and a detail, joined again.
fn error_line(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// An integer reply.
async fn int(con: &mut MultiplexedConnection, args: &[&str]) -> i64 {
    match cmd(con, args).await {
        Value::Int(n) => n,
        other => panic!("{args:?}: expected an integer reply, got {other:?}"),
    }
}

/// A bulk-string reply as text, `None` for a null reply.
async fn bulk(con: &mut MultiplexedConnection, args: &[&str]) -> Option<String> {
    match cmd(con, args).await {
        Value::BulkString(bytes) => Some(String::from_utf8(bytes).expect("utf-8 bulk")),
        Value::Nil => None,
        other => panic!("{args:?}: expected a bulk string or nil, got {other:?}"),
    }
}

/// A `+OK` reply.
async fn ok(con: &mut MultiplexedConnection, args: &[&str]) {
    let reply = cmd(con, args).await;
    assert_eq!(reply, Value::Okay, "{args:?}");
}

/// The members of a set (RESP2 array or RESP3 set) as text.
async fn members(con: &mut MultiplexedConnection, args: &[&str]) -> BTreeSet<String> {
    let items = match cmd(con, args).await {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("{args:?}: expected an array or a set, got {other:?}"),
    };
    let set: BTreeSet<String> = items.iter().map(text).collect();
    assert_eq!(
        set.len(),
        items.len(),
        "{args:?}: duplicate members {items:?}"
    );
    set
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).expect("utf-8"),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_server_commands() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    assert_eq!(
        cmd(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    assert_eq!(
        bulk(&mut con, &["PING", "hello there"]).await.as_deref(),
        Some("hello there")
    );
    assert_eq!(
        bulk(&mut con, &["ECHO", "a\r\nbinary-ish\0value"])
            .await
            .as_deref(),
        Some("a\r\nbinary-ish\0value")
    );
    assert!(cmd_err(&mut con, &["ECHO"])
        .await
        .starts_with("ERR wrong number of arguments for 'echo'"));

    ok(&mut con, &["SELECT", "0"]).await;
    let select = cmd_err(&mut con, &["SELECT", "1"]).await;
    assert!(select.starts_with("ERR "), "SELECT 1: {select}");
    let select = cmd_err(&mut con, &["SELECT", "zero"]).await;
    assert!(select.starts_with("ERR "), "SELECT zero: {select}");

    // No password configured: AUTH is refused the way Redis refuses it.
    let auth = cmd_err(&mut con, &["AUTH", "whatever"]).await;
    assert!(
        auth.starts_with("ERR AUTH <password> called without any password configured"),
        "AUTH: {auth}"
    );

    // HELLO 2 answers the server's description as a flat array (a RESP2 map).
    let hello = match cmd(&mut con, &["HELLO", "2"]).await {
        Value::Array(items) => items,
        other => panic!("HELLO 2: expected a flat array, got {other:?}"),
    };
    let fields: HashMap<String, String> = hello
        .chunks(2)
        .filter(|pair| pair.len() == 2 && !matches!(pair[1], Value::Array(_)))
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect();
    assert_eq!(
        fields.get("proto").map(String::as_str),
        Some("2"),
        "{hello:?}"
    );
    assert_eq!(fields.get("server").map(String::as_str), Some("speedlayer"));
    let noproto = cmd_err(&mut con, &["HELLO", "4"]).await;
    assert!(noproto.starts_with("NOPROTO"), "HELLO 4: {noproto}");

    // CLIENT SETNAME / GETNAME.
    assert_eq!(bulk(&mut con, &["CLIENT", "GETNAME"]).await, None);
    ok(&mut con, &["CLIENT", "SETNAME", "resp-test"]).await;
    assert_eq!(
        bulk(&mut con, &["CLIENT", "GETNAME"]).await.as_deref(),
        Some("resp-test")
    );
    assert!(cmd_err(&mut con, &["CLIENT", "SETNAME", "has space"])
        .await
        .starts_with("ERR "));
    assert_eq!(
        bulk(&mut con, &["CLIENT", "GETNAME"]).await.as_deref(),
        Some("resp-test"),
        "a refused name leaves the old one"
    );
    // The name is per connection.
    let mut other = node.connect(false).await;
    assert_eq!(bulk(&mut other, &["CLIENT", "GETNAME"]).await, None);

    // COMMAND COUNT and COMMAND agree, and list every command the contract requires.
    let count = int(&mut con, &["COMMAND", "COUNT"]).await;
    assert!(count > 0, "COMMAND COUNT = {count}");
    let entries = match cmd(&mut con, &["COMMAND"]).await {
        Value::Array(entries) => entries,
        other => panic!("COMMAND: expected an array, got {other:?}"),
    };
    assert_eq!(entries.len() as i64, count, "COMMAND vs COMMAND COUNT");
    let names: BTreeSet<String> = entries
        .iter()
        .map(|entry| match entry {
            Value::Array(fields) if !fields.is_empty() => text(&fields[0]).to_ascii_uppercase(),
            other => panic!("COMMAND entry: {other:?}"),
        })
        .collect();
    for required in [
        "PING",
        "ECHO",
        "HELLO",
        "AUTH",
        "SELECT",
        "GET",
        "SET",
        "DEL",
        "EXISTS",
        "MGET",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "HINCRBY",
        "HGET",
        "HGETALL",
        "SADD",
        "SREM",
        "SMEMBERS",
        "SISMEMBER",
        "SCARD",
        "PFADD",
        "PFCOUNT",
        "PFMERGE",
        "COMMAND",
        "INFO",
        "QUIT",
    ] {
        assert!(
            names.contains(required),
            "COMMAND lacks {required}: {names:?}"
        );
    }

    // INFO: every section Redis tools look for.
    let info = text(&cmd(&mut con, &["INFO"]).await);
    for section in ["# Server", "# Clients", "# Stats", "# Keyspace"] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info.contains("redis_version:"), "{info}");
    let clients = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .expect("connected_clients line")
        .trim()
        .parse::<u64>()
        .expect("connected_clients is a number");
    assert!(clients >= 2, "two connections are open: {info}");
    let server_only = text(&cmd(&mut con, &["INFO", "server"]).await);
    assert!(server_only.contains("# Server"), "{server_only}");
    assert!(!server_only.contains("# Keyspace"), "{server_only}");

    // Unknown commands.
    let unknown = cmd_err(&mut con, &["NOSUCHCOMMAND", "arg1"]).await;
    assert!(unknown.starts_with("ERR unknown command"), "{unknown}");
    assert!(unknown.contains("NOSUCHCOMMAND"), "{unknown}");

    // The connection is still usable after all those errors.
    assert_eq!(
        cmd(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );

    // QUIT: +OK, then the server closes the connection.
    ok(&mut con, &["QUIT"]).await;
    let mut closed = false;
    for _ in 0..50 {
        if try_cmd(&mut con, &["PING"]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the connection still answers after QUIT");
    // Other connections are unaffected.
    assert_eq!(
        cmd(&mut other, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    drop((con, other));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_counters_exists_mget_del() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // SET / GET.
    assert_eq!(bulk(&mut con, &["GET", "greeting"]).await, None);
    ok(&mut con, &["SET", "greeting", "hello"]).await;
    assert_eq!(
        bulk(&mut con, &["GET", "greeting"]).await.as_deref(),
        Some("hello")
    );
    ok(&mut con, &["SET", "greeting", "hello again"]).await;
    assert_eq!(
        bulk(&mut con, &["GET", "greeting"]).await.as_deref(),
        Some("hello again")
    );
    // SET with options is refused (keys expire by epoch) and changes nothing.
    let ex = cmd_err(&mut con, &["SET", "greeting", "bye", "EX", "10"]).await;
    assert!(ex.starts_with("ERR "), "SET EX: {ex}");
    let ex = cmd_err(&mut con, &["SET", "fresh", "v", "EX", "10"]).await;
    assert!(ex.starts_with("ERR "), "SET EX: {ex}");
    assert_eq!(
        bulk(&mut con, &["GET", "greeting"]).await.as_deref(),
        Some("hello again")
    );
    assert_eq!(bulk(&mut con, &["GET", "fresh"]).await, None);

    // The INCR family answers the new total.
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 1);
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 2);
    assert_eq!(int(&mut con, &["INCRBY", "n", "40"]).await, 42);
    assert_eq!(int(&mut con, &["DECR", "n"]).await, 41);
    assert_eq!(int(&mut con, &["DECRBY", "n", "50"]).await, -9);
    assert_eq!(int(&mut con, &["INCRBY", "n", "-1"]).await, -10);
    assert_eq!(int(&mut con, &["DECRBY", "n", "-12"]).await, 2);
    assert_eq!(int(&mut con, &["DECR", "down"]).await, -1);
    assert_eq!(
        int(&mut con, &["INCRBY", "big", "1000000000000"]).await,
        1_000_000_000_000
    );
    // A counter reads back as its integer in a bulk string, as Redis renders integers.
    assert_eq!(
        cmd(&mut con, &["GET", "n"]).await,
        Value::BulkString(b"2".to_vec())
    );
    assert_eq!(
        bulk(&mut con, &["GET", "down"]).await.as_deref(),
        Some("-1")
    );
    assert_eq!(
        bulk(&mut con, &["GET", "big"]).await.as_deref(),
        Some("1000000000000")
    );
    // Non-integer increments.
    let not_int = cmd_err(&mut con, &["INCRBY", "n", "1.5"]).await;
    assert_eq!(not_int, "ERR value is not an integer or out of range");
    let not_int = cmd_err(&mut con, &["DECRBY", "n", "x"]).await;
    assert_eq!(not_int, "ERR value is not an integer or out of range");
    assert_eq!(bulk(&mut con, &["GET", "n"]).await.as_deref(), Some("2"));
    let arity = cmd_err(&mut con, &["INCR", "n", "extra"]).await;
    assert!(
        arity.starts_with("ERR wrong number of arguments"),
        "{arity}"
    );

    // EXISTS counts every argument that exists (a repeated key counts again).
    assert_eq!(int(&mut con, &["SADD", "aset", "m"]).await, 1);
    assert_eq!(int(&mut con, &["EXISTS", "n"]).await, 1);
    assert_eq!(int(&mut con, &["EXISTS", "nope"]).await, 0);
    assert_eq!(
        int(&mut con, &["EXISTS", "n", "greeting", "aset", "nope", "n"]).await,
        4
    );

    // MGET: strings and counters as bulk strings, nil for a missing key or another type.
    let values = cmd(&mut con, &["MGET", "greeting", "n", "nope", "aset", "down"]).await;
    assert_eq!(
        values,
        Value::Array(vec![
            Value::BulkString(b"hello again".to_vec()),
            Value::BulkString(b"2".to_vec()),
            Value::Nil,
            Value::Nil,
            Value::BulkString(b"-1".to_vec()),
        ])
    );

    // DEL answers how many existed, and a deleted key can come back as another type.
    assert_eq!(int(&mut con, &["DEL", "n", "greeting", "nope"]).await, 2);
    assert_eq!(int(&mut con, &["DEL", "n"]).await, 0);
    assert_eq!(bulk(&mut con, &["GET", "n"]).await, None);
    assert_eq!(bulk(&mut con, &["GET", "greeting"]).await, None);
    assert_eq!(int(&mut con, &["EXISTS", "n", "greeting"]).await, 0);
    assert_eq!(int(&mut con, &["DEL", "aset"]).await, 1);
    assert_eq!(int(&mut con, &["INCR", "aset"]).await, 1);
    assert_eq!(int(&mut con, &["SADD", "n", "now-a-set"]).await, 1);
    assert_eq!(
        members(&mut con, &["SMEMBERS", "n"]).await,
        set_of(&["now-a-set"])
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_of_counters() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    assert_eq!(int(&mut con, &["HINCRBY", "h", "f1", "3"]).await, 3);
    assert_eq!(int(&mut con, &["HINCRBY", "h", "f1", "2"]).await, 5);
    assert_eq!(int(&mut con, &["HINCRBY", "h", "f2", "-4"]).await, -4);
    assert_eq!(
        int(&mut con, &["HINCRBY", "h", "f:with:colons", "7"]).await,
        7
    );
    assert_eq!(int(&mut con, &["HINCRBY", "other", "f1", "100"]).await, 100);
    assert_eq!(
        bulk(&mut con, &["HGET", "h", "f1"]).await.as_deref(),
        Some("5")
    );
    assert_eq!(
        bulk(&mut con, &["HGET", "h", "f2"]).await.as_deref(),
        Some("-4")
    );
    assert_eq!(bulk(&mut con, &["HGET", "h", "missing"]).await, None);
    assert_eq!(bulk(&mut con, &["HGET", "missing", "f1"]).await, None);

    let all: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("h")
        .query_async(&mut con)
        .await
        .expect("HGETALL");
    let expected: HashMap<String, i64> = [("f1", 5), ("f2", -4), ("f:with:colons", 7)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(all, expected);
    // RESP2: a flat array of field, value, field, value.
    match cmd(&mut con, &["HGETALL", "other"]).await {
        Value::Array(items) => assert_eq!(
            items,
            vec![
                Value::BulkString(b"f1".to_vec()),
                Value::BulkString(b"100".to_vec())
            ]
        ),
        other => panic!("HGETALL in RESP2: expected a flat array, got {other:?}"),
    }
    match cmd(&mut con, &["HGETALL", "missing"]).await {
        Value::Array(items) => assert!(items.is_empty(), "{items:?}"),
        other => panic!("HGETALL of a missing key: {other:?}"),
    }
    let not_int = cmd_err(&mut con, &["HINCRBY", "h", "f1", "one"]).await;
    assert_eq!(not_int, "ERR value is not an integer or out of range");
    assert_eq!(
        bulk(&mut con, &["HGET", "h", "f1"]).await.as_deref(),
        Some("5")
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // SADD answers how many members were new.
    assert_eq!(int(&mut con, &["SADD", "s", "a", "b", "c"]).await, 3);
    assert_eq!(int(&mut con, &["SADD", "s", "c", "d"]).await, 1);
    assert_eq!(int(&mut con, &["SADD", "s", "a", "b"]).await, 0);
    assert_eq!(int(&mut con, &["SADD", "s", "e", "e", "e"]).await, 1);
    // SREM answers how many members were there.
    assert_eq!(int(&mut con, &["SREM", "s", "a", "zz"]).await, 1);
    assert_eq!(int(&mut con, &["SREM", "s", "a"]).await, 0);
    assert_eq!(
        members(&mut con, &["SMEMBERS", "s"]).await,
        set_of(&["b", "c", "d", "e"])
    );
    assert_eq!(int(&mut con, &["SISMEMBER", "s", "b"]).await, 1);
    assert_eq!(int(&mut con, &["SISMEMBER", "s", "a"]).await, 0);
    assert_eq!(int(&mut con, &["SISMEMBER", "missing", "a"]).await, 0);
    assert_eq!(int(&mut con, &["SCARD", "s"]).await, 4);
    assert_eq!(int(&mut con, &["SCARD", "missing"]).await, 0);
    assert!(members(&mut con, &["SMEMBERS", "missing"]).await.is_empty());
    // A removed member can be added again.
    assert_eq!(int(&mut con, &["SADD", "s", "a"]).await, 1);
    assert_eq!(int(&mut con, &["SCARD", "s"]).await, 5);

    // Binary-safe members, and many of them.
    let many: Vec<String> = (0..500).map(|i| format!("member:{i}\r\n")).collect();
    let mut sadd = redis::cmd("SADD");
    sadd.arg("big");
    for m in &many {
        sadd.arg(m);
    }
    let added: i64 = sadd.query_async(&mut con).await.expect("SADD 500");
    assert_eq!(added, 500);
    assert_eq!(int(&mut con, &["SCARD", "big"]).await, 500);
    let got = members(&mut con, &["SMEMBERS", "big"]).await;
    assert_eq!(got, many.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        int(&mut con, &["SISMEMBER", "big", "member:7\r\n"]).await,
        1
    );
    assert_eq!(int(&mut con, &["SISMEMBER", "big", "member:7"]).await, 0);
    let arity = cmd_err(&mut con, &["SADD", "s"]).await;
    assert!(
        arity.starts_with("ERR wrong number of arguments"),
        "{arity}"
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperloglogs() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // PFADD answers 1 when the sketch changed (or was created), 0 otherwise.
    assert_eq!(int(&mut con, &["PFADD", "p1", "a", "b", "c"]).await, 1);
    assert_eq!(int(&mut con, &["PFADD", "p1", "a"]).await, 0);
    assert_eq!(int(&mut con, &["PFADD", "p1", "b", "c"]).await, 0);
    assert_eq!(int(&mut con, &["PFADD", "p2", "c", "d", "e"]).await, 1);
    assert_eq!(int(&mut con, &["PFCOUNT", "p1"]).await, 3);
    assert_eq!(int(&mut con, &["PFCOUNT", "p2"]).await, 3);
    assert_eq!(int(&mut con, &["PFCOUNT", "missing"]).await, 0);
    // Several keys: the count of their union.
    assert_eq!(int(&mut con, &["PFCOUNT", "p1", "p2"]).await, 5);
    assert_eq!(
        int(&mut con, &["PFCOUNT", "p1", "p2", "missing", "p1"]).await,
        5
    );
    // PFMERGE into a new key; the sources are unchanged.
    ok(&mut con, &["PFMERGE", "p3", "p1", "p2"]).await;
    assert_eq!(int(&mut con, &["PFCOUNT", "p3"]).await, 5);
    assert_eq!(int(&mut con, &["PFCOUNT", "p1"]).await, 3);
    // PFMERGE into an existing key keeps what it had.
    assert_eq!(int(&mut con, &["PFADD", "p4", "x", "y"]).await, 1);
    ok(&mut con, &["PFMERGE", "p4", "p1"]).await;
    assert_eq!(int(&mut con, &["PFCOUNT", "p4"]).await, 5);
    // PFMERGE with only a destination creates an empty sketch.
    ok(&mut con, &["PFMERGE", "p5"]).await;
    assert_eq!(int(&mut con, &["EXISTS", "p5"]).await, 1);
    assert_eq!(int(&mut con, &["PFCOUNT", "p5"]).await, 0);
    // PFADD with no element: creates the key (1), then nothing to do (0).
    assert_eq!(int(&mut con, &["PFADD", "p6"]).await, 1);
    assert_eq!(int(&mut con, &["PFADD", "p6"]).await, 0);
    assert_eq!(int(&mut con, &["EXISTS", "p6"]).await, 1);

    // Many distinct elements: within a few percent (p = 14: ~0.8 % standard error).
    let mut pipe = redis::pipe();
    for chunk in 0..40 {
        let mut cmd = redis::cmd("PFADD");
        cmd.arg("visitors");
        for i in 0..500 {
            cmd.arg(format!("user-{}", chunk * 500 + i));
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.exec_async(&mut con).await.expect("PFADD pipeline");
    let estimate = int(&mut con, &["PFCOUNT", "visitors"]).await;
    assert!(
        (19_400..=20_600).contains(&estimate),
        "PFCOUNT of 20,000 distinct = {estimate}"
    );
    // Re-adding the same elements changes nothing.
    let mut again = redis::cmd("PFADD");
    again.arg("visitors");
    for i in 0..500 {
        again.arg(format!("user-{i}"));
    }
    let changed: i64 = again.query_async(&mut con).await.expect("PFADD");
    assert_eq!(changed, 0);
    assert_eq!(int(&mut con, &["PFCOUNT", "visitors"]).await, estimate);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_on_implicit_and_declared_keys() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    let mut con = node.connect(false).await;

    // A key made by INCR is a counter.
    assert_eq!(int(&mut con, &["INCR", "c"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["SADD", "c", "x"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SREM", "c", "x"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFADD", "c", "x"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SET", "c", "v"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SMEMBERS", "c"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SCARD", "c"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFCOUNT", "c"]).await, WRONGTYPE);
    // ... and it is unchanged by the refused commands.
    assert_eq!(int(&mut con, &["INCR", "c"]).await, 2);

    // A key made by SADD is a set.
    assert_eq!(int(&mut con, &["SADD", "s", "m"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["INCR", "s"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["INCRBY", "s", "5"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["DECR", "s"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["GET", "s"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SET", "s", "v"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFADD", "s", "m"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFMERGE", "s", "c"]).await, WRONGTYPE);
    assert_eq!(members(&mut con, &["SMEMBERS", "s"]).await, set_of(&["m"]));

    // A key made by SET is a string.
    ok(&mut con, &["SET", "str", "text"]).await;
    assert_eq!(cmd_err(&mut con, &["SADD", "str", "x"]).await, WRONGTYPE);
    assert_eq!(
        cmd_err(&mut con, &["SISMEMBER", "str", "x"]).await,
        WRONGTYPE
    );

    // A key made by PFADD is a HyperLogLog.
    assert_eq!(int(&mut con, &["PFADD", "hll", "a"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["INCR", "hll"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SADD", "hll", "a"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFCOUNT", "hll", "s"]).await, WRONGTYPE);
    assert_eq!(int(&mut con, &["PFCOUNT", "hll"]).await, 1);

    // A declared counter view: every key under it is a counter, written or not.
    assert_eq!(
        cmd_err(&mut con, &["SADD", "hits:page", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["PFADD", "hits:page", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["SET", "hits:page", "1"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["SREM", "hits:page", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(int(&mut con, &["INCR", "hits:page"]).await, 1);
    assert_eq!(int(&mut con, &["INCRBY", "hits:page", "9"]).await, 10);
    assert_eq!(
        cmd_err(&mut con, &["SMEMBERS", "hits:page"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["PFCOUNT", "hits:page"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["SADD", "hits:page:sub", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        bulk(&mut con, &["GET", "hits:page"]).await.as_deref(),
        Some("10")
    );
    // A key whose prefix names no declared view is an ordinary key.
    assert_eq!(int(&mut con, &["SADD", "nosuchview:page", "x"]).await, 1);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_answer_in_order_with_running_totals() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // 16 INCRs over 4 keys.
    let mut pipe = redis::pipe();
    for i in 0..16 {
        pipe.cmd("INCR").arg(format!("p16:{}", i % 4));
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("pipeline of 16");
    let expected: Vec<i64> = (0..16).map(|i| i / 4 + 1).collect();
    assert_eq!(replies, expected);
    for k in 0..4 {
        assert_eq!(
            bulk(&mut con, &["GET", &format!("p16:{k}")])
                .await
                .as_deref(),
            Some("4")
        );
    }

    // 1,000 INCR/INCRBY/DECR over 7 keys, replies checked against a model.
    let mut pipe = redis::pipe();
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected = Vec::new();
    for i in 0..1000i64 {
        let key = format!("p1000:{}", (i * 7919) % 7);
        let total = model.entry(key.clone()).or_insert(0);
        match i % 5 {
            0..=2 => {
                pipe.cmd("INCR").arg(&key);
                *total += 1;
            }
            3 => {
                pipe.cmd("INCRBY").arg(&key).arg(i);
                *total += i;
            }
            _ => {
                pipe.cmd("DECR").arg(&key);
                *total -= 1;
            }
        }
        expected.push(*total);
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("pipeline of 1000");
    assert_eq!(replies.len(), 1000);
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i} of the 1,000-command pipeline");
    }
    for (key, total) in &model {
        assert_eq!(
            bulk(&mut con, &["GET", key]).await,
            Some(total.to_string()),
            "{key}"
        );
    }

    // Reads see the writes before them in the same pipeline, and not those after.
    let mut pipe = redis::pipe();
    pipe.cmd("INCR").arg("mix:c");
    pipe.cmd("GET").arg("mix:c");
    pipe.cmd("SADD").arg("mix:s").arg("a").arg("b");
    pipe.cmd("SCARD").arg("mix:s");
    pipe.cmd("INCRBY").arg("mix:c").arg(10);
    pipe.cmd("SADD").arg("mix:s").arg("b").arg("c");
    pipe.cmd("GET").arg("mix:c");
    pipe.cmd("SMEMBERS").arg("mix:s");
    pipe.cmd("HINCRBY").arg("mix:h").arg("f").arg(2);
    pipe.cmd("HINCRBY").arg("mix:h").arg("f").arg(3);
    pipe.cmd("HGET").arg("mix:h").arg("f");
    pipe.cmd("PFADD").arg("mix:p").arg("x");
    pipe.cmd("PFADD").arg("mix:p").arg("x");
    pipe.cmd("PFCOUNT").arg("mix:p");
    let replies: Vec<Value> = pipe.query_async(&mut con).await.expect("mixed pipeline");
    assert_eq!(
        replies,
        vec![
            Value::Int(1),
            Value::BulkString(b"1".to_vec()),
            Value::Int(2),
            Value::Int(2),
            Value::Int(11),
            Value::Int(1),
            Value::BulkString(b"11".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"c".to_vec()),
            ]),
            Value::Int(2),
            Value::Int(5),
            Value::BulkString(b"5".to_vec()),
            Value::Int(1),
            Value::Int(0),
            Value::Int(1),
        ]
    );

    // Several connections pipelining INCRs on the same keys at once lose nothing.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut con = node.connect(false).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let mut pipe = redis::pipe();
                for i in 0..200 {
                    pipe.cmd("INCR").arg(format!("shared:{}", i % 3)).ignore();
                }
                pipe.exec_async(&mut con)
                    .await
                    .expect("concurrent pipeline");
            }
        }));
    }
    for task in tasks {
        task.await.expect("pipelining task");
    }
    let totals: Vec<Option<i64>> = redis::cmd("MGET")
        .arg("shared:0")
        .arg("shared:1")
        .arg("shared:2")
        .query_async(&mut con)
        .await
        .expect("MGET");
    // 4 connections x 5 pipelines x 200 INCRs over 3 keys (67, 67, 66 per pipeline).
    assert_eq!(
        totals,
        vec![Some(4 * 5 * 67), Some(4 * 5 * 67), Some(4 * 5 * 66)]
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_maps_sets_and_verbatim_strings() {
    let node = TestNode::start().await;
    let mut con = node.connect(true).await;

    assert_eq!(int(&mut con, &["HINCRBY", "h", "a", "1"]).await, 1);
    assert_eq!(int(&mut con, &["HINCRBY", "h", "b", "2"]).await, 2);
    match cmd(&mut con, &["HGETALL", "h"]).await {
        Value::Map(pairs) => {
            let got: BTreeMap<String, String> =
                pairs.iter().map(|(k, v)| (text(k), text(v))).collect();
            let want: BTreeMap<String, String> = [("a", "1"), ("b", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want);
        }
        other => panic!("HGETALL in RESP3: expected a map, got {other:?}"),
    }
    match cmd(&mut con, &["HGETALL", "missing"]).await {
        Value::Map(pairs) => assert!(pairs.is_empty()),
        other => panic!("HGETALL of a missing key in RESP3: {other:?}"),
    }
    // The typed conversion works too.
    let typed: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("h")
        .query_async(&mut con)
        .await
        .expect("HGETALL as a HashMap");
    assert_eq!(typed.get("b"), Some(&2));

    assert_eq!(int(&mut con, &["SADD", "s", "x", "y", "z"]).await, 3);
    match cmd(&mut con, &["SMEMBERS", "s"]).await {
        Value::Set(items) => {
            let got: BTreeSet<String> = items.iter().map(text).collect();
            assert_eq!(got, set_of(&["x", "y", "z"]));
        }
        other => panic!("SMEMBERS in RESP3: expected a set, got {other:?}"),
    }
    let typed: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg("s")
        .query_async(&mut con)
        .await
        .expect("SMEMBERS as a set");
    assert_eq!(typed, set_of(&["x", "y", "z"]));

    // Null is RESP3's `_`, which redis-rs decodes as Nil.
    assert_eq!(cmd(&mut con, &["GET", "missing"]).await, Value::Nil);
    // INFO is a verbatim string in RESP3.
    match cmd(&mut con, &["INFO"]).await {
        Value::VerbatimString { text, .. } => {
            assert!(text.contains("# Server"), "{text}");
            assert!(text.contains("# Keyspace"), "{text}");
        }
        other => panic!("INFO in RESP3: expected a verbatim string, got {other:?}"),
    }
    // HELLO 3 answers its description as a map with proto 3.
    match cmd(&mut con, &["HELLO", "3"]).await {
        Value::Map(pairs) => {
            let proto = pairs
                .iter()
                .find(|(k, _)| text(k) == "proto")
                .map(|(_, v)| v.clone());
            assert_eq!(proto, Some(Value::Int(3)), "{pairs:?}");
        }
        other => panic!("HELLO 3: expected a map, got {other:?}"),
    }
    // Errors are still errors.
    assert_eq!(cmd_err(&mut con, &["INCR", "s"]).await, WRONGTYPE);
    // And pipelines still answer in order.
    let mut pipe = redis::pipe();
    for _ in 0..16 {
        pipe.cmd("INCR").arg("r3");
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("RESP3 pipeline");
    assert_eq!(replies, (1..=16).collect::<Vec<_>>());
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_gates_commands_until_auth() {
    let node = TestNode::start_in(tempfile::tempdir().expect("tempdir"), Some("pw")).await;
    let addr = node.node().resp_addr;
    let mut con = connect_url(&format!("redis://{addr}/")).await;

    assert_eq!(
        cmd_err(&mut con, &["GET", "k"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        cmd_err(&mut con, &["INCR", "k"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        cmd_err(&mut con, &["SELECT", "0"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        cmd(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    let wrong = cmd_err(&mut con, &["AUTH", "not-the-password"]).await;
    assert!(wrong.starts_with("WRONGPASS"), "AUTH wrong: {wrong}");
    let wrong_user = cmd_err(&mut con, &["AUTH", "admin", "pw"]).await;
    assert!(
        wrong_user.starts_with("WRONGPASS"),
        "AUTH admin pw: {wrong_user}"
    );
    // Still locked after failed attempts.
    assert_eq!(
        cmd_err(&mut con, &["GET", "k"]).await,
        "NOAUTH Authentication required."
    );
    ok(&mut con, &["AUTH", "pw"]).await;
    assert_eq!(int(&mut con, &["INCR", "k"]).await, 1);
    assert_eq!(bulk(&mut con, &["GET", "k"]).await.as_deref(), Some("1"));
    // The refused INCR before AUTH did nothing.
    assert_eq!(int(&mut con, &["INCR", "k"]).await, 2);

    // AUTH default <password>, as Redis 6+ clients send it.
    let mut second = connect_url(&format!("redis://{addr}/")).await;
    ok(&mut second, &["AUTH", "default", "pw"]).await;
    assert_eq!(bulk(&mut second, &["GET", "k"]).await.as_deref(), Some("2"));

    // A password in the URL: redis-rs sends AUTH (RESP2) or HELLO 3 AUTH (RESP3) itself.
    let mut url2 = connect_url(&format!("redis://:pw@{addr}/")).await;
    assert_eq!(int(&mut url2, &["INCR", "k"]).await, 3);
    let mut url3 = connect_url(&format!("redis://:pw@{addr}/?protocol=resp3")).await;
    assert_eq!(int(&mut url3, &["INCR", "k"]).await, 4);
    assert_eq!(int(&mut url3, &["SADD", "s", "a"]).await, 1);
    assert!(matches!(
        cmd(&mut url3, &["SMEMBERS", "s"]).await,
        Value::Set(_)
    ));
    // A wrong password in the URL fails the connection.
    let client = redis::Client::open(format!("redis://:nope@{addr}/")).unwrap();
    assert!(
        client.get_multiplexed_async_connection().await.is_err(),
        "connecting with a wrong password must fail"
    );
    // HELLO before AUTH is refused unless it authenticates.
    let mut fresh = connect_url(&format!("redis://{addr}/")).await;
    let hello = cmd_err(&mut fresh, &["HELLO", "3"]).await;
    assert!(hello.starts_with("NOAUTH"), "HELLO 3 before AUTH: {hello}");
    drop((con, second, url2, url3, fresh));
    node.stop().await;
}

/// GET /v1/views/{view}/get → the `value` field.
async fn http_value(node: &TestNode, view: &str, key: &str, clustering: &str) -> Json {
    let response = node
        .http
        .get(node.url(&format!("/v1/views/{view}/get")))
        .query(&[("key", key), ("clustering", clustering)])
        .send()
        .await
        .expect("HTTP get");
    let status = response.status();
    let body: Json = response.json().await.expect("JSON body");
    assert_eq!(
        status,
        StatusCode::OK,
        "GET {view} {key} {clustering}: {body}"
    );
    body["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_and_http_see_the_same_data() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    node.declare("visitors", "set").await;
    let mut con = node.connect(false).await;

    // RESP writes, HTTP reads.
    assert_eq!(int(&mut con, &["INCR", "hits:/about:10"]).await, 1);
    assert_eq!(int(&mut con, &["INCRBY", "hits:/about:10", "4"]).await, 5);
    assert_eq!(int(&mut con, &["INCR", "hits:/about:11"]).await, 1);
    assert_eq!(http_value(&node, "hits", "/about", "10").await, json!(5));
    assert_eq!(http_value(&node, "hits", "/about", "11").await, json!(1));
    assert_eq!(
        int(&mut con, &["SADD", "visitors:/about", "ann", "bob"]).await,
        2
    );
    let visitors = http_value(&node, "visitors", "/about", "").await;
    let mut names: Vec<String> = serde_json::from_value(visitors.clone())
        .unwrap_or_else(|e| panic!("set value {visitors}: {e}"));
    names.sort();
    assert_eq!(names, vec!["ann", "bob"]);

    // HTTP writes, RESP reads (GET, HGET with the clustering key as the field, HGETALL).
    let response = node
        .http
        .post(node.url("/v1/views/hits/update"))
        .json(&json!([
            {"key": "/home", "clustering": "7", "op": "incr", "by": 5},
            {"key": "/home", "clustering": "8", "op": "incr", "by": 2},
            {"key": "/about", "clustering": "10", "op": "incr", "by": 100},
        ]))
        .send()
        .await
        .expect("HTTP update");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    assert_eq!(
        bulk(&mut con, &["GET", "hits:/home:7"]).await.as_deref(),
        Some("5")
    );
    assert_eq!(
        bulk(&mut con, &["HGET", "hits:/home", "8"])
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        bulk(&mut con, &["GET", "hits:/about:10"]).await.as_deref(),
        Some("105")
    );
    let all: BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg("hits:/home")
        .query_async(&mut con)
        .await
        .expect("HGETALL over a declared view");
    assert_eq!(
        all,
        [("7".to_string(), 5), ("8".to_string(), 2)]
            .into_iter()
            .collect()
    );
    // HINCRBY on view:partition + field writes the clustering key HTTP reads.
    assert_eq!(int(&mut con, &["HINCRBY", "hits:/home", "7", "1"]).await, 6);
    assert_eq!(http_value(&node, "hits", "/home", "7").await, json!(6));

    let response = node
        .http
        .post(node.url("/v1/views/visitors/update"))
        .json(&json!({"key": "/about", "op": "add", "members": ["cy"]}))
        .send()
        .await
        .expect("HTTP update");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    assert_eq!(
        members(&mut con, &["SMEMBERS", "visitors:/about"]).await,
        set_of(&["ann", "bob", "cy"])
    );
    assert_eq!(int(&mut con, &["SCARD", "visitors:/about"]).await, 3);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_writes_survive_a_restart() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    let mut con = node.connect(false).await;
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("INCR").arg(format!("durable:{}", i % 3)).ignore();
    }
    pipe.exec_async(&mut con).await.expect("INCR pipeline");
    assert_eq!(int(&mut con, &["INCRBY", "hits:/p:1", "42"]).await, 42);
    assert_eq!(int(&mut con, &["SADD", "dset", "a", "b", "c"]).await, 3);
    assert_eq!(int(&mut con, &["SREM", "dset", "b"]).await, 1);
    ok(&mut con, &["SET", "dstr", "persisted"]).await;
    assert_eq!(int(&mut con, &["HINCRBY", "dhash", "f", "9"]).await, 9);
    assert_eq!(int(&mut con, &["PFADD", "dhll", "x", "y", "z"]).await, 1);
    assert_eq!(int(&mut con, &["INCR", "gone"]).await, 1);
    assert_eq!(int(&mut con, &["DEL", "gone"]).await, 1);
    drop(con);

    let dir = node.stop().await;
    let node = TestNode::start_in(dir, None).await;
    let mut con = node.connect(false).await;
    for k in 0..3 {
        assert_eq!(
            bulk(&mut con, &["GET", &format!("durable:{k}")])
                .await
                .as_deref(),
            Some("100"),
            "durable:{k}"
        );
    }
    assert_eq!(
        bulk(&mut con, &["GET", "hits:/p:1"]).await.as_deref(),
        Some("42")
    );
    assert_eq!(
        members(&mut con, &["SMEMBERS", "dset"]).await,
        set_of(&["a", "c"])
    );
    assert_eq!(
        bulk(&mut con, &["GET", "dstr"]).await.as_deref(),
        Some("persisted")
    );
    assert_eq!(
        bulk(&mut con, &["HGET", "dhash", "f"]).await.as_deref(),
        Some("9")
    );
    assert_eq!(int(&mut con, &["PFCOUNT", "dhll"]).await, 3);
    assert_eq!(int(&mut con, &["EXISTS", "gone"]).await, 0);
    // Types survive too: the counter still refuses set commands, and still counts.
    assert_eq!(
        cmd_err(&mut con, &["SADD", "durable:0", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(int(&mut con, &["INCR", "durable:0"]).await, 101);
    drop(con);
    node.stop().await;
}

/// Reads from `stream` until `want` bytes arrived, EOF, or 10 s passed.
async fn read_reply(stream: &mut TcpStream, want: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < want {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (out, true),
            Err(_) => break,
        }
    }
    (out, false)
}

/// Reads from `stream` until what arrived ends with `suffix` (10 s at most).
async fn read_until(stream: &mut TcpStream, suffix: &[u8]) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !out.ends_with(suffix) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` on a fresh connection and reads exactly `expected.len()` bytes.
async fn exchange(addr: std::net::SocketAddr, request: &[u8], expected: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let (got, _) = read_reply(&mut stream, expected.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
    stream
}

/// Waits for the server to close `stream` (EOF or reset) within 10 s; panics otherwise.
async fn assert_closed(stream: &mut TcpStream, after: &str) {
    let (extra, eof) = read_reply(stream, usize::MAX).await;
    assert!(
        eof,
        "the server kept the connection open after {after} (extra bytes: {:?})",
        String::from_utf8_lossy(&extra)
    );
    assert!(
        extra.is_empty(),
        "bytes after {after}: {:?}",
        String::from_utf8_lossy(&extra)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_protocol_errors_inline_commands_and_exact_replies() {
    let node = TestNode::start().await;
    let addr = node.node().resp_addr;

    // A malformed bulk length: an error line, then the server closes the connection.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"*2\r\n$abc\r\n").await.expect("write");
    let (reply, _) = read_reply(&mut stream, usize::MAX).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");
    assert!(
        reply.ends_with("\r\n") && reply.matches("\r\n").count() == 1,
        "{reply:?}"
    );
    // (read_reply returned because of EOF, or it would have waited 10 s and failed here.)
    assert_closed(&mut stream, "a protocol error").await;

    // Requests before the malformed one in the same read are still answered first.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$-5\r\n")
        .await
        .expect("write");
    let (reply, eof) = read_reply(&mut stream, usize::MAX).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(eof, "connection left open: {reply:?}");
    assert!(
        reply.starts_with("+PONG\r\n-ERR Protocol error"),
        "{reply:?}"
    );

    // A new connection is served normally.
    exchange(addr, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n").await;
    // Inline commands (what `telnet` or `nc` send).
    let mut inline = exchange(addr, b"PING\r\n", b"+PONG\r\n").await;
    inline.write_all(b"ECHO hello\r\n").await.unwrap();
    let (got, _) = read_reply(&mut inline, 11).await;
    assert_eq!(got, b"$5\r\nhello\r\n");
    inline
        .write_all(b"INCR inline\r\nINCR inline\r\nGET inline\r\n")
        .await
        .unwrap();
    let (got, _) = read_reply(&mut inline, 15).await;
    assert_eq!(String::from_utf8_lossy(&got), ":1\r\n:2\r\n$1\r\n2\r\n");

    // Exact WRONGTYPE line, and an error in the middle of a pipeline leaves the
    // commands around it alone.
    let expected = format!(":1\r\n-{WRONGTYPE}\r\n:2\r\n");
    exchange(
        addr,
        b"INCR wt\r\nSADD wt x\r\n*2\r\n$4\r\nINCR\r\n$2\r\nwt\r\n",
        expected.as_bytes(),
    )
    .await;
    // Unknown command, then the connection carries on.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"FLUSHALL\r\nPING\r\n").await.unwrap();
    let got = read_until(&mut stream, b"+PONG\r\n").await;
    assert!(got.starts_with("-ERR unknown command"), "{got:?}");
    assert_eq!(got.matches("\r\n").count(), 2, "{got:?}");

    // QUIT: +OK, nothing after it runs, and the connection closes.
    let mut stream = exchange(addr, b"INCR q\r\nQUIT\r\nINCR q\r\n", b":1\r\n+OK\r\n").await;
    assert_closed(&mut stream, "QUIT").await;
    exchange(addr, b"GET q\r\n", b"$1\r\n1\r\n").await;

    // A frame split across many small writes is reassembled.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    for chunk in b"*3\r\n$6\r\nINCRBY\r\n$5\r\nsplit\r\n$2\r\n42\r\n".chunks(3) {
        stream.write_all(chunk).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (got, _) = read_reply(&mut stream, 5).await;
    assert_eq!(got, b":42\r\n");
    drop(stream);
    drop(inline);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_incrs_on_declared_views_answer_running_totals_over_epochs() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    // An earlier epoch of the same row, written over HTTP with an old event time.
    let response = node
        .http
        .post(node.url("/v1/views/hits/update"))
        .json(&json!({"key": "p", "op": "incr", "by": 100, "ts": 1_732_450_000}))
        .send()
        .await
        .expect("HTTP update");
    assert_eq!(response.status(), StatusCode::OK);
    let mut con = node.connect(false).await;
    let replies: Vec<i64> = redis::pipe()
        .cmd("INCR")
        .arg("hits:p")
        .cmd("INCR")
        .arg("hits:p")
        .cmd("INCRBY")
        .arg("hits:p")
        .arg(10)
        .cmd("DECR")
        .arg("hits:p")
        .cmd("INCR")
        .arg("hits:q")
        .query_async(&mut con)
        .await
        .expect("pipeline");
    assert_eq!(replies, vec![101, 102, 112, 111, 1]);
    assert_eq!(
        bulk(&mut con, &["GET", "hits:p"]).await.as_deref(),
        Some("111")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_past_the_i64_range_are_refused_and_change_nothing() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    assert_eq!(
        int(&mut con, &["INCRBY", "big", "9223372036854775807"]).await,
        i64::MAX
    );
    let error = cmd_err(&mut con, &["INCR", "big"]).await;
    assert!(
        error.contains("increment or decrement would overflow"),
        "{error}"
    );
    assert_eq!(int(&mut con, &["DECRBY", "big", "7"]).await, i64::MAX - 7);
    assert_eq!(
        int(&mut con, &["DECRBY", "low", "9223372036854775807"]).await,
        -i64::MAX
    );
    assert_eq!(int(&mut con, &["DECR", "low"]).await, i64::MIN);
    let error = cmd_err(&mut con, &["DECR", "low"]).await;
    assert!(error.contains("overflow"), "{error}");
    assert_eq!(
        bulk(&mut con, &["GET", "low"]).await.as_deref(),
        Some("-9223372036854775808")
    );
}
