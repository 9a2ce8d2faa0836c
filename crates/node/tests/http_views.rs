//! The HTTP/JSON API's view management end to end: declaring views (idempotency, conflicts,
//! bad declarations and names) and listing them, listing and dropping epochs, and
//! `requirepass` guarding every endpoint but `/health`.
//!
//! A real `reqwest` client against a real node listening on TCP, as the README's "HTTP
//! walk-through" describes it; every error case checks the status *and* the JSON error body.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::http::{assert_error, split, TestNode, TS};

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

    // A write into the dropped epoch is refused: a dropped epoch stays dropped.
    let answer = split(
        node.client
            .post(node.url("/v1/views/hits/update"))
            .json(&json!({ "key": "a", "clustering": "c1", "op": "incr", "by": 1, "ts": 601 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.1);
    assert_eq!(answer.1["failed"][0]["index"], 0, "{}", answer.1);
    assert!(
        answer.1["failed"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("epoch 10") && e.contains("dropped")),
        "{}",
        answer.1
    );
    assert_eq!(node.value("hits", "a", "c1").await, json!(0));
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
