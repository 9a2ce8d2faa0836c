#![allow(dead_code)]
// Test support: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Helpers shared by the server's integration tests (each test binary uses a subset).
//!
//! Both front ends' tests run a real node on ephemeral ports of 127.0.0.1 in a fresh data
//! directory ([`start_node`]); [`http`] drives it with `reqwest` and [`resp`] with redis-rs
//! and raw TCP.

use std::time::Duration;

use reqwest::Client;
use speedlayer_node::{Node, NodeConfig};
use tempfile::TempDir;

/// Starts a node with its data in `dir`, its HTTP and RESP listeners on ephemeral ports of
/// 127.0.0.1 and `tweak` applied to its configuration, and an HTTP client (30 s timeout).
pub async fn start_node(dir: &TempDir, tweak: impl FnOnce(&mut NodeConfig)) -> (Node, Client) {
    let mut config = NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        resp: "127.0.0.1:0".parse().unwrap(),
        ..NodeConfig::new(dir.path())
    };
    tweak(&mut config);
    let node = Node::start(config).await.expect("node starts");
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    (node, client)
}

/// Shuts `node` down cleanly, if it is still running.
pub async fn shutdown(node: Option<Node>) {
    if let Some(node) = node {
        node.shutdown().await.expect("clean shutdown");
    }
}

pub mod batch;
pub mod events;

pub mod http {
    //! Helpers of the HTTP/JSON API tests: a node with a `reqwest` client and one method per
    //! endpoint, and checks of error answers and metrics.

    use reqwest::{Client, StatusCode};
    use serde_json::{json, Value};
    use speedlayer_node::{Node, NodeConfig};
    use tempfile::TempDir;

    use super::{shutdown, start_node};

    /// An event time inside one hour-long epoch: 2024-11-24T12:06:40Z.
    pub const TS: i64 = 1_732_450_000;

    /// A node on an ephemeral port, its data directory and a client.
    pub struct TestNode {
        node: Option<Node>,
        base: String,
        pub client: Client,
        _dir: TempDir,
    }

    impl TestNode {
        pub async fn start() -> TestNode {
            TestNode::start_with(|_| {}).await
        }

        pub async fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
            let dir = tempfile::tempdir().expect("tempdir");
            let (node, client) = start_node(&dir, tweak).await;
            let base = format!("http://{}", node.http_addr);
            TestNode {
                node: Some(node),
                base,
                client,
                _dir: dir,
            }
        }

        pub fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// Where the node speaks the Redis protocol.
        pub fn resp_addr(&self) -> std::net::SocketAddr {
            self.node.as_ref().expect("node running").resp_addr
        }

        /// The node's data directory.
        pub fn data_dir(&self) -> &std::path::Path {
            self._dir.path()
        }

        pub async fn declare(&self, view: &str, spec: Value) -> (StatusCode, Value) {
            let response = self
                .client
                .put(self.url(&format!("/v1/views/{view}")))
                .json(&spec)
                .send()
                .await
                .expect("declare request");
            split(response).await
        }

        pub async fn declare_ok(&self, view: &str, value_type: &str) {
            let (status, body) = self
                .declare(view, json!({ "type": value_type, "epoch_secs": 3600 }))
                .await;
            assert_eq!(status, StatusCode::CREATED, "declaring {view}: {body}");
        }

        /// POSTs `body` (any JSON: one update or a list) to the view's update endpoint.
        pub async fn update(&self, view: &str, body: &Value) -> (StatusCode, Value) {
            self.update_raw(view, "", body.to_string()).await
        }

        pub async fn update_raw(
            &self,
            view: &str,
            query: &str,
            body: String,
        ) -> (StatusCode, Value) {
            let response = self
                .client
                .post(self.url(&format!("/v1/views/{view}/update{query}")))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("update request");
            split(response).await
        }

        pub async fn update_ok(&self, view: &str, body: Value) -> Value {
            let (status, answer) = self.update(view, &body).await;
            assert_eq!(status, StatusCode::OK, "update {view} {body}: {answer}");
            answer
        }

