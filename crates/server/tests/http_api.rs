//! The HTTP/JSON API end to end: a real `reqwest` client against a real node listening on
//! TCP, as DESIGN.md's "Interface contract" describes it.
//!
//! Every error case checks the status *and* the JSON body `{"error": <class>, "detail":
//! <non-empty string>}`, and the error tests end by checking that the node still serves
//! and still holds what it acknowledged before (a bad request never takes a node down or
//! loses data).

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use speedlayer_server::{Node, NodeConfig};
use tempfile::TempDir;

/// An event time inside one hour-long epoch: 2024-11-24T12:06:40Z.
const TS: i64 = 1_732_450_000;

/// A node on an ephemeral port, its data directory and a client.
struct TestNode {
    node: Option<Node>,
    base: String,
    client: Client,
    _dir: TempDir,
}

impl TestNode {
    async fn start() -> TestNode {
        TestNode::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = NodeConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            resp: "127.0.0.1:0".parse().unwrap(),
            ..NodeConfig::new(dir.path())
        };
        tweak(&mut config);
        let node = Node::start(config).await.expect("node starts");
        let base = format!("http://{}", node.http_addr);
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestNode {
            node: Some(node),
            base,
            client,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn declare(&self, view: &str, spec: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .put(self.url(&format!("/v1/views/{view}")))
            .json(&spec)
            .send()
            .await
            .expect("declare request");
        split(response).await
    }

    async fn declare_ok(&self, view: &str, value_type: &str) {
        let (status, body) = self
            .declare(view, json!({ "type": value_type, "epoch_secs": 3600 }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "declaring {view}: {body}");
    }

    /// POSTs `body` (any JSON: one update or a list) to the view's update endpoint.
    async fn update(&self, view: &str, body: &Value) -> (StatusCode, Value) {
        self.update_raw(view, "", body.to_string()).await
    }

    async fn update_raw(&self, view: &str, query: &str, body: String) -> (StatusCode, Value) {
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

    async fn update_ok(&self, view: &str, body: Value) -> Value {
        let (status, answer) = self.update(view, &body).await;
        assert_eq!(status, StatusCode::OK, "update {view} {body}: {answer}");
        answer
    }

    async fn get(&self, view: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
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
    async fn value(&self, view: &str, key: &str, clustering: &str) -> Value {
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

    async fn range(&self, view: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(&format!("/v1/views/{view}/range")))
            .query(query)
            .send()
            .await
            .expect("range request");
        split(response).await
    }

    async fn get_path(&self, path: &str) -> (StatusCode, Value) {
        split(self.client.get(self.url(path)).send().await.expect("GET")).await
    }

    async fn health(&self) {
        let (status, body) = self.get_path("/health").await;
        assert_eq!(status, StatusCode::OK, "health: {body}");
        assert_eq!(body["status"], "ok", "health: {body}");
    }

    async fn metrics_text(&self) -> String {
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

    async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Status and JSON body of a response (a non-JSON body fails the test: every answer of
/// the API, errors included, is JSON).
async fn split(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts an error answer: `status`, `{"error": class, "detail": <non-empty>}`.
#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, class: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "expected {status} {class}, got {got}: {body}");
    assert_eq!(body["error"], class, "error class in {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(!detail.trim().is_empty(), "empty detail in {body}");
}

/// Finds the sample of `name` whose labels contain every `labels` fragment.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_is_idempotent_conflicts_are_409_and_bad_declarations_400() {
    let node = TestNode::start().await;

    let spec = json!({ "type": "counter", "epoch_secs": 3600 });
    let (status, body) = node.declare("pageviews", spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "pageviews");
    assert_eq!(body["type"], "counter");
    assert_eq!(body["epoch_secs"], 3600);
    let (status, body) = node.declare("pageviews", spec.clone()).await;
    assert_eq!(status, StatusCode::OK, "redeclaring identically: {body}");
    assert_eq!(body["type"], "counter");

    // Another type, or another epoch length, for the same name.
    let answer = node.declare("pageviews", json!({ "type": "hll" })).await;
    assert_error(&answer, StatusCode::CONFLICT, "view_conflict");
    assert!(
        answer.1["detail"].as_str().unwrap().contains("pageviews"),
        "the conflict names the view: {}",
        answer.1
    );
    let answer = node
        .declare("pageviews", json!({ "type": "counter", "epoch_secs": 60 }))
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "view_conflict");

    // Declarations the caller got wrong.
    let answer = node.declare("v1", json!({ "type": "bogus" })).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");
    let answer = node
        .declare("v2", json!({ "type": "counter", "epoch_secs": 0 }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");
    let answer = node
        .declare("v3", json!({ "type": "counter", "colour": "blue" }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");
    let answer = node
        .declare("v4", json!({ "type": "counter", "epoch_secs": -5 }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");
    let answer = split(
        node.client
            .put(node.url("/v1/views/v5"))
            .body("{\"type\":")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");

    // Names outside the alphabet or too long.
    let answer = node.declare("bad%3Aname", spec.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_view_name");
    let answer = node.declare("bad%20name", spec.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_view_name");
    let answer = node.declare(&"a".repeat(200), spec.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_view_name");
    // 128 bytes is the longest accepted name.
    let (status, body) = node.declare(&"b".repeat(128), spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A default epoch length is filled in.
    let (status, body) = node.declare("uniques", json!({ "type": "hll" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["epoch_secs"], 3600);

    // The listing has exactly the views declared, with their types, by name (besides the
    // node's implicit view `redis` of the Redis front end).
    let (status, body) = node.get_path("/v1/views").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<(String, String)> = body["views"]
        .as_array()
        .unwrap_or_else(|| panic!("no views array in {body}"))
        .iter()
        .filter(|v| v["name"] != "redis")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("b".repeat(128), "counter".to_string()),
            ("pageviews".to_string(), "counter".to_string()),
            ("uniques".to_string(), "hll".to_string()),
        ]
    );

    // One view's declaration, and an unknown one.
    let (status, body) = node.get_path("/v1/views/uniques").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["type"], "hll");
    let answer = node.get_path("/v1/views/nothing").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_writes_and_reads_back() {
    let node = TestNode::start().await;
    for (view, value_type) in [
        ("c", "counter"),
        ("g", "gcounter"),
        ("mx", "max"),
        ("mn", "min"),
        ("r", "register"),
        ("s", "set"),
        ("h", "hll"),
    ] {
        node.declare_ok(view, value_type).await;
    }

    // counter: increments and decrements, default `by` of 1.
    for body in [
        json!({ "key": "k", "clustering": "h1", "op": "incr", "by": 10, "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "decr", "by": 3, "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "incr", "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "decr", "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "decr", "by": 20, "ts": TS }),
    ] {
        let answer = node.update_ok("c", body).await;
        assert_eq!(answer["applied"], 1, "{answer}");
    }
    assert_eq!(node.value("c", "k", "h1").await, json!(-13));
    // Another clustering key of the same partition is another row.
    assert_eq!(node.value("c", "k", "h2").await, json!(0));
    // A row never written reads as the type's empty value.
    assert_eq!(node.value("c", "nobody", "").await, json!(0));

    // gcounter
    node.update_ok("g", json!({ "key": "k", "op": "incr", "by": 7, "ts": TS }))
        .await;
    node.update_ok("g", json!({ "key": "k", "op": "incr", "by": 5, "ts": TS }))
        .await;
    assert_eq!(node.value("g", "k", "").await, json!(12));

    // max and min: the extreme wins whatever the arrival order.
    assert_eq!(node.value("mx", "k", "").await, Value::Null);
    for v in [5, 42, -7, 41] {
        node.update_ok(
            "mx",
            json!({ "key": "k", "op": "max", "value": v, "ts": TS }),
        )
        .await;
        node.update_ok(
            "mn",
            json!({ "key": "k", "op": "min", "value": v, "ts": TS }),
        )
        .await;
    }
    assert_eq!(node.value("mx", "k", "").await, json!(42));
    assert_eq!(node.value("mn", "k", "").await, json!(-7));

    // register: last writer wins by event time, not by arrival.
    node.update_ok(
        "r",
        json!({ "key": "k", "op": "set", "value": "first", "ts": TS }),
    )
    .await;
    node.update_ok(
        "r",
        json!({ "key": "k", "op": "set", "value": "latest", "ts": TS + 2 }),
    )
    .await;
    node.update_ok(
        "r",
        json!({ "key": "k", "op": "set", "value": "late arrival", "ts": TS + 1 }),
    )
    .await;
    assert_eq!(node.value("r", "k", "").await, json!("latest"));

    // set: add and remove; members come back sorted.
    node.update_ok(
        "s",
        json!({ "key": "k", "op": "add", "members": ["pear", "apple", "fig"], "ts": TS }),
    )
    .await;
    node.update_ok(
        "s",
        json!({ "key": "k", "op": "add", "members": ["banana", "apple"], "ts": TS }),
    )
    .await;
    node.update_ok(
        "s",
        json!({ "key": "k", "op": "remove", "members": ["fig", "never-added"], "ts": TS }),
    )
    .await;
    assert_eq!(
        node.value("s", "k", "").await,
        json!(["apple", "banana", "pear"])
    );

    // hll: an approximate distinct count (p = 14: ~0.8 % standard error).
    let members: Vec<String> = (0..5000).map(|i| format!("visitor-{i}")).collect();
    for chunk in members.chunks(500) {
        node.update_ok(
            "h",
            json!({ "key": "k", "op": "pfadd", "members": chunk, "ts": TS }),
        )
        .await;
    }
    // Adding the same members again changes nothing.
    node.update_ok(
        "h",
        json!({ "key": "k", "op": "pfadd", "members": &members[..1000], "ts": TS }),
    )
    .await;
    let count = node.value("h", "k", "").await.as_i64().expect("integer");
    assert!(
        (4800..=5200).contains(&count),
        "hll count {count} is not within 4 % of 5000"
    );
    node.update_ok(
        "h",
        json!({ "key": "small", "op": "pfadd", "members": ["a", "b", "c", "a"], "ts": TS }),
    )
    .await;
    assert_eq!(node.value("h", "small", "").await, json!(3));

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_with_an_id_count_once_and_batches_apply_together() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    node.declare_ok("tags", "set").await;

    let update = json!({ "key": "k", "op": "incr", "by": 5, "ts": TS,
                         "id": { "writer": "w1", "seq": 1 } });
    let answer = node.update_ok("hits", update.clone()).await;
    assert_eq!(answer, json!({ "applied": 1, "duplicate": 0, "stale": 0 }));
    let answer = node.update_ok("hits", update.clone()).await;
    assert_eq!(answer, json!({ "applied": 0, "duplicate": 1, "stale": 0 }));
    assert_eq!(node.value("hits", "k", "").await, json!(5));

    // The same seq from another writer is another update.
    let answer = node
        .update_ok(
            "hits",
            json!({ "key": "k", "op": "incr", "by": 2, "ts": TS,
                    "id": { "writer": "w2", "seq": 1 } }),
        )
        .await;
    assert_eq!(answer["applied"], 1);
    assert_eq!(node.value("hits", "k", "").await, json!(7));

    // Out of order seqs of one writer each count once.
    for seq in [5, 3, 4, 3, 5] {
        node.update_ok(
            "hits",
            json!({ "key": "k", "op": "incr", "by": 100, "ts": TS,
                    "id": { "writer": "w3", "seq": seq } }),
        )
        .await;
    }
    assert_eq!(node.value("hits", "k", "").await, json!(307));

    // A batch of mixed updates: ids, anonymous, decrements, other rows, a duplicate
    // within the batch and one of an earlier request.
    let batch = json!([
        { "key": "k", "op": "incr", "by": 10, "ts": TS, "id": { "writer": "w4", "seq": 1 } },
        { "key": "k", "op": "incr", "by": 10, "ts": TS, "id": { "writer": "w4", "seq": 1 } },
        { "key": "k", "op": "decr", "by": 3, "ts": TS },
        { "key": "k", "clustering": "other", "op": "incr", "by": 4, "ts": TS },
        { "key": "k2", "op": "incr", "ts": TS },
        { "key": "k", "op": "incr", "by": 5, "ts": TS, "id": { "writer": "w1", "seq": 1 } },
    ]);
    let answer = node.update_ok("hits", batch.clone()).await;
    assert_eq!(answer, json!({ "applied": 4, "duplicate": 2, "stale": 0 }));
    assert_eq!(node.value("hits", "k", "").await, json!(314));
    assert_eq!(node.value("hits", "k", "other").await, json!(4));
    assert_eq!(node.value("hits", "k2", "").await, json!(1));

    // The whole batch again: every update with an id is a duplicate; the anonymous ones
    // are new updates and count again.
    let answer = node.update_ok("hits", batch).await;
    assert_eq!(answer, json!({ "applied": 3, "duplicate": 3, "stale": 0 }));
    assert_eq!(node.value("hits", "k", "").await, json!(311));
    assert_eq!(node.value("hits", "k", "other").await, json!(8));
    assert_eq!(node.value("hits", "k2", "").await, json!(2));

    // Set adds with an id are deduplicated too.
    let add = json!({ "key": "u", "op": "add", "members": ["x"], "ts": TS,
                      "id": { "writer": "w1", "seq": 1 } });
    assert_eq!(node.update_ok("tags", add.clone()).await["applied"], 1);
    assert_eq!(node.update_ok("tags", add).await["duplicate"], 1);
    assert_eq!(node.value("tags", "u", "").await, json!(["x"]));

    // An empty list is a valid batch of nothing.
    let answer = node.update_ok("hits", json!([])).await;
    assert_eq!(answer, json!({ "applied": 0, "duplicate": 0, "stale": 0 }));

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_returns_rows_in_clustering_order_within_inclusive_bounds() {
    let node = TestNode::start().await;
    node.declare_ok("views", "max").await;
    node.declare_ok("tags", "set").await;

    // Written out of order; another partition shares a prefix of the key.
    let rows = [
        ("h05", 5),
        ("h02", 2),
        ("h09", 9),
        ("h01", 1),
        ("h07", 7),
        ("h03", 3),
    ];
    let batch: Vec<Value> = rows
        .iter()
        .map(
            |(c, v)| json!({ "key": "/about", "clustering": c, "op": "max", "value": v, "ts": TS }),
        )
        .collect();
    node.update_ok("views", Value::Array(batch)).await;
    node.update_ok(
        "views",
        json!({ "key": "/about-us", "clustering": "h04", "op": "max", "value": 100, "ts": TS }),
    )
    .await;
    node.update_ok(
        "views",
        json!({ "key": "/abou", "clustering": "h04", "op": "max", "value": 200, "ts": TS }),
    )
    .await;

    let clusterings = |body: &Value| -> Vec<String> {
        body["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows in {body}"))
            .iter()
            .map(|r| r["clustering"].as_str().unwrap().to_string())
            .collect()
    };

    let (status, body) = node.range("views", &[("key", "/about")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        clusterings(&body),
        ["h01", "h02", "h03", "h05", "h07", "h09"]
    );
    assert_eq!(body["rows"][0]["value"], 1);
    assert_eq!(body["rows"][5]["value"], 9);
    assert_eq!(body["total"], 9);
    assert_eq!(body["truncated"], false);

    // Both bounds inclusive.
    let (status, body) = node
        .range(
            "views",
            &[("key", "/about"), ("from", "h02"), ("to", "h07")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(clusterings(&body), ["h02", "h03", "h05", "h07"]);
    let values: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [2, 3, 5, 7]);
    assert_eq!(body["total"], 7);

    // Bounds that fall between rows, and open bounds.
    let (_, body) = node
        .range(
            "views",
            &[("key", "/about"), ("from", "h04"), ("to", "h06")],
        )
        .await;
    assert_eq!(clusterings(&body), ["h05"]);
    assert_eq!(body["total"], 5);
    let (_, body) = node
        .range("views", &[("key", "/about"), ("from", "h07")])
        .await;
    assert_eq!(clusterings(&body), ["h07", "h09"]);
    let (_, body) = node
        .range("views", &[("key", "/about"), ("to", "h02")])
        .await;
    assert_eq!(clusterings(&body), ["h01", "h02"]);
    assert_eq!(body["total"], 2);

    // An empty range: no rows, the empty total.
    let (status, body) = node
        .range("views", &[("key", "/about"), ("from", "x"), ("to", "y")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(clusterings(&body), Vec::<String>::new());
    assert_eq!(body["total"], Value::Null);
    let (_, body) = node.range("views", &[("key", "/nothing")]).await;
    assert_eq!(clusterings(&body), Vec::<String>::new());

    // A limit truncates and says so.
    let (status, body) = node
        .range("views", &[("key", "/about"), ("limit", "2")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(clusterings(&body), ["h01", "h02"]);
    assert_eq!(body["truncated"], true);

    // A set's total is the union of the rows.
    node.update_ok(
        "tags",
        json!([
            { "key": "p", "clustering": "b", "op": "add", "members": ["y", "z"], "ts": TS },
            { "key": "p", "clustering": "a", "op": "add", "members": ["x", "y"], "ts": TS },
            { "key": "p", "clustering": "c", "op": "add", "members": ["w"], "ts": TS },
        ]),
    )
    .await;
    let (_, body) = node
        .range("tags", &[("key", "p"), ("from", "a"), ("to", "b")])
        .await;
    assert_eq!(clusterings(&body), ["a", "b"]);
    assert_eq!(body["rows"][0]["value"], json!(["x", "y"]));
    assert_eq!(body["total"], json!(["x", "y", "z"]));

    node.stop().await;
}

/// "pageviews of /about from hour 10 to hour 17": the total of a counter range is the sum
/// of its rows, each of which counted different events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_total_of_counter_rows_is_their_sum() {
    let node = TestNode::start().await;
    node.declare_ok("pageviews", "counter").await;
    node.update_ok(
        "pageviews",
        json!([
            { "key": "/about", "clustering": "h10", "op": "incr", "by": 5, "ts": TS },
            { "key": "/about", "clustering": "h11", "op": "incr", "by": 3, "ts": TS },
            { "key": "/about", "clustering": "h12", "op": "incr", "by": 2, "ts": TS },
        ]),
    )
    .await;
    let (status, body) = node
        .range(
            "pageviews",
            &[("key", "/about"), ("from", "h10"), ("to", "h12")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let values: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [5, 3, 2], "{body}");
    assert_eq!(body["total"], 10, "total of rows 5 + 3 + 2: {body}");
    node.stop().await;
}

/// One row written in two epochs (events an hour apart under the same key) reads as the
/// sum of both epochs' increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_row_spanning_two_epochs_reads_as_the_sum() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 5, "ts": TS }),
    )
    .await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 3, "ts": TS + 3600 }),
    )
    .await;
    let (_, epochs) = node.get_path("/v1/views/hits/epochs").await;
    assert_eq!(epochs["epochs"].as_array().unwrap().len(), 2, "{epochs}");
    assert_eq!(node.value("hits", "k", "").await, json!(8));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_4xx_json_and_never_hurt_the_node() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    node.declare_ok("g", "gcounter").await;
    node.declare_ok("tags", "set").await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 41, "ts": TS }),
    )
    .await;
    node.update_ok(
        "tags",
        json!({ "key": "k", "op": "add", "members": ["a"], "ts": TS }),
    )
    .await;
    node.update_ok("g", json!({ "key": "k", "op": "incr", "by": 9, "ts": TS }))
        .await;

    let ok_update = json!({ "key": "k", "op": "incr", "ts": TS });

    // Unknown view on every data endpoint.
    let answer = node.update("nothing", &ok_update).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");
    let answer = node.get("nothing", &[("key", "k")]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");
    let answer = node.range("nothing", &[("key", "k")]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");
    let answer = node.get_path("/v1/views/nothing/epochs").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");

    // Malformed bodies.
    for body in [
        "{\"key\":",
        "",
        "   ",
        "not json",
        "[{\"key\":\"k\",\"op\":\"incr\"},",
        "42",
        "{\"op\":\"incr\"}",
        "{\"key\":\"k\",\"op\":\"incr\",\"bogus\":1}",
        "{\"key\":\"k\",\"op\":\"incr\",\"by\":\"ten\"}",
        "{\"key\":\"k\",\"op\":\"incr\",\"by\":1.5}",
        "{\"key\":\"k\",\"op\":\"incr\",\"by\":99999999999999999999}",
        "{\"key\":\"k\",\"op\":\"incr\",\"id\":{\"writer\":\"w\"}}",
        "{\"key\":\"k\",\"op\":\"incr\",\"id\":{\"writer\":\"w\",\"seq\":-1}}",
    ] {
        let answer = node.update_raw("hits", "", body.to_string()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_json");
    }
    // Not UTF-8 at all.
    let answer = split(
        node.client
            .post(node.url("/v1/views/hits/update"))
            .body(vec![0xff, 0xfe, 0x00, 0x7b])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_json");

    // Ops of another type.
    let answer = node
        .update(
            "hits",
            &json!({ "key": "k", "op": "pfadd", "members": ["x"], "ts": TS }),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "wrong_op");
    let answer = node
        .update(
            "tags",
            &json!({ "key": "k", "op": "incr", "by": 1, "ts": TS }),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "wrong_op");
    let answer = node
        .update("g", &json!({ "key": "k", "op": "decr", "by": 1, "ts": TS }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "wrong_op");
    let answer = node
        .update(
            "g",
            &json!({ "key": "k", "op": "incr", "by": -1, "ts": TS }),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "wrong_op");

    // Timestamps that cannot be event times.
    for ts in [
        json!(-5),
        json!(-0.5),
        json!(1e300),
        json!(253_402_300_800_i64),
        json!(i64::MAX),
    ] {
        let answer = node
            .update("hits", &json!({ "key": "k", "op": "incr", "ts": ts }))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_timestamp");
    }
    // A string is not a timestamp. (The body is a well-formed JSON document whose `ts`
    // has the wrong JSON type; the node classes that as malformed JSON today.)
    for ts in [
        json!("yesterday"),
        json!("1732450000"),
        json!(true),
        json!([1]),
    ] {
        let (status, body) = node
            .update("hits", &json!({ "key": "k", "op": "incr", "ts": ts }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "ts {ts}: {body}");
        let class = body["error"].as_str().unwrap_or_default();
        assert!(
            class == "invalid_timestamp" || class == "malformed_json",
            "ts {ts}: {body}"
        );
        assert!(!body["detail"].as_str().unwrap_or_default().is_empty());
    }

    // Unknown ops, missing or wrong operands, bad keys.
    let answer = node
        .update("hits", &json!({ "key": "k", "op": "explode", "ts": TS }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "unknown_op");
    for body in [
        json!({ "key": "k", "op": "max", "ts": TS }),
        json!({ "key": "k", "op": "max", "value": "high", "ts": TS }),
        json!({ "key": "k", "op": "min", "value": 1.5, "ts": TS }),
        json!({ "key": "k", "op": "set", "ts": TS }),
        json!({ "key": "k", "op": "add", "ts": TS }),
        json!({ "key": "k", "op": "add", "members": [], "ts": TS }),
        json!({ "key": "k", "op": "remove", "ts": TS }),
        json!({ "key": "k", "op": "pfadd", "ts": TS }),
        json!({ "key": "k", "op": "decr", "by": i64::MIN, "ts": TS }),
    ] {
        let answer = node.update("tags", &body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_operand");
    }
    for body in [
        json!({ "key": "", "op": "incr", "ts": TS }),
        json!({ "key": "k".repeat(1025), "op": "incr", "ts": TS }),
        json!({ "key": "k", "clustering": "c".repeat(1025), "op": "incr", "ts": TS }),
    ] {
        let answer = node.update("hits", &body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_key");
    }
    let answer = node.get("hits", &[("key", "")]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_key");
    let answer = node.range("hits", &[("key", "")]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_key");

    // A batch with one invalid update applies nothing, whichever check refuses it.
    for bad in [
        json!({ "key": "k", "op": "pfadd", "members": ["x"], "ts": TS }),
        json!({ "key": "k", "op": "explode", "ts": TS }),
        json!({ "key": "k", "op": "incr", "ts": -1 }),
        json!({ "key": "", "op": "incr", "ts": TS }),
    ] {
        let batch = json!([
            { "key": "k", "op": "incr", "by": 1000, "ts": TS },
            { "key": "fresh", "op": "incr", "by": 1000, "ts": TS },
            bad,
            { "key": "k", "op": "incr", "by": 1000, "ts": TS },
        ]);
        let (status, body) = node.update("hits", &batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{batch}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().len() > 1,
            "{body}"
        );
        assert_eq!(node.value("hits", "k", "").await, json!(41), "after {bad}");
        assert_eq!(node.value("hits", "fresh", "").await, json!(0));
    }

    // Bad query strings on every data endpoint.
    for query in [
        "?consistency=sometimes",
        "?quorum=loose",
        "?mode=later",
        "?bogus=1",
    ] {
        let answer = node.update_raw("hits", query, ok_update.to_string()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    }
    let answer = node
        .get("hits", &[("key", "k"), ("consistency", "sometimes")])
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    let answer = node.get("hits", &[]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    let answer = node
        .range("hits", &[("key", "k"), ("consistency", "sometimes")])
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    let answer = node.range("hits", &[("key", "k"), ("limit", "many")]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    let answer = node.range("hits", &[("key", "k"), ("limit", "0")]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_limit");
    let answer = node
        .range("hits", &[("key", "k"), ("limit", "100001")])
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_limit");

    // Unknown endpoints and methods are JSON too.
    for path in [
        "/v2/views",
        "/v1/nothing",
        "/v1/views/hits/explode",
        "/favicon.ico",
    ] {
        let answer = node.get_path(path).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    let answer = split(
        node.client
            .delete(node.url("/v1/views/hits"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let answer = split(
        node.client
            .get(node.url("/v1/views/hits/update"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    // The node is up and every acknowledged update is still there.
    node.health().await;
    assert_eq!(node.value("hits", "k", "").await, json!(41));
    assert_eq!(node.value("tags", "k", "").await, json!(["a"]));
    assert_eq!(node.value("g", "k", "").await, json!(9));
    let answer = node.update_ok("hits", ok_update).await;
    assert_eq!(answer["applied"], 1);
    assert_eq!(node.value("hits", "k", "").await, json!(42));

    // None of that was a server error.
    let metrics = node.metrics_text().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("speedlayer_http_requests_total{"))
    {
        assert!(!line.contains("status=\"5"), "a 5xx was answered: {line}");
    }

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_the_node_carries_on() {
    let node = TestNode::start_with(|c| c.max_body_bytes = 1024).await;
    node.declare_ok("hits", "counter").await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 3, "ts": TS }),
    )
    .await;

    // ~4 KB of otherwise valid updates.
    let batch: Vec<Value> = (0..60)
        .map(|i| json!({ "key": "k", "op": "incr", "by": 1, "ts": TS, "clustering": format!("c{i}") }))
        .collect();
    let body = Value::Array(batch).to_string();
    assert!(body.len() > 2048);
    let answer = node.update_raw("hits", "", body).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // A declaration over the limit too.
    let answer = node
        .declare(
            "big",
            json!({ "type": "counter", "padding": "x".repeat(2000) }),
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // Nothing of the refused batch was applied; bodies under the limit still work.
    assert_eq!(node.value("hits", "k", "").await, json!(3));
    assert_eq!(node.value("hits", "k", "c0").await, json!(0));
    node.health().await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 1, "ts": TS }),
    )
    .await;
    assert_eq!(node.value("hits", "k", "").await, json!(4));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_levels_are_accepted_on_update_get_and_range() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    for (n, level) in ["one", "quorum", "all"].into_iter().enumerate() {
        let (status, body) = node
            .update_raw(
                "hits",
                &format!("?consistency={level}"),
                json!({ "key": "k", "clustering": format!("c{n}"), "op": "incr", "by": 1, "ts": TS })
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "update at {level}: {body}");
        let (status, body) = node
            .update_raw(
                "hits",
                &format!("?consistency={level}&quorum=strict&mode=sync"),
                json!({ "key": "k", "clustering": format!("c{n}"), "op": "incr", "by": 1, "ts": TS })
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "strict update at {level}: {body}");
        let (status, body) = node
            .update_raw(
                "hits",
                &format!("?consistency={level}&quorum=sloppy"),
                json!({ "key": "k", "clustering": format!("c{n}"), "op": "incr", "by": 1, "ts": TS })
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "sloppy update at {level}: {body}");
    }
    for level in ["one", "quorum", "all"] {
        let (status, body) = node
            .get(
                "hits",
                &[("key", "k"), ("clustering", "c1"), ("consistency", level)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "get at {level}: {body}");
        assert_eq!(body["value"], 3);
        let (status, body) = node
            .range("hits", &[("key", "k"), ("consistency", level)])
            .await;
        assert_eq!(status, StatusCode::OK, "range at {level}: {body}");
        assert_eq!(body["rows"].as_array().unwrap().len(), 3, "{body}");
        for row in body["rows"].as_array().unwrap() {
            assert_eq!(row["value"], 3, "{body}");
        }
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_count_requests() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    for i in 0..3 {
        node.update_ok(
            "hits",
            json!({ "key": format!("k{i}"), "op": "incr", "ts": TS }),
        )
        .await;
    }
    let _ = node.get("hits", &[("key", "k0")]).await;
    let _ = node.get("nothing", &[("key", "k0")]).await;

    let text = node.metrics_text().await;
    for name in [
        "speedlayer_http_requests_total",
        "speedlayer_store_fsyncs_total",
        "speedlayer_epoch_keys",
        "speedlayer_http_request_seconds_bucket",
        "speedlayer_store_fsync_batch_updates",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains("# TYPE speedlayer_http_requests counter"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    let update_ok = [
        "route=\"/v1/views/{view}/update\"",
        "method=\"POST\"",
        "status=\"200\"",
    ];
    let before = metric_value(&text, "speedlayer_http_requests_total", &update_ok)
        .unwrap_or_else(|| panic!("no update sample in:\n{text}"));
    assert_eq!(before, 3.0, "{text}");
    let unknown = metric_value(
        &text,
        "speedlayer_http_requests_total",
        &["route=\"/v1/views/{view}/get\"", "status=\"404\""],
    );
    assert_eq!(unknown, Some(1.0), "{text}");
    let fsyncs = metric_value(&text, "speedlayer_store_fsyncs_total", &[]).expect("fsyncs");
    assert!(fsyncs >= 1.0, "three durable updates need a sync: {text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("speedlayer_epoch_keys{") && l.contains("view=\"hits\"")),
        "no epoch gauge of view hits:\n{text}"
    );

    node.update_ok("hits", json!({ "key": "k0", "op": "incr", "ts": TS }))
        .await;
    let text = node.metrics_text().await;
    let after = metric_value(&text, "speedlayer_http_requests_total", &update_ok).unwrap();
    assert_eq!(after, before + 1.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_epoch_removes_its_keys_and_only_its_keys() {
    let node = TestNode::start().await;
    // One-minute epochs: ts 600..660 is epoch 10, 660..720 epoch 11.
    let (status, body) = node
        .declare("hits", json!({ "type": "counter", "epoch_secs": 60 }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.declare_ok("other", "counter").await;
    node.update_ok(
        "hits",
        json!([
            { "key": "a", "clustering": "c1", "op": "incr", "by": 3, "ts": 600 },
            { "key": "a", "clustering": "c1", "op": "incr", "by": 4, "ts": 659.5 },
            { "key": "old", "op": "incr", "by": 7, "ts": 630 },
            { "key": "a", "clustering": "c2", "op": "incr", "by": 5, "ts": 660 },
            { "key": "new", "op": "incr", "by": 9, "ts": 719 },
        ]),
    )
    .await;
    // Same epoch index, another view.
    node.update_ok(
        "other",
        json!({ "key": "old", "op": "incr", "by": 2, "ts": 630 }),
    )
    .await;

    let (status, body) = node.get_path("/v1/views/hits/epochs").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["view"], "hits");
    let listed: Vec<(u64, u64)> = body["epochs"]
        .as_array()
        .unwrap_or_else(|| panic!("no epochs in {body}"))
        .iter()
        .map(|e| {
            (
                e["epoch"].as_u64().unwrap(),
                e["start_secs"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(10, 600), (11, 660)], "{body}");
    assert_eq!(node.value("hits", "a", "c1").await, json!(7));
    assert_eq!(node.value("hits", "old", "").await, json!(7));

    let (status, body) = split(
        node.client
            .delete(node.url("/v1/views/hits/epochs/10"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dropped"], 10);

    // Its keys are gone from gets and ranges; epoch 11 and the other view are untouched.
    assert_eq!(node.value("hits", "a", "c1").await, json!(0));
    assert_eq!(node.value("hits", "old", "").await, json!(0));
    assert_eq!(node.value("hits", "a", "c2").await, json!(5));
    assert_eq!(node.value("hits", "new", "").await, json!(9));
    assert_eq!(node.value("other", "old", "").await, json!(2));
    let (_, body) = node.range("hits", &[("key", "a")]).await;
    let rows: Vec<(String, i64)> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["clustering"].as_str().unwrap().to_string(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("c2".to_string(), 5)], "{body}");
    assert_eq!(body["total"], 5);
    let (_, body) = node.get_path("/v1/views/hits/epochs").await;
    let left: Vec<u64> = body["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(left, [11], "{body}");

    // Dropping it again, or an epoch that never was: 404. Not an epoch: 400.
    for path in ["/v1/views/hits/epochs/10", "/v1/views/hits/epochs/12345"] {
        let answer = split(node.client.delete(node.url(path)).send().await.unwrap()).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "unknown_epoch");
    }
    let answer = split(
        node.client
            .delete(node.url("/v1/views/hits/epochs/ten"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_epoch");
    let answer = split(
        node.client
            .delete(node.url("/v1/views/nothing/epochs/10"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown_view");

    // A late write into the dropped epoch starts it anew (nothing resurrected).
    node.update_ok(
        "hits",
        json!({ "key": "a", "clustering": "c1", "op": "incr", "by": 1, "ts": 601 }),
    )
    .await;
    assert_eq!(node.value("hits", "a", "c1").await, json!(1));
    assert_eq!(node.value("hits", "old", "").await, json!(0));
    node.health().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_guards_everything_but_health() {
    let node = TestNode::start_with(|c| c.requirepass = Some("s3cret".into())).await;
    let bearer = "Bearer s3cret";

    let answer = split(
        node.client
            .put(node.url("/v1/views/hits"))
            .json(&json!({ "type": "counter" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Basic s3cret"),
    ] {
        let mut request = node.client.get(node.url("/v1/views"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let answer = split(request.send().await.unwrap()).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let response = node.client.get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // With the password everything works.
    let (status, body) = split(
        node.client
            .put(node.url("/v1/views/hits"))
            .header("authorization", bearer)
            .json(&json!({ "type": "counter" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = split(
        node.client
            .post(node.url("/v1/views/hits/update"))
            .header("authorization", bearer)
            .json(&json!({ "key": "k", "op": "incr", "by": 2, "ts": TS }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An update without the password is refused and not applied.
    let answer = split(
        node.client
            .post(node.url("/v1/views/hits/update"))
            .json(&json!({ "key": "k", "op": "incr", "by": 100, "ts": TS }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = split(
        node.client
            .get(node.url("/v1/views/hits/get?key=k"))
            .header("authorization", bearer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], 2);
    let (status, body) = split(
        node.client
            .get(node.url("/v1/views"))
            .header("authorization", bearer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["views"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "hits" && v["type"] == "counter"),
        "{body}"
    );
    let response = node
        .client
        .get(node.url("/metrics"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // /health needs no password.
    node.health().await;
    node.stop().await;
}
