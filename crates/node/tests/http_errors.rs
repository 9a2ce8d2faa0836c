//! The HTTP/JSON API's failure behaviour end to end: malformed and refused requests answer
//! 4xx with a JSON error class, bodies over the limit answer 413, and `/metrics` exposes
//! Prometheus text that counts requests.
//!
//! Every error case checks the status *and* the JSON body `{"error": <class>, "detail":
//! <non-empty string>}`, and the error tests end by checking that the node still serves
//! and still holds what it acknowledged before (a bad request never takes a node down or
//! loses data).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::http::{assert_error, metric_value, split, TestNode, TS};

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

    // A body that declares more than the limit is refused at once, before it is read
    // (here it would never come: 2 bytes of a declared 99,999,999,999,999; before, the
    // request waited for them). The routes that stream their bodies (`/v1/events`,
    // batch rows) have no such bound yet.
    let url = node.url("/v1/views/hits/update");
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "POST /v1/views/hits/update HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: 99999999999999\r\n\r\n[]"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut stream, &mut answer),
    )
    .await
    .expect("no answer within 2 s to a declared oversized body")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    // A compressed body is refused, not read as plain JSON.
    let response = node
        .client
        .post(node.url("/v1/views/hits/update"))
        .header("Content-Encoding", "gzip")
        .header("Content-Type", "application/json")
        .body(json!({ "key": "k", "op": "incr", "by": 100, "ts": TS }).to_string())
        .send()
        .await
        .unwrap();
    let answer = split(response).await;
    assert_error(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_encoding",
    );

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
