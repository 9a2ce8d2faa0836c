//! `XADD events` / `XADD events:async` through redis-rs against a real node: Redis stream
//! producers feeding events into the views' mappings, sync and queued, with ids from the
//! `writer`/`seq` fields, pipelines, errors and the accepted trimming options.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value as Json};
use support::resp::{cmd, cmd_err, connect_url, http_value, try_cmd, TestNode};

/// 2024-11-24T12:06:40Z, in hour `2024-11-24T12`.
const TS: &str = "1732450000";
const HOUR: &str = "2024-11-24T12";

async fn declare_mapped(http: &Client, url: &str, view: &str, value_type: &str, mapping: Json) {
    let response = http
        .put(format!("{url}/v1/views/{view}"))
        .json(&json!({ "type": value_type, "epoch_secs": 3600, "mapping": mapping }))
        .send()
        .await
        .expect("declare request");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "declaring {view}: {body}");
}

/// `pageviews` (counter per url per hour) and `visitors` (hll per url).
async fn declare_views(node: &TestNode) {
    let base = node.url("");
    declare_mapped(
        &node.http,
        &base,
        "pageviews",
        "counter",
        json!({ "filter": "type == \"pageview\"", "key": "url", "clustering": "hour(ts)",
                "op": "incr 1" }),
    )
    .await;
    declare_mapped(
        &node.http,
        &base,
        "visitors",
        "hll",
        json!({ "filter": "has(visitor)", "key": "url", "op": "pfadd visitor" }),
    )
    .await;
}

/// An XADD that must succeed; returns the entry id it answered.
async fn xadd(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    let mut all = vec!["XADD"];
    all.extend_from_slice(args);
    match cmd(con, &all).await {
        Value::BulkString(bytes) => String::from_utf8(bytes).expect("utf-8 id"),
        other => panic!("{all:?}: expected an entry id, got {other:?}"),
    }
}

async fn xadd_err(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    let mut all = vec!["XADD"];
    all.extend_from_slice(args);
    cmd_err(con, &all).await
}

/// Sends `pipe` and returns every reply, errors included (as `Value::ServerError`).
async fn raw_pipeline(con: &mut MultiplexedConnection, pipe: &redis::Pipeline) -> Vec<Value> {
    use redis::aio::ConnectionLike;
    con.req_packed_commands(pipe, 0, pipe.len())
        .await
        .expect("pipeline")
}

fn is_entry_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().and_then(|p| p.parse::<u64>().ok());
    let seq = parts.next().and_then(|p| p.parse::<u64>().ok());
    matches!((ms, seq), (Some(_), Some(_)))
}

async fn pageviews(node: &TestNode, url: &str) -> Json {
    http_value(node, "pageviews", url, HOUR).await
}

async fn queue_length(http: &Client, base: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    support::http::metric_value(&text, "speedlayer_event_queue_length", &[])
        .expect("queue length metric")
}