        pub async fn get(&self, view: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
            let response = self
                .client
                .get(self.url(&format!("/v1/views/{view}/get")))
                .query(query)
                .send()
                .await
                .expect("get request");
            split(response).await
        }

        /// The value of one row, asserting the read succeeds.
        pub async fn value(&self, view: &str, key: &str, clustering: &str) -> Value {
            let (status, body) = self
                .get(view, &[("key", key), ("clustering", clustering)])
                .await;
            assert_eq!(
                status,
                StatusCode::OK,
                "get {view}/{key}/{clustering}: {body}"
            );
            body.get("value")
                .cloned()
                .unwrap_or_else(|| panic!("no 'value' in {body}"))
        }

        pub async fn range(&self, view: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
            let response = self
                .client
                .get(self.url(&format!("/v1/views/{view}/range")))
                .query(query)
                .send()
                .await
                .expect("range request");
            split(response).await
        }

        pub async fn get_path(&self, path: &str) -> (StatusCode, Value) {
            split(self.client.get(self.url(path)).send().await.expect("GET")).await
        }

        pub async fn health(&self) {
            let (status, body) = self.get_path("/health").await;
            assert_eq!(status, StatusCode::OK, "health: {body}");
            assert_eq!(body["status"], "ok", "health: {body}");
        }

        pub async fn metrics_text(&self) -> String {
            let response = self
                .client
                .get(self.url("/metrics"))
                .send()
                .await
                .expect("metrics");
            assert_eq!(response.status(), StatusCode::OK);
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert!(
                content_type.contains("text"),
                "metrics content type {content_type:?}"
            );
            response.text().await.expect("metrics body")
        }

        pub async fn stop(mut self) {
            shutdown(self.node.take()).await;
        }

