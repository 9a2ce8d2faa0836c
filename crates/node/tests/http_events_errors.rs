//! `POST /v1/events` refusing what it should: malformed lines (by line number), JSON
//! lists and parameters, over-long lines, bad mapping declarations, a full queue (429),
//! and streamed bodies of any size.
//!
//! A real `reqwest` client (and raw TCP for chunked bodies) against a real node.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::events::*;
use support::http::{assert_error, split, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// 4. Request errors
// ---------------------------------------------------------------------------------------

async fn declare_error_views(api: &Api) {
    api.declare_mapped(
        "e",
        "counter",
        json!({ "filter": r#"type == "pageview""#, "key": "url", "op": "incr 1" }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_lines_are_reported_by_number_and_the_rest_applied() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_error_views(&api).await;
    let body = [
        format!(r#"{{"type":"pageview","url":"/a","ts":{T0}}}"#), // 1 ok
        "this is not json".to_string(),                           // 2
        "[1,2,3]".to_string(),                                    // 3 array
        r#"{"type":"pageview","url":"/a","ts":1732450000000}"#.to_string(), // 4 ms
        r#"{"type":"pageview","url":"/a","id":{"writer":"","seq":1}}"#.to_string(), // 5
        format!(r#"{{"type":"pageview","url":"/a","ts":{T0}}}"#), // 6 ok
        "   ".to_string(),                                        // 7 blank
        format!(r#"{{"type":"pageview","ts":{T0}}}"#),            // 8 no url: skip
        format!(r#"{{"type":"click","url":"/a","ts":{T0}}}"#),    // 9 unmatched
        r#"{"type":"pageview","url":"/a","id":{"writer":"w","seq":-3}}"#.to_string(), // 10
        r#"{"type":"pageview","url":"/a","ts":-5}"#.to_string(),  // 11
        r#"{"type":"pageview","url":"/a","ts":"soon"}"#.to_string(), // 12
        r#""just a string""#.to_string(),                         // 13
    ]
    .join("\n");

    let answer = api.post("", body.clone()).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    let (_, reply) = &answer;
    assert_eq!(
        error_lines(reply),
        vec![2, 3, 4, 5, 10, 11, 12, 13],
        "{reply}"
    );
    let errors = errors_of(reply);
    assert!(errors[0].1.contains("JSON"), "{reply}");
    assert!(errors[1].1.contains("object"), "{reply}");
    assert!(errors[2].1.contains("ts"), "{reply}");
    assert!(errors[3].1.contains("id"), "{reply}");
    assert_eq!(reply["rejected"], 8, "{reply}");
    assert_eq!(reply["events"], 4, "{reply}");
    assert_eq!(reply["applied"], 2, "{reply}");
    assert_eq!(reply["unmatched"], 1, "{reply}");
    assert_eq!(reply["skipped"], 1, "{reply}");
    let skips = reply["skips"].as_array().expect("skips listed");
    assert_eq!(skips.len(), 1, "{reply}");
    assert_eq!(skips[0]["line"], 8, "{reply}");
    assert_eq!(skips[0]["view"], "e", "{reply}");
    assert!(
        skips[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("url"),
        "{reply}"
    );
    assert_eq!(api.value("e", "/a", "").await, json!(2));

    // atomic=true: the same body applies nothing.
    let answer = api.post("?atomic=true", body.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_events");
    assert_eq!(
        error_lines(&answer.1),
        vec![2, 3, 4, 5, 10, 11, 12, 13],
        "{}",
        answer.1
    );
    assert_eq!(api.value("e", "/a", "").await, json!(2));
    // Nor in async mode.
    let answer = api.post("?atomic=true&mode=async", body).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_events");
    // An atomic body without errors applies.
    let ok = format!(
        "{{\"type\":\"pageview\",\"url\":\"/a\",\"ts\":{T0}}}\n{{\"type\":\"pageview\",\"url\":\"/b\",\"ts\":{T0}}}"
    );
    let answer = api.post_ok("?atomic=true", ok).await;
    assert_eq!(answer["applied"], 2, "{answer}");
    assert_eq!(api.value("e", "/a", "").await, json!(3));
    assert_eq!(api.value("e", "/b", "").await, json!(1));
    // An async atomic body without errors queues it all.
    let ok = format!("{{\"type\":\"pageview\",\"url\":\"/c\",\"ts\":{T0}}}\n");
    let answer = api.post_ok("?atomic=true&mode=async", ok.repeat(10)).await;
    assert_eq!(answer["queued"], 10, "{answer}");
    api.wait_until("atomic async", || async {
        match api.value("e", "/c", "").await {
            v if v == json!(10) => Ok(()),
            v => Err(format!("/c = {v}")),
        }
    })
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_lists_empty_bodies_and_bad_parameters() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_error_views(&api).await;

    // A JSON list (whitespace before it).
    let list = json!([
        { "type": "pageview", "url": "/l", "ts": T0 },
        { "type": "pageview", "url": "/l", "ts": T0 + 1 },
        { "type": "click", "url": "/l", "ts": T0 },
    ]);
    let answer = api.post_ok("", format!("  \n{list}")).await;
    assert_eq!(answer["events"], 3, "{answer}");
    assert_eq!(answer["applied"], 2, "{answer}");
    assert_eq!(answer["unmatched"], 1, "{answer}");
    assert_eq!(api.value("e", "/l", "").await, json!(2));
    // A list with a bad item: the others applied, the item named.
    let list = json!([
        { "type": "pageview", "url": "/l", "ts": T0 },
        { "type": "pageview", "url": "/l", "ts": "never" },
        7,
    ]);
    let answer = api.post("", list.to_string()).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    assert_eq!(answer.1["rejected"], 2, "{}", answer.1);
    assert_eq!(api.value("e", "/l", "").await, json!(3));
    // A list that is not JSON is refused whole.
    let answer = api.post("", r#"[{"type":"pageview"},"#).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_json");
    // An empty list, an empty body, a blank body.
    for body in ["[]", "", "\n\n  \n"] {
        let answer = api.post_ok("", body).await;
        assert_eq!(answer["events"], 0, "{body:?}: {answer}");
        assert_eq!(answer["rejected"], 0, "{body:?}: {answer}");
        let answer = api.post_ok("?mode=async", body).await;
        assert_eq!(answer["queued"], 0, "{body:?}: {answer}");
    }
    // A single event without a trailing newline.
    let one = format!(r#"{{"type":"pageview","url":"/l","ts":{T0}}}"#);
    assert_eq!(api.post_ok("", one.clone()).await["applied"], 1);
    // CRLF line ends.
    let crlf = format!("{one}\r\n{one}\r\n");
    assert_eq!(api.post_ok("", crlf).await["applied"], 2);
    assert_eq!(api.value("e", "/l", "").await, json!(6));

    // Parameters.
    let answer = api.post("?consistency=local", one.clone()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_consistency");
    for query in [
        "?colour=blue",
        "?mode=later",
        "?atomic=maybe",
        "?consistency=most",
    ] {
        let answer = api.post(query, one.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    }
    for query in [
        "?consistency=one",
        "?consistency=quorum",
        "?consistency=all&quorum=strict",
    ] {
        let answer = api.post_ok(query, one.clone()).await;
        assert_eq!(answer["applied"], 1, "{query}: {answer}");
    }
    assert_eq!(api.value("e", "/l", "").await, json!(9));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlong_line_is_rejected_and_later_lines_apply() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    declare_error_views(&api).await;
    let ok = format!(r#"{{"type":"pageview","url":"/long","ts":{T0}}}"#);
    let pad = |bytes: usize| {
        let event = format!(r#"{{"type":"pageview","url":"/long","ts":{T0},"pad":""}}"#);
        let filler = "x".repeat(bytes - event.len());
        format!(r#"{{"type":"pageview","url":"/long","ts":{T0},"pad":"{filler}"}}"#)
    };
    let near = pad(1024 * 1024 - 16);
    let over = pad(1024 * 1024 + 4096);
    let huge = pad(5 * 1024 * 1024);
    let body = [
        ok.clone(), // 1
        over,       // 2: rejected
        ok.clone(), // 3
        near,       // 4: just under the limit, applied
        huge,       // 5: rejected
        ok.clone(), // 6
    ]
    .join("\n");
    let answer = api.post("", body).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    assert_eq!(error_lines(&answer.1), vec![2, 5], "{}", answer.1);
    assert_eq!(answer.1["applied"], 4, "{}", answer.1);
    assert_eq!(api.value("e", "/long", "").await, json!(4));

    // The over-long line last, without a newline after it.
    let answer = api
        .post("", format!("{ok}\n{}", pad(1024 * 1024 + 1)))
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "events_rejected");
    assert_eq!(error_lines(&answer.1), vec![2], "{}", answer.1);
    assert_eq!(api.value("e", "/long", "").await, json!(5));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. Declaration errors
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mappings_are_refused_at_declaration() {
    let node = TestNode::start().await;
    let api = Api::of(&node);
    let page = r#"type == "pageview""#;
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "counter",
            json!({ "key": "url", "op": "pfadd visitor" }),
            &["op", "pfadd"],
        ),
        (
            "hll",
            json!({ "key": "url", "op": "max ts" }),
            &["op", "max"],
        ),
        (
            "counter",
            json!({ "key": "url", "op": "explode 3" }),
            &["op", "explode"],
        ),
        (
            "counter",
            json!({ "key": "url", "op": "incr 1.5" }),
            &["op"],
        ),
        (
            "gcounter",
            json!({ "key": "url", "op": "decr 1" }),
            &["op", "decr"],
        ),
        ("counter", json!({ "key": "url", "op": "" }), &["op"]),
        (
            "counter",
            json!({ "filter": r#"type = "pageview""#, "key": "url", "op": "incr 1" }),
            &["filter"],
        ),
        (
            "counter",
            json!({ "filter": "type ==", "key": "url", "op": "incr 1" }),
            &["filter"],
        ),
        (
            "counter",
            json!({ "filter": "type == pageview", "key": "url", "op": "incr 1" }),
            &["filter", "pageview"],
        ),
        (
            "counter",
            json!({ "filter": page, "key": "url", "clustering": "week(ts)", "op": "incr 1" }),
            &["clustering", "week"],
        ),
        ("counter", json!({ "key": "", "op": "incr 1" }), &["key"]),
        (
            "counter",
            json!({ "key": "a,,b", "op": "incr 1" }),
            &["key"],
        ),
        (
            "counter",
            json!({ "key": "url", "op": "incr 1", "colour": "red" }),
            &["colour"],
        ),
        ("counter", json!({ "op": "incr 1" }), &["key"]),
        ("counter", json!({ "key": "url" }), &["op"]),
        (
            "counter",
            json!({ "key": "x".repeat(2000), "op": "incr 1" }),
            &["key"],
        ),
    ];
    for (i, (value_type, mapping, words)) in cases.iter().enumerate() {
        let view = format!("bad{i}");
        let answer = api
            .declare(&view, json!({ "type": value_type, "mapping": mapping }))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_declaration");
        let detail = answer.1["detail"].as_str().unwrap();
        for word in *words {
            assert!(
                detail.contains(word),
                "{value_type} {mapping}: detail {detail:?} should name {word:?}"
            );
        }
        // Nothing was declared.
        let (status, body) = api.get_json(&format!("/v1/views/{view}"), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{view}: {body}");
    }

    // A good mapping: shown as declared, identical redeclaration 200, other mapping 409.
    let mapping =
        json!({ "filter": page, "key": "url, visitor", "clustering": "day(ts)", "op": "incr 1" });
    let spec = json!({ "type": "counter", "epoch_secs": 3600, "mapping": mapping });
    let (status, body) = api.declare("good", spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["mapping"], mapping, "{body}");
    let (status, body) = api.get_json("/v1/views/good", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mapping"], mapping, "{body}");
    assert_eq!(body["type"], "counter", "{body}");
    let (status, body) = api.declare("good", spec).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other = json!({ "filter": page, "key": "url", "clustering": "day(ts)", "op": "incr 1" });
    let answer = api
        .declare(
            "good",
            json!({ "type": "counter", "epoch_secs": 3600, "mapping": other }),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "view_conflict");
    // Dropping the mapping is a change too.
    let answer = api
        .declare("good", json!({ "type": "counter", "epoch_secs": 3600 }))
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "view_conflict");
    let (_, body) = api.get_json("/v1/views", &[]).await;
    let listed = body["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "good")
        .cloned()
        .unwrap_or_else(|| panic!("good not listed: {body}"));
    assert_eq!(listed["mapping"], mapping, "{body}");

    // The declared multi-term key and day bucket are what events write.
    let event = json!({ "type": "pageview", "url": "/x", "visitor": "v1", "ts": T0 });
    assert_eq!(api.post_ok("", event.to_string()).await["applied"], 1);
    assert_eq!(api.value("good", "/x|v1", "2024-11-24").await, json!(1));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. Back-pressure
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_drains() {
    let node = TestNode::start_with(|c| c.ingest.queue_limit = 1).await;
    let api = Api::of(&node);
    api.declare_mapped("bp", "counter", json!({ "key": "k", "op": "incr 1" }))
        .await;
    // Bodies of one chunk (< 8192 events): a 429 queues none of them.
    let body: String = (0..4_000)
        .map(|i| format!("{{\"k\":\"k{}\",\"ts\":{T0}}}\n", i % 3))
        .collect();
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    let mut accepted: u64 = 0;
    let mut refused = 0;
    while refused == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 429 with a queue limit of 1"
        );
        let sends = (0..16).map(|_| {
            let api = api.clone();
            let body = body.clone();
            async move { api.post_raw("?mode=async", body).await }
        });
        for response in futures_util::future::join_all(sends).await {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let answer = split(response).await;
            match answer.0 {
                StatusCode::OK => {
                    assert_eq!(answer.1["queued"], 4_000, "{}", answer.1);
                    accepted += 4_000;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "queue_full");
                    let secs: u64 = retry_after
                        .as_deref()
                        .unwrap_or_else(|| panic!("429 without Retry-After: {}", answer.1))
                        .parse()
                        .expect("Retry-After in seconds");
                    assert!(secs >= 1, "Retry-After {secs}");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", answer.1),
            }
        }
    }
    assert!(accepted > 0, "nothing accepted");
    api.health().await;
    assert!(api.metric("speedlayer_event_queue_full_total").await >= refused as f64);
    // Sync submits are not subject to the queue limit.
    let answer = api
        .post_ok("", format!("{{\"k\":\"sync\",\"ts\":{T0}}}"))
        .await;
    assert_eq!(answer["applied"], 1, "{answer}");

    // What was accepted is applied exactly; the queue drains to zero.
    api.wait_until("the accepted events", || async {
        let mut sum = 0;
        for k in 0..3 {
            sum += api
                .value("bp", &format!("k{k}"), "")
                .await
                .as_i64()
                .unwrap();
        }
        if sum == accepted as i64 {
            Ok(())
        } else {
            Err(format!("sum {sum}, accepted {accepted}"))
        }
    })
    .await;
    // And once drained, async submits are accepted again.
    let answer = api.post_ok("?mode=async", body).await;
    assert_eq!(answer["queued"], 4_000, "{answer}");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. Streamed bodies
// ---------------------------------------------------------------------------------------

/// POSTs `body` to `path` over raw TCP with `Transfer-Encoding: chunked`, in chunks of
/// pseudo-random sizes (so chunk boundaries split lines anywhere); returns the status and
/// the JSON answer.
async fn post_chunked(addr: &str, path: &str, body: &[u8], seed: u64) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut rng = Rng(seed);
    let mut at = 0;
    let mut wrote_all = true;
    while at < body.len() {
        let len = match rng.below(4) {
            0 => 1 + rng.below(16) as usize,
            1 => 1 + rng.below(4096) as usize,
            _ => 1 + rng.below(256 * 1024) as usize,
        }
        .min(body.len() - at);
        let mut chunk = format!("{len:x}\r\n").into_bytes();
        chunk.extend_from_slice(&body[at..at + len]);
        chunk.extend_from_slice(b"\r\n");
        if stream.write_all(&chunk).await.is_err() {
            // The server answered early (e.g. 413) and closed: read its answer.
            wrote_all = false;
            break;
        }
        at += len;
    }
    if wrote_all {
        stream.write_all(b"0\r\n\r\n").await.unwrap();
    }
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut response))
        .await
        .expect("answer within 120 s")
        .expect("read answer");
    let text = String::from_utf8(response).expect("utf-8 answer");
    let (head, payload) = text.split_once("\r\n\r\n").expect("HTTP answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    let json = serde_json::from_str(&payload)
        .unwrap_or_else(|e| panic!("answer {status} not JSON ({e}): {payload:?}"));
    (status, json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_body_of_200000_events_counts_exactly() {
    // A body limit far below the body: NDJSON is streamed, not read whole.
    let node = TestNode::start_with(|c| c.max_body_bytes = 1024 * 1024).await;
    let api = Api::of(&node);
    api.declare_mapped(
        "s",
        "counter",
        json!({ "filter": "has(k)", "key": "k", "clustering": "minute(ts)", "op": "incr 1" }),
    )
    .await;
    const N: usize = 200_000;
    let mut rng = Rng(7);
    let mut body = Vec::with_capacity(N * 40);
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for _ in 0..N {
        let k = format!("k{}", rng.below(10));
        let secs = T0 + rng.below(300) as i64;
        body.extend_from_slice(format!("{{\"k\":\"{k}\",\"ts\":{secs}}}\n").as_bytes());
        let minute = format!("{}:{:02}", hour_of(secs), (secs % 3600) / 60);
        *want.entry((k, minute)).or_insert(0) += 1;
    }
    assert!(body.len() > 4 * 1024 * 1024, "body {} bytes", body.len());
    let addr = node.url("").trim_start_matches("http://").to_string();

    let (status, answer) = post_chunked(&addr, "/v1/events", &body, 11).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], N, "{answer}");
    assert_eq!(answer["applied"], N, "{answer}");
    assert_eq!(answer["rejected"], 0, "{answer}");
    let mut per_key: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for ((k, minute), n) in &want {
        per_key
            .entry(k.clone())
            .or_default()
            .push((minute.clone(), json!(n)));
    }
    for (k, rows) in &per_key {
        let (got, total) = api.range("s", k).await;
        assert_eq!(&got, rows, "sync rows of {k}");
        let sum: i64 = rows.iter().map(|(_, n)| n.as_i64().unwrap()).sum();
        assert_eq!(total, json!(sum));
    }

    // The same body again, async, with other chunk boundaries: counts double.
    let (status, answer) = post_chunked(&addr, "/v1/events?mode=async", &body, 12).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], N, "{answer}");
    api.wait_until("the streamed async body", || async {
        for (k, rows) in &per_key {
            let (got, _) = api.range("s", k).await;
            let doubled: Vec<(String, Value)> = rows
                .iter()
                .map(|(m, n)| (m.clone(), json!(n.as_i64().unwrap() * 2)))
                .collect();
            if got != doubled {
                return Err(format!("rows of {k}: {got:?}"));
            }
        }
        Ok(())
    })
    .await;

    // A JSON list larger than the body limit is refused (it is read whole).
    let list = format!(
        "[{}]",
        "{\"k\":\"big\"},".repeat(200_000).trim_end_matches(',')
    );
    let (status, answer) = post_chunked(&addr, "/v1/events", list.as_bytes(), 13).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "body_too_large", "{answer}");
    assert_eq!(api.value("s", "big", "").await, json!(0));
    node.stop().await;
}