/// Polls until the queue is empty and `pageviews` of each url equals its expected count.
async fn wait_pageviews(node: &TestNode, want: &BTreeMap<String, i64>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut why = None;
        let queued = queue_length(&node.http, &node.url("")).await;
        if queued != 0.0 {
            why = Some(format!("{queued} events queued"));
        } else {
            for (url, n) in want {
                let got = pageviews(node, url).await;
                if got != json!(n) {
                    why = Some(format!("{url}: {got}, expected {n}"));
                    break;
                }
            }
        }
        match why {
            None => return,
            Some(why) if tokio::time::Instant::now() >= deadline => {
                panic!("queued XADDs not applied within 60 s: {why}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xadd_events_feeds_the_mappings_synchronously() {
    let node = TestNode::start().await;
    declare_views(&node).await;
    let mut con = node.connect(false).await;

    let id = xadd(
        &mut con,
        &[
            "events", "*", "type", "pageview", "url", "/a", "ts", TS, "visitor", "v1",
        ],
    )
    .await;
    assert!(is_entry_id(&id), "entry id {id:?}");
    // Sync: counted when the reply comes.
    assert_eq!(pageviews(&node, "/a").await, json!(1));
    assert_eq!(http_value(&node, "visitors", "/a", "").await, json!(1));

    // A given entry id is answered back; `*` ids differ.
    let given = xadd(
        &mut con,
        &[
            "events",
            "1732450000000-7",
            "type",
            "pageview",
            "url",
            "/a",
            "ts",
            TS,
        ],
    )
    .await;
    assert_eq!(given, "1732450000000-7");
    let other = xadd(
        &mut con,
        &["events", "*", "type", "pageview", "url", "/a", "ts", TS],
    )
    .await;
    assert_ne!(other, id);
    // A fractional ts string lands in its hour.
    xadd(
        &mut con,
        &[
            "events",
            "*",
            "type",
            "pageview",
            "url",
            "/a",
            "ts",
            "1732450000.75",
        ],
    )
    .await;
    assert_eq!(pageviews(&node, "/a").await, json!(4));

    // Events the filter leaves out, or that match nothing, are accepted and count nowhere.
    xadd(
        &mut con,
        &["events", "*", "type", "click", "url", "/a", "ts", TS],
    )
    .await;
    xadd(&mut con, &["events", "*", "unrelated", "field"]).await;
    assert_eq!(pageviews(&node, "/a").await, json!(4));

    // RESP3 too.
    let mut con3 = node.connect(true).await;
    let id3 = xadd(
        &mut con3,
        &["events", "*", "type", "pageview", "url", "/a", "ts", TS],
    )
    .await;
    assert!(is_entry_id(&id3), "{id3:?}");
    assert_eq!(pageviews(&node, "/a").await, json!(5));
    drop((con, con3));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xadd_events_async_counts_once_the_queue_drains() {
    let node = TestNode::start().await;
    declare_views(&node).await;
    let mut con = node.connect(false).await;
    for i in 0..50 {
        let url = format!("/q{}", i % 5);
        let id = xadd(
            &mut con,
            &[
                "events:async",
                "*",
                "type",
                "pageview",
                "url",
                &url,
                "ts",
                TS,
            ],
        )
        .await;
        assert!(is_entry_id(&id), "{id:?}");
    }
    let want: BTreeMap<String, i64> = (0..5).map(|i| (format!("/q{i}"), 10)).collect();
    wait_pageviews(&node, &want).await;
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_seq_fields_make_a_resent_xadd_count_once() {
    let node = TestNode::start().await;
    declare_views(&node).await;
    let mut con = node.connect(false).await;
    let event = |stream: &'static str, seq: &'static str| {
        [
            stream, "*", "type", "pageview", "url", "/id", "ts", TS, "writer", "prod-1", "seq", seq,
        ]
    };
    for _ in 0..3 {
        xadd(&mut con, &event("events", "1")).await;
    }
    xadd(&mut con, &event("events", "2")).await;
    assert_eq!(pageviews(&node, "/id").await, json!(2));
    // The same ids through the queue: still once.
    for seq in ["1", "2"] {
        xadd(&mut con, &event("events:async", seq)).await;
    }
    // New ids through the queue, each sent twice.
    for seq in ["3", "4", "3", "4"] {
        xadd(&mut con, &event("events:async", seq)).await;
    }
    let mut want = BTreeMap::new();
    want.insert("/id".to_string(), 4);
    wait_pageviews(&node, &want).await;

    // A seq that is not a number is refused.
    let err = xadd_err(&mut con, &event("events", "x")).await;
    assert!(err.starts_with("ERR invalid event"), "{err}");
    assert_eq!(pageviews(&node, "/id").await, json!(4));
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_named_writer_alone_is_an_ordinary_field() {
    let node = TestNode::start().await;
    let base = node.url("");
    declare_mapped(
        &node.http,
        &base,
        "by_writer",
        "counter",
        json!({ "key": "writer", "op": "incr 1" }),
    )
    .await;
    declare_mapped(
        &node.http,
        &base,
        "by_seq",
        "counter",
        json!({ "key": "seq", "op": "incr 1" }),
    )
    .await;
    let mut con = node.connect(false).await;
    // Only `writer` and `seq` together are an id; either alone is a field like any other.
    xadd(&mut con, &["events", "*", "writer", "alice", "ts", TS]).await;
    xadd(&mut con, &["events", "*", "seq", "42", "ts", TS]).await;
    assert_eq!(
        http_value(&node, "by_writer", "alice", "").await,
        json!(1),
        "XADD events * writer alice: the writer field was lost"
    );
    assert_eq!(
        http_value(&node, "by_seq", "42", "").await,
        json!(1),
        "XADD events * seq 42: the seq field was lost"
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_1000_xadds_counts_exactly() {
    let node = TestNode::start().await;
    declare_views(&node).await;
    let mut con = node.connect(false).await;

    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        let url = format!("/p{}", i % 7);
        pipe.cmd("XADD")
            .arg("events")
            .arg("*")
            .arg("type")
            .arg("pageview")
            .arg("url")
            .arg(&url)
            .arg("ts")
            .arg(TS)
            .arg("visitor")
            .arg(format!("v{i}"));
        *want.entry(url).or_insert(0) += 1;
    }
    // A read at the end of the pipeline sees every XADD before it.
    pipe.cmd("GET").arg(format!("pageviews:/p0:{HOUR}"));
    let replies: Vec<Value> = pipe.query_async(&mut con).await.expect("XADD pipeline");
    assert_eq!(replies.len(), 1001);
    for reply in &replies[..1000] {
        match reply {
            Value::BulkString(id) => assert!(is_entry_id(&String::from_utf8_lossy(id))),
            other => panic!("XADD in a pipeline answered {other:?}"),
        }
    }
    assert_eq!(
        replies[1000],
        Value::BulkString(want["/p0"].to_string().into_bytes()),
        "GET after the XADDs in one pipeline"
    );
    for (url, n) in &want {
        assert_eq!(pageviews(&node, url).await, json!(n), "{url}");
    }
    let distinct: i64 = want.values().sum();
    assert_eq!(distinct, 1000);

    // Sync and async XADDs and other commands interleaved in one pipeline: each reply in
    // its place, every event counted.
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        let stream = if i % 2 == 0 { "events" } else { "events:async" };
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("type")
            .arg("pageview")
            .arg("url")
            .arg("/mix")
            .arg("ts")
            .arg(TS);
        if i % 100 == 0 {
            pipe.cmd("PING");
            pipe.cmd("XADD").arg("nowhere").arg("*").arg("a").arg("b");
        }
    }
    let replies: Vec<redis::RedisResult<Value>> = {
        let raw = raw_pipeline(&mut con, &pipe).await;
        raw.into_iter()
            .map(|v| match v {
                Value::ServerError(e) => Err(e.into()),
                v => Ok(v),
            })
            .collect()
    };
    assert_eq!(replies.len(), 1020);
    let mut index = 0;
    for i in 0..1000 {
        assert!(
            matches!(&replies[index], Ok(Value::BulkString(_))),
            "reply {index}: {:?}",
            replies[index]
        );
        index += 1;
        if i % 100 == 0 {
            assert_eq!(
                replies[index].as_ref().ok(),
                Some(&Value::SimpleString("PONG".into())),
                "reply {index}"
            );
            assert!(replies[index + 1].is_err(), "reply {}", index + 1);
            index += 2;
        }
    }
    let mut want = BTreeMap::new();
    want.insert("/mix".to_string(), 1000);
    wait_pageviews(&node, &want).await;
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_xadds_answer_errors_and_count_nothing() {
    let node = TestNode::start().await;
    declare_views(&node).await;
    let mut con = node.connect(false).await;
    let page = ["type", "pageview", "url", "/e", "ts", TS];

    let err = xadd_err(&mut con, &["other", "*", "a", "b"]).await;
    assert!(err.starts_with("ERR ") && err.contains("events"), "{err}");
    // Odd field counts, no fields, no id.
    let err = xadd_err(&mut con, &["events", "*", "type", "pageview", "url"]).await;
    assert!(err.starts_with("ERR wrong number of arguments"), "{err}");
    let err = xadd_err(&mut con, &["events", "*"]).await;
    assert!(err.starts_with("ERR wrong number of arguments"), "{err}");
    let err = cmd_err(&mut con, &["XADD", "events"]).await;
    assert!(err.starts_with("ERR wrong number of arguments"), "{err}");
    let err = cmd_err(&mut con, &["XADD"]).await;
    assert!(err.starts_with("ERR wrong number of arguments"), "{err}");
    // Bad timestamps.
    for ts in ["soon", "1732450000000", "-1", ""] {
        let err = xadd_err(
            &mut con,
            &["events", "*", "type", "pageview", "url", "/e", "ts", ts],
        )
        .await;
        assert!(err.starts_with("ERR invalid event"), "ts {ts:?}: {err}");
        assert!(err.contains("ts"), "ts {ts:?}: {err}");
    }
    // A bad entry id.
    let mut args = vec!["events", "not-an-id"];
    args.extend_from_slice(&page);
    let err = xadd_err(&mut con, &args).await;
    assert!(err.starts_with("ERR Invalid stream ID"), "{err}");
    // The async stream refuses the same way.
    let err = xadd_err(&mut con, &["events:async", "*", "ts", "soon"]).await;
    assert!(err.starts_with("ERR invalid event"), "{err}");
    assert_eq!(pageviews(&node, "/e").await, json!(0));
    // The connection is still usable.
    xadd(&mut con, &{
        let mut a = vec!["events", "*"];
        a.extend_from_slice(&page);
        a
    })
    .await;
    assert_eq!(pageviews(&node, "/e").await, json!(1));
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_options_are_accepted() {
    let node = TestNode::start().await;
    declare_views(&node).await;
    let mut con = node.connect(false).await;
    let page = ["type", "pageview", "url", "/t", "ts", TS];
    let options: &[&[&str]] = &[
        &["NOMKSTREAM"],
        &["MAXLEN", "1000"],
        &["MAXLEN", "~", "1000"],
        &["maxlen", "=", "5"],
        &["MINID", "~", "0"],
        &["MAXLEN", "~", "1000", "LIMIT", "100"],
        &["NOMKSTREAM", "MAXLEN", "=", "1"],
    ];
    for (n, option) in options.iter().enumerate() {
        let mut args = vec!["events"];
        args.extend_from_slice(option);
        args.push("*");
        args.extend_from_slice(&page);
        let id = xadd(&mut con, &args).await;
        assert!(is_entry_id(&id), "{option:?}: {id:?}");
        assert_eq!(pageviews(&node, "/t").await, json!(n + 1), "{option:?}");
    }
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_tryagain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, http) = support::start_node(&dir, |c| c.ingest.queue_limit = 1).await;
    let base = format!("http://{}", node.http_addr);
    declare_mapped(
        &http,
        &base,
        "bp",
        "counter",
        json!({ "key": "k", "op": "incr 1" }),
    )
    .await;
    let mut con = connect_url(&format!("redis://{}/", node.resp_addr)).await;
    let mut accepted = 0i64;
    let mut refusal = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while refusal.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no TRYAGAIN");
        let mut pipe = redis::pipe();
        for _ in 0..2000 {
            pipe.cmd("XADD")
                .arg("events:async")
                .arg("*")
                .arg("k")
                .arg("x")
                .arg("ts")
                .arg(TS);
        }
        let replies = raw_pipeline(&mut con, &pipe).await;
        for reply in replies {
            match reply {
                Value::BulkString(_) => accepted += 1,
                Value::ServerError(e) => {
                    refusal = Some(support::resp::error_line(&redis::RedisError::from(e)))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let refusal = refusal.unwrap();
    assert!(refusal.starts_with("TRYAGAIN "), "{refusal}");
    // Still healthy; what was accepted is applied exactly once the queue drains.
    assert_eq!(
        try_cmd(&mut con, &["PING"]).await.unwrap(),
        Value::SimpleString("PONG".into())
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = http
            .get(format!("{base}/v1/views/bp/get?key=x"))
            .send()
            .await
            .expect("get");
        let body: Json = response.json().await.expect("json");
        if queue_length(&http, &base).await == 0.0 && body["value"] == json!(accepted) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bp/x = {}, accepted {accepted}",
            body["value"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(con);
    support::shutdown(Some(node)).await;
}