        /// Stops the node cleanly and starts it again on the same data directory (new
        /// ephemeral ports), with `tweak` applied to the configuration.
        pub async fn restart(&mut self, tweak: impl FnOnce(&mut NodeConfig)) {
            shutdown(self.node.take()).await;
            let (node, client) = start_node(&self._dir, tweak).await;
            self.base = format!("http://{}", node.http_addr);
            self.client = client;
            self.node = Some(node);
        }
    }

    /// Status and JSON body of a response (a non-JSON body fails the test: every answer of
    /// the API, errors included, is JSON).
    pub async fn split(response: reqwest::Response) -> (StatusCode, Value) {
        let status = response.status();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
        (status, body)
    }

    /// Asserts an error answer: `status`, `{"error": class, "detail": <non-empty>}`.
    #[track_caller]
    pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, class: &str) {
        let (got, body) = answer;
        assert_eq!(*got, status, "expected {status} {class}, got {got}: {body}");
        assert_eq!(body["error"], class, "error class in {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.trim().is_empty(), "empty detail in {body}");
    }

    /// Finds the sample of `name` whose labels contain every `labels` fragment.
    pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
            .find(|line| labels.iter().all(|l| line.contains(l)))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

pub mod resp {
    //! Helpers of the Redis-protocol tests: a node with redis-rs connections, one-line
    //! command helpers that check the reply kind, and raw-TCP exchanges for checking the
    //! wire itself.

    use std::collections::BTreeSet;
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;
    use redis::{AsyncConnectionConfig, RedisError, Value};
    use reqwest::{Client, StatusCode};
    use serde_json::{json, Value as Json};
    use speedlayer_node::Node;
    use tempfile::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::{shutdown, start_node};

    /// Redis's own reply to a command on a key of another type.
    pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

    /// A node on ephemeral ports and its data directory.
    pub struct TestNode {
        node: Option<Node>,
        dir: TempDir,
        pub http: Client,
        requirepass: Option<String>,
    }

    impl TestNode {
        pub async fn start() -> TestNode {
            TestNode::start_in(tempfile::tempdir().expect("tempdir"), None).await
        }

        pub async fn start_in(dir: TempDir, requirepass: Option<&str>) -> TestNode {
            let (node, http) =
                start_node(&dir, |c| c.requirepass = requirepass.map(String::from)).await;
            TestNode {
                node: Some(node),
                dir,
                http,
                requirepass: requirepass.map(String::from),
            }
        }

        pub fn node(&self) -> &Node {
            self.node.as_ref().expect("node running")
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.node().http_addr)
        }

        /// A redis-rs connection (RESP2, or RESP3 through `HELLO 3` when `resp3`).
        pub async fn connect(&self, resp3: bool) -> MultiplexedConnection {
            let mut url = format!("redis://{}/", self.node().resp_addr);
            if resp3 {
                url.push_str("?protocol=resp3");
            }
            connect_url(&url).await
        }

        /// Declares `view` over HTTP (authenticating when the node has a password).
        pub async fn declare(&self, view: &str, value_type: &str) {
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
        pub async fn stop(mut self) -> TempDir {
            shutdown(self.node.take()).await;
            self.dir
        }
    }

    pub async fn connect_url(url: &str) -> MultiplexedConnection {
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
    pub async fn try_cmd(
        con: &mut MultiplexedConnection,
        args: &[&str],
    ) -> Result<Value, RedisError> {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async::<Value>(con).await
    }

    /// Sends one command that must succeed.
    pub async fn cmd(con: &mut MultiplexedConnection, args: &[&str]) -> Value {
        try_cmd(con, args)
            .await
            .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
    }

    /// Sends one command that must fail, and returns the error line as the server sent it
    /// (without the leading `-`).
    pub async fn cmd_err(con: &mut MultiplexedConnection, args: &[&str]) -> String {
        match try_cmd(con, args).await {
            Ok(value) => panic!("{args:?} should have failed, got {value:?}"),
            Err(e) => error_line(&e),
        }
    }

    /// The error line redis-rs split into a code and a detail, joined again.
    pub fn error_line(e: &RedisError) -> String {
        match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            _ => e.to_string(),
        }
    }

    /// An integer reply.
    pub async fn int(con: &mut MultiplexedConnection, args: &[&str]) -> i64 {
        match cmd(con, args).await {
            Value::Int(n) => n,
            other => panic!("{args:?}: expected an integer reply, got {other:?}"),
        }
    }

    /// A bulk-string reply as text, `None` for a null reply.
    pub async fn bulk(con: &mut MultiplexedConnection, args: &[&str]) -> Option<String> {
        match cmd(con, args).await {
            Value::BulkString(bytes) => Some(String::from_utf8(bytes).expect("utf-8 bulk")),
            Value::Nil => None,
            other => panic!("{args:?}: expected a bulk string or nil, got {other:?}"),
        }
    }

    /// A `+OK` reply.
    pub async fn ok(con: &mut MultiplexedConnection, args: &[&str]) {
        let reply = cmd(con, args).await;
        assert_eq!(reply, Value::Okay, "{args:?}");
    }

    /// The members of a set (RESP2 array or RESP3 set) as text.
    pub async fn members(con: &mut MultiplexedConnection, args: &[&str]) -> BTreeSet<String> {
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

    pub fn text(value: &Value) -> String {
        match value {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).expect("utf-8"),
            Value::SimpleString(s) => s.clone(),
            Value::VerbatimString { text, .. } => text.clone(),
            Value::Int(n) => n.to_string(),
            other => panic!("expected a string, got {other:?}"),
        }
    }

    pub fn set_of(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// GET /v1/views/{view}/get → the `value` field.
    pub async fn http_value(node: &TestNode, view: &str, key: &str, clustering: &str) -> Json {
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

    /// Reads from `stream` until `want` bytes arrived, EOF, or 10 s passed.
    pub async fn read_reply(stream: &mut TcpStream, want: usize) -> (Vec<u8>, bool) {
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
    pub async fn read_until(stream: &mut TcpStream, suffix: &[u8]) -> String {
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
    pub async fn exchange(
        addr: std::net::SocketAddr,
        request: &[u8],
        expected: &[u8],
    ) -> TcpStream {
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
    pub async fn assert_closed(stream: &mut TcpStream, after: &str) {
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
}
